//! `dockgate doctor` against real registries on loopback: a healthy hosted + group setup passes
//! every check; put pointed at a pull-through cache, a port with nothing on it and a Bearer
//! realm on an internal origin each give the verdict line that names the fix, and the exit
//! status says whether anything failed.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use support::{free_addr, Gateway, Image, Nexus, Registry, RegistryOptions, Skopeo};

#[test]
fn a_healthy_hosted_and_group_setup_passes_every_check() {
    let nexus = Nexus::start();
    Skopeo::new()
        .copy(
            &Image::small("doctor-base").layout(),
            &nexus.hub.image("library/base:1"),
        )
        .expect_success();
    // The gateway mints its CA and server certificate; doctor reads the very config it serves.
    let gateway = Gateway::in_front_of(&nexus).start();
    let config = gateway.config_path().display().to_string();
    let hosted = nexus.hosted.url();
    let cache = nexus.cache.url();

    let doctor = Doctor::run(&["--config", &config, "--image", "library/base:1"]);
    assert_eq!(doctor.status, Some(0), "{doctor}");
    assert!(
        doctor.verdicts().all(|l| l.starts_with("ok ")),
        "every check is ok:\n{doctor}"
    );
    doctor.expect(&format!("ok   put {hosted} v2: GET /v2/ answered 200 OK"));
    doctor.expect(&format!("ok   put {hosted} auth: no login asked"));
    doctor.expect(&format!(
        "ok   put {hosted} writable: POST /v2/dockgate-doctor/probe/blobs/uploads/ answered 202 \
         Accepted; the probe upload was cancelled"
    ));
    doctor.expect(&format!(
        "ok   put {hosted} forwarded_host: with X-Forwarded-Host"
    ));
    doctor.expect(&format!(
        "ok   get {hosted} reads: GET /v2/_catalog answered 200"
    ));
    doctor.expect(&format!(
        "ok   get {cache} reads: GET /v2/_catalog answered 200"
    ));
    doctor.expect(&format!(
        "ok   get group({hosted}, {cache}) image: HEAD /v2/library/base/manifests/1 answered 200 \
         from member 2 ({cache}): sha256:"
    ));
    doctor.expect("ok   tls certificate: ");
    doctor.expect("ok   tls expiry: ");
    doctor.expect(&format!(
        "ok   tls ca: clients need {}/ca.crt at /etc/docker/certs.d/localhost:{}/ca.crt",
        gateway.certs_dir().display(),
        gateway.addr().port()
    ));
    assert!(doctor.stdout.ends_with(" ok, 0 warn, 0 FAIL\n"), "{doctor}");
    assert!(
        nexus
            .hosted
            .log()
            .contains("DELETE /v2/dockgate-doctor/probe/blobs/uploads/"),
        "the probe uploads were cancelled on the hosted registry:\n{}",
        nexus.hosted.log()
    );

    let missing = Doctor::run(&["--config", &config, "--image", "alpine:3.19"]);
    assert_eq!(missing.status, Some(1), "{missing}");
    missing.expect(&format!(
        "FAIL get group({hosted}, {cache}) image: HEAD /v2/alpine/manifests/3.19: not found on \
         any member; fix: check the name and tag. Docker Hub's official images are library/NAME"
    ));
}

#[test]
fn put_on_a_pull_through_cache_fails_the_writable_check() {
    let nexus = Nexus::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(
        dir.path(),
        &toml_string(&nexus.cache.url()),
        &format!(
            "{{ members = [{}, {}] }}",
            toml_string(&nexus.hosted.url()),
            toml_string(&nexus.cache.url())
        ),
    );

    let doctor = Doctor::run(&["--config", &config]);
    assert_eq!(doctor.status, Some(1), "{doctor}");
    let line = doctor.expect(&format!(
        "FAIL put {} writable: POST /v2/dockgate-doctor/probe/blobs/uploads/ answered 405",
        nexus.cache.url()
    ));
    assert!(
        line.contains(
            "fix: put looks like a proxy or group repository; point put at the hosted repository"
        ),
        "{line}"
    );
    doctor.expect(&format!(
        "ok   put {} v2: GET /v2/ answered 200",
        nexus.cache.url()
    ));
    // No certificate minted yet in this tempdir: a warning, not a failure.
    doctor.expect("warn tls certificate: ");
    doctor.expect_containing("fix: dockgate mints it on first start");
}

