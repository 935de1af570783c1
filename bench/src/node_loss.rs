//! `drover-bench node-loss`: a node is lost → how long until every one of its
//! replicas runs elsewhere, at default settings (1 s heartbeats, 5 s node
//! timeout). The benchmark starts its own scheduler and two agents on
//! loopback, next to this binary, and kills one agent per trial with SIGKILL.
//! What the killed agent leaves (its replicas still running under their
//! monitors, their mounts and cgroups, its bridge) is removed after each
//! trial the way an operator would, with `drover-agent cleanup`'s library;
//! the other daemons are stopped with SIGINT, which stops their containers.

use crate::stats::Samples;
use anyhow::{bail, Result};
use drover_ctl::client::{self, status};
use drover_ctl::cmd::job::new_request_id;
use drover_e2e::{free_port, Proc};
use drover_proto::pb;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Starts `bin` with `args`, its output in `log`; stopped with SIGINT when
/// dropped (an agent then stops its containers and removes its network).
fn spawn(bin: &Path, args: &[&str], log: PathBuf) -> Proc {
    let name = bin
        .file_name()
        .map_or("daemon".into(), |n| n.to_string_lossy());
    Proc::spawn(&name, Command::new(bin).args(args), log)
}

pub(crate) fn agent(bin: &Path, dir: &Path, name: &str, addr: &str) -> Result<Proc> {
    agent_with(bin, dir, name, addr, &[])
}

/// [`agent`], with more flags.
pub(crate) fn agent_with(
    bin: &Path,
    dir: &Path,
    name: &str,
    addr: &str,
    extra: &[&str],
) -> Result<Proc> {
    let state = dir.join(name);
    // The node's certificate, straight from the CA beside the scheduler
    // (what `--join` would fetch).
    let ca = drover_proto::pki::ca::Ca::load(&dir.join("scheduler/pki"))?;
    let node = drover_proto::pki::Identity::Node(name.into());
    let cred = ca.issue(&node, drover_proto::pki::ca::LEAF_VALIDITY)?;
    drover_agent::pki::install(&state, &ca.cert_pem, &cred)?;
    Ok(spawn(
        &bin.join("drover-agent"),
        &[
            "run",
            "--name",
            name,
            "--scheduler",
            addr,
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
            "--state-dir",
            state.to_str().expect("utf-8 path"),
        ]
        .into_iter()
        .chain(extra.iter().copied())
        .collect::<Vec<_>>(),
        dir.join(format!("{name}.log")),
    ))
}

/// A one-peer `drover-scheduler` process with its state in `dir/scheduler`;
/// it and its address.
pub(crate) fn scheduler(dir: &Path) -> Result<(Proc, String)> {
    scheduler_with(dir, &[])
}

/// A scheduler with `extra` flags.
pub(crate) fn scheduler_with(dir: &Path, extra: &[&str]) -> Result<(Proc, String)> {
    let addr = format!("127.0.0.1:{}", free_port());
    let data = dir.join("scheduler");
    let mut args = vec![
        "--id",
        "1",
        "--listen",
        &addr,
        "--data-dir",
        data.to_str().expect("utf-8 path"),
    ];
    args.extend_from_slice(extra);
    let p = spawn(
        &drover_e2e::bin_dir().join("drover-scheduler"),
        &args,
        dir.join("scheduler.log"),
    );
    Ok((p, addr))
}

