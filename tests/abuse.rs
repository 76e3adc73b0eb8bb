//! Abuse: requests that once crashed, stalled or bloated the daemon, kept as regression
//! checks with small counts (`scripts/abuse` runs the long versions). Each ends by checking
//! that the daemon is alive and answering.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{free_port, health_check, wait_for, Daemon, Options};
use ctrd::api::health::ServingStatus;
use grpcio::{CallOption, MetadataBuilder};

/// Generous bound for waiting on the daemon; never reached when things work.
const PATIENCE: Duration = Duration::from_secs(60);

/// `CTRD_ABUSE_SCALE` (set by `scripts/abuse`) multiplies the counts where CI uses fewer
/// than the original campaign.
fn scale() -> usize {
    std::env::var("CTRD_ABUSE_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
        .max(1)
}

/// A field of `/proc/<pid>/status` in kB or a count.
fn proc_status(pid: i32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    text.lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

fn rss_mb(pid: i32) -> u64 {
    proc_status(pid, "VmRSS") / 1024
}

fn threads(pid: i32) -> u64 {
    proc_status(pid, "Threads")
}

fn assert_answering(daemon: &Daemon) {
    assert_eq!(
        health_check(&daemon.socket).expect("health check answered"),
        ServingStatus::SERVING,
        "{}",
        daemon.logs()
    );
}

/// Sends `request` and reads the answer until the server closes the connection.
fn http_exchange(stream: &mut (impl Read + Write), request: &[u8]) -> String {
    stream.write_all(request).expect("send request");
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(err) => panic!(
                "the server neither answered nor closed: {err}; got {:?}",
                String::from_utf8_lossy(&answer)
            ),
        }
    }
    String::from_utf8_lossy(&answer).into_owned()
}

fn tcp(port: u16) -> TcpStream {
    let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
    stream
}

