//! The hash and write stages of a large ingest: while the call's thread receives the next
//! chunk, a `ctrd-hash` thread hashes the chunks handed over and a `ctrd-write` thread appends
//! them to the ingest's data file, each chunk shared by both (never copied).
//!
//! Protocol:
//! 1. [`Pipeline::start`] spawns both threads with the hash state so far and a duplicate of
//!    the data file's descriptor (positioned at the end of what was written).
//! 2. [`Pipeline::push`] hands a chunk to both stages; it blocks only while a stage still has
//!    [`QUEUED`] chunks waiting, which bounds the memory an ingest holds.
//! 3. [`Pipeline::settle`] gives the outcome of the oldest chunk not yet settled, in order,
//!    once both stages are done with it: the ingest's size and digest after it, or the write's
//!    failure. After a failure the write stage drops every later chunk unwritten and cuts the
//!    file back to the end of the last chunk it wrote whole.
//! 4. [`Pipeline::finish`] closes both queues, joins the threads and returns the hash state
//!    (ahead of the file after a failure, so the owner hashes the file again then).

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Seek as _, SeekFrom, Write as _};
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};
use parking_lot::{Condvar, Mutex};
use sha2::{Digest as _, Sha256};

use crate::errdefs::Error;

use super::digest::Digest;
use super::ingest::io_error;
use super::Appended;

/// Chunks a stage may have waiting besides the one it works on.
pub(super) const QUEUED: usize = 1;

/// How many written bytes the write stage lets gather before it starts their writeback, so
/// the commit's `fsync` waits for the last few MiB only instead of the whole blob.
const WRITEBACK_STEP: i64 = 8 << 20;

type Chunk = Arc<Vec<u8>>;

/// The stages of one ingest; see the module docs.
#[derive(Debug)]
pub(super) struct Pipeline {
    hash_tx: Sender<Chunk>,
    write_tx: Sender<Chunk>,
    hash_thread: JoinHandle<Sha256>,
    write_thread: JoinHandle<()>,
    progress: Arc<Progress>,
    /// The ingest's size after each chunk handed over and not yet settled, oldest first.
    ends: VecDeque<i64>,
    /// The digest after the last settled chunk.
    settled: Digest,
}

/// What the stages have done that the owner has not yet settled.
#[derive(Debug, Default)]
struct Progress {
    done: Mutex<Done>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct Done {
    /// The digest after each hashed chunk, oldest first.
    hashed: VecDeque<Digest>,
    /// How many chunks were written whole.
    written: usize,
    /// The write stage's failure, on the chunk after the `written` ones.
    failed: Option<Error>,
}

impl Progress {
    fn update(&self, f: impl FnOnce(&mut Done)) {
        f(&mut self.done.lock());
        self.changed.notify_all();
    }
}

impl Pipeline {
    /// Starts the stages for an ingest whose `file` holds `offset` bytes hashed into `hasher`.
    pub(super) fn start(file: &File, hasher: &Sha256, offset: i64) -> io::Result<Pipeline> {
        let file = file.try_clone()?;
        let settled = Digest::from_sha256(&hasher.clone().finalize().into());
        let progress = Arc::new(Progress::default());
        let (hash_tx, hash_rx) = crossbeam_channel::bounded(QUEUED);
        let (write_tx, write_rx) = crossbeam_channel::bounded(QUEUED);
        let hash_thread = std::thread::Builder::new()
            .name("ctrd-hash".into())
            .spawn({
                let (hasher, progress) = (hasher.clone(), progress.clone());
                move || hash_stage(hasher, &hash_rx, &progress)
            })?;
        let write_thread = std::thread::Builder::new()
            .name("ctrd-write".into())
            .spawn({
                let progress = progress.clone();
                move || write_stage(file, offset, &write_rx, &progress)
            });
        let write_thread = match write_thread {
            Ok(thread) => thread,
            Err(err) => {
                drop(hash_tx);
                let _ = hash_thread.join();
                return Err(err);
            }
        };
        Ok(Pipeline {
            hash_tx,
            write_tx,
            hash_thread,
            write_thread,
            progress,
            ends: VecDeque::new(),
            settled,
        })
    }

    /// Hands `chunk` to both stages; `end` is the ingest's size after it.
    pub(super) fn push(&mut self, chunk: Vec<u8>, end: i64) -> Result<(), Error> {
        let chunk = Arc::new(chunk);
        let stopped = |_| Error::internal("an ingest stage stopped");
        self.hash_tx.send(chunk.clone()).map_err(stopped)?;
        self.write_tx.send(chunk).map_err(stopped)?;
        self.ends.push_back(end);
        Ok(())
    }

    /// The digest after the last settled chunk (or of what the ingest held at the start).
    pub(super) fn settled_digest(&self) -> &Digest {
        &self.settled
    }

    /// The outcome of the oldest outstanding chunk; waits for it with `wait`. None when no
    /// chunk is outstanding, or without `wait` when the oldest is not done yet. A failure is
    /// returned again on every later call.
    pub(super) fn settle(&mut self, wait: bool) -> Option<Result<Appended, Error>> {
        if self.ends.is_empty() {
            return None;
        }
        let mut done = self.progress.done.lock();
        loop {
            if done.written > 0 && !done.hashed.is_empty() {
                done.written -= 1;
                let digest = done.hashed.pop_front()?;
                let offset = self.ends.pop_front()?;
                self.settled = digest.clone();
                return Some(Ok(Appended { offset, digest }));
            }
            if done.written == 0 {
                if let Some(err) = &done.failed {
                    return Some(Err(err.clone()));
                }
            }
            if !wait {
                return None;
            }
            self.progress.changed.wait(&mut done);
        }
    }

