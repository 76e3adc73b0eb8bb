//! `containerd.services.content.v1.Content` over the namespaced content store, and the
//! plugins that serve it: `io.containerd.service.v1.content-service` and
//! `io.containerd.grpc.v1.content` (the store itself registers in `crate::content::plugin`).
//!
//! Every call needs the `containerd-namespace` header. Reads stream 1 MiB chunks with `pread`;
//! writes stream straight to the ingest file, so no call holds a whole blob in memory: a
//! WRITE's chunk is moved out of its message into the store, which hashes and writes large
//! chunks on the ingest's own threads while this call receives the next (at most
//! [`WRITE_WINDOW`] in their hands). A client's `containerd-lease` header makes the lease hold
//! what it writes.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::api::content::{
    create_content, AbortRequest, Content, DeleteContentRequest, Info, InfoRequest, InfoResponse,
    ListContentRequest, ListContentResponse, ListStatusesRequest, ListStatusesResponse,
    ReadContentRequest, ReadContentResponse, Status, StatusRequest, StatusResponse, UpdateRequest,
    UpdateResponse, WriteAction, WriteContentRequest, WriteContentResponse,
};
use crate::api::event_types::{ContentCreate, ContentDelete};
use crate::api::{timestamp, Empty};
use crate::content::{self, Digest};
use crate::errdefs::{Class, Error};
use crate::events::Exchange;
use crate::metadata::{ContentRecord, ContentWriter, Metadata};
use crate::plugin::{types, GrpcServices, Instance, Registration};
use crate::rpc::{Call, RpcResult, StreamReceiver, StreamSender};
use crate::scope::Scope;

/// The largest chunk a Read sends.
pub const READ_CHUNK: usize = 1 << 20;

/// How many infos one List message carries.
const LIST_BATCH: usize = 100;

/// The content service: the namespaced store plus the exchange its events go to.
pub struct ContentService {
    meta: Arc<Metadata>,
    exchange: Arc<Exchange>,
}

fn info_of(rec: ContentRecord) -> Info {
    Info {
        digest: rec.digest,
        size: rec.size,
        created_at: Some(timestamp(rec.created_at)).into(),
        updated_at: Some(timestamp(rec.updated_at)).into(),
        labels: rec.labels.into_iter().collect(),
        ..Default::default()
    }
}

fn status_of(st: content::Status) -> Status {
    Status {
        started_at: Some(timestamp(st.started_at)).into(),
        updated_at: Some(timestamp(st.updated_at)).into(),
        ref_: st.ref_,
        offset: st.offset,
        total: st.total,
        expected: st.expected.map(|d| d.to_string()).unwrap_or_default(),
        ..Default::default()
    }
}

fn optional_digest(text: &str) -> RpcResult<Option<Digest>> {
    if text.is_empty() {
        Ok(None)
    } else {
        Digest::parse(text).map(Some)
    }
}

impl ContentService {
    pub fn new(meta: Arc<Metadata>, exchange: Arc<Exchange>) -> Self {
        ContentService { meta, exchange }
    }

