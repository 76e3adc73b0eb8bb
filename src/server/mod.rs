//! Boot and stop: the main thread's loop and the threads it owns.
//!
//! The main thread waits in one mio poll on its [`Event`] channel (every send wakes the
//! poll), on the signalfd (`signals.rs`) and on the next timer of the waiting futures
//! (`crate::waiting`: events subscriptions, the follower of the shims' exits, the garbage
//! collection schedule), which it runs between its own events. No other thread of ctrd
//! exists only to wait.
//!
//! Protocol (all messages are [`Event`]s on one crossbeam channel read by the main thread):
//! 0. Take the sockets systemd passed (`fd://` addresses) and clear its variables, resolve
//!    socket groups (`activation.rs`): this touches the environment, so no thread exists yet.
//! 1. Block SIGTERM/SIGINT/SIGUSR1, open their signalfd and make the main thread the one
//!    that runs waiting futures, before any other thread exists: every later thread
//!    inherits the mask, and no signal is lost during boot.
//! 2. Create the top-level directories, apply `oom_score` and `cgroup.path`, check
//!    `[timeouts]`, and start overlayfs's support check (its plugin takes the verdict).
//! 3. Start `ctrd-init`: it initialises the plugins in graph order and answers
//!    [`Event::Init`]. A SIGTERM meanwhile sets its cancel flag; the main thread then waits
//!    for the answer and stops.
//! 4. Start one thread per listener with the services of every loaded plugin (TCP gRPC,
//!    metrics, ttrpc, debug); each answers [`Event::ListenerReady`] or
//!    [`Event::ListenerFailed`]. Then the gRPC server on the unix socket, on this thread: its
//!    socket joins the poll, which accepts its connections from then on (its
//!    completion-queue thread serves them).
//! 5. Once all are ready, the plugins' readiness sends [`Event::Ready`] when its last
//!    registration is done (at once when none is pending): health turns SERVING, `READY=1`
//!    goes to systemd.
//! 6. SIGUSR1 dumps every thread's stack. SIGTERM/SIGINT (or a listener that dies on its
//!    own) stop the daemon: `STOPPING=1`, health NOT_SERVING, the healthcheck plugin's
//!    `shutdown_drain` (cut short by a second signal), then the main thread closes the gRPC
//!    unix socket and the `ctrd-stop` thread stops the other listeners and then the gRPC
//!    server (in-flight calls drained, then cancelled), closes the plugins in reverse
//!    init order, removes socket files and answers [`Event::Stopped`]. Meanwhile the main
//!    thread keeps running the waiting futures (streams see their calls cancelled and end)
//!    and still answers SIGUSR1. A dead listener makes the exit status non-zero.

mod activation;
mod apply;
mod builtins;
mod conns;
mod debug;
mod dirs;
mod grpc;
pub mod http;
mod init;
mod listener;
mod notify;
pub mod profile;
mod signals;
mod socket;
pub mod stacks;
mod summary;
pub mod threads;
mod tls;
mod ttrpc;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

pub use init::registry;

use crate::config::{self, Config, ConfigError};
use crate::errdefs::Error;
use crate::plugin::{types, Readiness, RegistryError, Set};
use crate::services::health::HealthService;
use grpc::{Bind, GrpcSettings, Tcp};
use listener::Listener;

