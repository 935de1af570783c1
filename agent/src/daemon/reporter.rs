//! Reports of what allocations are doing, batched back to the scheduler.
//!
//! Runners record the latest observation of each allocation; a single task
//! sends whatever changed since the last successful report, in one request,
//! and re-sends everything periodically. Reports are idempotent (the
//! scheduler ignores ones that change nothing), so re-sending is always safe.

use super::connection::Links;
use super::error::LinkError;
use drover_proto::pb;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, Notify};

#[derive(Clone)]
pub struct Reporter {
    node: String,
    inner: Arc<Inner>,
}

struct Inner {
    /// Latest report per allocation, and whether the scheduler has it.
    latest: Mutex<HashMap<String, (pb::AllocationReport, bool)>>,
    changed: Notify,
    /// What reports say happened, counted (see `super::metrics`).
    stats: std::sync::OnceLock<super::metrics::AgentStats>,
    /// When each allocation's current start was reported.
    starting: Mutex<HashMap<String, Instant>>,
}

impl Reporter {
    pub fn new(node: String) -> Reporter {
        Reporter {
            node,
            inner: Arc::new(Inner {
                latest: Mutex::new(HashMap::new()),
                changed: Notify::new(),
                stats: std::sync::OnceLock::new(),
                starting: Mutex::default(),
            }),
        }
    }

    /// Counts starts, restarts and OOM kills into `stats` from now on.
    pub fn observed(self, stats: super::metrics::AgentStats) -> Reporter {
        let _ = self.inner.stats.set(stats);
        self
    }

    /// How many allocations are in each state (by its word).
    pub fn states(&self) -> std::collections::BTreeMap<String, i64> {
        let mut by = std::collections::BTreeMap::new();
        for (r, _) in self.inner.latest.lock().expect("reporter lock").values() {
            *by.entry(r.state.clone()).or_insert(0) += 1;
        }
        by
    }

    /// The allocations reported running.
    pub fn running(&self) -> Vec<String> {
        let running = pb::AllocationPhase::Running as i32;
        self.inner
            .latest
            .lock()
            .expect("reporter lock")
            .values()
            .filter(|(r, _)| r.phase == running)
            .map(|(r, _)| r.id.clone())
            .collect()
    }

    /// Counts what `report` says happened since `before`.
    fn count(&self, before: Option<&pb::AllocationReport>, report: &pb::AllocationReport) {
        let Some(stats) = self.inner.stats.get() else {
            return;
        };
        use pb::AllocationPhase::{Running, Starting};
        let was = before.map(|b| b.phase);
        let mut starting = self.inner.starting.lock().expect("reporter lock");
        if report.phase == Starting as i32 && was != Some(Starting as i32) {
            starting.insert(report.id.clone(), Instant::now());
        } else if report.phase == Running as i32 && was != Some(Running as i32) {
            if let Some(t) = starting.remove(&report.id) {
                stats.start_seconds.observe(t.elapsed().as_secs_f64());
            }
        } else if report.phase != Starting as i32 {
            starting.remove(&report.id);
        }
        let restarts_before = before.map_or(0, |b| b.restarts);
        if report.restarts > restarts_before {
            stats
                .restarts
                .inc_by(u64::from(report.restarts - restarts_before));
        }
        let oom_now = report.reason == "oom-killed";
        let oom_before = before.is_some_and(|b| b.reason == "oom-killed");
        if oom_now && (!oom_before || report.restarts > restarts_before) {
            stats.oom_kills.inc();
        }
    }

    pub fn update(&self, mut report: pb::AllocationReport) {
        // As the scheduler keeps them (it cuts longer ones).
        use drover_proto::text::{clip, REPORT_TEXT_MAX};
        report.reason = clip(std::mem::take(&mut report.reason), REPORT_TEXT_MAX);
        report.health_detail = clip(std::mem::take(&mut report.health_detail), REPORT_TEXT_MAX);
        let mut latest = self.inner.latest.lock().expect("reporter lock");
        let same = latest.get(&report.id).is_some_and(|(r, _)| *r == report);
        if !same {
            self.count(latest.get(&report.id).map(|(r, _)| r), &report);
            latest.insert(report.id.clone(), (report, false));
            self.inner.changed.notify_one();
        }
    }

    /// Drops an allocation's report once the scheduler has it.
    pub fn forget(&self, id: &str) {
        let mut latest = self.inner.latest.lock().expect("reporter lock");
        if latest.get(id).is_some_and(|(_, acked)| *acked) {
            latest.remove(id);
        }
    }

    /// Drops an allocation's report whether or not it was acknowledged:
    /// the scheduler no longer waits for it.
    pub fn discard(&self, id: &str) {
        self.inner.latest.lock().expect("reporter lock").remove(id);
    }

    pub fn latest(&self, id: &str) -> Option<pb::AllocationReport> {
        self.inner
            .latest
            .lock()
            .expect("reporter lock")
            .get(id)
            .map(|(r, _)| r.clone())
    }

    pub async fn run(self, links: Links, mut stop: broadcast::Receiver<()>) {
        let mut last_full = Instant::now();
        loop {
            tokio::select! {
                _ = stop.recv() => {
                    // A last attempt so final states (stopped) reach the scheduler.
                    let _ = self.flush(&links, true).await;
                    return;
                }
                _ = self.inner.changed.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            // Let a burst of changes gather into one request.
            tokio::time::sleep(Duration::from_millis(20)).await;
            let full = last_full.elapsed() > Duration::from_secs(10);
            match self.flush(&links, full).await {
                Ok(()) if full => last_full = Instant::now(),
                Ok(()) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "report failed; will retry");
                    links.next();
                }
            }
        }
    }

    async fn flush(&self, links: &Links, everything: bool) -> Result<(), LinkError> {
        let batch: Vec<pb::AllocationReport> = {
            let latest = self.inner.latest.lock().expect("reporter lock");
            latest
                .values()
                .filter(|(_, acked)| everything || !acked)
                .map(|(r, _)| r.clone())
                .collect()
        };
        if batch.is_empty() {
            return Ok(());
        }
        let mut client = links.client().await?;
        client
            .report(pb::ReportRequest {
                node: self.node.clone(),
                allocations: batch.clone(),
            })
            .await?;
        let mut latest = self.inner.latest.lock().expect("reporter lock");
        for sent in batch {
            if let Some((r, acked)) = latest.get_mut(&sent.id) {
                if *r == sent {
                    *acked = true;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_reason_is_cut_before_it_is_sent() {
        let r = Reporter::new("n1".into());
        r.update(pb::AllocationReport {
            id: "a1".into(),
            reason: "e".repeat(1 << 20),
            health_detail: "ok".into(),
            ..Default::default()
        });
        let sent = r.latest("a1").unwrap();
        assert!(sent.reason.len() <= drover_proto::text::REPORT_TEXT_MAX);
        assert!(sent.reason.ends_with("bytes cut)"));
        assert_eq!(sent.health_detail, "ok");
    }
}
