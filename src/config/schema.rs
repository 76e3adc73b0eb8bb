//! The typed schema and its defaults: containerd 2.2's, except for the drop-in import
//! directory (ctrd's own) and the timeouts (without CRI's).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// ctrd's own drop-in pattern: listed in the default `imports` (so `config default` writes it),
/// and, as with containerd, only read when a loaded file lists it.
pub const DEFAULT_IMPORTS: &str = "/etc/ctrd/conf.d/*.toml";

/// The whole configuration; missing keys take [`Config::default`]'s values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    pub version: i64,
    pub root: String,
    pub state: String,
    pub temp: String,
    /// Deprecated directory of dynamic plugins; accepted, warned about, never loaded.
    pub plugin_dir: String,
    pub disabled_plugins: Vec<String>,
    pub required_plugins: Vec<String>,
    pub oom_score: i64,
    pub imports: Vec<String>,
    pub grpc: GrpcConfig,
    pub ttrpc: TtrpcConfig,
    pub debug: DebugConfig,
    pub metrics: MetricsConfig,
    pub cgroup: CgroupConfig,
    pub timeouts: BTreeMap<String, String>,
    pub proxy_plugins: BTreeMap<String, ProxyPlugin>,
    pub stream_processors: BTreeMap<String, StreamProcessor>,
    pub plugins: toml::Table,
}

/// The main gRPC socket and the optional TCP listener.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GrpcConfig {
    pub address: String,
    pub tcp_address: String,
    pub tcp_tls_ca: String,
    pub tcp_tls_cert: String,
    pub tcp_tls_key: String,
    pub uid: u32,
    pub gid: u32,
    pub max_recv_message_size: i64,
    pub max_send_message_size: i64,
    pub tcp_tls_common_name: String,
    /// ctrd's own: the socket's group by name or number (instead of `gid`).
    pub group: String,
    /// ctrd's own: threads of the worker pool that runs slow calls (0: the default, 8).
    pub workers: usize,
    /// ctrd's own: connections the unix socket serves at once (0: the default, 512).
    pub max_connections: usize,
}

/// The ttrpc socket; an empty address derives from the gRPC one.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TtrpcConfig {
    pub address: String,
    pub uid: u32,
    pub gid: u32,
    /// ctrd's own: the socket's group by name or number (instead of `gid`).
    pub group: String,
    /// ctrd's own: connections served at once (0: the default).
    pub max_connections: usize,
}

/// The debug endpoint and the log level and format.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DebugConfig {
    pub address: String,
    pub uid: u32,
    pub gid: u32,
    pub level: String,
    pub format: String,
    /// containerd 2.3's trace-id log field (version 4 files); accepted, not used.
    pub log_trace_id: bool,
    /// ctrd's own: connections served at once (0: the default).
    pub max_connections: usize,
}

/// The Prometheus endpoint.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MetricsConfig {
    pub address: String,
    pub grpc_histogram: bool,
    /// ctrd's own: connections served at once (0: the default).
    pub max_connections: usize,
}

/// The cgroup the daemon moves itself into.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CgroupConfig {
    pub path: String,
}

/// An external plugin reached over gRPC.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProxyPlugin {
    #[serde(rename = "type")]
    pub r#type: String,
    pub address: String,
    pub platform: String,
    pub exports: BTreeMap<String, String>,
    pub capabilities: Vec<String>,
}

/// A binary that turns one layer media type into another while diffs are applied.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StreamProcessor {
    pub accepts: Vec<String>,
    pub returns: String,
    pub path: String,
    pub args: Vec<String>,
    pub env: Vec<String>,
}

/// The 16 MiB limit containerd uses both ways.
pub const DEFAULT_MAX_MESSAGE_SIZE: i64 = 16 << 20;

impl Default for GrpcConfig {
    fn default() -> Self {
        GrpcConfig {
            address: "/run/containerd/containerd.sock".into(),
            tcp_address: String::new(),
            tcp_tls_ca: String::new(),
            tcp_tls_cert: String::new(),
            tcp_tls_key: String::new(),
            uid: 0,
            gid: 0,
            max_recv_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            max_send_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            tcp_tls_common_name: String::new(),
            group: String::new(),
            workers: 0,
            max_connections: 0,
        }
    }
}

