//! The Raft state machine: committed commands applied to the shared `State`.
//!
//! openraft hands over entries once a quorum holds them; this module applies
//! each `Command` to the [`State`] every reader of the scheduler shares
//! (`Arc<RwLock<State>>`), remembers the last applied log id and membership,
//! and announces the applied index on a `watch` channel so controllers and
//! agent watchers wake up exactly when there is something new to look at.
//! With an event hub (`crate::events`) it also publishes what each entry
//! did: the state's own events, a new leader's first (blank) entry, and
//! membership changes.
//!
//! The state itself lives in memory; durability comes from the log plus
//! snapshots. A snapshot is one JSON document holding the state, the last
//! applied log id and the membership (and its own id, so the file alone
//! describes it). The current snapshot is kept as `current.json` in the
//! snapshot directory, replaced atomically (write a temp file, fsync, rename,
//! fsync the directory), and loaded on startup so a restarted peer begins
//! from it and replays only the log after it.
//!
//! openraft builds snapshots in a task of its own while applying continues,
//! so the builder serialises the state when it is created, which is the
//! moment the state and the applied log id agree. Building and installing may
//! race to replace the file; the newer snapshot (by last log id) always wins.

use std::fs::{self, File};
use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use openraft::storage::RaftStateMachine;
use openraft::{
    EntryPayload, ErrorSubject, ErrorVerb, OptionalSend, RaftSnapshotBuilder, StorageIOError,
};
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::types::{
    Entry, LogId, Snapshot, SnapshotMeta, StorageError, StoredMembership, TypeConfig,
};
use crate::events::EventHub;
use crate::state::events::{Event, Kind};
use crate::state::{CommandResult, State};

const CURRENT: &str = "current.json";

/// What can go wrong applying entries or handling snapshots.
#[derive(Debug, thiserror::Error)]
pub enum StateMachineError {
    #[error("snapshot file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("snapshot does not encode: {0}")]
    Encode(serde_json::Error),
    #[error("snapshot {what} does not decode: {source}")]
    Decode {
        what: String,
        source: serde_json::Error,
    },
    #[error("snapshot {snapshot_id} claims last log id {claimed:?} but holds {held:?}")]
    Mismatch {
        snapshot_id: String,
        claimed: Option<LogId>,
        held: Option<LogId>,
    },
    #[error("state lock poisoned: a previous apply panicked")]
    Poisoned,
    #[error("the thread writing the snapshot ended without an answer (it panicked)")]
    SnapshotThread,
    #[error(transparent)]
    TooNew(#[from] crate::state::version::TooNew),
    #[error("snapshot blocking task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

impl StateMachineError {
    fn into_storage(self, subject: ErrorSubject<u64>, verb: ErrorVerb) -> StorageError {
        StorageIOError::new(subject, verb, &self).into()
    }
}

/// The bytes of a snapshot: everything needed to resume from it.
#[derive(Serialize, Deserialize)]
struct SnapshotPayload<S> {
    snapshot_id: String,
    last_applied: Option<LogId>,
    membership: StoredMembership,
    state: S,
}

impl<S> SnapshotPayload<S> {
    fn meta(&self) -> SnapshotMeta {
        SnapshotMeta {
            last_log_id: self.last_applied,
            last_membership: self.membership.clone(),
            snapshot_id: self.snapshot_id.clone(),
        }
    }
}

/// The snapshot directory and what its current file holds.
#[derive(Debug)]
struct SnapshotDir {
    dir: PathBuf,
    /// Last log id of the snapshot in `current.json`; guards against an older
    /// snapshot replacing a newer one.
    current: Mutex<Option<Option<LogId>>>,
}

impl SnapshotDir {
    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StateMachineError + '_ {
        move |source| StateMachineError::Io {
            path: path.to_owned(),
            source,
        }
    }

    /// Make `bytes` the current snapshot unless a newer one is already there.
    /// Blocking.
    fn persist(&self, last_log_id: Option<LogId>, bytes: &[u8]) -> Result<(), StateMachineError> {
        let mut current = self
            .current
            .lock()
            .map_err(|_| StateMachineError::Poisoned)?;
        if let Some(existing) = *current {
            if existing > last_log_id {
                return Ok(());
            }
        }
        let tmp = self.dir.join(format!("{CURRENT}.tmp"));
        let dst = self.dir.join(CURRENT);
        {
            let mut f = File::create(&tmp).map_err(Self::io(&tmp))?;
            f.write_all(bytes).map_err(Self::io(&tmp))?;
            f.sync_all().map_err(Self::io(&tmp))?;
        }
        fs::rename(&tmp, &dst).map_err(Self::io(&dst))?;
        // The rename is only durable once the directory entry is.
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(Self::io(&self.dir))?;
        *current = Some(last_log_id);
        Ok(())
    }

    /// Read the current snapshot's bytes, if there is one. Blocking.
    fn load(&self) -> Result<Option<Vec<u8>>, StateMachineError> {
        let path = self.dir.join(CURRENT);
        match fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StateMachineError::Io { path, source }),
        }
    }
}

