//! `skopeo` as a registry client that trusts a CA the way docker does (a certs.d-style directory
//! holding only `ca.crt`), with its blob-info cache private to each run.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use tempfile::TempDir;

/// Where skopeo reads or writes an image.
#[derive(Debug, Clone)]
pub enum Location {
    /// `oci:DIR:TAG`, an OCI image layout on disk.
    Oci { dir: PathBuf, tag: String },
    /// `docker://HOST:PORT/NAME:TAG` over TLS trusting the CA in `cert_dir`.
    Tls {
        reference: String,
        cert_dir: PathBuf,
    },
    /// `docker://HOST:PORT/NAME:TAG` over plain HTTP (`--*-tls-verify=false`).
    PlainHttp { reference: String },
}

impl Location {
    pub fn oci(dir: &Path, tag: &str) -> Location {
        Location::Oci {
            dir: dir.to_path_buf(),
            tag: tag.to_string(),
        }
    }

    pub fn plain_http(reference: &str) -> Location {
        Location::PlainHttp {
            reference: reference.to_string(),
        }
    }

    pub fn tls(reference: &str, cert_dir: &Path) -> Location {
        Location::Tls {
            reference: reference.to_string(),
            cert_dir: cert_dir.to_path_buf(),
        }
    }

    fn transport(&self) -> String {
        match self {
            Location::Oci { dir, tag } => format!("oci:{}:{tag}", dir.display()),
            Location::Tls { reference, .. } | Location::PlainHttp { reference } => {
                format!("docker://{reference}")
            }
        }
    }

    /// The TLS flags for this side of a copy (`src` or `dest`); none for `inspect`'s `""`.
    fn tls_flags(&self, side: &str) -> Vec<String> {
        let prefix = if side.is_empty() {
            String::new()
        } else {
            format!("{side}-")
        };
        match self {
            Location::Oci { .. } => vec![],
            Location::Tls { cert_dir, .. } => vec![
                format!("--{prefix}cert-dir={}", cert_dir.display()),
                format!("--{prefix}tls-verify=true"),
            ],
            Location::PlainHttp { .. } => vec![format!("--{prefix}tls-verify=false")],
        }
    }
}

/// What a skopeo run left behind.
#[derive(Debug)]
pub struct Outcome {
    pub command: String,
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Outcome {
    /// Panics with skopeo's stderr unless it exited 0; returns stdout.
    pub fn expect_success(&self) -> &str {
        assert!(
            self.success,
            "`{}` failed:\n{}{}",
            self.command, self.stderr, self.stdout
        );
        &self.stdout
    }

    /// Panics unless skopeo exited non-zero; returns stderr.
    pub fn expect_failure(&self) -> &str {
        assert!(
            !self.success,
            "`{}` succeeded but was expected to fail:\n{}{}",
            self.command, self.stderr, self.stdout
        );
        &self.stderr
    }
}

/// One skopeo user: its own policy file and temp dir.
pub struct Skopeo {
    dir: TempDir,
}

impl Default for Skopeo {
    fn default() -> Self {
        Skopeo::new()
    }
}

impl Skopeo {
    pub fn new() -> Skopeo {
        let dir = tempfile::Builder::new()
            .prefix("skopeo-")
            .tempdir()
            .expect("tempdir for skopeo");
        std::fs::write(
            dir.path().join("policy.json"),
            r#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
        )
        .expect("write policy.json");
        std::fs::create_dir_all(dir.path().join("tmp")).expect("skopeo tmpdir");
        Skopeo { dir }
    }

    /// `skopeo copy SRC DEST`, keeping the source's manifest and layers byte for byte.
    pub fn copy(&self, src: &Location, dest: &Location) -> Outcome {
        let mut args = vec!["copy".to_string(), "--preserve-digests".to_string()];
        args.extend(src.tls_flags("src"));
        args.extend(dest.tls_flags("dest"));
        args.push(src.transport());
        args.push(dest.transport());
        self.run(&args)
    }

