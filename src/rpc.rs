//! The runtime under the generated gRPC glue: every call goes through one of [`unary`],
//! [`server_streaming`], [`client_streaming`] or [`duplex_streaming`], which build the
//! [`Call`], run the handler, send the answer and report to the [`Interceptor`].
//!
//! Threads: quick unary handlers run inline on grpcio's completion-queue thread (no
//! hand-off); the slow ones listed in [`ON_WORKERS`] run on the bounded worker pool
//! (`crate::workers`), so a long Diff never delays a `Version`; a [`Reply`] lets a call be
//! answered later from any thread. Streaming handlers get a `ctrd-stream` thread each,
//! which blocks on grpcio's futures.
//!
//! A streaming handler learns that its client left from a failed [`StreamSender::send`],
//! from [`StreamSender::is_closed`], or while waiting, from [`StreamSender::closed_signal`].
//!
//! [`StreamSender::in_memory`] and [`StreamReceiver::in_memory`] are in-process stand-ins
//! for grpcio's streams, so streaming handlers are tested without a socket.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use grpcio::{
    ClientStreamingSink, DuplexSink, RequestStream, RpcContext, RpcStatusCode, ServerStreamingSink,
    UnarySink, WriteFlags,
};

use crate::errdefs::Error;
use crate::scope::Scope;

pub type RpcResult<T> = Result<T, Error>;

/// The gRPC metadata key carrying the namespace.
pub const NAMESPACE_HEADER: &str = "containerd-namespace";

/// The gRPC metadata key naming the lease a client works under.
pub const LEASE_HEADER: &str = "containerd-lease";

/// The ttrpc metadata key carrying the namespace.
pub const TTRPC_NAMESPACE_HEADER: &str = "containerd-namespace-ttrpc";

/// The namespace a ttrpc caller sent, if any.
pub fn ttrpc_namespace(ctx: &ttrpc::TtrpcContext) -> Option<&str> {
    ctx.metadata
        .get(TTRPC_NAMESPACE_HEADER)
        .and_then(|values| values.first())
        .map(String::as_str)
        .filter(|ns| !ns.is_empty())
}

/// The four shapes of RPC (named as go-grpc-prometheus labels them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MethodKind {
    Unary,
    ClientStream,
    ServerStream,
    BidiStream,
}

/// Observes every call (metrics).
pub trait Interceptor: Send + Sync {
    fn started(&self, call: &Call, kind: MethodKind);
    fn msg_received(&self, call: &Call, kind: MethodKind);
    fn msg_sent(&self, call: &Call, kind: MethodKind);
    fn handled(&self, call: &Call, kind: MethodKind, code: RpcStatusCode, elapsed: Duration);
}

static INTERCEPTOR: OnceLock<Arc<dyn Interceptor>> = OnceLock::new();

/// Installs the process-wide interceptor; only the first call takes effect.
pub fn set_interceptor(interceptor: Arc<dyn Interceptor>) {
    let _ = INTERCEPTOR.set(interceptor);
}

fn interceptor() -> Option<&'static Arc<dyn Interceptor>> {
    INTERCEPTOR.get()
}

/// One incoming call as handlers see it.
pub struct Call {
    service: &'static str,
    method: &'static str,
    kind: MethodKind,
    headers: Vec<(String, String)>,
    peer: String,
    cancelled: Arc<AtomicBool>,
    started: Instant,
    /// Headers a unary handler adds to its answer.
    reply_headers: parking_lot::Mutex<Vec<(String, String)>>,
}

