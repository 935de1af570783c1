//! Exec: running another process inside a running container.
//!
//! The new process must end up exactly where the container's own processes
//! are: in its namespaces, its cgroup and its root, with its credentials,
//! capabilities, `no_new_privs` and seccomp filter. The bundle's
//! `config.json` is planned again by the same planner with the command
//! replaced, so every one of those settings comes from the same place as at
//! start. A child is cloned (no new namespaces), put into the container's
//! cgroup while it waits on a pipe, and then joins all the container's
//! namespaces at once with `setns` on a pidfd of the container's init. A pid
//! namespace only applies to the children of the process that joins it, so
//! the child forks once more: the grandchild becomes the container process
//! and execs; the child waits for it and exits with its status, which is how
//! the caller learns the exit code (the child is the caller's, held by
//! pidfd). The child itself is never visible inside the container, and the
//! grandchild is not dumpable until its exec, so nothing in the container
//! can reach the agent's binary or memory through it. The grandchild leads
//! a session of its own; SIGTERM to the child (see
//! [`ExecProcess::terminate`]) makes it SIGKILL that whole process group,
//! which is how a probe's deadline is enforced (see [`super::bounded`]).

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use nix::fcntl::OFlag;
use nix::unistd::pipe2;
use oci_spec::runtime::Spec;

use super::child::{self, ChildArgs, ExecJoin};
use super::plan::{self, ptr_array};
use super::spawn;
use super::{ExitStatus, Runtime, RuntimeError};

/// What to run in the container.
#[derive(Debug, Clone, Default)]
pub struct ExecRequest {
    pub argv: Vec<String>,
    /// `KEY=value`, added to (and overriding) the container's environment.
    pub env: Vec<String>,
    /// Run under a new pseudo-terminal of this size (rows, cols).
    pub tty: Option<(u16, u16)>,
}

/// A running exec'd process; its stdio is ours.
#[derive(Debug)]
pub struct ExecProcess {
    /// Host pid of the helper whose exit status is the command's.
    pub pid: i32,
    pidfd: OwnedFd,
    /// Write end of the command's stdin (the pty master under a tty); take
    /// it to close it, which is the command's end of input.
    pub stdin: Option<File>,
    /// Read end of the command's stdout (the pty master under a tty).
    pub stdout: File,
    /// Read end of stderr; `None` under a tty (it goes to the terminal).
    pub stderr: Option<File>,
    /// The pty master, for resizing; `None` without a tty.
    pty: Option<File>,
}

impl ExecProcess {
    /// Blocks until the command has exited.
    pub fn wait_blocking(&self) -> Result<ExitStatus, RuntimeError> {
        use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
        use std::os::fd::AsFd;
        loop {
            match waitid(Id::PIDFd(self.pidfd.as_fd()), WaitPidFlag::WEXITED) {
                Err(nix::errno::Errno::EINTR) => continue,
                Ok(WaitStatus::Exited(_, code)) => return Ok(ExitStatus::Exited(code)),
                Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(ExitStatus::Signaled(sig as i32)),
                Ok(_) => continue,
                Err(e) => {
                    return Err(RuntimeError::Sys {
                        id: format!("exec {}", self.pid),
                        op: "wait",
                        source: e.into(),
                    })
                }
            }
        }
    }

    /// Gives up on the command: the helper SIGKILLs its process group and
    /// then exits, so `wait_blocking` returns soon after. A no-op once the
    /// helper has exited.
    pub fn terminate(&self) {
        // SAFETY: pidfd_send_signal on a pidfd we own, null siginfo.
        unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.pidfd.as_raw_fd(),
                libc::SIGTERM,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
    }

    /// The helper's pidfd: readable once it (and so the command) has exited.
    pub(super) fn exit_fd(&self) -> &OwnedFd {
        &self.pidfd
    }

