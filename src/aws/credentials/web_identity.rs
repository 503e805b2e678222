//! Web identity credentials from the environment (EKS IAM roles for service accounts, IRSA): an OIDC token
//! file exchanged for role credentials with STS `AssumeRoleWithWebIdentity`.
//!
//! Reads, in order: `AWS_WEB_IDENTITY_TOKEN_FILE`, `AWS_ROLE_ARN`, `AWS_ROLE_SESSION_NAME` (optional, default
//! `lock-exec-<unix seconds>`). Blank values count as unset. The token file is read again on every fetch, as
//! the kubelet rotates it.

use std::path::PathBuf;
use std::time::UNIX_EPOCH;

use aws_credential_types::Credentials;

use crate::aws::http::Http;
use crate::aws::sts;
use crate::env::Env;
use crate::error::Error;

/// The source's name in logs.
pub const NAME: &str = "web identity";

/// A web identity configuration: where the token is and which role to assume. Holds no secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebIdentity {
    /// The token file (read on every fetch).
    pub token_file: PathBuf,
    /// The role to assume.
    pub role_arn: String,
    /// The session name.
    pub session_name: String,
}

/// The web identity configuration from the environment, or `None` unless both the token file and the role
/// are set.
pub fn from_env(env: &Env) -> Option<WebIdentity> {
    let token_file = env.var("AWS_WEB_IDENTITY_TOKEN_FILE")?;
    let role_arn = env.var("AWS_ROLE_ARN")?;
    let session_name = env.var("AWS_ROLE_SESSION_NAME").unwrap_or_else(|| default_session_name(env));
    Some(WebIdentity { token_file: PathBuf::from(token_file), role_arn, session_name })
}

/// `lock-exec-<unix seconds>`.
pub fn default_session_name(env: &Env) -> String {
    let seconds = env.now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    format!("lock-exec-{seconds}")
}

/// Reads the token file and exchanges the token for credentials at the STS `endpoint`.
pub fn load(env: &Env, http: &Http, endpoint: &str, identity: &WebIdentity) -> Result<Credentials, Error> {
    let what = || format!("web identity token file {}", identity.token_file.display());
    let token = env.read_to_string(&identity.token_file).map_err(|source| Error::Io { what: what(), source })?;
    if token.trim().is_empty() {
        return Err(Error::Credentials { provider: NAME, message: format!("{} is empty", what()), denied: false });
    }
    // Sent as read, like the AWS SDKs do (a trailing newline included).
    sts::assume_role_with_web_identity(http, endpoint, &identity.role_arn, &identity.session_name, &token, env.now())
}
