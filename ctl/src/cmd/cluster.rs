//! `drover cluster members|add|remove|join-token|rotate-ca|ca`: the
//! scheduler's peers, tokens for joining the cluster, and its CA.

use crate::cli::{ClusterCmd, Format};
use crate::client::{self, status};
use crate::output::{self, table};
use anyhow::Result;
use drover_proto::pb;
use serde_json::{json, Value};

pub async fn run(addr: &str, cmd: ClusterCmd) -> Result<i32> {
    let mut c = client::cluster(addr).await?;
    match cmd {
        ClusterCmd::Members { read } => {
            let r = c
                .members(pb::MembersRequest {
                    read: Some(pb::ReadOptions { stale: read.stale }),
                })
                .await
                .map_err(status)?
                .into_inner();
            print_members(read.output, &r);
        }
        ClusterCmd::Add { id, address } => {
            println!("adding peer {id} at {address}: joining as a learner, catching up");
            let r = c
                .add_member(pb::AddMemberRequest { id, address })
                .await
                .map_err(status)?
                .into_inner();
            println!("peer {id} is a voter now");
            print_members(Format::Table, &r);
        }
        ClusterCmd::Remove { id } => {
            let r = c
                .remove_member(pb::RemoveMemberRequest { id })
                .await
                .map_err(status)?
                .into_inner();
            println!("peer {id} removed");
            print_members(Format::Table, &r);
        }
        ClusterCmd::JoinToken { role, ttl } => {
            let ttl = drover_proto::quantity::Duration::parse(&ttl)
                .map_err(|e| anyhow::anyhow!("--ttl: {e}"))?
                .std();
            let r = c
                .create_join_token(pb::CreateJoinTokenRequest {
                    role,
                    ttl_seconds: ttl.as_secs().max(1),
                })
                .await
                .map_err(status)?
                .into_inner();
            println!("{}", r.token);
        }
        ClusterCmd::RotateCa {
            no_wait,
            min_phase,
            timeout,
        } => {
            let timeout = drover_proto::quantity::Duration::parse(&timeout)
                .map_err(|e| anyhow::anyhow!("--timeout: {e}"))?
                .std();
            let min_phase = drover_proto::quantity::Duration::parse(&min_phase)
                .map_err(|e| anyhow::anyhow!("--min-phase: {e}"))?
                .std();
            let st = c
                .rotate_ca(pb::RotateCaRequest {
                    min_phase_seconds: min_phase.as_secs(),
                })
                .await
                .map_err(status)?
                .into_inner();
            println!("CA rotation started: everyone trusts the old and the new CA first");
            keep_own_credentials(addr, &st).await;
            if no_wait {
                eprintln!(
                    "the rotation goes on; once its phase is sign (`drover cluster ca --status`), \
                     run `drover cluster renew-cert`, or this CLI is locked out when it ends"
                );
            } else {
                return wait_rotation(addr, st, timeout).await;
            }
        }
        ClusterCmd::RenewCert => {
            let st = c
                .get_ca_status(pb::CaStatusRequest {})
                .await
                .map_err(status)?
                .into_inner();
            let Some([ca, cert, key]) = client::credential_paths() else {
                anyhow::bail!("this CLI uses no certificate files (--insecure-plaintext?)");
            };
            drover_proto::pki::write_public(&ca, st.bundle_pem.as_bytes())?;
            client::reload_credentials();
            renew_own(addr, &cert, &key).await?;
            println!(
                "renewed {} (signed by {}); {} trusts what the cluster trusts",
                cert.display(),
                st.signing_ca,
                ca.display()
            );
        }
        ClusterCmd::Ca { status: show } => {
            let st = c
                .get_ca_status(pb::CaStatusRequest {})
                .await
                .map_err(status)?
                .into_inner();
            if show {
                println!("phase: {}", st.phase);
                println!("signing CA: {}", st.signing_ca);
                let n = drover_proto::pki::ca::split(&st.bundle_pem).len();
                println!("trusted CA certificates: {n}");
                if !st.waiting.is_empty() {
                    println!("waiting for: {}", st.waiting.join(", "));
                }
            } else {
                print!("{}", st.bundle_pem);
            }
        }
    }
    Ok(0)
}

