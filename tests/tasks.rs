//! Tasks through Debian's runc shim (`containerd-shim-runc-v2` + `runc`), as root: the shim
//! manager on hand-made bundles, then `ctr run` and friends against the real daemon.
//! Every test leaves no shim, container or mount behind (guards kill and unmount on drop).

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use common::containers::{
    busybox_rootfs, mounts_under, require_container_tools, shim_pids, spec, wait_no_shim,
    ContainerGuard,
};
use common::TestDir;
use ctrd::api::mount::Mount;
use ctrd::api::shim_task;
use ctrd::events::Exchange;
use ctrd::runtime::shim::DaemonAddresses;
use ctrd::runtime::{CreateOpts, RuntimeConfig, TaskManager, Timeouts};

const WAIT: Duration = Duration::from_secs(30);

/// A shim manager on `dir` with a real ttrpc events endpoint feeding `exchange`.
struct Harness {
    dir: TestDir,
    exchange: Arc<Exchange>,
    manager: Arc<TaskManager>,
    _server: ttrpc::Server,
}

impl Harness {
    fn new(name: &str, config: RuntimeConfig) -> Harness {
        require_container_tools();
        let dir = TestDir::new(name);
        let exchange = Arc::new(Exchange::new());
        let ttrpc = dir.join("ctrd.sock.ttrpc");
        let service = Arc::new(ctrd::services::events::EventsService::new(exchange.clone()));
        let mut server = ttrpc::Server::new()
            .bind(&format!("unix://{}", ttrpc.display()))
            .expect("bind ttrpc")
            .register_service(ctrd::api::events_ttrpc::create_events(service));
        server.start().expect("start ttrpc");
        let daemon = DaemonAddresses {
            grpc: dir.join("ctrd.sock").to_string_lossy().into_owned(),
            ttrpc: ttrpc.to_string_lossy().into_owned(),
            publish_binary: PathBuf::from("/bin/true"),
            debug: false,
        };
        let manager = TaskManager::new(
            dir.join("state"),
            dir.join("root"),
            daemon,
            exchange.clone(),
            config,
            Timeouts::default(),
        )
        .expect("manager");
        Harness {
            dir,
            exchange,
            manager,
            _server: server,
        }
    }

    fn opts(&self, args: &[&str], namespace: &str, id: &str) -> CreateOpts {
        let rootfs = busybox_rootfs(&self.dir.join(&format!("rootfs-{id}")));
        CreateOpts {
            spec: spec(args, &format!("/{namespace}/{id}")),
            runtime: "io.containerd.runc.v2".into(),
            rootfs: vec![Mount {
                type_: "bind".into(),
                source: rootfs.to_string_lossy().into_owned(),
                options: vec!["rbind".into(), "rw".into()],
                ..Default::default()
            }],
            stdout: format!("file://{}", self.dir.join(&format!("{id}.out")).display()),
            stderr: format!("file://{}", self.dir.join(&format!("{id}.err")).display()),
            ..Default::default()
        }
    }
}

fn start(task: &ctrd::runtime::Task) -> u32 {
    task.client
        .task()
        .start(
            task.client.ctx(None),
            &shim_task::StartRequest {
                id: task.id().to_string(),
                ..Default::default()
            },
        )
        .expect("start")
        .pid
}

fn topics(sub: &ctrd::events::Subscription, until: &str) -> Vec<String> {
    let mut seen = Vec::new();
    while !seen.iter().any(|t| t == until) {
        let envelope = sub
            .next_timeout(WAIT)
            .unwrap_or_else(|| panic!("no {until} event; saw {seen:?}"));
        seen.push(envelope.topic);
    }
    seen
}

