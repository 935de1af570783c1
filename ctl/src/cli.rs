//! The command tree and its help text.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// Drover: a small, fast container orchestrator.
///
/// Examples:
///   drover dev                              # a whole one-machine cluster
///   drover job run examples/jobs/web.yaml   # run a job and wait for it
///   drover job status web
///   drover logs web -f
#[derive(Parser, Debug)]
#[command(name = "drover", version, verbatim_doc_comment, after_help = crate::exit::HELP)]
pub struct Cli {
    /// Scheduler addresses, comma-separated (default: the context's, else
    /// 127.0.0.1:7400).
    #[arg(long, global = true, env = "DROVER_ADDR")]
    pub addr: Option<String>,
    /// The context of ~/.config/drover/config.yaml to use (default: its
    /// current one; see `drover config`).
    #[arg(long, global = true, env = "DROVER_CONTEXT")]
    pub context: Option<String>,
    #[command(flatten)]
    pub credentials: CredentialArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Who `drover` is to the cluster: every connection is TLS, the server
/// checked against the cluster CA, and `drover` presents a client
/// certificate the CA signed. Without any of these, `drover` uses the
/// first of /var/lib/drover/dev/pki (a local `drover dev`) and
/// /var/lib/drover/scheduler/pki (a scheduler on this machine) that holds
/// admin.pem.
#[derive(Args, Debug, Clone, Default)]
pub struct CredentialArgs {
    /// A directory holding ca.pem, admin.pem and admin.key (what the
    /// scheduler that made the CA, or `drover dev`, keeps in its pki dir).
    #[arg(long, global = true, env = "DROVER_PKI_DIR")]
    pub pki_dir: Option<PathBuf>,
    /// The cluster CA's certificate (instead of <pki-dir>/ca.pem).
    #[arg(long, global = true, env = "DROVER_CACERT")]
    pub ca_cert: Option<PathBuf>,
    /// This client's certificate (instead of <pki-dir>/admin.pem).
    #[arg(long, global = true, env = "DROVER_CLIENT_CERT")]
    pub cert: Option<PathBuf>,
    /// This client's key (instead of <pki-dir>/admin.key).
    #[arg(long, global = true, env = "DROVER_CLIENT_KEY")]
    pub key: Option<PathBuf>,
    /// Talk to a cluster that runs with --insecure-plaintext (no TLS).
    #[arg(long, global = true, env = "DROVER_INSECURE_PLAINTEXT")]
    pub insecure_plaintext: bool,
    /// The ACL token to present (`drover acl`; default: <pki-dir>/token
    /// if there is one, as `drover dev` keeps its admin token there).
    #[arg(long, global = true, env = "DROVER_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

#[derive(Subcommand, Debug, Clone)]
pub enum Command {
    /// Submit, inspect and stop jobs.
    #[command(subcommand)]
    Job(JobCmd),
    /// Inspect allocations (the replicas of jobs placed on nodes).
    #[command(subcommand)]
    Alloc(AllocCmd),
    /// Inspect nodes.
    #[command(subcommand)]
    Node(NodeCmd),
    /// Secrets: values jobs mount as files (`secrets:` in a spec), sealed
    /// at rest in the scheduler's state, delivered only to nodes running a
    /// replica that mounts them, never shown again.
    #[command(subcommand)]
    Secret(SecretCmd),
    /// Configs: non-secret files jobs mount (`configs:` in a spec), as
    /// Kubernetes' ConfigMaps and Swarm's configs.
    #[command(subcommand)]
    Configmap(SecretCmd),
    /// Print an allocation's output, or every allocation's of a job.
    ///
    /// What the container wrote to stdout goes to stdout, what it wrote to
    /// stderr to stderr, line by line as its node read them.
    ///
    /// Examples:
    ///   drover logs web            # all replicas of job web
    ///   drover logs 3f9a2c -f      # follow one allocation (id prefix)
    ///   drover logs web --tail 20
    ///   drover logs web --since 10m -t 2>/dev/null   # stdout of the last 10 minutes, with times
    #[command(verbatim_doc_comment)]
    Logs(LogsArgs),
    /// What the cluster did: jobs submitted, rollouts started and ended,
    /// replicas placed, started, healthy, restarted, stopped, lost; nodes
    /// registered, down, cordoned; leaders elected and peers added.
    ///
    /// Without --since it prints the events the peer keeps (with -f, only
    /// new ones, as they are applied). Every event has its place in the
    /// log, INDEX.SEQ: with -f a lost connection resumes after the last
    /// event printed, at whichever peer answers, missing and repeating
    /// nothing. Any peer serves events, a follower those it has applied.
    ///
    /// Examples:
    ///   drover events -f                          # follow everything
    ///   drover events --job web --topic rollout,alloc
    ///   drover events --since 10m -o json         # the last ten minutes, as JSON lines
    ///   drover events -f --since 1234             # from log index 1234 on
    #[command(verbatim_doc_comment)]
    Events(EventsArgs),
    /// What each running allocation uses now (cpu, memory against its
    /// limit, OOM kills), asked of its agent, and the sums per node against
    /// what the node offers; the busiest first, again every --interval.
    ///
    /// Examples:
    ///   drover top
    ///   drover top --job web --interval 5s
    ///   drover top --once -o json
    #[command(verbatim_doc_comment)]
    Top(TopArgs),
    /// Run a command inside a running allocation (its namespaces, cgroup,
    /// root, capabilities and seccomp filter); exits with the command's code.
    ///
    /// A terminal is attached when stdin and stdout are terminals (force
    /// with -t, refuse with -T).
    ///
    /// Examples:
    ///   drover exec 3f9a2c -- sh
    ///   drover exec 3f9a2c -- cat /etc/hostname
    #[command(verbatim_doc_comment)]
    Exec(ExecArgs),
    /// Run a one-machine cluster (scheduler and agent) in this process.
    ///
    /// State (the Raft log, images, logs) lives in --state-dir. Ctrl-C stops
    /// every container it started and exits.
    ///
    /// Run it as root (it makes namespaces, cgroups and a bridge); the API
    /// listens on 127.0.0.1:7400, state is in /var/lib/drover/dev.
    ///
    /// Examples:
    ///   drover dev                 # in a root shell
    ///   drover dev --cleanup       # remove all it left on the machine
    #[cfg(feature = "dev")]
    #[command(verbatim_doc_comment)]
    Dev(DevArgs),
    /// Check this machine for what Drover needs: kernel features (clone3,
    /// pidfd, openat2, namespaces, seccomp), cgroups and their controllers,
    /// overlayfs, nftables, ip_forward, free ports, free disk, the clock,
    /// root. Each check says pass, warn or fail, and what to do; the exit
    /// code is 1 if any failed. The daemons run their role's checks at start.
    ///
    /// Examples:
    ///   sudo drover doctor                        # for drover dev
    ///   sudo drover doctor --role agent --state-dir /var/lib/drover/agent
    ///   drover doctor --role scheduler --port 10.0.0.1:7400 -o json
    #[command(verbatim_doc_comment)]
    Doctor(DoctorArgs),
    /// Benchmarks, beside their peers: runs `drover-bench` (built next to
    /// `drover`) with these arguments.
    ///
    /// Examples:
    ///   drover bench job-run --replicas 20,100 --trials 5
    ///   drover bench help            # every benchmark
    #[command(verbatim_doc_comment)]
    Bench {
        /// The benchmark and its flags (see `drover-bench --help`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// List, add and remove the scheduler's peers (its Raft members).
    #[command(subcommand)]
    Cluster(ClusterCmd),
    /// Operate the cluster's state: snapshots to back it up and restore it.
    #[command(subcommand)]
    Operator(OperatorCmd),
    /// Access control: API tokens with roles (read, operate, admin).
    #[command(subcommand)]
    Acl(AclCmd),
    /// Named contexts (cluster address and credentials) in
    /// ~/.config/drover/config.yaml, like kubeconfig's.
    #[command(subcommand)]
    Config(ConfigCmd),
    /// Print the shell completion script for drover: its commands, their
    /// flags and the values flags take.
    ///
    /// Examples:
    ///   drover completion bash > /etc/bash_completion.d/drover
    ///   drover completion zsh > "${fpath[1]}/_drover"
    ///   drover completion fish > ~/.config/fish/completions/drover.fish
    #[command(verbatim_doc_comment)]
    Completion {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
}

/// The completion script of `drover` for `shell`.
pub fn completion(shell: clap_complete::Shell, out: &mut dyn std::io::Write) {
    let mut command = <Cli as clap::CommandFactory>::command();
    clap_complete::generate(shell, &mut command, "drover", out);
}

#[derive(Subcommand, Debug, Clone)]
pub enum OperatorCmd {
    /// Back up the replicated state, and put it back.
    #[command(subcommand)]
    Snapshot(SnapshotCmd),
}

#[derive(Subcommand, Debug, Clone)]
pub enum SnapshotCmd {
    /// Save a consistent snapshot of the replicated state to FILE (needs an
    /// admin token): every job with its versions, the allocations and
    /// nodes, secrets (sealed, as stored), configs and ACL tokens, with a
    /// checksum. Any peer serves it after confirming with the leader.
    ///
    /// Example:
    ///   drover operator snapshot save backup.snap
    #[command(verbatim_doc_comment)]
    Save { file: PathBuf },
    /// Put a snapshot's desired state back (needs an admin token): its
    /// jobs, secrets, configs and ACL tokens replace the cluster's, and
    /// jobs it lacks are stopped and purged. Nodes and placements stay the
    /// cluster's own: replicas whose spec the snapshot keeps run on, the
    /// others are replaced. The file is checked whole first; a damaged one
    /// changes nothing. Secrets need the cluster's secrets.key to be the
    /// one they were sealed with; ACL tokens come back as saved, so keep
    /// an admin token of the saved cluster.
    ///
    /// Examples:
    ///   drover operator snapshot restore backup.snap
    ///   DROVER_ADDR=10.0.1.1:7400 drover operator snapshot restore backup.snap   # into a new cluster
    #[command(verbatim_doc_comment)]
    Restore { file: PathBuf },
    /// Check a snapshot file and say what it holds (no cluster needed).
    ///
    /// Example:
    ///   drover operator snapshot inspect backup.snap -o json
    #[command(verbatim_doc_comment)]
    Inspect {
        file: PathBuf,
        #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Table)]
        output: Format,
    },
}

#[derive(Args, Debug, Clone)]
pub struct DoctorArgs {
    /// What this machine is to run: `dev` (drover dev: scheduler and
    /// agent), `agent` (a node) or `scheduler` (a Raft peer).
    #[arg(long, value_enum, default_value_t = DoctorRole::Dev)]
    pub role: DoctorRole,
    /// The state directory the daemon will use (default: the role's, under
    /// /var/lib/drover).
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// The cgroup hierarchy the agent will use.
    #[arg(long, default_value = "/sys/fs/cgroup")]
    pub cgroup_root: PathBuf,
    /// Addresses the daemon will listen on (default: the role's ports).
    #[arg(long, value_name = "ADDR:PORT")]
    pub port: Vec<std::net::SocketAddr>,
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Table)]
    pub output: Format,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum DoctorRole {
    Dev,
    Agent,
    Scheduler,
}

#[derive(Subcommand, Debug, Clone)]
pub enum ConfigCmd {
    /// Add or change a context from the global flags given with it
    /// (--addr, --pki-dir, --ca-cert, --cert, --key, --token, and their
    /// environment variables); given fields replace the context's.
    ///
    /// Examples:
    ///   drover config set-context prod --addr 10.0.0.1:7400,10.0.0.2:7400 \
    ///       --ca-cert ~/prod/ca.pem --cert ~/prod/me.pem --key ~/prod/me.key --token DRVT-…
    ///   drover config set-context dev --pki-dir /var/lib/drover/dev/pki --use
    #[command(verbatim_doc_comment)]
    SetContext {
        name: String,
        /// Make it the current context too.
        #[arg(long = "use")]
        use_it: bool,
    },
    /// Make a context the current one.
    ///
    /// Example:
    ///   drover config use-context prod
    #[command(verbatim_doc_comment)]
    UseContext { name: String },
    /// List the contexts (the current one marked *; tokens never shown).
    ///
    /// Example:
    ///   drover config get-contexts
    #[command(verbatim_doc_comment)]
    GetContexts,
    /// Remove a context.
    ///
    /// Example:
    ///   drover config delete-context old
    #[command(verbatim_doc_comment)]
    DeleteContext { name: String },
}

#[derive(Subcommand, Debug, Clone)]
pub enum AclCmd {
    /// Turn access control on and print the first admin token (once per
    /// cluster). From then on every call needs a token (--token or
    /// DROVER_TOKEN): keep this one safe, and make narrower ones with
    /// `drover acl token create`.
    ///
    /// Example:
    ///   export DROVER_TOKEN=$(drover acl bootstrap)
    #[command(verbatim_doc_comment)]
    Bootstrap,
    /// Create, list and revoke API tokens (needs an admin token).
    #[command(subcommand)]
    Token(AclTokenCmd),
    /// Show what the token in use may do.
    ///
    /// Example:
    ///   drover acl whoami
    #[command(verbatim_doc_comment)]
    Whoami {
        #[arg(short, long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
}

#[derive(Subcommand, Debug, Clone)]
pub enum AclTokenCmd {
    /// Create a token and print it (the only time its secret is shown).
    ///
    /// read: list and inspect; operate: also run, scale, stop, roll back
    /// and restart jobs, drain and remove nodes; admin: everything,
    /// membership and tokens included. --exec and --logs add those to a
    /// read or operate token. --job fences it to jobs named with a prefix.
    ///
    /// Examples:
    ///   drover acl token create --name ci --role operate --job web-
    ///   drover acl token create --name oncall --role read --logs --ttl 12h
    #[command(verbatim_doc_comment)]
    Create {
        /// What it is for (shown in `ls` and in refusals).
        #[arg(long)]
        name: String,
        #[arg(long, value_parser = ["read", "operate", "admin"])]
        role: String,
        /// Only jobs whose names start with this.
        #[arg(long, default_value = "")]
        job: String,
        /// May run commands in replicas (`drover exec`).
        #[arg(long)]
        exec: bool,
        /// May read replicas' output (`drover logs`).
        #[arg(long)]
        logs: bool,
        /// Expire after this long (default: never).
        #[arg(long)]
        ttl: Option<String>,
    },
    /// List the tokens (accessors, names, roles; never secrets).
    ///
    /// Example:
    ///   drover acl token ls -o json
    #[command(verbatim_doc_comment)]
    Ls {
        #[arg(short, long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
    /// Revoke a token by its accessor (or a unique prefix, 4 digits at least).
    ///
    /// Example:
    ///   drover acl token revoke 3f9a2c11
    #[command(verbatim_doc_comment)]
    Revoke { accessor: String },
}

#[derive(Subcommand, Debug, Clone)]
pub enum ClusterCmd {
    /// List the scheduler peers: id, address, role, applied index, leader.
    ///
    /// Every peer is asked for its own status; one that does not answer
    /// shows as unreachable. --stale lists the membership as the peer
    /// asked knows it, without the leader. SUPPORTS is the newest cluster
    /// version a peer's release implements; the cluster runs at the
    /// version every peer supports (during a rolling upgrade it moves up
    /// after the last peer runs the new release).
    ///
    /// Examples:
    ///   drover cluster members
    ///   DROVER_ADDR=10.77.0.11:7400,10.77.0.12:7400 drover cluster members -o json
    #[command(verbatim_doc_comment)]
    Members {
        #[command(flatten)]
        read: ReadArgs,
    },
    /// Add a peer: it joins as a learner, catches up, then votes.
    ///
    /// Start the new peer first with --join (it then waits to be added);
    /// this returns once it has caught up and become a voter.
    ///
    /// Example:
    ///   drover-scheduler --id 4 --listen 10.0.0.4:7400 --join --data-dir /var/lib/drover/scheduler
    ///   drover cluster add 4 10.0.0.4:7400
    #[command(verbatim_doc_comment)]
    Add {
        /// The new peer's id (its --id).
        id: u64,
        /// The address the other peers reach it at (its --advertise).
        address: String,
    },
    /// Remove a peer from the cluster (stop its process afterwards).
    ///
    /// Example:
    ///   drover cluster remove 4
    #[command(verbatim_doc_comment)]
    Remove {
        /// The peer's id.
        id: u64,
    },
    /// Print a short-lived token that lets a new agent (or scheduler
    /// peer) get its certificate from the cluster CA. It pins the CA's
    /// fingerprint, so the joiner checks the cluster before trusting it.
    ///
    /// Examples:
    ///   drover-agent run --name node-2 --scheduler 10.0.0.1:7400 --join "$(drover cluster join-token agent)"
    ///   drover cluster join-token scheduler --ttl 10m
    #[command(verbatim_doc_comment)]
    JoinToken {
        /// What the holder joins as.
        #[arg(value_parser = ["agent", "scheduler"])]
        role: String,
        /// How long the token is valid (at most 7d).
        #[arg(long, default_value = "1h")]
        ttl: String,
    },
    /// Replace the cluster CA without stopping anything (needs an admin
    /// token). Every peer and node first trusts the old and the new CA,
    /// then gets a certificate of the new one, then trusts only the new
    /// one; each phase waits until everyone caught up, and lasts at least
    /// --min-phase. This CLI's own CA file and certificate are updated as it
    /// goes (when writable). Every other client must, meanwhile, fetch the
    /// new CA (`drover cluster ca > ca.pem`, in the first phase) and renew
    /// its certificate (`drover cluster renew-cert`, in the second), or be
    /// locked out when the rotation ends. A node down throughout must join
    /// again.
    ///
    /// Examples:
    ///   drover cluster rotate-ca --min-phase 10m
    ///   drover cluster rotate-ca --no-wait && drover cluster ca --status
    #[command(verbatim_doc_comment)]
    RotateCa {
        /// Start the rotation and return (then renew this CLI's certificate
        /// with `drover cluster renew-cert` once the new CA signs).
        #[arg(long)]
        no_wait: bool,
        /// The least each of the two phases lasts.
        #[arg(long, default_value = "1m")]
        min_phase: String,
        /// Give up waiting after this long (the rotation goes on).
        #[arg(long, default_value = "10m")]
        timeout: String,
    },
    /// Renew this CLI's certificate (signed by the CA that signs now: during
    /// a CA rotation, the new one) and bring its CA file up to date; the
    /// files it uses are rewritten.
    ///
    /// Example:
    ///   drover cluster renew-cert
    #[command(verbatim_doc_comment)]
    RenewCert,
    /// Print the CA certificates clients should trust now (PEM), or with
    /// --status the CA rotation's phase and what it waits for.
    ///
    /// Examples:
    ///   drover cluster ca > ca.pem
    ///   drover cluster ca --status
    #[command(verbatim_doc_comment)]
    Ca {
        #[arg(long)]
        status: bool,
    },
}

#[derive(Clone, Copy, Debug, Default, ValueEnum, PartialEq, Eq)]
pub enum Format {
    #[default]
    Table,
    Json,
    Yaml,
}

#[derive(Args, Debug, Clone)]
pub struct ReadArgs {
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Table)]
    pub output: Format,
    /// Read from the peer asked, without confirming it leads (may be behind).
    #[arg(long)]
    pub stale: bool,
    /// Print it again whenever the cluster changes (from its event
    /// stream; at least every 10 s) until Ctrl-C.
    #[arg(short = 'w', long)]
    pub watch: bool,
}

#[derive(Subcommand, Debug, Clone)]
pub enum JobCmd {
    /// Submit a job spec (YAML) and wait until all its replicas run.
    ///
    /// The spec is validated here first; an unchanged spec is a no-op.
    /// Relative oci: image paths are resolved against the current directory.
    /// For a batch job (`type: batch`) it waits until the job has ended:
    /// exit 0 when every completion succeeded, 1 when it failed.
    ///
    /// Examples:
    ///   drover job run examples/jobs/web.yaml
    ///   drover job run --detach examples/jobs/toolbox.yaml
    ///   drover job run examples/jobs/batch.yaml    # follows the batch to its end
    #[command(verbatim_doc_comment)]
    Run {
        /// The job spec file ("-" for stdin).
        file: PathBuf,
        /// Return as soon as the scheduler accepted the job.
        #[arg(long, short)]
        detach: bool,
        /// Give up waiting after this long (e.g. 2m).
        #[arg(long, default_value = "5m")]
        timeout: String,
    },
    /// List jobs.
    ///
    /// Example:
    ///   drover job ls -o json
    #[command(verbatim_doc_comment)]
    Ls {
        #[command(flatten)]
        read: ReadArgs,
    },
    /// Show a job: version, replicas, why any are pending, its allocations.
    ///
    /// Example:
    ///   drover job status web -o yaml
    #[command(verbatim_doc_comment)]
    Status {
        name: String,
        #[command(flatten)]
        read: ReadArgs,
    },
    /// List a job's versions: when, what changed, how each rollout ended.
    ///
    /// Example:
    ///   drover job history web
    #[command(verbatim_doc_comment)]
    History {
        name: String,
        #[command(flatten)]
        read: ReadArgs,
    },
    /// Change a job's replica count at once, with no new version and no rollout.
    ///
    /// A later `job run` of a spec whose `replicas` did not change keeps this count.
    ///
    /// Example:
    ///   drover job scale web 7
    #[command(verbatim_doc_comment)]
    Scale { name: String, replicas: u32 },
    /// Let a rollout whose canaries are healthy replace the rest.
    ///
    /// Example:
    ///   drover job promote web
    #[command(verbatim_doc_comment)]
    Promote {
        name: String,
        #[arg(long, short)]
        detach: bool,
    },
    /// Hold a rollout where it stands.
    ///
    /// Example:
    ///   drover job pause web
    #[command(verbatim_doc_comment)]
    Pause { name: String },
    /// Continue a paused rollout.
    ///
    /// Example:
    ///   drover job resume web
    #[command(verbatim_doc_comment)]
    Resume {
        name: String,
        #[arg(long, short)]
        detach: bool,
    },
    /// Replace every replica, one step at a time, with no spec change.
    ///
    /// Example:
    ///   drover job restart web
    #[command(verbatim_doc_comment)]
    Restart {
        name: String,
        #[arg(long, short)]
        detach: bool,
    },
    /// Start a run of a periodic batch job now, outside its schedule.
    ///
    /// Refused while a run is still going, unless the job's
    /// `schedule.overlap` is `replace`. Waits for the run to end (exit 0
    /// when it completed, 1 when it failed) unless --detach.
    ///
    /// Example:
    ///   drover job launch nightly-report
    #[command(verbatim_doc_comment)]
    Launch {
        name: String,
        #[arg(long, short)]
        detach: bool,
        /// Give up waiting after this long (e.g. 2m).
        #[arg(long, default_value = "5m")]
        timeout: String,
    },
    /// Roll back to the last stable version, or to --to VERSION.
    ///
    /// Examples:
    ///   drover job rollback web
    ///   drover job rollback web --to 2
    #[command(verbatim_doc_comment)]
    Rollback {
        name: String,
        #[arg(long)]
        to: Option<u64>,
        #[arg(long, short)]
        detach: bool,
    },
    /// Stop every replica of a job.
    ///
    /// Example:
    ///   drover job stop web --purge
    #[command(verbatim_doc_comment)]
    Stop {
        name: String,
        /// Also forget the job once its replicas have stopped.
        #[arg(long)]
        purge: bool,
        /// Return at once instead of waiting for the replicas to stop.
        #[arg(long, short)]
        detach: bool,
    },
}

#[derive(Subcommand, Debug, Clone)]
pub enum AllocCmd {
    /// List allocations.
    ///
    /// Examples:
    ///   drover alloc ls
    ///   drover alloc ls --job web --all
    #[command(verbatim_doc_comment)]
    Ls {
        /// Only this job's allocations.
        #[arg(long)]
        job: Option<String>,
        /// Include allocations that have ended.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        read: ReadArgs,
    },
    /// Show one allocation (by id or unique id prefix).
    ///
    /// Example:
    ///   drover alloc status 3f9a2c -o json
    #[command(verbatim_doc_comment)]
    Status {
        id: String,
        #[command(flatten)]
        read: ReadArgs,
    },
}

/// `drover secret ...` and `drover configmap ...`.
#[derive(Subcommand, Debug, Clone)]
pub enum SecretCmd {
    /// Store a new one from a file (`-`: standard input).
    ///
    /// Examples:
    ///   drover secret create db-password --from-file ./db-password.txt
    ///   printf %s "$TOKEN" | drover secret create api-token --from-file -
    ///   drover configmap create app-toml --from-file app.toml
    #[command(verbatim_doc_comment)]
    Create {
        name: String,
        #[arg(long, value_name = "FILE")]
        from_file: PathBuf,
    },
    /// Give one a new value; every job mounting it restarts, replica by
    /// replica per its update strategy, to pick it up.
    ///
    /// Example:
    ///   drover secret update db-password --from-file ./new-password.txt
    #[command(verbatim_doc_comment)]
    Update {
        name: String,
        #[arg(long, value_name = "FILE")]
        from_file: PathBuf,
    },
    /// List them: name, version, size, the jobs mounting them (never values).
    ///
    /// Example:
    ///   drover secret ls -o json
    #[command(verbatim_doc_comment)]
    Ls {
        #[command(flatten)]
        read: ReadArgs,
    },
    /// Delete one no job mounts.
    ///
    /// Example:
    ///   drover secret rm db-password
    #[command(verbatim_doc_comment)]
    Rm { name: String },
}

#[derive(Subcommand, Debug, Clone)]
pub enum NodeCmd {
    /// Stop placing new allocations on a node (running ones stay).
    ///
    /// Example:
    ///   drover node cordon node-2
    #[command(verbatim_doc_comment)]
    Cordon { name: String },
    /// Allow placements on a node again (also ends a drain).
    ///
    /// Example:
    ///   drover node uncordon node-2
    #[command(verbatim_doc_comment)]
    Uncordon { name: String },
    /// Move every allocation off a node, within each job's max_unavailable,
    /// and wait until the node is empty.
    ///
    /// Example:
    ///   drover node drain node-2
    #[command(verbatim_doc_comment)]
    Drain {
        name: String,
        /// Return at once instead of waiting for the node to be empty.
        #[arg(long, short)]
        detach: bool,
    },
    /// Forget a node that is down (its machine is gone for good): its
    /// replicas, even those of `on_disconnect: keep-running` jobs, are
    /// replaced elsewhere and its container subnet is free again. A node
    /// whose agent still runs cannot be removed: stop the agent first.
    ///
    /// Example:
    ///   drover node rm node-2
    #[command(verbatim_doc_comment)]
    Rm { name: String },
    /// Set labels on a node (KEY=VALUE) or remove them (KEY-). Jobs'
    /// `constraints` match them; they win over the agent's `--label`
    /// and outlive its restarts. Running replicas stay where they are.
    ///
    /// Example:
    ///   drover node label node-2 zone=eu-1a disk=ssd
    ///   drover node label node-2 disk-
    #[command(verbatim_doc_comment)]
    Label {
        name: String,
        /// KEY=VALUE to set, KEY- to remove.
        #[arg(required = true, value_name = "KEY=VALUE|KEY-")]
        labels: Vec<String>,
    },
    /// List nodes with their resources and status.
    ///
    /// Example:
    ///   drover node ls
    #[command(verbatim_doc_comment)]
    Ls {
        #[command(flatten)]
        read: ReadArgs,
    },
    /// Show one node: status, resources, subnet, and whether its container
    /// network works (and why not).
    ///
    /// Example:
    ///   drover node status node-2
    #[command(verbatim_doc_comment)]
    Status {
        name: String,
        #[command(flatten)]
        read: ReadArgs,
    },
}

#[derive(Args, Debug, Clone)]
pub struct LogsArgs {
    /// An allocation id (or unique prefix), or a job name.
    pub target: String,
    /// Keep printing new output.
    #[arg(short, long)]
    pub follow: bool,
    /// Only the last N lines (of each allocation).
    #[arg(long)]
    pub tail: Option<i64>,
    /// Only lines written since then: a duration back from now (10m, 2h)
    /// or a time (2026-12-02T10:00:00Z).
    #[arg(long)]
    pub since: Option<String>,
    /// Start each line with the time its node read it (RFC 3339, UTC).
    #[arg(short = 't', long)]
    pub timestamps: bool,
}

#[derive(Args, Debug, Clone)]
pub struct EventsArgs {
    /// Keep printing new events as they happen.
    #[arg(short, long)]
    pub follow: bool,
    /// Only these topics (comma-separated).
    #[arg(long = "topic", value_delimiter = ',', value_parser = ["job", "rollout", "alloc", "node", "cluster"])]
    pub topics: Vec<String>,
    /// Only this job's events (its job, rollout and allocation events).
    #[arg(long)]
    pub job: Option<String>,
    /// Start at a log index (`1234`, or `1234.2` for that entry's events
    /// from the third on) or this long ago (`10m`, `1h`).
    #[arg(long)]
    pub since: Option<String>,
    /// Output: lines for people, or one JSON (or YAML) document per event.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Table)]
    pub output: Format,
}

#[derive(Args, Debug, Clone)]
pub struct TopArgs {
    /// Only this job's allocations.
    #[arg(long)]
    pub job: Option<String>,
    /// How often to ask again.
    #[arg(long, default_value = "2s")]
    pub interval: String,
    /// Print once and exit.
    #[arg(long)]
    pub once: bool,
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Table)]
    pub output: Format,
}

#[derive(Args, Debug, Clone)]
pub struct ExecArgs {
    /// An allocation id (or unique prefix).
    pub alloc: String,
    /// Attach a terminal even if ours is not one.
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Never attach a terminal.
    #[arg(short = 'T', long, conflicts_with = "tty")]
    pub no_tty: bool,
    /// KEY=value added to the command's environment (repeatable).
    #[arg(short, long)]
    pub env: Vec<String>,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

#[derive(Args, Debug, Clone)]
pub struct DevArgs {
    /// Where the scheduler's Raft data, the image cache, bundles and logs live.
    #[arg(long, default_value = "/var/lib/drover/dev")]
    pub state_dir: PathBuf,
    /// Address of the API (the scheduler).
    #[arg(long, default_value = "127.0.0.1:7400")]
    pub listen: std::net::SocketAddr,
    /// Address of the agent's own API (logs).
    #[arg(long, default_value = "127.0.0.1:7401")]
    pub agent_listen: std::net::SocketAddr,
    /// Prometheus metrics of the scheduler and the agent, over plain HTTP
    /// (`/metrics`); on loopback nobody is asked for a token.
    #[arg(long, default_value = "127.0.0.1:7480")]
    pub http_listen: std::net::SocketAddr,
    /// Serve no metrics.
    #[arg(long)]
    pub no_http: bool,
    /// The node's name (default: this machine's hostname).
    #[arg(long)]
    pub node_name: Option<String>,
    /// Cgroup hierarchy root.
    #[arg(long, default_value = "/sys/fs/cgroup")]
    pub cgroup_root: PathBuf,
    /// The container address range (the node gets a /24 of it).
    #[arg(long, default_value = "10.88.0.0/16")]
    pub cluster_cidr: String,
    /// A host directory jobs may mount by name, `NAME=PATH` (`:ro` to
    /// offer it read-only), as `drover-agent run --volume`. Repeatable.
    #[arg(long = "volume", value_name = "NAME=PATH[:ro]")]
    pub volumes: Vec<String>,
    /// No TLS, no ACLs: anyone who reaches the ports controls it (for
    /// debugging, and to measure what security costs; `drover
    /// --insecure-plaintext` talks to it).
    #[arg(long)]
    pub insecure_plaintext: bool,
    /// Remove everything a drover dev on --state-dir left on this machine
    /// (containers, monitors, mounts, cgroups, links, routes, firewall
    /// rules) and the state dir itself (Raft log, images, logs,
    /// certificates), then exit. Refused while a drover dev runs on it.
    #[arg(long)]
    pub cleanup: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completion_scripts_know_the_commands_and_their_flags() {
        for shell in [
            clap_complete::Shell::Bash,
            clap_complete::Shell::Zsh,
            clap_complete::Shell::Fish,
        ] {
            let mut out = Vec::new();
            completion(shell, &mut out);
            let script = String::from_utf8(out).unwrap();
            for word in [
                "drover",
                "job",
                "rollback",
                "alloc",
                "--insecure-plaintext",
                "completion",
            ] {
                assert!(script.contains(word), "{shell}: no {word} in the script");
            }
        }
        let mut out = Vec::new();
        completion(clap_complete::Shell::Bash, &mut out);
        assert!(String::from_utf8(out).unwrap().contains("complete -F"));
    }

    #[test]
    fn an_unknown_shell_is_refused_with_the_ones_there_are() {
        let e = Cli::try_parse_from(["drover", "completion", "tcsh"]).unwrap_err();
        let text = e.to_string();
        assert!(text.contains("tcsh") && text.contains("bash"), "{text}");
    }
}
