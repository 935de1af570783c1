//! Batch and system jobs through the reconciler and the state machine.

use super::super::tests::{always_healthy, Sim};
use super::*;
use crate::state::{AllocationReport, Command, HealthState, NodeStatus};
use proptest::prelude::*;

/// The node of `id` reports it in `state` (exit code `exit`).
fn report(sim: &mut Sim, id: &str, state: AllocState, exit: Option<i32>) {
    let node = sim.s.allocations[id].node.clone();
    sim.cmd(Command::ReportAllocations {
        node,
        reports: vec![AllocationReport {
            id: id.to_string(),
            state,
            pid: if state.is_terminal() { 0 } else { 100 },
            exit_code: exit,
            reason: String::new(),
            restarts: 0,
            health: HealthState::Unknown,
            ip: String::new(),
            health_detail: String::new(),
            restarting_at_ms: 0,
            killed_at_grace: false,
        }],
        at_ms: sim.now,
    });
}

/// Allocations of `job` that are wanted running and not ended.
fn live(sim: &Sim, job: &str) -> Vec<(String, String)> {
    sim.s
        .job_allocations(job)
        .filter(|a| a.desired == Desired::Run && !a.state.is_terminal())
        .map(|a| (a.id.clone(), a.node.clone()))
        .collect()
}

/// Every live replica starts running (ended ones stay ended).
fn start_all(sim: &mut Sim, job: &str) {
    for (id, _) in live(sim, job) {
        report(sim, &id, AllocState::Running, None);
    }
}

fn run_of(sim: &Sim, job: &str) -> crate::state::BatchRun {
    sim.s.jobs[job].batch_run().cloned().unwrap_or_default()
}

const BATCH: &str = "name: crunch\nimage: oci:/x:v1\ntype: batch\ncompletions: 5\nparallelism: 2\n";

#[test]
fn a_batch_job_runs_parallelism_at_a_time_until_its_completions_succeed() {
    let mut sim = Sim::new(&[("a", 4000, 4096), ("b", 4000, 4096)]);
    sim.submit(BATCH);
    assert_eq!(
        sim.s.jobs["crunch"].current_spec().restart.0.policy,
        drover_proto::spec::RestartPolicy::Never,
        "a batch job's replicas are not restarted in place"
    );
    for round in 0..10 {
        sim.step();
        let now = live(&sim, "crunch");
        let done = run_of(&sim, "crunch").succeeded;
        assert!(
            now.len() as u32 <= 2.min(5 - done),
            "round {round}: {} running with {done} done",
            now.len()
        );
        start_all(&mut sim, "crunch");
        // One replica finishes per round.
        if let Some((id, _)) = now.first() {
            report(&mut sim, id, AllocState::Stopped, Some(0));
        }
        sim.advance(500);
    }
    let run = run_of(&sim, "crunch");
    assert_eq!((run.succeeded, run.failed), (5, 0));
    let end = run.ended.expect("the run ended");
    assert!(end.complete, "{end:?}");
    assert!(sim.step().place.is_empty(), "nothing more runs");
    assert!(live(&sim, "crunch").is_empty());
    // Ended replicas are let go of (their nodes clean them up).
    assert!(sim
        .s
        .job_allocations("crunch")
        .all(|a| a.desired == Desired::Stop));
    let status = crate::server::convert::job_status(&sim.s, &sim.s.jobs["crunch"]).0;
    assert_eq!(status, "complete");
}

