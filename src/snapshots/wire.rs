//! Conversions between the snapshotter's types and the wire messages of the Snapshots
//! service, for the service and the proxy snapshotter alike.

use super::{Info, Kind, Mount};
use crate::api::mount::Mount as ApiMount;
use crate::api::snapshots::{Info as ApiInfo, Kind as ApiKind};
use crate::api::{system_time, timestamp};

/// The snapshotter's mount as the wire's.
pub fn mount_to_api(m: Mount) -> ApiMount {
    ApiMount {
        type_: m.r#type,
        source: m.source,
        target: m.target,
        options: m.options,
        ..Default::default()
    }
}

/// A wire mount as the snapshotter's.
pub fn mount_from_api(m: &ApiMount) -> Mount {
    Mount {
        r#type: m.type_.clone(),
        source: m.source.clone(),
        target: m.target.clone(),
        options: m.options.clone(),
    }
}

/// The snapshot kind as the wire's.
pub fn kind_to_api(kind: Kind) -> ApiKind {
    match kind {
        Kind::Unknown => ApiKind::UNKNOWN,
        Kind::View => ApiKind::VIEW,
        Kind::Active => ApiKind::ACTIVE,
        Kind::Committed => ApiKind::COMMITTED,
    }
}

/// A wire snapshot kind as the snapshotter's.
pub fn kind_from_api(kind: ApiKind) -> Kind {
    match kind {
        ApiKind::UNKNOWN => Kind::Unknown,
        ApiKind::VIEW => Kind::View,
        ApiKind::ACTIVE => Kind::Active,
        ApiKind::COMMITTED => Kind::Committed,
    }
}

/// Snapshot info as the wire's.
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

/// Wire snapshot info as the snapshotter's.
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
