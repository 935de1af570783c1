//! The event stream, end to end: a job's life told by `drover events` with
//! a real scheduler and agent, and a follower that rides out the kill of
//! the peer it reads from without missing or repeating an event.

use drover_e2e::netcluster::NetCluster;
use drover_e2e::*;
use serde_json::Value;
use std::time::Duration;

/// The JSON events in a `drover events -o json` output (other lines, such
/// as a follower's warnings, are skipped).
fn events(text: &str) -> Vec<Value> {
    text.lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad event {l:?}: {e}")))
        .collect()
}

fn cursor(e: &Value) -> (u64, u64) {
    (e["index"].as_u64().unwrap(), e["seq"].as_u64().unwrap())
}

fn types(list: &[Value]) -> Vec<&str> {
    list.iter().map(|e| e["type"].as_str().unwrap()).collect()
}

/// Whether `want` occurs in `seen` in this order (other events between).
fn in_order(seen: &[&str], want: &[&str]) -> bool {
    let mut it = seen.iter();
    want.iter().all(|w| it.any(|s| s == w))
}

fn count(list: &[&str], kind: &str) -> usize {
    list.iter().filter(|t| **t == kind).count()
}

#[test]
fn a_jobs_life_is_in_the_event_stream_and_a_follower_sees_each_event_once() {
    if !require_root("a_jobs_life_is_in_the_event_stream_and_a_follower_sees_each_event_once") {
        return;
    }
    let images = images();
    let c = Cluster::start("e2e-events");
    let follower = Proc::spawn(
        "drover events -f",
        drover_command(&c.addr)
            .args(["events", "-f", "--since", "1", "--job", "web", "-o", "json"]),
        c.dir.path().join("follow.log"),
    );
    let spec = c.spec(
        "web",
        &format!(
            "name: web\nreplicas: 2\nimage: oci:{}/demo-web:v1\nenv: {{PORT: \"8080\"}}\n\
             resources: {{cpu: 0.05, memory: 32Mi}}\nstop_grace_period: 2s\n\
             health: {{http: {{path: /healthz, port: 8080}}, interval: 500ms, timeout: 400ms}}\n\
             update: {{min_healthy_time: 1s}}\n",
            images.display()
        ),
    );
    c.must(&["job", "run", spec.to_str().unwrap()]);
    c.must(&["job", "scale", "web", "3"]);
    wait_for("3 healthy replicas", Duration::from_secs(60), || {
        let list = c.json(&["alloc", "ls", "--job", "web"]);
        let healthy = list
            .as_array()?
            .iter()
            .filter(|a| a["desired"] == "run" && a["health"] == "healthy")
            .count();
        (healthy == 3).then_some(())
    });
    c.must(&["job", "stop", "web"]);
    wait_for("every replica to stop", Duration::from_secs(60), || {
        let list = c.json(&["alloc", "ls", "--job", "web"]);
        let stopped = list.as_array()?.iter().all(|a| a["state"] == "stopped");
        stopped.then_some(())
    });
    let listed = events(&c.must(&["events", "--job", "web", "-o", "json"]));
    let seen = types(&listed);
    assert!(
        in_order(
            &seen,
            &[
                "job-submitted",
                "rollout-started",
                "alloc-placed",
                "alloc-started",
                "alloc-healthy",
                "rollout-succeeded",
                "job-scaled",
                "alloc-placed",
                "job-stopped",
                "alloc-stopping",
                "alloc-stopped",
            ]
        ),
        "{seen:?}"
    );
    assert_eq!(count(&seen, "alloc-placed"), 3, "{seen:?}");
    assert_eq!(count(&seen, "alloc-started"), 3, "{seen:?}");
    assert_eq!(count(&seen, "alloc-stopped"), 3, "{seen:?}");
    assert!(listed.iter().all(|e| e["job"] == "web"), "{listed:?}");
    assert!(
        listed.windows(2).all(|w| cursor(&w[0]) < cursor(&w[1])),
        "events out of order: {listed:?}"
    );
    let placed = listed.iter().find(|e| e["type"] == "alloc-placed").unwrap();
    assert_eq!(placed["node"], c.node.as_str());
    assert!(!placed["alloc"].as_str().unwrap().is_empty());

    // The follower saw exactly these, each once.
    let followed = wait_for("the follower to catch up", Duration::from_secs(20), || {
        let f = events(&follower.output());
        (f.len() >= listed.len()).then_some(f)
    });
    assert_eq!(
        followed[..listed.len()],
        listed[..],
        "the follower's events differ from the listing"
    );

    // Topics filter; a cursor resumes exactly there.
    let allocs = events(&c.must(&["events", "--job", "web", "--topic", "alloc", "-o", "json"]));
    assert!(allocs.iter().all(|e| e["topic"] == "alloc"));
    assert_eq!(
        allocs.len(),
        listed.iter().filter(|e| e["topic"] == "alloc").count()
    );
    let mid = listed.len() / 2;
    let (i, s) = cursor(&listed[mid]);
    let rest = events(&c.must(&[
        "events",
        "--job",
        "web",
        "--since",
        &format!("{i}.{s}"),
        "-o",
        "json",
    ]));
    assert_eq!(rest, listed[mid..].to_vec());
    let nodes = events(&c.must(&["events", "--topic", "node", "-o", "json"]));
    assert!(
        nodes
            .iter()
            .any(|e| e["type"] == "node-registered" && e["node"] == c.node.as_str()),
        "{nodes:?}"
    );
    // A human line names the time, the cursor, the type and the job.
    let text = c.must(&["events", "--job", "web", "--topic", "job"]);
    let first = text.lines().next().unwrap_or_default();
    assert!(
        first.contains("job-submitted") && first.contains("web") && first.contains('Z'),
        "{text}"
    );
    // Bad input is refused with what was wrong.
    let bad = c.drover(&["events", "--since", "yesterday"]);
    assert!(
        !bad.ok() && bad.stderr.contains("--since"),
        "{}",
        bad.stderr
    );

    // A restarted peer has no ring, but its log: applying the entries after
    // its snapshot again makes the same events, with the same cursors.
    let mut c = c;
    let mut scheduler = c.scheduler.take().unwrap();
    scheduler.signal("TERM");
    scheduler
        .wait(Duration::from_secs(20))
        .expect("the scheduler stops");
    c.start_scheduler();
    let last = cursor(listed.last().unwrap());
    let key = |e: &Value| (cursor(e), e["type"].clone(), e["message"].clone());
    let again: Vec<_> = events(&c.must(&["events", "--job", "web", "-o", "json"]))
        .iter()
        .filter(|e| cursor(e) <= last)
        .map(key)
        .collect();
    assert_eq!(again, listed.iter().map(key).collect::<Vec<_>>());
}

