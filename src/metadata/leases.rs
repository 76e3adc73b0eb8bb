//! Leases and the resources they hold (content, ingests, images, snapshots/<snapshotter>).

use std::collections::BTreeMap;
use std::io::Read as _;
use std::time::{SystemTime, UNIX_EPOCH};

use redb::ReadableTable;

use super::{ensure_namespace, validate_labels, Db, StoreResult, LEASES, LEASE_RESOURCES};
use crate::codec::{Decoder, Encoder};
use crate::errdefs::{Class, Error};
use crate::identifiers::go_quote;

/// A lease as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub id: String,
    pub created_at: SystemTime,
    pub labels: BTreeMap<String, String>,
}

impl Lease {
    pub(super) fn decode(id: &str, bytes: &[u8]) -> Result<Self, Error> {
        let mut d = Decoder::new(bytes);
        Ok(Lease {
            id: id.to_string(),
            created_at: d.time()?,
            labels: d.labels()?,
        })
    }
}

fn not_found(id: &str) -> Error {
    Error::wrapped(Class::NotFound, format!("lease {}", go_quote(id)))
}

/// Checks a digest string the way go-digest's `Parse` does; the error names the problem.
pub fn parse_digest(s: &str) -> Result<(), &'static str> {
    let Some((alg, hex)) = s.split_once(':') else {
        return Err("invalid checksum digest format");
    };
    let want = match alg {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        _ => return Err("unsupported digest algorithm"),
    };
    if !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err("invalid checksum digest format");
    }
    if hex.len() != want {
        return Err("invalid checksum digest length");
    }
    Ok(())
}

/// Validates a resource type and id: Unimplemented for unknown types, InvalidArgument for
/// malformed ones or a content id that is not a digest.
fn check_resource(rtype: &str, rid: &str) -> Result<(), Error> {
    let parts: Vec<&str> = rtype.split('/').collect();
    let well_formed = match parts[0] {
        "content" | "ingests" | "images" => parts.len() == 1,
        "snapshots" => parts.len() == 2 && !parts[1].is_empty(),
        _ => {
            return Err(Error::wrapped(
                Class::NotImplemented,
                format!("resource type {rtype} not supported yet"),
            ))
        }
    };
    if !well_formed {
        return Err(Error::wrapped(
            Class::InvalidArgument,
            format!("invalid resource type {rtype}"),
        ));
    }
    if rid.is_empty() {
        return Err(Error::wrapped(
            Class::InvalidArgument,
            "resource id must not be empty",
        ));
    }
    if parts[0] == "content" {
        parse_digest(rid).map_err(|e| {
            Error::wrapped(
                Class::InvalidArgument,
                format!("invalid content resource id {}: {e}", go_quote(rid)),
            )
        })?;
    }
    Ok(())
}

pub(super) fn lease_exists(
    table: &impl ReadableTable<(&'static str, &'static str), &'static [u8]>,
    ns: &str,
    id: &str,
) -> Result<(), Error> {
    match table.get((ns, id)).store()? {
        Some(_) => Ok(()),
        None => Err(not_found(id)),
    }
}

/// A server-chosen lease id like containerd's: the nanoseconds of the current second, a dash,
/// and four URL-safe base64 characters from three random bytes.
pub fn generate_lease_id() -> Result<String, Error> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut bytes = [0u8; 3];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|err| Error::internal(format!("read /dev/urandom: {err}")))?;
    let n = (u32::from(bytes[0]) << 16) | (u32::from(bytes[1]) << 8) | u32::from(bytes[2]);
    let suffix: String = (0..4)
        .map(|i| ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char)
        .collect();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    Ok(format!("{nanos}-{suffix}"))
}

