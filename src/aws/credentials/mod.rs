//! Where credentials come from: the provider chain, and a cache that refreshes expiring credentials.
//!
//! Order (the first source that applies wins; a source that applies but fails stops the chain with its own
//! error, it does not fall through):
//! 1. environment variables, unless a profile was named with `--profile` ([`environment`]: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//!    `AWS_SESSION_TOKEN`)
//! 2. the selected profile in the shared files ([`profile`]: static keys, `role_arn` with `source_profile` or
//!    `credential_source`, `web_identity_token_file`, `credential_process`)
//! 3. web identity from the environment, IRSA ([`web_identity`]: `AWS_WEB_IDENTITY_TOKEN_FILE`, `AWS_ROLE_ARN`,
//!    `AWS_ROLE_SESSION_NAME`)
//! 4. the container endpoint, ECS and EKS Pod Identity ([`container`]: `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI`,
//!    `AWS_CONTAINER_CREDENTIALS_FULL_URI`, `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE`,
//!    `AWS_CONTAINER_AUTHORIZATION_TOKEN`)
//! 5. the EC2 instance metadata service ([`imds`]: `AWS_EC2_METADATA_DISABLED`,
//!    `AWS_EC2_METADATA_SERVICE_ENDPOINT`, `AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE`, `AWS_EC2_METADATA_V1_DISABLED`)
//!
//! Retries are decided here, in one place ([`Source::fetch`]): each source makes one request per step (IMDS
//! excepted: its requests keep their own 3 tries of 1 s, and its failures are final), and each step that fails
//! in a way worth another try ([`transient`]) is tried [`FETCH_ATTEMPTS`] times in all. Only the failing step is
//! tried again: what the steps before it obtained (a role's source credentials, a web identity token) is reused.
//! A `credential_process` helper runs once per fetch and is never run again after a failure: it is the user's
//! program, and may prompt (MFA) or have effects of its own. Nothing above the chain retries a credential
//! failure again (the cache does not, nor does the DynamoDB client).

pub mod container;
pub mod environment;
pub mod imds;
pub mod process;
pub mod profile;
pub mod web_identity;

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

pub use aws_credential_types::Credentials;

use crate::aws::http::Http;
use crate::aws::profile::ProfileSet;
use crate::aws::sts;
use crate::env::Env;
use crate::error::{Error, ServiceErrorKind};

use self::profile::{AssumeRoleStep, Base, CredentialSource};
use self::web_identity::WebIdentity;

/// What credential sources read: the environment, the HTTP client, the profiles, the region.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// Variables, files and the clock.
    pub env: &'a Env,
    /// The run's HTTP client.
    pub http: &'a Http,
    /// The shared config and credentials files, with the selected profile.
    pub profiles: &'a ProfileSet,
    /// The resolved region (STS calls are made in it).
    pub region: &'a str,
}

/// The most a token file (web identity, container authorization) may hold: 64 KiB. Real tokens are a few KiB;
/// a larger file is an error, read with bounded memory (and a device or named pipe is refused unread:
/// [`Env::read_to_string_capped`]).
pub const TOKEN_FILE_LIMIT: u64 = 64 * 1024;

/// Tries per step of a credential fetch (one request: an STS call, the container endpoint) when the failure is
/// [`transient`].
pub const FETCH_ATTEMPTS: u32 = 3;

/// The pause before the second try of a step; it grows linearly (100 ms, then 200 ms).
pub const FETCH_PAUSE: Duration = Duration::from_millis(100);

/// True for a failure worth another try: no connection or a timeout, a 5xx answer, throttling.
pub fn transient(error: &Error) -> bool {
    match error {
        Error::Transport { .. } => true,
        Error::Service(e) => matches!(e.kind(), ServiceErrorKind::Server | ServiceErrorKind::Throttling),
        _ => false,
    }
}

/// Runs one step of a fetch (one request), trying it again after a [`transient`] failure, [`FETCH_ATTEMPTS`]
/// tries in all.
fn with_retries<T>(mut step: impl FnMut() -> Result<T, Error>) -> Result<T, Error> {
    let mut tries = 1;
    loop {
        match step() {
            Err(e) if transient(&e) && tries < FETCH_ATTEMPTS => {
                std::thread::sleep(FETCH_PAUSE * tries);
                tries += 1;
            }
            result => return result,
        }
    }
}

