//! The secrets sweep: every error path the other modules do not already sweep, at `-v`, against servers that echo
//! back everything they received (headers and body) and, where they hand out credentials, put secrets in answers
//! lock-exec must refuse. No secret key, session token, web identity token, container authorization token or IMDS
//! session token may appear in stdout or stderr.
//!
//! Swept elsewhere (RELIABILITY.md lists them): a wrong secret key and an unknown key id against signature checks
//! (`auth::`), signature errors quoting the request (`credentials::`), an echoed session token or container token
//! in non-JSON errors and proxy passwords (`proxy::`), every successful credential source (`credentials::`).

use std::collections::BTreeMap;

use crate::support::{Case, Outcome, Reply, SECRET_ACCESS_KEY, Seen, Server, rfc3339_from_now};

type EnvMap = BTreeMap<&'static str, String>;

const SESSION_TOKEN: &str = "IQoJb3JpZ2luX2VjEsweep-session-token-SECRET-71";
const WEB_IDENTITY_TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzd2VlcCJ9.sweep-web-identity-SECRET-72";
const CONTAINER_TOKEN: &str = "sweep-container-authorization-SECRET-73";
const HANDED_OUT_SECRET: &str = "sweep-handed-out-secret-key-SECRET-74";
const HANDED_OUT_TOKEN: &str = "sweep-handed-out-session-token-SECRET-75";
const IMDS_TOKEN: &str = "sweep-imds-session-token-SECRET-76";
const ROLE_ARN: &str = "arn:aws:iam::123456789012:role/sweep";

/// Everything a request carried, as an echoing server quotes it.
fn echo(request: &Seen) -> String {
    format!("{} {} {:?} {}", request.method, request.path, request.headers, request.body)
}

/// Credentials JSON (container or IMDS shape) holding the handed-out secrets, cut short: not valid JSON.
fn broken_credentials_json() -> String {
    format!(
        "{{\"Code\":\"Success\",\"AccessKeyId\":\"ASIASWEEP\",\"SecretAccessKey\":\"{HANDED_OUT_SECRET}\",\
         \"Token\":\"{HANDED_OUT_TOKEN}\",\"Expiration\":\"{}\"",
        rfc3339_from_now(std::time::Duration::from_secs(3600))
    )
}

/// One error path: its name, the environment, a server it talks to (kept alive for the run), the `-v` flags.
struct Path {
    name: &'static str,
    env: EnvMap,
    _server: Option<Server>,
    extra: Vec<String>,
}

