//! One task as the manager keeps it: its bundle, its shim connection, its log and the
//! exits of its processes with the Waits that want them.
//!
//! Exits: one record per process (`""` is the init process, else the exec id). A waiter
//! registers a callback; the first exit that arrives (the shim's `/tasks/exit`, a `State`
//! that reports STOPPED, or the cleanup of a dead shim) completes every waiter of that
//! process at once and is kept for the ones that come later. No thread waits per process
//! or per caller.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::Mutex;

use super::bundle::{Bundle, Exit};
use super::monitor::LogRing;
use super::shim::ShimClient;
use crate::errdefs::Error;

/// What a waiter receives.
pub type WaitResult = Result<Exit, Error>;

/// A waiter's callback; it runs on whichever thread saw the exit and must not block.
pub type Waiter = Box<dyn FnOnce(WaitResult) + Send>;

#[derive(Default)]
struct Exits {
    done: HashMap<String, Exit>,
    waiters: HashMap<String, Vec<Waiter>>,
}

/// A live task.
pub struct Task {
    pub bundle: Bundle,
    pub client: ShimClient,
    pub runtime: String,
    pub shim_binary: PathBuf,
    /// The init process's pid.
    pub pid: u32,
    pub shim_pid: u32,
    pub(super) log_key: u64,
    pub(super) watch_key: u64,
    pub log: Arc<Mutex<LogRing>>,
    exits: Mutex<Exits>,
}

impl Task {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        bundle: Bundle,
        client: ShimClient,
        runtime: String,
        shim_binary: PathBuf,
        pid: u32,
        shim_pid: u32,
        log_key: u64,
        watch_key: u64,
        log: Arc<Mutex<LogRing>>,
    ) -> Task {
        Task {
            bundle,
            client,
            runtime,
            shim_binary,
            pid,
            shim_pid,
            log_key,
            watch_key,
            log,
            exits: Mutex::new(Exits::default()),
        }
    }

    pub fn id(&self) -> &str {
        &self.bundle.id
    }

    pub fn namespace(&self) -> &str {
        &self.bundle.namespace
    }

    /// The record key of a process: `""` for init (named by its exec id or the task id).
    pub fn process_key(&self, exec_id: &str) -> String {
        if exec_id == self.bundle.id {
            String::new()
        } else {
            exec_id.to_string()
        }
    }

    /// Calls `waiter` with the process's exit: now if it is known, else when it arrives.
    /// Returns true when the waiter was queued (the caller may then check the process's
    /// state, in case its exit was missed).
    pub fn wait(&self, exec_id: &str, waiter: Waiter) -> bool {
        let key = self.process_key(exec_id);
        let mut exits = self.exits.lock();
        if let Some(exit) = exits.done.get(&key).copied() {
            drop(exits);
            waiter(Ok(exit));
            return false;
        }
        exits.waiters.entry(key).or_default().push(waiter);
        true
    }

    /// Records a process's exit and completes its waiters; the first exit recorded wins.
    pub fn exited(&self, exec_id: &str, exit: Exit) {
        let key = self.process_key(exec_id);
        let waiters = {
            let mut exits = self.exits.lock();
            if exits.done.contains_key(&key) {
                return;
            }
            exits.done.insert(key.clone(), exit);
            exits.waiters.remove(&key).unwrap_or_default()
        };
        if key.is_empty() {
            if let Err(err) = self.bundle.write_exit(&exit) {
                log::warn!(
                    "cannot record the exit of task {} in namespace {}: {err}",
                    self.bundle.id,
                    self.bundle.namespace
                );
            }
        }
        for waiter in waiters {
            waiter(Ok(exit));
        }
    }

    /// The recorded exit of a process, if it exited.
    pub fn exit_of(&self, exec_id: &str) -> Option<Exit> {
        self.exits
            .lock()
            .done
            .get(&self.process_key(exec_id))
            .copied()
    }

    /// Fails the waiters of one process (it does not exist).
    pub fn fail_waiters(&self, exec_id: &str, err: &Error) {
        let key = self.process_key(exec_id);
        let waiters = {
            let mut exits = self.exits.lock();
            if exits.done.contains_key(&key) {
                return;
            }
            exits.waiters.remove(&key).unwrap_or_default()
        };
        for waiter in waiters {
            waiter(Err(err.clone()));
        }
    }

    /// Forgets an exec process's record (after DeleteProcess).
    pub fn forget(&self, exec_id: &str) {
        let key = self.process_key(exec_id);
        if !key.is_empty() {
            self.exits.lock().done.remove(&key);
        }
    }

    /// Completes every remaining waiter with `exit` (the task is going away).
    pub fn finish_all(&self, exit: Exit) {
        let pending: Vec<(String, Vec<Waiter>)> = {
            let mut exits = self.exits.lock();
            exits.waiters.drain().collect()
        };
        for (key, waiters) in pending {
            let exit = self.exit_of(&key).unwrap_or(exit);
            for waiter in waiters {
                waiter(Ok(exit));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn task(dir: &std::path::Path) -> Task {
        let bundle =
            Bundle::create(&dir.join("s"), &dir.join("r"), "default", "t1", b"{}").expect("bundle");
        // A client that is never used: connect to a listening socket nobody serves.
        let sock = dir.join("sock");
        let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let client =
            ShimClient::connect(&format!("unix://{}", sock.display()), "default").expect("connect");
        Task::new(
            bundle,
            client,
            "io.containerd.runc.v2".into(),
            PathBuf::from("/bin/true"),
            42,
            41,
            0,
            0,
            Arc::default(),
        )
    }

    #[test]
    fn one_exit_completes_every_waiter_and_later_ones() {
        let dir = tempfile::tempdir().unwrap();
        let task = task(dir.path());
        let (tx, rx) = crossbeam_channel::unbounded();
        for _ in 0..100 {
            let tx = tx.clone();
            assert!(task.wait("", Box::new(move |r| tx.send(r).unwrap())));
        }
        assert!(rx.try_recv().is_err());
        let exit = Exit {
            pid: 42,
            status: 3,
            at: UNIX_EPOCH,
        };
        task.exited("t1", exit);
        for _ in 0..100 {
            assert_eq!(rx.try_recv().unwrap().unwrap(), exit);
        }
        // A second report (e.g. State after the event) changes nothing.
        task.exited("", Exit { status: 9, ..exit });
        let tx2 = tx.clone();
        assert!(!task.wait("t1", Box::new(move |r| tx2.send(r).unwrap())));
        assert_eq!(rx.try_recv().unwrap().unwrap().status, 3);
        assert_eq!(
            task.bundle.read_exit(),
            Some(exit),
            "written into the bundle"
        );

        // Exec processes are separate.
        assert!(task.wait("e1", Box::new(move |r| tx.send(r).unwrap())));
        task.fail_waiters("e1", &Error::not_found("process e1 not found"));
        assert!(rx.try_recv().unwrap().is_err());
    }
}
