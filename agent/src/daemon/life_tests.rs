//! The allocation runner and the supervisor against a fake driver: restart
//! and backoff, convergence to the desired set, stops within the grace,
//! health, fencing and re-adoption, as the scheduler sees them in the
//! reports. Time is tokio's paused clock, so a 30 s backoff takes no time.

use super::fake_driver::{FakeDriver, Run};
use super::reporter::Reporter;
use super::supervisor::Supervisor;
use crate::runtime::ExitStatus;
use drover_proto::pb::{self, AllocationPhase};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Allocation `id` of a job whose spec adds `yaml` to a minimal one.
fn alloc(id: &str, yaml: &str) -> pb::DesiredAllocation {
    let text =
        format!("name: web\nimage: registry.test/busybox:1\ncommand: [sleep, '1000']\n{yaml}");
    let spec = drover_proto::spec::from_yaml(&text).expect("test spec parses");
    pb::DesiredAllocation {
        id: id.into(),
        job: "web".into(),
        version: 1,
        replica: 0,
        spec_json: serde_json::to_string(&spec).expect("spec serializes"),
        name: format!("web-{id}"),
    }
}

struct Node {
    driver: FakeDriver,
    reporter: Reporter,
    supervisor: Supervisor<FakeDriver>,
}

impl Node {
    fn new() -> Node {
        Node::with(FakeDriver::default())
    }

    fn with(driver: FakeDriver) -> Node {
        let reporter = Reporter::new("n1".into());
        let supervisor = Supervisor::new(Arc::new(driver.clone()), reporter.clone());
        Node {
            driver,
            reporter,
            supervisor,
        }
    }

    fn report(&self, id: &str) -> pb::AllocationReport {
        self.reporter
            .latest(id)
            .unwrap_or_else(|| panic!("no report of {id}"))
    }

    fn phase(&self, id: &str) -> Option<AllocationPhase> {
        self.reporter.latest(id).map(|r| r.phase())
    }

    /// Waits (in paused time) until allocation `id` is reported in `phase`.
    async fn until(&self, id: &str, phase: AllocationPhase) -> pb::AllocationReport {
        self.until_report(id, &format!("{id} {phase:?}"), |r| r.phase() == phase)
            .await
    }

