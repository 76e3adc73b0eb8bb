//! A shim as a process and a connection: the binary's `start` and `delete` commands, the
//! ttrpc client of its `containerd.task.v2.Task` API, and its errors mapped to ours.
//!
//! `start` runs as containerd runs it: cwd = bundle, own process group, `-namespace
//! -address -publish-binary -id [-debug] start`, `TTRPC_ADDRESS` and `GOMAXPROCS` in the
//! environment, the runtime options (a marshalled `Any`) on stdin followed by EOF. It
//! prints the socket address of the long-lived shim it forked (or of the running shim of
//! the same group) and exits. `delete` cleans up after a shim that is gone and prints a
//! marshalled `DeleteResponse`.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use protobuf::Message as _;

use super::bundle::Bundle;
use crate::api::shim_task::{self, TaskClient};
use crate::api::Any;
use crate::errdefs::{Class, Error};

/// What every shim command needs to know about the daemon.
#[derive(Debug, Clone)]
pub struct DaemonAddresses {
    pub grpc: String,
    pub ttrpc: String,
    /// The daemon's own executable (`-publish-binary`; the 1.6+ shims never run it).
    pub publish_binary: PathBuf,
    pub debug: bool,
}

/// The name of a runtime's shim binary: `io.containerd.runc.v2` → `containerd-shim-runc-v2`.
pub fn binary_name(runtime: &str) -> Option<String> {
    let parts: Vec<&str> = runtime.split('.').collect();
    if parts.len() < 2 || parts.iter().any(|p| p.is_empty()) {
        return None;
    }
    Some(format!(
        "containerd-shim-{}-{}",
        parts[parts.len() - 2],
        parts[parts.len() - 1]
    ))
}

/// Finds the shim binary of `runtime`: an absolute path as is; else `<name>` next to the
/// runtime name's directory, on `PATH`, then next to the daemon's executable.
pub fn resolve_binary(runtime: &str, extra_dirs: &[PathBuf]) -> Result<PathBuf, Error> {
    if runtime.is_empty() {
        return Err(Error::unknown("no runtime name"));
    }
    let path = Path::new(runtime);
    if path.is_absolute() {
        return match std::fs::metadata(path) {
            Ok(_) => Ok(path.to_path_buf()),
            Err(err) => Err(Error::unknown(format!("invalid custom binary path: {err}"))),
        };
    }
    let name = binary_name(runtime).ok_or_else(|| {
        Error::unknown(format!(
            "invalid runtime name {runtime}, correct runtime name should be either format like `io.containerd.runc.v1` or a full path to the binary"
        ))
    })?;
    let mut dirs: Vec<PathBuf> = extra_dirs.to_vec();
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        dirs.push(parent.to_path_buf());
    }
    if let Some(paths) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&paths));
    }
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf))
    {
        dirs.push(dir);
    }
    for dir in dirs {
        let candidate = dir.join(&name);
        if candidate.is_file() {
            return std::path::absolute(&candidate)
                .map_err(|err| Error::from(err).context("resolve shim path"));
        }
    }
    Err(Error::unknown(format!(
        "runtime {runtime:?} binary not installed {name:?}: file does not exist"
    )))
}

fn command(binary: &Path, bundle: &Bundle, daemon: &DaemonAddresses, tail: &[&str]) -> Command {
    let mut cmd = Command::new(binary);
    cmd.current_dir(&bundle.path)
        .arg("-namespace")
        .arg(&bundle.namespace)
        .arg("-address")
        .arg(&daemon.grpc)
        .arg("-publish-binary")
        .arg(&daemon.publish_binary)
        .arg("-id")
        .arg(&bundle.id);
    cmd.args(tail)
        .env("TTRPC_ADDRESS", &daemon.ttrpc)
        .env("GOMAXPROCS", "2");
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    cmd
}

