//! `drover-bench snapshot`: saving the replicated state of N jobs to a
//! snapshot file, and restoring it into a fresh cluster: how long each
//! takes, and whether every job and version came back.

use crate::stats::{secs, Samples};
use anyhow::{bail, Result};
use drover_ctl::client::{self, status};
use drover_ctl::output::table;
use drover_proto::pb;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// What `drover-bench snapshot` measured.
pub struct SnapshotReport {
    pub jobs: usize,
    pub bytes: usize,
    /// Each save: from the request to the last byte of the file received.
    pub save: Samples,
    /// The restore into a fresh cluster: the whole file sent to committed.
    pub restore: Duration,
    /// Jobs (name and version) back after the restore, and missing.
    pub back: usize,
    pub lost: usize,
}

pub async fn command(jobs: usize, trials: usize) -> Result<i32> {
    let r = report(jobs, trials).await?;
    println!();
    print!(
        "{}",
        table(
            &[
                "JOBS",
                "FILE_MB",
                "SAVE_MEDIAN",
                "SAVE_MAX",
                "RESTORE",
                "BACK",
                "LOST"
            ],
            &[vec![
                r.jobs.to_string(),
                format!("{:.1}", r.bytes as f64 / (1 << 20) as f64),
                secs(r.save.median()),
                secs(r.save.max()),
                secs(r.restore),
                r.back.to_string(),
                r.lost.to_string(),
            ]]
        )
    );
    println!("(3 scheduler peers over mutual TLS; save from any peer after a read index; restore into a fresh 3-peer cluster)");
    Ok(if r.lost == 0 { 0 } else { 1 })
}

/// Every job's name and current version, from a linearizable read.
async fn listed(addrs: &str) -> Result<BTreeSet<(String, u64)>> {
    let mut c = client::connect(addrs).await?;
    let jobs = c
        .list_jobs(pb::ListJobsRequest { read: None })
        .await
        .map_err(status)?
        .into_inner()
        .jobs;
    Ok(jobs.into_iter().map(|j| (j.name, j.version)).collect())
}

pub async fn report(jobs: usize, trials: usize) -> Result<SnapshotReport> {
    let (peers, _) = crate::ha::three_peers("snapshot", "150ms", &["--rate-limit", "0"]).await?;
    let addrs = peers.addrs();
    println!("  submitting {jobs} jobs (some with a second version)...");
    let clients = 64;
    let mut tasks = Vec::new();
    for t in 0..clients {
        let addrs = addrs.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = client::connect(&addrs).await?;
            let mut i = t;
            while i < jobs {
                // Every tenth job gets a second version.
                for v in 0..(1 + usize::from(i % 10 == 0)) {
                    let spec_json = format!(
                        r#"{{"name":"s-{i}","image":"oci:/bench:latest","env":{{"V":"{v}"}},"resources":{{"cpu":"10m","memory":"16Mi"}}}}"#
                    );
                    c.submit_job(pb::SubmitJobRequest {
                        spec_json,
                        request_id: format!("bench-snapshot-{i}-{v}"),
                    })
                    .await
                    .map_err(status)?;
                }
                i += clients;
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let before = listed(&addrs).await?;
    if before.len() != jobs {
        bail!("{} jobs listed after submitting {jobs}", before.len());
    }
    let mut save = Samples {
        name: "save",
        durations: Vec::new(),
    };
    let mut file = Vec::new();
    for _ in 0..trials.max(1) {
        let t = Instant::now();
        let mut c = client::cluster(&addrs).await?;
        let mut chunks = c
            .snapshot_save(pb::SnapshotSaveRequest {})
            .await
            .map_err(status)?
            .into_inner();
        file.clear();
        while let Some(chunk) = chunks.message().await.map_err(status)? {
            file.extend_from_slice(&chunk.data);
        }
        save.durations.push(t.elapsed());
    }
    drover_proto::snapshot::read(&file)?;
    drop(peers);

    let (fresh, _) =
        crate::ha::three_peers("snapshot-restore", "150ms", &["--rate-limit", "0"]).await?;
    let addrs = fresh.addrs();
    let chunks: Vec<pb::SnapshotChunk> = file
        .chunks(1 << 20)
        .map(|c| pb::SnapshotChunk { data: c.to_vec() })
        .collect();
    let t = Instant::now();
    let mut c = client::cluster(&addrs).await?;
    c.snapshot_restore(tokio_stream::iter(chunks))
        .await
        .map_err(status)?;
    let restore = t.elapsed();
    let after = listed(&addrs).await?;
    Ok(SnapshotReport {
        jobs,
        bytes: file.len(),
        save,
        restore,
        back: before.intersection(&after).count(),
        lost: before.difference(&after).count(),
    })
}