#[test]
fn http_requests_with_bodies_are_refused_without_reading_them() {
    let port = free_port();
    let daemon = Daemon::start_with(
        "abuse-http",
        Options {
            config: Some(format!(
                "version = 3\n[metrics]\naddress = '127.0.0.1:{port}'\n\
                 [debug]\naddress = '@DIR@/debug.sock'\n"
            )),
            ..Default::default()
        },
    );
    let debug = daemon.dir.join("debug.sock");
    let huge = b"POST /v1/metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\n";
    let answer = http_exchange(&mut tcp(port), huge);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    let mut unix = UnixStream::connect(&debug).expect("connect debug");
    unix.set_read_timeout(Some(PATIENCE)).expect("timeout");
    let answer = http_exchange(&mut unix, huge);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");

    let chunked = b"POST /debug/vars HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nffffffff\r\n";
    let answer = http_exchange(&mut tcp(port), chunked);
    assert!(answer.starts_with("HTTP/1.1 411"), "{answer}");

    // An HTTP/2 request line (or preface) gets an error, not a hung connection.
    let answer = http_exchange(&mut tcp(port), b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
    assert!(answer.starts_with("HTTP/1.1 505"), "{answer}");
    let answer = http_exchange(&mut tcp(port), b"GET /v1/metrics HTTP/2.0\r\n\r\n");
    assert!(answer.starts_with("HTTP/1.1 505"), "{answer}");

    // A head that never ends is cut off at the cap.
    let mut endless = b"GET /v1/metrics HTTP/1.1\r\nX-Filler: ".to_vec();
    endless.extend(vec![b'a'; 64 << 10]);
    let mut stream = tcp(port);
    // The server may close before all of it is written.
    let _ = stream.write_all(&endless);
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");

    // Still serving, on both listeners, with keep-alive.
    let mut stream = tcp(port);
    let get = b"GET /v1/metrics HTTP/1.1\r\nHost: x\r\n\r\n";
    stream.write_all(get).expect("send");
    let mut buf = [0u8; 64];
    let n = stream.read(&mut buf).expect("answer");
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    let answer = http_exchange(
        &mut unix_connect(&debug),
        b"GET /debug/vars HTTP/1.0\r\n\r\n",
    );
    assert!(answer.starts_with("HTTP/1.0 200"), "{answer}");
    assert_answering(&daemon);
}

/// Labels that keep a snapshot or blob from garbage collection while a test uses it.
fn gc_root() -> std::collections::HashMap<String, String> {
    [("containerd.io/gc.root".to_string(), "x".to_string())].into()
}

fn unix_connect(path: &Path) -> UnixStream {
    let stream = UnixStream::connect(path).expect("connect");
    stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
    stream
}

#[test]
fn idle_connection_floods_stay_under_the_thread_ceiling() {
    let port = free_port();
    let grpc_port = free_port();
    let daemon = Daemon::start_with(
        "abuse-idle",
        Options {
            config: Some(format!(
                "version = 3\n[grpc]\ntcp_address = '127.0.0.1:{grpc_port}'\n\
                 [metrics]\naddress = '127.0.0.1:{port}'\n\
                 [debug]\naddress = '@DIR@/debug.sock'\n"
            )),
            ..Default::default()
        },
    );
    let ttrpc = daemon.dir.join("ctrd.sock.ttrpc");
    let debug = daemon.dir.join("debug.sock");
    let pid = daemon.pid();
    // Sockets only: a file or directory the daemon has open for a moment (a store opening,
    // a clean-up walking a directory) must not shift the count.
    let fds = || {
        std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| {
            d.flatten()
                .filter(|e| {
                    std::fs::read_link(e.path())
                        .is_ok_and(|l| l.to_string_lossy().starts_with("socket:"))
                })
                .count()
        })
    };
    let before = fds();
    let mut held = Vec::new();
    for _ in 0..1000 {
        held.push(Box::new(tcp(port)) as Box<dyn Send>);
        held.push(Box::new(unix_connect(&ttrpc)));
        held.push(Box::new(unix_connect(&debug)));
        held.push(Box::new(unix_connect(&daemon.socket)));
        held.push(Box::new(tcp(grpc_port)));
    }
    // Wait until the listeners have taken in as many as they keep: 32 + 32 + 512 + 512 on
    // the capped ones, all 1,000 on gRPC's TCP listener. Less one: the start-up probe's
    // connection may still be open in `before` and close any time after.
    wait_for("the daemon to accept the connections", PATIENCE, || {
        (fds() >= before + 2087 && daemon.logs().contains("ctrd-grpc: connection limit (512)"))
            .then_some(())
    });
    let count = threads(pid);
    eprintln!(
        "abuse: {count} threads, {} MB RSS with 1000 idle connections on each of metrics, debug, ttrpc, gRPC unix, gRPC TCP",
        rss_mb(pid)
    );
    assert!(count < 64, "{count} threads with 5,000 idle connections");
    // A connection past the unix socket's cap is closed at once.
    let mut refused = unix_connect(&daemon.socket);
    refused.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut byte = [0u8; 1];
    assert_eq!(
        refused.read(&mut byte).map_err(|e| format!("{e:?}")),
        Ok(0),
        "a connection past the gRPC socket's cap is closed"
    );
    let logs = daemon.logs();
    assert!(
        logs.contains("connection limit (32) reached"),
        "no log line for the HTTP cap"
    );
    assert!(
        logs.contains("ctrd-grpc: connection limit (512) reached"),
        "no log line for the gRPC cap"
    );
    // The flood ends: the gRPC socket serves again once gRPC core has closed its ends (the
    // cap is counted afresh).
    drop(held);
    wait_for("gRPC to answer again", PATIENCE, || {
        health_check(&daemon.socket).ok()
    });
    assert_answering(&daemon);
    // And so do the HTTP listeners.
    let answer = wait_for("metrics to answer again", PATIENCE, || {
        let mut stream = tcp(port);
        stream.write_all(b"GET /v1/metrics HTTP/1.0\r\n\r\n").ok()?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).ok()?;
        (!answer.is_empty()).then_some(answer)
    });
    assert!(answer.starts_with("HTTP/1.0 200"), "{answer}");
}