#[test]
fn failed_batch_replicas_are_retried_until_more_than_retries_fail() {
    let mut sim = Sim::new(&[("a", 4000, 4096)]);
    sim.submit(
        "name: flaky\nimage: oci:/x:v1\ntype: batch\ncompletions: 3\nparallelism: 2\nretries: 2\n",
    );
    let mut failures = 0;
    for _ in 0..10 {
        sim.step();
        start_all(&mut sim, "flaky");
        if let Some((id, _)) = live(&sim, "flaky").first() {
            report(&mut sim, id, AllocState::Failed, Some(3));
            failures += 1;
        }
        if run_of(&sim, "flaky").ended.is_some() {
            break;
        }
    }
    // Two failures are retried; the third is one more than `retries`.
    assert_eq!(failures, 3);
    let run = run_of(&sim, "flaky");
    let end = run.ended.clone().expect("the run ended");
    assert!(!end.complete);
    assert!(end.reason.contains("3 replicas failed"), "{}", end.reason);
    // The replica still running is stopped, and nothing is retried.
    let plan = sim.step();
    assert!(plan.place.is_empty());
    assert_eq!(plan.stop.len(), 1 + 1, "{:?}", plan.stop);
    assert!(plan
        .stop
        .iter()
        .any(|(_, why)| why.starts_with("job failed")));
    assert_eq!(
        crate::server::convert::job_status(&sim.s, &sim.s.jobs["flaky"]).0,
        "failed"
    );
}

#[test]
fn a_batch_replica_lost_with_its_node_is_a_failure_retried_elsewhere() {
    let mut sim = Sim::new(&[("a", 4000, 4096), ("b", 4000, 4096)]);
    sim.submit("name: one\nimage: oci:/x:v1\ntype: batch\n");
    sim.step();
    start_all(&mut sim, "one");
    let (_, node) = live(&sim, "one")[0].clone();
    sim.cmd(Command::SetNodeStatus {
        name: node.clone(),
        status: NodeStatus::Down,
        at_ms: sim.now,
    });
    assert_eq!(run_of(&sim, "one").failed, 1);
    sim.step();
    let again = live(&sim, "one");
    assert_eq!(again.len(), 1);
    assert_ne!(again[0].1, node);
    // Asked to stop (a new version), a replica's end is not a failure.
    sim.submit("name: one\nimage: oci:/x:v2\ntype: batch\n");
    sim.step();
    report(&mut sim, &again[0].0, AllocState::Stopped, None);
    sim.step();
    assert_eq!(
        run_of(&sim, "one").failed,
        0,
        "a new version starts a new run"
    );
    assert_eq!(live(&sim, "one").len(), 1);
    assert_eq!(sim.rollout("one").state, RolloutState::Succeeded);
}

#[test]
fn a_stale_plan_never_runs_more_than_parallelism() {
    let mut sim = Sim::new(&[("a", 4000, 4096)]);
    sim.submit(BATCH);
    sim.step();
    assert_eq!(live(&sim, "crunch").len(), 2);
    // A placement planned on an older state, for a free replica number.
    let job = &sim.s.jobs["crunch"];
    let extra = crate::state::NewAllocation {
        id: "stale".into(),
        job: "crunch".into(),
        version: job.current,
        replica: 7,
        node: "a".into(),
        generation: job.generation,
        canary: false,
    };
    sim.cmd(Command::PlaceAllocations {
        allocations: vec![extra],
        at_ms: sim.now,
    });
    assert_eq!(live(&sim, "crunch").len(), 2, "parallelism is 2");
}

#[test]
fn batch_and_system_jobs_cannot_be_scaled() {
    let mut sim = Sim::new(&[("a", 4000, 4096)]);
    sim.submit(BATCH);
    sim.submit("name: agent\nimage: oci:/x:v1\ntype: system\n");
    for (job, word) in [("crunch", "batch"), ("agent", "system")] {
        let r = sim.cmd(Command::ScaleJob {
            request_id: String::new(),
            name: job.into(),
            replicas: 3,
            at_ms: sim.now,
        });
        assert!(!r.ok);
        assert!(
            format!("{r:?}").contains(&format!("is a {word} job")),
            "{r:?}"
        );
    }
}

fn register(sim: &mut Sim, name: &str, labels: &[(&str, &str)]) {
    sim.cmd(Command::RegisterNode {
        name: name.to_string(),
        address: String::new(),
        cpu_millis: 4000,
        memory_bytes: 4096 << 20,
        at_ms: sim.now,
        cluster_cidr: String::new(),
        volumes: Default::default(),
        disk_bytes: 0,
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        facts: Default::default(),
    });
}

fn nodes_of(sim: &Sim, job: &str) -> Vec<String> {
    let mut n: Vec<String> = live(sim, job).into_iter().map(|(_, n)| n).collect();
    n.sort();
    n
}

