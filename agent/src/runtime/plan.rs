//! Turning an OCI runtime spec into a launch plan: every path, string and
//! number the child needs, as C strings and raw flags, computed in the parent.
//!
//! After `clone` the child of a multi-threaded process may not allocate or
//! take locks (another thread may have held the allocator's lock at the
//! moment of the fork), so all of this work happens here, before it.
//!
//! `plan` is pure: what it needs of the machine (cgroup version, the last
//! capability, the resolved rootfs) its caller reads with `HostFacts::read`
//! and `resolve_rootfs` and passes in, so tests can plan for any host.

use std::ffi::{CString, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use libc::{c_char, c_ulong};
use oci_spec::runtime::{LinuxNamespaceType, PosixRlimitType, Spec};

use super::RuntimeError;
use crate::cgroups::Limits;

/// One filesystem to mount in the child.
#[derive(Debug)]
pub(crate) struct MountPlan {
    /// Absolute path inside the new root (binds are attached after
    /// `pivot_root`, from clones of their sources taken before it).
    pub target: CString,
    /// Directories to create first, outermost first.
    pub mkdirs: Vec<CString>,
    pub source: CString,
    pub fstype: CString,
    pub flags: c_ulong,
    pub data: Option<CString>,
    /// The spec's destination, for error messages.
    pub destination: String,
    /// Its place among all the spec's mounts: binds and other mounts are
    /// made in the spec's order (a tmpfs inside a bound volume is on top).
    pub order: usize,
    /// In a user namespace, proc and sysfs are made before `pivot_root`
    /// with the new mount API (the kernel lets a user namespace mount them
    /// only while a full view of the host's is still in sight) and moved
    /// into place after it.
    pub detached: Option<Detached>,
}

/// How to make a detached mount: `MOUNT_ATTR_*` flags and the filesystem's
/// `key[=value]` options.
#[derive(Debug)]
pub(crate) struct Detached {
    pub attrs: u64,
    pub options: Vec<(CString, Option<CString>)>,
}

/// A user namespace's id mappings, as written to `/proc/PID/uid_map` and
/// `gid_map` ("inside outside count" lines).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IdMaps {
    pub uid_map: String,
    pub gid_map: String,
}

#[derive(Debug)]
pub(crate) struct LaunchPlan {
    pub clone_flags: u64,
    /// With a user namespace (`CLONE_NEWUSER` in `clone_flags`): the maps
    /// the parent writes before releasing the child.
    pub id_maps: Option<IdMaps>,
    pub rootfs: CString,
    pub readonly_root: bool,
    pub binds: Vec<MountPlan>,
    pub mounts: Vec<MountPlan>,
    /// Populate `/dev` with the minimal device nodes (it is a fresh tmpfs).
    pub populate_dev: bool,
    pub hostname: Option<CString>,
    pub loopback_up: bool,
    pub rlimits: Vec<(libc::__rlimit_resource_t, libc::rlimit)>,
    pub uid: libc::uid_t,
    pub gid: libc::gid_t,
    pub additional_gids: Vec<libc::gid_t>,
    pub no_new_privileges: bool,
    pub caps: Option<CapsPlan>,
    /// Paths hidden behind /dev/null (files) or an empty read-only tmpfs (dirs).
    pub masked_paths: Vec<CString>,
    pub readonly_paths: Vec<CString>,
    pub cwd: CString,
    /// Directories to create so that `cwd` exists (like runc, an image's
    /// WorkingDir need not be in its layers).
    pub cwd_mkdirs: Vec<CString>,
    /// Paths to try with execve, in order (the PATH search done ahead of time).
    pub exec_candidates: Vec<CString>,
    /// The program as written in the spec, for error messages.
    pub program: String,
    pub argv: Vec<CString>,
    pub envp: Vec<CString>,
    pub limits: Limits,
    /// Device cgroup rules, `(allow, "type major:minor access")`, in order.
    pub device_rules: Vec<(bool, String)>,
    /// The compiled seccomp filters, installed in order just before exec.
    pub seccomp: Option<super::seccomp::Filters>,
    /// PID 1 is the runtime's init; the command runs as its child.
    pub init: bool,
}

/// Capability sets as kernel bit masks (bit n = capability number n).
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct CapsPlan {
    /// Capabilities to drop from the bounding set.
    pub drop_bounding: Vec<libc::c_int>,
    pub effective: u64,
    pub permitted: u64,
    pub inheritable: u64,
    pub ambient: Vec<libc::c_int>,
}

