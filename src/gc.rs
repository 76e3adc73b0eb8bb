//! When garbage collection runs: the `io.containerd.gc.v1.scheduler` plugin. What a
//! collection does is the metadata side's [`Collector`].
//!
//! The metadata store reports every committed change as a mutation, marked dirty when it
//! deleted something. The schedule, a future on the waiting thread (`crate::waiting`; no
//! thread of its own), decides with containerd's rules and config keys when the collector
//! runs:
//! * once `startup_delay` after start;
//! * `schedule_delay` after a dirty change when `deletion_threshold` is 0 (the default), or
//!   after that many deletions otherwise;
//! * after `mutation_threshold` mutations, at the next periodic check;
//! * when asked to by [`Scheduler::schedule_and_wait`] (a lease deleted with `sync`).
//!
//! Between collections it wakes every interval, where the interval keeps collection pauses
//! under `pause_threshold` of real time, and skips the run when nothing asked for one. Each
//! collection runs on a `ctrd-gc` thread that ends with it; events that arrive meanwhile
//! are held and counted towards the next one, so a `schedule_and_wait` always gets a
//! collection that started after it asked.

use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::config::GoDuration;
use crate::errdefs::Error;
use crate::metadata::{Collector, Metadata, Stats};
use crate::plugin::{types, Instance, Registration};

/// `[plugins.'io.containerd.gc.v1.scheduler']`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SchedulerConfig {
    /// The largest share of real time collections may take (capped at 0.5).
    pub pause_threshold: f64,
    /// Deletions that force a collection; 0 means any deletion schedules one.
    pub deletion_threshold: i64,
    /// Mutations after which the next periodic check collects; 0 disables it.
    pub mutation_threshold: i64,
    /// How long after a trigger the collection runs.
    pub schedule_delay: GoDuration,
    /// How long after start the first collection runs.
    pub startup_delay: GoDuration,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            pause_threshold: 0.02,
            deletion_threshold: 0,
            mutation_threshold: 100,
            schedule_delay: GoDuration(Duration::ZERO),
            startup_delay: GoDuration(Duration::from_millis(100)),
        }
    }
}

/// `io.containerd.gc.v1.scheduler`: collects the metadata plugin's garbage.
pub fn registration() -> Registration {
    Registration::new(types::GC, "scheduler", |ic| {
        let config = ic.config::<SchedulerConfig>()?.clone();
        let meta = ic.single::<Metadata>(types::METADATA)?;
        let scheduler = Arc::new(Scheduler::start(meta.clone(), config));
        let feed = Arc::downgrade(&scheduler);
        meta.db.register_mutation_callback(move |dirty| {
            if let Some(s) = feed.upgrade() {
                s.mutation(dirty);
            }
        });
        let c = scheduler.config();
        let exports = &mut ic.meta.exports;
        exports.insert("PauseThreshold".into(), c.pause_threshold.to_string());
        exports.insert("DeletionThreshold".into(), c.deletion_threshold.to_string());
        exports.insert("MutationThreshold".into(), c.mutation_threshold.to_string());
        exports.insert(
            "ScheduleDelay".into(),
            crate::config::format_duration(c.schedule_delay.0),
        );
        let stopping = scheduler.clone();
        Ok(Instance::new(scheduler).with_close(move || stopping.stop()))
    })
    .requires(&[types::METADATA])
    .config::<SchedulerConfig>()
}

/// Collections shorter than this count as this long when spacing them.
const MINIMUM_GC_TIME: Duration = Duration::from_millis(5);

type Reply = Sender<Result<Stats, Error>>;

/// What reaches the schedule from outside.
enum Event {
    Mutation { dirty: bool },
    Trigger(Reply),
}

/// The handle to the schedule.
pub struct Scheduler {
    shared: Arc<Shared>,
    config: SchedulerConfig,
}

struct Shared {
    collector: Arc<dyn Collector>,
    state: Mutex<State>,
}

struct State {
    schedule: Loop,
    /// The `ctrd-gc` thread while a collection runs.
    collecting: Option<thread::JoinHandle<()>>,
    /// Events that came during a collection: handled once it is over, as they would have
    /// been had they waited for the collecting thread.
    held: Vec<Event>,
    stopped: bool,
    /// The schedule's future, woken when its deadline moves or a collection ends.
    waker: Option<Waker>,
    /// The deadline the future last set a timer for.
    timer: Option<Instant>,
}

impl Scheduler {
    /// Starts the schedule for `collector` (a future on the waiting thread).
    pub fn start(collector: Arc<dyn Collector>, mut config: SchedulerConfig) -> Self {
        config.pause_threshold = config.pause_threshold.clamp(0.0, 0.5);
        config.deletion_threshold = config.deletion_threshold.max(0);
        config.mutation_threshold = config.mutation_threshold.max(0);
        let shared = Arc::new(Shared {
            collector,
            state: Mutex::new(State {
                schedule: Loop::new(config.clone()),
                collecting: None,
                held: Vec::new(),
                stopped: false,
                waker: None,
                timer: None,
            }),
        });
        let polled = shared.clone();
        crate::waiting::spawn(std::future::poll_fn(move |cx| polled.poll(cx)));
        Scheduler { shared, config }
    }

