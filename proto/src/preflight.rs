//! Preflight checks: what a machine must have before Drover's daemons can
//! run on it, each answered pass, warn or fail with what to do about it.
//!
//! `drover doctor` prints every check; `drover dev`, `drover-agent run` and
//! `drover-scheduler` run the checks their role needs at start and stop
//! with the failed check's message rather than a confusing error later.
//! This module holds the report and the checks every role shares (root,
//! kernel, free disk, free ports, clock); the node's checks (namespaces,
//! cgroups, overlayfs, seccomp, the netfilter tools) are the agent's
//! (`drover_agent::preflight`).

use serde::Serialize;
use std::net::SocketAddr;
use std::path::Path;

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Pass,
    Warn,
    Fail,
}

impl Level {
    pub fn word(self) -> &'static str {
        match self {
            Level::Pass => "pass",
            Level::Warn => "warn",
            Level::Fail => "fail",
        }
    }
}

/// One check: what it looked at, what it found and, unless it passed,
/// what to do.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: String,
    pub level: Level,
    pub found: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub fix: String,
}

impl Check {
    pub fn pass(name: &str, found: impl Into<String>) -> Check {
        Check {
            name: name.into(),
            level: Level::Pass,
            found: found.into(),
            fix: String::new(),
        }
    }

    pub fn warn(name: &str, found: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            name: name.into(),
            level: Level::Warn,
            found: found.into(),
            fix: fix.into(),
        }
    }

    pub fn fail(name: &str, found: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            name: name.into(),
            level: Level::Fail,
            found: found.into(),
            fix: fix.into(),
        }
    }

    /// The same check, no worse than a warning (for what only some jobs
    /// or only `drover doctor`'s reader need).
    pub fn at_most_warn(mut self) -> Check {
        if self.level == Level::Fail {
            self.level = Level::Warn;
        }
        self
    }
}

/// Every check of one run, in order.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub checks: Vec<Check>,
}

impl Report {
    pub fn push(&mut self, c: Check) {
        self.checks.push(c);
    }

    pub fn failed(&self) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(|c| c.level == Level::Fail)
    }

    pub fn warnings(&self) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(|c| c.level == Level::Warn)
    }

    pub fn ok(&self) -> bool {
        self.failed().next().is_none()
    }

    /// One line per check: `pass  name  found`, and for a warning or a
    /// failure an indented line with what to do.
    pub fn render(&self) -> String {
        let width = self.checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
        let mut out = String::new();
        for c in &self.checks {
            out.push_str(&format!(
                "{:<4}  {:<width$}  {}\n",
                c.level.word(),
                c.name,
                c.found
            ));
            if !c.fix.is_empty() {
                out.push_str(&format!("      {:<width$}  -> {}\n", "", c.fix));
            }
        }
        let (w, f) = self.checks.iter().fold((0, 0), |(w, f), c| match c.level {
            Level::Warn => (w + 1, f),
            Level::Fail => (w, f + 1),
            Level::Pass => (w, f),
        });
        out.push_str(&format!(
            "{} checks: {} passed, {w} warned, {f} failed\n",
            self.checks.len(),
            self.checks.len() - w - f
        ));
        out
    }

    /// What a daemon says when it refuses to start: every failed check
    /// with what to do.
    pub fn refusal(&self, who: &str) -> String {
        let mut msg = format!("{who} cannot run on this machine (`drover doctor` checks it all):");
        for c in self.failed() {
            msg.push_str(&format!("\n  {}: {}; {}", c.name, c.found, c.fix));
        }
        msg
    }
}

/// Root: the agent makes namespaces, cgroups, mounts and bridges.
pub fn root(needed_by: &str) -> Check {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    if uid == 0 {
        Check::pass("root", "running as root")
    } else {
        Check::fail(
            "root",
            format!("running as uid {uid}"),
            format!("run {needed_by} as root (sudo): it makes namespaces, cgroups, mounts and network links"),
        )
    }
}

/// The kernel release, at least `min`.
pub fn kernel(min: (u32, u32)) -> Check {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    match crate::spec::seccomp::parse_kernel_version(&release) {
        Some(v) if v >= min => Check::pass("kernel", format!("Linux {release}")),
        Some(_) => Check::fail(
            "kernel",
            format!("Linux {release}"),
            format!(
                "Drover needs Linux {}.{} or newer (clone3, pidfd, openat2, cgroup v2 features)",
                min.0, min.1
            ),
        ),
        None => Check::warn(
            "kernel",
            format!("release {release:?} not understood"),
            "the feature checks below say what works",
        ),
    }
}

