//! The container's first process, between `clone` and `execve`.
//!
//! This code runs in a copy of a multi-threaded parent in which only the
//! cloning thread survives. Any lock another thread held at that moment (the
//! allocator's, stdio's, glibc's thread list) stays locked forever, so the
//! child calls only plain syscall wrappers on data the parent prepared, and
//! uses raw `setresuid`/`setresgid`/`setgroups` syscalls because glibc's
//! wrappers would try to signal the parent's (now absent) threads.
//!
//! Sequence: reset signals; wait until the parent has put us in our cgroup
//! (and, with a user namespace, written our id maps: then become the
//! namespace's root); start a session of our own (so no terminal of whoever started the
//! runtime is the container's: its `/dev/tty` would open that terminal, and
//! TIOCSTI type into it); make all mounts private; in a user namespace, make
//! proc and sysfs detached and clone the host's device nodes, while the
//! host's tree is still in view; bind the rootfs onto itself; bind mounts;
//! `pivot_root` into it and detach the old root; mount /proc, /dev, /sys...
//! inside the new root (so image symlinks resolve inside it, not on the
//! host); create device nodes (bind the cloned ones in a user namespace); hostname; loopback; rlimits; credentials;
//! stdio; close every other fd; cwd, checked to lie inside the new root;
//! seccomp filter; exec. A failure is written to the error pipe as (stage,
//! index, errno) and the child exits 127.
//!
//! The fds are closed *before* the `chdir`, not merely marked close-on-exec:
//! until exec the child holds a copy of every fd of the agent, and a
//! `process.cwd` of `/proc/self/fd/N` would otherwise make a host directory
//! the container's working directory (CVE-2024-21626 in runc). The check
//! after `chdir` catches any other way out: the kernel's `getcwd` must name
//! a path from the new root, and that path must lead to the same directory.

use std::os::fd::RawFd;

use libc::{c_char, c_int, c_ulong};

use super::plan::LaunchPlan;

/// Setup steps, as reported over the error pipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub(crate) enum Stage {
    Signals = 1,
    WaitParent,
    MakePrivate,
    BindRootfs,
    BindMount,
    PivotRoot,
    Mkdir,
    Mount,
    Devices,
    ReadonlyRoot,
    Hostname,
    Loopback,
    MaskPath,
    ReadonlyPath,
    Rlimit,
    Capabilities,
    Groups,
    Gid,
    Uid,
    NoNewPrivileges,
    Chdir,
    CwdOutsideRoot,
    Stdio,
    CloseFds,
    Seccomp,
    JoinNamespaces,
    Fork,
    Terminal,
    Session,
    Exec,
}

impl Stage {
    pub(crate) fn from_u32(v: u32) -> Option<Stage> {
        use Stage::*;
        const ALL: [Stage; 30] = [
            Signals,
            WaitParent,
            MakePrivate,
            BindRootfs,
            BindMount,
            PivotRoot,
            Mkdir,
            Mount,
            Devices,
            ReadonlyRoot,
            Hostname,
            Loopback,
            MaskPath,
            ReadonlyPath,
            Rlimit,
            Capabilities,
            Groups,
            Gid,
            Uid,
            NoNewPrivileges,
            Chdir,
            CwdOutsideRoot,
            Stdio,
            CloseFds,
            Seccomp,
            JoinNamespaces,
            Fork,
            Terminal,
            Session,
            Exec,
        ];
        ALL.into_iter().find(|s| *s as u32 == v)
    }

    pub(crate) fn describe(self) -> &'static str {
        use Stage::*;
        match self {
            Signals => "reset signals",
            WaitParent => "wait for parent",
            MakePrivate => "make mounts private",
            BindRootfs => "bind rootfs",
            BindMount => "bind mount",
            PivotRoot => "pivot_root",
            Mkdir => "create mount point",
            Mount => "mount",
            Devices => "create device nodes",
            ReadonlyRoot => "remount root read-only",
            Hostname => "set hostname",
            Loopback => "bring up loopback",
            MaskPath => "mask path",
            ReadonlyPath => "make path read-only",
            Rlimit => "set rlimit",
            Capabilities => "set capabilities",
            Groups => "setgroups",
            Gid => "setresgid",
            Uid => "setresuid",
            NoNewPrivileges => "set no_new_privs",
            Chdir => "chdir to cwd",
            CwdOutsideRoot => "check cwd is inside the root",
            Stdio => "set up stdio",
            CloseFds => "close inherited fds",
            Seccomp => "install seccomp filter",
            JoinNamespaces => "join the container's namespaces",
            Fork => "fork into the pid namespace",
            Terminal => "set up the terminal",
            Session => "start a session",
            Exec => "exec",
        }
    }
}

