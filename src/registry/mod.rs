//! What dockgate knows about the registry protocol beyond routing: manifests (what a manifest
//! references) and, later, copying blobs between upstreams (backfill).

pub mod backfill;
pub mod copy;
pub mod manifest;
