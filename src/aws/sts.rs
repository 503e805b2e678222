//! The two STS calls lock-exec makes, `AssumeRoleWithWebIdentity` (unsigned) and `AssumeRole` (signed), in the
//! Query protocol: a form-encoded POST body in, XML out.
//!
//! The endpoint reads, in order: `AWS_IGNORE_CONFIGURED_ENDPOINT_URLS`, `AWS_ENDPOINT_URL_STS`,
//! `AWS_ENDPOINT_URL`.
//!
//! The XML is read with a small tag extractor rather than a parser: STS answers are flat, known documents.
//! Nothing here puts a secret key, a session token or a web identity token into an error message.

use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::aws::http::{Http, Request, Response};
use crate::aws::sign::{Scope, sign_request};
use crate::env::Env;
use crate::error::{Error, ServiceError, ServiceErrorKind};

/// The STS API version every request names.
const VERSION: &str = "2011-06-15";

/// The content type of a Query protocol request body.
const CONTENT_TYPE: &str = "application/x-www-form-urlencoded; charset=utf-8";

/// Whole-request timeout for one STS attempt.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Attempts per call, the first one included.
const MAX_ATTEMPTS: u32 = 3;

/// The wait before the second attempt; doubled before each later one.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);

/// What `AssumeRole` needs besides the source credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssumeRoleParams {
    /// The role to assume.
    pub role_arn: String,
    /// The session name (shows up in CloudTrail and in the assumed role's ARN).
    pub session_name: String,
    /// The external id the role's trust policy may require.
    pub external_id: Option<String>,
    /// The session length; STS's default (one hour) when `None`.
    pub duration_seconds: Option<u32>,
}

/// The STS endpoint URL for a region.
///
/// Order: `AWS_ENDPOINT_URL_STS`, then `AWS_ENDPOINT_URL`, then `profile` (the profile's
/// `services` / `endpoint_url` setting, already resolved by the caller), then
/// `https://sts.<region>.<partition domain>`. `AWS_IGNORE_CONFIGURED_ENDPOINT_URLS=true` skips all three
/// overrides; a profile's own `ignore_configured_endpoint_urls` is the caller's to apply (pass `None`).
pub fn endpoint(env: &Env, region: &str, profile: Option<&str>) -> String {
    if !env.flag("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS") {
        let configured = env
            .var("AWS_ENDPOINT_URL_STS")
            .or_else(|| env.var("AWS_ENDPOINT_URL"))
            .or_else(|| profile.map(str::trim).filter(|p| !p.is_empty()).map(str::to_owned));
        if let Some(url) = configured {
            return url;
        }
    }
    format!("https://sts.{region}.{}", partition_domain(region))
}

/// The DNS suffix of the partition a region belongs to.
fn partition_domain(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "amazonaws.com.cn"
    } else if region.starts_with("us-isob-") {
        "sc2s.sgov.gov"
    } else if region.starts_with("us-iso-") {
        "c2s.ic.gov"
    } else {
        "amazonaws.com"
    }
}

/// Exchanges a web identity token (an OIDC JWT, e.g. a Kubernetes service account token) for credentials.
/// The request is not signed: the token is the proof of identity. `now` is this machine's time; credentials
/// that STS returns already expired by it are an error.
pub fn assume_role_with_web_identity(
    http: &Http,
    endpoint: &str,
    role_arn: &str,
    session_name: &str,
    token: &str,
    now: SystemTime,
) -> Result<Credentials, Error> {
    let body = form_body(&[
        ("Action", "AssumeRoleWithWebIdentity"),
        ("Version", VERSION),
        ("RoleArn", role_arn),
        ("RoleSessionName", session_name),
        ("WebIdentityToken", token),
    ]);
    let url = request_url(endpoint);
    let headers = vec![("content-type".to_owned(), CONTENT_TYPE.to_owned())];
    let call = Call { http, url: &url, action: "AssumeRoleWithWebIdentity", secrets: &[token] };
    call.send(|| Ok(headers.clone()), body.as_bytes(), now)
}

