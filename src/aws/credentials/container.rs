//! Credentials from the container credentials endpoint (ECS task roles, EKS Pod Identity).
//!
//! Reads, in order: `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI` (a path on `http://169.254.170.2`), else
//! `AWS_CONTAINER_CREDENTIALS_FULL_URI` (https anywhere; plain http only to a loopback host or the ECS and EKS
//! endpoints); then the `Authorization` header from `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE` (read again on
//! every fetch, as EKS rotates it; over [`super::TOKEN_FILE_LIMIT`] it is an error), else
//! `AWS_CONTAINER_AUTHORIZATION_TOKEN`.
//!
//! The answer is a JSON document with `AccessKeyId`, `SecretAccessKey`, `Token`, `Expiration` (RFC 3339) and
//! optionally `AccountId`. The EC2 instance metadata service ([`super::imds`]) answers the same document, so the
//! parsing, URL checking and retry helpers here are shared with it.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::thread;
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use serde::Deserialize;

use crate::aws::http::{Http, Request, Response};
use crate::aws::redact::quote;
use crate::env::Env;
use crate::error::{Error, ServiceError};

/// The source's name in logs and errors.
pub const NAME: &str = "container";

/// The ECS credentials endpoint that `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI` is a path on.
pub const ECS_ENDPOINT: &str = "http://169.254.170.2";

/// How often, and how long each time, an endpoint is tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempts {
    /// Tries in all (at least one is made).
    pub count: u32,
    /// Whole-request timeout of each try.
    pub timeout: Duration,
    /// Pause before the second try; it grows linearly with each further try.
    pub pause: Duration,
}

/// Tries for the container endpoint: one of at most two seconds per fetch. A failure worth another try (no
/// connection, a timeout, a 5xx answer) is retried by the caller, the credential [`super::Cache`], so that
/// retries are decided in one place and do not multiply.
pub const ATTEMPTS: Attempts = Attempts { count: 1, timeout: Duration::from_secs(2), pause: Duration::ZERO };

/// Hosts plain http may be used with, for error messages.
const ALLOWED_HTTP_HOSTS: &str = "a loopback host (127.0.0.0/8, localhost, [::1]) or the ECS and EKS endpoints 169.254.170.2, 169.254.170.23 \
     and [fd00:ec2::23]";

/// The endpoint URL from the environment: `None` when neither variable is set.
///
/// An error when `AWS_CONTAINER_CREDENTIALS_FULL_URI` is malformed, or uses plain http with a host other than
/// a loopback host or the ECS and EKS endpoints.
pub fn uri(env: &Env) -> Result<Option<String>, Error> {
    if let Some(relative) = env.var("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI") {
        let slash = if relative.starts_with('/') { "" } else { "/" };
        return Ok(Some(format!("{ECS_ENDPOINT}{slash}{relative}")));
    }
    let Some(full) = env.var("AWS_CONTAINER_CREDENTIALS_FULL_URI") else {
        return Ok(None);
    };
    // Shown without a user name or password: they would be secrets in a log line.
    let shown = crate::aws::proxy::endpoint_for_messages(&full);
    let invalid = |why: &str| Error::Config(format!("invalid AWS_CONTAINER_CREDENTIALS_FULL_URI {shown:?}: {why}"));
    let url = parse_url(&full).map_err(|why| invalid(&why))?;
    if url.scheme == Scheme::Http && !http_allowed(&url) {
        return Err(invalid(&format!(
            "plain http is allowed only to {ALLOWED_HTTP_HOSTS}; use https for host {}",
            url.host
        )));
    }
    Ok(Some(full))
}

/// Fetches credentials from the endpoint at `uri` (from [`uri`]), with the default [`ATTEMPTS`].
pub fn load(env: &Env, http: &Http, uri: &str) -> Result<Credentials, Error> {
    load_with(env, http, uri, ATTEMPTS)
}

