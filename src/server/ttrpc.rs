//! The ttrpc listener (shim traffic): every connection served from the listener's one
//! thread (`conns.rs`), however many shims connect; ttrpc's sync server would start
//! five threads per connection. Only peers running as the daemon's own uid are accepted,
//! like containerd's `UnixSocketRequireSameUser`.

use std::collections::HashMap;
use std::os::fd::RawFd;
use std::path::PathBuf;
use std::sync::Arc;

use crossbeam_channel::Receiver;
use ttrpc::proto::{Codec, MESSAGE_HEADER_LENGTH, MESSAGE_LENGTH_MAX, MESSAGE_TYPE_REQUEST};
use ttrpc::{Code, MessageHeader};

use super::conns::{ConnLoop, Flow, Limits, Listen, Protocol};
use super::listener::{Interrupt, Serving};
use super::{socket, ServerError};
use crate::sys;

/// Connections the ttrpc listener serves at once unless configured: one per running shim
/// is the usual load.
pub const DEFAULT_MAX_CONNECTIONS: usize = 512;

type Methods = HashMap<String, Box<dyn ttrpc::MethodHandler + Send + Sync>>;

/// Where the ttrpc listener listens.
pub enum TtrpcBind {
    /// A socket file ctrd creates (and removes at exit).
    Path { path: PathBuf, uid: u32, gid: u32 },
    /// A listening socket systemd passed; never unlinked or chmodded by ctrd.
    Inherited {
        listener: std::os::unix::net::UnixListener,
        label: String,
    },
}

/// Binds and starts the ttrpc server with `methods`.
pub fn start(
    bind: TtrpcBind,
    methods: Methods,
    max_connections: usize,
) -> Result<(Box<dyn Serving>, Option<Interrupt>), ServerError> {
    let fail = |err: String| ServerError::Listener("ctrd-ttrpc", err);
    let (listener, path, label) = match bind {
        TtrpcBind::Path { path, uid, gid } => {
            socket::prepare(&path, uid, gid)?;
            let listener = mio::net::UnixListener::bind(&path)
                .map_err(|err| fail(format!("listen on {}: {err}", path.display())))?;
            socket::secure(&path, uid, gid)?;
            let label = path.display().to_string();
            (listener, Some(path), label)
        }
        TtrpcBind::Inherited { listener, label } => {
            listener
                .set_nonblocking(true)
                .map_err(|err| fail(format!("{label}: {err}")))?;
            (
                mio::net::UnixListener::from_std(listener),
                None,
                format!("the socket systemd passed ({label})"),
            )
        }
    };
    let limits = Limits {
        max_connections: if max_connections == 0 {
            DEFAULT_MAX_CONNECTIONS
        } else {
            max_connections
        },
        idle_timeout: None,
        max_input: MESSAGE_HEADER_LENGTH + MESSAGE_LENGTH_MAX,
    };
    let protocol = Ttrpc {
        methods,
        uid: sys::geteuid(),
    };
    let (conn_loop, interrupt) =
        ConnLoop::new("ctrd-ttrpc", Listen::Unix(listener), protocol, limits)
            .map_err(|err| fail(format!("poll: {err}")))?;
    log::info!("serving ttrpc on {label}");
    Ok((Box::new(TtrpcServing { conn_loop, path }), Some(interrupt)))
}

struct TtrpcServing {
    conn_loop: ConnLoop<Ttrpc>,
    /// The socket file ctrd created (none for a socket systemd passed).
    path: Option<PathBuf>,
}

impl Serving for TtrpcServing {
    fn run(self: Box<Self>, stop: Receiver<()>) -> Result<(), String> {
        let TtrpcServing { conn_loop, path } = *self;
        let result = Box::new(conn_loop).run(stop);
        if let Some(path) = &path {
            socket::remove(path);
        }
        result
    }
}

