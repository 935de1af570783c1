//! What this machine offers: cpu cores, memory and disk, detected; and
//! what a container has written to its root filesystem.

#[derive(Clone, Copy, Debug)]
pub struct Detected {
    pub cpu_millis: u64,
    pub memory_bytes: u64,
}

pub fn detect() -> Detected {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get() as u64)
        .unwrap_or(1);
    Detected {
        cpu_millis: cpus * 1000,
        memory_bytes: mem_total().unwrap_or(1 << 30),
    }
}

/// What the agent tells the scheduler about its machine, as facts jobs'
/// constraints see under `node.` (`node.arch`, `node.kernel`...).
pub fn facts(
    cpu_millis: u64,
    memory_bytes: u64,
    cgroup_root: &std::path::Path,
) -> std::collections::BTreeMap<String, String> {
    let (arch, variant) = crate::image::layout::node_platform();
    let mut out = std::collections::BTreeMap::new();
    out.insert("os".to_string(), std::env::consts::OS.to_string());
    out.insert("arch".to_string(), arch.to_string());
    if let Some(v) = variant {
        out.insert("arch_variant".to_string(), v.to_string());
    }
    if let Ok(u) = nix::sys::utsname::uname() {
        let release = u.release().to_string_lossy().into_owned();
        out.insert("kernel".to_string(), drover_proto::text::clip(release, 256));
    }
    out.insert("cores".to_string(), cpu_millis.div_ceil(1000).to_string());
    out.insert("memory_mib".to_string(), (memory_bytes >> 20).to_string());
    let cgroup = match crate::cgroups::detect_version(cgroup_root) {
        crate::cgroups::Version::V1 => "v1",
        crate::cgroups::Version::V2 => "v2",
    };
    out.insert("cgroup".to_string(), cgroup.to_string());
    out
}

/// The size of the filesystem holding `state_dir` (containers' writable
/// layers live there); 0 when it cannot be read.
pub fn disk_bytes(state_dir: &std::path::Path) -> u64 {
    let dir = std::iter::successors(Some(state_dir), |p| p.parent()).find(|p| p.exists());
    dir.and_then(|d| nix::sys::statvfs::statvfs(d).ok())
        .map_or(0, |s| s.blocks() * s.fragment_size())
}

/// What `disk_used` says of a tree too deep to measure by path: over any
/// limit.
pub const TOO_DEEP: u64 = u64::MAX;

/// The disk space the files under `dir` take: allocated blocks, at least
/// one 4 KiB block per entry (empty files still take an inode), each hard
/// link once, symlinks not followed. Counting stops once past
/// `stop_after`, so a tree of millions of entries costs no more than the
/// limit allows. A path too long to reach is [`TOO_DEEP`]. Files deleted
/// while open are not seen (as by `du`, and Kubernetes' check).
pub fn disk_used(dir: &std::path::Path, stop_after: u64) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0u64;
    let mut seen = std::collections::HashSet::new();
    let mut todo = vec![dir.to_path_buf()];
    let too_long = |e: &std::io::Error| e.raw_os_error() == Some(libc::ENAMETOOLONG);
    while let Some(d) = todo.pop() {
        let entries = match std::fs::read_dir(&d) {
            Ok(e) => e,
            Err(e) if too_long(&e) => return TOO_DEEP,
            Err(_) => continue,
        };
        for e in entries.flatten() {
            let m = match e.path().symlink_metadata() {
                Ok(m) => m,
                Err(e) if too_long(&e) => return TOO_DEEP,
                Err(_) => continue,
            };
            if m.nlink() > 1 && !m.is_dir() && !seen.insert((m.dev(), m.ino())) {
                continue;
            }
            total += (m.blocks() * 512).max(4096);
            if m.is_dir() {
                todo.push(e.path());
            }
            if total > stop_after {
                return total;
            }
        }
    }
    total
}

fn mem_total() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    parse_mem_total(&text)
}

fn parse_mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_meminfo() {
        let text = "MemTotal:       24572212 kB\nMemFree:         1000 kB\n";
        assert_eq!(super::parse_mem_total(text), Some(24572212 * 1024));
        assert_eq!(super::parse_mem_total("nothing"), None);
        assert!(super::detect().cpu_millis >= 1000);
    }

    #[test]
    fn disk_used_counts_blocks_once_and_stops_past_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        std::fs::create_dir(&a).unwrap();
        std::fs::write(a.join("big"), vec![1u8; 1 << 20]).unwrap();
        std::fs::hard_link(a.join("big"), dir.path().join("link")).unwrap();
        std::os::unix::fs::symlink("/etc", dir.path().join("etc")).unwrap();
        let used = super::disk_used(dir.path(), u64::MAX);
        assert!((1 << 20..(1 << 20) + (64 << 10)).contains(&used), "{used}");
        assert!(super::disk_used(dir.path(), 1000) > 1000);
        assert!(super::disk_bytes(dir.path()) > 1 << 20);
    }
}
