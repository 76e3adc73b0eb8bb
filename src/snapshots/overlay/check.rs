//! Whether overlayfs works under a root, checked the way containerd's `overlayutils` does:
//! the backing file system must report entry types (`d_type`), and an overlay of two lower
//! directories in a scratch directory under the root must be accepted by the kernel. Also
//! the mount options the kernel wants (`index=off`, `userxattr`).
//!
//! The kernel builds the test overlay through the file-system context calls and lets it go
//! again, never attached to any mount point: the same checks as a mount, with nothing to
//! unmount (an unmount waits for an RCU grace period, milliseconds of start-up). Kernels
//! before 5.2 lack those calls, seccomp filters older than them may refuse them, and the
//! security modules that mediate mounts (AppArmor, SELinux) judge only the attaching; there
//! the overlay is mounted from a thread in a private mount namespace of its own, so it never
//! shows on the host and dies with the thread.
//!
//! The check runs on a short-lived thread (`ctrd-ovl-check`) that the daemon starts before
//! its plugins ([`prestart`]), so it overlaps their start-up until the overlayfs plugin
//! takes the verdict. Letting the test overlay go and removing the scratch directory (and
//! unmounting, on old kernels) wait until the serving daemon's first quiet moment
//! ([`quiet`]): done as the first calls arrive, they slowed the first answer. A scratch
//! directory left by a process that died first is removed by the next check.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use crate::mount::{self, Mount};

/// Prefixes of the scratch directories the checks make under a root (`d_type-check-` from
/// versions that checked d_type in a directory of its own).
const SCRATCH: [&str; 3] = [
    "d_type-check-",
    "multiple-lowerdir-check",
    "userxattr-check",
];

/// The rest of a successful check, still running: joined by [`Cleanup::wait`] or on drop.
pub struct Cleanup {
    thread: Option<JoinHandle<()>>,
    /// Lets a check held back until the daemon is serving and quiet go on with its tail.
    release: Option<crossbeam_channel::Sender<()>>,
}

impl Cleanup {
    /// Waits until the test's scratch directory (and on old kernels its mount) is gone.
    pub fn wait(mut self) {
        self.join();
    }

