//! Round trips through a real grpcio server on a unix socket: the generated glue, the
//! runtime in `crate::rpc` and the generated clients together, for all four call shapes.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use futures_executor::{block_on, block_on_stream};
use futures_util::{SinkExt, StreamExt};
use grpcio::{
    CallOption, ChannelBuilder, EnvBuilder, MetadataBuilder, RpcStatusCode, ServerBuilder,
    ServerCredentials, WriteFlags,
};

use super::content::{
    create_content, Content, ContentClient, ReadContentResponse, WriteAction, WriteContentRequest,
    WriteContentResponse,
};
use super::events::{create_events, Events, EventsClient, SubscribeRequest};
use super::health::{
    create_health, Health, HealthCheckRequest, HealthCheckResponse, HealthClient, ServingStatus,
};
use super::namespaces::{
    create_namespaces, CreateNamespaceRequest, CreateNamespaceResponse, GetNamespaceRequest,
    GetNamespaceResponse, ListNamespacesRequest, Namespace, Namespaces, NamespacesClient,
};
use super::types::Envelope;
use super::version::{create_version, Version, VersionClient, VersionResponse};
use super::Empty;
use crate::errdefs::{Class, Error};
use crate::rpc::{Call, Interceptor, MethodKind, RpcResult, StreamReceiver, StreamSender};

/// Upper bound for waiting on another thread; never reached when things work.
const PATIENCE: Duration = Duration::from_secs(10);

struct Harness {
    // Dropped first: shuts the server down and cancels what is still running.
    _server: grpcio::Server,
    channel: grpcio::Channel,
    _dir: tempfile::TempDir,
}

fn serve(services: Vec<grpcio::Service>) -> Harness {
    // As the daemon does: gRPC core started once, before any environment (its start must
    // not come while another test's server runs).
    crate::sys::start_grpc_core();
    let env = Arc::new(
        EnvBuilder::new()
            .cq_count(1)
            .name_prefix("test-grpc")
            .build(),
    );
    let mut builder = ServerBuilder::new(env.clone());
    for service in services {
        builder = builder.register_service(service);
    }
    let mut server = builder.build().expect("server builds");
    let dir = tempfile::tempdir().expect("tempdir");
    let addr = format!("unix:{}", dir.path().join("grpc.sock").display());
    server
        .add_listening_port(addr.as_str(), ServerCredentials::insecure())
        .expect("bind unix socket");
    server.start();
    let channel = ChannelBuilder::new(env).connect(&addr);
    Harness {
        _server: server,
        channel,
        _dir: dir,
    }
}

fn with_headers(headers: &[(&str, &str)]) -> CallOption {
    let mut meta = MetadataBuilder::new();
    for (key, value) in headers {
        meta.add_str(key, value).expect("valid header");
    }
    CallOption::default().headers(meta.build())
}

/// The status a failed call ended with.
fn status_of<T: std::fmt::Debug>(result: grpcio::Result<T>) -> (RpcStatusCode, String) {
    match result.expect_err("call fails") {
        grpcio::Error::RpcFailure(status) => (status.code(), status.message().to_string()),
        other => panic!("not a status: {other:?}"),
    }
}

struct TestVersion;

impl Version for TestVersion {
    fn version(&self, _call: &Call, _req: Empty) -> RpcResult<VersionResponse> {
        Ok(VersionResponse {
            version: "1.2.3-test".into(),
            revision: "abc".into(),
            ..Default::default()
        })
    }
}

/// Get and Create only; the other methods keep the generated Unimplemented default.
struct TestNamespaces;

impl Namespaces for TestNamespaces {
    fn get(&self, _call: &Call, req: GetNamespaceRequest) -> RpcResult<GetNamespaceResponse> {
        if req.name == "missing" {
            return Err(Error::wrapped(
                Class::NotFound,
                format!("namespace {:?}", req.name),
            ));
        }
        let mut ns = Namespace::new();
        ns.name = req.name;
        ns.labels.insert("k".into(), "v".into());
        let mut resp = GetNamespaceResponse::new();
        resp.namespace = Some(ns).into();
        Ok(resp)
    }

