//! An OCI image layout from a stranger: one of its index, manifest, config
//! or layer (chosen by the first byte) is the fuzzer's input, the rest is
//! well formed. Pulling it into a fresh cache never panics, and nothing
//! outside the cache changes: a canary directory beside it, which hostile
//! tars aim at with `..`, absolute paths, links and whiteouts, stays as it
//! was.
#![no_main]

use drover_agent::image::{ImageLimits, ImageRef, ImageStore};
use libfuzzer_sys::fuzz_target;
use sha2::{Digest, Sha256};
use std::path::Path;

fn put_blob(layout: &Path, media_type: &str, bytes: &[u8]) -> serde_json::Value {
    let hex = format!("{:x}", Sha256::digest(bytes));
    let dir = layout.join("blobs/sha256");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(&hex), bytes).unwrap();
    serde_json::json!({"mediaType": media_type, "digest": format!("sha256:{hex}"), "size": bytes.len()})
}

const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

fuzz_target!(|data: &[u8]| {
    let Some((&which, input)) = data.split_first() else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let canary = root.path().join("canary");
    std::fs::create_dir_all(&canary).unwrap();
    std::fs::write(canary.join("secret"), b"keep").unwrap();
    let layout = root.path().join("layout");
    std::fs::create_dir_all(&layout).unwrap();
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();

    let layer_bytes: &[u8] = if which % 4 == 3 { input } else { b"" };
    let layer = put_blob(
        &layout,
        "application/vnd.oci.image.layer.v1.tar",
        layer_bytes,
    );
    let config = if which % 4 == 2 {
        put_blob(&layout, "application/vnd.oci.image.config.v1+json", input)
    } else {
        let c = serde_json::json!({"architecture": "amd64", "os": "linux", "config": {},
            "rootfs": {"type": "layers", "diff_ids": []}});
        put_blob(
            &layout,
            "application/vnd.oci.image.config.v1+json",
            c.to_string().as_bytes(),
        )
    };
    let manifest = if which % 4 == 1 {
        put_blob(&layout, MANIFEST, input)
    } else {
        let m = serde_json::json!({"schemaVersion": 2, "mediaType": MANIFEST,
            "config": config, "layers": [layer]});
        put_blob(&layout, MANIFEST, m.to_string().as_bytes())
    };
    let index = if which % 4 == 0 {
        input.to_vec()
    } else {
        let mut top = manifest;
        top["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": "v1"});
        serde_json::json!({"schemaVersion": 2, "manifests": [top]})
            .to_string()
            .into_bytes()
    };
    std::fs::write(layout.join("index.json"), index).unwrap();

    let store = ImageStore::new(root.path().join("cache")).with_limits(ImageLimits {
        max_layer_bytes: 1 << 20,
        max_image_bytes: 2 << 20,
    });
    let r: ImageRef = format!("oci:{}:v1", layout.display()).parse().unwrap();
    let _ = store.pull(&r);

    let left: Vec<_> = std::fs::read_dir(&canary)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["secret"], "something was written beside the cache");
    assert_eq!(std::fs::read(canary.join("secret")).unwrap(), b"keep");
});
