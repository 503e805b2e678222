//! DynamoDB's JSON protocol: signed `POST /` with `X-Amz-Target`, typed errors, and standard-mode retries.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::aws::credentials::{Cache, Context, Credentials};
use crate::aws::http::{Request, Response};
use crate::aws::redact::quote;
use crate::aws::sign::{Scope, sign_request};
use crate::clock::{Offset, Skew, parse_http_date};
use crate::error::{Error, ServiceError, ServiceErrorKind};
use crate::log::Logger;
use crate::random;

/// Per-request timeout.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The cap on the backoff between attempts (AWS standard mode).
pub const MAX_BACKOFF: Duration = Duration::from_secs(20);
/// Default attempts per call (AWS standard mode), overridden by `AWS_MAX_ATTEMPTS`.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
/// The largest `Scan` answer read: a page of 1 MB of item data whose every character is escaped (`\u0001`, six
/// bytes) is under 7 MB of JSON.
pub const SCAN_RESPONSE_LIMIT: u64 = 16 * 1024 * 1024;

/// A DynamoDB client for one run.
#[derive(Debug, Clone)]
pub struct Client<'a> {
    /// Environment, HTTP client, region, profile.
    pub ctx: Context<'a>,
    /// Where credentials come from.
    pub credentials: &'a Cache,
    /// The endpoint URL, e.g. `https://dynamodb.eu-west-1.amazonaws.com`.
    pub endpoint: String,
    /// Attempts per call.
    pub max_attempts: u32,
    /// Timeout of one attempt.
    pub timeout: Duration,
    /// Request-level debug lines go here.
    pub log: Logger,
    /// Sign with cached credentials while they stay valid, without refreshing (the lease thread's renewals,
    /// whose refreshes run beside them).
    pub sign_with_cached: bool,
    /// The process's clock skew estimate, which every answer's `Date` header narrows, and `--max-clock-skew`
    /// (beyond half of it, one warning). `None`: answers are not measured.
    pub skew: Option<(&'a Skew, Duration)>,
}

/// How long cached credentials must stay valid to sign a renewal without refreshing first.
pub const CACHED_MARGIN: Duration = Duration::from_secs(30);

/// The answer to a conditional write.
#[derive(Debug, Clone, PartialEq)]
pub enum Conditional {
    /// The write happened; the response body.
    Done(Value),
    /// The condition failed; the item as the server returned it, if it did.
    Failed(Option<Value>),
}

