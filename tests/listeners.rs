//! Every listener beside the gRPC unix socket: TCP with TLS and mutual TLS, ttrpc, metrics
//! and debug, driven by real clients (a gRPC client, ttrpc, curl, promtool, ctr).
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::{free_port, require_tool, Daemon, Options, TestDir};
use ctrd::api::events::{EventsClient, PublishRequest, SubscribeRequest};
use ctrd::api::events_ttrpc;
use ctrd::api::types::Envelope;
use ctrd::api::version::VersionClient;
use ctrd::api::{Any, Empty};
use futures_util::StreamExt;
use grpcio::{ChannelBuilder, ChannelCredentialsBuilder, EnvBuilder};

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new(require_tool("openssl"))
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, a server certificate for localhost, a client certificate from the CA, and a client
/// certificate from another CA.
fn make_pki(dir: &Path) {
    let ext = dir.join("san.ext");
    std::fs::write(&ext, "subjectAltName=DNS:localhost,IP:127.0.0.1\n").expect("ext");
    for ca in ["ca", "other-ca"] {
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                &format!("/CN={ca}"),
                "-keyout",
                &format!("{ca}.key"),
                "-out",
                &format!("{ca}.pem"),
            ],
        );
    }
    for (name, ca, extra) in [
        ("server", "ca", true),
        ("client", "ca", false),
        ("stranger", "other-ca", false),
    ] {
        openssl(
            dir,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                &format!("/CN={name}"),
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
            ],
        );
        let mut args = vec![
            "x509",
            "-req",
            "-in",
            &*format!("{name}.csr"),
            "-days",
            "2",
            "-CA",
            &*format!("{ca}.pem"),
            "-CAkey",
            &*format!("{ca}.key"),
            "-CAcreateserial",
            "-out",
            &*format!("{name}.pem"),
        ]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>();
        if extra {
            args.extend(["-extfile".into(), "san.ext".into()]);
        }
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        openssl(dir, &refs);
    }
}

fn read(dir: &Path, name: &str) -> Vec<u8> {
    std::fs::read(dir.join(name)).expect("read pem")
}

fn tls_version(
    port: u16,
    ca: Vec<u8>,
    client: Option<(Vec<u8>, Vec<u8>)>,
) -> grpcio::Result<String> {
    let env = Arc::new(EnvBuilder::new().cq_count(1).build());
    let mut creds = ChannelCredentialsBuilder::new().root_cert(ca);
    if let Some((cert, key)) = client {
        creds = creds.cert(cert, key);
    }
    let channel = ChannelBuilder::new(env)
        .set_credentials(creds.build())
        .connect(&format!("localhost:{port}"));
    let opt = grpcio::CallOption::default().timeout(Duration::from_secs(5));
    VersionClient::new(channel)
        .version_opt(&Empty::default(), opt)
        .map(|v| v.version)
}

fn tls_config(dir: &TestDir, port: u16, mutual: bool) -> String {
    let p = |n: &str| dir.join(n).to_string_lossy().into_owned();
    let mut text = format!(
        "version = 3\n[grpc]\ntcp_address = '127.0.0.1:{port}'\ntcp_tls_cert = '{}'\ntcp_tls_key = '{}'\n",
        p("server.pem"),
        p("server.key")
    );
    if mutual {
        text.push_str(&format!("tcp_tls_ca = '{}'\n", p("ca.pem")));
    }
    text
}

#[test]
fn tls_over_tcp_serves_version_to_a_client_that_trusts_the_ca() {
    let pki = TestDir::new("pki-tls");
    make_pki(&pki.path);
    let port = free_port();
    let _daemon = Daemon::start_with(
        "tls",
        Options {
            config: Some(tls_config(&pki, port, false)),
            ..Default::default()
        },
    );
    let version = tls_version(port, read(&pki.path, "ca.pem"), None).expect("version over TLS");
    assert_eq!(version, ctrd::VERSION);
    // A client that trusts another CA cannot talk to it.
    assert!(tls_version(port, read(&pki.path, "other-ca.pem"), None).is_err());
}

