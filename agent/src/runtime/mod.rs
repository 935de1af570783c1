//! Drover's own OCI runtime: starts a bundle without runc.
//!
//! `start` reads `config.json`, turns it into a [`plan::LaunchPlan`] (all
//! allocation happens there), creates the container's cgroup and `clone3`s a
//! child into new pid, mount, uts, ipc (and net) namespaces, receiving a
//! pidfd (see [`spawn`]). The child blocks on a pipe until the parent lets
//! it go on (with a user namespace, once its id maps are written; with
//! `before`, once its network is in place); it then builds its root and,
//! before anything of the container's runs, asks to be moved into the
//! cgroup and waits until it is, so nothing the container runs ever escapes
//! its limits while the runtime's own setup is not throttled by them (see
//! [`child`]). A second,
//! close-on-exec pipe carries a setup failure back (its step, the index of
//! the mount or exec candidate it failed on, and errno), or EOF when exec
//! succeeded, which is how `start` tells "running" from "failed"
//! synchronously.

mod bounded;
mod child;
mod container;
pub mod exec;
pub mod log;
pub mod monitor;
mod plan;
pub mod sealed_exe;
mod seccomp;
mod spawn;

use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use oci_spec::runtime::Spec;

pub use bounded::BoundedOutput;
pub use container::{Container, ExitStatus};
pub use exec::{ExecProcess, ExecRequest};
pub use monitor::MonitorConfig;

use crate::cgroups::{CgroupError, CgroupManager, Limits};
use child::ChildArgs;
use plan::{ptr_array, LaunchPlan};

/// Errors from starting and controlling containers.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("load {path}: {source}")]
    LoadSpec {
        path: PathBuf,
        source: oci_spec::OciSpecError,
    },
    #[error("unsupported runtime spec: {field}: {reason}")]
    InvalidSpec { field: &'static str, reason: String },
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error(transparent)]
    Seal(#[from] sealed_exe::SealError),
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("container {id}: {op}: {source}")]
    Sys {
        id: String,
        op: &'static str,
        source: std::io::Error,
    },
    #[error("container {id}: exec {program:?}: {source}")]
    Exec {
        id: String,
        program: String,
        source: std::io::Error,
    },
    #[error("container {id}: {message}")]
    Monitor { id: String, message: String },
    #[error("container {id}: before its command ran: {message}")]
    BeforeStart { id: String, message: String },
    #[error("container {id}: process.cwd {cwd}: resolves outside the container's root")]
    CwdOutsideRoot { id: String, cwd: String },
    #[error("container {id}: {stage}{detail}: {source}")]
    Setup {
        id: String,
        stage: &'static str,
        detail: String,
        source: std::io::Error,
    },
}

/// Where the container's stdio goes. stdin is always /dev/null.
#[derive(Debug)]
pub struct Stdio {
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
}

impl Stdio {
    /// Both streams appended to one log file.
    pub fn log(file: File) -> std::io::Result<Stdio> {
        let stderr = file.try_clone()?;
        Ok(Stdio {
            stdout: file.into(),
            stderr: stderr.into(),
        })
    }
}

/// The pids limit of a container whose spec sets none.
pub const DEFAULT_PIDS_LIMIT: i64 = 4096;

/// Limits a container gets where its spec sets none, so that no container
/// can take the node down: without a pids limit one fork bomb exhausts the
/// host's pid space, long before any memory limit is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceDefaults {
    /// `None`: no pids limit.
    pub pids: Option<i64>,
}

impl Default for ResourceDefaults {
    fn default() -> Self {
        ResourceDefaults {
            pids: Some(DEFAULT_PIDS_LIMIT),
        }
    }
}

impl ResourceDefaults {
    /// From a command-line value where 0 means "no limit".
    pub fn with_pids(pids: u64) -> Self {
        ResourceDefaults {
            pids: (pids > 0).then(|| pids.min(i64::MAX as u64) as i64),
        }
    }

    /// `limits` with the defaults filled in where they set nothing.
    pub fn apply(&self, limits: Limits) -> Limits {
        Limits {
            pids: limits.pids.or(self.pids),
            ..limits
        }
    }
}

/// Run between a container's creation and its command (see
/// [`Runtime::start_then`]), given its init's pid; an error calls the
/// start off.
pub type BeforeStart<'a> = &'a mut dyn FnMut(i32) -> Result<(), String>;

/// Starts containers from OCI bundles; cgroups through the given manager.
#[derive(Debug, Clone)]
pub struct Runtime {
    cgroups: Arc<dyn CgroupManager>,
    defaults: ResourceDefaults,
}

impl Runtime {
    /// A runtime with the default [`ResourceDefaults`].
    pub fn new(cgroups: Box<dyn CgroupManager>) -> Self {
        Runtime {
            cgroups: Arc::from(cgroups),
            defaults: ResourceDefaults::default(),
        }
    }

    /// The same runtime, filling in `defaults` where a spec sets no limit.
    pub fn with_defaults(mut self, defaults: ResourceDefaults) -> Self {
        self.defaults = defaults;
        self
    }

    pub fn defaults(&self) -> ResourceDefaults {
        self.defaults
    }

    pub fn cgroups(&self) -> &dyn CgroupManager {
        &*self.cgroups
    }

    /// Starts the bundle in `bundle_dir` as container `id`, stdout and stderr
    /// to `log`. Returns once the command has been exec'd. Blocking.
    pub fn start(&self, bundle_dir: &Path, id: &str, log: File) -> Result<Container, RuntimeError> {
        let stdio = Stdio::log(log).map_err(|source| RuntimeError::Sys {
            id: id.into(),
            op: "dup log file",
            source,
        })?;
        self.start_with_stdio(bundle_dir, id, stdio)
    }