/// A job that needs no agent: with no nodes it stays pending.
fn pending_spec(dir: &std::path::Path, name: &str) -> String {
    let p = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &p,
        format!("name: {name}\nimage: oci:/nowhere:latest\ncommand: [/bin/sleep, '1000']\nresources: {{cpu: 10m, memory: 16Mi}}\n"),
    )
    .unwrap();
    p.to_string_lossy().into_owned()
}

#[test]
fn a_follower_rides_out_the_kill_of_its_peer_without_gaps_or_repeats() {
    if !require_root("a_follower_rides_out_the_kill_of_its_peer_without_gaps_or_repeats") {
        return;
    }
    let mut c = NetCluster::up("evha", 21, 3, 0, &[]);
    let leader = c.leader();
    let read_from = (1..=3).find(|i| *i != leader).unwrap();
    // The follower asks a follower peer first: it serves what it applied.
    let mut order: Vec<String> = vec![c.peer_addr(read_from)];
    order.extend((1..=3).filter(|i| *i != read_from).map(|i| c.peer_addr(i)));
    let dir = tempfile::tempdir().unwrap();
    let follower = Proc::spawn(
        "drover events -f",
        drover_command(&c.addr())
            .env("DROVER_ADDR", order.join(","))
            .args([
                "events", "-f", "--since", "1", "--topic", "job", "-o", "json",
            ]),
        dir.path().join("follow.log"),
    );
    // Each job is submitted, then found unplaceable: two events.
    let submitted = |follower: &Proc| {
        events(&follower.output())
            .iter()
            .filter(|e| e["type"] == "job-submitted")
            .count()
    };
    for i in 0..5 {
        let r = c.drover(&[
            "job",
            "run",
            "--detach",
            &pending_spec(dir.path(), &format!("a{i}")),
        ]);
        assert!(r.ok(), "{}", r.stderr);
    }
    wait_for("the first five", Duration::from_secs(20), || {
        (submitted(&follower) == 5).then_some(())
    });
    c.must(&["kill", &format!("s{read_from}")]);
    for i in 0..5 {
        let r = c.drover(&[
            "job",
            "run",
            "--detach",
            &pending_spec(dir.path(), &format!("b{i}")),
        ]);
        assert!(r.ok(), "{}", r.stderr);
    }
    wait_for(
        "the next five, from another peer",
        Duration::from_secs(60),
        || (submitted(&follower) >= 10).then_some(()),
    );
    let survivor = (1..=3).find(|i| *i != read_from).unwrap();
    let listed = wait_for(
        "both events of all ten jobs",
        Duration::from_secs(30),
        || {
            let out = c.drover_on(survivor, &["events", "--topic", "job", "-o", "json"]);
            let listed = events(&out.stdout);
            (listed.len() >= 20).then_some(listed)
        },
    );
    let followed = wait_for("the follower to catch up", Duration::from_secs(30), || {
        let followed = events(&follower.output());
        (followed.len() >= listed.len()).then_some(followed)
    });
    assert_eq!(
        followed[..listed.len()],
        listed[..],
        "the follower missed or repeated events across the kill"
    );
    let jobs: Vec<&str> = followed
        .iter()
        .filter(|e| e["type"] == "job-submitted")
        .map(|e| e["job"].as_str().unwrap())
        .collect();
    assert_eq!(
        jobs,
        ["a0", "a1", "a2", "a3", "a4", "b0", "b1", "b2", "b3", "b4"]
    );
}

