//! `ctrd check`: a probe for shell scripts and init systems. It asks the daemon's gRPC Health
//! service (`grpc.health.v1.Health/Check`) over the unix socket and answers with an exit
//! status and one line on stdout:
//!
//! | exit | line | when |
//! |---|---|---|
//! | 0 | `serving` | the daemon is ready |
//! | 1 | `not serving: <reason>` | still starting (what readiness waits for), or stopping |
//! | 2 | `unreachable: <why>` | no socket, refused, no answer in time |
//! | 3 | (stderr) `ctrd check: <problem>` | a usage error |
//!
//! `--wait D` asks again every 100 ms until the answer is SERVING or `D` has passed, then
//! reports the last answer. Runs on the calling thread (plus gRPC's client thread).

use std::io::ErrorKind;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::api::health::{HealthCheckRequest, ServingStatus, METHOD_HEALTH_CHECK};
use crate::cli::DEFAULT_CONFIG_PATH;
use crate::services::health::REASON_HEADER;

/// The exit status of a usage error.
pub const USAGE_ERROR: i32 = 3;

const RETRY: Duration = Duration::from_millis(100);

pub const USAGE: &str = "\
USAGE:
    ctrd check [-a SOCK] [-c CFG] [--timeout 2s] [--wait 30s] [--quiet]

Asks ctrd's Health service whether it is serving. Exit 0 serving, 1 not serving (starting
or stopping), 2 unreachable, 3 usage error; one line on stdout unless --quiet.

    -a, --address <path>   the gRPC socket (default: [grpc] address of the config)
    -c, --config <path>    the config to read the address from (default /etc/ctrd/config.toml
                           if it exists, else /run/containerd/containerd.sock is asked)
        --timeout <d>      how long one question may take (default 2s)
        --wait <d>         ask again until serving or <d> has passed (default: ask once)
    -q, --quiet            print nothing; the exit status says it all
";

/// What was asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckArgs {
    pub address: Option<String>,
    pub config: Option<PathBuf>,
    pub timeout: Duration,
    pub wait: Duration,
    pub quiet: bool,
}

/// One answer, as the exit status and the line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Serving,
    NotServing(String),
    Unreachable(String),
}

impl Outcome {
    pub fn code(&self) -> i32 {
        match self {
            Outcome::Serving => 0,
            Outcome::NotServing(_) => 1,
            Outcome::Unreachable(_) => 2,
        }
    }

    pub fn line(&self) -> String {
        match self {
            Outcome::Serving => "serving".into(),
            Outcome::NotServing(why) => format!("not serving: {why}"),
            Outcome::Unreachable(why) => format!("unreachable: {why}"),
        }
    }
}

/// The flags that take a value in `ctrd [FLAGS] <command>`, to find the command word.
const VALUE_FLAGS: [&str; 8] = [
    "-c",
    "--config",
    "-a",
    "--address",
    "--root",
    "--state",
    "-l",
    "--log-level",
];

/// The arguments for `check` when the command word is `check` (flags before it included).
pub fn requested(args: &[String]) -> Option<Vec<String>> {
    let mut i = 0;
    while i < args.len() {
        let arg = args[i].as_str();
        if arg == "check" {
            let mut rest = args[..i].to_vec();
            rest.extend_from_slice(&args[i + 1..]);
            return Some(rest);
        }
        if !arg.starts_with('-') {
            return None;
        }
        i += if VALUE_FLAGS.contains(&arg) { 2 } else { 1 };
    }
    None
}

/// Parses the flags of `check` (without the word itself).
pub fn parse(args: &[String]) -> Result<CheckArgs, String> {
    let mut parsed = CheckArgs {
        address: None,
        config: None,
        timeout: Duration::from_secs(2),
        wait: Duration::ZERO,
        quiet: false,
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with('-') => (flag, Some(value.to_string())),
            _ => (arg.as_str(), None),
        };
        let mut value = || -> Result<String, String> {
            inline
                .clone()
                .or_else(|| args.next().cloned())
                .ok_or_else(|| format!("flag needs an argument: {flag}"))
        };
        let duration = |text: String| -> Result<Duration, String> {
            crate::config::parse_duration(&text)
                .map_err(|_| format!("{flag} {text:?}: not a duration (e.g. 2s, 500ms)"))
        };
        match flag {
            "-a" | "--address" => parsed.address = Some(value()?),
            "-c" | "--config" => parsed.config = Some(PathBuf::from(value()?)),
            "--timeout" => parsed.timeout = duration(value()?)?,
            "--wait" => parsed.wait = duration(value()?)?,
            "-q" | "--quiet" => parsed.quiet = true,
            "-h" | "--help" => return Err(String::new()),
            _ if flag.starts_with('-') => {
                return Err(format!("flag provided but not defined: {flag}"))
            }
            _ => return Err(format!("unexpected argument {arg:?}")),
        }
    }
    if parsed.timeout.is_zero() {
        return Err("--timeout must be more than 0s".into());
    }
    Ok(parsed)
}

