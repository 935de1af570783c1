//! The overlayfs rootfs of a bundle.
//!
//! overlayfs takes all its directories in one option string, which the
//! kernel limits to a page. Images with many layers in a deep cache path
//! overflow it, so each layer is reached through a short symlink
//! `<bundle>/l/<n>` (overlayfs follows symlinks when it resolves lowerdir).
//!
//! For a container in a user namespace, `<bundle>/l/<n>` is instead a
//! read-only idmapped mount of the layer (`open_tree` + `mount_setattr`
//! with `MOUNT_ATTR_IDMAP`): files the cache holds as host root are seen as
//! the container's root, without copying or chowning the shared layers.
//! The upper directory belongs to the container's root on the host, so what
//! it writes is its own there too.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use nix::mount::{mount as sys_mount, umount2, MntFlags, MsFlags};

use super::{BundleError, IdRange};

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

/// Creates the link farm (or idmapped layer mounts), upper/work dirs, and
/// mounts `<bundle>/rootfs`.
pub(crate) fn mount(
    bundle: &Path,
    layers: &[PathBuf],
    idmap: Option<IdRange>,
) -> Result<(), BundleError> {
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
    let userns = idmap.map(user_namespace).transpose()?;
    for (i, layer) in layers.iter().enumerate() {
        let link = links.join(i.to_string());
        let _ = std::fs::remove_file(&link);
        let target = std::fs::canonicalize(layer).map_err(BundleError::io("resolve", layer))?;
        match &userns {
            Some(ns) => {
                // The link says which layer is in use (image gc reads it).
                let marker = links.join(format!("{i}.layer"));
                let _ = std::fs::remove_file(&marker);
                symlink(&target, &marker).map_err(BundleError::io("symlink", &marker))?;
                std::fs::create_dir_all(&link).map_err(BundleError::io("create", &link))?;
                idmapped_mount(&target, &link, ns)?;
            }
            None => symlink(&target, &link).map_err(BundleError::io("symlink", &link))?,
        }
    }
    if let Some(r) = idmap {
        let upper = bundle.join("upper");
        std::os::unix::fs::chown(&upper, Some(r.start), Some(r.start))
            .map_err(BundleError::io("chown", &upper))?;
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

/// Unmounts the idmapped layer mounts under `<bundle>/l` (a no-op for
/// symlinks), so that removing the bundle cannot reach into the layers.
pub(crate) fn unmount_layers(bundle: &Path) -> Result<(), BundleError> {
    let links = bundle.join("l");
    let Ok(entries) = std::fs::read_dir(&links) else {
        return Ok(());
    };
    for e in entries.flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            unmount(&e.path())?;
        }
    }
    Ok(())
}

/// A user namespace with `range` mapped (uids and gids), held by an fd: a
/// child is cloned into a new one, its maps are written, its namespace is
/// opened, and it is killed. (It waits in `pause`, not on a pipe: it holds a
/// copy of every fd of the agent, other starts' pipes among them, so no
/// end-of-file could be relied on.)
fn user_namespace(range: IdRange) -> Result<OwnedFd, BundleError> {
    let io = |op: &'static str| {
        move |e: std::io::Error| BundleError::Io {
            op,
            path: PathBuf::from("/proc/self/ns/user"),
            source: e,
        }
    };
    // SAFETY: a fork-like clone (no new stack, no CLONE_VM); the child only
    // makes raw `pause` calls until it is killed, which is safe after a fork
    // of a threaded process.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (libc::CLONE_NEWUSER | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    if pid == 0 {
        loop {
            // SAFETY: pause takes no arguments; the parent SIGKILLs us.
            unsafe { libc::syscall(libc::SYS_pause) };
        }
    }
    if pid < 0 {
        return Err(io("clone a user namespace")(std::io::Error::last_os_error()));
    }
    let pid = pid as i32;
    let result = (|| {
        let map = format!("0 {} {}\n", range.start, range.size);
        for file in ["uid_map", "gid_map"] {
            std::fs::write(format!("/proc/{pid}/{file}"), &map).map_err(io("write id map"))?;
        }
        let ns = std::fs::File::open(format!("/proc/{pid}/ns/user")).map_err(io("open"))?;
        Ok(OwnedFd::from(ns))
    })();
    let child = nix::unistd::Pid::from_raw(pid);
    let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
    let _ = nix::sys::wait::waitpid(child, None);
    result
}

/// Mounts a read-only clone of `source` at `target`, its ids seen through
/// `userns`.
fn idmapped_mount(source: &Path, target: &Path, userns: &OwnedFd) -> Result<(), BundleError> {
    const OPEN_TREE_CLONE: libc::c_uint = 1;
    const MOUNT_ATTR_RDONLY: u64 = 0x1;
    const MOUNT_ATTR_IDMAP: u64 = 0x10_0000;
    const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
    #[repr(C)]
    struct MountAttr {
        attr_set: u64,
        attr_clr: u64,
        propagation: u64,
        userns_fd: u64,
    }
    let cpath = |p: &Path| {
        std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).map_err(|_| {
            BundleError::UnsafeOverlayPath {
                path: p.to_path_buf(),
            }
        })
    };
    let (src, dst) = (cpath(source)?, cpath(target)?);
    let fail = |op: &'static str, path: &Path| BundleError::Io {
        op,
        path: path.to_path_buf(),
        source: std::io::Error::last_os_error(),
    };
    // SAFETY: raw mount-API syscalls on NUL-terminated paths we own, a
    // `repr(C)` mount_attr passed with its size, and fds we own.
    unsafe {
        let tree = libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            src.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint,
        );
        if tree < 0 {
            return Err(fail("clone the mount of layer", source));
        }
        let tree = OwnedFd::from_raw_fd(tree as i32);
        let attr = MountAttr {
            attr_set: MOUNT_ATTR_IDMAP | MOUNT_ATTR_RDONLY,
            attr_clr: 0,
            propagation: 0,
            userns_fd: userns.as_raw_fd() as u64,
        };
        if libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        ) < 0
        {
            return Err(fail("idmap the mount of layer", source));
        }
        if libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            dst.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        ) < 0
        {
            return Err(fail("mount the idmapped layer on", target));
        }
    }
    Ok(())
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
