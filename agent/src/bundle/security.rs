//! Isolation defaults, written into `config.json` the way Docker and runc
//! apply them, so that `runc run` of the same bundle enforces the same.
//!
//! A container keeps only Docker's 14 default capabilities (in the bounding,
//! permitted, effective and inheritable sets; a non-root user keeps them only
//! in the bounding set, so its effective set is empty as after a plain
//! `setuid`), runs with `no_new_privs`, sees the kernel's dangerous
//! interfaces under `/proc` and `/sys` masked or read-only, may touch only
//! the few device nodes a minimal `/dev` holds (a device cgroup denies the
//! rest), and runs under a seccomp filter. The filter is a deny list: every
//! call Docker's default profile refuses to an unprivileged container
//! (kernel modules, kexec, reboot, mount and the new mount API, pivot_root,
//! unshare/setns, keyctl, bpf, perf_event_open, open_by_handle_at, clock and
//! swap control, NUMA policy, ...) fails with EPERM, `clone` with a
//! namespace flag fails with EPERM, and `clone3` fails with ENOSYS (its flags
//! live in memory a filter cannot read; libc then falls back to `clone`).
//! Docker's profile is an allow list of ~350 calls; a deny list of the
//! dangerous ones gives the same answers for everything a program can do
//! with the default capabilities, and stays readable. The filter is built
//! for x86_64 only (other architectures, x32 and the i386 entry point are
//! refused by the runtime that compiles it).
//! Pure: no files, no syscalls.

use oci_spec::runtime::{
    Arch, Capability, LinuxCapabilities, LinuxCapabilitiesBuilder, LinuxDeviceCgroup,
    LinuxDeviceCgroupBuilder, LinuxDeviceType, LinuxSeccomp, LinuxSeccompAction,
    LinuxSeccompArgBuilder, LinuxSeccompBuilder, LinuxSeccompOperator, LinuxSyscall,
    LinuxSyscallBuilder,
};
use std::collections::HashSet;

use super::BundleError;

/// Docker's default capability set.
pub const DEFAULT_CAPABILITIES: [&str; 14] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "MKNOD",
    "NET_RAW",
    "SETGID",
    "SETUID",
    "SETFCAP",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
];

/// Calls refused with EPERM: what Docker's default profile does not allow a
/// container without extra capabilities (names as in the x86_64 syscall table).
pub const DENIED_SYSCALLS: &[&str] = &[
    // kernel modules
    "init_module",
    "finit_module",
    "delete_module",
    "create_module",
    "query_module",
    "get_kernel_syms",
    // replacing or stopping the kernel
    "kexec_load",
    "kexec_file_load",
    "reboot",
    // filesystems and namespaces
    "mount",
    "umount2",
    "pivot_root",
    "move_mount",
    "open_tree",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "mount_setattr",
    "unshare",
    "setns",
    "name_to_handle_at",
    "open_by_handle_at",
    "quotactl",
    "quotactl_fd",
    "nfsservctl",
    "uselib",
    "ustat",
    "sysfs",
    "_sysctl",
    "acct",
    "swapon",
    "swapoff",
    // kernel keyring
    "keyctl",
    "add_key",
    "request_key",
    // tracing and introspection of the host
    "bpf",
    "perf_event_open",
    "lookup_dcookie",
    "kcmp",
    "syslog",
    "userfaultfd",
    "fanotify_init",
    // clocks
    "settimeofday",
    "clock_settime",
    "clock_adjtime",
    // raw hardware access
    "iopl",
    "ioperm",
    // NUMA policy (CAP_SYS_NICE in Docker's profile)
    "mbind",
    "set_mempolicy",
    "get_mempolicy",
    "move_pages",
    "migrate_pages",
    // io_uring bypasses the filter for the calls it submits
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
];

/// `clone` flags that create namespaces: refused like `unshare`.
pub const CLONE_NAMESPACE_FLAGS: [u64; 7] = [
    0x0002_0000, // CLONE_NEWNS
    0x0200_0000, // CLONE_NEWCGROUP
    0x0400_0000, // CLONE_NEWUTS
    0x0800_0000, // CLONE_NEWIPC
    0x1000_0000, // CLONE_NEWUSER
    0x2000_0000, // CLONE_NEWPID
    0x4000_0000, // CLONE_NEWNET
];

