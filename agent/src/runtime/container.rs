//! A running container: its init process, held by pidfd.
//!
//! A pidfd names one process for its whole life, so signals and waits can
//! never hit a recycled pid. It becomes readable when the process exits,
//! which lets tokio wait on it without a SIGCHLD handler or a thread.
//!
//! The init process is either our own child (we reap it with `waitid`) or
//! the child of a [`super::monitor`] process, which reaps it and records its
//! exit status in a state file before exiting itself; then we wait for the
//! monitor's pidfd and read the status from that file.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use nix::sys::signal::Signal;
use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
use tokio::io::unix::AsyncFd;

use super::RuntimeError;
use crate::cgroups::CgroupManager;

/// How the container's init process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    Exited(i32),
    Signaled(i32),
}

impl ExitStatus {
    /// Shell convention: the exit code, or 128 + signal number.
    pub fn code(self) -> i32 {
        match self {
            ExitStatus::Exited(c) => c,
            ExitStatus::Signaled(s) => 128 + s,
        }
    }

    pub fn success(self) -> bool {
        self == ExitStatus::Exited(0)
    }
}

/// Who reaps the init process, and so where its exit status comes from.
#[derive(Debug)]
pub(crate) enum Reaper {
    /// We are its parent.
    Us,
    /// A monitor process is its parent.
    Monitor {
        /// The monitor's pidfd: readable once the monitor has exited.
        pidfd: OwnedFd,
        pid: i32,
        /// Where the monitor records the exit status.
        state: PathBuf,
        /// The monitor is our child (we started it) and must be reaped.
        our_child: bool,
    },
}

#[derive(Debug)]
pub struct Container {
    id: String,
    pid: i32,
    reaper: Reaper,
    /// A duplicate of `pidfd` registered with tokio on the first `wait`.
    async_fd: OnceLock<AsyncFd<OwnedFd>>,
    pidfd: OwnedFd,
    status: Mutex<Option<ExitStatus>>,
    cgroups: Arc<dyn CgroupManager>,
    /// Set once `stop` removed the cgroup, so `Drop` never touches a cgroup
    /// that a later container with the same id may own.
    cgroup_removed: AtomicBool,
}

impl Container {
    pub(crate) fn new(
        id: String,
        pid: i32,
        pidfd: OwnedFd,
        cgroups: Arc<dyn CgroupManager>,
    ) -> Self {
        Self::with_reaper(id, pid, pidfd, Reaper::Us, cgroups)
    }

