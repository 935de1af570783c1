//! Monitors: how containers outlive the agent.
//!
//! A container's init process must have a parent that reaps it and learns
//! its exit status. If that parent were the agent, stopping, crashing or
//! upgrading the agent would orphan the container and lose its exit code.
//! So the agent starts each container through a tiny monitor: its own
//! binary re-executed as `drover-agent monitor …` (from a sealed in-memory
//! copy, see [`super::sealed_exe`]: the container's init is a clone of the
//! monitor until it execs), in a session of its own
//! (a terminal's Ctrl-C or hang-up never reaches it). The monitor starts the
//! container with the ordinary [`Runtime`] (cgroup, namespaces; stdout and
//! stderr a pipe each, copied as records into the size-rotated log, see
//! [`super::log`]),
//! writes the state file `<bundle>/monitor.json` (its own
//! pid and start time, the container's pid and start time), tells the agent
//! `{"pid":N}` (or `{"error":"…"}`) on a pipe, and then only copies the
//! container's output into its log until the pipe closes. When the
//! container exits the monitor records `exit` in the state file (written to
//! a temporary file and renamed, so a reader never sees half of it) and
//! exits too. It holds no lock, no socket and no agent state; it uses a few
//! hundred KiB of memory.
//!
//! The agent holds a pidfd on the container (to signal it) and one on the
//! monitor (readable when the monitor exits, i.e. when the exit status is
//! on disk). A new agent process re-adopts a container by reading the state
//! file: if the monitor still runs (same pid *and* start time, so a reused
//! pid is never mistaken for it) it opens both pidfds again and carries on;
//! if the monitor has exited, the recorded exit status is reported as if
//! the agent had seen it happen. The container's cgroup stays in place
//! until the agent removes it, so its accounting survives the gap.

use std::io::Write;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

use super::container::Reaper;
use super::{Container, ExitStatus, Runtime, RuntimeError};

/// The file a monitor keeps in the bundle directory.
pub const STATE_FILE: &str = "monitor.json";

/// What a monitor records about its container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub monitor_pid: i32,
    /// Start time of the monitor (clock ticks since boot, /proc/pid/stat).
    pub monitor_start: u64,
    pub container_pid: i32,
    pub container_start: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit: Option<Exit>,
}

/// How the container ended, as the monitor saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exit {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
}

impl Exit {
    pub fn status(self) -> ExitStatus {
        match (self.code, self.signal) {
            (_, Some(sig)) => ExitStatus::Signaled(sig),
            (Some(code), None) => ExitStatus::Exited(code),
            (None, None) => ExitStatus::Exited(255),
        }
    }

    fn from_status(s: ExitStatus) -> Exit {
        match s {
            ExitStatus::Exited(c) => Exit {
                code: Some(c),
                signal: None,
            },
            ExitStatus::Signaled(sig) => Exit {
                code: None,
                signal: Some(sig),
            },
        }
    }
}

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> RuntimeError {
    let path = path.to_path_buf();
    move |source| RuntimeError::Io { op, path, source }
}

impl State {
    pub fn load(path: &Path) -> Result<State, RuntimeError> {
        let text = std::fs::read(path).map_err(io("read monitor state", path))?;
        serde_json::from_slice(&text).map_err(|e| {
            io("parse monitor state", path)(std::io::Error::new(std::io::ErrorKind::InvalidData, e))
        })
    }

    /// Writes atomically: a temporary file renamed over the old one.
    fn save(&self, path: &Path) -> Result<(), RuntimeError> {
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_vec(self).expect("plain data serializes");
        std::fs::write(&tmp, text).map_err(io("write monitor state", &tmp))?;
        std::fs::rename(&tmp, path).map_err(io("rename monitor state", path))
    }
}

/// Start time of `pid` in clock ticks since boot; `None` if it is gone.
pub fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: split after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

fn pidfd_open(pid: i32) -> std::io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this fd; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// A pidfd on `pid` if it is still the process that started at `start`.
fn open_if_same(pid: i32, start: u64) -> Option<OwnedFd> {
    let fd = pidfd_open(pid).ok()?;
    // Checked after opening: the pidfd pins the process, so a match now
    // means the fd names the process we recorded.
    (start_time(pid) == Some(start)).then_some(fd)
}

/// What the monitor tells the agent once the container runs (or failed).
#[derive(Debug, Serialize, Deserialize)]
struct Hello {
    #[serde(default)]
    pid: Option<i32>,
    #[serde(default)]
    error: Option<String>,
}

