//! An nginx config walked once: the directives that map set a dockgate value, every directive
//! gets a note, and `render` prints the values as TOML with the notes as comments. The server
//! imported is the registry's TLS server; a plain-HTTP server whose `location /` leads to a
//! third upstream (the Nexus UI) gives `web`. Pure: whether a certificate file exists is asked
//! of the caller.

use super::keys;
use super::notes::{Note, Slot};
use super::render::{self, Values};
use super::routing::{self, Location, Pass, Routes, Upstreams};
use super::table::{self, Fate};
use super::tokenizer::Directive;

/// The dockgate TOML for `file`, read from `source` (named in the header). `locate` says where
/// a certificate path of the file is on this machine, as the TOML should name it, or `None`
/// when it is not there.
pub fn to_toml(
    source: &str,
    file: &[Directive],
    locate: &dyn Fn(&str) -> Option<String>,
) -> String {
    let mut import = Import::default();
    import.collect(file);
    import.run(file);
    render::toml(source, import.values, import.notes, locate)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// The registry's server: listen, names, certificate and routing come from it.
    Registry,
    /// The plain-HTTP server whose `location /` gave `web`.
    Web,
    /// Outside any server (main, http, events).
    Outer,
}

#[derive(Default)]
struct Import<'a> {
    upstreams: Upstreams<'a>,
    servers: Vec<&'a Directive>,
    registry: Option<&'a Directive>,
    /// The web server and the `proxy_pass` that gave `web`.
    web: Option<(&'a Directive, &'a Directive)>,
    listens: Vec<&'a Directive>,
    server_rewrites: Vec<&'a Directive>,
    passes: Vec<Pass<'a>>,
    routes: Routes<'a>,
    values: Values,
    notes: Vec<Note>,
}

impl<'a> Import<'a> {
    /// Finds the upstream and server blocks, and picks the server to import.
    fn collect(&mut self, ds: &'a [Directive]) {
        for d in ds {
            match (d.name.as_str(), &d.block) {
                ("http", Some(inner)) => self.collect(inner),
                ("upstream", Some(_)) => {
                    if let Some(name) = d.args.first() {
                        self.upstreams.insert(&name.text, d);
                    }
                }
                ("server", Some(_)) => self.servers.push(d),
                _ => {}
            }
        }
        let pick = |f: &dyn Fn(&Directive) -> bool| self.servers.iter().copied().find(|s| f(s));
        self.registry = pick(&|s| is_tls(s) && routes_registry(s))
            .or_else(|| pick(&is_tls))
            .or_else(|| pick(&routes_registry))
            .or_else(|| self.servers.first().copied());
    }

    fn run(&mut self, file: &'a [Directive]) {
        let Some(registry) = self.registry else {
            self.notes.push(Note::general(
                Slot::Unknown,
                "no server block: listen, hostnames and upstreams keep dockgate's defaults",
            ));
            self.walk(file);
            return;
        };
        self.server(registry, Role::Registry);
        self.routes = routing::resolve(
            &self.server_rewrites,
            &self.passes,
            &self.upstreams,
            &mut self.notes,
        );
        if self.routes.web.is_none() {
            self.find_web();
        }
        if self.routes.put.is_none() {
            self.notes.push(Note::general(
                Slot::Routing,
                "put and get could not be read from this file: dockgate's defaults \
                 (http://127.0.0.1:8082 and :8083) apply; set them",
            ));
        }
        self.walk(file);
        self.values.put = self.routes.put.as_ref().map(|t| t.urls.clone());
        self.values.get = self.routes.get.as_ref().map(|t| t.urls.clone());
        self.values.web = self.routes.web.as_ref().map(|t| t.urls.clone());
        let notes = keys::listens(
            &mut self.values,
            &self.listens,
            is_tls(registry),
            registry.line,
        );
        self.notes.extend(notes);
        if !registry
            .block
            .iter()
            .flatten()
            .any(|d| d.name == "server_name")
        {
            self.notes.push(Note::general(
                Slot::Hostnames,
                format!(
                    "The server on line {} has no server_name, so hostnames is left empty and \
                     the minted certificate covers only the addresses dockgate finds for \
                     itself. Add the names docker hosts connect to, e.g. hostnames = \
                     [\"registry.example.com\"] (an IP address works too).",
                    registry.line
                ),
            ));
        }
    }

