//! Applying an uncompressed layer tar to a directory with OCI semantics (containerd's
//! `archive.Apply`), on the caller's thread.
//!
//! Each entry is handled in stream order:
//! 1. its name is cleaned; a `..` that climbs above the root refuses the whole layer
//!    (InvalidArgument), an absolute name is taken relative to the root;
//! 2. its parent is resolved inside the root (symlinks included) and created with mode 0755
//!    when missing; the final component is never followed;
//! 3. `.wh..wh..opq` empties its directory of everything this layer did not unpack,
//!    `.wh.<name>` removes `<name>`; into an overlay upper directory they become overlay's
//!    own marks instead (the `trusted.overlay.opaque` xattr, a 0/0 character device), and
//!    missing parents take their attributes from the layers below;
//! 4. anything else replaces what is at the path (directories merge), then gets its owner
//!    (errors ignored unless running as root), PAX xattrs, mode and times.
//!
//! Directory times are set last, so later entries do not disturb them.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};
use tar::EntryType;

use super::path::{clean_name, resolve_in_root};
use super::{OPAQUE_MARKER, WHITEOUT_PREFIX};
use crate::content::Digest;
use crate::errdefs::Error;

/// What applying a layer read: the uncompressed stream's size and digest (its diff ID),
/// trailing bytes after the end-of-archive marker included, as containerd counts them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyStats {
    pub size: u64,
    pub digest: Digest,
}

/// How [`apply_layer_with`] writes whiteouts and finds what lies below the root.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyOptions {
    /// The root is an overlay upper directory: a deleted name becomes a 0/0 character
    /// device and an opaque directory gets `trusted.overlay.opaque=y`, instead of removing
    /// what lies below (containerd's `OverlayConvertWhiteout`).
    pub overlay_whiteouts: bool,
    /// The layers below the root, uppermost first: a directory the layer needs but the root
    /// lacks is created with the attributes it has in the first of these that holds it.
    pub parents: Vec<PathBuf>,
}

/// The extended attribute that makes an overlay directory hide the layers below it.
pub const OVERLAY_OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// Unpacks the uncompressed tar stream `layer` into the existing directory `root`.
pub fn apply_layer(layer: impl Read, root: &Path) -> Result<ApplyStats, Error> {
    apply_layer_with(layer, root, &ApplyOptions::default())
}

/// [`apply_layer`] with options, e.g. into an overlay upper directory.
pub fn apply_layer_with(
    layer: impl Read,
    root: &Path,
    options: &ApplyOptions,
) -> Result<ApplyStats, Error> {
    let meta = fs::metadata(root).map_err(|err| Error::from(err).context("apply root"))?;
    if !meta.is_dir() {
        return Err(Error::invalid_argument(format!(
            "apply root {}: not a directory",
            root.display()
        )));
    }
    let mut counter = Counter {
        inner: layer,
        hasher: Sha256::new(),
        size: 0,
    };
    Applier {
        root: root.to_path_buf(),
        options: options.clone(),
        as_root: crate::sys::geteuid() == 0,
        unpacked: HashSet::new(),
        unpacked_parents: HashSet::new(),
        dirs: Vec::new(),
    }
    .run(&mut tar::Archive::new(&mut counter))?;
    io::copy(&mut counter, &mut io::sink())
        .map_err(|err| Error::from(err).context("failed to read layer"))?;
    Ok(ApplyStats {
        size: counter.size,
        digest: Digest::from_sha256(&counter.hasher.finalize().into()),
    })
}

/// Counts and hashes what the tar reader consumes.
struct Counter<R> {
    inner: R,
    hasher: Sha256,
    size: u64,
}

impl<R: Read> Read for Counter<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
}

/// Access and modification times as (seconds, nanoseconds).
type Times = ((i64, u32), (i64, u32));

struct Applier {
    root: PathBuf,
    options: ApplyOptions,
    as_root: bool,
    /// Paths this layer wrote; an opaque marker keeps them.
    unpacked: HashSet<PathBuf>,
    /// Their ancestors, which an opaque marker must keep to keep them.
    unpacked_parents: HashSet<PathBuf>,
    /// Directories to give their times at the end, by cleaned name: resolved again then,
    /// as later entries may have replaced a parent with a symlink.
    dirs: Vec<(Vec<OsString>, Times)>,
}