/// An HTTP/2 frame header: length, type, flags, stream id.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// One connection that sends the HTTP/2 preface, then `pings` PING frames in batches, and
/// never reads; returns the highest RSS of `pid` seen between batches, once the server
/// closed the connection or everything was written.
fn ping_flood(socket: &Path, pings: usize, pid: i32) -> u64 {
    let mut stream = UnixStream::connect(socket).expect("connect");
    stream
        .set_write_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    bytes.extend(frame(4, 0, 0, &[]));
    let mut peak = 0;
    for i in 0..pings as u64 {
        bytes.extend(frame(6, 0, 0, &i.to_be_bytes()));
        if bytes.len() >= 17 * 1000 || i + 1 == pings as u64 {
            if stream.write_all(&bytes).is_err() {
                break;
            }
            bytes.clear();
            peak = peak.max(rss_mb(pid));
        }
    }
    peak.max(rss_mb(pid))
}

#[test]
fn a_ping_flood_stays_bounded_and_its_memory_returned() {
    let daemon = Daemon::start("abuse-ping");
    let pid = daemon.pid();
    assert_answering(&daemon);
    let idle = rss_mb(pid);
    let floods: Vec<_> = (0..16)
        .map(|_| {
            let socket = daemon.socket.clone();
            std::thread::spawn(move || ping_flood(&socket, 20_000, pid))
        })
        .collect();
    let mut peak = idle;
    for flood in floods {
        peak = peak.max(flood.join().expect("flood thread"));
    }
    assert!(
        peak < idle + 64,
        "RSS went from {idle} MB to {peak} MB during the flood"
    );
    let settled = wait_for("RSS to settle near idle", PATIENCE, || {
        let now = rss_mb(pid);
        (now < idle + 16).then_some(now)
    });
    eprintln!("abuse: ping flood 16 x 20000: idle {idle} MB, peak {peak} MB, after {settled} MB");
    assert_answering(&daemon);
}

/// A connection whose peer never reads leaves gRPC core with writes it cannot finish; it
/// hands that connection to a poller on its executor thread. With the executor's threads
/// switched off (a way to two fewer threads, tried and dropped) that poller ran on the
/// completion-queue thread and held it, and every other call waited for the stalled peer.
#[test]
fn a_peer_that_never_reads_stalls_no_other_call() {
    let daemon = Daemon::start("abuse-stalled-peer");
    let mut stalled = UnixStream::connect(&daemon.socket).expect("connect");
    stalled
        .set_write_timeout(Some(Duration::from_secs(1)))
        .expect("timeout");
    let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    bytes.extend(frame(4, 0, 0, &[]));
    stalled.write_all(&bytes).expect("preface");
    // Pings until the daemon stops reading: its acks fill the socket we never read.
    let mut sent = 0u64;
    let blocked = loop {
        let batch: Vec<u8> = (sent..sent + 1000)
            .flat_map(|i| frame(6, 0, 0, &i.to_be_bytes()))
            .collect();
        if let Err(err) = stalled.write_all(&batch) {
            // Blocked (not closed): the daemon holds the connection and stopped reading it.
            assert!(
                matches!(
                    err.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ),
                "after {sent} pings: {err}"
            );
            break true;
        }
        sent += 1000;
        if sent >= 100_000 {
            break false;
        }
    };
    assert!(
        blocked,
        "the daemon read {sent} pings without its answers backing up"
    );
    // A stalled completion-queue thread holds calls until the peer reads (never, here), so a
    // deadline of a few seconds tells the two apart on a loaded machine.
    let version = ctrd::api::version::VersionClient::new(daemon.channel());
    for call in 0..5 {
        let start = Instant::now();
        version
            .version_opt(
                &ctrd::api::Empty::new(),
                CallOption::default().timeout(Duration::from_secs(5)),
            )
            .unwrap_or_else(|err| {
                panic!("Version call {call} not answered within 5 s beside a stalled peer: {err}")
            });
        eprintln!(
            "abuse: Version beside a stalled peer ({sent} pings): {:?}",
            start.elapsed()
        );
    }
    drop(stalled);
    assert_answering(&daemon);
}

