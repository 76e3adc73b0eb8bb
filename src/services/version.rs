//! `containerd.services.version.v1.Version`: the daemon's version and revision.

use std::sync::Arc;

use crate::api::version::{create_version, Version, VersionResponse};
use crate::api::Empty;
use crate::plugin::{types, GrpcServices, Instance, Registration};
use crate::rpc::{Call, RpcResult};

/// The version service; it needs no namespace.
pub struct VersionService;

impl Version for VersionService {
    fn version(&self, _call: &Call, _req: Empty) -> RpcResult<VersionResponse> {
        Ok(VersionResponse {
            version: crate::VERSION.to_string(),
            revision: crate::REVISION.to_string(),
            ..Default::default()
        })
    }
}

impl GrpcServices for VersionService {
    fn grpc_services(&self) -> Vec<grpcio::Service> {
        vec![create_version(Arc::new(VersionService))]
    }

    /// Offered on the TCP listener too, so remote clients can identify and probe ctrd.
    fn tcp_services(&self) -> Vec<grpcio::Service> {
        self.grpc_services()
    }
}

/// `io.containerd.grpc.v1.version`.
pub fn registration() -> Registration {
    Registration::new(types::GRPC, "version", |_ic| {
        let service = Arc::new(VersionService);
        Ok(Instance::new(service.clone()).with_grpc(service))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_build_version() {
        let call = Call::for_test("containerd.services.version.v1.Version", "Version", &[]);
        let resp = VersionService
            .version(&call, Empty::default())
            .expect("version");
        assert_eq!(resp.version, crate::VERSION);
        assert_eq!(resp.revision, crate::REVISION);
    }
}
