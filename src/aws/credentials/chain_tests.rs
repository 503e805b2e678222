//! Replays the AWS SDK's whole-chain conformance cases (`default-credential-provider-chain/<case>/`) through
//! [`super::select`] and [`super::Source::fetch`].
//!
//! Each case folder holds `env.json` (the whole environment), `fs/` (the file system root, `HOME` points into
//! it), `http-traffic.json` (the exchanges the SDK made, in order) and `test-case.json` (the credentials or the
//! error expected). A server on 127.0.0.1 answers the recorded requests in order with the recorded responses,
//! checking method, path, a few headers and the STS `Action` of each request; the chain's HTTP client is pointed
//! at it with [`Http::redirect_to`]. The clock is fixed shortly before the recorded expiry.

use std::collections::BTreeMap;
use std::net::TcpStream;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use time::PrimitiveDateTime;
use time::macros::format_description;

use super::{Context, select, sts_endpoint};
use crate::aws::http::{Http, path_and_query};
use crate::aws::profile::ProfileSet;
use crate::aws::test_http::{self, Seen, read_request, write_response};
use crate::env::Env;
use crate::error::{Error, ServiceErrorKind};

/// The case folders, read at run time; `None` without the conformance data.
fn cases() -> Option<std::path::PathBuf> {
    crate::conformance_data().map(|root| root.join("default-credential-provider-chain"))
}

/// Cases that do not apply to lock-exec, with the reason.
const APPLIES_NOT: &[(&str, &str)] = &[(
    "imds_token_fail",
    "the token PUT answers 403 and the Rust SDK stops there (\"IMDS is disabled\"); lock-exec deliberately falls \
     back to IMDSv1 on 403, 404 and 405 like botocore and the Go SDK (imds.rs `Session::open`, switched off by \
     AWS_EC2_METADATA_V1_DISABLED), so it makes a GET the recording does not have (the case is replayed with \
     IMDSv1 off in `imds_token_fail_applies_without_imdsv1`)",
)];

/// Cases run and passed, and cases listed in [`APPLIES_NOT`]: asserted so that none can silently drop out.
const EXPECTED_COUNTS: (usize, usize) = (24, 1);

/// Request headers whose recorded value ours must match (when the recording has them).
const CHECKED_HEADERS: &[&str] = &["x-aws-ec2-metadata-token", "x-aws-ec2-metadata-token-ttl-seconds", "accept"];