/// Capability names in kernel numbering order (capability.h): the same list
/// the spec validates against.
const CAP_NAMES: [&str; 41] = drover_proto::spec::CAPABILITIES;

fn cap_mask(set: &Option<oci_spec::runtime::Capabilities>) -> Result<u64, RuntimeError> {
    let mut mask = 0u64;
    for cap in set.iter().flatten() {
        let name = cap.to_string();
        let n = CAP_NAMES
            .iter()
            .position(|c| *c == name.trim_start_matches("CAP_"))
            .ok_or_else(|| invalid("process.capabilities", format!("unknown capability {name}")))?;
        mask |= 1u64 << n;
    }
    Ok(mask)
}

fn caps_plan(
    caps: &oci_spec::runtime::LinuxCapabilities,
    last_cap: usize,
) -> Result<CapsPlan, RuntimeError> {
    let bounding = cap_mask(caps.bounding())?;
    let ambient = cap_mask(caps.ambient())?;
    Ok(CapsPlan {
        drop_bounding: (0..=last_cap)
            .filter(|n| bounding & (1u64 << n) == 0)
            .map(|n| n as libc::c_int)
            .collect(),
        effective: cap_mask(caps.effective())?,
        permitted: cap_mask(caps.permitted())?,
        inheritable: cap_mask(caps.inheritable())?,
        ambient: (0..64)
            .filter(|n| ambient & (1u64 << n) != 0)
            .map(|n| n as libc::c_int)
            .collect(),
    })
}

/// What `plan` needs to know of the machine, read by its caller, so that
/// `plan` itself reads nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HostFacts {
    /// cgroup v2 is mounted at /sys/fs/cgroup (runc's `cgroup` mount is
    /// cgroup2 there).
    pub unified_cgroup: bool,
    /// The highest capability number the kernel knows.
    pub last_cap: usize,
}

impl HostFacts {
    /// This machine.
    pub(crate) fn read() -> HostFacts {
        HostFacts {
            unified_cgroup: Path::new("/sys/fs/cgroup/cgroup.controllers").exists(),
            last_cap: std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(CAP_NAMES.len() - 1)
                .min(63),
        }
    }
}

/// The bundle's root filesystem, every link in its path resolved (what
/// `plan` takes: the child binds and pivots into exactly this directory).
pub(crate) fn resolve_rootfs(spec: &Spec, bundle_dir: &Path) -> Result<PathBuf, RuntimeError> {
    let root = spec
        .root()
        .as_ref()
        .ok_or_else(|| invalid("root", "missing"))?;
    let rootfs = bundle_dir.join(root.path());
    std::fs::canonicalize(&rootfs).map_err(|source| RuntimeError::Io {
        op: "resolve rootfs",
        path: rootfs,
        source,
    })
}

/// NULL-terminated pointer arrays over `strings`; valid while `strings` lives.
pub(crate) fn ptr_array(strings: &[CString]) -> Vec<*const c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

fn invalid(field: &'static str, reason: impl Into<String>) -> RuntimeError {
    RuntimeError::InvalidSpec {
        field,
        reason: reason.into(),
    }
}

fn cstr(field: &'static str, s: impl AsRef<OsStr>) -> Result<CString, RuntimeError> {
    CString::new(s.as_ref().as_bytes()).map_err(|_| invalid(field, "contains a NUL byte"))
}

/// Mount options that are flags; everything else is filesystem data.
fn mount_flag(option: &str) -> Option<(bool, c_ulong)> {
    use libc::*;
    Some(match option {
        "ro" => (true, MS_RDONLY),
        "rw" => (false, MS_RDONLY),
        "nosuid" => (true, MS_NOSUID),
        "suid" => (false, MS_NOSUID),
        "nodev" => (true, MS_NODEV),
        "dev" => (false, MS_NODEV),
        "noexec" => (true, MS_NOEXEC),
        "exec" => (false, MS_NOEXEC),
        "sync" => (true, MS_SYNCHRONOUS),
        "async" => (false, MS_SYNCHRONOUS),
        "noatime" => (true, MS_NOATIME),
        "atime" => (false, MS_NOATIME),
        "nodiratime" => (true, MS_NODIRATIME),
        "relatime" => (true, MS_RELATIME),
        "strictatime" => (true, MS_STRICTATIME),
        "bind" => (true, MS_BIND),
        "rbind" => (true, MS_BIND | MS_REC),
        // Propagation is handled by making the whole tree private first.
        "private" | "rprivate" | "slave" | "rslave" | "shared" | "rshared" => (true, 0),
        _ => return None,
    })
}

