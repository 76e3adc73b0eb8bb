//! Container records: what a container is made of (spec, runtime, rootfs snapshot, image
//! name, extensions), per namespace, in the `containers` table: (namespace, id) → record.
//!
//! Nothing here runs anything. The spec, the runtime options and the extensions are `Any`
//! values kept byte for byte as the client sent them; only their presence is checked.
//! A container is a garbage-collection root: it keeps its snapshot
//! (`snapshotter`/`snapshot_key`) and whatever its `containerd.io/gc.ref.*` labels name.
//!
//! For other parts of the daemon (the task service), [`Db::container`] is the lookup:
//! `spec.value` is the runtime spec's JSON when `spec.type_url` is the OCI spec's, and
//! `snapshotter` + `snapshot_key` name the rootfs snapshot in the same namespace.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use redb::ReadableTable;

use super::{ensure_namespace, validate_label, Db, StoreResult, CONTAINERS};
use crate::codec::{Decoder, Encoder};
use crate::errdefs::{Class, Error};
use crate::filters::{labels_field, Filter};
use crate::identifiers::go_quote;

/// A protobuf `Any` as stored: the type URL and the encoded value, untouched.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AnyValue {
    pub type_url: String,
    pub value: Vec<u8>,
}

/// The runtime that runs a container's tasks, with its options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuntimeInfo {
    pub name: String,
    pub options: Option<AnyValue>,
}

/// One namespace's record of a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerRecord {
    pub id: String,
    pub labels: BTreeMap<String, String>,
    pub image: String,
    pub runtime: RuntimeInfo,
    pub spec: Option<AnyValue>,
    pub snapshotter: String,
    pub snapshot_key: String,
    pub created_at: SystemTime,
    pub updated_at: SystemTime,
    pub extensions: BTreeMap<String, AnyValue>,
    pub sandbox: String,
}

impl Default for ContainerRecord {
    fn default() -> Self {
        ContainerRecord {
            id: String::new(),
            labels: BTreeMap::new(),
            image: String::new(),
            runtime: RuntimeInfo::default(),
            spec: None,
            snapshotter: String::new(),
            snapshot_key: String::new(),
            created_at: UNIX_EPOCH,
            updated_at: UNIX_EPOCH,
            extensions: BTreeMap::new(),
            sandbox: String::new(),
        }
    }
}

fn encode_any(e: Encoder, any: &Option<AnyValue>) -> Encoder {
    match any {
        None => e.u32(0),
        Some(any) => e.u32(1).str(&any.type_url).bytes(&any.value),
    }
}

fn decode_any(d: &mut Decoder<'_>) -> Result<Option<AnyValue>, Error> {
    if d.u32()? == 0 {
        return Ok(None);
    }
    Ok(Some(AnyValue {
        type_url: d.str()?,
        value: d.bytes()?,
    }))
}

impl ContainerRecord {
    fn encode(&self) -> Vec<u8> {
        let mut e = Encoder::new().str(&self.image).str(&self.runtime.name);
        e = encode_any(e, &self.runtime.options);
        e = encode_any(e, &self.spec);
        e = e
            .str(&self.snapshotter)
            .str(&self.snapshot_key)
            .time(self.created_at)
            .time(self.updated_at)
            .labels(&self.labels)
            .u32(u32::try_from(self.extensions.len()).expect("gRPC messages are below 4 GiB"));
        for (k, v) in &self.extensions {
            e = encode_any(e.str(k), &Some(v.clone()));
        }
        e.str(&self.sandbox).finish()
    }

