//! Drover's wire protocol and job-spec model.
//!
//! `pb` holds the generated gRPC code and nothing else; `spec` is the job
//! specification users write (YAML) with its complete validation, shared by the
//! CLI (fast feedback) and the scheduler (the authority); `quantity` parses the
//! sizes and durations specs are written in.
#![forbid(unsafe_code)]

pub mod fencing;
pub mod pki;
pub mod quantity;
pub mod spec;

/// Generated protobuf and tonic code for `drover.v1`.
pub mod pb {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("drover.v1");
}