impl Call {
    fn new(
        ctx: &RpcContext,
        service: &'static str,
        method: &'static str,
        kind: MethodKind,
    ) -> Call {
        let headers = ctx
            .request_headers()
            .iter()
            .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v).into_owned()))
            .collect();
        let call = Call {
            service,
            method,
            kind,
            headers,
            peer: ctx.peer(),
            cancelled: Arc::new(AtomicBool::new(false)),
            started: Instant::now(),
            reply_headers: Default::default(),
        };
        log::debug!(
            "rpc /{service}/{method} namespace={:?} ttrpc-namespace={:?}",
            call.namespace().unwrap_or(""),
            call.header(TTRPC_NAMESPACE_HEADER).unwrap_or("")
        );
        if let Some(i) = interceptor() {
            i.started(&call, kind);
        }
        call
    }

    /// A call with the given headers, for testing handlers without sockets.
    pub fn for_test(service: &'static str, method: &'static str, headers: &[(&str, &str)]) -> Call {
        Call {
            service,
            method,
            kind: MethodKind::Unary,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            peer: "test".into(),
            cancelled: Arc::new(AtomicBool::new(false)),
            started: Instant::now(),
            reply_headers: Default::default(),
        }
    }

    /// Adds a header to a unary call's answer (ASCII key and value).
    pub fn add_reply_header(&self, key: &str, value: &str) {
        self.reply_headers
            .lock()
            .push((key.to_string(), value.to_string()));
    }

    /// The headers added with [`Call::add_reply_header`].
    pub fn reply_headers(&self) -> Vec<(String, String)> {
        self.reply_headers.lock().clone()
    }

    /// The full service name, e.g. `containerd.services.version.v1.Version`.
    pub fn service(&self) -> &str {
        self.service
    }

    pub fn method(&self) -> &str {
        self.method
    }

    pub fn peer(&self) -> &str {
        &self.peer
    }

    /// The first value of a request header.
    pub fn header(&self, key: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }

    /// The namespace the client sent, if any.
    pub fn namespace(&self) -> Option<&str> {
        self.header(NAMESPACE_HEADER).filter(|ns| !ns.is_empty())
    }

    /// The lease the client works under, if it named one.
    pub fn lease(&self) -> Option<&str> {
        self.header(LEASE_HEADER).filter(|l| !l.is_empty())
    }

    /// The namespace, required and valid.
    pub fn namespace_required(&self) -> RpcResult<&str> {
        let ns = self
            .namespace()
            .ok_or_else(|| Error::failed_precondition("namespace is required"))?;
        crate::identifiers::validate(ns).map_err(|err| err.context("namespace validation"))?;
        Ok(ns)
    }

    /// The call's scope: its namespace (required and valid) and its lease, if any.
    pub fn scope(&self) -> RpcResult<Scope> {
        Ok(Scope::new(self.namespace_required()?).with_lease(self.lease()))
    }

    /// True once a streaming call is known to be over early: a send or receive failed, or
    /// the stream's `is_closed`/`closed_signal` saw the client leave. Always false for unary.
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
    }

    fn finish(&self, code: RpcStatusCode) {
        if let Some(i) = interceptor() {
            i.handled(self, self.kind, code, self.started.elapsed());
        }
    }

    fn received(&self) {
        if let Some(i) = interceptor() {
            i.msg_received(self, self.kind);
        }
    }

    fn sent(&self) {
        if let Some(i) = interceptor() {
            i.msg_sent(self, self.kind);
        }
    }
}

/// The default answer of a method a service does not implement.
pub fn unimplemented(method: &str) -> Error {
    Error::unimplemented(format!("method {method} not implemented"))
}

enum OutSink<T> {
    Server(ServerStreamingSink<T>),
    Duplex(DuplexSink<T>),
    Memory {
        tx: crossbeam_channel::Sender<T>,
        hangup: crossbeam_channel::Receiver<()>,
    },
}

/// The client end of an in-memory stream ([`StreamSender::in_memory`]): what the handler
/// sent, in order. Dropping it means the client went away.
pub struct MemoryClient<T> {
    pub messages: crossbeam_channel::Receiver<T>,
    _hangup: crossbeam_channel::Sender<()>,
}

/// Sends the messages of a streaming response; blocks until grpcio took each one.
///
/// Once grpcio reported the call over (the client cancelled or went away), the sink is never
/// polled again (grpcio panics on a second poll of its finished call): `send` fails at once
/// and the runtime does not try to close it.
pub struct StreamSender<T> {
    sink: OutSink<T>,
    call: Arc<Call>,
    closed: bool,
}

impl<T> StreamSender<T> {
    fn new(sink: OutSink<T>, call: Arc<Call>) -> Self {
        StreamSender {
            sink,
            call,
            closed: false,
        }
    }

    /// A sender whose messages go to the returned client end in this process, for testing
    /// streaming handlers without a socket.
    pub fn in_memory(call: Arc<Call>) -> (StreamSender<T>, MemoryClient<T>) {
        let (tx, messages) = crossbeam_channel::unbounded();
        let (hangup_tx, hangup) = crossbeam_channel::bounded(0);
        let sender = StreamSender::new(OutSink::Memory { tx, hangup }, call);
        let client = MemoryClient {
            messages,
            _hangup: hangup_tx,
        };
        (sender, client)
    }

    pub fn send(&mut self, msg: T) -> RpcResult<()> {
        if self.closed {
            return Err(client_gone());
        }
        let item = (msg, WriteFlags::default());
        let result = match &mut self.sink {
            OutSink::Server(sink) => futures_executor::block_on(sink.send(item)),
            OutSink::Duplex(sink) => futures_executor::block_on(sink.send(item)),
            OutSink::Memory { tx, .. } => tx.send(item.0).map_err(|_| grpcio::Error::RemoteStopped),
        };
        match result {
            Ok(()) => {
                self.call.sent();
                Ok(())
            }
            Err(err) => {
                log::debug!(
                    "/{}/{}: send failed: {err}",
                    self.call.service,
                    self.call.method
                );
                self.mark_closed();
                Err(client_gone())
            }
        }
    }

