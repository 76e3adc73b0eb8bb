//! Config version 4 (containerd 2.3+): the listeners' settings live in plugin sections
//! instead of the top-level `[grpc]`, `[ttrpc]`, `[debug]` and `[metrics]` tables:
//!
//! | version 4 section | key | version 3 |
//! |---|---|---|
//! | `io.containerd.server.v1.grpc` | `address`, `uid`, `gid`, `max_recv_message_size`, `max_send_message_size` | `[grpc]` same keys |
//! | `io.containerd.server.v1.grpc-tcp` | `address`, `tls_ca`, `tls_cert`, `tls_key`, `tls_common_name` | `[grpc]` `tcp_address`, `tcp_tls_*` |
//! | `io.containerd.server.v1.ttrpc` | `address`, `uid`, `gid` | `[ttrpc]` |
//! | `io.containerd.server.v1.debug` | `address`, `uid`, `gid` | `[debug]` same keys |
//! | `io.containerd.server.v1.metrics` | `address` | `[metrics] address` |
//! | `io.containerd.metrics.v1.grpc-prometheus` | `grpc_histogram` | `[metrics] grpc_histogram` |
//!
//! ctrd keeps one model (the version-3 tables): a version-4 file is mapped onto it when it
//! is read ([`into_core`]), and written back out of it for `--to 4` ([`plugin_sections`]).
//! ctrd's own `group` key sits beside `gid` in both layouts.

use std::path::Path;

use super::Config;

pub const GRPC: &str = "io.containerd.server.v1.grpc";
pub const GRPC_TCP: &str = "io.containerd.server.v1.grpc-tcp";
pub const TTRPC: &str = "io.containerd.server.v1.ttrpc";
pub const DEBUG: &str = "io.containerd.server.v1.debug";
pub const METRICS: &str = "io.containerd.server.v1.metrics";
pub const GRPC_PROMETHEUS: &str = "io.containerd.metrics.v1.grpc-prometheus";

/// (plugin key, top-level table, key there).
type Moves = &'static [(&'static str, &'static str, &'static str)];

/// Per section, where its keys go.
const MAPPING: [(&str, Moves); 6] = [
    (
        GRPC,
        &[
            ("address", "grpc", "address"),
            ("uid", "grpc", "uid"),
            ("gid", "grpc", "gid"),
            ("group", "grpc", "group"),
            ("max_recv_message_size", "grpc", "max_recv_message_size"),
            ("max_send_message_size", "grpc", "max_send_message_size"),
        ],
    ),
    (
        GRPC_TCP,
        &[
            ("address", "grpc", "tcp_address"),
            ("tls_ca", "grpc", "tcp_tls_ca"),
            ("tls_cert", "grpc", "tcp_tls_cert"),
            ("tls_key", "grpc", "tcp_tls_key"),
            ("tls_common_name", "grpc", "tcp_tls_common_name"),
        ],
    ),
    (
        TTRPC,
        &[
            ("address", "ttrpc", "address"),
            ("uid", "ttrpc", "uid"),
            ("gid", "ttrpc", "gid"),
            ("group", "ttrpc", "group"),
        ],
    ),
    (
        DEBUG,
        &[
            ("address", "debug", "address"),
            ("uid", "debug", "uid"),
            ("gid", "debug", "gid"),
        ],
    ),
    (METRICS, &[("address", "metrics", "address")]),
    (
        GRPC_PROMETHEUS,
        &[("grpc_histogram", "metrics", "grpc_histogram")],
    ),
];

/// The message-size keys of `grpc-tcp`: ctrd applies the unix socket's limits to TCP too.
const TCP_SIZES: [&str; 2] = ["max_recv_message_size", "max_send_message_size"];

/// Moves the server sections of a version-4 file `table` into the top-level tables.
pub(super) fn into_core(path: &Path, table: &mut toml::Table) {
    let Some(toml::Value::Table(plugins)) = table.get_mut("plugins") else {
        return;
    };
    let mut moved: Vec<(&str, &str, toml::Value)> = Vec::new();
    for (uri, keys) in MAPPING {
        let Some(section) = plugins.remove(uri) else {
            continue;
        };
        let toml::Value::Table(section) = section else {
            log::warn!(
                "plugin section {uri} is not a table; ignored file={}",
                path.display()
            );
            continue;
        };
        for (key, value) in section {
            match keys.iter().find(|(from, _, _)| *from == key) {
                Some(&(_, into, to)) => moved.push((into, to, value)),
                None if uri == GRPC_TCP && TCP_SIZES.contains(&key.as_str()) => {
                    log::info!(
                        "{uri} {key}: ctrd applies {GRPC}'s message size limits to TCP as well"
                    )
                }
                None => log::warn!(
                    "Ignoring unknown key in TOML for plugin plugin={uri} key={key} file={}",
                    path.display()
                ),
            }
        }
    }
    for (into, key, value) in moved {
        let target = table
            .entry(into)
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if let toml::Value::Table(target) = target {
            target.insert(key.to_string(), value);
        }
    }
}

