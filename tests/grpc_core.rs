//! gRPC core's start when something else started it first: left as it was. This file is its
//! own test process, so the process's first start of gRPC core is this test's to make.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::time::Duration;

use ctrd::sys::{start_grpc_core, GrpcCore};

fn thread_names() -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .map(|comm| comm.trim_end().to_string())
        .collect()
}

#[test]
fn a_core_already_running_is_left_with_its_executors() {
    // A grpcio environment built first starts gRPC core the stock way.
    let env = grpcio::EnvBuilder::new().cq_count(1).build();
    assert_eq!(start_grpc_core(), GrpcCore::AlreadyRunning);
    // Asking again answers the same, and nothing was switched off: the resolver executor
    // still runs (gRPC core starts it with the core, as a thread named resolver-executor,
    // cut by the kernel to 15 bytes).
    assert_eq!(start_grpc_core(), GrpcCore::AlreadyRunning);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let names = thread_names();
        if names.iter().any(|name| name == "resolver-execut") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no resolver executor among {names:?}"
        );
        std::thread::yield_now();
    }
    drop(env);
}
