//! HTTP listeners for metrics and debug: each owns its thread, which serves every
//! connection (`conns.rs`: a cap on connections, idle ones closed) and answers requests on
//! it; tiny_http's types parse the request heads and print the responses.

use std::os::fd::RawFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::Receiver;

use super::conns::{ConnLoop, Flow, Limits, Listen, Protocol};
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

/// Connections an HTTP listener serves at once unless configured.
pub const DEFAULT_MAX_CONNECTIONS: usize = 32;

/// A connection without a request for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// The longest request head (request line and headers) accepted.
pub const MAX_HEAD: usize = 16 << 10;

/// Binds an HTTP server; the returned interrupt wakes its loop so it sees a stop.
pub fn start(
    name: &'static str,
    bind: HttpBind,
    handler: Handler,
    max_connections: usize,
) -> Result<(Box<dyn Serving>, Option<Interrupt>), ServerError> {
    let fail = |err: String| ServerError::Listener(name, err);
    let (listener, socket_path) = match bind {
        HttpBind::Tcp(address) => {
            let listener = std::net::TcpListener::bind(address.as_str())
                .and_then(|l| l.set_nonblocking(true).map(|()| l))
                .map_err(|err| fail(format!("listen on {address}: {err}")))?;
            log::info!("{name} serving on tcp {address}");
            (Listen::Tcp(mio::net::TcpListener::from_std(listener)), None)
        }
        HttpBind::Unix { path, uid, gid } => {
            socket::prepare(&path, uid, gid)?;
            let listener = mio::net::UnixListener::bind(&path)
                .map_err(|err| fail(format!("listen on {}: {err}", path.display())))?;
            socket::secure(&path, uid, gid)?;
            log::info!("{name} serving on {}", path.display());
            (Listen::Unix(listener), Some(path))
        }
    };
    let limits = Limits {
        max_connections: if max_connections == 0 {
            DEFAULT_MAX_CONNECTIONS
        } else {
            max_connections
        },
        idle_timeout: Some(IDLE_TIMEOUT),
        max_input: MAX_HEAD,
    };
    let (conn_loop, interrupt) = ConnLoop::new(name, listener, Http { handler }, limits)
        .map_err(|err| fail(format!("poll: {err}")))?;
    Ok((
        Box::new(HttpServing {
            conn_loop,
            socket: socket_path,
        }),
        Some(interrupt),
    ))
}

struct HttpServing {
    conn_loop: ConnLoop<Http>,
    socket: Option<PathBuf>,
}

impl Serving for HttpServing {
    fn run(self: Box<Self>, stop: Receiver<()>) -> Result<(), String> {
        let HttpServing { conn_loop, socket } = *self;
        let result = Box::new(conn_loop).run(stop);
        if let Some(path) = &socket {
            socket::remove(path);
        }
        result
    }
}

/// HTTP/1.x without request bodies: the endpoints only answer GETs, so a request that
/// announces a body is refused before any of it is read (tiny_http's own server would
/// drain an unread body into a buffer of the announced size when the request is dropped).
/// tiny_http's types parse methods and headers and print the responses.
struct Http {
    handler: Handler,
}

impl Protocol for Http {
    type Session = ();

    fn open(&mut self, _fd: RawFd) -> Option<()> {
        Some(())
    }

    fn on_input(&mut self, _: &mut (), input: &mut Vec<u8>, output: &mut Vec<u8>) -> Flow {
        loop {
            let Some(end) = head_end(input) else {
                if input.len() >= MAX_HEAD {
                    refuse(output, 431, "request header fields too large");
                    return Flow::Close;
                }
                return Flow::Open;
            };
            let head: Vec<u8> = input.drain(..end).collect();
            match self.answer(&head, output) {
                Flow::Open => {}
                Flow::Close => return Flow::Close,
            }
        }
    }
}

/// Where the head ends (just past its blank line), if it arrived whole.
fn head_end(input: &[u8]) -> Option<usize> {
    input
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4)
        .or_else(|| input.windows(2).position(|w| w == b"\n\n").map(|i| i + 2))
}

/// Writes an error answer that closes the connection.
fn refuse(output: &mut Vec<u8>, status: u16, message: &str) {
    let response = tiny_http::Response::from_string(format!("{message}\n"))
        .with_status_code(status)
        .with_header(header("Connection", "close"))
        .with_header(header("Content-Type", "text/plain; charset=utf-8"));
    let _ = response.raw_print(&mut *output, tiny_http::HTTPVersion(1, 1), &[], false, None);
}

fn header(field: &str, value: &str) -> tiny_http::Header {
    tiny_http::Header::from_bytes(field.as_bytes(), value.as_bytes())
        .expect("constant header names and values are valid")
}

