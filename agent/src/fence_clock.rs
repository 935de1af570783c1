//! The fencing clock, kept on disk so that it survives the agent.
//!
//! An agent stops its replicas `T` after it *sent* the last heartbeat a
//! leader acknowledged (see `drover_proto::fencing`). If that moment lived
//! only in the agent's memory, an agent restarted after a long gap would
//! start counting afresh and keep re-adopted replicas running past the
//! moment the scheduler replaced them elsewhere. So every acknowledgement
//! is also written to `<state-dir>/fence-clock`, in the host's monotonic
//! clock (shared by every process, reset only by a reboot, which ends every
//! container anyway), with the node timeout, and a starting agent resumes
//! the clock from it.
//!
//! The same file lets a container's monitor fence it when the agent itself
//! is gone: the monitor checks [`expired`] and stops the container once the
//! node timeout has passed without an acknowledgement (see
//! `runtime::monitor`).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::time::{clock_gettime, ClockId};

const FILE: &str = "fence-clock";

fn path(state_dir: &Path) -> PathBuf {
    state_dir.join(FILE)
}

/// Milliseconds of the host's monotonic clock.
fn monotonic_ms() -> u64 {
    clock_gettime(ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1000 + t.tv_nsec() as u64 / 1_000_000)
        .unwrap_or(0)
}

/// The clock's file in a state directory.
pub fn file(state_dir: &Path) -> PathBuf {
    path(state_dir)
}

/// Records that the heartbeat sent at `sent` was acknowledged, and the node
/// timeout in force.
pub fn save(state_dir: &Path, sent: Instant, node_timeout: Duration) -> std::io::Result<()> {
    let at = monotonic_ms().saturating_sub(sent.elapsed().as_millis() as u64);
    let tmp = state_dir.join(format!("{FILE}.tmp"));
    let text = format!("{at} {}", node_timeout.as_millis());
    // Written whole, then renamed: a reader never sees half of it.
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, path(state_dir)))
        .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path(state_dir).display())))
}

fn read(file: &Path) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(file).ok()?;
    let mut parts = text.split_whitespace();
    let at = parts.next()?.parse().ok()?;
    let timeout = parts
        .next()
        .and_then(|t| t.parse().ok())
        .unwrap_or(u64::MAX);
    Some((at, timeout))
}

/// How long the node has gone without an acknowledgement, if that is longer
/// than the node timeout recorded with it (`None` while it is not, or when
/// nothing readable is recorded).
pub fn expired(file: &Path) -> Option<Duration> {
    let (at, timeout) = read(file)?;
    let silent = monotonic_ms().checked_sub(at)?;
    (silent >= timeout).then(|| Duration::from_millis(silent))
}

/// Where the clock stood when an earlier agent process last recorded it,
/// as an `Instant` of this process; `None` if nothing was recorded (or it
/// was recorded before a reboot).
pub fn load(state_dir: &Path) -> Option<Instant> {
    let (at, _) = read(&path(state_dir))?;
    let ago = monotonic_ms().checked_sub(at)?;
    Instant::now().checked_sub(Duration::from_millis(ago))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path()).is_none());
        let sent = Instant::now() - Duration::from_secs(3);
        save(dir.path(), sent, Duration::from_secs(4)).unwrap();
        assert_eq!(expired(&file(dir.path())), None);
        save(dir.path(), sent, Duration::from_secs(2)).unwrap();
        let silent = expired(&file(dir.path())).unwrap();
        assert!(silent >= Duration::from_secs(3), "{silent:?}");
        let resumed = load(dir.path()).unwrap();
        let ago = resumed.elapsed();
        assert!(
            ago >= Duration::from_millis(2900) && ago < Duration::from_millis(3500),
            "{ago:?}"
        );
        // A clock from another boot (ahead of this one's) is not trusted.
        std::fs::write(path(dir.path()), u64::MAX.to_string()).unwrap();
        assert!(load(dir.path()).is_none());
    }
}
