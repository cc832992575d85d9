//! The `dockgate` binary under test: a config file in a tempdir, `dockgate serve` on a free
//! loopback port, its stderr in a log file, and HTTPS clients that trust only its minted CA.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::Duration;

use tempfile::TempDir;

use super::{free_addr, Location, Nexus, Proc};

/// Which HTTP version a test client speaks to the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Http {
    /// HTTP/1.1 only (ALPN `http/1.1`).
    One,
    /// HTTP/2 only (ALPN `h2`).
    Two,
}

/// A gateway's configuration, built up before it starts.
#[derive(Debug, Default, Clone)]
pub struct GatewayBuilder {
    /// `[upstreams]` keys and their values as TOML (`"http://..."`, `{ members = [...] }`).
    upstreams: Vec<(String, String)>,
    toml: String,
    rules: String,
    args: Vec<String>,
    /// Ready as soon as the port accepts connections, for upstreams that never answer.
    listening_is_ready: bool,
    /// More `listen` addresses after the first (e.g. one on `[::1]`).
    also_listen: Vec<SocketAddr>,
    /// `[admin] listen`, on a free loopback port chosen by `admin()`.
    admin: Option<SocketAddr>,
    /// Environment variables for `dockgate serve` (e.g. `NOTIFY_SOCKET`).
    env: Vec<(String, String)>,
    /// The CA that signs a certificate of the test's own (`[tls] cert`), for the readiness probe
    /// and the clients.
    trusted_ca: Option<PathBuf>,
}

/// One running `dockgate serve`, terminated (SIGTERM, then SIGKILL) on drop.
pub struct Gateway {
    dir: TempDir,
    addr: SocketAddr,
    also_listen: Vec<SocketAddr>,
    admin: Option<SocketAddr>,
    proc: Option<Proc>,
    ca_dir: PathBuf,
}

impl Gateway {
    pub fn builder() -> GatewayBuilder {
        GatewayBuilder::default()
    }

    /// put = the hosted registry, get = the group: the deployment the README describes. The group
    /// is dockgate's own (`get = { members = [hosted, cache] }`), or the nginx one when the
    /// topology was started with it.
    pub fn in_front_of(nexus: &Nexus) -> GatewayBuilder {
        let builder = Gateway::builder().put(&nexus.hosted.url());
        match &nexus.nginx_group {
            Some(group) => builder.get(&group.url()),
            None => builder.get_group(&nexus.members()),
        }
    }

    /// Starts a gateway from a TOML fragment (e.g. its `[upstreams]`); `listen` and `[tls]` are
    /// added by the harness.
    pub fn start(toml: &str) -> Gateway {
        Gateway::builder().toml(toml).start()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The `listen` addresses after the first, as `GatewayBuilder::listen_also` gave them.
    pub fn other_addrs(&self) -> &[SocketAddr] {
        &self.also_listen
    }

    /// `127.0.0.1:PORT`, as docker and skopeo name the registry.
    pub fn host_port(&self) -> String {
        self.addr.to_string()
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// A directory holding only `ca.crt`, like `/etc/docker/certs.d/HOST:PORT/`.
    pub fn ca_cert_dir(&self) -> &Path {
        &self.ca_dir
    }

    pub fn ca_pem(&self) -> Vec<u8> {
        std::fs::read(self.ca_dir.join("ca.crt")).expect("read the gateway's ca.crt")
    }

    /// The directory the gateway mints its CA and server certificate into.
    pub fn certs_dir(&self) -> PathBuf {
        self.dir.path().join("certs")
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("dockgate.toml")
    }

    /// `name:tag` (or `name@digest`) through the gateway, over TLS trusting its CA.
    pub fn image(&self, reference: &str) -> Location {
        Location::tls(&format!("{}/{reference}", self.addr), &self.ca_dir)
    }

    pub fn pid(&self) -> u32 {
        self.proc.as_ref().expect("gateway is stopped").pid()
    }

    /// The `[admin] listen` address `GatewayBuilder::admin` chose.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin.expect("the gateway was built with .admin()")
    }

    /// `GET path` on the admin listener (plain HTTP), blocking.
    pub fn admin_get(&self, path: &str) -> Reply {
        plain_request("GET", &format!("http://{}{path}", self.admin_addr()))
    }

    /// Everything the gateway wrote to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("gateway.log")).unwrap_or_default()
    }

