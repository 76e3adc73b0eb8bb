//! Loading: one file, its imports (breadth first, each file once), every file migrated to
//! the current version on its own, then merged with containerd's rules:
//! - scalars: a later non-zero value wins (a zero or empty one never resets);
//! - `disabled_plugins`, `required_plugins`, `imports`: appended without duplicates;
//! - `plugins`: merged table by table, later leaves win;
//! - `timeouts`, `proxy_plugins`, `stream_processors`: per key, each entry replaced whole.

use std::collections::{HashSet, VecDeque};
use std::path::{Component, Path, PathBuf};

use serde::Deserialize;

use super::migrate;
use super::{Config, ConfigError, PluginMigration, CONFIG_VERSION, DEFAULT_IMPORTS};

/// Loads `path` (which must exist) with its imports, over the defaults.
pub fn load(path: &Path, migrations: &[PluginMigration]) -> Result<Config, ConfigError> {
    let main_path = clean(&absolute(path));
    let mut merged = read_file(&main_path, migrations)?;
    let mut seen = HashSet::from([main_path.clone()]);
    let main_imports = match merged.get("imports") {
        Some(_) => string_list(&merged, "imports"),
        None => vec![DEFAULT_IMPORTS.to_string()],
    };
    let mut queue: VecDeque<PathBuf> = resolve_imports(&main_path, &main_imports)?.into();
    while let Some(file) = queue.pop_front() {
        if !seen.insert(file.clone()) {
            continue;
        }
        let table = read_file(&file, migrations)?;
        let imports = string_list(&table, "imports");
        merge(&mut merged, table);
        queue.extend(resolve_imports(&file, &imports)?);
    }
    let config = decode(&main_path, merged)?;
    validate_uris(&config)?;
    Ok(config)
}

/// Reads, checks and migrates one file to a table of the current version.
fn read_file(path: &Path, migrations: &[PluginMigration]) -> Result<toml::Table, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mut table: toml::Table = toml::from_str(&text).map_err(|err| {
        let (row, column) = err
            .span()
            .map(|span| row_column(&text, span.start))
            .unwrap_or((1, 1));
        ConfigError::Syntax {
            path: path.to_path_buf(),
            row,
            column,
            message: err.message().trim().to_string(),
        }
    })?;
    let version = match table.get("version") {
        None => 1,
        Some(toml::Value::Integer(v)) => (*v).max(1),
        Some(other) => {
            return Err(ConfigError::Decode {
                path: path.to_path_buf(),
                message: format!("version must be an integer, got {}", other.type_str()),
            })
        }
    };
    if version > CONFIG_VERSION {
        return Err(ConfigError::Version {
            max: CONFIG_VERSION,
            got: version,
        });
    }
    if version < CONFIG_VERSION {
        for step in version..CONFIG_VERSION {
            if step == 1 {
                migrate::v1_to_v2(&mut table);
            }
            if !migrations.is_empty() {
                let plugins = table
                    .entry("plugins")
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                if let toml::Value::Table(plugins) = plugins {
                    for migration in migrations {
                        migration(step, plugins).map_err(|message| ConfigError::Migration {
                            path: path.to_path_buf(),
                            version: step,
                            message,
                        })?;
                    }
                }
            }
        }
        log::warn!(
            "Configuration migrated from version {version}, use `ctrd config migrate` to avoid migration file={}",
            path.display()
        );
    }
    table.insert("version".into(), toml::Value::Integer(CONFIG_VERSION));
    warn_unknown_keys(path, &text, &table)?;
    Ok(table)
}

/// Decodes the table as a [`Config`] to find (and warn about) keys the schema lacks.
fn warn_unknown_keys(path: &Path, text: &str, table: &toml::Table) -> Result<(), ConfigError> {
    let mut unknown = Vec::new();
    let value = toml::Value::Table(table.clone());
    serde_ignored::deserialize(value, |p| unknown.push(p.to_string()))
        .map(|_: Config| ())
        .map_err(|err| ConfigError::Decode {
            path: path.to_path_buf(),
            message: err.to_string().trim().to_string(),
        })?;
    if unknown.is_empty() {
        return Ok(());
    }
    let document = toml::de::DeTable::parse(text).ok();
    for key in unknown {
        let (row, column) = document
            .as_ref()
            .and_then(|doc| key_offset(doc.get_ref(), &key))
            .map(|offset| row_column(text, offset))
            .unwrap_or((0, 0));
        log::warn!(
            "Ignoring unknown key in TOML file={} row={row} column={column} key={key}",
            path.display()
        );
    }
    Ok(())
}

