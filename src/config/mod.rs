//! containerd's configuration (version-3 schema) for ctrd: the typed schema with its
//! defaults, loading with imports and merging, migration of versions 1 and 2, per-plugin
//! sections decoded over their defaults, and TOML output in containerd's style.
//!
//! Runs on the main thread before anything starts; errors name the file and, for syntax
//! errors, the row and column.

mod duration;
mod load;
mod migrate;
mod output;
mod plugin;
mod schema;

use std::path::PathBuf;

pub use duration::{format_duration, parse_duration, parse_timeouts};
pub use load::load;
pub use output::to_toml;
pub use plugin::decode_plugin;
pub use schema::{
    CgroupConfig, Config, DebugConfig, GrpcConfig, MetricsConfig, ProxyPlugin, StreamProcessor,
    TtrpcConfig, DEFAULT_IMPORTS,
};

/// The schema version ctrd reads and writes (containerd 2.0–2.2's layout).
pub const CONFIG_VERSION: i64 = 3;

/// A per-plugin config migration: called once per version step `from_version` (1, then 2)
/// with the `plugins` table of the file being migrated.
pub type PluginMigration = fn(from_version: i64, plugins: &mut toml::Table) -> Result<(), String>;

/// Why a configuration could not be loaded or used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("failed to load TOML from {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: failed to unmarshal TOML at row {row} column {column}: {message}")]
    Syntax {
        path: PathBuf,
        row: usize,
        column: usize,
        message: String,
    },
    #[error("{path}: {message}")]
    Decode { path: PathBuf, message: String },
    #[error("expected containerd config version equal to or less than `{max}`, got `{got}`")]
    Version { max: i64, got: i64 },
    #[error("invalid {kind} plugin URI {uri:?} expect io.containerd.x.vx")]
    PluginUri { kind: &'static str, uri: String },
    #[error("{path}: migrating plugin configuration from version {version}: {message}")]
    Migration {
        path: PathBuf,
        version: i64,
        message: String,
    },
    #[error("failed to decode config for plugin {plugin}: {message}")]
    Plugin { plugin: String, message: String },
    #[error("unable to parse {0} into a time duration")]
    Duration(String),
    #[error("encoding config: {0}")]
    Encode(String),
}
