//! The walking differ (`io.containerd.differ.v1.walking`, registered in [`super::plugin`]):
//! applies layers by unpacking them into the mounted directory and computes layers by
//! walking two directory trees, reading and writing blobs through the namespaced content
//! store.
//!
//! Bind mounts (the native snapshotter's, and overlayfs' parentless or single-parent
//! ones) are used as the directory they name, with nothing mounted. Apply onto an overlay
//! mount writes straight into its `upperdir` with overlay whiteouts, looking up missing
//! parents in its `lowerdir`s, as containerd does for unpacking; Compare mounts an overlay
//! read-only on a temporary directory under `<root>/tmpmounts` for the walk and unmounts
//! it after. Other mount types are Unimplemented, so the diff service can try the next
//! differ.
//!
//! Apply turns the layer into a plain tar first: configured stream processors run for the
//! media types they accept (each may hand over to another), gzip is decompressed, and a
//! media type nothing accepts fails the call.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use super::apply::ApplyOptions;
use super::compression::{self, Compression, MEDIA_TYPE_LAYER, MEDIA_TYPE_LAYER_GZIP};
use super::differ::{ApplyParams, CompareOptions, Differ};
use super::processor::{self, Processors};
use super::walk::DiffOptions;
use crate::content::{Descriptor, Digest, ReadAt};
use crate::errdefs::{Class, Error};
use crate::metadata::{ContentWriter, Metadata};
use crate::mount::{Mount, TempMount};
use crate::scope::Scope;

/// The label naming the uncompressed digest of a compressed layer.
pub const LABEL_UNCOMPRESSED: &str = "containerd.io/uncompressed";

/// See the module documentation.
pub struct Walking {
    meta: Arc<Metadata>,
    processors: Processors,
    /// Where Compare mounts overlay trees: `<root>/tmpmounts`, as containerd 2 has it.
    temp_mounts: PathBuf,
}

impl Walking {
    /// A walking differ over the namespaced content store, running `processors` on apply
    /// and mounting Compare's overlay trees under `temp_mounts`.
    pub fn new(meta: Arc<Metadata>, processors: Processors, temp_mounts: PathBuf) -> Self {
        Walking {
            meta,
            processors,
            temp_mounts,
        }
    }
}

/// Where Apply writes: a directory, and how to write into it.
fn apply_target(mounts: &[Mount]) -> Result<(PathBuf, ApplyOptions), Error> {
    match mounts {
        [m] if m.is_bind() => Ok((PathBuf::from(&m.source), ApplyOptions::default())),
        [m] if m.r#type == "overlay" => {
            let upper = m.upperdir().ok_or_else(|| {
                Error::invalid_argument(
                    "cannot apply to a read-only overlay mount: upperdir not found",
                )
            })?;
            Ok((
                PathBuf::from(upper),
                ApplyOptions {
                    overlay_whiteouts: true,
                    parents: m.lowerdirs().into_iter().map(PathBuf::from).collect(),
                },
            ))
        }
        [m] => Err(unhandled(&m.r#type)),
        _ => Err(Error::unimplemented(format!(
            "the walking differ handles one mount, got {}",
            mounts.len()
        ))),
    }
}

fn unhandled(kind: &str) -> Error {
    Error::unimplemented(format!(
        "the walking differ handles bind and overlay mounts only, not {kind:?}"
    ))
}

/// A tree Compare reads: a bind mount's source as it is, or an overlay mounted read-only
/// on a temporary directory for as long as this lives.
enum Tree {
    Dir(PathBuf),
    Mounted(TempMount),
}

impl Tree {
    fn open(mounts: &[Mount], temp: &Path) -> Result<Tree, Error> {
        match mounts {
            [m] if m.is_bind() => Ok(Tree::Dir(PathBuf::from(&m.source))),
            [m] if m.r#type == "overlay" => {
                if m.lowerdirs().is_empty() {
                    return Err(Error::invalid_argument("overlay mount without lowerdir"));
                }
                TempMount::new(temp, &crate::mount::readonly(mounts))
                    .map(Tree::Mounted)
                    .map_err(|err| Error::from(err).context("failed to mount"))
            }
            [m] => Err(unhandled(&m.r#type)),
            _ => Err(Error::unimplemented(format!(
                "the walking differ handles one mount, got {}",
                mounts.len()
            ))),
        }
    }

    fn path(&self) -> &Path {
        match self {
            Tree::Dir(path) => path,
            Tree::Mounted(mount) => mount.path(),
        }
    }
}

/// A blob in the content store read front to back.
struct BlobStream {
    blob: Box<dyn ReadAt>,
    offset: u64,
    size: u64,
}

impl Read for BlobStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.offset >= self.size {
            return Ok(0);
        }
        let want = buf.len().min((self.size - self.offset) as usize);
        let n = self
            .blob
            .read_at(&mut buf[..want], self.offset)
            .map_err(|err| io::Error::other(err.to_string()))?;
        self.offset += n as u64;
        Ok(n)
    }
}

