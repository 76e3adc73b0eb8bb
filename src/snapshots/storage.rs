//! The records a directory-backed snapshotter keeps beside its directories (containerd's
//! `snapshots/storage`): key → numeric id, kind, parent key, times, labels and, once
//! committed, the usage measured at commit. Ids come from a counter and name the
//! directories, so nothing the caller chose as a key ever reaches the file system.
//!
//! One redb file, opened on first use (a daemon that never touches the snapshotter does
//! not pay for creating it). Callers serialise writers; every change is one transaction,
//! and [`Store::create`] runs the caller's directory work inside it, so a failure of either
//! leaves neither.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::time::SystemTime;

use redb::{Database, ReadableTable, TableDefinition};

use super::{Info, Kind, Usage};
use crate::codec::{Decoder, Encoder};
use crate::dbfile::DbFile;
use crate::errdefs::{Class, Error};

const SNAPSHOTS: TableDefinition<&str, &[u8]> = TableDefinition::new("snapshots");
const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("counters");

fn tables(txn: &redb::WriteTransaction) -> Result<(), redb::TableError> {
    txn.open_table(SNAPSHOTS)?;
    txn.open_table(COUNTERS)?;
    Ok(())
}

/// One stored snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub id: u64,
    pub kind: Kind,
    pub parent: String,
    pub created: SystemTime,
    pub updated: SystemTime,
    pub labels: BTreeMap<String, String>,
    /// Measured at commit; zero before.
    pub usage: Usage,
}

impl Record {
    fn encode(&self) -> Vec<u8> {
        Encoder::new()
            .i64(self.id as i64)
            .u32(self.kind.code())
            .str(&self.parent)
            .time(self.created)
            .time(self.updated)
            .labels(&self.labels)
            .i64(self.usage.size)
            .i64(self.usage.inodes)
            .finish()
    }

    fn decode(bytes: &[u8]) -> Result<Record, Error> {
        let mut d = Decoder::new(bytes);
        Ok(Record {
            id: d.i64()? as u64,
            kind: Kind::from_code(d.u32()?),
            parent: d.str()?,
            created: d.time()?,
            updated: d.time()?,
            labels: d.labels()?,
            usage: Usage {
                size: d.i64()?,
                inodes: d.i64()?,
            },
        })
    }

    pub fn info(&self, key: &str) -> Info {
        Info {
            name: key.to_string(),
            parent: self.parent.clone(),
            kind: self.kind,
            created: self.created,
            updated: self.updated,
            labels: self.labels.clone(),
        }
    }
}

/// A snapshot with the ids of its ancestors, nearest first.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub record: Record,
    pub parent_ids: Vec<u64>,
}

fn store_err(e: impl Into<redb::Error>) -> Error {
    Error::new(Class::Unknown, format!("snapshot metadata: {}", e.into()))
}

fn missing() -> Error {
    Error::wrapped(Class::NotFound, "snapshot does not exist")
}

/// See the module documentation.
pub struct Store {
    db: DbFile,
}

impl Store {
    /// A store kept in the file `path` (created on first use).
    pub fn new(path: PathBuf) -> Store {
        Store {
            db: DbFile::new(path, tables),
        }
    }

    fn db(&self) -> Result<&Database, Error> {
        self.db.get().map_err(|e| store_err(*e))
    }

    pub fn get(&self, key: &str) -> Result<Option<Record>, Error> {
        let txn = self.db()?.begin_read().map_err(store_err)?;
        let table = txn.open_table(SNAPSHOTS).map_err(store_err)?;
        let value = table.get(key).map_err(store_err)?;
        value.map(|v| Record::decode(v.value())).transpose()
    }

    pub fn must_get(&self, key: &str) -> Result<Record, Error> {
        self.get(key)?.ok_or_else(missing)
    }

    /// `key`'s record and its ancestors' ids, read in one transaction.
    pub fn snapshot(&self, key: &str) -> Result<Snapshot, Error> {
        let txn = self.db()?.begin_read().map_err(store_err)?;
        let table = txn.open_table(SNAPSHOTS).map_err(store_err)?;
        let read = |key: &str| -> Result<Option<Record>, Error> {
            let value = table.get(key).map_err(store_err)?;
            value.map(|v| Record::decode(v.value())).transpose()
        };
        let record = read(key)?.ok_or_else(missing)?;
        let mut parent_ids = Vec::new();
        let mut parent = record.parent.clone();
        while !parent.is_empty() {
            let rec = read(&parent)?.ok_or_else(|| {
                Error::wrapped(Class::NotFound, format!("missing parent {parent:?} bucket"))
            })?;
            parent_ids.push(rec.id);
            parent = rec.parent;
        }
        Ok(Snapshot { record, parent_ids })
    }

