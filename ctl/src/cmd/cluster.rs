//! `drover cluster members|add|remove|join-token`: the scheduler's replicas,
//! and tokens for joining the cluster.

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
            println!("adding replica {id} at {address}: joining as a learner, catching up");
            let r = c
                .add_member(pb::AddMemberRequest { id, address })
                .await
                .map_err(status)?
                .into_inner();
            println!("replica {id} is a voter now");
            print_members(Format::Table, &r);
        }
        ClusterCmd::Remove { id } => {
            let r = c
                .remove_member(pb::RemoveMemberRequest { id })
                .await
                .map_err(status)?
                .into_inner();
            println!("replica {id} removed");
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
    }
    Ok(0)
}

fn member(m: &pb::MemberStatus, leader: u64) -> Value {
    json!({
        "id": m.id, "address": m.address, "role": m.role, "voter": m.voter,
        "applied_index": m.applied_index, "last_log_index": m.last_log_index,
        "snapshot_index": m.snapshot_index, "purged_index": m.purged_index, "term": m.term, "leader": m.id == leader,
    })
}

fn print_members(format: Format, r: &pb::MembersResponse) {
    let v = json!({
        "leader_id": r.leader_id,
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
                ]
            })
            .collect();
        table(
            &["ID", "ADDRESS", "ROLE", "MEMBER", "APPLIED", "TERM"],
            &rows,
        ) + &output::stale_note(&r.read)
    });
}
