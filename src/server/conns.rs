//! One listener's connections served from its one thread with mio: however many clients
//! connect, the listener costs one thread. Used by the HTTP listeners (`http.rs`) and the
//! ttrpc listener (`ttrpc.rs`), whose libraries would otherwise start threads per connection.
//!
//! Protocol of the loop (on the listener thread):
//! 1. Accept while the socket has connections. Past [`Limits::max_connections`] a new
//!    connection is closed at once, and the first refusal of a burst is logged.
//!    [`Protocol::open`] may refuse one too (the ttrpc peer uid check).
//! 2. A readable connection is read into its input buffer, and [`Protocol::on_input`]
//!    consumes what it can and appends answers to the output buffer; the loop writes the
//!    output as the socket takes it. While output waits, the connection is not read (a
//!    client that sends without reading cannot make the daemon buffer without bound), and
//!    input beyond [`Limits::max_input`] closes the connection.
//! 3. A connection without traffic for [`Limits::idle_timeout`] is closed.
//! 4. The interrupt wakes the loop; when the stop channel is closed it returns.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use mio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use mio::{Events, Interest, Poll, Token, Waker};

use super::listener::{Interrupt, Serving};

/// What a listener allows each connection.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    /// `None`: connections may stay idle (shims keep theirs open for their life).
    pub idle_timeout: Option<Duration>,
    /// Bytes a connection may have read and not yet consumed.
    pub max_input: usize,
}

/// What the loop does with a connection after its input was handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Open,
    /// Close once the output is written.
    Close,
}

/// A wire protocol served by the loop.
pub trait Protocol: Send + 'static {
    type Session: Send;
    /// A new connection on `fd`; `None` refuses it.
    fn open(&mut self, fd: RawFd) -> Option<Self::Session>;
    /// Consumes what it can of `input` (draining it) and appends answers to `output`.
    fn on_input(
        &mut self,
        session: &mut Self::Session,
        input: &mut Vec<u8>,
        output: &mut Vec<u8>,
    ) -> Flow;
}

/// A bound, non-blocking listening socket.
pub enum Listen {
    Tcp(TcpListener),
    Unix(UnixListener),
}

enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    fn source(&mut self) -> &mut dyn mio::event::Source {
        match self {
            Stream::Tcp(s) => s,
            Stream::Unix(s) => s,
        }
    }

    fn fd(&self) -> RawFd {
        match self {
            Stream::Tcp(s) => s.as_raw_fd(),
            Stream::Unix(s) => s.as_raw_fd(),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Listen {
    fn accept(&self) -> std::io::Result<Stream> {
        match self {
            Listen::Tcp(l) => l.accept().map(|(s, _)| Stream::Tcp(s)),
            Listen::Unix(l) => l.accept().map(|(s, _)| Stream::Unix(s)),
        }
    }

    fn source(&mut self) -> &mut dyn mio::event::Source {
        match self {
            Listen::Tcp(l) => l,
            Listen::Unix(l) => l,
        }
    }
}

struct Conn<S> {
    stream: Stream,
    session: S,
    input: Vec<u8>,
    output: Vec<u8>,
    /// Bytes of `output` already written.
    written: usize,
    closing: bool,
    last_active: Instant,
}

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);
const FIRST_CONN: usize = 2;

/// How much is read from a socket at a time.
const READ_CHUNK: usize = 16 << 10;

/// A listener and its connections, served by [`Serving::run`].
pub struct ConnLoop<P: Protocol> {
    name: &'static str,
    poll: Poll,
    listener: Listen,
    /// Registered with `poll`; kept for as long as the loop runs.
    _waker: Arc<Waker>,
    protocol: P,
    limits: Limits,
    conns: HashMap<Token, Conn<P::Session>>,
    next: usize,
    refusing: bool,
}

impl<P: Protocol> ConnLoop<P> {
    /// Registers `listener`; the returned interrupt wakes the loop so it sees a stop.
    pub fn new(
        name: &'static str,
        mut listener: Listen,
        protocol: P,
        limits: Limits,
    ) -> std::io::Result<(ConnLoop<P>, Interrupt)> {
        let poll = Poll::new()?;
        poll.registry()
            .register(listener.source(), LISTENER, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let wake = waker.clone();
        let interrupt: Interrupt = Box::new(move || {
            if let Err(err) = wake.wake() {
                log::warn!("{name}: cannot wake the connection loop: {err}");
            }
        });
        Ok((
            ConnLoop {
                name,
                poll,
                listener,
                _waker: waker,
                protocol,
                limits,
                conns: HashMap::new(),
                next: FIRST_CONN,
                refusing: false,
            },
            interrupt,
        ))
    }

    fn accept_all(&mut self) {
        loop {
            let mut stream = match self.listener.accept() {
                Ok(stream) => stream,
                Err(err) if err.kind() == ErrorKind::WouldBlock => return,
                Err(err) if err.kind() == ErrorKind::Interrupted => continue,
                Err(err) => {
                    // Out of fds or memory: leave the rest in the backlog for now.
                    log::warn!("{}: accept failed: {err}", self.name);
                    return;
                }
            };
            if self.conns.len() >= self.limits.max_connections {
                if !self.refusing {
                    log::warn!(
                        "{}: connection limit ({}) reached; closing new connections until some end",
                        self.name,
                        self.limits.max_connections
                    );
                    self.refusing = true;
                }
                continue;
            }
            let Some(session) = self.protocol.open(stream.fd()) else {
                continue;
            };
            let token = Token(self.next);
            self.next += 1;
            if let Err(err) = self.poll.registry().register(
                stream.source(),
                token,
                Interest::READABLE | Interest::WRITABLE,
            ) {
                log::warn!("{}: cannot watch a connection: {err}", self.name);
                continue;
            }
            self.conns.insert(
                token,
                Conn {
                    stream,
                    session,
                    input: Vec::new(),
                    output: Vec::new(),
                    written: 0,
                    closing: false,
                    last_active: Instant::now(),
                },
            );
        }
    }

    /// Writes, reads and handles input until the socket would block; false to close.
    fn serve(&mut self, token: Token) -> bool {
        let Some(conn) = self.conns.get_mut(&token) else {
            return true;
        };
        loop {
            // 1. Write what is waiting.
            while conn.written < conn.output.len() {
                match conn.stream.write(&conn.output[conn.written..]) {
                    Ok(0) => return false,
                    Ok(n) => {
                        conn.written += n;
                        conn.last_active = Instant::now();
                    }
                    Err(err) if err.kind() == ErrorKind::WouldBlock => return true,
                    Err(err) if err.kind() == ErrorKind::Interrupted => {}
                    Err(_) => return false,
                }
            }
            conn.output.clear();
            conn.written = 0;
            if conn.closing {
                return false;
            }
            // 2. Read what arrived, within the input bound.
            let room = self.limits.max_input.saturating_sub(conn.input.len());
            if room == 0 {
                log::debug!("{}: input bound exceeded; closing", self.name);
                return false;
            }
            let start = conn.input.len();
            conn.input.resize(start + room.min(READ_CHUNK), 0);
            let read = conn.stream.read(&mut conn.input[start..]);
            let got = match read {
                Ok(n) => n,
                Err(err) => {
                    conn.input.truncate(start);
                    if err.kind() == ErrorKind::WouldBlock {
                        // An idle connection keeps no read buffer.
                        conn.input.shrink_to(conn.input.len());
                        return true;
                    }
                    if err.kind() == ErrorKind::Interrupted {
                        continue;
                    }
                    return false;
                }
            };
            conn.input.truncate(start + got);
            if got == 0 {
                return false;
            }
            conn.last_active = Instant::now();
            // 3. Handle it.
            let flow = self
                .protocol
                .on_input(&mut conn.session, &mut conn.input, &mut conn.output);
            if flow == Flow::Close {
                conn.closing = true;
            }
        }
    }

    fn close(&mut self, token: Token) {
        if let Some(mut conn) = self.conns.remove(&token) {
            let _ = self.poll.registry().deregister(conn.stream.source());
        }
        if self.conns.len() < self.limits.max_connections {
            self.refusing = false;
        }
    }

    fn close_idle(&mut self) {
        let Some(timeout) = self.limits.idle_timeout else {
            return;
        };
        let now = Instant::now();
        let idle: Vec<Token> = self
            .conns
            .iter()
            .filter(|(_, c)| now.duration_since(c.last_active) >= timeout)
            .map(|(t, _)| *t)
            .collect();
        for token in idle {
            log::debug!("{}: closing an idle connection", self.name);
            self.close(token);
        }
    }
}

impl<P: Protocol> Serving for ConnLoop<P> {
    fn run(mut self: Box<Self>, stop: Receiver<()>) -> Result<(), String> {
        let mut events = Events::with_capacity(256);
        let tick = self
            .limits
            .idle_timeout
            .map(|t| (t / 4).clamp(Duration::from_millis(50), Duration::from_secs(1)));
        loop {
            if let Err(err) = self.poll.poll(&mut events, tick) {
                if err.kind() == ErrorKind::Interrupted {
                    continue;
                }
                return Err(format!("poll: {err}"));
            }
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept_all(),
                    WAKER => {}
                    token => {
                        if !self.serve(token) {
                            self.close(token);
                        }
                    }
                }
            }
            if matches!(
                stop.try_recv(),
                Err(crossbeam_channel::TryRecvError::Disconnected) | Ok(())
            ) {
                return Ok(());
            }
            self.close_idle();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream as StdUnix;

    /// Echoes each line back; `quit` closes.
    struct Lines;

    impl Protocol for Lines {
        type Session = ();
        fn open(&mut self, _fd: RawFd) -> Option<()> {
            Some(())
        }
        fn on_input(&mut self, _: &mut (), input: &mut Vec<u8>, output: &mut Vec<u8>) -> Flow {
            while let Some(end) = input.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = input.drain(..=end).collect();
                if line == b"quit\n" {
                    return Flow::Close;
                }
                output.extend_from_slice(&line);
            }
            Flow::Open
        }
    }

    fn start(limits: Limits) -> (tempfile::TempDir, std::path::PathBuf, impl FnOnce()) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.sock");
        let listener = UnixListener::bind(&path).expect("bind");
        let (conn_loop, interrupt) =
            ConnLoop::new("test-conns", Listen::Unix(listener), Lines, limits).expect("loop");
        let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(1);
        let thread = std::thread::spawn(move || Box::new(conn_loop).run(stop_rx));
        let stop = move || {
            drop(stop_tx);
            interrupt();
            thread
                .join()
                .expect("loop thread")
                .expect("loop ended cleanly");
        };
        (dir, path, stop)
    }

    fn limits(max_connections: usize, idle: Option<Duration>) -> Limits {
        Limits {
            max_connections,
            idle_timeout: idle,
            max_input: 64,
        }
    }

    fn closed_by_server(stream: &mut StdUnix) -> bool {
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut buf = [0u8; 64];
        // A close with our bytes still unread reaches us as a reset.
        match stream.read(&mut buf) {
            Ok(0) => true,
            Err(err) => err.kind() == ErrorKind::ConnectionReset,
            Ok(_) => false,
        }
    }

    #[test]
    fn echoes_and_closes_when_the_protocol_says_so() {
        let (_dir, path, stop) = start(limits(4, None));
        let mut client = StdUnix::connect(&path).expect("connect");
        client.write_all(b"hello\nwor").expect("write");
        client.write_all(b"ld\nquit\n").expect("write");
        let mut got = Vec::new();
        client
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        client.read_to_end(&mut got).expect("read until closed");
        assert_eq!(got, b"hello\nworld\n");
        stop();
    }

    #[test]
    fn connections_past_the_limit_are_closed_at_once() {
        let (_dir, path, stop) = start(limits(2, None));
        let mut first = StdUnix::connect(&path).expect("connect");
        let mut second = StdUnix::connect(&path).expect("connect");
        // Both are served.
        for c in [&mut first, &mut second] {
            c.write_all(b"x\n").expect("write");
            let mut buf = [0u8; 2];
            c.set_read_timeout(Some(Duration::from_secs(10)))
                .expect("timeout");
            c.read_exact(&mut buf).expect("echo");
        }
        let mut third = StdUnix::connect(&path).expect("connect");
        assert!(
            closed_by_server(&mut third),
            "the third connection was kept"
        );
        drop(first);
        // Once one ends there is room again (the close is seen before the next accept,
        // or the next attempt is closed at once, which its write may already find:
        // retry within the deadline).
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut again = StdUnix::connect(&path).expect("connect");
            again
                .set_read_timeout(Some(Duration::from_secs(10)))
                .expect("timeout");
            let mut buf = [0u8; 2];
            if again.write_all(b"y\n").is_ok() && again.read_exact(&mut buf).is_ok() {
                assert_eq!(&buf, b"y\n");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "no room after a connection ended"
            );
        }
        stop();
    }

    #[test]
    fn idle_connections_and_oversized_input_are_closed() {
        let (_dir, path, stop) = start(limits(4, Some(Duration::from_millis(200))));
        let mut idle = StdUnix::connect(&path).expect("connect");
        assert!(
            closed_by_server(&mut idle),
            "the idle connection stayed open"
        );
        let mut flood = StdUnix::connect(&path).expect("connect");
        // No newline: 64 bytes of input without an end.
        flood.write_all(&[b'a'; 100]).expect("write");
        assert!(closed_by_server(&mut flood), "unbounded input was kept");
        stop();
    }
}
