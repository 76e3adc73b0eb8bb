//! Mounts as containerd describes them (type, source, fstab-style options) and the few
//! things ctrd does with them itself: read an overlay mount's directories, make mounts
//! read-only, and mount them on a temporary directory for as long as a guard lives.
//! Everything runs on the caller's thread; the system calls are in `crate::sys`.

use std::io;
use std::path::{Path, PathBuf};

/// A mount as containerd describes it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Mount {
    pub r#type: String,
    pub source: String,
    pub target: String,
    pub options: Vec<String>,
}

impl Mount {
    /// Whether this is a bind mount (by type or by option), whose source is the tree itself.
    pub fn is_bind(&self) -> bool {
        self.r#type == "bind" || self.options.iter().any(|o| o == "bind" || o == "rbind")
    }

    /// The `upperdir=` of an overlay mount.
    pub fn upperdir(&self) -> Option<&str> {
        self.option("upperdir")
    }

    /// The `lowerdir=` list of an overlay mount, uppermost first.
    pub fn lowerdirs(&self) -> Vec<&str> {
        self.option("lowerdir")
            .map(|dirs| dirs.split(':').filter(|d| !d.is_empty()).collect())
            .unwrap_or_default()
    }

    fn option(&self, key: &str) -> Option<&str> {
        self.options
            .iter()
            .rev()
            .find_map(|o| o.strip_prefix(key).and_then(|rest| rest.strip_prefix('=')))
    }
}

/// fstab options that are mount flags: (name, clears the flag, flag).
const FLAGS: &[(&str, bool, u64)] = &[
    ("async", true, libc::MS_SYNCHRONOUS),
    ("atime", true, libc::MS_NOATIME),
    ("bind", false, libc::MS_BIND),
    ("defaults", false, 0),
    ("dev", true, libc::MS_NODEV),
    ("diratime", true, libc::MS_NODIRATIME),
    ("dirsync", false, libc::MS_DIRSYNC),
    ("exec", true, libc::MS_NOEXEC),
    ("mand", false, libc::MS_MANDLOCK),
    ("noatime", false, libc::MS_NOATIME),
    ("nodev", false, libc::MS_NODEV),
    ("nodiratime", false, libc::MS_NODIRATIME),
    ("noexec", false, libc::MS_NOEXEC),
    ("nomand", true, libc::MS_MANDLOCK),
    ("norelatime", true, libc::MS_RELATIME),
    ("nostrictatime", true, libc::MS_STRICTATIME),
    ("nosuid", false, libc::MS_NOSUID),
    ("rbind", false, libc::MS_BIND | libc::MS_REC),
    ("relatime", false, libc::MS_RELATIME),
    ("remount", false, libc::MS_REMOUNT),
    ("ro", false, libc::MS_RDONLY),
    ("rw", true, libc::MS_RDONLY),
    ("strictatime", false, libc::MS_STRICTATIME),
    ("suid", true, libc::MS_NOSUID),
    ("sync", false, libc::MS_SYNCHRONOUS),
    ("private", false, libc::MS_PRIVATE),
    ("rprivate", false, libc::MS_PRIVATE | libc::MS_REC),
    ("shared", false, libc::MS_SHARED),
    ("rshared", false, libc::MS_SHARED | libc::MS_REC),
    ("slave", false, libc::MS_SLAVE),
    ("rslave", false, libc::MS_SLAVE | libc::MS_REC),
    ("unbindable", false, libc::MS_UNBINDABLE),
    ("runbindable", false, libc::MS_UNBINDABLE | libc::MS_REC),
];

const PROPAGATION: u64 = libc::MS_SHARED | libc::MS_PRIVATE | libc::MS_SLAVE | libc::MS_UNBINDABLE;

/// Splits fstab options into mount flags and the file-system data string.
pub fn parse_options(options: &[String]) -> (u64, String) {
    let mut flags = 0;
    let mut data: Vec<&str> = Vec::new();
    for option in options {
        match FLAGS.iter().find(|(name, _, _)| name == option) {
            Some((_, true, flag)) => flags &= !flag,
            Some((_, false, flag)) => flags |= flag,
            None => data.push(option),
        }
    }
    (flags, data.join(","))
}

/// Mounts `m` on `target` as containerd does: the mount itself, then a propagation change
/// if one was asked for, then a read-only remount of a read-only bind.
pub fn mount(m: &Mount, target: &Path) -> io::Result<()> {
    let (flags, data) = parse_options(&m.options);
    let plain = flags & !PROPAGATION;
    if plain & libc::MS_REMOUNT == 0 || !data.is_empty() {
        crate::sys::mount(&m.source, target, &m.r#type, plain, &data)?;
    }
    if flags & PROPAGATION != 0 {
        crate::sys::mount(
            "",
            target,
            "",
            flags & (PROPAGATION | libc::MS_REC | libc::MS_SILENT),
            "",
        )?;
    }
    let bind_ro = libc::MS_BIND | libc::MS_RDONLY;
    if plain & bind_ro == bind_ro {
        crate::sys::mount("", target, "", plain | libc::MS_REMOUNT, "")?;
    }
    Ok(())
}

/// Unmounts everything stacked on `target`; a target with nothing mounted is fine.
pub fn unmount_all(target: &Path) -> io::Result<()> {
    loop {
        match crate::sys::unmount(target, 0) {
            Ok(()) => continue,
            Err(err) if err.raw_os_error() == Some(libc::EINVAL) => return Ok(()),
            Err(err) if err.raw_os_error() == Some(libc::EBUSY) => {
                // Someone is still inside; detach so the tree goes when they leave.
                return crate::sys::unmount(target, libc::MNT_DETACH);
            }
            Err(err) => return Err(err),
        }
    }
}

/// The same mounts made read-only: an overlay loses its upper and work directories (the
/// upper joins the lower ones, on top), anything else gets `ro`.
pub fn readonly(mounts: &[Mount]) -> Vec<Mount> {
    mounts
        .iter()
        .map(|m| {
            let mut m = m.clone();
            if m.r#type == "overlay" {
                let upper = m.upperdir().map(str::to_string);
                m.options.retain(|o| {
                    !o.starts_with("upperdir=") && !o.starts_with("workdir=") && o != "rw"
                });
                if let Some(upper) = upper {
                    for option in &mut m.options {
                        if let Some(lower) = option.strip_prefix("lowerdir=") {
                            *option = format!("lowerdir={upper}:{lower}");
                        }
                    }
                }
            } else {
                m.options.retain(|o| o != "rw" && o != "ro");
                m.options.push("ro".into());
            }
            m
        })
        .collect()
}

