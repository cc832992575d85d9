//! containerd on a private root, state and socket (for dockerd and for `ctr`), and `ctr` as a
//! client: credentials on each command, the gateway's CA in a `hosts.toml`.

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

use super::{docker_archive, run, store_name, without_proxies, Client, HUB_IMAGE};
use crate::support::{Gateway, Image, Outcome, Proc};

/// One `containerd --config <tempdir>/config.toml`: every path it writes is under its tempdir
/// (`/opt/containerd` included), CRI and the snapshotters that need kernel support are off
/// (`native` copies directories). Killed by PID on drop.
pub struct Containerd {
    proc: Proc,
    dir: TempDir,
}

impl Containerd {
    pub fn start() -> Containerd {
        let dir = tempfile::Builder::new()
            .prefix("containerd-")
            .tempdir()
            .expect("tempdir for containerd");
        let d = dir.path().display();
        let config = format!(
            r#"version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = [
  "io.containerd.grpc.v1.cri",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.overlayfs",
  "io.containerd.snapshotter.v1.zfs",
]
[grpc]
  address = "{d}/containerd.sock"
[ttrpc]
  address = "{d}/containerd.sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"
"#
        );
        std::fs::write(dir.path().join("config.toml"), config).expect("write config.toml");
        let mut cmd = Command::new("containerd");
        cmd.arg("--config").arg(dir.path().join("config.toml"));
        let mut proc = Proc::spawn(
            "containerd",
            without_proxies(cmd),
            &dir.path().join("containerd.log"),
        );
        let socket = dir.path().join("containerd.sock");
        proc.wait_until(&format!("{} accepts", socket.display()), || {
            UnixStream::connect(&socket).is_ok()
        });
        Containerd { proc, dir }
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("containerd.sock")
    }
}

/// `ctr` on its own containerd, in namespace `dockgate`. ctr has no `login`: credentials ride on
/// every remote command (`--user`); a `hosts.toml` under `--hosts-dir` names the gateway's
/// `https://` URL and, when trusted, its CA (without one, containerd 1.6 speaks plain HTTP to
/// a `127.0.0.1` registry).
pub struct Ctr {
    containerd: Containerd,
    dir: TempDir,
    registry: String,
    user: Option<String>,
}

impl Ctr {
    pub fn start() -> Ctr {
        Ctr {
            containerd: Containerd::start(),
            dir: tempfile::Builder::new()
                .prefix("ctr-")
                .tempdir()
                .expect("tempdir for ctr"),
            registry: String::new(),
            user: None,
        }
    }

    fn ctr(&self) -> Command {
        let mut cmd = Command::new("ctr");
        cmd.arg("--address")
            .arg(self.containerd.socket())
            .args(["--namespace", "dockgate"]);
        cmd
    }

    /// `ctr images <verb>` with the registry flags of a remote command.
    fn remote(&self, verb: &str) -> Command {
        let mut cmd = self.ctr();
        cmd.args(["images", verb])
            .arg("--hosts-dir")
            .arg(self.hosts_dir());
        if let Some(user) = &self.user {
            cmd.args(["--user", user]);
        }
        cmd
    }

    fn hosts_dir(&self) -> PathBuf {
        self.dir.path().join("certs.d")
    }

    fn full(&self, reference: &str) -> String {
        format!("{}/{reference}", self.registry)
    }
}

impl Client for Ctr {
    fn name(&self) -> &'static str {
        "ctr"
    }

    fn use_gateway(&mut self, gateway: &Gateway) {
        self.registry = gateway.host_port();
        self.user = None;
    }

    fn registry(&self) -> String {
        self.registry.clone()
    }

    /// `/etc/containerd/certs.d/<host:port>/hosts.toml` with `ca = ".../ca.crt"` beside it; the
    /// CA is named for the `server` and for its `[host]` entry (containerd 1.6 refuses a
    /// hosts.toml with only top-level keys: "invalid `host` tree").
    fn trust(&mut self, ca: Option<&Path>) {
        let dir = self.hosts_dir().join(&self.registry);
        std::fs::create_dir_all(&dir).expect("create the hosts.toml dir");
        let url = format!("https://{}", self.registry);
        let ca_line = match ca {
            Some(ca) => {
                std::fs::copy(ca, dir.join("ca.crt")).expect("copy ca.crt");
                format!("ca = {:?}\n", dir.join("ca.crt").display().to_string())
            }
            None => {
                let _ = std::fs::remove_file(dir.join("ca.crt"));
                String::new()
            }
        };
        let hosts = format!("server = {url:?}\n{ca_line}\n[host.{url:?}]\n  {ca_line}");
        std::fs::write(dir.join("hosts.toml"), hosts).expect("write hosts.toml");
    }

    /// Resolves the hub image with these credentials (`ctr content fetch-object`), the check a
    /// `login` would make; later commands carry them.
    fn login(&mut self, user: &str, password: &str) -> Outcome {
        self.user = Some(format!("{user}:{password}"));
        let mut cmd = self.ctr();
        cmd.args(["content", "fetch-object", "--hosts-dir"])
            .arg(self.hosts_dir())
            .args(["--user", &format!("{user}:{password}")])
            .arg(self.full(HUB_IMAGE));
        run(cmd, None)
    }

    fn pull(&mut self, reference: &str) -> Outcome {
        let mut cmd = self.remote("pull");
        cmd.args(["--snapshotter", "native"])
            .arg(self.full(reference));
        run(cmd, None)
    }

    fn tag(&mut self, from: &str, to: &str) -> Outcome {
        let mut cmd = self.ctr();
        cmd.args(["images", "tag", &self.full(from), &self.full(to)]);
        run(cmd, None)
    }

    fn push(&mut self, reference: &str) -> Outcome {
        let mut cmd = self.remote("push");
        cmd.arg(self.full(reference));
        run(cmd, None)
    }

    fn load(&mut self, image: &Image, reference: &str) -> Outcome {
        let archive = self
            .dir
            .path()
            .join(format!("{}.tar", store_name(reference)));
        docker_archive(image, &self.full(reference), &archive);
        let mut cmd = self.ctr();
        cmd.args(["images", "import", "--snapshotter", "native"])
            .arg(&archive);
        run(cmd, None)
    }

    /// `ctr images rm --sync`: waits for the garbage collector, so the content is gone too.
    fn remove(&mut self, reference: &str) -> Outcome {
        let mut cmd = self.ctr();
        cmd.args(["images", "rm", "--sync", &self.full(reference)]);
        run(cmd, None)
    }

    /// The DIGEST column of `ctr images ls` for the reference.
    fn digest(&mut self, reference: &str) -> String {
        let full = self.full(reference);
        let mut cmd = self.ctr();
        cmd.args(["images", "ls"]);
        let listing = run(cmd, None);
        let stdout = listing.expect_success();
        stdout
            .lines()
            .find_map(|line| {
                let columns: Vec<&str> = line.split_whitespace().collect();
                (columns.first() == Some(&full.as_str())).then(|| columns[2].to_string())
            })
            .unwrap_or_else(|| panic!("ctr lists no {full}:\n{stdout}"))
    }
}
