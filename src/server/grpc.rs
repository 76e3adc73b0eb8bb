//! gRPC listeners (unix socket, TCP with optional TLS/mTLS, a unix socket passed by systemd):
//! a grpcio server; the TCP one is owned by its listener thread (see [`super::listener`]),
//! the unix one by the main thread ([`UnixServing`]).
//!
//! Unix sockets (the configured path and a socket systemd passed) are accepted by the main
//! thread's poll ([`UnixServing`]), which hands each connection to the started server: gRPC
//! core cannot listen on a descriptor it did not create, and cannot cap its connections
//! (1.56 has no such setting). The listener's own thread is its completion queue's, which
//! polls every connection; an accept loop beside it would be a second thread that only
//! waits. Past `[grpc] max_connections` live
//! connections a new one is closed at once, with one log line per flood. The count comes from
//! the kernel: gRPC core closes connections on its own threads without telling us, so when
//! the connections accepted since the last count would pass the cap, the listener counts the
//! connected sockets bound to its path in `/proc/net/unix` afresh.
//!
//! The TCP listener stays gRPC core's own (it runs the TLS handshake) and is not capped;
//! gRPC core holds its idle connections on its fixed polling threads, not a thread each.

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::Receiver;
use grpcio::{ChannelBuilder, EnvBuilder, Environment, ServerBuilder, ServerCredentials};

/// Bytes a client may send on one stream before the server asks for more. A message is
/// assembled whole before it is decoded whatever the window, so a small window only limits
/// how much of the next message waits in memory meanwhile; on a local socket the extra
/// window updates cost little.
const STREAM_WINDOW: i32 = 256 << 10;

/// The shortest interval between a client's pings while no data flows.
const PING_INTERVAL_WITHOUT_DATA: Duration = Duration::from_secs(300);

/// Pings too early that a client may send before its connection is closed: 0, none is
/// counted (see the ping comment in [`build`]).
const MAX_PING_STRIKES: i32 = 0;

/// Pings the server itself sends before it must send data.
const MAX_PINGS_WITHOUT_DATA: i32 = 2;

/// The largest single read gRPC makes from a connection's socket.
const MAX_READ_CHUNK: i32 = 256 << 10;

use super::listener::{Interrupt, Serving};
use super::{socket, ServerError};

/// How long in-flight calls may run on after stop before they are cancelled.
const GRACE: Duration = Duration::from_millis(500);

/// Live connections a unix listener serves when `[grpc] max_connections` is 0.
pub const DEFAULT_MAX_CONNECTIONS: usize = 512;

/// Where a gRPC listener on a unix socket binds.
pub enum Bind {
    Unix {
        path: PathBuf,
        uid: u32,
        gid: u32,
    },
    /// A listening socket systemd passed; never unlinked or chmodded by ctrd.
    Inherited {
        listener: UnixListener,
        label: String,
    },
}

/// Where the gRPC listener on TCP binds, and its TLS.
pub struct Tcp {
    pub address: String,
    pub credentials: ServerCredentials,
}

/// What a gRPC listener serves and how; `B` is where it binds ([`Bind`] or [`Tcp`]).
pub struct GrpcSettings<B> {
    pub bind: B,
    pub max_recv_message_size: i64,
    pub max_send_message_size: i64,
    /// gRPC core's environment, when built ahead ([`environment`]); built by [`build`]
    /// otherwise.
    pub environment: Option<Arc<Environment>>,
    /// Live connections a unix listener serves at once (0: [`DEFAULT_MAX_CONNECTIONS`]).
    pub max_connections: usize,
}

/// A TCP listener: gRPC core accepts; its thread waits for stop.
struct GrpcServing {
    name: &'static str,
    server: grpcio::Server,
}

/// A started gRPC server on a unix socket, its connections accepted wherever
/// [`UnixServing::accept_ready`] is called (the main thread's poll, see [`UnixServing::register`]).
pub struct UnixServing {
    name: &'static str,
    server: grpcio::Server,
    /// The socket file ctrd made (removed at stop); None for a socket systemd passed.
    socket: Option<PathBuf>,
    /// None once closed ([`UnixServing::close`]).
    acceptor: Option<Acceptor>,
}

/// Connections taken per [`UnixServing::accept_ready`]: the main thread, which accepts,
/// also handles signals and runs the waiting futures between batches.
const ACCEPT_BATCH: usize = 64;

/// How long accepting pauses after an error other than "nothing pending" (out of
/// descriptors, of memory): the socket, edge-triggered, would not report those connections
/// again until another arrived.
pub const ACCEPT_RETRY: Duration = Duration::from_millis(50);

