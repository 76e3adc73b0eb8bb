//! `containerd.services.snapshots.v1.Snapshots` over the namespaced snapshots of every loaded
//! snapshotter, and the plugins that serve it: `io.containerd.service.v1.snapshots-service`
//! and `io.containerd.grpc.v1.snapshots` (snapshotters register in their own modules).
//! Prepare, Commit and Remove publish `/snapshot/{prepare,commit,remove}` (View publishes
//! nothing, as in containerd).

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::api::event_types::{SnapshotCommit, SnapshotPrepare, SnapshotRemove};
use crate::api::mount::Mount as ApiMount;
use crate::api::snapshots::{
    create_snapshots, CleanupRequest, CommitSnapshotRequest, ListSnapshotsRequest,
    ListSnapshotsResponse, MountsRequest, MountsResponse, PrepareSnapshotRequest,
    PrepareSnapshotResponse, RemoveSnapshotRequest, Snapshots, StatSnapshotRequest,
    StatSnapshotResponse, UpdateSnapshotRequest, UpdateSnapshotResponse, UsageRequest,
    UsageResponse, ViewSnapshotRequest, ViewSnapshotResponse,
};
use crate::api::Empty;
use crate::errdefs::Error;
use crate::events::Exchange;
use crate::metadata::Metadata;
use crate::plugin::{types, GrpcServices, Instance, Registration};
use crate::rpc::{Call, RpcResult, StreamSender};
use crate::snapshots::wire::{info_from_api, info_to_api, mount_to_api};
use crate::snapshots::Mount;

const LIST_BATCH: usize = 100;

fn mounts(list: Vec<Mount>) -> Vec<ApiMount> {
    list.into_iter().map(mount_to_api).collect()
}

/// The snapshots service: the namespaced store plus the exchange its events go to.
pub struct SnapshotsService {
    meta: Arc<Metadata>,
    exchange: Arc<Exchange>,
}

impl Snapshots for SnapshotsService {
    fn prepare(
        &self,
        call: &Call,
        req: PrepareSnapshotRequest,
    ) -> RpcResult<PrepareSnapshotResponse> {
        let scope = call.scope()?;
        let labels: BTreeMap<String, String> = req.labels.into_iter().collect();
        let list = self.meta.snapshot_create(
            &scope,
            &req.snapshotter,
            &req.key,
            &req.parent,
            &labels,
            false,
        )?;
        self.exchange.publish_event(
            scope.namespace(),
            "/snapshot/prepare",
            &SnapshotPrepare {
                key: req.key,
                parent: req.parent,
                snapshotter: req.snapshotter,
                ..Default::default()
            },
        );
        Ok(PrepareSnapshotResponse {
            mounts: mounts(list),
            ..Default::default()
        })
    }

    fn view(&self, call: &Call, req: ViewSnapshotRequest) -> RpcResult<ViewSnapshotResponse> {
        let scope = call.scope()?;
        let labels: BTreeMap<String, String> = req.labels.into_iter().collect();
        let list = self.meta.snapshot_create(
            &scope,
            &req.snapshotter,
            &req.key,
            &req.parent,
            &labels,
            true,
        )?;
        Ok(ViewSnapshotResponse {
            mounts: mounts(list),
            ..Default::default()
        })
    }

    fn mounts(&self, call: &Call, req: MountsRequest) -> RpcResult<MountsResponse> {
        let scope = call.scope()?;
        let list = self
            .meta
            .snapshot_mounts(&scope, &req.snapshotter, &req.key)?;
        Ok(MountsResponse {
            mounts: mounts(list),
            ..Default::default()
        })
    }

    fn commit(&self, call: &Call, req: CommitSnapshotRequest) -> RpcResult<Empty> {
        let scope = call.scope()?;
        if !req.parent.is_empty() {
            return Err(Error::unimplemented(
                "rebasing a snapshot onto a new parent on commit is not supported",
            ));
        }
        let labels: BTreeMap<String, String> = req.labels.into_iter().collect();
        self.meta
            .snapshot_commit(&scope, &req.snapshotter, &req.name, &req.key, &labels)?;
        self.exchange.publish_event(
            scope.namespace(),
            "/snapshot/commit",
            &SnapshotCommit {
                key: req.key,
                name: req.name,
                snapshotter: req.snapshotter,
                ..Default::default()
            },
        );
        Ok(Empty::default())
    }

