//! A differ in another process, reached through its `containerd.services.diff.v1.Diff`
//! service (`[proxy_plugins.<name>]` with `type = "diff"`).

use grpcio::Channel;

use super::with_headers;
use crate::api::diff::{ApplyRequest, DiffClient, DiffRequest};
use crate::content::Descriptor;
use crate::diff::wire::{descriptor_from_api, descriptor_to_api, payloads_to_api};
use crate::diff::{ApplyParams, CompareOptions, Differ};
use crate::errdefs::Error;
use crate::scope::Scope;
use crate::snapshots::wire::mount_to_api;
use crate::snapshots::Mount;

/// See the module documentation.
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

fn mounts_to_api(mounts: &[Mount]) -> Vec<crate::api::mount::Mount> {
    mounts.iter().cloned().map(mount_to_api).collect()
}

impl Differ for ProxyDiffer {
    fn apply(
        &self,
        scope: &Scope,
        desc: &Descriptor,
        mounts: &[Mount],
        opts: &ApplyParams,
    ) -> Result<Descriptor, Error> {
        let resp = self
            .client
            .apply_opt(
                &ApplyRequest {
                    diff: Some(descriptor_to_api(desc.clone())).into(),
                    mounts: mounts_to_api(mounts),
                    payloads: payloads_to_api(&opts.payloads),
                    sync_fs: opts.sync_fs,
                    ..Default::default()
                },
                with_headers(scope.namespace(), scope.lease()),
            )
            .map_err(Error::from_grpc)?;
        Ok(descriptor_from_api(&resp.applied.unwrap_or_default()))
    }

    fn compare(
        &self,
        scope: &Scope,
        lower: &[Mount],
        upper: &[Mount],
        opts: &CompareOptions,
    ) -> Result<Descriptor, Error> {
        let resp = self
            .client
            .diff_opt(
                &DiffRequest {
                    left: mounts_to_api(lower),
                    right: mounts_to_api(upper),
                    media_type: opts.media_type.clone(),
                    ref_: opts.reference.clone(),
                    labels: opts.labels.clone().into_iter().collect(),
                    source_date_epoch: opts
                        .source_date_epoch
                        .map(crate::api::timestamp_signed)
                        .into(),
                    ..Default::default()
                },
                with_headers(scope.namespace(), scope.lease()),
            )
            .map_err(Error::from_grpc)?;
        Ok(descriptor_from_api(&resp.diff.unwrap_or_default()))
    }
}
