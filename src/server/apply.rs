//! Process-level settings from the config: `oom_score` and `cgroup.path`.

use std::fs;
use std::path::{Path, PathBuf};

use super::ServerError;
use crate::config::Config;

/// Applies `oom_score` (only logged on failure, like containerd) and moves the daemon into
/// `cgroup.path` (fatal on failure).
pub fn apply(config: &Config) -> Result<(), ServerError> {
    if config.oom_score != 0 {
        if !(-1000..=1000).contains(&config.oom_score) {
            return Err(ServerError::OomScore(format!(
                "{} is out of range (-1000..1000)",
                config.oom_score
            )));
        }
        if let Err(err) = set_oom_score(config.oom_score) {
            log::warn!("failed to apply oom_score {}: {err}", config.oom_score);
        }
    }
    if !config.cgroup.path.is_empty() {
        join_cgroup(
            Path::new("/sys/fs/cgroup"),
            &config.cgroup.path,
            std::process::id(),
        )?;
    }
    Ok(())
}

/// Checks the range and writes `/proc/self/oom_score_adj`.
pub fn set_oom_score(score: i64) -> Result<(), ServerError> {
    if !(-1000..=1000).contains(&score) {
        return Err(ServerError::OomScore(format!(
            "{score} is out of range (-1000..1000)"
        )));
    }
    match fs::write("/proc/self/oom_score_adj", score.to_string()) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::PermissionDenied => {
            log::debug!("oom_score_adj not permitted: {err}");
            Ok(())
        }
        Err(err) => Err(ServerError::OomScore(err.to_string())),
    }
}

/// Puts `pid` into the cgroup `path` under `mountpoint`, creating it when missing: on a
/// unified (v2) hierarchy through `cgroup.procs`, on v1 in every mounted controller.
pub fn join_cgroup(mountpoint: &Path, path: &str, pid: u32) -> Result<(), ServerError> {
    let relative = path.trim_start_matches('/');
    let fail = |what: &Path, err: std::io::Error| {
        ServerError::Cgroup(format!("{path}: {}: {err}", what.display()))
    };
    let targets: Vec<PathBuf> = if mountpoint.join("cgroup.controllers").exists() {
        vec![mountpoint.join(relative)]
    } else {
        let entries = fs::read_dir(mountpoint).map_err(|err| fail(mountpoint, err))?;
        entries
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.is_dir() && !p.is_symlink())
            .map(|p| p.join(relative))
            .collect()
    };
    if targets.is_empty() {
        return Err(ServerError::Cgroup(format!(
            "{path}: no cgroup hierarchy under {}",
            mountpoint.display()
        )));
    }
    for dir in targets {
        fs::create_dir_all(&dir).map_err(|err| fail(&dir, err))?;
        let procs = dir.join("cgroup.procs");
        fs::write(&procs, pid.to_string()).map_err(|err| fail(&procs, err))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oom_score_out_of_range_is_an_error() {
        assert!(set_oom_score(1001).is_err());
        assert!(set_oom_score(-1001).is_err());
    }

    #[test]
    fn joins_a_unified_hierarchy() {
        let fake = tempfile::tempdir().expect("tempdir");
        fs::write(fake.path().join("cgroup.controllers"), "cpu memory").expect("write");
        join_cgroup(fake.path(), "/ctrd/daemon", 4242).expect("join");
        let procs = fs::read_to_string(fake.path().join("ctrd/daemon/cgroup.procs")).expect("read");
        assert_eq!(procs, "4242");
    }

    #[test]
    fn joins_every_v1_controller() {
        let fake = tempfile::tempdir().expect("tempdir");
        for controller in ["cpu", "memory"] {
            fs::create_dir(fake.path().join(controller)).expect("mkdir");
        }
        join_cgroup(fake.path(), "ctrd", 7).expect("join");
        for controller in ["cpu", "memory"] {
            let procs = fake.path().join(controller).join("ctrd/cgroup.procs");
            assert_eq!(fs::read_to_string(procs).expect("read"), "7");
        }
    }
}