#[test]
fn shim_manager_runs_a_bundle_and_leaves_nothing_behind() {
    let h = Harness::new("shim-run", RuntimeConfig::default());
    let ns = format!("shimrun{}", std::process::id());
    let _guard = ContainerGuard::new(&ns, &["m1"], &h.dir.path);
    let events = h.exchange.subscribe(&[]).unwrap();
    let opts = h.opts(&["sh", "-c", "echo hi; exit 3"], &ns, "m1");
    let spec = opts.spec.clone();
    let task = h.manager.create(&ns, "m1", opts).expect("create");
    let bundle = task.bundle.path.clone();
    assert_eq!(bundle, h.dir.join(&format!("state/{ns}/m1")));
    assert_eq!(std::fs::read(bundle.join("config.json")).unwrap(), spec);
    assert_eq!(
        std::fs::read_link(bundle.join("work")).unwrap(),
        h.dir.join(&format!("root/{ns}/m1"))
    );
    assert_eq!(
        std::fs::read_to_string(bundle.join("shim-binary-path")).unwrap(),
        "/usr/bin/containerd-shim-runc-v2"
    );
    use std::os::unix::fs::FileTypeExt;
    assert!(std::fs::metadata(bundle.join("log"))
        .unwrap()
        .file_type()
        .is_fifo());
    assert_eq!(shim_pids(&ns, "m1").len(), 1, "one shim runs");
    assert!(
        !mounts_under(&bundle.join("rootfs")).is_empty(),
        "the shim mounted the rootfs"
    );

    // A second Create of the same id is refused.
    let err = h
        .manager
        .create(&ns, "m1", h.opts(&["true"], &ns, "m1x"))
        .map(|_| ())
        .unwrap_err();
    assert_eq!(err.message(), "task m1: already exists");

    // Waits before start, many of them, one answer each.
    let (tx, rx) = crossbeam_channel::unbounded();
    for _ in 0..20 {
        let tx = tx.clone();
        h.manager
            .wait(&task, "m1", Box::new(move |r| tx.send(r).unwrap()));
    }
    let pid = start(&task);
    assert!(pid > 0);
    for _ in 0..20 {
        let exit = rx.recv_timeout(WAIT).expect("exit").expect("exit ok");
        assert_eq!(exit.status, 3);
        assert_eq!(exit.pid, pid);
    }
    // A late waiter gets the kept exit at once.
    h.manager
        .wait(&task, "m1", Box::new(move |r| tx.send(r).unwrap()));
    assert_eq!(rx.recv_timeout(WAIT).unwrap().unwrap().status, 3);
    assert_eq!(
        std::fs::read_to_string(h.dir.join("m1.out")).unwrap(),
        "hi\n"
    );

    let exit = h.manager.delete(&ns, "m1").expect("delete");
    assert_eq!(exit.status, 3);
    let seen = topics(&events, "/tasks/delete");
    for topic in [
        "/tasks/create",
        "/tasks/start",
        "/tasks/exit",
        "/tasks/delete",
    ] {
        assert!(seen.iter().any(|t| t == topic), "{topic} in {seen:?}");
    }
    assert!(!bundle.exists(), "bundle removed");
    assert!(
        !h.dir.join(&format!("root/{ns}/m1")).exists(),
        "work dir removed"
    );
    assert!(mounts_under(&h.dir.path).is_empty(), "no mounts left");
    wait_no_shim(&ns, "m1");
    let err = h.manager.delete(&ns, "m1").unwrap_err();
    assert_eq!(err.message(), "task m1 not found");
}

#[test]
fn a_killed_shim_is_cleaned_up_with_events() {
    let h = Harness::new("shim-kill", RuntimeConfig::default());
    let ns = format!("shimkill{}", std::process::id());
    let _guard = ContainerGuard::new(&ns, &["k1"], &h.dir.path);
    let events = h
        .exchange
        .subscribe(&["topic~=\"^/tasks/(exit|delete)\"".to_string()])
        .unwrap();
    let task = h
        .manager
        .create(&ns, "k1", h.opts(&["sleep", "300"], &ns, "k1"))
        .expect("create");
    start(&task);
    let (tx, rx) = crossbeam_channel::unbounded();
    h.manager
        .wait(&task, "k1", Box::new(move |r| tx.send(r).unwrap()));
    let bundle = task.bundle.path.clone();
    let shim_pid = task.shim_pid;
    drop(task);
    std::process::Command::new("kill")
        .args(["-9", &shim_pid.to_string()])
        .status()
        .unwrap();
    let exit = events.next_timeout(WAIT).expect("exit event");
    assert_eq!(exit.topic, "/tasks/exit");
    let payload: ctrd::api::event_types::TaskExit =
        protobuf::Message::parse_from_bytes(&exit.event.value).unwrap();
    assert_eq!(payload.container_id, "k1");
    assert_eq!(payload.exit_status, 137);
    let delete = events.next_timeout(WAIT).expect("delete event");
    assert_eq!(delete.topic, "/tasks/delete");
    assert_eq!(rx.recv_timeout(WAIT).unwrap().unwrap().status, 137);
    assert!(!bundle.exists());
    assert!(mounts_under(&h.dir.path).is_empty());
    assert_eq!(
        h.manager.get(&ns, "k1").map(|_| ()).unwrap_err().message(),
        "task k1 not found"
    );
}

