//! The foundation, end to end: real `drover-scheduler` and `drover-agent`
//! processes on loopback, the real `drover` CLI, real containers.

use drover_e2e::*;
use std::time::{Duration, Instant};

fn web_spec(images: &std::path::Path, name: &str, replicas: u32) -> String {
    format!(
        "name: {name}\nreplicas: {replicas}\nimage: oci:{}/demo-web:v1\nenv: {{PORT: \"8080\"}}\n\
         resources: {{cpu: 0.1, memory: 48Mi, pids: 64}}\nstop_grace_period: 3s\n",
        images.display()
    )
}

fn ns(pid: impl std::fmt::Display, kind: &str) -> String {
    std::fs::read_link(format!("/proc/{pid}/ns/{kind}"))
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

#[test]
fn three_replicas_run_isolated_limited_logged_and_stop_cleanly() {
    if !require_root("three_replicas_run_isolated_limited_logged_and_stop_cleanly") {
        return;
    }
    let images = images();
    let c = Cluster::start("e2e-iso");
    let spec = c.spec("web", &web_spec(&images, "web", 3));
    let run = c.drover(&["job", "run", spec.to_str().unwrap()]);
    assert!(run.ok(), "job run failed: {}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("all 3 replica(s) of version 1 running"),
        "{}",
        run.stdout
    );

    let job = c.json(&["job", "status", "web"]);
    assert_eq!(job["name"], "web");
    assert_eq!(job["version"], 1);
    assert_eq!(job["desired"], 3);
    assert_eq!(job["running"], 3);
    let allocs = job["allocations"].as_array().unwrap().clone();
    assert_eq!(allocs.len(), 3);
    let mut names: Vec<String> = allocs
        .iter()
        .map(|a| a["name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    assert_eq!(names, ["web-0", "web-1", "web-2"]);

    let mut pids = Vec::new();
    for a in &allocs {
        assert_eq!(a["node"], "e2e-iso");
        assert_eq!(a["version"], 1);
        assert_eq!(a["state"], "running");
        let id = a["id"].as_str().unwrap();
        let st = c.json(&["alloc", "status", &id[..8]]);
        assert_eq!(st["id"], id, "a unique id prefix finds the allocation");
        let pid = st["pid"]
            .as_u64()
            .expect("a running allocation shows its pid") as u32;
        // Isolated: its own pid, mount, uts, ipc and net namespaces.
        for kind in ["pid", "mnt", "uts", "ipc", "net"] {
            assert_ne!(
                ns(pid, kind),
                ns("self", kind),
                "{kind} namespace is the host's"
            );
        }
        // PID 1 inside is the job's command (its host pid's NSpid ends in 1).
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let nspid = status.lines().find(|l| l.starts_with("NSpid:")).unwrap();
        assert!(nspid.trim_end().ends_with("\t1"), "{nspid}");
        let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap();
        assert_eq!(cmdline.split('\0').next(), Some("/demo-web"));
        // Hostname is the allocation's name.
        let host = std::process::Command::new("nsenter")
            .args(["-t", &pid.to_string(), "-u", "hostname"])
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&host.stdout).trim(),
            a["name"].as_str().unwrap()
        );
        // Limited: the memory cgroup limit is the spec's.
        assert_eq!(memory_limit_of(pid), Some(48 << 20));
        pids.push((id.to_string(), pid));
    }

    // Logs come back, per allocation and per job (demo-web writes to
    // stderr, which `drover logs` writes to its own).
    let (first, _) = &pids[0];
    let logs = wait_for("logs of web-0", Duration::from_secs(10), || {
        let out = c.drover(&["logs", first]);
        out.stderr
            .contains("listening on 0.0.0.0:8080")
            .then_some(out.stderr)
    });
    assert!(logs.contains("demo-web v1"), "{logs}");
    let all = c.drover(&["logs", "web", "--tail", "1"]);
    assert!(all.ok(), "{}", all.stderr);
    for n in ["web-0 |", "web-1 |", "web-2 |"] {
        assert!(all.stderr.contains(n), "{}", all.stderr);
    }

    // Stop leaves nothing behind.
    let stop = c.drover(&["job", "stop", "web"]);
    assert!(stop.ok(), "{}", stop.stderr);
    for (id, pid) in &pids {
        assert!(!pid_alive(*pid), "container {id} (pid {pid}) still runs");
        assert!(!cgroup_exists(id), "cgroup of {id} remains");
        assert!(!mounted(id), "a mount of {id} remains");
        assert!(
            !c.agent_state_dir().join("bundles").join(id).exists(),
            "bundle of {id} remains"
        );
    }
    let job = c.json(&["job", "status", "web"]);
    assert_eq!(job["status"], "stopped");
    assert_eq!(job["running"], 0);
    // Logs outlive the container.
    assert!(c.drover(&["logs", first]).stderr.contains("listening"));
}

#[test]
fn bad_specs_are_rejected_with_the_field_and_change_nothing() {
    if !require_root("bad_specs_are_rejected_with_the_field_and_change_nothing") {
        return;
    }
    let c = Cluster::start("e2e-bad");
    let before = c.json(&["job", "ls"]);

    // The CLI rejects it before sending.
    let bad = c.spec(
        "bad",
        "name: web\nimage: oci:/nowhere:v1\nresources: {memory: 64XB}\n",
    );
    let out = c.drover(&["job", "run", bad.to_str().unwrap()]);
    assert!(!out.ok());
    assert!(
        out.stderr
            .contains(r#"resources.memory: "64XB" is not a size (use Ki, Mi, Gi)"#),
        "{}",
        out.stderr
    );
    let typo = c.spec("typo", "name: web\nreplica: 2\nimage: oci:/nowhere:v1\n");
    let out = c.drover(&["job", "run", typo.to_str().unwrap()]);
    assert!(
        out.stderr
            .contains("replica: unknown field (did you mean `replicas`?)"),
        "{}",
        out.stderr
    );

    // The scheduler rejects it too, when a client skips validation.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let addr = format!("http://{}", c.addr);
    let err = rt.block_on(async {
        let endpoint = tonic::transport::Endpoint::from_shared(addr).unwrap();
        let ch = drover_e2e::client_tls(&c.addr)
            .connect(&endpoint)
            .await
            .unwrap();
        let mut client = drover_proto::pb::drover_client::DroverClient::new(ch);
        client
            .submit_job(drover_proto::pb::SubmitJobRequest {
                spec_json: r#"{"name":"Bad_Name","image":"oci:/x:v1","resources":{"cpu":"0"}}"#
                    .into(),
                request_id: "r1".into(),
            })
            .await
            .unwrap_err()
    });
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(
        err.message()
            .contains("name: \"Bad_Name\" is not a DNS-1123 label"),
        "{}",
        err.message()
    );
    assert!(
        err.message().contains("resources.cpu: must be more than 0"),
        "{}",
        err.message()
    );

    assert_eq!(
        c.json(&["job", "ls"]),
        before,
        "a rejected spec changed the job list"
    );
}

#[test]
fn restarting_the_scheduler_keeps_every_job_and_running_containers() {
    if !require_root("restarting_the_scheduler_keeps_every_job_and_running_containers") {
        return;
    }
    let images = images();
    let mut c = Cluster::start("e2e-restart");
    for (name, n) in [("alpha", 1), ("beta", 2)] {
        let spec = c.spec(name, &web_spec(&images, name, n));
        let out = c.drover(&["job", "run", spec.to_str().unwrap()]);
        assert!(out.ok(), "{}", out.stderr);
    }
    let before = c.json(&["alloc", "ls"]);
    assert_eq!(before.as_array().unwrap().len(), 3);

    // A crash, not a clean stop: the log on disk must be enough.
    let mut s = c.scheduler.take().unwrap();
    s.signal("KILL");
    s.wait(Duration::from_secs(5)).expect("scheduler killed");
    c.start_scheduler();

    let jobs = c.json(&["job", "ls"]);
    let mut names: Vec<&str> = jobs
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["alpha", "beta"]);
    // The agent reconnects; the same containers (same ids, same pids) keep running.
    let after = wait_for("the agent to report again", Duration::from_secs(20), || {
        let v = c.json(&["alloc", "ls"]);
        let all_running = v.as_array()?.iter().all(|a| a["state"] == "running");
        (all_running && v.as_array()?.len() == 3).then_some(v)
    });
    let key = |v: &serde_json::Value| {
        let mut k: Vec<(String, u64)> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                (
                    a["id"].as_str().unwrap().to_string(),
                    a["pid"].as_u64().unwrap(),
                )
            })
            .collect();
        k.sort();
        k
    };
    assert_eq!(key(&before), key(&after));
    // And it still schedules: a new job runs.
    let spec = c.spec("gamma", &web_spec(&images, "gamma", 1));
    assert!(c.drover(&["job", "run", spec.to_str().unwrap()]).ok());
}

