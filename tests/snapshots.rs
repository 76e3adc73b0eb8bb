//! The native snapshotter and the Snapshots service end to end with Debian's `ctr`.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::fs;
use std::path::PathBuf;

use common::{wait_for, Daemon, START_DEADLINE};
use ctrd::api::snapshots::{ListSnapshotsRequest, SnapshotsClient};
use futures_util::StreamExt;

fn snap(daemon: &Daemon, args: &[&str]) -> String {
    let mut all = vec!["snapshots", "--snapshotter", "native"];
    all.extend_from_slice(args);
    daemon.ctr_ok(&all)
}

fn snap_err(daemon: &Daemon, args: &[&str]) -> String {
    let mut all = vec!["snapshots", "--snapshotter", "native"];
    all.extend_from_slice(args);
    let out = daemon.ctr(&all);
    assert!(!out.status.success(), "ctr {all:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn list_filtered(daemon: &Daemon, filter: &str) -> Vec<String> {
    let client = SnapshotsClient::new(daemon.channel());
    let mut stream = client
        .list_opt(
            &ListSnapshotsRequest {
                snapshotter: "native".into(),
                filters: vec![filter.into()],
                ..Default::default()
            },
            common::call_opt("default", None),
        )
        .expect("list");
    futures_executor::block_on(async {
        let mut names = Vec::new();
        while let Some(batch) = stream.next().await {
            names.extend(batch.expect("batch").info.into_iter().map(|i| i.name));
        }
        names
    })
}

fn snapshot_dirs(daemon: &Daemon) -> Vec<String> {
    let dir = daemon
        .dir
        .join("root/io.containerd.snapshotter.v1.native/snapshots");
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn ctr_snapshots_native_lifecycle() {
    let daemon = Daemon::start("snapshots");
    // Views carry no gc.root label (as with containerd), so let the start-up collection
    // pass before making one.
    wait_for("the start-up collection", START_DEADLINE, || {
        daemon.logs().contains("garbage collected").then_some(())
    });
    // prepare → write → commit → prepare a child that sees the parent's files.
    let out = snap(&daemon, &["prepare", "--mounts", "base"]);
    let mounts: Vec<serde_json_free::Mount> = serde_json_free::parse(&out);
    assert_eq!(mounts.len(), 1, "{out}");
    assert_eq!(mounts[0].kind, "bind");
    assert_eq!(mounts[0].options, ["rbind", "rw"]);
    let base = PathBuf::from(&mounts[0].source);
    fs::write(base.join("hello"), "layer one").unwrap();

    let line = snap(&daemon, &["mounts", "/mnt/x", "base"]);
    assert_eq!(
        line.trim(),
        format!("mount -t bind {} /mnt/x -o rbind,rw", base.display())
    );
    snap(&daemon, &["commit", "base-c", "base"]);
    let child = snap(&daemon, &["prepare", "--mounts", "child", "base-c"]);
    let child_dir = PathBuf::from(&serde_json_free::parse(&child)[0].source);
    assert_eq!(
        fs::read_to_string(child_dir.join("hello")).unwrap(),
        "layer one"
    );
    let view = snap(&daemon, &["view", "v", "base-c"]);
    assert!(view.contains("-o rbind,ro") || view.is_empty(), "{view}");

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
            vec!["child", "base-c", "Active"],
            vec!["v", "base-c", "View"],
        ],
        "{ls}"
    );
    let tree = snap(&daemon, &["tree"]);
    assert!(
        tree.contains("base-c") && tree.contains("\\_ child"),
        "{tree}"
    );
    let info = snap(&daemon, &["info", "child"]);
    assert!(
        info.contains("\"Kind\": \"Active\"") && info.contains("\"Parent\": \"base-c\""),
        "{info}"
    );
    assert!(
        info.contains("containerd.io/gc.root"),
        "prepare labels gc.root: {info}"
    );
    let usage = snap(&daemon, &["usage"]);
    assert!(usage.lines().any(|l| l.starts_with("child")), "{usage}");
    let labelled = snap(&daemon, &["label", "child", "tier=edge"]);
    assert!(labelled.contains("tier=edge"), "{labelled}");
    // ctr 1.6 does not pass list filters; a gRPC client does.
    assert_eq!(list_filtered(&daemon, "labels.tier==edge"), ["child"]);
    assert_eq!(list_filtered(&daemon, "kind==committed"), ["base-c"]);
    assert_eq!(list_filtered(&daemon, "parent==base-c,kind==view"), ["v"]);

    // containerd's errors.
    let err = snap_err(&daemon, &["rm", "base-c"]);
    assert!(err.contains("cannot remove snapshot with child"), "{err}");
    let err = snap_err(&daemon, &["prepare", "x", "missing"]);
    assert!(
        err.contains("parent snapshot missing does not exist"),
        "{err}"
    );
    let err = snap_err(&daemon, &["prepare", "child"]);
    assert!(err.contains("already exists"), "{err}");
    let out = daemon.ctr(&["snapshots", "--snapshotter", "nope", "ls"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("snapshotter not loaded: nope"), "{err}");

    // Removal drops the record at once and the directory at the collection it schedules.
    let before = snapshot_dirs(&daemon);
    assert_eq!(
        before.len(),
        2,
        "base and child own directories: {before:?}"
    );
    snap(&daemon, &["rm", "child", "v"]);
    snap(&daemon, &["rm", "base-c"]);
    assert_eq!(snap(&daemon, &["ls"]).lines().count(), 1);
    wait_for(
        "the backend snapshots to be collected",
        START_DEADLINE,
        || snapshot_dirs(&daemon).is_empty().then_some(()),
    );
}

#[test]
fn snapshot_events_and_namespaces() {
    let daemon = Daemon::start("snapshot-ns");
    snap(&daemon, &["prepare", "a"]);
    // Another namespace has its own keys.
    let other = daemon.ctr_ok(&["-n", "other", "snapshots", "--snapshotter", "native", "ls"]);
    assert_eq!(other.lines().count(), 1, "{other}");
    daemon.ctr_ok(&[
        "-n",
        "other",
        "snapshots",
        "--snapshotter",
        "native",
        "prepare",
        "a",
    ]);
    let out = daemon.ctr(&["namespaces", "rm", "other"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("snapshots on \"native\" snapshotter"), "{err}");
}

/// Just enough JSON reading for `ctr snapshots prepare --mounts` output.
mod serde_json_free {
    pub struct Mount {
        pub kind: String,
        pub source: String,
        pub options: Vec<String>,
    }

    fn field<'a>(obj: &'a str, name: &str) -> &'a str {
        let key = format!("\"{name}\":");
        let start = obj.find(&key).map(|i| i + key.len()).unwrap_or(obj.len());
        obj[start..].trim_start()
    }

    fn string(text: &str) -> String {
        let text = text.trim_start_matches('"');
        text[..text.find('"').unwrap_or(0)].to_string()
    }

    pub fn parse(text: &str) -> Vec<Mount> {
        text.split('{')
            .skip(1)
            .map(|obj| {
                let options = field(obj, "Options");
                let options = &options[..options.find(']').unwrap_or(0)];
                Mount {
                    kind: string(field(obj, "Type")),
                    source: string(field(obj, "Source")),
                    options: options
                        .split('"')
                        .skip(1)
                        .step_by(2)
                        .map(str::to_string)
                        .collect(),
                }
            })
            .collect()
    }
}
