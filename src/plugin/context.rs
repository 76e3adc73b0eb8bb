//! What a plugin's init function receives.

use std::any::Any;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::Mutex;

use super::{properties, Meta, Set};
use crate::errdefs::Error;

/// The plugins that asked the daemon to wait for them before it reports ready.
#[derive(Clone, Default)]
pub struct Readiness {
    inner: Arc<Mutex<Pending>>,
}

#[derive(Default)]
struct Pending {
    next: u64,
    /// Registration number → what it waits for (for health's answer).
    waiting: BTreeMap<u64, String>,
    /// Called once nothing is waiting any more ([`Readiness::when_ready`]).
    when_ready: Vec<Box<dyn FnOnce() + Send>>,
}

/// Held by a plugin that has registered readiness; [`ReadyGuard::done`] reports it ready.
pub struct ReadyGuard {
    readiness: Readiness,
    number: u64,
    done: bool,
}

impl Readiness {
    pub fn new() -> Self {
        Readiness::default()
    }

    /// Registers one more plugin to wait for.
    pub fn register(&self) -> ReadyGuard {
        self.register_named(String::new())
    }

    /// Registers one more plugin to wait for; `what` names it in [`Readiness::waiting_for`].
    pub fn register_named(&self, what: String) -> ReadyGuard {
        let mut pending = self.inner.lock();
        let number = pending.next;
        pending.next += 1;
        pending.waiting.insert(number, what);
        ReadyGuard {
            readiness: self.clone(),
            number,
            done: false,
        }
    }

    /// How many registered plugins have not reported ready yet.
    pub fn pending(&self) -> usize {
        self.inner.lock().waiting.len()
    }

    /// What the registrations still pending wait for, in registration order.
    pub fn waiting_for(&self) -> Vec<String> {
        self.inner.lock().waiting.values().cloned().collect()
    }

    /// Calls `ready` once every registered plugin has reported ready: at once, here, when
    /// none is pending, else on the thread that reports the last one. It must not block.
    pub fn when_ready(&self, ready: impl FnOnce() + Send + 'static) {
        let mut pending = self.inner.lock();
        if pending.waiting.is_empty() {
            drop(pending);
            ready();
        } else {
            pending.when_ready.push(Box::new(ready));
        }
    }

    fn release(&self, number: u64) {
        let callbacks = {
            let mut pending = self.inner.lock();
            pending.waiting.remove(&number);
            if pending.waiting.is_empty() {
                std::mem::take(&mut pending.when_ready)
            } else {
                Vec::new()
            }
        };
        for ready in callbacks {
            ready();
        }
    }
}

impl ReadyGuard {
    pub fn done(mut self) {
        self.done = true;
        self.readiness.release(self.number);
    }
}

impl Drop for ReadyGuard {
    fn drop(&mut self) {
        // A guard dropped without `done` (for example by a panicking plugin) must not hold
        // the daemon's readiness forever; the failure itself is reported by the init result.
        if !self.done {
            self.readiness.release(self.number);
        }
    }
}

/// The context one plugin's init runs with.
pub struct InitContext {
    /// `io.containerd.plugin.root`, `.state`, `.grpc.address`, `.ttrpc.address`.
    pub properties: BTreeMap<String, String>,
    /// Filled in by init: platforms, exports and capabilities shown by introspection.
    pub meta: Meta,
    /// The whole daemon config, for plugins that read top-level settings.
    pub daemon: Arc<crate::config::Config>,
    config: Option<Box<dyn Any + Send + Sync>>,
    plugins: Set,
    readiness: Readiness,
    registered_readiness: bool,
    /// The plugin's URI, naming its readiness registration.
    uri: String,
}

impl InitContext {
    pub fn new(
        properties: BTreeMap<String, String>,
        config: Option<Box<dyn Any + Send + Sync>>,
        daemon: Arc<crate::config::Config>,
        plugins: Set,
        readiness: Readiness,
    ) -> Self {
        InitContext {
            properties,
            meta: Meta::default(),
            daemon,
            config,
            plugins,
            readiness,
            registered_readiness: false,
            uri: String::new(),
        }
    }

