//! The durable Raft log: entries, the vote and log pointers, kept in redb.
//!
//! Raft's safety rests on two promises a peer makes to the others: a vote it
//! granted stays granted, and an entry it acknowledged stays in its log. Both
//! must therefore be on disk before openraft is told they are. Every write here
//! reaches disk in a redb transaction committed with
//! [`Durability::Immediate`] (an fsync), and only after that commit returns is
//! openraft's flush callback invoked; one transaction carries every write
//! queued meanwhile (group commit, below).
//!
//! Layout: table `logs` maps the entry index (u64, big-endian in redb's key
//! order) to the JSON entry; table `meta` holds the vote, the last purged log
//! id and the committed log id, each as JSON under a fixed key.
//!
//! Group commit: every write goes to one writer thread, in order. The writer
//! takes everything queued since its last commit (appends, the vote, the
//! committed pointer, truncations, purges) into one redb transaction and one
//! fsync, then tells openraft which entries are durable. `append` therefore
//! returns as soon as its entries are queued, and openraft keeps accepting
//! proposals while the disk works: under load, hundreds of proposals share an
//! fsync. Entries queued but not yet written are kept in memory (`Recent`)
//! so log readers (the replication streams) see them at once, as openraft
//! requires.
//!
//! Entries stay in memory after they are written, up to [`RECENT_BYTES`] of
//! them (their encoded size): openraft reads every entry back soon after it
//! is appended (each follower's replication stream, and the state machine
//! applying it), and a read from memory is a clone, where a read from redb
//! is a transaction and a JSON decode per entry (measured: 5% of a busy
//! leader's CPU). Reads that reach further back run on tokio's blocking
//! pool; they never stall a worker.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::network::APPEND_BUDGET;
use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, OptionalSend, RaftLogReader, StorageIOError};
use redb::{Database, Durability, ReadableTable, TableDefinition};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::types::{Entry, LogId, StorageError, TypeConfig, Vote};

const LOGS: TableDefinition<u64, &[u8]> = TableDefinition::new("logs");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

const KEY_VOTE: &str = "vote";
const KEY_COMMITTED: &str = "committed";
const KEY_PURGED: &str = "last_purged";

/// What can go wrong in the log store.
#[derive(Debug, thiserror::Error)]
pub enum LogStoreError {
    #[error("opening raft log {path}: {source}")]
    Open {
        path: PathBuf,
        source: redb::DatabaseError,
    },
    /// Boxed: some redb errors are large and every storage call returns this.
    #[error("raft log database: {0}")]
    Redb(Box<redb::Error>),
    #[error(
        "raft log entry {what} does not decode: {source}{}",
        newer_hint(source)
    )]
    Decode {
        what: String,
        source: serde_json::Error,
    },
    #[error("raft log entry {what} does not encode: {source}")]
    Encode {
        what: String,
        source: serde_json::Error,
    },
    #[error("raft log blocking task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
    #[error("raft log writer: {0}")]
    Writer(String),
}

/// A command this release does not know reads as an unknown variant: say
/// what that most likely means.
fn newer_hint(e: &serde_json::Error) -> &'static str {
    if e.to_string().contains("unknown variant") {
        " (a command of a newer release: run that release or newer on this peer)"
    } else {
        ""
    }
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for LogStoreError {
            fn from(e: $t) -> Self {
                Self::Redb(Box::new(e.into()))
            }
        }
    )*};
}
from_redb!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

impl LogStoreError {
    fn into_storage(self, subject: ErrorSubject<u64>, verb: ErrorVerb) -> StorageError {
        StorageIOError::new(subject, verb, &self).into()
    }
}

/// How many bytes of written entries (as encoded) stay in memory for
/// readers.
const RECENT_BYTES: usize = 64 << 20;

/// One entry kept in memory: the sequence number of the append that queued
/// it, its encoded size, and whether the writer has made it durable.
struct Kept {
    seq: u64,
    bytes: usize,
    written: bool,
    entry: Entry,
}