    /// Answers with the namespace of the call (to test the header over the wire).
    fn create(
        &self,
        call: &Call,
        _req: CreateNamespaceRequest,
    ) -> RpcResult<CreateNamespaceResponse> {
        let mut ns = Namespace::new();
        ns.name = call.namespace_required()?.to_string();
        let mut resp = CreateNamespaceResponse::new();
        resp.namespace = Some(ns).into();
        Ok(resp)
    }
}

struct TestHealth;

impl Health for TestHealth {
    fn check(&self, _call: &Call, _req: HealthCheckRequest) -> RpcResult<HealthCheckResponse> {
        Ok(health(ServingStatus::SERVING))
    }

    fn watch(
        &self,
        _call: &Call,
        _req: HealthCheckRequest,
        out: &mut StreamSender<HealthCheckResponse>,
    ) -> RpcResult<()> {
        for status in [
            ServingStatus::SERVING,
            ServingStatus::NOT_SERVING,
            ServingStatus::SERVING,
        ] {
            out.send(health(status))?;
        }
        Ok(())
    }
}

fn health(status: ServingStatus) -> HealthCheckResponse {
    let mut resp = HealthCheckResponse::new();
    resp.status = status.into();
    resp
}

/// Subscribe with filter `fail`: two envelopes, then (once the test opens `gate`) an error.
/// With `wait`: one envelope, then wait for the client to go away and report what the
/// handler saw: (signal fired, `Call::is_cancelled`, `StreamSender::is_closed`).
struct TestEvents {
    report: Sender<(bool, bool, bool)>,
    gate: Receiver<()>,
}

fn test_events() -> (TestEvents, Receiver<(bool, bool, bool)>, Sender<()>) {
    let (report, reported) = crossbeam_channel::unbounded();
    let (open, gate) = crossbeam_channel::unbounded();
    (TestEvents { report, gate }, reported, open)
}

impl Events for TestEvents {
    fn subscribe(
        &self,
        call: &Call,
        req: SubscribeRequest,
        out: &mut StreamSender<Envelope>,
    ) -> RpcResult<()> {
        let envelope = |topic: &str| {
            let mut env = Envelope::new();
            env.topic = topic.into();
            env.namespace = "default".into();
            env
        };
        if req.filters.iter().any(|f| f == "fail") {
            out.send(envelope("/a"))?;
            out.send(envelope("/b"))?;
            // grpcio's client drops messages still queued when it sees an error status,
            // so the error waits until the test has read both (a Go client reads in order).
            let _ = self.gate.recv_timeout(PATIENCE);
            return Err(Error::invalid_argument("filter \"fail\": invalid argument"));
        }
        // The client may cancel before grpcio reports this send done: not an error here.
        let _ = out.send(envelope("/first"));
        let closed = out.closed_signal();
        let seen = closed.recv_timeout(PATIENCE).is_ok();
        let _ = self
            .report
            .send((seen, call.is_cancelled(), out.is_closed()));
        Ok(())
    }
}

/// Write echoes every request; COMMIT ends the session. A first ref `boom` fails.
struct TestContent;

impl Content for TestContent {
    fn write(
        &self,
        _call: &Call,
        input: &mut StreamReceiver<WriteContentRequest>,
        out: &mut StreamSender<WriteContentResponse>,
    ) -> RpcResult<()> {
        let mut offset = 0i64;
        for req in input {
            let req = req?;
            if req.ref_ == "boom" {
                return Err(Error::new(
                    Class::AlreadyExists,
                    "blob with expected digest sha256:00 exists",
                ));
            }
            offset += req.data.len() as i64;
            let mut resp = WriteContentResponse::new();
            resp.action = req.action;
            resp.offset = offset;
            resp.digest = req.ref_.clone();
            out.send(resp)?;
            if req.action.enum_value() == Ok(WriteAction::COMMIT) {
                return Ok(());
            }
        }
        Ok(())
    }
}

fn namespaces_client() -> (Harness, NamespacesClient) {
    let harness = serve(vec![create_namespaces(Arc::new(TestNamespaces))]);
    let client = NamespacesClient::new(harness.channel.clone());
    (harness, client)
}

#[test]
fn unary_round_trip() {
    let harness = serve(vec![create_version(Arc::new(TestVersion))]);
    let client = VersionClient::new(harness.channel.clone());
    let resp = client.version(&Empty::new()).expect("version");
    assert_eq!(resp.version, "1.2.3-test");
    assert_eq!(resp.revision, "abc");
}

