//! The config as TOML in the shape containerd's `config default` / `config dump` print (the
//! go-toml v2 encoder with indented tables):
//! - in every table, plain values first, then sub-tables;
//! - a table header is indented two spaces per level of nesting, its values one level more;
//! - a blank line before each sub-table, except before the first when the table has no
//!   plain values;
//! - keys bare when they can be, else quoted; strings single-quoted unless they hold a single
//!   quote or a control character; arrays inline (`['a', 'b']`), arrays of tables as
//!   `[[…]]`.
//!
//! The struct parts of [`Config`] keep containerd's field order: top-level values, `[grpc]`,
//! `[ttrpc]`, `[debug]`, `[metrics]`, `[plugins]` (sorted by URI), `[cgroup]`,
//! `[proxy_plugins]` (only when there are any), `[timeouts]`, `[stream_processors]`. In
//! version 4 the listener tables become `io.containerd.server.v1.*` plugin sections and
//! `[debug]` keeps `level`, `format` and `log_trace_id`.

use std::fmt::Write as _;

use super::keys::{dotted, key_text, string_text};
use super::{Config, ProxyPlugin, StreamProcessor};

/// A value as it is laid out: inline, as a table, or as an array of tables.
enum Node {
    Value(toml::Value),
    Table(Vec<(String, Node)>),
    Tables(Vec<Vec<(String, Node)>>),
}

/// The config as version-3 text; loading it back gives the same config.
pub fn to_toml(config: &Config) -> String {
    to_toml_version(config, 3)
}

/// The config as text in schema `version` (3 or 4); loading it back gives the same config.
pub fn to_toml_version(config: &Config, version: i64) -> String {
    let mut out = String::new();
    write_table(&mut out, &mut Vec::new(), &config_entries(config, version));
    out
}

/// A ctrd-only key, written only when set (containerd's output has no such key).
fn own(key: &str, count: usize) -> Option<(String, Node)> {
    (count > 0).then(|| value(key, i64::try_from(count).unwrap_or(i64::MAX)))
}

fn config_entries(config: &Config, version: i64) -> Vec<(String, Node)> {
    let v4 = version >= 4;
    let mut root = vec![
        value("version", version),
        value("root", config.root.as_str()),
        value("state", config.state.as_str()),
        value("temp", config.temp.as_str()),
    ];
    if !config.plugin_dir.is_empty() {
        root.push(value("plugin_dir", config.plugin_dir.as_str()));
    }
    root.extend([
        value("disabled_plugins", strings(&config.disabled_plugins)),
        value("required_plugins", strings(&config.required_plugins)),
        value("oom_score", config.oom_score),
        value("imports", strings(&config.imports)),
    ]);

    let grpc = &config.grpc;
    let mut grpc_entries = vec![
        value("address", grpc.address.as_str()),
        value("tcp_address", grpc.tcp_address.as_str()),
        value("tcp_tls_ca", grpc.tcp_tls_ca.as_str()),
        value("tcp_tls_cert", grpc.tcp_tls_cert.as_str()),
        value("tcp_tls_key", grpc.tcp_tls_key.as_str()),
        value("uid", i64::from(grpc.uid)),
        value("gid", i64::from(grpc.gid)),
        value("max_recv_message_size", grpc.max_recv_message_size),
        value("max_send_message_size", grpc.max_send_message_size),
        value("tcp_tls_common_name", grpc.tcp_tls_common_name.as_str()),
    ];
    if !grpc.group.is_empty() {
        grpc_entries.push(value("group", grpc.group.as_str()));
    }
    grpc_entries.extend(own("workers", grpc.workers));
    grpc_entries.extend(own("max_connections", grpc.max_connections));
    if !v4 {
        root.push(table("grpc", grpc_entries));
    }
    let ttrpc = &config.ttrpc;
    let mut ttrpc_entries = vec![
        value("address", ttrpc.address.as_str()),
        value("uid", i64::from(ttrpc.uid)),
        value("gid", i64::from(ttrpc.gid)),
    ];
    if !ttrpc.group.is_empty() {
        ttrpc_entries.push(value("group", ttrpc.group.as_str()));
    }
    ttrpc_entries.extend(own("max_connections", ttrpc.max_connections));
    let debug = &config.debug;
    if v4 {
        root.push(table(
            "debug",
            vec![
                value("level", debug.level.as_str()),
                value("format", debug.format.as_str()),
                value("log_trace_id", debug.log_trace_id),
            ],
        ));
    } else {
        root.push(table("ttrpc", ttrpc_entries));
        root.push(table(
            "debug",
            vec![
                value("address", debug.address.as_str()),
                value("uid", i64::from(debug.uid)),
                value("gid", i64::from(debug.gid)),
                value("level", debug.level.as_str()),
                value("format", debug.format.as_str()),
            ]
            .into_iter()
            .chain(own("max_connections", debug.max_connections))
            .collect(),
        ));
        root.push(table(
            "metrics",
            vec![
                value("address", config.metrics.address.as_str()),
                value("grpc_histogram", config.metrics.grpc_histogram),
            ]
            .into_iter()
            .chain(own("max_connections", config.metrics.max_connections))
            .collect(),
        ));
    }

    let mut plugins: Vec<(String, Node)> = config
        .plugins
        .iter()
        .map(|(uri, section)| (uri.clone(), node(section)))
        .collect();
    if v4 {
        for (uri, section) in super::v4::plugin_sections(config) {
            plugins.retain(|(existing, _)| existing != uri);
            let entries = section
                .into_iter()
                .map(|(key, v)| (key.to_string(), Node::Value(v)))
                .collect();
            plugins.push((uri.to_string(), Node::Table(entries)));
        }
    }
    plugins.sort_by(|a, b| a.0.cmp(&b.0));
    root.push(("plugins".into(), Node::Table(plugins)));

    root.push(table(
        "cgroup",
        vec![value("path", config.cgroup.path.as_str())],
    ));
    if !config.proxy_plugins.is_empty() {
        let proxies = config
            .proxy_plugins
            .iter()
            .map(|(name, proxy)| table(name, proxy_entries(proxy)))
            .collect();
        root.push(("proxy_plugins".into(), Node::Table(proxies)));
    }
    let timeouts = config
        .timeouts
        .iter()
        .map(|(key, duration)| value(key, duration.as_str()))
        .collect();
    root.push(("timeouts".into(), Node::Table(timeouts)));
    let processors = config
        .stream_processors
        .iter()
        .map(|(id, processor)| table(id, processor_entries(processor)))
        .collect();
    root.push(("stream_processors".into(), Node::Table(processors)));
    root
}

