//! `dockgate doctor`: (being written) talks to each upstream and prints one verdict per check.

use crate::config::Config;

/// Runs every check against `config`; true when none failed.
pub fn run(config: &Config, image: Option<&str>) -> bool {
    let _ = (config, image);
    eprintln!("dockgate doctor: not built yet");
    false
}
