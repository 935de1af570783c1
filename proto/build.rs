//! Generates the tonic/prost code from `proto/drover.proto` with `protox`, so
//! building Drover needs no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/drover.proto");
    let fds = protox::compile(["proto/drover.proto"], ["proto"])?;
    // What carries a secret's value prints it redacted (see lib.rs).
    tonic_prost_build::configure()
        .skip_debug([".drover.v1.SecretData", ".drover.v1.PutSecretRequest"])
        // Maps in a stable order: labels print and hash the same everywhere.
        .btree_map(".")
        // prost's codec, but a message may come already encoded.
        .codec_path("crate::codec::Codec")
        .compile_fds(fds)?;
    Ok(())
}
