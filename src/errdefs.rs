//! Error classes shared by every service, and their single mapping to and from wire status.
//!
//! Service logic returns [`Error`]: a class plus a message written the way containerd writes
//! it (`namespace "foo": already exists`), because clients such as `ctr` print the message
//! verbatim. This module is the one place that turns an [`Error`] into a gRPC or ttrpc status
//! (servers: [`Error::to_grpc_status`], [`Error::to_ttrpc_status`]) and a status a peer sent
//! back into an [`Error`] (clients of proxies and shims: [`Error::from_grpc`],
//! [`Error::from_ttrpc`]). gRPC and ttrpc number their codes alike, so a shim's NotFound is
//! our NotFound and reaches `ctr` as NotFound with the shim's message.

use std::fmt;

/// What kind of failure an [`Error`] is; mirrors containerd's errdefs classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    Unknown,
    InvalidArgument,
    NotFound,
    AlreadyExists,
    FailedPrecondition,
    Unavailable,
    NotImplemented,
    PermissionDenied,
    ResourceExhausted,
    Aborted,
    OutOfRange,
    Internal,
    DataLoss,
    Unauthenticated,
    DeadlineExceeded,
    Canceled,
}

impl Class {
    /// The text containerd appends for this class (`": not found"`), empty for Unknown.
    pub fn text(self) -> &'static str {
        match self {
            Class::Unknown => "",
            Class::InvalidArgument => "invalid argument",
            Class::NotFound => "not found",
            Class::AlreadyExists => "already exists",
            Class::FailedPrecondition => "failed precondition",
            Class::Unavailable => "unavailable",
            Class::NotImplemented => "not implemented",
            Class::PermissionDenied => "permission denied",
            Class::ResourceExhausted => "resource exhausted",
            Class::Aborted => "aborted",
            Class::OutOfRange => "out of range",
            Class::Internal => "internal",
            Class::DataLoss => "data loss",
            Class::Unauthenticated => "unauthenticated",
            Class::DeadlineExceeded => "context deadline exceeded",
            Class::Canceled => "context canceled",
        }
    }

    /// The numeric gRPC status code (identical numbering is used by ttrpc).
    pub fn code(self) -> i32 {
        match self {
            Class::Canceled => 1,
            Class::Unknown => 2,
            Class::InvalidArgument => 3,
            Class::DeadlineExceeded => 4,
            Class::NotFound => 5,
            Class::AlreadyExists => 6,
            Class::PermissionDenied => 7,
            Class::ResourceExhausted => 8,
            Class::FailedPrecondition => 9,
            Class::Aborted => 10,
            Class::OutOfRange => 11,
            Class::NotImplemented => 12,
            Class::Internal => 13,
            Class::Unavailable => 14,
            Class::DataLoss => 15,
            Class::Unauthenticated => 16,
        }
    }

    /// The class for a numeric gRPC code, as a client sees it.
    pub fn from_code(code: i32) -> Class {
        match code {
            1 => Class::Canceled,
            3 => Class::InvalidArgument,
            4 => Class::DeadlineExceeded,
            5 => Class::NotFound,
            6 => Class::AlreadyExists,
            7 => Class::PermissionDenied,
            8 => Class::ResourceExhausted,
            9 => Class::FailedPrecondition,
            10 => Class::Aborted,
            11 => Class::OutOfRange,
            12 => Class::NotImplemented,
            13 => Class::Internal,
            14 => Class::Unavailable,
            15 => Class::DataLoss,
            16 => Class::Unauthenticated,
            _ => Class::Unknown,
        }
    }
}

/// The longest message a status carries: it travels in a header (`grpc-message`, percent
/// encoded), and a header past the client's limit turns the answer into
/// RESOURCE_EXHAUSTED. Quotes of input are cut far sooner (`identifiers::go_quote`).
pub const MAX_MESSAGE: usize = 2048;

/// `message`, cut to [`MAX_MESSAGE`] bytes (at a character boundary) with `...`.
pub fn bounded(mut message: String) -> String {
    if message.len() > MAX_MESSAGE {
        let mut cut = MAX_MESSAGE - 3;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
        message.push_str("...");
    }
    message
}

