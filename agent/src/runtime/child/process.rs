//! The common end of a container's first process and an exec'd one:
//! rlimits, credentials, capabilities, no_new_privs, stdio, the cgroup (a
//! container's first process joins it here), every other fd closed, the
//! working directory (checked to lie inside the root), the seccomp filter,
//! and exec.
//!
//! The fds are closed *before* the `chdir`, not merely marked close-on-exec:
//! until exec the child holds a copy of every fd of the agent, and a
//! `process.cwd` of `/proc/self/fd/N` would otherwise make a host directory
//! the container's working directory (CVE-2024-21626 in runc). The check
//! after `chdir` catches any other way out: the kernel's `getcwd` must name
//! a path from the new root, and that path must lead to the same directory.

use libc::c_int;

use super::sys::{self, CapData};
use super::{check, check_long, ChildArgs, Failure, Stage};
use crate::runtime::plan::CapsPlan;

/// Becomes the process `a` describes (under the runtime's init as PID 1
/// with `init`); returns only why it could not.
pub(super) fn become_process(
    a: &ChildArgs,
    init: bool,
) -> Result<std::convert::Infallible, Failure> {
    let p = a.plan;
    for (i, (resource, limit)) in p.rlimits.iter().enumerate() {
        check(sys::setrlimit(*resource, limit), Stage::Rlimit, i as u32)?;
    }
    if let Some(caps) = &p.caps {
        drop_bounding(caps)?;
    }
    check_long(sys::setgroups(&p.additional_gids), Stage::Groups, 0)?;
    check_long(sys::setresgid(p.gid), Stage::Gid, 0)?;
    check_long(sys::setresuid(p.uid), Stage::Uid, 0)?;
    if let Some(caps) = &p.caps {
        set_capabilities(caps)?;
    }
    if p.no_new_privileges {
        check(sys::set_no_new_privs(), Stage::NoNewPrivileges, 0)?;
    }
    for (i, (from, to)) in [(a.stdin_fd, 0), (a.stdout_fd, 1), (a.stderr_fd, 2)]
        .into_iter()
        .enumerate()
    {
        // SAFETY: 0..2 of the parent's copy are given up for the container's
        // stdio; the sources are 3 or above (see `spawn::high_fd`).
        check(unsafe { sys::dup2(from, to) }, Stage::Stdio, i as u32)?;
    }
    if a.join_late {
        super::join_cgroup(a)?;
    }
    // Closed, not close-on-exec: /proc/self/fd/N must name nothing of the
    // agent's by the time the cwd is resolved. The error pipe stays (it is
    // close-on-exec, and chdir into a pipe fails).
    let (err, max) = (a.error_fd as libc::c_uint, c_int::MAX as libc::c_uint);
    if err > 3 {
        // SAFETY: nothing after this uses an fd but 0..2 and the error pipe.
        check(unsafe { sys::close_range(3, err - 1) }, Stage::CloseFds, 0)?;
    }
    check(
        // SAFETY: as above.
        unsafe { sys::close_range(err.max(2) + 1, max) },
        Stage::CloseFds,
        1,
    )?;
    check(sys::chdir(&p.cwd), Stage::Chdir, 0)?;
    cwd_is_inside_root().map_err(|e| (Stage::CwdOutsideRoot, 0, e))?;
    // Last, so that none of the setup above runs under the filter; with
    // no_new_privs set this needs no capability.
    for (i, filter) in p.seccomp.iter().flatten().enumerate() {
        check(sys::install_seccomp(filter), Stage::Seccomp, i as u32)?;
    }
    if init {
        // Returns in the command; PID 1 stays in `init` for good.
        super::init::split(a.error_fd)?;
    }
    let mut last = (0, libc::ENOENT);
    for (i, path) in p.exec_candidates.iter().enumerate() {
        // SAFETY: argv and envp come from `plan::ptr_array` over the plan's
        // strings, which live until exec.
        unsafe { sys::execve(path, a.argv, a.envp) };
        let e = sys::errno();
        // Like execvp: keep searching past "not here", remember real errors.
        if e != libc::ENOENT && e != libc::ENOTDIR || last.1 == libc::ENOENT {
            last = (i as u32, e);
        }
    }
    Err((Stage::Exec, last.0, last.1))
}

/// Whether the working directory is reachable from the root: the kernel's
/// `getcwd` answers "(unreachable)/…" (or ENOENT) for a directory outside
/// it, and the path it gives must lead back to the very same directory.
pub(super) fn cwd_is_inside_root() -> Result<(), c_int> {
    let mut buf = [0u8; libc::PATH_MAX as usize];
    let n = sys::getcwd(&mut buf);
    if n < 0 {
        return Err(sys::errno());
    }
    if n < 2 || buf[0] != b'/' {
        return Err(libc::EXDEV);
    }
    let Ok(path) = std::ffi::CStr::from_bytes_until_nul(&buf) else {
        return Err(libc::EXDEV);
    };
    let Some(here) = sys::dev_ino(c".") else {
        return Err(sys::errno());
    };
    match sys::dev_ino(path) {
        Some(there) if there == here => Ok(()),
        _ => Err(libc::EXDEV),
    }
}

/// Shrinks the bounding set (needs CAP_SETPCAP, so before the uid switch)
/// and asks the kernel to keep permitted capabilities across that switch.
fn drop_bounding(caps: &CapsPlan) -> Result<(), Failure> {
    for &cap in &caps.drop_bounding {
        // EINVAL: a capability this kernel does not know.
        if sys::capbset_drop(cap) == -1 && sys::errno() != libc::EINVAL {
            return Err((Stage::Capabilities, cap as u32, sys::errno()));
        }
    }
    check(sys::set_keepcaps(), Stage::Capabilities, 100)
}

fn set_capabilities(caps: &CapsPlan) -> Result<(), Failure> {
    let word = |mask: u64, i: u32| (mask >> (32 * i)) as u32;
    let data: [CapData; 2] = [0, 1].map(|i| CapData {
        effective: word(caps.effective, i),
        permitted: word(caps.permitted, i),
        inheritable: word(caps.inheritable, i),
    });
    check_long(sys::capset(&data), Stage::Capabilities, 200)?;
    for &cap in &caps.ambient {
        check(
            sys::ambient_raise(cap),
            Stage::Capabilities,
            300 + cap as u32,
        )?;
    }
    Ok(())
}
