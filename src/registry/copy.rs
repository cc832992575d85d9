//! Copying a blob or a manifest from the get upstream into put: a streamed `GET` from get, then
//! an upload session on put and one `PUT ?digest=` carrying that stream, its sha256 checked on
//! the way. Copies of one digest into one repository that overlap in time run once; at most
//! `max_concurrent` run at all.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, StatusCode};
use http_body_util::{BodyExt, Limited};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::body::{Body, BodyError};
use crate::config::Target;
use crate::error::GatewayError;
use crate::route::Reason;
use crate::upstream::{Outgoing, Reply, ReplyBody, Upstreams};

use super::manifest::{Algorithm, Descriptor, Digest, MAX_MANIFEST_BYTES};

/// Why a copy did not happen.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// The get side does not have it under any of the names asked.
    #[error("the get upstream does not have {0}")]
    NotFound(String),
    /// An upstream refused the credentials: the client's request goes on unchanged, so the
    /// client sees the registry's own answer.
    #[error("the {upstream} upstream refused the credentials ({status})")]
    Refused {
        upstream: &'static str,
        status: StatusCode,
    },
    #[error("{0}")]
    Upstream(#[from] GatewayError),
    #[error("the {upstream} upstream answered {status} to {what}")]
    Status {
        upstream: &'static str,
        status: StatusCode,
        what: String,
    },
    #[error("{0}")]
    Stream(#[source] BodyError),
    #[error("{0} is not a sha256 digest; dockgate copies only what it can check")]
    Algorithm(String),
}

/// The headers every copy request carries: the client's `Authorization` (or configured
/// credentials), and the same `Host` and `X-Forwarded-*` as the client's own requests, so put
/// builds its upload `Location` as it does for the client.
#[derive(Clone)]
pub struct Credentials {
    pub headers: HeaderMap,
}

/// What one copy moved.
#[derive(Debug, Clone, Copy, Default)]
pub struct Copied {
    pub bytes: u64,
    /// False when another copy of the same digest (or the client) got there first.
    pub copied: bool,
}

pub struct Copier {
    upstreams: Arc<Upstreams>,
    permits: Semaphore,
    inflight: Mutex<HashMap<(String, String), Arc<tokio::sync::Mutex<()>>>>,
    stall: Duration,
}

impl Copier {
    pub fn new(upstreams: Arc<Upstreams>, max_concurrent: usize, stall: Duration) -> Copier {
        Copier {
            upstreams,
            permits: Semaphore::new(max_concurrent),
            inflight: Mutex::new(HashMap::new()),
            stall,
        }
    }

    pub fn upstreams(&self) -> &Upstreams {
        &self.upstreams
    }

    /// Copies blob `digest` into put under `repo`, reading it from get under each of
    /// `sources` in turn. `session` is an upload already open on put (a refused mount's), as
    /// a path and query; without one a session is opened.
    pub async fn blob(
        &self,
        creds: &Credentials,
        repo: &str,
        sources: &[&str],
        digest: &Digest,
        session: Option<(String, Option<String>)>,
    ) -> Result<Copied, CopyError> {
        let expected = sha256_bytes(digest)?;
        let key = (repo.to_string(), digest.as_str().to_string());
        let flight = {
            let mut map = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
            map.entry(key.clone()).or_default().clone()
        };
        let waited = flight.try_lock().is_err();
        let guard = flight.lock().await;
        let result = async {
            if waited {
                // Another copy of the same digest into the same repository just ended.
                if self.put_has(creds, repo, "blobs", digest).await? {
                    if let Some(s) = &session {
                        self.cancel(creds, s).await;
                    }
                    return Ok(Copied::default());
                }
            }
            // The semaphore is never closed, so this always holds a permit.
            let _permit = self.permits.acquire().await.ok();
            self.copy_blob(creds, repo, sources, digest, expected, session)
                .await
        }
        .await;
        drop(guard);
        let mut map = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
        // The map's reference and ours: nobody else waits, so the entry can go.
        if Arc::strong_count(&flight) == 2 {
            map.remove(&key);
        }
        result
    }

    async fn copy_blob(
        &self,
        creds: &Credentials,
        repo: &str,
        sources: &[&str],
        digest: &Digest,
        expected: [u8; 32],
        session: Option<(String, Option<String>)>,
    ) -> Result<Copied, CopyError> {
        let start = Instant::now();
        let mut found = None;
        for source in sources {
            let path = format!("/v2/{source}/blobs/{digest}");
            let reply = self
                .send(Target::Get, Method::GET, creds, path, None)
                .await?;
            match reply.response.status() {
                StatusCode::OK => {
                    found = Some((reply, *source));
                    break;
                }
                StatusCode::NOT_FOUND => continue,
                s => return Err(refused_or(Target::Get, s, format!("GET of {digest}"))),
            }
        }
        let Some((reply, source)) = found else {
            // The caller decides what happens to an open session: a refused mount hands it
            // to the client, who then uploads.
            return Err(CopyError::NotFound(digest.to_string()));
        };
        let (path, query) = match session {
            Some(s) => s,
            None => self.open_session(creds, repo).await?,
        };
        let length = reply
            .response
            .headers()
            .get(header::CONTENT_LENGTH)
            .cloned();
        let ReplyBody::Streamed(incoming) = reply.response.into_body() else {
            // A group reads only its 404s and errors whole; a 200 is always streamed.
            return Err(CopyError::Status {
                upstream: "get",
                status: StatusCode::OK,
                what: format!("GET of {digest} (no body)"),
            });
        };
        let counted = Arc::new(AtomicU64::new(0));
        let body = Body::verified(incoming, self.stall, counted.clone(), expected);
        let query = Some(match query {
            Some(q) => format!("{q}&digest={digest}"),
            None => format!("digest={digest}"),
        });
        let mut headers = creds.headers.clone();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        // With a length the upload is one sized PUT, which every registry takes; without one
        // (a chunked GET) it goes chunked.
        if let Some(len) = length {
            headers.insert(header::CONTENT_LENGTH, len);
        }
        let out = Outgoing {
            method: Method::PUT,
            headers,
            path: path.clone(),
            query: query.clone(),
            body,
            body_done: None,
            reason: Reason::Write,
        };
        let up = self.upstreams.pick(Target::Put);
        let result = self.upstreams.send(up, out).await;
        let bytes = counted.load(Ordering::Relaxed);
        let outcome = match result {
            Ok(r) if r.response.status() == StatusCode::CREATED => Ok(()),
            Ok(r) => Err(refused_or(
                Target::Put,
                r.response.status(),
                format!("the upload of {digest}"),
            )),
            Err(GatewayError::ClientBody(e)) => Err(CopyError::Stream(e)),
            Err(e) => Err(CopyError::Upstream(e)),
        };
        if outcome.is_err() {
            // Leave no half-written upload behind (the registry drops it on DELETE).
            let q = query.map(|q| strip_digest(&q));
            self.cancel(creds, &(path, q)).await;
        }
        log_copy(digest, source, repo, bytes, start, outcome.as_ref().err());
        outcome.map(|()| Copied {
            bytes,
            copied: true,
        })
    }

    /// Copies a child manifest of an index: read whole from get (it is small), checked,
    /// and `PUT` by digest on put. The caller completes its blobs first.
    pub async fn fetch_manifest(
        &self,
        creds: &Credentials,
        repo: &str,
        desc: &Descriptor,
    ) -> Result<(Bytes, Option<HeaderValue>), CopyError> {
        let expected = sha256_bytes(&desc.digest)?;
        let mut headers = creds.headers.clone();
        if let Ok(v) = HeaderValue::from_str(&desc.media_type) {
            headers.insert(header::ACCEPT, v);
        }
        let path = format!("/v2/{repo}/manifests/{}", desc.digest);
        let reply = self
            .send_with(Target::Get, Method::GET, headers, path, None, Body::empty())
            .await?;
        match reply.response.status() {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => return Err(CopyError::NotFound(desc.digest.to_string())),
            s => {
                return Err(refused_or(
                    Target::Get,
                    s,
                    format!("GET of manifest {}", desc.digest),
                ))
            }
        }
        let content_type = reply.response.headers().get(header::CONTENT_TYPE).cloned();
        let bytes = read_small(reply, MAX_MANIFEST_BYTES).await?;
        let got: [u8; 32] = sha2_digest(&bytes);
        if got != expected {
            return Err(CopyError::Stream(BodyError::Digest {
                got: got.iter().map(|b| format!("{b:02x}")).collect(),
            }));
        }
        Ok((bytes, content_type))
    }

    /// `PUT /v2/<repo>/manifests/<digest>` on put with exactly `bytes`.
    pub async fn put_manifest(
        &self,
        creds: &Credentials,
        repo: &str,
        digest: &Digest,
        bytes: Bytes,
        content_type: HeaderValue,
    ) -> Result<(), CopyError> {
        let mut headers = creds.headers.clone();
        headers.insert(header::CONTENT_TYPE, content_type);
        headers.insert(header::CONTENT_LENGTH, bytes.len().into());
        let path = format!("/v2/{repo}/manifests/{digest}");
        let reply = self
            .send_with(
                Target::Put,
                Method::PUT,
                headers,
                path,
                None,
                Body::full(bytes),
            )
            .await?;
        match reply.response.status() {
            StatusCode::CREATED => Ok(()),
            s => Err(refused_or(
                Target::Put,
                s,
                format!("the PUT of manifest {digest}"),
            )),
        }
    }

    /// Whether put has `/v2/<repo>/<kind>/<digest>` (`kind`: `blobs` or `manifests`).
    pub async fn put_has(
        &self,
        creds: &Credentials,
        repo: &str,
        kind: &str,
        digest: &Digest,
    ) -> Result<bool, CopyError> {
        let path = format!("/v2/{repo}/{kind}/{digest}");
        let reply = self
            .send(Target::Put, Method::HEAD, creds, path, None)
            .await?;
        match reply.response.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            s => Err(refused_or(Target::Put, s, format!("HEAD of {digest}"))),
        }
    }

    /// `POST /v2/<repo>/blobs/uploads/` on put: the new session's path and query.
    pub async fn open_session(
        &self,
        creds: &Credentials,
        repo: &str,
    ) -> Result<(String, Option<String>), CopyError> {
        let path = format!("/v2/{repo}/blobs/uploads/");
        let reply = self
            .send(Target::Put, Method::POST, creds, path, None)
            .await?;
        let status = reply.response.status();
        if status != StatusCode::ACCEPTED {
            return Err(refused_or(Target::Put, status, "opening an upload".into()));
        }
        session_of(&reply).ok_or(CopyError::Status {
            upstream: "put",
            status,
            what: "opening an upload (no Location)".into(),
        })
    }

    /// `DELETE` an upload session, best effort: the registry expires it anyway.
    pub async fn cancel(&self, creds: &Credentials, session: &(String, Option<String>)) {
        let (path, query) = session.clone();
        if let Ok(r) = self
            .send(Target::Put, Method::DELETE, creds, path, query)
            .await
        {
            drop(read_small(r, 64 * 1024).await);
        }
    }

    pub async fn send(
        &self,
        target: Target,
        method: Method,
        creds: &Credentials,
        path: String,
        query: Option<String>,
    ) -> Result<Reply<'_>, CopyError> {
        self.send_with(
            target,
            method,
            creds.headers.clone(),
            path,
            query,
            Body::empty(),
        )
        .await
    }

    async fn send_with(
        &self,
        target: Target,
        method: Method,
        headers: HeaderMap,
        path: String,
        query: Option<String>,
        body: Body,
    ) -> Result<Reply<'_>, CopyError> {
        let reason = if method == Method::GET || method == Method::HEAD {
            Reason::Read
        } else {
            Reason::Write
        };
        let out = Outgoing {
            method,
            headers,
            path,
            query,
            body,
            body_done: None,
            reason,
        };
        let up = self.upstreams.pick(target);
        Ok(self.upstreams.send(up, out).await?)
    }
}