#[test]
fn a_port_with_nothing_on_it_names_the_connector_port() {
    let get = Registry::start();
    let nothing = free_addr();
    // Flags alone, no config file: what `serve` would be given.
    let certs = tempfile::tempdir().expect("tempdir");
    let put = format!("http://{nothing}");
    let doctor = Doctor::run_in(
        certs.path(),
        &[
            "--put",
            &put,
            "--get",
            &get.url(),
            "--hostname",
            "registry.example.com",
        ],
    );
    assert_eq!(doctor.status, Some(1), "{doctor}");
    let line = doctor.expect(&format!(
        "FAIL put {put} v2: GET /v2/: connection refused; fix: nothing listens on {nothing}: is \
         this the repository's HTTP connector port"
    ));
    assert!(line.contains("Repository Connectors > HTTP"), "{line}");
    doctor.expect(&format!("ok   get {} v2: GET /v2/ answered 200", get.url()));
    assert!(
        !doctor.stdout.contains(&format!("put {put} writable")),
        "no further checks on a server that does not answer:\n{doctor}"
    );
}

#[test]
fn a_bearer_realm_clients_cannot_reach_is_named() {
    let internal = Registry::start_with(RegistryOptions {
        token_realm: Some("http://10.1.2.3:5001/token".into()),
        ..RegistryOptions::default()
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let url = toml_string(&internal.url());
    let doctor = Doctor::run(&["--config", &write_config(dir.path(), &url, &url)]);
    // A private address may be reachable on the docker hosts' network: a warning.
    assert_eq!(doctor.status, Some(0), "{doctor}");
    let line = doctor.expect(&format!(
        "warn put {} auth: Bearer realm \"http://10.1.2.3:5001/token\": 10.1.2.3:5001 is a \
         private address and not an upstream's origin; fix: dockgate rewrites realms on \
         upstream origins only",
        internal.url()
    ));
    assert!(line.contains("make it reachable"), "{line}");
    doctor.expect(&format!(
        "ok   put {} writable: POST /v2/dockgate-doctor/probe/blobs/uploads/ answered 401",
        internal.url()
    ));
    doctor.expect(&format!(
        "ok   get {} reads: GET /v2/_catalog answered 401",
        internal.url()
    ));

    // A realm on loopback (another port than the registry's) reaches no docker host: a failure.
    let loopback = Registry::start_with(RegistryOptions {
        token_realm: Some(format!("http://{}/token", free_addr())),
        ..RegistryOptions::default()
    });
    let url = toml_string(&loopback.url());
    let doctor = Doctor::run(&["--config", &write_config(dir.path(), &url, &url)]);
    assert_eq!(doctor.status, Some(1), "{doctor}");
    let line = doctor.expect(&format!("FAIL get {} auth: Bearer realm", loopback.url()));
    assert!(
        line.contains("is a loopback address, which no other host can reach")
            && line.contains("dockgate rewrites realms on upstream origins only"),
        "{line}"
    );
}

#[test]
fn nexus_doubling_the_forwarded_port_and_its_bearer_realm_off_are_named() {
    let nexus = NexusStandIn::start(true);
    let dir = tempfile::tempdir().expect("tempdir");
    let url = toml_string(&nexus.url());
    let config = write_config(dir.path(), &url, &url);
    let on = dir.path().join("on.toml");
    let text = std::fs::read_to_string(&config).expect("read the config");
    std::fs::write(&on, format!("{text}\n[headers]\nforwarded_host = true\n")).expect("write");

    let off = Doctor::run(&["--config", &config]);
    assert_eq!(off.status, Some(0), "{off}");
    off.expect(&format!(
        "ok   put {} auth: Bearer realm \"{}/v2/token\": on upstream {}, rewritten",
        nexus.url(),
        nexus.url(),
        nexus.url()
    ));
    off.expect(&format!(
        "ok   put {} forwarded_host: with X-Forwarded-Host: doctor.example:8443 put answered \
         with http://doctor.example:8443:8443/v2/token: the port doubles, the reason \
         headers.forwarded_host is off; keep it off",
        nexus.url()
    ));

    let on = Doctor::run(&["--config", &on.display().to_string()]);
    let line = on.expect(&format!("warn put {} forwarded_host: ", nexus.url()));
    assert!(
        line.contains("the port doubles; fix: set headers.forwarded_host = false"),
        "{line}"
    );

    let realm_off = NexusStandIn::start(false);
    let put = realm_off.url();
    let doctor = Doctor::run_in(dir.path(), &["--put", &put, "--get", &put]);
    assert_eq!(doctor.status, Some(1), "{doctor}");
    doctor.expect(&format!(
        "FAIL put {put} auth: 401 without a WWW-Authenticate challenge: docker cannot log in; \
         fix: activate Nexus's \"Docker Bearer Token Realm\" (Security > Realms"
    ));
}

/// Nexus's answers to an anonymous client, for the checks that only a Nexus gives a reason
/// for (there is no Nexus on the test machine): 401 to everything with `Server: Nexus/...`,
/// and with the Docker Bearer Token Realm active a realm built the way Nexus builds it, the
/// `X-Forwarded-Port` appended to an `X-Forwarded-Host` that already has a port.
struct NexusStandIn {
    addr: SocketAddr,
}

impl NexusStandIn {
    fn start(bearer_realm: bool) -> NexusStandIn {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the Nexus stand-in");
        let addr = listener.local_addr().expect("its address");
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                std::thread::spawn(move || answer_as_nexus(conn, bearer_realm));
            }
        });
        NexusStandIn { addr }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

fn answer_as_nexus(mut conn: TcpStream, bearer_realm: bool) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match conn.read(&mut buf) {
            Ok(n) if n > 0 => head.extend_from_slice(&buf[..n]),
            _ => return,
        }
    }
    let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
    let header = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .map(str::trim)
    };
    let origin = match (header("x-forwarded-host"), header("x-forwarded-port")) {
        (Some(host), Some(port)) => format!("{host}:{port}"),
        _ => header("host").unwrap_or_default().to_string(),
    };
    let challenge = if bearer_realm {
        format!(
            "WWW-Authenticate: Bearer realm=\"http://{origin}/v2/token\",\
             service=\"http://{origin}/v2/token\"\r\n"
        )
    } else {
        String::new()
    };
    let _ = write!(
        conn,
        "HTTP/1.1 401 Unauthorized\r\nServer: Nexus/3.68.1-02 (OSS)\r\n{challenge}\
         Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
}

