//! A stopped peer's state, read from its data dir alone: for a cluster
//! whose majority is gone for good (`drover-scheduler recover`). Its latest
//! snapshot, then the log entries after it, are applied as a running peer
//! would, and the result is written as a snapshot file to restore into a
//! new cluster (`drover operator snapshot restore`).

use std::path::Path;
use std::sync::{Arc, RwLock};

use openraft::storage::{RaftLogReader, RaftLogStorage, RaftStateMachine};
use tokio::sync::watch;

use super::{LogStore, StateMachine};
use crate::state::State;

/// What an export found.
#[derive(Debug)]
pub struct Exported {
    /// The snapshot file.
    pub file: Vec<u8>,
    /// The last index in the peer's snapshot (0: none).
    pub snapshot_index: u64,
    /// The last index applied into the file.
    pub applied: u64,
    /// The last index this peer knew to be committed.
    pub committed: u64,
    /// The last index in its log.
    pub last: u64,
}

/// The state of the peer whose data dir is `dir` (it must not be running:
/// its log is locked while it does), up to the last entry it knew to be
/// committed, or every entry it holds with `include_uncommitted`.
pub async fn export(dir: &Path, include_uncommitted: bool) -> anyhow::Result<Exported> {
    let log_path = dir.join("raft.redb");
    if !log_path.exists() {
        anyhow::bail!(
            "{} holds no Raft log ({} is missing)",
            dir.display(),
            log_path.display()
        );
    }
    // Read only: a newer release's directory is refused, and left as is.
    drover_proto::format::check(
        dir,
        super::DATA_FORMAT,
        super::DATA_VERSION,
        &super::program(),
    )?;
    let state = Arc::new(RwLock::new(State::default()));
    let (tx, _rx) = watch::channel(0);
    let mut sm = StateMachine::open(&dir.join("snapshots"), state.clone(), tx)?;
    let mut log = LogStore::open(&log_path)
        .map_err(|e| anyhow::anyhow!("{e} (is the peer still running? stop it first)"))?;
    let snapshot_index = sm.last_applied().map_or(0, |l| l.index);
    let committed = log
        .read_committed()
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .map_or(0, |l| l.index);
    let last = log
        .get_log_state()
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .last_log_id
        .map_or(0, |l| l.index);
    let upto = if include_uncommitted { last } else { committed };
    if upto > snapshot_index {
        let mut reader = log.get_log_reader().await;
        let entries = reader
            .try_get_log_entries(snapshot_index + 1..=upto)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        sm.apply(entries)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let applied = sm.last_applied().map_or(0, |l| l.index);
    let file = {
        let s = state
            .read()
            .map_err(|_| anyhow::anyhow!("state lock poisoned"))?;
        crate::state::backup::save(&s, crate::clock::now_ms())?
    };
    Ok(Exported {
        file,
        snapshot_index,
        applied,
        committed,
        last,
    })
}
