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
/// ...and the most bytes of them, as JSON (a batch has at least one). A log
/// entry must reach the followers within openraft's deadline for an append,
/// the heartbeat interval; one too large for it is sent again and again and
/// never committed, so a few large specs must not share one.
const MAX_BATCH_BYTES: usize = 512 << 10;

/// What proposing a command answered: the index it committed at and its
/// result, or the Raft error (a follower's, with the leader to forward to).
pub type Outcome =
    Result<(u64, CommandResult), RaftError<u64, ClientWriteError<u64, openraft::BasicNode>>>;

struct Proposal {
    cmd: Command,
    /// The command's size as JSON.
    bytes: usize,
    done: oneshot::Sender<Outcome>,
}

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
    /// `bytes` is its size as JSON ([`json_size`]).
    pub async fn propose(&self, cmd: Command, bytes: usize) -> Option<Outcome> {
        let (done, wait) = oneshot::channel();
        self.tx.send(Proposal { cmd, bytes, done }).ok()?;
        wait.await.ok()
    }
}

/// How many bytes `value` takes as JSON, without keeping them.
pub(crate) fn json_size(value: &impl serde::Serialize) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut n = Count(0);
    let _ = serde_json::to_writer(&mut n, value);
    n.0
}

async fn run(raft: Raft, mut rx: mpsc::UnboundedReceiver<Proposal>) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut next = None;
    loop {
        let first = match next.take() {
            Some(p) => p,
            None => match rx.recv().await {
                Some(p) => p,
                None => return,
            },
        };
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let batch;
        (batch, next) = gather(first, &mut rx);
        let raft = raft.clone();
        tokio::spawn(async move {
            commit(&raft, batch).await;
            drop(slot);
        });
    }
}

/// A batch: `first`, and whatever else waits now, up to [`MAX_BATCH`]
/// commands and [`MAX_BATCH_BYTES`]. A proposal that would go over either
/// is returned, to lead the next batch.
fn gather(
    first: Proposal,
    rx: &mut mpsc::UnboundedReceiver<Proposal>,
) -> (Vec<Proposal>, Option<Proposal>) {
    let mut bytes = first.bytes;
    let mut batch = vec![first];
    while batch.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(p) if bytes + p.bytes > MAX_BATCH_BYTES => return (batch, Some(p)),
            Ok(p) => {
                bytes += p.bytes;
                batch.push(p);
            }
            Err(_) => break,
        }
    }
    (batch, None)
}

async fn commit(raft: &Raft, mut batch: Vec<Proposal>) {
    if batch.len() == 1 {
        let Proposal { cmd, done, .. } = batch.pop().expect("one proposal");
        let r = raft.client_write(cmd).await;
        let _ = done.send(r.map(|r| (r.log_id.index, r.data)));
        return;
    }
    let (cmds, dones): (Vec<Command>, Vec<oneshot::Sender<Outcome>>) =
        batch.into_iter().map(|p| (p.cmd, p.done)).unzip();
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

    fn proposal(cmd: Command) -> super::Proposal {
        let bytes = super::json_size(&cmd);
        assert_eq!(bytes, serde_json::to_vec(&cmd).unwrap().len());
        super::Proposal {
            cmd,
            bytes,
            done: tokio::sync::oneshot::channel().0,
        }
    }

    fn large(name: &str) -> Command {
        let big = "x".repeat(200 << 10);
        let spec = drover_proto::spec::from_json(&format!(
            r#"{{"name":"{name}","image":"oci:/x:latest","env":{{"BIG":"{big}"}},"resources":{{"cpu":"10m","memory":"16Mi"}}}}"#
        ))
        .unwrap();
        Command::SubmitJob {
            request_id: name.into(),
            spec: Box::new(spec),
            at_ms: 1,
        }
    }

    #[test]
    fn a_batch_stops_at_its_byte_limit_and_the_next_proposal_leads_the_next() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for i in 0..600 {
            tx.send(proposal(submit(&format!("s{i}"), "r")))
                .ok()
                .unwrap();
        }
        let (batch, next) = super::gather(proposal(Command::Noop), &mut rx);
        assert_eq!(batch.len(), super::MAX_BATCH, "small ones fill a batch");
        assert!(next.is_none());
        while rx.try_recv().is_ok() {}

        // Three specs of 200KiB: two fit in 512KiB, the third waits.
        for name in ["b", "c", "d"] {
            tx.send(proposal(large(name))).ok().unwrap();
        }
        let (batch, next) = super::gather(proposal(large("a")), &mut rx);
        assert_eq!(batch.len(), 2);
        let next = next.expect("c leads the next batch");
        assert!(matches!(&next.cmd, Command::SubmitJob { request_id, .. } if request_id == "c"));
        let (batch, next) = super::gather(next, &mut rx);
        assert_eq!(batch.len(), 2, "c and d");
        assert!(next.is_none());
        // One proposal over the limit still goes, alone.
        let huge = proposal(Command::Batch(std::sync::Arc::new(vec![
            large("e"),
            large("f"),
            large("g"),
        ])));
        assert!(huge.bytes > super::MAX_BATCH_BYTES);
        let (batch, _) = super::gather(huge, &mut rx);
        assert_eq!(batch.len(), 1);
    }
}
