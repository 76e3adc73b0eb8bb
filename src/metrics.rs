//! Prometheus metrics: the gRPC server series (named as go-grpc-prometheus names them), the
//! build info and the process collector, in one registry served at `/v1/metrics`.
//!
//! Series are created on first use only, so an idle daemon exports no zero-valued lines
//! for methods nobody called.

use std::time::Duration;

use prometheus::{
    CounterVec, Encoder, Gauge, HistogramOpts, HistogramVec, Opts, Registry, TextEncoder,
};

use crate::rpc::{Call, Interceptor, MethodKind};

/// The gRPC status names go-grpc-prometheus uses for `grpc_code`.
pub fn code_name(code: grpcio::RpcStatusCode) -> &'static str {
    match i32::from(code) {
        0 => "OK",
        1 => "Canceled",
        2 => "Unknown",
        3 => "InvalidArgument",
        4 => "DeadlineExceeded",
        5 => "NotFound",
        6 => "AlreadyExists",
        7 => "PermissionDenied",
        8 => "ResourceExhausted",
        9 => "FailedPrecondition",
        10 => "Aborted",
        11 => "OutOfRange",
        12 => "Unimplemented",
        13 => "Internal",
        14 => "Unavailable",
        15 => "DataLoss",
        16 => "Unauthenticated",
        _ => "Unknown",
    }
}

fn kind_name(kind: MethodKind) -> &'static str {
    match kind {
        MethodKind::Unary => "unary",
        MethodKind::ClientStream => "client_stream",
        MethodKind::ServerStream => "server_stream",
        MethodKind::BidiStream => "bidi_stream",
    }
}

/// The registry and the gRPC series.
pub struct Metrics {
    registry: Registry,
    started: CounterVec,
    handled: CounterVec,
    received: CounterVec,
    sent: CounterVec,
    handling: Option<HistogramVec>,
}

/// A metrics problem (only at set-up: registering a series twice).
#[derive(Debug, thiserror::Error)]
#[error("metrics: {0}")]
pub struct MetricsError(#[from] prometheus::Error);

const LABELS: [&str; 3] = ["grpc_type", "grpc_service", "grpc_method"];

impl Metrics {
    /// A registry with the gRPC series (the latency histogram only when `histogram`), the
    /// build info and, on Linux, the process collector.
    pub fn new(histogram: bool) -> Result<Metrics, MetricsError> {
        let registry = Registry::new();
        let counter =
            |name: &str, help: &str, labels: &[&str]| -> Result<CounterVec, MetricsError> {
                let vec = CounterVec::new(Opts::new(name, help), labels)?;
                registry.register(Box::new(vec.clone()))?;
                Ok(vec)
            };
        let started = counter(
            "grpc_server_started_total",
            "RPCs the server started, by method.",
            &LABELS,
        )?;
        let handled = counter(
            "grpc_server_handled_total",
            "RPCs the server completed, by method and status code.",
            &["grpc_type", "grpc_service", "grpc_method", "grpc_code"],
        )?;
        let received = counter(
            "grpc_server_msg_received_total",
            "Request messages the server received, by method.",
            &LABELS,
        )?;
        let sent = counter(
            "grpc_server_msg_sent_total",
            "Response messages the server sent, by method.",
            &LABELS,
        )?;
        let handling = if histogram {
            let vec = HistogramVec::new(
                HistogramOpts::new(
                    "grpc_server_handling_seconds",
                    "Time the server took to complete RPCs, by method.",
                ),
                &LABELS,
            )?;
            registry.register(Box::new(vec.clone()))?;
            Some(vec)
        } else {
            None
        };
        let build = Gauge::with_opts(
            Opts::new("ctrd_build_info", "The ctrd build: always 1.")
                .const_label("version", crate::VERSION)
                .const_label("revision", crate::REVISION),
        )?;
        build.set(1.0);
        registry.register(Box::new(build))?;
        #[cfg(target_os = "linux")]
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        Ok(Metrics {
            registry,
            started,
            handled,
            received,
            sent,
            handling,
        })
    }

    /// Everything in Prometheus text format.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let encoder = TextEncoder::new();
        if let Err(err) = encoder.encode(&self.registry.gather(), &mut out) {
            log::error!("encoding metrics failed: {err}");
        }
        out
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }
}

impl Interceptor for Metrics {
    fn started(&self, call: &Call, kind: MethodKind) {
        self.started
            .with_label_values(&[kind_name(kind), call.service(), call.method()])
            .inc();
    }

    fn msg_received(&self, call: &Call, kind: MethodKind) {
        self.received
            .with_label_values(&[kind_name(kind), call.service(), call.method()])
            .inc();
    }

    fn msg_sent(&self, call: &Call, kind: MethodKind) {
        self.sent
            .with_label_values(&[kind_name(kind), call.service(), call.method()])
            .inc();
    }

    fn handled(
        &self,
        call: &Call,
        kind: MethodKind,
        code: grpcio::RpcStatusCode,
        elapsed: Duration,
    ) {
        self.handled
            .with_label_values(&[
                kind_name(kind),
                call.service(),
                call.method(),
                code_name(code),
            ])
            .inc();
        if let Some(histogram) = &self.handling {
            histogram
                .with_label_values(&[kind_name(kind), call.service(), call.method()])
                .observe(elapsed.as_secs_f64());
        }
    }
}
