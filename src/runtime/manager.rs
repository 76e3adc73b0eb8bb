//! The shim manager: creates, finds, deletes and cleans up tasks (see the module map in
//! [`super`]).

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use parking_lot::Mutex;

use super::bundle::{self, Bundle, Exit};
use super::monitor::{Command, LogRing, Monitor};
use super::shim::{self, DaemonAddresses, ShimClient};
use super::task::{Task, Waiter};
use super::{recover, CreateOpts, RuntimeConfig, ShimGroup, Timeouts};
use crate::api::event_types::{TaskDelete, TaskExit};
use crate::api::shim_task;
use crate::errdefs::{Class, Error};
use crate::events::Exchange;

pub(super) type Key = (String, String);

pub(super) fn key(namespace: &str, id: &str) -> Key {
    (namespace.to_string(), id.to_string())
}

/// The error of a task call for an id without a task.
pub fn task_not_found(id: &str) -> Error {
    Error::not_found(format!("task {id} not found"))
}

/// The shim manager (the plugin's value).
pub struct TaskManager {
    pub(super) state: PathBuf,
    pub(super) root: PathBuf,
    pub(super) daemon: DaemonAddresses,
    pub(super) exchange: Arc<Exchange>,
    pub(super) config: RuntimeConfig,
    pub(super) group: ShimGroup,
    pub(super) timeouts: Timeouts,
    pub(super) tasks: Mutex<HashMap<Key, Arc<Task>>>,
    /// Ids being created: a second Create is refused, other calls see no task yet.
    pub(super) creating: Mutex<HashSet<Key>>,
    /// Ids found on disk at start and not recovered yet: calls answer Unavailable.
    pub(super) recovering: Mutex<HashSet<Key>>,
    pub(super) monitor: Monitor,
    pub(super) binaries: Mutex<HashMap<String, PathBuf>>,
}

impl TaskManager {
    /// A manager over `state`/`root` (the plugin's directories).
    pub fn new(
        state: PathBuf,
        root: PathBuf,
        daemon: DaemonAddresses,
        exchange: Arc<Exchange>,
        config: RuntimeConfig,
        timeouts: Timeouts,
    ) -> Result<Arc<TaskManager>, Error> {
        let group = ShimGroup::parse(&config.shim_group)?;
        for dir in [&state, &root] {
            std::fs::create_dir_all(dir)
                .map_err(|err| Error::from(err).context(format!("create {}", dir.display())))?;
        }
        let monitor = Monitor::new();
        let manager = Arc::new(TaskManager {
            state,
            root,
            daemon,
            exchange,
            config,
            group,
            timeouts,
            tasks: Mutex::default(),
            creating: Mutex::default(),
            recovering: Mutex::default(),
            monitor,
            binaries: Mutex::default(),
        });
        manager.clone().follow_exits()?;
        Ok(manager)
    }

    pub fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    pub fn state_dir(&self) -> &Path {
        &self.state
    }

    /// The live task `namespace`/`id`.
    pub fn get(&self, namespace: &str, id: &str) -> Result<Arc<Task>, Error> {
        let k = key(namespace, id);
        if let Some(task) = self.tasks.lock().get(&k) {
            return Ok(task.clone());
        }
        if self.recovering.lock().contains(&k) {
            return Err(Error::unavailable(format!(
                "task {id} is being recovered after a restart; try again"
            )));
        }
        Err(task_not_found(id))
    }

    /// Whether `namespace`/`id` has a task (live, being created or being recovered).
    pub fn exists(&self, namespace: &str, id: &str) -> bool {
        let k = key(namespace, id);
        self.tasks.lock().contains_key(&k)
            || self.creating.lock().contains(&k)
            || self.recovering.lock().contains(&k)
    }

    /// Whether any task lives in `namespace`.
    pub fn namespace_has_tasks(&self, namespace: &str) -> bool {
        let has = |set: &HashSet<Key>| set.iter().any(|(ns, _)| ns == namespace);
        self.tasks.lock().keys().any(|(ns, _)| ns == namespace)
            || has(&self.creating.lock())
            || has(&self.recovering.lock())
    }