/// A failed step: stage, index (of the mount or exec candidate) and errno.
pub(crate) type Failure = (Stage, u32, c_int);

/// What the child reads, all prepared by the parent before `clone`.
pub(crate) struct ChildArgs<'a> {
    pub plan: &'a LaunchPlan,
    pub argv: &'a [*const c_char],
    pub envp: &'a [*const c_char],
    pub sync_fd: RawFd,
    pub error_fd: RawFd,
    pub stdin_fd: RawFd,
    pub stdout_fd: RawFd,
    pub stderr_fd: RawFd,
}

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

fn errno() -> c_int {
    // SAFETY: __errno_location always returns a valid pointer to this thread's errno.
    unsafe { *libc::__errno_location() }
}

fn check(rc: c_int, stage: Stage, index: u32) -> Result<(), Failure> {
    if rc == -1 {
        Err((stage, index, errno()))
    } else {
        Ok(())
    }
}

fn check_long(rc: libc::c_long, stage: Stage, index: u32) -> Result<(), Failure> {
    check(if rc == -1 { -1 } else { 0 }, stage, index)
}

/// Runs the child side and never returns: it either execs or exits 127.
///
/// # Safety
/// Must be called only in the child of a fork-like `clone`, with `args`
/// pointing at memory the parent prepared; it must not allocate.
pub(crate) unsafe fn run(args: &ChildArgs) -> ! {
    let failure = match setup(args) {
        Ok(never) => match never {},
        Err(f) => f,
    };
    // SAFETY: called in the cloned child, as `run` requires.
    unsafe { report_and_exit(args.error_fd, failure) }
}