/// Fetches credentials from the endpoint at `uri`, trying as `attempts` says on connection errors and 5xx. A
/// connection failure is an [`Error::Transport`] and a 5xx answer an [`Error::Service`] (both worth another try
/// to the caller); any other failure is an [`Error::Credentials`].
pub fn load_with(env: &Env, http: &Http, uri: &str, attempts: Attempts) -> Result<Credentials, Error> {
    let authorization = authorization(env)?;
    let mut headers = vec![("accept".to_owned(), "application/json".to_owned())];
    if let Some(token) = &authorization {
        headers.push(("authorization".to_owned(), token.clone()));
    }
    let request = Request {
        method: "GET",
        url: uri,
        headers,
        body: &[],
        timeout: attempts.timeout,
        target: "container credentials endpoint",
    };
    let response = send_with_retries(http, &request, attempts)?;
    let secrets: Vec<&str> = authorization.as_deref().into_iter().collect();
    if response.status >= 500 {
        let detail = error_detail(&response, &secrets);
        return Err(Error::Service(ServiceError {
            service: "container credentials endpoint",
            status: response.status,
            code: String::new(),
            message: format!("{uri}: {detail}"),
        }));
    }
    if response.status != 200 {
        let detail = error_detail(&response, &secrets);
        return Err(failure(format!("{uri} answered HTTP {}: {detail}", response.status)));
    }
    credentials_from_document(NAME, &response.body, &secrets)
}

/// The `Authorization` header value: the token file read now, else the token variable, else none.
fn authorization(env: &Env) -> Result<Option<String>, Error> {
    let (token, origin) = match env.var("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE") {
        Some(path) => {
            let text =
                env.read_to_string_capped(Path::new(&path), super::TOKEN_FILE_LIMIT).map_err(|source| Error::Io {
                    what: format!("container authorization token file {path} (AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE)"),
                    source,
                })?;
            (text.trim().to_owned(), format!("the file {path}"))
        }
        None => match env.var("AWS_CONTAINER_AUTHORIZATION_TOKEN") {
            Some(token) => (token, "AWS_CONTAINER_AUTHORIZATION_TOKEN".to_owned()),
            None => return Ok(None),
        },
    };
    if token.is_empty() {
        return Err(failure(format!("the authorization token in {origin} is empty")));
    }
    if token.chars().any(|c| c.is_control()) {
        return Err(failure(format!("the authorization token in {origin} contains a line break or control character")));
    }
    Ok(Some(token))
}

fn failure(message: String) -> Error {
    Error::Credentials { provider: NAME, message, denied: false }
}

/// True when plain http to this host is allowed: loopback, or the ECS and EKS endpoints.
fn http_allowed(url: &Url<'_>) -> bool {
    if url.bracketed {
        return url
            .host
            .parse::<Ipv6Addr>()
            .is_ok_and(|ip| ip.is_loopback() || ip == Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x23));
    }
    if url.host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    url.host.parse::<Ipv4Addr>().is_ok_and(|ip| {
        ip.is_loopback() || ip == Ipv4Addr::new(169, 254, 170, 2) || ip == Ipv4Addr::new(169, 254, 170, 23)
    })
}

/// The scheme of an endpoint URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scheme {
    /// `http`
    Http,
    /// `https`
    Https,
}

/// The parts of an http(s) URL that the metadata endpoints need checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Url<'a> {
    /// http or https.
    pub scheme: Scheme,
    /// The host, without the brackets of an IPv6 literal.
    pub host: &'a str,
    /// True for an IPv6 literal written in brackets.
    pub bracketed: bool,
    /// The port, when given.
    pub port: Option<u16>,
}