/// Assumes a role with `source` credentials; the request is signed for service `sts` in `region` at time `now`
/// (returned credentials already expired by then are an error).
pub fn assume_role(
    http: &Http,
    endpoint: &str,
    region: &str,
    source: &Credentials,
    params: &AssumeRoleParams,
    now: SystemTime,
) -> Result<Credentials, Error> {
    let duration = params.duration_seconds.map(|d| d.to_string());
    // Members in the order of the STS model, as the SDKs send them.
    let mut fields = vec![
        ("Action", "AssumeRole"),
        ("Version", VERSION),
        ("RoleArn", params.role_arn.as_str()),
        ("RoleSessionName", params.session_name.as_str()),
    ];
    if let Some(duration) = &duration {
        fields.push(("DurationSeconds", duration));
    }
    if let Some(external_id) = &params.external_id {
        fields.push(("ExternalId", external_id));
    }
    let body = form_body(&fields);
    let url = request_url(endpoint);
    let secrets = [source.secret_access_key(), source.session_token().unwrap_or_default()];
    let call = Call { http, url: &url, action: "AssumeRole", secrets: &secrets };
    call.send(
        || {
            let mut headers = vec![("content-type".to_owned(), CONTENT_TYPE.to_owned())];
            let scope = Scope { region, service: "sts", time: now };
            let signed = sign_request(source, scope, "POST", &url, &headers, body.as_bytes())?;
            headers.extend(signed);
            Ok(headers)
        },
        body.as_bytes(),
        now,
    )
}

/// The endpoint with a path: `http://host:port` becomes `http://host:port/`.
fn request_url(endpoint: &str) -> String {
    let rest = endpoint.split_once("://").map_or(endpoint, |(_, rest)| rest);
    if rest.contains('/') { endpoint.to_owned() } else { format!("{endpoint}/") }
}

/// One STS action against one URL, with retries.
struct Call<'a> {
    http: &'a Http,
    url: &'a str,
    action: &'static str,
    /// Values that must never appear in an error message (blank ones are ignored).
    secrets: &'a [&'a str],
}

impl Call<'_> {
    fn send(
        &self,
        headers: impl Fn() -> Result<Vec<(String, String)>, Error>,
        body: &[u8],
        now: SystemTime,
    ) -> Result<Credentials, Error> {
        let mut backoff = FIRST_BACKOFF;
        let mut attempt = 1;
        loop {
            let request =
                Request { method: "POST", url: self.url, headers: headers()?, body, timeout: TIMEOUT, target: "sts" };
            let result = self.http.send(&request).and_then(|response| self.read(&response, now));
            if attempt >= MAX_ATTEMPTS || !retryable(&result) {
                return result;
            }
            std::thread::sleep(backoff);
            backoff *= 2;
            attempt += 1;
        }
    }

    fn read(&self, response: &Response, now: SystemTime) -> Result<Credentials, Error> {
        parse_response(self.action, response, now).map_err(|e| Error::Service(redact(e, self.secrets)))
    }
}

/// Transport failures, 5xx answers and throttling are worth another attempt; other answers are not.
fn retryable(result: &Result<Credentials, Error>) -> bool {
    match result {
        Ok(_) => false,
        Err(Error::Transport { .. }) => true,
        Err(Error::Service(e)) => matches!(e.kind(), ServiceErrorKind::Server | ServiceErrorKind::Throttling),
        Err(_) => false,
    }
}

/// Replaces any secret (raw or percent-encoded, as an echoing server would return it) in the message.
fn redact(mut error: ServiceError, secrets: &[&str]) -> ServiceError {
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        for form in [secret.to_string(), encode(secret)] {
            if error.message.contains(&form) {
                error.message = error.message.replace(&form, "<redacted>");
            }
        }
    }
    error
}

/// Reads an STS answer: credentials from a success document, a [`ServiceError`] from anything else.
fn parse_response(action: &str, response: &Response, now: SystemTime) -> Result<Credentials, ServiceError> {
    let status = response.status;
    let error = |code: &str, message: String| ServiceError { service: "sts", status, code: code.to_owned(), message };
    let result_tag = format!("{action}Result");
    if (200..300).contains(&status)
        && let Some(result) = element(&response.body, &result_tag)
    {
        // Never an excerpt in these errors: the body holds a secret key.
        let credentials = parse_credentials(action, result)
            .map_err(|missing| error("", format!("the {action} answer has no valid {missing}")))?;
        if credentials.expiry().is_some_and(|expiry| expiry <= now) {
            return Err(error(
                "",
                format!(
                    "the {action} answer holds credentials that have already expired (is this machine's clock right?)"
                ),
            ));
        }
        return Ok(credentials);
    }
    if let Some(details) = element(&response.body, "Error")
        && let Some(code) = element(details, "Code").map(unescape).filter(|c| !c.is_empty())
    {
        let message = element(details, "Message").map(unescape).unwrap_or_default();
        return Err(error(&code, message));
    }
    let body = response.body.trim();
    let message = if body.is_empty() {
        "empty response body".to_owned()
    } else if body.contains("SecretAccessKey") || body.contains("SessionToken") {
        "unexpected response body (not shown: it may hold credentials)".to_owned()
    } else {
        format!("unexpected response body: {}", response.excerpt())
    };
    Err(error("", message))
}

