//! Login, push and pull through dockgate alone, with the registry's token service on its own
//! port (`upstreams.token`): Distribution with `auth.token` sends clients to a realm on another
//! origin; dockgate rewrites that realm to its own `https://host:port/auth` and forwards requests
//! under `/auth` to the token service, so a client that can reach only the gateway still logs in.
//!
//! The token service is `TokenIssuer`, a minimal one written here because the test stack has no
//! packaged token server: basic auth against one user, and ES256 JWTs whose `x5c` chain is a
//! self-signed certificate that the registry's `rootcertbundle` holds. Before any test goes
//! through the gateway, `TokenSite::start` proves Distribution itself accepts those tokens.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::Signer;
use rustls::SignatureScheme;

use support::{
    is_unauthorized, on_own_runtime, Gateway, Image, Location, Outcome, Registry, RegistryOptions,
    Reply, Skopeo, MANIFEST_TYPES,
};

const USER: &str = "builder";
const PASSWORD: &str = "s3cret-token-pass";

/// How long a skopeo run of this file's own may take before it is killed.
const SKOPEO_DEADLINE: Duration = Duration::from_secs(90);

#[test]
fn the_gateways_challenge_sends_clients_to_its_own_token_path() {
    let site = TokenSite::start();

    let reply = site.gateway.get("/v2/");

    assert_eq!(reply.status, 401, "{}", reply.text());
    let challenge = reply
        .header("www-authenticate")
        .unwrap_or_else(|| panic!("a 401 without WWW-Authenticate: {:?}", reply.headers));
    let public_realm = format!("realm=\"https://{}/auth\"", site.gateway.host_port());
    assert!(
        challenge.starts_with("Bearer ") && challenge.contains(&public_realm),
        "the realm should be the gateway's {public_realm}: {challenge}"
    );
    assert!(
        !challenge.contains(&site.issuer.addr().port().to_string()),
        "the issuer's own port leaked to the client: {challenge}"
    );
    assert!(
        challenge.contains(&format!("service=\"{}\"", site.issuer.service)),
        "the service is passed on unchanged: {challenge}"
    );
}

#[test]
fn login_push_and_pull_through_the_gateway_alone() {
    let site = TokenSite::start();
    let seen_before = site.issuer.requests().len();
    let skopeo = Skopeo::new();
    let image = Image::small("token-app");

    skopeo
        .login(
            &site.gateway.host_port(),
            site.gateway.ca_cert_dir(),
            USER,
            PASSWORD,
        )
        .expect_success();
    skopeo
        .copy(&image.layout(), &site.gateway.image("team/app:1"))
        .expect_success();
    let pulled = tempfile::tempdir().expect("tempdir for the pulled image");
    skopeo
        .copy(
            &site.gateway.image("team/app:1"),
            &Location::oci(pulled.path(), "pulled"),
        )
        .expect_success();

    assert_eq!(
        Image::digest_in_layout(pulled.path()),
        image.manifest_digest(),
        "the image pulled back is the one pushed"
    );
    let through_gateway = &site.issuer.requests()[seen_before..];
    assert!(
        through_gateway
            .iter()
            .any(|r| r.status == 200 && r.scopes.contains(&"repository:team/app:pull,push".into())),
        "the push got a pull,push token: {through_gateway:#?}"
    );
    assert!(
        through_gateway
            .iter()
            .any(|r| r.status == 200 && r.scopes.contains(&"repository:team/app:pull".into())),
        "the pull got a pull token: {through_gateway:#?}"
    );
    assert!(
        through_gateway
            .iter()
            .all(|r| r.host == site.gateway.host_port()),
        "every token request came through the gateway (Host {}): {through_gateway:#?}",
        site.gateway.host_port()
    );
    site.expect_token_lines(through_gateway.len(), "status=200");
    assert_eq!(
        site.registry_digest("team/app", "1"),
        image.manifest_digest(),
        "the push landed in the registry behind the gateway"
    );
}