    /// Sends `items` in messages of at most `size` each, built by `wrap` (containerd's
    /// List calls stream their results in batches).
    pub fn send_batches<I>(
        &mut self,
        items: impl IntoIterator<Item = I>,
        size: usize,
        wrap: impl Fn(Vec<I>) -> T,
    ) -> RpcResult<()> {
        let mut items = items.into_iter().peekable();
        while items.peek().is_some() {
            self.send(wrap(items.by_ref().take(size).collect()))?;
        }
        Ok(())
    }

    /// True once the client cancelled or went away (checked without blocking). Disarms a
    /// signal from an earlier [`closed_signal`](StreamSender::closed_signal).
    pub fn is_closed(&mut self) -> bool {
        let mut cx = std::task::Context::from_waker(futures_util::task::noop_waker_ref());
        self.poll_closed(&mut cx)
    }

    /// A channel that receives `()` once the client cancels or goes away, so a handler can
    /// wait for its own events and for the client at once (`crossbeam_channel::select!`).
    /// The signal is armed for the next wait only: call this again after every [`send`].
    ///
    /// [`send`]: StreamSender::send
    pub fn closed_signal(&mut self) -> crossbeam_channel::Receiver<()> {
        if let OutSink::Memory { hangup, .. } = &self.sink {
            // Becomes ready (disconnected) when the client end is dropped.
            return hangup.clone();
        }
        let (tx, rx) = crossbeam_channel::bounded(1);
        let waker = std::task::Waker::from(Arc::new(SignalWaker {
            signal: tx.clone(),
            cancelled: self.call.cancelled.clone(),
        }));
        let mut cx = std::task::Context::from_waker(&waker);
        if self.poll_closed(&mut cx) {
            let _ = tx.try_send(());
        }
        rx
    }

    /// Polls grpcio's end-of-call notification; registers `cx`'s waker while the call lives.
    fn poll_closed(&mut self, cx: &mut std::task::Context<'_>) -> bool {
        if self.closed {
            return true;
        }
        let ready = match &mut self.sink {
            OutSink::Server(sink) => sink.poll_ready_unpin(cx),
            OutSink::Duplex(sink) => sink.poll_ready_unpin(cx),
            OutSink::Memory { hangup, .. } => {
                let gone = matches!(
                    hangup.try_recv(),
                    Err(crossbeam_channel::TryRecvError::Disconnected)
                );
                if gone {
                    self.mark_closed();
                }
                return self.closed;
            }
        };
        if matches!(ready, std::task::Poll::Ready(Err(_))) {
            self.mark_closed();
        }
        self.closed
    }

    fn mark_closed(&mut self) {
        self.closed = true;
        self.call.cancelled.store(true, Ordering::Relaxed);
    }
}

/// What `send` returns once the call is over.
fn client_gone() -> Error {
    Error::new(crate::errdefs::Class::Canceled, "context canceled")
}

/// Wakes a handler waiting in `select!` by posting to its channel. grpcio wakes it only
/// when the call ended, so it also marks the call cancelled.
struct SignalWaker {
    signal: crossbeam_channel::Sender<()>,
    cancelled: Arc<AtomicBool>,
}

impl std::task::Wake for SignalWaker {
    fn wake(self: Arc<Self>) {
        self.cancelled.store(true, Ordering::Relaxed);
        let _ = self.signal.try_send(());
    }
}

/// The messages of a streaming request; `next` blocks until one arrives.
pub struct StreamReceiver<T> {
    source: InSource<T>,
    call: Arc<Call>,
}

enum InSource<T> {
    Grpc(RequestStream<T>),
    Memory(crossbeam_channel::Receiver<RpcResult<T>>),
}

impl<T> StreamReceiver<T> {
    fn grpc(stream: RequestStream<T>, call: Arc<Call>) -> Self {
        StreamReceiver {
            source: InSource::Grpc(stream),
            call,
        }
    }

    /// A receiver fed in this process through the returned sender, for testing streaming
    /// handlers without a socket: an `Err` is a failed receive, dropping the sender ends the
    /// stream.
    pub fn in_memory(
        call: Arc<Call>,
    ) -> (StreamReceiver<T>, crossbeam_channel::Sender<RpcResult<T>>) {
        let (tx, rx) = crossbeam_channel::unbounded();
        let receiver = StreamReceiver {
            source: InSource::Memory(rx),
            call,
        };
        (receiver, tx)
    }
}