fn setup(a: &ChildArgs) -> Result<std::convert::Infallible, Failure> {
    let p = a.plan;
    reset_signals()?;
    wait_for_parent(a.sync_fd)?;
    if p.clone_flags & libc::CLONE_NEWUSER as u64 != 0 {
        // Become the namespace's root: until then this process keeps the
        // host's root ids, which mean nothing in here (files it made would
        // have no owner). Capabilities in the namespace stay.
        // SAFETY: raw id syscalls, not glibc's wrappers (which would
        // synchronise with the agent's other threads, gone in this child);
        // the maps were written before release.
        unsafe {
            check_long(
                libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()),
                Stage::Groups,
                0,
            )?;
            check_long(libc::syscall(libc::SYS_setresgid, 0, 0, 0), Stage::Gid, 0)?;
            check_long(libc::syscall(libc::SYS_setresuid, 0, 0, 0), Stage::Uid, 0)?;
        }
    }
    // SAFETY: setsid takes no arguments.
    check(unsafe { libc::setsid() }, Stage::Session, 0)?;

    // SAFETY: every pointer passed below is either null where
    // the syscall allows it or points into a NUL-terminated CString / array
    // owned by the plan, which the clone copied and nobody frees before exec.
    unsafe {
        let null: *const c_char = std::ptr::null();
        check(
            libc::mount(
                null,
                c"/".as_ptr(),
                null,
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ),
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
        check(
            libc::mount(
                p.rootfs.as_ptr(),
                p.rootfs.as_ptr(),
                null,
                libc::MS_BIND | libc::MS_REC,
                std::ptr::null(),
            ),
            Stage::BindRootfs,
            0,
        )?;
        for (i, m) in p.binds.iter().enumerate() {
            for d in &m.mkdirs {
                mkdir(d.as_ptr(), i as u32)?;
            }
            let flags = m.flags & !libc::MS_RDONLY;
            check(
                libc::mount(
                    m.source.as_ptr(),
                    m.target.as_ptr(),
                    null,
                    flags,
                    std::ptr::null(),
                ),
                Stage::BindMount,
                i as u32,
            )?;
            if m.flags & libc::MS_RDONLY != 0 {
                let ro = libc::MS_REMOUNT
                    | libc::MS_BIND
                    | libc::MS_RDONLY
                    | (m.flags & (libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC));
                check(
                    libc::mount(null, m.target.as_ptr(), null, ro, std::ptr::null()),
                    Stage::BindMount,
                    i as u32,
                )?;
            }
        }
        // pivot_root(".", ".") stacks the old root on top of the new one; the
        // detach-unmount then removes it, leaving the new root at "/".
        check(libc::chdir(p.rootfs.as_ptr()), Stage::PivotRoot, 0)?;
        check_long(
            libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()),
            Stage::PivotRoot,
            1,
        )?;
        check(
            libc::umount2(c".".as_ptr(), libc::MNT_DETACH),
            Stage::PivotRoot,
            2,
        )?;
        check(libc::chdir(c"/".as_ptr()), Stage::PivotRoot, 3)?;

        for (i, m) in p.mounts.iter().enumerate() {
            for d in &m.mkdirs {
                mkdir(d.as_ptr(), i as u32)?;
            }
            if m.detached.is_some() {
                let fd = detached.get(i).copied().unwrap_or(-1);
                check_long(
                    libc::syscall(
                        libc::SYS_move_mount,
                        fd,
                        c"".as_ptr(),
                        libc::AT_FDCWD,
                        m.target.as_ptr(),
                        MOVE_MOUNT_F_EMPTY_PATH,
                    ),
                    Stage::Mount,
                    i as u32,
                )?;
                libc::close(fd);
                continue;
            }
            let data = m
                .data
                .as_ref()
                .map_or(std::ptr::null(), |d| d.as_ptr().cast());
            check(
                libc::mount(
                    m.source.as_ptr(),
                    m.target.as_ptr(),
                    m.fstype.as_ptr(),
                    m.flags,
                    data,
                ),
                Stage::Mount,
                i as u32,
            )?;
        }
        if p.populate_dev {
            if userns {
                bind_devices(&dev_fds)?;
            } else {
                make_devices()?;
            }
        }
        for d in &p.cwd_mkdirs {
            // Errors surface as a failed chdir below, with a clearer stage.
            libc::mkdir(d.as_ptr(), 0o755);
        }
        for (i, path) in p.masked_paths.iter().enumerate() {
            mask_path(path.as_ptr(), i as u32)?;
        }
        for (i, path) in p.readonly_paths.iter().enumerate() {
            readonly_path(path.as_ptr(), i as u32)?;
        }
        if p.readonly_root {
            let flags = libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY;
            check(
                libc::mount(null, c"/".as_ptr(), null, flags, std::ptr::null()),
                Stage::ReadonlyRoot,
                0,
            )?;
        }
        if let Some(h) = &p.hostname {
            check(
                libc::sethostname(h.as_ptr(), h.as_bytes().len()),
                Stage::Hostname,
                0,
            )?;
        }
        if p.loopback_up {
            loopback_up()?;
        }
    }
    become_process(a)
}

