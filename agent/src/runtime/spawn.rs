//! The one way the runtime starts a process, for a container's init and for
//! an exec alike: a fork-like `clone3` that hands back a pidfd, and a
//! handshake with the child over two close-on-exec pipes.
//!
//! The child blocks on the sync pipe until the parent has done what must
//! come first (for an exec, put it in the cgroup; written its id maps) and
//! writes one byte. The error pipe then carries a setup failure back as
//! three native-endian u32s (stage, index of the mount or exec candidate,
//! errno), or nothing: EOF when `execve` closed it, which is how the parent
//! tells "running" from "failed" synchronously. A container's first process
//! also sends [`JOIN_REQUEST`] there once its setup is done; the parent puts
//! it in its cgroup and writes another byte.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::unistd::pipe2;

use super::child::Stage;
use super::plan::LaunchPlan;
use super::RuntimeError;

/// Both pipes of the handshake, before the clone.
pub(super) struct Handshake {
    sync_r: OwnedFd,
    sync_w: OwnedFd,
    err_r: OwnedFd,
    err_w: OwnedFd,
}

/// The parent's ends, after the clone.
pub(super) struct Parent {
    sync_w: OwnedFd,
    err_r: OwnedFd,
}

/// Why the handshake itself failed (not the child's setup).
#[derive(Debug)]
pub(super) struct HandshakeError {
    pub op: &'static str,
    pub source: std::io::Error,
}

impl Handshake {
    pub fn new() -> nix::Result<Handshake> {
        let (sync_r, sync_w) = pipe2(OFlag::O_CLOEXEC)?;
        let (err_r, err_w) = pipe2(OFlag::O_CLOEXEC)?;
        Ok(Handshake {
            sync_r,
            sync_w,
            err_r,
            err_w,
        })
    }

    /// The end the child waits on.
    pub fn sync_fd(&self) -> RawFd {
        self.sync_r.as_raw_fd()
    }

    /// The end the child reports a failure on.
    pub fn error_fd(&self) -> RawFd {
        self.err_w.as_raw_fd()
    }

    /// After the clone: closes the child's ends here (else the parent would
    /// never see EOF on the error pipe).
    pub fn into_parent(self) -> Parent {
        drop((self.sync_r, self.err_w));
        Parent {
            sync_w: self.sync_w,
            err_r: self.err_r,
        }
    }
}

/// The message a container's first process sends on the error pipe when
/// its setup is done and it asks to be put in its cgroup (stage 0: no
/// stage has that number).
pub(super) const JOIN_REQUEST: [u8; 12] = [0; 12];

/// Why the parent's side of the handshake failed: the handshake itself, or
/// joining the child to its cgroup when it asked.
#[derive(Debug)]
pub(super) enum ReleaseError<E> {
    Handshake(HandshakeError),
    Join(E),
}

impl Parent {
    /// Lets the child go on, and waits until it has exec'd (`None`) or
    /// failed a setup step (its report). When the child asks to join its
    /// cgroup (see `child::join_cgroup`), `join` puts it there and the
    /// child is let go on again; a child that asks when there is no `join`
    /// has broken the handshake.
    pub fn release<E>(
        self,
        mut join: Option<&mut dyn FnMut() -> Result<(), E>>,
    ) -> Result<Option<SetupFailure>, ReleaseError<E>> {
        let go = |op| {
            nix::unistd::write(&self.sync_w, &[1])
                .map(drop)
                .map_err(|e| {
                    ReleaseError::Handshake(HandshakeError {
                        op,
                        source: e.into(),
                    })
                })
        };
        go("release child")?;
        let mut err_file = File::from(self.err_r);
        loop {
            let mut msg = [0u8; 12];
            let got = read_message(&mut err_file, &mut msg).map_err(ReleaseError::Handshake)?;
            if got == 0 {
                return Ok(None);
            }
            if got == msg.len() && msg == JOIN_REQUEST {
                let Some(join) = join.take() else {
                    return Err(ReleaseError::Handshake(HandshakeError {
                        op: "read setup status",
                        source: std::io::Error::other("the child asked twice to join its cgroup"),
                    }));
                };
                join().map_err(ReleaseError::Join)?;
                go("let the child run")?;
                continue;
            }
            let word = |i: usize| u32::from_ne_bytes(msg[i..i + 4].try_into().unwrap_or_default());
            return Ok(Some(SetupFailure {
                stage: word(0),
                index: word(4),
                errno: word(8) as i32,
            }));
        }
    }
}

/// Reads one message (up to `msg.len()` bytes, fewer only at EOF); how
/// many bytes it got (0: the pipe closed, the child exec'd or died).
fn read_message(f: &mut File, msg: &mut [u8; 12]) -> Result<usize, HandshakeError> {
    let mut got = 0;
    while got < msg.len() {
        match std::io::Read::read(f, &mut msg[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(source) => {
                return Err(HandshakeError {
                    op: "read setup status",
                    source,
                })
            }
        }
    }
    Ok(got)
}

/// A setup step the child reported failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct SetupFailure {
    /// The step's wire number (see [`Stage`]).
    pub stage: u32,
    /// Which mount, bind or exec candidate (by the plan's order).
    pub index: u32,
    pub errno: i32,
}

/// What was being started, for the words of a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Launch {
    /// A container's first process.
    Start,
    /// A process exec'd into a running container.
    Exec,
}