    fn join(&mut self) {
        if let Some(release) = self.release.take() {
            let _ = release.try_send(());
        }
        if let Some(handle) = self.thread.take() {
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
    start(root, false).outcome()
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
/// leftovers, `d_type`, then the test overlay. The caller goes on at once. A `held` check
/// keeps its tail (removing the scratch directory) until [`quiet`] or its [`Cleanup`]
/// lets it go, so that work stays out of the daemon's start.
pub fn start(root: &Path, held: bool) -> Pending {
    let (tx, rx) = crossbeam_channel::bounded(1);
    let (release, released) = crossbeam_channel::bounded(1);
    let unstarted = tx.clone();
    let thread_root = root.to_path_buf();
    let spawned = std::thread::Builder::new()
        .name("ctrd-ovl-check".into())
        .spawn(move || check_root(&thread_root, tx, &released));
    if let Err(err) = &spawned {
        let _ = unstarted.send(Err(format!("failed to mount overlay: {err}")));
    }
    drop(unstarted);
    let release = held.then(|| {
        *RELEASE.lock() = Some(release.clone());
        release
    });
    Pending {
        root: root.to_path_buf(),
        outcome: rx,
        cleanup: Cleanup {
            thread: spawned.ok(),
            release,
        },
    }
}

/// Waits for a check [`prestart`] began that no plugin took (start-up stopped before the
/// overlayfs plugin's turn), so its scratch directory is gone.
pub fn finish_prestarted() {
    quiet();
    let early = PRESTARTED.lock().take();
    drop(early);
}

/// The daemon serves and is quiet: a check [`prestart`] began goes on with its tail (once;
/// later calls do nothing).
pub fn quiet() {
    if let Some(release) = RELEASE.lock().take() {
        let _ = release.try_send(());
    }
}

/// A check started before the plugins (see [`prestart`]).
static PRESTARTED: parking_lot::Mutex<Option<Pending>> = parking_lot::Mutex::new(None);

/// What lets the check [`prestart`] began finish (see [`quiet`]).
static RELEASE: parking_lot::Mutex<Option<crossbeam_channel::Sender<()>>> =
    parking_lot::Mutex::new(None);

/// Starts the check of `root` now, for the overlayfs plugin to take when its turn comes:
/// the test overlay is then made while the start-up work before it runs, and its scratch
/// directory removed once the daemon serves and is quiet.
pub fn prestart(root: &Path) {
    *PRESTARTED.lock() = Some(start(root, true));
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

/// The check thread of [`start`]; `released` says when to remove the scratch directory.
fn check_root(
    root: &Path,
    outcome: crossbeam_channel::Sender<Result<(), String>>,
    released: &crossbeam_channel::Receiver<()>,
) {
    remove_leftovers(root);
    let report = |result: Result<(), String>| {
        let _ = outcome.send(result);
    };
    let mount_error = |err: io::Error| format!("failed to mount overlay: {err}");
    // The test overlay's directories also show whether the file system fills in d_type.
    let test = match TestOverlay::make(root, "multiple-lowerdir-check", &[]) {
        Ok(test) => test,
        Err(err) => return report(Err(mount_error(err))),
    };
    let d_type = match test.lists_entry_types() {
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
    if let Err(err) = d_type {
        test.remove();
        return report(Err(err));
    }
    match test.build() {
        Built::MountInstead => mount_and_undo(
            &test,
            |result| report(result.map_err(mount_error)),
            released,
        ),
        Built::Refused(err) => {
            test.remove();
            report(Err(mount_error(err.into())));
        }
        Built::Superblock(superblock) => {
            report(Ok(()));
            let _ = released.recv();
            drop(superblock);
            test.remove();
        }
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

/// What building a test overlay without mounting it told.
enum Built {
    /// The kernel built it: supported. Closing the context lets it go.
    Superblock(std::os::fd::OwnedFd),
    /// The kernel refused it, with its reason.
    Refused(crate::sys::FsContextError),
    /// Only a real mount can tell (see [`TestOverlay::build`]).
    MountInstead,
}

/// Whether building the test overlay failed in a way a mount may not: the kernel lacks the
/// file-system context calls (before 5.2), or a seccomp filter written before them refuses
/// them while it allows `mount` (where the caller truly lacks the right, the mount is
/// refused as well and says so).
fn mount_instead(errno: Option<i32>) -> bool {
    matches!(errno, Some(libc::ENOSYS | libc::EPERM))
}

/// Whether a security module confines this process and may refuse its mounts: AppArmor
/// (a label other than `unconfined`) or SELinux (any context). Both judge a mount when it
/// is attached, which a test overlay that is only built never is, so only a real mount
/// gives their verdict.
fn mounts_mediated() -> bool {
    [
        "/proc/self/attr/apparmor/current",
        "/proc/self/attr/current",
    ]
    .iter()
    .any(|path| match fs::read_to_string(path) {
        Ok(label) => {
            let label = label.trim_end_matches(['\n', '\0']).trim();
            !label.is_empty() && label != "unconfined"
        }
        // No such module (EINVAL), or no such file.
        Err(_) => false,
    })
}

/// A test overlay in a scratch directory under a root: two lower directories, an upper and
/// a work directory, and extra options (`userxattr`).
struct TestOverlay {
    scratch: PathBuf,
    extra: Vec<String>,
}

impl TestOverlay {
    fn make(root: &Path, prefix: &str, extra: &[&str]) -> io::Result<TestOverlay> {
        let scratch = mount::unique_dir(root, prefix)?;
        let test = TestOverlay {
            scratch,
            extra: extra.iter().map(|o| o.to_string()).collect(),
        };
        // No mount point: only the mount of old kernels needs one (made there).
        for dir in ["lower1", "lower2", "upper", "work"] {
            if let Err(err) = fs::create_dir(test.scratch.join(dir)) {
                test.remove();
                return Err(err);
            }
        }
        Ok(test)
    }

    fn path(&self, dir: &str) -> String {
        self.scratch.join(dir).to_string_lossy().into_owned()
    }

    /// The options, each a key with a value or a flag.
    fn options(&self) -> Vec<(String, Option<String>)> {
        let mut options = vec![
            (
                "lowerdir".to_string(),
                Some(format!("{}:{}", self.path("lower2"), self.path("lower1"))),
            ),
            ("upperdir".to_string(), Some(self.path("upper"))),
            ("workdir".to_string(), Some(self.path("work"))),
        ];
        options.extend(self.extra.iter().map(|o| match o.split_once('=') {
            Some((key, value)) => (key.to_string(), Some(value.to_string())),
            None => (o.clone(), None),
        }));
        options
    }

    /// Whether listing the scratch directory reports its subdirectories' types.
    fn lists_entry_types(&self) -> io::Result<bool> {
        let entries = crate::sys::dir_entry_types(&self.scratch)?;
        Ok(entries.iter().any(|(_, kind)| *kind == libc::DT_DIR))
    }

    /// The overlay built by the kernel, never mounted (see [`crate::sys::build_superblock`]),
    /// where that gives the same verdict as a mount: not under a security module that
    /// mediates mounts, not on kernels without the calls or where a filter refuses them.
    fn build(&self) -> Built {
        if mounts_mediated() {
            return Built::MountInstead;
        }
        match self.superblock() {
            Ok(superblock) => Built::Superblock(superblock),
            Err(err) if mount_instead(err.raw_os_error()) => Built::MountInstead,
            Err(err) => Built::Refused(err),
        }
    }

    fn superblock(&self) -> Result<std::os::fd::OwnedFd, crate::sys::FsContextError> {
        let options = self.options();
        let options: Vec<(&str, Option<&str>)> = options
            .iter()
            .map(|(key, value)| (key.as_str(), value.as_deref()))
            .collect();
        crate::sys::build_superblock("overlay", &options)
    }

    /// The same overlay as a mount, for kernels without the file-system context calls.
    fn mount(&self) -> Mount {
        let options = self
            .options()
            .into_iter()
            .map(|(key, value)| match value {
                Some(value) => format!("{key}={value}"),
                None => key,
            })
            .collect::<Vec<_>>()
            .join(",");
        Mount {
            r#type: "overlay".into(),
            source: "overlay".into(),
            target: String::new(),
            options: vec![options],
        }
    }

    fn remove(&self) {
        let _ = fs::remove_dir_all(&self.scratch);
    }
}

/// Makes a test overlay under `root` (with `extra` options) and waits for the outcome; the
/// scratch directory is gone when this returns.
fn overlay_check(root: &Path, prefix: &str, extra: &[&str]) -> io::Result<()> {
    let test = TestOverlay::make(root, prefix, extra)?;
    match test.build() {
        Built::MountInstead => mount_check(test),
        Built::Refused(err) => {
            test.remove();
            Err(err.into())
        }
        Built::Superblock(superblock) => {
            // Closing the context lets the superblock go before its directories are removed.
            drop(superblock);
            test.remove();
            Ok(())
        }
    }
}

/// `test` mounted from a thread in a private mount namespace (kernels before 5.2); the
/// mount and the scratch directory are gone when this returns.
fn mount_check(test: TestOverlay) -> io::Result<()> {
    let (tx, rx) = crossbeam_channel::bounded(1);
    let scratch = test.scratch.clone();
    let spawned = std::thread::Builder::new()
        .name("ctrd-ovl-check".into())
        .spawn(move || {
            let (_, released) = crossbeam_channel::bounded(0);
            mount_and_undo(
                &test,
                |result| {
                    let _ = tx.send(result);
                },
                &released,
            )
        });
    let handle = match spawned {
        Ok(handle) => handle,
        Err(err) => {
            let _ = fs::remove_dir_all(&scratch);
            return Err(err);
        }
    };
    let cleanup = Cleanup {
        thread: Some(handle),
        release: None,
    };
    verdict(&rx, cleanup, || {
        io::Error::other("the overlay check thread ended early")
    })
    .map(Cleanup::wait)
}

/// On a check thread (kernels before 5.2): its own mount namespace (private, so nothing
/// propagates to the host), the test mount, its outcome reported; once `released` says so
/// (a message, or its senders gone), the unmount and the scratch directory removed.
fn mount_and_undo(
    test: &TestOverlay,
    report: impl FnOnce(io::Result<()>),
    released: &crossbeam_channel::Receiver<()>,
) {
    let merged = test.scratch.join("merged");
    let mounted = fs::create_dir(&merged)
        .and_then(|()| crate::sys::unshare(libc::CLONE_NEWNS))
        .and_then(|()| {
            crate::sys::mount(
                "none",
                Path::new("/"),
                "",
                libc::MS_REC | libc::MS_PRIVATE,
                "",
            )
        })
        .and_then(|()| mount::mount(&test.mount(), &merged));
    let ok = mounted.is_ok();
    report(mounted);
    let _ = released.recv();
    if ok {
        if let Err(err) = mount::unmount_all(&merged) {
            log::warn!("failed to unmount {}: {err}", merged.display());
            return;
        }
    }
    test.remove();
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
    in_user_namespace() && overlay_check(root, "userxattr-check", &["userxattr"]).is_ok()
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
        // Since 6.5 overlayfs logs why to the file-system context, which the reason carries.
        if kernel_at_least(6, 5) {
            assert!(reason.contains("not supported as upperdir"), "{reason}");
        }
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
        fs::create_dir(guard.0.join("sub")).expect("mkdir");
        let types = crate::sys::dir_entry_types(&guard.0).expect("list");
        assert!(
            types.iter().all(|(_, kind)| *kind == libc::DT_UNKNOWN),
            "{types:?}"
        );
        fs::remove_dir(guard.0.join("sub")).expect("rmdir");
        let reason = supported(&guard.0).err().expect("unsupported");
        assert!(reason.contains("does not support d_type"), "{reason}");
    }

    /// The tests of held checks share the process's one [`RELEASE`].
    static HELD: parking_lot::Mutex<()> = parking_lot::Mutex::new(());

    /// A check held as the daemon's is, on a fresh root, past its verdict; the guard keeps
    /// other held-check tests waiting.
    fn held_check() -> (
        parking_lot::MutexGuard<'static, ()>,
        tempfile::TempDir,
        Cleanup,
    ) {
        let held = HELD.lock();
        let dir = tempfile::tempdir().expect("tempdir");
        let cleanup = start(dir.path(), true).outcome().expect("overlay works");
        (held, dir, cleanup)
    }

    #[test]
    fn a_held_check_keeps_its_scratch_directory_until_the_daemon_serves() {
        if !require_root() {
            return;
        }
        let (_held, dir, cleanup) = held_check();
        let count = || fs::read_dir(dir.path()).expect("readdir").count();
        assert_eq!(count(), 1, "the scratch directory stays while held");
        quiet();
        crate::testutil::wait_until("the scratch directory removed once serving", || {
            count() == 0
        });
        cleanup.wait();
    }

    /// Whether the running kernel is at least `major.minor`.
    fn kernel_at_least(major: u32, minor: u32) -> bool {
        let release = fs::read_to_string("/proc/sys/kernel/osrelease").expect("osrelease");
        let mut numbers = release
            .split(|c: char| !c.is_ascii_digit())
            .map(|n| n.parse::<u32>().unwrap_or(0));
        let found = (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0));
        found >= (major, minor)
    }

    #[test]
    fn without_the_context_calls_the_overlay_is_mounted_in_a_namespace_of_its_own() {
        if !require_root() {
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let test = TestOverlay::make(dir.path(), "multiple-lowerdir-check", &[]).expect("dirs");
        mount_check(test).expect("overlay mounted");
        let mounts = fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
        assert!(!mounts.contains(&*dir.path().to_string_lossy()), "{mounts}");
        assert_eq!(fs::read_dir(dir.path()).expect("readdir").count(), 0);

        let test = TestOverlay::make(dir.path(), "multiple-lowerdir-check", &[]).expect("dirs");
        fs::remove_dir(test.scratch.join("lower1")).expect("rmdir");
        let err = mount_check(test).expect_err("a missing lower directory is refused");
        assert_eq!(err.raw_os_error(), Some(libc::ENOENT), "{err}");
        assert_eq!(fs::read_dir(dir.path()).expect("readdir").count(), 0);
    }

    #[test]
    fn a_held_check_is_let_go_by_its_cleanup_when_the_daemon_never_serves() {
        if !require_root() {
            return;
        }
        let (_held, dir, cleanup) = held_check();
        let (done_tx, done) = crossbeam_channel::bounded(1);
        let waiter = std::thread::spawn(move || {
            cleanup.wait();
            let _ = done_tx.send(());
        });
        done.recv_timeout(std::time::Duration::from_secs(10))
            .expect("the cleanup lets the check finish");
        waiter.join().expect("waiter");
        assert_eq!(fs::read_dir(dir.path()).expect("readdir").count(), 0);
        // Nothing left for quiet() to let go of but a spent sender.
        quiet();
    }

    #[test]
    fn where_nothing_forbids_it_the_overlay_is_built_not_mounted() {
        if !require_root() {
            return;
        }
        let status = fs::read_to_string("/proc/self/status").expect("status");
        let filtered = status
            .lines()
            .any(|l| l.starts_with("Seccomp:") && !l.ends_with('0'));
        let dir = tempfile::tempdir().expect("tempdir");
        let test = TestOverlay::make(dir.path(), "multiple-lowerdir-check", &[]).expect("dirs");
        let built = test.build();
        if kernel_at_least(5, 2) && !filtered && !mounts_mediated() {
            assert!(
                matches!(built, Built::Superblock(_)),
                "built without a mount"
            );
        } else {
            assert!(matches!(built, Built::MountInstead), "a mount decides");
        }
        drop(built);
        test.remove();
        assert_eq!(fs::read_dir(dir.path()).expect("readdir").count(), 0);
    }

    #[test]
    fn a_refused_overlay_keeps_the_errno_and_the_kernels_reason() {
        if !require_root() || mounts_mediated() || !kernel_at_least(6, 5) {
            // Before 6.5 overlayfs took options through the kernel's legacy wrapper, which
            // logs nothing to the context.
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let test = TestOverlay::make(dir.path(), "multiple-lowerdir-check", &["nosuchoption"])
            .expect("dirs");
        let Built::Refused(err) = test.build() else {
            panic!("an unknown option is refused");
        };
        test.remove();
        assert_eq!(err.raw_os_error(), Some(libc::EINVAL), "{err}");
        let message = err.message.as_deref().unwrap_or_default();
        assert!(message.contains("nosuchoption"), "{err}");
    }

    #[test]
    fn only_a_missing_or_filtered_call_falls_back_to_a_mount() {
        assert!(mount_instead(Some(libc::ENOSYS)));
        assert!(mount_instead(Some(libc::EPERM)));
        assert!(!mount_instead(Some(libc::EINVAL)));
        assert!(!mount_instead(Some(libc::ENOENT)));
        assert!(!mount_instead(None));
    }

    #[test]
    fn the_host_needs_no_userxattr() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(needs_userxattr(dir.path()), in_user_namespace());
    }
}
