//! What garbage collection needs from the store: live digests and expired leases.
//!
//! A digest is live when, in some namespace, a lease that has not expired holds it as a
//! `content` resource, or a record carries [`GC_ROOT_LABEL`]; digests named by the
//! `containerd.io/gc.ref.content[.<x>]` labels of live records in the same namespace are
//! live too. Images and containers are roots: an image keeps its target digest, a container
//! its snapshot (`snapshotter`/`snapshot_key`), and both keep what their own labels name.
//! A lease whose [`GC_EXPIRE_LABEL`] lies at or before `now` is expired, holds
//! nothing, and is reported for deletion; an unparsable expiry is ignored.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use redb::ReadableTable;

use super::containers::ContainerRecord;
use super::content::ContentRecord;
use super::images::ImageRecord;
use super::leases::Lease;
use super::snapshots::SnapshotRecord;
use super::{
    Db, StoreResult, CONTAINERS, CONTENT, GC_EXPIRE_LABEL, GC_ROOT_LABEL, IMAGES, LEASES,
    LEASE_RESOURCES, SNAPSHOTS,
};
use crate::errdefs::Error;
use crate::timefmt::parse_rfc3339;

/// Runs one collection (the metadata plugin's value does; the GC scheduler decides when).
pub trait Collector: Send + Sync {
    fn garbage_collect(&self) -> Result<Stats, Error>;
}

/// What one collection did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub elapsed: Duration,
    /// Records, blobs, ingests and leases removed.
    pub removed: usize,
}

const GC_REF_CONTENT: &str = "containerd.io/gc.ref.content";
const GC_REF_SNAPSHOT: &str = "containerd.io/gc.ref.snapshot.";

/// The result of [`Db::gc_roots`]: what is live as of one instant.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GcRoots {
    /// (namespace, digest) of every live content record.
    pub live: BTreeSet<(String, String)>,
    /// (namespace, ref) of every ingest a live lease holds.
    pub leased_ingests: BTreeSet<(String, String)>,
    /// (snapshotter, namespace, key) of every live snapshot record.
    pub live_snapshots: BTreeSet<(String, String, String)>,
    /// (namespace, lease id) of every expired lease.
    pub expired_leases: Vec<(String, String)>,
}

impl GcRoots {
    /// The live digests, whatever namespace keeps them.
    pub fn live_digests(&self) -> BTreeSet<String> {
        self.live.iter().map(|(_, d)| d.clone()).collect()
    }
}

/// The result of [`Db::collect_garbage`].
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Sweep {
    /// (namespace, digest) of the records removed.
    pub removed_records: Vec<(String, String)>,
    /// (namespace, lease id) of the expired leases removed.
    pub removed_leases: Vec<(String, String)>,
    /// Every digest some namespace still records: the blobs that must stay.
    pub referenced: BTreeSet<String>,
    /// (namespace, ref) of every ingest a live lease holds.
    pub leased_ingests: BTreeSet<(String, String)>,
    /// (snapshotter, namespace, key) of the snapshot records removed.
    pub removed_snapshots: Vec<(String, String, String)>,
    /// Backend keys of every snapshot record that remains.
    pub referenced_snapshots: BTreeSet<String>,
}

type Triple = (&'static str, &'static str, &'static str);

/// A node of the reference graph.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Node {
    Content(String, String),
    Snapshot(String, String, String),
}

type Pair = (&'static str, &'static str);
type Quad = (&'static str, &'static str, &'static str, &'static str);

/// The nodes a record's labels refer to: `containerd.io/gc.ref.content[.<x>]` name digests,
/// `containerd.io/gc.ref.snapshot.<snapshotter>[/<x>]` name snapshot keys, in namespace `ns`.
fn label_refs(ns: &str, labels: &BTreeMap<String, String>, out: &mut Vec<Node>) {
    for (k, v) in labels {
        if k == GC_REF_CONTENT
            || k.strip_prefix(GC_REF_CONTENT)
                .is_some_and(|r| r.starts_with('.'))
        {
            out.push(Node::Content(ns.to_string(), v.clone()));
        } else if let Some(rest) = k.strip_prefix(GC_REF_SNAPSHOT) {
            let sn = rest.split('/').next().unwrap_or_default();
            if !sn.is_empty() {
                out.push(Node::Snapshot(sn.to_string(), ns.to_string(), v.clone()));
            }
        }
    }
}

