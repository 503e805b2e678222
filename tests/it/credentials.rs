//! Every credential source supplies credentials to a successful `lock-exec run`: environment, profile keys
//! (default, named, files elsewhere), AssumeRole (one step, a chain, `credential_source = Environment`), web
//! identity (profile and IRSA), `credential_process`, the container endpoint, IMDS (v2, v1 fallback, the region);
//! credentials refreshed during a run; the errors when nothing or something forbidden is configured.
//!
//! Each run is `-v run k -- sh -c 'echo ran'`: it must exit 0, print `ran`, log `credentials loaded` with the
//! expected `source`, and show none of the secrets it handled (secret keys, session tokens, the web identity
//! token, the container authorization token, the IMDS session token) anywhere in stdout or stderr.
//!
//! STS calls go to the emulator through a recording proxy (`AWS_ENDPOINT_URL_STS`), so the tests see what was
//! asked and which credentials the emulator handed out. Container and IMDS endpoints are small local servers.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::{
    Case, Exchange, Outcome, Reply, SECRET_ACCESS_KEY, Seen, Server, endpoint, forward, rfc3339_from_now, xml_tag,
};

type EnvMap = BTreeMap<&'static str, String>;

const ROLE_ARN: &str = "arn:aws:iam::123456789012:role/lock-exec-it";
/// Looks like a Kubernetes service account token (a JWT); the last part is the distinctive secret.
const WEB_IDENTITY_TOKEN: &str = "eyJhbGciOiJSUzI1NiIsImtpZCI6Iml0In0.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6aXQifQ.\
                                  it-web-identity-token-SECRET-5f1c9e";

/// `-v [extra...] run k -- sh -c 'echo ran'` on the case's table with exactly `env`.
fn run_echo(case: &Case, extra: &[&str], env: EnvMap) -> Outcome {
    let mut args = vec!["-v"];
    args.extend_from_slice(extra);
    args.extend(["run", "k", "--", "sh", "-c", "echo ran"]);
    case.run_env(&args, env)
}

/// `-v [extra...] run k -- sh -c 'touch marker'`: for runs that must fail before the command starts (checked).
#[track_caller]
fn run_marker(case: &Case, extra: &[&str], env: EnvMap) -> Outcome {
    let mut args = vec!["-t", case.table(), "-v"];
    args.extend_from_slice(extra);
    args.extend(["run", "k"]);
    case.run_not_started(&args, env)
}

/// The run succeeded, the command ran, every `credentials loaded` line names `source`, and no secret shows.
#[track_caller]
fn expect_ran_with(out: &Outcome, source: &str, secrets: &[&str]) {
    out.expect_code(0);
    out.check("the command's stdout", "ran\n", out.stdout.as_str());
    let sources = out.credential_sources();
    out.check("`credentials loaded` lines logged", true, !sources.is_empty());
    out.check("source of every `credentials loaded` line", vec![source.to_owned(); sources.len()], sources);
    out.check("lock released", true, out.has_log("lock released"));
    out.expect_no_secrets(secrets);
}

/// Fails unless lock-exec's fatal error line says every one of `phrases`.
#[track_caller]
fn expect_error_line(out: &Outcome, phrases: &[&str]) {
    let errors: Vec<String> = out
        .logs()
        .iter()
        .filter(|l| l["level"] == "error")
        .map(|l| l["msg"].as_str().unwrap_or_default().to_owned())
        .collect();
    out.check("error lines", 1, errors.len());
    for phrase in phrases {
        if !errors[0].contains(phrase) {
            out.fail("the error line does not say it", phrase, &errors[0]);
        }
    }
}

/// One STS call and the credentials the emulator handed out in its answer.
struct StsCall {
    request: Seen,
    access_key_id: String,
    secret_access_key: String,
    session_token: String,
}

