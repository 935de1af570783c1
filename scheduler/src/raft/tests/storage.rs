//! The log store and state machine: openraft's conformance suite, and what
//! survives dropping everything and reopening from disk.

use std::sync::{Arc, RwLock};

use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::testing::{log_id, StoreBuilder, Suite};
use openraft::{EntryPayload, Membership, RaftLogReader, RaftSnapshotBuilder};
use tempfile::TempDir;
use tokio::sync::watch;

use crate::raft::types::{Entry, LogId, StorageError, TypeConfig, Vote};
use crate::raft::{LogStore, StateMachine};
use crate::state::{Command, State};

/// A store keeping `Some(budget)` bytes of written entries in memory
/// (`None`: the default).
struct Builder(Option<usize>);

impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for Builder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError> {
        let dir = TempDir::new().expect("tempdir");
        let path = dir.path().join("raft.redb");
        let log = match self.0 {
            None => LogStore::open(&path),
            Some(budget) => LogStore::open_keeping(&path, budget),
        }
        .expect("open log");
        let (tx, _rx) = watch::channel(0);
        let sm = StateMachine::open(&dir.path().join("snapshots"), Arc::default(), tx)
            .expect("open state machine");
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite() {
    Suite::test_all(Builder(None)).expect("storage suite");
}

/// The same with no written entry kept in memory: every read of one
/// reaches redb.
#[test]
fn openraft_storage_suite_reading_from_disk() {
    Suite::test_all(Builder(Some(0))).expect("storage suite, reads from disk");
}

fn noop(term: u64, index: u64) -> Entry {
    Entry {
        log_id: log_id(term, 1, index),
        payload: EntryPayload::Normal(Command::Noop),
    }
}

fn open_sm(dir: &TempDir) -> (StateMachine, Arc<RwLock<State>>, watch::Receiver<u64>) {
    let state = Arc::new(RwLock::new(State::default()));
    let (tx, rx) = watch::channel(0);
    let sm = StateMachine::open(&dir.path().join("snapshots"), state.clone(), tx)
        .expect("open state machine");
    (sm, state, rx)
}

#[tokio::test]
async fn log_vote_and_committed_survive_reopen() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("raft.redb");
    let vote = Vote::new_committed(3, 1);
    let committed: LogId = log_id(3, 1, 4);
    {
        let mut log = LogStore::open(&path).unwrap();
        log.blocking_append((1..=3).map(|i| noop(2, i)))
            .await
            .unwrap();
        log.blocking_append((4..=6).map(|i| noop(3, i)))
            .await
            .unwrap();
        log.save_vote(&vote).await.unwrap();
        log.save_committed(Some(committed)).await.unwrap();
        log.purge(log_id(2, 1, 1)).await.unwrap();
        log.truncate(log_id(3, 1, 6)).await.unwrap();
    }

    let mut log = LogStore::open(&path).unwrap();
    assert_eq!(log.read_vote().await.unwrap(), Some(vote));
    assert_eq!(log.read_committed().await.unwrap(), Some(committed));
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(2, 1, 1)));
    assert_eq!(state.last_log_id, Some(log_id(3, 1, 5)));
    let mut reader = log.get_log_reader().await;
    let entries = reader.try_get_log_entries(0..100).await.unwrap();
    let ids: Vec<LogId> = entries.iter().map(|e| e.log_id).collect();
    assert_eq!(
        ids,
        vec![
            log_id(2, 1, 2),
            log_id(2, 1, 3),
            log_id(3, 1, 4),
            log_id(3, 1, 5)
        ]
    );
}

