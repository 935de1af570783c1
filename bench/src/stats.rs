//! Samples and their order statistics, shared by every benchmark.

use std::time::Duration;

/// Latency samples of one thing measured (a runtime, a pull, a rollout).
#[derive(Debug, Clone)]
pub struct Samples {
    pub name: &'static str,
    pub durations: Vec<Duration>,
}

impl Samples {
    fn sorted(&self) -> Vec<Duration> {
        let mut d = self.durations.clone();
        d.sort();
        d
    }

    /// Nearest-rank percentile, `p` in 0..=100.
    pub fn percentile(&self, p: usize) -> Duration {
        let d = self.sorted();
        if d.is_empty() {
            return Duration::ZERO;
        }
        let rank = (p * d.len()).div_ceil(100).clamp(1, d.len());
        d[rank - 1]
    }

    pub fn median(&self) -> Duration {
        self.percentile(50)
    }

    pub fn min(&self) -> Duration {
        self.sorted().first().copied().unwrap_or_default()
    }

    pub fn max(&self) -> Duration {
        self.sorted().last().copied().unwrap_or_default()
    }
}

/// Seconds with three decimals, as the tables print them.
pub fn secs(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64())
}

/// Resident memory (KiB) and cpu time (s) of a process.
pub fn usage(pid: u32) -> (u64, f64) {
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0);
    let cpu = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
            Some(ticks / 100.0)
        })
        .unwrap_or(0.0);
    (rss, cpu)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let s = Samples {
            name: "x",
            durations: (1..=10).rev().map(Duration::from_millis).collect(),
        };
        assert_eq!(s.median(), Duration::from_millis(5));
        assert_eq!(s.percentile(90), Duration::from_millis(9));
        assert_eq!(s.min(), Duration::from_millis(1));
        assert_eq!(s.max(), Duration::from_millis(10));
        assert_eq!(
            Samples {
                name: "e",
                durations: vec![]
            }
            .median(),
            Duration::ZERO
        );
    }
}