#[test]
fn mutual_tls_requires_a_client_certificate_from_the_ca() {
    let pki = TestDir::new("pki-mtls");
    make_pki(&pki.path);
    let port = free_port();
    let _daemon = Daemon::start_with(
        "mtls",
        Options {
            config: Some(tls_config(&pki, port, true)),
            ..Default::default()
        },
    );
    let ca = || read(&pki.path, "ca.pem");
    assert!(
        tls_version(port, ca(), None).is_err(),
        "no client certificate"
    );
    let stranger = (
        read(&pki.path, "stranger.pem"),
        read(&pki.path, "stranger.key"),
    );
    assert!(tls_version(port, ca(), Some(stranger)).is_err(), "other CA");
    let client = (read(&pki.path, "client.pem"), read(&pki.path, "client.key"));
    assert_eq!(
        tls_version(port, ca(), Some(client)).expect("mtls"),
        ctrd::VERSION
    );
}

fn start_fails(name: &str, config: String, needle: &str) {
    let dir = TestDir::new(name);
    let file = dir.write("config.toml", &config);
    let socket = dir.join("ctrd.sock");
    let out = common::run_ctrd(&[
        "--config",
        file.to_str().expect("utf8"),
        "--root",
        dir.join("root").to_str().expect("utf8"),
        "--state",
        dir.join("state").to_str().expect("utf8"),
        "--address",
        socket.to_str().expect("utf8"),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{name}: {err}");
    assert!(err.contains(needle), "{name}: {needle:?} not in {err}");
    assert!(!socket.exists(), "{name}: socket left");
}

#[test]
fn bad_tls_material_fails_start_up_naming_the_file() {
    let pki = TestDir::new("pki-bad");
    make_pki(&pki.path);
    let port = free_port();
    let p = |n: &str| pki.join(n).to_string_lossy().into_owned();
    let missing = tls_config(&pki, port, false).replace(&p("server.key"), &p("missing.key"));
    start_fails("tls-missing", missing, &format!("key {}", p("missing.key")));
    let mismatched = tls_config(&pki, port, false).replace(&p("server.key"), &p("client.key"));
    start_fails(
        "tls-mismatch",
        mismatched,
        &format!("key {}: does not match", p("client.key")),
    );
    std::fs::write(pki.join("junk.pem"), "this is not PEM\n").expect("junk");
    let junk_ca = tls_config(&pki, port, true).replace(&p("ca.pem"), &p("junk.pem"));
    start_fails("tls-junk-ca", junk_ca, &format!("CA {}", p("junk.pem")));
}

/// Streams in these tests end (with DEADLINE_EXCEEDED) rather than hang.
fn deadline() -> grpcio::CallOption {
    grpcio::CallOption::default().timeout(common::START_DEADLINE)
}

/// Publishes `topic` in namespace `ns` every few milliseconds until the returned guard is
/// dropped: a new subscription registers asynchronously, so a single publish could come
/// before it.
fn keep_publishing(channel: grpcio::Channel, ns: &'static str, topic: &'static str) -> impl Drop {
    struct Stop(
        Arc<std::sync::atomic::AtomicBool>,
        Option<std::thread::JoinHandle<()>>,
    );
    impl Drop for Stop {
        fn drop(&mut self) {
            self.0.store(true, std::sync::atomic::Ordering::SeqCst);
            if let Some(join) = self.1.take() {
                let _ = join.join();
            }
        }
    }
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    let join = std::thread::spawn(move || {
        let events = EventsClient::new(channel);
        let deadline = std::time::Instant::now() + common::START_DEADLINE;
        while !flag.load(std::sync::atomic::Ordering::SeqCst)
            && std::time::Instant::now() < deadline
        {
            let mut headers = grpcio::MetadataBuilder::new();
            headers.add_str("containerd-namespace", ns).expect("header");
            let _ = events.publish_opt(
                &PublishRequest {
                    topic: topic.into(),
                    event: Some(any("containerd.events.Test")).into(),
                    ..Default::default()
                },
                grpcio::CallOption::default().headers(headers.build()),
            );
            std::thread::yield_now();
        }
    });
    Stop(stop, Some(join))
}

fn any(type_url: &str) -> Any {
    Any {
        type_url: type_url.into(),
        value: vec![1, 2, 3],
        ..Default::default()
    }
}

#[test]
fn ttrpc_forward_reaches_grpc_subscribers_and_ctr_events() {
    let daemon = Daemon::start("ttrpc");
    let ttrpc_socket = format!("{}.ttrpc", daemon.socket.display());
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&ttrpc_socket)
            .expect("ttrpc socket")
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o660);

    let events = EventsClient::new(daemon.channel());
    let mut stream = events
        .subscribe_opt(
            &SubscribeRequest {
                filters: vec!["topic~=^/tasks/".into()],
                ..Default::default()
            },
            deadline(),
        )
        .expect("subscribe");
    let mut ctr_events = Command::new(require_tool("ctr"))
        .arg("--address")
        .arg(&daemon.socket)
        .arg("events")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("ctr events");

    // ctr subscribes asynchronously: forward until both subscribers exist.
    let client = ttrpc::Client::connect(&format!("unix://{ttrpc_socket}")).expect("ttrpc connect");
    let forwarder = events_ttrpc::EventsClient::new(client);
    common::wait_for("two subscribers", common::START_DEADLINE, || {
        let envelope = Envelope {
            timestamp: Some(ctrd::events::now()).into(),
            namespace: "default".into(),
            topic: "/tasks/exit".into(),
            // A real TaskExit (container_id = "c1"), so ctr can decode and print it.
            event: Some(Any {
                type_url: "containerd.events.TaskExit".into(),
                value: vec![0x0a, 0x02, b'c', b'1'],
                ..Default::default()
            })
            .into(),
            ..Default::default()
        };
        forwarder
            .forward(
                ttrpc::context::with_timeout(5_000_000_000),
                &events_ttrpc::ForwardRequest {
                    envelope: Some(envelope).into(),
                    ..Default::default()
                },
            )
            .expect("forward");
        ctr_has_line(&mut ctr_events).then_some(())
    });
    let first = futures_executor::block_on(stream.next())
        .expect("an event")
        .expect("ok");
    assert_eq!(first.topic, "/tasks/exit");
    assert_eq!(first.namespace, "default");
    let _ = ctr_events.kill();
    let _ = ctr_events.wait();

    // A bad envelope is refused with InvalidArgument and the socket keeps serving.
    let err = forwarder
        .forward(
            ttrpc::context::with_timeout(5_000_000_000),
            &events_ttrpc::ForwardRequest::default(),
        )
        .expect_err("no envelope");
    match err {
        ttrpc::Error::RpcStatus(status) => {
            assert_eq!(status.code(), ttrpc::Code::INVALID_ARGUMENT)
        }
        other => panic!("unexpected {other:?}"),
    }
}

