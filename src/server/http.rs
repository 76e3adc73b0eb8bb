//! HTTP listeners (tiny_http) for metrics and debug: each owns its thread and answers
//! requests on it; stop unblocks the accept loop.

use std::path::PathBuf;
use std::sync::Arc;

use crossbeam_channel::Receiver;

use super::listener::{Interrupt, Serving};
use super::{socket, ServerError};

/// Where an HTTP listener binds.
pub enum HttpBind {
    Tcp(String),
    Unix { path: PathBuf, uid: u32, gid: u32 },
}

/// An answer: status, content type, body.
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn ok(content_type: &'static str, body: impl Into<Vec<u8>>) -> Reply {
        Reply {
            status: 200,
            content_type,
            body: body.into(),
        }
    }

    pub fn not_found() -> Reply {
        Reply {
            status: 404,
            content_type: "text/plain; charset=utf-8",
            body: b"404 page not found\n".to_vec(),
        }
    }

    pub fn error(status: u16, message: impl std::fmt::Display) -> Reply {
        Reply {
            status,
            content_type: "text/plain; charset=utf-8",
            body: format!("{message}\n").into_bytes(),
        }
    }
}

/// Answers one request, given its method and URL (path and query).
pub type Handler = Arc<dyn Fn(&str, &str) -> Reply + Send + Sync>;

struct HttpServing {
    name: &'static str,
    server: Arc<tiny_http::Server>,
    handler: Handler,
    socket: Option<PathBuf>,
}

/// Binds an HTTP server; the returned interrupt unblocks its accept loop.
pub fn start(
    name: &'static str,
    bind: HttpBind,
    handler: Handler,
) -> Result<(Box<dyn Serving>, Option<Interrupt>), ServerError> {
    let fail = |err: String| ServerError::Listener(name, err);
    let (server, socket_path) = match bind {
        HttpBind::Tcp(address) => {
            let server = tiny_http::Server::http(address.as_str())
                .map_err(|err| fail(format!("listen on {address}: {err}")))?;
            log::info!("{name} serving on tcp {address}");
            (server, None)
        }
        HttpBind::Unix { path, uid, gid } => {
            socket::prepare(&path, uid, gid)?;
            let server = tiny_http::Server::http_unix(&path)
                .map_err(|err| fail(format!("listen on {}: {err}", path.display())))?;
            socket::secure(&path, uid, gid)?;
            log::info!("{name} serving on {}", path.display());
            (server, Some(path))
        }
    };
    let server = Arc::new(server);
    let unblock = server.clone();
    Ok((
        Box::new(HttpServing {
            name,
            server,
            handler,
            socket: socket_path,
        }),
        Some(Box::new(move || unblock.unblock())),
    ))
}

impl Serving for HttpServing {
    fn run(self: Box<Self>, stop: Receiver<()>) -> Result<(), String> {
        for request in self.server.incoming_requests() {
            if matches!(
                stop.try_recv(),
                Err(crossbeam_channel::TryRecvError::Disconnected)
            ) {
                break;
            }
            let reply = (self.handler)(request.method().as_str(), request.url());
            let header = tiny_http::Header::from_bytes(&b"Content-Type"[..], reply.content_type)
                .expect("content types are valid header values");
            let response = tiny_http::Response::from_data(reply.body)
                .with_status_code(reply.status)
                .with_header(header);
            if let Err(err) = request.respond(response) {
                log::debug!("{}: writing a response failed: {err}", self.name);
            }
        }
        if let Some(path) = &self.socket {
            socket::remove(path);
        }
        Ok(())
    }
}
