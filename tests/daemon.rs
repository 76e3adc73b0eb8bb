//! The daemon end to end: Debian's `ctr` and a gRPC client against the real binary.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::time::Duration;

use common::{free_port, Daemon, Options};
use ctrd::api::health::{HealthCheckRequest, HealthClient, ServingStatus};
use ctrd::api::introspection::{IntrospectionClient, PluginsRequest};
use ctrd::api::version::VersionClient;
use ctrd::api::Empty;

#[test]
fn ctr_version_reports_the_server_version_and_uuid() {
    let daemon = Daemon::start("version");
    let out = daemon.ctr_ok(&["version"]);
    assert!(out.contains("Server:"), "{out}");
    assert!(
        out.contains(&format!("Version:  {}", ctrd::VERSION)),
        "{out}"
    );
    let uuid_line = out
        .lines()
        .find(|l| l.trim_start().starts_with("UUID:"))
        .expect("uuid line");
    let uuid = uuid_line.split_whitespace().last().expect("uuid");
    assert_eq!(uuid.len(), 36, "{uuid_line}");
    // The uuid persists under the introspection plugin's root.
    let stored = std::fs::read_to_string(
        daemon
            .dir
            .join("root/io.containerd.grpc.v1.introspection/uuid"),
    )
    .expect("uuid file");
    assert_eq!(stored.trim(), uuid);
}

#[test]
fn ctr_plugins_ls_lists_plugins_in_init_order_with_status() {
    let daemon = Daemon::start("plugins");
    let out = daemon.ctr_ok(&["plugins", "ls"]);
    let rows: Vec<Vec<&str>> = out
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    let ids: Vec<(&str, &str)> = rows.iter().map(|r| (r[0], r[1])).collect();
    assert_eq!(
        ids,
        [
            ("io.containerd.warning.v1", "deprecations"),
            ("io.containerd.event.v1", "exchange"),
            ("io.containerd.grpc.v1", "events"),
            ("io.containerd.content.v1", "content"),
            ("io.containerd.snapshotter.v1", "native"),
            ("io.containerd.snapshotter.v1", "overlayfs"),
            ("io.containerd.metadata.v1", "bolt"),
            ("io.containerd.service.v1", "content-service"),
            ("io.containerd.service.v1", "snapshots-service"),
            ("io.containerd.service.v1", "namespaces-service"),
            ("io.containerd.gc.v1", "scheduler"),
            ("io.containerd.service.v1", "images-service"),
            ("io.containerd.service.v1", "containers-service"),
            ("io.containerd.differ.v1", "walking"),
            ("io.containerd.service.v1", "diff-service"),
            ("io.containerd.runtime.v2", "task"),
            ("io.containerd.service.v1", "tasks-service"),
            ("io.containerd.service.v1", "introspection-service"),
            ("io.containerd.grpc.v1", "content"),
            ("io.containerd.grpc.v1", "snapshots"),
            ("io.containerd.grpc.v1", "namespaces"),
            ("io.containerd.lease.v1", "manager"),
            ("io.containerd.grpc.v1", "leases"),
            ("io.containerd.grpc.v1", "images"),
            ("io.containerd.grpc.v1", "containers"),
            ("io.containerd.grpc.v1", "diff"),
            ("io.containerd.grpc.v1", "tasks"),
            ("io.containerd.grpc.v1", "introspection"),
            ("io.containerd.grpc.v1", "version"),
            ("io.containerd.grpc.v1", "healthcheck"),
        ],
        "{out}"
    );
    assert!(rows.iter().all(|r| r.last() == Some(&"ok")), "{out}");
    let filtered = daemon.ctr_ok(&["plugins", "ls", "id==version"]);
    assert_eq!(filtered.lines().count(), 2, "{filtered}");
}

