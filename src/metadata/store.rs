//! The metadata plugin's value: the database joined with the local content store, giving the
//! namespaced content store every service sees, and the collector garbage collection runs.
//!
//! Namespacing: a namespace sees a blob only through its own record in the database; the blob
//! bytes are shared between namespaces. Ingests live in the local store under the ref
//! `<namespace>/<ref>` (namespaces are identifiers, so they never contain `/`), which keeps the
//! refs of different namespaces apart and lets a listing pick one namespace's ingests.
//!
//! Sharing policy, as containerd's `content_sharing_policy`: with `shared` (the default),
//! a writer opened for an expected digest that another namespace already holds starts out
//! complete (offset = total = the blob's size) without touching the backend; committing it
//! records the blob in this namespace, and writing more first copies the blob into a fresh
//! ingest. With `isolated`, the namespace must write the bytes itself, and only then is the
//! existing blob recorded for it.
//!
//! Locking: a commit renames the blob into place and then records it; the collector's blob
//! sweep must not fall between the two, so commits hold [`Metadata::sweep`] shared and the
//! sweep holds it exclusively.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use parking_lot::RwLock;

use super::{Collector, ContentRecord, Db, Stats};
use crate::content::{self, Appended, BlobWriter, Digest, ReadAt, Status};
use crate::errdefs::{Class, Error};
use crate::filters::{labels_field, Filter};
use crate::scope::Scope;
use crate::snapshots::Snapshotter;

/// How long an ingest no lease holds survives garbage collection after its last write.
pub const INGEST_EXPIRY: Duration = Duration::from_secs(24 * 3600);

/// See the module documentation.
pub struct Metadata {
    pub db: Arc<Db>,
    content: Arc<dyn content::Backend>,
    pub(super) snapshotters: BTreeMap<String, Arc<dyn Snapshotter>>,
    policy: SharingPolicy,
    pub(super) sweep: RwLock<()>,
}

/// Whether namespaces share blobs they did not write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SharingPolicy {
    Shared,
    Isolated,
}

impl SharingPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            SharingPolicy::Shared => "shared",
            SharingPolicy::Isolated => "isolated",
        }
    }
}

fn check_namespace(ns: &str) -> Result<(), Error> {
    crate::identifiers::validate(ns)
}

fn parse_filters(filters: &[String]) -> Result<Filter, Error> {
    Ok(Filter::parse_all(filters)?)
}

impl Metadata {
    pub fn new(db: Arc<Db>, content: Arc<dyn content::Backend>, policy: SharingPolicy) -> Self {
        Metadata {
            db,
            content,
            snapshotters: BTreeMap::new(),
            policy,
            sweep: RwLock::new(()),
        }
    }

    /// Adds the snapshotters the namespaced snapshot calls reach, by name.
    pub fn with_snapshotters(
        mut self,
        snapshotters: BTreeMap<String, Arc<dyn Snapshotter>>,
    ) -> Self {
        self.snapshotters = snapshotters;
        self
    }

    /// The record of `digest` in `ns`; NotFound `content digest <d>: not found`.
    pub fn info(&self, scope: &Scope, digest: &Digest) -> Result<ContentRecord, Error> {
        let ns = scope.namespace();
        check_namespace(ns)?;
        self.db.content(ns, &digest.to_string())
    }

    /// Updates labels by field paths (`labels`, `labels.<k>`); see [`Db::update_content_labels`].
    pub fn update(
        &self,
        scope: &Scope,
        digest: &Digest,
        labels: BTreeMap<String, String>,
        paths: &[String],
    ) -> Result<ContentRecord, Error> {
        let ns = scope.namespace();
        check_namespace(ns)?;
        self.db
            .update_content_labels(ns, &digest.to_string(), labels, paths)
    }

