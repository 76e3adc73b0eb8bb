//! `containerd.services.diff.v1.Diff`: `io.containerd.service.v1.diff-service` tries the
//! differs named by its `default` list in order (a differ answering Unimplemented passes
//! the call to the next), and `io.containerd.grpc.v1.diff` serves it. Differs are plugins
//! of type `io.containerd.differ.v1` (`crate::diff::Differ`): the built-in walking differ,
//! or a proxy. This module converts between the wire messages and the differ's types.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::api::diff::{create_diff, ApplyRequest, ApplyResponse, Diff, DiffRequest, DiffResponse};
use crate::api::mount::Mount as ApiMount;
use crate::diff::wire::{descriptor_from_api, descriptor_to_api, payloads_from_api};
use crate::diff::{ApplyParams, CompareOptions, Differ, DifferHandle};
use crate::errdefs::{Class, Error};
use crate::plugin::{types, GrpcServices, Instance, Registration};
use crate::rpc::{Call, RpcResult};
use crate::snapshots::Mount;

fn mounts_from_api(mounts: &[ApiMount]) -> Vec<Mount> {
    mounts
        .iter()
        .map(crate::snapshots::wire::mount_from_api)
        .collect()
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
        let scope = call.scope()?;
        let desc = descriptor_from_api(&req.diff.clone().unwrap_or_default());
        let mounts = mounts_from_api(&req.mounts);
        let opts = ApplyParams {
            payloads: payloads_from_api(&req.payloads),
            sync_fs: req.sync_fs || self.sync_fs,
        };
        let applied = self.first(|d| d.apply(&scope, &desc, &mounts, &opts))?;
        Ok(ApplyResponse {
            applied: Some(descriptor_to_api(applied)).into(),
            ..Default::default()
        })
    }

    fn diff(&self, call: &Call, req: DiffRequest) -> RpcResult<DiffResponse> {
        let scope = call.scope()?;
        let opts = CompareOptions {
            media_type: req.media_type.clone(),
            reference: req.ref_.clone(),
            labels: req.labels.clone().into_iter().collect(),
            source_date_epoch: req
                .source_date_epoch
                .as_ref()
                .map(crate::api::system_time_signed),
        };
        let (left, right) = (mounts_from_api(&req.left), mounts_from_api(&req.right));
        let diff = self.first(|d| d.compare(&scope, &left, &right, &opts))?;
        Ok(DiffResponse {
            diff: Some(descriptor_to_api(diff)).into(),
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
