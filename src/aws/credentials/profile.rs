//! The credential chain the selected profile describes: base credentials, then the roles to assume in order.
//!
//! Reads no environment variables itself: it works on a [`ProfileSet`] already loaded (see
//! [`crate::aws::profile`], which reads `AWS_PROFILE`, `AWS_CONFIG_FILE`, `AWS_SHARED_CREDENTIALS_FILE`, `HOME`).
//! Building the chain is pure data; fetching is left to the sources (`web_identity`, `process`, `imds`, ...)
//! and STS.
//!
//! Profile keys used, as the AWS SDKs use them (pinned by `assume-role-tests.json`):
//! - a role to assume: `role_arn` with `source_profile` (another profile, or this one for its own static keys)
//!   or `credential_source` (`Environment`, `Ec2InstanceMetadata`, `EcsContainer`), plus `external_id`,
//!   `role_session_name`, `duration_seconds`;
//! - base credentials: `credential_source`; `web_identity_token_file` with `role_arn` (and `role_session_name`);
//!   `credential_process`; `aws_access_key_id` with `aws_secret_access_key` (and `aws_session_token`,
//!   `aws_account_id`). A profile reached through `source_profile` that has static keys uses them and stops.
//!
//! Empty values count as unset. IAM Identity Center (`sso_*`) profiles are refused: lock-exec has no SSO.

use super::process::CommandLine;
use std::path::PathBuf;

use aws_credential_types::Credentials;

use crate::aws::profile::{Profile, ProfileSet};
use crate::error::Error;

/// The source's name in logs and errors.
pub const NAME: &str = "profile";

/// Shortest session STS grants for a role.
const MIN_DURATION_SECONDS: u32 = 900;
/// Longest session a role can be configured to allow.
const MAX_DURATION_SECONDS: u32 = 43_200;

/// A `credential_source` value: where base credentials come from when the profile has none of its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CredentialSource {
    /// `Environment`: `AWS_ACCESS_KEY_ID` and friends.
    Environment,
    /// `Ec2InstanceMetadata`: the instance's role through IMDS.
    Ec2InstanceMetadata,
    /// `EcsContainer`: the container credentials endpoint.
    EcsContainer,
}

impl CredentialSource {
    /// The value as written in a profile (compared exactly, as the SDKs do).
    pub fn parse(value: &str) -> Option<CredentialSource> {
        match value {
            "Environment" => Some(CredentialSource::Environment),
            "Ec2InstanceMetadata" => Some(CredentialSource::Ec2InstanceMetadata),
            "EcsContainer" => Some(CredentialSource::EcsContainer),
            _ => None,
        }
    }

    /// The name as written in a profile.
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialSource::Environment => "Environment",
            CredentialSource::Ec2InstanceMetadata => "Ec2InstanceMetadata",
            CredentialSource::EcsContainer => "EcsContainer",
        }
    }
}

/// The first link of a profile chain: credentials obtained without assuming a profile's role.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Base {
    /// Static keys from the profile (`Debug` of [`Credentials`] hides the secret and token).
    AccessKey(Credentials),
    /// `AssumeRoleWithWebIdentity` with a token read from a file.
    WebIdentity {
        /// `role_arn`.
        role_arn: String,
        /// `web_identity_token_file`.
        token_file: PathBuf,
        /// `role_session_name`, when set.
        session_name: Option<String>,
    },
    /// `credential_process`: a command printing credentials as JSON.
    Process {
        /// The command line, as written (split into words, no shell).
        command: CommandLine,
    },
    /// `credential_source`: one of the standard sources.
    NamedSource(CredentialSource),
}

/// One `AssumeRole` call, made with the credentials of the link before it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AssumeRoleStep {
    /// The profile that asks for the role.
    pub profile: String,
    /// `role_arn`.
    pub role_arn: String,
    /// `external_id`, when set.
    pub external_id: Option<String>,
    /// `role_session_name`, when set.
    pub session_name: Option<String>,
    /// `duration_seconds`, when set (900 to 43200).
    pub duration_seconds: Option<u32>,
}