#[test]
fn watch_top_and_exit_codes_tell_a_user_and_a_script_what_happens() {
    if !require_root("watch_top_and_exit_codes_tell_a_user_and_a_script_what_happens") {
        return;
    }
    let images = images();
    let c = Cluster::start("e2e-watch");
    // A watch prints the list again when something changes.
    let watcher = Proc::spawn(
        "drover job ls --watch",
        drover_command(&c.addr).args(["job", "ls", "--watch", "-o", "json"]),
        c.dir.path().join("watch.log"),
    );
    let spec = c.spec(
        "sleepy",
        &format!(
            "name: sleepy\nreplicas: 1\nimage: oci:{}/toolbox:latest\ncommand: [/bin/sleep, '1000']\n\
             resources: {{cpu: 0.05, memory: 16Mi}}\nstop_grace_period: 1s\n",
            images.display()
        ),
    );
    c.must(&["job", "run", spec.to_str().unwrap()]);
    c.must(&["job", "scale", "sleepy", "2"]);
    // Soon after the change (the job ran in a few seconds), before the
    // watch's 10 s tick: it printed again because of the change.
    let renders = wait_for(
        "the watch to show 2 running",
        Duration::from_secs(5),
        || {
            let out = watcher.output();
            let docs: Vec<Value> = serde_json::Deserializer::from_str(&out)
                .into_iter::<Value>()
                .filter_map(Result::ok)
                .collect();
            let last = docs.last()?.as_array()?.first()?.clone();
            (last["name"] == "sleepy" && last["running"] == 2).then_some(docs.len())
        },
    );
    assert!(
        renders >= 2,
        "printed {renders} times: once at the start, then on changes"
    );

    // Top: what the replicas use, from their agent.
    wait_for("2 running", Duration::from_secs(30), || {
        let j = c.json(&["job", "status", "sleepy"]);
        (j["running"] == 2).then_some(())
    });
    let top = c.json(&["top", "--once", "--job", "sleepy"]);
    let allocs = top["allocations"].as_array().unwrap();
    assert_eq!(allocs.len(), 2, "{top}");
    for a in allocs {
        assert!(a["memory_bytes"].as_u64().is_some_and(|m| m > 0), "{top}");
        assert_eq!(a["memory_limit_bytes"], 16 << 20, "{top}");
    }
    let node = &top["nodes"].as_array().unwrap()[0];
    assert_eq!(node["allocations"], 2, "{top}");

    // Exit codes a script can tell apart.
    let code = |r: Run| r.status.code();
    assert_eq!(code(c.drover(&["job", "status", "nope"])), Some(3));
    assert_eq!(
        code(c.drover(&["job", "scale", "sleepy", "20000"])),
        Some(4)
    );
    let unreachable = drover_command(&c.addr)
        .env("DROVER_ADDR", "127.0.0.1:1")
        .args(["job", "ls"])
        .output()
        .unwrap();
    assert_eq!(unreachable.status.code(), Some(6), "{unreachable:?}");
    assert_eq!(code(c.drover(&["job", "frobnicate"])), Some(2));
    let help = c.must(&["--help"]);
    assert!(
        help.contains("Exit codes:") && help.contains("3  not found"),
        "{help}"
    );
}