#[test]
fn sdk_default_chain_cases() {
    let Some(cases) = cases() else { return };
    let mut names: Vec<String> = std::fs::read_dir(&cases)
        .expect("the shared conformance data is present")
        .map(|entry| entry.expect("a readable folder entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let (mut passed, mut skipped, mut failures) = (Vec::new(), Vec::new(), Vec::new());
    for name in &names {
        if APPLIES_NOT.iter().any(|(case, _)| case == name) {
            skipped.push(name.as_str());
            continue;
        }
        match replay(&cases.join(name), &[]) {
            Ok(()) => passed.push(name.as_str()),
            Err(why) => failures.push(format!("{name}: {why}")),
        }
    }
    assert!(failures.is_empty(), "{} case(s) failed:\n{}", failures.len(), failures.join("\n"));
    assert_eq!(skipped.len(), APPLIES_NOT.len(), "every case in APPLIES_NOT exists: {skipped:?}");
    assert_eq!((passed.len(), skipped.len()), EXPECTED_COUNTS, "passed {passed:?}, skipped {skipped:?}");
}

/// With IMDSv1 switched off, lock-exec stops at the 403 as the Rust SDK does, so the case skipped above applies.
#[test]
fn imds_token_fail_applies_without_imdsv1() {
    let Some(cases) = cases() else { return };
    let case = cases.join("imds_token_fail");
    replay(&case, &[("AWS_EC2_METADATA_V1_DISABLED", "true")]).unwrap_or_else(|why| panic!("imds_token_fail: {why}"));
}

/// Runs one case with `extra` variables added to its environment; the error says what differs from the
/// recording or the expected result.
fn replay(case: &Path, extra: &[(&str, &str)]) -> Result<(), String> {
    let name = case.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let mut vars: Vec<(String, String)> = read_json(&case.join("env.json"))
        .as_object()
        .expect("env.json is an object")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().expect("env.json values are strings").to_owned()))
        .collect();
    vars.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    let exchanges = exchanges(&read_json(&case.join("http-traffic.json")));
    let expected = read_json(&case.join("test-case.json"))["result"].clone();
    let fs_root = case.join("fs");
    let env = Env::from_pairs(&vars).with_fs_root(&fs_root).with_now(clock(&exchanges, &expected));

    let server = Replay::start(exchanges.clone());
    let http = Http::new().redirect_to(server.base());
    let profiles = ProfileSet::load(&env, None).map_err(|e| format!("profiles: {}", crate::error_chain(&e)))?;
    // As run.rs resolves it (the recordings hold no IMDS region lookup).
    let region = env.var("AWS_REGION").or_else(|| env.var("AWS_DEFAULT_REGION")).or_else(|| profiles.value("region"));
    let ctx = Context { env: &env, http: &http, profiles: &profiles, region: region.as_deref().unwrap_or_default() };
    let got = select(&ctx).and_then(|source| source.fetch(&ctx));
    let traffic = server.finish();

    if let Some(problem) = traffic.problems.first() {
        return Err(format!("traffic differs from the recording: {problem} (all: {:?})", traffic.problems));
    }
    if traffic.consumed != exchanges.len() {
        let missing: Vec<String> =
            exchanges[traffic.consumed..].iter().map(|x| format!("{} {}", x.method, x.uri)).collect();
        return Err(format!("recorded exchanges never requested: {missing:?}; result {got:?}"));
    }
    check_sts_host(&exchanges, &env, &profiles, region.as_deref())?;
    match (&expected.get("Ok"), &expected.get("ErrorContains"), got) {
        (Some(wanted), None, Ok(credentials)) => check_credentials(wanted, &credentials),
        (None, Some(wanted), Err(e)) => {
            check_secrets_absent(&e, &fs_root)?;
            check_error(&name, wanted.as_str().unwrap_or_default(), &e)
        }
        (_, _, Ok(credentials)) => Err(format!("expected {expected}, got credentials {credentials:?}")),
        (_, _, Err(e)) => Err(format!("expected {expected}, got error {}", crate::error_chain(&e))),
    }
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The credentials match the expected `Ok` object (`account_id` and the optional fields only where given).
fn check_credentials(wanted: &Value, got: &super::Credentials) -> Result<(), String> {
    let expiry = got.expiry().map(|t| t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()));
    let actual = (got.access_key_id(), got.secret_access_key(), got.session_token(), expiry);
    let expected = (
        wanted["access_key_id"].as_str().unwrap_or_default(),
        wanted["secret_access_key"].as_str().unwrap_or_default(),
        wanted["session_token"].as_str(),
        wanted["expiry"].as_u64(),
    );
    if actual != expected {
        return Err(format!("expected (key, secret, token, expiry) {expected:?}, got {actual:?}"));
    }
    if let Some(account) = wanted["account_id"].as_str()
        && got.account_id().map(|a| a.as_str()) != Some(account)
    {
        return Err(format!("expected account {account}, got {:?}", got.account_id()));
    }
    Ok(())
}