#[test]
fn maps_and_messages_cross_the_wire() {
    let (_harness, client) = namespaces_client();
    let mut req = GetNamespaceRequest::new();
    req.name = "k8s.io".into();
    let ns = client.get(&req).expect("get").namespace.unwrap_or_default();
    assert_eq!(ns.name, "k8s.io");
    assert_eq!(ns.labels.get("k").map(String::as_str), Some("v"));
}

#[test]
fn default_methods_are_unimplemented() {
    let (_harness, client) = namespaces_client();
    let (code, message) = status_of(client.list(&ListNamespacesRequest::new()));
    assert_eq!(code, RpcStatusCode::UNIMPLEMENTED);
    assert_eq!(message, "method List not implemented");
}

#[test]
fn handler_errors_keep_code_and_message() {
    let (_harness, client) = namespaces_client();
    let mut req = GetNamespaceRequest::new();
    req.name = "missing".into();
    let (code, message) = status_of(client.get(&req));
    assert_eq!(code, RpcStatusCode::NOT_FOUND);
    assert_eq!(message, "namespace \"missing\": not found");
}

#[test]
fn namespace_header_is_required_and_validated() {
    let (_harness, client) = namespaces_client();
    let req = CreateNamespaceRequest::new();

    let (code, message) = status_of(client.create(&req));
    assert_eq!(code, RpcStatusCode::FAILED_PRECONDITION);
    assert_eq!(message, "namespace is required");

    let (code, message) =
        status_of(client.create_opt(&req, with_headers(&[(crate::rpc::NAMESPACE_HEADER, "")])));
    assert_eq!(code, RpcStatusCode::FAILED_PRECONDITION);
    assert_eq!(message, "namespace is required");

    let bad = with_headers(&[(crate::rpc::NAMESPACE_HEADER, "-bad-")]);
    let (code, message) = status_of(client.create_opt(&req, bad));
    assert_eq!(code, RpcStatusCode::INVALID_ARGUMENT);
    assert_eq!(
        message,
        "namespace validation: identifier \"-bad-\" must match \
         ^[A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*$: invalid argument"
    );

    let good = with_headers(&[(crate::rpc::NAMESPACE_HEADER, "k8s.io")]);
    let resp = client.create_opt(&req, good).expect("create");
    assert_eq!(resp.namespace.unwrap_or_default().name, "k8s.io");
}

#[test]
fn server_stream_delivers_every_message_then_ends() {
    let harness = serve(vec![create_health(Arc::new(TestHealth))]);
    let client = HealthClient::new(harness.channel.clone());
    let stream = client
        .watch(&HealthCheckRequest::new())
        .expect("watch starts");
    let statuses: Vec<ServingStatus> = block_on_stream(stream)
        .map(|r| r.expect("message").status.enum_value_or_default())
        .collect();
    assert_eq!(
        statuses,
        [
            ServingStatus::SERVING,
            ServingStatus::NOT_SERVING,
            ServingStatus::SERVING
        ]
    );
}

#[test]
fn server_stream_error_arrives_after_the_messages() {
    let (events, _, open) = test_events();
    let harness = serve(vec![create_events(Arc::new(events))]);
    let client = EventsClient::new(harness.channel.clone());
    let mut req = SubscribeRequest::new();
    req.filters.push("fail".into());
    let mut stream = block_on_stream(client.subscribe(&req).expect("subscribe"));
    assert_eq!(stream.next().expect("first").expect("ok").topic, "/a");
    assert_eq!(stream.next().expect("second").expect("ok").topic, "/b");
    open.send(()).expect("handler waits");
    let (code, message) = status_of(stream.next().expect("the status"));
    assert_eq!(code, RpcStatusCode::INVALID_ARGUMENT);
    assert_eq!(message, "filter \"fail\": invalid argument");
    assert!(stream.next().is_none());
}

