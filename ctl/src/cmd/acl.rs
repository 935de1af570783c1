//! `drover acl bootstrap|token create|ls|revoke|whoami`: API tokens.

use crate::cli::{AclCmd, AclTokenCmd};
use crate::client::{self, status};
use crate::output::{self, table};
use anyhow::Result;
use drover_proto::pb;
use serde_json::{json, Value};

fn when(ms: i64) -> String {
    if ms == 0 {
        return "never".into();
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    if ms <= now {
        return format!("expired {}", output::time(ms));
    }
    let s = (ms - now) / 1000;
    match s {
        0..=59 => format!("in {s}s"),
        60..=3599 => format!("in {}m", s / 60),
        3600..=86399 => format!("in {}h", s / 3600),
        _ => format!("in {}d", s / 86400),
    }
}

fn value(t: &pb::AclToken) -> Value {
    json!({
        "accessor": t.accessor, "name": t.name, "role": t.role,
        "job_prefix": t.job_prefix, "exec": t.exec, "logs": t.logs,
        "created_ms": t.created_ms, "expires_ms": t.expires_ms,
    })
}

fn extras(t: &pb::AclToken) -> String {
    let mut e = Vec::new();
    if t.exec {
        e.push("exec");
    }
    if t.logs {
        e.push("logs");
    }
    if e.is_empty() {
        "-".into()
    } else {
        e.join(",")
    }
}

pub async fn run(addr: &str, cmd: AclCmd) -> Result<i32> {
    let ch = client::connect_any(addr).await?;
    let mut c = pb::acl_client::AclClient::new(client::Backoff::new(ch));
    match cmd {
        AclCmd::Bootstrap => {
            let r = c
                .bootstrap(pb::AclBootstrapRequest {})
                .await
                .map_err(status)?
                .into_inner();
            let accessor = r.token.map(|t| t.accessor).unwrap_or_default();
            eprintln!(
                "ACLs are on: every call needs a token now. This admin token (accessor {accessor}) \
                 is shown once; keep it safe:"
            );
            println!("{}", r.secret);
        }
        AclCmd::Token(AclTokenCmd::Create {
            name,
            role,
            job,
            exec,
            logs,
            ttl,
        }) => {
            let ttl_seconds = match ttl {
                Some(t) => drover_proto::quantity::Duration::parse(&t)
                    .map_err(|e| anyhow::anyhow!("--ttl: {e}"))?
                    .std()
                    .as_secs()
                    .max(1),
                None => 0,
            };
            let r = c
                .create_token(pb::CreateAclTokenRequest {
                    name,
                    role,
                    job_prefix: job,
                    exec,
                    logs,
                    ttl_seconds,
                })
                .await
                .map_err(status)?
                .into_inner();
            if let Some(t) = &r.token {
                eprintln!(
                    "token {} ({}, role {}) created; its secret is shown once:",
                    t.accessor, t.name, t.role
                );
            }
            println!("{}", r.secret);
        }
        AclCmd::Token(AclTokenCmd::Ls { output }) => {
            let r = c
                .list_tokens(pb::ListAclTokensRequest {})
                .await
                .map_err(status)?
                .into_inner();
            let v = json!(r.tokens.iter().map(value).collect::<Vec<_>>());
            output::print(output, &v, || {
                let rows: Vec<Vec<String>> = r
                    .tokens
                    .iter()
                    .map(|t| {
                        vec![
                            t.accessor.clone(),
                            t.name.clone(),
                            t.role.clone(),
                            if t.job_prefix.is_empty() {
                                "*".into()
                            } else {
                                format!("{}*", t.job_prefix)
                            },
                            extras(t),
                            when(t.expires_ms),
                        ]
                    })
                    .collect();
                table(
                    &["ACCESSOR", "NAME", "ROLE", "JOBS", "ALSO", "EXPIRES"],
                    &rows,
                )
            });
        }
        AclCmd::Token(AclTokenCmd::Revoke { accessor }) => {
            let r = c
                .revoke_token(pb::RevokeAclTokenRequest { accessor })
                .await
                .map_err(status)?
                .into_inner();
            println!("token {} revoked", r.accessor);
        }
        AclCmd::Whoami { output } => {
            let t = c
                .who_am_i(pb::WhoAmIRequest {})
                .await
                .map_err(status)?
                .into_inner();
            output::print(output, &value(&t), || {
                let jobs = if t.job_prefix.is_empty() {
                    "every job".to_string()
                } else {
                    format!("jobs named {}*", t.job_prefix)
                };
                format!(
                    "{}{}: role {} on {jobs}; also: {}; expires: {}\n",
                    t.name,
                    if t.accessor.is_empty() {
                        String::new()
                    } else {
                        format!(" (accessor {})", t.accessor)
                    },
                    t.role,
                    extras(&t),
                    when(t.expires_ms)
                )
            });
        }
    }
    Ok(0)
}