#[test]
fn a_subscriber_that_never_reads_is_dropped_within_its_budget() {
    use ctrd::api::events::{EventsClient, PublishRequest, SubscribeRequest};
    let daemon = Daemon::start("abuse-subscriber");
    let pid = daemon.pid();
    let idle = rss_mb(pid);
    // A client with a small fixed window, so that it truly stops taking events.
    let env = Arc::new(grpcio::EnvBuilder::new().cq_count(1).build());
    let stalled = grpcio::ChannelBuilder::new(env)
        .http2_bdp_probe(false)
        .stream_initial_window_size(64 << 10)
        .connect(&format!("unix:{}", daemon.socket.display()));
    let subscriber = EventsClient::new(stalled);
    let stream = subscriber
        .subscribe(&SubscribeRequest::default())
        .expect("subscribe");
    let publisher = EventsClient::new(daemon.channel());
    let mut headers = MetadataBuilder::new();
    headers
        .add_str("containerd-namespace", "default")
        .expect("header");
    let options = CallOption::default().headers(headers.build());
    let mut peak = idle;
    let events = 200 * scale() as u32;
    for i in 0..events {
        let request = PublishRequest {
            topic: "/abuse/big".into(),
            event: Some(ctrd::api::Any {
                type_url: "containerd.events.Abuse".into(),
                value: vec![(i % 251) as u8; (1 << 20) - 1024],
                ..Default::default()
            })
            .into(),
            ..Default::default()
        };
        publisher
            .publish_opt(&request, options.clone())
            .expect("publish");
        peak = peak.max(rss_mb(pid));
    }
    assert!(
        peak < idle + 64,
        "RSS went from {idle} MB to {peak} MB with a stalled subscriber"
    );
    assert!(
        daemon.logs().contains("dropping an event subscriber"),
        "no log line for the drop"
    );
    drop(stream);
    let settled = wait_for("RSS to settle near idle", PATIENCE, || {
        let now = rss_mb(pid);
        (now < idle + 16).then_some(now)
    });
    eprintln!(
        "abuse: stalled subscriber, {events} events of 1 MiB: idle {idle} MB, peak {peak} MB, after {settled} MB"
    );
    assert_answering(&daemon);
}

/// Lets a stream processor blocked on a FIFO go on, also when the test fails half-way.
struct Release(std::path::PathBuf);

impl Drop for Release {
    fn drop(&mut self) {
        use std::os::unix::fs::OpenOptionsExt;
        // Non-blocking: succeeds only while the processor waits on the other end.
        if let Ok(mut fifo) = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&self.0)
        {
            let _ = fifo.write_all(b"go\n");
        }
    }
}