impl Http {
    fn answer(&self, head: &[u8], output: &mut Vec<u8>) -> Flow {
        let Ok(text) = std::str::from_utf8(head) else {
            refuse(output, 400, "bad request");
            return Flow::Close;
        };
        let mut lines = text.lines();
        let request_line = lines.next().unwrap_or_default();
        let mut parts = request_line.split(' ');
        let (Some(method), Some(url), Some(version), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            refuse(output, 400, "bad request");
            return Flow::Close;
        };
        let version = match version {
            "HTTP/1.1" => tiny_http::HTTPVersion(1, 1),
            "HTTP/1.0" => tiny_http::HTTPVersion(1, 0),
            v if v.starts_with("HTTP/") => {
                refuse(output, 505, "only HTTP/1.0 and HTTP/1.1 are supported");
                return Flow::Close;
            }
            _ => {
                refuse(output, 400, "bad request");
                return Flow::Close;
            }
        };
        let Ok(parsed_method) = method.parse::<tiny_http::Method>() else {
            refuse(output, 400, "bad request");
            return Flow::Close;
        };
        let mut headers = Vec::new();
        for line in lines.filter(|l| !l.is_empty()) {
            match line.parse::<tiny_http::Header>() {
                Ok(h) => headers.push(h),
                Err(()) => {
                    refuse(output, 400, "bad request");
                    return Flow::Close;
                }
            }
        }
        let value = |name: &'static str| {
            headers
                .iter()
                .find(|h| h.field.equiv(name))
                .map(|h| h.value.as_str().trim().to_ascii_lowercase())
        };
        if value("Transfer-Encoding").is_some() {
            refuse(output, 411, "request bodies are not accepted");
            return Flow::Close;
        }
        if value("Content-Length").is_some_and(|len| len != "0") {
            refuse(output, 413, "request bodies are not accepted");
            return Flow::Close;
        }
        let keep_alive = match value("Connection") {
            Some(c) if c.contains("close") => false,
            Some(c) if c.contains("keep-alive") => true,
            _ => version == tiny_http::HTTPVersion(1, 1),
        };
        let reply = (self.handler)(parsed_method.as_str(), url);
        let mut response = tiny_http::Response::from_data(reply.body)
            .with_status_code(reply.status)
            .with_header(header("Content-Type", reply.content_type));
        if !keep_alive {
            response.add_header(header("Connection", "close"));
        }
        let head_only = parsed_method == tiny_http::Method::Head;
        let _ = response.raw_print(&mut *output, version, &headers, head_only, None);
        if keep_alive {
            Flow::Open
        } else {
            Flow::Close
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http() -> Http {
        Http {
            handler: Arc::new(|method: &str, url: &str| {
                Reply::ok("text/plain", format!("{method} {url}"))
            }),
        }
    }

    fn feed(input: &[u8]) -> (Flow, String, usize) {
        let mut input = input.to_vec();
        let mut output = Vec::new();
        let flow = http().on_input(&mut (), &mut input, &mut output);
        (
            flow,
            String::from_utf8_lossy(&output).into_owned(),
            input.len(),
        )
    }

    #[test]
    fn pipelined_gets_are_answered_and_the_connection_kept() {
        let (flow, out, left) =
            feed(b"GET /a HTTP/1.1\r\n\r\nGET /b?x=1 HTTP/1.1\r\nHost: h\r\n\r\nGET /c");
        assert_eq!(flow, Flow::Open);
        assert_eq!(out.matches("HTTP/1.1 200").count(), 2, "{out}");
        assert!(
            out.contains("GET /a") && out.contains("GET /b?x=1"),
            "{out}"
        );
        assert_eq!(left, "GET /c".len(), "a partial head waits for the rest");
    }

    #[test]
    fn bodies_are_refused_before_any_of_them_is_read() {
        let (flow, out, _) =
            feed(b"POST /v1/metrics HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n");
        assert_eq!(flow, Flow::Close);
        assert!(out.starts_with("HTTP/1.1 413"), "{out}");
        let (flow, out, _) = feed(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!(flow, Flow::Close);
        assert!(out.starts_with("HTTP/1.1 411"), "{out}");
        // An empty body is no body.
        let (flow, out, _) = feed(b"GET / HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(flow, Flow::Open);
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    }

    #[test]
    fn other_versions_bad_lines_and_endless_heads_get_an_error_and_close() {
        for (input, status) in [
            (&b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..], "505"),
            (b"GET / HTTP/3.0\r\n\r\n", "505"),
            (b"GET /\r\n\r\n", "400"),
            (
                b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
                "400",
            ),
            (b"GET / HTTP/1.1\r\nno colon here\r\n\r\n", "400"),
        ] {
            let (flow, out, _) = feed(input);
            assert_eq!(flow, Flow::Close, "{input:?}");
            assert!(
                out.starts_with(&format!("HTTP/1.1 {status}")),
                "{input:?}: {out}"
            );
        }
        let (flow, out, _) = feed(&vec![b'a'; MAX_HEAD]);
        assert_eq!(flow, Flow::Close);
        assert!(out.starts_with("HTTP/1.1 431"), "{out}");
    }

    #[test]
    fn http_1_0_and_connection_close_end_the_connection() {
        let (flow, out, _) = feed(b"GET / HTTP/1.0\r\n\r\n");
        assert_eq!(flow, Flow::Close);
        assert!(out.starts_with("HTTP/1.0 200"), "{out}");
        let (flow, _, _) = feed(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n");
        assert_eq!(flow, Flow::Close);
    }
}