impl<'a> Client<'a> {
    /// A client with the defaults: [`DEFAULT_MAX_ATTEMPTS`], [`REQUEST_TIMEOUT`], refreshing credentials on use.
    pub fn new(ctx: Context<'a>, credentials: &'a Cache, endpoint: String, log: Logger) -> Client<'a> {
        Client {
            ctx,
            credentials,
            endpoint,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            timeout: REQUEST_TIMEOUT,
            log,
            sign_with_cached: false,
            skew: None,
        }
    }

    /// Calls an operation, retrying throttling, 5xx and transport failures.
    pub fn call(&self, operation: &str, body: &Value) -> Result<Value, Error> {
        match self.call_conditional(operation, body)? {
            Conditional::Done(value) => Ok(value),
            Conditional::Failed(_) => Err(condition_failed()),
        }
    }

    /// Calls an operation whose condition may fail; a failed condition is an answer, not an error.
    ///
    /// Failing to get credentials ends the call at once: the credential cache has already made its own tries
    /// (see [`crate::aws::credentials::FETCH_ATTEMPTS`]), and retrying here too would multiply them.
    pub fn call_conditional(&self, operation: &str, body: &Value) -> Result<Conditional, Error> {
        let payload = body.to_string();
        let first = Instant::now();
        let mut attempt = 1;
        // Whether an earlier attempt's outcome is unknown (its request may have been applied; the last error must
        // not hide it). A throttled or refused attempt changed nothing.
        let mut lost_before = false;
        // A definite error after an attempt whose request may have been applied leaves the outcome unknown.
        let after = |lost_before: bool, e: Error| {
            if lost_before && !e.outcome_unknown() { Error::AfterLostAnswer(Box::new(e)) } else { e }
        };
        loop {
            let credentials = self.signing_credentials().map_err(|e| after(lost_before, e))?;
            let started = Instant::now();
            let result = self.attempt(operation, payload.as_bytes(), &credentials);
            let retryable = match &result {
                Ok(_) => false,
                Err(Error::Transport { .. }) => true,
                Err(Error::Service(e)) => matches!(e.kind(), ServiceErrorKind::Throttling | ServiceErrorKind::Server),
                Err(_) => false,
            };
            if self.log.enabled(crate::log::Level::Debug) {
                let outcome = match &result {
                    Ok(Conditional::Done(_)) => "ok".to_owned(),
                    Ok(Conditional::Failed(_)) => "condition failed".to_owned(),
                    Err(e) => e.to_string(),
                };
                self.log.debug(
                    "dynamodb request",
                    &[
                        ("operation", operation.into()),
                        ("attempt", attempt.into()),
                        ("elapsed_ms", (started.elapsed().as_millis() as u64).into()),
                        ("outcome", outcome.into()),
                    ],
                );
            }
            if !retryable || attempt >= self.max_attempts {
                return result.map_err(|e| after(lost_before, self.explain(e, body, attempt, first)));
            }
            lost_before |= result.as_ref().is_err_and(Error::outcome_unknown);
            std::thread::sleep(backoff(attempt));
            attempt += 1;
        }
    }

    /// The final error of a call, with what the user needs next: a missing table names the table, region and
    /// endpoint; an unreachable endpoint says how many attempts were made over how long.
    fn explain(&self, error: Error, body: &Value, attempts: u32, first: Instant) -> Error {
        match error {
            Error::Service(mut e) if e.kind() == ServiceErrorKind::ResourceNotFound => {
                let table = body["TableName"].as_str().unwrap_or("?");
                // Said when LOCK_EXEC_TABLE holds this name: a table set in the environment is easily forgotten.
                let from = if self.ctx.env.var("LOCK_EXEC_TABLE").as_deref() == Some(table) {
                    " (LOCK_EXEC_TABLE)"
                } else {
                    ""
                };
                e.message =
                    format!("{}: table {table:?}{from} in region {} at {}", e.message, self.ctx.region, self.endpoint);
                Error::Service(e)
            }
            Error::Transport { target, source, sent } if attempts > 1 => Error::Transport {
                target: format!("{target} ({attempts} attempts in {:.1} s)", first.elapsed().as_secs_f64()),
                source,
                sent,
            },
            other => other,
        }
    }

    /// Fetches credentials from the source when they are missing or near expiry (logging what happened), and
    /// returns credentials to sign with.
    pub fn refresh_credentials(&self) -> Result<Credentials, Error> {
        let fresh = self.credentials.get(&self.ctx)?;
        if fresh.fetched {
            let expiry = fresh.credentials.expiry().map(|e| crate::clock::rfc3339_ns(crate::clock::unix_ns(e)));
            self.log.debug(
                "credentials loaded",
                &[("source", self.credentials.source_name().into()), ("expiry", expiry.into())],
            );
        }
        if let Some(e) = &fresh.refresh_error {
            self.log.warn(
                "credential refresh failed; using the cached credentials until they expire",
                &[("source", self.credentials.source_name().into()), ("error", crate::error_chain(e).into())],
            );
        }
        Ok(fresh.credentials)
    }

    /// Credentials for one attempt: with `sign_with_cached`, cached ones that stay valid a while are used as
    /// they are (the lease thread refreshes them separately); otherwise [`Client::refresh_credentials`].
    fn signing_credentials(&self) -> Result<Credentials, Error> {
        if self.sign_with_cached
            && let Some(cached) = self.credentials.valid_cached(self.ctx.env.now(), CACHED_MARGIN)
        {
            return Ok(cached);
        }
        self.refresh_credentials()
    }

    /// One attempt without retries, with the `Date` header of the answer (an error answer has one too) and the
    /// local clock around the exchange: `doctor` compares the clocks.
    pub fn call_dated(&self, operation: &str, body: &Value) -> Dated {
        let sent = self.ctx.env.now();
        let exchange = self.signing_credentials().and_then(|credentials| {
            let response = self.send(operation, body.to_string().as_bytes(), &credentials)?;
            Ok((response, credentials))
        });
        let received = self.ctx.env.now();
        match exchange {
            Err(error) => Dated { result: Err(error), date: None, sent, received },
            Ok((response, credentials)) => {
                let secrets = [credentials.secret_access_key(), credentials.session_token().unwrap_or_default()];
                let result = interpret(&response, &secrets).and_then(|answer| match answer {
                    Conditional::Done(value) => Ok(value),
                    Conditional::Failed(_) => Err(condition_failed()),
                });
                Dated { result, date: response.header("date").map(str::to_owned), sent, received }
            }
        }
    }

    fn attempt(&self, operation: &str, payload: &[u8], credentials: &Credentials) -> Result<Conditional, Error> {
        let response = self.send(operation, payload, credentials)?;
        // An answer can quote our request: AWS's signature errors include the canonical request, with the
        // x-amz-security-token header in it. Keep the secret and the session token out of the message.
        let secrets = [credentials.secret_access_key(), credentials.session_token().unwrap_or_default()];
        interpret(&response, &secrets)
    }

    /// Signs and sends one request; the answer whatever its status.
    fn send(&self, operation: &str, payload: &[u8], credentials: &Credentials) -> Result<Response, Error> {
        let url = format!("{}/", self.endpoint.trim_end_matches('/'));
        let mut headers = vec![
            ("content-type".to_owned(), "application/x-amz-json-1.0".to_owned()),
            ("x-amz-target".to_owned(), format!("DynamoDB_20120810.{operation}")),
        ];
        let scope = Scope { region: self.ctx.region, service: "dynamodb", time: self.ctx.env.now() };
        let signed = sign_request(credentials, scope, "POST", &url, &headers, payload)?;
        headers.extend(signed);
        let sent = self.ctx.env.now();
        let request =
            Request { method: "POST", url: &url, headers, body: payload, timeout: self.timeout, target: "dynamodb" };
        // A Scan page holds up to 1 MB of item data, and its JSON is larger (attribute names, type wrappers,
        // control characters escaped six bytes each).
        let limit = if operation == "Scan" { SCAN_RESPONSE_LIMIT } else { crate::aws::http::RESPONSE_LIMIT };
        let response = self.ctx.http.send_with_limit(&request, limit)?;
        self.measure(sent, &response);
        Ok(response)
    }

    /// Narrows the skew estimate with an answer's `Date` header (any answer, errors included), and warns once
    /// when this host's clock is certainly off by more than half of `--max-clock-skew`.
    fn measure(&self, sent: std::time::SystemTime, response: &Response) {
        let Some((skew, max)) = self.skew else { return };
        let Some(server_second) = response.header("date").and_then(parse_http_date) else { return };
        let exchange = Offset::from_exchange(sent, self.ctx.env.now(), server_second);
        if let Some(offset) = skew.observe(exchange, max / 2) {
            self.log.warn(
                &format!(
                    "clock skew: this host's clock is at least {} {} DynamoDB's (Date headers), more than half of \
                     --max-clock-skew {}; at more than {} a run will not start its command (fix NTP)",
                    crate::duration::format(Duration::from_millis(offset.at_least().as_millis() as u64)),
                    offset.direction(),
                    crate::duration::format(max),
                    crate::duration::format(max),
                ),
                &[("offset_ms", offset.middle_ms().into())],
            );
        }
    }

    /// The earliest the server's clock can have read when the local one read `local`, from the answers so far
    /// (`None` before any with a `Date`).
    pub fn server_earliest_ns(&self, local: std::time::SystemTime) -> Option<i128> {
        let (skew, _) = self.skew?;
        Some(skew.offset()?.server_earliest(local))
    }
}