    pub fn start_with_stdio(
        &self,
        bundle_dir: &Path,
        id: &str,
        stdio: Stdio,
    ) -> Result<Container, RuntimeError> {
        self.start_then(bundle_dir, id, stdio, &mut |_| Ok(()))
    }

    /// As [`Runtime::start_with_stdio`], with `before` run once the
    /// container exists and before any of it runs: its namespaces are made
    /// (`/proc/PID/ns/*` are the container's) and its init waits, so what
    /// `before` sets up there (its network) is in place when the command's
    /// first instruction runs. An error from `before` stops the start.
    pub fn start_then(
        &self,
        bundle_dir: &Path,
        id: &str,
        stdio: Stdio,
        before: BeforeStart<'_>,
    ) -> Result<Container, RuntimeError> {
        let config = bundle_dir.join("config.json");
        let spec = Spec::load(&config).map_err(|source| RuntimeError::LoadSpec {
            path: config,
            source,
        })?;
        let rootfs = plan::resolve_rootfs(&spec, bundle_dir)?;
        let mut plan = plan::plan(&spec, &rootfs, &plan::HostFacts::read())?;
        plan.limits = self.defaults.apply(plan.limits);
        self.cgroups.create(id, &plan.limits)?;
        let launched = self
            .cgroups
            .set_devices(id, &plan.device_rules)
            .map_err(RuntimeError::from)
            .and_then(|()| self.launch(&plan, id, stdio, before));
        match launched {
            Ok(container) => Ok(container),
            Err(e) => {
                let _ = self.cgroups.remove(id);
                Err(e)
            }
        }
    }

    fn launch(
        &self,
        plan: &LaunchPlan,
        id: &str,
        stdio: Stdio,
        before: BeforeStart<'_>,
    ) -> Result<Container, RuntimeError> {
        let sys = |op: &'static str| {
            move |e: nix::errno::Errno| RuntimeError::Sys {
                id: id.into(),
                op,
                source: e.into(),
            }
        };
        let handshake = spawn::Handshake::new().map_err(sys("pipe"))?;
        let devnull = File::open("/dev/null").map_err(|source| RuntimeError::Sys {
            id: id.into(),
            op: "open /dev/null",
            source,
        })?;
        let high = |fd: RawFd| spawn::high_fd(fd).map_err(sys("dup stdio"));
        let (stdin, stdout, stderr) = (
            high(devnull.as_raw_fd())?,
            high(stdio.stdout.as_raw_fd())?,
            high(stdio.stderr.as_raw_fd())?,
        );
        let argv = ptr_array(&plan.argv);
        let envp = ptr_array(&plan.envp);
        let args = ChildArgs {
            plan,
            argv: &argv,
            envp: &envp,
            sync_fd: handshake.sync_fd(),
            error_fd: handshake.error_fd(),
            stdin_fd: stdin.as_raw_fd(),
            stdout_fd: stdout.as_raw_fd(),
            stderr_fd: stderr.as_raw_fd(),
            join_late: true,
        };
        // SAFETY: `child::run` never returns and only makes raw syscalls on
        // `args`, which the parent prepared (see `child`).
        let (pid, pidfd) = unsafe { spawn::clone3(plan.clone_flags, || child::run(&args)) }
            .map_err(|source| RuntimeError::Sys {
                id: id.into(),
                op: "clone3",
                source,
            })?;
        let parent = handshake.into_parent();
        drop((stdin, stdout, stderr, devnull, stdio));
        let container = Container::new(id.to_string(), pid, pidfd, self.cgroups.clone());

        // From here on, dropping `container` kills and reaps the child.
        // It joins its cgroup at the end of its setup, when it asks (see
        // `child::join_cgroup`).
        if let Some(maps) = &plan.id_maps {
            // The child waits for these before any setup (it has no mapped
            // ids until then); root here may map any range.
            for (file, map) in [("uid_map", &maps.uid_map), ("gid_map", &maps.gid_map)] {
                std::fs::write(format!("/proc/{pid}/{file}"), map).map_err(|source| {
                    RuntimeError::Sys {
                        id: id.into(),
                        op: "write the user namespace's id map",
                        source,
                    }
                })?;
            }
        }
        if let Err(message) = before(pid) {
            // Dropping `container` kills the waiting child and reaps it.
            return Err(RuntimeError::BeforeStart {
                id: id.into(),
                message,
            });
        }
        let mut join = || self.cgroups.add_process(id, pid);
        let failed = parent.release(Some(&mut join)).map_err(|e| match e {
            spawn::ReleaseError::Handshake(e) => RuntimeError::Sys {
                id: id.into(),
                op: e.op,
                source: e.source,
            },
            spawn::ReleaseError::Join(e) => RuntimeError::from(e),
        })?;
        match failed {
            None => Ok(container),
            Some(failure) => {
                let _ = container.wait_blocking();
                Err(failure.into_error(id, plan, spawn::Launch::Start))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fill_only_what_the_spec_leaves_unset() {
        let d = ResourceDefaults::default();
        let none = Limits::default();
        assert_eq!(d.apply(none).pids, Some(DEFAULT_PIDS_LIMIT));
        let set = Limits {
            pids: Some(10),
            memory_bytes: Some(1 << 20),
            cpu_millis: None,
        };
        assert_eq!(d.apply(set), set);
        assert_eq!(ResourceDefaults::with_pids(0).apply(none), none);
        assert_eq!(ResourceDefaults::with_pids(7).apply(none).pids, Some(7));
    }
}