impl Db {
    /// Creates lease `id` in `ns` (creating the namespace); AlreadyExists on a duplicate.
    pub fn create_lease(
        &self,
        ns: &str,
        id: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<Lease, Error> {
        if id.is_empty() {
            return Err(Error::wrapped(
                Class::InvalidArgument,
                "lease id must not be empty",
            ));
        }
        validate_labels(labels)?;
        let lease = Lease {
            id: id.to_string(),
            created_at: SystemTime::now(),
            labels: labels
                .iter()
                .filter(|(_, v)| !v.is_empty())
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        };
        let txn = self.db.begin_write()?;
        ensure_namespace(&txn, ns)?;
        {
            let mut table = txn.open_table(LEASES).store()?;
            if table.get((ns, id)).store()?.is_some() {
                return Err(Error::wrapped(
                    Class::AlreadyExists,
                    format!("lease {}", go_quote(id)),
                ));
            }
            let value = Encoder::new()
                .time(lease.created_at)
                .labels(&lease.labels)
                .finish();
            table.insert((ns, id), value.as_slice()).store()?;
        }
        self.commit(txn, false)?;
        Ok(lease)
    }

    /// Deletes lease `id` and its resource references (not the resources themselves).
    pub fn delete_lease(&self, ns: &str, id: &str) -> Result<(), Error> {
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(LEASES).store()?;
            if table.remove((ns, id)).store()?.is_none() {
                return Err(not_found(id));
            }
            let mut resources = txn.open_table(LEASE_RESOURCES).store()?;
            resources
                .retain_in((ns, id, "", "").., |(n, l, _, _), ()| n != ns || l != id)
                .store()?;
        }
        self.commit(txn, true)
    }

