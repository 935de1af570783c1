//! Seccomp: compiling the OCI `linux.seccomp` profile to a classic BPF
//! program the kernel runs on every system call.
//!
//! The kernel hands the filter a `seccomp_data` (architecture, syscall
//! number, six arguments) and obeys the action the program returns. The
//! program built here first checks the architecture: anything but x86_64 (the
//! i386 `int 0x80` entry point, or another ABI) kills the process, and x32
//! numbers (bit 30 set) fail with EPERM, so a call cannot dodge a rule by
//! changing ABI. Then one block per (rule, syscall name), in profile order:
//! compare the number, compare each argument condition (both 32-bit halves),
//! return the rule's action on a full match; otherwise fall through to the
//! profile's default action. The first matching rule wins.
//!
//! Supported: default actions allow/errno/kill, rule actions
//! allow/errno/kill, argument operators `==` and masked `==` (what Docker's
//! profile and Drover's default use). Anything else, or a deny rule naming a
//! call this table does not know, is refused rather than ignored; an *allow*
//! rule naming an unknown call is skipped, which only narrows what runs.
//! x86_64 only. Pure: the program is data; `child` installs it.

use oci_spec::runtime::{Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompOperator};

use super::RuntimeError;

const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

// Offsets into `struct seccomp_data`.
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
const OFF_ARGS: u32 = 16;

// Classic BPF opcodes.
const LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const JGE_K: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
const AND_K: u16 = (libc::BPF_ALU | libc::BPF_AND | libc::BPF_K) as u16;
const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;

const RET_KILL_PROCESS: u32 = 0x8000_0000;
const RET_KILL_THREAD: u32 = 0;
const RET_ERRNO: u32 = 0x0005_0000;
const RET_ALLOW: u32 = 0x7fff_0000;
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

