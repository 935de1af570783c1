//! The job spec: what a user declares about a job.
//!
//! A job is a named set of identical replicas of one container: image,
//! command, environment, resources, restart policy, health check and update
//! strategy. Specs are YAML in the conventions Kubernetes and Compose users
//! know (see `examples/jobs/`). Parsing is strict (unknown fields are errors)
//! and validation names the field path and the rule for every problem; the
//! CLI runs both for fast feedback and the scheduler runs them again because
//! it is the authority. On the wire a spec travels as canonical JSON.

pub mod constraint;
mod parse;
pub mod schedule;
pub mod seccomp;
mod security;
mod validate;

pub use constraint::Constraint;
pub use parse::{from_json, from_yaml, from_yaml_in};
pub use schedule::{Overlap, Schedule};
pub use seccomp::SeccompProfile;
pub use security::{CapabilityChanges, SeccompMode, Security, CAPABILITIES};
pub use validate::{check_size, dns_label, validate};

use crate::quantity::{Cpu, Duration, Size};
use serde::{Deserialize, Deserializer, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// A problem with a spec: the field path and the rule it broke.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    pub path: String,
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every problem found in a spec.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct SpecError {
    pub errors: Vec<FieldError>,
}

impl SpecError {
    pub fn one(path: impl Into<String>, message: impl Into<String>) -> SpecError {
        SpecError {
            errors: vec![FieldError {
                path: path.into(),
                message: message.into(),
            }],
        }
    }
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lines: Vec<String> = self.errors.iter().map(|e| e.to_string()).collect();
        f.write_str(&lines.join("\n"))
    }
}

/// A declared job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    /// A DNS-1123 label: the job's name and the prefix of its replicas' hostnames.
    pub name: String,
    #[serde(default = "default_replicas")]
    pub replicas: u32,
    /// `oci:/path/to/layout:tag`.
    pub image: String,
    /// Replaces the image's entrypoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// Replaces the image's cmd.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
    #[serde(default)]
    pub resources: Resources,
    #[serde(default)]
    pub restart: Restart,
    #[serde(default = "default_grace")]
    pub stop_grace_period: Duration,
    #[serde(default)]
    pub network: Network,
    /// Whether a private-network replica may reach beyond the cluster
    /// (through the node, its address masqueraded); `none` keeps it to
    /// the cluster's containers and the node.
    #[serde(default, skip_serializing_if = "Egress::is_default")]
    pub egress: Egress,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<Health>,
    #[serde(default)]
    pub update: Update,
    /// `UID[:GID]` (or names from the image); replaces the image's `User`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Mount the container's root filesystem read-only.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only_rootfs: bool,
    /// Run a tiny init as the container's PID 1 (Docker's `--init`): it
    /// passes signals on to the command and reaps orphaned processes, so a
    /// shell-wrapped command stops on SIGTERM. Built into the runtime: the
    /// image needs nothing.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub init: bool,
    #[serde(default, skip_serializing_if = "Security::is_default")]
    pub security: Security,
    /// Named container ports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<Port>,
    /// Publish one port as a service on every node (the routing mesh).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expose: Option<Expose>,
    /// Host volumes to mount, by the names nodes' agents declare them
    /// under (`drover-agent run --volume data=/srv/data`): replicas go only
    /// to nodes that have them. A job never names a host path.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<VolumeMount>,
    /// Scratch space in memory (tmpfs), each replica its own, empty at
    /// every start; what is written counts against `resources.memory`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tmpfs: Vec<Tmpfs>,
    /// Secrets (`drover secret create`) as files, each at `path` (default
    /// `/run/secrets/NAME`), on a memory filesystem, read-only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<FileMount>,
    /// Configs (`drover config create`) as files at `path` (default
    /// `/NAME`), read-only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub configs: Vec<FileMount>,
    /// What a replica does when its node loses the scheduler (see
    /// `crate::fencing`).
    #[serde(default, skip_serializing_if = "OnDisconnect::is_default")]
    pub on_disconnect: OnDisconnect,
    /// Where replicas may run: every constraint must hold on a node's
    /// attributes (its labels, and its facts under `node.`) for a replica
    /// to be placed there (see [`constraint`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub constraints: Vec<Constraint>,
    /// At most this many replicas of the job's current version on one
    /// node (0: no limit): 1 keeps replicas on distinct nodes.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub max_per_node: u32,
    /// Preferences among the nodes that pass the constraints: each
    /// matching node gains the affinity's weight (-100 to 100).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub affinities: Vec<constraint::Affinity>,
    /// Replicas even over an attribute's values (zones, racks), ranked
    /// before affinities.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub spread: Vec<constraint::Spread>,
    /// 0 to 100 (default 50): a replica that fits nowhere may preempt
    /// replicas of jobs of lower priority, within their
    /// `update.max_unavailable`; jobs of higher priority are placed first.
    #[serde(
        default = "default_priority",
        skip_serializing_if = "is_default_priority"
    )]
    pub priority: u32,
    /// `service` (the default: keep `replicas` running), `batch` (run
    /// replicas to completion: `completions`, `parallelism`, `retries`) or
    /// `system` (one replica on every node that passes the constraints,
    /// following nodes as they come and go).
    #[serde(rename = "type", default, skip_serializing_if = "JobType::is_service")]
    pub job_type: JobType,
    /// batch: how many replicas must exit 0 for the job to be complete
    /// (default 1).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub completions: u32,
    /// batch: how many replicas run at once (default 1, never more than
    /// the completions still needed).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub parallelism: u32,
    /// batch: how many replicas may fail (exit non-zero, fail to start, or
    /// be lost with their node) before the job fails; each is retried as a
    /// new replica, on any node (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    /// batch: run periodically, from a cron expression in a time zone,
    /// instead of once (see [`schedule`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Schedule>,
}