    /// Sets the terminal size (a no-op without a tty).
    pub fn resize(&self, rows: u16, cols: u16) {
        let ws = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        if let Some(pty) = &self.pty {
            // SAFETY: TIOCSWINSZ reads one winsize from our stack.
            unsafe { libc::ioctl(pty.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
        }
    }
}

fn owned(fd: libc::c_int) -> OwnedFd {
    // SAFETY: called only with fresh fds the kernel just returned.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

fn pidfd_open(pid: i32) -> std::io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(owned(fd as libc::c_int))
}

impl Runtime {
    /// Runs `req` inside container `id` (bundle `bundle_dir`, init process
    /// `container_pid`). Returns once the command has been exec'd. Blocking.
    pub fn exec(
        &self,
        bundle_dir: &Path,
        id: &str,
        container_pid: i32,
        req: &ExecRequest,
    ) -> Result<ExecProcess, RuntimeError> {
        let sys = |op: &'static str| {
            move |source: std::io::Error| RuntimeError::Sys {
                id: id.into(),
                op,
                source,
            }
        };
        let errno = |op: &'static str| move |e: nix::errno::Errno| sys(op)(e.into());
        let config = bundle_dir.join("config.json");
        let mut spec = Spec::load(&config).map_err(|source| RuntimeError::LoadSpec {
            path: config,
            source,
        })?;
        let mut process = spec.process().clone().ok_or(RuntimeError::InvalidSpec {
            field: "process",
            reason: "missing".into(),
        })?;
        process.set_args(Some(req.argv.clone()));
        let mut env = process.env().clone().unwrap_or_default();
        for e in &req.env {
            let key = e.split('=').next().unwrap_or_default();
            env.retain(|x| x.split('=').next() != Some(key));
            env.push(e.clone());
        }
        process.set_env(Some(env));
        process.set_terminal(None);
        spec.set_process(Some(process));
        let rootfs = plan::resolve_rootfs(&spec, bundle_dir)?;
        let plan = plan::plan(&spec, &rootfs, &plan::HostFacts::read())?;

        let target = pidfd_open(container_pid).map_err(sys("open container pidfd"))?;
        let handshake = spawn::Handshake::new().map_err(errno("pipe"))?;
        // The child's ends (dup'd onto 0..2 there) and ours.
        let (child_in, child_out, child_err, ours) = match req.tty {
            Some((rows, cols)) => {
                let (mut master, mut slave) = (-1, -1);
                let ws = libc::winsize {
                    ws_row: rows,
                    ws_col: cols,
                    ws_xpixel: 0,
                    ws_ypixel: 0,
                };
                // SAFETY: openpty writes two fds into our locals and reads
                // the winsize; no name buffer or termios is passed.
                let rc = unsafe {
                    libc::openpty(
                        &mut master,
                        &mut slave,
                        std::ptr::null_mut(),
                        std::ptr::null(),
                        &ws,
                    )
                };
                if rc != 0 {
                    return Err(sys("openpty")(std::io::Error::last_os_error()));
                }
                let (master, slave) = (owned(master), owned(slave));
                for fd in [&master, &slave] {
                    nix::fcntl::fcntl(
                        fd.as_raw_fd(),
                        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
                    )
                    .map_err(errno("set cloexec"))?;
                }
                let s2 = slave.try_clone().map_err(sys("dup pty"))?;
                let s3 = slave.try_clone().map_err(sys("dup pty"))?;
                let m2 = master.try_clone().map_err(sys("dup pty"))?;
                let m3 = master.try_clone().map_err(sys("dup pty"))?;
                (
                    slave,
                    s2,
                    s3,
                    (
                        File::from(master),
                        File::from(m2),
                        None,
                        Some(File::from(m3)),
                    ),
                )
            }
            None => {
                let (in_r, in_w) = pipe2(OFlag::O_CLOEXEC).map_err(errno("pipe"))?;
                let (out_r, out_w) = pipe2(OFlag::O_CLOEXEC).map_err(errno("pipe"))?;
                let (e_r, e_w) = pipe2(OFlag::O_CLOEXEC).map_err(errno("pipe"))?;
                (
                    in_r,
                    out_w,
                    e_w,
                    (
                        File::from(in_w),
                        File::from(out_r),
                        Some(File::from(e_r)),
                        None,
                    ),
                )
            }
        };
        let high = |fd: &OwnedFd| spawn::high_fd(fd.as_raw_fd()).map_err(errno("dup stdio"));
        let (stdin, stdout, stderr) = (high(&child_in)?, high(&child_out)?, high(&child_err)?);
        drop((child_in, child_out, child_err));

        let argv = ptr_array(&plan.argv);
        let envp = ptr_array(&plan.envp);
        let args = ChildArgs {
            plan: &plan,
            argv: &argv,
            envp: &envp,
            sync_fd: handshake.sync_fd(),
            error_fd: handshake.error_fd(),
            stdin_fd: stdin.as_raw_fd(),
            stdout_fd: stdout.as_raw_fd(),
            stderr_fd: stderr.as_raw_fd(),
            join_late: false,
        };
        let join = ExecJoin {
            target_pidfd: target.as_raw_fd(),
            namespaces: plan.clone_flags as libc::c_int,
            tty: req.tty.is_some(),
        };

        // SAFETY: `child::run_exec` never returns and only makes raw
        // syscalls on data prepared above (see `child`).
        let (pid, pidfd) =
            unsafe { spawn::clone3(0, || child::run_exec(&args, &join)) }.map_err(sys("clone3"))?;
        let parent = handshake.into_parent();
        drop((stdin, stdout, stderr));
        let process = ExecProcess {
            pid,
            pidfd,
            stdin: Some(ours.0),
            stdout: ours.1,
            stderr: ours.2,
            pty: ours.3,
        };
        let kill = || {
            // SAFETY: pidfd_send_signal on a pidfd we own.
            unsafe {
                libc::syscall(
                    libc::SYS_pidfd_send_signal,
                    process.pidfd.as_raw_fd(),
                    libc::SIGKILL,
                    std::ptr::null::<libc::siginfo_t>(),
                    0,
                )
            };
            let _ = process.wait_blocking();
        };
        if let Err(e) = self.cgroups.add_process(id, pid) {
            kill();
            return Err(e.into());
        }
        match parent.release::<std::convert::Infallible>(None) {
            Ok(None) => Ok(process),
            Ok(Some(failure)) => {
                kill();
                Err(failure.into_error(id, &plan, spawn::Launch::Exec))
            }
            Err(spawn::ReleaseError::Handshake(e)) => {
                kill();
                Err(sys(e.op)(e.source))
            }
            Err(spawn::ReleaseError::Join(never)) => match never {},
        }
    }
}
