//! The replicated state machine: jobs, allocations and nodes.
//!
//! (stub: being written; the types and `apply` signature are fixed.)

use serde::{Deserialize, Serialize};

/// Everything the cluster has agreed on. `apply` is the only way it changes.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct State {
    pub counter: u64,
}

/// A change to the state, proposed through Raft.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub enum Command {
    Noop,
}

/// What applying a command answered.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct CommandResult {
    pub ok: bool,
}

impl State {
    /// Apply one committed command at raft log `index`. Deterministic: no clocks, no I/O.
    pub fn apply(&mut self, index: u64, cmd: &Command) -> CommandResult {
        let _ = (index, cmd);
        self.counter += 1;
        CommandResult { ok: true }
    }
}
