//! ctrd: a lean, synchronous, containerd-compatible daemon core.
//!
//! The map of the crate, one line per module, roughly outer layers first; there are no
//! cycles between top-level modules. Each store registers its own plugin from a `plugin.rs`
//! beside it, services register theirs in their own files, and `server` holds the one list
//! of every built-in plugin.
//! - [`app`]: what `main` does with a command line (load config, apply flags, run or print).
//! - [`check`]: `ctrd check`, the Health probe for shell scripts.
//! - [`cli`]: flags and subcommands.
//! - [`server`]: boot and stop, the built-in plugin list, the threads that own each listener,
//!   signals, sd_notify, the `/debug` endpoints.
//! - [`services`]: containerd's services as thin adapters between the wire and the stores.
//! - [`runtime`]: the runtime v2 shim manager (bundles, shims over ttrpc, exits, recovery).
//! - [`proxy`]: external plugins (`[proxy_plugins.*]`) reached over gRPC: content,
//!   snapshotter and differ clients.
//! - [`gc`]: when garbage collection runs (the scheduler plugin).
//! - [`diff`]: the `Differ` interface, the walking differ, layer tars (apply, diff two
//!   trees, compression, stream processors).
//! - [`metadata`]: the transactional metadata store (namespaces, content records, leases,
//!   snapshot records) and garbage collection's mark and sweep (`Collector`).
//! - [`content`]: the content backend interface and the local content-addressed store.
//! - [`snapshots`]: the snapshotter interface, the native and overlayfs snapshotters.
//! - [`events`]: the event exchange (publish, forward, subscribe).
//! - [`plugin`]: registrations, dependency ordering, init context, the plugin set.
//! - [`rpc`]: the runtime under the generated gRPC glue (calls, streams, interceptors) and
//!   in-memory streams for tests.
//! - [`workers`]: the bounded thread pool for slow calls.
//! - [`waiting`]: futures that only wait (event streams, schedules) and their timers, all on
//!   one thread (the main thread in the daemon).
//! - [`metrics`]: the Prometheus registry and the gRPC interceptor.
//! - [`config`]: containerd's config schema, imports and merging, migration, TOML output.
//! - [`api`]: the generated protobuf messages and service glue, one module per package.
//! - [`mount`]: mounts as containerd describes them; temporary read-only mounts.
//! - [`scope`]: a request's namespace and lease, as one value.
//! - [`errdefs`]: error classes and their single mapping to and from gRPC/ttrpc status.
//! - [`filters`]: containerd's filter syntax.
//! - [`labels`]: label size rule and label updates by field path.
//! - [`platforms`]: platform specifiers and the host's platform.
//! - [`identifiers`]: containerd's identifier rule.
//! - [`codec`]: the byte layout of stored records.
//! - `dbfile`: a store's redb file, opened or created on first use.
//! - [`logging`]: logrus-style log lines.
//! - [`timefmt`]: RFC 3339 timestamps as Go writes them.
//! - [`sys`]: the few raw system calls and gRPC core's process-wide start
//!   (`src/grpc_core.cc`: without the threads ctrd never uses); the only `unsafe` code.

pub mod api;
pub mod app;
pub mod check;
pub mod cli;
pub mod codec;
pub mod config;
pub mod content;
mod dbfile;
pub mod diff;
pub mod errdefs;
pub mod events;
pub mod filters;
pub mod gc;
pub mod identifiers;
pub mod labels;
pub mod logging;
pub mod metadata;
pub mod metrics;
pub mod mount;
pub mod platforms;
pub mod plugin;
pub mod proxy;
pub mod rpc;
pub mod runtime;
pub mod scope;
pub mod server;
pub mod services;
pub mod snapshots;
pub mod sys;
#[cfg(test)]
mod testutil;
pub mod timefmt;
pub mod waiting;
pub mod workers;

/// The version ctrd reports (`Version/Version`, `ctrd --version`).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The source revision ctrd was built from, when known.
pub const REVISION: &str = match option_env!("CTRD_REVISION") {
    Some(revision) => revision,
    None => "",
};
