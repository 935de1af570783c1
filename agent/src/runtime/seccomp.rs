//! Seccomp: compiling the OCI `linux.seccomp` profile to the classic BPF
//! programs the kernel runs on every system call.
//!
//! The programs are built by rust-vmm's `seccompiler` (what Firecracker
//! uses), with system call numbers from the kernel's tables (the `syscalls`
//! crate), for x86_64 or aarch64: the machine's own architecture at run time,
//! either in tests. Each program checks the architecture first and kills the
//! process on any other (the i386 `int 0x80` entry point, arm32), so a call
//! cannot dodge the rules by changing ABI.
//!
//! A `seccompiler` filter has one action for matching calls and one for the
//! rest, while a profile gives each rule its own. The kernel runs every
//! installed filter and obeys the most restrictive answer (kill, trap,
//! errno, trace, log, allow), the latest filter winning a tie. So a profile
//! becomes a stack, installed in this order:
//! - on x86_64: a guard that kills a process making an x32 call (numbers
//!   with bit 30 set, the same architecture word), as libseccomp does for an
//!   ABI the filter was not built for;
//! - the allow rules and the calls of every other rule, matching -> allow,
//!   otherwise -> the default action (so a rule's own action is not lost
//!   under a more restrictive default);
//! - one filter per other action in the profile (each errno its own),
//!   matching -> that action, otherwise -> allow, installed later: for the
//!   calls it names it is the most restrictive answer (Docker's `clone3` ->
//!   ENOSYS rather than the default EPERM; a LOG rule under a KILL default
//!   logs).
//!
//! Argument conditions are 64-bit comparisons, as libseccomp's `SCMP_CMP`.
//! A name the machine's table lacks is skipped if some architecture has it
//! (profiles name the 32-bit variants), as runc does; a name no architecture
//! knows is refused in a rule that denies (skipping it would allow the call)
//! and skipped in one that allows (which only narrows). Pure: the programs
//! are data; `child` installs them.

use std::collections::BTreeMap;
use std::str::FromStr;

use oci_spec::runtime::{LinuxSeccomp, LinuxSeccompAction, LinuxSeccompOperator};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

use super::RuntimeError;

const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
#[cfg(test)]
const AUDIT_ARCH_AARCH64: u32 = 0xc000_00b7;
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

// Offsets into `struct seccomp_data`.
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
#[cfg(test)]
const OFF_ARGS: u32 = 16;

// Classic BPF opcodes.
const LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const JGE_K: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;

const RET_ALLOW: u32 = 0x7fff_0000;
const RET_KILL_PROCESS: u32 = 0x8000_0000;
#[cfg(test)]
const RET_ERRNO: u32 = 0x0005_0000;
const EPERM: u32 = 1;

/// One BPF instruction (`struct sock_filter`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub(crate) struct Insn {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

/// The programs to install, in order.
pub(crate) type Filters = Vec<Vec<Insn>>;

/// An architecture filters are built for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    X86_64,
    Aarch64,
}

impl Target {
    /// This machine's, if filters can be built for it.
    pub(crate) fn native() -> Option<Target> {
        if cfg!(target_arch = "x86_64") {
            Some(Target::X86_64)
        } else if cfg!(target_arch = "aarch64") {
            Some(Target::Aarch64)
        } else {
            None
        }
    }

    fn arch(self) -> TargetArch {
        match self {
            Target::X86_64 => TargetArch::x86_64,
            Target::Aarch64 => TargetArch::aarch64,
        }
    }

    #[cfg(test)]
    fn audit_arch(self) -> u32 {
        match self {
            Target::X86_64 => AUDIT_ARCH_X86_64,
            Target::Aarch64 => AUDIT_ARCH_AARCH64,
        }
    }

    /// The number of the call `name` on this architecture.
    pub(crate) fn number(self, name: &str) -> Option<i64> {
        match self {
            Target::X86_64 => syscalls::x86_64::Sysno::from_str(name)
                .ok()
                .map(|s| i64::from(s.id())),
            Target::Aarch64 => syscalls::aarch64::Sysno::from_str(name)
                .ok()
                .map(|s| i64::from(s.id())),
        }
    }
}

