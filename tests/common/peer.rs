//! Debian's containerd on a temporary root, beside ctrd: as an external plugin server, or as
//! the reference an artefact made by ctrd must also work with.

use std::fs;
use std::process::{Child, Command, Stdio};

use super::{require_tool, wait_for, TestDir, START_DEADLINE};

/// Debian's containerd on a temporary root, as the external plugin server.
pub struct Containerd {
    pub dir: TestDir,
    child: Option<Child>,
}

impl Containerd {
    pub fn start(name: &str) -> Containerd {
        let dir = TestDir::new(name);
        let base = dir.path.to_string_lossy().into_owned();
        dir.write(
            "config.toml",
            &format!(
                "version = 2\nroot = \"{base}/root\"\nstate = \"{base}/state\"\n\
                 disabled_plugins = [\"io.containerd.grpc.v1.cri\", \"io.containerd.snapshotter.v1.aufs\", \
                 \"io.containerd.snapshotter.v1.btrfs\", \"io.containerd.snapshotter.v1.zfs\", \
                 \"io.containerd.snapshotter.v1.devmapper\", \"io.containerd.tracing.processor.v1.otlp\", \
                 \"io.containerd.internal.v1.tracing\"]\n\
                 [grpc]\naddress = \"{base}/c.sock\"\n[ttrpc]\naddress = \"{base}/c.sock.ttrpc\"\n"
            ),
        );
        let mut peer = Containerd { dir, child: None };
        peer.spawn();
        peer
    }

    pub fn socket(&self) -> String {
        self.dir.join("c.sock").to_string_lossy().into_owned()
    }

    pub fn spawn(&mut self) {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("containerd.log"))
            .expect("containerd log file");
        let child = Command::new(require_tool("containerd"))
            .arg("--config")
            .arg(self.dir.join("config.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log file"))
            .stderr(log)
            .spawn()
            .expect("start containerd");
        self.child = Some(child);
        let socket = self.socket();
        wait_for("containerd to serve", START_DEADLINE, || {
            super::ctr(socket.as_ref(), &["version"])
                .status
                .success()
                .then_some(())
        });
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = ctrd::sys::kill(child.id() as i32, libc::SIGTERM);
            child.wait().expect("reap containerd");
        }
    }

    pub fn ctr_ok(&self, args: &[&str]) -> String {
        let out = super::ctr(self.socket().as_ref(), args);
        assert!(
            out.status.success(),
            "containerd ctr {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
