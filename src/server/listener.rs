//! One named thread per listener, started and stopped over crossbeam channels (all but the
//! gRPC unix socket, which the main thread accepts on for its completion-queue thread).
//!
//! Protocol with the main thread:
//! 1. [`Listener::spawn`] starts the thread with a `start` function and returns at once, so
//!    the listeners bind side by side (the debug socket does not wait for the metrics port).
//! 2. The thread runs `start` (build, bind, start serving), hands its interrupt hook to the
//!    handle and sends [`Event::ListenerReady`] or [`Event::ListenerFailed`] (and ends).
//! 3. [`Serving::run`] blocks on the thread until [`Listener::stop`] sends on the stop
//!    channel (or calls the interrupt hook, for servers that own the thread's loop).
//! 4. `run` shuts its server down (drain, then cancel) and returns; socket files are
//!    removed. A thread that ends any other way (a panic, a serve failure) sends
//!    [`Event::ListenerExited`], and the main thread stops the daemon.

use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};

use super::{Event, EventSender, ServerError};

/// A started server, owned by its listener thread.
pub trait Serving: Send {
    /// Serves until `stop` fires (a message or a dropped sender), then shuts down.
    /// An `Err` means the server failed on its own.
    fn run(self: Box<Self>, stop: Receiver<()>) -> Result<(), String>;
}

/// Wakes a server that blocks its own thread (e.g. tiny_http's accept loop).
pub type Interrupt = Box<dyn Fn() + Send>;

/// Handle to a running listener thread.
pub struct Listener {
    name: &'static str,
    stop: Option<Sender<()>>,
    /// Where the thread hands over its interrupt hook once `start` is done.
    hook: Receiver<Option<Interrupt>>,
    join: Option<JoinHandle<()>>,
}

struct ExitGuard {
    name: &'static str,
    events: EventSender,
    expected: bool,
}

impl Drop for ExitGuard {
    fn drop(&mut self) {
        if !self.expected {
            let why = if std::thread::panicking() {
                "listener thread panicked".to_string()
            } else {
                "listener thread ended".to_string()
            };
            let _ = self.events.send(Event::ListenerExited(self.name, why));
        }
    }
}

type StartFn =
    Box<dyn FnOnce() -> Result<(Box<dyn Serving>, Option<Interrupt>), ServerError> + Send>;

