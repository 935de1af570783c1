//! Batching concurrent proposals into one log entry.
//!
//! openraft 0.9 appends and replicates every `client_write` as its own log
//! entry, with its own pass through the Raft core. Under load that per-entry
//! work, not the disk, bounds throughput. The batcher queues proposals and,
//! while up to [`IN_FLIGHT`] batches are being committed, lets the next ones
//! accumulate; each batch is proposed as one `Command::Batch` entry and each
//! proposer gets its own command's result back. A lone proposal on an idle
//! peer goes out at once, so batching costs no latency.

use crate::raft::Raft;
use crate::state::{Command, CommandResult};
use openraft::error::{ClientWriteError, RaftError};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, Semaphore};

/// Batches being committed at once; more proposals wait and join the next.
const IN_FLIGHT: usize = 4;
/// The most commands in one batch (a batch is one log entry and one message).
const MAX_BATCH: usize = 512;

/// What proposing a command answered: the index it committed at and its
/// result, or the Raft error (a follower's, with the leader to forward to).
pub type Outcome =
    Result<(u64, CommandResult), RaftError<u64, ClientWriteError<u64, openraft::BasicNode>>>;

type Proposal = (Command, oneshot::Sender<Outcome>);

/// A handle to the batching task of one peer.
#[derive(Clone)]
pub struct Batcher {
    tx: mpsc::UnboundedSender<Proposal>,
}

impl Batcher {
    /// Starts batching proposals to `raft`; the task ends with the last handle.
    pub fn start(raft: Raft) -> Batcher {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(raft, rx));
        Batcher { tx }
    }

    /// Proposes `cmd` with whatever else is being proposed now.
    pub async fn propose(&self, cmd: Command) -> Option<Outcome> {
        let (done, wait) = oneshot::channel();
        self.tx.send((cmd, done)).ok()?;
        wait.await.ok()
    }
}

async fn run(raft: Raft, mut rx: mpsc::UnboundedReceiver<Proposal>) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    while let Some(first) = rx.recv().await {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let raft = raft.clone();
        tokio::spawn(async move {
            commit(&raft, batch).await;
            drop(slot);
        });
    }
}

async fn commit(raft: &Raft, mut batch: Vec<Proposal>) {
    if batch.len() == 1 {
        let (cmd, done) = batch.pop().expect("one proposal");
        let r = raft.client_write(cmd).await;
        let _ = done.send(r.map(|r| (r.log_id.index, r.data)));
        return;
    }
    let (cmds, dones): (Vec<Command>, Vec<oneshot::Sender<Outcome>>) = batch.into_iter().unzip();
    match raft.client_write(Command::Batch(Arc::new(cmds))).await {
        Ok(r) => {
            let index = r.log_id.index;
            let mut results = r.data.batch.into_iter();
            for done in dones {
                let _ = done.send(Ok((index, results.next().unwrap_or_default())));
            }
        }
        Err(e) => {
            for done in dones {
                let _ = done.send(Err(e.clone()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::state::{Command, State};

    fn submit(name: &str, request_id: &str) -> Command {
        let spec = drover_proto::spec::from_json(&format!(
            r#"{{"name":"{name}","image":"oci:/x:latest","resources":{{"cpu":"10m","memory":"16Mi"}}}}"#
        ))
        .unwrap();
        Command::SubmitJob {
            request_id: request_id.into(),
            spec: Box::new(spec),
            at_ms: 1,
        }
    }

    #[test]
    fn a_batch_applies_each_command_in_order_with_its_own_result() {
        let mut s = State::default();
        let batch = Command::Batch(std::sync::Arc::new(vec![
            submit("a", "r1"),
            submit("a", "r1"),
            submit("b", "r2"),
            Command::StopJob {
                request_id: "r3".into(),
                name: "nope".into(),
                purge: false,
                at_ms: 1,
            },
        ]));
        let r = s.apply(7, &batch);
        assert_eq!(r.batch.len(), 4);
        assert!(r.batch[0].ok && r.batch[0].changed);
        // The retried submission is de-duplicated by its request id.
        assert_eq!(r.batch[1], r.batch[0]);
        assert!(r.batch[2].changed);
        assert!(!r.batch[3].ok, "stopping a missing job is refused alone");
        assert_eq!(s.jobs.len(), 2);
        assert_eq!(s.last_index, 7);
    }
}
