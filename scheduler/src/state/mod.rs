//! The replicated state machine: jobs, allocations and nodes.
//!
//! Every replica holds a `State` and changes it only by applying committed
//! `Command`s in log order. `apply` is deterministic (no clocks: commands carry
//! the proposer's timestamp; no randomness: controllers choose allocation ids
//! before proposing), so all replicas that applied the same prefix of the log
//! hold equal states. Commands are validated again at apply time against the
//! state they meet, because a controller may have planned on an older view.

pub mod acl;
mod apply;
pub mod backup;
pub mod ca;
pub mod events;
mod model;
mod refusal;
pub mod subnet;
pub mod version;

pub use model::*;
pub use refusal::Refusal;

use drover_proto::spec::JobSpec;
use serde::{Deserialize, Serialize};

/// A change to the state, proposed through Raft.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub enum Command {
    /// A user submitted a spec: a new version unless it equals the current one.
    SubmitJob {
        request_id: String,
        spec: Box<JobSpec>,
        at_ms: i64,
    },
    /// A user stopped a job; with `purge` it is forgotten once its allocations ended.
    StopJob {
        request_id: String,
        name: String,
        purge: bool,
        at_ms: i64,
    },
    /// A node agent (re)registered.
    RegisterNode {
        name: String,
        address: String,
        cpu_millis: u64,
        memory_bytes: u64,
        at_ms: i64,
        /// The cluster's container range; the node gets the lowest free /24 of it.
        #[serde(default)]
        cluster_cidr: String,
        /// Host volumes its agent offers: name, read-only.
        #[serde(default)]
        volumes: std::collections::BTreeMap<String, bool>,
        /// Disk for containers' writable layers (0: not said).
        #[serde(default)]
        disk_bytes: u64,
        /// Its agent's labels and facts (cluster version 4).
        #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
        labels: std::collections::BTreeMap<String, String>,
        #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
        facts: std::collections::BTreeMap<String, String>,
    },
    /// The leader saw a node stop (or resume) heartbeating.
    SetNodeStatus {
        name: String,
        status: NodeStatus,
        at_ms: i64,
    },
    /// A node's agent said its container network became unavailable (a
    /// reason) or works again (""). The leader proposes it when the value
    /// its heartbeats carry changes.
    SetNodeNetwork {
        name: String,
        error: String,
        at_ms: i64,
    },
    /// The reconciler placed new allocations.
    PlaceAllocations {
        allocations: Vec<NewAllocation>,
        at_ms: i64,
    },
    /// The reconciler wants these allocations stopped.
    StopAllocations {
        ids: Vec<String>,
        reason: String,
        at_ms: i64,
    },
    /// Why a job's missing replicas could not be placed (None: they could).
    SetPendingReason {
        job: String,
        reason: Option<String>,
        /// When (0 in entries from before events were dated).
        #[serde(default, skip_serializing_if = "is_zero")]
        at_ms: i64,
    },
    /// A node reported what its allocations are doing.
    ReportAllocations {
        node: String,
        reports: Vec<AllocationReport>,
        at_ms: i64,
    },
    /// Forget a stopped job whose allocations have all ended.
    PurgeJob {
        name: String,
        #[serde(default, skip_serializing_if = "is_zero")]
        at_ms: i64,
    },
    /// A user changed the replica count (no new version, no rollout).
    ScaleJob {
        request_id: String,
        name: String,
        replicas: u32,
        at_ms: i64,
    },
    /// The rollout controller recorded progress, success or failure.
    SetRollout { job: String, rollout: Rollout },
    /// Go back to an earlier version (`to`, or the last stable one) with a rollout.
    RollbackJob {
        request_id: String,
        name: String,
        to: Option<u64>,
        reason: String,
        at_ms: i64,
        /// For automatic rollbacks: (version, generation, started_at_ms) of the
        /// failed rollout; refused if another rollout is in force by now.
        #[serde(default)]
        expect: Option<(u64, u64, i64)>,
    },
    /// Let a rollout waiting on its canaries continue.
    PromoteJob {
        request_id: String,
        name: String,
        at_ms: i64,
    },
    /// Hold (or continue) a rollout.
    PauseJob {
        request_id: String,
        name: String,
        paused: bool,
        at_ms: i64,
    },
    /// Store a secret (`data` sealed: see `crate::secrets`) or a config
    /// (`data` as given). `create` refuses a name that exists, an update
    /// one that does not; an update restarts every job that mounts it.
    PutSecret {
        request_id: String,
        kind: model::SecretKind,
        name: String,
        #[serde(with = "model::hex_bytes")]
        data: Vec<u8>,
        size: u64,
        create: bool,
        /// The id of the key a secret was sealed with (see
        /// `crate::secrets::SecretKey::id`): the cluster has one key.
        #[serde(default)]
        key_id: String,
        at_ms: i64,
    },
    /// Forget a secret or config no job mounts.
    DeleteSecret {
        request_id: String,
        kind: model::SecretKind,
        name: String,
        at_ms: i64,
    },
    /// Roll every replica with no spec change.
    RestartJob {
        request_id: String,
        name: String,
        at_ms: i64,
    },
    /// Starts a run of a periodic batch job: its firing at `scheduled_ms`
    /// (the leader's controller), or now, outside its schedule (`None`:
    /// `drover job launch`).
    LaunchRun {
        request_id: String,
        name: String,
        scheduled_ms: Option<i64>,
        at_ms: i64,
    },
    /// An operator sets (`Some`) or removes (`None`) labels on a node
    /// (`drover node label`).
    SetNodeLabels {
        name: String,
        labels: std::collections::BTreeMap<String, Option<String>>,
        at_ms: i64,
    },
    /// Cordon/uncordon a node; `drain` also moves its allocations away.
    SetNodeSchedulable {
        name: String,
        schedulable: bool,
        drain: bool,
        at_ms: i64,
    },
    /// Forget a node that is down: a user confirmed it is gone (`drover node
    /// rm`), or it stayed down longer than the scheduler keeps such nodes.
    /// Its replicas, even those that keep running when cut off, are
    /// replaced, and its subnet is free again.
    RemoveNode {
        name: String,
        reason: String,
        at_ms: i64,
    },
    /// Turn access control on, with the first (admin) token. Refused
    /// once done.
    AclBootstrap { token: acl::Token },
    /// A new ACL token (its secret's hash only).
    CreateAclToken { token: acl::Token },
    /// Revoke the ACL token with this accessor (or unique prefix of it).
    RevokeAclToken { accessor: String },
    /// Start replacing the cluster CA (see `ca`): refused while a rotation
    /// is under way.
    RotateCa {
        old_cert: String,
        new_cert: String,
        new_key: ca::SecretPem,
        new_subject: String,
        #[serde(default)]
        min_phase_ms: i64,
        at_ms: i64,
    },
    /// The leader saw everyone catch up with `from`: the next phase.
    AdvanceCaRotation {
        from: ca::Phase,
        new_subject: String,
        at_ms: i64,
    },
    /// Put back a saved snapshot's desired state (`drover operator snapshot
    /// restore`): its jobs, secrets, configs and ACL tokens replace this
    /// cluster's; replicas that do not run a restored job's spec stop, and
    /// the controller places the restored jobs (see `backup`).
    Restore {
        restored: Box<backup::Restored>,
        /// The log index the snapshot was taken at (for the history).
        from_index: u64,
        at_ms: i64,
    },
    /// One part of a restore too large for one log entry (a log entry must
    /// reach the followers within the heartbeat interval): parts `0..parts`
    /// of one `restore` are staged in order, out of sight of every reader,
    /// and the last puts the whole back as `Restore` does. Part 0 carries
    /// the secrets, configs and tokens; every part some of the jobs. A part
    /// 0 drops whatever another restore had staged. Needs cluster version 3.
    RestorePart {
        restore: String,
        part: u32,
        parts: u32,
        restored: Box<backup::Restored>,
        from_index: u64,
        at_ms: i64,
    },
    /// Every member supports cluster version `version`: the cluster runs at
    /// it from now on (see `version`). Only ever raises the version.
    SetClusterVersion { version: u32 },
    /// Does nothing; used by tests and to commit a marker entry.
    Noop,
    /// Commands proposed concurrently, applied in order as one log entry:
    /// they share one append and one fsync (see `crate::cluster::batch`).
    /// Shared, not copied, when the entry is: openraft hands every reader
    /// (each follower's replication, the state machine) its own copy of
    /// an entry, and a batch holds up to 512 specs. Serialized as the list.
    Batch(std::sync::Arc<Vec<Command>>),
}