/// An entry and its encoded size.
type SizedEntry = (Entry, usize);

/// The newest entries, by index: every entry queued for the writer and not
/// yet written, and the most recently written ones (up to [`RECENT_BYTES`]).
struct RecentEntries {
    entries: BTreeMap<u64, Kept>,
    /// Encoded bytes of the written entries held.
    written_bytes: usize,
    /// At most this many (after the newest written entry).
    budget: usize,
}

impl Default for RecentEntries {
    fn default() -> Self {
        RecentEntries {
            entries: BTreeMap::new(),
            written_bytes: 0,
            budget: RECENT_BYTES,
        }
    }
}

impl RecentEntries {
    fn insert(&mut self, index: u64, kept: Kept) {
        if let Some(old) = self.entries.insert(index, kept) {
            self.forget(&old);
        }
    }

    fn forget(&mut self, old: &Kept) {
        if old.written {
            self.written_bytes -= old.bytes;
        }
    }

    /// Takes out every entry at or below `upto` (a purge), for the caller
    /// to drop away from the lock: after a snapshot that can be thousands of
    /// entries, whose decoded commands take a runtime thread a third of a
    /// second to free.
    fn take_upto(&mut self, upto: u64) -> BTreeMap<u64, Kept> {
        let kept = self.entries.split_off(&upto.saturating_add(1));
        let gone = std::mem::replace(&mut self.entries, kept);
        gone.values().for_each(|k| self.forget(k));
        gone
    }

    /// Takes out every entry at or above `from` (a truncation).
    fn take_from(&mut self, from: u64) -> BTreeMap<u64, Kept> {
        let gone = self.entries.split_off(&from);
        gone.values().for_each(|k| self.forget(k));
        gone
    }

    /// The append `seq` is durable: its entries (unless replaced since)
    /// count as written; the oldest written ones go past the budget, and
    /// are returned for the caller to drop outside the lock.
    #[must_use = "drop the evicted entries after releasing the lock"]
    fn written(&mut self, seq: u64, indices: impl Iterator<Item = u64>) -> Vec<Kept> {
        for i in indices {
            if let Some(k) = self.entries.get_mut(&i) {
                if k.seq == seq && !k.written {
                    k.written = true;
                    self.written_bytes += k.bytes;
                }
            }
        }
        let mut evicted = Vec::new();
        while self.written_bytes > self.budget {
            let Some(oldest) = self
                .entries
                .iter()
                .find(|(_, k)| k.written)
                .map(|(i, _)| *i)
            else {
                break;
            };
            if let Some(old) = self.entries.remove(&oldest) {
                self.forget(&old);
                evicted.push(old);
            }
        }
        evicted
    }

    /// The entries held in `bounds`, and whether they are all of them (the
    /// range is bounded and no index in it is missing here).
    /// The entries held in `bounds` with their encoded sizes, and whether
    /// they are all of the range.
    fn get(&self, bounds: (Bound<u64>, Bound<u64>)) -> (Vec<(u64, SizedEntry)>, bool) {
        let found: Vec<(u64, SizedEntry)> = self
            .entries
            .range(bounds)
            .map(|(i, k)| (*i, (k.entry.clone(), k.bytes)))
            .collect();
        let start = match bounds.0 {
            Bound::Included(s) => Some(s),
            Bound::Excluded(s) => s.checked_add(1),
            Bound::Unbounded => None,
        };
        let end = match bounds.1 {
            Bound::Included(e) => Some(e),
            Bound::Excluded(e) => e.checked_sub(1),
            Bound::Unbounded => None,
        };
        let whole = match (start, end) {
            (Some(s), Some(e)) if e < s => true,
            (Some(s), Some(e)) => {
                found.first().map(|(i, _)| *i) == Some(s) && found.len() as u64 == e - s + 1
            }
            _ => false,
        };
        (found, whole)
    }