/// The error is of the kind the case's `ErrorContains` means. The SDK's wording is matched in meaning: each
/// error case names the kind of error and a phrase of ours that says the same thing.
fn check_error(case: &str, sdk_text: &str, e: &Error) -> Result<(), String> {
    let chain = crate::error_chain(e);
    let ok = match case {
        // SDK: "No such file or directory (os error 2)" — the token file cannot be read.
        "eks_pod_identity_no_token_file" => {
            matches!(e, Error::Io { what, source } if source.kind() == std::io::ErrorKind::NotFound
                && what.contains("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"))
                && chain.contains(sdk_text)
        }
        // SDK: "the credential provider was not enabled" — IMDS has no role, so no source gave credentials.
        "imds_default_chain_error" | "imds_no_iam_role" => {
            matches!(e, Error::Credentials { provider: super::imds::NAME, denied: false, .. })
                && chain.contains("no IAM role is attached")
        }
        // SDK: "the credential provider was not enabled" — nothing configured and IMDS switched off.
        "imds_disabled" => {
            matches!(e, Error::Config(_))
                && chain.contains("no credentials found")
                && chain.contains("AWS_EC2_METADATA_DISABLED=true")
        }
        // SDK: "provider was not enabled" — the profile's credential_source = Environment finds no keys, and
        // the web identity variables must not be used instead.
        "profile_overrides_web_identity" => {
            matches!(e, Error::Credentials { provider: super::profile::NAME, .. })
                && chain.contains("credential_source = Environment")
                && chain.contains("AWS_ACCESS_KEY_ID")
        }
        // Same wording as the SDK's.
        "web_identity_source_profile_no_env" => {
            matches!(e, Error::Credentials { provider: super::profile::NAME, .. }) && chain.contains(sdk_text)
        }
        // SDK: "InvalidIdentityTokenException: No OpenIDConnect provider found in your account": STS's error,
        // typed, with its message.
        "web_identity_token_invalid_jwt" => {
            matches!(e, Error::Service(s) if s.service == "sts" && s.code == "InvalidIdentityToken"
                && s.kind() == ServiceErrorKind::AccessDenied)
                && chain.contains(sdk_text.trim_start_matches("InvalidIdentityTokenException: "))
        }
        // SDK: "request forbidden: IMDS is disabled" — the token PUT answered 403 (run with IMDSv1 switched off).
        "imds_token_fail" => {
            matches!(e, Error::Credentials { provider: super::imds::NAME, denied: false, .. })
                && chain.contains("HTTP 403")
                && chain.contains("AWS_EC2_METADATA_V1_DISABLED=true")
        }
        _ => return Err(format!("no expected error kind is written down for this case (SDK: {sdk_text:?})")),
    };
    if ok { Ok(()) } else { Err(format!("expected an error meaning {sdk_text:?}, got {e:?}: {chain}")) }
}

/// The web identity token files of a case never show in its error.
fn check_secrets_absent(e: &Error, fs_root: &Path) -> Result<(), String> {
    let shown = format!("{e} {e:?} {}", crate::error_chain(e));
    let token = std::fs::read_to_string(fs_root.join("token.jwt")).unwrap_or_default();
    let token = token.trim();
    if !token.is_empty() && shown.contains(token) {
        return Err(format!("the token in fs/token.jwt shows in the error: {shown}"));
    }
    Ok(())
}

/// The STS requests were recorded against the host our chain would use: the region resolves the same way.
fn check_sts_host(
    exchanges: &[Exchange],
    env: &Env,
    profiles: &ProfileSet,
    region: Option<&str>,
) -> Result<(), String> {
    let Some(sts) = exchanges.iter().find(|x| x.uri.contains("://sts.")) else { return Ok(()) };
    let Some(region) = region else { return Err("the case calls STS but no region resolves".into()) };
    let ours = sts_endpoint(env, profiles, region).map_err(|e| format!("STS endpoint: {e}"))?;
    let recorded = sts.uri.trim_end_matches(path_and_query(&sts.uri));
    if ours.trim_end_matches('/') == recorded { Ok(()) } else { Err(format!("STS at {ours}, recorded {recorded}")) }
}

/// The fixed clock: the `Date` of the first recorded response when it is before the expected expiry, else an
/// hour before that expiry (some recordings carry a later `Date` than their credentials' expiry).
fn clock(exchanges: &[Exchange], expected: &Value) -> SystemTime {
    let date =
        exchanges.iter().find_map(|x| x.response_headers.iter().find(|(n, _)| n == "date").map(|(_, v)| http_date(v)));
    let expiry = expected["Ok"]["expiry"].as_u64().map(|s| UNIX_EPOCH + Duration::from_secs(s));
    match (date, expiry) {
        (Some(date), Some(expiry)) if date < expiry => date,
        (_, Some(expiry)) => expiry - Duration::from_secs(3600),
        (Some(date), None) => date,
        // No recorded time at all: any fixed time will do (2021-09-21T00:00:00Z).
        (None, None) => UNIX_EPOCH + Duration::from_secs(1_632_182_400),
    }
}

