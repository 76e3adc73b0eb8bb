//! Loading a config file with its imports.
//!
//! 1. Start from [`Config::default`] as a table.
//! 2. Take the next file from a breadth-first queue that starts with the given file; a file
//!    already loaded (same cleaned absolute path) is skipped, so import cycles end.
//! 3. Read and parse it; a syntax or type error is fatal with row and column; keys the schema
//!    does not know are warned about and ignored.
//! 4. Check its version (missing or 0 means 1, above [`MAX_CONFIG_VERSION`] is an error) and
//!    migrate it on its own, warning that it was migrated; a version-4 file's server
//!    sections are mapped onto the top-level tables ctrd works with (`v4.rs`).
//! 5. Merge it over what is loaded so far (`merge.rs`), then queue the files its own
//!    `imports` name, resolved against its directory (`imports.rs`).
//! 6. Decode the merged table and check the plugin URIs in `disabled_plugins` and
//!    `required_plugins`.

use std::collections::{HashSet, VecDeque};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{imports, keys, merge, migrate, v4};
use super::{Config, ConfigError, PluginMigration, CONFIG_VERSION, MAX_CONFIG_VERSION};

/// Loads `path` (which must exist), resolves imports, migrates every file to
/// [`CONFIG_VERSION`], merges, validates, and returns the result over [`Config::default`].
pub fn load(path: &Path, migrations: &[PluginMigration]) -> Result<Config, ConfigError> {
    let mut merged = toml::Table::try_from(Config::default())
        .map_err(|err| ConfigError::Encode(err.to_string()))?;
    let mut loaded = HashSet::new();
    let mut pending = VecDeque::from([path.to_path_buf()]);
    while let Some(file) = pending.pop_front() {
        if !loaded.insert(identity(&file)) {
            continue;
        }
        let table = read_file(&file, migrations)?;
        let imports = string_list(&table, "imports");
        // Merging skips empty values, but a file that sets `root = ""` means it: the
        // daemon then refuses to start, as containerd does, rather than use the default.
        let emptied: Vec<&str> = ["root", "state"]
            .into_iter()
            .filter(|key| table.get(*key).and_then(toml::Value::as_str) == Some(""))
            .collect();
        merge::merge(&mut merged, table);
        for key in emptied {
            merged.insert(key.to_string(), toml::Value::String(String::new()));
        }
        pending.extend(imports::resolve(&file, &imports)?);
    }
    // Taken out before decoding: a table read back from a `Value` would turn datetimes into
    // strings.
    let plugins = match merged.remove("plugins") {
        Some(toml::Value::Table(plugins)) => plugins,
        _ => toml::Table::new(),
    };
    let mut config =
        Config::deserialize(toml::Value::Table(merged)).map_err(|err| ConfigError::Decode {
            path: path.to_path_buf(),
            message: err.message().trim().to_string(),
        })?;
    config.plugins = plugins;
    validate(&config)?;
    Ok(config)
}

/// The same file however it was named.
fn identity(path: &Path) -> PathBuf {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    imports::clean(&absolute)
}

/// The largest config file read (the default one is about 2 KiB).
pub const MAX_FILE_SIZE: u64 = 1 << 20;

/// A config file's text: a regular file (not `/dev/zero`, a FIFO or a directory) of at most
/// [`MAX_FILE_SIZE`] bytes.
fn read_text(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    // Non-blocking, so that opening a FIFO does not wait for a writer.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    let too_big = || {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("file is larger than {MAX_FILE_SIZE} bytes"),
        )
    };
    if meta.len() > MAX_FILE_SIZE {
        return Err(too_big());
    }
    let mut text = String::new();
    file.take(MAX_FILE_SIZE + 1).read_to_string(&mut text)?;
    if text.len() as u64 > MAX_FILE_SIZE {
        return Err(too_big());
    }
    Ok(text)
}

