//! Content API load: ingests of fresh random blobs through `Content/Write` and reads back
//! through `Content/Read`, timed on the client, and the daemon's peak RSS while they run.
//!
//! An ingest is what a well-behaved client sends: STAT with ref, total and expected digest,
//! WRITEs of 1 MiB with their offsets, then COMMIT with total, expected digest and a
//! `containerd.io/gc.root` label (so the blob outlives any garbage collection until it is read
//! back). WRITEs are pipelined: the next one goes out without waiting for the previous
//! answer, and answers are checked as they arrive, so the figure is the daemon's, not the
//! client's round trips. Blob bytes and digests are made before the clock starts; a read keeps
//! the chunks it received and checks their digest after the clock stops.

use std::fs;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant, SystemTime};

use ctrd::api::content::{
    ContentClient, ReadContentRequest, WriteAction, WriteContentRequest, WriteContentResponse,
};
use ctrd::timefmt::format_rfc3339;
use futures_util::{SinkExt, StreamExt};
use grpcio::{CallOption, ChannelBuilder, EnvBuilder, WriteFlags};
use sha2::{Digest as _, Sha256};

/// Bytes per WRITE message.
const CHUNK: usize = 1 << 20;
const MIB: f64 = (1 << 20) as f64;
const CONNECT_DEADLINE: Duration = Duration::from_secs(10);

/// Why a content measurement could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    #[error("{call} {subject}")]
    Rpc {
        call: &'static str,
        subject: String,
        #[source]
        source: Box<grpcio::Error>,
    },
    #[error("cannot connect to {socket} in {}s", CONNECT_DEADLINE.as_secs())]
    Connect { socket: String },
    #[error("ingest {ref_}: {problem}")]
    Ingest { ref_: String, problem: String },
    #[error("read {digest}: {problem}")]
    Read { digest: String, problem: String },
    #[error("/proc/{pid}/{file}")]
    Proc {
        pid: u32,
        file: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("/proc/{pid}/status has no {field}")]
    ProcField { pid: u32, field: &'static str },
}

/// A client whose connection is up, so connecting is not part of what is timed.
fn client(socket: &str) -> Result<ContentClient, ContentError> {
    let env = Arc::new(EnvBuilder::new().cq_count(1).build());
    let channel = ChannelBuilder::new(env).connect(&format!("unix:{socket}"));
    if !futures_executor::block_on(channel.wait_for_connected(CONNECT_DEADLINE)) {
        return Err(ContentError::Connect {
            socket: socket.to_string(),
        });
    }
    Ok(ContentClient::new(channel))
}

fn namespaced() -> CallOption {
    let mut headers = grpcio::MetadataBuilder::new();
    headers
        .add_str("containerd-namespace", "default")
        .expect("a constant ASCII header is valid");
    CallOption::default().headers(headers.build())
}

/// `len` bytes from xorshift seeded by `seed`, cut into WRITE-sized chunks, and their digest.
fn blob(len: usize, seed: u64) -> (Vec<Vec<u8>>, String) {
    let mut x = seed | 1;
    let mut hasher = Sha256::new();
    let mut chunks = Vec::with_capacity(len.div_ceil(CHUNK));
    let mut left = len;
    while left > 0 {
        let n = left.min(CHUNK);
        let mut chunk = Vec::with_capacity(n + 8);
        while chunk.len() < n {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.extend_from_slice(&x.to_le_bytes());
        }
        chunk.truncate(n);
        hasher.update(&chunk);
        chunks.push(chunk);
        left -= n;
    }
    (chunks, format!("sha256:{:x}", hasher.finalize()))
}

