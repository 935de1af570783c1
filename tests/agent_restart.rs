//! Containers outlive the agent: SIGTERM to `drover-agent` (a restart or an
//! upgrade) leaves them running under their monitors, and the next agent
//! process re-adopts every one (same allocation, same pid, logs still
//! written, cgroup still there) and records the exit of one that ended
//! while no agent ran. Nothing is started twice.

use drover_e2e::*;
use std::time::Duration;

#[test]
fn restarting_the_agent_keeps_containers_and_their_exit_codes() {
    if !require_root("restarting_the_agent_keeps_containers_and_their_exit_codes") {
        return;
    }
    let images = images();
    let mut c = Cluster::start("e2e-adopt");
    // Four replicas that log a tick every 200ms, and one that exits with 7
    // once a file appears in its root.
    let steady = c.spec(
        "steady",
        &format!(
            "name: steady\nreplicas: 4\nimage: oci:{}/toolbox:latest\n\
             command: [/bin/sh, -c, 'while true; do echo tick; sleep 0.2; done']\n\
             resources: {{memory: 32Mi}}\nstop_grace_period: 1s\n",
            images.display()
        ),
    );
    let waiter = c.spec(
        "waiter",
        &format!(
            "name: waiter\nimage: oci:{}/toolbox:latest\n\
             command: [/bin/sh, -c, 'while [ ! -e /tmp/go ]; do sleep 0.1; done; echo leaving; exit 7']\n\
             restart: never\nstop_grace_period: 1s\n",
            images.display()
        ),
    );
    for spec in [&steady, &waiter] {
        let out = c.drover(&["job", "run", spec.to_str().unwrap()]);
        assert!(out.ok(), "{}", out.stderr);
    }
    let pids = |v: &serde_json::Value| -> Vec<(String, u64)> {
        let mut k: Vec<(String, u64)> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                (
                    a["id"].as_str().unwrap().to_string(),
                    a["pid"].as_u64().unwrap_or(0),
                )
            })
            .collect();
        k.sort();
        k
    };
    let before = wait_for("five running replicas", Duration::from_secs(20), || {
        let v = c.json(&["alloc", "ls"]);
        let arr = v.as_array()?;
        (arr.len() == 5 && arr.iter().all(|a| a["state"] == "running")).then_some(v)
    });
    let before = pids(&before);
    let waiter_id = c.json(&["alloc", "ls", "--job", "waiter"])[0]["id"]
        .as_str()
        .unwrap()
        .to_string();

    // Stop the agent the way an upgrade does.
    let mut agent = c.agent.take().unwrap();
    agent.signal("TERM");
    assert!(
        agent.wait(Duration::from_secs(10)).is_some(),
        "agent did not exit on SIGTERM"
    );
    for (id, pid) in &before {
        assert!(
            pid_alive(*pid as u32),
            "{id} (pid {pid}) died with the agent"
        );
    }
    // While no agent runs, one container ends, and the others keep logging.
    let steady_id = before
        .iter()
        .find(|(id, _)| id != &waiter_id)
        .unwrap()
        .0
        .clone();
    let log = c
        .agent_state_dir()
        .join("logs")
        .join(format!("{steady_id}.log"));
    let ticks = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .count()
    };
    let ticks_at_stop = ticks();
    let rootfs = c
        .agent_state_dir()
        .join("bundles")
        .join(&waiter_id)
        .join("rootfs");
    std::fs::write(rootfs.join("tmp/go"), "").unwrap();
    let waiter_pid = before.iter().find(|(id, _)| id == &waiter_id).unwrap().1;
    wait_for("the waiter to exit", Duration::from_secs(10), || {
        (!pid_alive(waiter_pid as u32)).then_some(())
    });
    wait_for(
        "logs to grow without an agent",
        Duration::from_secs(5),
        || (ticks() > ticks_at_stop + 2).then_some(()),
    );

    c.start_agent();
    // Re-adopted: the same allocations with the same pids, still running.
    let after = wait_for("the agent to re-adopt", Duration::from_secs(20), || {
        let v = c.json(&["alloc", "ls"]);
        let arr = v.as_array()?;
        // The waiter's new state proves the new agent has reported.
        let settled = arr.len() == 5
            && arr.iter().all(|a| {
                if a["id"] == waiter_id.as_str() {
                    a["state"] == "failed"
                } else {
                    a["state"] == "running"
                }
            });
        settled.then_some(v)
    });
    let after = pids(&after);
    for (id, pid) in &before {
        if id == &waiter_id {
            continue;
        }
        assert!(
            after.contains(&(id.clone(), *pid)),
            "{id} changed: {after:?}"
        );
        assert!(cgroup_exists(id), "{id} lost its cgroup");
    }
    // The exit that happened while no agent ran is recorded.
    let st = c.json(&["alloc", "status", &waiter_id]);
    assert_eq!(st["exit_code"], 7, "{st}");
    assert_eq!(st["reason"], "exited with code 7", "{st}");
    assert!(c.drover(&["logs", &waiter_id]).stdout.contains("leaving"));
    // No duplicate: exactly one sh per steady replica runs on this host.
    let allocs = c.json(&["alloc", "ls", "--job", "steady"]);
    for a in allocs.as_array().unwrap() {
        let id = a["id"].as_str().unwrap();
        let procs =
            std::fs::read_to_string(format!("/sys/fs/cgroup/pids/drover/{id}/cgroup.procs"))
                .or_else(|_| {
                    std::fs::read_to_string(format!("/sys/fs/cgroup/drover/{id}/cgroup.procs"))
                })
                .unwrap();
        assert!(
            procs
                .lines()
                .any(|p| p == a["pid"].as_u64().unwrap().to_string()),
            "{id}: {procs}"
        );
    }
    // Logs are still captured for the adopted containers, through the agent.
    let n = ticks();
    wait_for("logs to keep growing", Duration::from_secs(5), || {
        (ticks() > n + 2).then_some(())
    });
    assert!(c.drover(&["logs", &steady_id]).stdout.contains("tick"));
    // And the adopted containers stop cleanly when the job is stopped.
    assert!(c.drover(&["job", "stop", "steady"]).ok());
    wait_for(
        "adopted containers to stop",
        Duration::from_secs(20),
        || {
            before
                .iter()
                .filter(|(id, _)| id != &waiter_id)
                .all(|(_, pid)| !pid_alive(*pid as u32))
                .then_some(())
        },
    );
}