fn rlimit_resource(t: PosixRlimitType) -> libc::__rlimit_resource_t {
    use PosixRlimitType::*;
    match t {
        RlimitCpu => libc::RLIMIT_CPU,
        RlimitFsize => libc::RLIMIT_FSIZE,
        RlimitData => libc::RLIMIT_DATA,
        RlimitStack => libc::RLIMIT_STACK,
        RlimitCore => libc::RLIMIT_CORE,
        RlimitRss => libc::RLIMIT_RSS,
        RlimitNproc => libc::RLIMIT_NPROC,
        RlimitNofile => libc::RLIMIT_NOFILE,
        RlimitMemlock => libc::RLIMIT_MEMLOCK,
        RlimitAs => libc::RLIMIT_AS,
        RlimitLocks => libc::RLIMIT_LOCKS,
        RlimitSigpending => libc::RLIMIT_SIGPENDING,
        RlimitMsgqueue => libc::RLIMIT_MSGQUEUE,
        RlimitNice => libc::RLIMIT_NICE,
        RlimitRtprio => libc::RLIMIT_RTPRIO,
        RlimitRttime => libc::RLIMIT_RTTIME,
    }
}

/// `/a/b/c` → [`/a`, `/a/b`, `/a/b/c`] under `base`.
fn mkdir_chain(base: &Path, dest: &Path) -> Result<Vec<CString>, RuntimeError> {
    let mut out = Vec::new();
    let mut p = base.to_path_buf();
    for c in dest.components() {
        match c {
            std::path::Component::Normal(n) => {
                p.push(n);
                out.push(cstr("mounts.destination", &p)?);
            }
            std::path::Component::ParentDir => {
                return Err(invalid(
                    "mounts.destination",
                    format!("{} contains '..'", dest.display()),
                ))
            }
            _ => {}
        }
    }
    Ok(out)
}

