//! podman, rootful, with its storage, run and temp directories, network config and login file
//! under a tempdir, and the gateway's CA in a `--cert-dir` laid out like
//! `/etc/containers/certs.d/<host:port>/`.

use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

use super::{docker_archive, run, store_name, with_private_mounts, Client, BLOB_INFO_CACHE};
use crate::support::{Gateway, Image, Outcome};

/// One podman user: nothing under `/var/lib/containers/storage`, `/run/containers`, `/etc/cni`
/// or `/var/tmp` is touched; each run gets an empty blob-info cache (`BLOB_INFO_CACHE`).
pub struct Podman {
    dir: TempDir,
    registry: String,
}

impl Podman {
    pub fn new() -> Podman {
        std::fs::create_dir_all(BLOB_INFO_CACHE).expect("create the blob-info cache mount point");
        let dir = tempfile::Builder::new()
            .prefix("podman-")
            .tempdir()
            .expect("tempdir for podman");
        for sub in ["root", "run", "tmp", "cni"] {
            std::fs::create_dir_all(dir.path().join(sub)).expect("create a podman dir");
        }
        Podman {
            dir,
            registry: String::new(),
        }
    }

    fn podman(&self, args: &[&str]) -> Command {
        let d = self.dir.path();
        // `podman load` unpacks an archive in /var/tmp whatever TMPDIR or containers.conf say.
        let setup = format!(
            "mount -t tmpfs tmpfs {BLOB_INFO_CACHE} && mount --bind {} /var/tmp",
            d.join("tmp").display()
        );
        let mut cmd = with_private_mounts(&setup, "podman");
        cmd.arg("--root")
            .arg(d.join("root"))
            .arg("--runroot")
            .arg(d.join("run"))
            .arg("--tmpdir")
            .arg(d.join("tmp"))
            .arg("--network-config-dir")
            .arg(d.join("cni"))
            .args([
                "--storage-driver=vfs",
                "--cgroup-manager=cgroupfs",
                "--events-backend=none",
            ])
            .args(args)
            .env("TMPDIR", d.join("tmp"));
        if self.auth_file().exists() {
            // Only after a `login`: podman refuses a REGISTRY_AUTH_FILE that does not exist.
            cmd.env("REGISTRY_AUTH_FILE", self.auth_file());
        }
        cmd
    }

    fn auth_file(&self) -> PathBuf {
        self.dir.path().join("auth.json")
    }

    fn cert_dir(&self) -> PathBuf {
        self.dir.path().join("certs.d").join(&self.registry)
    }

    fn cert_dir_flag(&self) -> String {
        format!("--cert-dir={}", self.cert_dir().display())
    }

    fn full(&self, reference: &str) -> String {
        format!("{}/{reference}", self.registry)
    }
}

impl Default for Podman {
    fn default() -> Self {
        Podman::new()
    }
}

impl Client for Podman {
    fn name(&self) -> &'static str {
        "podman"
    }

    fn use_gateway(&mut self, gateway: &Gateway) {
        self.registry = gateway.host_port();
        std::fs::create_dir_all(self.cert_dir()).expect("create the cert dir");
    }

    fn registry(&self) -> String {
        self.registry.clone()
    }

    /// `ca.crt` in the `--cert-dir` every remote command names; podman verifies TLS for any
    /// address, 127.0.0.1 included, so an empty one is a distrusting user.
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
        let authfile = format!("--authfile={}", self.auth_file().display());
        let cmd = self.podman(&[
            "login",
            &authfile,
            &self.cert_dir_flag(),
            "--username",
            user,
            "--password-stdin",
            &self.registry,
        ]);
        run(cmd, Some(password))
    }

    fn pull(&mut self, reference: &str) -> Outcome {
        run(
            self.podman(&["pull", &self.cert_dir_flag(), &self.full(reference)]),
            None,
        )
    }

    fn tag(&mut self, from: &str, to: &str) -> Outcome {
        run(
            self.podman(&["tag", &self.full(from), &self.full(to)]),
            None,
        )
    }

    fn push(&mut self, reference: &str) -> Outcome {
        run(
            self.podman(&["push", &self.cert_dir_flag(), &self.full(reference)]),
            None,
        )
    }

    fn load(&mut self, image: &Image, reference: &str) -> Outcome {
        let archive = self
            .dir
            .path()
            .join(format!("{}.tar", store_name(reference)));
        docker_archive(image, &self.full(reference), &archive);
        let input = format!("--input={}", archive.display());
        run(self.podman(&["load", &input]), None)
    }

    fn remove(&mut self, reference: &str) -> Outcome {
        run(self.podman(&["rmi", &self.full(reference)]), None)
    }

    fn digest(&mut self, reference: &str) -> String {
        let inspect = run(
            self.podman(&[
                "image",
                "inspect",
                "--format",
                "{{.Digest}}",
                &self.full(reference),
            ]),
            None,
        );
        inspect.expect_success().trim().to_string()
    }
}
