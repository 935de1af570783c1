use super::*;
use crate::state::{AllocationReport, Command, VersionOutcome};
use drover_proto::spec::from_yaml;
use proptest::prelude::*;

/// A scheduler state with a simulated agent on each node and a clock.
pub(super) struct Sim {
    pub(super) s: State,
    pub(super) now: i64,
    next_id: u32,
}

impl Sim {
    pub(super) fn new(nodes: &[(&str, u64, u64)]) -> Sim {
        let mut sim = Sim {
            s: State::default(),
            now: 1_000,
            next_id: 0,
        };
        for (name, cpu, mem_mi) in nodes {
            sim.cmd(Command::RegisterNode {
                name: name.to_string(),
                address: String::new(),
                cpu_millis: *cpu,
                memory_bytes: mem_mi << 20,
                at_ms: 0,
                cluster_cidr: String::new(),
                volumes: Default::default(),
                disk_bytes: 0,
                labels: Default::default(),
                facts: Default::default(),
            });
        }
        sim
    }

    pub(super) fn cmd(&mut self, c: Command) -> crate::state::CommandResult {
        let i = self.s.last_index + 1;
        self.s.apply(i, &c)
    }

    pub(super) fn submit(&mut self, yaml: &str) -> crate::state::CommandResult {
        let r = self.cmd(Command::SubmitJob {
            request_id: String::new(),
            spec: Box::new(from_yaml(yaml).unwrap()),
            at_ms: self.now,
        });
        assert!(r.ok, "{r:?}");
        r
    }

    /// One controller pass; returns the plan it applied.
    pub(super) fn step(&mut self) -> Plan {
        let mut n = self.next_id;
        let plan = reconcile(&self.s, self.now, &mut || {
            n += 1;
            format!("a{n:04}")
        });
        self.next_id = n;
        let at_ms = self.now;
        let p = plan.clone();
        self.cmd(Command::PlaceAllocations {
            allocations: p.place,
            at_ms,
        });
        for (id, reason) in p.stop {
            self.cmd(Command::StopAllocations {
                ids: vec![id],
                reason,
                at_ms,
            });
        }
        for (job, reason) in p.pending {
            self.cmd(Command::SetPendingReason {
                job,
                reason,
                at_ms: 0,
            });
        }
        for (job, rollout) in p.rollouts {
            self.cmd(Command::SetRollout { job, rollout });
        }
        for (name, to, reason, expect) in p.rollbacks {
            self.cmd(Command::RollbackJob {
                request_id: String::new(),
                name,
                to: Some(to),
                reason,
                at_ms,
                expect: Some(expect),
            });
        }
        for name in p.purge {
            self.cmd(Command::PurgeJob { name, at_ms: 0 });
        }
        for (name, at) in p.launch {
            self.cmd(Command::LaunchRun {
                request_id: String::new(),
                name,
                scheduled_ms: Some(at),
                at_ms,
            });
        }
        plan
    }

    /// The agents: every allocation wanted running runs, with `health` deciding
    /// its check; every one wanted stopped stops.
    pub(super) fn agents(&mut self, health: &dyn Fn(&Allocation) -> HealthState) {
        let mut by_node: BTreeMap<String, Vec<AllocationReport>> = BTreeMap::new();
        for a in self.s.allocations.values() {
            // A stop takes one round (the grace period) before the process is gone.
            let (state, h) = match (a.desired, a.state) {
                (Desired::Run, _) => (AllocState::Running, health(a)),
                (Desired::Stop, AllocState::Running) => {
                    (AllocState::Stopping, HealthState::Unknown)
                }
                (Desired::Stop, _) => (AllocState::Stopped, HealthState::Unknown),
            };
            by_node
                .entry(a.node.clone())
                .or_default()
                .push(AllocationReport {
                    id: a.id.clone(),
                    state,
                    pid: 100,
                    exit_code: None,
                    reason: String::new(),
                    restarts: 0,
                    health: h,
                    ip: String::new(),
                    health_detail: String::new(),
                    restarting_at_ms: 0,
                    killed_at_grace: false,
                });
        }
        for (node, reports) in by_node {
            self.cmd(Command::ReportAllocations {
                node,
                reports,
                at_ms: self.now,
            });
        }
    }

    pub(super) fn advance(&mut self, ms: i64) {
        self.now += ms;
    }

    pub(super) fn run<'a>(&'a self, job: &'a str) -> Vec<&'a Allocation> {
        self.s
            .job_allocations(job)
            .filter(|a| a.desired == Desired::Run)
            .collect()
    }

    /// Processes that exist: wanted running, or told to stop and not gone yet.
    pub(super) fn live(&self, job: &str) -> usize {
        self.s
            .job_allocations(job)
            .filter(|a| a.desired == Desired::Run || !a.state.is_terminal())
            .count()
    }

