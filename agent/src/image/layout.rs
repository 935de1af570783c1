//! Resolving a tag in an OCI image layout to a verified manifest, config and
//! layer list. Only small JSON blobs are read here; layers are verified while
//! they are unpacked (see `unpack`).

use std::io::Read;
use std::path::{Path, PathBuf};

use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest, MediaType};
use sha2::{Digest as _, Sha256};

use super::{ImageConfig, ImageError};

const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Compression {
    None,
    Gzip,
    Zstd,
}

/// A layer to unpack: its sha256 hex digest, size and compression.
#[derive(Debug, Clone)]
pub(crate) struct LayerBlob {
    pub hex: String,
    pub size: u64,
    pub compression: Compression,
}

#[derive(Debug)]
pub(crate) struct Resolved {
    pub manifest_digest: String,
    pub config: ImageConfig,
    pub layers: Vec<LayerBlob>,
}

pub(crate) fn resolve(layout: &Path, tag: Option<&String>) -> Result<Resolved, ImageError> {
    let layout = &layout.to_path_buf();
    let index_path = layout.join("index.json");
    let index_bytes = std::fs::read(&index_path).map_err(ImageError::io(&index_path))?;
    let index = ImageIndex::from_reader(&index_bytes[..]).map_err(|source| ImageError::Parse {
        path: index_path.clone(),
        source,
    })?;

    let tagged: Vec<&Descriptor> = index
        .manifests()
        .iter()
        .filter(|d| match tag {
            Some(tag) => d.annotations().as_ref().and_then(|a| a.get(REF_NAME)) == Some(tag),
            None => true,
        })
        .collect();
    let descriptor = match (tagged.as_slice(), tag) {
        ([one], _) => *one,
        (_, tag) => {
            return Err(ImageError::TagNotFound {
                layout: layout.clone(),
                tag: tag.cloned().unwrap_or_else(|| "<the only manifest>".into()),
            })
        }
    };

    let manifest_desc = if *descriptor.media_type() == MediaType::ImageIndex {
        pick_platform(layout, descriptor)?
    } else {
        descriptor.clone()
    };
    let (manifest_bytes, manifest_path) = read_verified(layout, &manifest_desc)?;
    let manifest =
        ImageManifest::from_reader(&manifest_bytes[..]).map_err(|source| ImageError::Parse {
            path: manifest_path,
            source,
        })?;

    let (config_bytes, config_path) = read_verified(layout, manifest.config())?;
    let config =
        ImageConfiguration::from_reader(&config_bytes[..]).map_err(|source| ImageError::Parse {
            path: config_path,
            source,
        })?;

    let layers = manifest
        .layers()
        .iter()
        .map(|d| {
            Ok(LayerBlob {
                hex: sha256_hex(d)?.to_string(),
                size: d.size(),
                compression: compression(d.media_type())?,
            })
        })
        .collect::<Result<Vec<_>, ImageError>>()?;

    Ok(Resolved {
        manifest_digest: manifest_desc.digest().to_string(),
        config: image_config(&config),
        layers,
    })
}

/// This machine's platform as image indexes name it: the OCI architecture
/// and, where it matters, its variant.
pub fn node_platform() -> (&'static str, Option<&'static str>) {
    match std::env::consts::ARCH {
        "x86_64" => ("amd64", None),
        "aarch64" => ("arm64", Some("v8")),
        "arm" => ("arm", Some("v7")),
        "x86" => ("386", None),
        "powerpc64" if cfg!(target_endian = "little") => ("ppc64le", None),
        "powerpc64" => ("ppc64", None),
        "riscv64" => ("riscv64", None),
        "s390x" => ("s390x", None),
        "loongarch64" => ("loong64", None),
        other => (other, None),
    }
}

/// Of an index's manifests, given as (os, architecture, variant), the one
/// for linux on `platform`: its variant first, then one naming none, then
/// any other variant of the architecture.
pub(crate) fn best_platform(
    manifests: &[(Option<String>, Option<String>, Option<String>)],
    platform: (&str, Option<&str>),
) -> Option<usize> {
    let (arch, variant) = platform;
    let of_arch = |i: &usize| {
        let (os, a, _) = &manifests[*i];
        os.as_deref() == Some("linux") && a.as_deref() == Some(arch)
    };
    let all = || (0..manifests.len()).filter(of_arch);
    all()
        .find(|i| variant.is_some() && manifests[*i].2.as_deref() == variant)
        .or_else(|| all().find(|i| manifests[*i].2.is_none()))
        .or_else(|| all().next())
}

