//! Placement rules end to end, on real agents in their own network
//! namespaces: labels from `drover-agent run --label` and `drover node
//! label`, facts the agents report, constraints, `max_per_node`, and the
//! "why pending" a user reads when nothing matches; priorities and
//! preemption; batch and system jobs.

use drover_e2e::netcluster::NetCluster;
use drover_e2e::*;
use serde_json::Value;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

fn one_at_a_time() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

fn spec(dir: &std::path::Path, name: &str, replicas: u32, rules: &str) -> std::path::PathBuf {
    spec_cpu(dir, name, replicas, "10m", rules)
}

fn spec_cpu(
    dir: &std::path::Path,
    name: &str,
    replicas: u32,
    cpu: &str,
    rules: &str,
) -> std::path::PathBuf {
    let p = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &p,
        format!(
            "name: {name}\nreplicas: {replicas}\nimage: oci:{}/toolbox:latest\n\
             command: [/bin/sleep, '1000']\nresources: {{cpu: {cpu}, memory: 16Mi}}\n\
             stop_grace_period: 1s\n{rules}",
            images().display()
        ),
    )
    .unwrap();
    p
}

/// Nodes running `job`'s wanted replicas, sorted.
fn nodes_of(c: &NetCluster, job: &str) -> Vec<String> {
    let out = c.drover(&["alloc", "ls", "--job", job, "-o", "json"]);
    let v: Value = serde_json::from_str(&out.stdout).unwrap_or_default();
    let mut nodes: Vec<String> = v
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter(|a| a["desired"] == "run")
        .map(|a| a["node"].as_str().unwrap_or_default().to_string())
        .collect();
    nodes.sort();
    nodes
}

fn job_status(c: &NetCluster, job: &str) -> String {
    let out = c.drover(&["job", "status", job]);
    assert!(out.ok(), "job status: {}", out.stderr);
    out.stdout
}

