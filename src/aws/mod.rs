//! Speaking to AWS without an SDK: HTTP, signing, endpoints, configuration files and credentials.

pub mod credentials;
pub mod endpoint;
pub mod http;
pub mod profile;
pub mod proxy;
pub mod redact;
pub mod sign;
pub mod sts;
#[cfg(test)]
pub(crate) mod test_http;
pub mod tls;