/// The parts of an entry's PAX records the applier uses.
#[derive(Default)]
struct Pax {
    xattrs: Vec<(String, Vec<u8>)>,
    mtime: Option<(i64, u32)>,
    atime: Option<(i64, u32)>,
    uid: Option<u64>,
    gid: Option<u64>,
}

impl Applier {
    fn run<R: Read>(&mut self, archive: &mut tar::Archive<R>) -> Result<(), Error> {
        let read_err = |err: io::Error| Error::from(err).context("failed to read layer");
        for entry in archive.entries().map_err(read_err)? {
            let mut entry = entry.map_err(read_err)?;
            let name = entry.path_bytes().into_owned();
            let pax = read_pax(&mut entry).map_err(read_err)?;
            self.entry(&name, &mut entry, pax).map_err(|err| {
                if err.message().contains(&*String::from_utf8_lossy(&name)) {
                    err
                } else {
                    err.context(format!("{:?}", String::from_utf8_lossy(&name)))
                }
            })?;
        }
        let gone = |err: &io::Error| {
            err.kind() == io::ErrorKind::NotFound || err.raw_os_error() == Some(libc::ENOTDIR)
        };
        for (components, (atime, mtime)) in std::mem::take(&mut self.dirs) {
            let path = match resolve_in_root(&self.root, &components) {
                Ok(path) => path,
                Err(err) if gone(&err) => continue,
                Err(err) => return Err(err.into()),
            };
            match crate::sys::lutimes(&path, atime, mtime) {
                Err(err) if !gone(&err) => return Err(Error::from(err).context(path.display())),
                _ => {}
            }
        }
        Ok(())
    }

    fn entry<R: Read>(
        &mut self,
        name: &[u8],
        entry: &mut tar::Entry<'_, R>,
        pax: Pax,
    ) -> Result<(), Error> {
        let header = entry.header();
        let kind = header.entry_type();
        if kind == EntryType::XGlobalHeader {
            log::debug!("PAX global extended headers found and ignored");
            return Ok(());
        }
        let components = clean_name(name)?;
        let Some((base, parent)) = components.split_last() else {
            log::debug!(
                "file {:?} ignored: resolved to root",
                String::from_utf8_lossy(name)
            );
            return Ok(());
        };
        let parent = resolve_in_root(&self.root, parent)?;
        let path = parent.join(base);
        if parent != self.root {
            self.mkparent(&parent)?;
        }

        let base = base.as_bytes();
        let uid = pax
            .uid
            .map_or_else(|| numeric(&header.as_old().uid, header.uid()), Ok)?;
        let gid = pax
            .gid
            .map_or_else(|| numeric(&header.as_old().gid, header.gid()), Ok)?;
        if base == OPAQUE_MARKER.as_bytes() {
            fs::symlink_metadata(&parent)?;
            if self.options.overlay_whiteouts {
                return crate::sys::lsetxattr(&parent, OVERLAY_OPAQUE_XATTR, b"y")
                    .map_err(|err| Error::from(err).context("failed to convert whiteout file"));
            }
            return self.prune(&parent).map_err(Error::from);
        }
        if let Some(original) = base.strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
            if matches!(original, b"" | b"." | b"..") {
                return Err(Error::invalid_argument(format!(
                    "invalid whiteout name: {}: invalid archive",
                    String::from_utf8_lossy(base)
                )));
            }
            let target = parent.join(std::ffi::OsStr::from_bytes(original));
            remove_all(&target)?;
            if self.options.overlay_whiteouts {
                crate::sys::mknod(&target, libc::S_IFCHR, 0, 0)
                    .and_then(|()| {
                        std::os::unix::fs::lchown(&target, Some(uid as u32), Some(gid as u32))
                    })
                    .map_err(|err| Error::from(err).context("failed to convert whiteout file"))?;
            }
            return Ok(());
        }