/// Writes into an ingest.
struct IngestSink<'a>(&'a mut ContentWriter);

impl Write for IngestSink<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0
            .write(buf)
            .map_err(|err| io::Error::other(err.to_string()))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn io_error(what: &str) -> impl FnOnce(io::Error) -> Error + '_ {
    move |err| Error::new(Class::Unknown, format!("{what}: {err}"))
}

/// A fresh ingest ref for a Diff that named none.
fn unique_ref() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let id = crate::metadata::generate_lease_id().unwrap_or_default();
    format!("diff-{nanos}-{id}")
}

/// Whole seconds since 1970, rounded down (negative before 1970).
fn unix_seconds(at: SystemTime) -> i64 {
    match at.duration_since(UNIX_EPOCH) {
        Ok(after) => after.as_secs() as i64,
        Err(before) => {
            let d = before.duration();
            -(d.as_secs() as i64) - i64::from(d.subsec_nanos() > 0)
        }
    }
}

impl Differ for Walking {
    fn apply(
        &self,
        scope: &Scope,
        desc: &Descriptor,
        mounts: &[Mount],
        params: &ApplyParams,
    ) -> Result<Descriptor, Error> {
        let (root, options) = apply_target(mounts)?;
        let digest = Digest::parse(&desc.digest)?;
        let (blob, size) = self.meta.reader(scope, &digest)?;
        let blob: Box<dyn Read + Send> = Box::new(BlobStream {
            blob,
            offset: 0,
            size: size.max(0) as u64,
        });
        let tar = processor::uncompressed_layer(&self.processors, &desc.media_type, blob)?;
        // apply_layer reads to the end, so a failing processor's error surfaces here.
        let stats = super::apply_layer_with(tar, &root, &options)?;
        if params.sync_fs {
            crate::sys::syncfs(&root).map_err(io_error("sync filesystem"))?;
        }
        Ok(Descriptor {
            media_type: MEDIA_TYPE_LAYER.to_string(),
            digest: stats.digest.to_string(),
            size: stats.size as i64,
            ..Default::default()
        })
    }

    fn compare(
        &self,
        scope: &Scope,
        lower: &[Mount],
        upper: &[Mount],
        opts: &CompareOptions,
    ) -> Result<Descriptor, Error> {
        let media_type = if opts.media_type.is_empty() {
            MEDIA_TYPE_LAYER_GZIP.to_string()
        } else {
            opts.media_type.clone()
        };
        // Refuses zstd and unknown media types as NotImplemented, before anything is written.
        let compression = compression::diff_compression(&media_type)?;
        // Dropped (unmounted) after the walk, whatever its outcome.
        let lower = Tree::open(lower, &self.temp_mounts)?;
        let upper = Tree::open(upper, &self.temp_mounts)?;
        let fresh = opts.reference.is_empty();
        let reference = if fresh {
            unique_ref()
        } else {
            opts.reference.clone()
        };
        let mut writer = self
            .meta
            .writer(scope, &reference, 0, None)
            .map_err(|err| err.context("failed to open writer"))?;
        if !fresh && writer.offset() > 0 {
            writer.truncate(0)?;
        }
        let mut labels = opts.labels.clone();
        let written = (|| {
            let sink = io::BufWriter::with_capacity(1 << 20, IngestSink(&mut writer));
            let mut out = compression::DiffWriter::new(compression, sink)?;
            let options = DiffOptions {
                mtime_upper_bound: opts.source_date_epoch.map(unix_seconds),
            };
            super::walk::write_diff_with(lower.path(), upper.path(), &mut out, &options)
                .map_err(|err| err.context("failed to write diff"))?;
            let (mut sink, uncompressed) =
                out.finish().map_err(io_error("failed to write diff"))?;
            sink.flush().map_err(io_error("failed to write diff"))?;
            if compression != Compression::Uncompressed {
                labels.insert(LABEL_UNCOMPRESSED.into(), uncompressed.to_string());
            }
            Ok::<(), Error>(())
        })();
        if let Err(err) = written {
            drop(writer);
            if fresh {
                if let Err(abort) = self.meta.abort(scope, &reference) {
                    log::warn!("failed to delete diff upload {reference:?}: {abort}");
                }
            }
            return Err(err);
        }
        let digest = writer.digest();
        match writer.commit(0, Some(digest.clone()), labels) {
            Ok(_) => {}
            Err(err) if err.class() == Class::AlreadyExists => {}
            Err(err) => return Err(err.context("failed to commit")),
        }
        let info = self
            .meta
            .info(scope, &digest)
            .map_err(|err| err.context("failed to get info from content store"))?;
        Ok(Descriptor {
            media_type,
            digest: info.digest,
            size: info.size,
            ..Default::default()
        })
    }
}

