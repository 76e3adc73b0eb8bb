//! The walking differ: the tar of changes that turns `lower` into `upper` (containerd's
//! `archive.WriteDiff` over continuity's `fs.Changes`), written on the caller's thread.
//!
//! Both trees are walked together in sorted order, parents before children:
//! 1. a name only in `lower` becomes a whiteout `.wh.<name>` (a deleted directory is one
//!    whiteout, its children are not visited);
//! 2. a name only in `upper` is added, with everything under it;
//! 3. a name in both is compared with continuity's `sameFile`: file type and mode, owner,
//!    device number and `security.capability` first; for non-directories also size and mtime
//!    seconds; when both mtimes have no sub-second part (a tar extraction truncated them)
//!    the content (or symlink target) decides, otherwise differing nanoseconds do;
//! 4. each written entry is preceded by its parent directories if they were not written yet,
//!    and hard links within `upper` are written once and linked after (unchanged links too,
//!    so a changed inode keeps all its names).
//!
//! Entries are USTAR, with PAX records only where USTAR cannot hold a field; times are
//! truncated to seconds and whiteouts carry the Unix epoch, as containerd 2 writes them.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::fs::{self, Metadata};
use std::io::{self, Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use tar::{EntryType, Header};

use super::WHITEOUT_PREFIX;
use crate::errdefs::Error;

/// Options of [`write_diff_with`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiffOptions {
    /// Later modification times are written as this one (seconds since the epoch): the
    /// `SourceDateEpoch` of a reproducible build.
    pub mtime_upper_bound: Option<i64>,
}

/// Writes the layer tar that turns the directory `lower` into the directory `upper`.
pub fn write_diff(lower: &Path, upper: &Path, out: impl Write) -> Result<(), Error> {
    write_diff_with(lower, upper, out, &DiffOptions::default())
}

/// [`write_diff`] with options.
pub fn write_diff_with(
    lower: &Path,
    upper: &Path,
    out: impl Write,
    options: &DiffOptions,
) -> Result<(), Error> {
    let mut writer = ChangeWriter {
        builder: tar::Builder::new(out),
        upper: upper.to_path_buf(),
        mtime_upper_bound: options.mtime_upper_bound,
        inode_source: HashMap::new(),
        inode_refs: HashMap::new(),
        added_dirs: HashSet::new(),
    };
    let walk = Walk {
        lower,
        upper,
        writer: &mut writer,
    };
    walk.run()
        .map_err(|err| err.context("failed to create diff tar stream"))?;
    writer
        .builder
        .into_inner()
        .and_then(|mut out| out.flush())
        .map_err(|err| Error::from(err).context("failed to close tar writer"))?;
    Ok(())
}

/// What happened to one path between `lower` and `upper`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    Add,
    Modify,
    Delete,
    /// The same in both, reported only for hard-linked files.
    Unmodified,
}

struct Walk<'a, W: Write> {
    lower: &'a Path,
    upper: &'a Path,
    writer: &'a mut ChangeWriter<W>,
}

impl<W: Write> Walk<'_, W> {
    fn run(mut self) -> Result<(), Error> {
        self.both(Path::new(""))
    }

    /// Compares the directory `rel` present in both trees.
    fn both(&mut self, rel: &Path) -> Result<(), Error> {
        let lower_names = sorted_names(&self.lower.join(rel))?;
        let upper_names = sorted_names(&self.upper.join(rel))?;
        let (mut l, mut u) = (0, 0);
        while l < lower_names.len() || u < upper_names.len() {
            let order = match (lower_names.get(l), upper_names.get(u)) {
                (Some(a), Some(b)) => a.as_bytes().cmp(b.as_bytes()),
                (Some(_), None) => std::cmp::Ordering::Less,
                _ => std::cmp::Ordering::Greater,
            };
            match order {
                std::cmp::Ordering::Less => {
                    self.writer
                        .handle(Change::Delete, &rel.join(&lower_names[l]), None)?;
                    l += 1;
                }
                std::cmp::Ordering::Greater => {
                    let path = rel.join(&upper_names[u]);
                    let meta = lstat(&self.upper.join(&path))?;
                    self.writer.handle(Change::Add, &path, Some(&meta))?;
                    if meta.is_dir() {
                        self.added(&path)?;
                    }
                    u += 1;
                }
                std::cmp::Ordering::Equal => {
                    let path = rel.join(&upper_names[u]);
                    let (lower_path, upper_path) = (self.lower.join(&path), self.upper.join(&path));
                    let lower_meta = lstat(&lower_path)?;
                    let upper_meta = lstat(&upper_path)?;
                    let same = same_file(&lower_path, &lower_meta, &upper_path, &upper_meta)?;
                    if !same {
                        self.writer
                            .handle(Change::Modify, &path, Some(&upper_meta))?;
                    } else if is_linked(&upper_meta) {
                        self.writer
                            .handle(Change::Unmodified, &path, Some(&upper_meta))?;
                    }
                    if upper_meta.is_dir() {
                        if lower_meta.is_dir() {
                            self.both(&path)?;
                        } else {
                            self.added(&path)?;
                        }
                    }
                    l += 1;
                    u += 1;
                }
            }
        }
        Ok(())
    }

    /// Adds everything under the directory `rel`, which only `upper` has.
    fn added(&mut self, rel: &Path) -> Result<(), Error> {
        for name in sorted_names(&self.upper.join(rel))? {
            let path = rel.join(&name);
            let meta = lstat(&self.upper.join(&path))?;
            self.writer.handle(Change::Add, &path, Some(&meta))?;
            if meta.is_dir() {
                self.added(&path)?;
            }
        }
        Ok(())
    }
}

