//! The directives that set a dockgate key, each turned into its value and its note: `listen`,
//! `server_name`, `ssl_certificate*`, the `*_timeout`s and `proxy_set_header`.

use super::notes::{Note, Slot};
use super::render::Values;
use super::tokenizer::Directive;
use super::values::{self, Name};

/// The note (and value) of a directive that sets a timeout, a header option or the
/// certificate; `None` for any other directive.
pub fn directive(values: &mut Values, d: &Directive) -> Option<Note> {
    let note = match d.name.as_str() {
        "proxy_connect_timeout" => timeout(
            values,
            d,
            &["connect"],
            "timeouts.connect: how long connecting to an upstream may take",
        ),
        "proxy_read_timeout" => timeout(
            values,
            d,
            &["response_headers", "body_stall"],
            "timeouts.response_headers and timeouts.body_stall: nginx's read timeout runs \
             between two reads from the upstream, both before the response headers and within \
             the body. body_stall is per read too, so a large layer that keeps moving never \
             hits it",
        ),
        "proxy_send_timeout" => timeout(
            values,
            d,
            &["body_stall"],
            "timeouts.body_stall: nginx's send timeout runs between two writes to the \
             upstream; body_stall bounds a stall in either direction",
        ),
        "client_body_timeout" | "send_timeout" => timeout(
            values,
            d,
            &["body_stall"],
            "timeouts.body_stall: a stall of the client's transfer, in either direction",
        ),
        "client_header_timeout" => {
            timeout(values, d, &["client_headers"], "timeouts.client_headers")
        }
        "proxy_set_header" => header(values, d),
        "ssl_certificate" | "ssl_certificate_key" => certificate(values, d),
        _ => return None,
    };
    Some(note)
}

/// The imported server's `listen`s: TLS addresses are kept, plain ones beside them are not,
/// since dockgate serves TLS only; a server without TLS keeps its addresses, now serving TLS.
/// `server_tls` says the server has TLS without `listen ... ssl` (`ssl on;`, before nginx
/// 1.15, made every listen TLS).
pub fn listens(
    values: &mut Values,
    listens: &[&Directive],
    server_tls: bool,
    server_line: usize,
) -> Vec<Note> {
    let tls = |d: &Directive| d.args.iter().skip(1).any(|a| a.text == "ssl");
    let ssl_listens = listens.iter().any(|d| tls(d));
    let any_tls = ssl_listens || server_tls;
    let mut notes = Vec::new();
    for d in listens {
        let addr = d.args.first().and_then(|a| values::listen_address(&a.text));
        let note = match addr {
            _ if ssl_listens && !tls(d) => Note::new(
                Slot::Dropped,
                d,
                "plain HTTP beside TLS: dockgate serves TLS only",
            ),
            None => Note::new(
                Slot::Unknown,
                d,
                "not an address dockgate can listen on (an IP address and port)",
            ),
            Some(addr) => {
                let mut says = if any_tls {
                    "listen: TLS on this address".to_string()
                } else {
                    "listen: nginx served plain HTTP here; dockgate serves TLS on it, so \
                     docker hosts trust dockgate's CA instead of listing it in \
                     insecure-registries"
                        .to_string()
                };
                for p in d.args.iter().skip(1) {
                    says.push_str(&listen_param(&p.text));
                }
                if !values.listen.contains(&addr) {
                    values.listen.push(addr);
                }
                Note::new(Slot::Listen, d, says)
            }
        };
        notes.push(note);
    }
    if listens.is_empty() {
        notes.push(Note::general(
            Slot::Listen,
            format!(
                "The server on line {server_line} has no listen (nginx listens on port 80 \
                 then); dockgate's default, 0.0.0.0:8443, is kept."
            ),
        ));
    }
    notes
}

pub fn server_name(values: &mut Values, d: &Directive) -> Note {
    let mut dropped = Vec::new();
    for arg in &d.args {
        match values::server_name(&arg.text) {
            Name::Kept(names) => {
                for n in names {
                    if !values.hostnames.contains(&n) {
                        values.hostnames.push(n);
                    }
                }
            }
            Name::Dropped(why) => dropped.push(format!("{:?} is left out: {why}", arg.text)),
        }
    }
    let mut says = "hostnames: the names the minted certificate covers".to_string();
    for dropped in dropped {
        says.push_str("; ");
        says.push_str(&dropped);
    }
    Note::new(Slot::Hostnames, d, says)
}

