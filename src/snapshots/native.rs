//! `io.containerd.snapshotter.v1.native`: every active snapshot is a full directory copy of
//! its parent, mounted with a bind mount.
//!
//! Layout under the plugin root: `snapshots/<id>/` per snapshot that owns a directory, and
//! `metadata.redb` holding key → id, kind, parent, times and labels. A new directory is
//! built under a `new-*` temporary name and renamed to its id before the record commits,
//! so a crash leaves at worst a stray `new-*` directory (removed at the next open), never a
//! record without its directory. Views of a committed parent share the parent's directory
//! read-only, as containerd's native snapshotter does.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use parking_lot::Mutex;
use redb::{Database, ReadableTable, TableDefinition};

use super::{Info, Kind, Mount, Snapshotter, Usage};
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
#[derive(Debug, Clone)]
struct Record {
    id: u64,
    kind: Kind,
    parent: String,
    created: SystemTime,
    updated: SystemTime,
    labels: BTreeMap<String, String>,
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
        })
    }

    fn info(&self, key: &str) -> Info {
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

fn store_err(e: impl Into<redb::Error>) -> Error {
    Error::new(Class::Unknown, format!("snapshot metadata: {}", e.into()))
}

fn io_err(what: impl std::fmt::Display) -> impl FnOnce(io::Error) -> Error {
    move |err| Error::from(err).context(what)
}

/// The native snapshotter; see the module documentation.
pub struct Native {
    root: PathBuf,
    /// `metadata.redb`, opened on first use: creating the file costs several milliseconds
    /// of start-up that a daemon which never touches snapshots should not pay.
    db: DbFile,
    /// Serialises directory work with the records that describe it.
    lock: Mutex<()>,
}

impl Native {
    /// Opens (creating) the snapshotter at `root`; removes directories a crash left behind.
    pub fn open(root: &Path) -> Result<Native, Error> {
        let dir = root.join("snapshots");
        fs::create_dir_all(&dir).map_err(io_err(format!("create {}", dir.display())))?;
        for entry in fs::read_dir(&dir).map_err(io_err("read snapshots"))? {
            let entry = entry.map_err(io_err("read snapshots"))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("new-") || name.starts_with("rm-") {
                log::info!("removing leftover snapshot directory {name}");
                let _ = fs::remove_dir_all(entry.path());
            }
        }
        Ok(Native {
            root: root.to_path_buf(),
            db: DbFile::new(root.join("metadata.redb"), tables),
            lock: Mutex::new(()),
        })
    }

    /// The records' database, opened (and created) on first use.
    fn db(&self) -> Result<&Database, Error> {
        self.db.get().map_err(|e| store_err(*e))
    }

    /// The plugin root (exported as `root`).
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn dir(&self, id: u64) -> PathBuf {
        self.root.join("snapshots").join(id.to_string())
    }

    fn get(&self, key: &str) -> Result<Option<Record>, Error> {
        let txn = self.db()?.begin_read().map_err(store_err)?;
        let table = txn.open_table(SNAPSHOTS).map_err(store_err)?;
        let value = table.get(key).map_err(store_err)?;
        value.map(|v| Record::decode(v.value())).transpose()
    }

    fn must_get(&self, key: &str) -> Result<Record, Error> {
        self.get(key)?
            .ok_or_else(|| Error::wrapped(Class::NotFound, "snapshot does not exist"))
    }

    fn mounts_of(&self, rec: &Record) -> Result<Vec<Mount>, Error> {
        let source = if rec.parent.is_empty() || rec.kind == Kind::Active {
            self.dir(rec.id)
        } else {
            self.dir(self.must_get(&rec.parent)?.id)
        };
        let mode = if rec.kind == Kind::View { "ro" } else { "rw" };
        Ok(vec![Mount {
            r#type: "bind".into(),
            source: source.to_string_lossy().into_owned(),
            target: String::new(),
            options: vec!["rbind".into(), mode.into()],
        }])
    }

    fn create(
        &self,
        kind: Kind,
        key: &str,
        parent: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<Vec<Mount>, Error> {
        if key.is_empty() {
            return Err(Error::invalid_argument(
                "snapshot key must not be empty: invalid argument",
            ));
        }
        let _guard = self.lock.lock();
        if self.get(key)?.is_some() {
            return Err(Error::wrapped(
                Class::AlreadyExists,
                format!("snapshot {key}"),
            ));
        }
        let parent_rec = if parent.is_empty() {
            None
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
            Some(rec)
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
        let owns_dir = kind == Kind::Active || parent_rec.is_none();
        if owns_dir {
            let temp = self.root.join("snapshots").join(format!("new-{id}"));
            let built = fs::create_dir(&temp)
                .and_then(|()| fs::set_permissions(&temp, fs::Permissions::from_mode(0o755)))
                .map_err(io_err("failed to create temp dir"))
                .and_then(|()| match &parent_rec {
                    Some(p) => {
                        copy_dir(&self.dir(p.id), &temp).map_err(io_err("copying of parent failed"))
                    }
                    None => Ok(()),
                })
                .and_then(|()| fs::rename(&temp, self.dir(id)).map_err(io_err("failed to rename")));
            if let Err(err) = built {
                let _ = fs::remove_dir_all(&temp);
                return Err(err.context("failed to create snapshot"));
            }
        }
        let now = SystemTime::now();
        let rec = Record {
            id,
            kind,
            parent: parent.to_string(),
            created: now,
            updated: now,
            labels: labels.clone(),
        };
        let stored = (|| {
            let mut table = txn.open_table(SNAPSHOTS).map_err(store_err)?;
            table
                .insert(key, rec.encode().as_slice())
                .map_err(store_err)?;
            Ok::<(), Error>(())
        })()
        .and_then(|()| txn.commit().map_err(store_err));
        if let Err(err) = stored {
            if owns_dir {
                let _ = fs::remove_dir_all(self.dir(id));
            }
            return Err(err);
        }
        self.mounts_of(&rec)
    }
}

impl Snapshotter for Native {
    fn stat(&self, key: &str) -> Result<Info, Error> {
        Ok(self.must_get(key)?.info(key))
    }

    fn update(&self, info: &Info, paths: &[String]) -> Result<Info, Error> {
        let _guard = self.lock.lock();
        let mut rec = self.must_get(&info.name)?;
        crate::labels::update_labels(&mut rec.labels, &info.labels, paths).map_err(|path| {
            Error::wrapped(
                Class::InvalidArgument,
                format!("cannot update {path:?} field on snapshot {:?}", info.name),
            )
        })?;
        rec.updated = SystemTime::now();
        let txn = self.db()?.begin_write().map_err(store_err)?;
        {
            let mut table = txn.open_table(SNAPSHOTS).map_err(store_err)?;
            table
                .insert(info.name.as_str(), rec.encode().as_slice())
                .map_err(store_err)?;
        }
        txn.commit().map_err(store_err)?;
        Ok(rec.info(&info.name))
    }

    fn usage(&self, key: &str) -> Result<Usage, Error> {
        let rec = self.must_get(key)?;
        let dir = self.dir(rec.id);
        if !dir.exists() {
            return Ok(Usage::default());
        }
        let mut usage = Usage::default();
        let mut seen = std::collections::HashSet::new();
        disk_usage(&dir, &mut usage, &mut seen).map_err(io_err("disk usage"))?;
        Ok(usage)
    }

    fn mounts(&self, key: &str) -> Result<Vec<Mount>, Error> {
        let rec = self
            .must_get(key)
            .map_err(|err| err.context("failed to get snapshot mount"))?;
        self.mounts_of(&rec)
    }

    fn prepare(
        &self,
        key: &str,
        parent: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<Vec<Mount>, Error> {
        self.create(Kind::Active, key, parent, labels)
    }

    fn view(
        &self,
        key: &str,
        parent: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<Vec<Mount>, Error> {
        self.create(Kind::View, key, parent, labels)
    }

    fn commit(
        &self,
        name: &str,
        key: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<(), Error> {
        let _guard = self.lock.lock();
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

    fn remove(&self, key: &str) -> Result<(), Error> {
        let _guard = self.lock.lock();
        let rec = self
            .get(key)?
            .ok_or_else(|| Error::wrapped(Class::NotFound, format!("snapshot {key}")))?;
        let txn = self.db()?.begin_write().map_err(store_err)?;
        {
            let mut table = txn.open_table(SNAPSHOTS).map_err(store_err)?;
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
        }
        // Out of the way first, so a crash between the two leaves only an `rm-` leftover.
        let dir = self.dir(rec.id);
        let doomed = self.root.join("snapshots").join(format!("rm-{}", rec.id));
        let owned = dir.exists();
        if owned {
            fs::rename(&dir, &doomed).map_err(io_err("failed to rename"))?;
        }
        if let Err(err) = txn.commit() {
            if owned {
                let _ = fs::rename(&doomed, &dir);
            }
            return Err(store_err(err).context("failed to remove"));
        }
        if owned {
            if let Err(err) = fs::remove_dir_all(&doomed) {
                log::warn!("failed to remove {}: {err}", doomed.display());
            }
        }
        Ok(())
    }

    fn list(&self) -> Result<Vec<Info>, Error> {
        // No file yet: no snapshot was ever made (and a listing makes no file).
        let Some(db) = self.db.existing().map_err(|e| store_err(*e))? else {
            return Ok(Vec::new());
        };
        let txn = db.begin_read().map_err(store_err)?;
        let table = txn.open_table(SNAPSHOTS).map_err(store_err)?;
        let mut out = Vec::new();
        for row in table.iter().map_err(store_err)? {
            let (key, value) = row.map_err(store_err)?;
            out.push(Record::decode(value.value())?.info(key.value()));
        }
        Ok(out)
    }
}

/// Copies the tree under `src` into the existing directory `dst`: files, directories and
/// symlinks with their modes, times and (when permitted) owners; hard links inside the
/// tree stay linked. Special files are skipped with a warning.
pub fn copy_dir(src: &Path, dst: &Path) -> io::Result<()> {
    let mut links = std::collections::HashMap::new();
    copy_tree(src, dst, &mut links)?;
    copy_attrs(&fs::symlink_metadata(src)?, dst)
}

fn copy_tree(
    src: &Path,
    dst: &Path,
    links: &mut std::collections::HashMap<(u64, u64), PathBuf>,
) -> io::Result<()> {
    let mut entries: Vec<_> = fs::read_dir(src)?.collect::<io::Result<_>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let from = entry.path();
        let to = dst.join(entry.file_name());
        let meta = fs::symlink_metadata(&from)?;
        let ft = meta.file_type();
        if ft.is_dir() {
            fs::create_dir(&to)?;
            copy_tree(&from, &to, links)?;
            copy_attrs(&meta, &to)?;
        } else if ft.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(&from)?, &to)?;
            let _ = std::os::unix::fs::lchown(&to, Some(meta.uid()), Some(meta.gid()));
        } else if ft.is_file() {
            if meta.nlink() > 1 {
                if let Some(first) = links.get(&(meta.dev(), meta.ino())) {
                    fs::hard_link(first, &to)?;
                    continue;
                }
                links.insert((meta.dev(), meta.ino()), to.clone());
            }
            fs::copy(&from, &to)?;
            copy_attrs(&meta, &to)?;
        } else {
            log::warn!("not copying special file {}", from.display());
        }
    }
    Ok(())
}

fn copy_attrs(meta: &fs::Metadata, to: &Path) -> io::Result<()> {
    // Ownership only sticks for root; anyone else keeps their own.
    let _ = std::os::unix::fs::lchown(to, Some(meta.uid()), Some(meta.gid()));
    fs::set_permissions(to, fs::Permissions::from_mode(meta.mode() & 0o7777))?;
    let times = fs::FileTimes::new()
        .set_accessed(meta.accessed()?)
        .set_modified(meta.modified()?);
    fs::File::open(to)?.set_times(times)
}

pub(super) fn disk_usage(
    dir: &Path,
    usage: &mut Usage,
    seen: &mut std::collections::HashSet<(u64, u64)>,
) -> io::Result<()> {
    let meta = fs::symlink_metadata(dir)?;
    if seen.insert((meta.dev(), meta.ino())) {
        usage.inodes += 1;
        usage.size += (meta.blocks() * 512) as i64;
    }
    if meta.is_dir() {
        for entry in fs::read_dir(dir)? {
            disk_usage(&entry?.path(), usage, seen)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open() -> (tempfile::TempDir, Native) {
        let dir = tempfile::tempdir().unwrap();
        let n = Native::open(dir.path()).unwrap();
        (dir, n)
    }

    fn source(mounts: &[Mount]) -> PathBuf {
        assert_eq!(mounts.len(), 1);
        assert_eq!(mounts[0].r#type, "bind");
        PathBuf::from(&mounts[0].source)
    }

    #[test]
    fn prepare_commit_view_and_copies() {
        let (_dir, n) = open();
        let none = BTreeMap::new();
        let m = n.prepare("base", "", &none).unwrap();
        assert_eq!(m[0].options, ["rbind", "rw"]);
        let base = source(&m);
        fs::write(base.join("a"), "one").unwrap();
        fs::create_dir(base.join("d")).unwrap();
        std::os::unix::fs::symlink("a", base.join("link")).unwrap();
        n.commit("base-c", "base", &none).unwrap();
        assert_eq!(n.stat("base-c").unwrap().kind, Kind::Committed);
        assert_eq!(
            n.stat("base").unwrap_err().class(),
            Class::NotFound,
            "the active key is gone"
        );

        let child = source(&n.prepare("child", "base-c", &none).unwrap());
        assert_eq!(fs::read_to_string(child.join("a")).unwrap(), "one");
        assert_eq!(fs::read_link(child.join("link")).unwrap(), Path::new("a"));
        fs::write(child.join("a"), "two").unwrap();
        assert_eq!(fs::read_to_string(base.join("a")).unwrap(), "one");

        // A view of a committed parent shares the parent's directory read-only.
        let view = n.view("v", "base-c", &none).unwrap();
        assert_eq!(view[0].options, ["rbind", "ro"]);
        assert_eq!(source(&view), base);
        assert_eq!(n.stat("v").unwrap().parent, "base-c");
        assert!(n.usage("child").unwrap().inodes >= 4);

        let keys: Vec<String> = n.list().unwrap().into_iter().map(|i| i.name).collect();
        assert_eq!(keys, ["base-c", "child", "v"]);
    }

    #[test]
    fn errors_match_containerds_storage() {
        let (dir, n) = open();
        let none = BTreeMap::new();
        n.prepare("a", "", &none).unwrap();
        assert_eq!(
            n.prepare("a", "", &none).unwrap_err().message(),
            "snapshot a: already exists"
        );
        let err = n.prepare("b", "nope", &none).unwrap_err();
        assert_eq!(err.class(), Class::NotFound);
        let err = n.prepare("b", "a", &none).unwrap_err();
        assert_eq!(err.class(), Class::InvalidArgument, "{}", err.message());
        n.commit("a-c", "a", &none).unwrap();
        n.view("v", "a-c", &none).unwrap();
        let err = n.commit("x", "v", &none).unwrap_err();
        assert_eq!(err.class(), Class::FailedPrecondition);
        let err = n.remove("a-c").unwrap_err();
        assert_eq!(
            err.message(),
            "cannot remove snapshot with child: failed precondition"
        );
        n.remove("v").unwrap();
        n.remove("a-c").unwrap();
        assert_eq!(n.remove("a-c").unwrap_err().class(), Class::NotFound);
        assert_eq!(
            fs::read_dir(dir.path().join("snapshots")).unwrap().count(),
            0
        );
        let mut info = Info {
            name: "zz".into(),
            parent: String::new(),
            kind: Kind::Active,
            created: SystemTime::now(),
            updated: SystemTime::now(),
            labels: BTreeMap::new(),
        };
        n.prepare("zz", "", &none).unwrap();
        info.labels.insert("k".into(), "v".into());
        let updated = n.update(&info, &["labels.k".to_string()]).unwrap();
        assert_eq!(updated.labels["k"], "v");
        let err = n.update(&info, &["parent".to_string()]).unwrap_err();
        assert_eq!(err.class(), Class::InvalidArgument);
    }

    #[test]
    fn leftovers_of_a_crash_are_cleaned_and_records_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let n = Native::open(dir.path()).unwrap();
            n.prepare("keep", "", &BTreeMap::new()).unwrap();
        }
        fs::create_dir(dir.path().join("snapshots/new-99")).unwrap();
        let n = Native::open(dir.path()).unwrap();
        assert!(!dir.path().join("snapshots/new-99").exists());
        assert_eq!(n.stat("keep").unwrap().kind, Kind::Active);
        assert!(source(&n.mounts("keep").unwrap()).exists());
    }
}
