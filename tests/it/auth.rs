//! Against an emulator that checks signatures and IAM policies (`LOCK_EXEC_TEST_AUTH_ENDPOINT`): an IAM user
//! whose policy allows only the calls the README's IAM policy lists runs a full lock cycle; a wrong secret key and
//! an unknown access key id are refused with exit 77 before the command starts.
//!
//! One test function does it all in order: it is the only user of that emulator, and switching its checks on
//! cannot be undone.

use std::time::Duration;

use lock_exec::Env;
use lock_exec::aws::credentials::{Cache, Context, Credentials, Source};
use lock_exec::aws::http::{Http, Request, Response};
use lock_exec::aws::profile::ProfileSet;
use lock_exec::aws::sign::{Scope, sign_request};
use lock_exec::cli::{LogFormat, Verbosity};
use lock_exec::dynamodb::Client;
use lock_exec::log::Logger;
use serde_json::json;

use crate::support::{Case, REGION, create_table_request, xml_tag};

const USER: &str = "lock-exec-it-user";

/// The emulator's URL; panics when `LOCK_EXEC_TEST_AUTH_ENDPOINT` is unset or not on 127.0.0.1.
fn auth_endpoint() -> String {
    let endpoint = Env::real().var("LOCK_EXEC_TEST_AUTH_ENDPOINT").unwrap_or_else(|| {
        panic!(
            "LOCK_EXEC_TEST_AUTH_ENDPOINT is not set: the auth test needs its own moto server; run the tests with \
             scripts/test.sh, which starts one on 127.0.0.1 and sets the variable"
        )
    });
    assert!(
        endpoint.starts_with("http://127.0.0.1:"),
        "LOCK_EXEC_TEST_AUTH_ENDPOINT={endpoint:?}: the tests only talk to a server on 127.0.0.1"
    );
    endpoint
}

/// Switches moto's signature and IAM checks on (a form content type makes moto fail with 500).
pub fn switch_auth_on(http: &Http, endpoint: &str) {
    let request = Request {
        method: "POST",
        url: &format!("{endpoint}/moto-api/reset-auth"),
        headers: vec![("content-type".to_owned(), "text/plain".to_owned())],
        body: b"0",
        timeout: Duration::from_secs(10),
        target: "moto reset-auth",
    };
    let reset = http.send(&request).unwrap_or_else(|e| panic!("reset-auth: {}", lock_exec::error_chain(&e)));
    assert_eq!(reset.status, 200, "reset-auth answered {}: {}", reset.status, reset.body);
}

/// Sends an IAM Query action (`Action=...&Version=2010-05-08&...`), signed for `iam` in us-east-1.
pub fn iam(http: &Http, endpoint: &str, credentials: &Credentials, params: &[(&str, &str)]) -> Response {
    let mut body = String::from("Version=2010-05-08");
    for (name, value) in params {
        body.push_str(&format!("&{name}={}", percent_encode(value)));
    }
    let url = format!("{endpoint}/");
    let mut headers = vec![("content-type".to_owned(), "application/x-www-form-urlencoded; charset=utf-8".to_owned())];
    let scope = Scope { region: "us-east-1", service: "iam", time: Env::real().now() };
    let signed = sign_request(credentials, scope, "POST", &url, &headers, body.as_bytes())
        .unwrap_or_else(|e| panic!("sign the IAM request: {}", lock_exec::error_chain(&e)));
    headers.extend(signed);
    let request = Request {
        method: "POST",
        url: &url,
        headers,
        body: body.as_bytes(),
        timeout: Duration::from_secs(10),
        target: "iam",
    };
    let response = http.send(&request).unwrap_or_else(|e| panic!("IAM {params:?}: {}", lock_exec::error_chain(&e)));
    assert_eq!(response.status, 200, "IAM {params:?} answered {}: {}", response.status, response.body);
    response
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[test]
fn iam_user_with_the_documented_policy_runs_and_bad_keys_are_refused() {
    let endpoint = auth_endpoint();
    let http = Http::new();
    let env = Env::from_pairs::<&str, &str>(&[]);
    let profiles = ProfileSet::default();
    // Any key works while the emulator's checks are off.
    let admin = Credentials::new("AKIDLOCKEXECADMIN", "it-admin-secret", None, None, "auth test setup");

    // 1. While auth is off: the table, the user, its policy, its key.
    let table = Case::unique_table_name("auth");
    let cache = Cache::new(Source::Static { name: "auth test setup", credentials: admin.clone() });
    let client = Client {
        timeout: Duration::from_secs(10),
        ..Client::new(
            Context { env: &env, http: &http, profiles: &profiles, region: REGION },
            &cache,
            endpoint.clone(),
            Logger::new(LogFormat::Json, Verbosity::Quiet.level()),
        )
    };
    if let Err(e) = client.call("CreateTable", &create_table_request(&table)) {
        panic!("CreateTable {table} on {endpoint}: {}", lock_exec::error_chain(&e));
    }
    crate::support::wait_until_active(&client, &table);
    iam(&http, &endpoint, &admin, &[("Action", "CreateUser"), ("UserName", USER)]);
    let policy = json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Action": ["dynamodb:GetItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem"],
            "Resource": "*",
        }],
    });
    iam(
        &http,
        &endpoint,
        &admin,
        &[
            ("Action", "PutUserPolicy"),
            ("UserName", USER),
            ("PolicyName", "lock-exec"),
            ("PolicyDocument", &policy.to_string()),
        ],
    );
    let key = iam(&http, &endpoint, &admin, &[("Action", "CreateAccessKey"), ("UserName", USER)]);
    let access_key_id = xml_tag(&key.body, "AccessKeyId").expect("CreateAccessKey answers an AccessKeyId");
    let secret_access_key = xml_tag(&key.body, "SecretAccessKey").expect("CreateAccessKey answers a SecretAccessKey");

    // 2. Switch signature and IAM checks on.
    switch_auth_on(&http, &endpoint);

    // 3. The user's key: a full lock cycle.
    let case = Case::with_table_name("auth", &table);
    let env_with = |id: &str, secret: &str| {
        let mut env = case.env();
        env.insert("AWS_ENDPOINT_URL", endpoint.clone());
        env.insert("AWS_ACCESS_KEY_ID", id.to_owned());
        env.insert("AWS_SECRET_ACCESS_KEY", secret.to_owned());
        env
    };
    let good = env_with(&access_key_id, &secret_access_key);
    let out = case.run_env(&["-v", "run", "k", "--", "sh", "-c", "echo ran"], good.clone());
    out.expect_code(0);
    out.check("the command's stdout", "ran\n", out.stdout.as_str());
    out.check("lock released", true, out.has_log("lock released"));
    out.expect_no_secrets(&[&secret_access_key]);
    case.run_env(&["status", "k"], good.clone()).expect_state("free");
    let unlock = case.run_env(&["unlock", "k"], good);
    unlock.expect_code(0);

    // 4. The same key with a wrong secret: the signature does not match.
    let command = ["-t", case.table(), "run", "k"];
    let wrong_secret = "it-wrong-secret-key-SECRET-0000000000";
    let out = case.run_not_started(&command, env_with(&access_key_id, wrong_secret));
    out.expect_code(77);
    out.expect_stderr_contains("SignatureDoesNotMatch");
    out.expect_no_secrets(&[wrong_secret, &secret_access_key]);

    // 5. A key the emulator does not know.
    let out = case.run_not_started(&command, env_with("AKIDNOSUCHKEY0000000", &secret_access_key));
    out.expect_code(77);
    out.expect_stderr_contains("InvalidClientTokenId");
    out.expect_no_secrets(&[&secret_access_key]);
}
