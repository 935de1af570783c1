//! The syscalls the child makes, one narrow `unsafe` each.
//!
//! Each wrapper takes arguments whose types carry the call's safety
//! (NUL-terminated `CStr`s, references to plain data, slices with their
//! lengths) and returns the raw result: -1 (or a negative `c_long`) with
//! `errno` set on failure. None allocates or takes a lock: the child runs in
//! a copy of a multi-threaded parent in which only its thread survives (see
//! the parent module). Raw syscalls replace glibc's wrappers where those
//! would synchronise with the parent's vanished threads (the id calls).

use libc::{c_char, c_int, c_long, c_uint, c_ulong};
use std::ffi::CStr;
use std::os::fd::RawFd;

pub(super) fn errno() -> c_int {
    // SAFETY: __errno_location always returns a valid pointer to this
    // thread's errno.
    unsafe { *libc::__errno_location() }
}

fn ptr(s: Option<&CStr>) -> *const c_char {
    s.map_or(std::ptr::null(), CStr::as_ptr)
}

pub(super) fn mount(
    source: Option<&CStr>,
    target: &CStr,
    fstype: Option<&CStr>,
    flags: c_ulong,
    data: Option<&CStr>,
) -> c_int {
    // SAFETY: each pointer is null (which mount(2) allows for all but the
    // target) or a NUL-terminated string that outlives the call.
    unsafe {
        libc::mount(
            ptr(source),
            target.as_ptr(),
            ptr(fstype),
            flags,
            ptr(data).cast(),
        )
    }
}

pub(super) fn umount_detach(target: &CStr) -> c_int {
    // SAFETY: a NUL-terminated path.
    unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) }
}

pub(super) fn chdir(path: &CStr) -> c_int {
    // SAFETY: a NUL-terminated path.
    unsafe { libc::chdir(path.as_ptr()) }
}

pub(super) fn pivot_root(new_root: &CStr, put_old: &CStr) -> c_long {
    // SAFETY: two NUL-terminated paths.
    unsafe { libc::syscall(libc::SYS_pivot_root, new_root.as_ptr(), put_old.as_ptr()) }
}

pub(super) fn mkdir(path: &CStr, mode: libc::mode_t) -> c_int {
    // SAFETY: a NUL-terminated path.
    unsafe { libc::mkdir(path.as_ptr(), mode) }
}

pub(super) fn umask(mask: libc::mode_t) -> libc::mode_t {
    // SAFETY: integer argument only.
    unsafe { libc::umask(mask) }
}

pub(super) fn mknod_char(path: &CStr, mode: libc::mode_t, major: u32, minor: u32) -> c_int {
    // SAFETY: a NUL-terminated path and integers.
    unsafe {
        libc::mknod(
            path.as_ptr(),
            libc::S_IFCHR | mode,
            libc::makedev(major, minor),
        )
    }
}

pub(super) fn symlink(target: &CStr, link: &CStr) -> c_int {
    // SAFETY: two NUL-terminated paths.
    unsafe { libc::symlink(target.as_ptr(), link.as_ptr()) }
}

/// Creates (or opens) an empty file to bind a device node onto.
pub(super) fn create_file(path: &CStr) -> c_int {
    // SAFETY: a NUL-terminated path and integer flags; O_CREAT takes the mode.
    unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC,
            0o666,
        )
    }
}

/// # Safety
/// `fd` must be one the caller opened and owns: nothing (no `OwnedFd` or
/// `File` of the parent's copy) may use it afterwards.
pub(super) unsafe fn close(fd: c_int) {
    // SAFETY: the caller owns `fd`.
    unsafe { libc::close(fd) };
}

const MOVE_MOUNT_F_EMPTY_PATH: c_uint = 0x4;
const MOVE_MOUNT_T_SYMLINKS: c_uint = 0x10;

/// Attaches the detached mount `fd` at `target` (a symlink there followed
/// when `follow`).
pub(super) fn move_mount(fd: c_int, target: &CStr, follow: bool) -> c_long {
    let flags = MOVE_MOUNT_F_EMPTY_PATH | if follow { MOVE_MOUNT_T_SYMLINKS } else { 0 };
    // SAFETY: an fd, an empty and a NUL-terminated path.
    unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            fd,
            c"".as_ptr(),
            libc::AT_FDCWD,
            target.as_ptr(),
            flags,
        )
    }
}

