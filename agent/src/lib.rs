//! Drover's node agent: the container runtime side.
//!
//! An allocation runs as a container built in four steps, one module each:
//! [`image`] resolves and unpacks an OCI image into cached layers, [`bundle`]
//! writes an OCI runtime bundle (config.json plus an overlayfs rootfs),
//! [`cgroups`] creates the resource limits, and [`runtime`] starts the bundle
//! in fresh namespaces. The bundle is standard, so `runc run` can run it too.

#![deny(clippy::undocumented_unsafe_blocks)]

pub mod bundle;
pub mod cgroups;
pub mod daemon;
pub mod fence_clock;
pub mod image;
pub mod leftovers;
pub mod network;
pub mod pki;
pub mod preflight;
pub mod runtime;