/// One file, checked and migrated to a table of the current version.
fn read_file(path: &Path, migrations: &[PluginMigration]) -> Result<toml::Table, ConfigError> {
    let text = read_text(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mut table = parse(path, &text)?;
    let version = match table.get("version").and_then(toml::Value::as_integer) {
        Some(v) if v > 0 => v,
        _ => 1,
    };
    if version > MAX_CONFIG_VERSION {
        return Err(ConfigError::Version {
            max: MAX_CONFIG_VERSION,
            got: version,
        });
    }
    if version == 4 {
        v4::into_core(path, &mut table);
    }
    if version < CONFIG_VERSION {
        migrate::migrate(path, &mut table, version, migrations)?;
        log::warn!(
            "Configuration migrated from version {version}, use `ctrd config migrate` to avoid migration file={}",
            path.display()
        );
    }
    Ok(table)
}

/// Parses `text`, checks every known key's type against the schema and warns about the
/// keys the schema does not have.
fn parse(path: &Path, text: &str) -> Result<toml::Table, ConfigError> {
    let at = |err: toml::de::Error| syntax_error(path, text, err);
    let table: toml::Table = toml::from_str(text).map_err(at)?;
    let mut unknown = Vec::new();
    let document = toml::Deserializer::parse(text).map_err(at)?;
    let _: Config = serde_ignored::deserialize(document, |key| unknown.push(keys::segments(&key)))
        .map_err(at)?;
    keys::warn_unknown(path, text, &unknown);
    Ok(table)
}

fn syntax_error(path: &Path, text: &str, err: toml::de::Error) -> ConfigError {
    let message = err.message().trim().to_string();
    match err.span() {
        Some(span) => {
            let (row, column) = keys::row_column(text, span.start);
            ConfigError::Syntax {
                path: path.to_path_buf(),
                row,
                column,
                message,
            }
        }
        None => ConfigError::Decode {
            path: path.to_path_buf(),
            message,
        },
    }
}

fn validate(config: &Config) -> Result<(), ConfigError> {
    if config.version > MAX_CONFIG_VERSION {
        return Err(ConfigError::Version {
            max: MAX_CONFIG_VERSION,
            got: config.version,
        });
    }
    for (kind, list) in [
        ("disabled", &config.disabled_plugins),
        ("required", &config.required_plugins),
    ] {
        if let Some(bad) = list.iter().find(|uri| !uri.contains('.')) {
            return Err(ConfigError::PluginUri {
                kind,
                uri: bad.clone(),
            });
        }
    }
    Ok(())
}

fn string_list(table: &toml::Table, key: &str) -> Vec<String> {
    table
        .get(key)
        .and_then(toml::Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::super::testlog::warnings;
    use super::super::{decode_plugin, ProxyPlugin, StreamProcessor, DEFAULT_IMPORTS};
    use super::*;
    use std::fs;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).expect("mkdir");
        }
        fs::write(&path, text).expect("write");
        path
    }

    fn load_text(text: &str) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().expect("tempdir");
        load(&write(dir.path(), "config.toml", text), &[])
    }

    #[test]
    fn imports_must_be_small_regular_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fifo = dir.path().join("fifo.toml");
        crate::sys::mknod(&fifo, libc::S_IFIFO | 0o600, 0, 0).expect("mkfifo");
        let big = write(
            dir.path(),
            "big.toml",
            &"#".repeat(MAX_FILE_SIZE as usize + 1),
        );
        for (import, why) in [
            (PathBuf::from("/dev/zero"), "not a regular file".to_string()),
            (fifo, "not a regular file".to_string()),
            (dir.path().to_path_buf(), "not a regular file".to_string()),
            (big, format!("file is larger than {MAX_FILE_SIZE} bytes")),
        ] {
            let main = write(
                dir.path(),
                "main.toml",
                &format!("version = 3\nimports = ['{}']\n", import.display()),
            );
            let err = load(&main, &[]).expect_err("refused");
            assert_eq!(
                err.to_string(),
                format!("failed to load TOML from {}: {why}", import.display())
            );
        }
    }

    #[test]
    fn an_import_glob_that_would_walk_the_filesystem_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        for d in 0..70 {
            for f in 0..70 {
                write(dir.path(), &format!("d{d}/f{f}.toml"), "version = 3\n");
            }
        }
        let main = write(
            dir.path(),
            "main.toml",
            &format!(
                "version = 3\nimports = ['{}/*/*.toml']\n",
                dir.path().display()
            ),
        );
        let err = load(&main, &[]).expect_err("too broad");
        assert!(
            matches!(
                err,
                ConfigError::PatternTooBroad {
                    max: imports::MAX_GLOB_ENTRIES,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn an_explicitly_empty_root_or_state_is_kept_empty() {
        let config = load_text("version = 3\nroot = ''\n").expect("load");
        assert_eq!(config.root, "");
        assert_eq!(config.state, "/run/containerd");
        let config = load_text("version = 3\nstate = ''\n").expect("load");
        assert_eq!(config.state, "");
        // A later file may still set it.
        let dir = tempfile::tempdir().expect("tempdir");
        write(dir.path(), "extra.toml", "version = 3\nroot = '/later'\n");
        let main = write(
            dir.path(),
            "main.toml",
            "version = 3\nroot = ''\nimports = ['extra.toml']\n",
        );
        assert_eq!(load(&main, &[]).expect("load").root, "/later");
    }

    #[test]
    fn single_file_keeps_defaults_for_the_rest() {
        let config = load_text(
            "version = 2\nroot = '/var/lib/containerd'\n\
             [stream_processors.'io.containerd.processor.v1.pigz']\n\
             accepts = ['application/vnd.docker.image.rootfs.diff.tar.gzip']\npath = 'unpigz'\n\
             [grpc]\naddress = '/x.sock'\n",
        )
        .expect("load");
        assert_eq!(config.version, 3);
        assert_eq!(config.root, "/var/lib/containerd");
        assert_eq!(config.state, "/run/containerd");
        assert_eq!(config.grpc.address, "/x.sock");
        assert_eq!(config.grpc.max_recv_message_size, 16 << 20);
        assert_eq!(config.grpc.max_send_message_size, 16 << 20);
        assert_eq!(config.imports, [DEFAULT_IMPORTS]);
        assert_eq!(config.timeouts, Config::default().timeouts);
        assert_eq!(
            config.stream_processors["io.containerd.processor.v1.pigz"],
            StreamProcessor {
                accepts: vec!["application/vnd.docker.image.rootfs.diff.tar.gzip".into()],
                path: "unpigz".into(),
                ..StreamProcessor::default()
            }
        );
        assert_eq!(config.stream_processors.len(), 3, "defaults kept per key");
    }

    #[test]
    fn an_empty_file_is_the_defaults() {
        assert_eq!(load_text("").expect("load"), Config::default());
    }

    #[test]
    fn imports_load_breadth_first_and_merge() {
        let dir = tempfile::tempdir().expect("tempdir");
        let main = write(
            dir.path(),
            "main.toml",
            "version = 3\noom_score = 1\nimports = ['conf.d/*.toml', 'extra.toml']\n\
             disabled_plugins = ['io.containerd.a.v1.x']\n\
             [plugins.'io.containerd.grpc.v1.cri'.containerd]\nsnapshotter = 'overlayfs'\ndefault = 'runc'\n\
             [timeouts]\n'io.containerd.timeout.shim.load' = '9s'\n\
             [proxy_plugins.p]\ntype = 'snapshot'\naddress = '/a.sock'\nplatform = 'linux/amd64'\n",
        );
        write(
            dir.path(),
            "conf.d/20-second.toml",
            "version = 3\nroot = '/second'\nimports = ['../deep.toml']\n",
        );
        write(
            dir.path(),
            "conf.d/10-first.toml",
            "version = 3\noom_score = 0\nroot = '/first'\nstate = '/first-state'\n\
             disabled_plugins = ['io.containerd.a.v1.x', 'io.containerd.b.v1.y']\n\
             [plugins.'io.containerd.grpc.v1.cri'.containerd]\nsnapshotter = 'native'\n",
        );
        write(dir.path(), "deep.toml", "version = 3\nstate = '/deep'\n");
        write(
            dir.path(),
            "extra.toml",
            "version = 3\nimports = ['main.toml']\nstate = '/extra'\n\
             [proxy_plugins.p]\naddress = '/b.sock'\n\
             [timeouts]\n'io.containerd.timeout.shim.cleanup' = '1s'\n",
        );
        let config = load(&main, &[]).expect("load");
        assert_eq!(config.oom_score, 1, "zero never overrides");
        assert_eq!(config.root, "/second", "globs load in sorted order");
        assert_eq!(config.state, "/deep", "nested imports load last");
        assert_eq!(
            config.disabled_plugins,
            ["io.containerd.a.v1.x", "io.containerd.b.v1.y"]
        );
        let cri = &config.plugins["io.containerd.grpc.v1.cri"]["containerd"];
        assert_eq!(cri["snapshotter"].as_str(), Some("native"));
        assert_eq!(cri["default"].as_str(), Some("runc"));
        assert_eq!(config.timeouts["io.containerd.timeout.shim.load"], "9s");
        assert_eq!(config.timeouts["io.containerd.timeout.shim.cleanup"], "1s");
        assert_eq!(config.timeouts["io.containerd.timeout.task.state"], "2s");
        assert_eq!(
            config.proxy_plugins["p"],
            ProxyPlugin {
                address: "/b.sock".into(),
                ..ProxyPlugin::default()
            },
            "entries are replaced whole"
        );
        assert_eq!(
            config.imports,
            [
                DEFAULT_IMPORTS,
                "conf.d/*.toml",
                "extra.toml",
                "../deep.toml",
                "main.toml"
            ]
        );
    }

    #[test]
    fn sparse_grpc_keys_in_an_import_keep_the_rest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let main = write(
            dir.path(),
            "main.toml",
            "version = 3\nimports = ['grpc.toml']\n[grpc]\naddress = '/main.sock'\nuid = 7\n",
        );
        write(
            dir.path(),
            "grpc.toml",
            "version = 3\n[grpc]\nmax_recv_message_size = 1024\n",
        );
        let config = load(&main, &[]).expect("load");
        assert_eq!(config.grpc.address, "/main.sock");
        assert_eq!(config.grpc.uid, 7);
        assert_eq!(config.grpc.max_recv_message_size, 1024);
        assert_eq!(config.grpc.max_send_message_size, 16 << 20);
    }

    #[test]
    fn missing_plain_import_is_an_error_but_an_empty_glob_is_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ok = write(
            dir.path(),
            "ok.toml",
            "version = 3\nimports = ['nothing/*.toml']\n",
        );
        load(&ok, &[]).expect("empty glob is fine");
        let bad = write(
            dir.path(),
            "bad.toml",
            "version = 3\nimports = ['./sub/../missing.toml']\n",
        );
        let err = load(&bad, &[]).expect_err("missing import");
        let want = format!(
            "failed to load TOML from {}: No such file or directory (os error 2)",
            dir.path().join("missing.toml").display()
        );
        assert_eq!(err.to_string(), want);
    }

    #[test]
    fn a_missing_main_file_names_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("none.toml");
        let err = load(&path, &[]).expect_err("missing");
        assert!(matches!(err, ConfigError::Read { .. }), "{err:?}");
        assert!(err.to_string().contains("none.toml"), "{err}");
    }

    #[test]
    fn circular_imports_load_each_file_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data1 = write(
            dir.path(),
            "data1.toml",
            "version = 2\nroot = '/var/lib/containerd'\nimports = ['data2.toml', 'data1.toml']\n",
        );
        write(
            dir.path(),
            "data2.toml",
            "disabled_plugins = ['io.containerd.v1.xyz']\nimports = ['./data1.toml', 'data2.toml']\n\
             required_plugins = ['io.containerd.b.v1.b']\n",
        );
        let config = load(&data1, &[]).expect("load");
        assert_eq!(config.version, 3);
        assert_eq!(config.root, "/var/lib/containerd");
        assert_eq!(config.disabled_plugins, ["io.containerd.v1.xyz"]);
        assert_eq!(config.required_plugins, ["io.containerd.b.v1.b"]);
        assert_eq!(
            config.imports,
            [DEFAULT_IMPORTS, "data2.toml", "data1.toml", "./data1.toml"]
        );
    }

    #[test]
    fn an_import_may_have_a_higher_version_than_its_root() {
        let dir = tempfile::tempdir().expect("tempdir");
        let main = write(
            dir.path(),
            "data1.toml",
            "version = 2\nroot = '/var/lib/containerd'\nimports = ['data2.toml']\n",
        );
        write(
            dir.path(),
            "data2.toml",
            "version = 3\ndisabled_plugins = ['io.containerd.v1.xyz']\n",
        );
        let config = load(&main, &[]).expect("load");
        assert_eq!(config.version, 3);
        assert_eq!(config.root, "/var/lib/containerd");
        assert_eq!(config.disabled_plugins, ["io.containerd.v1.xyz"]);
    }

    #[test]
    fn an_import_above_the_supported_version_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(dir.path(), "next.toml", "version = 5\n");
        let main = write(
            dir.path(),
            "main.toml",
            "version = 3\nimports = ['next.toml']\n",
        );
        assert_eq!(
            load(&main, &[]).expect_err("v5").to_string(),
            "expected containerd config version equal to or less than `4`, got `5`"
        );
    }

    #[test]
    fn version_five_is_refused() {
        assert_eq!(
            load_text("version = 5\n").expect_err("v5").to_string(),
            "expected containerd config version equal to or less than `4`, got `5`"
        );
    }

    #[test]
    fn version_four_maps_onto_the_same_listeners() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(
            dir.path(),
            "v3.toml",
            "version = 3\n[grpc]\ngid = 5\n[debug]\nlevel = 'debug'\n",
        );
        let main = write(
            dir.path(),
            "main.toml",
            "version = 4\nimports = ['v3.toml']\n\
             [debug]\nlevel = 'info'\nlog_trace_id = true\n\
             [plugins.'io.containerd.server.v1.grpc']\naddress = '/run/v4/c.sock'\nuid = 0\n\
             [plugins.'io.containerd.server.v1.ttrpc']\naddress = '/run/v4/t.sock'\n\
             [plugins.'io.containerd.server.v1.debug']\naddress = '/run/v4/debug.sock'\n\
             [plugins.'io.containerd.server.v1.metrics']\naddress = '127.0.0.1:1338'\n\
             [plugins.'io.containerd.gc.v1.scheduler']\nstartup_delay = '1s'\n",
        );
        let (config, warned) = warnings(|| load(&main, &[]).expect("load"));
        assert!(warned.is_empty(), "a v4 file is not migrated: {warned:?}");
        assert_eq!(config.grpc.address, "/run/v4/c.sock");
        assert_eq!(config.grpc.gid, 5, "the v3 import still applies");
        assert_eq!(config.ttrpc.address, "/run/v4/t.sock");
        assert_eq!(config.debug.address, "/run/v4/debug.sock");
        assert_eq!(config.debug.level, "debug");
        assert_eq!(config.metrics.address, "127.0.0.1:1338");
        assert!(!config.plugins.contains_key("io.containerd.server.v1.grpc"));
        assert!(config.plugins.contains_key("io.containerd.gc.v1.scheduler"));
    }

    #[test]
    fn a_missing_version_means_version_one() {
        let config = load_text("disabled_plugins = ['cri']\n").expect("load");
        assert_eq!(config.version, 3);
        assert_eq!(config.disabled_plugins, ["io.containerd.grpc.v1.cri"]);
        let config = load_text("version = 0\nrequired_plugins = ['bolt']\n").expect("load");
        assert_eq!(config.required_plugins, ["io.containerd.metadata.v1.bolt"]);
    }

    #[test]
    fn version_one_short_names_become_uris() {
        let config = load_text(
            "version = 1\ndisabled_plugins = ['cri', 'btrfs', 'foo']\n\
             [plugins.bolt]\nno_sync = true\n[proxy_plugins.short]\naddress = '/p.sock'\n",
        )
        .expect("load");
        assert_eq!(
            config.disabled_plugins,
            [
                "io.containerd.grpc.v1.cri",
                "io.containerd.snapshotter.v1.btrfs",
                "io.containerd.grpc.v1.foo"
            ]
        );
        assert_eq!(
            config.plugins["io.containerd.metadata.v1.bolt"]["no_sync"].as_bool(),
            Some(true)
        );
        assert!(!config.plugins.contains_key("bolt"));
        assert!(config.proxy_plugins.contains_key("short"));
    }

    #[test]
    fn short_plugin_names_in_version_two_or_three_are_refused() {
        assert_eq!(
            load_text("version = 3\ndisabled_plugins = ['cri']\n")
                .expect_err("short")
                .to_string(),
            "invalid disabled plugin URI \"cri\" expect io.containerd.x.vx"
        );
        assert_eq!(
            load_text("version = 2\nrequired_plugins = ['bolt']\n")
                .expect_err("short")
                .to_string(),
            "invalid required plugin URI \"bolt\" expect io.containerd.x.vx"
        );
    }

    #[test]
    fn each_import_is_migrated_on_its_own() {
        fn record(from: i64, plugins: &mut toml::Table) -> Result<(), String> {
            let steps = plugins
                .entry("io.containerd.test.v1.steps")
                .or_insert_with(|| toml::Value::Array(Vec::new()));
            if let toml::Value::Array(list) = steps {
                list.push(toml::Value::Integer(from));
            }
            Ok(())
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let main = write(
            dir.path(),
            "main.toml",
            "version = 3\nimports = ['old.toml']\n",
        );
        write(
            dir.path(),
            "old.toml",
            "disabled_plugins = ['btrfs']\n[plugins.cri]\nsandbox_image = 'pause'\n",
        );
        let config = load(&main, &[record]).expect("load");
        assert_eq!(
            config.disabled_plugins,
            ["io.containerd.snapshotter.v1.btrfs"]
        );
        assert_eq!(
            config.plugins["io.containerd.grpc.v1.cri"]["sandbox_image"].as_str(),
            Some("pause")
        );
        assert_eq!(
            config.plugins["io.containerd.test.v1.steps"],
            toml::Value::from(vec![1i64, 2]),
            "only the version-1 file is migrated"
        );
    }

    #[test]
    fn syntax_errors_name_file_row_and_column() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = write(dir.path(), "bad.toml", "version = 3\nroot = 'x\n");
        let err = load(&file, &[]).expect_err("syntax");
        let ConfigError::Syntax { row, column, .. } = &err else {
            panic!("not a syntax error: {err:?}");
        };
        assert_eq!((*row, *column), (2, 10));
        let text = err.to_string();
        let want = format!(
            "{}: failed to unmarshal TOML at row 2 column 10: ",
            file.display()
        );
        assert!(text.starts_with(&want), "{text}");
    }

    #[test]
    fn type_errors_name_row_and_column() {
        let err = load_text("version = 3\n[grpc]\n  uid = 'root'\n").expect_err("type");
        let ConfigError::Syntax { row, column, .. } = &err else {
            panic!("not positioned: {err:?}");
        };
        assert_eq!((*row, *column), (3, 9));
        let err = load_text("version = 'three'\n").expect_err("type");
        assert!(err.to_string().contains("at row 1 column 11"), "{err}");
    }

    #[test]
    fn unknown_keys_warn_once_each_with_their_position() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = write(
            dir.path(),
            "c.toml",
            "version = 3\nbogus = 1\n[grpc]\n  address = '/g.sock'\n  nope = true\n\
             [proxy_plugins.'a.b']\naddress = '/p.sock'\nextra = 1\n\
             [plugins.'io.x.v1.y']\nfree = 'form'\n",
        );
        let (config, mut warnings) = warnings(|| load(&file, &[]));
        let config = config.expect("unknown keys only warn");
        assert_eq!(config.grpc.address, "/g.sock");
        assert_eq!(config.proxy_plugins["a.b"].address, "/p.sock");
        warnings.sort();
        let at = |rest: &str| {
            format!(
                "Ignoring unknown key in TOML file={} {rest}",
                file.display()
            )
        };
        assert_eq!(
            warnings,
            [
                at("row=2 column=1 key=bogus"),
                at("row=5 column=3 key=grpc.nope"),
                at("row=8 column=1 key=proxy_plugins.'a.b'.extra"),
            ]
        );
    }

    #[test]
    fn migrated_files_are_warned_about_once_each() {
        let dir = tempfile::tempdir().expect("tempdir");
        let main = write(
            dir.path(),
            "main.toml",
            "version = 3\nimports = ['old.toml', 'older.toml']\n",
        );
        let old = write(dir.path(), "old.toml", "version = 2\n");
        let older = write(dir.path(), "older.toml", "disabled_plugins = ['foo']\n");
        let (config, warnings) = warnings(|| load(&main, &[]));
        config.expect("load");
        let migrated = |version: i64, path: &Path| {
            format!(
                "Configuration migrated from version {version}, use `ctrd config migrate` to avoid migration file={}",
                path.display()
            )
        };
        assert_eq!(
            warnings,
            [
                migrated(2, &old),
                "Ambiguous foo plugin in v1 config, treating as io.containerd.grpc.v1.foo".into(),
                migrated(1, &older),
            ]
        );
    }

    #[test]
    fn plugin_sections_decode_over_defaults_after_loading() {
        #[derive(Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
        #[serde(default)]
        struct Task {
            shim_debug: bool,
            platforms: Vec<String>,
        }
        for text in [
            "version = 2\n[plugins.'io.containerd.runtime.v2.task']\n  shim_debug = true\n",
            "[plugins.task]\n  shim_debug = true\n",
        ] {
            let config = load_text(text).expect("load");
            let uri = "io.containerd.runtime.v2.task";
            let task: Task = decode_plugin(uri, config.plugins.get(uri)).expect("decode");
            assert!(task.shim_debug, "{text}");
            assert!(task.platforms.is_empty());
        }
    }
}
