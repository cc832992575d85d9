//! `dockgate import-nginx`: an nginx config of the kind put in front of Nexus, read with nginx's
//! own grammar and printed as dockgate TOML, every directive accounted for in a comment.
//!
//! `tokenizer` reads the grammar into a directive tree; `mapping` walks it, with `routing` (and
//! `rewrite`, nginx's `set` and `if`) for how requests were split between upstreams, `keys` for
//! the directives that set a dockgate key, `values` for addresses, names and times, and `table`
//! for the directives that need no key; `render` prints the TOML with the `notes` as comments.
//! All of it is pure: the caller reads the file and says which certificates exist.

mod keys;
mod mapping;
mod notes;
mod render;
mod rewrite;
mod routing;
mod table;
pub mod tokenizer;
mod values;

#[cfg(test)]
mod tests;

pub use tokenizer::{SyntaxError, SyntaxErrorKind};

/// The dockgate TOML for the nginx config `text`, read from `source` (named in its header).
/// `locate` says where a certificate path of the config is on this machine, as the TOML should
/// name it, or `None` when the file is not there.
pub fn import(
    source: &str,
    text: &str,
    locate: &dyn Fn(&str) -> Option<String>,
) -> Result<String, SyntaxError> {
    let file = tokenizer::parse(text)?;
    Ok(mapping::to_toml(source, &file, locate))
}
