//! `io.containerd.snapshotter.v1.overlayfs`: every snapshot is one overlayfs layer.
//!
//! Layout under the plugin root (containerd's): `metadata.redb` (the records, see
//! `super::storage`) and `snapshots/<id>/fs` (the layer: an active snapshot's upper
//! directory) plus `snapshots/<id>/work` (overlay's work directory, active snapshots only).
//! Ids are numbers from a counter; keys never reach the file system. A new snapshot's
//! directories are built under `snapshots/new-<id>` and renamed into place before its
//! record commits.
//!
//! Mounts, as containerd builds them ([`Overlay::mounts_of`]):
//! - no parent: a `bind` of the snapshot's own `fs` (`rw`, or `ro` for a view);
//! - a view of exactly one parent: a read-only `bind` of the parent's `fs`;
//! - an active snapshot with parents: `overlay` with `workdir`, `upperdir` and `lowerdir`
//!   (nearest parent first), then the configured options (`index=off` where the kernel has
//!   the index feature, `userxattr` inside a user namespace);
//! - a view of several parents: a read-only `overlay` of `lowerdir`s only.
//!
//! Removal drops the record; the directories go at the next cleanup (which garbage
//! collection runs), or at once with `sync_remove`. Calls run on the caller's thread;
//! one lock serialises changes with the directory work that goes with them.

pub mod check;
pub mod plugin;

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use super::storage::{Snapshot, Store};
use super::{Info, Kind, Mount, Snapshotter, Usage};
use crate::errdefs::Error;

/// The label that names a snapshot's upper directory when `upperdir_label` is on.
pub const UPPERDIR_LABEL: &str = "containerd.io/snapshot/overlay.upperdir";

/// `[plugins."io.containerd.snapshotter.v1.overlayfs"]`, containerd's keys and defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct OverlayConfig {
    /// The plugin root; empty for `<root>/io.containerd.snapshotter.v1.overlayfs`.
    pub root_path: String,
    /// Adds [`UPPERDIR_LABEL`] to Stat, Update and List answers.
    pub upperdir_label: bool,
    /// Removes a snapshot's directories at Remove instead of at the next cleanup.
    pub sync_remove: bool,
    /// Accepted for compatibility: ctrd has no user-namespace remapping to fall back from.
    pub slow_chown: bool,
    /// Extra options for overlay mounts (never for bind mounts).
    pub mount_options: Vec<String>,
}

/// How an [`Overlay`] behaves, from its config and the kernel.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub upperdir_label: bool,
    pub sync_remove: bool,
    /// Appended to every overlay mount.
    pub mount_options: Vec<String>,
}

impl Options {
    /// The options for `root`: the configured ones plus what the kernel needs, as containerd
    /// adds them (`userxattr`, then `index=off`, each unless already given).
    pub fn for_root(config: &OverlayConfig, root: &Path) -> Options {
        let mut mount_options = config.mount_options.clone();
        if !has_option(&mount_options, "userxattr") && check::needs_userxattr(root) {
            mount_options.push("userxattr".into());
        }
        if !has_option(&mount_options, "index") && check::supports_index() {
            mount_options.push("index=off".into());
        }
        Options {
            upperdir_label: config.upperdir_label,
            sync_remove: config.sync_remove,
            mount_options,
        }
    }
}

/// Whether `key` is among `options`, bare or as `key=value`.
fn has_option(options: &[String], key: &str) -> bool {
    options
        .iter()
        .any(|o| o == key || o.split_once('=').is_some_and(|(k, _)| k == key))
}

fn io_err(what: impl std::fmt::Display) -> impl FnOnce(io::Error) -> Error {
    move |err| Error::from(err).context(what)
}

/// The overlayfs snapshotter; see the module documentation.
pub struct Overlay {
    root: PathBuf,
    store: Store,
    options: Options,
    /// Serialises changes with their directory work.
    lock: Mutex<()>,
}