#[test]
fn server_stream_handler_sees_the_client_go_away() {
    let (events, reported, _open) = test_events();
    let harness = serve(vec![create_events(Arc::new(events))]);
    let client = EventsClient::new(harness.channel.clone());
    let mut req = SubscribeRequest::new();
    req.filters.push("wait".into());
    let mut stream = client.subscribe(&req).expect("subscribe");
    let first = block_on(stream.next()).expect("first").expect("ok");
    assert_eq!(first.topic, "/first");
    stream.cancel();
    drop(stream);
    let (seen, cancelled, closed) = reported
        .recv_timeout(PATIENCE)
        .expect("the handler reports");
    assert!(seen, "closed_signal fired");
    assert!(cancelled, "Call::is_cancelled after the client left");
    assert!(closed, "StreamSender::is_closed after the client left");
}

#[test]
fn duplex_stream_echoes_until_commit() {
    let harness = serve(vec![create_content(Arc::new(TestContent))]);
    let client = ContentClient::new(harness.channel.clone());
    let (mut tx, rx) = client.write().expect("write starts");
    let mut rx = block_on_stream(rx);
    let request = |action: WriteAction, data: &[u8]| {
        let mut req = WriteContentRequest::new();
        req.action = action.into();
        req.ref_ = "ref-1".into();
        req.data = data.to_vec();
        (req, WriteFlags::default())
    };
    // One request, one response: the exchange interleaves.
    block_on(tx.send(request(WriteAction::STAT, b""))).expect("send stat");
    let resp = rx.next().expect("stat answer").expect("ok");
    assert_eq!(resp.action.enum_value(), Ok(WriteAction::STAT));
    assert_eq!((resp.offset, resp.digest.as_str()), (0, "ref-1"));

    block_on(tx.send(request(WriteAction::WRITE, b"hello"))).expect("send write");
    let resp = rx.next().expect("write answer").expect("ok");
    assert_eq!(resp.offset, 5);

    // The server may end the call before grpcio's client sink reports this send done.
    let _ = block_on(tx.send(request(WriteAction::COMMIT, b"!")));
    let resp = rx.next().expect("commit answer").expect("ok");
    assert_eq!(resp.action.enum_value(), Ok(WriteAction::COMMIT));
    assert_eq!(resp.offset, 6);
    assert!(rx.next().is_none(), "the stream ends cleanly after COMMIT");
    let _ = block_on(tx.close());
}

#[test]
fn duplex_stream_error_keeps_code_and_message() {
    let harness = serve(vec![create_content(Arc::new(TestContent))]);
    let client = ContentClient::new(harness.channel.clone());
    let (mut tx, rx) = client.write().expect("write starts");
    let mut req = WriteContentRequest::new();
    req.ref_ = "boom".into();
    let _ = block_on(tx.send((req, WriteFlags::default()))); // may race the failure
    let mut rx = block_on_stream(rx);
    let (code, message) = status_of(rx.next().expect("the status"));
    assert_eq!(code, RpcStatusCode::ALREADY_EXISTS);
    assert_eq!(message, "blob with expected digest sha256:00 exists");
}

/// No proto of ours has a client-streaming method yet, so this one is built by hand the way
/// the generated glue builds its methods.
const METHOD_SUM: grpcio::Method<ReadContentResponse, ReadContentResponse> = grpcio::Method {
    ty: grpcio::MethodType::ClientStreaming,
    name: "/ctrd.test.Sum/Sum",
    req_mar: grpcio::Marshaller {
        ser: grpcio::pb_ser,
        de: grpcio::pb_de,
    },
    resp_mar: grpcio::Marshaller {
        ser: grpcio::pb_ser,
        de: grpcio::pb_de,
    },
};

#[test]
fn client_stream_collects_then_answers() {
    let service = grpcio::ServiceBuilder::new()
        .add_client_streaming_handler(&METHOD_SUM, |ctx, stream, sink| {
            crate::rpc::client_streaming(ctx, stream, sink, "ctrd.test.Sum", "Sum", |_, input| {
                let mut sum = ReadContentResponse::new();
                for msg in input {
                    let msg = msg?;
                    if msg.offset < 0 {
                        return Err(Error::out_of_range("negative"));
                    }
                    sum.offset += msg.offset;
                    sum.data.extend_from_slice(&msg.data);
                }
                Ok(sum)
            })
        })
        .build();
    let harness = serve(vec![service]);
    let client = grpcio::Client::new(harness.channel.clone());

    let (mut tx, rx) = client
        .client_streaming(&METHOD_SUM, CallOption::default())
        .expect("starts");
    for (n, data) in [(1, b"a"), (2, b"b"), (3, b"c")] {
        let mut msg = ReadContentResponse::new();
        msg.offset = n;
        msg.data = data.to_vec();
        block_on(tx.send((msg, WriteFlags::default()))).expect("send");
    }
    let _ = block_on(tx.close()); // the answer may race the close's completion
    let sum = block_on(rx).expect("answer");
    assert_eq!((sum.offset, sum.data.as_slice()), (6, &b"abc"[..]));

    let (mut tx, rx) = client
        .client_streaming(&METHOD_SUM, CallOption::default())
        .expect("starts");
    let mut msg = ReadContentResponse::new();
    msg.offset = -1;
    let _ = block_on(tx.send((msg, WriteFlags::default()))); // may race the failure
    let (code, message) = status_of(block_on(rx));
    assert_eq!(code, RpcStatusCode::OUT_OF_RANGE);
    assert_eq!(message, "negative");
}