    /// A server beside the registry's whose `location /` proxies to an upstream that is
    /// neither put nor get: the seed's plain-HTTP server for the Nexus UI.
    fn find_web(&mut self) {
        let taken: Vec<&Vec<String>> = [&self.routes.put, &self.routes.get]
            .into_iter()
            .flatten()
            .map(|t| &t.urls)
            .collect();
        for &server in &self.servers {
            if self.registry.is_some_and(|r| std::ptr::eq(r, server)) {
                continue;
            }
            let roots =
                server.block.iter().flatten().filter(|d| {
                    d.name == "location" && routing::location(&d.args) == Location::Root
                });
            for pp in roots
                .flat_map(|l| l.block.iter().flatten())
                .filter(|d| d.name == "proxy_pass")
            {
                if let Ok(t) = routing::pass_target(pp, Location::Root, &self.upstreams) {
                    if !taken.contains(&&t.urls) {
                        let says = format!(
                            "location / of the server on line {}: web. dockgate serves it on \
                             its TLS port, for every path outside /v1 and /v2 (the Nexus UI \
                             and REST API)",
                            server.line
                        );
                        self.notes.push(Note::new(Slot::Web, pp, says));
                        self.routes.web = Some(t);
                        self.web = Some((server, pp));
                        return;
                    }
                }
            }
        }
    }

    /// Everything outside the registry server, in file order.
    fn walk(&mut self, ds: &'a [Directive]) {
        for d in ds {
            match (d.name.as_str(), &d.block) {
                ("http" | "events", Some(inner)) => self.walk(inner),
                ("upstream", Some(_)) => self.upstream(d),
                ("server", Some(_)) => {
                    if self.registry.is_some_and(|r| std::ptr::eq(r, d)) {
                        continue;
                    }
                    if self.web.is_some_and(|(w, _)| std::ptr::eq(w, d)) {
                        self.server(d, Role::Web);
                    } else if is_tls(d) {
                        let says = "another TLS server: not imported; dockgate replaces one \
                                    server (a second registry needs a second dockgate)";
                        self.notes.push(Note::new(Slot::Unknown, d, says));
                    } else {
                        self.notes.push(Note::new(
                            Slot::Dropped,
                            d,
                            "a plain-HTTP server: not imported; dockgate serves TLS only",
                        ));
                    }
                }
                _ => self.directive(d, Role::Outer),
            }
        }
    }

    fn server(&mut self, server: &'a Directive, role: Role) {
        for d in server.block.iter().flatten() {
            match (d.name.as_str(), role) {
                ("listen", Role::Registry) => self.listens.push(d),
                ("server_name", Role::Registry) => {
                    let note = keys::server_name(&mut self.values, d);
                    self.notes.push(note);
                }
                ("set" | "if", Role::Registry) => self.server_rewrites.push(d),
                ("location", _) => self.location(d, role),
                ("listen" | "server_name", _) => self.notes.push(Note::new(
                    Slot::Dropped,
                    d,
                    "the web server's own: dockgate serves web on its TLS port, under the \
                     registry's names",
                )),
                _ => self.directive(d, role),
            }
        }
    }

    fn location(&mut self, d: &'a Directive, role: Role) {
        let kind = routing::location(&d.args);
        let imported = match role {
            Role::Registry => kind != Location::Other,
            Role::Web => kind == Location::Root,
            Role::Outer => false,
        };
        if !imported {
            let path = d.args.last().map_or("", |w| w.text.as_str());
            self.notes.push(Note::new(
                Slot::Unknown,
                d,
                format!(
                    "location {path}: dockgate's routing table decides where a request goes; \
                     a [[rules]] entry can send such paths to put, get or web"
                ),
            ));
            return;
        }
        let mut pass = Pass {
            location: kind,
            proxy_pass: None,
            rewrites: Vec::new(),
        };
        for inner in d.block.iter().flatten() {
            let web_pass = self.web.is_some_and(|(_, pp)| std::ptr::eq(pp, inner));
            match inner.name.as_str() {
                _ if web_pass => {}
                "proxy_pass" if role == Role::Registry && pass.proxy_pass.is_none() => {
                    pass.proxy_pass = Some(inner)
                }
                "set" | "if" if role == Role::Registry => pass.rewrites.push(inner),
                "proxy_pass" | "set" | "if" | "location" => self.notes.push(Note::new(
                    Slot::Unknown,
                    inner,
                    "not imported: dockgate's routing table decides where a request goes; a \
                     [[rules]] entry can change that",
                )),
                _ => self.directive(inner, role),
            }
        }
        if role == Role::Registry {
            self.passes.push(pass);
        }
    }