    /// The effective config (thresholds clamped as containerd does).
    pub fn config(&self) -> &SchedulerConfig {
        &self.config
    }

    /// Reports one committed change; `dirty` when it deleted something.
    pub fn mutation(&self, dirty: bool) {
        self.shared.event(Event::Mutation { dirty });
    }

    /// Schedules a collection and waits for one that started after this call.
    pub fn schedule_and_wait(&self) -> Result<Stats, Error> {
        let (reply, done) = crossbeam_channel::bounded(1);
        if !self.shared.event(Event::Trigger(reply)) {
            return Err(Error::unavailable("garbage collector stopped"));
        }
        done.recv()
            .map_err(|_| Error::unavailable("garbage collector stopped"))?
    }

    /// Stops the schedule and waits for a collection that is running; waiters get an
    /// error. Idempotent.
    pub fn stop(&self) {
        let (collecting, waker) = {
            let mut state = self.shared.state.lock();
            state.stopped = true;
            state.held.clear();
            state.schedule.waiters.clear();
            (state.collecting.take(), state.waker.take())
        };
        if let Some(waker) = waker {
            waker.wake();
        }
        if let Some(thread) = collecting {
            let _ = thread.join();
        }
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Shared {
    /// Hands `event` to the schedule; false once it stopped.
    fn event(&self, event: Event) -> bool {
        let waker = {
            let mut state = self.state.lock();
            if state.stopped {
                return false;
            }
            if state.collecting.is_some() {
                state.held.push(event);
                return true;
            }
            let before = state.schedule.next;
            state.schedule.on_event(event);
            if state.schedule.next == before {
                return true;
            }
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
        true
    }

    /// The schedule as a future: starts a collection when one is due, else sets a timer
    /// for the next deadline. Ends when stopped.
    fn poll(self: &Arc<Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut state = self.state.lock();
        loop {
            if state.stopped {
                return Poll::Ready(());
            }
            state.waker = Some(cx.waker().clone());
            if state.collecting.is_some() {
                return Poll::Pending;
            }
            let Some(at) = state.schedule.next else {
                return Poll::Pending;
            };
            let now = Instant::now();
            if at > now {
                if state.timer != Some(at) {
                    state.timer = Some(at);
                    crate::waiting::wake_at(at, cx.waker());
                }
                return Poll::Pending;
            }
            if state.schedule.idle() {
                state.schedule.next = Some(now + state.schedule.interval);
                continue;
            }
            let waiters = std::mem::take(&mut state.schedule.waiters);
            let shared = self.clone();
            let spawned = thread::Builder::new()
                .name("ctrd-gc".into())
                .spawn(move || shared.collect(waiters));
            match spawned {
                Ok(thread) => {
                    state.collecting = Some(thread);
                    return Poll::Pending;
                }
                Err(err) => {
                    // `spawn` dropped the waiters with the closure: they see an error.
                    let err = Error::internal(format!("start a ctrd-gc thread: {err}"));
                    state.schedule.collected(&Err(err));
                }
            }
        }
    }

    /// One collection, on the `ctrd-gc` thread.
    fn collect(self: Arc<Self>, waiters: Vec<Reply>) {
        let result = self.collector.garbage_collect();
        let waker = {
            let mut state = self.state.lock();
            state.collecting = None;
            state.schedule.collected(&result);
            if !state.stopped {
                for event in std::mem::take(&mut state.held) {
                    state.schedule.on_event(event);
                }
            }
            state.waker.take()
        };
        for waiter in waiters {
            let _ = waiter.send(result.clone());
        }
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// The schedule's state between events.
struct Loop {
    config: SchedulerConfig,
    next: Option<Instant>,
    collected_once: bool,
    interval: Duration,
    time_sum: Duration,
    collections: u32,
    triggered: bool,
    deletions: i64,
    mutations: i64,
    waiters: Vec<Reply>,
}

impl Loop {
    fn new(config: SchedulerConfig) -> Self {
        let startup = config.startup_delay.0;
        Loop {
            next: (!startup.is_zero()).then(|| Instant::now() + startup),
            config,
            collected_once: false,
            interval: Duration::from_secs(1),
            time_sum: Duration::ZERO,
            collections: 0,
            triggered: false,
            deletions: 0,
            mutations: 0,
            waiters: Vec::new(),
        }
    }

    /// Nothing asked for a collection since the last one.
    fn idle(&self) -> bool {
        let threshold = self.config.mutation_threshold;
        !self.triggered
            && self.collected_once
            && self.deletions == 0
            && (threshold == 0 || self.mutations < threshold)
    }

    fn on_event(&mut self, event: Event) {
        let (mutation, dirty, reply) = match event {
            Event::Mutation { dirty } => (true, dirty, None),
            Event::Trigger(reply) => (false, false, Some(reply)),
        };
        if dirty {
            self.deletions += 1;
        }
        if mutation {
            self.mutations += 1;
        } else {
            self.triggered = true;
        }
        self.waiters.extend(reply);
        let c = &self.config;
        let now_needed = self.triggered
            || (c.deletion_threshold > 0 && self.deletions >= c.deletion_threshold)
            || (self.next.is_none()
                && ((c.deletion_threshold == 0 && self.deletions > 0)
                    || (c.mutation_threshold > 0 && self.mutations >= c.mutation_threshold)));
        if now_needed {
            let at = Instant::now() + c.schedule_delay.0;
            if !matches!(self.next, Some(next) if next <= at) {
                self.next = Some(at);
            }
        }
    }

    /// Takes in the outcome of a collection; the pace follows the time its metadata
    /// transaction took (`Stats::elapsed`), as containerd's does.
    fn collected(&mut self, result: &Result<Stats, Error>) {
        self.collected_once = true;
        match result {
            Ok(stats) => {
                log::debug!(
                    "garbage collected: removed {} in {:?}",
                    stats.removed,
                    stats.elapsed
                );
                self.time_sum += stats.elapsed;
                self.collections += 1;
                self.triggered = false;
                self.deletions = 0;
                self.mutations = 0;
                if self.config.pause_threshold > 0.0 {
                    let avg = (self.time_sum / self.collections).max(MINIMUM_GC_TIME);
                    self.interval = avg.div_f64(self.config.pause_threshold) - avg;
                }
                self.next = Some(Instant::now() + self.interval);
            }
            Err(err) => {
                log::error!("garbage collection failed: {err}");
                self.next = Some(Instant::now() + self.interval + Duration::from_secs(1));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[derive(Default)]
    struct Counting {
        runs: AtomicUsize,
        fail: bool,
    }

    impl Collector for Counting {
        fn garbage_collect(&self) -> Result<Stats, Error> {
            let n = self.runs.fetch_add(1, Ordering::SeqCst) + 1;
            if self.fail {
                return Err(Error::internal("disk on fire"));
            }
            Ok(Stats {
                elapsed: Duration::from_micros(10),
                removed: n,
            })
        }
    }

    fn config(startup_ms: u64, schedule_ms: u64) -> SchedulerConfig {
        SchedulerConfig {
            startup_delay: GoDuration(Duration::from_millis(startup_ms)),
            schedule_delay: GoDuration(Duration::from_millis(schedule_ms)),
            ..Default::default()
        }
    }

    fn wait_runs(c: &Counting, want: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while c.runs.load(Ordering::SeqCst) < want {
            assert!(
                Instant::now() < deadline,
                "collector never reached {want} runs"
            );
            thread::yield_now();
        }
    }

    #[test]
    fn startup_collection_runs_once_then_idles() {
        let c = Arc::new(Counting::default());
        let s = Scheduler::start(c.clone(), config(1, 0));
        wait_runs(&c, 1);
        // A trigger afterwards gets a collection of its own.
        let stats = s.schedule_and_wait().unwrap();
        assert_eq!(stats.removed, 2);
        s.stop();
        assert_eq!(c.runs.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn deletion_schedules_a_collection_but_plain_mutations_do_not() {
        let c = Arc::new(Counting::default());
        // No startup collection: only events drive it.
        let s = Scheduler::start(c.clone(), config(0, 0));
        for _ in 0..5 {
            s.mutation(false);
        }
        // A sync trigger is processed after the mutations, so if they had scheduled a run
        // it would have counted first.
        assert_eq!(s.schedule_and_wait().unwrap().removed, 1);
        s.mutation(true);
        wait_runs(&c, 2);
        s.stop();
    }

    #[test]
    fn mutation_threshold_forces_collection() {
        let c = Arc::new(Counting::default());
        let cfg = SchedulerConfig {
            mutation_threshold: 3,
            ..config(0, 0)
        };
        let s = Scheduler::start(c.clone(), cfg);
        for _ in 0..3 {
            s.mutation(false);
        }
        wait_runs(&c, 1);
        s.stop();
    }

    #[test]
    fn failed_collection_reaches_waiters_and_stop_ends_waits() {
        let c = Arc::new(Counting {
            fail: true,
            ..Default::default()
        });
        let s = Scheduler::start(c.clone(), config(0, 0));
        let err = s.schedule_and_wait().unwrap_err();
        assert_eq!(err.message(), "disk on fire");
        s.stop();
        assert!(s.schedule_and_wait().is_err());
    }

    #[test]
    fn thresholds_are_clamped_and_config_round_trips() {
        let c = Arc::new(Counting::default());
        let cfg = SchedulerConfig {
            pause_threshold: 3.0,
            mutation_threshold: -4,
            ..config(0, 0)
        };
        let s = Scheduler::start(c, cfg);
        assert_eq!(s.config().pause_threshold, 0.5);
        assert_eq!(s.config().mutation_threshold, 0);
        let text = toml::to_string(&SchedulerConfig::default()).unwrap();
        assert!(text.contains("startup_delay = \"100ms\""), "{text}");
        let back: SchedulerConfig = toml::from_str(&text).unwrap();
        assert_eq!(back, SchedulerConfig::default());
        assert!(toml::from_str::<SchedulerConfig>("schedule_delay = \"5 parsecs\"").is_err());
    }
}
