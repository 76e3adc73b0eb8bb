//! `io.containerd.differ.v1.walking`: applies layers by unpacking them into the mounted
//! directory and computes layers by walking two directory trees, reading and writing blobs
//! through the namespaced content store.
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

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::api::mount::Mount as ApiMount;
use crate::api::types::Descriptor;
use crate::api::Any;
use crate::content::{Digest, ReadAt};
use crate::diff::compression::{self, Compression, MEDIA_TYPE_LAYER, MEDIA_TYPE_LAYER_GZIP};
use crate::diff::processor::{self, Processors};
use crate::diff::walk::DiffOptions;
use crate::diff::ApplyOptions;
use crate::errdefs::{Class, Error};
use crate::metadata::{ContentWriter, Metadata};
use crate::mount::{Mount, TempMount};
use crate::plugin::{types, Instance, Registration};
use crate::services::diff::{CompareOptions, Differ, DifferHandle};
use crate::services::snapshots::mount_from_api;

/// The label naming the uncompressed digest of a compressed layer.
pub const LABEL_UNCOMPRESSED: &str = "containerd.io/uncompressed";

/// See the module documentation.
pub struct Walking {
    meta: Arc<Metadata>,
    processors: Processors,
    /// Where Compare mounts overlay trees: `<root>/tmpmounts`, as containerd 2 has it.
    temp_mounts: PathBuf,
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
    let id = crate::services::leases::generate_id().unwrap_or_default();
    format!("diff-{nanos}-{id}")
}

impl Differ for Walking {
    fn apply(
        &self,
        ns: &str,
        _lease: Option<&str>,
        desc: &Descriptor,
        mounts: &[ApiMount],
        _payloads: &HashMap<String, Any>,
        sync_fs: bool,
    ) -> Result<Descriptor, Error> {
        let mounts: Vec<Mount> = mounts.iter().map(mount_from_api).collect();
        let (root, options) = apply_target(&mounts)?;
        let digest = Digest::parse(&desc.digest)?;
        let (blob, size) = self.meta.reader(ns, &digest)?;
        let blob: Box<dyn Read + Send> = Box::new(BlobStream {
            blob,
            offset: 0,
            size: size.max(0) as u64,
        });
        let tar = processor::uncompressed_layer(&self.processors, &desc.media_type, blob)?;
        // apply_layer reads to the end, so a failing processor's error surfaces here.
        let stats = crate::diff::apply_layer_with(tar, &root, &options)?;
        if sync_fs {
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
        ns: &str,
        lease: Option<&str>,
        lower: &[ApiMount],
        upper: &[ApiMount],
        opts: &CompareOptions,
    ) -> Result<Descriptor, Error> {
        let lower: Vec<Mount> = lower.iter().map(mount_from_api).collect();
        let upper: Vec<Mount> = upper.iter().map(mount_from_api).collect();
        let media_type = if opts.media_type.is_empty() {
            MEDIA_TYPE_LAYER_GZIP.to_string()
        } else {
            opts.media_type.clone()
        };
        // Refuses zstd and unknown media types as NotImplemented, before anything is written.
        let compression = compression::diff_compression(&media_type)?;
        // Dropped (unmounted) after the walk, whatever its outcome.
        let lower = Tree::open(&lower, &self.temp_mounts)?;
        let upper = Tree::open(&upper, &self.temp_mounts)?;
        let fresh = opts.reference.is_empty();
        let reference = if fresh {
            unique_ref()
        } else {
            opts.reference.clone()
        };
        let mut writer = self
            .meta
            .writer(ns, &reference, 0, None, lease.map(str::to_string))
            .map_err(|err| err.context("failed to open writer"))?;
        if !fresh && writer.offset() > 0 {
            writer.truncate(0)?;
        }
        let mut labels: std::collections::BTreeMap<String, String> =
            opts.labels.clone().into_iter().collect();
        let written = (|| {
            let sink = io::BufWriter::with_capacity(1 << 20, IngestSink(&mut writer));
            let mut out = compression::DiffWriter::new(compression, sink)?;
            let options = DiffOptions {
                mtime_upper_bound: opts.source_date_epoch.as_ref().map(|t| t.seconds),
            };
            crate::diff::walk::write_diff_with(lower.path(), upper.path(), &mut out, &options)
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
                if let Err(abort) = self.meta.abort(ns, &reference) {
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
            .info(ns, &digest)
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
fn remove_stale_mounts(dir: &Path) {
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

/// `io.containerd.differ.v1.walking`.
pub fn registration() -> Registration {
    Registration::new(types::DIFF, "walking", |ic| {
        let meta = ic.single::<Metadata>(types::METADATA)?;
        let processors = Processors::new(&ic.daemon.stream_processors);
        ic.meta.platforms.push(crate::proxy::host_platform());
        let temp_mounts = Path::new(&ic.daemon.root).join("tmpmounts");
        remove_stale_mounts(&temp_mounts);
        Ok(Instance::new(Arc::new(DifferHandle(Arc::new(Walking {
            meta,
            processors,
            temp_mounts,
        })))))
    })
    .requires(&[types::METADATA])
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