/// Whether any architecture Linux runs on has a call named `name`.
fn known_anywhere(name: &str) -> bool {
    use syscalls::*;
    x86_64::Sysno::from_str(name).is_ok()
        || aarch64::Sysno::from_str(name).is_ok()
        || x86::Sysno::from_str(name).is_ok()
        || arm::Sysno::from_str(name).is_ok()
        || riscv64::Sysno::from_str(name).is_ok()
        || s390x::Sysno::from_str(name).is_ok()
        || powerpc64::Sysno::from_str(name).is_ok()
        || powerpc::Sysno::from_str(name).is_ok()
        || mips64::Sysno::from_str(name).is_ok()
        || mips::Sysno::from_str(name).is_ok()
        || loongarch64::Sysno::from_str(name).is_ok()
        || sparc64::Sysno::from_str(name).is_ok()
}

fn invalid(reason: String) -> RuntimeError {
    RuntimeError::InvalidSpec {
        field: "linux.seccomp",
        reason,
    }
}

fn action(a: LinuxSeccompAction, errno: Option<u32>) -> Result<SeccompAction, RuntimeError> {
    use LinuxSeccompAction::*;
    Ok(match a {
        ScmpActAllow => SeccompAction::Allow,
        ScmpActErrno => SeccompAction::Errno(errno.unwrap_or(EPERM) & 0xffff),
        ScmpActKillProcess => SeccompAction::KillProcess,
        ScmpActKill | ScmpActKillThread => SeccompAction::KillThread,
        ScmpActTrap => SeccompAction::Trap,
        ScmpActTrace => SeccompAction::Trace(errno.unwrap_or(0) & 0xffff),
        ScmpActLog => SeccompAction::Log,
        other => return Err(invalid(format!("action {other} is not supported"))),
    })
}

fn condition(
    arg: &oci_spec::runtime::LinuxSeccompArg,
    r: usize,
) -> Result<SeccompCondition, RuntimeError> {
    use LinuxSeccompOperator::*;
    let (op, value) = match arg.op() {
        ScmpCmpNe => (SeccompCmpOp::Ne, arg.value()),
        ScmpCmpLt => (SeccompCmpOp::Lt, arg.value()),
        ScmpCmpLe => (SeccompCmpOp::Le, arg.value()),
        ScmpCmpEq => (SeccompCmpOp::Eq, arg.value()),
        ScmpCmpGe => (SeccompCmpOp::Ge, arg.value()),
        ScmpCmpGt => (SeccompCmpOp::Gt, arg.value()),
        // OCI: `arg & value == valueTwo`.
        ScmpCmpMaskedEq => (
            SeccompCmpOp::MaskedEq(arg.value()),
            arg.value_two().unwrap_or(0),
        ),
    };
    let index = u8::try_from(arg.index())
        .ok()
        .filter(|i| *i <= 5)
        .ok_or_else(|| {
            invalid(format!(
                "syscalls[{r}].args: index {} is over 5",
                arg.index()
            ))
        })?;
    SeccompCondition::new(index, SeccompCmpArgLen::Qword, op, value)
        .map_err(|e| invalid(format!("syscalls[{r}].args: {e}")))
}

/// Compiles `profile` for this machine.
pub(crate) fn compile(profile: &LinuxSeccomp) -> Result<Filters, RuntimeError> {
    let target = Target::native()
        .ok_or_else(|| invalid("seccomp filters are built for x86_64 and aarch64 only".into()))?;
    compile_for(profile, target)
}