    /// `skopeo inspect --raw`: the manifest exactly as the registry served it.
    pub fn inspect_raw(&self, image: &Location) -> Outcome {
        let mut args = vec!["inspect".to_string(), "--raw".to_string()];
        args.extend(image.tls_flags(""));
        args.push(image.transport());
        self.run(&args)
    }

    /// The digest of the manifest a registry serves for `image` (sha256 of the raw bytes).
    pub fn manifest_digest(&self, image: &Location) -> String {
        let out = self.inspect_raw(image);
        super::sha256(out.expect_success().as_bytes())
    }

    /// `skopeo login`: the credentials go to this user's own auth file (never
    /// `/run/containers/0/auth.json`), which every later command of this user then reads.
    /// `cert_dir` holds the registry's CA, as for a `Location::Tls`.
    pub fn login(&self, registry: &str, cert_dir: &Path, user: &str, password: &str) -> Outcome {
        self.run(&[
            "login".to_string(),
            format!("--authfile={}", self.auth_file().display()),
            format!("--cert-dir={}", cert_dir.display()),
            "--tls-verify=true".to_string(),
            format!("--username={user}"),
            format!("--password={password}"),
            registry.to_string(),
        ])
    }

    fn auth_file(&self) -> PathBuf {
        self.dir.path().join("auth.json")
    }

    /// `skopeo list-tags`.
    pub fn list_tags(&self, image: &Location) -> Outcome {
        let mut args = vec!["list-tags".to_string()];
        args.extend(image.tls_flags(""));
        args.push(image.transport());
        self.run(&args)
    }

    fn run(&self, args: &[String]) -> Outcome {
        let mut full = vec![
            format!("--policy={}", self.dir.path().join("policy.json").display()),
            format!("--tmpdir={}", self.dir.path().join("tmp").display()),
        ];
        full.extend(args.iter().cloned());
        let command = format!("skopeo {}", full.join(" "));
        let mut cmd = isolated_skopeo(&full);
        if self.auth_file().exists() {
            // Only after a `login`: skopeo refuses a REGISTRY_AUTH_FILE that does not exist.
            cmd.env("REGISTRY_AUTH_FILE", self.auth_file());
        }
        let out: Output = cmd
            .output()
            .unwrap_or_else(|e| panic!("cannot run `{command}`: {e}"));
        Outcome {
            command,
            success: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

const CACHE_DIR: &str = "/var/lib/containers/cache";

/// As root skopeo keeps one blob-info cache in `/var/lib/containers/cache` for every run, so a
/// push in one test could change which blobs another test's push tries to reuse or mount. Each
/// run gets an empty tmpfs there in a private mount namespace; where that is not permitted
/// (and for non-root users, whose cache is under `$HOME`) skopeo runs as is.
fn isolated_skopeo(args: &[String]) -> Command {
    if can_unshare() {
        let mut cmd = Command::new("unshare");
        cmd.args(["-m", "sh", "-c"])
            .arg(format!(
                "mount -t tmpfs tmpfs {CACHE_DIR} && exec skopeo \"$@\""
            ))
            .arg("skopeo")
            .args(args);
        cmd
    } else {
        let mut cmd = Command::new("skopeo");
        cmd.args(args);
        cmd
    }
}

fn can_unshare() -> bool {
    static PROBE: OnceLock<bool> = OnceLock::new();
    *PROBE.get_or_init(|| {
        if !super::is_root() {
            return false;
        }
        let _ = std::fs::create_dir_all(CACHE_DIR);
        let ok = Command::new("unshare")
            .args(["-m", "sh", "-c"])
            .arg(format!("mount -t tmpfs tmpfs {CACHE_DIR}"))
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !ok {
            eprintln!("note: `unshare -m` is not permitted here; skopeo runs share {CACHE_DIR}");
        }
        ok
    })
}