/// What [`UnixServing::accept_ready`] left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    /// Nothing is pending.
    All,
    /// A batch was taken and more may wait: call again before waiting.
    More,
    /// Accepting failed (e.g. EMFILE): call again after [`ACCEPT_RETRY`].
    Failed,
}

/// What a unix socket's accepting needs: the socket and the connection count.
struct Acceptor {
    listener: UnixListener,
    /// The socket's name as `/proc/net/unix` shows it (None: unnamed, so never counted).
    name: Option<String>,
    max_connections: usize,
    /// Connections live at the last count plus those accepted since.
    live: usize,
    refusing: bool,
    /// When the connections were last counted (a flood is refused without counting again
    /// for [`RECOUNT_INTERVAL`]).
    counted: Option<std::time::Instant>,
}

/// Calls the completion queue stands ready to take before its thread polls again (grpcio
/// asks for a new one each time one arrives, and gRPC core queues any beyond). grpcio's
/// default of 1,024 costs ~320 KB and ~0.3 ms of start-up to post; a daemon whose clients
/// each make a call or a few at a time needs far fewer.
const REQUEST_SLOTS: usize = 128;

/// How often a listener at its cap counts its connections afresh.
const RECOUNT_INTERVAL: Duration = Duration::from_millis(100);

/// gRPC core's environment for the listener `name`: the core's global start-up and one
/// completion-queue thread (`{name}-cq-0`), which polls and runs unary handlers. Building
/// it takes about a millisecond, so the daemon builds it while its plugins start.
pub fn environment(name: &str) -> Arc<Environment> {
    let core = crate::sys::start_grpc_core();
    log::debug!("gRPC core: {core:?}");
    Arc::new(
        EnvBuilder::new()
            .cq_count(1)
            .name_prefix(format!("{name}-cq"))
            .build(),
    )
}

/// The server for `settings` with `services` registered, not yet started (its binding is
/// the caller's).
fn build<B>(
    name: &str,
    settings: &GrpcSettings<B>,
    services: Vec<grpcio::Service>,
) -> Result<grpcio::Server, String> {
    let env = settings
        .environment
        .clone()
        .unwrap_or_else(|| environment(name));
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
    let mut builder = ServerBuilder::new(env)
        .channel_args(args)
        .requests_slot_per_cq(REQUEST_SLOTS);
    for service in services {
        builder = builder.register_service(service);
    }
    builder.build().map_err(|err| err.to_string())
}

/// Builds, binds and starts a gRPC server on TCP (run on the listener thread); gRPC core
/// accepts its connections.
pub fn start(
    name: &'static str,
    settings: GrpcSettings<Tcp>,
    services: Vec<grpcio::Service>,
) -> Result<(Box<dyn Serving>, Option<Interrupt>), ServerError> {
    let fail = |err: String| ServerError::Listener(name, err);
    let mut server = build(name, &settings, services).map_err(fail)?;
    let Tcp {
        address,
        credentials,
    } = settings.bind;
    server
        .add_listening_port(address.clone(), credentials)
        .map_err(|err| fail(format!("listen on {address}: {err}")))?;
    log::info!("serving gRPC on tcp {address}");
    server.start();
    Ok((Box::new(GrpcServing { name, server }), None))
}

/// Builds, binds and starts a gRPC server on a unix socket (the configured path or one
/// systemd passed), whose connections the caller accepts (see [`UnixServing`]).
pub fn start_unix(
    name: &'static str,
    settings: GrpcSettings<Bind>,
    services: Vec<grpcio::Service>,
) -> Result<UnixServing, ServerError> {
    let fail = |err: String| ServerError::Listener(name, err);
    let mut server = build(name, &settings, services).map_err(fail)?;
    let max_connections = match settings.max_connections {
        0 => DEFAULT_MAX_CONNECTIONS,
        n => n,
    };
    let (listener, socket_path, label) = match settings.bind {
        Bind::Unix { path, uid, gid } => {
            socket::prepare(&path, uid, gid)?;
            let listener = UnixListener::bind(&path)
                .map_err(|err| fail(format!("listen on {}: {err}", path.display())))?;
            if let Err(err) = socket::secure(&path, uid, gid) {
                socket::remove(&path);
                return Err(err);
            }
            log::info!("serving gRPC on {}", path.display());
            (listener, Some(path.clone()), path.display().to_string())
        }
        Bind::Inherited { listener, label } => {
            log::info!("serving gRPC on the socket systemd passed ({label})");
            (listener, None, label)
        }
    };
    let acceptor = match Acceptor::new(listener, max_connections) {
        Ok(acceptor) => acceptor,
        Err(err) => {
            if let Some(path) = &socket_path {
                socket::remove(path);
            }
            return Err(fail(format!("{label}: {err}")));
        }
    };
    server.start();
    Ok(UnixServing {
        name,
        server,
        socket: socket_path,
        acceptor: Some(acceptor),
    })
}