/// Free space where `what` keeps its state (the nearest existing parent of
/// `dir`): under 100 MiB fails, under 1 GiB warns.
pub fn disk(dir: &Path, what: &str) -> Check {
    let name = format!("disk ({what})");
    let mut at = dir;
    while !at.exists() {
        match at.parent() {
            Some(p) => at = p,
            None => break,
        }
    }
    let free = match free_bytes(at) {
        Ok(b) => b,
        Err(e) => {
            return Check::warn(
                &name,
                format!("{}: cannot read free space: {e}", at.display()),
                "check the state directory's file system by hand",
            )
        }
    };
    const MIB: u64 = 1 << 20;
    let found = format!("{} MiB free at {}", free / MIB, at.display());
    let fix = format!(
        "free space in {} or choose another --state-dir: images, logs and the Raft log live there",
        at.display()
    );
    if free < 100 * MIB {
        Check::fail(&name, found, fix)
    } else if free < 1024 * MIB {
        Check::warn(&name, found, fix)
    } else {
        Check::pass(&name, found)
    }
}

fn free_bytes(path: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid C string and `st` a valid out-pointer.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(st.f_bavail as u64 * st.f_frsize as u64)
}

/// Whether `addr` can be bound now (`what` listens there).
pub fn port(addr: SocketAddr, what: &str) -> Check {
    let name = format!("port {} ({what})", addr.port());
    match std::net::TcpListener::bind(addr) {
        Ok(_) => Check::pass(&name, format!("{addr} is free")),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Check::fail(
            &name,
            format!("{addr} is in use"),
            format!(
                "stop what listens there (`ss -ltnp 'sport = :{}'`) or give {what} another address",
                addr.port()
            ),
        ),
        Err(e) => Check::fail(
            &name,
            format!("{addr}: {e}"),
            format!("give {what} an address of this machine"),
        ),
    }
}

/// Whether the kernel believes its clock is synchronised (NTP): the
/// certificates Drover issues and checks have validity windows, and
/// replicas' clocks stamp what they report.
pub fn clock() -> Check {
    #[cfg(target_os = "linux")]
    {
        let mut t: libc::timex = unsafe { std::mem::zeroed() };
        // SAFETY: modes 0 only reads; `t` is a valid out-pointer.
        let state = unsafe { libc::adjtimex(&mut t) };
        if state < 0 {
            return Check::warn(
                "clock",
                format!("adjtimex: {}", std::io::Error::last_os_error()),
                "make sure an NTP client (chrony, systemd-timesyncd) keeps the clock",
            );
        }
        if state == libc::TIME_ERROR || t.status & libc::STA_UNSYNC != 0 {
            Check::warn(
                "clock",
                "not synchronised (the kernel's NTP state says unsynchronised)",
                "run an NTP client (apt install chrony, or systemctl enable --now systemd-timesyncd): certificates have validity windows",
            )
        } else {
            Check::pass("clock", "synchronised (NTP)")
        }
    }
    #[cfg(not(target_os = "linux"))]
    Check::warn("clock", "not checked on this system", "")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_with_a_failure_is_not_ok_and_says_what_to_do() {
        let mut r = Report::default();
        r.push(Check::pass("a", "fine"));
        r.push(Check::warn("b", "meh", "do b"));
        assert!(r.ok());
        r.push(Check::fail("c", "broken", "fix c"));
        assert!(!r.ok());
        let text = r.render();
        assert!(text.contains("fail  c  broken"), "{text}");
        assert!(text.contains("-> fix c"), "{text}");
        assert!(
            text.contains("3 checks: 1 passed, 1 warned, 1 failed"),
            "{text}"
        );
        let refusal = r.refusal("drover-agent");
        assert!(refusal.contains("c: broken; fix c"), "{refusal}");
        assert!(!refusal.contains("do b"), "{refusal}");
        assert_eq!(Check::fail("x", "", "").at_most_warn().level, Level::Warn);
    }

    #[test]
    fn a_port_in_use_fails_and_a_free_one_passes() {
        let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = held.local_addr().unwrap();
        let c = port(addr, "the test");
        assert_eq!(c.level, Level::Fail, "{c:?}");
        assert!(c.found.contains("in use"), "{c:?}");
        drop(held);
        assert_eq!(port(addr, "the test").level, Level::Pass);
    }

    #[test]
    fn disk_looks_at_the_nearest_existing_parent() {
        let d = tempfile::tempdir().unwrap();
        let c = disk(&d.path().join("not/yet/made"), "test");
        assert_ne!(c.level, Level::Fail, "{c:?}");
        assert!(c.found.contains(&d.path().display().to_string()), "{c:?}");
    }

    #[test]
    fn kernel_below_the_minimum_fails() {
        assert_eq!(kernel((1, 0)).level, Level::Pass);
        assert_eq!(kernel((999, 0)).level, Level::Fail);
    }
}