    /// Peak resident memory (`VmHWM` in `/proc/PID/status`), in KiB.
    pub fn vm_hwm_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc/PID/status of the gateway");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|kib| kib.parse().ok())
            .expect("VmHWM in /proc/PID/status")
    }

    /// SIGTERM and wait up to `deadline` for a clean exit; `None` if it had to be killed.
    pub fn terminate(&mut self, deadline: Duration) -> Option<ExitStatus> {
        let mut proc = self.proc.take()?;
        super::signal(proc.pid(), "TERM");
        let status = proc.wait_exit(deadline);
        if status.is_none() {
            proc.kill();
        }
        status
    }

    /// An HTTPS client that trusts only this gateway's CA.
    pub fn client(&self, http: Http) -> reqwest::Client {
        https_client(&self.ca_pem(), http)
    }

    /// `GET path` over HTTP/1.1, blocking; safe to call from sync and async tests alike.
    pub fn get(&self, path: &str) -> Reply {
        self.request(Http::One, "GET", path)
    }

    /// Any method, blocking, without a body.
    pub fn request(&self, http: Http, method: &str, path: &str) -> Reply {
        self.request_with(http, method, path, &[])
    }

    /// `GET` or `HEAD` of a manifest path over HTTP/1.1 with the `Accept` docker sends:
    /// Distribution answers 404 to a request for an OCI manifest that does not accept one.
    pub fn manifest(&self, method: &str, path: &str) -> Reply {
        self.request_with(Http::One, method, path, &[("accept", MANIFEST_TYPES)])
    }

    /// Follows a paged list (`/v2/_catalog?n=1`, `/v2/<name>/tags/list?n=1`) through its
    /// `Link: <...>; rel="next"` headers, as docker does, and returns each page's `key` array.
    /// Panics on a page that is not a 200 or a Link that leads away from the gateway.
    pub fn pages(&self, first: &str, key: &str) -> Vec<Vec<String>> {
        let mut pages = Vec::new();
        let mut next = Some(first.to_string());
        while let Some(path) = next.take() {
            assert!(pages.len() < 20, "still paging after {pages:?}");
            let page = self.get(&path);
            assert_eq!(page.status, 200, "{path}: {}", page.text());
            let items = page.json()[key]
                .as_array()
                .unwrap_or_else(|| panic!("{path}: no {key:?} array in {}", page.text()))
                .iter()
                .map(|v| v.as_str().unwrap_or_default().to_string())
                .collect();
            pages.push(items);
            next = page.header("link").map(|link| self.link_path(link));
        }
        pages
    }

    /// The path a `Link: <...>; rel="next"` header leads to on this gateway.
    pub fn link_path(&self, link: &str) -> String {
        assert!(link.contains("rel=\"next\""), "{link}");
        let target = link
            .split_once('<')
            .and_then(|(_, rest)| rest.split_once('>'))
            .map(|(target, _)| target)
            .unwrap_or_else(|| panic!("not a Link header: {link}"));
        match target.strip_prefix(&self.url()) {
            Some(path) => path.to_string(),
            None => {
                assert!(
                    target.starts_with('/'),
                    "the Link leads away from the gateway: {target}"
                );
                target.to_string()
            }
        }
    }

    /// Any method with these request headers, blocking, without a body.
    pub fn request_with(
        &self,
        http: Http,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Reply {
        let ca = self.ca_pem();
        send_blocking(
            move || https_client(&ca, http),
            method,
            format!("{}{path}", self.url()),
            headers,
        )
    }
}

/// The manifest media types docker and skopeo accept, as one `Accept` value.
pub const MANIFEST_TYPES: &str = "application/vnd.oci.image.manifest.v1+json, \
     application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json, \
     application/vnd.docker.distribution.manifest.list.v2+json";

impl GatewayBuilder {
    /// `put = "url"`: one server.
    pub fn put(self, url: &str) -> Self {
        self.upstream("put", &toml_string(url))
    }

    /// `get = "url"`: one server.
    pub fn get(self, url: &str) -> Self {
        self.upstream("get", &toml_string(url))
    }

    /// `web = "url"`: one server.
    pub fn web(self, url: &str) -> Self {
        self.upstream("web", &toml_string(url))
    }