/// Splits and checks an absolute http(s) URL; the error says what is wrong (without repeating the URL).
pub(crate) fn parse_url(url: &str) -> Result<Url<'_>, String> {
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("a URL cannot contain white space or control characters".into());
    }
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err("URI did not specify a host (expected http://HOST/PATH or https://HOST/PATH)".into());
    };
    let scheme = if scheme.eq_ignore_ascii_case("http") {
        Scheme::Http
    } else if scheme.eq_ignore_ascii_case("https") {
        Scheme::Https
    } else {
        return Err(format!("the scheme must be http or https, not {scheme:?}"));
    };
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    // Anywhere after the scheme: a password may hold an unencoded `/`, `?` or `#` before its `@`.
    if rest.contains('@') {
        return Err("user names and passwords in the URL are not supported".into());
    }
    let (host, bracketed, port) = if let Some(inner) = authority.strip_prefix('[') {
        let Some((host, after)) = inner.split_once(']') else {
            return Err("an IPv6 address is missing its closing bracket".into());
        };
        if host.parse::<Ipv6Addr>().is_err() {
            return Err(format!("[{host}] is not an IPv6 address"));
        }
        let port = match after {
            "" => None,
            _ => Some(after.strip_prefix(':').ok_or_else(|| format!("unexpected {after:?} after the host"))?),
        };
        (host, true, port)
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (host, false, Some(port)),
            None => (authority, false, None),
        }
    };
    if host.is_empty() {
        return Err("URI did not specify a host".into());
    }
    if !bracketed && !host.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_')) {
        return Err(format!("invalid character in host {host:?}"));
    }
    let port = match port {
        None => None,
        Some(port) => Some(port.parse::<u16>().map_err(|_| format!("invalid port {port:?}"))?),
    };
    Ok(Url { scheme, host, bracketed, port })
}

/// Sends a request, trying again on transport errors and 5xx answers as `attempts` says. The last answer (a
/// 5xx) or the last transport error is returned when every try fails.
pub(crate) fn send_with_retries(http: &Http, request: &Request<'_>, attempts: Attempts) -> Result<Response, Error> {
    let count = attempts.count.max(1);
    let mut tries = 0;
    loop {
        tries += 1;
        let outcome = http.send(request);
        let retryable = match &outcome {
            Ok(response) => response.status >= 500,
            Err(Error::Transport { .. }) => true,
            Err(_) => false,
        };
        if !retryable || tries >= count {
            return outcome;
        }
        thread::sleep(attempts.pause * tries);
    }
}

/// The credentials document of the container endpoint and IMDS. No `Debug`: it holds secrets.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Document {
    code: Option<String>,
    message: Option<String>,
    access_key_id: Option<String>,
    secret_access_key: Option<String>,
    token: Option<String>,
    expiration: Option<String>,
    account_id: Option<String>,
}

/// Credentials from a JSON credentials document. A `Code` other than `Success`, or missing keys, is an error for
/// `provider`. Error messages never quote the document, and `secrets` are scrubbed from anything they do quote.
pub(crate) fn credentials_from_document(
    provider: &'static str,
    body: &str,
    secrets: &[&str],
) -> Result<Credentials, Error> {
    let fail = |message: String| Error::Credentials { provider, message: quote(&message, secrets), denied: false };
    let document: Document = serde_json::from_str(body)
        .map_err(|e| fail(format!("the answer is not a JSON credentials document ({})", json_error_position(&e))))?;
    if let Some(code) = document.code.as_deref().filter(|code| *code != "Success") {
        let message = document.message.as_deref().unwrap_or("no message");
        return Err(fail(format!("the endpoint answered {code}: {message}")));
    }
    let (Some(access_key_id), Some(secret_access_key)) = (document.access_key_id, document.secret_access_key) else {
        return Err(fail("the answer has no AccessKeyId or no SecretAccessKey".into()));
    };
    let expiry = match document.expiration.as_deref() {
        Some(text) => Some(
            parse_expiration(text)
                .ok_or_else(|| fail(format!("the answer's Expiration {text:?} is not an RFC 3339 time")))?,
        ),
        None => None,
    };
    let mut builder = Credentials::builder()
        .access_key_id(access_key_id)
        .secret_access_key(secret_access_key)
        .provider_name(provider);
    builder.set_session_token(document.token);
    builder.set_expiry(expiry);
    builder.set_account_id(document.account_id.map(Into::into));
    Ok(builder.build())
}

fn parse_expiration(text: &str) -> Option<SystemTime> {
    crate::clock::system_time(crate::clock::parse_rfc3339_ns(text)?)
}

/// Where and what kind of JSON error, without the offending value (which may be a secret).
fn json_error_position(e: &serde_json::Error) -> String {
    let kind = match e.classify() {
        serde_json::error::Category::Io => "read error",
        serde_json::error::Category::Syntax => "syntax error",
        serde_json::error::Category::Data => "unexpected value",
        serde_json::error::Category::Eof => "unexpected end",
    };
    format!("{kind} at line {} column {}", e.line(), e.column())
}