impl<T> StreamReceiver<T> {
    /// The next message if it has arrived already, without blocking: None when it has not
    /// (a gRPC receive is under way then), else what [`next`](Iterator::next) would return.
    pub fn try_next(&mut self) -> Option<Option<RpcResult<T>>> {
        let item = match &mut self.source {
            InSource::Grpc(stream) => {
                let mut cx = std::task::Context::from_waker(futures_util::task::noop_waker_ref());
                match stream.poll_next_unpin(&mut cx) {
                    std::task::Poll::Pending => return None,
                    std::task::Poll::Ready(item) => item.map(|item| item.map_err(receive_failed)),
                }
            }
            InSource::Memory(rx) => match rx.try_recv() {
                Ok(item) => Some(item),
                Err(crossbeam_channel::TryRecvError::Empty) => return None,
                Err(crossbeam_channel::TryRecvError::Disconnected) => None,
            },
        };
        Some(item.map(|item| self.note(item)))
    }

    /// Counts a received message, or marks the call cancelled after a failed receive.
    fn note(&self, item: RpcResult<T>) -> RpcResult<T> {
        match &item {
            Ok(_) => self.call.received(),
            Err(_) => self.call.cancelled.store(true, Ordering::Relaxed),
        }
        item
    }
}

fn receive_failed(err: grpcio::Error) -> Error {
    Error::new(
        crate::errdefs::Class::Canceled,
        format!("receive failed: {err}"),
    )
}

impl<T> Iterator for StreamReceiver<T> {
    type Item = RpcResult<T>;

    fn next(&mut self) -> Option<RpcResult<T>> {
        let item = match &mut self.source {
            InSource::Grpc(stream) => {
                futures_executor::block_on(stream.next())?.map_err(receive_failed)
            }
            InSource::Memory(rx) => rx.recv().ok()?,
        };
        Some(self.note(item))
    }
}

fn code_of<T>(result: &RpcResult<T>) -> RpcStatusCode {
    match result {
        Ok(_) => RpcStatusCode::OK,
        Err(err) => err.grpc_code(),
    }
}

/// The methods whose handlers run on the worker pool (`crate::workers`) instead of the
/// completion-queue thread: those that may take long. `"*"` stands for every method of the
/// service. Everything else (Version, Health, Introspection, Get/List/Status/Info…) is
/// quick and runs inline, without a hand-off.
///
/// To move a call here, add it to this list; the handler itself does not change. A call
/// that waits for an outside event rather than working should also not hold a worker
/// while it waits: see [`Reply`].
pub const ON_WORKERS: &[(&str, &str)] = &[
    ("containerd.services.diff.v1.Diff", "*"),
    ("containerd.services.snapshots.v1.Snapshots", "Prepare"),
    ("containerd.services.snapshots.v1.Snapshots", "View"),
    ("containerd.services.snapshots.v1.Snapshots", "Commit"),
    ("containerd.services.snapshots.v1.Snapshots", "Remove"),
    ("containerd.services.snapshots.v1.Snapshots", "Usage"),
    ("containerd.services.snapshots.v1.Snapshots", "Cleanup"),
    // Slow only with `sync` (a collection), but telling needs the request.
    ("containerd.services.leases.v1.Leases", "Delete"),
    ("containerd.services.namespaces.v1.Namespaces", "Delete"),
    ("containerd.services.content.v1.Content", "Delete"),
    ("containerd.services.tasks.v1.Tasks", "*"),
];

/// Whether `/service/method` runs on the worker pool (see [`ON_WORKERS`]).
pub fn runs_on_workers(service: &str, method: &str) -> bool {
    ON_WORKERS
        .iter()
        .any(|(s, m)| *s == service && (*m == "*" || *m == method))
}

/// Runs a unary handler, inline or on the worker pool (see [`ON_WORKERS`]), and answers.
pub fn unary<Req, Resp>(
    ctx: RpcContext,
    req: Req,
    sink: UnarySink<Resp>,
    service: &'static str,
    method: &'static str,
    f: impl FnOnce(&Call, Req) -> RpcResult<Resp> + Send + 'static,
) where
    Req: Send + 'static,
    Resp: Send + 'static,
{
    let call = Call::new(&ctx, service, method, MethodKind::Unary);
    call.received();
    if runs_on_workers(service, method) {
        crate::workers::submit(Box::new(move |admitted| {
            let result = match admitted {
                Ok(()) => f(&call, req),
                Err(busy) => Err(Error::new(
                    crate::errdefs::Class::Unavailable,
                    busy.to_string(),
                )),
            };
            Reply::new(call, sink).finish(result);
        }));
        return;
    }
    let result = f(&call, req);
    let code = code_of(&result);
    let mut sink = sink;
    let extra = call.reply_headers();
    if !extra.is_empty() {
        let mut meta = grpcio::MetadataBuilder::with_capacity(extra.len());
        for (key, value) in &extra {
            if let Err(err) = meta.add_str(key, value) {
                log::debug!("reply header {key}: {err}");
            }
        }
        sink.set_headers(meta.build());
    }
    match result {
        Ok(resp) => {
            call.sent();
            let done = sink.success(resp);
            ctx.spawn(async move {
                let _ = done.await;
            });
        }
        Err(err) => {
            log_failure(&call, &err);
            let done = sink.fail(err.to_grpc_status());
            ctx.spawn(async move {
                let _ = done.await;
            });
        }
    }
    call.finish(code);
}