/// ttrpc's framing (a 10-byte header: length, stream id, type, flags; then a protobuf
/// `Request` or `Response`), served with the crate's generated handlers. Only peers running
/// as the daemon's own uid are accepted, like containerd's `UnixSocketRequireSameUser`.
/// Handlers run on the loop thread: the one ttrpc service, `Events/Forward`, only
/// publishes.
struct Ttrpc {
    methods: Methods,
    uid: u32,
}

/// One connection: its fd (handlers see it) and the rest of an oversized frame to skip.
struct Session {
    fd: RawFd,
    skip: usize,
}

impl Protocol for Ttrpc {
    type Session = Session;

    fn open(&mut self, fd: RawFd) -> Option<Session> {
        match sys::peer_uid(fd) {
            Ok(peer) if peer == self.uid => Some(Session { fd, skip: 0 }),
            Ok(peer) => {
                log::warn!("ttrpc: refused a peer running as uid {peer}");
                None
            }
            Err(err) => {
                log::warn!("ttrpc: cannot tell a peer's uid: {err}");
                None
            }
        }
    }

    fn on_input(
        &mut self,
        session: &mut Session,
        input: &mut Vec<u8>,
        output: &mut Vec<u8>,
    ) -> Flow {
        loop {
            if session.skip > 0 {
                let n = session.skip.min(input.len());
                input.drain(..n);
                session.skip -= n;
                if session.skip > 0 {
                    return Flow::Open;
                }
            }
            if input.len() < MESSAGE_HEADER_LENGTH {
                return Flow::Open;
            }
            let header = MessageHeader::from(&input[..MESSAGE_HEADER_LENGTH]);
            let length = header.length as usize;
            if length > MESSAGE_LENGTH_MAX {
                input.drain(..MESSAGE_HEADER_LENGTH);
                session.skip = length;
                let message = format!(
                    "message length {length} exceed maximum message size of {MESSAGE_LENGTH_MAX}"
                );
                respond(
                    output,
                    header.stream_id,
                    status(Code::RESOURCE_EXHAUSTED, message),
                );
                continue;
            }
            if input.len() < MESSAGE_HEADER_LENGTH + length {
                return Flow::Open;
            }
            let frame: Vec<u8> = input
                .drain(..MESSAGE_HEADER_LENGTH + length)
                .skip(MESSAGE_HEADER_LENGTH)
                .collect();
            if header.type_ == MESSAGE_TYPE_REQUEST {
                self.dispatch(session, header, &frame, output);
            }
        }
    }
}

impl Ttrpc {
    fn dispatch(
        &self,
        session: &Session,
        header: MessageHeader,
        frame: &[u8],
        output: &mut Vec<u8>,
    ) {
        let stream_id = header.stream_id;
        let request = match <ttrpc::Request as Codec>::decode(frame) {
            Ok(request) => request,
            Err(err) => {
                let message = format!("decoding the request: {err}");
                respond(output, stream_id, status(Code::INVALID_ARGUMENT, message));
                return;
            }
        };
        let path = format!("/{}/{}", request.service, request.method);
        let Some(handler) = self.methods.get(&path) else {
            let message = format!("{} not implemented", crate::identifiers::go_quote(&path));
            respond(output, stream_id, status(Code::UNIMPLEMENTED, message));
            return;
        };
        let (res_tx, res_rx) = std::sync::mpsc::channel();
        // Nothing cancels a call that runs to its end on this thread.
        let (_cancel_tx, cancel_rx) = crossbeam_channel::unbounded();
        let ctx = ttrpc::TtrpcContext {
            fd: session.fd,
            cancel_rx,
            mh: header,
            res_tx,
            metadata: ttrpc::context::from_pb(&request.metadata),
            timeout_nano: request.timeout_nano,
            conn_ctx: Arc::new(ttrpc::ConnectionContext::default()),
        };
        let result = handler.handler(ctx, request);
        let mut answered = false;
        for (mut header, body) in res_rx.try_iter() {
            header.length = u32::try_from(body.len()).unwrap_or(u32::MAX);
            output.extend_from_slice(&Vec::<u8>::from(header));
            output.extend_from_slice(&body);
            answered = true;
        }
        if let Err(err) = result {
            if !answered {
                // The generated glue fails this way when the payload does not decode.
                let message = match err {
                    ttrpc::Error::RpcStatus(status) => status.message().to_string(),
                    other => other.to_string(),
                };
                respond(output, stream_id, status(Code::INVALID_ARGUMENT, message));
            }
        }
    }
}