    /// Names the plugin this context is for (its URI).
    pub fn for_plugin(mut self, uri: &str) -> Self {
        self.uri = uri.to_string();
        self
    }

    /// The plugin's decoded config section.
    pub fn config<T: Any + Send + Sync>(&self) -> Result<&T, Error> {
        self.config
            .as_ref()
            .and_then(|c| c.downcast_ref::<T>())
            .ok_or_else(|| Error::internal("plugin config has an unexpected type"))
    }

    /// `<root>/<plugin URI>`; the plugin creates it when it needs it.
    pub fn root(&self) -> PathBuf {
        PathBuf::from(
            self.properties
                .get(properties::ROOT)
                .cloned()
                .unwrap_or_default(),
        )
    }

    /// `<state>/<plugin URI>`; the plugin creates it when it needs it.
    pub fn state(&self) -> PathBuf {
        PathBuf::from(
            self.properties
                .get(properties::STATE)
                .cloned()
                .unwrap_or_default(),
        )
    }

    /// The value of the one loaded plugin of `type`, as `T` (containerd's `GetSingle`).
    pub fn single<T: Any + Send + Sync>(&self, r#type: &str) -> Result<Arc<T>, Error> {
        self.plugins
            .get_single(r#type)?
            .instance()
            .map_err(Clone::clone)?
            .get::<T>()
            .ok_or_else(|| Error::internal(format!("{type} plugin has an unexpected type")))
    }

    /// The plugins initialised so far (and, through the shared set, those that follow).
    pub fn plugins(&self) -> &Set {
        &self.plugins
    }

    /// Asks the daemon to wait for this plugin before reporting ready. A plugin that fails
    /// after registering makes start-up fatal.
    pub fn register_readiness(&mut self) -> ReadyGuard {
        self.register_readiness_for("")
    }

    /// [`InitContext::register_readiness`], saying what the plugin waits for (shown by
    /// `ctrd check` while it is pending).
    pub fn register_readiness_for(&mut self, what: &str) -> ReadyGuard {
        self.registered_readiness = true;
        let name = match (self.uri.is_empty(), what.is_empty()) {
            (true, _) => what.to_string(),
            (false, true) => self.uri.clone(),
            (false, false) => format!("{} ({what})", self.uri),
        };
        self.readiness.register_named(name)
    }

    /// The daemon's readiness registrations (what is still pending, and waiting for it).
    pub fn readiness(&self) -> Readiness {
        self.readiness.clone()
    }

    pub fn registered_readiness(&self) -> bool {
        self.registered_readiness
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_waits_for_every_guard() {
        let readiness = Readiness::new();
        let first = readiness.register();
        let second = readiness.register();
        assert_eq!(readiness.pending(), 2);
        first.done();
        assert_eq!(readiness.pending(), 1);
        let named = readiness.register_named("the disk".into());
        assert_eq!(readiness.waiting_for(), ["", "the disk"]);
        named.done();
        let (tx, rx) = crossbeam_channel::bounded(1);
        readiness.when_ready(move || tx.send(()).expect("send"));
        assert!(rx.try_recv().is_err(), "called with a registration pending");
        // The last one reports ready on another thread; the callback runs there.
        std::thread::spawn(move || second.done())
            .join()
            .expect("join");
        rx.try_recv().expect("called once all are done");
    }

    #[test]
    fn dropped_guard_does_not_block_readiness() {
        let readiness = Readiness::new();
        drop(readiness.register());
        assert_eq!(readiness.pending(), 0);
        let (tx, rx) = crossbeam_channel::bounded(1);
        readiness.when_ready(move || tx.send(()).expect("send"));
        rx.try_recv().expect("called at once");
    }
}
