//! Is put the repository pushes can land in (an upload start answers 202, or 401 before
//! credentials), and would sending `X-Forwarded-Host` make it double the port (Nexus)?
//! Every upload these checks open is cancelled.

use http::{header, Method, StatusCode};

use super::probe::{self, Answer, Probe};
use super::realm;
use super::{Report, Verdict};
use crate::config::{HeaderOptions, UpstreamUrl};

/// An upload start in a repository no one uses; the upload is cancelled at once.
const PROBE_UPLOAD: &str = "/v2/dockgate-doctor/probe/blobs/uploads/";
/// The public `host:port` the forwarded-host probe claims, and what a doubled port looks like.
const PUBLIC: &str = "doctor.example:8443";
const DOUBLED: &str = "doctor.example:8443:8443";

/// `POST` an upload start; true when put took it or asked for credentials (the forwarded-host
/// check is worth running then).
pub async fn writable(
    probe: &Probe,
    report: &mut Report,
    subject: &str,
    url: &UpstreamUrl,
) -> bool {
    let seen = format!("POST {PROBE_UPLOAD}");
    let answer = match probe.send(Method::POST, url, PROBE_UPLOAD, &[]).await {
        Ok(a) => a,
        Err(e) => {
            report.add(Verdict::fail(
                subject,
                "writable",
                format!("{seen}: {e}"),
                "the server answered GET /v2/ but not this; check a proxy in between",
            ));
            return false;
        }
    };
    let status = answer.status;
    let verdict = match status {
        StatusCode::ACCEPTED => {
            let cancelled = cancel(probe, url, &answer).await;
            Verdict::ok(subject, "writable", format!("{seen} answered 202 Accepted; {cancelled}"))
        }
        StatusCode::UNAUTHORIZED => Verdict::ok(
            subject,
            "writable",
            format!("{seen} answered 401: pushes need a login, as on a hosted repository"),
        ),
        s if s.is_server_error() => Verdict::fail(
            subject,
            "writable",
            format!("{seen} answered {s}"),
            "put fails uploads: read the registry's log (Nexus: nexus.log; is the blob store full?)",
        ),
        s => Verdict::fail(
            subject,
            "writable",
            format!("{seen} answered {s}{}", error_code(&answer)),
            "put looks like a proxy or group repository; point put at the hosted repository \
             (Nexus: the docker (hosted) repository's HTTP connector port, with Deployment \
             policy allowing writes)",
        ),
    };
    report.add(verdict);
    matches!(status, StatusCode::ACCEPTED | StatusCode::UNAUTHORIZED)
}

/// Starts an upload as nginx's `proxy_set_header X-Forwarded-Host $http_host` would forward it
/// (the host with its port) and looks for the port twice in the URLs put answers with: Nexus
/// appends `X-Forwarded-Port` to a host that has one, and `docker login` then fails.
pub async fn forwarded_host(
    probe: &Probe,
    report: &mut Report,
    subject: &str,
    url: &UpstreamUrl,
    options: &HeaderOptions,
) {
    let headers = [
        ("host", PUBLIC),
        ("x-forwarded-host", PUBLIC),
        ("x-forwarded-port", "8443"),
        ("x-forwarded-proto", "https"),
    ];
    let answer = match probe.send(Method::POST, url, PROBE_UPLOAD, &headers).await {
        Ok(a) => a,
        Err(e) => {
            report.add(Verdict::warn(
                subject,
                "forwarded_host",
                format!("POST {PROBE_UPLOAD} with X-Forwarded-Host: {e}"),
                "keep headers.forwarded_host off (the default) unless this can be checked",
            ));
            return;
        }
    };
    let mut urls: Vec<String> = answer
        .header(header::LOCATION)
        .map(str::to_string)
        .into_iter()
        .collect();
    for challenge in answer.headers.get_all(header::WWW_AUTHENTICATE) {
        if let Some(r) = challenge.to_str().ok().and_then(realm::param) {
            urls.push(r.to_string());
        }
    }
    let cancelled = match answer.status {
        StatusCode::ACCEPTED => format!("; {}", cancel(probe, url, &answer).await),
        _ => String::new(),
    };
    let on = options.forwarded_host;
    // The query (an upload's `_state`) is long and says nothing here.
    let shown = urls
        .iter()
        .find(|u| u.contains(PUBLIC))
        .map(|u| u.split_once('?').map_or(u.as_str(), |(before, _)| before));
    let verdict = match shown {
        Some(u) if u.contains(DOUBLED) && on => Verdict::warn(
            subject,
            "forwarded_host",
            format!("with X-Forwarded-Host: {PUBLIC} put answered with {u}: the port doubles{cancelled}"),
            "set headers.forwarded_host = false: with it on, docker login fails on that URL",
        ),
        Some(u) if u.contains(DOUBLED) => Verdict::ok(
            subject,
            "forwarded_host",
            format!(
                "with X-Forwarded-Host: {PUBLIC} put answered with {u}: the port doubles, the \
                 reason headers.forwarded_host is off; keep it off{cancelled}"
            ),
        ),
        Some(u) => Verdict::ok(
            subject,
            "forwarded_host",
            format!(
                "with X-Forwarded-Host: {PUBLIC} put answered with {u}: no doubled port, so \
                 headers.forwarded_host {}{cancelled}",
                if on { "= true is safe" } else { "may be turned on" }
            ),
        ),
        None => Verdict::ok(
            subject,
            "forwarded_host",
            format!(
                "put answered {} without a URL naming {PUBLIC}: X-Forwarded-Host makes no \
                 difference that doctor can see; headers.forwarded_host is {}{cancelled}",
                answer.status,
                if on { "on" } else { "off" }
            ),
        ),
    };
    report.add(verdict);
}

/// `DELETE`s the upload an answer's `Location` names, on this server whatever host it names
/// (the forwarded-host probe claims another one).
async fn cancel(probe: &Probe, url: &UpstreamUrl, answer: &Answer) -> String {
    let Some(location) = answer.header(header::LOCATION) else {
        return "no Location to cancel the upload with".into();
    };
    let path = if location.starts_with('/') {
        Some(location.to_string())
    } else {
        location
            .parse::<http::Uri>()
            .ok()
            .and_then(|u| u.path_and_query().map(|pq| pq.to_string()))
    };
    let Some(path) = path else {
        return format!("cannot cancel the upload: Location {location:?} is not a URL");
    };
    let result = match probe::on_server(url, &path) {
        Ok(uri) => probe.send_uri(Method::DELETE, uri, &[]).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(a) if a.status.is_success() => "the probe upload was cancelled".into(),
        Ok(a) => format!(
            "cancelling the probe upload answered {} (the registry expires it)",
            a.status
        ),
        Err(e) => format!("cancelling the probe upload failed: {e} (the registry expires it)"),
    }
}

/// ` (UNSUPPORTED: ...)` from a registry's JSON error body, when there is one.
fn error_code(answer: &Answer) -> String {
    let json: Option<serde_json::Value> = serde_json::from_slice(&answer.body).ok();
    let first = json.as_ref().and_then(|j| j["errors"].get(0));
    match first {
        Some(e) => format!(
            " ({}: {})",
            e["code"].as_str().unwrap_or("?"),
            e["message"].as_str().unwrap_or("")
        ),
        None => String::new(),
    }
}