/// Credentials within this long of their expiry are refreshed before use.
pub const REFRESH_WINDOW: Duration = Duration::from_secs(5 * 60);

/// A source of credentials selected from the chain.
#[derive(Debug, Clone)]
pub enum Source {
    /// Static credentials: environment or profile keys. Never refreshed.
    Static {
        /// Where they came from.
        name: &'static str,
        /// The credentials.
        credentials: Credentials,
    },
    /// `AssumeRoleWithWebIdentity`, the token file re-read on every fetch.
    WebIdentity {
        /// Token file, role and session name.
        identity: WebIdentity,
        /// The STS endpoint.
        sts_endpoint: String,
    },
    /// The container credentials endpoint.
    Container {
        /// The full URI.
        uri: String,
    },
    /// The instance metadata service.
    Imds {
        /// The IMDS base URL.
        endpoint: String,
        /// True when IMDS was reached only because nothing else was configured (the error then says so).
        fallback: bool,
    },
    /// A profile's `credential_process`.
    Process {
        /// The profile that configures it.
        profile: String,
        /// The command line.
        command: process::CommandLine,
    },
    /// `AssumeRole` steps made with the credentials of a base source.
    AssumeRole {
        /// Where the first credentials come from.
        base: Box<Source>,
        /// The roles, in order.
        steps: Vec<AssumeRoleStep>,
        /// The STS endpoint.
        sts_endpoint: String,
    },
}

impl Source {
    /// The source's name for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Source::Static { name, .. } => name,
            Source::WebIdentity { .. } => web_identity::NAME,
            Source::Container { .. } => container::NAME,
            Source::Imds { .. } => imds::NAME,
            Source::Process { .. } => process::NAME,
            Source::AssumeRole { .. } => "profile assume role",
        }
    }

    /// The STS endpoint the source calls, if it calls STS.
    pub fn sts_endpoint(&self) -> Option<&str> {
        match self {
            Source::WebIdentity { sts_endpoint, .. } | Source::AssumeRole { sts_endpoint, .. } => Some(sts_endpoint),
            _ => None,
        }
    }

    /// Fetches credentials from the source, each request tried again on a [`transient`] failure (the module
    /// docs say how); a `credential_process` helper is run once.
    pub fn fetch(&self, ctx: &Context<'_>) -> Result<Credentials, Error> {
        match self {
            Source::Static { credentials, .. } => Ok(credentials.clone()),
            Source::WebIdentity { identity, sts_endpoint } => {
                // The token is read once per fetch; only the STS request is tried again.
                let token = web_identity::read_token(ctx.env, identity)?;
                with_retries(|| web_identity::exchange(ctx.env, ctx.http, sts_endpoint, identity, &token))
            }
            Source::Container { uri } => with_retries(|| container::load(ctx.env, ctx.http, uri)),
            Source::Imds { endpoint, fallback } => {
                with_retries(|| imds::load(ctx.env, ctx.http, endpoint)).map_err(|e| match e {
                    Error::Credentials { provider, message, denied } if *fallback => Error::Credentials {
                        provider,
                        message: format!(
                            "no credentials in the environment, the profile, web identity or container settings, \
                             so the instance metadata service was asked: {message}"
                        ),
                        denied,
                    },
                    other => other,
                })
            }
            // Never run again after a failure (none of its errors is transient anyway).
            Source::Process { profile, command } => process::load(ctx.env, profile, &command.0),
            Source::AssumeRole { base, steps, sts_endpoint } => {
                // The base (a credential_process helper, a web identity token, ...) is asked once; each role
                // step is retried on its own with the credentials of the step before.
                let mut credentials = base.fetch(ctx)?;
                for step in steps {
                    let params = sts::AssumeRoleParams {
                        role_arn: step.role_arn.clone(),
                        session_name: step
                            .session_name
                            .clone()
                            .unwrap_or_else(|| web_identity::default_session_name(ctx.env)),
                        external_id: step.external_id.clone(),
                        duration_seconds: step.duration_seconds,
                    };
                    credentials = with_retries(|| {
                        sts::assume_role(ctx.http, sts_endpoint, ctx.region, &credentials, &params, ctx.env.now())
                    })
                    .map_err(|e| match e {
                        // A transient failure that outlasted the tries keeps its kind (exit 69).
                        e if transient(&e) => e,
                        e => Error::Credentials {
                            provider: "profile assume role",
                            message: format!(
                                "profile {}: AssumeRole {}: {}",
                                step.profile,
                                step.role_arn,
                                crate::error_chain(&e)
                            ),
                            denied: e.exit() == crate::exit::Exit::Denied,
                        },
                    })?;
                }
                Ok(credentials)
            }
        }
    }
}