impl SetupFailure {
    /// The error to answer, naming what the step was working on.
    pub fn into_error(self, id: &str, plan: &LaunchPlan, launch: Launch) -> RuntimeError {
        let id = id.to_string();
        let source = std::io::Error::from_raw_os_error(self.errno);
        let index = self.index;
        let at = |dest: Option<&String>| dest.map_or(String::new(), |d| format!(" {d}"));
        match Stage::from_u32(self.stage) {
            Some(Stage::Exec) => RuntimeError::Exec {
                id,
                program: plan
                    .exec_candidates
                    .get(index as usize)
                    .map_or(plan.program.clone(), |c| c.to_string_lossy().into_owned()),
                source,
            },
            Some(s @ (Stage::Mount | Stage::Mkdir)) => RuntimeError::Setup {
                id,
                stage: s.describe(),
                detail: at(plan.mounts.get(index as usize).map(|m| &m.destination)),
                source,
            },
            Some(s @ Stage::BindMount) => RuntimeError::Setup {
                id,
                stage: s.describe(),
                detail: at(plan.binds.get(index as usize).map(|m| &m.destination)),
                source,
            },
            Some(s @ Stage::Chdir) => RuntimeError::Setup {
                id,
                stage: s.describe(),
                detail: format!(" {}", plan.cwd.to_string_lossy()),
                source,
            },
            Some(Stage::CwdOutsideRoot) => RuntimeError::CwdOutsideRoot {
                id,
                cwd: plan.cwd.to_string_lossy().into_owned(),
            },
            Some(s) => RuntimeError::Setup {
                id,
                stage: s.describe(),
                detail: match launch {
                    Launch::Start => format!(" (step {index})"),
                    Launch::Exec => format!(" (exec step {index})"),
                },
                source,
            },
            None => RuntimeError::Setup {
                id,
                stage: match launch {
                    Launch::Start => "setup",
                    Launch::Exec => "exec",
                },
                detail: format!(" (stage {})", self.stage),
                source,
            },
        }
    }
}

/// A close-on-exec copy of `fd` numbered 3 or above, so that the child's
/// `dup2` onto 0..2 cannot clobber another of its sources.
pub(super) fn high_fd(fd: RawFd) -> nix::Result<OwnedFd> {
    let new = fcntl(fd, FcntlArg::F_DUPFD_CLOEXEC(3))?;
    // SAFETY: F_DUPFD_CLOEXEC returned a fresh fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// Clones this process like `fork` (no `CLONE_VM`, no new stack), with
/// `flags` (the namespaces to create) and `CLONE_PIDFD`; runs `child` in
/// the child and returns the child's pid and pidfd in the parent.
///
/// # Safety
/// `child` runs in a copy of this process in which only the calling thread
/// exists: it must not allocate, take a lock or touch anything another
/// thread may have held, and must never return (it execs or `_exit`s).
pub(super) unsafe fn clone3(
    flags: u64,
    child: impl FnOnce() -> std::convert::Infallible,
) -> std::io::Result<(i32, OwnedFd)> {
    let mut pidfd: libc::c_int = -1;
    // SAFETY: clone_args is plain data; zero is the documented default for
    // every field not set here.
    let mut cl: libc::clone_args = unsafe { std::mem::zeroed() };
    cl.flags = flags | libc::CLONE_PIDFD as u64;
    cl.pidfd = &mut pidfd as *mut libc::c_int as u64;
    cl.exit_signal = libc::SIGCHLD as u64;
    // SAFETY: a fork-like clone3 (no CLONE_VM, no stack): the child gets a
    // private copy of this address space and runs only `child`, under the
    // caller's promise above.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &cl as *const libc::clone_args,
            std::mem::size_of::<libc::clone_args>(),
        )
    };
    if ret == 0 {
        // The child: `child` execs or exits; its type says it never returns.
        #[allow(unreachable_code)]
        match child() {}
    }
    if ret < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: CLONE_PIDFD stored a new pidfd that nobody else owns.
    Ok((ret as i32, unsafe { OwnedFd::from_raw_fd(pidfd) }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_that_execs_reports_nothing_and_one_that_fails_reports_its_step() {
        for fail in [false, true] {
            let hs = Handshake::new().unwrap();
            let (sync, err) = (hs.sync_fd(), hs.error_fd());
            let report = (Stage::Mount as u32, 2u32, libc::EACCES as u32);
            // SAFETY: the child only reads and writes its pipes and execs or
            // exits, with no allocation.
            let (_pid, pidfd) = unsafe {
                clone3(0, move || {
                    let mut b = 0u8;
                    libc::read(sync, (&mut b as *mut u8).cast(), 1);
                    if fail {
                        let mut msg = [0u8; 12];
                        msg[..4].copy_from_slice(&report.0.to_ne_bytes());
                        msg[4..8].copy_from_slice(&report.1.to_ne_bytes());
                        msg[8..].copy_from_slice(&report.2.to_ne_bytes());
                        libc::write(err, msg.as_ptr().cast(), msg.len());
                        libc::_exit(127);
                    }
                    let argv = [c"/bin/true".as_ptr(), std::ptr::null()];
                    let envp = [std::ptr::null()];
                    libc::execve(argv[0], argv.as_ptr(), envp.as_ptr());
                    libc::_exit(126)
                })
            }
            .unwrap();
            let got = hs.into_parent().release::<()>(None).unwrap();
            let want = fail.then_some(SetupFailure {
                stage: report.0,
                index: report.1,
                errno: libc::EACCES,
            });
            assert_eq!(got, want);
            // SAFETY: siginfo_t is plain data; all zeroes is a valid value.
            let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
            // SAFETY: waitid on a pidfd we own, filling a local.
            let rc = unsafe {
                libc::waitid(
                    libc::P_PIDFD,
                    pidfd.as_raw_fd() as u32,
                    &mut info,
                    libc::WEXITED,
                )
            };
            assert_eq!(rc, 0);
        }
    }
}
