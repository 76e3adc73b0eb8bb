//! containerd's services, each as plain Rust logic plus a thin gRPC adapter.
//!
//! Handlers run on grpcio's completion-queue thread (unary calls) or on a per-call thread
//! (streams); see `crate::rpc`. Errors are `crate::errdefs::Error`, mapped to status codes
//! once, in `crate::rpc`.

pub mod containers;
pub mod content;
pub mod deprecations;
pub mod diff;
pub mod events;
pub mod health;
pub mod images;
pub mod introspection;
pub mod leases;
pub mod namespaces;
pub mod snapshots;
pub mod tasks;
pub mod version;