/// The upload session a 202 names: its `Location` as path and query, with the answering
/// server's origin and base path taken off (the pin to that server stays in the query).
pub fn session_of(reply: &Reply<'_>) -> Option<(String, Option<String>)> {
    let loc = reply
        .response
        .headers()
        .get(header::LOCATION)?
        .to_str()
        .ok()?;
    let path_and_query = match loc.split_once("://") {
        Some((_, after)) => &after[after.find('/')?..],
        None => loc,
    };
    let base = reply.server.map_or("", |s| s.url.base_path.as_str());
    let path_and_query = path_and_query
        .strip_prefix(base)
        .filter(|p| p.starts_with('/'))
        .unwrap_or(path_and_query);
    Some(match path_and_query.split_once('?') {
        Some((p, q)) => (p.to_string(), Some(q.to_string())),
        None => (path_and_query.to_string(), None),
    })
}

/// Reads a small reply whole (a manifest, an error).
pub async fn read_small(reply: Reply<'_>, limit: usize) -> Result<Bytes, CopyError> {
    match reply.response.into_body() {
        ReplyBody::Full(b) => Ok(b),
        ReplyBody::Streamed(incoming) => Limited::new(incoming, limit)
            .collect()
            .await
            .map(|c| c.to_bytes())
            .map_err(|e| CopyError::Status {
                upstream: "get",
                status: StatusCode::OK,
                what: format!("reading a body of at most {limit} bytes: {e}"),
            }),
    }
}

