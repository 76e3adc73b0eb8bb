//! The local content-addressed store behind `io.containerd.content.v1.content`.
//!
//! Layout under the store root:
//! * `blobs/sha256/<hex>` — committed blobs, read-only (0444), named by their digest;
//! * `ingest/<sha256 of ref>/` — one directory per active ingest (see [`ingest`]).
//!
//! Protocol of an ingest:
//! 1. [`Store::writer`] locks the ref in this process (a second writer gets Unavailable) and
//!    creates or resumes its ingest directory; a resumed ingest continues at the length of its
//!    `data` file, also after a daemon restart.
//! 2. [`Writer::write`] appends to `data` and hashes incrementally; nothing is buffered.
//!    [`Writer::append`] takes the chunk itself instead: large chunks are hashed and written
//!    on two threads of the ingest while the caller receives the next one (see [`pipeline`]),
//!    and [`Writer::settle`] reports each one's outcome in order.
//! 3. [`Writer::commit`] validates size and digest, then renames `data` to its blob path, so a
//!    blob never appears partially. A failed validation leaves the ingest in place and resumable.
//! 4. Dropping the [`Writer`] releases the lock; [`Store::abort`] removes an ingest.
//!
//! Labels are not kept here; they live in the metadata store. All calls but `append` are
//! synchronous and run on the caller's thread; the store is safe to share between threads.

pub mod backend;
mod digest;
mod ingest;
mod pipeline;
pub mod plugin;
mod writer;

use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use crate::errdefs::{Class, Error};
use parking_lot::Mutex;

pub use backend::{Backend, BlobWriter, ContentHandle, ReadAt};
pub use digest::Digest;
pub use writer::{Writer, PIPELINE_MIN_CHUNK};

use ingest::io_error;

/// A committed blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    pub digest: Digest,
    pub size: i64,
    pub created_at: SystemTime,
    pub updated_at: SystemTime,
}

/// A blob as other objects point at it (an OCI descriptor): what it is, which bytes and
/// how many.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Descriptor {
    pub media_type: String,
    /// `sha256:<hex>`, as given (parsed where it is used).
    pub digest: String,
    pub size: i64,
    pub annotations: std::collections::BTreeMap<String, String>,
}

/// The progress of an ingest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub ref_: String,
    pub offset: i64,
    /// Expected size; 0 when unknown.
    pub total: i64,
    /// Known only to an open [`Writer`]; not persisted.
    pub expected: Option<Digest>,
    pub started_at: SystemTime,
    pub updated_at: SystemTime,
}

/// A chunk handed to [`Writer::append`] once hashed and written: the ingest's size and
/// digest after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    pub offset: i64,
    pub digest: Digest,
}

/// The refs that have an open [`Writer`] in this process.
type Locks = Arc<Mutex<HashSet<String>>>;

/// The local content store rooted at one directory.
#[derive(Debug)]
pub struct Store {
    root: PathBuf,
    locks: Locks,
}

impl Store {
    /// Opens the store at `root`, creating its directories. Ingests left by an earlier run stay
    /// and can be resumed.
    pub fn open(root: &Path) -> Result<Store, Error> {
        for dir in [root.join("blobs").join(digest::SHA256), root.join("ingest")] {
            fs::create_dir_all(&dir).map_err(io_error(format!("create {}", dir.display())))?;
        }
        Ok(Store {
            root: root.to_path_buf(),
            locks: Arc::default(),
        })
    }

