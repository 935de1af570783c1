//! OCI runtime bundles: the on-disk contract between image and runtime.
//!
//! A bundle is a directory holding `config.json` (the OCI runtime spec: what
//! to run, with which namespaces, mounts and limits) and `rootfs/`. Drover's
//! rootfs is an overlayfs mount: the image's cached layers are the read-only
//! lower directories and each container gets its own `upper/` and `work/`, so
//! a container's writes never touch the shared cache. Because the bundle is
//! standard, `runc run --bundle <dir>` runs it unmodified.

mod overlay;
pub mod security;
mod spec;
mod user;

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

pub use security::{CapabilityChanges, Seccomp};
pub use spec::{build_spec, limits, resolve_process, ProcessPlan, INIT_ANNOTATION};
pub use user::Ids;

use crate::image::Image;

/// Errors from building and tearing down bundles.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error(
        "container {id}: no command: neither the request nor the image sets an entrypoint or cmd"
    )]
    NoCommand { id: String },
    #[error("container {id}: workdir {workdir:?} must be an absolute path")]
    RelativeWorkdir { id: String, workdir: String },
    #[error("container {id}: invalid env name {name:?}: must be non-empty and contain no '='")]
    InvalidEnv { id: String, name: String },
    #[error("invalid container id {id:?}: use 1-64 characters from [A-Za-z0-9_.-]")]
    InvalidId { id: String },
    #[error(
        "{dir}: a container in a user namespace cannot reach its bundle, {blocker} may not be traversed by others (chmod o+x it, or move the state dir)"
    )]
    Unreachable { dir: PathBuf, blocker: PathBuf },
    #[error("container {id}: unknown user {user:?} in the image's /etc/passwd or /etc/group")]
    UnknownUser { id: String, user: String },
    #[error("bundle path {path} contains ',' or ':' which overlayfs options cannot express")]
    UnsafeOverlayPath { path: PathBuf },
    #[error("overlayfs options for {path} are {len} bytes, over the {max}-byte mount limit")]
    OverlayOptionsTooLong {
        path: PathBuf,
        len: usize,
        max: usize,
    },
    #[error("unknown capability {name:?}")]
    InvalidCapability { name: String },
    #[error("build runtime spec: {0}")]
    Spec(#[from] oci_spec::OciSpecError),
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

impl BundleError {
    pub(crate) fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.to_path_buf();
        move |source| BundleError::Io { op, path, source }
    }
}

/// Network mode of a container.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Network {
    /// A fresh network namespace with only loopback, brought up.
    #[default]
    Private,
    /// Share the host's network namespace.
    Host,
}

/// What the scheduler asks to run, in the runtime's terms.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerRequest {
    pub id: String,
    pub hostname: String,
    /// Replaces the image's entrypoint (Kubernetes `command`).
    pub command: Option<Vec<String>>,
    /// Replaces the image's cmd (Kubernetes `args`).
    pub args: Option<Vec<String>>,
    /// Merged over the image's env; a request variable wins.
    pub env: Vec<(String, String)>,
    pub workdir: Option<String>,
    pub cpu_millis: Option<u64>,
    pub memory_bytes: Option<u64>,
    pub pids: Option<i64>,
    pub network: Network,
    /// `UID[:GID]` or names from the image's databases; replaces the image's `User`.
    pub user: Option<String>,
    /// Mount the container's root read-only.
    pub read_only_rootfs: bool,
    /// Changes to Docker's default capability set.
    pub capabilities: CapabilityChanges,
    /// The seccomp filter: Docker's default, none, or the job's profile.
    pub seccomp: Seccomp,
    /// Run the runtime's init as PID 1, the command as its child.
    pub init: bool,
    /// Run in a user namespace, container ids 0.. mapped to these host ids.
    pub user_namespace: Option<IdRange>,
    /// Files written into the bundle and bound in (resolv.conf, hosts).
    pub files: Vec<ContainerFile>,
    /// Host directories bound in (the node's volumes the job mounts).
    pub binds: Vec<HostBind>,
    /// A tmpfs of its own at each path, of at most so many bytes.
    pub tmpfs: Vec<(String, u64)>,
}

/// A host directory bound into the container (see `ContainerFile` for how
/// its destination is resolved: inside the container, never on the host).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostBind {
    pub source: PathBuf,
    /// Absolute path inside the container.
    pub destination: String,
    pub read_only: bool,
}

/// A file the agent writes for a container and binds in at `path`, as
/// Docker does with `/etc/resolv.conf` and `/etc/hosts`. It is bound in
/// after the container's root is in place, so a symlink in the image at
/// `path` is replaced, never followed to the host.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct ContainerFile {
    /// Absolute path inside the container.
    pub path: String,
    pub contents: Vec<u8>,
    pub read_only: bool,
    /// Its permission bits (0: 0644).
    pub mode: u32,
    /// A secret's value: kept only on a memory filesystem of the bundle's
    /// (`<bundle>/secrets`), never on disk, and never printed.
    pub secret: bool,
    /// Its owner and group inside the container (0: root).
    pub uid: u32,
    pub gid: u32,
}

