//! Speaking to AWS without an SDK: HTTP, signing, endpoints, configuration files and credentials.

pub mod credentials;
pub mod http;
pub mod sign;