#[test]
fn grpc_clients_see_version_health_and_plugins() {
    let daemon = Daemon::start("grpc");
    let version = VersionClient::new(daemon.channel())
        .version(&Empty::default())
        .expect("version");
    assert_eq!(version.version, ctrd::VERSION);

    let health = HealthClient::new(daemon.channel());
    let serving = health.check(&HealthCheckRequest::default()).expect("check");
    assert_eq!(
        serving.status.enum_value_or_default(),
        ServingStatus::SERVING
    );
    let unknown = health
        .check(&HealthCheckRequest {
            service: "nope".into(),
            ..Default::default()
        })
        .expect_err("unknown service");
    match unknown {
        grpcio::Error::RpcFailure(status) => {
            assert_eq!(status.code(), grpcio::RpcStatusCode::NOT_FOUND);
            assert_eq!(status.message(), "unknown service");
        }
        other => panic!("unexpected {other:?}"),
    }

    let intro = IntrospectionClient::new(daemon.channel());
    let bad = intro
        .plugins(&PluginsRequest {
            filters: vec!["type==".into(), "id~=(".into()],
            ..Default::default()
        })
        .expect_err("bad filter");
    match bad {
        grpcio::Error::RpcFailure(status) => {
            assert_eq!(status.code(), grpcio::RpcStatusCode::INVALID_ARGUMENT)
        }
        other => panic!("unexpected {other:?}"),
    }
    // The daemon keeps serving after a bad request.
    let server = intro.server(&Empty::default()).expect("server");
    assert_eq!(server.pid, u64::from(daemon.pid() as u32));
    assert!(server.pidns > 0);
}

#[test]
fn sigterm_exits_zero_quickly_and_removes_the_socket() {
    let mut daemon = Daemon::start("sigterm");
    let mode = std::fs::metadata(&daemon.socket)
        .expect("socket")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o660);
    let (status, took) = daemon.terminate();
    assert!(status.success(), "exit {status}:\n{}", daemon.logs());
    assert!(took < Duration::from_secs(2), "took {took:?}");
    assert!(!daemon.socket.exists(), "socket left behind");
}

#[test]
fn sigterm_with_an_open_watch_stream_still_exits_quickly() {
    let mut daemon = Daemon::start("watch");
    let health = HealthClient::new(daemon.channel());
    let mut stream = health.watch(&HealthCheckRequest::default()).expect("watch");
    let first = futures_executor::block_on(futures_util::StreamExt::next(&mut stream))
        .expect("first message")
        .expect("ok");
    assert_eq!(first.status.enum_value_or_default(), ServingStatus::SERVING);
    let (status, took) = daemon.terminate();
    assert!(status.success(), "exit {status}:\n{}", daemon.logs());
    assert!(took < Duration::from_secs(2), "took {took:?}");
}

#[test]
fn sigusr1_writes_every_thread_stack_to_a_file() {
    let mut daemon = Daemon::start_with(
        "usr1",
        Options {
            config: Some("version = 3\ntemp = '@DIR@/tmp'\n".into()),
            ..Default::default()
        },
    );
    daemon.signal(libc::SIGUSR1);
    let dump = daemon
        .dir
        .join(&format!("tmp/ctrd.{}.stacks.log", daemon.pid()));
    let text = common::wait_for("stack dump", common::START_DEADLINE, || {
        let text = std::fs::read_to_string(&dump).ok()?;
        (!text.is_empty()).then_some(text)
    });
    assert!(text.contains("\"ctrd-grpc-cq-0\""), "{text}");
    // The main thread reads the signals itself.
    assert!(text.contains("\"ctrd\":"), "{text}");
    assert!(daemon.logs().contains("BEGIN thread stack dump"));
    let (status, _) = daemon.terminate();
    assert!(status.success());
}

#[test]
fn notify_socket_gets_ready_then_stopping() {
    let dir = common::TestDir::new("notify");
    let notify_path = dir.join("notify.sock");
    let receiver = UnixDatagram::bind(&notify_path).expect("bind notify socket");
    receiver
        .set_read_timeout(Some(common::START_DEADLINE))
        .expect("timeout");
    let mut daemon = Daemon::start_with(
        "notify",
        Options {
            env: vec![(
                "NOTIFY_SOCKET".into(),
                notify_path.to_string_lossy().into_owned(),
            )],
            ..Default::default()
        },
    );
    let mut buf = [0u8; 64];
    let n = receiver.recv(&mut buf).expect("READY=1");
    assert_eq!(&buf[..n], b"READY=1");
    let (status, _) = daemon.terminate();
    assert!(status.success());
    let n = receiver.recv(&mut buf).expect("STOPPING=1");
    assert_eq!(&buf[..n], b"STOPPING=1");
}

