//! `init: true`: the runtime's own init as the container's PID 1, as
//! Docker's `--init` (tini) does, with nothing added to the image.
//!
//! A process that is PID 1 of its namespace gets no default signal actions:
//! a shell as PID 1 ignores SIGTERM and each stop waits out the whole grace
//! before SIGKILL, and orphans it never waits for stay zombies. So the child
//! forks once more at the very end of its setup, already confined (ids,
//! capabilities, no_new_privs, seccomp): the new process execs the command;
//! this one stays PID 1. It blocks every signal, waits for them one at a
//! time, passes each on to the command, reaps every child that exits, and
//! exits as the command did (128 + the signal for one killed by a signal,
//! as a shell reports it). It is not dumpable: it is a copy of the runtime's
//! memory, which nothing in the container may read.

use super::sys;
use super::{check, check_long, Failure, Stage};

/// Forks the command off and returns in it; in PID 1 it never returns.
pub(super) fn split(error_fd: std::os::fd::RawFd) -> Result<(), Failure> {
    // Blocked before the fork, so that none is lost in between; the command
    // unblocks them again.
    check(sys::block_all_signals(), Stage::Init, 0)?;
    // SAFETY: this child keeps to `sys`'s calls, as a forked one must.
    let pid = unsafe { sys::fork() };
    check_long(pid, Stage::Init, 1)?;
    if pid == 0 {
        return check(sys::unblock_all_signals(), Stage::Init, 2);
    }
    sys::set_not_dumpable();
    // The command reports its own exec; this copy of the pipe must not keep
    // the runtime waiting for its end.
    // SAFETY: the error pipe is not used by this process again.
    unsafe { sys::close(error_fd) };
    serve(pid as libc::pid_t)
}

fn serve(command: libc::pid_t) -> ! {
    loop {
        match sys::wait_for_signal() {
            libc::SIGCHLD => {
                while let Some((pid, status)) = sys::reap_any() {
                    if pid == command {
                        sys::exit(exit_code(status));
                    }
                }
            }
            sig if sig > 0 => {
                sys::kill(command, sig);
            }
            _ => {}
        }
    }
}

/// How a shell reports a child's end.
fn exit_code(status: libc::c_int) -> libc::c_int {
    if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        libc::WEXITSTATUS(status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_exits_as_a_shell_reports_its_command() {
        // Built as waitpid(2) encodes them.
        let exited = |code: libc::c_int| code << 8;
        let killed = |sig: libc::c_int| sig;
        assert_eq!(exit_code(exited(0)), 0);
        assert_eq!(exit_code(exited(3)), 3);
        assert_eq!(exit_code(killed(libc::SIGTERM)), 143);
        assert_eq!(exit_code(killed(libc::SIGKILL)), 137);
    }
}