fn stmt(code: u16, k: u32) -> Insn {
    Insn {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

/// x86_64 syscall numbers of the calls profiles commonly name.
const SYSCALLS: &[(&str, u32)] = &[
    ("syslog", 103),
    ("ptrace", 101),
    ("uselib", 134),
    ("personality", 135),
    ("ustat", 136),
    ("sysfs", 139),
    ("pivot_root", 155),
    ("_sysctl", 156),
    ("adjtimex", 159),
    ("chroot", 161),
    ("acct", 163),
    ("settimeofday", 164),
    ("mount", 165),
    ("umount2", 166),
    ("swapon", 167),
    ("swapoff", 168),
    ("reboot", 169),
    ("iopl", 172),
    ("ioperm", 173),
    ("create_module", 174),
    ("init_module", 175),
    ("delete_module", 176),
    ("get_kernel_syms", 177),
    ("query_module", 178),
    ("quotactl", 179),
    ("nfsservctl", 180),
    ("lookup_dcookie", 212),
    ("clock_settime", 227),
    ("mbind", 237),
    ("set_mempolicy", 238),
    ("get_mempolicy", 239),
    ("kexec_load", 246),
    ("add_key", 248),
    ("request_key", 249),
    ("keyctl", 250),
    ("migrate_pages", 256),
    ("unshare", 272),
    ("move_pages", 279),
    ("perf_event_open", 298),
    ("fanotify_init", 300),
    ("name_to_handle_at", 303),
    ("open_by_handle_at", 304),
    ("clock_adjtime", 305),
    ("setns", 308),
    ("process_vm_readv", 310),
    ("process_vm_writev", 311),
    ("kcmp", 312),
    ("finit_module", 313),
    ("kexec_file_load", 320),
    ("bpf", 321),
    ("userfaultfd", 323),
    ("io_uring_setup", 425),
    ("io_uring_enter", 426),
    ("io_uring_register", 427),
    ("open_tree", 428),
    ("move_mount", 429),
    ("fsopen", 430),
    ("fsconfig", 431),
    ("fsmount", 432),
    ("fspick", 433),
    ("clone3", 435),
    ("mount_setattr", 442),
    ("quotactl_fd", 443),
    ("clone", 56),
];

fn syscall_number(name: &str) -> Option<u32> {
    SYSCALLS.iter().find(|(n, _)| *n == name).map(|(_, nr)| *nr)
}

fn invalid(reason: String) -> RuntimeError {
    RuntimeError::InvalidSpec {
        field: "linux.seccomp",
        reason,
    }
}

fn action(a: LinuxSeccompAction, errno: Option<u32>) -> Result<u32, RuntimeError> {
    use LinuxSeccompAction::*;
    Ok(match a {
        ScmpActAllow => RET_ALLOW,
        ScmpActErrno => RET_ERRNO | (errno.unwrap_or(EPERM) & 0xffff),
        ScmpActKillProcess => RET_KILL_PROCESS,
        ScmpActKill | ScmpActKillThread => RET_KILL_THREAD,
        other => return Err(invalid(format!("action {other} is not supported"))),
    })
}

/// Compiles `profile` into a BPF program for x86_64.
pub(crate) fn compile(profile: &LinuxSeccomp) -> Result<Vec<Insn>, RuntimeError> {
    if !cfg!(target_arch = "x86_64") {
        return Err(invalid("seccomp filters are built for x86_64 only".into()));
    }
    for arch in profile.architectures().iter().flatten() {
        if !matches!(arch, Arch::ScmpArchX86_64 | Arch::ScmpArchNative) {
            return Err(invalid(format!(
                "architecture {arch} is not supported (x86_64 only)"
            )));
        }
    }
    if profile.flags().as_ref().is_some_and(|f| !f.is_empty()) {
        return Err(invalid("filter flags are not supported".into()));
    }
    let default = action(profile.default_action(), profile.default_errno_ret())?;

    let mut prog = vec![
        stmt(LD_W_ABS, OFF_ARCH),
        Insn {
            code: JEQ_K,
            jt: 1,
            jf: 0,
            k: AUDIT_ARCH_X86_64,
        },
        stmt(RET_K, RET_KILL_PROCESS),
        stmt(LD_W_ABS, OFF_NR),
        Insn {
            code: JGE_K,
            jt: 0,
            jf: 1,
            k: X32_SYSCALL_BIT,
        },
        stmt(RET_K, RET_ERRNO | EPERM),
    ];
    for (r, rule) in profile.syscalls().iter().flatten().enumerate() {
        let ret = action(rule.action(), rule.errno_ret())?;
        for name in rule.names() {
            let Some(nr) = syscall_number(name) else {
                if ret == RET_ALLOW {
                    continue;
                }
                return Err(invalid(format!(
                    "syscalls[{r}]: unknown system call {name:?}"
                )));
            };
            prog.extend(rule_block(
                nr,
                rule.args().as_deref().unwrap_or_default(),
                ret,
                r,
            )?);
        }
    }
    prog.push(stmt(RET_K, default));
    if prog.len() > libc::BPF_MAXINSNS as usize {
        return Err(invalid(format!(
            "the filter has {} instructions, over the kernel's {}",
            prog.len(),
            libc::BPF_MAXINSNS
        )));
    }
    Ok(prog)
}

/// `ld nr; jeq nr else skip; [per argument: ld, (and), jeq else skip]; ret`.
/// Every "skip" lands just past this block's `ret`, where the next block
/// reloads the number.
fn rule_block(
    nr: u32,
    args: &[oci_spec::runtime::LinuxSeccompArg],
    ret: u32,
    r: usize,
) -> Result<Vec<Insn>, RuntimeError> {
    // Instructions, with `jf: FAIL` standing for "to the end of the block".
    const FAIL: u8 = u8::MAX;
    let mut block = vec![
        stmt(LD_W_ABS, OFF_NR),
        Insn {
            code: JEQ_K,
            jt: 0,
            jf: FAIL,
            k: nr,
        },
    ];
    for arg in args {
        if arg.index() > 5 {
            return Err(invalid(format!(
                "syscalls[{r}].args: index {} is over 5",
                arg.index()
            )));
        }
        let (mask, want) = match arg.op() {
            LinuxSeccompOperator::ScmpCmpEq => (u64::MAX, arg.value()),
            LinuxSeccompOperator::ScmpCmpMaskedEq => {
                let want = arg.value_two().unwrap_or(0);
                (arg.value(), want)
            }
            other => {
                return Err(invalid(format!(
                    "syscalls[{r}].args: operator {other} is not supported"
                )))
            }
        };
        let base = OFF_ARGS + 8 * arg.index() as u32;
        // Little endian: the low word first, then the high word.
        for (off, m, w) in [
            (base, mask as u32, want as u32),
            (base + 4, (mask >> 32) as u32, (want >> 32) as u32),
        ] {
            block.push(stmt(LD_W_ABS, off));
            if m != u32::MAX {
                block.push(stmt(AND_K, m));
            }
            block.push(Insn {
                code: JEQ_K,
                jt: 0,
                jf: FAIL,
                k: w,
            });
        }
    }
    block.push(stmt(RET_K, ret));
    let end = block.len();
    if end > 250 {
        return Err(invalid(format!("syscalls[{r}]: too many argument checks")));
    }
    for (i, insn) in block.iter_mut().enumerate() {
        if insn.code == JEQ_K && insn.jf == FAIL {
            insn.jf = (end - i - 1) as u8;
        }
    }
    Ok(block)
}

/// Runs `prog` on one call the way the kernel would; for tests.
#[cfg(test)]
pub(crate) fn evaluate(prog: &[Insn], arch: u32, nr: u32, args: [u64; 6]) -> u32 {
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
        match insn.code {
            LD_W_ABS => acc = word(insn.k),
            AND_K => acc &= insn.k,
            JEQ_K => pc += if acc == insn.k { insn.jt } else { insn.jf } as usize,
            JGE_K => pc += if acc >= insn.k { insn.jt } else { insn.jf } as usize,
            RET_K => return insn.k,
            c => panic!("unexpected opcode {c:#x}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::security::seccomp_profile;

    const NO_ARGS: [u64; 6] = [0; 6];

    #[test]
    fn syscall_table_matches_libc() {
        for (name, nr) in [
            ("mount", libc::SYS_mount),
            ("unshare", libc::SYS_unshare),
            ("setns", libc::SYS_setns),
            ("clone", libc::SYS_clone),
            ("clone3", libc::SYS_clone3),
            ("bpf", libc::SYS_bpf),
            ("keyctl", libc::SYS_keyctl),
            ("init_module", libc::SYS_init_module),
            ("finit_module", libc::SYS_finit_module),
            ("kexec_file_load", libc::SYS_kexec_file_load),
            ("open_by_handle_at", libc::SYS_open_by_handle_at),
            ("perf_event_open", libc::SYS_perf_event_open),
            ("pivot_root", libc::SYS_pivot_root),
            ("umount2", libc::SYS_umount2),
            ("reboot", libc::SYS_reboot),
            ("fsopen", libc::SYS_fsopen),
            ("mount_setattr", libc::SYS_mount_setattr),
            ("quotactl_fd", libc::SYS_quotactl_fd),
            ("io_uring_setup", libc::SYS_io_uring_setup),
            ("userfaultfd", libc::SYS_userfaultfd),
            ("syslog", libc::SYS_syslog),
            ("migrate_pages", libc::SYS_migrate_pages),
            ("nfsservctl", libc::SYS_nfsservctl),
            ("_sysctl", libc::SYS__sysctl),
        ] {
            assert_eq!(syscall_number(name), Some(nr as u32), "{name}");
        }
        for name in crate::bundle::security::DENIED_SYSCALLS {
            assert!(syscall_number(name).is_some(), "{name} not in the table");
        }
    }

    #[test]
    fn default_profile_denies_and_allows_as_docker() {
        let prog = compile(&seccomp_profile().unwrap()).unwrap();
        let run = |nr: i64, args| evaluate(&prog, AUDIT_ARCH_X86_64, nr as u32, args);
        let eperm = RET_ERRNO | 1;
        assert_eq!(run(libc::SYS_mount, NO_ARGS), eperm);
        assert_eq!(run(libc::SYS_unshare, NO_ARGS), eperm);
        assert_eq!(run(libc::SYS_init_module, NO_ARGS), eperm);
        assert_eq!(run(libc::SYS_clone3, NO_ARGS), RET_ERRNO | 38);
        assert_eq!(run(libc::SYS_read, NO_ARGS), RET_ALLOW);
        assert_eq!(run(libc::SYS_execve, NO_ARGS), RET_ALLOW);
        // fork-like clone (SIGCHLD) is fine; a namespace flag is not.
        let fork = [libc::SIGCHLD as u64, 0, 0, 0, 0, 0];
        assert_eq!(run(libc::SYS_clone, fork), RET_ALLOW);
        let thread = [0x3d0f00, 0, 0, 0, 0, 0];
        assert_eq!(run(libc::SYS_clone, thread), RET_ALLOW);
        let newuser = [
            libc::CLONE_NEWUSER as u64 | libc::SIGCHLD as u64,
            0,
            0,
            0,
            0,
            0,
        ];
        assert_eq!(run(libc::SYS_clone, newuser), eperm);
        let newnet = [libc::CLONE_NEWNET as u64, 0, 0, 0, 0, 0];
        assert_eq!(run(libc::SYS_clone, newnet), eperm);
        // Other ABIs cannot dodge the rules.
        assert_eq!(
            evaluate(&prog, 0x4000_0003, 21, NO_ARGS),
            RET_KILL_PROCESS,
            "i386"
        );
        assert_eq!(
            run(X32_SYSCALL_BIT as i64 + libc::SYS_mount, NO_ARGS),
            eperm
        );
    }

    #[test]
    fn equality_compares_both_halves_and_unknown_denies_are_refused() {
        let profile: LinuxSeccomp = serde_json::from_value(serde_json::json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "syscalls": [
                {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
                 "args": [{"index": 0, "value": 0x1_0000_0008u64, "op": "SCMP_CMP_EQ"}]},
                {"names": ["no_such_call"], "action": "SCMP_ACT_ALLOW"}
            ]
        }))
        .unwrap();
        let prog = compile(&profile).unwrap();
        let run = |a0: u64| {
            evaluate(
                &prog,
                AUDIT_ARCH_X86_64,
                libc::SYS_personality as u32,
                [a0, 0, 0, 0, 0, 0],
            )
        };
        assert_eq!(run(0x1_0000_0008), RET_ALLOW);
        assert_eq!(run(0x8), RET_ERRNO | 1);
        let bad: LinuxSeccomp = serde_json::from_value(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["no_such_call"], "action": "SCMP_ACT_ERRNO"}]
        }))
        .unwrap();
        let err = compile(&bad).unwrap_err().to_string();
        assert!(
            err.contains("linux.seccomp") && err.contains("no_such_call"),
            "{err}"
        );
        let notify: LinuxSeccomp = serde_json::from_value(serde_json::json!({
            "defaultAction": "SCMP_ACT_NOTIFY"
        }))
        .unwrap();
        assert!(compile(&notify).is_err());
    }
}