/// Runs a unary handler that answers through a [`Reply`], now or later, from any thread.
/// `f` itself runs like any unary handler (inline, or on the pool per [`ON_WORKERS`]) and
/// should return quickly: keep the reply where the awaited event will find it.
pub fn unary_deferred<Req, Resp>(
    ctx: RpcContext,
    req: Req,
    sink: UnarySink<Resp>,
    service: &'static str,
    method: &'static str,
    f: impl FnOnce(Req, Reply<Resp>) + Send + 'static,
) where
    Req: Send + 'static,
    Resp: Send + 'static,
{
    let call = Call::new(&ctx, service, method, MethodKind::Unary);
    call.received();
    if runs_on_workers(service, method) {
        crate::workers::submit(Box::new(move |admitted| {
            let reply = Reply::new(call, sink);
            match admitted {
                Ok(()) => f(req, reply),
                Err(busy) => reply.finish(Err(Error::new(
                    crate::errdefs::Class::Unavailable,
                    busy.to_string(),
                ))),
            }
        }));
    } else {
        f(req, Reply::new(call, sink));
    }
}

/// The answer to one unary call, to be given once from any thread: a call such as
/// `Tasks/Wait` keeps it until the process exits, without holding a thread meanwhile.
/// Dropped without [`finish`](Reply::finish), it answers `Internal` so the client is never
/// left waiting.
pub struct Reply<Resp> {
    call: Call,
    sink: Option<UnarySink<Resp>>,
}

impl<Resp> Reply<Resp> {
    fn new(call: Call, sink: UnarySink<Resp>) -> Self {
        Reply {
            call,
            sink: Some(sink),
        }
    }

    /// The call being answered (headers, namespace).
    pub fn call(&self) -> &Call {
        &self.call
    }

    /// Sends the answer and reports the call handled. Blocks until gRPC took it (one
    /// socket write; not the client's reading).
    pub fn finish(mut self, result: RpcResult<Resp>) {
        self.answer(result);
    }

    fn answer(&mut self, result: RpcResult<Resp>) {
        let Some(sink) = self.sink.take() else {
            return;
        };
        let code = code_of(&result);
        let done = match result {
            Ok(resp) => {
                self.call.sent();
                sink.success(resp)
            }
            Err(err) => {
                log_failure(&self.call, &err);
                sink.fail(err.to_grpc_status())
            }
        };
        if futures_executor::block_on(done).is_err() {
            self.call.cancelled.store(true, Ordering::Relaxed);
        }
        self.call.finish(code);
    }
}

impl<Resp> Drop for Reply<Resp> {
    fn drop(&mut self) {
        if self.sink.is_some() {
            self.answer(Err(Error::new(
                crate::errdefs::Class::Internal,
                "the call ended without an answer",
            )));
        }
    }
}

fn log_failure(call: &Call, err: &Error) {
    log::debug!(
        "/{}/{} failed: {} ({:?})",
        call.service,
        call.method,
        err.message(),
        err.class()
    );
}

fn spawn_stream(call: &Call, body: impl FnOnce() + Send + 'static) {
    if let Err(err) = STREAM_WORKERS.run(Box::new(body)) {
        log::error!(
            "/{}/{}: cannot start a stream thread: {err}",
            call.service,
            call.method
        );
    }
}

type Job = Box<dyn FnOnce() + Send + 'static>;

/// How long an idle stream thread waits for another call before it exits.
const WORKER_KEEP_ALIVE: Duration = Duration::from_secs(30);

/// At most this many idle stream threads are kept.
const MAX_IDLE_WORKERS: usize = 4;

/// Threads for streaming calls. Every call gets a thread at once (a stream such as an
/// events subscription may last for the daemon's life, so no call ever waits for another);
/// threads that finish wait a while for the next call instead of exiting, so short streams
/// (`ctr content get` issues one Read per 32 KiB) do not pay for a thread each.
struct WorkerPool {
    tx: crossbeam_channel::Sender<Job>,
    rx: crossbeam_channel::Receiver<Job>,
    /// Workers waiting for a job and not yet promised one.
    idle: AtomicUsize,
}

static STREAM_WORKERS: std::sync::LazyLock<Arc<WorkerPool>> = std::sync::LazyLock::new(|| {
    let (tx, rx) = crossbeam_channel::unbounded();
    Arc::new(WorkerPool {
        tx,
        rx,
        idle: AtomicUsize::new(0),
    })
});