/// The socket to ask: `-a`, else the config's `[grpc] address`.
pub fn socket(args: &CheckArgs) -> Result<PathBuf, String> {
    if let Some(address) = &args.address {
        return Ok(PathBuf::from(address.trim_start_matches("unix://")));
    }
    let (path, named) = match &args.config {
        Some(path) => (path.clone(), true),
        None => (PathBuf::from(DEFAULT_CONFIG_PATH), false),
    };
    if !named && !path.exists() {
        return Ok(PathBuf::from(crate::config::Config::default().grpc.address));
    }
    let registry = crate::server::registry().map_err(|err| err.to_string())?;
    let migrations: Vec<crate::config::PluginMigration> = registry
        .registrations()
        .iter()
        .filter_map(|r| r.config_migration)
        .collect();
    let config = crate::config::load(&path, &migrations).map_err(|err| err.to_string())?;
    let address = config.grpc.address;
    if address.starts_with("fd://") {
        return Err(format!(
            "{}: [grpc] address is {address:?} (a socket systemd passes); give its path with -a",
            path.display()
        ));
    }
    Ok(PathBuf::from(address))
}

/// Asks once; `timeout` bounds the whole question.
pub fn probe(socket: &Path, timeout: Duration) -> Outcome {
    let shown = socket.display();
    if let Err(err) = UnixStream::connect(socket) {
        let why = match err.kind() {
            ErrorKind::NotFound => "no such socket".to_string(),
            ErrorKind::ConnectionRefused => "connection refused (nothing listens)".to_string(),
            ErrorKind::PermissionDenied => "permission denied".to_string(),
            _ => err.to_string(),
        };
        return Outcome::Unreachable(format!("{shown}: {why}"));
    }
    crate::sys::start_grpc_core();
    let env = Arc::new(grpcio::EnvBuilder::new().cq_count(1).build());
    let channel = grpcio::ChannelBuilder::new(env).connect(&format!("unix:{shown}"));
    // The asynchronous form, for the answer's headers (the reason).
    let client = grpcio::Client::new(channel);
    let option = grpcio::CallOption::default().timeout(timeout);
    let request = HealthCheckRequest::default();
    let mut receiver = match client.unary_call_async(&METHOD_HEALTH_CHECK, &request, option) {
        Ok(receiver) => receiver,
        Err(err) => return Outcome::Unreachable(format!("{shown}: {err}")),
    };
    let answer = futures_executor::block_on(async {
        let reason = receiver.headers().await.ok().and_then(|headers| {
            headers
                .iter()
                .find(|(key, _)| *key == REASON_HEADER)
                .map(|(_, value)| String::from_utf8_lossy(value).into_owned())
        });
        (reason, receiver.message().await)
    });
    match answer {
        (_, Ok(resp)) if resp.status.enum_value_or_default() == ServingStatus::SERVING => {
            Outcome::Serving
        }
        (reason, Ok(resp)) => Outcome::NotServing(reason.unwrap_or_else(|| {
            format!(
                "the daemon reports {:?}",
                resp.status.enum_value_or_default()
            )
        })),
        (_, Err(grpcio::Error::RpcFailure(status)))
            if status.code() == grpcio::RpcStatusCode::DEADLINE_EXCEEDED =>
        {
            Outcome::Unreachable(format!(
                "{shown}: no answer within {}",
                crate::config::format_duration(timeout)
            ))
        }
        (_, Err(grpcio::Error::RpcFailure(status))) => Outcome::Unreachable(format!(
            "{shown}: {:?}: {}",
            status.code(),
            status.message()
        )),
        (_, Err(err)) => Outcome::Unreachable(format!("{shown}: {err}")),
    }
}

/// Asks until SERVING or `args.wait` has passed.
pub fn check(socket: &Path, args: &CheckArgs) -> Outcome {
    let deadline = Instant::now() + args.wait;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let timeout = if args.wait.is_zero() {
            args.timeout
        } else {
            args.timeout.min(left).max(Duration::from_millis(50))
        };
        let outcome = probe(socket, timeout);
        let left = deadline.saturating_duration_since(Instant::now());
        if outcome == Outcome::Serving || left.is_zero() {
            return outcome;
        }
        std::thread::sleep(RETRY.min(left));
    }
}

