//! Host ids for containers in user namespaces: each gets a range of its own,
//! 65,536 ids (a whole uid space, so any uid the image uses maps), from
//! 2^30 up, above any real user of the host, 16,384 ranges in all (as
//! Kubernetes gives each pod its own range).
//!
//! A range is slot `s` (host ids `2^30 + s * 65536 ..`). Slots are recorded
//! host-wide, one file per slot in [`REGISTRY`] (a tmpfs: a reboot, which
//! ends every container, frees them all), so that every agent on the host
//! (each with its own state dir) and `drover-bench runtime` draw from
//! one pool: a slot is taken by creating its file (`O_EXCL`), which two
//! processes cannot both do. A file names the state dir and the allocation
//! holding the slot; an agent frees its own slots whose bundle is gone,
//! when it starts and whenever it takes a new one.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::bundle::IdRange;

/// The first host id handed out.
pub const FIRST_ID: u32 = 1 << 30;
/// Ids per container.
pub const RANGE_SIZE: u32 = 65_536;
/// How many containers can hold a range at once, on the whole host.
pub const SLOTS: u32 = 16_384;
/// Where the slots in use on this host are recorded.
pub const REGISTRY: &str = "/run/drover/userns";

/// Why no id range could be given.
#[derive(Debug, thiserror::Error)]
pub enum IdRangeError {
    #[error("all {SLOTS} user namespace id ranges of this host are in use")]
    Exhausted,
    #[error("record the id range in {path}: {source}")]
    Record {
        path: PathBuf,
        source: std::io::Error,
    },
}

#[derive(Debug)]
pub struct IdRanges {
    registry: PathBuf,
    /// Whose slots these are: the (resolved) state dir.
    owner: String,
    bundles: PathBuf,
    /// One allocation at a time in this process (others are kept out by
    /// `O_EXCL`).
    lock: Mutex<()>,
}

fn range(slot: u32) -> IdRange {
    IdRange {
        start: FIRST_ID + slot * RANGE_SIZE,
        size: RANGE_SIZE,
    }
}

impl IdRanges {
    /// The slots of the agent whose state dir is `state_dir`, recorded in
    /// `registry`; those whose bundle is gone are freed.
    pub fn open(registry: &Path, state_dir: &Path) -> std::io::Result<IdRanges> {
        crate::image::private_dir(registry).map_err(std::io::Error::other)?;
        let owner = std::fs::canonicalize(state_dir)
            .unwrap_or_else(|_| state_dir.to_path_buf())
            .to_string_lossy()
            .into_owned();
        let r = IdRanges {
            registry: registry.to_path_buf(),
            owner,
            bundles: state_dir.join("bundles"),
            lock: Mutex::new(()),
        };
        r.reclaim();
        Ok(r)
    }

    /// Every recorded slot: (slot, owner, allocation).
    fn entries(&self) -> Vec<(u32, String, String)> {
        let Ok(dir) = std::fs::read_dir(&self.registry) else {
            return Vec::new();
        };
        dir.flatten()
            .filter_map(|e| {
                let slot = e.file_name().to_str()?.parse::<u32>().ok()?;
                let text = std::fs::read_to_string(e.path()).ok()?;
                let (owner, alloc) = text.split_once('\n')?;
                Some((slot, owner.to_string(), alloc.to_string()))
            })
            .collect()
    }

    /// Frees this agent's slots whose allocation has no bundle any more,
    /// and any slot of a state dir that is gone.
    fn reclaim(&self) {
        for (slot, owner, alloc) in self.entries() {
            let stale = if owner == self.owner {
                !self.bundles.join(&alloc).exists()
            } else {
                !Path::new(&owner).exists()
            };
            if stale {
                let _ = std::fs::remove_file(self.registry.join(slot.to_string()));
            }
        }
    }

    /// The range of `alloc`: the one it holds, or the lowest free one.
    pub fn allocate(&self, alloc: &str) -> Result<IdRange, IdRangeError> {
        let _one_at_a_time = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let entries = self.entries();
        if let Some((slot, _, _)) = entries
            .iter()
            .find(|(_, o, a)| *o == self.owner && a == alloc)
        {
            return Ok(range(*slot));
        }
        self.reclaim();
        for slot in 0..SLOTS {
            let path = self.registry.join(slot.to_string());
            let file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path);
            match file {
                Ok(mut f) => {
                    use std::io::Write;
                    let record = format!("{}\n{alloc}", self.owner);
                    if let Err(source) = f.write_all(record.as_bytes()) {
                        let _ = std::fs::remove_file(&path);
                        return Err(IdRangeError::Record { path, source });
                    }
                    return Ok(range(slot));
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(source) => return Err(IdRangeError::Record { path, source }),
            }
        }
        Err(IdRangeError::Exhausted)
    }

    /// Frees the range of `alloc`, if it holds one.
    pub fn release(&self, alloc: &str) {
        for (slot, owner, a) in self.entries() {
            if owner == self.owner && a == alloc {
                let _ = std::fs::remove_file(self.registry.join(slot.to_string()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_distinct_across_agents_reused_after_release_and_survive_a_restart() {
        let tmp = tempfile::tempdir().unwrap();
        let registry = tmp.path().join("registry");
        let (one, two) = (tmp.path().join("one"), tmp.path().join("two"));
        for b in ["a", "b"] {
            std::fs::create_dir_all(one.join("bundles").join(b)).unwrap();
        }
        std::fs::create_dir_all(two.join("bundles/a")).unwrap();
        let r1 = IdRanges::open(&registry, &one).unwrap();
        let r2 = IdRanges::open(&registry, &two).unwrap();
        let a = r1.allocate("a").unwrap();
        assert_eq!(
            a,
            IdRange {
                start: 1 << 30,
                size: 65536
            }
        );
        // Another agent on the host, even for an allocation of the same
        // name, gets another range.
        let other = r2.allocate("a").unwrap();
        assert_eq!(other.start, (1 << 30) + 65536);
        let b = r1.allocate("b").unwrap();
        assert_eq!(b.start, (1 << 30) + 2 * 65536);
        assert_eq!(r1.allocate("a").unwrap(), a, "idempotent");
        // A restart keeps what still has a bundle and frees the rest, its own only.
        std::fs::remove_dir(one.join("bundles/a")).unwrap();
        std::fs::remove_dir(two.join("bundles/a")).unwrap();
        let again = IdRanges::open(&registry, &one).unwrap();
        assert_eq!(again.allocate("b").unwrap(), b);
        assert_eq!(again.allocate("c").unwrap(), a, "a's slot was freed");
        assert_eq!(
            r2.entries()
                .iter()
                .filter(|(_, o, _)| *o == r2.owner)
                .count(),
            1,
            "the other agent's slot is its own to free"
        );
        again.release("b");
        assert!(!registry.join("2").exists());
        // An agent whose state dir is gone frees nothing itself: the next
        // one to take a slot does.
        std::fs::remove_dir_all(&two).unwrap();
        again.allocate("d").unwrap();
        assert!(r2.entries().iter().all(|(_, o, _)| *o != r2.owner));
    }
}