/// What an error answer says: its `Code` and `Message` when it is JSON, else a short excerpt of the body; with
/// `secrets` scrubbed.
pub(crate) fn error_detail(response: &Response, secrets: &[&str]) -> String {
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct ErrorDocument {
        code: Option<String>,
        message: Option<String>,
    }
    let detail = match serde_json::from_str::<ErrorDocument>(&response.body) {
        Ok(ErrorDocument { code: Some(code), message }) => match message {
            Some(message) => format!("{code}: {message}"),
            None => code,
        },
        Ok(ErrorDocument { code: None, message: Some(message) }) => message,
        // JSON without either: never quoted, it may be a credentials document.
        Ok(ErrorDocument { code: None, message: None }) => "a JSON answer with no Code or Message".to_owned(),
        _ if response.body.trim().is_empty() => "empty body".to_owned(),
        _ => response.body.clone(),
    };
    // Redacted before it is cut: a cut first could leave the start of a token behind.
    quote(&detail, secrets)
}

#[cfg(test)]
impl Attempts {
    /// Three attempts with no pause between them, for tests against local servers.
    pub(crate) fn quick() -> Attempts {
        Attempts { count: 3, timeout: Duration::from_secs(2), pause: Duration::ZERO }
    }
}

/// A small HTTP server on 127.0.0.1 for the metadata endpoint tests: a handler picks each reply.
#[cfg(test)]
pub(crate) mod test_server {
    use crate::aws::test_http;
    pub use crate::aws::test_http::Seen;
    use std::sync::{Arc, Mutex};

    /// What to do with a request.
    pub enum Reply {
        /// Answer with this status and body.
        With(u16, String),
        /// Keep the connection open and never answer.
        Hang,
    }

    /// A running server that records the requests; stopped and joined on drop.
    pub struct Server {
        server: test_http::Server,
        seen: Arc<Mutex<Vec<Seen>>>,
    }

    impl Server {
        /// Starts a server; `handler` gets each request and its 0-based index.
        pub fn start(handler: impl Fn(&Seen, usize) -> Reply + Send + Sync + 'static) -> Server {
            let seen = Arc::new(Mutex::new(Vec::new()));
            let mut hung = Vec::new(); // dropped, so closed, when the server stops
            let server = {
                let seen = Arc::clone(&seen);
                test_http::Server::start(move |stream| {
                    let Some(request) = test_http::read_request(&stream) else { return };
                    let index = {
                        let mut seen = seen.lock().expect("no panics while holding the lock");
                        seen.push(request.clone());
                        seen.len() - 1
                    };
                    match handler(&request, index) {
                        Reply::With(status, body) => {
                            let _ = test_http::write_response(
                                &stream,
                                status,
                                &[("content-type", "application/json")],
                                &body,
                            );
                        }
                        Reply::Hang => hung.push(stream),
                    }
                })
            };
            Server { server, seen }
        }

        /// `http://127.0.0.1:PORT`
        pub fn base(&self) -> String {
            self.server.base()
        }

        /// The requests received so far.
        pub fn seen(&self) -> Vec<Seen> {
            self.seen.lock().expect("the server thread does not panic while holding the lock").clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_server::{Reply, Server};
    use super::*;
    use std::collections::BTreeMap;
    use std::time::UNIX_EPOCH;

    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
    const SESSION: &str = "IQoJb3JpZ2luX2VjEXAMPLESESSIONTOKEN";

    fn document() -> String {
        format!(
            r#"{{"AccessKeyId":"AKIDEXAMPLE","SecretAccessKey":"{SECRET}","Token":"{SESSION}",
               "Expiration":"2030-01-02T03:04:05Z","AccountId":"123456789012","RoleArn":"arn:aws:iam::1:role/r"}}"#
        )
    }

    #[derive(Deserialize)]
    struct Vectors {
        tests: Vec<Vector>,
    }

    #[derive(Deserialize)]
    struct Vector {
        docs: String,
        env: BTreeMap<String, String>,
        result: BTreeMap<String, String>,
    }

