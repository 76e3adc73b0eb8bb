//! Namespaced snapshots over the snapshotter backends.
//!
//! Each namespace has its own keys per snapshotter; the backend sees
//! `<namespace>/<id>/<key>`, `id` from a store-wide counter, so two namespaces (or a key
//! removed and created again before garbage collection ran) never collide in the backend.
//! Records live in the `snapshots` table: (snapshotter, namespace, key) → backend key,
//! parent key, times, labels; the kind is the backend's.
//!
//! Creating and committing call the backend while holding the write transaction, so the
//! record and the backend state change together: a backend failure leaves no record, and a
//! failed commit of the transaction undoes the backend change. Removal deletes the record
//! only; the backend snapshot goes at the next garbage collection, which removes every
//! backend snapshot in the `<ns>/<id>/<key>` form that no record names.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use redb::{ReadableTable, WriteTransaction};

use super::leases::lease_exists;
use super::{
    ensure_namespace, update_labels, validate_labels, Db, Metadata, StoreResult, COUNTERS, LEASES,
    LEASE_RESOURCES, SNAPSHOTS,
};
use crate::codec::{Decoder, Encoder};
use crate::errdefs::{Class, Error};
use crate::filters::{labels_field, Filter};
use crate::scope::Scope;
use crate::snapshots::{Info, Mount, Snapshotter, Usage};

/// One namespace's record of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotRecord {
    pub backend_key: String,
    pub parent: String,
    pub created: SystemTime,
    pub updated: SystemTime,
    pub labels: BTreeMap<String, String>,
}

impl SnapshotRecord {
    fn encode(&self) -> Vec<u8> {
        Encoder::new()
            .str(&self.backend_key)
            .str(&self.parent)
            .time(self.created)
            .time(self.updated)
            .labels(&self.labels)
            .finish()
    }

    pub(super) fn decode(bytes: &[u8]) -> Result<Self, Error> {
        let mut d = Decoder::new(bytes);
        Ok(SnapshotRecord {
            backend_key: d.str()?,
            parent: d.str()?,
            created: d.time()?,
            updated: d.time()?,
            labels: d.labels()?,
        })
    }
}

fn does_not_exist(what: &str, key: &str) -> Error {
    Error::wrapped(Class::NotFound, format!("{what} {key} does not exist"))
}

/// The namespace of a backend key made by this store, if it is one.
pub fn backend_namespace(backend_key: &str) -> Option<&str> {
    let mut parts = backend_key.splitn(3, '/');
    let ns = parts.next()?;
    let id = parts.next()?;
    parts.next()?;
    (!ns.is_empty() && !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit())).then_some(ns)
}

fn next_id(txn: &WriteTransaction) -> Result<u64, Error> {
    let mut counters = txn.open_table(COUNTERS).store()?;
    let next = counters
        .get("snapshots")
        .store()?
        .map(|v| v.value())
        .unwrap_or(0)
        + 1;
    counters.insert("snapshots", next).store()?;
    Ok(next)
}

fn get(
    txn: &WriteTransaction,
    sn: &str,
    ns: &str,
    key: &str,
) -> Result<Option<SnapshotRecord>, Error> {
    let table = txn.open_table(SNAPSHOTS).store()?;
    let value = table.get((sn, ns, key)).store()?;
    value.map(|v| SnapshotRecord::decode(v.value())).transpose()
}

fn hold(
    txn: &WriteTransaction,
    sn: &str,
    ns: &str,
    key: &str,
    lease: Option<&str>,
) -> Result<(), Error> {
    if let Some(id) = lease {
        lease_exists(&txn.open_table(LEASES).store()?, ns, id)?;
        let rtype = format!("snapshots/{sn}");
        txn.open_table(LEASE_RESOURCES)
            .store()?
            .insert((ns, id, rtype.as_str(), key), ())
            .store()?;
    }
    Ok(())
}