fn decode_payload(what: &str, bytes: &[u8]) -> Result<SnapshotPayload<State>, StateMachineError> {
    serde_json::from_slice(bytes).map_err(|source| StateMachineError::Decode {
        what: what.to_owned(),
        source,
    })
}

/// openraft's view of Drover's state machine.
#[derive(Debug)]
pub struct StateMachine {
    state: Arc<RwLock<State>>,
    last_applied: Option<LogId>,
    membership: StoredMembership,
    applied_tx: watch::Sender<u64>,
    snapshots: Arc<SnapshotDir>,
    /// Where applied entries' events go, if anywhere.
    events: Option<Arc<EventHub>>,
    /// The size of the last snapshot taken or installed.
    snapshot_bytes: prometheus_client::metrics::gauge::Gauge,
}

impl StateMachine {
    /// Open the state machine over `state`, resuming from the snapshot in
    /// `snapshot_dir` if there is one (which then replaces `state`'s
    /// contents). Blocking: call it at startup.
    pub fn open(
        snapshot_dir: &Path,
        state: Arc<RwLock<State>>,
        applied_tx: watch::Sender<u64>,
    ) -> Result<Self, StateMachineError> {
        fs::create_dir_all(snapshot_dir).map_err(SnapshotDir::io(snapshot_dir))?;
        let snapshots = Arc::new(SnapshotDir {
            dir: snapshot_dir.to_owned(),
            current: Mutex::new(None),
        });
        let mut sm = Self {
            state,
            last_applied: None,
            membership: StoredMembership::default(),
            applied_tx,
            snapshots,
            events: None,
            snapshot_bytes: Default::default(),
        };
        if let Some(bytes) = sm.snapshots.load()? {
            sm.snapshot_bytes.set(bytes.len() as i64);
            let payload = decode_payload(CURRENT, &bytes)?;
            *sm.snapshots
                .current
                .lock()
                .map_err(|_| StateMachineError::Poisoned)? = Some(payload.last_applied);
            sm.restore(payload)?;
        }
        Ok(sm)
    }

    /// Publish what every entry applied from now on does to `hub`.
    pub fn with_events(mut self, hub: Arc<EventHub>) -> Self {
        if let Ok(mut state) = self.state.write() {
            state.events.start();
        }
        hub.starts_at(self.next_index());
        self.events = Some(hub);
        self
    }

    /// Reports the size of every snapshot taken or installed into `g`.
    pub fn observed(self, g: prometheus_client::metrics::gauge::Gauge) -> Self {
        g.set(self.snapshot_bytes.get());
        Self {
            snapshot_bytes: g,
            ..self
        }
    }

    /// The first index not applied yet (a new cluster's first entry, its
    /// membership, is at 0).
    fn next_index(&self) -> u64 {
        self.last_applied.map_or(0, |l| l.index + 1)
    }

    /// The last applied log id.
    pub fn last_applied(&self) -> Option<LogId> {
        self.last_applied
    }

    fn restore(&mut self, payload: SnapshotPayload<State>) -> Result<(), StateMachineError> {
        // Before taking it: a newer cluster's state is refused whole.
        crate::state::version::too_new(&payload.state)?;
        {
            let mut state = self
                .state
                .write()
                .map_err(|_| StateMachineError::Poisoned)?;
            *state = payload.state;
            if self.events.is_some() {
                state.events.start();
            }
        }
        self.last_applied = payload.last_applied;
        self.membership = payload.membership;
        // What happened up to the snapshot was not seen here.
        if let Some(hub) = &self.events {
            hub.starts_at(self.next_index());
        }
        self.notify();
        Ok(())
    }

    fn notify(&self) {
        // `send_replace` also records the value when nobody listens yet.
        self.applied_tx
            .send_replace(self.last_applied.map_or(0, |l| l.index));
    }
}

