//! Generates the tonic/prost code from `proto/drover.proto` with `protox`, so
//! building Drover needs no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/drover.proto");
    let fds = protox::compile(["proto/drover.proto"], ["proto"])?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
