//! `dockgate import-nginx FILE`: reads an nginx config and returns the dockgate TOML that
//! replaces it. The certificate files it names are looked up here, so `nginx` stays pure.

use std::path::Path;

/// The dockgate TOML equivalent to the nginx config at `path`, or why it cannot be read:
/// `file:line: what` for a file that is not nginx config.
pub fn run(path: &Path) -> Result<String, String> {
    let bytes =
        std::fs::read(path).map_err(|e| format!("{}: cannot read it: {e}", path.display()))?;
    // Comments in a legacy encoding must not stop the import; nginx itself reads bytes.
    let text = String::from_utf8_lossy(&bytes);
    let dir = path.parent().unwrap_or(Path::new(""));
    let locate = |p: &str| locate(dir, p);
    crate::nginx::import(&path.display().to_string(), &text, &locate)
        .map_err(|e| format!("{}:{e}", path.display()))
}

/// Where a certificate path from the config is, if the file exists, written absolute because
/// the TOML will live elsewhere. nginx resolves a relative path against its configuration
/// directory; the imported file's directory is the closest guess. Symlinks are kept as they
/// are, so a certificate an ACME client renews behind a link is still followed.
fn locate(dir: &Path, p: &str) -> Option<String> {
    let full = dir.join(p);
    if !full.is_file() {
        return None;
    }
    std::path::absolute(&full)
        .ok()?
        .to_str()
        .map(str::to_string)
}
