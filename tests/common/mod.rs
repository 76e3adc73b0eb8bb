//! Shared harness for the integration tests: starts the real `ctrd` binary on temporary
//! directories, waits until its socket answers, and stops it on drop.
#![allow(dead_code)]

pub mod containers;
pub mod image;
pub mod peer;

use std::fs;
use std::io::Read;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ctrd::api::health::{HealthCheckRequest, HealthClient, ServingStatus};
use grpcio::{ChannelBuilder, EnvBuilder};

/// How long a daemon may take to start or stop in tests (generous for slow CI machines).
pub const START_DEADLINE: Duration = Duration::from_secs(30);

/// The binary under test: the one cargo built, or `$CTRD_BIN` (e.g. the static build).
pub fn ctrd_bin() -> String {
    std::env::var("CTRD_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_ctrd").to_string())
}

/// A required external tool; a missing tool fails the test loudly.
pub fn require_tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!("required tool `{name}` is not installed (run scripts/setup)");
}

/// Polls `check` until it returns `Some` or the deadline passes.
/// A TCP port on 127.0.0.1 that nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

pub fn wait_for<T>(what: &str, deadline: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(start.elapsed() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A temporary base directory with short paths (unix socket paths are limited to 104 bytes).
pub struct TestDir {
    pub path: PathBuf,
}

impl TestDir {
    pub fn new(name: &str) -> TestDir {
        let base = std::env::var_os("CTRD_TEST_TMP")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/tmp"));
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let serial = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let path = base.join(format!("ctrd-{name}-{}-{serial}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).expect("create test dir");
        TestDir { path }
    }

    pub fn join(&self, rel: &str) -> PathBuf {
        self.path.join(rel)
    }

    pub fn write(&self, rel: &str, text: &str) -> PathBuf {
        let path = self.join(rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).expect("mkdir");
        }
        fs::write(&path, text).expect("write file");
        path
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// A running ctrd.
pub struct Daemon {
    pub dir: TestDir,
    pub socket: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
    /// The full command line, to start the daemon again on the same directories.
    args: Vec<std::ffi::OsString>,
    env: Vec<(String, String)>,
}

/// How to start a daemon.
#[derive(Default)]
pub struct Options {
    /// Config file text written to `config.toml` and passed with `--config`.
    pub config: Option<String>,
    pub extra_args: Vec<String>,
    pub env: Vec<(String, String)>,
}

impl Daemon {
    pub fn start(name: &str) -> Daemon {
        Daemon::start_with(name, Options::default())
    }

    pub fn start_with(name: &str, options: Options) -> Daemon {
        let dir = TestDir::new(name);
        let socket = dir.join("ctrd.sock");
        let log = dir.join("ctrd.log");
        let mut args: Vec<std::ffi::OsString> = vec![
            "--root".into(),
            dir.join("root").into(),
            "--state".into(),
            dir.join("state").into(),
            "--address".into(),
            socket.clone().into(),
            "--log-level".into(),
            "debug".into(),
        ];
        let text = match &options.config {
            Some(text) => text.replace("@DIR@", &dir.path.to_string_lossy()),
            // Never read the machine's /etc/ctrd/config.toml.
            None => "version = 3\n".to_string(),
        };
        args.push("--config".into());
        args.push(dir.write("config.toml", &text).into());
        args.extend(options.extra_args.iter().map(Into::into));
        let mut daemon = Daemon {
            dir,
            socket,
            log,
            child: None,
            args,
            env: options.env,
        };
        daemon.spawn();
        daemon
    }

    /// Starts the binary with the recorded command line and waits until it serves.
    fn spawn(&mut self) {
        let mut cmd = Command::new(ctrd_bin());
        cmd.args(&self.args);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let logfile = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        cmd.stdin(Stdio::null())
            .stdout(logfile.try_clone().expect("clone"))
            .stderr(logfile);
        self.child = Some(cmd.spawn().expect("spawn ctrd"));
        self.wait_serving();
    }

    /// SIGKILL, as a power cut would stop it: no clean-up runs.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("kill ctrd");
            child.wait().expect("reap ctrd");
        }
    }

    /// Starts the daemon again on the same directories (after [`Daemon::kill`] or
    /// [`Daemon::terminate`]).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "restart of a running daemon");
        self.spawn();
    }

    fn wait_serving(&mut self) {
        let socket = self.socket.clone();
        let start = Instant::now();
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok())
                .flatten()
            {
                panic!("ctrd exited early ({status}):\n{}", self.logs());
            }
            if socket.exists() && UnixStream::connect(&socket).is_ok() {
                if let Ok(ServingStatus::SERVING) = health_check(&socket) {
                    return;
                }
            }
            assert!(
                start.elapsed() < START_DEADLINE,
                "ctrd did not become healthy:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("running").id() as i32
    }

    pub fn logs(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut text);
        }
        text
    }

    pub fn signal(&self, sig: i32) {
        ctrd::sys::kill(self.pid(), sig).expect("kill failed");
    }

    /// Sends SIGTERM and waits; returns the exit status and how long it took.
    pub fn terminate(&mut self) -> (ExitStatus, Duration) {
        self.signal(libc::SIGTERM);
        let start = Instant::now();
        let mut child = self.child.take().expect("running");
        let status = wait_for("ctrd to exit", START_DEADLINE, || {
            child.try_wait().ok().flatten()
        });
        (status, start.elapsed())
    }

    /// `ctr --address <socket> <args>`.
    pub fn ctr(&self, args: &[&str]) -> Output {
        ctr(&self.socket, args)
    }

    /// Like [`Daemon::ctr`] but asserts success and returns stdout.
    pub fn ctr_ok(&self, args: &[&str]) -> String {
        let out = self.ctr(args);
        assert!(
            out.status.success(),
            "ctr {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.logs()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn channel(&self) -> grpcio::Channel {
        unix_channel(&self.socket)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // A failing test shows what the daemon logged last (the harness prints it with the
        // failure).
        if std::thread::panicking() {
            let logs = self.logs();
            let lines: Vec<&str> = logs.lines().collect();
            let tail = lines[lines.len().saturating_sub(80)..].join("\n");
            eprintln!("--- the daemon's log, last 80 lines ---\n{tail}\n---");
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn ctr(socket: &Path, args: &[&str]) -> Output {
    Command::new(require_tool("ctr"))
        .arg("--address")
        .arg(socket)
        .args(args)
        .output()
        .expect("run ctr")
}

pub fn unix_channel(socket: &Path) -> grpcio::Channel {
    let env = Arc::new(EnvBuilder::new().cq_count(1).build());
    ChannelBuilder::new(env).connect(&format!("unix:{}", socket.display()))
}

pub fn health_check(socket: &Path) -> grpcio::Result<ServingStatus> {
    let client = HealthClient::new(unix_channel(socket));
    let opt = grpcio::CallOption::default().timeout(Duration::from_secs(2));
    client
        .check_opt(&HealthCheckRequest::default(), opt)
        .map(|r| r.status.enum_value_or_default())
}

/// Runs ctrd to completion with `args`; for commands that print or fail.
pub fn run_ctrd(args: &[&str]) -> Output {
    Command::new(ctrd_bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run ctrd")
}

/// Call options with the namespace header, the lease header when given, and
/// [`START_DEADLINE`] as the deadline.
pub fn call_opt(ns: &str, lease: Option<&str>) -> grpcio::CallOption {
    let mut headers = grpcio::MetadataBuilder::new();
    headers
        .add_str("containerd-namespace", ns)
        .expect("namespace header");
    if let Some(lease) = lease {
        headers
            .add_str("containerd-lease", lease)
            .expect("lease header");
    }
    grpcio::CallOption::default()
        .headers(headers.build())
        .timeout(START_DEADLINE)
}

/// The status code and message a call failed with; panics on success or when the call
/// did not get as far as a status.
pub fn rpc_status<T>(result: grpcio::Result<T>) -> (grpcio::RpcStatusCode, String) {
    match result {
        Err(grpcio::Error::RpcFailure(status)) => (status.code(), status.message().to_string()),
        Err(other) => panic!("expected an RPC status, got {other}"),
        Ok(_) => panic!("expected an RPC error, got success"),
    }
}
