//! Namespaces: creation, labels, listing and deletion of empty namespaces.

use std::collections::BTreeMap;

use redb::ReadableTable;

use super::{
    ensure_namespace, validate_label, validate_labels, Db, StoreResult, CONTAINERS, CONTENT,
    IMAGES, LEASES, NAMESPACES, SNAPSHOTS,
};
use crate::codec::{Decoder, Encoder};
use crate::errdefs::{Class, Error};
use crate::identifiers::{go_quote, validate};

fn write_labels(
    txn: &redb::WriteTransaction,
    name: &str,
    labels: &BTreeMap<String, String>,
) -> Result<(), Error> {
    let mut table = txn.open_table(NAMESPACES).store()?;
    let value = Encoder::new().labels(labels).finish();
    table.insert(name, value.as_slice()).store()?;
    Ok(())
}

fn read_labels(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    name: &str,
) -> Result<BTreeMap<String, String>, Error> {
    match table.get(name).store()? {
        Some(value) => Decoder::new(value.value()).labels(),
        None => Ok(BTreeMap::new()),
    }
}

/// Whether any row of a `(namespace, …)`-keyed table belongs to `ns`.
fn has_rows(
    table: &impl ReadableTable<(&'static str, &'static str), &'static [u8]>,
    ns: &str,
) -> Result<bool, Error> {
    match table.range((ns, "")..).store()?.next() {
        Some(row) => Ok(row.store()?.0.value().0 == ns),
        None => Ok(false),
    }
}

impl Db {
    /// Creates namespace `name`; AlreadyExists if it is there.
    pub fn create_namespace(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<(), Error> {
        validate(name)?;
        validate_labels(labels)?;
        let txn = self.db.begin_write()?;
        {
            let table = txn.open_table(NAMESPACES).store()?;
            if table.get(name).store()?.is_some() {
                return Err(Error::wrapped(
                    Class::AlreadyExists,
                    format!("namespace {}", go_quote(name)),
                ));
            }
        }
        write_labels(&txn, name, labels)?;
        self.commit(txn, false)
    }

    /// The labels of `name`; an unknown namespace has none (never NotFound).
    pub fn namespace_labels(&self, name: &str) -> Result<BTreeMap<String, String>, Error> {
        let txn = self.db.begin_read()?;
        read_labels(&txn.open_table(NAMESPACES).store()?, name)
    }

    /// Every namespace name, in byte order.
    pub fn list_namespaces(&self) -> Result<Vec<String>, Error> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(NAMESPACES).store()?;
        let mut names = Vec::new();
        for row in table.iter().store()? {
            names.push(row.store()?.0.value().to_string());
        }
        Ok(names)
    }

    /// Sets one label, creating the namespace if missing; an empty value deletes the label.
    pub fn set_namespace_label(&self, name: &str, key: &str, value: &str) -> Result<(), Error> {
        validate(name)?;
        validate_label(key, value)?;
        let txn = self.db.begin_write()?;
        let mut labels = read_labels(&txn.open_table(NAMESPACES).store()?, name)?;
        if value.is_empty() {
            labels.remove(key);
        } else {
            labels.insert(key.to_string(), value.to_string());
        }
        write_labels(&txn, name, &labels)?;
        self.commit(txn, false)
    }

