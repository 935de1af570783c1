//! The plain data the state machine holds.

use drover_proto::spec::JobSpec;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Everything the cluster has agreed on.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct State {
    pub jobs: BTreeMap<String, Job>,
    pub allocations: BTreeMap<String, Allocation>,
    pub nodes: BTreeMap<String, Node>,
    /// Results of recent client requests by request id, so a retried write
    /// applies once. Up to 200,000 of them under a full load of writes:
    /// persistent (structurally shared) collections, so the copy a snapshot
    /// takes under the state lock costs nothing, not a deep copy that holds
    /// up applying. They serialize as a map and lists, as before.
    pub requests: imbl::OrdMap<String, super::CommandResult>,
    pub request_order: imbl::Vector<String>,
    /// When each request in `request_order` was made (leader time, ms).
    #[serde(default)]
    pub request_at_ms: imbl::Vector<i64>,
    /// The log index of the last command applied.
    pub last_index: u64,
    /// The container address range node subnets come from: the first one a
    /// replica proposed, the same for every replica (a replica's own
    /// `--cluster-cidr` only matters for a cluster that has none yet).
    #[serde(default)]
    pub cluster_cidr: String,
    /// API tokens, and whether they are required (see `super::acl`).
    #[serde(default)]
    pub acl: super::acl::Acl,
    /// The latest replacement of the cluster CA (see `super::ca`).
    #[serde(default)]
    pub ca_rotation: Option<super::ca::CaRotation>,
    /// Secrets (sealed: see `crate::secrets`) and configs, by name.
    #[serde(default)]
    pub secrets: BTreeMap<String, StoredSecret>,
    #[serde(default)]
    pub configs: BTreeMap<String, StoredSecret>,
    /// The id of the key every secret is sealed with (set by the first).
    #[serde(default)]
    pub secrets_key_id: String,
    /// The version the cluster runs at (see `super::version`); 0 in state
    /// from before versions were recorded, which runs at 1.
    #[serde(default)]
    pub cluster_version: u32,
    /// The parts of a restore staged so far (see `Command::RestorePart`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restoring: Option<super::backup::Staged>,
    /// What applying says happened, while the state machine listens (see
    /// `super::events`). Not state: never saved, never compared, not copied.
    #[serde(skip)]
    pub events: super::events::Recorder,
}

/// A secret or a config, as the replicated state keeps it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct StoredSecret {
    pub version: u64,
    /// A secret's value sealed with the peers' secrets key; a config's as given.
    #[serde(with = "hex_bytes")]
    pub data: Vec<u8>,
    /// The value's size in the clear.
    pub size: u64,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// Secret or config.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum SecretKind {
    Secret,
    Config,
}

impl SecretKind {
    pub fn parse(s: &str) -> Option<SecretKind> {
        match s {
            "secret" => Some(SecretKind::Secret),
            "config" => Some(SecretKind::Config),
            _ => None,
        }
    }

    /// The CLI's command for it (`drover config` is the CLI's own contexts).
    pub fn command(self) -> &'static str {
        match self {
            SecretKind::Secret => "secret",
            SecretKind::Config => "configmap",
        }
    }

    pub fn word(self) -> &'static str {
        match self {
            SecretKind::Secret => "secret",
            SecretKind::Config => "config",
        }
    }

    /// The names a job's current spec mounts of this kind.
    pub fn used_by(self, spec: &JobSpec) -> impl Iterator<Item = &str> {
        let list = match self {
            SecretKind::Secret => &spec.secrets,
            SecretKind::Config => &spec.configs,
        };
        list.iter().map(|f| f.name.as_str())
    }
}

impl State {
    /// The secrets or the configs.
    pub fn stored(&self, kind: SecretKind) -> &BTreeMap<String, StoredSecret> {
        match kind {
            SecretKind::Secret => &self.secrets,
            SecretKind::Config => &self.configs,
        }
    }

    pub fn stored_mut(&mut self, kind: SecretKind) -> &mut BTreeMap<String, StoredSecret> {
        match kind {
            SecretKind::Secret => &mut self.secrets,
            SecretKind::Config => &mut self.configs,
        }
    }