/// Unmounts and removes what a crash during Compare left under `dir`.
pub(super) fn remove_stale_mounts(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        log::info!("removing leftover temporary mount {}", path.display());
        let removed = crate::mount::unmount_all(&path).and_then(|()| std::fs::remove_dir(&path));
        if let Err(err) = removed {
            log::warn!("failed to remove {}: {err}", path.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mount(kind: &str, options: &[&str]) -> Mount {
        Mount {
            r#type: kind.into(),
            source: if kind == "bind" { "/s/1/fs" } else { kind }.into(),
            target: String::new(),
            options: options.iter().map(|o| o.to_string()).collect(),
        }
    }

    #[test]
    fn apply_writes_into_binds_and_overlay_upper_directories() {
        let (dir, options) = apply_target(&[mount("bind", &["rw", "rbind"])]).expect("bind");
        assert_eq!(dir, Path::new("/s/1/fs"));
        assert_eq!(options, ApplyOptions::default());

        let overlay = mount(
            "overlay",
            &[
                "workdir=/s/3/work",
                "upperdir=/s/3/fs",
                "lowerdir=/s/2/fs:/s/1/fs",
                "index=off",
            ],
        );
        let (dir, options) = apply_target(&[overlay]).expect("overlay");
        assert_eq!(dir, Path::new("/s/3/fs"));
        assert!(options.overlay_whiteouts);
        assert_eq!(
            options.parents,
            [Path::new("/s/2/fs"), Path::new("/s/1/fs")]
        );
    }

    #[test]
    fn apply_refuses_what_it_would_have_to_mount() {
        let read_only = mount("overlay", &["lowerdir=/s/2/fs:/s/1/fs"]);
        let err = apply_target(&[read_only]).expect_err("no upperdir");
        assert_eq!(err.class(), Class::InvalidArgument);
        let err = apply_target(&[mount("tmpfs", &[])]).expect_err("tmpfs");
        assert_eq!(err.class(), Class::NotImplemented);
        let two = [mount("bind", &["rbind"]), mount("bind", &["rbind"])];
        assert_eq!(
            apply_target(&two).expect_err("two").class(),
            Class::NotImplemented
        );
        assert_eq!(
            apply_target(&[]).expect_err("none").class(),
            Class::NotImplemented
        );
    }

    #[test]
    fn stale_temporary_mounts_are_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let stale = dir.path().join("mount-1");
        std::fs::create_dir(&stale).expect("mkdir");
        if crate::sys::geteuid() == 0 {
            let src = dir.path().join("src");
            std::fs::create_dir(&src).expect("mkdir");
            std::fs::write(src.join("keep"), "k").expect("write");
            crate::mount::mount(&mount_of(&src), &stale).expect("bind");
        }
        remove_stale_mounts(dir.path());
        assert!(!stale.exists());
        if crate::sys::geteuid() == 0 {
            assert!(
                dir.path().join("src/keep").exists(),
                "the mounted tree survives"
            );
        }
        remove_stale_mounts(&dir.path().join("absent"));
    }

    fn mount_of(src: &Path) -> Mount {
        Mount {
            r#type: "bind".into(),
            source: src.to_string_lossy().into_owned(),
            target: String::new(),
            options: vec!["rbind".into(), "ro".into()],
        }
    }

    #[test]
    fn compare_reads_binds_in_place_and_refuses_unknown_mounts() {
        let temp = Path::new("/nonexistent/tmpmounts");
        let tree = Tree::open(&[mount("bind", &["ro", "rbind"])], temp).expect("bind");
        assert_eq!(tree.path(), Path::new("/s/1/fs"));
        let err = Tree::open(&[mount("overlay", &["index=off"])], temp).err();
        assert_eq!(err.map(|e| e.class()), Some(Class::InvalidArgument));
        let err = Tree::open(&[mount("tmpfs", &[])], temp).err();
        assert_eq!(err.map(|e| e.class()), Some(Class::NotImplemented));
    }
}