/// `Tue, 21 Sep 2021 18:32:37 GMT`
fn http_date(text: &str) -> SystemTime {
    let format =
        format_description!("[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT");
    let parsed = PrimitiveDateTime::parse(text, &format).unwrap_or_else(|e| panic!("date {text:?}: {e}"));
    SystemTime::from(parsed.assume_utc())
}

/// One recorded request and its response.
#[derive(Debug, Clone, Default)]
struct Exchange {
    method: String,
    uri: String,
    /// Lowercase names, every value.
    headers: BTreeMap<String, Vec<String>>,
    body: String,
    status: u16,
    /// Lowercase names.
    response_headers: Vec<(String, String)>,
    response_body: String,
}

/// The exchanges of `http-traffic.json`, in the order their requests were made.
fn exchanges(traffic: &Value) -> Vec<Exchange> {
    let mut exchanges: Vec<Exchange> = Vec::new();
    let mut by_connection: BTreeMap<u64, usize> = BTreeMap::new();
    for event in traffic["events"].as_array().expect("events") {
        let connection = event["connection_id"].as_u64().expect("connection_id");
        let action = &event["action"];
        if let Some(request) = action.get("Request") {
            let request = &request["request"];
            let headers = request["headers"]
                .as_object()
                .expect("request headers")
                .iter()
                .map(|(name, values)| {
                    let values = values.as_array().expect("header values").iter();
                    (name.to_ascii_lowercase(), values.map(|v| v.as_str().expect("text").to_owned()).collect())
                })
                .collect();
            by_connection.insert(connection, exchanges.len());
            exchanges.push(Exchange {
                method: request["method"].as_str().expect("method").to_owned(),
                uri: request["uri"].as_str().expect("uri").to_owned(),
                headers,
                ..Exchange::default()
            });
            continue;
        }
        let exchange = &mut exchanges[*by_connection.get(&connection).expect("a request opens each connection")];
        if let Some(response) = action.get("Response") {
            let ok = response["response"].get("Ok").unwrap_or_else(|| panic!("unsupported response {response}"));
            exchange.status = u16::try_from(ok["status"].as_u64().expect("status")).expect("a status fits u16");
            for (name, values) in ok["headers"].as_object().expect("response headers") {
                for value in values.as_array().expect("header values") {
                    exchange.response_headers.push((name.to_ascii_lowercase(), value.as_str().expect("text").into()));
                }
            }
        } else if let Some(data) = action.get("Data") {
            let text = data["data"]["Utf8"].as_str().unwrap_or_else(|| panic!("only Utf8 data is recorded: {data}"));
            match data["direction"].as_str() {
                Some("Request") => exchange.body.push_str(text),
                Some("Response") => exchange.response_body.push_str(text),
                other => panic!("unknown data direction {other:?}"),
            }
        }
    }
    exchanges
}

/// The value of `name` in an `a=b&c=d` form body (not decoded: only `Action` is compared).
fn form_field<'a>(body: &'a str, name: &str) -> Option<&'a str> {
    body.split('&').find_map(|pair| pair.split_once('=').filter(|(n, _)| *n == name).map(|(_, v)| v))
}

/// Why `seen` is not the recorded request, if it is not.
fn differences(recorded: &Exchange, seen: &Seen) -> Vec<String> {
    let mut out = Vec::new();
    let path = path_and_query(&recorded.uri);
    if seen.method != recorded.method || seen.path != path {
        out.push(format!("{} {} instead of {} {path}", seen.method, seen.path, recorded.method));
    }
    for &name in CHECKED_HEADERS {
        if let Some(value) = recorded.headers.get(name).and_then(|v| v.first())
            && seen.header(name) != Some(value.as_str())
        {
            out.push(format!("header {name}: {:?} instead of {value:?}", seen.header(name)));
        }
    }
    let media_type = |v: &str| v.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    if let Some(value) = recorded.headers.get("content-type").and_then(|v| v.first())
        && seen.header("content-type").map(media_type) != Some(media_type(value))
    {
        out.push(format!("content-type {:?} instead of {value:?}", seen.header("content-type")));
    }
    // STS: signed (AssumeRole) or not (AssumeRoleWithWebIdentity) as recorded, with the recorded Action.
    if recorded.method == "POST" {
        let (ours, theirs) = (seen.header("authorization").is_some(), recorded.headers.contains_key("authorization"));
        if ours != theirs {
            out.push(format!("signed: {ours} instead of {theirs}"));
        }
    }
    if let Some(action) = form_field(&recorded.body, "Action")
        && form_field(&seen.body, "Action") != Some(action)
    {
        out.push(format!("Action {:?} instead of {action:?}", form_field(&seen.body, "Action")));
    }
    out
}

