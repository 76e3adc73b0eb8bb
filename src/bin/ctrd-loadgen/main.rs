//! `ctrd-loadgen`: the benchmark's native client, so the client is never the bottleneck.
//!
//! ```text
//! ctrd-loadgen version   SOCKET CALLERS SECONDS [CONNECTIONS]
//!                        # Version calls/s, p50/p99 (µs); callers share 1 connection by default
//! ctrd-loadgen coldstart SOCKET -- CMD ARGS...         # exec CMD, ms until the first answered Version
//! ctrd-loadgen ingest    SOCKET MIB PARALLEL REF [--pid PID]
//!                        # PARALLEL Content/Write ingests of fresh random MIB MiB blobs (refs
//!                        # REF-0..), MiB/s over all, digests; with PID the daemon's peak RSS
//! ctrd-loadgen read      SOCKET DIGEST                 # Content/Read of a whole blob, MiB/s
//! ctrd-loadgen rtt       ROUNDS                        # unix-socket round trip (µs), the floor for a call
//! ctrd-loadgen sha256    MIB                           # single-core sha256 MiB/s, the ceiling for an ingest
//! ctrd-loadgen floor     SOCKET                        # serve: a bare gRPC server, nothing registered
//! ```
//!
//! `floor` is the physical floor of the idle rows: the least any grpcio daemon with one
//! completion queue on a unix socket holds (memory, threads); `coldstart` and `version`
//! accept its UNIMPLEMENTED as an answer (the least work a grpcio server does for a call).
//!
//! Each prints one JSON line on stdout; a failed measurement prints `ctrd-loadgen: <reason>`
//! on stderr and exits 1, so the benchmark never reports a figure it did not measure.

mod content;
mod limits;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ctrd::api::version::{VersionClient, METHOD_VERSION_VERSION};
use ctrd::api::Empty;
use grpcio::{ChannelBuilder, EnvBuilder};

fn usage() -> ! {
    eprintln!(
        "usage: ctrd-loadgen version SOCKET CALLERS SECONDS [CONNECTIONS] | coldstart SOCKET -- CMD ARGS... \
         | ingest SOCKET MIB PARALLEL REF [--pid PID] | read SOCKET DIGEST | rtt ROUNDS | sha256 MIB \
         | floor SOCKET"
    );
    std::process::exit(2)
}

