//! Every thread a ctrd process may run, by the name `/proc/<pid>/task/*/comm` shows, with
//! its job: the list `/debug/pprof/threads` and SIGUSR1's dump print beside each stack,
//! and the one `docs/architecture.md` ("Threads") and `tests/daemon.rs` check against.
//!
//! A name ending in `-N` stands for a number (`ctrd-worker-3`). The kernel keeps 15 bytes
//! of a thread's name: ctrd's names fit, gRPC core's longer ones appear cut
//! (`default-executo`) and are listed so.

/// A thread's name and job. `idle`: whether an idle daemon (metrics and debug listeners
/// on, no tasks, no calls) has it.
pub struct Known {
    pub name: &'static str,
    pub job: &'static str,
    pub idle: bool,
}

const fn known(name: &'static str, idle: bool, job: &'static str) -> Known {
    Known { name, job, idle }
}

/// ctrd's own threads.
pub const CTRD: &[Known] = &[
    known(
        "ctrd",
        true,
        "main thread: signals, boot and stop, heap trim; accepts on the gRPC unix socket and \
         hands connections to gRPC core; runs every waiting future (events subscriptions, \
         task exits, the GC schedule, wait_for_paths) and their timers",
    ),
    known(
        "ctrd-init",
        false,
        "initialises the plugins at start (ends then)",
    ),
    known(
        "ctrd-grpc-cq-N",
        true,
        "the gRPC unix listener's thread, its completion queue: polls every gRPC connection, \
         runs quick unary calls",
    ),
    known(
        "ctrd-grpc-stop",
        false,
        "waits for the gRPC server's shutdown while stopping",
    ),
    known(
        "ctrd-tcp",
        false,
        "owns the gRPC server on [grpc] tcp_address (when configured)",
    ),
    known(
        "ctrd-tcp-cq-N",
        false,
        "completion queue of the TCP gRPC server (when configured)",
    ),
    known(
        "ctrd-tcp-stop",
        false,
        "waits for the TCP gRPC server's shutdown while stopping",
    ),
    known(
        "ctrd-ttrpc",
        true,
        "ttrpc listener: every shim connection on this one thread",
    ),
    known(
        "ctrd-metrics",
        true,
        "HTTP /v1/metrics: every connection on this one thread",
    ),
    known(
        "ctrd-debug",
        true,
        "HTTP /debug/*: every connection on this one thread",
    ),
    known(
        "ctrd-worker-N",
        false,
        "slow unary calls (Diff, Prepare, Tasks…): started on demand, gone after 30 s idle",
    ),
    known(
        "ctrd-stream",
        false,
        "one streaming call (Write, Read, Watch…); kept up to 30 s for the next (at most 4)",
    ),
    known(
        "ctrd-stream-in",
        false,
        "feeds a stream processor's input during an apply",
    ),
    known(
        "ctrd-hash",
        false,
        "hashes a content ingest's chunks while its Write call receives the next",
    ),
    known(
        "ctrd-write",
        false,
        "appends a content ingest's chunks to its data file beside ctrd-hash",
    ),
    known("ctrd-gc", false, "one garbage collection (ends with it)"),
    known(
        "ctrd-shims",
        false,
        "drains every shim's log FIFO and watches every shim process (while there are shims)",
    ),
    known(
        "ctrd-shim-exit",
        false,
        "cleans up after a shim that died (ends then)",
    ),
    known(
        "ctrd-shim-del",
        false,
        "reads the output of a shim's delete command (ends with it)",
    ),
    known(
        "ctrd-recover",
        false,
        "reconnects to or cleans up the tasks a previous run left (at start; ends then)",
    ),
    known(
        "ctrd-ovl-check",
        false,
        "overlayfs's support check at start: d_type, the test overlay, its removal once serving",
    ),
    known(
        "ctrd-stacks",
        false,
        "writes the stack dump SIGUSR1 asks for (ends then)",
    ),
    known(
        "ctrd-proxy-cq-N",
        false,
        "gRPC client completion queue for [proxy_plugins.*]",
    ),
    known(
        "ctrd-stop",
        false,
        "stops the listeners and closes the plugins at shutdown",
    ),
    known(
        "ctrd-waiters",
        false,
        "runs waiting futures where no main loop does (unit tests)",
    ),
];

/// gRPC core's own threads, named by gRPC core, as the kernel shows them.
pub const GRPC_CORE: &[Known] = &[
    known(
        "default-executo",
        true,
        "gRPC core: default executor (default-executor)",
    ),
    known(
        "grpc_global_tim",
        true,
        "gRPC core: timer manager (grpc_global_timer)",
    ),
    known(
        "timer_manager",
        true,
        "gRPC core: the event engine's timer thread",
    ),
    known(
        "event_engine",
        true,
        "gRPC core: the event engine's pool (keeps one per core, 2 to 16; more while busy, \
         gone after 30 s idle; none holds a poller unless GRPC_EXPERIMENTS asks: see \
         src/grpc_core.cc)",
    ),
];

/// The entry for a thread named `comm`, if it is one ctrd or gRPC core starts.
pub fn lookup(comm: &str) -> Option<&'static Known> {
    CTRD.iter()
        .chain(GRPC_CORE)
        .find(|known| matches(known.name, comm))
}

/// Whether `comm` is a thread called `name` (a trailing `-N` is any number).
pub fn matches(name: &str, comm: &str) -> bool {
    if let Some(prefix) = name.strip_suffix("-N") {
        let Some(number) = comm.strip_prefix(prefix).and_then(|r| r.strip_prefix('-')) else {
            return false;
        };
        return !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit());
    }
    comm == name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_the_kernel_and_numbered_ones_match_numbers_only() {
        for known in CTRD.iter().chain(GRPC_CORE) {
            let shown = known.name.replace("-N", "-0");
            assert!(shown.len() <= 15, "{} is cut by the kernel", known.name);
            assert!(lookup(&shown).is_some(), "{shown}");
        }
        assert!(matches("ctrd-worker-N", "ctrd-worker-12"));
        assert!(!matches("ctrd-worker-N", "ctrd-worker-"));
        assert!(!matches("ctrd-worker-N", "ctrd-worker-x"));
        assert!(!matches("ctrd-grpc", "ctrd-grpc-cq-0"));
        assert_eq!(
            lookup("ctrd-grpc-cq-0").map(|k| k.name),
            Some("ctrd-grpc-cq-N")
        );
        assert!(lookup("tokio-runtime-w").is_none());
    }
}