/// Turns changes into tar entries (containerd's `ChangeWriter`).
struct ChangeWriter<W: Write> {
    builder: tar::Builder<W>,
    upper: PathBuf,
    mtime_upper_bound: Option<i64>,
    /// The entry name first written for a hard-linked inode, keyed by (device, inode).
    inode_source: HashMap<(u64, u64), Vec<u8>>,
    /// Unchanged names of an inode not written yet, linked once it is.
    inode_refs: HashMap<(u64, u64), Vec<Vec<u8>>>,
    /// Directories already written (names without the trailing slash).
    added_dirs: HashSet<Vec<u8>>,
}

impl<W: Write> ChangeWriter<W> {
    fn handle(&mut self, change: Change, rel: &Path, meta: Option<&Metadata>) -> Result<(), Error> {
        let mut name = rel.as_os_str().as_bytes().to_vec();
        let Some(meta) = meta.filter(|_| change != Change::Delete) else {
            return self.whiteout(&name);
        };
        let file_type = meta.file_type();
        if file_type.is_socket() {
            return Ok(());
        }
        let source = self.upper.join(rel);
        let mut entry = TarEntry::from_metadata(meta);
        if file_type.is_symlink() {
            entry.link_name = fs::read_link(&source)
                .map_err(|err| Error::from(err).context(source.display()))?
                .into_os_string()
                .into_vec();
        }
        if let Some(bound) = self.mtime_upper_bound {
            entry.mtime = entry.mtime.min(bound);
        }
        if file_type.is_dir() {
            name.push(b'/');
        }
        entry.name = name;

        let mut additional_links = Vec::new();
        if is_linked(meta) {
            let inode = (meta.dev(), meta.ino());
            if let Some(source) = self.inode_source.get(&inode) {
                entry.kind = EntryType::Link;
                entry.link_name = source.clone();
                entry.size = 0;
            } else {
                if change == Change::Unmodified {
                    self.inode_refs.entry(inode).or_default().push(entry.name);
                    return Ok(());
                }
                self.inode_source.insert(inode, entry.name.clone());
                additional_links = self.inode_refs.remove(&inode).unwrap_or_default();
            }
        } else if change == Change::Unmodified {
            return Ok(());
        }

        if let Some(capability) = crate::sys::lgetxattr(&source, "security.capability")
            .map_err(|err| Error::from(err).context("failed to get capabilities xattr"))?
        {
            if !capability.is_empty() {
                entry
                    .pax
                    .push(("SCHILY.xattr.security.capability".into(), capability));
            }
        }

        self.include_parents(&entry.name)?;
        if entry.kind == EntryType::Regular && entry.size > 0 {
            let file = fs::File::open(&source)
                .map_err(|err| Error::from(err).context("failed to open path"))?;
            let exact = Exact {
                inner: file.take(entry.size),
                left: entry.size,
            };
            entry
                .write(&mut self.builder, exact)
                .map_err(|err| err.context(format!("failed to copy {}", source.display())))?;
        } else {
            entry.write(&mut self.builder, io::empty())?;
        }

        let source_name = entry.name.clone();
        for extra in additional_links {
            entry.name = extra;
            entry.kind = EntryType::Link;
            entry.link_name = source_name.clone();
            entry.size = 0;
            self.include_parents(&entry.name)?;
            entry.write(&mut self.builder, io::empty())?;
        }
        Ok(())
    }

