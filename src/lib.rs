//! ctrd: a lean, synchronous, containerd-compatible daemon core.
//!
//! The map of the crate, one line per module:
//! - [`app`]: what `main` does with a command line (load config, apply flags, run or print).
//! - [`check`]: `ctrd check`, the Health probe for shell scripts.
//! - [`cli`]: flags and subcommands.
//! - [`config`]: containerd's config schema, imports and merging, migration, TOML output.
//! - [`content`]: the local content-addressed store (blobs and resumable ingests).
//! - [`diff`]: layer tars: apply with whiteouts, diff two trees, compression, stream processors.
//! - [`metadata`]: the transactional metadata store (namespaces, content records, leases).
//! - [`proxy`]: external plugins (`[proxy_plugins.*]`) reached over gRPC.
//! - [`plugin`]: registrations, dependency ordering, init context, the plugin set.
//! - [`server`]: boot and stop, the threads that own each listener, signals, sd_notify.
//! - [`services`]: containerd's services as plain logic plus thin gRPC adapters.
//! - [`snapshots`]: the snapshotter interface, the native and overlayfs snapshotters.
//! - [`rpc`]: the runtime under the generated gRPC glue (calls, streams, interceptors).
//! - [`api`]: the generated protobuf messages and service glue, under stable names.
//! - [`events`]: the event exchange (publish, forward, subscribe).
//! - [`errdefs`]: error classes and their single mapping to gRPC/ttrpc codes.
//! - [`filters`]: containerd's filter syntax.
//! - [`gc`]: when garbage collection runs (the scheduler plugin).
//! - [`identifiers`]: containerd's identifier rule.
//! - [`metrics`]: the Prometheus registry and the gRPC interceptor.
//! - [`mount`]: mounts as containerd describes them; temporary read-only mounts.
//! - [`debug`]: the `/debug` endpoints.
//! - [`logging`]: logrus-style log lines.
//! - [`timefmt`]: RFC 3339 timestamps as Go writes them.
//! - [`sys`]: the few raw system calls (the only `unsafe` code).

pub mod api;
pub mod app;
pub mod check;
pub mod cli;
pub mod config;
pub mod content;
pub mod debug;
pub mod diff;
pub mod errdefs;
pub mod events;
pub mod filters;
pub mod gc;
pub mod identifiers;
pub mod logging;
pub mod metadata;
pub mod metrics;
pub mod mount;
pub mod plugin;
pub mod proxy;
pub mod rpc;
pub mod server;
pub mod services;
pub mod snapshots;
pub mod sys;
pub mod timefmt;

/// The version ctrd reports (`Version/Version`, `ctrd --version`).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The source revision ctrd was built from, when known.
pub const REVISION: &str = match option_env!("CTRD_REVISION") {
    Some(revision) => revision,
    None => "",
};
