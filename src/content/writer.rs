//! The writer of one ingest: appends to `ingest/<key>/data`, hashes as it goes, and commits the
//! data into `blobs/sha256/` by rename.
//!
//! A writer holds its ref's lock until dropped. Dropping it without committing leaves the
//! ingest on disk, resumable by the next [`Store::writer`](super::Store::writer) for the ref.
//! Runs on the thread of the call that drives the write stream; chunks of at least
//! [`PIPELINE_MIN_CHUNK`] given to [`Writer::append`] are hashed and written by the ingest's
//! [`Pipeline`] threads, which run until a call needs the writer settled (write, truncate,
//! commit, drop).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read as _, Seek as _, SeekFrom, Write as _};
use std::os::unix::fs::PermissionsExt as _;
use std::path::PathBuf;
use std::time::SystemTime;

use sha2::{Digest as _, Sha256};

use crate::errdefs::{Class, Error};

use super::digest::Digest;
use super::ingest::{self, io_error};
use super::pipeline::Pipeline;
use super::{Appended, RefLock, Status};

/// The smallest chunk [`Writer::append`] hands to the pipeline threads (starting them if
/// need be): a small blob is hashed and written inline, without a thread.
pub const PIPELINE_MIN_CHUNK: usize = 64 << 10;

/// An open ingest; see the module docs.
#[derive(Debug)]
pub struct Writer {
    lock: RefLock,
    dir: PathBuf,
    blobs_dir: PathBuf,
    /// `None` only once the data file has been handed to the blob store.
    file: Option<File>,
    /// The hash of the file's bytes while no pipeline runs.
    hasher: Sha256,
    /// The stages hashing and writing appended chunks, while any run.
    pipeline: Option<Pipeline>,
    /// Bytes written, or handed to the pipeline.
    offset: i64,
    total: i64,
    expected: Option<Digest>,
    started_at: SystemTime,
    updated_at: SystemTime,
}