    #[test]
    fn sdk_conformance_vectors() {
        let Some(root) = crate::conformance_data() else { return };
        let text =
            std::fs::read_to_string(root.join("ecs-tests.json")).expect("the shared conformance data is present");
        let vectors: Vectors = serde_json::from_str(&text).expect("the conformance file is JSON");
        let mut passed = 0;
        for case in &vectors.tests {
            let pairs: Vec<(&String, &String)> = case.env.iter().collect();
            let got = uri(&Env::from_pairs(&pairs));
            if let Some(expected) = case.result.get("Ok") {
                match &got {
                    Ok(Some(got)) => assert_eq!(got, expected, "{}", case.docs),
                    other => panic!("{}: expected Ok({expected}), got {other:?}", case.docs),
                }
            } else {
                assert!(case.result.contains_key("ErrorContains"), "{}: unknown result", case.docs);
                match &got {
                    // Not an error here: a source that does not apply is `None`, and the chain moves on.
                    Ok(None) => assert!(case.env.is_empty(), "{}: None although variables are set", case.docs),
                    Ok(Some(got)) => panic!("{}: expected an error, got {got}", case.docs),
                    Err(_) => {}
                }
            }
            passed += 1;
        }
        assert_eq!(passed, 11);
        assert_eq!(passed, vectors.tests.len());
    }

    fn check_full_uri(full: &str, allowed: bool) {
        let got = uri(&Env::from_pairs(&[("AWS_CONTAINER_CREDENTIALS_FULL_URI", full)]));
        match (got, allowed) {
            (Ok(Some(got)), true) => assert_eq!(got, full),
            (Err(e), false) => {
                let message = e.to_string();
                assert!(message.contains("AWS_CONTAINER_CREDENTIALS_FULL_URI"), "{message}");
            }
            (got, _) => panic!("{full}: allowed {allowed}, got {got:?}"),
        }
    }

    #[test]
    fn full_uri_hosts() {
        check_full_uri("http://127.0.0.1:8080/creds", true);
        check_full_uri("http://127.1.2.3/creds", true);
        check_full_uri("http://LOCALHOST/creds", true);
        check_full_uri("http://[::1]:9/creds", true);
        check_full_uri("http://[fd00:ec2:0::23]/creds", true);
        check_full_uri("http://169.254.170.23/v1/credentials", true);
        check_full_uri("https://example.com/creds?x=1", true);
        check_full_uri("http://example.com/creds", false);
        check_full_uri("http://128.0.0.1/creds", false);
        check_full_uri("http://169.254.169.254/creds", false);
        check_full_uri("http://[fd00:ec2::24]/creds", false);
        check_full_uri("http://localhost.example.com/creds", false);
        check_full_uri("ftp://localhost/creds", false);
        check_full_uri("http://localhost:port/creds", false);
        check_full_uri("http://user:pw@localhost/creds", false);
        check_full_uri("http://[::1/creds", false);
        check_full_uri("http:///creds", false);
    }

    #[test]
    fn forbidden_host_says_which_hosts_are_allowed() {
        let e = uri(&Env::from_pairs(&[("AWS_CONTAINER_CREDENTIALS_FULL_URI", "http://example.com/x")]))
            .expect_err("plain http to a remote host is refused");
        let message = e.to_string();
        assert!(message.contains("127.0.0.0/8") && message.contains("169.254.170.23"), "{message}");
        assert!(message.contains("https"), "{message}");
    }

