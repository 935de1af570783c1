//! A node's preflight checks: what the agent's runtime uses of the kernel,
//! probed rather than inferred from the version (distributions backport
//! and disable features), each with what to do when it is missing.
//! The report and the checks every role shares are in
//! `drover_proto::preflight`.

use crate::cgroups::{self, Version};
use drover_proto::preflight::{self, Check, Report};
use std::path::Path;

/// The oldest kernel the runtime is written for: clone3 (5.3), pidfd
/// (5.3), openat2 (5.6), close_range (5.9); 5.10 is the LTS that has them.
pub const MIN_KERNEL: (u32, u32) = (5, 10);

/// Every check a node needs before `drover-agent run` (or `drover dev`)
/// may start containers.
pub fn node(state_dir: &Path, cgroup_root: &Path) -> Report {
    let mut r = Report::default();
    r.push(preflight::root("the agent"));
    r.push(preflight::kernel(MIN_KERNEL));
    r.push(clone3());
    r.push(pidfd());
    r.push(openat2());
    r.push(namespaces());
    r.push(user_namespaces());
    r.push(overlayfs());
    r.push(cgroup_controllers(cgroup_root));
    r.push(seccomp());
    r.push(nftables());
    r.push(ip_forward());
    r.push(conntrack());
    r.push(preflight::disk(state_dir, "the agent's state"));
    r.push(preflight::clock());
    r
}

/// What a system call probe answered: `Ok` when it ran, the errno if not.
fn errno_of(ret: libc::c_long) -> Result<libc::c_long, i32> {
    if ret >= 0 {
        Ok(ret)
    } else {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    }
}

fn missing_call(name: &str, errno: i32, since: &str) -> Check {
    let found = if errno == libc::ENOSYS {
        format!("{name}: not implemented (ENOSYS)")
    } else {
        format!("{name}: {}", std::io::Error::from_raw_os_error(errno))
    };
    Check::fail(
        name,
        found,
        format!("the runtime needs {name} (Linux {since}); a seccomp filter around this machine (a container, a sandbox) may also refuse it"),
    )
}

/// clone3 with a size too small for any `clone_args`: EINVAL where the
/// call exists (nothing is cloned), ENOSYS where it does not.
fn clone3() -> Check {
    // SAFETY: a null pointer with size 0 is refused before it is read.
    let r = errno_of(unsafe { libc::syscall(libc::SYS_clone3, std::ptr::null::<u8>(), 0usize) });
    match r {
        Err(libc::EINVAL) => Check::pass("clone3", "available"),
        Ok(_) => Check::pass("clone3", "available"),
        Err(e) => missing_call("clone3", e, "5.3"),
    }
}

fn pidfd() -> Check {
    // SAFETY: pidfd_open of our own pid; the fd is closed below.
    let r = errno_of(unsafe { libc::syscall(libc::SYS_pidfd_open, libc::getpid(), 0) });
    match r {
        Ok(fd) => {
            // SAFETY: the fd was just opened here.
            unsafe { libc::close(fd as libc::c_int) };
            Check::pass("pidfd", "pidfd_open available")
        }
        Err(e) => missing_call("pidfd_open", e, "5.3"),
    }
}

/// `struct open_how` of openat2(2).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