    /// The jobs (not stopped) whose current version mounts `name` of
    /// `kind`, or that have a replica wanted of a version that does.
    pub fn jobs_using(&self, kind: SecretKind, name: &str) -> Vec<String> {
        self.jobs
            .values()
            .filter(|j| {
                let uses = |spec: &JobSpec| kind.used_by(spec).any(|n| n == name);
                !j.stopped
                    && (uses(j.current_spec())
                        || self
                            .job_allocations(&j.name)
                            .filter(|a| a.desired == Desired::Run && !a.state.is_terminal())
                            .any(|a| j.version(a.version).is_some_and(|v| uses(&v.spec))))
            })
            .map(|j| j.name.clone())
            .collect()
    }

    /// The first secret or config `spec` mounts that does not exist, as
    /// the refusal's words.
    pub fn missing_mount(&self, spec: &JobSpec) -> Option<String> {
        for kind in [SecretKind::Secret, SecretKind::Config] {
            for (i, name) in kind.used_by(spec).enumerate() {
                if !self.stored(kind).contains_key(name) {
                    return Some(format!(
                        "{}s[{i}].name: no {} {name:?} (create it with `drover {} create {name} --from-file FILE`)",
                        kind.word(),
                        kind.word(),
                        kind.command()
                    ));
                }
            }
        }
        None
    }
}

/// Bytes as hex in the state's JSON.
pub(crate) mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(b))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        hex::decode(s).map_err(serde::de::Error::custom)
    }
}

/// A job and every version of it that was submitted.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Job {
    pub name: String,
    pub versions: Vec<JobVersion>,
    /// The version that should run.
    pub current: u64,
    /// The replica count in force (the spec's, unless scaled since).
    pub replicas: u32,
    pub stopped: bool,
    pub purge: bool,
    /// Why missing replicas are not placed.
    pub pending_reason: Option<String>,
    pub submitted_at_ms: i64,
    /// The `replicas` of the last submitted spec: a re-run that leaves it
    /// unchanged keeps a scaled count.
    #[serde(default)]
    pub spec_replicas: u32,
    /// Bumped by `job restart`: allocations of an older generation are rolled.
    #[serde(default)]
    pub generation: u64,
    /// The last version whose rollout succeeded: where auto-rollback returns to.
    #[serde(default)]
    pub stable_version: Option<u64>,
    /// The rollout in progress or the last one that ended.
    #[serde(default)]
    pub rollout: Option<Rollout>,
    /// A batch job's run of its current version and generation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<BatchRun>,
    /// A periodic batch job's firings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub periodic: Option<Periodic>,
}

/// A periodic batch job's firings so far.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Periodic {
    /// The scheduled time of the last firing (run or skipped).
    pub last_ms: i64,
    /// Runs started, on schedule or by `drover job launch`.
    pub runs: u64,
    /// Firings skipped because the previous run was still going.
    pub skipped: u64,
}

/// How a batch job's current version is doing: replicas that succeeded
/// and failed, counted as they end (an allocation's end is reported once),
/// and how the run ended. A new version, `job restart`, or running a
/// stopped job again starts a new run.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct BatchRun {
    pub version: u64,
    pub generation: u64,
    pub succeeded: u32,
    pub failed: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended: Option<BatchEnd>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct BatchEnd {
    /// Every completion succeeded (else: more replicas failed than `retries`).
    pub complete: bool,
    pub at_ms: i64,
    pub reason: String,
}

impl Job {
    /// The batch run of the current version and generation, if it has one.
    pub fn batch_run(&self) -> Option<&BatchRun> {
        self.batch
            .as_ref()
            .filter(|b| b.version == self.current && b.generation == self.generation)
    }

    /// The time a periodic job's next firing comes after: its last firing,
    /// or the submission of its current version if that came later.
    pub fn periodic_after_ms(&self) -> i64 {
        self.periodic.as_ref().map_or(self.submitted_at_ms, |p| {
            p.last_ms.max(self.submitted_at_ms)
        })
    }

    /// Whether the job's current run has ended (a batch job's only).
    pub fn batch_ended(&self) -> Option<&BatchEnd> {
        self.batch_run().and_then(|b| b.ended.as_ref())
    }

