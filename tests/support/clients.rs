//! Real registry clients as a user drives them, behind one trait so that a test takes every
//! client through the same journey: the Docker engine (`dockerd` and the `docker` CLI),
//! containerd's `ctr`, podman, skopeo and the ORAS Python SDK. Each daemon runs on private roots
//! and sockets under its own tempdir and is killed by PID on drop; nothing is read from or written
//! to the machine's own docker, containerd or podman state; every command has a deadline.
//!
//! `Site` is what a journey runs against: the Nexus-like topology with an image only the hub
//! has, and a gateway in front that also listens on `[::1]` under a name for docker (which
//! never verifies TLS for 127.0.0.0/8, so a trust check there would prove nothing).

mod containerd;
mod docker;
mod oras;
mod podman;
mod skopeo_user;

pub use containerd::{Containerd, Ctr};
pub use docker::Docker;
pub use oras::Oras;
pub use podman::Podman;
pub use skopeo_user::SkopeoUser;

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{on_own_runtime, Gateway, Image, Nexus, Outcome, RegistryOptions, Skopeo};

/// The image only the hub has, pulled through the group's pull-through cache.
pub const HUB_IMAGE: &str = "library/base:1";

/// The name docker calls the gateway by: it resolves to `::1` only, inside dockerd's own mount
/// namespace (a private `/etc/hosts`), so docker treats the registry as secure.
pub const DOCKER_NAME: &str = "dockgate.test";

/// How long one client command may take before it is killed and the step fails.
pub const COMMAND_DEADLINE: Duration = Duration::from_secs(90);

/// One registry client, each step the command its users type. References are `repo:tag`; the
/// client puts its own name for the gateway (`Client::registry`) in front.
pub trait Client {
    /// `docker`, `ctr`, ... for messages.
    fn name(&self) -> &'static str;

    /// Talk to this gateway from now on.
    fn use_gateway(&mut self, gateway: &Gateway);

    /// `host:port`, as this client names the gateway.
    fn registry(&self) -> String;

    /// Places the gateway's CA (`ca.crt`) where this client's users place it, or takes it away.
    fn trust(&mut self, ca: Option<&Path>);

    /// Logs in (`docker login`, ...), and fails with wrong credentials.
    fn login(&mut self, user: &str, password: &str) -> Outcome;

    /// Pulls `reference` from the gateway into the client's local store.
    fn pull(&mut self, reference: &str) -> Outcome;

    /// Gives a local image a second name.
    fn tag(&mut self, from: &str, to: &str) -> Outcome;

    /// Pushes a local image to the gateway.
    fn push(&mut self, reference: &str) -> Outcome;

    /// Brings an image built elsewhere into the local store as `reference` (`docker load`, ...).
    fn load(&mut self, image: &Image, reference: &str) -> Outcome;

    /// Deletes a local image.
    fn remove(&mut self, reference: &str) -> Outcome;

    /// The manifest digest the local store holds for a pulled `reference`.
    fn digest(&mut self, reference: &str) -> String;
}

/// The registries and the gateway one journey runs against, and the images it moves.
pub struct Site {
    pub nexus: Nexus,
    pub gateway: Gateway,
    /// In the hub only, as `HUB_IMAGE`.
    pub base: Image,
    /// In no registry yet. Its 16 MiB layer is far more than socket buffers hold: a registry
    /// that answers its upload early (a 401) does so while the client is still sending.
    pub fresh: Image,
}

impl Site {
    /// Hosted built from `hosted` (basic auth, relative upload URLs); `name` seeds the images'
    /// bytes, so no two sites share a layer.
    pub fn start(name: &str, hosted: RegistryOptions) -> Site {
        let nexus = Nexus::start_with(hosted);
        let base = Image::small(&format!("{name}-base"));
        Skopeo::new()
            .copy(&base.layout(), &nexus.hub.image(HUB_IMAGE))
            .expect_success();
        let fresh = Image::builder(&format!("{name}-fresh"))
            .layer(16 << 20)
            .layer(64 << 10)
            .build();
        let gateway = Gateway::in_front_of(&nexus)
            .toml(&format!("hostnames = [\"{DOCKER_NAME}\"]"))
            .listen_also(free_ipv6_addr())
            .start();
        Site {
            nexus,
            gateway,
            base,
            fresh,
        }
    }

