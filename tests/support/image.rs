//! Generated OCI image layouts (`oci:DIR:latest` for skopeo): layers of chosen sizes made of
//! deterministic pseudo-random bytes, tarred and gzipped (level 0) while streaming to disk, so a
//! 256 MiB layer never sits in memory and skopeo pushes it without recompressing.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use flate2::write::GzEncoder;
use flate2::Compression;
use tempfile::TempDir;

use super::{sha256, sha256_file, Location};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const TAG: &str = "latest";

/// One layer blob: a gzipped tar holding one file of pseudo-random bytes.
#[derive(Debug, Clone)]
pub struct Layer {
    /// Digest of the compressed blob, as registries name it.
    pub digest: String,
    /// Digest of the uncompressed tar, as the image config lists it.
    pub diff_id: String,
    /// Size of the compressed blob.
    pub size: u64,
    path: PathBuf,
}

/// An OCI image layout in its own tempdir.
pub struct Image {
    dir: TempDir,
    manifest: Vec<u8>,
    manifest_digest: String,
    layers: Vec<Layer>,
}

enum Part {
    Reused(Layer),
    New(u64),
}

/// `Image::builder("base").layer(1 << 20).build()`; `.layers_from(&base)` makes a derived image.
pub struct ImageBuilder {
    name: String,
    parts: Vec<Part>,
}

impl Image {
    pub fn builder(name: &str) -> ImageBuilder {
        ImageBuilder {
            name: name.to_string(),
            parts: Vec::new(),
        }
    }

    /// A small image with two layers, named by `name` (which also seeds its bytes).
    pub fn small(name: &str) -> Image {
        Image::builder(name)
            .layer(64 * 1024)
            .layer(200 * 1024)
            .build()
    }

    /// Where skopeo reads it: `oci:DIR:latest`.
    pub fn layout(&self) -> Location {
        Location::oci(self.dir.path(), TAG)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn manifest_digest(&self) -> &str {
        &self.manifest_digest
    }

    pub fn manifest(&self) -> &[u8] {
        &self.manifest
    }

    pub fn layers(&self) -> &[Layer] {
        &self.layers
    }

    pub fn layer_digests(&self) -> Vec<String> {
        self.layers.iter().map(|l| l.digest.clone()).collect()
    }

    /// The manifest digest an OCI layout written by skopeo (e.g. a pull) names for its tag.
    pub fn digest_in_layout(dir: &Path) -> String {
        let index = std::fs::read(dir.join("index.json"))
            .unwrap_or_else(|e| panic!("no index.json in {}: {e}", dir.display()));
        let index: serde_json::Value = serde_json::from_slice(&index).expect("index.json is JSON");
        index["manifests"][0]["digest"]
            .as_str()
            .expect("index.json names a manifest digest")
            .to_string()
    }

    /// The path of a blob inside an OCI layout.
    pub fn blob_in_layout(dir: &Path, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        dir.join("blobs/sha256").join(hex)
    }
}

impl ImageBuilder {
    /// A new layer whose tar holds one file of `bytes` pseudo-random bytes.
    pub fn layer(mut self, bytes: u64) -> Self {
        self.parts.push(Part::New(bytes));
        self
    }

    /// Every layer of `base`, shared byte for byte (a `FROM base` image).
    pub fn layers_from(mut self, base: &Image) -> Self {
        for layer in &base.layers {
            self.parts.push(Part::Reused(layer.clone()));
        }
        self
    }

    pub fn build(self) -> Image {
        let dir = tempfile::Builder::new()
            .prefix("image-")
            .tempdir()
            .expect("tempdir for an image layout");
        let blobs = dir.path().join("blobs/sha256");
        std::fs::create_dir_all(&blobs).expect("create blobs/sha256");
        let mut layers = Vec::new();
        for (index, part) in self.parts.into_iter().enumerate() {
            let layer = match part {
                Part::Reused(layer) => {
                    let path = blobs.join(hex(&layer.digest));
                    if std::fs::hard_link(&layer.path, &path).is_err() {
                        std::fs::copy(&layer.path, &path).expect("copy a reused layer");
                    }
                    Layer { path, ..layer }
                }
                Part::New(bytes) => write_layer(
                    &blobs,
                    seed(&self.name, index),
                    bytes,
                    &format!("{index}.bin"),
                ),
            };
            layers.push(layer);
        }

        let diff_ids: Vec<&str> = layers.iter().map(|l| l.diff_id.as_str()).collect();
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": "amd64",
            "os": "linux",
            "config": { "Labels": { "dockgate.test.image": self.name } },
            "rootfs": { "type": "layers", "diff_ids": diff_ids },
        }))
        .expect("serialise config");
        let config_digest = write_blob(&blobs, &config);
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": { "mediaType": OCI_CONFIG, "digest": config_digest, "size": config.len() },
            "layers": layers.iter().map(|l| serde_json::json!({
                "mediaType": OCI_LAYER_GZIP, "digest": l.digest, "size": l.size,
            })).collect::<Vec<_>>(),
        }))
        .expect("serialise manifest");
        let manifest_digest = write_blob(&blobs, &manifest);
        let index = serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": OCI_MANIFEST,
                "digest": manifest_digest,
                "size": manifest.len(),
                "annotations": { "org.opencontainers.image.ref.name": TAG },
            }],
        });
        std::fs::write(dir.path().join("index.json"), index.to_string()).expect("index.json");
        std::fs::write(
            dir.path().join("oci-layout"),
            r#"{"imageLayoutVersion":"1.0.0"}"#,
        )
        .expect("oci-layout");
        Image {
            dir,
            manifest,
            manifest_digest,
            layers,
        }
    }
}