impl WorkerPool {
    fn run(self: &Arc<Self>, job: Job) -> std::io::Result<()> {
        loop {
            let idle = self.idle.load(Ordering::Acquire);
            if idle == 0 {
                let pool = self.clone();
                return std::thread::Builder::new()
                    .name("ctrd-stream".into())
                    .spawn(move || pool.work(job))
                    .map(drop);
            }
            // Promise the job to one idle worker; the channel hands it to any of them.
            if self
                .idle
                .compare_exchange(idle, idle - 1, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                self.tx.send(job).expect("the pool holds its own receiver");
                return Ok(());
            }
        }
    }

    fn work(&self, first: Job) {
        let mut job = first;
        loop {
            job();
            if self.idle.fetch_add(1, Ordering::AcqRel) >= MAX_IDLE_WORKERS {
                if self.retire() {
                    return;
                }
            } else {
                match self.rx.recv_timeout(WORKER_KEEP_ALIVE) {
                    Ok(next) => {
                        job = next;
                        continue;
                    }
                    Err(_) => {
                        if self.retire() {
                            return;
                        }
                    }
                }
            }
            // A job was promised to this worker while it tried to leave: take it.
            job = self.rx.recv().expect("the pool holds its own sender");
        }
    }

    /// Withdraws this worker from the idle count; false when a job was promised to it.
    fn retire(&self) -> bool {
        loop {
            let idle = self.idle.load(Ordering::Acquire);
            if idle == 0 {
                return false;
            }
            if self
                .idle
                .compare_exchange(idle, idle - 1, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                return true;
            }
        }
    }
}

/// Runs a server-streaming handler on its own thread.
pub fn server_streaming<Req, Resp>(
    ctx: RpcContext,
    req: Req,
    sink: ServerStreamingSink<Resp>,
    service: &'static str,
    method: &'static str,
    f: impl FnOnce(&Call, Req, &mut StreamSender<Resp>) -> RpcResult<()> + Send + 'static,
) where
    Req: Send + 'static,
    Resp: Send + 'static,
{
    let call = Arc::new(Call::new(&ctx, service, method, MethodKind::ServerStream));
    call.received();
    spawn_stream(&call.clone(), move || {
        let mut out = StreamSender::new(OutSink::Server(sink), call.clone());
        let result = f(&call, req, &mut out);
        let code = code_of(&result);
        finish_stream(&call, out, result);
        call.finish(code);
    });
}

/// Runs a server-streaming handler that mostly waits (an events subscription) as a future
/// on the one waiting thread (`crate::waiting::spawn`; the main thread) instead of a thread
/// of its own. The future gets the call, the request and a [`WaitingSender`], and gives the
/// sender back with its result; it must never block.
pub fn server_streaming_waiting<Req, Resp, Fut>(
    ctx: RpcContext,
    req: Req,
    sink: ServerStreamingSink<Resp>,
    service: &'static str,
    method: &'static str,
    f: impl FnOnce(Arc<Call>, Req, WaitingSender<Resp>) -> Fut,
) where
    Resp: Send + 'static,
    Fut: std::future::Future<Output = (WaitingSender<Resp>, RpcResult<()>)> + Send + 'static,
{
    let call = Arc::new(Call::new(&ctx, service, method, MethodKind::ServerStream));
    call.received();
    let out = WaitingSender {
        sink: WaitingSink::Grpc(Box::new(sink)),
        call: call.clone(),
        closed: false,
    };
    let running = f(call.clone(), req, out);
    crate::waiting::spawn(async move {
        let (out, result) = running.await;
        let code = code_of(&result);
        if let Err(err) = &result {
            log_failure(&call, err);
        }
        let WaitingSink::Grpc(mut sink) = out.sink else {
            call.finish(code);
            return;
        };
        let done = match result {
            Ok(()) if !out.closed => sink.close().await,
            // A finished call must not be polled again: `fail` is the one finisher that checks.
            Ok(()) => (*sink).fail(client_gone().to_grpc_status()).await,
            Err(err) => (*sink).fail(err.to_grpc_status()).await,
        };
        if done.is_err() {
            call.cancelled.store(true, Ordering::Relaxed);
        }
        call.finish(code);
    });
}

/// The sending half of a [`server_streaming_waiting`] call.
pub struct WaitingSender<T> {
    sink: WaitingSink<T>,
    call: Arc<Call>,
    closed: bool,
}

enum WaitingSink<T> {
    Grpc(Box<ServerStreamingSink<T>>),
    Memory {
        tx: crossbeam_channel::Sender<T>,
        gone: Arc<Hangup>,
    },
}

/// Whether an in-memory client left, and the task to wake when it does.
#[derive(Default)]
struct Hangup {
    gone: AtomicBool,
    waker: parking_lot::Mutex<Option<std::task::Waker>>,
}