/// The roots images and containers make: image targets, container snapshots, and what
/// their labels name.
fn object_roots(
    images: &impl ReadableTable<Pair, &'static [u8]>,
    containers: &impl ReadableTable<Pair, &'static [u8]>,
    pending: &mut Vec<Node>,
) -> Result<(), Error> {
    for row in images.iter().store()? {
        let (key, value) = row.store()?;
        let (ns, name) = key.value();
        let image = ImageRecord::decode(name, value.value())?;
        pending.push(Node::Content(ns.to_string(), image.target.digest.clone()));
        label_refs(ns, &image.labels, pending);
    }
    for row in containers.iter().store()? {
        let (key, value) = row.store()?;
        let (ns, id) = key.value();
        let container = ContainerRecord::decode(id, value.value())?;
        if !container.snapshotter.is_empty() {
            pending.push(Node::Snapshot(
                container.snapshotter.clone(),
                ns.to_string(),
                container.snapshot_key.clone(),
            ));
        }
        label_refs(ns, &container.labels, pending);
    }
    Ok(())
}

/// The tables the mark phase reads, from a read or a write transaction.
struct MarkTables<'a, L, R, C, S, I, K> {
    leases: &'a L,
    resources: &'a R,
    content: &'a C,
    snapshots: &'a S,
    images: &'a I,
    containers: &'a K,
}