#[test]
fn grouped_containers_share_one_shim() {
    let config = RuntimeConfig {
        shim_group: "namespace".into(),
        ..Default::default()
    };
    let h = Harness::new("shim-group", config);
    let ns = format!("shimgrp{}", std::process::id());
    let _guard = ContainerGuard::new(&ns, &["g1", "g2"], &h.dir.path);
    let a = h
        .manager
        .create(&ns, "g1", h.opts(&["sleep", "300"], &ns, "g1"))
        .expect("g1");
    let b = h
        .manager
        .create(&ns, "g2", h.opts(&["sleep", "300"], &ns, "g2"))
        .expect("g2");
    assert_eq!(a.shim_pid, b.shim_pid, "one shim serves both");
    let stored: serde_json::Value =
        serde_json::from_slice(&std::fs::read(a.bundle.path.join("config.json")).unwrap()).unwrap();
    assert_eq!(
        stored["annotations"]["io.containerd.runc.v2.group"],
        format!("ctrd-{ns}")
    );
    for task in [&a, &b] {
        start(task);
    }
    for task in [a, b] {
        let (tx, rx) = crossbeam_channel::unbounded();
        h.manager
            .wait(&task, task.id(), Box::new(move |r| tx.send(r).unwrap()));
        task.client
            .task()
            .kill(
                task.client.ctx(None),
                &shim_task::KillRequest {
                    id: task.id().to_string(),
                    signal: 9,
                    ..Default::default()
                },
            )
            .expect("kill");
        assert_eq!(rx.recv_timeout(WAIT).unwrap().unwrap().status, 137);
        let id = task.id().to_string();
        drop(task);
        h.manager.delete(&ns, &id).expect("delete");
    }
    assert!(mounts_under(&h.dir.path).is_empty());
    let shim_gone = || {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter(|e| {
                std::fs::read(e.path().join("cmdline"))
                    .map(|c| String::from_utf8_lossy(&c).contains(&ns))
                    .unwrap_or(false)
            })
            .count()
            == 0
    };
    common::wait_for("the group's shim to exit", WAIT, || {
        shim_gone().then_some(())
    });
}

/// A second manager on the same directories, as after a daemon restart.
fn restarted(h: &Harness, timeouts: Timeouts) -> (Arc<TaskManager>, ctrd::plugin::Readiness) {
    let daemon = DaemonAddresses {
        grpc: h.dir.join("ctrd.sock").to_string_lossy().into_owned(),
        ttrpc: h.dir.join("ctrd.sock.ttrpc").to_string_lossy().into_owned(),
        publish_binary: PathBuf::from("/bin/true"),
        debug: false,
    };
    let manager = TaskManager::new(
        h.dir.join("state"),
        h.dir.join("root"),
        daemon,
        h.exchange.clone(),
        RuntimeConfig::default(),
        timeouts,
    )
    .expect("manager");
    let readiness = ctrd::plugin::Readiness::new();
    manager.recover(readiness.register()).expect("recover");
    (manager, readiness)
}

