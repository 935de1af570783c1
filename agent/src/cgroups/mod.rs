//! Control groups: per-container resource limits and process accounting.
//!
//! A cgroup is a directory in a cgroup filesystem; writing a pid into its
//! `cgroup.procs` moves the process in, and the control files next to it set
//! limits. cgroup v1 has one hierarchy per controller
//! (`<root>/memory/drover/<id>`, `<root>/cpu/...`, `<root>/pids/...`); v2 has a
//! single unified tree (`<root>/drover/<id>`) where a parent must enable a
//! controller in `cgroup.subtree_control` before children can use it. Both sit
//! behind [`CgroupManager`]; the root is a path so tests can run on a fake tree.
//! Device access is the `devices` controller on v1 and an eBPF program on v2
//! (`device_bpf`).

mod device_bpf;
mod v1;
mod v2;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use v1::CgroupV1;
pub use v2::CgroupV2;

/// The parent cgroup of every Drover container.
pub const PARENT: &str = "drover";

/// Errors from creating, filling and removing cgroups.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("invalid cgroup id {id:?}: must be non-empty and contain no '/' or '..'")]
    InvalidId { id: String },
    #[error("write {value:?} to {path}: {source}")]
    Write {
        path: PathBuf,
        value: String,
        source: std::io::Error,
    },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("device rule {rule:?}: {reason}")]
    DeviceRule { rule: String, reason: String },
    #[error("{op} the device program (cgroup v2): {source} {detail}")]
    DeviceProgram {
        op: &'static str,
        source: std::io::Error,
        detail: String,
    },
    #[error(
        "the devices controller is not mounted under {root}: containers could open any device node, so none are started"
    )]
    NoDevicesController { root: PathBuf },
    #[error("cgroup {path} still has processes {pids:?} after {waited:?}")]
    NotEmpty {
        path: PathBuf,
        pids: Vec<i32>,
        waited: Duration,
    },
}

/// Resource limits of one container.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    pub memory_bytes: Option<u64>,
    /// CPU quota in thousandths of a CPU (1000 = one full core).
    pub cpu_millis: Option<u64>,
    pub pids: Option<i64>,
}

/// CFS period used for CPU quotas, in microseconds.
pub const CPU_PERIOD_US: u64 = 100_000;
/// The smallest CFS quota the kernel takes (a smaller one is EINVAL):
/// 10 millicores over the period. Smaller asks get this, as Kubernetes
/// does (`MinQuotaPeriod`).
pub const MIN_CPU_QUOTA_US: u64 = 1_000;

impl Limits {
    /// The CFS quota for `cpu_millis` over [`CPU_PERIOD_US`], at least
    /// [`MIN_CPU_QUOTA_US`].
    pub fn cpu_quota_us(&self) -> Option<u64> {
        self.cpu_millis
            .map(|m| (m * CPU_PERIOD_US / 1000).max(MIN_CPU_QUOTA_US))
    }
}

/// One cgroup hierarchy layout (v1 or v2) rooted at a path.
pub trait CgroupManager: Send + Sync + std::fmt::Debug {
    /// Creates the cgroup of `id` and applies `limits`. Idempotent.
    fn create(&self, id: &str, limits: &Limits) -> Result<(), CgroupError>;
    /// Moves `pid` into the cgroup of `id`.
    fn add_process(&self, id: &str, pid: i32) -> Result<(), CgroupError>;
    /// Kills any process left in the cgroup, waits until it is empty and
    /// removes it. Succeeds if the cgroup does not exist.
    fn remove(&self, id: &str) -> Result<(), CgroupError>;
    /// The memory limit currently set, `None` if unlimited or absent.
    fn memory_limit(&self, id: &str) -> Option<u64>;
    /// Pids in the cgroup (empty if it does not exist).
    fn procs(&self, id: &str) -> Vec<i32>;
    /// Current memory usage in bytes.
    fn memory_usage(&self, id: &str) -> Option<u64>;
    /// Total CPU time consumed, in nanoseconds.
    fn cpu_usage_ns(&self, id: &str) -> Option<u64>;
    /// Directories that make up the cgroup of `id` (one per v1 controller).
    fn paths(&self, id: &str) -> Vec<PathBuf>;
    /// How many processes of the cgroup the kernel's OOM killer has killed.
    fn oom_kills(&self, id: &str) -> u64;
    /// Applies device access rules, `(allow, "type major:minor access")` in
    /// order (the first is usually "deny everything"): v1's `devices` files,
    /// or v2's eBPF program. Fails rather than leave devices open.
    fn set_devices(&self, id: &str, rules: &[(bool, String)]) -> Result<(), CgroupError>;
}