    /// A directive that is not about routing, anywhere.
    fn directive(&mut self, d: &'a Directive, role: Role) {
        let first = d.args.first().map_or("", |w| w.text.as_str());
        let certificate = d.name.starts_with("ssl_certificate");
        if role == Role::Web && certificate {
            let says = "the web server's own; dockgate serves web on its TLS port";
            self.notes.push(Note::new(Slot::Dropped, d, says));
            return;
        }
        if let Some(note) = keys::directive(&mut self.values, d) {
            self.notes.push(note);
            return;
        }
        let note = match d.name.as_str() {
            "include" if first.ends_with("mime.types") => {
                Note::new(Slot::Dropped, d, "MIME types: dockgate serves no files")
            }
            "include" => Note::new(
                Slot::Unknown,
                d,
                "not followed: if it holds server or upstream blocks, import that file \
                 too (dockgate import-nginx FILE) and merge the two",
            ),
            "add_header" if first.eq_ignore_ascii_case("Docker-Distribution-Api-Version") => {
                Note::new(
                    Slot::Dropped,
                    d,
                    "the registry sends it itself, and dockgate passes it through",
                )
            }
            name => match table::fate(name) {
                Fate::Dropped(why) => Note::new(Slot::Dropped, d, why),
                Fate::Unknown(why) => Note::new(Slot::Unknown, d, why),
            },
        };
        self.notes.push(note);
    }

    /// An upstream block's note: which role it became, and what of its servers' parameters
    /// carries over.
    fn upstream(&mut self, d: &'a Directive) {
        let name = d.args.first().map_or("", |w| w.text.as_str());
        let is = |t: &Option<routing::Target<'a>>| {
            t.as_ref()
                .and_then(|t| t.block)
                .is_some_and(|b| std::ptr::eq(b, d))
        };
        let (slot, role) = match (
            is(&self.routes.put),
            is(&self.routes.get),
            is(&self.routes.web),
        ) {
            (true, true, _) => (Slot::Put, "put and get"),
            (true, false, _) => (Slot::Put, "put"),
            (false, true, _) => (Slot::Get, "get"),
            (false, false, true) => (Slot::Web, "web"),
            _ => (Slot::Dropped, "not used by the imported servers"),
        };
        let mut says = format!("upstream {name}: {role}");
        let mut servers = 0;
        for inner in d.block.iter().flatten() {
            if inner.name != "server" {
                self.directive(inner, Role::Outer);
                continue;
            }
            servers += 1;
            for p in inner.args.iter().skip(1) {
                says.push_str(&server_param(&p.text));
            }
        }
        if servers > 1 && slot != Slot::Dropped {
            says.push_str(
                "; several servers: a pool, requests spread round-robin over the healthy ones",
            );
        }
        self.notes.push(Note::new(slot, d, says));
    }
}

/// A server that terminates TLS: `listen ... ssl`, `ssl on` or a certificate.
fn is_tls(server: &Directive) -> bool {
    server
        .block
        .iter()
        .flatten()
        .any(|d| match d.name.as_str() {
            "listen" => d.args.iter().skip(1).any(|a| a.text == "ssl"),
            "ssl" => d.args.first().is_some_and(|a| a.text == "on"),
            "ssl_certificate" => true,
            _ => false,
        })
}

/// A server that routes registry requests: method `if`s, a variable `proxy_pass` or
/// `location /v2`.
fn routes_registry(server: &Directive) -> bool {
    server
        .block
        .iter()
        .flatten()
        .any(|d| match d.name.as_str() {
            "if" => true,
            "location" => {
                routing::location(&d.args) == Location::V2
                    || d.block.iter().flatten().any(|i| {
                        i.name == "proxy_pass"
                            && i.args.first().is_some_and(|a| a.text.contains('$'))
                    })
            }
            _ => false,
        })
}

fn server_param(p: &str) -> String {
    let name = p.split('=').next().unwrap_or(p);
    let what = match name {
        "max_fails" | "fail_timeout" => {
            "[health] fails and interval take a server out and bring it back, for every pool"
        }
        "weight" => "a pool spreads requests evenly",
        "backup" => "a pool has no backup servers: this one takes requests like the others",
        "down" => "left out",
        _ => "ignored",
    };
    format!("; {p}: {what}")
}