#[test]
fn plugin_dir_is_reported_as_a_deprecation_and_never_loaded() {
    let daemon = Daemon::start_with(
        "plugindir",
        Options {
            config: Some("version = 3\nplugin_dir = '@DIR@/plugins'\n".into()),
            ..Default::default()
        },
    );
    let intro = IntrospectionClient::new(daemon.channel());
    let server = intro.server(&Empty::default()).expect("server");
    let ids: Vec<&str> = server.deprecations.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, ["io.containerd.deprecation/go-plugin-library"]);
    assert!(server.deprecations[0].last_occurrence.seconds > 0);
    assert!(daemon.logs().contains("never loads dynamic plugins"));
}

#[test]
fn oom_score_is_applied_to_the_daemon() {
    let daemon = Daemon::start_with(
        "oomscore",
        Options {
            config: Some("version = 3\noom_score = 500\n".into()),
            ..Default::default()
        },
    );
    let adj = std::fs::read_to_string(format!("/proc/{}/oom_score_adj", daemon.pid()))
        .expect("oom_score_adj");
    // Raising the score is always permitted (lowering it needs CAP_SYS_RESOURCE).
    assert_eq!(adj.trim(), "500");
}

#[test]
fn max_recv_message_size_is_enforced() {
    let daemon = Daemon::start_with(
        "msgsize",
        Options {
            config: Some("version = 3\n[grpc]\nmax_recv_message_size = 64\n".into()),
            ..Default::default()
        },
    );
    let intro = IntrospectionClient::new(daemon.channel());
    let big = PluginsRequest {
        filters: vec!["id==".to_string() + &"x".repeat(200)],
        ..Default::default()
    };
    match intro.plugins(&big).expect_err("too large") {
        grpcio::Error::RpcFailure(status) => {
            assert_eq!(status.code(), grpcio::RpcStatusCode::RESOURCE_EXHAUSTED)
        }
        other => panic!("unexpected {other:?}"),
    }
    let small = intro
        .plugins(&PluginsRequest {
            filters: vec!["id==version".into()],
            ..Default::default()
        })
        .expect("small request");
    assert_eq!(small.plugins.len(), 1);
}

#[test]
fn ctr_namespace_reaches_the_server() {
    let daemon = Daemon::start("nsheaders");
    daemon.ctr_ok(&["--namespace", "edge-1", "plugins", "ls"]);
    let logs = daemon.logs();
    assert!(
        logs.contains(
            "rpc /containerd.services.introspection.v1.Introspection/Plugins namespace=\\\"edge-1\\\""
        ),
        "{logs}"
    );
}

#[test]
fn ctr_namespaces_create_list_label_remove() {
    let daemon = Daemon::start("namespaces");
    daemon.ctr_ok(&["namespaces", "create", "edge", "site=north"]);
    let dup = daemon.ctr(&["namespaces", "create", "edge"]);
    assert!(!dup.status.success());
    assert!(
        String::from_utf8_lossy(&dup.stderr).contains("namespace \"edge\": already exists"),
        "{}",
        String::from_utf8_lossy(&dup.stderr)
    );
    // Labelling an unknown namespace creates it, as in containerd.
    daemon.ctr_ok(&["namespaces", "label", "made-by-label", "a=b"]);
    let list = daemon.ctr_ok(&["namespaces", "ls"]);
    let rows: Vec<Vec<&str>> = list
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows,
        [vec!["edge", "site=north"], vec!["made-by-label", "a=b"]],
        "{list}"
    );
    let bad = daemon.ctr(&["namespaces", "create", "--", "-bad-"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("must match"));
    daemon.ctr_ok(&["namespaces", "label", "edge", "site="]);
    daemon.ctr_ok(&["namespaces", "rm", "edge", "made-by-label"]);
    assert_eq!(daemon.ctr_ok(&["namespaces", "ls", "-q"]).trim(), "");
    // Namespaces live in the metadata store's file under the bolt plugin's root.
    daemon.ctr_ok(&["namespaces", "create", "kept"]);
    let root = daemon.dir.join("root");
    assert!(root
        .join("io.containerd.metadata.v1.bolt/meta.redb")
        .exists());
}

