//! Device access on cgroup v2: an eBPF program of type
//! `BPF_PROG_TYPE_CGROUP_DEVICE`, attached to the container's cgroup, which
//! the kernel runs whenever a process in it opens or creates (`mknod`) a
//! device node, and which answers allow (1) or deny (0). cgroup v2 has no
//! `devices.allow`/`devices.deny` files; runc, crun and youki build the same
//! kind of program from the same rules.
//!
//! The rules are v1's, in the order they would be written to those files
//! (`a *:* rwm` denied first, then the allowed nodes): a rule for every
//! device with every access resets the default and forgets earlier rules,
//! any other rule is an exception, and the latest matching exception wins.
//! The program checks the exceptions latest first and falls through to the
//! default.
//!
//! The program reads `struct bpf_cgroup_dev_ctx { u32 access_type; u32
//! major; u32 minor; }`, where `access_type` is `access << 16 | type` (type:
//! block 1, char 2; access: mknod 1, read 2, write 4). `program` is pure and
//! tested through a small interpreter; `attach` loads it and attaches it
//! with `BPF_F_ALLOW_MULTI`, so a program a parent cgroup has (systemd puts
//! one on its slices) still runs too.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use super::CgroupError;

const DEV_BLOCK: u32 = 1;
const DEV_CHAR: u32 = 2;
const ACC_MKNOD: u32 = 1;
const ACC_READ: u32 = 2;
const ACC_WRITE: u32 = 4;
const ACC_ALL: u32 = ACC_MKNOD | ACC_READ | ACC_WRITE;

/// One rule, parsed from v1's `TYPE MAJOR:MINOR ACCESS` form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rule {
    pub allow: bool,
    /// `None`: block and character devices (`a`).
    pub kind: Option<u32>,
    pub major: Option<u32>,
    pub minor: Option<u32>,
    pub access: u32,
}

impl Rule {
    fn is_everything(&self) -> bool {
        self.kind.is_none()
            && self.major.is_none()
            && self.minor.is_none()
            && self.access == ACC_ALL
    }
}

fn bad(rule: &str, why: &str) -> CgroupError {
    CgroupError::DeviceRule {
        rule: rule.to_string(),
        reason: why.to_string(),
    }
}

/// Parses `c 1:3 rwm`, `a *:* rwm`, `c 136:* rwm`, `b *:* m`.
pub(crate) fn parse(allow: bool, text: &str) -> Result<Rule, CgroupError> {
    let mut parts = text.split_whitespace();
    let (Some(kind), Some(numbers), access, None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad(text, "expected TYPE MAJOR:MINOR [ACCESS]"));
    };
    let kind = match kind {
        "a" => None,
        "b" => Some(DEV_BLOCK),
        "c" => Some(DEV_CHAR),
        _ => return Err(bad(text, "type must be a, b or c")),
    };
    let (major, minor) = numbers
        .split_once(':')
        .ok_or_else(|| bad(text, "expected MAJOR:MINOR"))?;
    let number = |n: &str| -> Result<Option<u32>, CgroupError> {
        if n == "*" {
            return Ok(None);
        }
        n.parse::<u32>()
            .ok()
            .filter(|v| *v <= i32::MAX as u32)
            .map(Some)
            .ok_or_else(|| bad(text, "a device number must be * or a number"))
    };
    let mut bits = 0;
    for c in access.unwrap_or("rwm").chars() {
        bits |= match c {
            'r' => ACC_READ,
            'w' => ACC_WRITE,
            'm' => ACC_MKNOD,
            _ => return Err(bad(text, "access is some of r, w and m")),
        };
    }
    Ok(Rule {
        allow,
        kind,
        major: number(major)?,
        minor: number(minor)?,
        access: bits,
    })
}

/// One eBPF instruction (`struct bpf_insn`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub(crate) struct Insn {
    code: u8,
    /// dst in the low nibble, src in the high one.
    regs: u8,
    off: i16,
    imm: i32,
}

