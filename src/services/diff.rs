//! `containerd.services.diff.v1.Diff`: `io.containerd.service.v1.diff-service` tries the
//! differs named by its `default` list in order (a differ answering Unimplemented passes
//! the call to the next), and `io.containerd.grpc.v1.diff` serves it. Differs are plugins
//! of type `io.containerd.differ.v1`: the built-in walking differ, or a proxy.

use std::collections::HashMap;
use std::sync::Arc;

use grpcio::Channel;
use serde::{Deserialize, Serialize};

use crate::api::diff::{
    create_diff, ApplyRequest, ApplyResponse, Diff, DiffClient, DiffRequest, DiffResponse,
};
use crate::api::mount::Mount as ApiMount;
use crate::api::types::Descriptor;
use crate::api::{Any, Timestamp};
use crate::errdefs::{Class, Error};
use crate::plugin::{types, GrpcServices, Instance, Registration};
use crate::proxy::with_headers;
use crate::rpc::{Call, RpcResult};

/// What Diff (compare) was asked for.
#[derive(Debug, Clone, Default)]
pub struct CompareOptions {
    /// Empty means `application/vnd.oci.image.layer.v1.tar+gzip`.
    pub media_type: String,
    /// The content ingest ref; empty means a fresh unique one.
    pub reference: String,
    pub labels: HashMap<String, String>,
    pub source_date_epoch: Option<Timestamp>,
}

/// A differ: applies layers to mounts and computes layers between mounts.
pub trait Differ: Send + Sync {
    fn apply(
        &self,
        ns: &str,
        lease: Option<&str>,
        desc: &Descriptor,
        mounts: &[ApiMount],
        payloads: &HashMap<String, Any>,
        sync_fs: bool,
    ) -> Result<Descriptor, Error>;

    fn compare(
        &self,
        ns: &str,
        lease: Option<&str>,
        lower: &[ApiMount],
        upper: &[ApiMount],
        opts: &CompareOptions,
    ) -> Result<Descriptor, Error>;
}

/// How a differ plugin's value is stored.
pub struct DifferHandle(pub Arc<dyn Differ>);

/// A differ in another process, reached through its Diff service.
pub struct ProxyDiffer {
    client: DiffClient,
}

impl ProxyDiffer {
    pub fn new(channel: Channel) -> Self {
        ProxyDiffer {
            client: DiffClient::new(channel),
        }
    }
}

impl Differ for ProxyDiffer {
    fn apply(
        &self,
        ns: &str,
        lease: Option<&str>,
        desc: &Descriptor,
        mounts: &[ApiMount],
        payloads: &HashMap<String, Any>,
        sync_fs: bool,
    ) -> Result<Descriptor, Error> {
        let resp = self
            .client
            .apply_opt(
                &ApplyRequest {
                    diff: Some(desc.clone()).into(),
                    mounts: mounts.to_vec(),
                    payloads: payloads.clone(),
                    sync_fs,
                    ..Default::default()
                },
                with_headers(ns, lease),
            )
            .map_err(Error::from_grpc)?;
        Ok(resp.applied.unwrap_or_default())
    }

    fn compare(
        &self,
        ns: &str,
        lease: Option<&str>,
        lower: &[ApiMount],
        upper: &[ApiMount],
        opts: &CompareOptions,
    ) -> Result<Descriptor, Error> {
        let resp = self
            .client
            .diff_opt(
                &DiffRequest {
                    left: lower.to_vec(),
                    right: upper.to_vec(),
                    media_type: opts.media_type.clone(),
                    ref_: opts.reference.clone(),
                    labels: opts.labels.clone(),
                    source_date_epoch: opts.source_date_epoch.clone().into(),
                    ..Default::default()
                },
                with_headers(ns, lease),
            )
            .map_err(Error::from_grpc)?;
        Ok(resp.diff.unwrap_or_default())
    }
}