    async fn until_report(
        &self,
        id: &str,
        what: &str,
        ok: impl Fn(&pb::AllocationReport) -> bool,
    ) -> pb::AllocationReport {
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            if let Some(r) = self.reporter.latest(id) {
                if ok(&r) {
                    return r;
                }
            }
            assert!(
                Instant::now() < deadline,
                "never saw {what}; last report: {:?}; driver did: {:?}",
                self.reporter.latest(id),
                self.driver.log().entries()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[tokio::test(start_paused = true)]
async fn each_wanted_allocation_is_started_once_and_reported_running() {
    let mut node = Node::new();
    node.supervisor
        .converge(vec![alloc("a", ""), alloc("b", "")]);
    let a = node.until("a", AllocationPhase::Running).await;
    node.until("b", AllocationPhase::Running).await;
    assert!(a.pid > 0);
    assert_eq!(a.restarts, 0);
    // The same set again (every watch update repeats it) changes nothing.
    node.supervisor
        .converge(vec![alloc("a", ""), alloc("b", "")]);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(node.driver.log().count("start a"), 1);
    assert_eq!(node.driver.log().count("start b"), 1);
    assert_eq!(node.driver.log().count("prepare a"), 1);
}

#[tokio::test(start_paused = true)]
async fn an_allocation_left_out_of_the_set_is_stopped_and_cleaned_up() {
    let mut node = Node::new();
    node.supervisor
        .converge(vec![alloc("a", ""), alloc("b", "")]);
    node.until("a", AllocationPhase::Running).await;
    node.until("b", AllocationPhase::Running).await;
    node.supervisor.converge(vec![alloc("b", "")]);
    let a = node.until("a", AllocationPhase::Stopped).await;
    assert_eq!(
        a.reason,
        "no longer desired on this node (killed by SIGTERM)"
    );
    assert_eq!(a.pid, 0);
    assert!(!a.killed_at_grace);
    let log = node.driver.log().entries();
    let term = log
        .iter()
        .position(|e| e == "term a")
        .expect("a was signalled");
    let cleanup = log
        .iter()
        .position(|e| e == "cleanup a")
        .expect("a cleaned up");
    assert!(
        term < cleanup,
        "cleaned before its container ended: {log:?}"
    );
    assert_eq!(node.phase("b"), Some(AllocationPhase::Running));
    assert_eq!(node.driver.log().count("term b"), 0);
}

#[tokio::test(start_paused = true)]
async fn a_container_ignoring_sigterm_is_killed_when_its_grace_runs_out() {
    let mut node = Node::new();
    node.driver.script("a", &[Run::IgnoresTerm]);
    node.supervisor
        .converge(vec![alloc("a", "stop_grace_period: 7s\n")]);
    node.until("a", AllocationPhase::Running).await;
    let asked = Instant::now();
    node.supervisor.converge(vec![]);
    let a = node.until("a", AllocationPhase::Stopped).await;
    assert_eq!(
        a.reason,
        "no longer desired on this node (killed by SIGKILL)"
    );
    assert!(a.killed_at_grace, "the scheduler is told it needed SIGKILL");
    let log = node.driver.log();
    let waited = log.times_of("kill a")[0] - log.times_of("term a")[0];
    assert_eq!(waited, Duration::from_secs(7));
    assert!(log.times_of("term a")[0] - asked < Duration::from_millis(100));
}

#[tokio::test(start_paused = true)]
async fn a_published_replica_leaves_the_load_balancers_before_it_is_signalled() {
    let mut node = Node::new();
    let published = "ports: [{name: http, container: 8080}]\nexpose: {port: 80, target: http}\n";
    node.supervisor
        .converge(vec![alloc("a", published), alloc("b", "")]);
    node.until("a", AllocationPhase::Running).await;
    node.until("b", AllocationPhase::Running).await;
    // a has connections open for 5 s: it waits out the whole delay.
    node.driver.connected_for("a", Duration::from_secs(5));
    let asked = Instant::now();
    node.supervisor.converge(vec![]);
    node.until("a", AllocationPhase::Stopped).await;
    node.until("b", AllocationPhase::Stopped).await;
    let log = node.driver.log();
    assert_eq!(log.times_of("term a")[0] - asked, Duration::from_secs(1));
    assert!(log.times_of("term b")[0] - asked < Duration::from_millis(100));
}

#[tokio::test(start_paused = true)]
async fn a_published_replica_is_signalled_once_its_last_connection_ends() {
    let mut node = Node::new();
    let published = "ports: [{name: http, container: 8080}]\nexpose: {port: 80, target: http}\n";
    node.supervisor
        .converge(vec![alloc("a", published), alloc("b", published)]);
    node.until("a", AllocationPhase::Running).await;
    node.until("b", AllocationPhase::Running).await;
    node.driver.connected_for("a", Duration::from_millis(300));
    let asked = Instant::now();
    node.supervisor.converge(vec![]);
    node.until("a", AllocationPhase::Stopped).await;
    node.until("b", AllocationPhase::Stopped).await;
    let log = node.driver.log();
    let a = log.times_of("term a")[0] - asked;
    assert!(
        a >= Duration::from_millis(300) && a < Duration::from_millis(400),
        "{a:?}"
    );
    // No connection open: no wait at all.
    assert!(log.times_of("term b")[0] - asked < Duration::from_millis(100));
}

#[tokio::test(start_paused = true)]
async fn a_crashing_replica_restarts_after_doubling_waits_reset_by_a_long_run() {
    let mut node = Node::new();
    let crash = Run::Exits {
        after: Duration::ZERO,
        status: ExitStatus::Exited(1),
    };
    let long_run = Run::Exits {
        after: Duration::from_secs(5),
        status: ExitStatus::Exited(1),
    };
    node.driver
        .script("a", &[crash, crash, crash, long_run, crash, crash]);
    let spec = "restart: {policy: always, backoff: {initial: 1s, max: 4s}}\n";
    node.supervisor.converge(vec![alloc("a", spec)]);

    // Between two failures the report says how it ended and when it starts again.
    let failed = node
        .until_report("a", "a failed, restarting", |r| {
            r.phase() == AllocationPhase::Failed && r.restarting_at_ms > 0
        })
        .await;
    assert_eq!(failed.reason, "exited with code 1");
    assert_eq!(failed.exit_code, Some(1));
    let wait = failed.restarting_at_ms - wall_ms();
    assert!((500..=1000).contains(&wait), "restarting in {wait} ms");

    node.until_report("a", "a running after 6 restarts", |r| {
        r.phase() == AllocationPhase::Running && r.restarts == 6
    })
    .await;
    let starts = node.driver.log().times_of("start a");
    let gaps: Vec<u64> = starts
        .windows(2)
        .map(|w| (w[1] - w[0]).as_millis() as u64)
        .collect();
    // 1, 2, 4 s; then a 5 s run (>= max) starts the waits over: 5 + 1, 2, 4.
    assert_eq!(gaps, [1000, 2000, 4000, 6000, 2000, 4000]);
    // The bundle is made once and reused by every restart.
    assert_eq!(node.driver.log().count("prepare a"), 1);
}

#[tokio::test(start_paused = true)]
async fn restart_never_ends_the_allocation_and_it_is_not_started_again_while_desired() {
    let mut node = Node::new();
    node.driver.script(
        "a",
        &[Run::Exits {
            after: Duration::from_secs(1),
            status: ExitStatus::Exited(3),
        }],
    );
    node.driver.script(
        "b",
        &[Run::Exits {
            after: Duration::from_secs(1),
            status: ExitStatus::Exited(0),
        }],
    );
    let never = "restart: never\n";
    node.supervisor
        .converge(vec![alloc("a", never), alloc("b", never)]);
    let a = node.until("a", AllocationPhase::Failed).await;
    assert_eq!(
        (a.exit_code, a.reason.as_str()),
        (Some(3), "exited with code 3")
    );
    assert_eq!(a.restarting_at_ms, 0);
    let b = node.until("b", AllocationPhase::Stopped).await;
    assert_eq!(b.reason, "exited with code 0");
    assert_eq!(node.driver.log().count("cleanup a"), 1);
    // Still desired: the finished runner stays, nothing starts again.
    node.supervisor
        .converge(vec![alloc("a", never), alloc("b", never)]);
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(node.driver.log().count("start a"), 1);
    assert_eq!(node.driver.log().count("start b"), 1);
    assert_eq!(node.phase("a"), Some(AllocationPhase::Failed));
}

#[tokio::test(start_paused = true)]
async fn on_failure_restarts_a_failure_and_ends_after_a_clean_exit() {
    let mut node = Node::new();
    let exits = |code| Run::Exits {
        after: Duration::from_secs(1),
        status: ExitStatus::Exited(code),
    };
    node.driver.script("a", &[exits(2), exits(0)]);
    node.supervisor
        .converge(vec![alloc("a", "restart: on-failure\n")]);
    let a = node.until("a", AllocationPhase::Stopped).await;
    assert_eq!(a.reason, "exited with code 0");
    assert_eq!(a.restarts, 1);
    assert_eq!(node.driver.log().count("start a"), 2);
}

#[tokio::test(start_paused = true)]
async fn an_oom_kill_is_reported_as_one() {
    let mut node = Node::new();
    node.driver.script(
        "a",
        &[Run::OomKilled {
            after: Duration::from_secs(2),
        }],
    );
    node.supervisor
        .converge(vec![alloc("a", "restart: never\n")]);
    let a = node.until("a", AllocationPhase::Failed).await;
    assert_eq!(a.reason, "oom-killed");
    assert_eq!(a.exit_code, Some(137));
}

#[tokio::test(start_paused = true)]
async fn a_replica_over_its_disk_limit_is_stopped_and_starts_again_from_a_fresh_root() {
    let mut node = Node::new();
    node.driver.set_disk_used("a", 3 << 20);
    node.supervisor.converge(vec![alloc(
        "a",
        "resources: {disk: 2Mi}\nstop_grace_period: 1s\n",
    )]);
    let failed = node.until("a", AllocationPhase::Failed).await;
    assert_eq!(
        failed.reason,
        "ephemeral disk limit: wrote 3Mi or more to its root filesystem, over resources.disk 2Mi"
    );
    // Within the limit now (the fake's usage went with the bundle): it runs on.
    node.until("a", AllocationPhase::Running).await;
    // Its bundle went before the restart: a fresh root, a new prepare.
    let log = node.driver.log().entries();
    let cleanup = log
        .iter()
        .position(|e| e == "cleanup a")
        .expect("cleaned up");
    assert!(log[cleanup..].iter().any(|e| e == "prepare a"), "{log:?}");
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(node.report("a").phase(), AllocationPhase::Running);
    assert_eq!(node.driver.log().count("start a"), 2);
}

#[tokio::test(start_paused = true)]
async fn a_failed_start_is_reported_and_tried_again_with_the_same_bundle() {
    let mut node = Node::new();
    node.driver.script("a", &[Run::FailsToStart]);
    node.supervisor.converge(vec![alloc("a", "")]);
    let failed = node.until("a", AllocationPhase::Failed).await;
    assert!(
        failed.reason.contains("exec \"/no/such/program\""),
        "{}",
        failed.reason
    );
    assert_eq!(failed.exit_code, None);
    let running = node.until("a", AllocationPhase::Running).await;
    assert_eq!(running.restarts, 1);
    assert_eq!(node.driver.log().count("prepare a"), 1);
}

#[tokio::test(start_paused = true)]
async fn a_command_that_ends_before_its_network_is_attached_has_exited() {
    let mut node = Node::new();
    node.driver.script("a", &[Run::ExitsBeforeAttach]);
    node.supervisor
        .converge(vec![alloc("a", "network: private\nrestart: never\n")]);
    let a = node.until("a", AllocationPhase::Stopped).await;
    assert_eq!(a.reason, "exited with code 0");
}

#[tokio::test(start_paused = true)]
async fn a_stop_while_the_image_is_pulled_never_starts_the_container() {
    let mut node = Node::new();
    node.driver.set_prepare_takes(Duration::from_secs(30));
    node.supervisor.converge(vec![alloc("a", "")]);
    node.until("a", AllocationPhase::Starting).await;
    node.supervisor.converge(vec![]);
    let a = node.until("a", AllocationPhase::Stopped).await;
    assert_eq!(a.reason, "no longer desired on this node");
    assert_eq!(node.driver.log().count("start a"), 0);
    assert_eq!(node.driver.log().count("cleanup a"), 1);
}

#[tokio::test(start_paused = true)]
async fn a_replica_failing_its_health_check_is_stopped_and_started_again() {
    let mut node = Node::new();
    let check =
        "health: {exec: {command: [check]}, interval: 1s, timeout: 1s, failure_threshold: 2}\n";
    node.driver
        .probes("a", &[Ok(()), Err("exit 1".into()), Err("exit 1".into())]);
    node.supervisor.converge(vec![alloc("a", check)]);
    let healthy = node
        .until_report("a", "a healthy", |r| {
            r.health_state() == pb::Health::Healthy
        })
        .await;
    assert_eq!(healthy.phase(), AllocationPhase::Running);
    let unhealthy = node
        .until_report("a", "a unhealthy", |r| {
            r.health_state() == pb::Health::Unhealthy
        })
        .await;
    assert_eq!(unhealthy.health_detail, "exit 1");
    assert_eq!(unhealthy.reason, "unhealthy: exit 1");
    let restarting = node
        .until_report("a", "a restarting", |r| r.restarting_at_ms > 0)
        .await;
    assert_eq!(restarting.health_detail, "exit 1");
    assert!(!restarting.killed_at_grace, "SIGTERM stopped it");
    assert_eq!(node.driver.log().count("term a"), 1);
    // The new run starts with no verdict, then passes (the script is used up).
    let again = node
        .until_report("a", "a healthy again", |r| {
            r.restarts == 1 && r.health_state() == pb::Health::Healthy
        })
        .await;
    assert_eq!(again.health_detail, "");
    assert_eq!(node.driver.log().count("start a"), 2);
}

#[tokio::test(start_paused = true)]
async fn fencing_stops_the_replicas_that_asked_for_it_within_the_fencing_grace() {
    let mut node = Node::new();
    node.driver.script("a", &[Run::IgnoresTerm]);
    let keep = "on_disconnect: keep-running\n";
    node.supervisor.converge(vec![
        alloc("a", "stop_grace_period: 60s\n"),
        alloc("b", keep),
    ]);
    node.until("a", AllocationPhase::Running).await;
    node.until("b", AllocationPhase::Running).await;
    let fenced_at = Instant::now();
    node.supervisor.fence(Duration::from_secs(6)).await;
    // The job's 60 s grace is capped: the scheduler replaces it meanwhile.
    assert_eq!(
        Instant::now() - fenced_at,
        drover_proto::fencing::FENCE_STOP_GRACE
    );
    let a = node.report("a");
    assert_eq!(a.phase(), AllocationPhase::Stopped);
    assert!(a.reason.contains("(fencing)"), "{}", a.reason);
    assert_eq!(node.phase("b"), Some(AllocationPhase::Running));
    assert_eq!(node.driver.log().count("term b"), 0);
    // Its runner is forgotten: once a leader is back and still wants it here, it starts again.
    node.supervisor
        .converge(vec![alloc("a", ""), alloc("b", keep)]);
    node.until("a", AllocationPhase::Running).await;
    assert_eq!(node.driver.log().count("start a"), 2);
    assert_eq!(node.driver.log().count("start b"), 1);
}

#[tokio::test(start_paused = true)]
async fn a_node_no_leader_acknowledges_does_not_start_fenced_jobs() {
    let mut node = Node::new();
    node.driver.set_since_acknowledged(Duration::from_secs(9));
    node.supervisor.converge(vec![
        alloc("a", "restart: never\n"),
        alloc("b", "on_disconnect: keep-running\n"),
    ]);
    let a = node.until("a", AllocationPhase::Failed).await;
    assert_eq!(
        a.reason,
        "not started: no leader acknowledged this node for 9.0s (fencing)"
    );
    node.until("b", AllocationPhase::Running).await;
    assert_eq!(node.driver.log().count("start a"), 0);
}

#[tokio::test(start_paused = true)]
async fn a_container_a_previous_agent_left_is_adopted_not_started_again() {
    let driver = FakeDriver::default();
    let ip = "10.0.0.7".parse().unwrap();
    let pid = driver.leave_running("a", Some(ip));
    driver.leave_running("gone", None);
    let mut node = Node::with(driver);
    node.supervisor
        .converge(vec![alloc("a", "network: private\n")]);
    let a = node.until("a", AllocationPhase::Running).await;
    assert_eq!(a.pid, pid as u32);
    assert_eq!(a.ip, "10.0.0.7");
    let log = node.driver.log();
    assert_eq!(log.count("adopt a"), 1);
    assert_eq!(log.count("prepare a"), 0);
    assert_eq!(log.count("start a"), 0);
    // What no desired set claims is stopped.
    assert_eq!(log.count("disown gone"), 1);
    assert_eq!(log.count("disown a"), 0);
}

#[tokio::test(start_paused = true)]
async fn allocations_the_scheduler_waits_on_that_never_ran_here_are_reported_stopped() {
    let mut node = Node::new();
    node.driver.leave_traces("ended");
    node.supervisor.converge(vec![alloc("a", "")]);
    node.until("a", AllocationPhase::Running).await;
    node.supervisor
        .never_started(&["a".into(), "never".into(), "ended".into()]);
    let never = node.report("never");
    assert_eq!(never.phase(), AllocationPhase::Stopped);
    assert_eq!(never.reason, "not running on this node");
    // One with a runner or a bundle here is reported by what runs it.
    assert_eq!(node.phase("a"), Some(AllocationPhase::Running));
    assert_eq!(node.phase("ended"), None);
}

/// A runner that ended and was dropped while the scheduler still lists its
/// allocation as stopping (its report not yet applied there): how it ended
/// stands, not "not running on this node".
#[tokio::test(start_paused = true)]
async fn a_stopped_replica_still_listed_as_stopping_keeps_how_it_ended() {
    let mut node = Node::new();
    node.driver.script("a", &[Run::IgnoresTerm]);
    node.supervisor
        .converge(vec![alloc("a", "stop_grace_period: 1s\n")]);
    node.until("a", AllocationPhase::Running).await;
    node.supervisor.converge(vec![]);
    let stopped = node.until("a", AllocationPhase::Stopped).await;
    assert!(stopped.killed_at_grace, "{stopped:?}");
    // The next desired sets: the runner is dropped; the scheduler still
    // lists the allocation as stopping.
    node.supervisor.converge(vec![]);
    node.supervisor.never_started(&["a".into()]);
    let after = node.report("a");
    assert_eq!(after.reason, stopped.reason);
    assert!(after.killed_at_grace);
    // The report was acknowledged by a peer that never applied it (a
    // deposed leader, or one whose view was behind) and the agent let it
    // go; the scheduler still lists the allocation as stopping, so it is
    // sent again, as it was, rather than leaving it stopping for ever.
    node.reporter.discard("a");
    assert!(node.reporter.latest("a").is_none());
    node.supervisor.never_started(&["a".into()]);
    let again = node.report("a");
    assert_eq!(again.phase(), AllocationPhase::Stopped);
    assert_eq!(again.reason, stopped.reason);
    // Once it is no longer listed, it is forgotten.
    node.supervisor.never_started(&[]);
    assert!(node.reporter.latest("a").is_none());
}

#[tokio::test(start_paused = true)]
async fn an_allocation_whose_spec_cannot_be_read_is_reported_failed() {
    let mut node = Node::new();
    let mut bad = alloc("a", "");
    bad.spec_json = "{\"name\": 7}".into();
    node.supervisor.converge(vec![bad]);
    let a = node.report("a");
    assert_eq!(a.phase(), AllocationPhase::Failed);
    assert!(a.reason.starts_with("spec: "), "{}", a.reason);
}

#[tokio::test(start_paused = true)]
async fn shutting_down_stops_every_container() {
    let mut node = Node::new();
    node.supervisor.converge(vec![
        alloc("a", ""),
        alloc("b", "on_disconnect: keep-running\n"),
    ]);
    node.until("a", AllocationPhase::Running).await;
    node.until("b", AllocationPhase::Running).await;
    let Node {
        driver,
        reporter,
        supervisor,
    } = node;
    supervisor.shutdown().await;
    for id in ["a", "b"] {
        let r = reporter.latest(id).unwrap();
        assert_eq!(r.phase(), AllocationPhase::Stopped, "{id}");
        assert_eq!(r.reason, "agent shutting down (killed by SIGTERM)");
        assert_eq!(driver.log().count(&format!("cleanup {id}")), 1);
    }
}

#[tokio::test(start_paused = true)]
async fn an_unhealthy_replica_that_needed_sigkill_to_stop_is_flagged() {
    let mut node = Node::new();
    node.driver.script("a", &[Run::IgnoresTerm]);
    node.driver.probes("a", &[Err("exit 1".into())]);
    let check =
        "health: {exec: {command: [check]}, interval: 1s, timeout: 1s, failure_threshold: 1}\n\
                 stop_grace_period: 2s\n";
    node.supervisor.converge(vec![alloc("a", check)]);
    let restarting = node
        .until_report("a", "a restarting", |r| r.restarting_at_ms > 0)
        .await;
    assert_eq!(restarting.health_detail, "exit 1");
    assert!(restarting.killed_at_grace, "{restarting:?}");
    let log = node.driver.log();
    assert_eq!(
        log.times_of("kill a")[0] - log.times_of("term a")[0],
        Duration::from_secs(2)
    );
}