#[tokio::test]
async fn state_machine_resumes_from_snapshot() {
    let dir = TempDir::new().unwrap();
    let members = Membership::new(vec![[1].into()], None);
    let membership_entry = Entry {
        log_id: log_id(1, 1, 1),
        payload: EntryPayload::Membership(members.clone()),
    };
    let expected;
    {
        let (mut sm, state, rx) = open_sm(&dir);
        let mut entries = vec![membership_entry];
        entries.extend((2..=5).map(|i| noop(1, i)));
        let results = sm.apply(entries).await.unwrap();
        assert_eq!(results.len(), 5);
        assert_eq!(*rx.borrow(), 5);
        let snap = sm
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        assert_eq!(snap.meta.last_log_id, Some(log_id(1, 1, 5)));
        // Applied after the snapshot: must not be in it.
        sm.apply([noop(1, 6)]).await.unwrap();
        expected = state.read().unwrap().clone();
        assert_ne!(expected, State::default());
    }

    let (mut sm, state, rx) = open_sm(&dir);
    let (applied, membership) = sm.applied_state().await.unwrap();
    assert_eq!(applied, Some(log_id(1, 1, 5)));
    assert_eq!(membership.membership(), &members);
    assert_eq!(*rx.borrow(), 5);
    // Replaying entry 6 from the log brings it back to where it was.
    sm.apply([noop(1, 6)]).await.unwrap();
    assert_eq!(*state.read().unwrap(), expected);
    let current = sm
        .get_current_snapshot()
        .await
        .unwrap()
        .expect("snapshot on disk");
    assert_eq!(current.meta.last_log_id, Some(log_id(1, 1, 5)));
    assert_eq!(current.meta.last_membership.membership(), &members);
}

#[tokio::test]
async fn installed_snapshot_replaces_state_and_persists() {
    let leader_dir = TempDir::new().unwrap();
    let (mut leader, leader_state, _) = open_sm(&leader_dir);
    leader.apply((1..=3).map(|i| noop(1, i))).await.unwrap();
    let snap = leader
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();

    let dir = TempDir::new().unwrap();
    {
        let (mut follower, state, rx) = open_sm(&dir);
        let mut buf = follower.begin_receiving_snapshot().await.unwrap();
        *buf = (*snap.snapshot).clone();
        follower.install_snapshot(&snap.meta, buf).await.unwrap();
        assert_eq!(*state.read().unwrap(), *leader_state.read().unwrap());
        assert_eq!(*rx.borrow(), 3);
    }
    let (mut follower, state, _) = open_sm(&dir);
    assert_eq!(
        follower.applied_state().await.unwrap().0,
        Some(log_id(1, 1, 3))
    );
    assert_eq!(*state.read().unwrap(), *leader_state.read().unwrap());
}

/// A state at a cluster version this build does not implement (a newer
/// release's, after a downgrade): applying stops at the entry that
/// raised it, and a snapshot of it is refused on open and on install.
#[tokio::test]
async fn a_newer_cluster_version_stops_this_build_instead_of_misapplying() {
    use crate::state::version::SUPPORTED;
    let newer = |index| Entry {
        log_id: log_id(1, 1, index),
        payload: EntryPayload::Normal(Command::SetClusterVersion {
            version: SUPPORTED + 1,
        }),
    };
    let dir = TempDir::new().unwrap();
    {
        let (mut sm, _, _) = open_sm(&dir);
        sm.apply([noop(1, 1)]).await.unwrap();
        let e = sm.apply([newer(2), noop(1, 3)]).await.unwrap_err();
        assert!(
            e.to_string()
                .contains(&format!("implements up to {SUPPORTED}")),
            "{e}"
        );
        assert_eq!(
            sm.last_applied(),
            Some(log_id(1, 1, 1)),
            "nothing after it applied"
        );
    }

    // A newer release's snapshot: written as that release would.
    let newer_dir = TempDir::new().unwrap();
    let snap = {
        let state = State {
            cluster_version: SUPPORTED + 1,
            ..State::default()
        };
        let (tx, _rx) = watch::channel(0);
        let mut sm = StateMachine::open(
            &newer_dir.path().join("snapshots"),
            Arc::new(RwLock::new(state)),
            tx,
        )
        .unwrap();
        sm.get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap()
    };
    let (tx, _rx) = watch::channel(0);
    let e =
        StateMachine::open(&newer_dir.path().join("snapshots"), Arc::default(), tx).unwrap_err();
    assert!(
        e.to_string().contains("a newer release wrote this state"),
        "{e}"
    );
    let other = TempDir::new().unwrap();
    let (mut sm, state, _) = open_sm(&other);
    let mut buf = sm.begin_receiving_snapshot().await.unwrap();
    *buf = (*snap.snapshot).clone();
    assert!(sm.install_snapshot(&snap.meta, buf).await.is_err());
    assert_eq!(
        *state.read().unwrap(),
        State::default(),
        "the refused snapshot was taken"
    );
}
