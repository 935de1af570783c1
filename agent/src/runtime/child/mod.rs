//! The container's first process, between `clone` and `execve`.
//!
//! This code runs in a copy of a multi-threaded parent in which only the
//! cloning thread survives. Any lock another thread held at that moment (the
//! allocator's, stdio's, glibc's thread list) stays locked forever, so the
//! child calls only the plain syscall wrappers of [`sys`] on data the parent
//! prepared, and uses raw `setresuid`/`setresgid`/`setgroups` syscalls
//! because glibc's wrappers would try to signal the parent's (now absent)
//! threads.
//!
//! Sequence: reset signals; wait until the parent lets us go on (with a
//! user namespace, once it has written our id maps: then become the
//! namespace's root); start a session of our own (so no terminal of whoever
//! started the runtime is the container's: its `/dev/tty` would open that
//! terminal, and TIOCSTI type into it); build the root ([`rootfs`]); become
//! the process, asking the parent to put us in our cgroup before the last
//! steps (see [`join_cgroup`]), and exec ([`process`]). A failure is
//! written to the error pipe as (stage, index, errno) and the child exits
//! 127 (see `runtime::spawn`). An exec'd process joins a running
//! container's namespaces instead of building a root ([`run_exec`]).

mod init;
mod process;
mod rootfs;
mod sys;

pub(crate) use rootfs::MAX_BINDS;

use std::os::fd::RawFd;

use libc::{c_char, c_int};

use super::plan::LaunchPlan;

/// Declares the setup steps once: the enum (numbered from 1 in order, as
/// reported over the error pipe), its wire table and its words.
macro_rules! stages {
    ($first:ident => $first_words:literal, $($name:ident => $words:literal,)+) => {
        /// Setup steps, as reported over the error pipe.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        #[repr(u32)]
        pub(crate) enum Stage {
            $first = 1,
            $($name,)+
        }

        impl Stage {
            const ALL: &'static [Stage] = &[Stage::$first, $(Stage::$name,)+];

            pub(crate) fn from_u32(v: u32) -> Option<Stage> {
                Stage::ALL.iter().copied().find(|s| *s as u32 == v)
            }

            pub(crate) fn describe(self) -> &'static str {
                match self {
                    Stage::$first => $first_words,
                    $(Stage::$name => $words,)+
                }
            }
        }
    };
}

stages! {
    Signals => "reset signals",
    WaitParent => "wait for parent",
    JoinCgroup => "join the container's cgroup",
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
    Init => "start the init",
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
    /// Ask the parent to be put in the cgroup at the end of the setup (see
    /// [`join_cgroup`]) rather than be put there before it starts.
    pub join_late: bool,
}

fn check(rc: c_int, stage: Stage, index: u32) -> Result<(), Failure> {
    if rc == -1 {
        Err((stage, index, sys::errno()))
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
    report_and_exit(args.error_fd, failure)
}

fn setup(a: &ChildArgs) -> Result<std::convert::Infallible, Failure> {
    let p = a.plan;
    check(sys::reset_signals(), Stage::Signals, 0)?;
    wait_for_parent(a.sync_fd)?;
    if p.clone_flags & libc::CLONE_NEWUSER as u64 != 0 {
        // Become the namespace's root: until then this process keeps the
        // host's root ids, which mean nothing in here (files it made would
        // have no owner). Capabilities in the namespace stay. The maps were
        // written before release.
        check_long(sys::setgroups(&[]), Stage::Groups, 0)?;
        check_long(sys::setresgid(0), Stage::Gid, 0)?;
        check_long(sys::setresuid(0), Stage::Uid, 0)?;
    }
    check(sys::setsid(), Stage::Session, 0)?;
    rootfs::build(p)?;
    process::become_process(a, p.init)
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
    report_and_exit(args.error_fd, failure)
}

fn report_and_exit(error_fd: RawFd, failure: Failure) -> ! {
    let mut msg = [0u8; 12];
    msg[..4].copy_from_slice(&(failure.0 as u32).to_ne_bytes());
    msg[4..8].copy_from_slice(&failure.1.to_ne_bytes());
    msg[8..].copy_from_slice(&failure.2.to_ne_bytes());
    sys::write(error_fd, &msg);
    sys::exit(127)
}

fn exec_setup(a: &ChildArgs, join: &ExecJoin) -> Result<std::convert::Infallible, Failure> {
    check(sys::reset_signals(), Stage::Signals, 0)?;
    wait_for_parent(a.sync_fd)?;
    // Not dumpable: nothing in the container may ptrace or open
    // /proc/<pid>/mem of this copy of the agent before it execs.
    sys::set_not_dumpable();
    check(
        sys::setns(join.target_pidfd, join.namespaces),
        Stage::JoinNamespaces,
        0,
    )?;
    // SAFETY: the pidfd is the parent's, used once for setns above; this
    // copy of it is ours to close before the process becomes the command.
    unsafe { sys::close(join.target_pidfd) };
    // SAFETY: this child keeps to `sys`'s calls, as a forked one must.
    let pid = unsafe { sys::fork() };
    check_long(pid, Stage::Fork, 0)?;
    if pid > 0 {
        helper(pid as libc::pid_t);
    }
    // A session (and process group) of its own: no terminal of the
    // agent's is ours, and the helper can kill the whole group.
    check(sys::setsid(), Stage::Fork, 1)?;
    if join.tty {
        check(sys::set_controlling_tty(a.stdin_fd), Stage::Terminal, 1)?;
    }
    // An exec'd command is never an init: the container has its own.
    process::become_process(a, false)
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
            if r == pid || (r == -1 && sys::errno() != libc::EINTR) {
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

fn wait_for_parent(fd: RawFd) -> Result<(), Failure> {
    wait_for(fd, Stage::WaitParent)
}

fn wait_for(fd: RawFd, stage: Stage) -> Result<(), Failure> {
    loop {
        match sys::read_byte(fd).0 {
            1 => return Ok(()),
            // The parent went away (or failed) without releasing us.
            0 => return Err((stage, 0, libc::EPIPE)),
            _ if sys::errno() == libc::EINTR => continue,
            _ => return Err((stage, 0, sys::errno())),
        }
    }
}

/// Asks the parent to put this process in the container's cgroup, and
/// waits until it has: the runtime's own setup (mounts, credentials) is
/// done by then, and only what follows (closing fds, the seccomp filter,
/// exec) counts against the container's limits. Joined at the start, a
/// container with a small CPU quota (10m: 1 ms per 100 ms) was throttled
/// through the runtime's setup for one or more whole periods. Nothing of
/// the container's own runs before the join.
pub(super) fn join_cgroup(a: &ChildArgs) -> Result<(), Failure> {
    let msg = crate::runtime::spawn::JOIN_REQUEST;
    if sys::write(a.error_fd, &msg) != msg.len() as isize {
        return Err((Stage::JoinCgroup, 1, sys::errno()));
    }
    wait_for(a.sync_fd, Stage::JoinCgroup)
}

#[cfg(test)]
mod tests {
    use super::process::cwd_is_inside_root;
    use super::*;

    #[test]
    fn every_stage_round_trips_through_its_wire_number() {
        for v in 1..=Stage::Init as u32 {
            let stage = Stage::from_u32(v).unwrap_or_else(|| panic!("stage {v} unknown"));
            assert_eq!(stage as u32, v);
        }
        assert_eq!(Stage::from_u32(0), None);
        assert_eq!(Stage::from_u32(Stage::Init as u32 + 1), None);
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