#[test]
fn an_ended_replica_reports_its_exit_code_and_keeps_its_output() {
    if !require_root("an_ended_replica_reports_its_exit_code_and_keeps_its_output") {
        return;
    }
    let images = images();
    let c = Cluster::start("e2e-exit");
    let once = c.spec(
        "once",
        &format!(
            "name: once\nimage: oci:{}/toolbox:latest\ncommand: [/bin/sh, -c, 'echo bye; exit 3']\nrestart: never\n",
            images.display()
        ),
    );
    let out = c.drover(&["job", "run", "--detach", once.to_str().unwrap()]);
    assert!(out.ok(), "{}", out.stderr);
    let allocs = c.json(&["alloc", "ls", "--job", "once"]);
    let id = allocs[0]["id"].as_str().unwrap().to_string();
    let st = wait_for("the replica to end", Duration::from_secs(10), || {
        let st = c.json(&["alloc", "status", &id]);
        (st["state"] == "failed").then_some(st)
    });
    assert_eq!(st["reason"], "exited with code 3");
    assert_eq!(st["exit_code"], 3);
    assert!(st.get("pid").is_none(), "an ended allocation has no pid");
    assert!(c.drover(&["logs", &id]).stdout.contains("bye"));
}

#[test]
fn a_crashing_replica_says_how_it_ended_and_when_it_restarts() {
    if !require_root("a_crashing_replica_says_how_it_ended_and_when_it_restarts") {
        return;
    }
    let images = images();
    let c = Cluster::start("e2e-crash");
    let looping = c.spec(
        "looping",
        &format!(
            "name: looping\nimage: oci:{}/toolbox:latest\ncommand: [/bin/sh, -c, 'exit 4']\n\
             restart: {{policy: always, backoff: {{initial: 30s, max: 30s}}}}\n",
            images.display()
        ),
    );
    let out = c.drover(&["job", "run", "--detach", looping.to_str().unwrap()]);
    assert!(out.ok(), "{}", out.stderr);
    let id = c.json(&["alloc", "ls", "--job", "looping"])[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let st = wait_for(
        "the replica to wait to restart",
        Duration::from_secs(10),
        || {
            let st = c.json(&["alloc", "status", &id]);
            (st["restarting_at_ms"].as_i64().unwrap_or(0) > 0).then_some(st)
        },
    );
    assert_eq!(st["reason"], "exited with code 4", "{st}");
    assert_eq!(st["state"], "failed", "{st}");
    let human = c.drover(&["alloc", "status", &id]).stdout;
    assert!(
        human.contains("exited with code 4; restarting in 30s")
            || human.contains("exited with code 4; restarting in 29s"),
        "{human}"
    );
    assert!(c.drover(&["job", "stop", "looping"]).ok());
}

#[test]
fn a_replica_that_cannot_start_fails_job_run_with_the_reason() {
    if !require_root("a_replica_that_cannot_start_fails_job_run_with_the_reason") {
        return;
    }
    let images = images();
    let c = Cluster::start("e2e-broken");
    let broken = c.spec(
        "broken",
        &format!(
            "name: broken\nimage: oci:{}/toolbox:latest\ncommand: [/bin/nope]\nrestart: never\n",
            images.display()
        ),
    );
    let out = c.drover(&["job", "run", broken.to_str().unwrap()]);
    assert!(!out.ok(), "{}", out.stdout);
    assert!(
        out.stderr.contains("broken-0") && out.stderr.contains("/bin/nope"),
        "{}",
        out.stderr
    );
}

#[test]
fn an_unplaceable_job_says_why_it_is_pending() {
    if !require_root("an_unplaceable_job_says_why_it_is_pending") {
        return;
    }
    let images = images();
    let c = Cluster::start("e2e-big");
    let big = c.spec(
        "big",
        &format!(
            "name: big\nimage: oci:{}/toolbox:latest\nresources: {{memory: 1Ti}}\n",
            images.display()
        ),
    );
    assert!(c
        .drover(&["job", "run", "--detach", big.to_str().unwrap()])
        .ok());
    let job = wait_for("a pending reason", Duration::from_secs(10), || {
        let j = c.json(&["job", "status", "big"]);
        (j["pending_reason"] != "").then_some(j)
    });
    assert_eq!(job["status"], "pending");
    assert_eq!(
        job["pending_reason"],
        "1 replica not placed: no node has 1Ti free memory: 1 node checked"
    );
}

#[test]
fn drover_dev_runs_jobs_and_ctrl_c_stops_everything() {
    if !require_root("drover_dev_runs_jobs_and_ctrl_c_stops_everything") {
        return;
    }
    let images = images();
    let dir = tempfile::tempdir().unwrap();
    let api = format!("127.0.0.1:{}", free_port());
    let mut cmd = std::process::Command::new(bin_dir().join("drover"));
    let cidr = test_cidr(free_port());
    let prefix = cidr.rsplit_once(".0.0/").unwrap().0.to_string() + ".";
    cmd.args([
        "dev",
        "--listen",
        &api,
        "--agent-listen",
        &format!("127.0.0.1:{}", free_port()),
        "--cluster-cidr",
        &cidr,
    ])
    .arg("--state-dir")
    .arg(dir.path().join("state"));
    drover_e2e::register_pki(&api, &dir.path().join("state/pki"));
    let mut dev = Proc::spawn("drover dev", &mut cmd, dir.path().join("dev.log"));
    wait_for(
        "drover dev to have a ready node",
        Duration::from_secs(20),
        || {
            run_drover(&api, &["node", "ls"])
                .stdout
                .contains("ready")
                .then_some(())
        },
    );
    let spec = dir.path().join("toolbox.yaml");
    std::fs::write(
        &spec,
        format!(
            "name: tb\nreplicas: 2\nimage: oci:{}/toolbox:latest\ncommand: [/bin/sleep, '1000']\nstop_grace_period: 1s\n",
            images.display()
        ),
    )
    .unwrap();
    let out = run_drover(&api, &["job", "run", spec.to_str().unwrap()]);
    assert!(out.ok(), "{}{}", out.stdout, out.stderr);
    let allocs: serde_json::Value =
        serde_json::from_str(&run_drover(&api, &["alloc", "ls", "-o", "json"]).stdout).unwrap();
    let running: Vec<(String, u32)> = allocs
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["id"].as_str().unwrap().to_string(),
                a["pid"].as_u64().unwrap() as u32,
            )
        })
        .collect();
    assert_eq!(running.len(), 2);

    dev.signal("INT");
    let status = dev
        .wait(Duration::from_secs(30))
        .expect("drover dev exits on Ctrl-C");
    assert!(
        status.success(),
        "drover dev exited with {status}: {}",
        dev.output()
    );
    // Its network is gone too: no bridge with its address range remains.
    let addrs = std::process::Command::new("ip")
        .args(["-o", "addr"])
        .output()
        .unwrap();
    let addrs = String::from_utf8_lossy(&addrs.stdout).into_owned();
    assert!(
        !addrs.contains(&format!(" {prefix}")),
        "drover dev left its bridge address:\n{addrs}"
    );
    for (id, pid) in running {
        assert!(!pid_alive(pid), "container {id} survived drover dev");
        assert!(!cgroup_exists(&id), "cgroup of {id} survived drover dev");
        assert!(!mounted(&id), "a mount of {id} survived drover dev");
    }
}