/// Compiles `profile` for `target`.
pub(crate) fn compile_for(profile: &LinuxSeccomp, target: Target) -> Result<Filters, RuntimeError> {
    if profile.flags().as_ref().is_some_and(|f| !f.is_empty()) {
        return Err(invalid("filter flags are not supported".into()));
    }
    let default = action(profile.default_action(), profile.default_errno_ret())?;

    // Rules by action (in the order actions first appear), then by call:
    // `None` once an unconditional rule names the call (it always matches).
    type Calls = BTreeMap<i64, Option<Vec<SeccompRule>>>;
    let mut groups: Vec<(SeccompAction, Calls)> = Vec::new();
    for (r, rule) in profile.syscalls().iter().flatten().enumerate() {
        let act = action(rule.action(), rule.errno_ret())?;
        let conditions = rule
            .args()
            .iter()
            .flatten()
            .map(|a| condition(a, r))
            .collect::<Result<Vec<_>, _>>()?;
        let i = match groups.iter().position(|(a, _)| *a == act) {
            Some(i) => i,
            None => {
                groups.push((act.clone(), Calls::new()));
                groups.len() - 1
            }
        };
        for name in rule.names() {
            let Some(nr) = target.number(name) else {
                if act != SeccompAction::Allow && !known_anywhere(name) {
                    return Err(invalid(format!(
                        "syscalls[{r}]: unknown system call {name:?}"
                    )));
                }
                continue;
            };
            let entry = groups[i].1.entry(nr).or_insert_with(|| Some(Vec::new()));
            match (entry.as_mut(), conditions.is_empty()) {
                (Some(_), true) => *entry = None,
                (Some(rules), false) => rules.push(
                    SeccompRule::new(conditions.clone())
                        .map_err(|e| invalid(format!("syscalls[{r}]: {e}")))?,
                ),
                (None, _) => {}
            }
        }
    }

    let mut filters = Filters::new();
    if target == Target::X86_64 {
        filters.push(x32_guard());
    }
    let build = |calls: Calls, matched: SeccompAction, otherwise: SeccompAction| {
        let rules = calls
            .into_iter()
            .map(|(nr, rules)| (nr, rules.unwrap_or_default()))
            .collect();
        let filter = SeccompFilter::new(rules, otherwise, matched, target.arch())
            .map_err(|e| invalid(e.to_string()))?;
        let prog = BpfProgram::try_from(filter).map_err(|e| invalid(e.to_string()))?;
        if prog.len() > libc::BPF_MAXINSNS as usize {
            return Err(invalid(format!(
                "the filter has {} instructions, over the kernel's {}",
                prog.len(),
                libc::BPF_MAXINSNS
            )));
        }
        Ok::<_, RuntimeError>(
            prog.into_iter()
                .map(|i| Insn {
                    code: i.code,
                    jt: i.jt,
                    jf: i.jf,
                    k: i.k,
                })
                .collect(),
        )
    };
    let allow = groups
        .iter()
        .position(|(a, _)| *a == SeccompAction::Allow)
        .map(|i| groups.remove(i).1);
    if default != SeccompAction::Allow {
        // What the allow filter lets through: the allow rules, and every
        // other rule's calls (under the same conditions), whose own filter
        // then gives their action.
        let mut through = allow.unwrap_or_default();
        for (_, calls) in &groups {
            for (nr, rules) in calls {
                let entry = through.entry(*nr).or_insert_with(|| Some(Vec::new()));
                match (entry.as_mut(), rules) {
                    (Some(_), None) => *entry = None,
                    (Some(have), Some(more)) => have.extend(more.iter().cloned()),
                    (None, _) => {}
                }
            }
        }
        filters.push(build(through, SeccompAction::Allow, default)?);
    }
    for (act, calls) in groups {
        if !calls.is_empty() {
            filters.push(build(calls, act, SeccompAction::Allow)?);
        }
    }
    Ok(filters)
}

/// x86_64 only: an x32 call (bit 30 of the number) kills the process.
fn x32_guard() -> Vec<Insn> {
    let stmt = |code, k| Insn {
        code,
        jt: 0,
        jf: 0,
        k,
    };
    vec![
        stmt(LD_W_ABS, OFF_ARCH),
        Insn {
            code: JEQ_K,
            jt: 0,
            jf: 3,
            k: AUDIT_ARCH_X86_64,
        },
        stmt(LD_W_ABS, OFF_NR),
        Insn {
            code: JGE_K,
            jt: 0,
            jf: 1,
            k: X32_SYSCALL_BIT,
        },
        stmt(RET_K, RET_KILL_PROCESS),
        stmt(RET_K, RET_ALLOW),
    ]
}

