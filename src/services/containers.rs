//! Containers: `io.containerd.service.v1.containers-service` (the store over the metadata
//! database, with events) and `io.containerd.grpc.v1.containers`
//! (`containerd.services.containers.v1.Containers`). Unary handlers run on the completion
//! queue thread; ListStream runs on a stream thread. Records: `crate::metadata::containers`.

use std::sync::Arc;

use crate::api::containers::{
    create_containers, Container, Containers, CreateContainerRequest, CreateContainerResponse,
    DeleteContainerRequest, GetContainerRequest, GetContainerResponse, ListContainerMessage,
    ListContainersRequest, ListContainersResponse, Runtime, UpdateContainerRequest,
    UpdateContainerResponse,
};
use crate::api::event_types::{
    container_create, ContainerCreate, ContainerDelete, ContainerUpdate,
};
use crate::api::{timestamp, Any, Empty};
use crate::errdefs::Error;
use crate::events::Exchange;
use crate::metadata::{AnyValue, ContainerRecord, Db, Metadata, RuntimeInfo};
use crate::plugin::{types, GrpcServices, Instance, Registration};
use crate::rpc::{Call, RpcResult, StreamSender};

/// The containers service: the store plus the exchange its events go to.
pub struct ContainersService {
    db: Arc<Db>,
    exchange: Arc<Exchange>,
    /// The daemon's plugins, to refuse deleting a container whose task still lives.
    plugins: Option<crate::plugin::Set>,
}

fn any_value(any: &Any) -> AnyValue {
    AnyValue {
        type_url: any.type_url.clone(),
        value: any.value.clone(),
    }
}

fn any_of(value: &AnyValue) -> Any {
    Any {
        type_url: value.type_url.clone(),
        value: value.value.clone(),
        ..Default::default()
    }
}

/// The record a request's container describes (times are the store's to set).
pub fn record_of(c: Container) -> ContainerRecord {
    let runtime = c.runtime.into_option().map(|r| RuntimeInfo {
        name: r.name,
        options: r.options.as_ref().map(any_value),
    });
    ContainerRecord {
        id: c.id,
        labels: c.labels.into_iter().collect(),
        image: c.image,
        runtime: runtime.unwrap_or_default(),
        spec: c.spec.as_ref().map(any_value),
        snapshotter: c.snapshotter,
        snapshot_key: c.snapshot_key,
        extensions: c
            .extensions
            .iter()
            .map(|(k, v)| (k.clone(), any_value(v)))
            .collect(),
        sandbox: c.sandbox,
        ..Default::default()
    }
}

/// The wire form of a stored container.
pub fn container_of(rec: &ContainerRecord) -> Container {
    Container {
        id: rec.id.clone(),
        labels: rec.labels.clone().into_iter().collect(),
        image: rec.image.clone(),
        runtime: Some(Runtime {
            name: rec.runtime.name.clone(),
            options: rec.runtime.options.as_ref().map(any_of).into(),
            ..Default::default()
        })
        .into(),
        spec: rec.spec.as_ref().map(any_of).into(),
        snapshotter: rec.snapshotter.clone(),
        snapshot_key: rec.snapshot_key.clone(),
        created_at: Some(timestamp(rec.created_at)).into(),
        updated_at: Some(timestamp(rec.updated_at)).into(),
        extensions: rec
            .extensions
            .iter()
            .map(|(k, v)| (k.clone(), any_of(v)))
            .collect(),
        sandbox: rec.sandbox.clone(),
        ..Default::default()
    }
}

impl ContainersService {
    pub fn new(db: Arc<Db>, exchange: Arc<Exchange>) -> Self {
        ContainersService {
            db,
            exchange,
            plugins: None,
        }
    }

    /// Tasks live outside the metadata store: ask the runtime before a delete.
    fn check_no_task(&self, ns: &str, id: &str) -> Result<(), Error> {
        let manager = self.plugins.as_ref().and_then(|plugins| {
            plugins.value::<crate::runtime::TaskManager>(crate::runtime::RUNTIME_V2, "task")
        });
        if manager.is_some_and(|m| m.exists(ns, id)) {
            return Err(Error::wrapped(
                crate::errdefs::Class::FailedPrecondition,
                format!(
                    "cannot delete container {id:?}: it still has a task; delete the task first"
                ),
            ));
        }
        Ok(())
    }