/// What a monitor asked to (`--ask-before-start`) says once the container
/// exists and waits: `{"created":PID}`, or why it could not make it.
#[derive(serde::Deserialize)]
struct Created {
    #[serde(default)]
    created: Option<i32>,
    #[serde(default)]
    error: Option<String>,
}

/// How to start monitors: the binary that has the `monitor` subcommand.
#[derive(Debug, Clone)]
pub struct MonitorConfig {
    /// Monitors run from a sealed copy of this file, made once per process
    /// (`/proc/self/exe` of an agent that runs sealed is used as it is).
    pub exe: PathBuf,
    pub cgroup_root: PathBuf,
    /// Rotate a container's log once it would exceed this size (0: never).
    pub log_max_bytes: u64,
    /// What the monitor fills in where a spec sets no limit.
    pub defaults: super::ResourceDefaults,
}

impl Runtime {
    /// Starts the bundle as container `id` under a monitor process, stdout
    /// and stderr appended to `log`. Returns once the command has been exec'd.
    /// Blocking.
    ///
    /// With `fence_clock`, the monitor also fences the container: it stops
    /// it once that clock (see `crate::fence_clock`) says no leader has
    /// acknowledged the node for the node timeout, even if the agent is gone.
    ///
    /// With `before`, the monitor stops once the container exists, says so
    /// (`{"created":PID}`), and goes on only when told to (`go` on its
    /// stdin): `before` runs in between (see [`Runtime::start_then`]).
    pub fn start_monitored(
        &self,
        monitor: &MonitorConfig,
        bundle_dir: &Path,
        id: &str,
        log: &Path,
        fence_clock: Option<&Path>,
        before: Option<super::BeforeStart<'_>>,
    ) -> Result<Container, RuntimeError> {
        let state = bundle_dir.join(STATE_FILE);
        let _ = std::fs::remove_file(&state);
        let sealed = super::sealed_exe::sealed(&monitor.exe)?;
        let mut cmd = Command::new(super::sealed_exe::exec_path(&sealed));
        cmd.arg0("drover-agent").arg("monitor");
        if let Some(clock) = fence_clock {
            cmd.arg("--fence-clock").arg(clock);
        }
        if before.is_some() {
            cmd.arg("--ask-before-start");
        }
        let mut child = cmd
            .arg("--bundle")
            .arg(bundle_dir)
            .arg("--log")
            .arg(log)
            .arg("--cgroup-root")
            .arg(&monitor.cgroup_root)
            .arg("--log-max-bytes")
            .arg(monitor.log_max_bytes.to_string())
            .arg("--default-pids-limit")
            .arg(monitor.defaults.pids.unwrap_or(0).to_string())
            .arg(id)
            .stdin(if before.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(io("start monitor", &monitor.exe))?;
        let mut out = std::io::BufReader::new(child.stdout.take().expect("piped"));
        if let Some(before) = before {
            let mut stdin = child.stdin.take().expect("piped");
            let mut line = String::new();
            let _ = std::io::BufRead::read_line(&mut out, &mut line);
            let created: Created = serde_json::from_str(&line).unwrap_or(Created {
                created: None,
                error: Some(format!(
                    "monitor said {line:?} where it should say it made the container"
                )),
            });
            let Some(pid) = created.created else {
                drop(stdin);
                let _ = child.wait();
                return Err(RuntimeError::Monitor {
                    id: id.into(),
                    message: created.error.unwrap_or_default(),
                });
            };
            let verdict = before(pid);
            let _ = writeln!(stdin, "{}", if verdict.is_ok() { "go" } else { "abort" });
            drop(stdin);
            if let Err(message) = verdict {
                let _ = child.wait();
                return Err(RuntimeError::BeforeStart {
                    id: id.into(),
                    message,
                });
            }
        }
        let mut line = String::new();
        let read = std::io::BufRead::read_line(&mut out, &mut line);
        let hello: Hello = serde_json::from_str(&line).unwrap_or(Hello {
            pid: None,
            error: Some(format!(
                "monitor said {line:?} ({})",
                read.err().map_or("no error".into(), |e| e.to_string())
            )),
        });
        let Some(pid) = hello.pid else {
            let _ = child.wait();
            return Err(RuntimeError::Monitor {
                id: id.into(),
                message: hello.error.unwrap_or_default(),
            });
        };
        let sys = |op: &'static str| {
            move |source| RuntimeError::Sys {
                id: id.into(),
                op,
                source,
            }
        };
        let monitor_fd = pidfd_open(child.id() as i32).map_err(sys("pidfd_open monitor"))?;
        // The container may already have exited: then its pidfd cannot be
        // opened, and the monitor's state file holds the status.
        let pidfd = match pidfd_open(pid) {
            Ok(fd) => fd,
            Err(_) => monitor_fd.try_clone().map_err(sys("dup pidfd"))?,
        };
        let reaper = Reaper::Monitor {
            pidfd: monitor_fd,
            pid: child.id() as i32,
            state,
            our_child: true,
        };
        // `child` is reaped through the pidfd (waitid P_PIDFD), not here.
        std::mem::forget(child);
        Ok(Container::with_reaper(
            id.into(),
            pid,
            pidfd,
            reaper,
            self.cgroups.clone(),
        ))
    }