fn refused_or(target: Target, status: StatusCode, what: String) -> CopyError {
    if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        CopyError::Refused {
            upstream: target.as_str(),
            status,
        }
    } else {
        CopyError::Status {
            upstream: target.as_str(),
            status,
            what,
        }
    }
}

fn strip_digest(query: &str) -> String {
    query
        .split('&')
        .filter(|p| !p.starts_with("digest="))
        .collect::<Vec<_>>()
        .join("&")
}

fn sha256_bytes(digest: &Digest) -> Result<[u8; 32], CopyError> {
    if digest.algorithm() != Algorithm::Sha256 {
        return Err(CopyError::Algorithm(digest.to_string()));
    }
    let hex = digest.hex().as_bytes();
    let mut out = [0u8; 32];
    for (i, pair) in hex.chunks(2).enumerate().take(32) {
        let s = std::str::from_utf8(pair).unwrap_or("00");
        out[i] = u8::from_str_radix(s, 16).map_err(|_| CopyError::Algorithm(digest.to_string()))?;
    }
    Ok(out)
}

fn sha2_digest(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes).into()
}

/// One access-log line per copy, beside the client requests' lines.
fn log_copy(
    digest: &Digest,
    from: &str,
    to: &str,
    bytes: u64,
    start: Instant,
    error: Option<&CopyError>,
) {
    let ms = format!("{:.1}", start.elapsed().as_secs_f64() * 1000.0);
    let m = crate::metrics::metrics();
    let result = if error.is_none() { "copied" } else { "failed" };
    m.backfill_copies
        .get_or_create(&crate::metrics::ResultLabels { result })
        .inc();
    m.backfill_bytes.inc_by(bytes);
    match error {
        None => tracing::info!(
            target: crate::logging::ACCESS,
            route = %"backfill",
            digest = %digest,
            from = %from,
            to = %to,
            bytes,
            ms = %ms,
        ),
        Some(e) => tracing::warn!(
            target: crate::logging::ACCESS,
            route = %"backfill",
            digest = %digest,
            from = %from,
            to = %to,
            bytes,
            ms = %ms,
            error = %e,
        ),
    }
}