    /// The records of `ns` matching `filters` (fields `digest`, `size`, `labels.*`).
    pub fn list(&self, scope: &Scope, filters: &[String]) -> Result<Vec<ContentRecord>, Error> {
        let ns = scope.namespace();
        check_namespace(ns)?;
        let filter = parse_filters(filters)?;
        let mut records = self.db.list_content(ns)?;
        records.retain(|rec| {
            let labels = rec.labels.clone().into_iter().collect();
            filter.matches(&|path: &[String]| match path.first().map(String::as_str) {
                Some("digest") if path.len() == 1 => Some(rec.digest.clone()),
                Some("size") if path.len() == 1 => Some(rec.size.to_string()),
                Some("labels") => labels_field(&labels, path),
                _ => None,
            })
        });
        Ok(records)
    }

    /// Removes `ns`'s record of `digest`; the blob goes at the next collection if no other
    /// namespace records it.
    pub fn delete(&self, scope: &Scope, digest: &Digest) -> Result<(), Error> {
        let ns = scope.namespace();
        check_namespace(ns)?;
        self.db.delete_content(ns, &digest.to_string())
    }

    /// Opens the blob of `digest` for reading, with its size.
    pub fn reader(&self, scope: &Scope, digest: &Digest) -> Result<(Box<dyn ReadAt>, i64), Error> {
        let rec = self.info(scope, digest)?;
        let file = self.content.reader(scope.namespace(), digest)?;
        Ok((file, rec.size))
    }

    /// The progress of `ns`'s ingest `ref_`.
    pub fn status(&self, scope: &Scope, ref_: &str) -> Result<Status, Error> {
        let ns = scope.namespace();
        check_namespace(ns)?;
        self.content.status(ns, ref_)
    }

    /// `ns`'s ingests matching `filters` (field `ref`), by ref.
    pub fn list_statuses(&self, scope: &Scope, filters: &[String]) -> Result<Vec<Status>, Error> {
        let ns = scope.namespace();
        check_namespace(ns)?;
        let filter = parse_filters(filters)?;
        let mut out = self.content.list_statuses(ns)?;
        out.retain(|status| {
            filter.matches(&|path: &[String]| match path {
                [field] if field == "ref" => Some(status.ref_.clone()),
                _ => None,
            })
        });
        Ok(out)
    }

    /// Removes `ns`'s ingest `ref_`.
    pub fn abort(&self, scope: &Scope, ref_: &str) -> Result<(), Error> {
        let ns = scope.namespace();
        check_namespace(ns)?;
        self.content.abort(ns, ref_)
    }

    /// Opens or resumes the scope's ingest `ref_`. With `expected` already recorded in the
    /// namespace, the answer is AlreadyExists. With `expected` held by another namespace and
    /// the `shared` policy, the writer starts out complete: its status is the blob's size, a
    /// commit with no bytes sent records the blob in this namespace, and writing more first
    /// copies the blob into a fresh ingest. With a lease in the scope, the lease holds the
    /// ingest now and the content once committed.
    pub fn writer(
        self: &Arc<Self>,
        scope: &Scope,
        ref_: &str,
        total: i64,
        expected: Option<Digest>,
    ) -> Result<ContentWriter, Error> {
        let ns = scope.namespace();
        check_namespace(ns)?;
        let lease = scope.lease().map(str::to_string);
        if ref_.is_empty() {
            return Err(Error::invalid_argument(
                "ref must not be empty: invalid argument",
            ));
        }
        let shared = match &expected {
            Some(d) => self.existing_blob(ns, d, total, lease.as_deref())?,
            None => None,
        };
        if let Some(id) = &lease {
            self.db.add_lease_resource(ns, id, "ingests", ref_)?;
        }
        let ingest = match shared {
            Some(blob) => Ingest::Shared(blob),
            // The backend must not refuse a blob it has; commit records it in `ns`.
            None => Ingest::Backend(self.content.writer(ns, ref_, total, None)?),
        };
        Ok(ContentWriter {
            meta: self.clone(),
            ns: ns.to_string(),
            ref_: ref_.to_string(),
            lease,
            ingest,
            started: SystemTime::now(),
        })
    }