    pub(super) fn decode(id: &str, bytes: &[u8]) -> Result<Self, Error> {
        let mut d = Decoder::new(bytes);
        let image = d.str()?;
        let name = d.str()?;
        let options = decode_any(&mut d)?;
        let spec = decode_any(&mut d)?;
        let snapshotter = d.str()?;
        let snapshot_key = d.str()?;
        let created_at = d.time()?;
        let updated_at = d.time()?;
        let labels = d.labels()?;
        let mut extensions = BTreeMap::new();
        for _ in 0..d.u32()? {
            let key = d.str()?;
            if let Some(any) = decode_any(&mut d)? {
                extensions.insert(key, any);
            }
        }
        let sandbox = d.str()?;
        Ok(ContainerRecord {
            id: id.to_string(),
            labels,
            image,
            runtime: RuntimeInfo { name, options },
            spec,
            snapshotter,
            snapshot_key,
            created_at,
            updated_at,
            extensions,
            sandbox,
        })
    }

    /// Whether `filter` (fields `id`, `runtime.name`, `image`, `labels.<k>`) selects this.
    pub fn matches(&self, filter: &Filter) -> bool {
        let labels = self.labels.clone().into_iter().collect();
        let present = |s: &str| (!s.is_empty()).then(|| s.to_string());
        filter.matches(
            &|path: &[String]| match path.iter().map(String::as_str).collect::<Vec<_>>()[..] {
                ["id", ..] => present(&self.id),
                ["runtime", "name", ..] => present(&self.runtime.name),
                ["image", ..] => present(&self.image),
                ["labels", ..] => labels_field(&labels, path),
                _ => None,
            },
        )
    }
}

fn invalid(text: impl std::fmt::Display) -> Error {
    Error::wrapped(Class::InvalidArgument, text)
}

/// containerd's checks on a container record, in its order.
fn validate(rec: &ContainerRecord) -> Result<(), Error> {
    crate::identifiers::validate(&rec.id).map_err(|e| e.context("container.ID"))?;
    if rec.extensions.keys().any(String::is_empty) {
        return Err(invalid("container.Extension keys must not be zero-length"));
    }
    for (k, v) in &rec.labels {
        validate_label(k, v).map_err(|e| e.context("containers.Labels"))?;
    }
    if rec.runtime.name.is_empty() {
        return Err(invalid("container.Runtime.Name must be set"));
    }
    if rec.spec.is_none() {
        return Err(invalid("container.Spec must be set"));
    }
    if !rec.snapshot_key.is_empty() && rec.snapshotter.is_empty() {
        return Err(invalid(
            "container.Snapshotter must be set if container.SnapshotKey is set",
        ));
    }
    Ok(())
}

/// Applies the update `paths` of `from` to `current`, as containerd's container store does.
fn apply_paths(
    current: &mut ContainerRecord,
    from: &ContainerRecord,
    paths: &[String],
) -> Result<(), Error> {
    for path in paths {
        if let Some(key) = path.strip_prefix("labels.") {
            match from.labels.get(key).filter(|v| !v.is_empty()) {
                Some(v) => current.labels.insert(key.to_string(), v.clone()),
                None => current.labels.remove(key),
            };
            continue;
        }
        if let Some(key) = path.strip_prefix("extensions.") {
            match from.extensions.get(key) {
                Some(v) => current.extensions.insert(key.to_string(), v.clone()),
                None => current.extensions.remove(key),
            };
            continue;
        }
        match path.as_str() {
            "labels" => current.labels.clone_from(&from.labels),
            "spec" => current.spec.clone_from(&from.spec),
            "extensions" => current.extensions.clone_from(&from.extensions),
            "image" => current.image.clone_from(&from.image),
            "snapshotkey" => current.snapshot_key.clone_from(&from.snapshot_key),
            other => {
                return Err(invalid(format!(
                    "cannot update {} field on {}",
                    go_quote(other),
                    go_quote(&from.id)
                )))
            }
        }
    }
    current.labels.retain(|_, v| !v.is_empty());
    Ok(())
}

fn has_containers(
    table: &impl ReadableTable<(&'static str, &'static str), &'static [u8]>,
    ns: &str,
) -> Result<bool, Error> {
    match table.range((ns, "")..).store()?.next() {
        Some(row) => Ok(row.store()?.0.value().0 == ns),
        None => Ok(false),
    }
}

