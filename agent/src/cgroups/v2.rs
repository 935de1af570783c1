//! cgroup v2: one unified tree; the container's cgroup is `<root>/drover/<id>`
//! and the controllers it needs are enabled in the parents' `subtree_control`.

use std::path::PathBuf;

use super::{check_id, drain_and_rmdir, mkdir, read_key, read_procs, read_u64, write};
use super::{CgroupError, CgroupManager, Limits, CPU_PERIOD_US, PARENT};

const CONTROLLERS: [&str; 3] = ["memory", "cpu", "pids"];

#[derive(Debug, Clone)]
pub struct CgroupV2 {
    root: PathBuf,
}

impl CgroupV2 {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        CgroupV2 { root: root.into() }
    }

    fn dir(&self, id: &str) -> PathBuf {
        self.root.join(PARENT).join(id)
    }

    /// Enables in `dir/cgroup.subtree_control` those of our controllers that
    /// `dir` has available.
    fn enable_controllers(&self, dir: &std::path::Path) -> Result<(), CgroupError> {
        let available = std::fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
        let enable: Vec<String> = CONTROLLERS
            .iter()
            .filter(|c| available.split_whitespace().any(|a| a == **c))
            .map(|c| format!("+{c}"))
            .collect();
        if enable.is_empty() {
            return Ok(());
        }
        write(&dir.join("cgroup.subtree_control"), &enable.join(" "))
    }
}

impl CgroupManager for CgroupV2 {
    fn create(&self, id: &str, limits: &Limits) -> Result<(), CgroupError> {
        check_id(id)?;
        let parent = self.root.join(PARENT);
        mkdir(&parent)?;
        self.enable_controllers(&self.root)?;
        self.enable_controllers(&parent)?;
        let dir = self.dir(id);
        mkdir(&dir)?;
        if let Some(bytes) = limits.memory_bytes {
            write(&dir.join("memory.max"), &bytes.to_string())?;
            // No swap at all, so swapping cannot dodge the limit (the file
            // exists only with swap accounting).
            let swap = dir.join("memory.swap.max");
            if swap.exists() {
                write(&swap, "0")?;
            }
        }
        if let Some(quota) = limits.cpu_quota_us() {
            write(&dir.join("cpu.max"), &format!("{quota} {CPU_PERIOD_US}"))?;
        }
        if let Some(pids) = limits.pids {
            write(&dir.join("pids.max"), &pids.to_string())?;
        }
        Ok(())
    }

    fn add_process(&self, id: &str, pid: i32) -> Result<(), CgroupError> {
        check_id(id)?;
        write(&self.dir(id).join("cgroup.procs"), &pid.to_string())
    }

    fn remove(&self, id: &str) -> Result<(), CgroupError> {
        check_id(id)?;
        let dir = self.dir(id);
        // cgroup.kill (5.14+) kills the whole subtree atomically, without the
        // race of reading pids and signalling them one by one.
        let kill = dir.join("cgroup.kill");
        if kill.exists() {
            let _ = std::fs::write(&kill, "1");
        }
        drain_and_rmdir(&dir)
    }

    fn memory_limit(&self, id: &str) -> Option<u64> {
        read_u64(&self.dir(id).join("memory.max")) // "max" does not parse: unlimited
    }

    fn procs(&self, id: &str) -> Vec<i32> {
        read_procs(&self.dir(id))
    }

    fn memory_usage(&self, id: &str) -> Option<u64> {
        read_u64(&self.dir(id).join("memory.current"))
    }

    fn cpu_usage_ns(&self, id: &str) -> Option<u64> {
        let stat = std::fs::read_to_string(self.dir(id).join("cpu.stat")).ok()?;
        stat.lines()
            .find_map(|l| l.strip_prefix("usage_usec "))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|us| us * 1000)
    }

    fn paths(&self, id: &str) -> Vec<PathBuf> {
        vec![self.dir(id)]
    }

    fn oom_kills(&self, id: &str) -> u64 {
        read_key(&self.dir(id).join("memory.events"), "oom_kill").unwrap_or(0)
    }

    /// cgroup v2 has no device files: device access is an eBPF program
    /// attached to the cgroup (see `device_bpf`).
    fn set_devices(&self, id: &str, rules: &[(bool, String)]) -> Result<(), CgroupError> {
        check_id(id)?;
        let rules = rules
            .iter()
            .map(|(allow, rule)| super::device_bpf::parse(*allow, rule))
            .collect::<Result<Vec<_>, _>>()?;
        super::device_bpf::attach(&self.dir(id), &rules)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_enables_controllers_and_writes_limits() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::write(r.join("cgroup.controllers"), "cpuset cpu io memory pids\n").unwrap();
        std::fs::create_dir(r.join("drover")).unwrap();
        std::fs::write(r.join("drover/cgroup.controllers"), "cpu memory pids\n").unwrap();
        std::fs::create_dir(r.join("drover/db-0")).unwrap();
        std::fs::write(r.join("drover/db-0/memory.swap.max"), "max\n").unwrap();
        let cg = CgroupV2::new(r);
        let limits = Limits {
            memory_bytes: Some(1 << 30),
            cpu_millis: Some(1500),
            pids: Some(100),
        };
        cg.create("db-0", &limits).unwrap();
        let read = |p: &str| std::fs::read_to_string(r.join(p)).unwrap();
        assert_eq!(read("cgroup.subtree_control"), "+memory +cpu +pids");
        assert_eq!(read("drover/cgroup.subtree_control"), "+memory +cpu +pids");
        assert_eq!(read("drover/db-0/memory.max"), "1073741824");
        assert_eq!(read("drover/db-0/memory.swap.max"), "0");
        assert_eq!(read("drover/db-0/cpu.max"), "150000 100000");
        assert_eq!(read("drover/db-0/pids.max"), "100");
        assert_eq!(cg.memory_limit("db-0"), Some(1 << 30));
        cg.add_process("db-0", 7).unwrap();
        assert_eq!(cg.procs("db-0"), vec![7]);
        std::fs::write(r.join("drover/db-0/cgroup.procs"), "").unwrap();
        std::fs::write(
            r.join("drover/db-0/cpu.stat"),
            "usage_usec 12\nuser_usec 10\n",
        )
        .unwrap();
        assert_eq!(cg.cpu_usage_ns("db-0"), Some(12_000));
        cg.remove("db-0").unwrap();
        cg.remove("db-0").unwrap();
        assert!(!r.join("drover/db-0").exists());
    }

    #[test]
    fn unlimited_memory_reads_as_none() {
        let root = tempfile::tempdir().unwrap();
        let cg = CgroupV2::new(root.path());
        cg.create("x", &Limits::default()).unwrap();
        std::fs::write(root.path().join("drover/x/memory.max"), "max\n").unwrap();
        assert_eq!(cg.memory_limit("x"), None);
    }
}