/// [`run_echo`] with `AWS_ENDPOINT_URL_STS` pointing at a recording proxy in front of the emulator; returns the
/// outcome and the STS calls the proxy saw, each checked to be `action` and to have succeeded.
#[track_caller]
fn run_echo_through_sts(case: &Case, extra: &[&str], mut env: EnvMap, action: &str) -> (Outcome, Vec<StsCall>) {
    let target = endpoint().to_owned();
    let proxy = Server::start(move |request| forward(&target, request));
    env.insert("AWS_ENDPOINT_URL_STS", proxy.url());
    let out = run_echo(case, extra, env);
    let exchanges = proxy.stop();
    let calls = exchanges
        .iter()
        .map(|e| {
            out.check("STS action", Some(action.to_owned()), e.request.form("Action"));
            out.check("STS answer status", 200, e.reply.status);
            let field = |tag: &str| {
                xml_tag(&e.reply.body, tag)
                    .filter(|v| !v.is_empty())
                    .unwrap_or_else(|| out.fail("the STS answer has no value", &tag, &e.reply.body))
            };
            StsCall {
                request: e.request.clone(),
                access_key_id: field("AccessKeyId"),
                secret_access_key: field("SecretAccessKey"),
                session_token: field("SessionToken"),
            }
        })
        .collect();
    (out, calls)
}

/// The secrets a run must not show: `fixed` and the secret key and session token every STS call handed out.
fn with_sts_secrets<'a>(fixed: &[&'a str], calls: &'a [StsCall]) -> Vec<&'a str> {
    let mut secrets = fixed.to_vec();
    for call in calls {
        secrets.extend([call.secret_access_key.as_str(), call.session_token.as_str()]);
    }
    secrets
}

#[test]
fn environment_keys_and_session_token() {
    let case = Case::new("cred_environment");
    let mut env = case.env();
    env.insert("AWS_SESSION_TOKEN", "it-env-session-token-SECRET-7a2b".into());
    let out = run_echo(&case, &[], env);
    expect_ran_with(&out, "environment", &[SECRET_ACCESS_KEY, "it-env-session-token-SECRET-7a2b"]);
}

#[test]
fn profile_default_static_keys_from_home_credentials() {
    let case = Case::new("cred_profile_default");
    case.write_aws_file(
        "credentials",
        "[default]\naws_access_key_id = AKIDPROFILEDEFAULT\naws_secret_access_key = it-profile-default-SECRET-91\n\
         aws_session_token = it-profile-default-session-SECRET-92\n",
    );
    let out = run_echo(&case, &[], case.env_without_credentials());
    expect_ran_with(&out, "profile", &["it-profile-default-SECRET-91", "it-profile-default-session-SECRET-92"]);
}

/// `[profile x]` in `$HOME/.aws/config` is the only place that names a region: a run that read another profile
/// would stop with "no region".
#[test]
fn named_profile_from_config_via_flag_and_aws_profile() {
    let case = Case::new("cred_profile_named");
    case.write_aws_file(
        "config",
        "[default]\ncli_pager =\n\n[profile x]\nregion = us-east-1\naws_access_key_id = AKIDPROFILEX\n\
         aws_secret_access_key = it-profile-x-SECRET-33\n",
    );
    let mut env = case.env_without_credentials();
    env.remove("AWS_REGION");

    let out = run_echo(&case, &["--profile", "x"], env.clone());
    expect_ran_with(&out, "profile", &["it-profile-x-SECRET-33"]);

    env.insert("AWS_PROFILE", "x".into());
    let out = run_echo(&case, &[], env.clone());
    expect_ran_with(&out, "profile", &["it-profile-x-SECRET-33"]);

    // The control: the default profile has neither keys nor a region.
    env.remove("AWS_PROFILE");
    let out = run_marker(&case, &[], env);
    out.expect_code(78);
}

/// `AWS_CONFIG_FILE` and `AWS_SHARED_CREDENTIALS_FILE` replace the files under `$HOME/.aws`, which here are
/// malformed: reading them would be an error.
#[test]
fn config_and_credentials_files_from_the_environment() {
    let case = Case::new("cred_profile_files_elsewhere");
    case.write_aws_file("config", "this is not [ a profile file\n");
    case.write_aws_file("credentials", "neither = is [ this\n");
    let config = case.write("elsewhere/config", "[default]\nregion = us-east-1\n");
    let credentials = case.write(
        "elsewhere/credentials",
        "[default]\naws_access_key_id = AKIDELSEWHERE\naws_secret_access_key = it-elsewhere-SECRET-44\n",
    );
    let mut env = case.env_without_credentials();
    env.remove("AWS_REGION");
    env.insert("AWS_CONFIG_FILE", config);
    env.insert("AWS_SHARED_CREDENTIALS_FILE", credentials);
    let out = run_echo(&case, &[], env.clone());
    expect_ran_with(&out, "profile", &["it-elsewhere-SECRET-44"]);

    // The control: without the variables, the malformed files are read and rejected.
    env.remove("AWS_CONFIG_FILE");
    env.remove("AWS_SHARED_CREDENTIALS_FILE");
    run_marker(&case, &[], env).expect_code(78);
}

