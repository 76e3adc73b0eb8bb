//! A content store in another process, reached through its
//! `containerd.services.content.v1.Content` service. Every call carries the namespace of the
//! request it serves, so a containerd behind the proxy sees ctrd's blobs and ingests in the
//! same namespaces. Blobs there are never removed by ctrd's garbage collection, and they are
//! committed with a `containerd.io/gc.root` label so the other daemon's collector keeps them.

use std::time::SystemTime;

use futures_util::{SinkExt, StreamExt};
use grpcio::{Channel, ClientDuplexReceiver, ClientDuplexSender, WriteFlags};

use super::with_namespace;
use crate::api::content::{
    AbortRequest, ContentClient, InfoRequest, ListStatusesRequest, ReadContentRequest,
    Status as ApiStatus, StatusRequest, WriteAction, WriteContentRequest, WriteContentResponse,
};
use crate::api::system_time;
use crate::content::{Backend, BlobWriter, Digest, Info, ReadAt, Status};
use crate::errdefs::{Class, Error};

/// See the module documentation.
pub struct ProxyContent {
    client: ContentClient,
}

impl ProxyContent {
    pub fn new(channel: Channel) -> Self {
        ProxyContent {
            client: ContentClient::new(channel),
        }
    }
}

fn status_from(st: &ApiStatus) -> Status {
    Status {
        ref_: st.ref_.clone(),
        offset: st.offset,
        total: st.total,
        expected: Digest::parse(&st.expected).ok(),
        started_at: st
            .started_at
            .as_ref()
            .map(system_time)
            .unwrap_or(SystemTime::UNIX_EPOCH),
        updated_at: st
            .updated_at
            .as_ref()
            .map(system_time)
            .unwrap_or(SystemTime::UNIX_EPOCH),
    }
}

impl Backend for ProxyContent {
    fn info(&self, ns: &str, d: &Digest) -> Result<Info, Error> {
        let resp = self
            .client
            .info_opt(
                &InfoRequest {
                    digest: d.to_string(),
                    ..Default::default()
                },
                with_namespace(ns),
            )
            .map_err(Error::from_grpc)?;
        let info = resp.info.unwrap_or_default();
        Ok(Info {
            digest: d.clone(),
            size: info.size,
            created_at: info
                .created_at
                .as_ref()
                .map(system_time)
                .unwrap_or(SystemTime::UNIX_EPOCH),
            updated_at: info
                .updated_at
                .as_ref()
                .map(system_time)
                .unwrap_or(SystemTime::UNIX_EPOCH),
        })
    }

    fn reader(&self, ns: &str, d: &Digest) -> Result<Box<dyn ReadAt>, Error> {
        Ok(Box::new(ProxyReader {
            client: self.client.clone(),
            ns: ns.to_string(),
            digest: d.to_string(),
        }))
    }

    fn writer(
        &self,
        ns: &str,
        ref_: &str,
        total: i64,
        expected: Option<Digest>,
    ) -> Result<Box<dyn BlobWriter>, Error> {
        let (tx, rx) = self
            .client
            .write_opt(with_namespace(ns))
            .map_err(Error::from_grpc)?;
        let mut writer = ProxyWriter {
            tx,
            rx,
            ref_: ref_.to_string(),
            offset: 0,
            total,
            digest: Digest::of(b""),
            started_at: SystemTime::now(),
            updated_at: SystemTime::now(),
            closed: false,
        };
        let resp = writer.exchange(WriteContentRequest {
            action: WriteAction::STAT.into(),
            ref_: ref_.to_string(),
            total,
            expected: expected.map(|d| d.to_string()).unwrap_or_default(),
            ..Default::default()
        })?;
        writer.total = resp.total.max(total);
        if let Some(at) = resp.started_at.as_ref() {
            writer.started_at = system_time(at);
        }
        Ok(Box::new(writer))
    }

    fn status(&self, ns: &str, ref_: &str) -> Result<Status, Error> {
        let resp = self
            .client
            .status_opt(
                &StatusRequest {
                    ref_: ref_.to_string(),
                    ..Default::default()
                },
                with_namespace(ns),
            )
            .map_err(Error::from_grpc)?;
        Ok(status_from(&resp.status.unwrap_or_default()))
    }

    fn list_statuses(&self, ns: &str) -> Result<Vec<Status>, Error> {
        let resp = self
            .client
            .list_statuses_opt(&ListStatusesRequest::default(), with_namespace(ns))
            .map_err(Error::from_grpc)?;
        Ok(resp.statuses.iter().map(status_from).collect())
    }

    fn abort(&self, ns: &str, ref_: &str) -> Result<(), Error> {
        self.client
            .abort_opt(
                &AbortRequest {
                    ref_: ref_.to_string(),
                    ..Default::default()
                },
                with_namespace(ns),
            )
            .map_err(Error::from_grpc)?;
        Ok(())
    }
}