/// A classified error whose message is sent to the client as is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    class: Class,
    message: String,
}

impl Error {
    /// An error of `class` with a complete message.
    pub fn new(class: Class, message: impl Into<String>) -> Self {
        Error {
            class,
            message: message.into(),
        }
    }

    /// An error whose message ends in the class text, as Go's wrapped errdefs errors do:
    /// `Error::wrapped(NotFound, "lease \"x\"")` reads `lease "x": not found`.
    pub fn wrapped(class: Class, context: impl fmt::Display) -> Self {
        Error::new(class, format!("{context}: {}", class.text()))
    }

    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Error::new(Class::InvalidArgument, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Error::new(Class::NotFound, message)
    }
    pub fn already_exists(message: impl Into<String>) -> Self {
        Error::new(Class::AlreadyExists, message)
    }
    pub fn failed_precondition(message: impl Into<String>) -> Self {
        Error::new(Class::FailedPrecondition, message)
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        Error::new(Class::Unavailable, message)
    }
    pub fn unimplemented(message: impl Into<String>) -> Self {
        Error::new(Class::NotImplemented, message)
    }
    pub fn out_of_range(message: impl Into<String>) -> Self {
        Error::new(Class::OutOfRange, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Error::new(Class::Internal, message)
    }
    pub fn unknown(message: impl Into<String>) -> Self {
        Error::new(Class::Unknown, message)
    }

    pub fn class(&self) -> Class {
        self.class
    }
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Prefixes the message with more context, keeping the class.
    pub fn context(self, context: impl fmt::Display) -> Self {
        Error::new(self.class, format!("{context}: {}", self.message))
    }

    /// The gRPC status code this error travels as.
    pub fn grpc_code(&self) -> grpcio::RpcStatusCode {
        grpcio::RpcStatusCode::from(self.class.code())
    }

    /// The ttrpc status code this error travels as.
    pub fn ttrpc_code(&self) -> ttrpc::Code {
        <ttrpc::Code as protobuf::Enum>::from_i32(self.class.code()).unwrap_or(ttrpc::Code::UNKNOWN)
    }

    /// The gRPC status carrying this error (the message cut to [`MAX_MESSAGE`] bytes).
    pub fn to_grpc_status(&self) -> grpcio::RpcStatus {
        grpcio::RpcStatus::with_message(self.grpc_code(), bounded(self.message.clone()))
    }

    /// The ttrpc status carrying this error.
    pub fn to_ttrpc_status(&self) -> ttrpc::Status {
        ttrpc::get_status(self.ttrpc_code(), bounded(self.message.clone()))
    }

    /// The error a peer reported with a numeric status `code` (gRPC and ttrpc alike): the
    /// class of the code, the message as the peer wrote it.
    pub fn from_status(code: i32, message: impl Into<String>) -> Self {
        Error::new(Class::from_code(code), message)
    }

    /// What a gRPC client call's failure means here: the peer's status as its class, and a
    /// failure to reach the peer as Unavailable.
    pub fn from_grpc(err: grpcio::Error) -> Self {
        match err {
            grpcio::Error::RpcFailure(status) => {
                Error::from_status(i32::from(status.code()), status.message())
            }
            other => Error::unavailable(format!("proxy connection: {other}")),
        }
    }

    /// What a ttrpc client call's failure means here: the peer's status as its class (a
    /// shim's NotFound is NotFound), a timeout as DeadlineExceeded, and a failure to reach
    /// the peer or a lost connection as Unavailable.
    pub fn from_ttrpc(err: ttrpc::Error) -> Self {
        match err {
            ttrpc::Error::RpcStatus(status) => {
                Error::from_status(status.code.value(), status.message)
            }
            ttrpc::Error::Others(text) if text.contains("timed out") => {
                Error::new(Class::DeadlineExceeded, format!("ttrpc: {text}"))
            }
            other => Error::unavailable(format!("ttrpc: {other}")),
        }
    }
}

/// A service handler's error as ttrpc sends it.
impl From<Error> for ttrpc::Error {
    fn from(err: Error) -> Self {
        ttrpc::Error::RpcStatus(err.to_ttrpc_status())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl From<std::io::Error> for Error {
    fn from(err: std::io::Error) -> Self {
        let class = match err.kind() {
            std::io::ErrorKind::NotFound => Class::NotFound,
            std::io::ErrorKind::AlreadyExists => Class::AlreadyExists,
            std::io::ErrorKind::PermissionDenied => Class::PermissionDenied,
            std::io::ErrorKind::InvalidInput => Class::InvalidArgument,
            _ => Class::Unknown,
        };
        Error::new(class, err.to_string())
    }
}

/// A filter that does not parse is the request's fault: InvalidArgument, text unchanged.
impl From<crate::filters::FilterError> for Error {
    fn from(err: crate::filters::FilterError) -> Self {
        Error::invalid_argument(err.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrapped_reads_like_containerd() {
        let err = Error::wrapped(Class::AlreadyExists, "namespace \"foo\"");
        assert_eq!(err.message(), "namespace \"foo\": already exists");
        assert_eq!(err.grpc_code(), grpcio::RpcStatusCode::ALREADY_EXISTS);
    }

    #[test]
    fn codes_round_trip() {
        for code in 1..=16 {
            assert_eq!(Class::from_code(code).code(), code);
        }
        assert_eq!(Class::from_code(0), Class::Unknown);
        assert_eq!(Class::from_code(99), Class::Unknown);
    }

    #[test]
    fn ttrpc_status_round_trips_every_class() {
        for code in 1..=16 {
            let sent = Error::new(Class::from_code(code), format!("thing {code}: whatever"));
            let status = sent.to_ttrpc_status();
            assert_eq!(status.code.value(), code);
            let back = Error::from_ttrpc(ttrpc::Error::from(sent.clone()));
            assert_eq!(back, sent);
        }
    }

    #[test]
    fn shim_not_found_stays_not_found_with_its_message() {
        let shim = ttrpc::Error::RpcStatus(ttrpc::get_status(
            ttrpc::Code::NOT_FOUND,
            "process already finished: not found",
        ));
        let err = Error::from_ttrpc(shim);
        assert_eq!(err.class(), Class::NotFound);
        assert_eq!(err.message(), "process already finished: not found");
        let status = err.to_grpc_status();
        assert_eq!(status.code(), grpcio::RpcStatusCode::NOT_FOUND);
        assert_eq!(status.message(), "process already finished: not found");
    }

    #[test]
    fn ttrpc_transport_failures_are_unavailable_or_deadline() {
        let gone = Error::from_ttrpc(ttrpc::Error::RemoteClosed);
        assert_eq!(gone.class(), Class::Unavailable);
        let slow = Error::from_ttrpc(ttrpc::Error::Others(
            "Receive packet from Receiver timeout: timed out waiting on channel".into(),
        ));
        assert_eq!(slow.class(), Class::DeadlineExceeded);
    }

    #[test]
    fn grpc_failures_keep_class_and_message() {
        let status = grpcio::RpcStatus::with_message(
            grpcio::RpcStatusCode::ALREADY_EXISTS,
            "content sha256:x: already exists".into(),
        );
        let err = Error::from_grpc(grpcio::Error::RpcFailure(status));
        assert_eq!(err.class(), Class::AlreadyExists);
        assert_eq!(err.message(), "content sha256:x: already exists");
        let down = Error::from_grpc(grpcio::Error::RemoteStopped);
        assert_eq!(down.class(), Class::Unavailable);
    }

    #[test]
    fn conflict_classes_map_to_failed_precondition() {
        let err = Error::failed_precondition("x");
        assert_eq!(err.grpc_code(), grpcio::RpcStatusCode::FAILED_PRECONDITION);
        assert_eq!(err.ttrpc_code(), ttrpc::Code::FAILED_PRECONDITION);
    }
}
