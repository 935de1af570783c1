//! The Drover command line as a library: how it reaches the scheduler and
//! the agents (`client`), reads its contexts (`config`), prints (`output`)
//! and runs each command (`cmd`). The `drover` binary is a thin `main` over
//! it; `drover-bench` uses its client.
//!
//! Without the default `dev` feature it links neither the scheduler nor the
//! agent (there is no `drover dev` then), and builds wherever tokio, tonic
//! and a terminal do (macOS included).

pub mod backoff;
pub mod cli;
pub mod client;
pub mod cmd;
pub mod config;
pub mod exit;
pub mod output;
pub mod terminal;