    /// The directory the store lives in.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn blobs_dir(&self) -> PathBuf {
        self.root.join("blobs").join(digest::SHA256)
    }

    fn blob_path(&self, d: &Digest) -> PathBuf {
        self.blobs_dir().join(d.hex())
    }

    fn ingest_dir(&self, ref_: &str) -> PathBuf {
        self.root.join("ingest").join(ingest::dir_name(ref_))
    }

    /// The size and times of a committed blob.
    pub fn info(&self, d: &Digest) -> Result<Info, Error> {
        let meta = fs::metadata(self.blob_path(d)).map_err(blob_error(d))?;
        Ok(info_from(d.clone(), &meta))
    }

    /// Calls `f` with every committed blob, in digest order; stops at the first error.
    pub fn walk(&self, f: &mut dyn FnMut(Info) -> Result<(), Error>) -> Result<(), Error> {
        let dir = self.blobs_dir();
        let mut digests = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_error(format!("read {}", dir.display())))? {
            let entry = entry.map_err(io_error(format!("read {}", dir.display())))?;
            let name = entry.file_name();
            // Anything that is not a digest (a stray temporary file) is not content.
            if let Some(d) = name
                .to_str()
                .and_then(|hex| Digest::parse(&format!("sha256:{hex}")).ok())
            {
                digests.push(d);
            }
        }
        digests.sort();
        for d in digests {
            match fs::metadata(self.blob_path(&d)) {
                Ok(meta) if meta.is_file() => f(info_from(d, &meta))?,
                Ok(_) => {}
                // Deleted while walking.
                Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                Err(err) => return Err(blob_error(&d)(err)),
            }
        }
        Ok(())
    }

    /// Removes a committed blob.
    pub fn delete(&self, d: &Digest) -> Result<(), Error> {
        fs::remove_file(self.blob_path(d)).map_err(blob_error(d))
    }

    /// Opens a committed blob for reading; the caller seeks and reads in chunks.
    pub fn reader(&self, d: &Digest) -> Result<fs::File, Error> {
        fs::File::open(self.blob_path(d)).map_err(blob_error(d))
    }

    /// Opens or resumes the ingest `ref_`. `total` (if > 0) is the expected size; `expected`,
    /// if given, must not already be committed.
    pub fn writer(
        &self,
        ref_: &str,
        total: i64,
        expected: Option<Digest>,
    ) -> Result<Writer, Error> {
        validate_ref(ref_)?;
        let lock = RefLock::acquire(&self.locks, ref_)?;
        if let Some(d) = &expected {
            if self.blob_path(d).exists() {
                return Err(Error::new(
                    Class::AlreadyExists,
                    format!("content {d}: already exists"),
                ));
            }
        }
        Writer::open(
            lock,
            self.ingest_dir(ref_),
            self.blobs_dir(),
            total,
            expected,
        )
    }

    /// The progress of the ingest `ref_`, as recorded on disk.
    pub fn status(&self, ref_: &str) -> Result<Status, Error> {
        match ingest::read_record(&self.ingest_dir(ref_)) {
            Ok(record) if record.ref_ == ref_ => Ok(status_from(record)),
            Ok(_) => Err(ingest_not_found(ref_)),
            Err(err) if err.class() == Class::NotFound => Err(ingest_not_found(ref_)),
            Err(err) => Err(err),
        }
    }

    /// Every ingest on disk, sorted by ref. Incomplete or unreadable ingest directories are skipped.
    pub fn list_statuses(&self) -> Result<Vec<Status>, Error> {
        let dir = self.root.join("ingest");
        let mut out = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_error(format!("read {}", dir.display())))? {
            let entry = entry.map_err(io_error(format!("read {}", dir.display())))?;
            if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            match ingest::read_record(&entry.path()) {
                Ok(record) => out.push(status_from(record)),
                // Half-created or removed while listing.
                Err(err) if err.class() == Class::NotFound => {}
                // One damaged ingest must not hide the others; a writer for its ref starts over.
                Err(err) => log::warn!(
                    "skipping unreadable ingest {}: {err}",
                    entry.path().display()
                ),
            }
        }
        out.sort_by(|a, b| a.ref_.cmp(&b.ref_));
        Ok(out)
    }

    /// Whether a [`Writer`] in this process holds `ref_`.
    pub fn is_locked(&self, ref_: &str) -> bool {
        self.locks.lock().contains(ref_)
    }

    /// Removes the ingest `ref_` and its data.
    pub fn abort(&self, ref_: &str) -> Result<(), Error> {
        let dir = self.ingest_dir(ref_);
        fs::remove_dir_all(&dir).map_err(|err| match err.kind() {
            io::ErrorKind::NotFound => ingest_not_found(ref_),
            _ => io_error(format!("remove ingest ref {ref_:?}"))(err),
        })
    }
}

/// A ref must be non-empty and free of NUL; any other text is safe because the ingest directory
/// is named by the ref's hash.
fn validate_ref(ref_: &str) -> Result<(), Error> {
    if ref_.is_empty() {
        return Err(Error::invalid_argument(
            "ref must not be empty: invalid argument",
        ));
    }
    if ref_.contains('\0') {
        return Err(Error::invalid_argument(format!(
            "ref {ref_:?} must not contain NUL: invalid argument"
        )));
    }
    Ok(())
}

fn blob_error(d: &Digest) -> impl FnOnce(io::Error) -> Error + '_ {
    move |err| match err.kind() {
        io::ErrorKind::NotFound => {
            Error::new(Class::NotFound, format!("content digest {d}: not found"))
        }
        _ => io_error(format!("content digest {d}"))(err),
    }
}

fn ingest_not_found(ref_: &str) -> Error {
    Error::new(Class::NotFound, format!("ingest ref {ref_:?}: not found"))
}

