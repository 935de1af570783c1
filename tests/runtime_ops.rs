//! Operating containers, end to end: an allocation killed for exceeding its
//! memory limit ends with reason `oom-killed`, a running one shows its cpu
//! and memory use in `drover alloc status`, and `drover logs` reads a log
//! that the agent has rotated by size, with stdout and stderr apart, times,
//! and from a time on; `drover exec` runs a command inside a
//! running allocation with stdin, stdout, stderr and the exit code passed
//! through.

use drover_e2e::*;
use std::time::Duration;

/// Submits the job `yaml` (with `{images}` for the example images) and
/// returns the id of its first allocation.
fn run_job(c: &Cluster, name: &str, yaml: &str) -> String {
    let spec = c.spec(
        name,
        &yaml.replace("{images}", &images().display().to_string()),
    );
    let out = c.drover(&["job", "run", "--detach", spec.to_str().unwrap()]);
    assert!(out.ok(), "{}", out.stderr);
    wait_for("an allocation", Duration::from_secs(10), || {
        let v = c.json(&["alloc", "ls", "--job", name]);
        Some(v.as_array()?.first()?["id"].as_str()?.to_string())
    })
}

/// A busy loop under a half-core quota that first prints 3000 lines.
const CHATTY: &str = "name: chatty\nimage: oci:{images}/toolbox:latest\n\
    command: [/bin/sh, -c, 'seq 1 3000; while true; do :; done']\n\
    resources: {cpu: 0.5, memory: 32Mi}\nstop_grace_period: 1s\n";

fn running(c: &Cluster, id: &str) -> serde_json::Value {
    wait_for("it to run", Duration::from_secs(20), || {
        let st = c.json(&["alloc", "status", id]);
        (st["state"] == "running").then_some(st)
    })
}

#[test]
fn a_replica_over_its_memory_limit_ends_oom_killed() {
    if !require_root("a_replica_over_its_memory_limit_ends_oom_killed") {
        return;
    }
    let c = Cluster::start("e2e-oom");
    let hog_id = run_job(
        &c,
        "hog",
        "name: hog\nimage: oci:{images}/toolbox:latest\n\
         command: [/bin/sh, -c, 'x=$(head -c 100000000 /dev/zero | tr \"\\\\0\" a)']\n\
         resources: {memory: 16Mi}\nrestart: never\n",
    );
    let st = wait_for("the hog to be killed", Duration::from_secs(20), || {
        let st = c.json(&["alloc", "status", &hog_id]);
        (st["state"] == "failed").then_some(st)
    });
    assert_eq!(st["reason"], "oom-killed", "{st}");
    assert_eq!(st["exit_code"], 137, "{st}");
}

#[test]
fn a_running_replica_shows_its_cpu_and_memory_use() {
    if !require_root("a_running_replica_shows_its_cpu_and_memory_use") {
        return;
    }
    let c = Cluster::start("e2e-usage");
    let chatty_id = run_job(&c, "chatty", CHATTY);
    let st = running(&c, &chatty_id);
    let usage = &st["usage"];
    let cpu = usage["cpu_millis"].as_u64().expect("cpu usage");
    assert!((100..=700).contains(&cpu), "{st}");
    assert!(usage["memory_bytes"].as_u64().unwrap() > 0, "{st}");
    assert_eq!(usage["memory_limit_bytes"], 32 << 20, "{st}");
    let text = c.drover(&["alloc", "status", &chatty_id]).stdout;
    assert!(
        text.contains("cpu:") && text.contains("memory:") && text.contains("of 32.0Mi"),
        "{text}"
    );
}

