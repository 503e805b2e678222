//! Credentials and the region from the EC2 instance metadata service (IMDS).
//!
//! Reads, in order: `AWS_EC2_METADATA_DISABLED` (`true`: the source does not apply), then the endpoint from
//! `AWS_EC2_METADATA_SERVICE_ENDPOINT`, else the profile's `ec2_metadata_service_endpoint`, else the mode from
//! `AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE`, else the profile's `ec2_metadata_service_endpoint_mode` (`IPv4`:
//! `http://169.254.169.254`, the default; `IPv6`: `http://[fd00:ec2::254]`), and `AWS_EC2_METADATA_V1_DISABLED`
//! (`true`: never fall back to IMDSv1).
//!
//! IMDSv2: `PUT /latest/api/token` gives a session token, sent as `x-aws-ec2-metadata-token` with every `GET`.
//! When the token request answers 403, 404 or 405 the requests go without a token (IMDSv1). The role name comes
//! from `/latest/meta-data/iam/security-credentials/`, its credentials from the same path plus the role name.
//!
//! Requests never go through a proxy, whatever the endpoint and the proxy variables: the answers (plain http)
//! hold the token and credentials.

use std::time::Duration;

use aws_credential_types::Credentials;

use super::container::{Attempts, credentials_from_document, error_detail, parse_url, send_with_retries};
use crate::aws::http::{Http, Request, Response};
use crate::env::Env;
use crate::error::Error;

/// The source's name in logs and errors.
pub const NAME: &str = "imds";

/// The endpoint in `IPv4` mode (the default).
pub const IPV4_ENDPOINT: &str = "http://169.254.169.254";

/// The endpoint in `IPv6` mode.
pub const IPV6_ENDPOINT: &str = "http://[fd00:ec2::254]";

/// Tries for each IMDS request: three, one second each (IMDS answers in milliseconds when it answers at all).
pub const ATTEMPTS: Attempts =
    Attempts { count: 3, timeout: Duration::from_secs(1), pause: Duration::from_millis(100) };

/// The session token request.
pub const TOKEN_PATH: &str = "/latest/api/token";

/// The role list; the role's credentials are at this path plus the role name.
pub const CREDENTIALS_PATH: &str = "/latest/meta-data/iam/security-credentials/";

/// The instance's region.
pub const REGION_PATH: &str = "/latest/meta-data/placement/region";

/// Lifetime asked for the session token: six hours, the most IMDS allows.
const TOKEN_TTL_SECONDS: &str = "21600";

/// What to do when IMDS cannot be reached, for error messages.
const UNREACHABLE_HINT: &str = "inside a container this is usually the IMDSv2 PUT response hop limit of 1, which \
     stops the token answer one hop short of the container: raise it with `aws ec2 modify-instance-metadata-options \
     --instance-id <id> --http-put-response-hop-limit 2`, or give the workload its own credentials with IRSA or \
     EKS Pod Identity; outside EC2, set AWS_EC2_METADATA_DISABLED=true and configure credentials another way";

/// False when `AWS_EC2_METADATA_DISABLED=true`: the source does not apply.
pub fn enabled(env: &Env) -> bool {
    !env.flag("AWS_EC2_METADATA_DISABLED")
}

