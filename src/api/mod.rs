//! The protocol types, generated into OUT_DIR by `build.rs` and re-exported here under
//! stable names: messages from protobuf-codegen, gRPC glue (service trait, `create_*`,
//! client) from our own generator, ttrpc stubs from ttrpc-codegen.
//!
//! `generated` mirrors the protobuf packages: `containerd.services.content.v1` is
//! `generated::containerd::services::content::v1`, holding one module per proto file (by
//! file stem), `<service>_grpc` glue and `<stem>_ttrpc` stubs. The rest of the crate uses the
//! short modules below (one per package), never `generated` directly.

#[allow(
    clippy::all,
    clippy::pedantic,
    clippy::unwrap_used,
    clippy::undocumented_unsafe_blocks,
    missing_docs,
    unused_imports,
    unused_qualifications,
    non_camel_case_types,
    non_snake_case,
    non_upper_case_globals,
    unreachable_pub
)]
pub(crate) mod generated {
    include!(concat!(env!("OUT_DIR"), "/api/index.rs"));
}

use generated::containerd::events as containerd_events;
use generated::containerd::services as svc;
use generated::containerd::types as containerd_types;

pub use protobuf::well_known_types::any::Any;
pub use protobuf::well_known_types::empty::Empty;
pub use protobuf::well_known_types::field_mask::FieldMask;
pub use protobuf::well_known_types::timestamp::Timestamp;

/// `containerd.services.version.v1`.
pub mod version {
    pub use super::svc::version::v1::version::VersionResponse;
    pub use super::svc::version::v1::version_grpc::{
        create_version, Version, VersionClient, METHOD_VERSION_VERSION,
    };
}

/// `containerd.services.introspection.v1`.
pub mod introspection {
    pub use super::svc::introspection::v1::introspection::{
        DeprecationWarning, Plugin, PluginInfoRequest, PluginInfoResponse, PluginsRequest,
        PluginsResponse, ServerResponse,
    };
    pub use super::svc::introspection::v1::introspection_grpc::{
        create_introspection, Introspection, IntrospectionClient,
    };
}

/// `grpc.health.v1`.
pub mod health {
    pub use super::generated::grpc::health::v1::health::health_check_response::ServingStatus;
    pub use super::generated::grpc::health::v1::health::{
        HealthCheckRequest, HealthCheckResponse, HealthListRequest, HealthListResponse,
    };
    pub use super::generated::grpc::health::v1::health_grpc::{
        create_health, Health, HealthClient, METHOD_HEALTH_CHECK,
    };
}

/// `containerd.types`.
pub mod types {
    pub use super::containerd_types::descriptor::Descriptor;
    pub use super::containerd_types::event::Envelope;
    pub use super::containerd_types::platform::Platform;
}

/// `containerd.services.events.v1` (gRPC).
pub mod events {
    pub use super::svc::events::v1::events::{ForwardRequest, PublishRequest, SubscribeRequest};
    pub use super::svc::events::v1::events_grpc::{
        create_events, Events, EventsClient, METHOD_EVENTS_FORWARD, METHOD_EVENTS_PUBLISH,
        METHOD_EVENTS_SUBSCRIBE,
    };
}

/// `containerd.services.events.ttrpc.v1` (ttrpc: the shims' Forward).
pub mod events_ttrpc {
    pub use super::svc::events::ttrpc::v1::ttrpc_events::ForwardRequest;
    pub use super::svc::events::ttrpc::v1::ttrpc_events_ttrpc::{
        create_events, Events, EventsClient,
    };
}

/// `containerd.services.namespaces.v1`.
pub mod namespaces {
    pub use super::svc::namespaces::v1::namespace::{
        CreateNamespaceRequest, CreateNamespaceResponse, DeleteNamespaceRequest,
        GetNamespaceRequest, GetNamespaceResponse, ListNamespacesRequest, ListNamespacesResponse,
        Namespace, UpdateNamespaceRequest, UpdateNamespaceResponse,
    };
    pub use super::svc::namespaces::v1::namespaces_grpc::{
        create_namespaces, Namespaces, NamespacesClient,
    };
}

