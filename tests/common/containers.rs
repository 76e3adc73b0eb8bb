//! Helpers for tests that run containers (root, Debian's runc and runc shim): a busybox
//! root filesystem, OCI specs from `runc spec`, and guards that leave no shim, task or
//! mount behind even when a test fails.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::{require_tool, wait_for};

/// Fails unless the test runs as root with everything a container needs.
pub fn require_container_tools() {
    assert_eq!(
        unsafe_free_euid(),
        0,
        "tests that run containers need root (run scripts/test as root)"
    );
    require_tool("runc");
    require_tool("containerd-shim-runc-v2");
    assert!(
        Path::new("/bin/busybox").is_file(),
        "busybox-static is not installed (run scripts/setup)"
    );
}

fn unsafe_free_euid() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|rest| rest.split_whitespace().nth(1))
        .and_then(|uid| uid.parse().ok())
        .expect("effective uid in /proc/self/status")
}

/// A root filesystem with busybox and links for the applets the tests use.
pub fn busybox_rootfs(dir: &Path) -> PathBuf {
    let root = dir.to_path_buf();
    std::fs::create_dir_all(root.join("bin")).expect("mkdir rootfs/bin");
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).expect("copy busybox");
    for applet in ["sh", "echo", "sleep", "cat", "true", "ls", "env"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).expect("link");
    }
    for d in ["proc", "dev", "sys", "tmp", "etc"] {
        std::fs::create_dir_all(root.join(d)).expect("mkdir");
    }
    root
}

/// An OCI spec (from `runc spec`) running `args` without a terminal, rootfs `rootfs`.
pub fn spec(args: &[&str], cgroups_path: &str) -> Vec<u8> {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = Command::new(require_tool("runc"))
        .arg("spec")
        .current_dir(tmp.path())
        .output()
        .expect("runc spec");
    assert!(out.status.success(), "runc spec failed");
    let text = std::fs::read(tmp.path().join("config.json")).expect("read spec");
    let mut spec: serde_json::Value = serde_json::from_slice(&text).expect("spec json");
    spec["process"]["terminal"] = false.into();
    spec["process"]["args"] = args.iter().map(|a| serde_json::Value::from(*a)).collect();
    spec["root"]["readonly"] = false.into();
    spec["linux"]["cgroupsPath"] = cgroups_path.into();
    serde_json::to_vec(&spec).expect("encode spec")
}

/// Pids of running shims whose command line names `-id <id>` and `-namespace <ns>`.
pub fn shim_pids(namespace: &str, id: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return pids;
    };
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let is_shim = args
            .first()
            .is_some_and(|a| a.ends_with("containerd-shim-runc-v2"));
        let has = |flag: &str, value: &str| args.windows(2).any(|w| w[0] == flag && w[1] == value);
        if is_shim && has("-id", id) && has("-namespace", namespace) {
            pids.push(pid);
        }
    }
    pids
}

/// Mount points at or below `dir`.
pub fn mounts_under(dir: &Path) -> Vec<String> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let prefix = dir.to_string_lossy().into_owned();
    text.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(&prefix))
        .map(str::to_string)
        .collect()
}

/// Kills every shim of `namespace`/`id` and its container, and unmounts what is left under
/// `dir`, when dropped: a failing test leaves nothing running.
pub struct ContainerGuard {
    pub namespace: String,
    pub ids: Vec<String>,
    pub dir: PathBuf,
}

impl ContainerGuard {
    pub fn new(namespace: &str, ids: &[&str], dir: &Path) -> ContainerGuard {
        ContainerGuard {
            namespace: namespace.to_string(),
            ids: ids.iter().map(|s| s.to_string()).collect(),
            dir: dir.to_path_buf(),
        }
    }
}

impl Drop for ContainerGuard {
    fn drop(&mut self) {
        let root = format!("/run/containerd/runc/{}", self.namespace);
        for id in &self.ids {
            let _ = Command::new("runc")
                .args(["--root", &root, "delete", "--force", id])
                .output();
            for pid in shim_pids(&self.namespace, id) {
                let _ = Command::new("kill").args(["-9", &pid.to_string()]).output();
            }
        }
        // runc's state root for the namespace (empty once its containers are deleted).
        let _ = std::fs::remove_dir(&root);
        for mount in mounts_under(&self.dir).into_iter().rev() {
            let _ = Command::new("umount").args(["-l", &mount]).output();
        }
    }
}

/// Waits until no shim of `namespace`/`id` runs.
pub fn wait_no_shim(namespace: &str, id: &str) {
    wait_for("the shim to exit", Duration::from_secs(20), || {
        shim_pids(namespace, id).is_empty().then_some(())
    });
}
