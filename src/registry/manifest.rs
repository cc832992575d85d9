//! The pure manifest parser for backfill (issue 8): what a pushed manifest references, so the
//! registry where pushes land can be given it before the `PUT` that it would refuse without it.

use std::collections::HashSet;
use std::fmt;

use serde::Deserialize;

/// Larger bodies are refused with 413 by the caller, and here too, so no path holds more. Docker
/// Distribution caps a manifest at the same 4 MiB.
pub const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;

pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// Windows base layers: clients fetch them from their `urls`, and Docker Distribution's schema2
/// handler never checks that it holds one (it refuses one without `urls` instead).
const DOCKER_FOREIGN_LAYER: &str = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";

/// What the registry must already hold before it accepts the manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Manifest {
    /// Docker schema2 or OCI image manifest: refused with "blob unknown" until the registry holds
    /// the config and every layer. `layers` leaves out repeats and the layers a registry never
    /// checks (those with `urls`, Docker foreign layers).
    Image {
        config: Descriptor,
        layers: Vec<Descriptor>,
    },
    /// Docker manifest list or OCI index: refused with "manifest blob unknown" until the registry
    /// holds every child manifest, which the caller copies and completes in turn. Children are
    /// kept even with `urls`: Distribution asks its manifest store for each one regardless.
    Index { manifests: Vec<Descriptor> },
}

impl Manifest {
    /// `content_type` is the request's Content-Type. When it is missing or plain
    /// `application/json`, the body's `mediaType` decides; when that is missing too (OCI lets both
    /// omit it), the shape does: `manifests` alone is an index, `config` an image manifest.
    /// `subject`, `annotations` and other fields are ignored: no registry checks a subject exists.
    pub fn parse(content_type: Option<&str>, body: &[u8]) -> Result<Manifest, NotUnderstood> {
        if body.len() > MAX_MANIFEST_BYTES {
            return Err(NotUnderstood::TooLarge { size: body.len() });
        }
        // An unknown header (schema1's `+prettyjws`, anything else) settles it before the body.
        let header = match content_type.map(essence) {
            Some(m) if !m.is_empty() && m != "application/json" => {
                let kind = kind_of(&m)?;
                Some((m, kind))
            }
            _ => None,
        };
        let raw: Raw = serde_json::from_slice(body)?;
        if raw.schema_version != 2 {
            return Err(NotUnderstood::SchemaVersion(raw.schema_version));
        }
        let kind = match (header, raw.media_type.as_deref().map(essence)) {
            (Some((header, _)), Some(body)) if header != body => {
                return Err(NotUnderstood::Mismatch { header, body });
            }
            (Some((_, kind)), _) => kind,
            (None, Some(body)) => kind_of(&body)?,
            (None, None) => match (&raw.manifests, &raw.config) {
                (Some(_), None) => Kind::Index,
                (None, Some(_)) => Kind::Image,
                _ => return Err(NotUnderstood::Shape),
            },
        };
        match kind {
            Kind::Image => {
                let (Some(config), Some(layers)) = (raw.config, raw.layers) else {
                    return Err(NotUnderstood::Missing("config and layers"));
                };
                let config = config.checked()?;
                let mut seen = HashSet::from([config.digest.clone()]);
                let held = layers.into_iter().filter(|l| !l.fetched_elsewhere());
                let layers = distinct(held, &mut seen)?;
                Ok(Manifest::Image { config, layers })
            }
            Kind::Index => {
                let manifests = raw.manifests.ok_or(NotUnderstood::Missing("manifests"))?;
                let manifests = distinct(manifests, &mut HashSet::new())?;
                Ok(Manifest::Index { manifests })
            }
        }
    }

    /// The blobs to copy: config then layers for an image manifest, none for an index.
    pub fn blobs(&self) -> impl Iterator<Item = &Descriptor> {
        let (config, layers) = match self {
            Manifest::Image { config, layers } => (Some(config), layers.as_slice()),
            Manifest::Index { .. } => (None, &[][..]),
        };
        config.into_iter().chain(layers)
    }

