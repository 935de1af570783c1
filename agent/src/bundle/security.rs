//! Isolation defaults, written into `config.json` the way Docker and runc
//! apply them, so that `runc run` of the same bundle enforces the same.
//!
//! A container keeps only Docker's 14 default capabilities (in the bounding,
//! permitted, effective and inheritable sets; a non-root user keeps them only
//! in the bounding set, so its effective set is empty as after a plain
//! `setuid`), runs with `no_new_privs`, sees the kernel's dangerous
//! interfaces under `/proc` and `/sys` masked or read-only, may touch only
//! the few device nodes a minimal `/dev` holds (a device cgroup denies the
//! rest), and runs under a seccomp filter. The filter is Docker's default
//! profile (`seccomp_default.json`, in Docker's own format): an allow list of
//! ~360 calls, everything else failing with EPERM; argument filters on
//! `socket` (no AF_VSOCK, AF_ALG, ...), `personality` and `clone` (no
//! namespace flags); `clone3` failing with ENOSYS (its flags live in memory a
//! filter cannot read, so libc falls back to `clone`); and the calls that need
//! a capability (mount, bpf, ptrace before 4.8, ...) allowed only when the
//! container has it. A job may run unconfined or bring its own profile in
//! the same format; `seccomp_for` resolves a profile's capability,
//! architecture and kernel conditions for one container, and the runtime
//! compiles the result for the machine's architecture.
//! Pure but for `HostFacts::current` (uname, once).

use drover_proto::spec::seccomp::{SeccompAction, SeccompOp, SeccompRule};
use drover_proto::spec::SeccompProfile;
use oci_spec::runtime::{
    Arch, Capability, LinuxCapabilities, LinuxCapabilitiesBuilder, LinuxDeviceCgroup,
    LinuxDeviceCgroupBuilder, LinuxDeviceType, LinuxSeccomp, LinuxSeccompAction,
    LinuxSeccompArgBuilder, LinuxSeccompBuilder, LinuxSeccompOperator, LinuxSyscallBuilder,
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

/// Which seccomp filter a container runs under.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Seccomp {
    /// Docker's default profile (`seccomp_default.json`).
    #[default]
    Default,
    /// No filter.
    Unconfined,
    /// A profile in Docker's format, from the job spec.
    Profile(Box<SeccompProfile>),
}

/// What a profile's `includes`/`excludes` are resolved against besides the
/// container's capabilities: the machine's architecture (Go's name, as
/// Docker's profiles use it) and kernel version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostFacts {
    pub arch: &'static str,
    pub kernel: (u32, u32),
}

impl HostFacts {
    /// This machine (read once).
    pub fn current() -> &'static HostFacts {
        static FACTS: std::sync::OnceLock<HostFacts> = std::sync::OnceLock::new();
        FACTS.get_or_init(|| HostFacts {
            arch: if cfg!(target_arch = "aarch64") {
                "arm64"
            } else {
                "amd64"
            },
            kernel: nix::sys::utsname::uname()
                .ok()
                .and_then(|u| {
                    drover_proto::spec::seccomp::parse_kernel_version(
                        &u.release().to_string_lossy(),
                    )
                })
                .unwrap_or((0, 0)),
        })
    }
}

/// Docker's default profile, in Docker's format.
/// Parsed once, not for every container.
pub fn default_seccomp_profile() -> &'static SeccompProfile {
    static PROFILE: std::sync::OnceLock<SeccompProfile> = std::sync::OnceLock::new();
    PROFILE.get_or_init(|| {
        serde_json::from_str(include_str!("seccomp_default.json"))
            .expect("the built-in profile parses (a unit test checks)")
    })
}

/// The OCI `linux.seccomp` for a container with `caps` (its bounding set,
/// `CAP_` names) on `host`, or none when unconfined: each rule of the profile
/// whose `includes` hold and whose `excludes` do not, as Docker resolves them.
pub fn seccomp_for(
    choice: &Seccomp,
    caps: &[String],
    host: &HostFacts,
) -> Result<Option<LinuxSeccomp>, BundleError> {
    let profile = match choice {
        Seccomp::Unconfined => return Ok(None),
        Seccomp::Default => default_seccomp_profile(),
        Seccomp::Profile(p) => p.as_ref(),
    };
    let has_cap = |c: &String| {
        let want = format!("CAP_{}", c.to_ascii_uppercase().trim_start_matches("CAP_"));
        caps.contains(&want)
    };
    let applies = |r: &SeccompRule| {
        let inc = &r.includes;
        let exc = &r.excludes;
        inc.caps.iter().all(has_cap)
            && (inc.arches.is_empty() || inc.arches.iter().any(|a| a == host.arch))
            && inc.min_kernel.as_deref().is_none_or(|v| {
                drover_proto::spec::seccomp::parse_kernel_version(v)
                    .is_some_and(|min| host.kernel >= min)
            })
            && !exc.caps.iter().any(has_cap)
            && !exc.arches.iter().any(|a| a == host.arch)
    };
    let mut syscalls = Vec::new();
    for r in profile.syscalls.iter().filter(|r| applies(r)) {
        let mut b = LinuxSyscallBuilder::default()
            .names(r.all_names().map(str::to_string).collect::<Vec<_>>())
            .action(action(r.action));
        if let Some(e) = r.errno_ret {
            b = b.errno_ret(e);
        }
        if !r.args.is_empty() {
            let args = r
                .args
                .iter()
                .map(|a| {
                    LinuxSeccompArgBuilder::default()
                        .index(a.index as usize)
                        .value(a.value)
                        .value_two(a.value_two)
                        .op(operator(a.op))
                        .build()
                })
                .collect::<Result<Vec<_>, _>>()?;
            b = b.args(args);
        }
        syscalls.push(b.build()?);
    }
    let mut out = LinuxSeccompBuilder::default()
        .default_action(action(profile.default_action))
        .architectures(vec![if cfg!(target_arch = "aarch64") {
            Arch::ScmpArchAarch64
        } else {
            Arch::ScmpArchX86_64
        }])
        .syscalls(syscalls);
    if let Some(e) = profile.default_errno_ret {
        out = out.default_errno_ret(e);
    }
    Ok(Some(out.build()?))
}