/// The answer of [`Client::call_dated`].
#[derive(Debug)]
pub struct Dated {
    /// The answer, as [`Client::call`] gives it.
    pub result: Result<Value, Error>,
    /// The answer's `Date` header (RFC 7231, whole seconds), if there was an answer with one.
    pub date: Option<String>,
    /// The local clock when the request was about to be signed.
    pub sent: std::time::SystemTime,
    /// The local clock when the answer had been read (or the attempt had failed).
    pub received: std::time::SystemTime,
}

/// The error [`Client::call`] gives for a failed condition.
fn condition_failed() -> Error {
    Error::Service(ServiceError {
        service: "dynamodb",
        status: 400,
        code: "ConditionalCheckFailedException".into(),
        message: "the conditional request failed".into(),
    })
}

/// The wait before attempt `attempt + 1`: random in [0, 2^(attempt-1)) seconds, capped at [`MAX_BACKOFF`].
pub fn backoff(attempt: u32) -> Duration {
    let ceiling = Duration::from_secs(1u64 << (attempt.saturating_sub(1)).min(5)).min(MAX_BACKOFF);
    ceiling.mul_f64(random::fraction())
}

/// Attempts per call from `AWS_MAX_ATTEMPTS` (default 3, at least 1).
pub fn max_attempts(env: &crate::env::Env) -> Result<u32, Error> {
    match env.var("AWS_MAX_ATTEMPTS") {
        None => Ok(DEFAULT_MAX_ATTEMPTS),
        Some(text) => match text.parse::<u32>() {
            Ok(n) if n >= 1 => Ok(n),
            _ => Err(Error::Config(format!("AWS_MAX_ATTEMPTS={text:?}: expected a whole number of at least 1"))),
        },
    }
}