    fn last_log_id(&self) -> Option<LogId> {
        self.entries.last_key_value().map(|(_, k)| k.entry.log_id)
    }
}

type Recent = Arc<Mutex<RecentEntries>>;

/// What a caller waiting on the writer hears back.
type Done = std::sync::mpsc::SyncSender<Result<(), String>>;

/// One write for the writer thread.
enum Op {
    Append {
        seq: u64,
        entries: Vec<(u64, Vec<u8>)>,
        callback: LogFlushed<TypeConfig>,
    },
    Meta {
        key: &'static str,
        bytes: Vec<u8>,
        done: Option<Done>,
    },
    Truncate {
        from: u64,
        done: Done,
    },
    Purge {
        upto: u64,
        purged: Vec<u8>,
        done: Done,
    },
}

/// The writer thread and the way to it. Dropping it (with the last clone of
/// the store) lets the writer finish what is queued, then joins it.
struct Writer {
    tx: Option<std::sync::mpsc::Sender<Op>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The redb-backed log. Cheap to clone: clones share one database and one
/// writer, which is how openraft's log readers (one per replication stream)
/// are made.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
    writer: Arc<Writer>,
    recent: Recent,
    seq: Arc<AtomicU64>,
    /// How long each write and its fsync took (the writer thread's copy).
    fsync_seconds: Arc<std::sync::OnceLock<prometheus_client::metrics::histogram::Histogram>>,
}

impl Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStore").finish_non_exhaustive()
    }
}

impl LogStore {
    /// Open (or create) the log at `path`. Blocking; call it once at startup.
    pub fn open(path: &Path) -> Result<Self, LogStoreError> {
        Self::open_keeping(path, RECENT_BYTES)
    }

    /// [`LogStore::open`], keeping up to `budget` bytes of written entries
    /// in memory (0: every read of a written entry reaches redb).
    pub(crate) fn open_keeping(path: &Path, budget: usize) -> Result<Self, LogStoreError> {
        let db = Database::create(path).map_err(|source| LogStoreError::Open {
            path: path.to_owned(),
            source,
        })?;
        // Create both tables up front so read transactions never meet a
        // missing table.
        let mut tx = db.begin_write()?;
        tx.set_durability(Durability::Immediate);
        tx.open_table(LOGS)?;
        tx.open_table(META)?;
        tx.commit()?;
        let db = Arc::new(db);
        let recent: Recent = Arc::new(Mutex::new(RecentEntries {
            budget,
            ..RecentEntries::default()
        }));
        let (tx, rx) = std::sync::mpsc::channel();
        let fsync_seconds: Arc<std::sync::OnceLock<_>> = Arc::default();
        let thread = {
            let (db, recent, timed) = (db.clone(), recent.clone(), fsync_seconds.clone());
            std::thread::Builder::new()
                .name("raft-log-writer".into())
                .spawn(move || write_loop(&db, &recent, &rx, &timed))
                .map_err(|e| LogStoreError::Writer(e.to_string()))?
        };
        Ok(Self {
            db,
            writer: Arc::new(Writer {
                tx: Some(tx),
                thread: Some(thread),
            }),
            recent,
            seq: Arc::default(),
            fsync_seconds,
        })
    }

    /// Times every write (and its fsync) into `h`.
    pub fn observed(self, h: prometheus_client::metrics::histogram::Histogram) -> Self {
        let _ = self.fsync_seconds.set(h);
        self
    }