impl UnixServing {
    /// Registers the listening socket with `registry` as `token` (edge-triggered: call
    /// [`UnixServing::accept_ready`] on each readiness event).
    pub fn register(&self, registry: &mio::Registry, token: mio::Token) -> std::io::Result<()> {
        match &self.acceptor {
            Some(acceptor) => registry.register(
                &mut mio::unix::SourceFd(&acceptor.listener.as_raw_fd()),
                token,
                mio::Interest::READABLE,
            ),
            None => Ok(()),
        }
    }

    /// Hands pending connections to the server (past the cap, closes them), at most
    /// [`ACCEPT_BATCH`] at a time so a flood cannot hold the caller's thread.
    pub fn accept_ready(&mut self) -> Accepted {
        match &mut self.acceptor {
            Some(acceptor) => acceptor.accept_some(self.name, &mut self.server),
            None => Accepted::All,
        }
    }

    /// Stops accepting: the listening socket is deregistered from `registry` and closed,
    /// so new connections are refused; the server keeps serving those it has.
    pub fn close(&mut self, registry: &mio::Registry) {
        if let Some(acceptor) = self.acceptor.take() {
            let _ = registry.deregister(&mut mio::unix::SourceFd(&acceptor.listener.as_raw_fd()));
        }
    }

    /// Shuts the server down (drain, then cancel) and removes the socket file ctrd made.
    pub fn stop(mut self) {
        self.acceptor.take();
        shut_down(self.name, &mut self.server);
        if let Some(path) = &self.socket {
            socket::remove(path);
        }
        log::info!("{} stopped", self.name);
    }
}

impl Acceptor {
    fn new(listener: UnixListener, max_connections: usize) -> std::io::Result<Acceptor> {
        listener.set_nonblocking(true)?;
        let name = listener.local_addr().ok().and_then(|addr| {
            use std::os::linux::net::SocketAddrExt as _;
            if let Some(path) = addr.as_pathname() {
                Some(path.to_string_lossy().into_owned())
            } else {
                addr.as_abstract_name()
                    .map(|n| format!("@{}", String::from_utf8_lossy(n)))
            }
        });
        Ok(Acceptor {
            listener,
            name,
            max_connections,
            live: 0,
            refusing: false,
            counted: None,
        })
    }

    /// Whether one more connection may be served: counts afresh when the estimate would pass
    /// the cap (connections gRPC core closed since the last count are only seen then).
    fn admit(&mut self, listener_name: &str) -> bool {
        if self.live < self.max_connections {
            self.live += 1;
            return true;
        }
        let fresh = self
            .counted
            .is_some_and(|at| at.elapsed() < RECOUNT_INTERVAL);
        if self.refusing && fresh {
            return false;
        }
        if let Some(name) = &self.name {
            match std::fs::read_to_string("/proc/net/unix") {
                Ok(table) => self.live = connected_to(&table, name),
                Err(err) => log::warn!("{listener_name}: cannot count connections: {err}"),
            }
            self.counted = Some(std::time::Instant::now());
        }
        // The new connection is counted already (it is connected to our name).
        if self.live <= self.max_connections {
            self.refusing = false;
            return true;
        }
        if !self.refusing {
            log::warn!(
                "{listener_name}: connection limit ({}) reached; closing new connections until some end",
                self.max_connections
            );
            self.refusing = true;
        }
        self.live -= 1;
        false
    }

    /// Takes pending connections (the socket is edge-triggered: until none is left, or a
    /// batch) and hands each to `server`, or closes it past the cap.
    fn accept_some(&mut self, name: &str, server: &mut grpcio::Server) -> Accepted {
        for _ in 0..ACCEPT_BATCH {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    if !self.admit(name) {
                        drop(stream);
                        continue;
                    }
                    if let Err(err) = crate::sys::grpc_serve_connection(server, stream) {
                        log::warn!("{name}: dropped a connection: {err}");
                    }
                }
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => return Accepted::All,
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
                Err(err) => {
                    log::warn!("{name}: accept: {err}");
                    return Accepted::Failed;
                }
            }
        }
        Accepted::More
    }
}

