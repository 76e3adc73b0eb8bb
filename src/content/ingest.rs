//! The on-disk layout of one ingest: `ingest/<sha256 of ref>/{data,ref,startedat,updatedat,total}`.
//!
//! The format matches containerd's local store: `ref` holds the ref text, `total` the expected
//! size in decimal (absent when unknown), and the two timestamps are RFC 3339 text with
//! nanoseconds. Timestamp files are written to a `.tmp` sibling and renamed into place, so a
//! reader never sees half a timestamp. Called from the thread that owns the store call.

use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha2::{Digest as _, Sha256};

use crate::errdefs::{Class, Error};

use super::digest::Digest;

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

/// Formats `t` as RFC 3339 in UTC with nanoseconds, as Go's `time.Time.MarshalText` does for UTC.
pub(crate) fn format_rfc3339(t: SystemTime) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let days = i64::try_from(secs / 86_400).expect("days since 1970 fit in i64");
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    let mut s = format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    );
    let nanos = since.subsec_nanos();
    if nanos != 0 {
        let frac = format!("{nanos:09}");
        s.push('.');
        s.push_str(frac.trim_end_matches('0'));
    }
    s.push('Z');
    s
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`; times before 1970 clamp to the epoch.
pub(crate) fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(r)?;
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut rest = &s[19..];
    let mut nanos: u32 = 0;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || digits > 9 {
            return None;
        }
        nanos = frac[..digits].parse::<u32>().ok()? * 10u32.pow(9 - digits as u32);
        rest = &frac[digits..];
    }
    let offset_secs = match rest {
        "Z" | "z" => 0,
        _ if rest.len() == 6 && rest.as_bytes()[3] == b':' => {
            let sign = match rest.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let oh: i64 = rest[1..3].parse().ok()?;
            let om: i64 = rest[4..6].parse().ok()?;
            sign * (oh * 3600 + om * 60)
        }
        _ => return None,
    };
    let secs = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + sec - offset_secs;
    let secs = u64::try_from(secs).unwrap_or(0);
    Some(UNIX_EPOCH + Duration::new(secs, nanos))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The inverse of [`days_from_civil`].
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (
        if m <= 2 {
            yoe + era * 400 + 1
        } else {
            yoe + era * 400
        },
        m,
        d,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_format_like_go_and_round_trip() {
        let t = UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_000);
        assert_eq!(format_rfc3339(t), "2023-11-14T22:13:20.123456Z");
        assert_eq!(parse_rfc3339("2023-11-14T22:13:20.123456Z"), Some(t));
        assert_eq!(format_rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(format_rfc3339(leap), "2000-02-29T00:00:00Z");
        assert_eq!(parse_rfc3339("2000-02-29T00:00:00Z"), Some(leap));
    }

    #[test]
    fn timestamps_with_offsets_from_containerd_parse() {
        let t = UNIX_EPOCH + Duration::new(1_700_000_000, 5);
        assert_eq!(
            parse_rfc3339("2023-11-15T00:13:20.000000005+02:00"),
            Some(t)
        );
        assert_eq!(
            parse_rfc3339("2023-11-14T21:13:20.000000005-01:00"),
            Some(t)
        );
        for bad in [
            "",
            "2023-11-14",
            "2023-13-14T22:13:20Z",
            "2023-11-14T22:13:20",
            "2023-11-14T22:13:20.Z",
            "2023-11-14T22:13:2xZ",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad:?}");
        }
    }

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
