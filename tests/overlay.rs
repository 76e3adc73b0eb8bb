//! The overlayfs snapshotter end to end: Debian's `ctr` and the crate's gRPC client against
//! the real binary, with real overlay mounts made by the test (root only; undone on drop).

mod common;

use std::fs;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{run_ctrd, wait_for, Daemon, Options, TestDir, START_DEADLINE};
use ctrd::api::content::{ContentClient, WriteAction, WriteContentRequest};
use ctrd::api::diff::{ApplyRequest, DiffClient};
use ctrd::api::mount::Mount;
use ctrd::api::snapshots::{
    CommitSnapshotRequest, PrepareSnapshotRequest, SnapshotsClient, ViewSnapshotRequest,
};
use ctrd::api::types::Descriptor;
use ctrd::content::Digest;
use futures_util::{SinkExt, StreamExt};
use grpcio::{CallOption, RpcStatusCode, WriteFlags};

const SN: &str = "overlayfs";
const PLUGIN_ROOT: &str = "root/io.containerd.snapshotter.v1.overlayfs";
const GC_ROOT: &str = "containerd.io/gc.root";

/// These tests mount file systems: they need root, and CI runs them as root.
fn is_root() -> bool {
    let root = ctrd::sys::geteuid() == 0;
    assert!(
        root || std::env::var_os("CI").is_none(),
        "the overlay tests need root under CI"
    );
    root
}

/// A mount made by the test, unmounted on drop (even when an assertion failed).
struct Mounted(PathBuf);

