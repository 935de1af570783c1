//! Bounded exec: a command run to completion inside a container under a
//! deadline, keeping only the first few KiB of its output.
//!
//! Exec health probes run this way. Going through [`Runtime::exec`] makes a
//! probe exactly as confined as the container's own processes (its
//! namespaces, root and cgroup, the spec's user, its capabilities,
//! no_new_privs and seccomp filter): a probe is a program from the image,
//! and must never run with the agent's privileges. At the deadline the exec
//! helper is told to give up and kills the command's whole process group.
//! Output past the cap is still read, and dropped, so a chatty command never
//! blocks on a full pipe; the command's exit (the helper's pidfd becoming
//! readable) ends the wait even if a background child keeps a pipe open.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;
use std::time::{Duration, Instant};

use super::{ExecRequest, ExitStatus, Runtime, RuntimeError};

/// How a bounded command ended, and what it printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoundedOutput {
    /// `None`: the deadline passed and the command was killed.
    pub status: Option<ExitStatus>,
    /// The first bytes of stdout and stderr, in the order they were read.
    pub output: Vec<u8>,
    /// More was printed than `output` holds.
    pub truncated: bool,
}

impl Runtime {
    /// Runs `argv` in container `id` (bundle `bundle_dir`, init process
    /// `container_pid`) as [`Runtime::exec`] does, with no stdin; waits at
    /// most `timeout` from now, keeping at most `max_output` bytes of
    /// output. Blocking.
    pub fn exec_bounded(
        &self,
        bundle_dir: &Path,
        id: &str,
        container_pid: i32,
        argv: Vec<String>,
        timeout: Duration,
        max_output: usize,
    ) -> Result<BoundedOutput, RuntimeError> {
        let deadline = Instant::now() + timeout;
        let req = ExecRequest {
            argv,
            ..Default::default()
        };
        let mut process = self.exec(bundle_dir, id, container_pid, &req)?;
        drop(process.stdin.take());
        let sys = |op: &'static str| {
            move |source: std::io::Error| RuntimeError::Sys {
                id: id.into(),
                op,
                source,
            }
        };
        let mut streams: Vec<File> = vec![process.stdout.try_clone().map_err(sys("dup stdout"))?];
        streams.extend(process.stderr.take());
        for s in &streams {
            nonblocking(s.as_raw_fd()).map_err(sys("set O_NONBLOCK"))?;
        }
        let mut out = BoundedOutput {
            status: None,
            output: Vec::new(),
            truncated: false,
        };
        let exit_fd = process.exit_fd().as_raw_fd();
        let mut exited = false;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if exited || left.is_zero() {
                break;
            }
            let mut fds: Vec<libc::pollfd> = streams
                .iter()
                .map(|s| s.as_raw_fd())
                .chain([exit_fd])
                .map(|fd| libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                })
                .collect();
            let ms = left.as_millis().clamp(1, i32::MAX as u128) as libc::c_int;
            // SAFETY: `fds` is a live array of pollfds of fds we own.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
            if n == -1 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                process.terminate();
                let _ = process.wait_blocking();
                return Err(sys("poll exec output")(e));
            }
            exited = fds.last().is_some_and(|f| f.revents != 0);
            // Read what is there; after the exit, whatever is left too.
            let mut open = Vec::new();
            for (s, f) in streams.into_iter().zip(&fds) {
                if (f.revents == 0 && !exited) || drain(&s, &mut out, max_output) {
                    open.push(s);
                }
            }
            streams = open;
        }
        if !exited {
            process.terminate();
        }
        let status = process.wait_blocking()?;
        if exited {
            out.status = Some(status);
        }
        Ok(out)
    }
}

/// Reads everything `from` has now; true while it stays open.
fn drain(mut from: &File, out: &mut BoundedOutput, max: usize) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        match from.read(&mut buf) {
            Ok(0) => return false,
            Ok(n) => {
                let keep = n.min(max.saturating_sub(out.output.len()));
                out.output.extend_from_slice(&buf[..keep]);
                out.truncated |= keep < n;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return e.kind() == std::io::ErrorKind::WouldBlock,
        }
    }
}

fn nonblocking(fd: RawFd) -> std::io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
    fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(())
}
