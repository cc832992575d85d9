//! skopeo as a client with a local store: OCI layouts in a directory, one per reference, and the
//! gateway's CA in a `--cert-dir` laid out like `/etc/containers/certs.d/<host:port>/`.

use std::path::{Path, PathBuf};

use tempfile::TempDir;

use super::{done, store_name, Client};
use crate::support::{Gateway, Image, Location, Outcome, Skopeo};

/// The `Skopeo` of the other tests, logged in through its own auth file.
pub struct SkopeoUser {
    skopeo: Skopeo,
    dir: TempDir,
    registry: String,
}

impl SkopeoUser {
    pub fn new() -> SkopeoUser {
        let dir = tempfile::Builder::new()
            .prefix("skopeo-user-")
            .tempdir()
            .expect("tempdir for skopeo's store");
        std::fs::create_dir_all(dir.path().join("store")).expect("create the store");
        SkopeoUser {
            skopeo: Skopeo::new(),
            dir,
            registry: String::new(),
        }
    }

    fn cert_dir(&self) -> PathBuf {
        self.dir.path().join("certs.d").join(&self.registry)
    }

    fn remote(&self, reference: &str) -> Location {
        Location::tls(&format!("{}/{reference}", self.registry), &self.cert_dir())
    }

    fn local(&self, reference: &str) -> Location {
        Location::oci(&self.store(reference), "latest")
    }

    fn store(&self, reference: &str) -> PathBuf {
        self.dir.path().join("store").join(store_name(reference))
    }
}

impl Default for SkopeoUser {
    fn default() -> Self {
        SkopeoUser::new()
    }
}

impl Client for SkopeoUser {
    fn name(&self) -> &'static str {
        "skopeo"
    }

    fn use_gateway(&mut self, gateway: &Gateway) {
        self.registry = gateway.host_port();
        std::fs::create_dir_all(self.cert_dir()).expect("create the cert dir");
    }

    fn registry(&self) -> String {
        self.registry.clone()
    }

    fn trust(&mut self, ca: Option<&Path>) {
        let file = self.cert_dir().join("ca.crt");
        match ca {
            Some(ca) => {
                std::fs::copy(ca, &file).expect("copy ca.crt");
            }
            None => {
                let _ = std::fs::remove_file(&file);
            }
        }
    }

    fn login(&mut self, user: &str, password: &str) -> Outcome {
        self.skopeo
            .login(&self.registry, &self.cert_dir(), user, password)
    }

    fn pull(&mut self, reference: &str) -> Outcome {
        self.skopeo
            .copy(&self.remote(reference), &self.local(reference))
    }

    fn tag(&mut self, from: &str, to: &str) -> Outcome {
        self.skopeo.copy(&self.local(from), &self.local(to))
    }

    fn push(&mut self, reference: &str) -> Outcome {
        self.skopeo
            .copy(&self.local(reference), &self.remote(reference))
    }

    fn load(&mut self, image: &Image, reference: &str) -> Outcome {
        self.skopeo.copy(&image.layout(), &self.local(reference))
    }

    fn remove(&mut self, reference: &str) -> Outcome {
        let store = self.store(reference);
        std::fs::remove_dir_all(&store)
            .unwrap_or_else(|e| panic!("remove {}: {e}", store.display()));
        done(format!("rm -r {}", store.display()))
    }

    fn digest(&mut self, reference: &str) -> String {
        Image::digest_in_layout(&self.store(reference))
    }
}
