//! `drover secret create|update|ls|rm` and `drover configmap ...`: the
//! same commands for secrets (sealed at rest, admin only) and configs.
//! A value goes in and is never printed, not even in an error.

use crate::cli::SecretCmd;
use crate::client::{self, status};
use crate::output::{self, bytes, table, time};
use anyhow::{Context, Result};
use drover_proto::pb;
use serde_json::json;
use std::io::Read;

pub async fn run(addr: &str, kind: &str, cmd: SecretCmd) -> Result<i32> {
    let mut c = client::connect(addr).await?;
    let (name, file, mode) = match cmd {
        SecretCmd::Create { name, from_file } => (name, from_file, "create"),
        SecretCmd::Update { name, from_file } => (name, from_file, "update"),
        SecretCmd::Rm { name } => {
            c.delete_secret(pb::DeleteSecretRequest {
                name: name.clone(),
                kind: kind.into(),
                request_id: crate::cmd::job::new_request_id(),
            })
            .await
            .map_err(status)?;
            println!("{kind} {name} deleted");
            return Ok(0);
        }
        SecretCmd::Ls { read } => {
            let r = c
                .list_secrets(pb::ListSecretsRequest {
                    kind: kind.into(),
                    read: Some(pb::ReadOptions { stale: read.stale }),
                })
                .await
                .map_err(status)?
                .into_inner();
            let v = json!(r
                .secrets
                .iter()
                .map(|s| json!({
                    "name": s.name, "kind": s.kind, "version": s.version, "size": s.size,
                    "created_at_ms": s.created_at_ms, "updated_at_ms": s.updated_at_ms,
                    "used_by": s.used_by,
                }))
                .collect::<Vec<_>>());
            output::print(read.output, &v, || {
                let rows: Vec<Vec<String>> = r
                    .secrets
                    .iter()
                    .map(|s| {
                        vec![
                            s.name.clone(),
                            s.version.to_string(),
                            bytes(s.size),
                            if s.used_by.is_empty() {
                                "-".into()
                            } else {
                                s.used_by.join(",")
                            },
                            time(s.updated_at_ms),
                        ]
                    })
                    .collect();
                table(&["NAME", "VERSION", "SIZE", "USED BY", "UPDATED"], &rows)
                    + &output::stale_note(&r.read)
            });
            return Ok(0);
        }
    };
    let data = if file.as_os_str() == "-" {
        let mut b = Vec::new();
        std::io::stdin()
            .read_to_end(&mut b)
            .context("cannot read standard input")?;
        b
    } else {
        // The error names the file, never what is in it.
        std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?
    };
    let r = c
        .put_secret(pb::PutSecretRequest {
            name: name.clone(),
            kind: kind.into(),
            data,
            mode: mode.into(),
            request_id: crate::cmd::job::new_request_id(),
        })
        .await
        .map_err(status)?
        .into_inner();
    println!("{kind} {name}: version {}", r.version);
    if !r.restarted.is_empty() {
        println!(
            "restarting the jobs that mount it: {}",
            r.restarted.join(", ")
        );
    }
    if !r.rolling.is_empty() {
        println!(
            "not restarted, in the middle of a rollout (its new replicas get the new value; `drover job restart` the rest once it ends): {}",
            r.rolling.join(", ")
        );
    }
    Ok(0)
}
