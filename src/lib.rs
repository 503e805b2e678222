//! lock-exec: run a command at most once across many machines, holding a lock item in a DynamoDB table.
//!
//! The binary is the product; the library exposes its parts for the integration tests and for reuse.

#![deny(unsafe_code)]
#![deny(missing_docs)]

pub mod aws;
pub mod env;
pub mod error;
pub mod exit;

pub use env::Env;
pub use error::Error;
pub use exit::Exit;
