//! A task's bundle: the directory a shim runs in, `<state>/<plugin>/<ns>/<id>/`.
//!
//! Created before the shim starts: `config.json` (the container's spec as stored),
//! `rootfs/` (the shim mounts the root filesystem there), `work` (a link to
//! `<root>/<plugin>/<ns>/<id>`, kept across reboots), and the `log` FIFO (see
//! [`super::monitor`]). The shim adds `address`, `init.pid`, `options.json`, … ; ctrd adds
//! `shim-binary-path` after a successful start and `exit.json` whenever the task's init
//! process exits.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::errdefs::Error;

/// The file holding the absolute path of the shim binary that serves the bundle.
pub const SHIM_BINARY_PATH: &str = "shim-binary-path";

/// The file the shim writes its socket address to.
pub const ADDRESS: &str = "address";

/// The file ctrd records the init process's exit in.
pub const EXIT: &str = "exit.json";

/// The shim's log FIFO.
pub const LOG: &str = "log";

/// The annotation the runc shim groups containers on (one shim per distinct value).
pub const GROUP_ANNOTATION: &str = "io.containerd.runc.v2.group";

/// A process exit as ctrd keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    pub pid: u32,
    pub status: u32,
    pub at: SystemTime,
}

/// One task's bundle directory.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub namespace: String,
    pub id: String,
    pub path: PathBuf,
    /// `<root>/<plugin>/<ns>/<id>`: the target of the `work` link.
    pub work: PathBuf,
}

fn io_err(what: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> Error {
    move |err| Error::from(err).context(what)
}

fn mkdir(path: &Path, mode: u32) -> Result<(), Error> {
    match fs::DirBuilder::new().mode(mode).create(path) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(err) => Err(io_err(format!("create {}", path.display()))(err)),
    }
}

impl Bundle {
    /// Where the bundle of `ns`/`id` lives (it may not exist).
    pub fn at(state: &Path, root: &Path, namespace: &str, id: &str) -> Bundle {
        Bundle {
            namespace: namespace.to_string(),
            id: id.to_string(),
            path: state.join(namespace).join(id),
            work: root.join(namespace).join(id),
        }
    }

