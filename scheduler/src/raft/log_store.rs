//! The durable Raft log: entries, the vote and log pointers, kept in redb.
//!
//! Raft's safety rests on two promises a replica makes to its peers: a vote it
//! granted stays granted, and an entry it acknowledged stays in its log. Both
//! must therefore be on disk before openraft is told they are. Every write here
//! is a redb transaction committed with [`Durability::Immediate`] (an fsync),
//! and only after that commit returns is openraft's flush callback invoked.
//! A batch of entries is one transaction, so one fsync covers the batch.
//!
//! Layout: table `logs` maps the entry index (u64, big-endian in redb's key
//! order) to the JSON entry; table `meta` holds the vote, the last purged log
//! id and the committed log id, each as JSON under a fixed key.
//!
//! redb's API is synchronous and a commit waits on fsync, which on this
//! two-core machine would stall a tokio worker (and with it the heartbeat
//! timers of the same runtime). So every database access runs on tokio's
//! blocking pool via `spawn_blocking`. Ordering is still strict: openraft calls
//! the store through `&mut self` and each call awaits its blocking job before
//! returning, so writes never overtake each other.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::Arc;

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
    #[error("raft log entry {what} does not decode: {source}")]
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

/// The redb-backed log. Cheap to clone: clones share one database, which is
/// how openraft's log readers (one per replication stream) are made.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
}

impl Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStore").finish_non_exhaustive()
    }
}

impl LogStore {
    /// Open (or create) the log at `path`. Blocking; call it once at startup.
    pub fn open(path: &Path) -> Result<Self, LogStoreError> {
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
        Ok(Self { db: Arc::new(db) })
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

    async fn read_meta<T: DeserializeOwned + Send + 'static>(
        &self,
        key: &'static str,
    ) -> Result<Option<T>, LogStoreError> {
        self.blocking(move |db| read_meta_in(db, key)).await
    }

    /// Write one meta value in its own transaction with the given durability.
    async fn write_meta<T: Serialize>(
        &self,
        key: &'static str,
        value: &T,
        durability: Durability,
    ) -> Result<(), LogStoreError> {
        let bytes = encode(key, value)?;
        self.blocking(move |db| {
            let mut tx = db.begin_write()?;
            tx.set_durability(durability);
            tx.open_table(META)?.insert(key, bytes.as_slice())?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn append_entries(&self, entries: Vec<(u64, Vec<u8>)>) -> Result<(), LogStoreError> {
        self.blocking(move |db| {
            let mut tx = db.begin_write()?;
            tx.set_durability(Durability::Immediate);
            {
                let mut logs = tx.open_table(LOGS)?;
                for (index, bytes) in &entries {
                    logs.insert(*index, bytes.as_slice())?;
                }
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }
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
        let bounds = owned_bounds(&range);
        self.blocking(move |db| {
            let tx = db.begin_read()?;
            let logs = tx.open_table(LOGS)?;
            let mut out = Vec::new();
            for item in logs.range::<u64>(bounds)? {
                let (index, bytes) = item?;
                out.push(decode(index.value(), bytes.value())?);
            }
            Ok(out)
        })
        .await
        .map_err(|e| e.into_storage(ErrorSubject::Logs, ErrorVerb::Read))
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
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last.or(last_purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        self.write_meta(KEY_VOTE, vote, Durability::Immediate)
            .await
            .map_err(|e| e.into_storage(ErrorSubject::Vote, ErrorVerb::Write))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        self.read_meta(KEY_VOTE)
            .await
            .map_err(|e| e.into_storage(ErrorSubject::Vote, ErrorVerb::Read))
    }

    /// The committed pointer may lag what is really committed without harm: on
    /// restart the replica re-applies up to the saved pointer and learns the
    /// rest from the leader. So it is written with `Eventual` durability and
    /// costs no fsync of its own; the next vote or append syncs it anyway.
    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        self.write_meta(KEY_COMMITTED, &committed, Durability::Eventual)
            .await
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
        let encoded = entries
            .into_iter()
            .map(|e| Ok((e.log_id.index, encode("append", &e)?)))
            .collect::<Result<Vec<_>, LogStoreError>>()
            .map_err(|e| e.into_storage(ErrorSubject::Logs, ErrorVerb::Write))?;
        match self.append_entries(encoded).await {
            Ok(()) => {
                // Synced: only now may openraft count these entries as ours.
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(e.into_storage(ErrorSubject::Logs, ErrorVerb::Write))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let from = log_id.index;
        self.blocking(move |db| {
            let mut tx = db.begin_write()?;
            tx.set_durability(Durability::Immediate);
            tx.open_table(LOGS)?.retain_in(from.., |_, _| false)?;
            tx.commit()?;
            Ok(())
        })
        .await
        .map_err(|e| e.into_storage(ErrorSubject::Logs, ErrorVerb::Delete))
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let upto = log_id.index;
        let purged = encode(KEY_PURGED, &log_id)
            .map_err(|e| e.into_storage(ErrorSubject::Logs, ErrorVerb::Delete))?;
        self.blocking(move |db| {
            let mut tx = db.begin_write()?;
            tx.set_durability(Durability::Immediate);
            // Record the purge point in the same transaction as the deletion,
            // so a crash never leaves a hole without knowing where it ends.
            tx.open_table(META)?.insert(KEY_PURGED, purged.as_slice())?;
            tx.open_table(LOGS)?.retain_in(..=upto, |_, _| false)?;
            tx.commit()?;
            Ok(())
        })
        .await
        .map_err(|e| e.into_storage(ErrorSubject::Logs, ErrorVerb::Delete))
    }
}