    /// Counts the end of a replica of `version` and `generation`:
    /// succeeded (exit 0) or failed. Ends the run once enough succeeded or
    /// too many failed. Nothing for replicas of another run.
    pub fn count_batch_end(&mut self, version: u64, generation: u64, success: bool, at_ms: i64) {
        let spec = self.current_spec();
        let (batch, completions, retries) = (
            spec.job_type == drover_proto::spec::JobType::Batch,
            spec.completions(),
            spec.retries(),
        );
        if !batch || version != self.current || generation != self.generation {
            return;
        }
        if self.batch_run().is_none() {
            self.batch = Some(BatchRun {
                version,
                generation,
                ..BatchRun::default()
            });
        }
        let run = self.batch.as_mut().expect("set above");
        if run.ended.is_some() {
            return;
        }
        if success {
            run.succeeded += 1;
        } else {
            run.failed += 1;
        }
        if run.succeeded >= completions {
            run.ended = Some(BatchEnd {
                complete: true,
                at_ms,
                reason: format!("{} of {completions} completions succeeded", run.succeeded),
            });
        } else if run.failed > retries {
            run.ended = Some(BatchEnd {
                complete: false,
                at_ms,
                reason: format!(
                    "{} replicas failed, more than its retries ({retries})",
                    run.failed
                ),
            });
        }
    }

    /// Forgets versions older than the last `keep` (the current spec's
    /// `update.keep_versions`), except the current one, the stable one
    /// (auto-rollback's target), the one rolling out, and any that `in_use`
    /// (versions allocations still name). Kubernetes keeps 10 revisions,
    /// Nomad 6: a job updated all day must not grow the state without bound.
    pub fn prune_versions(&mut self, in_use: &std::collections::BTreeSet<u64>) {
        let keep = self.current_spec().update.keep_versions.max(1) as usize;
        let Some(first_kept) = self
            .versions
            .len()
            .checked_sub(keep)
            .map(|i| self.versions[i].version)
        else {
            return;
        };
        let keep = [
            Some(self.current),
            self.stable_version,
            self.rollout.as_ref().map(|r| r.version),
        ];
        self.versions.retain(|v| {
            v.version >= first_kept
                || keep.contains(&Some(v.version))
                || in_use.contains(&v.version)
        });
    }

    pub fn version(&self, v: u64) -> Option<&JobVersion> {
        self.versions.iter().find(|x| x.version == v)
    }

    /// Records how a version's rollout ended (first word wins: it is history).
    pub fn set_outcome(&mut self, version: u64, outcome: VersionOutcome) {
        if let Some(v) = self.versions.iter_mut().find(|v| v.version == version) {
            v.outcome = Some(outcome);
        }
    }

    pub fn current_spec(&self) -> &JobSpec {
        &self
            .version(self.current)
            .expect("a job's current version exists")
            .spec
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct JobVersion {
    pub version: u64,
    /// Shared, not copied, when the state is (the controllers copy it on
    /// every change they plan from); serialized as the spec itself.
    pub spec: std::sync::Arc<JobSpec>,
    pub submitted_at_ms: i64,
    /// How its rollout ended, once it has.
    #[serde(default)]
    pub outcome: Option<VersionOutcome>,
}

/// How a version's rollout ended. Decisions go by the kind; the words are
/// for people. Stored as the words (what snapshots have always held, so
/// replicas of either version read each other's), and read back into the
/// kind; words this version does not recognise are kept as they are.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "String", from = "String")]
pub enum VersionOutcome {
    Succeeded,
    /// Failed for `reason`, and was rolled back to a version, if it was.
    Failed {
        reason: String,
        rolled_back_to: Option<u64>,
    },
    /// Replaced before its rollout ended, by `by` ("a newer version").
    Superseded {
        by: String,
    },
    /// Rolled back from by hand.
    RolledBack {
        to: u64,
    },
    Other(String),
}

impl VersionOutcome {
    pub fn is_failed(&self) -> bool {
        matches!(self, VersionOutcome::Failed { .. })
    }
}

impl std::fmt::Display for VersionOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VersionOutcome::Succeeded => f.write_str("succeeded"),
            VersionOutcome::Failed {
                reason,
                rolled_back_to: None,
            } => write!(f, "failed: {reason}"),
            VersionOutcome::Failed {
                reason,
                rolled_back_to: Some(v),
            } => write!(f, "failed: {reason}; rolled back to version {v}"),
            VersionOutcome::Superseded { by } => write!(f, "superseded by {by}"),
            VersionOutcome::RolledBack { to } => write!(f, "rolled back to version {to} by hand"),
            VersionOutcome::Other(words) => f.write_str(words),
        }
    }
}

impl From<VersionOutcome> for String {
    fn from(o: VersionOutcome) -> String {
        o.to_string()
    }
}

