//! The overlayfs rootfs of a bundle.
//!
//! overlayfs takes all its directories in one option string, which the
//! kernel limits to a page. Images with many layers in a deep cache path
//! overflow it, so each layer is reached through a short symlink
//! `<bundle>/l/<n>` (overlayfs follows symlinks when it resolves lowerdir).

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use nix::mount::{mount as sys_mount, umount2, MntFlags, MsFlags};

use super::BundleError;

/// The kernel copies mount data into a single page.
const MAX_OPTIONS: usize = 4095;

/// Builds the overlay option string; `layers` are bottom first, overlayfs
/// wants the top layer first.
pub(crate) fn options(bundle: &Path, layer_count: usize) -> Result<String, BundleError> {
    let s = bundle.to_string_lossy();
    if s.contains(',') || s.contains(':') {
        return Err(BundleError::UnsafeOverlayPath {
            path: bundle.to_path_buf(),
        });
    }
    let lower: Vec<String> = if layer_count == 0 {
        vec![format!("{s}/empty")]
    } else {
        (0..layer_count)
            .rev()
            .map(|i| format!("{s}/l/{i}"))
            .collect()
    };
    let opts = format!(
        "lowerdir={},upperdir={s}/upper,workdir={s}/work",
        lower.join(":")
    );
    if opts.len() > MAX_OPTIONS {
        return Err(BundleError::OverlayOptionsTooLong {
            path: bundle.to_path_buf(),
            len: opts.len(),
            max: MAX_OPTIONS,
        });
    }
    Ok(opts)
}

/// Creates the link farm, upper/work dirs, and mounts `<bundle>/rootfs`.
pub(crate) fn mount(bundle: &Path, layers: &[PathBuf]) -> Result<(), BundleError> {
    let opts = options(bundle, layers.len())?;
    let links = bundle.join("l");
    for dir in [
        &links,
        &bundle.join("upper"),
        &bundle.join("work"),
        &bundle.join("rootfs"),
    ] {
        std::fs::create_dir_all(dir).map_err(BundleError::io("create", dir))?;
    }
    if layers.is_empty() {
        let empty = bundle.join("empty");
        std::fs::create_dir_all(&empty).map_err(BundleError::io("create", &empty))?;
    }
    for (i, layer) in layers.iter().enumerate() {
        let link = links.join(i.to_string());
        let _ = std::fs::remove_file(&link);
        let target = std::fs::canonicalize(layer).map_err(BundleError::io("resolve", layer))?;
        symlink(&target, &link).map_err(BundleError::io("symlink", &link))?;
    }
    let rootfs = bundle.join("rootfs");
    sys_mount(
        Some("overlay"),
        &rootfs,
        Some("overlay"),
        MsFlags::empty(),
        Some(opts.as_str()),
    )
    .map_err(|e| BundleError::Io {
        op: "mount overlay on",
        path: rootfs,
        source: e.into(),
    })
}

/// Detaches every mount stacked on the rootfs; fine if nothing is mounted
/// or the path does not exist. Removing the directory while something is
/// still mounted there would delete through the mount.
pub(crate) fn unmount(rootfs: &Path) -> Result<(), BundleError> {
    loop {
        match umount2(rootfs, MntFlags::MNT_DETACH) {
            Ok(()) => continue,
            Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => return Ok(()),
            Err(e) => {
                return Err(BundleError::Io {
                    op: "unmount",
                    path: rootfs.to_path_buf(),
                    source: e.into(),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_list_top_layer_first_through_short_links() {
        let o = options(Path::new("/b/c1"), 3).unwrap();
        assert_eq!(
            o,
            "lowerdir=/b/c1/l/2:/b/c1/l/1:/b/c1/l/0,upperdir=/b/c1/upper,workdir=/b/c1/work"
        );
        assert_eq!(
            options(Path::new("/b"), 0).unwrap(),
            "lowerdir=/b/empty,upperdir=/b/upper,workdir=/b/work"
        );
    }

    #[test]
    fn options_reject_separators_and_overflow() {
        assert!(matches!(
            options(Path::new("/b:x"), 1),
            Err(BundleError::UnsafeOverlayPath { .. })
        ));
        let deep = PathBuf::from(format!("/{}", "d".repeat(200)));
        assert!(matches!(
            options(&deep, 30),
            Err(BundleError::OverlayOptionsTooLong { .. })
        ));
    }
}
