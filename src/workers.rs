//! The bounded worker pool for calls that may take long (a Diff over a big tree, a Prepare
//! copying thousands of files, a synchronous garbage collection, every Tasks call).
//!
//! Why: unary gRPC handlers run on grpcio's one completion-queue thread; while one of them
//! works, no other call on any connection is even read. Slow handlers therefore run here,
//! and the completion-queue thread only decodes, hands off and goes back to polling, so a
//! `Version` or `Health` probe answers at once whatever else is running.
//!
//! API (see `crate::rpc` for how calls get here):
//! - [`configure`] sets the number of threads once, before the listeners start
//!   (`[grpc] workers`; 0 or never called means [`DEFAULT_WORKERS`]).
//! - [`submit`] queues a job. Threads (`ctrd-worker-N`) are started on demand up to the
//!   configured number and exit after [`IDLE_EXIT`] without work, so an idle daemon holds
//!   none. At most [`QUEUE_PER_WORKER`] jobs per thread wait; past that `submit` fails with
//!   [`Busy`] and the call is answered `Unavailable` rather than queued without bound.
//! - A job must not wait for something only a later job can provide (the pool is bounded).
//!   A call that waits for an outside event (a task's exit) should not hold a worker while
//!   it waits: `crate::rpc::Reply` lets it answer later from whatever thread sees the event.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use parking_lot::Mutex;

/// Threads when the config does not say: enough that a few slow calls (a Diff, a Prepare,
/// a GC) run side by side on a small host, few enough to stay lean.
pub const DEFAULT_WORKERS: usize = 8;

/// Jobs that may wait per thread before new ones are refused.
pub const QUEUE_PER_WORKER: usize = 64;

/// How long an idle worker waits for work before it exits.
pub const IDLE_EXIT: Duration = Duration::from_secs(30);

/// A queued piece of work: called with `Ok(())` on a worker, or with `Err(Busy)` on the
/// submitting thread when the pool refused it.
pub type Job = Box<dyn FnOnce(Result<(), Busy>) + Send + 'static>;

/// The pool is full: every thread is busy and the queue is at its bound.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("server busy: {queued} calls waiting for a worker")]
pub struct Busy {
    pub queued: usize,
}

/// A bounded pool of named threads fed by one queue.
pub struct Pool {
    name: &'static str,
    max: AtomicUsize,
    tx: crossbeam_channel::Sender<Job>,
    rx: crossbeam_channel::Receiver<Job>,
    state: Mutex<State>,
    idle_exit: Duration,
}

#[derive(Default)]
struct State {
    /// Live threads.
    threads: usize,
    /// Threads waiting for a job (or about to take one).
    idle: usize,
    /// Jobs sent and not yet taken by a thread.
    queued: usize,
    /// Numbers handed out so far (thread names).
    started: usize,
}

static POOL: LazyLock<Arc<Pool>> =
    LazyLock::new(|| Pool::new("ctrd-worker", DEFAULT_WORKERS, IDLE_EXIT));

/// Sets the number of worker threads (0 keeps the default). Call before serving.
pub fn configure(threads: usize) {
    if threads > 0 {
        POOL.max.store(threads, Ordering::Release);
    }
}

/// Queues `job` on the process-wide pool (see [`Pool::submit`]).
pub fn submit(job: Job) {
    POOL.submit(job)
}

/// Threads of the process-wide pool now alive (for tests and `/debug/vars`).
pub fn threads() -> usize {
    POOL.state.lock().threads
}

impl Pool {
    /// A pool of at most `max` threads named `<name>-N`.
    pub fn new(name: &'static str, max: usize, idle_exit: Duration) -> Arc<Pool> {
        let (tx, rx) = crossbeam_channel::unbounded();
        Arc::new(Pool {
            name,
            max: AtomicUsize::new(max.max(1)),
            tx,
            rx,
            state: Mutex::new(State::default()),
            idle_exit,
        })
    }

    /// Queues `job`; starts a thread when none is idle and the bound allows one. A job
    /// that cannot be queued runs at once on the caller's thread with `Err(Busy)`, so it
    /// can still answer its caller.
    pub fn submit(self: &Arc<Self>, job: Job) {
        if let Err((job, busy)) = self.try_queue(job) {
            job(Err(busy));
        }
    }

