//! Certificates end to end, through the real binary and real clients: a CA made by
//! `dockgate generate-ca` signs what `dockgate serve` presents, as `openssl` sees it; skopeo
//! trusts the gateway from a certs.d directory holding only `ca.crt`, and refuses it under
//! another CA; and a user's certificate that cannot work stops `serve` with exit status 2 and
//! the file named.

mod support;

use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use tempfile::TempDir;
use time::OffsetDateTime;

use support::{free_addr, tail, Gateway, Image, Location, Proc, Registry, Skopeo};

#[test]
fn a_generated_ca_signs_the_certificate_serve_presents() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let certs = tmp.path().join("certs");
    let made = dockgate(&[
        "generate-ca",
        "--out",
        &certs.display().to_string(),
        "--hostname",
        "registry.example.com",
    ]);
    assert_success(&made, "generate-ca");
    let ca_crt = certs.join("ca.crt");
    let install = format!(
        "sudo cp '{}' '/etc/docker/certs.d/registry.example.com:8443/ca.crt'",
        ca_crt.display()
    );
    assert!(
        stdout(&made).lines().any(|l| l == install),
        "generate-ca does not print {install:?}:\n{}",
        stdout(&made)
    );
    let ca_pem = std::fs::read(&ca_crt).expect("read ca.crt");

    let gateway = Served::start(&format!(
        "hostnames = [\"registry.example.com\"]\n[tls]\ndir = {:?}\n",
        certs.display().to_string()
    ));
    assert_eq!(
        std::fs::read(&ca_crt).expect("read ca.crt"),
        ca_pem,
        "serve kept the CA it was given"
    );

    let chain = served_chain(gateway.addr, "registry.example.com");
    let (leaf, rest) = chain.split_first().expect("a served certificate");
    let leaf_pem = tmp.path().join("leaf.pem");
    std::fs::write(&leaf_pem, leaf).expect("write leaf.pem");
    let ca_text = String::from_utf8_lossy(&ca_pem).into_owned();
    let intermediates: Vec<&String> = rest.iter().filter(|c| c.trim() != ca_text.trim()).collect();
    assert_eq!(
        rest.last().map(|c| c.trim()),
        Some(ca_text.trim()),
        "the chain ends with ca.crt"
    );
    let mut verify = vec![
        "verify".to_string(),
        "-CAfile".into(),
        ca_crt.display().to_string(),
        "-verify_hostname".into(),
        "registry.example.com".into(),
    ];
    if !intermediates.is_empty() {
        let untrusted = tmp.path().join("untrusted.pem");
        let pems: Vec<&str> = intermediates.iter().map(|c| c.as_str()).collect();
        std::fs::write(&untrusted, pems.concat()).expect("write untrusted.pem");
        verify.extend(["-untrusted".into(), untrusted.display().to_string()]);
    }
    verify.push(leaf_pem.display().to_string());
    let verified = openssl(&verify);
    assert_success(&verified, "openssl verify");
    assert!(stdout(&verified).contains(": OK"), "{}", stdout(&verified));

    let text = stdout(&openssl(&[
        "x509".into(),
        "-noout".into(),
        "-text".into(),
        "-in".into(),
        leaf_pem.display().to_string(),
    ]));
    for san in [
        "DNS:registry.example.com",
        "DNS:localhost",
        "IP Address:127.0.0.1",
    ] {
        assert!(text.contains(san), "no {san} in the served leaf:\n{text}");
    }
    assert!(
        text.contains("IP Address:0:0:0:0:0:0:0:1") || text.contains("IP Address:::1"),
        "no ::1 in the served leaf:\n{text}"
    );
    for key in ["ca.key", "server.key"] {
        let mode = std::fs::metadata(certs.join(key))
            .expect("stat a key")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{key} mode {:o}", mode & 0o777);
    }
}

#[test]
fn generate_ca_refuses_to_replace_a_ca_without_force() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().display().to_string();
    assert_success(&dockgate(&["generate-ca", "--out", &out]), "generate-ca");
    let key = std::fs::read(tmp.path().join("ca.key")).expect("read ca.key");

    let again = dockgate(&["generate-ca", "--out", &out]);
    assert_ne!(
        again.status.code(),
        Some(0),
        "a second generate-ca succeeded"
    );
    assert!(stderr(&again).contains("--force"), "{}", stderr(&again));
    assert_eq!(std::fs::read(tmp.path().join("ca.key")).unwrap(), key);

    assert_success(
        &dockgate(&["generate-ca", "--out", &out, "--force"]),
        "generate-ca --force",
    );
    assert_ne!(std::fs::read(tmp.path().join("ca.key")).unwrap(), key);
}