        let mode = numeric(&header.as_old().mode, header.mode())? as u32 & 0o7777;
        let mtime = pax.mtime.unwrap_or((
            i64::try_from(numeric(&header.as_old().mtime, header.mtime())?).unwrap_or(i64::MAX),
            0,
        ));
        let atime = pax.atime.filter(|atime| *atime > mtime).unwrap_or(mtime);

        if let Ok(existing) = fs::symlink_metadata(&path) {
            if !(existing.is_dir() && kind == EntryType::Directory) {
                remove_all(&path)?;
            }
        }

        match kind {
            EntryType::Directory => {
                if !fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
                    fs::DirBuilder::new().mode(mode).create(&path)?;
                }
            }
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                let mut file = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .mode(mode)
                    .open(&path)?;
                io::copy(entry, &mut file)?;
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| Error::invalid_argument("symlink without a target"))?;
                std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(&target), &path)?;
            }
            EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| Error::invalid_argument("hard link without a target"))?;
                let target = self.hardlink_target(&target)?;
                fs::hard_link(&target, &path)?;
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let file_type = match kind {
                    EntryType::Char => libc::S_IFCHR,
                    EntryType::Block => libc::S_IFBLK,
                    _ => libc::S_IFIFO,
                };
                let (major, minor) = if kind == EntryType::Fifo {
                    (0, 0)
                } else {
                    (
                        header.device_major()?.unwrap_or(0),
                        header.device_minor()?.unwrap_or(0),
                    )
                };
                if let Err(err) = crate::sys::mknod(&path, file_type | mode, major, minor) {
                    if kind != EntryType::Fifo && err.raw_os_error() == Some(libc::EPERM) {
                        log::warn!(
                            "file {:?} ignored: archive may not be supported on system",
                            String::from_utf8_lossy(name)
                        );
                        return Ok(());
                    }
                    return Err(err.into());
                }
            }
            other => {
                return Err(Error::invalid_argument(format!(
                    "unhandled tar header type {}",
                    other.as_byte()
                )))
            }
        }

        if let Err(err) = std::os::unix::fs::lchown(&path, Some(uid as u32), Some(gid as u32)) {
            let ignorable = matches!(err.raw_os_error(), Some(libc::EPERM | libc::EINVAL));
            if self.as_root || !ignorable {
                return Err(
                    Error::from(err).context(format!("failed to Lchown for UID {uid}, GID {gid}"))
                );
            }
            log::debug!("ownership {uid}:{gid} not kept: {err}");
        }

        for (key, value) in &pax.xattrs {
            self.set_xattr(&path, key, value)?;
        }

        let is_symlink = fs::symlink_metadata(&path)?.file_type().is_symlink();
        if !is_symlink {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode))?;
        }

        if kind == EntryType::Directory {
            self.dirs.push((components.clone(), (atime, mtime)));
        } else {
            crate::sys::lutimes(&path, atime, mtime)?;
        }
        self.mark_unpacked(path);
        Ok(())
    }

    /// Creates the missing directories of an already resolved parent path (mode 0755).
    fn mkparent(&mut self, parent: &Path) -> io::Result<()> {
        let relative = parent
            .strip_prefix(&self.root)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "parent outside the root"))?;
        let mut current = self.root.clone();
        for component in relative.components() {
            current.push(component);
            match fs::symlink_metadata(&current) {
                Ok(meta) if meta.is_dir() => {}
                Ok(_) => {
                    return Err(io::Error::from_raw_os_error(libc::ENOTDIR));
                }
                Err(err) if err.kind() == io::ErrorKind::NotFound => {
                    fs::DirBuilder::new().mode(0o755).create(&current)?;
                    fs::set_permissions(&current, fs::Permissions::from_mode(0o755))?;
                    if let Some(times) = self.copy_dir_info_from_parents(&current)? {
                        self.dirs.push(times);
                    }
                }
                Err(err) => return Err(err),
            }
        }
        Ok(())
    }

    /// Gives a directory just created in the root the mode, owner, times and extended
    /// attributes (overlay's own left out) it has in the
    /// uppermost parent layer that holds it (a non-directory there hides the rest); the
    /// times are returned to be set again at the end, as entries written into it change them.
    fn copy_dir_info_from_parents(&self, dir: &Path) -> io::Result<Option<(Vec<OsString>, Times)>> {
        let Ok(relative) = dir.strip_prefix(&self.root) else {
            return Ok(None);
        };
        let components: Vec<OsString> = relative
            .components()
            .map(|c| c.as_os_str().to_os_string())
            .collect();
        for parent in &self.options.parents {
            let below = resolve_in_root(parent, &components)?;
            let meta = match fs::symlink_metadata(&below) {
                Ok(meta) => meta,
                Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
                Err(err) => return Err(err),
            };
            if !meta.is_dir() {
                break;
            }
            fs::set_permissions(dir, fs::Permissions::from_mode(meta.mode() & 0o7777))?;
            if let Err(err) = std::os::unix::fs::lchown(dir, Some(meta.uid()), Some(meta.gid())) {
                if self.as_root {
                    return Err(err);
                }
            }
            copy_up_xattrs(&below, dir)?;
            let times = (
                (meta.atime(), meta.atime_nsec() as u32),
                (meta.mtime(), meta.mtime_nsec() as u32),
            );
            return Ok(Some((components, times)));
        }
        Ok(None)
    }

    /// A hard link's target inside the root: its parent resolved, its last component not
    /// followed (a link to a symlink links the symlink).
    fn hardlink_target(&self, link_name: &[u8]) -> Result<PathBuf, Error> {
        let components = clean_name(link_name)?;
        let Some((base, parent)) = components.split_last() else {
            return Err(Error::invalid_argument(
                "invalid archive: hard link to the root",
            ));
        };
        Ok(resolve_in_root(&self.root, parent)?.join(base))
    }

    fn set_xattr(&self, path: &Path, key: &str, value: &[u8]) -> Result<(), Error> {
        if key.starts_with("trusted.") {
            log::warn!("ignored xattr {key} in archive: admin attributes not supported");
            return Ok(());
        }
        match crate::sys::lsetxattr(path, key, value) {
            Ok(()) => Ok(()),
            Err(err)
                if err.raw_os_error() == Some(libc::ENOTSUP)
                    || (err.raw_os_error() == Some(libc::EPERM) && !self.as_root) =>
            {
                log::warn!("ignored xattr {key} in archive: {err}");
                Ok(())
            }
            Err(err) => Err(Error::from(err).context(format!("failed to setxattr for key {key}"))),
        }
    }

    fn mark_unpacked(&mut self, path: PathBuf) {
        let mut parent = path.parent();
        while let Some(dir) = parent {
            if dir == self.root || !self.unpacked_parents.insert(dir.to_path_buf()) {
                break;
            }
            parent = dir.parent();
        }
        self.unpacked.insert(path);
    }

    /// Removes everything under `dir` that this layer did not unpack (an opaque directory).
    fn prune(&self, dir: &Path) -> io::Result<()> {
        let entries = match fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(err) => return Err(err),
        };
        let mut names: Vec<OsString> = Vec::new();
        for entry in entries {
            names.push(entry?.file_name());
        }
        for name in names {
            let path = dir.join(&name);
            if self.unpacked.contains(&path) || self.unpacked_parents.contains(&path) {
                if fs::symlink_metadata(&path)?.is_dir() {
                    self.prune(&path)?;
                }
            } else {
                remove_all(&path)?;
            }
        }
        Ok(())
    }
}