/// What the replay server saw, once stopped.
#[derive(Debug, Default)]
struct Traffic {
    /// Recorded exchanges answered, in order.
    consumed: usize,
    /// Requests that were not the next recorded one (each answered 400).
    problems: Vec<String>,
}

/// A server on 127.0.0.1 that answers the recorded requests in order; stopped and joined by
/// [`Replay::finish`] or on drop.
struct Replay {
    server: test_http::Server,
    traffic: Arc<Mutex<Traffic>>,
}

impl Replay {
    fn start(exchanges: Vec<Exchange>) -> Replay {
        let traffic = Arc::new(Mutex::new(Traffic::default()));
        let server = {
            let traffic = Arc::clone(&traffic);
            test_http::Server::start(move |stream| {
                let mut traffic = traffic.lock().expect("the test thread does not panic while holding the lock");
                answer(&stream, &exchanges, &mut traffic);
            })
        };
        Replay { server, traffic }
    }

    fn base(&self) -> String {
        self.server.base()
    }

    /// Stops the server and says what it saw.
    fn finish(mut self) -> Traffic {
        self.server.stop();
        std::mem::take(&mut *self.traffic.lock().expect("the server thread has ended"))
    }
}

/// Answers one connection: the next recorded response when the request is the next recorded one, else 400.
fn answer(stream: &TcpStream, exchanges: &[Exchange], traffic: &mut Traffic) {
    let Some(seen) = read_request(stream) else { return };
    let (status, headers, body) = match exchanges.get(traffic.consumed) {
        None => {
            traffic
                .problems
                .push(format!("unexpected request {} {} after the recording ended", seen.method, seen.path));
            (400, Vec::new(), "unexpected request".to_owned())
        }
        Some(recorded) => {
            let differences = differences(recorded, &seen);
            if differences.is_empty() {
                traffic.consumed += 1;
                (recorded.status, recorded.response_headers.clone(), recorded.response_body.clone())
            } else {
                traffic.problems.push(format!("exchange {}: {}", traffic.consumed, differences.join("; ")));
                (400, Vec::new(), "request differs from the recording".to_owned())
            }
        }
    };
    let _ = write_response(stream, status, &headers, &body);
}

#[test]
fn http_dates_parse() {
    assert_eq!(http_date("Tue, 21 Sep 2021 18:32:37 GMT"), UNIX_EPOCH + Duration::from_secs(1_632_249_157));
}