impl Db {
    /// The record of `key` in (`sn`, `ns`).
    pub fn snapshot(&self, sn: &str, ns: &str, key: &str) -> Result<SnapshotRecord, Error> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(SNAPSHOTS).store()?;
        let value = table.get((sn, ns, key)).store()?;
        match value {
            Some(v) => SnapshotRecord::decode(v.value()),
            None => Err(does_not_exist("snapshot", key)),
        }
    }

    /// Every record of (`sn`, `ns`), by key.
    pub fn list_snapshots(
        &self,
        sn: &str,
        ns: &str,
    ) -> Result<Vec<(String, SnapshotRecord)>, Error> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(SNAPSHOTS).store()?;
        let mut out = Vec::new();
        for row in table.range((sn, ns, "")..).store()? {
            let (k, v) = row.store()?;
            let (s, n, key) = k.value();
            if s != sn || n != ns {
                break;
            }
            out.push((key.to_string(), SnapshotRecord::decode(v.value())?));
        }
        Ok(out)
    }
}

impl Metadata {
    fn snapshotter(&self, sn: &str) -> Result<&Arc<dyn Snapshotter>, Error> {
        if sn.is_empty() {
            return Err(Error::invalid_argument("snapshotter argument missing"));
        }
        self.snapshotters
            .get(sn)
            .ok_or_else(|| Error::invalid_argument(format!("snapshotter not loaded: {sn}")))
    }

    /// The names of the snapshotters the store knows.
    pub fn snapshotter_names(&self) -> Vec<String> {
        self.snapshotters.keys().cloned().collect()
    }

    fn info_of(&self, sn: &str, key: &str, rec: &SnapshotRecord) -> Result<Info, Error> {
        let backend = self.snapshotter(sn)?.stat(&rec.backend_key)?;
        Ok(Info {
            name: key.to_string(),
            parent: rec.parent.clone(),
            kind: backend.kind,
            created: rec.created,
            updated: rec.updated,
            labels: rec.labels.clone(),
        })
    }

    pub fn snapshot_stat(&self, scope: &Scope, sn: &str, key: &str) -> Result<Info, Error> {
        let ns = scope.namespace();
        crate::identifiers::validate(ns)?;
        self.snapshotter(sn)?;
        let rec = self.db.snapshot(sn, ns, key)?;
        self.info_of(sn, key, &rec)
    }

    pub fn snapshot_usage(&self, scope: &Scope, sn: &str, key: &str) -> Result<Usage, Error> {
        let ns = scope.namespace();
        crate::identifiers::validate(ns)?;
        let backend = self.snapshotter(sn)?;
        let rec = self.db.snapshot(sn, ns, key)?;
        backend.usage(&rec.backend_key)
    }

    pub fn snapshot_mounts(&self, scope: &Scope, sn: &str, key: &str) -> Result<Vec<Mount>, Error> {
        let ns = scope.namespace();
        crate::identifiers::validate(ns)?;
        let backend = self.snapshotter(sn)?;
        let rec = self.db.snapshot(sn, ns, key)?;
        backend.mounts(&rec.backend_key)
    }

    /// Prepare (or, with `view`, View) `key` on `parent`, held by the scope's lease if it
    /// has one. The arguments are exactly the request's fields.
    pub fn snapshot_create(
        &self,
        scope: &Scope,
        sn: &str,
        key: &str,
        parent: &str,
        labels: &BTreeMap<String, String>,
        view: bool,
    ) -> Result<Vec<Mount>, Error> {
        let ns = scope.namespace();
        crate::identifiers::validate(ns)?;
        let backend = self.snapshotter(sn)?.clone();
        if key.is_empty() {
            return Err(Error::invalid_argument(
                "snapshot key must not be empty: invalid argument",
            ));
        }
        validate_labels(labels)?;
        // A collection must not run between the backend snapshot's creation and its record's
        // commit: it would find the backend snapshot unreferenced and remove it.
        let _sweep = self.sweep.read();
        let txn = self.db.db.begin_write()?;
        ensure_namespace(&txn, ns)?;
        if get(&txn, sn, ns, key)?.is_some() {
            return Err(Error::wrapped(
                Class::AlreadyExists,
                format!("snapshot {key:?}"),
            ));
        }
        let parent_bkey = if parent.is_empty() {
            String::new()
        } else {
            get(&txn, sn, ns, parent)?
                .ok_or_else(|| does_not_exist("parent snapshot", parent))?
                .backend_key
        };
        let bkey = format!("{ns}/{}/{key}", next_id(&txn)?);
        let now = SystemTime::now();
        let rec = SnapshotRecord {
            backend_key: bkey.clone(),
            parent: parent.to_string(),
            created: now,
            updated: now,
            labels: labels
                .iter()
                .filter(|(_, v)| !v.is_empty())
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        };
        txn.open_table(SNAPSHOTS)
            .store()?
            .insert((sn, ns, key), rec.encode().as_slice())
            .store()?;
        hold(&txn, sn, ns, key, scope.lease())?;
        let mounts = if view {
            backend.view(&bkey, &parent_bkey, &BTreeMap::new())?
        } else {
            backend.prepare(&bkey, &parent_bkey, &BTreeMap::new())?
        };
        if let Err(err) = self.db.commit(txn, false) {
            if let Err(undo) = backend.remove(&bkey) {
                log::warn!("failed to undo snapshot {bkey}: {undo}");
            }
            return Err(err);
        }
        Ok(mounts)
    }