impl Writer {
    /// Creates the ingest in `dir`, or resumes it when it already holds a valid ingest of the
    /// same ref (and a compatible total). The caller holds `lock` for the ref.
    pub(super) fn open(
        lock: RefLock,
        dir: PathBuf,
        blobs_dir: PathBuf,
        total: i64,
        expected: Option<Digest>,
    ) -> Result<Writer, Error> {
        let ref_ = lock.ref_().to_owned();
        let fresh = match fs::create_dir(&dir) {
            Ok(()) => true,
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => false,
            Err(err) => return Err(io_error(format!("create ingest for ref {ref_:?}"))(err)),
        };
        let resumable = if fresh {
            None
        } else {
            match ingest::read_record(&dir) {
                Ok(r) if r.ref_ == ref_ && (total <= 0 || r.total <= 0 || r.total == total) => {
                    Some(r)
                }
                Ok(_) => {
                    log::info!("ingest for ref {ref_:?} does not match the request; starting over");
                    None
                }
                Err(err) => {
                    log::info!("ingest for ref {ref_:?} cannot be resumed ({err}); starting over");
                    None
                }
            }
        };
        let data = dir.join(ingest::DATA);
        let open_err = || io_error(format!("open ingest data for ref {ref_:?}"));
        let mut w = match resumable {
            Some(record) => {
                let mut file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&data)
                    .map_err(open_err())?;
                let hasher = hash_prefix(&mut file, u64::MAX).map_err(open_err())?;
                let offset =
                    i64::try_from(file.stream_position().map_err(open_err())?).map_err(|_| {
                        Error::internal(format!("ingest for ref {ref_:?} is too large"))
                    })?;
                let total = if record.total > 0 {
                    record.total
                } else {
                    total
                };
                if record.total <= 0 && total > 0 {
                    ingest::write_total(&dir, total)?;
                }
                Writer {
                    lock,
                    dir,
                    blobs_dir,
                    file: Some(file),
                    hasher,
                    pipeline: None,
                    offset,
                    total,
                    expected,
                    started_at: record.started_at,
                    updated_at: record.updated_at,
                }
            }
            None => {
                let now = SystemTime::now();
                ingest::write_fresh(&dir, &ref_, total, now)?;
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .open(&data)
                    .map_err(open_err())?;
                Writer {
                    lock,
                    dir,
                    blobs_dir,
                    file: Some(file),
                    hasher: Sha256::new(),
                    pipeline: None,
                    offset: 0,
                    total: total.max(0),
                    expected,
                    started_at: now,
                    updated_at: now,
                }
            }
        };
        let offset = w.offset as u64;
        w.file_mut()?
            .seek(SeekFrom::Start(offset))
            .map_err(io_error("seek to the write offset"))?;
        Ok(w)
    }

    fn file_mut(&mut self) -> Result<&mut File, Error> {
        self.file.as_mut().ok_or_else(committed)
    }

    /// The ref this writer holds.
    pub fn ref_(&self) -> &str {
        self.lock.ref_()
    }

    /// The progress so far, as this writer knows it.
    pub fn status(&self) -> Status {
        Status {
            ref_: self.ref_().to_owned(),
            offset: self.offset,
            total: self.total,
            expected: self.expected.clone(),
            started_at: self.started_at,
            updated_at: self.updated_at,
        }
    }

    /// Bytes written so far, including those of a resumed ingest and those appended and not
    /// yet settled.
    pub fn offset(&self) -> i64 {
        self.offset
    }

    /// Records a new expected total (ignored unless > 0).
    pub fn set_total(&mut self, total: i64) -> Result<(), Error> {
        if total > 0 && total != self.total {
            ingest::write_total(&self.dir, total)?;
            self.total = total;
        }
        Ok(())
    }

    /// Appends `data` at the current offset, once every appended chunk is settled. On failure
    /// the data file is cut back to the old offset, so the writer stays consistent with its
    /// hash.
    pub fn write(&mut self, data: &[u8]) -> Result<(), Error> {
        self.settle_all()?;
        let offset = self.offset;
        let file = self.file_mut()?;
        if let Err(err) = file.write_all(data) {
            // Best effort: undo a partial append; a failure here shows up on commit.
            let _ = file.set_len(offset as u64);
            let _ = file.seek(SeekFrom::Start(offset as u64));
            return Err(io_error("write ingest data")(err));
        }
        self.hasher.update(data);
        self.offset += data.len() as i64;
        self.updated_at = SystemTime::now();
        Ok(())
    }

    /// Appends `data` after everything given before, taking the chunk itself: a chunk of at
    /// least [`PIPELINE_MIN_CHUNK`] (or any chunk while the pipeline runs) goes to the
    /// pipeline threads and None is returned at once, its outcome to come from
    /// [`settle`](Writer::settle); a smaller one is written here and its outcome returned.
    pub fn append(&mut self, data: Vec<u8>) -> Result<Option<Appended>, Error> {
        if self.pipeline.is_none() && data.len() >= PIPELINE_MIN_CHUNK {
            let file = self.file.as_ref().ok_or_else(committed)?;
            match Pipeline::start(file, &self.hasher, self.offset) {
                Ok(pipeline) => self.pipeline = Some(pipeline),
                // Written inline instead.
                Err(err) => log::debug!("ref {:?}: no ingest pipeline: {err}", self.ref_()),
            }
        }
        let Some(pipeline) = &mut self.pipeline else {
            self.write(&data)?;
            return Ok(Some(Appended {
                offset: self.offset,
                digest: self.digest(),
            }));
        };
        let end = self.offset + data.len() as i64;
        pipeline.push(data, end)?;
        self.offset = end;
        self.updated_at = SystemTime::now();
        Ok(None)
    }

    /// The outcome of the oldest appended chunk not yet settled, in order (with `wait`,
    /// once it is done). None when every appended chunk is settled, or without `wait` when
    /// the oldest is still in work. After a failure the writer is consistent again (cut back
    /// to the last chunk written whole) only once [`settle_all`](Writer::settle_all) ran.
    pub fn settle(&mut self, wait: bool) -> Option<Result<Appended, Error>> {
        self.pipeline.as_mut()?.settle(wait)
    }

    /// Waits for every appended chunk and stops the pipeline threads; the first failure.
    /// After a failure the ingest holds the chunks written whole before it, hashed again.
    pub fn settle_all(&mut self) -> Result<(), Error> {
        let Some(pipeline) = self.pipeline.take() else {
            return Ok(());
        };
        let (hasher, result) = pipeline.finish();
        let Err(err) = result else {
            self.hasher = hasher;
            return Ok(());
        };
        let file = self.file_mut()?;
        let rehashed = hash_prefix(file, u64::MAX).and_then(|h| Ok((h, file.stream_position()?)));
        match rehashed {
            Ok((hasher, end)) => {
                self.hasher = hasher;
                self.offset = end as i64;
            }
            Err(again) => {
                // Nothing consistent to go on with: the writer refuses further use.
                log::warn!(
                    "ref {:?}: cannot read the ingest back: {again}",
                    self.ref_()
                );
                self.file = None;
            }
        }
        Err(err)
    }

    /// Cuts the ingest back to `size` bytes (0 restarts it) and rebuilds the hash of what stays.
    pub fn truncate(&mut self, size: i64) -> Result<(), Error> {
        self.settle_all()?;
        if size < 0 || size > self.offset {
            return Err(Error::invalid_argument(format!(
                "cannot truncate ingest of {} bytes to {size}",
                self.offset
            )));
        }
        let file = self.file_mut()?;
        let err = io_error("truncate ingest data");
        let hasher = file
            .set_len(size as u64)
            .and_then(|()| hash_prefix(file, size as u64));
        self.hasher = hasher.map_err(err)?;
        self.offset = size;
        self.updated_at = SystemTime::now();
        Ok(())
    }

    /// The digest of the bytes written so far (while chunks are appended and not yet
    /// settled, of those settled).
    pub fn digest(&self) -> Digest {
        match &self.pipeline {
            Some(pipeline) => pipeline.settled_digest().clone(),
            None => Digest::from_sha256(&self.hasher.clone().finalize().into()),
        }
    }

    /// Validates and commits the ingest as a blob, returning its digest. `size` (if > 0) and
    /// `expected` (or the digest given when opening) must match the data; a mismatch leaves the
    /// ingest resumable. A blob that already exists removes the ingest and is AlreadyExists.
    pub fn commit(mut self, size: i64, expected: Option<Digest>) -> Result<Digest, Error> {
        self.settle_all()?;
        if size > 0 && size != self.offset {
            return Err(Error::failed_precondition(format!(
                "{:?} failed size validation: {} != {size}",
                self.ref_(),
                self.offset
            )));
        }
        let actual = self.digest();
        if let Some(expected) = expected.or_else(|| self.expected.clone()) {
            if expected != actual {
                return Err(Error::failed_precondition(format!(
                    "unexpected commit digest {actual}, expected {expected}"
                )));
            }
        }
        let target = self.blobs_dir.join(actual.hex());
        let file = self
            .file
            .take()
            .expect("an uncommitted writer has its data file");
        if target.exists() {
            drop(file);
            self.remove_ingest();
            return Err(Error::new(
                Class::AlreadyExists,
                format!("content {actual}: already exists"),
            ));
        }
        // Made read-only and durable before the rename, so the blob appears whole and final.
        let prepare = file
            .set_modified(SystemTime::now())
            .and_then(|()| file.set_permissions(fs::Permissions::from_mode(0o444)))
            .and_then(|()| file.sync_all());
        if let Err(err) = prepare.and_then(|()| fs::rename(self.dir.join(ingest::DATA), &target)) {
            // Leave the ingest writable so it can be resumed.
            let _ = file.set_permissions(fs::Permissions::from_mode(0o644));
            return Err(io_error(format!("commit {actual}"))(err));
        }
        drop(file);
        File::open(&self.blobs_dir)
            .and_then(|dir| dir.sync_all())
            .map_err(io_error(format!("sync {}", self.blobs_dir.display())))?;
        self.remove_ingest();
        Ok(actual)
    }

    fn remove_ingest(&self) {
        if let Err(err) = fs::remove_dir_all(&self.dir) {
            log::warn!("failed to remove ingest for ref {:?}: {err}", self.ref_());
        }
    }
}