/// Runs the shim's `start`; returns the socket address it printed.
pub fn start(
    binary: &Path,
    bundle: &Bundle,
    daemon: &DaemonAddresses,
    options: Option<&Any>,
) -> Result<String, Error> {
    let mut tail = Vec::new();
    if daemon.debug {
        tail.push("-debug");
    }
    tail.push("start");
    let mut cmd = command(binary, bundle, daemon, &tail);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|err| Error::unknown(format!("fork/exec {}: {err}", binary.display())))?;
    let input = match options {
        Some(any) => any
            .write_to_bytes()
            .map_err(|err| Error::internal(format!("encode runtime options: {err}")))?,
        None => Vec::new(),
    };
    if let Some(mut stdin) = child.stdin.take() {
        // The shim reads stdin to its end: closing it (the drop) is the end.
        let _ = stdin.write_all(&input);
    }
    let out = child
        .wait_with_output()
        .map_err(|err| Error::from(err).context("wait for shim start"))?;
    if !out.status.success() {
        return Err(start_error(&out));
    }
    parse_address(&String::from_utf8_lossy(&out.stdout))
}

/// A failed `start`: what the shim said (stderr, else stdout) and how it ended.
fn start_error(out: &std::process::Output) -> Error {
    let mut text = String::from_utf8_lossy(&out.stderr).trim().to_string();
    if text.is_empty() {
        text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    }
    Error::unknown(format!("{text}: {}", exit_text(out.status)))
}

/// A process's end as Go's `os/exec` words it (`exit status 1`), which is how containerd
/// reports a shim command that failed.
fn exit_text(status: std::process::ExitStatus) -> String {
    match status.code() {
        Some(code) => format!("exit status {code}"),
        None => status.to_string(),
    }
}

/// The address in a shim's `start` output: a bare address (1.x shims) or the JSON
/// bootstrap object of 2.x shims.
pub fn parse_address(out: &str) -> Result<String, Error> {
    let out = out.trim();
    if out.starts_with('{') {
        let value: serde_json::Value = serde_json::from_str(out)
            .map_err(|err| Error::unknown(format!("shim start output {out:?}: {err}")))?;
        if let Some(address) = value.get("address").and_then(|a| a.as_str()) {
            return Ok(address.to_string());
        }
    }
    if out.is_empty() || out.contains('\n') {
        return Err(Error::unknown(format!(
            "shim start printed no address: {out:?}"
        )));
    }
    Ok(out.to_string())
}

/// Runs the shim's `delete` for a shim that is gone (or was shut down): it kills and
/// deletes the container with runc and unmounts the rootfs.
pub fn delete(
    binary: &Path,
    bundle: &Bundle,
    daemon: &DaemonAddresses,
    timeout: Duration,
) -> Result<shim_task::DeleteResponse, Error> {
    let bundle_path = bundle.path.to_string_lossy().into_owned();
    let mut tail = vec!["-bundle", bundle_path.as_str()];
    if daemon.debug {
        tail.push("-debug");
    }
    tail.push("delete");
    let mut cmd = command(binary, bundle, daemon, &tail);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|err| Error::from(err).context("failed to run shim delete"))?;
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let (tx, rx) = crossbeam_channel::bounded(1);
    let reader = std::thread::Builder::new()
        .name("ctrd-shim-del".into())
        .spawn(move || {
            let mut out = Vec::new();
            let mut err = Vec::new();
            let _ = stdout.read_to_end(&mut out);
            let _ = stderr.read_to_end(&mut err);
            let _ = tx.send((out, err));
        })
        .map_err(|err| Error::from(err).context("spawn shim delete reader"))?;
    let (out, err) = match rx.recv_timeout(timeout) {
        Ok(outputs) => outputs,
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            let _ = reader.join();
            return Err(Error::new(
                Class::DeadlineExceeded,
                format!("shim delete of {} timed out", bundle.id),
            ));
        }
    };
    let _ = reader.join();
    let status = child
        .wait()
        .map_err(|err| Error::from(err).context("wait for shim delete"))?;
    if !status.success() {
        return Err(Error::unknown(format!(
            "failed to delete shim: {}: {status}",
            String::from_utf8_lossy(&err).trim()
        )));
    }
    shim_task::DeleteResponse::parse_from_bytes(&out)
        .map_err(|e| Error::unknown(format!("decode shim delete response: {e}")))
}

/// The error a shim call failed with, in ctrd's terms (codes and texts as the shim sent
/// them, so `ctr` prints what containerd would).
pub fn map_error(err: ttrpc::Error) -> Error {
    Error::from_ttrpc(err)
}

/// A connection to one shim's task API.
#[derive(Clone)]
pub struct ShimClient {
    client: TaskClient,
    namespace: String,
}