#[test]
fn logs_rotated_by_size_still_read_in_order_to_the_last_line() {
    if !require_root("logs_rotated_by_size_still_read_in_order_to_the_last_line") {
        return;
    }
    let mut c = Cluster::start("e2e-logs");
    // The same node, now with a small log limit.
    let mut agent = c.agent.take().unwrap();
    agent.signal("INT");
    agent.wait(Duration::from_secs(10)).expect("agent stops");
    c.start_agent_with(&["--log-max-size", "4Ki"]);
    let chatty_id = run_job(&c, "chatty", CHATTY);
    running(&c, &chatty_id);
    wait_for("all 3000 lines", Duration::from_secs(20), || {
        c.drover(&["logs", "--tail", "1", &chatty_id])
            .stdout
            .eq("3000\n")
            .then_some(())
    });
    // 3000 lines (about 130 KiB of records) through a 4 KiB log: rotated,
    // and still read in order up to the last line.
    let logs = c.agent_state_dir().join("logs");
    assert!(logs.join(format!("{chatty_id}.log.1")).exists());
    let out = c.drover(&["logs", &chatty_id]).stdout;
    assert!(out.ends_with("2999\n3000\n"), "{out}");
    let lines: Vec<u32> = out.lines().map(|l| l.parse().unwrap()).collect();
    assert!(lines.len() > 100 && lines.len() < 3000, "{}", lines.len());
    assert!(lines.windows(2).all(|w| w[1] == w[0] + 1));
    assert_eq!(
        c.drover(&["logs", "--tail", "1", &chatty_id]).stdout,
        "3000\n"
    );
}

#[test]
fn logs_keep_stdout_and_stderr_apart_with_times_and_from_a_time_on() {
    if !require_root("logs_keep_stdout_and_stderr_apart_with_times_and_from_a_time_on") {
        return;
    }
    let c = Cluster::start("e2e-streams");
    let id = run_job(
        &c,
        "streams",
        "name: streams\nimage: oci:{images}/toolbox:latest\n\
         command: [/bin/sh, -c, 'echo early out; echo early err >&2; sleep 2; \
         echo late out; echo late err >&2; printf \"no newline\"; sleep 1000']\n\
         resources: {cpu: 0.05, memory: 16Mi}\nstop_grace_period: 1s\n",
    );
    running(&c, &id);
    let out = wait_for("every line", Duration::from_secs(20), || {
        let out = c.drover(&["logs", &id]);
        out.stdout.contains("no newline").then_some(out)
    });
    // The container's stdout on ours, its stderr on ours; an unfinished
    // line ends the output.
    assert_eq!(
        out.stdout, "early out\nlate out\nno newline\n",
        "{}",
        out.stderr
    );
    assert_eq!(out.stderr, "early err\nlate err\n");
    // -t: each line with the time its node read it.
    let timed = c.drover(&["logs", "-t", &id]).stderr;
    let times: Vec<&str> = timed
        .lines()
        .map(|l| l.split(' ').next().unwrap())
        .collect();
    assert_eq!(times.len(), 2, "{timed}");
    for t in &times {
        assert!(
            t.ends_with('Z') && t.contains('T') && t.len() == 30,
            "{timed}"
        );
    }
    assert!(times[0] < times[1], "{timed}");
    // --since the time of "late out" (read before "late err", or with
    // it): only the late lines; --since 1h: all.
    let timed = c.drover(&["logs", "-t", &id]).stdout;
    let late_at = timed
        .lines()
        .find_map(|l| l.strip_suffix(" late out"))
        .unwrap_or_else(|| panic!("{timed}"));
    let late = c.drover(&["logs", "--since", late_at, &id]);
    assert_eq!(late.stdout, "late out\nno newline\n", "{}", late.stderr);
    assert_eq!(late.stderr, "late err\n");
    assert_eq!(
        c.drover(&["logs", "--since", "1h", &id]).stderr,
        "early err\nlate err\n"
    );
    let bad = c.drover(&["logs", "--since", "yesterday", &id]);
    assert!(
        !bad.ok() && bad.stderr.contains("--since"),
        "{}",
        bad.stderr
    );
}

