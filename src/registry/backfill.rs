//! Backfill: make put complete itself from get before a push needs what only get has. Nexus
//! OSS, Distribution and Harbor refuse a manifest whose blobs the hosted repository lacks, and
//! a refused cross-repository mount fails containerd-store pushes (Docker 29) outright.
//!
//! - A refused mount (`POST ...?mount=<d>&from=<repo>`, put answered 202) whose blob get has:
//!   copy it, answer 201 as a mount would.
//! - A manifest `PUT`: copy every blob and child manifest put lacks, then forward the original
//!   bytes (the digest is the bytes).
//! - Opt-in: a push's `HEAD` of a blob put lacks and get has: copy it, answer put's 200.

use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use futures_util::future::join_all;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};

use crate::config::{self, Target};
use crate::upstream::{Reply, ReplyBody, Upstreams};

use super::copy::{session_of, Copier, CopyError, Credentials};
use super::manifest::{Digest, Manifest};

/// How deep an index of indexes is followed; real ones have one level.
const MAX_DEPTH: u8 = 2;

pub struct Backfill {
    copier: Copier,
    /// `Authorization: Basic ...` from `[backfill] username`/`password`.
    configured: Option<HeaderValue>,
    pub on_blob_check: bool,
}

/// What a manifest PUT's completion did, for its access-log line.
#[derive(Debug, Default, Clone, Copy)]
pub struct Summary {
    pub copied: usize,
    pub bytes: u64,
}

/// A copy that failed in a way the client must hear about.
#[derive(Debug)]
pub struct Failure {
    pub digest: String,
    pub error: CopyError,
}

impl Backfill {
    /// `None` when `[backfill] enabled = false`.
    pub fn new(cfg: &config::Config, upstreams: Arc<Upstreams>) -> Option<Backfill> {
        let b = &cfg.backfill;
        if !b.enabled {
            return None;
        }
        let configured = match (&b.username, &b.password) {
            (Some(u), Some(p)) => {
                let token = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
                HeaderValue::from_str(&format!("Basic {token}"))
                    .ok()
                    .map(|mut v| {
                        v.set_sensitive(true);
                        v
                    })
            }
            _ => None,
        };
        Some(Backfill {
            copier: Copier::new(upstreams, b.max_concurrent, cfg.timeouts.body_stall),
            configured,
            on_blob_check: b.on_blob_check,
        })
    }

    /// The headers copies carry, taken from the client's request as it goes upstream.
    pub fn credentials(&self, forwarded: &HeaderMap) -> Credentials {
        let mut headers = HeaderMap::new();
        for name in [
            header::HOST,
            header::AUTHORIZATION,
            header::USER_AGENT,
            HeaderName::from_static("x-forwarded-proto"),
            HeaderName::from_static("x-forwarded-for"),
            HeaderName::from_static("x-forwarded-host"),
            HeaderName::from_static("x-forwarded-port"),
            HeaderName::from_static("x-real-ip"),
        ] {
            if let Some(v) = forwarded.get(&name) {
                headers.insert(name, v.clone());
            }
        }
        Credentials { headers }
    }

    /// The configured credentials, when the client's were refused and there are some.
    fn fallback(&self, creds: &Credentials, err: &CopyError) -> Option<Credentials> {
        let configured = self.configured.as_ref()?;
        if !matches!(err, CopyError::Refused { .. }) {
            return None;
        }
        let mut alt = creds.clone();
        alt.headers
            .insert(header::AUTHORIZATION, configured.clone());
        Some(alt)
    }