/// Follows a nested image index to this machine's manifest.
fn pick_platform(layout: &Path, index_desc: &Descriptor) -> Result<Descriptor, ImageError> {
    let (bytes, path) = read_verified(layout, index_desc)?;
    let index =
        ImageIndex::from_reader(&bytes[..]).map_err(|source| ImageError::Parse { path, source })?;
    let platforms: Vec<_> = index
        .manifests()
        .iter()
        .map(|d| match d.platform() {
            Some(p) => (
                Some(p.os().to_string()),
                Some(p.architecture().to_string()),
                p.variant().clone(),
            ),
            None => (None, None, None),
        })
        .collect();
    best_platform(&platforms, node_platform())
        .map(|i| index.manifests()[i].clone())
        .ok_or_else(|| ImageError::NoPlatformManifest {
            platform: format!("linux/{}", node_platform().0),
            digest: index_desc.digest().to_string(),
        })
}

pub(crate) fn image_config(config: &ImageConfiguration) -> ImageConfig {
    let Some(c) = config.config() else {
        return ImageConfig::default();
    };
    ImageConfig {
        entrypoint: c.entrypoint().clone().unwrap_or_default(),
        cmd: c.cmd().clone().unwrap_or_default(),
        env: c.env().clone().unwrap_or_default(),
        working_dir: c.working_dir().clone().filter(|w| !w.is_empty()),
        user: c.user().clone().filter(|u| !u.is_empty()),
    }
}

pub(crate) fn compression(media_type: &MediaType) -> Result<Compression, ImageError> {
    match media_type.to_string().as_str() {
        "application/vnd.oci.image.layer.v1.tar"
        | "application/vnd.docker.image.rootfs.diff.tar" => Ok(Compression::None),
        "application/vnd.oci.image.layer.v1.tar+gzip"
        | "application/vnd.docker.image.rootfs.diff.tar.gzip" => Ok(Compression::Gzip),
        "application/vnd.oci.image.layer.v1.tar+zstd" => Ok(Compression::Zstd),
        other => Err(ImageError::UnsupportedMediaType {
            media_type: other.to_string(),
        }),
    }
}

/// The hex part of a descriptor's digest; only sha256 is accepted.
pub(crate) fn sha256_hex(d: &Descriptor) -> Result<&str, ImageError> {
    let digest = d.digest();
    let hex = digest.digest();
    let ok = digest.algorithm().to_string() == "sha256"
        && hex.len() == 64
        && hex
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase());
    if ok {
        Ok(hex)
    } else {
        Err(ImageError::UnsupportedDigest {
            digest: digest.to_string(),
        })
    }
}

pub(crate) fn blob_path(layout: &Path, hex: &str) -> PathBuf {
    layout.join("blobs").join("sha256").join(hex)
}

/// Reads a (small) blob and checks its size and sha256 against `d`.
fn read_verified(layout: &Path, d: &Descriptor) -> Result<(Vec<u8>, PathBuf), ImageError> {
    let hex = sha256_hex(d)?;
    let path = blob_path(layout, hex);
    let bytes = std::fs::read(&path).map_err(ImageError::io(&path))?;
    check(
        &path,
        hex,
        d.size(),
        bytes.len() as u64,
        &Sha256::digest(&bytes),
    )?;
    Ok((bytes, path))
}

/// How a fetched blob differs from what its descriptor promised.
pub(crate) enum Mismatch {
    Digest { expected: String, actual: String },
    Size { expected: u64, actual: u64 },
}

/// Compares a blob's sha256 and size with its descriptor's (digest first).
pub(crate) fn mismatch(
    expected_hex: &str,
    expected_size: u64,
    actual_size: u64,
    actual: &[u8],
) -> Option<Mismatch> {
    let actual_hex = hex::encode(actual);
    if actual_hex != expected_hex {
        return Some(Mismatch::Digest {
            expected: expected_hex.to_string(),
            actual: actual_hex,
        });
    }
    (actual_size != expected_size).then_some(Mismatch::Size {
        expected: expected_size,
        actual: actual_size,
    })
}

pub(crate) fn check(
    path: &Path,
    expected_hex: &str,
    expected_size: u64,
    actual_size: u64,
    actual: &[u8],
) -> Result<(), ImageError> {
    let path = path.to_path_buf();
    match mismatch(expected_hex, expected_size, actual_size, actual) {
        None => Ok(()),
        Some(Mismatch::Digest { expected, actual }) => Err(ImageError::DigestMismatch {
            path,
            expected,
            actual,
        }),
        Some(Mismatch::Size { expected, actual }) => Err(ImageError::SizeMismatch {
            path,
            expected,
            actual,
        }),
    }
}

/// A reader that hashes and counts everything read through it.
pub(crate) struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    /// Drains the rest of the input (tar readers stop at the end-of-archive
    /// marker, before any padding) and returns the size and digest.
    pub fn finish(mut self) -> std::io::Result<(u64, Vec<u8>)> {
        std::io::copy(&mut self, &mut std::io::sink())?;
        Ok((self.count, self.hasher.finalize().to_vec()))
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}
