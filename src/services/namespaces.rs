//! `containerd.services.namespaces.v1.Namespaces` over the metadata store, with
//! containerd's quirks: Get never answers NotFound, label updates create the namespace,
//! Delete refuses a namespace that still holds anything.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::api::event_types::{NamespaceCreate, NamespaceDelete, NamespaceUpdate};
use crate::api::namespaces::{
    create_namespaces, CreateNamespaceRequest, CreateNamespaceResponse, DeleteNamespaceRequest,
    GetNamespaceRequest, GetNamespaceResponse, ListNamespacesRequest, ListNamespacesResponse,
    Namespace, Namespaces, UpdateNamespaceRequest, UpdateNamespaceResponse,
};
use crate::api::Empty;
use crate::errdefs::Error;
use crate::events::Exchange;
use crate::metadata::{Db, Metadata};
use crate::plugin::{types, GrpcServices, Instance, Registration};
use crate::rpc::{Call, RpcResult};

/// The namespaces service: the store plus the exchange its events go to.
pub struct NamespacesService {
    db: Arc<Db>,
    exchange: Arc<Exchange>,
    /// The daemon's plugins, to refuse deleting a namespace that still has tasks.
    plugins: Option<crate::plugin::Set>,
}

impl NamespacesService {
    pub fn new(db: Arc<Db>, exchange: Arc<Exchange>) -> Self {
        NamespacesService {
            db,
            exchange,
            plugins: None,
        }
    }

    /// Tasks live outside the metadata store: ask the runtime before a delete.
    fn check_no_tasks(&self, name: &str) -> RpcResult<()> {
        let manager = self.plugins.as_ref().and_then(|plugins| {
            plugins.value::<crate::runtime::TaskManager>(crate::runtime::RUNTIME_V2, "task")
        });
        if manager.is_some_and(|m| m.namespace_has_tasks(name)) {
            return Err(Error::wrapped(
                crate::errdefs::Class::FailedPrecondition,
                format!("namespace {name:?} must be empty, but it still has tasks"),
            ));
        }
        Ok(())
    }

    fn namespace(&self, name: &str) -> RpcResult<Namespace> {
        Ok(Namespace {
            name: name.to_string(),
            labels: self.db.namespace_labels(name)?.into_iter().collect(),
            ..Default::default()
        })
    }
}

impl Namespaces for NamespacesService {
    fn get(&self, _call: &Call, req: GetNamespaceRequest) -> RpcResult<GetNamespaceResponse> {
        Ok(GetNamespaceResponse {
            namespace: Some(self.namespace(&req.name)?).into(),
            ..Default::default()
        })
    }

    fn list(&self, _call: &Call, _req: ListNamespacesRequest) -> RpcResult<ListNamespacesResponse> {
        let namespaces = self
            .db
            .list_namespaces()?
            .iter()
            .map(|name| self.namespace(name))
            .collect::<RpcResult<Vec<_>>>()?;
        Ok(ListNamespacesResponse {
            namespaces,
            ..Default::default()
        })
    }

    fn create(
        &self,
        _call: &Call,
        req: CreateNamespaceRequest,
    ) -> RpcResult<CreateNamespaceResponse> {
        let namespace = req.namespace.into_option().unwrap_or_default();
        let labels: BTreeMap<String, String> = namespace.labels.clone().into_iter().collect();
        self.db.create_namespace(&namespace.name, &labels)?;
        self.exchange.publish_event(
            &namespace.name,
            "/namespaces/create",
            &NamespaceCreate {
                name: namespace.name.clone(),
                labels: namespace.labels.clone(),
                ..Default::default()
            },
        );
        Ok(CreateNamespaceResponse {
            namespace: Some(namespace).into(),
            ..Default::default()
        })
    }

    fn update(
        &self,
        _call: &Call,
        req: UpdateNamespaceRequest,
    ) -> RpcResult<UpdateNamespaceResponse> {
        let namespace = req.namespace.into_option().unwrap_or_default();
        let paths = req
            .update_mask
            .as_ref()
            .map(|mask| mask.paths.clone())
            .unwrap_or_default();
        if paths.is_empty() {
            let labels: BTreeMap<String, String> = namespace.labels.clone().into_iter().collect();
            self.db.replace_namespace_labels(&namespace.name, &labels)?;
        } else {
            for path in &paths {
                let Some(key) = path.strip_prefix("labels.") else {
                    return Err(Error::invalid_argument(format!(
                        "cannot update {path:?} field: invalid argument"
                    )));
                };
                let value = namespace.labels.get(key).cloned().unwrap_or_default();
                self.db.set_namespace_label(&namespace.name, key, &value)?;
            }
        }
        let current = self.namespace(&namespace.name)?;
        self.exchange.publish_event(
            &namespace.name,
            "/namespaces/update",
            &NamespaceUpdate {
                name: namespace.name.clone(),
                labels: current.labels,
                ..Default::default()
            },
        );
        Ok(UpdateNamespaceResponse::default())
    }

    fn delete(&self, _call: &Call, req: DeleteNamespaceRequest) -> RpcResult<Empty> {
        self.check_no_tasks(&req.name)?;
        self.db.delete_namespace(&req.name)?;
        self.exchange.publish_event(
            &req.name,
            "/namespaces/delete",
            &NamespaceDelete {
                name: req.name.clone(),
                ..Default::default()
            },
        );
        Ok(Empty::default())
    }
}

impl GrpcServices for NamespacesService {
    fn grpc_services(&self) -> Vec<grpcio::Service> {
        vec![create_namespaces(Arc::new(NamespacesService {
            db: self.db.clone(),
            exchange: self.exchange.clone(),
            plugins: self.plugins.clone(),
        }))]
    }
}

/// `io.containerd.service.v1.namespaces-service` and `io.containerd.grpc.v1.namespaces`.
pub fn registrations() -> Vec<Registration> {
    vec![
        Registration::new(types::SERVICE, "namespaces-service", |ic| {
            let db = ic.single::<Metadata>(types::METADATA)?.db.clone();
            let exchange = ic.single::<Exchange>(types::EVENT)?;
            let mut service = NamespacesService::new(db, exchange);
            service.plugins = Some(ic.plugins().clone());
            Ok(Instance::new(Arc::new(service)))
        })
        .requires(&[types::EVENT, types::METADATA]),
        Registration::new(types::GRPC, "namespaces", |ic| {
            let service = ic
                .plugins()
                .value::<NamespacesService>(types::SERVICE, "namespaces-service")
                .ok_or_else(|| Error::not_found("namespaces service not loaded"))?;
            Ok(Instance::new(service.clone()).with_grpc(service))
        })
        .requires(&[types::SERVICE]),
    ]
}
