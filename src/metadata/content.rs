//! Content records: which digests a namespace references, with their labels and times.
//! The blob bytes themselves live in the content store.

use std::collections::BTreeMap;
use std::time::SystemTime;

use redb::ReadableTable;

use super::leases::lease_exists;
use super::{
    ensure_namespace, update_labels, validate_labels, Db, StoreResult, CONTENT, LEASES,
    LEASE_RESOURCES,
};
use crate::codec::{Decoder, Encoder};
use crate::errdefs::{Class, Error};
use crate::identifiers::go_quote;

/// One namespace's record of a committed blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentRecord {
    pub digest: String,
    pub size: i64,
    pub created_at: SystemTime,
    pub updated_at: SystemTime,
    pub labels: BTreeMap<String, String>,
}

impl ContentRecord {
    fn encode(&self) -> Vec<u8> {
        Encoder::new()
            .i64(self.size)
            .time(self.created_at)
            .time(self.updated_at)
            .labels(&self.labels)
            .finish()
    }

    pub(super) fn decode(digest: &str, bytes: &[u8]) -> Result<Self, Error> {
        let mut d = Decoder::new(bytes);
        Ok(ContentRecord {
            digest: digest.to_string(),
            size: d.i64()?,
            created_at: d.time()?,
            updated_at: d.time()?,
            labels: d.labels()?,
        })
    }
}

fn already_exists(digest: &str) -> Error {
    Error::wrapped(Class::AlreadyExists, format!("content {digest}"))
}

fn not_found(digest: &str) -> Error {
    Error::wrapped(Class::NotFound, format!("content digest {digest}"))
}

impl Db {
    /// Records that `ns` references `rec.digest`, creating the namespace if needed.
    /// AlreadyExists if the namespace already has a record for the digest.
    pub fn add_content(&self, ns: &str, rec: &ContentRecord) -> Result<(), Error> {
        self.add_content_leased(ns, rec, None)
    }

    /// Like [`Db::add_content`], and in the same transaction, when `lease` names
    /// (lease id, ingest ref): the lease holds the content, instead of the ingest when one
    /// is named. Content `ns` already records is AlreadyExists, and the lease holds it all
    /// the same (as containerd's commit does): a collection must not take what its caller
    /// was just told is there.
    pub fn add_content_leased(
        &self,
        ns: &str,
        rec: &ContentRecord,
        lease: Option<(&str, Option<&str>)>,
    ) -> Result<(), Error> {
        validate_labels(&rec.labels)?;
        let txn = self.db.begin_write()?;
        ensure_namespace(&txn, ns)?;
        let existed = {
            let mut table = txn.open_table(CONTENT).store()?;
            let key = (ns, rec.digest.as_str());
            let existed = table.get(key).store()?.is_some();
            if existed && lease.is_none() {
                return Err(already_exists(&rec.digest));
            }
            if !existed {
                table.insert(key, rec.encode().as_slice()).store()?;
            }
            if let Some((id, ref_)) = lease {
                lease_exists(&txn.open_table(LEASES).store()?, ns, id)?;
                let mut resources = txn.open_table(LEASE_RESOURCES).store()?;
                resources
                    .insert((ns, id, "content", rec.digest.as_str()), ())
                    .store()?;
                if let Some(ref_) = ref_ {
                    resources.remove((ns, id, "ingests", ref_)).store()?;
                }
            }
            existed
        };
        self.commit(txn, false)?;
        if existed {
            return Err(already_exists(&rec.digest));
        }
        Ok(())
    }

    /// Whether `ns` records `digest`; if so and `lease` is given, the lease holds it from
    /// now on (one transaction: a collection cannot come between). For a writer asked for
    /// content that is already there, as containerd's does.
    pub fn hold_existing_content(
        &self,
        ns: &str,
        digest: &str,
        lease: Option<&str>,
    ) -> Result<bool, Error> {
        let Some(id) = lease else {
            return match self.content(ns, digest) {
                Ok(_) => Ok(true),
                Err(err) if err.class() == Class::NotFound => Ok(false),
                Err(err) => Err(err),
            };
        };
        let txn = self.db.begin_write()?;
        {
            let table = txn.open_table(CONTENT).store()?;
            if table.get((ns, digest)).store()?.is_none() {
                return Ok(false);
            }
            lease_exists(&txn.open_table(LEASES).store()?, ns, id)?;
            let mut resources = txn.open_table(LEASE_RESOURCES).store()?;
            resources.insert((ns, id, "content", digest), ()).store()?;
        }
        self.commit(txn, false)?;
        Ok(true)
    }