    fn whiteout(&mut self, name: &[u8]) -> Result<(), Error> {
        let split = name
            .iter()
            .rposition(|&b| b == b'/')
            .map_or(0, |slash| slash + 1);
        let (dir, base) = name.split_at(split);
        let entry = TarEntry {
            name: [dir, WHITEOUT_PREFIX.as_bytes(), base].concat(),
            kind: EntryType::Regular,
            ..TarEntry::default()
        };
        self.include_parents(&entry.name)?;
        entry.write(&mut self.builder, io::empty())
    }

    /// Writes the parent directory of `name` (and so its own parents) unless already written.
    fn include_parents(&mut self, name: &[u8]) -> Result<(), Error> {
        let trimmed = name.strip_suffix(b"/").unwrap_or(name);
        if let Some(slash) = trimmed.iter().rposition(|&b| b == b'/') {
            let parent = &trimmed[..slash];
            if !parent.is_empty() && self.added_dirs.insert(parent.to_vec()) {
                let parent = Path::new(std::ffi::OsStr::from_bytes(parent));
                let path = self.upper.join(parent);
                let meta =
                    fs::metadata(&path).map_err(|err| Error::from(err).context(path.display()))?;
                self.handle(Change::Modify, parent, Some(&meta))?;
            }
        }
        if name.ends_with(b"/") {
            self.added_dirs.insert(trimmed.to_vec());
        }
        Ok(())
    }
}

/// One tar entry to write.
struct TarEntry {
    name: Vec<u8>,
    kind: EntryType,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: i64,
    size: u64,
    link_name: Vec<u8>,
    device: Option<(u32, u32)>,
    pax: Vec<(String, Vec<u8>)>,
}

impl Default for TarEntry {
    fn default() -> Self {
        TarEntry {
            name: Vec::new(),
            kind: EntryType::Regular,
            mode: 0,
            uid: 0,
            gid: 0,
            mtime: 0,
            size: 0,
            link_name: Vec::new(),
            device: None,
            pax: Vec::new(),
        }
    }
}

/// Largest values the USTAR numeric fields hold in octal.
const MAX_ID: u64 = 0o7777777;
const MAX_SIZE: u64 = 0o77777777777;

impl TarEntry {
    fn from_metadata(meta: &Metadata) -> TarEntry {
        let file_type = meta.file_type();
        let kind = if file_type.is_dir() {
            EntryType::Directory
        } else if file_type.is_symlink() {
            EntryType::Symlink
        } else if file_type.is_char_device() {
            EntryType::Char
        } else if file_type.is_block_device() {
            EntryType::Block
        } else if file_type.is_fifo() {
            EntryType::Fifo
        } else {
            EntryType::Regular
        };
        let device = (file_type.is_char_device() || file_type.is_block_device()).then(|| {
            let rdev = meta.rdev();
            (libc::major(rdev), libc::minor(rdev))
        });
        TarEntry {
            kind,
            mode: meta.mode() & 0o7777,
            uid: u64::from(meta.uid()),
            gid: u64::from(meta.gid()),
            mtime: meta.mtime(),
            size: if kind == EntryType::Regular {
                meta.size()
            } else {
                0
            },
            device,
            ..TarEntry::default()
        }
    }

