//! Unix socket files the way containerd makes them: parent directory 0770 when created,
//! stale file removed, socket 0660, owner set to the configured uid/gid. The group may also
//! be given by name (`group = "ctrd"`), resolved once at start.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

use super::ServerError;

/// The longest socket path accepted (containerd's portable limit).
pub const MAX_PATH: usize = 104;

/// Checks the path and prepares its directory; removes a stale socket file.
pub fn prepare(path: &Path, uid: u32, gid: u32) -> Result<(), ServerError> {
    let text = path.to_string_lossy();
    if text.len() > MAX_PATH {
        return Err(ServerError::Socket(format!(
            "{text:?}: unix socket path too long (> {MAX_PATH})"
        )));
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o770)
                .create(dir)
                .map_err(|err| ServerError::Socket(format!("create {}: {err}", dir.display())))?;
            std::os::unix::fs::chown(dir, Some(uid), Some(gid))
                .map_err(|err| ServerError::Socket(format!("chown {}: {err}", dir.display())))?;
        }
    }
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(ServerError::Socket(format!(
            "remove stale {}: {err}",
            path.display()
        ))),
    }
}

/// Sets mode 0660 and the owner on a socket that is now bound.
pub fn secure(path: &Path, uid: u32, gid: u32) -> Result<(), ServerError> {
    fs::set_permissions(path, fs::Permissions::from_mode(0o660))
        .map_err(|err| ServerError::Socket(format!("chmod {}: {err}", path.display())))?;
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .map_err(|err| ServerError::Socket(format!("chown {}: {err}", path.display())))
}

/// Removes a socket file at shutdown; a missing file is fine.
pub fn remove(path: &Path) {
    if let Err(err) = fs::remove_file(path) {
        if err.kind() != std::io::ErrorKind::NotFound {
            log::warn!("failed to remove socket {}: {err}", path.display());
        }
    }
}

/// The gid a socket of `section` gets: `group` (a name or a number) when set, else `gid`.
/// An unknown name, or a `gid` that disagrees with `group`, is an error naming them.
pub fn group(section: &str, gid: u32, group: &str) -> Result<u32, ServerError> {
    if group.is_empty() {
        return Ok(gid);
    }
    let resolved = match group.parse::<u32>() {
        Ok(number) => number,
        Err(_) => match crate::sys::group_id(group) {
            Ok(Some(number)) => number,
            Ok(None) => {
                return Err(ServerError::Socket(format!(
                    "{section} group {group:?}: no such group"
                )))
            }
            Err(err) => {
                return Err(ServerError::Socket(format!(
                    "{section} group {group:?}: looking it up: {err}"
                )))
            }
        },
    };
    if gid != 0 && gid != resolved {
        return Err(ServerError::Socket(format!(
            "{section} gid = {gid} and group = {group:?} (gid {resolved}) disagree; set one of them"
        )));
    }
    Ok(resolved)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    #[test]
    fn group_by_name_or_number() {
        assert_eq!(group("[grpc]", 7, "").expect("gid alone"), 7);
        assert_eq!(group("[grpc]", 0, "1234").expect("number"), 1234);
        assert_eq!(group("[grpc]", 0, "root").expect("name"), 0);
        assert_eq!(group("[grpc]", 1234, "1234").expect("agreeing"), 1234);
        let err = group("[grpc]", 0, "no-such-group-here").expect_err("unknown");
        assert_eq!(
            err.to_string(),
            "[grpc] group \"no-such-group-here\": no such group"
        );
        let err = group("[ttrpc]", 5, "1234").expect_err("disagree");
        assert!(err
            .to_string()
            .starts_with("[ttrpc] gid = 5 and group = \"1234\""));
    }

    #[test]
    fn too_long_path_is_refused() {
        let long = format!("/tmp/{}/s.sock", "x".repeat(100));
        let err = prepare(Path::new(&long), 0, 0).expect_err("too long");
        assert!(err
            .to_string()
            .ends_with("unix socket path too long (> 104)"));
    }

    #[test]
    fn creates_parent_removes_stale_and_secures() {
        let base = tempfile::tempdir().expect("tempdir");
        let sock = base.path().join("run/d.sock");
        let uid = crate::sys::geteuid();
        let gid = crate::sys::getegid();
        prepare(&sock, uid, gid).expect("prepare");
        let dir_mode = fs::metadata(sock.parent().expect("parent"))
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(dir_mode & 0o007, 0, "parent not open to others");
        fs::write(&sock, "stale").expect("stale file");
        prepare(&sock, uid, gid).expect("prepare again");
        assert!(!sock.exists());
        let _listener = UnixListener::bind(&sock).expect("bind");
        secure(&sock, uid, gid).expect("secure");
        assert_eq!(
            fs::metadata(&sock).expect("stat").permissions().mode() & 0o777,
            0o660
        );
    }
}