#[test]
fn constraints_and_labels_decide_where_replicas_run() {
    if !require_root("constraints_and_labels_decide_where_replicas_run") {
        return;
    }
    let _turn = one_at_a_time();
    let mut c = NetCluster::up(
        "place",
        17,
        1,
        2,
        &[
            ("DROVER_AGENT_ARGS_1", "--label zone=eu-1a --label disk=ssd"),
            ("DROVER_AGENT_ARGS_2", "--label zone=us-2"),
        ],
    );
    let (a1, a2) = ("place-a1".to_string(), "place-a2".to_string());
    let dir = tempfile::tempdir().unwrap();

    // The agents' labels and facts are what `node status` shows.
    let out = c.drover(&["node", "status", &a1]);
    assert!(
        out.stdout.contains("labels:      disk=ssd, zone=eu-1a"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("node.arch=amd64"), "{}", out.stdout);
    assert!(out.stdout.contains("node.cgroup=v"), "{}", out.stdout);

    // Constraints over labels and facts: only a1 matches.
    let rules = "constraints:\n\
                 - {attr: zone, op: in, values: [eu-1a, eu-1b]}\n\
                 - {attr: node.kernel, op: version, value: '>= 3.10'}\n\
                 - {attr: disk, op: exists}\n";
    let eu = spec(dir.path(), "eu", 3, rules);
    let out = c.drover(&["job", "run", "--timeout", "60s", eu.to_str().unwrap()]);
    assert!(out.ok(), "job run eu: {}{}", out.stdout, out.stderr);
    assert_eq!(nodes_of(&c, "eu"), vec![a1.clone(); 3]);
    let status = job_status(&c, "eu");
    assert!(
        status.contains(
            "placement: zone in [eu-1a, eu-1b]; node.kernel version >= 3.10; disk exists"
        ),
        "{status}"
    );

    // Nothing matches: pending, and the reason names the rule.
    let ap = spec(
        dir.path(),
        "ap",
        1,
        "constraints: [{attr: zone, op: '=', value: ap-1}]\n",
    );
    let out = c.drover(&["job", "run", "-d", ap.to_str().unwrap()]);
    assert!(out.ok(), "job run ap: {}{}", out.stdout, out.stderr);
    let status = wait_for(
        "ap to say why it is pending",
        Duration::from_secs(20),
        || {
            let s = job_status(&c, "ap");
            s.contains("pending:").then_some(s)
        },
    );
    assert!(
        status.contains("no node matches constraint `zone = ap-1`: 2 nodes checked"),
        "{status}"
    );

    // Relabel a2 at runtime: the pending replica is placed there, and the
    // label outlives the agent's restart (its flags say us-2).
    let out = c.drover(&["node", "label", &a2, "zone=ap-1"]);
    assert!(out.ok(), "node label: {}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("labels zone=ap-1"), "{}", out.stdout);
    wait_for("ap placed on a2", Duration::from_secs(30), || {
        (nodes_of(&c, "ap") == vec![a2.clone()]).then_some(())
    });
    c.must(&["kill", "a2"]);
    c.must(&["restart", "a2"]);
    wait_for("a2 back", Duration::from_secs(30), || {
        let out = c.drover(&["node", "status", &a2]);
        (out.stdout.contains("status:      ready")).then_some(out.stdout)
    });
    let out = c.drover(&["node", "status", &a2]);
    assert!(
        out.stdout.contains("labels:      zone=ap-1\n"),
        "{}",
        out.stdout
    );

    // max_per_node: 1 over two nodes places two of three.
    let spread = spec(dir.path(), "apart", 3, "max_per_node: 1\n");
    let out = c.drover(&["job", "run", "-d", spread.to_str().unwrap()]);
    assert!(out.ok(), "job run apart: {}{}", out.stdout, out.stderr);
    let status = wait_for(
        "apart to say why it is pending",
        Duration::from_secs(30),
        || {
            let s = job_status(&c, "apart");
            (s.contains("pending:") && nodes_of(&c, "apart").len() == 2).then_some(s)
        },
    );
    assert_eq!(nodes_of(&c, "apart"), vec![a1.clone(), a2.clone()]);
    assert!(
        status.contains("every node already runs 1 of its replicas (max_per_node)"),
        "{status}"
    );

    // Soft rules: an affinity draws both replicas to the SSD node, where
    // spreading over nodes alone would put one on each; a spread over
    // zones comes before the affinity.
    let rules = "affinities: [{attr: disk, op: '=', value: ssd, weight: 50}]\n";
    let ssd = spec(dir.path(), "ssd", 2, rules);
    let out = c.drover(&["job", "run", "--timeout", "60s", ssd.to_str().unwrap()]);
    assert!(out.ok(), "job run ssd: {}{}", out.stdout, out.stderr);
    assert_eq!(nodes_of(&c, "ssd"), vec![a1.clone(), a1.clone()]);
    assert!(
        job_status(&c, "ssd").contains("placement: prefer disk = ssd (weight 50)"),
        "{}",
        job_status(&c, "ssd")
    );
    let rules = format!("{rules}spread: [{{attr: zone}}]\n");
    let zoned = spec(dir.path(), "zoned", 2, &rules);
    let out = c.drover(&["job", "run", "--timeout", "60s", zoned.to_str().unwrap()]);
    assert!(out.ok(), "job run zoned: {}{}", out.stdout, out.stderr);
    assert_eq!(nodes_of(&c, "zoned"), vec![a1.clone(), a2.clone()]);

    // A malformed rule is refused before anything changes, with its path.
    let bad = spec(
        dir.path(),
        "bad",
        1,
        "constraints: [{attr: zone, op: regex, value: '('}]\n",
    );
    let out = c.drover(&["job", "run", "-d", bad.to_str().unwrap()]);
    assert!(!out.ok());
    assert!(
        out.stderr.contains("constraints[0].value"),
        "{}",
        out.stderr
    );
    let out = c.drover(&["node", "label", &a1, "node.arch=x"]);
    assert!(!out.ok());
    assert!(out.stderr.contains("kept for the facts"), "{}", out.stderr);
}

#[test]
fn a_higher_priority_job_preempts_lower_priority_replicas() {
    if !require_root("a_higher_priority_job_preempts_lower_priority_replicas") {
        return;
    }
    let _turn = one_at_a_time();
    let c = NetCluster::up("preempt", 18, 1, 1, &[("DROVER_AGENT_ARGS_1", "--cpu 1")]);
    let dir = tempfile::tempdir().unwrap();
    // batch fills the node's one cpu and lets all its replicas go.
    let rules = "priority: 10\nupdate: {max_unavailable: 100%}\n";
    let batch = spec_cpu(dir.path(), "batch", 4, "250m", rules);
    let out = c.drover(&["job", "run", "--timeout", "60s", batch.to_str().unwrap()]);
    assert!(out.ok(), "job run batch: {}{}", out.stdout, out.stderr);
    assert_eq!(nodes_of(&c, "batch").len(), 4);

    // prod needs half of it: two batch replicas are stopped for it.
    let prod = spec_cpu(dir.path(), "prod", 2, "250m", "priority: 80\n");
    let out = c.drover(&["job", "run", "--timeout", "60s", prod.to_str().unwrap()]);
    assert!(out.ok(), "job run prod: {}{}", out.stdout, out.stderr);
    assert_eq!(nodes_of(&c, "prod").len(), 2);
    assert_eq!(nodes_of(&c, "batch").len(), 2, "only the room prod needed");
    assert!(job_status(&c, "prod").contains("placement: priority 80"));

    // The evicted replicas say why; batch says why it is short.
    let out = c.drover(&["alloc", "ls", "--job", "batch", "--all", "-o", "json"]);
    let all: Value = serde_json::from_str(&out.stdout).unwrap();
    let preempted: Vec<&Value> = all
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| {
            a["desired_reason"]
                .as_str()
                .unwrap_or_default()
                .starts_with("preempted: job prod (priority 80) needed its room on preempt-a1")
        })
        .collect();
    assert_eq!(preempted.len(), 2, "{}", out.stdout);
    let id = preempted[0]["id"].as_str().unwrap();
    let status = c.drover(&["alloc", "status", id]);
    assert!(
        status.stdout.contains("preempted: job prod"),
        "{}",
        status.stdout
    );
    let batch_status = wait_for(
        "batch to say why it is short",
        Duration::from_secs(20),
        || {
            let s = job_status(&c, "batch");
            s.contains("pending:").then_some(s)
        },
    );
    assert!(
        batch_status.contains("no node has 0.25 cpu free"),
        "{batch_status}"
    );
}

/// A spec of `kind` (`batch` or `system`) for the toolbox image.
fn kind_spec(dir: &std::path::Path, name: &str, body: &str) -> std::path::PathBuf {
    let p = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &p,
        format!(
            "name: {name}\nimage: oci:{}/toolbox:latest\nresources: {{cpu: 10m, memory: 16Mi}}\n\
             stop_grace_period: 1s\n{body}",
            images().display()
        ),
    )
    .unwrap();
    p
}