/// The byte offset of a dotted key in a parsed document.
fn key_offset(doc: &toml::de::DeTable<'_>, dotted: &str) -> Option<usize> {
    let mut table = doc;
    let mut offset = None;
    let parts: Vec<&str> = dotted.split('.').collect();
    for (i, part) in parts.iter().enumerate() {
        let (key, value) = table.iter().find(|(k, _)| k.get_ref().as_ref() == *part)?;
        offset = Some(key.span().start);
        if i + 1 < parts.len() {
            table = value.get_ref().as_table()?;
        }
    }
    offset
}

fn row_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let row = before.matches('\n').count() + 1;
    let column = before
        .rsplit('\n')
        .next()
        .map(|line| line.chars().count() + 1)
        .unwrap_or(1);
    (row, column)
}

fn decode(path: &Path, table: toml::Table) -> Result<Config, ConfigError> {
    Config::deserialize(toml::Value::Table(table)).map_err(|err| ConfigError::Decode {
        path: path.to_path_buf(),
        message: err.to_string().trim().to_string(),
    })
}

fn validate_uris(config: &Config) -> Result<(), ConfigError> {
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
        .and_then(|v| v.as_array())
        .map(|items| {
            items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn is_zero(value: &toml::Value) -> bool {
    match value {
        toml::Value::String(s) => s.is_empty(),
        toml::Value::Integer(i) => *i == 0,
        toml::Value::Float(f) => *f == 0.0,
        toml::Value::Boolean(b) => !b,
        toml::Value::Array(a) => a.is_empty(),
        toml::Value::Table(t) => t.is_empty(),
        toml::Value::Datetime(_) => false,
    }
}

/// Merges a later file's table into `dst` (see the module header for the rules).
pub(super) fn merge(dst: &mut toml::Table, src: toml::Table) {
    for (key, value) in src {
        match key.as_str() {
            "disabled_plugins" | "required_plugins" | "imports" => {
                let entry = dst
                    .entry(key)
                    .or_insert_with(|| toml::Value::Array(Vec::new()));
                if let (toml::Value::Array(have), toml::Value::Array(add)) = (entry, value) {
                    for item in add {
                        if !have.contains(&item) {
                            have.push(item);
                        }
                    }
                }
            }
            "plugins" => match (dst.get_mut(&key), value) {
                (Some(toml::Value::Table(have)), toml::Value::Table(add)) => deep_merge(have, add),
                (_, value) => {
                    dst.insert(key, value);
                }
            },
            "timeouts" | "proxy_plugins" | "stream_processors" => {
                match (dst.get_mut(&key), value) {
                    (Some(toml::Value::Table(have)), toml::Value::Table(add)) => have.extend(add),
                    (_, value) => {
                        dst.insert(key, value);
                    }
                }
            }
            _ => merge_non_zero(dst, key, value),
        }
    }
}

fn merge_non_zero(dst: &mut toml::Table, key: String, value: toml::Value) {
    match (dst.get_mut(&key), value) {
        (Some(toml::Value::Table(have)), toml::Value::Table(add)) => {
            for (k, v) in add {
                merge_non_zero(have, k, v);
            }
        }
        (_, value) if is_zero(&value) => {}
        (_, value) => {
            dst.insert(key, value);
        }
    }
}

fn deep_merge(dst: &mut toml::Table, src: toml::Table) {
    for (key, value) in src {
        match (dst.get_mut(&key), value) {
            (Some(toml::Value::Table(have)), toml::Value::Table(add)) => deep_merge(have, add),
            (_, value) => {
                dst.insert(key, value);
            }
        }
    }
}

/// The files an `imports` list names, relative to the importing file; globs expand to
/// their sorted matches (none is fine), a plain path must exist.
fn resolve_imports(from: &Path, imports: &[String]) -> Result<Vec<PathBuf>, ConfigError> {
    let base = from.parent().unwrap_or(Path::new("/"));
    let mut out = Vec::new();
    for import in imports {
        let path = clean(&base.join(import));
        if import.contains(['*', '?', '[']) {
            out.extend(glob(&path));
        } else {
            if !path.exists() {
                return Err(ConfigError::Read {
                    path: path.clone(),
                    source: std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        "no such file or directory",
                    ),
                });
            }
            out.push(path);
        }
    }
    Ok(out)
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Lexically removes `.` and `..` components.
fn clean(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// Expands `*`, `?` and `[…]` in any component; results sorted.
fn glob(pattern: &Path) -> Vec<PathBuf> {
    let mut current = vec![PathBuf::from("/")];
    for component in pattern.components() {
        let Component::Normal(part) = component else {
            continue;
        };
        let part = part.to_string_lossy();
        let mut next = Vec::new();
        for dir in &current {
            if part.contains(['*', '?', '[']) {
                let Ok(entries) = std::fs::read_dir(dir) else {
                    continue;
                };
                let mut names: Vec<String> = entries
                    .filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .filter(|name| !name.starts_with('.') || part.starts_with('.'))
                    .filter(|name| wildcard(&part, name))
                    .collect();
                names.sort();
                next.extend(names.into_iter().map(|n| dir.join(n)));
            } else {
                let candidate = dir.join(part.as_ref());
                if candidate.exists() {
                    next.push(candidate);
                }
            }
        }
        current = next;
    }
    current.sort();
    current
}

/// Shell-style matching of one name.
fn wildcard(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    fn go(p: &[char], n: &[char]) -> bool {
        match p.first() {
            None => n.is_empty(),
            Some('*') => (0..=n.len()).any(|i| go(&p[1..], &n[i..])),
            Some('?') => !n.is_empty() && go(&p[1..], &n[1..]),
            Some('[') => {
                let Some(end) = p.iter().position(|&c| c == ']') else {
                    return n.first() == Some(&'[') && go(&p[1..], &n[1..]);
                };
                let Some(&c) = n.first() else { return false };
                let class = &p[1..end];
                let (negate, class) = match class.first() {
                    Some('^') | Some('!') => (true, &class[1..]),
                    _ => (false, class),
                };
                let mut hit = false;
                let mut i = 0;
                while i < class.len() {
                    if i + 2 < class.len() && class[i + 1] == '-' {
                        hit |= class[i] <= c && c <= class[i + 2];
                        i += 3;
                    } else {
                        hit |= class[i] == c;
                        i += 1;
                    }
                }
                hit != negate && go(&p[end + 1..], &n[1..])
            }
            Some(&c) => n.first() == Some(&c) && go(&p[1..], &n[1..]),
        }
    }
    go(&p, &n)
}

#[cfg(test)]
mod tests {
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

    #[test]
    fn single_file_keeps_defaults_for_the_rest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = write(
            dir.path(),
            "c.toml",
            "version = 3\nroot = '/r'\n[grpc]\naddress = '/x.sock'\n",
        );
        let config = load(&file, &[]).expect("load");
        assert_eq!(config.root, "/r");
        assert_eq!(config.state, "/run/containerd");
        assert_eq!(config.grpc.address, "/x.sock");
        assert_eq!(config.grpc.max_recv_message_size, 16 << 20);
        assert_eq!(config.imports, [DEFAULT_IMPORTS]);
    }

    #[test]
    fn imports_merge_with_containerds_rules() {
        let dir = tempfile::tempdir().expect("tempdir");
        let main = write(
            dir.path(),
            "main.toml",
            "version = 3\noom_score = 1\nimports = ['conf.d/*.toml', 'extra.toml']\ndisabled_plugins = ['io.containerd.a.v1.x']\n\
             [plugins.'io.containerd.grpc.v1.cri'.containerd]\nsnapshotter = 'overlayfs'\ndefault = 'runc'\n\
             [timeouts]\n'io.containerd.timeout.shim.load' = '9s'\n\
             [proxy_plugins.p]\ntype = 'snapshot'\naddress = '/a.sock'\nplatform = 'linux/amd64'\n",
        );
        write(
            dir.path(),
            "conf.d/10-first.toml",
            "version = 3\noom_score = 0\nroot = '/first'\ndisabled_plugins = ['io.containerd.a.v1.x', 'io.containerd.b.v1.y']\n\
             [plugins.'io.containerd.grpc.v1.cri'.containerd]\nsnapshotter = 'native'\n",
        );
        write(
            dir.path(),
            "conf.d/20-second.toml",
            "version = 3\nroot = '/second'\n",
        );
        write(
            dir.path(),
            "extra.toml",
            "version = 3\nimports = ['main.toml']\n[proxy_plugins.p]\naddress = '/b.sock'\n[timeouts]\n'io.containerd.timeout.shim.cleanup' = '1s'\n",
        );
        let config = load(&main, &[]).expect("load");
        assert_eq!(config.oom_score, 1, "zero never overrides");
        assert_eq!(config.root, "/second", "later files win, globs sorted");
        assert_eq!(
            config.disabled_plugins,
            ["io.containerd.a.v1.x", "io.containerd.b.v1.y"]
        );
        let cri = &config.plugins["io.containerd.grpc.v1.cri"]["containerd"];
        assert_eq!(cri["snapshotter"].as_str(), Some("native"));
        assert_eq!(
            cri["default"].as_str(),
            Some("runc"),
            "deep merge keeps other keys"
        );
        assert_eq!(config.timeouts["io.containerd.timeout.shim.load"], "9s");
        assert_eq!(config.timeouts["io.containerd.timeout.shim.cleanup"], "1s");
        let proxy = &config.proxy_plugins["p"];
        assert_eq!(proxy.address, "/b.sock");
        assert_eq!(proxy.r#type, "", "entries are replaced whole");
        assert_eq!(config.imports, ["conf.d/*.toml", "extra.toml", "main.toml"]);
    }

    #[test]
    fn missing_plain_import_is_an_error_but_empty_glob_is_not() {
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
            "version = 3\nimports = ['missing.toml']\n",
        );
        let err = load(&bad, &[]).expect_err("missing import");
        assert!(err.to_string().contains("missing.toml"), "{err}");
    }

    #[test]
    fn syntax_error_names_file_row_and_column() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = write(dir.path(), "bad.toml", "version = 3\nroot = 'x\n");
        let err = load(&file, &[]).expect_err("syntax");
        let text = err.to_string();
        assert!(
            text.contains("bad.toml: failed to unmarshal TOML at row 2 column"),
            "{text}"
        );
    }

    #[test]
    fn versions_above_three_are_refused_and_old_ones_migrated() {
        let dir = tempfile::tempdir().expect("tempdir");
        let v5 = write(dir.path(), "v5.toml", "version = 5\n");
        assert_eq!(
            load(&v5, &[]).expect_err("v5").to_string(),
            "expected containerd config version equal to or less than `3`, got `5`"
        );
        let v1 = write(
            dir.path(),
            "v1.toml",
            "disabled_plugins = ['cri', 'btrfs']\n[plugins.bolt]\nno_sync = true\n",
        );
        let config = load(&v1, &[]).expect("v1");
        assert_eq!(config.version, 3);
        assert_eq!(
            config.disabled_plugins,
            [
                "io.containerd.grpc.v1.cri",
                "io.containerd.snapshotter.v1.btrfs"
            ]
        );
        assert!(config
            .plugins
            .contains_key("io.containerd.metadata.v1.bolt"));
    }

    #[test]
    fn higher_version_import_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(dir.path(), "next.toml", "version = 4\n");
        let main = write(
            dir.path(),
            "main.toml",
            "version = 2\nimports = ['next.toml']\n",
        );
        assert!(load(&main, &[]).is_err());
    }

    #[test]
    fn short_disabled_plugin_in_version_three_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = write(
            dir.path(),
            "c.toml",
            "version = 3\ndisabled_plugins = ['cri']\n",
        );
        assert_eq!(
            load(&file, &[]).expect_err("short").to_string(),
            "invalid disabled plugin URI \"cri\" expect io.containerd.x.vx"
        );
    }

    #[test]
    fn plugin_migrations_run_for_each_step() {
        fn mark(from: i64, plugins: &mut toml::Table) -> Result<(), String> {
            let steps = plugins
                .entry("io.containerd.test.v1.steps")
                .or_insert_with(|| toml::Value::Array(vec![]));
            if let toml::Value::Array(list) = steps {
                list.push(toml::Value::Integer(from));
            }
            Ok(())
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let file = write(dir.path(), "v1.toml", "version = 1\n");
        let config = load(&file, &[mark]).expect("load");
        let steps = config.plugins["io.containerd.test.v1.steps"]
            .as_array()
            .expect("array");
        assert_eq!(steps, &[toml::Value::Integer(1), toml::Value::Integer(2)]);
    }

    #[test]
    fn circular_imports_load_each_file_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(
            dir.path(),
            "b.toml",
            "version = 3\nimports = ['a.toml']\nrequired_plugins = ['io.containerd.b.v1.b']\n",
        );
        let a = write(
            dir.path(),
            "a.toml",
            "version = 3\nimports = ['./b.toml']\n",
        );
        let config = load(&a, &[]).expect("load");
        assert_eq!(config.required_plugins, ["io.containerd.b.v1.b"]);
    }

    #[test]
    fn unknown_keys_are_found_with_positions() {
        let text = "version = 3\n[grpc]\n  bogus = 1\n";
        let doc = toml::de::DeTable::parse(text).expect("parse");
        let offset = key_offset(doc.get_ref(), "grpc.bogus").expect("found");
        assert_eq!(row_column(text, offset), (3, 3));
        let dir = tempfile::tempdir().expect("tempdir");
        let file = write(dir.path(), "c.toml", text);
        load(&file, &[]).expect("unknown keys only warn");
    }

    #[test]
    fn wildcard_matching() {
        assert!(wildcard("*.toml", "a.toml"));
        assert!(!wildcard("*.toml", "a.yaml"));
        assert!(wildcard("1?-x.toml", "10-x.toml"));
        assert!(wildcard("[0-9]*.toml", "5.toml"));
        assert!(!wildcard("[!0-9]*.toml", "5.toml"));
    }
}