#[test]
fn profile_role_arn_with_source_profile_assumes_the_role() {
    let case = Case::new("cred_assume_role");
    case.write_aws_file(
        "config",
        &format!("[profile role]\nrole_arn = {ROLE_ARN}\nsource_profile = base\nrole_session_name = it-session\n"),
    );
    case.write_aws_file(
        "credentials",
        "[base]\naws_access_key_id = AKIDROLEBASE\naws_secret_access_key = it-role-base-SECRET-55\n",
    );
    let (out, calls) =
        run_echo_through_sts(&case, &["--profile", "role"], case.env_without_credentials(), "AssumeRole");
    out.check("AssumeRole calls", 1, calls.len());
    let request = &calls[0].request;
    out.check(
        "(RoleArn, RoleSessionName, signed with)",
        (Some(ROLE_ARN.to_owned()), Some("it-session".to_owned()), Some("AKIDROLEBASE".to_owned())),
        (request.form("RoleArn"), request.form("RoleSessionName"), request.signing_key_id()),
    );
    expect_ran_with(&out, "profile assume role", &with_sts_secrets(&["it-role-base-SECRET-55"], &calls));
}

/// `a` assumes role A with the credentials of `b`, which assumes role B with the static keys of `c`.
#[test]
fn two_step_role_chain() {
    let case = Case::new("cred_role_chain");
    case.write_aws_file(
        "config",
        "[profile a]\nrole_arn = arn:aws:iam::123456789012:role/it-role-a\nsource_profile = b\n\n\
         [profile b]\nrole_arn = arn:aws:iam::123456789012:role/it-role-b\nsource_profile = c\n\n\
         [profile c]\naws_access_key_id = AKIDCHAINBASE\naws_secret_access_key = it-chain-base-SECRET-66\n",
    );
    let (out, calls) = run_echo_through_sts(&case, &["--profile", "a"], case.env_without_credentials(), "AssumeRole");
    out.check("AssumeRole calls", 2, calls.len());
    let first_key = calls[0].access_key_id.clone();
    out.check(
        "(role, signed with) of each step",
        vec![
            (Some("arn:aws:iam::123456789012:role/it-role-b".to_owned()), Some("AKIDCHAINBASE".to_owned())),
            (Some("arn:aws:iam::123456789012:role/it-role-a".to_owned()), Some(first_key)),
        ],
        calls.iter().map(|c| (c.request.form("RoleArn"), c.request.signing_key_id())).collect(),
    );
    expect_ran_with(&out, "profile assume role", &with_sts_secrets(&["it-chain-base-SECRET-66"], &calls));
}

/// `--profile envrole` names a profile whose role is assumed with the keys in the environment. (The AWS CLI drops
/// the environment source when a profile is named explicitly, so this works there; without the keys in the
/// environment the profile is an error, so this is the only way such a profile can supply credentials.)
#[test]
fn role_arn_with_credential_source_environment() {
    let case = Case::new("cred_role_environment");
    case.write_aws_file(
        "config",
        &format!("[profile envrole]\nrole_arn = {ROLE_ARN}\ncredential_source = Environment\n"),
    );
    let (out, calls) = run_echo_through_sts(&case, &["--profile", "envrole"], case.env(), "AssumeRole");
    out.check(
        "AssumeRole calls (RoleArn, signed with the environment's key)",
        vec![(Some(ROLE_ARN.to_owned()), Some(crate::support::ACCESS_KEY_ID.to_owned()))],
        calls.iter().map(|c| (c.request.form("RoleArn"), c.request.signing_key_id())).collect(),
    );
    expect_ran_with(&out, "profile assume role", &with_sts_secrets(&[SECRET_ACCESS_KEY], &calls));
}