impl Command {
    /// Sets the time of the command (and of every command in a batch) to
    /// `now_ms`. The leader stamps what it proposes, so every time in the
    /// state comes from one clock, whichever replica received the request.
    pub fn stamp(&mut self, now_ms: i64) {
        match self {
            Command::SubmitJob { at_ms, .. }
            | Command::StopJob { at_ms, .. }
            | Command::RegisterNode { at_ms, .. }
            | Command::SetNodeStatus { at_ms, .. }
            | Command::SetNodeNetwork { at_ms, .. }
            | Command::PlaceAllocations { at_ms, .. }
            | Command::StopAllocations { at_ms, .. }
            | Command::ReportAllocations { at_ms, .. }
            | Command::ScaleJob { at_ms, .. }
            | Command::RollbackJob { at_ms, .. }
            | Command::PromoteJob { at_ms, .. }
            | Command::PauseJob { at_ms, .. }
            | Command::RestartJob { at_ms, .. }
            | Command::LaunchRun { at_ms, .. }
            | Command::PutSecret { at_ms, .. }
            | Command::DeleteSecret { at_ms, .. }
            | Command::SetNodeSchedulable { at_ms, .. }
            | Command::SetNodeLabels { at_ms, .. }
            | Command::RemoveNode { at_ms, .. }
            | Command::RotateCa { at_ms, .. }
            | Command::AdvanceCaRotation { at_ms, .. }
            | Command::Restore { at_ms, .. }
            | Command::RestorePart { at_ms, .. }
            | Command::SetPendingReason { at_ms, .. }
            | Command::PurgeJob { at_ms, .. } => *at_ms = now_ms,
            Command::Batch(cmds) => std::sync::Arc::make_mut(cmds)
                .iter_mut()
                .for_each(|c| c.stamp(now_ms)),
            Command::SetRollout { .. }
            | Command::AclBootstrap { .. }
            | Command::CreateAclToken { .. }
            | Command::RevokeAclToken { .. }
            | Command::SetClusterVersion { .. }
            | Command::Noop => {}
        }
    }
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

/// What applying a command answered.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct CommandResult {
    /// False when the command was refused at apply time; `refusal` says
    /// why (and `error` in words, as results remembered before said it).
    pub ok: bool,
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<Refusal>,
    /// The job version a submission created or matched.
    pub version: u64,
    /// Whether the command changed anything.
    pub changed: bool,
    /// How many allocations a command touched.
    pub count: u32,
    /// What happened, in words (e.g. `scaled to 5`).
    #[serde(default)]
    pub note: String,
    /// For a `Batch`: each command's result, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub batch: Vec<CommandResult>,
}

impl CommandResult {
    fn ok(changed: bool) -> Self {
        CommandResult {
            ok: true,
            changed,
            ..Default::default()
        }
    }

    pub(crate) fn refused(refusal: Refusal) -> Self {
        CommandResult {
            ok: false,
            error: Some(refusal.to_string()),
            refusal: Some(refusal),
            ..Default::default()
        }
    }

    /// The result if the command was taken, its refusal if not.
    pub fn accepted(self) -> Result<CommandResult, Refusal> {
        if self.ok {
            return Ok(self);
        }
        Err(match self.refusal {
            Some(r) => r,
            None => Refusal::Conflict(self.error.unwrap_or_default()),
        })
    }
}
