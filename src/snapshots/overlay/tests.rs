use super::*;
use crate::errdefs::Class;

fn open_with(options: Options) -> (tempfile::TempDir, Overlay) {
    let dir = tempfile::tempdir().expect("tempdir");
    let o = Overlay::open(dir.path(), options).expect("open");
    (dir, o)
}

fn open() -> (tempfile::TempDir, Overlay) {
    open_with(Options {
        mount_options: vec!["index=off".into()],
        ..Options::default()
    })
}

fn none() -> BTreeMap<String, String> {
    BTreeMap::new()
}

fn snap(dir: &tempfile::TempDir, rel: &str) -> String {
    dir.path()
        .join("snapshots")
        .join(rel)
        .to_string_lossy()
        .into_owned()
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .expect("readdir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn mount_shapes_follow_containerd() {
    let (dir, o) = open();
    let m = o.prepare("base", "", &none()).expect("prepare");
    assert_eq!(
        m,
        [Mount {
            r#type: "bind".into(),
            source: snap(&dir, "1/fs"),
            target: String::new(),
            options: vec!["rw".into(), "rbind".into()],
        }]
    );
    o.commit("base-c", "base", &none()).expect("commit");

    let m = o.prepare("child", "base-c", &none()).expect("prepare");
    assert_eq!(m[0].r#type, "overlay");
    assert_eq!(m[0].source, "overlay");
    assert_eq!(
        m[0].options,
        [
            format!("workdir={}", snap(&dir, "2/work")),
            format!("upperdir={}", snap(&dir, "2/fs")),
            format!("lowerdir={}", snap(&dir, "1/fs")),
            "index=off".to_string(),
        ]
    );
    o.commit("child-c", "child", &none()).expect("commit");

    // A view of one parent is a read-only bind of the parent's layer.
    let v1 = o.view("v1", "base-c", &none()).expect("view");
    assert_eq!(v1[0].r#type, "bind");
    assert_eq!(v1[0].source, snap(&dir, "1/fs"));
    assert_eq!(v1[0].options, ["ro", "rbind"]);

    // A view of several parents is a read-only overlay of lower directories only.
    let v2 = o.view("v2", "child-c", &none()).expect("view");
    assert_eq!(
        v2[0].options,
        [
            format!("lowerdir={}:{}", snap(&dir, "2/fs"), snap(&dir, "1/fs")),
            "index=off".to_string(),
        ]
    );
    assert_eq!(v2[0].upperdir(), None);

    // A parentless view binds its own empty layer read-only.
    let v0 = o.view("v0", "", &none()).expect("view");
    assert_eq!(v0[0].options, ["ro", "rbind"]);

    // Mounts answers the same shapes again.
    assert_eq!(o.mounts("v2").expect("mounts"), v2);
    let grandchild = o.prepare("gc", "child-c", &none()).expect("prepare");
    assert_eq!(
        grandchild[0].lowerdirs(),
        [snap(&dir, "2/fs"), snap(&dir, "1/fs")],
        "nearest parent first"
    );
}

#[test]
fn directories_are_numbered_and_work_only_for_active() {
    let (dir, o) = open();
    o.prepare("a", "", &none()).expect("prepare");
    o.commit("a-c", "a", &none()).expect("commit");
    o.view("v", "a-c", &none()).expect("view");
    assert_eq!(names(&dir.path().join("snapshots")), ["1", "2"]);
    assert_eq!(names(&dir.path().join("snapshots/1")), ["fs", "work"]);
    assert_eq!(names(&dir.path().join("snapshots/2")), ["fs"]);
    let mode = fs::metadata(dir.path().join("snapshots/1/work"))
        .expect("stat")
        .mode();
    assert_eq!(mode & 0o7777, 0o711);
}

#[test]
fn keys_never_reach_the_file_system() {
    let outer = tempfile::tempdir().expect("tempdir");
    let root = outer.path().join("root");
    let o = Overlay::open(&root, Options::default()).expect("open");
    for key in ["../../escape", "/abs/key", "a/../../../b", ".."] {
        let m = o.prepare(key, "", &none()).expect(key);
        assert!(
            m[0].source
                .starts_with(&root.join("snapshots").to_string_lossy().into_owned()),
            "{key}: {}",
            m[0].source
        );
        assert_eq!(o.stat(key).expect("stat").name, key);
    }
    assert_eq!(names(outer.path()), ["root"]);
    assert_eq!(names(&root.join("snapshots")), ["1", "2", "3", "4"]);
}

#[test]
fn errors_match_containerds_storage() {
    let (_dir, o) = open();
    o.prepare("a", "", &none()).expect("prepare");
    assert_eq!(
        o.prepare("a", "", &none()).expect_err("dup").message(),
        "snapshot a: already exists"
    );
    assert_eq!(
        o.prepare("b", "nope", &none()).expect_err("parent").class(),
        Class::NotFound
    );
    assert_eq!(
        o.prepare("b", "a", &none())
            .expect_err("active parent")
            .class(),
        Class::InvalidArgument
    );
    o.commit("a-c", "a", &none()).expect("commit");
    // Committed snapshots are immutable: they cannot be committed again.
    let err = o.commit("again", "a-c", &none()).expect_err("committed");
    assert_eq!(err.class(), Class::FailedPrecondition);
    o.view("v", "a-c", &none()).expect("view");
    assert_eq!(
        o.commit("x", "v", &none()).expect_err("view").class(),
        Class::FailedPrecondition
    );
    let err = o.remove("a-c").expect_err("has a child");
    assert_eq!(err.class(), Class::FailedPrecondition);
    assert_eq!(
        o.remove("zz").expect_err("missing").class(),
        Class::NotFound
    );
}

#[test]
fn removal_leaves_directories_until_cleanup() {
    let (dir, o) = open();
    o.prepare("a", "", &none()).expect("prepare");
    fs::write(dir.path().join("snapshots/1/fs/file"), "x").expect("write");
    o.commit("a-c", "a", &none()).expect("commit");
    o.prepare("b", "a-c", &none()).expect("prepare");
    o.remove("b").expect("remove");
    assert_eq!(names(&dir.path().join("snapshots")), ["1", "2"]);
    // A crash halfway through a creation leaves a `new-` directory; cleanup takes it too.
    fs::create_dir(dir.path().join("snapshots/new-9")).expect("mkdir");
    o.cleanup().expect("cleanup");
    assert_eq!(names(&dir.path().join("snapshots")), ["1"]);
    assert_eq!(o.stat("a-c").expect("stat").kind, Kind::Committed);
}

#[test]
fn sync_remove_removes_at_once() {
    let (dir, o) = open_with(Options {
        sync_remove: true,
        ..Options::default()
    });
    o.prepare("a", "", &none()).expect("prepare");
    o.prepare("b", "", &none()).expect("prepare");
    o.remove("a").expect("remove");
    assert_eq!(names(&dir.path().join("snapshots")), ["2"]);
}

#[test]
fn usage_is_live_while_active_and_kept_at_commit() {
    let (dir, o) = open();
    o.prepare("a", "", &none()).expect("prepare");
    let empty = o.usage("a").expect("usage");
    assert_eq!(empty.inodes, 1, "the layer's root");
    fs::write(dir.path().join("snapshots/1/fs/f"), vec![7u8; 10_000]).expect("write");
    let used = o.usage("a").expect("usage");
    assert_eq!(used.inodes, 2);
    assert!(used.size >= 10_000, "{used:?}");
    o.commit("a-c", "a", &none()).expect("commit");
    assert_eq!(o.usage("a-c").expect("usage"), used);
    o.view("v", "a-c", &none()).expect("view");
    assert_eq!(o.usage("v").expect("usage"), Usage::default());
}

#[test]
fn labels_update_and_the_upperdir_label() {
    let (dir, o) = open_with(Options {
        upperdir_label: true,
        ..Options::default()
    });
    let mut labels = none();
    labels.insert("k".into(), "v".into());
    o.prepare("a", "", &labels).expect("prepare");
    let info = o.stat("a").expect("stat");
    assert_eq!(info.labels["k"], "v");
    assert_eq!(info.labels[UPPERDIR_LABEL], snap(&dir, "1/fs"));
    let mut change = info.clone();
    change.labels = BTreeMap::from([("n".to_string(), "1".to_string())]);
    let updated = o
        .update(&change, &["labels.n".to_string()])
        .expect("update");
    assert_eq!(updated.labels["n"], "1");
    assert_eq!(updated.labels["k"], "v");
    assert!(updated.labels.contains_key(UPPERDIR_LABEL));
    let err = o
        .update(&change, &["parent".to_string()])
        .expect_err("path");
    assert_eq!(err.class(), Class::InvalidArgument);
    let listed = o.list().expect("list");
    assert_eq!(listed.len(), 1);
    assert!(listed[0].labels.contains_key(UPPERDIR_LABEL));
}

#[test]
fn kernel_options_are_added_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = OverlayConfig {
        mount_options: vec!["index=on".into()],
        ..OverlayConfig::default()
    };
    let options = Options::for_root(&config, dir.path());
    assert_eq!(
        options
            .mount_options
            .iter()
            .filter(|o| o.starts_with("index"))
            .count(),
        1,
        "a configured index option wins"
    );
    let options = Options::for_root(&OverlayConfig::default(), dir.path());
    assert_eq!(
        options.mount_options.contains(&"index=off".to_string()),
        check::supports_index()
    );
}

/// A mount made by a test, undone on drop.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = crate::mount::unmount_all(&self.0);
    }
}

#[test]
fn a_child_sees_its_parents_through_a_real_overlay() {
    if crate::sys::geteuid() != 0 {
        assert!(
            std::env::var_os("CI").is_none(),
            "overlay mounts need root under CI"
        );
        return;
    }
    let (dir, o) = open();
    o.prepare("a", "", &none()).expect("prepare");
    fs::write(dir.path().join("snapshots/1/fs/from-a"), "a").expect("write");
    o.commit("a-c", "a", &none()).expect("commit");
    let m = o.prepare("b", "a-c", &none()).expect("prepare");
    let target = dir.path().join("mnt");
    fs::create_dir(&target).expect("mkdir");
    crate::mount::mount(&m[0], &target).expect("mount overlay");
    let guard = Mounted(target);
    assert_eq!(fs::read(guard.0.join("from-a")).expect("read"), b"a");
    fs::write(guard.0.join("from-b"), "b").expect("write");
    fs::remove_file(guard.0.join("from-a")).expect("delete through overlay");
    drop(guard);
    // The write went to b's layer; a's stayed as committed.
    assert_eq!(
        fs::read(dir.path().join("snapshots/2/fs/from-b")).expect("read"),
        b"b"
    );
    assert!(dir.path().join("snapshots/1/fs/from-a").exists());
}
