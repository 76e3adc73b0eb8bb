//! The config as TOML in the shape `containerd config default` prints: top-level scalars,
//! then tables with two spaces of indent per level, strings in single quotes, dotted keys
//! quoted, plugin tables sorted by URI.

use std::fmt::Write as _;

use super::Config;

/// The config as text; loading it back gives the same config.
pub fn to_toml(config: &Config) -> String {
    let mut out = String::new();
    let scalar = |out: &mut String, key: &str, value: toml::Value| {
        let _ = writeln!(out, "{key} = {}", value_text(&value));
    };
    let strings = |items: &[String]| {
        toml::Value::Array(items.iter().cloned().map(toml::Value::String).collect())
    };
    scalar(&mut out, "version", toml::Value::Integer(config.version));
    scalar(&mut out, "root", config.root.clone().into());
    scalar(&mut out, "state", config.state.clone().into());
    scalar(&mut out, "temp", config.temp.clone().into());
    if !config.plugin_dir.is_empty() {
        scalar(&mut out, "plugin_dir", config.plugin_dir.clone().into());
    }
    scalar(
        &mut out,
        "disabled_plugins",
        strings(&config.disabled_plugins),
    );
    scalar(
        &mut out,
        "required_plugins",
        strings(&config.required_plugins),
    );
    scalar(
        &mut out,
        "oom_score",
        toml::Value::Integer(config.oom_score),
    );
    scalar(&mut out, "imports", strings(&config.imports));
    out.push('\n');

    let grpc = &config.grpc;
    let grpc_rows: Vec<(&str, toml::Value)> = vec![
        ("address", grpc.address.clone().into()),
        ("tcp_address", grpc.tcp_address.clone().into()),
        ("tcp_tls_ca", grpc.tcp_tls_ca.clone().into()),
        ("tcp_tls_cert", grpc.tcp_tls_cert.clone().into()),
        ("tcp_tls_key", grpc.tcp_tls_key.clone().into()),
        ("uid", i64::from(grpc.uid).into()),
        ("gid", i64::from(grpc.gid).into()),
        ("max_recv_message_size", grpc.max_recv_message_size.into()),
        ("max_send_message_size", grpc.max_send_message_size.into()),
        (
            "tcp_tls_common_name",
            grpc.tcp_tls_common_name.clone().into(),
        ),
    ];
    section(&mut out, "grpc", &grpc_rows);
    let ttrpc = &config.ttrpc;
    section(
        &mut out,
        "ttrpc",
        &[
            ("address", ttrpc.address.clone().into()),
            ("uid", i64::from(ttrpc.uid).into()),
            ("gid", i64::from(ttrpc.gid).into()),
        ],
    );
    let debug = &config.debug;
    section(
        &mut out,
        "debug",
        &[
            ("address", debug.address.clone().into()),
            ("uid", i64::from(debug.uid).into()),
            ("gid", i64::from(debug.gid).into()),
            ("level", debug.level.clone().into()),
            ("format", debug.format.clone().into()),
        ],
    );
    section(
        &mut out,
        "metrics",
        &[
            ("address", config.metrics.address.clone().into()),
            ("grpc_histogram", config.metrics.grpc_histogram.into()),
        ],
    );

    out.push_str("[plugins]\n");
    if config.plugins.is_empty() {
        out.push('\n');
    }
    for (uri, value) in &config.plugins {
        if let toml::Value::Table(table) = value {
            let rows = ordered(table, &[]);
            nested(&mut out, &format!("plugins.{}", key_text(uri)), &rows, 1);
        }
    }

    section(
        &mut out,
        "cgroup",
        &[("path", config.cgroup.path.clone().into())],
    );

    out.push_str("[timeouts]\n");
    for (key, value) in &config.timeouts {
        let _ = writeln!(
            out,
            "  {} = {}",
            key_text(key),
            value_text(&value.clone().into())
        );
    }
    out.push('\n');

    out.push_str("[stream_processors]\n");
    if config.stream_processors.is_empty() {
        out.push('\n');
    }
    for (id, processor) in &config.stream_processors {
        if let Ok(table) = toml::Table::try_from(processor) {
            let rows = ordered(&table, &["accepts", "returns", "path", "args", "env"]);
            nested(
                &mut out,
                &format!("stream_processors.{}", key_text(id)),
                &rows,
                1,
            );
        }
    }

    if !config.proxy_plugins.is_empty() {
        out.push_str("[proxy_plugins]\n");
        for (name, proxy) in &config.proxy_plugins {
            if let Ok(table) = toml::Table::try_from(proxy) {
                let rows = ordered(
                    &table,
                    &["type", "address", "platform", "exports", "capabilities"],
                );
                nested(
                    &mut out,
                    &format!("proxy_plugins.{}", key_text(name)),
                    &rows,
                    1,
                );
            }
        }
    }
    while out.ends_with("\n\n") {
        out.pop();
    }
    out
}