    pub(super) fn healthy(&self, job: &str) -> usize {
        let j = &self.s.jobs[job];
        self.run(job)
            .iter()
            .filter(|a| is_healthy(j, a, self.now, Duration(0)))
            .count()
    }

    pub(super) fn rollout(&self, job: &str) -> Rollout {
        self.s.jobs[job].rollout.clone().unwrap()
    }
}

pub(super) fn always_healthy(_: &Allocation) -> HealthState {
    HealthState::Healthy
}

const WEB: &str = "name: web\nreplicas: 4\nimage: oci:/x:v1\nhealth: {tcp: {port: 80}, interval: 1s, timeout: 1s}\n\
                   update: {max_surge: 1, max_unavailable: 0, min_healthy_time: 1s, healthy_deadline: 10s, progress_deadline: 30s}\n";

fn web(image: &str) -> String {
    WEB.replace("oci:/x:v1", image)
}

/// Runs controller passes with healthy agents until the rollout ends.
pub(super) fn settle(
    sim: &mut Sim,
    job: &str,
    health: &dyn Fn(&Allocation) -> HealthState,
    mut check: impl FnMut(&Sim),
) {
    for _ in 0..200 {
        sim.step();
        check(sim);
        sim.agents(health);
        check(sim);
        sim.advance(500);
        if sim.s.jobs[job]
            .rollout
            .as_ref()
            .is_some_and(|r| r.state.is_done())
            && sim.step().is_empty()
        {
            return;
        }
    }
    panic!("no end: {:?}", sim.s.jobs[job].rollout);
}

#[test]
fn first_version_places_spread_and_succeeds() {
    let mut sim = Sim::new(&[("a", 4000, 4096), ("b", 4000, 4096)]);
    sim.submit(&web("oci:/x:v1"));
    settle(&mut sim, "web", &always_healthy, |_| {});
    let r = sim.rollout("web");
    assert_eq!(r.state, RolloutState::Succeeded);
    assert_eq!(sim.s.jobs["web"].stable_version, Some(1));
    let run = sim.run("web");
    assert_eq!(run.len(), 4);
    assert_eq!(run.iter().filter(|a| a.node == "a").count(), 2);
    let replicas: BTreeSet<u32> = run.iter().map(|a| a.replica).collect();
    assert_eq!(replicas, (0..4).collect());
}

#[test]
fn unplaceable_job_stays_pending_with_reason() {
    let mut sim = Sim::new(&[("a", 4000, 256), ("b", 4000, 256), ("c", 4000, 256)]);
    sim.submit("name: big\nreplicas: 2\nimage: oci:/x:v1\nresources: {memory: 512Mi}\n");
    sim.step();
    sim.step();
    assert!(sim.run("big").is_empty());
    assert_eq!(
        sim.s.jobs["big"].pending_reason.as_deref(),
        Some("2 replicas not placed: no node has 512Mi free memory: 3 nodes checked")
    );
}

#[test]
fn rolling_update_keeps_bounds_and_ends_on_the_new_version() {
    let mut sim = Sim::new(&[("a", 4000, 4096), ("b", 4000, 4096)]);
    sim.submit(&web("oci:/x:v1"));
    settle(&mut sim, "web", &always_healthy, |_| {});
    sim.submit(&web("oci:/x:v2"));
    let mut max_total = 0;
    let mut min_healthy = usize::MAX;
    settle(&mut sim, "web", &always_healthy, |sim| {
        max_total = max_total.max(sim.run("web").len());
        min_healthy = min_healthy.min(sim.healthy("web"));
    });
    assert!(
        max_total <= 5,
        "more than replicas + max_surge wanted: {max_total}"
    );
    assert!(
        min_healthy >= 4,
        "fewer than replicas - max_unavailable healthy: {min_healthy}"
    );
    assert_eq!(sim.rollout("web").state, RolloutState::Succeeded);
    assert!(sim.run("web").iter().all(|a| a.version == 2));
    let j = &sim.s.jobs["web"];
    assert_eq!(j.stable_version, Some(2));
    assert_eq!(
        j.version(2).unwrap().outcome,
        Some(VersionOutcome::Succeeded)
    );
    assert_eq!(VersionOutcome::Succeeded.to_string(), "succeeded");
    let old_reasons: BTreeSet<String> = sim
        .s
        .job_allocations("web")
        .filter(|a| a.version == 1)
        .map(|a| a.desired_reason.clone())
        .collect();
    assert_eq!(old_reasons, ["replaced by version 2".to_string()].into());
}

