//! demo-web: the workload for Drover's examples.
//!
//! A tiny HTTP/1.1 server, std plus `libc` only, built statically so the image
//! needs nothing but the binary. It reports its version and hostname, answers
//! health checks, and has fault switches (crash, slow start, failing health)
//! that rollout and restart demos use. See `examples/README.md`.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

pub mod config;
pub mod hostname;
pub mod http;
pub mod routes;
pub mod server;
pub mod shutdown;
