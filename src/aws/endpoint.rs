//! Region and endpoint resolution for DynamoDB.
//!
//! DynamoDB endpoint, first found: `--endpoint-url`; unless `AWS_IGNORE_CONFIGURED_ENDPOINT_URLS=true`:
//! `AWS_ENDPOINT_URL_DYNAMODB`, `AWS_ENDPOINT_URL`, the profile's `services` section `dynamodb.endpoint_url`,
//! the profile's `endpoint_url`; then `https://dynamodb.<region>.amazonaws.com` (`.amazonaws.com.cn` in
//! China), with `AWS_USE_FIPS_ENDPOINT` (`dynamodb-fips.`) and `AWS_USE_DUALSTACK_ENDPOINT` (`.api.aws`).

use crate::env::Env;
use crate::error::Error;

/// Endpoint settings read from the selected profile.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProfileEndpoints {
    /// The `services` section's `dynamodb` `endpoint_url`.
    pub service: Option<String>,
    /// The profile's own `endpoint_url`.
    pub global: Option<String>,
    /// The profile's `ignore_configured_endpoint_urls`.
    pub ignore_configured: Option<bool>,
    /// The profile's `use_fips_endpoint`.
    pub fips: Option<bool>,
    /// The profile's `use_dualstack_endpoint`.
    pub dualstack: Option<bool>,
}

/// The DynamoDB endpoint URL, without a trailing slash.
pub fn dynamodb(flag: Option<&str>, env: &Env, profile: &ProfileEndpoints, region: &str) -> Result<String, Error> {
    let configured = if let Some(url) = flag {
        Some(url.to_owned())
    } else if ignore_configured(env, profile.ignore_configured) {
        None
    } else {
        env.var("AWS_ENDPOINT_URL_DYNAMODB")
            .or_else(|| env.var("AWS_ENDPOINT_URL"))
            .or_else(|| profile.service.clone())
            .or_else(|| profile.global.clone())
    };
    if let Some(url) = configured {
        return check_url(&url).map(|()| url.trim_end_matches('/').to_owned());
    }
    let fips = bool_setting(env, "AWS_USE_FIPS_ENDPOINT", profile.fips)?;
    let dualstack = bool_setting(env, "AWS_USE_DUALSTACK_ENDPOINT", profile.dualstack)?;
    let service = if fips { "dynamodb-fips" } else { "dynamodb" };
    let suffix = match (dualstack, region.starts_with("cn-")) {
        (true, false) => "api.aws",
        (true, true) => "api.amazonwebservices.com.cn",
        (false, false) => "amazonaws.com",
        (false, true) => "amazonaws.com.cn",
    };
    Ok(format!("https://{service}.{region}.{suffix}"))
}

/// Whether configured endpoint URLs (environment and profile) are ignored:
/// `AWS_IGNORE_CONFIGURED_ENDPOINT_URLS` when set, else the profile's `ignore_configured_endpoint_urls`.
pub fn ignore_configured(env: &Env, profile: Option<bool>) -> bool {
    match env.var("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS") {
        Some(value) => value.eq_ignore_ascii_case("true"),
        None => profile.unwrap_or(false),
    }
}

fn bool_setting(env: &Env, var: &str, profile: Option<bool>) -> Result<bool, Error> {
    match env.var(var) {
        Some(v) if v.eq_ignore_ascii_case("true") => Ok(true),
        Some(v) if v.eq_ignore_ascii_case("false") => Ok(false),
        Some(v) => Err(Error::Config(format!("{var}={v:?}: expected true or false"))),
        None => Ok(profile.unwrap_or(false)),
    }
}

/// Endpoints must be `http://` or `https://` URLs with a host.
pub fn check_url(url: &str) -> Result<(), Error> {
    let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"));
    match rest {
        Some(rest) if !rest.is_empty() && !rest.starts_with('/') => Ok(()),
        _ => Err(Error::Config(format!("invalid endpoint URL {url:?}: expected http://host[:port] or https://host"))),
    }
}

/// A region name is letters, digits and dashes.
pub fn check_region(region: &str) -> Result<(), Error> {
    if !region.is_empty() && region.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        Ok(())
    } else {
        Err(Error::Config(format!("invalid region {region:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(flag: Option<&str>, vars: &[(&str, &str)], profile: ProfileEndpoints, region: &str, expected: &str) {
        let env = Env::from_pairs(vars);
        let got = dynamodb(flag, &env, &profile, region).unwrap_or_else(|e| format!("error: {e}"));
        assert_eq!(got, expected, "flag {flag:?} vars {vars:?} region {region}");
    }

    #[test]
    fn endpoints() {
        let none = ProfileEndpoints::default;
        check(None, &[], none(), "eu-west-1", "https://dynamodb.eu-west-1.amazonaws.com");
        check(None, &[], none(), "cn-north-1", "https://dynamodb.cn-north-1.amazonaws.com.cn");
        check(
            Some("http://127.0.0.1:8000/"),
            &[("AWS_ENDPOINT_URL_DYNAMODB", "http://x")],
            none(),
            "r",
            "http://127.0.0.1:8000",
        );
        check(
            None,
            &[("AWS_ENDPOINT_URL_DYNAMODB", "http://a"), ("AWS_ENDPOINT_URL", "http://b")],
            none(),
            "r",
            "http://a",
        );
        check(None, &[("AWS_ENDPOINT_URL", "http://b")], none(), "r", "http://b");
        let profile =
            ProfileEndpoints { service: Some("http://svc".into()), global: Some("http://glob".into()), ..none() };
        check(None, &[], profile.clone(), "r", "http://svc");
        check(None, &[("AWS_ENDPOINT_URL", "http://b")], profile.clone(), "r", "http://b");
        check(
            None,
            &[("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "true"), ("AWS_ENDPOINT_URL", "http://b")],
            profile,
            "us-east-1",
            "https://dynamodb.us-east-1.amazonaws.com",
        );
        check(
            None,
            &[("AWS_USE_FIPS_ENDPOINT", "true")],
            none(),
            "us-east-1",
            "https://dynamodb-fips.us-east-1.amazonaws.com",
        );
        check(
            None,
            &[("AWS_USE_DUALSTACK_ENDPOINT", "true")],
            none(),
            "us-east-1",
            "https://dynamodb.us-east-1.api.aws",
        );
        check(
            None,
            &[("AWS_USE_FIPS_ENDPOINT", "yes")],
            none(),
            "r",
            "error: AWS_USE_FIPS_ENDPOINT=\"yes\": expected true or false",
        );
        check(
            Some("localhost:8000"),
            &[],
            none(),
            "r",
            "error: invalid endpoint URL \"localhost:8000\": expected http://host[:port] or https://host",
        );
    }

    #[test]
    fn the_ignore_setting_covers_environment_and_profile() {
        let profile_ignores = ProfileEndpoints {
            global: Some("http://glob".into()),
            ignore_configured: Some(true),
            ..Default::default()
        };
        check(
            None,
            &[("AWS_ENDPOINT_URL", "http://b")],
            profile_ignores.clone(),
            "us-east-1",
            "https://dynamodb.us-east-1.amazonaws.com",
        );
        check(
            None,
            &[("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "false"), ("AWS_ENDPOINT_URL", "http://b")],
            profile_ignores.clone(),
            "r",
            "http://b",
        );
        check(Some("http://flag"), &[], profile_ignores, "r", "http://flag");
    }

    #[test]
    fn regions() {
        assert!(check_region("eu-west-1").is_ok());
        assert!(check_region("eu west").is_err());
        assert!(check_region("").is_err());
    }
}