const FSOPEN_CLOEXEC: c_uint = 1;
const FSCONFIG_SET_FLAG: c_uint = 0;
const FSCONFIG_SET_STRING: c_uint = 1;
const FSCONFIG_CMD_CREATE: c_uint = 6;
const FSMOUNT_CLOEXEC: c_uint = 1;
const OPEN_TREE_CLONE: c_uint = 1;

pub(super) fn fsopen(fstype: &CStr) -> c_long {
    // SAFETY: a NUL-terminated filesystem name.
    unsafe { libc::syscall(libc::SYS_fsopen, fstype.as_ptr(), FSOPEN_CLOEXEC) }
}

/// Sets option `key` of a filesystem context: to `value`, or as a flag.
pub(super) fn fsconfig_set(fs: c_int, key: &CStr, value: Option<&CStr>) -> c_long {
    let cmd = if value.is_some() {
        FSCONFIG_SET_STRING
    } else {
        FSCONFIG_SET_FLAG
    };
    // SAFETY: an fd, a NUL-terminated key, and a NUL-terminated value or null.
    unsafe { libc::syscall(libc::SYS_fsconfig, fs, cmd, key.as_ptr(), ptr(value), 0) }
}

pub(super) fn fsconfig_create(fs: c_int) -> c_long {
    // SAFETY: an fd; the command takes no key or value.
    unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs,
            FSCONFIG_CMD_CREATE,
            std::ptr::null::<c_char>(),
            std::ptr::null::<c_char>(),
            0,
        )
    }
}

pub(super) fn fsmount(fs: c_int, attrs: u64) -> c_long {
    // SAFETY: integer arguments only.
    unsafe { libc::syscall(libc::SYS_fsmount, fs, FSMOUNT_CLOEXEC, attrs) }
}

/// A detached clone of the mount tree at `path` (the whole tree under it
/// when `recursive`), for a bind.
pub(super) fn open_tree_clone(path: &CStr, recursive: bool) -> c_long {
    let recursive = if recursive {
        libc::AT_RECURSIVE as c_uint
    } else {
        0
    };
    // SAFETY: a NUL-terminated path and integer flags.
    unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            path.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as c_uint | recursive,
        )
    }
}

/// Whether `fd` is a directory.
pub(super) fn is_dir_fd(fd: c_int) -> bool {
    // SAFETY: stat is plain data; all zeroes is a valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: an fd and a struct the kernel fills in.
    let rc = unsafe { libc::fstat(fd, &mut st) };
    rc == 0 && st.st_mode & libc::S_IFMT == libc::S_IFDIR
}

/// The mode of `path` itself (not what a symlink there points to).
pub(super) fn lstat_mode(path: &CStr) -> Option<libc::mode_t> {
    // SAFETY: stat is plain data; all zeroes is a valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a struct the kernel fills in.
    let rc = unsafe { libc::lstat(path.as_ptr(), &mut st) };
    (rc == 0).then_some(st.st_mode)
}

/// Makes an empty regular file at `path` (EEXIST if something is there),
/// never following a symlink or blocking on a FIFO.
pub(super) fn make_file(path: &CStr) -> c_int {
    let flags = libc::O_CREAT
        | libc::O_EXCL
        | libc::O_NOFOLLOW
        | libc::O_NONBLOCK
        | libc::O_RDONLY
        | libc::O_CLOEXEC;
    // SAFETY: a NUL-terminated path and integer flags; O_CREAT takes the mode.
    unsafe { libc::open(path.as_ptr(), flags, 0o644) }
}

pub(super) fn unlink(path: &CStr) -> c_int {
    // SAFETY: a NUL-terminated path.
    unsafe { libc::unlink(path.as_ptr()) }
}

pub(super) fn sethostname(name: &CStr) -> c_int {
    // SAFETY: the pointer and length of one string.
    unsafe { libc::sethostname(name.as_ptr(), name.to_bytes().len()) }
}

/// The mount flags (`ST_*`) of the filesystem at `path`.
pub(super) fn statvfs_flags(path: &CStr) -> Option<c_ulong> {
    // SAFETY: statvfs is plain data; all zeroes is a valid value.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a struct the kernel fills in.
    let rc = unsafe { libc::statvfs(path.as_ptr(), &mut st) };
    (rc == 0).then_some(st.f_flag)
}

/// The device and inode of `path`.
pub(super) fn dev_ino(path: &CStr) -> Option<(u64, u64)> {
    // SAFETY: stat is plain data; all zeroes is a valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a struct the kernel fills in.
    let rc = unsafe { libc::stat(path.as_ptr(), &mut st) };
    (rc == 0).then_some((st.st_dev, st.st_ino))
}

