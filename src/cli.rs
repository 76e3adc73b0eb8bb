//! Command-line parsing: `ctrd [flags]` runs the daemon; `ctrd config default|dump|migrate`
//! prints configuration.

use std::path::PathBuf;

/// The config file read when `--config` is not given (only if it exists).
pub const DEFAULT_CONFIG_PATH: &str = "/etc/ctrd/config.toml";

/// What the user asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Run,
    ConfigDefault,
    ConfigDump,
    Help,
    Version,
}

/// Parsed flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cli {
    pub command: Command,
    pub config: PathBuf,
    /// Whether `--config` was given (then the file must exist).
    pub config_explicit: bool,
    pub address: Option<String>,
    pub root: Option<String>,
    pub state: Option<String>,
    pub log_level: Option<String>,
    /// `config … --to N`: the schema version to print (3 when not given).
    pub to: Option<i64>,
}

/// A command line that cannot be understood.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CliError {
    #[error("flag provided but not defined: {0}")]
    UnknownFlag(String),
    #[error("flag needs an argument: {0}")]
    MissingValue(String),
    #[error("unknown command {0:?}; see 'ctrd --help'")]
    UnknownCommand(String),
    #[error("--to {0}: ctrd writes config version 3 or 4")]
    BadVersion(String),
}

pub const USAGE: &str = "\
ctrd — a lean containerd-compatible daemon

USAGE:
    ctrd [FLAGS]                      run the daemon in the foreground
    ctrd [FLAGS] config default       print the default configuration
    ctrd [FLAGS] config dump          print the configuration in use (after imports and migration)
    ctrd [FLAGS] config migrate       same as dump: the configuration in the current version
        [--to 3|4]                    with config default/dump/migrate: the version to write
                                      (3, containerd 2.0-2.2's layout, unless 4 is asked for)
    ctrd check [-a SOCK] [-c CFG] [--timeout 2s] [--wait 30s] [--quiet]
                                      ask whether the daemon is serving (exit 0/1/2, 3 usage)

FLAGS:
    -c, --config <path>     configuration file (default /etc/ctrd/config.toml, read if it exists)
    -a, --address <path>    gRPC socket (the ttrpc socket is <path>.ttrpc unless configured)
        --root <dir>        persistent data directory
        --state <dir>       runtime state directory
    -l, --log-level <lvl>   trace, debug, info, warn, error, fatal or panic
    -v, --version           print the version and exit
    -h, --help              print this help and exit
";

impl Cli {
    /// Parses arguments (without the program name).
    pub fn parse<I, S>(args: I) -> Result<Cli, CliError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut cli = Cli {
            command: Command::Run,
            config: PathBuf::from(DEFAULT_CONFIG_PATH),
            config_explicit: false,
            address: None,
            root: None,
            state: None,
            log_level: None,
            to: None,
        };
        let mut positional = Vec::new();
        let mut args = args.into_iter().map(Into::into);
        while let Some(arg) = args.next() {
            if !arg.starts_with('-') || arg == "-" {
                positional.push(arg);
                continue;
            }
            let (flag, inline) = match arg.split_once('=') {
                Some((flag, value)) => (flag.to_string(), Some(value.to_string())),
                None => (arg.clone(), None),
            };
            let mut value = |name: &str| -> Result<String, CliError> {
                match inline.clone() {
                    Some(v) => Ok(v),
                    None => args
                        .next()
                        .ok_or_else(|| CliError::MissingValue(name.into())),
                }
            };
            match flag.trim_start_matches('-') {
                "c" | "config" => {
                    cli.config = PathBuf::from(value(&flag)?);
                    cli.config_explicit = true;
                }
                "a" | "address" => cli.address = Some(value(&flag)?),
                "root" => cli.root = Some(value(&flag)?),
                "state" => cli.state = Some(value(&flag)?),
                "l" | "log-level" => cli.log_level = Some(value(&flag)?),
                "to" => {
                    let text = value(&flag)?;
                    match text.parse::<i64>() {
                        Ok(v @ 3..=4) => cli.to = Some(v),
                        _ => return Err(CliError::BadVersion(text)),
                    }
                }
                "v" | "version" => cli.command = Command::Version,
                "h" | "help" => cli.command = Command::Help,
                _ => return Err(CliError::UnknownFlag(flag)),
            }
        }
        if matches!(cli.command, Command::Help | Command::Version) {
            return Ok(cli);
        }
        match positional.iter().map(String::as_str).collect::<Vec<_>>()[..] {
            [] => {}
            ["config", "default"] => cli.command = Command::ConfigDefault,
            ["config", "dump"] | ["config", "migrate"] => cli.command = Command::ConfigDump,
            ["help"] | ["config"] => cli.command = Command::Help,
            _ => return Err(CliError::UnknownCommand(positional.join(" "))),
        }
        Ok(cli)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_run_with_default_config() {
        let cli = Cli::parse(Vec::<String>::new()).expect("parse");
        assert_eq!(cli.command, Command::Run);
        assert_eq!(cli.config, PathBuf::from(DEFAULT_CONFIG_PATH));
        assert!(!cli.config_explicit);
    }

    #[test]
    fn short_long_and_inline_flags() {
        let cli = Cli::parse([
            "-c",
            "/x.toml",
            "--address=/run/a.sock",
            "--root",
            "r",
            "--state=s",
            "-l",
            "debug",
        ])
        .expect("parse");
        assert!(cli.config_explicit);
        assert_eq!(cli.config, PathBuf::from("/x.toml"));
        assert_eq!(cli.address.as_deref(), Some("/run/a.sock"));
        assert_eq!(cli.root.as_deref(), Some("r"));
        assert_eq!(cli.state.as_deref(), Some("s"));
        assert_eq!(cli.log_level.as_deref(), Some("debug"));
    }

    #[test]
    fn config_subcommands() {
        let cmd = |args: &[&str]| Cli::parse(args.iter().copied()).expect("parse").command;
        assert_eq!(cmd(&["config", "default"]), Command::ConfigDefault);
        assert_eq!(cmd(&["-c", "f", "config", "dump"]), Command::ConfigDump);
        assert_eq!(cmd(&["config", "migrate"]), Command::ConfigDump);
        assert_eq!(cmd(&["--version"]), Command::Version);
        assert_eq!(cmd(&["-h"]), Command::Help);
    }

    #[test]
    fn config_output_version() {
        let cli = Cli::parse(["config", "migrate", "--to", "4"]).expect("parse");
        assert_eq!((cli.command, cli.to), (Command::ConfigDump, Some(4)));
        assert_eq!(
            Cli::parse(["config", "dump", "--to=5"]).expect_err("5"),
            CliError::BadVersion("5".into())
        );
        assert_eq!(Cli::parse(["config", "dump"]).expect("parse").to, None);
    }

    #[test]
    fn bad_command_lines() {
        assert_eq!(
            Cli::parse(["--bogus"]).expect_err("flag"),
            CliError::UnknownFlag("--bogus".into())
        );
        assert_eq!(
            Cli::parse(["--root"]).expect_err("value"),
            CliError::MissingValue("--root".into())
        );
        assert_eq!(
            Cli::parse(["frobnicate"]).expect_err("command"),
            CliError::UnknownCommand("frobnicate".into())
        );
    }
}