/// A section's keys in the order containerd writes them.
pub type Section = Vec<(&'static str, toml::Value)>;

/// The server sections that stand for `config`'s listener settings in a version-4 file,
/// every key written (as containerd's `config dump` does). An unset ttrpc address is the
/// one ctrd derives: `<grpc address>.ttrpc`, with the gRPC socket's owner.
pub fn plugin_sections(config: &Config) -> Vec<(&'static str, Section)> {
    let grpc = &config.grpc;
    let mut grpc_section = vec![
        ("address", grpc.address.as_str().into()),
        ("uid", i64::from(grpc.uid).into()),
        ("gid", i64::from(grpc.gid).into()),
        ("max_recv_message_size", grpc.max_recv_message_size.into()),
        ("max_send_message_size", grpc.max_send_message_size.into()),
    ];
    if !grpc.group.is_empty() {
        grpc_section.push(("group", grpc.group.as_str().into()));
    }
    let ttrpc = &config.ttrpc;
    let (address, uid, gid, group) =
        if ttrpc.address.is_empty() && !grpc.address.starts_with("fd://") {
            (
                format!("{}.ttrpc", grpc.address),
                grpc.uid,
                grpc.gid,
                grpc.group.clone(),
            )
        } else {
            (
                ttrpc.address.clone(),
                ttrpc.uid,
                ttrpc.gid,
                ttrpc.group.clone(),
            )
        };
    let mut ttrpc_section = vec![
        ("address", address.into()),
        ("uid", i64::from(uid).into()),
        ("gid", i64::from(gid).into()),
    ];
    if !group.is_empty() {
        ttrpc_section.push(("group", group.into()));
    }
    vec![
        (
            DEBUG,
            vec![
                ("address", config.debug.address.as_str().into()),
                ("uid", i64::from(config.debug.uid).into()),
                ("gid", i64::from(config.debug.gid).into()),
            ],
        ),
        (GRPC, grpc_section),
        (
            GRPC_TCP,
            vec![
                ("address", grpc.tcp_address.as_str().into()),
                ("tls_ca", grpc.tcp_tls_ca.as_str().into()),
                ("tls_cert", grpc.tcp_tls_cert.as_str().into()),
                ("tls_key", grpc.tcp_tls_key.as_str().into()),
                ("tls_common_name", grpc.tcp_tls_common_name.as_str().into()),
                ("max_recv_message_size", grpc.max_recv_message_size.into()),
                ("max_send_message_size", grpc.max_send_message_size.into()),
            ],
        ),
        (
            METRICS,
            vec![("address", config.metrics.address.as_str().into())],
        ),
        (TTRPC, ttrpc_section),
        (
            GRPC_PROMETHEUS,
            vec![("grpc_histogram", config.metrics.grpc_histogram.into())],
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_sections_become_the_top_level_tables() {
        let mut table: toml::Table = toml::from_str(
            "version = 4\n\
             [plugins.'io.containerd.server.v1.grpc']\naddress = '/run/a.sock'\ngid = 7\ngroup = 'ctrd'\n\
             [plugins.'io.containerd.server.v1.grpc-tcp']\naddress = '127.0.0.1:1'\ntls_cert = '/c'\n\
             [plugins.'io.containerd.server.v1.ttrpc']\naddress = '/run/a.sock.ttrpc'\nbogus = 1\n\
             [plugins.'io.containerd.server.v1.metrics']\naddress = '127.0.0.1:2'\n\
             [plugins.'io.containerd.metrics.v1.grpc-prometheus']\ngrpc_histogram = true\n\
             [plugins.'io.containerd.gc.v1.scheduler']\nstartup_delay = '1s'\n",
        )
        .expect("toml");
        into_core(Path::new("c.toml"), &mut table);
        assert_eq!(table["grpc"]["address"].as_str(), Some("/run/a.sock"));
        assert_eq!(table["grpc"]["gid"].as_integer(), Some(7));
        assert_eq!(table["grpc"]["group"].as_str(), Some("ctrd"));
        assert_eq!(table["grpc"]["tcp_address"].as_str(), Some("127.0.0.1:1"));
        assert_eq!(table["grpc"]["tcp_tls_cert"].as_str(), Some("/c"));
        assert_eq!(
            table["ttrpc"]["address"].as_str(),
            Some("/run/a.sock.ttrpc")
        );
        assert!(
            table["ttrpc"].get("bogus").is_none(),
            "unknown keys stay out"
        );
        assert_eq!(table["metrics"]["address"].as_str(), Some("127.0.0.1:2"));
        assert_eq!(table["metrics"]["grpc_histogram"].as_bool(), Some(true));
        let plugins = table["plugins"].as_table().expect("plugins");
        assert_eq!(
            plugins.keys().collect::<Vec<_>>(),
            ["io.containerd.gc.v1.scheduler"]
        );
    }

    #[test]
    fn sections_written_from_the_model() {
        let mut config = Config::default();
        config.grpc.address = "/run/ctrd/ctrd.sock".into();
        config.grpc.gid = 9;
        config.debug.address = "/run/ctrd/debug.sock".into();
        let sections = plugin_sections(&config);
        let find = |uri: &str| -> toml::Table {
            sections
                .iter()
                .find(|(u, _)| *u == uri)
                .map(|(_, t)| t.iter().map(|(k, v)| (k.to_string(), v.clone())).collect())
                .expect("section")
        };
        assert_eq!(
            find(TTRPC)["address"].as_str(),
            Some("/run/ctrd/ctrd.sock.ttrpc")
        );
        assert_eq!(find(TTRPC)["gid"].as_integer(), Some(9));
        assert_eq!(
            find(GRPC)["max_recv_message_size"].as_integer(),
            Some(16 << 20)
        );
        assert_eq!(
            find(DEBUG)["address"].as_str(),
            Some("/run/ctrd/debug.sock")
        );
        assert_eq!(find(GRPC_TCP)["tls_ca"].as_str(), Some(""));
        assert!(!find(GRPC).contains_key("group"));
    }
}