/// Rolls `web` from v1 to v2 with `update` added to its update block;
/// returns the controller passes the rollout took and the most of its
/// replicas that were running or still stopping at once.
fn roll_with(update: &str, extra: &str) -> (usize, usize) {
    // Five nodes: on the host network a port fits one replica per node.
    let nodes = ["a", "b", "c", "d", "e"].map(|n| (n, 4000, 4096));
    let mut sim = Sim::new(&nodes);
    let spec = |image: &str| {
        web(image).replace(
            "progress_deadline: 30s}",
            &format!("progress_deadline: 30s{update}}}\n{extra}"),
        )
    };
    sim.submit(&spec("oci:/x:v1"));
    settle(&mut sim, "web", &always_healthy, |_| {});
    sim.submit(&spec("oci:/x:v2"));
    let (mut passes, mut most) = (0, 0);
    settle(&mut sim, "web", &always_healthy, |sim| {
        passes += 1;
        most = most.max(sim.live("web"));
    });
    assert_eq!(
        sim.rollout("web").state,
        RolloutState::Succeeded,
        "{:?}",
        sim.rollout("web")
    );
    (passes, most)
}

#[test]
fn a_successor_starts_while_its_predecessor_stops_unless_the_job_waits_for_stops() {
    // Default: a replica told to stop has left the load balancers; its
    // successor need not wait out its stop grace.
    let (fast, processes) = roll_with("", "");
    assert_eq!(processes, 6, "replicas + max_surge + one stopping");
    // `wait_for_stop`: the stopping one counts against the surge.
    let (slow, processes) = roll_with(", wait_for_stop: true", "");
    assert_eq!(processes, 5, "replicas + max_surge, stopping included");
    assert!(fast < slow, "{fast} passes without waiting, {slow} waiting");
    // On the host network with a port, the port is the old one's until it
    // exits: such a job always waits.
    let (host, processes) = roll_with("", "network: host\nports: [{name: http, container: 80}]\n");
    assert_eq!(processes, 5);
    assert_eq!(host, slow);
}

#[test]
fn with_no_surge_a_successor_waits_for_its_predecessor_to_be_gone() {
    let mut sim = Sim::new(&[("a", 4000, 4096), ("b", 4000, 4096)]);
    let spec = |v: u32| {
        format!(
            "name: web\nreplicas: 2\nimage: oci:/x:v{v}\n\
             update: {{max_surge: 0, max_unavailable: 1, min_healthy_time: 0s}}\n"
        )
    };
    sim.submit(&spec(1));
    settle(&mut sim, "web", &always_healthy, |_| {});
    sim.submit(&spec(2));
    let mut most = 0;
    settle(&mut sim, "web", &always_healthy, |sim| {
        most = most.max(sim.live("web"));
    });
    assert_eq!(most, 2, "never more than replicas, stopping ones included");
    assert!(sim.run("web").iter().all(|a| a.version == 2));
}

#[test]
fn failing_health_rolls_back_to_the_stable_version() {
    let mut sim = Sim::new(&[("a", 4000, 4096)]);
    sim.submit(&web("oci:/x:v1"));
    settle(&mut sim, "web", &always_healthy, |_| {});
    sim.submit(&web("oci:/x:v3"));
    let v3_unhealthy = |a: &Allocation| {
        if a.version == 2 {
            HealthState::Unhealthy
        } else {
            HealthState::Healthy
        }
    };
    let mut min_healthy = usize::MAX;
    settle(&mut sim, "web", &v3_unhealthy, |sim| {
        min_healthy = min_healthy.min(sim.healthy("web"))
    });
    let j = &sim.s.jobs["web"];
    assert_eq!(j.current, 1, "rolled back to version 1");
    let r = j.rollout.as_ref().unwrap();
    assert_eq!(
        (r.kind, r.state),
        (RolloutKind::Rollback, RolloutState::Succeeded)
    );
    let kind = j.version(2).unwrap().outcome.clone().unwrap();
    assert!(
        matches!(
            &kind,
            VersionOutcome::Failed {
                rolled_back_to: Some(1),
                ..
            }
        ),
        "{kind:?}"
    );
    let outcome = kind.to_string();
    assert!(outcome.starts_with("failed: replica web-"), "{outcome}");
    assert!(outcome.contains("failed its health check"), "{outcome}");
    assert!(outcome.ends_with("rolled back to version 1"), "{outcome}");
    assert!(sim.run("web").iter().all(|a| a.version == 1));
    assert!(
        min_healthy >= 4,
        "availability dropped during the failed rollout: {min_healthy}"
    );
}

