//! The protocol types, generated into OUT_DIR by `build.rs` and re-exported here under
//! stable names: messages from protobuf-codegen, gRPC glue (service trait, `create_*`,
//! client) from our own generator.

#[allow(
    clippy::all,
    clippy::pedantic,
    missing_docs,
    unused_imports,
    non_camel_case_types,
    non_snake_case,
    non_upper_case_globals,
    unreachable_pub
)]
pub(crate) mod generated {
    include!(concat!(env!("OUT_DIR"), "/protos/mod.rs"));
}

#[allow(clippy::all, unused_qualifications)]
mod glue {
    include!(concat!(env!("OUT_DIR"), "/grpc_glue.rs"));
}

pub use protobuf::well_known_types::any::Any;
pub use protobuf::well_known_types::empty::Empty;
pub use protobuf::well_known_types::field_mask::FieldMask;
pub use protobuf::well_known_types::timestamp::Timestamp;

/// `containerd.services.version.v1`.
pub mod version {
    pub use super::generated::version::VersionResponse;
    pub use super::glue::version_grpc::{create_version, Version, VersionClient};
}

/// `containerd.services.introspection.v1`.
pub mod introspection {
    pub use super::generated::introspection::{
        DeprecationWarning, Plugin, PluginInfoRequest, PluginInfoResponse, PluginsRequest,
        PluginsResponse, ServerResponse,
    };
    pub use super::glue::introspection_grpc::{
        create_introspection, Introspection, IntrospectionClient,
    };
}

/// `grpc.health.v1`.
pub mod health {
    pub use super::generated::health::health_check_response::ServingStatus;
    pub use super::generated::health::{
        HealthCheckRequest, HealthCheckResponse, HealthListRequest, HealthListResponse,
    };
    pub use super::glue::health_grpc::{create_health, Health, HealthClient, METHOD_HEALTH_CHECK};
}

/// `containerd.types`.
pub mod types {
    pub use super::generated::descriptor::Descriptor;
    pub use super::generated::event::Envelope;
    pub use super::generated::platform::Platform;
}

/// `containerd.services.events.v1` (gRPC).
pub mod events {
    pub use super::generated::events::{ForwardRequest, PublishRequest, SubscribeRequest};
    pub use super::glue::events_grpc::{create_events, Events, EventsClient};
}

/// `containerd.services.events.ttrpc.v1` (ttrpc: the shims' Forward).
pub mod events_ttrpc {
    pub use super::generated::ttrpc_events::ForwardRequest;
    pub use super::generated::ttrpc_events_ttrpc::{create_events, Events, EventsClient};
}

/// `containerd.services.namespaces.v1`.
pub mod namespaces {
    pub use super::generated::namespace::{
        CreateNamespaceRequest, CreateNamespaceResponse, DeleteNamespaceRequest,
        GetNamespaceRequest, GetNamespaceResponse, ListNamespacesRequest, ListNamespacesResponse,
        Namespace, UpdateNamespaceRequest, UpdateNamespaceResponse,
    };
    pub use super::glue::namespaces_grpc::{create_namespaces, Namespaces, NamespacesClient};
}

/// `containerd.events`: the payloads the daemon publishes.
pub mod event_types {
    pub use super::generated::content_events::{ContentCreate, ContentDelete};
    pub use super::generated::namespace_events::{
        NamespaceCreate, NamespaceDelete, NamespaceUpdate,
    };
    pub use super::generated::object_events::{
        container_create, ContainerCreate, ContainerDelete, ContainerUpdate, ImageCreate,
        ImageDelete, ImageUpdate, SandboxCreate, SandboxExit, SandboxStart, SnapshotCommit,
        SnapshotPrepare, SnapshotRemove,
    };
    pub use super::generated::task_events::{
        TaskCheckpointed, TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskIO,
        TaskOOM, TaskPaused, TaskResumed, TaskStart,
    };
}

/// The files that define event payloads, for decoding them by type URL.
pub fn events_payload_files() -> [protobuf::reflect::FileDescriptor; 4] {
    [
        generated::content_events::file_descriptor().clone(),
        generated::namespace_events::file_descriptor().clone(),
        generated::object_events::file_descriptor().clone(),
        generated::task_events::file_descriptor().clone(),
    ]
}

/// `containerd.types.Mount`.
pub mod mount {
    pub use super::generated::mount::Mount;
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

/// `containerd.services.content.v1`.
pub mod content {
    pub use super::generated::content::{
        AbortRequest, DeleteContentRequest, Info, InfoRequest, InfoResponse, ListContentRequest,
        ListContentResponse, ListStatusesRequest, ListStatusesResponse, ReadContentRequest,
        ReadContentResponse, Status, StatusRequest, StatusResponse, UpdateRequest, UpdateResponse,
        WriteAction, WriteContentRequest, WriteContentResponse,
    };
    pub use super::glue::content_grpc::{create_content, Content, ContentClient};
}

/// `containerd.services.leases.v1`.
pub mod leases {
    pub use super::generated::leases::{
        AddResourceRequest, CreateRequest, CreateResponse, DeleteRequest, DeleteResourceRequest,
        Lease, ListRequest, ListResourcesRequest, ListResourcesResponse, ListResponse, Resource,
    };
    pub use super::glue::leases_grpc::{create_leases, Leases, LeasesClient};
}

/// `containerd.services.snapshots.v1`.
pub mod snapshots {
    pub use super::generated::snapshots::{
        CleanupRequest, CommitSnapshotRequest, Info, Kind, ListSnapshotsRequest,
        ListSnapshotsResponse, MountsRequest, MountsResponse, PrepareSnapshotRequest,
        PrepareSnapshotResponse, RemoveSnapshotRequest, StatSnapshotRequest, StatSnapshotResponse,
        UpdateSnapshotRequest, UpdateSnapshotResponse, UsageRequest, UsageResponse,
        ViewSnapshotRequest, ViewSnapshotResponse,
    };
    pub use super::glue::snapshots_grpc::{create_snapshots, Snapshots, SnapshotsClient};
}

/// `containerd.services.diff.v1`.
pub mod diff {
    pub use super::generated::diff::{ApplyRequest, ApplyResponse, DiffRequest, DiffResponse};
    pub use super::glue::diff_grpc::{create_diff, Diff, DiffClient};
}

/// `google.rpc.Status`.
pub mod rpc_status {
    pub use super::generated::status::Status;
}

/// `perftools.profiles` (pprof).
pub mod profile {
    pub use super::generated::profile::{
        Function, Line, Location, Mapping, Profile, Sample, ValueType,
    };
}

#[cfg(test)]
mod tests;