    /// Creates `rec` in `ns` and publishes `/containers/create`.
    pub fn create(&self, ns: &str, rec: ContainerRecord) -> Result<ContainerRecord, Error> {
        let created = self.db.create_container(ns, rec)?;
        self.exchange.publish_event(
            ns,
            "/containers/create",
            &ContainerCreate {
                id: created.id.clone(),
                image: created.image.clone(),
                runtime: Some(container_create::Runtime {
                    name: created.runtime.name.clone(),
                    options: created.runtime.options.as_ref().map(any_of).into(),
                    ..Default::default()
                })
                .into(),
                ..Default::default()
            },
        );
        Ok(created)
    }

    /// Updates by `paths` and publishes `/containers/update`.
    pub fn update(
        &self,
        ns: &str,
        rec: &ContainerRecord,
        paths: &[String],
    ) -> Result<ContainerRecord, Error> {
        if rec.id.is_empty() {
            return Err(Error::invalid_argument("Container.ID required"));
        }
        let updated = self.db.update_container(ns, rec, paths)?;
        self.exchange.publish_event(
            ns,
            "/containers/update",
            &ContainerUpdate {
                id: updated.id.clone(),
                image: updated.image.clone(),
                labels: updated.labels.clone().into_iter().collect(),
                snapshot_key: updated.snapshot_key.clone(),
                ..Default::default()
            },
        );
        Ok(updated)
    }

    /// Deletes and publishes `/containers/delete`.
    pub fn delete(&self, ns: &str, id: &str) -> Result<(), Error> {
        self.check_no_task(ns, id)?;
        self.db.delete_container(ns, id)?;
        self.exchange.publish_event(
            ns,
            "/containers/delete",
            &ContainerDelete {
                id: id.to_string(),
                ..Default::default()
            },
        );
        Ok(())
    }
}

impl Containers for ContainersService {
    fn get(&self, call: &Call, req: GetContainerRequest) -> RpcResult<GetContainerResponse> {
        let ns = call.namespace_required()?;
        let rec = self.db.container(ns, &req.id)?;
        Ok(GetContainerResponse {
            container: Some(container_of(&rec)).into(),
            ..Default::default()
        })
    }

    fn list(&self, call: &Call, req: ListContainersRequest) -> RpcResult<ListContainersResponse> {
        let ns = call.namespace_required()?;
        let records = self.db.list_containers(ns, &req.filters)?;
        Ok(ListContainersResponse {
            containers: records.iter().map(container_of).collect(),
            ..Default::default()
        })
    }

    fn list_stream(
        &self,
        call: &Call,
        req: ListContainersRequest,
        out: &mut StreamSender<ListContainerMessage>,
    ) -> RpcResult<()> {
        let ns = call.namespace_required()?;
        for rec in self.db.list_containers(ns, &req.filters)? {
            out.send(ListContainerMessage {
                container: Some(container_of(&rec)).into(),
                ..Default::default()
            })?;
        }
        Ok(())
    }

    fn create(
        &self,
        call: &Call,
        req: CreateContainerRequest,
    ) -> RpcResult<CreateContainerResponse> {
        let ns = call.namespace_required()?;
        let rec = record_of(req.container.into_option().unwrap_or_default());
        let created = ContainersService::create(self, ns, rec)?;
        Ok(CreateContainerResponse {
            container: Some(container_of(&created)).into(),
            ..Default::default()
        })
    }

    fn update(
        &self,
        call: &Call,
        req: UpdateContainerRequest,
    ) -> RpcResult<UpdateContainerResponse> {
        let ns = call.namespace_required()?;
        let paths = req
            .update_mask
            .as_ref()
            .map(|mask| mask.paths.clone())
            .unwrap_or_default();
        let rec = record_of(req.container.into_option().unwrap_or_default());
        let updated = ContainersService::update(self, ns, &rec, &paths)?;
        Ok(UpdateContainerResponse {
            container: Some(container_of(&updated)).into(),
            ..Default::default()
        })
    }

    fn delete(&self, call: &Call, req: DeleteContainerRequest) -> RpcResult<Empty> {
        let ns = call.namespace_required()?;
        ContainersService::delete(self, ns, &req.id)?;
        Ok(Empty::default())
    }
}

impl GrpcServices for ContainersService {
    fn grpc_services(&self) -> Vec<grpcio::Service> {
        vec![create_containers(Arc::new(ContainersService {
            db: self.db.clone(),
            exchange: self.exchange.clone(),
            plugins: self.plugins.clone(),
        }))]
    }
}