#[test]
fn a_wrong_password_fails_login_and_push_as_unauthorized() {
    let site = TokenSite::start();
    let seen_before = site.issuer.requests().len();

    let login = Skopeo::new().login(
        &site.gateway.host_port(),
        site.gateway.ca_cert_dir(),
        USER,
        "not-the-password",
    );
    let stderr = login.expect_failure();
    assert!(is_unauthorized(stderr), "login: {stderr}");

    let image = Image::small("token-refused");
    let push = push_with_creds(
        &image,
        &site.gateway,
        "team/refused:1",
        &format!("{USER}:not-the-password"),
    );
    let stderr = push.expect_failure();
    assert!(is_unauthorized(stderr), "push: {stderr}");

    let through_gateway = &site.issuer.requests()[seen_before..];
    assert!(
        through_gateway.len() >= 2
            && through_gateway
                .iter()
                .all(|r| r.status == 401 && r.host == site.gateway.host_port()),
        "the issuer refused every request, and each came through the gateway: \
         {through_gateway:#?}"
    );
    site.expect_token_lines(through_gateway.len(), "status=401");
    let tags = site.registry_get("/v2/team/refused/tags/list", "repository:team/refused:pull");
    assert_eq!(tags.status, 404, "nothing was pushed: {}", tags.text());
}

/// Distribution with token auth, its issuer on a port of its own, and the gateway in front with
/// `put = get = the registry` and `upstreams.token = the issuer`.
struct TokenSite {
    issuer: TokenIssuer,
    registry: Registry,
    gateway: Gateway,
}

impl TokenSite {
    fn start() -> TokenSite {
        // The realm must name the issuer before the registry starts; the registry's `service`
        // and `issuer` are read back from its config so the tokens carry what it checks.
        let issuer_listener = TokenIssuer::bind();
        let realm = format!(
            "http://{}/auth",
            issuer_listener.local_addr().expect("the issuer's address")
        );
        let mut registry = Registry::start_with(RegistryOptions {
            token_realm: Some(realm.clone()),
            ..RegistryOptions::default()
        });
        let config_path = registry.log_path().with_file_name("config.yml");
        let config = std::fs::read_to_string(&config_path).expect("read the registry's config");
        let setting = |key: &str| {
            config
                .lines()
                .find_map(|l| l.trim().strip_prefix(&format!("{key}:")))
                .map(|v| v.trim().trim_matches('"').to_string())
                .unwrap_or_else(|| panic!("no {key} in {}:\n{config}", config_path.display()))
        };
        let issuer = TokenIssuer::start(issuer_listener, &setting("service"), &setting("issuer"));
        // The support code writes a throwaway certificate as the root bundle; this issuer's
        // certificate replaces it, and Distribution reads the bundle only when it starts.
        std::fs::write(setting("rootcertbundle"), &issuer.cert_pem)
            .expect("write the issuer's certificate as the registry's root bundle");
        registry.restart();

        expect_registry_accepts_issuer_tokens(&issuer, &registry);

        let gateway = Gateway::builder()
            .put(&registry.url())
            .get(&registry.url())
            .upstream("token", &format!("{realm:?}"))
            .start();
        TokenSite {
            issuer,
            registry,
            gateway,
        }
    }

    /// The digest the registry itself serves for `name:tag`, asked with a token fetched straight
    /// from the issuer (not through the gateway).
    fn registry_digest(&self, name: &str, tag: &str) -> String {
        let reply = self.registry_get(
            &format!("/v2/{name}/manifests/{tag}"),
            &format!("repository:{name}:pull"),
        );
        assert_eq!(reply.status, 200, "{}", reply.text());
        reply
            .header("docker-content-digest")
            .expect("a manifest answer names its digest")
            .to_string()
    }

    fn registry_get(&self, path: &str, scope: &str) -> Reply {
        let token = self.issuer.fetch_token(scope);
        http_get(
            &format!("{}{path}", self.registry.url()),
            &[
                ("authorization", &format!("Bearer {token}")),
                ("accept", MANIFEST_TYPES),
            ],
        )
    }