    /// The Write state machine after the first message opened `writer`.
    ///
    /// A WRITE's chunk goes to [`ContentWriter::append`], which for a large chunk returns
    /// while the store still hashes and writes it: its answer waits in `waiting` and the
    /// next message is received meanwhile. Answers go out in order, each once its chunk is
    /// written and hashed (the digest after it is in the answer), at the latest before the
    /// next message that needs the writer settled (STAT, COMMIT, a restart at offset 0), and
    /// whenever no message is there to receive (a client that waits for each answer before
    /// it sends on gets it as soon as its chunk is done).
    fn write_session(
        &self,
        scope: &Scope,
        mut writer: ContentWriter,
        mut req: WriteContentRequest,
        input: &mut StreamReceiver<WriteContentRequest>,
        out: &mut StreamSender<WriteContentResponse>,
    ) -> RpcResult<()> {
        let mut total = req.total;
        let mut expected = None;
        let mut waiting = Waiting::default();
        loop {
            let action = req.action.enum_value_or_default();
            let appends = action == WriteAction::WRITE
                && !req.data.is_empty()
                && (req.offset > 0 || writer.offset() == 0);
            if !appends {
                waiting.answer_all(&mut writer, out)?;
            }
            let mut resp = WriteContentResponse {
                action: req.action,
                offset: writer.offset(),
                ..Default::default()
            };
            if let Some(d) = optional_digest(&req.expected)? {
                if self.meta.info(scope, &d).is_ok() {
                    let ref_ = writer.status().ref_;
                    drop(writer);
                    if let Err(err) = self.meta.abort(scope, &ref_) {
                        log::warn!("failed to abort ingest {ref_:?}: {err}");
                    }
                    return Err(Error::already_exists(format!(
                        "blob with expected digest {d} exists"
                    )));
                }
                expected = Some(d);
            }
            if req.total > 0 {
                total = req.total;
                writer.set_total(total)?;
            }
            match action {
                WriteAction::STAT => {
                    let status = writer.status();
                    resp.digest = writer.digest().to_string();
                    resp.started_at = Some(timestamp(status.started_at)).into();
                    resp.updated_at = Some(timestamp(status.updated_at)).into();
                    resp.total = total;
                }
                WriteAction::WRITE | WriteAction::COMMIT => {
                    if req.offset > 0 && req.offset != writer.offset() {
                        return Err(Error::out_of_range(format!(
                            "write @{} must occur at current offset {}",
                            req.offset,
                            writer.offset()
                        )));
                    }
                    if req.offset == 0 && writer.offset() > 0 {
                        writer.truncate(0)?;
                        resp.offset = 0;
                    }
                    // Taken out: the store keeps the chunk itself while it works on it, and
                    // frees it once written and hashed.
                    let data = std::mem::take(&mut req.data);
                    if !data.is_empty() {
                        waiting.make_room(data.len(), &mut writer, out)?;
                        let len = data.len();
                        match writer.append(data)? {
                            Some(appended) => {
                                resp.offset = appended.offset;
                                resp.digest = appended.digest.to_string();
                            }
                            None if action == WriteAction::WRITE => {
                                waiting.push(resp, len);
                                req = match waiting.next_message(&mut writer, input, out)? {
                                    Some(next) => next,
                                    None => return Ok(()),
                                };
                                continue;
                            }
                            // COMMIT settles the chunk first.
                            None => {}
                        }
                    } else if action == WriteAction::WRITE {
                        resp.digest = writer.digest().to_string();
                    }
                    if action == WriteAction::COMMIT {
                        let labels: BTreeMap<String, String> =
                            std::mem::take(&mut req.labels).into_iter().collect();
                        let rec = writer.commit(total, expected.clone(), labels)?;
                        resp.offset = rec.size;
                        resp.digest = rec.digest.clone();
                        self.exchange.publish_event(
                            scope.namespace(),
                            "/content/create",
                            &ContentCreate {
                                digest: rec.digest,
                                size: rec.size,
                                ..Default::default()
                            },
                        );
                        out.send(resp)?;
                        return Ok(());
                    }
                }
            }
            out.send(resp)?;
            req = match waiting.next_message(&mut writer, input, out)? {
                Some(next) => next,
                None => return Ok(()),
            };
        }
    }
}

/// The most bytes of WRITE chunks a Write call has in the store's hands at once (at least
/// one chunk): with 1 MiB messages, one chunk is hashed and written while gRPC receives the
/// next, so an ingest holds about what it held when both happened on the call's thread
/// (the peak RSS of parallel ingests stays where it was).
const WRITE_WINDOW: usize = 1 << 20;

/// Answers to WRITEs whose chunks the store still works on, oldest first.
#[derive(Default)]
struct Waiting {
    answers: std::collections::VecDeque<(WriteContentResponse, usize)>,
    bytes: usize,
}

impl Waiting {
    fn push(&mut self, resp: WriteContentResponse, len: usize) {
        self.answers.push_back((resp, len));
        self.bytes += len;
    }