impl Mounted {
    /// Runs `mount -t <type> <source> <target> -o <options>`.
    fn new(kind: &str, source: &str, target: &Path, options: &str) -> Mounted {
        fs::create_dir_all(target).expect("mount point");
        let mut cmd = Command::new("mount");
        cmd.args(["-t", kind, source]).arg(target);
        if !options.is_empty() {
            cmd.args(["-o", options]);
        }
        let out = cmd.output().expect("run mount");
        assert!(
            out.status.success(),
            "mount -t {kind} {source} {} -o {options}: {}",
            target.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Mounted(target.to_path_buf())
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn snap(daemon: &Daemon, args: &[&str]) -> String {
    let mut all = vec!["snapshots", "--snapshotter", SN];
    all.extend_from_slice(args);
    daemon.ctr_ok(&all)
}

/// `ctr snapshots mounts <target> <key>` split into (type, source, options).
fn mount_line(daemon: &Daemon, key: &str) -> (String, String, Vec<String>) {
    let line = snap(daemon, &["mounts", "/mnt/x", key]);
    let words: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(words.len(), 7, "{line}");
    assert_eq!(
        (words[0], words[1], words[4], words[5]),
        ("mount", "-t", "/mnt/x", "-o"),
        "{line}"
    );
    (
        words[2].to_string(),
        words[3].to_string(),
        words[6].split(',').map(str::to_string).collect(),
    )
}

fn layer_dir(daemon: &Daemon, id: u64) -> String {
    daemon
        .dir
        .join(PLUGIN_ROOT)
        .join("snapshots")
        .join(id.to_string())
        .join("fs")
        .to_string_lossy()
        .into_owned()
}

fn snapshot_dirs(daemon: &Daemon) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(daemon.dir.join(PLUGIN_ROOT).join("snapshots"))
        .expect("snapshots dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The entries of a (gzipped) layer: name and type.
fn entries(blob: &[u8]) -> Vec<(String, tar::EntryType)> {
    let mut tar_bytes = Vec::new();
    flate2::read::GzDecoder::new(blob)
        .read_to_end(&mut tar_bytes)
        .expect("gzip");
    let mut archive = tar::Archive::new(&tar_bytes[..]);
    let mut out: Vec<(String, tar::EntryType)> = archive
        .entries()
        .expect("tar")
        .map(|e| {
            let e = e.expect("entry");
            (
                e.path().expect("path").to_string_lossy().into_owned(),
                e.header().entry_type(),
            )
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn names(entries: &[(String, tar::EntryType)]) -> Vec<&str> {
    entries
        .iter()
        .map(|(n, _)| n.trim_end_matches('/'))
        .collect()
}

#[test]
fn ctr_snapshots_overlayfs_lifecycle() {
    if !is_root() {
        return;
    }
    let daemon = Daemon::start("overlay");
    wait_for("the start-up collection", START_DEADLINE, || {
        daemon.logs().contains("garbage collected").then_some(())
    });
    let plugins = daemon.ctr_ok(&["plugins", "ls", "id==overlayfs"]);
    let row: Vec<&str> = plugins
        .lines()
        .nth(1)
        .expect("row")
        .split_whitespace()
        .collect();
    assert_eq!(
        (row[0], row[1], *row.last().expect("status")),
        ("io.containerd.snapshotter.v1", "overlayfs", "ok"),
        "{plugins}"
    );

    // The start-up check built its test overlay without mounting it (on kernels before 5.2,
    // mounted in a namespace of its own): nothing on the host.
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let base = daemon.dir.path.to_string_lossy().into_owned();
    assert!(!mountinfo.contains(&base), "{mountinfo}");
    wait_for(
        "the check's scratch directory to go",
        START_DEADLINE,
        || {
            let left = fs::read_dir(daemon.dir.join(PLUGIN_ROOT))
                .expect("plugin root")
                .flatten()
                .any(|e| e.file_name().to_string_lossy().contains("check"));
            (!left).then_some(())
        },
    );

    // A parentless snapshot is a bind mount of its own layer.
    snap(&daemon, &["prepare", "base"]);
    let (kind, source, options) = mount_line(&daemon, "base");
    assert_eq!(
        (kind.as_str(), options.as_slice()),
        ("bind", &["rw".to_string(), "rbind".to_string()][..])
    );
    assert_eq!(source, layer_dir(&daemon, 1));
    fs::write(Path::new(&source).join("hello"), "layer one").expect("write");
    fs::write(Path::new(&source).join("doomed"), "x").expect("write");
    snap(&daemon, &["commit", "base-c", "base"]);

    // A child is an overlay over its parent; mounted, it shows the parent's files.
    snap(&daemon, &["prepare", "child", "base-c"]);
    let (kind, source, options) = mount_line(&daemon, "child");
    assert_eq!((kind.as_str(), source.as_str()), ("overlay", "overlay"));
    let work = daemon.dir.join(PLUGIN_ROOT).join("snapshots/2/work");
    assert!(
        options.contains(&format!("workdir={}", work.display())),
        "{options:?}"
    );
    assert!(
        options.contains(&format!("upperdir={}", layer_dir(&daemon, 2))),
        "{options:?}"
    );
    assert!(
        options.contains(&format!("lowerdir={}", layer_dir(&daemon, 1))),
        "{options:?}"
    );
    {
        let target = daemon.dir.join("mnt-child");
        let mounted = Mounted::new("overlay", "overlay", &target, &options.join(","));
        assert_eq!(
            fs::read_to_string(mounted.0.join("hello")).expect("read"),
            "layer one"
        );
        fs::write(mounted.0.join("added"), "layer two").expect("write through overlay");
        fs::remove_file(mounted.0.join("doomed")).expect("delete through overlay");
    }
    let upper = PathBuf::from(layer_dir(&daemon, 2));
    assert_eq!(
        fs::read_to_string(upper.join("added")).expect("upper"),
        "layer two"
    );
    assert!(
        fs::symlink_metadata(upper.join("doomed"))
            .expect("whiteout")
            .file_type()
            .is_char_device(),
        "overlay recorded the deletion as a whiteout"
    );
    assert!(
        Path::new(&layer_dir(&daemon, 1)).join("doomed").exists(),
        "the parent is untouched"
    );
    snap(&daemon, &["commit", "child-c", "child"]);

    // Views: one parent is a read-only bind, several a read-only overlay of lowers. Made
    // through the API with a gc.root label: `ctr snapshots view` labels nothing (nor does
    // containerd's), so the collection the diff's temporary views set off below could take
    // them before the test removes them (it did, when a scheduled check fell in between).
    view(&daemon, "v1", "base-c");
    let (kind, source, options) = mount_line(&daemon, "v1");
    assert_eq!((kind.as_str(), source), ("bind", layer_dir(&daemon, 1)));
    assert_eq!(options, ["ro", "rbind"]);
    view(&daemon, "v2", "child-c");
    let (kind, _, options) = mount_line(&daemon, "v2");
    assert_eq!(kind, "overlay");
    assert!(
        options.contains(&format!(
            "lowerdir={}:{}",
            layer_dir(&daemon, 2),
            layer_dir(&daemon, 1)
        )),
        "{options:?}"
    );
    assert!(!options
        .iter()
        .any(|o| o.starts_with("upperdir=") || o.starts_with("workdir=")));

    let ls = snap(&daemon, &["ls"]);
    let rows: Vec<Vec<&str>> = ls
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows,
        vec![
            vec!["base-c", "Committed"],
            vec!["child-c", "base-c", "Committed"],
            vec!["v1", "base-c", "View"],
            vec!["v2", "child-c", "View"],
        ],
        "{ls}"
    );
    let info = snap(&daemon, &["info", "child-c"]);
    assert!(
        info.contains("\"Kind\": \"Committed\"") && info.contains("\"Parent\": \"base-c\""),
        "{info}"
    );
    let usage = snap(&daemon, &["usage", "child-c"]);
    let row: Vec<&str> = usage
        .lines()
        .nth(1)
        .expect("usage row")
        .split_whitespace()
        .collect();
    assert_eq!(row[0], "child-c", "{usage}");
    assert!(
        row[row.len() - 1].parse::<u64>().expect("inodes") >= 3,
        "{usage}"
    );
    let labelled = snap(&daemon, &["label", "child-c", "tier=edge"]);
    assert!(labelled.contains("tier=edge"), "{labelled}");

    // `ctr snapshots diff`: against the parent (a bind and a read-only overlay), and
    // between two committed snapshots (views the differ mounts read-only).
    for args in [vec!["diff", "child-c"], vec!["diff", "base-c", "child-c"]] {
        let out = daemon.ctr(&[&["snapshots", "--snapshotter", SN][..], &args[..]].concat());
        assert!(
            out.status.success(),
            "{args:?}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            daemon.logs()
        );
        let layer = entries(&out.stdout);
        assert_eq!(names(&layer), [".wh.doomed", "added"], "{args:?}");
    }
    let tmpmounts = daemon.dir.join("root/tmpmounts");
    assert!(
        fs::read_dir(&tmpmounts).map_or(true, |mut d| d.next().is_none()),
        "temporary mounts are gone"
    );

    // The diffs above removed their views, and a scheduled collection renames a removed
    // snapshot's directory (`rm-<id>`) before it deletes it: collect now, so none is
    // renamed while the names below are read.
    daemon.ctr_ok(&["leases", "create", "--id", "settle"]);
    daemon.ctr_ok(&["leases", "rm", "--sync", "settle"]);

    // A key that looks like a path is only a name: nothing is made outside the root.
    let before = fs::read_dir(&daemon.dir.path).expect("readdir").count();
    snap(&daemon, &["prepare", "../../escape", "base-c"]);
    snap(&daemon, &["prepare", "/tmp/abs-escape"]);
    let (_, _, options) = mount_line(&daemon, "../../escape");
    let upper = options
        .iter()
        .find_map(|o| o.strip_prefix("upperdir="))
        .expect("upperdir");
    let snapshots = daemon.dir.join(PLUGIN_ROOT).join("snapshots");
    let id_dir = Path::new(upper).parent().expect("id dir");
    assert_eq!(id_dir.parent(), Some(snapshots.as_path()), "{upper}");
    assert!(id_dir
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.parse::<u64>().is_ok()));
    assert!(!daemon.dir.join("escape").exists() && !daemon.dir.join("root/escape").exists());
    assert!(!Path::new("/tmp/abs-escape").exists());
    assert_eq!(
        fs::read_dir(&daemon.dir.path).expect("readdir").count(),
        before
    );
    assert!(snapshot_dirs(&daemon)
        .iter()
        .all(|d| d.parse::<u64>().is_ok()));
    daemon.ctr_ok(&["version"]);

    // Removal drops the records; the directories go at the collection that follows.
    assert!(snapshot_dirs(&daemon).len() >= 6);
    snap(
        &daemon,
        &["rm", "v1", "v2", "../../escape", "/tmp/abs-escape"],
    );
    snap(&daemon, &["rm", "child-c"]);
    snap(&daemon, &["rm", "base-c"]);
    assert_eq!(snap(&daemon, &["ls"]).lines().count(), 1);
    // Removing a lease with --sync collects before it answers (a scheduled collection may
    // be many seconds away on a loaded host: the scheduler spaces them by their cost).
    daemon.ctr_ok(&["leases", "create", "--id", "collect-now"]);
    daemon.ctr_ok(&["leases", "rm", "--sync", "collect-now"]);
    assert!(
        snapshot_dirs(&daemon).is_empty(),
        "{:?}",
        snapshot_dirs(&daemon)
    );
}

fn opt() -> CallOption {
    let mut headers = grpcio::MetadataBuilder::new();
    headers
        .add_str("containerd-namespace", "default")
        .expect("header");
    CallOption::default()
        .headers(headers.build())
        .timeout(START_DEADLINE)
}

fn code_of<T>(result: Result<T, grpcio::Error>) -> (RpcStatusCode, String) {
    match result {
        Err(grpcio::Error::RpcFailure(s)) => (s.code(), s.message().to_string()),
        Err(other) => panic!("not an RPC status: {other}"),
        Ok(_) => panic!("expected an error"),
    }
}

enum Entry<'a> {
    File(&'a str, &'a str),
    Dir(&'a str),
}

/// An uncompressed layer; names reach the server unchanged (even `../x`).
fn layer(entries: &[Entry]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for entry in entries {
        let mut header = tar::Header::new_ustar();
        let (path, body, kind, mode) = match entry {
            Entry::File(path, body) => (path, body.as_bytes(), tar::EntryType::Regular, 0o644),
            Entry::Dir(path) => (path, &b""[..], tar::EntryType::Directory, 0o755),
        };
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_size(body.len() as u64);
        header.set_mtime(1_700_000_000);
        header.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
        header.set_cksum();
        builder.append(&header, body).expect("append");
    }
    builder.into_inner().expect("tar")
}

fn put(daemon: &Daemon, data: &[u8]) -> Descriptor {
    let client = ContentClient::new(daemon.channel());
    let digest = Digest::of(data).to_string();
    let (mut tx, mut rx) = client.write_opt(opt()).expect("write");
    let msgs = vec![
        WriteContentRequest {
            action: WriteAction::WRITE.into(),
            ref_: format!("layer-{digest}"),
            data: data.to_vec(),
            ..Default::default()
        },
        WriteContentRequest {
            action: WriteAction::COMMIT.into(),
            offset: data.len() as i64,
            total: data.len() as i64,
            expected: digest.clone(),
            labels: [(GC_ROOT.to_string(), "x".to_string())].into(),
            ..Default::default()
        },
    ];
    futures_executor::block_on(async {
        for msg in msgs {
            tx.send((msg, WriteFlags::default())).await.expect("send");
            rx.next().await.expect("reply").expect("status");
        }
    });
    Descriptor {
        media_type: "application/vnd.oci.image.layer.v1.tar".into(),
        digest,
        size: data.len() as i64,
        ..Default::default()
    }
}

fn rooted() -> std::collections::HashMap<String, String> {
    [(GC_ROOT.to_string(), "x".to_string())].into()
}

fn prepare(daemon: &Daemon, key: &str, parent: &str) -> Vec<Mount> {
    SnapshotsClient::new(daemon.channel())
        .prepare_opt(
            &PrepareSnapshotRequest {
                snapshotter: SN.into(),
                key: key.into(),
                parent: parent.into(),
                labels: rooted(),
                ..Default::default()
            },
            opt(),
        )
        .expect("prepare")
        .mounts
}

fn view(daemon: &Daemon, key: &str, parent: &str) -> Vec<Mount> {
    SnapshotsClient::new(daemon.channel())
        .view_opt(
            &ViewSnapshotRequest {
                snapshotter: SN.into(),
                key: key.into(),
                parent: parent.into(),
                labels: rooted(),
                ..Default::default()
            },
            opt(),
        )
        .expect("view")
        .mounts
}

fn commit(daemon: &Daemon, name: &str, key: &str) {
    SnapshotsClient::new(daemon.channel())
        .commit_opt(
            &CommitSnapshotRequest {
                snapshotter: SN.into(),
                name: name.into(),
                key: key.into(),
                labels: rooted(),
                ..Default::default()
            },
            opt(),
        )
        .expect("commit");
}

fn apply(
    daemon: &Daemon,
    desc: &Descriptor,
    mounts: &[Mount],
) -> Result<Descriptor, grpcio::Error> {
    DiffClient::new(daemon.channel())
        .apply_opt(
            &ApplyRequest {
                diff: Some(desc.clone()).into(),
                mounts: mounts.to_vec(),
                ..Default::default()
            },
            opt(),
        )
        .map(|r| r.applied.unwrap_or_default())
}

/// Every path under `root`, with "/" for directories and the contents of files.
fn tree(root: &Path) -> Vec<(String, String)> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, String)>) {
        for entry in fs::read_dir(dir).expect("readdir") {
            let path = entry.expect("entry").path();
            let rel = path
                .strip_prefix(root)
                .expect("under root")
                .to_string_lossy()
                .into_owned();
            if fs::symlink_metadata(&path).expect("stat").is_dir() {
                out.push((rel, "/".into()));
                walk(root, &path, out);
            } else {
                out.push((rel, fs::read_to_string(&path).expect("read")));
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

fn option(mount: &Mount, key: &str) -> String {
    mount
        .options
        .iter()
        .find_map(|o| o.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key} in {:?}", mount.options))
        .to_string()
}

#[test]
fn layers_apply_onto_overlay_with_overlay_whiteouts() {
    if !is_root() {
        return;
    }
    let mut daemon = Daemon::start("overlay-apply");
    let base = prepare(&daemon, "extract-1 base", "");
    assert_eq!(base[0].type_, "bind");
    let one = layer(&[
        Entry::Dir("a/"),
        Entry::File("a/keep", "k"),
        Entry::File("a/gone", "g"),
        Entry::Dir("o/"),
        Entry::File("o/old", "o"),
        Entry::File("top", "t"),
    ]);
    let applied = apply(&daemon, &put(&daemon, &one), &base).expect("apply onto a bind");
    assert_eq!(applied.digest, Digest::of(&one).to_string());
    commit(&daemon, "layer-1", "extract-1 base");

    let child = prepare(&daemon, "extract-2 child", "layer-1");
    assert_eq!(child[0].type_, "overlay");
    let two = layer(&[
        Entry::File("a/.wh.gone", ""),
        Entry::Dir("o/"),
        Entry::File("o/.wh..wh..opq", ""),
        Entry::File("o/new", "n"),
        Entry::File(".wh.top", ""),
        Entry::File("b/deep/file", "d"),
    ]);
    let applied = apply(&daemon, &put(&daemon, &two), &child).expect("apply onto overlay");
    assert_eq!(applied.digest, Digest::of(&two).to_string());
    assert_eq!(applied.media_type, "application/vnd.oci.image.layer.v1.tar");

    // Written straight into the upper directory, with overlay's own whiteouts.
    let upper = PathBuf::from(option(&child[0], "upperdir"));
    let gone = fs::symlink_metadata(upper.join("a/gone")).expect("whiteout");
    assert!(gone.file_type().is_char_device() && gone.rdev() == 0);
    assert!(fs::symlink_metadata(upper.join("top"))
        .expect("whiteout")
        .file_type()
        .is_char_device());
    assert_eq!(
        ctrd::sys::lgetxattr(&upper.join("o"), "trusted.overlay.opaque").expect("xattr"),
        Some(b"y".to_vec())
    );
    assert!(!upper.join("a/keep").exists(), "nothing copied up");
    assert!(!upper.join("o/.wh..wh..opq").exists());
    commit(&daemon, "layer-2", "extract-2 child");

    // The merged view (two parents: a read-only overlay) is the tree the layers describe.
    let view = view(&daemon, "check", "layer-2");
    assert_eq!(view[0].type_, "overlay");
    {
        let target = daemon.dir.join("mnt-view");
        let mounted = Mounted::new("overlay", "overlay", &target, &view[0].options.join(","));
        let want: Vec<(String, String)> = [
            ("a", "/"),
            ("a/keep", "k"),
            ("b", "/"),
            ("b/deep", "/"),
            ("b/deep/file", "d"),
            ("o", "/"),
            ("o/new", "n"),
        ]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        assert_eq!(tree(&mounted.0), want);
    }

    // A layer escaping the root is refused, nothing is written outside, and the daemon
    // keeps serving.
    let victim = prepare(&daemon, "victim", "layer-2");
    for name in ["../escape", "a/../../.wh.escape"] {
        let evil = put(&daemon, &layer(&[Entry::File(name, "out")]));
        let (code, message) = code_of(apply(&daemon, &evil, &victim));
        assert_eq!(code, RpcStatusCode::INVALID_ARGUMENT, "{name}: {message}");
    }
    let victim_upper = PathBuf::from(option(&victim[0], "upperdir"));
    assert!(tree(&victim_upper).is_empty());
    assert!(!victim_upper
        .parent()
        .expect("id dir")
        .join("escape")
        .exists());
    daemon.ctr_ok(&["version"]);
    let ls = daemon.ctr_ok(&["snapshots", "--snapshotter", SN, "ls"]);
    assert_eq!(ls.lines().count(), 5, "{ls}");

    // A power cut keeps every snapshot and its mounts.
    let before = daemon.ctr_ok(&[
        "snapshots",
        "--snapshotter",
        SN,
        "mounts",
        "/mnt/x",
        "check",
    ]);
    daemon.kill();
    daemon.restart();
    assert_eq!(daemon.ctr_ok(&["snapshots", "--snapshotter", SN, "ls"]), ls);
    let after = daemon.ctr_ok(&[
        "snapshots",
        "--snapshotter",
        SN,
        "mounts",
        "/mnt/x",
        "check",
    ]);
    assert_eq!(after, before);
    assert!(upper.join("o/new").exists());
}

#[test]
fn overlayfs_is_skipped_where_overlay_cannot_work() {
    if !is_root() {
        return;
    }
    // A root on an overlay mount: overlay refuses an upper directory there.
    let base = TestDir::new("overlay-skip-fs");
    for d in ["l", "u", "w"] {
        fs::create_dir(base.join(d)).expect("mkdir");
    }
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        base.join("l").display(),
        base.join("u").display(),
        base.join("w").display()
    );
    let mounted = Mounted::new("overlay", "overlay", &base.join("m"), &options);
    let root = mounted.0.join("snapshotter");
    let daemon = Daemon::start_with(
        "overlay-skip",
        Options {
            config: Some(format!(
                "version = 3\n[plugins.'io.containerd.snapshotter.v1.overlayfs']\nroot_path = '{}'\n",
                root.display()
            )),
            ..Options::default()
        },
    );
    let plugins = daemon.ctr_ok(&["plugins", "ls", "id==overlayfs"]);
    let status = plugins
        .lines()
        .nth(1)
        .and_then(|l| l.split_whitespace().last());
    assert_eq!(status, Some("skip"), "{plugins}");
    let detail = daemon.ctr_ok(&["plugins", "ls", "-d", "id==overlayfs"]);
    assert!(
        detail.contains("overlay not supported: failed to mount overlay"),
        "{detail}"
    );
    // Everything else keeps working, native snapshots included.
    daemon.ctr_ok(&["snapshots", "--snapshotter", "native", "prepare", "x"]);
    let out = daemon.ctr(&["snapshots", "--snapshotter", SN, "ls"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("snapshotter not loaded: overlayfs"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        fs::read_dir(&root).map_or(true, |d| d.count() == 0),
        "the check leaves nothing behind"
    );
    drop(daemon);
}

#[test]
fn config_default_shows_the_overlayfs_keys() {
    let out = run_ctrd(&["config", "default"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let start = text
        .find("[plugins.'io.containerd.snapshotter.v1.overlayfs']")
        .unwrap_or_else(|| panic!("no overlayfs section:\n{text}"));
    let section: Vec<&str> = text[start..]
        .lines()
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .map(str::trim)
        .collect();
    let mut keys: Vec<&str> = section
        .iter()
        .map(|l| l.split(" = ").next().unwrap_or(""))
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "mount_options",
            "root_path",
            "slow_chown",
            "sync_remove",
            "upperdir_label"
        ],
        "{section:?}"
    );
    assert!(
        section.contains(&"sync_remove = false") && section.contains(&"mount_options = []"),
        "{section:?}"
    );
}