/// Why the daemon could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Dirs(String),
    #[error("signal handling: {0}")]
    Signals(std::io::Error),
    #[error("oom_score: {0}")]
    OomScore(String),
    #[error("cgroup {0}")]
    Cgroup(String),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("plugin {0}: {1}")]
    PluginConfig(String, ConfigError),
    #[error("plugin {0}: {1}")]
    Plugin(String, Error),
    #[error("load required plugin {0}: {1}")]
    RequiredPlugin(String, Error),
    #[error("plugin failed after registering readiness {0}: {1}")]
    ReadinessFailed(String, Error),
    #[error("required plugin [{0}] not included")]
    RequiredMissing(String),
    #[error("{0}")]
    Socket(String),
    #[error("{0}: {1}")]
    Listener(&'static str, String),
    #[error("serve failure on {0}: {1}")]
    ListenerExited(&'static str, String),
    #[error("start-up cancelled")]
    Cancelled,
    #[error("tls: {0}")]
    Tls(String),
    #[error(transparent)]
    Metrics(#[from] crate::metrics::MetricsError),
    #[error("{0} thread could not be started: {1}")]
    Thread(&'static str, std::io::Error),
    #[error("main loop: {0}")]
    MainLoop(std::io::Error),
}

/// Messages to the main thread.
pub enum Event {
    Signal(i32),
    Init(Result<Set, ServerError>),
    ListenerReady(&'static str),
    ListenerFailed(&'static str, ServerError),
    ListenerExited(&'static str, String),
    Ready,
    /// `ctrd-stop` has stopped the listeners and closed the plugins.
    Stopped,
}

/// The main thread's mailbox: every event sent wakes its loop.
#[derive(Clone)]
pub struct EventSender {
    tx: Sender<Event>,
    waker: Option<Arc<mio::Waker>>,
}

impl EventSender {
    /// Queues `event` for the main thread; false when it is gone.
    pub fn send(&self, event: Event) -> bool {
        if self.tx.send(event).is_err() {
            return false;
        }
        if let Some(waker) = &self.waker {
            let _ = waker.wake();
        }
        true
    }

    /// A sender whose events are read from the returned receiver alone (tests).
    #[cfg(test)]
    pub fn detached() -> (EventSender, Receiver<Event>) {
        let (tx, rx) = crossbeam_channel::unbounded();
        (EventSender { tx, waker: None }, rx)
    }
}

const SIGNALS: mio::Token = mio::Token(0);
const WAKE: mio::Token = mio::Token(1);
const GRPC: mio::Token = mio::Token(2);

/// What the main thread waits on: its events, the signalfd, the waiting futures' timers,
/// and the gRPC unix socket's new connections.
struct MainLoop {
    poll: mio::Poll,
    ready: mio::Events,
    signals: signals::Signals,
    pending: VecDeque<i32>,
    rx: Receiver<Event>,
    tx: EventSender,
    /// `None` only if waiting futures already ran elsewhere (see `crate::waiting`).
    waiting: Option<crate::waiting::Executor>,
    /// The gRPC server on the unix socket, whose connections this loop accepts.
    grpc: Option<grpc::UnixServing>,
    /// When to accept again without a new readiness event: at once (a batch left more) or
    /// after an error.
    accept_again: Option<Instant>,
}

impl MainLoop {
    /// Step 1; call it before any other thread exists.
    fn new() -> Result<MainLoop, ServerError> {
        let signals = signals::Signals::block().map_err(ServerError::Signals)?;
        let poll = mio::Poll::new().map_err(ServerError::MainLoop)?;
        signals
            .register(poll.registry(), SIGNALS)
            .map_err(ServerError::Signals)?;
        let waker =
            Arc::new(mio::Waker::new(poll.registry(), WAKE).map_err(ServerError::MainLoop)?);
        let hook = waker.clone();
        let waiting = crate::waiting::install(Arc::new(move || {
            let _ = hook.wake();
        }));
        if waiting.is_none() {
            log::warn!("waiting futures already run on another thread");
        }
        let (tx, rx) = crossbeam_channel::unbounded();
        Ok(MainLoop {
            poll,
            ready: mio::Events::with_capacity(8),
            signals,
            pending: VecDeque::new(),
            rx,
            tx: EventSender {
                tx,
                waker: Some(waker),
            },
            waiting,
            grpc: None,
            accept_again: None,
        })
    }

    /// Accepts `serving`'s connections from now on.
    fn serve_grpc(&mut self, serving: grpc::UnixServing) -> Result<(), ServerError> {
        let registered = serving.register(self.poll.registry(), GRPC);
        // Held before any error: it is stopped with the daemon either way.
        self.grpc = Some(serving);
        registered.map_err(|err| {
            ServerError::Listener("ctrd-grpc", format!("cannot watch the socket: {err}"))
        })?;
        // Connections made before the registration are pending already.
        self.accept();
        Ok(())
    }

    /// One batch of the gRPC socket's pending connections; notes when to come back.
    fn accept(&mut self) {
        let Some(grpc) = &mut self.grpc else { return };
        self.accept_again = match grpc.accept_ready() {
            grpc::Accepted::All => None,
            grpc::Accepted::More => Some(Instant::now()),
            grpc::Accepted::Failed => Some(Instant::now() + grpc::ACCEPT_RETRY),
        };
    }

    /// Stops accepting gRPC connections and hands the server over, to be stopped.
    fn take_grpc(&mut self) -> Option<grpc::UnixServing> {
        self.accept_again = None;
        let mut serving = self.grpc.take()?;
        serving.close(self.poll.registry());
        Some(serving)
    }

    fn sender(&self) -> &EventSender {
        &self.tx
    }

    /// The next event, or `None` once `deadline` has passed; waiting futures run meanwhile.
    fn next(&mut self, deadline: Option<Instant>) -> Option<Event> {
        loop {
            if let Some(sig) = self.pending.pop_front() {
                return Some(Event::Signal(sig));
            }
            if let Ok(event) = self.rx.try_recv() {
                return Some(event);
            }
            let timer = self
                .waiting
                .as_mut()
                .and_then(crate::waiting::Executor::run);
            if let Ok(event) = self.rx.try_recv() {
                return Some(event);
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| d <= now) {
                return None;
            }
            let until = [deadline, timer, self.accept_again]
                .into_iter()
                .flatten()
                .min();
            let timeout = until.map(|u| u.saturating_duration_since(now));
            if let Err(err) = self.poll.poll(&mut self.ready, timeout) {
                if err.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Some(Event::ListenerExited("ctrd", format!("main loop: {err}")));
            }
            if self.ready.iter().any(|e| e.token() == SIGNALS) {
                if let Err(err) = self.signals.read_into(&mut self.pending) {
                    log::error!("reading signals failed: {err}");
                }
            }
            let again = self.accept_again.is_some_and(|at| at <= Instant::now());
            if again || self.ready.iter().any(|e| e.token() == GRPC) {
                self.accept();
            }
        }
    }

    /// The next event, however long it takes.
    fn recv(&mut self) -> Event {
        loop {
            if let Some(event) = self.next(None) {
                return event;
            }
        }
    }
}

/// Runs the daemon until it is stopped; `Ok` means a clean stop on a signal.
pub fn run(mut config: Config) -> Result<(), ServerError> {
    let started = Instant::now();
    let passed = activation::Passed::from_env();
    let endpoints = activation::resolve(&mut config, passed)?;
    // gRPC core's own diagnostics (TLS handshake failures…) go through our logger.
    grpcio::redirect_log();
    let mut main = MainLoop::new()?;
    let outcome = boot_and_serve(config, endpoints, started, &mut main);
    // A check the overlayfs plugin never took (start-up stopped before its turn) ends here.
    crate::snapshots::overlay::check::finish_prestarted();
    outcome
}

fn boot_and_serve(
    config: Config,
    mut endpoints: activation::Endpoints,
    started: Instant,
    main: &mut MainLoop,
) -> Result<(), ServerError> {
    dirs::create_top_level(&config)?;
    crate::workers::configure(config.grpc.workers);
    apply::apply(&config)?;
    config::parse_timeouts(&config)?;
    crate::snapshots::overlay::plugin::prestart_check(&config);
    log::info!(
        "starting ctrd version={} revision={}",
        crate::VERSION,
        crate::REVISION
    );
    let config = Arc::new(config);
    let readiness = Readiness::new();
    let cancel = Arc::new(AtomicBool::new(false));
    let init = {
        let (config, readiness, cancel, tx) = (
            config.clone(),
            readiness.clone(),
            cancel.clone(),
            main.sender().clone(),
        );
        std::thread::Builder::new()
            .name("ctrd-init".into())
            .spawn(move || {
                let result = init::init_plugins(config, &readiness, &cancel);
                let _ = tx.send(Event::Init(result));
            })
            .map_err(|err| ServerError::Thread("ctrd-init", err))?
    };
    // Meanwhile this thread builds gRPC core's environment for the unix listener, which
    // would otherwise start only after the plugins.
    let grpc_environment = grpc::environment("ctrd-grpc");

    // Step 3: wait for the plugins, handling signals meanwhile.
    let mut stop_requested = false;
    let set = loop {
        match main.recv() {
            Event::Signal(sig) if sig == libc::SIGUSR1 => dump_stacks(),
            Event::Signal(sig) => {
                log::info!("received signal {} during start-up", signal_name(sig));
                stop_requested = true;
                cancel.store(true, Ordering::SeqCst);
            }
            Event::Init(result) => break result,
            _ => {}
        }
    };
    // The init thread has sent its result and is ending: it is joined once the listeners
    // are on their way (its teardown took ~0.2 ms of the start before them).
    let set = match set {
        Ok(set) => set,
        Err(err) => {
            let _ = init.join();
            return match err {
                ServerError::Cancelled => Ok(()),
                err => Err(err),
            };
        }
    };
    if stop_requested {
        let _ = init.join();
        notify::notify("STOPPING=1");
        init::close_all(&set);
        return Ok(());
    }

    // Step 4: listeners.
    let health = set.value::<HealthService>(types::GRPC, "healthcheck");
    let mut daemon = Daemon {
        set,
        listeners: Vec::new(),
        grpc: None,
        health,
        ttrpc_serving: false,
    };
    let sender = main.sender().clone();
    let expected =
        match daemon.start_listeners(&config, &mut endpoints, grpc_environment, started, main) {
            Ok(expected) => expected,
            Err(err) => {
                let _ = init.join();
                daemon.stop(main);
                return Err(err);
            }
        };
    let _ = init.join();
    let mut ready_listeners = 0;
    let outcome = loop {
        let Some(event) = main.next(Some(Instant::now() + TRIM_INTERVAL)) else {
            // Quiet for a while: start-up's leftovers (the overlay check's test superblock
            // and scratch directory) go now, not while the first calls are answered; and
            // what a burst left free in the heap is handed back.
            crate::snapshots::overlay::check::quiet();
            if crate::sys::trim_heap(TRIM_MIN_FREE) {
                log::debug!("returned free heap memory to the system");
            }
            continue;
        };
        match event {
            Event::Signal(sig) if sig == libc::SIGUSR1 => dump_stacks(),
            Event::Signal(sig) => {
                log::info!("received signal {}", signal_name(sig));
                daemon.drain(main);
                break Ok(());
            }
            Event::ListenerReady(name) => {
                log::debug!("{name} ready");
                ready_listeners += 1;
                if ready_listeners == expected {
                    let tx = sender.clone();
                    readiness.when_ready(move || {
                        tx.send(Event::Ready);
                    });
                }
            }
            Event::ListenerFailed(_, err) => break Err(err),
            Event::ListenerExited(name, why) => break Err(ServerError::ListenerExited(name, why)),
            Event::Ready => {
                if let Some(health) = &daemon.health {
                    health.set_serving();
                }
                notify::notify("READY=1");
                let took = started.elapsed();
                log::info!("ctrd successfully booted in {:.6}s", took.as_secs_f64());
                log::info!(
                    "{}",
                    summary::startup_line(&config, daemon.ttrpc_serving, &daemon.set, took)
                );
                for line in summary::plugin_lines(&daemon.set) {
                    log::debug!("{line}");
                }
            }
            Event::Init(_) | Event::Stopped => {}
        }
    };
    daemon.stop(main);
    outcome
}

/// How often the main thread looks for free heap memory to give back.
const TRIM_INTERVAL: Duration = Duration::from_secs(2);

/// Free heap memory kept without trimming.
const TRIM_MIN_FREE: usize = 4 << 20;

struct Daemon {
    set: Set,
    /// The listeners on threads of their own; the gRPC unix socket is the main thread's.
    listeners: Vec<Listener>,
    /// The gRPC server on the unix socket once the main thread stopped accepting for it.
    grpc: Option<grpc::UnixServing>,
    health: Option<Arc<HealthService>>,
    ttrpc_serving: bool,
}

impl Daemon {
    /// Shutdown has begun: answer NOT_SERVING for the configured drain before anything
    /// closes; a second SIGTERM/SIGINT ends the wait.
    fn drain(&self, main: &mut MainLoop) {
        let Some(health) = &self.health else { return };
        let drain = health.drain();
        if drain.is_zero() {
            return;
        }
        notify::notify("STOPPING=1");
        health.set_stopping();
        log::info!(
            "draining for {}: health answers NOT_SERVING until the listeners close",
            config::format_duration(drain)
        );
        let deadline = Instant::now() + drain;
        loop {
            match main.next(Some(deadline)) {
                Some(Event::Signal(sig)) if sig != libc::SIGUSR1 => {
                    log::info!("received signal {}: ending the drain", signal_name(sig));
                    return;
                }
                Some(Event::Signal(_)) => dump_stacks(),
                Some(_) => {}
                None => return,
            }
        }
    }

    /// Starts every configured listener: the gRPC unix socket on this thread, whose poll
    /// accepts its connections (its completion-queue thread serves them), the others each
    /// on a thread of its own. Returns how many will report ready.
    fn start_listeners(
        &mut self,
        config: &Config,
        endpoints: &mut activation::Endpoints,
        grpc_environment: Arc<grpcio::Environment>,
        started: Instant,
        main: &mut MainLoop,
    ) -> Result<usize, ServerError> {
        let tx = &main.sender().clone();
        // TLS material is checked before anything listens.
        let tcp_credentials = if config.grpc.tcp_address.is_empty() {
            None
        } else {
            tls::credentials(&config.grpc)?
        };
        // The metrics interceptor is set before gRPC serves, so it sees every call.
        let metrics_listener = if config.metrics.address.is_empty() {
            None
        } else {
            let metrics = Arc::new(crate::metrics::Metrics::new(config.metrics.grpc_histogram)?);
            crate::rpc::set_interceptor(metrics.clone());
            let handler: http::Handler = Arc::new(move |method: &str, url: &str| {
                let path = url.split('?').next().unwrap_or(url);
                if method == "GET" && path == "/v1/metrics" {
                    http::Reply::ok("text/plain; version=0.0.4; charset=utf-8", metrics.render())
                } else {
                    http::Reply::not_found()
                }
            });
            Some((
                config.metrics.address.clone(),
                handler,
                config.metrics.max_connections,
            ))
        };

        let services = self.grpc_services(|g| g.grpc_services());
        let bind = match endpoints.grpc.take() {
            Some(inherited) => Bind::Inherited {
                listener: inherited.listener,
                label: inherited.label,
            },
            None => Bind::Unix {
                path: PathBuf::from(&config.grpc.address),
                uid: config.grpc.uid,
                gid: config.grpc.gid,
            },
        };
        let unix = GrpcSettings {
            bind,
            max_recv_message_size: config.grpc.max_recv_message_size,
            max_send_message_size: config.grpc.max_send_message_size,
            environment: Some(grpc_environment),
            max_connections: config.grpc.max_connections,
        };
        if let Some((address, handler, max_connections)) = metrics_listener {
            self.spawn("ctrd-metrics", tx, move || {
                http::start(
                    "ctrd-metrics",
                    http::HttpBind::Tcp(address),
                    handler,
                    max_connections,
                )
            })?;
        }

        if !config.grpc.tcp_address.is_empty() {
            let tcp_services = self.grpc_services(|g| g.tcp_services());
            if tcp_services.is_empty() {
                log::info!("no tcp grpc services configured: skip plugin");
            } else {
                let credentials = match tcp_credentials {
                    Some(credentials) => credentials,
                    None => {
                        log::warn!(
                            "serving gRPC on tcp {} without TLS: anyone who can reach it can call ctrd",
                            config.grpc.tcp_address
                        );
                        grpcio::ServerCredentials::insecure()
                    }
                };
                let tcp = GrpcSettings {
                    bind: Tcp {
                        address: config.grpc.tcp_address.clone(),
                        credentials,
                    },
                    max_recv_message_size: config.grpc.max_recv_message_size,
                    max_send_message_size: config.grpc.max_send_message_size,
                    environment: None,
                    max_connections: 0,
                };
                self.spawn("ctrd-tcp", tx, move || {
                    grpc::start("ctrd-tcp", tcp, tcp_services)
                })?;
            }
        }

        let methods: std::collections::HashMap<_, _> = self
            .set
            .all()
            .iter()
            .filter_map(|p| p.instance().ok()?.ttrpc().cloned())
            .flat_map(|t| t.ttrpc_services())
            .collect();
        if methods.is_empty() || config.ttrpc.address.is_empty() {
            log::info!("no ttrpc services or address: not serving ttrpc");
        } else {
            let bind = match endpoints.ttrpc.take() {
                Some(inherited) => ttrpc::TtrpcBind::Inherited {
                    listener: inherited.listener,
                    label: inherited.label,
                },
                None => ttrpc::TtrpcBind::Path {
                    path: PathBuf::from(&config.ttrpc.address),
                    uid: config.ttrpc.uid,
                    gid: config.ttrpc.gid,
                },
            };
            let max_connections = config.ttrpc.max_connections;
            self.spawn("ctrd-ttrpc", tx, move || {
                ttrpc::start(bind, methods, max_connections)
            })?;
            self.ttrpc_serving = true;
        }

        if !config.debug.address.is_empty() {
            let bind = if config.debug.address.starts_with('/') {
                http::HttpBind::Unix {
                    path: PathBuf::from(&config.debug.address),
                    uid: config.debug.uid,
                    gid: config.debug.gid,
                }
            } else {
                http::HttpBind::Tcp(config.debug.address.clone())
            };
            let debug = debug::Debug::new(started, self.set.clone());
            let max_connections = config.debug.max_connections;
            let handler: http::Handler =
                Arc::new(move |method: &str, url: &str| debug.handle(method, url));
            self.spawn("ctrd-debug", tx, move || {
                http::start("ctrd-debug", bind, handler, max_connections)
            })?;
        }

        // Last, so the threads above bind meanwhile.
        main.serve_grpc(grpc::start_unix("ctrd-grpc", unix, services)?)?;
        tx.send(Event::ListenerReady("ctrd-grpc"));
        log::info!("try: ctr --address {} version", config.grpc.address);
        Ok(self.listeners.len() + 1)
    }

    fn spawn(
        &mut self,
        name: &'static str,
        tx: &EventSender,
        start: impl FnOnce()
                -> Result<(Box<dyn listener::Serving>, Option<listener::Interrupt>), ServerError>
            + Send
            + 'static,
    ) -> Result<(), ServerError> {
        self.listeners
            .push(Listener::spawn(name, tx.clone(), start)?);
        Ok(())
    }

    /// The gRPC services of every successfully loaded plugin, in init order.
    fn grpc_services(
        &self,
        pick: impl Fn(&dyn crate::plugin::GrpcServices) -> Vec<grpcio::Service>,
    ) -> Vec<grpcio::Service> {
        self.set
            .all()
            .iter()
            .filter_map(|p| p.instance().ok()?.grpc().cloned())
            .flat_map(|g| pick(g.as_ref()))
            .collect()
    }

    /// Stops the listeners and closes the plugins on the `ctrd-stop` thread, while the main
    /// thread keeps running the waiting futures and answering SIGUSR1 until it is done.
    fn stop(mut self, main: &mut MainLoop) {
        self.grpc = main.take_grpc();
        let (hand_tx, hand_rx) = crossbeam_channel::bounded::<Daemon>(1);
        let done = main.sender().clone();
        let spawned = std::thread::Builder::new()
            .name("ctrd-stop".into())
            .spawn(move || {
                if let Ok(daemon) = hand_rx.recv() {
                    daemon.stop_now();
                }
                done.send(Event::Stopped);
            });
        let thread = match spawned {
            Ok(thread) => thread,
            Err(err) => {
                log::warn!("stopping on the main thread: no ctrd-stop thread: {err}");
                self.stop_now();
                return;
            }
        };
        let _ = hand_tx.send(self);
        loop {
            match main.recv() {
                Event::Stopped => break,
                Event::Signal(sig) if sig == libc::SIGUSR1 => dump_stacks(),
                _ => {}
            }
        }
        let _ = thread.join();
    }

    fn stop_now(self) {
        notify::notify("STOPPING=1");
        if let Some(health) = &self.health {
            health.set_stopping();
        }
        for listener in self.listeners.into_iter().rev() {
            log::debug!("stopping {}", listener.name());
            listener.stop();
        }
        if let Some(grpc) = self.grpc {
            log::debug!("stopping ctrd-grpc");
            grpc.stop();
        }
        init::close_all(&self.set);
        log::info!("ctrd stopped");
    }
}

/// SIGUSR1: every thread's stack to the log and a file, written by a short-lived thread so
/// the main thread's poll (signals, the gRPC socket, waiting futures) goes on meanwhile;
/// capturing may wait up to half a second for each thread that does not answer.
fn dump_stacks() {
    let spawned = std::thread::Builder::new()
        .name("ctrd-stacks".into())
        .spawn(stacks::dump_to_log_and_file);
    if let Err(err) = spawned {
        log::warn!("no thread for the stack dump ({err}): dumping on the main thread");
        stacks::dump_to_log_and_file();
    }
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGTERM => "terminated",
        libc::SIGINT => "interrupt",
        libc::SIGUSR1 => "user defined signal 1",
        _ => "unknown",
    }
}
