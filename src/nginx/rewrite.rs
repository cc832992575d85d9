//! nginx's rewrite phase for the directives that choose an upstream: `set $var value` and
//! `if ($request_method|$request_uri op pattern) { set ...; }`, run in order for a request as
//! nginx runs them, and the note that says what each became.

use regex::RegexBuilder;

use super::notes::{Note, Slot};
use super::tokenizer::{Directive, Word};

/// A request as nginx's rewrite directives see it.
pub struct Request<'r> {
    method: &'r str,
    uri: &'r str,
}

// The requests the roles are read from: a push's last step, a pull's first, the HEAD with which
// docker resolves a tag, and `docker search`.
pub const PUSH: Request<'static> = Request {
    method: "PUT",
    uri: "/v2/team/app/manifests/1.0",
};
pub const PULL: Request<'static> = Request {
    method: "GET",
    uri: "/v2/library/alpine/manifests/3.19",
};
const RESOLVE: Request<'static> = Request {
    method: "HEAD",
    uri: "/v2/library/alpine/manifests/3.19",
};
const SEARCH: Request<'static> = Request {
    method: "GET",
    uri: "/v1/search?q=alpine",
};

/// The value `$var` ends with for `req`, running `set` and `if` in order as nginx's rewrite
/// phase does. An `if` on a variable this cannot know is taken as not matching.
pub fn run(rewrites: &[&Directive], var: &str, req: &Request<'_>) -> Option<String> {
    let mut value = None;
    for d in rewrites {
        match d.name.as_str() {
            "set" => {
                if let Some(v) = assigns(d, var) {
                    value = Some(v);
                }
            }
            "if" if condition(&d.args).and_then(|c| c.matches(req)) == Some(true) => {
                for inner in d.block.iter().flatten() {
                    if let Some(v) = assigns(inner, var) {
                        value = Some(v);
                    }
                }
            }
            _ => {}
        }
    }
    value
}

/// `set $var value;` → `value`.
fn assigns(d: &Directive, var: &str) -> Option<String> {
    match d.args.as_slice() {
        [name, value] if d.name == "set" && name.text.strip_prefix('$') == Some(var) => {
            Some(value.text.clone())
        }
        _ => None,
    }
}

/// What a `set` or `if` of the routing through `$var` became, given the upstreams a push
/// (`put`) and a pull (`get`) end at.
pub fn note(
    d: &Directive,
    var: &str,
    put: Option<&str>,
    get: Option<&str>,
    rewrites: &[&Directive],
) -> Note {
    if d.name == "set" && assigns(d, var).is_some() {
        return Note::new(
            Slot::Routing,
            d,
            format!(
                "the starting value of ${var}: replaced by the routing table, which picks \
                 put or get per request"
            ),
        );
    }
    let Some(cond) = (d.name == "if").then(|| condition(&d.args)).flatten() else {
        return Note::new(
            Slot::Unknown,
            d,
            "not imported: only set and if on $request_method or $request_uri are read",
        );
    };
    let only_sets = d.block.iter().flatten().all(|i| assigns(i, var).is_some());
    if !only_sets {
        return Note::new(
            Slot::Unknown,
            d,
            "an if that does more than choose the upstream: not imported",
        );
    }
    match cond.var.as_str() {
        "$request_method" => {
            let mut says = "method routing: replaced by the routing table, which sends every read \
                            (GET and HEAD of manifests, tags and blobs) to get and every write, \
                            upload and a push's HEAD of a blob to put"
                .to_string();
            if put != get && run(rewrites, var, &RESOLVE).as_deref() == put {
                says.push_str(
                    ". Here HEAD went to put, and docker resolves tags with HEAD: tags only \
                     the group had were \"not found\"",
                );
            }
            Note::new(Slot::Routing, d, says)
        }
        "$request_uri" | "$uri" | "$document_uri"
            if cond.matches(&SEARCH) == Some(true)
                && run(rewrites, var, &SEARCH).as_deref() == put =>
        {
            Note::new(
                Slot::Routing,
                d,
                "search to put: replaced by the routing table, which sends /v1/search to \
                 put by path segment (this substring match also caught repositories named \
                 like search-api)",
            )
        }
        other => Note::new(
            Slot::Unknown,
            d,
            format!(
                "routing on {other}: not imported; a [[rules]] entry can route by method \
                 and path"
            ),
        ),
    }
}

