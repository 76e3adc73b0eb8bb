//! `containerd.services.content.v1.Content` over the namespaced content store, and the
//! plugins that make it: `io.containerd.content.v1.content` (the local store),
//! `io.containerd.service.v1.content-service` and `io.containerd.grpc.v1.content`.
//!
//! Every call needs the `containerd-namespace` header. Reads stream 1 MiB chunks with `pread`;
//! writes stream straight to the ingest file, so no call holds a whole blob in memory. A
//! client's `containerd-lease` header makes the lease hold what it writes.

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

/// How a content plugin's value is stored, local or proxy alike.
pub struct ContentHandle(pub Arc<dyn content::Backend>);

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
    fn write_session(
        &self,
        ns: &str,
        mut writer: ContentWriter,
        mut req: WriteContentRequest,
        input: &mut StreamReceiver<WriteContentRequest>,
        out: &mut StreamSender<WriteContentResponse>,
    ) -> RpcResult<()> {
        let mut total = req.total;
        let mut expected = None;
        loop {
            let action = req.action.enum_value_or_default();
            let mut resp = WriteContentResponse {
                action: req.action,
                offset: writer.offset(),
                ..Default::default()
            };
            if let Some(d) = optional_digest(&req.expected)? {
                if self.meta.info(ns, &d).is_ok() {
                    let ref_ = writer.status().ref_;
                    drop(writer);
                    if let Err(err) = self.meta.abort(ns, &ref_) {
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
                    // Taken out so the chunk is freed before the next message is received.
                    let data = std::mem::take(&mut req.data);
                    if !data.is_empty() {
                        writer.write(&data)?;
                        resp.offset += data.len() as i64;
                    }
                    if action == WriteAction::COMMIT {
                        let labels: BTreeMap<String, String> =
                            std::mem::take(&mut req.labels).into_iter().collect();
                        let rec = writer.commit(total, expected.clone(), labels)?;
                        resp.digest = rec.digest.clone();
                        self.exchange.publish_event(
                            ns,
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
                    resp.digest = writer.digest().to_string();
                }
            }
            out.send(resp)?;
            req = match input.next() {
                Some(next) => next?,
                None => return Ok(()),
            };
        }
    }
}

impl Content for ContentService {
    fn info(&self, call: &Call, req: InfoRequest) -> RpcResult<InfoResponse> {
        let ns = call.namespace_required()?;
        let digest = Digest::parse(&req.digest)?;
        let rec = self.meta.info(ns, &digest)?;
        Ok(InfoResponse {
            info: Some(info_of(rec)).into(),
            ..Default::default()
        })
    }

    fn update(&self, call: &Call, req: UpdateRequest) -> RpcResult<UpdateResponse> {
        let ns = call.namespace_required()?;
        let info = req.info.into_option().unwrap_or_default();
        let digest = Digest::parse(&info.digest)?;
        let paths = req
            .update_mask
            .as_ref()
            .map(|mask| mask.paths.clone())
            .unwrap_or_default();
        let labels: BTreeMap<String, String> = info.labels.into_iter().collect();
        let rec = self.meta.update(ns, &digest, labels, &paths)?;
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
        let ns = call.namespace_required()?;
        let records = self.meta.list(ns, &req.filters)?;
        out.send_batches(records.into_iter().map(info_of), LIST_BATCH, |info| {
            ListContentResponse {
                info,
                ..Default::default()
            }
        })
    }

    fn delete(&self, call: &Call, req: DeleteContentRequest) -> RpcResult<Empty> {
        let ns = call.namespace_required()?;
        let digest = Digest::parse(&req.digest)?;
        self.meta.delete(ns, &digest)?;
        self.exchange.publish_event(
            ns,
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
        let ns = call.namespace_required()?;
        let digest = Digest::parse(&req.digest)?;
        let (file, size) = self.meta.reader(ns, &digest)?;
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
        let ns = call.namespace_required()?;
        let status = self.meta.status(ns, &req.ref_)?;
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
        let ns = call.namespace_required()?;
        let statuses = self.meta.list_statuses(ns, &req.filters)?;
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
        let ns = call.namespace_required()?.to_string();
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
        let lease = call.lease().map(str::to_string);
        let writer = self
            .meta
            .writer(&ns, &first.ref_, first.total, expected, lease)?;
        self.write_session(&ns, writer, first, input, out)
    }

    fn abort(&self, call: &Call, req: AbortRequest) -> RpcResult<Empty> {
        let ns = call.namespace_required()?;
        self.meta.abort(ns, &req.ref_)?;
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

/// `io.containerd.content.v1.content`, `io.containerd.service.v1.content-service` and
/// `io.containerd.grpc.v1.content`.
pub fn registrations() -> Vec<Registration> {
    vec![
        Registration::new(types::CONTENT, "content", |ic| {
            let root = ic.root();
            let store = content::Store::open(&root)?;
            ic.meta
                .exports
                .insert("root".into(), root.to_string_lossy().into_owned());
            Ok(Instance::new(Arc::new(ContentHandle(Arc::new(store)))))
        }),
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
