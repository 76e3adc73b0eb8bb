//! Stream processors: the `[stream_processors.<id>]` binaries that turn a layer stream of
//! one media type into another (containerd's `BinaryHandler`), e.g. a decryptor or `unpigz`.
//!
//! A processor runs as a child process:
//! 1. it is started with its `args`, the daemon's environment plus its `env`, and
//!    `STREAM_PROCESSOR_MEDIATYPE=<input media type>`;
//! 2. a thread named `ctrd-stream-in` copies the input to its stdin, another
//!    (`ctrd-stream-err`) collects its stderr;
//! 3. the caller reads its stdout through [`ProcessorOutput`], whose media type is the
//!    processor's `returns`; the read that meets the end of stdout waits for the process and
//!    fails, with the stderr text, if it exited non-zero or the input could not be read;
//! 4. dropping the output early kills the process.
//!
//! containerd also hands a per-processor payload (decryption keys) on file descriptor 3;
//! that is not done here.

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;

use super::compression::{self, LayerCompression, MEDIA_TYPE_LAYER};
use crate::config::StreamProcessor;
use crate::errdefs::Error;

/// The variable that tells a processor the media type of its input.
pub const MEDIA_TYPE_ENV: &str = "STREAM_PROCESSOR_MEDIATYPE";

/// How many processors one layer may pass through before the chain is taken for a loop.
const MAX_CHAIN: usize = 16;

/// The configured processors, ordered by id.
#[derive(Debug, Clone, Default)]
pub struct Processors {
    list: Vec<(String, StreamProcessor)>,
}

impl Processors {
    /// The processors of a `[stream_processors]` table.
    pub fn new(config: &BTreeMap<String, StreamProcessor>) -> Processors {
        Processors {
            list: config
                .iter()
                .map(|(id, processor)| (id.clone(), processor.clone()))
                .collect(),
        }
    }

    /// The first processor (by id) that accepts `media_type`.
    pub fn for_media_type(&self, media_type: &str) -> Option<&(String, StreamProcessor)> {
        self.list
            .iter()
            .find(|(_, processor)| processor.accepts.iter().any(|mt| mt == media_type))
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
}

/// Turns a layer blob of `media_type` into an uncompressed tar, as containerd's applier
/// does: while a configured processor accepts the current media type it runs (configured
/// processors come first), then compressed layer types are decompressed by magic bytes.
/// Errors of a processor surface on the final read of the returned stream.
pub fn uncompressed_layer(
    processors: &Processors,
    media_type: &str,
    input: Box<dyn Read + Send>,
) -> Result<Box<dyn Read + Send>, Error> {
    let mut current = media_type.to_string();
    let mut stream = input;
    for _ in 0..MAX_CHAIN {
        if let Some((id, processor)) = processors.for_media_type(&current) {
            let output = run(id, processor, &current, stream)?;
            current = output.media_type().to_string();
            stream = Box::new(output);
        } else {
            let compression = compression::layer_compression(&current).map_err(|err| {
                err.context(format!(
                    "failed to get stream processor for {media_type}: no processor for media-type"
                ))
            })?;
            if compression != LayerCompression::None {
                stream = compression::decompress(stream)?;
            }
            return Ok(stream);
        }
        if current == MEDIA_TYPE_LAYER {
            return Ok(stream);
        }
    }
    Err(Error::invalid_argument(format!(
        "stream processors for {media_type}: more than {MAX_CHAIN} in a chain"
    )))
}

/// Starts processor `id` on `input` of `media_type`. A binary that cannot be started is
/// an error here; a failure while running is one from the output's final read or
/// [`ProcessorOutput::wait`].
pub fn run(
    id: &str,
    processor: &StreamProcessor,
    media_type: &str,
    input: impl Read + Send + 'static,
) -> Result<ProcessorOutput, Error> {
    let mut command = Command::new(&processor.path);
    command
        .args(&processor.args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for variable in &processor.env {
        match variable.split_once('=') {
            Some((key, value)) => command.env(key, value),
            None => command.env(variable, ""),
        };
    }
    command.env(MEDIA_TYPE_ENV, media_type);
    let mut child = command.spawn().map_err(|err| {
        Error::unknown(format!(
            "stream processor {id} failed: exec {:?}: {err}",
            processor.path
        ))
    })?;
    let (Some(stdin), Some(stdout), Some(mut stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(Error::internal("stream processor pipes missing"));
    };

    let spawn = |name: &str| std::thread::Builder::new().name(name.to_string());
    let feeder = spawn("ctrd-stream-in").spawn(move || {
        let mut input = input;
        let mut stdin = stdin;
        match io::copy(&mut input, &mut stdin) {
            Ok(_) => Ok(()),
            // The process stopped reading; its exit status tells whether that was wrong.
            Err(err) if err.kind() == io::ErrorKind::BrokenPipe => Ok(()),
            Err(err) => Err(err),
        }
    });
    let feeder = match feeder {
        Ok(handle) => handle,
        Err(err) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(Error::from(err).context("stream processor thread"));
        }
    };
    let collector = spawn("ctrd-stream-err").spawn(move || {
        let mut text = Vec::new();
        let _ = stderr.read_to_end(&mut text);
        text
    });
    let collector = match collector {
        Ok(handle) => handle,
        Err(err) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(Error::from(err).context("stream processor thread"));
        }
    };
    Ok(ProcessorOutput {
        id: id.to_string(),
        media_type: processor.returns.clone(),
        child: Some(child),
        stdout,
        feeder: Some(feeder),
        collector: Some(collector),
        outcome: None,
    })
}

/// A running processor's stdout, with the media type it produces.
pub struct ProcessorOutput {
    id: String,
    media_type: String,
    /// `None` once waited for.
    child: Option<Child>,
    stdout: ChildStdout,
    feeder: Option<JoinHandle<io::Result<()>>>,
    collector: Option<JoinHandle<Vec<u8>>>,
    /// How the process ended, once known.
    outcome: Option<Result<(), Error>>,
}

impl ProcessorOutput {
    /// The media type of the output (the processor's `returns`).
    pub fn media_type(&self) -> &str {
        &self.media_type
    }

