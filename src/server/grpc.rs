//! gRPC listeners (unix socket, TCP with optional TLS/mTLS, a unix socket passed by systemd):
//! a grpcio server owned by its listener thread (see [`super::listener`]).
//!
//! gRPC core cannot listen on a descriptor it did not create, so for a passed socket the
//! listener thread accepts connections itself (mio, woken by the stop interrupt) and hands
//! each one to the started server.

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::Receiver;
use grpcio::{ChannelBuilder, EnvBuilder, ServerBuilder, ServerCredentials};

/// Bytes a client may send on one stream before the server asks for more. A message is
/// assembled whole before it is decoded whatever the window, so a small window only limits
/// how much of the next message waits in memory meanwhile; on a local socket the extra
/// window updates cost little.
const STREAM_WINDOW: i32 = 256 << 10;

/// The shortest interval between a client's pings while no data flows.
const PING_INTERVAL_WITHOUT_DATA: Duration = Duration::from_secs(300);

/// Pings too early that a client may send before its connection is closed: 0, none is
/// counted (see the ping comment in [`start`]).
const MAX_PING_STRIKES: i32 = 0;

/// Pings the server itself sends before it must send data.
const MAX_PINGS_WITHOUT_DATA: i32 = 2;

/// The largest single read gRPC makes from a connection's socket.
const MAX_READ_CHUNK: i32 = 256 << 10;

use super::listener::{Interrupt, Serving};
use super::{socket, ServerError};

/// How long in-flight calls may run on after stop before they are cancelled.
const GRACE: Duration = Duration::from_millis(500);

/// Where a gRPC listener binds.
pub enum Bind {
    Unix {
        path: PathBuf,
        uid: u32,
        gid: u32,
    },
    Tcp {
        address: String,
        credentials: ServerCredentials,
    },
    /// A listening socket systemd passed; never unlinked or chmodded by ctrd.
    Inherited {
        listener: UnixListener,
        label: String,
    },
}

/// What a gRPC listener serves and how.
pub struct GrpcSettings {
    pub bind: Bind,
    pub max_recv_message_size: i64,
    pub max_send_message_size: i64,
    /// Completion-queue threads of grpcio (each polls and runs unary handlers).
    pub cq_threads: usize,
}

struct GrpcServing {
    name: &'static str,
    server: grpcio::Server,
    socket: Option<PathBuf>,
    accept: Option<Acceptor>,
}

/// The accept loop of a passed socket.
struct Acceptor {
    listener: UnixListener,
    poll: mio::Poll,
}

const LISTENER: mio::Token = mio::Token(0);
const WAKE: mio::Token = mio::Token(1);

/// Builds, binds and starts a gRPC server (run on the listener thread).
pub fn start(
    name: &'static str,
    settings: GrpcSettings,
    services: Vec<grpcio::Service>,
) -> Result<(Box<dyn Serving>, Option<Interrupt>), ServerError> {
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
        // A fixed flow-control window: without it the BDP estimator grows each stream's
        // window to many MiB, all of which a fast client may fill with buffered messages.
        .http2_bdp_probe(false)
        .stream_initial_window_size(STREAM_WINDOW)
        // Pings: no strikes. gRPC core (1.56) closes a connection after too many pings by
        // adding an error to the transport for every further ping while a write is pending,
        // so a client that floods pings and never reads its acks grew the daemon by ~4 KB a
        // ping (78 MB for one connection of 20,000 pings, kept until the socket closed).
        // Without strikes each ping costs one ack, and gRPC stops reading a connection with
        // 10,000 acks unsent: 16 such connections of 20,000 pings add ~4 MB. containerd
        // closes such connections instead (GOAWAY "too_many_pings").
        .http2_min_recv_ping_interval_without_data(PING_INTERVAL_WITHOUT_DATA)
        .http2_max_ping_strikes(MAX_PING_STRIKES)
        .http2_max_pings_without_data(MAX_PINGS_WITHOUT_DATA)
        .keepalive_permit_without_calls(false)
        // gRPC grows a connection's socket reads up to 4 MiB a chunk by default; content
        // streams would keep such buffers per connection.
        .raw_cfg_int(
            std::ffi::CString::new("grpc.experimental.tcp_max_read_chunk_size")
                .expect("no NUL in a constant"),
            MAX_READ_CHUNK,
        )
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
        Bind::Tcp {
            address,
            credentials,
        } => {
            server
                .add_listening_port(address.clone(), credentials)
                .map_err(|err| fail(format!("listen on {address}: {err}")))?;
            log::info!("serving gRPC on tcp {address}");
            None
        }
        Bind::Inherited { listener, label } => {
            let (acceptor, interrupt) =
                Acceptor::new(listener).map_err(|err| fail(format!("{label}: {err}")))?;
            server.start();
            log::info!("serving gRPC on the socket systemd passed ({label})");
            return Ok((
                Box::new(GrpcServing {
                    name,
                    server,
                    socket: None,
                    accept: Some(acceptor),
                }),
                Some(interrupt),
            ));
        }
    };
    server.start();
    Ok((
        Box::new(GrpcServing {
            name,
            server,
            socket: socket_path,
            accept: None,
        }),
        None,
    ))
}

impl Acceptor {
    fn new(listener: UnixListener) -> std::io::Result<(Acceptor, Interrupt)> {
        listener.set_nonblocking(true)?;
        let poll = mio::Poll::new()?;
        poll.registry().register(
            &mut mio::unix::SourceFd(&listener.as_raw_fd()),
            LISTENER,
            mio::Interest::READABLE,
        )?;
        let waker = mio::Waker::new(poll.registry(), WAKE)?;
        let interrupt: Interrupt = Box::new(move || {
            let _ = waker.wake();
        });
        Ok((Acceptor { listener, poll }, interrupt))
    }

    /// Hands every new connection to `server` until `stop` fires.
    fn serve(
        mut self,
        name: &str,
        server: &mut grpcio::Server,
        stop: &Receiver<()>,
    ) -> Result<(), String> {
        let mut events = mio::Events::with_capacity(4);
        loop {
            if !matches!(stop.try_recv(), Err(crossbeam_channel::TryRecvError::Empty)) {
                return Ok(());
            }
            match self.poll.poll(&mut events, None) {
                Ok(()) => {}
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(format!("poll: {err}")),
            }
            // Edge-triggered: take every pending connection.
            loop {
                match self.listener.accept() {
                    Ok((stream, _)) => {
                        if let Err(err) = crate::sys::grpc_serve_connection(server, stream) {
                            log::warn!("{name}: dropped a connection: {err}");
                        }
                    }
                    Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(err) => {
                        log::warn!("{name}: accept: {err}");
                        break;
                    }
                }
            }
        }
    }
}

impl Serving for GrpcServing {
    fn run(mut self: Box<Self>, stop: Receiver<()>) -> Result<(), String> {
        let served = match self.accept.take() {
            Some(acceptor) => acceptor.serve(self.name, &mut self.server, &stop),
            None => {
                let _ = stop.recv();
                Ok(())
            }
        };
        shut_down(self.name, &mut self.server);
        served?;
        if let Some(path) = &self.socket {
            socket::remove(path);
        }
        Ok(())
    }
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