/// The STS endpoint: env overrides, the profile's `services` / `endpoint_url`, then the regional endpoint of the
/// region's partition, FIPS with `AWS_USE_FIPS_ENDPOINT` / `use_fips_endpoint` and dual-stack with
/// `AWS_USE_DUALSTACK_ENDPOINT` / `use_dualstack_endpoint` (as for DynamoDB); a configured URL must be `http://`
/// or `https://` with a host and no user name or password (exit 78 otherwise, not a retried failure).
pub fn sts_endpoint(env: &Env, profiles: &ProfileSet, region: &str) -> Result<String, Error> {
    use crate::aws::endpoint::bool_setting;
    let flag = |key: &str| profiles.value(key).map(|v| v.eq_ignore_ascii_case("true"));
    let ignore = crate::aws::endpoint::ignore_configured(env, flag("ignore_configured_endpoint_urls"));
    let fips = bool_setting(env, "AWS_USE_FIPS_ENDPOINT", flag("use_fips_endpoint"))?;
    let dualstack = bool_setting(env, "AWS_USE_DUALSTACK_ENDPOINT", flag("use_dualstack_endpoint"))?;
    let profile_url = service_endpoint(profiles, "sts")
        .map(|url| (url, "the profile's services sts endpoint_url"))
        .or_else(|| profiles.value("endpoint_url").map(|url| (url, "the profile's endpoint_url")));
    let profile_url = profile_url.as_ref().map(|(url, origin)| (url.as_str(), *origin));
    match sts::endpoint(env, region, profile_url, ignore, fips, dualstack) {
        (url, Some(origin)) => crate::aws::endpoint::checked_url_from(origin, &url),
        (url, None) => crate::aws::endpoint::checked_url(&url),
    }
}

/// `endpoint_url` for `service` in the `[services NAME]` section the selected profile names.
pub fn service_endpoint(profiles: &ProfileSet, service: &str) -> Option<String> {
    let section = profiles.value("services")?;
    profiles.section("services", &section)?.sub(service, "endpoint_url").map(str::to_owned)
}

/// Picks the first source that applies.
pub fn select(ctx: &Context<'_>) -> Result<Source, Error> {
    let env = ctx.env;
    // A profile named with --profile outranks keys in the environment (as in the AWS CLI), so that
    // `credential_source = Environment` and deliberate profile choices work where keys are also exported.
    if !ctx.profiles.named_by_flag()
        && let Some(credentials) = environment::load(env)
    {
        return Ok(Source::Static { name: environment::NAME, credentials });
    }
    if let Some(chain) = profile::chain(ctx.profiles)? {
        let base = match chain.base {
            Base::AccessKey(credentials) => Source::Static { name: profile::NAME, credentials },
            Base::WebIdentity { role_arn, token_file, session_name } => Source::WebIdentity {
                identity: WebIdentity {
                    token_file,
                    role_arn,
                    session_name: session_name.unwrap_or_else(|| web_identity::default_session_name(env)),
                },
                sts_endpoint: sts_endpoint(env, ctx.profiles, ctx.region)?,
            },
            Base::Process { command } => Source::Process { profile: chain.base_profile.clone(), command },
            Base::NamedSource(named) => named_source(ctx, named, &chain.base_profile)?,
        };
        if chain.steps.is_empty() {
            return Ok(base);
        }
        return Ok(Source::AssumeRole {
            base: Box::new(base),
            steps: chain.steps,
            sts_endpoint: sts_endpoint(env, ctx.profiles, ctx.region)?,
        });
    }
    if let Some(identity) = web_identity::from_env(env) {
        return Ok(Source::WebIdentity { identity, sts_endpoint: sts_endpoint(env, ctx.profiles, ctx.region)? });
    }
    if let Some(uri) = container::uri(env)? {
        return Ok(Source::Container { uri });
    }
    if imds::enabled(env) {
        let endpoint = imds::endpoint(env, &|key| ctx.profiles.value(key))?;
        return Ok(Source::Imds { endpoint, fallback: true });
    }
    let files = ctx.profiles.files_for_messages("and");
    Err(Error::Config(format!(
        "no credentials found: tried the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY), profile {:?} in \
         {files}, web identity (AWS_WEB_IDENTITY_TOKEN_FILE, AWS_ROLE_ARN), the container endpoint \
         (AWS_CONTAINER_CREDENTIALS_RELATIVE_URI / _FULL_URI); the instance metadata service is disabled \
         (AWS_EC2_METADATA_DISABLED=true)",
        ctx.profiles.selected_name(),
    )))
}