fn hex(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap_or(digest)
}

fn seed(name: &str, index: usize) -> u64 {
    // FNV-1a over the name, then the layer's position: distinct images get distinct bytes.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes().chain((index as u64).to_le_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h | 1
}

fn write_blob(blobs: &Path, bytes: &[u8]) -> String {
    let digest = sha256(bytes);
    std::fs::write(blobs.join(hex(&digest)), bytes).expect("write blob");
    digest
}

const CHUNK: usize = 1 << 20;

/// Streams tar(header, `bytes` of data, padding, end blocks) through gzip level 0 into a blob
/// file; the uncompressed digest comes from a `sha256sum` fed alongside.
fn write_layer(blobs: &Path, seed: u64, bytes: u64, file_name: &str) -> Layer {
    let partial = blobs.join(format!("partial-{seed:x}"));
    let file = BufWriter::with_capacity(CHUNK, File::create(&partial).expect("create layer"));
    let mut tar = Tee {
        gzip: GzEncoder::new(file, Compression::none()),
        hasher: Sha256Sum::start(),
    };

    tar.write_all(&tar_header(file_name, bytes))
        .expect("write tar header");
    let mut block = vec![0u8; CHUNK];
    let mut x = seed;
    for word in block.chunks_exact_mut(8) {
        // xorshift64: cheap, deterministic, incompressible enough for a registry.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        word.copy_from_slice(&x.to_le_bytes());
    }
    let mut left = bytes;
    let mut chunk_no: u64 = 0;
    while left > 0 {
        // Stamp each chunk with its number so no two chunks of a layer are equal.
        block[..8].copy_from_slice(&(chunk_no ^ seed).to_le_bytes());
        let n = left.min(CHUNK as u64) as usize;
        tar.write_all(&block[..n]).expect("write layer data");
        left -= n as u64;
        chunk_no += 1;
    }
    let pad = (512 - (bytes % 512) as usize) % 512;
    tar.write_all(&vec![0u8; pad + 1024])
        .expect("write tar end");

    let Tee { gzip, hasher } = tar;
    let mut file = gzip.finish().expect("finish gzip");
    file.flush().expect("flush layer");
    drop(file);
    let diff_id = hasher.finish();
    let digest = sha256_file(&partial);
    let path = blobs.join(hex(&digest));
    std::fs::rename(&partial, &path).expect("name the layer blob by its digest");
    let size = std::fs::metadata(&path).expect("layer metadata").len();
    Layer {
        digest,
        diff_id,
        size,
        path,
    }
}

fn tar_header(name: &str, size: u64) -> [u8; 512] {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    h[100..108].copy_from_slice(b"0000644\0");
    h[108..116].copy_from_slice(b"0000000\0");
    h[116..124].copy_from_slice(b"0000000\0");
    h[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
    h[136..148].copy_from_slice(b"00000000000\0");
    h[148..156].copy_from_slice(b"        ");
    h[156] = b'0';
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    h
}

/// Writes to the gzip stream and the uncompressed-digest hasher at once.
struct Tee {
    gzip: GzEncoder<BufWriter<File>>,
    hasher: Sha256Sum,
}

impl Write for Tee {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.write_all(buf)?;
        Ok(buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.gzip.write_all(buf)?;
        self.hasher.write_all(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.gzip.flush()
    }
}

/// `sha256sum` reading stdin: native speed even when the tests are built unoptimised.
struct Sha256Sum {
    child: Child,
}

impl Sha256Sum {
    fn start() -> Sha256Sum {
        let child = Command::new("sha256sum")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("run sha256sum");
        Sha256Sum { child }
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.child
            .stdin
            .as_mut()
            .expect("sha256sum's stdin is piped")
            .write_all(buf)
    }

    fn finish(self) -> String {
        let Sha256Sum { mut child } = self;
        drop(child.stdin.take());
        let out = child.wait_with_output().expect("sha256sum output");
        let text = String::from_utf8_lossy(&out.stdout);
        format!(
            "sha256:{}",
            text.split_whitespace().next().unwrap_or_default()
        )
    }
}