#[test]
fn batch_jobs_run_to_completion_and_system_jobs_follow_the_nodes() {
    if !require_root("batch_jobs_run_to_completion_and_system_jobs_follow_the_nodes") {
        return;
    }
    let _turn = one_at_a_time();
    let mut c = NetCluster::up(
        "kinds",
        19,
        1,
        3,
        &[
            (
                "DROVER_AGENT_ARGS_1",
                "--cpu 2 --reserve-cpu 500m --memory 1Gi --reserve-memory 256Mi",
            ),
            ("DROVER_AGENT_ARGS_3", "--label role=gateway"),
            ("DROVER_NODE_TIMEOUT", "2s"),
        ],
    );
    let dir = tempfile::tempdir().unwrap();

    // A node offers what it has less what its agent keeps for the system;
    // its facts still say what the machine has.
    let out = c.drover(&["node", "status", "kinds-a1", "-o", "json"]);
    let node: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(node["cpu_millis"], 1500, "{}", out.stdout);
    assert_eq!(node["memory_bytes"], 768u64 << 20, "{}", out.stdout);
    assert_eq!(node["facts"]["cores"], "2", "{}", out.stdout);

    // A periodic batch job, every minute: nothing runs until a firing.
    let tick = kind_spec(
        dir.path(),
        "tick",
        "type: batch\ncommand: [/bin/echo, tick]\n\
         schedule: {cron: '* * * * *', timezone: Europe/Berlin, overlap: replace}\n",
    );
    let out = c.drover(&["job", "run", tick.to_str().unwrap()]);
    assert!(out.ok(), "job run tick: {}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("tick: next run at "), "{}", out.stdout);

    // A batch job: four completions, two at a time; `job run` follows it
    // to the end and says how it went.
    let sums = kind_spec(
        dir.path(),
        "sums",
        "type: batch\ncompletions: 4\nparallelism: 2\ncommand: [/bin/sh, -c, 'echo part; sleep 0.5']\n",
    );
    let out = c.drover(&["job", "run", "--timeout", "90s", sums.to_str().unwrap()]);
    assert!(out.ok(), "job run sums: {}{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .contains("sums: complete: 4 of 4 completions succeeded"),
        "{}",
        out.stdout
    );
    let status = job_status(&c, "sums");
    assert!(status.contains("status:    complete"), "{status}");
    assert!(status.contains("type:      batch"), "{status}");
    assert!(
        status.contains("batch:     4/4 succeeded, 0 failed (retries 3), 0 running, 2 at a time"),
        "{status}"
    );
    let ls = c.drover(&["job", "ls"]).stdout;
    assert!(ls.contains("4/4 done"), "{ls}");
    // Its ended replicas are let go of, and none runs now.
    wait_for(
        "sums' replicas to be let go of",
        Duration::from_secs(10),
        || nodes_of(&c, "sums").is_empty().then_some(()),
    );

    // A batch job that fails: retried once, then the job has failed, and
    // `job run` exits with 5 (what it waited for failed) and the reason.
    let broken = kind_spec(
        dir.path(),
        "broken",
        "type: batch\nretries: 1\ncommand: [/bin/sh, -c, 'exit 3']\n",
    );
    let out = c.drover(&["job", "run", "--timeout", "90s", broken.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(5), "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr
            .contains("broken: failed: 2 replicas failed, more than its retries (1)"),
        "{}",
        out.stderr
    );
    let out = c.drover(&["job", "scale", "broken", "3"]);
    assert!(!out.ok());
    assert!(out.stderr.contains("is a batch job"), "{}", out.stderr);

    // A system job: one replica on each node its constraint allows.
    let (a1, a2) = ("kinds-a1".to_string(), "kinds-a2".to_string());
    let sys = kind_spec(
        dir.path(),
        "sys",
        "type: system\ncommand: [/bin/sleep, '1000']\n\
         constraints: [{attr: role, op: '!=', value: gateway}]\n",
    );
    let out = c.drover(&["job", "run", "--timeout", "60s", sys.to_str().unwrap()]);
    assert!(out.ok(), "job run sys: {}{}", out.stdout, out.stderr);
    assert_eq!(nodes_of(&c, "sys"), vec![a1.clone(), a2.clone()]);
    let status = job_status(&c, "sys");
    assert!(
        status.contains("replicas:  2 running / 2 desired (one on every eligible node)"),
        "{status}"
    );

    // Its node gone, a replica is not started anywhere else.
    c.must(&["kill", "a2"]);
    wait_for(
        "a2's replica to be let go of",
        Duration::from_secs(30),
        || (nodes_of(&c, "sys") == vec![a1.clone()]).then_some(()),
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(nodes_of(&c, "sys"), vec![a1.clone()]);
    // Back, it runs one again.
    c.must(&["restart", "a2"]);
    wait_for("a2 to run sys again", Duration::from_secs(60), || {
        (nodes_of(&c, "sys") == vec![a1.clone(), a2.clone()]).then_some(())
    });

    // The periodic job: launched by hand it runs to its end; and its
    // schedule fires on its own within a minute of its submission.
    let out = c.drover(&["job", "launch", "--timeout", "60s", "tick"]);
    assert!(out.ok(), "job launch tick: {}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("tick: complete: 1 of 1"),
        "{}",
        out.stdout
    );
    let status = wait_for("tick to fire on schedule", Duration::from_secs(75), || {
        let s = job_status(&c, "tick");
        let runs: u64 = s
            .lines()
            .find_map(|l| l.strip_prefix("runs:      "))?
            .split(' ')
            .next()?
            .parse()
            .ok()?;
        (runs >= 2).then_some(s)
    });
    assert!(
        status.contains("schedule:  * * * * * (Europe/Berlin), overlap replace"),
        "{status}"
    );
    assert!(status.contains("; next at "), "{status}");
    let out = c.drover(&["job", "launch", "sums"]);
    assert!(!out.ok());
    assert!(
        out.stderr.contains("is not a periodic batch job"),
        "{}",
        out.stderr
    );
}