fn openat2() -> Check {
    const RESOLVE_NO_SYMLINKS: u64 = 0x04;
    let how = OpenHow {
        flags: (libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve: RESOLVE_NO_SYMLINKS,
    };
    // SAFETY: a valid path and a valid `open_how` of the size given; the
    // fd is closed below.
    let r = errno_of(unsafe {
        libc::syscall(
            libc::SYS_openat2,
            libc::AT_FDCWD,
            c"/".as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    });
    match r {
        Ok(fd) => {
            // SAFETY: the fd was just opened here.
            unsafe { libc::close(fd as libc::c_int) };
            Check::pass(
                "openat2",
                "available (image layers unpack with RESOLVE_* safety)",
            )
        }
        Err(e) => missing_call("openat2", e, "5.6"),
    }
}

fn namespaces() -> Check {
    let kinds = ["mnt", "pid", "net", "ipc", "uts", "cgroup"];
    let missing: Vec<&str> = kinds
        .iter()
        .copied()
        .filter(|k| !Path::new("/proc/self/ns").join(k).exists())
        .collect();
    if missing.is_empty() {
        Check::pass("namespaces", kinds.join(", "))
    } else {
        Check::fail(
            "namespaces",
            format!("missing: {}", missing.join(", ")),
            "use a kernel built with CONFIG_NAMESPACES and each of these namespaces",
        )
    }
}

/// User namespaces are only for jobs that ask for them (or nodes started
/// with --user-namespaces): a warning, not a failure.
fn user_namespaces() -> Check {
    let max = std::fs::read_to_string("/proc/sys/user/max_user_namespaces")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    match max {
        Some(n) if n > 0 && Path::new("/proc/self/ns/user").exists() => {
            Check::pass("user namespaces", format!("available (max {n})"))
        }
        Some(_) => Check::warn(
            "user namespaces",
            "turned off (user.max_user_namespaces = 0)",
            "sysctl -w user.max_user_namespaces=15000, or jobs with security.user_namespace fail on this node",
        ),
        None => Check::warn(
            "user namespaces",
            "not built into this kernel",
            "jobs with security.user_namespace cannot run on this node",
        ),
    }
}

fn overlayfs() -> Check {
    let listed = std::fs::read_to_string("/proc/filesystems")
        .map(|s| {
            s.lines()
                .any(|l| l.split_whitespace().last() == Some("overlay"))
        })
        .unwrap_or(false);
    if listed {
        Check::pass("overlayfs", "available")
    } else if Path::new("/sys/module/overlay").exists() {
        Check::pass("overlayfs", "module loaded")
    } else {
        Check::fail(
            "overlayfs",
            "not in /proc/filesystems",
            "modprobe overlay (and add overlay to /etc/modules-load.d/): container root file systems are overlays",
        )
    }
}

fn cgroup_controllers(root: &Path) -> Check {
    const NEEDED: [&str; 3] = ["memory", "cpu", "pids"];
    if !root.exists() {
        return Check::fail(
            "cgroups",
            format!("{} does not exist", root.display()),
            "mount cgroup2 at /sys/fs/cgroup (or give --cgroup-root)",
        );
    }
    match cgroups::detect_version(root) {
        Version::V2 => {
            let have = std::fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
            let have: Vec<&str> = have.split_whitespace().collect();
            let missing: Vec<&str> = NEEDED
                .iter()
                .copied()
                .filter(|c| !have.contains(c))
                .collect();
            if missing.is_empty() {
                Check::pass(
                    "cgroups",
                    format!("v2 at {}: {}", root.display(), have.join(" ")),
                )
            } else {
                Check::fail(
                    "cgroups",
                    format!("v2 at {}: no {} controller", root.display(), missing.join(", ")),
                    "enable them in the parent's cgroup.subtree_control (or boot without cgroup_disable=)",
                )
            }
        }
        Version::V1 => {
            // v1 also needs the devices controller: without it device rules
            // cannot be enforced and containers are refused (fail closed).
            let missing: Vec<&str> = NEEDED
                .iter()
                .chain(&["devices"])
                .copied()
                .filter(|c| !root.join(c).join("cgroup.procs").exists())
                .collect();
            if missing.is_empty() {
                Check::pass(
                    "cgroups",
                    format!("v1 at {}: memory, cpu, pids, devices", root.display()),
                )
            } else {
                Check::fail(
                    "cgroups",
                    format!("v1 at {}: {} not mounted", root.display(), missing.join(", ")),
                    "mount each v1 controller under the root, or boot with systemd.unified_cgroup_hierarchy=1 for cgroup v2",
                )
            }
        }
    }
}

/// Seccomp filters: PR_SET_SECCOMP with a null filter is EFAULT (or
/// EACCES) where filters exist, EINVAL where the kernel has none.
fn seccomp() -> Check {
    // SAFETY: a null filter pointer is refused before anything is installed.
    let r = unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
    let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
    if r < 0 && (errno == libc::EFAULT || errno == libc::EACCES) {
        Check::pass("seccomp", "filters available")
    } else {
        Check::fail(
            "seccomp",
            format!(
                "filters not available ({})",
                std::io::Error::from_raw_os_error(errno)
            ),
            "use a kernel with CONFIG_SECCOMP_FILTER: every container runs under a seccomp filter",
        )
    }
}

/// The netfilter tool the agent's firewall (its own nftables table) runs.
fn nftables() -> Check {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join("nft").is_file()))
        .unwrap_or(false);
    if !found {
        return Check::fail(
            "netfilter",
            "nft not found on PATH",
            "apt install nftables (the agent keeps containers off the control plane and does NAT with its own nftables table)",
        );
    }
    match std::process::Command::new("nft")
        .args(["list", "tables"])
        .output()
    {
        Ok(o) if o.status.success() => Check::pass("netfilter", "nftables (nft works)"),
        Ok(o) => Check::fail(
            "netfilter",
            format!(
                "nft list tables: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            "load nf_tables (modprobe nf_tables) and run as root",
        ),
        Err(e) => Check::fail("netfilter", format!("nft: {e}"), "apt install nftables"),
    }
}

fn ip_forward() -> Check {
    let path = "/proc/sys/net/ipv4/ip_forward";
    match std::fs::read_to_string(path).map(|s| s.trim().to_string()) {
        Ok(v) if v == "1" => Check::pass("ip_forward", "on"),
        Ok(_) => {
            let writable = std::fs::OpenOptions::new().write(true).open(path).is_ok();
            if writable {
                Check::pass("ip_forward", "off; the agent turns it on at start")
            } else {
                Check::fail(
                    "ip_forward",
                    "off, and /proc/sys is read-only here",
                    "sysctl -w net.ipv4.ip_forward=1 on the host: containers reach other nodes through it",
                )
            }
        }
        Err(e) => Check::fail(
            "ip_forward",
            format!("{path}: {e}"),
            "a kernel with IPv4 networking",
        ),
    }
}

/// The connection tracking table: big enough for the routing mesh, or
/// one the agent may raise (see `network::conntrack`).
fn conntrack() -> Check {
    use crate::network::conntrack::{current, wanted_here, Paths};
    let paths = Paths::default();
    let want = wanted_here();
    match current(&paths) {
        None => Check::pass(
            "conntrack",
            "not loaded yet; the agent sizes it when the container network starts",
        ),
        Some(m) if m >= want => Check::pass("conntrack", format!("table of {m} entries")),
        Some(m) if std::fs::OpenOptions::new().write(true).open(&paths.max).is_ok() => {
            Check::pass(
                "conntrack",
                format!("table of {m} entries; the agent raises it to {want} at start"),
            )
        }
        Some(m) => Check::warn(
            "conntrack",
            format!("table of {m} entries, read-only here"),
            format!("sysctl -w net.netfilter.nf_conntrack_max={want} on the host: the routing mesh holds two entries per request for two minutes, and a full table drops new connections"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use drover_proto::preflight::Level;

    #[test]
    fn the_runtimes_system_calls_are_found_here() {
        // This machine runs the runtime's own tests, so it has them all.
        for c in [clone3(), pidfd(), openat2(), namespaces(), seccomp()] {
            assert_eq!(c.level, Level::Pass, "{c:?}");
        }
    }

    #[test]
    fn cgroups_without_the_needed_controllers_fail_and_name_them() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("cgroup.controllers"), "cpuset io\n").unwrap();
        let c = cgroup_controllers(d.path());
        assert_eq!(c.level, Level::Fail, "{c:?}");
        assert!(c.found.contains("memory, cpu, pids"), "{c:?}");
        std::fs::write(d.path().join("cgroup.controllers"), "cpu memory pids io\n").unwrap();
        assert_eq!(cgroup_controllers(d.path()).level, Level::Pass);

        let v1 = tempfile::tempdir().unwrap();
        for c in ["memory", "cpu", "pids"] {
            std::fs::create_dir(v1.path().join(c)).unwrap();
            std::fs::write(v1.path().join(c).join("cgroup.procs"), "").unwrap();
        }
        let c = cgroup_controllers(v1.path());
        assert_eq!(c.level, Level::Fail, "{c:?}");
        assert!(c.found.contains("devices not mounted"), "{c:?}");
        let c = cgroup_controllers(&v1.path().join("nope"));
        assert_eq!(c.level, Level::Fail, "{c:?}");
    }
}
