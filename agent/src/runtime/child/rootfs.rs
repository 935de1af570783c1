//! The container's root, built in the child before it becomes the process:
//! private mounts; in a user namespace, detached proc/sysfs and clones of
//! the host's device nodes made while the host's tree is still in view;
//! detached clones of the bind mounts' sources; the rootfs bound onto
//! itself; `pivot_root` into it and the old root detached; /proc, /dev,
//! /sys... mounted and the binds attached inside the new root (so image
//! symlinks resolve inside it, never on the host); device nodes; masked and
//! read-only paths; a read-only root; hostname; loopback.

use libc::{c_char, c_int};

use super::sys;
use super::{check, check_long, Failure, Stage};
use crate::runtime::plan::{Detached, LaunchPlan, MountPlan};

const DEVICES: [(&std::ffi::CStr, u32, u32); 6] = [
    (c"/dev/null", 1, 3),
    (c"/dev/zero", 1, 5),
    (c"/dev/full", 1, 7),
    (c"/dev/random", 1, 8),
    (c"/dev/urandom", 1, 9),
    (c"/dev/tty", 5, 0),
];

const DEV_LINKS: [(&std::ffi::CStr, &std::ffi::CStr); 5] = [
    (c"pts/ptmx", c"/dev/ptmx"),
    (c"/proc/self/fd", c"/dev/fd"),
    (c"/proc/self/fd/0", c"/dev/stdin"),
    (c"/proc/self/fd/1", c"/dev/stdout"),
    (c"/proc/self/fd/2", c"/dev/stderr"),
];

/// The most proc/sysfs mounts a user-namespaced container may have.
const MAX_DETACHED: usize = 8;

/// The most bind mounts a container may have (checked by the plan).
pub(crate) const MAX_BINDS: usize = 64;

/// Builds the root per `p` and leaves the child in it, at `/`.
pub(super) fn build(p: &LaunchPlan) -> Result<(), Failure> {
    check(
        sys::mount(None, c"/", None, libc::MS_REC | libc::MS_PRIVATE, None),
        Stage::MakePrivate,
        0,
    )?;
    // In a user namespace: what can only be reached or made while the
    // host's tree is still in view (see `prepare_userns`).
    let userns = p.clone_flags & libc::CLONE_NEWUSER as u64 != 0;
    let mut detached = [-1 as c_int; MAX_DETACHED];
    let mut dev_fds = [-1 as c_int; DEVICES.len()];
    if userns {
        prepare_userns(p, &mut detached, &mut dev_fds)?;
    }
    let mut binds = [-1 as c_int; MAX_BINDS];
    clone_binds(p, &mut binds)?;
    check(
        sys::mount(
            Some(&p.rootfs),
            &p.rootfs,
            None,
            libc::MS_BIND | libc::MS_REC,
            None,
        ),
        Stage::BindRootfs,
        0,
    )?;
    // pivot_root(".", ".") stacks the old root on top of the new one; the
    // detach-unmount then removes it, leaving the new root at "/".
    check(sys::chdir(&p.rootfs), Stage::PivotRoot, 0)?;
    check_long(sys::pivot_root(c".", c"."), Stage::PivotRoot, 1)?;
    check(sys::umount_detach(c"."), Stage::PivotRoot, 2)?;
    check(sys::chdir(c"/"), Stage::PivotRoot, 3)?;
    mounts(p, &detached, &binds)?;
    if p.populate_dev {
        if userns {
            bind_devices(&dev_fds)?;
        } else {
            make_devices()?;
        }
    }
    for d in &p.cwd_mkdirs {
        // Errors surface as a failed chdir later, with a clearer stage.
        sys::mkdir(d, 0o755);
    }
    for (i, path) in p.masked_paths.iter().enumerate() {
        mask_path(path, i as u32)?;
    }
    for (i, path) in p.readonly_paths.iter().enumerate() {
        readonly_path(path, i as u32)?;
    }
    if p.readonly_root {
        let flags = libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY;
        check(
            sys::mount(None, c"/", None, flags, None),
            Stage::ReadonlyRoot,
            0,
        )?;
    }
    if let Some(h) = &p.hostname {
        check(sys::sethostname(h), Stage::Hostname, 0)?;
    }
    if p.loopback_up {
        loopback_up()?;
    }
    Ok(())
}

