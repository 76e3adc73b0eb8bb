//! Leases: `io.containerd.lease.v1.manager` (the lease manager over the metadata store and
//! the GC scheduler) and `io.containerd.grpc.v1.leases`
//! (`containerd.services.leases.v1.Leases`). Leases publish no events.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::api::leases::{
    create_leases, AddResourceRequest, CreateRequest, CreateResponse, DeleteRequest,
    DeleteResourceRequest, Lease, Leases, ListRequest, ListResourcesRequest, ListResourcesResponse,
    ListResponse, Resource,
};
use crate::api::{timestamp, Empty};
use crate::errdefs::Error;
use crate::filters::{labels_field, Filter};
use crate::gc::Scheduler;
use crate::metadata::{self, Db, Metadata};
use crate::plugin::{types, GrpcServices, Instance, Registration};
use crate::rpc::{Call, RpcResult};

/// The lease manager: leases of one namespace at a time, and synchronous collection.
pub struct LeaseManager {
    db: Arc<Db>,
    gc: Arc<Scheduler>,
}

fn lease_of(lease: metadata::Lease) -> Lease {
    Lease {
        id: lease.id,
        created_at: Some(timestamp(lease.created_at)).into(),
        labels: lease.labels.into_iter().collect(),
        ..Default::default()
    }
}

impl LeaseManager {
    pub fn new(db: Arc<Db>, gc: Arc<Scheduler>) -> Self {
        LeaseManager { db, gc }
    }

    pub fn create(
        &self,
        ns: &str,
        id: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<metadata::Lease, Error> {
        let id = if id.is_empty() {
            metadata::generate_lease_id()?
        } else {
            id.to_string()
        };
        self.db.create_lease(ns, &id, labels)
    }

    /// Deletes lease `id`; with `sync`, a collection has finished before this returns.
    pub fn delete(&self, ns: &str, id: &str, sync: bool) -> Result<(), Error> {
        self.db.delete_lease(ns, id)?;
        if sync {
            self.gc.schedule_and_wait()?;
        }
        Ok(())
    }

    /// The leases of `ns` matching `filters` (fields `id`, `labels.*`).
    pub fn list(&self, ns: &str, filters: &[String]) -> Result<Vec<metadata::Lease>, Error> {
        let filter = Filter::parse_all(filters)?;
        let mut leases = self.db.list_leases(ns)?;
        leases.retain(|lease| {
            let labels = lease.labels.clone().into_iter().collect();
            filter.matches(&|path: &[String]| match path.first().map(String::as_str) {
                Some("id") if path.len() == 1 => Some(lease.id.clone()),
                Some("labels") => labels_field(&labels, path),
                _ => None,
            })
        });
        Ok(leases)
    }
}

/// The gRPC face of the lease manager.
pub struct LeasesService {
    manager: Arc<LeaseManager>,
}

fn resource_of(resource: Option<Resource>) -> Resource {
    resource.unwrap_or_default()
}

impl Leases for LeasesService {
    fn create(&self, call: &Call, req: CreateRequest) -> RpcResult<CreateResponse> {
        let ns = call.namespace_required()?;
        let labels: BTreeMap<String, String> = req.labels.into_iter().collect();
        let lease = self.manager.create(ns, &req.id, &labels)?;
        Ok(CreateResponse {
            lease: Some(lease_of(lease)).into(),
            ..Default::default()
        })
    }

    fn delete(&self, call: &Call, req: DeleteRequest) -> RpcResult<Empty> {
        let ns = call.namespace_required()?;
        self.manager.delete(ns, &req.id, req.sync)?;
        Ok(Empty::default())
    }

    fn list(&self, call: &Call, req: ListRequest) -> RpcResult<ListResponse> {
        let ns = call.namespace_required()?;
        let leases = self.manager.list(ns, &req.filters)?;
        Ok(ListResponse {
            leases: leases.into_iter().map(lease_of).collect(),
            ..Default::default()
        })
    }

    fn add_resource(&self, call: &Call, req: AddResourceRequest) -> RpcResult<Empty> {
        let ns = call.namespace_required()?;
        let r = resource_of(req.resource.into_option());
        self.manager
            .db
            .add_lease_resource(ns, &req.id, &r.type_, &r.id)?;
        Ok(Empty::default())
    }

    fn delete_resource(&self, call: &Call, req: DeleteResourceRequest) -> RpcResult<Empty> {
        let ns = call.namespace_required()?;
        let r = resource_of(req.resource.into_option());
        self.manager
            .db
            .delete_lease_resource(ns, &req.id, &r.type_, &r.id)?;
        Ok(Empty::default())
    }

    fn list_resources(
        &self,
        call: &Call,
        req: ListResourcesRequest,
    ) -> RpcResult<ListResourcesResponse> {
        let ns = call.namespace_required()?;
        let resources = self.manager.db.list_lease_resources(ns, &req.id)?;
        Ok(ListResourcesResponse {
            resources: resources
                .into_iter()
                .map(|(type_, id)| Resource {
                    id,
                    type_,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
    }
}

impl GrpcServices for LeasesService {
    fn grpc_services(&self) -> Vec<grpcio::Service> {
        vec![create_leases(Arc::new(LeasesService {
            manager: self.manager.clone(),
        }))]
    }
}

/// `io.containerd.lease.v1.manager` and `io.containerd.grpc.v1.leases`.
pub fn registrations() -> Vec<Registration> {
    vec![
        Registration::new(types::LEASE, "manager", |ic| {
            let meta = ic.single::<Metadata>(types::METADATA)?;
            let gc = ic.single::<Scheduler>(types::GC)?;
            Ok(Instance::new(Arc::new(LeaseManager::new(
                meta.db.clone(),
                gc,
            ))))
        })
        .requires(&[types::METADATA, types::GC]),
        Registration::new(types::GRPC, "leases", |ic| {
            let manager = ic.single::<LeaseManager>(types::LEASE)?;
            let service = Arc::new(LeasesService { manager });
            Ok(Instance::new(service.clone()).with_grpc(service))
        })
        .requires(&[types::LEASE]),
    ]
}