/// Builds the plan for the bundle at `bundle_dir` described by `spec`.
/// The launch plan for `spec`, whose root filesystem is `rootfs` (see
/// `resolve_rootfs`), on a machine like `host`. Pure: it reads no files.
pub(crate) fn plan(
    spec: &Spec,
    rootfs: &Path,
    host: &HostFacts,
) -> Result<LaunchPlan, RuntimeError> {
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| invalid("process", "missing"))?;
    let args = process.args().clone().unwrap_or_default();
    let program = args
        .first()
        .cloned()
        .filter(|a| !a.is_empty())
        .ok_or_else(|| invalid("process.args", "empty"))?;
    let env = process.env().clone().unwrap_or_default();
    if process.terminal() == Some(true) {
        return Err(invalid("process.terminal", "terminals are not supported"));
    }

    let root = spec
        .root()
        .as_ref()
        .ok_or_else(|| invalid("root", "missing"))?;
    let rootfs = rootfs.to_path_buf();

    let linux = spec
        .linux()
        .as_ref()
        .ok_or_else(|| invalid("linux", "missing"))?;
    // Settings that would weaken isolation if silently ignored are refused.
    if spec.hooks().is_some() {
        return Err(invalid("hooks", "hooks are not supported"));
    }
    let seccomp = linux
        .seccomp()
        .as_ref()
        .map(super::seccomp::compile)
        .transpose()?;
    if linux.devices().as_ref().is_some_and(|d| !d.is_empty()) {
        return Err(invalid(
            "linux.devices",
            "extra device nodes are not supported",
        ));
    }
    if linux.sysctl().as_ref().is_some_and(|s| !s.is_empty()) {
        return Err(invalid("linux.sysctl", "sysctls are not supported"));
    }
    if process
        .apparmor_profile()
        .as_ref()
        .is_some_and(|p| !p.is_empty())
        || process
            .selinux_label()
            .as_ref()
            .is_some_and(|l| !l.is_empty())
    {
        return Err(invalid(
            "process",
            "AppArmor and SELinux labels are not supported",
        ));
    }
    let mut clone_flags = 0u64;
    for ns in linux.namespaces().as_deref().unwrap_or_default() {
        if ns.path().is_some() {
            return Err(invalid(
                "linux.namespaces.path",
                "joining existing namespaces is not supported",
            ));
        }
        clone_flags |= match ns.typ() {
            LinuxNamespaceType::Pid => libc::CLONE_NEWPID,
            LinuxNamespaceType::Mount => libc::CLONE_NEWNS,
            LinuxNamespaceType::Uts => libc::CLONE_NEWUTS,
            LinuxNamespaceType::Ipc => libc::CLONE_NEWIPC,
            LinuxNamespaceType::Network => libc::CLONE_NEWNET,
            LinuxNamespaceType::Cgroup => libc::CLONE_NEWCGROUP,
            LinuxNamespaceType::User => libc::CLONE_NEWUSER,
            other => {
                return Err(invalid(
                    "linux.namespaces",
                    format!("{other:?} namespaces are not supported"),
                ))
            }
        } as u64;
    }
    if clone_flags & libc::CLONE_NEWNS as u64 == 0 {
        return Err(invalid("linux.namespaces", "a mount namespace is required"));
    }
    let userns = clone_flags & libc::CLONE_NEWUSER as u64 != 0;
    let id_maps = id_maps(linux, userns)?;
    if userns && clone_flags & libc::CLONE_NEWNET as u64 == 0 {
        // sysfs may be mounted in a user namespace only for a network
        // namespace it owns.
        return Err(invalid(
            "linux.namespaces",
            "a user namespace needs a network namespace of its own",
        ));
    }

    let mut binds = Vec::new();
    let mut mounts = Vec::new();
    let mut populate_dev = false;
    for (order, m) in spec
        .mounts()
        .as_deref()
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let dest = m.destination();
        if !dest.is_absolute() {
            return Err(invalid(
                "mounts.destination",
                format!("{} is not absolute", dest.display()),
            ));
        }
        let mut flags: c_ulong = 0;
        let mut data = Vec::new();
        for o in m.options().as_deref().unwrap_or_default() {
            match mount_flag(o) {
                Some((true, f)) => flags |= f,
                Some((false, f)) => flags &= !f,
                None => data.push(o.as_str()),
            }
        }
        let mut fstype = m.typ().clone().unwrap_or_else(|| "none".into());
        if fstype == "cgroup" {
            // runc's `cgroup` mount. On a unified host that is cgroup2; a v1
            // host would need one mount per controller, which Drover does not
            // expose: the container gets an empty read-only tmpfs there.
            if host.unified_cgroup {
                fstype = "cgroup2".into();
            } else {
                fstype = "tmpfs".into();
                flags |= libc::MS_RDONLY;
                data.push("mode=755");
            }
        }
        let bind = fstype == "bind" || flags & libc::MS_BIND != 0;
        let source = match fstype.as_str() {
            "cgroup2" | "tmpfs" if m.typ().as_deref() == Some("cgroup") => PathBuf::from(&fstype),
            _ => m.source().clone().unwrap_or_else(|| PathBuf::from(&fstype)),
        };
        // Inside the new root, for binds too: they are attached after
        // `pivot_root`, where no image symlink leads out.
        let mkdirs = mkdir_chain(Path::new("/"), dest)?;
        let target = mkdirs
            .last()
            .cloned()
            .ok_or_else(|| invalid("mounts.destination", "cannot mount over /"))?;
        if dest == Path::new("/dev") && fstype == "tmpfs" {
            populate_dev = true;
        }
        let detached = (userns && !bind && matches!(fstype.as_str(), "proc" | "sysfs"))
            .then(|| -> Result<_, RuntimeError> {
                let options = data
                    .iter()
                    .map(|o| match o.split_once('=') {
                        Some((k, v)) => {
                            Ok((cstr("mounts.options", k)?, Some(cstr("mounts.options", v)?)))
                        }
                        None => Ok((cstr("mounts.options", o)?, None)),
                    })
                    .collect::<Result<Vec<_>, RuntimeError>>()?;
                Ok(Detached {
                    attrs: mount_attributes(flags),
                    options,
                })
            })
            .transpose()?;
        let plan = MountPlan {
            detached,
            target,
            mkdirs,
            source: cstr("mounts.source", &source)?,
            fstype: cstr("mounts.type", &fstype)?,
            flags: flags | if bind { libc::MS_BIND } else { 0 },
            data: if data.is_empty() {
                None
            } else {
                Some(cstr("mounts.options", data.join(","))?)
            },
            destination: dest.display().to_string(),
            order,
        };
        if bind {
            if binds.len() == super::child::MAX_BINDS {
                return Err(invalid(
                    "mounts",
                    format!("more than {} bind mounts", super::child::MAX_BINDS),
                ));
            }
            binds.push(plan);
        } else {
            mounts.push(plan);
        }
    }

    let cwd = process.cwd();
    if !cwd.is_absolute() {
        return Err(invalid(
            "process.cwd",
            format!("{} is not absolute", cwd.display()),
        ));
    }
    let exec_candidates = if program.contains('/') {
        vec![cstr("process.args", &program)?]
    } else {
        let path = env
            .iter()
            .find_map(|e| e.strip_prefix("PATH="))
            .unwrap_or("/usr/local/bin:/usr/bin:/bin");
        path.split(':')
            .filter(|d| !d.is_empty())
            .map(|d| cstr("process.args", format!("{d}/{program}")))
            .collect::<Result<_, _>>()?
    };

    let resources = linux.resources().as_ref();
    let limits = Limits {
        memory_bytes: resources
            .and_then(|r| r.memory().as_ref()?.limit())
            .filter(|&l| l > 0)
            .map(|l| l as u64),
        cpu_millis: resources.and_then(|r| {
            let cpu = r.cpu().as_ref()?;
            let (quota, period) = (cpu.quota()?, cpu.period().unwrap_or(100_000));
            (quota > 0 && period > 0).then(|| quota as u64 * 1000 / period)
        }),
        pids: resources
            .and_then(|r| r.pids().as_ref())
            .map(|p| p.limit())
            .filter(|&l| l > 0),
    };

    // Without rules runc applies its default list; so does Drover.
    let device_rules = resources
        .and_then(|r| r.devices().clone())
        .unwrap_or_else(crate::bundle::security::device_rules)
        .iter()
        .map(|d| (d.allow(), d.to_string()))
        .collect();

    let user = process.user();
    let init = spec
        .annotations()
        .as_ref()
        .and_then(|a| a.get(crate::bundle::INIT_ANNOTATION))
        .is_some_and(|v| v == "true");
    Ok(LaunchPlan {
        init,
        clone_flags,
        id_maps,
        rootfs: cstr("root.path", &rootfs)?,
        readonly_root: root.readonly() == Some(true),
        binds,
        mounts,
        populate_dev,
        hostname: spec
            .hostname()
            .as_ref()
            .filter(|h| !h.is_empty())
            .map(|h| cstr("hostname", h))
            .transpose()?,
        loopback_up: clone_flags & libc::CLONE_NEWNET as u64 != 0,
        rlimits: process
            .rlimits()
            .as_deref()
            .unwrap_or_default()
            .iter()
            .map(|r| {
                (
                    rlimit_resource(r.typ()),
                    libc::rlimit {
                        rlim_cur: r.soft(),
                        rlim_max: r.hard(),
                    },
                )
            })
            .collect(),
        uid: user.uid(),
        gid: user.gid(),
        additional_gids: user.additional_gids().clone().unwrap_or_default(),
        no_new_privileges: process.no_new_privileges() == Some(true),
        caps: process
            .capabilities()
            .as_ref()
            .map(|c| caps_plan(c, host.last_cap))
            .transpose()?,
        masked_paths: linux
            .masked_paths()
            .as_deref()
            .unwrap_or_default()
            .iter()
            .map(|p| cstr("linux.maskedPaths", p))
            .collect::<Result<_, _>>()?,
        readonly_paths: linux
            .readonly_paths()
            .as_deref()
            .unwrap_or_default()
            .iter()
            .map(|p| cstr("linux.readonlyPaths", p))
            .collect::<Result<_, _>>()?,
        cwd: cstr("process.cwd", cwd)?,
        cwd_mkdirs: mkdir_chain(Path::new("/"), cwd)?,
        exec_candidates,
        program,
        argv: args
            .iter()
            .map(|a| cstr("process.args", a))
            .collect::<Result<_, _>>()?,
        envp: env
            .iter()
            .map(|e| cstr("process.env", e))
            .collect::<Result<_, _>>()?,
        limits,
        device_rules,
        seccomp,
    })
}

