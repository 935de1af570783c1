//! Checking what a chaos run recorded (see `tests/chaos.rs`).
//!
//! Three properties, each a plain function over recorded data so that each
//! can be shown to fail on a known-bad history:
//!
//! - **Linearizability of job versions.** Every job is a register: a submit
//!   of a spec returns the version it is now at (a new one if the spec
//!   changed), a read returns the current version and spec. The recorded
//!   invocations and returns are checked with the linearizability tester of
//!   the `stateright` crate (a checker none of us wrote), one job at a time
//!   (linearizability is local: a history is linearizable if and only if
//!   each object's is).
//! - **No acknowledged write lost.** Every version a submit was told about
//!   is in the job's final history.
//! - **No replica slot ran twice at once.** From samples of the containers
//!   running on the host (their cgroups), no two containers of the same
//!   `(job, replica)` were ever seen running at the same moment.

use std::collections::{BTreeMap, BTreeSet};

use stateright::semantics::{ConsistencyTester, LinearizabilityTester, SequentialSpec};

/// What a client asked of one job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Submit the job's spec with this argument (the spec is otherwise fixed).
    Submit(u32),
    Read,
}

/// What it was told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ret {
    /// The version the job is at after the submit.
    Submitted(u64),
    /// The current version and its argument.
    Read(u64, u32),
}

/// The sequential model of one job: its current version and argument.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobRegister {
    pub version: u64,
    pub arg: u32,
}

impl SequentialSpec for JobRegister {
    type Op = Op;
    type Ret = Ret;

    fn invoke(&mut self, op: &Op) -> Ret {
        match op {
            Op::Submit(arg) => {
                if *arg != self.arg {
                    self.version += 1;
                    self.arg = *arg;
                }
                Ret::Submitted(self.version)
            }
            Op::Read => Ret::Read(self.version, self.arg),
        }
    }
}

/// One recorded event, in the order `seq` (taken from one counter just
/// before a request is sent and just after its answer arrives).
#[derive(Clone, Debug)]
pub struct Event {
    pub seq: u64,
    /// A client's identity for the tester: a client that gave up waiting on
    /// an operation continues under a new one.
    pub thread: u64,
    pub job: String,
    pub kind: EventKind,
}

#[derive(Clone, Debug)]
pub enum EventKind {
    Invoke(Op),
    Return(Ret),
}

/// Checks every job's history for linearizability, from `init` (each job's
/// state before the recorded operations began).
///
/// The tester searches depth-first, one stack frame per operation, so the
/// search runs on a thread with a stack large enough for long histories.
/// Its search is exponential in the worst case (a history that is *not*
/// linearizable may be searched whole), so it gets `budget`: a search that
/// has not finished by then fails the check.
pub fn check_linearizable(
    init: &BTreeMap<String, JobRegister>,
    events: &[Event],
    budget: std::time::Duration,
) -> Result<(), String> {
    let init = init.clone();
    let events = events.to_vec();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("linearizability".into())
        .stack_size(1 << 30)
        .spawn(move || {
            let _ = tx.send(check_linearizable_here(&init, &events));
        })
        .map_err(|e| format!("cannot start the checker: {e}"))?;
    match rx.recv_timeout(budget) {
        Ok(r) => r,
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Err(format!(
            "the linearizability search did not finish within {}s: the history may not be linearizable",
            budget.as_secs()
        )),
        Err(_) => Err("the linearizability checker panicked".into()),
    }
}

fn check_linearizable_here(
    init: &BTreeMap<String, JobRegister>,
    events: &[Event],
) -> Result<(), String> {
    let mut events = events.to_vec();
    events.sort_by_key(|e| e.seq);
    let mut testers: BTreeMap<&str, LinearizabilityTester<u64, JobRegister>> = BTreeMap::new();
    for e in &events {
        let start = init
            .get(&e.job)
            .ok_or_else(|| format!("job {} has no initial state", e.job))?;
        let t = testers
            .entry(e.job.as_str())
            .or_insert_with(|| LinearizabilityTester::new(start.clone()));
        match &e.kind {
            EventKind::Invoke(op) => t.on_invoke(e.thread, op.clone()).map(|_| ())?,
            EventKind::Return(ret) => t.on_return(e.thread, ret.clone()).map(|_| ())?,
        }
    }
    for (job, t) in &testers {
        if t.serialized_history().is_none() {
            let ops: Vec<_> = events.iter().filter(|e| e.job == *job).collect();
            return Err(format!(
                "the history of job {job} is not linearizable ({} events): {ops:?}",
                ops.len()
            ));
        }
    }
    Ok(())
}

