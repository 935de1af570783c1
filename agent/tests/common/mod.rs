//! What several agent test binaries share: the one way a test skips when
//! the machine lacks what it needs, and a one-layer image made of the
//! host's static busybox, with the applets a test needs.
#![allow(dead_code)] // each test binary uses its own part

use std::path::Path;

use drover_agent::image::{Image, ImageConfig};

pub const BUSYBOX: &str = "/usr/bin/busybox";

/// True if every need holds; otherwise says which do not and skips, except
/// under `CI=true`, where a skip is a failure.
pub fn can_run(needs: &[(&str, bool)]) -> bool {
    let missing: Vec<&str> = needs
        .iter()
        .filter(|(_, ok)| !ok)
        .map(|(what, _)| *what)
        .collect();
    if missing.is_empty() {
        return true;
    }
    let why = format!("skipping: missing {}", missing.join(", "));
    assert_ne!(
        std::env::var("CI").as_deref(),
        Ok("true"),
        "CI=true and {why}"
    );
    eprintln!("{why}");
    false
}

pub fn root() -> (&'static str, bool) {
    ("root", nix::unistd::geteuid().is_root())
}

pub fn busybox() -> (&'static str, bool) {
    (
        "a static busybox at /usr/bin/busybox",
        Path::new(BUSYBOX).exists(),
    )
}

/// Where a cgroup2 hierarchy is mounted: `/sys/fs/cgroup` on a v2 host,
/// `/sys/fs/cgroup/unified` on a hybrid one (with no controllers there).
pub fn cgroup_v2_root() -> Option<&'static Path> {
    [
        Path::new("/sys/fs/cgroup"),
        Path::new("/sys/fs/cgroup/unified"),
    ]
    .into_iter()
    .find(|r| drover_agent::cgroups::detect_version(r) == drover_agent::cgroups::Version::V2)
}

/// Root and a static busybox: what most runtime tests need.
pub fn root_and_busybox() -> bool {
    can_run(&[root(), busybox()])
}

/// An image whose one layer (`<dir>/layer`) holds busybox as `/bin/busybox`,
/// `applets` linked to it, and an empty `/tmp`; `PATH=/bin`.
pub fn busybox_image(dir: &Path, applets: &[&str]) -> Image {
    let layer = dir.join("layer");
    for d in ["bin", "tmp"] {
        std::fs::create_dir_all(layer.join(d)).unwrap();
    }
    std::fs::copy(BUSYBOX, layer.join("bin/busybox")).unwrap();
    for applet in applets {
        std::os::unix::fs::symlink("busybox", layer.join("bin").join(applet)).unwrap();
    }
    Image {
        layers: vec![layer],
        config: ImageConfig {
            env: vec!["PATH=/bin".into()],
            ..Default::default()
        },
        digest: "sha256:test".into(),
    }
}