    /// Every lease of `ns`, by id.
    pub fn list_leases(&self, ns: &str) -> Result<Vec<Lease>, Error> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(LEASES).store()?;
        let mut leases = Vec::new();
        for row in table.range((ns, "")..).store()? {
            let (key, value) = row.store()?;
            let (row_ns, id) = key.value();
            if row_ns != ns {
                break;
            }
            leases.push(Lease::decode(id, value.value())?);
        }
        Ok(leases)
    }

    /// Adds resource (`rtype`, `rid`) to lease `id`; adding it twice is not an error.
    pub fn add_lease_resource(
        &self,
        ns: &str,
        id: &str,
        rtype: &str,
        rid: &str,
    ) -> Result<(), Error> {
        check_resource(rtype, rid)?;
        let txn = self.db.begin_write()?;
        {
            lease_exists(&txn.open_table(LEASES).store()?, ns, id)?;
            let mut resources = txn.open_table(LEASE_RESOURCES).store()?;
            resources.insert((ns, id, rtype, rid), ()).store()?;
        }
        self.commit(txn, false)
    }

    /// Removes resource (`rtype`, `rid`) from lease `id`; removing an absent one is not an error.
    pub fn delete_lease_resource(
        &self,
        ns: &str,
        id: &str,
        rtype: &str,
        rid: &str,
    ) -> Result<(), Error> {
        check_resource(rtype, rid)?;
        let txn = self.db.begin_write()?;
        {
            lease_exists(&txn.open_table(LEASES).store()?, ns, id)?;
            let mut resources = txn.open_table(LEASE_RESOURCES).store()?;
            resources.remove((ns, id, rtype, rid)).store()?;
        }
        self.commit(txn, true)
    }

    /// The (type, id) resources of lease `id`, sorted by type then id.
    pub fn list_lease_resources(&self, ns: &str, id: &str) -> Result<Vec<(String, String)>, Error> {
        let txn = self.db.begin_read()?;
        lease_exists(&txn.open_table(LEASES).store()?, ns, id)?;
        let resources = txn.open_table(LEASE_RESOURCES).store()?;
        let mut out = Vec::new();
        for row in resources.range((ns, id, "", "")..).store()? {
            let (key, _) = row.store()?;
            let (row_ns, lease, rtype, rid) = key.value();
            if row_ns != ns || lease != id {
                break;
            }
            out.push((rtype.to_string(), rid.to_string()));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{labels, open_temp};
    use super::*;

    fn digest(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    #[test]
    fn create_duplicate_list_delete() {
        let (_dir, db) = open_temp();
        let before = SystemTime::now();
        let l = db.create_lease("ns", "b", &labels(&[("x", "1")])).unwrap();
        assert!(l.created_at >= before);
        db.create_lease("ns", "a", &BTreeMap::new()).unwrap();
        db.create_lease("ns-other", "a", &BTreeMap::new()).unwrap();
        let err = db.create_lease("ns", "b", &BTreeMap::new()).unwrap_err();
        assert_eq!(err.class(), Class::AlreadyExists);
        assert_eq!(err.message(), "lease \"b\": already exists");
        let ids: Vec<_> = db
            .list_leases("ns")
            .unwrap()
            .into_iter()
            .map(|l| l.id)
            .collect();
        assert_eq!(ids, vec!["a", "b"]);
        assert_eq!(db.list_leases("ns").unwrap()[1], l);

        db.delete_lease("ns", "b").unwrap();
        let err = db.delete_lease("ns", "b").unwrap_err();
        assert_eq!(err.class(), Class::NotFound);
        assert_eq!(err.message(), "lease \"b\": not found");
        assert_eq!(db.list_leases("ns").unwrap().len(), 1);
        assert_eq!(db.list_leases("ns-other").unwrap().len(), 1);
    }

    #[test]
    fn resources_add_list_delete() {
        let (_dir, db) = open_temp();
        db.create_lease("ns", "l", &BTreeMap::new()).unwrap();
        db.create_lease("ns", "l2", &BTreeMap::new()).unwrap();
        db.add_lease_resource("ns", "l", "snapshots/overlayfs", "snap1")
            .unwrap();
        db.add_lease_resource("ns", "l", "content", &digest('a'))
            .unwrap();
        db.add_lease_resource("ns", "l", "content", &digest('a'))
            .unwrap();
        db.add_lease_resource("ns", "l", "ingests", "ref-1")
            .unwrap();
        db.add_lease_resource("ns", "l2", "images", "img").unwrap();
        let want = vec![
            ("content".to_string(), digest('a')),
            ("ingests".to_string(), "ref-1".to_string()),
            ("snapshots/overlayfs".to_string(), "snap1".to_string()),
        ];
        assert_eq!(db.list_lease_resources("ns", "l").unwrap(), want);

        db.delete_lease_resource("ns", "l", "ingests", "ref-1")
            .unwrap();
        db.delete_lease_resource("ns", "l", "ingests", "ref-1")
            .unwrap();
        assert_eq!(db.list_lease_resources("ns", "l").unwrap().len(), 2);

        db.delete_lease("ns", "l").unwrap();
        db.create_lease("ns", "l", &BTreeMap::new()).unwrap();
        assert!(db.list_lease_resources("ns", "l").unwrap().is_empty());
        assert_eq!(db.list_lease_resources("ns", "l2").unwrap().len(), 1);

        let err = db.list_lease_resources("ns", "missing").unwrap_err();
        assert_eq!(err.class(), Class::NotFound);
        let err = db
            .add_lease_resource("ns", "missing", "ingests", "r")
            .unwrap_err();
        assert_eq!(err.class(), Class::NotFound);
    }

    #[test]
    fn bad_resource_types_and_ids() {
        let (_dir, db) = open_temp();
        db.create_lease("ns", "l", &BTreeMap::new()).unwrap();
        let err = db
            .add_lease_resource("ns", "l", "containers", "c")
            .unwrap_err();
        assert_eq!(err.class(), Class::NotImplemented);
        assert_eq!(
            err.message(),
            "resource type containers not supported yet: not implemented"
        );
        for bad_type in ["snapshots", "snapshots/", "content/x", "images/a/b"] {
            let err = db.add_lease_resource("ns", "l", bad_type, "x").unwrap_err();
            assert_eq!(err.class(), Class::InvalidArgument, "{bad_type}");
        }
        for bad_digest in ["abc", "sha256:abc", "md5:00", &digest('G')] {
            let err = db
                .add_lease_resource("ns", "l", "content", bad_digest)
                .unwrap_err();
            assert_eq!(err.class(), Class::InvalidArgument, "{bad_digest}");
        }
        assert!(db.list_lease_resources("ns", "l").unwrap().is_empty());
    }

    #[test]
    fn generated_ids_look_like_containerds() {
        let id = generate_lease_id().unwrap();
        let (nanos, suffix) = id.split_once('-').expect("dash");
        assert!(nanos.parse::<u32>().unwrap() < 1_000_000_000, "{id}");
        assert_eq!(suffix.len(), 4, "{id}");
        assert!(suffix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_ne!(generate_lease_id().unwrap(), generate_lease_id().unwrap());
    }
}
