//! Declared jobs that stay true, end to end: scaling, health-gated rolling
//! updates, rollback, canaries, node loss and drain, with real agents running
//! real demo-web containers.

use drover_e2e::*;
use serde_json::Value;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// demo-web with a fast HTTP health check, so rollouts take seconds.
fn web(images: &std::path::Path, name: &str, tag: &str, extra_env: &str, update: &str) -> String {
    format!(
        "name: {name}\nreplicas: 4\nimage: oci:{}/demo-web:{tag}\nenv: {{PORT: \"8080\"{extra_env}}}\n\
         resources: {{cpu: 0.05, memory: 32Mi}}\nstop_grace_period: 2s\n\
         health: {{http: {{path: /healthz, port: 8080}}, interval: 500ms, timeout: 400ms, failure_threshold: 2}}\n\
         update: {{max_surge: 1, max_unavailable: 0, min_healthy_time: 1s, healthy_deadline: 15s, progress_deadline: 1m{update}}}\n",
        images.display()
    )
}

fn allocs(c: &Cluster, job: &str) -> Vec<Value> {
    c.json(&["alloc", "ls", "--job", job])
        .as_array()
        .unwrap()
        .clone()
}

fn wanted(a: &Value) -> bool {
    a["desired"] == "run"
}

fn healthy(a: &Value) -> bool {
    a["state"] == "running" && a["health"] == "healthy"
}

