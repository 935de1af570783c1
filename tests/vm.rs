//! A cluster of real virtual machines (`examples/vm-cluster/vm-cluster.sh`):
//! three scheduler replicas and two agents, each a qemu VM with its own
//! kernel, cgroup v2 tree, network stack and disk, on a host-only bridge,
//! pulling images from a registry on the host. The very script users run.
//!
//! Faults here are the real thing: a VM's power is cut (SIGKILL to qemu:
//! no shutdown, no TCP reset, the disk as the last fsync left it) and it is
//! booted again from the same disk.

use drover_e2e::vmcluster::Vms;
use drover_e2e::{require_root, wait_for};
use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn web_spec(dir: &std::path::Path, registry: &str, version: &str) -> std::path::PathBuf {
    let p = dir.join(format!("web-{version}.yaml"));
    std::fs::write(
        &p,
        format!(
            "name: web\nreplicas: 2\nimage: {registry}/demo-web:{version}\nenv: {{PORT: '8080'}}\n\
             resources: {{cpu: 0.1, memory: 32Mi}}\nstop_grace_period: 5s\n\
             health: {{http: {{path: /healthz, port: 8080}}, interval: 1s, timeout: 1s, failure_threshold: 3}}\n\
             update: {{max_surge: 1, max_unavailable: 0, min_healthy_time: 2s, healthy_deadline: 60s}}\n\
             ports: [{{name: http, container: 8080}}]\nexpose: {{port: 18080, target: http}}\n"
        ),
    )
    .unwrap();
    p
}

/// One HTTP/1.0 GET through the mesh at `node_ip:18080`: the body, or why not.
fn get(node_ip: &str) -> Result<String, String> {
    let mut s = TcpStream::connect_timeout(
        &format!("{node_ip}:18080").parse().unwrap(),
        Duration::from_secs(5),
    )
    .map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    s.write_all(b"GET / HTTP/1.0\r\nHost: web\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut out = String::new();
    s.read_to_string(&mut out).map_err(|e| e.to_string())?;
    if !out.starts_with("HTTP/1.") || !out.contains(" 200 ") {
        return Err(format!("answer: {out:.80}"));
    }
    Ok(out.split("\r\n\r\n").nth(1).unwrap_or_default().to_string())
}

/// A write that must reach a leader: a changed spec of a job with no
/// replicas. Retried until it succeeds; returns how long that took.
fn first_write(vms: &Vms, dir: &std::path::Path, trial: &str, since: Instant) -> Duration {
    let p = dir.join(format!("probe-{trial}.yaml"));
    std::fs::write(
        &p,
        format!(
            "name: probe\nreplicas: 0\nimage: {}/toolbox:latest\ncommand: [/bin/sleep, '1000']\n\
             env: {{TRIAL: '{trial}'}}\nresources: {{cpu: 10m, memory: 16Mi}}\n",
            vms.registry
        ),
    )
    .unwrap();
    wait_for("a write to succeed", Duration::from_secs(60), || {
        vms.drover(&["job", "run", "-d", p.to_str().unwrap()])
            .ok()
            .then_some(())
    });
    since.elapsed()
}

/// Waits until all three replicas answer and have applied the same index.
fn wait_for_same_applied(vms: &Vms) {
    wait_for(
        "every replica to catch up",
        Duration::from_secs(120),
        || {
            let out = vms.drover(&["cluster", "members", "-o", "json"]);
            let v: Value = serde_json::from_str(&out.stdout).ok()?;
            let applied: Vec<u64> = v["members"]
                .as_array()?
                .iter()
                .filter_map(|m| m["applied_index"].as_u64())
                .collect();
            (applied.len() == 3 && applied.iter().min() == applied.iter().max()).then_some(())
        },
    );
}

/// Brings the cluster up, checks its guests run cgroup v2 alone (whatever
/// the host runs), and runs `web` v1 from the host's registry: one replica
/// on each agent VM.
fn up_with_web(
    name: &'static str,
    net: &'static str,
    schedulers: u32,
    dir: &std::path::Path,
) -> Vms {
    let (vms, up) = Vms::up_with(name, net, schedulers, 2);
    eprintln!("vm-cluster up: {:.1} s", up.as_secs_f64());
    let guest = vms.must(&["exec", "a1", "grep cgroup /proc/mounts; uname -r"]);
    assert!(
        guest.stdout.starts_with("cgroup2 /sys/fs/cgroup cgroup2 "),
        "the agent VM runs cgroup v2 alone: {}",
        guest.stdout
    );
    let v1 = web_spec(dir, &vms.registry, "v1");
    let spread = vec![vms.agent(1), vms.agent(2)];
    let out = vms.drover(&["job", "run", "--timeout", "180s", v1.to_str().unwrap()]);
    assert!(out.ok(), "job run v1: {}{}", out.stdout, out.stderr);
    if vms.running_on("web") != spread {
        // Under emulation a debug agent just booted may miss its heartbeats
        // for a moment, and its replica is placed again on the other. Say
        // so, and place the job once more on two ready agents: a scheduler
        // that does not spread fails this second time too.
        let why = vms.drover(&["alloc", "ls"]);
        eprintln!("not spread at the first try:\n{}", why.stdout);
        let out = vms.drover(&["job", "stop", "web", "--purge"]);
        assert!(out.ok(), "job stop: {}{}", out.stdout, out.stderr);
        wait_for("both agents ready", Duration::from_secs(60), || {
            let ready = |n: u32| vms.node_status(&vms.agent(n)) == "ready";
            let gone = !vms
                .list(&["job", "ls", "-o", "json"])
                .iter()
                .any(|j| j["name"] == "web");
            (ready(1) && ready(2) && gone).then_some(())
        });
        let out = vms.drover(&["job", "run", "--timeout", "180s", v1.to_str().unwrap()]);
        assert!(out.ok(), "job run v1 again: {}{}", out.stdout, out.stderr);
    }
    assert_eq!(
        vms.running_on("web"),
        spread,
        "one replica on each agent VM"
    );
    // A 512 MiB VM boots with room for 4,096 tracked connections and 1,024
    // open files: the mesh at 50 requests/s filled the first in 26 s and
    // the agent hit the second at 250/s. The agent raises both.
    let limits = vms.must(&[
        "exec",
        "a1",
        "cat /proc/sys/net/netfilter/nf_conntrack_max; \
         grep 'open files' /proc/$(pidof drover-agent | cut -d' ' -f1)/limits",
    ]);
    let mut lines = limits.stdout.lines();
    let conntrack: u64 = lines
        .next()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or(0);
    assert!(
        conntrack >= 131_072,
        "the agent raised conntrack: {}",
        limits.stdout
    );
    let files: u64 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(3)?.parse().ok())
        .unwrap_or(0);
    assert!(
        files >= 65_536,
        "the agent raised its open files: {}",
        limits.stdout
    );
    vms
}

