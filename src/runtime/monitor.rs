//! The `ctrd-shims` thread: one mio loop that drains every shim's `log` FIFO and watches
//! every shim process through a pidfd. It runs only while it has something to drain or
//! watch: the first registration starts it, and it ends once the last one is forgotten
//! (an idle daemon without tasks has no such thread).
//!
//! Logs: a shim writes its stderr into `<bundle>/log`; if nobody reads, the shim blocks once
//! the pipe is full. ctrd opens each FIFO read-write (so it never sees end-of-file and
//! never blocks opening it), hands it to this thread, which copies every line into ctrd's
//! log (with the task's namespace and id) and keeps the last [`LOG_RING`] bytes for
//! `/debug/shims/<ns>/<id>/log`.
//!
//! Shims: a pidfd turns readable when the shim process exits, whether or not it is our
//! child; the watcher's callback then runs on a short-lived `ctrd-shim-exit` thread (it
//! may run the shim's `delete`, which takes tens of milliseconds).
//!
//! Protocol: callers send a [`Command`] and wake the poll (starting the thread when none
//! runs); the thread owns every descriptor it was given and closes it when told to forget
//! it or when it stops. It decides to end under the lock that senders hold, and only with
//! its queue empty, so no command is ever left unread.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::Read as _;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use parking_lot::Mutex;

/// Bytes of each shim's log kept for the debug endpoint.
pub const LOG_RING: usize = 64 * 1024;

/// The last bytes a shim wrote to its log.
#[derive(Default)]
pub struct LogRing {
    bytes: VecDeque<u8>,
}

impl LogRing {
    pub fn push(&mut self, data: &[u8]) {
        let data = &data[data.len().saturating_sub(LOG_RING)..];
        let excess = (self.bytes.len() + data.len()).saturating_sub(LOG_RING);
        self.bytes.drain(..excess);
        self.bytes.extend(data);
    }

    pub fn contents(&self) -> Vec<u8> {
        self.bytes.iter().copied().collect()
    }
}

/// What the monitor is asked to do.
pub enum Command {
    /// Drain `file` (a shim's log FIFO) into the log of task `namespace`/`id`.
    Log {
        key: u64,
        namespace: String,
        id: String,
        file: File,
        ring: Arc<Mutex<LogRing>>,
    },
    /// Run `on_exit` once the process behind `pidfd` has exited.
    Watch {
        key: u64,
        pidfd: OwnedFd,
        on_exit: Box<dyn FnOnce() + Send>,
    },
    /// Forget the log or watch registered under `key` (closing its descriptor).
    Forget(u64),
    Stop,
}

const WAKER: Token = Token(0);

/// The handle of the `ctrd-shims` thread.
pub struct Monitor {
    shared: Arc<Mutex<Shared>>,
    next_key: std::sync::atomic::AtomicU64,
}

#[derive(Default)]
struct Shared {
    /// The running thread, if any.
    running: Option<Running>,
    stopped: bool,
}

struct Running {
    tx: Sender<Command>,
    waker: Waker,
    thread: std::thread::JoinHandle<()>,
}

impl Monitor {
    /// A monitor with no thread yet.
    pub fn new() -> Monitor {
        Monitor {
            shared: Arc::default(),
            next_key: std::sync::atomic::AtomicU64::new(1),
        }
    }

