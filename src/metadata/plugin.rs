//! `io.containerd.metadata.v1.bolt`: the metadata store (a redb file under the plugin root)
//! joined with the content backend and every loaded snapshotter.

use std::sync::Arc;

use super::{Db, Metadata, SharingPolicy};
use crate::content::ContentHandle;
use crate::errdefs::Error;
use crate::plugin::{types, Instance, Registration};
use crate::snapshots::plugin::loaded_snapshotters;

/// `[plugins.'io.containerd.metadata.v1.bolt']`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BoltConfig {
    /// `shared`: a blob another namespace holds is linked in when a writer expects it;
    /// `isolated`: every namespace must write its blobs itself.
    pub content_sharing_policy: String,
}

impl Default for BoltConfig {
    fn default() -> Self {
        BoltConfig {
            content_sharing_policy: "shared".into(),
        }
    }
}

/// `io.containerd.metadata.v1.bolt`.
pub fn registration() -> Registration {
    Registration::new(types::METADATA, "bolt", |ic| {
        let root = ic.root();
        std::fs::create_dir_all(&root)
            .map_err(|err| Error::internal(format!("create {}: {err}", root.display())))?;
        let path = root.join("meta.redb");
        let store = ic.single::<ContentHandle>(types::CONTENT)?.0.clone();
        let policy = match ic.config::<BoltConfig>()?.content_sharing_policy.as_str() {
            "shared" => SharingPolicy::Shared,
            "isolated" => SharingPolicy::Isolated,
            other => return Err(Error::invalid_argument(format!("unknown policy: {other}"))),
        };
        let db = Arc::new(Db::open(&path)?);
        let snapshotters = loaded_snapshotters(ic);
        let meta = Arc::new(Metadata::new(db, store, policy).with_snapshotters(snapshotters));
        ic.meta
            .exports
            .insert("path".into(), path.to_string_lossy().into_owned());
        ic.meta
            .exports
            .insert("policy".into(), policy.as_str().into());
        Ok(Instance::new(meta))
    })
    .requires(&[types::CONTENT, types::EVENT, types::SNAPSHOT])
    .config::<BoltConfig>()
}
