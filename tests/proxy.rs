//! External plugins end to end: ctrd with its snapshotter and content store proxied to a
//! running Debian containerd, driven by Debian's `ctr` against both daemons.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::fs;
use std::net::{Shutdown, TcpListener};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::Command;

use common::peer::Containerd;
use common::{require_tool, wait_for, Daemon, Options, START_DEADLINE};
use ctrd::content::Digest;

fn proxied_daemon(peer: &Containerd) -> Daemon {
    Daemon::start_with(
        "proxy",
        Options {
            config: Some(format!(
                "version = 3\n\
                 disabled_plugins = [\"io.containerd.snapshotter.v1.native\", \"io.containerd.content.v1.content\"]\n\
                 [proxy_plugins.native]\ntype = \"snapshot\"\naddress = \"{sock}\"\n\
                 [proxy_plugins.remote]\ntype = \"io.containerd.content.v1\"\naddress = \"{sock}\"\nplatform = \"linux/arm64/v8\"\n\
                 [proxy_plugins.odd]\ntype = \"sandbox\"\naddress = \"{sock}\"\n\
                 [proxy_plugins.remote-diff]\ntype = \"diff\"\naddress = \"{sock}\"\n",
                sock = peer.socket()
            )),
            ..Default::default()
        },
    )
}

#[test]
fn proxied_content_and_snapshots_live_in_the_external_daemon() {
    let peer = Containerd::start("peer-a");
    let daemon = proxied_daemon(&peer);
    let ls = daemon.ctr_ok(&["plugins", "ls"]);
    assert!(
        ls.contains("remote") && ls.contains("linux/arm64/v8"),
        "{ls}"
    );
    let differ = ls
        .lines()
        .find(|l| l.contains("io.containerd.differ.v1") && l.contains("remote-diff"))
        .unwrap_or_else(|| panic!("no proxy differ: {ls}"));
    assert!(differ.trim_end().ends_with("ok"), "{differ}");
    let detail = daemon.ctr_ok(&["plugins", "ls", "-d", "id==remote"]);
    assert!(
        detail.contains(&format!("address      {}", peer.socket())),
        "{detail}"
    );
    assert!(daemon
        .logs()
        .contains("unknown proxy plugin type \\\"sandbox\\\""));

    // A blob written through ctrd lands in containerd.
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let file = daemon.dir.join("blob");
    fs::write(&file, &data).unwrap();
    let digest = Digest::of(&data).to_string();
    let status = Command::new(require_tool("ctr"))
        .arg("--address")
        .arg(&daemon.socket)
        .args(["content", "ingest", "through-ctrd"])
        .stdin(fs::File::open(&file).unwrap())
        .status()
        .unwrap();
    assert!(status.success());
    assert!(daemon.ctr_ok(&["content", "ls", "-q"]).contains(&digest));
    assert!(peer.ctr_ok(&["content", "ls", "-q"]).contains(&digest));
    let got = Command::new(require_tool("ctr"))
        .arg("--address")
        .arg(&daemon.socket)
        .args(["content", "get", &digest])
        .output()
        .unwrap();
    assert_eq!(Digest::of(&got.stdout).to_string(), digest);

    // Snapshots made through ctrd are containerd's native snapshots, under ctrd's keys.
    daemon.ctr_ok(&["snapshots", "--snapshotter", "native", "prepare", "base"]);
    daemon.ctr_ok(&[
        "snapshots",
        "--snapshotter",
        "native",
        "commit",
        "base-c",
        "base",
    ]);
    daemon.ctr_ok(&[
        "snapshots",
        "--snapshotter",
        "native",
        "prepare",
        "work",
        "base-c",
    ]);
    let ours = daemon.ctr_ok(&["snapshots", "--snapshotter", "native", "ls"]);
    assert!(ours.contains("work") && ours.contains("base-c"), "{ours}");
    let theirs = peer.ctr_ok(&["snapshots", "--snapshotter", "native", "ls"]);
    assert!(
        theirs
            .lines()
            .any(|l| l.starts_with("default/") && l.contains("/work")),
        "{theirs}"
    );
    let mounts = daemon.ctr_ok(&[
        "snapshots",
        "--snapshotter",
        "native",
        "mounts",
        "/mnt",
        "work",
    ]);
    assert!(
        mounts.contains(&peer.dir.path.to_string_lossy().into_owned()),
        "{mounts}"
    );
}