/// Follows a CA rotation to its end, keeping this CLI's own credentials
/// current, and says what each phase waits for.
async fn wait_rotation(
    addr: &str,
    mut st: pb::CaStatus,
    timeout: std::time::Duration,
) -> Result<i32> {
    let start = std::time::Instant::now();
    let mut said = (String::new(), Vec::new());
    loop {
        let now = (st.phase.clone(), st.waiting.clone());
        if now != said {
            match st.phase.as_str() {
                "trust" | "sign" if !st.waiting.is_empty() => {
                    println!("phase {}: waiting for {}", st.phase, st.waiting.join(", "))
                }
                "sign" => println!("phase sign: peers sign with the new CA; nodes renew"),
                _ => {}
            }
            said = now;
        }
        if st.phase == "done" {
            println!(
                "CA rotation done: the cluster trusts only the new CA ({}); other clients need                  its certificate: drover cluster ca > ca.pem",
                st.signing_ca
            );
            return Ok(0);
        }
        if start.elapsed() > timeout {
            anyhow::bail!(
                "the CA rotation is still in phase {} after {}s (it goes on; see `drover cluster ca --status`)",
                st.phase,
                timeout.as_secs()
            );
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        // A new connection each time, with the credentials as the files
        // hold them now (this CLI, or a peer sharing its directory, may
        // have changed them): the servers' certificates change.
        client::reload_credentials();
        let mut c = client::cluster(addr).await?;
        st = c
            .get_ca_status(pb::CaStatusRequest {})
            .await
            .map_err(status)?
            .into_inner();
        keep_own_credentials(addr, &st).await;
    }
}

/// Makes this CLI's CA file trust what the cluster trusts now, and, once the
/// new CA signs, renews its own certificate with it (files it can write;
/// it says so when it cannot).
async fn keep_own_credentials(addr: &str, st: &pb::CaStatus) {
    let Some([ca, cert, key]) = client::credential_paths() else {
        return;
    };
    let mut changed = false;
    let have = std::fs::read_to_string(&ca).unwrap_or_default();
    if drover_proto::pki::ca::bundle_id(&have) != drover_proto::pki::ca::bundle_id(&st.bundle_pem) {
        match drover_proto::pki::write_public(&ca, st.bundle_pem.as_bytes()) {
            Ok(()) => changed = true,
            Err(e) => eprintln!("drover: cannot update {}: {e}", ca.display()),
        }
    }
    let mine = std::fs::read_to_string(&cert).unwrap_or_default();
    let issuer = drover_proto::pki::ca::issuer(&mine).unwrap_or_default();
    if st.phase != "trust" && !st.signing_ca.is_empty() && issuer != st.signing_ca {
        match renew_own(addr, &cert, &key).await {
            Ok(()) => {
                changed = true;
                println!(
                    "renewed this CLI's certificate ({}) with the new CA",
                    cert.display()
                );
            }
            Err(e) => eprintln!("drover: cannot renew this CLI's certificate: {e:#}"),
        }
    }
    if changed {
        client::reload_credentials();
    }
}

async fn renew_own(addr: &str, cert: &std::path::Path, key: &std::path::Path) -> Result<()> {
    let pem = std::fs::read_to_string(cert)?;
    let who = drover_proto::pki::Credential {
        cert_pem: pem,
        key_pem: String::new(),
    }
    .identity()?;
    let ch = client::connect_any(addr).await?;
    let r = drover_proto::pki::renew::renew_over(ch, &who).await?;
    r.credential.save_files(cert, key)?;
    Ok(())
}

fn member(m: &pb::MemberStatus, leader: u64) -> Value {
    json!({
        "id": m.id, "address": m.address, "role": m.role, "voter": m.voter,
        "applied_index": m.applied_index, "last_log_index": m.last_log_index,
        "snapshot_index": m.snapshot_index, "purged_index": m.purged_index, "term": m.term, "leader": m.id == leader,
        "supports_version": supports(m), "release": m.release,
    })
}

/// The newest cluster version a member implements (a release from before
/// versions reports none: it implements 1).
fn supports(m: &pb::MemberStatus) -> Option<u32> {
    (m.role != "unreachable").then_some(m.supports_version.max(1))
}

/// The version the cluster runs at (a leader from before versions reports
/// none: 1).
fn cluster_version(r: &pb::MembersResponse) -> u32 {
    r.cluster_version.max(1)
}

fn print_members(format: Format, r: &pb::MembersResponse) {
    let v = json!({
        "leader_id": r.leader_id,
        "cluster_version": cluster_version(r),
        "members": r.members.iter().map(|m| member(m, r.leader_id)).collect::<Vec<_>>(),
        "read": output::read(&r.read),
    });
    output::print(format, &v, || {
        let rows: Vec<Vec<String>> = r
            .members
            .iter()
            .map(|m| {
                let known = m.role != "unreachable";
                let num = |n: u64| if known { n.to_string() } else { "-".into() };
                vec![
                    format!("{}{}", m.id, if m.id == r.leader_id { " *" } else { "" }),
                    m.address.clone(),
                    m.role.clone(),
                    if m.voter { "voter" } else { "learner" }.to_string(),
                    num(m.applied_index),
                    num(m.term),
                    supports(m).map_or("-".into(), |v| v.to_string()),
                ]
            })
            .collect();
        let runs = cluster_version(r);
        let behind = r
            .members
            .iter()
            .filter_map(supports)
            .filter(|v| *v > runs)
            .min()
            .map(|next| format!(" (moves to {next} once every member supports it)"))
            .unwrap_or_default();
        table(
            &[
                "ID", "ADDRESS", "ROLE", "MEMBER", "APPLIED", "TERM", "SUPPORTS",
            ],
            &rows,
        ) + &format!("cluster version {runs}{behind}\n")
            + &output::stale_note(&r.read)
    });
}
