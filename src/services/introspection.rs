//! `containerd.services.introspection.v1.Introspection`: plugins, server identity,
//! deprecations.
//!
//! The local part ([`Introspector`]) reads the shared plugin [`Set`] at call time, so it
//! reports plugins initialised after it as well.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::api::introspection::{
    create_introspection, DeprecationWarning, Introspection, Plugin as PluginMessage,
    PluginInfoRequest, PluginInfoResponse, PluginsRequest, PluginsResponse, ServerResponse,
};
use crate::api::rpc_status::Status;
use crate::api::types::Platform;
use crate::api::{timestamp, Empty};
use crate::errdefs::Error;
use crate::filters::Filter;
use crate::plugin::{types, GrpcServices, Instance, Plugin, Registration, Set};
use crate::rpc::{Call, RpcResult};
use crate::services::deprecations::Deprecations;

/// Answers introspection calls from the plugin set.
pub struct Introspector {
    plugins: Set,
    uuid_path: PathBuf,
}

impl Introspector {
    pub fn new(plugins: Set, root: &Path) -> Self {
        Introspector {
            plugins,
            uuid_path: root.join("uuid"),
        }
    }

    /// Every plugin in init order matching the filters (fields `type` and `id`).
    pub fn plugins(&self, filters: &[String]) -> RpcResult<Vec<PluginMessage>> {
        let filter = Filter::parse_all(filters)?;
        Ok(self
            .plugins
            .all()
            .iter()
            .filter(|p| {
                filter.matches(&|path: &[String]| match path {
                    [field] if field == "type" => Some(p.r#type.clone()),
                    [field] if field == "id" => Some(p.id.clone()),
                    _ => None,
                })
            })
            .map(|p| to_message(p))
            .collect())
    }

    /// The daemon's persistent uuid, created on first use.
    pub fn uuid(&self) -> RpcResult<String> {
        match fs::read_to_string(&self.uuid_path) {
            Ok(text) => {
                let uuid = text.trim().to_string();
                if is_uuid(&uuid) {
                    Ok(uuid)
                } else {
                    Err(Error::internal(format!(
                        "invalid uuid {uuid:?} in {}",
                        self.uuid_path.display()
                    )))
                }
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => self.create_uuid(),
            Err(err) => Err(Error::internal(format!(
                "read {}: {err}",
                self.uuid_path.display()
            ))),
        }
    }

    fn create_uuid(&self) -> RpcResult<String> {
        let dir = self.uuid_path.parent().unwrap_or(Path::new("/"));
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|err| Error::internal(format!("create {}: {err}", dir.display())))?;
        let uuid = new_uuid()?;
        // Written to a temporary file and renamed, so a crash never leaves a torn uuid.
        let tmp = self.uuid_path.with_extension("tmp");
        let write = || -> std::io::Result<()> {
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o666)
                .open(&tmp)?;
            file.write_all(uuid.as_bytes())?;
            file.sync_all()?;
            fs::rename(&tmp, &self.uuid_path)
        };
        write()
            .map_err(|err| Error::internal(format!("write {}: {err}", self.uuid_path.display())))?;
        Ok(uuid)
    }

    pub fn server(&self) -> RpcResult<ServerResponse> {
        let deprecations = self
            .plugins
            .value::<Deprecations>(types::WARNING, "deprecations")
            .map(|d| d.warnings())
            .unwrap_or_default();
        Ok(ServerResponse {
            uuid: self.uuid()?,
            pid: u64::from(std::process::id()),
            pidns: fs::metadata("/proc/self/ns/pid")
                .map(|m| m.ino())
                .unwrap_or(0),
            deprecations: deprecations
                .into_iter()
                .map(|w| DeprecationWarning {
                    id: w.id,
                    message: w.message,
                    last_occurrence: Some(timestamp(w.last_occurrence)).into(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
    }

    pub fn plugin_info(&self, req: &PluginInfoRequest) -> RpcResult<PluginInfoResponse> {
        let plugin = self.plugins.get(&req.type_, &req.id).ok_or_else(|| {
            Error::not_found(format!(
                "plugin {}.{} not found: not found",
                req.type_, req.id
            ))
        })?;
        let resp = PluginInfoResponse {
            plugin: Some(to_message(&plugin)).into(),
            ..Default::default()
        };
        if req.options.is_none() {
            return Ok(resp);
        }
        if plugin.err().is_some() {
            return Err(Error::failed_precondition(
                "cannot get extra info, plugin not successfully loaded: failed precondition",
            ));
        }
        // No ctrd plugin answers extra-info requests yet.
        Err(Error::unimplemented(
            "extra plugin info not supported: not implemented",
        ))
    }
}

fn to_message(p: &Plugin) -> PluginMessage {
    PluginMessage {
        type_: p.r#type.clone(),
        id: p.id.clone(),
        requires: p.requires.clone(),
        platforms: p
            .meta
            .platforms
            .iter()
            .map(|pl| Platform {
                os: pl.os().to_string(),
                architecture: pl.architecture().to_string(),
                variant: pl.variant().clone().unwrap_or_default(),
                os_version: pl.os_version().clone().unwrap_or_default(),
                ..Default::default()
            })
            .collect(),
        exports: p
            .meta
            .exports
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        capabilities: p.meta.capabilities.clone(),
        init_err: p
            .err()
            .map(|err| Status {
                code: err.class().code(),
                message: err.message().to_string(),
                ..Default::default()
            })
            .into(),
        ..Default::default()
    }
}

fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, len)| g.len() == len && g.chars().all(|c| c.is_ascii_hexdigit()))
}

/// A random (version 4) uuid.
fn new_uuid() -> RpcResult<String> {
    let mut bytes = [0u8; 16];
    let mut urandom = fs::File::open("/dev/urandom")
        .map_err(|err| Error::internal(format!("open /dev/urandom: {err}")))?;
    std::io::Read::read_exact(&mut urandom, &mut bytes)
        .map_err(|err| Error::internal(format!("read /dev/urandom: {err}")))?;
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    ))
}