#[test]
fn external_daemon_down_is_unavailable_then_recovers() {
    let mut peer = Containerd::start("peer-b");
    let daemon = proxied_daemon(&peer);
    daemon.ctr_ok(&["snapshots", "--snapshotter", "native", "prepare", "s1"]);
    peer.stop();
    let out = daemon.ctr(&[
        "snapshots",
        "--snapshotter",
        "native",
        "mounts",
        "/mnt",
        "s1",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(err.contains("unavailable"), "{err}");
    // ctrd itself keeps serving.
    daemon.ctr_ok(&["version"]);
    peer.spawn();
    wait_for("the proxy to reconnect", START_DEADLINE, || {
        daemon
            .ctr(&[
                "snapshots",
                "--snapshotter",
                "native",
                "mounts",
                "/mnt",
                "s1",
            ])
            .status
            .success()
            .then_some(())
    });
}

/// Forwards every TCP connection to a loopback port (returned) on to a unix socket, for the
/// rest of the test process: a TCP address for a daemon that serves its API on unix only.
fn tcp_to_unix(target: PathBuf) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for tcp in listener.incoming() {
            let (Ok(tcp), Ok(unix)) = (tcp, UnixStream::connect(&target)) else {
                continue;
            };
            let (mut tcp_in, mut unix_out) = (tcp.try_clone().unwrap(), unix.try_clone().unwrap());
            let (mut unix_in, mut tcp_out) = (unix, tcp);
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut tcp_in, &mut unix_out);
                let _ = unix_out.shutdown(Shutdown::Write);
            });
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut unix_in, &mut tcp_out);
                let _ = tcp_out.shutdown(Shutdown::Write);
            });
        }
    });
    port
}

/// A proxy plugin named by host and port instead of a socket path: ctrd's client channel
/// resolves the name with gRPC core's DNS resolver, picks the address with its default
/// policy and dials TCP, here to a second ctrd's content store behind a TCP forwarder (a
/// daemon's own TCP listener serves only TCP services, as containerd's does).
#[test]
fn a_proxy_plugin_named_by_host_and_port_is_dialled_over_tcp() {
    // ctr's ingest leaves the blob referenced by nothing once its lease is gone, so neither
    // daemon may collect garbage while the test reads it back.
    let no_gc = "[plugins.'io.containerd.gc.v1.scheduler']\n\
                 startup_delay = '1h'\nschedule_delay = '1h'\n";
    let store = Daemon::start_with(
        "proxy-tcp-store",
        Options {
            config: Some(format!("version = 3\n{no_gc}")),
            ..Default::default()
        },
    );
    let port = tcp_to_unix(store.socket.clone());
    let front = Daemon::start_with(
        "proxy-tcp-front",
        Options {
            config: Some(format!(
                "version = 3\n\
                 disabled_plugins = [\"io.containerd.content.v1.content\"]\n\
                 [proxy_plugins.remote]\ntype = \"content\"\naddress = \"localhost:{port}\"\n{no_gc}"
            )),
            ..Default::default()
        },
    );
    let data: Vec<u8> = (0..200_000u32).map(|i| (i * 13 % 251) as u8).collect();
    let file = front.dir.join("blob");
    fs::write(&file, &data).unwrap();
    let digest = Digest::of(&data).to_string();
    let out = Command::new(require_tool("ctr"))
        .arg("--address")
        .arg(&front.socket)
        .args(["content", "ingest", "over-tcp"])
        .stdin(fs::File::open(&file).unwrap())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // It landed in the store behind the TCP address, and reads back through the front.
    assert!(store.ctr_ok(&["content", "ls", "-q"]).contains(&digest));
    let got = front.ctr(&["content", "get", &digest]);
    assert!(
        got.status.success(),
        "{}",
        String::from_utf8_lossy(&got.stderr)
    );
    assert_eq!(Digest::of(&got.stdout).to_string(), digest);
}