    /// The user and password hosted asks for, when it asks.
    pub fn credentials(&self) -> Option<(String, String)> {
        self.nexus.hosted.options().basic_auth.clone()
    }

    /// The gateway's minted CA certificate.
    pub fn ca(&self) -> PathBuf {
        self.gateway.ca_cert_dir().join("ca.crt")
    }

    /// The digest hosted itself (not through the gateway) serves for `repo:tag`; panics unless
    /// it has the manifest.
    pub fn hosted_digest(&self, reference: &str) -> String {
        let (repo, tag) = reference
            .rsplit_once(':')
            .unwrap_or_else(|| panic!("{reference} is not repo:tag"));
        let url = format!("{}/v2/{repo}/manifests/{tag}", self.nexus.hosted.url());
        let credentials = self.credentials();
        let (status, digest) = on_own_runtime(move || async move {
            let client = reqwest::Client::builder()
                .no_proxy()
                .build()
                .expect("build an HTTP client");
            let mut request = client.head(&url).header("accept", super::MANIFEST_TYPES);
            if let Some((user, password)) = credentials {
                request = request.basic_auth(user, Some(password));
            }
            let response = request
                .send()
                .await
                .unwrap_or_else(|e| panic!("HEAD {url}: {e}"));
            let digest = response
                .headers()
                .get("docker-content-digest")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            (response.status().as_u16(), digest)
        });
        assert_eq!(status, 200, "hosted has no manifest for {reference}");
        digest
    }
}

/// A `[::1]` address nobody listens on right now.
pub fn free_ipv6_addr() -> SocketAddr {
    let listener = TcpListener::bind("[::1]:0")
        .expect("bind [::1]:0 (the docker journey needs IPv6 loopback)");
    listener
        .local_addr()
        .expect("local_addr of a bound listener")
}

/// True when a client's error says it does not trust the server's certificate: Go's x509
/// message (docker, ctr, podman, skopeo) or Python's ssl one (ORAS).
pub fn is_unknown_authority(stderr: &str) -> bool {
    stderr.contains("certificate signed by unknown authority")
        || stderr.contains("CERTIFICATE_VERIFY_FAILED")
}

/// True when a client's error says the registry refused its credentials.
pub fn is_unauthorized(stderr: &str) -> bool {
    let text = stderr.to_lowercase();
    text.contains("401") || text.contains("unauthorized") || text.contains("invalid username")
}

/// Variables that would send a client's or daemon's registry traffic to a proxy.
const PROXY_VARIABLES: [&str; 8] = [
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "no_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
];

/// `cmd` without proxy variables, so every request stays on loopback.
pub fn without_proxies(mut cmd: Command) -> Command {
    for name in PROXY_VARIABLES {
        cmd.env_remove(name);
    }
    cmd
}

/// Runs `cmd` (with `stdin` written to it, if any) until it exits or `COMMAND_DEADLINE` passes,
/// when it is killed by PID; its output is read from unnamed temp files, so a chatty client
/// never blocks on a full pipe.
pub fn run(cmd: Command, stdin: Option<&str>) -> Outcome {
    let mut cmd = without_proxies(cmd);
    let command = format!("{cmd:?}");
    let mut out = tempfile::tempfile().expect("a temp file for stdout");
    let mut err = tempfile::tempfile().expect("a temp file for stderr");
    cmd.stdout(out.try_clone().expect("clone a file handle"))
        .stderr(err.try_clone().expect("clone a file handle"))
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {command}: {e}"));
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input.as_bytes())
            .expect("write to the client's stdin");
    }
    let start = Instant::now();
    let status = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break Some(status);
        }
        if start.elapsed() > COMMAND_DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let read = |file: &mut File| {
        let mut text = String::new();
        file.rewind().expect("rewind an output file");
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).expect("read an output file");
        text.push_str(&String::from_utf8_lossy(&bytes));
        text
    };
    let mut stderr = read(&mut err);
    if status.is_none() {
        stderr.push_str(&format!("\n(killed after {COMMAND_DEADLINE:?})"));
    }
    Outcome {
        command,
        success: status.is_some_and(|s| s.success()),
        stdout: read(&mut out),
        stderr,
    }
}

