//! The differ interface (containerd's `diff.Applier` and `diff.Comparer`) on domain types,
//! and how a differ plugin's value is stored. Implementations: the walking differ
//! ([`super::walking`]) and the proxy differ (`crate::proxy::diff`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::SystemTime;

use crate::content::Descriptor;
use crate::errdefs::Error;
use crate::mount::Mount;
use crate::scope::Scope;

/// An opaque typed value handed to stream processors (a protobuf `Any` on the wire).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Payload {
    pub type_url: String,
    pub value: Vec<u8>,
}

/// What Apply was asked for besides the layer and the mounts.
#[derive(Debug, Clone, Default)]
pub struct ApplyParams {
    /// Payloads for stream processors, by media type.
    pub payloads: HashMap<String, Payload>,
    /// Sync the filesystem after applying.
    pub sync_fs: bool,
}

/// What Diff (compare) was asked for.
#[derive(Debug, Clone, Default)]
pub struct CompareOptions {
    /// Empty means `application/vnd.oci.image.layer.v1.tar+gzip`.
    pub media_type: String,
    /// The content ingest ref; empty means a fresh unique one.
    pub reference: String,
    pub labels: BTreeMap<String, String>,
    /// No file in the layer is newer than this (`SOURCE_DATE_EPOCH`).
    pub source_date_epoch: Option<SystemTime>,
}

/// A differ: applies layers to mounts and computes layers between mounts. A differ that
/// cannot handle the mounts answers NotImplemented, so the next one can try.
pub trait Differ: Send + Sync {
    /// Applies the layer `desc` to what `mounts` show; returns the uncompressed layer.
    fn apply(
        &self,
        scope: &Scope,
        desc: &Descriptor,
        mounts: &[Mount],
        opts: &ApplyParams,
    ) -> Result<Descriptor, Error>;

    /// Writes the layer that turns `lower` into `upper` into the content store.
    fn compare(
        &self,
        scope: &Scope,
        lower: &[Mount],
        upper: &[Mount],
        opts: &CompareOptions,
    ) -> Result<Descriptor, Error>;
}

/// How a differ plugin's value is stored, built-in or proxy alike.
pub struct DifferHandle(pub Arc<dyn Differ>);