#[test]
fn version_answers_within_a_second_during_a_long_apply() {
    use ctrd::api::diff::{ApplyRequest, DiffClient};
    use ctrd::api::snapshots::{PrepareSnapshotRequest, SnapshotsClient};
    use std::os::unix::fs::PermissionsExt;
    let scripts = common::TestDir::new("abuse-slow-scripts");
    let fifo = scripts.join("release");
    let made = std::process::Command::new(common::require_tool("mkfifo"))
        .arg(&fifo)
        .status()
        .expect("run mkfifo");
    assert!(made.success());
    let started = scripts.join("started");
    // A layer processor that holds its Apply until the test writes to the FIFO.
    let processor = scripts.write(
        "hold.sh",
        &format!(
            "#!/bin/sh\ntouch '{}'\nread go < '{}'\nexec cat\n",
            started.display(),
            fifo.display()
        ),
    );
    std::fs::set_permissions(&processor, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let daemon = Daemon::start_with(
        "abuse-slow",
        Options {
            config: Some(format!(
                "version = 3\n[stream_processors.'io.abuse.hold']\n\
                 accepts = ['application/vnd.abuse.held']\n\
                 returns = 'application/vnd.oci.image.layer.v1.tar'\npath = '{}'\n",
                processor.display()
            )),
            ..Default::default()
        },
    );
    let mut headers = MetadataBuilder::new();
    headers
        .add_str("containerd-namespace", "default")
        .expect("header");
    let options = CallOption::default().headers(headers.build());
    let mounts = SnapshotsClient::new(daemon.channel())
        .prepare_opt(
            &PrepareSnapshotRequest {
                snapshotter: "native".into(),
                key: "target".into(),
                labels: gc_root(),
                ..Default::default()
            },
            options.clone(),
        )
        .expect("prepare")
        .mounts;
    let layer = put_blob(&daemon, &[0u8; 1024], &options);
    let release = Release(fifo);
    let apply = {
        let (client, options) = (DiffClient::new(daemon.channel()), options.clone());
        std::thread::spawn(move || {
            client.apply_opt(
                &ApplyRequest {
                    diff: Some(ctrd::api::types::Descriptor {
                        media_type: "application/vnd.abuse.held".into(),
                        digest: layer.0,
                        size: layer.1,
                        ..Default::default()
                    })
                    .into(),
                    mounts,
                    ..Default::default()
                },
                options,
            )
        })
    };
    wait_for("the Apply to reach its processor", PATIENCE, || {
        started.exists().then_some(())
    });
    let asked = Instant::now();
    let answer = ctrd::api::version::VersionClient::new(daemon.channel()).version_opt(
        &ctrd::api::Empty::new(),
        CallOption::default().timeout(Duration::from_secs(1)),
    );
    let waited = asked.elapsed();
    assert!(!apply.is_finished(), "the Apply ended early");
    answer.expect("Version answered within 1 s while an Apply runs");
    drop(release);
    // The empty tar stream is not a valid layer: any status will do, it only has to end.
    let _ = apply.join().expect("apply thread");
    eprintln!("abuse: Version during a held Apply: {waited:?}");
    assert_answering(&daemon);
}

/// Writes `data` to the content store; returns its digest and size.
fn put_blob(daemon: &Daemon, data: &[u8], options: &CallOption) -> (String, i64) {
    use ctrd::api::content::{ContentClient, WriteAction, WriteContentRequest};
    use futures_util::{SinkExt, StreamExt};
    let client = ContentClient::new(daemon.channel());
    let digest = ctrd::content::Digest::of(data).to_string();
    let (mut tx, mut rx) = client.write_opt(options.clone()).expect("write");
    let messages = vec![
        WriteContentRequest {
            action: WriteAction::WRITE.into(),
            ref_: format!("abuse-{digest}"),
            data: data.to_vec(),
            ..Default::default()
        },
        WriteContentRequest {
            action: WriteAction::COMMIT.into(),
            offset: data.len() as i64,
            total: data.len() as i64,
            expected: digest.clone(),
            labels: [("containerd.io/gc.root".to_string(), "x".to_string())].into(),
            ..Default::default()
        },
    ];
    futures_executor::block_on(async {
        for message in messages {
            tx.send((message, grpcio::WriteFlags::default()))
                .await
                .expect("send");
            rx.next().await.expect("answer").expect("ok");
        }
    });
    (digest, data.len() as i64)
}

/// Calls Version every few milliseconds until `job` ends (at least once), each within 1 s;
/// returns the slowest answer and how many were asked.
fn versions_while<T>(
    daemon: &Daemon,
    job: &std::thread::JoinHandle<T>,
    during: &str,
) -> (Duration, usize) {
    let version = ctrd::api::version::VersionClient::new(daemon.channel());
    let mut slowest = Duration::ZERO;
    let mut asked = 0;
    while !job.is_finished() || asked == 0 {
        let start = Instant::now();
        version
            .version_opt(
                &ctrd::api::Empty::new(),
                CallOption::default().timeout(Duration::from_secs(1)),
            )
            .unwrap_or_else(|err| panic!("Version not answered within 1 s during {during}: {err}"));
        slowest = slowest.max(start.elapsed());
        asked += 1;
    }
    (slowest, asked)
}

#[test]
fn version_answers_within_a_second_during_a_long_diff() {
    use ctrd::api::diff::{DiffClient, DiffRequest};
    use ctrd::api::snapshots::{PrepareSnapshotRequest, SnapshotsClient};
    let daemon = Daemon::start("abuse-diff");
    let mut headers = MetadataBuilder::new();
    headers
        .add_str("containerd-namespace", "default")
        .expect("header");
    let options = CallOption::default().headers(headers.build());
    let snapshots = SnapshotsClient::new(daemon.channel());
    let prepare = |key: &str| {
        snapshots
            .prepare_opt(
                &PrepareSnapshotRequest {
                    snapshotter: "native".into(),
                    key: key.into(),
                    labels: gc_root(),
                    ..Default::default()
                },
                options.clone(),
            )
            .expect("prepare")
            .mounts
    };
    let left = prepare("left");
    let right = prepare("right");
    // Incompressible bytes (xorshift), so the gzip stage has real work: 32 MiB in CI, about
    // 200 MiB at scripts/abuse's default scale of 6.
    let mib = 32 * scale();
    let dir = Path::new(&right[0].source).to_path_buf();
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut chunk = vec![0u8; 1 << 20];
    for f in 0..mib / 4 {
        let mut file = std::fs::File::create(dir.join(format!("f{f}"))).expect("create");
        for _ in 0..4 {
            for word in chunk.chunks_exact_mut(8) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                word.copy_from_slice(&state.to_le_bytes());
            }
            file.write_all(&chunk).expect("write");
        }
    }
    let diff = {
        let (client, options) = (DiffClient::new(daemon.channel()), options.clone());
        std::thread::spawn(move || {
            let started = Instant::now();
            let result = client.diff_opt(
                &DiffRequest {
                    left,
                    right,
                    labels: gc_root(),
                    ..Default::default()
                },
                options,
            );
            (result, started.elapsed())
        })
    };
    let (slowest, asked) = versions_while(&daemon, &diff, "the Diff");
    let (result, took) = diff.join().expect("diff thread");
    let descriptor = result.expect("diff succeeded").diff.unwrap_or_default();
    assert!(descriptor.size > (mib as i64) << 20, "{descriptor:?}");
    eprintln!(
        "abuse: Diff of {mib} MiB took {took:?}; slowest of {asked} Version calls {slowest:?}"
    );
    assert!(
        slowest < took / 2,
        "a Version call waited {slowest:?} during a Diff of {took:?}"
    );
    assert_answering(&daemon);
}