/// Whether `ctr events` has printed the forwarded event (a non-blocking read of its
/// stdout, so the caller's deadline loop stays in charge).
fn ctr_has_line(child: &mut std::process::Child) -> bool {
    use std::io::Read;
    use std::os::fd::AsRawFd;
    let stdout = child.stdout.as_mut().expect("stdout");
    let _ = ctrd::sys::set_nonblocking(stdout.as_raw_fd());
    let mut buf = [0u8; 4096];
    match stdout.read(&mut buf) {
        Ok(n) if n > 0 => String::from_utf8_lossy(&buf[..n]).contains("/tasks/exit"),
        _ => false,
    }
}

#[test]
fn namespace_header_reaches_published_events() {
    let daemon = Daemon::start("publish");
    let events = EventsClient::new(daemon.channel());
    let mut stream = events
        .subscribe_opt(&SubscribeRequest::default(), deadline())
        .expect("subscribe");
    let publish = |ns: Option<&str>, topic: &str| {
        let mut opt = grpcio::CallOption::default();
        if let Some(ns) = ns {
            let mut headers = grpcio::MetadataBuilder::new();
            headers.add_str("containerd-namespace", ns).expect("header");
            opt = opt.headers(headers.build());
        }
        events.publish_opt(
            &PublishRequest {
                topic: topic.into(),
                event: Some(any("containerd.events.Test")).into(),
                ..Default::default()
            },
            opt,
        )
    };
    let code = |r: grpcio::Result<Empty>| match r.expect_err("should fail") {
        grpcio::Error::RpcFailure(s) => (s.code(), s.message().to_string()),
        other => panic!("unexpected {other:?}"),
    };
    let (c, m) = code(publish(None, "/test/one"));
    assert_eq!(c, grpcio::RpcStatusCode::FAILED_PRECONDITION);
    assert_eq!(m, "failed publishing event: namespace is required");
    let (c, m) = code(publish(Some("-bad-"), "/test/one"));
    assert_eq!(c, grpcio::RpcStatusCode::INVALID_ARGUMENT);
    assert!(m.contains("namespace validation"), "{m}");
    let (c, _) = code(publish(Some("ns1"), "no-slash"));
    assert_eq!(c, grpcio::RpcStatusCode::INVALID_ARGUMENT);
    publish(Some("ns1"), "/test/one").expect("publish");
    let publisher = keep_publishing(daemon.channel(), "ns1", "/test/one");
    let got = futures_executor::block_on(stream.next())
        .expect("event")
        .expect("ok");
    drop(publisher);
    assert_eq!(got.namespace, "ns1");
    assert_eq!(got.topic, "/test/one");
    assert_eq!(got.event.type_url, "containerd.events.Test");
}