#[test]
fn a_restarted_manager_reconnects_live_shims_and_cleans_dead_ones() {
    let h = Harness::new("shim-restart", RuntimeConfig::default());
    let ns = format!("shimre{}", std::process::id());
    let _guard = ContainerGuard::new(&ns, &["live", "dead", "hung"], &h.dir.path);
    let live = h
        .manager
        .create(&ns, "live", h.opts(&["sleep", "300"], &ns, "live"))
        .expect("live");
    let live_pid = start(&live);
    let dead = h
        .manager
        .create(&ns, "dead", h.opts(&["sh", "-c", "exit 7"], &ns, "dead"))
        .expect("dead");
    let (tx, rx) = crossbeam_channel::unbounded();
    h.manager
        .wait(&dead, "dead", Box::new(move |r| tx.send(r).unwrap()));
    start(&dead);
    assert_eq!(rx.recv_timeout(WAIT).unwrap().unwrap().status, 7);
    let dead_shim = dead.shim_pid;
    // A bundle whose "shim" accepts connections and never answers: recovery waits for it.
    let hung_bundle = h.dir.join(&format!("state/{ns}/hung"));
    std::fs::create_dir_all(&hung_bundle).unwrap();
    let hung_socket = h.dir.join("hung.sock");
    let hung = std::os::unix::net::UnixListener::bind(&hung_socket).unwrap();
    std::fs::write(
        hung_bundle.join("address"),
        format!("unix://{}", hung_socket.display()),
    )
    .unwrap();

    // The daemon stops: its shims keep running. Then the dead task's shim dies while
    // nobody watches.
    h.manager.close();
    drop((live, dead));
    std::process::Command::new("kill")
        .args(["-9", &dead_shim.to_string()])
        .status()
        .unwrap();
    let events = h
        .exchange
        .subscribe(&["topic==\"/tasks/exit\"".to_string()])
        .unwrap();
    let timeouts = Timeouts {
        load: Duration::from_secs(3),
        ..Timeouts::default()
    };
    let (manager, readiness) = restarted(&h, timeouts);
    // Until the hung bundle is dealt with, the daemon is not ready and calls for that id
    // say so instead of "not found".
    assert_eq!(readiness.pending(), 1);
    let err = manager.get(&ns, "hung").map(|_| ()).unwrap_err();
    assert_eq!(err.class(), ctrd::errdefs::Class::Unavailable, "{err}");
    let (ready_tx, ready) = crossbeam_channel::bounded(1);
    readiness.when_ready(move || ready_tx.send(()).unwrap());
    ready
        .recv_timeout(WAIT)
        .expect("ready once the hung bundle is dealt with");
    drop(hung);

    let task = manager.get(&ns, "live").expect("live task recovered");
    assert_eq!(task.pid, live_pid);
    // The dead task was cleaned up with its real exit status, not a made-up one.
    let exit = events.next_timeout(WAIT).expect("exit event");
    let payload: ctrd::api::event_types::TaskExit =
        protobuf::Message::parse_from_bytes(&exit.event.value).unwrap();
    let mut exits = vec![(payload.container_id.clone(), payload.exit_status)];
    if let Some(more) = events.next_timeout(Duration::from_secs(1)) {
        let payload: ctrd::api::event_types::TaskExit =
            protobuf::Message::parse_from_bytes(&more.event.value).unwrap();
        exits.push((payload.container_id, payload.exit_status));
    }
    assert!(exits.contains(&("dead".to_string(), 7)), "{exits:?}");
    assert!(!h.dir.join(&format!("state/{ns}/dead")).exists());
    assert!(!hung_bundle.exists());
    assert_eq!(
        manager.get(&ns, "dead").map(|_| ()).unwrap_err().message(),
        "task dead not found"
    );

    // The recovered task still works.
    let (tx, rx) = crossbeam_channel::unbounded();
    manager.wait(&task, "live", Box::new(move |r| tx.send(r).unwrap()));
    task.client
        .task()
        .kill(
            task.client.ctx(None),
            &shim_task::KillRequest {
                id: "live".into(),
                signal: 9,
                ..Default::default()
            },
        )
        .expect("kill");
    assert_eq!(rx.recv_timeout(WAIT).unwrap().unwrap().status, 137);
    drop(task);
    manager.delete(&ns, "live").expect("delete");
    wait_no_shim(&ns, "live");
    assert!(mounts_under(&h.dir.path).is_empty());
}

#[test]
fn task_calls_for_unknown_tasks_are_answered_and_the_daemon_keeps_serving() {
    use ctrd::api::tasks::{
        CheckpointTaskRequest, CreateTaskRequest, DeleteTaskRequest, KillRequest, TasksClient,
        WaitRequest,
    };
    let daemon = common::Daemon::start("tasks-bad");
    let client = TasksClient::new(daemon.channel());
    let ns = || {
        let mut headers = grpcio::MetadataBuilder::new();
        headers.add_str("containerd-namespace", "default").unwrap();
        grpcio::CallOption::default().headers(headers.build())
    };
    let status = |err: grpcio::Error| match err {
        grpcio::Error::RpcFailure(status) => (status.code(), status.message().to_string()),
        other => panic!("unexpected error {other}"),
    };
    let kill = KillRequest {
        container_id: "x".into(),
        signal: 9,
        ..Default::default()
    };
    let (code, message) = status(client.kill_opt(&kill, ns()).unwrap_err());
    assert_eq!(code, grpcio::RpcStatusCode::NOT_FOUND);
    assert_eq!(message, "task x not found");
    let delete = DeleteTaskRequest {
        container_id: "x".into(),
        ..Default::default()
    };
    let (code, message) = status(client.delete_opt(&delete, ns()).unwrap_err());
    assert_eq!(
        (code, message.as_str()),
        (grpcio::RpcStatusCode::NOT_FOUND, "task x not found")
    );
    let wait = WaitRequest {
        container_id: "x".into(),
        ..Default::default()
    };
    let (code, _) = status(client.wait_opt(&wait, ns()).unwrap_err());
    assert_eq!(code, grpcio::RpcStatusCode::NOT_FOUND);
    let create = CreateTaskRequest {
        container_id: "nope".into(),
        ..Default::default()
    };
    let (code, message) = status(client.create_opt(&create, ns()).unwrap_err());
    assert_eq!(code, grpcio::RpcStatusCode::NOT_FOUND);
    assert_eq!(
        message,
        "container \"nope\" in namespace \"default\": not found"
    );
    let (code, message) = status(
        client
            .checkpoint_opt(&CheckpointTaskRequest::default(), ns())
            .unwrap_err(),
    );
    assert_eq!(code, grpcio::RpcStatusCode::UNIMPLEMENTED);
    assert!(message.contains("checkpoint"), "{message}");
    // Still serving.
    assert_eq!(daemon.ctr_ok(&["task", "ls"]).lines().count(), 1);
}

