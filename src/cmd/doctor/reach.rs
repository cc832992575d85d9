//! Does a server answer as a registry (`GET /v2/`: 200 or 401), and how does it ask for
//! credentials (the `WWW-Authenticate` challenge docker follows on `docker login`).

use http::{header, Method, StatusCode};

use super::probe::{Answer, Probe, Unreachable};
use super::realm::{self, Realm};
use super::{Report, Verdict};
use crate::config::{Target, UpstreamUrl};

/// Where a Nexus repository's port is set, for every hint that names it.
const CONNECTOR: &str = "the repository's HTTP connector port (Nexus: Repository > \
     Repositories > the repository > Repository Connectors > HTTP)";

/// `/v2/` and its challenge; true when the server answered as a registry.
pub async fn registry(
    probe: &Probe,
    report: &mut Report,
    subject: &str,
    url: &UpstreamUrl,
    origins: &[&UpstreamUrl],
) -> bool {
    match v2(probe, report, subject, url).await {
        Some(answer) => {
            auth(report, subject, &answer, origins);
            true
        }
        None => false,
    }
}

/// `GET /v2/`; the answer when it is a registry's, for the checks that read it further.
async fn v2(
    probe: &Probe,
    report: &mut Report,
    subject: &str,
    url: &UpstreamUrl,
) -> Option<Answer> {
    let answer = match probe.send(Method::GET, url, "/v2/", &[]).await {
        Ok(a) => a,
        Err(e) => {
            report.add(unreachable(subject, url, &e));
            return None;
        }
    };
    let status = answer.status;
    let api = answer.header("docker-distribution-api-version");
    if matches!(status, StatusCode::OK | StatusCode::UNAUTHORIZED) && !answer.is_html() {
        let api = api.map(|v| format!(" ({v})")).unwrap_or_default();
        report.add(Verdict::ok(
            subject,
            "v2",
            format!("GET /v2/ answered {status}{api}"),
        ));
        return Some(answer);
    }
    let seen = format!("GET /v2/ answered {status}");
    let verdict = if answer.is_html() {
        Verdict::fail(
            subject,
            "v2",
            format!("{seen} with an HTML page, not a registry's answer"),
            format!(
                "is this the repository's connector port or Nexus's UI port 8081? Use {CONNECTOR}, \
                 or the repository's path on the UI port (http://nexus:8081/repository/NAME)"
            ),
        )
    } else if status == StatusCode::BAD_REQUEST
        && String::from_utf8_lossy(&answer.body).contains("HTTPS")
    {
        Verdict::fail(
            subject,
            "v2",
            format!("{seen}: the port speaks TLS"),
            format!("write https://{} instead of http://", url.authority),
        )
    } else if status.is_server_error() {
        Verdict::fail(
            subject,
            "v2",
            format!("{seen}: the server is there but failing"),
            "read the registry's log (Nexus: nexus.log; a blob store that is full or unavailable \
             fails every repository on it); a 502/503/504 may come from a proxy in between",
        )
    } else {
        Verdict::fail(
            subject,
            "v2",
            format!("{seen}: no registry API here"),
            format!(
                "point this upstream at {CONNECTOR}, with the base path if the registry has one"
            ),
        )
    };
    report.add(verdict);
    None
}

/// The verdict for a server that gave no HTTP answer at all.
fn unreachable(subject: &str, url: &UpstreamUrl, e: &Unreachable) -> Verdict {
    let seen = format!("GET /v2/: {e}");
    let fix = match e {
        Unreachable::Refused => format!(
            "nothing listens on {}: is this {CONNECTOR}? The connector must be enabled on the \
             repository and the port published by its container or firewall",
            url.authority
        ),
        Unreachable::Timeout(_) => format!(
            "a firewall drops the connection, or {} is the wrong host; check {CONNECTOR}",
            url.authority
        ),
        Unreachable::Resolve(_) => format!(
            "fix the host name in this URL, or make {} resolvable from this host (DNS, /etc/hosts)",
            url.authority.host()
        ),
        Unreachable::Tls(_) => "if the port speaks plain HTTP, write http://; otherwise set \
             upstreams.ca to the CA bundle that signed the upstream's certificate"
            .to_string(),
        Unreachable::Other(_) => format!("check that {CONNECTOR} is reachable from this host"),
    };
    Verdict::fail(subject, "v2", seen, fix)
}

