//! Binary encoding of stored values (redb records of the metadata store and the native
//! snapshotter): little-endian integers and length-prefixed strings.
//!
//! Values are small and private to these stores, so a hand-written layout is enough; any
//! record that does not decode is reported as DataLoss.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::errdefs::{Class, Error};

/// redb's page cache for our stores: metadata is small and read mostly through short
/// transactions, so a small cache keeps the daemon's footprint down on small hosts.
pub(crate) const CACHE_BYTES: usize = 512 << 10;

/// Appends fields to a byte buffer.
#[derive(Default)]
pub(crate) struct Encoder {
    buf: Vec<u8>,
}

impl Encoder {
    pub(crate) fn new() -> Self {
        Encoder::default()
    }

    pub(crate) fn i64(mut self, v: i64) -> Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }

    pub(crate) fn u32(mut self, v: u32) -> Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }

    pub(crate) fn str(self, s: &str) -> Self {
        let mut this = self.u32(u32::try_from(s.len()).expect("labels are at most 4096 bytes"));
        this.buf.extend_from_slice(s.as_bytes());
        this
    }

    /// A length-prefixed byte string (an `Any`'s value, a spec).
    pub(crate) fn bytes(mut self, b: &[u8]) -> Self {
        self = self.u32(u32::try_from(b.len()).expect("gRPC messages are below 4 GiB"));
        self.buf.extend_from_slice(b);
        self
    }

    /// Seconds and nanoseconds relative to the Unix epoch (negative seconds before it).
    pub(crate) fn time(self, t: SystemTime) -> Self {
        let (secs, nanos) = match t.duration_since(UNIX_EPOCH) {
            Ok(d) => (d.as_secs() as i64, d.subsec_nanos()),
            Err(e) => {
                let d = e.duration();
                if d.subsec_nanos() == 0 {
                    (-(d.as_secs() as i64), 0)
                } else {
                    (-(d.as_secs() as i64) - 1, 1_000_000_000 - d.subsec_nanos())
                }
            }
        };
        self.i64(secs).u32(nanos)
    }

    /// A label map; entries with empty values are not stored (an empty value means delete).
    pub(crate) fn labels(self, labels: &BTreeMap<String, String>) -> Self {
        let kept: Vec<_> = labels.iter().filter(|(_, v)| !v.is_empty()).collect();
        let mut this = self.u32(kept.len() as u32);
        for (k, v) in kept {
            this = this.str(k).str(v);
        }
        this
    }

    pub(crate) fn finish(self) -> Vec<u8> {
        self.buf
    }
}

/// Reads fields back in the order they were written.
pub(crate) struct Decoder<'a> {
    buf: &'a [u8],
}

fn corrupt() -> Error {
    Error::new(Class::DataLoss, "metadata record is corrupt")
}

impl<'a> Decoder<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Decoder { buf }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Error> {
        if self.buf.len() < n {
            return Err(corrupt());
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    pub(crate) fn i64(&mut self) -> Result<i64, Error> {
        let bytes = self.take(8)?.try_into().map_err(|_| corrupt())?;
        Ok(i64::from_le_bytes(bytes))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, Error> {
        let bytes = self.take(4)?.try_into().map_err(|_| corrupt())?;
        Ok(u32::from_le_bytes(bytes))
    }

    pub(crate) fn str(&mut self) -> Result<String, Error> {
        let len = self.u32()? as usize;
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| corrupt())
    }

    pub(crate) fn bytes(&mut self) -> Result<Vec<u8>, Error> {
        let len = self.u32()? as usize;
        Ok(self.take(len)?.to_vec())
    }

    pub(crate) fn time(&mut self) -> Result<SystemTime, Error> {
        let secs = self.i64()?;
        let nanos = self.u32()?;
        if nanos >= 1_000_000_000 {
            return Err(corrupt());
        }
        let t = if secs >= 0 {
            UNIX_EPOCH.checked_add(Duration::new(secs as u64, nanos))
        } else {
            UNIX_EPOCH
                .checked_sub(Duration::from_secs(secs.unsigned_abs()))
                .and_then(|t| t.checked_add(Duration::from_nanos(u64::from(nanos))))
        };
        t.ok_or_else(corrupt)
    }

    pub(crate) fn labels(&mut self) -> Result<BTreeMap<String, String>, Error> {
        let n = self.u32()?;
        let mut labels = BTreeMap::new();
        for _ in 0..n {
            let k = self.str()?;
            let v = self.str()?;
            labels.insert(k, v);
        }
        Ok(labels)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_round_trip() {
        let mut labels = BTreeMap::new();
        labels.insert("a".to_string(), "1".to_string());
        labels.insert("gone".to_string(), String::new());
        let before = UNIX_EPOCH - Duration::new(5, 250);
        let after = UNIX_EPOCH + Duration::new(1_700_000_000, 42);
        let buf = Encoder::new()
            .i64(-7)
            .str("héllo")
            .time(before)
            .time(after)
            .labels(&labels)
            .finish();
        let mut d = Decoder::new(&buf);
        assert_eq!(d.i64().unwrap(), -7);
        assert_eq!(d.str().unwrap(), "héllo");
        assert_eq!(d.time().unwrap(), before);
        assert_eq!(d.time().unwrap(), after);
        let back = d.labels().unwrap();
        assert_eq!(back.len(), 1);
        assert_eq!(back["a"], "1");
    }

    #[test]
    fn truncated_record_is_data_loss() {
        let buf = Encoder::new().str("abcdef").finish();
        let err = Decoder::new(&buf[..5]).str().unwrap_err();
        assert_eq!(err.class(), Class::DataLoss);
    }
}