    /// Appends the entry (a PAX header first when USTAR cannot hold it) and its data.
    fn write<W: Write>(&self, builder: &mut tar::Builder<W>, data: impl Read) -> Result<(), Error> {
        let mut header = Header::new_ustar();
        let mut pax: Vec<(&str, Vec<u8>)> = Vec::new();
        header.set_entry_type(self.kind);
        header.set_mode(self.mode);
        header.set_mtime(u64::try_from(self.mtime).unwrap_or(0));
        header.set_size(self.size.min(MAX_SIZE));
        header.set_uid(self.uid.min(MAX_ID));
        header.set_gid(self.gid.min(MAX_ID));
        if self.size > MAX_SIZE {
            pax.push(("size", self.size.to_string().into_bytes()));
        }
        if self.uid > MAX_ID {
            pax.push(("uid", self.uid.to_string().into_bytes()));
        }
        if self.gid > MAX_ID {
            pax.push(("gid", self.gid.to_string().into_bytes()));
        }
        if let Some((major, minor)) = self.device {
            header.set_device_major(major)?;
            header.set_device_minor(minor)?;
        }
        let ustar = header.as_ustar_mut().expect("a new ustar header is ustar");
        match split_ustar_name(&self.name) {
            Some((prefix, name)) => {
                ustar.prefix[..prefix.len()].copy_from_slice(prefix);
                ustar.name[..name.len()].copy_from_slice(name);
            }
            None => {
                let cut = self.name.len().min(ustar.name.len());
                ustar.name[..cut].copy_from_slice(&self.name[..cut]);
                pax.push(("path", self.name.clone()));
            }
        }
        if self.link_name.len() <= ustar.linkname.len() && self.link_name.is_ascii() {
            ustar.linkname[..self.link_name.len()].copy_from_slice(&self.link_name);
        } else {
            let cut = self.link_name.len().min(ustar.linkname.len());
            ustar.linkname[..cut].copy_from_slice(&self.link_name[..cut]);
            pax.push(("linkpath", self.link_name.clone()));
        }
        for (key, value) in &self.pax {
            pax.push((key, value.clone()));
        }
        header.set_cksum();
        if !pax.is_empty() {
            builder.append_pax_extensions(pax.iter().map(|(k, v)| (*k, v.as_slice())))?;
        }
        builder.append(&header, data)?;
        Ok(())
    }
}

/// Splits a name into USTAR's prefix and name fields, as Go's writer does; `None` when it
/// needs a PAX record (too long or not ASCII).
fn split_ustar_name(name: &[u8]) -> Option<(&[u8], &[u8])> {
    const NAME: usize = 100;
    const PREFIX: usize = 155;
    if !name.is_ascii() {
        return None;
    }
    if name.len() <= NAME {
        return Some((b"", name));
    }
    let mut length = name.len();
    if length > PREFIX + 1 {
        length = PREFIX + 1;
    } else if name[length - 1] == b'/' {
        length -= 1;
    }
    let slash = name[..length].iter().rposition(|&b| b == b'/')?;
    let (prefix, rest) = (&name[..slash], &name[slash + 1..]);
    if slash == 0 || rest.is_empty() || rest.len() > NAME || prefix.len() > PREFIX {
        return None;
    }
    Some((prefix, rest))
}

/// A reader that fails rather than end before `left` bytes (a file that shrank while read
/// would otherwise corrupt the tar).
struct Exact<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && self.left > 0 && !buf.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "short write copying file",
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// continuity's `sameFile`.
fn same_file(
    lower_path: &Path,
    lower: &Metadata,
    upper_path: &Path,
    upper: &Metadata,
) -> Result<bool, Error> {
    if lower.dev() == upper.dev() && lower.ino() == upper.ino() {
        return Ok(true);
    }
    if lower.mode() != upper.mode()
        || lower.uid() != upper.uid()
        || lower.gid() != upper.gid()
        || lower.rdev() != upper.rdev()
    {
        return Ok(false);
    }
    let capability = |path: &Path| {
        crate::sys::lgetxattr(path, "security.capability").map_err(|err| {
            Error::from(err).context(format!("failed to get xattr for {}", path.display()))
        })
    };
    if capability(lower_path)? != capability(upper_path)? {
        return Ok(false);
    }
    if lower.is_dir() {
        return Ok(true);
    }
    if lower.size() != upper.size() || lower.mtime() != upper.mtime() {
        return Ok(false);
    }
    match (lower.mtime_nsec(), upper.mtime_nsec()) {
        (0, 0) => {
            if lower.file_type().is_symlink() {
                Ok(fs::read_link(lower_path)? == fs::read_link(upper_path)?)
            } else if lower.size() == 0 {
                Ok(true)
            } else {
                same_content(lower_path, upper_path)
            }
        }
        (a, b) => Ok(a == b),
    }
}