/// The source a profile's `credential_source` names.
fn named_source(ctx: &Context<'_>, named: CredentialSource, profile_name: &str) -> Result<Source, Error> {
    let missing = |what: &str| Error::Credentials {
        provider: profile::NAME,
        message: format!("profile {profile_name}: credential_source = {} but {what}", named.as_str()),
        denied: false,
    };
    match named {
        CredentialSource::Environment => environment::load(ctx.env)
            .map(|credentials| Source::Static { name: environment::NAME, credentials })
            .ok_or_else(|| missing("AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY are not set")),
        CredentialSource::EcsContainer => container::uri(ctx.env)?
            .map(|uri| Source::Container { uri })
            .ok_or_else(|| missing("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI / _FULL_URI are not set")),
        CredentialSource::Ec2InstanceMetadata => {
            if !imds::enabled(ctx.env) {
                return Err(missing("AWS_EC2_METADATA_DISABLED=true"));
            }
            let endpoint = imds::endpoint(ctx.env, &|key| ctx.profiles.value(key))?;
            Ok(Source::Imds { endpoint, fallback: false })
        }
    }
}

/// Hands out credentials from a source, fetching again when they come within [`REFRESH_WINDOW`] of expiring.
#[derive(Debug)]
pub struct Cache {
    source: Source,
    current: Mutex<Option<Credentials>>,
}

/// The result of [`Cache::get`].
#[derive(Debug)]
pub struct Fresh {
    /// Credentials to sign with.
    pub credentials: Credentials,
    /// A refresh that failed while the cached credentials were still valid (a warning for the log).
    pub refresh_error: Option<Error>,
    /// True when these were just fetched from the source.
    pub fetched: bool,
}

impl Cache {
    /// A cache over a source; nothing is fetched until [`Cache::get`].
    pub fn new(source: Source) -> Cache {
        Cache { source, current: Mutex::new(None) }
    }

    /// The source's name.
    pub fn source_name(&self) -> &'static str {
        self.source.name()
    }

    /// The STS endpoint the source calls, if it calls STS.
    pub fn sts_endpoint(&self) -> Option<&str> {
        self.source.sts_endpoint()
    }

    /// Credentials valid now, fetched from the source when the cached ones are missing or near expiry. The lock
    /// is not held while fetching, so [`Cache::valid_cached`] answers at once during a slow refresh.
    pub fn get(&self, ctx: &Context<'_>) -> Result<Fresh, Error> {
        let now = ctx.env.now();
        let cached = self.cached();
        if let Some(cached) = &cached
            && !needs_refresh(cached, now)
        {
            return Ok(Fresh { credentials: cached.clone(), refresh_error: None, fetched: false });
        }
        match self.source.fetch(ctx) {
            Ok(fetched) => {
                *self.current.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(fetched.clone());
                Ok(Fresh { credentials: fetched, refresh_error: None, fetched: true })
            }
            Err(e) => match cached {
                Some(cached) if cached.expiry().is_none_or(|expiry| expiry > now) => {
                    Ok(Fresh { credentials: cached, refresh_error: Some(e), fetched: false })
                }
                _ => Err(e),
            },
        }
    }

    /// The cached credentials if they stay valid for at least `margin` after `now`; never fetches.
    pub fn valid_cached(&self, now: SystemTime, margin: Duration) -> Option<Credentials> {
        self.cached().filter(|c| c.expiry().is_none_or(|expiry| expiry > now + margin))
    }

    /// True when the next [`Cache::get`] would fetch: nothing cached, or the cached credentials are near expiry.
    pub fn wants_refresh(&self, now: SystemTime) -> bool {
        self.cached().is_none_or(|c| needs_refresh(&c, now))
    }

    /// False only when the cached credentials have no expiry (static keys): they never need a refresh.
    pub fn can_expire(&self) -> bool {
        self.cached().is_none_or(|c| c.expiry().is_some())
    }

    fn cached(&self) -> Option<Credentials> {
        self.current.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }
}