#[test]
fn exec_runs_a_command_inside_a_replica_with_its_stdio_and_exit_code() {
    if !require_root("exec_runs_a_command_inside_a_replica_with_its_stdio_and_exit_code") {
        return;
    }
    let c = Cluster::start("e2e-exec");
    let chatty_id = run_job(&c, "chatty", CHATTY);
    running(&c, &chatty_id);
    let ended_id = run_job(
        &c,
        "ended",
        "name: ended\nimage: oci:{images}/toolbox:latest\ncommand: [/bin/true]\nrestart: never\n",
    );
    wait_for("it to end", Duration::from_secs(20), || {
        let st = c.json(&["alloc", "status", &ended_id]);
        (st["state"] == "stopped").then_some(())
    });
    // drover exec: inside the replica (its hostname, its pid namespace, its
    // seccomp filter), stdin in, stdout and stderr out, exit code through.
    let mut exec = drover_e2e::drover_command(&c.addr)
        .args([
            "exec",
            "-e",
            "GREETING=hi",
            &chatty_id[..8],
            "--",
            "/bin/sh",
            "-c",
        ])
        .arg("hostname; echo $GREETING $$; cat; unshare -U true; echo to-stderr >&2; exit 4")
        .env("DROVER_ADDR", &c.addr)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut exec.stdin.take().unwrap(), b"from-stdin\n").unwrap();
    let out = exec.wait_with_output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(4), "{stdout}{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "chatty-0", "{stdout}");
    let pid: u32 = lines[1].strip_prefix("hi ").unwrap().parse().unwrap();
    assert!(pid > 1 && pid < 100, "{stdout}");
    assert_eq!(lines[2], "from-stdin");
    assert!(stderr.contains("Operation not permitted"), "{stderr}");
    assert!(stderr.contains("to-stderr"), "{stderr}");
    // Not running: a clear error.
    let out = c.drover(&["exec", &ended_id, "--", "true"]);
    assert!(!out.ok());
    assert!(out.stderr.contains("not running"), "{}", out.stderr);
    assert!(c.drover(&["job", "stop", "chatty"]).ok());
}

/// Host volumes: a job that mounts one is placed only on a node whose
/// agent offers it (read-only offers take read-only mounts only), and sees
/// the host directory there, read-only as asked; a tmpfs of its own with
/// its size; and a replica that writes more than `resources.disk` to its
/// root filesystem is stopped with the reason.
#[test]
fn volumes_tmpfs_and_the_disk_limit() {
    if !require_root("volumes_tmpfs_and_the_disk_limit") {
        return;
    }
    let mut c = Cluster::start("e2e-vol");
    let reader = "name: reader\nimage: oci:{images}/toolbox:latest\n\
        command: [/bin/sh, -c, 'cat /data/hello; touch /data/new 2>/dev/null || echo read-only; \
        echo scratch > /scratch/f && cat /scratch/f; grep \" /scratch \" /proc/mounts; exec sleep 3600']\n\
        volumes: [{name: data, path: /data, read_only: true}]\n\
        tmpfs: [{path: /scratch, size: 1Mi}]\n\
        resources: {cpu: 10m, memory: 16Mi}\nstop_grace_period: 1s\n";
    let spec = c.spec(
        "reader",
        &reader.replace("{images}", &images().display().to_string()),
    );
    assert!(c
        .drover(&["job", "run", "--detach", spec.to_str().unwrap()])
        .ok());
    wait_for("the pending reason", Duration::from_secs(10), || {
        let st = c.json(&["job", "status", "reader"]);
        let reason = st["pending_reason"].as_str()?.to_string();
        reason
            .contains("no node has host volume \"data\"")
            .then_some(())
    });

    // The agent comes back offering the volume, read-only.
    let vol = c.dir.path().join("vol");
    std::fs::create_dir_all(&vol).unwrap();
    std::fs::write(vol.join("hello"), "from the host\n").unwrap();
    let mut agent = c.agent.take().unwrap();
    agent.signal("TERM");
    assert!(agent.wait(Duration::from_secs(10)).is_some());
    let offer = format!("data={}:ro", vol.display());
    c.start_agent_with(&["--volume", &offer]);
    let id = wait_for("reader to run", Duration::from_secs(30), || {
        let v = c.json(&["alloc", "ls", "--job", "reader"]);
        let a = v
            .as_array()?
            .iter()
            .find(|a| a["state"] == "running")?
            .clone();
        Some(a["id"].as_str()?.to_string())
    });
    let logs = wait_for("its output", Duration::from_secs(10), || {
        let out = c.drover(&["logs", &id]);
        out.stdout.contains("/scratch").then_some(out.stdout)
    });
    assert!(
        logs.starts_with("from the host\nread-only\nscratch\n"),
        "{logs}"
    );
    assert!(
        logs.contains("tmpfs /scratch tmpfs rw,nosuid,nodev") && logs.contains("size=1024k"),
        "{logs}"
    );
    assert!(!vol.join("new").exists());
    let node = c.json(&["node", "status", "e2e-vol"]);
    assert_eq!(node["volumes"][0]["name"], "data", "{node}");
    assert_eq!(node["volumes"][0]["read_only"], true, "{node}");

    // A writable mount of a volume offered read-only goes nowhere.
    let writer = reader
        .replace("name: reader", "name: writer")
        .replace(", read_only: true", "");
    let spec = c.spec(
        "writer",
        &writer.replace("{images}", &images().display().to_string()),
    );
    assert!(c
        .drover(&["job", "run", "--detach", spec.to_str().unwrap()])
        .ok());
    wait_for(
        "the writer's pending reason",
        Duration::from_secs(10),
        || {
            let st = c.json(&["job", "status", "writer"]);
            st["pending_reason"]
                .as_str()?
                .contains("no node has writable host volume \"data\"")
                .then_some(())
        },
    );

    // Over its disk limit: stopped, with the reason.
    let filler = run_job(
        &c,
        "filler",
        "name: filler\nimage: oci:{images}/toolbox:latest\n\
         command: [/bin/sh, -c, 'dd if=/dev/zero of=/big bs=1M count=4; exec sleep 3600']\n\
         resources: {cpu: 10m, memory: 16Mi, disk: 2Mi}\nrestart: never\nstop_grace_period: 1s\n",
    );
    let st = wait_for("the filler to be stopped", Duration::from_secs(30), || {
        let st = c.json(&["alloc", "status", &filler]);
        (st["state"] == "failed").then_some(st)
    });
    let reason = st["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("ephemeral disk limit: wrote ")
            && reason.ends_with("to its root filesystem, over resources.disk 2Mi"),
        "{st}"
    );
}