/// The mark phase over any view of the tables (a read or a write transaction's).
fn mark<L, R, C, S, I, K>(
    tables: MarkTables<'_, L, R, C, S, I, K>,
    now: SystemTime,
) -> Result<GcRoots, Error>
where
    L: ReadableTable<Pair, &'static [u8]>,
    R: ReadableTable<Quad, ()>,
    C: ReadableTable<Pair, &'static [u8]>,
    S: ReadableTable<Triple, &'static [u8]>,
    I: ReadableTable<Pair, &'static [u8]>,
    K: ReadableTable<Pair, &'static [u8]>,
{
    let MarkTables {
        leases,
        resources,
        content,
        snapshots,
        images,
        containers,
    } = tables;
    let mut roots = GcRoots::default();

    let mut expired = BTreeSet::new();
    for row in leases.iter().store()? {
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

    let mut pending: Vec<Node> = Vec::new();
    for row in resources.iter().store()? {
        let (key, _) = row.store()?;
        let (ns, id, rtype, rid) = key.value();
        if expired.contains(&(ns.to_string(), id.to_string())) {
            continue;
        }
        if rtype == "content" {
            pending.push(Node::Content(ns.to_string(), rid.to_string()));
        } else if rtype == "ingests" {
            roots
                .leased_ingests
                .insert((ns.to_string(), rid.to_string()));
        } else if let Some(sn) = rtype.strip_prefix("snapshots/") {
            pending.push(Node::Snapshot(
                sn.to_string(),
                ns.to_string(),
                rid.to_string(),
            ));
        }
    }

    object_roots(images, containers, &mut pending)?;

    // Every record, with what it refers to; labelled roots start live.
    let mut edges: BTreeMap<Node, Vec<Node>> = BTreeMap::new();
    for row in content.iter().store()? {
        let (key, value) = row.store()?;
        let (ns, digest) = key.value();
        let rec = ContentRecord::decode(digest, value.value())?;
        let node = Node::Content(ns.to_string(), digest.to_string());
        if rec.labels.contains_key(GC_ROOT_LABEL) {
            pending.push(node.clone());
        }
        let mut refs = Vec::new();
        label_refs(ns, &rec.labels, &mut refs);
        edges.insert(node, refs);
    }
    for row in snapshots.iter().store()? {
        let (key, value) = row.store()?;
        let (sn, ns, name) = key.value();
        let rec = SnapshotRecord::decode(value.value())?;
        let node = Node::Snapshot(sn.to_string(), ns.to_string(), name.to_string());
        if rec.labels.contains_key(GC_ROOT_LABEL) {
            pending.push(node.clone());
        }
        let mut refs = Vec::new();
        if !rec.parent.is_empty() {
            refs.push(Node::Snapshot(
                sn.to_string(),
                ns.to_string(),
                rec.parent.clone(),
            ));
        }
        label_refs(ns, &rec.labels, &mut refs);
        edges.insert(node, refs);
    }

    let mut live: BTreeSet<Node> = BTreeSet::new();
    while let Some(node) = pending.pop() {
        // Only records that exist are live; a lease may name something not (yet) created.
        let Some(refs) = edges.get(&node) else {
            continue;
        };
        if live.insert(node) {
            pending.extend(refs.iter().cloned());
        }
    }
    for node in live {
        match node {
            Node::Content(ns, d) => {
                roots.live.insert((ns, d));
            }
            Node::Snapshot(sn, ns, key) => {
                roots.live_snapshots.insert((sn, ns, key));
            }
        }
    }
    roots.expired_leases = expired.into_iter().collect();
    Ok(roots)
}

impl Db {
    /// Collects the GC roots as of `now`, in one read transaction.
    pub fn gc_roots(&self, now: SystemTime) -> Result<GcRoots, Error> {
        let txn = self.db.begin_read()?;
        mark(
            MarkTables {
                leases: &txn.open_table(LEASES).store()?,
                resources: &txn.open_table(LEASE_RESOURCES).store()?,
                content: &txn.open_table(CONTENT).store()?,
                snapshots: &txn.open_table(SNAPSHOTS).store()?,
                images: &txn.open_table(IMAGES).store()?,
                containers: &txn.open_table(CONTAINERS).store()?,
            },
            now,
        )
    }

    /// Marks and sweeps in one write transaction: removes expired leases with their resource
    /// references and every content record that is not live. The mutation callbacks are not
    /// told (a collection must not schedule another).
    pub fn collect_garbage(&self, now: SystemTime) -> Result<Sweep, Error> {
        let mut sweep = Sweep::default();
        // No file yet: nothing was ever recorded, so nothing is referenced and there is
        // nothing to remove from the records (opening would create the file for nothing).
        let Some(txn) = self.db.begin_write_existing()? else {
            return Ok(sweep);
        };
        {
            let mut leases = txn.open_table(LEASES).store()?;
            let mut resources = txn.open_table(LEASE_RESOURCES).store()?;
            let mut content = txn.open_table(CONTENT).store()?;
            let mut snapshots = txn.open_table(SNAPSHOTS).store()?;
            let images = txn.open_table(IMAGES).store()?;
            let containers = txn.open_table(CONTAINERS).store()?;
            let roots = mark(
                MarkTables {
                    leases: &leases,
                    resources: &resources,
                    content: &content,
                    snapshots: &snapshots,
                    images: &images,
                    containers: &containers,
                },
                now,
            )?;
            for (ns, id) in &roots.expired_leases {
                leases.remove((ns.as_str(), id.as_str())).store()?;
                resources
                    .retain_in((ns.as_str(), id.as_str(), "", "").., |(n, l, _, _), ()| {
                        n != ns || l != id
                    })
                    .store()?;
            }
            let mut dead = Vec::new();
            for row in content.iter().store()? {
                let (key, _) = row.store()?;
                let (ns, digest) = key.value();
                let pair = (ns.to_string(), digest.to_string());
                if roots.live.contains(&pair) {
                    sweep.referenced.insert(pair.1);
                } else {
                    dead.push(pair);
                }
            }
            for (ns, digest) in &dead {
                content.remove((ns.as_str(), digest.as_str())).store()?;
            }
            sweep.removed_records = dead;
            let mut dead_snapshots = Vec::new();
            for row in snapshots.iter().store()? {
                let (key, value) = row.store()?;
                let (sn, ns, name) = key.value();
                let triple = (sn.to_string(), ns.to_string(), name.to_string());
                if roots.live_snapshots.contains(&triple) {
                    let rec = SnapshotRecord::decode(value.value())?;
                    sweep.referenced_snapshots.insert(rec.backend_key);
                } else {
                    dead_snapshots.push(triple);
                }
            }
            for (sn, ns, name) in &dead_snapshots {
                snapshots
                    .remove((sn.as_str(), ns.as_str(), name.as_str()))
                    .store()?;
            }
            sweep.removed_snapshots = dead_snapshots;
            sweep.removed_leases = roots.expired_leases;
            sweep.leased_ingests = roots.leased_ingests;
        }
        txn.commit().store()?;
        Ok(sweep)
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
        let want: BTreeSet<String> = [a.clone(), b.clone(), c.clone()].into_iter().collect();
        assert_eq!(roots.live_digests(), want);
        assert_eq!(
            roots.expired_leases,
            vec![("ns2".to_string(), "old".to_string())]
        );

        // Before the lease expires, its content is live.
        let earlier = UNIX_EPOCH + Duration::from_secs(900_000_000);
        let roots = db.gc_roots(earlier).unwrap();
        assert!(roots.live_digests().contains(&e));
        assert!(!roots.live_digests().contains(&d));
        assert!(roots.expired_leases.is_empty());

        // The sweep removes d and e's record and the expired lease, in one transaction.
        db.add_lease_resource("ns1", "live", "ingests", "upload-1")
            .unwrap();
        let sweep = db.collect_garbage(SystemTime::now()).unwrap();
        assert_eq!(
            sweep.removed_records,
            vec![
                ("ns1".to_string(), d.clone()),
                ("ns2".to_string(), e.clone())
            ]
        );
        assert_eq!(sweep.removed_leases, vec![("ns2".into(), "old".into())]);
        assert_eq!(sweep.referenced, [a, b, c].into_iter().collect());
        assert!(sweep
            .leased_ingests
            .contains(&("ns1".to_string(), "upload-1".to_string())));
        assert!(db.content("ns1", &d).is_err());
        let ids: Vec<String> = db
            .list_leases("ns2")
            .unwrap()
            .into_iter()
            .map(|l| l.id)
            .collect();
        assert_eq!(ids, vec!["junk", "later"]);
        // Nothing left to collect.
        let again = db.collect_garbage(SystemTime::now()).unwrap();
        assert!(again.removed_records.is_empty() && again.removed_leases.is_empty());
    }

    #[test]
    fn images_and_containers_are_roots() {
        use super::super::{AnyValue, ContainerRecord, ImageRecord, RuntimeInfo, Target};
        let (_dir, db) = open_temp();
        let (index, manifest, config, loose, held) = (
            digest('1'),
            digest('2'),
            digest('3'),
            digest('4'),
            digest('5'),
        );
        db.add_content(
            "ns",
            &record(&index, &[("containerd.io/gc.ref.content.m.0", &manifest)]),
        )
        .unwrap();
        db.add_content(
            "ns",
            &record(
                &manifest,
                &[("containerd.io/gc.ref.content.config", &config)],
            ),
        )
        .unwrap();
        db.add_content("ns", &record(&config, &[])).unwrap();
        db.add_content("ns", &record(&loose, &[])).unwrap();
        db.add_content("ns", &record(&held, &[])).unwrap();
        // The same index in another namespace, without an image there.
        db.add_content("other", &record(&index, &[])).unwrap();
        db.create_image(
            "ns",
            ImageRecord {
                name: "img".into(),
                target: Target {
                    media_type: "application/vnd.oci.image.index.v1+json".into(),
                    digest: index.clone(),
                    size: 1,
                    annotations: BTreeMap::new(),
                },
                ..Default::default()
            },
        )
        .unwrap();
        db.create_container(
            "ns",
            ContainerRecord {
                id: "c1".into(),
                labels: labels(&[("containerd.io/gc.ref.content.x", &held)]),
                runtime: RuntimeInfo {
                    name: "io.containerd.runc.v2".into(),
                    options: None,
                },
                spec: Some(AnyValue::default()),
                ..Default::default()
            },
        )
        .unwrap();

        let sweep = db.collect_garbage(SystemTime::now()).unwrap();
        assert_eq!(
            sweep.removed_records,
            vec![
                ("ns".to_string(), loose.clone()),
                ("other".to_string(), index.clone())
            ]
        );
        assert_eq!(
            sweep.referenced,
            [
                index.clone(),
                manifest.clone(),
                config.clone(),
                held.clone()
            ]
            .into_iter()
            .collect()
        );

        // Without the image and the container, everything goes.
        db.delete_image("ns", "img").unwrap();
        db.delete_container("ns", "c1").unwrap();
        let sweep = db.collect_garbage(SystemTime::now()).unwrap();
        assert_eq!(sweep.removed_records.len(), 4);
        assert!(sweep.referenced.is_empty());
    }
}
