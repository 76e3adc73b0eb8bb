//! `io.containerd.warning.v1.deprecations`: records deprecated features in use, for
//! `Introspection/Server` (and thus `ctr deprecations list`) to report.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use parking_lot::Mutex;

use crate::plugin::{types, Instance, Registration};

/// The deprecation id for a configured `plugin_dir` (containerd's id).
pub const GO_PLUGIN_LIBRARY: &str = "io.containerd.deprecation/go-plugin-library";

/// Every deprecation ctrd can report, with our message for it.
const KNOWN: &[(&str, &str)] = &[(
    GO_PLUGIN_LIBRARY,
    "plugin_dir is set, but ctrd never loads dynamic (in-process) plugins; \
     extend ctrd with external proxy plugins instead and remove plugin_dir",
)];

/// One recorded deprecation.
#[derive(Debug, Clone, PartialEq)]
pub struct Warning {
    pub id: String,
    pub message: String,
    pub last_occurrence: SystemTime,
}

/// The recorder; the last occurrence of each id is kept.
#[derive(Default)]
pub struct Deprecations {
    seen: Mutex<BTreeMap<&'static str, SystemTime>>,
}

impl Deprecations {
    /// Records `id` now; an id ctrd does not know is logged and ignored.
    pub fn emit(&self, id: &str) {
        match KNOWN.iter().find(|(known, _)| *known == id) {
            Some((known, _)) => {
                self.seen.lock().insert(known, SystemTime::now());
            }
            None => log::warn!("invalid deprecation warning id={id}"),
        }
    }

    pub fn warnings(&self) -> Vec<Warning> {
        self.seen
            .lock()
            .iter()
            .map(|(id, at)| Warning {
                id: id.to_string(),
                message: message(id).to_string(),
                last_occurrence: *at,
            })
            .collect()
    }
}

fn message(id: &str) -> &'static str {
    KNOWN
        .iter()
        .find(|(known, _)| *known == id)
        .map(|(_, m)| *m)
        .unwrap_or("")
}

/// `io.containerd.warning.v1.deprecations`.
pub fn registration() -> Registration {
    Registration::new(types::WARNING, "deprecations", |_ic| {
        Ok(Instance::new(Arc::new(Deprecations::default())))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_known_ids_once_with_latest_time() {
        let d = Deprecations::default();
        d.emit(GO_PLUGIN_LIBRARY);
        let first = d.warnings()[0].last_occurrence;
        d.emit(GO_PLUGIN_LIBRARY);
        let warnings = d.warnings();
        assert_eq!(warnings.len(), 1);
        assert_eq!(warnings[0].id, GO_PLUGIN_LIBRARY);
        assert!(warnings[0].last_occurrence >= first);
        assert!(warnings[0].message.contains("plugin_dir"));
    }

    #[test]
    fn unknown_ids_are_ignored() {
        let d = Deprecations::default();
        d.emit("io.containerd.deprecation/not-a-thing");
        assert!(d.warnings().is_empty());
    }
}
