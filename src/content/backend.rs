//! What the namespaced content store needs from whatever holds the bytes: the local store
//! here, or an external content store reached over gRPC (`crate::proxy`).
//!
//! Calls carry the namespace so that a remote store can scope them as containerd does; the
//! local store shares blobs between namespaces and keeps each namespace's ingests under the
//! ref `<namespace>/<ref>` (namespaces are identifiers, so they never contain `/`).

use std::fs::File;
use std::os::unix::fs::FileExt;

use super::{Appended, Digest, Info, Status, Store, Writer};
use crate::errdefs::Error;

/// Positional reads of one blob.
pub trait ReadAt: Send {
    /// Reads up to `buf.len()` bytes at `offset`; 0 only at the end.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize, Error>;
}

impl ReadAt for File {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize, Error> {
        FileExt::read_at(self, buf, offset).map_err(Error::from)
    }
}

/// An open ingest.
pub trait BlobWriter: Send {
    /// Progress under the client's ref.
    fn status(&self) -> Status;
    fn offset(&self) -> i64;
    fn set_total(&mut self, total: i64) -> Result<(), Error>;
    fn write(&mut self, data: &[u8]) -> Result<(), Error>;
    /// Appends `data` after everything given before. A backend that hashes and writes on
    /// threads of its own (the local store) may return None at once and report the outcome
    /// through [`settle`](BlobWriter::settle); the default writes here and returns it.
    fn append(&mut self, data: Vec<u8>) -> Result<Option<Appended>, Error> {
        self.write(&data)?;
        Ok(Some(Appended {
            offset: self.offset(),
            digest: self.digest(),
        }))
    }
    /// The outcome of the oldest chunk [`append`](BlobWriter::append) returned None for and
    /// that is not yet settled, in order; with `wait` once it is done. None when no such
    /// chunk is left (or, without `wait`, the oldest is still in work).
    fn settle(&mut self, _wait: bool) -> Option<Result<Appended, Error>> {
        None
    }
    fn truncate(&mut self, size: i64) -> Result<(), Error>;
    /// The digest of the bytes written so far.
    fn digest(&self) -> Digest;
    /// Verifies and commits; AlreadyExists when the blob was already there.
    fn commit(self: Box<Self>, size: i64, expected: Option<Digest>) -> Result<Digest, Error>;
}

/// A content store backend; see the module documentation.
pub trait Backend: Send + Sync {
    fn info(&self, ns: &str, d: &Digest) -> Result<Info, Error>;
    fn reader(&self, ns: &str, d: &Digest) -> Result<Box<dyn ReadAt>, Error>;
    fn writer(
        &self,
        ns: &str,
        ref_: &str,
        total: i64,
        expected: Option<Digest>,
    ) -> Result<Box<dyn BlobWriter>, Error>;
    fn status(&self, ns: &str, ref_: &str) -> Result<Status, Error>;
    fn list_statuses(&self, ns: &str) -> Result<Vec<Status>, Error>;
    fn abort(&self, ns: &str, ref_: &str) -> Result<(), Error>;
    /// The local store, when this is it: only its blobs and ingests are garbage collected
    /// (an external store's contents are not ours to remove).
    fn local(&self) -> Option<&Store> {
        None
    }
}

fn local_ref(ns: &str, ref_: &str) -> String {
    format!("{ns}/{ref_}")
}

/// Errors from the local store name the namespaced ref; the client knows only its own.
fn rename_ref(err: Error, ns: &str, ref_: &str) -> Error {
    let local = local_ref(ns, ref_);
    if err.message().contains(&local) {
        Error::new(err.class(), err.message().replace(&local, ref_))
    } else {
        err
    }
}

/// A local ingest seen under the client's ref.
struct LocalWriter {
    inner: Writer,
    ns: String,
    ref_: String,
}

impl BlobWriter for LocalWriter {
    fn status(&self) -> Status {
        let mut status = self.inner.status();
        status.ref_ = self.ref_.clone();
        status
    }

    fn offset(&self) -> i64 {
        self.inner.offset()
    }

    fn set_total(&mut self, total: i64) -> Result<(), Error> {
        self.inner.set_total(total)
    }

    fn write(&mut self, data: &[u8]) -> Result<(), Error> {
        self.inner.write(data)
    }

    fn append(&mut self, data: Vec<u8>) -> Result<Option<Appended>, Error> {
        self.inner.append(data)
    }

    fn settle(&mut self, wait: bool) -> Option<Result<Appended, Error>> {
        self.inner.settle(wait)
    }

    fn truncate(&mut self, size: i64) -> Result<(), Error> {
        self.inner.truncate(size)
    }

    fn digest(&self) -> Digest {
        self.inner.digest()
    }

    fn commit(self: Box<Self>, size: i64, expected: Option<Digest>) -> Result<Digest, Error> {
        let (ns, ref_) = (self.ns.clone(), self.ref_.clone());
        self.inner
            .commit(size, expected)
            .map_err(|err| rename_ref(err, &ns, &ref_))
    }
}

impl Backend for Store {
    fn info(&self, _ns: &str, d: &Digest) -> Result<Info, Error> {
        Store::info(self, d)
    }

    fn reader(&self, _ns: &str, d: &Digest) -> Result<Box<dyn ReadAt>, Error> {
        Ok(Box::new(Store::reader(self, d)?))
    }

    fn writer(
        &self,
        ns: &str,
        ref_: &str,
        total: i64,
        expected: Option<Digest>,
    ) -> Result<Box<dyn BlobWriter>, Error> {
        let inner = Store::writer(self, &local_ref(ns, ref_), total, expected)
            .map_err(|err| rename_ref(err, ns, ref_))?;
        Ok(Box::new(LocalWriter {
            inner,
            ns: ns.to_string(),
            ref_: ref_.to_string(),
        }))
    }

    fn status(&self, ns: &str, ref_: &str) -> Result<Status, Error> {
        let mut status =
            Store::status(self, &local_ref(ns, ref_)).map_err(|err| rename_ref(err, ns, ref_))?;
        status.ref_ = ref_.to_string();
        Ok(status)
    }

    fn list_statuses(&self, ns: &str) -> Result<Vec<Status>, Error> {
        let prefix = local_ref(ns, "");
        Ok(Store::list_statuses(self)?
            .into_iter()
            .filter_map(|mut status| {
                let ref_ = status.ref_.strip_prefix(&prefix)?.to_string();
                status.ref_ = ref_;
                Some(status)
            })
            .collect())
    }

    fn abort(&self, ns: &str, ref_: &str) -> Result<(), Error> {
        Store::abort(self, &local_ref(ns, ref_)).map_err(|err| rename_ref(err, ns, ref_))
    }

    fn local(&self) -> Option<&Store> {
        Some(self)
    }
}

/// How a content plugin's value is stored, local or proxy alike: the metadata plugin finds
/// its backend through this type.
pub struct ContentHandle(pub std::sync::Arc<dyn Backend>);