    /// Run `f` against the database on the blocking pool.
    async fn blocking<T, F>(&self, f: F) -> Result<T, LogStoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Database) -> Result<T, LogStoreError> + Send + 'static,
    {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || f(&db)).await?
    }

    fn send(&self, op: Op) -> Result<(), LogStoreError> {
        self.writer
            .tx
            .as_ref()
            .and_then(|tx| tx.send(op).ok())
            .ok_or_else(|| LogStoreError::Writer("the log writer has stopped".into()))
    }

    /// Queue `op` (built around a reply channel) and wait until it is durable.
    async fn write_and_wait(&self, op: impl FnOnce(Done) -> Op) -> Result<(), LogStoreError> {
        let (done, wait) = std::sync::mpsc::sync_channel(1);
        self.send(op(done))?;
        tokio::task::spawn_blocking(move || wait.recv())
            .await?
            .map_err(|_| LogStoreError::Writer("the log writer has stopped".into()))?
            .map_err(LogStoreError::Writer)
    }

    async fn read_meta<T: DeserializeOwned + Send + 'static>(
        &self,
        key: &'static str,
    ) -> Result<Option<T>, LogStoreError> {
        self.blocking(move |db| read_meta_in(db, key)).await
    }
}

/// Frees `gone` on a thread of its own at a lower priority. A purge after a
/// snapshot takes out thousands of entries; freeing their decoded commands
/// on a runtime thread held every task on it (the heartbeats among them)
/// for up to a third of a second under load, and on the blocking pool it
/// still took a core from them.
fn drop_off_runtime(gone: BTreeMap<u64, Kept>) {
    if gone.is_empty() {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("drover-free".into())
        .spawn(move || {
            drover_proto::thread::lower_priority();
            drop(gone);
        });
    // If no thread can be made, `gone` was freed here, with the closure.
    drop(spawned);
}

/// The writer thread: take everything queued, write it in one transaction,
/// sync once, then report to every waiter.
fn write_loop(
    db: &Database,
    recent: &Recent,
    rx: &std::sync::mpsc::Receiver<Op>,
    timed: &std::sync::OnceLock<prometheus_client::metrics::histogram::Histogram>,
) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while let Ok(op) = rx.try_recv() {
            batch.push(op);
        }
        let began = std::time::Instant::now();
        let result = write_batch(db, &batch).map_err(|e| e.to_string());
        if let Some(h) = timed.get() {
            h.observe(began.elapsed().as_secs_f64());
        }
        if result.is_ok() {
            let mut evicted = Vec::new();
            let mut r = recent.lock().unwrap_or_else(|p| p.into_inner());
            for op in &batch {
                if let Op::Append { seq, entries, .. } = op {
                    evicted.extend(r.written(*seq, entries.iter().map(|(i, _)| *i)));
                }
            }
            drop(r);
            // Freed here, with the lock released: appends and readers wait
            // on that lock from the runtime's threads.
            drop(evicted);
        }
        for op in batch {
            let reply = result.clone();
            match op {
                Op::Append { callback, .. } => {
                    callback.log_io_completed(reply.map_err(std::io::Error::other))
                }
                Op::Meta { done, .. } => {
                    if let Some(done) = done {
                        let _ = done.send(reply);
                    }
                }
                Op::Truncate { done, .. } | Op::Purge { done, .. } => {
                    let _ = done.send(reply);
                }
            }
        }
    }
}

fn write_batch(db: &Database, batch: &[Op]) -> Result<(), LogStoreError> {
    let mut tx = db.begin_write()?;
    tx.set_durability(Durability::Immediate);
    {
        let mut logs = tx.open_table(LOGS)?;
        let mut meta = tx.open_table(META)?;
        for op in batch {
            match op {
                Op::Append { entries, .. } => {
                    for (index, bytes) in entries {
                        logs.insert(*index, bytes.as_slice())?;
                    }
                }
                Op::Meta { key, bytes, .. } => {
                    meta.insert(*key, bytes.as_slice())?;
                }
                Op::Truncate { from, .. } => {
                    logs.retain_in(*from.., |_, _| false)?;
                }
                // The purge point and the deletion in one transaction: a crash
                // never leaves a hole without knowing where it ends.
                Op::Purge { upto, purged, .. } => {
                    meta.insert(KEY_PURGED, purged.as_slice())?;
                    logs.retain_in(..=*upto, |_, _| false)?;
                }
            }
        }
    }
    tx.commit()?;
    Ok(())
}