/// Detached clones of the bind mounts' sources, taken while the host's tree
/// is in view. Nothing is mounted yet: a destination is only ever resolved
/// inside the new root (an image's symlink cannot point a bind at the host).
fn clone_binds(p: &LaunchPlan, fds: &mut [c_int; MAX_BINDS]) -> Result<(), Failure> {
    for (i, m) in p.binds.iter().enumerate() {
        let slot = fds
            .get_mut(i)
            .ok_or((Stage::BindMount, i as u32, libc::E2BIG))?;
        let fd = sys::open_tree_clone(&m.source, m.flags & libc::MS_REC != 0);
        check_long(fd, Stage::BindMount, i as u32)?;
        *slot = fd as c_int;
    }
    Ok(())
}

/// The spec's mounts inside the new root, in the spec's order: other
/// filesystems (detached ones, made by `prepare_userns`, attached by their
/// slot) and the binds cloned by `clone_binds`.
fn mounts(
    p: &LaunchPlan,
    detached: &[c_int; MAX_DETACHED],
    binds: &[c_int; MAX_BINDS],
) -> Result<(), Failure> {
    let (mut i, mut j) = (0, 0);
    while i < p.mounts.len() || j < p.binds.len() {
        let bind_next = match (p.mounts.get(i), p.binds.get(j)) {
            (Some(m), Some(b)) => b.order < m.order,
            (None, Some(_)) => true,
            _ => false,
        };
        if bind_next {
            attach_bind(&p.binds[j], binds[j], j as u32)?;
            j += 1;
        } else {
            mount_one(&p.mounts[i], detached, i)?;
            i += 1;
        }
    }
    Ok(())
}

fn mount_one(m: &MountPlan, detached: &[c_int; MAX_DETACHED], i: usize) -> Result<(), Failure> {
    for d in &m.mkdirs {
        mkdir(d, i as u32)?;
    }
    if m.detached.is_some() {
        let fd = detached.get(i).copied().unwrap_or(-1);
        check_long(
            sys::move_mount(fd, &m.target, false),
            Stage::Mount,
            i as u32,
        )?;
        // SAFETY: `prepare_userns` opened it for this mount alone.
        unsafe { sys::close(fd) };
        return Ok(());
    }
    check(
        sys::mount(
            Some(&m.source),
            &m.target,
            Some(&m.fstype),
            m.flags,
            m.data.as_deref(),
        ),
        Stage::Mount,
        i as u32,
    )
}

/// Attaches a cloned bind at its destination inside the new root: missing
/// directories are made; a directory's mount point may be an image's
/// symlink (followed, inside the root); a file's is made a plain empty file
/// (anything else there, a symlink or a FIFO, is replaced: opening a FIFO
/// would block). The flags it asks for are added to those of its source.
fn attach_bind(m: &MountPlan, fd: c_int, index: u32) -> Result<(), Failure> {
    // The last of `mkdirs` is the mount point itself.
    for d in &m.mkdirs[..m.mkdirs.len().saturating_sub(1)] {
        mkdir(d, index)?;
    }
    let dir = sys::is_dir_fd(fd);
    if dir {
        mkdir(&m.target, index)?;
    } else {
        match sys::lstat_mode(&m.target) {
            Some(mode) if mode & libc::S_IFMT == libc::S_IFREG => {}
            Some(_) => check(sys::unlink(&m.target), Stage::Mkdir, index)?,
            None => {}
        }
        let f = sys::make_file(&m.target);
        if f == -1 && sys::errno() != libc::EEXIST {
            return Err((Stage::Mkdir, index, sys::errno()));
        }
        if f >= 0 {
            // SAFETY: opened above, only to make the file.
            unsafe { sys::close(f) };
        }
    }
    check_long(sys::move_mount(fd, &m.target, dir), Stage::BindMount, index)?;
    // SAFETY: `clone_binds` opened it for this bind alone.
    unsafe { sys::close(fd) };
    let asked = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC | libc::MS_RDONLY;
    if m.flags & asked != 0 {
        let flags = libc::MS_BIND | (m.flags & asked);
        check(remount_adding(&m.target, flags), Stage::BindMount, index)?;
    }
    Ok(())
}