#[test]
fn version_answers_within_a_second_during_a_large_prepare() {
    use ctrd::api::snapshots::{CommitSnapshotRequest, PrepareSnapshotRequest, SnapshotsClient};
    let daemon = Daemon::start("abuse-prepare");
    let mut headers = MetadataBuilder::new();
    headers
        .add_str("containerd-namespace", "default")
        .expect("header");
    let options = CallOption::default().headers(headers.build());
    let snapshots = SnapshotsClient::new(daemon.channel());
    let prepare = |key: &str, parent: &str| {
        snapshots.prepare_opt(
            &PrepareSnapshotRequest {
                snapshotter: "native".into(),
                key: key.into(),
                parent: parent.into(),
                labels: gc_root(),
                ..Default::default()
            },
            options.clone(),
        )
    };
    let base = prepare("base", "").expect("prepare base");
    let dir = Path::new(&base.mounts[0].source).to_path_buf();
    // About a second of copying in CI (the campaign's 20,000 files at scripts/abuse's scale).
    let files = 6000 * scale();
    for d in 0..files / 500 {
        let sub = dir.join(format!("d{d}"));
        std::fs::create_dir(&sub).expect("mkdir");
        for f in 0..500 {
            std::fs::write(sub.join(format!("f{f}")), b"x").expect("write");
        }
    }
    snapshots
        .commit_opt(
            &CommitSnapshotRequest {
                snapshotter: "native".into(),
                name: "many".into(),
                key: "base".into(),
                labels: gc_root(),
                ..Default::default()
            },
            options.clone(),
        )
        .expect("commit");
    let copy = {
        let (snapshots, options) = (snapshots.clone(), options.clone());
        std::thread::spawn(move || {
            let started = Instant::now();
            let result = snapshots.prepare_opt(
                &PrepareSnapshotRequest {
                    snapshotter: "native".into(),
                    key: "child".into(),
                    parent: "many".into(),
                    labels: gc_root(),
                    ..Default::default()
                },
                options,
            );
            (result, started.elapsed())
        })
    };
    let (slowest, asked) = versions_while(&daemon, &copy, "the Prepare");
    let (result, took) = copy.join().expect("prepare thread");
    result.expect("prepare succeeded");
    eprintln!(
        "abuse: Prepare copying {files} files took {took:?}; slowest of {asked} Version calls {slowest:?}"
    );
    // Answered beside the Prepare, not after it: a Version queued behind the copy would wait
    // nearly as long as the copy itself, on a fast machine as on a slow one.
    assert!(
        slowest < took / 2,
        "a Version call waited {slowest:?} during a Prepare of {took:?}"
    );
    assert_answering(&daemon);
}