/// The client end of an in-memory waiting stream ([`WaitingSender::in_memory`]): what the
/// handler sent, in order. Dropping it means the client went away (and wakes the handler).
pub struct WaitingClient<T> {
    pub messages: crossbeam_channel::Receiver<T>,
    gone: Arc<Hangup>,
}

impl<T> Drop for WaitingClient<T> {
    fn drop(&mut self) {
        self.gone.gone.store(true, Ordering::Release);
        if let Some(waker) = self.gone.waker.lock().take() {
            waker.wake();
        }
    }
}

impl<T> WaitingSender<T> {
    /// A sender whose messages go to the returned client end in this process, for testing
    /// waiting handlers without a socket.
    pub fn in_memory(call: Arc<Call>) -> (WaitingSender<T>, WaitingClient<T>) {
        let (tx, messages) = crossbeam_channel::unbounded();
        let gone = Arc::new(Hangup::default());
        let sender = WaitingSender {
            sink: WaitingSink::Memory {
                tx,
                gone: gone.clone(),
            },
            call,
            closed: false,
        };
        (sender, WaitingClient { messages, gone })
    }

    /// Sends one message, waiting (without blocking) until gRPC takes it.
    pub async fn send(&mut self, msg: T) -> RpcResult<()> {
        if self.closed {
            return Err(client_gone());
        }
        let sent = match &mut self.sink {
            WaitingSink::Grpc(sink) => sink.send((msg, WriteFlags::default())).await,
            WaitingSink::Memory { tx, .. } => {
                tx.send(msg).map_err(|_| grpcio::Error::RemoteStopped)
            }
        };
        match sent {
            Ok(()) => {
                self.call.sent();
                Ok(())
            }
            Err(err) => {
                log::debug!(
                    "/{}/{}: send failed: {err}",
                    self.call.service,
                    self.call.method
                );
                self.closed = true;
                self.call.cancelled.store(true, Ordering::Relaxed);
                Err(client_gone())
            }
        }
    }

    /// True once the client cancelled or went away; otherwise registers `cx` to be woken
    /// when it does.
    pub fn poll_closed(&mut self, cx: &mut std::task::Context<'_>) -> bool {
        if self.closed {
            return true;
        }
        let gone = match &mut self.sink {
            WaitingSink::Grpc(sink) => {
                matches!(sink.poll_ready_unpin(cx), std::task::Poll::Ready(Err(_)))
            }
            WaitingSink::Memory { gone, .. } => {
                *gone.waker.lock() = Some(cx.waker().clone());
                gone.gone.load(Ordering::Acquire)
            }
        };
        if gone {
            self.closed = true;
            self.call.cancelled.store(true, Ordering::Relaxed);
        }
        self.closed
    }
}

/// Runs a client-streaming handler on its own thread.
pub fn client_streaming<Req, Resp>(
    ctx: RpcContext,
    stream: RequestStream<Req>,
    sink: ClientStreamingSink<Resp>,
    service: &'static str,
    method: &'static str,
    f: impl FnOnce(&Call, &mut StreamReceiver<Req>) -> RpcResult<Resp> + Send + 'static,
) where
    Req: Send + 'static,
    Resp: Send + 'static,
{
    let call = Arc::new(Call::new(&ctx, service, method, MethodKind::ClientStream));
    spawn_stream(&call.clone(), move || {
        let mut input = StreamReceiver::grpc(stream, call.clone());
        let result = f(&call, &mut input);
        let code = code_of(&result);
        let done = match result {
            Ok(resp) => {
                call.sent();
                futures_executor::block_on(sink.success(resp))
            }
            Err(err) => {
                log_failure(&call, &err);
                futures_executor::block_on(sink.fail(err.to_grpc_status()))
            }
        };
        if done.is_err() {
            call.cancelled.store(true, Ordering::Relaxed);
        }
        call.finish(code);
    });
}

/// Runs a bidirectional-streaming handler on its own thread.
pub fn duplex_streaming<Req, Resp>(
    ctx: RpcContext,
    stream: RequestStream<Req>,
    sink: DuplexSink<Resp>,
    service: &'static str,
    method: &'static str,
    f: impl FnOnce(&Call, &mut StreamReceiver<Req>, &mut StreamSender<Resp>) -> RpcResult<()>
        + Send
        + 'static,
) where
    Req: Send + 'static,
    Resp: Send + 'static,
{
    let call = Arc::new(Call::new(&ctx, service, method, MethodKind::BidiStream));
    spawn_stream(&call.clone(), move || {
        let mut input = StreamReceiver::grpc(stream, call.clone());
        let mut out = StreamSender::new(OutSink::Duplex(sink), call.clone());
        let result = f(&call, &mut input, &mut out);
        let code = code_of(&result);
        finish_stream(&call, out, result);
        // Only now: grpcio cancels the call when an unfinished request stream is dropped,
        // and the handler may return without reading to the end.
        drop(input);
        call.finish(code);
    });
}