    /// `get = { members = [...] }`: a group, asked in this order.
    pub fn get_group(self, members: &[String]) -> Self {
        self.upstream("get", &format!("{{ members = {} }}", toml_list(members)))
    }

    /// `KEY = { servers = [...] }`: a pool of servers with the same content.
    pub fn pool(self, key: &str, servers: &[String]) -> Self {
        self.upstream(key, &format!("{{ servers = {} }}", toml_list(servers)))
    }

    /// `KEY = VALUE` in `[upstreams]`, the value written as given (any TOML the config takes).
    pub fn upstream(mut self, key: &str, value: &str) -> Self {
        self.upstreams.retain(|(k, _)| k != key);
        self.upstreams.push((key.to_string(), value.to_string()));
        self
    }

    /// `upstreams.ca`: the CA bundle https:// upstreams must chain to.
    pub fn upstream_ca(self, path: &Path) -> Self {
        self.upstream("ca", &toml_string(&path.display().to_string()))
    }

    /// A user routing rule, e.g. `.rule(&["GET", "HEAD"], "/", "get")`.
    pub fn rule(mut self, methods: &[&str], path: &str, upstream: &str) -> Self {
        let methods: Vec<String> = methods.iter().map(|m| format!("{m:?}")).collect();
        self.rules.push_str(&format!(
            "\n[[rules]]\nmethods = [{}]\npath = {path:?}\nupstream = {upstream:?}\n",
            methods.join(", ")
        ));
        self
    }

    /// Raw TOML placed right after `listen`, so it may start with top-level keys
    /// (`hostnames = [...]`) and go on with tables (`[timeouts]`, `[headers]`).
    pub fn toml(mut self, fragment: &str) -> Self {
        self.toml.push_str(fragment);
        self.toml.push('\n');
        self
    }

    /// Listen on `addr` as well (`listen = [first, addr]`); the gateway is still reached and
    /// probed at the first.
    pub fn listen_also(mut self, addr: SocketAddr) -> Self {
        self.also_listen.push(addr);
        self
    }

    /// `[admin] listen` on a free loopback port (`Gateway::admin_get` reaches it).
    pub fn admin(mut self) -> Self {
        self.admin = Some(free_addr());
        self
    }

    /// An environment variable for `dockgate serve`.
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.to_string(), value.to_string()));
        self
    }

    /// Trust `ca_crt` instead of a minted CA, for a `[tls] cert`/`key` of the test's own (given
    /// with `toml`).
    pub fn trusting(mut self, ca_crt: &Path) -> Self {
        self.trusted_ca = Some(ca_crt.to_path_buf());
        self
    }

    /// An extra command-line argument for `dockgate serve`.
    pub fn arg(mut self, arg: &str) -> Self {
        self.args.push(arg.to_string());
        self
    }

    /// The config file this builder writes, with `addr` and `certs` filled in.
    pub fn config_text(&self, addr: SocketAddr, certs: &Path) -> String {
        let listen: Vec<String> = std::iter::once(addr)
            .chain(self.also_listen.iter().copied())
            .map(|a| a.to_string())
            .collect();
        let mut text = format!("listen = {}\n{}", toml_list(&listen), self.toml);
        if !self.upstreams.is_empty() {
            text.push_str("\n[upstreams]\n");
            for (key, value) in &self.upstreams {
                text.push_str(&format!("{key} = {value}\n"));
            }
        }
        if !self.toml.lines().any(|l| l.trim() == "[tls]") {
            text.push_str(&format!(
                "\n[tls]\ndir = {:?}\n",
                certs.display().to_string()
            ));
        }
        // Tests read the log right after a response; the buffered default has its own tests in
        // logs.rs.
        if !self.toml.lines().any(|l| l.trim() == "[log]") {
            text.push_str("\n[log]\naccess_buffer = 0\n");
        }
        if let Some(admin) = self.admin {
            text.push_str(&format!("\n[admin]\nlisten = \"{admin}\"\n"));
        }
        text.push_str(&self.rules);
        text
    }

    /// Like `start`, but ready once the port accepts connections (the gateway binds only after
    /// its certificates are in place), for tests whose upstreams never answer.
    pub fn start_when_listening(mut self) -> Gateway {
        self.listening_is_ready = true;
        self.start()
    }

    /// Writes the config, spawns `dockgate serve --config FILE`, and waits until a TLS request
    /// to `/v2/` gets any HTTP answer.
    pub fn start(self) -> Gateway {
        let dir = tempfile::Builder::new()
            .prefix("dockgate-")
            .tempdir()
            .expect("tempdir for the gateway");
        let addr = free_addr();
        let certs = dir.path().join("certs");
        let config = dir.path().join("dockgate.toml");
        std::fs::write(&config, self.config_text(addr, &certs)).expect("write dockgate.toml");
        if let Some(ca) = &self.trusted_ca {
            std::fs::create_dir_all(&certs).expect("create the certs dir");
            std::fs::copy(ca, certs.join("ca.crt")).expect("copy the trusted ca.crt");
        }

        let mut cmd = Command::new(env!("CARGO_BIN_EXE_dockgate"));
        cmd.arg("serve")
            .arg("--config")
            .arg(&config)
            .args(&self.args);
        cmd.env("RUST_BACKTRACE", "1");
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        let mut proc = Proc::spawn("dockgate", cmd, &dir.path().join("gateway.log"));

        let ca = certs.join("ca.crt");
        proc.wait_until(&format!("https://{addr}/v2/ answers"), || {
            let Ok(pem) = std::fs::read(&ca) else {
                return false;
            };
            if self.listening_is_ready {
                return std::net::TcpStream::connect(addr).is_ok();
            }
            on_own_runtime(move || async move {
                let client = https_client(&pem, Http::One);
                let probe = client
                    .get(format!("https://{addr}/v2/"))
                    .timeout(Duration::from_secs(2))
                    .send();
                probe.await.is_ok()
            })
        });

        let ca_dir = dir.path().join("certs.d").join(addr.to_string());
        std::fs::create_dir_all(&ca_dir).expect("create certs.d dir");
        std::fs::copy(&ca, ca_dir.join("ca.crt")).expect("copy ca.crt");
        Gateway {
            dir,
            addr,
            also_listen: self.also_listen,
            admin: self.admin,
            proc: Some(proc),
            ca_dir,
        }
    }
}