/// What a job's replicas are for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum JobType {
    /// Long-running replicas, kept at `replicas` and rolled out gated on health.
    #[default]
    Service,
    /// Replicas that run to completion.
    Batch,
    /// One replica on every eligible node.
    System,
}

impl JobType {
    pub fn is_service(&self) -> bool {
        *self == JobType::Service
    }

    pub fn word(self) -> &'static str {
        match self {
            JobType::Service => "service",
            JobType::Batch => "batch",
            JobType::System => "system",
        }
    }
}

/// A batch job's failed replicas tolerated when it says none.
pub const DEFAULT_RETRIES: u32 = 3;

/// The priority of a job that says none.
pub const DEFAULT_PRIORITY: u32 = 50;

fn default_priority() -> u32 {
    DEFAULT_PRIORITY
}

fn is_default_priority(p: &u32) -> bool {
    *p == DEFAULT_PRIORITY
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl JobSpec {
    /// batch: the replicas that must succeed.
    pub fn completions(&self) -> u32 {
        self.completions.max(1)
    }

    /// batch: the replicas run at once.
    pub fn parallelism(&self) -> u32 {
        self.parallelism.max(1)
    }

    /// batch: the failed replicas tolerated.
    pub fn retries(&self) -> u32 {
        self.retries.unwrap_or(DEFAULT_RETRIES)
    }

    /// At most this many replicas of the current version on one node (0:
    /// no limit): a system job's one per node, else `max_per_node`.
    pub fn per_node_limit(&self) -> u32 {
        if self.job_type == JobType::System {
            1
        } else {
            self.max_per_node
        }
    }

    /// The spec as agents get it: without what only the scheduler reads
    /// (placement rules, priority, the job's type and its batch and
    /// schedule settings). An agent of an older release parses specs
    /// strictly, so fields added for the scheduler would otherwise make it
    /// refuse replicas it can run; what a replica does is all still here
    /// (a batch job's `restart: never` among it).
    pub fn for_agents(&self) -> JobSpec {
        JobSpec {
            constraints: Vec::new(),
            max_per_node: 0,
            affinities: Vec::new(),
            spread: Vec::new(),
            priority: DEFAULT_PRIORITY,
            job_type: JobType::Service,
            completions: 0,
            parallelism: 0,
            retries: None,
            schedule: None,
            ..self.clone()
        }
    }

    /// Whether the spec uses placement rules (constraints, max per node,
    /// affinities, spread), which a cluster runs from version 4.
    pub fn has_placement_rules(&self) -> bool {
        !self.constraints.is_empty()
            || self.max_per_node > 0
            || !self.affinities.is_empty()
            || !self.spread.is_empty()
            || self.priority != DEFAULT_PRIORITY
    }

    /// Its placement rules in one line, as `job status` shows them
    /// (`zone in [a, b]; at most 1 per node; spread over zone`), or `None`.
    pub fn placement_summary(&self) -> Option<String> {
        let mut rules: Vec<String> = Vec::new();
        if self.priority != DEFAULT_PRIORITY {
            rules.push(format!("priority {}", self.priority));
        }
        rules.extend(self.constraints.iter().map(|c| c.to_string()));
        if self.max_per_node > 0 {
            rules.push(format!("at most {} per node", self.max_per_node));
        }
        rules.extend(self.spread.iter().map(|s| s.to_string()));
        rules.extend(self.affinities.iter().map(|a| format!("prefer {a}")));
        (!rules.is_empty()).then(|| rules.join("; "))
    }
}

/// What happens to a replica whose node cannot reach a working scheduler.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnDisconnect {
    /// Stop it after the node timeout, so the scheduler can start it
    /// elsewhere without it ever running twice.
    #[default]
    Stop,
    /// Keep it running; it is not replaced until its node is back or
    /// removed (`drover node rm`), so the job may run short meanwhile.
    KeepRunning,
}

