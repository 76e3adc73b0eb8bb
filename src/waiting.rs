//! Everything that only waits, served by one thread: futures that spend their life waiting
//! (events subscriptions, the follower of the shims' exits, the garbage collection schedule,
//! healthcheck's `wait_for_paths`) and the timers they set. A waiting stream or schedule
//! costs its future's memory rather than a thread.
//!
//! Which thread: in the daemon, the main thread. `server::run` calls [`install`] before any
//! other thread exists and drives the [`Executor`] it gets from its own mio loop, between
//! signals and its own events; every spawn, wake and new timer calls the wake hook given to
//! `install`, which wakes that loop. A process that never installs one (unit tests) gets a
//! `ctrd-waiters` thread running the executor on first use instead.
//!
//! API: [`spawn`] a future; inside it, [`sleep_until`] (or [`wake_at`] with the future's own
//! waker) to be polled again at a deadline. A future must never block: it returns `Pending`
//! and is polled again when its waker is called. Slow work goes to a thread of its own (a
//! garbage collection runs on `ctrd-gc`) and wakes the future when done.

use std::collections::{BinaryHeap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};

/// What a woken executor is told.
enum Message {
    Spawn(Task),
    Wake(u64),
    Timer(Instant, Waker),
}

type Task = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Wakes the thread that runs the executor (the main loop's mio waker).
pub type WakeHook = Arc<dyn Fn() + Send + Sync>;

/// The way to the one executor: its channel, and the hook that wakes its thread (none for
/// the `ctrd-waiters` thread, which waits on the channel itself).
struct Handle {
    tx: Sender<Message>,
    wake: Option<WakeHook>,
}

impl Handle {
    fn send(&self, message: Message) {
        if self.tx.send(message).is_ok() {
            if let Some(wake) = &self.wake {
                wake();
            }
        }
    }
}

static HANDLE: OnceLock<Handle> = OnceLock::new();

/// The installed executor, or the `ctrd-waiters` thread started now.
fn handle() -> &'static Handle {
    HANDLE.get_or_init(|| {
        let (tx, rx) = crossbeam_channel::unbounded();
        let mut executor = Executor::new(rx);
        let spawned = std::thread::Builder::new()
            .name("ctrd-waiters".into())
            .spawn(move || loop {
                executor.park();
            });
        if let Err(err) = spawned {
            log::error!(
                "cannot start the ctrd-waiters thread: waiting futures will not run: {err}"
            );
        }
        Handle { tx, wake: None }
    })
}

/// Makes the calling thread the one that runs waiting futures: it must call
/// [`Executor::run`] whenever `wake` was called. `None` when futures already run elsewhere
/// (something spawned one before).
pub fn install(wake: WakeHook) -> Option<Executor> {
    let (tx, rx) = crossbeam_channel::unbounded();
    let mut installed = false;
    HANDLE.get_or_init(|| {
        installed = true;
        Handle {
            tx,
            wake: Some(wake),
        }
    });
    installed.then(|| Executor::new(rx))
}

/// Runs `future` on the waiting thread until it completes.
pub fn spawn(future: impl Future<Output = ()> + Send + 'static) {
    handle().send(Message::Spawn(Box::pin(future)));
}

/// Wakes `waker` once `at` has come (or soon after). A future that sets a timer still
/// checks the time when polled: wakes may come early for other reasons.
pub fn wake_at(at: Instant, waker: &Waker) {
    handle().send(Message::Timer(at, waker.clone()));
}

/// A future that is ready once `at` has come.
pub fn sleep_until(at: Instant) -> Sleep {
    Sleep { at, set: false }
}

/// See [`sleep_until`].
pub struct Sleep {
    at: Instant,
    set: bool,
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if Instant::now() >= self.at {
            return Poll::Ready(());
        }
        if !self.set {
            self.set = true;
            wake_at(self.at, cx.waker());
        }
        Poll::Pending
    }
}

/// Wakes one task by queueing its id for the executor.
struct TaskWaker {
    id: u64,
}

impl std::task::Wake for TaskWaker {
    fn wake(self: Arc<Self>) {
        handle().send(Message::Wake(self.id));
    }
}

/// A timer: who to wake, and when.
struct Timer {
    at: Instant,
    seq: u64,
    waker: Waker,
}

impl PartialEq for Timer {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl Eq for Timer {}

impl PartialOrd for Timer {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Timer {
    /// Reversed, so the heap's top is the earliest.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

/// The waiting futures and their timers, owned by the thread that runs them.
pub struct Executor {
    rx: Receiver<Message>,
    tasks: HashMap<u64, Task>,
    next_id: u64,
    timers: BinaryHeap<Timer>,
    next_seq: u64,
}

impl Executor {
    fn new(rx: Receiver<Message>) -> Executor {
        Executor {
            rx,
            tasks: HashMap::new(),
            next_id: 0,
            timers: BinaryHeap::new(),
            next_seq: 0,
        }
    }