    /// Sends the oldest answer once its chunk is done (waits for it with `wait`); false
    /// when there is none to send (without `wait`, not yet).
    fn answer_one(
        &mut self,
        wait: bool,
        writer: &mut ContentWriter,
        out: &mut StreamSender<WriteContentResponse>,
    ) -> RpcResult<bool> {
        if self.answers.is_empty() {
            return Ok(false);
        }
        let Some(appended) = writer.settle(wait) else {
            if wait {
                return Err(Error::internal("a written chunk was never settled"));
            }
            return Ok(false);
        };
        let appended = appended?;
        let Some((mut resp, len)) = self.answers.pop_front() else {
            return Ok(false);
        };
        self.bytes -= len;
        resp.offset = appended.offset;
        resp.digest = appended.digest.to_string();
        out.send(resp)?;
        Ok(true)
    }

    fn answer_all(
        &mut self,
        writer: &mut ContentWriter,
        out: &mut StreamSender<WriteContentResponse>,
    ) -> RpcResult<()> {
        while self.answer_one(true, writer, out)? {}
        Ok(())
    }

    /// Answers the oldest until a chunk of `len` bytes fits in [`WRITE_WINDOW`].
    fn make_room(
        &mut self,
        len: usize,
        writer: &mut ContentWriter,
        out: &mut StreamSender<WriteContentResponse>,
    ) -> RpcResult<()> {
        while self.bytes > 0 && self.bytes + len > WRITE_WINDOW {
            self.answer_one(true, writer, out)?;
        }
        Ok(())
    }

    /// The next message, answering finished chunks meanwhile: one that has arrived is taken
    /// at once; while none has, the oldest answer is waited for and sent (a client may be
    /// waiting for it before it sends on). At the end of the input every answer goes out.
    fn next_message(
        &mut self,
        writer: &mut ContentWriter,
        input: &mut StreamReceiver<WriteContentRequest>,
        out: &mut StreamSender<WriteContentResponse>,
    ) -> RpcResult<Option<WriteContentRequest>> {
        // A full window is settled before the next chunk is received, so an ingest holds
        // at most the window in the store and the next message in gRPC's buffers.
        while self.bytes >= WRITE_WINDOW {
            self.answer_one(true, writer, out)?;
        }
        let next = loop {
            while self.answer_one(false, writer, out)? {}
            if self.answers.is_empty() {
                break input.next();
            }
            if let Some(next) = input.try_next() {
                break next;
            }
            self.answer_one(true, writer, out)?;
        };
        match next {
            Some(next) => next.map(Some),
            None => {
                self.answer_all(writer, out)?;
                Ok(None)
            }
        }
    }
}

impl Content for ContentService {
    fn info(&self, call: &Call, req: InfoRequest) -> RpcResult<InfoResponse> {
        let scope = call.scope()?;
        let digest = Digest::parse(&req.digest)?;
        let rec = self.meta.info(&scope, &digest)?;
        Ok(InfoResponse {
            info: Some(info_of(rec)).into(),
            ..Default::default()
        })
    }

    fn update(&self, call: &Call, req: UpdateRequest) -> RpcResult<UpdateResponse> {
        let scope = call.scope()?;
        let info = req.info.into_option().unwrap_or_default();
        let digest = Digest::parse(&info.digest)?;
        let paths = req
            .update_mask
            .as_ref()
            .map(|mask| mask.paths.clone())
            .unwrap_or_default();
        let labels: BTreeMap<String, String> = info.labels.into_iter().collect();
        let rec = self.meta.update(&scope, &digest, labels, &paths)?;
        Ok(UpdateResponse {
            info: Some(info_of(rec)).into(),
            ..Default::default()
        })
    }

    fn list(
        &self,
        call: &Call,
        req: ListContentRequest,
        out: &mut StreamSender<ListContentResponse>,
    ) -> RpcResult<()> {
        let scope = call.scope()?;
        let records = self.meta.list(&scope, &req.filters)?;
        out.send_batches(records.into_iter().map(info_of), LIST_BATCH, |info| {
            ListContentResponse {
                info,
                ..Default::default()
            }
        })
    }

