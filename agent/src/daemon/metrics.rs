//! The agent's Prometheus metrics (`--http-listen`, `/metrics`; see
//! `drover_proto::http`).
//!
//! Counted as they happen: container starts (from the start being reported
//! to the container running, image and bundle included), restarts, OOM
//! kills (all three seen in the reports runners make, see `reporter`),
//! image pulls and the bytes downloaded, and the routing mesh's
//! connections by job and outcome with their duration.
//!
//! Per-allocation cpu, memory and process counts come from the cgroups,
//! read every [`SAMPLE_EVERY`] by a task of their own (as cAdvisor's
//! housekeeping does), so a scrape costs the same at 1,000 allocations as
//! at one: it copies the last sample.

use drover_proto::http::Metrics;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How often cgroup usage is sampled.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(5);

pub type Labels = Vec<(String, String)>;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// 1 ms to about 65 s.
fn buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.001, 2.0, 17)
}

/// One allocation's usage at the last sample.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sample {
    pub alloc: String,
    pub cpu_seconds: f64,
    pub memory_bytes: u64,
    pub processes: usize,
}

/// What the agent counts.
#[derive(Clone, Debug)]
pub struct AgentStats {
    pub start_seconds: Histogram,
    pub restarts: Counter,
    pub oom_kills: Counter,
    pub pull_seconds: Histogram,
    pub pulled_bytes: Counter,
    /// Mesh connections by job and outcome (forwarded, no_replica).
    pub mesh_connections: Family<Labels, Counter>,
    /// How long forwarded mesh connections stayed open, by job.
    pub mesh_seconds: Family<Labels, Histogram>,
    /// The last cgroup sample of every allocation running here.
    pub usage: Arc<Mutex<Vec<Sample>>>,
    /// How long the last sample took to read.
    pub sample_seconds: Gauge<f64, AtomicU64>,
}

impl Default for AgentStats {
    fn default() -> Self {
        AgentStats {
            start_seconds: Histogram::new(buckets()),
            restarts: Counter::default(),
            oom_kills: Counter::default(),
            pull_seconds: Histogram::new(buckets()),
            pulled_bytes: Counter::default(),
            mesh_connections: Family::default(),
            mesh_seconds: Family::new_with_constructor(|| Histogram::new(buckets())),
            usage: Arc::default(),
            sample_seconds: Gauge::default(),
        }
    }
}

impl AgentStats {
    /// A mesh connection to `job` ended: forwarded for `open`, or (None)
    /// no replica took it.
    pub fn mesh_connection(&self, job: &str, open: Option<Duration>) {
        let outcome = if open.is_some() {
            "forwarded"
        } else {
            "no_replica"
        };
        self.mesh_connections
            .get_or_create(&labels(&[("job", job), ("outcome", outcome)]))
            .inc();
        if let Some(d) = open {
            self.mesh_seconds
                .get_or_create(&labels(&[("job", job)]))
                .observe(d.as_secs_f64());
        }
    }

    /// Registers every agent metric into `m`; `states` says how many
    /// allocations are in each state when scraped.
    pub fn register(
        &self,
        m: &Metrics,
        states: impl Fn() -> BTreeMap<String, i64> + Send + Sync + 'static,
    ) {
        m.register(
            "agent_start_seconds",
            "From a container's start being reported to it running (image and bundle included)",
            self.start_seconds.clone(),
        );
        m.register(
            "agent_restarts",
            "Containers started again after ending",
            self.restarts.clone(),
        );
        m.register(
            "agent_oom_kills",
            "Containers killed for using more memory than their limit",
            self.oom_kills.clone(),
        );
        m.register(
            "agent_image_pull_seconds",
            "Making an image's layers ready for a container (a cache hit included)",
            self.pull_seconds.clone(),
        );
        m.register(
            "agent_image_pulled_bytes",
            "Layer bytes downloaded from registries",
            self.pulled_bytes.clone(),
        );
        m.register(
            "agent_mesh_connections",
            "Routing mesh connections, by job and outcome",
            self.mesh_connections.clone(),
        );
        m.register(
            "agent_mesh_connection_seconds",
            "How long forwarded routing mesh connections stayed open, by job",
            self.mesh_seconds.clone(),
        );
        m.register(
            "agent_usage_sample_seconds",
            "How long the last reading of every allocation's cgroup usage took",
            self.sample_seconds.clone(),
        );
        let by_state: Family<Labels, Gauge> = Family::default();
        m.register(
            "agent_allocations",
            "Allocations on this node, by state",
            by_state.clone(),
        );
        let cpu: Family<Labels, Gauge<f64, AtomicU64>> = Family::default();
        m.register(
            "agent_allocation_cpu_seconds",
            "Cpu time an allocation's processes used (at the last sample)",
            cpu.clone(),
        );
        let memory: Family<Labels, Gauge> = Family::default();
        m.register(
            "agent_allocation_memory_bytes",
            "Memory an allocation's cgroup charges (at the last sample)",
            memory.clone(),
        );
        let pids: Family<Labels, Gauge> = Family::default();
        m.register(
            "agent_allocation_processes",
            "Processes in an allocation's cgroup (at the last sample)",
            pids.clone(),
        );
        let usage = self.usage.clone();
        m.on_scrape(move || {
            by_state.clear();
            for (state, n) in states() {
                by_state.get_or_create(&labels(&[("state", &state)])).set(n);
            }
            let samples = usage.lock().unwrap_or_else(|p| p.into_inner()).clone();
            cpu.clear();
            memory.clear();
            pids.clear();
            for s in samples {
                let l = labels(&[("alloc", &s.alloc)]);
                cpu.get_or_create(&l).set(s.cpu_seconds);
                memory.get_or_create(&l).set(s.memory_bytes as i64);
                pids.get_or_create(&l).set(s.processes as i64);
            }
        });
    }
}

/// Reads the usage of the `running` allocations from `cgroups`.
pub fn sample(cgroups: &dyn crate::cgroups::CgroupManager, running: &[String]) -> Vec<Sample> {
    running
        .iter()
        .map(|id| Sample {
            alloc: id.clone(),
            cpu_seconds: cgroups.cpu_usage_ns(id).unwrap_or(0) as f64 / 1e9,
            memory_bytes: cgroups.memory_usage(id).unwrap_or(0),
            processes: cgroups.procs(id).len(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scrape_shows_states_usage_and_the_mesh_by_job() {
        let m = Metrics::new();
        let stats = AgentStats::default();
        stats.register(&m, || BTreeMap::from([("running".to_string(), 3)]));
        *stats.usage.lock().unwrap() = vec![Sample {
            alloc: "a1".into(),
            cpu_seconds: 1.5,
            memory_bytes: 4096,
            processes: 2,
        }];
        stats.mesh_connection("web", Some(Duration::from_millis(3)));
        stats.mesh_connection("web", None);
        stats.restarts.inc();
        let text = m.encode();
        for want in [
            r#"drover_agent_allocations{state="running"} 3"#,
            r#"drover_agent_allocation_cpu_seconds{alloc="a1"} 1.5"#,
            r#"drover_agent_allocation_memory_bytes{alloc="a1"} 4096"#,
            r#"drover_agent_allocation_processes{alloc="a1"} 2"#,
            r#"drover_agent_mesh_connections_total{job="web",outcome="forwarded"} 1"#,
            r#"drover_agent_mesh_connections_total{job="web",outcome="no_replica"} 1"#,
            "drover_agent_restarts_total 1",
        ] {
            assert!(text.contains(want), "missing {want} in\n{text}");
        }
    }
}
