//! `containerd.services.snapshots.v1.Snapshots` over the namespaced snapshots of every loaded
//! snapshotter, and the plugins that make it: `io.containerd.snapshotter.v1.native`,
//! `io.containerd.snapshotter.v1.overlayfs`, `io.containerd.service.v1.snapshots-service`
//! and `io.containerd.grpc.v1.snapshots`.
//! Prepare, Commit and Remove publish `/snapshot/{prepare,commit,remove}` (View publishes
//! nothing, as in containerd).

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::api::event_types::{SnapshotCommit, SnapshotPrepare, SnapshotRemove};
use crate::api::mount::Mount as ApiMount;
use crate::api::snapshots::{
    create_snapshots, CleanupRequest, CommitSnapshotRequest, Info as ApiInfo, Kind as ApiKind,
    ListSnapshotsRequest, ListSnapshotsResponse, MountsRequest, MountsResponse,
    PrepareSnapshotRequest, PrepareSnapshotResponse, RemoveSnapshotRequest, Snapshots,
    StatSnapshotRequest, StatSnapshotResponse, UpdateSnapshotRequest, UpdateSnapshotResponse,
    UsageRequest, UsageResponse, ViewSnapshotRequest, ViewSnapshotResponse,
};
use crate::api::{system_time, timestamp, Empty};
use crate::errdefs::Error;
use crate::events::Exchange;
use crate::metadata::Metadata;
use crate::plugin::{types, GrpcServices, Instance, Registration};
use crate::rpc::{Call, RpcResult, StreamSender};
use crate::snapshots::native::Native;
use crate::snapshots::overlay::{check, Options, Overlay, OverlayConfig};
use crate::snapshots::{Info, Kind, Mount, Snapshotter};

/// How a snapshotter plugin's value is stored, so the metadata plugin can find every one.
pub struct SnapshotterHandle(pub Arc<dyn Snapshotter>);

const LIST_BATCH: usize = 100;

pub fn mount_to_api(m: Mount) -> ApiMount {
    ApiMount {
        type_: m.r#type,
        source: m.source,
        target: m.target,
        options: m.options,
        ..Default::default()
    }
}

pub fn mount_from_api(m: &ApiMount) -> Mount {
    Mount {
        r#type: m.type_.clone(),
        source: m.source.clone(),
        target: m.target.clone(),
        options: m.options.clone(),
    }
}

pub fn kind_to_api(kind: Kind) -> ApiKind {
    match kind {
        Kind::Unknown => ApiKind::UNKNOWN,
        Kind::View => ApiKind::VIEW,
        Kind::Active => ApiKind::ACTIVE,
        Kind::Committed => ApiKind::COMMITTED,
    }
}

pub fn kind_from_api(kind: ApiKind) -> Kind {
    match kind {
        ApiKind::UNKNOWN => Kind::Unknown,
        ApiKind::VIEW => Kind::View,
        ApiKind::ACTIVE => Kind::Active,
        ApiKind::COMMITTED => Kind::Committed,
    }
}

pub fn info_to_api(info: Info) -> ApiInfo {
    ApiInfo {
        name: info.name,
        parent: info.parent,
        kind: kind_to_api(info.kind).into(),
        created_at: Some(timestamp(info.created)).into(),
        updated_at: Some(timestamp(info.updated)).into(),
        labels: info.labels.into_iter().collect(),
        ..Default::default()
    }
}

