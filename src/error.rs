//! The crate's error type: what went wrong, in one layer's words, with the cause behind `source()`.

use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::exit::Exit;

/// Everything that can stop lock-exec before or around the child command.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The command line is wrong; the message names the problem.
    Usage(String),
    /// Configuration is missing or wrong (no region, no credentials, a bad setting); the message says what
    /// and where lock-exec looked.
    Config(String),
    /// A shared AWS configuration or credentials file could not be parsed.
    Profile {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong with that line.
        message: String,
    },
    /// A credential source applied but could not supply credentials.
    Credentials {
        /// The source's name (`web identity`, `imds`, ...).
        provider: &'static str,
        /// What went wrong.
        message: String,
        /// True when the remote side refused our identity (maps to exit 77 rather than 78).
        denied: bool,
    },
    /// DynamoDB (or STS) answered with an error.
    Service(ServiceError),
    /// The HTTP exchange itself failed: connection refused, timeout, TLS.
    Transport {
        /// What we were talking to, e.g. `dynamodb at http://127.0.0.1:8000`.
        target: String,
        /// The transport's error.
        source: Box<dyn std::error::Error + Send + Sync>,
        /// Whether the request may have reached the server: false when it cannot have (the host did not resolve,
        /// the connection was refused or not made in time). An earlier attempt that may have been applied makes
        /// the call's error an [`Error::AfterLostAnswer`] around this one.
        sent: bool,
    },
    /// A call whose last attempt failed for certain after an earlier attempt's answer was lost (that request may
    /// have been applied): shown, and exiting, as the last error, but its outcome is unknown.
    AfterLostAnswer(Box<Error>),
    /// A file could not be read.
    Io {
        /// What was being read, e.g. `web identity token file /var/run/token`.
        what: String,
        /// The cause.
        source: io::Error,
    },
    /// The child command could not be started.
    Spawn {
        /// The program as given.
        program: String,
        /// The cause (`NotFound` -> 127, `PermissionDenied` -> 126).
        source: io::Error,
    },
    /// The lease could not be kept; the child was stopped.
    LockLost(String),
    /// Something inside lock-exec failed that should not have (a thread panicked before the command started).
    Internal(String),
    /// Standard output could not be written (not a broken pipe, which ends the output quietly).
    Output(io::Error),
    /// A thread lock-exec needs could not be created (a process or thread limit); nothing was run.
    Thread {
        /// The thread's job, e.g. `lease renewals`.
        what: &'static str,
        /// The cause.
        source: io::Error,
    },
}

/// An error answer from an AWS service, typed from `x-amzn-ErrorType` / `__type` or the XML `<Code>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceError {
    /// The service: `dynamodb`, `sts`, or `container credentials endpoint` (its 5xx answers).
    pub service: &'static str,
    /// The HTTP status.
    pub status: u16,
    /// The error code after the `#`, e.g. `ResourceNotFoundException`; empty when the body had none.
    pub code: String,
    /// The server's message, or a short excerpt of a body that was not the service's format.
    pub message: String,
}

/// Broad classes of service errors, as they decide retries and exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceErrorKind {
    /// The condition of a conditional write failed.
    ConditionalCheckFailed,
    /// The table does not exist.
    ResourceNotFound,
    /// The identity is not allowed, or the signature or token is wrong or expired.
    AccessDenied,
    /// The request was malformed.
    Validation,
    /// The service asked us to slow down.
    Throttling,
    /// The service failed (5xx).
    Server,
    /// Anything else.
    Other,
}

impl ServiceError {
    /// Classifies the error code and status.
    pub fn kind(&self) -> ServiceErrorKind {
        match self.code.as_str() {
            "ConditionalCheckFailedException" => ServiceErrorKind::ConditionalCheckFailed,
            "ResourceNotFoundException" => ServiceErrorKind::ResourceNotFound,
            "AccessDeniedException"
            | "AccessDenied"
            | "UnrecognizedClientException"
            | "InvalidSignatureException"
            | "SignatureDoesNotMatch"
            | "ExpiredTokenException"
            | "ExpiredToken"
            | "InvalidClientTokenId"
            | "MissingAuthenticationToken"
            | "IncompleteSignatureException"
            | "IncompleteSignature"
            | "AuthFailure"
            | "InvalidIdentityToken"
            | "MissingAuthenticationTokenException" => ServiceErrorKind::AccessDenied,
            "ValidationException" | "SerializationException" | "ValidationError" => ServiceErrorKind::Validation,
            "ThrottlingException"
            | "Throttling"
            | "ProvisionedThroughputExceededException"
            | "RequestLimitExceeded"
            | "TooManyRequestsException"
            | "LimitExceededException"
            | "SlowDown"
            | "PriorRequestNotComplete"
            | "RequestThrottled"
            | "RequestThrottledException"
            | "BandwidthLimitExceeded"
            | "TransactionInProgressException" => ServiceErrorKind::Throttling,
            _ if self.status >= 500 => ServiceErrorKind::Server,
            _ if self.status == 403 => ServiceErrorKind::AccessDenied,
            _ => ServiceErrorKind::Other,
        }
    }
}

