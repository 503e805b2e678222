//! lock-exec: run a command at most once across many machines, holding a lock item in a DynamoDB table.
//!
//! The binary is the product; the library exposes its parts for the integration tests and for reuse.
//! See ARCHITECTURE.md for the codemap.

#![deny(unsafe_code)]
#![deny(missing_docs)]

pub mod aws;
pub mod cli;
pub mod clock;
pub mod commands;
pub mod config;
pub mod duration;
pub mod dynamodb;
pub mod env;
pub mod error;
pub mod exit;
#[cfg(fuzzing)]
#[doc(hidden)]
pub mod fuzzing;
pub mod lease;
pub mod lock;
pub mod log;
pub mod output;
pub mod process;
pub mod random;
pub mod supervise;
pub mod worker;

pub use env::Env;
pub use error::Error;
pub use exit::Exit;

/// The AWS SDKs' conformance vectors (`../shared/aws-sdk-test-data`, beside the repository), or `None` when that
/// folder is absent, as in a clone of the repository alone: the tests that read them then return at once, and
/// `scripts/test.sh` says so in one line. With `LOCK_EXEC_REQUIRE_CONFORMANCE` set (`scripts/test.sh` sets it
/// when the folder exists), an absent folder fails instead.
#[cfg(test)]
pub(crate) fn conformance_data() -> Option<&'static std::path::Path> {
    let root = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/aws-sdk-test-data"));
    if root.is_dir() {
        return Some(root);
    }
    assert!(
        crate::Env::real().var("LOCK_EXEC_REQUIRE_CONFORMANCE").is_none(),
        "LOCK_EXEC_REQUIRE_CONFORMANCE is set but {} is missing",
        root.display()
    );
    None
}

/// `a: b: c`: an error and its causes, for one-line messages.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