/// What changed between membership `old` and `new`: peers added (as
/// learners or voters), promoted to voters, removed.
fn membership_events(
    old: &openraft::Membership<super::types::NodeId, super::types::Node>,
    new: &openraft::Membership<super::types::NodeId, super::types::Node>,
) -> Vec<Event> {
    let voters =
        |m: &openraft::Membership<_, _>| m.voter_ids().collect::<std::collections::BTreeSet<u64>>();
    let all = |m: &openraft::Membership<_, _>| {
        m.nodes()
            .map(|(id, _)| *id)
            .collect::<std::collections::BTreeSet<u64>>()
    };
    let (old_voters, new_voters) = (voters(old), voters(new));
    let (old_all, new_all) = (all(old), all(new));
    let addr = |id: &u64| new.get_node(id).map_or(String::new(), |n| n.addr.clone());
    let mut events = Vec::new();
    for id in new_all.difference(&old_all) {
        let role = if new_voters.contains(id) {
            "voter"
        } else {
            "learner"
        };
        events.push(Event::new(
            Kind::ClusterMemberAdded,
            0,
            format!("peer {id} at {} joined as a {role}", addr(id)),
        ));
    }
    for id in new_voters.difference(&old_voters) {
        if old_all.contains(id) {
            events.push(Event::new(
                Kind::ClusterMemberPromoted,
                0,
                format!("peer {id} at {} is a voter", addr(id)),
            ));
        }
    }
    for id in old_all.difference(&new_all) {
        events.push(Event::new(
            Kind::ClusterMemberRemoved,
            0,
            format!("peer {id} left the cluster"),
        ));
    }
    events
}