impl From<String> for VersionOutcome {
    /// Reads the words `Display` writes.
    fn from(words: String) -> VersionOutcome {
        if words == "succeeded" {
            return VersionOutcome::Succeeded;
        }
        if let Some(rest) = words.strip_prefix("failed: ") {
            let (reason, rolled_back_to) = match rest.rsplit_once("; rolled back to version ") {
                Some((r, v)) if v.parse::<u64>().is_ok() => (r, v.parse().ok()),
                _ => (rest, None),
            };
            return VersionOutcome::Failed {
                reason: reason.to_string(),
                rolled_back_to,
            };
        }
        if let Some(by) = words.strip_prefix("superseded by ") {
            return VersionOutcome::Superseded { by: by.to_string() };
        }
        if let Some(v) = words
            .strip_prefix("rolled back to version ")
            .and_then(|r| r.strip_suffix(" by hand"))
            .and_then(|v| v.parse().ok())
        {
            return VersionOutcome::RolledBack { to: v };
        }
        VersionOutcome::Other(words)
    }
}

impl Rollout {
    /// A rollout to the job's current version and generation, starting now.
    pub fn start(job: &Job, kind: RolloutKind, promoted: bool, at_ms: i64) -> Rollout {
        Rollout {
            version: job.current,
            generation: job.generation,
            kind,
            state: RolloutState::Running,
            promoted,
            started_at_ms: at_ms,
            progress_at_ms: at_ms,
            healthy: 0,
            finished_at_ms: None,
            reason: String::new(),
        }
    }
}

/// Why a rollout replaces allocations.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum RolloutKind {
    /// A new version was submitted.
    Update,
    /// Back to an earlier version, by hand or automatically.
    Rollback,
    /// `job restart`: same version, every replica replaced.
    Restart,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum RolloutState {
    Running,
    Paused,
    /// Canaries are healthy; waiting for `job promote`.
    WaitingPromotion,
    Succeeded,
    Failed,
}

impl RolloutState {
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutState::Running => "running",
            RolloutState::Paused => "paused",
            RolloutState::WaitingPromotion => "waiting-promotion",
            RolloutState::Succeeded => "succeeded",
            RolloutState::Failed => "failed",
        }
    }

    pub fn is_done(self) -> bool {
        matches!(self, RolloutState::Succeeded | RolloutState::Failed)
    }
}

/// Replacing a job's allocations with ones of `version` (and `generation`).
/// Replicated state: a new leader continues a rollout where it stood.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Rollout {
    pub version: u64,
    pub generation: u64,
    pub kind: RolloutKind,
    pub state: RolloutState,
    /// Canaries were promoted (or none were asked for).
    pub promoted: bool,
    pub started_at_ms: i64,
    /// When the count of healthy new replicas last grew.
    pub progress_at_ms: i64,
    pub healthy: u32,
    pub finished_at_ms: Option<i64>,
    /// Why it failed, or what it did.
    pub reason: String,
}

/// What the scheduler wants of an allocation.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Desired {
    Run,
    Stop,
}

/// What the node last reported of an allocation.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum AllocState {
    Pending,
    Starting,
    Running,
    Stopping,
    Stopped,
    Failed,
}

impl AllocState {
    /// Its word (the proto crate's vocabulary).
    pub fn as_str(self) -> &'static str {
        self.phase().word()
    }

    /// The allocation's process is gone for good.
    pub fn is_terminal(self) -> bool {
        matches!(self, AllocState::Stopped | AllocState::Failed)
    }

    pub fn from_phase(p: drover_proto::pb::AllocationPhase) -> Option<AllocState> {
        use drover_proto::pb::AllocationPhase as P;
        Some(match p {
            P::Unspecified => return None,
            P::Pending => AllocState::Pending,
            P::Starting => AllocState::Starting,
            P::Running => AllocState::Running,
            P::Stopping => AllocState::Stopping,
            P::Stopped => AllocState::Stopped,
            P::Failed => AllocState::Failed,
        })
    }

    pub fn phase(self) -> drover_proto::pb::AllocationPhase {
        use drover_proto::pb::AllocationPhase as P;
        match self {
            AllocState::Pending => P::Pending,
            AllocState::Starting => P::Starting,
            AllocState::Running => P::Running,
            AllocState::Stopping => P::Stopping,
            AllocState::Stopped => P::Stopped,
            AllocState::Failed => P::Failed,
        }
    }
}