/// `ctrd check …`: returns the exit status.
pub fn run(args: &[String]) -> i32 {
    let parsed = match parse(args) {
        Ok(parsed) => parsed,
        Err(problem) if problem.is_empty() => {
            print!("{USAGE}");
            return 0;
        }
        Err(problem) => {
            eprintln!("ctrd check: {problem}\n\n{USAGE}");
            return USAGE_ERROR;
        }
    };
    let socket = match socket(&parsed) {
        Ok(socket) => socket,
        Err(problem) => {
            eprintln!("ctrd check: {problem}");
            return USAGE_ERROR;
        }
    };
    let outcome = check(&socket, &parsed);
    if !parsed.quiet {
        println!("{}", outcome.line());
    }
    outcome.code()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_command_word_is_found_after_global_flags() {
        assert_eq!(
            requested(&strings(&["check", "--quiet"])),
            Some(strings(&["--quiet"]))
        );
        assert_eq!(
            requested(&strings(&["-a", "/s", "check", "--wait", "5s"])),
            Some(strings(&["-a", "/s", "--wait", "5s"]))
        );
        assert_eq!(
            requested(&strings(&["-c", "check"])),
            None,
            "a flag's value"
        );
        assert_eq!(requested(&strings(&["config", "dump"])), None);
        assert_eq!(requested(&strings(&[])), None);
    }

    #[test]
    fn flags_and_usage_errors() {
        let parsed = parse(&strings(&[
            "-a",
            "/run/x.sock",
            "--timeout=500ms",
            "--wait",
            "30s",
            "-q",
        ]))
        .expect("parse");
        assert_eq!(parsed.address.as_deref(), Some("/run/x.sock"));
        assert_eq!(parsed.timeout, Duration::from_millis(500));
        assert_eq!(parsed.wait, Duration::from_secs(30));
        assert!(parsed.quiet);
        let defaults = parse(&[]).expect("defaults");
        assert_eq!(defaults.timeout, Duration::from_secs(2));
        assert_eq!(defaults.wait, Duration::ZERO);
        assert_eq!(
            parse(&strings(&["--wait", "soon"])).expect_err("bad duration"),
            "--wait \"soon\": not a duration (e.g. 2s, 500ms)"
        );
        assert_eq!(
            parse(&strings(&["--timeout"])).expect_err("missing"),
            "flag needs an argument: --timeout"
        );
        assert!(parse(&strings(&["--root", "/x"]))
            .expect_err("not a check flag")
            .contains("--root"));
        assert!(parse(&strings(&["--timeout", "0s"])).is_err());
    }

    #[test]
    fn no_socket_and_nothing_listening_are_unreachable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("none.sock");
        let outcome = probe(&missing, Duration::from_secs(1));
        assert_eq!(outcome.code(), 2);
        assert!(outcome.line().ends_with("none.sock: no such socket"));
        let stale = dir.path().join("stale.sock");
        drop(std::os::unix::net::UnixListener::bind(&stale).expect("bind"));
        let outcome = probe(&stale, Duration::from_secs(1));
        assert!(outcome.line().contains("connection refused"), "{outcome:?}");
    }

    #[test]
    fn the_address_comes_from_the_flag_or_the_config() {
        let dir = tempfile::tempdir().expect("tempdir");
        let args = |address: Option<&str>, config: Option<PathBuf>| CheckArgs {
            address: address.map(str::to_string),
            config,
            ..parse(&[]).expect("defaults")
        };
        assert_eq!(
            socket(&args(Some("unix:///a.sock"), None)).expect("flag"),
            PathBuf::from("/a.sock")
        );
        let v4 = dir.path().join("v4.toml");
        std::fs::write(
            &v4,
            "version = 4\n[plugins.'io.containerd.server.v1.grpc']\naddress = '/run/v4.sock'\n",
        )
        .expect("write");
        assert_eq!(
            socket(&args(None, Some(v4))).expect("config"),
            PathBuf::from("/run/v4.sock")
        );
        let fd = dir.path().join("fd.toml");
        std::fs::write(&fd, "version = 3\n[grpc]\naddress = 'fd://'\n").expect("write");
        assert!(socket(&args(None, Some(fd)))
            .expect_err("fd")
            .contains("give its path with -a"));
    }
}
