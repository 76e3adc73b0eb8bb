//! The daemon's top-level directories: root 0700, state 0711, temp 0700 (and `TMPDIR`).

use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

use super::ServerError;
use crate::config::Config;

/// Validates and creates root, state and temp, repairing the mode of existing directories
/// (older layouts used 0711 for root).
pub fn create_top_level(config: &Config) -> Result<(), ServerError> {
    if config.root.is_empty() {
        return Err(ServerError::Dirs("root must be specified".into()));
    }
    if config.state.is_empty() {
        return Err(ServerError::Dirs("state must be specified".into()));
    }
    if config.root == config.state {
        return Err(ServerError::Dirs(
            "root and state must be different paths".into(),
        ));
    }
    make(Path::new(&config.root), 0o700)?;
    make(Path::new(&config.state), 0o711)?;
    if !config.temp.is_empty() {
        make(Path::new(&config.temp), 0o700)?;
        std::env::set_var("TMPDIR", &config.temp);
    }
    Ok(())
}

fn make(dir: &Path, mode: u32) -> Result<(), ServerError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(dir)
        .map_err(|err| ServerError::Dirs(format!("create {}: {err}", dir.display())))?;
    match fs::set_permissions(dir, fs::Permissions::from_mode(mode)) {
        Ok(()) => Ok(()),
        // Rootless without a user namespace cannot always chmod; keep going like containerd.
        Err(err) if err.kind() == std::io::ErrorKind::PermissionDenied => {
            log::warn!("cannot set mode {mode:o} on {}: {err}", dir.display());
            Ok(())
        }
        Err(err) => Err(ServerError::Dirs(format!("chmod {}: {err}", dir.display()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(root: &str, state: &str) -> Config {
        Config {
            root: root.into(),
            state: state.into(),
            ..Config::default()
        }
    }

    #[test]
    fn rejects_missing_or_equal_paths() {
        let msg = |c: &Config| create_top_level(c).expect_err("invalid").to_string();
        assert_eq!(msg(&config("", "/x")), "root must be specified");
        assert_eq!(msg(&config("/x", "")), "state must be specified");
        assert_eq!(
            msg(&config("/x", "/x")),
            "root and state must be different paths"
        );
    }

    #[test]
    fn creates_with_modes_and_repairs_root() {
        let base = tempfile::tempdir().expect("tempdir");
        let root = base.path().join("root");
        let state = base.path().join("state");
        fs::create_dir(&root).expect("mkdir");
        fs::set_permissions(&root, fs::Permissions::from_mode(0o711)).expect("chmod");
        create_top_level(&config(
            root.to_str().expect("utf8"),
            state.to_str().expect("utf8"),
        ))
        .expect("create");
        let mode = |p: &Path| fs::metadata(p).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode(&root), 0o700);
        assert_eq!(mode(&state), 0o711);
    }
}