    #[test]
    fn error_bodies_are_redacted_before_the_cut() {
        let token = "pod-identity-token-0123456789abcdef";
        for offset in 180..220 {
            let body = format!("{} {token} {}", "r".repeat(offset), "e".repeat(700));
            let response = Response { status: 401, headers: vec![], body };
            let detail = error_detail(&response, &[token]);
            assert!(!detail.contains("pod-iden") && detail.chars().count() <= 515, "{offset}: {detail}");
        }
        let json = format!(r#"{{"Code":"Denied","Message":"{} {token}"}}"#, "m".repeat(600));
        let detail = error_detail(&Response { status: 401, headers: vec![], body: json }, &[token]);
        assert!(!detail.contains("pod-iden") && detail.chars().count() <= 515, "{detail}");
    }

    #[test]
    fn relative_uri_gets_a_slash() {
        let got = uri(&Env::from_pairs(&[("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "v2/creds")]));
        assert_eq!(got.expect("valid").as_deref(), Some("http://169.254.170.2/v2/creds"));
    }

    #[test]
    fn credentials_are_parsed_with_expiry() {
        let body = document();
        let server = Server::start(move |_, _| Reply::With(200, body.clone()));
        let url = format!("{}/creds", server.base());
        let env = Env::from_pairs(&[("AWS_CONTAINER_AUTHORIZATION_TOKEN", "auth-from-env")]);
        let c = load_with(&env, &Http::new(), &url, Attempts::quick()).expect("credentials");
        assert_eq!(
            (c.access_key_id(), c.secret_access_key(), c.session_token()),
            ("AKIDEXAMPLE", SECRET, Some(SESSION))
        );
        assert_eq!(c.expiry(), Some(UNIX_EPOCH + Duration::from_secs(1_893_553_445)));
        assert_eq!(c.account_id().map(|a| a.as_str()), Some("123456789012"));
        let seen = server.seen();
        assert_eq!(seen.len(), 1);
        assert_eq!((seen[0].method.as_str(), seen[0].path.as_str()), ("GET", "/creds"));
        assert_eq!(seen[0].header("authorization"), Some("auth-from-env"));
    }

    #[test]
    fn no_authorization_header_without_a_token() {
        let body = document();
        let server = Server::start(move |_, _| Reply::With(200, body.clone()));
        let url = format!("{}/creds", server.base());
        load_with(&Env::from_pairs::<&str, &str>(&[]), &Http::new(), &url, Attempts::quick()).expect("credentials");
        assert_eq!(server.seen()[0].header("authorization"), None);
    }

    #[test]
    fn token_file_is_read_on_every_fetch() {
        let dir = std::env::temp_dir().join(format!("lock-exec-container-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create a temp dir");
        let file = dir.join("token");
        std::fs::write(&file, "first-token\n").expect("write the token file");
        let body = document();
        let server = Server::start(move |_, _| Reply::With(200, body.clone()));
        let url = format!("{}/creds", server.base());
        let file_name = file.to_str().expect("temp paths are UTF-8 here");
        let env = Env::from_pairs(&[
            ("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", file_name),
            ("AWS_CONTAINER_AUTHORIZATION_TOKEN", "ignored-when-the-file-is-set"),
        ]);
        let http = Http::new();
        load_with(&env, &http, &url, Attempts::quick()).expect("first fetch");
        std::fs::write(&file, "second-token").expect("rewrite the token file");
        load_with(&env, &http, &url, Attempts::quick()).expect("second fetch");
        let tokens: Vec<_> = server.seen().iter().map(|s| s.header("authorization").map(str::to_owned)).collect();
        assert_eq!(tokens, [Some("first-token".to_owned()), Some("second-token".to_owned())]);
        std::fs::remove_file(&file).expect("remove the token file");
        let e = load_with(&env, &http, &url, Attempts::quick()).expect_err("a missing token file is an error");
        assert!(matches!(e, Error::Io { .. }), "{e:?}");
        let _ = std::fs::remove_dir(&dir);
        let env = Env::from_pairs(&[("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", "/dev/zero")]);
        let e = load_with(&env, &http, &url, Attempts::quick()).expect_err("an endless token file is an error");
        assert_eq!(
            crate::error_chain(&e),
            "cannot read container authorization token file /dev/zero (AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE): \
             not a regular file (a character device)"
        );
        assert_eq!(server.seen().len(), 2, "no request is sent without the token");
    }

    #[test]
    fn tokens_and_secrets_never_appear_in_errors() {
        let token = "very-secret-authorization-token";
        let answers = [
            (403, format!(r#"{{"Code":"AccessDenied","Message":"token {token} is not valid"}}"#)),
            (400, format!("<html>bad token {token}</html>")),
            (200, format!(r#"{{"Code":"Failed","Message":"echo {token}"}}"#)),
            (200, format!(r#"{{"AccessKeyId":"AKID","SecretAccessKey":"{SECRET}","Token":5}}"#)),
            (200, format!(r#"{{"AccessKeyId":"AKID","SecretAccessKey":"{SECRET}","Expiration":"x"}}"#)),
            (200, format!(r#"{{"SecretAccessKey":"{SECRET}","Token":"{SESSION}"}}"#)),
            (200, format!(r#"{{"AccessKeyId":"AKID","SecretAccessKey":"{SECRET}""#)),
        ];
        for (status, body) in answers {
            let answer = body.clone();
            let server = Server::start(move |_, _| Reply::With(status, answer.clone()));
            let url = format!("{}/creds", server.base());
            let env = Env::from_pairs(&[("AWS_CONTAINER_AUTHORIZATION_TOKEN", token)]);
            let e = load_with(&env, &Http::new(), &url, Attempts::quick()).expect_err("an error answer");
            let shown = format!("{e} {e:?}");
            assert!(matches!(e, Error::Credentials { provider: NAME, .. }), "{shown}");
            for secret in [token, SECRET, SESSION] {
                assert!(!shown.contains(secret), "{body} leaked into {shown}");
            }
        }
    }

    #[test]
    fn error_answer_names_code_and_message() {
        let server =
            Server::start(|_, _| Reply::With(400, r#"{"Code":"InvalidToken","Message":"token expired"}"#.into()));
        let url = format!("{}/creds", server.base());
        let e = load_with(&Env::from_pairs::<&str, &str>(&[]), &Http::new(), &url, Attempts::quick())
            .expect_err("an error");
        let message = e.to_string();
        assert!(message.contains("HTTP 400") && message.contains("InvalidToken: token expired"), "{message}");
        assert_eq!(server.seen().len(), 1, "4xx is not retried");
    }

    #[test]
    fn server_errors_are_retried() {
        let body = document();
        let server = Server::start(move |_, index| match index {
            0 => Reply::With(500, "oops".into()),
            _ => Reply::With(200, body.clone()),
        });
        let url = format!("{}/creds", server.base());
        let c =
            load_with(&Env::from_pairs::<&str, &str>(&[]), &Http::new(), &url, Attempts::quick()).expect("second try");
        assert_eq!(c.access_key_id(), "AKIDEXAMPLE");
        assert_eq!(server.seen().len(), 2);
    }

    #[test]
    fn server_errors_give_up_after_the_attempts() {
        let server = Server::start(|_, _| Reply::With(503, "busy".into()));
        let url = format!("{}/creds", server.base());
        let e = load_with(&Env::from_pairs::<&str, &str>(&[]), &Http::new(), &url, Attempts::quick())
            .expect_err("gives up");
        assert!(e.to_string().contains("HTTP 503 error: "), "{e}");
        assert!(e.to_string().ends_with("/creds: busy"), "{e}");
        assert_eq!(server.seen().len(), 3);
    }

    #[test]
    fn a_fetch_is_one_request_and_server_errors_are_left_to_the_caller() {
        let server = Server::start(|_, _| Reply::With(500, "oops".into()));
        let url = format!("{}/creds", server.base());
        let e = load(&Env::from_pairs::<&str, &str>(&[]), &Http::new(), &url).expect_err("a server error");
        assert!(
            matches!(&e, Error::Service(ServiceError { status: 500, service: "container credentials endpoint", .. })),
            "{e:?}"
        );
        assert_eq!(e.exit(), crate::exit::Exit::Unavailable);
        assert_eq!(server.seen().len(), 1, "one request per fetch");
    }

    #[test]
    fn connection_refused_is_a_transport_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}/creds", listener.local_addr().expect("address"));
        drop(listener);
        let attempts = Attempts { count: 2, timeout: Duration::from_millis(500), pause: Duration::ZERO };
        let e = load_with(&Env::from_pairs::<&str, &str>(&[]), &Http::new(), &url, attempts).expect_err("refused");
        assert!(matches!(e, Error::Transport { .. }), "{e:?}");
    }

    #[test]
    fn a_full_uri_with_a_password_is_refused_without_showing_it() {
        let env = Env::from_pairs(&[("AWS_CONTAINER_CREDENTIALS_FULL_URI", "http://usr:S3CRETPW@127.0.0.1:9/c")]);
        let error = uri(&env).expect_err("userinfo is refused");
        let text = crate::error_chain(&error);
        assert!(!text.contains("S3CRETPW"), "{text}");
    }
}