impl ShimClient {
    /// Connects to `address` (`unix://…` as the shim printed it).
    pub fn connect(address: &str, namespace: &str) -> Result<ShimClient, Error> {
        let path = address.strip_prefix("unix://").unwrap_or(address);
        let client = ttrpc::sync::Client::connect(&format!("unix://{path}")).map_err(|err| {
            Error::unavailable(format!("failed to connect to shim {address}: {err}"))
        })?;
        Ok(ShimClient {
            client: TaskClient::new(client),
            namespace: namespace.to_string(),
        })
    }

    /// A call context with the namespace and an optional deadline.
    pub fn ctx(&self, timeout: Option<Duration>) -> ttrpc::context::Context {
        let mut ctx = match timeout {
            Some(t) => ttrpc::context::with_duration(t),
            None => ttrpc::context::Context::default(),
        };
        ctx.add(
            crate::rpc::TTRPC_NAMESPACE_HEADER.to_string(),
            self.namespace.clone(),
        );
        ctx
    }

    pub fn task(&self) -> &TaskClient {
        &self.client
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_names_map_to_binaries() {
        assert_eq!(
            binary_name("io.containerd.runc.v2").as_deref(),
            Some("containerd-shim-runc-v2")
        );
        assert_eq!(binary_name("runc").as_deref(), None);
        assert_eq!(binary_name("a..b").as_deref(), None);
    }

    #[test]
    fn unknown_runtimes_are_named_in_the_error() {
        // Plain errors in containerd, so `ctr` ends them with `: unknown`.
        let err = resolve_binary("io.containerd.nosuch.v9", &[]).unwrap_err();
        assert_eq!(err.class(), Class::Unknown);
        assert_eq!(
            err.message(),
            "runtime \"io.containerd.nosuch.v9\" binary not installed \"containerd-shim-nosuch-v9\": file does not exist"
        );
        let err = resolve_binary("runc", &[]).unwrap_err();
        assert_eq!(err.class(), Class::Unknown);
        assert!(err.message().starts_with("invalid runtime name runc"));
        let err = resolve_binary("/no/such/shim", &[]).unwrap_err();
        assert_eq!(err.class(), Class::Unknown);
        assert!(err.message().starts_with("invalid custom binary path"));
    }

    #[test]
    fn a_failed_start_reports_what_the_shim_said_and_its_exit() {
        use std::os::unix::process::ExitStatusExt as _;
        let out = |code: i32, stdout: &str, stderr: &str| std::process::Output {
            status: std::process::ExitStatus::from_raw(code << 8),
            stdout: stdout.as_bytes().to_vec(),
            stderr: stderr.as_bytes().to_vec(),
        };
        let err = start_error(&out(1, "", "io.containerd.runc.v2: bad spec\n"));
        assert_eq!(err.class(), Class::Unknown);
        assert_eq!(
            err.message(),
            "io.containerd.runc.v2: bad spec: exit status 1"
        );
        assert_eq!(
            start_error(&out(2, "usage\n", "")).message(),
            "usage: exit status 2"
        );
    }

    #[test]
    fn binaries_are_found_in_extra_dirs() {
        let dir = tempfile::tempdir().unwrap();
        let shim = dir.path().join("containerd-shim-test-v7");
        std::fs::write(&shim, b"").unwrap();
        assert_eq!(
            resolve_binary("io.containerd.test.v7", &[dir.path().to_path_buf()]).unwrap(),
            shim
        );
    }

    #[test]
    fn start_output_is_parsed_for_every_shim_generation() {
        assert_eq!(
            parse_address("unix:///run/containerd/s/abc\n").unwrap(),
            "unix:///run/containerd/s/abc"
        );
        assert_eq!(
            parse_address(r#"{"version":3,"address":"unix:///x","protocol":"ttrpc"}"#).unwrap(),
            "unix:///x"
        );
        assert!(parse_address("").is_err());
    }

    #[test]
    fn shim_statuses_keep_code_and_text() {
        let status = ttrpc::get_status(
            ttrpc::Code::FAILED_PRECONDITION,
            "task must be stopped before deletion: running: failed precondition",
        );
        let err = map_error(ttrpc::Error::RpcStatus(status));
        assert_eq!(err.class(), Class::FailedPrecondition);
        assert_eq!(
            err.message(),
            "task must be stopped before deletion: running: failed precondition"
        );
        let err = map_error(ttrpc::Error::Socket("reset".into()));
        assert_eq!(err.class(), Class::Unavailable);
    }
}