    /// Re-adopts container `id` whose bundle is `bundle_dir` after an agent
    /// restart. `None` if there is nothing to adopt (no state file, or the
    /// monitor died without recording an exit: then whatever is left in the
    /// container's cgroup is killed by the caller's cleanup).
    pub fn adopt(&self, bundle_dir: &Path, id: &str) -> Option<Container> {
        let path = bundle_dir.join(STATE_FILE);
        let state = State::load(&path).ok()?;
        let monitor_fd = open_if_same(state.monitor_pid, state.monitor_start);
        let monitor_fd = match (monitor_fd, state.exit) {
            (Some(fd), _) => fd,
            // The monitor has exited and the status is on disk, which is
            // all `wait` reads; the fd is a placeholder never polled.
            (None, Some(_)) => pidfd_open(std::process::id() as i32).ok()?,
            (None, None) => return None,
        };
        let pidfd = match open_if_same(state.container_pid, state.container_start) {
            Some(fd) => fd,
            None => monitor_fd.try_clone().ok()?,
        };
        let reaper = Reaper::Monitor {
            pidfd: monitor_fd,
            pid: state.monitor_pid,
            state: path,
            our_child: false,
        };
        let container = Container::with_reaper(
            id.into(),
            state.container_pid,
            pidfd,
            reaper,
            self.cgroups.clone(),
        );
        Some(container)
    }
}

/// A monitor's command line: `drover-agent monitor …`, or `drover
/// monitor …` for the monitors of `drover dev` (see [`main_if_monitor`]).
/// Internal: the agent starts monitors; people do not.
#[derive(Debug, clap::Args)]
pub struct MonitorArgs {
    #[arg(long)]
    pub bundle: PathBuf,
    #[arg(long)]
    pub log: PathBuf,
    #[arg(long, default_value = "/sys/fs/cgroup")]
    pub cgroup_root: PathBuf,
    #[arg(long, default_value_t = 0)]
    pub log_max_bytes: u64,
    /// The pids limit of a container whose spec sets none (0: none).
    #[arg(long, default_value_t = super::DEFAULT_PIDS_LIMIT as u64)]
    pub default_pids_limit: u64,
    /// Stop the container once this fencing clock expires (the agent's
    /// `<state-dir>/fence-clock`), even if the agent is gone.
    #[arg(long)]
    pub fence_clock: Option<PathBuf>,
    /// Say when the container exists and wait for `go` on stdin before
    /// its command runs (the agent sets up its network in between).
    #[arg(long)]
    pub ask_before_start: bool,
    pub id: String,
}

impl MonitorArgs {
    /// Serves the container (see [`serve`]); the monitor's exit code.
    pub fn run(self) -> i32 {
        let runtime = Runtime::new(crate::cgroups::manager_for(self.cgroup_root))
            .with_defaults(super::ResourceDefaults::with_pids(self.default_pids_limit));
        serve(
            &runtime,
            &self.bundle,
            &self.id,
            &self.log,
            self.log_max_bytes,
            self.fence_clock,
            self.ask_before_start,
        )
    }
}

/// For a binary that embeds an agent (`drover dev`) and starts monitors
/// from its own sealed copy: when this process was started as one
/// (`ARGV0 monitor …`), serves it and returns its exit code; otherwise
/// `None`. Call it first in `main`, before any runtime or thread starts.
pub fn main_if_monitor() -> Option<i32> {
    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: MonitorArgs,
    }
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_none_or(|a| a != "monitor") {
        return None;
    }
    args.remove(1);
    let cli = <Cli as clap::Parser>::parse_from(args);
    Some(cli.args.run())
}

