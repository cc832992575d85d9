//! Subcommand bodies that are more than a call into the library.

pub mod doctor;
pub mod import_nginx;