fn same_content(a: &Path, b: &Path) -> Result<bool, Error> {
    const CHUNK: usize = 32 * 1024;
    let mut a = fs::File::open(a)?;
    let mut b = fs::File::open(b)?;
    let (mut buf_a, mut buf_b) = (vec![0u8; CHUNK], vec![0u8; CHUNK]);
    loop {
        let n = read_full(&mut a, &mut buf_a)?;
        let m = read_full(&mut b, &mut buf_b)?;
        if buf_a[..n] != buf_b[..m] {
            return Ok(false);
        }
        if n == 0 {
            return Ok(true);
        }
    }
}

/// Reads until `buf` is full or the file ends.
fn read_full(file: &mut fs::File, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Ok(filled)
}

fn is_linked(meta: &Metadata) -> bool {
    !meta.is_dir() && meta.nlink() > 1
}

fn lstat(path: &Path) -> Result<Metadata, Error> {
    fs::symlink_metadata(path).map_err(|err| Error::from(err).context(path.display()))
}

/// The names in a directory, sorted bytewise as Go's `filepath.Walk` visits them.
fn sorted_names(dir: &Path) -> Result<Vec<OsString>, Error> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).map_err(|err| Error::from(err).context(dir.display()))? {
        names.push(entry?.file_name());
    }
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diff::apply_layer;
    use std::collections::BTreeMap;
    use std::os::unix::fs::{symlink, PermissionsExt};

    const T: i64 = 1_600_000_000;

    /// Sets every mtime under `root` (children first) to `T`, so only chosen entries differ.
    fn settle(root: &Path) {
        fn walk(path: &Path) {
            let meta = fs::symlink_metadata(path).expect("stat");
            if meta.is_dir() {
                for entry in fs::read_dir(path).expect("readdir") {
                    walk(&entry.expect("entry").path());
                }
            }
            crate::sys::lutimes(path, (T, 0), (T, 0)).expect("utimes");
        }
        walk(root);
    }

    fn write(path: &Path, data: &[u8], mode: u32) {
        fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        fs::write(path, data).expect("write");
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
    }

    fn make_lower(root: &Path) {
        write(&root.join("a.txt"), b"alpha", 0o644);
        write(&root.join("base.txt"), b"base", 0o644);
        write(&root.join("dir/nested/deep.txt"), b"deep", 0o600);
        write(&root.join("dir/keep"), b"keep", 0o644);
        write(&root.join("gone.txt"), b"gone", 0o644);
        write(&root.join("gonedir/sub/child"), b"child", 0o644);
        write(&root.join("mode.txt"), b"mode", 0o644);
        write(&root.join("same-size.txt"), b"12345", 0o644);
        write(&root.join("hl1"), b"linked", 0o644);
        fs::hard_link(root.join("hl1"), root.join("hl2")).expect("link");
        write(&root.join("file-becomes-dir"), b"f", 0o644);
        fs::create_dir_all(root.join("dir-becomes-file/inner")).expect("mkdir");
        symlink("a.txt", root.join("link")).expect("symlink");
        symlink("a.txt", root.join("relink")).expect("symlink");
        settle(root);
    }

    fn make_upper(root: &Path) {
        make_lower(root);
        fs::remove_file(root.join("gone.txt")).expect("rm");
        fs::remove_dir_all(root.join("gonedir")).expect("rm");
        fs::set_permissions(root.join("mode.txt"), fs::Permissions::from_mode(0o755))
            .expect("chmod");
        fs::write(root.join("same-size.txt"), b"54321").expect("write");
        fs::write(root.join("hl1"), b"relinked").expect("write");
        fs::hard_link(root.join("base.txt"), root.join("hl3")).expect("link");
        write(&root.join("dir/nested/new/file"), b"new", 0o640);
        write(&root.join("added.txt"), b"added", 0o644);
        fs::remove_file(root.join("file-becomes-dir")).expect("rm");
        write(&root.join("file-becomes-dir/x"), b"x", 0o644);
        fs::remove_dir_all(root.join("dir-becomes-file")).expect("rm");
        write(&root.join("dir-becomes-file"), b"now a file", 0o644);
        fs::remove_file(root.join("relink")).expect("rm");
        symlink("dir/keep", root.join("relink")).expect("symlink");
        symlink("/absolute/target", root.join("dir/abs-link")).expect("symlink");
        settle(root);
        // Same size and second as the lower file, but content differs (no sub-seconds):
        // only the content comparison can tell.
        crate::sys::lutimes(&root.join("same-size.txt"), (T, 0), (T, 0)).expect("utimes");
    }

    /// Everything that must survive a round trip, keyed by path.
    fn snapshot(root: &Path) -> BTreeMap<String, String> {
        fn walk(root: &Path, rel: &Path, out: &mut BTreeMap<String, String>) {
            for name in sorted_names(&root.join(rel)).expect("names") {
                let rel = rel.join(&name);
                let path = root.join(&rel);
                let meta = fs::symlink_metadata(&path).expect("stat");
                let what = if meta.file_type().is_symlink() {
                    format!(
                        "link -> {}",
                        fs::read_link(&path).expect("readlink").display()
                    )
                } else if meta.is_dir() {
                    walk(root, &rel, out);
                    "dir".to_string()
                } else {
                    let data = fs::read(&path).expect("read");
                    format!(
                        "file {} nlink {}",
                        String::from_utf8_lossy(&data),
                        meta.nlink()
                    )
                };
                let entry = format!(
                    "{what} mode {:o} mtime {}",
                    meta.mode() & 0o7777,
                    meta.mtime()
                );
                out.insert(rel.display().to_string(), entry);
            }
        }
        let mut out = BTreeMap::new();
        walk(root, Path::new(""), &mut out);
        out
    }

    fn tar_names(tar: &[u8]) -> Vec<String> {
        let mut archive = tar::Archive::new(tar);
        archive
            .entries()
            .expect("entries")
            .map(|entry| {
                let entry = entry.expect("entry");
                String::from_utf8_lossy(&entry.path_bytes()).into_owned()
            })
            .collect()
    }

    #[test]
    fn applying_the_diff_to_lower_reproduces_upper() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (lower, upper, target) = (
            dir.path().join("lower"),
            dir.path().join("upper"),
            dir.path().join("target"),
        );
        make_lower(&lower);
        make_upper(&upper);
        make_lower(&target);
        assert_ne!(snapshot(&target), snapshot(&upper));

        let mut tar = Vec::new();
        write_diff(&lower, &upper, &mut tar).expect("diff");
        apply_layer(&tar[..], &target).expect("apply");
        assert_eq!(snapshot(&target), snapshot(&upper));

        let hl1 = fs::metadata(target.join("hl1")).expect("stat");
        let hl2 = fs::metadata(target.join("hl2")).expect("stat");
        assert_eq!(hl1.ino(), hl2.ino(), "hard links kept");
        let base = fs::metadata(target.join("base.txt")).expect("stat");
        let hl3 = fs::metadata(target.join("hl3")).expect("stat");
        assert_eq!(base.ino(), hl3.ino(), "a new link to an unchanged file");

        let names = tar_names(&tar);
        assert!(
            !names
                .iter()
                .any(|n| n == "a.txt" || n == "dir/keep" || n == "link"),
            "{names:?}"
        );
        assert!(names.contains(&".wh.gone.txt".to_string()), "{names:?}");
        assert!(names.contains(&".wh.gonedir".to_string()), "{names:?}");
        assert!(
            !names.iter().any(|n| n.starts_with("gonedir/")),
            "{names:?}"
        );
        assert!(names.contains(&"same-size.txt".to_string()), "{names:?}");

        let mut again = Vec::new();
        write_diff(&lower, &upper, &mut again).expect("diff");
        assert_eq!(tar, again, "deterministic");
    }

    #[test]
    fn entries_are_sorted_with_parents_and_whiteouts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (lower, upper) = (dir.path().join("lower"), dir.path().join("upper"));
        for root in [&lower, &upper] {
            write(&root.join("d/e/x"), b"x", 0o644);
            write(&root.join("d/e/y"), b"y", 0o644);
            write(&root.join("d.txt"), b"d", 0o644);
        }
        fs::remove_file(upper.join("d/e/y")).expect("rm");
        write(&upper.join("d/e/z"), b"z", 0o644);
        write(&upper.join("d.txt"), b"changed", 0o644);
        settle(&lower);
        settle(&upper);

        let mut tar = Vec::new();
        write_diff(&lower, &upper, &mut tar).expect("diff");
        assert_eq!(
            tar_names(&tar),
            ["d/", "d/e/", "d/e/.wh.y", "d/e/z", "d.txt"]
        );

        let mut archive = tar::Archive::new(&tar[..]);
        for entry in archive.entries().expect("entries") {
            let entry = entry.expect("entry");
            if entry.path_bytes().ends_with(b".wh.y") {
                assert_eq!(entry.header().mtime().expect("mtime"), 0);
                assert_eq!(entry.header().entry_type(), EntryType::Regular);
                assert_eq!(entry.size(), 0);
            }
        }
    }

    #[test]
    fn identical_trees_give_an_empty_layer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (lower, upper) = (dir.path().join("lower"), dir.path().join("upper"));
        make_lower(&lower);
        make_lower(&upper);
        let mut tar = Vec::new();
        write_diff(&lower, &upper, &mut tar).expect("diff");
        assert!(tar_names(&tar).is_empty());
        assert_eq!(tar.len(), 1024, "just the end-of-archive marker");
    }

    #[test]
    fn sub_second_mtimes_decide_without_reading_content() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (lower, upper) = (dir.path().join("lower"), dir.path().join("upper"));
        for root in [&lower, &upper] {
            write(&root.join("f"), b"same", 0o644);
            write(&root.join("g"), b"same", 0o644);
        }
        crate::sys::lutimes(&lower.join("f"), (T, 5), (T, 5)).expect("utimes");
        crate::sys::lutimes(&upper.join("f"), (T, 5), (T, 5)).expect("utimes");
        crate::sys::lutimes(&lower.join("g"), (T, 5), (T, 5)).expect("utimes");
        crate::sys::lutimes(&upper.join("g"), (T, 6), (T, 6)).expect("utimes");
        let mut tar = Vec::new();
        write_diff(&lower, &upper, &mut tar).expect("diff");
        assert_eq!(tar_names(&tar), ["g"]);
    }

    #[test]
    fn long_names_use_ustar_prefix_or_pax() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (lower, upper, target) = (
            dir.path().join("lower"),
            dir.path().join("upper"),
            dir.path().join("target"),
        );
        fs::create_dir(&lower).expect("mkdir");
        fs::create_dir(&target).expect("mkdir");
        let split = format!("{}/{}", "p".repeat(120), "n".repeat(90));
        let pax = "q".repeat(200);
        write(&upper.join(&split), b"1", 0o644);
        write(&upper.join(&pax), b"2", 0o644);
        symlink("t".repeat(150), upper.join("longlink")).expect("symlink");
        let mut tar = Vec::new();
        write_diff(&lower, &upper, &mut tar).expect("diff");
        apply_layer(&tar[..], &target).expect("apply");
        assert_eq!(fs::read(target.join(&split)).expect("read"), b"1");
        assert_eq!(fs::read(target.join(&pax)).expect("read"), b"2");
        assert_eq!(
            fs::read_link(target.join("longlink")).expect("readlink"),
            Path::new(&"t".repeat(150))
        );
    }

    #[test]
    fn names_that_are_not_utf8_survive() {
        use std::ffi::OsStr;
        let dir = tempfile::tempdir().expect("tempdir");
        let (lower, upper, target) = (
            dir.path().join("lower"),
            dir.path().join("upper"),
            dir.path().join("target"),
        );
        let name = OsStr::from_bytes(b"caf\xe9");
        write(&lower.join("gone\u{e9}"), b"x", 0o644);
        write(&lower.join(OsStr::from_bytes(b"old\xff")), b"x", 0o644);
        write(&upper.join(name).join("inner"), b"latin-1", 0o644);
        fs::create_dir(&target).expect("mkdir");
        write(&target.join(OsStr::from_bytes(b"old\xff")), b"x", 0o644);
        let mut tar = Vec::new();
        write_diff(&lower, &upper, &mut tar).expect("diff");
        apply_layer(&tar[..], &target).expect("apply");
        assert_eq!(
            fs::read(target.join(name).join("inner")).expect("read"),
            b"latin-1"
        );
        assert!(!target.join(OsStr::from_bytes(b"old\xff")).exists());
    }

    #[test]
    fn ustar_split_follows_go() {
        assert_eq!(split_ustar_name(b"short"), Some((&b""[..], &b"short"[..])));
        let name = format!("{}/{}", "a".repeat(150), "b".repeat(50));
        let (prefix, rest) = split_ustar_name(name.as_bytes()).expect("split");
        assert_eq!((prefix.len(), rest.len()), (150, 50));
        assert_eq!(split_ustar_name("x".repeat(101).as_bytes()), None);
        assert_eq!(split_ustar_name("é".repeat(10).as_bytes()), None);
    }
}
