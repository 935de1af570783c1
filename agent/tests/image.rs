//! Pulls an image built by a real tool (umoci) and checks the overlay view a
//! bundle gets: layers stacked in order, and umoci's whiteout hiding a file
//! that a lower layer added.

use std::path::Path;
use std::process::Command;

use drover_agent::bundle::{Bundle, ContainerRequest};
use drover_agent::image::{ImageRef, ImageStore};

fn umoci(args: &[&str], dir: &Path) {
    let out = Command::new("umoci")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "umoci {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn umoci_layout_with_whiteout_pulls_and_mounts() {
    let have_umoci = Command::new("umoci").arg("--version").output().is_ok();
    let root = nix::unistd::geteuid().is_root();
    if !have_umoci || !root {
        let why = format!("skipping: needs root ({root}) and umoci ({have_umoci})");
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "CI=true and {why}"
        );
        eprintln!("{why}");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    umoci(&["init", "--layout", "img"], dir);
    umoci(&["new", "--image", "img:t"], dir);
    umoci(&["unpack", "--image", "img:t", "work"], dir);
    let rootfs = dir.join("work/rootfs");
    std::fs::create_dir_all(rootfs.join("etc")).unwrap();
    std::fs::write(rootfs.join("etc/kept"), "kept\n").unwrap();
    std::fs::write(rootfs.join("etc/gone"), "gone\n").unwrap();
    umoci(
        &["repack", "--refresh-bundle", "--image", "img:t", "work"],
        dir,
    );
    std::fs::remove_file(rootfs.join("etc/gone")).unwrap();
    std::fs::write(rootfs.join("etc/kept"), "changed\n").unwrap();
    umoci(&["repack", "--image", "img:t", "work"], dir);
    umoci(
        &[
            "config",
            "--image",
            "img:t",
            "--config.cmd",
            "/bin/true",
            "--config.workingdir",
            "/etc",
        ],
        dir,
    );

    let reference: ImageRef = format!("oci:{}:t", dir.join("img").display())
        .parse()
        .unwrap();
    let image = ImageStore::new(dir.join("cache")).pull(&reference).unwrap();
    assert_eq!(image.layers.len(), 2);
    assert_eq!(image.config.cmd, vec!["/bin/true"]);
    assert_eq!(image.config.working_dir.as_deref(), Some("/etc"));

    let req = ContainerRequest {
        id: "it-umoci".into(),
        hostname: "u".into(),
        ..Default::default()
    };
    let bundle = Bundle::create(&dir.join("bundle"), &image, &req).unwrap();
    let view = bundle.rootfs();
    let result = std::panic::catch_unwind(|| {
        assert_eq!(
            std::fs::read_to_string(view.join("etc/kept")).unwrap(),
            "changed\n"
        );
        assert!(
            !view.join("etc/gone").exists(),
            "whiteout did not hide etc/gone"
        );
        // The lower layer still has it: the cache is shared and never modified.
        assert!(image.layers[0].join("etc/gone").exists());
    });
    bundle.cleanup().unwrap();
    result.unwrap();
}
