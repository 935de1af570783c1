//! Container images, from OCI image layouts on the node or from registries.
//!
//! An OCI image layout is a directory with an `index.json`, an `oci-layout`
//! marker and a content-addressed `blobs/<alg>/<hex>` store. An image is a
//! manifest (found through the index by its `org.opencontainers.image.ref.name`
//! annotation) that names a config blob and an ordered list of layer blobs.
//! Every blob is verified against its sha256 digest before it is trusted.
//! Layers are unpacked once into a content-addressed cache
//! (`<cache>/layers/<hex>`) so that many containers, and many pulls, share
//! them; the overlayfs mount of a bundle stacks these directories.

pub(crate) mod layout;
mod reference;
mod registry;
mod unpack;

use std::collections::HashSet;
use std::path::{Path, PathBuf};

pub use reference::{ImageRef, RegistryRef};
pub use registry::{Credentials, RegistryConfig, RegistryError, RegistryTrust};
use unpack::BlobSource;

/// Errors from resolving, verifying and unpacking images.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidReference {
        reference: String,
        reason: &'static str,
    },
    #[error("read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("parse {path}: {source}")]
    Parse {
        path: PathBuf,
        source: oci_spec::OciSpecError,
    },
    #[error("no manifest tagged {tag:?} in {layout}")]
    TagNotFound { layout: PathBuf, tag: String },
    #[error("no {platform} manifest in image index {digest}")]
    NoPlatformManifest { platform: String, digest: String },
    #[error("unsupported digest {digest:?}: only sha256 is supported")]
    UnsupportedDigest { digest: String },
    #[error("digest mismatch for blob {path}: expected sha256:{expected}, got sha256:{actual}")]
    DigestMismatch {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("size mismatch for blob {path}: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        path: PathBuf,
        expected: u64,
        actual: u64,
    },
    #[error("unsupported layer media type {media_type:?}")]
    UnsupportedMediaType { media_type: String },
    #[error("layer {digest}: entry {entry:?} escapes the layer root")]
    PathTraversal { digest: String, entry: PathBuf },
    #[error("layer {digest}: entry {entry:?} refused: {reason}")]
    UnsafeEntry {
        digest: String,
        entry: PathBuf,
        reason: &'static str,
    },
    #[error("layer {digest}: larger than the {limit} bytes left for it uncompressed (agent --max-layer-size/--max-image-size)")]
    TooLarge { digest: String, limit: u64 },
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("layer {digest}: unpack {entry:?}: {source}")]
    Unpack {
        digest: String,
        entry: PathBuf,
        source: std::io::Error,
    },
}

impl ImageError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| ImageError::Io { path, source }
    }
}

/// The runtime-relevant part of an image's config (`config` in the OCI image config).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// `KEY=value` strings, in image order.
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
}

/// A pulled image: unpacked layer directories and the config to run it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// Unpacked layer directories, bottom (base) layer first.
    pub layers: Vec<PathBuf>,
    pub config: ImageConfig,
    /// Digest of the image manifest, `sha256:<hex>`.
    pub digest: String,
}

/// How large an image may be once unpacked, so that a hostile or broken
/// image (a decompression bomb) cannot fill the node's disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageLimits {
    /// Bytes of one layer's uncompressed tar stream.
    pub max_layer_bytes: u64,
    /// Bytes of all of an image's layers, uncompressed.
    pub max_image_bytes: u64,
}

impl Default for ImageLimits {
    fn default() -> Self {
        ImageLimits {
            max_layer_bytes: 10 << 30,
            max_image_bytes: 20 << 30,
        }
    }
}

/// A content-addressed cache of unpacked layers.
#[derive(Debug, Clone)]
pub struct ImageStore {
    cache_dir: PathBuf,
    registries: RegistryConfig,
    limits: ImageLimits,
    /// Counts the layer bytes downloaded.
    pulled_bytes: prometheus_client::metrics::counter::Counter,
}

impl ImageStore {
    /// A store caching layers under `cache_dir/layers`. Nothing is touched until `pull`.
    pub fn new(cache_dir: impl Into<PathBuf>) -> Self {
        ImageStore {
            cache_dir: cache_dir.into(),
            registries: RegistryConfig::default(),
            limits: ImageLimits::default(),
            pulled_bytes: Default::default(),
        }
    }