/// Mounts on a fresh directory under `parent`, unmounted and removed when dropped.
pub struct TempMount {
    path: PathBuf,
}

impl TempMount {
    /// Mounts `mounts` one over the other on a new directory under `parent`.
    pub fn new(parent: &Path, mounts: &[Mount]) -> io::Result<TempMount> {
        std::fs::create_dir_all(parent)?;
        let path = unique_dir(parent, "mount-")?;
        let guard = TempMount { path };
        for m in mounts {
            mount(m, &guard.path)?;
        }
        Ok(guard)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempMount {
    fn drop(&mut self) {
        if let Err(err) = unmount_all(&self.path) {
            log::warn!("failed to unmount {}: {err}", self.path.display());
        }
        // Not remove_dir_all: if the unmount failed, the mounted tree must survive.
        if let Err(err) = std::fs::remove_dir(&self.path) {
            log::warn!("failed to remove {}: {err}", self.path.display());
        }
    }
}

/// Creates a new directory `<parent>/<prefix><n>` (mode 0700) that did not exist before.
pub fn unique_dir(parent: &Path, prefix: &str) -> io::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    let mut n = u64::from(nanos) ^ (u64::from(std::process::id()) << 32);
    loop {
        let path = parent.join(format!("{prefix}{n}"));
        match std::fs::DirBuilder::new().mode(0o700).create(&path) {
            Ok(()) => return Ok(path),
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => n = n.wrapping_add(1),
            Err(err) => return Err(err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn options_split_into_flags_and_data() {
        let (flags, data) = parse_options(&opts(&["ro", "rbind", "nosuid"]));
        assert_eq!(
            flags,
            libc::MS_RDONLY | libc::MS_BIND | libc::MS_REC | libc::MS_NOSUID
        );
        assert_eq!(data, "");
        let (flags, data) = parse_options(&opts(&[
            "ro",
            "rw",
            "index=off",
            "workdir=/w",
            "upperdir=/u",
            "lowerdir=/a:/b",
        ]));
        assert_eq!(flags, 0, "rw clears ro");
        assert_eq!(data, "index=off,workdir=/w,upperdir=/u,lowerdir=/a:/b");
    }

    #[test]
    fn overlay_directories_are_read_from_options() {
        let m = Mount {
            r#type: "overlay".into(),
            source: "overlay".into(),
            target: String::new(),
            options: opts(&[
                "workdir=/s/2/work",
                "upperdir=/s/2/fs",
                "lowerdir=/s/1/fs:/s/0/fs",
            ]),
        };
        assert_eq!(m.upperdir(), Some("/s/2/fs"));
        assert_eq!(m.lowerdirs(), ["/s/1/fs", "/s/0/fs"]);
        assert!(!m.is_bind());
        let ro = readonly(std::slice::from_ref(&m));
        assert_eq!(ro[0].options, ["lowerdir=/s/2/fs:/s/1/fs:/s/0/fs"]);
        assert_eq!(ro[0].upperdir(), None);
    }

    #[test]
    fn binds_become_read_only() {
        let m = Mount {
            r#type: "bind".into(),
            source: "/x".into(),
            target: String::new(),
            options: opts(&["rw", "rbind"]),
        };
        assert!(m.is_bind());
        assert_eq!(readonly(&[m])[0].options, ["rbind", "ro"]);
    }

    #[test]
    fn temp_mount_shows_the_tree_and_goes_away() {
        if crate::sys::geteuid() != 0 {
            // Mounting needs root; the integration tests run as root under CI.
            assert!(
                std::env::var_os("CI").is_none(),
                "mount tests need root under CI"
            );
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let src = dir.path().join("src");
        std::fs::create_dir(&src).expect("mkdir");
        std::fs::write(src.join("f"), "x").expect("write");
        let m = Mount {
            r#type: "bind".into(),
            source: src.to_string_lossy().into_owned(),
            target: String::new(),
            options: opts(&["ro", "rbind"]),
        };
        let path = {
            let temp = TempMount::new(&dir.path().join("tmp"), &[m]).expect("mount");
            assert_eq!(std::fs::read(temp.path().join("f")).expect("read"), b"x");
            let err = std::fs::write(temp.path().join("g"), "y").expect_err("read-only");
            assert_eq!(err.raw_os_error(), Some(libc::EROFS));
            temp.path().to_path_buf()
        };
        assert!(!path.exists());
        assert!(src.join("f").exists());
    }
}
