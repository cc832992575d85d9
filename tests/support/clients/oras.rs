//! ORAS through its Python SDK (`pip install oras`): `oras_client.py` beside this module does
//! what a user's script does (login, pull, push); the local store is a directory per reference
//! holding the manifest and its blobs, and the CA is the bundle oras-py verifies with.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

use super::{done, hex, run, store_name, Client};
use crate::support::{Gateway, Image, Outcome};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/oras_client.py");

/// One ORAS user: its `config.json` (the logins) and its store.
pub struct Oras {
    dir: TempDir,
    registry: String,
    ca: Option<PathBuf>,
    /// The manifest digest each pull printed.
    pulled: HashMap<String, String>,
}

impl Oras {
    pub fn new() -> Oras {
        let dir = tempfile::Builder::new()
            .prefix("oras-")
            .tempdir()
            .expect("tempdir for oras");
        Oras {
            dir,
            registry: String::new(),
            ca: None,
            pulled: HashMap::new(),
        }
    }

    fn script(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("python3");
        cmd.arg(SCRIPT);
        if let Some(ca) = &self.ca {
            cmd.arg("--ca").arg(ca);
        }
        cmd.arg("--config")
            .arg(self.dir.path().join("config.json"))
            .args(args);
        cmd
    }

    fn store(&self, reference: &str) -> PathBuf {
        self.dir.path().join("store").join(store_name(reference))
    }

    fn full(&self, reference: &str) -> String {
        format!("{}/{reference}", self.registry)
    }
}

impl Default for Oras {
    fn default() -> Self {
        Oras::new()
    }
}

impl Client for Oras {
    fn name(&self) -> &'static str {
        "oras"
    }

    fn use_gateway(&mut self, gateway: &Gateway) {
        self.registry = gateway.host_port();
    }

    fn registry(&self) -> String {
        self.registry.clone()
    }

    /// `tls_verify=<ca.crt>`; without it, the CA bundle `requests` ships.
    fn trust(&mut self, ca: Option<&Path>) {
        self.ca = ca.map(Path::to_path_buf);
    }

    fn login(&mut self, user: &str, password: &str) -> Outcome {
        run(
            self.script(&["login", &self.registry, user, password]),
            None,
        )
    }

    fn pull(&mut self, reference: &str) -> Outcome {
        let store = self.store(reference);
        let outcome = run(
            self.script(&["pull", &self.full(reference), &store.display().to_string()]),
            None,
        );
        if outcome.success {
            self.pulled
                .insert(reference.to_string(), outcome.stdout.trim().to_string());
        }
        outcome
    }

    fn tag(&mut self, from: &str, to: &str) -> Outcome {
        let (from, to) = (self.store(from), self.store(to));
        std::fs::create_dir_all(&to).expect("create a store dir");
        for entry in std::fs::read_dir(&from).expect("read a store dir") {
            let entry = entry.expect("a store entry");
            std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy a blob");
        }
        done(format!("cp {}/* {}", from.display(), to.display()))
    }

    /// `oras push REF <each layer of the stored manifest, as a file>`: ORAS builds its own
    /// manifest; the layers keep their digests.
    fn push(&mut self, reference: &str) -> Outcome {
        let store = self.store(reference);
        let manifest = std::fs::read(store.join("manifest.json")).expect("a stored manifest");
        let manifest: serde_json::Value =
            serde_json::from_slice(&manifest).expect("the stored manifest is JSON");
        let files: Vec<String> = manifest["layers"]
            .as_array()
            .expect("the manifest lists layers")
            .iter()
            .map(|l| {
                let digest = l["digest"].as_str().expect("a layer digest");
                store.join(hex(digest)).display().to_string()
            })
            .collect();
        let full = self.full(reference);
        let mut args = vec!["push", full.as_str()];
        args.extend(files.iter().map(String::as_str));
        run(self.script(&args), None)
    }

    /// The image's manifest and blobs, as a pull would have stored them.
    fn load(&mut self, image: &Image, reference: &str) -> Outcome {
        let store = self.store(reference);
        std::fs::create_dir_all(&store).expect("create a store dir");
        std::fs::write(store.join("manifest.json"), image.manifest()).expect("store a manifest");
        for layer in image.layers() {
            std::fs::copy(
                Image::blob_in_layout(image.dir(), &layer.digest),
                store.join(hex(&layer.digest)),
            )
            .expect("store a layer");
        }
        done(format!(
            "cp {}/blobs/sha256/* {}",
            image.dir().display(),
            store.display()
        ))
    }

    fn remove(&mut self, reference: &str) -> Outcome {
        let store = self.store(reference);
        std::fs::remove_dir_all(&store)
            .unwrap_or_else(|e| panic!("remove {}: {e}", store.display()));
        self.pulled.remove(reference);
        done(format!("rm -r {}", store.display()))
    }

    fn digest(&mut self, reference: &str) -> String {
        self.pulled
            .get(reference)
            .unwrap_or_else(|| panic!("oras has not pulled {reference}"))
            .clone()
    }
}