/// The unary methods of every gRPC service, read from the protocol files.
fn unary_methods() -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("proto");
    let mut files = vec![root];
    let mut methods = Vec::new();
    while let Some(path) = files.pop() {
        if path.is_dir() {
            files.extend(
                std::fs::read_dir(&path)
                    .expect("dir")
                    .map(|e| e.expect("entry").path()),
            );
            continue;
        }
        if path.extension().map_or(true, |e| e != "proto")
            || path.to_string_lossy().contains("ttrpc")
        {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("proto");
        let package = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("package "))
            .map(|p| p.trim_end_matches(';').trim().to_string());
        let mut service = None;
        for line in text.lines().map(str::trim) {
            if let Some(rest) = line.strip_prefix("service ") {
                service = rest.split_whitespace().next().map(str::to_string);
            }
            if let (Some(rest), Some(package), Some(service)) =
                (line.strip_prefix("rpc "), &package, &service)
            {
                if line.matches("stream ").count() == 0 {
                    let name = rest.split('(').next().expect("name").trim();
                    methods.push(format!("/{package}.{service}/{name}"));
                }
            }
        }
    }
    methods.sort();
    methods
}

/// A small xorshift generator: reproducible from the printed seed.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn bytes(&mut self, max: usize) -> Vec<u8> {
        let len = (self.next() as usize) % (max + 1);
        (0..len).map(|_| self.next() as u8).collect()
    }
}

fn raw(bytes: &Vec<u8>, out: &mut grpcio::GrpcSlice) -> grpcio::Result<()> {
    *out = grpcio::GrpcSlice::from(bytes.as_slice());
    Ok(())
}

fn unraw(mut reader: grpcio::MessageReader) -> grpcio::Result<Vec<u8>> {
    let mut out = Vec::new();
    reader
        .read_to_end(&mut out)
        .map_err(|err| grpcio::Error::Codec(Box::new(err)))?;
    Ok(out)
}