/// Which cgroup version a root holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

/// v2 if `<root>/cgroup.controllers` exists (a unified mount), else v1.
pub fn detect_version(root: &Path) -> Version {
    if root.join("cgroup.controllers").exists() {
        Version::V2
    } else {
        Version::V1
    }
}

/// A manager for the hierarchy at `root` (usually `/sys/fs/cgroup`).
pub fn manager_for(root: impl Into<PathBuf>) -> Box<dyn CgroupManager> {
    let root = root.into();
    match detect_version(&root) {
        Version::V1 => Box::new(CgroupV1::new(root)),
        Version::V2 => Box::new(CgroupV2::new(root)),
    }
}

pub(crate) fn check_id(id: &str) -> Result<(), CgroupError> {
    if id.is_empty() || id.contains('/') || id == "." || id == ".." || id.contains('\0') {
        return Err(CgroupError::InvalidId { id: id.to_string() });
    }
    Ok(())
}

pub(crate) fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    std::fs::write(path, value).map_err(|source| CgroupError::Write {
        path: path.to_path_buf(),
        value: value.to_string(),
        source,
    })
}

pub(crate) fn read_u64(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The value of `key` in a flat-keyed file (`key value` per line).
pub(crate) fn read_key(path: &Path, key: &str) -> Option<u64> {
    std::fs::read_to_string(path)
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
}

pub(crate) fn read_procs(dir: &Path) -> Vec<i32> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .map(|s| s.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

/// Creates `dir` and its parents.
pub(crate) fn mkdir(dir: &Path) -> Result<(), CgroupError> {
    std::fs::create_dir_all(dir).map_err(|source| CgroupError::Io {
        op: "create",
        path: dir.to_path_buf(),
        source,
    })
}

const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// SIGKILLs everything in `dir` until `cgroup.procs` is empty, then removes it.
pub(crate) fn drain_and_rmdir(dir: &Path) -> Result<(), CgroupError> {
    if !dir.exists() {
        return Ok(());
    }
    let start = Instant::now();
    let mut pause = Duration::from_micros(200);
    loop {
        let pids = read_procs(dir);
        if pids.is_empty() {
            break;
        }
        if start.elapsed() > DRAIN_TIMEOUT {
            return Err(CgroupError::NotEmpty {
                path: dir.to_path_buf(),
                pids,
                waited: start.elapsed(),
            });
        }
        for pid in pids {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
    rmdir(dir)
}

fn rmdir(dir: &Path) -> Result<(), CgroupError> {
    match std::fs::remove_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        // A real cgroupfs removes a directory together with its control files;
        // ENOTEMPTY only happens on a plain directory tree (the test fakes).
        Err(e) if e.raw_os_error() == Some(libc::ENOTEMPTY) => std::fs::remove_dir_all(dir)
            .map_err(|source| CgroupError::Io {
                op: "remove",
                path: dir.to_path_buf(),
                source,
            }),
        // EBUSY right after the last process left: the kernel may still be
        // tearing it down; retry briefly.
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
            for _ in 0..50 {
                std::thread::sleep(Duration::from_millis(2));
                if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
                    return Ok(());
                }
            }
            Err(CgroupError::Io {
                op: "remove",
                path: dir.to_path_buf(),
                source: e,
            })
        }
        Err(source) => Err(CgroupError::Io {
            op: "remove",
            path: dir.to_path_buf(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_version_from_root() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(detect_version(dir.path()), Version::V1);
        std::fs::write(dir.path().join("cgroup.controllers"), "cpu memory pids\n").unwrap();
        assert_eq!(detect_version(dir.path()), Version::V2);
    }

    #[test]
    fn cpu_quota_is_millis_times_100() {
        let l = Limits {
            cpu_millis: Some(250),
            ..Default::default()
        };
        assert_eq!(l.cpu_quota_us(), Some(25_000));
        // Below what the kernel takes: its least.
        let tiny = Limits {
            cpu_millis: Some(1),
            ..Default::default()
        };
        assert_eq!(tiny.cpu_quota_us(), Some(MIN_CPU_QUOTA_US));
    }

    #[test]
    fn flat_keyed_files_parse() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("memory.oom_control");
        std::fs::write(&f, "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n").unwrap();
        assert_eq!(read_key(&f, "oom_kill"), Some(3));
        assert_eq!(read_key(&f, "under_oom"), Some(0));
        assert_eq!(read_key(&f, "oom"), None);
    }

    #[test]
    fn rejects_ids_that_escape() {
        for id in ["", "..", "a/b", "."] {
            assert!(check_id(id).is_err(), "{id:?}");
        }
        assert!(check_id("web-1").is_ok());
    }
}