#[test]
fn skopeo_trusts_the_gateway_by_its_ca_crt_alone_and_refuses_another_ca() {
    let registry = Registry::start();
    let gateway = Gateway::builder()
        .put(&registry.url())
        .get(&registry.url())
        .start();
    let log = gateway.log();
    assert!(
        log.contains("generated a new CA")
            && log.contains("/etc/docker/certs.d/<host:port>/ca.crt"),
        "serve does not say where its new CA goes:\n{log}"
    );
    assert_eq!(files_in(gateway.ca_cert_dir()), ["ca.crt"]);
    let skopeo = Skopeo::new();
    let image = Image::small("trusted");

    skopeo
        .copy(&image.layout(), &gateway.image("team/app:1"))
        .expect_success();
    assert_eq!(
        skopeo.manifest_digest(&registry.image("team/app:1")),
        image.manifest_digest()
    );

    let other = tempfile::tempdir().expect("tempdir");
    let other_ca = other.path().join("ca");
    assert_success(
        &dockgate(&["generate-ca", "--out", &other_ca.display().to_string()]),
        "generate-ca",
    );
    let wrong_dir = other.path().join("certs.d").join(gateway.host_port());
    std::fs::create_dir_all(&wrong_dir).expect("create certs.d dir");
    std::fs::copy(other_ca.join("ca.crt"), wrong_dir.join("ca.crt")).expect("copy ca.crt");
    let refused = skopeo
        .copy(
            &image.layout(),
            &Location::tls(&format!("{}/team/app:2", gateway.host_port()), &wrong_dir),
        )
        .expect_failure()
        .to_string();
    assert!(
        refused.contains("certificate signed by unknown authority") || refused.contains("x509"),
        "skopeo failed for another reason:\n{refused}"
    );
    let tags = skopeo
        .list_tags(&registry.image("team/app"))
        .expect_success()
        .to_string();
    assert!(!tags.contains("\"2\""), "the refused push landed: {tags}");
}

#[test]
fn a_key_from_another_certificate_stops_serve_with_exit_2() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let a = issued(tmp.path(), "a");
    let b = issued(tmp.path(), "b");
    let cert = a.join("server.crt");
    let key = b.join("server.key");

    let (code, stderr) = serve_until_exit(&cert, &key);
    assert_eq!(code, Some(2), "exit status; stderr:\n{stderr}");
    assert!(
        stderr.contains(&key.display().to_string()) && stderr.contains("does not match"),
        "{stderr}"
    );
}

#[test]
fn an_expired_certificate_stops_serve_with_exit_2() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ca_dir = tmp.path().join("ca");
    assert_success(
        &dockgate(&["generate-ca", "--out", &ca_dir.display().to_string()]),
        "generate-ca",
    );
    let ca = dockgate::tls::Ca::load(&ca_dir).expect("load the CA");
    let now = OffsetDateTime::now_utc();
    let out = tmp.path().join("expired");
    ca.issue_with_validity(
        &["localhost".to_string(), "127.0.0.1".to_string()],
        now - time::Duration::days(30),
        now - time::Duration::days(1),
    )
    .expect("issue an expired certificate")
    .write(&out)
    .expect("write it");
    let cert = out.join("server.crt");

    let (code, stderr) = serve_until_exit(&cert, &out.join("server.key"));
    assert_eq!(code, Some(2), "exit status; stderr:\n{stderr}");
    assert!(
        stderr.contains(&cert.display().to_string()) && stderr.contains("expired"),
        "{stderr}"
    );
}

/// `dockgate serve` from a config file, on a free loopback port, killed by PID on drop.
struct Served {
    addr: SocketAddr,
    _proc: Proc,
    _dir: TempDir,
}

impl Served {
    /// `toml` is added after `listen`; ready once the port accepts, which `serve` only allows
    /// after its certificate is in place.
    fn start(toml: &str) -> Served {
        let dir = tempfile::tempdir().expect("tempdir for the gateway");
        let addr = free_addr();
        let config = dir.path().join("dockgate.toml");
        std::fs::write(&config, format!("listen = [\"{addr}\"]\n{toml}")).expect("write config");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_dockgate"));
        cmd.arg("serve").arg("--config").arg(&config);
        let mut proc = Proc::spawn("dockgate", cmd, &dir.path().join("gateway.log"));
        proc.wait_until(&format!("{addr} accepts"), || {
            TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
        });
        Served {
            addr,
            _proc: proc,
            _dir: dir,
        }
    }
}