    /// The processor's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Reads and discards what is left of the output, then waits for the process: an error
    /// if it failed (its message ends with the processor's stderr).
    pub fn wait(&mut self) -> Result<(), Error> {
        if self.outcome.is_none() {
            let mut rest = io::sink();
            if let Err(err) = io::copy(&mut self.stdout, &mut rest) {
                let _ = self.finish();
                return Err(Error::from(err).context(format!("stream processor {}", self.id)));
            }
        }
        self.finish()
    }

    /// Waits for the process and both threads once; later calls repeat the outcome.
    fn finish(&mut self) -> Result<(), Error> {
        if let Some(outcome) = &self.outcome {
            return outcome.clone();
        }
        let status = match self.child.take().map(|mut child| child.wait()) {
            Some(Ok(status)) => Some(status),
            Some(Err(err)) => {
                let outcome =
                    Err(Error::from(err).context(format!("stream processor {}", self.id)));
                self.outcome = Some(outcome.clone());
                return outcome;
            }
            None => None,
        };
        let stderr = self
            .collector
            .take()
            .and_then(|handle| handle.join().ok())
            .unwrap_or_default();
        let fed = self
            .feeder
            .take()
            .map(|handle| {
                handle
                    .join()
                    .unwrap_or_else(|_| Err(io::Error::other("panicked")))
            })
            .unwrap_or(Ok(()));
        let stderr = String::from_utf8_lossy(&stderr).trim_end().to_string();
        let outcome = match (status, fed) {
            (Some(status), _) if !status.success() => Err(Error::unknown(format!(
                "stream processor {} failed: {}: {stderr}",
                self.id,
                describe(status)
            ))),
            (_, Err(err)) => Err(Error::unknown(format!(
                "stream processor {} failed: reading input: {err}",
                self.id
            ))),
            _ => Ok(()),
        };
        self.outcome = Some(outcome.clone());
        outcome
    }
}

/// An exit status as Go's `exec.ExitError` prints it.
fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(signal)) => format!("signal: {signal}"),
        _ => status.to_string(),
    }
}

impl Read for ProcessorOutput {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(Err(err)) = &self.outcome {
            return Err(io::Error::other(err.clone()));
        }
        let n = self.stdout.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.finish().map_err(io::Error::other)?;
        }
        Ok(n)
    }
}

impl Drop for ProcessorOutput {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diff::compression::{DiffWriter, MEDIA_TYPE_LAYER_GZIP};
    use std::io::{Cursor, Write};
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

    fn script(dir: &Path, name: &str, body: &str) -> String {
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write script");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        path.display().to_string()
    }

    fn processor(path: String, accepts: &str, returns: &str) -> StreamProcessor {
        StreamProcessor {
            accepts: vec![accepts.to_string()],
            returns: returns.to_string(),
            path,
            args: Vec::new(),
            env: Vec::new(),
        }
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut writer =
            DiffWriter::for_media_type(MEDIA_TYPE_LAYER_GZIP, Vec::new()).expect("writer");
        writer.write_all(data).expect("write");
        writer.finish().expect("finish").0
    }

