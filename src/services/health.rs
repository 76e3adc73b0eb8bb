//! `grpc.health.v1.Health`: Check and Watch for the whole server (service name `""`).
//!
//! Unlike containerd, the status follows the daemon's real state: NOT_SERVING until every
//! readiness registration has completed, SERVING while ready, NOT_SERVING again once
//! shutdown begins (and open Watch streams then end).

use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;

use crate::api::health::{
    create_health, Health, HealthCheckRequest, HealthCheckResponse, HealthListRequest,
    HealthListResponse, ServingStatus,
};
use crate::errdefs::Error;
use crate::plugin::{types, GrpcServices, Instance, Registration};
use crate::rpc::{Call, RpcResult, StreamSender};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Starting,
    Serving,
    Stopping,
}

#[derive(Default)]
struct Watchers {
    senders: Vec<Sender<Phase>>,
}

/// The health state and its gRPC service.
pub struct HealthService {
    phase: Mutex<Phase>,
    watchers: Mutex<Watchers>,
}

impl Default for HealthService {
    fn default() -> Self {
        HealthService {
            phase: Mutex::new(Phase::Starting),
            watchers: Mutex::new(Watchers::default()),
        }
    }
}

impl HealthService {
    /// Every readiness registration completed: report SERVING.
    pub fn set_serving(&self) {
        self.transition(Phase::Serving);
    }

    /// Shutdown began: report NOT_SERVING and end Watch streams.
    pub fn set_stopping(&self) {
        self.transition(Phase::Stopping);
    }

    fn transition(&self, to: Phase) {
        let mut phase = self.phase.lock();
        if *phase == to || *phase == Phase::Stopping {
            return;
        }
        *phase = to;
        let mut watchers = self.watchers.lock();
        watchers.senders.retain(|tx| tx.send(to).is_ok());
        if to == Phase::Stopping {
            watchers.senders.clear();
        }
    }

    fn status(phase: Phase) -> ServingStatus {
        match phase {
            Phase::Serving => ServingStatus::SERVING,
            Phase::Starting | Phase::Stopping => ServingStatus::NOT_SERVING,
        }
    }

    fn subscribe(&self) -> (Phase, Receiver<Phase>) {
        let phase = self.phase.lock();
        let (tx, rx) = crossbeam_channel::unbounded();
        if *phase != Phase::Stopping {
            self.watchers.lock().senders.push(tx);
        }
        (*phase, rx)
    }
}

fn response(status: ServingStatus) -> HealthCheckResponse {
    HealthCheckResponse {
        status: status.into(),
        ..Default::default()
    }
}

impl Health for HealthService {
    fn check(&self, _call: &Call, req: HealthCheckRequest) -> RpcResult<HealthCheckResponse> {
        if !req.service.is_empty() {
            return Err(Error::not_found("unknown service"));
        }
        Ok(response(Self::status(*self.phase.lock())))
    }

    fn list(&self, _call: &Call, _req: HealthListRequest) -> RpcResult<HealthListResponse> {
        let mut resp = HealthListResponse::default();
        resp.statuses
            .insert(String::new(), response(Self::status(*self.phase.lock())));
        Ok(resp)
    }

    fn watch(
        &self,
        _call: &Call,
        req: HealthCheckRequest,
        out: &mut StreamSender<HealthCheckResponse>,
    ) -> RpcResult<()> {
        if !req.service.is_empty() {
            // Like grpc-go: an unknown service is reported, and the stream stays open until
            // the client leaves or the daemon stops.
            out.send(response(ServingStatus::SERVICE_UNKNOWN))?;
            let (_, changes) = self.subscribe();
            let closed = out.closed_signal();
            crossbeam_channel::select! {
                recv(changes) -> _ => {}
                recv(closed) -> _ => {}
            }
            return Ok(());
        }
        let (mut phase, changes) = self.subscribe();
        out.send(response(Self::status(phase)))?;
        while phase != Phase::Stopping {
            let closed = out.closed_signal();
            crossbeam_channel::select! {
                recv(changes) -> next => match next {
                    Ok(next) => {
                        phase = next;
                        out.send(response(Self::status(phase)))?;
                    }
                    Err(_) => break,
                },
                recv(closed) -> _ => break,
            }
        }
        Ok(())
    }
}

struct Services(Arc<HealthService>);

impl GrpcServices for Services {
    fn grpc_services(&self) -> Vec<grpcio::Service> {
        vec![create_health(self.0.clone())]
    }

    /// Offered on the TCP listener too, so remote clients can identify and probe ctrd.
    fn tcp_services(&self) -> Vec<grpcio::Service> {
        self.grpc_services()
    }
}

/// `io.containerd.grpc.v1.healthcheck`.
pub fn registration() -> Registration {
    Registration::new(types::GRPC, "healthcheck", |_ic| {
        let service = Arc::new(HealthService::default());
        Ok(Instance::new(service.clone()).with_grpc(Arc::new(Services(service))))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(h: &HealthService, service: &str) -> RpcResult<ServingStatus> {
        let call = Call::for_test("grpc.health.v1.Health", "Check", &[]);
        let req = HealthCheckRequest {
            service: service.into(),
            ..Default::default()
        };
        h.check(&call, req)
            .map(|r| r.status.enum_value_or_default())
    }

    #[test]
    fn not_serving_until_ready_and_again_when_stopping() {
        let h = HealthService::default();
        assert_eq!(check(&h, "").expect("check"), ServingStatus::NOT_SERVING);
        h.set_serving();
        assert_eq!(check(&h, "").expect("check"), ServingStatus::SERVING);
        h.set_stopping();
        assert_eq!(check(&h, "").expect("check"), ServingStatus::NOT_SERVING);
        h.set_serving();
        assert_eq!(
            check(&h, "").expect("check"),
            ServingStatus::NOT_SERVING,
            "stopping is final"
        );
    }

    #[test]
    fn unknown_service_is_not_found() {
        let h = HealthService::default();
        let err = check(&h, "foo").expect_err("unknown");
        assert_eq!(err.message(), "unknown service");
        assert_eq!(err.class(), crate::errdefs::Class::NotFound);
    }

    #[test]
    fn list_reports_the_server_status() {
        let h = HealthService::default();
        h.set_serving();
        let call = Call::for_test("grpc.health.v1.Health", "List", &[]);
        let list = h.list(&call, HealthListRequest::default()).expect("list");
        assert_eq!(list.statuses.len(), 1);
        assert_eq!(
            list.statuses[""].status.enum_value_or_default(),
            ServingStatus::SERVING
        );
    }

    #[test]
    fn watchers_see_transitions() {
        let h = HealthService::default();
        let (phase, rx) = h.subscribe();
        assert_eq!(phase, Phase::Starting);
        h.set_serving();
        h.set_stopping();
        assert_eq!(rx.recv().expect("serving"), Phase::Serving);
        assert_eq!(rx.recv().expect("stopping"), Phase::Stopping);
        assert!(rx.recv().is_err(), "stream ends after stopping");
    }
}