#[test]
fn a_replica_that_needed_sigkill_is_flagged_and_init_stops_it_on_sigterm() {
    if !require_root("a_replica_that_needed_sigkill_is_flagged_and_init_stops_it_on_sigterm") {
        return;
    }
    let images = images();
    let c = Cluster::start("e2e-pid1");
    // sleep as PID 1 ignores SIGTERM; under `init: true` it is PID 2 and does not.
    for (name, init) in [("stubborn", false), ("polite", true)] {
        let spec = c.spec(
            name,
            &format!(
                "name: {name}\nimage: oci:{}/toolbox:latest\ncommand: [/bin/sleep, '1000']\n\
                 stop_grace_period: 3s\ninit: {init}\n",
                images.display()
            ),
        );
        let out = c.drover(&["job", "run", spec.to_str().unwrap()]);
        assert!(out.ok(), "{}{}", out.stdout, out.stderr);
        let began = Instant::now();
        let out = c.drover(&["job", "stop", name]);
        assert!(out.ok(), "{}{}", out.stdout, out.stderr);
        let took = began.elapsed();
        let status = c.json(&["job", "status", name]);
        let killed = status["allocations"][0]["killed_at_grace"] == true;
        let human = c.drover(&["job", "status", name]).stdout;
        if init {
            assert!(
                took < Duration::from_secs(3),
                "{name} took {took:?} to stop"
            );
            assert!(!killed, "{status}");
            assert!(!human.contains("warning:"), "{human}");
        } else {
            assert!(took >= Duration::from_secs(3), "{name} stopped in {took:?}");
            assert!(killed, "{status}");
            assert!(
                human.contains("warning:   stubborn-0 needed SIGKILL to stop"),
                "{human}"
            );
        }
    }
}