    /// Polls every future that was spawned or woken and fires every timer that is due;
    /// returns when the next timer is due, if any. Never blocks.
    pub fn run(&mut self) -> Option<Instant> {
        loop {
            let now = Instant::now();
            while self.timers.peek().is_some_and(|t| t.at <= now) {
                if let Some(timer) = self.timers.pop() {
                    timer.waker.wake();
                }
            }
            match self.rx.try_recv() {
                Ok(message) => self.handle(message),
                Err(_) => break,
            }
        }
        if self.timers.is_empty() {
            self.timers.shrink_to_fit();
        }
        self.timers.peek().map(|t| t.at)
    }

    /// The `ctrd-waiters` thread's step: run, then wait for the next message or timer.
    fn park(&mut self) {
        let next = match self.run() {
            Some(at) => self.rx.recv_deadline(at).ok(),
            None => self.rx.recv().ok(),
        };
        if let Some(message) = next {
            self.handle(message);
        }
    }

    fn handle(&mut self, message: Message) {
        let id = match message {
            Message::Spawn(task) => {
                self.next_id += 1;
                self.tasks.insert(self.next_id, task);
                self.next_id
            }
            Message::Wake(id) => id,
            Message::Timer(at, waker) => {
                self.next_seq += 1;
                self.timers.push(Timer {
                    at,
                    seq: self.next_seq,
                    waker,
                });
                return;
            }
        };
        let Some(task) = self.tasks.get_mut(&id) else {
            return;
        };
        let waker = Waker::from(Arc::new(TaskWaker { id }));
        let mut cx = Context::from_waker(&waker);
        let polled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            task.as_mut().poll(&mut cx).is_ready()
        }));
        let done = polled.unwrap_or_else(|_| {
            log::error!("a waiting future panicked");
            true
        });
        if done {
            self.tasks.remove(&id);
            if self.tasks.is_empty() {
                self.tasks.shrink_to_fit();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::wait_until;
    use std::time::Duration;

    #[test]
    fn waiting_futures_share_one_thread_and_run_when_woken() {
        let (tx, rx) = crossbeam_channel::unbounded();
        let gates: Vec<_> = (0..50)
            .map(|_| Arc::new(parking_lot::Mutex::new((false, None::<Waker>))))
            .collect();
        for (i, gate) in gates.iter().enumerate() {
            let (gate, tx) = (gate.clone(), tx.clone());
            spawn(async move {
                std::future::poll_fn(|cx| {
                    let mut g = gate.lock();
                    if g.0 {
                        std::task::Poll::Ready(())
                    } else {
                        g.1 = Some(cx.waker().clone());
                        std::task::Poll::Pending
                    }
                })
                .await;
                let _ = tx.send((i, std::thread::current().name().map(str::to_string)));
            });
        }
        assert!(rx.try_recv().is_err(), "a task ran before its wake");
        for gate in &gates {
            // Once polled, each waits with its waker stored.
            let mut waker = None;
            wait_until("the task's first poll", || {
                let mut g = gate.lock();
                waker = g.1.take();
                g.0 = waker.is_some();
                g.0
            });
            waker.expect("stored").wake();
        }
        let mut seen = std::collections::HashSet::new();
        for _ in 0..gates.len() {
            let (i, name) = rx
                .recv_timeout(Duration::from_secs(10))
                .expect("woken task ran");
            assert_eq!(name.as_deref(), Some("ctrd-waiters"));
            seen.insert(i);
        }
        assert_eq!(seen.len(), gates.len());
    }

    #[test]
    fn sleepers_wake_in_deadline_order_on_the_same_thread() {
        let (tx, rx) = crossbeam_channel::unbounded();
        let start = Instant::now();
        for (i, ms) in [(0, 60u64), (1, 20), (2, 40)] {
            let tx = tx.clone();
            spawn(async move {
                sleep_until(start + Duration::from_millis(ms)).await;
                let name = std::thread::current().name().map(str::to_string);
                let _ = tx.send((i, Instant::now(), name));
            });
        }
        let woke: Vec<_> = (0..3)
            .map(|_| rx.recv_timeout(Duration::from_secs(10)).expect("woke"))
            .collect();
        let order: Vec<_> = woke.iter().map(|(i, _, _)| *i).collect();
        assert_eq!(order, [1, 2, 0]);
        for (i, at, name) in woke {
            let ms = [60, 20, 40][i];
            assert!(at >= start + Duration::from_millis(ms), "woke early");
            assert_eq!(name.as_deref(), Some("ctrd-waiters"));
        }
    }

    #[test]
    fn an_installed_executor_reports_its_next_timer_and_runs_nothing_by_itself() {
        let (tx, rx) = crossbeam_channel::unbounded();
        let mut executor = Executor::new(rx);
        assert_eq!(executor.run(), None);
        let at = Instant::now() + Duration::from_secs(3600);
        let ran = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = ran.clone();
        tx.send(Message::Spawn(Box::pin(std::future::poll_fn(move |_| {
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
            Poll::<()>::Pending
        }))))
        .expect("send");
        tx.send(Message::Timer(at, Waker::noop().clone()))
            .expect("send");
        assert_eq!(executor.run(), Some(at));
        assert!(ran.load(std::sync::atomic::Ordering::SeqCst));
        assert_eq!(executor.tasks.len(), 1);
    }
}