/// Positional reads, one Read call per request.
struct ProxyReader {
    client: ContentClient,
    ns: String,
    digest: String,
}

impl ReadAt for ProxyReader {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize, Error> {
        let mut stream = self
            .client
            .read_opt(
                &ReadContentRequest {
                    digest: self.digest.clone(),
                    offset: offset as i64,
                    size: buf.len() as i64,
                    ..Default::default()
                },
                with_namespace(&self.ns),
            )
            .map_err(Error::from_grpc)?;
        futures_executor::block_on(async {
            let mut filled = 0;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(Error::from_grpc)?;
                let n = chunk.data.len().min(buf.len() - filled);
                buf[filled..filled + n].copy_from_slice(&chunk.data[..n]);
                filled += n;
            }
            Ok(filled)
        })
    }
}

/// One remote Write stream, driven a message at a time.
struct ProxyWriter {
    tx: ClientDuplexSender<WriteContentRequest>,
    rx: ClientDuplexReceiver<WriteContentResponse>,
    ref_: String,
    offset: i64,
    total: i64,
    digest: Digest,
    started_at: SystemTime,
    updated_at: SystemTime,
    /// The send side was closed (grpcio must not be asked twice).
    closed: bool,
}

impl ProxyWriter {
    fn close(&mut self) {
        if !self.closed {
            self.closed = true;
            let _ = futures_executor::block_on(self.tx.close());
        }
    }

    /// Sends one message and waits for its answer (or the call's error).
    fn exchange(&mut self, req: WriteContentRequest) -> Result<WriteContentResponse, Error> {
        let (tx, rx) = (&mut self.tx, &mut self.rx);
        let resp = futures_executor::block_on(async {
            if let Err(err) = tx.send((req, WriteFlags::default())).await {
                // The call is over; its status says why.
                return match rx.next().await {
                    Some(Err(status)) => Err(Error::from_grpc(status)),
                    _ => Err(Error::from_grpc(err)),
                };
            }
            match rx.next().await {
                Some(answer) => answer.map_err(Error::from_grpc),
                None => Err(Error::new(
                    Class::Unavailable,
                    "content proxy ended the write stream",
                )),
            }
        });
        // A failed exchange means the call is over; grpcio must not be asked to close it.
        let resp = resp.inspect_err(|_| self.closed = true)?;
        self.offset = resp.offset;
        if let Ok(d) = Digest::parse(&resp.digest) {
            self.digest = d;
        }
        self.updated_at = SystemTime::now();
        Ok(resp)
    }
}

impl BlobWriter for ProxyWriter {
    fn status(&self) -> Status {
        Status {
            ref_: self.ref_.clone(),
            offset: self.offset,
            total: self.total,
            expected: None,
            started_at: self.started_at,
            updated_at: self.updated_at,
        }
    }

    fn offset(&self) -> i64 {
        self.offset
    }

    fn set_total(&mut self, total: i64) -> Result<(), Error> {
        self.total = total;
        Ok(())
    }

    fn write(&mut self, data: &[u8]) -> Result<(), Error> {
        self.exchange(WriteContentRequest {
            action: WriteAction::WRITE.into(),
            offset: self.offset,
            total: self.total,
            data: data.to_vec(),
            ..Default::default()
        })
        .map(drop)
    }

    fn truncate(&mut self, size: i64) -> Result<(), Error> {
        if size != 0 {
            return Err(Error::unimplemented(
                "a content proxy can only truncate to 0",
            ));
        }
        self.exchange(WriteContentRequest {
            action: WriteAction::WRITE.into(),
            offset: 0,
            ..Default::default()
        })
        .map(drop)
    }

    fn digest(&self) -> Digest {
        self.digest.clone()
    }

    fn commit(mut self: Box<Self>, size: i64, expected: Option<Digest>) -> Result<Digest, Error> {
        let resp = self.exchange(WriteContentRequest {
            action: WriteAction::COMMIT.into(),
            offset: self.offset,
            total: size,
            expected: expected.map(|d| d.to_string()).unwrap_or_default(),
            // The other daemon must keep what ctrd committed; ctrd's records rule it.
            labels: [(
                crate::metadata::GC_ROOT_LABEL.to_string(),
                crate::timefmt::format_rfc3339(SystemTime::now()),
            )]
            .into(),
            ..Default::default()
        })?;
        self.close();
        Digest::parse(&resp.digest)
    }
}

impl Drop for ProxyWriter {
    fn drop(&mut self) {
        // Ends the remote call; an uncommitted ingest stays there, resumable.
        self.close();
    }
}