/// The registered timeouts and their defaults (containerd's, without CRI's).
pub fn default_timeouts() -> BTreeMap<String, String> {
    [
        ("io.containerd.timeout.bolt.open", "0s"),
        ("io.containerd.timeout.metrics.shimstats", "2s"),
        ("io.containerd.timeout.shim.cleanup", "5s"),
        ("io.containerd.timeout.shim.load", "5s"),
        ("io.containerd.timeout.shim.shutdown", "3s"),
        ("io.containerd.timeout.task.state", "2s"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// The two ocicrypt layer decoders containerd configures by default.
pub fn default_stream_processors() -> BTreeMap<String, StreamProcessor> {
    let decoder = |accepts: &str, returns: &str| StreamProcessor {
        accepts: vec![accepts.into()],
        returns: returns.into(),
        path: "ctd-decoder".into(),
        args: vec![
            "--decryption-keys-path".into(),
            "/etc/containerd/ocicrypt/keys".into(),
        ],
        env: vec![
            "OCICRYPT_KEYPROVIDER_CONFIG=/etc/containerd/ocicrypt/ocicrypt_keyprovider.conf".into(),
        ],
    };
    BTreeMap::from([
        (
            "io.containerd.ocicrypt.decoder.v1.tar".to_string(),
            decoder(
                "application/vnd.oci.image.layer.v1.tar+encrypted",
                "application/vnd.oci.image.layer.v1.tar",
            ),
        ),
        (
            "io.containerd.ocicrypt.decoder.v1.tar.gzip".to_string(),
            decoder(
                "application/vnd.oci.image.layer.v1.tar+gzip+encrypted",
                "application/vnd.oci.image.layer.v1.tar+gzip",
            ),
        ),
    ])
}

impl Default for Config {
    fn default() -> Self {
        Config {
            version: super::CONFIG_VERSION,
            root: "/var/lib/containerd".into(),
            state: "/run/containerd".into(),
            temp: String::new(),
            plugin_dir: String::new(),
            disabled_plugins: Vec::new(),
            required_plugins: Vec::new(),
            oom_score: 0,
            imports: vec![DEFAULT_IMPORTS.into()],
            grpc: GrpcConfig::default(),
            ttrpc: TtrpcConfig::default(),
            debug: DebugConfig::default(),
            metrics: MetricsConfig::default(),
            cgroup: CgroupConfig::default(),
            timeouts: default_timeouts(),
            proxy_plugins: BTreeMap::new(),
            stream_processors: default_stream_processors(),
            plugins: toml::Table::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_containerds_with_ctrds_import_dir() {
        let config = Config::default();
        assert_eq!(config.version, 3);
        assert_eq!(config.root, "/var/lib/containerd");
        assert_eq!(config.state, "/run/containerd");
        assert_eq!(config.grpc.address, "/run/containerd/containerd.sock");
        assert_eq!(config.grpc.max_recv_message_size, 16_777_216);
        assert_eq!(config.grpc.max_send_message_size, 16_777_216);
        assert_eq!(config.imports, ["/etc/ctrd/conf.d/*.toml"]);
        assert!(config.plugins.is_empty());
        assert!(config.proxy_plugins.is_empty());
        assert_eq!(config.timeouts.len(), 6);
        assert!(!config
            .timeouts
            .contains_key("io.containerd.timeout.cri.defercleanup"));
        assert_eq!(config.timeouts["io.containerd.timeout.shim.shutdown"], "3s");
        let gzip = &config.stream_processors["io.containerd.ocicrypt.decoder.v1.tar.gzip"];
        assert_eq!(gzip.returns, "application/vnd.oci.image.layer.v1.tar+gzip");
        assert_eq!(gzip.path, "ctd-decoder");
    }

    #[test]
    fn missing_keys_take_defaults() {
        let config: Config = toml::from_str("[grpc]\naddress = '/x.sock'\n").expect("toml");
        assert_eq!(config.grpc.address, "/x.sock");
        assert_eq!(config.grpc.max_recv_message_size, DEFAULT_MAX_MESSAGE_SIZE);
        assert_eq!(config.root, "/var/lib/containerd");
    }
}
