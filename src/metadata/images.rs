//! Image records: a name pointing at a root descriptor, per namespace, in the `images`
//! table: (namespace, name) → times, labels, target (media type, digest, size, annotations).
//!
//! An image is a garbage-collection root: it keeps its target digest, and whatever its own
//! `containerd.io/gc.ref.*` labels name; the target's children are kept through the labels
//! of the content records (index → manifests → config and layers → snapshots).

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use redb::ReadableTable;

use super::{ensure_namespace, validate_label, Db, StoreResult, IMAGES};
use crate::codec::{Decoder, Encoder};
use crate::content::Digest;
use crate::errdefs::{Class, Error};
use crate::filters::{labels_field, map_field, Filter};
use crate::identifiers::go_quote;

/// An OCI descriptor as an image's target.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Target {
    pub media_type: String,
    pub digest: String,
    pub size: i64,
    pub annotations: BTreeMap<String, String>,
}

/// One namespace's record of an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRecord {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub target: Target,
    pub created_at: SystemTime,
    pub updated_at: SystemTime,
}

impl Default for ImageRecord {
    fn default() -> Self {
        ImageRecord {
            name: String::new(),
            labels: BTreeMap::new(),
            target: Target::default(),
            created_at: UNIX_EPOCH,
            updated_at: UNIX_EPOCH,
        }
    }
}

impl ImageRecord {
    fn encode(&self) -> Vec<u8> {
        Encoder::new()
            .time(self.created_at)
            .time(self.updated_at)
            .labels(&self.labels)
            .str(&self.target.media_type)
            .str(&self.target.digest)
            .i64(self.target.size)
            .labels(&self.target.annotations)
            .finish()
    }

    pub(super) fn decode(name: &str, bytes: &[u8]) -> Result<Self, Error> {
        let mut d = Decoder::new(bytes);
        Ok(ImageRecord {
            name: name.to_string(),
            created_at: d.time()?,
            updated_at: d.time()?,
            labels: d.labels()?,
            target: Target {
                media_type: d.str()?,
                digest: d.str()?,
                size: d.i64()?,
                annotations: d.labels()?,
            },
        })
    }

    /// Whether `filter` (fields `name`, `target.digest`, `target.mediatype`, `labels.<k>`,
    /// `annotations.<k>`) selects this image.
    pub fn matches(&self, filter: &Filter) -> bool {
        let labels = self.labels.clone().into_iter().collect();
        let annotations = self.target.annotations.clone().into_iter().collect();
        let present = |s: &str| (!s.is_empty()).then(|| s.to_string());
        filter.matches(&|path: &[String]| {
            let head: Vec<&str> = path.iter().take(2).map(String::as_str).collect();
            match head[..] {
                ["name", ..] => present(&self.name),
                ["target", "digest"] => present(&self.target.digest),
                ["target", "mediatype"] => present(&self.target.media_type),
                ["labels", ..] => labels_field(&labels, path),
                ["annotations", ..] => map_field(&annotations, &path[1..]),
                _ => None,
            }
        })
    }
}

fn invalid(text: impl std::fmt::Display) -> Error {
    Error::wrapped(Class::InvalidArgument, text)
}

/// containerd's checks on an image record, in its order.
fn validate(image: &ImageRecord) -> Result<(), Error> {
    if image.name.is_empty() {
        return Err(invalid("image name must not be empty"));
    }
    for (k, v) in &image.labels {
        validate_label(k, v).map_err(|e| e.context("image.Labels"))?;
    }
    let target = &image.target;
    if let Err(reason) = Digest::check(&target.digest) {
        return Err(invalid(format!(
            "Target.Digest {} invalid: {reason}",
            go_quote(&target.digest)
        )));
    }
    if target.size <= 0 {
        return Err(invalid("Target.Size must be greater than zero"));
    }
    if target.media_type.is_empty() {
        return Err(invalid("Target.MediaType must be set"));
    }
    Ok(())
}

/// Sets or removes `key` in `map` from `from` (absent or empty removes).
fn set_key(map: &mut BTreeMap<String, String>, from: &BTreeMap<String, String>, key: &str) {
    match from.get(key).filter(|v| !v.is_empty()) {
        Some(v) => map.insert(key.to_string(), v.clone()),
        None => map.remove(key),
    };
}

fn not_found(name: &str) -> Error {
    Error::wrapped(Class::NotFound, format!("image {}", go_quote(name)))
}