/// Reads a response: a success body, a failed condition, or a typed error. Every text quoted from the answer
/// passes [`quote`]: `secrets` redacted, then cut to 512 characters.
pub fn interpret(response: &Response, secrets: &[&str]) -> Result<Conditional, Error> {
    let json: Option<Value> = serde_json::from_str(&response.body).ok();
    if (200..300).contains(&response.status) {
        return match json {
            Some(value) => Ok(Conditional::Done(value)),
            None if response.body.trim().is_empty() => Ok(Conditional::Done(Value::Object(Default::default()))),
            None => Err(Error::Service(ServiceError {
                service: "dynamodb",
                status: response.status,
                code: String::new(),
                message: format!("the answer is not JSON: {}", response.excerpt(secrets)),
            })),
        };
    }
    let error = service_error(response, json.as_ref(), secrets);
    if error.kind() == ServiceErrorKind::ConditionalCheckFailed {
        return Ok(Conditional::Failed(json.and_then(|mut v| v.get_mut("Item").map(Value::take))));
    }
    Err(Error::Service(error))
}

/// The typed error of a non-2xx answer: from `x-amzn-ErrorType`, the JSON `__type`, or an XML `<Code>`.
fn service_error(response: &Response, json: Option<&Value>, secrets: &[&str]) -> ServiceError {
    let from_json = |field: &str| json.and_then(|v| v.get(field)).and_then(Value::as_str).map(str::to_owned);
    let code = response
        .header("x-amzn-errortype")
        .map(str::to_owned)
        .or_else(|| from_json("__type"))
        .or_else(|| xml_tag(&response.body, "Code"))
        .map(|raw| quote(error_code(&raw), secrets))
        .unwrap_or_default();
    let message = from_json("message")
        .or_else(|| from_json("Message"))
        .or_else(|| xml_tag(&response.body, "Message"))
        .map(|message| quote(&message, secrets))
        .unwrap_or_else(|| if json.is_some() { String::new() } else { response.excerpt(secrets) });
    ServiceError { service: "dynamodb", status: response.status, code, message }
}

/// `com.amazonaws.dynamodb.v20120810#ResourceNotFoundException` or `X:http://...` -> the bare code.
fn error_code(raw: &str) -> &str {
    let after_hash = raw.rsplit('#').next().unwrap_or(raw);
    after_hash.split(':').next().unwrap_or(after_hash).trim()
}