/// Runs `filters` on one call the way the kernel does (every program, the
/// most restrictive answer, the latest on a tie); for tests.
#[cfg(test)]
pub(crate) fn evaluate(filters: &Filters, arch: u32, nr: u32, args: [u64; 6]) -> u32 {
    // Lower is more restrictive; the kernel compares the action bits signed.
    let rank = |ret: u32| (ret & 0xffff_0000) as i32;
    let mut out = RET_ALLOW;
    for prog in filters.iter().rev() {
        let ret = run(prog, arch, nr, args);
        if rank(ret) < rank(out) {
            out = ret;
        }
    }
    out
}

#[cfg(test)]
fn run(prog: &[Insn], arch: u32, nr: u32, args: [u64; 6]) -> u32 {
    const JGT_K: u16 = (libc::BPF_JMP | libc::BPF_JGT | libc::BPF_K) as u16;
    const JA: u16 = (libc::BPF_JMP | libc::BPF_JA) as u16;
    const AND_K: u16 = (libc::BPF_ALU | libc::BPF_AND | libc::BPF_K) as u16;
    let word = |off: u32| -> u32 {
        match off {
            OFF_NR => nr,
            OFF_ARCH => arch,
            o => {
                let i = ((o - OFF_ARGS) / 8) as usize;
                if (o - OFF_ARGS).is_multiple_of(8) {
                    args[i] as u32
                } else {
                    (args[i] >> 32) as u32
                }
            }
        }
    };
    let (mut acc, mut pc) = (0u32, 0usize);
    loop {
        let insn = prog[pc];
        pc += 1;
        let jump = |taken: bool| if taken { insn.jt } else { insn.jf } as usize;
        match insn.code {
            LD_W_ABS => acc = word(insn.k),
            AND_K => acc &= insn.k,
            JEQ_K => pc += jump(acc == insn.k),
            JGE_K => pc += jump(acc >= insn.k),
            JGT_K => pc += jump(acc > insn.k),
            JA => pc += insn.k as usize,
            RET_K => return insn.k,
            c => panic!("unexpected opcode {c:#x}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::security::{seccomp_for, HostFacts, Seccomp};

    const NO_ARGS: [u64; 6] = [0; 6];

    fn default_for(caps: &[&str], target: Target) -> Filters {
        let caps: Vec<String> = caps.iter().map(|c| c.to_string()).collect();
        let host = HostFacts {
            arch: match target {
                Target::X86_64 => "amd64",
                Target::Aarch64 => "arm64",
            },
            kernel: (6, 1),
        };
        let profile = seccomp_for(&Seccomp::Default, &caps, &host)
            .unwrap()
            .unwrap();
        compile_for(&profile, target).unwrap()
    }

    #[test]
    fn syscall_tables_match_libc() {
        for (name, nr) in [
            ("read", libc::SYS_read),
            ("mount", libc::SYS_mount),
            ("unshare", libc::SYS_unshare),
            ("clone", libc::SYS_clone),
            ("clone3", libc::SYS_clone3),
            ("socket", libc::SYS_socket),
            ("personality", libc::SYS_personality),
            ("io_uring_setup", libc::SYS_io_uring_setup),
        ] {
            assert_eq!(Target::native().unwrap().number(name), Some(nr), "{name}");
        }
        // aarch64 has no `open`, and numbers its calls differently.
        assert_eq!(Target::Aarch64.number("openat"), Some(56));
        assert_eq!(Target::Aarch64.number("open"), None);
        assert_eq!(Target::Aarch64.number("mount"), Some(40));
        assert!(known_anywhere("chown32") && !known_anywhere("no_such_call"));
    }

    #[test]
    fn every_name_in_the_default_profile_is_a_call_somewhere() {
        // 32-bit ARM's private calls (`__ARM_NR_*`), which libseccomp knows
        // by these names; the kernels' tables do not list them.
        const ARM_PRIVATE: [&str; 3] = ["breakpoint", "cacheflush", "set_tls"];
        let profile = crate::bundle::security::default_seccomp_profile();
        let unknown: Vec<&str> = profile
            .syscalls
            .iter()
            .flat_map(|r| r.all_names())
            .filter(|n| !known_anywhere(n) && !ARM_PRIVATE.contains(n))
            .collect();
        assert!(unknown.is_empty(), "no architecture has {unknown:?}");
    }

    #[test]
    fn default_profile_allows_and_denies_as_docker() {
        let target = Target::native().unwrap();
        let arch = target.audit_arch();
        let filters = default_for(&["CAP_CHOWN", "CAP_NET_RAW"], target);
        let guard = usize::from(target == Target::X86_64);
        assert_eq!(
            filters.len(),
            guard + 2,
            "(x32 guard,) allow list, then clone3's ENOSYS"
        );
        let run = |nr: i64, args| evaluate(&filters, arch, nr as u32, args);
        let eperm = RET_ERRNO | 1;
        assert_eq!(run(libc::SYS_read, NO_ARGS), RET_ALLOW);
        assert_eq!(run(libc::SYS_execve, NO_ARGS), RET_ALLOW);
        for denied in [
            libc::SYS_mount,
            libc::SYS_unshare,
            libc::SYS_setns,
            libc::SYS_init_module,
            libc::SYS_bpf,
            libc::SYS_keyctl,
            libc::SYS_io_uring_setup,
            libc::SYS_userfaultfd,
            libc::SYS_open_by_handle_at,
            libc::SYS_ptrace + 100_000, // not a call at all
        ] {
            assert_eq!(run(denied, NO_ARGS), eperm, "{denied}");
        }
        assert_eq!(run(libc::SYS_clone3, NO_ARGS), RET_ERRNO | 38);
        // clone: fork-like and thread flags pass, namespace flags do not.
        let a0 = |v: u64| [v, 0, 0, 0, 0, 0];
        assert_eq!(run(libc::SYS_clone, a0(libc::SIGCHLD as u64)), RET_ALLOW);
        assert_eq!(run(libc::SYS_clone, a0(0x3d0f00)), RET_ALLOW);
        for flag in [libc::CLONE_NEWUSER, libc::CLONE_NEWNET, libc::CLONE_NEWNS] {
            assert_eq!(run(libc::SYS_clone, a0(flag as u64 | 17)), eperm);
        }
        // socket: the usual families, not AF_VSOCK (40) or AF_ALG (38); a
        // value in the upper half does not pass as a small one.
        for (family, ret) in [
            (libc::AF_INET, RET_ALLOW),
            (libc::AF_UNIX, RET_ALLOW),
            (libc::AF_NETLINK, RET_ALLOW),
            (libc::AF_PACKET, RET_ALLOW),
            (libc::AF_VSOCK, eperm),
            (libc::AF_ALG, eperm),
        ] {
            assert_eq!(run(libc::SYS_socket, a0(family as u64)), ret, "{family}");
        }
        assert_eq!(run(libc::SYS_socket, a0(1 << 32 | 2)), eperm);
        assert_eq!(run(libc::SYS_personality, a0(0xffff_ffff)), RET_ALLOW);
        assert_eq!(run(libc::SYS_personality, a0(0x0040_0000)), eperm);
        // Another ABI is killed, whatever the call.
        assert_eq!(
            evaluate(&filters, 0x4000_0003, 3, NO_ARGS),
            RET_KILL_PROCESS,
            "i386"
        );
        if target == Target::X86_64 {
            assert_eq!(
                run(X32_SYSCALL_BIT as i64 + libc::SYS_read, NO_ARGS),
                RET_KILL_PROCESS,
                "x32"
            );
        }
        // With CAP_SYS_ADMIN, Docker allows the namespace calls.
        let admin = default_for(&["CAP_SYS_ADMIN"], target);
        let run = |nr: i64| evaluate(&admin, arch, nr as u32, NO_ARGS);
        assert_eq!(run(libc::SYS_mount), RET_ALLOW);
        assert_eq!(run(libc::SYS_clone3), RET_ALLOW);
    }

    #[test]
    fn aarch64_filters_use_aarch64_numbers() {
        let filters = default_for(&[], Target::Aarch64);
        let run = |nr: u32| evaluate(&filters, AUDIT_ARCH_AARCH64, nr, NO_ARGS);
        assert_eq!(run(63), RET_ALLOW, "read");
        assert_eq!(run(56), RET_ALLOW, "openat");
        assert_eq!(run(40), RET_ERRNO | 1, "mount");
        assert_eq!(run(435), RET_ERRNO | 38, "clone3");
        assert_eq!(
            evaluate(&filters, AUDIT_ARCH_X86_64, 0, NO_ARGS),
            RET_KILL_PROCESS
        );
    }

    #[test]
    fn a_deny_list_profile_keeps_x32_out_and_gives_each_rule_its_action() {
        let profile: LinuxSeccomp = serde_json::from_value(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [
                {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
                {"names": ["personality"], "action": "SCMP_ACT_KILL_PROCESS",
                 "args": [{"index": 0, "value": 0x1_0000_0008u64, "op": "SCMP_CMP_EQ"}]},
                {"names": ["chown32"], "action": "SCMP_ACT_ERRNO"}
            ]
        }))
        .unwrap();
        let filters = compile_for(&profile, Target::X86_64).unwrap();
        let run = |nr: i64, a0: u64| {
            evaluate(&filters, AUDIT_ARCH_X86_64, nr as u32, [a0, 0, 0, 0, 0, 0])
        };
        assert_eq!(run(libc::SYS_read, 0), RET_ALLOW);
        assert_eq!(run(libc::SYS_mkdir, 0), RET_ERRNO | 13);
        assert_eq!(run(libc::SYS_personality, 0x1_0000_0008), RET_KILL_PROCESS);
        assert_eq!(run(libc::SYS_personality, 0x8), RET_ALLOW);
        assert_eq!(
            run(X32_SYSCALL_BIT as i64 + 83, 0),
            RET_KILL_PROCESS,
            "x32 mkdir"
        );
    }

    #[test]
    fn a_rule_keeps_its_action_under_a_more_restrictive_default() {
        let profile: LinuxSeccomp = serde_json::from_value(serde_json::json!({
            "defaultAction": "SCMP_ACT_KILL_PROCESS",
            "syscalls": [
                {"names": ["read", "write", "exit_group"], "action": "SCMP_ACT_ALLOW"},
                {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
                {"names": ["getpid"], "action": "SCMP_ACT_LOG"}
            ]
        }))
        .unwrap();
        let filters = compile_for(&profile, Target::X86_64).unwrap();
        let run = |nr: i64| evaluate(&filters, AUDIT_ARCH_X86_64, nr as u32, NO_ARGS);
        assert_eq!(run(libc::SYS_clone3), RET_ERRNO | 38, "ENOSYS, not killed");
        assert_eq!(run(libc::SYS_getpid), 0x7ffc_0000, "logged, not killed");
        assert_eq!(run(libc::SYS_read), RET_ALLOW);
        assert_eq!(run(libc::SYS_mount), RET_KILL_PROCESS);
    }

    #[test]
    fn unknown_denies_and_unsupported_actions_are_refused() {
        let bad: LinuxSeccomp = serde_json::from_value(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["no_such_call"], "action": "SCMP_ACT_ERRNO"}]
        }))
        .unwrap();
        let err = compile_for(&bad, Target::X86_64).unwrap_err().to_string();
        assert!(
            err.contains("linux.seccomp") && err.contains("no_such_call"),
            "{err}"
        );
        let allow_unknown: LinuxSeccomp = serde_json::from_value(serde_json::json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "syscalls": [{"names": ["no_such_call", "read"], "action": "SCMP_ACT_ALLOW"}]
        }))
        .unwrap();
        assert!(compile_for(&allow_unknown, Target::X86_64).is_ok());
        let notify: LinuxSeccomp = serde_json::from_value(serde_json::json!({
            "defaultAction": "SCMP_ACT_NOTIFY"
        }))
        .unwrap();
        assert!(compile_for(&notify, Target::X86_64).is_err());
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        // `chown32` is no call here (skipped); unknown names are refused,
        // which `unknown_denies_and_unsupported_actions_are_refused` covers.
        const NAMES: [&str; 9] = [
            "read",
            "write",
            "openat",
            "mount",
            "socket",
            "clone",
            "personality",
            "mkdirat",
            "chown32",
        ];
        const ACTIONS: [&str; 5] = [
            "SCMP_ACT_ALLOW",
            "SCMP_ACT_ERRNO",
            "SCMP_ACT_KILL_PROCESS",
            "SCMP_ACT_LOG",
            "SCMP_ACT_TRAP",
        ];
        const OPS: [&str; 7] = [
            "SCMP_CMP_NE",
            "SCMP_CMP_LT",
            "SCMP_CMP_LE",
            "SCMP_CMP_EQ",
            "SCMP_CMP_GE",
            "SCMP_CMP_GT",
            "SCMP_CMP_MASKED_EQ",
        ];

        /// How restrictive an answer is (lower: more), as the kernel ranks.
        fn rank(ret: u32) -> i32 {
            (ret & 0xffff_0000) as i32
        }

        fn target() -> impl Strategy<Value = Target> {
            prop_oneof![Just(Target::X86_64), Just(Target::Aarch64)]
        }

        proptest! {
            /// Whatever a profile of known calls says, it compiles to filters
            /// that answer every call, and a call a rule names without
            /// conditions is never answered more permissively than that
            /// rule says.
            #[test]
            fn any_profile_compiles_and_its_rules_hold(
                default in 0..ACTIONS.len(),
                rules in prop::collection::vec(
                    (
                        prop::collection::vec(0..NAMES.len(), 1..4),
                        0..ACTIONS.len(),
                        1u32..200,
                        prop::option::of((0u32..6, 0..OPS.len(), any::<u64>(), any::<u64>())),
                    ),
                    0..24,
                ),
                target in target(),
                calls in prop::collection::vec((0..NAMES.len(), any::<[u64; 6]>()), 1..16),
            ) {
                let json_rules: Vec<serde_json::Value> = rules
                    .iter()
                    .map(|(names, action, errno, arg)| {
                        let mut r = serde_json::json!({
                            "names": names.iter().map(|i| NAMES[*i]).collect::<Vec<_>>(),
                            "action": ACTIONS[*action],
                            "errnoRet": errno,
                        });
                        if let Some((index, op, value, two)) = arg {
                            r["args"] = serde_json::json!([{
                                "index": index, "value": value, "valueTwo": two, "op": OPS[*op]
                            }]);
                        }
                        r
                    })
                    .collect();
                let profile: LinuxSeccomp = serde_json::from_value(serde_json::json!({
                    "defaultAction": ACTIONS[default],
                    "syscalls": json_rules,
                }))
                .unwrap();
                let filters = compile_for(&profile, target);
                prop_assert!(filters.is_ok(), "{:?}", filters.err());
                let filters = filters.unwrap();
                let arch = target.audit_arch();
                for (name, args) in calls {
                    let Some(nr) = target.number(NAMES[name]) else { continue };
                    let got = evaluate(&filters, arch, nr as u32, args);
                    for (names, action, errno, arg) in &rules {
                        if arg.is_none() && names.contains(&name) {
                            let want = action_code(ACTIONS[*action], *errno);
                            prop_assert!(
                                rank(got) <= rank(want),
                                "{} answered {got:#x}, a rule says {want:#x}",
                                NAMES[name]
                            );
                        }
                    }
                }
            }
        }

        fn action_code(action: &str, errno: u32) -> u32 {
            match action {
                "SCMP_ACT_ALLOW" => RET_ALLOW,
                "SCMP_ACT_ERRNO" => RET_ERRNO | errno,
                "SCMP_ACT_KILL_PROCESS" => 0x8000_0000,
                "SCMP_ACT_LOG" => 0x7ffc_0000,
                "SCMP_ACT_TRAP" => 0x0003_0000,
                _ => unreachable!(),
            }
        }
    }
}