/// `containerd.events`: the payloads the daemon publishes.
pub mod event_types {
    pub use super::containerd_events::content_events::{ContentCreate, ContentDelete};
    pub use super::containerd_events::namespace_events::{
        NamespaceCreate, NamespaceDelete, NamespaceUpdate,
    };
    pub use super::containerd_events::object_events::{
        container_create, ContainerCreate, ContainerDelete, ContainerUpdate, ImageCreate,
        ImageDelete, ImageUpdate, SandboxCreate, SandboxExit, SandboxStart, SnapshotCommit,
        SnapshotPrepare, SnapshotRemove,
    };
    pub use super::containerd_events::task_events::{
        TaskCheckpointed, TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskIO,
        TaskOOM, TaskPaused, TaskResumed, TaskStart,
    };
}

/// The files that define event payloads, for decoding them by type URL.
pub fn events_payload_files() -> [protobuf::reflect::FileDescriptor; 4] {
    [
        containerd_events::content_events::file_descriptor().clone(),
        containerd_events::namespace_events::file_descriptor().clone(),
        containerd_events::object_events::file_descriptor().clone(),
        containerd_events::task_events::file_descriptor().clone(),
    ]
}

/// `containerd.types.Mount`.
pub mod mount {
    pub use super::containerd_types::mount::Mount;
}

/// `at` as a protobuf timestamp (times before 1970 become the epoch).
pub fn timestamp(at: std::time::SystemTime) -> Timestamp {
    let since = at.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    Timestamp {
        seconds: since.as_secs() as i64,
        nanos: since.subsec_nanos() as i32,
        ..Default::default()
    }
}

/// A protobuf timestamp as a time (negative or unset ones become the epoch).
pub fn system_time(ts: &Timestamp) -> std::time::SystemTime {
    let secs = u64::try_from(ts.seconds).unwrap_or(0);
    let nanos = u32::try_from(ts.nanos).unwrap_or(0);
    std::time::UNIX_EPOCH + std::time::Duration::new(secs, nanos)
}

/// A protobuf timestamp as a time, before 1970 too (for values handed on unchanged).
pub fn system_time_signed(ts: &Timestamp) -> std::time::SystemTime {
    let nanos = std::time::Duration::from_nanos(u64::try_from(ts.nanos).unwrap_or(0));
    let whole = std::time::Duration::from_secs(ts.seconds.unsigned_abs());
    if ts.seconds >= 0 {
        std::time::UNIX_EPOCH + whole + nanos
    } else {
        std::time::UNIX_EPOCH - whole + nanos
    }
}

/// `at` as a protobuf timestamp, before 1970 too (the inverse of [`system_time_signed`]).
pub fn timestamp_signed(at: std::time::SystemTime) -> Timestamp {
    let (seconds, nanos) = match at.duration_since(std::time::UNIX_EPOCH) {
        Ok(after) => (after.as_secs() as i64, after.subsec_nanos()),
        Err(before) => {
            let d = before.duration();
            match d.subsec_nanos() {
                0 => (-(d.as_secs() as i64), 0),
                n => (-(d.as_secs() as i64) - 1, 1_000_000_000 - n),
            }
        }
    };
    Timestamp {
        seconds,
        nanos: nanos as i32,
        ..Default::default()
    }
}

/// `containerd.services.content.v1`.
pub mod content {
    pub use super::svc::content::v1::content::{
        AbortRequest, DeleteContentRequest, Info, InfoRequest, InfoResponse, ListContentRequest,
        ListContentResponse, ListStatusesRequest, ListStatusesResponse, ReadContentRequest,
        ReadContentResponse, Status, StatusRequest, StatusResponse, UpdateRequest, UpdateResponse,
        WriteAction, WriteContentRequest, WriteContentResponse,
    };
    pub use super::svc::content::v1::content_grpc::{create_content, Content, ContentClient};
}

/// `containerd.services.leases.v1`.
pub mod leases {
    pub use super::svc::leases::v1::leases::{
        AddResourceRequest, CreateRequest, CreateResponse, DeleteRequest, DeleteResourceRequest,
        Lease, ListRequest, ListResourcesRequest, ListResourcesResponse, ListResponse, Resource,
    };
    pub use super::svc::leases::v1::leases_grpc::{create_leases, Leases, LeasesClient};
}