    /// put's answer to `POST /v2/<repo>/blobs/uploads/?mount=<digest>&from=<from>`. A 202
    /// means put could not mount; if get has the blob, copy it into the session put opened
    /// and answer 201, as a registry that mounted does. Otherwise the client gets a 202 and
    /// uploads (put's own session when get lacks the blob, a fresh one after a failed copy).
    /// The flag says whether dockgate copied the blob (put's own 201 is passed on as is).
    pub async fn mount<'a>(
        &'a self,
        reply: Reply<'a>,
        creds: &Credentials,
        repo: &str,
        digest: &str,
        from: Option<&str>,
    ) -> (Reply<'a>, bool) {
        if reply.response.status() != StatusCode::ACCEPTED {
            return (reply, false);
        }
        let (Ok(digest), Some(session)) = (Digest::parse(digest), session_of(&reply)) else {
            return (reply, false);
        };
        let server = reply.server;
        let (parts, _) = reply.response.into_parts();
        let mut sources = Vec::with_capacity(2);
        sources.extend(from.filter(|f| *f != repo));
        sources.push(repo);
        let mut result = self
            .copier
            .blob(creds, repo, &sources, &digest, Some(session.clone()))
            .await;
        if let Err(e) = &result {
            if let Some(alt) = self.fallback(creds, e) {
                result = self
                    .copier
                    .blob(&alt, repo, &sources, &digest, Some(session.clone()))
                    .await;
            }
        }
        let fallback = match result {
            Ok(_) => return (mounted(repo, &digest), true),
            Err(CopyError::NotFound(_)) => Reply {
                // Nobody has it: the client uploads into put's own session.
                response: Response::from_parts(parts, ReplyBody::Full(Bytes::new())),
                server,
            },
            Err(e) => {
                tracing::warn!(repo, digest = %digest, error = %e, "backfill of a refused mount failed; the client uploads instead");
                self.copier.cancel(creds, &session).await;
                let fresh = self
                    .copier
                    .send(
                        Target::Put,
                        http::Method::POST,
                        creds,
                        format!("/v2/{repo}/blobs/uploads/"),
                        None,
                    )
                    .await;
                match fresh {
                    Ok(r) => r,
                    Err(e) => {
                        let message = format!("cannot open an upload on the put upstream: {e}");
                        let body = crate::error::json_body("UNAVAILABLE", &message);
                        let mut response = Response::new(ReplyBody::Full(body));
                        *response.status_mut() = StatusCode::BAD_GATEWAY;
                        response.headers_mut().insert(
                            header::CONTENT_TYPE,
                            HeaderValue::from_static("application/json; charset=utf-8"),
                        );
                        Reply {
                            response,
                            server: None,
                        }
                    }
                }
            }
        };
        (fallback, false)
    }

    /// Copies into put every blob and child manifest of `manifest` that put lacks and get
    /// has. A blob get does not have either is left for put to refuse with its own error.
    pub async fn complete(
        &self,
        creds: &Credentials,
        repo: &str,
        manifest: &Manifest,
    ) -> Result<Summary, Failure> {
        let mut summary = Summary::default();
        match self
            .complete_as(creds, repo, manifest, 0, &mut summary)
            .await
        {
            Err(f) if matches!(f.error, CopyError::Refused { .. }) => {
                let Some(alt) = self.fallback(creds, &f.error) else {
                    return Err(f);
                };
                self.complete_as(&alt, repo, manifest, 0, &mut summary)
                    .await
                    .map(|()| summary)
            }
            r => r.map(|()| summary),
        }
    }

    async fn complete_as(
        &self,
        creds: &Credentials,
        repo: &str,
        manifest: &Manifest,
        depth: u8,
        summary: &mut Summary,
    ) -> Result<(), Failure> {
        let c = &self.copier;
        // Every blob is asked about at once, and the missing ones copied at once (the copier
        // bounds how many run): a 10-layer manifest costs one round trip, not ten.
        let blobs: Vec<_> = manifest.blobs().collect();
        let present = join_all(
            blobs
                .iter()
                .map(|b| c.put_has(creds, repo, "blobs", &b.digest)),
        )
        .await;
        let mut missing = Vec::new();
        for (blob, has) in blobs.iter().zip(present) {
            match has {
                Ok(true) => {}
                Ok(false) => missing.push(*blob),
                Err(error) => {
                    return Err(Failure {
                        digest: blob.digest.to_string(),
                        error,
                    })
                }
            }
        }
        let sources = [repo];
        let copies = join_all(
            missing
                .iter()
                .map(|b| c.blob(creds, repo, &sources, &b.digest, None)),
        )
        .await;
        for (blob, copied) in missing.iter().zip(copies) {
            match copied {
                Ok(copied) => {
                    summary.copied += usize::from(copied.copied);
                    summary.bytes += copied.bytes;
                }
                Err(CopyError::NotFound(_)) => {}
                Err(error) => {
                    return Err(Failure {
                        digest: blob.digest.to_string(),
                        error,
                    })
                }
            }
        }
        for child in manifest.children() {
            let fail = |error| Failure {
                digest: child.digest.to_string(),
                error,
            };
            if c.put_has(creds, repo, "manifests", &child.digest)
                .await
                .map_err(fail)?
            {
                continue;
            }
            let (bytes, content_type) = match c.fetch_manifest(creds, repo, child).await {
                Ok(m) => m,
                Err(CopyError::NotFound(_)) => continue,
                Err(error) => return Err(fail(error)),
            };
            let content_type = content_type
                .or_else(|| HeaderValue::from_str(&child.media_type).ok())
                .unwrap_or(HeaderValue::from_static("application/json"));
            if depth < MAX_DEPTH {
                if let Ok(inner) = Manifest::parse(content_type.to_str().ok(), &bytes) {
                    Box::pin(self.complete_as(creds, repo, &inner, depth + 1, summary)).await?;
                }
            }
            let len = bytes.len() as u64;
            c.put_manifest(creds, repo, &child.digest, bytes, content_type)
                .await
                .map_err(fail)?;
            summary.copied += 1;
            summary.bytes += len;
        }
        Ok(())
    }

    /// put answered 404 to a push's `HEAD /v2/<repo>/blobs/<digest>`: if get has it, copy it
    /// and ask put again, so the client skips uploading what the group already has.
    pub async fn blob_check<'a>(
        &'a self,
        creds: &Credentials,
        repo: &str,
        digest: &str,
    ) -> Option<Reply<'a>> {
        let digest = Digest::parse(digest).ok()?;
        let mut result = self.copier.blob(creds, repo, &[repo], &digest, None).await;
        if let Err(e) = &result {
            if let Some(alt) = self.fallback(creds, e) {
                result = self.copier.blob(&alt, repo, &[repo], &digest, None).await;
            }
        }
        match result {
            Ok(_) => {}
            Err(CopyError::NotFound(_)) => return None,
            Err(e) => {
                tracing::warn!(repo, digest = %digest, error = %e, "backfill on a blob check failed; answering put's 404");
                return None;
            }
        }
        let path = format!("/v2/{repo}/blobs/{digest}");
        let reply = self
            .copier
            .send(Target::Put, http::Method::HEAD, creds, path, None)
            .await
            .ok()?;
        reply.response.status().is_success().then_some(reply)
    }
}

/// What a registry answers to a mount it did: 201 with the blob's location and digest.
fn mounted<'a>(repo: &str, digest: &Digest) -> Reply<'a> {
    let mut resp = Response::new(ReplyBody::Full(Bytes::new()));
    *resp.status_mut() = StatusCode::CREATED;
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&format!("/v2/{repo}/blobs/{digest}")) {
        h.insert(header::LOCATION, v);
    }
    if let Ok(v) = HeaderValue::from_str(digest.as_str()) {
        h.insert("docker-content-digest", v);
    }
    h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    Reply {
        response: resp,
        server: None,
    }
}