/// The challenge in the `/v2/` answer: none (anonymous), Basic, or Bearer with a realm that
/// clients must be able to reach through dockgate.
fn auth(report: &mut Report, subject: &str, v2: &Answer, origins: &[&UpstreamUrl]) {
    if v2.status == StatusCode::OK {
        report.add(Verdict::ok(
            subject,
            "auth",
            "no login asked (anonymous access)".into(),
        ));
        return;
    }
    let Some(challenge) = v2.header(header::WWW_AUTHENTICATE) else {
        let fix = if v2.is_nexus() {
            "activate Nexus's \"Docker Bearer Token Realm\" (Security > Realms: move it to Active)"
        } else {
            "the registry must answer 401 with WWW-Authenticate: Basic or Bearer; see its auth settings"
        };
        report.add(Verdict::fail(
            subject,
            "auth",
            "401 without a WWW-Authenticate challenge: docker cannot log in".into(),
            fix,
        ));
        return;
    };
    let scheme = challenge
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    let verdict = match scheme.as_str() {
        "basic" if v2.is_nexus() => Verdict::warn(
            subject,
            "auth",
            format!("Nexus asks for Basic ({challenge})"),
            "Nexus's \"Docker Bearer Token Realm\" is not active: activate it (Security > Realms) \
             so that docker login, anonymous pulls and token clients work",
        ),
        "basic" => Verdict::ok(subject, "auth", format!("Basic ({challenge})")),
        "bearer" => match realm::param(challenge) {
            Some(url) => bearer(subject, url, origins),
            None => Verdict::fail(
                subject,
                "auth",
                format!("Bearer without a realm ({challenge})"),
                "the registry's token auth needs a realm URL (Distribution: auth.token.realm)",
            ),
        },
        _ => Verdict::warn(
            subject,
            "auth",
            format!("an unknown challenge ({challenge})"),
            "docker understands Basic and Bearer only",
        ),
    };
    report.add(verdict);
}

fn bearer(subject: &str, url: &str, origins: &[&UpstreamUrl]) -> Verdict {
    let seen = format!("Bearer realm \"{url}\"");
    let other = |where_: &str| {
        format!(
            "dockgate rewrites realms on upstream origins only, so clients are sent to {where_} as \
             is: serve the token endpoint on the registry's own origin, or make it reachable \
             (and trusted) from every docker host"
        )
    };
    match realm::judge(url, origins) {
        Realm::Relative => Verdict::ok(subject, "auth", format!("{seen}: on the same origin")),
        Realm::Upstream(origin) => Verdict::ok(
            subject,
            "auth",
            format!("{seen}: on upstream {origin}, rewritten to dockgate's public origin"),
        ),
        Realm::Public(authority) => Verdict::ok(
            subject,
            "auth",
            format!("{seen}: clients fetch tokens from {authority} directly"),
        ),
        Realm::Internal(authority, why) => Verdict::warn(
            subject,
            "auth",
            format!("{seen}: {authority} is {why} and not an upstream's origin"),
            other(&authority),
        ),
        Realm::Loopback(authority) => Verdict::fail(
            subject,
            "auth",
            format!("{seen}: {authority} is a loopback address, which no other host can reach, and not an upstream's origin"),
            other(&authority),
        ),
        Realm::Invalid => Verdict::fail(
            subject,
            "auth",
            format!("{seen}: not an http(s) URL"),
            "fix the token realm in the registry's auth settings",
        ),
    }
}

/// An upstream that is not a registry (web: the Nexus UI and REST API; token: a token
/// service) only has to answer.
pub async fn answers(
    probe: &Probe,
    report: &mut Report,
    subject: &str,
    target: Target,
    url: &UpstreamUrl,
) {
    let port = match target {
        Target::Web => "Nexus's UI port (8081 by default)",
        Target::Token => "the token service's port",
        Target::Put | Target::Get => CONNECTOR,
    };
    let verdict = match probe.send(Method::GET, url, "/", &[]).await {
        Ok(a) if !a.status.is_server_error() => {
            Verdict::ok(subject, "answers", format!("GET / answered {}", a.status))
        }
        Ok(a) => Verdict::fail(
            subject,
            "answers",
            format!("GET / answered {}", a.status),
            "read the server's log (Nexus: nexus.log)",
        ),
        Err(e) => Verdict::fail(
            subject,
            "answers",
            format!("GET /: {e}"),
            format!("point {} at {port}", target.as_str()),
        ),
    };
    report.add(verdict);
}