impl Db {
    /// The container `id` of `ns`; NotFound `container "<id>" in namespace "<ns>"`.
    pub fn container(&self, ns: &str, id: &str) -> Result<ContainerRecord, Error> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(CONTAINERS).store()?;
        let value = table.get((ns, id)).store()?;
        match value {
            Some(v) => ContainerRecord::decode(id, v.value()),
            None => Err(Error::wrapped(
                Class::NotFound,
                format!("container {} in namespace {}", go_quote(id), go_quote(ns)),
            )),
        }
    }

    /// The containers of `ns` that `filters` select, by id.
    pub fn list_containers(
        &self,
        ns: &str,
        filters: &[String],
    ) -> Result<Vec<ContainerRecord>, Error> {
        let filter = Filter::parse_all(filters)?;
        let txn = self.db.begin_read()?;
        let table = txn.open_table(CONTAINERS).store()?;
        let mut out = Vec::new();
        for row in table.range((ns, "")..).store()? {
            let (key, value) = row.store()?;
            let (row_ns, id) = key.value();
            if row_ns != ns {
                break;
            }
            let rec = ContainerRecord::decode(id, value.value())?;
            if rec.matches(&filter) {
                out.push(rec);
            }
        }
        Ok(out)
    }

    /// Creates `rec` in `ns` (and the namespace if needed), with both times now.
    pub fn create_container(
        &self,
        ns: &str,
        mut rec: ContainerRecord,
    ) -> Result<ContainerRecord, Error> {
        validate(&rec).map_err(|e| e.context("create container failed validation"))?;
        let txn = self.db.begin_write()?;
        ensure_namespace(&txn, ns)?;
        {
            let mut table = txn.open_table(CONTAINERS).store()?;
            if table.get((ns, rec.id.as_str())).store()?.is_some() {
                return Err(Error::wrapped(
                    Class::AlreadyExists,
                    format!("container {}", go_quote(&rec.id)),
                ));
            }
            rec.created_at = SystemTime::now();
            rec.updated_at = rec.created_at;
            table
                .insert((ns, rec.id.as_str()), rec.encode().as_slice())
                .store()?;
        }
        self.commit(txn, false)?;
        Ok(rec)
    }

    /// Updates the fields of `from` named by `paths` (none: labels, spec, extensions, image
    /// and snapshot key, with snapshotter and runtime name unchanged); keeps `created_at`.
    pub fn update_container(
        &self,
        ns: &str,
        from: &ContainerRecord,
        paths: &[String],
    ) -> Result<ContainerRecord, Error> {
        if from.id.is_empty() {
            return Err(invalid("must specify a container id"));
        }
        let id = from.id.as_str();
        let txn = self.db.begin_write()?;
        let updated = {
            let mut table = txn.open_table(CONTAINERS).store()?;
            let existing = table.get((ns, id)).store()?.map(|v| v.value().to_vec());
            let Some(bytes) = existing else {
                let text = if has_containers(&table, ns)? {
                    format!("container {}", go_quote(id))
                } else {
                    format!(
                        "cannot update container {} in namespace {}",
                        go_quote(id),
                        go_quote(ns)
                    )
                };
                return Err(Error::wrapped(Class::NotFound, text));
            };
            let mut current = ContainerRecord::decode(id, &bytes)?;
            let defaults: Vec<String>;
            let paths = if paths.is_empty() {
                if current.snapshotter != from.snapshotter {
                    return Err(invalid("container.Snapshotter field is immutable"));
                }
                if current.runtime.name != from.runtime.name {
                    return Err(invalid("container.Runtime.Name field is immutable"));
                }
                defaults = ["labels", "spec", "extensions", "image", "snapshotkey"]
                    .map(String::from)
                    .to_vec();
                &defaults[..]
            } else {
                paths
            };
            apply_paths(&mut current, from, paths)?;
            validate(&current).map_err(|e| e.context("update failed validation"))?;
            current.updated_at = SystemTime::now();
            table
                .insert((ns, id), current.encode().as_slice())
                .store()?;
            current
        };
        self.commit(txn, false)?;
        Ok(updated)
    }

    /// Removes container `id` from `ns`; what it held goes at the next collection.
    pub fn delete_container(&self, ns: &str, id: &str) -> Result<(), Error> {
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(CONTAINERS).store()?;
            if table.remove((ns, id)).store()?.is_none() {
                let text = if has_containers(&table, ns)? {
                    format!("container {id}")
                } else {
                    format!(
                        "cannot delete container {} in namespace {}",
                        go_quote(id),
                        go_quote(ns)
                    )
                };
                return Err(Error::wrapped(Class::NotFound, text));
            }
        }
        self.commit(txn, true)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{labels, open_temp};
    use super::*;

    fn any(type_url: &str, value: &[u8]) -> AnyValue {
        AnyValue {
            type_url: type_url.to_string(),
            value: value.to_vec(),
        }
    }

    fn container(id: &str) -> ContainerRecord {
        ContainerRecord {
            id: id.to_string(),
            labels: labels(&[("a", "1")]),
            image: "docker.io/library/busybox:latest".into(),
            runtime: RuntimeInfo {
                name: "io.containerd.runc.v2".into(),
                options: Some(any("containerd.runc.v1.Options", b"")),
            },
            spec: Some(any(
                "types.containerd.io/opencontainers/runtime-spec/1/Spec",
                br#"{"ociVersion":"1.0.2"}"#,
            )),
            snapshotter: "overlayfs".into(),
            snapshot_key: id.to_string(),
            extensions: [("ext".to_string(), any("x/y", &[0, 1, 2, 255]))].into(),
            ..Default::default()
        }
    }

    #[test]
    fn create_get_list_delete_keep_every_field() {
        let (_dir, db) = open_temp();
        let created = db.create_container("ns", container("c1")).unwrap();
        assert!(created.created_at > UNIX_EPOCH);
        assert_eq!(created.created_at, created.updated_at);
        let got = db.container("ns", "c1").unwrap();
        assert_eq!(got, created);
        assert_eq!(got.extensions["ext"].value, [0, 1, 2, 255]);
        assert_eq!(db.list_namespaces().unwrap(), ["ns"]);

        let err = db.create_container("ns", container("c1")).unwrap_err();
        assert_eq!(err.class(), Class::AlreadyExists);
        assert_eq!(err.message(), "container \"c1\": already exists");
        db.create_container("ns", container("c2")).unwrap();
        db.create_container("other", container("c3")).unwrap();

        let ids = |filters: &[&str]| -> Vec<String> {
            let filters: Vec<String> = filters.iter().map(|s| s.to_string()).collect();
            db.list_containers("ns", &filters)
                .unwrap()
                .into_iter()
                .map(|c| c.id)
                .collect()
        };
        assert_eq!(ids(&[]), ["c1", "c2"]);
        assert_eq!(ids(&["id==c2"]), ["c2"]);
        assert_eq!(
            ids(&["runtime.name==io.containerd.runc.v2,labels.a==1"]).len(),
            2
        );
        assert!(ids(&["image==nope"]).is_empty());
        let err = db.list_containers("ns", &["id==".into()]).unwrap_err();
        assert_eq!(err.class(), Class::InvalidArgument);

        let err = db.container("ns", "c9").unwrap_err();
        assert_eq!(
            err.message(),
            "container \"c9\" in namespace \"ns\": not found"
        );
        db.delete_container("ns", "c1").unwrap();
        let err = db.delete_container("ns", "c1").unwrap_err();
        assert_eq!(err.message(), "container c1: not found");
        let err = db.delete_container("empty", "c1").unwrap_err();
        assert_eq!(
            err.message(),
            "cannot delete container \"c1\" in namespace \"empty\": not found"
        );
    }

    #[test]
    fn validation_matches_containerds_messages() {
        let (_dir, db) = open_temp();
        let cases: Vec<(ContainerRecord, &str)> = vec![
            (
                ContainerRecord {
                    id: "bad id".into(),
                    ..container("x")
                },
                "create container failed validation: container.ID: identifier \"bad id\" must \
                 match ^[A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*$: invalid argument",
            ),
            (
                ContainerRecord {
                    runtime: RuntimeInfo::default(),
                    ..container("x")
                },
                "create container failed validation: container.Runtime.Name must be set: \
                 invalid argument",
            ),
            (
                ContainerRecord {
                    spec: None,
                    ..container("x")
                },
                "create container failed validation: container.Spec must be set: invalid argument",
            ),
            (
                ContainerRecord {
                    snapshotter: String::new(),
                    ..container("x")
                },
                "create container failed validation: container.Snapshotter must be set if \
                 container.SnapshotKey is set: invalid argument",
            ),
            (
                ContainerRecord {
                    extensions: [(String::new(), any("a", b""))].into(),
                    ..container("x")
                },
                "create container failed validation: container.Extension keys must not be \
                 zero-length: invalid argument",
            ),
        ];
        for (rec, want) in cases {
            let err = db.create_container("ns", rec).unwrap_err();
            assert_eq!(err.class(), Class::InvalidArgument);
            assert_eq!(err.message(), want);
        }
        assert!(db.list_containers("ns", &[]).unwrap().is_empty());
    }

    #[test]
    fn update_by_paths_and_immutable_fields() {
        let (_dir, db) = open_temp();
        let created = db.create_container("ns", container("c1")).unwrap();
        let mut change = container("c1");
        change.labels = labels(&[("b", "2")]);
        change.image = "other".into();
        change.spec = Some(any("t", b"{}"));
        let out = db
            .update_container("ns", &change, &["labels.b".into(), "labels.a".into()])
            .unwrap();
        assert_eq!(out.labels, labels(&[("b", "2")]));
        assert_eq!(out.image, created.image, "image not in the mask");
        assert_eq!(out.created_at, created.created_at);
        assert!(out.updated_at > created.updated_at);

        let out = db
            .update_container("ns", &change, &["image".into(), "spec".into()])
            .unwrap();
        assert_eq!(out.image, "other");
        assert_eq!(out.spec.as_ref().unwrap().value, b"{}");

        let err = db
            .update_container("ns", &change, &["runtime".into()])
            .unwrap_err();
        assert_eq!(
            err.message(),
            "cannot update \"runtime\" field on \"c1\": invalid argument"
        );
        let mut moved = change.clone();
        moved.snapshotter = "native".into();
        let err = db.update_container("ns", &moved, &[]).unwrap_err();
        assert_eq!(
            err.message(),
            "container.Snapshotter field is immutable: invalid argument"
        );
        let mut no_spec = change.clone();
        no_spec.spec = None;
        let err = db
            .update_container("ns", &no_spec, &["spec".into()])
            .unwrap_err();
        assert_eq!(
            err.message(),
            "update failed validation: container.Spec must be set: invalid argument"
        );
        assert_eq!(
            db.container("ns", "c1").unwrap(),
            out,
            "failed updates wrote"
        );

        let full = db.update_container("ns", &change, &[]).unwrap();
        assert_eq!(full.labels, labels(&[("b", "2")]));
        let err = db
            .update_container("ns", &container("c2"), &[])
            .unwrap_err();
        assert_eq!(err.message(), "container \"c2\": not found");
        let err = db
            .update_container("none", &container("c2"), &[])
            .unwrap_err();
        assert_eq!(
            err.message(),
            "cannot update container \"c2\" in namespace \"none\": not found"
        );
    }
}
