//! A gRPC listener: one named thread that owns a grpcio server.
//!
//! Protocol with the main thread:
//! 1. [`GrpcListener::spawn`] starts the thread with the services to serve.
//! 2. The thread builds the server, binds, starts it and sends [`Event::ListenerReady`] (or
//!    [`Event::ListenerFailed`] and ends).
//! 3. It blocks until [`GrpcListener::stop`] (or the handle is dropped).
//! 4. It shuts the server down: in-flight calls get a grace period, then are cancelled.
//!    If the thread ends any other way (a panic), [`Event::ListenerExited`] tells the main
//!    thread, which stops the daemon.

use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use grpcio::{ChannelBuilder, EnvBuilder, ServerBuilder, ServerCredentials};

use super::{socket, Event, ServerError};

/// How long in-flight calls may run on after stop before they are cancelled.
const GRACE: Duration = Duration::from_millis(500);

/// Where a listener binds.
pub enum Bind {
    Unix { path: PathBuf, uid: u32, gid: u32 },
}

/// What a gRPC listener serves and how.
pub struct GrpcSettings {
    pub bind: Bind,
    pub max_recv_message_size: i64,
    pub max_send_message_size: i64,
    /// Completion-queue threads of grpcio (each polls and runs unary handlers).
    pub cq_threads: usize,
}

/// Handle to a running gRPC listener thread.
pub struct GrpcListener {
    name: &'static str,
    stop: Option<Sender<()>>,
    join: Option<JoinHandle<()>>,
}

/// Tells the main thread when the listener thread ends without being asked to.
struct ExitGuard {
    name: &'static str,
    events: Sender<Event>,
    stopping: bool,
}

impl Drop for ExitGuard {
    fn drop(&mut self) {
        if !self.stopping {
            let why = if std::thread::panicking() {
                "listener thread panicked"
            } else {
                "listener thread ended"
            };
            let _ = self
                .events
                .send(Event::ListenerExited(self.name, why.to_string()));
        }
    }
}

impl GrpcListener {
    pub fn spawn(
        name: &'static str,
        settings: GrpcSettings,
        services: Vec<grpcio::Service>,
        events: Sender<Event>,
    ) -> Result<GrpcListener, ServerError> {
        let (stop_tx, stop_rx) = crossbeam_channel::bounded(1);
        let join = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || serve(name, settings, services, events, stop_rx))
            .map_err(|err| ServerError::Listener(name, err.to_string()))?;
        Ok(GrpcListener {
            name,
            stop: Some(stop_tx),
            join: Some(join),
        })
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Asks the thread to shut its server down and waits for it.
    pub fn stop(mut self) {
        self.stop.take();
        if let Some(join) = self.join.take() {
            if join.join().is_err() {
                log::error!("{} panicked while stopping", self.name);
            }
        }
    }
}

fn serve(
    name: &'static str,
    settings: GrpcSettings,
    services: Vec<grpcio::Service>,
    events: Sender<Event>,
    stop: Receiver<()>,
) {
    let mut guard = ExitGuard {
        name,
        events: events.clone(),
        stopping: false,
    };
    let (mut server, socket_path) = match start(name, settings, services) {
        Ok(started) => started,
        Err(err) => {
            guard.stopping = true;
            let _ = events.send(Event::ListenerFailed(name, err));
            return;
        }
    };
    let _ = events.send(Event::ListenerReady(name));
    // A message or a dropped handle both mean stop.
    let _ = stop.recv();
    guard.stopping = true;
    shut_down(name, &mut server);
    if let Some(path) = socket_path {
        socket::remove(&path);
    }
    log::info!("{name} stopped");
}

fn start(
    name: &'static str,
    settings: GrpcSettings,
    services: Vec<grpcio::Service>,
) -> Result<(grpcio::Server, Option<PathBuf>), ServerError> {
    let fail = |err: String| ServerError::Listener(name, err);
    let env = Arc::new(
        EnvBuilder::new()
            .cq_count(settings.cq_threads.max(1))
            .name_prefix(format!("{name}-cq"))
            .build(),
    );
    let args = ChannelBuilder::new(env.clone())
        .max_receive_message_len(clamp(settings.max_recv_message_size))
        .max_send_message_len(clamp(settings.max_send_message_size))
        .build_args();
    let mut builder = ServerBuilder::new(env).channel_args(args);
    for service in services {
        builder = builder.register_service(service);
    }
    let mut server = builder.build().map_err(|err| fail(err.to_string()))?;
    let socket_path = match settings.bind {
        Bind::Unix { path, uid, gid } => {
            socket::prepare(&path, uid, gid)?;
            server
                .add_listening_port(
                    format!("unix:{}", path.display()),
                    ServerCredentials::insecure(),
                )
                .map_err(|err| fail(format!("listen on {}: {err}", path.display())))?;
            socket::secure(&path, uid, gid)?;
            log::info!("serving gRPC on {}", path.display());
            Some(path)
        }
    };
    server.start();
    Ok((server, socket_path))
}

fn clamp(size: i64) -> i32 {
    size.clamp(0, i64::from(i32::MAX)) as i32
}

/// Stops accepting, lets in-flight calls finish within [`GRACE`], then cancels the rest.
fn shut_down(name: &str, server: &mut grpcio::Server) {
    let done = server.shutdown();
    let (tx, rx) = crossbeam_channel::bounded(1);
    let waiter = std::thread::Builder::new()
        .name(format!("{name}-stop"))
        .spawn(move || {
            let _ = futures_executor::block_on(done);
            let _ = tx.send(());
        });
    if waiter.is_err() {
        server.cancel_all_calls();
        return;
    }
    if rx.recv_timeout(GRACE).is_err() {
        log::info!("{name}: cancelling calls still in flight");
        server.cancel_all_calls();
        if rx.recv_timeout(GRACE).is_err() {
            log::warn!("{name}: server did not finish shutting down");
        }
    }
}