    pub(crate) fn with_reaper(
        id: String,
        pid: i32,
        pidfd: OwnedFd,
        reaper: Reaper,
        cgroups: Arc<dyn CgroupManager>,
    ) -> Self {
        Container {
            id,
            pid,
            reaper,
            async_fd: OnceLock::new(),
            pidfd,
            status: Mutex::new(None),
            cgroups,
            cgroup_removed: AtomicBool::new(false),
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The host pid of the container's init process.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The pid of the monitor process that is the container's parent, if any.
    pub fn monitor_pid(&self) -> Option<i32> {
        match &self.reaper {
            Reaper::Us => None,
            Reaper::Monitor { pid, .. } => Some(*pid),
        }
    }

    /// The fd that becomes readable when the exit status is available.
    fn exit_fd(&self) -> &OwnedFd {
        match &self.reaper {
            Reaper::Us => &self.pidfd,
            Reaper::Monitor { pidfd, .. } => pidfd,
        }
    }

    fn sys(&self, op: &'static str) -> impl FnOnce(nix::errno::Errno) -> RuntimeError + '_ {
        move |e| RuntimeError::Sys {
            id: self.id.clone(),
            op,
            source: e.into(),
        }
    }

    fn cached(&self) -> Option<ExitStatus> {
        *self.status.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends `signal` to the init process; a no-op once it has exited.
    pub fn kill(&self, signal: Signal) -> Result<(), RuntimeError> {
        if self.cached().is_some() {
            return Ok(());
        }
        // SAFETY: pidfd_send_signal with a pidfd we own and a null siginfo.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.pidfd.as_raw_fd(),
                signal as libc::c_int,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if rc == -1 {
            let e = nix::errno::Errno::last();
            if e != nix::errno::Errno::ESRCH {
                return Err(self.sys("signal")(e));
            }
        }
        Ok(())
    }

    /// Reaps the process if it has exited; `None` while it runs.
    pub fn try_wait(&self) -> Result<Option<ExitStatus>, RuntimeError> {
        self.reap(WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG)
    }

    /// Blocks until the process exits.
    pub fn wait_blocking(&self) -> Result<ExitStatus, RuntimeError> {
        loop {
            if let Some(s) = self.reap(WaitPidFlag::WEXITED)? {
                return Ok(s);
            }
        }
    }

    /// Waits for exit without blocking a tokio worker.
    pub async fn wait(&self) -> Result<ExitStatus, RuntimeError> {
        if let Some(s) = self.try_wait()? {
            return Ok(s);
        }
        let afd = match self.async_fd.get() {
            Some(a) => a,
            None => {
                let err = |source| RuntimeError::Sys {
                    id: self.id.clone(),
                    op: "register pidfd",
                    source,
                };
                let dup = self.exit_fd().try_clone().map_err(err)?;
                // SAFETY: the AsyncFd owns `dup`, so the fd stays open and
                // names the same pidfd for the AsyncFd's whole life.
                let a =
                    unsafe { AsyncFd::register_with_interest(dup, tokio::io::Interest::READABLE) }
                        .map_err(|e| err(e.into_parts().1))?;
                let _ = self.async_fd.set(a);
                self.async_fd.get().expect("just set")
            }
        };
        loop {
            let mut guard = afd.readable().await.map_err(|source| RuntimeError::Sys {
                id: self.id.clone(),
                op: "poll pidfd",
                source,
            })?;
            if let Some(s) = self.try_wait()? {
                return Ok(s);
            }
            guard.clear_ready();
        }
    }

    fn reap(&self, flags: WaitPidFlag) -> Result<Option<ExitStatus>, RuntimeError> {
        let mut status = self.status.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = *status {
            return Ok(Some(s));
        }
        if let Reaper::Monitor {
            pidfd,
            state,
            our_child,
            ..
        } = &self.reaper
        {
            let s = self.reap_monitor(pidfd, state, *our_child, flags)?;
            *status = s;
            return Ok(s);
        }
        let ws = loop {
            match waitid(Id::PIDFd(self.pidfd.as_fd()), flags) {
                Err(nix::errno::Errno::EINTR) => continue,
                r => break r.map_err(self.sys("wait"))?,
            }
        };
        let s = match ws {
            WaitStatus::Exited(_, code) => ExitStatus::Exited(code),
            WaitStatus::Signaled(_, sig, _) => ExitStatus::Signaled(sig as i32),
            _ => return Ok(None),
        };
        *status = Some(s);
        Ok(Some(s))
    }

    /// The status the monitor recorded, once it has recorded one.
    fn reap_monitor(
        &self,
        pidfd: &OwnedFd,
        state: &std::path::Path,
        our_child: bool,
        flags: WaitPidFlag,
    ) -> Result<Option<ExitStatus>, RuntimeError> {
        let recorded = || {
            super::monitor::State::load(state)
                .ok()
                .and_then(|s| s.exit)
                .map(|e| e.status())
        };
        // A recorded status is final even while the monitor is still exiting.
        let before = recorded();
        let block = before.is_some() || !flags.contains(WaitPidFlag::WNOHANG);
        let exited = if our_child {
            let flags = if block {
                WaitPidFlag::WEXITED
            } else {
                WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG
            };
            loop {
                match waitid(Id::PIDFd(pidfd.as_fd()), flags) {
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(nix::errno::Errno::ECHILD) => break true,
                    Ok(WaitStatus::StillAlive) => break false,
                    r => break r.map(|_| true).map_err(self.sys("wait for monitor"))?,
                }
            }
        } else if before.is_some() {
            true
        } else {
            let mut pfd = libc::pollfd {
                fd: pidfd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            loop {
                // SAFETY: one pollfd on our stack, for a pidfd we own.
                let n = unsafe { libc::poll(&mut pfd, 1, if block { -1 } else { 0 }) };
                if n == -1 && nix::errno::Errno::last() == nix::errno::Errno::EINTR {
                    continue;
                }
                break n > 0;
            }
        };
        if !exited {
            return Ok(None);
        }
        match before.or_else(recorded) {
            Some(s) => Ok(Some(s)),
            None => Err(RuntimeError::Sys {
                id: self.id.clone(),
                op: "monitor ended without recording an exit status",
                source: std::io::Error::from_raw_os_error(libc::ESRCH),
            }),
        }
    }

    /// SIGTERM, then SIGKILL after `grace`; waits for exit and removes the
    /// cgroup (killing anything left in it). The rootfs belongs to the
    /// bundle: call `Bundle::cleanup` afterwards.
    pub async fn stop(&self, grace: Duration) -> Result<ExitStatus, RuntimeError> {
        let status = match self.try_wait()? {
            Some(s) => s,
            None => {
                self.kill(Signal::SIGTERM)?;
                match tokio::time::timeout(grace, self.wait()).await {
                    Ok(s) => s?,
                    Err(_) => {
                        self.kill(Signal::SIGKILL)?;
                        self.wait().await?
                    }
                }
            }
        };
        self.remove_cgroup()?;
        Ok(status)
    }

    fn remove_cgroup(&self) -> Result<(), RuntimeError> {
        self.cgroups.remove(&self.id)?;
        self.cgroup_removed.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// Blocking `stop` for callers outside an async runtime.
    pub fn stop_blocking(&self, grace: Duration) -> Result<ExitStatus, RuntimeError> {
        let status = match self.try_wait()? {
            Some(s) => s,
            None => {
                self.kill(Signal::SIGTERM)?;
                let deadline = std::time::Instant::now() + grace;
                loop {
                    if let Some(s) = self.try_wait()? {
                        break s;
                    }
                    if std::time::Instant::now() >= deadline {
                        self.kill(Signal::SIGKILL)?;
                        break self.wait_blocking()?;
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        };
        self.remove_cgroup()?;
        Ok(status)
    }
}

impl Drop for Container {
    /// A container handle never leaks: if it was not stopped, its process
    /// is killed and reaped and its cgroup removed here (best effort).
    fn drop(&mut self) {
        if self.cached().is_none() {
            let _ = self.kill(Signal::SIGKILL);
            let _ = self.wait_blocking();
        }
        if matches!(self.reaper, Reaper::Monitor { .. }) && self.cached().is_none() {
            // The monitor died without a status; the container was killed
            // above but its parent is gone: make sure it is not left behind.
            let _ = self.cgroups.remove(&self.id);
        }
        if !self.cgroup_removed.load(Ordering::SeqCst) {
            let _ = self.cgroups.remove(&self.id);
        }
    }
}