    /// Creates the bundle with `config.json` = `spec`, before its shim starts.
    pub fn create(
        state: &Path,
        root: &Path,
        namespace: &str,
        id: &str,
        spec: &[u8],
    ) -> Result<Bundle, Error> {
        crate::identifiers::validate(id).map_err(|err| err.context("invalid task id"))?;
        let bundle = Bundle::at(state, root, namespace, id);
        for dir in [
            state.to_path_buf(),
            state.join(namespace),
            root.to_path_buf(),
            root.join(namespace),
        ] {
            mkdir(&dir, 0o711)?;
        }
        match fs::DirBuilder::new().mode(0o700).create(&bundle.path) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(Error::already_exists(format!(
                    "bundle {}: already exists",
                    bundle.path.display()
                )))
            }
            Err(err) => return Err(io_err("create bundle")(err)),
        }
        let made = (|| {
            // A work directory left from an earlier task of the same id starts afresh.
            if bundle.work.exists() {
                fs::remove_dir_all(&bundle.work).map_err(io_err("remove old work dir"))?;
            }
            mkdir(&bundle.work, 0o711)?;
            std::os::unix::fs::symlink(&bundle.work, bundle.path.join("work"))
                .map_err(io_err("link work dir"))?;
            mkdir(&bundle.path.join("rootfs"), 0o711)?;
            write_file(&bundle.path.join("config.json"), spec, 0o666)
        })();
        if let Err(err) = made {
            let _ = bundle.delete();
            return Err(err);
        }
        Ok(bundle)
    }

    pub fn rootfs(&self) -> PathBuf {
        self.path.join("rootfs")
    }

    pub fn log_path(&self) -> PathBuf {
        self.path.join(LOG)
    }

    /// The shim's socket address as it wrote it (`unix:///run/containerd/s/…`).
    pub fn address(&self) -> Result<String, Error> {
        let text = fs::read_to_string(self.path.join(ADDRESS)).map_err(io_err("read address"))?;
        Ok(text.trim().to_string())
    }

    pub fn write_shim_binary(&self, binary: &Path) -> Result<(), Error> {
        write_file(
            &self.path.join(SHIM_BINARY_PATH),
            binary.as_os_str().as_encoded_bytes(),
            0o600,
        )
    }

    pub fn shim_binary(&self) -> Option<PathBuf> {
        let text = fs::read_to_string(self.path.join(SHIM_BINARY_PATH)).ok()?;
        let text = text.trim();
        (!text.is_empty()).then(|| PathBuf::from(text))
    }

    /// Records the init process's exit, so a later cleanup reports the real status.
    pub fn write_exit(&self, exit: &Exit) -> Result<(), Error> {
        let since = exit
            .at
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let text = serde_json::json!({
            "pid": exit.pid,
            "exit_status": exit.status,
            "exited_at_seconds": since.as_secs(),
            "exited_at_nanos": since.subsec_nanos(),
        })
        .to_string();
        write_file(&self.path.join(EXIT), text.as_bytes(), 0o600)
    }

    /// The exit recorded by [`Bundle::write_exit`], if any.
    pub fn read_exit(&self) -> Option<Exit> {
        let text = fs::read(self.path.join(EXIT)).ok()?;
        let value: serde_json::Value = serde_json::from_slice(&text).ok()?;
        let field = |name: &str| value.get(name).and_then(serde_json::Value::as_u64);
        Some(Exit {
            pid: u32::try_from(field("pid")?).ok()?,
            status: u32::try_from(field("exit_status")?).ok()?,
            at: std::time::UNIX_EPOCH
                + std::time::Duration::new(
                    field("exited_at_seconds")?,
                    u32::try_from(field("exited_at_nanos")?).ok()?,
                ),
        })
    }

    /// Unmounts everything under `rootfs`, then removes the bundle and its work directory
    /// (renamed to a dot-name first, so a half-removed bundle is never taken for a task).
    pub fn delete(&self) -> Result<(), Error> {
        let rootfs = self.rootfs();
        unmount_all(&rootfs)?;
        match fs::remove_dir(&rootfs) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(io_err(format!("remove {}", rootfs.display()))(err)),
        }
        for dir in [&self.path, &self.work] {
            remove_renamed(dir)?;
        }
        Ok(())
    }
}

/// Unmounts `path` until nothing is mounted there any more.
pub fn unmount_all(path: &Path) -> Result<(), Error> {
    for _ in 0..64 {
        match crate::sys::unmount(path, 0) {
            Ok(()) => continue,
            // EINVAL: not a mount point; ENOENT: gone already.
            Err(err) if matches!(err.raw_os_error(), Some(libc::EINVAL | libc::ENOENT)) => {
                return Ok(())
            }
            Err(err) if err.raw_os_error() == Some(libc::EBUSY) => {
                return crate::sys::unmount(path, libc::MNT_DETACH)
                    .map_err(io_err(format!("unmount {}", path.display())));
            }
            Err(err) => return Err(io_err(format!("unmount {}", path.display()))(err)),
        }
    }
    Err(Error::internal(format!(
        "unmount {}: still mounted after 64 unmounts",
        path.display()
    )))
}

fn remove_renamed(dir: &Path) -> Result<(), Error> {
    let (Some(parent), Some(name)) = (dir.parent(), dir.file_name()) else {
        return Ok(());
    };
    let mut hidden = std::ffi::OsString::from(".");
    hidden.push(name);
    let hidden = parent.join(hidden);
    match fs::rename(dir, &hidden) {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            if !hidden.exists() {
                return Ok(());
            }
        }
        Err(err) => return Err(io_err(format!("rename {}", dir.display()))(err)),
    }
    fs::remove_dir_all(&hidden).map_err(io_err(format!("remove {}", hidden.display())))
}