    /// Counts the layer bytes downloaded into `c`.
    pub fn counting(mut self, c: prometheus_client::metrics::counter::Counter) -> Self {
        self.pulled_bytes = c;
        self
    }

    /// Sets the size limits of unpacked layers and images.
    pub fn with_limits(mut self, limits: ImageLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Sets how registries are reached (insecure hosts, credentials).
    pub fn with_registries(mut self, registries: RegistryConfig) -> Self {
        self.registries = registries;
        self
    }

    pub fn cache_dir(&self) -> &Path {
        &self.cache_dir
    }

    /// Resolves `reference`, verifies manifest and config, and makes sure every
    /// layer is unpacked in the cache. Blocking; call it from `spawn_blocking`.
    pub fn pull(&self, reference: &ImageRef) -> Result<Image, ImageError> {
        let layers_dir = self.cache_dir.join("layers");
        private_dir(&self.cache_dir)?;
        private_dir(&layers_dir)?;
        let limits = self.limits;
        let unpack_all = |source: &BlobSource, blobs: &[layout::LayerBlob]| {
            let mut left = limits.max_image_bytes;
            let mut dirs = Vec::with_capacity(blobs.len());
            for l in blobs {
                let budget = left.min(limits.max_layer_bytes);
                let (dir, size) = unpack::ensure_layer(source, l, &layers_dir, budget)?;
                left = left.saturating_sub(size);
                dirs.push(dir);
            }
            Ok::<_, ImageError>(dirs)
        };
        match reference {
            ImageRef::Layout { layout, tag } => {
                let r = layout::resolve(layout, tag.as_ref())?;
                Ok(Image {
                    layers: unpack_all(&BlobSource::Layout(layout), &r.layers)?,
                    config: r.config,
                    digest: r.manifest_digest,
                })
            }
            ImageRef::Registry(reg) => {
                // Its own registry; or, named without one, the mirrors and
                // then the default registry, each asked until one has it.
                let mut failed = None;
                for reg in self.registries.candidates(reg) {
                    let client = registry::Client::new(&self.registries, &reg);
                    let pulled = client
                        .resolve(&reg.reference)
                        .map_err(ImageError::from)
                        .and_then(|r| {
                            let fetch = |layer: &layout::LayerBlob, dir: &Path| {
                                let got = client.download(layer, dir).map_err(ImageError::from)?;
                                self.pulled_bytes.inc_by(layer.size);
                                Ok(got)
                            };
                            Ok(Image {
                                layers: unpack_all(&BlobSource::Download(&fetch), &r.layers)?,
                                config: r.config,
                                digest: r.manifest_digest,
                            })
                        });
                    match pulled {
                        Ok(image) => return Ok(image),
                        Err(e) => {
                            tracing::warn!(registry = %reg.host, error = %e, "pull failed; trying the next registry if any");
                            failed = Some(e);
                        }
                    }
                }
                Err(failed.expect("at least one registry is tried"))
            }
        }
    }

    /// Removes every cached layer whose sha256 hex digest is not in `in_use`,
    /// and returns how many were removed. A layer is skipped while another
    /// pull holds its lock, so a layer being unpacked is never removed.
    pub fn gc(&self, in_use: &HashSet<String>) -> Result<usize, ImageError> {
        let layers_dir = self.cache_dir.join("layers");
        let entries = match std::fs::read_dir(&layers_dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(ImageError::io(&layers_dir)(e)),
        };
        let mut removed = 0;
        for entry in entries {
            let entry = entry.map_err(ImageError::io(&layers_dir))?;
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            let is_layer = name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit());
            if !is_layer || in_use.contains(&name) || !path.is_dir() {
                continue;
            }
            if unpack::remove_unless_locked(&layers_dir, &name)? {
                removed += 1;
            }
        }
        Ok(removed)
    }
}