fn encode<T: Serialize>(what: &str, value: &T) -> Result<Vec<u8>, LogStoreError> {
    serde_json::to_vec(value).map_err(|source| LogStoreError::Encode {
        what: what.to_owned(),
        source,
    })
}

fn decode<T: DeserializeOwned>(what: impl ToString, bytes: &[u8]) -> Result<T, LogStoreError> {
    serde_json::from_slice(bytes).map_err(|source| LogStoreError::Decode {
        what: what.to_string(),
        source,
    })
}

fn read_meta_in<T: DeserializeOwned>(db: &Database, key: &str) -> Result<Option<T>, LogStoreError> {
    let tx = db.begin_read()?;
    let meta = tx.open_table(META)?;
    match meta.get(key)? {
        Some(v) => Ok(Some(decode(key, v.value())?)),
        None => Ok(None),
    }
}

/// Copy a `RangeBounds<u64>` into an owned pair redb accepts.
fn owned_bounds(range: &impl RangeBounds<u64>) -> (Bound<u64>, Bound<u64>) {
    (range.start_bound().cloned(), range.end_bound().cloned())
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let found = self.sized_entries(owned_bounds(&range)).await?;
        Ok(found.into_iter().map(|(e, _)| e).collect())
    }

    /// What the leader sends a follower in one append: the entries from
    /// `start`, as many as fit in [`APPEND_BUDGET`] (at least one). An
    /// append must reach the follower within openraft's deadline, the
    /// heartbeat interval, or it is sent again, and again.
    async fn limited_get_log_entries(
        &mut self,
        start: u64,
        end: u64,
    ) -> Result<Vec<Entry>, StorageError> {
        let found = self
            .sized_entries((Bound::Included(start), Bound::Excluded(end)))
            .await?;
        Ok(within_budget(found, APPEND_BUDGET))
    }
}

/// The first of `entries` whose sizes add up to at most `budget` bytes;
/// always the first entry.
fn within_budget(entries: Vec<(Entry, usize)>, budget: usize) -> Vec<Entry> {
    let mut total = 0usize;
    let mut out = Vec::new();
    for (entry, bytes) in entries {
        total = total.saturating_add(bytes);
        if total > budget && !out.is_empty() {
            break;
        }
        out.push(entry);
    }
    out
}