    fn remove(&self, call: &Call, req: RemoveSnapshotRequest) -> RpcResult<Empty> {
        let scope = call.scope()?;
        self.meta
            .snapshot_remove(&scope, &req.snapshotter, &req.key)?;
        self.exchange.publish_event(
            scope.namespace(),
            "/snapshot/remove",
            &SnapshotRemove {
                key: req.key,
                snapshotter: req.snapshotter,
                ..Default::default()
            },
        );
        Ok(Empty::default())
    }

    fn stat(&self, call: &Call, req: StatSnapshotRequest) -> RpcResult<StatSnapshotResponse> {
        let scope = call.scope()?;
        let info = self
            .meta
            .snapshot_stat(&scope, &req.snapshotter, &req.key)?;
        Ok(StatSnapshotResponse {
            info: Some(info_to_api(info)).into(),
            ..Default::default()
        })
    }

    fn update(&self, call: &Call, req: UpdateSnapshotRequest) -> RpcResult<UpdateSnapshotResponse> {
        let scope = call.scope()?;
        let info = info_from_api(&req.info.clone().unwrap_or_default());
        let paths = req
            .update_mask
            .as_ref()
            .map(|m| m.paths.clone())
            .unwrap_or_default();
        let updated = self
            .meta
            .snapshot_update(&scope, &req.snapshotter, &info, &paths)?;
        Ok(UpdateSnapshotResponse {
            info: Some(info_to_api(updated)).into(),
            ..Default::default()
        })
    }

    fn list(
        &self,
        call: &Call,
        req: ListSnapshotsRequest,
        out: &mut StreamSender<ListSnapshotsResponse>,
    ) -> RpcResult<()> {
        let scope = call.scope()?;
        let infos = self
            .meta
            .snapshot_list(&scope, &req.snapshotter, &req.filters)?;
        out.send_batches(infos.into_iter().map(info_to_api), LIST_BATCH, |info| {
            ListSnapshotsResponse {
                info,
                ..Default::default()
            }
        })
    }

    fn usage(&self, call: &Call, req: UsageRequest) -> RpcResult<UsageResponse> {
        let scope = call.scope()?;
        let usage = self
            .meta
            .snapshot_usage(&scope, &req.snapshotter, &req.key)?;
        Ok(UsageResponse {
            size: usage.size,
            inodes: usage.inodes,
            ..Default::default()
        })
    }

    fn cleanup(&self, call: &Call, req: CleanupRequest) -> RpcResult<Empty> {
        call.namespace_required()?;
        self.meta.snapshot_cleanup(&req.snapshotter)?;
        Ok(Empty::default())
    }
}

impl GrpcServices for SnapshotsService {
    fn grpc_services(&self) -> Vec<grpcio::Service> {
        vec![create_snapshots(Arc::new(SnapshotsService {
            meta: self.meta.clone(),
            exchange: self.exchange.clone(),
        }))]
    }
}

/// `io.containerd.service.v1.snapshots-service` and `io.containerd.grpc.v1.snapshots`.
pub fn registrations() -> Vec<Registration> {
    vec![
        Registration::new(types::SERVICE, "snapshots-service", |ic| {
            let meta = ic.single::<Metadata>(types::METADATA)?;
            let exchange = ic.single::<Exchange>(types::EVENT)?;
            Ok(Instance::new(Arc::new(SnapshotsService { meta, exchange })))
        })
        .requires(&[types::EVENT, types::METADATA]),
        Registration::new(types::GRPC, "snapshots", |ic| {
            let service = ic
                .plugins()
                .value::<SnapshotsService>(types::SERVICE, "snapshots-service")
                .ok_or_else(|| Error::not_found("snapshots service not loaded"))?;
            Ok(Instance::new(service.clone()).with_grpc(service))
        })
        .requires(&[types::SERVICE]),
    ]
}