/// One replica of one job version placed on one node.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Allocation {
    pub id: String,
    /// `<job>-<replica>`: also the container's hostname.
    pub name: String,
    pub job: String,
    pub version: u64,
    pub replica: u32,
    pub node: String,
    pub desired: Desired,
    pub state: AllocState,
    pub pid: u32,
    pub exit_code: Option<i32>,
    /// What the node said of it (e.g. `exited with code 3`).
    pub reason: String,
    /// Why the scheduler wants it stopped, when it does.
    #[serde(default)]
    pub desired_reason: String,
    pub restarts: u32,
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    /// Disk it reserves for its writable layer (`resources.disk`).
    #[serde(default)]
    pub disk_bytes: u64,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    /// The job's generation when placed (see `Job::generation`).
    #[serde(default)]
    pub generation: u64,
    /// What the node's health check says.
    #[serde(default)]
    pub health: HealthState,
    /// Since when it has been running (this run).
    #[serde(default)]
    pub running_since_ms: Option<i64>,
    /// Since when its health check has passed (this run).
    #[serde(default)]
    pub healthy_since_ms: Option<i64>,
    /// Placed as a canary of a rollout.
    #[serde(default)]
    pub canary: bool,
    /// Its address on the node's container network, as the node reported it.
    #[serde(default)]
    pub ip: String,
    /// Why its health check fails, while it does (the node's words after
    /// "unhealthy: " in `reason`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub health_detail: String,
    /// When its node starts it again after it ended (ms since the epoch, the
    /// node's clock); 0 when it is not waiting to restart.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub restarting_at_ms: i64,
    /// Asked to stop, it outlasted its stop grace and was killed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub killed_at_grace: bool,
}

/// The node's health verdict on an allocation.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum HealthState {
    /// No check, or no verdict yet.
    #[default]
    Unknown,
    Healthy,
    Unhealthy,
}

impl HealthState {
    pub fn from_wire(h: drover_proto::pb::Health) -> HealthState {
        match h {
            drover_proto::pb::Health::Unknown => HealthState::Unknown,
            drover_proto::pb::Health::Healthy => HealthState::Healthy,
            drover_proto::pb::Health::Unhealthy => HealthState::Unhealthy,
        }
    }

    pub fn wire(self) -> drover_proto::pb::Health {
        match self {
            HealthState::Unknown => drover_proto::pb::Health::Unknown,
            HealthState::Healthy => drover_proto::pb::Health::Healthy,
            HealthState::Unhealthy => drover_proto::pb::Health::Unhealthy,
        }
    }

    /// Its word (the proto crate's vocabulary).
    pub fn as_str(self) -> &'static str {
        self.wire().word()
    }
}

impl Allocation {
    /// Whether it holds resources on its node: wanted, or not yet ended.
    pub fn holds_resources(&self) -> bool {
        !self.state.is_terminal()
    }
}

/// A placement decided by the reconciler.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct NewAllocation {
    pub id: String,
    pub job: String,
    pub version: u64,
    pub replica: u32,
    pub node: String,
    #[serde(default)]
    pub generation: u64,
    #[serde(default)]
    pub canary: bool,
}

/// An observation from a node.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct AllocationReport {
    pub id: String,
    pub state: AllocState,
    pub pid: u32,
    pub exit_code: Option<i32>,
    pub reason: String,
    pub restarts: u32,
    #[serde(default)]
    pub health: HealthState,
    #[serde(default)]
    pub ip: String,
    /// Why its health check fails, while it does.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub health_detail: String,
    /// When the node starts it again (ms since the epoch); 0: not waiting.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub restarting_at_ms: i64,
    /// Asked to stop, it outlasted its stop grace and was killed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub killed_at_grace: bool,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum NodeStatus {
    Ready,
    Down,
}

impl NodeStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeStatus::Ready => "ready",
            NodeStatus::Down => "down",
        }
    }
}

/// Labels or facts of a node: key, value.
pub type Attributes = BTreeMap<String, String>;

