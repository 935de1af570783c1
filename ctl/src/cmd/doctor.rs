//! `drover doctor`: is this machine ready to run Drover, and what to do
//! where it is not.

use crate::cli::{DoctorArgs, DoctorRole, Format};
use anyhow::Result;
#[cfg(not(feature = "dev"))]
use drover_proto::preflight::Check;
use drover_proto::preflight::{self, Report};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Every check the role needs, run on this machine.
pub fn report(a: &DoctorArgs) -> Report {
    let state = |default: &str| {
        a.state_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(default))
    };
    let mut r = Report::default();
    match a.role {
        DoctorRole::Dev => {
            let dir = state("/var/lib/drover/dev");
            node(&mut r, &dir, &a.cgroup_root);
            ports(
                &mut r,
                &a.port,
                &[
                    ("127.0.0.1:7400", "drover dev's API"),
                    ("127.0.0.1:7401", "drover dev's agent API"),
                ],
            );
        }
        DoctorRole::Agent => {
            node(&mut r, &state("/var/lib/drover/agent"), &a.cgroup_root);
            ports(&mut r, &a.port, &[("0.0.0.0:7401", "the agent's API")]);
        }
        DoctorRole::Scheduler => {
            #[cfg(feature = "dev")]
            {
                r.checks.extend(
                    drover_scheduler::preflight(&state("/var/lib/drover/scheduler")).checks,
                );
            }
            #[cfg(not(feature = "dev"))]
            {
                r.push(preflight::disk(
                    &state("/var/lib/drover/scheduler"),
                    "the scheduler's Raft log",
                ));
                r.push(preflight::clock());
            }
            ports(
                &mut r,
                &a.port,
                &[("0.0.0.0:7400", "the scheduler's API and Raft")],
            );
        }
    }
    r
}

/// A node's checks: the agent's, where this `drover` was built with it.
fn node(r: &mut Report, state_dir: &Path, cgroup_root: &Path) {
    #[cfg(feature = "dev")]
    r.checks
        .extend(drover_agent::preflight::node(state_dir, cgroup_root).checks);
    #[cfg(not(feature = "dev"))]
    {
        let _ = cgroup_root;
        r.push(preflight::root("the agent"));
        r.push(preflight::kernel((5, 10)));
        r.push(Check::warn(
            "node features",
            "not checked: this drover was built without the agent (--no-default-features)",
            "run `drover-agent` on the node, which checks them at start, or a full build of drover",
        ));
        r.push(preflight::disk(state_dir, "the agent's state"));
        r.push(preflight::clock());
    }
}

/// The ports given, or the role's defaults.
fn ports(r: &mut Report, given: &[SocketAddr], defaults: &[(&str, &str)]) {
    if given.is_empty() {
        for (addr, what) in defaults {
            r.push(preflight::port(
                addr.parse().expect("a default address"),
                what,
            ));
        }
    } else {
        for addr in given {
            r.push(preflight::port(*addr, "--port"));
        }
    }
}

pub fn run(a: DoctorArgs) -> Result<i32> {
    let r = report(&a);
    match a.output {
        Format::Table => print!("{}", r.render()),
        other => crate::output::print(other, &serde_json::to_value(&r)?, String::new),
    }
    Ok(if r.ok() { 0 } else { 1 })
}
