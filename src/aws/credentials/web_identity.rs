//! Web identity credentials from the environment (EKS IAM roles for service accounts, IRSA): an OIDC token
//! file exchanged for role credentials with STS `AssumeRoleWithWebIdentity`.
//!
//! Reads, in order: `AWS_WEB_IDENTITY_TOKEN_FILE`, `AWS_ROLE_ARN`, `AWS_ROLE_SESSION_NAME` (optional, default
//! `lock-exec-<unix seconds>`). Blank values count as unset. The token file is read again on every fetch, as
//! the kubelet rotates it (once per fetch: a retried STS request reuses it); a file over
//! [`super::TOKEN_FILE_LIMIT`] is an error.

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

/// Reads the token file and exchanges the token for credentials at the STS `endpoint` (one request).
pub fn load(env: &Env, http: &Http, endpoint: &str, identity: &WebIdentity) -> Result<Credentials, Error> {
    let token = read_token(env, identity)?;
    exchange(env, http, endpoint, identity, &token)
}

/// Reads the token file (an error when it is empty). The token is a secret: never format it.
pub fn read_token(env: &Env, identity: &WebIdentity) -> Result<String, Error> {
    let what = || format!("web identity token file {}", identity.token_file.display());
    let token = env
        .read_to_string_capped(&identity.token_file, super::TOKEN_FILE_LIMIT)
        .map_err(|source| Error::Io { what: what(), source })?;
    if token.trim().is_empty() {
        return Err(Error::Credentials { provider: NAME, message: format!("{} is empty", what()), denied: false });
    }
    Ok(token)
}