/// Base credentials, then roles to assume in the order they are assumed (the selected profile's role last).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProfileChain {
    /// The profile the base credentials are configured in.
    pub base_profile: String,
    /// Where the first credentials come from.
    pub base: Base,
    /// Roles to assume, in order.
    pub steps: Vec<AssumeRoleStep>,
}

/// The chain the selected profile configures. `None` when the profile does not exist or configures no
/// credentials (the provider chain moves on); an error when its configuration is invalid.
pub fn chain(profiles: &ProfileSet) -> Result<Option<ProfileChain>, Error> {
    let Some(mut profile) = profiles.selected() else { return Ok(None) };
    let mut visited: Vec<&str> = Vec::new();
    let mut steps = Vec::new();
    let (base_profile, base) = loop {
        if visited.contains(&profile.name()) {
            let path: Vec<&str> = visited.iter().copied().chain([profile.name()]).collect();
            return Err(invalid(format!("profile formed an infinite loop: {}", path.join(" -> "))));
        }
        visited.push(profile.name());
        // A profile reached through `source_profile` that has static keys uses them, role or not.
        if visited.len() > 1
            && let Ok(Some(credentials)) = static_keys(profile)
        {
            break (profile, Base::AccessKey(credentials));
        }
        let Some(step) = assume_role_step(profile)? else {
            match base(profile)? {
                Some(base) => break (profile, base),
                None if visited.len() == 1 => return Ok(None),
                None => {
                    let from = visited[visited.len() - 2];
                    return Err(invalid(format!(
                        "profile `{}` did not contain credential information, but profile `{from}` names it as \
                         source_profile",
                        profile.name()
                    )));
                }
            }
        };
        steps.push(step);
        match next_link(profile)? {
            Next::Source(source) => break (profile, Base::NamedSource(source)),
            Next::Profile(name) if name == profile.name() => match base(profile)? {
                Some(base) => break (profile, base),
                None => {
                    return Err(invalid(format!(
                        "profile `{name}` names itself as source_profile but did not contain credential \
                         information (aws_access_key_id, aws_secret_access_key)"
                    )));
                }
            },
            Next::Profile(name) => {
                profile = profiles.get(name).ok_or_else(|| {
                    invalid(format!("could not find source profile {name} referenced from {}", profile.name()))
                })?;
            }
        }
    };
    steps.reverse();
    Ok(Some(ProfileChain { base_profile: base_profile.name().to_owned(), base, steps }))
}

/// Where the credentials for a profile's role come from.
enum Next<'a> {
    Profile(&'a str),
    Source(CredentialSource),
}

/// A configuration error naming the profile source.
fn invalid(message: String) -> Error {
    Error::Credentials { provider: NAME, message, denied: false }
}

/// An error about one profile.
fn invalid_in(profile: &Profile, message: &str) -> Error {
    invalid(format!("{message} (profile `{}`)", profile.name()))
}

/// A property, with empty values counting as unset.
fn value<'a>(profile: &'a Profile, key: &str) -> Option<&'a str> {
    profile.get(key).filter(|v| !v.is_empty())
}

/// The role this profile assumes: `role_arn`, unless it belongs to a web identity (a base, not a step).
fn assume_role_step(profile: &Profile) -> Result<Option<AssumeRoleStep>, Error> {
    if value(profile, "web_identity_token_file").is_some() {
        return Ok(None);
    }
    let Some(role_arn) = value(profile, "role_arn") else { return Ok(None) };
    let duration_seconds = match value(profile, "duration_seconds") {
        None => None,
        Some(text) => match text.parse::<u32>() {
            Ok(seconds) if (MIN_DURATION_SECONDS..=MAX_DURATION_SECONDS).contains(&seconds) => Some(seconds),
            _ => {
                let message = format!(
                    "duration_seconds must be a whole number of seconds from {MIN_DURATION_SECONDS} to \
                     {MAX_DURATION_SECONDS}, not `{text}`"
                );
                return Err(invalid_in(profile, &message));
            }
        },
    };
    Ok(Some(AssumeRoleStep {
        profile: profile.name().to_owned(),
        role_arn: role_arn.to_owned(),
        external_id: value(profile, "external_id").map(str::to_owned),
        session_name: value(profile, "role_session_name").map(str::to_owned),
        duration_seconds,
    }))
}

