//! `io.containerd.runtime.v2.task`: the runtime v2 shim manager.
//!
//! For each task it creates a [`bundle`], starts the runtime's shim binary ([`shim`]),
//! talks to it over ttrpc, drains its log and watches its process ([`monitor`]), keeps the
//! exits of its processes for every Wait ([`task`]), and cleans up after Delete or after
//! the shim died. On start it recovers the tasks of a previous run in the background
//! ([`recover`]); until that is done the daemon is not ready and task calls for ids not
//! yet recovered answer Unavailable.
//!
//! Threads: calls arrive on gRPC threads; `ctrd-shims` drains logs and sees shims exit
//! (only while there are shims); a waiting future (`crate::waiting`) turns the shims'
//! `/tasks/exit` events into process exits; `ctrd-recover` runs once at start.
//!
//! This file holds the domain types (configuration, create options, timeouts); the
//! manager is [`manager`], its plugin [`plugin`].

pub mod bundle;
pub mod manager;
pub mod monitor;
pub mod plugin;
mod recover;
pub mod shim;
pub mod task;

use std::collections::HashMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::api::mount::Mount;
use crate::api::Any;
use crate::errdefs::Error;
pub use bundle::{Bundle, Exit};
pub use manager::{task_not_found, TaskManager};
pub use task::{Task, WaitResult, Waiter};

/// The plugin type of runtime v2 (containerd's `io.containerd.runtime.v2`).
pub const RUNTIME_V2: &str = "io.containerd.runtime.v2";

/// `[plugins.'io.containerd.runtime.v2.task']`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Platforms the runtime supports (reported by introspection).
    pub platforms: Vec<String>,
    /// Start shims with `SCHED_CORE=1` (core scheduling).
    pub sched_core: bool,
    /// Which containers share a shim: `"none"` (one shim per container), `"namespace"`
    /// (one per namespace) or `"label:<key>"` (one per value of the container label
    /// `<key>`; containers without it get their own). Written only into the bundle's
    /// `config.json` as the runc shim's grouping annotation.
    pub shim_group: String,
    /// Shim binaries by runtime name, used before any search of `PATH`.
    pub shim_paths: HashMap<String, String>,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            platforms: vec![format!("linux/{}", go_arch())],
            sched_core: false,
            shim_group: "none".into(),
            shim_paths: HashMap::new(),
        }
    }
}

fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// How containers are grouped onto shims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShimGroup {
    None,
    Namespace,
    Label(String),
}

impl ShimGroup {
    pub fn parse(text: &str) -> Result<ShimGroup, Error> {
        match text {
            "" | "none" => Ok(ShimGroup::None),
            "namespace" => Ok(ShimGroup::Namespace),
            other => match other.strip_prefix("label:") {
                Some(key) if !key.is_empty() => Ok(ShimGroup::Label(key.to_string())),
                _ => Err(Error::invalid_argument(format!(
                    "shim_group {other:?}: must be \"none\", \"namespace\" or \"label:<key>\""
                ))),
            },
        }
    }

    /// The group of a container, if it shares a shim.
    fn group(&self, namespace: &str, labels: &HashMap<String, String>) -> Option<String> {
        match self {
            ShimGroup::None => None,
            ShimGroup::Namespace => Some(format!("ctrd-{namespace}")),
            ShimGroup::Label(key) => labels
                .get(key)
                .filter(|v| !v.is_empty())
                .map(|v| format!("ctrd-{namespace}-{v}")),
        }
    }
}

/// The `[timeouts]` the manager honours.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// `io.containerd.timeout.shim.load`: connecting to a shim (start and recovery).
    pub load: Duration,
    /// `io.containerd.timeout.shim.cleanup`: the shim binary's `delete`.
    pub cleanup: Duration,
    /// `io.containerd.timeout.shim.shutdown`: the shim's Shutdown call.
    pub shutdown: Duration,
    /// `io.containerd.timeout.task.state`: State calls.
    pub state: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            load: Duration::from_secs(5),
            cleanup: Duration::from_secs(5),
            shutdown: Duration::from_secs(3),
            state: Duration::from_secs(2),
        }
    }
}

impl Timeouts {
    fn from_config(config: &crate::config::Config) -> Timeouts {
        let parsed = crate::config::parse_timeouts(config).unwrap_or_default();
        let mut timeouts = Timeouts::default();
        for (key, slot) in [
            ("io.containerd.timeout.shim.load", &mut timeouts.load),
            ("io.containerd.timeout.shim.cleanup", &mut timeouts.cleanup),
            (
                "io.containerd.timeout.shim.shutdown",
                &mut timeouts.shutdown,
            ),
            ("io.containerd.timeout.task.state", &mut timeouts.state),
        ] {
            if let Some(value) = parsed.get(key) {
                *slot = *value;
            }
        }
        timeouts
    }
}

/// What a task is created from: the container's record and the request.
#[derive(Debug, Clone, Default)]
pub struct CreateOpts {
    /// The OCI spec as stored (JSON), written verbatim to `config.json`.
    pub spec: Vec<u8>,
    pub runtime: String,
    pub runtime_options: Option<Any>,
    /// Options from the Create request; they win over the runtime options.
    pub task_options: Option<Any>,
    pub rootfs: Vec<Mount>,
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
    /// The container's labels (for `shim_group = "label:<key>"`).
    pub labels: HashMap<String, String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shim_groups_parse_and_name_groups() {
        assert_eq!(ShimGroup::parse("none").unwrap(), ShimGroup::None);
        assert_eq!(ShimGroup::parse("namespace").unwrap(), ShimGroup::Namespace);
        assert_eq!(
            ShimGroup::parse("label:app").unwrap(),
            ShimGroup::Label("app".into())
        );
        assert!(ShimGroup::parse("label:").is_err());
        assert!(ShimGroup::parse("pods").is_err());
        let mut labels = HashMap::new();
        assert_eq!(ShimGroup::None.group("default", &labels), None);
        assert_eq!(
            ShimGroup::Namespace.group("default", &labels).as_deref(),
            Some("ctrd-default")
        );
        let by_app = ShimGroup::Label("app".into());
        assert_eq!(by_app.group("default", &labels), None);
        labels.insert("app".into(), "web".into());
        assert_eq!(
            by_app.group("default", &labels).as_deref(),
            Some("ctrd-default-web")
        );
    }

    #[test]
    fn timeouts_come_from_the_config() {
        let mut config = crate::config::Config::default();
        config
            .timeouts
            .insert("io.containerd.timeout.task.state".into(), "7s".into());
        let timeouts = Timeouts::from_config(&config);
        assert_eq!(timeouts.state, Duration::from_secs(7));
        assert_eq!(timeouts.shutdown, Duration::from_secs(3));
    }
}
