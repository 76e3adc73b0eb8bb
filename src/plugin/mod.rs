//! The plugin model: registrations, their dependency graph, initialisation and lookups.
//!
//! Everything ctrd serves is a plugin named by a containerd URI (`<type>.<id>`, for example
//! `io.containerd.grpc.v1.version`). The protocol, run on the `ctrd-init` thread:
//!
//! 1. [`Registry`] collects [`Registration`]s (the explicit built-in list in
//!    `crate::server`, then proxy plugins) and rejects malformed ones with a
//!    [`RegistryError`] instead of panicking. This module names no service: plugins are
//!    values it stores, and [`GrpcServices`] / [`TtrpcServices`] are the only roles it knows.
//! 2. [`Registry::graph`] orders them the way containerd does: depth-first in registration
//!    order, dependencies first, disabled plugins removed before ordering.
//! 3. Each registration's [`Registration::init`] runs with an [`InitContext`]; the result,
//!    success or failure, is added to the shared [`Set`] in init order.
//! 4. Listeners ask the set for [`Instance`]s that serve gRPC or ttrpc; shutdown closes
//!    instances in reverse init order.

mod context;
mod graph;
mod instance;
mod set;

pub use context::{InitContext, Readiness, ReadyGuard};
pub use graph::{Registration, Registry, RegistryError};
pub use instance::{GrpcServices, Instance, TtrpcServices};
pub use set::{Meta, Plugin, Set};

use crate::errdefs::Error;

/// Plugin type URIs used by ctrd's built-ins (containerd's names).
pub mod types {
    pub const INTERNAL: &str = "io.containerd.internal.v1";
    pub const SERVICE: &str = "io.containerd.service.v1";
    pub const GRPC: &str = "io.containerd.grpc.v1";
    pub const TTRPC: &str = "io.containerd.ttrpc.v1";
    pub const SNAPSHOT: &str = "io.containerd.snapshotter.v1";
    pub const DIFF: &str = "io.containerd.differ.v1";
    pub const METADATA: &str = "io.containerd.metadata.v1";
    pub const CONTENT: &str = "io.containerd.content.v1";
    pub const GC: &str = "io.containerd.gc.v1";
    pub const EVENT: &str = "io.containerd.event.v1";
    pub const LEASE: &str = "io.containerd.lease.v1";
    pub const WARNING: &str = "io.containerd.warning.v1";
    pub const SANDBOX_CONTROLLER: &str = "io.containerd.sandbox.controller.v1";
}

/// Property keys handed to every plugin (containerd's names).
pub mod properties {
    pub const ROOT: &str = "io.containerd.plugin.root";
    pub const STATE: &str = "io.containerd.plugin.state";
    pub const GRPC_ADDRESS: &str = "io.containerd.plugin.grpc.address";
    pub const TTRPC_ADDRESS: &str = "io.containerd.plugin.ttrpc.address";
}

/// The marker text that makes an init error a "skip" rather than a failure; `ctr plugins ls`
/// shows `skip` when an init error's message contains it.
pub const SKIP_MARKER: &str = "skip plugin";

/// An init error meaning "intentionally not loaded": `<reason>: skip plugin`.
pub fn skip(reason: impl std::fmt::Display) -> Error {
    let reason = reason.to_string();
    if reason.is_empty() {
        Error::unknown(SKIP_MARKER)
    } else {
        Error::unknown(format!("{reason}: {SKIP_MARKER}"))
    }
}

/// Whether an init error is a skip.
pub fn is_skip(err: &Error) -> bool {
    err.message().contains(SKIP_MARKER)
}