impl Introspection for Introspector {
    fn plugins(&self, _call: &Call, req: PluginsRequest) -> RpcResult<PluginsResponse> {
        Ok(PluginsResponse {
            plugins: Introspector::plugins(self, &req.filters)?,
            ..Default::default()
        })
    }

    fn server(&self, _call: &Call, _req: Empty) -> RpcResult<ServerResponse> {
        Introspector::server(self)
    }

    fn plugin_info(&self, _call: &Call, req: PluginInfoRequest) -> RpcResult<PluginInfoResponse> {
        Introspector::plugin_info(self, &req)
    }
}

struct Services(Arc<Introspector>);

impl GrpcServices for Services {
    fn grpc_services(&self) -> Vec<grpcio::Service> {
        vec![create_introspection(self.0.clone())]
    }

    /// Offered on the TCP listener too, so remote clients can identify and probe ctrd.
    fn tcp_services(&self) -> Vec<grpcio::Service> {
        self.grpc_services()
    }
}

/// `io.containerd.service.v1.introspection-service` (the local part) and
/// `io.containerd.grpc.v1.introspection` (its gRPC face). The uuid lives under the gRPC
/// plugin's root, as in containerd.
pub fn registrations() -> Vec<Registration> {
    vec![
        Registration::new(types::SERVICE, "introspection-service", |ic| {
            Ok(Instance::new(Arc::new(ic.plugins().clone())))
        })
        .requires(&[types::WARNING]),
        Registration::new(types::GRPC, "introspection", |ic| {
            let set = ic
                .plugins()
                .value::<Set>(types::SERVICE, "introspection-service")
                .ok_or_else(|| Error::not_found("introspection service not loaded"))?;
            let local = Arc::new(Introspector::new((*set).clone(), &ic.root()));
            Ok(Instance::new(local.clone()).with_grpc(Arc::new(Services(local))))
        })
        .requires(&[types::SERVICE]),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::{skip, Meta};

    fn set_with(plugins: Vec<(&str, &str, Result<(), Error>)>) -> Set {
        let set = Set::new();
        for (t, id, result) in plugins {
            set.add(Plugin {
                r#type: t.into(),
                id: id.into(),
                requires: vec![],
                meta: Meta::default(),
                config: None,
                result: result.map(|_| Instance::new(Arc::new(0u8))),
            })
            .expect("add");
        }
        set
    }

    fn temp_root(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("ctrd-introspection-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn plugins_keep_init_order_and_errors() {
        let set = set_with(vec![
            ("io.containerd.a.v1", "one", Ok(())),
            ("io.containerd.b.v1", "two", Err(skip("nothing to do"))),
            ("io.containerd.a.v1", "three", Err(Error::unknown("broken"))),
        ]);
        let intro = Introspector::new(set, &temp_root("order"));
        let all = intro.plugins(&[]).expect("plugins");
        let ids: Vec<&str> = all.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(ids, ["one", "two", "three"]);
        assert!(all[0].init_err.is_none());
        assert_eq!(all[1].init_err.message, "nothing to do: skip plugin");
        assert_eq!(all[2].init_err.code, 2);
    }

    #[test]
    fn plugins_filter_on_type_and_id() {
        let set = set_with(vec![
            ("io.containerd.a.v1", "one", Ok(())),
            ("io.containerd.b.v1", "two", Ok(())),
        ]);
        let intro = Introspector::new(set, &temp_root("filter"));
        let by_type = intro
            .plugins(&["type==io.containerd.b.v1".to_string()])
            .expect("filter");
        assert_eq!(by_type.len(), 1);
        assert_eq!(by_type[0].id, "two");
        let by_id = intro.plugins(&["id==one".to_string()]).expect("filter");
        assert_eq!(by_id[0].type_, "io.containerd.a.v1");
        let bad = intro.plugins(&["type==".to_string(), "==x".to_string()]);
        assert_eq!(
            bad.expect_err("bad filter").class(),
            crate::errdefs::Class::InvalidArgument
        );
    }

    #[test]
    fn uuid_is_created_once_and_kept() {
        let root = temp_root("uuid");
        let intro = Introspector::new(Set::new(), &root);
        let first = intro.uuid().expect("uuid");
        assert!(is_uuid(&first), "{first}");
        assert_eq!(intro.uuid().expect("uuid"), first);
        let again = Introspector::new(Set::new(), &root);
        assert_eq!(again.uuid().expect("uuid"), first);
        fs::write(root.join("uuid"), "garbage").expect("write");
        assert!(again.uuid().is_err());
        let _ = fs::remove_dir_all(root);
    }

    #[test]
    fn plugin_info_not_found_and_unsupported_extra() {
        let set = set_with(vec![("io.containerd.a.v1", "one", Ok(()))]);
        let intro = Introspector::new(set, &temp_root("info"));
        let missing = PluginInfoRequest {
            type_: "io.containerd.x.v1".into(),
            id: "y".into(),
            ..Default::default()
        };
        let err = intro.plugin_info(&missing).expect_err("missing");
        assert_eq!(err.class(), crate::errdefs::Class::NotFound);
        assert_eq!(
            err.message(),
            "plugin io.containerd.x.v1.y not found: not found"
        );
        let plain = PluginInfoRequest {
            type_: "io.containerd.a.v1".into(),
            id: "one".into(),
            ..Default::default()
        };
        assert_eq!(intro.plugin_info(&plain).expect("info").plugin.id, "one");
    }
}