#[test]
fn doctor_passes_here_and_a_missing_requirement_stops_the_agent_with_what_to_do() {
    if !require_root("doctor_passes_here_and_a_missing_requirement_stops_the_agent_with_what_to_do")
    {
        return;
    }
    // This machine runs every other test: nothing it needs may fail. The
    // ports are free ones, since other tests may hold the defaults.
    let (p1, p2) = {
        let a = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let b = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        (
            a.local_addr().unwrap().to_string(),
            b.local_addr().unwrap().to_string(),
        )
    };
    let out = run_drover(
        "127.0.0.1:1",
        &["doctor", "--port", &p1, "--port", &p2, "-o", "json"],
    );
    let report: serde_json::Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("doctor -o json: {e}: {}{}", out.stdout, out.stderr));
    let checks = report["checks"].as_array().expect("checks");
    let names: Vec<&str> = checks.iter().filter_map(|c| c["name"].as_str()).collect();
    for needed in [
        "root",
        "kernel",
        "clone3",
        "pidfd",
        "openat2",
        "namespaces",
        "overlayfs",
        "cgroups",
        "seccomp",
        "netfilter",
        "ip_forward",
    ] {
        assert!(names.contains(&needed), "doctor checks {needed}: {names:?}");
    }
    let failed: Vec<&serde_json::Value> = checks.iter().filter(|c| c["level"] == "fail").collect();
    assert!(failed.is_empty(), "failed here: {failed:?}");
    assert!(out.ok(), "exit code 0 without a failure: {}", out.stderr);

    // A held port fails, exit code 1, with how to find who holds it.
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let held_addr = held.local_addr().unwrap().to_string();
    let out = run_drover(
        "127.0.0.1:1",
        &["doctor", "--role", "scheduler", "--port", &held_addr],
    );
    assert!(!out.ok(), "a held port fails doctor");
    assert!(
        out.stdout.contains("in use") && out.stdout.contains("ss -ltnp"),
        "{}",
        out.stdout
    );

    // A cgroup hierarchy that is not there: doctor names it and says
    // what to do, and the agent refuses to start with the same words
    // instead of failing at its first container.
    let out = run_drover(
        "127.0.0.1:1",
        &[
            "doctor",
            "--role",
            "agent",
            "--port",
            &p1,
            "--cgroup-root",
            "/nonexistent/cgroup",
        ],
    );
    assert!(!out.ok());
    assert!(
        out.stdout.contains("fail  cgroups")
            && out.stdout.contains("/nonexistent/cgroup does not exist"),
        "{}",
        out.stdout
    );
    let state = tempfile::tempdir().unwrap();
    let agent = std::process::Command::new(bin_dir().join("drover-agent"))
        .args(["run", "--name", "preflight", "--scheduler", "127.0.0.1:1"])
        .arg("--state-dir")
        .arg(state.path())
        .args(["--cgroup-root", "/nonexistent/cgroup"])
        .output()
        .expect("run drover-agent");
    let stderr = String::from_utf8_lossy(&agent.stderr);
    assert!(!agent.status.success(), "the agent refused to start");
    assert!(
        stderr.contains("drover-agent cannot run on this machine")
            && stderr.contains("cgroups: /nonexistent/cgroup does not exist")
            && stderr.contains("mount cgroup2"),
        "{stderr}"
    );
    drop(held);
}

