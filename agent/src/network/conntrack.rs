//! The kernel's connection tracking table, sized for a node that proxies.
//!
//! The container network's nat rules load conntrack, and the routing mesh
//! opens a second connection for every one it accepts, so each request
//! through the mesh holds two entries, for two minutes after it closes
//! (TIME_WAIT). The kernel sizes the table from memory: 4,096 entries on a
//! 512 MiB machine, which a mesh answering 20 requests/s fills in under a
//! minute; then the kernel drops new connections ("nf_conntrack: table
//! full, dropping packet"), the node's own included. Like kube-proxy, the
//! agent raises the table to 32,768 entries per core, at least 131,072
//! (an entry takes about 300 bytes, and only while it is used), and never
//! lowers it.

use std::path::{Path, PathBuf};

/// Where the table's limit and its hash size live.
#[derive(Clone, Debug)]
pub struct Paths {
    pub max: PathBuf,
    pub buckets: PathBuf,
    pub hashsize: PathBuf,
}

impl Default for Paths {
    fn default() -> Paths {
        Paths {
            max: "/proc/sys/net/netfilter/nf_conntrack_max".into(),
            buckets: "/proc/sys/net/netfilter/nf_conntrack_buckets".into(),
            hashsize: "/sys/module/nf_conntrack/parameters/hashsize".into(),
        }
    }
}

/// The table size the agent wants on a machine with `cores` cores.
pub fn wanted(cores: usize) -> u64 {
    (32_768 * cores as u64).max(131_072)
}

/// The size wanted on this machine (by its cores).
pub fn wanted_here() -> u64 {
    wanted(std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// The table's size now; `None` while conntrack is not loaded.
pub fn current(paths: &Paths) -> Option<u64> {
    read_u64(&paths.max)
}

/// What `raise` found and did.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Conntrack is not loaded: nothing is tracked, nothing can fill.
    NotLoaded,
    /// The table already holds at least what is wanted.
    Enough(u64),
    /// Raised from the first size to the second.
    Raised(u64, u64),
    /// Too small, and this process may not change it (a network namespace
    /// other than the host's, a read-only /proc/sys): why.
    TooSmall(u64, String),
}

fn read_u64(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Raises the table to `want` entries (and its hash to a quarter of that,
/// as kube-proxy does) if it is smaller. Never lowers either.
pub fn raise(paths: &Paths, want: u64) -> Outcome {
    let Some(max) = current(paths) else {
        return Outcome::NotLoaded;
    };
    if max >= want {
        return Outcome::Enough(max);
    }
    // The hash first: a longer table on a short hash makes every lookup slow.
    let hash = want / 4;
    let buckets = read_u64(&paths.buckets).unwrap_or(0);
    if buckets < hash {
        // Writable in the host's namespace only; a failure leaves the
        // table correct, just slower to search.
        let _ = std::fs::write(&paths.hashsize, hash.to_string())
            .or_else(|_| std::fs::write(&paths.buckets, hash.to_string()));
    }
    match std::fs::write(&paths.max, want.to_string()) {
        Ok(()) => Outcome::Raised(max, read_u64(&paths.max).unwrap_or(want)),
        Err(e) => Outcome::TooSmall(max, format!("{}: {e}", paths.max.display())),
    }
}

/// `raise` on this machine, logged.
pub fn raise_for_node() {
    let want = wanted_here();
    match raise(&Paths::default(), want) {
        Outcome::NotLoaded | Outcome::Enough(_) => {}
        Outcome::Raised(from, to) => {
            tracing::info!(
                from,
                to,
                "raised the connection tracking table for the routing mesh"
            )
        }
        Outcome::TooSmall(max, why) => tracing::warn!(
            max,
            want,
            error = %why,
            "the connection tracking table is small for the routing mesh and cannot be raised here: when it fills, the kernel drops new connections; set net.netfilter.nf_conntrack_max on the host"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(max: Option<&str>, buckets: &str) -> (tempfile::TempDir, Paths) {
        let d = tempfile::tempdir().unwrap();
        let p = Paths {
            max: d.path().join("max"),
            buckets: d.path().join("buckets"),
            hashsize: d.path().join("hashsize"),
        };
        if let Some(m) = max {
            std::fs::write(&p.max, m).unwrap();
        }
        std::fs::write(&p.buckets, buckets).unwrap();
        (d, p)
    }

    #[test]
    fn the_wanted_size_grows_with_cores_from_a_floor() {
        assert_eq!(wanted(1), 131_072);
        assert_eq!(wanted(4), 131_072);
        assert_eq!(wanted(8), 262_144);
    }

    #[test]
    fn a_small_table_is_raised_with_its_hash() {
        // What a 512 MiB VM boots with.
        let (_d, p) = files(Some("4096\n"), "4096\n");
        assert_eq!(raise(&p, 131_072), Outcome::Raised(4096, 131_072));
        assert_eq!(std::fs::read_to_string(&p.max).unwrap(), "131072");
        assert_eq!(std::fs::read_to_string(&p.hashsize).unwrap(), "32768");
    }

    #[test]
    fn a_larger_table_is_never_lowered() {
        let (_d, p) = files(Some("262144\n"), "262144\n");
        assert_eq!(raise(&p, 131_072), Outcome::Enough(262_144));
        assert_eq!(std::fs::read_to_string(&p.max).unwrap(), "262144\n");
        assert!(!p.hashsize.exists());
    }

    #[test]
    fn no_conntrack_means_nothing_to_do() {
        let (_d, p) = files(None, "0");
        assert_eq!(raise(&p, 131_072), Outcome::NotLoaded);
        assert!(!p.max.exists());
    }

    #[test]
    fn a_table_that_cannot_be_raised_says_why() {
        let (_d, mut p) = files(Some("4096"), "4096");
        // A sysctl that is read-only for root too, as nf_conntrack_max is
        // in any network namespace but the host's.
        p.max = "/proc/sys/kernel/ngroups_max".into();
        let max = read_u64(&p.max).unwrap();
        match raise(&p, max + 1) {
            Outcome::TooSmall(m, why) => {
                assert_eq!(m, max);
                assert!(why.contains("ngroups_max"), "{why}");
            }
            other => panic!("{other:?}"),
        }
    }
}
