//! Error classes shared by every service, and their single mapping to wire codes.
//!
//! Service logic returns [`Error`]: a class plus a message written the way containerd writes
//! it (`namespace "foo": already exists`), because clients such as `ctr` print the message
//! verbatim. Only the transport adapters call [`Error::grpc_code`] or [`Error::ttrpc_code`].

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

    /// The gRPC status carrying this error.
    pub fn to_grpc_status(&self) -> grpcio::RpcStatus {
        grpcio::RpcStatus::with_message(self.grpc_code(), self.message.clone())
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
    fn conflict_classes_map_to_failed_precondition() {
        let err = Error::failed_precondition("x");
        assert_eq!(err.grpc_code(), grpcio::RpcStatusCode::FAILED_PRECONDITION);
        assert_eq!(err.ttrpc_code(), ttrpc::Code::FAILED_PRECONDITION);
    }
}
