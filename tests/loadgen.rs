//! The benchmark's floor server: `ctrd-loadgen coldstart` starts `ctrd-loadgen floor`, takes
//! its UNIMPLEMENTED as the first answer, and the server registers no service.

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
}