impl fmt::Display for ServiceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let code = if self.code.is_empty() { "error" } else { &self.code };
        write!(f, "{} answered HTTP {} {}", self.service, self.status, code)?;
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for ServiceError {}

impl Error {
    /// The error itself, or the last attempt's error of an [`Error::AfterLostAnswer`]: for callers that act on what
    /// the last answer said (the table exists already, the call is not allowed), not on whether an earlier request
    /// may have been applied.
    pub fn into_last(self) -> Error {
        match self {
            Error::AfterLostAnswer(last) => *last,
            other => other,
        }
    }

    /// The exit code this error ends lock-exec with.
    pub fn exit(&self) -> Exit {
        match self {
            Error::AfterLostAnswer(last) => last.exit(),
            Error::Usage(_) => Exit::Usage,
            Error::Config(_) | Error::Profile { .. } | Error::Io { .. } => Exit::Config,
            Error::Credentials { denied: true, .. } => Exit::Denied,
            Error::Credentials { .. } => Exit::Config,
            Error::Service(e) => match e.kind() {
                ServiceErrorKind::AccessDenied => Exit::Denied,
                ServiceErrorKind::ResourceNotFound => Exit::Config,
                ServiceErrorKind::Throttling | ServiceErrorKind::Server => Exit::Unavailable,
                _ => Exit::Software,
            },
            Error::Transport { .. } => Exit::Unavailable,
            Error::Spawn { source, .. } => match source.kind() {
                io::ErrorKind::NotFound => Exit::NotFound,
                // fork itself failed (a process limit, no memory): an operating-system resource, not the command.
                io::ErrorKind::WouldBlock | io::ErrorKind::OutOfMemory => Exit::OsError,
                _ => Exit::NotExecutable,
            },
            Error::LockLost(_) => Exit::LockLost,
            Error::Thread { .. } => Exit::OsError,
            Error::Internal(_) => Exit::Software,
            Error::Output(_) => Exit::OutputError,
        }
    }

