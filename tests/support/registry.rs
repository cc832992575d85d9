//! Debian's `docker-registry` (Distribution 2.8) as a hosted registry, a pull-through cache, a
//! token-protected registry or one replica of several sharing a storage directory; `Nexus`, the
//! hosted + cache + hub topology a gateway stands in front of; and nginx composed into a
//! Nexus-like group, for the one test that shows how such a group answers on the wire.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tempfile::TempDir;

use super::{free_addr, http_status, is_root, tail, Location, Proc};

/// What makes one registry differ from a plain hosted one.
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// `http.relativeurls: true`: upload `Location`s without scheme and host.
    pub relative_urls: bool,
    /// `proxy.remoteurl`: a pull-through cache of this registry (it refuses pushes).
    pub proxy_remote: Option<String>,
    /// `auth.token.realm`: answer 401 with `WWW-Authenticate: Bearer realm="..."`.
    pub token_realm: Option<String>,
    /// `http.tls`: serve HTTPS with this certificate chain and key (PEM files).
    pub tls: Option<(PathBuf, PathBuf)>,
    /// `storage.filesystem.rootdirectory` shared with other registries (replicas of one pool);
    /// by default each registry keeps its own storage in its tempdir. The `http.secret` is the
    /// same for every test registry, so replicas accept each other's upload `_state`.
    pub storage: Option<PathBuf>,
    /// Listen here instead of on a free port of the kernel's choosing (for a realm or remote
    /// that must name the registry's own address before it starts).
    pub addr: Option<SocketAddr>,
    /// `auth.htpasswd`: answer 401 with `WWW-Authenticate: Basic realm="..."` and accept only
    /// this user and password (a bcrypt file made by `htpasswd -B`, from apache2-utils).
    pub basic_auth: Option<(String, String)>,
}

/// One `docker-registry serve` on `127.0.0.1:<free port>`, storage in its own tempdir unless
/// `RegistryOptions::storage` names a shared one.
pub struct Registry {
    dir: TempDir,
    addr: SocketAddr,
    options: RegistryOptions,
    proc: Option<Proc>,
}

impl Registry {
    /// A hosted registry with absolute upload URLs (Distribution's default).
    pub fn start() -> Registry {
        Registry::start_with(RegistryOptions::default())
    }

    /// A pull-through cache of `hub`, like a Nexus proxy repository of Docker Hub.
    pub fn pull_through(hub: &Registry) -> Registry {
        Registry::start_with(RegistryOptions {
            proxy_remote: Some(hub.url()),
            ..RegistryOptions::default()
        })
    }

    /// One replica of a pool: a hosted registry whose storage is `storage`, shared with others.
    pub fn sharing(storage: &Path) -> Registry {
        Registry::start_with(RegistryOptions {
            storage: Some(storage.to_path_buf()),
            ..RegistryOptions::default()
        })
    }

    pub fn start_with(options: RegistryOptions) -> Registry {
        let dir = tempfile::Builder::new()
            .prefix("registry-")
            .tempdir()
            .expect("tempdir for a registry");
        let addr = options.addr.unwrap_or_else(free_addr);
        std::fs::write(
            dir.path().join("config.yml"),
            config_yml(dir.path(), addr, &options),
        )
        .expect("write registry config");
        let mut registry = Registry {
            dir,
            addr,
            options,
            proc: None,
        };
        registry.restart();
        registry
    }

    pub fn url(&self) -> String {
        let scheme = if self.options.tls.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn options(&self) -> &RegistryOptions {
        &self.options
    }

    /// PID of the running process; panics when stopped.
    pub fn pid(&self) -> u32 {
        self.proc.as_ref().expect("registry is stopped").pid()
    }

    /// `name:tag` (or `name@digest`) on this registry, spoken to over plain HTTP.
    pub fn image(&self, reference: &str) -> Location {
        Location::plain_http(&format!("{}/{reference}", self.addr))
    }

    /// Everything the registry has logged (its access log included).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("registry.log")
    }

    /// Kills the process (SIGKILL) and keeps its storage, so `restart` finds the same images.
    pub fn stop(&mut self) {
        if let Some(mut proc) = self.proc.take() {
            proc.kill();
        }
    }

    /// Starts it again on the same port with the same storage; waits until `/v2/` answers.
    pub fn restart(&mut self) {
        self.stop();
        let mut cmd = Command::new("docker-registry");
        cmd.arg("serve").arg(self.dir.path().join("config.yml"));
        let mut proc = Proc::spawn("docker-registry", cmd, &self.log_path());
        let addr = self.addr;
        proc.wait_until(&format!("GET http://{addr}/v2/ answers"), || {
            http_status(addr, "/v2/").is_some()
        });
        self.proc = Some(proc);
    }
}

fn config_yml(dir: &Path, addr: SocketAddr, options: &RegistryOptions) -> String {
    let mut yml = format!(
        "version: 0.1\n\
         log:\n  level: info\n  formatter: text\n\
         storage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\n\
         http:\n  addr: {addr}\n  secret: dockgate-tests\n  relativeurls: {relative}\n",
        storage = options
            .storage
            .clone()
            .unwrap_or_else(|| dir.join("storage"))
            .display(),
        relative = options.relative_urls,
    );
    if let Some((cert, key)) = &options.tls {
        yml.push_str(&format!(
            "  tls:\n    certificate: {}\n    key: {}\n",
            cert.display(),
            key.display()
        ));
    }
    if let Some(remote) = &options.proxy_remote {
        yml.push_str(&format!("proxy:\n  remoteurl: {remote}\n"));
    }
    if let Some(realm) = &options.token_realm {
        // Distribution only checks tokens against this bundle; any certificate lets it start.
        let bundle = dir.join("token-root.pem");
        let cert = rcgen::generate_simple_self_signed(vec!["token-issuer".to_string()])
            .expect("generate a token signing certificate");
        std::fs::write(&bundle, cert.cert.pem()).expect("write the token root bundle");
        yml.push_str(&format!(
            "auth:\n  token:\n    realm: \"{realm}\"\n    service: dockgate-test\n    \
             issuer: dockgate-test-issuer\n    rootcertbundle: {}\n",
            bundle.display()
        ));
    }
    if let Some((user, password)) = &options.basic_auth {
        let file = dir.join("htpasswd");
        std::fs::write(&file, htpasswd(user, password)).expect("write the htpasswd file");
        yml.push_str(&format!(
            "auth:\n  htpasswd:\n    realm: dockgate-test\n    path: {}\n",
            file.display()
        ));
    }
    yml
}

