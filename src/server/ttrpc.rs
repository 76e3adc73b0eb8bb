//! The ttrpc listener (shim traffic): a ttrpc sync server owned by its listener thread.
//! Only peers running as the daemon's own uid are accepted, like containerd's
//! `UnixSocketRequireSameUser`.

use std::collections::HashMap;
use std::os::fd::{IntoRawFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;

use crossbeam_channel::Receiver;
use ttrpc::{AcceptHook, HookError, HookOutput};

use super::listener::{Interrupt, Serving};
use super::{socket, ServerError};
use crate::sys;

#[derive(Debug)]
struct SameUser {
    uid: u32,
}

impl AcceptHook for SameUser {
    fn on_accept(&self, fd: RawFd) -> Result<HookOutput, HookError> {
        let peer = sys::peer_uid(fd).map_err(HookError::Io)?;
        if peer != self.uid {
            log::warn!("ttrpc: refused a peer running as uid {peer}");
            return Err(HookError::Rejected(format!(
                "peer uid {peer} is not the daemon's uid {}",
                self.uid
            )));
        }
        Ok(HookOutput {
            data: HashMap::new(),
            payload_transform: None,
        })
    }
}

struct TtrpcServing {
    server: ttrpc::Server,
    /// The socket file ctrd created (none for a socket systemd passed).
    path: Option<PathBuf>,
}

/// Where the ttrpc listener listens.
pub enum TtrpcBind {
    /// A socket file ctrd creates (and removes at exit).
    Path { path: PathBuf, uid: u32, gid: u32 },
    /// A listening socket systemd passed; never unlinked or chmodded by ctrd.
    Inherited {
        listener: UnixListener,
        label: String,
    },
}

/// Binds and starts the ttrpc server with `methods`.
pub fn start(
    bind: TtrpcBind,
    methods: HashMap<String, Box<dyn ttrpc::MethodHandler + Send + Sync>>,
) -> Result<(Box<dyn Serving>, Option<Interrupt>), ServerError> {
    let fail = |err: String| ServerError::Listener("ctrd-ttrpc", err);
    let (server, path, label) = match bind {
        TtrpcBind::Path { path, uid, gid } => {
            socket::prepare(&path, uid, gid)?;
            let server = ttrpc::Server::new()
                .bind(&format!("unix://{}", path.display()))
                .map_err(|err| fail(format!("listen on {}: {err}", path.display())))?;
            socket::secure(&path, uid, gid)?;
            let label = path.display().to_string();
            (server, Some(path), label)
        }
        TtrpcBind::Inherited { listener, label } => {
            let server = ttrpc::Server::new()
                .add_listener(listener.into_raw_fd())
                .map_err(|err| fail(format!("{label}: {err}")))?;
            (server, None, format!("the socket systemd passed ({label})"))
        }
    };
    let mut server = server
        .register_service(methods)
        .set_thread_count_min(1)
        .set_thread_count_default(2)
        .set_thread_count_max(16)
        .set_accept_hook(SameUser {
            uid: sys::geteuid(),
        });
    server
        .start()
        .map_err(|err| fail(format!("start: {err}")))?;
    log::info!("serving ttrpc on {label}");
    Ok((Box::new(TtrpcServing { server, path }), None))
}

impl Serving for TtrpcServing {
    fn run(self: Box<Self>, stop: Receiver<()>) -> Result<(), String> {
        let _ = stop.recv();
        let TtrpcServing { server, path } = *self;
        server.shutdown();
        // The sync server leaves its socket file behind.
        if let Some(path) = path {
            socket::remove(&path);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn only_peers_with_the_daemons_uid_are_accepted() {
        let (ours, _theirs) = UnixStream::pair().expect("pair");
        let fd = ours.as_raw_fd();
        let me = sys::geteuid();
        assert!(SameUser { uid: me }.on_accept(fd).is_ok());
        match (SameUser { uid: me + 1 }).on_accept(fd) {
            Err(HookError::Rejected(why)) => assert!(why.contains("is not the daemon's uid")),
            Err(other) => panic!("unexpected {other:?}"),
            Ok(_) => panic!("a peer with another uid was accepted"),
        }
    }
}
