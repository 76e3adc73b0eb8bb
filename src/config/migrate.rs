//! Version 1 → 2: short plugin names become URIs (in `plugins` keys, `disabled_plugins`
//! and `required_plugins`). Version 2 → 3 changes nothing in the core schema; plugin
//! migrations run for both steps.

const SNAPSHOTTERS: [&str; 6] = ["aufs", "btrfs", "devmapper", "native", "overlayfs", "zfs"];

/// The URI a version-1 short plugin name stands for.
pub fn short_id_to_uri(name: &str) -> String {
    if name.contains('.') {
        return name.to_string();
    }
    let known = match name {
        "cri" => Some("io.containerd.grpc.v1.cri"),
        "cgroups" => Some("io.containerd.monitor.v1.cgroups"),
        "linux" => Some("io.containerd.runtime.v1.linux"),
        "scheduler" => Some("io.containerd.gc.v1.scheduler"),
        "bolt" => Some("io.containerd.metadata.v1.bolt"),
        "task" => Some("io.containerd.runtime.v2.task"),
        "opt" => Some("io.containerd.internal.v1.opt"),
        "restart" => Some("io.containerd.internal.v1.restart"),
        "tracing" => Some("io.containerd.internal.v1.tracing"),
        "otlp" => Some("io.containerd.tracing.processor.v1.otlp"),
        _ => None,
    };
    if let Some(uri) = known {
        return uri.to_string();
    }
    if SNAPSHOTTERS.contains(&name) {
        return format!("io.containerd.snapshotter.v1.{name}");
    }
    if name.ends_with("-service") {
        return format!("io.containerd.service.v1.{name}");
    }
    let uri = if name == "windows" || name == "windows-lcow" {
        format!("io.containerd.snapshotter.v1.{name}")
    } else {
        format!("io.containerd.grpc.v1.{name}")
    };
    log::warn!("Ambiguous {name} plugin in v1 config, treating as {uri}");
    uri
}

/// Rewrites a version-1 file table in place.
pub fn v1_to_v2(table: &mut toml::Table) {
    if let Some(toml::Value::Table(plugins)) = table.get_mut("plugins") {
        let old = std::mem::take(plugins);
        for (name, section) in old {
            plugins.insert(short_id_to_uri(&name), section);
        }
    }
    for key in ["disabled_plugins", "required_plugins"] {
        if let Some(toml::Value::Array(list)) = table.get_mut(key) {
            for item in list.iter_mut() {
                if let toml::Value::String(name) = item {
                    *name = short_id_to_uri(name);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_become_uris() {
        for (short, uri) in [
            ("cri", "io.containerd.grpc.v1.cri"),
            ("btrfs", "io.containerd.snapshotter.v1.btrfs"),
            ("bolt", "io.containerd.metadata.v1.bolt"),
            ("scheduler", "io.containerd.gc.v1.scheduler"),
            ("diff-service", "io.containerd.service.v1.diff-service"),
            ("foo", "io.containerd.grpc.v1.foo"),
            ("io.containerd.x.v1.y", "io.containerd.x.v1.y"),
        ] {
            assert_eq!(short_id_to_uri(short), uri);
        }
    }

    #[test]
    fn migrates_plugins_and_lists() {
        let mut table: toml::Table = toml::from_str(
            "disabled_plugins = ['cri', 'btrfs', 'foo']\nrequired_plugins = ['bolt']\n[plugins.bolt]\nno_sync = true\n",
        )
        .expect("toml");
        v1_to_v2(&mut table);
        let list = |k: &str| -> Vec<String> {
            table[k]
                .as_array()
                .expect("array")
                .iter()
                .map(|v| v.as_str().expect("str").to_string())
                .collect()
        };
        assert_eq!(
            list("disabled_plugins"),
            [
                "io.containerd.grpc.v1.cri",
                "io.containerd.snapshotter.v1.btrfs",
                "io.containerd.grpc.v1.foo"
            ]
        );
        assert_eq!(list("required_plugins"), ["io.containerd.metadata.v1.bolt"]);
        assert_eq!(
            table["plugins"]["io.containerd.metadata.v1.bolt"]["no_sync"].as_bool(),
            Some(true)
        );
    }
}
