//! Snapshotters: the backends that keep layered filesystem states, as containerd's
//! `snapshots.Snapshotter` interface describes them.
//!
//! Backend keys are whatever the caller passes; the namespaced layer above
//! (`crate::metadata`) gives each namespace its own key space by passing
//! `<namespace>/<id>/<key>`. Implementations: [`native`] (directory copies), [`overlay`]
//! (overlayfs layers) and the proxy that forwards to an external snapshotter over gRPC
//! (`crate::proxy`).

pub mod native;
pub mod overlay;
pub mod plugin;
mod storage;
pub mod wire;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use crate::errdefs::Error;

/// What a snapshot is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Kind {
    #[default]
    Unknown,
    View,
    Active,
    Committed,
}

impl Kind {
    /// The name filters and `ctr` use: `view`, `active`, `committed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Unknown => "unknown",
            Kind::View => "view",
            Kind::Active => "active",
            Kind::Committed => "committed",
        }
    }

    fn code(self) -> u32 {
        match self {
            Kind::Unknown => 0,
            Kind::View => 1,
            Kind::Active => 2,
            Kind::Committed => 3,
        }
    }

    fn from_code(code: u32) -> Kind {
        match code {
            1 => Kind::View,
            2 => Kind::Active,
            3 => Kind::Committed,
            _ => Kind::Unknown,
        }
    }
}

/// A snapshot's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    pub name: String,
    /// The parent's key; empty for a base snapshot.
    pub parent: String,
    pub kind: Kind,
    pub created: SystemTime,
    pub updated: SystemTime,
    pub labels: BTreeMap<String, String>,
}

/// Disk usage of a snapshot's own layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    pub size: i64,
    pub inodes: i64,
}

pub use crate::mount::Mount;

/// A snapshotter backend. Calls run on the caller's thread and may block on I/O.
pub trait Snapshotter: Send + Sync {
    fn stat(&self, key: &str) -> Result<Info, Error>;
    /// Updates labels by field paths (`labels`, `labels.<k>`; none replaces them all).
    fn update(&self, info: &Info, paths: &[String]) -> Result<Info, Error>;
    fn usage(&self, key: &str) -> Result<Usage, Error>;
    fn mounts(&self, key: &str) -> Result<Vec<Mount>, Error>;
    fn prepare(
        &self,
        key: &str,
        parent: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<Vec<Mount>, Error>;
    fn view(
        &self,
        key: &str,
        parent: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<Vec<Mount>, Error>;
    fn commit(&self, name: &str, key: &str, labels: &BTreeMap<String, String>)
        -> Result<(), Error>;
    fn remove(&self, key: &str) -> Result<(), Error>;
    /// Every snapshot, in key order.
    fn list(&self) -> Result<Vec<Info>, Error>;
    /// Releases space no snapshot uses; Unimplemented where the backend has nothing to do.
    fn cleanup(&self) -> Result<(), Error> {
        Err(Error::unimplemented(
            "snapshotter does not implement cleanup",
        ))
    }
}

/// How a snapshotter plugin's value is stored, built-in or proxy alike, so the metadata
/// plugin can find every one.
pub struct SnapshotterHandle(pub Arc<dyn Snapshotter>);
