//! What garbage collection needs from the store: live digests and expired leases.
//!
//! A digest is live when, in some namespace, a lease that has not expired holds it as a
//! `content` resource, or a record carries [`GC_ROOT_LABEL`]; digests named by the
//! `containerd.io/gc.ref.content[.<x>]` labels of live records in the same namespace are
//! live too. A lease whose [`GC_EXPIRE_LABEL`] lies at or before `now` is expired, holds
//! nothing, and is reported for deletion; an unparsable expiry is ignored.

use std::collections::{BTreeMap, BTreeSet};
use std::time::SystemTime;

use redb::ReadableTable;

use super::content::ContentRecord;
use super::leases::Lease;
use super::{Db, StoreResult, CONTENT, GC_EXPIRE_LABEL, GC_ROOT_LABEL, LEASES, LEASE_RESOURCES};
use crate::errdefs::Error;
use crate::timefmt::parse_rfc3339;

const GC_REF_CONTENT: &str = "containerd.io/gc.ref.content";

/// The result of [`Db::gc_roots`].
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GcRoots {
    pub live_digests: BTreeSet<String>,
    /// (namespace, lease id) of every expired lease.
    pub expired_leases: Vec<(String, String)>,
}

impl Db {
    /// Collects the GC roots as of `now`, in one read transaction.
    pub fn gc_roots(&self, now: SystemTime) -> Result<GcRoots, Error> {
        let txn = self.db.begin_read().store()?;
        let mut roots = GcRoots::default();

        let mut expired = BTreeSet::new();
        for row in txn.open_table(LEASES).store()?.iter().store()? {
            let (key, value) = row.store()?;
            let (ns, id) = key.value();
            let lease = Lease::decode(id, value.value())?;
            let expiry = lease
                .labels
                .get(GC_EXPIRE_LABEL)
                .and_then(|v| parse_rfc3339(v));
            if expiry.is_some_and(|t| t <= now) {
                expired.insert((ns.to_string(), id.to_string()));
            }
        }

        // Per namespace: digest → record, and the digests that start live.
        let mut records: BTreeMap<String, BTreeMap<String, ContentRecord>> = BTreeMap::new();
        let mut live: BTreeSet<(String, String)> = BTreeSet::new();
        for row in txn.open_table(LEASE_RESOURCES).store()?.iter().store()? {
            let (key, _) = row.store()?;
            let (ns, id, rtype, rid) = key.value();
            if rtype == "content" && !expired.contains(&(ns.to_string(), id.to_string())) {
                live.insert((ns.to_string(), rid.to_string()));
            }
        }
        for row in txn.open_table(CONTENT).store()?.iter().store()? {
            let (key, value) = row.store()?;
            let (ns, digest) = key.value();
            let rec = ContentRecord::decode(digest, value.value())?;
            if rec.labels.contains_key(GC_ROOT_LABEL) {
                live.insert((ns.to_string(), digest.to_string()));
            }
            records
                .entry(ns.to_string())
                .or_default()
                .insert(digest.to_string(), rec);
        }

        let mut pending: Vec<(String, String)> = live.iter().cloned().collect();
        while let Some((ns, digest)) = pending.pop() {
            let Some(rec) = records.get(&ns).and_then(|m| m.get(&digest)) else {
                continue;
            };
            for (k, v) in &rec.labels {
                let is_ref = k == GC_REF_CONTENT
                    || k.strip_prefix(GC_REF_CONTENT)
                        .is_some_and(|r| r.starts_with('.'));
                if is_ref && live.insert((ns.clone(), v.clone())) {
                    pending.push((ns.clone(), v.clone()));
                }
            }
        }

        roots.live_digests = live.into_iter().map(|(_, d)| d).collect();
        roots.expired_leases = expired.into_iter().collect();
        Ok(roots)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{labels, open_temp};
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn digest(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    fn record(d: &str, pairs: &[(&str, &str)]) -> ContentRecord {
        ContentRecord {
            digest: d.to_string(),
            size: 1,
            created_at: UNIX_EPOCH,
            updated_at: UNIX_EPOCH,
            labels: labels(pairs),
        }
    }

    #[test]
    fn roots_from_leases_labels_and_refs() {
        let (_dir, db) = open_temp();
        let (a, b, c, d, e) = (
            digest('a'),
            digest('b'),
            digest('c'),
            digest('d'),
            digest('e'),
        );
        // a: held by a live lease; b: gc.root and refers to c; d: unlabelled; e: expired lease.
        db.add_content("ns1", &record(&a, &[])).unwrap();
        db.add_content(
            "ns1",
            &record(
                &b,
                &[
                    (GC_ROOT_LABEL, "x"),
                    ("containerd.io/gc.ref.content.l.0", &c),
                ],
            ),
        )
        .unwrap();
        db.add_content("ns1", &record(&c, &[])).unwrap();
        db.add_content("ns1", &record(&d, &[])).unwrap();
        db.add_content("ns2", &record(&e, &[])).unwrap();
        db.create_lease("ns1", "live", &BTreeMap::new()).unwrap();
        db.add_lease_resource("ns1", "live", "content", &a).unwrap();
        let future = labels(&[(GC_EXPIRE_LABEL, "2999-01-01T00:00:00Z")]);
        db.create_lease("ns2", "later", &future).unwrap();
        let past = labels(&[(GC_EXPIRE_LABEL, "2000-01-01T00:00:00Z")]);
        db.create_lease("ns2", "old", &past).unwrap();
        db.add_lease_resource("ns2", "old", "content", &e).unwrap();
        let junk = labels(&[(GC_EXPIRE_LABEL, "soon")]);
        db.create_lease("ns2", "junk", &junk).unwrap();

        let roots = db.gc_roots(SystemTime::now()).unwrap();
        let want: BTreeSet<String> = [a, b, c].into_iter().collect();
        assert_eq!(roots.live_digests, want);
        assert_eq!(
            roots.expired_leases,
            vec![("ns2".to_string(), "old".to_string())]
        );

        // Before the lease expires, its content is live.
        let earlier = UNIX_EPOCH + Duration::from_secs(900_000_000);
        let roots = db.gc_roots(earlier).unwrap();
        assert!(roots.live_digests.contains(&e));
        assert!(!roots.live_digests.contains(&d));
        assert!(roots.expired_leases.is_empty());
    }
}