/// The common end of a container process and an exec'd one: rlimits,
/// credentials, capabilities, no_new_privs, cwd, stdio, fds, seccomp, exec.
fn become_process(a: &ChildArgs) -> Result<std::convert::Infallible, Failure> {
    let p = a.plan;
    // SAFETY: as in `setup`: pointers into the plan or our stack only.
    unsafe {
        for (i, (resource, limit)) in p.rlimits.iter().enumerate() {
            check(libc::setrlimit(*resource, limit), Stage::Rlimit, i as u32)?;
        }
        if let Some(caps) = &p.caps {
            drop_bounding(caps)?;
        }
        check_long(
            libc::syscall(
                libc::SYS_setgroups,
                p.additional_gids.len(),
                p.additional_gids.as_ptr(),
            ),
            Stage::Groups,
            0,
        )?;
        check_long(
            libc::syscall(libc::SYS_setresgid, p.gid, p.gid, p.gid),
            Stage::Gid,
            0,
        )?;
        check_long(
            libc::syscall(libc::SYS_setresuid, p.uid, p.uid, p.uid),
            Stage::Uid,
            0,
        )?;
        if let Some(caps) = &p.caps {
            set_capabilities(caps)?;
        }
        if p.no_new_privileges {
            check(
                libc::prctl(
                    libc::PR_SET_NO_NEW_PRIVS,
                    1 as c_ulong,
                    0 as c_ulong,
                    0 as c_ulong,
                    0 as c_ulong,
                ),
                Stage::NoNewPrivileges,
                0,
            )?;
        }
        for (i, (from, to)) in [(a.stdin_fd, 0), (a.stdout_fd, 1), (a.stderr_fd, 2)]
            .into_iter()
            .enumerate()
        {
            check(libc::dup2(from, to), Stage::Stdio, i as u32)?;
        }
        // Closed, not close-on-exec: /proc/self/fd/N must name nothing of
        // the agent's by the time the cwd is resolved. The error pipe stays
        // (it is close-on-exec, and chdir into a pipe fails).
        let (err, max) = (a.error_fd as libc::c_uint, c_int::MAX as libc::c_uint);
        if err > 3 {
            check(libc::close_range(3, err - 1, 0), Stage::CloseFds, 0)?;
        }
        check(
            libc::close_range(err.max(2) + 1, max, 0),
            Stage::CloseFds,
            1,
        )?;
        check(libc::chdir(p.cwd.as_ptr()), Stage::Chdir, 0)?;
        cwd_is_inside_root().map_err(|e| (Stage::CwdOutsideRoot, 0, e))?;
        // Last, so that none of the setup above runs under the filter; with
        // no_new_privs set this needs no capability.
        for (i, filter) in p.seccomp.iter().flatten().enumerate() {
            let prog = libc::sock_fprog {
                len: filter.len() as u16,
                filter: filter.as_ptr() as *mut libc::sock_filter,
            };
            check(
                libc::prctl(
                    libc::PR_SET_SECCOMP,
                    libc::SECCOMP_MODE_FILTER as c_ulong,
                    &prog as *const libc::sock_fprog as c_ulong,
                    0 as c_ulong,
                    0 as c_ulong,
                ),
                Stage::Seccomp,
                i as u32,
            )?;
        }

        let mut last = (0, libc::ENOENT);
        for (i, path) in p.exec_candidates.iter().enumerate() {
            libc::execve(path.as_ptr(), a.argv.as_ptr(), a.envp.as_ptr());
            let e = errno();
            // Like execvp: keep searching past "not here", remember real errors.
            if e != libc::ENOENT && e != libc::ENOTDIR || last.1 == libc::ENOENT {
                last = (i as u32, e);
            }
        }
        Err((Stage::Exec, last.0, last.1))
    }
}

/// Whether the working directory is reachable from the root: the kernel's
/// `getcwd` answers "(unreachable)/…" (or ENOENT) for a directory outside
/// it, and the path it gives must lead back to the very same directory.
/// Raw syscalls only (glibc's `getcwd` would allocate on that answer).
pub(crate) fn cwd_is_inside_root() -> Result<(), c_int> {
    let mut buf = [0u8; libc::PATH_MAX as usize];
    // SAFETY: getcwd writes at most `buf.len()` bytes into our stack buffer.
    let n = unsafe { libc::syscall(libc::SYS_getcwd, buf.as_mut_ptr(), buf.len()) };
    if n < 0 {
        return Err(errno());
    }
    if n < 2 || buf[0] != b'/' {
        return Err(libc::EXDEV);
    }
    // SAFETY: `stat` is plain data the kernel fills in; `buf` holds the
    // NUL-terminated path getcwd returned, "." is a static C string.
    unsafe {
        let (mut here, mut there): (libc::stat, libc::stat) =
            (std::mem::zeroed(), std::mem::zeroed());
        if libc::stat(c".".as_ptr(), &mut here) == -1 {
            return Err(errno());
        }
        if libc::stat(buf.as_ptr().cast(), &mut there) == -1 {
            return Err(libc::EXDEV);
        }
        if (here.st_dev, here.st_ino) != (there.st_dev, there.st_ino) {
            return Err(libc::EXDEV);
        }
    }
    Ok(())
}

/// How an exec'd process joins a running container.
pub(crate) struct ExecJoin {
    /// A pidfd of the container's init process.
    pub target_pidfd: RawFd,
    /// The CLONE_NEW* flags of the namespaces to join.
    pub namespaces: c_int,
    /// stdin is a pty slave that becomes the controlling terminal.
    pub tty: bool,
}