#[test]
fn random_bytes_to_every_unary_method_get_a_status() {
    let daemon = Daemon::start("abuse-fuzz");
    let methods = unary_methods();
    assert!(methods.len() > 30, "only {} methods found", methods.len());
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as u64
        | 1;
    eprintln!("fuzz seed {seed}");
    let mut random = Random(seed);
    let client = grpcio::Client::new(daemon.channel());
    let mut headers = MetadataBuilder::new();
    headers
        .add_str("containerd-namespace", "fuzz")
        .expect("header");
    let options = CallOption::default()
        .headers(headers.build())
        .timeout(Duration::from_secs(10));
    for name in &methods {
        let method: grpcio::Method<Vec<u8>, Vec<u8>> = grpcio::Method {
            ty: grpcio::MethodType::Unary,
            name: Box::leak(name.clone().into_boxed_str()),
            req_mar: grpcio::Marshaller {
                ser: raw,
                de: unraw,
            },
            resp_mar: grpcio::Marshaller {
                ser: raw,
                de: unraw,
            },
        };
        for _ in 0..20 {
            let payload = random.bytes(256);
            match client.unary_call(&method, &payload, options.clone()) {
                Ok(_) => {}
                Err(grpcio::Error::RpcFailure(status)) => assert_ne!(
                    status.code(),
                    grpcio::RpcStatusCode::DEADLINE_EXCEEDED,
                    "{name} with {payload:?} hung"
                ),
                Err(err) => panic!("{name} with {payload:?}: {err}"),
            }
        }
    }
    // The one ttrpc method: each bad payload is answered on a connection that stays open.
    let mut ttrpc = unix_connect(&daemon.dir.join("ctrd.sock.ttrpc"));
    for stream_id in (1..40u32).step_by(2) {
        let mut request = ttrpc_request(
            "containerd.services.events.ttrpc.v1.Events",
            "Forward",
            &random.bytes(256),
        );
        let mut frame = (request.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(&stream_id.to_be_bytes());
        frame.extend_from_slice(&[1, 0]);
        frame.append(&mut request);
        ttrpc.write_all(&frame).expect("send ttrpc request");
        let mut header = [0u8; 10];
        ttrpc.read_exact(&mut header).expect("ttrpc answer");
        let len = u32::from_be_bytes(header[..4].try_into().expect("4 bytes")) as usize;
        assert_eq!(
            u32::from_be_bytes(header[4..8].try_into().expect("4")),
            stream_id
        );
        assert_eq!(header[8], 2, "a response frame");
        let mut body = vec![0u8; len];
        ttrpc.read_exact(&mut body).expect("ttrpc body");
    }
    assert_answering(&daemon);
    let version = ctrd::api::version::VersionClient::new(daemon.channel());
    version.version(&ctrd::api::Empty::new()).expect("version");
}

/// A ttrpc `Request{service=1, method=2, payload=3}` by hand.
fn ttrpc_request(service: &str, method: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for (field, bytes) in [
        (1u8, service.as_bytes()),
        (2, method.as_bytes()),
        (3, payload),
    ] {
        out.push(field << 3 | 2);
        let mut len = bytes.len();
        while len >= 0x80 {
            out.push((len as u8) | 0x80);
            len >>= 7;
        }
        out.push(len as u8);
        out.extend_from_slice(bytes);
    }
    out
}

#[test]
fn a_megabyte_name_gets_invalid_argument_with_a_short_message() {
    use ctrd::api::namespaces::{CreateNamespaceRequest, Namespace, NamespacesClient};
    let daemon = Daemon::start("abuse-name");
    let client = NamespacesClient::new(daemon.channel());
    let err = client
        .create(&CreateNamespaceRequest {
            namespace: Some(Namespace {
                name: "a".repeat(1 << 20),
                ..Default::default()
            })
            .into(),
            ..Default::default()
        })
        .expect_err("invalid");
    let grpcio::Error::RpcFailure(status) = err else {
        panic!("not a status: {err}");
    };
    assert_eq!(status.code(), grpcio::RpcStatusCode::INVALID_ARGUMENT);
    assert!(
        status.message().len() < 1024,
        "{} bytes",
        status.message().len()
    );
    assert!(
        status.message().contains("(1048576 bytes)"),
        "{}",
        status.message()
    );
    assert_answering(&daemon);
}

#[test]
fn an_empty_root_or_state_in_the_config_file_is_refused() {
    let dir = common::TestDir::new("abuse-root");
    for (text, message) in [
        (
            format!(
                "version = 3\nroot = ''\nstate = '{}/state'\n",
                dir.path.display()
            ),
            "root must be specified",
        ),
        (
            format!(
                "version = 3\nroot = '{}/root'\nstate = ''\n",
                dir.path.display()
            ),
            "state must be specified",
        ),
    ] {
        let config = dir.write("config.toml", &text);
        let mut child = std::process::Command::new(common::ctrd_bin())
            .args(["--config", &config.to_string_lossy()])
            .args(["--address", &dir.join("ctrd.sock").to_string_lossy()])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run ctrd");
        // A daemon that starts instead of refusing is stopped, not waited for.
        let exited = wait_for("ctrd to refuse the config", PATIENCE, || {
            let status = child.try_wait().expect("wait");
            if status.is_none() && common::health_check(&dir.join("ctrd.sock")).is_ok() {
                let _ = child.kill();
                let _ = child.wait();
                return Some(None);
            }
            status.map(Some)
        });
        let status = exited.expect("ctrd started with an empty root or state");
        assert_eq!(status.code(), Some(1));
        let mut stderr = String::new();
        child
            .stderr
            .take()
            .expect("piped")
            .read_to_string(&mut stderr)
            .expect("stderr");
        assert!(stderr.contains(message), "{stderr}");
    }
}