/// True when credentials expire within the refresh window (or have expired).
pub fn needs_refresh(credentials: &Credentials, now: SystemTime) -> bool {
    credentials.expiry().is_some_and(|expiry| expiry <= now + REFRESH_WINDOW)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::UNIX_EPOCH;

    /// A container endpoint that serves credentials expiring at `expiry` once, then answers 500.
    fn flaky_endpoint(expiry: &str) -> (crate::aws::test_http::Server, Source) {
        let body = format!(r#"{{"AccessKeyId":"AKFIRST","SecretAccessKey":"s","Token":"t","Expiration":"{expiry}"}}"#);
        let mut served = 0;
        let server = crate::aws::test_http::Server::start(move |stream| {
            if crate::aws::test_http::read_request(&stream).is_none() {
                return;
            }
            served += 1;
            let (status, text) = if served == 1 { (200, body.as_str()) } else { (500, "{}") };
            let _ =
                crate::aws::test_http::write_response(&stream, status, &[("content-type", "application/json")], text);
        });
        let uri = format!("{}/creds", server.base());
        (server, Source::Container { uri })
    }

    #[test]
    fn a_failed_refresh_keeps_valid_credentials_with_a_warning_and_fails_once_they_expire() {
        let issued = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        // Expiring two minutes after `issued`: inside the refresh window, so every use fetches again.
        let (_server, source) = flaky_endpoint("2027-01-15T08:02:00Z");
        let cache = Cache::new(source);
        let http = Http::new();
        let profiles = ProfileSet::default();
        let env = Env::from_pairs::<&str, &str>(&[]).with_now(issued);
        let ctx = Context { env: &env, http: &http, profiles: &profiles, region: "us-east-1" };
        let first = cache.get(&ctx).expect("the first fetch succeeds");
        assert!(first.fetched && first.refresh_error.is_none());
        assert_eq!(first.credentials.access_key_id(), "AKFIRST");
        let second = cache.get(&ctx).expect("still valid: the cached credentials are used");
        assert!(!second.fetched, "nothing new was fetched");
        assert!(second.refresh_error.is_some(), "the failed refresh is reported as a warning");
        assert_eq!(second.credentials.access_key_id(), "AKFIRST");
        assert!(cache.wants_refresh(issued), "inside the refresh window");
        assert!(cache.valid_cached(issued, Duration::from_secs(60)).is_some(), "valid for two more minutes");
        assert!(cache.valid_cached(issued, Duration::from_secs(180)).is_none(), "not valid for three");
        let later = Env::from_pairs::<&str, &str>(&[]).with_now(issued + Duration::from_secs(180));
        let ctx = Context { env: &later, ..ctx };
        assert!(cache.get(&ctx).is_err(), "expired credentials are not handed out");
    }

    #[test]
    fn sts_endpoint_follows_the_ignore_setting_and_checks_urls() {
        let config = "[profile p]\nignore_configured_endpoint_urls = true\nendpoint_url = http://profile\n";
        let profiles =
            ProfileSet::parse(Some((std::path::Path::new("/config"), config)), None, "p").expect("a valid config");
        let check = |vars: &[(&str, &str)], expected: &str| {
            let got =
                sts_endpoint(&Env::from_pairs(vars), &profiles, "eu-west-1").unwrap_or_else(|e| format!("error: {e}"));
            assert_eq!(got, expected, "{vars:?}");
        };
        check(&[("AWS_ENDPOINT_URL", "http://env")], "https://sts.eu-west-1.amazonaws.com");
        check(&[("AWS_ENDPOINT_URL", "http://env"), ("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "false")], "http://env");
        check(&[("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "false")], "http://profile");
        check(
            &[("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "false"), ("AWS_ENDPOINT_URL_STS", "ftp://x")],
            "error: AWS_ENDPOINT_URL_STS: invalid endpoint URL \"ftp://x\": expected http://host[:port] or \
             https://host[:port]",
        );
    }

    /// A bad profile URL is named by the setting it came from: the profile's `endpoint_url` (used for STS when
    /// there is no `services` sts setting) or its `services` sts `endpoint_url`.
    #[test]
    fn a_bad_profile_sts_endpoint_names_its_setting() {
        let check = |config: &str, expected: &str| {
            let profiles =
                ProfileSet::parse(Some((std::path::Path::new("/config"), config)), None, "p").expect("a valid config");
            let error = sts_endpoint(&Env::from_pairs::<&str, &str>(&[]), &profiles, "eu-west-1")
                .expect_err("a bad URL")
                .to_string();
            assert!(error.starts_with(expected), "{error}");
        };
        check("[profile p]\nendpoint_url = garbage-global\n", "the profile's endpoint_url: invalid endpoint URL");
        check(
            "[profile p]\nservices = s\n[services s]\nsts =\n  endpoint_url = garbage-sts\n",
            "the profile's services sts endpoint_url: invalid endpoint URL",
        );
    }

    /// A container endpoint answering `status` to every request; the count of requests it saw.
    fn counting_endpoint(status: u16) -> (crate::aws::test_http::Server, Source, std::sync::Arc<AtomicU32>) {
        let seen = std::sync::Arc::new(AtomicU32::new(0));
        let counter = std::sync::Arc::clone(&seen);
        let server = crate::aws::test_http::Server::start(move |stream| {
            if crate::aws::test_http::read_request(&stream).is_none() {
                return;
            }
            counter.fetch_add(1, Ordering::SeqCst);
            let _ = crate::aws::test_http::write_response(&stream, status, &[("content-type", "text/plain")], "busy");
        });
        let uri = format!("{}/creds", server.base());
        (server, Source::Container { uri }, seen)
    }

    #[test]
    fn a_fetch_tries_transient_failures_three_times_and_others_once() {
        let http = Http::new();
        let profiles = ProfileSet::default();
        let env = Env::from_pairs::<&str, &str>(&[]);
        let ctx = Context { env: &env, http: &http, profiles: &profiles, region: "us-east-1" };
        for (status, requests) in [(500, FETCH_ATTEMPTS), (503, FETCH_ATTEMPTS), (404, 1)] {
            let (_server, source, seen) = counting_endpoint(status);
            let e = Cache::new(source).get(&ctx).expect_err("every try fails");
            assert_eq!(seen.load(Ordering::SeqCst), requests, "HTTP {status}: {e}");
        }
    }

    #[test]
    fn only_the_failing_step_of_a_chain_is_tried_again() {
        use crate::aws::sts::test_server::{Reply, serve};
        let dir = std::env::temp_dir().join(format!("lock-exec-chain-retry-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create a temporary folder");
        let token_file = dir.join("token");
        std::fs::write(&token_file, "web.identity.token").expect("write the token");
        let answer = |action: &str, key: &str| {
            format!(
                "<{action}Response><{action}Result><Credentials><AccessKeyId>{key}</AccessKeyId>\
                 <SecretAccessKey>S</SecretAccessKey><SessionToken>T</SessionToken>\
                 <Expiration>2030-01-01T00:00:00Z</Expiration></Credentials></{action}Result></{action}Response>"
            )
        };
        let busy = "<ErrorResponse><Error><Type>Receiver</Type><Code>InternalFailure</Code>\
                    <Message>busy</Message></Error></ErrorResponse>";
        // The web identity exchange succeeds; the role step then fails twice before it succeeds.
        let (base, server) = serve(vec![
            Reply::With(200, answer("AssumeRoleWithWebIdentity", "ASIAWEB")),
            Reply::With(500, busy.into()),
            Reply::With(503, busy.into()),
            Reply::With(200, answer("AssumeRole", "ASIAROLE")),
        ]);
        let identity = WebIdentity { token_file, role_arn: "arn:aws:iam::1:role/web".into(), session_name: "s".into() };
        let step = AssumeRoleStep {
            profile: "p".into(),
            role_arn: "arn:aws:iam::1:role/r".into(),
            external_id: None,
            session_name: Some("s".into()),
            duration_seconds: None,
        };
        let source = Source::AssumeRole {
            base: Box::new(Source::WebIdentity { identity, sts_endpoint: base.clone() }),
            steps: vec![step],
            sts_endpoint: base,
        };
        let http = Http::new();
        let profiles = ProfileSet::default();
        let env = Env::from_pairs::<&str, &str>(&[]).with_now(UNIX_EPOCH + Duration::from_secs(1_700_000_000));
        let ctx = Context { env: &env, http: &http, profiles: &profiles, region: "us-east-1" };
        let fresh = Cache::new(source).get(&ctx).expect("the third try of the role step succeeds");
        assert_eq!(fresh.credentials.access_key_id(), "ASIAROLE");
        let actions: Vec<String> = server
            .join()
            .expect("the STS stub")
            .iter()
            .map(|r| r.body.split('&').find_map(|f| f.strip_prefix("Action=")).unwrap_or("?").to_owned())
            .collect();
        assert_eq!(actions, ["AssumeRoleWithWebIdentity", "AssumeRole", "AssumeRole", "AssumeRole"]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn sts_endpoint_honours_fips_and_dual_stack() {
        let check = |config: &str, vars: &[(&str, &str)], region: &str, expected: &str| {
            let profiles =
                ProfileSet::parse(Some((std::path::Path::new("/config"), config)), None, "p").expect("a valid config");
            let got = sts_endpoint(&Env::from_pairs(vars), &profiles, region).unwrap_or_else(|e| format!("error: {e}"));
            assert_eq!(got, expected, "{config:?} {vars:?} {region}");
        };
        let none = "[profile p]\n";
        check(none, &[("AWS_USE_FIPS_ENDPOINT", "true")], "us-east-1", "https://sts-fips.us-east-1.amazonaws.com");
        check(none, &[("AWS_USE_DUALSTACK_ENDPOINT", "true")], "eu-west-1", "https://sts.eu-west-1.api.aws");
        let fips_profile = "[profile p]\nuse_fips_endpoint = true\nuse_dualstack_endpoint = true\n";
        check(fips_profile, &[], "us-west-2", "https://sts-fips.us-west-2.api.aws");
        check(fips_profile, &[("AWS_USE_FIPS_ENDPOINT", "false")], "us-west-2", "https://sts.us-west-2.api.aws");
        check(none, &[], "us-isof-south-1", "https://sts.us-isof-south-1.csp.hci.ic.gov");
        check(none, &[], "eusc-de-east-1", "https://sts.eusc-de-east-1.amazonaws.eu");
        check(
            none,
            &[("AWS_USE_FIPS_ENDPOINT", "yes")],
            "us-east-1",
            "error: AWS_USE_FIPS_ENDPOINT=\"yes\": expected true or false",
        );
        check(
            none,
            &[("AWS_ENDPOINT_URL_STS", "https://user:pw@sts.example/")],
            "us-east-1",
            "error: AWS_ENDPOINT_URL_STS: endpoint URL \"https://sts.example/\" holds a user name or password \
             (user:password@): not allowed; remove it",
        );
    }

    #[test]
    fn refresh_window() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let expiring = |secs| Credentials::new("a", "b", None, Some(now + Duration::from_secs(secs)), "t");
        assert!(needs_refresh(&expiring(60), now));
        assert!(!needs_refresh(&expiring(3600), now));
        assert!(!needs_refresh(&Credentials::new("a", "b", None, None, "t"), now));
    }
}

#[cfg(test)]
mod chain_tests;