/// Samples a job's allocations every 100 ms on a thread until dropped:
/// (wanted running, healthy) per sample.
struct Sampler {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<(usize, usize)>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sampler {
    fn start(addr: &str, job: &str) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let (s, out, addr, job) = (
            stop.clone(),
            samples.clone(),
            addr.to_string(),
            job.to_string(),
        );
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let r = run_drover(&addr, &["alloc", "ls", "--job", &job, "-o", "json"]);
                if let Ok(Value::Array(list)) = serde_json::from_str::<Value>(&r.stdout) {
                    let total = list.iter().filter(|a| wanted(a)).count();
                    let ok = list.iter().filter(|a| wanted(a) && healthy(a)).count();
                    out.lock().unwrap().push((total, ok));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        Sampler {
            stop,
            samples,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> Vec<(usize, usize)> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap();
        self.samples.lock().unwrap().clone()
    }
}

fn run_ok(c: &Cluster, args: &[&str]) -> Run {
    let out = c.drover(args);
    assert!(
        out.ok(),
        "drover {args:?} failed:\n{}\n{}",
        out.stdout,
        out.stderr
    );
    out
}

fn wait_healthy(c: &Cluster, job: &str, n: usize) {
    wait_for(
        &format!("{n} healthy replicas of {job}"),
        Duration::from_secs(30),
        || {
            let a = allocs(c, job);
            (a.iter().filter(|a| wanted(a) && healthy(a)).count() == n
                && a.iter().filter(|a| wanted(a)).count() == n)
                .then_some(())
        },
    );
}

#[test]
fn scale_converges_and_a_rerun_keeps_the_scaled_count() {
    if !require_root("scale_converges_and_a_rerun_keeps_the_scaled_count") {
        return;
    }
    let images = images();
    let c = Cluster::start("e2e-scale");
    let spec = c.spec(
        "web",
        &web(&images, "web", "v1", "", "").replace("replicas: 4", "replicas: 3"),
    );
    run_ok(&c, &["job", "run", spec.to_str().unwrap()]);
    for n in [7, 2] {
        let out = run_ok(&c, &["job", "scale", "web", &n.to_string()]);
        assert!(
            out.stdout.contains(&format!("scaled to {n}")),
            "{}",
            out.stdout
        );
        wait_healthy(&c, "web", n);
        assert_eq!(
            c.json(&["job", "status", "web"])["version"],
            1,
            "scaling made a new version"
        );
    }
    // Re-running the same spec (replicas: 3 unchanged) keeps the scaled count of 2.
    let out = run_ok(&c, &["job", "run", spec.to_str().unwrap()]);
    assert!(out.stdout.contains("unchanged"), "{}", out.stdout);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(allocs(&c, "web").iter().filter(|a| wanted(a)).count(), 2);
    // Editing `replicas` itself resets it.
    let edited = c.spec(
        "web5",
        &web(&images, "web", "v1", "", "").replace("replicas: 4", "replicas: 5"),
    );
    run_ok(&c, &["job", "run", edited.to_str().unwrap()]);
    wait_healthy(&c, "web", 5);
}

#[test]
fn rolling_update_keeps_bounds_then_a_failing_version_rolls_back() {
    if !require_root("rolling_update_keeps_bounds_then_a_failing_version_rolls_back") {
        return;
    }
    let images = images();
    let c = Cluster::start("e2e-roll");
    let v1 = c.spec("v1", &web(&images, "web", "v1", "", ""));
    run_ok(&c, &["job", "run", v1.to_str().unwrap()]);
    wait_healthy(&c, "web", 4);

    let sampler = Sampler::start(&c.addr, "web");
    let v2 = c.spec("v2", &web(&images, "web", "v2", "", ""));
    let out = run_ok(&c, &["job", "run", v2.to_str().unwrap()]);
    assert!(
        out.stdout.contains("all 4 replica(s) of version 2 healthy"),
        "{}",
        out.stdout
    );
    let samples = sampler.finish();
    assert!(samples.len() > 10, "too few samples: {}", samples.len());
    let most = samples.iter().map(|s| s.0).max().unwrap();
    let least = samples.iter().map(|s| s.1).min().unwrap();
    assert!(
        most <= 5,
        "more than replicas + max_surge wanted at once: {most}"
    );
    assert!(
        least >= 4,
        "fewer than replicas - max_unavailable healthy: {least}"
    );
    let now = allocs(&c, "web");
    assert!(now.iter().filter(|a| wanted(a)).all(|a| a["version"] == 2));

    // v3 fails its health check: the rollout fails and v2 comes back, same bounds.
    let sampler = Sampler::start(&c.addr, "web");
    let v3 = c.spec("v3", &web(&images, "web", "v2", ", FAIL_HEALTH: \"1\"", ""));
    let out = c.drover(&["job", "run", v3.to_str().unwrap()]);
    assert!(!out.ok(), "a failed rollout exits non-zero: {}", out.stdout);
    assert!(
        out.stderr.contains("failed its health check"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("rolled back to version 2"),
        "{}",
        out.stderr
    );
    let samples = sampler.finish();
    let least = samples.iter().map(|s| s.1).min().unwrap();
    assert!(
        least >= 4,
        "healthy replicas dropped during the failed rollout: {least}"
    );
    let job = c.json(&["job", "status", "web"]);
    assert_eq!(job["version"], 2);
    let v3_outcome = job["versions"][2]["outcome"].as_str().unwrap().to_string();
    assert!(
        v3_outcome.starts_with("failed: replica web-"),
        "{v3_outcome}"
    );
    let history = run_ok(&c, &["job", "history", "web"]).stdout;
    assert!(
        history.contains("env.FAIL_HEALTH: (none) -> 1"),
        "{history}"
    );
    wait_healthy(&c, "web", 4);
}

#[test]
fn a_canary_waits_for_promotion() {
    if !require_root("a_canary_waits_for_promotion") {
        return;
    }
    let images = images();
    let c = Cluster::start("e2e-canary");
    let v1 = c.spec("v1", &web(&images, "web", "v1", "", ""));
    run_ok(&c, &["job", "run", v1.to_str().unwrap()]);
    let v2 = c.spec("v2", &web(&images, "web", "v2", "", ", canary: 1"));
    let out = run_ok(&c, &["job", "run", v2.to_str().unwrap()]);
    assert!(
        out.stdout.contains("drover job promote web"),
        "{}",
        out.stdout
    );
    std::thread::sleep(Duration::from_secs(2));
    let now = allocs(&c, "web");
    let v2s: Vec<&Value> = now
        .iter()
        .filter(|a| wanted(a) && a["version"] == 2)
        .collect();
    assert_eq!(v2s.len(), 1, "one canary, and it waits");
    assert_eq!(v2s[0]["canary"], true);
    assert_eq!(
        now.iter()
            .filter(|a| wanted(a) && a["version"] == 1)
            .count(),
        4
    );
    let out = run_ok(&c, &["job", "promote", "web"]);
    assert!(
        out.stdout.contains("of version 2 healthy"),
        "{}",
        out.stdout
    );
    let now = allocs(&c, "web");
    assert_eq!(
        now.iter()
            .filter(|a| wanted(a) && a["version"] == 2)
            .count(),
        4
    );
    assert_eq!(now.iter().filter(|a| wanted(a)).count(), 4);
}

/// Starts one more agent for `c`, named `name`.
fn extra_agent(c: &Cluster, name: &str) -> Proc {
    let mut cmd = Command::new(bin_dir().join("drover-agent"));
    cmd.args([
        "run",
        "--name",
        name,
        "--scheduler",
        &c.addr,
        "--listen",
        &format!("127.0.0.1:{}", free_port()),
        "--heartbeat",
        "500ms",
        "--state-dir",
    ])
    .arg(c.dir.path().join(format!("agent-{name}")))
    .env("DROVER_JOIN_TOKEN", drover_e2e::join_token(&c.addr));
    let p = Proc::spawn(
        "drover-agent",
        &mut cmd,
        c.dir.path().join(format!("agent-{name}.log")),
    );
    wait_for(
        &format!("node {name} ready"),
        Duration::from_secs(20),
        || {
            let nodes = c.json(&["node", "ls"]);
            nodes
                .as_array()?
                .iter()
                .any(|n| n["name"] == name && n["status"] == "ready")
                .then_some(())
        },
    );
    p
}

#[test]
fn a_lost_node_is_replaced_and_no_replica_runs_twice_when_it_returns() {
    if !require_root("a_lost_node_is_replaced_and_no_replica_runs_twice_when_it_returns") {
        return;
    }
    let images = images();
    let c = Cluster::start("e2e-lost-a");
    let mut b = extra_agent(&c, "e2e-lost-b");
    let spec = c.spec("web", &web(&images, "web", "v1", "", ""));
    run_ok(&c, &["job", "run", spec.to_str().unwrap()]);
    wait_healthy(&c, "web", 4);
    let on_b: Vec<(String, u64)> = allocs(&c, "web")
        .iter()
        .filter(|a| a["node"] == "e2e-lost-b")
        .map(|a| {
            (
                a["id"].as_str().unwrap().to_string(),
                a["pid"].as_u64().unwrap(),
            )
        })
        .collect();
    assert!(!on_b.is_empty(), "replicas spread over both nodes");

    b.signal("KILL");
    b.wait(Duration::from_secs(5)).expect("agent killed");
    wait_for(
        "node b down and its replicas replaced",
        Duration::from_secs(30),
        || {
            let a = allocs(&c, "web");
            let run: Vec<&Value> = a.iter().filter(|a| wanted(a) && healthy(a)).collect();
            (run.len() == 4 && run.iter().all(|a| a["node"] == "e2e-lost-a")).then_some(())
        },
    );
    let nodes = c.json(&["node", "ls"]);
    assert!(nodes
        .as_array()
        .unwrap()
        .iter()
        .any(|n| n["name"] == "e2e-lost-b" && n["status"] == "down"));

    // Its monitors fenced the old replicas on the agent's clock already
    // (the agent is gone, so nobody acknowledged the node): none still runs.
    for (id, pid) in &on_b {
        assert!(!pid_alive(*pid as u32), "replaced {id} still runs");
    }
    // The node returns: it cleans up what its replaced replicas left.
    let _b = extra_agent(&c, "e2e-lost-b");
    wait_for(
        "the returned node to remove its replaced replicas",
        Duration::from_secs(20),
        || {
            on_b.iter()
                .all(|(id, pid)| !pid_alive(*pid as u32) && !cgroup_exists(id))
                .then_some(())
        },
    );
    let a = allocs(&c, "web");
    assert_eq!(a.iter().filter(|a| wanted(a)).count(), 4);
}

#[test]
fn drain_moves_replicas_one_at_a_time() {
    if !require_root("drain_moves_replicas_one_at_a_time") {
        return;
    }
    let images = images();
    let c = Cluster::start("e2e-drain-a");
    let _b = extra_agent(&c, "e2e-drain-b");
    let spec = web(&images, "web", "v1", "", "").replace(
        "max_surge: 1, max_unavailable: 0",
        "max_surge: 0, max_unavailable: 1",
    );
    let spec = c.spec("web", &spec);
    run_ok(&c, &["job", "run", spec.to_str().unwrap()]);
    wait_healthy(&c, "web", 4);
    assert!(allocs(&c, "web").iter().any(|a| a["node"] == "e2e-drain-b"));

    let sampler = Sampler::start(&c.addr, "web");
    let out = run_ok(&c, &["node", "drain", "e2e-drain-b"]);
    assert!(out.stdout.contains("it is empty"), "{}", out.stdout);
    wait_healthy(&c, "web", 4);
    let samples = sampler.finish();
    let least = samples.iter().map(|s| s.1).min().unwrap();
    assert!(
        least >= 3,
        "two replicas down at once during the drain: {least}"
    );
    let a = allocs(&c, "web");
    assert!(a
        .iter()
        .filter(|a| wanted(a))
        .all(|a| a["node"] == "e2e-drain-a"));
    let nodes = c.json(&["node", "ls"]);
    let b = nodes
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "e2e-drain-b")
        .unwrap()
        .clone();
    assert_eq!(b["draining"], true);
    assert_eq!(b["allocations"], 0);
}