/// `linux.uidMappings`/`gidMappings` in `/proc/PID/uid_map` form: present
/// exactly when there is a user namespace.
fn id_maps(linux: &oci_spec::runtime::Linux, userns: bool) -> Result<Option<IdMaps>, RuntimeError> {
    let render = |field: &'static str,
                  maps: &Option<Vec<oci_spec::runtime::LinuxIdMapping>>|
     -> Result<String, RuntimeError> {
        let maps = maps.as_deref().unwrap_or_default();
        if maps.is_empty() {
            return Err(invalid(field, "a user namespace needs id mappings"));
        }
        // The kernel takes at most 340 lines; Drover writes one.
        if maps.len() > 340 {
            return Err(invalid(field, "more than 340 mappings"));
        }
        let mut out = String::new();
        for m in maps {
            if m.size() == 0 {
                return Err(invalid(field, "a mapping of size 0"));
            }
            out.push_str(&format!(
                "{} {} {}\n",
                m.container_id(),
                m.host_id(),
                m.size()
            ));
        }
        Ok(out)
    };
    if !userns {
        if linux.uid_mappings().as_ref().is_some_and(|m| !m.is_empty())
            || linux.gid_mappings().as_ref().is_some_and(|m| !m.is_empty())
        {
            return Err(invalid(
                "linux.uidMappings",
                "id mappings need a user namespace",
            ));
        }
        return Ok(None);
    }
    Ok(Some(IdMaps {
        uid_map: render("linux.uidMappings", linux.uid_mappings())?,
        gid_map: render("linux.gidMappings", linux.gid_mappings())?,
    }))
}