impl OnDisconnect {
    pub fn is_default(&self) -> bool {
        *self == OnDisconnect::Stop
    }
}

/// A port a replica listens on, by name.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Port {
    pub name: String,
    pub container: u32,
}

/// A host volume mounted into each replica.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeMount {
    /// The volume's name on the node (`drover-agent run --volume NAME=PATH`).
    pub name: String,
    /// Where it appears in the container.
    pub path: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
}

/// A secret or config mounted as a file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileMount {
    pub name: String,
    /// Where the file appears (absolute).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Its permission bits, octal (default "0444").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// Its owner and group inside the container (default 0: root), so a
    /// replica running as another user can read a file of mode 0400.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
}

impl FileMount {
    /// Where it appears: its `path`, or `default_dir/NAME`.
    pub fn path_or(&self, default_dir: &str) -> String {
        self.path
            .clone()
            .unwrap_or_else(|| format!("{}/{}", default_dir.trim_end_matches('/'), self.name))
    }

    /// Its permission bits (0444 when not given; 0 when not octal).
    pub fn mode_bits(&self) -> u32 {
        match &self.mode {
            None => 0o444,
            Some(m) => u32::from_str_radix(m, 8).unwrap_or(0),
        }
    }
}

/// Where secrets appear unless a path is given.
pub const SECRETS_DIR: &str = "/run/secrets";

/// A replica's own tmpfs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tmpfs {
    pub path: String,
    /// Its most bytes.
    pub size: Size,
}

/// A published service: every node accepts connections on `port` and
/// balances them across the job's healthy replicas' `target` port.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expose {
    pub port: u32,
    pub target: String,
}

impl JobSpec {
    /// The container port the exposed service forwards to.
    pub fn exposed_target(&self) -> Option<(u16, u16)> {
        let e = self.expose.as_ref()?;
        let p = self.ports.iter().find(|p| p.name == e.target)?;
        Some((e.port as u16, p.container as u16))
    }
}

fn default_replicas() -> u32 {
    1
}

fn default_grace() -> Duration {
    Duration::from_secs(10)
}

/// What a replica reserves on its node and is limited to.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    #[serde(default = "default_cpu")]
    pub cpu: Cpu,
    #[serde(default = "default_memory")]
    pub memory: Size,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<u32>,
    /// The most a replica may write to its root filesystem (its writable
    /// layer), reserved on its node: one that writes more is stopped, as
    /// Kubernetes evicts a pod over its ephemeral-storage limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<Size>,
}

fn default_cpu() -> Cpu {
    Cpu(100)
}

fn default_memory() -> Size {
    Size(64 << 20)
}

impl Default for Resources {
    fn default() -> Self {
        Resources {
            cpu: default_cpu(),
            memory: default_memory(),
            pids: None,
            disk: None,
        }
    }
}

/// When a replica that exited is started again.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    #[default]
    Always,
    OnFailure,
    Never,
}

/// The restart block. `restart: always` is shorthand for `restart: {policy: always}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestartSpec {
    #[serde(default)]
    pub policy: RestartPolicy,
    #[serde(default)]
    pub backoff: Backoff,
}