fn timeout(values: &mut Values, d: &Directive, keys: &[&'static str], says: &str) -> Note {
    let arg = d.args.first().map_or("", |w| w.text.as_str());
    match values::nginx_time(arg) {
        Some(t) if !t.is_zero() => {
            for key in keys {
                values.timeouts.entry(key).or_default().push(t);
            }
            Note::new(Slot::Timeouts, d, says)
        }
        _ => Note::new(
            Slot::Unknown,
            d,
            "not a time dockgate can use as a timeout (zero, or not an nginx time)",
        ),
    }
}

fn header(values: &mut Values, d: &Directive) -> Note {
    let (name, value) = match d.args.as_slice() {
        [n, v] => (n.text.to_ascii_lowercase(), v.text.as_str()),
        _ => {
            return Note::new(
                Slot::Unknown,
                d,
                "proxy_set_header takes a name and a value",
            )
        }
    };
    match name.as_str() {
        "host" if value == "$proxy_host" => {
            values.upstream_host = Some(true);
            Note::new(
                Slot::Headers,
                d,
                "headers.upstream_host = true: the upstream's own Host",
            )
        }
        "host" => {
            values.upstream_host.get_or_insert(false);
            let why = if value == "$host" {
                "nginx sent the public name without its port; dockgate sends the Host the \
                 client used, host:port, so upload Locations and the token realm keep the \
                 port"
            } else if value.contains("$proxy_port") {
                "nginx sent the public name with the upstream's port (a way to make Nexus \
                 write a port into upload Locations); dockgate sends the Host the client \
                 used, host:port, and Nexus writes the port clients use"
            } else if value == "$http_host" || value == "$host:$server_port" {
                "the same as dockgate's: the Host the client used, host:port"
            } else {
                "dockgate sends the Host the client used, host:port (or, with \
                 headers.upstream_host = true, the upstream's own)"
            };
            Note::new(
                Slot::Headers,
                d,
                format!("headers.upstream_host = false: {why}"),
            )
        }
        "x-forwarded-port" | "x-forwarded-host" => {
            values.forwarded_host = true;
            Note::new(
                Slot::Headers,
                d,
                "headers.forwarded_host = false: dockgate sends X-Forwarded-Host and \
                 X-Forwarded-Port only when it is true, and the import leaves it off: \
                 dockgate's Host already carries the port, Nexus then appends the port a \
                 second time (host:8443:8443), and docker login fails. Set it to true \
                 only for an upstream that needs them",
            )
        }
        "x-forwarded-proto" | "x-forwarded-for" | "x-real-ip" => Note::new(
            Slot::Dropped,
            d,
            "dockgate always sends X-Forwarded-Proto: https, X-Forwarded-For and \
             X-Real-IP",
        ),
        "upgrade" | "connection" => Note::new(
            Slot::Dropped,
            d,
            "hop-by-hop: dockgate removes it, keeps upstream connections alive, and a \
             registry never upgrades a connection",
        ),
        _ => Note::new(
            Slot::Unknown,
            d,
            "dockgate passes the client's own headers and sets only Host, \
             X-Forwarded-* and X-Real-IP: this one is not sent",
        ),
    }
}

/// `ssl_certificate` or `ssl_certificate_key` of the imported server (or of `http`, which it
/// inherits): the first of each is kept for `render`, which prints it if the file exists.
fn certificate(values: &mut Values, d: &Directive) -> Note {
    let slot = if d.name == "ssl_certificate" {
        &mut values.cert
    } else {
        &mut values.key
    };
    let path = d.args.first().map_or("", |w| w.text.as_str());
    if path.contains('$') || path.starts_with("data:") {
        Note::new(
            Slot::Unknown,
            d,
            "a variable or inline certificate: dockgate needs a file",
        )
    } else if slot.is_some() {
        Note::new(
            Slot::Unknown,
            d,
            "a second certificate (nginx can serve RSA and ECDSA side by side): \
             dockgate serves one",
        )
    } else {
        *slot = Some(path.to_string());
        let key = if d.name == "ssl_certificate" {
            "tls.cert"
        } else {
            "tls.key"
        };
        Note::new(Slot::Tls, d, key)
    }
}

fn listen_param(p: &str) -> String {
    let what = match p {
        "ssl" => return String::new(),
        "http2" => "http2: HTTP/2 is always offered",
        "default_server" => "default_server: dockgate answers every name on its port",
        "proxy_protocol" => {
            "proxy_protocol: NOT carried over, dockgate does not read PROXY protocol headers"
        }
        _ => return format!("; {p}: ignored"),
    };
    format!("; {what}")
}