impl std::fmt::Debug for ContainerFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContainerFile")
            .field("path", &self.path)
            .field("contents", &format_args!("<{} bytes>", self.contents.len()))
            .field("read_only", &self.read_only)
            .field("mode", &format_args!("{:o}", self.mode))
            .field("secret", &self.secret)
            .finish()
    }
}

/// Host ids a user namespace maps container ids `0..size` to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    pub start: u32,
    pub size: u32,
}

/// A bundle on disk with its rootfs mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    dir: PathBuf,
    id: String,
}

impl Bundle {
    /// Creates `dir` with `config.json` and an overlayfs `rootfs` for `image`.
    /// On error nothing is left behind.
    pub fn create(
        dir: &Path,
        image: &Image,
        req: &ContainerRequest,
    ) -> Result<Bundle, BundleError> {
        check_id(&req.id)?;
        if let Some(parent) = dir.parent() {
            std::fs::create_dir_all(parent).map_err(BundleError::io("create", parent))?;
        }
        // Private from its first moment (config.json will hold secrets).
        match std::fs::DirBuilder::new().mode(0o700).create(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(BundleError::io("create", dir)(e)),
        }
        let dir = std::fs::canonicalize(dir).map_err(BundleError::io("resolve", dir))?;
        let bundle = Bundle {
            dir,
            id: req.id.clone(),
        };
        match bundle
            .share_with(req)
            .and_then(|()| bundle.populate(image, req))
        {
            Ok(()) => Ok(bundle),
            Err(e) => {
                let _ = bundle.cleanup();
                Err(e)
            }
        }
    }

    fn populate(&self, image: &Image, req: &ContainerRequest) -> Result<(), BundleError> {
        let rootfs = self.rootfs();
        overlay::mount(&self.dir, &image.layers, req.user_namespace)?;
        let process = resolve_process(&image.config, req)?;
        let user = req.user.as_deref().or(image.config.user.as_deref());
        let ids = user::resolve(&rootfs, user).map_err(|user| BundleError::UnknownUser {
            id: req.id.clone(),
            user,
        })?;
        let mut spec = build_spec(&process, &ids, req)?;
        let mut files = self.write_files(req)?;
        files.extend(extra_mounts(req)?);
        if !files.is_empty() {
            let mut mounts = spec.mounts().clone().unwrap_or_default();
            mounts.extend(files);
            spec.set_mounts(Some(mounts));
        }
        let config = self.config_path();
        spec.save(&config)?;
        // The environment it holds is the job's secrets.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600))
            .map_err(BundleError::io("chmod", &config))?;
        Ok(())
    }