#[test]
fn a_failed_check_the_node_reports_fails_the_rollout_in_its_own_words() {
    let mut sim = Sim::new(&[("a", 4000, 4096)]);
    sim.submit(&web("oci:/x:v1"));
    settle(&mut sim, "web", &always_healthy, |_| {});
    sim.submit(&web("oci:/x:v2"));
    sim.step();
    let new = sim
        .run("web")
        .into_iter()
        .find(|a| a.version == 2)
        .expect("a replica of version 2")
        .clone();
    // The node: its check failed, it ended, it restarts in 2 s. The words
    // are for people; the scheduler goes by the typed fields.
    sim.cmd(Command::ReportAllocations {
        node: new.node.clone(),
        reports: vec![AllocationReport {
            id: new.id.clone(),
            state: AllocState::Failed,
            pid: 0,
            exit_code: Some(137),
            reason: "unhealthy: GET /healthz answered 500".into(),
            restarts: 0,
            health: HealthState::Unknown,
            ip: String::new(),
            health_detail: "GET /healthz answered 500".into(),
            restarting_at_ms: sim.now + 2000,
            killed_at_grace: false,
        }],
        at_ms: sim.now,
    });
    assert_eq!(sim.s.allocations[&new.id].restarting_at_ms, sim.now + 2000);
    sim.step();
    let v2 = sim.s.jobs["web"]
        .version(2)
        .unwrap()
        .outcome
        .clone()
        .unwrap()
        .to_string();
    assert_eq!(
        v2,
        format!(
            "failed: replica {} of version 2 failed its health check: GET /healthz answered 500; rolled back to version 1",
            new.name
        )
    );
}

#[test]
fn a_new_replica_never_healthy_fails_at_the_deadline() {
    let mut sim = Sim::new(&[("a", 4000, 4096)]);
    sim.submit(&web("oci:/x:v1"));
    settle(&mut sim, "web", &always_healthy, |_| {});
    sim.submit(
        &web("oci:/x:v2").replace("auto_rollback: true", "").replace(
            "progress_deadline: 30s}",
            "progress_deadline: 30s, auto_rollback: false}",
        ),
    );
    let v2_silent = |a: &Allocation| {
        if a.version == 2 {
            HealthState::Unknown
        } else {
            HealthState::Healthy
        }
    };
    settle(&mut sim, "web", &v2_silent, |_| {});
    let r = sim.rollout("web");
    assert_eq!(r.state, RolloutState::Failed);
    assert!(
        r.reason.ends_with("was not healthy within 10s"),
        "{}",
        r.reason
    );
    assert_eq!(sim.s.jobs["web"].current, 2, "no auto-rollback asked for");
    // Held: the old replicas keep serving.
    assert_eq!(sim.run("web").iter().filter(|a| a.version == 1).count(), 4);
}

#[test]
fn canaries_wait_for_promotion() {
    let mut sim = Sim::new(&[("a", 4000, 4096)]);
    sim.submit(&web("oci:/x:v1"));
    settle(&mut sim, "web", &always_healthy, |_| {});
    sim.submit(&web("oci:/x:v2").replace("max_unavailable: 0,", "max_unavailable: 0, canary: 1,"));
    for _ in 0..10 {
        sim.step();
        sim.agents(&always_healthy);
        sim.advance(500);
    }
    let r = sim.rollout("web");
    assert_eq!(r.state, RolloutState::WaitingPromotion);
    let run = sim.run("web");
    assert_eq!(run.iter().filter(|a| a.version == 2).count(), 1);
    assert!(run.iter().filter(|a| a.version == 2).all(|a| a.canary));
    assert_eq!(run.iter().filter(|a| a.version == 1).count(), 4);
    let r = sim.cmd(Command::PromoteJob {
        request_id: String::new(),
        name: "web".into(),
        at_ms: sim.now,
    });
    assert!(r.ok);
    settle(&mut sim, "web", &always_healthy, |_| {});
    assert_eq!(sim.rollout("web").state, RolloutState::Succeeded);
    assert_eq!(sim.run("web").len(), 4);
    assert!(sim.run("web").iter().all(|a| a.version == 2));
}

#[test]
fn scale_down_stops_unhealthy_then_newest() {
    let mut sim = Sim::new(&[("a", 4000, 4096)]);
    sim.submit(&web("oci:/x:v1").replace("replicas: 4", "replicas: 3"));
    settle(&mut sim, "web", &always_healthy, |_| {});
    sim.cmd(Command::ScaleJob {
        request_id: String::new(),
        name: "web".into(),
        replicas: 7,
        at_ms: sim.now,
    });
    for _ in 0..10 {
        sim.step();
        sim.agents(&always_healthy);
        sim.advance(500);
    }
    assert_eq!(sim.run("web").len(), 7);
    let sick = sim
        .run("web")
        .iter()
        .find(|a| a.replica == 1)
        .unwrap()
        .id
        .clone();
    let newest: Vec<String> = {
        let mut r = sim.run("web");
        r.retain(|a| a.id != sick);
        r.sort_by_key(|a| std::cmp::Reverse((a.created_at_ms, a.replica)));
        r.iter().take(4).map(|a| a.id.clone()).collect()
    };
    sim.agents(&|a: &Allocation| {
        if a.id == sick {
            HealthState::Unhealthy
        } else {
            HealthState::Healthy
        }
    });
    sim.cmd(Command::ScaleJob {
        request_id: String::new(),
        name: "web".into(),
        replicas: 2,
        at_ms: sim.now,
    });
    let plan = sim.step();
    let stopped: BTreeSet<String> = plan.stop.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(stopped.len(), 5);
    assert!(stopped.contains(&sick), "the unhealthy replica goes first");
    for id in newest {
        assert!(stopped.contains(&id), "the newest go next");
    }
    assert_eq!(sim.run("web").len(), 2);
}