/// The exec helper's side: wait to be put in the cgroup, join the
/// namespaces, fork; the grandchild becomes the process, the child waits
/// for it and exits with its status. Never returns.
///
/// # Safety
/// As for [`run`].
pub(crate) unsafe fn run_exec(args: &ChildArgs, join: &ExecJoin) -> ! {
    let failure = match exec_setup(args, join) {
        Ok(never) => match never {},
        Err(f) => f,
    };
    // SAFETY: as in `run`.
    unsafe { report_and_exit(args.error_fd, failure) }
}

unsafe fn report_and_exit(error_fd: RawFd, failure: Failure) -> ! {
    let mut msg = [0u8; 12];
    msg[..4].copy_from_slice(&(failure.0 as u32).to_ne_bytes());
    msg[4..8].copy_from_slice(&failure.1.to_ne_bytes());
    msg[8..].copy_from_slice(&failure.2.to_ne_bytes());
    // SAFETY: writes a stack buffer to our own pipe fd, then exits without
    // running any destructors or atexit handlers of the parent's copy.
    unsafe {
        libc::write(error_fd, msg.as_ptr().cast(), msg.len());
        libc::_exit(127)
    }
}

fn exec_setup(a: &ChildArgs, join: &ExecJoin) -> Result<std::convert::Infallible, Failure> {
    reset_signals()?;
    wait_for_parent(a.sync_fd)?;
    // SAFETY: integer arguments and pointers to our own stack only.
    unsafe {
        // Not dumpable: nothing in the container may ptrace or open
        // /proc/<pid>/mem of this copy of the agent before it execs.
        libc::prctl(
            libc::PR_SET_DUMPABLE,
            0 as c_ulong,
            0 as c_ulong,
            0 as c_ulong,
            0 as c_ulong,
        );
        check(
            libc::setns(join.target_pidfd, join.namespaces),
            Stage::JoinNamespaces,
            0,
        )?;
        libc::close(join.target_pidfd);
        let pid = libc::syscall(libc::SYS_clone, libc::SIGCHLD as c_ulong, 0, 0, 0, 0);
        check_long(pid, Stage::Fork, 0)?;
        if pid > 0 {
            helper(pid as libc::pid_t);
        }
        // A session (and process group) of its own: no terminal of the
        // agent's is ours, and the helper can kill the whole group.
        check(libc::setsid(), Stage::Fork, 1)?;
        if join.tty {
            check(
                libc::ioctl(a.stdin_fd, libc::TIOCSCTTY, 0 as c_ulong),
                Stage::Terminal,
                1,
            )?;
        }
    }
    become_process(a)
}

/// The exec helper after the fork: hold no fd at all (a copy of the
/// caller's end of the command's stdin would keep it from ever seeing EOF),
/// wait for the command and exit with its status. SIGTERM means the caller
/// gives up on the command (a probe's deadline): the helper SIGKILLs the
/// command's process group and goes on waiting. Both signals are blocked
/// before the fds are closed, so once the caller has seen the error pipe
/// close, a SIGTERM can no longer kill the helper instead.
fn helper(pid: libc::pid_t) -> ! {
    // SAFETY: sigset_t is plain data on our stack; waitpid, kill and
    // rt_sigtimedwait take integers and pointers to it; _exit never returns.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGCHLD);
        libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        libc::close_range(3, c_int::MAX as libc::c_uint, 0);
        let mut status: c_int = 0;
        loop {
            let r = libc::waitpid(pid, &mut status, libc::WNOHANG);
            if r == pid || (r == -1 && errno() != libc::EINTR) {
                break;
            }
            // The kernel's sigset is 8 bytes; glibc's sigset_t is larger.
            let sig = libc::syscall(
                libc::SYS_rt_sigtimedwait,
                &set as *const libc::sigset_t,
                std::ptr::null_mut::<libc::siginfo_t>(),
                std::ptr::null::<libc::timespec>(),
                8usize,
            );
            if sig == libc::SIGTERM as libc::c_long {
                libc::kill(-pid, libc::SIGKILL);
                libc::kill(pid, libc::SIGKILL);
            }
        }
        if libc::WIFSIGNALED(status) {
            libc::_exit(128 + libc::WTERMSIG(status));
        }
        libc::_exit(libc::WEXITSTATUS(status));
    }
}