/// The monitor process's main: start the container, report, copy its
/// output into the log, wait, record. Returns the monitor's exit code.
///
/// With `ask`, the monitor says when the container exists
/// (`{"created":PID}`) and waits for `go` on stdin before its command may
/// run (anything else calls the start off).
pub fn serve(
    runtime: &Runtime,
    bundle_dir: &Path,
    id: &str,
    log: &Path,
    log_max: u64,
    fence_clock: Option<PathBuf>,
    ask: bool,
) -> i32 {
    // Our own session: no terminal signal of the agent's reaches us.
    let _ = nix::unistd::setsid();
    for sig in [libc::SIGHUP, libc::SIGINT, libc::SIGPIPE, libc::SIGTERM] {
        // SAFETY: setting a signal to SIG_IGN installs no handler code; the
        // container's child resets every disposition before exec.
        unsafe { libc::signal(sig, libc::SIG_IGN) };
    }
    let mut out = std::io::stdout();
    let fail = |out: &mut std::io::Stdout, e: String| {
        let hello = Hello {
            pid: None,
            error: Some(e),
        };
        let _ = writeln!(out, "{}", serde_json::to_string(&hello).unwrap_or_default());
        1
    };
    let mut log_file = match super::log::RotatingLog::open(log, log_max) {
        Ok(f) => f,
        Err(e) => return fail(&mut out, format!("log {}: {e}", log.display())),
    };
    let (outputs, stdio) = match output_pipes() {
        Ok(p) => p,
        Err(e) => return fail(&mut out, format!("pipe: {e}")),
    };
    let mut ask_agent = |pid: i32| {
        if !ask {
            return Ok(());
        }
        let mut out = std::io::stdout();
        let _ = writeln!(out, "{{\"created\":{pid}}}");
        let _ = out.flush();
        let mut answer = String::new();
        let _ = std::io::stdin().read_line(&mut answer);
        match answer.trim() {
            "go" => Ok(()),
            _ => Err("the agent called the start off".to_string()),
        }
    };
    let container = match runtime.start_then(bundle_dir, id, stdio, &mut ask_agent) {
        Ok(c) => c,
        Err(e) => return fail(&mut out, e.to_string()),
    };
    let pid = container.pid();
    let me = std::process::id() as i32;
    let mut state = State {
        monitor_pid: me,
        monitor_start: start_time(me).unwrap_or(0),
        container_pid: pid,
        container_start: start_time(pid).unwrap_or(0),
        exit: None,
    };
    let path = bundle_dir.join(STATE_FILE);
    if let Err(e) = state.save(&path) {
        let _ = container.stop_blocking(std::time::Duration::ZERO);
        return fail(&mut out, e.to_string());
    }
    let _ = writeln!(out, "{{\"pid\":{pid}}}");
    let _ = out.flush();
    if let Some(clock) = fence_clock {
        if let Ok(pidfd) = pidfd_open(pid) {
            std::thread::spawn(move || watchdog(&clock, pidfd));
        }
    }
    // The agent may go away; never die of writing to its closed pipe.
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        // SAFETY: dup2 onto our own stdout with a valid fd.
        unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), 1) };
    }
    // Every process of the container shares its pid namespace, which the
    // kernel empties when init exits, so the pipes end at the latest then.
    copy_output(outputs, &mut log_file);
    let status = match container.wait_blocking() {
        Ok(s) => s,
        Err(_) => ExitStatus::Exited(255),
    };
    state.exit = Some(Exit::from_status(status));
    let _ = state.save(&path);
    // The cgroup stays until the agent has read what it needs from it.
    std::mem::forget(container);
    0
}

/// Fences the container while the agent cannot: once `clock` says no
/// leader acknowledged the node for the node timeout, SIGTERM, then SIGKILL
/// after `drover_proto::fencing::FENCE_STOP_GRACE` (the bound the scheduler
/// counts on before it starts the replica elsewhere). The container is
/// signalled through its pidfd, so a reused pid is never hit.
fn watchdog(clock: &Path, pidfd: OwnedFd) {
    use drover_proto::fencing::{FENCE_CHECK, FENCE_STOP_GRACE};
    let signal = |sig: libc::c_int| {
        // SAFETY: pidfd_send_signal with a pidfd we own, a valid signal
        // number, no siginfo and no flags; it reads no memory of ours.
        unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                std::os::fd::AsRawFd::as_raw_fd(&pidfd),
                sig,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        }
    };
    loop {
        std::thread::sleep(FENCE_CHECK);
        if crate::fence_clock::expired(clock).is_some() {
            if signal(libc::SIGTERM) != 0 {
                return; // already gone
            }
            std::thread::sleep(FENCE_STOP_GRACE);
            signal(libc::SIGKILL);
            return;
        }
    }
}