#[test]
fn a_system_job_runs_one_replica_on_every_eligible_node_and_follows_them() {
    let mut sim = Sim::new(&[]);
    for n in ["a", "b", "c"] {
        register(&mut sim, n, &[("role", "worker")]);
    }
    register(&mut sim, "gw", &[("role", "gateway")]);
    sim.submit("name: logs\nimage: oci:/x:v1\ntype: system\nconstraints: [{attr: role, op: '=', value: worker}]\n");
    sim.step();
    assert_eq!(nodes_of(&sim, "logs"), ["a", "b", "c"]);
    assert!(sim.step().place.is_empty(), "one per node, no more");
    // A node joins: it gets one.
    register(&mut sim, "d", &[("role", "worker")]);
    sim.step();
    assert_eq!(nodes_of(&sim, "logs"), ["a", "b", "c", "d"]);
    // A node goes down: its replica is not started elsewhere.
    sim.cmd(Command::SetNodeStatus {
        name: "b".into(),
        status: NodeStatus::Down,
        at_ms: sim.now,
    });
    sim.step();
    assert_eq!(nodes_of(&sim, "logs"), ["a", "c", "d"]);
    // Cordoned keeps its replica; draining lets it go.
    sim.cmd(Command::SetNodeSchedulable {
        name: "c".into(),
        schedulable: false,
        drain: false,
        at_ms: sim.now,
    });
    assert!(sim.step().stop.is_empty());
    sim.cmd(Command::SetNodeSchedulable {
        name: "d".into(),
        schedulable: false,
        drain: true,
        at_ms: sim.now,
    });
    let stops = sim.step().stop;
    assert_eq!(stops.len(), 1);
    assert!(stops[0].1.contains("draining"), "{stops:?}");
    assert_eq!(nodes_of(&sim, "logs"), ["a", "c"]);
    // Relabelled out of the constraint: stopped there.
    sim.cmd(Command::SetNodeLabels {
        name: "a".into(),
        labels: [("role".to_string(), Some("gateway".to_string()))].into(),
        at_ms: sim.now,
    });
    sim.agents(&always_healthy);
    let stops = sim.step().stop;
    assert!(
        stops
            .iter()
            .any(|(_, why)| why.contains("no longer eligible")),
        "{stops:?}"
    );
    let j = &sim.s.jobs["logs"];
    assert_eq!(crate::server::convert::desired_replicas(&sim.s, j), 1);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// A system job's new version replaces node by node: no node ever
    /// runs two of its replicas, at most `max_unavailable` nodes are
    /// without a healthy one at once, and the rollout ends with every
    /// node on the new version.
    #[test]
    fn a_system_rollout_replaces_in_place_within_its_bounds(
        nodes in 1usize..6,
        unavailable in 1u32..3,
    ) {
        let names: Vec<String> = (0..nodes).map(|i| format!("n{i}")).collect();
        let mut sim = Sim::new(&[]);
        for n in &names {
            register(&mut sim, n, &[]);
        }
        let spec = |image: &str| format!(
            "name: sys\nimage: {image}\ntype: system\nnetwork: host\nports: [{{name: p, container: 9100}}]\n\
             update: {{max_unavailable: {unavailable}, min_healthy_time: 0s}}\n"
        );
        sim.submit(&spec("oci:/x:v1"));
        super::super::tests::settle(&mut sim, "sys", &always_healthy, |_| {});
        sim.submit(&spec("oci:/x:v2"));
        let mut worst = 0;
        super::super::tests::settle(&mut sim, "sys", &always_healthy, |sim| {
            for n in &names {
                let here = sim.s.allocations.values()
                    .filter(|a| a.job == "sys" && &a.node == n && !a.state.is_terminal())
                    .count();
                assert!(here <= 1, "node {n} runs {here} replicas");
            }
            let healthy = sim.healthy("sys");
            worst = worst.max(nodes - healthy);
        });
        prop_assert!(worst <= (unavailable as usize).min(nodes), "{worst} nodes short");
        let run = sim.run("sys");
        prop_assert_eq!(run.len(), nodes);
        prop_assert!(run.iter().all(|a| a.version == 2));
    }
}