    /// Commits active snapshot `key` as `name` with `labels`, held by the scope's lease if
    /// it has one.
    pub fn snapshot_commit(
        &self,
        scope: &Scope,
        sn: &str,
        name: &str,
        key: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<(), Error> {
        let ns = scope.namespace();
        crate::identifiers::validate(ns)?;
        let backend = self.snapshotter(sn)?.clone();
        if name.is_empty() {
            return Err(Error::invalid_argument(
                "snapshot name must not be empty: invalid argument",
            ));
        }
        validate_labels(labels)?;
        // As in snapshot_create: no collection between the backend commit and the record's.
        let _sweep = self.sweep.read();
        let txn = self.db.db.begin_write()?;
        if get(&txn, sn, ns, name)?.is_some() {
            return Err(Error::wrapped(
                Class::AlreadyExists,
                format!("snapshot {name:?}"),
            ));
        }
        let active = get(&txn, sn, ns, key)?.ok_or_else(|| does_not_exist("snapshot", key))?;
        let bname = format!("{ns}/{}/{name}", next_id(&txn)?);
        let now = SystemTime::now();
        let rec = SnapshotRecord {
            backend_key: bname.clone(),
            parent: active.parent.clone(),
            created: now,
            updated: now,
            labels: labels
                .iter()
                .filter(|(_, v)| !v.is_empty())
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        };
        {
            let mut table = txn.open_table(SNAPSHOTS).store()?;
            table.remove((sn, ns, key)).store()?;
            table
                .insert((sn, ns, name), rec.encode().as_slice())
                .store()?;
        }
        hold(&txn, sn, ns, name, scope.lease())?;
        backend.commit(&bname, &active.backend_key, &BTreeMap::new())?;
        // The committed backend snapshot cannot be turned back into the active one; if the
        // record does not commit, garbage collection removes the orphan.
        self.db.commit(txn, false)
    }

    /// Removes `key`'s record; the backend snapshot goes at the next collection.
    pub fn snapshot_remove(&self, scope: &Scope, sn: &str, key: &str) -> Result<(), Error> {
        let ns = scope.namespace();
        crate::identifiers::validate(ns)?;
        self.snapshotter(sn)?;
        let txn = self.db.db.begin_write()?;
        {
            let mut table = txn.open_table(SNAPSHOTS).store()?;
            if table.get((sn, ns, key)).store()?.is_none() {
                return Err(does_not_exist("snapshot", key));
            }
            for row in table.range((sn, ns, "")..).store()? {
                let (k, v) = row.store()?;
                let (s, n, _) = k.value();
                if s != sn || n != ns {
                    break;
                }
                if SnapshotRecord::decode(v.value())?.parent == key {
                    return Err(Error::wrapped(
                        Class::FailedPrecondition,
                        "cannot remove snapshot with child",
                    ));
                }
            }
            table.remove((sn, ns, key)).store()?;
        }
        self.db.commit(txn, true)
    }

    /// Updates labels of `info.name` by field paths (`labels`, `labels.<k>`).
    pub fn snapshot_update(
        &self,
        scope: &Scope,
        sn: &str,
        info: &Info,
        paths: &[String],
    ) -> Result<Info, Error> {
        let ns = scope.namespace();
        crate::identifiers::validate(ns)?;
        self.snapshotter(sn)?;
        if info.name.is_empty() {
            return Err(Error::invalid_argument(
                "snapshot name is required: invalid argument",
            ));
        }
        let txn = self.db.db.begin_write()?;
        let mut rec =
            get(&txn, sn, ns, &info.name)?.ok_or_else(|| does_not_exist("snapshot", &info.name))?;
        update_labels(&mut rec.labels, &info.labels, paths).map_err(|path| {
            Error::wrapped(
                Class::InvalidArgument,
                format!("cannot update {path:?} field on snapshot {:?}", info.name),
            )
        })?;
        validate_labels(&rec.labels)?;
        rec.updated = SystemTime::now();
        txn.open_table(SNAPSHOTS)
            .store()?
            .insert((sn, ns, info.name.as_str()), rec.encode().as_slice())
            .store()?;
        self.db.commit(txn, false)?;
        self.info_of(sn, &info.name, &rec)
    }

    /// The snapshots of `ns` on `sn` matching `filters` (`kind`, `name`, `parent`, `labels.*`).
    pub fn snapshot_list(
        &self,
        scope: &Scope,
        sn: &str,
        filters: &[String],
    ) -> Result<Vec<Info>, Error> {
        let ns = scope.namespace();
        crate::identifiers::validate(ns)?;
        self.snapshotter(sn)?;
        let filter = Filter::parse_all(filters)?;
        let mut out = Vec::new();
        for (key, rec) in self.db.list_snapshots(sn, ns)? {
            let info = match self.info_of(sn, &key, &rec) {
                Ok(info) => info,
                Err(err) if err.class() == Class::NotFound => continue,
                Err(err) => return Err(err),
            };
            let labels = info.labels.clone().into_iter().collect();
            let wanted =
                filter.matches(&|path: &[String]| match path.first().map(String::as_str) {
                    Some("kind") if path.len() == 1 => Some(info.kind.as_str().to_string()),
                    Some("name") if path.len() == 1 => Some(info.name.clone()),
                    Some("parent") if path.len() == 1 => Some(info.parent.clone()),
                    Some("labels") => labels_field(&labels, path),
                    _ => None,
                });
            if wanted {
                out.push(info);
            }
        }
        Ok(out)
    }

    /// Removes the backend snapshots of `sn` that no record names, children before parents,
    /// then runs the backend's cleanup where something was removed.
    pub(super) fn sweep_snapshots(&self, referenced: &std::collections::BTreeSet<String>) -> usize {
        let mut removed = 0;
        for (sn, backend) in &self.snapshotters {
            let removed_before = removed;
            let listed = match backend.list() {
                Ok(list) => list,
                Err(err) => {
                    log::warn!("garbage collection could not list snapshotter {sn}: {err}");
                    continue;
                }
            };
            let mut doomed: Vec<Info> = listed
                .into_iter()
                .filter(|i| backend_namespace(&i.name).is_some() && !referenced.contains(&i.name))
                .collect();
            // Leaves first: repeat while something could be removed.
            loop {
                let parents: std::collections::HashSet<String> =
                    doomed.iter().map(|i| i.parent.clone()).collect();
                let (leaves, rest): (Vec<Info>, Vec<Info>) =
                    doomed.into_iter().partition(|i| !parents.contains(&i.name));
                if leaves.is_empty() {
                    break;
                }
                for leaf in &leaves {
                    log::debug!(
                        "schedule snapshotter cleanup snapshotter={sn} key={}",
                        leaf.name
                    );
                    match backend.remove(&leaf.name) {
                        Ok(()) => removed += 1,
                        Err(err) => log::warn!("failed to remove snapshot {}: {err}", leaf.name),
                    }
                }
                doomed = rest;
            }
            if removed > removed_before {
                // Backends that defer freeing space (overlayfs) free it now.
                match backend.cleanup() {
                    Ok(()) => {}
                    Err(err) if err.class() == Class::NotImplemented => {}
                    Err(err) => log::warn!("snapshotter {sn} cleanup failed: {err}"),
                }
            }
        }
        removed
    }

    /// The backend's own cleanup.
    pub fn snapshot_cleanup(&self, sn: &str) -> Result<(), Error> {
        self.snapshotter(sn)?.cleanup()
    }
}
