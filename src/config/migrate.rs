//! Bringing one file's table up to [`CONFIG_VERSION`]: version 1 → 2 turns short plugin names
//! into URIs (in `plugins` keys, `disabled_plugins` and `required_plugins`; `proxy_plugins`
//! are left alone); version 2 → 3 changes nothing in the core schema. After each step every
//! plugin's own migration runs on the file's `plugins` table.

use std::path::Path;

use super::{ConfigError, PluginMigration, CONFIG_VERSION};

/// Migrates `table`, written for version `from` (1 or 2), to [`CONFIG_VERSION`].
pub(super) fn migrate(
    path: &Path,
    table: &mut toml::Table,
    from: i64,
    migrations: &[PluginMigration],
) -> Result<(), ConfigError> {
    for step in from..CONFIG_VERSION {
        if step == 1 {
            v1_to_v2(table);
        }
        if migrations.is_empty() {
            continue;
        }
        let plugins = table
            .entry("plugins")
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let toml::Value::Table(plugins) = plugins else {
            continue;
        };
        for migration in migrations {
            migration(step, plugins).map_err(|message| ConfigError::Migration {
                path: path.to_path_buf(),
                version: step,
                message,
            })?;
        }
    }
    table.insert("version".into(), toml::Value::Integer(CONFIG_VERSION));
    Ok(())
}

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
fn v1_to_v2(table: &mut toml::Table) {
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
            ("task", "io.containerd.runtime.v2.task"),
            ("otlp", "io.containerd.tracing.processor.v1.otlp"),
            ("windows-lcow", "io.containerd.snapshotter.v1.windows-lcow"),
            ("zfs", "io.containerd.snapshotter.v1.zfs"),
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

    fn record(from: i64, plugins: &mut toml::Table) -> Result<(), String> {
        let steps = plugins
            .entry("io.containerd.test.v1.steps")
            .or_insert_with(|| toml::Value::Array(Vec::new()));
        if let toml::Value::Array(list) = steps {
            list.push(toml::Value::Integer(from));
        }
        Ok(())
    }

    fn refuse(_: i64, _: &mut toml::Table) -> Result<(), String> {
        Err("cannot".into())
    }

    #[test]
    fn plugin_migrations_run_once_per_step_after_the_core_one() {
        fn sees_uris(from: i64, plugins: &mut toml::Table) -> Result<(), String> {
            if from == 1 && !plugins.contains_key("io.containerd.grpc.v1.cri") {
                return Err("core migration did not run first".into());
            }
            Ok(())
        }
        let mut v1: toml::Table = toml::from_str("[plugins.cri]\nx = 1\n").expect("toml");
        migrate(Path::new("v1.toml"), &mut v1, 1, &[record, sees_uris]).expect("migrate");
        assert_eq!(v1["version"].as_integer(), Some(3));
        assert_eq!(
            v1["plugins"]["io.containerd.test.v1.steps"],
            toml::Value::from(vec![1i64, 2])
        );
        let mut v2 = toml::Table::new();
        migrate(Path::new("v2.toml"), &mut v2, 2, &[record]).expect("migrate");
        assert_eq!(
            v2["plugins"]["io.containerd.test.v1.steps"],
            toml::Value::from(vec![2i64])
        );
        let mut v3 = toml::Table::new();
        migrate(Path::new("v3.toml"), &mut v3, 3, &[record]).expect("migrate");
        assert!(!v3.contains_key("plugins"));
    }

    #[test]
    fn v2_files_keep_short_names() {
        let mut table: toml::Table = toml::from_str("disabled_plugins = ['cri']\n").expect("toml");
        migrate(Path::new("v2.toml"), &mut table, 2, &[]).expect("migrate");
        assert_eq!(table["disabled_plugins"], toml::Value::from(vec!["cri"]));
    }

    #[test]
    fn a_refusing_plugin_migration_names_file_and_step() {
        let mut table = toml::Table::new();
        let err = migrate(Path::new("/etc/c.toml"), &mut table, 2, &[refuse]).expect_err("refused");
        assert_eq!(
            err.to_string(),
            "/etc/c.toml: migrating plugin configuration from version 2: cannot"
        );
    }
}