    /// The live tasks of `namespace` (every namespace if `None`), sorted by id.
    pub fn tasks(&self, namespace: Option<&str>) -> Vec<Arc<Task>> {
        let mut list: Vec<Arc<Task>> = self
            .tasks
            .lock()
            .iter()
            .filter(|((ns, _), _)| namespace.map_or(true, |n| n == ns))
            .map(|(_, t)| t.clone())
            .collect();
        list.sort_by(|a, b| a.id().cmp(b.id()));
        list
    }

    /// The last bytes of a task's shim log.
    pub fn shim_log(&self, namespace: &str, id: &str) -> Option<Vec<u8>> {
        let task = self.tasks.lock().get(&key(namespace, id)).cloned()?;
        let contents = task.log.lock().contents();
        Some(contents)
    }

    fn resolve(&self, runtime: &str) -> Result<PathBuf, Error> {
        if let Some(path) = self.config.shim_paths.get(runtime) {
            return Ok(PathBuf::from(path));
        }
        if let Some(path) = self.binaries.lock().get(runtime) {
            return Ok(path.clone());
        }
        let path = shim::resolve_binary(runtime, &[])?;
        self.binaries
            .lock()
            .insert(runtime.to_string(), path.clone());
        Ok(path)
    }

    /// Creates the task: bundle, shim, the shim's Create. Returns the init process's pid.
    pub fn create(
        self: &Arc<Self>,
        namespace: &str,
        id: &str,
        opts: CreateOpts,
    ) -> Result<Arc<Task>, Error> {
        let k = key(namespace, id);
        {
            let tasks = self.tasks.lock();
            let mut creating = self.creating.lock();
            if tasks.contains_key(&k)
                || creating.contains(&k)
                || self.recovering.lock().contains(&k)
            {
                return Err(Error::already_exists(format!("task {id}: already exists")));
            }
            creating.insert(k.clone());
        }
        let result = self.create_inner(namespace, id, opts);
        let mut tasks = self.tasks.lock();
        self.creating.lock().remove(&k);
        let task = result?;
        tasks.insert(k, task.clone());
        Ok(task)
    }

    fn create_inner(
        self: &Arc<Self>,
        namespace: &str,
        id: &str,
        opts: CreateOpts,
    ) -> Result<Arc<Task>, Error> {
        // containerd's words for the two halves: `failed to start shim: start failed: …`
        // while the shim binary is found and started, `failed to create shim task: …` when
        // the shim's Create fails; the class of the cause is kept.
        let start_failed = |err: Error| err.context("failed to start shim: start failed");
        let binary = self.resolve(&opts.runtime).map_err(start_failed)?;
        let spec = match self.group.group(namespace, &opts.labels) {
            Some(group) => bundle::with_group_annotation(&opts.spec, &group)?,
            None => opts.spec.clone(),
        };
        let bundle = Bundle::create(&self.state, &self.root, namespace, id, &spec)
            .map_err(|err| err.context("failed to start shim"))?;
        let log = Arc::new(Mutex::new(LogRing::default()));
        let log_key = match self.open_log(&bundle, &log) {
            Ok(key) => key,
            Err(err) => {
                let _ = bundle.delete();
                return Err(err);
            }
        };
        let options = opts.task_options.as_ref().or(opts.runtime_options.as_ref());
        let started = shim::start(&binary, &bundle, &self.daemon, options).and_then(|address| {
            bundle.write_shim_binary(&binary)?;
            let client = ShimClient::connect(&address, namespace)?;
            let connected = client
                .task()
                .connect(
                    client.ctx(Some(self.timeouts.load)),
                    &shim_task::ConnectRequest {
                        id: id.to_string(),
                        ..Default::default()
                    },
                )
                .map_err(shim::map_error)?;
            Ok((client, connected.shim_pid))
        });
        let started = started.map_err(start_failed);
        let (client, shim_pid) = match started {
            Ok(started) => started,
            Err(err) => {
                self.monitor.send(Command::Forget(log_key));
                self.cleanup_failed(&binary, &bundle);
                return Err(err);
            }
        };
        let request = shim_task::CreateTaskRequest {
            id: id.to_string(),
            bundle: bundle.path.to_string_lossy().into_owned(),
            rootfs: opts.rootfs.clone(),
            terminal: opts.terminal,
            stdin: opts.stdin.clone(),
            stdout: opts.stdout.clone(),
            stderr: opts.stderr.clone(),
            options: options.cloned().into(),
            ..Default::default()
        };
        let created = client
            .task()
            .create(client.ctx(None), &request)
            .map_err(|err| shim::map_error(err).context("failed to create shim task"));
        let pid = match created {
            Ok(resp) => resp.pid,
            Err(err) => {
                self.shutdown_shim(&client, id);
                self.monitor.send(Command::Forget(log_key));
                self.cleanup_failed(&binary, &bundle);
                return Err(err);
            }
        };
        let watch_key = self.monitor.key();
        let task = Arc::new(Task::new(
            bundle,
            client,
            opts.runtime.clone(),
            binary,
            pid,
            shim_pid,
            log_key,
            watch_key,
            log,
        ));
        self.watch_shim(&task);
        Ok(task)
    }