/// For a profile with a role: the profile or named source whose credentials assume it.
fn next_link(profile: &Profile) -> Result<Next<'_>, Error> {
    match (value(profile, "source_profile"), value(profile, "credential_source")) {
        (Some(_), Some(_)) => {
            Err(invalid_in(profile, "profile contained both source_profile and credential_source, only one may be set"))
        }
        (None, None) => Err(invalid_in(
            profile,
            "profile must contain `source_profile` or `credential_source` when it sets `role_arn`",
        )),
        (Some(name), None) => Ok(Next::Profile(name)),
        (None, Some(source)) => Ok(Next::Source(credential_source(profile, source)?)),
    }
}

fn credential_source(profile: &Profile, source: &str) -> Result<CredentialSource, Error> {
    CredentialSource::parse(source).ok_or_else(|| {
        let message =
            format!("unknown credential_source `{source}`, expected Environment, Ec2InstanceMetadata or EcsContainer");
        invalid_in(profile, &message)
    })
}

/// SSO keys; any of them marks an IAM Identity Center profile.
const SSO_KEYS: &[&str] = &["sso_session", "sso_start_url", "sso_account_id", "sso_role_name", "sso_region"];

/// The base credentials a profile configures itself, in the SDKs' order of preference; `None` when it has none.
fn base(profile: &Profile) -> Result<Option<Base>, Error> {
    if let Some(source) = value(profile, "credential_source") {
        return Ok(Some(Base::NamedSource(credential_source(profile, source)?)));
    }
    match (value(profile, "role_arn"), value(profile, "web_identity_token_file")) {
        (Some(role_arn), Some(token_file)) => {
            return Ok(Some(Base::WebIdentity {
                role_arn: role_arn.to_owned(),
                token_file: PathBuf::from(token_file),
                session_name: value(profile, "role_session_name").map(str::to_owned),
            }));
        }
        (None, Some(_)) => {
            return Err(invalid_in(profile, "`web_identity_token_file` was specified but `role_arn` was missing"));
        }
        _ => {}
    }
    if SSO_KEYS.iter().any(|key| value(profile, key).is_some()) {
        return Err(invalid_in(
            profile,
            "IAM Identity Center (SSO) profiles are not supported by lock-exec; use `aws configure \
             export-credentials --format env` to pass its credentials in the environment",
        ));
    }
    if let Some(command) = value(profile, "credential_process") {
        return Ok(Some(Base::Process { command: CommandLine(command.to_owned()) }));
    }
    Ok(static_keys(profile)?.map(Base::AccessKey))
}