/// `MS_*` flags as the new mount API's `MOUNT_ATTR_*`.
fn mount_attributes(flags: c_ulong) -> u64 {
    const MOUNT_ATTR_RDONLY: u64 = 0x1;
    const MOUNT_ATTR_NOSUID: u64 = 0x2;
    const MOUNT_ATTR_NODEV: u64 = 0x4;
    const MOUNT_ATTR_NOEXEC: u64 = 0x8;
    const MOUNT_ATTR_NOATIME: u64 = 0x10;
    const MOUNT_ATTR_STRICTATIME: u64 = 0x20;
    const MOUNT_ATTR_NODIRATIME: u64 = 0x80;
    [
        (libc::MS_RDONLY, MOUNT_ATTR_RDONLY),
        (libc::MS_NOSUID, MOUNT_ATTR_NOSUID),
        (libc::MS_NODEV, MOUNT_ATTR_NODEV),
        (libc::MS_NOEXEC, MOUNT_ATTR_NOEXEC),
        (libc::MS_NOATIME, MOUNT_ATTR_NOATIME),
        (libc::MS_STRICTATIME, MOUNT_ATTR_STRICTATIME),
        (libc::MS_NODIRATIME, MOUNT_ATTR_NODIRATIME),
    ]
    .iter()
    .filter(|(ms, _)| flags & ms != 0)
    .fold(0, |a, (_, attr)| a | attr)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST: HostFacts = HostFacts {
        unified_cgroup: false,
        last_cap: 40,
    };
    use crate::bundle::{build_spec, resolve_process, ContainerRequest, Network};
    use crate::image::ImageConfig;

    #[test]
    fn plan_from_bundle_spec() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("rootfs")).unwrap();
        let rootfs = dir.path().join("rootfs");
        let req = ContainerRequest {
            id: "c1".into(),
            hostname: "box".into(),
            command: Some(vec!["sh".into(), "-c".into(), "true".into()]),
            memory_bytes: Some(1 << 26),
            cpu_millis: Some(200),
            pids: Some(10),
            ..Default::default()
        };
        let process = resolve_process(
            &ImageConfig {
                env: vec!["PATH=/usr/bin:/bin".into()],
                ..Default::default()
            },
            &req,
        )
        .unwrap();
        let spec = build_spec(&process, &Default::default(), &req).unwrap();
        let p = plan(&spec, &rootfs, &HOST).unwrap();
        let expect = libc::CLONE_NEWPID
            | libc::CLONE_NEWNS
            | libc::CLONE_NEWUTS
            | libc::CLONE_NEWIPC
            | libc::CLONE_NEWNET;
        assert_eq!(p.clone_flags, expect as u64);
        assert_eq!(
            p.exec_candidates,
            vec![c"/usr/bin/sh".to_owned(), c"/bin/sh".to_owned()]
        );
        assert_eq!(
            p.limits,
            Limits {
                memory_bytes: Some(1 << 26),
                cpu_millis: Some(200),
                pids: Some(10)
            }
        );
        assert!(p.populate_dev && p.loopback_up && p.binds.is_empty());
        let sys = p.mounts.iter().find(|m| m.destination == "/sys").unwrap();
        assert_eq!(sys.flags & libc::MS_RDONLY, libc::MS_RDONLY);
        let pts = p
            .mounts
            .iter()
            .find(|m| m.destination == "/dev/pts")
            .unwrap();
        assert_eq!(
            pts.data.as_deref(),
            Some(c"newinstance,ptmxmode=0666,mode=0620")
        );
        assert_eq!(pts.mkdirs, vec![c"/dev".to_owned(), c"/dev/pts".to_owned()]);
        assert_eq!(p.hostname.as_deref(), Some(c"box"));
        // Docker's 14 default capabilities, no ambient ones.
        let caps = p.caps.as_ref().unwrap();
        assert_eq!(caps.effective.count_ones(), 14);
        assert_eq!(caps.effective, caps.permitted);
        assert_eq!(caps.effective, caps.inheritable);
        assert!(caps.drop_bounding.contains(&21) && !caps.drop_bounding.contains(&5));
        assert!(caps.ambient.is_empty());
        assert!(p
            .seccomp
            .as_ref()
            .is_some_and(|f| f.len() >= 2 && f.iter().any(|p| p.len() > 300)));
        assert_eq!(p.device_rules[0], (false, "a *:* rwm".to_string()));
        assert!(p.masked_paths.contains(&c"/proc/kcore".to_owned()));
        assert!(p.readonly_paths.contains(&c"/proc/sys".to_owned()));

        let mut with_notify = spec.clone();
        let mut linux = with_notify.linux().clone().unwrap();
        let mut profile = linux.seccomp().clone().unwrap();
        profile.set_default_action(oci_spec::runtime::LinuxSeccompAction::ScmpActNotify);
        linux.set_seccomp(Some(profile));
        with_notify.set_linux(Some(linux));
        let err = plan(&with_notify, &rootfs, &HOST).unwrap_err();
        assert!(err.to_string().contains("linux.seccomp"), "{err}");

        let host = ContainerRequest {
            network: Network::Host,
            ..req
        };
        let spec = build_spec(&process, &Default::default(), &host).unwrap();
        assert!(!plan(&spec, &rootfs, &HOST).unwrap().loopback_up);
    }

    #[test]
    fn runcs_cgroup_mount_follows_the_hosts_cgroup_version() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("rootfs")).unwrap();
        let rootfs = dir.path().join("rootfs");
        let req = ContainerRequest {
            id: "c1".into(),
            command: Some(vec!["/bin/true".into()]),
            ..Default::default()
        };
        let process = resolve_process(&ImageConfig::default(), &req).unwrap();
        let mut spec = build_spec(&process, &Default::default(), &req).unwrap();
        let mut mounts = spec.mounts().clone().unwrap();
        mounts.push(
            oci_spec::runtime::MountBuilder::default()
                .destination("/sys/fs/cgroup")
                .typ("cgroup")
                .source("cgroup")
                .options(vec!["ro".to_string()])
                .build()
                .unwrap(),
        );
        spec.set_mounts(Some(mounts));
        let fstype = |unified| {
            let host = HostFacts {
                unified_cgroup: unified,
                last_cap: 40,
            };
            let p = plan(&spec, &rootfs, &host).unwrap();
            let m = p
                .mounts
                .iter()
                .find(|m| m.destination == "/sys/fs/cgroup")
                .unwrap();
            m.fstype.to_string_lossy().into_owned()
        };
        assert_eq!(fstype(true), "cgroup2");
        assert_eq!(fstype(false), "tmpfs");
        // The capability bound comes from the facts, not from /proc.
        let host = HostFacts {
            unified_cgroup: false,
            last_cap: 35,
        };
        let caps = plan(&spec, &rootfs, &host).unwrap().caps.unwrap();
        assert!(caps.drop_bounding.iter().all(|c| *c <= 35));
    }
}