    /// Creates and opens the bundle's `log` FIFO and has the monitor drain it.
    pub(super) fn open_log(
        &self,
        bundle: &Bundle,
        ring: &Arc<Mutex<LogRing>>,
    ) -> Result<u64, Error> {
        let path = bundle.log_path();
        match crate::sys::mknod(&path, libc::S_IFIFO | 0o700, 0, 0) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(err) => return Err(Error::from(err).context("create shim log fifo")),
        }
        let file = File::options()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(&path)
            .map_err(|err| Error::from(err).context("open shim log fifo"))?;
        let key = self.monitor.key();
        self.monitor.send(Command::Log {
            key,
            namespace: bundle.namespace.clone(),
            id: bundle.id.clone(),
            file,
            ring: ring.clone(),
        });
        Ok(key)
    }

    /// Watches the task's shim process; its death starts the dead-shim cleanup.
    pub(super) fn watch_shim(self: &Arc<Self>, task: &Arc<Task>) {
        let manager = Arc::downgrade(self);
        let watched = Arc::downgrade(task);
        let on_exit = Box::new(move || {
            if let (Some(manager), Some(task)) = (manager.upgrade(), watched.upgrade()) {
                manager.shim_died(&task);
            }
        });
        match crate::sys::pidfd_open(task.shim_pid) {
            Ok(pidfd) => self.monitor.send(Command::Watch {
                key: task.watch_key,
                pidfd,
                on_exit,
            }),
            // The shim is already gone.
            Err(_) => on_exit(),
        }
    }

    /// Asks the shim to exit (it stays while it serves other tasks of its group).
    fn shutdown_shim(&self, client: &ShimClient, id: &str) {
        let result = client.task().shutdown(
            client.ctx(Some(self.timeouts.shutdown)),
            &shim_task::ShutdownRequest {
                id: id.to_string(),
                ..Default::default()
            },
        );
        if let Err(err) = result {
            let err = shim::map_error(err);
            if err.class() != Class::Unavailable {
                log::debug!("shim shutdown of task {id}: {err}");
            }
        }
    }

    /// Removes what a failed Create left: the shim's own cleanup, then the bundle.
    fn cleanup_failed(&self, binary: &Path, bundle: &Bundle) {
        if bundle.path.join(bundle::ADDRESS).exists() {
            if let Err(err) = shim::delete(binary, bundle, &self.daemon, self.timeouts.cleanup) {
                log::warn!("cleanup of failed task {}: {err}", bundle.id);
            }
        }
        if let Err(err) = bundle.delete() {
            log::warn!("remove bundle of failed task {}: {err}", bundle.id);
        }
    }

    /// Deletes the task after its init process exited: the shim's Delete, Shutdown, the
    /// shim binary's `delete`, the bundle. Returns the init process's exit.
    pub fn delete(&self, namespace: &str, id: &str) -> Result<Exit, Error> {
        let task = self.get(namespace, id)?;
        let resp = task
            .client
            .task()
            .delete(
                task.client.ctx(None),
                &shim_task::DeleteRequest {
                    id: id.to_string(),
                    ..Default::default()
                },
            )
            .map_err(shim::map_error);
        let resp = match resp {
            Ok(resp) => Some(resp),
            Err(err) if matches!(err.class(), Class::NotFound | Class::Unavailable) => None,
            Err(err) => return Err(err),
        };
        {
            let mut tasks = self.tasks.lock();
            match tasks.get(&key(namespace, id)) {
                Some(current) if Arc::ptr_eq(current, &task) => {
                    tasks.remove(&key(namespace, id));
                }
                // The dead-shim cleanup got there first.
                _ => return Err(task_not_found(id)),
            }
        }
        self.monitor.send(Command::Forget(task.watch_key));
        let socket = task.bundle.address().ok();
        self.shutdown_shim(&task.client, id);
        self.monitor.forget_log_when_exits(
            task.log_key,
            task.shim_pid,
            Box::new(move || remove_stale_socket(socket.as_deref())),
        );
        if let Err(err) = shim::delete(
            &task.shim_binary,
            &task.bundle,
            &self.daemon,
            self.timeouts.cleanup,
        ) {
            log::warn!("shim cleanup of task {id} in namespace {namespace}: {err}");
        }
        let exit = match (&resp, task.exit_of("")) {
            (Some(resp), _) => Exit {
                pid: resp.pid,
                status: resp.exit_status,
                at: crate::api::system_time(&resp.exited_at),
            },
            (None, Some(exit)) => exit,
            (None, None) => Exit {
                pid: task.pid,
                status: 255,
                at: SystemTime::now(),
            },
        };
        task.finish_all(exit);
        task.bundle.delete()?;
        if resp.is_none() {
            return Err(Error::not_found(format!("task {id}: shim is gone")));
        }
        Ok(exit)
    }

    /// The shim of `task` exited while the task was live: clean up as its `delete` does,
    /// publish `/tasks/exit` and `/tasks/delete`, complete every Wait.
    fn shim_died(&self, task: &Arc<Task>) {
        let (namespace, id) = (task.namespace().to_string(), task.id().to_string());
        {
            let mut tasks = self.tasks.lock();
            match tasks.get(&key(&namespace, &id)) {
                Some(current) if Arc::ptr_eq(current, task) => {
                    tasks.remove(&key(&namespace, &id));
                }
                _ => return,
            }
        }
        log::warn!("cleaning up after shim disconnected id={id} namespace={namespace}");
        self.monitor.send(Command::Forget(task.log_key));
        let exit = self.cleanup_dead(&task.bundle, Some(&task.shim_binary), task.pid);
        task.finish_all(exit);
    }

    /// The cleanup of a dead shim's bundle with its events; the exit reported is the one
    /// recorded in the bundle when there is one (the shim's `delete` can only guess).
    pub(super) fn cleanup_dead(&self, bundle: &Bundle, binary: Option<&Path>, pid: u32) -> Exit {
        let socket = bundle.address().ok();
        let response = match binary {
            Some(binary) => {
                match shim::delete(binary, bundle, &self.daemon, self.timeouts.cleanup) {
                    Ok(resp) => Some(resp),
                    Err(err) => {
                        log::warn!(
                            "failed to clean up after shim disconnected id={} namespace={}: {err}",
                            bundle.id,
                            bundle.namespace
                        );
                        None
                    }
                }
            }
            None => None,
        };
        let exit = match (bundle.read_exit(), response) {
            (Some(exit), _) => exit,
            (None, Some(resp)) => Exit {
                pid: if resp.pid != 0 { resp.pid } else { pid },
                status: resp.exit_status,
                at: crate::api::system_time(&resp.exited_at),
            },
            (None, None) => Exit {
                pid,
                status: 255,
                at: SystemTime::now(),
            },
        };
        if let Err(err) = bundle.delete() {
            log::warn!("remove bundle of task {}: {err}", bundle.id);
        }
        remove_stale_socket(socket.as_deref());
        let at = crate::api::timestamp(exit.at);
        self.exchange.publish_event(
            &bundle.namespace,
            "/tasks/exit",
            &TaskExit {
                container_id: bundle.id.clone(),
                id: bundle.id.clone(),
                pid: exit.pid,
                exit_status: exit.status,
                exited_at: Some(at.clone()).into(),
                ..Default::default()
            },
        );
        self.exchange.publish_event(
            &bundle.namespace,
            "/tasks/delete",
            &TaskDelete {
                container_id: bundle.id.clone(),
                pid: exit.pid,
                exit_status: exit.status,
                exited_at: Some(at).into(),
                ..Default::default()
            },
        );
        exit
    }

    /// Follows the shims' `/tasks/exit` events: a future on the waiting thread
    /// (`crate::waiting`) that turns each into the exit of a process of a known task.
    fn follow_exits(self: Arc<Self>) -> Result<(), Error> {
        let subscription = self
            .exchange
            .subscribe(&["topic==\"/tasks/exit\"".to_string()])?;
        let manager = Arc::downgrade(&self);
        crate::waiting::spawn(std::future::poll_fn(move |cx| loop {
            match subscription.try_next() {
                crate::events::Next::Event(envelope) => {
                    let Some(manager) = manager.upgrade() else {
                        return std::task::Poll::Ready(());
                    };
                    manager.on_task_exit(&envelope);
                }
                crate::events::Next::Ended => return std::task::Poll::Ready(()),
                crate::events::Next::Empty => {
                    if subscription.poll_news(cx).is_pending() {
                        return std::task::Poll::Pending;
                    }
                }
            }
        }));
        Ok(())
    }

    /// One `/tasks/exit` event: the process it names has exited.
    fn on_task_exit(&self, envelope: &crate::api::types::Envelope) {
        let Some(any) = envelope.event.as_ref() else {
            return;
        };
        let Ok(exit) = <TaskExit as protobuf::Message>::parse_from_bytes(&any.value) else {
            return;
        };
        let found = self
            .tasks
            .lock()
            .get(&key(&envelope.namespace, &exit.container_id))
            .cloned();
        if let Some(task) = found {
            task.exited(
                &exit.id,
                Exit {
                    pid: exit.pid,
                    status: exit.exit_status,
                    at: crate::api::system_time(&exit.exited_at),
                },
            );
        }
    }

    /// Registers `waiter` for the exit of a process of `task`; checks the shim's state
    /// once, in case the exit happened before anyone listened (e.g. across a restart).
    pub fn wait(&self, task: &Arc<Task>, exec_id: &str, waiter: Waiter) {
        if !task.wait(exec_id, waiter) {
            return;
        }
        // The shim names the init process with an empty exec id.
        let exec_id = if exec_id == task.id() { "" } else { exec_id };
        let state = task
            .client
            .task()
            .state(
                task.client.ctx(Some(self.timeouts.state)),
                &shim_task::StateRequest {
                    id: task.id().to_string(),
                    exec_id: exec_id.to_string(),
                    ..Default::default()
                },
            )
            .map_err(shim::map_error);
        match state {
            Ok(state) if state.status.value() == crate::api::task_types::Status::STOPPED as i32 => {
                task.exited(
                    exec_id,
                    Exit {
                        pid: state.pid,
                        status: state.exit_status,
                        at: crate::api::system_time(&state.exited_at),
                    },
                );
            }
            Ok(_) => {}
            Err(err) if err.class() == Class::NotFound => task.fail_waiters(exec_id, &err),
            Err(err) => log::debug!("state of task {} for a wait: {err}", task.id()),
        }
    }

    /// Recovers the tasks a previous run left (see [`recover`]); `ready` is released once
    /// every bundle found now has been reconnected or cleaned up.
    pub fn recover(self: &Arc<Self>, ready: crate::plugin::ReadyGuard) -> Result<(), Error> {
        recover::start(self.clone(), ready)
    }

    /// Stops the shim monitor (the daemon is stopping; shims keep running).
    pub fn close(&self) {
        self.monitor.stop();
    }
}

/// Removes a shim's socket file once nothing listens on it (a killed shim, or a grouped
/// shim whose first bundle, where it reads its address on exit, is gone).
fn remove_stale_socket(address: Option<&str>) {
    let Some(address) = address else {
        return;
    };
    let path = Path::new(address.strip_prefix("unix://").unwrap_or(address));
    if let Err(err) = std::os::unix::net::UnixStream::connect(path) {
        if err.kind() == std::io::ErrorKind::ConnectionRefused {
            let _ = std::fs::remove_file(path);
        }
    }
}