    /// Whether a failed write may still have been applied: the answer was lost (transport error, timeout), the
    /// server failed (5xx), or it said yes (2xx) in an answer that could not be read. A definite rejection
    /// (validation, access, missing table, throttling) was not.
    pub fn outcome_unknown(&self) -> bool {
        match self {
            Error::Transport { sent, .. } => *sent,
            Error::AfterLostAnswer(_) => true,
            Error::Service(e) => {
                e.status >= 500 || (200..300).contains(&e.status) || e.kind() == ServiceErrorKind::Server
            }
            _ => false,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Usage(message) | Error::Config(message) => f.write_str(message),
            Error::Profile { path, line, message } => write!(f, "{}:{}: {}", path.display(), line, message),
            Error::Credentials { provider, message, .. } => {
                write!(f, "credentials from {provider}: {message}")
            }
            Error::Service(e) => {
                write!(f, "{e}")?;
                match e.kind() {
                    ServiceErrorKind::ResourceNotFound => f.write_str(
                        " (does the table exist in this region and account? see README: creating the table)",
                    ),
                    ServiceErrorKind::AccessDenied => {
                        f.write_str(" (check the credentials, the clock, and the IAM policy; see README: IAM policy)")
                    }
                    _ => Ok(()),
                }
            }
            Error::Transport { target, .. } => write!(f, "cannot reach {target}"),
            Error::AfterLostAnswer(last) => write!(f, "{last}"),
            Error::Io { what, .. } => write!(f, "cannot read {what}"),
            Error::Spawn { program, source } => match source.kind() {
                io::ErrorKind::NotFound => write!(f, "{program}: command not found"),
                io::ErrorKind::PermissionDenied => write!(f, "{program}: permission denied"),
                _ => write!(f, "{program}: cannot start"),
            },
            Error::LockLost(message) => write!(f, "lock lost: {message}"),
            Error::Thread { what, .. } => write!(f, "cannot create the thread for {what}; nothing was run"),
            Error::Internal(message) => write!(f, "internal error: {message}"),
            Error::Output(e) => write!(f, "cannot write to standard output: {e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Transport { source, .. } => Some(source.as_ref()),
            Error::AfterLostAnswer(last) => last.source(),
            Error::Io { source, .. } | Error::Thread { source, .. } => Some(source),
            Error::Spawn { source, .. } => match source.kind() {
                io::ErrorKind::NotFound | io::ErrorKind::PermissionDenied => None,
                _ => Some(source),
            },
            _ => None,
        }
    }
}

impl From<ServiceError> for Error {
    fn from(e: ServiceError) -> Error {
        Error::Service(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(status: u16, code: &str) -> ServiceErrorKind {
        ServiceError { service: "dynamodb", status, code: code.into(), message: String::new() }.kind()
    }

    #[test]
    fn codes_are_classified() {
        assert_eq!(kind(400, "ConditionalCheckFailedException"), ServiceErrorKind::ConditionalCheckFailed);
        assert_eq!(kind(400, "ResourceNotFoundException"), ServiceErrorKind::ResourceNotFound);
        assert_eq!(kind(400, "UnrecognizedClientException"), ServiceErrorKind::AccessDenied);
        assert_eq!(kind(400, "ExpiredTokenException"), ServiceErrorKind::AccessDenied);
        assert_eq!(kind(400, "ProvisionedThroughputExceededException"), ServiceErrorKind::Throttling);
        assert_eq!(kind(403, ""), ServiceErrorKind::AccessDenied);
        assert_eq!(kind(503, ""), ServiceErrorKind::Server);
        assert_eq!(kind(400, "ValidationException"), ServiceErrorKind::Validation);
        assert_eq!(kind(400, "Weird"), ServiceErrorKind::Other);
    }

    #[test]
    fn exit_codes_follow_the_kind() {
        let service = |code: &str| {
            Error::Service(ServiceError { service: "dynamodb", status: 400, code: code.into(), message: "m".into() })
        };
        assert_eq!(service("AccessDeniedException").exit(), Exit::Denied);
        assert_eq!(service("ResourceNotFoundException").exit(), Exit::Config);
        assert_eq!(service("ThrottlingException").exit(), Exit::Unavailable);
        let missing = Error::Spawn { program: "x".into(), source: io::ErrorKind::NotFound.into() };
        assert_eq!(missing.exit(), Exit::NotFound);
        let denied = Error::Spawn { program: "x".into(), source: io::ErrorKind::PermissionDenied.into() };
        assert_eq!(denied.exit(), Exit::NotExecutable);
        let limited = Error::Spawn { program: "x".into(), source: io::Error::from_raw_os_error(libc::EAGAIN) };
        assert_eq!(limited.exit(), Exit::OsError);
    }

    #[test]
    fn only_lost_answers_server_failures_and_unreadable_successes_leave_the_outcome_unknown() {
        let service = |status: u16, code: &str| {
            Error::Service(ServiceError { service: "dynamodb", status, code: code.into(), message: "m".into() })
        };
        assert!(service(500, "InternalServerError").outcome_unknown());
        assert!(service(503, "").outcome_unknown());
        let transport =
            |sent| Error::Transport { target: "dynamodb".into(), source: Box::new(io::Error::other("reset")), sent };
        assert!(transport(true).outcome_unknown());
        // The host did not resolve, the connection was refused: nothing can have been written.
        assert!(!transport(false).outcome_unknown());
        // A throttled last attempt after one whose answer was lost: unknown, shown and exiting as the throttling.
        let after = Error::AfterLostAnswer(Box::new(service(400, "ThrottlingException")));
        assert!(after.outcome_unknown());
        assert_eq!(after.exit(), service(400, "ThrottlingException").exit());
        assert_eq!(after.to_string(), service(400, "ThrottlingException").to_string());
        // A 2xx whose body could not be read: the write was applied.
        assert!(service(200, "").outcome_unknown());
        assert!(service(200, "UnexpectedAnswer").outcome_unknown());
        for code in ["ValidationException", "AccessDeniedException", "ResourceNotFoundException", "ThrottlingException"]
        {
            assert!(!service(400, code).outcome_unknown(), "{code}");
        }
    }
}
