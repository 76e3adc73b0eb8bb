//! State end to end: the content store, leases, garbage collection and their events, driven
//! by Debian's `ctr` and the crate's generated gRPC client against the real binary.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{
    call_opt as opt, require_tool, rpc_status as status_code, wait_for, Daemon, Options,
    START_DEADLINE,
};
use ctrd::api::content::{
    ContentClient, InfoRequest, ListContentRequest, ReadContentRequest, StatusRequest,
    UpdateRequest, WriteAction, WriteContentRequest, WriteContentResponse,
};
use ctrd::api::leases::{CreateRequest, DeleteRequest, LeasesClient};
use ctrd::api::version::VersionClient;
use ctrd::api::{Empty, FieldMask};
use ctrd::content::Digest;
use futures_util::{SinkExt, StreamExt};
use grpcio::{CallOption, RpcStatusCode, WriteFlags};

const MIB: usize = 1 << 20;

/// Deterministic incompressible-looking bytes (xorshift), so tests need no entropy source.
fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn write_req(action: WriteAction) -> WriteContentRequest {
    WriteContentRequest {
        action: action.into(),
        ..Default::default()
    }
}

/// Runs one Write stream: sends `msgs` one at a time, collecting each answer, and stops at
/// the first error.
fn write_stream(
    client: &ContentClient,
    option: CallOption,
    msgs: Vec<WriteContentRequest>,
) -> Result<Vec<WriteContentResponse>, grpcio::Error> {
    let (mut tx, mut rx) = client.write_opt(option)?;
    futures_executor::block_on(async move {
        let mut answers = Vec::new();
        let mut send_error = None;
        for msg in msgs {
            if let Err(err) = tx.send((msg, WriteFlags::default())).await {
                // The server ended the call; its status is on the receiving side.
                send_error = Some(err);
                break;
            }
            match rx.next().await {
                Some(answer) => answers.push(answer?),
                None => break,
            }
        }
        if send_error.is_none() {
            // The server may already have finished after a COMMIT, as containerd's does.
            let _ = tx.close().await;
        }
        while let Some(answer) = rx.next().await {
            answers.push(answer?);
        }
        match send_error {
            // The call ended with OK while the last send was still being flushed (the server
            // had the message already: it answered and finished); the answers tell the rest.
            Some(grpcio::Error::RpcFinished(None)) | None => Ok(answers),
            Some(err) => Err(err),
        }
    })
}

