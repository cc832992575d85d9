//! What can go wrong with one request, who is at fault, and the one mapping from that to the
//! status and registry-style JSON body that docker prints legibly.

use std::error::Error as StdError;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};

use crate::body::{Body, BodyError};

/// A request that could not be answered by an upstream.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The upstream refused, reset or did not accept the connection in time.
    #[error("cannot connect to the {upstream} upstream {origin}: {reason}")]
    UpstreamConnect {
        upstream: &'static str,
        origin: String,
        reason: String,
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    /// Connected and sent, but no response headers arrived in time.
    #[error("the {upstream} upstream {origin} sent no response within {}s", .after.as_secs_f64())]
    UpstreamTimeout {
        upstream: &'static str,
        origin: String,
        after: Duration,
    },
    /// The upstream broke the exchange: a reset, a malformed response.
    #[error("the {upstream} upstream {origin} failed: {reason}")]
    UpstreamProtocol {
        upstream: &'static str,
        origin: String,
        reason: String,
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    /// Every server that could answer is marked down by health checks.
    #[error("no healthy server in the {upstream} upstream ({servers}); the last failure: {last}")]
    NoHealthyServer {
        upstream: &'static str,
        servers: String,
        last: String,
    },
    /// The client's body failed: it disconnected or stopped sending.
    #[error("the client's request body failed: {0}")]
    ClientBody(#[source] BodyError),
    /// A manifest PUT larger than dockgate reads to complete it.
    #[error("the manifest is larger than {limit} bytes")]
    ManifestTooLarge { limit: usize },
    /// What a pushed manifest needs could not be copied from get into put.
    #[error("dockgate could not copy {digest} from the get upstream into put: {reason}")]
    Backfill { digest: String, reason: String },
    /// A request refused by policy before any upstream: its method, size, host or rate.
    #[error("{0}")]
    Refused(#[from] crate::policy::Refusal),
    /// A request dockgate will not forward, e.g. a path that escapes its route.
    #[error("bad request: {0}")]
    BadRequest(String),
}

impl GatewayError {
    pub fn status(&self) -> StatusCode {
        match self {
            GatewayError::UpstreamConnect { .. } => StatusCode::BAD_GATEWAY,
            GatewayError::UpstreamTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            GatewayError::UpstreamProtocol { .. } => StatusCode::BAD_GATEWAY,
            GatewayError::NoHealthyServer { .. } => StatusCode::BAD_GATEWAY,
            GatewayError::ClientBody(BodyError::Stalled(_)) => StatusCode::REQUEST_TIMEOUT,
            GatewayError::ClientBody(BodyError::Transport(_)) => StatusCode::BAD_REQUEST,
            // Only copies check digests, and what they copy comes from an upstream.
            GatewayError::ClientBody(BodyError::Digest { .. }) => StatusCode::BAD_GATEWAY,
            GatewayError::ManifestTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            GatewayError::Refused(r) => r.status(),
            GatewayError::Backfill { .. } => StatusCode::BAD_GATEWAY,
            GatewayError::BadRequest(_) => StatusCode::BAD_REQUEST,
        }
    }

    /// The distribution-spec error code; docker shows `code: message`.
    pub fn code(&self) -> &'static str {
        match self {
            GatewayError::UpstreamConnect { .. }
            | GatewayError::UpstreamTimeout { .. }
            | GatewayError::UpstreamProtocol { .. }
            | GatewayError::NoHealthyServer { .. } => "UNAVAILABLE",
            GatewayError::ClientBody(_) => "BLOB_UPLOAD_INVALID",
            GatewayError::ManifestTooLarge { .. } => "MANIFEST_INVALID",
            GatewayError::Refused(r) => r.code(),
            GatewayError::Backfill { .. } => "BLOB_UNKNOWN",
            GatewayError::BadRequest(_) => "NAME_INVALID",
        }
    }

    /// Who should act: shown in the access log so an operator knows where to look.
    pub fn fault(&self) -> Fault {
        match self {
            GatewayError::UpstreamConnect { .. }
            | GatewayError::UpstreamTimeout { .. }
            | GatewayError::UpstreamProtocol { .. }
            | GatewayError::NoHealthyServer { .. }
            | GatewayError::Backfill { .. } => Fault::Upstream,
            GatewayError::ClientBody(_)
            | GatewayError::ManifestTooLarge { .. }
            | GatewayError::Refused(_)
            | GatewayError::BadRequest(_) => Fault::Client,
        }
    }

    pub fn is_upstream(&self) -> bool {
        self.fault() == Fault::Upstream
    }

    /// Nothing reached the upstream: the request may go to another server, whatever it is.
    pub fn is_connect(&self) -> bool {
        matches!(self, GatewayError::UpstreamConnect { .. })
    }

    /// Classifies a failure of the pooled client: a broken client body is the client's fault,
    /// a connect failure and anything else the upstream's.
    pub fn from_client(
        err: hyper_util::client::legacy::Error,
        upstream: &'static str,
        origin: String,
    ) -> GatewayError {
        if let Some(body) = find_body_error(&err) {
            return GatewayError::ClientBody(body);
        }
        let reason = root_cause(&err);
        if err.is_connect() {
            GatewayError::UpstreamConnect {
                upstream,
                origin,
                reason,
                source: err,
            }
        } else {
            GatewayError::UpstreamProtocol {
                upstream,
                origin,
                reason,
                source: err,
            }
        }
    }

    pub fn into_response(self) -> Response<Body> {
        json_error(self.status(), self.code(), &self.to_string())
    }
}

/// Who must act on a failure: a label for logs (and, later, metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Upstream,
    Client,
}

impl Fault {
    pub fn as_str(self) -> &'static str {
        match self {
            Fault::Upstream => "upstream",
            Fault::Client => "client",
        }
    }
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A registry-style error response: `{"errors":[{"code":..,"message":..}]}`.
pub fn json_error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    let mut resp = Response::new(Body::full(json_body(code, message)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    resp
}

/// The body of a registry-style error.
pub fn json_body(code: &str, message: &str) -> Bytes {
    Bytes::from(format!(
        "{{\"errors\":[{{\"code\":{},\"message\":{}}}]}}",
        json_string(code),
        json_string(message)
    ))
}

fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn find_body_error(err: &(dyn StdError + 'static)) -> Option<BodyError> {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(b) = e.downcast_ref::<BodyError>() {
            return Some(b.clone());
        }
        cur = e.source();
    }
    None
}

/// The innermost cause, which is what a user can act on ("Connection refused").
fn root_cause(err: &(dyn StdError + 'static)) -> String {
    let mut cur: &(dyn StdError + 'static) = err;
    while let Some(next) = cur.source() {
        cur = next;
    }
    let text = cur.to_string();
    if text.is_empty() {
        err.to_string()
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn errors_are_registry_json() {
        let err = GatewayError::UpstreamTimeout {
            upstream: "get",
            origin: "http://nexus:8083".into(),
            after: Duration::from_secs(3),
        };
        assert_eq!(err.status(), StatusCode::GATEWAY_TIMEOUT);
        let resp = err.into_response();
        assert_eq!(
            resp.headers()[header::CONTENT_TYPE],
            "application/json; charset=utf-8"
        );
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(
            body,
            "{\"errors\":[{\"code\":\"UNAVAILABLE\",\"message\":\"the get upstream http://nexus:8083 sent no response within 3s\"}]}"
        );
    }

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_string("a\"b\\c\n\u{1}"), "\"a\\\"b\\\\c\\n\\u0001\"");
    }
}