/// Exponential backoff between restarts: `initial`, doubling up to `max`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backoff {
    #[serde(default = "default_backoff_initial")]
    pub initial: Duration,
    #[serde(default = "default_backoff_max")]
    pub max: Duration,
}

fn default_backoff_initial() -> Duration {
    Duration(1000)
}

fn default_backoff_max() -> Duration {
    Duration(30_000)
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: default_backoff_initial(),
            max: default_backoff_max(),
        }
    }
}

/// The restart block as stored; see [`RestartSpec`].
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(transparent)]
pub struct Restart(pub RestartSpec);

impl Default for RestartSpec {
    fn default() -> Self {
        RestartSpec {
            policy: RestartPolicy::Always,
            backoff: Backoff::default(),
        }
    }
}

impl<'de> Deserialize<'de> for Restart {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Restart;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("always, on-failure, never, or a map with `policy` and `backoff`")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Restart, E> {
                let policy =
                    RestartPolicy::deserialize(serde::de::value::StrDeserializer::<E>::new(v))?;
                Ok(Restart(RestartSpec {
                    policy,
                    backoff: Backoff::default(),
                }))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Restart, A::Error> {
                RestartSpec::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(Restart)
            }
        }
        d.deserialize_any(V)
    }
}

/// Where a private-network replica's traffic may go.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Egress {
    /// Anywhere the node reaches, from the node's address (masquerade).
    #[default]
    All,
    /// Only the cluster's containers and the node.
    None,
}

impl Egress {
    pub fn is_default(&self) -> bool {
        *self == Egress::All
    }
}

/// Which network namespace a replica runs in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Network {
    /// Its own network namespace: `eth0` on the node's bridge, a default
    /// route out through the node (see [`Egress`]).
    #[default]
    Private,
    /// The node's network namespace.
    Host,
}

/// How the agent decides a replica is healthy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Health {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<ExecCheck>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpCheck>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpCheck>,
    #[serde(default = "default_interval")]
    pub interval: Duration,
    #[serde(default = "default_timeout")]
    pub timeout: Duration,
    #[serde(default = "default_failure_threshold")]
    pub failure_threshold: u32,
}

fn default_interval() -> Duration {
    Duration::from_secs(10)
}

fn default_timeout() -> Duration {
    Duration::from_secs(2)
}

fn default_failure_threshold() -> u32 {
    3
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecCheck {
    pub command: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpCheck {
    #[serde(default = "default_http_path")]
    pub path: String,
    pub port: u32,
    #[serde(default = "default_http_status")]
    pub status: u32,
}

fn default_http_path() -> String {
    "/".into()
}

fn default_http_status() -> u32 {
    200
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpCheck {
    pub port: u32,
}

/// A replica count or a percentage of the desired count (`25%`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Amount {
    Count(u32),
    Percent(u32),
}

impl Amount {
    /// Resolves against `total`: percentages of surge round up, of unavailability down,
    /// as Kubernetes does.
    pub fn resolve(self, total: u32, round_up: bool) -> u32 {
        match self {
            Amount::Count(n) => n,
            Amount::Percent(p) => {
                let x = total as u64 * p as u64;
                (if round_up { x.div_ceil(100) } else { x / 100 }) as u32
            }
        }
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Amount::Count(n) => write!(f, "{n}"),
            Amount::Percent(p) => write!(f, "{p}%"),
        }
    }
}

impl Serialize for Amount {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Amount::Count(n) => s.serialize_u32(*n),
            Amount::Percent(_) => s.serialize_str(&self.to_string()),
        }
    }
}