    fn delete(&self, call: &Call, req: DeleteContentRequest) -> RpcResult<Empty> {
        let scope = call.scope()?;
        let digest = Digest::parse(&req.digest)?;
        self.meta.delete(&scope, &digest)?;
        self.exchange.publish_event(
            scope.namespace(),
            "/content/delete",
            &ContentDelete {
                digest: digest.to_string(),
                ..Default::default()
            },
        );
        Ok(Empty::default())
    }

    fn read(
        &self,
        call: &Call,
        req: ReadContentRequest,
        out: &mut StreamSender<ReadContentResponse>,
    ) -> RpcResult<()> {
        let scope = call.scope()?;
        let digest = Digest::parse(&req.digest)?;
        let (file, size) = self.meta.reader(&scope, &digest)?;
        let mut offset = req.offset.max(0);
        if offset > size {
            return Err(Error::out_of_range(format!(
                "read past object length {size} bytes"
            )));
        }
        let end = if req.size <= 0 || offset.saturating_add(req.size) > size {
            size
        } else {
            offset + req.size
        };
        while offset < end {
            let want = ((end - offset) as usize).min(READ_CHUNK);
            let mut data = vec![0u8; want];
            let mut filled = 0;
            while filled < want {
                let n = file
                    .read_at(&mut data[filled..], (offset as u64) + filled as u64)
                    .map_err(|err| err.context(format!("read {digest}")))?;
                if n == 0 {
                    return Err(Error::new(
                        Class::Unknown,
                        format!(
                            "read {digest}: unexpected end of blob at {}",
                            offset as usize + filled
                        ),
                    ));
                }
                filled += n;
            }
            out.send(ReadContentResponse {
                offset,
                data,
                ..Default::default()
            })?;
            offset += want as i64;
        }
        Ok(())
    }

    fn status(&self, call: &Call, req: StatusRequest) -> RpcResult<StatusResponse> {
        let scope = call.scope()?;
        let status = self.meta.status(&scope, &req.ref_)?;
        Ok(StatusResponse {
            status: Some(status_of(status)).into(),
            ..Default::default()
        })
    }

    fn list_statuses(
        &self,
        call: &Call,
        req: ListStatusesRequest,
    ) -> RpcResult<ListStatusesResponse> {
        let scope = call.scope()?;
        let statuses = self.meta.list_statuses(&scope, &req.filters)?;
        Ok(ListStatusesResponse {
            statuses: statuses.into_iter().map(status_of).collect(),
            ..Default::default()
        })
    }

    fn write(
        &self,
        call: &Call,
        input: &mut StreamReceiver<WriteContentRequest>,
        out: &mut StreamSender<WriteContentResponse>,
    ) -> RpcResult<()> {
        let scope = call.scope()?;
        let Some(first) = input.next() else {
            return Ok(());
        };
        let first = first?;
        if first.ref_.is_empty() {
            return Err(Error::invalid_argument(
                "first message must have a reference",
            ));
        }
        let expected = optional_digest(&first.expected)?;
        let writer = self
            .meta
            .writer(&scope, &first.ref_, first.total, expected)?;
        self.write_session(&scope, writer, first, input, out)
    }

    fn abort(&self, call: &Call, req: AbortRequest) -> RpcResult<Empty> {
        let scope = call.scope()?;
        self.meta.abort(&scope, &req.ref_)?;
        Ok(Empty::default())
    }
}

impl GrpcServices for ContentService {
    fn grpc_services(&self) -> Vec<grpcio::Service> {
        vec![create_content(Arc::new(ContentService {
            meta: self.meta.clone(),
            exchange: self.exchange.clone(),
        }))]
    }
}

