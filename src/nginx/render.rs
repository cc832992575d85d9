//! The imported values printed as dockgate TOML: each key under the notes that explain it, the
//! dropped and not understood directives listed at the end. Every value was checked with the
//! parsers `check-config` uses; certificate paths are printed only when the files exist.

use std::collections::BTreeMap;
use std::time::Duration;

use super::notes::{Note, Slot};
use super::values::dockgate_duration;

/// What the walk found, in dockgate's terms.
#[derive(Debug, Default)]
pub struct Values {
    pub listen: Vec<String>,
    pub hostnames: Vec<String>,
    /// Each upstream's URLs: one is a server, several a pool.
    pub put: Option<Vec<String>>,
    pub get: Option<Vec<String>>,
    pub web: Option<Vec<String>>,
    /// Certificate and key paths as nginx names them.
    pub cert: Option<String>,
    pub key: Option<String>,
    /// Every value found for each timeout key: dockgate has one value for all upstreams, so
    /// the largest is kept.
    pub timeouts: BTreeMap<&'static str, Vec<Duration>>,
    /// X-Forwarded-Host or -Port was set.
    pub forwarded_host: bool,
    /// `Some` when nginx set `Host`: true for the upstream's own (`$proxy_host`).
    pub upstream_host: Option<bool>,
}

/// The TOML text. `locate` says where a certificate path is on this machine, if it is.
pub fn toml(
    source: &str,
    values: Values,
    mut notes: Vec<Note>,
    locate: &dyn Fn(&str) -> Option<String>,
) -> String {
    let timeouts = timeouts(&values.timeouts, &mut notes);
    let tls = tls(&values, &mut notes, locate);
    // A slot's directives in file order, then what is said about the file as a whole, which
    // reads best right above the keys.
    notes.sort_by_key(|n| (n.slot, n.line == 0, n.line));
    let comments = |slot: Slot| -> String {
        let mut said: Vec<(&str, usize)> = Vec::new();
        let mut out = String::new();
        for n in notes.iter().filter(|n| n.slot == slot) {
            // The same explanation twice (X-Real-IP in every location) reads as a reference.
            match said.iter().find(|(says, _)| *says == n.says) {
                Some((_, line)) if n.line > 0 => out.push_str(
                    &Note {
                        says: format!("as line {line}"),
                        ..n.clone()
                    }
                    .comment(),
                ),
                _ => {
                    said.push((&n.says, n.line));
                    out.push_str(&n.comment());
                }
            }
        }
        out
    };

    let mut out = format!(
        "# dockgate configuration imported from {source} by `dockgate import-nginx`.\n\
         # Check it with `dockgate check-config --config FILE` before serving it. Above each key\n\
         # are the nginx directives it comes from, by line; the directives dockgate drops, and\n\
         # those it has no equivalent for, are listed at the end.\n\n"
    );
    // Each key with its comments is a paragraph, so the two read as one.
    let mut top = vec![comments(Slot::Listen), comments(Slot::Hostnames)];
    if !values.listen.is_empty() {
        top[0].push_str(&format!("listen = {}\n", list(&values.listen)));
    }
    if !values.hostnames.is_empty() {
        top[1].push_str(&format!("hostnames = {}\n", list(&values.hostnames)));
    }
    out.push_str(&paragraphs(top));

    let mut upstreams = vec![comments(Slot::Routing)];
    for (slot, key, urls) in [
        (Slot::Put, "put", &values.put),
        (Slot::Get, "get", &values.get),
        (Slot::Web, "web", &values.web),
    ] {
        let mut p = comments(slot);
        match urls.as_deref() {
            Some([one]) => p.push_str(&format!("{key} = {}\n", quoted(one))),
            Some(many) if !many.is_empty() => {
                p.push_str(&format!("{key} = {{ servers = {} }}\n", list(many)))
            }
            _ => {}
        }
        upstreams.push(p);
    }
    out.push_str("\n[upstreams]\n");
    out.push_str(&paragraphs(upstreams));

    if !tls.is_empty() || notes.iter().any(|n| n.slot == Slot::Tls) {
        out.push_str("\n[tls]\n");
        out.push_str(&comments(Slot::Tls));
        out.push_str(&tls);
    }
    if !timeouts.is_empty() {
        out.push_str("\n[timeouts]\n");
        out.push_str(&comments(Slot::Timeouts));
        out.push_str(&timeouts);
    }
    if values.forwarded_host || values.upstream_host.is_some() {
        out.push_str("\n[headers]\n");
        out.push_str(&comments(Slot::Headers));
        if values.forwarded_host {
            out.push_str("forwarded_host = false\n");
        }
        if let Some(own) = values.upstream_host {
            out.push_str(&format!("upstream_host = {own}\n"));
        }
    }
    for (slot, title) in [
        (
            Slot::Dropped,
            "Dropped: dockgate does this itself, or it does not apply.",
        ),
        (
            Slot::Unknown,
            "Not carried over: no equivalent in dockgate, or not understood. Check these.",
        ),
    ] {
        let listed = comments(slot);
        if !listed.is_empty() {
            out.push_str(&format!("\n# {title}\n#\n{listed}"));
        }
    }
    out
}