#[test]
fn re_running_a_spec_keeps_a_scaled_count_unless_replicas_was_edited() {
    let mut sim = Sim::new(&[("a", 4000, 4096)]);
    sim.submit(&web("oci:/x:v1"));
    sim.cmd(Command::ScaleJob {
        request_id: String::new(),
        name: "web".into(),
        replicas: 6,
        at_ms: sim.now,
    });
    let r = sim.submit(&web("oci:/x:v1"));
    assert!(!r.changed, "{r:?}");
    assert_eq!(sim.s.jobs["web"].replicas, 6);
    let r = sim.submit(&web("oci:/x:v2"));
    assert_eq!((r.version, sim.s.jobs["web"].replicas), (2, 6));
    let r = sim.submit(&web("oci:/x:v2").replace("replicas: 4", "replicas: 5"));
    assert_eq!((r.version, sim.s.jobs["web"].replicas), (2, 5), "{r:?}");
    assert!(r.note.starts_with("scaled to 5"), "{}", r.note);
}

#[test]
fn node_loss_replaces_allocations() {
    let mut sim = Sim::new(&[("a", 4000, 4096), ("b", 4000, 4096)]);
    sim.submit(&web("oci:/x:v1"));
    settle(&mut sim, "web", &always_healthy, |_| {});
    sim.cmd(Command::SetNodeStatus {
        name: "a".into(),
        status: NodeStatus::Down,
        at_ms: sim.now,
    });
    sim.step();
    let run = sim.run("web");
    assert_eq!(run.len(), 4);
    assert!(run.iter().all(|a| a.node == "b"));
}

const BR0: &str =
    "gateway 10.88.0.1 of subnet 10.88.0.0/24 is already on interface br0, not made by drover";

fn break_network(sim: &mut Sim, node: &str, error: &str) {
    let r = sim.cmd(Command::SetNodeNetwork {
        name: node.into(),
        error: error.into(),
        at_ms: sim.now,
    });
    assert!(r.ok, "{r:?}");
}

#[test]
fn private_network_replicas_avoid_a_node_whose_network_is_unavailable() {
    let mut sim = Sim::new(&[("a", 4000, 4096), ("b", 4000, 4096)]);
    break_network(&mut sim, "a", BR0);
    sim.submit(&web("oci:/x:v1"));
    sim.submit("name: hostnet\nreplicas: 2\nimage: oci:/x:v1\nnetwork: host\n");
    settle(&mut sim, "web", &always_healthy, |_| {});
    let run = sim.run("web");
    assert_eq!(run.len(), 4);
    assert!(run.iter().all(|a| a.node == "b"), "{run:?}");
    assert_eq!(sim.s.jobs["web"].pending_reason, None);
    let host: BTreeSet<&str> = sim.run("hostnet").iter().map(|a| a.node.as_str()).collect();
    assert_eq!(
        host,
        BTreeSet::from(["a", "b"]),
        "host-network replicas still spread"
    );
}

#[test]
fn with_no_working_network_anywhere_the_job_is_pending_with_the_node_s_reason() {
    let mut sim = Sim::new(&[("a", 4000, 4096)]);
    break_network(&mut sim, "a", BR0);
    sim.submit("name: db\nreplicas: 1\nimage: oci:/x:v1\n");
    sim.step();
    sim.step();
    assert!(sim.run("db").is_empty());
    assert_eq!(
        sim.s.jobs["db"].pending_reason.as_deref(),
        Some(&*format!(
            "1 replica not placed: no node has a working container network: 1 node checked; \
             node a: container network unavailable: {BR0}"
        ))
    );
    // The network works again: the replica is placed and the reason goes.
    break_network(&mut sim, "a", "");
    sim.step();
    assert_eq!(sim.run("db").len(), 1);
    assert_eq!(sim.s.jobs["db"].pending_reason, None);
}