fn action(a: SeccompAction) -> LinuxSeccompAction {
    use LinuxSeccompAction as L;
    match a {
        SeccompAction::Allow => L::ScmpActAllow,
        SeccompAction::Errno => L::ScmpActErrno,
        SeccompAction::Kill => L::ScmpActKill,
        SeccompAction::KillThread => L::ScmpActKillThread,
        SeccompAction::KillProcess => L::ScmpActKillProcess,
        SeccompAction::Trap => L::ScmpActTrap,
        SeccompAction::Trace => L::ScmpActTrace,
        SeccompAction::Log => L::ScmpActLog,
        SeccompAction::Notify => L::ScmpActNotify,
    }
}

fn operator(op: SeccompOp) -> LinuxSeccompOperator {
    use LinuxSeccompOperator as L;
    match op {
        SeccompOp::NotEqual => L::ScmpCmpNe,
        SeccompOp::LessThan => L::ScmpCmpLt,
        SeccompOp::LessOrEqual => L::ScmpCmpLe,
        SeccompOp::Equal => L::ScmpCmpEq,
        SeccompOp::GreaterOrEqual => L::ScmpCmpGe,
        SeccompOp::GreaterThan => L::ScmpCmpGt,
        SeccompOp::MaskedEqual => L::ScmpCmpMaskedEq,
    }
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
    fn default_profile_resolves_by_capability_arch_and_kernel() {
        let host = HostFacts {
            arch: "amd64",
            kernel: (6, 1),
        };
        let names_for = |caps: &[&str], host: &HostFacts| {
            let caps: Vec<String> = caps.iter().map(|c| c.to_string()).collect();
            let p = seccomp_for(&Seccomp::Default, &caps, host)
                .unwrap()
                .unwrap();
            assert_eq!(p.default_action(), LinuxSeccompAction::ScmpActErrno);
            assert_eq!(p.default_errno_ret(), Some(1));
            p.syscalls()
                .iter()
                .flatten()
                .map(|r| (r.names().join(","), r.action(), r.errno_ret()))
                .collect::<Vec<_>>()
        };
        let allows = |rules: &[(String, LinuxSeccompAction, Option<u32>)], call: &str| {
            rules.iter().any(|(n, a, _)| {
                *a == LinuxSeccompAction::ScmpActAllow && n.split(',').any(|x| x == call)
            })
        };
        let plain = names_for(&["CAP_CHOWN", "CAP_SYS_CHROOT"], &host);
        assert!(allows(&plain, "read") && allows(&plain, "arch_prctl"));
        assert!(allows(&plain, "chroot"), "CAP_SYS_CHROOT allows chroot");
        assert!(allows(&plain, "ptrace"), "kernel 6.1 >= 4.8");
        for denied in [
            "mount",
            "unshare",
            "bpf",
            "reboot",
            "open_by_handle_at",
            "keyctl",
        ] {
            assert!(!allows(&plain, denied), "{denied}");
        }
        assert!(plain
            .iter()
            .any(|(n, _, e)| n == "clone3" && *e == Some(38)));
        let admin = names_for(&["CAP_SYS_ADMIN"], &host);
        assert!(allows(&admin, "mount") && allows(&admin, "clone3"));
        assert!(!admin.iter().any(|(n, _, e)| n == "clone3" && e.is_some()));
        let old_arm = names_for(
            &[],
            &HostFacts {
                arch: "arm64",
                kernel: (4, 4),
            },
        );
        assert!(!allows(&old_arm, "ptrace") && !allows(&old_arm, "arch_prctl"));
        assert!(allows(&old_arm, "cacheflush"));
        assert_eq!(seccomp_for(&Seccomp::Unconfined, &[], &host).unwrap(), None);
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