// Opcodes (linux/bpf.h, bpf_common.h).
const LDX_MEM_W: u8 = 0x61; // BPF_LDX | BPF_MEM | BPF_W
const ALU32_AND_K: u8 = 0x54; // BPF_ALU | BPF_AND | BPF_K
const ALU32_RSH_K: u8 = 0x74; // BPF_ALU | BPF_RSH | BPF_K
const ALU32_MOV_X: u8 = 0xbc; // BPF_ALU | BPF_MOV | BPF_X
const ALU64_MOV_K: u8 = 0xb7; // BPF_ALU64 | BPF_MOV | BPF_K
const JNE_K: u8 = 0x55; // BPF_JMP | BPF_JNE | BPF_K
const JEQ_K: u8 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const EXIT: u8 = 0x95; // BPF_JMP | BPF_EXIT

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: dst | src << 4,
        off,
        imm,
    }
}

/// The program for `rules` (see the module docs for the semantics).
pub(crate) fn program(rules: &[Rule]) -> Vec<Insn> {
    let mut default_allow = false;
    let mut exceptions: Vec<Rule> = Vec::new();
    for r in rules {
        if r.is_everything() {
            default_allow = r.allow;
            exceptions.clear();
        } else {
            exceptions.push(*r);
        }
    }
    // r2 = type, r3 = access, r4 = major, r5 = minor.
    let mut prog = vec![
        insn(LDX_MEM_W, 2, 1, 0, 0),
        insn(ALU32_AND_K, 2, 0, 0, 0xffff),
        insn(LDX_MEM_W, 3, 1, 0, 0),
        insn(ALU32_RSH_K, 3, 0, 0, 16),
        insn(LDX_MEM_W, 4, 1, 4, 0),
        insn(LDX_MEM_W, 5, 1, 8, 0),
    ];
    for r in exceptions.iter().rev() {
        // Each check jumps past the rest of the block when it fails.
        let mut checks: Vec<Vec<Insn>> = Vec::new();
        if let Some(kind) = r.kind {
            checks.push(vec![insn(JNE_K, 2, 0, 0, kind as i32)]);
        }
        if r.access != ACC_ALL && r.allow {
            // An allow covers the access only if every part asked for is in it.
            checks.push(vec![
                insn(ALU32_MOV_X, 6, 3, 0, 0),
                insn(ALU32_AND_K, 6, 0, 0, (!r.access & ACC_ALL) as i32),
                insn(JNE_K, 6, 0, 0, 0),
            ]);
        } else if r.access != ACC_ALL {
            // A deny refuses the access if any part asked for is in it (as
            // v1 does): read+write is refused by a deny of write.
            checks.push(vec![
                insn(ALU32_MOV_X, 6, 3, 0, 0),
                insn(ALU32_AND_K, 6, 0, 0, r.access as i32),
                insn(JEQ_K, 6, 0, 0, 0),
            ]);
        }
        if let Some(major) = r.major {
            checks.push(vec![insn(JNE_K, 4, 0, 0, major as i32)]);
        }
        if let Some(minor) = r.minor {
            checks.push(vec![insn(JNE_K, 5, 0, 0, minor as i32)]);
        }
        let mut block: Vec<Insn> = checks.into_iter().flatten().collect();
        block.push(insn(ALU64_MOV_K, 0, 0, 0, i32::from(r.allow)));
        block.push(insn(EXIT, 0, 0, 0, 0));
        let len = block.len();
        for (i, ins) in block.iter_mut().enumerate() {
            if ins.code == JNE_K || ins.code == JEQ_K {
                ins.off = (len - i - 1) as i16;
            }
        }
        prog.extend(block);
    }
    prog.push(insn(ALU64_MOV_K, 0, 0, 0, i32::from(default_allow)));
    prog.push(insn(EXIT, 0, 0, 0, 0));
    prog
}

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;