/// The kernel's `getcwd` into `buf` (glibc's would allocate on some answers).
pub(super) fn getcwd(buf: &mut [u8]) -> c_long {
    // SAFETY: the kernel writes at most `buf.len()` bytes into `buf`.
    unsafe { libc::syscall(libc::SYS_getcwd, buf.as_mut_ptr(), buf.len()) }
}

pub(super) fn setrlimit(resource: libc::__rlimit_resource_t, limit: &libc::rlimit) -> c_int {
    // SAFETY: a reference to plain data.
    unsafe { libc::setrlimit(resource, limit) }
}

pub(super) fn setgroups(gids: &[libc::gid_t]) -> c_long {
    // SAFETY: the length and pointer of one slice.
    unsafe { libc::syscall(libc::SYS_setgroups, gids.len(), gids.as_ptr()) }
}

pub(super) fn setresgid(gid: libc::gid_t) -> c_long {
    // SAFETY: integer arguments only.
    unsafe { libc::syscall(libc::SYS_setresgid, gid, gid, gid) }
}

pub(super) fn setresuid(uid: libc::uid_t) -> c_long {
    // SAFETY: integer arguments only.
    unsafe { libc::syscall(libc::SYS_setresuid, uid, uid, uid) }
}

pub(super) fn setsid() -> c_int {
    // SAFETY: no arguments.
    unsafe { libc::setsid() }
}

/// prctl with integer arguments only (never an option that takes a pointer).
fn prctl_int(option: c_int, arg2: c_ulong, arg3: c_ulong) -> c_int {
    // SAFETY: every argument is an integer, and the callers below pass only
    // options that read no memory through them.
    unsafe { libc::prctl(option, arg2, arg3, 0 as c_ulong, 0 as c_ulong) }
}

pub(super) fn set_no_new_privs() -> c_int {
    prctl_int(libc::PR_SET_NO_NEW_PRIVS, 1, 0)
}

pub(super) fn set_not_dumpable() -> c_int {
    prctl_int(libc::PR_SET_DUMPABLE, 0, 0)
}

/// Keep permitted capabilities across the switch away from uid 0.
pub(super) fn set_keepcaps() -> c_int {
    prctl_int(libc::PR_SET_KEEPCAPS, 1, 0)
}

pub(super) fn capbset_drop(cap: c_int) -> c_int {
    prctl_int(libc::PR_CAPBSET_DROP, cap as c_ulong, 0)
}

pub(super) fn ambient_raise(cap: c_int) -> c_int {
    prctl_int(
        libc::PR_CAP_AMBIENT,
        libc::PR_CAP_AMBIENT_RAISE as c_ulong,
        cap as c_ulong,
    )
}

/// Version 3 of the capget/capset ABI: two 32-bit words per set.
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: c_int,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub(super) struct CapData {
    pub effective: u32,
    pub permitted: u32,
    pub inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// Sets this process's capability sets (words 0 and 1 of each).
pub(super) fn capset(data: &[CapData; 2]) -> c_long {
    let header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    // SAFETY: header and data are repr(C) values in the layout capset
    // expects for version 3 (two data words).
    unsafe { libc::syscall(libc::SYS_capset, &header as *const CapHeader, data.as_ptr()) }
}

/// Installs a seccomp filter on this process (needs no_new_privs or
/// CAP_SYS_ADMIN).
pub(super) fn install_seccomp(filter: &[crate::runtime::seccomp::Insn]) -> c_int {
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: `Insn` is repr(C) with the layout of `struct sock_filter`;
    // `prog` points at `filter` with its length; the kernel copies the
    // program and never writes through the pointer.
    unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER as c_ulong,
            &prog as *const libc::sock_fprog as c_ulong,
            0 as c_ulong,
            0 as c_ulong,
        )
    }
}

/// # Safety
/// Whatever `to` was is replaced: nothing may use the old `to` afterwards.
pub(super) unsafe fn dup2(from: RawFd, to: RawFd) -> c_int {
    // SAFETY: the caller gives up the old `to`.
    unsafe { libc::dup2(from, to) }
}

/// # Safety
/// Nothing may use an fd in `first..=last` afterwards.
pub(super) unsafe fn close_range(first: c_uint, last: c_uint) -> c_int {
    // SAFETY: the caller gives up every fd in the range.
    unsafe { libc::close_range(first, last, 0) }
}