pub fn info_from_api(info: &ApiInfo) -> Info {
    Info {
        name: info.name.clone(),
        parent: info.parent.clone(),
        kind: kind_from_api(info.kind.enum_value_or_default()),
        created: info
            .created_at
            .as_ref()
            .map(system_time)
            .unwrap_or(std::time::UNIX_EPOCH),
        updated: info
            .updated_at
            .as_ref()
            .map(system_time)
            .unwrap_or(std::time::UNIX_EPOCH),
        labels: info.labels.clone().into_iter().collect(),
    }
}

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
        let ns = call.namespace_required()?;
        let labels: BTreeMap<String, String> = req.labels.into_iter().collect();
        let list = self.meta.snapshot_create(
            ns,
            &req.snapshotter,
            &req.key,
            &req.parent,
            &labels,
            false,
            call.lease(),
        )?;
        self.exchange.publish_event(
            ns,
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
        let ns = call.namespace_required()?;
        let labels: BTreeMap<String, String> = req.labels.into_iter().collect();
        let list = self.meta.snapshot_create(
            ns,
            &req.snapshotter,
            &req.key,
            &req.parent,
            &labels,
            true,
            call.lease(),
        )?;
        Ok(ViewSnapshotResponse {
            mounts: mounts(list),
            ..Default::default()
        })
    }

    fn mounts(&self, call: &Call, req: MountsRequest) -> RpcResult<MountsResponse> {
        let ns = call.namespace_required()?;
        let list = self.meta.snapshot_mounts(ns, &req.snapshotter, &req.key)?;
        Ok(MountsResponse {
            mounts: mounts(list),
            ..Default::default()
        })
    }

    fn commit(&self, call: &Call, req: CommitSnapshotRequest) -> RpcResult<Empty> {
        let ns = call.namespace_required()?;
        if !req.parent.is_empty() {
            return Err(Error::unimplemented(
                "rebasing a snapshot onto a new parent on commit is not supported",
            ));
        }
        let labels: BTreeMap<String, String> = req.labels.into_iter().collect();
        self.meta.snapshot_commit(
            ns,
            &req.snapshotter,
            &req.name,
            &req.key,
            &labels,
            call.lease(),
        )?;
        self.exchange.publish_event(
            ns,
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
        let ns = call.namespace_required()?;
        self.meta.snapshot_remove(ns, &req.snapshotter, &req.key)?;
        self.exchange.publish_event(
            ns,
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
        let ns = call.namespace_required()?;
        let info = self.meta.snapshot_stat(ns, &req.snapshotter, &req.key)?;
        Ok(StatSnapshotResponse {
            info: Some(info_to_api(info)).into(),
            ..Default::default()
        })
    }

    fn update(&self, call: &Call, req: UpdateSnapshotRequest) -> RpcResult<UpdateSnapshotResponse> {
        let ns = call.namespace_required()?;
        let info = info_from_api(&req.info.clone().unwrap_or_default());
        let paths = req
            .update_mask
            .as_ref()
            .map(|m| m.paths.clone())
            .unwrap_or_default();
        let updated = self
            .meta
            .snapshot_update(ns, &req.snapshotter, &info, &paths)?;
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
        let ns = call.namespace_required()?;
        let infos = self
            .meta
            .snapshot_list(ns, &req.snapshotter, &req.filters)?;
        out.send_batches(infos.into_iter().map(info_to_api), LIST_BATCH, |info| {
            ListSnapshotsResponse {
                info,
                ..Default::default()
            }
        })
    }

    fn usage(&self, call: &Call, req: UsageRequest) -> RpcResult<UsageResponse> {
        let ns = call.namespace_required()?;
        let usage = self.meta.snapshot_usage(ns, &req.snapshotter, &req.key)?;
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

/// Every loaded snapshotter, by id (failed or skipped ones left out).
pub fn loaded_snapshotters(
    ic: &crate::plugin::InitContext,
) -> BTreeMap<String, Arc<dyn Snapshotter>> {
    ic.plugins()
        .all()
        .into_iter()
        .filter(|p| p.r#type == types::SNAPSHOT)
        .filter_map(|p| {
            let handle = p.instance().ok()?.get::<SnapshotterHandle>()?;
            Some((p.id.clone(), handle.0.clone()))
        })
        .collect()
}

/// `io.containerd.snapshotter.v1.overlayfs`: skipped, with the reason, where the root's
/// file system or the kernel cannot do overlay.
fn overlay_registration() -> Registration {
    Registration::new(types::SNAPSHOT, "overlayfs", |ic| {
        let config = ic.config::<OverlayConfig>()?.clone();
        ic.meta.platforms.push(crate::proxy::host_platform());
        let root = if config.root_path.is_empty() {
            ic.root()
        } else {
            std::path::PathBuf::from(&config.root_path)
        };
        {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&root)
                .map_err(|err| Error::from(err).context(format!("create {}", root.display())))?;
        }
        let check = check::supported(&root)
            .map_err(|reason| crate::plugin::skip(format!("overlay not supported: {reason}")))?;
        let overlay = Overlay::open(&root, Options::for_root(&config, &root))?;
        ic.meta
            .exports
            .insert("root".into(), root.to_string_lossy().into_owned());
        // The check's test mount is undone in the background; waited for at shutdown.
        Ok(
            Instance::new(Arc::new(SnapshotterHandle(Arc::new(overlay))))
                .with_close(move || check.wait()),
        )
    })
    .config::<OverlayConfig>()
}

/// `io.containerd.snapshotter.v1.native`, `io.containerd.snapshotter.v1.overlayfs`,
/// `io.containerd.service.v1.snapshots-service` and `io.containerd.grpc.v1.snapshots`.
pub fn registrations() -> Vec<Registration> {
    vec![
        Registration::new(types::SNAPSHOT, "native", |ic| {
            let root = ic.root();
            let native = Native::open(&root)?;
            ic.meta
                .exports
                .insert("root".into(), root.to_string_lossy().into_owned());
            Ok(Instance::new(Arc::new(SnapshotterHandle(Arc::new(native)))))
        }),
        overlay_registration(),
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