/// Creates `dir` if needed and makes it private to root (0700): layers hold
/// setuid binaries and files that only the container should read.
pub fn private_dir(dir: &Path) -> Result<(), ImageError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).map_err(ImageError::io(dir))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(ImageError::io(dir))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest as _, Sha256};
    use std::ffi::CString;
    use std::io::Write;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::{FileTypeExt, MetadataExt};

    fn is_root() -> bool {
        if nix::unistd::geteuid().is_root() {
            return true;
        }
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "CI=true: whiteouts need root"
        );
        eprintln!("skipping: creating whiteout devices needs root");
        false
    }

    /// Writes a blob into the layout and returns its descriptor JSON.
    fn blob(layout: &Path, media_type: &str, bytes: &[u8]) -> serde_json::Value {
        let hex = hex::encode(Sha256::digest(bytes));
        let dir = layout.join("blobs/sha256");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(&hex), bytes).unwrap();
        serde_json::json!({"mediaType": media_type, "digest": format!("sha256:{hex}"), "size": bytes.len()})
    }

    enum Item<'a> {
        File(&'a str, &'a [u8]),
        Dir(&'a str),
    }

    fn tar(items: &[Item]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for item in items {
            let mut h = tar::Header::new_gnu();
            let (name, data, kind, mode): (&str, &[u8], _, _) = match item {
                Item::File(n, d) => (n, d, tar::EntryType::Regular, 0o644),
                Item::Dir(n) => (n, &[], tar::EntryType::Directory, 0o755),
            };
            // Raw name bytes, so tests can also build malicious archives.
            h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
            h.set_entry_type(kind);
            h.set_mode(mode);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            h.set_size(data.len() as u64);
            h.set_cksum();
            b.append(&h, data).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    /// Builds a layout with the given layers tagged `v1`; returns the layout path.
    fn layout(dir: &Path, layers: Vec<(&str, Vec<u8>)>, nested: bool) -> PathBuf {
        let layout = dir.join("layout");
        std::fs::create_dir_all(&layout).unwrap();
        std::fs::write(
            layout.join("oci-layout"),
            r#"{"imageLayoutVersion":"1.0.0"}"#,
        )
        .unwrap();
        let layer_descs: Vec<_> = layers.iter().map(|(mt, b)| blob(&layout, mt, b)).collect();
        let config = serde_json::json!({
            "architecture": "amd64", "os": "linux",
            "config": {"Entrypoint": ["/bin/sh"], "Cmd": ["-c", "echo hi"],
                       "Env": ["PATH=/bin"], "WorkingDir": "/srv", "User": "1000:1000"},
            "rootfs": {"type": "layers", "diff_ids": []}
        });
        let config = blob(
            &layout,
            "application/vnd.oci.image.config.v1+json",
            config.to_string().as_bytes(),
        );
        let manifest = serde_json::json!({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": config, "layers": layer_descs,
        });
        let mt = "application/vnd.oci.image.manifest.v1+json";
        let mut top = blob(&layout, mt, manifest.to_string().as_bytes());
        if nested {
            top["platform"] = serde_json::json!({"os": "linux", "architecture": "amd64"});
            let arm = serde_json::json!({"mediaType": mt, "size": 1, "platform": {"os": "linux", "architecture": "arm64"},
                "digest": "sha256:0000000000000000000000000000000000000000000000000000000000000000"});
            let inner = serde_json::json!({"schemaVersion": 2, "manifests": [arm, top]});
            top = blob(
                &layout,
                "application/vnd.oci.image.index.v1+json",
                inner.to_string().as_bytes(),
            );
        }
        top["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": "v1"});
        let index = serde_json::json!({"schemaVersion": 2, "manifests": [top]});
        std::fs::write(layout.join("index.json"), index.to_string()).unwrap();
        layout
    }

    fn two_layers() -> Vec<(&'static str, Vec<u8>)> {
        let base = tar(&[
            Item::Dir("bin/"),
            Item::File("bin/tool", b"tool"),
            Item::File("etc/gone", b"x"),
            Item::Dir("data/"),
            Item::File("data/old", b"old"),
        ]);
        let top = tar(&[
            Item::File("etc/.wh.gone", b""),
            Item::File("data/.wh..wh..opq", b""),
            Item::File("data/new", b"new"),
        ]);
        vec![
            ("application/vnd.oci.image.layer.v1.tar+gzip", gzip(&base)),
            ("application/vnd.docker.image.rootfs.diff.tar", top),
        ]
    }

    #[test]
    fn pulls_layers_config_and_whiteouts() {
        if !is_root() {
            return;
        }
        for nested in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let layout = layout(dir.path(), two_layers(), nested);
            let store = ImageStore::new(dir.path().join("cache"));
            let image = store
                .pull(&format!("oci:{}:v1", layout.display()).parse().unwrap())
                .unwrap();
            assert_eq!(image.layers.len(), 2);
            assert_eq!(
                std::fs::read(image.layers[0].join("bin/tool")).unwrap(),
                b"tool"
            );
            let gone = std::fs::symlink_metadata(image.layers[1].join("etc/gone")).unwrap();
            assert!(gone.file_type().is_char_device());
            assert_eq!(gone.rdev(), 0);
            let mut opaque = [0u8; 4];
            let c = CString::new(image.layers[1].join("data").as_os_str().as_bytes()).unwrap();
            // SAFETY: valid C strings and a buffer of the given length.
            let n = unsafe {
                libc::getxattr(
                    c.as_ptr(),
                    c"trusted.overlay.opaque".as_ptr(),
                    opaque.as_mut_ptr().cast(),
                    4,
                )
            };
            assert_eq!(&opaque[..n as usize], b"y");
            assert!(!image.layers[1].join("data/.wh..wh..opq").exists());
            assert_eq!(image.config.entrypoint, vec!["/bin/sh"]);
            assert_eq!(image.config.cmd, vec!["-c", "echo hi"]);
            assert_eq!(image.config.working_dir.as_deref(), Some("/srv"));
            assert_eq!(image.config.user.as_deref(), Some("1000:1000"));
            assert!(image.digest.starts_with("sha256:"));
            // A second pull reuses the cache.
            let again = store
                .pull(&format!("oci:{}:v1", layout.display()).parse().unwrap())
                .unwrap();
            assert_eq!(again, image);
        }
    }

    #[test]
    fn pulls_a_zstd_layer() {
        if !is_root() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let layer = tar(&[Item::Dir("bin/"), Item::File("bin/tool", b"zstd tool")]);
        let compressed = ruzstd::encoding::compress_to_vec(
            &layer[..],
            ruzstd::encoding::CompressionLevel::Fastest,
        );
        let zstd_layout = layout(
            dir.path(),
            vec![("application/vnd.oci.image.layer.v1.tar+zstd", compressed)],
            false,
        );
        let image = ImageStore::new(dir.path().join("cache"))
            .pull(&format!("oci:{}:v1", zstd_layout.display()).parse().unwrap())
            .unwrap();
        assert_eq!(
            std::fs::read(image.layers[0].join("bin/tool")).unwrap(),
            b"zstd tool"
        );
        // Several frames (as zstd:chunked and pzstd write them), with a
        // skippable frame between: the whole layer.
        let dir = tempfile::tempdir().unwrap();
        let big = tar(&[
            Item::File("a", &[b'a'; 3000]),
            Item::File("b", b"second frame"),
        ]);
        let (first, second) = big.split_at(1536);
        let mut frames =
            ruzstd::encoding::compress_to_vec(first, ruzstd::encoding::CompressionLevel::Fastest);
        frames.extend_from_slice(&[0x50, 0x2A, 0x4D, 0x18, 3, 0, 0, 0, 1, 2, 3]);
        frames.extend(ruzstd::encoding::compress_to_vec(
            second,
            ruzstd::encoding::CompressionLevel::Fastest,
        ));
        let multi = layout(
            dir.path(),
            vec![(
                "application/vnd.oci.image.layer.v1.tar+zstd",
                frames.clone(),
            )],
            false,
        );
        let image = ImageStore::new(dir.path().join("cache"))
            .pull(&format!("oci:{}:v1", multi.display()).parse().unwrap())
            .unwrap();
        assert_eq!(
            std::fs::read(image.layers[0].join("b")).unwrap(),
            b"second frame"
        );
        // Bytes after the last frame that are no frame: refused.
        let dir = tempfile::tempdir().unwrap();
        frames.extend_from_slice(b"junk");
        let trailing = layout(
            dir.path(),
            vec![("application/vnd.oci.image.layer.v1.tar+zstd", frames)],
            false,
        );
        let err = ImageStore::new(dir.path().join("cache"))
            .pull(&format!("oci:{}:v1", trailing.display()).parse().unwrap())
            .unwrap_err();
        assert!(err.to_string().contains("zstd"), "{err}");
        // Not zstd at all, under the zstd media type: a clear error.
        let dir = tempfile::tempdir().unwrap();
        let plain = layout(
            dir.path(),
            vec![("application/vnd.oci.image.layer.v1.tar+zstd", layer)],
            false,
        );
        let err = ImageStore::new(dir.path().join("cache"))
            .pull(&format!("oci:{}:v1", plain.display()).parse().unwrap())
            .unwrap_err();
        assert!(err.to_string().contains("zstd"), "{err}");
    }

    #[test]
    fn unknown_tag_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let layout = layout(dir.path(), vec![], false);
        let err = ImageStore::new(dir.path().join("c"))
            .pull(&format!("oci:{}:v2", layout.display()).parse().unwrap())
            .unwrap_err();
        assert!(matches!(err, ImageError::TagNotFound { .. }), "{err}");
    }

    #[test]
    fn corrupted_layer_is_rejected_and_not_cached() {
        let dir = tempfile::tempdir().unwrap();
        let layer = tar(&[Item::File("a", b"a")]);
        let layout = layout(
            dir.path(),
            vec![("application/vnd.oci.image.layer.v1.tar", layer.clone())],
            false,
        );
        let hex = hex::encode(Sha256::digest(&layer));
        let mut corrupted = layer.clone();
        corrupted[512] = b'b';
        std::fs::write(layout.join("blobs/sha256").join(&hex), corrupted).unwrap();
        let cache = dir.path().join("cache");
        let err = ImageStore::new(&cache)
            .pull(&format!("oci:{}:v1", layout.display()).parse().unwrap())
            .unwrap_err();
        assert!(matches!(err, ImageError::DigestMismatch { .. }), "{err}");
        assert!(!cache.join("layers").join(&hex).exists());
        assert!(!cache.join("layers").join(format!(".tmp-{hex}")).exists());
    }

    #[test]
    fn corrupted_manifest_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let layout = layout(dir.path(), vec![], false);
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
        let digest = index["manifests"][0]["digest"]
            .as_str()
            .unwrap()
            .trim_start_matches("sha256:")
            .to_string();
        let path = layout.join("blobs/sha256").join(digest);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.push(b' ');
        std::fs::write(&path, bytes).unwrap();
        let err = ImageStore::new(dir.path().join("c"))
            .pull(&format!("oci:{}:v1", layout.display()).parse().unwrap())
            .unwrap_err();
        assert!(matches!(err, ImageError::DigestMismatch { .. }), "{err}");
    }

    #[test]
    fn path_traversal_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let layer = tar(&[Item::File("../../escaped", b"x")]);
        let layout = layout(
            dir.path(),
            vec![("application/vnd.oci.image.layer.v1.tar", layer)],
            false,
        );
        let err = ImageStore::new(dir.path().join("cache"))
            .pull(&format!("oci:{}:v1", layout.display()).parse().unwrap())
            .unwrap_err();
        assert!(matches!(err, ImageError::PathTraversal { .. }), "{err}");
        assert!(!dir.path().join("escaped").exists());
    }

    #[test]
    fn concurrent_pulls_unpack_once() {
        let dir = tempfile::tempdir().unwrap();
        let layer = tar(&[Item::File("a", b"a")]);
        let layout = layout(
            dir.path(),
            vec![("application/vnd.oci.image.layer.v1.tar", layer)],
            false,
        );
        let reference: ImageRef = format!("oci:{}:v1", layout.display()).parse().unwrap();
        let store = ImageStore::new(dir.path().join("cache"));
        let images: Vec<Image> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| s.spawn(|| store.pull(&reference).unwrap()))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(images.windows(2).all(|w| w[0] == w[1]));
        assert_eq!(std::fs::read(images[0].layers[0].join("a")).unwrap(), b"a");
    }
}
