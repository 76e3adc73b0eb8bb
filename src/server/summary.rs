//! The start-up summary people read: one info line once ctrd is ready, and at debug level one
//! line per plugin with the reason it was skipped or failed.

use std::time::Duration;

use crate::config::Config;
use crate::plugin::{is_skip, Set};

/// `ctrd <version> serving on <sock> (ttrpc <sock>), metrics <addr>, <n> plugins (<k>
/// skipped) in <ms> ms`; `off` for a listener that is not serving, and failures counted
/// beside the skips when there are any.
pub fn startup_line(config: &Config, ttrpc_serving: bool, set: &Set, took: Duration) -> String {
    let (mut loaded, mut skipped, mut failed) = (0, 0, 0);
    for plugin in set.all() {
        match plugin.err() {
            None => loaded += 1,
            Some(err) if is_skip(err) => skipped += 1,
            Some(_) => failed += 1,
        }
    }
    let ttrpc = if ttrpc_serving {
        config.ttrpc.address.as_str()
    } else {
        "off"
    };
    let metrics = if config.metrics.address.is_empty() {
        "off"
    } else {
        config.metrics.address.as_str()
    };
    let failed = if failed > 0 {
        format!(", {failed} failed")
    } else {
        String::new()
    };
    format!(
        "ctrd {} serving on {} (ttrpc {ttrpc}), metrics {metrics}, {loaded} plugins ({skipped} skipped{failed}) in {} ms",
        crate::VERSION,
        config.grpc.address,
        took.as_millis()
    )
}

/// One line per plugin in init order: `<uri>: loaded`, `skipped: <why>` or `failed: <why>`.
pub fn plugin_lines(set: &Set) -> Vec<String> {
    set.all()
        .iter()
        .map(|plugin| match plugin.err() {
            None => format!("plugin {}: loaded", plugin.uri()),
            Some(err) if is_skip(err) => {
                let why = err.message().trim_end_matches(crate::plugin::SKIP_MARKER);
                let why = why.trim_end_matches(": ").trim();
                let why = if why.is_empty() {
                    "no reason given"
                } else {
                    why
                };
                format!("plugin {}: skipped: {why}", plugin.uri())
            }
            Some(err) => format!("plugin {}: failed: {}", plugin.uri(), err.message()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::errdefs::Error;
    use crate::plugin::{skip, Instance, Meta, Plugin};
    use std::sync::Arc;

    fn plugin(id: &str, result: Result<Instance, Error>) -> Plugin {
        Plugin {
            r#type: "io.containerd.test.v1".into(),
            id: id.into(),
            requires: Vec::new(),
            meta: Meta::default(),
            config: None,
            result,
        }
    }

    #[test]
    fn one_line_for_people_and_one_per_plugin_for_debugging() {
        let set = Set::new();
        set.add(plugin("a", Ok(Instance::new(Arc::new(1u8)))))
            .expect("add");
        set.add(plugin("b", Err(skip("no address configured"))))
            .expect("add");
        set.add(plugin("c", Err(Error::internal("disk on fire"))))
            .expect("add");
        let mut config = Config::default();
        config.grpc.address = "/run/ctrd/ctrd.sock".into();
        config.ttrpc.address = "/run/ctrd/ctrd.sock.ttrpc".into();
        let line = startup_line(&config, true, &set, Duration::from_millis(12));
        assert_eq!(
            line,
            format!(
                "ctrd {} serving on /run/ctrd/ctrd.sock (ttrpc /run/ctrd/ctrd.sock.ttrpc), metrics off, 1 plugins (1 skipped, 1 failed) in 12 ms",
                crate::VERSION
            )
        );
        config.metrics.address = "127.0.0.1:1338".into();
        assert!(startup_line(&config, false, &set, Duration::ZERO)
            .contains("(ttrpc off), metrics 127.0.0.1:1338,"));
        assert_eq!(
            plugin_lines(&set),
            [
                "plugin io.containerd.test.v1.a: loaded",
                "plugin io.containerd.test.v1.b: skipped: no address configured",
                "plugin io.containerd.test.v1.c: failed: disk on fire",
            ]
        );
    }
}
