//! `io.containerd.snapshotter.v1.overlayfs`, with containerd's config keys.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{check, Options, Overlay, OverlayConfig};
use crate::errdefs::Error;
use crate::plugin::{types, Instance, Registration};
use crate::snapshots::SnapshotterHandle;

/// `io.containerd.snapshotter.v1.overlayfs`: skipped, with the reason, where the root's
/// file system or the kernel cannot do overlay.
pub fn registration() -> Registration {
    Registration::new(types::SNAPSHOT, "overlayfs", |ic| {
        let config = ic.config::<OverlayConfig>()?.clone();
        ic.meta.platforms.push(crate::platforms::host());
        let root = if config.root_path.is_empty() {
            ic.root()
        } else {
            std::path::PathBuf::from(&config.root_path)
        };
        create_root(&root)
            .map_err(|err| Error::from(err).context(format!("create {}", root.display())))?;
        let check = check::supported_prestarted(&root)
            .map_err(|reason| crate::plugin::skip(format!("overlay not supported: {reason}")))?;
        let overlay = Overlay::open(&root, Options::for_root(&config, &root))?;
        ic.meta
            .exports
            .insert("root".into(), root.to_string_lossy().into_owned());
        // The check's test mount is undone in the background; waited for at shutdown.
        Ok(
            Instance::new(Arc::new(SnapshotterHandle(Arc::new(overlay))))
                .with_close(move || check.wait()),
        )
    })
    .config::<OverlayConfig>()
}

const URI: &str = "io.containerd.snapshotter.v1.overlayfs";

fn create_root(root: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(root)
}

/// Starts the plugin's overlay check (its test mount is the slowest step of a start) before
/// the plugins, when the plugin is enabled and its root can be made: the check then runs
/// beside the start-up work up to the plugin's turn. The plugin decides as before, and
/// reports any error in its config itself.
pub fn prestart_check(config: &crate::config::Config) {
    if let Some(root) = check_root_ahead(config) {
        if create_root(&root).is_ok() {
            check::prestart(&root);
        }
    }
}

/// The root the plugin will check, as its init works it out (`root_path`, else
/// `<root>/<uri>`); None when the plugin is disabled or `root_path` is not a string (the
/// plugin then reports the config error itself).
fn check_root_ahead(config: &crate::config::Config) -> Option<PathBuf> {
    if config.disabled_plugins.iter().any(|uri| uri == URI) {
        return None;
    }
    match config
        .plugins
        .get(URI)
        .and_then(|table| table.get("root_path"))
    {
        Some(toml::Value::String(path)) if !path.is_empty() => Some(PathBuf::from(path)),
        Some(toml::Value::String(_)) | None => Some(Path::new(&config.root).join(URI)),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(plugin: &str, disabled: &[&str]) -> crate::config::Config {
        let mut config = crate::config::Config {
            root: "/var/lib/ctrd".into(),
            disabled_plugins: disabled.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        if !plugin.is_empty() {
            let table: toml::Table = toml::from_str(plugin).expect("toml");
            config.plugins.insert(URI.into(), toml::Value::Table(table));
        }
        config
    }

    #[test]
    fn the_check_ahead_looks_where_the_plugin_will() {
        let default = Path::new("/var/lib/ctrd").join(URI);
        assert_eq!(check_root_ahead(&config("", &[])), Some(default.clone()));
        assert_eq!(
            check_root_ahead(&config("root_path = ''", &[])),
            Some(default)
        );
        assert_eq!(
            check_root_ahead(&config("root_path = '/data/ovl'", &[])),
            Some(PathBuf::from("/data/ovl"))
        );
        // Disabled (a proxy may take its place), or a root_path the plugin will refuse.
        assert_eq!(check_root_ahead(&config("", &[URI])), None);
        assert_eq!(check_root_ahead(&config("root_path = 7", &[])), None);
    }
}