#[test]
fn metrics_count_exactly_the_calls_made_and_pass_promtool() {
    let port = free_port();
    let daemon = Daemon::start_with(
        "metrics",
        Options {
            config: Some(format!(
                "version = 3\n[metrics]\naddress = '127.0.0.1:{port}'\n"
            )),
            ..Default::default()
        },
    );
    let scrape = || {
        let out = Command::new(require_tool("curl"))
            .args(["-sf", &format!("http://127.0.0.1:{port}/v1/metrics")])
            .output()
            .expect("curl");
        assert!(out.status.success(), "scrape failed");
        String::from_utf8(out.stdout).expect("utf8")
    };
    let handled = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| l.starts_with("grpc_server_handled_total{"))
            .map(String::from)
            .collect()
    };
    // The harness's readiness probes used Health/Check.
    let idle = scrape();
    assert!(
        idle.lines().count() < 150,
        "idle scrape has {} lines",
        idle.lines().count()
    );
    assert!(idle.contains("ctrd_build_info{"), "{idle}");
    assert!(idle.contains("process_resident_memory_bytes"), "{idle}");

    daemon.ctr_ok(&["version"]);
    daemon.ctr_ok(&["plugins", "ls"]);
    let bad = daemon.ctr(&["plugins", "ls", "type=="]);
    assert!(!bad.status.success());
    let text = scrape();
    let lines = handled(&text);
    let find = |method: &str, code: &str| {
        lines.iter().any(|l| {
            l.contains(&format!("grpc_method=\"{method}\""))
                && l.contains(&format!("grpc_code=\"{code}\""))
        })
    };
    assert!(find("Version", "OK"), "{text}");
    assert!(find("Server", "OK"), "{text}");
    assert!(find("Plugins", "OK"), "{text}");
    assert!(find("Plugins", "InvalidArgument"), "{text}");
    assert!(find("Check", "OK"), "{text}");
    let methods: std::collections::BTreeSet<&str> = lines
        .iter()
        .filter_map(|l| l.split("grpc_method=\"").nth(1)?.split('"').next())
        .collect();
    assert_eq!(
        methods.into_iter().collect::<Vec<_>>(),
        ["Check", "Plugins", "Server", "Version"],
        "only called methods have series"
    );
    let path = daemon.dir.write("metrics.txt", &text);
    let check = Command::new(require_tool("promtool"))
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(&path).expect("open"))
        .output()
        .expect("promtool");
    assert!(
        check.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    let missing = Command::new(require_tool("curl"))
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("http://127.0.0.1:{port}/nope"),
        ])
        .output()
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&missing.stdout), "404");
}

