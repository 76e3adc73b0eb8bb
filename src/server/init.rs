//! Plugin initialisation, run on the `ctrd-init` thread so signals are handled meanwhile.

use std::collections::{BTreeMap, HashSet};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::builtins;
use super::ServerError;
use crate::config::Config;
use crate::errdefs::Error;
use crate::plugin::{
    is_skip, properties, types, InitContext, Plugin, Readiness, Registration, Registry, Set,
};
use crate::services::deprecations::{self, Deprecations};

/// Every registration ctrd knows, built-ins first.
pub fn registry() -> Result<Registry, ServerError> {
    let mut registry = Registry::new();
    for registration in builtins::registrations() {
        registry.register(registration)?;
    }
    Ok(registry)
}

/// Initialises every enabled plugin in graph order into a new [`Set`]. Stops early (closing
/// what it started) when `cancel` is set or a failure is fatal.
pub fn init_plugins(
    config: Arc<Config>,
    readiness: &Readiness,
    cancel: &AtomicBool,
) -> Result<Set, ServerError> {
    let disabled: HashSet<&str> = config.disabled_plugins.iter().map(String::as_str).collect();
    // A proxy may take the place of a built-in that is disabled (e.g. a remote `native`).
    let proxies = crate::proxy::registrations(&config, &crate::proxy::Channels::default());
    let replaced: HashSet<String> = proxies
        .iter()
        .map(Registration::uri)
        .filter(|uri| disabled.contains(uri.as_str()))
        .collect();
    let mut registry = Registry::new();
    for registration in builtins::registrations() {
        if !replaced.contains(&registration.uri()) {
            registry.register(registration)?;
        }
    }
    for proxy in proxies {
        let uri = proxy.uri();
        let replacing = replaced.contains(&uri);
        registry.register(proxy)?;
        if replacing {
            log::info!("proxy plugin {uri} replaces the disabled built-in");
        }
    }
    let disabled: HashSet<&str> = disabled
        .into_iter()
        .filter(|uri| !replaced.contains(*uri))
        .collect();
    let order = registry.graph(|r| disabled.contains(r.uri().as_str()))?;
    let set = Set::new();
    let outcome = init_in_order(&config, &order, &set, readiness, cancel);
    if let Err(err) = outcome {
        close_all(&set);
        return Err(err);
    }
    Ok(set)
}