/// Serialises and persists a copy of the state taken at a consistent point.
pub struct SnapshotBuilder {
    meta: SnapshotMeta,
    /// The state as of `meta.last_log_id`; `None` if the state lock was
    /// poisoned when the copy was taken.
    state: Option<State>,
    snapshots: Arc<SnapshotDir>,
    /// How long copying the state took (it blocks applying meanwhile).
    copied_in: std::time::Duration,
    snapshot_bytes: prometheus_client::metrics::gauge::Gauge,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let sig = Some(self.meta.signature());
        let err = |e: StateMachineError| {
            e.into_storage(ErrorSubject::Snapshot(sig.clone()), ErrorVerb::Write)
        };
        let state = self
            .state
            .take()
            .ok_or(StateMachineError::Poisoned)
            .map_err(err)?;
        let payload = SnapshotPayload {
            snapshot_id: self.meta.snapshot_id.clone(),
            last_applied: self.meta.last_log_id,
            membership: self.meta.last_membership.clone(),
            state,
        };
        let snapshots = self.snapshots.clone();
        let encoding = std::time::Instant::now();
        // Encoding a large state and fsyncing are both too slow for a
        // runtime worker; on a thread of its own at a lower priority, so
        // that on a busy machine the peer keeps answering its leader and
        // clients first (a snapshot can wait; a heartbeat cannot).
        let (done, encoded) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("drover-snapshot".into())
            .spawn(move || {
                drover_proto::thread::lower_priority();
                let r = serde_json::to_vec(&payload)
                    .map_err(StateMachineError::Encode)
                    .and_then(|bytes| {
                        snapshots.persist(payload.last_applied, &bytes)?;
                        Ok(bytes)
                    });
                let _ = done.send(r);
            })
            .map_err(|source| {
                err(StateMachineError::Io {
                    path: self.snapshots.dir.clone(),
                    source,
                })
            })?;
        let bytes = encoded
            .await
            .map_err(|_| err(StateMachineError::SnapshotThread))?
            .map_err(err)?;
        self.snapshot_bytes.set(bytes.len() as i64);
        tracing::info!(
            index = self.meta.last_log_id.map_or(0, |l| l.index),
            bytes = bytes.len(),
            copied_ms = self.copied_in.as_millis() as u64,
            saved_ms = encoding.elapsed().as_millis() as u64,
            "snapshot taken"
        );
        Ok(Snapshot {
            meta: self.meta.clone(),
            snapshot: Box::new(Cursor::new(bytes)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        Ok((self.last_applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CommandResult>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut results = Vec::new();
        let mut published: Vec<(u64, Vec<Event>)> = Vec::new();
        let recording = self.events.is_some();
        {
            let mut state = self.state.write().map_err(|_| {
                StateMachineError::Poisoned
                    .into_storage(ErrorSubject::StateMachine, ErrorVerb::Write)
            })?;
            for entry in entries {
                let index = entry.log_id.index;
                let result = match entry.payload {
                    EntryPayload::Blank => {
                        // A new leader's first entry.
                        if recording {
                            let leader = entry.log_id.leader_id;
                            published.push((
                                index,
                                vec![Event::new(
                                    Kind::ClusterLeaderChanged,
                                    0,
                                    format!("peer {} leads (term {})", leader.node_id, leader.term),
                                )],
                            ));
                        }
                        CommandResult::default()
                    }
                    EntryPayload::Normal(cmd) => {
                        let r = state.apply(index, &cmd);
                        if recording {
                            published.push((index, state.events.take()));
                        }
                        // The cluster moved past what this build implements
                        // (it was added to a newer cluster, or downgraded):
                        // stop here rather than misapply what follows.
                        if let Err(e) = crate::state::version::too_new(&state) {
                            tracing::error!(error = %e, "stopping: this release cannot apply the log");
                            return Err(StateMachineError::from(e)
                                .into_storage(ErrorSubject::StateMachine, ErrorVerb::Write));
                        }
                        r
                    }
                    EntryPayload::Membership(m) => {
                        if recording {
                            published
                                .push((index, membership_events(self.membership.membership(), &m)));
                        }
                        self.membership = StoredMembership::new(Some(entry.log_id), m);
                        CommandResult::default()
                    }
                };
                self.last_applied = Some(entry.log_id);
                results.push(result);
            }
        }
        if !results.is_empty() {
            self.notify();
        }
        if let Some(hub) = &self.events {
            let now_ms = crate::clock::now_ms();
            for (index, events) in published {
                hub.publish(index, events, now_ms);
            }
        }
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        let snapshot_id = match self.last_applied {
            Some(l) => format!("{}-{}-{}", l.leader_id.term, l.leader_id.node_id, l.index),
            None => "empty".to_owned(),
        };
        // openraft runs the builder concurrently with later applies, so copy
        // the state now, while it matches `last_applied`.
        let copying = std::time::Instant::now();
        let state = self.state.read().ok().map(|s| s.clone());
        let copied_in = copying.elapsed();
        SnapshotBuilder {
            copied_in,
            meta: SnapshotMeta {
                last_log_id: self.last_applied,
                last_membership: self.membership.clone(),
                snapshot_id,
            },
            state,
            snapshots: self.snapshots.clone(),
            snapshot_bytes: self.snapshot_bytes.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let sig = Some(meta.signature());
        let err = |e: StateMachineError| {
            e.into_storage(ErrorSubject::Snapshot(sig.clone()), ErrorVerb::Write)
        };
        let bytes = snapshot.into_inner();
        self.snapshot_bytes.set(bytes.len() as i64);
        let payload = decode_payload(&meta.snapshot_id, &bytes).map_err(err)?;
        // Before it replaces this peer's own snapshot on disk.
        crate::state::version::too_new(&payload.state).map_err(|e| err(e.into()))?;
        if payload.last_applied != meta.last_log_id {
            return Err(err(StateMachineError::Mismatch {
                snapshot_id: meta.snapshot_id.clone(),
                claimed: meta.last_log_id,
                held: payload.last_applied,
            }));
        }
        let snapshots = self.snapshots.clone();
        let last = meta.last_log_id;
        tokio::task::spawn_blocking(move || snapshots.persist(last, &bytes))
            .await
            .map_err(|e| err(e.into()))?
            .map_err(err)?;
        self.restore(payload).map_err(err)
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        let snapshots = self.snapshots.clone();
        let err =
            |e: StateMachineError| e.into_storage(ErrorSubject::Snapshot(None), ErrorVerb::Read);
        let loaded = tokio::task::spawn_blocking(move || snapshots.load())
            .await
            .map_err(|e| err(e.into()))?
            .map_err(err)?;
        let Some(bytes) = loaded else { return Ok(None) };
        // Only the header fields are needed here; skip building the state.
        let payload: SnapshotPayload<IgnoredAny> = serde_json::from_slice(&bytes)
            .map_err(|source| StateMachineError::Decode {
                what: CURRENT.to_owned(),
                source,
            })
            .map_err(err)?;
        Ok(Some(Snapshot {
            meta: payload.meta(),
            snapshot: Box::new(Cursor::new(bytes)),
        }))
    }
}
