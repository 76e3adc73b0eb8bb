//! The writer of one ingest: appends to `ingest/<key>/data`, hashes as it goes, and commits the
//! data into `blobs/sha256/` by rename.
//!
//! A writer holds its ref's lock until dropped. Dropping it without committing leaves the
//! ingest on disk, resumable by the next [`Store::writer`](super::Store::writer) for the ref.
//! Runs on the thread of the call that drives the write stream.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read as _, Seek as _, SeekFrom, Write as _};
use std::os::unix::fs::PermissionsExt as _;
use std::path::PathBuf;
use std::time::SystemTime;

use sha2::{Digest as _, Sha256};

use crate::errdefs::{Class, Error};

use super::digest::Digest;
use super::ingest::{self, io_error};
use super::{RefLock, Status};

/// An open ingest; see the module docs.
#[derive(Debug)]
pub struct Writer {
    lock: RefLock,
    dir: PathBuf,
    blobs_dir: PathBuf,
    /// `None` only once the data file has been handed to the blob store.
    file: Option<File>,
    hasher: Sha256,
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
        self.file
            .as_mut()
            .ok_or_else(|| Error::failed_precondition("cannot write on a committed writer"))
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

    /// Bytes written so far, including those of a resumed ingest.
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

    /// Appends `data` at the current offset. On failure the data file is cut back to the old
    /// offset, so the writer stays consistent with its hash.
    pub fn write(&mut self, data: &[u8]) -> Result<(), Error> {
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

    /// Cuts the ingest back to `size` bytes (0 restarts it) and rebuilds the hash of what stays.
    pub fn truncate(&mut self, size: i64) -> Result<(), Error> {
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

    /// The digest of the bytes written so far.
    pub fn digest(&self) -> Digest {
        Digest::from_sha256(&self.hasher.clone().finalize().into())
    }

    /// Validates and commits the ingest as a blob, returning its digest. `size` (if > 0) and
    /// `expected` (or the digest given when opening) must match the data; a mismatch leaves the
    /// ingest resumable. A blob that already exists removes the ingest and is AlreadyExists.
    pub fn commit(mut self, size: i64, expected: Option<Digest>) -> Result<Digest, Error> {
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
