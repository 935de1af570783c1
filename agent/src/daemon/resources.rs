//! What this machine offers: cpu cores and memory, detected.

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
}
