//! containerd's daemon configuration for ctrd: the version-3 schema of containerd 2.0–2.2,
//! and version 4 (containerd 2.3+, listeners in `io.containerd.server.v1.*` sections, `v4.rs`)
//! mapped onto it.
//!
//! What it owns:
//! - the typed schema and its defaults ([`Config`], `schema.rs`);
//! - loading a file with its imports, each file migrated on its own, merged with containerd's
//!   rules and layered over the defaults ([`load`]; `load.rs`, `imports.rs`, `merge.rs`,
//!   `migrate.rs`, `keys.rs`);
//! - a plugin's `[plugins."<uri>"]` section decoded over the plugin's typed defaults
//!   ([`decode_plugin`], `plugin.rs`);
//! - the TOML text `config default` / `config dump` print ([`to_toml`], `output.rs`);
//! - Go's duration syntax for `[timeouts]` and plugin settings (`duration.rs`).
//!
//! Everything here runs on the main thread before the daemon starts anything. Problems the
//! user can fix and that do not stop loading (unknown keys, migrations, ambiguous v1 names)
//! are logged at warn; everything else is a [`ConfigError`] naming the file, and for syntax
//! and type errors the row and column.

mod duration;
mod imports;
mod keys;
mod load;
mod merge;
mod migrate;
mod output;
mod plugin;
mod schema;
#[cfg(test)]
mod testlog;
mod v4;

use std::path::PathBuf;

pub use duration::{format_duration, parse_duration, parse_timeouts, GoDuration};
pub use load::load;
pub use migrate::short_id_to_uri;
pub use output::{to_toml, to_toml_version};
pub use plugin::decode_plugin;
pub use schema::{
    default_stream_processors, default_timeouts, CgroupConfig, Config, DebugConfig, GrpcConfig,
    MetricsConfig, ProxyPlugin, StreamProcessor, TtrpcConfig, DEFAULT_IMPORTS,
    DEFAULT_MAX_MESSAGE_SIZE,
};

/// The schema version ctrd works in and writes by default (containerd 2.0–2.2's layout).
pub const CONFIG_VERSION: i64 = 3;

/// The newest schema version ctrd reads (and writes when asked): containerd 2.3's.
pub const MAX_CONFIG_VERSION: i64 = 4;

/// A per-plugin config migration: called once per version step `from_version` (1, then 2)
/// with the `plugins` table of the file being migrated.
pub type PluginMigration = fn(from_version: i64, plugins: &mut toml::Table) -> Result<(), String>;

/// Why a configuration could not be loaded, decoded or printed.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file (or a plain import) could not be read.
    #[error("failed to load TOML from {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Bad TOML, or a value of the wrong type for its key.
    #[error("{path}: failed to unmarshal TOML at row {row} column {column}: {message}")]
    Syntax {
        path: PathBuf,
        row: usize,
        column: usize,
        message: String,
    },
    /// A decoding problem without a position in the file.
    #[error("{path}: failed to unmarshal TOML: {message}")]
    Decode { path: PathBuf, message: String },
    /// An import pattern that is not a valid glob.
    #[error("import {pattern}: syntax error in pattern")]
    Pattern { pattern: PathBuf },
    /// An import pattern that would look at too many directory entries.
    #[error("import {pattern}: pattern looks at more than {max} paths")]
    PatternTooBroad { pattern: PathBuf, max: usize },
    #[error("expected containerd config version equal to or less than `{max}`, got `{got}`")]
    Version { max: i64, got: i64 },
    /// `kind` is `disabled` or `required`.
    #[error("invalid {kind} plugin URI {uri:?} expect io.containerd.x.vx")]
    PluginUri { kind: &'static str, uri: String },
    /// A plugin's own migration refused the file.
    #[error("{path}: migrating plugin configuration from version {version}: {message}")]
    Migration {
        path: PathBuf,
        version: i64,
        message: String,
    },
    /// A plugin section that does not fit the plugin's config type; `key` is the dotted key
    /// at fault, empty when it could not be singled out.
    #[error("failed to decode config for plugin {plugin}{}: {message}", key_suffix(.key))]
    Plugin {
        plugin: String,
        key: String,
        message: String,
    },
    #[error("unable to parse {0} into a time duration")]
    Duration(String),
    /// A value that cannot be turned into TOML.
    #[error("encoding config: {0}")]
    Encode(String),
}

fn key_suffix(key: &str) -> String {
    if key.is_empty() {
        String::new()
    } else {
        format!(" key {key}")
    }
}
