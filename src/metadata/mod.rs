//! The transactional metadata store (the role of containerd's `io.containerd.metadata.v1.bolt`).
//!
//! Owns `<root>/meta.redb`, a single crash-safe redb file holding namespaces, the content
//! records each namespace references, and leases with their resources. Every mutating call is
//! one redb write transaction: it commits whole or, on any error, changes nothing. [`Db`] is
//! `Sync`; callers on any thread share it behind an `Arc` (redb serialises writers itself).
//!
//! Tables (keys compare as bytes, so listings come out in byte order):
//! * `namespaces`: name → labels
//! * `content`: (namespace, digest) → size, created, updated, labels
//! * `leases`: (namespace, id) → created, labels
//! * `lease_resources`: (namespace, lease id, type, resource id) → ()
//! * `snapshots`: (snapshotter, namespace, key) → backend key, parent, times, labels
//! * `counters`: name → last id handed out
//! * `images`: (namespace, name) → times, labels, target
//! * `containers`: (namespace, id) → the container record (`Any` values byte for byte)

mod containers;
mod content;
mod gc;
mod images;
mod leases;
mod namespaces;
pub mod plugin;
mod snapshots;
mod store;

use std::collections::BTreeMap;
use std::path::Path;

use parking_lot::RwLock;
use redb::{Database, ReadableTable, TableDefinition};

use crate::errdefs::{Class, Error};
use crate::labels::{update_labels, validate_label, validate_labels};

pub use containers::{AnyValue, ContainerRecord, RuntimeInfo};
pub use content::ContentRecord;
pub use gc::{Collector, GcRoots, Stats, Sweep};
pub use images::{ImageRecord, Target};
pub use leases::{generate_lease_id, Lease};
pub use snapshots::{backend_namespace, SnapshotRecord};
pub use store::{ContentWriter, Metadata, SharingPolicy, INGEST_EXPIRY};

/// The label that keeps a record alive without a lease.
pub const GC_ROOT_LABEL: &str = "containerd.io/gc.root";

/// The label giving a lease its expiry time (RFC 3339).
pub const GC_EXPIRE_LABEL: &str = "containerd.io/gc.expire";

const NAMESPACES: TableDefinition<&str, &[u8]> = TableDefinition::new("namespaces");
const CONTENT: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("content");
const LEASES: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("leases");
const LEASE_RESOURCES: TableDefinition<(&str, &str, &str, &str), ()> =
    TableDefinition::new("lease_resources");
const SNAPSHOTS: TableDefinition<(&str, &str, &str), &[u8]> = TableDefinition::new("snapshots");
const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("counters");
const IMAGES: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("images");
const CONTAINERS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("containers");

/// The metadata database; see the module documentation.
pub struct Db {
    db: Database,
    callbacks: RwLock<Vec<MutationCallback>>,
}

/// Called after every committed change, with `true` when the change deleted something.
pub type MutationCallback = Box<dyn Fn(bool) + Send + Sync>;

impl Db {
    /// Opens (creating if needed) the database file at `path`, usually `<root>/meta.redb`.
    pub fn open(path: &Path) -> Result<Db, Error> {
        let db = redb::Builder::new()
            .set_cache_size(crate::codec::CACHE_BYTES)
            .create(path)
            .map_err(|e| Error::new(Class::Unknown, format!("open {}: {e}", path.display())))?;
        let mut txn = db.begin_write().store()?;
        // Creating empty tables needs no flush of its own: after a crash they are created
        // again, and the first real change commits them durably.
        txn.set_durability(redb::Durability::None);
        {
            txn.open_table(NAMESPACES).store()?;
            txn.open_table(CONTENT).store()?;
            txn.open_table(LEASES).store()?;
            txn.open_table(LEASE_RESOURCES).store()?;
            txn.open_table(SNAPSHOTS).store()?;
            txn.open_table(COUNTERS).store()?;
            txn.open_table(IMAGES).store()?;
            txn.open_table(CONTAINERS).store()?;
        }
        txn.commit().store()?;
        Ok(Db {
            db,
            callbacks: RwLock::new(Vec::new()),
        })
    }

    /// Registers `callback` to hear of every committed change (the GC scheduler's feed).
    pub fn register_mutation_callback(&self, callback: impl Fn(bool) + Send + Sync + 'static) {
        self.callbacks.write().push(Box::new(callback));
    }

    /// Commits `txn`, then tells the callbacks; `dirty` when the change deleted something.
    fn commit(&self, txn: redb::WriteTransaction, dirty: bool) -> Result<(), Error> {
        txn.commit().store()?;
        for callback in self.callbacks.read().iter() {
            callback(dirty);
        }
        Ok(())
    }
}

/// Turns redb's error types into an Unknown-class [`Error`].
trait StoreResult<T> {
    fn store(self) -> Result<T, Error>;
}

impl<T, E: Into<redb::Error>> StoreResult<T> for Result<T, E> {
    fn store(self) -> Result<T, Error> {
        self.map_err(|e| Error::new(Class::Unknown, format!("metadata store: {}", e.into())))
    }
}

/// Creates the namespace row inside `txn` unless it exists.
fn ensure_namespace(txn: &redb::WriteTransaction, name: &str) -> Result<(), Error> {
    crate::identifiers::validate(name)?;
    let mut table = txn.open_table(NAMESPACES).store()?;
    if table.get(name).store()?.is_none() {
        let empty = crate::codec::Encoder::new()
            .labels(&BTreeMap::new())
            .finish();
        table.insert(name, empty.as_slice()).store()?;
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn open_temp() -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("meta.redb")).unwrap();
        (dir, db)
    }

    pub(crate) fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn committed_data_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.redb");
        {
            let db = Db::open(&path).unwrap();
            db.create_namespace("persist", &labels(&[("a", "b")]))
                .unwrap();
            db.create_lease("persist", "l1", &BTreeMap::new()).unwrap();
        }
        let db = Db::open(&path).unwrap();
        assert_eq!(db.list_namespaces().unwrap(), vec!["persist"]);
        assert_eq!(db.namespace_labels("persist").unwrap()["a"], "b");
        assert_eq!(db.list_leases("persist").unwrap()[0].id, "l1");
    }
}