/// `containerd.services.snapshots.v1`.
pub mod snapshots {
    pub use super::svc::snapshots::v1::snapshots::{
        CleanupRequest, CommitSnapshotRequest, Info, Kind, ListSnapshotsRequest,
        ListSnapshotsResponse, MountsRequest, MountsResponse, PrepareSnapshotRequest,
        PrepareSnapshotResponse, RemoveSnapshotRequest, StatSnapshotRequest, StatSnapshotResponse,
        UpdateSnapshotRequest, UpdateSnapshotResponse, UsageRequest, UsageResponse,
        ViewSnapshotRequest, ViewSnapshotResponse,
    };
    pub use super::svc::snapshots::v1::snapshots_grpc::{
        create_snapshots, Snapshots, SnapshotsClient,
    };
}

/// `containerd.services.diff.v1`.
pub mod diff {
    pub use super::svc::diff::v1::diff::{ApplyRequest, ApplyResponse, DiffRequest, DiffResponse};
    pub use super::svc::diff::v1::diff_grpc::{create_diff, Diff, DiffClient};
}

/// `containerd.services.images.v1`.
pub mod images {
    pub use super::svc::images::v1::images::{
        CreateImageRequest, CreateImageResponse, DeleteImageRequest, GetImageRequest,
        GetImageResponse, Image, ListImagesRequest, ListImagesResponse, UpdateImageRequest,
        UpdateImageResponse,
    };
    pub use super::svc::images::v1::images_grpc::{create_images, Images, ImagesClient};
}

/// `containerd.services.containers.v1`.
pub mod containers {
    pub use super::svc::containers::v1::containers::container::Runtime;
    pub use super::svc::containers::v1::containers::{
        Container, CreateContainerRequest, CreateContainerResponse, DeleteContainerRequest,
        GetContainerRequest, GetContainerResponse, ListContainerMessage, ListContainersRequest,
        ListContainersResponse, UpdateContainerRequest, UpdateContainerResponse,
    };
    pub use super::svc::containers::v1::containers_grpc::{
        create_containers, Containers, ContainersClient,
    };
}

/// `google.rpc.Status`.
pub mod rpc_status {
    pub use super::generated::google::rpc::status::Status;
}

/// `perftools.profiles` (pprof).
pub mod profile {
    pub use super::generated::perftools::profiles::profile::{
        Function, Line, Location, Mapping, Profile, Sample, ValueType,
    };
}

/// `containerd.v1.types`: processes as tasks and shims report them.
pub mod task_types {
    pub use super::generated::containerd::v1::types::task::{Process, ProcessInfo, Status};
}

/// `containerd.types.Metric`.
pub mod metric {
    pub use super::containerd_types::metrics::Metric;
}

/// `containerd.services.tasks.v1`.
pub mod tasks {
    pub use super::svc::tasks::v1::tasks::{
        CheckpointTaskRequest, CheckpointTaskResponse, CloseIORequest, CreateTaskRequest,
        CreateTaskResponse, DeleteProcessRequest, DeleteResponse, DeleteTaskRequest,
        ExecProcessRequest, GetRequest, GetResponse, KillRequest, ListPidsRequest,
        ListPidsResponse, ListTasksRequest, ListTasksResponse, MetricsRequest, MetricsResponse,
        PauseTaskRequest, ResizePtyRequest, ResumeTaskRequest, StartRequest, StartResponse,
        UpdateTaskRequest, WaitRequest, WaitResponse,
    };
    pub use super::svc::tasks::v1::tasks_grpc::*;
}

/// `containerd.task.v2`: the task API a runtime v2 shim serves over ttrpc.
pub mod shim_task {
    pub use super::generated::containerd::task::v2::shim::*;
    pub use super::generated::containerd::task::v2::shim_ttrpc::{create_task, Task, TaskClient};
}

/// `containerd.runc.v1`: the runc shim's options.
pub mod runc_options {
    pub use super::generated::containerd::runc::v1::oci::{
        CheckpointOptions, Options, ProcessDetails,
    };
}

#[cfg(test)]
mod tests;
