//! `ctrd config …` and the start-up errors, through the real binary.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::{run_ctrd, TestDir};

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn config_default_round_trips_through_dump() {
    let dir = TestDir::new("roundtrip");
    let default = run_ctrd(&["config", "default"]);
    assert!(default.status.success(), "{}", stderr(&default));
    let text = stdout(&default);
    assert!(text.starts_with("version = 3\n"), "{text}");
    for table in [
        "[grpc]",
        "[ttrpc]",
        "[debug]",
        "[metrics]",
        "[plugins]",
        "[cgroup]",
        "[timeouts]",
        "[stream_processors]",
    ] {
        assert!(text.contains(table), "missing {table}:\n{text}");
    }
    let file = dir.write("default.toml", &text);
    let dump = run_ctrd(&["-c", file.to_str().expect("utf8"), "config", "dump"]);
    assert!(dump.status.success(), "{}", stderr(&dump));
    assert_eq!(stdout(&dump), text);
}

#[test]
fn version_one_short_plugin_names_migrate_to_uris() {
    let dir = TestDir::new("migrate");
    let file = dir.write("v1.toml", "disabled_plugins = [\"cri\", \"btrfs\"]\n");
    let out = run_ctrd(&["-c", file.to_str().expect("utf8"), "config", "dump"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("disabled_plugins = ['io.containerd.grpc.v1.cri', 'io.containerd.snapshotter.v1.btrfs']"),
        "{text}"
    );
    assert!(text.starts_with("version = 3\n"));
    let migrate = run_ctrd(&["-c", file.to_str().expect("utf8"), "config", "migrate"]);
    assert_eq!(stdout(&migrate), text);
}

#[test]
fn version_flag_and_help() {
    let out = run_ctrd(&["--version"]);
    assert!(out.status.success());
    assert!(stdout(&out).starts_with(&format!("ctrd {}", ctrd::VERSION)));
    let help = run_ctrd(&["-h"]);
    assert!(help.status.success());
    assert!(stdout(&help).contains("config default"));
    let bad = run_ctrd(&["--frobnicate"]);
    assert_eq!(bad.status.code(), Some(1));
    assert_eq!(
        stderr(&bad).trim(),
        "ctrd: flag provided but not defined: --frobnicate"
    );
}

/// Starts ctrd with `config` (and extra args) and expects exit 1 with `message` and no socket.
fn fails_to_start(name: &str, config: &str, extra: &[&str], message: &str) {
    let dir = TestDir::new(name);
    let base = dir.path.to_string_lossy().into_owned();
    let file = dir.write("config.toml", &config.replace("@DIR@", &base));
    let socket = dir.join("ctrd.sock");
    let root = dir.join("root");
    let state = dir.join("state");
    let mut args: Vec<String> = vec![
        "--config".into(),
        file.to_string_lossy().into_owned(),
        "--root".into(),
        root.to_string_lossy().into_owned(),
        "--state".into(),
        state.to_string_lossy().into_owned(),
        "--address".into(),
        socket.to_string_lossy().into_owned(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run_ctrd(&refs);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{name}: {err}");
    assert!(
        err.contains(message),
        "{name}: expected {message:?} in:\n{err}"
    );
    assert!(
        err.lines().any(|l| l.starts_with("ctrd: ")),
        "{name}: no 'ctrd: ' line in:\n{err}"
    );
    assert!(!socket.exists(), "{name}: socket created");
}

#[test]
fn toml_syntax_error_names_file_row_and_column() {
    fails_to_start(
        "syntax",
        "version = 3\nroot = \"unterminated\n",
        &[],
        "failed to unmarshal TOML at row 2 column",
    );
    fails_to_start("syntax2", "version = 3\nroot = \"x\n", &[], "config.toml");
}

#[test]
fn root_and_state_problems_are_fatal() {
    let dir = TestDir::new("samepath");
    let same = dir.join("same").to_string_lossy().into_owned();
    fails_to_start(
        "rootstate",
        "version = 3\n",
        &["--root", &same, "--state", &same],
        "root and state must be different paths",
    );
    fails_to_start(
        "emptyroot",
        "version = 3\n",
        &["--root", ""],
        "root must be specified",
    );
}

#[test]
fn unsupported_version_is_fatal() {
    fails_to_start(
        "version5",
        "version = 5\n",
        &[],
        "expected containerd config version equal to or less than `4`, got `5`",
    );
}

#[test]
fn bad_timeout_is_fatal() {
    fails_to_start(
        "timeout",
        "version = 3\n[timeouts]\n'io.containerd.timeout.shim.load' = '5 parsecs'\n",
        &[],
        "unable to parse 5 parsecs into a time duration",
    );
}

#[test]
fn short_disabled_plugin_in_version_three_is_fatal() {
    fails_to_start(
        "shortname",
        "version = 3\ndisabled_plugins = ['cri']\n",
        &[],
        "invalid disabled plugin URI \"cri\" expect io.containerd.x.vx",
    );
}

#[test]
fn missing_required_plugin_is_fatal() {
    fails_to_start(
        "required",
        "version = 3\nrequired_plugins = ['io.containerd.grpc.v1.nothing']\n",
        &[],
        "required plugin [io.containerd.grpc.v1.nothing] not included",
    );
}

#[test]
fn missing_import_is_fatal() {
    fails_to_start(
        "import",
        "version = 3\nimports = ['@DIR@/missing.toml']\n",
        &[],
        "missing.toml",
    );
}

#[test]
fn overlong_socket_path_is_refused() {
    let long = format!("/tmp/{}/ctrd.sock", "d".repeat(110));
    fails_to_start(
        "longsock",
        "version = 3\n",
        &["--address", &long],
        "unix socket path too long (> 104)",
    );
    assert!(!std::path::Path::new(&long).exists());
}

#[test]
fn out_of_range_oom_score_is_fatal() {
    fails_to_start(
        "oom",
        "version = 3\noom_score = 2000\n",
        &[],
        "oom_score: 2000 is out of range",
    );
}