/// Shrinks the bounding set (needs CAP_SETPCAP, so before the uid switch)
/// and asks the kernel to keep permitted capabilities across that switch.
fn drop_bounding(caps: &super::plan::CapsPlan) -> Result<(), Failure> {
    let zero: c_ulong = 0;
    for &cap in &caps.drop_bounding {
        // SAFETY: prctl with integer arguments only.
        let rc = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as c_ulong, zero, zero, zero) };
        // EINVAL: a capability this kernel does not know.
        if rc == -1 && errno() != libc::EINVAL {
            return Err((Stage::Capabilities, cap as u32, errno()));
        }
    }
    // SAFETY: prctl with integer arguments only.
    let rc = unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1 as c_ulong, zero, zero, zero) };
    check(rc, Stage::Capabilities, 100)
}

/// Version 3 of the capget/capset ABI: two 32-bit words per set.
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: c_int,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

fn set_capabilities(caps: &super::plan::CapsPlan) -> Result<(), Failure> {
    let header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let word = |mask: u64, i: u32| (mask >> (32 * i)) as u32;
    let data: [CapData; 2] = [0, 1].map(|i| CapData {
        effective: word(caps.effective, i),
        permitted: word(caps.permitted, i),
        inheritable: word(caps.inheritable, i),
    });
    // SAFETY: header and data are repr(C) stack values in the layout capset expects.
    unsafe {
        check_long(
            libc::syscall(libc::SYS_capset, &header as *const CapHeader, data.as_ptr()),
            Stage::Capabilities,
            200,
        )?;
        for &cap in &caps.ambient {
            let rc = libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_RAISE as c_ulong,
                cap as c_ulong,
                0 as c_ulong,
                0 as c_ulong,
            );
            check(rc, Stage::Capabilities, 300 + cap as u32)?;
        }
    }
    Ok(())
}

/// Hides `path`: /dev/null over a file, an empty read-only tmpfs over a directory.
fn mask_path(path: *const c_char, index: u32) -> Result<(), Failure> {
    // SAFETY: NUL-terminated paths owned by the plan or static.
    unsafe {
        if libc::mount(
            c"/dev/null".as_ptr(),
            path,
            std::ptr::null(),
            libc::MS_BIND,
            std::ptr::null(),
        ) == 0
        {
            return Ok(());
        }
        match errno() {
            libc::ENOENT => Ok(()),
            libc::ENOTDIR => check(
                libc::mount(
                    c"tmpfs".as_ptr(),
                    path,
                    c"tmpfs".as_ptr(),
                    libc::MS_RDONLY,
                    std::ptr::null(),
                ),
                Stage::MaskPath,
                index,
            ),
            e => Err((Stage::MaskPath, index, e)),
        }
    }
}

fn readonly_path(path: *const c_char, index: u32) -> Result<(), Failure> {
    // SAFETY: NUL-terminated path owned by the plan; `st` is plain data on
    // our stack that statvfs fills in.
    unsafe {
        if libc::mount(
            path,
            path,
            std::ptr::null(),
            libc::MS_BIND | libc::MS_REC,
            std::ptr::null(),
        ) == -1
        {
            return if errno() == libc::ENOENT {
                Ok(())
            } else {
                Err((Stage::ReadonlyPath, index, errno()))
            };
        }
        // Keep the flags the mount already has (nosuid, nodev, noexec on
        // /proc), as runc does: a remount sets all of them at once.
        let mut st: libc::statvfs = std::mem::zeroed();
        let mut flags = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_REC;
        if libc::statvfs(path, &mut st) == 0 {
            for (st_flag, ms_flag) in [
                (libc::ST_NOSUID, libc::MS_NOSUID),
                (libc::ST_NODEV, libc::MS_NODEV),
                (libc::ST_NOEXEC, libc::MS_NOEXEC),
                (libc::ST_NOATIME, libc::MS_NOATIME),
                (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
                (libc::ST_RELATIME, libc::MS_RELATIME),
            ] {
                if st.f_flag & st_flag != 0 {
                    flags |= ms_flag;
                }
            }
        }
        check(
            libc::mount(path, path, std::ptr::null(), flags, std::ptr::null()),
            Stage::ReadonlyPath,
            index,
        )
    }
}

fn reset_signals() -> Result<(), Failure> {
    // SAFETY: sigset_t is plain data; the calls only read/write our stack copy.
    // Dispositions set to SIG_IGN (Rust ignores SIGPIPE) would survive exec.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        check(
            libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut()),
            Stage::Signals,
            0,
        )?;
        for sig in 1..libc::SIGRTMIN() {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
    }
    Ok(())
}