    /// AlreadyExists when `ns` holds `d` (which `lease`, if given, then holds too); the blob
    /// when another namespace does, the policy is `shared` and `total` is unset or its
    /// size; None otherwise.
    fn existing_blob(
        &self,
        ns: &str,
        d: &Digest,
        total: i64,
        lease: Option<&str>,
    ) -> Result<Option<SharedBlob>, Error> {
        if self.db.hold_existing_content(ns, &d.to_string(), lease)? {
            return Err(Error::wrapped(Class::AlreadyExists, format!("content {d}")));
        }
        if self.policy == SharingPolicy::Isolated {
            return Ok(None);
        }
        match self.content.info(ns, d) {
            Ok(info) if total == 0 || total == info.size => Ok(Some(SharedBlob {
                digest: d.clone(),
                size: info.size,
            })),
            _ => Ok(None),
        }
    }
}

/// A blob already in the store that a writer stands for until bytes are written.
#[derive(Debug, Clone)]
struct SharedBlob {
    digest: Digest,
    size: i64,
}

/// What a writer writes to.
enum Ingest {
    /// An ingest of the backend store.
    Backend(Box<dyn BlobWriter>),
    /// Nothing yet: the writer stands for a blob another namespace holds.
    Shared(SharedBlob),
}

/// An open ingest in one namespace.
pub struct ContentWriter {
    meta: Arc<Metadata>,
    ns: String,
    ref_: String,
    lease: Option<String>,
    ingest: Ingest,
    started: SystemTime,
}

impl ContentWriter {
    /// The progress so far, under the client's ref.
    pub fn status(&self) -> Status {
        match &self.ingest {
            Ingest::Backend(inner) => inner.status(),
            Ingest::Shared(blob) => Status {
                ref_: self.ref_.clone(),
                offset: blob.size,
                total: blob.size,
                expected: Some(blob.digest.clone()),
                started_at: self.started,
                updated_at: self.started,
            },
        }
    }

    pub fn offset(&self) -> i64 {
        self.status().offset
    }

    pub fn set_total(&mut self, total: i64) -> Result<(), Error> {
        match &mut self.ingest {
            Ingest::Backend(inner) => inner.set_total(total),
            Ingest::Shared(_) => Ok(()),
        }
    }

    /// The backend ingest, made on first use from the first `keep` bytes of the shared blob.
    fn unshare(&mut self, keep: i64) -> Result<&mut Box<dyn BlobWriter>, Error> {
        if let Ingest::Shared(blob) = &self.ingest {
            let blob = blob.clone();
            let mut inner = self.meta.content.writer(&self.ns, &self.ref_, 0, None)?;
            inner.truncate(0)?;
            let keep = keep.clamp(0, blob.size);
            let reader = self.meta.content.reader(&self.ns, &blob.digest)?;
            let mut buf = vec![0u8; 256 << 10];
            let mut offset = 0i64;
            while offset < keep {
                let want = buf.len().min((keep - offset) as usize);
                let n = reader.read_at(&mut buf[..want], offset as u64)?;
                if n == 0 {
                    return Err(Error::new(
                        Class::DataLoss,
                        format!("blob {} ended at {offset} bytes", blob.digest),
                    ));
                }
                inner.write(&buf[..n])?;
                offset += n as i64;
            }
            self.ingest = Ingest::Backend(inner);
        }
        match &mut self.ingest {
            Ingest::Backend(inner) => Ok(inner),
            Ingest::Shared(_) => Err(Error::internal("content writer lost its ingest")),
        }
    }

    pub fn write(&mut self, data: &[u8]) -> Result<(), Error> {
        if data.is_empty() {
            return Ok(());
        }
        let keep = self.offset();
        self.unshare(keep)?.write(data)
    }

    /// Appends `data` (not empty) after everything given before; the outcome now, or None
    /// when the backend works on it while the caller goes on and reports through
    /// [`settle`](ContentWriter::settle) (see [`BlobWriter::append`]).
    pub fn append(&mut self, data: Vec<u8>) -> Result<Option<Appended>, Error> {
        let keep = self.offset();
        self.unshare(keep)?.append(data)
    }

    /// The outcome of the oldest chunk [`append`](ContentWriter::append) left in work, in
    /// order; with `wait` once it is done. None when none is left (or, without `wait`, the
    /// oldest is still in work).
    pub fn settle(&mut self, wait: bool) -> Option<Result<Appended, Error>> {
        match &mut self.ingest {
            Ingest::Backend(inner) => inner.settle(wait),
            Ingest::Shared(_) => None,
        }
    }

