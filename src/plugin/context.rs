//! What a plugin's init function receives.

use std::any::Any;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::{Condvar, Mutex};

use super::{properties, Meta, Set};
use crate::errdefs::Error;

/// Counts plugins that asked the daemon to wait for them before it reports ready.
#[derive(Clone, Default)]
pub struct Readiness {
    inner: Arc<(Mutex<usize>, Condvar)>,
}

/// Held by a plugin that has registered readiness; [`ReadyGuard::done`] reports it ready.
pub struct ReadyGuard {
    readiness: Readiness,
    done: bool,
}

impl Readiness {
    pub fn new() -> Self {
        Readiness::default()
    }

    /// Registers one more plugin to wait for.
    pub fn register(&self) -> ReadyGuard {
        *self.inner.0.lock() += 1;
        ReadyGuard {
            readiness: self.clone(),
            done: false,
        }
    }

    /// How many registered plugins have not reported ready yet.
    pub fn pending(&self) -> usize {
        *self.inner.0.lock()
    }

    /// Blocks until every registered plugin has reported ready.
    pub fn wait(&self) {
        let (count, cond) = &*self.inner;
        let mut pending = count.lock();
        while *pending > 0 {
            cond.wait(&mut pending);
        }
    }

    fn release(&self) {
        let (count, cond) = &*self.inner;
        let mut pending = count.lock();
        *pending = pending.saturating_sub(1);
        if *pending == 0 {
            cond.notify_all();
        }
    }
}

impl ReadyGuard {
    pub fn done(mut self) {
        self.done = true;
        self.readiness.release();
    }
}

impl Drop for ReadyGuard {
    fn drop(&mut self) {
        // A guard dropped without `done` (for example by a panicking plugin) must not hold
        // the daemon's readiness forever; the failure itself is reported by the init result.
        if !self.done {
            self.readiness.release();
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
        }
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
        self.registered_readiness = true;
        self.readiness.register()
    }

    pub fn registered_readiness(&self) -> bool {
        self.registered_readiness
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn readiness_waits_for_every_guard() {
        let readiness = Readiness::new();
        let first = readiness.register();
        let second = readiness.register();
        assert_eq!(readiness.pending(), 2);
        first.done();
        assert_eq!(readiness.pending(), 1);
        let (tx, rx) = crossbeam_channel::bounded(1);
        let waiter = {
            let readiness = readiness.clone();
            std::thread::spawn(move || {
                readiness.wait();
                tx.send(()).expect("send");
            })
        };
        assert!(rx.recv_timeout(Duration::from_millis(50)).is_err());
        second.done();
        rx.recv_timeout(Duration::from_secs(5))
            .expect("wait returns once all are done");
        waiter.join().expect("join");
    }

    #[test]
    fn dropped_guard_does_not_block_readiness() {
        let readiness = Readiness::new();
        drop(readiness.register());
        assert_eq!(readiness.pending(), 0);
        readiness.wait();
    }
}