/// One Write stream for `chunks`; returns the COMMIT's answer once the server ends the call.
fn ingest_one(
    client: &ContentClient,
    ref_: &str,
    chunks: Vec<Vec<u8>>,
    digest: &str,
) -> Result<(), ContentError> {
    let total: usize = chunks.iter().map(Vec::len).sum();
    let rpc = |source| ContentError::Rpc {
        call: "Content/Write",
        subject: ref_.to_string(),
        source: Box::new(source),
    };
    let mut labels = std::collections::HashMap::new();
    labels.insert(
        "containerd.io/gc.root".to_string(),
        format_rfc3339(SystemTime::now()),
    );
    let mut msgs = Vec::with_capacity(chunks.len() + 2);
    msgs.push(WriteContentRequest {
        action: WriteAction::STAT.into(),
        ref_: ref_.to_string(),
        total: total as i64,
        expected: digest.to_string(),
        ..Default::default()
    });
    let mut offset = 0;
    for data in chunks {
        let len = data.len();
        msgs.push(WriteContentRequest {
            action: WriteAction::WRITE.into(),
            offset: offset as i64,
            data,
            ..Default::default()
        });
        offset += len;
    }
    msgs.push(WriteContentRequest {
        action: WriteAction::COMMIT.into(),
        total: total as i64,
        offset: total as i64,
        expected: digest.to_string(),
        labels,
        ..Default::default()
    });
    let sent = msgs.len();

    let (mut tx, mut rx) = client.write_opt(namespaced()).map_err(rpc)?;
    let send = async move {
        for msg in msgs {
            tx.send((msg, WriteFlags::default())).await?;
        }
        // A server may end the call as soon as it answered the COMMIT (ctrd does), before
        // this half-close arrives: then the close fails, and the answers tell the outcome.
        let _ = tx.close().await;
        Ok::<_, grpcio::Error>(())
    };
    let receive = async move {
        let mut answers: Vec<WriteContentResponse> = Vec::with_capacity(sent);
        while let Some(answer) = rx.next().await {
            answers.push(answer?);
        }
        Ok::<_, grpcio::Error>(answers)
    };
    let (sent_result, answers) =
        futures_executor::block_on(futures_util::future::join(send, receive));
    // The status the server ended the call with explains a failed send better than the send.
    let answers = answers.map_err(rpc)?;
    sent_result.map_err(rpc)?;

    let problem = |problem: String| ContentError::Ingest {
        ref_: ref_.to_string(),
        problem,
    };
    let last = answers
        .last()
        .ok_or_else(|| problem("the server ended the call without an answer".into()))?;
    // containerd 1.6 answers a COMMIT twice; fewer answers than messages is the failure.
    if answers.len() < sent {
        return Err(problem(format!(
            "{} answers to {sent} messages",
            answers.len()
        )));
    }
    if last.action.enum_value() != Ok(WriteAction::COMMIT) || last.digest != digest {
        return Err(problem(format!(
            "last answer is {:?} {:?}, not the COMMIT of {digest}",
            last.action, last.digest
        )));
    }
    if last.offset != total as i64 {
        return Err(problem(format!(
            "committed at offset {} of {total}",
            last.offset
        )));
    }
    Ok(())
}

fn status_kb(pid: u32, field: &'static str) -> Result<u64, ContentError> {
    let status =
        fs::read_to_string(format!("/proc/{pid}/status")).map_err(|source| ContentError::Proc {
            pid,
            file: "status",
            source,
        })?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .ok_or(ContentError::ProcField { pid, field })
}