impl<'de> Deserialize<'de> for Amount {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Amount;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a replica count or a percentage like 25%")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Amount, E> {
                u32::try_from(v)
                    .map(Amount::Count)
                    .map_err(|_| E::custom(format!("{v} is too large")))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Amount, E> {
                if v < 0 {
                    return Err(E::custom(format!("{v} must not be negative")));
                }
                self.visit_u64(v as u64)
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Amount, E> {
                let bad = || E::custom(format!("{v:?} is not a count or a percentage like 25%"));
                match v.strip_suffix('%') {
                    Some(p) => {
                        let p: u32 = p.trim().parse().map_err(|_| bad())?;
                        if p > 100 {
                            return Err(E::custom(format!("{v:?} is more than 100%")));
                        }
                        Ok(Amount::Percent(p))
                    }
                    None => v.trim().parse().map(Amount::Count).map_err(|_| bad()),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// How a new version replaces the old one (acted on by the rollout controller).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Update {
    #[serde(default = "default_surge")]
    pub max_surge: Amount,
    #[serde(default = "default_unavailable")]
    pub max_unavailable: Amount,
    #[serde(default = "default_min_healthy")]
    pub min_healthy_time: Duration,
    #[serde(default = "default_healthy_deadline")]
    pub healthy_deadline: Duration,
    #[serde(default = "default_progress_deadline")]
    pub progress_deadline: Duration,
    #[serde(default = "default_true")]
    pub auto_rollback: bool,
    #[serde(default)]
    pub canary: u32,
    /// Past versions the job keeps (for `job history` and `rollout undo
    /// --to`), beside any still running: like Kubernetes'
    /// `revisionHistoryLimit`. 1 to 1000.
    #[serde(default = "default_keep_versions")]
    pub keep_versions: u32,
    /// Start a replica's successor only once the replica has stopped
    /// (stopping replicas then count against `max_surge`). Off by default,
    /// as Kubernetes does for terminating pods: once its node has begun to
    /// stop it, a replica has left every load balancer, and placement still
    /// waits, on its node, for the resources it holds. Jobs on the host
    /// network that declare ports always wait (the port is the old
    /// replica's until it exits), and so do jobs with `max_surge: 0`, which
    /// asked never to run more than `replicas`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub wait_for_stop: bool,
}

impl Update {
    /// Whether the successor of a stopping replica of `spec` waits for it
    /// to be gone (see `wait_for_stop`).
    pub fn waits_for_stop(spec: &JobSpec) -> bool {
        spec.update.wait_for_stop || (spec.network == Network::Host && !spec.ports.is_empty())
    }
}

/// Versions a job keeps unless its spec says otherwise.
pub const DEFAULT_KEEP_VERSIONS: u32 = 10;

fn default_keep_versions() -> u32 {
    DEFAULT_KEEP_VERSIONS
}

fn default_surge() -> Amount {
    Amount::Count(1)
}

fn default_unavailable() -> Amount {
    Amount::Count(0)
}

fn default_min_healthy() -> Duration {
    Duration::from_secs(5)
}

fn default_healthy_deadline() -> Duration {
    Duration::from_secs(60)
}

fn default_progress_deadline() -> Duration {
    Duration::from_secs(600)
}

fn default_true() -> bool {
    true
}

impl Default for Update {
    fn default() -> Self {
        Update {
            max_surge: default_surge(),
            max_unavailable: default_unavailable(),
            min_healthy_time: default_min_healthy(),
            healthy_deadline: default_healthy_deadline(),
            progress_deadline: default_progress_deadline(),
            auto_rollback: true,
            canary: 0,
            keep_versions: DEFAULT_KEEP_VERSIONS,
            wait_for_stop: false,
        }
    }
}

/// A parsed `oci:` image reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OciRef {
    pub path: String,
    pub tag: Option<String>,
}

impl OciRef {
    /// Parses skopeo's `oci:PATH[:TAG]`.
    pub fn parse(image: &str) -> Option<OciRef> {
        let rest = image.strip_prefix("oci:")?;
        let last_slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
        let (path, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let at = last_slash + i;
                (&rest[..at], Some(rest[at + 1..].to_string()))
            }
            None => (rest, None),
        };
        Some(OciRef {
            path: path.to_string(),
            tag,
        })
    }
}

impl fmt::Display for OciRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.tag {
            Some(t) => write!(f, "oci:{}:{t}", self.path),
            None => write!(f, "oci:{}", self.path),
        }
    }
}

impl JobSpec {
    /// Makes a relative `oci:` path absolute against `cwd` (the CLI does this,
    /// because the scheduler and agents do not share the user's directory).
    pub fn resolve_paths(&mut self, cwd: &std::path::Path) {
        if let Some(r) = OciRef::parse(&self.image) {
            if !r.path.starts_with('/') && !r.path.is_empty() {
                let abs = cwd.join(&r.path);
                self.image = OciRef {
                    path: abs.to_string_lossy().into_owned(),
                    tag: r.tag,
                }
                .to_string();
            }
        }
    }

    /// The canonical JSON form, as stored and sent on the wire.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a job spec always serializes")
    }
}