    #[test]
    fn a_processor_transforms_the_stream() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = script(dir.path(), "unzip", "exec gzip -d -c");
        let unzip = processor(path, MEDIA_TYPE_LAYER_GZIP, MEDIA_TYPE_LAYER);
        let data = b"tar bytes ".repeat(10_000);
        let mut output = run(
            "unzip",
            &unzip,
            MEDIA_TYPE_LAYER_GZIP,
            Cursor::new(gzip(&data)),
        )
        .expect("run");
        assert_eq!(output.media_type(), MEDIA_TYPE_LAYER);
        let mut out = Vec::new();
        output.read_to_end(&mut out).expect("read");
        assert_eq!(out, data);
        output.wait().expect("wait");
    }

    #[test]
    fn args_env_and_media_type_reach_the_process() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = script(
            dir.path(),
            "echo",
            "cat >/dev/null; printf '%s|%s|%s' \"$1\" \"$GREETING\" \"$STREAM_PROCESSOR_MEDIATYPE\"",
        );
        let mut echo = processor(path, "in/type", "out/type");
        echo.args = vec!["first-arg".into()];
        echo.env = vec!["GREETING=hello=world".into()];
        let mut output =
            run("echo", &echo, "in/type", Cursor::new(b"ignored".to_vec())).expect("run");
        let mut out = String::new();
        output.read_to_string(&mut out).expect("read");
        assert_eq!(out, "first-arg|hello=world|in/type");
    }

    #[test]
    fn a_failing_processor_reports_its_stderr() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = script(
            dir.path(),
            "fail",
            "cat >/dev/null; echo 'bad key' >&2; exit 1",
        );
        let fail = processor(path, "in/type", "out/type");
        let mut output = run(
            "io.test.fail",
            &fail,
            "in/type",
            Cursor::new(vec![7u8; 100_000]),
        )
        .expect("run");
        let err = output.read_to_end(&mut Vec::new()).expect_err("read fails");
        assert_eq!(
            err.to_string(),
            "stream processor io.test.fail failed: exit status 1: bad key"
        );
        let err = output.wait().expect_err("wait fails too");
        assert_eq!(
            err.message(),
            "stream processor io.test.fail failed: exit status 1: bad key"
        );
    }

    #[test]
    fn a_missing_binary_is_an_error() {
        let missing = processor("/nonexistent/ctrd-processor".into(), "a", "b");
        let err = run("missing", &missing, "a", io::empty())
            .err()
            .expect("spawn fails");
        assert!(
            err.message()
                .starts_with("stream processor missing failed: exec"),
            "{err}"
        );
    }

    #[test]
    fn lookup_picks_the_first_id_that_accepts() {
        let config = BTreeMap::from([
            ("b".to_string(), processor("/b".into(), "x", "y")),
            ("a".to_string(), processor("/a".into(), "x", "z")),
            ("c".to_string(), processor("/c".into(), "y", "z")),
        ]);
        let processors = Processors::new(&config);
        assert_eq!(
            processors.for_media_type("x").map(|p| p.0.as_str()),
            Some("a")
        );
        assert_eq!(
            processors.for_media_type("y").map(|p| p.0.as_str()),
            Some("c")
        );
        assert!(processors.for_media_type("z").is_none());
    }

    #[test]
    fn the_chain_ends_in_an_uncompressed_tar() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = b"layer".repeat(1000);
        let read = |processors: &Processors, media_type: &str, input: Vec<u8>| {
            let mut out = Vec::new();
            uncompressed_layer(processors, media_type, Box::new(Cursor::new(input)))
                .expect("chain")
                .read_to_end(&mut out)
                .map(|_| out)
        };

        // Built-in gzip when nothing is configured; plain tar passes through.
        let none = Processors::default();
        assert_eq!(
            read(&none, MEDIA_TYPE_LAYER_GZIP, gzip(&data)).expect("read"),
            data
        );
        assert_eq!(
            read(&none, MEDIA_TYPE_LAYER, data.clone()).expect("read"),
            data
        );

        // A configured processor goes first: custom type -> gzip -> built-in inflate.
        let path = script(dir.path(), "cat", "exec cat");
        let config = BTreeMap::from([(
            "io.test.cat".to_string(),
            processor(path, "application/x-custom", MEDIA_TYPE_LAYER_GZIP),
        )]);
        let configured = Processors::new(&config);
        assert_eq!(
            read(&configured, "application/x-custom", gzip(&data)).expect("read"),
            data
        );

        // A failure deep in the chain reaches the final read.
        let path = script(dir.path(), "fail", "cat >/dev/null; echo nope >&2; exit 3");
        let config = BTreeMap::from([(
            "io.test.fail".to_string(),
            processor(path, "application/x-custom", MEDIA_TYPE_LAYER),
        )]);
        let failing = Processors::new(&config);
        let err = read(&failing, "application/x-custom", data.clone()).expect_err("fails");
        assert!(err.to_string().contains("exit status 3: nope"), "{err}");

        let err = uncompressed_layer(&none, "application/json", Box::new(io::empty()))
            .err()
            .expect("unknown type");
        assert!(
            err.message().contains("no processor for media-type"),
            "{err}"
        );
    }
}
