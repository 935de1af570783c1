//! What several agent test binaries share: a one-layer image made of the
//! host's static busybox, with the applets a test needs.

use std::path::Path;

use drover_agent::image::{Image, ImageConfig};

pub const BUSYBOX: &str = "/usr/bin/busybox";

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