/// The credentials inside `<...Result>`; the error names the missing or malformed element.
fn parse_credentials(action: &str, result: &str) -> Result<Credentials, &'static str> {
    let credentials = element(result, "Credentials").ok_or("Credentials")?;
    let field = |name: &'static str| element(credentials, name).map(unescape).filter(|v| !v.is_empty()).ok_or(name);
    let access_key_id = field("AccessKeyId")?;
    let secret_access_key = field("SecretAccessKey")?;
    let session_token = field("SessionToken")?;
    let expiration = field("Expiration")?;
    let expiry = parse_time(&expiration).ok_or("Expiration")?;
    let account_id = element(result, "AssumedRoleUser")
        .and_then(|user| element(user, "Arn"))
        .map(unescape)
        .and_then(|arn| account_from_arn(&arn));
    let mut builder = Credentials::builder()
        .access_key_id(access_key_id)
        .secret_access_key(secret_access_key)
        .session_token(session_token)
        .expiry(expiry)
        .provider_name(provider_name(action));
    builder.set_account_id(account_id.map(Into::into));
    Ok(builder.build())
}

fn provider_name(action: &str) -> &'static str {
    match action {
        "AssumeRoleWithWebIdentity" => "sts AssumeRoleWithWebIdentity",
        _ => "sts AssumeRole",
    }
}

/// Parses an RFC 3339 timestamp (`2021-08-16T20:52:53Z`, fractions and offsets allowed).
pub fn parse_time(text: &str) -> Option<SystemTime> {
    OffsetDateTime::parse(text.trim(), &Rfc3339).ok().map(SystemTime::from)
}

/// The account id of an ARN: its fifth `:`-separated field (`arn:aws:sts::123456789012:assumed-role/r/s`).
fn account_from_arn(arn: &str) -> Option<String> {
    let account = arn.split(':').nth(4)?;
    (!account.is_empty()).then(|| account.to_owned())
}

/// The raw (still escaped) content of the first `<name>...</name>` element in `xml`, `""` for `<name/>`.
fn element<'a>(xml: &'a str, name: &str) -> Option<&'a str> {
    let open = format!("<{name}");
    let close = format!("</{name}>");
    let mut from = 0;
    while let Some(found) = xml[from..].find(&open) {
        let after_name = from + found + open.len();
        let rest = &xml[after_name..];
        match rest.chars().next() {
            // `<CredentialsX>` is another element: keep looking.
            Some(c) if c == '>' || c == '/' || c.is_whitespace() => {
                let tag_end = after_name + rest.find('>')?;
                if xml[..tag_end].ends_with('/') {
                    return Some("");
                }
                let content = &xml[tag_end + 1..];
                return content.find(&close).map(|end| &content[..end]);
            }
            _ => from = after_name,
        }
    }
    None
}

/// Resolves the XML escapes `&amp; &lt; &gt; &quot; &apos; &#N; &#xH;`; unknown ones are kept as written.
fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        let entity = rest.find(';').map(|semi| (&rest[1..semi], semi));
        let decoded = entity.and_then(|(name, semi)| {
            let c = match name {
                "amp" => Some('&'),
                "lt" => Some('<'),
                "gt" => Some('>'),
                "quot" => Some('"'),
                "apos" => Some('\''),
                _ => match name.strip_prefix("#x").or_else(|| name.strip_prefix("#X")) {
                    Some(hex) => u32::from_str_radix(hex, 16).ok().and_then(char::from_u32),
                    None => name.strip_prefix('#').and_then(|dec| dec.parse().ok()).and_then(char::from_u32),
                },
            };
            c.map(|c| (c, semi))
        });
        match decoded {
            Some((c, semi)) => {
                out.push(c);
                rest = &rest[semi + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// `name=value&...` with names and values percent-encoded.
fn form_body(fields: &[(&str, &str)]) -> String {
    fields.iter().map(|(name, value)| format!("{}={}", encode(name), encode(value))).collect::<Vec<_>>().join("&")
}

/// Percent-encodes everything but the unreserved characters `A-Z a-z 0-9 - _ . ~` (UTF-8 bytes, uppercase hex).
fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}