fn paths(case: &Case) -> Vec<Path> {
    let mut paths = Vec::new();
    let with_session = |env: &mut EnvMap| {
        env.insert("AWS_SESSION_TOKEN", SESSION_TOKEN.into());
    };

    // DynamoDB says the token expired, quoting the whole request in its JSON message.
    let server = Server::start(|request| {
        Reply::new(
            400,
            serde_json::json!({
                "__type": "com.amazonaws.dynamodb.v20120810#ExpiredTokenException",
                "message": format!("The security token included in the request is expired: {}", echo(request)),
            })
            .to_string(),
        )
    });
    let mut env = case.env();
    with_session(&mut env);
    env.insert("AWS_ENDPOINT_URL", server.url());
    paths.push(Path { name: "expired token", env, _server: Some(server), extra: vec![] });

    // A DynamoDB 500 that echoes the request, every attempt.
    let server = Server::start(|request| Reply::new(500, format!("<html>internal error: {}</html>", echo(request))));
    let mut env = case.env();
    with_session(&mut env);
    env.insert("AWS_ENDPOINT_URL", server.url());
    env.insert("AWS_MAX_ATTEMPTS", "2".into());
    paths.push(Path { name: "dynamodb 5xx echo", env, _server: Some(server), extra: vec![] });

    // An HTTP proxy in front of a non-loopback endpoint answering 502 with the request it got (headers included).
    let server = Server::start(|request| Reply::new(502, format!("proxy error for {}", echo(request))));
    let mut env = case.env();
    with_session(&mut env);
    env.insert("AWS_ENDPOINT_URL", "http://dynamodb.sweep.invalid".into());
    env.insert("HTTP_PROXY", server.url());
    env.insert("AWS_MAX_ATTEMPTS", "1".into());
    paths.push(Path { name: "proxy 502 echo", env, _server: Some(server), extra: vec![] });

    // STS AssumeRoleWithWebIdentity refused, the error quoting the request body (which holds the token).
    let server = Server::start(|request| {
        Reply::new(
            400,
            format!(
                "<ErrorResponse><Error><Code>InvalidIdentityToken</Code><Message>bad token in {}</Message></Error>\
                 </ErrorResponse>",
                echo(request)
            ),
        )
    });
    let token_file = case.write("token.jwt", WEB_IDENTITY_TOKEN);
    let mut env = case.env_without_credentials();
    env.insert("AWS_WEB_IDENTITY_TOKEN_FILE", token_file.clone());
    env.insert("AWS_ROLE_ARN", ROLE_ARN.into());
    env.insert("AWS_ENDPOINT_URL_STS", server.url());
    paths.push(Path { name: "sts web identity refused", env, _server: Some(server), extra: vec![] });

    // STS AssumeRole failing with 500s that echo the signed request (session token header included).
    let server = Server::start(|request| Reply::new(500, format!("upstream failure: {}", echo(request))));
    case.write_aws_file(
        "config",
        &format!(
            "[profile role]\nrole_arn = {ROLE_ARN}\nsource_profile = keys\n\
             [profile keys]\naws_access_key_id = AKIDSWEEP\naws_secret_access_key = {SECRET_ACCESS_KEY}\n\
             aws_session_token = {SESSION_TOKEN}\n\
             [profile badproc]\ncredential_process = {}\n\
             [profile failproc]\ncredential_process = {}\n",
            case.write_script(
                "bad-credentials.sh",
                &format!(
                    "printf '{{\"Version\": 1, \"AccessKeyId\": \"AKIDPROC\", \"SecretAccessKey\": \
                     \"{HANDED_OUT_SECRET}\", \"SessionToken\": \"{HANDED_OUT_TOKEN}\", \"Expiration\": \"yesterday\"}}'\n"
                ),
            ),
            case.write_script(
                "failing-credentials.sh",
                &format!(
                    "printf '{{\"Version\": 1, \"AccessKeyId\": \"AKIDPROC\", \"SecretAccessKey\": \
                     \"{HANDED_OUT_SECRET}\", \"SessionToken\": \"{HANDED_OUT_TOKEN}\"'\nexit 3\n"
                ),
            ),
        ),
    );
    let mut env = case.env_without_credentials();
    env.insert("AWS_ENDPOINT_URL_STS", server.url());
    paths.push(Path {
        name: "sts assume role 5xx",
        env,
        _server: Some(server),
        extra: vec!["--profile".into(), "role".into()],
    });

    // STS answering 200 with credentials but no AccessKeyId: refused without quoting the answer.
    let server = Server::start(|_| {
        Reply::new(
            200,
            format!(
                "<AssumeRoleResponse><AssumeRoleResult><Credentials><SecretAccessKey>{HANDED_OUT_SECRET}\
                 </SecretAccessKey><SessionToken>{HANDED_OUT_TOKEN}</SessionToken><Expiration>{}</Expiration>\
                 </Credentials></AssumeRoleResult></AssumeRoleResponse>",
                rfc3339_from_now(std::time::Duration::from_secs(3600))
            ),
        )
    });
    let mut env = case.env_without_credentials();
    env.insert("AWS_ENDPOINT_URL_STS", server.url());
    paths.push(Path {
        name: "sts answer without key id",
        env,
        _server: Some(server),
        extra: vec!["--profile".into(), "role".into()],
    });

    // credential_process: valid-looking output with a bad Expiration; and output cut short with exit 3.
    paths.push(Path {
        name: "credential_process bad expiration",
        env: case.env_without_credentials(),
        _server: None,
        extra: vec!["--profile".into(), "badproc".into()],
    });
    paths.push(Path {
        name: "credential_process exit 3",
        env: case.env_without_credentials(),
        _server: None,
        extra: vec!["--profile".into(), "failproc".into()],
    });

    // Container endpoint: 500 echoing the Authorization header; then credentials JSON cut short.
    for (name, broken) in [("container 5xx echo", false), ("container broken json", true)] {
        let server = Server::start(move |request| {
            if broken {
                Reply::new(200, broken_credentials_json())
            } else {
                Reply::new(500, format!("{{\"Code\":\"Error\",\"Message\":\"failed for {}\"}}", echo(request)))
            }
        });
        let mut env = case.env_without_credentials();
        env.insert("AWS_CONTAINER_CREDENTIALS_FULL_URI", format!("{}/creds", server.url()));
        env.insert("AWS_CONTAINER_AUTHORIZATION_TOKEN", CONTAINER_TOKEN.into());
        paths.push(Path { name, env, _server: Some(server), extra: vec![] });
    }

    // IMDS: a token, then the role's credentials answered 500 with an echo, or cut short.
    for (name, broken) in [("imds 5xx echo", false), ("imds broken json", true)] {
        let server = Server::start(move |request| match request.path.as_str() {
            "/latest/api/token" => Reply::new(200, IMDS_TOKEN),
            "/latest/meta-data/iam/security-credentials/" => Reply::new(200, "sweep-role"),
            _ if broken => Reply::new(200, broken_credentials_json()),
            _ => Reply::new(500, format!("metadata failure: {}", echo(request))),
        });
        let mut env = case.env_without_credentials();
        env.remove("AWS_EC2_METADATA_DISABLED");
        env.insert("AWS_EC2_METADATA_SERVICE_ENDPOINT", server.url());
        paths.push(Path { name, env, _server: Some(server), extra: vec![] });
    }
    paths
}

#[test]
fn no_error_path_shows_a_secret_at_the_most_verbose_level() {
    let case = Case::new("secrets_sweep");
    let secrets = [
        SECRET_ACCESS_KEY,
        SESSION_TOKEN,
        WEB_IDENTITY_TOKEN,
        "sweep-web-identity-SECRET-72",
        CONTAINER_TOKEN,
        HANDED_OUT_SECRET,
        HANDED_OUT_TOKEN,
        IMDS_TOKEN,
    ];
    let paths = paths(&case);
    let marker = case.marker_script();
    let outcomes: Vec<(&str, Outcome)> = std::thread::scope(|scope| {
        let handles: Vec<_> = paths
            .iter()
            .map(|path| {
                let case = &case;
                let marker = &marker;
                scope.spawn(move || {
                    let mut args = vec!["-t", case.table(), "-v"];
                    args.extend(path.extra.iter().map(String::as_str));
                    args.extend(["run", "k", "--", "sh", "-c", marker]);
                    (path.name, case.spawn_raw(&args, path.env.clone()).wait(std::time::Duration::from_secs(60)))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("a sweep thread panicked")).collect()
    });
    for (name, out) in &outcomes {
        out.check(&format!("{name}: failed"), true, out.code().is_some_and(|c| c != 0));
        out.check(&format!("{name}: one error line"), true, out.logs().iter().any(|l| l["level"] == "error"));
        out.expect_no_secrets(&secrets);
        eprintln!("{name}: exit {:?}", out.code());
    }
    outcomes[0].1.check("the command ran", false, case.exists("marker"));
}
