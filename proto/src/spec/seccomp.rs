//! Seccomp profiles in Docker's JSON format (`docker run --security-opt
//! seccomp=profile.json`), the format users already have profiles in.
//!
//! A profile is a default action and a list of rules; a rule names system
//! calls, the action to take for them, optional argument conditions, and
//! optional `includes`/`excludes` conditions on the container's capabilities,
//! the machine's architecture and the kernel version. The agent resolves
//! those conditions for the container it starts and compiles what is left
//! (see the agent's `bundle::security` and `runtime::seccomp`); its own
//! default profile is written in this format too.
//!
//! Parsing is strict like the rest of the spec: unknown fields, actions and
//! operators are errors with their path.

use serde::{Deserialize, Serialize};

/// What the kernel does with a call (Docker's and the OCI runtime spec's
/// names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SeccompAction {
    #[serde(rename = "SCMP_ACT_ALLOW")]
    Allow,
    /// Fail with `errnoRet` (EPERM if unset).
    #[serde(rename = "SCMP_ACT_ERRNO")]
    Errno,
    /// Kill the thread (the older name of `SCMP_ACT_KILL_THREAD`).
    #[serde(rename = "SCMP_ACT_KILL")]
    Kill,
    #[serde(rename = "SCMP_ACT_KILL_THREAD")]
    KillThread,
    #[serde(rename = "SCMP_ACT_KILL_PROCESS")]
    KillProcess,
    #[serde(rename = "SCMP_ACT_TRAP")]
    Trap,
    /// Notify a tracer (`errnoRet` is the message); without one the call
    /// fails with ENOSYS.
    #[serde(rename = "SCMP_ACT_TRACE")]
    Trace,
    /// Allow and log.
    #[serde(rename = "SCMP_ACT_LOG")]
    Log,
    /// Hand the call to a user-space listener: not supported (validation
    /// refuses it), since Drover runs no listener.
    #[serde(rename = "SCMP_ACT_NOTIFY")]
    Notify,
}

/// How an argument is compared with `value` (`MASKED_EQ`: `arg & value ==
/// valueTwo`). Comparisons are 64-bit, as libseccomp's `SCMP_CMP`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SeccompOp {
    #[serde(rename = "SCMP_CMP_NE")]
    NotEqual,
    #[serde(rename = "SCMP_CMP_LT")]
    LessThan,
    #[serde(rename = "SCMP_CMP_LE")]
    LessOrEqual,
    #[serde(rename = "SCMP_CMP_EQ")]
    Equal,
    #[serde(rename = "SCMP_CMP_GE")]
    GreaterOrEqual,
    #[serde(rename = "SCMP_CMP_GT")]
    GreaterThan,
    #[serde(rename = "SCMP_CMP_MASKED_EQ")]
    MaskedEqual,
}

/// A profile, as Docker reads it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SeccompProfile {
    pub default_action: SeccompAction,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_errno_ret: Option<u32>,
    /// Architectures the profile was written for (informational: the filter
    /// is built for the machine's own architecture).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub architectures: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arch_map: Option<Vec<SeccompArchMap>>,
    /// Filter flags (`SECCOMP_FILTER_FLAG_*`): not supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flags: Option<Vec<String>>,
    /// For `SCMP_ACT_NOTIFY`: not supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listener_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listener_metadata: Option<String>,
    #[serde(default)]
    pub syscalls: Vec<SeccompRule>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SeccompArchMap {
    pub architecture: String,
    #[serde(default)]
    pub sub_architectures: Option<Vec<String>>,
}

/// One rule: `action` for the calls in `names` whose arguments meet every
/// condition in `args`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SeccompRule {
    /// One call (the older spelling of `names`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
    pub action: SeccompAction,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errno_ret: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<SeccompArg>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// The rule applies only if all of these hold.
    #[serde(default, skip_serializing_if = "SeccompCondition::is_empty")]
    pub includes: SeccompCondition,
    /// The rule does not apply if any of these holds.
    #[serde(default, skip_serializing_if = "SeccompCondition::is_empty")]
    pub excludes: SeccompCondition,
}

