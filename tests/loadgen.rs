//! The benchmark's floor server: `ctrd-loadgen coldstart` starts `ctrd-loadgen floor`, takes
//! its UNIMPLEMENTED as the first answer, and the server registers no service; `ctrd-loadgen
//! version` counts those answers as calls made.

mod common;

use std::process::Command;

use common::{unix_channel, TestDir};
use ctrd::api::version::VersionClient;
use ctrd::api::Empty;

/// Kills the floor server however the test ends.
struct Killed(u32);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.0.to_string()).status();
    }
}

#[test]
fn floor_server_answers_unimplemented_and_coldstart_accepts_it() {
    let dir = TestDir::new("floor");
    let socket = dir.join("floor.sock");
    let loadgen = env!("CARGO_BIN_EXE_ctrd-loadgen");
    let out = Command::new(loadgen)
        .arg("coldstart")
        .arg(&socket)
        .arg("--")
        .arg(loadgen)
        .arg("floor")
        .arg(&socket)
        .output()
        .expect("run ctrd-loadgen");
    assert!(out.status.success(), "coldstart failed: {out:?}");
    let line = String::from_utf8(out.stdout).expect("utf-8 output");
    let pid: u32 = line
        .split("\"pid\": ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .and_then(|pid| pid.trim().parse().ok())
        .unwrap_or_else(|| panic!("no pid in {line:?}"));
    let _guard = Killed(pid);
    assert!(line.contains("\"ready_ms\""), "{line}");

    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("server runs");
    assert!(status.contains("ctrd-loadgen"), "{status}");
    let err = VersionClient::new(unix_channel(&socket))
        .version(&Empty::default())
        .expect_err("the floor server serves nothing");
    match err {
        grpcio::Error::RpcFailure(status) => {
            assert_eq!(status.code(), grpcio::RpcStatusCode::UNIMPLEMENTED)
        }
        other => panic!("expected UNIMPLEMENTED, got {other:?}"),
    }

    // Eight callers for a third of a second: on one connection, then on four.
    for (connections, args) in [(1, &["8", "0.3"][..]), (4, &["8", "0.3", "4"][..])] {
        let out = Command::new(loadgen)
            .arg("version")
            .arg(&socket)
            .args(args)
            .output()
            .expect("run ctrd-loadgen version");
        assert!(out.status.success(), "version failed: {out:?}");
        let line = String::from_utf8(out.stdout).expect("utf-8 output");
        let field = |name: &str| -> u64 {
            line.split(&format!("\"{name}\": "))
                .nth(1)
                .and_then(|rest| rest.split([',', '}']).next())
                .and_then(|n| n.trim().parse().ok())
                .unwrap_or_else(|| panic!("no {name} in {line:?}"))
        };
        assert_eq!(field("clients"), 8, "{line}");
        assert_eq!(field("connections"), connections, "{line}");
        assert_eq!(field("errors"), 0, "{line}");
        assert!(field("calls") > 8, "{line}");
        assert!(field("p99_us") >= field("p50_us"), "{line}");
    }
}
