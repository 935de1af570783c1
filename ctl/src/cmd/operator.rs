//! `drover operator snapshot save|restore|inspect`: back up the replicated
//! state and put it back.

use crate::cli::{Format, OperatorCmd, SnapshotCmd};
use crate::client::{self, status};
use crate::output;
use anyhow::{Context, Result};
use drover_proto::pb;
use drover_proto::snapshot;
use std::io::Write;
use std::path::Path;

/// Chunks sent to the scheduler (its requests stay small).
const CHUNK: usize = 1 << 20;

pub async fn run(addr: &str, cmd: OperatorCmd) -> Result<i32> {
    let OperatorCmd::Snapshot(cmd) = cmd;
    match cmd {
        SnapshotCmd::Save { file } => save(addr, &file).await,
        SnapshotCmd::Restore { file } => restore(addr, &file).await,
        SnapshotCmd::Inspect { file, output } => inspect(&file, output),
    }
}

async fn save(addr: &str, path: &Path) -> Result<i32> {
    let started = std::time::Instant::now();
    let mut c = client::cluster(addr).await?;
    let mut chunks = c
        .snapshot_save(pb::SnapshotSaveRequest {})
        .await
        .map_err(status)?
        .into_inner();
    let mut file = Vec::new();
    while let Some(chunk) = chunks.message().await.map_err(status)? {
        file.extend_from_slice(&chunk.data);
    }
    // Checked before it is kept: a backup that cannot be restored is worse
    // than none, since it is trusted.
    let (header, _) = snapshot::read(&file).context("the snapshot received")?;
    write_atomically(path, &file)?;
    println!(
        "saved {} ({} bytes, at log index {}): {} jobs, {} allocations, {} nodes, {} secrets, {} configs, {} tokens, in {:.2}s",
        path.display(),
        file.len(),
        header.index,
        header.jobs,
        header.allocations,
        header.nodes,
        header.secrets,
        header.configs,
        header.tokens,
        started.elapsed().as_secs_f64()
    );
    Ok(0)
}

/// Writes `bytes` to `path` so that a crash leaves either the old file or
/// the whole new one.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name()
            .map_or("snapshot".into(), |n| n.to_string_lossy())
    ));
    {
        let mut f = std::fs::File::create(&tmp).with_context(|| format!("{}", tmp.display()))?;
        f.write_all(bytes)
            .and_then(|_| f.sync_all())
            .with_context(|| format!("{}", tmp.display()))?;
    }
    std::fs::rename(&tmp, path).with_context(|| format!("{}", path.display()))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

async fn restore(addr: &str, path: &Path) -> Result<i32> {
    let file = std::fs::read(path).with_context(|| format!("{}", path.display()))?;
    // The scheduler checks it too; checking here first says what is wrong
    // without a round trip, and sends nothing damaged.
    let (header, _) = snapshot::read(&file).with_context(|| format!("{}", path.display()))?;
    let mut c = client::cluster(addr).await?;
    let chunks: Vec<pb::SnapshotChunk> = file
        .chunks(CHUNK)
        .map(|c| pb::SnapshotChunk { data: c.to_vec() })
        .collect();
    let r = c
        .snapshot_restore(tokio_stream::iter(chunks))
        .await
        .map_err(status)?
        .into_inner();
    println!(
        "restored {} (taken at log index {}) at log index {}: {}",
        path.display(),
        header.index,
        r.index,
        r.note
    );
    Ok(0)
}

pub fn inspect(path: &Path, format: Format) -> Result<i32> {
    let file = std::fs::read(path).with_context(|| format!("{}", path.display()))?;
    let (h, _) = snapshot::read(&file).with_context(|| format!("{}", path.display()))?;
    let value = serde_json::to_value(&h)?;
    output::print(format, &value, || {
        format!(
            "format       {} v{}\nlog index    {}\ntaken at     {}\nstate        {} bytes, sha256 {}\njobs         {}\nallocations  {}\nnodes        {}\nsecrets      {}\nconfigs      {}\nACL tokens   {}\n",
            h.format,
            h.version,
            h.index,
            crate::output::time(h.taken_at_ms),
            h.bytes,
            h.sha256,
            h.jobs,
            h.allocations,
            h.nodes,
            h.secrets,
            h.configs,
            h.tokens
        )
    });
    Ok(0)
}
