//! A redb file opened on first use, shared by the stores that keep one (the metadata store
//! and the snapshotters' records).
//!
//! Creating a file costs flushes, and an open database holds its page allocator's state in
//! memory (about a megabyte for redb's default region). A daemon that has not written
//! anything yet pays for neither: the file is created, with every table, by the first call
//! that needs it ([`DbFile::get`]), while a call that only looks ([`DbFile::existing`]) finds
//! "nothing" without making a file.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use parking_lot::Mutex;
use redb::{Database, TableError, WriteTransaction};

/// Opens every table of a store in a new file's first transaction.
pub(crate) type Tables = fn(&WriteTransaction) -> Result<(), TableError>;

/// See the module documentation.
pub(crate) struct DbFile {
    path: PathBuf,
    tables: Tables,
    db: OnceLock<Database>,
    /// Serialises the first open.
    opening: Mutex<()>,
}

impl DbFile {
    /// The file at `path`, not opened yet; `tables` creates a new file's tables.
    pub(crate) fn new(path: PathBuf, tables: Tables) -> DbFile {
        DbFile {
            path,
            tables,
            db: OnceLock::new(),
            opening: Mutex::new(()),
        }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the file has been opened or created yet.
    pub(crate) fn is_open(&self) -> bool {
        self.db.get().is_some()
    }

    /// The database, opened now if its file exists (or created with its tables).
    pub(crate) fn get(&self) -> Result<&Database, Box<redb::Error>> {
        if let Some(db) = self.db.get() {
            return Ok(db);
        }
        let _opening = self.opening.lock();
        if let Some(db) = self.db.get() {
            return Ok(db);
        }
        let db = redb::Builder::new()
            .set_cache_size(crate::codec::CACHE_BYTES)
            .create(&self.path)
            .map_err(boxed)?;
        let mut txn = db.begin_write().map_err(boxed)?;
        // Creating empty tables needs no flush of its own: after a crash they are created
        // again, and the first real change commits them durably.
        txn.set_durability(redb::Durability::None);
        (self.tables)(&txn).map_err(boxed)?;
        txn.commit().map_err(boxed)?;
        Ok(self.db.get_or_init(|| db))
    }

    /// The database when it is open or its file exists; `None` when nothing was ever
    /// written to it, and then no file is made.
    pub(crate) fn existing(&self) -> Result<Option<&Database>, Box<redb::Error>> {
        if self.db.get().is_none() && !self.path.exists() {
            // A writer may be creating it right now: wait for the first open to finish
            // rather than report "nothing" for a file that is about to hold records.
            let _opening = self.opening.lock();
            if self.db.get().is_none() && !self.path.exists() {
                return Ok(None);
            }
        }
        self.get().map(Some)
    }
}

fn boxed(e: impl Into<redb::Error>) -> Box<redb::Error> {
    Box::new(e.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::{ReadableTableMetadata, TableDefinition};

    const ROWS: TableDefinition<&str, u64> = TableDefinition::new("rows");

    fn rows(txn: &WriteTransaction) -> Result<(), TableError> {
        txn.open_table(ROWS)?;
        Ok(())
    }

    #[test]
    fn a_look_at_a_file_never_written_makes_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.redb");
        let file = DbFile::new(path.clone(), rows);
        assert!(file.existing().unwrap().is_none());
        assert!(!path.exists());
        assert!(!file.is_open());
    }

    #[test]
    fn the_first_use_creates_the_file_with_its_tables_and_later_looks_find_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.redb");
        let file = DbFile::new(path.clone(), rows);
        let db = file.get().unwrap();
        assert!(path.exists());
        let txn = db.begin_read().unwrap();
        assert_eq!(txn.open_table(ROWS).unwrap().len().unwrap(), 0);
        drop(txn);
        assert!(file.existing().unwrap().is_some());
        assert_eq!(file.path(), path);
    }

    #[test]
    fn a_file_from_an_earlier_run_is_opened_by_a_look() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.redb");
        {
            let file = DbFile::new(path.clone(), rows);
            let txn = file.get().unwrap().begin_write().unwrap();
            txn.open_table(ROWS).unwrap().insert("a", 1).unwrap();
            txn.commit().unwrap();
        }
        let file = DbFile::new(path, rows);
        assert!(!file.is_open());
        let db = file.existing().unwrap().expect("the file exists");
        let txn = db.begin_read().unwrap();
        assert_eq!(
            txn.open_table(ROWS)
                .unwrap()
                .get("a")
                .unwrap()
                .unwrap()
                .value(),
            1
        );
    }
}
