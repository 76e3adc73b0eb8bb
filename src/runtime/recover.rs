//! Recovery after a restart, on the `ctrd-recover` thread: every bundle left under
//! `<state>/<ns>/<id>` is either a live shim to reconnect to, or a dead one to clean up
//! (with `/tasks/exit` and `/tasks/delete`, reporting the exit recorded in the bundle when
//! there is one). The ids are known before the thread starts, so a task call for one of
//! them answers Unavailable until it is done; the daemon reports ready only afterwards.

use std::sync::Arc;

use parking_lot::Mutex;

use super::bundle::Bundle;
use super::manager::{key, TaskManager};
use super::monitor::LogRing;
use super::shim::{self, ShimClient};
use super::task::Task;
use crate::api::shim_task;
use crate::errdefs::Error;
use crate::plugin::ReadyGuard;

/// Lists the bundles, marks their ids as recovering and starts the thread.
pub(super) fn start(manager: Arc<TaskManager>, ready: ReadyGuard) -> Result<(), Error> {
    let bundles = list(&manager);
    {
        let mut recovering = manager.recovering.lock();
        for bundle in &bundles {
            recovering.insert(key(&bundle.namespace, &bundle.id));
        }
    }
    if bundles.is_empty() && !has_work_dirs(&manager) {
        // A first start, or every task was deleted: nothing to wait for, no thread to start.
        ready.done();
        return Ok(());
    }
    if !bundles.is_empty() {
        log::info!("recovering {} task(s) in the background", bundles.len());
    }
    std::thread::Builder::new()
        .name("ctrd-recover".into())
        .spawn(move || {
            for bundle in bundles {
                let k = key(&bundle.namespace, &bundle.id);
                recover_one(&manager, bundle);
                manager.recovering.lock().remove(&k);
            }
            remove_orphan_work_dirs(&manager);
            ready.done();
        })
        .map_err(|err| Error::from(err).context("start recovery thread"))?;
    Ok(())
}

fn dirs(path: &std::path::Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(path) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|name| !name.starts_with('.'))
        .collect();
    names.sort();
    names
}

fn list(manager: &TaskManager) -> Vec<Bundle> {
    let mut bundles = Vec::new();
    for ns in dirs(&manager.state) {
        // Half-removed bundles (renamed to a dot-name) are finished off.
        if let Ok(entries) = std::fs::read_dir(manager.state.join(&ns)) {
            for entry in entries.filter_map(Result::ok) {
                if entry.file_name().to_string_lossy().starts_with('.') {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
        for id in dirs(&manager.state.join(&ns)) {
            bundles.push(Bundle::at(&manager.state, &manager.root, &ns, &id));
        }
    }
    bundles
}

fn recover_one(manager: &Arc<TaskManager>, bundle: Bundle) {
    let (namespace, id) = (bundle.namespace.clone(), bundle.id.clone());
    let binary = bundle.shim_binary();
    let log = Arc::new(Mutex::new(LogRing::default()));
    let log_key = manager.open_log(&bundle, &log).ok();
    let connected = bundle.address().and_then(|address| {
        let client = ShimClient::connect(&address, &namespace)?;
        let resp = client
            .task()
            .connect(
                client.ctx(Some(manager.timeouts.load)),
                &shim_task::ConnectRequest {
                    id: id.clone(),
                    ..Default::default()
                },
            )
            .map_err(shim::map_error)?;
        Ok((client, resp))
    });
    match (connected, binary) {
        (Ok((client, resp)), Some(binary)) if resp.task_pid != 0 => {
            let task = Arc::new(Task::new(
                bundle,
                client,
                String::new(),
                binary,
                resp.task_pid,
                resp.shim_pid,
                log_key.unwrap_or(0),
                manager.monitor.key(),
                log,
            ));
            manager
                .tasks
                .lock()
                .insert(key(&namespace, &id), task.clone());
            manager.watch_shim(&task);
            // An exit that happened while ctrd was away is picked up from the shim.
            if let Some(exit) = task.bundle.read_exit() {
                task.exited("", exit);
            }
            log::info!("recovered task {id} in namespace {namespace}");
        }
        (connected, binary) => {
            if let Err(err) = connected {
                log::info!("shim of task {id} in namespace {namespace} is gone: {err}");
            }
            if let Some(log_key) = log_key {
                manager
                    .monitor
                    .send(super::monitor::Command::Forget(log_key));
            }
            manager.cleanup_dead(&bundle, binary.as_deref(), 0);
        }
    }
}

/// Work directories whose bundle is gone.
/// Whether any task has a work directory under the root (an orphan, once no bundle is left).
fn has_work_dirs(manager: &TaskManager) -> bool {
    dirs(&manager.root)
        .iter()
        .any(|ns| !dirs(&manager.root.join(ns)).is_empty())
}

fn remove_orphan_work_dirs(manager: &TaskManager) {
    for ns in dirs(&manager.root) {
        for id in dirs(&manager.root.join(&ns)) {
            if !manager.state.join(&ns).join(&id).exists() {
                let _ = std::fs::remove_dir_all(manager.root.join(&ns).join(&id));
            }
        }
    }
}