fn finish_stream<T>(call: &Call, out: StreamSender<T>, result: RpcResult<()>) {
    if let Err(err) = &result {
        log_failure(call, err);
    }
    let status = match result {
        // A finished call must not be polled again: `fail` is the one finisher that checks.
        Ok(()) if out.closed => client_gone().to_grpc_status(),
        Ok(()) => {
            let done = match out.sink {
                OutSink::Server(mut sink) => futures_executor::block_on(sink.close()),
                OutSink::Duplex(mut sink) => futures_executor::block_on(sink.close()),
                OutSink::Memory { .. } => Ok(()),
            };
            if done.is_err() {
                call.cancelled.store(true, Ordering::Relaxed);
            }
            return;
        }
        Err(err) => err.to_grpc_status(),
    };
    let done = match out.sink {
        OutSink::Server(sink) => futures_executor::block_on(sink.fail(status)),
        OutSink::Duplex(sink) => futures_executor::block_on(sink.fail(status)),
        OutSink::Memory { .. } => Ok(()),
    };
    if done.is_err() {
        call.cancelled.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn stream_workers_are_reused_and_never_make_a_call_wait() {
        let (tx, rx) = crossbeam_channel::unbounded();
        let pool = Arc::new(WorkerPool {
            tx,
            rx,
            idle: AtomicUsize::new(0),
        });
        // A call that lasts until told to stop does not hold up the next ones.
        let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
        pool.run(Box::new(move || {
            let _ = stop_rx.recv();
        }))
        .unwrap();
        let (done_tx, done_rx) = crossbeam_channel::unbounded();
        let mut threads = std::collections::HashSet::new();
        for _ in 0..50 {
            let done = done_tx.clone();
            pool.run(Box::new(move || {
                done.send(std::thread::current().id()).unwrap();
            }))
            .unwrap();
            // One at a time, so a finished worker is there to take the next job.
            threads.insert(
                done_rx
                    .recv_timeout(Duration::from_secs(10))
                    .expect("short call ran while the long one holds its thread"),
            );
            let deadline = Instant::now() + Duration::from_secs(10);
            while pool.idle.load(Ordering::Acquire) == 0 {
                assert!(Instant::now() < deadline, "worker never went idle");
                std::thread::yield_now();
            }
        }
        stop_tx.send(()).unwrap();
        assert_eq!(threads.len(), 1, "sequential short calls share one thread");
    }

    use super::*;

    #[test]
    fn in_memory_streams_deliver_in_order_and_notice_a_client_that_left() {
        let call = Arc::new(Call::for_test(
            "s",
            "m",
            &[(NAMESPACE_HEADER, "default"), (LEASE_HEADER, "l1")],
        ));
        let scope = call.scope().expect("scope");
        assert_eq!((scope.namespace(), scope.lease()), ("default", Some("l1")));

        let (mut input, tx) = StreamReceiver::<u32>::in_memory(call.clone());
        tx.send(Ok(1)).expect("send");
        tx.send(Ok(2)).expect("send");
        drop(tx);
        let got: Vec<u32> = input.by_ref().map(|m| m.expect("message")).collect();
        assert_eq!(got, [1, 2], "dropping the sender ends the stream");

        let (mut out, client) = StreamSender::<u32>::in_memory(call.clone());
        out.send(7).expect("send");
        assert!(!out.is_closed());
        let closed = out.closed_signal();
        assert!(
            closed.try_recv().is_err(),
            "not signalled while the client is there"
        );
        assert_eq!(client.messages.try_recv().ok(), Some(7));
        drop(client);
        closed
            .recv_timeout(Duration::from_secs(10))
            .expect_err("the signal disconnects once the client is gone");
        assert!(out.is_closed());
        let err = out.send(8).expect_err("client gone");
        assert_eq!(err.class(), crate::errdefs::Class::Canceled);
        assert!(call.is_cancelled());
    }

    #[test]
    fn namespace_is_required_and_validated() {
        let none = Call::for_test("s", "m", &[]);
        let err = none.namespace_required().expect_err("missing");
        assert_eq!(err.class(), crate::errdefs::Class::FailedPrecondition);
        assert_eq!(err.message(), "namespace is required");

        let bad = Call::for_test("s", "m", &[(NAMESPACE_HEADER, "-bad-")]);
        let err = bad.namespace_required().expect_err("invalid");
        assert_eq!(err.class(), crate::errdefs::Class::InvalidArgument);
        assert!(err
            .message()
            .starts_with("namespace validation: identifier \"-bad-\""));

        let good = Call::for_test("s", "m", &[(NAMESPACE_HEADER, "default")]);
        assert_eq!(good.namespace_required().expect("ok"), "default");
    }
}