pub(super) fn setns(fd: RawFd, nstype: c_int) -> c_int {
    // SAFETY: integer arguments only.
    unsafe { libc::setns(fd, nstype) }
}

/// Makes the terminal on `fd` this session's controlling terminal.
pub(super) fn set_controlling_tty(fd: RawFd) -> c_int {
    // SAFETY: TIOCSCTTY takes an integer argument.
    unsafe { libc::ioctl(fd, libc::TIOCSCTTY, 0 as c_ulong) }
}

/// Reads one byte: 1, 0 at EOF, or -1.
pub(super) fn read_byte(fd: RawFd) -> (isize, u8) {
    let mut byte = 0u8;
    // SAFETY: reads at most one byte into a local.
    let n = unsafe { libc::read(fd, (&mut byte as *mut u8).cast(), 1) };
    (n, byte)
}

pub(super) fn write(fd: RawFd, buf: &[u8]) -> isize {
    // SAFETY: the pointer and length of one slice.
    unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) }
}

/// Ends the process at once: no destructors or atexit handlers of the
/// parent's copy run.
pub(super) fn exit(code: c_int) -> ! {
    // SAFETY: _exit takes an integer and never returns.
    unsafe { libc::_exit(code) }
}

/// Unblocks every signal and sets every catchable one to its default
/// (dispositions set to SIG_IGN, as Rust sets SIGPIPE, would survive exec).
pub(super) fn reset_signals() -> c_int {
    // SAFETY: sigset_t is plain data; all zeroes is a valid value.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: the calls read and write only the local set.
    let rc = unsafe {
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut())
    };
    if rc == -1 {
        return rc;
    }
    for sig in 1..libc::SIGRTMIN() {
        if sig != libc::SIGKILL && sig != libc::SIGSTOP {
            // SAFETY: SIG_DFL is not a handler; nothing runs on our behalf.
            unsafe { libc::signal(sig, libc::SIG_DFL) };
        }
    }
    0
}

fn all_signals() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigfillset fills the local.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut set);
        set
    }
}

/// Blocks every signal (SIGKILL and SIGSTOP cannot be).
pub(super) fn block_all_signals() -> c_int {
    let set = all_signals();
    // SAFETY: reads the local set.
    unsafe { libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) }
}

pub(super) fn unblock_all_signals() -> c_int {
    let set = all_signals();
    // SAFETY: reads the local set.
    unsafe { libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut()) }
}

/// Waits for any (blocked) signal and returns its number, or -1.
pub(super) fn wait_for_signal() -> c_int {
    let set = all_signals();
    // SAFETY: reads the local set; no siginfo or timeout is passed. The
    // kernel's sigset is 8 bytes (glibc's sigset_t is larger).
    unsafe {
        libc::syscall(
            libc::SYS_rt_sigtimedwait,
            &set as *const libc::sigset_t,
            std::ptr::null_mut::<libc::siginfo_t>(),
            std::ptr::null::<libc::timespec>(),
            8usize,
        ) as c_int
    }
}

/// Reaps one exited child, if any has exited: its pid and wait status.
pub(super) fn reap_any() -> Option<(libc::pid_t, c_int)> {
    let mut status: c_int = 0;
    // SAFETY: waitpid writes the status into a local.
    let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
    (pid > 0).then_some((pid, status))
}

pub(super) fn kill(pid: libc::pid_t, sig: c_int) -> c_int {
    // SAFETY: integer arguments only.
    unsafe { libc::kill(pid, sig) }
}

/// A fork-like clone: 0 in the child, its pid in the parent, -1.
///
/// # Safety
/// As for any fork: the child must keep to what a forked child of a
/// multi-threaded process may do (this module's calls).
pub(super) unsafe fn fork() -> c_long {
    // SAFETY: no CLONE_VM and no stack: the child gets a copy of this
    // address space; the caller keeps to its promise.
    unsafe { libc::syscall(libc::SYS_clone, libc::SIGCHLD as c_ulong, 0, 0, 0, 0) }
}

/// Replaces this process with `path`; returns only on failure.
///
/// # Safety
/// `argv` and `envp` must be null-terminated arrays of pointers to
/// NUL-terminated strings that live until the call (as `plan::ptr_array`
/// makes them).
pub(super) unsafe fn execve(path: &CStr, argv: &[*const c_char], envp: &[*const c_char]) -> c_int {
    // SAFETY: the caller's promise on argv and envp; path is NUL-terminated.
    unsafe { libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr()) }
}