/// STAT, WRITEs of `chunk` bytes, COMMIT with `labels`: what a well-behaved client sends.
fn ingest_messages(
    ref_: &str,
    bytes: &[u8],
    chunk: usize,
    labels: &[(&str, &str)],
) -> Vec<WriteContentRequest> {
    let mut msgs = vec![WriteContentRequest {
        ref_: ref_.into(),
        total: bytes.len() as i64,
        ..write_req(WriteAction::STAT)
    }];
    for (i, part) in bytes.chunks(chunk).enumerate() {
        msgs.push(WriteContentRequest {
            offset: (i * chunk) as i64,
            data: part.to_vec(),
            ..write_req(WriteAction::WRITE)
        });
    }
    msgs.push(WriteContentRequest {
        total: bytes.len() as i64,
        offset: bytes.len() as i64,
        expected: Digest::of(bytes).to_string(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..write_req(WriteAction::COMMIT)
    });
    msgs
}

/// `ctr content ingest <ref>` fed from `file`.
fn ctr_ingest(daemon: &Daemon, extra: &[&str], ref_: &str, file: &std::path::Path) -> bool {
    let mut args = vec!["content", "ingest"];
    args.extend_from_slice(extra);
    args.push(ref_);
    Command::new(require_tool("ctr"))
        .arg("--address")
        .arg(&daemon.socket)
        .args(&args)
        .stdin(fs::File::open(file).expect("open input"))
        .output()
        .expect("run ctr")
        .status
        .success()
}

/// `ctr events` in the background; its lines arrive on the channel.
struct Events {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Events {
    fn start(daemon: &Daemon, filters: &[&str]) -> Events {
        let mut child = Command::new(require_tool("ctr"))
            .arg("--address")
            .arg(&daemon.socket)
            .arg("events")
            .args(filters)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("ctr events");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Events { child, lines }
    }

    /// Waits for a line containing every one of `parts`.
    fn expect(&self, parts: &[&str]) -> String {
        let deadline = std::time::Instant::now() + START_DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no event line with {parts:?}"));
            if parts.iter().all(|p| line.contains(p)) {
                return line;
            }
        }
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `ctr events` is subscribed, by publishing probes until one shows up.
fn events_ready(daemon: &Daemon, events: &Events) {
    wait_for("ctr events to subscribe", START_DEADLINE, || {
        daemon.ctr_ok(&["namespaces", "label", "default", "probe=1"]);
        events
            .lines
            .recv_timeout(Duration::from_millis(200))
            .ok()
            .filter(|l| l.contains("/namespaces/update"))
    });
}

#[test]
fn ctr_ingest_ls_get_label_active_rm_with_events() {
    let daemon = Daemon::start("content-ctr");
    let events = Events::start(&daemon, &[]);
    events_ready(&daemon, &events);
    // A subscriber filtering on a payload field.
    let edge_only = Events::start(&daemon, &["event.name==edge"]);
    wait_for("the filtered subscriber", START_DEADLINE, || {
        daemon.ctr_ok(&["namespaces", "label", "edge", "probe=1"]);
        edge_only
            .lines
            .recv_timeout(Duration::from_millis(200))
            .ok()
    });

    let small = data(MIB, 1);
    let big = data(100 * MIB, 2);
    let small_path = daemon.dir.join("small");
    let big_path = daemon.dir.join("big");
    fs::write(&small_path, &small).unwrap();
    fs::write(&big_path, &big).unwrap();
    let (ds, db) = (Digest::of(&small).to_string(), Digest::of(&big).to_string());

    assert!(ctr_ingest(&daemon, &[], "small-1", &small_path));
    assert!(ctr_ingest(
        &daemon,
        &["--expected-size", &big.len().to_string()],
        "big-1",
        &big_path
    ));
    let ls = daemon.ctr_ok(&["content", "ls"]);
    assert!(ls.contains(&ds) && ls.contains(&db), "{ls}");
    assert!(ls.contains("1.049MB") && ls.contains("104.9MB"), "{ls}");

    // Protect both from collection, then read them back byte for byte.
    for d in [&ds, &db] {
        let out = daemon.ctr_ok(&[
            "content",
            "label",
            d,
            "containerd.io/gc.root=test",
            "kind=blob",
        ]);
        assert!(out.contains("kind=blob"), "{out}");
    }
    for (d, want) in [(&ds, &small), (&db, &big)] {
        let out = Command::new(require_tool("ctr"))
            .arg("--address")
            .arg(&daemon.socket)
            .args(["content", "get", d])
            .output()
            .expect("ctr content get");
        assert!(out.status.success());
        assert_eq!(out.stdout.len(), want.len());
        assert_eq!(Digest::of(&out.stdout).to_string(), *d);
    }
    let labelled = daemon.ctr_ok(&["content", "ls", "labels.kind==blob"]);
    assert_eq!(labelled.lines().count(), 3, "{labelled}");

    // A failed --expected-digest ingest stays active.
    let wrong = Digest::of(b"something else").to_string();
    assert!(!ctr_ingest(
        &daemon,
        &["--expected-digest", &wrong],
        "failed-1",
        &small_path
    ));
    let active = daemon.ctr_ok(&["content", "active"]);
    assert!(active.contains("failed-1"), "{active}");
    let filtered = daemon.ctr_ok(&["content", "active", "ref==other"]);
    assert!(!filtered.contains("failed-1"), "{filtered}");

    // Ingesting what is already there succeeds at once.
    assert!(ctr_ingest(
        &daemon,
        &["--expected-digest", &ds],
        "again",
        &small_path
    ));

    let rm = daemon.ctr_ok(&["content", "rm", &ds]);
    assert!(rm.contains(&ds), "{rm}");
    let ls = daemon.ctr_ok(&["content", "ls", "-q"]);
    assert!(!ls.contains(&ds) && ls.contains(&db), "{ls}");
    events.expect(&["default", "/content/delete", &ds]);

    daemon.ctr_ok(&["namespaces", "create", "edge-2"]);
    events.expect(&["edge-2", "/namespaces/create"]);
    daemon.ctr_ok(&["namespaces", "label", "edge", "last=1"]);
    // Drain the probes; the first other line must be the last update, not a content event.
    let line = loop {
        let line = edge_only
            .lines
            .recv_timeout(START_DEADLINE)
            .expect("filtered event");
        if !line.contains("probe") || line.contains("last") {
            break line;
        }
    };
    assert!(
        line.contains("/namespaces/update") && line.contains("last"),
        "{line}"
    );

    // The removed blob's file goes with the collection the deletion schedules.
    let blob = daemon
        .dir
        .join("root/io.containerd.content.v1.content/blobs/sha256")
        .join(ds.trim_start_matches("sha256:"));
    wait_for("the blob to be collected", START_DEADLINE, || {
        (!blob.exists()).then_some(())
    });
}

#[test]
fn leases_create_ls_rm_and_sync_delete_collects() {
    let daemon = Daemon::start("leases");
    let id = daemon.ctr_ok(&["leases", "create"]);
    let id = id.trim();
    let (nanos, suffix) = id.split_once('-').expect("generated id");
    assert!(nanos.parse::<u32>().is_ok() && suffix.len() == 4, "{id}");
    assert_eq!(
        daemon
            .ctr_ok(&["leases", "create", "--id", "mine", "-x", "1h", "team=edge"])
            .trim(),
        "mine"
    );
    let ls = daemon.ctr_ok(&["leases", "ls"]);
    assert!(ls.contains(id) && ls.contains("team=edge"), "{ls}");
    assert!(ls.contains("containerd.io/gc.expire="), "{ls}");
    let only = daemon.ctr_ok(&["leases", "ls", "labels.team==edge"]);
    assert_eq!(only.lines().count(), 2, "{only}");
    let bad = daemon.ctr(&["leases", "ls", "id=="]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("parse error"));
    let dup = daemon.ctr(&["leases", "create", "--id", "mine"]);
    assert!(String::from_utf8_lossy(&dup.stderr).contains("already exists"));
    let missing = daemon.ctr(&["leases", "rm", "nope"]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("lease \"nope\": not found"));

    // Content written under a lease lives while the lease does; a sync delete collects it
    // before answering.
    let client = ContentClient::new(daemon.channel());
    let bytes = data(3 * MIB, 7);
    write_stream(
        &client,
        opt("default", Some("mine")),
        ingest_messages("leased", &bytes, MIB, &[]),
    )
    .expect("write under lease");
    let digest = Digest::of(&bytes).to_string();
    let info = InfoRequest {
        digest: digest.clone(),
        ..Default::default()
    };
    client.info_opt(&info, opt("default", None)).expect("info");
    assert_eq!(
        daemon.ctr_ok(&["leases", "rm", "--sync", "mine"]).trim(),
        "mine"
    );
    let (code, message) = status_code(client.info_opt(&info, opt("default", None)));
    assert_eq!(code, RpcStatusCode::NOT_FOUND);
    assert_eq!(message, format!("content digest {digest}: not found"));

    let leases = LeasesClient::new(daemon.channel());
    let created = leases
        .create_opt(
            &CreateRequest {
                id: "grpc".into(),
                ..Default::default()
            },
            opt("default", None),
        )
        .expect("create");
    assert!(created.lease.created_at.seconds > 0);
    let (code, _) = status_code(leases.delete_opt(
        &DeleteRequest {
            id: "grpc".into(),
            ..Default::default()
        },
        opt("other", None),
    ));
    assert_eq!(code, RpcStatusCode::NOT_FOUND, "leases are per namespace");
}

#[test]
fn bad_requests_get_containerds_codes_and_the_daemon_keeps_serving() {
    let daemon = Daemon::start("content-bad");
    let client = ContentClient::new(daemon.channel());
    let bytes = data(1000, 3);
    let digest = Digest::of(&bytes).to_string();
    write_stream(
        &client,
        opt("default", None),
        ingest_messages("good", &bytes, 300, &[("containerd.io/gc.root", "x")]),
    )
    .expect("good write");

    // A ref that looks like a path is only a name: nothing appears outside the store.
    let mut escape = ingest_messages("../../x", b"abc", 3, &[]);
    escape.truncate(2);
    write_stream(&client, opt("default", None), escape).expect("write");
    let status = client
        .status_opt(
            &StatusRequest {
                ref_: "../../x".into(),
                ..Default::default()
            },
            opt("default", None),
        )
        .expect("status");
    assert_eq!(status.status.offset, 3);
    assert!(!daemon.dir.join("root/x").exists() && !daemon.dir.join("x").exists());

    let info = |d: &str, ns: &str| {
        client.info_opt(
            &InfoRequest {
                digest: d.into(),
                ..Default::default()
            },
            opt(ns, None),
        )
    };
    let (code, message) = status_code(info("sha256:zz", "default"));
    assert_eq!(code, RpcStatusCode::INVALID_ARGUMENT, "{message}");
    let (code, message) = status_code(info(&digest, "-bad-"));
    assert_eq!(code, RpcStatusCode::INVALID_ARGUMENT);
    assert!(message.starts_with("namespace validation"), "{message}");
    let (code, _) = status_code(client.info_opt(
        &InfoRequest {
            digest: digest.clone(),
            ..Default::default()
        },
        CallOption::default(),
    ));
    assert_eq!(code, RpcStatusCode::FAILED_PRECONDITION, "no namespace");

    // A 5,000-byte label.
    let mut labels = HashMap::new();
    labels.insert("big".to_string(), "v".repeat(5000));
    let (code, message) = status_code(
        client.update_opt(
            &UpdateRequest {
                info: Some(ctrd::api::content::Info {
                    digest: digest.clone(),
                    labels,
                    ..Default::default()
                })
                .into(),
                update_mask: Some(FieldMask {
                    paths: vec!["labels.big".into()],
                    ..Default::default()
                })
                .into(),
                ..Default::default()
            },
            opt("default", None),
        ),
    );
    assert_eq!(code, RpcStatusCode::INVALID_ARGUMENT);
    assert!(
        message.contains("greater than maximum size (4096 bytes)"),
        "{message}"
    );

    // A WRITE at the wrong offset.
    let msgs = vec![
        WriteContentRequest {
            ref_: "offsets".into(),
            ..write_req(WriteAction::STAT)
        },
        WriteContentRequest {
            offset: 10,
            data: b"late".to_vec(),
            ..write_req(WriteAction::WRITE)
        },
    ];
    let (code, message) = status_code(write_stream(&client, opt("default", None), msgs));
    assert_eq!(code, RpcStatusCode::OUT_OF_RANGE);
    assert_eq!(message, "write @10 must occur at current offset 0");

    // A COMMIT with the wrong size leaves the ingest active.
    let mut msgs = ingest_messages("sized", b"abc", 3, &[]);
    let commit = msgs.last_mut().unwrap();
    commit.total = 6;
    commit.expected.clear();
    let (code, message) = status_code(write_stream(&client, opt("default", None), msgs));
    assert_eq!(code, RpcStatusCode::FAILED_PRECONDITION);
    assert_eq!(message, "\"sized\" failed size validation: 3 != 6");
    let active = daemon.ctr_ok(&["content", "active", "ref==sized"]);
    assert!(active.contains("sized"), "{active}");

    // The first message must carry a ref.
    let (code, message) = status_code(write_stream(
        &client,
        opt("default", None),
        vec![write_req(WriteAction::STAT)],
    ));
    assert_eq!(code, RpcStatusCode::INVALID_ARGUMENT);
    assert_eq!(message, "first message must have a reference");

    // Writing an expected digest the namespace holds is AlreadyExists.
    let (code, _) = status_code(write_stream(
        &client,
        opt("default", None),
        ingest_messages("dup", &bytes, 1000, &[]),
    ));
    assert_eq!(code, RpcStatusCode::ALREADY_EXISTS);

    // A read past the end, and reads of a window.
    let read = |offset: i64, size: i64| -> Result<Vec<u8>, grpcio::Error> {
        let mut stream = client.read_opt(
            &ReadContentRequest {
                digest: digest.clone(),
                offset,
                size,
                ..Default::default()
            },
            opt("default", None),
        )?;
        futures_executor::block_on(async {
            let mut out = Vec::new();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk?;
                assert_eq!(chunk.offset, offset.max(0) + out.len() as i64);
                out.extend_from_slice(&chunk.data);
            }
            Ok(out)
        })
    };
    let (code, message) = status_code(read(1001, 0));
    assert_eq!(code, RpcStatusCode::OUT_OF_RANGE);
    assert_eq!(message, "read past object length 1000 bytes");
    assert_eq!(read(10, 20).unwrap(), &bytes[10..30]);
    assert_eq!(read(-5, 0).unwrap(), bytes);
    assert_eq!(read(990, 100).unwrap(), &bytes[990..]);

    // A filter that does not parse.
    let listed = client.list_opt(
        &ListContentRequest {
            filters: vec!["labels.\"x==".into()],
            ..Default::default()
        },
        opt("default", None),
    );
    let result = listed.map(|mut stream| {
        futures_executor::block_on(async move { stream.next().await.transpose() })
    });
    let (code, _) = status_code(result.and_then(|r| r));
    assert_eq!(code, RpcStatusCode::INVALID_ARGUMENT);

    // Still serving.
    VersionClient::new(daemon.channel())
        .version(&Empty::default())
        .expect("version after bad requests");
    assert!(daemon.ctr_ok(&["content", "ls", "-q"]).contains(&digest));
}

#[test]
fn sigkill_mid_ingest_leaves_a_resumable_ingest_and_no_partial_blob() {
    let mut daemon = Daemon::start_with(
        "content-kill",
        Options {
            config: Some("version = 3\n".into()),
            ..Default::default()
        },
    );
    let big = data(100 * MIB, 9);
    let digest = Digest::of(&big).to_string();
    let blobs = daemon
        .dir
        .join("root/io.containerd.content.v1.content/blobs/sha256");

    // Feed ctr through a pipe and stop feeding at 40 MiB, so the kill lands mid-ingest.
    let mut ctr = Command::new(require_tool("ctr"))
        .arg("--address")
        .arg(&daemon.socket)
        .args(["content", "ingest", "--expected-size"])
        .arg(big.len().to_string())
        .arg("killed-1")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("ctr ingest");
    let mut stdin = ctr.stdin.take().expect("stdin");
    stdin.write_all(&big[..40 * MIB]).expect("feed ctr");
    stdin.flush().unwrap();
    let client = ContentClient::new(daemon.channel());
    let status = StatusRequest {
        ref_: "killed-1".into(),
        ..Default::default()
    };
    wait_for("the ingest to pass 30 MiB", START_DEADLINE, || {
        client
            .status_opt(&status, opt("default", None))
            .ok()
            .filter(|s| s.status.offset >= (30 * MIB) as i64)
    });
    daemon.kill();
    drop(stdin);
    let _ = ctr.wait();
    assert_eq!(fs::read_dir(&blobs).unwrap().count(), 0, "no partial blob");

    daemon.restart();
    let active = daemon.ctr_ok(&["content", "active"]);
    assert!(active.contains("killed-1"), "{active}");
    let client = ContentClient::new(daemon.channel());
    let offset = client
        .status_opt(&status, opt("default", None))
        .expect("status after restart")
        .status
        .offset as usize;
    assert!((30 * MIB..=40 * MIB).contains(&offset), "offset {offset}");

    // Resume from the recorded offset and commit the whole blob.
    let mut msgs = vec![WriteContentRequest {
        ref_: "killed-1".into(),
        total: big.len() as i64,
        ..write_req(WriteAction::STAT)
    }];
    let mut at = offset;
    while at < big.len() {
        let end = (at + MIB).min(big.len());
        msgs.push(WriteContentRequest {
            offset: at as i64,
            data: big[at..end].to_vec(),
            ..write_req(WriteAction::WRITE)
        });
        at = end;
    }
    msgs.push(WriteContentRequest {
        total: big.len() as i64,
        offset: big.len() as i64,
        expected: digest.clone(),
        labels: [("containerd.io/gc.root".to_string(), "x".to_string())].into(),
        ..write_req(WriteAction::COMMIT)
    });
    let answers = write_stream(&client, opt("default", None), msgs).expect("resume");
    assert_eq!(
        answers[0].offset as usize, offset,
        "STAT reports the resume point"
    );
    assert_eq!(answers.last().unwrap().digest, digest);
    assert!(!daemon.ctr_ok(&["content", "active"]).contains("killed-1"));
    assert_eq!(fs::read_dir(&blobs).unwrap().count(), 1);
}

#[test]
fn a_second_namespace_commits_a_shared_blob_without_sending_it() {
    // `ctr content ingest` holds no lease: keep the start-up collection from taking the
    // blob before it is labelled as a root.
    let daemon = Daemon::start_with(
        "content-shared",
        Options {
            config: Some(
                "version = 3\n[plugins.'io.containerd.gc.v1.scheduler']\nstartup_delay = '1h'\n"
                    .into(),
            ),
            ..Default::default()
        },
    );
    let blob = data(300 * 1024, 11);
    let digest = Digest::of(&blob);
    let file = daemon.dir.join("blob");
    fs::write(&file, &blob).expect("write blob");
    // `ctr -n a content ingest` (the namespace flag is global, before the subcommand).
    let status = Command::new(require_tool("ctr"))
        .arg("--address")
        .arg(&daemon.socket)
        .args(["-n", "a", "content", "ingest", "--expected-digest"])
        .arg(digest.to_string())
        .arg("up")
        .stdin(fs::File::open(&file).expect("open blob"))
        .status()
        .expect("run ctr");
    assert!(status.success());
    let d = digest.to_string();
    daemon.ctr_ok(&[
        "-n",
        "a",
        "content",
        "label",
        &d,
        "containerd.io/gc.root=keep",
    ]);
    let client = ContentClient::new(daemon.channel());
    let size = blob.len() as i64;

    // Namespace b: the writer is complete at once; a COMMIT with no data records the blob.
    let answers = write_stream(
        &client,
        opt("b", None),
        vec![
            WriteContentRequest {
                ref_: "up".into(),
                total: size,
                expected: digest.to_string(),
                ..write_req(WriteAction::STAT)
            },
            WriteContentRequest {
                total: size,
                offset: size,
                expected: digest.to_string(),
                ..write_req(WriteAction::COMMIT)
            },
        ],
    )
    .expect("shared write in b");
    assert_eq!((answers[0].offset, answers[0].total), (size, size));
    assert_eq!(answers[1].digest, digest.to_string());
    let info = client
        .info_opt(
            &InfoRequest {
                digest: digest.to_string(),
                ..Default::default()
            },
            opt("b", None),
        )
        .expect("b holds the blob");
    assert_eq!(info.info.size, size);

    // Namespace c: appending after the shared bytes makes a new, longer blob.
    let tail = b"and a little more";
    let mut longer = blob.clone();
    longer.extend_from_slice(tail);
    let longer_digest = Digest::of(&longer);
    let answers = write_stream(
        &client,
        opt("c", None),
        vec![
            WriteContentRequest {
                ref_: "up".into(),
                expected: digest.to_string(),
                ..write_req(WriteAction::STAT)
            },
            WriteContentRequest {
                offset: size,
                data: tail.to_vec(),
                ..write_req(WriteAction::WRITE)
            },
            WriteContentRequest {
                total: longer.len() as i64,
                offset: longer.len() as i64,
                expected: longer_digest.to_string(),
                ..write_req(WriteAction::COMMIT)
            },
        ],
    )
    .expect("append in c");
    assert_eq!(answers[0].offset, size);
    assert_eq!(answers[1].offset, longer.len() as i64);
    assert_eq!(answers[2].digest, longer_digest.to_string());
    let got = daemon.ctr_ok(&["-n", "c", "content", "ls", "-q"]);
    assert_eq!(got.trim(), longer_digest.to_string());
    let blobs = fs::read_dir(
        daemon
            .dir
            .join("root/io.containerd.content.v1.content/blobs/sha256"),
    )
    .expect("blobs dir")
    .count();
    assert_eq!(blobs, 2, "the shared blob once, the longer one once");
}
