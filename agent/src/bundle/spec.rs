//! Building the OCI runtime spec (`config.json`) from an image config and a
//! container request. Pure: no files, no syscalls.

use oci_spec::runtime::{
    LinuxBuilder, LinuxCpuBuilder, LinuxIdMappingBuilder, LinuxMemoryBuilder,
    LinuxNamespaceBuilder, LinuxNamespaceType, LinuxPidsBuilder, LinuxResourcesBuilder, Mount,
    MountBuilder, ProcessBuilder, RootBuilder, Spec, SpecBuilder, UserBuilder,
};

/// The annotation of `config.json` that asks the runtime for an init as
/// PID 1 (OCI has no field for it; Docker's `--init` is outside runc).
pub const INIT_ANNOTATION: &str = "org.drover.init";

use super::security;
use super::user::Ids;
use super::{BundleError, ContainerRequest, Network};
use crate::cgroups::{Limits, CPU_PERIOD_US};
use crate::image::ImageConfig;

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The process to run, after merging the request over the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessPlan {
    pub args: Vec<String>,
    /// `KEY=value`, image order first, request overrides in place.
    pub env: Vec<String>,
    pub cwd: String,
}

/// Applies Kubernetes semantics: `command` replaces the entrypoint and drops
/// the image's cmd; `args` replaces the cmd.
pub fn resolve_process(
    image: &ImageConfig,
    req: &ContainerRequest,
) -> Result<ProcessPlan, BundleError> {
    let (entrypoint, default_args) = match &req.command {
        Some(command) => (command.clone(), Vec::new()),
        None => (image.entrypoint.clone(), image.cmd.clone()),
    };
    let mut args = entrypoint;
    args.extend(req.args.clone().unwrap_or(default_args));
    if args.is_empty() || args[0].is_empty() {
        return Err(BundleError::NoCommand { id: req.id.clone() });
    }

    let mut env: Vec<String> = image.env.clone();
    for (name, value) in &req.env {
        if name.is_empty() || name.contains('=') || name.contains('\0') {
            return Err(BundleError::InvalidEnv {
                id: req.id.clone(),
                name: name.clone(),
            });
        }
        let entry = format!("{name}={value}");
        match env
            .iter_mut()
            .find(|e| e.split_once('=').map(|(k, _)| k) == Some(name))
        {
            Some(existing) => *existing = entry,
            None => env.push(entry),
        }
    }
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(0, format!("PATH={DEFAULT_PATH}"));
    }

    let cwd = req
        .workdir
        .clone()
        .or_else(|| image.working_dir.clone())
        .unwrap_or_else(|| "/".into());
    if !cwd.starts_with('/') {
        return Err(BundleError::RelativeWorkdir {
            id: req.id.clone(),
            workdir: cwd,
        });
    }
    Ok(ProcessPlan { args, env, cwd })
}

/// The request's limits in cgroup terms.
pub fn limits(req: &ContainerRequest) -> Limits {
    Limits {
        memory_bytes: req.memory_bytes,
        cpu_millis: req.cpu_millis,
        pids: req.pids,
    }
}

pub(super) fn mount(
    dest: &str,
    typ: &str,
    source: &str,
    options: &[&str],
) -> Result<Mount, BundleError> {
    Ok(MountBuilder::default()
        .destination(dest)
        .typ(typ)
        .source(source)
        .options(options.iter().map(|o| o.to_string()).collect::<Vec<_>>())
        .build()?)
}

fn default_mounts() -> Result<Vec<Mount>, BundleError> {
    Ok(vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"])?,
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        )?,
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
            ],
        )?,
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        )?,
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        )?,
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", "ro"],
        )?,
    ])
}