/// Records what the interceptor sees for calls tagged with the `ctrd-test-id` header.
struct Recorder {
    events: Mutex<Vec<(String, String)>>,
    handled: Sender<String>,
}

impl Recorder {
    fn record(&self, call: &Call, event: String) {
        if let Some(id) = call.header("ctrd-test-id") {
            let mut events = self.events.lock().expect("not poisoned");
            events.push((id.to_string(), event));
        }
    }

    fn events_of(&self, id: &str) -> Vec<String> {
        let events = self.events.lock().expect("not poisoned");
        events
            .iter()
            .filter(|(i, _)| i == id)
            .map(|(_, e)| e.clone())
            .collect()
    }
}

impl Interceptor for Recorder {
    fn started(&self, call: &Call, kind: MethodKind) {
        self.record(
            call,
            format!("started {kind:?} {}/{}", call.service(), call.method()),
        );
    }
    fn msg_received(&self, call: &Call, _kind: MethodKind) {
        self.record(call, "received".into());
    }
    fn msg_sent(&self, call: &Call, _kind: MethodKind) {
        self.record(call, "sent".into());
    }
    fn handled(&self, call: &Call, _kind: MethodKind, code: RpcStatusCode, _elapsed: Duration) {
        self.record(call, format!("handled {}", i32::from(code)));
        if let Some(id) = call.header("ctrd-test-id") {
            let _ = self.handled.send(id.to_string());
        }
    }
}

#[test]
fn interceptor_sees_every_stage() {
    let (handled, handled_rx) = crossbeam_channel::unbounded();
    let recorder = Arc::new(Recorder {
        events: Mutex::new(Vec::new()),
        handled,
    });
    crate::rpc::set_interceptor(recorder.clone());
    let harness = serve(vec![
        create_version(Arc::new(TestVersion)),
        create_health(Arc::new(TestHealth)),
        create_namespaces(Arc::new(TestNamespaces)),
    ]);

    let version = VersionClient::new(harness.channel.clone());
    version
        .version_opt(&Empty::new(), with_headers(&[("ctrd-test-id", "unary")]))
        .expect("version");
    let health = HealthClient::new(harness.channel.clone());
    let stream = health
        .watch_opt(
            &HealthCheckRequest::new(),
            with_headers(&[("ctrd-test-id", "stream")]),
        )
        .expect("watch");
    assert_eq!(block_on_stream(stream).count(), 3);
    let namespaces = NamespacesClient::new(harness.channel.clone());
    let failed = namespaces.list_opt(
        &ListNamespacesRequest::new(),
        with_headers(&[("ctrd-test-id", "failed")]),
    );
    assert!(failed.is_err());

    let mut pending = vec!["unary", "stream", "failed"];
    while !pending.is_empty() {
        let id = handled_rx
            .recv_timeout(PATIENCE)
            .expect("handled is reported");
        pending.retain(|p| *p != id);
    }
    assert_eq!(
        recorder.events_of("unary"),
        [
            "started Unary containerd.services.version.v1.Version/Version",
            "received",
            "sent",
            "handled 0"
        ]
    );
    assert_eq!(
        recorder.events_of("stream"),
        [
            "started ServerStream grpc.health.v1.Health/Watch",
            "received",
            "sent",
            "sent",
            "sent",
            "handled 0"
        ]
    );
    assert_eq!(
        recorder.events_of("failed"),
        [
            "started Unary containerd.services.namespaces.v1.Namespaces/List",
            "received",
            "handled 12"
        ]
    );
}