impl Drop for Writer {
    /// Leaves an uncommitted ingest resumable: data synced, `updatedat` recorded.
    fn drop(&mut self) {
        if let Err(err) = self.settle_all() {
            log::debug!("ref {:?}: {err}", self.ref_());
        }
        if let Some(file) = self.file.take() {
            let _ = file.sync_data();
            if let Err(err) =
                ingest::write_timestamp(&self.dir.join(ingest::UPDATED_AT), self.updated_at)
            {
                log::debug!("ref {:?}: {err}", self.ref_());
            }
        }
    }
}

fn committed() -> Error {
    Error::failed_precondition("cannot write on a committed writer")
}

/// A hasher fed with the first `len` bytes of `file`; leaves the file positioned after them.
fn hash_prefix(file: &mut File, len: u64) -> io::Result<Sha256> {
    file.seek(SeekFrom::Start(0))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut reader = (&mut *file).take(len);
    loop {
        match reader.read(&mut buf) {
            Ok(0) => return Ok(hasher),
            Ok(n) => hasher.update(&buf[..n]),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::Store;
    use super::*;

    #[test]
    fn truncate_to_zero_restarts_the_ingest() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path()).unwrap();
        let mut w = store.writer("r", 0, None).unwrap();
        w.write(b"wrong data").unwrap();
        w.truncate(0).unwrap();
        assert_eq!((w.offset(), w.digest()), (0, Digest::of(b"")));
        w.write(b"xyz").unwrap();
        assert_eq!(w.commit(3, None).unwrap(), Digest::of(b"xyz"));
    }

    #[test]
    fn truncate_keeps_the_prefix_and_its_hash() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path()).unwrap();
        let mut w = store.writer("r", 0, None).unwrap();
        w.write(b"abcXXX").unwrap();
        w.truncate(3).unwrap();
        assert_eq!(w.digest(), Digest::of(b"abc"));
        w.write(b"def").unwrap();
        assert_eq!(store.status("r").unwrap().offset, 6);
        assert_eq!(w.truncate(7).unwrap_err().class(), Class::InvalidArgument);
        assert_eq!(w.truncate(-1).unwrap_err().class(), Class::InvalidArgument);
        assert_eq!(w.commit(6, None).unwrap(), Digest::of(b"abcdef"));
    }

    #[test]
    fn large_appends_settle_in_order_and_commit_like_writes() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path()).unwrap();
        let blob = super::super::tests::data(3 * PIPELINE_MIN_CHUNK + 5, 7);
        let mut w = store.writer("r", 0, None).unwrap();
        // A small chunk first: written at once, no thread.
        let first = w.append(blob[..5].to_vec()).unwrap().unwrap();
        assert_eq!((first.offset, first.digest), (5, Digest::of(&blob[..5])));
        let ends = [PIPELINE_MIN_CHUNK + 5, 3 * PIPELINE_MIN_CHUNK + 5];
        assert!(w.append(blob[5..ends[0]].to_vec()).unwrap().is_none());
        assert!(w.append(blob[ends[0]..].to_vec()).unwrap().is_none());
        // The offset counts what was handed over; the status too.
        assert_eq!(w.offset(), blob.len() as i64);
        assert_eq!(store.status("r").unwrap().ref_, "r");
        for end in ends {
            let appended = w.settle(true).unwrap().unwrap();
            assert_eq!(appended.offset, end as i64);
            assert_eq!(appended.digest, Digest::of(&blob[..end]));
        }
        assert!(w.settle(true).is_none());
        assert_eq!(w.digest(), Digest::of(&blob));
        // A synchronous write after appends goes on at the end.
        w.write(b"tail").unwrap();
        let whole = [blob.as_slice(), b"tail"].concat();
        assert_eq!(
            w.commit(whole.len() as i64, None).unwrap(),
            Digest::of(&whole)
        );
    }

    #[test]
    fn a_wrong_digest_after_unsettled_appends_fails_and_stays_resumable() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path()).unwrap();
        let blob = super::super::tests::data(PIPELINE_MIN_CHUNK + 1, 3);
        let mut w = store.writer("r", 0, None).unwrap();
        assert!(w.append(blob.clone()).unwrap().is_none());
        let wrong = Digest::of(b"other");
        let err = w
            .commit(blob.len() as i64, Some(wrong.clone()))
            .unwrap_err();
        assert_eq!(err.class(), Class::FailedPrecondition);
        assert_eq!(
            err.message(),
            format!(
                "unexpected commit digest {}, expected {wrong}",
                Digest::of(&blob)
            )
        );
        let w = store.writer("r", 0, None).unwrap();
        assert_eq!(w.offset(), blob.len() as i64);
        assert_eq!(
            w.commit(blob.len() as i64, None).unwrap(),
            Digest::of(&blob)
        );
    }

    #[test]
    fn appends_left_unsettled_are_on_disk_and_resumable_after_drop() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path()).unwrap();
        let blob = super::super::tests::data(2 * PIPELINE_MIN_CHUNK, 9);
        let mut w = store.writer("r", 0, None).unwrap();
        assert!(w
            .append(blob[..PIPELINE_MIN_CHUNK].to_vec())
            .unwrap()
            .is_none());
        assert!(w
            .append(blob[PIPELINE_MIN_CHUNK..].to_vec())
            .unwrap()
            .is_none());
        drop(w);
        let mut w = store.writer("r", 0, None).unwrap();
        assert_eq!(w.offset(), blob.len() as i64);
        assert_eq!(w.digest(), Digest::of(&blob));
        // Truncating settles first and keeps the prefix's hash.
        assert!(w.append(vec![1; PIPELINE_MIN_CHUNK]).unwrap().is_none());
        w.truncate(PIPELINE_MIN_CHUNK as i64).unwrap();
        assert_eq!(w.digest(), Digest::of(&blob[..PIPELINE_MIN_CHUNK]));
        assert!(w.settle(true).is_none());
    }

    #[test]
    fn dropping_a_writer_records_updatedat_and_keeps_the_data() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path()).unwrap();
        let mut w = store.writer("r", 0, None).unwrap();
        w.write(b"abc").unwrap();
        let updated = w.status().updated_at;
        let dir = w.dir.clone();
        drop(w);
        let recorded = ingest::read_timestamp(&dir.join(ingest::UPDATED_AT)).unwrap();
        assert_eq!(recorded, updated);
        assert_eq!(fs::read(dir.join(ingest::DATA)).unwrap(), b"abc");
    }
}