    /// Records a new snapshot and runs `build(id, parent_ids)` (the directory work) before
    /// the record commits; a failure of either leaves no record, and a failed commit runs
    /// `undo(id)`.
    pub fn create(
        &self,
        kind: Kind,
        key: &str,
        parent: &str,
        labels: &BTreeMap<String, String>,
        build: impl FnOnce(u64, &[u64]) -> Result<(), Error>,
        undo: impl FnOnce(u64),
    ) -> Result<Snapshot, Error> {
        if key.is_empty() {
            return Err(Error::invalid_argument(
                "snapshot key must not be empty: invalid argument",
            ));
        }
        if self.get(key)?.is_some() {
            return Err(Error::wrapped(
                Class::AlreadyExists,
                format!("snapshot {key}"),
            ));
        }
        let parent_ids = if parent.is_empty() {
            Vec::new()
        } else {
            let rec = self.get(parent)?.ok_or_else(|| {
                Error::wrapped(Class::NotFound, format!("missing parent {parent:?} bucket"))
            })?;
            if rec.kind != Kind::Committed {
                return Err(Error::wrapped(
                    Class::InvalidArgument,
                    format!("parent {parent:?} is not committed snapshot"),
                ));
            }
            let mut ids = vec![rec.id];
            ids.extend(self.snapshot(parent)?.parent_ids);
            ids
        };
        let txn = self.db()?.begin_write().map_err(store_err)?;
        let id = {
            let mut counters = txn.open_table(COUNTERS).map_err(store_err)?;
            let next = counters
                .get("id")
                .map_err(store_err)?
                .map(|v| v.value())
                .unwrap_or(0)
                + 1;
            counters.insert("id", next).map_err(store_err)?;
            next
        };
        let now = SystemTime::now();
        let record = Record {
            id,
            kind,
            parent: parent.to_string(),
            created: now,
            updated: now,
            labels: labels.clone(),
            usage: Usage::default(),
        };
        txn.open_table(SNAPSHOTS)
            .map_err(store_err)?
            .insert(key, record.encode().as_slice())
            .map_err(store_err)?;
        build(id, &parent_ids)?;
        if let Err(err) = txn.commit() {
            undo(id);
            return Err(store_err(err).context("failed to create snapshot"));
        }
        Ok(Snapshot { record, parent_ids })
    }

    /// Turns active `key` into committed `name` with `usage` and `labels`.
    pub fn commit(
        &self,
        name: &str,
        key: &str,
        usage: Usage,
        labels: &BTreeMap<String, String>,
    ) -> Result<(), Error> {
        if self.get(name)?.is_some() {
            return Err(Error::wrapped(
                Class::AlreadyExists,
                format!("committed snapshot {name}"),
            ));
        }
        let mut rec = self.get(key)?.ok_or_else(|| {
            Error::wrapped(
                Class::NotFound,
                format!("failed to get active snapshot {key:?}"),
            )
        })?;
        if rec.kind != Kind::Active {
            return Err(Error::wrapped(
                Class::FailedPrecondition,
                format!("snapshot {key:?} is not active"),
            ));
        }
        let now = SystemTime::now();
        rec.kind = Kind::Committed;
        rec.created = now;
        rec.updated = now;
        rec.labels = labels.clone();
        rec.usage = usage;
        let txn = self.db()?.begin_write().map_err(store_err)?;
        {
            let mut table = txn.open_table(SNAPSHOTS).map_err(store_err)?;
            table.remove(key).map_err(store_err)?;
            table
                .insert(name, rec.encode().as_slice())
                .map_err(store_err)?;
        }
        txn.commit()
            .map_err(store_err)
            .map_err(|err| err.context("failed to commit snapshot"))
    }