/// One `dockgate doctor` run: its exit status and what it printed.
struct Doctor {
    status: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Doctor {
    fn run(args: &[&str]) -> Doctor {
        Doctor::run_in(Path::new("."), args)
    }

    /// Runs in `dir`, where the default `./certs` is then looked for.
    fn run_in(dir: &Path, args: &[&str]) -> Doctor {
        let out = Command::new(env!("CARGO_BIN_EXE_dockgate"))
            .arg("doctor")
            .args(args)
            .current_dir(dir)
            .env_remove("DOCKGATE_CONFIG")
            .output()
            .expect("run dockgate doctor");
        Doctor {
            status: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// The verdict lines (everything but the summary).
    fn verdicts(&self) -> impl Iterator<Item = &str> {
        self.stdout.lines().filter(|l| !l.starts_with("doctor: "))
    }

    /// The verdict line that starts with `start`; panics with the whole output if none does.
    fn expect(&self, start: &str) -> &str {
        self.verdicts()
            .find(|l| l.starts_with(start))
            .unwrap_or_else(|| panic!("no line starting with {start:?} in:\n{self}"))
    }

    /// The verdict line that contains `text`.
    fn expect_containing(&self, text: &str) -> &str {
        self.verdicts()
            .find(|l| l.contains(text))
            .unwrap_or_else(|| panic!("no line containing {text:?} in:\n{self}"))
    }
}

impl std::fmt::Display for Doctor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?}\n--- stdout\n{}--- stderr\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

/// A config with `put` and `get` (TOML values) and `[tls] dir` inside `dir`; its path.
fn write_config(dir: &Path, put: &str, get: &str) -> String {
    let path = dir.join("dockgate.toml");
    let text = format!(
        "listen = \"127.0.0.1:8443\"\n\n[upstreams]\nput = {put}\nget = {get}\n\n[tls]\ndir = {}\n",
        toml_string(&dir.join("certs").display().to_string())
    );
    std::fs::write(&path, text).expect("write dockgate.toml");
    path.display().to_string()
}

/// A TOML basic string (Rust's `{:?}` escapes what TOML needs for URLs and paths).
fn toml_string(s: &str) -> String {
    format!("{s:?}")
}