/// Checks that every acknowledged version `(job, version)` is among the
/// job's `versions` at the end.
pub fn check_acked_kept(
    acked: &[(String, u64)],
    versions: &BTreeMap<String, BTreeSet<u64>>,
) -> Result<(), String> {
    let lost: Vec<_> = acked
        .iter()
        .filter(|(job, v)| !versions.get(job).is_some_and(|vs| vs.contains(v)))
        .collect();
    if lost.is_empty() {
        Ok(())
    } else {
        Err(format!("acknowledged versions lost: {lost:?}"))
    }
}

/// Checks that in no sample two running containers share a replica slot.
/// `slot_of` maps a container (allocation) id to its `(job, replica)`;
/// containers it does not know are ignored.
pub fn check_no_double_run(
    samples: &[BTreeSet<String>],
    slot_of: &BTreeMap<String, (String, u32)>,
) -> Result<(), String> {
    for (i, running) in samples.iter().enumerate() {
        let mut by_slot: BTreeMap<&(String, u32), Vec<&str>> = BTreeMap::new();
        for id in running {
            if let Some(slot) = slot_of.get(id) {
                by_slot.entry(slot).or_default().push(id);
            }
        }
        if let Some((slot, ids)) = by_slot.iter().find(|(_, ids)| ids.len() > 1) {
            return Err(format!(
                "replica {} of job {} ran {} times at once in sample {i}: {ids:?}",
                slot.1,
                slot.0,
                ids.len()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(seq: u64, thread: u64, kind: EventKind) -> Event {
        Event {
            seq,
            thread,
            job: "j".into(),
            kind,
        }
    }

    fn init() -> BTreeMap<String, JobRegister> {
        BTreeMap::from([(
            "j".to_string(),
            JobRegister {
                version: 1,
                arg: 1000,
            },
        )])
    }

    use EventKind::{Invoke, Return};

    #[test]
    fn a_sequential_history_is_linearizable() {
        let h = [
            ev(1, 1, Invoke(Op::Submit(7))),
            ev(2, 1, Return(Ret::Submitted(2))),
            ev(3, 2, Invoke(Op::Read)),
            ev(4, 2, Return(Ret::Read(2, 7))),
            ev(5, 1, Invoke(Op::Submit(7))),
            ev(6, 1, Return(Ret::Submitted(2))),
        ];
        check_linearizable(&init(), &h, std::time::Duration::from_secs(10)).unwrap();
    }

    #[test]
    fn a_stale_read_after_an_acknowledged_write_is_rejected() {
        let h = [
            ev(1, 1, Invoke(Op::Submit(7))),
            ev(2, 1, Return(Ret::Submitted(2))),
            ev(3, 2, Invoke(Op::Read)),
            ev(4, 2, Return(Ret::Read(1, 1000))),
        ];
        let e = check_linearizable(&init(), &h, std::time::Duration::from_secs(10)).unwrap_err();
        assert!(e.contains("not linearizable"), "{e}");
    }

    #[test]
    fn concurrent_operations_may_take_either_order() {
        // The read overlaps the submit: either answer is fine.
        for read in [Ret::Read(1, 1000), Ret::Read(2, 7)] {
            let h = [
                ev(1, 1, Invoke(Op::Submit(7))),
                ev(2, 2, Invoke(Op::Read)),
                ev(3, 2, Return(read.clone())),
                ev(4, 1, Return(Ret::Submitted(2))),
            ];
            check_linearizable(&init(), &h, std::time::Duration::from_secs(10)).unwrap();
        }
    }

    #[test]
    fn a_version_applied_twice_is_rejected() {
        // Two different specs both told they made version 2.
        let h = [
            ev(1, 1, Invoke(Op::Submit(7))),
            ev(2, 1, Return(Ret::Submitted(2))),
            ev(3, 2, Invoke(Op::Submit(8))),
            ev(4, 2, Return(Ret::Submitted(2))),
        ];
        assert!(check_linearizable(&init(), &h, std::time::Duration::from_secs(10)).is_err());
    }

    #[test]
    fn lost_acknowledged_versions_are_found() {
        let acked = vec![("j".to_string(), 2), ("j".to_string(), 3)];
        let versions = BTreeMap::from([("j".to_string(), BTreeSet::from([1, 2, 3]))]);
        check_acked_kept(&acked, &versions).unwrap();
        let versions = BTreeMap::from([("j".to_string(), BTreeSet::from([1, 2]))]);
        let e = check_acked_kept(&acked, &versions).unwrap_err();
        assert!(e.contains("(\"j\", 3)"), "{e}");
    }

    #[test]
    fn a_slot_running_twice_is_found() {
        let slot_of = BTreeMap::from([
            ("a".to_string(), ("j".to_string(), 0)),
            ("b".to_string(), ("j".to_string(), 0)),
            ("c".to_string(), ("j".to_string(), 1)),
        ]);
        let ok = vec![
            BTreeSet::from(["a".to_string(), "c".to_string()]),
            BTreeSet::from(["b".to_string(), "c".to_string()]),
        ];
        check_no_double_run(&ok, &slot_of).unwrap();
        let bad = vec![BTreeSet::from(["a".to_string(), "b".to_string()])];
        let e = check_no_double_run(&bad, &slot_of).unwrap_err();
        assert!(e.contains("ran 2 times"), "{e}");
    }
}

#[cfg(test)]
mod scale {
    use super::*;

    /// A linearizable history of `n` operations by three clients whose
    /// operations overlap, plus `settled` submits whose answers came only at
    /// the end (as the chaos run's unknown outcomes are settled).
    fn synthetic(n: u64, settled: u64) -> (BTreeMap<String, JobRegister>, Vec<Event>) {
        let init = BTreeMap::from([(
            "j".to_string(),
            JobRegister {
                version: 1,
                arg: 1000,
            },
        )]);
        let mut state = init["j"].clone();
        let mut events = Vec::new();
        let mut seq = 0;
        let mut late = Vec::new();
        let ev = |seq: &mut u64, thread: u64, kind: EventKind| {
            *seq += 1;
            Event {
                seq: *seq,
                thread,
                job: "j".into(),
                kind,
            }
        };
        for i in 0..n {
            let thread = i % 3;
            let op = if i % 2 == 0 {
                Op::Submit(1001 + (i % 5) as u32)
            } else {
                Op::Read
            };
            // Invoke, let the next client invoke too (overlap), then return.
            events.push(ev(&mut seq, thread, EventKind::Invoke(op.clone())));
            let ret = state.invoke(&op);
            if i < settled {
                late.push((100 + i, op, ret));
                events.pop();
                let (t, op, _) = late.last().unwrap().clone();
                events.push(ev(&mut seq, t, EventKind::Invoke(op)));
                continue;
            }
            events.push(ev(&mut seq, thread, EventKind::Return(ret)));
        }
        for (t, _, ret) in late {
            events.push(ev(&mut seq, t, EventKind::Return(ret)));
        }
        (init, events)
    }

    #[test]
    #[ignore = "how the checker scales: cargo test -p drover-e2e --lib scale -- --ignored --nocapture"]
    fn checker_scales() {
        for (n, settled) in [(200, 0), (1500, 0), (1500, 5), (5000, 5)] {
            let (init, events) = synthetic(n, settled);
            let start = std::time::Instant::now();
            let r = check_linearizable(&init, &events, std::time::Duration::from_secs(60));
            eprintln!(
                "{n} ops, {settled} settled late: {:?} in {:?}",
                r.is_ok(),
                start.elapsed()
            );
        }
    }
}