impl SeccompRule {
    /// `name` and `names` together.
    pub fn all_names(&self) -> impl Iterator<Item = &str> {
        self.name.iter().chain(&self.names).map(String::as_str)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SeccompArg {
    pub index: u32,
    pub value: u64,
    #[serde(default)]
    pub value_two: u64,
    pub op: SeccompOp,
}

/// Conditions on the container and the machine: capabilities in the
/// container's bounding set (`CAP_SYS_ADMIN`), architectures in Go's names
/// (`amd64`, `arm64`, `x32`, ...), a minimum kernel (`4.8`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SeccompCondition {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub caps: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub arches: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_kernel: Option<String>,
}

impl SeccompCondition {
    pub fn is_empty(&self) -> bool {
        *self == SeccompCondition::default()
    }
}

/// The most rules a profile may have, and calls a rule may name: Docker's
/// own profile has ~60 rules and ~370 names in its largest.
const MAX_RULES: usize = 1024;
const MAX_NAMES: usize = 1024;

/// A system call name: what the kernel's tables use.
fn is_call_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// `MAJOR.MINOR` (as in `minKernel`).
pub fn parse_kernel_version(v: &str) -> Option<(u32, u32)> {
    let mut parts = v.split(['.', '-', '+']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next().map_or(Some(0), |m| m.parse().ok())?;
    Some((major, minor))
}

/// Problems with a profile at `path`, as (path, rule).
pub(crate) fn problems(p: &SeccompProfile, path: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut bad = |at: String, rule: String| out.push((at, rule));
    if p.default_action == SeccompAction::Notify {
        bad(
            format!("{path}.defaultAction"),
            "SCMP_ACT_NOTIFY needs a listener, which Drover does not run".into(),
        );
    }
    if p.flags.as_ref().is_some_and(|f| !f.is_empty()) {
        bad(
            format!("{path}.flags"),
            "filter flags are not supported".into(),
        );
    }
    if p.listener_path.as_ref().is_some_and(|l| !l.is_empty()) {
        bad(
            format!("{path}.listenerPath"),
            "a notify listener is not supported".into(),
        );
    }
    if p.syscalls.len() > MAX_RULES {
        bad(
            format!("{path}.syscalls"),
            format!("{} rules is more than {MAX_RULES}", p.syscalls.len()),
        );
    }
    for (i, r) in p.syscalls.iter().enumerate().take(MAX_RULES) {
        let at = format!("{path}.syscalls[{i}]");
        let names: Vec<&str> = r.all_names().collect();
        if names.is_empty() {
            bad(at.clone(), "names no system call".into());
        }
        if names.len() > MAX_NAMES {
            bad(
                format!("{at}.names"),
                format!("{} names is more than {MAX_NAMES}", names.len()),
            );
        }
        for (j, n) in r.names.iter().enumerate().take(MAX_NAMES) {
            if !is_call_name(n) {
                bad(
                    format!("{at}.names[{j}]"),
                    format!("{n:?} is not a system call name (lower case, digits, _)"),
                );
            }
        }
        if let Some(n) = r.name.as_deref().filter(|n| !is_call_name(n)) {
            bad(
                format!("{at}.name"),
                format!("{n:?} is not a system call name (lower case, digits, _)"),
            );
        }
        if r.action == SeccompAction::Notify {
            bad(
                format!("{at}.action"),
                "SCMP_ACT_NOTIFY needs a listener, which Drover does not run".into(),
            );
        }
        if r.args.len() > 6 {
            bad(
                format!("{at}.args"),
                format!("{} conditions is more than 6", r.args.len()),
            );
        }
        for (j, a) in r.args.iter().enumerate() {
            if a.index > 5 {
                bad(
                    format!("{at}.args[{j}].index"),
                    format!("{} is not an argument (0 to 5)", a.index),
                );
            }
        }
        for (which, c) in [("includes", &r.includes), ("excludes", &r.excludes)] {
            for (j, cap) in c.caps.iter().enumerate() {
                let bare = cap.to_ascii_uppercase();
                let bare = bare.trim_start_matches("CAP_");
                if !super::CAPABILITIES.contains(&bare) {
                    bad(
                        format!("{at}.{which}.caps[{j}]"),
                        format!("{cap:?} is not a capability (see capabilities(7))"),
                    );
                }
            }
            if let Some(v) = &c.min_kernel {
                if which == "excludes" {
                    bad(
                        format!("{at}.excludes.minKernel"),
                        "is not supported (Docker refuses it too)".into(),
                    );
                } else if parse_kernel_version(v).is_none() {
                    bad(
                        format!("{at}.includes.minKernel"),
                        format!("{v:?} is not a kernel version (MAJOR.MINOR)"),
                    );
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dockers_format_parses_and_bad_rules_are_named() {
        let p: SeccompProfile = serde_json::from_value(serde_json::json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "defaultErrnoRet": 1,
            "archMap": [{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86"]}],
            "syscalls": [
                {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"},
                {"names": ["socket"], "action": "SCMP_ACT_ALLOW",
                 "args": [{"index": 0, "value": 12, "op": "SCMP_CMP_LT"}]},
                {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38,
                 "excludes": {"caps": ["CAP_SYS_ADMIN"]}},
                {"names": ["ptrace"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "4.8"}},
                {"names": ["Read", "x"], "action": "SCMP_ACT_NOTIFY",
                 "args": [{"index": 7, "value": 0, "op": "SCMP_CMP_EQ"}],
                 "includes": {"caps": ["CAP_FLY"], "minKernel": "four"}}
            ]
        }))
        .unwrap();
        let found = problems(&p, "security.seccomp_profile");
        let paths: Vec<&str> = found.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            [
                "security.seccomp_profile.syscalls[4].names[0]",
                "security.seccomp_profile.syscalls[4].action",
                "security.seccomp_profile.syscalls[4].args[0].index",
                "security.seccomp_profile.syscalls[4].includes.caps[0]",
                "security.seccomp_profile.syscalls[4].includes.minKernel",
            ],
            "{found:?}"
        );
        let unknown = serde_json::from_value::<SeccompProfile>(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW", "arg": []}]
        }));
        assert!(unknown
            .unwrap_err()
            .to_string()
            .contains("unknown field `arg`"));
    }

    #[test]
    fn kernel_versions() {
        assert_eq!(parse_kernel_version("4.8"), Some((4, 8)));
        assert_eq!(parse_kernel_version("6.18.44-fc-v509"), Some((6, 18)));
        assert_eq!(parse_kernel_version("5"), Some((5, 0)));
        assert_eq!(parse_kernel_version("x.1"), None);
    }
}
