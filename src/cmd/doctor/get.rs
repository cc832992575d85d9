//! Does get serve reads: each server's catalog, and with `--image NAME:TAG` the tag's
//! manifest, asked of the members in order as dockgate's group asks them.

use http::{Method, StatusCode};

use super::probe::Probe;
use super::{Report, Verdict};
use crate::config::{UpstreamSpec, UpstreamUrl};

/// What docker and containerd accept when they resolve a tag: Distribution answers 404 to a
/// request for an OCI manifest that does not accept one.
const MANIFEST_TYPES: &str = "application/vnd.oci.image.manifest.v1+json, \
     application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json, \
     application/vnd.docker.distribution.manifest.list.v2+json";

/// `GET /v2/_catalog`: 200 or 401 is a registry that serves reads.
pub async fn reads(probe: &Probe, report: &mut Report, subject: &str, url: &UpstreamUrl) {
    let seen = "GET /v2/_catalog";
    let verdict = match probe.send(Method::GET, url, "/v2/_catalog", &[]).await {
        Ok(a) if a.status == StatusCode::OK => {
            let json: Option<serde_json::Value> = serde_json::from_slice(&a.body).ok();
            let count = json
                .as_ref()
                .and_then(|j| j["repositories"].as_array())
                .map(|r| format!(" ({} repositories on its first page)", r.len()))
                .unwrap_or_default();
            Verdict::ok(subject, "reads", format!("{seen} answered 200{count}"))
        }
        Ok(a) if a.status == StatusCode::UNAUTHORIZED => Verdict::ok(
            subject,
            "reads",
            format!("{seen} answered 401: reads need a login (or a token)"),
        ),
        Ok(a) if a.status.is_server_error() => Verdict::fail(
            subject,
            "reads",
            format!("{seen} answered {}", a.status),
            "read the registry's log (Nexus: nexus.log; an unreachable proxy remote shows here)",
        ),
        Ok(a) => Verdict::warn(
            subject,
            "reads",
            format!("{seen} answered {}", a.status),
            "some registries do not list their catalog: run doctor with --image NAME:TAG to \
             check a real tag",
        ),
        Err(e) => Verdict::fail(
            subject,
            "reads",
            format!("{seen}: {e}"),
            "the server answered GET /v2/ but not this; check a proxy in between",
        ),
    };
    report.add(verdict);
}

/// `HEAD /v2/NAME/manifests/TAG` of each member in order until one answers other than 404:
/// what a pull through dockgate's group gets.
pub async fn image(probe: &Probe, report: &mut Report, spec: &UpstreamSpec, image: &str) {
    let subject = format!("get {spec}");
    let Some((name, reference)) = split(image) else {
        report.add(Verdict::fail(
            &subject,
            "image",
            format!("--image {image:?} is not NAME:TAG or NAME@DIGEST"),
            "give e.g. --image library/alpine:3.19",
        ));
        return;
    };
    let path = format!("/v2/{name}/manifests/{reference}");
    let seen = format!("HEAD {path}");
    let mut answered = false;
    for (i, member) in spec.members.iter().enumerate() {
        for url in member {
            let answer = match probe
                .send(Method::HEAD, url, &path, &[("accept", MANIFEST_TYPES)])
                .await
            {
                Ok(a) => a,
                // Already reported by the server's /v2/ check; the next server is asked.
                Err(_) => continue,
            };
            answered = true;
            let by = if spec.members.len() > 1 {
                format!("member {} ({url})", i + 1)
            } else {
                url.to_string()
            };
            let verdict = match answer.status {
                StatusCode::NOT_FOUND => break,
                StatusCode::OK => {
                    let digest = answer
                        .header("docker-content-digest")
                        .unwrap_or("no digest given");
                    Verdict::ok(
                        &subject,
                        "image",
                        format!("{seen} answered 200 from {by}: {digest}"),
                    )
                }
                StatusCode::UNAUTHORIZED => Verdict::warn(
                    &subject,
                    "image",
                    format!("{seen} answered 401 from {by}"),
                    "pulls need a login; doctor asks anonymously: docker login, then docker pull \
                     through dockgate (or allow anonymous reads: Nexus's Anonymous Access and its \
                     Docker Bearer Token Realm)",
                ),
                s => Verdict::fail(
                    &subject,
                    "image",
                    format!("{seen} answered {s} from {by}"),
                    "read that registry's log (a proxy repository whose remote is unreachable \
                     answers 5xx here)",
                ),
            };
            report.add(verdict);
            return;
        }
    }
    let verdict = if answered {
        let library = if name.contains('/') {
            ""
        } else {
            " Docker Hub's official images are library/NAME (library/alpine)."
        };
        Verdict::fail(
            &subject,
            "image",
            format!("{seen}: not found on any member"),
            format!(
                "check the name and tag.{library} For an image from Docker Hub, get needs a \
                 proxy of it among its members (Nexus: a docker (proxy) repository in the \
                 group's Members; dockgate: a pull-through cache in get's members)"
            ),
        )
    } else {
        Verdict::fail(
            &subject,
            "image",
            format!("{seen}: no member answered"),
            "see the v2 lines above",
        )
    };
    report.add(verdict);
}

/// `name:tag` or `name@sha256:...`; a `:` before the last `/` is a registry's port, not a tag.
fn split(image: &str) -> Option<(&str, &str)> {
    let (name, reference) = match image.split_once('@') {
        Some(pair) => pair,
        None => {
            let (name, tag) = image.rsplit_once(':')?;
            if tag.contains('/') {
                return None;
            }
            (name, tag)
        }
    };
    (!name.is_empty() && !reference.is_empty()).then_some((name, reference))
}
