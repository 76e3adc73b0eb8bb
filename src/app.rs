//! What `main` does with a parsed command line: load the config, apply the flags, then run
//! the daemon or print configuration.

use std::path::Path;

use crate::cli::{Cli, Command, USAGE};
use crate::config::{self, Config, ConfigError, CONFIG_VERSION};
use crate::server::{self, ServerError};

/// Anything that makes `ctrd` exit non-zero.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Cli(#[from] crate::cli::CliError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Server(#[from] ServerError),
    #[error("invalid log level {0:?}")]
    LogLevel(String),
    #[error("grpc address cannot be empty: invalid argument")]
    EmptyAddress,
    #[error("{0}: {1}")]
    Path(String, std::io::Error),
}

/// Runs `ctrd` with `args` (without the program name).
pub fn run(args: Vec<String>) -> Result<(), AppError> {
    let cli = Cli::parse(args)?;
    match cli.command {
        Command::Help => {
            print!("{USAGE}");
            Ok(())
        }
        Command::Version => {
            println!("ctrd {} {}", crate::VERSION, crate::REVISION);
            Ok(())
        }
        Command::ConfigDefault => {
            crate::logging::init(log::LevelFilter::Warn, false);
            print!("{}", output_config(Config::default(), cli.to)?);
            Ok(())
        }
        Command::ConfigDump => {
            crate::logging::init(log::LevelFilter::Warn, false);
            let config = load_config(&cli)?;
            print!("{}", output_config(config, cli.to)?);
            Ok(())
        }
        Command::Run => {
            // Log what loading the config says at the level the flag asks for.
            let early = cli.log_level.as_deref().unwrap_or("info");
            let level = crate::logging::parse_level(early)
                .ok_or_else(|| AppError::LogLevel(early.into()))?;
            crate::logging::init(level, false);
            let mut config = load_config(&cli)?;
            apply_flags(&cli, &mut config)?;
            if cli.log_level.is_none() && !config.debug.level.is_empty() {
                let level = crate::logging::parse_level(&config.debug.level)
                    .ok_or_else(|| AppError::LogLevel(config.debug.level.clone()))?;
                log::set_max_level(level);
            }
            server::run(config)?;
            Ok(())
        }
    }
}

/// The config file when it exists or was named; the defaults otherwise.
fn load_config(cli: &Cli) -> Result<Config, AppError> {
    if !cli.config_explicit && !cli.config.exists() {
        return Ok(Config::default());
    }
    let registry = server::registry()?;
    let migrations: Vec<config::PluginMigration> = registry
        .registrations()
        .iter()
        .filter_map(|r| r.config_migration)
        .collect();
    Ok(config::load(&cli.config, &migrations)?)
}

/// `--root`, `--state` (made absolute), `--address` and the derived ttrpc address.
fn apply_flags(cli: &Cli, config: &mut Config) -> Result<(), AppError> {
    if let Some(root) = &cli.root {
        config.root = absolute(root)?;
    }
    if let Some(state) = &cli.state {
        config.state = absolute(state)?;
    }
    if let Some(address) = &cli.address {
        config.grpc.address = address.clone();
    }
    if config.grpc.address.is_empty() {
        return Err(AppError::EmptyAddress);
    }
    // An activated gRPC socket's ttrpc neighbour is settled once the passed sockets are known.
    if config.ttrpc.address.is_empty() && !config.grpc.address.starts_with("fd://") {
        config.ttrpc.address = format!("{}.ttrpc", config.grpc.address);
        config.ttrpc.uid = config.grpc.uid;
        config.ttrpc.gid = config.grpc.gid;
        config.ttrpc.group = config.grpc.group.clone();
    }
    Ok(())
}

fn absolute(path: &str) -> Result<String, AppError> {
    if path.is_empty() {
        return Ok(String::new());
    }
    std::path::absolute(Path::new(path))
        .map(|p| p.to_string_lossy().into_owned())
        .map_err(|err| AppError::Path(path.into(), err))
}

/// The config with every enabled plugin's section decoded over its defaults and the
/// registered timeouts filled in, as TOML of version `to` (default [`CONFIG_VERSION`]).
pub fn output_config(mut config: Config, to: Option<i64>) -> Result<String, AppError> {
    let registry = server::registry()?;
    let disabled = config.disabled_plugins.clone();
    for registration in registry
        .graph(|r| disabled.contains(&r.uri()))
        .map_err(ServerError::from)?
    {
        let Some(spec) = &registration.config else {
            continue;
        };
        let uri = registration.uri();
        let (_, table) = spec
            .decode(&uri, config.plugins.get(&uri))
            .map_err(|err| ServerError::PluginConfig(uri.clone(), err))?;
        config.plugins.insert(uri, toml::Value::Table(table));
    }
    for (key, value) in Config::default().timeouts {
        config.timeouts.entry(key).or_insert(value);
    }
    let version = to.unwrap_or(CONFIG_VERSION);
    config.version = version;
    Ok(config::to_toml_version(&config, version))
}