#[test]
fn the_systemd_units_verify_and_the_agents_unit_leaves_containers_to_their_monitors() {
    let Some(analyze) = ["/usr/bin/systemd-analyze", "/bin/systemd-analyze"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
    else {
        skip_or_fail(
            "the_systemd_units_verify_and_the_agents_unit_leaves_containers_to_their_monitors",
            "systemd-analyze is not installed (Debian's systemd)",
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let units = repo_root().join("examples/systemd");
    for (unit, env) in [
        ("drover-scheduler.service", "scheduler.env"),
        ("drover-agent.service", "agent.env"),
    ] {
        let text = std::fs::read_to_string(units.join(unit)).unwrap();
        // The units run the installed binaries: here, the ones just built.
        let text = text
            .replace("/usr/local/bin", &bin_dir().display().to_string())
            .replace(
                &format!("/etc/drover/{env}"),
                &units.join(env).display().to_string(),
            );
        if unit == "drover-agent.service" {
            assert!(
                text.contains("\nKillMode=process\n"),
                "stopping the agent must leave its containers' monitors"
            );
        }
        let path = dir.path().join(unit);
        std::fs::write(&path, text).unwrap();
        let out = std::process::Command::new(analyze)
            .arg("verify")
            .arg(&path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stderr.trim().is_empty(),
            "systemd-analyze verify {unit}: {stderr}"
        );
    }
}