    /// Waits (the access line is written as the answer ends) until the gateway has logged
    /// exactly `count` requests on route `token`, each with `status`.
    fn expect_token_lines(&self, count: usize, status: &str) {
        let start = Instant::now();
        loop {
            let log = self.gateway.log();
            let lines: Vec<&str> = log
                .lines()
                .filter(|l| l.contains("route=token ") || l.contains("route=\"token\" "))
                .collect();
            let ok = lines.len() == count
                && lines
                    .iter()
                    .all(|l| l.contains(&format!(" {status} ")) && l.contains("path=/auth"));
            if ok {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "expected {count} access lines with route=token and {status} \
                 (one per request the issuer saw), got {}:\n{log}",
                lines.len()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The registry alone: it challenges with the issuer's realm, accepts the issuer's token, and
/// honours the token's `access` (a token without it is refused a repository).
fn expect_registry_accepts_issuer_tokens(issuer: &TokenIssuer, registry: &Registry) {
    let base = format!("{}/v2/", registry.url());
    let anonymous = http_get(&base, &[]);
    assert_eq!(anonymous.status, 401, "{}", anonymous.text());
    let challenge = anonymous.header("www-authenticate").unwrap_or_default();
    assert!(
        challenge.contains(&format!("realm=\"{}\"", issuer.realm())),
        "{challenge}"
    );

    let no_access = issuer.fetch_token("");
    let bearer = format!("Bearer {no_access}");
    let reply = http_get(&base, &[("authorization", &bearer)]);
    assert_eq!(
        reply.status,
        200,
        "Distribution refused the issuer's token: {}\n{}",
        reply.text(),
        support::tail(&registry.log_path(), 20)
    );
    let tags = format!("{}/v2/probe/app/tags/list", registry.url());
    let refused = http_get(&tags, &[("authorization", &bearer)]);
    assert_eq!(
        refused.status,
        401,
        "a token without access: {}",
        refused.text()
    );

    let pull = issuer.fetch_token("repository:probe/app:pull");
    let reply = http_get(&tags, &[("authorization", &format!("Bearer {pull}"))]);
    assert_eq!(
        reply.status,
        404,
        "a pull token lets the registry say the name is unknown: {}",
        reply.text()
    );
}

/// One request the issuer answered.
#[derive(Debug, Clone)]
struct TokenRequest {
    /// The `Host` header: the gateway sends its public `host:port` (`headers.upstream_host` is
    /// off by default), so a request that came straight from a client names the issuer's.
    host: String,
    scopes: Vec<String>,
    status: u16,
}

/// A minimal Docker token service (the "Token Authentication Specification" of Distribution):
/// `GET /auth?service=S&scope=repository:NAME:ACTIONS...` with basic auth for `USER`/`PASSWORD`
/// answers `{"token", "access_token", "expires_in"}`, an ES256 JWT granting every scope asked;
/// wrong or missing credentials get 401. One thread accepts, one thread per connection answers
/// one request and closes it.
struct TokenIssuer {
    addr: SocketAddr,
    service: String,
    cert_pem: String,
    state: Arc<IssuerState>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

struct IssuerState {
    service: String,
    issuer: String,
    /// The certificate's DER, base64 (standard, padded), as the JWT header's `x5c` carries it.
    x5c: String,
    signer: Box<dyn Signer>,
    next_id: AtomicU64,
    requests: Mutex<Vec<TokenRequest>>,
}

impl TokenIssuer {
    /// The listening socket, bound before anything else so the realm can name it.
    fn bind() -> TcpListener {
        TcpListener::bind("127.0.0.1:0").expect("bind the token issuer")
    }

    /// Starts answering on `listener` for `service`, signing as `issuer` with a fresh P-256 key
    /// and a self-signed certificate for it (`cert_pem`, for the registry's root bundle).
    fn start(listener: TcpListener, service: &str, issuer: &str) -> TokenIssuer {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .expect("generate a P-256 key");
        let cert = rcgen::CertificateParams::new(vec![issuer.to_string()])
            .expect("certificate parameters")
            .self_signed(&key)
            .expect("self-sign the issuer certificate");
        let pkcs8 = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let signer = rustls::crypto::ring::sign::any_ecdsa_type(&pkcs8)
            .expect("rustls takes the P-256 key")
            .choose_scheme(&[SignatureScheme::ECDSA_NISTP256_SHA256])
            .expect("the key signs ECDSA P-256 SHA-256");
        let state = Arc::new(IssuerState {
            service: service.to_string(),
            issuer: issuer.to_string(),
            x5c: STANDARD.encode(cert.der()),
            signer,
            next_id: AtomicU64::new(1),
            requests: Mutex::new(Vec::new()),
        });
        let addr = listener.local_addr().expect("the issuer's address");
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (state, stop) = (state.clone(), stop.clone());
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    if let Ok(conn) = conn {
                        let state = state.clone();
                        std::thread::spawn(move || answer(&state, conn));
                    }
                }
            })
        };
        TokenIssuer {
            addr,
            service: service.to_string(),
            cert_pem: cert.pem(),
            state,
            stop,
            thread: Some(thread),
        }
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The realm the registry names: this issuer's own origin and path.
    fn realm(&self) -> String {
        format!("http://{}/auth", self.addr)
    }

    /// Every request answered so far, in order.
    fn requests(&self) -> Vec<TokenRequest> {
        self.state.requests.lock().expect("issuer lock").clone()
    }

    /// A token for `scope` (none when empty), fetched directly with the right password.
    fn fetch_token(&self, scope: &str) -> String {
        let mut url = format!("{}?service={}", self.realm(), self.service);
        if !scope.is_empty() {
            url.push_str(&format!("&scope={scope}"));
        }
        let basic = format!("Basic {}", STANDARD.encode(format!("{USER}:{PASSWORD}")));
        let reply = http_get(&url, &[("authorization", &basic)]);
        assert_eq!(reply.status, 200, "the issuer: {}", reply.text());
        reply.json()["token"]
            .as_str()
            .expect("a token in the issuer's answer")
            .to_string()
    }
}

impl Drop for TokenIssuer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Reads one request from `conn`, answers it and closes the connection.
fn answer(state: &IssuerState, mut conn: TcpStream) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        if head.len() > 64 * 1024 {
            return;
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let request_line = head.split("\r\n").next().unwrap_or_default();
    let header = |name: &str| {
        head.split("\r\n").skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    };
    let host = header("host").unwrap_or_default();
    let target = request_line.split_whitespace().nth(1).unwrap_or_default();
    let method = request_line.split_whitespace().next().unwrap_or_default();
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut service = String::new();
    let mut scopes = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = percent_encoding::percent_decode_str(&v.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned();
        match k {
            "service" => service = v,
            // The spec allows several `scope` parameters and several scopes in one, by spaces.
            "scope" => scopes.extend(v.split(' ').filter(|s| !s.is_empty()).map(String::from)),
            _ => {}
        }
    }
    let user = header("authorization")
        .and_then(|v| v.strip_prefix("Basic ").map(str::to_string))
        .and_then(|b| STANDARD.decode(b.trim()).ok())
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .and_then(|pair| {
            let (user, password) = pair.split_once(':')?;
            (user == USER && password == PASSWORD).then(|| user.to_string())
        });

    let (status, reason, extra, body) = if method != "GET" || path != "/auth" {
        (
            404,
            "Not Found",
            "",
            error_json("NOT_FOUND", "no such endpoint"),
        )
    } else if service != state.service {
        (
            400,
            "Bad Request",
            "",
            error_json("UNSUPPORTED", "unknown service"),
        )
    } else if let Some(user) = user {
        let token = state.sign(&user, &scopes);
        let body = serde_json::json!({
            "token": token,
            "access_token": token,
            "expires_in": 300,
        });
        (200, "OK", "", body.to_string())
    } else {
        (
            401,
            "Unauthorized",
            "WWW-Authenticate: Basic realm=\"token\"\r\n",
            error_json("UNAUTHORIZED", "wrong user or password"),
        )
    };
    state
        .requests
        .lock()
        .expect("issuer lock")
        .push(TokenRequest {
            host,
            scopes,
            status,
        });
    let _ = write!(
        conn,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n{extra}Connection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = conn.flush();
}

fn error_json(code: &str, message: &str) -> String {
    serde_json::json!({"errors": [{"code": code, "message": message}]}).to_string()
}

impl IssuerState {
    /// An ES256 JWT for `user` granting each `type:name:actions` scope as asked.
    fn sign(&self, user: &str, scopes: &[String]) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("the clock is after 1970")
            .as_secs();
        let access: Vec<serde_json::Value> = scopes
            .iter()
            .filter_map(|scope| {
                let (kind, rest) = scope.split_once(':')?;
                let (name, actions) = rest.rsplit_once(':')?;
                Some(serde_json::json!({
                    "type": kind,
                    "name": name,
                    "actions": actions.split(',').collect::<Vec<_>>(),
                }))
            })
            .collect();
        let header = serde_json::json!({"alg": "ES256", "typ": "JWT", "x5c": [self.x5c]});
        let claims = serde_json::json!({
            "iss": self.issuer,
            "sub": user,
            "aud": self.service,
            "exp": now + 300,
            "nbf": now - 10,
            "iat": now,
            "jti": format!("dockgate-test-{}", self.next_id.fetch_add(1, Ordering::SeqCst)),
            "access": access,
        });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let der = self
            .signer
            .sign(signing_input.as_bytes())
            .expect("sign the token");
        format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(ecdsa_der_to_raw(&der))
        )
    }
}

/// JWS (RFC 7518 §3.4) wants ECDSA's r and s as two 32-byte big-endian halves; ring gives the
/// ASN.1 `SEQUENCE { INTEGER r, INTEGER s }`. For P-256 every length fits in one byte.
fn ecdsa_der_to_raw(der: &[u8]) -> [u8; 64] {
    assert_eq!(der.first(), Some(&0x30), "an ECDSA-Sig-Value: {der:02x?}");
    let mut rest = &der[2..];
    let mut raw = [0u8; 64];
    for half in raw.chunks_mut(32) {
        assert_eq!(rest[0], 0x02, "an INTEGER: {der:02x?}");
        let len = rest[1] as usize;
        let int = &rest[2..2 + len];
        let first = int.iter().position(|&b| b != 0).unwrap_or(int.len());
        let int = &int[first..];
        assert!(int.len() <= 32, "a P-256 scalar: {der:02x?}");
        half[32 - int.len()..].copy_from_slice(int);
        rest = &rest[2 + len..];
    }
    raw
}

/// `GET url` over plain HTTP with `headers`, blocking.
fn http_get(url: &str, headers: &[(&str, &str)]) -> Reply {
    let url = url.to_string();
    let headers: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    on_own_runtime(move || async move {
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("build an HTTP client");
        let mut request = client.get(&url);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        Reply::read(response).await
    })
}

/// `skopeo copy` of `image` to `reference` on the gateway with `--dest-creds` (the support
/// `Skopeo` only takes credentials through `login`, which checks them first). Killed by PID
/// after `SKOPEO_DEADLINE`. Its blob-info cache is not isolated: the image's blobs are new and a
/// refused push records nothing there.
fn push_with_creds(image: &Image, gateway: &Gateway, reference: &str, creds: &str) -> Outcome {
    let dir = tempfile::Builder::new()
        .prefix("skopeo-creds-")
        .tempdir()
        .expect("tempdir for skopeo");
    let policy = dir.path().join("policy.json");
    std::fs::write(
        &policy,
        r#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
    )
    .expect("write policy.json");
    let args = vec![
        format!("--policy={}", policy.display()),
        format!("--tmpdir={}", dir.path().display()),
        "copy".to_string(),
        "--preserve-digests".to_string(),
        format!("--dest-cert-dir={}", gateway.ca_cert_dir().display()),
        "--dest-tls-verify=true".to_string(),
        format!("--dest-creds={creds}"),
        format!("oci:{}:{}", image.dir().display(), layout_tag(image)),
        format!("docker://{}/{reference}", gateway.host_port()),
    ];
    run_with_deadline(&args, dir.path())
}

fn layout_tag(image: &Image) -> String {
    match image.layout() {
        Location::Oci { tag, .. } => tag,
        other => panic!("an image's layout is an OCI directory: {other:?}"),
    }
}

fn run_with_deadline(args: &[String], dir: &Path) -> Outcome {
    let command = format!("skopeo {}", args.join(" "));
    let (out_path, err_path) = (dir.join("stdout"), dir.join("stderr"));
    let mut cmd = Command::new("skopeo");
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).expect("create stdout file"))
        .stderr(std::fs::File::create(&err_path).expect("create stderr file"));
    for name in [
        "http_proxy",
        "https_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "all_proxy",
        "ALL_PROXY",
    ] {
        cmd.env_remove(name);
    }
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run `{command}`: {e}"));
    let start = Instant::now();
    let status = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break Some(status);
        }
        if start.elapsed() > SKOPEO_DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    if status.is_none() {
        stderr.push_str(&format!("\n(killed after {SKOPEO_DEADLINE:?})"));
    }
    Outcome {
        command,
        success: status.is_some_and(|s| s.success()),
        stdout: std::fs::read_to_string(&out_path).unwrap_or_default(),
        stderr,
    }
}