const EPERM: u32 = 1;
const ENOSYS: u32 = 38;

/// The device cgroup rules of every container, runc's and Docker's default:
/// deny all, allow creating any node (`m`) but opening only the ones the
/// minimal `/dev` holds, ptys and tun.
pub fn device_rules() -> Vec<LinuxDeviceCgroup> {
    let rule = |allow: bool, typ: LinuxDeviceType, major: Option<i64>, minor: Option<i64>, a| {
        let mut b = LinuxDeviceCgroupBuilder::default()
            .allow(allow)
            .typ(typ)
            .access(a);
        if let Some(m) = major {
            b = b.major(m);
        }
        if let Some(m) = minor {
            b = b.minor(m);
        }
        b.build().expect("all fields set")
    };
    use LinuxDeviceType::{A, B, C};
    let mut rules = vec![
        rule(false, A, None, None, "rwm"),
        rule(true, C, None, None, "m"),
        rule(true, B, None, None, "m"),
    ];
    for (major, minor) in [
        (1, Some(3)),
        (1, Some(5)),
        (1, Some(7)),
        (1, Some(8)),
        (1, Some(9)),
        (5, Some(0)),
        (5, Some(1)),
        (5, Some(2)),
        (136, None),
        (10, Some(200)),
    ] {
        rules.push(rule(true, C, Some(major), minor, "rwm"));
    }
    rules
}

/// Requested changes to the default capabilities, names without `CAP_`,
/// upper case; `ALL` in `drop` starts from an empty set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CapabilityChanges {
    pub add: Vec<String>,
    pub drop: Vec<String>,
}

/// The capability called `name` (`CAP_` prefix optional, any case).
fn parse_capability(name: &str) -> Option<Capability> {
    serde_json::from_value(serde_json::Value::String(name.to_string())).ok()
}

fn normalize(name: &str) -> String {
    let upper = name.to_ascii_uppercase();
    upper.trim_start_matches("CAP_").to_string()
}

/// The capability names (`CAP_...`) a container gets: the defaults, minus
/// `drop`, plus `add`, sorted.
pub fn effective_capabilities(changes: &CapabilityChanges) -> Result<Vec<String>, BundleError> {
    let drop: HashSet<String> = changes.drop.iter().map(|d| normalize(d)).collect();
    let mut set: Vec<String> = if drop.contains("ALL") {
        Vec::new()
    } else {
        DEFAULT_CAPABILITIES
            .iter()
            .filter(|c| !drop.contains(**c))
            .map(|c| c.to_string())
            .collect()
    };
    for name in &changes.add {
        let name = normalize(name);
        if name == "ALL" {
            return Err(BundleError::InvalidCapability { name });
        }
        if !set.contains(&name) {
            set.push(name);
        }
    }
    let mut out = Vec::with_capacity(set.len());
    for name in set {
        let full = format!("CAP_{name}");
        if parse_capability(&full).is_none() {
            return Err(BundleError::InvalidCapability { name });
        }
        out.push(full);
    }
    out.sort();
    Ok(out)
}

/// The OCI capability sets for a process running as `uid`.
pub fn capabilities(names: &[String], uid: u32) -> Result<LinuxCapabilities, BundleError> {
    let set = names
        .iter()
        .map(|n| {
            parse_capability(n).ok_or_else(|| BundleError::InvalidCapability {
                name: n.trim_start_matches("CAP_").to_string(),
            })
        })
        .collect::<Result<HashSet<_>, _>>()?;
    let process_set = if uid == 0 {
        set.clone()
    } else {
        HashSet::new()
    };
    Ok(LinuxCapabilitiesBuilder::default()
        .bounding(set)
        .permitted(process_set.clone())
        .effective(process_set.clone())
        .inheritable(process_set)
        .ambient(HashSet::new())
        .build()?)
}

