//! Entry points for the `cargo fuzz` targets in `fuzz/` into parsers the library keeps private: built only with
//! `--cfg fuzzing` (cargo fuzz sets it), never part of the library's API.

use std::time::{Duration, SystemTime};

use crate::aws::http::Response;

/// A fixed "now" for parsers that compare expiry times: 2026-01-01T00:00:00Z.
fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_225_600)
}

/// An STS answer (`AssumeRole` or `AssumeRoleWithWebIdentity`) with this status and body.
pub fn sts_response(web_identity: bool, status: u16, body: &str, secrets: &[&str]) {
    let action = if web_identity { "AssumeRoleWithWebIdentity" } else { "AssumeRole" };
    let response = Response { status, headers: Vec::new(), body: body.to_owned() };
    let _ = crate::aws::sts::parse_response(action, &response, now(), secrets);
}

/// A `credential_process` helper's standard output.
pub fn process_output(stdout: &str) {
    let _ = crate::aws::credentials::process::parse_output(stdout, now());
}

/// A container or instance metadata credentials document.
pub fn credentials_document(body: &str, secrets: &[&str]) {
    let _ = crate::aws::credentials::container::credentials_from_document("fuzz", body, secrets);
}
