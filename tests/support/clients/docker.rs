//! The Docker engine as its users run it: `dockerd` (classic image store on `vfs`, over its own
//! containerd) and the `docker` CLI. The daemon runs in a private mount namespace where
//! `/etc/hosts` names the gateway `DOCKER_NAME` on `::1` only, `/etc/docker` (where users put
//! `certs.d/<host:port>/ca.crt`) is a directory of the test's, and `/run` is an empty tmpfs: the
//! machine's own files are neither read nor written.

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

use super::{
    docker_archive, run, store_name, with_private_mounts, without_proxies, Client, Containerd,
    DOCKER_NAME,
};
use crate::support::{Gateway, Image, Outcome, Proc};

/// Debian's CLI (`docker.io`), the one that matches its dockerd; `docker` on `PATH` otherwise.
const DOCKER_CLI: &str = "/usr/bin/docker";

/// One `dockerd` and the CLI's own config directory (its `config.json` holds the logins).
/// Dropped in field order: dockerd, then its containerd, then the files.
pub struct Docker {
    dockerd: Proc,
    containerd: Containerd,
    dir: TempDir,
    registry: String,
}

impl Docker {
    pub fn start() -> Docker {
        let containerd = Containerd::start();
        let dir = tempfile::Builder::new()
            .prefix("docker-")
            .tempdir()
            .expect("tempdir for dockerd");
        let path = |name: &str| {
            let p = dir.path().join(name);
            std::fs::create_dir_all(&p).expect("create a dockerd dir");
            p
        };
        let (data, exec, etc, _cli) = (path("data"), path("exec"), path("etc"), path("cli"));
        let hosts = dir.path().join("hosts");
        std::fs::write(
            &hosts,
            format!("::1 {DOCKER_NAME}\n127.0.0.1 localhost\n::1 localhost\n"),
        )
        .expect("write the private hosts file");
        let setup = format!(
            "mount --bind {} /etc/hosts && mount --bind {} /etc/docker \
             && mount -t tmpfs tmpfs /run",
            hosts.display(),
            etc.display()
        );
        let mut cmd = with_private_mounts(&setup, "dockerd");
        cmd.arg("--data-root")
            .arg(&data)
            .arg("--exec-root")
            .arg(&exec)
            .arg("--pidfile")
            .arg(dir.path().join("dockerd.pid"))
            .arg("--host")
            .arg(format!(
                "unix://{}",
                dir.path().join("docker.sock").display()
            ))
            .arg("--containerd")
            .arg(containerd.socket())
            .args([
                "--storage-driver=vfs",
                "--iptables=false",
                "--ip6tables=false",
                "--ip-forward=false",
                "--ip-masq=false",
                "--bridge=none",
                "--exec-opt=native.cgroupdriver=cgroupfs",
            ]);
        let mut dockerd = Proc::spawn(
            "dockerd",
            without_proxies(cmd),
            &dir.path().join("dockerd.log"),
        );
        let socket = dir.path().join("docker.sock");
        dockerd.wait_until(&format!("{} accepts", socket.display()), || {
            UnixStream::connect(&socket).is_ok()
        });
        Docker {
            dockerd,
            containerd,
            dir,
            registry: String::new(),
        }
    }

    fn cli(&self) -> Command {
        let program = if Path::new(DOCKER_CLI).exists() {
            DOCKER_CLI
        } else {
            "docker"
        };
        let mut cmd = Command::new(program);
        cmd.arg("--host")
            .arg(format!(
                "unix://{}",
                self.dir.path().join("docker.sock").display()
            ))
            .arg("--config")
            .arg(self.dir.path().join("cli"));
        cmd
    }

    fn docker(&self, args: &[&str]) -> Outcome {
        let mut cmd = self.cli();
        cmd.args(args);
        run(cmd, None)
    }

    fn full(&self, reference: &str) -> String {
        format!("{}/{reference}", self.registry)
    }

    fn certs_dir(&self) -> PathBuf {
        self.dir.path().join("etc/certs.d").join(&self.registry)
    }
}

impl Client for Docker {
    fn name(&self) -> &'static str {
        "docker"
    }

    /// `DOCKER_NAME:<port of the gateway's [::1] listener>`.
    fn use_gateway(&mut self, gateway: &Gateway) {
        let v6 = gateway
            .other_addrs()
            .iter()
            .find(|a| a.is_ipv6())
            .expect("the gateway listens on [::1] for docker (Site::start)");
        self.registry = format!("{DOCKER_NAME}:{}", v6.port());
    }

    fn registry(&self) -> String {
        self.registry.clone()
    }

    /// `/etc/docker/certs.d/<host:port>/ca.crt`, read by dockerd on every connection (no
    /// restart), as the README tells users.
    fn trust(&mut self, ca: Option<&Path>) {
        let dir = self.certs_dir();
        match ca {
            Some(ca) => {
                std::fs::create_dir_all(&dir).expect("create certs.d/<host:port>");
                std::fs::copy(ca, dir.join("ca.crt")).expect("copy ca.crt");
            }
            None => {
                let _ = std::fs::remove_dir_all(&dir);
            }
        }
    }

    fn login(&mut self, user: &str, password: &str) -> Outcome {
        let mut cmd = self.cli();
        cmd.args([
            "login",
            "--username",
            user,
            "--password-stdin",
            &self.registry,
        ]);
        run(cmd, Some(password))
    }

    fn pull(&mut self, reference: &str) -> Outcome {
        self.docker(&["pull", &self.full(reference)])
    }

    fn tag(&mut self, from: &str, to: &str) -> Outcome {
        self.docker(&["tag", &self.full(from), &self.full(to)])
    }

    fn push(&mut self, reference: &str) -> Outcome {
        self.docker(&["push", &self.full(reference)])
    }

    /// `docker load` of the image as `docker save` would have written it.
    fn load(&mut self, image: &Image, reference: &str) -> Outcome {
        let archive = self
            .dir
            .path()
            .join(format!("{}.tar", store_name(reference)));
        docker_archive(image, &self.full(reference), &archive);
        self.docker(&["load", "--input", &archive.display().to_string()])
    }

    fn remove(&mut self, reference: &str) -> Outcome {
        self.docker(&["rmi", &self.full(reference)])
    }

    /// The `RepoDigests` entry for the reference's repository.
    fn digest(&mut self, reference: &str) -> String {
        let full = self.full(reference);
        let inspect = self.docker(&[
            "image",
            "inspect",
            "--format",
            "{{json .RepoDigests}}",
            &full,
        ]);
        let digests: Vec<String> = serde_json::from_str(inspect.expect_success().trim())
            .unwrap_or_else(|e| panic!("RepoDigests of {full} ({e}): {}", inspect.stdout));
        let repo = full
            .rsplit_once(':')
            .map_or(full.as_str(), |(repo, _)| repo);
        digests
            .iter()
            .find_map(|d| d.strip_prefix(&format!("{repo}@")))
            .unwrap_or_else(|| panic!("docker holds no digest for {repo}: {digests:?}"))
            .to_string()
    }
}