impl Overlay {
    /// Opens (creating) the snapshotter at `root`. Whether overlay works there is the
    /// caller's check ([`check::unsupported`]).
    pub fn open(root: &Path, options: Options) -> Result<Overlay, Error> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(root.join("snapshots"))
            .map_err(io_err(format!("create {}", root.display())))?;
        Ok(Overlay {
            root: root.to_path_buf(),
            store: Store::new(root.join("metadata.redb")),
            options,
            lock: Mutex::new(()),
        })
    }

    /// The plugin root (exported as `root`).
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn snapshots_dir(&self) -> PathBuf {
        self.root.join("snapshots")
    }

    /// `snapshots/<id>/fs`: the layer, an active snapshot's upper directory.
    pub fn upper_path(&self, id: u64) -> PathBuf {
        self.snapshots_dir().join(id.to_string()).join("fs")
    }

    /// `snapshots/<id>/work`: overlay's work directory.
    pub fn work_path(&self, id: u64) -> PathBuf {
        self.snapshots_dir().join(id.to_string()).join("work")
    }

    fn path_text(path: PathBuf) -> String {
        path.to_string_lossy().into_owned()
    }

    /// The mounts of snapshot `id` of `kind` whose ancestors are `parent_ids` (nearest
    /// first); see the module documentation.
    pub fn mounts_of(&self, kind: Kind, id: u64, parent_ids: &[u64]) -> Vec<Mount> {
        let bind = |source: PathBuf, mode: &str| Mount {
            r#type: "bind".into(),
            source: Self::path_text(source),
            target: String::new(),
            options: vec![mode.into(), "rbind".into()],
        };
        let mut options = Vec::new();
        match (parent_ids, kind) {
            ([], Kind::View) => return vec![bind(self.upper_path(id), "ro")],
            ([], _) => return vec![bind(self.upper_path(id), "rw")],
            (_, Kind::Active) => {
                options.push(format!("workdir={}", self.work_path(id).display()));
                options.push(format!("upperdir={}", self.upper_path(id).display()));
            }
            ([parent], _) => return vec![bind(self.upper_path(*parent), "ro")],
            _ => {}
        }
        let lowers: Vec<String> = parent_ids
            .iter()
            .map(|p| Self::path_text(self.upper_path(*p)))
            .collect();
        options.push(format!("lowerdir={}", lowers.join(":")));
        options.extend(self.options.mount_options.iter().cloned());
        vec![Mount {
            r#type: "overlay".into(),
            source: "overlay".into(),
            target: String::new(),
            options,
        }]
    }

    fn with_label(&self, mut info: Info, id: u64) -> Info {
        if self.options.upperdir_label {
            info.labels
                .insert(UPPERDIR_LABEL.into(), Self::path_text(self.upper_path(id)));
        }
        info
    }

    fn create(
        &self,
        kind: Kind,
        key: &str,
        parent: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<Vec<Mount>, Error> {
        let _guard = self.lock.lock();
        let snapshot: Snapshot = self.store.create(
            kind,
            key,
            parent,
            labels,
            |id, parent_ids| self.build(kind, id, parent_ids),
            |id| {
                let _ = fs::remove_dir_all(self.snapshots_dir().join(id.to_string()));
            },
        )?;
        Ok(self.mounts_of(kind, snapshot.record.id, &snapshot.parent_ids))
    }

    /// Makes `snapshots/<id>/{fs,work}` under a temporary name and renames it into place.
    fn build(&self, kind: Kind, id: u64, parent_ids: &[u64]) -> Result<(), Error> {
        let temp = self.snapshots_dir().join(format!("new-{id}"));
        let built = (|| {
            fs::DirBuilder::new().mode(0o700).create(&temp)?;
            fs::DirBuilder::new().mode(0o755).create(temp.join("fs"))?;
            if kind == Kind::Active {
                fs::DirBuilder::new()
                    .mode(0o711)
                    .create(temp.join("work"))?;
            }
            // The new layer's root belongs to whoever owns the parent's.
            if let Some(parent) = parent_ids.first() {
                let meta = fs::metadata(self.upper_path(*parent))?;
                std::os::unix::fs::lchown(temp.join("fs"), Some(meta.uid()), Some(meta.gid()))?;
            }
            fs::rename(&temp, self.snapshots_dir().join(id.to_string()))
        })();
        if let Err(err) = built {
            let _ = fs::remove_dir_all(&temp);
            return Err(Error::from(err).context("failed to create prepare snapshot dir"));
        }
        Ok(())
    }

    /// Directories under `snapshots/` that no record owns.
    fn orphans(&self) -> Result<Vec<PathBuf>, Error> {
        let ids = self.store.ids()?;
        let mut out = Vec::new();
        for entry in fs::read_dir(self.snapshots_dir()).map_err(io_err("read snapshots"))? {
            let entry = entry.map_err(io_err("read snapshots"))?;
            let owned = entry
                .file_name()
                .to_str()
                .and_then(|name| name.parse::<u64>().ok())
                .is_some_and(|id| ids.contains(&id));
            if !owned {
                out.push(entry.path());
            }
        }
        Ok(out)
    }

    fn remove_dirs(dirs: Vec<PathBuf>) {
        for dir in dirs {
            if let Err(err) = fs::remove_dir_all(&dir) {
                log::warn!("failed to remove directory {}: {err}", dir.display());
            }
        }
    }
}