// ---- `ctr` against the daemon -------------------------------------------------------

use common::image::{busybox_tar, Layout};
use common::Daemon;

/// A daemon with the busybox test image imported, in a namespace of its own (runc's state
/// and cgroups are per namespace, so tests and other daemons on the machine never meet).
struct Ctr {
    daemon: Daemon,
    ns: String,
    image: String,
}

impl Ctr {
    fn start(name: &str) -> Ctr {
        Ctr::start_with(name, common::Options::default())
    }

    fn start_with(name: &str, options: common::Options) -> Ctr {
        require_container_tools();
        let daemon = Daemon::start_with(name, options);
        let ns = format!("{}{}", name.replace('-', ""), std::process::id());
        let (tar, image) = busybox_tar(&daemon.dir.path, Layout::DockerSave);
        let ctr = Ctr { daemon, ns, image };
        ctr.ok(&[
            "images",
            "import",
            "--snapshotter",
            "native",
            tar.to_str().expect("utf-8 path"),
        ]);
        ctr
    }

    fn args<'a>(&'a self, args: &[&'a str]) -> Vec<&'a str> {
        let mut all = vec!["-n", self.ns.as_str()];
        all.extend_from_slice(args);
        all
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        self.daemon.ctr(&self.args(args))
    }

    fn ok(&self, args: &[&str]) -> String {
        self.daemon.ctr_ok(&self.args(args))
    }

    /// `ctr run` with the test image: `flags` before it, `tail` (id and command) after.
    fn run_image(&self, flags: &[&str], tail: &[&str]) -> std::process::Output {
        let mut args = vec!["run", "--snapshotter", "native"];
        args.extend_from_slice(flags);
        args.push(&self.image);
        args.extend_from_slice(tail);
        self.run(&args)
    }

    fn guard(&self, ids: &[&str]) -> ContainerGuard {
        ContainerGuard::new(&self.ns, ids, &self.daemon.dir.path)
    }

    fn bundles(&self) -> std::path::PathBuf {
        self.daemon
            .dir
            .join(&format!("state/io.containerd.runtime.v2.task/{}", self.ns))
    }

    /// `ctr task ls` as (id, pid, status) rows.
    fn tasks(&self) -> Vec<(String, String, String)> {
        self.ok(&["task", "ls"])
            .lines()
            .skip(1)
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.len() == 3).then(|| (f[0].to_string(), f[1].to_string(), f[2].to_string()))
            })
            .collect()
    }

    fn status(&self, id: &str) -> Option<String> {
        self.tasks()
            .into_iter()
            .find(|(task, _, _)| task == id)
            .map(|(_, _, status)| status)
    }

    fn wait_status(&self, id: &str, status: &str) {
        common::wait_for(&format!("task {id} {status}"), WAIT, || {
            (self.status(id).as_deref() == Some(status)).then_some(())
        });
    }

    /// Kills, deletes and removes `id`.
    fn remove(&self, id: &str) -> String {
        self.ok(&["task", "kill", "-s", "SIGKILL", id]);
        self.wait_status(id, "STOPPED");
        let out = self.run(&["task", "rm", id]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.ok(&["containers", "rm", id]);
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    fn assert_nothing_left(&self, ids: &[&str]) {
        for id in ids {
            wait_no_shim(&self.ns, id);
        }
        assert!(
            mounts_under(&self.daemon.dir.path).is_empty(),
            "mounts left: {:?}",
            mounts_under(&self.daemon.dir.path)
        );
        let left: Vec<_> = std::fs::read_dir(self.bundles())
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "bundles left: {left:?}");
    }
}