fn launch(sim: &mut Sim, job: &str) -> crate::state::CommandResult {
    sim.cmd(Command::LaunchRun {
        request_id: String::new(),
        name: job.into(),
        scheduled_ms: None,
        at_ms: sim.now,
    })
}

#[test]
fn a_periodic_job_runs_at_its_firings_and_skips_one_while_a_run_goes_on() {
    let mut sim = Sim::new(&[("a", 4000, 4096)]);
    // Every minute; the sim's clock starts at 1s past the epoch.
    sim.submit("name: tick\nimage: oci:/x:v1\ntype: batch\nschedule: {cron: '* * * * *'}\n");
    assert!(
        sim.step().place.is_empty(),
        "nothing before the first firing"
    );
    let j = &sim.s.jobs["tick"];
    assert_eq!(crate::server::convert::job_status(&sim.s, j).0, "scheduled");

    sim.advance(59_000); // 00:01:00
    let plan = sim.step();
    assert_eq!(plan.launch, vec![("tick".to_string(), 60_000)]);
    sim.step();
    let first = live(&sim, "tick");
    assert_eq!(first.len(), 1, "the run started");
    // The same firing proposed again (an older leader) changes nothing.
    let again = sim.cmd(Command::LaunchRun {
        request_id: String::new(),
        name: "tick".into(),
        scheduled_ms: Some(60_000),
        at_ms: sim.now,
    });
    assert!(again.ok && !again.changed);

    // Still going at the next firing: skipped (overlap: skip), and a
    // launch by hand is refused.
    start_all(&mut sim, "tick");
    sim.advance(60_000);
    sim.step();
    let p = sim.s.jobs["tick"].periodic.clone().unwrap();
    assert_eq!((p.runs, p.skipped), (1, 1));
    assert_eq!(live(&sim, "tick"), first);
    let r = launch(&mut sim, "tick");
    assert!(!r.ok && format!("{r:?}").contains("still going"), "{r:?}");

    // The run ends; the next firing starts a new one.
    report(&mut sim, &first[0].0, AllocState::Stopped, Some(0));
    sim.step();
    assert_eq!(
        crate::server::convert::job_status(&sim.s, &sim.s.jobs["tick"]).0,
        "scheduled"
    );
    sim.advance(60_000);
    sim.step();
    sim.step();
    assert_eq!(sim.s.jobs["tick"].periodic.as_ref().unwrap().runs, 2);
    let second = live(&sim, "tick");
    assert_eq!(second.len(), 1);
    assert_ne!(second, first);
    // A firing missed for an hour runs once.
    start_all(&mut sim, "tick");
    report(&mut sim, &second[0].0, AllocState::Stopped, Some(0));
    sim.advance(3_600_000);
    let plan = sim.step();
    assert_eq!(plan.launch.len(), 1);
    assert_eq!(sim.s.jobs["tick"].periodic.as_ref().unwrap().runs, 3);
}

#[test]
fn overlap_replace_stops_the_previous_run_for_the_new_one() {
    let mut sim = Sim::new(&[("a", 4000, 4096)]);
    sim.submit(
        "name: tock\nimage: oci:/x:v1\ntype: batch\nschedule: {cron: '* * * * *', overlap: replace}\n",
    );
    let r = launch(&mut sim, "tock");
    assert!(r.ok, "{r:?}");
    sim.step();
    start_all(&mut sim, "tock");
    let first = live(&sim, "tock");
    assert_eq!(first.len(), 1);
    sim.advance(60_000);
    sim.step(); // the firing: a new run
    let plan = sim.step();
    assert!(
        plan.stop
            .iter()
            .any(|(id, why)| *id == first[0].0 && why == "a newer run started"),
        "{plan:?}"
    );
    assert_eq!(plan.place.len(), 1);
    // Not a periodic job: launch is refused with what to do instead.
    sim.submit(BATCH);
    let r = launch(&mut sim, "crunch");
    assert!(format!("{r:?}").contains("job restart"), "{r:?}");
}