    /// Removes `key` (refused while a child names it) and returns its record.
    pub fn remove(&self, key: &str) -> Result<Record, Error> {
        let txn = self.db()?.begin_write().map_err(store_err)?;
        let rec = {
            let mut table = txn.open_table(SNAPSHOTS).map_err(store_err)?;
            let rec = match table.get(key).map_err(store_err)? {
                Some(v) => Record::decode(v.value())?,
                None => return Err(Error::wrapped(Class::NotFound, format!("snapshot {key}"))),
            };
            for row in table.iter().map_err(store_err)? {
                let (_, value) = row.map_err(store_err)?;
                if Record::decode(value.value())?.parent == key {
                    return Err(Error::wrapped(
                        Class::FailedPrecondition,
                        "cannot remove snapshot with child",
                    ));
                }
            }
            table.remove(key).map_err(store_err)?;
            rec
        };
        txn.commit()
            .map_err(store_err)
            .map_err(|err| err.context("failed to remove"))?;
        Ok(rec)
    }

    /// Updates labels by field paths (`labels`, `labels.<k>`; none replaces them all).
    pub fn update(&self, info: &Info, paths: &[String]) -> Result<Info, Error> {
        let mut rec = self.must_get(&info.name)?;
        crate::labels::update_labels(&mut rec.labels, &info.labels, paths).map_err(|path| {
            Error::wrapped(
                Class::InvalidArgument,
                format!("cannot update {path:?} field on snapshot {:?}", info.name),
            )
        })?;
        rec.updated = SystemTime::now();
        let txn = self.db()?.begin_write().map_err(store_err)?;
        txn.open_table(SNAPSHOTS)
            .map_err(store_err)?
            .insert(info.name.as_str(), rec.encode().as_slice())
            .map_err(store_err)?;
        txn.commit().map_err(store_err)?;
        Ok(rec.info(&info.name))
    }

    /// Every record, in key order.
    pub fn list(&self) -> Result<Vec<(String, Record)>, Error> {
        // No file yet: no snapshot was ever made (and a listing makes no file).
        let Some(db) = self.db.existing().map_err(|e| store_err(*e))? else {
            return Ok(Vec::new());
        };
        let txn = db.begin_read().map_err(store_err)?;
        let table = txn.open_table(SNAPSHOTS).map_err(store_err)?;
        let mut out = Vec::new();
        for row in table.iter().map_err(store_err)? {
            let (key, value) = row.map_err(store_err)?;
            out.push((key.value().to_string(), Record::decode(value.value())?));
        }
        Ok(out)
    }

    /// The ids of every record.
    pub fn ids(&self) -> Result<HashSet<u64>, Error> {
        Ok(self.list()?.into_iter().map(|(_, rec)| rec.id).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(_: u64, _: &[u64]) -> Result<(), Error> {
        Ok(())
    }

    #[test]
    fn ids_chain_and_records_survive_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("metadata.redb");
        let none = BTreeMap::new();
        {
            let store = Store::new(path.clone());
            let a = store
                .create(Kind::Active, "a", "", &none, ok, |_| {})
                .expect("a");
            assert_eq!((a.record.id, a.parent_ids.len()), (1, 0));
            store
                .commit("a-c", "a", Usage { size: 7, inodes: 2 }, &none)
                .expect("commit");
            store
                .create(Kind::Active, "b", "a-c", &none, ok, |_| {})
                .expect("b");
            store
                .commit("b-c", "b", Usage::default(), &none)
                .expect("commit");
            let c = store
                .create(Kind::View, "c", "b-c", &none, ok, |_| {})
                .expect("c");
            assert_eq!((c.record.id, c.parent_ids), (3, vec![2, 1]));
        }
        let store = Store::new(path);
        let c = store.snapshot("c").expect("c");
        assert_eq!(c.parent_ids, [2, 1]);
        assert_eq!(store.must_get("a-c").expect("a-c").usage.size, 7);
        assert_eq!(store.ids().expect("ids"), HashSet::from([1, 2, 3]));
        let err = store.remove("b-c").expect_err("has a child");
        assert_eq!(err.class(), Class::FailedPrecondition);
        assert_eq!(store.remove("c").expect("remove").id, 3);
    }

    #[test]
    fn a_failed_build_leaves_no_record() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::new(dir.path().join("m.redb"));
        let err = store
            .create(
                Kind::Active,
                "k",
                "",
                &BTreeMap::new(),
                |_, _| Err(Error::unknown("disk full")),
                |_| {},
            )
            .expect_err("build fails");
        assert_eq!(err.message(), "disk full");
        assert!(store.get("k").expect("get").is_none());
        let err = store
            .create(Kind::Active, "k", "nope", &BTreeMap::new(), ok, |_| {})
            .expect_err("missing parent");
        assert_eq!(err.class(), Class::NotFound);
    }
}