/// The endpoint's base URL, without a trailing slash. `profile` looks a key up in the selected profile.
///
/// An error when an endpoint is not an http(s) URL or a mode is neither `IPv4` nor `IPv6`.
pub fn endpoint(env: &Env, profile: &dyn Fn(&str) -> Option<String>) -> Result<String, Error> {
    let setting = |variable: &'static str, key: &'static str| -> Option<(String, String)> {
        if let Some(value) = env.var(variable) {
            return Some((value, variable.to_owned()));
        }
        let value = profile(key)?;
        let value = value.trim();
        (!value.is_empty()).then(|| (value.to_owned(), format!("the profile's {key}")))
    };
    if let Some((url, origin)) = setting("AWS_EC2_METADATA_SERVICE_ENDPOINT", "ec2_metadata_service_endpoint") {
        if let Err(why) = parse_url(&url) {
            // Shown without a user name or password: they would be secrets in a log line.
            let shown = crate::aws::proxy::endpoint_for_messages(&url);
            return Err(Error::Config(format!("invalid IMDS endpoint {shown:?} in {origin}: invalid uri: {why}")));
        }
        return Ok(url.trim_end_matches('/').to_owned());
    }
    match setting("AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE", "ec2_metadata_service_endpoint_mode") {
        None => Ok(IPV4_ENDPOINT.to_owned()),
        Some((mode, _)) if mode.eq_ignore_ascii_case("ipv4") => Ok(IPV4_ENDPOINT.to_owned()),
        Some((mode, _)) if mode.eq_ignore_ascii_case("ipv6") => Ok(IPV6_ENDPOINT.to_owned()),
        Some((mode, origin)) => {
            Err(Error::Config(format!("`{mode}` is not a valid endpoint mode (in {origin}): use IPv4 or IPv6")))
        }
    }
}

/// Fetches the instance role's credentials from IMDS at `endpoint` (from [`endpoint`]), with [`ATTEMPTS`].
pub fn load(env: &Env, http: &Http, endpoint: &str) -> Result<Credentials, Error> {
    load_with(env, http, endpoint, ATTEMPTS)
}

/// Fetches the instance role's credentials, trying each request as `attempts` says.
pub fn load_with(env: &Env, http: &Http, endpoint: &str, attempts: Attempts) -> Result<Credentials, Error> {
    let session = Session::open(env, http, endpoint, attempts)?;
    let roles = session.get(CREDENTIALS_PATH)?;
    match roles.status {
        200 => {}
        404 => {
            return Err(failure(
                "no IAM role is attached to this instance (it has no instance profile); attach one, or configure \
                 credentials another way"
                    .to_owned(),
            ));
        }
        status => return Err(session.refused(CREDENTIALS_PATH, status, &roles)),
    }
    let Some(role) = roles.body.lines().map(str::trim).find(|line| !line.is_empty()) else {
        return Err(failure("the instance's role list is empty (no instance profile is attached)".to_owned()));
    };
    if role.contains(['/', '?', '#', '%']) {
        return Err(failure(format!("the instance's role name {role:?} is not a valid role name")));
    }
    let path = format!("{CREDENTIALS_PATH}{role}");
    let answer = session.get(&path)?;
    if answer.status != 200 {
        return Err(session.refused(&path, answer.status, &answer));
    }
    credentials_from_document(NAME, &answer.body, &session.secrets())
}

/// The instance's region from IMDS, with [`ATTEMPTS`]: `None` when IMDS is disabled or knows no region.
/// `profile` looks a key up in the selected profile.
pub fn region(env: &Env, http: &Http, profile: &dyn Fn(&str) -> Option<String>) -> Result<Option<String>, Error> {
    region_with(env, http, profile, ATTEMPTS)
}

/// The instance's region from IMDS, trying each request as `attempts` says.
pub fn region_with(
    env: &Env,
    http: &Http,
    profile: &dyn Fn(&str) -> Option<String>,
    attempts: Attempts,
) -> Result<Option<String>, Error> {
    if !enabled(env) {
        return Ok(None);
    }
    let endpoint = endpoint(env, profile)?;
    let session = Session::open(env, http, &endpoint, attempts)?;
    let answer = session.get(REGION_PATH)?;
    match answer.status {
        200 => Ok(Some(answer.body.trim().to_owned()).filter(|region| !region.is_empty())),
        404 => Ok(None),
        status => Err(session.refused(REGION_PATH, status, &answer)),
    }
}

/// Requests to one IMDS endpoint, with an IMDSv2 token or (IMDSv1) without. No `Debug`: the token is a secret.
struct Session<'a> {
    /// Never through a proxy ([`Http::direct`]).
    http: Http,
    endpoint: &'a str,
    attempts: Attempts,
    token: Option<String>,
}