/// A machine running an agent.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Node {
    pub name: String,
    /// The agent's own API address (logs).
    pub address: String,
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    pub status: NodeStatus,
    /// False when cordoned.
    pub schedulable: bool,
    /// Its allocations are being moved elsewhere.
    #[serde(default)]
    pub draining: bool,
    /// Its container subnet, from the cluster range.
    #[serde(default)]
    pub subnet: String,
    /// Why its container network is unavailable, as its agent last said
    /// ("" when it works): no private-network replica is placed here meanwhile.
    #[serde(default)]
    pub network_error: String,
    /// Host volumes its agent offers jobs: name, read-only.
    #[serde(default)]
    pub volumes: BTreeMap<String, bool>,
    /// Disk for containers' writable layers (0: its agent did not say).
    #[serde(default)]
    pub disk_bytes: u64,
    /// The labels its agent was started with (`--label`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Labels set (`Some`) or removed (`None`) with `drover node label`:
    /// they win over the agent's and outlive its restarts.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub label_overrides: BTreeMap<String, Option<String>>,
    /// What its agent reports about the machine (arch, kernel, cores...),
    /// seen by constraints under `node.`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub facts: BTreeMap<String, String>,
    pub registered_at_ms: i64,
    pub updated_at_ms: i64,
}

impl Node {
    /// The labels in force: the agent's, with the operator's changes.
    pub fn labels_in_force(&self) -> BTreeMap<String, String> {
        let mut out = self.labels.clone();
        for (k, v) in &self.label_overrides {
            match v {
                Some(v) => out.insert(k.clone(), v.clone()),
                None => out.remove(k),
            };
        }
        out
    }

    /// What constraints see: the labels in force, the facts under `node.`,
    /// and `node.name`.
    pub fn attributes(&self) -> BTreeMap<String, String> {
        use drover_proto::spec::constraint::FACT_PREFIX;
        let mut out = self.labels_in_force();
        for (k, v) in &self.facts {
            out.insert(format!("{FACT_PREFIX}{k}"), v.clone());
        }
        out.insert(format!("{FACT_PREFIX}name"), self.name.clone());
        out
    }
}

/// Resources in use on a node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    pub disk_bytes: u64,
    pub allocations: u32,
}

impl State {
    /// Resources held on each node by allocations that have not ended.
    pub fn usage(&self) -> BTreeMap<String, Usage> {
        let mut out: BTreeMap<String, Usage> = BTreeMap::new();
        for a in self.allocations.values().filter(|a| a.holds_resources()) {
            let u = out.entry(a.node.clone()).or_default();
            u.cpu_millis += a.cpu_millis;
            u.memory_bytes += a.memory_bytes;
            u.disk_bytes += a.disk_bytes;
            u.allocations += 1;
        }
        out
    }

    /// Allocations of one job, oldest first.
    pub fn job_allocations<'a>(
        &'a self,
        job: &'a str,
    ) -> impl Iterator<Item = &'a Allocation> + 'a {
        self.allocations.values().filter(move |a| a.job == job)
    }

    /// Finds an allocation by full id or unique prefix.
    pub fn find_allocation(&self, prefix: &str) -> Result<&Allocation, String> {
        if let Some(a) = self.allocations.get(prefix) {
            return Ok(a);
        }
        let matches: Vec<&Allocation> = self
            .allocations
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, a)| a)
            .collect();
        match matches.len() {
            0 => Err(format!("no allocation with id {prefix:?}")),
            1 => Ok(matches[0]),
            n => Err(format!(
                "{n} allocations start with {prefix:?}: give more of the id"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_are_stored_as_their_words_and_read_back_into_kinds() {
        for (o, words) in [
            (VersionOutcome::Succeeded, "succeeded"),
            (
                VersionOutcome::Failed {
                    reason: "replica web-2 of version 3 crashed: exited with code 1".into(),
                    rolled_back_to: Some(2),
                },
                "failed: replica web-2 of version 3 crashed: exited with code 1; rolled back to version 2",
            ),
            (
                VersionOutcome::Failed {
                    reason: "no progress within 2m".into(),
                    rolled_back_to: None,
                },
                "failed: no progress within 2m",
            ),
            (
                VersionOutcome::Superseded {
                    by: "a newer version".into(),
                },
                "superseded by a newer version",
            ),
            (VersionOutcome::RolledBack { to: 4 }, "rolled back to version 4 by hand"),
            (VersionOutcome::Other("cancelled".into()), "cancelled"),
        ] {
            assert_eq!(o.to_string(), words);
            let json = serde_json::to_string(&o).unwrap();
            assert_eq!(json, serde_json::to_string(words).unwrap(), "stored as words");
            assert_eq!(serde_json::from_str::<VersionOutcome>(&json).unwrap(), o);
        }
    }
}
