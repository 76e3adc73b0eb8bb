//! Whether overlayfs works under a root, checked the way containerd's `overlayutils` does:
//! the backing file system must report entry types (`d_type`), and a real overlay mount
//! with two lower directories must succeed in a scratch directory under the root. Also the
//! mount options the kernel wants (`index=off`, `userxattr`).
//!
//! The check runs on a short-lived thread (`ctrd-ovl-check`), the test mount in a private
//! mount namespace of its own. The daemon starts it before its plugins ([`prestart`]), so
//! it overlaps their start-up until the overlayfs plugin takes the verdict; the thread
//! then unmounts (which waits for the kernel's RCU grace period, milliseconds of start-up)
//! and removes the scratch directory. Should the process die first, the mount dies with the
//! thread's namespace and never shows on the host; a leftover scratch directory is removed
//! by the next check.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use crate::mount::{self, Mount};

/// Prefixes of the scratch directories the checks make under a root.
const SCRATCH: [&str; 3] = [
    "d_type-check-",
    "multiple-lowerdir-check",
    "userxattr-check",
];

/// The rest of a successful check, still running: joined by [`Cleanup::wait`] or on drop.
pub struct Cleanup(Option<JoinHandle<()>>);

impl Cleanup {
    /// Waits until the test mount is gone and its scratch directory removed.
    pub fn wait(mut self) {
        self.join();
    }

    fn join(&mut self) {
        if let Some(handle) = self.0.take() {
            if handle.join().is_err() {
                log::warn!("the overlay check thread panicked");
            }
        }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        self.join();
    }
}

/// `Ok` (with the check's tail still running) when overlay can be used under `root`, else
/// why not.
pub fn supported(root: &Path) -> Result<Cleanup, String> {
    start(root).outcome()
}

/// A check running on its own thread (see [`start`]).
pub struct Pending {
    root: PathBuf,
    outcome: crossbeam_channel::Receiver<Result<(), String>>,
    cleanup: Cleanup,
}

impl Pending {
    /// Waits for the verdict: as [`supported`].
    pub fn outcome(self) -> Result<Cleanup, String> {
        verdict(&self.outcome, self.cleanup, || {
            "failed to mount overlay: the overlay check thread ended early".into()
        })
    }
}

/// A check thread's verdict: on success its `cleanup` (the rest still running); on failure,
/// or `ended_early` when the thread sent none, once the thread is done.
fn verdict<E>(
    outcome: &crossbeam_channel::Receiver<Result<(), E>>,
    mut cleanup: Cleanup,
    ended_early: impl FnOnce() -> E,
) -> Result<Cleanup, E> {
    let err = match outcome.recv() {
        Ok(Ok(())) => return Ok(cleanup),
        Ok(Err(err)) => err,
        Err(_) => ended_early(),
    };
    cleanup.join();
    Err(err)
}

/// Starts the whole check of `root` (an existing directory) on the `ctrd-ovl-check` thread:
/// leftovers, `d_type`, then the test mount. The caller goes on at once.
pub fn start(root: &Path) -> Pending {
    let (tx, rx) = crossbeam_channel::bounded(1);
    let unstarted = tx.clone();
    let thread_root = root.to_path_buf();
    let spawned = std::thread::Builder::new()
        .name("ctrd-ovl-check".into())
        .spawn(move || check_root(&thread_root, tx));
    if let Err(err) = &spawned {
        // The test mount needs a thread of its own (its mount namespace).
        let _ = unstarted.send(Err(format!("failed to mount overlay: {err}")));
    }
    drop(unstarted);
    Pending {
        root: root.to_path_buf(),
        outcome: rx,
        cleanup: Cleanup(spawned.ok()),
    }
}

/// Waits for a check [`prestart`] began that no plugin took (start-up stopped before the
/// overlayfs plugin's turn), so its test mount and scratch directory are gone.
pub fn finish_prestarted() {
    let early = PRESTARTED.lock().take();
    drop(early);
}

/// A check started before the plugins (see [`prestart`]).
static PRESTARTED: parking_lot::Mutex<Option<Pending>> = parking_lot::Mutex::new(None);

/// Starts the check of `root` now, for the overlayfs plugin to take when its turn comes:
/// the test mount then overlaps the start-up work before it.
pub fn prestart(root: &Path) {
    *PRESTARTED.lock() = Some(start(root));
}