/// `if ($var op pattern)`.
#[derive(Debug, PartialEq, Eq)]
struct Condition {
    var: String,
    op: String,
    pattern: String,
}

/// The condition of an `if`, with nginx's parentheses taken off (`(` may be its own word or
/// glued to the variable, `)` likewise).
fn condition(args: &[Word]) -> Option<Condition> {
    let mut words: Vec<String> = args.iter().map(|w| w.text.clone()).collect();
    let first = words.first_mut()?;
    *first = first.strip_prefix('(')?.to_string();
    let last = words.last_mut()?;
    *last = last.strip_suffix(')')?.to_string();
    words.retain(|w| !w.is_empty());
    match words.as_slice() {
        [var, op, pattern] if var.starts_with('$') => Some(Condition {
            var: var.clone(),
            op: op.clone(),
            pattern: pattern.clone(),
        }),
        _ => None,
    }
}

impl Condition {
    /// Whether `req` satisfies it; `None` when it reads a variable other than the method or the
    /// URI, or its regular expression is not one the `regex` crate reads as PCRE would.
    fn matches(&self, req: &Request<'_>) -> Option<bool> {
        let value = match self.var.as_str() {
            "$request_method" => req.method,
            "$request_uri" => req.uri,
            "$uri" | "$document_uri" => req.uri.split('?').next().unwrap_or(req.uri),
            _ => return None,
        };
        let (negate, op) = match self.op.strip_prefix('!') {
            Some(op) => (true, op),
            None => (false, self.op.as_str()),
        };
        let hit = match op {
            "=" => value == self.pattern,
            "~" | "~*" => RegexBuilder::new(&self.pattern)
                .case_insensitive(op == "~*")
                .build()
                .ok()?
                .is_match(value),
            _ => return None,
        };
        Some(hit != negate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nginx::tokenizer::parse;

    /// (the `if`, method, uri, matches) — conditions evaluated as nginx would.
    #[test]
    fn conditions() {
        let rows: &[(&str, &str, &str, Option<bool>)] = &[
            (
                "if ( $request_method ~* 'GET') {}",
                "GET",
                "/v2/",
                Some(true),
            ),
            (
                "if ( $request_method ~* 'GET') {}",
                "HEAD",
                "/v2/",
                Some(false),
            ),
            (
                "if ($request_method ~ ^(GET|HEAD)$) {}",
                "HEAD",
                "/v2/",
                Some(true),
            ),
            ("if ($request_method = GET) {}", "get", "/v2/", Some(false)),
            ("if ($request_method !~* GET) {}", "PUT", "/v2/", Some(true)),
            ("if ($request_method != PUT) {}", "PUT", "/v2/", Some(false)),
            (
                "if ($request_uri ~ '/search') {}",
                "GET",
                "/v1/search?q=a",
                Some(true),
            ),
            (
                "if ($request_uri ~ '/search') {}",
                "GET",
                "/v2/search-api/manifests/1",
                Some(true),
            ),
            (
                "if ($uri ~ ^/v1/search$) {}",
                "GET",
                "/v1/search?q=a",
                Some(true),
            ),
            ("if ($http_user_agent ~ docker) {}", "GET", "/v2/", None),
            ("if ($request_method ~ '(') {}", "GET", "/v2/", None),
            ("if ($request_method) {}", "GET", "/v2/", None),
        ];
        for (text, method, uri, want) in rows {
            let d = parse(text).expect("parses");
            let req = Request { method, uri };
            let got = condition(&d[0].args).and_then(|c| c.matches(&req));
            assert_eq!(got, *want, "{text} for {method} {uri}");
        }
    }

    #[test]
    fn the_seed_s_method_routing_runs_like_nginx() {
        let text = "set $upstream \"put_up\";\n\
                                            if ( $request_method ~* 'GET') { set $upstream \"get_up\"; }\n\
                                            if ($request_uri ~ '/search') { set $upstream \"put_up\"; }\n";
        let ds = parse(text).expect("parses");
        let rewrites: Vec<&Directive> = ds.iter().collect();
        let rows: &[(&Request<'static>, &str)] = &[
            (&PUSH, "put_up"),
            (&PULL, "get_up"),
            (&RESOLVE, "put_up"),
            (&SEARCH, "put_up"),
        ];
        for (req, want) in rows {
            let got = run(&rewrites, "upstream", req);
            assert_eq!(got.as_deref(), Some(*want), "{} {}", req.method, req.uri);
        }
    }
}