/// Copies the extended attributes of `from` onto `to`, except overlay's own (which describe
/// `from`'s place in its stack, not the directory).
fn copy_up_xattrs(from: &Path, to: &Path) -> io::Result<()> {
    for name in crate::sys::llistxattr(from)? {
        if name.starts_with("trusted.overlay.") {
            continue;
        }
        if let Some(value) = crate::sys::lgetxattr(from, &name)? {
            match crate::sys::lsetxattr(to, &name, &value) {
                Err(err) if err.raw_os_error() == Some(libc::ENOTSUP) => {}
                other => other?,
            }
        }
    }
    Ok(())
}

/// The PAX records the applier uses: xattrs, sub-second times, large owner ids.
fn read_pax<R: Read>(entry: &mut tar::Entry<'_, R>) -> io::Result<Pax> {
    let mut pax = Pax::default();
    let Some(records) = entry.pax_extensions()? else {
        return Ok(pax);
    };
    for record in records {
        let record = record?;
        let Ok(key) = record.key() else { continue };
        if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
            pax.xattrs
                .push((name.to_string(), record.value_bytes().to_vec()));
        } else if key == "mtime" {
            pax.mtime = record.value().ok().and_then(parse_pax_time);
        } else if key == "atime" {
            pax.atime = record.value().ok().and_then(parse_pax_time);
        } else if key == "uid" {
            pax.uid = record.value().ok().and_then(|v| v.parse().ok());
        } else if key == "gid" {
            pax.gid = record.value().ok().and_then(|v| v.parse().ok());
        }
    }
    Ok(pax)
}