/// `aws_access_key_id` and `aws_secret_access_key` (with the optional token and account); `None` when none of
/// the three credential keys is set, an error when only part is.
fn static_keys(profile: &Profile) -> Result<Option<Credentials>, Error> {
    let access_key_id = value(profile, "aws_access_key_id");
    let secret_access_key = value(profile, "aws_secret_access_key");
    let session_token = value(profile, "aws_session_token");
    let (access_key_id, secret_access_key) = match (access_key_id, secret_access_key, session_token) {
        (None, None, None) => return Ok(None),
        (Some(id), Some(secret), _) => (id, secret),
        (None, _, _) => return Err(invalid_in(profile, "profile missing aws_access_key_id")),
        (Some(_), None, _) => return Err(invalid_in(profile, "profile missing aws_secret_access_key")),
    };
    let mut builder =
        Credentials::builder().access_key_id(access_key_id).secret_access_key(secret_access_key).provider_name(NAME);
    builder.set_session_token(session_token.map(str::to_owned));
    builder.set_account_id(value(profile, "aws_account_id").map(Into::into));
    Ok(Some(builder.build()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Map, Value};
    use std::path::Path;

    /// Writes the vector's profiles as a config file and parses it, so the vectors go through the real parser.
    fn profile_set(input: &Value) -> ProfileSet {
        let mut text = String::new();
        let sections = [("profile", &input["profiles"]), ("sso-session", &input["sso_sessions"])];
        for (kind, value) in sections {
            for (name, properties) in value.as_object().unwrap_or(&Map::new()) {
                text.push_str(&format!("[{kind} {name}]\n"));
                for (key, value) in properties.as_object().expect("properties object") {
                    text.push_str(&format!("{key} = {}\n", value.as_str().expect("string value")));
                }
            }
        }
        let selected = input["selected_profile"].as_str().expect("selected_profile");
        ProfileSet::parse(Some((Path::new("/home/.aws/config"), &text)), None, selected).expect("vector parses")
    }

    /// The chain in the vectors' shape.
    fn to_json(chain: &ProfileChain) -> Value {
        let mut links = Vec::new();
        let optional = |map: &mut Map<String, Value>, key: &str, value: Option<&str>| {
            if let Some(value) = value {
                map.insert(key.into(), value.into());
            }
        };
        links.push(match &chain.base {
            Base::AccessKey(credentials) => {
                let mut map = Map::new();
                map.insert("access_key_id".into(), credentials.access_key_id().into());
                map.insert("secret_access_key".into(), credentials.secret_access_key().into());
                optional(&mut map, "session_token", credentials.session_token());
                optional(&mut map, "account_id", credentials.account_id().map(|a| a.as_str()));
                serde_json::json!({ "AccessKey": map })
            }
            Base::WebIdentity { role_arn, token_file, session_name } => {
                let mut map = Map::new();
                map.insert("role_arn".into(), role_arn.as_str().into());
                map.insert("web_identity_token_file".into(), token_file.to_string_lossy().into());
                optional(&mut map, "role_session_name", session_name.as_deref());
                serde_json::json!({ "WebIdentityToken": map })
            }
            Base::Process { command } => serde_json::json!({ "Process": command.0 }),
            Base::NamedSource(source) => serde_json::json!({ "NamedSource": source.as_str() }),
        });
        for step in &chain.steps {
            let mut map = Map::new();
            map.insert("role_arn".into(), step.role_arn.as_str().into());
            optional(&mut map, "external_id", step.external_id.as_deref());
            optional(&mut map, "role_session_name", step.session_name.as_deref());
            links.push(serde_json::json!({ "AssumeRole": map }));
        }
        Value::Array(links)
    }

    #[test]
    fn assume_role_conformance() {
        let Some(root) = crate::conformance_data() else { return };
        let text = std::fs::read_to_string(root.join("assume-role-tests.json"))
            .expect("the conformance vectors are checked out beside the repo");
        let vectors: Vec<Value> = serde_json::from_str(&text).expect("the vectors are JSON");
        let (mut passed, mut not_applicable, mut failures) = (0, 0, Vec::new());
        for vector in &vectors {
            let docs = vector["docs"].as_str().expect("docs");
            let input = &vector["input"];
            let result = chain(&profile_set(input));
            let output = &vector["output"];
            // Not applicable: lock-exec has no IAM Identity Center (SSO) support. Those profiles must be refused
            // with an error saying so, whatever the vector expects (an SSO chain, or an SSO configuration error).
            let uses_sso = output["ProfileChain"][0].get("Sso").is_some()
                || output["Error"].as_str().is_some_and(|e| e.contains("sso_") || e.contains("sso-session"));
            // Vector errors that mean "not loaded" (the provider chain moves on): the selected profile is
            // missing or has no credentials. A source profile without credentials stays an error.
            let selected = input["selected_profile"].as_str().expect("selected_profile");
            let not_loaded = [
                format!("profile `{selected}` did not contain credential information"),
                "No profiles were defined".into(),
            ];
            let outcome = match (&result, output["Error"].as_str()) {
                (Err(e), _) if uses_sso => {
                    if e.to_string().contains("(SSO) profiles are not supported") {
                        not_applicable += 1;
                        continue;
                    }
                    Err(format!("SSO profile gave {e}"))
                }
                (Ok(Some(chain)), None) if to_json(chain) == output["ProfileChain"] => Ok(()),
                (Ok(None), Some(wanted)) if not_loaded.iter().any(|n| n == wanted) => Ok(()),
                (Err(e), Some(wanted)) if e.to_string().contains(wanted) => Ok(()),
                (result, _) => Err(format!("got {result:?}")),
            };
            match outcome {
                Ok(()) => passed += 1,
                Err(why) => failures.push(format!("{docs}: expected {output}\n    {why}")),
            }
        }
        assert!(failures.is_empty(), "failing vectors:\n{}", failures.join("\n"));
        assert_eq!(vectors.len(), 28);
        assert_eq!(not_applicable, 6, "the SSO vectors");
        assert_eq!(passed, 22, "every vector that applies passes");
    }

    fn chain_of(config: &str, selected: &str) -> Result<Option<ProfileChain>, Error> {
        chain(&ProfileSet::parse(Some((Path::new("/c"), config)), None, selected).expect("config parses"))
    }

    /// The chain as `base_profile: base -> role(profile) -> ...`, or the error's text, or `none`.
    fn describe(config: &str, selected: &str) -> String {
        describe_chain(chain_of(config, selected))
    }

    fn describe_chain(chain: Result<Option<ProfileChain>, Error>) -> String {
        match chain {
            Ok(None) => "none".into(),
            Err(e) => e.to_string(),
            Ok(Some(chain)) => {
                let base = match &chain.base {
                    Base::AccessKey(c) => format!("keys {}", c.access_key_id()),
                    Base::WebIdentity { role_arn, .. } => format!("web identity {role_arn}"),
                    Base::Process { command } => format!("process {}", command.0),
                    Base::NamedSource(source) => format!("source {}", source.as_str()),
                };
                let steps = chain.steps.iter().map(|s| {
                    let duration = s.duration_seconds.map(|d| format!(" {d}s")).unwrap_or_default();
                    format!(" -> {}({}){duration}", s.role_arn, s.profile)
                });
                format!("{}: {base}{}", chain.base_profile, steps.collect::<String>())
            }
        }
    }

    fn check(config: &str, expected: &str) {
        assert_eq!(describe(config, "a"), expected, "config:\n{config}");
    }

    #[test]
    fn chain_table() {
        check("[profile b]\naws_access_key_id = k\naws_secret_access_key = s", "none");
        check("[profile a]\nregion = us-east-1", "none");
        check("[profile a]\ncredential_process = /bin/creds --json", "a: process /bin/creds --json");
        check("[profile a]\naws_access_key_id = k\naws_secret_access_key = s\naws_session_token =", "a: keys k");
        check(
            "[profile a]\nrole_arn = r\ncredential_source = EcsContainer\nduration_seconds = 3600",
            "a: source EcsContainer -> r(a) 3600s",
        );
        check(
            "[profile a]\nrole_arn = r\nsource_profile = b\n[profile b]\ncredential_process = p",
            "b: process p -> r(a)",
        );
        check(
            "[profile a]\nrole_arn = r\ncredential_source = environment",
            "credentials from profile: unknown credential_source `environment`, expected Environment, \
             Ec2InstanceMetadata or EcsContainer (profile `a`)",
        );
        check(
            "[profile a]\nrole_arn = r\ncredential_source = Environment\nduration_seconds = 1h",
            "credentials from profile: duration_seconds must be a whole number of seconds from 900 to 43200, not \
             `1h` (profile `a`)",
        );
        check(
            "[profile a]\nrole_arn = r\nsource_profile = b\n[profile b]\nrole_arn = r2\nsource_profile = c\n\
             [profile c]\nrole_arn = r3\nsource_profile = b",
            "credentials from profile: profile formed an infinite loop: a -> b -> c -> b",
        );
        check(
            "[profile a]\nrole_arn = r\nsource_profile = a",
            "credentials from profile: profile `a` names itself as source_profile but did not contain credential \
             information (aws_access_key_id, aws_secret_access_key)",
        );
        check(
            "[profile a]\nrole_arn = r\nsource_profile = b\n[profile b]\nregion = x",
            "credentials from profile: profile `b` did not contain credential information, but profile `a` names \
             it as source_profile",
        );
    }

    #[test]
    fn errors_and_debug_never_show_secrets() {
        let config = "[profile a]\nrole_arn = r\nsource_profile = b\n[profile b]\naws_access_key_id = AKID\n\
                      aws_secret_access_key = SECRETKEY\naws_session_token = SESSIONTOKEN\n";
        let chain = chain_of(config, "a").expect("valid").expect("configured");
        let debug = format!("{chain:?}");
        assert!(debug.contains("AKID"), "{debug}");
        assert!(!debug.contains("SECRETKEY") && !debug.contains("SESSIONTOKEN"), "{debug}");

        let partial = "[profile a]\naws_secret_access_key = SECRETKEY\naws_session_token = SESSIONTOKEN\n";
        let error = chain_of(partial, "a").expect_err("no access key id");
        let shown = format!("{error} {error:?}");
        assert!(shown.contains("profile missing aws_access_key_id"), "{shown}");
        assert!(!shown.contains("SECRETKEY") && !shown.contains("SESSIONTOKEN"), "{shown}");
    }

    /// The profile part of the default-credential-provider-chain fixtures: files found through the environment,
    /// loaded with [`ProfileSet::load`], turned into a chain. (Fetching is other modules' business.)
    #[test]
    fn default_chain_fixtures() {
        let cases = [
            ("profile_static_keys", "default: keys correct_key"),
            ("profile_static_keys_case_insensitive", "default: keys correct_key"),
            ("profile_name", "some-thing:long/the_one%only.foo@bar+: keys correct_key"),
            ("ecs_credentials_invalid_profile", "none"),
            ("imds_config_with_no_creds", "none"),
            (
                "ecs_assume_role",
                "default: source EcsContainer -> arn:aws:iam::130633740322:role/imds-chained-role-test(default)",
            ),
            (
                "imds_assume_role",
                "default: source Ec2InstanceMetadata -> arn:aws:iam::130633740322:role/imds-chained-role-test(default)",
            ),
            ("web_identity_token_profile", "A: web identity arn:aws:iam::1234567890123:role/RoleA"),
            (
                "web_identity_token_source_profile",
                "B: web identity arn:aws:iam::123456789012:role/s3-reader -> arn:aws:iam::123456789:role/RoleA(A)",
            ),
            (
                "web_identity_source_profile_no_env",
                "credentials from profile: `web_identity_token_file` was specified but `role_arn` was missing \
                 (profile `B`)",
            ),
            ("profile_overrides_web_identity", "A: source Environment -> arn:aws:iam::123456789:role/RoleA(A)"),
            ("prefer_environment", "base: keys AKIAFAKE -> arn:aws:iam::123456789:role/integration-test(default)"),
        ];
        let Some(root) = crate::conformance_data() else { return };
        for (case, expected) in cases {
            let folder = root.join("default-credential-provider-chain").join(case);
            let env_json = std::fs::read_to_string(folder.join("env.json")).expect("fixture env.json");
            let vars: std::collections::BTreeMap<String, String> =
                serde_json::from_str(&env_json).expect("env.json maps names to strings");
            let pairs: Vec<(String, String)> = vars.into_iter().collect();
            let env = crate::env::Env::from_pairs(&pairs).with_fs_root(folder.join("fs"));
            let profiles = ProfileSet::load(&env, None).expect("fixture files parse");
            assert_eq!(describe_chain(chain(&profiles)), expected, "fixture {case}");
        }
    }
}