#[test]
fn a_replica_that_cannot_start_for_its_node_s_network_is_replaced_elsewhere() {
    let mut sim = Sim::new(&[("a", 4000, 4096), ("b", 4000, 4096)]);
    sim.submit("name: db\nreplicas: 2\nimage: oci:/x:v1\n");
    sim.step();
    assert_eq!(sim.run("db").len(), 2);
    // Node a's agent refuses its replica, then says why its network is down.
    let on_a = sim
        .run("db")
        .iter()
        .find(|a| a.node == "a")
        .unwrap()
        .id
        .clone();
    let on_b = sim
        .run("db")
        .iter()
        .find(|a| a.node == "b")
        .unwrap()
        .id
        .clone();
    for (node, id, state, restarts) in [
        ("a", &on_a, AllocState::Failed, 1),
        ("b", &on_b, AllocState::Running, 0),
    ] {
        sim.cmd(Command::ReportAllocations {
            node: node.into(),
            reports: vec![AllocationReport {
                id: id.clone(),
                state,
                pid: 0,
                exit_code: None,
                reason: "node network unavailable: x".into(),
                restarts,
                health: HealthState::Unknown,
                ip: String::new(),
                health_detail: String::new(),
                restarting_at_ms: 0,
                killed_at_grace: false,
            }],
            at_ms: sim.now,
        });
    }
    break_network(&mut sim, "a", BR0);
    sim.step();
    let a = &sim.s.allocations[&on_a];
    assert_eq!(a.desired, Desired::Stop);
    assert_eq!(a.desired_reason, "node a: container network unavailable");
    assert_eq!(
        sim.s.allocations[&on_b].desired,
        Desired::Run,
        "b's keeps running"
    );
    sim.agents(&always_healthy);
    sim.step();
    let run = sim.run("db");
    assert_eq!(run.len(), 2);
    assert!(run.iter().all(|a| a.node == "b"), "{run:?}");
}

#[test]
fn drain_respects_max_unavailable() {
    let mut sim = Sim::new(&[("a", 4000, 4096), ("b", 4000, 4096)]);
    let spec = web("oci:/x:v1").replace(
        "max_surge: 1, max_unavailable: 0",
        "max_surge: 0, max_unavailable: 1",
    );
    sim.submit(&spec);
    settle(&mut sim, "web", &always_healthy, |_| {});
    sim.cmd(Command::SetNodeSchedulable {
        name: "a".into(),
        schedulable: false,
        drain: true,
        at_ms: sim.now,
    });
    let mut min_healthy = usize::MAX;
    for _ in 0..30 {
        sim.step();
        min_healthy = min_healthy.min(sim.healthy("web"));
        sim.agents(&always_healthy);
        sim.advance(500);
    }
    assert!(
        min_healthy >= 3,
        "two replicas down at once during drain: {min_healthy}"
    );
    let run = sim.run("web");
    assert_eq!(run.len(), 4);
    assert!(run.iter().all(|a| a.node == "b"), "node a not empty");
    assert!(sim.run("web").iter().all(|a| a.desired_reason.is_empty()));
    let moved = sim
        .s
        .job_allocations("web")
        .filter(|a| a.desired_reason == "node a draining")
        .count();
    assert_eq!(moved, 2);
}

#[test]
fn restart_rolls_every_replica() {
    let mut sim = Sim::new(&[("a", 4000, 4096)]);
    sim.submit(&web("oci:/x:v1"));
    settle(&mut sim, "web", &always_healthy, |_| {});
    let before: BTreeSet<String> = sim.run("web").iter().map(|a| a.id.clone()).collect();
    sim.cmd(Command::RestartJob {
        request_id: String::new(),
        name: "web".into(),
        at_ms: sim.now,
    });
    settle(&mut sim, "web", &always_healthy, |_| {});
    let after: BTreeSet<String> = sim.run("web").iter().map(|a| a.id.clone()).collect();
    assert_eq!(after.len(), 4);
    assert!(before.is_disjoint(&after));
    assert_eq!(sim.rollout("web").kind, RolloutKind::Restart);
}

#[test]
fn ended_allocation_under_restart_never_is_not_replaced() {
    let mut sim = Sim::new(&[("a", 4000, 4096)]);
    sim.submit("name: once\nimage: oci:/x:v1\nrestart: never\n");
    sim.step();
    let id = sim.s.allocations.keys().next().unwrap().clone();
    sim.cmd(Command::ReportAllocations {
        node: "a".into(),
        reports: vec![AllocationReport {
            id,
            state: AllocState::Stopped,
            pid: 0,
            exit_code: Some(0),
            reason: "exited".into(),
            restarts: 0,
            health: HealthState::Unknown,
            ip: String::new(),
            health_detail: String::new(),
            restarting_at_ms: 0,
            killed_at_grace: false,
        }],
        at_ms: sim.now,
    });
    assert!(sim.step().place.is_empty());
}