/// ctrd's own threads in an idle daemon with the metrics and debug listeners on: the main
/// thread (signals, timers and every waiting future), one thread per listener, and the gRPC
/// server's completion queue.
const CTRD_IDLE: [&str; 5] = [
    "ctrd",
    "ctrd-grpc-cq-0",
    "ctrd-ttrpc",
    "ctrd-metrics",
    "ctrd-debug",
];

/// ctrd's threads that run for a while at start-up and end on their own.
const CTRD_START_UP: [&str; 4] = ["ctrd-init", "ctrd-recover", "ctrd-ovl-check", "ctrd-gc"];

/// gRPC core's own threads, named by gRPC core and cut to 15 bytes by the kernel: the
/// default executor, the timer manager, the event engine's timer and the threads of its
/// pool. The resolver executor (`resolver-execut`) is not among them: ctrd starts gRPC core
/// without it (src/grpc_core.cc).
const GRPC_CORE: [&str; 4] = [
    "default-executo",
    "grpc_global_tim",
    "timer_manager",
    "event_engine",
];

/// gRPC core's idle threads outside its event engine's pool (one of each).
const GRPC_CORE_FIXED: usize = 3;

/// The ceiling for an idle daemon: ctrd's 5; gRPC core's 3 and its event engine's pool,
/// which keeps one waiting thread per configured CPU (2 to 16; no poller holds one, see
/// src/grpc_core.cc) and starts more while busy (they leave after 30 s in which no work
/// reached them, which may be never), so up to twice as many and two more are allowed:
/// 5 + 3 + 6 = 14 on a 2-CPU machine, where an idle daemon runs 10. A thread per
/// connection or per call would pass it.
fn idle_ceiling() -> usize {
    // gRPC core counts configured CPUs (sysconf(_SC_NPROCESSORS_CONF)), as glibc does:
    // the cpuN entries of /sys/devices/system/cpu.
    let cpus = std::fs::read_dir("/sys/devices/system/cpu")
        .unwrap()
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| {
            name.strip_prefix("cpu")
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        })
        .count();
    CTRD_IDLE.len() + GRPC_CORE_FIXED + 2 * cpus.clamp(2, 16) + 2
}

fn thread_names(pid: i32) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .map(|comm| comm.trim_end().to_string())
        .collect();
    names.sort();
    names
}

