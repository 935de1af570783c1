//! `drover-bench memory`: what the node side costs in memory with N
//! containers running: Drover's agent and its per-container monitors,
//! beside (in `figures`) Docker's dockerd, containerd and per-container
//! shims. RSS counts every page a process maps; PSS splits pages shared
//! among processes (a binary's text mapped by fifty monitors) between them,
//! so PSS summed over processes is what they cost together.

use anyhow::Result;
use std::path::Path;
use std::time::Duration;

/// The memory of a node's daemons and per-container helpers, in KiB.
#[derive(Debug, Clone, Default)]
pub struct Memory {
    /// The node's daemons (Drover: the agent; Docker: dockerd, containerd).
    pub daemons_rss: u64,
    pub daemons_pss: u64,
    /// One helper per container (Drover: its monitor; Docker: its shim).
    pub helpers: usize,
    pub helper_rss_median: u64,
    pub helpers_pss: u64,
}

impl Memory {
    /// Reads /proc for `daemons` and `helpers` now.
    pub fn of(daemons: &[u32], helpers: &[u32]) -> Memory {
        let mut rss: Vec<u64> = helpers.iter().filter_map(|p| vm_rss(*p)).collect();
        rss.sort_unstable();
        Memory {
            daemons_rss: daemons.iter().filter_map(|p| vm_rss(*p)).sum(),
            daemons_pss: daemons.iter().filter_map(|p| pss(*p)).sum(),
            helpers: helpers.len(),
            helper_rss_median: rss
                .get(rss.len().saturating_sub(1) / 2)
                .copied()
                .unwrap_or(0),
            helpers_pss: helpers.iter().filter_map(|p| pss(*p)).sum(),
        }
    }

    /// "N MiB in all: DAEMONS D MiB (RSS R MiB{extra}), H HELPERS M MiB
    /// (RSS R MiB each)", as the figures table says it.
    pub fn describe(&self, daemons: &str, extra: &str, helpers: &str) -> String {
        let mib = |kib: u64| kib as f64 / 1024.0;
        format!(
            "{:.1} MiB in all: {daemons} {:.1} MiB (RSS {:.1} MiB{extra}), {} {helpers} {:.1} MiB (RSS {:.2} MiB each)",
            self.total_pss_mib(),
            mib(self.daemons_pss),
            mib(self.daemons_rss),
            self.helpers,
            mib(self.helpers_pss),
            mib(self.helper_rss_median)
        )
    }

    /// Daemons and helpers together (PSS), in MiB.
    pub fn total_pss_mib(&self) -> f64 {
        (self.daemons_pss + self.helpers_pss) as f64 / 1024.0
    }
}

fn status_field(pid: u32, file: &str, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/{file}")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(field))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn vm_rss(pid: u32) -> Option<u64> {
    status_field(pid, "status", "VmRSS:")
}

fn pss(pid: u32) -> Option<u64> {
    status_field(pid, "smaps_rollup", "Pss:")
}

/// The command line of `pid`, its arguments joined by spaces.
fn cmdline(pid: u32) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        String::from_utf8_lossy(&raw)
            .split('\0')
            .collect::<Vec<_>>()
            .join(" "),
    )
}

/// Processes whose program (the first argument's file name) is one of `names`.
pub fn processes_named(names: &[&str]) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            cmdline(*pid)
                .and_then(|c| {
                    let first = c.split(' ').next()?.to_string();
                    let base = Path::new(&first).file_name()?.to_str()?.to_string();
                    Some(names.contains(&base.as_str()))
                })
                .unwrap_or(false)
        })
        .collect()
}

/// Drover's side: a scheduler and one agent (processes, as on a real
/// node), a job of `n` replicas of `image` sleeping; the agent idle and
/// with them all running, and the monitors. Returns (idle agent RSS in
/// KiB, the memory with `n` running).
pub async fn drover(n: u32, image: &str) -> Result<(u64, Memory)> {
    let image = crate::cluster::resolve(image)?;
    let dir = crate::ha::scratch("memory")?;
    let (_scheduler, addr) = crate::node_loss::scheduler(&dir)?;
    let mut c = crate::node_loss::connect(&dir, &addr).await?;
    let agent = crate::node_loss::agent(&drover_e2e::bin_dir(), &dir, "bench-mem", &addr)?;
    crate::node_loss::wait_nodes_ready(&mut c, &["bench-mem"]).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let agent_pid = agent.child.id();
    let idle = vm_rss(agent_pid).unwrap_or(0);
    let spec = drover_proto::spec::from_json(&format!(
        r#"{{"name":"bench-mem","replicas":{n},"image":"{image}","command":["/bin/sleep","100000"],
            "resources":{{"cpu":"10m","memory":"8Mi"}},"stop_grace_period":"1s"}}"#
    ))?;
    crate::cluster::submit(&mut c, &spec).await?;
    crate::cluster::wait_running(&mut c, "bench-mem", n, Duration::from_secs(300)).await?;
    // Let the reporter and the watch settle.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let state = dir.join("bench-mem").to_string_lossy().to_string();
    let monitors: Vec<u32> = processes_named(&["drover-agent"])
        .into_iter()
        .filter(|p| {
            cmdline(*p).is_some_and(|c| c.contains(" monitor ") && c.contains(state.as_str()))
        })
        .collect();
    let m = Memory::of(&[agent_pid], &monitors);
    crate::cluster::stop_purge(&mut c, "bench-mem").await?;
    drop(agent);
    let _ = std::fs::remove_dir_all(&dir);
    Ok((idle, m))
}

/// `drover-bench memory`: prints the table.
pub async fn command(n: u32, image: &str) -> Result<i32> {
    let (idle, m) = drover(n, image).await?;
    let rows = vec![
        vec!["agent RSS, idle".to_string(), idle.to_string()],
        vec![
            format!("agent RSS, {n} running containers"),
            m.daemons_rss.to_string(),
        ],
        vec![
            format!("agent PSS, {n} running containers"),
            m.daemons_pss.to_string(),
        ],
        vec![
            format!("monitor RSS, median of {}", m.helpers),
            m.helper_rss_median.to_string(),
        ],
        vec!["monitors PSS, total".to_string(), m.helpers_pss.to_string()],
    ];
    print!("{}", drover_ctl::output::table(&["MEASURE", "KIB"], &rows));
    Ok(0)
}