fn wait_for_parent(fd: RawFd) -> Result<(), Failure> {
    let mut byte = 0u8;
    loop {
        // SAFETY: reads at most one byte into a stack variable.
        let n = unsafe { libc::read(fd, (&mut byte as *mut u8).cast(), 1) };
        match n {
            1 => return Ok(()),
            // The parent went away (or failed) without releasing us.
            0 => return Err((Stage::WaitParent, 0, libc::EPIPE)),
            _ if errno() == libc::EINTR => continue,
            _ => return Err((Stage::WaitParent, 0, errno())),
        }
    }
}

fn mkdir(path: *const c_char, index: u32) -> Result<(), Failure> {
    // SAFETY: path is a NUL-terminated string owned by the plan.
    let rc = unsafe { libc::mkdir(path, 0o755) };
    if rc == -1 && errno() != libc::EEXIST {
        return Err((Stage::Mkdir, index, errno()));
    }
    Ok(())
}

fn make_devices() -> Result<(), Failure> {
    // SAFETY: static NUL-terminated paths; umask is restored afterwards.
    unsafe {
        let old = libc::umask(0);
        for (i, (path, major, minor)) in DEVICES.iter().enumerate() {
            let rc = libc::mknod(
                path.as_ptr(),
                libc::S_IFCHR | 0o666,
                libc::makedev(*major, *minor),
            );
            if rc == -1 && errno() != libc::EEXIST {
                return Err((Stage::Devices, i as u32, errno()));
            }
        }
        libc::umask(old);
        for (target, link) in DEV_LINKS {
            let rc = libc::symlink(target.as_ptr(), link.as_ptr());
            if rc == -1 && errno() != libc::EEXIST {
                return Err((Stage::Devices, 100, errno()));
            }
        }
    }
    Ok(())
}

/// The most proc/sysfs mounts a user-namespaced container may have.
pub(crate) const MAX_DETACHED: usize = 8;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;

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
    const FSOPEN_CLOEXEC: libc::c_uint = 1;
    const FSCONFIG_SET_FLAG: libc::c_uint = 0;
    const FSCONFIG_SET_STRING: libc::c_uint = 1;
    const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
    const FSMOUNT_CLOEXEC: libc::c_uint = 1;
    // SAFETY: raw syscalls on NUL-terminated strings owned by the plan and
    // on fds this function opened.
    unsafe {
        for (i, m) in p.mounts.iter().enumerate() {
            let Some(super::plan::Detached { attrs, options }) = &m.detached else {
                continue;
            };
            if i >= MAX_DETACHED {
                return Err((Stage::Mount, i as u32, libc::E2BIG));
            }
            let fs = libc::syscall(libc::SYS_fsopen, m.fstype.as_ptr(), FSOPEN_CLOEXEC);
            check_long(fs, Stage::Mount, i as u32)?;
            for (key, value) in options {
                let rc = match value {
                    Some(v) => libc::syscall(
                        libc::SYS_fsconfig,
                        fs,
                        FSCONFIG_SET_STRING,
                        key.as_ptr(),
                        v.as_ptr(),
                        0,
                    ),
                    None => libc::syscall(
                        libc::SYS_fsconfig,
                        fs,
                        FSCONFIG_SET_FLAG,
                        key.as_ptr(),
                        std::ptr::null::<c_char>(),
                        0,
                    ),
                };
                check_long(rc, Stage::Mount, i as u32)?;
            }
            check_long(
                libc::syscall(
                    libc::SYS_fsconfig,
                    fs,
                    FSCONFIG_CMD_CREATE,
                    std::ptr::null::<c_char>(),
                    std::ptr::null::<c_char>(),
                    0,
                ),
                Stage::Mount,
                i as u32,
            )?;
            let mnt = libc::syscall(libc::SYS_fsmount, fs, FSMOUNT_CLOEXEC, *attrs);
            libc::close(fs as c_int);
            check_long(mnt, Stage::Mount, i as u32)?;
            detached[i] = mnt as c_int;
        }
        if p.populate_dev {
            // Detached clones of the host's nodes: binds from the old root
            // would fail once it is unmounted.
            const OPEN_TREE_CLONE: libc::c_uint = 1;
            for (i, (path, _, _)) in DEVICES.iter().enumerate() {
                let fd = libc::syscall(
                    libc::SYS_open_tree,
                    libc::AT_FDCWD,
                    path.as_ptr(),
                    OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint,
                );
                check_long(fd, Stage::Devices, i as u32)?;
                dev_fds[i] = fd as c_int;
            }
        }
    }
    Ok(())
}

