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
//!
//! A file that exists is opened at start-up (a damaged one stops the plugin there); a new
//! one is created by the first transaction, so a first boot does not wait for its flushes,
//! and a garbage collection before anything was written makes none (`crate::dbfile`).

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

use crate::dbfile::DbFile;
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
    db: LazyDatabase,
    callbacks: RwLock<Vec<MutationCallback>>,
}

/// Called after every committed change, with `true` when the change deleted something.
pub type MutationCallback = Box<dyn Fn(bool) + Send + Sync>;

/// The redb file, opened (or created with its tables) on first use.
struct LazyDatabase(DbFile);

impl LazyDatabase {
    fn get(&self) -> Result<&Database, Error> {
        self.0.get().map_err(|e| self.open_error(e))
    }

    fn open_error(&self, e: Box<redb::Error>) -> Error {
        Error::new(
            Class::Unknown,
            format!("open {}: {e}", self.0.path().display()),
        )
    }

    fn begin_read(&self) -> Result<redb::ReadTransaction, Error> {
        self.get()?.begin_read().store()
    }

    fn begin_write(&self) -> Result<redb::WriteTransaction, Error> {
        self.get()?.begin_write().store()
    }

    /// A write transaction on the file when it exists; `None` when nothing was ever written.
    fn begin_write_existing(&self) -> Result<Option<redb::WriteTransaction>, Error> {
        match self.0.existing().map_err(|e| self.open_error(e))? {
            Some(db) => db.begin_write().store().map(Some),
            None => Ok(None),
        }
    }
}

/// Every table, created in a new file's first transaction.
fn tables(txn: &redb::WriteTransaction) -> Result<(), redb::TableError> {
    txn.open_table(NAMESPACES)?;
    txn.open_table(CONTENT)?;
    txn.open_table(LEASES)?;
    txn.open_table(LEASE_RESOURCES)?;
    txn.open_table(SNAPSHOTS)?;
    txn.open_table(COUNTERS)?;
    txn.open_table(IMAGES)?;
    txn.open_table(CONTAINERS)?;
    Ok(())
}

impl Db {
    /// The database in the file at `path`, usually `<root>/meta.redb`: opened now when the
    /// file exists, created by the first transaction otherwise.
    pub fn open(path: &Path) -> Result<Db, Error> {
        let lazy = LazyDatabase(DbFile::new(path.to_path_buf(), tables));
        if path.exists() {
            lazy.get()?;
        }
        Ok(Db {
            db: lazy,
            callbacks: RwLock::new(Vec::new()),
        })
    }

    /// Whether the file has been opened or created yet.
    pub fn is_open(&self) -> bool {
        self.db.0.is_open()
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
    fn a_new_file_is_created_by_the_first_transaction_and_reads_find_it_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.redb");
        let db = Db::open(&path).unwrap();
        assert!(!path.exists(), "no file before the first transaction");
        assert!(!db.is_open());
        assert!(db.list_namespaces().unwrap().is_empty());
        assert!(path.exists());
        db.create_namespace("first", &BTreeMap::new()).unwrap();
        assert_eq!(db.list_namespaces().unwrap(), vec!["first"]);
    }

    #[test]
    fn an_existing_file_is_opened_at_once_and_a_damaged_one_fails_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.redb");
        Db::open(&path)
            .unwrap()
            .create_namespace("kept", &BTreeMap::new())
            .unwrap();
        assert!(Db::open(&path).unwrap().is_open());

        let damaged = dir.path().join("damaged.redb");
        std::fs::write(&damaged, vec![0x5a; 8192]).unwrap();
        let err = Db::open(&damaged)
            .err()
            .expect("a damaged file fails at open");
        assert!(err.message().contains("damaged.redb"), "{}", err.message());
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