    /// Discards what was written after `size` bytes (a WRITE at offset 0 restarts the ingest).
    pub fn truncate(&mut self, size: i64) -> Result<(), Error> {
        match self.ingest {
            Ingest::Shared(_) => self.unshare(size).map(|_| ()),
            Ingest::Backend(ref mut inner) => inner.truncate(size),
        }
    }

    /// The digest of the bytes written so far.
    pub fn digest(&self) -> Digest {
        match &self.ingest {
            Ingest::Backend(inner) => inner.digest(),
            Ingest::Shared(blob) => blob.digest.clone(),
        }
    }

    /// Verifies `size` (if > 0) and `expected` (if given, else the one given at open), moves
    /// the blob into place and records it in the namespace with `labels`. A failure leaves
    /// the ingest in place.
    pub fn commit(
        self,
        size: i64,
        expected: Option<Digest>,
        labels: BTreeMap<String, String>,
    ) -> Result<ContentRecord, Error> {
        for (k, v) in &labels {
            crate::labels::validate_label(k, v)?;
        }
        let offset = self.offset();
        if size > 0 && size != offset {
            return Err(Error::failed_precondition(format!(
                "{:?} failed size validation: {offset} != {size}",
                self.ref_,
            )));
        }
        let meta = self.meta.clone();
        let _guard = meta.sweep.read();
        let digest = match self.ingest {
            Ingest::Backend(mut inner) => {
                while let Some(appended) = inner.settle(true) {
                    appended?;
                }
                let written = inner.digest();
                match inner.commit(offset, expected) {
                    Ok(d) => d,
                    // Another namespace (or an earlier commit) has the blob: only the
                    // record is new.
                    Err(err) if err.class() == Class::AlreadyExists => written,
                    Err(err) => return Err(err),
                }
            }
            Ingest::Shared(blob) => {
                if expected.as_ref().is_some_and(|d| *d != blob.digest) {
                    return Err(Error::failed_precondition(format!(
                        "{:?} unexpected digest: failed precondition",
                        self.ref_
                    )));
                }
                // The blob must still be there now that the sweep cannot run.
                meta.content.info(&self.ns, &blob.digest)?;
                blob.digest
            }
        };
        let now = SystemTime::now();
        let rec = ContentRecord {
            digest: digest.to_string(),
            size: offset,
            created_at: now,
            updated_at: now,
            labels: labels.into_iter().filter(|(_, v)| !v.is_empty()).collect(),
        };
        let lease = self
            .lease
            .as_deref()
            .map(|id| (id, Some(self.ref_.as_str())));
        meta.db.add_content_leased(&self.ns, &rec, lease)?;
        Ok(rec)
    }
}

/// Removes the local blobs no namespace records, and the local ingests no lease holds that
/// have been idle for [`INGEST_EXPIRY`].
fn sweep_local(
    local: &content::Store,
    sweep: &super::Sweep,
    now: SystemTime,
) -> Result<usize, Error> {
    let mut removed = 0;
    let mut doomed = Vec::new();
    local.walk(&mut |info| {
        if !sweep.referenced.contains(&info.digest.to_string()) {
            doomed.push(info.digest);
        }
        Ok(())
    })?;
    for d in doomed {
        match local.delete(&d) {
            Ok(()) => removed += 1,
            Err(err) if err.class() == Class::NotFound => {}
            Err(err) => log::warn!("garbage collection failed to remove {d}: {err}"),
        }
    }
    for status in local.list_statuses()? {
        let Some((ns, ref_)) = status.ref_.split_once('/') else {
            continue;
        };
        let leased = sweep
            .leased_ingests
            .contains(&(ns.to_string(), ref_.to_string()));
        let fresh = status
            .updated_at
            .checked_add(INGEST_EXPIRY)
            .map_or(true, |t| t > now);
        if leased || fresh || local.is_locked(&status.ref_) {
            continue;
        }
        match local.abort(&status.ref_) {
            Ok(()) => removed += 1,
            Err(err) if err.class() == Class::NotFound => {}
            Err(err) => log::warn!("garbage collection failed to remove ingest: {err}"),
        }
    }
    Ok(removed)
}