fn status(code: Code, message: String) -> ttrpc::Response {
    let mut response = ttrpc::Response::new();
    response.set_status(ttrpc::get_status(code, crate::errdefs::bounded(message)));
    response
}

/// Appends a response frame for `stream_id`.
fn respond(output: &mut Vec<u8>, stream_id: u32, response: ttrpc::Response) {
    let body = match <ttrpc::Response as Codec>::encode(&response) {
        Ok(body) => body,
        Err(err) => {
            log::warn!("ttrpc: cannot encode a response: {err}");
            return;
        }
    };
    let header = MessageHeader::new_response(stream_id, u32::try_from(body.len()).unwrap_or(0));
    output.extend_from_slice(&Vec::<u8>::from(header));
    output.extend_from_slice(&body);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    fn protocol(uid: u32) -> Ttrpc {
        Ttrpc {
            methods: HashMap::new(),
            uid,
        }
    }

    #[test]
    fn only_peers_with_the_daemons_uid_are_accepted() {
        let (ours, _theirs) = UnixStream::pair().expect("pair");
        let fd = ours.as_raw_fd();
        let me = sys::geteuid();
        assert!(protocol(me).open(fd).is_some());
        assert!(protocol(me + 1).open(fd).is_none());
    }

    fn frame(stream_id: u32, body: &[u8]) -> Vec<u8> {
        let header = MessageHeader::new_request(stream_id, body.len() as u32);
        let mut out = Vec::<u8>::from(header);
        out.extend_from_slice(body);
        out
    }

    fn responses(mut output: &[u8]) -> Vec<(u32, ttrpc::Response)> {
        let mut out = Vec::new();
        while !output.is_empty() {
            let header = MessageHeader::from(&output[..MESSAGE_HEADER_LENGTH]);
            let end = MESSAGE_HEADER_LENGTH + header.length as usize;
            let response = <ttrpc::Response as Codec>::decode(&output[MESSAGE_HEADER_LENGTH..end])
                .expect("decodes");
            out.push((header.stream_id, response));
            output = &output[end..];
        }
        out
    }

    #[test]
    fn bad_frames_get_a_status_and_the_connection_goes_on() {
        let mut ttrpc = protocol(0);
        let mut session = Session { fd: -1, skip: 0 };
        let mut input = frame(1, b"\xff\xff\xff garbage");
        let mut request = ttrpc::Request::new();
        request.service = "no.such.Service".into();
        request.method = "Call".into();
        input.extend(frame(
            3,
            &<ttrpc::Request as Codec>::encode(&request).expect("encodes"),
        ));
        // An oversized frame is answered and skipped, then the next one is read.
        let big = (MESSAGE_LENGTH_MAX + 1) as u32;
        input.extend(Vec::<u8>::from(MessageHeader::new_request(5, big)));
        let mut output = Vec::new();
        assert_eq!(
            ttrpc.on_input(&mut session, &mut input, &mut output),
            Flow::Open
        );
        assert!(input.is_empty());
        let mut rest = vec![0u8; MESSAGE_LENGTH_MAX + 1];
        rest.extend(frame(7, b"\xff"));
        assert_eq!(
            ttrpc.on_input(&mut session, &mut rest, &mut output),
            Flow::Open
        );
        let got = responses(&output);
        let codes: Vec<_> = got.iter().map(|(id, r)| (*id, r.status().code())).collect();
        assert_eq!(
            codes,
            [
                (1, Code::INVALID_ARGUMENT),
                (3, Code::UNIMPLEMENTED),
                (5, Code::RESOURCE_EXHAUSTED),
                (7, Code::INVALID_ARGUMENT),
            ]
        );
        assert_eq!(
            got[1].1.status().message(),
            "\"/no.such.Service/Call\" not implemented"
        );
    }
}