impl Db {
    /// The image `name` of `ns`; NotFound `image "<name>"`.
    pub fn image(&self, ns: &str, name: &str) -> Result<ImageRecord, Error> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(IMAGES).store()?;
        let value = table.get((ns, name)).store()?;
        match value {
            Some(v) => ImageRecord::decode(name, v.value()),
            None => Err(not_found(name)),
        }
    }

    /// The images of `ns` that `filters` select, by name.
    pub fn list_images(&self, ns: &str, filters: &[String]) -> Result<Vec<ImageRecord>, Error> {
        let filter = Filter::parse_all(filters)?;
        let txn = self.db.begin_read()?;
        let table = txn.open_table(IMAGES).store()?;
        let mut out = Vec::new();
        for row in table.range((ns, "")..).store()? {
            let (key, value) = row.store()?;
            let (row_ns, name) = key.value();
            if row_ns != ns {
                break;
            }
            let rec = ImageRecord::decode(name, value.value())?;
            if rec.matches(&filter) {
                out.push(rec);
            }
        }
        Ok(out)
    }

    /// Creates `image` in `ns` (and the namespace if needed), with both times now.
    pub fn create_image(&self, ns: &str, mut image: ImageRecord) -> Result<ImageRecord, Error> {
        validate(&image)?;
        image.labels.retain(|_, v| !v.is_empty());
        image.target.annotations.retain(|_, v| !v.is_empty());
        let txn = self.db.begin_write()?;
        ensure_namespace(&txn, ns)?;
        {
            let mut table = txn.open_table(IMAGES).store()?;
            let key = (ns, image.name.as_str());
            if table.get(key).store()?.is_some() {
                return Err(Error::wrapped(
                    Class::AlreadyExists,
                    format!("image {}", go_quote(&image.name)),
                ));
            }
            image.created_at = SystemTime::now();
            image.updated_at = image.created_at;
            table.insert(key, image.encode().as_slice()).store()?;
        }
        self.commit(txn, false)?;
        Ok(image)
    }

    /// Updates the fields of `from` named by `paths` (`labels`, `labels.<k>`, `target`,
    /// `annotations`, `annotations.<k>`; none replaces the whole image); keeps `created_at`.
    pub fn update_image(
        &self,
        ns: &str,
        from: &ImageRecord,
        paths: &[String],
    ) -> Result<ImageRecord, Error> {
        let name = from.name.as_str();
        if name.is_empty() {
            return Err(invalid("image name is required for update"));
        }
        let txn = self.db.begin_write()?;
        let updated = {
            let mut table = txn.open_table(IMAGES).store()?;
            let existing = table.get((ns, name)).store()?.map(|v| v.value().to_vec());
            let current = ImageRecord::decode(name, &existing.ok_or_else(|| not_found(name))?)?;
            let mut updated = if paths.is_empty() {
                from.clone()
            } else {
                current.clone()
            };
            for path in paths {
                if let Some(key) = path.strip_prefix("labels.") {
                    set_key(&mut updated.labels, &from.labels, key);
                } else if let Some(key) = path.strip_prefix("annotations.") {
                    set_key(
                        &mut updated.target.annotations,
                        &from.target.annotations,
                        key,
                    );
                } else {
                    match path.as_str() {
                        "labels" => updated.labels.clone_from(&from.labels),
                        "target" => updated.target.clone_from(&from.target),
                        "annotations" => updated
                            .target
                            .annotations
                            .clone_from(&from.target.annotations),
                        other => {
                            return Err(invalid(format!(
                                "cannot update {} field on image {}",
                                go_quote(other),
                                go_quote(name)
                            )))
                        }
                    }
                }
            }
            validate(&updated)?;
            updated.labels.retain(|_, v| !v.is_empty());
            updated.target.annotations.retain(|_, v| !v.is_empty());
            updated.created_at = current.created_at;
            updated.updated_at = SystemTime::now();
            table
                .insert((ns, name), updated.encode().as_slice())
                .store()?;
            updated
        };
        self.commit(txn, false)?;
        Ok(updated)
    }

    /// Removes image `name` from `ns`; what it held goes at the next collection.
    pub fn delete_image(&self, ns: &str, name: &str) -> Result<(), Error> {
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(IMAGES).store()?;
            if table.remove((ns, name)).store()?.is_none() {
                return Err(not_found(name));
            }
        }
        self.commit(txn, true)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{labels, open_temp};
    use super::*;

    fn image(name: &str, digest_char: char) -> ImageRecord {
        ImageRecord {
            name: name.to_string(),
            labels: labels(&[("a", "1")]),
            target: Target {
                media_type: "application/vnd.oci.image.manifest.v1+json".into(),
                digest: format!("sha256:{}", digest_char.to_string().repeat(64)),
                size: 42,
                annotations: labels(&[("org.opencontainers.image.ref.name", "latest")]),
            },
            ..Default::default()
        }
    }

    #[test]
    fn create_get_list_filter_delete() {
        let (_dir, db) = open_temp();
        let created = db.create_image("ns", image("b:1", 'b')).unwrap();
        assert!(created.created_at > UNIX_EPOCH);
        assert_eq!(db.image("ns", "b:1").unwrap(), created);
        db.create_image("ns", image("a:1", 'a')).unwrap();
        db.create_image("two", image("a:1", 'a')).unwrap();
        let err = db.create_image("ns", image("a:1", 'a')).unwrap_err();
        assert_eq!(err.class(), Class::AlreadyExists);
        assert_eq!(err.message(), "image \"a:1\": already exists");

        let names = |filters: &[&str]| -> Vec<String> {
            let filters: Vec<String> = filters.iter().map(|s| s.to_string()).collect();
            db.list_images("ns", &filters)
                .unwrap()
                .into_iter()
                .map(|i| i.name)
                .collect()
        };
        assert_eq!(names(&[]), ["a:1", "b:1"]);
        assert_eq!(names(&["name==b:1"]), ["b:1"]);
        let digest = format!("target.digest==sha256:{}", "a".repeat(64));
        assert_eq!(names(&[digest.as_str()]), ["a:1"]);
        assert_eq!(names(&["target.mediatype~=manifest"]).len(), 2);
        assert_eq!(names(&["labels.a==1", "name==zzz"]).len(), 2);
        assert_eq!(
            names(&[r#"annotations."org.opencontainers.image.ref.name"==latest"#]).len(),
            2
        );
        assert!(names(&["labels.b"]).is_empty());
        let err = db.list_images("ns", &["name==".into()]).unwrap_err();
        assert_eq!(err.class(), Class::InvalidArgument);

        db.delete_image("ns", "a:1").unwrap();
        let err = db.delete_image("ns", "a:1").unwrap_err();
        assert_eq!(err.message(), "image \"a:1\": not found");
        assert_eq!(db.image("two", "a:1").unwrap().name, "a:1");
    }

    #[test]
    fn validation_matches_containerds_messages() {
        let (_dir, db) = open_temp();
        let mut empty_target = image("x", 'a');
        empty_target.target = Target::default();
        let mut zero = image("x", 'a');
        zero.target.size = 0;
        let mut no_type = image("x", 'a');
        no_type.target.media_type.clear();
        for (rec, want) in [
            (
                empty_target,
                "Target.Digest \"\" invalid: invalid checksum digest format: invalid argument",
            ),
            (
                zero,
                "Target.Size must be greater than zero: invalid argument",
            ),
            (no_type, "Target.MediaType must be set: invalid argument"),
            (
                image("", 'a'),
                "image name must not be empty: invalid argument",
            ),
        ] {
            let err = db.create_image("ns", rec).unwrap_err();
            assert_eq!(err.class(), Class::InvalidArgument);
            assert_eq!(err.message(), want);
        }
        assert!(db.list_images("ns", &[]).unwrap().is_empty());
    }

    #[test]
    fn update_by_paths() {
        let (_dir, db) = open_temp();
        let created = db.create_image("ns", image("i", 'a')).unwrap();
        let mut change = image("i", 'b');
        change.labels = labels(&[("b", "2")]);
        change.target.annotations = labels(&[("k", "v")]);

        let out = db
            .update_image("ns", &change, &["labels.b".into(), "labels.a".into()])
            .unwrap();
        assert_eq!(out.labels, labels(&[("b", "2")]));
        assert_eq!(out.target.digest, created.target.digest);
        assert_eq!(out.created_at, created.created_at);
        assert!(out.updated_at > created.updated_at);

        let out = db
            .update_image("ns", &change, &["annotations.k".into()])
            .unwrap();
        assert_eq!(out.target.annotations.len(), 2);
        let out = db.update_image("ns", &change, &["target".into()]).unwrap();
        assert_eq!(out.target, change.target);

        let err = db
            .update_image("ns", &change, &["labels".into(), "size".into()])
            .unwrap_err();
        assert_eq!(
            err.message(),
            "cannot update \"size\" field on image \"i\": invalid argument"
        );
        let mut broken = change.clone();
        broken.target.size = 0;
        let err = db
            .update_image("ns", &broken, &["target".into()])
            .unwrap_err();
        assert_eq!(err.class(), Class::InvalidArgument);
        assert_eq!(db.image("ns", "i").unwrap(), out, "failed updates wrote");

        let whole = db.update_image("ns", &change, &[]).unwrap();
        assert_eq!(whole.labels, change.labels);
        assert_eq!(whole.created_at, created.created_at);
        let err = db.update_image("ns", &image("j", 'a'), &[]).unwrap_err();
        assert_eq!(err.class(), Class::NotFound);
        assert_eq!(err.message(), "image \"j\": not found");
    }
}