/// The `BPF_PROG_LOAD` part of `union bpf_attr`, up to `expected_attach_type`.
#[repr(C)]
#[derive(Default)]
struct ProgLoad {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// The `BPF_PROG_ATTACH` part of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct ProgAttach {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> std::io::Result<libc::c_long> {
    // SAFETY: `attr` is a live, initialised `repr(C)` prefix of `union
    // bpf_attr` for `cmd`, and its size is passed with it; the kernel reads
    // (and for a load log writes) only within it and the buffers it points at.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T as *mut libc::c_void,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn load(prog: &[Insn]) -> Result<OwnedFd, CgroupError> {
    const LICENSE: &[u8] = b"Apache-2.0\0";
    let mut name = [0u8; 16];
    name[..13].copy_from_slice(b"drover_device");
    let mut log = vec![0u8; 0];
    let mut attempt = |with_log: bool| {
        if with_log {
            log = vec![0u8; 64 << 10];
        }
        let mut attr = ProgLoad {
            prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
            insn_cnt: prog.len() as u32,
            insns: prog.as_ptr() as u64,
            license: LICENSE.as_ptr() as u64,
            log_level: u32::from(with_log),
            log_size: log.len() as u32,
            // The kernel refuses a buffer without a log level.
            log_buf: if with_log { log.as_mut_ptr() as u64 } else { 0 },
            prog_name: name,
            ..Default::default()
        };
        bpf(BPF_PROG_LOAD, &mut attr)
    };
    match attempt(false) {
        // SAFETY: a successful BPF_PROG_LOAD returns a new fd we now own.
        Ok(fd) => Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) }),
        Err(first) => {
            // Again with the verifier's log, for the error message (a
            // program that loads this time is not the one to attach).
            if let Ok(fd) = attempt(true) {
                // SAFETY: the fd BPF_PROG_LOAD just returned; nothing else has it.
                drop(unsafe { OwnedFd::from_raw_fd(fd as i32) });
            }
            let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
            let text = String::from_utf8_lossy(&log[..end]);
            Err(CgroupError::DeviceProgram {
                op: "load",
                source: first,
                detail: {
                    let lines: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();
                    lines[lines.len().saturating_sub(3)..].join(" | ")
                },
            })
        }
    }
}

/// Loads the program for `rules` and attaches it to the cgroup at `dir`.
/// The cgroup keeps the program until it is removed.
pub(crate) fn attach(dir: &Path, rules: &[Rule]) -> Result<(), CgroupError> {
    let prog = load(&program(rules))?;
    let cgroup = std::fs::File::open(dir).map_err(|source| CgroupError::Io {
        op: "open",
        path: dir.to_path_buf(),
        source,
    })?;
    let mut attr = ProgAttach {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
        replace_bpf_fd: 0,
    };
    bpf(BPF_PROG_ATTACH, &mut attr)
        .map(|_| ())
        .map_err(|source| CgroupError::DeviceProgram {
            op: "attach",
            source,
            detail: dir.display().to_string(),
        })
}