#[test]
fn profile_web_identity_token_file() {
    let case = Case::new("cred_profile_web_identity");
    // Without a final line break, as Kubernetes writes projected tokens (the file is sent as it is).
    let token_file = case.write("token.jwt", WEB_IDENTITY_TOKEN);
    case.write_aws_file(
        "config",
        &format!(
            "[profile wi]\nrole_arn = {ROLE_ARN}\nweb_identity_token_file = {token_file}\n\
             role_session_name = it-wi-session\n"
        ),
    );
    let (out, calls) =
        run_echo_through_sts(&case, &["--profile", "wi"], case.env_without_credentials(), "AssumeRoleWithWebIdentity");
    out.check("AssumeRoleWithWebIdentity calls", 1, calls.len());
    let request = &calls[0].request;
    out.check(
        "(RoleArn, RoleSessionName, WebIdentityToken, signed)",
        (Some(ROLE_ARN.to_owned()), Some("it-wi-session".to_owned()), Some(WEB_IDENTITY_TOKEN.to_owned()), None),
        (
            request.form("RoleArn"),
            request.form("RoleSessionName"),
            request.form("WebIdentityToken"),
            request.header("authorization"),
        ),
    );
    let secrets = with_sts_secrets(&[WEB_IDENTITY_TOKEN, "it-web-identity-token-SECRET-5f1c9e"], &calls);
    expect_ran_with(&out, "web identity", &secrets);
}

#[test]
fn irsa_from_the_environment() {
    let case = Case::new("cred_irsa");
    let token_file = case.write("eks/token", WEB_IDENTITY_TOKEN);
    let mut env = case.env_without_credentials();
    env.insert("AWS_WEB_IDENTITY_TOKEN_FILE", token_file);
    env.insert("AWS_ROLE_ARN", ROLE_ARN.into());
    env.insert("AWS_ROLE_SESSION_NAME", "it-irsa-session".into());
    let (out, calls) = run_echo_through_sts(&case, &[], env, "AssumeRoleWithWebIdentity");
    out.check("AssumeRoleWithWebIdentity calls", 1, calls.len());
    let request = &calls[0].request;
    out.check(
        "(RoleArn, RoleSessionName, WebIdentityToken)",
        (Some(ROLE_ARN.to_owned()), Some("it-irsa-session".to_owned()), Some(WEB_IDENTITY_TOKEN.to_owned())),
        (request.form("RoleArn"), request.form("RoleSessionName"), request.form("WebIdentityToken")),
    );
    expect_ran_with(&out, "web identity", &with_sts_secrets(&["it-web-identity-token-SECRET-5f1c9e"], &calls));
}

#[test]
fn credential_process_prints_the_credentials() {
    let case = Case::new("cred_process");
    let document = json!({
        "Version": 1,
        "AccessKeyId": "ASIAPROCESS",
        "SecretAccessKey": "it-process-SECRET-77",
        "SessionToken": "it-process-session-SECRET-78",
        "Expiration": rfc3339_from_now(Duration::from_secs(3600)),
    });
    let calls = case.file("process-calls");
    let program = case.write_script(
        "bin/credentials.sh",
        &format!("echo \"$1 $2\" >> '{calls}'\necho 'a note on stderr' >&2\ncat <<'JSON'\n{document}\nJSON\n"),
    );
    case.write_aws_file("config", &format!("[profile proc]\ncredential_process = {program} --role \"it role\"\n"));
    let out = run_echo(&case, &["--profile", "proc"], case.env_without_credentials());
    expect_ran_with(&out, "credential_process", &["it-process-SECRET-77", "it-process-session-SECRET-78"]);
    out.check(
        "the process's arguments (one call: the credentials last an hour)",
        "--role it role\n",
        std::fs::read_to_string(&calls).unwrap_or_default().as_str(),
    );
    out.expect_stderr_contains("a note on stderr");
}

#[test]
fn failing_credential_process_exits_78_naming_the_profile() {
    let case = Case::new("cred_process_fails");
    let program = case.write_script("bin/credentials.sh", "echo 'cannot log in' >&2\nexit 3\n");
    case.write_aws_file("config", &format!("[profile broken]\ncredential_process = {program}\n"));
    let out = run_marker(&case, &["--profile", "broken"], case.env_without_credentials());
    out.expect_code(78);
    expect_error_line(&out, &["credential_process", "profile broken", "failed"]);
}

const CONTAINER_TOKEN: &str = "it-container-authorization-SECRET-c0ffee";