#[test]
fn idle_threads_are_few_named_and_listed_by_the_debug_endpoint_and_the_docs() {
    let port = free_port();
    let daemon = Daemon::start_with(
        "threads",
        Options {
            config: Some(format!(
                "version = 3\n[metrics]\naddress = '127.0.0.1:{port}'\n\
                 [debug]\naddress = '@DIR@/debug.sock'\n"
            )),
            ..Default::default()
        },
    );
    let ceiling = idle_ceiling();
    let mut ctrd_idle = CTRD_IDLE.to_vec();
    ctrd_idle.sort_unstable();
    // Ready; wait for the start-up threads to end (the overlayfs check's unmount waits for
    // an RCU grace period). Every thread seen meanwhile must be one of the known ones.
    let idle = common::wait_for("the threads to settle", Duration::from_secs(90), || {
        let names = thread_names(daemon.pid());
        for name in &names {
            assert!(
                CTRD_IDLE
                    .iter()
                    .chain(&CTRD_START_UP)
                    .chain(&GRPC_CORE)
                    .any(|known| known == name),
                "unknown thread {name:?} among {names:?}"
            );
        }
        // One of each: gRPC core's threads carry their own names in the static (musl) build
        // too (scripts/build-static), not the main thread's.
        let ours: Vec<&str> = names
            .iter()
            .map(String::as_str)
            .filter(|name| !GRPC_CORE.contains(name))
            .collect();
        (ours == ctrd_idle).then_some(names)
    });
    eprintln!(
        "{} threads when idle (ceiling {ceiling}): {idle:?}",
        idle.len()
    );
    assert!(idle.len() <= ceiling, "{} threads: {idle:?}", idle.len());

    // /debug/pprof/threads lists each by name with its job, then its stack.
    let mut debug = UnixStream::connect(daemon.dir.join("debug.sock")).unwrap();
    debug
        .write_all(b"GET /debug/pprof/threads HTTP/1.0\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    debug.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.0 200"), "{answer}");
    let (_, body) = answer.split_once("\r\n\r\n").unwrap();
    let (list, stacks) = body.split_once("\n\n").unwrap();
    for name in &idle {
        let line = list
            .lines()
            .find(|line| line.split_whitespace().nth(1) == Some(name.as_str()))
            .unwrap_or_else(|| panic!("{name} not in the list:\n{list}"));
        assert!(!line.ends_with("(not one of ctrd's)"), "{line}");
        assert!(stacks.contains(&format!("\"{name}\":")), "{name}: no stack");
    }

    // docs/architecture.md names every one.
    let docs =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/architecture.md"))
            .unwrap();
    for name in CTRD_IDLE.iter().chain(&CTRD_START_UP).chain(&GRPC_CORE) {
        assert!(
            docs.contains(name),
            "docs/architecture.md does not name {name}"
        );
    }
}

#[test]
fn grpc_core_runs_no_resolver_executor_or_engine_poller_unless_experiments_ask() {
    // By default gRPC core starts without the two threads ctrd never uses: its resolver
    // executor and its event engine's poller (the engine's I/O experiments are off).
    let lean = Daemon::start("grpc-core-lean");
    assert!(
        lean.logs().contains("gRPC core: WithoutEnginePoller"),
        "{}",
        lean.logs()
    );
    let names = thread_names(lean.pid());
    assert!(
        !names.iter().any(|name| name == "resolver-execut"),
        "{names:?}"
    );
    let version = VersionClient::new(lean.channel()).version(&Empty::new());
    assert_eq!(version.unwrap().version, ctrd::VERSION);

    // An event-engine I/O experiment gets the stock engine, and calls are answered.
    let stock = Daemon::start_with(
        "grpc-core-stock",
        Options {
            env: vec![(
                "GRPC_EXPERIMENTS".into(),
                "event_engine_listener,event_engine_client".into(),
            )],
            ..Default::default()
        },
    );
    assert!(
        stock.logs().contains("gRPC core: Stock"),
        "{}",
        stock.logs()
    );
    let version = VersionClient::new(stock.channel()).version(&Empty::new());
    assert_eq!(version.unwrap().version, ctrd::VERSION);
}

#[test]
fn a_burst_of_more_calls_than_request_slots_is_answered_in_full() {
    // The gRPC listener stands ready for 128 calls at a time; gRPC core holds the rest of a
    // burst until the completion queue asks again, so none is refused or lost. 256 callers
    // on four connections start together.
    let daemon = Daemon::start("burst");
    let callers = 256;
    let channels: Vec<grpcio::Channel> = (0..4).map(|_| daemon.channel()).collect();
    let start = std::sync::Arc::new(std::sync::Barrier::new(callers));
    let threads: Vec<_> = (0..callers)
        .map(|i| {
            let client = VersionClient::new(channels[i % channels.len()].clone());
            let start = start.clone();
            std::thread::spawn(move || {
                start.wait();
                let deadline = grpcio::CallOption::default().timeout(Duration::from_secs(30));
                client.version_opt(&Empty::new(), deadline)
            })
        })
        .collect();
    let answered = threads
        .into_iter()
        .map(|t| {
            t.join()
                .unwrap()
                .expect("every call of the burst is answered")
        })
        .filter(|reply| reply.version == ctrd::VERSION)
        .count();
    assert_eq!(answered, callers);
}