    /// A key for a new registration.
    pub fn key(&self) -> u64 {
        self.next_key
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    pub fn send(&self, command: Command) {
        send(&self.shared, command);
    }

    /// Whether the thread runs (tests).
    pub fn running(&self) -> bool {
        self.shared.lock().running.is_some()
    }

    /// Keeps draining log `log_key` until process `pid` (its shim, which may serve other
    /// tasks of its group) exits, then runs `then`: a shim whose stderr has no reader dies
    /// of SIGPIPE.
    pub fn forget_log_when_exits(&self, log_key: u64, pid: u32, then: Box<dyn FnOnce() + Send>) {
        let Ok(pidfd) = crate::sys::pidfd_open(pid) else {
            self.send(Command::Forget(log_key));
            then();
            return;
        };
        let shared = self.shared.clone();
        self.send(Command::Watch {
            key: self.key(),
            pidfd,
            on_exit: Box::new(move || {
                send(&shared, Command::Forget(log_key));
                then();
            }),
        });
    }

    /// Stops the thread and closes every descriptor it holds; later commands are dropped.
    pub fn stop(&self) {
        let running = {
            let mut shared = self.shared.lock();
            shared.stopped = true;
            shared.running.take()
        };
        if let Some(running) = running {
            if running.tx.send(Command::Stop).is_ok() {
                let _ = running.waker.wake();
            }
            let _ = running.thread.join();
        }
    }
}

impl Default for Monitor {
    fn default() -> Self {
        Monitor::new()
    }
}

/// Queues `command` for the thread, starting it when none runs. With no thread there is
/// nothing registered, so a `Forget` or `Stop` has nothing to do.
fn send(shared: &Arc<Mutex<Shared>>, command: Command) {
    let mut state = shared.lock();
    if state.stopped {
        return;
    }
    if state.running.is_none() {
        if matches!(command, Command::Forget(_) | Command::Stop) {
            return;
        }
        match start(shared.clone()) {
            Ok(running) => state.running = Some(running),
            Err(err) => {
                drop(state);
                log::error!("shim monitor: cannot start the ctrd-shims thread: {err}");
                if let Command::Watch { on_exit, .. } = command {
                    fire(on_exit);
                }
                return;
            }
        }
    }
    if let Some(running) = &state.running {
        if running.tx.send(command).is_ok() {
            let _ = running.waker.wake();
        }
    }
}

fn start(shared: Arc<Mutex<Shared>>) -> std::io::Result<Running> {
    let poll = Poll::new()?;
    let waker = Waker::new(poll.registry(), WAKER)?;
    let (tx, rx) = crossbeam_channel::unbounded();
    let thread = std::thread::Builder::new()
        .name("ctrd-shims".into())
        .spawn(move || run(poll, rx, &shared))?;
    Ok(Running { tx, waker, thread })
}

enum Entry {
    Log {
        key: u64,
        namespace: String,
        id: String,
        file: File,
        ring: Arc<Mutex<LogRing>>,
        partial: Vec<u8>,
    },
    Watch {
        key: u64,
        pidfd: OwnedFd,
        on_exit: Box<dyn FnOnce() + Send>,
    },
}

impl Entry {
    fn key(&self) -> u64 {
        match self {
            Entry::Log { key, .. } | Entry::Watch { key, .. } => *key,
        }
    }

    fn fd(&self) -> i32 {
        match self {
            Entry::Log { file, .. } => file.as_raw_fd(),
            Entry::Watch { pidfd, .. } => pidfd.as_raw_fd(),
        }
    }
}

fn run(mut poll: Poll, rx: Receiver<Command>, shared: &Mutex<Shared>) {
    let mut entries: HashMap<Token, Entry> = HashMap::new();
    let mut next = 1usize;
    let mut events = Events::with_capacity(64);
    loop {
        if let Err(err) = poll.poll(&mut events, Some(Duration::from_secs(60))) {
            if err.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            log::error!("shim monitor: poll failed: {err}");
            return;
        }
        let mut ready: Vec<Token> = events
            .iter()
            .map(|e| e.token())
            .filter(|t| *t != WAKER)
            .collect();
        while let Ok(command) = rx.try_recv() {
            let entry = match command {
                Command::Stop => return,
                Command::Forget(key) => {
                    let token = entries
                        .iter()
                        .find(|(_, e)| e.key() == key)
                        .map(|(t, _)| *t);
                    if let Some(token) = token {
                        if let Some(mut entry) = entries.remove(&token) {
                            // Whatever is buffered still goes to the log.
                            drain(&mut entry);
                            let _ = poll.registry().deregister(&mut SourceFd(&entry.fd()));
                        }
                    }
                    continue;
                }
                Command::Log {
                    key,
                    namespace,
                    id,
                    file,
                    ring,
                } => Entry::Log {
                    key,
                    namespace,
                    id,
                    file,
                    ring,
                    partial: Vec::new(),
                },
                Command::Watch {
                    key,
                    pidfd,
                    on_exit,
                } => Entry::Watch {
                    key,
                    pidfd,
                    on_exit,
                },
            };
            let token = Token(next);
            next += 1;
            match poll
                .registry()
                .register(&mut SourceFd(&entry.fd()), token, Interest::READABLE)
            {
                Ok(()) => {
                    entries.insert(token, entry);
                    // Data may have arrived before registration (edge-triggered).
                    ready.push(token);
                }
                Err(err) => {
                    log::error!("shim monitor: cannot watch a descriptor: {err}");
                    if let Entry::Watch { on_exit, .. } = entry {
                        fire(on_exit);
                    }
                }
            }
        }
        for token in ready {
            let exited = match entries.get_mut(&token) {
                Some(entry @ Entry::Log { .. }) => {
                    drain(entry);
                    false
                }
                Some(Entry::Watch { pidfd, .. }) => pid_exited(pidfd),
                None => false,
            };
            if exited {
                if let Some(Entry::Watch { pidfd, on_exit, .. }) = entries.remove(&token) {
                    let _ = poll
                        .registry()
                        .deregister(&mut SourceFd(&pidfd.as_raw_fd()));
                    fire(on_exit);
                }
            }
        }
        if entries.is_empty() {
            // Nothing left to watch: end, unless a command came meanwhile.
            let mut state = shared.lock();
            if rx.is_empty() {
                state.running = None;
                return;
            }
        }
    }
}

/// A pidfd is readable once its process exited; poll it once more to be sure.
fn pid_exited(pidfd: &OwnedFd) -> bool {
    crate::sys::poll_readable(pidfd.as_raw_fd(), 0).unwrap_or(true)
}

fn fire(on_exit: Box<dyn FnOnce() + Send>) {
    let spawned = std::thread::Builder::new()
        .name("ctrd-shim-exit".into())
        .spawn(on_exit);
    if let Err(err) = spawned {
        log::error!("shim monitor: cannot start a cleanup thread: {err}");
    }
}

fn drain(entry: &mut Entry) {
    let Entry::Log {
        namespace,
        id,
        file,
        ring,
        partial,
        ..
    } = entry
    else {
        return;
    };
    let mut buf = [0u8; 8192];
    loop {
        match file.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                ring.lock().push(&buf[..n]);
                partial.extend_from_slice(&buf[..n]);
                while let Some(pos) = partial.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = partial.drain(..=pos).collect();
                    emit(namespace, id, &line);
                }
                if partial.len() > 16 * 1024 {
                    let line = std::mem::take(partial);
                    emit(namespace, id, &line);
                }
            }
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        }
    }
}