#[test]
fn ctr_run_rm_prints_and_returns_the_exit_status() {
    let ctr = Ctr::start("run-rm");
    let _guard = ctr.guard(&["t1"]);
    let out = ctr.run_image(&["--rm"], &["t1", "echo", "hi"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hi\n");
    let out = ctr.run_image(&["--rm"], &["t1", "sh", "-c", "exit 3"]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    ctr.assert_nothing_left(&["t1"]);
    assert!(ctr.ok(&["containers", "ls", "-q"]).trim().is_empty());
}

#[test]
fn ctr_detached_task_lifecycle() {
    let ctr = Ctr::start_with(
        "detached",
        common::Options {
            config: Some("version = 3\n[debug]\naddress = '@DIR@/debug.sock'\n".into()),
            ..Default::default()
        },
    );
    let _guard = ctr.guard(&["t2"]);
    let out = ctr.run_image(&["-d"], &["t2", "sleep", "300"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (_, pid, status) = ctr
        .tasks()
        .into_iter()
        .find(|t| t.0 == "t2")
        .expect("t2 listed");
    assert_eq!(status, "RUNNING");
    assert!(pid.parse::<u32>().unwrap() > 0);

    assert_eq!(
        ctr.ok(&["task", "exec", "--exec-id", "e1", "t2", "echo", "x"]),
        "x\n"
    );
    // An exec id that is in use is refused, as the shim words it.
    ctr.ok(&[
        "task",
        "exec",
        "-d",
        "--exec-id",
        "e2",
        "t2",
        "sleep",
        "100",
    ]);
    let out = ctr.run(&["task", "exec", "--exec-id", "e2", "t2", "echo"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("id e2: already exists"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let ps = ctr.ok(&["task", "ps", "t2"]);
    assert!(ps.contains(&pid), "{ps}");
    ctr.ok(&["task", "pause", "t2"]);
    ctr.wait_status("t2", "PAUSED");
    ctr.ok(&["task", "resume", "t2"]);
    ctr.wait_status("t2", "RUNNING");
    let metrics = ctr.ok(&["task", "metrics", "t2"]);
    assert!(metrics.contains("t2"), "{metrics}");

    // The daemon itself refuses to delete a container whose task lives (not only ctr).
    let containers = ctrd::api::containers::ContainersClient::new(ctr.daemon.channel());
    let mut headers = grpcio::MetadataBuilder::new();
    headers.add_str("containerd-namespace", &ctr.ns).unwrap();
    let request = ctrd::api::containers::DeleteContainerRequest {
        id: "t2".into(),
        ..Default::default()
    };
    match containers.delete_opt(
        &request,
        grpcio::CallOption::default().headers(headers.build()),
    ) {
        Err(grpcio::Error::RpcFailure(status)) => {
            assert_eq!(status.code(), grpcio::RpcStatusCode::FAILED_PRECONDITION);
            assert!(
                status.message().contains("still has a task"),
                "{}",
                status.message()
            );
        }
        other => panic!("deleting t2 with a live task: {other:?}"),
    }

    // The shim's log is drained and its tail served on the debug endpoint.
    let out = std::process::Command::new(common::require_tool("curl"))
        .args([
            "-sf",
            "--unix-socket",
            ctr.daemon.dir.join("debug.sock").to_str().unwrap(),
            &format!("http://x/debug/shims/{}/t2/log", ctr.ns),
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("level="),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(ctr
        .daemon
        .logs()
        .contains(&format!("shim log namespace={} id=t2", ctr.ns)));

    let stderr = ctr.remove("t2");
    assert!(stderr.contains("exit code 137"), "{stderr}");
    ctr.assert_nothing_left(&["t2"]);
}

/// `ctr events` into a file until dropped.
struct Events {
    child: std::process::Child,
    file: PathBuf,
}

impl Events {
    fn start(ctr: &Ctr, name: &str) -> Events {
        let file = ctr.daemon.dir.join(name);
        let out = std::fs::File::create(&file).expect("events file");
        let child = std::process::Command::new(common::require_tool("ctr"))
            .arg("--address")
            .arg(&ctr.daemon.socket)
            .args(["events"])
            .stdout(out)
            .spawn()
            .expect("spawn ctr events");
        // Subscribed once a published event shows up.
        common::wait_for("ctr events to subscribe", WAIT, || {
            ctr.ok(&["namespaces", "label", &ctr.ns, "probe=1"]);
            std::fs::read_to_string(&file)
                .expect("events file")
                .contains("/namespaces/update")
                .then_some(())
        });
        Events { child, file }
    }

    fn wait_for(&self, needle: &str) -> String {
        common::wait_for(needle, WAIT, || {
            let text = std::fs::read_to_string(&self.file).expect("events file");
            text.contains(needle).then_some(text)
        })
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn ctr_events_show_the_task_lifecycle() {
    let ctr = Ctr::start("events");
    let _guard = ctr.guard(&["t5"]);
    let events = Events::start(&ctr, "events.txt");
    let out = ctr.run_image(&["--rm"], &["t5", "echo", "hi"]);
    assert!(out.status.success());
    let text = events.wait_for("/tasks/delete");
    let line = |topic: &str| {
        text.lines()
            .find(|l| l.contains(&format!(" {topic} ")))
            .unwrap_or_else(|| panic!("no {topic} in {text}"))
            .to_string()
    };
    let start = line("/tasks/start");
    let pid = start
        .split("\"pid\":")
        .nth(1)
        .and_then(|p| p.split(|c: char| !c.is_ascii_digit()).next())
        .expect("pid in /tasks/start")
        .to_string();
    assert!(line("/tasks/create").contains("\"container_id\":\"t5\""));
    assert!(line("/tasks/create").contains(&format!("\"pid\":{pid}")));
    assert!(line("/tasks/exit").contains(&format!("\"id\":\"t5\",\"pid\":{pid}")));
    assert!(line("/tasks/delete").contains(&format!("\"container_id\":\"t5\",\"pid\":{pid}")));
    ctr.assert_nothing_left(&["t5"]);
}

#[test]
fn ctr_tasks_survive_a_restart_and_a_killed_shim_is_cleaned_up() {
    let mut ctr = Ctr::start("restart");
    let _guard = ctr.guard(&["t3", "t6"]);
    assert!(ctr
        .run_image(&["-d"], &["t3", "sleep", "300"])
        .status
        .success());
    let before = ctr.tasks();
    let (status, _) = ctr.daemon.terminate();
    assert!(status.success());
    assert_eq!(
        shim_pids(&ctr.ns, "t3").len(),
        1,
        "the shim outlives the daemon"
    );
    ctr.daemon.restart();
    assert_eq!(ctr.tasks(), before, "t3 is still RUNNING with the same pid");
    ctr.remove("t3");

    let events = Events::start(&ctr, "events.txt");
    assert!(ctr
        .run_image(&["-d"], &["t6", "sleep", "300"])
        .status
        .success());
    let shim = shim_pids(&ctr.ns, "t6");
    assert_eq!(shim.len(), 1);
    std::process::Command::new("kill")
        .args(["-9", &shim[0].to_string()])
        .status()
        .unwrap();
    let text = events.wait_for("/tasks/delete");
    assert!(
        text.lines()
            .any(|l| l.contains("/tasks/exit") && l.contains("\"exit_status\":137")),
        "{text}"
    );
    common::wait_for("t6 to be gone", WAIT, || {
        ctr.status("t6").is_none().then_some(())
    });
    ctr.ok(&["containers", "rm", "t6"]);
    ctr.assert_nothing_left(&["t3", "t6"]);
}

#[test]
fn ctr_runs_five_containers_in_parallel() {
    let ctr = Arc::new(Ctr::start("parallel"));
    let ids = ["p1", "p2", "p3", "p4", "p5"];
    let _guard = ctr.guard(&ids);
    let runs: Vec<_> = ids
        .into_iter()
        .map(|id| {
            let ctr = ctr.clone();
            std::thread::spawn(move || ctr.run_image(&["-d"], &[id, "sleep", "300"]))
        })
        .collect();
    for run in runs {
        let out = run.join().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(ctr.tasks().iter().filter(|t| t.2 == "RUNNING").count(), 5);
    let stops: Vec<_> = ids
        .into_iter()
        .map(|id| {
            let ctr = ctr.clone();
            std::thread::spawn(move || ctr.remove(id))
        })
        .collect();
    for stop in stops {
        stop.join().unwrap();
    }
    ctr.assert_nothing_left(&ids);
}

// ---- bad inputs: each is answered and the daemon keeps serving ------------------------

/// The stderr of a `ctr` call that must fail.
fn failure(out: std::process::Output) -> String {
    assert!(
        !out.status.success(),
        "succeeded: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

impl Ctr {
    /// The daemon still answers: `ctr version` reaches it and `ctr task ls` lists.
    fn assert_serving(&self) {
        let version = self.ok(&["version"]);
        assert!(version.contains("Server:"), "{version}");
        self.tasks();
    }

    /// The keys of the native snapshotter's snapshots in the test's namespace.
    fn snapshots(&self) -> Vec<String> {
        self.ok(&["snapshots", "--snapshotter", "native", "ls"])
            .lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().next().map(str::to_string))
            .collect()
    }
}

#[test]
fn ctr_task_start_on_a_running_task_is_refused_and_the_task_keeps_running() {
    let ctr = Ctr::start("dup-create");
    let _guard = ctr.guard(&["t7"]);
    let out = ctr.run_image(&["-d"], &["t7", "sleep", "300"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let before = ctr.tasks();
    // `ctr task start` creates the task again (Tasks.Create) before it would start it.
    let stderr = failure(ctr.run(&["task", "start", "t7"]));
    assert_eq!(stderr, "ctr: task t7: already exists\n");
    assert_eq!(ctr.tasks(), before, "t7 is still RUNNING with the same pid");
    assert_eq!(ctr.status("t7").as_deref(), Some("RUNNING"));
    assert_eq!(shim_pids(&ctr.ns, "t7").len(), 1, "still one shim");
    ctr.assert_serving();
    ctr.remove("t7");
    ctr.assert_nothing_left(&["t7"]);
}

#[test]
fn ctr_run_with_a_bad_runtime_names_it_and_leaves_nothing_behind() {
    let ctr = Ctr::start("bad-runtime");
    let _guard = ctr.guard(&["t8", "t9"]);

    // A name that is neither `<prefix>.<name>.<version>` nor an absolute path.
    let stderr = failure(ctr.run_image(&["--runtime", "nonsense"], &["t8", "true"]));
    assert_eq!(
        stderr,
        "ctr: failed to start shim: start failed: invalid runtime name nonsense, correct runtime \
         name should be either format like `io.containerd.runc.v1` or a full path to the binary: \
         unknown\n"
    );
    ctr.assert_serving();
    assert_eq!(ctr.status("t8"), None, "no task");
    ctr.ok(&["containers", "rm", "t8"]);
    ctr.assert_nothing_left(&["t8"]);

    // A well-formed name whose shim binary is not installed.
    let stderr = failure(ctr.run_image(&["--runtime", "io.containerd.nope.v2"], &["t9", "true"]));
    assert_eq!(
        stderr,
        "ctr: failed to start shim: start failed: runtime \"io.containerd.nope.v2\" binary not \
         installed \"containerd-shim-nope-v2\": file does not exist: unknown\n"
    );
    ctr.assert_serving();
    assert_eq!(ctr.status("t9"), None, "no task");
    ctr.ok(&["containers", "rm", "t9"]);
    ctr.assert_nothing_left(&["t9"]);
    let snapshots = ctr.snapshots();
    assert!(
        !snapshots.iter().any(|k| k == "t8" || k == "t9"),
        "{snapshots:?}"
    );
    assert!(ctr.ok(&["containers", "ls", "-q"]).trim().is_empty());
}

#[test]
fn a_spec_that_is_not_json_fails_with_the_shims_error_and_leaves_nothing_behind() {
    use ctrd::api::containers::{ContainersClient, GetContainerRequest, UpdateContainerRequest};
    use ctrd::api::tasks::{CreateTaskRequest, TasksClient};
    use ctrd::api::FieldMask;

    let ctr = Ctr::start("bad-spec");
    let _guard = ctr.guard(&["c4"]);
    ctr.ok(&[
        "containers",
        "create",
        "--snapshotter",
        "native",
        &ctr.image,
        "c4",
        "true",
    ]);
    let containers = ContainersClient::new(ctr.daemon.channel());
    let mut container = containers
        .get_opt(
            &GetContainerRequest {
                id: "c4".into(),
                ..Default::default()
            },
            common::call_opt(&ctr.ns, None),
        )
        .expect("get c4")
        .container
        .unwrap();
    container.spec.mut_or_insert_default().value = b"not json".to_vec();
    containers
        .update_opt(
            &UpdateContainerRequest {
                container: Some(container).into(),
                update_mask: Some(FieldMask {
                    paths: vec!["spec".into()],
                    ..Default::default()
                })
                .into(),
                ..Default::default()
            },
            common::call_opt(&ctr.ns, None),
        )
        .expect("update c4's spec");

    // `ctr task start` decodes the spec itself and stops before asking the daemon, so the
    // task is created over gRPC: the daemon takes the rootfs from the container's snapshot.
    let stderr = failure(ctr.run(&["task", "start", "c4"]));
    assert!(stderr.contains("invalid character"), "{stderr}");
    let tasks = TasksClient::new(ctr.daemon.channel());
    let (code, message) = common::rpc_status(tasks.create_opt(
        &CreateTaskRequest {
            container_id: "c4".into(),
            ..Default::default()
        },
        common::call_opt(&ctr.ns, None),
    ));
    // The runc shim decodes the spec in its `start`; its words come through.
    assert_eq!(code, grpcio::RpcStatusCode::UNKNOWN, "{message}");
    assert!(
        message.starts_with("failed to start shim: start failed: ")
            && message.contains("invalid character 'o' in literal null (expecting 'u')")
            && message.ends_with(": exit status 1"),
        "{message}"
    );
    ctr.assert_serving();
    assert_eq!(ctr.status("c4"), None, "no task");
    ctr.assert_nothing_left(&["c4"]);
    ctr.ok(&["containers", "rm", "c4"]);
    let snapshots = ctr.snapshots();
    assert!(!snapshots.iter().any(|k| k == "c4"), "{snapshots:?}");
    assert!(ctr.ok(&["containers", "ls", "-q"]).trim().is_empty());
}