/// The CLI's client to the [`scheduler`] in `dir`, with the admin
/// credential it made, once it answers.
pub(crate) async fn connect(dir: &Path, addr: &str) -> Result<crate::cluster::Client> {
    let pki = dir.join("scheduler/pki");
    let start = Instant::now();
    loop {
        if pki.join("admin.pem").exists() {
            client::use_pki_dir(&pki);
        }
        if let Ok(c) = client::connect(addr).await {
            if c.clone()
                .list_jobs(pb::ListJobsRequest { read: None })
                .await
                .is_ok()
            {
                return Ok(c);
            }
        }
        if start.elapsed() > Duration::from_secs(30) {
            bail!("the scheduler at {addr} did not answer within 30s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn node_loss(trials: usize, replicas: u32, image: &str) -> Result<i32> {
    let times = node_loss_report(trials, replicas, image).await?;
    println!();
    print!(
        "{}",
        drover_ctl::output::table(
            &["TRIALS", "REPLICAS", "MEDIAN_S", "MIN_S", "MAX_S"],
            &[vec![
                trials.to_string(),
                replicas.to_string(),
                format!("{:.2}", times.median().as_secs_f64()),
                format!("{:.2}", times.min().as_secs_f64()),
                format!("{:.2}", times.max().as_secs_f64()),
            ]]
        )
    );
    println!("(the defaults: heartbeat 1s, node timeout 4s; replicas move 4s + 3s of fencing after the last heartbeat)");
    Ok(0)
}

/// `trials` node losses: from the SIGKILL until the lost node's replicas run elsewhere.
pub async fn node_loss_report(trials: usize, replicas: u32, image: &str) -> Result<Samples> {
    let bin = drover_e2e::bin_dir();
    let dir = std::env::temp_dir().join(format!("drover-bench-node-loss-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let image = crate::cluster::resolve(image)?;
    let (sched, addr) = scheduler(&dir)?;
    let mut c = connect(&dir, &addr).await?;
    let a = agent(&bin, &dir, "bench-a", &addr)?;
    let mut times = Vec::new();
    for t in 0..trials {
        let mut b = agent(&bin, &dir, "bench-b", &addr)?;
        wait_nodes_ready(&mut c, &["bench-a", "bench-b"]).await?;
        let name = format!("bench-loss-{t}");
        let spec = drover_proto::spec::from_json(&format!(
            r#"{{"name":"{name}","replicas":{replicas},"image":"{image}","command":["/bin/sleep","3600"],
                "resources":{{"cpu":"10m","memory":"16Mi"}},"stop_grace_period":"1s"}}"#
        ))?;
        c.submit_job(pb::SubmitJobRequest {
            spec_json: spec.to_json(),
            request_id: new_request_id(),
        })
        .await
        .map_err(status)?;
        let on_b = wait_until(&mut c, &name, |allocs| {
            let running = allocs
                .iter()
                .filter(|a| {
                    a.typed_desired() == pb::Desired::Run
                        && a.typed_phase() == pb::AllocationPhase::Running
                })
                .count();
            let on_b = allocs
                .iter()
                .filter(|a| a.typed_desired() == pb::Desired::Run && a.node == "bench-b")
                .count();
            (running == replicas as usize).then_some(on_b)
        })
        .await?;
        if on_b == 0 {
            bail!("no replica was placed on bench-b");
        }
        // Lost: SIGKILL, and its containers live on under their monitors.
        let _ = b.child.kill();
        let _ = b.child.wait();
        let start = Instant::now();
        wait_until(&mut c, &name, |allocs| {
            let ok = allocs
                .iter()
                .filter(|a| {
                    a.typed_desired() == pb::Desired::Run
                        && a.typed_phase() == pb::AllocationPhase::Running
                        && a.node == "bench-a"
                })
                .count();
            (ok == replicas as usize).then_some(())
        })
        .await?;
        let took = start.elapsed();
        println!(
            "  trial {}: {on_b} replica(s) of the lost node running elsewhere after {:.2}s",
            t + 1,
            took.as_secs_f64()
        );
        times.push(took);
        c.stop_job(pb::StopJobRequest {
            name,
            request_id: new_request_id(),
            purge: true,
        })
        .await
        .map_err(status)?;
        remove_leftovers(&dir.join("bench-b"))?;
    }
    // Stopped first: running, they would write into what is being removed.
    drop(a);
    drop(sched);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(Samples {
        name: "node loss",
        durations: times,
    })
}

/// Removes what the killed agent on `state_dir` left: its replicas (still
/// running under their monitors), their mounts and cgroups, its bridge.
fn remove_leftovers(state_dir: &Path) -> Result<()> {
    use drover_agent::leftovers::cleanup;
    let root = std::env::var_os("DROVER_CGROUP_ROOT").unwrap_or_else(|| "/sys/fs/cgroup".into());
    let cgroups = drover_agent::cgroups::manager_for(PathBuf::from(root));
    let left = cleanup::scan(&[state_dir.to_path_buf()], cgroups.as_ref());
    if let Some(e) = left.remove(cgroups.as_ref()).into_iter().next() {
        bail!("cleaning up after the killed agent: {e}");
    }
    Ok(())
}

pub(crate) async fn wait_nodes_ready(c: &mut crate::cluster::Client, names: &[&str]) -> Result<()> {
    let start = Instant::now();
    loop {
        let nodes = c
            .list_nodes(pb::ListNodesRequest { read: None })
            .await
            .map_err(status)?
            .into_inner()
            .nodes;
        if names
            .iter()
            .all(|n| nodes.iter().any(|x| x.name == *n && x.status == "ready"))
        {
            return Ok(());
        }
        if start.elapsed() > Duration::from_secs(30) {
            bail!("nodes {names:?} not ready after 30s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_until<T>(
    c: &mut crate::cluster::Client,
    job: &str,
    mut f: impl FnMut(&[pb::Allocation]) -> Option<T>,
) -> Result<T> {
    let start = Instant::now();
    loop {
        let allocs = c
            .list_allocations(pb::ListAllocationsRequest {
                job: job.into(),
                read: None,
                all: false,
            })
            .await
            .map_err(status)?
            .into_inner()
            .allocations;
        if let Some(v) = f(&allocs) {
            return Ok(v);
        }
        if start.elapsed() > Duration::from_secs(60) {
            bail!("{job}: not there after 60s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
