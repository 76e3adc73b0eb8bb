//! The on-disk layout of one ingest: `ingest/<sha256 of ref>/{data,ref,startedat,updatedat,total}`.
//!
//! The format matches containerd's local store: `ref` holds the ref text, `total` the expected
//! size in decimal (absent when unknown), and the two timestamps are RFC 3339 text with
//! nanoseconds. Timestamp files are written to a `.tmp` sibling and renamed into place, so a
//! reader never sees half a timestamp. Called from the thread that owns the store call.

use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use sha2::{Digest as _, Sha256};

use crate::errdefs::{Class, Error};

use super::digest::Digest;
use crate::timefmt::{format_rfc3339, parse_rfc3339};

pub(crate) const DATA: &str = "data";
pub(crate) const REF: &str = "ref";
pub(crate) const STARTED_AT: &str = "startedat";
pub(crate) const UPDATED_AT: &str = "updatedat";
pub(crate) const TOTAL: &str = "total";

/// The directory name of the ingest for `ref_`: the hex sha256 of the ref text, so any ref is a
/// single fixed-length path component that cannot escape the ingest root.
pub(crate) fn dir_name(ref_: &str) -> String {
    Digest::from_sha256(&Sha256::digest(ref_.as_bytes()).into())
        .hex()
        .to_owned()
}

/// Turns an I/O failure into an [`Error`] that keeps the io class and says what was being done.
pub(crate) fn io_error(what: impl std::fmt::Display) -> impl FnOnce(io::Error) -> Error {
    move |err| Error::from(err).context(what)
}

/// What an ingest directory records, read back from disk.
pub(crate) struct Record {
    pub ref_: String,
    pub size: i64,
    pub total: i64,
    pub started_at: SystemTime,
    pub updated_at: SystemTime,
}

/// Reads the record of the ingest in `dir`. A missing `data` or `ref` file is NotFound.
pub(crate) fn read_record(dir: &Path) -> Result<Record, Error> {
    let data =
        fs::metadata(dir.join(DATA)).map_err(io_error(format!("ingest {}", dir.display())))?;
    let ref_ = fs::read_to_string(dir.join(REF)).map_err(io_error("read ingest ref"))?;
    let started_at = read_timestamp(&dir.join(STARTED_AT))?;
    let mut updated_at = read_timestamp(&dir.join(UPDATED_AT))?;
    // `updatedat` is written when a writer closes; the data file's mtime is newer while one
    // is still writing.
    if let Ok(modified) = data.modified() {
        updated_at = updated_at.max(modified);
    }
    let total = fs::read_to_string(dir.join(TOTAL))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    Ok(Record {
        ref_,
        size: i64::try_from(data.len()).unwrap_or(i64::MAX),
        total,
        started_at,
        updated_at,
    })
}

/// Writes the files of a fresh ingest (everything but `data`) into the existing `dir`.
pub(crate) fn write_fresh(
    dir: &Path,
    ref_: &str,
    total: i64,
    now: SystemTime,
) -> Result<(), Error> {
    fs::write(dir.join(REF), ref_).map_err(io_error("write ingest ref"))?;
    write_timestamp(&dir.join(STARTED_AT), now)?;
    write_timestamp(&dir.join(UPDATED_AT), now)?;
    write_total(dir, total)
}

/// Records the expected total; a total of 0 or less means unknown and removes the file.
pub(crate) fn write_total(dir: &Path, total: i64) -> Result<(), Error> {
    let path = dir.join(TOTAL);
    if total > 0 {
        fs::write(&path, total.to_string()).map_err(io_error("write ingest total"))
    } else {
        match fs::remove_file(&path) {
            Err(err) if err.kind() != io::ErrorKind::NotFound => {
                Err(io_error("remove ingest total")(err))
            }
            _ => Ok(()),
        }
    }
}

pub(crate) fn read_timestamp(path: &Path) -> Result<SystemTime, Error> {
    let text = fs::read_to_string(path).map_err(io_error(format!("read {}", path.display())))?;
    parse_rfc3339(text.trim()).ok_or_else(|| {
        Error::new(
            Class::Internal,
            format!("could not parse timestamp file {}", path.display()),
        )
    })
}

/// Replaces the timestamp in `path` through a temporary sibling and a rename.
pub(crate) fn write_timestamp(path: &Path, t: SystemTime) -> Result<(), Error> {
    let mut tmp = PathBuf::from(path);
    tmp.set_extension("tmp");
    let mut f = fs::File::create(&tmp).map_err(io_error("create timestamp file"))?;
    f.write_all(format_rfc3339(t).as_bytes())
        .map_err(io_error("write timestamp file"))?;
    fs::rename(&tmp, path).map_err(io_error("rename timestamp file"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dir_name_is_fixed_length_hex_for_any_ref() {
        for r in ["a", "../../x", "a/b", &"r".repeat(10_000), "\u{1F600}"] {
            let name = dir_name(r);
            assert_eq!(name.len(), 64);
            assert!(name.bytes().all(|b| b.is_ascii_hexdigit()));
        }
        assert_ne!(dir_name("a"), dir_name("b"));
    }
}