/// A TOML basic string (Rust's `{:?}` escapes what TOML needs for URLs and paths).
fn toml_string(s: &str) -> String {
    format!("{s:?}")
}

/// A one-line TOML array of strings.
fn toml_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|i| toml_string(i)).collect();
    format!("[{}]", quoted.join(", "))
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.terminate(Duration::from_secs(10));
    }
}

/// A response read whole (tests only read small ones).
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub version: reqwest::Version,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub async fn read(response: reqwest::Response) -> Reply {
        let status = response.status().as_u16();
        let version = response.version();
        let headers = response.headers().clone();
        let body = response
            .bytes()
            .await
            .map(|b| b.to_vec())
            .unwrap_or_default();
        Reply {
            status,
            version,
            headers,
            body,
        }
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A reqwest client trusting only `ca_pem` (no system roots, no proxy from the environment).
pub fn https_client(ca_pem: &[u8], http: Http) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(ca_pem).expect("ca.crt is a PEM certificate");
    let builder = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .no_proxy()
        .connect_timeout(Duration::from_secs(5));
    let builder = match http {
        Http::One => builder.http1_only(),
        Http::Two => builder.http2_prior_knowledge(),
    };
    builder.build().expect("build an HTTPS client")
}

/// Runs an async block on a fresh thread with its own runtime, so blocking helpers work from
/// plain `#[test]`s and from inside `#[tokio::test]`s alike.
pub fn on_own_runtime<F, Fut, T>(f: F) -> T
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T>,
    T: Send + 'static,
{
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime")
            .block_on(f())
    })
    .join()
    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// `METHOD url` over plain HTTP (for the registries and the group behind the gateway), blocking.
pub fn plain_request(method: &str, url: &str) -> Reply {
    let client = || {
        reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("build an HTTP client")
    };
    send_blocking(client, method, url.to_string(), &[])
}

/// Sends `METHOD url` with `headers` and without a body on a client made by `client`, and reads
/// the reply whole.
fn send_blocking(
    client: impl FnOnce() -> reqwest::Client + Send + 'static,
    method: &str,
    url: String,
    headers: &[(&str, &str)],
) -> Reply {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("an HTTP method");
    let headers: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    on_own_runtime(move || async move {
        let mut request = client().request(method.clone(), &url);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {url}: {e:?}"));
        Reply::read(response).await
    })
}