impl<'a> Session<'a> {
    /// Asks for a session token, falling back to IMDSv1 on 403, 404 and 405 unless v1 is disabled.
    fn open(env: &Env, http: &Http, endpoint: &'a str, attempts: Attempts) -> Result<Session<'a>, Error> {
        let mut session = Session { http: http.direct(), endpoint, attempts, token: None };
        let headers = vec![("x-aws-ec2-metadata-token-ttl-seconds".to_owned(), TOKEN_TTL_SECONDS.to_owned())];
        let answer = session.send("PUT", TOKEN_PATH, headers)?;
        match answer.status {
            200 => {
                let token = answer.body.trim();
                if token.is_empty() || token.chars().any(|c| c.is_control()) {
                    return Err(failure(format!("{endpoint}{TOKEN_PATH} answered an empty or malformed token")));
                }
                session.token = Some(token.to_owned());
            }
            403..=405 if env.flag("AWS_EC2_METADATA_V1_DISABLED") => {
                return Err(failure(format!(
                    "{endpoint}{TOKEN_PATH} refused an IMDSv2 token (HTTP {}) and falling back to IMDSv1 is \
                     disabled by AWS_EC2_METADATA_V1_DISABLED=true",
                    answer.status
                )));
            }
            403..=405 => {}
            status => return Err(session.refused(TOKEN_PATH, status, &answer)),
        }
        Ok(session)
    }

    /// A GET with the session token, when there is one.
    fn get(&self, path: &str) -> Result<Response, Error> {
        let headers = match &self.token {
            Some(token) => vec![("x-aws-ec2-metadata-token".to_owned(), token.clone())],
            None => Vec::new(),
        };
        self.send("GET", path, headers)
    }

    fn send(&self, method: &str, path: &str, headers: Vec<(String, String)>) -> Result<Response, Error> {
        let url = format!("{}{path}", self.endpoint);
        let request = Request { method, url: &url, headers, body: &[], timeout: self.attempts.timeout, target: "imds" };
        send_with_retries(&self.http, &request, self.attempts).map_err(|e| explain_unreachable(self.endpoint, e))
    }

    /// An error for an unexpected answer to `path`.
    fn refused(&self, path: &str, status: u16, answer: &Response) -> Error {
        let detail = error_detail(answer, &self.secrets());
        let message = format!("{}{path} answered HTTP {status}: {detail}", self.endpoint);
        Error::Credentials { provider: NAME, message, denied: false }
    }

    /// Values that must not appear in errors.
    fn secrets(&self) -> Vec<&str> {
        self.token.as_deref().into_iter().collect()
    }
}

fn failure(message: String) -> Error {
    Error::Credentials { provider: NAME, message, denied: false }
}

/// A transport failure becomes an error that says why IMDS is usually unreachable and what to do.
fn explain_unreachable(endpoint: &str, e: Error) -> Error {
    let Error::Transport { source, .. } = &e else {
        return e;
    };
    failure(format!("cannot reach the instance metadata service at {endpoint} ({source}); {UNREACHABLE_HINT}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::credentials::container::test_server::{Reply, Seen, Server};
    use serde::Deserialize;
    use std::collections::BTreeMap;

    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
    const SESSION: &str = "IQoJb3JpZ2luX2VjEXAMPLESESSIONTOKEN";

    fn no_profile(_: &str) -> Option<String> {
        None
    }

    fn document() -> String {
        format!(
            r#"{{"Code":"Success","LastUpdated":"2024-01-01T00:00:00Z","Type":"AWS-HMAC","AccessKeyId":"ASIAEXAMPLE",
               "SecretAccessKey":"{SECRET}","Token":"{SESSION}","Expiration":"2030-01-02T03:04:05+00:00"}}"#
        )
    }

    /// Finds `key = value` in `[default]` or `[profile NAME]` of an INI text: just enough for the vectors.
    fn lookup(config: &str, profile: &str, key: &str) -> Option<String> {
        let wanted = if profile == "default" { "[default]".to_owned() } else { format!("[profile {profile}]") };
        let mut inside = false;
        for line in config.lines().map(str::trim) {
            if line.starts_with('[') {
                inside = line == wanted;
            } else if inside
                && let Some((name, value)) = line.split_once('=')
                && name.trim() == key
            {
                return Some(value.trim().to_owned());
            }
        }
        None
    }

    #[derive(Deserialize)]
    struct Vectors {
        tests: Vec<Vector>,
    }

    #[derive(Deserialize)]
    struct Vector {
        docs: String,
        env: BTreeMap<String, String>,
        fs: BTreeMap<String, String>,
        endpoint_override: Option<String>,
        mode_override: Option<String>,
        result: BTreeMap<String, String>,
    }

    #[test]
    fn sdk_conformance_vectors() {
        let Some(root) = crate::conformance_data() else { return };
        let text = std::fs::read_to_string(root.join("imds-endpoint-tests.json"))
            .expect("the shared conformance data is present");
        let vectors: Vectors = serde_json::from_str(&text).expect("the conformance file is JSON");
        let (mut passed, mut skipped) = (Vec::new(), Vec::new());
        for case in &vectors.tests {
            // The SDK's client builder can override endpoint and mode in code; lock-exec has no such setting
            // (only the environment and the profile), so these vectors do not apply.
            if case.endpoint_override.is_some() || case.mode_override.is_some() {
                skipped.push(case.docs.as_str());
                continue;
            }
            let pairs: Vec<(&String, &String)> = case.env.iter().collect();
            let env = Env::from_pairs(&pairs);
            let config = env.var("AWS_CONFIG_FILE").and_then(|name| case.fs.get(&name).cloned()).unwrap_or_default();
            let profile_name = env.var("AWS_PROFILE").unwrap_or_else(|| "default".to_owned());
            let profile = |key: &str| lookup(&config, &profile_name, key);
            let got = endpoint(&env, &profile);
            match (case.result.get("Ok"), case.result.get("Err"), &got) {
                (Some(expected), None, Ok(base)) => {
                    assert_eq!(&format!("{base}{TOKEN_PATH}"), expected, "{}", case.docs)
                }
                (None, Some(expected), Err(e)) => {
                    let message = e.to_string();
                    // The SDK's wording for a bad URL ("invalid uri character") is matched in meaning only.
                    let wanted = if expected.contains("endpoint mode") { expected.as_str() } else { "invalid uri" };
                    assert!(message.contains(wanted), "{}: {message:?} should contain {wanted:?}", case.docs);
                }
                _ => panic!("{}: expected {:?}, got {got:?}", case.docs, case.result),
            }
            passed.push(case.docs.as_str());
        }
        assert_eq!(
            skipped,
            [
                "explicit endpoint override",
                "explicit mode override",
                "environment variable overrides endpoint mode override"
            ]
        );
        assert_eq!(passed.len(), 11);
        assert_eq!(passed.len() + skipped.len(), vectors.tests.len());
    }

    fn check_endpoint(env: &[(&str, &str)], profile: &[(&str, &str)], expected: Result<&str, &str>) {
        let lookup = |key: &str| profile.iter().find(|(k, _)| *k == key).map(|(_, v)| (*v).to_owned());
        match (endpoint(&Env::from_pairs(env), &lookup), expected) {
            (Ok(got), Ok(expected)) => assert_eq!(got, expected),
            (Err(e), Err(part)) => assert!(e.to_string().contains(part), "{e}"),
            (got, expected) => panic!("{env:?} {profile:?}: expected {expected:?}, got {got:?}"),
        }
    }

    #[test]
    fn endpoint_settings() {
        check_endpoint(&[], &[], Ok(IPV4_ENDPOINT));
        check_endpoint(
            &[("AWS_EC2_METADATA_SERVICE_ENDPOINT", "http://127.0.0.1:1338/")],
            &[],
            Ok("http://127.0.0.1:1338"),
        );
        check_endpoint(&[("AWS_EC2_METADATA_SERVICE_ENDPOINT", " ")], &[], Ok(IPV4_ENDPOINT));
        check_endpoint(&[], &[("ec2_metadata_service_endpoint", "http://[fd00:ec2::254]/")], Ok(IPV6_ENDPOINT));
        check_endpoint(&[], &[("ec2_metadata_service_endpoint", " ")], Ok(IPV4_ENDPOINT));
        check_endpoint(
            &[("AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE", "ipv4")],
            &[("ec2_metadata_service_endpoint_mode", "IPv6")],
            Ok(IPV4_ENDPOINT),
        );
        check_endpoint(
            &[("AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE", "IPv5")],
            &[],
            Err("AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE"),
        );
        check_endpoint(
            &[],
            &[("ec2_metadata_service_endpoint_mode", "v6")],
            Err("the profile's ec2_metadata_service_endpoint_mode"),
        );
        check_endpoint(
            &[("AWS_EC2_METADATA_SERVICE_ENDPOINT", "169.254.169.254")],
            &[],
            Err("AWS_EC2_METADATA_SERVICE_ENDPOINT"),
        );
        check_endpoint(&[("AWS_EC2_METADATA_SERVICE_ENDPOINT", "ftp://x")], &[], Err("http or https"));
    }

    #[test]
    fn disabled_flag() {
        assert!(enabled(&Env::from_pairs::<&str, &str>(&[])));
        assert!(enabled(&Env::from_pairs(&[("AWS_EC2_METADATA_DISABLED", "false")])));
        assert!(!enabled(&Env::from_pairs(&[("AWS_EC2_METADATA_DISABLED", "True")])));
    }

    /// An IMDS that hands out `token-N` for the N-th request and insists on the latest token in GETs when
    /// `token_status` is 200; with another status, the PUT answers that and GETs must come without a token.
    fn imds(token_status: u16) -> Server {
        let issued = std::sync::Mutex::new(None::<String>);
        Server::start(move |seen: &Seen, index| {
            let mut issued = issued.lock().expect("one request at a time");
            if seen.method == "PUT" && seen.path == TOKEN_PATH {
                if seen.header("x-aws-ec2-metadata-token-ttl-seconds") != Some("21600") {
                    return Reply::With(400, "missing ttl".into());
                }
                if token_status != 200 {
                    return Reply::With(token_status, String::new());
                }
                let token = format!("token-{index}");
                *issued = Some(token.clone());
                return Reply::With(200, token);
            }
            if seen.method != "GET" || seen.header("x-aws-ec2-metadata-token") != issued.as_deref() {
                return Reply::With(401, String::new());
            }
            match seen.path.as_str() {
                CREDENTIALS_PATH => Reply::With(200, "web-role\n".into()),
                "/latest/meta-data/iam/security-credentials/web-role" => Reply::With(200, document()),
                REGION_PATH => Reply::With(200, "eu-west-3".into()),
                _ => Reply::With(404, String::new()),
            }
        })
    }

    #[test]
    fn imdsv2_happy_path() {
        let server = imds(200);
        let c = load_with(&Env::from_pairs::<&str, &str>(&[]), &Http::new(), &server.base(), Attempts::quick())
            .expect("credentials");
        assert_eq!(
            (c.access_key_id(), c.secret_access_key(), c.session_token()),
            ("ASIAEXAMPLE", SECRET, Some(SESSION))
        );
        assert_eq!(c.expiry(), Some(std::time::UNIX_EPOCH + Duration::from_secs(1_893_553_445)));
        let seen: Vec<_> = server
            .seen()
            .into_iter()
            .map(|s| (s.method.clone(), s.path.clone(), s.header("x-aws-ec2-metadata-token").map(str::to_owned)))
            .collect();
        let token = Some("token-0".to_owned());
        assert_eq!(
            seen,
            [
                ("PUT".to_owned(), TOKEN_PATH.to_owned(), None),
                ("GET".to_owned(), CREDENTIALS_PATH.to_owned(), token.clone()),
                ("GET".to_owned(), format!("{CREDENTIALS_PATH}web-role"), token),
            ]
        );
    }

    #[test]
    fn token_is_the_one_the_put_returned() {
        // The first PUT fails with 500 and is retried, so the token handed out is `token-1`; GETs with any other
        // token are refused by the server.
        let issued = std::sync::Mutex::new(None::<String>);
        let server = Server::start(move |seen: &Seen, index| {
            let mut issued = issued.lock().expect("one request at a time");
            match (seen.method.as_str(), index) {
                ("PUT", 0) => Reply::With(500, String::new()),
                ("PUT", _) => {
                    *issued = Some(format!("token-{index}"));
                    Reply::With(200, format!("token-{index}\n"))
                }
                _ if seen.header("x-aws-ec2-metadata-token") != issued.as_deref() => Reply::With(401, String::new()),
                _ if seen.path == CREDENTIALS_PATH => Reply::With(200, "web-role".into()),
                _ => Reply::With(200, document()),
            }
        });
        load_with(&Env::from_pairs::<&str, &str>(&[]), &Http::new(), &server.base(), Attempts::quick())
            .expect("credentials");
        let tokens: Vec<_> =
            server.seen().iter().map(|s| s.header("x-aws-ec2-metadata-token").map(str::to_owned)).collect();
        assert_eq!(tokens, [None, None, Some("token-1".to_owned()), Some("token-1".to_owned())]);
    }

    #[test]
    fn falls_back_to_imdsv1() {
        for status in [403, 404, 405] {
            let server = imds(status);
            let c = load_with(&Env::from_pairs::<&str, &str>(&[]), &Http::new(), &server.base(), Attempts::quick())
                .unwrap_or_else(|e| panic!("HTTP {status}: {e}"));
            assert_eq!(c.access_key_id(), "ASIAEXAMPLE");
            let seen = server.seen();
            assert_eq!(seen.len(), 3, "HTTP {status}");
            assert!(seen[1..].iter().all(|s| s.header("x-aws-ec2-metadata-token").is_none()));
        }
    }

    #[test]
    fn imdsv1_can_be_disabled() {
        let server = imds(403);
        let env = Env::from_pairs(&[("AWS_EC2_METADATA_V1_DISABLED", "true")]);
        let e = load_with(&env, &Http::new(), &server.base(), Attempts::quick()).expect_err("no fallback");
        let message = e.to_string();
        assert!(message.contains("IMDSv1") && message.contains("AWS_EC2_METADATA_V1_DISABLED"), "{message}");
        assert_eq!(server.seen().len(), 1);
    }

    #[test]
    fn other_token_errors_do_not_fall_back() {
        let server = imds(400);
        let e = load_with(&Env::from_pairs::<&str, &str>(&[]), &Http::new(), &server.base(), Attempts::quick())
            .expect_err("400 is an error");
        assert!(e.to_string().contains("HTTP 400"), "{e}");
        assert_eq!(server.seen().len(), 1);
    }

    #[test]
    fn no_role_attached() {
        let server = Server::start(|seen: &Seen, _| match seen.method.as_str() {
            "PUT" => Reply::With(200, "t".into()),
            _ => Reply::With(404, "<html>Not Found</html>".into()),
        });
        let e = load_with(&Env::from_pairs::<&str, &str>(&[]), &Http::new(), &server.base(), Attempts::quick())
            .expect_err("no role");
        assert!(e.to_string().contains("no IAM role is attached"), "{e}");
    }

    #[test]
    fn secrets_never_appear_in_errors() {
        let token = "imds-session-token-value";
        let answers = [
            (401, format!("token {token} expired")),
            (500, format!(r#"{{"Code":"InternalError","Message":"for token {token}"}}"#)),
            (200, format!(r#"{{"Code":"Failed","Message":"{token}","AccessKeyId":"A","SecretAccessKey":"{SECRET}"}}"#)),
            (
                200,
                format!(r#"{{"Code":"Success","AccessKeyId":"A","SecretAccessKey":"{SECRET}","Token":["{SESSION}"]}}"#),
            ),
            (200, format!(r#"{{"Code":"Success","SecretAccessKey":"{SECRET}","Token":"{SESSION}"}}"#)),
            (200, format!(r#"{{"Code":"Success","AccessKeyId":"A","SecretAccessKey":"{SECRET}"#)),
        ];
        for (status, body) in answers {
            let answer = body.clone();
            let server = Server::start(move |seen: &Seen, _| match seen.path.as_str() {
                TOKEN_PATH => Reply::With(200, token.into()),
                CREDENTIALS_PATH => Reply::With(200, "role".into()),
                _ => Reply::With(status, answer.clone()),
            });
            let e = load_with(&Env::from_pairs::<&str, &str>(&[]), &Http::new(), &server.base(), Attempts::quick())
                .expect_err("an error answer");
            let shown = format!("{e} {e:?}");
            assert!(matches!(e, Error::Credentials { provider: NAME, .. }), "{shown}");
            for secret in [token, SECRET, SESSION] {
                assert!(!shown.contains(secret), "{body} leaked into {shown}");
            }
        }
    }

    fn assert_hop_limit_hint(e: &Error) {
        let message = e.to_string();
        assert!(message.contains("hop limit of 1"), "{message}");
        assert!(message.contains("aws ec2 modify-instance-metadata-options"), "{message}");
        assert!(message.contains("--http-put-response-hop-limit 2"), "{message}");
        assert!(message.contains("IRSA") && message.contains("Pod Identity"), "{message}");
    }

    #[test]
    fn timeouts_explain_the_hop_limit() {
        let server = Server::start(|_, _| Reply::Hang);
        let attempts = Attempts { count: 2, timeout: Duration::from_millis(300), pause: Duration::ZERO };
        let e = load_with(&Env::from_pairs::<&str, &str>(&[]), &Http::new(), &server.base(), attempts)
            .expect_err("no answer");
        assert_hop_limit_hint(&e);
        assert!(e.to_string().contains(&server.base()), "{e}");
        assert_eq!(server.seen().len(), 2, "a timeout is tried again");
    }

    #[test]
    fn refused_connections_explain_the_hop_limit() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("address"));
        drop(listener);
        let attempts = Attempts { count: 2, timeout: Duration::from_millis(500), pause: Duration::ZERO };
        let e = load_with(&Env::from_pairs::<&str, &str>(&[]), &Http::new(), &base, attempts).expect_err("refused");
        assert_hop_limit_hint(&e);
    }

    #[test]
    fn region_from_imds() {
        let server = imds(200);
        let env = Env::from_pairs(&[("AWS_EC2_METADATA_SERVICE_ENDPOINT", server.base())]);
        let got = region_with(&env, &Http::new(), &no_profile, Attempts::quick()).expect("a region");
        assert_eq!(got.as_deref(), Some("eu-west-3"));
        assert_eq!(server.seen().len(), 2);

        let env = Env::from_pairs(&[
            ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
            ("AWS_EC2_METADATA_SERVICE_ENDPOINT", server.base()),
        ]);
        assert_eq!(region_with(&env, &Http::new(), &no_profile, Attempts::quick()).expect("disabled"), None);
        assert_eq!(server.seen().len(), 2, "a disabled IMDS is not asked");
    }

    #[test]
    fn region_endpoint_from_the_profile() {
        let server = imds(405);
        let base = server.base();
        let profile = move |key: &str| (key == "ec2_metadata_service_endpoint").then(|| base.clone());
        let got = region_with(&Env::from_pairs::<&str, &str>(&[]), &Http::new(), &profile, Attempts::quick())
            .expect("a region");
        assert_eq!(got.as_deref(), Some("eu-west-3"));
    }

    #[test]
    fn an_endpoint_with_a_password_is_refused_without_showing_it() {
        let env = Env::from_pairs(&[("AWS_EC2_METADATA_SERVICE_ENDPOINT", "http://usr:S3CRETPW@127.0.0.1:9")]);
        let error = endpoint(&env, &|_| None).expect_err("userinfo is refused");
        let text = crate::error_chain(&error);
        assert!(!text.contains("S3CRETPW") && !text.contains("usr:"), "{text}");
        let profile =
            |key: &str| (key == "ec2_metadata_service_endpoint").then(|| "http://usr:S3CRETPW@127.0.0.1:9".to_owned());
        let text = crate::error_chain(&endpoint(&Env::from_pairs::<&str, &str>(&[]), &profile).expect_err("refused"));
        assert!(!text.contains("S3CRETPW"), "{text}");
    }
}