/// `[plugins.'io.containerd.service.v1.diff-service']`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DiffServiceConfig {
    /// Differ ids, tried in this order.
    pub default: Vec<String>,
    /// Force a filesystem sync after every apply.
    pub sync_fs: bool,
}

impl Default for DiffServiceConfig {
    fn default() -> Self {
        DiffServiceConfig {
            default: vec!["walking".into()],
            sync_fs: false,
        }
    }
}

/// The diff service: the configured differs, in order.
pub struct DiffService {
    differs: Vec<(String, Arc<dyn Differ>)>,
    sync_fs: bool,
}

impl DiffService {
    /// The first differ's answer that is not NotImplemented, else the last one's error.
    fn first<T>(&self, f: impl Fn(&dyn Differ) -> Result<T, Error>) -> Result<T, Error> {
        let mut last = Error::unimplemented("no differ is configured");
        for (id, differ) in &self.differs {
            match f(differ.as_ref()) {
                Err(err) if err.class() == Class::NotImplemented => {
                    log::debug!("differ {id} passed: {err}");
                    last = err;
                }
                other => return other,
            }
        }
        Err(last)
    }
}

impl Diff for DiffService {
    fn apply(&self, call: &Call, req: ApplyRequest) -> RpcResult<ApplyResponse> {
        let ns = call.namespace_required()?;
        let desc = req.diff.clone().unwrap_or_default();
        let sync_fs = req.sync_fs || self.sync_fs;
        let applied =
            self.first(|d| d.apply(ns, call.lease(), &desc, &req.mounts, &req.payloads, sync_fs))?;
        Ok(ApplyResponse {
            applied: Some(applied).into(),
            ..Default::default()
        })
    }

    fn diff(&self, call: &Call, req: DiffRequest) -> RpcResult<DiffResponse> {
        let ns = call.namespace_required()?;
        let opts = CompareOptions {
            media_type: req.media_type.clone(),
            reference: req.ref_.clone(),
            labels: req.labels.clone(),
            source_date_epoch: req.source_date_epoch.clone().into_option(),
        };
        let diff = self.first(|d| d.compare(ns, call.lease(), &req.left, &req.right, &opts))?;
        Ok(DiffResponse {
            diff: Some(diff).into(),
            ..Default::default()
        })
    }
}

impl GrpcServices for DiffService {
    fn grpc_services(&self) -> Vec<grpcio::Service> {
        vec![create_diff(Arc::new(DiffService {
            differs: self.differs.clone(),
            sync_fs: self.sync_fs,
        }))]
    }
}

/// `io.containerd.service.v1.diff-service` and `io.containerd.grpc.v1.diff`.
pub fn registrations() -> Vec<Registration> {
    vec![
        Registration::new(types::SERVICE, "diff-service", |ic| {
            let config = ic.config::<DiffServiceConfig>()?.clone();
            let mut differs = Vec::new();
            for id in &config.default {
                let plugin = ic
                    .plugins()
                    .get_by_id(types::DIFF, id)
                    .map_err(|err| err.context(format!("could not find differ {id:?}")))?;
                let handle = plugin
                    .instance()
                    .map_err(Clone::clone)?
                    .get::<DifferHandle>()
                    .ok_or_else(|| {
                        Error::internal(format!("differ {id} has an unexpected type"))
                    })?;
                differs.push((id.clone(), handle.0.clone()));
            }
            Ok(Instance::new(Arc::new(DiffService {
                differs,
                sync_fs: config.sync_fs,
            })))
        })
        .requires(&[types::DIFF])
        .config::<DiffServiceConfig>(),
        Registration::new(types::GRPC, "diff", |ic| {
            let service = ic
                .plugins()
                .value::<DiffService>(types::SERVICE, "diff-service")
                .ok_or_else(|| Error::not_found("diff service not loaded"))?;
            Ok(Instance::new(service.clone()).with_grpc(service))
        })
        .requires(&[types::SERVICE]),
    ]
}
