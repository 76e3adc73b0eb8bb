//! The Diff service end to end: layers written to the content store with a gRPC client,
//! applied onto native snapshots, diffs of snapshots applied back, stream processors.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::{call_opt as opt, rpc_status as code_of, Daemon, Options};
use ctrd::api::content::{ContentClient, WriteAction, WriteContentRequest};
use ctrd::api::diff::{ApplyRequest, DiffClient, DiffRequest};
use ctrd::api::mount::Mount;
use ctrd::api::snapshots::{CommitSnapshotRequest, PrepareSnapshotRequest, SnapshotsClient};
use ctrd::api::types::Descriptor;
use ctrd::content::Digest;
use futures_util::{SinkExt, StreamExt};
use grpcio::{RpcStatusCode, WriteFlags};

const TAR: &str = "application/vnd.oci.image.layer.v1.tar";
const TAR_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const GC_ROOT: &str = "containerd.io/gc.root";

/// A tar layer from (path, contents) pairs; a `None` body makes a directory.
fn layer(entries: &[(&str, Option<&str>)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, body) in entries {
        let mut header = tar::Header::new_ustar();
        match body {
            Some(text) => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(0o644);
                header.set_size(text.len() as u64);
                // Names like ../escape must reach the server unchanged.
                header.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
                header.set_cksum();
                builder.append(&header, text.as_bytes()).unwrap();
            }
            None => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(0o755);
                header.set_size(0);
                header.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
                header.set_cksum();
                builder.append(&header, std::io::empty()).unwrap();
            }
        }
    }
    builder.into_inner().unwrap()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

/// Writes `data` to the content store (rooted, so no collection removes it).
fn put(daemon: &Daemon, data: &[u8], media_type: &str) -> Descriptor {
    let client = ContentClient::new(daemon.channel());
    let digest = Digest::of(data).to_string();
    let (mut tx, mut rx) = client.write_opt(opt("default", None)).unwrap();
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
            tx.send((msg, WriteFlags::default())).await.unwrap();
            rx.next().await.unwrap().unwrap();
        }
    });
    Descriptor {
        media_type: media_type.into(),
        digest,
        size: data.len() as i64,
        ..Default::default()
    }
}

fn prepare(daemon: &Daemon, key: &str, parent: &str) -> (Vec<Mount>, PathBuf) {
    let resp = SnapshotsClient::new(daemon.channel())
        .prepare_opt(
            &PrepareSnapshotRequest {
                snapshotter: "native".into(),
                key: key.into(),
                parent: parent.into(),
                labels: [(GC_ROOT.to_string(), "x".to_string())].into(),
                ..Default::default()
            },
            opt("default", None),
        )
        .expect("prepare");
    let dir = PathBuf::from(&resp.mounts[0].source);
    (resp.mounts, dir)
}

fn commit(daemon: &Daemon, name: &str, key: &str) {
    SnapshotsClient::new(daemon.channel())
        .commit_opt(
            &CommitSnapshotRequest {
                snapshotter: "native".into(),
                name: name.into(),
                key: key.into(),
                labels: [(GC_ROOT.to_string(), "x".to_string())].into(),
                ..Default::default()
            },
            opt("default", None),
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
            opt("default", None),
        )
        .map(|r| r.applied.unwrap_or_default())
}

