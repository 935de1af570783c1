//! The cluster version: which commands the replicas may be asked to apply.
//!
//! During a rolling upgrade, replicas of two releases share one Raft log.
//! A newer release may add commands (or change what one does); an older
//! replica meeting such an entry cannot apply it, and applying differently
//! would split the replicas' states. So each release states the newest
//! cluster version it implements ([`SUPPORTED`]); the replicated state holds
//! the version the cluster runs at (`State::cluster_version`), which only
//! moves forward, by a committed [`Command::SetClusterVersion`] that the
//! leader proposes once every member reports it supports the new version
//! (`controller`); and no replica proposes a command the cluster's version
//! does not have yet ([`gate`]). A replica that meets a version above its
//! own (a newer cluster's data, after a downgrade) stops instead of
//! guessing ([`too_new`]).
//!
//! Versions:
//! - 1: every command up to `Restore` (the releases before versions were
//!   recorded; a member that does not report a version runs this).
//! - 2: versions are recorded: `SetClusterVersion`; members report theirs.
//! - 3: `RestorePart`: a restore too large for one log entry goes in parts.
//! - 4: placement rules: jobs with `constraints` or `max_per_node`, node
//!   labels and facts (`RegisterNode` carrying them, `SetNodeLabels`).
//! - 5: job types: `batch` and `system` jobs, periodic batch jobs and
//!   `LaunchRun` (a job's batch run and firings are state an older
//!   release does not keep).

use super::{Command, State};

/// The newest cluster version this build implements.
pub const SUPPORTED: u32 = 5;

/// The cluster version that brought `Command::RestorePart` (a restore too
/// large for one log entry, put back in parts).
pub const RESTORE_IN_PARTS: u32 = 3;

/// The cluster version that brought placement rules: constraints over
/// node labels and facts, and `max_per_node`.
pub const PLACEMENT_RULES: u32 = 4;

/// The cluster version that brought batch and system jobs.
pub const JOB_TYPES: u32 = 5;

/// The version every cluster has: state from before versions were
/// recorded runs at it, and a member that reports none supports it.
pub const BASE: u32 = 1;

impl Command {
    /// The cluster version a command needs before any replica may propose
    /// it. `SetClusterVersion` needs none: it is proposed only once every
    /// member supports the version it sets.
    pub fn needs_version(&self) -> u32 {
        match self {
            Command::Batch(cmds) => cmds
                .iter()
                .map(Command::needs_version)
                .max()
                .unwrap_or(BASE),
            Command::RestorePart { .. } => RESTORE_IN_PARTS,
            Command::SetNodeLabels { .. } => PLACEMENT_RULES,
            Command::LaunchRun { .. } => JOB_TYPES,
            Command::SubmitJob { spec, .. } if !spec.job_type.is_service() => JOB_TYPES,
            Command::SubmitJob { spec, .. } if spec.has_placement_rules() => PLACEMENT_RULES,
            Command::RegisterNode { labels, facts, .. }
                if !labels.is_empty() || !facts.is_empty() =>
            {
                PLACEMENT_RULES
            }
            _ => BASE,
        }
    }
}

impl State {
    /// The version the cluster runs at (state from before versions were
    /// recorded runs at 1).
    pub fn cluster_version(&self) -> u32 {
        self.cluster_version.max(BASE)
    }
}

/// Why a command may not be proposed at the cluster's version.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("this needs cluster version {needs}, and the cluster runs at version {runs} until every scheduler replica runs a release that supports {needs} (`drover cluster members` shows what each supports): finish upgrading the replicas, then retry")]
pub struct TooOld {
    pub needs: u32,
    pub runs: u32,
}

/// Whether `cmd` may be proposed to a cluster at version `runs`.
pub fn gate(cmd: &Command, runs: u32) -> Result<(), TooOld> {
    let needs = cmd.needs_version();
    if needs > runs {
        return Err(TooOld { needs, runs });
    }
    Ok(())
}

/// A replica's state at a version this build does not implement.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the cluster runs at version {runs}, and this drover-scheduler implements up to {SUPPORTED}: a newer release wrote this state. Run that release (or newer) on this replica; an older one would misapply the log")]
pub struct TooNew {
    pub runs: u32,
}

/// Whether this build can go on applying `state`.
pub fn too_new(state: &State) -> Result<(), TooNew> {
    let runs = state.cluster_version();
    if runs > SUPPORTED {
        return Err(TooNew { runs });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::CommandResult;

    #[test]
    fn state_from_before_versions_runs_at_1_and_reads_without_the_field() {
        // A snapshot's state as releases before versions wrote it.
        let old = State::default();
        let mut json: serde_json::Value = serde_json::to_value(&old).unwrap();
        json.as_object_mut().unwrap().remove("cluster_version");
        let back: State = serde_json::from_value(json).unwrap();
        assert_eq!(back.cluster_version(), 1);
    }

    #[test]
    fn the_version_moves_only_forward_and_a_newer_one_stops_this_build() {
        let mut s = State::default();
        let set = |v| Command::SetClusterVersion { version: v };
        assert!(s.apply(1, &set(2)).changed);
        assert_eq!(s.cluster_version(), 2);
        let back: CommandResult = s.apply(2, &set(1));
        assert!(!back.ok, "a lower version is refused");
        assert_eq!(s.cluster_version(), 2);
        assert!(!s.apply(3, &set(2)).changed);
        assert!(too_new(&s).is_ok());
        s.apply(4, &set(SUPPORTED + 1));
        let e = too_new(&s).unwrap_err();
        assert!(
            e.to_string()
                .contains(&format!("implements up to {SUPPORTED}")),
            "{e}"
        );
    }

    #[test]
    fn a_command_newer_than_the_cluster_is_not_proposed() {
        assert!(gate(&Command::Noop, 1).is_ok());
        let part = Command::RestorePart {
            restore: "r".into(),
            part: 0,
            parts: 2,
            restored: Box::default(),
            from_index: 1,
            at_ms: 0,
        };
        let e = gate(&part, 2).unwrap_err().to_string();
        assert!(
            e.contains("needs cluster version 3") && e.contains("runs at version 2"),
            "{e}"
        );
        assert!(gate(&part, 3).is_ok());
        let batch = Command::Batch(std::sync::Arc::new(vec![
            Command::Noop,
            Command::SetClusterVersion { version: 2 },
        ]));
        assert_eq!(batch.needs_version(), 1);
        let batch = Command::Batch(std::sync::Arc::new(vec![Command::Noop, part]));
        assert_eq!(batch.needs_version(), 3);
    }
}