    /// The record of `digest` in `ns`.
    pub fn content(&self, ns: &str, digest: &str) -> Result<ContentRecord, Error> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(CONTENT).store()?;
        let value = table.get((ns, digest)).store()?;
        let value = value.ok_or_else(|| not_found(digest))?;
        ContentRecord::decode(digest, value.value())
    }

    /// Every record of `ns`, by digest.
    pub fn list_content(&self, ns: &str) -> Result<Vec<ContentRecord>, Error> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(CONTENT).store()?;
        let mut records = Vec::new();
        for row in table.range((ns, "")..).store()? {
            let (key, value) = row.store()?;
            let (row_ns, digest) = key.value();
            if row_ns != ns {
                break;
            }
            records.push(ContentRecord::decode(digest, value.value())?);
        }
        Ok(records)
    }

    /// Updates labels by field paths: none or `labels` replace all, `labels.<k>` sets one key
    /// (to its value in `labels`, deleting it when absent or empty). Sets `updated_at`.
    pub fn update_content_labels(
        &self,
        ns: &str,
        digest: &str,
        labels: BTreeMap<String, String>,
        paths: &[String],
    ) -> Result<ContentRecord, Error> {
        let txn = self.db.begin_write()?;
        let updated = {
            let mut table = txn.open_table(CONTENT).store()?;
            let mut rec = match table.get((ns, digest)).store()? {
                Some(value) => ContentRecord::decode(digest, value.value())?,
                None => return Err(not_found(digest)),
            };
            update_labels(&mut rec.labels, &labels, paths).map_err(|path| {
                Error::wrapped(
                    Class::InvalidArgument,
                    format!(
                        "cannot update {} field on content info {}",
                        go_quote(path),
                        go_quote(digest)
                    ),
                )
            })?;
            validate_labels(&rec.labels)?;
            rec.updated_at = SystemTime::now();
            table
                .insert((ns, digest), rec.encode().as_slice())
                .store()?;
            rec
        };
        self.commit(txn, false)?;
        Ok(updated)
    }

    /// Removes the record of `digest` from `ns`.
    pub fn delete_content(&self, ns: &str, digest: &str) -> Result<(), Error> {
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(CONTENT).store()?;
            if table.remove((ns, digest)).store()?.is_none() {
                return Err(not_found(digest));
            }
        }
        self.commit(txn, true)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{labels, open_temp};
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn record(hex: char, pairs: &[(&str, &str)]) -> ContentRecord {
        let t = UNIX_EPOCH + Duration::new(1_700_000_000, 123);
        ContentRecord {
            digest: format!("sha256:{}", hex.to_string().repeat(64)),
            size: 42,
            created_at: t,
            updated_at: t,
            labels: labels(pairs),
        }
    }

    #[test]
    fn content_already_there_is_held_by_the_lease_of_whoever_finds_it() {
        let (_dir, db) = open_temp();
        let a = record('a', &[]);
        let b = record('b', &[]);
        db.add_content("ns", &a).unwrap();
        for id in ["committer", "writer"] {
            db.create_lease("ns", id, &BTreeMap::new()).unwrap();
        }
        let held = |id: &str| db.list_lease_resources("ns", id).unwrap();
        let content_of = |d: &str| ("content".to_string(), d.to_string());

        // A commit of content already recorded is AlreadyExists, and its lease holds the
        // content instead of the ingest.
        db.add_lease_resource("ns", "committer", "ingests", "ref-1")
            .unwrap();
        let err = db
            .add_content_leased("ns", &a, Some(("committer", Some("ref-1"))))
            .unwrap_err();
        assert_eq!(err.class(), Class::AlreadyExists);
        assert_eq!(held("committer"), vec![content_of(&a.digest)]);

        // A writer asked for it: the lease holds it; for content not there, nothing.
        assert!(db
            .hold_existing_content("ns", &a.digest, Some("writer"))
            .unwrap());
        assert!(!db
            .hold_existing_content("ns", &b.digest, Some("writer"))
            .unwrap());
        assert_eq!(held("writer"), vec![content_of(&a.digest)]);

        // Without a lease nothing is written; a lease that is gone is NotFound.
        assert!(db.hold_existing_content("ns", &a.digest, None).unwrap());
        assert_eq!(
            db.add_content("ns", &a).unwrap_err().class(),
            Class::AlreadyExists
        );
        let err = db
            .hold_existing_content("ns", &a.digest, Some("gone"))
            .unwrap_err();
        assert_eq!(err.class(), Class::NotFound);
        assert_eq!(db.content("ns", &a.digest).unwrap(), a);
    }

    #[test]
    fn add_get_list_delete() {
        let (_dir, db) = open_temp();
        let b = record('b', &[("k", "v")]);
        let a = record('a', &[]);
        db.add_content("ns1", &b).unwrap();
        db.add_content("ns1", &a).unwrap();
        db.add_content("ns2", &a).unwrap();
        assert_eq!(db.list_namespaces().unwrap(), vec!["ns1", "ns2"]);
        assert_eq!(db.content("ns1", &b.digest).unwrap(), b);
        assert_eq!(db.list_content("ns1").unwrap(), vec![a.clone(), b.clone()]);
        assert_eq!(db.list_content("ns2").unwrap(), vec![a.clone()]);
        assert!(db.list_content("ns").unwrap().is_empty());
        let err = db.add_content("ns1", &a).unwrap_err();
        assert_eq!(err.class(), Class::AlreadyExists);

        db.delete_content("ns1", &a.digest).unwrap();
        let err = db.content("ns1", &a.digest).unwrap_err();
        assert_eq!(err.class(), Class::NotFound);
        assert_eq!(
            err.message(),
            format!("content digest {}: not found", a.digest)
        );
        let err = db.delete_content("ns1", &a.digest).unwrap_err();
        assert_eq!(err.class(), Class::NotFound);
        assert_eq!(db.content("ns2", &a.digest).unwrap(), a);
    }

    #[test]
    fn update_by_paths() {
        let (_dir, db) = open_temp();
        let rec = record('c', &[("a", "1"), ("b", "2")]);
        db.add_content("ns", &rec).unwrap();
        let d = rec.digest.clone();

        let out = db
            .update_content_labels(
                "ns",
                &d,
                labels(&[("a", "9"), ("z", "x")]),
                &["labels.a".into()],
            )
            .unwrap();
        assert_eq!(out.labels, labels(&[("a", "9"), ("b", "2")]));
        assert!(out.updated_at > rec.updated_at);
        assert_eq!(out.created_at, rec.created_at);

        let out = db
            .update_content_labels("ns", &d, BTreeMap::new(), &["labels.b".into()])
            .unwrap();
        assert_eq!(out.labels, labels(&[("a", "9")]));

        let out = db
            .update_content_labels("ns", &d, labels(&[("n", "1")]), &[])
            .unwrap();
        assert_eq!(out.labels, labels(&[("n", "1")]));

        let out = db
            .update_content_labels("ns", &d, labels(&[("m", "2")]), &["labels".into()])
            .unwrap();
        assert_eq!(out.labels, labels(&[("m", "2")]));
        assert_eq!(db.content("ns", &d).unwrap(), out);

        let err = db
            .update_content_labels("ns", &d, BTreeMap::new(), &["labels".into(), "size".into()])
            .unwrap_err();
        assert_eq!(err.class(), Class::InvalidArgument);
        assert_eq!(
            err.message(),
            format!("cannot update \"size\" field on content info \"{d}\": invalid argument")
        );
        assert_eq!(db.content("ns", &d).unwrap(), out, "failed update wrote");

        let err = db
            .update_content_labels("ns", "sha256:ff", BTreeMap::new(), &[])
            .unwrap_err();
        assert_eq!(err.class(), Class::NotFound);
    }
}
