//! The job spec's security settings: who the process runs as, whether its
//! root is writable, and which capabilities it keeps.
//!
//! By default a replica runs with Docker's 14 default capabilities, with
//! `no_new_privs` and a seccomp filter (the agent decides those); the
//! `security.capabilities` block adds to or drops from that set the way
//! `docker run --cap-add/--cap-drop` and Kubernetes' `securityContext` do.
//! Replicas cannot open connections to the control plane's ports unless
//! `security.control_plane_access` says they may. `security.seccomp:
//! unconfined` turns the seccomp filter off, and `security.seccomp_profile`
//! replaces the default filter with a profile in Docker's JSON format.

use serde::{Deserialize, Serialize};

use super::seccomp::SeccompProfile;

/// The `security` block.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Security {
    #[serde(default)]
    pub capabilities: CapabilityChanges,
    /// Let the replicas connect to the agent's and the schedulers' ports
    /// (containers are kept from them by default; they still need a
    /// certificate to be served).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub control_plane_access: bool,
    /// `default` (Docker's default profile, what the agent has built in) or
    /// `unconfined` (no filter).
    #[serde(default, skip_serializing_if = "SeccompMode::is_default")]
    pub seccomp: SeccompMode,
    /// A profile in Docker's JSON format, used instead of the default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seccomp_profile: Option<Box<SeccompProfile>>,
    /// Run in a user namespace of its own: container root is an
    /// unprivileged id on the host. Unset: the agent's default
    /// (`drover-agent run --user-namespaces`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_namespace: Option<bool>,
}

/// Whether a replica runs under a seccomp filter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SeccompMode {
    #[default]
    Default,
    Unconfined,
}

impl SeccompMode {
    pub fn is_default(&self) -> bool {
        *self == SeccompMode::Default
    }
}

impl Security {
    pub fn is_default(&self) -> bool {
        *self == Security::default()
    }
}

/// Capabilities added to and dropped from the default set; names as in
/// capabilities(7), with or without `CAP_`; `drop: [ALL]` starts from none.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapabilityChanges {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drop: Vec<String>,
}

/// Every capability Linux defines, without `CAP_`, in kernel numbering order
/// (capability.h): the runtime maps names to bits by position.
pub const CAPABILITIES: [&str; 41] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// Problems with `security`, `user` and `read_only_rootfs` as (path, rule).
pub(crate) fn problems(
    security: &Security,
    user: Option<&str>,
    host_network: bool,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if security.user_namespace == Some(true) && host_network {
        out.push((
            "security.user_namespace".into(),
            "needs network: private (a user namespace cannot mount /sys for the host's network)"
                .into(),
        ));
    }
    for (field, list) in [
        ("add", &security.capabilities.add),
        ("drop", &security.capabilities.drop),
    ] {
        for (i, name) in list.iter().enumerate() {
            let upper = name.to_ascii_uppercase();
            let bare = upper.trim_start_matches("CAP_");
            let all_ok = field == "drop" && bare == "ALL";
            if !all_ok && !CAPABILITIES.contains(&bare) {
                out.push((
                    format!("security.capabilities.{field}[{i}]"),
                    format!(
                        "{name:?} is not a capability (see capabilities(7){})",
                        if field == "drop" { ", or ALL" } else { "" }
                    ),
                ));
            }
        }
    }
    if let Some(profile) = &security.seccomp_profile {
        if security.seccomp == SeccompMode::Unconfined {
            out.push((
                "security.seccomp_profile".into(),
                "cannot be combined with seccomp: unconfined".into(),
            ));
        }
        out.extend(super::seccomp::problems(
            profile,
            "security.seccomp_profile",
        ));
    }
    if let Some(user) = user {
        let ok_part = |p: &str| {
            !p.is_empty()
                && p.len() <= 32
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
        };
        let ok = match user.split_once(':') {
            Some((u, g)) => ok_part(u) && ok_part(g),
            None => ok_part(user),
        };
        if !ok {
            out.push((
                "user".into(),
                format!("{user:?} must be UID[:GID] (numbers, or names from the image's /etc/passwd and /etc/group)"),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capability_names_are_checked() {
        let s = Security {
            capabilities: CapabilityChanges {
                add: vec!["sys_ptrace".into(), "CAP_NET_ADMIN".into(), "ALL".into()],
                drop: vec!["ALL".into(), "FLY".into()],
            },
            ..Default::default()
        };
        let p = problems(&s, None, false);
        assert_eq!(p.len(), 2, "{p:?}");
        assert_eq!(p[0].0, "security.capabilities.add[2]");
        assert_eq!(p[1].0, "security.capabilities.drop[1]");
        assert!(p[1].1.contains("\"FLY\" is not a capability"));
    }

    #[test]
    fn user_is_uid_and_optional_gid() {
        for ok in ["1000", "1000:1000", "nobody", "app:staff"] {
            assert!(
                problems(&Security::default(), Some(ok), false).is_empty(),
                "{ok}"
            );
        }
        for bad in ["", ":", "1000:", "a b", "x:y:z"] {
            let p = problems(&Security::default(), Some(bad), false);
            assert_eq!(p.len(), 1, "{bad}");
            assert_eq!(p[0].0, "user");
        }
    }
}
