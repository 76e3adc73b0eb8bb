//! Signals turned into events: SIGTERM, SIGINT and SIGUSR1 are blocked in every thread and
//! read from a signalfd that the main thread's mio loop polls beside its event channel (no
//! thread of their own). SIGPIPE stays ignored (Rust's runtime ignores it at start).

use std::collections::VecDeque;
use std::os::fd::OwnedFd;

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};

use crate::sys;

/// The signals ctrd handles.
pub const HANDLED: [i32; 3] = [libc::SIGTERM, libc::SIGINT, libc::SIGUSR1];

/// The handled signals, blocked, and the signalfd they arrive on.
pub struct Signals {
    fd: OwnedFd,
}

impl Signals {
    /// Blocks the handled signals in the calling thread (call it before spawning any other
    /// thread, so they all inherit the mask) and opens their signalfd.
    pub fn block() -> std::io::Result<Signals> {
        let set = sys::SigSet::of(&HANDLED)?;
        sys::block_signals(&set)?;
        let fd = sys::signalfd(&set)?;
        Ok(Signals { fd })
    }

    /// Has `registry` report the signalfd readable under `token` (edge-triggered: call
    /// [`Signals::read_into`] until it finds none after each report).
    pub fn register(&self, registry: &Registry, token: Token) -> std::io::Result<()> {
        registry.register(
            &mut SourceFd(&sys::raw(&self.fd)),
            token,
            Interest::READABLE,
        )
    }

    /// Appends every pending signal to `out`.
    pub fn read_into(&self, out: &mut VecDeque<i32>) -> std::io::Result<()> {
        while let Some(sig) = sys::read_signal(&self.fd)? {
            out.push_back(sig);
        }
        Ok(())
    }
}