fn info_from(digest: Digest, meta: &fs::Metadata) -> Info {
    let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
    Info {
        digest,
        size: i64::try_from(meta.len()).unwrap_or(i64::MAX),
        created_at: modified,
        updated_at: modified,
    }
}

fn status_from(record: ingest::Record) -> Status {
    Status {
        ref_: record.ref_,
        offset: record.size,
        total: record.total,
        expected: None,
        started_at: record.started_at,
        updated_at: record.updated_at,
    }
}

/// Holds a ref in the lock set; releasing happens on drop, so every error path unlocks.
#[derive(Debug)]
pub(crate) struct RefLock {
    locks: Locks,
    ref_: String,
}

impl RefLock {
    fn acquire(locks: &Locks, ref_: &str) -> Result<RefLock, Error> {
        if !locks.lock().insert(ref_.to_owned()) {
            return Err(Error::new(
                Class::Unavailable,
                format!("ref {ref_} locked: unavailable"),
            ));
        }
        Ok(RefLock {
            locks: Arc::clone(locks),
            ref_: ref_.to_owned(),
        })
    }

    pub(crate) fn ref_(&self) -> &str {
        &self.ref_
    }
}

impl Drop for RefLock {
    fn drop(&mut self) {
        self.locks.lock().remove(&self.ref_);
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    /// Deterministic test data from a seeded xorshift64.
    pub(super) fn data(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed.max(1);
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("content")).unwrap();
        (dir, store)
    }

    fn read_all(store: &Store, d: &Digest) -> Vec<u8> {
        let mut out = Vec::new();
        store.reader(d).unwrap().read_to_end(&mut out).unwrap();
        out
    }

    fn walked(store: &Store) -> Vec<Digest> {
        let mut out = Vec::new();
        store
            .walk(&mut |info| {
                out.push(info.digest);
                Ok(())
            })
            .unwrap();
        out
    }

    fn refs(store: &Store) -> Vec<String> {
        store
            .list_statuses()
            .unwrap()
            .into_iter()
            .map(|s| s.ref_)
            .collect()
    }

