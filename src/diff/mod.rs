//! Differs and the layer library behind containerd's walking differ: applying OCI layer
//! tars to a directory, writing the tar of changes between two directories, layer
//! compression and media types, and external stream processors. Plain functions run on the
//! caller's thread; only [`processor`] starts a child process and the threads that feed it.
//!
//! - [`differ`]: the `Differ` interface on domain types and `DifferHandle`.
//! - [`walking`]: the walking differ; [`plugin`] registers it.
//! - [`apply`]: unpack a layer with whiteouts and opaque directories, confined to a root.
//! - [`walk`]: compare two trees and write the layer that turns one into the other.
//! - [`compression`]: media types, magic-byte detection, gzip in and out.
//! - [`processor`]: `[stream_processors.<id>]` binaries that transform a layer stream.

pub mod apply;
pub mod compression;
pub mod differ;
mod path;
pub mod plugin;
pub mod processor;
pub mod walk;
pub mod walking;
pub mod wire;

#[cfg(test)]
mod testutil;

pub use apply::{apply_layer, apply_layer_with, ApplyOptions, ApplyStats};
pub use differ::{ApplyParams, CompareOptions, Differ, DifferHandle, Payload};
pub use walk::write_diff;

/// A layer entry named `.wh.<name>` removes `<name>` from the lower layers.
pub const WHITEOUT_PREFIX: &str = ".wh.";

/// A layer entry with this name hides everything lower layers put in its directory.
pub const OPAQUE_MARKER: &str = ".wh..wh..opq";