/// Every path under `root` with its contents ("/" for directories), sorted.
fn tree(root: &Path) -> Vec<(String, String)> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, String)>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let meta = fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                out.push((rel, "/".into()));
                walk(root, &path, out);
            } else if meta.file_type().is_symlink() {
                out.push((
                    rel,
                    format!("-> {}", fs::read_link(&path).unwrap().display()),
                ));
            } else {
                out.push((rel, fs::read_to_string(&path).unwrap()));
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[test]
fn gzip_layer_with_whiteouts_then_diff_and_apply_round_trip() {
    let daemon = Daemon::start("diff");
    // Lower layer: a base snapshot with some files.
    let (base_mounts, _) = prepare(&daemon, "base", "");
    let lower = put(
        &daemon,
        &gzip(&layer(&[
            ("etc", None),
            ("etc/keep", Some("keep")),
            ("etc/gone", Some("gone")),
            ("opq", None),
            ("opq/old", Some("old")),
        ])),
        TAR_GZIP,
    );
    let applied = apply(&daemon, &lower, &base_mounts).expect("apply lower");
    assert_eq!(applied.media_type, TAR);
    commit(&daemon, "base-c", "base");

    // Upper layer: a whiteout, an opaque directory and new files.
    let (upper_mounts, upper_dir) = prepare(&daemon, "top", "base-c");
    let upper = put(
        &daemon,
        &gzip(&layer(&[
            ("etc/.wh.gone", Some("")),
            ("opq/.wh..wh..opq", Some("")),
            ("opq/new", Some("new")),
            ("added", Some("added")),
        ])),
        TAR_GZIP,
    );
    apply(&daemon, &upper, &upper_mounts).expect("apply upper");
    let want = pairs(&[
        ("added", "added"),
        ("etc", "/"),
        ("etc/keep", "keep"),
        ("opq", "/"),
        ("opq/new", "new"),
    ]);
    assert_eq!(tree(&upper_dir), want);

    // Diff base-c → top, then apply the result onto a fresh child of base-c.
    let (base_view, _) = prepare(&daemon, "lower-view", "base-c");
    let diff = DiffClient::new(daemon.channel())
        .diff_opt(
            &DiffRequest {
                left: base_view,
                right: upper_mounts.clone(),
                ref_: "my-diff".into(),
                ..Default::default()
            },
            opt("default", None),
        )
        .expect("diff")
        .diff
        .unwrap_or_default();
    assert_eq!(diff.media_type, TAR_GZIP);
    assert!(diff.size > 0);
    let info = daemon.ctr_ok(&["content", "ls"]);
    let row = info
        .lines()
        .find(|l| l.starts_with(&diff.digest))
        .unwrap_or_else(|| panic!("diff blob not listed: {info}"));
    assert!(row.contains("containerd.io/uncompressed=sha256:"), "{row}");
    let (again_mounts, again_dir) = prepare(&daemon, "again", "base-c");
    apply(&daemon, &diff, &again_mounts).expect("apply the diff");
    assert_eq!(tree(&again_dir), want);

    // Unsupported media types and mounts are refused.
    let (code, message) = code_of(DiffClient::new(daemon.channel()).diff_opt(
        &DiffRequest {
            left: again_mounts.clone(),
            right: upper_mounts,
            media_type: "application/vnd.oci.image.layer.v1.tar+zstd".into(),
            ..Default::default()
        },
        opt("default", None),
    ));
    assert_eq!(code, RpcStatusCode::UNIMPLEMENTED, "{message}");
    let tmpfs = vec![Mount {
        type_: "tmpfs".into(),
        source: "tmpfs".into(),
        ..Default::default()
    }];
    let (code, _) = code_of(apply(&daemon, &upper, &tmpfs));
    assert_eq!(code, RpcStatusCode::UNIMPLEMENTED);
    // An overlay without an upper directory is read-only: nothing to apply into.
    let overlay = vec![Mount {
        type_: "overlay".into(),
        source: "overlay".into(),
        options: vec!["lowerdir=/nonexistent".into()],
        ..Default::default()
    }];
    let (code, message) = code_of(apply(&daemon, &upper, &overlay));
    assert_eq!(code, RpcStatusCode::INVALID_ARGUMENT, "{message}");
}

#[test]
fn escaping_layers_are_refused() {
    let daemon = Daemon::start("diff-escape");
    let (mounts, dir) = prepare(&daemon, "victim", "");
    let evil = put(&daemon, &layer(&[("../escape", Some("out"))]), TAR);
    let (code, message) = code_of(apply(&daemon, &evil, &mounts));
    assert_eq!(code, RpcStatusCode::INVALID_ARGUMENT, "{message}");
    assert!(!dir.parent().unwrap().join("escape").exists());
    assert!(tree(&dir).is_empty());
    daemon.ctr_ok(&["version"]);
}

#[test]
fn stream_processors_run_for_their_media_types() {
    let scripts = common::TestDir::new("processors");
    let gunzip = scripts.write("gunzip.sh", "#!/bin/sh\nexec gzip -d -c\n");
    let broken = scripts.write(
        "broken.sh",
        "#!/bin/sh\ncat > /dev/null\necho \"key not found for $STREAM_PROCESSOR_MEDIATYPE\" >&2\nexit 3\n",
    );
    for script in [&gunzip, &broken] {
        fs::set_permissions(script, fs::Permissions::from_mode(0o755)).unwrap();
    }
    let daemon = Daemon::start_with(
        "diff-proc",
        Options {
            config: Some(format!(
                "version = 3\n\
                 [stream_processors.'io.test.gunzip']\naccepts = ['application/vnd.test.layer+gz']\n\
                 returns = '{TAR}'\npath = '{}'\n\
                 [stream_processors.'io.test.broken']\naccepts = ['application/vnd.test.layer+broken']\n\
                 returns = '{TAR}'\npath = '{}'\n",
                gunzip.display(),
                broken.display()
            )),
            ..Default::default()
        },
    );
    let (mounts, dir) = prepare(&daemon, "p", "");
    let body = gzip(&layer(&[("via-processor", Some("yes"))]));
    let desc = put(&daemon, &body, "application/vnd.test.layer+gz");
    apply(&daemon, &desc, &mounts).expect("apply through the processor");
    assert_eq!(tree(&dir), pairs(&[("via-processor", "yes")]));

    let bad = put(
        &daemon,
        &layer(&[("x", Some("1"))]),
        "application/vnd.test.layer+broken",
    );
    let (_, message) = code_of(apply(&daemon, &bad, &mounts));
    assert!(
        message.contains("key not found for application/vnd.test.layer+broken"),
        "{message}"
    );
    let unknown = put(&daemon, b"whatever", "application/x-unknown");
    let (_, message) = code_of(apply(&daemon, &unknown, &mounts));
    assert!(message.contains("no processor for media-type"), "{message}");
}