impl Collector for Metadata {
    /// Mark and sweep: expired leases and unreferenced records go in one transaction, then
    /// every blob no namespace records, then every ingest no lease holds that has been idle
    /// for [`INGEST_EXPIRY`].
    fn garbage_collect(&self) -> Result<Stats, Error> {
        let started = Instant::now();
        let now = SystemTime::now();
        let _guard = self.sweep.write();
        let sweep = self.db.collect_garbage(now)?;
        // What the scheduler paces by is the metadata transaction alone, as containerd's
        // GC stats do: removing snapshots and blobs afterwards blocks no writer.
        let elapsed = started.elapsed();
        let mut removed = sweep.removed_records.len()
            + sweep.removed_leases.len()
            + sweep.removed_snapshots.len();
        removed += self.sweep_snapshots(&sweep.referenced_snapshots);
        if let Some(local) = self.content.local() {
            removed += sweep_local(local, &sweep, now)?;
        }
        Ok(Stats { elapsed, removed })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::GC_ROOT_LABEL;

    fn open(policy: SharingPolicy) -> (tempfile::TempDir, Arc<Metadata>) {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Db::open(&dir.path().join("meta.redb")).unwrap());
        let store = Arc::new(content::Store::open(&dir.path().join("content")).unwrap());
        (dir, Arc::new(Metadata::new(db, store, policy)))
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn put(meta: &Arc<Metadata>, ns: &str, data: &[u8], l: &[(&str, &str)]) -> Digest {
        let mut w = meta.writer(&Scope::new(ns), "up", 0, None).unwrap();
        w.write(data).unwrap();
        let rec = w.commit(data.len() as i64, None, labels(l)).unwrap();
        Digest::parse(&rec.digest).unwrap()
    }

    fn blobs(dir: &tempfile::TempDir) -> usize {
        std::fs::read_dir(dir.path().join("content/blobs/sha256"))
            .unwrap()
            .count()
    }

    #[test]
    fn namespaces_see_only_their_records_and_shared_blobs_link() {
        let (dir, meta) = open(SharingPolicy::Shared);
        let d = put(&meta, "one", b"hello", &[("a", "b")]);
        assert_eq!(meta.info(&Scope::new("one"), &d).unwrap().labels["a"], "b");
        let err = meta.info(&Scope::new("two"), &d).unwrap_err();
        assert_eq!(err.class(), Class::NotFound);
        assert_eq!(err.message(), format!("content digest {d}: not found"));
        assert!(meta.list(&Scope::new("two"), &[]).unwrap().is_empty());

        // Expecting a blob another namespace holds: complete at once, committed unsent.
        let two = Scope::new("two");
        let w = meta.writer(&two, "x", 5, Some(d.clone())).unwrap();
        let status = w.status();
        assert_eq!((status.offset, status.total), (5, 5));
        assert_eq!(w.digest(), d);
        let err = meta.info(&two, &d).unwrap_err();
        assert_eq!(
            err.class(),
            Class::NotFound,
            "nothing recorded before the commit"
        );
        w.commit(5, Some(d.clone()), labels(&[("k", "v")])).unwrap();
        assert_eq!(meta.info(&two, &d).unwrap().size, 5);
        assert_eq!(meta.info(&two, &d).unwrap().labels["k"], "v");
        // Again, now that it holds a record itself.
        let err = meta
            .writer(&Scope::new("two"), "x", 5, Some(d.clone()))
            .err();
        assert_eq!(err.unwrap().class(), Class::AlreadyExists);
        assert_eq!(blobs(&dir), 1);

        let found = meta
            .list(&Scope::new("one"), &["labels.a==b".to_string()])
            .unwrap();
        assert_eq!(found.len(), 1);
        assert!(meta
            .list(&Scope::new("one"), &["size==4".to_string()])
            .unwrap()
            .is_empty());
        assert!(
            meta.list(&Scope::new("one"), &["size==5".to_string()])
                .unwrap()
                .len()
                == 1
        );
        let bad = meta
            .list(&Scope::new("one"), &["labels.a==".to_string()])
            .unwrap_err();
        assert_eq!(bad.class(), Class::InvalidArgument);
        let bad_ns = meta.list(&Scope::new("-bad-"), &[]).unwrap_err();
        assert_eq!(bad_ns.class(), Class::InvalidArgument);
    }

    #[test]
    fn shared_blob_grows_into_a_new_blob_when_written_past_its_end() {
        let (dir, meta) = open(SharingPolicy::Shared);
        let d = put(&meta, "one", b"hello", &[]);
        let mut w = meta
            .writer(&Scope::new("two"), "x", 0, Some(d.clone()))
            .unwrap();
        assert_eq!(w.offset(), 5);
        w.write(b" world").unwrap();
        assert_eq!(w.offset(), 11);
        let longer = Digest::of(b"hello world");
        let rec = w.commit(11, Some(longer.clone()), BTreeMap::new()).unwrap();
        assert_eq!(rec.digest, longer.to_string());
        assert!(
            meta.info(&Scope::new("two"), &d).is_err(),
            "only the longer blob is two's"
        );
        assert_eq!(blobs(&dir), 2);
        let (reader, size) = meta.reader(&Scope::new("two"), &longer).unwrap();
        let mut buf = vec![0u8; size as usize];
        reader.read_at(&mut buf, 0).unwrap();
        assert_eq!(buf, b"hello world");

        // A wrong size or digest on an unsent commit fails and records nothing.
        let w = meta
            .writer(&Scope::new("three"), "y", 0, Some(d.clone()))
            .unwrap();
        let err = w.commit(4, None, BTreeMap::new()).err().unwrap();
        assert_eq!(err.message(), "\"y\" failed size validation: 5 != 4");
        let w = meta
            .writer(&Scope::new("three"), "y", 0, Some(d.clone()))
            .unwrap();
        let err = w.commit(5, Some(longer), BTreeMap::new()).err().unwrap();
        assert_eq!(err.class(), Class::FailedPrecondition);
        // A total that is not the blob's size writes the bytes itself.
        let w = meta
            .writer(&Scope::new("three"), "z", 9, Some(d.clone()))
            .unwrap();
        assert_eq!(w.offset(), 0);
        // Truncating restarts from the shared bytes kept.
        let mut w = meta
            .writer(&Scope::new("three"), "t", 0, Some(d.clone()))
            .unwrap();
        w.truncate(2).unwrap();
        w.write(b"y").unwrap();
        let rec = w.commit(3, None, BTreeMap::new()).unwrap();
        assert_eq!(rec.digest, Digest::of(b"hey").to_string());
    }

    #[test]
    fn isolated_namespaces_write_their_own_bytes() {
        let (dir, meta) = open(SharingPolicy::Isolated);
        let d = put(&meta, "one", b"hello", &[]);
        let mut w = meta
            .writer(&Scope::new("two"), "x", 5, Some(d.clone()))
            .unwrap();
        w.write(b"hello").unwrap();
        w.commit(5, Some(d.clone()), BTreeMap::new()).unwrap();
        assert!(meta.info(&Scope::new("two"), &d).is_ok());
        assert_eq!(blobs(&dir), 1);
    }

    #[test]
    fn ingests_are_per_namespace_and_failures_stay_listed() {
        let (dir, meta) = open(SharingPolicy::Shared);
        let mut w = meta.writer(&Scope::new("one"), "upload", 0, None).unwrap();
        w.write(b"abc").unwrap();
        let err = w.commit(6, None, BTreeMap::new()).err().unwrap();
        assert_eq!(err.class(), Class::FailedPrecondition);
        assert_eq!(err.message(), "\"upload\" failed size validation: 3 != 6");

        let w = meta.writer(&Scope::new("one"), "upload", 0, None).unwrap();
        assert_eq!(w.offset(), 3, "the ingest resumes");
        let wrong = Digest::of(b"xyz");
        let err = w
            .commit(0, Some(wrong.clone()), BTreeMap::new())
            .err()
            .unwrap();
        assert_eq!(
            err.message(),
            format!(
                "unexpected commit digest {}, expected {wrong}",
                Digest::of(b"abc")
            )
        );

        let listed = meta.list_statuses(&Scope::new("one"), &[]).unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].ref_, "upload");
        assert_eq!(listed[0].offset, 3);
        assert!(meta
            .list_statuses(&Scope::new("two"), &[])
            .unwrap()
            .is_empty());
        assert!(meta
            .list_statuses(&Scope::new("one"), &["ref==other".to_string()])
            .unwrap()
            .is_empty());
        assert_eq!(meta.status(&Scope::new("one"), "upload").unwrap().offset, 3);
        let err = meta.status(&Scope::new("two"), "upload").unwrap_err();
        assert_eq!(err.class(), Class::NotFound);
        assert!(!err.message().contains("one/"), "{}", err.message());

