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

pub(crate) mod codec;
mod content;
mod gc;
mod leases;
mod namespaces;
mod snapshots;
mod store;

use std::collections::BTreeMap;
use std::path::Path;

use parking_lot::RwLock;
use redb::{Database, ReadableTable, TableDefinition};

use crate::errdefs::{Class, Error};

pub use content::ContentRecord;
pub use gc::{GcRoots, Sweep};
pub use leases::Lease;
pub use snapshots::{backend_namespace, SnapshotRecord};
pub use store::{ContentWriter, Metadata, SharingPolicy, INGEST_EXPIRY};

/// redb's page cache: metadata is small and read mostly through short transactions, so a
/// small cache keeps the daemon's footprint down on small hosts.
pub(crate) const CACHE_BYTES: usize = 512 << 10;

/// The largest key plus value a label may have.
pub const MAX_LABEL_SIZE: usize = 4096;

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
            .set_cache_size(CACHE_BYTES)
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

/// Checks one label the way containerd's `labels.Validate` does.
pub fn validate_label(key: &str, value: &str) -> Result<(), Error> {
    let size = key.len() + value.len();
    if size > MAX_LABEL_SIZE {
        let short: String = key.chars().take(64).collect();
        return Err(Error::wrapped(
            Class::InvalidArgument,
            format!(
                "label key and value length ({size} bytes) greater than maximum size \
                 ({MAX_LABEL_SIZE} bytes), key: {short}"
            ),
        ));
    }
    Ok(())
}

/// Applies the labels of an Update request to `current` by its field paths, as containerd's
/// stores do: no paths or `labels` replace them all, `labels.<k>` sets one key (removing it
/// when the request has no value or an empty one). Empty values are never kept. A path
/// that is not about labels is returned as the error, for the caller to name.
pub(crate) fn update_labels<'p>(
    current: &mut BTreeMap<String, String>,
    requested: &BTreeMap<String, String>,
    paths: &'p [String],
) -> Result<(), &'p str> {
    if paths.is_empty() {
        current.clone_from(requested);
    }
    for path in paths {
        if path == "labels" {
            current.clone_from(requested);
        } else if let Some(key) = path.strip_prefix("labels.") {
            match requested.get(key) {
                Some(v) if !v.is_empty() => {
                    current.insert(key.to_string(), v.clone());
                }
                _ => {
                    current.remove(key);
                }
            }
        } else {
            return Err(path);
        }
    }
    current.retain(|_, v| !v.is_empty());
    Ok(())
}

fn validate_labels(labels: &BTreeMap<String, String>) -> Result<(), Error> {
    labels.iter().try_for_each(|(k, v)| validate_label(k, v))
}

/// Creates the namespace row inside `txn` unless it exists.
fn ensure_namespace(txn: &redb::WriteTransaction, name: &str) -> Result<(), Error> {
    crate::identifiers::validate(name)?;
    let mut table = txn.open_table(NAMESPACES).store()?;
    if table.get(name).store()?.is_none() {
        let empty = codec::Encoder::new().labels(&BTreeMap::new()).finish();
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

    #[test]
    fn oversized_label_is_invalid_argument() {
        let key = "k".repeat(100);
        let err = validate_label(&key, &"v".repeat(4000)).unwrap_err();
        assert_eq!(err.class(), Class::InvalidArgument);
        assert_eq!(
            err.message(),
            format!(
                "label key and value length (4100 bytes) greater than maximum size (4096 bytes), \
                 key: {}: invalid argument",
                "k".repeat(64)
            )
        );
        assert!(validate_label(&"k".repeat(96), &"v".repeat(4000)).is_ok());
    }
}