/// The verdict for `root`: from the check [`prestart`] began if it was for `root`, else from
/// one started now.
pub fn supported_prestarted(root: &Path) -> Result<Cleanup, String> {
    let early = PRESTARTED.lock().take();
    match early {
        Some(pending) if pending.root == root => pending.outcome(),
        other => {
            // One for another root (not expected): waited for to its end, then ours.
            drop(other);
            supported(root)
        }
    }
}

/// The check thread of [`start`].
fn check_root(root: &Path, outcome: crossbeam_channel::Sender<Result<(), String>>) {
    remove_leftovers(root);
    let verdict = match supports_d_type(root) {
        Ok(true) => Ok(()),
        Ok(false) => Err(format!(
            "{} does not support d_type. If the backing filesystem is xfs, please reformat with ftype=1 to enable d_type support",
            root.display()
        )),
        Err(err) => Err(format!(
            "cannot check d_type support of {}: {err}",
            root.display()
        )),
    };
    if let Err(err) = verdict {
        let _ = outcome.send(Err(err));
        return;
    }
    let report = |result: io::Result<()>| {
        let _ = outcome.send(result.map_err(|err| format!("failed to mount overlay: {err}")));
    };
    match scratch_mount(root, "multiple-lowerdir-check", &[]) {
        Ok((m, scratch)) => mount_and_undo(&m, &scratch, report),
        Err(err) => report(Err(err)),
    }
}

