//! Prometheus metrics: the gRPC server series (named as go-grpc-prometheus names them), the
//! build info and the process collector, in one registry served at `/v1/metrics`.
//!
//! Series are created on first use only, so an idle daemon exports no zero-valued lines
//! for methods nobody called.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus::{
    Counter, CounterVec, Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, Opts, Registry,
    TextEncoder,
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
    /// Tells this registry's series apart from another's in the per-thread cache.
    id: u64,
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
        static NEXT_ID: AtomicU64 = AtomicU64::new(0);
        Ok(Metrics {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
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

/// One method's series as one thread has resolved them, each on its first use: finding a
/// series by its label values hashes them and takes the vector's read lock, which a call
/// would otherwise do four or five times; the series themselves are atomic counters shared
/// by every thread.
#[derive(Default)]
struct MethodSeries {
    started: Option<Counter>,
    received: Option<Counter>,
    sent: Option<Counter>,
    /// By status code (0-16).
    handled: [Option<Counter>; 17],
    handling: Option<Histogram>,
}

/// (registry, kind, service, method): the names are the generated glue's static strings, so
/// their addresses and lengths identify them.
type SeriesKey = (u64, [(usize, usize); 3]);

thread_local! {
    static SERIES: RefCell<HashMap<SeriesKey, MethodSeries>> = RefCell::new(HashMap::new());
}

impl Metrics {
    fn with_series<R>(
        &self,
        call: &Call,
        kind: MethodKind,
        f: impl FnOnce(&mut MethodSeries, [&str; 3]) -> R,
    ) -> R {
        let labels = [kind_name(kind), call.service(), call.method()];
        let key = (
            self.id,
            labels.map(|name| (name.as_ptr() as usize, name.len())),
        );
        SERIES.with(|cache| f(cache.borrow_mut().entry(key).or_default(), labels))
    }
}

impl Interceptor for Metrics {
    fn started(&self, call: &Call, kind: MethodKind) {
        self.with_series(call, kind, |series, labels| {
            series
                .started
                .get_or_insert_with(|| self.started.with_label_values(&labels))
                .inc()
        });
    }

    fn msg_received(&self, call: &Call, kind: MethodKind) {
        self.with_series(call, kind, |series, labels| {
            series
                .received
                .get_or_insert_with(|| self.received.with_label_values(&labels))
                .inc()
        });
    }

    fn msg_sent(&self, call: &Call, kind: MethodKind) {
        self.with_series(call, kind, |series, labels| {
            series
                .sent
                .get_or_insert_with(|| self.sent.with_label_values(&labels))
                .inc()
        });
    }

    fn handled(
        &self,
        call: &Call,
        kind: MethodKind,
        code: grpcio::RpcStatusCode,
        elapsed: Duration,
    ) {
        self.with_series(call, kind, |series, labels| {
            let index = usize::try_from(i32::from(code))
                .ok()
                .filter(|&i| i < series.handled.len())
                .unwrap_or(2); // Unknown, as code_name names it
            series.handled[index]
                .get_or_insert_with(|| {
                    self.handled.with_label_values(&[
                        labels[0],
                        labels[1],
                        labels[2],
                        code_name(code),
                    ])
                })
                .inc();
            if let Some(histogram) = &self.handling {
                series
                    .handling
                    .get_or_insert_with(|| histogram.with_label_values(&labels))
                    .observe(elapsed.as_secs_f64());
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of the one `metric` line whose labels include every one of `labels`.
    fn value(metrics: &Metrics, metric: &str, labels: &[&str]) -> Option<f64> {
        let text = String::from_utf8(metrics.render()).expect("text format");
        text.lines()
            .filter(|line| line.starts_with(&format!("{metric}{{")))
            .find(|line| labels.iter().all(|label| line.contains(label)))
            .and_then(|line| line.rsplit(' ').next()?.parse().ok())
    }

    #[test]
    fn each_registry_counts_its_own_calls_and_makes_a_series_on_its_first_use() {
        let a = Metrics::new(true).expect("registry a");
        let b = Metrics::new(false).expect("registry b");
        let call = Call::for_test("test.v1.Svc", "Get", &[]);
        let unary = MethodKind::Unary;
        for _ in 0..3 {
            a.started(&call, unary);
            a.msg_received(&call, unary);
        }
        a.handled(&call, unary, grpcio::RpcStatusCode::OK, Duration::ZERO);
        a.handled(
            &call,
            unary,
            grpcio::RpcStatusCode::NOT_FOUND,
            Duration::ZERO,
        );
        a.handled(
            &call,
            unary,
            grpcio::RpcStatusCode::NOT_FOUND,
            Duration::ZERO,
        );
        b.started(&call, unary);
        // Another thread resolves the same series for itself and adds to the same counter.
        std::thread::scope(|s| {
            s.spawn(|| a.started(&call, unary));
        });

        let get = ["grpc_service=\"test.v1.Svc\"", "grpc_method=\"Get\""];
        assert_eq!(value(&a, "grpc_server_started_total", &get), Some(4.0));
        assert_eq!(value(&a, "grpc_server_msg_received_total", &get), Some(3.0));
        let ok = [get[0], get[1], "grpc_code=\"OK\""];
        let not_found = [get[0], get[1], "grpc_code=\"NotFound\""];
        assert_eq!(value(&a, "grpc_server_handled_total", &ok), Some(1.0));
        assert_eq!(
            value(&a, "grpc_server_handled_total", &not_found),
            Some(2.0)
        );
        assert_eq!(
            value(&a, "grpc_server_handling_seconds_count", &get),
            Some(3.0)
        );
        // Nothing was sent: no zero-valued series for it.
        assert_eq!(value(&a, "grpc_server_msg_sent_total", &[]), None);
        // The other registry saw only its own call.
        assert_eq!(value(&b, "grpc_server_started_total", &get), Some(1.0));
        assert_eq!(value(&b, "grpc_server_handled_total", &[]), None);
    }
}