impl LogStore {
    /// The entries in `bounds`, each with its encoded size.
    async fn sized_entries(
        &mut self,
        bounds: (Bound<u64>, Bound<u64>),
    ) -> Result<Vec<(Entry, usize)>, StorageError> {
        // Memory first: an entry the writer commits (or lets go of)
        // meanwhile is then in the database when it is read next, never in
        // neither.
        let (pending, whole) = self
            .recent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(bounds);
        if whole {
            return Ok(pending.into_iter().map(|(_, e)| e).collect());
        }
        let mut out = self
            .blocking(move |db| {
                let tx = db.begin_read()?;
                let logs = tx.open_table(LOGS)?;
                let mut out = BTreeMap::new();
                for item in logs.range::<u64>(bounds)? {
                    let (index, bytes) = item?;
                    let entry = decode(index.value(), bytes.value())?;
                    out.insert(index.value(), (entry, bytes.value().len()));
                }
                Ok(out)
            })
            .await
            .map_err(|e| e.into_storage(ErrorSubject::Logs, ErrorVerb::Read))?;
        out.extend(pending);
        Ok(out.into_values().collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let (last_purged, last) = self
            .blocking(|db| {
                let purged: Option<LogId> = read_meta_in(db, KEY_PURGED)?;
                let tx = db.begin_read()?;
                let logs = tx.open_table(LOGS)?;
                let last = match logs.last()? {
                    Some((index, bytes)) => {
                        let entry: Entry = decode(index.value(), bytes.value())?;
                        Some(entry.log_id)
                    }
                    None => None,
                };
                Ok((purged, last))
            })
            .await
            .map_err(|e| e.into_storage(ErrorSubject::Logs, ErrorVerb::Read))?;
        let queued = self
            .recent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .last_log_id();
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: queued.max(last).or(last_purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let bytes = encode(KEY_VOTE, vote)
            .map_err(|e| e.into_storage(ErrorSubject::Vote, ErrorVerb::Write))?;
        self.write_and_wait(|done| Op::Meta {
            key: KEY_VOTE,
            bytes,
            done: Some(done),
        })
        .await
        .map_err(|e| e.into_storage(ErrorSubject::Vote, ErrorVerb::Write))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        self.read_meta(KEY_VOTE)
            .await
            .map_err(|e| e.into_storage(ErrorSubject::Vote, ErrorVerb::Read))
    }

    /// The committed pointer may lag what is really committed without harm: on
    /// restart the peer re-applies up to the saved pointer and learns the
    /// rest from the leader. So it is queued without waiting and rides along
    /// with the writer's next transaction.
    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        let bytes = encode(KEY_COMMITTED, &committed)
            .map_err(|e| e.into_storage(ErrorSubject::Store, ErrorVerb::Write))?;
        self.send(Op::Meta {
            key: KEY_COMMITTED,
            bytes,
            done: None,
        })
        .map_err(|e| e.into_storage(ErrorSubject::Store, ErrorVerb::Write))
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        let saved: Option<Option<LogId>> = self
            .read_meta(KEY_COMMITTED)
            .await
            .map_err(|e| e.into_storage(ErrorSubject::Store, ErrorVerb::Read))?;
        Ok(saved.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let entries: Vec<Entry> = entries.into_iter().collect();
        let encoded = entries
            .iter()
            .map(|e| Ok((e.log_id.index, encode("append", e)?)))
            .collect::<Result<Vec<_>, LogStoreError>>()
            .map_err(|e| e.into_storage(ErrorSubject::Logs, ErrorVerb::Write))?;
        {
            let mut r = self.recent.lock().unwrap_or_else(|p| p.into_inner());
            for (entry, (index, bytes)) in entries.into_iter().zip(&encoded) {
                r.insert(
                    *index,
                    Kept {
                        seq,
                        bytes: bytes.len(),
                        written: false,
                        entry,
                    },
                );
            }
        }
        // The writer calls back once the entries are synced: only then may
        // openraft count them as ours.
        self.send(Op::Append {
            seq,
            entries: encoded,
            callback,
        })
        .map_err(|e| e.into_storage(ErrorSubject::Logs, ErrorVerb::Write))
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let from = log_id.index;
        let gone = self
            .recent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take_from(from);
        drop_off_runtime(gone);
        self.write_and_wait(|done| Op::Truncate { from, done })
            .await
            .map_err(|e| e.into_storage(ErrorSubject::Logs, ErrorVerb::Delete))
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let upto = log_id.index;
        let purged = encode(KEY_PURGED, &log_id)
            .map_err(|e| e.into_storage(ErrorSubject::Logs, ErrorVerb::Delete))?;
        let gone = self
            .recent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take_upto(upto);
        drop_off_runtime(gone);
        self.write_and_wait(|done| Op::Purge { upto, purged, done })
            .await
            .map_err(|e| e.into_storage(ErrorSubject::Logs, ErrorVerb::Delete))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::testing::log_id;
    use openraft::EntryPayload;

    fn kept(seq: u64, index: u64, bytes: usize) -> Kept {
        Kept {
            seq,
            bytes,
            written: false,
            entry: Entry {
                log_id: log_id(1, 1, index),
                payload: EntryPayload::Blank,
            },
        }
    }

    fn indices(r: &RecentEntries) -> Vec<u64> {
        r.entries.keys().copied().collect()
    }

    #[test]
    fn an_append_takes_the_entries_that_fit_its_budget_and_always_one() {
        let sized = |sizes: &[usize]| -> Vec<(Entry, usize)> {
            sizes
                .iter()
                .enumerate()
                .map(|(i, b)| (kept(1, i as u64 + 1, *b).entry, *b))
                .collect()
        };
        let got = |sizes: &[usize], budget| -> Vec<u64> {
            within_budget(sized(sizes), budget)
                .iter()
                .map(|e| e.log_id.index)
                .collect()
        };
        assert_eq!(got(&[10, 10, 10], 100), vec![1, 2, 3]);
        assert_eq!(got(&[40, 40, 40], 100), vec![1, 2]);
        assert_eq!(got(&[500, 10], 100), vec![1], "one always goes");
        assert_eq!(got(&[10, 500, 10], 100), vec![1]);
        assert!(got(&[], 100).is_empty());
    }

    #[test]
    fn recent_entries_answer_a_range_alone_only_when_they_hold_all_of_it() {
        let mut r = RecentEntries::default();
        for i in 5..=10 {
            r.insert(i, kept(1, i, 10));
        }
        let whole = |r: &RecentEntries, b: (Bound<u64>, Bound<u64>)| r.get(b).1;
        assert!(whole(&r, owned_bounds(&(5..=10))));
        assert!(whole(&r, owned_bounds(&(6..9))));
        assert!(
            !whole(&r, owned_bounds(&(4..=10))),
            "index 4 is only on disk"
        );
        assert!(
            !whole(&r, owned_bounds(&(5..=11))),
            "index 11 is nowhere here"
        );
        assert!(
            !whole(&r, owned_bounds(&(5..))),
            "an open range may reach further"
        );
        assert!(whole(&r, owned_bounds(&(7..7))), "an empty range");
        let hole = r.entries.remove(&7).expect("index 7 is held");
        r.forget(&hole);
        assert!(!whole(&r, owned_bounds(&(5..=10))), "a hole");
        assert_eq!(r.get(owned_bounds(&(5..=10))).0.len(), 5);
    }

    #[test]
    fn written_entries_past_the_budget_go_oldest_first_and_unwritten_ones_stay() {
        let mut r = RecentEntries {
            budget: 100,
            ..RecentEntries::default()
        };
        for i in 1..=5 {
            r.insert(i, kept(1, i, 40));
        }
        r.insert(6, kept(2, 6, 40));
        // Nothing is written yet: everything stays, whatever its size.
        assert_eq!(indices(&r), vec![1, 2, 3, 4, 5, 6]);
        let evicted: Vec<u64> = r
            .written(1, 1..=5)
            .iter()
            .map(|k| k.entry.log_id.index)
            .collect();
        assert_eq!(evicted, vec![1, 2, 3]);
        assert_eq!(indices(&r), vec![4, 5, 6], "200 written bytes cut to 80");
        assert_eq!(r.written_bytes, 80);
        // An entry replaced after a truncation is not made durable by the
        // older append that had queued its index.
        let gone: Vec<u64> = r.take_from(5).into_keys().collect();
        assert_eq!(gone, vec![5, 6]);
        assert_eq!(r.written_bytes, 40, "only index 4 is left written");
        r.insert(5, kept(3, 5, 40));
        assert!(r.written(1, 5..=5).is_empty());
        assert!(!r.entries[&5].written);
        assert!(r.written(3, 5..=5).is_empty());
        assert!(r.entries[&5].written);
        assert_eq!(r.written_bytes, 80);
        assert_eq!(r.last_log_id(), Some(log_id(1, 1, 5)));
        let purged: Vec<u64> = r.take_upto(4).into_keys().collect();
        assert_eq!(purged, vec![4]);
        assert_eq!(indices(&r), vec![5]);
        assert_eq!(r.written_bytes, 40);
    }
}