/// Writes `data` to a temporary file next to `path` and renames it into place.
pub fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<(), Error> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let written = (|| {
        let mut file = fs::File::create(&tmp)?;
        file.write_all(data)?;
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        fs::rename(&tmp, path)
    })();
    written.map_err(|err| {
        let _ = fs::remove_file(&tmp);
        io_err(format!("write {}", path.display()))(err)
    })
}

/// The spec with the runc shim's grouping annotation set to `group` (ctrd's `shim_group`).
/// The stored spec is never changed; only the bundle's copy carries it.
pub fn with_group_annotation(spec: &[u8], group: &str) -> Result<Vec<u8>, Error> {
    let mut value: serde_json::Value = serde_json::from_slice(spec)
        .map_err(|err| Error::invalid_argument(format!("spec is not valid JSON: {err}")))?;
    let object = value
        .as_object_mut()
        .ok_or_else(|| Error::invalid_argument("spec is not a JSON object"))?;
    let annotations = object
        .entry("annotations")
        .or_insert_with(|| serde_json::Value::Object(Default::default()));
    let annotations = annotations
        .as_object_mut()
        .ok_or_else(|| Error::invalid_argument("spec annotations are not an object"))?;
    annotations.insert(GROUP_ANNOTATION.to_string(), group.into());
    serde_json::to_vec(&value).map_err(|err| Error::internal(format!("encode spec: {err}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_lays_out_the_bundle_and_delete_removes_it() {
        let dir = tempfile::tempdir().unwrap();
        let (state, root) = (dir.path().join("state"), dir.path().join("root"));
        let spec = br#"{"ociVersion":"1.0.2-dev","z":1,"a":2}"#;
        let bundle = Bundle::create(&state, &root, "default", "t1", spec).unwrap();
        assert_eq!(bundle.path, state.join("default/t1"));
        assert_eq!(fs::read(bundle.path.join("config.json")).unwrap(), spec);
        assert_eq!(
            fs::read_link(bundle.path.join("work")).unwrap(),
            root.join("default/t1")
        );
        assert!(bundle.rootfs().is_dir());
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&bundle.path), 0o700);
        assert_eq!(mode(&bundle.rootfs()), 0o711);

        let err = Bundle::create(&state, &root, "default", "t1", spec).unwrap_err();
        assert_eq!(err.class(), crate::errdefs::Class::AlreadyExists);

        let exit = Exit {
            pid: 42,
            status: 3,
            at: std::time::UNIX_EPOCH + std::time::Duration::new(1_700_000_000, 123),
        };
        bundle.write_exit(&exit).unwrap();
        assert_eq!(bundle.read_exit(), Some(exit));

        bundle.delete().unwrap();
        assert!(!bundle.path.exists());
        assert!(!root.join("default/t1").exists());
        assert_eq!(fs::read_dir(state.join("default")).unwrap().count(), 0);
        bundle.delete().expect("deleting twice is fine");
    }

    #[test]
    fn bad_ids_make_no_bundle() {
        let dir = tempfile::tempdir().unwrap();
        let err = Bundle::create(dir.path(), dir.path(), "default", "../x", b"{}").unwrap_err();
        assert_eq!(err.class(), crate::errdefs::Class::InvalidArgument);
    }

    #[test]
    fn group_annotation_goes_into_the_copy() {
        let spec = br#"{"ociVersion":"1.0.2","annotations":{"k":"v"}}"#;
        let out = with_group_annotation(spec, "default").unwrap();
        let value: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(value["annotations"]["k"], "v");
        assert_eq!(value["annotations"][GROUP_ANNOTATION], "default");
        let bare = with_group_annotation(br#"{"ociVersion":"1"}"#, "g").unwrap();
        let value: serde_json::Value = serde_json::from_slice(&bare).unwrap();
        assert_eq!(value["annotations"][GROUP_ANNOTATION], "g");
        assert!(with_group_annotation(b"not json", "g").is_err());
    }
}