/// Exchanges a token read by [`read_token`] for credentials at the STS `endpoint` (one request).
pub fn exchange(
    env: &Env,
    http: &Http,
    endpoint: &str,
    identity: &WebIdentity,
    token: &str,
) -> Result<Credentials, Error> {
    // Sent as read, like the AWS SDKs do (a trailing newline included).
    sts::assume_role_with_web_identity(http, endpoint, &identity.role_arn, &identity.session_name, token, env.now())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::sts::test_server::{Reply, serve};
    use std::path::Path;
    use std::time::{Duration, SystemTime};

    fn at(seconds: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(seconds)
    }

    const OK: &str = "<AssumeRoleWithWebIdentityResponse><AssumeRoleWithWebIdentityResult>\
        <AssumedRoleUser><Arn>arn:aws:sts::123456789012:assumed-role/r/s</Arn></AssumedRoleUser>\
        <Credentials><AccessKeyId>ASIA</AccessKeyId><SecretAccessKey>S</SecretAccessKey>\
        <SessionToken>T</SessionToken><Expiration>2030-01-01T00:00:00Z</Expiration></Credentials>\
        </AssumeRoleWithWebIdentityResult></AssumeRoleWithWebIdentityResponse>";

    /// A fresh folder under the system temporary folder, removed by the caller.
    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("lock-exec-web-identity-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create a temporary folder");
        dir
    }

    #[test]
    fn from_env_needs_the_file_and_the_role() {
        fn check(vars: &[(&str, &str)], expected: Option<(&str, &str, &str)>) {
            let env = Env::from_pairs(vars).with_now(at(1_700_000_000));
            let got = from_env(&env);
            let got = got.as_ref().map(|w| (w.token_file.to_str().expect("UTF-8"), &*w.role_arn, &*w.session_name));
            assert_eq!(got, expected, "{vars:?}");
        }
        check(&[], None);
        check(&[("AWS_WEB_IDENTITY_TOKEN_FILE", "/t")], None);
        check(&[("AWS_ROLE_ARN", "arn:r")], None);
        check(&[("AWS_WEB_IDENTITY_TOKEN_FILE", " "), ("AWS_ROLE_ARN", "arn:r")], None);
        check(
            &[("AWS_WEB_IDENTITY_TOKEN_FILE", "/t"), ("AWS_ROLE_ARN", "arn:r")],
            Some(("/t", "arn:r", "lock-exec-1700000000")),
        );
        check(
            &[("AWS_WEB_IDENTITY_TOKEN_FILE", "/t"), ("AWS_ROLE_ARN", "arn:r"), ("AWS_ROLE_SESSION_NAME", "")],
            Some(("/t", "arn:r", "lock-exec-1700000000")),
        );
        check(
            &[("AWS_WEB_IDENTITY_TOKEN_FILE", "/t"), ("AWS_ROLE_ARN", "arn:r"), ("AWS_ROLE_SESSION_NAME", "mine")],
            Some(("/t", "arn:r", "mine")),
        );
    }

    #[test]
    fn the_token_file_is_read_on_every_load() {
        let dir = temp_dir("reread");
        let token_file = dir.join("token");
        let identity =
            WebIdentity { token_file: token_file.clone(), role_arn: "arn:r".into(), session_name: "s".into() };
        let env = Env::from_pairs::<&str, &str>(&[]).with_now(at(1_700_000_000));
        let (base, server) = serve(vec![Reply::With(200, OK.into()), Reply::With(200, OK.into())]);
        std::fs::write(&token_file, "first.token").expect("write the token");
        let credentials = load(&env, &Http::new(), &base, &identity).expect("credentials");
        assert_eq!(credentials.access_key_id(), "ASIA");
        std::fs::write(&token_file, "second.token").expect("rotate the token");
        load(&env, &Http::new(), &base, &identity).expect("credentials");
        let seen = server.join().expect("server thread");
        assert!(seen[0].body.ends_with("&WebIdentityToken=first.token"), "{}", seen[0].body);
        assert!(seen[1].body.ends_with("&WebIdentityToken=second.token"), "{}", seen[1].body);
        std::fs::remove_dir_all(dir).expect("clean up");
    }

    #[test]
    fn token_file_problems_are_named_without_the_token() {
        let dir = temp_dir("problems");
        let env = Env::from_pairs::<&str, &str>(&[]);
        let identity =
            |file: &Path| WebIdentity { token_file: file.into(), role_arn: "r".into(), session_name: "s".into() };
        // The endpoint is never reached: nothing listens there.
        let endpoint = "http://127.0.0.1:9";

        let missing = dir.join("missing");
        let e = load(&env, &Http::new(), endpoint, &identity(&missing)).expect_err("no file");
        assert!(matches!(&e, Error::Io { .. }), "{e:?}");
        assert_eq!(e.to_string(), format!("cannot read web identity token file {}", missing.display()));

        let e = load(&env, &Http::new(), endpoint, &identity(Path::new("/dev/zero"))).expect_err("a device");
        assert!(matches!(&e, Error::Io { .. }), "{e:?}");
        assert_eq!(
            crate::error_chain(&e),
            "cannot read web identity token file /dev/zero: not a regular file (a character device)"
        );

        let large = dir.join("large");
        std::fs::write(&large, vec![b'x'; 64 * 1024 + 1]).expect("write");
        let e = load(&env, &Http::new(), endpoint, &identity(&large)).expect_err("too large");
        assert_eq!(
            crate::error_chain(&e),
            format!("cannot read web identity token file {}: larger than 64 KiB", large.display())
        );

        let empty = dir.join("empty");
        std::fs::write(&empty, "\n").expect("write");
        let e = load(&env, &Http::new(), endpoint, &identity(&empty)).expect_err("empty file");
        assert!(matches!(&e, Error::Credentials { provider: NAME, denied: false, .. }), "{e:?}");
        assert!(e.to_string().ends_with("is empty"), "{e}");
        std::fs::remove_dir_all(dir).expect("clean up");
    }

    #[test]
    fn sts_errors_do_not_show_the_token() {
        let dir = temp_dir("denied");
        let token_file = dir.join("token");
        std::fs::write(&token_file, "SECRET.JWT.TOKEN").expect("write the token");
        let identity = WebIdentity { token_file, role_arn: "r".into(), session_name: "s".into() };
        let (base, server) = serve(vec![Reply::Echo(400)]);
        let e = load(&Env::from_pairs::<&str, &str>(&[]), &Http::new(), &base, &identity).expect_err("rejected");
        server.join().expect("server thread");
        let shown = format!("{e} {e:?} {identity:?}");
        assert!(!shown.contains("SECRET.JWT.TOKEN"), "{shown}");
        std::fs::remove_dir_all(dir).expect("clean up");
    }

    /// The SDK conformance case `web_identity_token_env`, end to end: its environment and files, the recorded STS
    /// answer replayed, the expected credentials compared.
    #[test]
    fn sdk_case_web_identity_token_env() {
        let Some(root) = crate::conformance_data() else { return };
        let case = root.join("default-credential-provider-chain/web_identity_token_env");
        let read = |file: &str| -> serde_json::Value {
            serde_json::from_str(&std::fs::read_to_string(case.join(file)).expect("case file is readable"))
                .expect("case file is JSON")
        };
        let vars: Vec<(String, String)> = read("env.json")
            .as_object()
            .expect("env object")
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().expect("string value").to_owned()))
            .collect();
        let env = Env::from_pairs(&vars).with_fs_root(case.join("fs")).with_now(at(1_629_140_000));
        let traffic = read("http-traffic.json");
        let events = traffic["events"].as_array().expect("events");
        let data = |direction: &str| {
            events
                .iter()
                .filter_map(|e| e["action"].get("Data"))
                .find(|d| d["direction"] == direction)
                .and_then(|d| d["data"]["Utf8"].as_str())
                .expect("recorded data")
                .to_owned()
        };
        let identity = from_env(&env).expect("the case sets the file and the role");
        let (base, server) = serve(vec![Reply::With(200, data("Response"))]);
        let http = Http::new().redirect_to(base);
        let region = env.var("AWS_REGION").expect("the case sets a region");
        let (endpoint, _) = crate::aws::sts::endpoint(&env, &region, None, false, false, false);
        let credentials = load(&env, &http, &endpoint, &identity).expect("credentials");
        let seen = server.join().expect("server thread");
        // Two known flaws in this vector's recording, put right before comparing: the recorded RoleArn (account
        // 123456789123) is not env.json's AWS_ROLE_ARN (123456789012), and fs/token.jwt ends in a newline the
        // recording lacks (the three other recordings send it, `%0A`, as we do: the file is sent as read).
        let recorded = data("Request").replace("123456789123", "123456789012") + "%0A";
        assert_eq!(seen[0].body, recorded);
        let expected = &read("test-case.json")["result"]["Ok"];
        assert_eq!(credentials.access_key_id(), expected["access_key_id"]);
        assert_eq!(credentials.secret_access_key(), expected["secret_access_key"]);
        assert_eq!(credentials.session_token(), expected["session_token"].as_str());
        assert_eq!(credentials.account_id().map(|a| a.as_str()), expected["account_id"].as_str());
        assert_eq!(credentials.expiry(), Some(at(expected["expiry"].as_u64().expect("expiry"))));
    }
}
