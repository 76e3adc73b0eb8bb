//! A snapshotter in another process, reached through its `containerd.services.snapshots.v1`
//! service with `snapshotter = <proxy name>`.
//!
//! The remote service is namespaced too: each call carries the namespace of the backend key
//! it is about (`<ns>/<id>/<key>`, see `crate::metadata`), so a containerd behind the proxy
//! keeps ctrd's snapshots in the same namespaces as ctrd does. Listing covers every remote
//! namespace but only keys of that form.

use std::collections::BTreeMap;

use futures_util::StreamExt;
use grpcio::Channel;

use super::with_namespace;
use crate::api::namespaces::{ListNamespacesRequest, NamespacesClient};
use crate::api::snapshots::{
    CleanupRequest, CommitSnapshotRequest, ListSnapshotsRequest, MountsRequest,
    PrepareSnapshotRequest, RemoveSnapshotRequest, SnapshotsClient, StatSnapshotRequest,
    UpdateSnapshotRequest, UsageRequest, ViewSnapshotRequest,
};
use crate::api::FieldMask;
use crate::errdefs::Error;
use crate::metadata::backend_namespace;
use crate::snapshots::wire::{info_from_api, info_to_api, mount_from_api};
use crate::snapshots::{Info, Mount, Snapshotter, Usage};

/// See the module documentation.
pub struct ProxySnapshotter {
    client: SnapshotsClient,
    namespaces: NamespacesClient,
    name: String,
}

impl ProxySnapshotter {
    pub fn new(channel: Channel, name: &str) -> Self {
        ProxySnapshotter {
            client: SnapshotsClient::new(channel.clone()),
            namespaces: NamespacesClient::new(channel),
            name: name.to_string(),
        }
    }
}

/// `labels` plus a `containerd.io/gc.root` label: a daemon behind the proxy that collects
/// garbage itself must keep what ctrd holds; ctrd's own collection decides its lifetime.
fn rooted(labels: &BTreeMap<String, String>) -> std::collections::HashMap<String, String> {
    let mut out: std::collections::HashMap<String, String> = labels.clone().into_iter().collect();
    out.entry(crate::metadata::GC_ROOT_LABEL.to_string())
        .or_insert_with(|| crate::timefmt::format_rfc3339(std::time::SystemTime::now()));
    out
}

/// The namespace a backend key belongs to (keys not made by ctrd go to `default`).
fn ns_of(key: &str) -> &str {
    backend_namespace(key).unwrap_or("default")
}

fn mounts(list: &[crate::api::mount::Mount]) -> Vec<Mount> {
    list.iter().map(mount_from_api).collect()
}

impl Snapshotter for ProxySnapshotter {
    fn stat(&self, key: &str) -> Result<Info, Error> {
        let resp = self
            .client
            .stat_opt(
                &StatSnapshotRequest {
                    snapshotter: self.name.clone(),
                    key: key.to_string(),
                    ..Default::default()
                },
                with_namespace(ns_of(key)),
            )
            .map_err(Error::from_grpc)?;
        Ok(info_from_api(&resp.info.unwrap_or_default()))
    }

    fn update(&self, info: &Info, paths: &[String]) -> Result<Info, Error> {
        let resp = self
            .client
            .update_opt(
                &UpdateSnapshotRequest {
                    snapshotter: self.name.clone(),
                    info: Some(info_to_api(info.clone())).into(),
                    update_mask: Some(FieldMask {
                        paths: paths.to_vec(),
                        ..Default::default()
                    })
                    .into(),
                    ..Default::default()
                },
                with_namespace(ns_of(&info.name)),
            )
            .map_err(Error::from_grpc)?;
        Ok(info_from_api(&resp.info.unwrap_or_default()))
    }

    fn usage(&self, key: &str) -> Result<Usage, Error> {
        let resp = self
            .client
            .usage_opt(
                &UsageRequest {
                    snapshotter: self.name.clone(),
                    key: key.to_string(),
                    ..Default::default()
                },
                with_namespace(ns_of(key)),
            )
            .map_err(Error::from_grpc)?;
        Ok(Usage {
            size: resp.size,
            inodes: resp.inodes,
        })
    }

    fn mounts(&self, key: &str) -> Result<Vec<Mount>, Error> {
        let resp = self
            .client
            .mounts_opt(
                &MountsRequest {
                    snapshotter: self.name.clone(),
                    key: key.to_string(),
                    ..Default::default()
                },
                with_namespace(ns_of(key)),
            )
            .map_err(Error::from_grpc)?;
        Ok(mounts(&resp.mounts))
    }

    fn prepare(
        &self,
        key: &str,
        parent: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<Vec<Mount>, Error> {
        let resp = self
            .client
            .prepare_opt(
                &PrepareSnapshotRequest {
                    snapshotter: self.name.clone(),
                    key: key.to_string(),
                    parent: parent.to_string(),
                    labels: rooted(labels),
                    ..Default::default()
                },
                with_namespace(ns_of(key)),
            )
            .map_err(Error::from_grpc)?;
        Ok(mounts(&resp.mounts))
    }

    fn view(
        &self,
        key: &str,
        parent: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<Vec<Mount>, Error> {
        let resp = self
            .client
            .view_opt(
                &ViewSnapshotRequest {
                    snapshotter: self.name.clone(),
                    key: key.to_string(),
                    parent: parent.to_string(),
                    labels: rooted(labels),
                    ..Default::default()
                },
                with_namespace(ns_of(key)),
            )
            .map_err(Error::from_grpc)?;
        Ok(mounts(&resp.mounts))
    }

    fn commit(
        &self,
        name: &str,
        key: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<(), Error> {
        self.client
            .commit_opt(
                &CommitSnapshotRequest {
                    snapshotter: self.name.clone(),
                    name: name.to_string(),
                    key: key.to_string(),
                    labels: rooted(labels),
                    ..Default::default()
                },
                with_namespace(ns_of(key)),
            )
            .map_err(Error::from_grpc)?;
        Ok(())
    }

    fn remove(&self, key: &str) -> Result<(), Error> {
        self.client
            .remove_opt(
                &RemoveSnapshotRequest {
                    snapshotter: self.name.clone(),
                    key: key.to_string(),
                    ..Default::default()
                },
                with_namespace(ns_of(key)),
            )
            .map_err(Error::from_grpc)?;
        Ok(())
    }

    fn list(&self) -> Result<Vec<Info>, Error> {
        let namespaces = self
            .namespaces
            .list(&ListNamespacesRequest::default())
            .map_err(Error::from_grpc)?
            .namespaces;
        let mut out = Vec::new();
        for ns in namespaces {
            let mut stream = self
                .client
                .list_opt(
                    &ListSnapshotsRequest {
                        snapshotter: self.name.clone(),
                        ..Default::default()
                    },
                    with_namespace(&ns.name),
                )
                .map_err(Error::from_grpc)?;
            let infos = futures_executor::block_on(async {
                let mut infos = Vec::new();
                while let Some(batch) = stream.next().await {
                    infos.extend(batch.map_err(Error::from_grpc)?.info);
                }
                Ok::<_, Error>(infos)
            })?;
            out.extend(
                infos
                    .iter()
                    .map(info_from_api)
                    .filter(|i| backend_namespace(&i.name) == Some(ns.name.as_str())),
            );
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn cleanup(&self) -> Result<(), Error> {
        self.client
            .cleanup_opt(
                &CleanupRequest {
                    snapshotter: self.name.clone(),
                    ..Default::default()
                },
                with_namespace("default"),
            )
            .map_err(Error::from_grpc)?;
        Ok(())
    }
}