fn proxy_entries(proxy: &ProxyPlugin) -> Vec<(String, Node)> {
    let mut entries = vec![
        value("type", proxy.r#type.as_str()),
        value("address", proxy.address.as_str()),
        value("platform", proxy.platform.as_str()),
        value("capabilities", strings(&proxy.capabilities)),
    ];
    if !proxy.exports.is_empty() {
        let exports = proxy
            .exports
            .iter()
            .map(|(key, export)| value(key, export.as_str()))
            .collect();
        entries.push(("exports".into(), Node::Table(exports)));
    }
    entries
}

fn processor_entries(processor: &StreamProcessor) -> Vec<(String, Node)> {
    vec![
        value("accepts", strings(&processor.accepts)),
        value("returns", processor.returns.as_str()),
        value("path", processor.path.as_str()),
        value("args", strings(&processor.args)),
        value("env", strings(&processor.env)),
    ]
}

fn value(key: &str, value: impl Into<toml::Value>) -> (String, Node) {
    (key.to_string(), Node::Value(value.into()))
}

fn table(key: &str, entries: Vec<(String, Node)>) -> (String, Node) {
    (key.to_string(), Node::Table(entries))
}

fn strings(items: &[String]) -> toml::Value {
    toml::Value::Array(items.iter().cloned().map(toml::Value::String).collect())
}

/// A free-form value (plugin sections) laid out in the table's own key order.
fn node(value: &toml::Value) -> Node {
    match value {
        toml::Value::Table(table) => Node::Table(table_entries(table)),
        toml::Value::Array(items)
            if !items.is_empty() && items.iter().all(toml::Value::is_table) =>
        {
            Node::Tables(
                items
                    .iter()
                    .filter_map(toml::Value::as_table)
                    .map(table_entries)
                    .collect(),
            )
        }
        other => Node::Value(other.clone()),
    }
}

fn table_entries(table: &toml::Table) -> Vec<(String, Node)> {
    table
        .iter()
        .map(|(key, value)| (key.clone(), node(value)))
        .collect()
}

/// Writes the body of the table at `path` (its header is already written).
fn write_table(out: &mut String, path: &mut Vec<String>, entries: &[(String, Node)]) {
    let pad = "  ".repeat(path.len());
    let mut has_values = false;
    for (key, entry) in entries {
        if let Node::Value(v) = entry {
            let _ = writeln!(out, "{pad}{} = {}", key_text(key), value_text(v));
            has_values = true;
        }
    }
    let header_pad = "  ".repeat(path.len());
    let mut first = true;
    for (key, entry) in entries {
        if matches!(entry, Node::Value(_)) {
            continue;
        }
        if !first || has_values {
            out.push('\n');
        }
        first = false;
        path.push(key.clone());
        match entry {
            Node::Table(inner) => {
                let _ = writeln!(out, "{header_pad}[{}]", dotted(path));
                write_table(out, path, inner);
            }
            Node::Tables(elements) => {
                for (i, inner) in elements.iter().enumerate() {
                    if i > 0 {
                        out.push('\n');
                    }
                    let _ = writeln!(out, "{header_pad}[[{}]]", dotted(path));
                    write_table(out, path, inner);
                }
            }
            Node::Value(_) => {}
        }
        path.pop();
    }
}

/// A value written inline.
fn value_text(value: &toml::Value) -> String {
    match value {
        toml::Value::String(s) => string_text(s),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => float_text(*f),
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

fn float_text(f: f64) -> String {
    if f.is_nan() {
        return "nan".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "inf" } else { "-inf" }.into();
    }
    let text = f.to_string();
    if text.contains(['.', 'e', 'E']) {
        text
    } else {
        format!("{text}.0")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `raw/config-default-v2.2.7-noncri.toml` from containerd 2.2.7 with its plugin
    /// sections removed, ctrd's import pattern, and no CRI timeout.
    const DEFAULT_TEXT: &str = "version = 3
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

[plugins]

[cgroup]
  path = ''

[timeouts]
  'io.containerd.timeout.bolt.open' = '0s'
  'io.containerd.timeout.metrics.shimstats' = '2s'
  'io.containerd.timeout.shim.cleanup' = '5s'
  'io.containerd.timeout.shim.load' = '5s'
  'io.containerd.timeout.shim.shutdown' = '3s'
  'io.containerd.timeout.task.state' = '2s'

[stream_processors]
  [stream_processors.'io.containerd.ocicrypt.decoder.v1.tar']
    accepts = ['application/vnd.oci.image.layer.v1.tar+encrypted']
    returns = 'application/vnd.oci.image.layer.v1.tar'
    path = 'ctd-decoder'
    args = ['--decryption-keys-path', '/etc/containerd/ocicrypt/keys']
    env = ['OCICRYPT_KEYPROVIDER_CONFIG=/etc/containerd/ocicrypt/ocicrypt_keyprovider.conf']

  [stream_processors.'io.containerd.ocicrypt.decoder.v1.tar.gzip']
    accepts = ['application/vnd.oci.image.layer.v1.tar+gzip+encrypted']
    returns = 'application/vnd.oci.image.layer.v1.tar+gzip'
    path = 'ctd-decoder'
    args = ['--decryption-keys-path', '/etc/containerd/ocicrypt/keys']
    env = ['OCICRYPT_KEYPROVIDER_CONFIG=/etc/containerd/ocicrypt/ocicrypt_keyprovider.conf']
";

    #[test]
    fn defaults_print_like_containerd() {
        assert_eq!(to_toml(&Config::default()), DEFAULT_TEXT);
    }

    fn plugin(text: &str) -> toml::Value {
        toml::Value::Table(toml::from_str(text).expect(text))
    }

    #[test]
    fn plugin_sections_nest_like_go_toml() {
        let mut config = Config::default();
        config.plugins.insert(
            "io.containerd.nri.v1.nri".into(),
            plugin("disable = false\n[default_validator]\nenable = false\nrequired_plugins = []\n"),
        );
        config
            .plugins
            .insert("io.containerd.internal.v1.tracing".into(), plugin(""));
        config.plugins.insert(
            "io.containerd.gc.v1.scheduler".into(),
            plugin("deletion_threshold = 0\npause_threshold = 0.02\nschedule_delay = '0s'\n"),
        );
        config.plugins.insert(
            "io.containerd.grpc.v1.cri".into(),
            plugin(
                "[containerd.runtimes.nvidia]\nruntime_type = 'x'\n\
                 [containerd.runtimes.runc]\nruntime_type = 'io.containerd.runc.v2'\n\
                 [containerd.runtimes.runc.options]\nSystemdCgroup = true\n",
            ),
        );
        let text = to_toml(&config);
        let start = text.find("[plugins]").expect("plugins");
        let end = text.find("[cgroup]").expect("cgroup");
        let want = "[plugins]
  [plugins.'io.containerd.gc.v1.scheduler']
    deletion_threshold = 0
    pause_threshold = 0.02
    schedule_delay = '0s'

  [plugins.'io.containerd.grpc.v1.cri']
    [plugins.'io.containerd.grpc.v1.cri'.containerd]
      [plugins.'io.containerd.grpc.v1.cri'.containerd.runtimes]
        [plugins.'io.containerd.grpc.v1.cri'.containerd.runtimes.nvidia]
          runtime_type = 'x'

        [plugins.'io.containerd.grpc.v1.cri'.containerd.runtimes.runc]
          runtime_type = 'io.containerd.runc.v2'

          [plugins.'io.containerd.grpc.v1.cri'.containerd.runtimes.runc.options]
            SystemdCgroup = true

  [plugins.'io.containerd.internal.v1.tracing']

  [plugins.'io.containerd.nri.v1.nri']
    disable = false

    [plugins.'io.containerd.nri.v1.nri'.default_validator]
      enable = false
      required_plugins = []

";
        assert_eq!(&text[start..end], want);
    }

    #[test]
    fn proxy_plugins_print_only_when_present_before_timeouts() {
        let mut config = Config::default();
        assert!(!to_toml(&config).contains("proxy_plugins"));
        config.proxy_plugins.insert(
            "ext".into(),
            ProxyPlugin {
                r#type: "snapshot".into(),
                address: "/run/ext.sock".into(),
                platform: String::new(),
                exports: [("root".to_string(), "/x".to_string())].into(),
                capabilities: vec!["rebase".into()],
            },
        );
        let text = to_toml(&config);
        let want = "[cgroup]
  path = ''

[proxy_plugins]
  [proxy_plugins.ext]
    type = 'snapshot'
    address = '/run/ext.sock'
    platform = ''
    capabilities = ['rebase']

    [proxy_plugins.ext.exports]
      root = '/x'

[timeouts]
";
        assert!(text.contains(want), "{text}");
    }

    #[test]
    fn values_are_written_as_toml_reads_them() {
        for (value, want) in [
            (toml::Value::Float(1.0), "1.0"),
            (toml::Value::Float(-0.5), "-0.5"),
            (toml::Value::Float(1e300), ""),
            (toml::Value::Float(f64::NAN), "nan"),
            (toml::Value::Float(f64::NEG_INFINITY), "-inf"),
            (toml::Value::from("it's"), "\"it's\""),
            (
                toml::Value::Array(vec![toml::Value::Integer(1), toml::Value::from("a")]),
                "[1, 'a']",
            ),
            (toml::Value::Array(vec![]), "[]"),
            (
                toml::Value::Array(vec![plugin("a = 1\n"), toml::Value::Integer(2)]),
                "[{a = 1}, 2]",
            ),
        ] {
            let text = value_text(&value);
            if !want.is_empty() {
                assert_eq!(text, want);
            }
            let doc = format!("k = {text}\n");
            let back: toml::Table = toml::from_str(&doc).expect(&doc);
            if let toml::Value::Float(f) = value {
                let got = back["k"].as_float().expect("float");
                assert!(got == f || (got.is_nan() && f.is_nan()), "{doc}");
            } else {
                assert_eq!(back["k"], value);
            }
        }
    }

    #[test]
    fn printed_config_loads_back_identically() {
        let mut config = Config {
            plugin_dir: "/p".into(),
            temp: "/tmp/it's".into(),
            oom_score: -500,
            disabled_plugins: vec!["io.containerd.a.v1.b".into()],
            required_plugins: vec!["io.containerd.c.v1.d".into()],
            ..Config::default()
        };
        config.imports.push("/etc/other/*.toml".into());
        config.grpc.uid = 1000;
        config.grpc.tcp_address = "127.0.0.1:1234".into();
        config.ttrpc.address = "/run/t.sock".into();
        config.debug.level = "debug".into();
        config.metrics.grpc_histogram = true;
        config.cgroup.path = "/ctrd".into();
        config
            .timeouts
            .insert("io.containerd.timeout.shim.load".into(), "1m0s".into());
        config.proxy_plugins.insert(
            "ext.snap".into(),
            ProxyPlugin {
                r#type: "snapshot".into(),
                address: "/run/ext.sock".into(),
                platform: "linux/amd64".into(),
                exports: [("root".to_string(), "/x".to_string())].into(),
                capabilities: vec!["rebase".into()],
            },
        );
        config.stream_processors.insert(
            "io.containerd.processor.v1.pigz".into(),
            StreamProcessor {
                accepts: vec!["application/vnd.docker.image.rootfs.diff.tar.gzip".into()],
                returns: "application/vnd.oci.image.layer.v1.tar".into(),
                path: "unpigz".into(),
                args: vec!["-d".into(), "-c".into()],
                env: vec![],
            },
        );
        config.plugins.insert(
            "io.containerd.x.v1.y".into(),
            plugin(
                "path = \"it's\\ttabbed\"\nratio = 0.02\nlist = ['a', 'b']\nwhen = 1979-05-27T07:32:00Z\n\
                 inline = [{a = 1}, 2]\n\
                 [nested]\nflag = true\n[nested.deeper]\nn = 1\n\
                 [[hosts]]\nname = 'a'\n[hosts.extra]\nx = 1\n[[hosts]]\nname = 'b'\n",
            ),
        );
        config
            .plugins
            .insert("io.containerd.empty.v1.z".into(), plugin(""));
        let text = to_toml(&config);
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.toml");
        std::fs::write(&path, &text).expect("write");
        let loaded = super::super::load(&path, &[]).expect("load back");
        assert_eq!(loaded, config, "{text}");
        assert_eq!(to_toml(&loaded), text);
    }
}