fn init_in_order(
    config: &Arc<Config>,
    order: &[&Registration],
    set: &Set,
    readiness: &Readiness,
    cancel: &AtomicBool,
) -> Result<(), ServerError> {
    let required: HashSet<&str> = config.required_plugins.iter().map(String::as_str).collect();
    let mut seen = HashSet::new();
    for registration in order {
        if cancel.load(Ordering::SeqCst) {
            return Err(ServerError::Cancelled);
        }
        let uri = registration.uri();
        seen.insert(uri.clone());
        log::info!("loading plugin id={uri} type={}", registration.r#type);
        let (decoded, table) = match &registration.config {
            Some(spec) => {
                let (value, table) = spec
                    .decode(&uri, config.plugins.get(&uri))
                    .map_err(|err| ServerError::PluginConfig(uri.clone(), err))?;
                (Some(value), Some(table))
            }
            None => (None, None),
        };
        let mut ic = InitContext::new(
            plugin_properties(config, &uri),
            decoded,
            config.clone(),
            set.clone(),
            readiness.clone(),
        )
        .for_plugin(&uri);
        let result = catch_unwind(AssertUnwindSafe(|| (registration.init)(&mut ic)))
            .unwrap_or_else(|_| Err(Error::internal("plugin init panicked")));
        if let Err(err) = &result {
            if is_skip(err) {
                log::info!("skip loading plugin id={uri}: {err}");
            } else {
                log::warn!("failed to load plugin id={uri}: {err}");
                if required.contains(uri.as_str()) {
                    return Err(ServerError::RequiredPlugin(uri, err.clone()));
                }
                if ic.registered_readiness() {
                    return Err(ServerError::ReadinessFailed(uri, err.clone()));
                }
            }
        }
        set.add(Plugin {
            r#type: registration.r#type.clone(),
            id: registration.id.clone(),
            requires: registration.requires.clone(),
            meta: ic.meta,
            config: table,
            result,
        })
        .map_err(|err| ServerError::Plugin(uri.clone(), err))?;
    }
    let missing: Vec<&str> = config
        .required_plugins
        .iter()
        .map(String::as_str)
        .filter(|uri| !seen.contains(*uri))
        .collect();
    if !missing.is_empty() {
        return Err(ServerError::RequiredMissing(missing.join(" ")));
    }
    if !config.plugin_dir.is_empty() {
        log::warn!(
            "plugin_dir {:?} is ignored: ctrd never loads dynamic plugins; use external (proxy) plugins instead",
            config.plugin_dir
        );
        if let Some(recorder) = set.value::<Deprecations>(types::WARNING, "deprecations") {
            recorder.emit(deprecations::GO_PLUGIN_LIBRARY);
        }
    }
    Ok(())
}

fn plugin_properties(config: &Config, uri: &str) -> BTreeMap<String, String> {
    let join = |base: &str| {
        std::path::Path::new(base)
            .join(uri)
            .to_string_lossy()
            .into_owned()
    };
    BTreeMap::from([
        (properties::ROOT.to_string(), join(&config.root)),
        (properties::STATE.to_string(), join(&config.state)),
        (
            properties::GRPC_ADDRESS.to_string(),
            config.grpc.address.clone(),
        ),
        (
            properties::TTRPC_ADDRESS.to_string(),
            config.ttrpc.address.clone(),
        ),
    ])
}

/// Closes every initialised plugin in reverse init order.
pub fn close_all(set: &Set) {
    for plugin in set.all().iter().rev() {
        if let Ok(instance) = plugin.instance() {
            log::debug!("closing plugin id={}", plugin.uri());
            instance.close();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_config(dir: &std::path::Path) -> Config {
        Config {
            root: dir.join("root").to_string_lossy().into_owned(),
            state: dir.join("state").to_string_lossy().into_owned(),
            ..Config::default()
        }
    }

    #[test]
    fn builtins_initialise_in_dependency_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let set = init_plugins(
            Arc::new(test_config(dir.path())),
            &Readiness::new(),
            &AtomicBool::new(false),
        )
        .expect("init");
        let uris: Vec<String> = set.all().iter().map(|p| p.uri()).collect();
        assert_eq!(
            uris,
            [
                "io.containerd.warning.v1.deprecations",
                "io.containerd.event.v1.exchange",
                "io.containerd.grpc.v1.events",
                "io.containerd.content.v1.content",
                "io.containerd.snapshotter.v1.native",
                "io.containerd.snapshotter.v1.overlayfs",
                "io.containerd.metadata.v1.bolt",
                "io.containerd.service.v1.content-service",
                "io.containerd.service.v1.snapshots-service",
                "io.containerd.service.v1.namespaces-service",
                "io.containerd.gc.v1.scheduler",
                "io.containerd.service.v1.images-service",
                "io.containerd.service.v1.containers-service",
                "io.containerd.differ.v1.walking",
                "io.containerd.service.v1.diff-service",
                "io.containerd.runtime.v2.task",
                "io.containerd.service.v1.tasks-service",
                "io.containerd.service.v1.introspection-service",
                "io.containerd.grpc.v1.content",
                "io.containerd.grpc.v1.snapshots",
                "io.containerd.grpc.v1.namespaces",
                "io.containerd.lease.v1.manager",
                "io.containerd.grpc.v1.leases",
                "io.containerd.grpc.v1.images",
                "io.containerd.grpc.v1.containers",
                "io.containerd.grpc.v1.diff",
                "io.containerd.grpc.v1.tasks",
                "io.containerd.grpc.v1.introspection",
                "io.containerd.grpc.v1.version",
                "io.containerd.grpc.v1.healthcheck",
            ]
        );
        assert!(set.all().iter().all(|p| p.err().is_none()));
    }

    #[test]
    fn disabled_plugins_are_left_out() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = test_config(dir.path());
        config.disabled_plugins = vec!["io.containerd.grpc.v1.version".into()];
        let set = init_plugins(Arc::new(config), &Readiness::new(), &AtomicBool::new(false))
            .expect("init");
        assert!(set.get(types::GRPC, "version").is_none());
        assert!(set.get(types::GRPC, "healthcheck").is_some());
    }

    #[test]
    fn missing_required_plugin_is_fatal() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = test_config(dir.path());
        config.required_plugins = vec!["io.containerd.grpc.v1.nope".into()];
        let err = init_plugins(Arc::new(config), &Readiness::new(), &AtomicBool::new(false))
            .expect_err("missing");
        assert_eq!(
            err.to_string(),
            "required plugin [io.containerd.grpc.v1.nope] not included"
        );
    }

    #[test]
    fn plugin_dir_records_the_deprecation() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = test_config(dir.path());
        config.plugin_dir = dir.path().join("plugins").to_string_lossy().into_owned();
        let set = init_plugins(Arc::new(config), &Readiness::new(), &AtomicBool::new(false))
            .expect("init");
        let recorder = set
            .value::<Deprecations>(types::WARNING, "deprecations")
            .expect("recorder");
        assert_eq!(recorder.warnings()[0].id, deprecations::GO_PLUGIN_LIBRARY);
    }

    #[test]
    fn cancelled_init_stops() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = init_plugins(
            Arc::new(test_config(dir.path())),
            &Readiness::new(),
            &AtomicBool::new(true),
        )
        .expect_err("cancelled");
        assert!(matches!(err, ServerError::Cancelled));
    }
}