#[test]
fn recorded_exchanges_follow_request_order() {
    let traffic: Value = serde_json::json!({"events": [
        {"connection_id": 0, "action": {"Request": {"request": {"uri": "http://h/a", "method": "PUT", "headers": {}}}}},
        {"connection_id": 0, "action": {"Response": {"response": {"Ok": {"status": 503, "headers": {}}}}}},
        {"connection_id": 1, "action": {"Request": {"request": {"uri": "http://h/b?x=1", "method": "POST",
            "headers": {"Content-Type": ["text/plain"]}}}}},
        {"connection_id": 1, "action": {"Data": {"data": {"Utf8": "Action=Go&V=1"}, "direction": "Request"}}},
        {"connection_id": 1, "action": {"Response": {"response": {"Ok": {"status": 200,
            "headers": {"date": ["Tue, 21 Sep 2021 18:32:37 GMT"]}}}}}},
        {"connection_id": 1, "action": {"Data": {"data": {"Utf8": "ok"}, "direction": "Response"}}},
        {"connection_id": 1, "action": {"Eof": {"ok": true, "direction": "Response"}}}
    ]});
    let got = exchanges(&traffic);
    let summary: Vec<_> = got.iter().map(|x| (x.method.as_str(), x.uri.as_str(), x.status, x.body.as_str())).collect();
    assert_eq!(summary, [("PUT", "http://h/a", 503, ""), ("POST", "http://h/b?x=1", 200, "Action=Go&V=1")]);
    assert_eq!(got[1].response_body, "ok");
    assert_eq!(got[1].headers.get("content-type"), Some(&vec!["text/plain".to_owned()]));

    let seen = |method: &str, path: &str, body: &str| Seen {
        method: method.into(),
        path: path.into(),
        version: "HTTP/1.1".into(),
        headers: vec![("content-type".into(), "text/plain; charset=utf-8".into())],
        body: body.into(),
    };
    assert!(differences(&got[1], &seen("POST", "/b?x=1", "Action=Go&V=2")).is_empty());
    assert_eq!(differences(&got[1], &seen("POST", "/b?x=1", "Action=Stop")).len(), 1);
    assert_eq!(differences(&got[1], &seen("GET", "/b", "Action=Go")).len(), 1);
}

/// The replay server refuses a request that is not the next recorded one, and counts what was consumed.
#[test]
fn replay_server_checks_the_order() {
    let recorded = |method: &str, uri: &str| Exchange {
        method: method.into(),
        uri: uri.into(),
        status: 200,
        response_body: format!("{method} answered"),
        ..Exchange::default()
    };
    let server = Replay::start(vec![recorded("PUT", "http://h/first"), recorded("GET", "http://h/second")]);
    let http = Http::new();
    let send = |method: &str, path: &str| {
        let url = format!("{}{path}", server.base());
        let request = crate::aws::http::Request {
            method,
            url: &url,
            headers: Vec::new(),
            body: &[],
            timeout: Duration::from_secs(5),
            target: "replay",
        };
        http.send(&request).expect("the replay server answers")
    };
    assert_eq!(send("PUT", "/first").body, "PUT answered");
    assert_eq!(send("GET", "/other").status, 400);
    assert_eq!(send("GET", "/second").body, "GET answered");
    assert_eq!(send("GET", "/second").status, 400);
    let traffic = server.finish();
    assert_eq!(traffic.consumed, 2);
    assert_eq!(traffic.problems.len(), 2, "{:?}", traffic.problems);
}

/// lock-exec's own chain-order fixtures (`tests/fixtures/chain-order/<case>/`): which source is selected.
#[test]
fn chain_order_fixtures() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/chain-order");
    let mut cases: Vec<_> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("read {}: {e}", root.display()))
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.is_dir())
        .collect();
    cases.sort();
    let mut failures = Vec::new();
    for case in &cases {
        let name = case.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let vars: Vec<(String, String)> = read_json(&case.join("env.json"))
            .as_object()
            .map(|o| o.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned())).collect())
            .unwrap_or_default();
        let expected = std::fs::read_to_string(case.join("expected")).unwrap_or_default().trim().to_owned();
        let env = Env::from_pairs(&vars).with_fs_root(case.join("fs"));
        let http = Http::new();
        let got = ProfileSet::load(&env, None).and_then(|profiles| {
            let ctx = Context { env: &env, http: &http, profiles: &profiles, region: "us-east-1" };
            select(&ctx).map(|source| source.name().to_owned())
        });
        let ok = match (&got, expected.strip_prefix("error: ")) {
            (Ok(source), None) => *source == expected,
            (Err(e), Some(text)) => crate::error_chain(e).contains(text),
            _ => false,
        };
        if !ok {
            let got = got.map_err(|e| crate::error_chain(&e));
            failures.push(format!("{name}: expected {expected:?}, got {got:?}"));
        }
    }
    assert!(failures.is_empty(), "chain-order fixtures failed:\n{}", failures.join("\n"));
    assert_eq!(cases.len(), 14, "fixture folders read");
}