/// Namespaces/Delete blocks until told to go on (a stand-in for a long Diff or Prepare).
struct SlowDelete {
    started: Sender<()>,
    release: Receiver<()>,
}

impl Namespaces for SlowDelete {
    fn delete(
        &self,
        _call: &Call,
        _req: super::namespaces::DeleteNamespaceRequest,
    ) -> RpcResult<Empty> {
        let _ = self.started.send(());
        let _ = self.release.recv_timeout(PATIENCE);
        Ok(Empty::new())
    }
}

#[test]
fn a_slow_call_runs_on_a_worker_and_does_not_delay_quick_ones() {
    let (started_tx, started_rx) = crossbeam_channel::unbounded();
    let (release_tx, release_rx) = crossbeam_channel::unbounded();
    let harness = serve(vec![
        create_namespaces(Arc::new(SlowDelete {
            started: started_tx,
            release: release_rx,
        })),
        create_version(Arc::new(TestVersion)),
    ]);
    let namespaces = NamespacesClient::new(harness.channel.clone());
    let (done_tx, done_rx) = crossbeam_channel::bounded(1);
    let slow = std::thread::spawn(move || {
        let mut req = super::namespaces::DeleteNamespaceRequest::new();
        req.name = "slow".into();
        let _ = done_tx.send(namespaces.delete(&req).map(drop));
    });
    started_rx
        .recv_timeout(PATIENCE)
        .expect("the slow call started");
    // The server has one completion-queue thread, and the slow handler is still running.
    let version = VersionClient::new(harness.channel.clone());
    let answer = version.version_opt(
        &Empty::new(),
        CallOption::default().timeout(Duration::from_secs(1)),
    );
    assert_eq!(
        answer.expect("Version answered within 1 s").version,
        "1.2.3-test"
    );
    assert!(
        done_rx.try_recv().is_err(),
        "the slow call is still running"
    );
    release_tx.send(()).expect("handler waits");
    done_rx
        .recv_timeout(PATIENCE)
        .expect("slow call answered")
        .expect("slow call succeeded");
    slow.join().expect("client thread");
}

#[test]
fn a_deferred_reply_answers_from_another_thread() {
    use super::svc::version::v1::version_grpc::METHOD_VERSION_VERSION;
    let (parked_tx, parked_rx) =
        crossbeam_channel::unbounded::<crate::rpc::Reply<VersionResponse>>();
    let service = grpcio::ServiceBuilder::new()
        .add_unary_handler(&METHOD_VERSION_VERSION, move |ctx, req, sink| {
            let parked = parked_tx.clone();
            crate::rpc::unary_deferred(
                ctx,
                req,
                sink,
                "containerd.services.version.v1.Version",
                "Version",
                move |_req: Empty, reply| {
                    let _ = parked.send(reply);
                },
            )
        })
        .build();
    let harness = serve(vec![service]);
    let client = VersionClient::new(harness.channel.clone());
    let (answer_tx, answer_rx) = crossbeam_channel::bounded(1);
    let caller = std::thread::spawn(move || {
        let _ = answer_tx.send(client.version(&Empty::new()));
    });
    // The handler returned with the reply parked; nothing answered yet.
    let reply = parked_rx.recv_timeout(PATIENCE).expect("handler ran");
    assert!(answer_rx.try_recv().is_err());
    std::thread::spawn(move || {
        reply.finish(Ok(VersionResponse {
            version: "later".into(),
            ..Default::default()
        }))
    })
    .join()
    .expect("answering thread");
    let answer = answer_rx.recv_timeout(PATIENCE).expect("answered");
    assert_eq!(answer.expect("ok").version, "later");
    caller.join().expect("caller");

    // A reply dropped unanswered still ends the call, with Internal.
    let client = VersionClient::new(harness.channel.clone());
    let caller = std::thread::spawn(move || client.version(&Empty::new()));
    drop(parked_rx.recv_timeout(PATIENCE).expect("handler ran again"));
    let (code, message) = status_of(caller.join().expect("caller"));
    assert_eq!(code, RpcStatusCode::INTERNAL);
    assert_eq!(message, "the call ended without an answer");
}
