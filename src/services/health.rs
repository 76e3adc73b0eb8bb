//! `grpc.health.v1.Health`: Check and Watch for the whole server (service name `""`).
//!
//! Unlike containerd, the status follows the daemon's real state: NOT_SERVING until every
//! readiness registration has completed, SERVING while ready, NOT_SERVING again once
//! shutdown begins (and open Watch streams then end). A NOT_SERVING Check answer carries the
//! reason in the `ctrd-health-reason` header (what readiness still waits for, or
//! `stopping`); `ctrd check` prints it.
//!
//! The plugin's config (ctrd's own keys) decides what "ready" and "stopping" take:
//! `wait_for_paths` holds readiness (and systemd's `READY=1`) until each path exists, checked
//! every 100 ms by a waiting future (`crate::waiting`, no thread); `shutdown_drain` keeps the listeners open,
//! answering NOT_SERVING, for that long after shutdown begins.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::api::health::{
    create_health, Health, HealthCheckRequest, HealthCheckResponse, HealthListRequest,
    HealthListResponse, ServingStatus,
};
use crate::config::GoDuration;
use crate::errdefs::Error;
use crate::plugin::{types, GrpcServices, Instance, Readiness, Registration};
use crate::rpc::{Call, RpcResult, StreamSender};

/// The header a NOT_SERVING Check answer explains itself in.
pub const REASON_HEADER: &str = "ctrd-health-reason";

/// How often `wait_for_paths` are looked for.
const PATH_POLL: Duration = Duration::from_millis(100);

/// `[plugins.'io.containerd.grpc.v1.healthcheck']` (ctrd's own keys).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthConfig {
    /// Paths that must all exist before ctrd reports ready (a mounted data disk, a
    /// network's config file…).
    pub wait_for_paths: Vec<String>,
    /// How long the listeners stay open, answering NOT_SERVING, once shutdown begins.
    pub shutdown_drain: GoDuration,
}

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
    readiness: Readiness,
    drain: Duration,
}

impl Default for HealthService {
    fn default() -> Self {
        HealthService {
            phase: Mutex::new(Phase::Starting),
            watchers: Mutex::new(Watchers::default()),
            readiness: Readiness::new(),
            drain: Duration::ZERO,
        }
    }
}

impl HealthService {
    /// How long to keep serving NOT_SERVING after shutdown begins (`shutdown_drain`).
    pub fn drain(&self) -> Duration {
        self.drain
    }

    /// Why the server is not serving, or `None` when it is.
    pub fn reason(&self) -> Option<String> {
        match *self.phase.lock() {
            Phase::Serving => None,
            Phase::Stopping => Some("stopping".into()),
            Phase::Starting => {
                let waiting: Vec<String> = self
                    .readiness
                    .waiting_for()
                    .into_iter()
                    .filter(|w| !w.is_empty())
                    .collect();
                Some(if waiting.is_empty() {
                    "starting".into()
                } else {
                    format!("starting: waiting for {}", waiting.join(", "))
                })
            }
        }
    }

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
    fn check(&self, call: &Call, req: HealthCheckRequest) -> RpcResult<HealthCheckResponse> {
        if !req.service.is_empty() {
            return Err(Error::not_found("unknown service"));
        }
        if let Some(reason) = self.reason() {
            call.add_reply_header(REASON_HEADER, &reason);
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
    Registration::new(types::GRPC, "healthcheck", |ic| {
        let config = ic.config::<HealthConfig>()?.clone();
        let service = Arc::new(HealthService {
            readiness: ic.readiness(),
            drain: config.shutdown_drain.0,
            ..HealthService::default()
        });
        let mut instance = Instance::new(service.clone()).with_grpc(Arc::new(Services(service)));
        if !config.wait_for_paths.is_empty() {
            let paths: Vec<PathBuf> = config.wait_for_paths.iter().map(PathBuf::from).collect();
            let what = format!("paths {}", config.wait_for_paths.join(", "));
            let guard = ic.register_readiness_for(&what);
            let closed = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let closing = closed.clone();
            log::info!(
                "ready once these exist: {}",
                config.wait_for_paths.join(", ")
            );
            crate::waiting::spawn(async move {
                while let Some(missing) = paths.iter().find(|p| !p.exists()) {
                    log::debug!("still waiting for {}", missing.display());
                    crate::waiting::sleep_until(std::time::Instant::now() + PATH_POLL).await;
                    // The plugin closed: the daemon is stopping.
                    if closed.load(std::sync::atomic::Ordering::Acquire) {
                        return;
                    }
                }
                guard.done();
            });
            instance = instance.with_close(move || {
                closing.store(true, std::sync::atomic::Ordering::Release);
            });
        }
        Ok(instance)
    })
    .config::<HealthConfig>()
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
    fn not_serving_answers_say_why() {
        let readiness = Readiness::new();
        let h = HealthService {
            readiness: readiness.clone(),
            ..HealthService::default()
        };
        let guard = readiness.register_named("io.containerd.x.v1.slow (paths /mnt)".into());
        let call = Call::for_test("grpc.health.v1.Health", "Check", &[]);
        h.check(&call, HealthCheckRequest::default())
            .expect("check");
        assert_eq!(
            call.reply_headers(),
            [(
                REASON_HEADER.to_string(),
                "starting: waiting for io.containerd.x.v1.slow (paths /mnt)".to_string()
            )]
        );
        guard.done();
        assert_eq!(h.reason().as_deref(), Some("starting"));
        h.set_serving();
        let call = Call::for_test("grpc.health.v1.Health", "Check", &[]);
        h.check(&call, HealthCheckRequest::default())
            .expect("check");
        assert!(call.reply_headers().is_empty(), "serving needs no reason");
        h.set_stopping();
        assert_eq!(h.reason().as_deref(), Some("stopping"));
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