/// Runs `prog` on one access the way the kernel would; for tests.
#[cfg(test)]
fn run(prog: &[Insn], kind: u32, major: u32, minor: u32, access: u32) -> u64 {
    let ctx = [access << 16 | kind, major, minor];
    let mut r = [0u64; 11];
    let mut pc = 0usize;
    loop {
        let i = prog[pc];
        pc += 1;
        let (dst, src) = ((i.regs & 0xf) as usize, (i.regs >> 4) as usize);
        match i.code {
            LDX_MEM_W => {
                assert_eq!(src, 1, "loads from the context only");
                r[dst] = u64::from(ctx[i.off as usize / 4]);
            }
            ALU32_AND_K => r[dst] = u64::from(r[dst] as u32 & i.imm as u32),
            ALU32_RSH_K => r[dst] = u64::from((r[dst] as u32) >> i.imm),
            ALU32_MOV_X => r[dst] = u64::from(r[src] as u32),
            ALU64_MOV_K => r[dst] = i.imm as i64 as u64,
            JNE_K => {
                if r[dst] != i.imm as i64 as u64 {
                    pc += i.off as usize;
                }
            }
            JEQ_K => {
                if r[dst] == i.imm as i64 as u64 {
                    pc += i.off as usize;
                }
            }
            EXIT => return r[0],
            c => panic!("unexpected opcode {c:#x}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> Vec<Rule> {
        crate::bundle::security::device_rules()
            .iter()
            .map(|r| parse(r.allow(), &r.to_string()).unwrap())
            .collect()
    }

    #[test]
    fn the_default_rules_allow_the_minimal_dev_and_mknod_only() {
        let prog = program(&rules());
        let (r, w, m) = (ACC_READ, ACC_WRITE, ACC_MKNOD);
        // /dev/null, /dev/zero, /dev/urandom, ptys, /dev/net/tun: any access.
        for (major, minor) in [(1, 3), (1, 5), (1, 9), (5, 2), (136, 7), (10, 200)] {
            assert_eq!(
                run(&prog, DEV_CHAR, major, minor, r | w),
                1,
                "{major}:{minor}"
            );
        }
        // A disk, /dev/mem, /dev/kmsg: neither read nor write, as char or block.
        for (kind, major, minor) in [(DEV_BLOCK, 8, 0), (DEV_CHAR, 1, 1), (DEV_CHAR, 1, 11)] {
            assert_eq!(run(&prog, kind, major, minor, r), 0);
            assert_eq!(run(&prog, kind, major, minor, w), 0);
            // Creating the node is allowed (as runc and Docker do).
            assert_eq!(run(&prog, kind, major, minor, m), 1);
        }
        // /dev/null is char 1:3, not block 1:3.
        assert_eq!(run(&prog, DEV_BLOCK, 1, 3, r), 0);
    }

    #[test]
    fn later_rules_win_and_allow_everything_resets() {
        let p = |rules: &[(bool, &str)]| {
            let rules: Vec<Rule> = rules.iter().map(|(a, t)| parse(*a, t).unwrap()).collect();
            program(&rules)
        };
        let prog = p(&[(true, "a *:* rwm"), (false, "c 1:3 w")]);
        assert_eq!(run(&prog, DEV_CHAR, 1, 3, ACC_WRITE), 0);
        assert_eq!(run(&prog, DEV_CHAR, 1, 3, ACC_READ), 1);
        assert_eq!(
            run(&prog, DEV_CHAR, 1, 3, ACC_READ | ACC_WRITE),
            0,
            "read+write is refused by a deny of write"
        );
        assert_eq!(run(&prog, DEV_BLOCK, 8, 0, ACC_READ), 1);
        let prog = p(&[(true, "c 1:3 rwm"), (false, "a *:* rwm")]);
        assert_eq!(run(&prog, DEV_CHAR, 1, 3, ACC_READ), 0, "reset forgets");
        let prog = p(&[(false, "a *:* rwm"), (true, "c 1:* r"), (false, "c 1:5 r")]);
        assert_eq!(run(&prog, DEV_CHAR, 1, 5, ACC_READ), 0);
        assert_eq!(run(&prog, DEV_CHAR, 1, 7, ACC_READ), 1);
        assert_eq!(run(&prog, DEV_CHAR, 1, 7, ACC_READ | ACC_WRITE), 0);
    }

    #[test]
    fn bad_rules_are_refused() {
        for bad in [
            "",
            "x 1:3 rwm",
            "c 1 rwm",
            "c a:3 rwm",
            "c 1:3 rwx",
            "c 1:3 rwm extra",
        ] {
            assert!(parse(true, bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse(true, "c 1:3").unwrap().access, ACC_ALL);
    }
}