impl Listener {
    /// Starts the thread `name`; `start` builds and starts the server on it. The interrupt
    /// hook it may return is taken by [`Listener::stop`].
    pub fn spawn(
        name: &'static str,
        events: EventSender,
        start: impl FnOnce() -> Result<(Box<dyn Serving>, Option<Interrupt>), ServerError>
            + Send
            + 'static,
    ) -> Result<Listener, ServerError> {
        let (stop_tx, stop_rx) = crossbeam_channel::bounded(1);
        let (hook_tx, hook_rx) = crossbeam_channel::bounded::<Option<Interrupt>>(1);
        let start: StartFn = Box::new(start);
        let join = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                let mut guard = ExitGuard {
                    name,
                    events: events.clone(),
                    expected: false,
                };
                let serving = match start() {
                    Ok((serving, interrupt)) => {
                        let _ = hook_tx.send(interrupt);
                        serving
                    }
                    Err(err) => {
                        guard.expected = true;
                        let _ = hook_tx.send(None);
                        let _ = events.send(Event::ListenerFailed(name, err));
                        return;
                    }
                };
                let _ = events.send(Event::ListenerReady(name));
                let stopping = stop_rx.clone();
                let result = serving.run(stop_rx);
                // Ending because stop was asked for is expected; anything else is not.
                let asked = matches!(
                    stopping.try_recv(),
                    Err(crossbeam_channel::TryRecvError::Disconnected) | Ok(())
                );
                match result {
                    Ok(()) if asked => {
                        guard.expected = true;
                        log::info!("{name} stopped");
                    }
                    Ok(()) => {}
                    Err(err) => {
                        guard.expected = true;
                        let _ = events.send(Event::ListenerExited(name, err));
                    }
                }
            })
            .map_err(|err| ServerError::Thread(name, err))?;
        Ok(Listener {
            name,
            stop: Some(stop_tx),
            hook: hook_rx,
            join: Some(join),
        })
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Asks the thread to stop its server and waits for it (for a thread still in `start`,
    /// until `start` is done, then it stops what it started).
    pub fn stop(mut self) {
        self.stop.take();
        // The hook lives until the thread is joined: dropping it may close what it wakes
        // (a mio waker's eventfd) before the thread saw the wake-up.
        let interrupt = self.hook.recv().ok().flatten();
        if let Some(interrupt) = &interrupt {
            interrupt();
        }
        if let Some(join) = self.join.take() {
            if join.join().is_err() {
                log::error!("{} panicked while stopping", self.name);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    struct FailsOnItsOwn;

    impl Serving for FailsOnItsOwn {
        fn run(self: Box<Self>, _stop: Receiver<()>) -> Result<(), String> {
            Err("accept failed".into())
        }
    }

    struct Quiet;

    impl Serving for Quiet {
        fn run(self: Box<Self>, stop: Receiver<()>) -> Result<(), String> {
            let _ = stop.recv();
            Ok(())
        }
    }

    fn next(rx: &Receiver<Event>) -> Event {
        rx.recv_timeout(Duration::from_secs(10)).expect("an event")
    }

    #[test]
    fn a_server_that_fails_on_its_own_reports_exited() {
        let (tx, rx) = EventSender::detached();
        let listener = Listener::spawn("test-fail", tx, || Ok((Box::new(FailsOnItsOwn), None)))
            .expect("spawn");
        assert!(matches!(next(&rx), Event::ListenerReady("test-fail")));
        match next(&rx) {
            Event::ListenerExited(name, why) => {
                assert_eq!(name, "test-fail");
                assert_eq!(why, "accept failed");
            }
            _ => panic!("expected ListenerExited"),
        }
        listener.stop();
    }

    #[test]
    fn spawn_returns_while_start_runs_and_stop_takes_the_hook_it_hands_over() {
        let (tx, rx) = EventSender::detached();
        let (go_tx, go_rx) = crossbeam_channel::bounded::<()>(0);
        let (woken_tx, woken_rx) = crossbeam_channel::unbounded();
        let listener = Listener::spawn("test-slow", tx, move || {
            // Gives up if spawn did not return to the caller while this start was running.
            go_rx
                .recv_timeout(Duration::from_secs(5))
                .map_err(|_| ServerError::Listener("test-slow", "spawn waited".into()))?;
            let interrupt: Interrupt = Box::new(move || {
                let _ = woken_tx.send(());
            });
            Ok((Box::new(Quiet) as Box<dyn Serving>, Some(interrupt)))
        })
        .expect("spawn");
        go_tx.send(()).expect("start still waits for the go-ahead");
        assert!(matches!(next(&rx), Event::ListenerReady("test-slow")));
        listener.stop();
        assert!(
            woken_rx.try_recv().is_ok(),
            "stop called the interrupt hook"
        );
    }

    /// Serves like the gRPC accept loop: blocks in a mio poll that only its waker ends.
    struct Polled(mio::Poll);

    impl Serving for Polled {
        fn run(mut self: Box<Self>, stop: Receiver<()>) -> Result<(), String> {
            let mut events = mio::Events::with_capacity(4);
            loop {
                if !matches!(stop.try_recv(), Err(crossbeam_channel::TryRecvError::Empty)) {
                    return Ok(());
                }
                self.0
                    .poll(&mut events, None)
                    .map_err(|err| err.to_string())?;
            }
        }
    }

    #[test]
    fn a_stop_right_after_start_always_wakes_a_polling_server() {
        // The hook must outlive the wake-up: a waker dropped at once closes its eventfd,
        // and a thread not yet back from epoll_wait then never sees the wake-up.
        for round in 0..200 {
            let (tx, rx) = EventSender::detached();
            let listener = Listener::spawn("test-poll", tx, || {
                let poll = mio::Poll::new()
                    .map_err(|err| ServerError::Listener("test-poll", format!("poll: {err}")))?;
                let waker = mio::Waker::new(poll.registry(), mio::Token(0))
                    .map_err(|err| ServerError::Listener("test-poll", format!("waker: {err}")))?;
                let interrupt: Interrupt = Box::new(move || {
                    let _ = waker.wake();
                });
                Ok((Box::new(Polled(poll)) as Box<dyn Serving>, Some(interrupt)))
            })
            .expect("spawn");
            assert!(matches!(next(&rx), Event::ListenerReady("test-poll")));
            let (done_tx, done_rx) = crossbeam_channel::bounded(1);
            std::thread::spawn(move || {
                listener.stop();
                let _ = done_tx.send(());
            });
            assert!(
                done_rx.recv_timeout(Duration::from_secs(10)).is_ok(),
                "round {round}: the listener did not stop"
            );
        }
    }

    #[test]
    fn a_failed_start_reports_failed_and_a_stop_reports_nothing() {
        let (tx, rx) = EventSender::detached();
        let failed = Listener::spawn("test-start", tx.clone(), || {
            Err(ServerError::Listener("test-start", "bind: in use".into()))
        })
        .expect("spawn");
        match next(&rx) {
            Event::ListenerFailed(name, err) => {
                assert_eq!(name, "test-start");
                assert_eq!(err.to_string(), "test-start: bind: in use");
            }
            _ => panic!("expected ListenerFailed"),
        }
        failed.stop();

        let quiet =
            Listener::spawn("test-quiet", tx, || Ok((Box::new(Quiet), None))).expect("spawn");
        assert!(matches!(next(&rx), Event::ListenerReady("test-quiet")));
        quiet.stop();
        assert!(rx.try_recv().is_err(), "a requested stop is not an exit");
    }
}
