//! A scheduler replica as the API and controllers see it: propose a command,
//! read the state (linearizable or stale), know whether it leads.

use crate::raft::{Raft, TypeConfig};
use crate::state::{Command, CommandResult, State};
use drover_proto::pb;
use openraft::error::{ClientWriteError, RaftError};
use std::sync::{Arc, RwLock};
use tokio::sync::watch;
use tonic::Status;

#[derive(Clone)]
pub struct Replica {
    pub id: u64,
    pub addr: String,
    pub raft: Raft,
    pub state: Arc<RwLock<State>>,
    pub applied: watch::Receiver<u64>,
}

impl Replica {
    /// Proposes a command and waits until it is committed and applied here.
    pub async fn write(&self, cmd: Command) -> Result<CommandResult, Status> {
        match self.raft.client_write(cmd).await {
            Ok(resp) => Ok(resp.data),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => Err(not_leader(
                f.leader_node.map(|n| n.addr).unwrap_or_default(),
            )),
            Err(e) => Err(Status::unavailable(format!("raft: {e}"))),
        }
    }

    /// Reads the state. Linearizable unless `stale`: leadership is confirmed
    /// and this replica has applied everything committed before the read began.
    pub async fn read<T>(
        &self,
        stale: bool,
        f: impl FnOnce(&State) -> T,
    ) -> Result<(T, pb::ReadInfo), Status> {
        if !stale {
            match self.raft.ensure_linearizable().await {
                Ok(_) => {}
                Err(RaftError::APIError(openraft::error::CheckIsLeaderError::ForwardToLeader(
                    f,
                ))) => {
                    return Err(not_leader(
                        f.leader_node.map(|n| n.addr).unwrap_or_default(),
                    ))
                }
                Err(e) => return Err(Status::unavailable(format!("raft: {e}"))),
            }
        }
        let state = self.state.read().expect("state lock poisoned");
        let info = pb::ReadInfo {
            applied_index: state.last_index,
            stale,
            served_by: self.addr.clone(),
        };
        Ok((f(&state), info))
    }

    pub fn is_leader(&self) -> bool {
        let m = self.raft.metrics();
        let m = m.borrow();
        m.current_leader == Some(self.id) && m.state.is_leader()
    }

    pub fn metrics(&self) -> watch::Receiver<openraft::RaftMetrics<u64, openraft::BasicNode>> {
        self.raft.metrics()
    }

    /// A clone of the current state (for controllers; they must not hold the lock).
    pub fn snapshot(&self) -> State {
        self.state.read().expect("state lock poisoned").clone()
    }
}

fn not_leader(leader: String) -> Status {
    let mut s = Status::unavailable(if leader.is_empty() {
        "no leader elected yet".to_string()
    } else {
        format!("not the leader; the leader is {leader}")
    });
    if let Ok(v) = leader.parse() {
        s.metadata_mut().insert("drover-leader", v);
    }
    s
}

#[allow(dead_code)]
fn _assert_type_config(_: TypeConfig) {}