impl Snapshotter for Overlay {
    fn stat(&self, key: &str) -> Result<Info, Error> {
        let rec = self.store.must_get(key)?;
        Ok(self.with_label(rec.info(key), rec.id))
    }

    fn update(&self, info: &Info, paths: &[String]) -> Result<Info, Error> {
        let _guard = self.lock.lock();
        let updated = self.store.update(info, paths)?;
        let id = self.store.must_get(&info.name)?.id;
        Ok(self.with_label(updated, id))
    }

    fn usage(&self, key: &str) -> Result<Usage, Error> {
        let rec = self.store.must_get(key)?;
        if rec.kind != Kind::Active {
            return Ok(rec.usage);
        }
        let mut usage = Usage::default();
        let mut seen = std::collections::HashSet::new();
        super::native::disk_usage(&self.upper_path(rec.id), &mut usage, &mut seen)
            .map_err(io_err("disk usage"))?;
        Ok(usage)
    }

    fn mounts(&self, key: &str) -> Result<Vec<Mount>, Error> {
        let snapshot = self
            .store
            .snapshot(key)
            .map_err(|err| err.context("failed to get active mount"))?;
        Ok(self.mounts_of(
            snapshot.record.kind,
            snapshot.record.id,
            &snapshot.parent_ids,
        ))
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
        let rec = self.store.get(key)?;
        let mut usage = Usage::default();
        if let Some(rec) = rec.as_ref().filter(|r| r.kind == Kind::Active) {
            let mut seen = std::collections::HashSet::new();
            super::native::disk_usage(&self.upper_path(rec.id), &mut usage, &mut seen)
                .map_err(io_err("disk usage"))?;
        }
        self.store.commit(name, key, usage, labels)
    }

    fn remove(&self, key: &str) -> Result<(), Error> {
        let _guard = self.lock.lock();
        self.store
            .remove(key)
            .map_err(|err| err.context(format!("failed to remove snapshot {key}")))?;
        if self.options.sync_remove {
            Self::remove_dirs(self.orphans()?);
        }
        Ok(())
    }

    fn list(&self) -> Result<Vec<Info>, Error> {
        Ok(self
            .store
            .list()?
            .into_iter()
            .map(|(key, rec)| self.with_label(rec.info(&key), rec.id))
            .collect())
    }

    /// Removes the directories of removed snapshots (and of creations a crash cut short).
    fn cleanup(&self) -> Result<(), Error> {
        let orphans = {
            let _guard = self.lock.lock();
            let orphans = self.orphans()?;
            // Out of the way under the lock, so a new snapshot never meets a stale name.
            let mut doomed = Vec::new();
            for dir in orphans {
                let name = dir.file_name().map(|n| n.to_string_lossy().into_owned());
                match name {
                    Some(name) if !name.starts_with("rm-") => {
                        let target = self.snapshots_dir().join(format!("rm-{name}"));
                        match fs::rename(&dir, &target) {
                            Ok(()) => doomed.push(target),
                            Err(err) => {
                                log::warn!("failed to rename {}: {err}", dir.display())
                            }
                        }
                    }
                    _ => doomed.push(dir),
                }
            }
            doomed
        };
        Self::remove_dirs(orphans);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
