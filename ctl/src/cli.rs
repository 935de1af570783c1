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
#[command(name = "drover", version, verbatim_doc_comment)]
pub struct Cli {
    /// Scheduler addresses, comma-separated.
    #[arg(
        long,
        global = true,
        env = "DROVER_ADDR",
        default_value = "127.0.0.1:7400"
    )]
    pub addr: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
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
    /// Print an allocation's output, or every allocation's of a job.
    ///
    /// Examples:
    ///   drover logs web            # all replicas of job web
    ///   drover logs 3f9a2c -f      # follow one allocation (id prefix)
    ///   drover logs web --tail 20
    #[command(verbatim_doc_comment)]
    Logs(LogsArgs),
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
    /// Example:
    ///   sudo drover dev
    #[command(verbatim_doc_comment)]
    Dev(DevArgs),
    /// Benchmarks against a running cluster.
    #[command(subcommand)]
    Bench(BenchCmd),
}

#[derive(Subcommand, Debug)]
pub enum BenchCmd {
    /// Time `job run` of N replicas until all run (image cached), and print a table.
    ///
    /// Example (with `drover dev` running, from the repository root):
    ///   drover bench job-run --replicas 20,100 --trials 5
    #[command(verbatim_doc_comment)]
    JobRun {
        /// Replica counts to try, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "20,100")]
        replicas: Vec<u32>,
        /// Runs per replica count.
        #[arg(long, default_value_t = 5)]
        trials: usize,
        /// The image to run (`sleep` must be in it).
        #[arg(long, default_value = "oci:examples/images/out/toolbox:latest")]
        image: String,
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
    /// Read from the replica asked, without confirming it leads (may be behind).
    #[arg(long)]
    pub stale: bool,
}

#[derive(Subcommand, Debug)]
pub enum JobCmd {
    /// Submit a job spec (YAML) and wait until all its replicas run.
    ///
    /// The spec is validated here first; an unchanged spec is a no-op.
    /// Relative oci: image paths are resolved against the current directory.
    ///
    /// Examples:
    ///   drover job run examples/jobs/web.yaml
    ///   drover job run --detach examples/jobs/toolbox.yaml
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

#[derive(Subcommand, Debug)]
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

#[derive(Subcommand, Debug)]
pub enum NodeCmd {
    /// List nodes with their resources and status.
    ///
    /// Example:
    ///   drover node ls
    #[command(verbatim_doc_comment)]
    Ls {
        #[command(flatten)]
        read: ReadArgs,
    },
}

#[derive(Args, Debug)]
pub struct LogsArgs {
    /// An allocation id (or unique prefix), or a job name.
    pub target: String,
    /// Keep printing new output.
    #[arg(short, long)]
    pub follow: bool,
    /// Only the last N lines (of each allocation).
    #[arg(long)]
    pub tail: Option<i64>,
}

#[derive(Args, Debug)]
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

#[derive(Args, Debug)]
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
    /// The node's name (default: this machine's hostname).
    #[arg(long)]
    pub node_name: Option<String>,
    /// Cgroup hierarchy root.
    #[arg(long, default_value = "/sys/fs/cgroup")]
    pub cgroup_root: PathBuf,
}
