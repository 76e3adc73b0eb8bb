//! Signals turned into messages: SIGTERM, SIGINT and SIGUSR1 are blocked in every thread and
//! read from a signalfd by the `ctrd-signals` thread, which polls it with mio and forwards
//! each signal to the main loop. SIGPIPE stays ignored (Rust's runtime ignores it at start).

use std::thread::JoinHandle;

use crossbeam_channel::Sender;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};

use super::{Event, ServerError};
use crate::sys;

const SIGNALS: Token = Token(0);
const WAKE: Token = Token(1);

/// The signals ctrd handles.
pub const HANDLED: [i32; 3] = [libc::SIGTERM, libc::SIGINT, libc::SIGUSR1];

/// The running signal thread.
pub struct SignalThread {
    waker: Waker,
    join: Option<JoinHandle<()>>,
}

impl SignalThread {
    /// Blocks the handled signals in the calling thread (call it before spawning any other
    /// thread, so they all inherit the mask) and starts forwarding them to `events`.
    pub fn start(events: Sender<Event>) -> Result<SignalThread, ServerError> {
        let set = sys::SigSet::of(&HANDLED).map_err(ServerError::Signals)?;
        sys::block_signals(&set).map_err(ServerError::Signals)?;
        let fd = sys::signalfd(&set).map_err(ServerError::Signals)?;
        let poll = Poll::new().map_err(ServerError::Signals)?;
        let raw = sys::raw(&fd);
        poll.registry()
            .register(&mut SourceFd(&raw), SIGNALS, Interest::READABLE)
            .map_err(ServerError::Signals)?;
        let waker = Waker::new(poll.registry(), WAKE).map_err(ServerError::Signals)?;
        let join = std::thread::Builder::new()
            .name("ctrd-signals".into())
            .spawn(move || forward(poll, fd, events))
            .map_err(ServerError::Signals)?;
        Ok(SignalThread {
            waker,
            join: Some(join),
        })
    }

    /// Stops the thread and waits for it.
    pub fn stop(mut self) {
        if self.waker.wake().is_ok() {
            if let Some(join) = self.join.take() {
                let _ = join.join();
            }
        }
    }
}

fn forward(mut poll: Poll, fd: std::os::fd::OwnedFd, events: Sender<Event>) {
    let mut ready = Events::with_capacity(4);
    loop {
        if let Err(err) = poll.poll(&mut ready, None) {
            if err.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            log::error!("signal poll failed: {err}");
            return;
        }
        for event in ready.iter() {
            if event.token() == WAKE {
                return;
            }
            loop {
                match sys::read_signal(&fd) {
                    Ok(Some(sig)) => {
                        if events.send(Event::Signal(sig)).is_err() {
                            return;
                        }
                    }
                    Ok(None) => break,
                    Err(err) => {
                        log::error!("reading signals failed: {err}");
                        return;
                    }
                }
            }
        }
    }
}