/// Powers off the leader's VM and times the first write that succeeds
/// after it; returns the leader's number.
fn power_off_leader(vms: &Vms, dir: &std::path::Path, trial: &str) -> u64 {
    let leader = vms.leader();
    let off = Instant::now();
    vms.must(&["kill", &format!("s{leader}")]);
    let took = first_write(vms, dir, trial, off);
    eprintln!(
        "leader VM s{leader} powered off: first write after {:.2} s",
        took.as_secs_f64()
    );
    assert!(
        took < Duration::from_secs(10),
        "writes resume after a leader's power-off: {took:?}"
    );
    leader
}

/// Powers off agent VM a2 and waits until both replicas of `web` run on a1.
fn power_off_a2(vms: &Vms) {
    let off = Instant::now();
    vms.must(&["kill", "a2"]);
    wait_for("both replicas on a1", Duration::from_secs(120), || {
        (vms.running_on("web") == vec![vms.agent(1); 2]).then_some(())
    });
    eprintln!(
        "agent VM a2 powered off: its replica running elsewhere after {:.1} s",
        off.elapsed().as_secs_f64()
    );
}

/// Up in one command; a job spread over both agent VMs; a rolling update
/// under load with no failed request; the leader's VM powered off (writes
/// resume), an agent's VM powered off (its replicas move), both booted
/// again from their disks; `down` leaves nothing behind.
///
/// The long fault run: about two and a half minutes under software
/// emulation, with release binaries in the VMs (debug ones cannot hold
/// their leases through the rolling update there). Opt in with
/// `DROVER_VM_TESTS=1 tests/run.sh` (or `DROVER_BIN=target/release cargo
/// test -p drover-e2e --test vm -- --ignored`); CI runs the smoke test below.
#[test]
#[ignore = "the long VM fault run (DROVER_VM_TESTS=1 tests/run.sh); CI runs vm_smoke"]
fn a_vm_cluster_keeps_its_work_through_power_offs_and_reboots() {
    if !require_root("a_vm_cluster_keeps_its_work_through_power_offs_and_reboots") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let vms = up_with_web("dvmt", "10.79.1", 3, dir.path());
    let (a1, a2) = (vms.agent(1), vms.agent(2));
    let net = vms.net;

    // A rolling update under load through the mesh on both agents: no
    // request fails.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let first_failure = Arc::new(std::sync::Mutex::new(None::<String>));
    let load: Vec<_> = ["21", "22"]
        .iter()
        .map(|host| {
            let ip = format!("{net}.{host}");
            let (stop, ok, failed, first_failure) = (
                stop.clone(),
                ok.clone(),
                failed.clone(),
                first_failure.clone(),
            );
            std::thread::spawn(move || {
                let mut v2 = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    match get(&ip) {
                        Ok(body) => {
                            ok.fetch_add(1, Ordering::Relaxed);
                            v2 += u64::from(body.contains("v2"));
                        }
                        Err(e) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            first_failure.lock().unwrap().get_or_insert(e);
                        }
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                v2
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    let v2 = web_spec(dir.path(), &vms.registry, "v2");
    let out = vms.drover(&["job", "run", "--timeout", "300s", v2.to_str().unwrap()]);
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    let answered_v2: u64 = load.into_iter().map(|t| t.join().unwrap()).sum();
    assert!(out.ok(), "job run v2: {}{}", out.stdout, out.stderr);
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!("rolling update in VMs: {ok} requests answered, {failed} failed");
    assert_eq!(
        failed,
        0,
        "no request fails during the rollout (first: {:?})",
        first_failure.lock().unwrap()
    );
    assert!(ok > 50, "the load ran: {ok} requests");
    assert!(answered_v2 > 0, "v2 answered after the rollout");

    // A follower replica's VM falls off the network (frames dropped on
    // the bridge, no resets): no container stops, writes go on, and it
    // catches up when healed.
    let leader = vms.leader();
    let follower = (1..=3).find(|i| *i != leader).unwrap();
    let before = vms.allocs("web");
    vms.must(&["partition", &format!("s{follower}")]);
    first_write(&vms, dir.path(), "partition", Instant::now());
    std::thread::sleep(Duration::from_secs(8));
    assert_eq!(
        vms.allocs("web"),
        before,
        "a silent replica costs no container"
    );
    vms.must(&["heal", &format!("s{follower}")]);
    wait_for_same_applied(&vms);

    // The leader's VM loses power: writes resume on the other two.
    let leader = power_off_leader(&vms, dir.path(), "leader-off");
    // Booted again from its disk, it rejoins with its log.
    vms.must(&["start", &format!("s{leader}")]);
    wait_for_same_applied(&vms);

    // An agent's VM loses power: its replica runs on the other agent.
    power_off_a2(&vms);
    assert_eq!(vms.node_status(&a2), "down");

    // Booted again from its disk, the agent comes back ready and takes
    // work; the containers it had died with the VM and were replaced.
    vms.must(&["start", "a2"]);
    wait_for("a2 ready again", Duration::from_secs(120), || {
        (vms.node_status(&a2) == "ready").then_some(())
    });
    let out = vms.drover(&["job", "scale", "web", "4"]);
    assert!(out.ok(), "scale: {}{}", out.stdout, out.stderr);
    wait_for(
        "4 replicas over both agents",
        Duration::from_secs(180),
        || {
            let on = vms.running_on("web");
            (on.len() == 4 && on.contains(&a2)).then_some(())
        },
    );

    // A hard reset of a1 (power cycle on the same disk): its replicas are
    // replaced and the node comes back.
    vms.must(&["reboot", "a1"]);
    wait_for(
        "a1 ready after its reboot",
        Duration::from_secs(180),
        || (vms.node_status(&a1) == "ready").then_some(()),
    );
    wait_for("4 replicas running again", Duration::from_secs(180), || {
        (vms.running_on("web").len() == 4).then_some(())
    });
    let body = wait_for("the mesh answers on a1", Duration::from_secs(60), || {
        get(&format!("{net}.21")).ok()
    });
    assert!(body.contains("demo-web v2"), "{body}");

    // down removes every VM, tap, bridge, table and file it made.
    vms.down_leaves_nothing();
}

/// The short version CI runs (about a minute and a half under software
/// emulation): up in one command with cgroup v2 in the guests, a job
/// spread over both agent VMs from the host's registry, an agent's VM
/// powered off (the replica moves), and `down` leaves nothing.
///
/// It runs one scheduler VM, not three: CI runs debug binaries, and five
/// debug VMs emulated on two cores starve each other until agents miss
/// their leases (CI failed so twice). Leader power-offs run in the long
/// test above, with release binaries.
#[test]
fn vm_smoke() {
    if !require_root("vm_smoke") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let vms = up_with_web("dvms", "10.79.2", 1, dir.path());
    let body = get(&format!("{}.22", vms.net)).expect("the mesh answers on a2");
    assert!(body.contains("demo-web v1"), "{body}");
    power_off_a2(&vms);
    assert_eq!(vms.node_status(&vms.agent(2)), "down");
    vms.down_leaves_nothing();
}