    /// Writes the request's files into the bundle (owned by the container's
    /// root) and returns their bind mounts.
    fn write_files(
        &self,
        req: &ContainerRequest,
    ) -> Result<Vec<oci_spec::runtime::Mount>, BundleError> {
        let mut mounts = Vec::new();
        self.mount_secrets(req)?;
        for f in &req.files {
            let source = if f.secret {
                self.dir.join(SECRETS_DIR).join(file_name(&f.path))
            } else {
                Bundle::file_at(&self.dir, &f.path)
            };
            if let Some(dir) = source.parent().filter(|_| !f.secret) {
                std::fs::create_dir_all(dir).map_err(BundleError::io("create", dir))?;
                // Whatever the umask: a user namespace's root passes through.
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
                    .map_err(BundleError::io("chmod", dir))?;
            }
            std::fs::write(&source, &f.contents).map_err(BundleError::io("write", &source))?;
            // Container ids, as the host sees them.
            let host_id = |id: u32| match req.user_namespace {
                Some(r) if id < r.size => r.start + id,
                Some(r) => r.start,
                None => id,
            };
            if req.user_namespace.is_some() || f.uid != 0 || f.gid != 0 {
                std::os::unix::fs::chown(&source, Some(host_id(f.uid)), Some(host_id(f.gid)))
                    .map_err(BundleError::io("chown", &source))?;
            }
            if f.mode != 0 {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&source, std::fs::Permissions::from_mode(f.mode))
                    .map_err(BundleError::io("chmod", &source))?;
            }
            let mut options = vec!["bind", "nosuid", "nodev", "noexec"];
            if f.read_only {
                options.push("ro");
            }
            let source = source.to_str().ok_or_else(|| BundleError::Io {
                op: "use",
                path: source.clone(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "not UTF-8"),
            })?;
            mounts.push(spec::mount(&f.path, "bind", source, &options)?);
        }
        Ok(mounts)
    }

    /// A memory filesystem at `<bundle>/secrets` for the request's
    /// secrets, just large enough, open to root (and a user namespace's)
    /// only. None without secrets.
    fn mount_secrets(&self, req: &ContainerRequest) -> Result<(), BundleError> {
        let secrets: Vec<&ContainerFile> = req.files.iter().filter(|f| f.secret).collect();
        if secrets.is_empty() {
            return Ok(());
        }
        let dir = self.dir.join(SECRETS_DIR);
        std::fs::create_dir_all(&dir).map_err(BundleError::io("create", &dir))?;
        // Room for each file's pages, and the directory's.
        let size: usize = secrets
            .iter()
            .map(|f| f.contents.len().div_ceil(4096) * 4096 + 4096)
            .sum::<usize>()
            + 4096;
        let gid = req.user_namespace.map_or(0, |r| r.start);
        let options = format!("size={size},mode=0710,uid=0,gid={gid}");
        let flags = nix::mount::MsFlags::MS_NOSUID
            | nix::mount::MsFlags::MS_NODEV
            | nix::mount::MsFlags::MS_NOEXEC;
        let mount = |options: &str| {
            nix::mount::mount(Some("tmpfs"), &dir, Some("tmpfs"), flags, Some(options))
        };
        // Never written to swap either (Linux 6.4+; without it, older kernels).
        mount(&format!("{options},noswap"))
            .or_else(|_| mount(&options))
            .map_err(|e| BundleError::Io {
                op: "mount a tmpfs on",
                path: dir.clone(),
                source: e.into(),
            })
    }

    /// Where the bundle at `dir` keeps the file bound in at `path` (see
    /// `ContainerFile`); rewriting it before the container starts changes
    /// what the container sees.
    pub fn file_at(dir: &Path, path: &str) -> PathBuf {
        dir.join("files").join(file_name(path))
    }

    /// Private to root; in a user namespace the container's root (its
    /// group) may pass through to the rootfs, as moby does for
    /// CVE-2021-41091 with remapped roots.
    fn share_with(&self, req: &ContainerRequest) -> Result<(), BundleError> {
        use std::os::unix::fs::PermissionsExt;
        let dir = &self.dir;
        let mode = match req.user_namespace {
            Some(r) => {
                reachable_by(dir, r.start)?;
                std::os::unix::fs::chown(dir, Some(0), Some(r.start))
                    .map_err(BundleError::io("chown", dir))?;
                0o710
            }
            None => 0o700,
        };
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
            .map_err(BundleError::io("chmod", dir))
    }

    /// A handle on an existing bundle directory (e.g. after an agent restart),
    /// so it can be cleaned up.
    pub fn at(dir: impl Into<PathBuf>, id: impl Into<String>) -> Bundle {
        Bundle {
            dir: dir.into(),
            id: id.into(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn rootfs(&self) -> PathBuf {
        self.dir.join("rootfs")
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.join("config.json")
    }

    /// Unmounts the rootfs and removes the bundle directory. Idempotent.
    pub fn cleanup(&self) -> Result<(), BundleError> {
        overlay::unmount(&self.rootfs())?;
        overlay::unmount(&self.dir.join(SECRETS_DIR))?;
        overlay::unmount_layers(&self.dir)?;
        match std::fs::remove_dir_all(&self.dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(BundleError::Io {
                op: "remove",
                path: self.dir.clone(),
                source: e,
            }),
        }
    }
}

/// Where a bundle keeps its secrets: a memory filesystem (see
/// `Bundle::mount_secrets`).
const SECRETS_DIR: &str = "secrets";

/// A file name for the container path `path`, one per path (no two
/// paths share one, whatever characters they hold).
fn file_name(path: &str) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(path.as_bytes()))
}

/// The request's host binds and tmpfs mounts.
fn extra_mounts(req: &ContainerRequest) -> Result<Vec<oci_spec::runtime::Mount>, BundleError> {
    let mut mounts = Vec::new();
    for b in &req.binds {
        let source = b.source.to_str().ok_or_else(|| BundleError::Io {
            op: "use",
            path: b.source.clone(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "not UTF-8"),
        })?;
        // Not recursive: what is mounted under the host directory stays
        // out (a read-only remount would not reach it).
        let mut options = vec!["bind", "nosuid", "nodev"];
        if b.read_only {
            options.push("ro");
        }
        mounts.push(spec::mount(&b.destination, "bind", source, &options)?);
    }
    for (path, size) in &req.tmpfs {
        let size = format!("size={size}");
        let options = ["nosuid", "nodev", "mode=1777", size.as_str()];
        mounts.push(spec::mount(path, "tmpfs", "tmpfs", &options)?);
    }
    Ok(mounts)
}

/// Whether a process with host uid and gid `id` (a user namespace's root)
/// may pass through every directory above `dir` to reach it.
fn reachable_by(dir: &Path, id: u32) -> Result<(), BundleError> {
    use std::os::unix::fs::MetadataExt;
    for up in dir.ancestors().skip(1) {
        let meta = std::fs::metadata(up).map_err(BundleError::io("stat", up))?;
        let mode = meta.mode();
        let passes = mode & 0o001 != 0
            || (meta.gid() == id && mode & 0o010 != 0)
            || (meta.uid() == id && mode & 0o100 != 0);
        if !passes {
            return Err(BundleError::Unreachable {
                dir: dir.to_path_buf(),
                blocker: up.to_path_buf(),
            });
        }
    }
    Ok(())
}

fn check_id(id: &str) -> Result<(), BundleError> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id != "."
        && id != ".."
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(BundleError::InvalidId { id: id.to_string() })
    }
}
