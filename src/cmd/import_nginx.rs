//! `dockgate import-nginx`: (being written) nginx config in, dockgate TOML out.

use std::path::Path;

/// The dockgate TOML equivalent to the nginx config at `path`, or why it cannot be read.
pub fn run(path: &Path) -> Result<String, String> {
    Err(format!("{}: import-nginx is not built yet", path.display()))
}
