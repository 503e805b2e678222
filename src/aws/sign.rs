//! SigV4 request signing: a thin wrapper over `aws-sigv4`.

use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;

use crate::error::Error;

/// What to sign a request for.
#[derive(Debug, Clone, Copy)]
pub struct Scope<'a> {
    /// The signing region.
    pub region: &'a str,
    /// The signing service name (`dynamodb`, `sts`).
    pub service: &'a str,
    /// The signing time.
    pub time: SystemTime,
}

/// Signs a request: returns the headers to add (`authorization`, `x-amz-date`, `x-amz-security-token`
/// when the credentials carry a session token, `x-amz-content-sha256` is not added).
pub fn sign_request(
    credentials: &Credentials,
    scope: Scope<'_>,
    method: &str,
    url: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> Result<Vec<(String, String)>, Error> {
    let identity: Identity = credentials.clone().into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(scope.region)
        .name(scope.service)
        .time(scope.time)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| Error::Config(format!("cannot sign the request: {e}")))?
        .into();
    let signable = SignableRequest::new(
        method,
        url,
        headers.iter().map(|(n, v)| (n.as_str(), v.as_str())),
        SignableBody::Bytes(body),
    )
    .map_err(|e| Error::Config(format!("cannot sign the request: {e}")))?;
    let (instructions, _signature) =
        sign(signable, &params).map_err(|e| Error::Config(format!("cannot sign the request: {e}")))?.into_parts();
    let (signed_headers, _params) = instructions.into_parts();
    Ok(signed_headers.into_iter().map(|h| (h.name().to_owned(), h.value().to_owned())).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn signs_with_the_session_token() {
        let credentials = Credentials::new("AKID", "SECRET", Some("TOKEN".into()), None, "test");
        let scope =
            Scope { region: "eu-west-1", service: "dynamodb", time: UNIX_EPOCH + Duration::from_secs(1_700_000_000) };
        let headers = vec![("content-type".to_owned(), "application/x-amz-json-1.0".to_owned())];
        let signed =
            sign_request(&credentials, scope, "POST", "https://dynamodb.eu-west-1.amazonaws.com/", &headers, b"{}")
                .expect("static inputs sign");
        let get = |name: &str| signed.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
        let authorization = get("authorization").expect("authorization header");
        assert!(
            authorization.starts_with("AWS4-HMAC-SHA256 Credential=AKID/20231114/eu-west-1/dynamodb/aws4_request"),
            "{authorization}"
        );
        assert!(authorization.contains("content-type"), "{authorization}");
        assert_eq!(get("x-amz-date").as_deref(), Some("20231114T221320Z"));
        assert_eq!(get("x-amz-security-token").as_deref(), Some("TOKEN"));
        assert!(!authorization.contains("SECRET"));
    }
}
