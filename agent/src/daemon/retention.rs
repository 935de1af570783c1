//! Retention: what an ended allocation leaves on disk goes after a while.
//!
//! An allocation's log (`logs/<id>.log`, and `<id>.log.1` once rotated)
//! outlives the allocation, so that `drover logs` can still show why it
//! ended; its bundle is removed when it ends, but one whose removal failed
//! (a busy mount) stays, marked by `bundles/<id>.ended`. Kept forever, both
//! fill a long-lived node's disk. So the agent removes them once the
//! allocation ended longer than the retention period (`--ended-retention`)
//! ago.
//!
//! What is still in use is never removed: a log is in use while its
//! allocation has a bundle (a bundle exists from prepare until the end,
//! across restarts) or an adopted container; a bundle unless it is marked
//! ended, and while its cgroup holds a process or an adopted container
//! claims it. The end touches the log, so a log's mtime is when its
//! allocation ended (or printed last, whichever is later); a bundle's age
//! is its mark's. (Bundles an agent that died left unmarked are the
//! business of `crate::leftovers` and adoption.) [`expired`] decides over
//! plain data; [`sweep`] reads the disk and carries the decision out.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::broadcast;

use super::Shared;
use crate::bundle::Bundle;
use crate::cgroups::CgroupManager;

/// What an allocation left on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A log, or the mark of a bundle that is gone.
    File,
    /// A bundle directory, with its mark.
    Bundle,
}

/// The mark of a bundle whose removal failed when its allocation ended.
pub fn ended_mark(bundles: &Path, id: &str) -> PathBuf {
    bundles.join(format!("{id}.ended"))
}

/// One file or directory an allocation left, as the sweep sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub id: String,
    pub kind: Kind,
    pub path: PathBuf,
    pub modified: SystemTime,
    /// Still in use (see the module docs): never expires.
    pub in_use: bool,
}

/// The entries not in use that have not changed for `retention` at `now`.
pub fn expired(entries: &[Entry], now: SystemTime, retention: Duration) -> Vec<&Entry> {
    entries
        .iter()
        .filter(|e| !e.in_use)
        // A modification time in the future (a clock step) is not old.
        .filter(|e| {
            now.duration_since(e.modified)
                .is_ok_and(|age| age >= retention)
        })
        .collect()
}

/// The allocation id a log file belongs to.
fn log_id(name: &str) -> Option<&str> {
    name.strip_suffix(".log")
        .or_else(|| name.strip_suffix(".log.1"))
        .filter(|id| !id.is_empty())
}

/// Lists what allocations left under `state_dir`.
pub fn scan(
    state_dir: &Path,
    cgroups: &dyn CgroupManager,
    adopted: &HashSet<String>,
) -> Vec<Entry> {
    let bundles = state_dir.join("bundles");
    let mut entries = Vec::new();
    let list = |dir: &Path| -> Vec<(String, PathBuf, SystemTime)> {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        rd.flatten()
            .filter_map(|e| {
                let modified = e.metadata().ok()?.modified().ok()?;
                Some((e.file_name().to_str()?.to_string(), e.path(), modified))
            })
            .collect()
    };
    for (name, path, modified) in list(&state_dir.join("logs")) {
        let Some(id) = log_id(&name) else { continue };
        entries.push(Entry {
            id: id.to_string(),
            kind: Kind::File,
            path,
            modified,
            in_use: adopted.contains(id) || bundles.join(id).exists(),
        });
    }
    for (name, mark, modified) in list(&bundles) {
        let Some(id) = name.strip_suffix(".ended").filter(|id| !id.is_empty()) else {
            continue;
        };
        let dir = bundles.join(id);
        let (kind, path) = if dir.is_dir() {
            (Kind::Bundle, dir)
        } else {
            (Kind::File, mark)
        };
        let in_use = adopted.contains(id) || !cgroups.procs(id).is_empty();
        entries.push(Entry {
            id: id.to_string(),
            kind,
            path,
            modified,
            in_use,
        });
    }
    entries
}

/// Removes what expired; returns what was removed and what could not be.
pub fn sweep(
    state_dir: &Path,
    cgroups: &dyn CgroupManager,
    adopted: &HashSet<String>,
    now: SystemTime,
    retention: Duration,
) -> (Vec<PathBuf>, Vec<String>) {
    let entries = scan(state_dir, cgroups, adopted);
    let (mut removed, mut errors) = (Vec::new(), Vec::new());
    for e in expired(&entries, now, retention) {
        let done = match e.kind {
            Kind::File => std::fs::remove_file(&e.path).map_err(|err| err.to_string()),
            Kind::Bundle => cgroups
                .remove(&e.id)
                .map_err(|err| err.to_string())
                .and_then(|()| {
                    Bundle::at(&e.path, e.id.clone())
                        .cleanup()
                        .map_err(|err| err.to_string())
                })
                .and_then(|()| {
                    let mark = ended_mark(&state_dir.join("bundles"), &e.id);
                    std::fs::remove_file(mark).map_err(|err| err.to_string())
                }),
        };
        match done {
            Ok(()) => removed.push(e.path.clone()),
            Err(err) => errors.push(format!("remove {}: {err}", e.path.display())),
        }
    }
    (removed, errors)
}

/// Sweeps every `retention / 4` (between 1 s and 1 min) until `stop`.
pub async fn run(shared: Arc<Shared>, retention: Duration, mut stop: broadcast::Receiver<()>) {
    let every = (retention / 4).clamp(Duration::from_secs(1), Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = stop.recv() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let shared = shared.clone();
        let swept = tokio::task::spawn_blocking(move || {
            let adopted: HashSet<String> = shared
                .adopted
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .keys()
                .cloned()
                .collect();
            sweep(
                &shared.state_dir,
                shared.runtime.cgroups(),
                &adopted,
                SystemTime::now(),
                retention,
            )
        })
        .await;
        if let Ok((removed, errors)) = swept {
            if !removed.is_empty() {
                tracing::info!(?removed, "removed what allocations that ended left behind");
            }
            for e in errors {
                tracing::warn!("retention: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    fn entry(id: &str, age: Duration, in_use: bool) -> Entry {
        Entry {
            id: id.into(),
            kind: Kind::File,
            path: PathBuf::from(format!("/s/logs/{id}.log")),
            modified: SystemTime::UNIX_EPOCH + Duration::from_secs(100_000) - age,
            in_use,
        }
    }

    #[test]
    fn only_what_is_unused_and_older_than_retention_expires() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(100_000);
        let entries = [
            entry("old", 2 * HOUR, false),
            entry("exactly", HOUR, false),
            entry("young", HOUR / 2, false),
            entry("running", 10 * HOUR, true),
            entry("future", Duration::ZERO, false),
        ];
        let mut future = entries[4].clone();
        future.modified = now + HOUR;
        let mut entries = entries.to_vec();
        entries[4] = future;
        let ids: Vec<&str> = expired(&entries, now, HOUR)
            .iter()
            .map(|e| e.id.as_str())
            .collect();
        assert_eq!(ids, ["old", "exactly"]);
        assert!(expired(&entries, now, 100 * HOUR).is_empty());
    }

    #[test]
    fn log_names_map_to_allocation_ids() {
        assert_eq!(log_id("abc123.log"), Some("abc123"));
        assert_eq!(log_id("abc123.log.1"), Some("abc123"));
        assert_eq!(log_id(".log"), None);
        assert_eq!(log_id("notes.txt"), None);
    }
}