/// The text of the first `<tag>...</tag>`, if any.
fn xml_tag(body: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let start = body.find(&open)? + open.len();
    let end = body[start..].find(&format!("</{tag}>"))? + start;
    Some(body[start..end].trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: u16, headers: &[(&str, &str)], body: &str) -> Response {
        Response {
            status,
            headers: headers.iter().map(|(n, v)| ((*n).to_owned(), (*v).to_owned())).collect(),
            body: body.to_owned(),
        }
    }

    fn error_of(r: &Response) -> ServiceError {
        match interpret(r, &[]) {
            Err(Error::Service(e)) => e,
            other => panic!("expected a service error, got {other:?}"),
        }
    }

    #[test]
    fn json_errors_are_typed() {
        let e = error_of(&response(
            400,
            &[],
            r#"{"__type":"com.amazonaws.dynamodb.v20120810#ResourceNotFoundException","message":"Requested resource not found"}"#,
        ));
        assert_eq!(
            (e.code.as_str(), e.message.as_str()),
            ("ResourceNotFoundException", "Requested resource not found")
        );
        let e = error_of(&response(400, &[("x-amzn-errortype", "ThrottlingException:http://internal/")], "{}"));
        assert_eq!(e.code, "ThrottlingException");
        assert_eq!(e.kind(), ServiceErrorKind::Throttling);
    }

    #[test]
    fn xml_and_html_bodies_do_not_panic() {
        let xml = "<ErrorResponse><Error><Code>InvalidSignatureException</Code><Message>The request signature we calculated does not match</Message></Error></ErrorResponse>";
        let e = error_of(&response(403, &[], xml));
        assert_eq!(e.code, "InvalidSignatureException");
        assert!(e.message.contains("signature"));
        assert_eq!(e.kind(), ServiceErrorKind::AccessDenied);
        let e = error_of(&response(502, &[], "<html><body>Bad gateway</body></html>"));
        assert_eq!(e.code, "");
        assert!(e.message.contains("Bad gateway"));
        assert_eq!(e.kind(), ServiceErrorKind::Server);
        let e = error_of(&response(200, &[], "<html>proxy login</html>"));
        assert!(e.message.contains("not JSON"));
    }

    #[test]
    fn quoted_messages_are_redacted_then_capped() {
        let token = "IQoJb3JpZ2luX2VjSESSIONTOKEN0123456789";
        let text = format!("{} {token} {}", "y".repeat(190), "z".repeat(900));
        for body in [text.clone(), serde_json::json!({"__type": "X#Oops", "message": text}).to_string()] {
            let e = match interpret(&response(400, &[], &body), &["secret", token]) {
                Err(Error::Service(e)) => e,
                other => panic!("{other:?}"),
            };
            assert!(e.message.contains("<redacted>") && !e.message.contains("IQoJb3Jp"), "{}", e.message);
            assert!(e.message.chars().count() <= 515, "{} characters", e.message.chars().count());
        }
    }

    #[test]
    fn failed_conditions_carry_the_old_item() {
        let body = r#"{"__type":"com.amazonaws.dynamodb.v20120810#ConditionalCheckFailedException","message":"failed","Item":{"key":{"S":"k"}}}"#;
        match interpret(&response(400, &[], body), &[]) {
            Ok(Conditional::Failed(Some(item))) => assert_eq!(item["key"]["S"], "k"),
            other => panic!("{other:?}"),
        }
        let body =
            r#"{"__type":"com.amazonaws.dynamodb.v20120810#ConditionalCheckFailedException","message":"failed"}"#;
        assert_eq!(interpret(&response(400, &[], body), &[]).ok(), Some(Conditional::Failed(None)));
    }

    #[test]
    fn backoff_is_capped() {
        for attempt in 1..10 {
            let limit = Duration::from_secs(1 << (attempt - 1).min(5)).min(MAX_BACKOFF);
            assert!(backoff(attempt) < limit);
        }
    }

    #[test]
    fn max_attempts_from_env() {
        use crate::env::Env;
        assert_eq!(max_attempts(&Env::from_pairs::<&str, &str>(&[])).ok(), Some(3));
        assert_eq!(max_attempts(&Env::from_pairs(&[("AWS_MAX_ATTEMPTS", "5")])).ok(), Some(5));
        assert!(max_attempts(&Env::from_pairs(&[("AWS_MAX_ATTEMPTS", "0")])).is_err());
    }
}