        // A ref that looks like a path stays inside the store.
        let mut w = meta.writer(&Scope::new("one"), "../../x", 0, None).unwrap();
        w.write(b"q").unwrap();
        drop(w);
        assert!(!dir.path().join("x").exists());
        assert_eq!(
            meta.list_statuses(&Scope::new("one"), &[]).unwrap().len(),
            2
        );

        meta.abort(&Scope::new("one"), "upload").unwrap();
        assert_eq!(
            meta.abort(&Scope::new("one"), "upload")
                .unwrap_err()
                .class(),
            Class::NotFound
        );
        assert_eq!(
            meta.list_statuses(&Scope::new("one"), &[]).unwrap().len(),
            1
        );
        assert_eq!(blobs(&dir), 0, "nothing partial reached blobs/");
    }

    #[test]
    fn collection_keeps_roots_leases_shared_blobs_and_fresh_ingests() {
        let (dir, meta) = open(SharingPolicy::Shared);
        let kept = put(&meta, "one", b"root", &[(GC_ROOT_LABEL, "now")]);
        let loose = put(&meta, "one", b"loose", &[]);
        meta.db.create_lease("one", "l", &BTreeMap::new()).unwrap();
        let mut w = meta
            .writer(&Scope::new("one").with_lease(Some("l")), "leased", 0, None)
            .unwrap();
        w.write(b"leased").unwrap();
        let leased = Digest::parse(&w.commit(0, None, BTreeMap::new()).unwrap().digest).unwrap();
        // The same bytes in two namespaces; only one keeps them.
        put(&meta, "two", b"both", &[(GC_ROOT_LABEL, "x")]);
        let both = put(&meta, "one", b"both", &[]);
        let mut w = meta.writer(&Scope::new("one"), "pending", 0, None).unwrap();
        w.write(b"partial").unwrap();
        drop(w);

        let stats = meta.garbage_collect().unwrap();
        // Records: loose and one's "both"; blobs: loose only.
        assert_eq!(stats.removed, 3);
        assert!(meta.info(&Scope::new("one"), &kept).is_ok());
        assert!(meta.info(&Scope::new("one"), &leased).is_ok());
        assert_eq!(
            meta.info(&Scope::new("one"), &loose).unwrap_err().class(),
            Class::NotFound
        );
        assert_eq!(
            meta.info(&Scope::new("one"), &both).unwrap_err().class(),
            Class::NotFound
        );
        assert!(meta.info(&Scope::new("two"), &both).is_ok());
        assert_eq!(blobs(&dir), 3);
        assert_eq!(
            meta.list_statuses(&Scope::new("one"), &[]).unwrap().len(),
            1
        );

        // Without its lease, the leased blob goes.
        meta.db.delete_lease("one", "l").unwrap();
        meta.garbage_collect().unwrap();
        assert_eq!(
            meta.info(&Scope::new("one"), &leased).unwrap_err().class(),
            Class::NotFound
        );
        assert_eq!(blobs(&dir), 2);
    }

    #[test]
    fn a_collection_before_anything_was_recorded_makes_no_file_and_sweeps_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(content::Store::open(&dir.path().join("content")).unwrap());
        let native_root = dir.path().join("native");
        let native = || Arc::new(crate::snapshots::native::Native::open(&native_root).unwrap());
        let metadata = |native: Arc<crate::snapshots::native::Native>| {
            let db = Arc::new(Db::open(&dir.path().join("meta.redb")).unwrap());
            Metadata::new(db, store.clone(), SharingPolicy::Shared)
                .with_snapshotters([("native".to_string(), native as Arc<dyn Snapshotter>)].into())
        };
        let stats = metadata(native()).garbage_collect().unwrap();
        assert_eq!(stats.removed, 0);
        assert!(!dir.path().join("meta.redb").exists());
        assert!(!native_root.join("metadata.redb").exists());

        // A blob and a snapshot no record names (metadata lost, say) go, as with an empty
        // file, and still no metadata file is made for it.
        let mut w = store.writer("orphan", 0, None).unwrap();
        w.write(b"orphan").unwrap();
        w.commit(6, None).unwrap();
        let loose = native();
        loose
            .prepare("default/7/loose", "", &BTreeMap::new())
            .unwrap();
        let stats = metadata(loose).garbage_collect().unwrap();
        assert_eq!(stats.removed, 2);
        assert_eq!(blobs(&dir), 0);
        assert!(!dir.path().join("meta.redb").exists());
    }

    #[test]
    fn snapshots_are_namespaced_and_collected_like_containerds() {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Db::open(&dir.path().join("meta.redb")).unwrap());
        let store = Arc::new(content::Store::open(&dir.path().join("content")).unwrap());
        let native: Arc<dyn Snapshotter> =
            Arc::new(crate::snapshots::native::Native::open(&dir.path().join("native")).unwrap());
        let meta = Metadata::new(db, store, SharingPolicy::Shared)
            .with_snapshotters([("native".to_string(), native.clone())].into());
        let root = labels(&[(GC_ROOT_LABEL, "x")]);
        let none = BTreeMap::new();
        meta.snapshot_create(&Scope::new("one"), "native", "base", "", &none, false)
            .unwrap();
        meta.snapshot_commit(&Scope::new("one"), "native", "base-c", "base", &none)
            .unwrap();
        // A rooted child keeps its unlabelled parent; an unlabelled view goes.
        meta.snapshot_create(
            &Scope::new("one"),
            "native",
            "child",
            "base-c",
            &root,
            false,
        )
        .unwrap();
        meta.snapshot_create(&Scope::new("one"), "native", "v", "base-c", &none, true)
            .unwrap();
        // The same key in another namespace is another snapshot.
        meta.snapshot_create(&Scope::new("two"), "native", "child", "", &root, false)
            .unwrap();
        let err = meta
            .snapshot_create(&Scope::new("one"), "native", "x", "missing", &none, false)
            .unwrap_err();
        assert_eq!(
            err.message(),
            "parent snapshot missing does not exist: not found"
        );
        let err = meta
            .snapshot_create(&Scope::new("one"), "nope", "x", "", &none, false)
            .unwrap_err();
        assert_eq!(err.message(), "snapshotter not loaded: nope");
        assert_eq!(native.list().unwrap().len(), 4);

        meta.garbage_collect().unwrap();
        let names: Vec<String> = meta
            .snapshot_list(&Scope::new("one"), "native", &[])
            .unwrap()
            .into_iter()
            .map(|i| i.name)
            .collect();
        assert_eq!(names, ["base-c", "child"]);
        assert_eq!(
            native.list().unwrap().len(),
            3,
            "the view's backend snapshot went too"
        );
        assert_eq!(
            meta.snapshot_list(&Scope::new("two"), "native", &[])
                .unwrap()
                .len(),
            1
        );

        // Removing the child frees its parent for the next collection.
        meta.snapshot_remove(&Scope::new("one"), "native", "child")
            .unwrap();
        meta.garbage_collect().unwrap();
        assert!(meta
            .snapshot_list(&Scope::new("one"), "native", &[])
            .unwrap()
            .is_empty());
        assert_eq!(native.list().unwrap().len(), 1);
    }

    #[test]
    fn leased_writer_needs_an_existing_lease() {
        let (_dir, meta) = open(SharingPolicy::Shared);
        let err = meta
            .writer(&Scope::new("one").with_lease(Some("missing")), "r", 0, None)
            .err()
            .unwrap();
        assert_eq!(err.class(), Class::NotFound);
        assert_eq!(err.message(), "lease \"missing\": not found");
    }
}