/// The complete runtime spec for `process` run as `ids` under `req`.
pub fn build_spec(
    process: &ProcessPlan,
    ids: &Ids,
    req: &ContainerRequest,
) -> Result<Spec, BundleError> {
    let user = UserBuilder::default()
        .uid(ids.uid)
        .gid(ids.gid)
        .additional_gids(ids.additional_gids.clone())
        .build()?;
    let mut proc = ProcessBuilder::default()
        .args(process.args.clone())
        .env(process.env.clone())
        .cwd(process.cwd.clone())
        .user(user)
        .build()?;
    // oci-spec's default rlimits; capabilities, no_new_privs and seccomp as
    // Docker sets them (see `security`).
    let defaults = oci_spec::runtime::Process::default();
    let caps = security::effective_capabilities(&req.capabilities)?;
    proc.set_capabilities(Some(security::capabilities(&caps, ids.uid)?));
    proc.set_rlimits(defaults.rlimits().clone());
    proc.set_no_new_privileges(Some(true));

    let mut namespaces = vec![
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Mount,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Ipc,
    ];
    if req.network == Network::Private {
        namespaces.push(LinuxNamespaceType::Network);
    }
    if req.user_namespace.is_some() {
        namespaces.push(LinuxNamespaceType::User);
    }
    let namespaces = namespaces
        .into_iter()
        .map(|typ| LinuxNamespaceBuilder::default().typ(typ).build())
        .collect::<Result<Vec<_>, _>>()?;

    let l = limits(req);
    let mut resources = LinuxResourcesBuilder::default();
    if let Some(bytes) = l.memory_bytes {
        // swap is memory+swap in OCI: equal to the limit, no swap at all, as
        // Drover's runtime enforces anyway (so `runc run` of the bundle
        // behaves the same).
        resources = resources.memory(
            LinuxMemoryBuilder::default()
                .limit(bytes as i64)
                .swap(bytes as i64)
                .build()?,
        );
    }
    if let Some(quota) = l.cpu_quota_us() {
        resources = resources.cpu(
            LinuxCpuBuilder::default()
                .quota(quota as i64)
                .period(CPU_PERIOD_US)
                .build()?,
        );
    }
    if let Some(pids) = l.pids {
        resources = resources.pids(LinuxPidsBuilder::default().limit(pids).build()?);
    }
    resources = resources.devices(security::device_rules());
    let mut linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .resources(resources.build()?)
        .cgroups_path(format!("/{}/{}", crate::cgroups::PARENT, req.id))
        .masked_paths(security::masked_paths())
        .readonly_paths(oci_spec::runtime::get_default_readonly_paths())
        .build()?;
    if let Some(r) = req.user_namespace {
        let map = vec![LinuxIdMappingBuilder::default()
            .container_id(0u32)
            .host_id(r.start)
            .size(r.size)
            .build()?];
        linux.set_uid_mappings(Some(map.clone()));
        linux.set_gid_mappings(Some(map));
    }
    linux.set_seccomp(security::seccomp_for(
        &req.seccomp,
        &caps,
        security::HostFacts::current(),
    )?);

    let mut annotations = std::collections::HashMap::new();
    if req.init {
        annotations.insert(INIT_ANNOTATION.to_string(), "true".to_string());
    }
    Ok(SpecBuilder::default()
        .version("1.0.2")
        .annotations(annotations)
        .root(
            RootBuilder::default()
                .path("rootfs")
                .readonly(req.read_only_rootfs)
                .build()?,
        )
        .hostname(req.hostname.clone())
        .process(proc)
        .mounts(default_mounts()?)
        .linux(linux)
        .build()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image() -> ImageConfig {
        ImageConfig {
            entrypoint: vec!["/entry".into()],
            cmd: vec!["serve".into()],
            env: vec!["PATH=/bin".into(), "MODE=prod".into()],
            working_dir: Some("/app".into()),
            user: None,
        }
    }

    fn req() -> ContainerRequest {
        ContainerRequest {
            id: "web-1".into(),
            hostname: "web-1".into(),
            ..Default::default()
        }
    }

    #[test]
    fn kubernetes_command_and_args_semantics() {
        let p = resolve_process(&image(), &req()).unwrap();
        assert_eq!(p.args, vec!["/entry", "serve"]);
        let r = ContainerRequest {
            args: Some(vec!["debug".into()]),
            ..req()
        };
        assert_eq!(
            resolve_process(&image(), &r).unwrap().args,
            vec!["/entry", "debug"]
        );
        let r = ContainerRequest {
            command: Some(vec!["/bin/sh".into()]),
            ..req()
        };
        assert_eq!(resolve_process(&image(), &r).unwrap().args, vec!["/bin/sh"]);
        let r = ContainerRequest {
            command: Some(vec!["/bin/sh".into()]),
            args: Some(vec!["-c".into(), "x".into()]),
            ..req()
        };
        assert_eq!(
            resolve_process(&image(), &r).unwrap().args,
            vec!["/bin/sh", "-c", "x"]
        );
        let empty = ImageConfig::default();
        assert!(matches!(
            resolve_process(&empty, &req()),
            Err(BundleError::NoCommand { .. })
        ));
    }

    #[test]
    fn env_merges_over_image_and_workdir_defaults() {
        let r = ContainerRequest {
            env: vec![("MODE".into(), "dev".into()), ("X".into(), "1".into())],
            ..req()
        };
        let p = resolve_process(&image(), &r).unwrap();
        assert_eq!(p.env, vec!["PATH=/bin", "MODE=dev", "X=1"]);
        assert_eq!(p.cwd, "/app");
        let p = resolve_process(
            &ImageConfig {
                env: vec![],
                ..image()
            },
            &req(),
        )
        .unwrap();
        assert!(p.env[0].starts_with("PATH=/usr/local/sbin"));
        let r = ContainerRequest {
            workdir: Some("rel".into()),
            ..req()
        };
        assert!(matches!(
            resolve_process(&image(), &r),
            Err(BundleError::RelativeWorkdir { .. })
        ));
        let r = ContainerRequest {
            env: vec![("A=B".into(), "1".into())],
            ..req()
        };
        assert!(matches!(
            resolve_process(&image(), &r),
            Err(BundleError::InvalidEnv { .. })
        ));
    }

    #[test]
    fn spec_has_namespaces_mounts_and_resources() {
        let r = ContainerRequest {
            memory_bytes: Some(128 << 20),
            cpu_millis: Some(250),
            pids: Some(64),
            ..req()
        };
        let p = resolve_process(&image(), &r).unwrap();
        let spec = build_spec(&p, &Ids::default(), &r).unwrap();
        assert_eq!(spec.hostname().as_deref(), Some("web-1"));
        assert_eq!(
            spec.root().as_ref().unwrap().path().to_str(),
            Some("rootfs")
        );
        let process = spec.process().as_ref().unwrap();
        assert_eq!(process.args().as_ref().unwrap(), &p.args);
        assert_eq!(process.cwd().to_str(), Some("/app"));
        let linux = spec.linux().as_ref().unwrap();
        let ns: Vec<_> = linux
            .namespaces()
            .as_ref()
            .unwrap()
            .iter()
            .map(|n| n.typ())
            .collect();
        assert_eq!(ns.len(), 5);
        assert!(ns.contains(&LinuxNamespaceType::Network));
        let res = linux.resources().as_ref().unwrap();
        assert_eq!(res.memory().as_ref().unwrap().limit(), Some(128 << 20));
        assert_eq!(res.memory().as_ref().unwrap().swap(), Some(128 << 20));
        assert_eq!(res.cpu().as_ref().unwrap().quota(), Some(25_000));
        assert_eq!(res.cpu().as_ref().unwrap().period(), Some(100_000));
        assert_eq!(res.pids().as_ref().unwrap().limit(), 64);
        assert_eq!(
            linux.cgroups_path().as_ref().unwrap().to_str(),
            Some("/drover/web-1")
        );
        let dests: Vec<_> = spec
            .mounts()
            .as_ref()
            .unwrap()
            .iter()
            .map(|m| m.destination().to_str().unwrap().to_string())
            .collect();
        assert_eq!(
            dests,
            [
                "/proc",
                "/dev",
                "/dev/pts",
                "/dev/shm",
                "/dev/mqueue",
                "/sys"
            ]
        );

        let host = ContainerRequest {
            network: Network::Host,
            ..req()
        };
        let spec = build_spec(&p, &Ids::default(), &host).unwrap();
        let ns = spec.linux().as_ref().unwrap().namespaces().clone().unwrap();
        assert!(!ns.iter().any(|n| n.typ() == LinuxNamespaceType::Network));
        assert!(spec
            .linux()
            .as_ref()
            .unwrap()
            .resources()
            .as_ref()
            .unwrap()
            .memory()
            .is_none());
    }
}
