//! cgroup v1: one hierarchy per controller, the container's cgroup repeated
//! in each (`<root>/<controller>/drover/<id>`).
//!
//! Like runc, a container joins every hierarchy the host mounts, not only
//! the ones Drover sets limits in: `cpuacct` is how its cpu time is
//! accounted, `devices` how device access is denied, `freezer` what pausing
//! would use, and the named `systemd` and hybrid `unified` trees keep
//! `/proc/<pid>/cgroup` naming the container everywhere. Hierarchies the
//! host does not mount are skipped; memory, cpu and pids are required.

use std::path::PathBuf;

use super::{check_id, drain_and_rmdir, mkdir, read_key, read_procs, read_u64, write};
use super::{CgroupError, CgroupManager, Limits, CPU_PERIOD_US, PARENT};

/// The hierarchies Drover sets limits in; they must exist.
const REQUIRED: [&str; 3] = ["memory", "cpu", "pids"];

/// Further hierarchies a container joins when the host mounts them.
const OPTIONAL: [&str; 7] = [
    "cpuacct", "devices", "cpuset", "freezer", "blkio", "systemd", "unified",
];

/// v1 memory cgroups report "unlimited" as a huge page-aligned number.
const V1_UNLIMITED: u64 = 0x7FFF_FFFF_FFFF_F000;

#[derive(Debug, Clone)]
pub struct CgroupV1 {
    root: PathBuf,
}

impl CgroupV1 {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        CgroupV1 { root: root.into() }
    }

    fn dir(&self, controller: &str, id: &str) -> PathBuf {
        self.root.join(controller).join(PARENT).join(id)
    }

    /// The hierarchies this host has, required ones first.
    fn controllers(&self) -> impl Iterator<Item = &'static str> + '_ {
        REQUIRED.into_iter().chain(
            OPTIONAL
                .into_iter()
                .filter(|c| self.root.join(c).join("cgroup.procs").exists()),
        )
    }

    /// A new cpuset cgroup starts with no cpus and no memory nodes, and a
    /// process cannot join it until both are set: inherit the parent's.
    fn init_cpuset(&self, id: &str) -> Result<(), CgroupError> {
        let top = self.root.join("cpuset");
        let mut parent = top.clone();
        for dir in [top.join(PARENT), self.dir("cpuset", id)] {
            for file in ["cpuset.cpus", "cpuset.mems"] {
                let current = std::fs::read_to_string(dir.join(file)).unwrap_or_default();
                if current.trim().is_empty() {
                    let value = std::fs::read_to_string(parent.join(file)).unwrap_or_default();
                    write(&dir.join(file), value.trim())?;
                }
            }
            parent = dir;
        }
        Ok(())
    }
}

impl CgroupManager for CgroupV1 {
    fn create(&self, id: &str, limits: &Limits) -> Result<(), CgroupError> {
        check_id(id)?;
        for c in self.controllers() {
            mkdir(&self.dir(c, id))?;
            if c == "cpuset" {
                self.init_cpuset(id)?;
            }
        }
        if let Some(bytes) = limits.memory_bytes {
            let memory = self.dir("memory", id);
            // Memory+swap no higher than memory, so swapping cannot dodge
            // the limit. The file exists only with swap accounting; the
            // kernel keeps it >= the memory limit, so it is lifted first (a
            // cgroup created again may hold a smaller one).
            let memsw = memory.join("memory.memsw.limit_in_bytes");
            let swap_accounted = memsw.exists();
            if swap_accounted {
                write(&memsw, "-1")?;
            }
            write(&memory.join("memory.limit_in_bytes"), &bytes.to_string())?;
            if swap_accounted {
                write(&memsw, &bytes.to_string())?;
            }
        }
        if let Some(quota) = limits.cpu_quota_us() {
            let cpu = self.dir("cpu", id);
            write(&cpu.join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())?;
            write(&cpu.join("cpu.cfs_quota_us"), &quota.to_string())?;
        }
        if let Some(pids) = limits.pids {
            write(&self.dir("pids", id).join("pids.max"), &pids.to_string())?;
        }
        Ok(())
    }