    /// The child manifests to copy: those of an index, none for an image manifest.
    pub fn children(&self) -> &[Descriptor] {
        match self {
            Manifest::Index { manifests } => manifests,
            Manifest::Image { .. } => &[],
        }
    }
}

/// One reference in a manifest: what to fetch, and what to send it as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
}

/// A checked `algorithm:hex` digest. The caller puts it in `/v2/<name>/blobs/<digest>`, so only
/// what registries accept gets through: sha256 with 64 and sha512 with 128 lowercase hex digits
/// (the image-spec's registered algorithms; Distribution refuses uppercase).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Digest {
    text: String,
    algorithm: Algorithm,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    Sha256,
    Sha512,
}

impl Digest {
    pub fn parse(text: &str) -> Result<Digest, BadDigest> {
        let hex = |s: &str, len| {
            s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        };
        let algorithm = match text.split_once(':') {
            Some(("sha256", digits)) if hex(digits, 64) => Algorithm::Sha256,
            Some(("sha512", digits)) if hex(digits, 128) => Algorithm::Sha512,
            _ => return Err(BadDigest(text.to_owned())),
        };
        Ok(Digest {
            text: text.to_owned(),
            algorithm,
        })
    }

    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    pub fn hex(&self) -> &str {
        self.text.split_once(':').map_or("", |(_, hex)| hex)
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Why a manifest is forwarded as is, without backfill: the registry then judges it alone.
#[derive(Debug, thiserror::Error)]
pub enum NotUnderstood {
    #[error("manifest of {size} bytes is over the 4 MiB limit")]
    TooLarge { size: usize },
    /// Docker schema1 (`+prettyjws`), or anything else not listed above.
    #[error("media type {0:?} is not a manifest dockgate reads")]
    MediaType(String),
    #[error("Content-Type says {header:?} but the manifest's mediaType says {body:?}")]
    Mismatch { header: String, body: String },
    #[error("no media type, and neither `manifests` alone nor `config` tells the kind")]
    Shape,
    #[error("schemaVersion is {0}, not 2")]
    SchemaVersion(u32),
    #[error("manifest JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("the manifest has no {0}")]
    Missing(&'static str),
    #[error("descriptor digest: {0}")]
    Digest(#[from] BadDigest),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is neither sha256:<64 lowercase hex> nor sha512:<128 lowercase hex>")]
pub struct BadDigest(pub String);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Image,
    Index,
}

fn kind_of(media_type: &str) -> Result<Kind, NotUnderstood> {
    match media_type {
        DOCKER_MANIFEST | OCI_MANIFEST => Ok(Kind::Image),
        DOCKER_MANIFEST_LIST | OCI_INDEX => Ok(Kind::Index),
        _ => Err(NotUnderstood::MediaType(media_type.to_owned())),
    }
}

/// The media type without parameters, lowercased: media types are case-insensitive (RFC 9110
/// section 8.3.1), and clients add `; charset=utf-8`.
fn essence(media_type: &str) -> String {
    let end = media_type.find(';').unwrap_or(media_type.len());
    media_type[..end].trim().to_ascii_lowercase()
}

/// Checks each digest and keeps the first of repeats (a layer added twice), which would otherwise
/// be copied twice.
fn distinct(
    raw: impl IntoIterator<Item = RawDescriptor>,
    seen: &mut HashSet<Digest>,
) -> Result<Vec<Descriptor>, BadDigest> {
    let mut out = Vec::new();
    for descriptor in raw {
        let descriptor = descriptor.checked()?;
        if seen.insert(descriptor.digest.clone()) {
            out.push(descriptor);
        }
    }
    Ok(out)
}

/// Every kind's fields at once. Unknown fields are allowed, as registries and builders add their
/// own (`annotations`, `artifactType`, `subject`, `platform`). A repeated key is refused, where
/// Go keeps the last: what is backfilled must be what the registry reads.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Raw {
    schema_version: u32,
    media_type: Option<String>,
    config: Option<RawDescriptor>,
    layers: Option<Vec<RawDescriptor>>,
    manifests: Option<Vec<RawDescriptor>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDescriptor {
    media_type: String,
    digest: String,
    size: u64,
    #[serde(default)]
    urls: Vec<String>,
}

impl RawDescriptor {
    /// Distribution skips the existence check for any descriptor with `urls` and for every
    /// Docker foreign layer.
    fn fetched_elsewhere(&self) -> bool {
        !self.urls.is_empty() || essence(&self.media_type) == DOCKER_FOREIGN_LAYER
    }

    fn checked(self) -> Result<Descriptor, BadDigest> {
        let digest = Digest::parse(&self.digest)?;
        Ok(Descriptor {
            media_type: self.media_type,
            digest,
            size: self.size,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(content_type: Option<&str>, body: &str) -> Manifest {
        Manifest::parse(content_type, body.as_bytes()).expect("understood")
    }

    /// The first 8 hex digits of each digest, enough to tell this file's fixtures apart.
    fn short<'a>(descriptors: impl IntoIterator<Item = &'a Descriptor>) -> Vec<&'a str> {
        let hex = descriptors.into_iter().map(|d| d.digest.hex());
        hex.map(|h| &h[..8]).collect()
    }

    // skopeo writes compact JSON (as do buildx and crane).
    const DOCKER_IMAGE: &str = r#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":{"mediaType":"application/vnd.docker.container.image.v1+json","size":1472,"digest":"sha256:b79606fb3afea5bd1609ed40b622142f1c98125abcfe89a76a661b0e8e343910"},"layers":[{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","size":3623807,"digest":"sha256:2804bad6fe94a55f18b2b37e300919a5fd517b95aa81e95db574c0ba069a3740"},{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","size":1024,"digest":"sha256:8a1cee436cbac1489a1883c9d886fcfc46f302c55ed4106ae31729e4f4eb9041"}]}"#;

    // Writers of image-spec 1.0 manifests leave out mediaType.
    const OCI_IMAGE: &str = r#"{"schemaVersion":2,"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:b79606fb3afea5bd1609ed40b622142f1c98125abcfe89a76a661b0e8e343910","size":1472},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:2804bad6fe94a55f18b2b37e300919a5fd517b95aa81e95db574c0ba069a3740","size":3623807}]}"#;

    #[test]
    fn a_docker_image_needs_its_config_then_its_layers() {
        let m = parse(Some(DOCKER_MANIFEST), DOCKER_IMAGE);
        assert_eq!(short(m.blobs()), ["b79606fb", "2804bad6", "8a1cee43"]);
        let config = m.blobs().next().expect("config");
        assert_eq!(
            config.media_type,
            "application/vnd.docker.container.image.v1+json"
        );
        assert_eq!(config.size, 1472);
        assert!(m.children().is_empty());
    }

    #[test]
    fn the_header_may_carry_parameters_and_capitals_or_be_generic() {
        let typed = "Application/VND.docker.distribution.manifest.v2+json; charset=utf-8";
        for content_type in [Some(typed), Some("application/json"), Some(""), None] {
            let m = parse(content_type, DOCKER_IMAGE);
            assert_eq!(m.blobs().count(), 3, "{content_type:?}");
        }
    }

    #[test]
    fn an_oci_image_without_media_type_is_known_by_header_or_by_shape() {
        for content_type in [Some(OCI_MANIFEST), None] {
            let m = parse(content_type, OCI_IMAGE);
            assert_eq!(short(m.blobs()), ["b79606fb", "2804bad6"]);
        }
    }

    #[test]
    fn layers_fetched_from_their_urls_are_not_needed() {
        let oci = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:b79606fb3afea5bd1609ed40b622142f1c98125abcfe89a76a661b0e8e343910","size":1472},"layers":[{"mediaType":"application/vnd.oci.image.layer.nondistributable.v1.tar+gzip","digest":"sha256:051603900bc7a27051b385299b0ef6c3dd2da3c6216845df7f501d9e4337cbcd","size":1718332879,"urls":["https://mcr.microsoft.com/v2/windows/servercore/blobs/sha256:051603900bc7a27051b385299b0ef6c3dd2da3c6216845df7f501d9e4337cbcd"]},{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:2804bad6fe94a55f18b2b37e300919a5fd517b95aa81e95db574c0ba069a3740","size":3623807}]}"#;
        assert_eq!(short(parse(None, oci).blobs()), ["b79606fb", "2804bad6"]);
        // A Docker foreign layer is never checked, even when a writer dropped its urls.
        let foreign = DOCKER_IMAGE.replacen("rootfs.diff", "rootfs.foreign.diff", 1);
        let m = parse(None, &foreign);
        assert_eq!(short(m.blobs()), ["b79606fb", "8a1cee43"]);
    }

    #[test]
    fn a_layer_listed_twice_is_copied_once() {
        let layer = r#"{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:2804bad6fe94a55f18b2b37e300919a5fd517b95aa81e95db574c0ba069a3740","size":3623807}"#;
        let twice = OCI_IMAGE.replace("}]}", &format!("}},{layer}]}}"));
        assert_eq!(short(parse(None, &twice).blobs()), ["b79606fb", "2804bad6"]);
    }

    #[test]
    fn a_docker_manifest_list_needs_each_platform_manifest() {
        let list = r#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json","manifests":[{"mediaType":"application/vnd.docker.distribution.manifest.v2+json","size":528,"digest":"sha256:5861314d7fccb39c2192173240eab44fa35ca66426201ca2acd0630a6258dd51","platform":{"architecture":"amd64","os":"linux"}},{"mediaType":"application/vnd.docker.distribution.manifest.v2+json","size":528,"digest":"sha256:f69162950f235e3cdbbad33f1f912d1a504be90d8a37d002c735d6f3e3882265","platform":{"architecture":"arm64","os":"linux","variant":"v8"}}]}"#;
        let m = parse(Some(DOCKER_MANIFEST_LIST), list);
        assert_eq!(short(m.children()), ["5861314d", "f6916295"]);
        assert_eq!(m.children()[1].media_type, DOCKER_MANIFEST);
        assert_eq!(m.blobs().count(), 0);
    }

    #[test]
    fn an_oci_index_needs_its_manifests_but_not_its_subject() {
        let index = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:5861314d7fccb39c2192173240eab44fa35ca66426201ca2acd0630a6258dd51","size":1024,"platform":{"architecture":"amd64","os":"linux"}},{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:f69162950f235e3cdbbad33f1f912d1a504be90d8a37d002c735d6f3e3882265","size":1024,"platform":{"architecture":"arm64","os":"linux"}}],"subject":{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:ceaeee3c0f91c6c853bda5200efb5a1b94c85fd8bb21171047cbd19059c15722","size":1024},"annotations":{"org.opencontainers.image.created":"2024-05-01T10:00:00Z"}}"#;
        let m = parse(Some(OCI_INDEX), index);
        assert_eq!(short(m.children()), ["5861314d", "f6916295"]);
        // Without any media type, `manifests` alone makes it an index.
        let bare = index.replacen(&format!(r#""mediaType":"{OCI_INDEX}","#), "", 1);
        let m = parse(None, &bare);
        assert_eq!(short(m.children()), ["5861314d", "f6916295"]);
    }

    #[test]
    fn an_artifact_needs_its_blobs_but_not_its_subject() {
        let sbom = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"application/spdx+json","config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2,"data":"e30="},"layers":[{"mediaType":"application/spdx+json","digest":"sha256:98f3ae1ef67113d8140d4f6cb8d2830070e21ea48f091be519659846c771a374","size":4096}],"subject":{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:ceaeee3c0f91c6c853bda5200efb5a1b94c85fd8bb21171047cbd19059c15722","size":1024}}"#;
        let m = parse(Some(OCI_MANIFEST), sbom);
        assert_eq!(short(m.blobs()), ["44136fa3", "98f3ae1e"]);
    }

    fn refuse(content_type: Option<&str>, body: &str) -> NotUnderstood {
        Manifest::parse(content_type, body.as_bytes()).expect_err("not understood")
    }

    #[test]
    fn what_is_not_understood_says_why() {
        use NotUnderstood as Why;
        let (oci, json) = (Some(OCI_MANIFEST), Some("application/json"));
        assert!(matches!(refuse(oci, &OCI_IMAGE[..60]), Why::Json(_)));
        let no_config = r#"{"schemaVersion":2,"layers":[]}"#;
        assert!(matches!(refuse(oci, no_config), Why::Missing(_)));
        // A repeated key: Go would read the last `layers`, serde refuses.
        let repeated = OCI_IMAGE.replacen(r#""layers":"#, r#""layers":[],"layers":"#, 1);
        assert!(matches!(refuse(oci, &repeated), Why::Json(_)));
        let schema1 = r#"{"schemaVersion":1,"name":"library/alpine","tag":"3.19","architecture":"amd64","fsLayers":[]}"#;
        let signed = "application/vnd.docker.distribution.manifest.v1+prettyjws";
        assert!(matches!(refuse(Some(signed), schema1), Why::MediaType(m) if m == signed));
        assert!(matches!(refuse(None, schema1), Why::SchemaVersion(1)));
        let other = r#"{"schemaVersion":2,"mediaType":"application/vnd.example+json"}"#;
        assert!(matches!(refuse(json, other), Why::MediaType(_)));
        let list = Some(DOCKER_MANIFEST_LIST);
        assert!(matches!(refuse(list, DOCKER_IMAGE), Why::Mismatch { .. }));
        assert!(matches!(refuse(None, r#"{"schemaVersion":2}"#), Why::Shape));
        let layer = "sha256:2804bad6fe94a55f18b2b37e300919a5fd517b95aa81e95db574c0ba069a3740";
        let bad = DOCKER_IMAGE.replacen(layer, "sha256:xyz", 1);
        assert!(matches!(refuse(None, &bad), Why::Digest(BadDigest(d)) if d == "sha256:xyz"));
    }

    #[test]
    fn a_body_over_4_mib_is_too_large() {
        let body = vec![b' '; MAX_MANIFEST_BYTES + 1];
        let err = Manifest::parse(Some(OCI_MANIFEST), &body).expect_err("too large");
        assert!(matches!(err, NotUnderstood::TooLarge { size } if size == body.len()));
    }

    #[test]
    fn digests_are_sha256_or_sha512_in_lowercase_hex() {
        let hex = "a4abd4448c49562d828115d13a1fccea927f52b4d5459297f8b43e42da89238bc13626e43dcb38ddb082488927ec904fb42057443983e88585179d50551afe62";
        let d = Digest::parse(&format!("sha512:{hex}")).expect("valid");
        assert_eq!((d.algorithm(), d.hex()), (Algorithm::Sha512, hex));
        assert_eq!(d.to_string(), format!("sha512:{hex}"));
        let refused = [
            "sha256:B79606FB3AFEA5BD1609ED40B622142F1C98125ABCFE89A76A661B0E8E343910",
            "sha512:b79606fb3afea5bd1609ed40b622142f1c98125abcfe89a76a661b0e8e343910",
            "md5:d41d8cd98f00b204e9800998ecf8427e",
            "b79606fb3afea5bd1609ed40b622142f1c98125abcfe89a76a661b0e8e343910",
            "sha256:../../../../../../../../../../../../../../../../../../../etc/passwd",
        ];
        for text in refused {
            let refusal = Err(BadDigest(text.to_owned()));
            assert_eq!(Digest::parse(text), refusal, "{text}");
        }
    }
}
