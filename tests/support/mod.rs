//! Real parts on loopback for the integration tests: registries (alone, as replicas sharing
//! storage, or as a Nexus-like hosted + cache + hub), an nginx group, skopeo, generated images,
//! real registry clients (docker, ctr, podman, skopeo, ORAS) and the gateway itself. Every child
//! process is owned by one value and killed by PID when that value drops; every port comes from
//! binding `127.0.0.1:0` (or `[::1]:0`); every wait has a deadline and panics with the child's
//! log tail.
//!
//! Each `tests/<behaviour>.rs` says `mod support;` and uses only what it needs.
#![allow(dead_code, unused_imports)]

mod clients;
mod gateway;
mod image;
mod registry;
mod skopeo;

pub use clients::{
    is_unauthorized, is_unknown_authority, Client, Containerd, Ctr, Docker, Oras, Podman, Site,
    SkopeoUser, DOCKER_NAME, HUB_IMAGE,
};
pub use gateway::{
    https_client, on_own_runtime, plain_request, Gateway, GatewayBuilder, Http, Reply,
    MANIFEST_TYPES,
};
pub use image::{Image, ImageBuilder, Layer};
pub use registry::{Group, Nexus, Registry, RegistryOptions};
pub use skopeo::{Location, Outcome, Skopeo};

use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long any part may take to become ready before the test gives up.
pub const READY_DEADLINE: Duration = Duration::from_secs(30);

/// A loopback address nobody listens on right now (the kernel's pick for `127.0.0.1:0`).
pub fn free_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener
        .local_addr()
        .expect("local_addr of a bound listener")
}

/// A loopback address that refuses connections for as long as the returned socket lives: the
/// port is bound but never listens, so no other test's server can take it (a `free_addr`
/// used as a "stopped" upstream can be given to another test's gateway meanwhile).
pub fn refusing_addr() -> (SocketAddr, socket2::Socket) {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
        .expect("a TCP socket");
    let any: SocketAddr = "127.0.0.1:0".parse().expect("an address");
    socket.bind(&any.into()).expect("bind 127.0.0.1:0");
    let addr = socket
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .expect("local_addr of a bound socket");
    (addr, socket)
}

/// A child process that logs to a file and dies with its owner.
pub struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Proc {
    /// Spawns `cmd` with stdout and stderr appended to `log`.
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> Proc {
        let out = File::options()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", log.display()));
        let err = out.try_clone().expect("clone a log file handle");
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({cmd:?}): {e}"));
        Proc {
            name: name.to_string(),
            child,
            log: log.to_path_buf(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Polls `ready` until it is true, panicking with the log tail at the deadline or as soon as
    /// the child exits.
    pub fn wait_until(&mut self, what: &str, mut ready: impl FnMut() -> bool) {
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "{} exited ({status}) before {what}; its log ends:\n{}",
                    self.name,
                    tail(&self.log, 40)
                );
            }
            if ready() {
                return;
            }
            if start.elapsed() > READY_DEADLINE {
                panic!(
                    "{} (pid {}) was not ready ({what}) within {:?}; its log ends:\n{}",
                    self.name,
                    self.pid(),
                    READY_DEADLINE,
                    tail(&self.log, 40)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL, then reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then SIGKILL if it is still there after `grace`.
    pub fn terminate(&mut self, grace: Duration) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        signal(self.pid(), "TERM");
        let start = Instant::now();
        while start.elapsed() < grace {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
    }

    /// Waits for the child to exit by itself, up to `deadline`.
    pub fn wait_exit(&mut self, deadline: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if start.elapsed() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.terminate(Duration::from_secs(5));
    }
}

/// Sends a signal by PID through `kill(1)`, so the tests need no libc binding.
pub fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// The last `lines` lines of a log file, for panic messages.
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| format!("(no log: {e})"));
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// `GET path` over plain HTTP/1.0; the status code, or `None` if nothing answered.
pub fn http_status(addr: SocketAddr, path: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    conn.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(conn, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut head = [0u8; 64];
    let n = conn.read(&mut head).ok()?;
    let line = std::str::from_utf8(&head[..n]).ok()?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// `sha256:<hex>` of a file, by coreutils (fast even when the tests are built unoptimised).
pub fn sha256_file(path: &Path) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("run sha256sum");
    assert!(out.status.success(), "sha256sum {} failed", path.display());
    let text = String::from_utf8_lossy(&out.stdout);
    format!(
        "sha256:{}",
        text.split_whitespace().next().unwrap_or_default()
    )
}

/// `sha256:<hex>` of bytes in memory.
pub fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    let hash = sha2::Sha256::digest(bytes);
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// True when this process runs as root (nginx then needs `user root;`, skopeo shares a cache).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}