/// A container credentials endpoint at `/creds` that wants `Authorization: CONTAINER_TOKEN` and answers each
/// fetch with a new key id (`ASIACONTAINER1`, ...) expiring `lifetime` after the fetch.
fn container_server(lifetime: Duration) -> Server {
    let fetches = AtomicU32::new(0);
    Server::start(move |request| {
        if request.method != "GET" || request.path != "/creds" {
            return Reply::new(404, "not found");
        }
        if request.header("authorization") != Some(CONTAINER_TOKEN) {
            return Reply::new(401, r#"{"Code":"Unauthorized","Message":"wrong or missing authorization"}"#);
        }
        let n = fetches.fetch_add(1, Ordering::Relaxed) + 1;
        Reply::json(&json!({
            "AccessKeyId": format!("ASIACONTAINER{n}"),
            "SecretAccessKey": "it-container-SECRET-88",
            "Token": "it-container-session-SECRET-89",
            "Expiration": rfc3339_from_now(lifetime),
            "RoleArn": ROLE_ARN,
        }))
    })
}

fn container_env(case: &Case, server: &Server) -> EnvMap {
    let mut env = case.env_without_credentials();
    env.insert("AWS_CONTAINER_CREDENTIALS_FULL_URI", format!("{}/creds", server.url()));
    env.insert("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", case.write("pod-identity/token", CONTAINER_TOKEN));
    env
}

#[test]
fn container_endpoint_with_authorization_token_file() {
    let case = Case::new("cred_container");
    let server = container_server(Duration::from_secs(3600));
    let out = run_echo(&case, &[], container_env(&case, &server));
    let requests = server.stop().into_iter().map(|e| e.request).collect::<Vec<_>>();
    out.check(
        "requests (method, path, authorization): one fetch, cached for the run",
        vec![("GET".to_owned(), "/creds".to_owned(), Some(CONTAINER_TOKEN.to_owned()))],
        requests
            .iter()
            .map(|r| (r.method.clone(), r.path.clone(), r.header("authorization").map(str::to_owned)))
            .collect(),
    );
    expect_ran_with(&out, "container", &["it-container-SECRET-88", "it-container-session-SECRET-89", CONTAINER_TOKEN]);
}

/// Plain http to a host that is neither loopback nor an ECS / EKS endpoint is refused while the configuration is
/// read: no connection is tried (one would take the 3 s connect timeout, more with retries).
#[test]
fn container_full_uri_to_a_forbidden_host_is_refused() {
    let case = Case::new("cred_container_forbidden");
    let mut env = case.env_without_credentials();
    env.insert("AWS_CONTAINER_CREDENTIALS_FULL_URI", "http://192.0.2.1/creds".into());
    let started = Instant::now();
    let out = run_marker(&case, &[], env);
    let took = started.elapsed();
    out.expect_code(78);
    expect_error_line(&out, &["AWS_CONTAINER_CREDENTIALS_FULL_URI", "192.0.2.1", "plain http is allowed only to"]);
    out.check("refused within 2 s (no connection attempt)", true, took < Duration::from_secs(2));
}

/// What the IMDS test server does with the token request.
#[derive(Clone, Copy, PartialEq)]
enum Imds {
    /// IMDSv2: `PUT` gives a token; every `GET` must carry the latest one.
    V2,
    /// The `PUT` answers 403; `GET`s must come without a token (IMDSv1).
    V1Only,
}

const IMDS_ROLE: &str = "it-instance-role";

/// An instance metadata service with a role, its credentials (expiring `lifetime` after each fetch, a new key id
/// each time) and the region `us-east-1`.
fn imds_server(mode: Imds, lifetime: Duration) -> Server {
    let tokens: Arc<Mutex<Vec<String>>> = Arc::default();
    let fetches = AtomicU32::new(0);
    Server::start(move |request| {
        let token = request.header("x-aws-ec2-metadata-token");
        if request.path == "/latest/api/token" {
            if request.method != "PUT" {
                return Reply::new(405, "");
            }
            if mode == Imds::V1Only {
                return Reply::new(403, "");
            }
            if request.header("x-aws-ec2-metadata-token-ttl-seconds").is_none_or(|ttl| ttl.parse::<u32>().is_err()) {
                return Reply::new(400, "missing ttl");
            }
            let mut tokens = tokens.lock().unwrap_or_else(|p| p.into_inner());
            let issued = format!("it-imds-session-token-SECRET-{}", tokens.len() + 1);
            tokens.push(issued.clone());
            return Reply::new(200, issued);
        }
        if request.method != "GET" {
            return Reply::new(405, "");
        }
        let allowed = match mode {
            Imds::V2 => {
                token.is_some() && tokens.lock().unwrap_or_else(|p| p.into_inner()).last().map(String::as_str) == token
            }
            Imds::V1Only => token.is_none(),
        };
        if !allowed {
            return Reply::new(401, "");
        }
        match request.path.as_str() {
            "/latest/meta-data/iam/security-credentials/" => Reply::new(200, format!("{IMDS_ROLE}\n")),
            "/latest/meta-data/iam/security-credentials/it-instance-role" => {
                let n = fetches.fetch_add(1, Ordering::Relaxed) + 1;
                Reply::json(&json!({
                    "Code": "Success",
                    "LastUpdated": rfc3339_from_now(Duration::ZERO),
                    "Type": "AWS-HMAC",
                    "AccessKeyId": format!("ASIAIMDS{n}"),
                    "SecretAccessKey": "it-imds-SECRET-99",
                    "Token": "it-imds-session-SECRET-98",
                    "Expiration": rfc3339_from_now(lifetime),
                }))
            }
            "/latest/meta-data/placement/region" => Reply::new(200, "us-east-1"),
            _ => Reply::new(404, ""),
        }
    })
}

fn imds_env(case: &Case, server: &Server) -> EnvMap {
    let mut env = case.env_without_credentials();
    env.remove("AWS_EC2_METADATA_DISABLED");
    env.insert("AWS_EC2_METADATA_SERVICE_ENDPOINT", server.url());
    env
}

/// (method, path, token header) of each request.
fn imds_requests(exchanges: &[Exchange]) -> Vec<(String, String, Option<String>, u16)> {
    exchanges
        .iter()
        .map(|e| {
            let r = &e.request;
            (r.method.clone(), r.path.clone(), r.header("x-aws-ec2-metadata-token").map(str::to_owned), e.reply.status)
        })
        .collect()
}

#[test]
fn imds_v2_instance_role() {
    let case = Case::new("cred_imds_v2");
    let server = imds_server(Imds::V2, Duration::from_secs(3600));
    let out = run_echo(&case, &[], imds_env(&case, &server));
    let exchanges = server.stop();
    let token = Some("it-imds-session-token-SECRET-1".to_owned());
    out.check(
        "IMDS requests (method, path, token, status)",
        vec![
            ("PUT".to_owned(), "/latest/api/token".to_owned(), None, 200),
            ("GET".to_owned(), "/latest/meta-data/iam/security-credentials/".to_owned(), token.clone(), 200),
            ("GET".to_owned(), format!("/latest/meta-data/iam/security-credentials/{IMDS_ROLE}"), token, 200),
        ],
        imds_requests(&exchanges),
    );
    out.check(
        "token lifetime asked for",
        Some("21600"),
        exchanges[0].request.header("x-aws-ec2-metadata-token-ttl-seconds"),
    );
    expect_ran_with(&out, "imds", &["it-imds-SECRET-99", "it-imds-session-SECRET-98", "it-imds-session-token-SECRET"]);
}

#[test]
fn imds_falls_back_to_v1_when_the_token_request_is_refused() {
    let case = Case::new("cred_imds_v1");
    let server = imds_server(Imds::V1Only, Duration::from_secs(3600));
    let out = run_echo(&case, &[], imds_env(&case, &server));
    let exchanges = server.stop();
    out.check(
        "IMDS requests (method, path, token, status)",
        vec![
            ("PUT".to_owned(), "/latest/api/token".to_owned(), None, 403),
            ("GET".to_owned(), "/latest/meta-data/iam/security-credentials/".to_owned(), None, 200),
            ("GET".to_owned(), format!("/latest/meta-data/iam/security-credentials/{IMDS_ROLE}"), None, 200),
        ],
        imds_requests(&exchanges),
    );
    expect_ran_with(&out, "imds", &["it-imds-SECRET-99", "it-imds-session-SECRET-98"]);
}

#[test]
fn imds_v1_disabled_with_a_refused_token_request_exits_78() {
    let case = Case::new("cred_imds_v1_disabled");
    let server = imds_server(Imds::V1Only, Duration::from_secs(3600));
    let mut env = imds_env(&case, &server);
    env.insert("AWS_EC2_METADATA_V1_DISABLED", "true".into());
    let out = run_marker(&case, &[], env);
    let exchanges = server.stop();
    out.expect_code(78);
    expect_error_line(&out, &["imds", "HTTP 403", "AWS_EC2_METADATA_V1_DISABLED=true"]);
    out.check(
        "IMDS requests: the token request only",
        vec![("PUT".to_owned(), "/latest/api/token".to_owned(), None, 403)],
        imds_requests(&exchanges),
    );
}

/// No `--region`, `AWS_REGION`, `AWS_DEFAULT_REGION` or profile region: IMDS names it.
#[test]
fn region_from_imds_when_none_is_configured() {
    let case = Case::new("cred_imds_region");
    let server = imds_server(Imds::V2, Duration::from_secs(3600));
    let mut env = case.env();
    env.remove("AWS_REGION");
    env.remove("AWS_EC2_METADATA_DISABLED");
    env.insert("AWS_EC2_METADATA_SERVICE_ENDPOINT", server.url());
    let out = run_echo(&case, &[], env);
    let exchanges = server.stop();
    let token = Some("it-imds-session-token-SECRET-1".to_owned());
    out.check(
        "IMDS requests (method, path, token, status)",
        vec![
            ("PUT".to_owned(), "/latest/api/token".to_owned(), None, 200),
            ("GET".to_owned(), "/latest/meta-data/placement/region".to_owned(), token, 200),
        ],
        imds_requests(&exchanges),
    );
    expect_ran_with(&out, "environment", &[SECRET_ACCESS_KEY, "it-imds-session-token-SECRET"]);
}

/// Credentials that arrive 2 minutes from expiry (inside the 5-minute refresh window) are fetched again at every
/// use, so a run with a 3 s lease renewed every second for 5 s fetches them many times, and never loses the lock.
#[test]
fn expiring_credentials_are_refreshed_during_a_run() {
    let case = Case::new("cred_refresh");
    let server = container_server(Duration::from_secs(120));
    let args = ["-v", "run", "k", "-e", "3s", "--", "sh", "-c", "sleep 5; echo ran"];
    let out = case.run_env(&args, container_env(&case, &server));
    let exchanges = server.stop();
    out.expect_code(0);
    out.check("the command's stdout", "ran\n", out.stdout.as_str());
    out.check("lock lost logged", false, out.has_log("lock lost"));
    out.check("renewal failures logged", false, out.has_log("lock renewal failed; retrying"));
    let fetched = exchanges.iter().filter(|e| e.reply.status == 200).count();
    out.check("credential fetches (at least 3)", true, fetched >= 3);
    out.check("every fetch answered", exchanges.len(), fetched);
    let sources = out.credential_sources();
    out.check("`credentials loaded` lines, one per fetch", fetched, sources.len());
    out.check(
        "renewals logged (at least 2)",
        true,
        out.messages().iter().filter(|m| *m == "lock renewed").count() >= 2,
    );
    out.expect_no_secrets(&["it-container-SECRET-88", "it-container-session-SECRET-89", CONTAINER_TOKEN]);
}

#[test]
fn no_credentials_anywhere_exits_78_listing_the_sources_tried() {
    let case = Case::new("cred_none");
    let out = run_marker(&case, &[], case.env_without_credentials());
    out.expect_code(78);
    out.check("stderr lines", 1, out.stderr.lines().count());
    expect_error_line(
        &out,
        &[
            "no credentials",
            "AWS_ACCESS_KEY_ID",
            "profile \"default\"",
            "AWS_WEB_IDENTITY_TOKEN_FILE",
            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
            "AWS_EC2_METADATA_DISABLED=true",
        ],
    );
    out.check("stdout", "", out.stdout.as_str());
}

/// `credential_source = EcsContainer`: the container endpoint's credentials sign the AssumeRole.
#[test]
fn role_arn_with_credential_source_ecs_container() {
    let case = Case::new("cred_role_container");
    case.write_aws_file(
        "config",
        &format!("[profile ecsrole]\nrole_arn = {ROLE_ARN}\ncredential_source = EcsContainer\n"),
    );
    let server = container_server(Duration::from_secs(3600));
    let env = container_env(&case, &server);
    let (out, calls) = run_echo_through_sts(&case, &["--profile", "ecsrole"], env, "AssumeRole");
    let fetches = server.stop().len();
    out.check("container fetches", 1, fetches);
    out.check(
        "AssumeRole calls (RoleArn, signed with the container's key)",
        vec![(Some(ROLE_ARN.to_owned()), Some("ASIACONTAINER1".to_owned()))],
        calls.iter().map(|c| (c.request.form("RoleArn"), c.request.signing_key_id())).collect(),
    );
    let fixed = ["it-container-SECRET-88", "it-container-session-SECRET-89", CONTAINER_TOKEN];
    expect_ran_with(&out, "profile assume role", &with_sts_secrets(&fixed, &calls));
}

/// `credential_source = Ec2InstanceMetadata`: the instance role's credentials sign the AssumeRole.
#[test]
fn role_arn_with_credential_source_ec2_instance_metadata() {
    let case = Case::new("cred_role_imds");
    case.write_aws_file(
        "config",
        &format!("[profile ec2role]\nrole_arn = {ROLE_ARN}\ncredential_source = Ec2InstanceMetadata\n"),
    );
    let server = imds_server(Imds::V2, Duration::from_secs(3600));
    let env = imds_env(&case, &server);
    let (out, calls) = run_echo_through_sts(&case, &["--profile", "ec2role"], env, "AssumeRole");
    let imds_paths: Vec<String> = imds_requests(&server.stop()).into_iter().map(|(_, path, ..)| path).collect();
    out.check(
        "IMDS was asked for the role's credentials",
        true,
        imds_paths.iter().any(|p| p.ends_with(&format!("/iam/security-credentials/{IMDS_ROLE}"))),
    );
    out.check("AssumeRole calls", 1, calls.len());
    out.check("the role asked for", Some(ROLE_ARN.to_owned()), calls[0].request.form("RoleArn"));
    let fixed = ["it-imds-SECRET-99", "it-imds-session-token-SECRET-1", "it-imds-session-SECRET-98"];
    expect_ran_with(&out, "profile assume role", &with_sts_secrets(&fixed, &calls));
}

/// AWS's signature errors quote the canonical request, `x-amz-security-token` header included: a DynamoDB that
/// answers like that must not get the session token (or the secret) into lock-exec's output.
#[test]
fn signature_errors_that_quote_the_request_do_not_leak_the_session_token() {
    let case = Case::new("cred_signature_echo");
    let server = Server::start(|request| {
        let token = request.header("x-amz-security-token").unwrap_or_default().to_owned();
        let message = format!(
            "The request signature we calculated does not match the signature you provided.\n\n\
             The Canonical String for this request should have been\n'POST\n/\n\nhost:127.0.0.1\n\
             x-amz-security-token:{token}\n'\n"
        );
        Reply::new(
            400,
            json!({ "__type": "com.amazon.coral.service#InvalidSignatureException", "message": message }).to_string(),
        )
    });
    let session_token = "it-session-token-SECRET-echoed-back";
    let mut env = case.env();
    env.insert("AWS_SESSION_TOKEN", session_token.into());
    env.insert("AWS_ENDPOINT_URL", server.url());
    for format in ["json", "text"] {
        let out = run_marker(&case, &["--log-format", format], env.clone());
        out.expect_code(77);
        out.expect_stderr_contains("InvalidSignatureException");
        out.expect_stderr_contains("x-amz-security-token:<redacted>");
        out.expect_no_secrets(&[session_token, SECRET_ACCESS_KEY]);
    }
    let echoed =
        server.stop().iter().filter(|e| e.request.header("x-amz-security-token") == Some(session_token)).count();
    assert!(echoed >= 2, "the server saw the session token it echoed ({echoed} requests)");
}

/// `AWS_PROFILE` naming a profile that exists in neither file is an error (as in the Go SDK), not a quiet
/// fall-through to other credentials, here the environment's keys.
#[test]
fn aws_profile_naming_a_missing_profile_exits_78() {
    let case = Case::new("cred_missing_profile");
    case.write_aws_file("config", "[profile present]\nregion = us-east-1\n");
    let mut env = case.env();
    env.insert("AWS_PROFILE", "typo".into());
    let out = run_marker(&case, &[], env);
    out.expect_code(78);
    expect_error_line(&out, &["profile \"typo\" (AWS_PROFILE) is not in", "config"]);
}