/// `io.containerd.service.v1.content-service` and `io.containerd.grpc.v1.content`.
pub fn registrations() -> Vec<Registration> {
    vec![
        Registration::new(types::SERVICE, "content-service", |ic| {
            let meta = ic.single::<Metadata>(types::METADATA)?;
            let exchange = ic.single::<Exchange>(types::EVENT)?;
            Ok(Instance::new(Arc::new(ContentService::new(meta, exchange))))
        })
        .requires(&[types::EVENT, types::METADATA]),
        Registration::new(types::GRPC, "content", |ic| {
            let service = ic
                .plugins()
                .value::<ContentService>(types::SERVICE, "content-service")
                .ok_or_else(|| Error::not_found("content service not loaded"))?;
            Ok(Instance::new(service.clone()).with_grpc(service))
        })
        .requires(&[types::SERVICE]),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::{Db, SharingPolicy};
    use crate::rpc::NAMESPACE_HEADER;

    fn service() -> (tempfile::TempDir, ContentService, Arc<Exchange>) {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Db::open(&dir.path().join("meta.redb")).unwrap());
        let store = Arc::new(content::Store::open(&dir.path().join("content")).unwrap());
        let meta = Arc::new(Metadata::new(db, store, SharingPolicy::Shared));
        let exchange = Arc::new(Exchange::new());
        (dir, ContentService::new(meta, exchange.clone()), exchange)
    }

    fn call(method: &'static str) -> Arc<Call> {
        Arc::new(Call::for_test(
            "containerd.services.content.v1.Content",
            method,
            &[(NAMESPACE_HEADER, "default")],
        ))
    }

    fn write_request(action: WriteAction, offset: i64, data: &[u8]) -> WriteContentRequest {
        WriteContentRequest {
            action: action.into(),
            ref_: "upload".into(),
            offset,
            data: data.to_vec(),
            ..Default::default()
        }
    }

    /// Writes `data` in two messages through in-memory streams; the handler's answers.
    fn write(svc: &ContentService, data: &[u8]) -> RpcResult<Vec<WriteContentResponse>> {
        let call = call("Write");
        let (mut input, client_tx) = StreamReceiver::in_memory(call.clone());
        let (mut out, client) = StreamSender::in_memory(call.clone());
        client_tx
            .send(Ok(write_request(WriteAction::WRITE, 0, &data[..5])))
            .unwrap();
        let mut commit = write_request(WriteAction::COMMIT, 5, &data[5..]);
        commit.total = data.len() as i64;
        commit.expected = Digest::of(data).to_string();
        client_tx.send(Ok(commit)).unwrap();
        drop(client_tx);
        svc.write(&call, &mut input, &mut out)?;
        drop(out);
        Ok(client.messages.iter().collect())
    }

    #[test]
    fn write_streams_commit_and_publish_then_read_streams_back() {
        let (_dir, svc, exchange) = service();
        let events = exchange.subscribe(&[]).unwrap();
        let data = b"hello from an in-process stream".to_vec();
        let digest = Digest::of(&data);

        let answers = write(&svc, &data).unwrap();
        assert_eq!(answers.len(), 2);
        assert_eq!(answers[0].offset, 5);
        assert_eq!(
            answers[1].action.enum_value_or_default(),
            WriteAction::COMMIT
        );
        assert_eq!(answers[1].offset, data.len() as i64);
        assert_eq!(answers[1].digest, digest.to_string());
        let event = events
            .next_timeout(std::time::Duration::ZERO)
            .expect("a /content/create event");
        assert_eq!(event.topic, "/content/create");
        assert_eq!(event.namespace, "default");

        let read = call("Read");
        let (mut out, client) = StreamSender::in_memory(read.clone());
        let req = ReadContentRequest {
            digest: digest.to_string(),
            offset: 6,
            ..Default::default()
        };
        svc.read(&read, req, &mut out).unwrap();
        drop(out);
        let got: Vec<u8> = client.messages.iter().flat_map(|m| m.data).collect();
        assert_eq!(got, &data[6..]);

        // The same bytes again: the expected digest exists, so the write is refused.
        let err = write(&svc, &data).unwrap_err();
        assert_eq!(err.class(), Class::AlreadyExists);
        assert_eq!(
            err.message(),
            format!("blob with expected digest {digest} exists")
        );
    }

    #[test]
    fn large_writes_are_answered_in_order_with_the_digest_after_each() {
        let (_dir, svc, _exchange) = service();
        let chunk = content::PIPELINE_MIN_CHUNK * 3 / 2;
        let data: Vec<u8> = (0..3 * chunk).map(|i| (i % 251) as u8).collect();
        let call = call("Write");
        let (mut input, client_tx) = StreamReceiver::in_memory(call.clone());
        let (mut out, client) = StreamSender::in_memory(call.clone());
        for (i, part) in data.chunks(chunk).enumerate() {
            client_tx
                .send(Ok(write_request(
                    WriteAction::WRITE,
                    (i * chunk) as i64,
                    part,
                )))
                .unwrap();
        }
        client_tx
            .send(Ok(write_request(WriteAction::STAT, 0, b"")))
            .unwrap();
        let mut commit = write_request(WriteAction::COMMIT, data.len() as i64, b"");
        commit.expected = Digest::of(&data).to_string();
        client_tx.send(Ok(commit)).unwrap();
        drop(client_tx);
        svc.write(&call, &mut input, &mut out).unwrap();
        drop(out);

        let answers: Vec<WriteContentResponse> = client.messages.iter().collect();
        assert_eq!(answers.len(), 5);
        for (i, answer) in answers[..3].iter().enumerate() {
            let end = (i + 1) * chunk;
            assert_eq!(answer.action.enum_value_or_default(), WriteAction::WRITE);
            assert_eq!(answer.offset, end as i64);
            assert_eq!(answer.digest, Digest::of(&data[..end]).to_string());
        }
        assert_eq!(answers[3].action.enum_value_or_default(), WriteAction::STAT);
        assert_eq!(answers[3].offset, data.len() as i64);
        assert_eq!(answers[3].digest, Digest::of(&data).to_string());
        assert_eq!(answers[4].offset, data.len() as i64);
        assert_eq!(answers[4].digest, Digest::of(&data).to_string());
    }

    #[test]
    fn read_fails_past_the_end_and_stops_when_the_client_leaves() {
        let (_dir, svc, _exchange) = service();
        let data = vec![7u8; READ_CHUNK + 10];
        write(&svc, &data).unwrap();
        let digest = Digest::of(&data).to_string();

        let read = call("Read");
        let (mut out, _client) = StreamSender::in_memory(read.clone());
        let past = ReadContentRequest {
            digest: digest.clone(),
            offset: data.len() as i64 + 1,
            ..Default::default()
        };
        let err = svc.read(&read, past, &mut out).unwrap_err();
        assert_eq!(err.class(), Class::OutOfRange);

        let (mut out, client) = StreamSender::in_memory(read.clone());
        drop(client);
        let whole = ReadContentRequest {
            digest,
            ..Default::default()
        };
        let err = svc.read(&read, whole, &mut out).unwrap_err();
        assert_eq!(err.class(), Class::Canceled);
        assert!(read.is_cancelled());
    }

    #[test]
    fn write_needs_a_ref_and_reports_a_failed_receive() {
        let (_dir, svc, _exchange) = service();
        let write = call("Write");
        let (mut input, client_tx) = StreamReceiver::in_memory(write.clone());
        let (mut out, _client) = StreamSender::in_memory(write.clone());
        let mut first = write_request(WriteAction::STAT, 0, b"");
        first.ref_.clear();
        client_tx.send(Ok(first)).unwrap();
        let err = svc.write(&write, &mut input, &mut out).unwrap_err();
        assert_eq!(err.class(), Class::InvalidArgument);
        assert_eq!(err.message(), "first message must have a reference");

        let (mut input, client_tx) = StreamReceiver::in_memory(write.clone());
        let (mut out, client) = StreamSender::in_memory(write.clone());
        client_tx
            .send(Ok(write_request(WriteAction::WRITE, 0, b"abc")))
            .unwrap();
        client_tx
            .send(Err(Error::new(Class::Canceled, "receive failed: gone")))
            .unwrap();
        let err = svc.write(&write, &mut input, &mut out).unwrap_err();
        assert_eq!(err.message(), "receive failed: gone");
        assert_eq!(client.messages.try_iter().count(), 1);
    }
}