/// In a user namespace: binds the host's device nodes (cloned before
/// `pivot_root`) onto empty files in the new `/dev`, as runc does.
fn bind_devices(fds: &[c_int; DEVICES.len()]) -> Result<(), Failure> {
    // SAFETY: static NUL-terminated paths and mount fds `prepare_userns`
    // opened.
    unsafe {
        for (i, ((path, _, _), fd)) in DEVICES.iter().zip(fds).enumerate() {
            let f = libc::open(
                path.as_ptr(),
                libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC,
                0o666,
            );
            check(f, Stage::Devices, i as u32)?;
            libc::close(f);
            check_long(
                libc::syscall(
                    libc::SYS_move_mount,
                    *fd,
                    c"".as_ptr(),
                    libc::AT_FDCWD,
                    path.as_ptr(),
                    MOVE_MOUNT_F_EMPTY_PATH,
                ),
                Stage::Devices,
                i as u32,
            )?;
            libc::close(*fd);
        }
        for (target, link) in DEV_LINKS {
            let rc = libc::symlink(target.as_ptr(), link.as_ptr());
            if rc == -1 && errno() != libc::EEXIST {
                return Err((Stage::Devices, 100, errno()));
            }
        }
    }
    Ok(())
}

fn loopback_up() -> Result<(), Failure> {
    // SAFETY: `ifreq` is plain data zero-initialised on our stack; the ioctls
    // read and write only that struct; the socket is closed before returning.
    unsafe {
        let sock = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        check(sock, Stage::Loopback, 0)?;
        let mut ifr: libc::ifreq = std::mem::zeroed();
        ifr.ifr_name[0] = b'l' as c_char;
        ifr.ifr_name[1] = b'o' as c_char;
        let res = (|| {
            check(
                libc::ioctl(sock, libc::SIOCGIFFLAGS, &mut ifr),
                Stage::Loopback,
                1,
            )?;
            ifr.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
            check(
                libc::ioctl(sock, libc::SIOCSIFFLAGS, &ifr),
                Stage::Loopback,
                2,
            )
        })();
        libc::close(sock);
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_stage_round_trips_through_its_wire_number() {
        for v in 1..=Stage::Exec as u32 {
            let stage = Stage::from_u32(v).unwrap_or_else(|| panic!("stage {v} unknown"));
            assert_eq!(stage as u32, v);
        }
        assert_eq!(Stage::from_u32(0), None);
        assert_eq!(Stage::from_u32(Stage::Exec as u32 + 1), None);
    }

    #[test]
    fn a_cwd_left_outside_a_new_root_is_caught() {
        if !nix::unistd::geteuid().is_root() {
            assert_ne!(
                std::env::var("CI").as_deref(),
                Ok("true"),
                "CI=true and not root"
            );
            eprintln!("skipping: chroot needs root");
            return;
        }
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("inside")).unwrap();
        let root_path = root.path().to_path_buf();
        // A thread with its own root and cwd (CLONE_FS), so the test
        // process keeps its own.
        let seen = std::thread::spawn(move || {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_FS).unwrap();
            assert_eq!(cwd_is_inside_root(), Ok(()), "the host cwd, before chroot");
            nix::unistd::chroot(&root_path).unwrap();
            // The cwd is still the host's: what a leaked fd would give.
            let outside = cwd_is_inside_root();
            nix::unistd::chdir("/inside").unwrap();
            (outside, cwd_is_inside_root())
        })
        .join()
        .unwrap();
        assert_eq!(seen, (Err(libc::EXDEV), Ok(())));
    }
}