/// Removes scratch directories an earlier check left (its process died first).
fn remove_leftovers(root: &Path) {
    let Ok(entries) = fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if SCRATCH.iter().any(|prefix| name.starts_with(prefix)) {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// Whether the file system under `dir` fills in `d_type` when listing a directory.
pub fn supports_d_type(dir: &Path) -> io::Result<bool> {
    let scratch = mount::unique_dir(dir, "d_type-check-")?;
    let result = fs::write(scratch.join("file"), b"")
        .and_then(|()| crate::sys::dir_entry_types(&scratch))
        .map(|entries| {
            entries
                .iter()
                .any(|(name, kind)| name == "file" && *kind == libc::DT_REG)
        });
    let _ = fs::remove_dir_all(&scratch);
    result
}

/// The scratch directory of a test mount under `root` and the overlay of two lower
/// directories, an upper and a work directory in it (with `extra` options).
fn scratch_mount(root: &Path, prefix: &str, extra: &[&str]) -> io::Result<(Mount, PathBuf)> {
    let scratch = mount::unique_dir(root, prefix)?;
    let made = (|| {
        for dir in ["lower1", "lower2", "upper", "work", "merged"] {
            fs::create_dir(scratch.join(dir))?;
        }
        Ok::<(), io::Error>(())
    })();
    if let Err(err) = made {
        let _ = fs::remove_dir_all(&scratch);
        return Err(err);
    }
    let path = |dir: &str| scratch.join(dir).to_string_lossy().into_owned();
    let mut options = vec![format!(
        "lowerdir={}:{},upperdir={},workdir={}",
        path("lower2"),
        path("lower1"),
        path("upper"),
        path("work")
    )];
    options.extend(extra.iter().map(|o| o.to_string()));
    let m = Mount {
        r#type: "overlay".into(),
        source: "overlay".into(),
        target: String::new(),
        options,
    };
    Ok((m, scratch))
}

/// Makes a test mount under `root` (with `extra` options) from a thread in a private mount
/// namespace and waits for its outcome; see the module documentation.
fn mount_check(root: &Path, prefix: &str, extra: &[&str]) -> io::Result<Cleanup> {
    let (m, scratch) = scratch_mount(root, prefix, extra)?;
    let (tx, rx) = crossbeam_channel::bounded(1);
    let thread_scratch = scratch.clone();
    let spawned = std::thread::Builder::new()
        .name("ctrd-ovl-check".into())
        .spawn(move || {
            mount_and_undo(&m, &thread_scratch, |result| {
                let _ = tx.send(result);
            })
        });
    let handle = match spawned {
        Ok(handle) => handle,
        Err(err) => {
            let _ = fs::remove_dir_all(&scratch);
            return Err(err);
        }
    };
    verdict(&rx, Cleanup(Some(handle)), || {
        io::Error::other("the overlay check thread ended early")
    })
}

/// On a check thread: its own mount namespace (private, so nothing propagates to the host),
/// the test mount, its outcome reported, then the unmount and the scratch directory removed.
fn mount_and_undo(m: &Mount, scratch: &Path, report: impl FnOnce(io::Result<()>)) {
    let merged = scratch.join("merged");
    let mounted = crate::sys::unshare(libc::CLONE_NEWNS)
        .and_then(|()| {
            crate::sys::mount(
                "none",
                Path::new("/"),
                "",
                libc::MS_REC | libc::MS_PRIVATE,
                "",
            )
        })
        .and_then(|()| mount::mount(m, &merged));
    let ok = mounted.is_ok();
    report(mounted);
    if ok {
        if let Err(err) = mount::unmount_all(&merged) {
            log::warn!("failed to unmount {}: {err}", merged.display());
            return;
        }
    }
    let _ = fs::remove_dir_all(scratch);
}

/// Whether the kernel's overlay module has the `index` feature, which containerd turns off.
pub fn supports_index() -> bool {
    Path::new("/sys/module/overlay/parameters/index").exists()
}

/// Whether ctrd runs in a user namespace other than the initial one.
fn in_user_namespace() -> bool {
    match fs::read_to_string("/proc/self/uid_map") {
        Ok(map) => {
            let fields: Vec<&str> = map.split_whitespace().collect();
            fields != ["0", "0", "4294967295"]
        }
        Err(_) => false,
    }
}

/// Whether overlay must be mounted with `userxattr`: only inside a user namespace, and only
/// where the kernel accepts the option.
pub fn needs_userxattr(root: &Path) -> bool {
    in_user_namespace()
        && mount_check(root, "userxattr-check", &["userxattr"])
            .map(Cleanup::wait)
            .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn require_root() -> bool {
        if crate::sys::geteuid() == 0 {
            return true;
        }
        assert!(
            std::env::var_os("CI").is_none(),
            "overlay checks need root under CI"
        );
        false
    }

    /// An overlay mounted in a temp dir, unmounted on drop.
    struct Mounted(std::path::PathBuf);

    impl Drop for Mounted {
        fn drop(&mut self) {
            let _ = mount::unmount_all(&self.0);
        }
    }

    #[test]
    fn ext4_supports_overlay_and_leaves_nothing_behind() {
        if !require_root() {
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(supports_d_type(dir.path()).expect("d_type"));
        // A leftover of a check whose process died is removed by the next.
        fs::create_dir_all(dir.path().join("multiple-lowerdir-check7/merged")).expect("mkdir");
        supported(dir.path()).expect("overlay works").wait();
        assert_eq!(fs::read_dir(dir.path()).expect("readdir").count(), 0);
    }

    #[test]
    fn a_root_on_overlayfs_is_reported_unsupported() {
        if !require_root() {
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        for d in ["l", "u", "w", "m"] {
            fs::create_dir(dir.path().join(d)).expect("mkdir");
        }
        let p = |d: &str| dir.path().join(d).to_string_lossy().into_owned();
        let m = Mount {
            r#type: "overlay".into(),
            source: "overlay".into(),
            target: String::new(),
            options: vec![
                format!("lowerdir={}", p("l")),
                format!("upperdir={}", p("u")),
                format!("workdir={}", p("w")),
            ],
        };
        mount::mount(&m, &dir.path().join("m")).expect("mount overlay");
        let guard = Mounted(dir.path().join("m"));
        let reason = supported(&guard.0)
            .err()
            .expect("overlay on overlay is refused");
        assert!(reason.starts_with("failed to mount overlay: "), "{reason}");
        let left: Vec<_> = fs::read_dir(&guard.0).expect("readdir").collect();
        assert!(left.is_empty(), "scratch directories removed: {left:?}");
    }

    #[test]
    fn a_file_system_without_d_type_is_reported_unsupported() {
        if !require_root() {
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let image = dir.path().join("fs.img");
        fs::File::create(&image)
            .and_then(|f| f.set_len(16 << 20))
            .expect("image");
        let status = std::process::Command::new("mkfs.ext4")
            .args(["-q", "-F", "-O", "^filetype"])
            .arg(&image)
            .status()
            .expect("mkfs.ext4 (e2fsprogs) is installed");
        assert!(status.success());
        let target = dir.path().join("mnt");
        fs::create_dir(&target).expect("mkdir");
        let status = std::process::Command::new("mount")
            .args(["-o", "loop"])
            .arg(&image)
            .arg(&target)
            .status()
            .expect("mount");
        assert!(status.success(), "loop mount");
        let guard = Mounted(target);
        assert!(!supports_d_type(&guard.0).expect("check"));
        let reason = supported(&guard.0).err().expect("unsupported");
        assert!(reason.contains("does not support d_type"), "{reason}");
    }

    #[test]
    fn the_host_needs_no_userxattr() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(needs_userxattr(dir.path()), in_user_namespace());
    }
}