/// `serve --cert --key` that must refuse to start: its exit code and stderr.
fn serve_until_exit(cert: &Path, key: &Path) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().expect("tempdir for the log");
    let log = dir.path().join("gateway.log");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dockgate"));
    cmd.arg("serve")
        .arg("--listen")
        .arg(free_addr().to_string())
        .arg("--cert")
        .arg(cert)
        .arg("--key")
        .arg(key);
    let mut proc = Proc::spawn("dockgate", cmd, &log);
    let status = proc.wait_exit(Duration::from_secs(20));
    let stderr = std::fs::read_to_string(&log).unwrap_or_default();
    match status {
        Some(status) => (status.code(), stderr),
        None => panic!("serve started anyway; its log ends:\n{}", tail(&log, 20)),
    }
}

/// A new CA in `base/NAME` and a localhost certificate from it in `base/NAME/server`.
fn issued(base: &Path, name: &str) -> PathBuf {
    let ca = base.join(name);
    let server = ca.join("server");
    assert_success(
        &dockgate(&["generate-ca", "--out", &ca.display().to_string()]),
        "generate-ca",
    );
    assert_success(
        &dockgate(&[
            "issue-cert",
            "--ca",
            &ca.display().to_string(),
            "--hostname",
            "localhost",
            "--hostname",
            "127.0.0.1",
            "--out",
            &server.display().to_string(),
        ]),
        "issue-cert",
    );
    server
}

/// The certificates the gateway at `addr` presents for `sni`, leaf first, as PEM blocks.
fn served_chain(addr: SocketAddr, sni: &str) -> Vec<String> {
    let shown = openssl(&[
        "s_client".into(),
        "-connect".into(),
        addr.to_string(),
        "-servername".into(),
        sni.into(),
        "-showcerts".into(),
    ]);
    let text = stdout(&shown);
    let end = "-----END CERTIFICATE-----";
    let chain: Vec<String> = text
        .split_inclusive(end)
        .filter_map(|part| {
            let start = part.find("-----BEGIN CERTIFICATE-----")?;
            part.ends_with(end).then(|| format!("{}\n", &part[start..]))
        })
        .collect();
    assert!(
        !chain.is_empty(),
        "openssl s_client saw no certificate:\n{text}{}",
        stderr(&shown)
    );
    chain
}

fn dockgate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dockgate"))
        .args(args)
        .output()
        .expect("run dockgate")
}

/// `openssl ARGS </dev/null`.
fn openssl(args: &[String]) -> Output {
    Command::new("openssl")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run openssl")
}

fn assert_success(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        stdout(out),
        stderr(out)
    );
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read a cert dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// A first start on a wildcard address with no hostname: the minted certificate covers this
/// machine's host name and a non-loopback address (as `hostname` and `hostname -I` report
/// them, read independently of dockgate), and a WARN line names them and says how to add one.
#[test]
fn a_first_start_on_a_wildcard_address_covers_this_machines_name_and_addresses() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let certs = tmp.path().join("certs");
    let port = free_addr().port();
    let log = tmp.path().join("gateway.log");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dockgate"));
    cmd.args(["serve", "--listen", &format!("0.0.0.0:{port}")])
        .args(["--certs", &certs.display().to_string()])
        .args(["--put", "http://127.0.0.1:1", "--get", "http://127.0.0.1:1"]);
    let mut gw = Proc::spawn("dockgate", cmd, &log);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("an address");
    gw.wait_until("the TLS port accepts", || TcpStream::connect(addr).is_ok());

    let host = Command::new("hostname").output().expect("run hostname");
    let host = String::from_utf8_lossy(&host.stdout)
        .trim()
        .to_ascii_lowercase();
    let ips = Command::new("hostname")
        .arg("-I")
        .output()
        .expect("run hostname -I");
    let ips: Vec<String> = String::from_utf8_lossy(&ips.stdout)
        .split_whitespace()
        // IPv4: openssl prints IPv6 SANs expanded, `hostname -I` short.
        .filter(|ip| ip.contains('.') && !ip.starts_with("127."))
        .map(str::to_string)
        .collect();
    let sans = openssl(&[
        "x509".into(),
        "-noout".into(),
        "-ext".into(),
        "subjectAltName".into(),
        "-in".into(),
        certs.join("server.crt").display().to_string(),
    ]);
    assert_success(&sans, "openssl x509");
    let sans = stdout(&sans).to_ascii_lowercase();
    if !host.is_empty() && host != "localhost" {
        assert!(
            sans.contains(&format!("dns:{host}")),
            "{host} is not among {sans}"
        );
    }
    if let Some(ip) = ips.first() {
        assert!(
            sans.contains(&format!("ip address:{ip}")),
            "{ip} is not among {sans}"
        );
    }
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let warn = text
        .lines()
        .find(|l| l.contains("WARN") && l.contains("--hostname"))
        .unwrap_or_else(|| panic!("no WARN line about the names:\n{}", tail(&log, 20)));
    if let Some(ip) = ips.first() {
        assert!(
            warn.contains(ip.as_str()),
            "the WARN line does not name {ip}: {warn}"
        );
    }
}