    #[test]
    fn write_commit_read_back_is_byte_identical() {
        let (_tmp, store) = store();
        let blob = data(1 << 20, 7);
        let mut w = store.writer("big", blob.len() as i64, None).unwrap();
        for chunk in blob.chunks(65_537) {
            w.write(chunk).unwrap();
        }
        assert_eq!(w.offset(), blob.len() as i64);
        assert_eq!(w.digest(), Digest::of(&blob));
        let d = w
            .commit(blob.len() as i64, Some(Digest::of(&blob)))
            .unwrap();
        assert_eq!(d, Digest::of(&blob));
        assert_eq!(read_all(&store, &d), blob);
        let info = store.info(&d).unwrap();
        assert_eq!((info.digest, info.size), (d.clone(), blob.len() as i64));
        let mode = fs::metadata(store.blob_path(&d))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o444);
        assert!(refs(&store).is_empty());
        assert!(!store.ingest_dir("big").exists());
    }

    #[test]
    fn nothing_appears_under_blobs_before_commit() {
        let (_tmp, store) = store();
        let mut w = store.writer("partial", 0, None).unwrap();
        w.write(&data(4096, 1)).unwrap();
        assert_eq!(fs::read_dir(store.blobs_dir()).unwrap().count(), 0);
        assert!(walked(&store).is_empty());
        assert_eq!(
            store.info(&Digest::of(&data(4096, 1))).unwrap_err().class(),
            Class::NotFound
        );
        let d = w.commit(0, None).unwrap();
        assert_eq!(walked(&store), vec![d]);
    }

    #[test]
    fn wrong_size_commit_keeps_ingest_resumable() {
        let (_tmp, store) = store();
        let mut w = store.writer("r", 0, None).unwrap();
        w.write(b"abc").unwrap();
        let err = w.commit(6, None).unwrap_err();
        assert_eq!(err.class(), Class::FailedPrecondition);
        assert_eq!(err.message(), "\"r\" failed size validation: 3 != 6");
        assert_eq!(refs(&store), ["r"]);
        assert_eq!(store.status("r").unwrap().offset, 3);
        // Not locked any more, and it resumes where it stopped.
        let mut w = store.writer("r", 0, None).unwrap();
        assert_eq!(w.offset(), 3);
        w.write(b"def").unwrap();
        let d = w.commit(6, None).unwrap();
        assert_eq!(read_all(&store, &d), b"abcdef");
        assert!(refs(&store).is_empty());
    }

    #[test]
    fn wrong_digest_commit_keeps_ingest_resumable() {
        let (_tmp, store) = store();
        let mut w = store.writer("r", 0, None).unwrap();
        w.write(b"abc").unwrap();
        let wrong = Digest::of(b"abd");
        let err = w.commit(3, Some(wrong.clone())).unwrap_err();
        assert_eq!(err.class(), Class::FailedPrecondition);
        assert_eq!(
            err.message(),
            format!(
                "unexpected commit digest {}, expected {wrong}",
                Digest::of(b"abc")
            )
        );
        assert_eq!(refs(&store), ["r"]);
        assert!(walked(&store).is_empty());
        let w = store.writer("r", 0, None).unwrap();
        assert_eq!(w.offset(), 3);
        assert_eq!(
            w.commit(3, Some(Digest::of(b"abc"))).unwrap(),
            Digest::of(b"abc")
        );
    }

    #[test]
    fn expected_digest_given_at_open_is_checked_at_commit() {
        let (_tmp, store) = store();
        let mut w = store.writer("r", 0, Some(Digest::of(b"xyz"))).unwrap();
        w.write(b"abc").unwrap();
        assert_eq!(
            w.commit(0, None).unwrap_err().class(),
            Class::FailedPrecondition
        );
        assert_eq!(refs(&store), ["r"]);
    }

    #[test]
    fn second_writer_on_same_ref_is_unavailable_until_drop() {
        let (_tmp, store) = store();
        let w = store.writer("r", 0, None).unwrap();
        let err = store.writer("r", 0, None).unwrap_err();
        assert_eq!(err.class(), Class::Unavailable);
        assert_eq!(err.message(), "ref r locked: unavailable");
        let other = store.writer("other", 0, None).unwrap();
        drop(w);
        store.writer("r", 0, None).unwrap();
        drop(other);
    }

    #[test]
    fn ingest_resumes_after_restart_at_the_right_offset() {
        let tmp = tempfile::tempdir().unwrap();
        let blob = data(300_000, 99);
        let (head, tail) = blob.split_at(123_457);
        let started_at;
        {
            let store = Store::open(tmp.path()).unwrap();
            let mut w = store.writer("layer", blob.len() as i64, None).unwrap();
            w.write(head).unwrap();
            started_at = w.status().started_at;
        }
        let store = Store::open(tmp.path()).unwrap();
        let status = store.status("layer").unwrap();
        assert_eq!(
            (status.offset, status.total),
            (head.len() as i64, blob.len() as i64)
        );
        assert_eq!(status.started_at, started_at);
        let mut w = store.writer("layer", 0, None).unwrap();
        assert_eq!(w.offset(), head.len() as i64);
        assert_eq!(w.status().total, blob.len() as i64);
        assert_eq!(w.digest(), Digest::of(head));
        w.write(tail).unwrap();
        let d = w
            .commit(blob.len() as i64, Some(Digest::of(&blob)))
            .unwrap();
        assert_eq!(read_all(&store, &d), blob);
    }

    #[test]
    fn ingest_with_a_different_total_starts_over() {
        let (_tmp, store) = store();
        let mut w = store.writer("r", 10, None).unwrap();
        w.write(b"abc").unwrap();
        drop(w);
        let w = store.writer("r", 20, None).unwrap();
        assert_eq!((w.offset(), w.status().total), (0, 20));
    }

    #[test]
    fn expected_digest_already_present_is_already_exists() {
        let (_tmp, store) = store();
        let mut w = store.writer("a", 0, None).unwrap();
        w.write(b"hello").unwrap();
        let d = w.commit(5, None).unwrap();
        let err = store.writer("b", 5, Some(d.clone())).unwrap_err();
        assert_eq!(err.class(), Class::AlreadyExists);
        assert_eq!(err.message(), format!("content {d}: already exists"));
        // The failed open released the lock and created nothing.
        assert!(refs(&store).is_empty());
        drop(store.writer("b", 0, None).unwrap());
    }

    #[test]
    fn committing_existing_content_removes_the_ingest() {
        let (_tmp, store) = store();
        for (i, r) in ["a", "b"].into_iter().enumerate() {
            let mut w = store.writer(r, 0, None).unwrap();
            w.write(b"same").unwrap();
            let res = w.commit(4, None);
            if i == 0 {
                res.unwrap();
            } else {
                let err = res.unwrap_err();
                assert_eq!(err.class(), Class::AlreadyExists);
                assert_eq!(
                    err.message(),
                    format!("content {}: already exists", Digest::of(b"same"))
                );
            }
        }
        assert!(refs(&store).is_empty());
        assert_eq!(walked(&store).len(), 1);
    }

    #[test]
    fn hostile_refs_stay_inside_the_root() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("a").join("b").join("content");
        let store = Store::open(&root).unwrap();
        let long = "x/".repeat(4000);
        let hostile = [
            "../../x",
            "a/b",
            "/etc/passwd",
            "..",
            ".",
            long.as_str(),
            "ünï\ncode",
        ];
        for r in hostile {
            let mut w = store.writer(r, 0, None).unwrap();
            w.write(r.as_bytes()).unwrap();
        }
        let mut want: Vec<String> = hostile.iter().map(|r| r.to_string()).collect();
        want.sort();
        assert_eq!(refs(&store), want);
        for entry in fs::read_dir(root.join("ingest")).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            assert_eq!(name.len(), 64, "{name}");
        }
        // Nothing was created next to or above the root.
        let names = |p: &Path| -> Vec<String> {
            fs::read_dir(p)
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect()
        };
        assert_eq!(names(tmp.path()), ["a"]);
        assert_eq!(names(&tmp.path().join("a")), ["b"]);
        let mut top = names(&root);
        top.sort();
        assert_eq!(top, ["blobs", "ingest"]);
        for r in hostile {
            store.abort(r).unwrap();
        }
        assert!(refs(&store).is_empty());
    }

    #[test]
    fn invalid_refs_are_invalid_argument() {
        let (_tmp, store) = store();
        for r in ["", "a\0b"] {
            assert_eq!(
                store.writer(r, 0, None).unwrap_err().class(),
                Class::InvalidArgument,
                "{r:?}"
            );
        }
        assert!(refs(&store).is_empty());
    }

    #[test]
    fn abort_removes_the_ingest_and_unknown_refs_are_not_found() {
        let (_tmp, store) = store();
        let mut w = store.writer("r", 0, None).unwrap();
        w.write(b"abc").unwrap();
        drop(w);
        store.abort("r").unwrap();
        assert!(refs(&store).is_empty());
        assert!(!store.ingest_dir("r").exists());
        let err = store.abort("r").unwrap_err();
        assert_eq!(
            (err.class(), err.message()),
            (Class::NotFound, "ingest ref \"r\": not found")
        );
        assert_eq!(store.status("r").unwrap_err().class(), Class::NotFound);
        // A later writer starts from scratch.
        assert_eq!(store.writer("r", 0, None).unwrap().offset(), 0);
    }

    #[test]
    fn walk_lists_committed_blobs_only_in_digest_order() {
        let (_tmp, store) = store();
        let mut committed = Vec::new();
        for i in 0..3u64 {
            let mut w = store.writer(&format!("c{i}"), 0, None).unwrap();
            w.write(&data(100, i + 1)).unwrap();
            committed.push(w.commit(100, None).unwrap());
        }
        let mut open = store.writer("open", 0, None).unwrap();
        open.write(b"pending").unwrap();
        fs::write(store.blobs_dir().join("not-a-digest"), b"x").unwrap();
        committed.sort();
        assert_eq!(walked(&store), committed);
        let mut seen = 0;
        let err = store
            .walk(&mut |_| {
                seen += 1;
                Err(Error::internal("stop"))
            })
            .unwrap_err();
        assert_eq!((err.message(), seen), ("stop", 1));
    }

    #[test]
    fn delete_info_and_reader_of_unknown_blobs_are_not_found() {
        let (_tmp, store) = store();
        let mut w = store.writer("r", 0, None).unwrap();
        w.write(b"gone").unwrap();
        let d = w.commit(0, None).unwrap();
        store.delete(&d).unwrap();
        let msg = format!("content digest {d}: not found");
        for err in [
            store.delete(&d).unwrap_err(),
            store.info(&d).unwrap_err(),
            store.reader(&d).unwrap_err(),
        ] {
            assert_eq!(
                (err.class(), err.message()),
                (Class::NotFound, msg.as_str())
            );
        }
        assert!(walked(&store).is_empty());
    }

    #[test]
    fn status_of_an_open_ingest_tracks_writes() {
        let (_tmp, store) = store();
        let expected = Digest::of(b"abcdef");
        let mut w = store.writer("r", 6, Some(expected.clone())).unwrap();
        w.write(b"abcd").unwrap();
        let on_disk = store.status("r").unwrap();
        assert_eq!(
            (on_disk.ref_.as_str(), on_disk.offset, on_disk.total),
            ("r", 4, 6)
        );
        let live = w.status();
        assert_eq!(
            (live.offset, live.total, live.expected),
            (4, 6, Some(expected))
        );
        assert!(live.updated_at >= live.started_at);
    }
}