/// `parallel` concurrent ingests of `mib` MiB each, refs `<prefix>-<i>`, one JSON line. With
/// `pid`, the daemon's peak RSS over the ingests: VmHWM, reset to the current RSS just before
/// they start (`clear_refs` 5), read just after they end.
pub fn ingest(
    socket: &str,
    mib: usize,
    parallel: usize,
    prefix: &str,
    pid: Option<u32>,
) -> Result<(), ContentError> {
    let seed = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64
        ^ u64::from(std::process::id()) << 32;
    let start_line = Arc::new(Barrier::new(parallel + 1));
    let workers: Vec<_> = (0..parallel)
        .map(|i| {
            let (socket, ref_) = (socket.to_string(), format!("{prefix}-{i}"));
            let start_line = Arc::clone(&start_line);
            std::thread::spawn(move || {
                let (chunks, digest) = blob(mib << 20, seed.wrapping_add(i as u64 * 0x9e37));
                let client = client(&socket);
                start_line.wait();
                let result = client.and_then(|client| ingest_one(&client, &ref_, chunks, &digest));
                (result.map(|()| digest), Instant::now())
            })
        })
        .collect();

    let rss_before = match pid {
        Some(pid) => {
            let rss = status_kb(pid, "VmRSS")?;
            fs::write(format!("/proc/{pid}/clear_refs"), "5").map_err(|source| {
                ContentError::Proc {
                    pid,
                    file: "clear_refs",
                    source,
                }
            })?;
            Some(rss)
        }
        None => None,
    };
    start_line.wait();
    let start = Instant::now();
    let mut digests = Vec::with_capacity(parallel);
    let mut end = start;
    let mut first_error = None;
    for worker in workers {
        let (result, done) = worker.join().expect("an ingest thread does not panic");
        end = end.max(done);
        match result {
            Ok(digest) => digests.push(format!("\"{digest}\"")),
            Err(err) => first_error = first_error.or(Some(err)),
        }
    }
    if let Some(err) = first_error {
        return Err(err);
    }
    let peak = pid.map(|pid| status_kb(pid, "VmHWM")).transpose()?;

    let seconds = end.duration_since(start).as_secs_f64();
    let mut line = format!(
        "{{\"parallel\": {parallel}, \"mib_each\": {mib}, \"seconds\": {seconds:.3}, \"mib_per_s\": {:.1}, \"digests\": [{}]",
        (parallel * mib) as f64 / seconds,
        digests.join(", ")
    );
    if let (Some(before), Some(peak)) = (rss_before, peak) {
        line.push_str(&format!(
            ", \"rss_before_kb\": {before}, \"peak_rss_kb\": {peak}"
        ));
    }
    line.push('}');
    println!("{line}");
    Ok(())
}

/// Reads `digest` whole (offset 0, size 0), one JSON line; fails unless the bytes hash to it.
pub fn read(socket: &str, digest: &str) -> Result<(), ContentError> {
    let client = client(socket)?;
    let request = ReadContentRequest {
        digest: digest.to_string(),
        offset: 0,
        size: 0,
        ..Default::default()
    };
    let rpc = |source| ContentError::Rpc {
        call: "Content/Read",
        subject: digest.to_string(),
        source: Box::new(source),
    };
    let problem = |problem: String| ContentError::Read {
        digest: digest.to_string(),
        problem,
    };
    let start = Instant::now();
    let mut stream = client.read_opt(&request, namespaced()).map_err(rpc)?;
    let chunks = futures_executor::block_on(async {
        let mut chunks = Vec::new();
        let mut offset = 0i64;
        while let Some(answer) = stream.next().await {
            let answer = answer?;
            if answer.offset != offset {
                return Ok(Err(answer.offset));
            }
            offset += answer.data.len() as i64;
            chunks.push(answer.data);
        }
        Ok(Ok(chunks))
    })
    .map_err(rpc)?;
    let seconds = start.elapsed().as_secs_f64();
    let chunks = chunks.map_err(|at| problem(format!("a chunk at offset {at} out of order")))?;

    let mut hasher = Sha256::new();
    let mut bytes = 0;
    for chunk in &chunks {
        hasher.update(chunk);
        bytes += chunk.len();
    }
    let got = format!("sha256:{:x}", hasher.finalize());
    if got != digest {
        return Err(problem(format!("{bytes} bytes received hash to {got}")));
    }
    println!(
        "{{\"bytes\": {bytes}, \"chunks\": {}, \"seconds\": {seconds:.3}, \"mib_per_s\": {:.1}}}",
        chunks.len(),
        bytes as f64 / MIB / seconds
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_is_cut_into_write_sized_chunks_with_the_whole_digest() {
        let (chunks, digest) = blob(CHUNK * 2 + 5, 7);
        assert_eq!(
            chunks.iter().map(Vec::len).collect::<Vec<_>>(),
            [CHUNK, CHUNK, 5]
        );
        let whole: Vec<u8> = chunks.concat();
        assert_eq!(digest, format!("sha256:{:x}", Sha256::digest(&whole)));
        assert_ne!(blob(64, 1).1, blob(64, 2).1);
    }
}