fn emit(namespace: &str, id: &str, line: &[u8]) {
    let text = String::from_utf8_lossy(line);
    let text = text.trim_end();
    if text.is_empty() {
        return;
    }
    let level = if text.contains("level=debug") || text.contains("level=trace") {
        log::Level::Debug
    } else if text.contains("level=warning") {
        log::Level::Warn
    } else if text.contains("level=error") || text.contains("level=fatal") {
        log::Level::Error
    } else {
        log::Level::Info
    };
    log::log!(target: "shim", level, "shim log namespace={namespace} id={id}: {text}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_keeps_the_last_bytes() {
        let mut ring = LogRing::default();
        ring.push(b"hello ");
        ring.push(&vec![b'x'; LOG_RING]);
        ring.push(b"end");
        let contents = ring.contents();
        assert_eq!(contents.len(), LOG_RING);
        assert!(contents.ends_with(b"xxend"));
        assert!(!contents.starts_with(b"hello"));
    }

    #[test]
    fn logs_are_drained_and_process_exits_reported() {
        let monitor = Monitor::new();
        assert!(
            !monitor.running(),
            "no thread before the first registration"
        );
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("log");
        crate::sys::mknod(&fifo, libc::S_IFIFO | 0o700, 0, 0).unwrap();
        let reader = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo)
            .unwrap();
        let ring = Arc::new(Mutex::new(LogRing::default()));
        let log_key = monitor.key();
        monitor.send(Command::Log {
            key: log_key,
            namespace: "default".into(),
            id: "t1".into(),
            file: reader,
            ring: ring.clone(),
        });
        // A writer that fills more than a pipe's worth would block if nobody drained.
        let mut writer = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
        let line = vec![b'a'; 1023];
        for _ in 0..256 {
            std::io::Write::write_all(&mut writer, &line).unwrap();
            std::io::Write::write_all(&mut writer, b"\n").unwrap();
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while ring.lock().contents().len() < LOG_RING {
            assert!(std::time::Instant::now() < deadline, "log not drained");
            std::thread::yield_now();
        }

        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pidfd = crate::sys::pidfd_open(child.id()).unwrap();
        let (tx, rx) = crossbeam_channel::bounded(1);
        monitor.send(Command::Watch {
            key: monitor.key(),
            pidfd,
            on_exit: Box::new(move || {
                let _ = tx.send(());
            }),
        });
        assert!(rx.try_recv().is_err());
        child.kill().unwrap();
        child.wait().unwrap();
        rx.recv_timeout(Duration::from_secs(10))
            .expect("exit reported");
        // The log keeps the thread; once it is forgotten, the thread ends.
        assert!(monitor.running());
        monitor.send(Command::Forget(log_key));
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while monitor.running() {
            assert!(std::time::Instant::now() < deadline, "thread still running");
            std::thread::yield_now();
        }
        // A new registration starts a new one.
        let (tx, rx) = crossbeam_channel::bounded(1);
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pidfd = crate::sys::pidfd_open(child.id()).unwrap();
        child.wait().unwrap();
        monitor.send(Command::Watch {
            key: monitor.key(),
            pidfd,
            on_exit: Box::new(move || {
                let _ = tx.send(());
            }),
        });
        rx.recv_timeout(Duration::from_secs(10))
            .expect("exit of a process that had already ended reported");
        monitor.stop();
        assert!(!monitor.running());
    }

    use std::os::unix::fs::OpenOptionsExt as _;
}