    /// Replaces all labels, creating the namespace if missing.
    pub fn replace_namespace_labels(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<(), Error> {
        validate(name)?;
        let txn = self.db.begin_write()?;
        ensure_namespace(&txn, name)?;
        validate_labels(labels)?;
        write_labels(&txn, name, labels)?;
        self.commit(txn, false)
    }

    /// Deletes an empty namespace.
    pub fn delete_namespace(&self, name: &str) -> Result<(), Error> {
        let txn = self.db.begin_write()?;
        let mut remaining = Vec::new();
        if has_rows(&txn.open_table(IMAGES).store()?, name)? {
            remaining.push("images".to_string());
        }
        if has_rows(&txn.open_table(CONTENT).store()?, name)? {
            remaining.push("blobs".to_string());
        }
        if has_rows(&txn.open_table(CONTAINERS).store()?, name)? {
            remaining.push("containers".to_string());
        }
        if has_rows(&txn.open_table(LEASES).store()?, name)? {
            remaining.push("leases".to_string());
        }
        let mut snapshotters = std::collections::BTreeSet::new();
        for row in txn.open_table(SNAPSHOTS).store()?.iter().store()? {
            let (key, _) = row.store()?;
            let (sn, ns, _) = key.value();
            if ns == name {
                snapshotters.insert(sn.to_string());
            }
        }
        for sn in snapshotters {
            remaining.push(format!("snapshots on {sn:?} snapshotter"));
        }
        if !remaining.is_empty() {
            return Err(Error::wrapped(
                Class::FailedPrecondition,
                format!(
                    "namespace {} must be empty, but it still has {}",
                    go_quote(name),
                    remaining.join(", ")
                ),
            ));
        }
        {
            let mut table = txn.open_table(NAMESPACES).store()?;
            if table.remove(name).store()?.is_none() {
                return Err(Error::wrapped(
                    Class::NotFound,
                    format!("namespace {}", go_quote(name)),
                ));
            }
        }
        self.commit(txn, false)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{labels, open_temp};
    use super::super::ContentRecord;
    use super::*;
    use std::time::SystemTime;

    #[test]
    fn create_get_list_and_duplicate() {
        let (_dir, db) = open_temp();
        db.create_namespace("zeta", &labels(&[("x", "1")])).unwrap();
        db.create_namespace("Alpha", &BTreeMap::new()).unwrap();
        db.create_namespace("alpha", &BTreeMap::new()).unwrap();
        assert_eq!(
            db.list_namespaces().unwrap(),
            vec!["Alpha", "alpha", "zeta"]
        );
        assert_eq!(db.namespace_labels("zeta").unwrap(), labels(&[("x", "1")]));
        let err = db.create_namespace("zeta", &BTreeMap::new()).unwrap_err();
        assert_eq!(err.class(), Class::AlreadyExists);
        assert_eq!(err.message(), "namespace \"zeta\": already exists");
        let err = db
            .create_namespace("bad name", &BTreeMap::new())
            .unwrap_err();
        assert_eq!(err.class(), Class::InvalidArgument);
    }

    #[test]
    fn get_of_unknown_namespace_is_empty_not_not_found() {
        let (_dir, db) = open_temp();
        assert!(db.namespace_labels("nope").unwrap().is_empty());
        assert!(db.list_namespaces().unwrap().is_empty());
    }

    #[test]
    fn an_empty_label_key_is_invalid_everywhere() {
        let (_dir, db) = open_temp();
        let errors = [
            db.set_namespace_label("ns", "", "v").unwrap_err(),
            db.create_namespace("ns", &labels(&[("", "v")]))
                .unwrap_err(),
            db.replace_namespace_labels("ns", &labels(&[("", "v")]))
                .unwrap_err(),
        ];
        for err in errors {
            assert_eq!(err.class(), Class::InvalidArgument);
            assert_eq!(
                err.message(),
                "label key must not be empty: invalid argument"
            );
        }
        assert!(
            db.list_namespaces().unwrap().is_empty(),
            "nothing was written"
        );
    }

    #[test]
    fn label_creates_namespace_and_empty_value_deletes() {
        let (_dir, db) = open_temp();
        db.set_namespace_label("nonexist", "x", "y").unwrap();
        assert_eq!(db.list_namespaces().unwrap(), vec!["nonexist"]);
        db.set_namespace_label("nonexist", "z", "w").unwrap();
        db.set_namespace_label("nonexist", "x", "").unwrap();
        assert_eq!(
            db.namespace_labels("nonexist").unwrap(),
            labels(&[("z", "w")])
        );
        db.replace_namespace_labels("nonexist", &labels(&[("a", "b"), ("c", "")]))
            .unwrap();
        assert_eq!(
            db.namespace_labels("nonexist").unwrap(),
            labels(&[("a", "b")])
        );
        db.replace_namespace_labels("fresh", &BTreeMap::new())
            .unwrap();
        assert_eq!(db.list_namespaces().unwrap(), vec!["fresh", "nonexist"]);
    }

    #[test]
    fn failed_replace_changes_nothing() {
        let (_dir, db) = open_temp();
        db.create_namespace("ns", &labels(&[("keep", "me")]))
            .unwrap();
        let big = "v".repeat(5000);
        let bad = labels(&[("a", "fine"), ("b", big.as_str())]);
        let err = db.replace_namespace_labels("ns", &bad).unwrap_err();
        assert_eq!(err.class(), Class::InvalidArgument);
        let err = db.replace_namespace_labels("other", &bad).unwrap_err();
        assert_eq!(err.class(), Class::InvalidArgument);
        assert_eq!(
            db.namespace_labels("ns").unwrap(),
            labels(&[("keep", "me")])
        );
        assert_eq!(db.list_namespaces().unwrap(), vec!["ns"]);
    }

    #[test]
    fn delete_unknown_and_non_empty() {
        let (_dir, db) = open_temp();
        let err = db.delete_namespace("ghost").unwrap_err();
        assert_eq!(err.class(), Class::NotFound);
        assert_eq!(err.message(), "namespace \"ghost\": not found");

        let now = SystemTime::now();
        let rec = ContentRecord {
            digest: format!("sha256:{}", "a".repeat(64)),
            size: 3,
            created_at: now,
            updated_at: now,
            labels: BTreeMap::new(),
        };
        db.add_content("busy", &rec).unwrap();
        db.create_lease("busy", "l", &BTreeMap::new()).unwrap();
        db.create_lease("busy2", "l", &BTreeMap::new()).unwrap();
        let err = db.delete_namespace("busy").unwrap_err();
        assert_eq!(err.class(), Class::FailedPrecondition);
        assert_eq!(
            err.message(),
            "namespace \"busy\" must be empty, but it still has blobs, leases: failed precondition"
        );
        db.delete_lease("busy", "l").unwrap();
        let err = db.delete_namespace("busy").unwrap_err();
        assert!(err
            .message()
            .ends_with("still has blobs: failed precondition"));
        db.delete_content("busy", &rec.digest).unwrap();
        db.delete_namespace("busy").unwrap();
        assert_eq!(db.list_namespaces().unwrap(), vec!["busy2"]);
    }

    #[test]
    fn delete_names_images_and_containers_left() {
        use super::super::{AnyValue, ContainerRecord, ImageRecord, RuntimeInfo, Target};
        let (_dir, db) = open_temp();
        db.create_image(
            "busy",
            ImageRecord {
                name: "img".into(),
                target: Target {
                    media_type: "m".into(),
                    digest: format!("sha256:{}", "a".repeat(64)),
                    size: 1,
                    annotations: BTreeMap::new(),
                },
                ..Default::default()
            },
        )
        .unwrap();
        db.create_container(
            "busy",
            ContainerRecord {
                id: "c1".into(),
                runtime: RuntimeInfo {
                    name: "r".into(),
                    options: None,
                },
                spec: Some(AnyValue::default()),
                ..Default::default()
            },
        )
        .unwrap();
        let err = db.delete_namespace("busy").unwrap_err();
        assert_eq!(err.class(), Class::FailedPrecondition);
        assert_eq!(
            err.message(),
            "namespace \"busy\" must be empty, but it still has images, containers: \
             failed precondition"
        );
        db.delete_image("busy", "img").unwrap();
        db.delete_container("busy", "c1").unwrap();
        db.delete_namespace("busy").unwrap();
    }
}