/// Whether a Version call was answered: by a daemon, or by the floor server, which
/// registers nothing, so UNIMPLEMENTED is its answer.
fn answered<T>(result: &Result<T, grpcio::Error>) -> bool {
    match result {
        Ok(_) => true,
        Err(grpcio::Error::RpcFailure(status)) => {
            status.code() == grpcio::RpcStatusCode::UNIMPLEMENTED
        }
        Err(_) => false,
    }
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

/// `clients` callers, each making its next Version call as soon as the last one is answered,
/// spread over `connections` connections (HTTP/2 multiplexes the callers of one): a process
/// with concurrent calls on its one connection, or as many client processes. The calls are
/// made asynchronously from one completion-queue thread, which also receives the answers:
/// the generator's own CPU per call (which shares the machine's cores with the daemon) is
/// then only its gRPC stack's, with no hand-off between threads for each call.
fn version(socket: &str, clients: usize, seconds: f64, connections: usize) {
    let connections = connections.max(1);
    let env = Arc::new(EnvBuilder::new().cq_count(1).build());
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let start = Instant::now();
    // A subchannel pool of its own gives each channel its own connection: gRPC core would
    // otherwise share one between channels to the same address. No retries: none is wanted
    // here, and gRPC core's retry filter keeps what each call sends for a replay and runs
    // it as an attempt of its own (about 0.5 µs of the generator's ~10 µs per call, on
    // cores it shares with the daemon).
    let channels: Vec<grpcio::Client> = (0..connections)
        .map(|_| {
            grpcio::Client::new(
                ChannelBuilder::new(env.clone())
                    .use_local_subchannel_pool(true)
                    .enable_retry(false)
                    .connect(&format!("unix:{socket}")),
            )
        })
        .collect();
    let (done, results) = crossbeam_channel::bounded(clients);
    for caller_no in 0..clients {
        let caller = channels[caller_no % channels.len()].clone();
        let done = done.clone();
        channels[0].spawn(async move {
            let mut latencies = Vec::with_capacity(100_000);
            let mut errors = 0u64;
            while Instant::now() < deadline {
                let t = Instant::now();
                let answer = match caller.unary_call_async(
                    &METHOD_VERSION_VERSION,
                    &Empty::default(),
                    grpcio::CallOption::default(),
                ) {
                    Ok(call) => call.await,
                    Err(err) => Err(err),
                };
                if answered(&answer) {
                    latencies.push(t.elapsed().as_micros() as u64);
                } else {
                    errors += 1;
                }
            }
            let _ = done.send((latencies, errors));
        });
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for _ in 0..clients {
        let (latencies, e) = results.recv().expect("every caller reports");
        all.extend(latencies);
        errors += e;
    }
    let elapsed = start.elapsed().as_secs_f64();
    all.sort_unstable();
    println!(
        "{{\"clients\": {clients}, \"connections\": {connections}, \"calls\": {}, \"errors\": {errors}, \"calls_per_s\": {:.0}, \"p50_us\": {}, \"p99_us\": {}}}",
        all.len(),
        all.len() as f64 / elapsed,
        percentile(&all, 0.50),
        percentile(&all, 0.99)
    );
}

fn coldstart(socket: &str, cmd: &[String]) {
    let _ = std::fs::remove_file(socket);
    // The client's own gRPC start-up (a millisecond or more, and again for each attempt
    // that dropped its environment) is no part of the daemon's: it is done before the clock
    // starts, and every attempt reuses it.
    let env = Arc::new(EnvBuilder::new().cq_count(1).build());
    let start = Instant::now();
    let mut child = Command::new(&cmd[0])
        .args(&cmd[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|err| {
            eprintln!("ctrd-loadgen: cannot start {}: {err}", cmd[0]);
            std::process::exit(1)
        });
    let deadline = start + Duration::from_secs(60);
    loop {
        if std::path::Path::new(socket).exists() {
            let opt = grpcio::CallOption::default().timeout(Duration::from_millis(500));
            let client = VersionClient::new(
                ChannelBuilder::new(env.clone()).connect(&format!("unix:{socket}")),
            );
            if answered(&client.version_opt(&Empty::default(), opt)) {
                break;
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            eprintln!("ctrd-loadgen: daemon exited early: {status}");
            std::process::exit(1);
        }
        if Instant::now() > deadline {
            eprintln!("ctrd-loadgen: daemon not ready in 60 s");
            let _ = child.kill();
            std::process::exit(1);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let ms = start.elapsed().as_secs_f64() * 1000.0;
    println!("{{\"pid\": {}, \"ready_ms\": {ms:.1}}}", child.id());
}

/// Exits 1 with the error and its causes when a measurement failed.
fn measured(result: Result<(), content::ContentError>) {
    if let Err(err) = result {
        let mut message = format!("ctrd-loadgen: {err}");
        let mut source = std::error::Error::source(&err);
        while let Some(cause) = source {
            message.push_str(&format!(": {cause}"));
            source = cause.source();
        }
        eprintln!("{message}");
        std::process::exit(1);
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("version") if args.len() == 4 || args.len() == 5 => {
            let clients = args[2].parse().unwrap_or_else(|_| usage());
            let seconds = args[3].parse().unwrap_or_else(|_| usage());
            let connections = args
                .get(4)
                .map_or(1, |n| n.parse().unwrap_or_else(|_| usage()));
            version(&args[1], clients, seconds, connections);
        }
        Some("coldstart") if args.len() >= 4 && args[2] == "--" => coldstart(&args[1], &args[3..]),
        Some("ingest") if args.len() == 5 || (args.len() == 7 && args[5] == "--pid") => {
            let mib = args[2].parse().unwrap_or_else(|_| usage());
            let parallel = args[3].parse().unwrap_or_else(|_| usage());
            let pid = args
                .get(6)
                .map(|pid| pid.parse().unwrap_or_else(|_| usage()));
            measured(content::ingest(&args[1], mib, parallel, &args[4], pid));
        }
        Some("read") if args.len() == 3 => measured(content::read(&args[1], &args[2])),
        Some("rtt") if args.len() == 2 => limits::rtt(args[1].parse().unwrap_or_else(|_| usage())),
        Some("floor") if args.len() == 2 => limits::floor(&args[1]),
        Some("sha256") if args.len() == 2 => {
            limits::sha256(args[1].parse().unwrap_or_else(|_| usage()))
        }
        _ => usage(),
    }
}