impl Serving for GrpcServing {
    fn run(mut self: Box<Self>, stop: Receiver<()>) -> Result<(), String> {
        let _ = stop.recv();
        shut_down(self.name, &mut self.server);
        Ok(())
    }
}

/// Connected sockets named `name` in a `/proc/net/unix` table: the server ends of a
/// listener's connections (the listener itself is unconnected, state 01; clients are unnamed).
fn connected_to(table: &str, name: &str) -> usize {
    table
        .lines()
        .skip(1)
        .filter(|line| {
            // Num RefCount Protocol Flags Type St Inode Path
            let mut fields = line.split_whitespace();
            let state = fields.nth(5);
            let path = fields.nth(1);
            state == Some("03") && path == Some(name)
        })
        .count()
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

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "\
Num       RefCount Protocol Flags    Type St Inode Path
0000000000000000: 00000002 00000000 00010000 0001 01 1001 /run/ctrd.sock
0000000000000000: 00000003 00000000 00000000 0001 03 1002 /run/ctrd.sock
0000000000000000: 00000003 00000000 00000000 0001 03 1003
0000000000000000: 00000003 00000000 00000000 0001 03 1004 /run/ctrd.sock
0000000000000000: 00000003 00000000 00000000 0001 03 1005 /run/ctrd.sock.ttrpc
0000000000000000: 00000002 00000000 00000000 0001 07 1006 /run/ctrd.sock
";

    #[test]
    fn only_connected_sockets_of_our_name_are_counted() {
        assert_eq!(connected_to(TABLE, "/run/ctrd.sock"), 2);
        assert_eq!(connected_to(TABLE, "/run/ctrd.sock.ttrpc"), 1);
        assert_eq!(connected_to(TABLE, "/run/other.sock"), 0);
    }

    /// A fresh socket `s.sock` in a directory of the test's own, listening.
    fn bound(test: &str) -> (PathBuf, PathBuf, UnixListener) {
        let dir = std::env::temp_dir().join(format!("ctrd-grpc-{test}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.sock");
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).unwrap();
        (dir, path, listener)
    }

    #[test]
    fn a_flood_is_taken_a_batch_at_a_time() {
        let (dir, path, listener) = bound("batch");
        // A cap of 0 refuses every connection, so none reaches the (unstarted) server.
        let mut acceptor = Acceptor::new(listener, 0).unwrap();
        crate::sys::start_grpc_core();
        let env = Arc::new(EnvBuilder::new().cq_count(1).build());
        let mut server = ServerBuilder::new(env).build().unwrap();
        let clients: Vec<_> = (0..ACCEPT_BATCH + 10)
            .map(|_| std::os::unix::net::UnixStream::connect(&path).unwrap())
            .collect();
        assert_eq!(acceptor.accept_some("test", &mut server), Accepted::More);
        assert_eq!(acceptor.accept_some("test", &mut server), Accepted::All);
        assert!(acceptor.refusing);
        drop(clients);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn past_the_cap_new_connections_are_refused_until_some_end() {
        let (dir, path, listener) = bound("cap");
        let mut acceptor = Acceptor::new(listener, 2).unwrap();
        let mut clients = Vec::new();
        let mut served = Vec::new();
        for _ in 0..3 {
            clients.push(std::os::unix::net::UnixStream::connect(&path).unwrap());
            let (stream, _) = loop {
                match acceptor.listener.accept() {
                    Ok(pair) => break pair,
                    Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::yield_now()
                    }
                    Err(err) => panic!("accept: {err}"),
                }
            };
            if acceptor.admit("test") {
                served.push(stream);
            }
        }
        assert_eq!(served.len(), 2, "the third connection is refused");
        assert!(acceptor.refusing);
        // One served connection ends (both of its ends close): the next is admitted once
        // the listener counts again, which it does not within the recount interval.
        served.pop();
        clients.remove(1);
        acceptor.listener.set_nonblocking(false).unwrap();
        clients.push(std::os::unix::net::UnixStream::connect(&path).unwrap());
        let (early, _) = acceptor.listener.accept().unwrap();
        assert!(!acceptor.admit("test"));
        drop(early);
        acceptor.counted = None;
        clients.push(std::os::unix::net::UnixStream::connect(&path).unwrap());
        let (stream, _) = acceptor.listener.accept().unwrap();
        assert!(acceptor.admit("test"));
        assert!(!acceptor.refusing);
        drop(stream);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
