//! Hostile images: layers written to break out of the layer cache.
//!
//! Each test builds an OCI layout whose layer does something a real attacker
//! would try (a symlink to a host directory followed by a whiteout or a file
//! through it, hard links out, `..`, device nodes, a decompression bomb, a
//! blob that is not what its digest says), pulls it as the agent does, and
//! checks two things: the pull is refused or the entry neutralised with a
//! clear reason, and a canary directory outside the cache is unchanged.

mod common;

use std::ffi::CString;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use drover_agent::image::{ImageError, ImageLimits, ImageStore};
use sha2::{Digest, Sha256};

/// One raw tar entry; names and link targets are written byte for byte so
/// that the archive can say anything an attacker's could.
enum E<'a> {
    File(&'a str, &'a [u8]),
    Mode(&'a str, u32),
    Dir(&'a str),
    Symlink(&'a str, &'a str),
    Hardlink(&'a str, &'a str),
    Device(&'a str, tar::EntryType, u32, u32),
    /// A pax `x` header giving the next entry extra records.
    Pax(&'a [(&'a str, &'a str)]),
}

fn header(name: &str, kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_size(size);
    h
}

fn tar(entries: &[E]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let (mut h, data): (tar::Header, Vec<u8>) = match e {
            E::File(n, d) => (
                header(n, tar::EntryType::Regular, 0o644, d.len() as u64),
                d.to_vec(),
            ),
            E::Mode(n, m) => (header(n, tar::EntryType::Regular, *m, 1), b"x".to_vec()),
            E::Dir(n) => (header(n, tar::EntryType::Directory, 0o755, 0), vec![]),
            E::Symlink(n, t) | E::Hardlink(n, t) => {
                let kind = if matches!(e, E::Symlink(..)) {
                    tar::EntryType::Symlink
                } else {
                    tar::EntryType::Link
                };
                let mut h = header(n, kind, 0o777, 0);
                h.as_old_mut().linkname[..t.len()].copy_from_slice(t.as_bytes());
                (h, vec![])
            }
            E::Device(n, kind, major, minor) => {
                let mut h = header(n, *kind, 0o666, 0);
                h.set_device_major(*major).unwrap();
                h.set_device_minor(*minor).unwrap();
                (h, vec![])
            }
            E::Pax(records) => {
                let mut data = Vec::new();
                for (k, v) in *records {
                    let body = format!(" {k}={v}\n");
                    let mut len = body.len() + 1;
                    if (len.to_string() + &body).len() != len {
                        len += 1;
                    }
                    data.extend_from_slice(format!("{len}{body}").as_bytes());
                }
                (
                    header("pax", tar::EntryType::XHeader, 0o644, data.len() as u64),
                    data,
                )
            }
        };
        h.set_cksum();
        b.append(&h, &data[..]).unwrap();
    }
    b.into_inner().unwrap()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn put_blob(layout: &Path, media_type: &str, bytes: &[u8]) -> serde_json::Value {
    let hex = hex::encode(Sha256::digest(bytes));
    let dir = layout.join("blobs/sha256");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(&hex), bytes).unwrap();
    serde_json::json!({"mediaType": media_type, "digest": format!("sha256:{hex}"), "size": bytes.len()})
}

/// A layout tagged `v1` with these layers (media type, bytes).
fn layout(dir: &Path, layers: &[(&str, Vec<u8>)]) -> PathBuf {
    let layout = dir.join("layout");
    std::fs::create_dir_all(&layout).unwrap();
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let descs: Vec<_> = layers
        .iter()
        .map(|(mt, b)| put_blob(&layout, mt, b))
        .collect();
    let config = serde_json::json!({"architecture": "amd64", "os": "linux", "config": {},
        "rootfs": {"type": "layers", "diff_ids": []}});
    let config = put_blob(
        &layout,
        "application/vnd.oci.image.config.v1+json",
        config.to_string().as_bytes(),
    );
    let mt = "application/vnd.oci.image.manifest.v1+json";
    let manifest =
        serde_json::json!({"schemaVersion": 2, "mediaType": mt, "config": config, "layers": descs});
    let mut top = put_blob(&layout, mt, manifest.to_string().as_bytes());
    top["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": "v1"});
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [top]});
    std::fs::write(layout.join("index.json"), index.to_string()).unwrap();
    layout
}