/// The timeout keys and values, in the order the example config gives them; a key set to
/// different values in different places gets a note saying which one is kept.
fn timeouts(found: &BTreeMap<&'static str, Vec<Duration>>, notes: &mut Vec<Note>) -> String {
    let mut out = String::new();
    for key in [
        "connect",
        "response_headers",
        "body_stall",
        "client_headers",
    ] {
        let Some(all) = found.get(key) else { continue };
        let Some(largest) = all.iter().max() else {
            continue;
        };
        let Some(text) = dockgate_duration(*largest) else {
            continue;
        };
        if all.iter().any(|d| d != largest) {
            notes.push(Note::general(
                Slot::Timeouts,
                format!(
                    "timeouts.{key}: this file gives it different values in different places; \
                     dockgate has one for every upstream, and the largest is kept."
                ),
            ));
        }
        out.push_str(&format!("{key} = {}\n", quoted(&text)));
    }
    out
}

/// `cert` and `key` when both files are here; otherwise the two lines commented out, since
/// `check-config` refuses a file that is missing, and dockgate mints its own meanwhile.
fn tls(values: &Values, notes: &mut Vec<Note>, locate: &dyn Fn(&str) -> Option<String>) -> String {
    let (cert, key) = match (&values.cert, &values.key) {
        (Some(c), Some(k)) => (c, k),
        (None, None) => return String::new(),
        _ => {
            notes.push(Note::general(
                Slot::Tls,
                "Only one of ssl_certificate and ssl_certificate_key is set, so dockgate \
                 mints its own CA and server certificate in ./certs.",
            ));
            return String::new();
        }
    };
    if let (Some(c), Some(k)) = (locate(cert), locate(key)) {
        notes.push(Note::general(
            Slot::Tls,
            "Your certificate and key, served as given and never overwritten. Without \
             these two lines dockgate mints its own CA and a server certificate in \
             ./certs, covering hostnames and the listen addresses, with no openssl \
             steps (`dockgate generate-ca` prints how docker hosts trust it).",
        ));
        return format!("cert = {}\nkey = {}\n", quoted(&c), quoted(&k));
    }
    let missing: Vec<&str> = [cert, key]
        .into_iter()
        .filter(|p| locate(p).is_none())
        .map(String::as_str)
        .collect();
    notes.push(Note::general(
        Slot::Tls,
        format!(
            "{} not found on this machine, so both lines are left commented out: \
             check-config refuses a missing file. Where the files exist, uncomment \
             the two lines to serve them as given. As it stands dockgate mints its \
             own CA and a server certificate in ./certs, covering hostnames and the \
             listen addresses, with no openssl steps (`dockgate generate-ca` prints \
             how docker hosts trust it).",
            missing.join(" and ")
        ),
    ));
    format!("# cert = {}\n# key = {}\n", quoted(cert), quoted(key))
}

/// The non-empty paragraphs, a blank line before each that opens with a comment (a bare key
/// stays with the one above).
fn paragraphs(ps: Vec<String>) -> String {
    let mut out = String::new();
    for p in ps.into_iter().filter(|p| !p.is_empty()) {
        if !out.is_empty() && p.starts_with('#') {
            out.push('\n');
        }
        out.push_str(&p);
    }
    out
}

fn list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| quoted(s)).collect();
    format!("[{}]", quoted.join(", "))
}

/// A TOML string, escaped by the toml crate.
fn quoted(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}