/// The default seccomp profile in OCI form (what `runc` hands to libseccomp).
pub fn seccomp_profile() -> Result<LinuxSeccomp, BundleError> {
    let deny = |names: Vec<String>, errno: u32| -> Result<LinuxSyscall, BundleError> {
        Ok(LinuxSyscallBuilder::default()
            .names(names)
            .action(LinuxSeccompAction::ScmpActErrno)
            .errno_ret(errno)
            .build()?)
    };
    let mut syscalls = vec![deny(
        DENIED_SYSCALLS.iter().map(|s| s.to_string()).collect(),
        EPERM,
    )?];
    for flag in CLONE_NAMESPACE_FLAGS {
        let mut rule = deny(vec!["clone".into()], EPERM)?;
        rule.set_args(Some(vec![LinuxSeccompArgBuilder::default()
            .index(0usize)
            .value(flag)
            .value_two(flag)
            .op(LinuxSeccompOperator::ScmpCmpMaskedEq)
            .build()?]));
        syscalls.push(rule);
    }
    syscalls.push(deny(vec!["clone3".into()], ENOSYS)?);
    Ok(LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActAllow)
        .architectures(vec![Arch::ScmpArchX86_64])
        .syscalls(syscalls)
        .build()?)
}

/// Paths hidden from the container: the OCI defaults plus Docker's extras.
pub fn masked_paths() -> Vec<String> {
    let mut paths = oci_spec::runtime::get_default_maskedpaths();
    paths.push("/sys/devices/virtual/powercap".into());
    paths
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_capabilities_are_dockers_fourteen() {
        let caps = effective_capabilities(&CapabilityChanges::default()).unwrap();
        assert_eq!(caps.len(), 14);
        assert!(caps.contains(&"CAP_NET_RAW".to_string()));
        assert!(!caps.contains(&"CAP_SYS_ADMIN".to_string()));
    }

    #[test]
    fn add_and_drop_change_the_set() {
        let c = CapabilityChanges {
            add: vec!["sys_ptrace".into()],
            drop: vec!["CAP_NET_RAW".into(), "MKNOD".into()],
        };
        let caps = effective_capabilities(&c).unwrap();
        assert_eq!(caps.len(), 13);
        assert!(caps.contains(&"CAP_SYS_PTRACE".to_string()));
        assert!(!caps.contains(&"CAP_NET_RAW".to_string()));
        let c = CapabilityChanges {
            add: vec!["NET_BIND_SERVICE".into()],
            drop: vec!["ALL".into()],
        };
        assert_eq!(
            effective_capabilities(&c).unwrap(),
            vec!["CAP_NET_BIND_SERVICE"]
        );
        let bad = CapabilityChanges {
            add: vec!["FLY".into()],
            drop: vec![],
        };
        assert!(matches!(
            effective_capabilities(&bad),
            Err(BundleError::InvalidCapability { name }) if name == "FLY"
        ));
    }

    #[test]
    fn non_root_keeps_capabilities_only_in_bounding() {
        let names = effective_capabilities(&CapabilityChanges::default()).unwrap();
        let root = capabilities(&names, 0).unwrap();
        assert_eq!(root.effective().as_ref().unwrap().len(), 14);
        assert_eq!(root.inheritable().as_ref().unwrap().len(), 14);
        let user = capabilities(&names, 1000).unwrap();
        assert_eq!(user.bounding().as_ref().unwrap().len(), 14);
        assert!(user.effective().as_ref().unwrap().is_empty());
    }

    #[test]
    fn seccomp_profile_denies_the_dangerous_calls() {
        let p = seccomp_profile().unwrap();
        let rules = p.syscalls().as_ref().unwrap();
        let denied: Vec<&String> = rules[0].names().iter().collect();
        for name in ["mount", "unshare", "setns", "init_module", "bpf", "keyctl"] {
            assert!(denied.iter().any(|d| *d == name), "{name}");
        }
        assert_eq!(rules.iter().filter(|r| r.names() == &["clone"]).count(), 7);
        assert_eq!(rules.last().unwrap().errno_ret(), Some(ENOSYS));
    }

    #[test]
    fn device_rules_deny_all_first() {
        let rules = device_rules();
        assert!(!rules[0].allow());
        assert_eq!(rules[0].to_string(), "a *:* rwm");
        assert!(rules.iter().any(|r| r.to_string() == "c 1:3 rwm"));
        assert!(rules.iter().any(|r| r.to_string() == "c 136:* rwm"));
    }
}