    fn try_queue(self: &Arc<Self>, job: Job) -> Result<(), (Job, Busy)> {
        let max = self.max.load(Ordering::Acquire);
        let mut state = self.state.lock();
        if state.idle <= state.queued && state.threads < max {
            let pool = self.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("{}-{}", self.name, state.started))
                .spawn(move || pool.work());
            match spawned {
                Ok(_) => {
                    state.threads += 1;
                    state.started += 1;
                    state.idle += 1;
                }
                Err(err) => log::warn!("{}: cannot start a thread: {err}", self.name),
            }
        }
        // Jobs beyond those an idle thread is about to take.
        let backlog = state.queued.saturating_sub(state.idle);
        if state.threads == 0 || backlog >= max * QUEUE_PER_WORKER {
            return Err((job, Busy { queued: backlog }));
        }
        state.queued += 1;
        self.tx.send(job).expect("the pool holds its own receiver");
        Ok(())
    }

    /// A worker: counted idle by whoever started it, it takes jobs until it has waited
    /// [`IDLE_EXIT`] for one.
    fn work(self: Arc<Self>) {
        loop {
            let next = self.rx.recv_timeout(self.idle_exit);
            let mut state = self.state.lock();
            match next {
                Ok(job) => {
                    state.idle -= 1;
                    state.queued -= 1;
                    drop(state);
                    run(job);
                    self.state.lock().idle += 1;
                }
                // Leave only when nothing is queued (checked under the lock `submit`
                // holds, so a job queued for an idle thread is never stranded).
                Err(_) if state.queued == 0 => {
                    state.idle -= 1;
                    state.threads -= 1;
                    return;
                }
                Err(_) => {}
            }
        }
    }
}

/// Runs one job; a panic is logged and the thread carries on with the next job.
fn run(job: Job) {
    if let Err(panic) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(Ok(())))) {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        log::error!("a worker job panicked: {what}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::wait_until;

    #[test]
    fn threads_are_bounded_named_and_jobs_queue_behind_them() {
        let pool = Pool::new("test-worker", 2, Duration::from_secs(30));
        let (release_tx, release_rx) = crossbeam_channel::unbounded::<()>();
        let (names_tx, names_rx) = crossbeam_channel::unbounded();
        for _ in 0..5 {
            let release = release_rx.clone();
            let names = names_tx.clone();
            pool.submit(Box::new(move |admitted| {
                admitted.expect("room in the queue");
                let name = std::thread::current().name().map(str::to_string);
                names.send(name).expect("test alive");
                let _ = release.recv();
            }));
        }
        // Two run, three wait.
        let first: Vec<_> = (0..2)
            .map(|_| names_rx.recv_timeout(Duration::from_secs(10)).expect("ran"))
            .collect();
        assert!(
            names_rx.try_recv().is_err(),
            "a third job ran on a third thread"
        );
        assert_eq!(pool.state.lock().threads, 2);
        for name in first {
            assert!(name.expect("named").starts_with("test-worker-"));
        }
        for _ in 0..5 {
            release_tx.send(()).expect("workers alive");
        }
        for _ in 0..3 {
            names_rx
                .recv_timeout(Duration::from_secs(10))
                .expect("queued job ran");
        }
        assert_eq!(pool.state.lock().threads, 2);
    }

    #[test]
    fn a_full_queue_is_refused_on_the_callers_thread_and_idle_threads_exit() {
        let pool = Pool::new("test-busy", 1, Duration::from_millis(50));
        let (release_tx, release_rx) = crossbeam_channel::unbounded::<()>();
        let (ran_tx, ran_rx) = crossbeam_channel::unbounded();
        let me = std::thread::current().id();
        for i in 0..(QUEUE_PER_WORKER + 2) {
            let release = release_rx.clone();
            let ran = ran_tx.clone();
            pool.submit(Box::new(move |admitted| {
                let on_caller = std::thread::current().id() == me;
                ran.send((admitted.is_ok(), on_caller)).expect("test alive");
                if admitted.is_ok() {
                    let _ = release.recv();
                }
            }));
            if i == 0 {
                // The first one holds the only thread before the others queue.
                let first = ran_rx.recv_timeout(Duration::from_secs(10)).expect("ran");
                assert_eq!(first, (true, false));
            }
        }
        // The one refused job ran at once, here, and said why.
        let refused: Vec<_> = ran_rx.try_iter().collect();
        assert_eq!(refused, [(false, true)]);
        drop(release_tx);
        let admitted = (0..QUEUE_PER_WORKER)
            .map(|_| ran_rx.recv_timeout(Duration::from_secs(10)).expect("ran"))
            .filter(|(ok, on_caller)| *ok && !on_caller)
            .count();
        assert_eq!(admitted, QUEUE_PER_WORKER, "every queued job runs");
        wait_until("the idle worker to exit", || pool.state.lock().threads == 0);
        // A new job after the exit starts a new thread.
        let (done_tx, done_rx) = crossbeam_channel::bounded(1);
        pool.submit(Box::new(move |admitted| {
            let _ = done_tx.send(admitted.is_ok());
        }));
        assert!(done_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("ran after the pool emptied"));
    }

    #[test]
    fn a_panicking_job_does_not_take_its_thread_down() {
        let pool = Pool::new("test-panic", 1, Duration::from_secs(30));
        pool.submit(Box::new(|_| panic!("boom")));
        let (done_tx, done_rx) = crossbeam_channel::bounded(1);
        pool.submit(Box::new(move |_| {
            let _ = done_tx.send(std::thread::current().name().map(str::to_string));
        }));
        let name = done_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the next job ran");
        assert_eq!(name.as_deref(), Some("test-panic-0"));
    }
}