const TAR: &str = "application/vnd.oci.image.layer.v1.tar";
const TGZ: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// A host directory an attacker aims at, with one file in it; `check`
/// asserts that nothing in it changed.
struct Canary {
    dir: tempfile::TempDir,
}

impl Canary {
    fn new() -> Canary {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("secret"), b"keep").unwrap();
        Canary { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The canary path without its leading `/`, for relative link targets.
    fn rel(&self) -> String {
        self.path()
            .to_str()
            .unwrap()
            .trim_start_matches('/')
            .to_string()
    }

    fn check(&self) {
        let names: Vec<_> = std::fs::read_dir(self.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec!["secret"], "files appeared in the canary dir");
        let secret = self.path().join("secret");
        let meta = std::fs::symlink_metadata(&secret).unwrap();
        assert!(meta.file_type().is_file(), "secret was replaced");
        assert_eq!(meta.nlink(), 1, "secret was hard-linked");
        assert_eq!(std::fs::read(&secret).unwrap(), b"keep");
        let c = CString::new(self.path().as_os_str().as_bytes()).unwrap();
        let mut buf = [0u8; 8];
        // SAFETY: valid C strings and a buffer of the length passed.
        let n = unsafe {
            libc::getxattr(
                c.as_ptr(),
                c"trusted.overlay.opaque".as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        assert!(n < 0, "the canary dir was made opaque");
    }
}

fn pull(dir: &Path, layers: &[(&str, Vec<u8>)]) -> Result<drover_agent::image::Image, ImageError> {
    pull_limited(dir, layers, ImageLimits::default())
}

fn pull_limited(
    dir: &Path,
    layers: &[(&str, Vec<u8>)],
    limits: ImageLimits,
) -> Result<drover_agent::image::Image, ImageError> {
    let layout = layout(dir, layers);
    ImageStore::new(dir.join("cache"))
        .with_limits(limits)
        .pull(&format!("oci:{}:v1", layout.display()).parse().unwrap())
}

fn assert_refused(result: Result<drover_agent::image::Image, ImageError>, what: &str) -> String {
    let err = result.expect_err(what);
    assert!(
        matches!(
            err,
            ImageError::UnsafeEntry { .. } | ImageError::PathTraversal { .. }
        ),
        "{what}: {err}"
    );
    err.to_string()
}

#[test]
fn symlink_then_whiteout_cannot_delete_a_host_file() {
    if !common::can_run(&[common::root()]) {
        return;
    }
    let canary = Canary::new();
    let dir = tempfile::tempdir().unwrap();
    let target = canary.path().to_str().unwrap();
    let layer = tar(&[E::Symlink("a", target), E::File("a/.wh.secret", b"")]);
    let msg = assert_refused(pull(dir.path(), &[(TAR, layer)]), "symlink then whiteout");
    assert!(
        msg.contains("a/.wh.secret") && msg.contains("parent"),
        "{msg}"
    );
    canary.check();
}

#[test]
fn symlink_then_opaque_whiteout_cannot_mark_a_host_directory() {
    if !common::can_run(&[common::root()]) {
        return;
    }
    let canary = Canary::new();
    let dir = tempfile::tempdir().unwrap();
    let target = canary.path().to_str().unwrap();
    let layer = tar(&[E::Symlink("a", target), E::File("a/.wh..wh..opq", b"")]);
    assert_refused(
        pull(dir.path(), &[(TAR, layer)]),
        "symlink then opaque whiteout",
    );
    canary.check();
}

#[test]
fn symlink_then_file_cannot_write_a_host_file() {
    if !common::can_run(&[common::root()]) {
        return;
    }
    let canary = Canary::new();
    let dir = tempfile::tempdir().unwrap();
    let target = canary.path().to_str().unwrap();
    for (link, through) in [("a", "a/secret"), ("a", "a/new")] {
        let layer = tar(&[E::Symlink(link, target), E::File(through, b"pwned")]);
        assert_refused(pull(dir.path(), &[(TAR, layer)]), through);
        canary.check();
    }
}

#[test]
fn relative_symlink_chains_and_dotdot_targets_stay_inside() {
    if !common::can_run(&[common::root()]) {
        return;
    }
    let canary = Canary::new();
    let dir = tempfile::tempdir().unwrap();
    let up = format!("../../../../../../../../{}", canary.rel());
    let layer = tar(&[
        E::Symlink("b", "../../../../../../.."),
        E::Symlink("c", &format!("b/{}", canary.rel())),
        E::File("c/evil", b"x"),
    ]);
    assert_refused(pull(dir.path(), &[(TAR, layer)]), "symlink chain");
    canary.check();
    let layer = tar(&[E::Symlink("d", &up), E::File("d/secret", b"x")]);
    assert_refused(pull(dir.path(), &[(TAR, layer)]), "dotdot symlink");
    canary.check();
    // A chain that stays inside the layer is followed inside it.
    let layer = tar(&[
        E::Dir("real/"),
        E::Symlink("b", "../../.."),
        E::Symlink("c", "b/real"),
        E::File("c/ok", b"fine"),
        E::Symlink("abs", "/bin/busybox"),
    ]);
    let image = pull(dir.path(), &[(TAR, layer)]).unwrap();
    let root = &image.layers[0];
    assert_eq!(std::fs::read(root.join("real/ok")).unwrap(), b"fine");
    // Symlinks themselves are kept as written, for the container to resolve.
    assert_eq!(
        std::fs::read_link(root.join("abs")).unwrap(),
        Path::new("/bin/busybox")
    );
    canary.check();
}

#[test]
fn hard_links_cannot_reach_outside_the_layer() {
    if !common::can_run(&[common::root()]) {
        return;
    }
    let canary = Canary::new();
    let dir = tempfile::tempdir().unwrap();
    let secret = format!("{}/secret", canary.path().display());
    let dotdot = format!("../../../../../../../../{}/secret", canary.rel());
    for target in [secret.as_str(), dotdot.as_str()] {
        let layer = tar(&[E::Hardlink("h", target)]);
        assert_refused(pull(dir.path(), &[(TAR, layer)]), target);
        canary.check();
    }
    // Through a symlink to the host directory: the symlink is inside the
    // layer, so the link resolves to `<layer><canary>/secret`, which is not there.
    let layer = tar(&[
        E::Symlink("a", canary.path().to_str().unwrap()),
        E::Hardlink("h", "a/secret"),
    ]);
    assert_refused(pull(dir.path(), &[(TAR, layer)]), "hard link via symlink");
    canary.check();
    // An ordinary hard link inside the layer works.
    let layer = tar(&[E::File("one", b"1"), E::Hardlink("two", "one")]);
    let image = pull(dir.path(), &[(TAR, layer)]).unwrap();
    assert_eq!(
        std::fs::metadata(image.layers[0].join("two"))
            .unwrap()
            .nlink(),
        2
    );
}

#[test]
fn dotdot_entry_paths_are_refused() {
    if !common::can_run(&[common::root()]) {
        return;
    }
    let canary = Canary::new();
    let dir = tempfile::tempdir().unwrap();
    let path = format!("../../../../../../../../{}/secret", canary.rel());
    let layer = tar(&[E::File(&path, b"pwned")]);
    let err = pull(dir.path(), &[(TAR, layer)]).unwrap_err();
    assert!(matches!(err, ImageError::PathTraversal { .. }), "{err}");
    canary.check();
}

#[test]
fn device_nodes_are_not_created_but_whiteouts_are() {
    if !common::can_run(&[common::root()]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let layer = tar(&[
        E::Dir("dev/"),
        E::Device("dev/sda", tar::EntryType::Block, 8, 0),
        E::Device("dev/mem", tar::EntryType::Char, 1, 1),
        E::Device("gone", tar::EntryType::Char, 0, 0),
    ]);
    let image = pull(dir.path(), &[(TAR, layer)]).unwrap();
    let root = &image.layers[0];
    assert!(!root.join("dev/sda").exists(), "block device created");
    assert!(!root.join("dev/mem").exists(), "char device created");
    let gone = std::fs::symlink_metadata(root.join("gone")).unwrap();
    assert!(gone.file_type().is_char_device() && gone.rdev() == 0);
}

#[test]
fn setuid_bits_are_kept_inside_a_private_cache() {
    if !common::can_run(&[common::root()]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let layer = tar(&[E::Mode("su", 0o4755), E::Mode("wall", 0o2755)]);
    let image = pull(dir.path(), &[(TAR, layer)]).unwrap();
    let mode = |p: &str| std::fs::metadata(image.layers[0].join(p)).unwrap().mode() & 0o7777;
    assert_eq!(mode("su"), 0o4755);
    assert_eq!(mode("wall"), 0o2755);
    // Other host users cannot reach them: the cache is root's alone.
    for private in [dir.path().join("cache"), dir.path().join("cache/layers")] {
        let m = std::fs::metadata(&private).unwrap().permissions().mode() & 0o777;
        assert_eq!(m, 0o700, "{} is {m:o}", private.display());
    }
}

#[test]
fn layer_xattrs_cannot_forge_overlay_metadata() {
    if !common::can_run(&[common::root()]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let layer = tar(&[
        E::Pax(&[
            ("SCHILY.xattr.trusted.overlay.opaque", "y"),
            ("SCHILY.xattr.user.note", "kept"),
        ]),
        E::Dir("d/"),
    ]);
    let image = pull(dir.path(), &[(TAR, layer)]).unwrap();
    let d = CString::new(image.layers[0].join("d").as_os_str().as_bytes()).unwrap();
    let get = |name: &std::ffi::CStr| {
        let mut buf = [0u8; 16];
        // SAFETY: valid C strings and a buffer of the length passed.
        let n = unsafe { libc::getxattr(d.as_ptr(), name.as_ptr(), buf.as_mut_ptr().cast(), 16) };
        (n >= 0).then(|| buf[..n as usize].to_vec())
    };
    assert_eq!(get(c"trusted.overlay.opaque"), None);
    assert_eq!(get(c"user.note"), Some(b"kept".to_vec()));
}

#[test]
fn decompression_bombs_stop_at_the_size_limit() {
    if !common::can_run(&[common::root()]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let zeros = vec![0u8; 64 << 20];
    let bomb = gzip(&tar(&[E::File("zeros", &zeros)]));
    assert!(bomb.len() < 1 << 20, "the bomb is small compressed");
    let limits = ImageLimits {
        max_layer_bytes: 16 << 20,
        max_image_bytes: 1 << 30,
    };
    let err = pull_limited(dir.path(), &[(TGZ, bomb)], limits).unwrap_err();
    assert!(matches!(err, ImageError::TooLarge { .. }), "{err}");
    assert!(err.to_string().contains("--max-layer-size"), "{err}");
    let layers = dir.path().join("cache/layers");
    let left: Vec<_> = std::fs::read_dir(&layers)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".lock"))
        .collect();
    assert!(left.is_empty(), "partial layer left in the cache: {left:?}");

    // The image budget spans layers: two 6 MiB layers do not fit in 10 MiB.
    let six = vec![1u8; 6 << 20];
    let one = gzip(&tar(&[E::File("a", &six)]));
    let two = gzip(&tar(&[E::File("b", &six)]));
    let limits = ImageLimits {
        max_layer_bytes: 8 << 20,
        max_image_bytes: 10 << 20,
    };
    let dir = tempfile::tempdir().unwrap();
    let err = pull_limited(dir.path(), &[(TGZ, one), (TGZ, two)], limits).unwrap_err();
    assert!(matches!(err, ImageError::TooLarge { .. }), "{err}");
}

#[test]
fn a_blob_that_is_not_its_digest_is_refused_before_unpacking() {
    if !common::can_run(&[common::root()]) {
        return;
    }
    let canary = Canary::new();
    let dir = tempfile::tempdir().unwrap();
    let honest = tar(&[E::File("a", b"a")]);
    let layout = layout(dir.path(), &[(TAR, honest.clone())]);
    // Swap in an attack under the honest layer's digest.
    let hex = hex::encode(Sha256::digest(&honest));
    let attack = tar(&[
        E::Symlink("a", canary.path().to_str().unwrap()),
        E::File("a/.wh.secret", b""),
    ]);
    std::fs::write(layout.join("blobs/sha256").join(&hex), attack).unwrap();
    let err = ImageStore::new(dir.path().join("cache"))
        .pull(&format!("oci:{}:v1", layout.display()).parse().unwrap())
        .unwrap_err();
    assert!(matches!(err, ImageError::DigestMismatch { .. }), "{err}");
    assert!(!dir.path().join("cache/layers").join(&hex).exists());
    canary.check();
}
