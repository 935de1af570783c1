//! Host ids for containers in user namespaces: each gets a range of its own,
//! 65,536 ids (a whole uid space, so any uid the image uses maps), from
//! 2^30 up, above any real user of the host, 16,384 ranges in all (as
//! Kubernetes gives each pod its own range).
//!
//! A range is slot `s` (host ids `2^30 + s * 65536 ..`). Which allocation
//! holds which slot is kept in memory and, to outlive an agent restart while
//! its containers run on, as one file per slot in `<state>/userns/`, holding
//! the allocation's id. On load a slot whose allocation has no bundle left
//! is free again.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::bundle::IdRange;

/// The first host id handed out.
pub const FIRST_ID: u32 = 1 << 30;
/// Ids per container.
pub const RANGE_SIZE: u32 = 65_536;
/// How many containers can hold a range at once.
pub const SLOTS: u32 = 16_384;

/// Why no id range could be given.
#[derive(Debug, thiserror::Error)]
pub enum IdRangeError {
    #[error("all {SLOTS} user namespace id ranges are in use")]
    Exhausted,
    #[error("record the id range in {path}: {source}")]
    Record {
        path: PathBuf,
        source: std::io::Error,
    },
}

#[derive(Debug)]
pub struct IdRanges {
    dir: PathBuf,
    held: Mutex<BTreeMap<u32, String>>,
}

fn range(slot: u32) -> IdRange {
    IdRange {
        start: FIRST_ID + slot * RANGE_SIZE,
        size: RANGE_SIZE,
    }
}

impl IdRanges {
    /// The ranges recorded in `dir`; those whose allocation has no
    /// directory in `bundles` any more are released.
    pub fn load(dir: &Path, bundles: &Path) -> std::io::Result<IdRanges> {
        crate::image::private_dir(dir).map_err(std::io::Error::other)?;
        let mut held = BTreeMap::new();
        for entry in std::fs::read_dir(dir)?.flatten() {
            let path = entry.path();
            let slot = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok());
            let alloc = std::fs::read_to_string(&path).unwrap_or_default();
            match slot {
                Some(s) if s < SLOTS && !alloc.is_empty() && bundles.join(&alloc).exists() => {
                    held.insert(s, alloc);
                }
                _ => {
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        Ok(IdRanges {
            dir: dir.to_path_buf(),
            held: Mutex::new(held),
        })
    }

    /// The range of `alloc`: the one it holds, or the lowest free one.
    pub fn allocate(&self, alloc: &str) -> Result<IdRange, IdRangeError> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((slot, _)) = held.iter().find(|(_, a)| *a == alloc) {
            return Ok(range(*slot));
        }
        let slot = (0..SLOTS)
            .find(|s| !held.contains_key(s))
            .ok_or(IdRangeError::Exhausted)?;
        let file = self.dir.join(slot.to_string());
        std::fs::write(&file, alloc).map_err(|source| IdRangeError::Record {
            path: file.clone(),
            source,
        })?;
        held.insert(slot, alloc.to_string());
        Ok(range(slot))
    }

    /// Frees the range of `alloc`, if it holds one.
    pub fn release(&self, alloc: &str) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        held.retain(|slot, a| {
            if a == alloc {
                let _ = std::fs::remove_file(self.dir.join(slot.to_string()));
                false
            } else {
                true
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_distinct_reused_after_release_and_survive_a_reload() {
        let tmp = tempfile::tempdir().unwrap();
        let (dir, bundles) = (tmp.path().join("userns"), tmp.path().join("bundles"));
        std::fs::create_dir_all(bundles.join("a")).unwrap();
        std::fs::create_dir_all(bundles.join("b")).unwrap();
        let r = IdRanges::load(&dir, &bundles).unwrap();
        let a = r.allocate("a").unwrap();
        let b = r.allocate("b").unwrap();
        assert_eq!(
            a,
            IdRange {
                start: 1 << 30,
                size: 65536
            }
        );
        assert_eq!(b.start, (1 << 30) + 65536);
        assert_eq!(r.allocate("a").unwrap(), a, "idempotent");
        // A restart keeps both while their bundles exist...
        let again = IdRanges::load(&dir, &bundles).unwrap();
        assert_eq!(again.allocate("b").unwrap(), b);
        // ... and frees a range whose bundle is gone.
        std::fs::remove_dir(bundles.join("a")).unwrap();
        let after = IdRanges::load(&dir, &bundles).unwrap();
        assert_eq!(after.allocate("c").unwrap(), a);
        after.release("b");
        assert!(!dir.join("1").exists());
        assert_eq!(after.allocate("d").unwrap(), b);
    }
}