/// A PAX time, `seconds[.fraction]`.
fn parse_pax_time(value: &str) -> Option<(i64, u32)> {
    let (seconds, fraction) = value.split_once('.').unwrap_or((value, ""));
    let seconds: i64 = seconds.parse().ok()?;
    if seconds < 0 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return Some((seconds.max(0), 0));
    }
    let digits: String = fraction
        .chars()
        .chain(std::iter::repeat('0'))
        .take(9)
        .collect();
    Some((seconds, digits.parse().ok()?))
}

/// Removes `path` whatever it is, without following a symlink; absent is fine.
pub(super) fn remove_all(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(err),
    }
}

/// A numeric header field, where an empty one (all NULs or spaces) reads as 0 as Go's
/// archive/tar reads it; other unparsable values stay errors.
fn numeric<T: Into<u64>>(raw: &[u8], parsed: io::Result<T>) -> io::Result<u64> {
    if raw.iter().all(|&b| b == 0 || b == b' ') {
        return Ok(0);
    }
    parsed.map(Into::into)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diff::testutil::{layer, Entry};
    use crate::errdefs::Class;
    use std::os::unix::fs::{symlink, MetadataExt};

    /// A temporary directory holding `root/` (the apply target) and `outside/`.
    fn scratch() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("root");
        let outside = dir.path().join("outside");
        fs::create_dir(&root).expect("mkdir root");
        fs::create_dir(&outside).expect("mkdir outside");
        (dir, root, outside)
    }

    fn mode_of(path: &Path) -> u32 {
        fs::symlink_metadata(path).expect("stat").mode() & 0o7777
    }

    #[test]
    fn unpacks_files_dirs_links_modes_and_times() {
        let (_dir, root, _) = scratch();
        let tar = layer(&[
            Entry::Dir("a/", 0o750),
            Entry::File("a/f", b"hello", 0o644),
            Entry::Symlink("a/s", "f"),
            Entry::Link("a/h", "a/f"),
            Entry::File("deep/er/g", b"x", 0o4755),
            Entry::Fifo("p"),
        ]);
        let stats = apply_layer(&tar[..], &root).expect("apply");
        assert_eq!(stats.size, tar.len() as u64);
        assert_eq!(stats.digest, Digest::of(&tar));

        assert_eq!(fs::read(root.join("a/f")).expect("read"), b"hello");
        assert_eq!(mode_of(&root.join("a")), 0o750);
        assert_eq!(mode_of(&root.join("a/f")), 0o644);
        assert_eq!(mode_of(&root.join("deep/er/g")), 0o4755);
        assert_eq!(mode_of(&root.join("deep")), 0o755, "created parents");
        assert_eq!(
            fs::read_link(root.join("a/s")).expect("link"),
            Path::new("f")
        );
        let f = fs::metadata(root.join("a/f")).expect("stat");
        let h = fs::metadata(root.join("a/h")).expect("stat");
        assert_eq!((f.ino(), f.nlink()), (h.ino(), 2));
        assert_eq!(f.mtime(), 1_700_000_000);
        assert_eq!(
            fs::metadata(root.join("a")).expect("stat").mtime(),
            1_700_000_000
        );
        let fifo = fs::symlink_metadata(root.join("p")).expect("stat");
        assert!(std::os::unix::fs::FileTypeExt::is_fifo(&fifo.file_type()));
    }

    #[test]
    fn replaces_existing_entries_without_following_them() {
        let (_dir, root, outside) = scratch();
        fs::write(outside.join("target"), b"keep").expect("write");
        symlink(outside.join("target"), root.join("link")).expect("symlink");
        fs::create_dir_all(root.join("was_dir/child")).expect("mkdir");
        fs::write(root.join("was_file"), b"old").expect("write");
        let tar = layer(&[
            Entry::File("link", b"new", 0o644),
            Entry::File("was_dir", b"now a file", 0o644),
            Entry::Dir("was_file/", 0o755),
        ]);
        apply_layer(&tar[..], &root).expect("apply");
        assert_eq!(fs::read(outside.join("target")).expect("read"), b"keep");
        assert_eq!(fs::read(root.join("link")).expect("read"), b"new");
        assert_eq!(fs::read(root.join("was_dir")).expect("read"), b"now a file");
        assert!(root.join("was_file").is_dir());
    }

    #[test]
    fn whiteouts_remove_files_and_directories() {
        let (_dir, root, _) = scratch();
        fs::create_dir_all(root.join("d/sub")).expect("mkdir");
        fs::write(root.join("d/sub/x"), b"x").expect("write");
        fs::write(root.join("d/gone"), b"x").expect("write");
        fs::write(root.join("d/stay"), b"x").expect("write");
        let tar = layer(&[
            Entry::File("d/.wh.gone", b"", 0o644),
            Entry::File("d/.wh.sub", b"", 0o644),
            Entry::File(".wh.never-existed", b"", 0o644),
        ]);
        apply_layer(&tar[..], &root).expect("apply");
        assert!(!root.join("d/gone").exists());
        assert!(!root.join("d/sub").exists());
        assert!(root.join("d/stay").exists());
        assert!(!root.join(".wh.gone").exists() && !root.join("d/.wh.gone").exists());
    }

    #[test]
    fn opaque_directory_keeps_only_this_layers_entries() {
        let (_dir, root, _) = scratch();
        fs::create_dir_all(root.join("d/lower_dir/deep")).expect("mkdir");
        fs::create_dir_all(root.join("d/merged")).expect("mkdir");
        fs::write(root.join("d/lower_file"), b"x").expect("write");
        fs::write(root.join("d/merged/lower_child"), b"x").expect("write");
        fs::write(root.join("sibling"), b"x").expect("write");
        let tar = layer(&[
            Entry::Dir("d/", 0o755),
            Entry::File("d/before", b"1", 0o644),
            Entry::Dir("d/merged/", 0o755),
            Entry::File("d/implicit/parent/file", b"2", 0o644),
            Entry::File("d/.wh..wh..opq", b"", 0o644),
            Entry::File("d/after", b"3", 0o644),
        ]);
        apply_layer(&tar[..], &root).expect("apply");
        let mut left: Vec<String> = fs::read_dir(root.join("d"))
            .expect("readdir")
            .map(|e| e.expect("entry").file_name().into_string().expect("utf-8"))
            .collect();
        left.sort();
        assert_eq!(left, ["after", "before", "implicit", "merged"]);
        assert!(root.join("d/implicit/parent/file").exists());
        assert!(!root.join("d/merged/lower_child").exists());
        assert!(root.join("sibling").exists());
    }

    #[test]
    fn climbing_out_is_refused_and_writes_nothing_outside() {
        let (dir, root, _) = scratch();
        for name in ["../escape", "a/../../escape", "../outside/escape"] {
            let tar = layer(&[Entry::File(name, b"pwned", 0o644)]);
            let err = apply_layer(&tar[..], &root).expect_err(name);
            assert_eq!(err.class(), Class::InvalidArgument, "{name}: {err}");
        }
        assert!(!dir.path().join("escape").exists());
        assert!(!dir.path().join("outside/escape").exists());
        assert_eq!(fs::read_dir(&root).expect("readdir").count(), 0);
    }

    #[test]
    fn absolute_names_land_under_the_root() {
        let (_dir, root, outside) = scratch();
        let name = format!("{}/abs", outside.display());
        let tar = layer(&[Entry::File(&name, b"inside", 0o644)]);
        apply_layer(&tar[..], &root).expect("apply");
        assert!(!outside.join("abs").exists());
        let landed = root.join(name.trim_start_matches('/'));
        assert_eq!(fs::read(landed).expect("read"), b"inside");
    }

    #[test]
    fn symlinked_parents_are_resolved_inside_the_root() {
        let (_dir, root, outside) = scratch();
        let via_slash = format!("slash{}/pwned", outside.display());
        let via_up = format!("up{}/pwned2", outside.display());
        let tar = layer(&[
            Entry::Symlink("slash", "/"),
            Entry::File(&via_slash, b"x", 0o644),
            Entry::Symlink("up", "../../../../../../.."),
            Entry::File(&via_up, b"y", 0o644),
        ]);
        apply_layer(&tar[..], &root).expect("apply");
        assert!(!outside.join("pwned").exists());
        assert!(!outside.join("pwned2").exists());
        let inner = root.join(outside.strip_prefix("/").expect("absolute"));
        assert_eq!(fs::read(inner.join("pwned")).expect("read"), b"x");
        assert_eq!(fs::read(inner.join("pwned2")).expect("read"), b"y");
    }

    #[test]
    fn hard_links_cannot_reach_outside() {
        let (_dir, root, outside) = scratch();
        fs::write(outside.join("secret"), b"s").expect("write");
        let tar = layer(&[Entry::Link("h", "../outside/secret")]);
        let err = apply_layer(&tar[..], &root).expect_err("climbing link");
        assert_eq!(err.class(), Class::InvalidArgument, "{err}");

        let absolute = format!("{}/secret", outside.display());
        let tar = layer(&[Entry::Link("h", &absolute)]);
        let err = apply_layer(&tar[..], &root).expect_err("absolute link");
        assert_eq!(err.class(), Class::NotFound, "{err}");

        let tar = layer(&[
            Entry::Symlink("s", "/"),
            Entry::Link("h", &format!("s{absolute}")),
        ]);
        apply_layer(&tar[..], &root).expect_err("link through a symlink");
        assert_eq!(
            fs::metadata(outside.join("secret")).expect("stat").nlink(),
            1
        );
        assert!(!root.join("h").exists());
    }

    #[test]
    fn device_nodes_are_created_or_skipped() {
        let (_dir, root, _) = scratch();
        let tar = layer(&[Entry::CharDevice("null", 1, 3)]);
        apply_layer(&tar[..], &root).expect("apply");
        // Created with CAP_MKNOD, skipped with a warning without it.
        if let Ok(meta) = fs::symlink_metadata(root.join("null")) {
            assert!(std::os::unix::fs::FileTypeExt::is_char_device(
                &meta.file_type()
            ));
            assert_eq!(meta.rdev(), libc::makedev(1, 3));
        }
    }

    #[test]
    fn directory_times_are_not_set_through_a_later_symlink() {
        let (_dir, root, outside) = scratch();
        fs::create_dir(outside.join("victim")).expect("mkdir");
        crate::sys::lutimes(&outside.join("victim"), (5, 0), (5, 0)).expect("utimes");
        let tar = layer(&[
            Entry::Dir("a/", 0o755),
            Entry::Dir("a/victim/", 0o755),
            Entry::Symlink("a", outside.to_str().expect("utf-8")),
        ]);
        apply_layer(&tar[..], &root).expect("apply");
        let victim = fs::metadata(outside.join("victim")).expect("stat");
        assert_eq!(victim.mtime(), 5, "outside untouched");
    }

    #[test]
    fn invalid_whiteout_names_are_refused() {
        let (_dir, root, _) = scratch();
        for name in ["d/.wh..", "d/.wh."] {
            let tar = layer(&[Entry::File(name, b"", 0o644)]);
            let err = apply_layer(&tar[..], &root).expect_err(name);
            assert_eq!(err.class(), Class::InvalidArgument, "{name}: {err}");
        }
    }

    #[test]
    fn trailing_bytes_are_counted() {
        let (_dir, root, _) = scratch();
        let mut tar = layer(&[Entry::File("f", b"x", 0o644)]);
        tar.extend_from_slice(&[0u8; 1024]);
        let stats = apply_layer(&tar[..], &root).expect("apply");
        assert_eq!(stats.size, tar.len() as u64);
    }

    #[test]
    fn overlay_whiteouts_become_devices_and_opaque_xattrs() {
        if crate::sys::geteuid() != 0 {
            // trusted.* xattrs and device nodes need root; CI runs as root.
            assert!(
                std::env::var_os("CI").is_none(),
                "overlay apply needs root under CI"
            );
            return;
        }
        let (dir, root, _) = scratch();
        let lower = dir.path().join("lower");
        fs::create_dir_all(lower.join("d/keep")).expect("mkdir");
        fs::write(lower.join("d/gone"), b"x").expect("write");
        fs::set_permissions(lower.join("d"), fs::Permissions::from_mode(0o701)).expect("chmod");
        std::os::unix::fs::lchown(lower.join("d"), Some(123), Some(456)).expect("chown");
        crate::sys::lsetxattr(&lower.join("d"), "user.tier", b"edge").expect("xattr");
        crate::sys::lsetxattr(&lower.join("d"), OVERLAY_OPAQUE_XATTR, b"y").expect("xattr");
        crate::sys::lutimes(&lower.join("d"), (7, 0), (7, 0)).expect("times");
        fs::create_dir_all(lower.join("o/old")).expect("mkdir");
        let tar = layer(&[
            Entry::File("d/.wh.gone", b"", 0o644),
            Entry::Dir("o/", 0o755),
            Entry::File("o/.wh..wh..opq", b"", 0o644),
            Entry::File("o/new", b"n", 0o644),
            Entry::File(".wh.top", b"", 0o644),
        ]);
        let options = ApplyOptions {
            overlay_whiteouts: true,
            parents: vec![lower.clone()],
        };
        apply_layer_with(&tar[..], &root, &options).expect("apply");

        let gone = fs::symlink_metadata(root.join("d/gone")).expect("whiteout");
        assert!(std::os::unix::fs::FileTypeExt::is_char_device(
            &gone.file_type()
        ));
        assert_eq!(gone.rdev(), 0);
        let top = fs::symlink_metadata(root.join("top")).expect("whiteout");
        assert!(std::os::unix::fs::FileTypeExt::is_char_device(
            &top.file_type()
        ));
        // The parent made for the whiteout copies the lower directory's attributes.
        let d = fs::metadata(root.join("d")).expect("stat");
        assert_eq!(
            (d.mode() & 0o7777, d.uid(), d.gid(), d.mtime()),
            (0o701, 123, 456, 7)
        );
        assert_eq!(
            crate::sys::lgetxattr(&root.join("d"), "user.tier").expect("xattr"),
            Some(b"edge".to_vec())
        );
        assert_eq!(
            crate::sys::lgetxattr(&root.join("d"), OVERLAY_OPAQUE_XATTR).expect("xattr"),
            None,
            "overlay's own attributes stay below"
        );
        assert!(!root.join("d/keep").exists(), "nothing copied up");
        assert_eq!(
            crate::sys::lgetxattr(&root.join("o"), OVERLAY_OPAQUE_XATTR).expect("xattr"),
            Some(b"y".to_vec())
        );
        assert!(root.join("o/new").exists());
        assert!(!root.join("o/.wh..wh..opq").exists());
        assert!(lower.join("d/gone").exists() && lower.join("o/old").exists());
    }

    #[test]
    fn overlay_apply_still_refuses_escapes() {
        let (dir, root, _) = scratch();
        let options = ApplyOptions {
            overlay_whiteouts: true,
            parents: Vec::new(),
        };
        for name in ["../escape", "a/../../.wh.escape"] {
            let tar = layer(&[Entry::File(name, b"pwned", 0o644)]);
            let err = apply_layer_with(&tar[..], &root, &options).expect_err(name);
            assert_eq!(err.class(), Class::InvalidArgument, "{name}: {err}");
        }
        assert!(!dir.path().join("escape").exists());
    }

    #[test]
    fn pax_times_parse_fractions() {
        assert_eq!(parse_pax_time("12.5"), Some((12, 500_000_000)));
        assert_eq!(parse_pax_time("12"), Some((12, 0)));
        assert_eq!(parse_pax_time("x"), None);
    }
}