    /// Stops both stages after the chunks handed over; returns the hash state and the
    /// write stage's failure, if any (then the file ends at the last chunk written whole).
    pub(super) fn finish(self) -> (Sha256, Result<(), Error>) {
        drop(self.hash_tx);
        drop(self.write_tx);
        let written = self.write_thread.join();
        let hashed = self.hash_thread.join();
        let failed = self.progress.done.lock().failed.take();
        let result = match (written, failed) {
            (Err(_), _) => Err(Error::internal("the ingest write stage panicked")),
            (Ok(()), Some(err)) => Err(err),
            (Ok(()), None) => Ok(()),
        };
        match hashed {
            Ok(hasher) => (hasher, result),
            Err(_) => (
                Sha256::new(),
                result.and(Err(Error::internal("the ingest hash stage panicked"))),
            ),
        }
    }
}

fn hash_stage(mut hasher: Sha256, chunks: &Receiver<Chunk>, progress: &Progress) -> Sha256 {
    for chunk in chunks {
        hasher.update(chunk.as_slice());
        drop(chunk);
        let digest = Digest::from_sha256(&hasher.clone().finalize().into());
        progress.update(|done| done.hashed.push_back(digest));
    }
    hasher
}

/// Appends each chunk at the end of `file` (which holds `offset` bytes). After a failed
/// write the file is cut back to `offset` and the remaining chunks are only taken off the
/// queue, so the owner never blocks on a stage that gave up.
fn write_stage(mut file: File, mut offset: i64, chunks: &Receiver<Chunk>, progress: &Progress) {
    let mut failed = false;
    // Where the bytes not yet handed to writeback start.
    let mut unflushed = offset;
    for chunk in chunks {
        if failed {
            continue;
        }
        match file.write_all(&chunk) {
            Ok(()) => {
                offset += chunk.len() as i64;
                drop(chunk);
                progress.update(|done| done.written += 1);
                if offset - unflushed >= WRITEBACK_STEP {
                    if let Err(err) = crate::sys::start_writeback(
                        &file,
                        unflushed as u64,
                        (offset - unflushed) as u64,
                    ) {
                        log::debug!("ingest writeback: {err}");
                    }
                    unflushed = offset;
                }
            }
            Err(err) => {
                // Best effort: undo a partial append; a failure here shows up on commit.
                let _ = file.set_len(offset as u64);
                let _ = file.seek(SeekFrom::Start(offset as u64));
                failed = true;
                let err = io_error("write ingest data")(err);
                progress.update(|done| done.failed = Some(err));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest_of(parts: &[&[u8]]) -> Digest {
        Digest::of(&parts.concat())
    }

    #[test]
    fn chunks_settle_in_order_with_the_digest_after_each() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("data");
        let mut file = File::create(&path).unwrap();
        file.write_all(b"abc").unwrap();
        let mut hasher = Sha256::new();
        hasher.update(b"abc");
        let mut pipeline = Pipeline::start(&file, &hasher, 3).unwrap();
        assert_eq!(pipeline.settled_digest(), &Digest::of(b"abc"));
        assert!(pipeline.settle(true).is_none(), "nothing outstanding");

        pipeline.push(b"def".to_vec(), 6).unwrap();
        pipeline.push(b"ghij".to_vec(), 10).unwrap();
        let first = pipeline.settle(true).unwrap().unwrap();
        assert_eq!(first.offset, 6);
        assert_eq!(first.digest, digest_of(&[b"abc", b"def"]));
        let second = pipeline.settle(true).unwrap().unwrap();
        assert_eq!(
            (second.offset, &second.digest),
            (10, &Digest::of(b"abcdefghij"))
        );
        assert_eq!(pipeline.settled_digest(), &second.digest);
        assert!(pipeline.settle(false).is_none(), "nothing outstanding");

        let (hasher, result) = pipeline.finish();
        result.unwrap();
        let whole = Digest::from_sha256(&hasher.finalize().into());
        assert_eq!(whole, Digest::of(b"abcdefghij"));
        assert_eq!(std::fs::read(&path).unwrap(), b"abcdefghij");
        // The shared file position is at the end, where the owner appends next.
        assert_eq!(file.stream_position().unwrap(), 10);
    }

    #[test]
    fn a_failed_write_is_reported_in_order_and_later_chunks_are_dropped() {
        // A read-only descriptor: every write fails.
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("data");
        std::fs::write(&path, b"xy").unwrap();
        let file = File::open(&path).unwrap();
        let mut hasher = Sha256::new();
        hasher.update(b"xy");
        let mut pipeline = Pipeline::start(&file, &hasher, 2).unwrap();
        pipeline.push(b"one".to_vec(), 5).unwrap();
        pipeline.push(b"two".to_vec(), 8).unwrap();
        let err = pipeline.settle(true).unwrap().unwrap_err();
        assert!(
            err.message().starts_with("write ingest data"),
            "{}",
            err.message()
        );
        // The failure stays.
        assert!(pipeline.settle(true).unwrap().is_err());
        let (_hasher, result) = pipeline.finish();
        assert_eq!(result.unwrap_err().message(), err.message());
        assert_eq!(std::fs::read(&path).unwrap(), b"xy");
    }
}
