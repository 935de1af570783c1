//! Leftovers: what a Drover process leaves on the host, and who owns it.
//!
//! An agent changes the machine outside its state directory: a bridge and
//! veths for its containers, their addresses and routes, overlay mounts for
//! their root filesystems, cgroups, and monitor processes that outlive it on
//! purpose. A clean exit removes its share; a SIGKILL or a crash cannot. So
//! everything is made findable and attributable: the agent holds an
//! exclusive `flock` on `<state-dir>/agent.lock` for as long as it runs (the
//! kernel drops it when the process dies, however it dies), and every link
//! it creates carries the alias `drover:<state-dir>`. From a marker anyone
//! can tell whether the owner still runs ([`Owner::Live`]), is gone but
//! left containers running under their monitors ([`Owner::Dormant`], e.g.
//! during an agent upgrade), or is gone for good ([`Owner::Gone`]), in which
//! case the next agent reclaims its network and `drover-agent cleanup`
//! removes its orphaned containers ([`cleanup`], [`orphans`]).

pub mod cleanup;
mod lock;
pub mod orphans;

pub use lock::{Probe, StateLock, LOCK_FILE};

use std::fmt;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum LeftoverError {
    #[error("state dir {state_dir} is in use by another drover agent (pid {pid})")]
    InUse { state_dir: PathBuf, pid: String },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("container {id} of {state_dir}: {message}")]
    Container {
        state_dir: PathBuf,
        id: String,
        message: String,
    },
    #[error("link {link}: {message}")]
    Link { link: String, message: String },
}

/// The alias prefix that marks a link as Drover's.
pub const MARKER_PREFIX: &str = "drover:";

/// The marker for links made by the agent whose state dir is `state_dir`.
pub fn marker(state_dir: &Path) -> String {
    let dir = std::fs::canonicalize(state_dir).unwrap_or_else(|_| state_dir.to_path_buf());
    format!("{MARKER_PREFIX}{}", dir.display())
}

/// The state dir a marker names; `None` for an alias Drover did not write.
pub fn parse_marker(alias: &str) -> Option<PathBuf> {
    let dir = alias.strip_prefix(MARKER_PREFIX)?;
    dir.starts_with('/').then(|| PathBuf::from(dir))
}

/// Who owns a thing on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// A running agent holds the state dir's lock.
    Live { state_dir: PathBuf, pid: String },
    /// No agent runs on the state dir, but containers it started still run
    /// under their monitors: an agent restart may be under way.
    Dormant {
        state_dir: PathBuf,
        containers: usize,
    },
    /// Nothing of the owner is alive: what it left may be reclaimed.
    Gone { state_dir: PathBuf },
    /// No Drover marker, but named as Drover names its links (`drv…`,
    /// `dvh…`): most likely made by a Drover from before the markers, but
    /// nothing tells whether its agent still runs.
    Unmarked { link: String },
    /// No Drover marker.
    Foreign,
}

impl Owner {
    /// The owner of a link with alias `alias`.
    pub fn of_alias(alias: Option<&str>) -> Owner {
        match alias.and_then(parse_marker) {
            Some(dir) => Owner::of_state_dir(&dir),
            None => Owner::Foreign,
        }
    }

    /// Whether the agent of `state_dir` (or its containers) still runs.
    pub fn of_state_dir(state_dir: &Path) -> Owner {
        let state_dir = state_dir.to_path_buf();
        if let Probe::Held { pid } = lock::probe(&state_dir) {
            return Owner::Live { state_dir, pid };
        }
        let containers = orphans::monitored_alive(&state_dir);
        if containers > 0 {
            Owner::Dormant {
                state_dir,
                containers,
            }
        } else {
            Owner::Gone { state_dir }
        }
    }

    pub fn is_gone(&self) -> bool {
        matches!(self, Owner::Gone { .. })
    }

    /// The state dir a Drover owner ran on.
    pub fn state_dir(&self) -> Option<&Path> {
        match self {
            Owner::Live { state_dir, .. }
            | Owner::Dormant { state_dir, .. }
            | Owner::Gone { state_dir } => Some(state_dir),
            Owner::Unmarked { .. } | Owner::Foreign => None,
        }
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Owner::Live { state_dir, pid } => write!(
                f,
                "owned by the running drover agent with state dir {} (pid {pid})",
                state_dir.display()
            ),
            Owner::Dormant {
                state_dir,
                containers,
            } => write!(
                f,
                "left by the drover agent with state dir {}, which is gone but still has \
                 {containers} container(s) running (`drover-agent cleanup --state-dir {}` \
                 removes them)",
                state_dir.display(),
                state_dir.display()
            ),
            Owner::Gone { state_dir } => write!(
                f,
                "left by the drover agent with state dir {}, which is gone",
                state_dir.display()
            ),
            Owner::Unmarked { link } => write!(
                f,
                "named like a drover link but without the drover:<state-dir> marker (an older \
                 drover made it?); if no agent uses it, `ip link del {link}` removes it"
            ),
            Owner::Foreign => write!(f, "not made by drover"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_round_trip_and_reject_other_aliases() {
        let d = tempfile::tempdir().unwrap();
        let m = marker(d.path());
        assert!(m.starts_with("drover:/"));
        assert_eq!(
            parse_marker(&m),
            Some(std::fs::canonicalize(d.path()).unwrap())
        );
        assert_eq!(parse_marker("uplink to rack 4"), None);
        assert_eq!(parse_marker("drover:relative"), None);
    }

    #[test]
    fn a_locked_state_dir_is_live_and_an_unlocked_one_gone() {
        let d = tempfile::tempdir().unwrap();
        assert!(Owner::of_state_dir(d.path()).is_gone(), "no lock file yet");
        let lock = StateLock::acquire(d.path()).unwrap();
        match Owner::of_state_dir(d.path()) {
            Owner::Live { pid, .. } => assert_eq!(pid, std::process::id().to_string()),
            other => panic!("expected live, got {other:?}"),
        }
        assert!(matches!(
            StateLock::acquire(d.path()),
            Err(LeftoverError::InUse { .. })
        ));
        drop(lock);
        assert!(Owner::of_state_dir(d.path()).is_gone());
        assert_eq!(Owner::of_alias(Some("eth uplink")), Owner::Foreign);
        assert_eq!(Owner::of_alias(None), Owner::Foreign);
    }
}