    fn add_process(&self, id: &str, pid: i32) -> Result<(), CgroupError> {
        check_id(id)?;
        for c in self.controllers() {
            write(&self.dir(c, id).join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    fn remove(&self, id: &str) -> Result<(), CgroupError> {
        check_id(id)?;
        for c in self.controllers() {
            drain_and_rmdir(&self.dir(c, id))?;
        }
        Ok(())
    }

    fn memory_limit(&self, id: &str) -> Option<u64> {
        read_u64(&self.dir("memory", id).join("memory.limit_in_bytes"))
            .filter(|&l| l < V1_UNLIMITED)
    }

    fn procs(&self, id: &str) -> Vec<i32> {
        read_procs(&self.dir("pids", id))
    }

    fn memory_usage(&self, id: &str) -> Option<u64> {
        read_u64(&self.dir("memory", id).join("memory.usage_in_bytes"))
    }

    fn cpu_usage_ns(&self, id: &str) -> Option<u64> {
        // `cpu` is usually co-mounted with `cpuacct`; fall back to its own hierarchy.
        read_u64(&self.dir("cpu", id).join("cpuacct.usage"))
            .or_else(|| read_u64(&self.dir("cpuacct", id).join("cpuacct.usage")))
    }

    fn paths(&self, id: &str) -> Vec<PathBuf> {
        self.controllers().map(|c| self.dir(c, id)).collect()
    }

    fn oom_kills(&self, id: &str) -> u64 {
        read_key(
            &self.dir("memory", id).join("memory.oom_control"),
            "oom_kill",
        )
        .unwrap_or(0)
    }

    fn set_devices(&self, id: &str, rules: &[(bool, String)]) -> Result<(), CgroupError> {
        check_id(id)?;
        // Fail closed: without the controller every device would be open.
        if !self.root.join("devices").exists() {
            return Err(CgroupError::NoDevicesController {
                root: self.root.clone(),
            });
        }
        let dir = self.dir("devices", id);
        for (allow, rule) in rules {
            let file = if *allow {
                "devices.allow"
            } else {
                "devices.deny"
            };
            write(&dir.join(file), rule)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_root() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for c in REQUIRED.iter().chain(&["devices"]) {
            std::fs::create_dir(dir.path().join(c)).unwrap();
            std::fs::write(dir.path().join(c).join("cgroup.procs"), "").unwrap();
        }
        dir
    }

    #[test]
    fn create_writes_limits_per_controller() {
        let root = fake_root();
        let cg = CgroupV1::new(root.path());
        let limits = Limits {
            memory_bytes: Some(64 << 20),
            cpu_millis: Some(500),
            pids: Some(32),
        };
        cg.create("web-1", &limits).unwrap();
        let read = |p: &str| std::fs::read_to_string(root.path().join(p)).unwrap();
        assert_eq!(
            read("memory/drover/web-1/memory.limit_in_bytes"),
            "67108864"
        );
        assert_eq!(read("cpu/drover/web-1/cpu.cfs_quota_us"), "50000");
        assert_eq!(read("cpu/drover/web-1/cpu.cfs_period_us"), "100000");
        assert_eq!(read("pids/drover/web-1/pids.max"), "32");
        assert_eq!(cg.memory_limit("web-1"), Some(64 << 20));
    }

    #[test]
    fn add_process_and_remove_is_idempotent() {
        let root = fake_root();
        let cg = CgroupV1::new(root.path());
        cg.create("a", &Limits::default()).unwrap();
        cg.add_process("a", 4242).unwrap();
        assert_eq!(cg.procs("a"), vec![4242]);
        assert_eq!(
            std::fs::read_to_string(root.path().join("memory/drover/a/cgroup.procs")).unwrap(),
            "4242"
        );
        // Empty the fake (the kernel would do this when the process exits).
        for c in REQUIRED.iter().chain(&["devices"]) {
            std::fs::write(root.path().join(c).join("drover/a/cgroup.procs"), "").unwrap();
        }
        cg.remove("a").unwrap();
        cg.remove("a").unwrap();
        assert!(!root.path().join("memory/drover/a").exists());
        assert!(cg.procs("a").is_empty());
        assert_eq!(cg.memory_limit("a"), None);
    }

    #[test]
    fn device_rules_fail_closed_without_the_devices_controller() {
        let root = fake_root();
        let cg = CgroupV1::new(root.path());
        cg.create("d", &Limits::default()).unwrap();
        let rules = [
            (false, "a *:* rwm".to_string()),
            (true, "c 1:3 rwm".to_string()),
        ];
        cg.set_devices("d", &rules).unwrap();
        assert_eq!(
            std::fs::read_to_string(root.path().join("devices/drover/d/devices.allow")).unwrap(),
            "c 1:3 rwm"
        );
        std::fs::remove_dir_all(root.path().join("devices")).unwrap();
        let err = cg.set_devices("d", &rules).unwrap_err().to_string();
        assert!(err.contains("devices controller is not mounted"), "{err}");
    }
}