/// Every file under `dir` on its filesystem (mounted ones, such as a
/// bundle's secrets tmpfs or a container's root, are not walked) that holds
/// `needle`.
fn files_holding(dir: &std::path::Path, needle: &[u8]) -> Vec<std::path::PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata(dir).unwrap().dev();
    let mut found = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(m) = e.path().symlink_metadata() else {
                continue;
            };
            if m.dev() != dev {
                continue;
            }
            if m.is_dir() {
                todo.push(e.path());
            } else if m.is_file() {
                let data = std::fs::read(e.path()).unwrap_or_default();
                if data.windows(needle.len()).any(|w| w == needle) {
                    found.push(e.path());
                }
            }
        }
    }
    found
}

/// Secrets: a replica reads its secret at /run/secrets/NAME (on a memory
/// filesystem, with the mode asked) and its config where asked; updating
/// the secret restarts the job onto the new value; a job naming a secret
/// that does not exist is refused, one in use cannot be deleted; and no
/// byte of any value is in any status, history, listing, log or file the
/// scheduler or the agent keeps on disk (the Raft log holds it sealed).
#[test]
fn secrets_reach_their_replicas_and_nothing_else() {
    if !require_root("secrets_reach_their_replicas_and_nothing_else") {
        return;
    }
    let c = Cluster::start("e2e-secret");
    let random = || {
        let mut b = [0u8; 16];
        std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom").unwrap(), &mut b)
            .unwrap();
        b.iter().map(|x| format!("{x:02x}")).collect::<String>()
    };
    let first = format!("first-{}", random());
    let second = format!("second-{}", random());
    // The user's own file, outside everything Drover keeps.
    let input = tempfile::tempdir().unwrap();
    let value = input.path().join("value");
    std::fs::write(&value, &first).unwrap();
    let mut outputs = Vec::new();
    let mut ok = |args: &[&str]| {
        let out = c.drover(args);
        assert!(out.ok(), "{args:?}: {}{}", out.stdout, out.stderr);
        outputs.push(format!("{args:?}\n{}{}", out.stdout, out.stderr));
        out.stdout
    };
    ok(&[
        "secret",
        "create",
        "db",
        "--from-file",
        value.to_str().unwrap(),
    ]);
    let config = c.dir.path().join("app.conf");
    std::fs::write(&config, "setting=1\n").unwrap();
    ok(&[
        "configmap",
        "create",
        "app",
        "--from-file",
        config.to_str().unwrap(),
    ]);

    // A job naming a secret that does not exist is refused.
    let missing = c.spec(
        "missing",
        &format!(
            "name: missing\nimage: oci:{}/toolbox:latest\nsecrets: [{{name: nope}}]\n",
            images().display()
        ),
    );
    let out = c.drover(&["job", "run", "--detach", missing.to_str().unwrap()]);
    assert!(!out.ok());
    assert!(
        out.stderr.contains("secrets[0].name: no secret \"nope\""),
        "{}",
        out.stderr
    );

    let reader = run_job(
        &c,
        "reader",
        "name: reader\nimage: oci:{images}/toolbox:latest\ncommand: [/bin/sleep, '3600']\n\
         secrets: [{name: db, mode: \"0400\"}]\nconfigs: [{name: app, path: /etc/app.conf}]\n\
         resources: {cpu: 10m, memory: 16Mi}\nstop_grace_period: 1s\n",
    );
    running(&c, &reader);
    let exec = |id: &str, script: &str| {
        let out = c.drover(&["exec", id, "--", "/bin/sh", "-c", script]);
        assert!(out.ok(), "{script}: {}{}", out.stdout, out.stderr);
        out.stdout
    };
    assert_eq!(exec(&reader, "cat /run/secrets/db"), first);
    assert_eq!(exec(&reader, "stat -c %a /run/secrets/db"), "400\n");
    assert_eq!(exec(&reader, "cat /etc/app.conf"), "setting=1\n");
    let mounts = exec(
        &reader,
        "grep -E ' /run/secrets/db | /etc/app.conf ' /proc/mounts",
    );
    assert!(mounts.contains("/run/secrets/db tmpfs ro,"), "{mounts}");
    assert!(
        mounts.contains("/etc/app.conf ") && mounts.contains(" ro,"),
        "{mounts}"
    );

    // In use: not deleted.
    let out = c.drover(&["secret", "rm", "db"]);
    assert!(!out.ok());
    assert!(
        out.stderr.contains("mounted by job reader"),
        "{}",
        out.stderr
    );

    // On disk, while it runs: nowhere (the bundle's secrets are on a tmpfs).
    let held = files_holding(c.dir.path(), first.as_bytes());
    assert!(held.is_empty(), "the secret is on disk in {held:?}");

    // A new value: the job restarts onto it.
    std::fs::write(&value, &second).unwrap();
    let out = ok(&[
        "secret",
        "update",
        "db",
        "--from-file",
        value.to_str().unwrap(),
    ]);
    assert!(
        out.contains("restarting the jobs that mount it: reader"),
        "{out}"
    );
    let replaced = wait_for(
        "a replica with the new value",
        Duration::from_secs(30),
        || {
            let v = c.json(&["alloc", "ls", "--job", "reader"]);
            let a = v
                .as_array()?
                .iter()
                .find(|a| a["state"] == "running" && a["id"] != reader.as_str())?
                .clone();
            Some(a["id"].as_str()?.to_string())
        },
    );
    assert_eq!(exec(&replaced, "cat /run/secrets/db"), second);

    // Everything a user or operator reads, and every file left on disk
    // once the job is gone: no value, old or new.
    ok(&["job", "status", "reader", "-o", "json"]);
    ok(&["job", "history", "reader"]);
    ok(&["alloc", "ls", "--job", "reader", "--all", "-o", "json"]);
    ok(&["alloc", "status", &replaced, "-o", "json"]);
    ok(&["secret", "ls", "-o", "json"]);
    ok(&["logs", "reader"]);
    ok(&["job", "stop", "reader", "--purge"]);
    // Purged once every replica ended.
    wait_for("the job gone", Duration::from_secs(30), || {
        (!c.drover(&["job", "status", "reader"]).ok()).then_some(())
    });
    ok(&["secret", "rm", "db"]);
    for v in [&first, &second] {
        for o in &outputs {
            assert!(!o.contains(v.as_str()), "a value in the output of {o}");
        }
        let held = files_holding(c.dir.path(), v.as_bytes());
        assert!(held.is_empty(), "a value on disk in {held:?}");
    }
    let logs = c.scheduler.as_ref().unwrap().output() + &c.agent.as_ref().unwrap().output();
    assert!(!logs.contains(&first) && !logs.contains(&second));
}
