//! Edge operations with the real binary, as root: systemd socket activation
//! (`systemd-socket-activate`), socket groups by name with real users, `ctrd check` exit
//! statuses, the shipped systemd units, and version-4 configs.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};

use common::{
    ctrd_bin, free_port, health_check, require_tool, run_ctrd, wait_for, TestDir, START_DEADLINE,
};
use ctrd::api::health::ServingStatus;

/// A process the test started; killed and reaped on drop.
struct Proc {
    child: Option<Child>,
    log: PathBuf,
}

impl Proc {
    fn spawn(mut cmd: Command, log: PathBuf) -> Proc {
        let file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        cmd.stdin(Stdio::null())
            .stdout(file.try_clone().expect("clone"))
            .stderr(file)
            .env_remove("LISTEN_FDS")
            .env_remove("LISTEN_PID")
            .env_remove("LISTEN_FDNAMES")
            .env_remove("NOTIFY_SOCKET");
        Proc {
            child: Some(cmd.spawn().expect("spawn")),
            log,
        }
    }

    fn pid(&self) -> i32 {
        self.child.as_ref().expect("running").id() as i32
    }

    fn logs(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, sig: i32) {
        ctrd::sys::kill(self.pid(), sig).expect("kill failed");
    }

    fn exited(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Waits for the process to end on its own.
    fn wait_exit(&mut self) -> ExitStatus {
        let status = wait_for("the process to exit", START_DEADLINE, || self.exited());
        self.child = None;
        status
    }

    /// SIGTERM, then wait.
    fn terminate(&mut self) -> ExitStatus {
        self.signal(libc::SIGTERM);
        self.wait_exit()
    }

    /// Waits until Health on `socket` answers `want`; fails early if the process died.
    fn wait_health(&mut self, socket: &Path, want: ServingStatus) {
        let logs = self.log.clone();
        wait_for("the health answer", START_DEADLINE, || {
            if let Some(status) = self.exited() {
                panic!(
                    "exited early ({status}):\n{}",
                    fs::read_to_string(&logs).unwrap_or_default()
                );
            }
            (socket.exists() && health_check(socket).ok() == Some(want)).then_some(())
        });
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `ctrd` with `-c <dir>/config.toml --root --state` and `config` written there.
fn ctrd_command(dir: &TestDir, config: &str, extra: &[&str]) -> Command {
    let base = dir.path.to_string_lossy().into_owned();
    let file = dir.write("config.toml", &config.replace("@DIR@", &base));
    let mut cmd = Command::new(ctrd_bin());
    cmd.arg("--config")
        .arg(file)
        .arg("--root")
        .arg(dir.join("root"))
        .arg("--state")
        .arg(dir.join("state"))
        .args(["--log-level", "debug"])
        .args(extra);
    cmd
}

fn check(args: &[&str]) -> Output {
    let mut all = vec!["check"];
    all.extend_from_slice(args);
    run_ctrd(&all)
}

fn check_socket(socket: &Path, extra: &[&str]) -> (i32, String) {
    let socket = socket.to_string_lossy().into_owned();
    let mut args = vec!["-a", socket.as_str()];
    args.extend_from_slice(extra);
    let out = check(&args);
    (out.status.code().unwrap_or(-1), text(&out.stdout))
}

// ---- socket activation ----------------------------------------------------------------

#[test]
fn socket_activation_serves_on_the_passed_socket_and_leaves_it() {
    let activate = require_tool("systemd-socket-activate");
    let dir = TestDir::new("activate");
    let socket = dir.join("ctrd.sock");
    let config = "version = 3\n[grpc]\n  address = 'fd://'\n";
    let base = dir.path.to_string_lossy().into_owned();
    let file = dir.write("config.toml", &config.replace("@DIR@", &base));
    let mut cmd = Command::new(activate);
    cmd.arg("-l")
        .arg(&socket)
        .arg("--fdname=ctrd")
        .arg(ctrd_bin())
        .arg("--config")
        .arg(&file)
        .arg("--root")
        .arg(dir.join("root"))
        .arg("--state")
        .arg(dir.join("state"))
        .args(["--log-level", "debug"]);
    let mut daemon = Proc::spawn(cmd, dir.join("ctrd.log"));
    daemon.wait_health(&socket, ServingStatus::SERVING);

    let out = common::ctr(&socket, &["version"]);
    assert!(
        out.status.success(),
        "ctr version: {}\n{}",
        text(&out.stderr),
        daemon.logs()
    );
    assert!(
        text(&out.stdout).contains(ctrd::VERSION),
        "{}",
        text(&out.stdout)
    );
    let logs = daemon.logs();
    assert!(
        logs.contains("serving gRPC on the socket systemd passed (fd 3 \\\"ctrd\\\")"),
        "{logs}"
    );
    let ttrpc = dir.join("ctrd.sock.ttrpc");
    assert!(
        ttrpc.exists(),
        "ctrd creates the ttrpc socket beside the passed one"
    );
    assert!(
        logs.contains(&format!(
            "serving on {} (ttrpc {})",
            socket.display(),
            ttrpc.display()
        )),
        "the start-up line names the passed socket's path: {logs}"
    );

    assert!(daemon.terminate().success(), "{}", daemon.logs());
    let meta = fs::metadata(&socket).expect("the passed socket is still there");
    assert!(meta.file_type().is_socket());
    assert!(!ttrpc.exists(), "the socket ctrd created is removed");
}

#[test]
fn socket_activation_passes_the_ttrpc_socket_too() {
    let activate = require_tool("systemd-socket-activate");
    let dir = TestDir::new("activate2");
    let socket = dir.join("api.sock");
    let ttrpc_socket = dir.join("api.sock.ttrpc");
    let config = "version = 3\n[grpc]\n  address = 'fd://'\n[ttrpc]\n  address = 'fd://'\n";
    let file = dir.write("config.toml", config);
    let mut cmd = Command::new(activate);
    // Given in the "wrong" order: names, not positions, decide.
    cmd.arg("-l")
        .arg(&ttrpc_socket)
        .arg("-l")
        .arg(&socket)
        .arg("--fdname=ctrd-ttrpc:ctrd")
        .arg(ctrd_bin())
        .arg("--config")
        .arg(&file)
        .arg("--root")
        .arg(dir.join("root"))
        .arg("--state")
        .arg(dir.join("state"));
    let mut daemon = Proc::spawn(cmd, dir.join("ctrd.log"));
    daemon.wait_health(&socket, ServingStatus::SERVING);

    let client = ttrpc::Client::connect(&format!("unix://{}", ttrpc_socket.display()))
        .expect("ttrpc connect");
    let forwarder = ctrd::api::events_ttrpc::EventsClient::new(client);
    let err = forwarder
        .forward(
            ttrpc::context::with_timeout(5_000_000_000),
            &ctrd::api::events_ttrpc::ForwardRequest::default(),
        )
        .expect_err("no envelope");
    assert!(
        matches!(&err, ttrpc::Error::RpcStatus(s) if s.code() == ttrpc::Code::INVALID_ARGUMENT),
        "the passed ttrpc socket is served: {err:?}\n{}",
        daemon.logs()
    );
    assert!(daemon
        .logs()
        .contains("serving ttrpc on the socket systemd passed (fd 3 \\\"ctrd-ttrpc\\\")"));
    assert!(daemon.terminate().success(), "{}", daemon.logs());
    for path in [&socket, &ttrpc_socket] {
        let meta = fs::metadata(path).expect("a passed socket stays");
        assert!(meta.file_type().is_socket());
    }
}

#[test]
fn fd_address_without_activation_names_listen_fds() {
    let dir = TestDir::new("noactivate");
    let out = ctrd_command(&dir, "version = 3\n[grpc]\n  address = 'fd://'\n", &[])
        .env_remove("LISTEN_FDS")
        .env_remove("LISTEN_PID")
        .stdin(Stdio::null())
        .output()
        .expect("run ctrd");
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("ctrd: [grpc] address \"fd://\""), "{err}");
    assert!(err.contains("LISTEN_FDS is not set"), "{err}");

    // Sockets meant for another process are refused too.
    let out = ctrd_command(&dir, "version = 3\n[grpc]\n  address = 'fd://'\n", &[])
        .env("LISTEN_FDS", "1")
        .env("LISTEN_PID", "1")
        .stdin(Stdio::null())
        .output()
        .expect("run ctrd");
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("LISTEN_PID=1 is not this process"), "{err}");
}

// ---- socket group by name -------------------------------------------------------------

/// A user or group the test created; deleted on drop (even when the test fails).
struct Account {
    delete: &'static str,
    name: String,
}

impl Drop for Account {
    fn drop(&mut self) {
        let _ = Command::new(self.delete)
            .arg(&self.name)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn run_ok(tool: &Path, args: &[&str]) -> String {
    let out = Command::new(tool).args(args).output().expect("run tool");
    assert!(
        out.status.success(),
        "{} {args:?}: {}",
        tool.display(),
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn exists(database: &str, name: &str) -> bool {
    Command::new(require_tool("getent"))
        .args([database, name])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// `ctr --address <socket> version` as user `name`.
fn ctr_as(name: &str, socket: &Path) -> Output {
    let gid = run_ok(&require_tool("id"), &["-g", name]);
    Command::new(require_tool("setpriv"))
        .args(["--reuid", name, "--regid", gid.trim(), "--init-groups"])
        .arg(require_tool("ctr"))
        .arg("--address")
        .arg(socket)
        .arg("version")
        .env("HOME", "/")
        .output()
        .expect("setpriv")
}

#[test]
fn members_of_the_socket_group_use_ctr_without_root() {
    let groupadd = require_tool("groupadd");
    let useradd = require_tool("useradd");
    require_tool("userdel");
    require_tool("groupdel");
    let _group = if exists("group", "ctrd") {
        None
    } else {
        run_ok(&groupadd, &["ctrd"]);
        Some(Account {
            delete: "groupdel",
            name: "ctrd".into(),
        })
    };
    let serial = std::process::id() % 100_000;
    let member = format!("ctrdin{serial}");
    let outsider = format!("ctrdout{serial}");
    let mut accounts = Vec::new();
    for (name, groups) in [(&member, "ctrd"), (&outsider, "")] {
        if exists("passwd", name) {
            let _ = Command::new("userdel").arg(name).status();
        }
        let mut args = vec!["-M", "-N", "-s", "/usr/sbin/nologin"];
        if !groups.is_empty() {
            args.extend(["-G", groups]);
        }
        args.push(name);
        run_ok(&useradd, &args);
        accounts.push(Account {
            delete: "userdel",
            name: name.clone(),
        });
    }

    let dir = TestDir::new("group");
    fs::set_permissions(&dir.path, fs::Permissions::from_mode(0o755)).expect("chmod");
    let socket = dir.join("ctrd.sock");
    let config = "version = 3\n[grpc]\n  address = '@DIR@/ctrd.sock'\n  group = 'ctrd'\n";
    let mut daemon = Proc::spawn(ctrd_command(&dir, config, &[]), dir.join("ctrd.log"));
    daemon.wait_health(&socket, ServingStatus::SERVING);

    let gid = run_ok(&require_tool("getent"), &["group", "ctrd"]);
    let gid: u32 = gid.split(':').nth(2).expect("gid").parse().expect("number");
    let meta = fs::metadata(&socket).expect("stat");
    assert_eq!(meta.gid(), gid, "the socket's group is ctrd");
    assert_eq!(meta.mode() & 0o777, 0o660);

    let out = ctr_as(&member, &socket);
    assert!(
        out.status.success(),
        "a member of ctrd: {}\n{}",
        text(&out.stderr),
        daemon.logs()
    );
    assert!(text(&out.stdout).contains(ctrd::VERSION));
    let out = ctr_as(&outsider, &socket);
    assert!(!out.status.success(), "an outsider was let in");
    assert!(
        text(&out.stderr).contains("permission denied"),
        "{}",
        text(&out.stderr)
    );
    assert!(daemon.terminate().success());
}

#[test]
fn an_unknown_group_stops_start_up_naming_it() {
    let dir = TestDir::new("nogroup");
    let out = ctrd_command(
        &dir,
        "version = 3\n[grpc]\n  address = '@DIR@/ctrd.sock'\n  group = 'nope'\n",
        &[],
    )
    .stdin(Stdio::null())
    .output()
    .expect("run ctrd");
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("ctrd: [grpc] group \"nope\": no such group"),
        "{err}"
    );
    assert!(!dir.join("ctrd.sock").exists());
}

// ---- ctrd check -------------------------------------------------------------------------

#[test]
fn check_says_serving_unreachable_and_usage() {
    let dir = TestDir::new("check");
    let socket = dir.join("ctrd.sock");
    let (code, line) = check_socket(&socket, &[]);
    assert_eq!(code, 2, "{line}");
    assert_eq!(
        line.trim(),
        format!("unreachable: {}: no such socket", socket.display())
    );
    let (code, line) = check_socket(&socket, &["--quiet"]);
    assert_eq!((code, line.as_str()), (2, ""));

    let usage = check(&["--wait", "soon"]);
    assert_eq!(usage.status.code(), Some(3));
    assert!(text(&usage.stderr).starts_with("ctrd check: --wait \"soon\""));
    assert!(text(&usage.stdout).is_empty());

    let config = format!("version = 3\n[grpc]\n  address = '{}'\n", socket.display());
    let mut daemon = Proc::spawn(ctrd_command(&dir, &config, &[]), dir.join("ctrd.log"));
    daemon.wait_health(&socket, ServingStatus::SERVING);
    let (code, line) = check_socket(&socket, &[]);
    assert_eq!((code, line.as_str()), (0, "serving\n"));
    // The address can come from the config instead.
    let by_config = check(&["-c", &dir.join("config.toml").to_string_lossy()]);
    assert_eq!(
        by_config.status.code(),
        Some(0),
        "{}",
        text(&by_config.stderr)
    );
    assert!(daemon.terminate().success());
}

#[test]
fn check_is_not_serving_while_readiness_waits_and_while_draining() {
    let dir = TestDir::new("checkwait");
    let socket = dir.join("ctrd.sock");
    let flag = dir.join("disk-mounted");
    let config = "version = 3\n[grpc]\n  address = '@DIR@/ctrd.sock'\n\
                  [plugins.'io.containerd.grpc.v1.healthcheck']\n\
                    wait_for_paths = ['@DIR@/disk-mounted']\n  shutdown_drain = '1m'\n";
    let mut daemon = Proc::spawn(ctrd_command(&dir, config, &[]), dir.join("ctrd.log"));
    daemon.wait_health(&socket, ServingStatus::NOT_SERVING);
    let (code, line) = check_socket(&socket, &[]);
    assert_eq!(code, 1, "{line}");
    assert_eq!(
        line.trim(),
        format!(
            "not serving: starting: waiting for io.containerd.grpc.v1.healthcheck (paths {})",
            flag.display()
        )
    );
    let out = common::ctr(&socket, &["version"]);
    assert!(out.status.success(), "the API answers before ready");

    fs::write(&flag, "").expect("flag");
    let (code, line) = check_socket(&socket, &["--wait", "30s"]);
    assert_eq!((code, line.as_str()), (0, "serving\n"), "{}", daemon.logs());
    let logs = daemon.logs();
    assert!(
        logs.contains("serving on ") && logs.contains(" plugins (") && logs.contains(" ms\""),
        "the start-up line: {logs}"
    );
    assert!(
        logs.contains("plugin io.containerd.grpc.v1.healthcheck: loaded"),
        "-l debug lists the plugins: {logs}"
    );

    daemon.signal(libc::SIGTERM);
    let line = wait_for("check to see the drain", START_DEADLINE, || {
        let (code, line) = check_socket(&socket, &[]);
        (code == 1).then_some(line)
    });
    assert_eq!(line.trim(), "not serving: stopping");
    // A second signal ends the drain.
    daemon.signal(libc::SIGTERM);
    assert!(daemon.wait_exit().success(), "{}", daemon.logs());
    let (code, _) = check_socket(&socket, &[]);
    assert_eq!(code, 2, "nothing answers once stopped");
}

#[test]
fn check_wait_returns_once_a_daemon_comes_up() {
    let dir = TestDir::new("checkup");
    let socket = dir.join("ctrd.sock");
    let waiter = Command::new(ctrd_bin())
        .args(["check", "-a", &socket.to_string_lossy(), "--wait", "5s"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn check");
    let config = format!("version = 3\n[grpc]\n  address = '{}'\n", socket.display());
    let mut daemon = Proc::spawn(ctrd_command(&dir, &config, &[]), dir.join("ctrd.log"));
    let out = waiter.wait_with_output().expect("check");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        text(&out.stdout),
        daemon.logs()
    );
    assert_eq!(text(&out.stdout), "serving\n");
    assert!(daemon.terminate().success());
}

// ---- systemd units ----------------------------------------------------------------------

fn unit_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/systemd")
}

#[test]
fn units_pass_systemd_analyze_verify() {
    let Some(analyze) = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join("systemd-analyze"))
            .find(|p| p.is_file())
    }) else {
        assert!(
            std::env::var("CI").ok().as_deref() != Some("true"),
            "systemd-analyze is missing (run scripts/setup)"
        );
        eprintln!("systemd-analyze is not installed here: verification not run");
        return;
    };
    // Verified as installed: the binary where ExecStart= says it is.
    let dir = TestDir::new("units");
    for unit in ["ctrd.service", "ctrd.socket"] {
        let body = fs::read_to_string(unit_dir().join(unit)).expect("unit");
        dir.write(unit, &body.replace("/usr/local/bin/ctrd", &ctrd_bin()));
    }
    let out = Command::new(analyze)
        .current_dir(&dir.path)
        .args(["verify", "./ctrd.socket", "./ctrd.service"])
        .output()
        .expect("systemd-analyze");
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

#[test]
fn unit_keys_are_documented_and_match_the_brief() {
    let readme = fs::read_to_string(unit_dir().join("README.md")).expect("README");
    let service = fs::read_to_string(unit_dir().join("ctrd.service")).expect("service");
    let socket = fs::read_to_string(unit_dir().join("ctrd.socket")).expect("socket");
    for body in [&service, &socket] {
        for line in body
            .lines()
            .filter(|l| !l.starts_with('#') && l.contains('='))
        {
            let key = line.split('=').next().expect("key").trim();
            assert!(
                readme.contains(&format!("`{key}=`")),
                "{key}= is not documented in scripts/systemd/README.md"
            );
        }
    }
    for wanted in [
        "Type=notify",
        "Delegate=yes",
        "KillMode=process",
        "OOMScoreAdjust=",
        "LimitNOFILE=",
        "Restart=always",
    ] {
        assert!(service.contains(wanted), "ctrd.service lacks {wanted}");
    }
    assert!(socket.contains("FileDescriptorName=ctrd"));
}

// ---- config version 4 -------------------------------------------------------------------

fn http_get(address: &str, path: &str) -> String {
    let mut stream = std::net::TcpStream::connect(address).expect("connect");
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut body = String::new();
    stream.read_to_string(&mut body).expect("read");
    body
}

#[test]
fn a_version_four_config_dumps_and_runs() {
    let dir = TestDir::new("v4");
    let metrics = format!("127.0.0.1:{}", free_port());
    let config = format!(
        "version = 4\nroot = '@DIR@/root'\nstate = '@DIR@/state'\n\n\
         [debug]\n  level = 'debug'\n  log_trace_id = false\n\n\
         [plugins]\n\
         [plugins.'io.containerd.server.v1.grpc']\n  address = '@DIR@/v4.sock'\n  uid = 0\n  gid = 0\n\
           max_recv_message_size = 16777216\n  max_send_message_size = 16777216\n\
         [plugins.'io.containerd.server.v1.ttrpc']\n  address = '@DIR@/v4-ttrpc.sock'\n  uid = 0\n  gid = 0\n\
         [plugins.'io.containerd.server.v1.metrics']\n  address = '{metrics}'\n\
         [plugins.'io.containerd.metrics.v1.grpc-prometheus']\n  grpc_histogram = true\n"
    );
    let base = dir.path.to_string_lossy().into_owned();
    let file = dir.write("v4.toml", &config.replace("@DIR@", &base));
    let file_arg = file.to_string_lossy().into_owned();

    // Dumped in version 3 unless version 4 is asked for.
    let dump = run_ctrd(&["-c", &file_arg, "config", "dump"]);
    assert!(dump.status.success(), "{}", text(&dump.stderr));
    let v3 = text(&dump.stdout);
    assert!(v3.starts_with("version = 3\n"), "{v3}");
    assert!(
        v3.contains(&format!("[grpc]\n  address = '{base}/v4.sock'")),
        "{v3}"
    );
    assert!(
        v3.contains(&format!("[ttrpc]\n  address = '{base}/v4-ttrpc.sock'")),
        "{v3}"
    );
    assert!(v3.contains(&format!(
        "[metrics]\n  address = '{metrics}'\n  grpc_histogram = true"
    )));
    assert!(!v3.contains("io.containerd.server.v1"), "{v3}");
    let migrated = run_ctrd(&["-c", &file_arg, "config", "migrate", "--to", "4"]);
    assert!(migrated.status.success(), "{}", text(&migrated.stderr));
    let v4 = text(&migrated.stdout);
    assert!(v4.starts_with("version = 4\n"), "{v4}");
    assert!(!v4.contains("\n[grpc]") && !v4.contains("\n[ttrpc]") && !v4.contains("\n[metrics]"));
    assert!(v4.contains("[debug]\n  level = 'debug'\n  format = ''\n  log_trace_id = false\n"));
    assert!(
        v4.contains(&format!(
            "[plugins.'io.containerd.server.v1.grpc']\n    address = '{base}/v4.sock'\n    uid = 0\n    gid = 0\n    max_recv_message_size = 16777216\n    max_send_message_size = 16777216\n"
        )),
        "{v4}"
    );
    assert!(v4.contains(
        "[plugins.'io.containerd.metrics.v1.grpc-prometheus']\n    grpc_histogram = true"
    ));
    // The version-4 output reads back to the same configuration.
    let again = dir.write("again.toml", &v4);
    let redump = run_ctrd(&["-c", &again.to_string_lossy(), "config", "dump"]);
    assert_eq!(text(&redump.stdout), v3);

    // And it runs: the listeners are where the version-4 sections say.
    let mut cmd = Command::new(ctrd_bin());
    cmd.args(["--config", &file_arg]);
    let mut daemon = Proc::spawn(cmd, dir.join("ctrd.log"));
    let socket = dir.join("v4.sock");
    daemon.wait_health(&socket, ServingStatus::SERVING);
    let out = common::ctr(&socket, &["version"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(dir.join("v4-ttrpc.sock").exists(), "{}", daemon.logs());
    let body = http_get(&metrics, "/v1/metrics");
    assert!(body.contains("grpc_server_handling_seconds"), "{body}");
    assert!(daemon.terminate().success());

    // Older versions migrate to 4 on request.
    let v1 = dir.write(
        "v1.toml",
        "[grpc]\n  address = '/run/old.sock'\n  uid = 7\n[plugins.bolt]\n  content_sharing_policy = 'isolated'\n",
    );
    let out = run_ctrd(&[
        "-c",
        &v1.to_string_lossy(),
        "config",
        "migrate",
        "--to",
        "4",
    ]);
    let v4 = text(&out.stdout);
    assert!(v4.contains("[plugins.'io.containerd.server.v1.ttrpc']\n    address = '/run/old.sock.ttrpc'\n    uid = 7\n"), "{v4}");
    assert!(
        v4.contains(
            "[plugins.'io.containerd.metadata.v1.bolt']\n    content_sharing_policy = 'isolated'"
        ),
        "{v4}"
    );
    let v5 = dir.write("v5.toml", "version = 5\n");
    let out = run_ctrd(&["-c", &v5.to_string_lossy(), "config", "dump"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr)
        .contains("expected containerd config version equal to or less than `4`, got `5`"));
}