#[test]
fn debug_socket_serves_vars_and_thread_dump() {
    let daemon = Daemon::start_with(
        "debug",
        Options {
            config: Some("version = 3\n[debug]\naddress = '@DIR@/debug.sock'\n".into()),
            ..Default::default()
        },
    );
    let sock = daemon.dir.join("debug.sock");
    let curl = |path: &str| {
        let out = Command::new(require_tool("curl"))
            .args([
                "-sf",
                "--unix-socket",
                sock.to_str().expect("utf8"),
                &format!("http://x{path}"),
            ])
            .output()
            .expect("curl");
        assert!(out.status.success(), "curl {path} failed");
        out.stdout
    };
    let vars = String::from_utf8(curl("/debug/vars")).expect("utf8");
    assert!(
        vars.trim_start().starts_with('{') && vars.trim_end().ends_with('}'),
        "{vars}"
    );
    assert!(vars.contains("\"threads\""), "{vars}");
    assert!(vars.contains("\"plugins\": 30"), "{vars}");
    let threads = String::from_utf8(curl("/debug/pprof/threads")).expect("utf8");
    assert!(threads.contains("\"ctrd-debug\""), "{threads}");
    let index = String::from_utf8(curl("/debug/pprof/")).expect("utf8");
    assert!(index.contains("profile"), "{index}");

    // Keep the daemon a little busy while a 2-second CPU profile is taken.
    let busy = {
        let channel = daemon.channel();
        std::thread::spawn(move || {
            let client = VersionClient::new(channel);
            let end = std::time::Instant::now() + Duration::from_secs(2);
            while std::time::Instant::now() < end {
                let _ = client.version(&Empty::default());
            }
        })
    };
    let bytes = curl("/debug/pprof/profile?seconds=2");
    busy.join().expect("load thread");
    let profile = <ctrd::api::profile::Profile as protobuf::Message>::parse_from_bytes(&bytes)
        .expect("a pprof profile");
    let name = |i: i64| profile.string_table[i as usize].clone();
    let types: Vec<(String, String)> = profile
        .sample_type
        .iter()
        .map(|t| (name(t.type_), name(t.unit)))
        .collect();
    assert_eq!(
        types,
        [
            ("samples".to_string(), "count".to_string()),
            ("cpu".to_string(), "nanoseconds".to_string())
        ]
    );
    assert!(profile.duration_nanos >= 2_000_000_000);
    assert!(!profile.mapping.is_empty());
}

#[test]
fn sigterm_with_a_subscribe_stream_open_exits_quickly() {
    let mut daemon = Daemon::start("substop");
    let events = EventsClient::new(daemon.channel());
    let mut stream = events
        .subscribe_opt(&SubscribeRequest::default(), deadline())
        .expect("subscribe");
    let publisher = keep_publishing(daemon.channel(), "default", "/x");
    futures_executor::block_on(stream.next())
        .expect("stream open")
        .expect("ok");
    drop(publisher);
    let (status, took) = daemon.terminate();
    assert!(status.success(), "{status}:\n{}", daemon.logs());
    assert!(took < Duration::from_secs(2), "took {took:?}");
    assert!(!Path::new(&format!("{}.ttrpc", daemon.socket.display())).exists());
}