/// `io.containerd.service.v1.containers-service` and `io.containerd.grpc.v1.containers`.
pub fn registrations() -> Vec<Registration> {
    vec![
        Registration::new(types::SERVICE, "containers-service", |ic| {
            let db = ic.single::<Metadata>(types::METADATA)?.db.clone();
            let exchange = ic.single::<Exchange>(types::EVENT)?;
            let mut service = ContainersService::new(db, exchange);
            service.plugins = Some(ic.plugins().clone());
            Ok(Instance::new(Arc::new(service)))
        })
        .requires(&[types::EVENT, types::METADATA]),
        Registration::new(types::GRPC, "containers", |ic| {
            let service = ic
                .plugins()
                .value::<ContainersService>(types::SERVICE, "containers-service")
                .ok_or_else(|| Error::not_found("containers service not loaded"))?;
            Ok(Instance::new(service.clone()).with_grpc(service))
        })
        .requires(&[types::SERVICE]),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::FieldMask;
    use crate::errdefs::Class;

    fn service() -> (
        tempfile::TempDir,
        ContainersService,
        crate::events::Subscription,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Db::open(&dir.path().join("meta.redb")).unwrap());
        let exchange = Arc::new(Exchange::new());
        let events = exchange.subscribe(&[]).unwrap();
        (dir, ContainersService::new(db, exchange), events)
    }

    fn call() -> Call {
        Call::for_test(
            "containerd.services.containers.v1.Containers",
            "Create",
            &[("containerd-namespace", "default")],
        )
    }

    fn wire(id: &str) -> Container {
        Container {
            id: id.to_string(),
            image: "img".into(),
            runtime: Some(Runtime {
                name: "io.containerd.runc.v2".into(),
                options: Some(Any {
                    type_url: "containerd.runc.v1.Options".into(),
                    ..Default::default()
                })
                .into(),
                ..Default::default()
            })
            .into(),
            spec: Some(Any {
                type_url: "types.containerd.io/opencontainers/runtime-spec/1/Spec".into(),
                value: br#"{"ociVersion":"1.0.2-dev"}"#.to_vec(),
                ..Default::default()
            })
            .into(),
            snapshotter: "native".into(),
            snapshot_key: id.to_string(),
            ..Default::default()
        }
    }

    #[test]
    fn create_get_update_delete_round_trip_with_events() {
        let (_dir, svc, events) = service();
        let call = call();
        let created = Containers::create(
            &svc,
            &call,
            CreateContainerRequest {
                container: Some(wire("c1")).into(),
                ..Default::default()
            },
        )
        .unwrap();
        let got = Containers::get(
            &svc,
            &call,
            GetContainerRequest {
                id: "c1".into(),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(got.container, created.container);
        let spec = got.container.spec.clone().unwrap();
        assert_eq!(spec.value, br#"{"ociVersion":"1.0.2-dev"}"#);

        let mut change = wire("c1");
        change.labels.insert("k".into(), "v".into());
        let updated = Containers::update(
            &svc,
            &call,
            UpdateContainerRequest {
                container: Some(change).into(),
                update_mask: Some(FieldMask {
                    paths: vec!["labels.k".into()],
                    ..Default::default()
                })
                .into(),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(updated.container.labels["k"], "v");

        let err = Containers::update(&svc, &call, UpdateContainerRequest::default()).unwrap_err();
        assert_eq!(err.class(), Class::InvalidArgument);
        assert_eq!(err.message(), "Container.ID required");

        Containers::delete(
            &svc,
            &call,
            DeleteContainerRequest {
                id: "c1".into(),
                ..Default::default()
            },
        )
        .unwrap();
        let listed = Containers::list(&svc, &call, ListContainersRequest::default()).unwrap();
        assert!(listed.containers.is_empty());

        let topics: Vec<String> = (0..3)
            .map(|_| {
                events
                    .next_timeout(std::time::Duration::from_secs(10))
                    .unwrap()
                    .topic
            })
            .collect();
        assert_eq!(
            topics,
            [
                "/containers/create",
                "/containers/update",
                "/containers/delete"
            ]
        );
    }

    #[test]
    fn no_namespace_and_bad_input_are_errors() {
        let (_dir, svc, _events) = service();
        let bare = Call::for_test("containerd.services.containers.v1.Containers", "Get", &[]);
        let err = Containers::get(&svc, &bare, GetContainerRequest::default()).unwrap_err();
        assert_eq!(err.class(), Class::FailedPrecondition);
        let mut no_runtime = wire("c2");
        no_runtime.runtime = None.into();
        let err = Containers::create(
            &svc,
            &call(),
            CreateContainerRequest {
                container: Some(no_runtime).into(),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert_eq!(err.class(), Class::InvalidArgument);
    }
}