/// Remounts the mount at `path` with `flags` (MS_BIND and the MS_* flags
/// to set) added to the flags it has: a remount sets all of them at once,
/// and in a user namespace the ones its source has are locked (as runc
/// does).
fn remount_adding(path: &std::ffi::CStr, flags: libc::c_ulong) -> c_int {
    let mut flags = flags | libc::MS_REMOUNT;
    if let Some(st_flags) = sys::statvfs_flags(path) {
        for (st_flag, ms_flag) in [
            (libc::ST_RDONLY, libc::MS_RDONLY),
            (libc::ST_NOSUID, libc::MS_NOSUID),
            (libc::ST_NODEV, libc::MS_NODEV),
            (libc::ST_NOEXEC, libc::MS_NOEXEC),
            (libc::ST_NOATIME, libc::MS_NOATIME),
            (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
            (libc::ST_RELATIME, libc::MS_RELATIME),
        ] {
            if st_flags & st_flag != 0 {
                flags |= ms_flag;
            }
        }
    }
    sys::mount(None, path, None, flags, None)
}

/// Hides `path`: /dev/null over a file, an empty read-only tmpfs over a directory.
fn mask_path(path: &std::ffi::CStr, index: u32) -> Result<(), Failure> {
    if sys::mount(Some(c"/dev/null"), path, None, libc::MS_BIND, None) == 0 {
        return Ok(());
    }
    match sys::errno() {
        libc::ENOENT => Ok(()),
        libc::ENOTDIR => check(
            sys::mount(Some(c"tmpfs"), path, Some(c"tmpfs"), libc::MS_RDONLY, None),
            Stage::MaskPath,
            index,
        ),
        e => Err((Stage::MaskPath, index, e)),
    }
}

fn readonly_path(path: &std::ffi::CStr, index: u32) -> Result<(), Failure> {
    let bind = libc::MS_BIND | libc::MS_REC;
    if sys::mount(Some(path), path, None, bind, None) == -1 {
        return if sys::errno() == libc::ENOENT {
            Ok(())
        } else {
            Err((Stage::ReadonlyPath, index, sys::errno()))
        };
    }
    // Keeping the flags the mount already has (nosuid, nodev, noexec on
    // /proc), as runc does.
    check(
        remount_adding(path, libc::MS_BIND | libc::MS_RDONLY | libc::MS_REC),
        Stage::ReadonlyPath,
        index,
    )
}

fn mkdir(path: &std::ffi::CStr, index: u32) -> Result<(), Failure> {
    if sys::mkdir(path, 0o755) == -1 && sys::errno() != libc::EEXIST {
        return Err((Stage::Mkdir, index, sys::errno()));
    }
    Ok(())
}

fn make_devices() -> Result<(), Failure> {
    let old = sys::umask(0);
    for (i, (path, major, minor)) in DEVICES.iter().enumerate() {
        if sys::mknod_char(path, 0o666, *major, *minor) == -1 && sys::errno() != libc::EEXIST {
            return Err((Stage::Devices, i as u32, sys::errno()));
        }
    }
    sys::umask(old);
    dev_links()
}

fn dev_links() -> Result<(), Failure> {
    for (target, link) in DEV_LINKS {
        if sys::symlink(target, link) == -1 && sys::errno() != libc::EEXIST {
            return Err((Stage::Devices, 100, sys::errno()));
        }
    }
    Ok(())
}

/// Before `pivot_root`, for a container in a user namespace: makes its proc
/// and sysfs mounts, detached (`fsopen`/`fsmount`; the kernel refuses them
/// once no full proc/sysfs of the host is in view), and clones binds of the
/// host's device nodes, which a user namespace may not `mknod`.
/// Slots are by mount index; the fds are close-on-exec.
fn prepare_userns(
    p: &LaunchPlan,
    detached: &mut [c_int; MAX_DETACHED],
    dev_fds: &mut [c_int; DEVICES.len()],
) -> Result<(), Failure> {
    for (i, m) in p.mounts.iter().enumerate() {
        let Some(Detached { attrs, options }) = &m.detached else {
            continue;
        };
        if i >= MAX_DETACHED {
            return Err((Stage::Mount, i as u32, libc::E2BIG));
        }
        let fs = sys::fsopen(&m.fstype);
        check_long(fs, Stage::Mount, i as u32)?;
        let fs = fs as c_int;
        for (key, value) in options {
            check_long(
                sys::fsconfig_set(fs, key, value.as_deref()),
                Stage::Mount,
                i as u32,
            )?;
        }
        check_long(sys::fsconfig_create(fs), Stage::Mount, i as u32)?;
        let mnt = sys::fsmount(fs, *attrs);
        // SAFETY: opened above, used for this mount alone.
        unsafe { sys::close(fs) };
        check_long(mnt, Stage::Mount, i as u32)?;
        detached[i] = mnt as c_int;
    }
    if p.populate_dev {
        // Detached clones of the host's nodes: binds from the old root
        // would fail once it is unmounted.
        for (i, (path, _, _)) in DEVICES.iter().enumerate() {
            let fd = sys::open_tree_clone(path, false);
            check_long(fd, Stage::Devices, i as u32)?;
            dev_fds[i] = fd as c_int;
        }
    }
    Ok(())
}

/// In a user namespace: binds the host's device nodes (cloned before
/// `pivot_root`) onto empty files in the new `/dev`, as runc does.
fn bind_devices(fds: &[c_int; DEVICES.len()]) -> Result<(), Failure> {
    for (i, ((path, _, _), fd)) in DEVICES.iter().zip(fds).enumerate() {
        let f = sys::create_file(path);
        check(f, Stage::Devices, i as u32)?;
        // SAFETY: opened above, only to make the file.
        unsafe { sys::close(f) };
        check_long(sys::move_mount(*fd, path, false), Stage::Devices, i as u32)?;
        // SAFETY: `prepare_userns` opened it for this device alone.
        unsafe { sys::close(*fd) };
    }
    dev_links()
}

fn loopback_up() -> Result<(), Failure> {
    // SAFETY: integer arguments only.
    let sock = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    check(sock, Stage::Loopback, 0)?;
    // SAFETY: ifreq is plain data; all zeroes is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    ifr.ifr_name[0] = b'l' as c_char;
    ifr.ifr_name[1] = b'o' as c_char;
    // SAFETY: SIOCGIFFLAGS fills in the flags of the interface `ifr` names.
    let got = unsafe { libc::ioctl(sock, libc::SIOCGIFFLAGS, &mut ifr) };
    let res = check(got, Stage::Loopback, 1).and_then(|()| {
        // SAFETY: SIOCGIFFLAGS just set the flags member of the union.
        unsafe { ifr.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short };
        // SAFETY: SIOCSIFFLAGS reads the name and flags of `ifr`.
        let set = unsafe { libc::ioctl(sock, libc::SIOCSIFFLAGS, &ifr as *const libc::ifreq) };
        check(set, Stage::Loopback, 2)
    });
    // SAFETY: opened above for these two ioctls.
    unsafe { sys::close(sock) };
    res
}