/// `program args...` in a private mount namespace, after `setup` (shell commands, typically
/// `mount --bind` or `mount -t tmpfs`) has run there: the mounts are seen by this process
/// alone and vanish with it. `unshare` execs, so the returned command's PID is the program's.
pub fn with_private_mounts(setup: &str, program: &str) -> Command {
    let mut cmd = Command::new("unshare");
    cmd.args(["-m", "sh", "-c"])
        .arg(format!("{setup} && exec \"$0\" \"$@\""))
        .arg(program);
    cmd
}

/// As root, podman and skopeo share one blob-info cache in this directory; a run gets an empty
/// tmpfs there (see `with_private_mounts`) so one test's pushes cannot change another's.
pub const BLOB_INFO_CACHE: &str = "/var/lib/containers/cache";

/// `image` as `docker save` writes it, named `reference`: `manifest.json`, the config as
/// `<hex>.json` and each layer as an uncompressed `<hex>/layer.tar`. Docker, podman and
/// containerd all load this format.
pub fn docker_archive(image: &Image, reference: &str, out: &Path) {
    let staging = tempfile::Builder::new()
        .prefix("docker-archive-")
        .tempdir()
        .expect("tempdir for a docker archive");
    let manifest: serde_json::Value =
        serde_json::from_slice(image.manifest()).expect("the image's manifest is JSON");
    let config = manifest["config"]["digest"]
        .as_str()
        .expect("the manifest names its config");
    let config_file = format!("{}.json", hex(config));
    std::fs::copy(
        Image::blob_in_layout(image.dir(), config),
        staging.path().join(&config_file),
    )
    .expect("copy the config");
    let mut files = vec!["manifest.json".to_string(), config_file.clone()];
    let mut layers = Vec::new();
    for layer in image.layers() {
        let name = format!("{}/layer.tar", hex(&layer.digest));
        std::fs::create_dir_all(staging.path().join(hex(&layer.digest))).expect("layer dir");
        let blob = File::open(Image::blob_in_layout(image.dir(), &layer.digest))
            .expect("open a layer blob");
        let mut tar = File::create(staging.path().join(&name)).expect("create layer.tar");
        std::io::copy(&mut flate2::read::GzDecoder::new(blob), &mut tar).expect("gunzip a layer");
        files.push(name.clone());
        layers.push(name);
    }
    let index = serde_json::json!([{
        "Config": config_file,
        "RepoTags": [reference],
        "Layers": layers,
    }]);
    std::fs::write(staging.path().join("manifest.json"), index.to_string())
        .expect("write manifest.json");
    let status = Command::new("tar")
        .arg("-C")
        .arg(staging.path())
        .arg("-cf")
        .arg(out)
        .args(&files)
        .status()
        .expect("run tar");
    assert!(status.success(), "tar of a docker archive failed");
}

/// The hex part of `sha256:<hex>`.
pub fn hex(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap_or(digest)
}

/// A file-system-safe directory name for `repo:tag`.
pub fn store_name(reference: &str) -> String {
    reference.replace(['/', ':', '@'], "_")
}

/// A successful `Outcome` for a step a client does with plain file operations (skopeo's and
/// ORAS's local store is a directory).
pub fn done(command: String) -> Outcome {
    Outcome {
        command,
        success: true,
        stdout: String::new(),
        stderr: String::new(),
    }
}