/// One `user:bcrypt-hash` line, as `htpasswd -Bbn` prints it (Distribution reads only bcrypt).
fn htpasswd(user: &str, password: &str) -> String {
    let out = Command::new("htpasswd")
        .args(["-Bbn", user, password])
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run htpasswd (apache2-utils; .ci/run installs it): {e}")
        });
    assert!(
        out.status.success(),
        "htpasswd -Bbn failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim_end().to_string() + "\n"
}

/// A Nexus "group" composed from nginx: ask the hosted registry first and, on 404, the
/// pull-through cache (`proxy_intercept_errors` + `error_page 404 = @cache`). Every answer
/// carries `X-Served-By: group` so a test can tell the group answered.
pub struct Group {
    dir: TempDir,
    addr: SocketAddr,
    proc: Option<Proc>,
}

impl Group {
    pub fn start(hosted: &Registry, cache: &Registry) -> Group {
        let dir = tempfile::Builder::new()
            .prefix("group-")
            .tempdir()
            .expect("tempdir for nginx");
        let addr = free_addr();
        let conf = nginx_conf(dir.path(), addr, hosted.addr(), cache.addr());
        std::fs::write(dir.path().join("nginx.conf"), conf).expect("write nginx.conf");
        std::fs::create_dir_all(dir.path().join("tmp")).expect("nginx temp dir");
        let mut cmd = Command::new("nginx");
        cmd.arg("-p")
            .arg(dir.path())
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .arg("-c")
            .arg(dir.path().join("nginx.conf"))
            .arg("-g")
            .arg("daemon off;");
        let mut proc = Proc::spawn("nginx (group)", cmd, &dir.path().join("stderr.log"));
        proc.wait_until(&format!("GET http://{addr}/v2/ answers"), || {
            http_status(addr, "/v2/").is_some()
        });
        Group {
            dir,
            addr,
            proc: Some(proc),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn image(&self, reference: &str) -> Location {
        Location::plain_http(&format!("{}/{reference}", self.addr))
    }

    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default()
    }

    pub fn error_log_tail(&self) -> String {
        tail(&self.dir.path().join("error.log"), 40)
    }

    /// Stops nginx (workers included: SIGTERM to the master is nginx's fast shutdown).
    pub fn stop(&mut self) {
        if let Some(mut proc) = self.proc.take() {
            proc.terminate(Duration::from_secs(5));
        }
    }
}

fn nginx_conf(dir: &Path, listen: SocketAddr, hosted: SocketAddr, cache: SocketAddr) -> String {
    let d = dir.display();
    // As root nginx would drop its worker to `nobody`, which cannot enter a 0700 tempdir.
    let user = if is_root() { "user root;\n" } else { "" };
    format!(
        r#"{user}worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 1024; }}
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/tmp/body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;
    server {{
        listen {listen};
        client_max_body_size 0;
        proxy_buffering off;
        proxy_request_buffering off;
        proxy_http_version 1.1;
        proxy_set_header Host $http_host;
        proxy_set_header Connection "";
        add_header X-Served-By group always;
        location / {{
            proxy_pass http://{hosted};
            proxy_intercept_errors on;
            error_page 404 = @cache;
        }}
        location @cache {{
            proxy_pass http://{cache};
        }}
    }}
}}
"#
    )
}

/// What a gateway fronts: `hosted` (push goes there), and for pulls a group of `hosted` then a
/// pull-through `cache` of `hub` ("Docker Hub"). By default the group is dockgate's own
/// (`get = { members = [hosted, cache] }`); `start_with_nginx_group` adds an nginx that composes
/// the same group the way a Nexus group repository answers, and the gateway then pulls from it.
pub struct Nexus {
    pub hub: Registry,
    pub cache: Registry,
    pub hosted: Registry,
    pub nginx_group: Option<Group>,
}

impl Nexus {
    pub fn start() -> Nexus {
        Nexus::start_with(RegistryOptions::default())
    }

    /// `hosted` built from `options` (e.g. relative upload URLs).
    pub fn start_with(hosted: RegistryOptions) -> Nexus {
        let hub = Registry::start();
        let cache = Registry::pull_through(&hub);
        let hosted = Registry::start_with(hosted);
        Nexus {
            hub,
            cache,
            hosted,
            nginx_group: None,
        }
    }

    /// The same registries with an nginx group (hosted, then the cache on 404) in front.
    pub fn start_with_nginx_group() -> Nexus {
        let mut nexus = Nexus::start();
        nexus.nginx_group = Some(Group::start(&nexus.hosted, &nexus.cache));
        nexus
    }

    /// The group's members in the order a pull asks them: hosted, then the cache.
    pub fn members(&self) -> Vec<String> {
        vec![self.hosted.url(), self.cache.url()]
    }
}