/// A pipe each for the container's stdout and stderr: (read ends, stdio).
fn output_pipes() -> std::io::Result<([OwnedFd; 2], super::Stdio)> {
    let (out_r, out_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let (err_r, err_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    Ok((
        [out_r, err_r],
        super::Stdio {
            stdout: out_w,
            stderr: err_w,
        },
    ))
}

/// How long an unfinished line waits for its end before it is written
/// as a piece (a prompt, a progress bar).
const PARTIAL_AFTER_MS: u16 = 200;

/// Copies the container's stdout and stderr into `log` as records until
/// both pipes end.
fn copy_output(pipes: [OwnedFd; 2], log: &mut super::log::RotatingLog) {
    use super::log::{now_ns, Lines, Stream};
    use nix::poll::{PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    use std::time::{Duration, Instant};
    struct Pipe {
        file: std::fs::File,
        lines: Lines,
        /// When it last said anything.
        heard: Instant,
    }
    let quiet = Duration::from_millis(PARTIAL_AFTER_MS.into());
    let mut open: Vec<Pipe> = pipes
        .into_iter()
        .zip([Stream::Stdout, Stream::Stderr])
        .map(|(fd, stream)| Pipe {
            file: std::fs::File::from(fd),
            lines: Lines::new(stream),
            heard: Instant::now(),
        })
        .collect();
    let mut buf = vec![0u8; 64 * 1024];
    let mut out = Vec::with_capacity(64 * 1024);
    while !open.is_empty() {
        // Until the soonest unfinished line has been quiet long enough.
        let wait = open
            .iter()
            .filter(|p| p.lines.holding())
            .map(|p| quiet.saturating_sub(p.heard.elapsed()))
            .min();
        let timeout = match wait {
            Some(w) => PollTimeout::from(w.as_millis().clamp(1, u16::MAX.into()) as u16),
            None => PollTimeout::NONE,
        };
        let ready: Vec<bool> = {
            let mut fds: Vec<PollFd> = open
                .iter()
                .map(|p| PollFd::new(p.file.as_fd(), PollFlags::POLLIN))
                .collect();
            match nix::poll::poll(&mut fds, timeout) {
                Ok(_) => fds.iter().map(|p| p.any().unwrap_or(false)).collect(),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => vec![true; open.len()],
            }
        };
        let at = now_ns();
        let mut ended = Vec::new();
        for (i, p) in open.iter_mut().enumerate() {
            if ready[i] {
                match std::io::Read::read(&mut p.file, &mut buf) {
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Ok(0) | Err(_) => {
                        p.lines.flush(at, &mut out);
                        ended.push(i);
                    }
                    Ok(n) => {
                        p.lines.push(&buf[..n], at, &mut out);
                        p.heard = Instant::now();
                    }
                }
            } else if p.lines.holding() && p.heard.elapsed() >= quiet {
                // Quiet mid-line (however busy the other stream): what
                // there is, as a piece.
                p.lines.flush(at, &mut out);
            }
        }
        for i in ended.into_iter().rev() {
            open.remove(i);
        }
        if !out.is_empty() {
            let _ = log.write(&out);
            out.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_and_exit_maps_to_status() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STATE_FILE);
        let mut s = State {
            monitor_pid: 10,
            monitor_start: 99,
            container_pid: 11,
            container_start: 100,
            exit: None,
        };
        s.save(&path).unwrap();
        assert_eq!(State::load(&path).unwrap(), s);
        s.exit = Some(Exit::from_status(ExitStatus::Signaled(9)));
        s.save(&path).unwrap();
        assert_eq!(
            State::load(&path).unwrap().exit.unwrap().status(),
            ExitStatus::Signaled(9)
        );
        assert_eq!(
            Exit::from_status(ExitStatus::Exited(7)).status(),
            ExitStatus::Exited(7)
        );
    }

    #[test]
    fn start_time_identifies_a_process() {
        let me = std::process::id() as i32;
        assert!(start_time(me).is_some());
        assert!(open_if_same(me, start_time(me).unwrap() + 1).is_none());
        assert!(open_if_same(me, start_time(me).unwrap()).is_some());
    }
}