#[test]
fn stopped_job_with_purge_is_forgotten_once_ended() {
    let mut sim = Sim::new(&[("a", 4000, 4096)]);
    sim.submit("name: web\nimage: oci:/x:v1\n");
    sim.step();
    sim.cmd(Command::StopJob {
        request_id: "r".into(),
        name: "web".into(),
        purge: true,
        at_ms: sim.now,
    });
    sim.step();
    // Not forgotten before its node says the replica is gone: it might be
    // starting there.
    assert!(!sim.s.jobs.is_empty());
    sim.agents(&|_| HealthState::Unknown);
    sim.step();
    assert!(sim.s.jobs.is_empty());
    assert!(sim.s.allocations.is_empty());
}

#[test]
fn a_stopped_replica_no_report_showed_started_is_replaced_only_once_its_node_reports() {
    // Version 1 placed; before any report arrives (the agent may be starting
    // it right now) a new version replaces it with max_surge 0.
    let mut sim = Sim::new(&[("a", 4000, 4096), ("b", 4000, 4096)]);
    let spec = |v: u32| {
        format!("name: web\nimage: oci:/x:v{v}\nupdate: {{max_surge: 0, max_unavailable: 1}}\n")
    };
    sim.submit(&spec(1));
    sim.step();
    assert_eq!(sim.s.allocations.len(), 1);
    sim.submit(&spec(2));
    sim.step();
    sim.step();
    let first: Vec<_> = sim.s.allocations.values().collect();
    assert_eq!(
        first.len(),
        1,
        "a replacement placed before the node confirmed: {first:?}"
    );
    assert_eq!(first[0].desired, Desired::Stop);
    // The node reports it never ran (or stopped it): now it is replaced.
    sim.agents(&|_| HealthState::Unknown);
    sim.step();
    assert_eq!(sim.live("web"), 1);
}

proptest! {
    /// For any replica count and update bounds, a rollout never wants more
    /// than replicas + max_surge running (nor has more processes, stopping
    /// ones included, with `wait_for_stop` or no surge) nor drops below replicas -
    /// max_unavailable healthy, and ends with every replica on the new version.
    #[test]
    fn rollouts_stay_within_bounds(n in 1u32..7, surge in 0u32..3, unavailable in 0u32..3, nodes in 1usize..4, wait in proptest::bool::ANY) {
        prop_assume!(surge + unavailable > 0);
        let names = ["a", "b", "c"];
        let cluster: Vec<(&str, u64, u64)> = names[..nodes].iter().map(|n| (*n, 8000, 8192)).collect();
        let mut sim = Sim::new(&cluster);
        let spec = |img: &str| format!(
            "name: web\nreplicas: {n}\nimage: oci:/x:{img}\n\
             update: {{max_surge: {surge}, max_unavailable: {unavailable}, min_healthy_time: 1s, wait_for_stop: {wait}}}\n"
        );
        sim.submit(&spec("v1"));
        settle(&mut sim, "web", &always_healthy, |_| {});
        sim.submit(&spec("v2"));
        let mut ok = true;
        settle(&mut sim, "web", &always_healthy, |sim| {
            // Wanted running, always within the surge; with `wait_for_stop`,
            // the replicas still stopping too.
            ok &= sim.run("web").len() as u32 <= n + surge;
            ok &= !(wait || surge == 0) || sim.live("web") as u32 <= n + surge;
            ok &= sim.healthy("web") as u32 + unavailable >= n;
        });
        prop_assert!(ok);
        prop_assert_eq!(sim.rollout("web").state, RolloutState::Succeeded);
        prop_assert_eq!(sim.run("web").len() as u32, n);
        prop_assert!(sim.run("web").iter().all(|a| a.version == 2));
    }
}

/// A job of `replicas` × 500m cpu at `priority` that lets `unavailable` of
/// them go (its `update.max_unavailable`).
fn prio(name: &str, replicas: u32, priority: u32, unavailable: &str) -> String {
    format!(
        "name: {name}\nreplicas: {replicas}\nimage: oci:/x:v1\npriority: {priority}\n\
         resources: {{cpu: 500m, memory: 32Mi}}\n\
         update: {{max_surge: 1, max_unavailable: {unavailable}, min_healthy_time: 0s}}\n"
    )
}

/// Passes with agents until two in a row change nothing (agents may
/// still be stopping what the first asked).
fn until_quiet(sim: &mut Sim) {
    let mut empty = 0;
    for _ in 0..40 {
        let plan = sim.step();
        sim.agents(&always_healthy);
        sim.advance(500);
        empty = if plan.is_empty() { empty + 1 } else { 0 };
        if empty == 2 {
            return;
        }
    }
    panic!("never quiet");
}