/// A table's entries with `first` keys in that order, the rest after (sorted).
fn ordered(table: &toml::Table, first: &[&str]) -> Vec<(String, toml::Value)> {
    let mut rows: Vec<(String, toml::Value)> = first
        .iter()
        .filter_map(|k| table.get(*k).map(|v| (k.to_string(), v.clone())))
        .collect();
    for (k, v) in table {
        if !first.contains(&k.as_str()) {
            rows.push((k.clone(), v.clone()));
        }
    }
    rows
}

fn section(out: &mut String, name: &str, rows: &[(&str, toml::Value)]) {
    let _ = writeln!(out, "[{name}]");
    for (key, value) in rows {
        let _ = writeln!(out, "  {key} = {}", value_text(value));
    }
    out.push('\n');
}

/// A nested table (and its sub-tables) under `header`, indented by `depth` levels.
fn nested(out: &mut String, header: &str, rows: &[(String, toml::Value)], depth: usize) {
    let pad = "  ".repeat(depth);
    let _ = writeln!(out, "{pad}[{header}]");
    for (key, value) in rows {
        if !matches!(value, toml::Value::Table(_)) {
            let _ = writeln!(out, "{pad}  {} = {}", key_text(key), value_text(value));
        }
    }
    out.push('\n');
    for (key, value) in rows {
        if let toml::Value::Table(sub) = value {
            let sub_rows = ordered(sub, &[]);
            nested(
                out,
                &format!("{header}.{}", key_text(key)),
                &sub_rows,
                depth + 1,
            );
        }
    }
}

fn key_text(key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if bare {
        key.to_string()
    } else {
        string_text(key)
    }
}

fn string_text(s: &str) -> String {
    if !s.contains('\'') && !s.chars().any(char::is_control) {
        return format!("'{s}'");
    }
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn value_text(value: &toml::Value) -> String {
    match value {
        toml::Value::String(s) => string_text(s),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => {
            let text = f.to_string();
            if text.contains(['.', 'e', 'E', 'n', 'i']) {
                text
            } else {
                format!("{text}.0")
            }
        }
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::Datetime(d) => d.to_string(),
        toml::Value::Array(items) => {
            let inner: Vec<String> = items.iter().map(value_text).collect();
            format!("[{}]", inner.join(", "))
        }
        toml::Value::Table(table) => {
            let inner: Vec<String> = table
                .iter()
                .map(|(k, v)| format!("{} = {}", key_text(k), value_text(v)))
                .collect();
            format!("{{{}}}", inner.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_top_block_matches_containerds_layout() {
        let text = to_toml(&Config::default());
        let head: String = text.split("[plugins]").next().expect("head").to_string();
        let want = "version = 3
root = '/var/lib/containerd'
state = '/run/containerd'
temp = ''
disabled_plugins = []
required_plugins = []
oom_score = 0
imports = ['/etc/ctrd/conf.d/*.toml']

[grpc]
  address = '/run/containerd/containerd.sock'
  tcp_address = ''
  tcp_tls_ca = ''
  tcp_tls_cert = ''
  tcp_tls_key = ''
  uid = 0
  gid = 0
  max_recv_message_size = 16777216
  max_send_message_size = 16777216
  tcp_tls_common_name = ''

[ttrpc]
  address = ''
  uid = 0
  gid = 0

[debug]
  address = ''
  uid = 0
  gid = 0
  level = ''
  format = ''

[metrics]
  address = ''
  grpc_histogram = false

";
        assert_eq!(head, want);
        assert!(text.contains("[timeouts]\n  'io.containerd.timeout.bolt.open' = '0s'\n"));
        assert!(text.contains("  [stream_processors.'io.containerd.ocicrypt.decoder.v1.tar']\n    accepts = ['application/vnd.oci.image.layer.v1.tar+encrypted']\n    returns = "));
    }

    #[test]
    fn printed_config_loads_back_identically() {
        let mut config = Config {
            plugin_dir: "/p".into(),
            disabled_plugins: vec!["io.containerd.a.v1.b".into()],
            ..Config::default()
        };
        config.grpc.uid = 1000;
        config.metrics.grpc_histogram = true;
        config.proxy_plugins.insert(
            "ext".into(),
            super::super::ProxyPlugin {
                r#type: "snapshot".into(),
                address: "/run/ext.sock".into(),
                platform: "linux/amd64".into(),
                exports: [("root".to_string(), "/x".to_string())].into(),
                capabilities: vec!["rebase".into()],
            },
        );
        let plugin: toml::Table = toml::from_str(
            "path = \"it's\"\nratio = 0.02\nlist = ['a', 'b']\n[nested]\nflag = true\n[nested.deeper]\nn = 1\n",
        )
        .expect("toml");
        config
            .plugins
            .insert("io.containerd.x.v1.y".into(), toml::Value::Table(plugin));
        let text = to_toml(&config);
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.toml");
        std::fs::write(&path, &text).expect("write");
        let loaded = super::super::load(&path, &[]).expect("load back");
        assert_eq!(loaded, config, "{text}");
        assert_eq!(to_toml(&loaded), text);
    }
}