#[test]
fn a_higher_priority_job_preempts_the_lowest_within_its_budget() {
    // One node of 2 cpu: batch (priority 10) and dev (priority 30) fill it.
    let mut sim = Sim::new(&[("n1", 2000, 4096)]);
    sim.submit(&prio("batch", 2, 10, "100%"));
    sim.submit(&prio("dev", 2, 30, "100%"));
    until_quiet(&mut sim);
    assert_eq!((sim.run("batch").len(), sim.run("dev").len()), (2, 2));
    // prod (priority 80) needs two replicas' room: batch goes first.
    sim.submit(&prio("prod", 2, 80, "0"));
    let plan = sim.step();
    let stopped: Vec<&str> = plan
        .stop
        .iter()
        .map(|(id, _)| sim.s.allocations[id].job.as_str())
        .collect();
    assert_eq!(stopped, ["batch", "batch"]);
    assert!(plan.stop[0]
        .1
        .starts_with("preempted: job prod (priority 80) needed its room on n1"));
    assert_eq!(
        sim.s.jobs["prod"].pending_reason.as_deref(),
        Some("2 replicas not placed yet: preempting 2 replicas of lower-priority job batch on n1")
    );
    // A second pass while they stop evicts nothing more.
    sim.agents(&always_healthy);
    assert!(sim.step().stop.is_empty());
    until_quiet(&mut sim);
    assert_eq!(sim.run("prod").len(), 2);
    assert_eq!(sim.run("dev").len(), 2, "dev was not needed");
    assert_eq!(sim.run("batch").len(), 0);
    let batch = sim.s.jobs["batch"]
        .pending_reason
        .clone()
        .unwrap_or_default();
    assert!(batch.contains("no node has 0.5 cpu free"), "{batch}");
    let evicted = sim
        .s
        .job_allocations("batch")
        .filter(|a| a.desired_reason.starts_with(PREEMPTED))
        .count();
    assert_eq!(evicted, 2, "alloc status shows why");
}

#[test]
fn no_job_is_preempted_beyond_its_max_unavailable_or_by_its_peers() {
    let mut sim = Sim::new(&[("n1", 2000, 4096)]);
    // max_unavailable 1 of 4: only one replica may go.
    sim.submit(&prio("batch", 4, 10, "1"));
    until_quiet(&mut sim);
    sim.submit(&prio("prod", 2, 80, "0"));
    until_quiet(&mut sim);
    assert_eq!(sim.run("prod").len(), 1);
    assert_eq!(sim.run("batch").len(), 3);
    // Equal priority preempts nothing.
    sim.submit(&prio("other", 1, 10, "0"));
    until_quiet(&mut sim);
    assert_eq!(sim.run("other").len(), 0);
    assert_eq!(sim.run("batch").len(), 3);
    // Priority 0 never preempts.
    sim.submit(&prio("zero", 1, 0, "0"));
    assert!(sim.step().stop.is_empty());
}

proptest! {
    /// However jobs and priorities are mixed, preemption never takes a job
    /// below `replicas - max_unavailable` running, and a job is preempted
    /// only by one of higher priority.
    #[test]
    fn preemption_keeps_every_job_within_its_budget(
        jobs in proptest::collection::vec((1u32..4, 0u32..100, 0u32..3), 1..5),
        late in (1u32..4, 0u32..101),
    ) {
        let mut sim = Sim::new(&[("n1", 2000, 4096), ("n2", 1000, 4096)]);
        for (i, (n, p, u)) in jobs.iter().enumerate() {
            sim.submit(&prio(&format!("j{i}"), *n, *p, &u.to_string()));
        }
        until_quiet(&mut sim);
        let before: BTreeMap<String, usize> = sim
            .s
            .jobs
            .keys()
            .map(|j| (j.clone(), sim.run(j).len()))
            .collect();
        sim.submit(&prio("late", late.0, late.1, "0"));
        for _ in 0..30 {
            sim.step();
            sim.agents(&always_healthy);
            sim.advance(500);
            for (i, (_, p, u)) in jobs.iter().enumerate() {
                let name = format!("j{i}");
                let running = sim
                    .s
                    .job_allocations(&name)
                    .filter(|a| a.desired == Desired::Run && a.state == AllocState::Running)
                    .count();
                let preempted = sim
                    .s
                    .job_allocations(&name)
                    .filter(|a| a.desired_reason.starts_with(PREEMPTED))
                    .count();
                prop_assert!(preempted == 0 || *p < late.1, "j{i} preempted by a peer");
                prop_assert!(
                    preempted == 0 || running + (*u as usize) >= before[&name],
                    "j{i}: {running} running of {}, max_unavailable {u}", before[&name]
                );
            }
        }
    }
}
