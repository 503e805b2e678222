//! Region and endpoint resolution for DynamoDB, and the regional endpoints of DynamoDB and STS.
//!
//! DynamoDB endpoint, first found: `--endpoint-url`; unless `AWS_IGNORE_CONFIGURED_ENDPOINT_URLS=true`:
//! `AWS_ENDPOINT_URL_DYNAMODB`, `AWS_ENDPOINT_URL`, the profile's `services` section `dynamodb.endpoint_url`,
//! the profile's `endpoint_url`; then the regional endpoint ([`regional`]) in the region's partition, with
//! `AWS_USE_FIPS_ENDPOINT` / `use_fips_endpoint` (`dynamodb-fips.`) and `AWS_USE_DUALSTACK_ENDPOINT` /
//! `use_dualstack_endpoint` (the partition's dual-stack suffix).
//!
//! The partitions are those of the AWS SDKs' `partitions.json` (region patterns, global region names and DNS
//! suffixes); a region that matches none belongs to `aws`, as in the SDKs.
//!
//! [`check_settings`] refuses, before any request, every endpoint URL of the run that holds a user name or
//! password, whether the run would use it or not, and proxy settings lock-exec cannot use.

use crate::aws::proxy::{Proxies, endpoint_for_messages, has_userinfo};
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
    /// The `services` section's `sts` `endpoint_url` (checked here; resolved by the STS code).
    pub sts_service: Option<String>,
}

/// Refuses what must never reach a request, before the first one: a proxy URL lock-exec cannot use
/// ([`Proxies::check`]), and a user name or password in any endpoint URL the run reads, for DynamoDB or STS,
/// whether the run will call that service or not (`AWS_ENDPOINT_URL_DYNAMODB`, `AWS_ENDPOINT_URL_STS`,
/// `AWS_ENDPOINT_URL`, the profile's `endpoint_url` and its `services` `dynamodb` / `sts` `endpoint_url`; the
/// environment and profile ones unless configured endpoints are ignored). Exit 78; the message names where the URL
/// came from and shows it without the user name and password. (`--endpoint-url` is checked by the command line
/// parser, exit 64.)
pub fn check_settings(env: &Env, profile: &ProfileEndpoints) -> Result<(), Error> {
    Proxies::from_env(env).check()?;
    if ignore_configured(env, profile.ignore_configured) {
        return Ok(());
    }
    let from_env = ["AWS_ENDPOINT_URL_DYNAMODB", "AWS_ENDPOINT_URL_STS", "AWS_ENDPOINT_URL"]
        .into_iter()
        .filter_map(|name| Some((name, env.var(name)?)));
    let from_profile = [
        ("the profile's services dynamodb endpoint_url", &profile.service),
        ("the profile's services sts endpoint_url", &profile.sts_service),
        ("the profile's endpoint_url", &profile.global),
    ]
    .into_iter()
    .filter_map(|(origin, url)| Some((origin, url.clone()?)));
    for (origin, url) in from_env.chain(from_profile) {
        if has_userinfo(&url) {
            return Err(Error::Config(format!(
                "{origin}: endpoint URL {:?} holds a user name or password (user:password@): not allowed; remove it",
                endpoint_for_messages(&url)
            )));
        }
    }
    Ok(())
}

/// The DynamoDB endpoint URL, without a trailing slash.
pub fn dynamodb(flag: Option<&str>, env: &Env, profile: &ProfileEndpoints, region: &str) -> Result<String, Error> {
    let configured = if let Some(url) = flag {
        Some(("--endpoint-url", url.to_owned()))
    } else if ignore_configured(env, profile.ignore_configured) {
        None
    } else {
        let var = |name: &'static str| env.var(name).map(|url| (name, url));
        var("AWS_ENDPOINT_URL_DYNAMODB")
            .or_else(|| var("AWS_ENDPOINT_URL"))
            .or_else(|| profile.service.clone().map(|url| ("the profile's services dynamodb endpoint_url", url)))
            .or_else(|| profile.global.clone().map(|url| ("the profile's endpoint_url", url)))
    };
    if let Some((origin, url)) = configured {
        return checked_url_from(origin, &url).map(|url| url.trim_end_matches('/').to_owned());
    }
    let fips = bool_setting(env, "AWS_USE_FIPS_ENDPOINT", profile.fips)?;
    let dualstack = bool_setting(env, "AWS_USE_DUALSTACK_ENDPOINT", profile.dualstack)?;
    Ok(regional("dynamodb", region, fips, dualstack))
}

/// An AWS partition: its name and DNS suffixes, from the SDKs' `partitions.json`. Every partition there supports
/// FIPS and dual-stack (`supportsFIPS`, `supportsDualStack`), each with its own dual-stack suffix, so every
/// combination has a host; should a partition without them be added, [`regional`] must refuse the combination
/// as the SDK endpoint rules do ("FIPS is enabled but this partition does not support FIPS").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partition {
    /// `aws`, `aws-cn`, ...
    pub name: &'static str,
    /// The regular DNS suffix.
    pub dns_suffix: &'static str,
    /// The dual-stack (IPv4 and IPv6) DNS suffix.
    pub dual_stack_dns_suffix: &'static str,
}

/// The partitions, their region patterns and their global region name (listed by name in `partitions.json` and
/// matched before any pattern): each pattern is `prefix-WORD-DIGITS` (the regular expressions
/// `^(us|eu|...)\-\w+\-\d+$`, `^cn\-\w+\-\d+$`, `^us\-iso\-\w+\-\d+$`, ...).
const PARTITIONS: [(&[&str], Option<&str>, Partition); 8] = [
    (
        &["us", "eu", "ap", "sa", "ca", "me", "af", "il", "mx"],
        Some("aws-global"),
        Partition { name: "aws", dns_suffix: "amazonaws.com", dual_stack_dns_suffix: "api.aws" },
    ),
    (
        &["cn"],
        Some("aws-cn-global"),
        Partition {
            name: "aws-cn",
            dns_suffix: "amazonaws.com.cn",
            dual_stack_dns_suffix: "api.amazonwebservices.com.cn",
        },
    ),
    (
        &["eusc-de"],
        None,
        Partition { name: "aws-eusc", dns_suffix: "amazonaws.eu", dual_stack_dns_suffix: "api.amazonwebservices.eu" },
    ),
    (
        &["us-iso"],
        Some("aws-iso-global"),
        Partition { name: "aws-iso", dns_suffix: "c2s.ic.gov", dual_stack_dns_suffix: "api.aws.ic.gov" },
    ),
    (
        &["us-isob"],
        Some("aws-iso-b-global"),
        Partition { name: "aws-iso-b", dns_suffix: "sc2s.sgov.gov", dual_stack_dns_suffix: "api.aws.scloud" },
    ),
    (
        &["eu-isoe"],
        Some("aws-iso-e-global"),
        Partition { name: "aws-iso-e", dns_suffix: "cloud.adc-e.uk", dual_stack_dns_suffix: "api.cloud-aws.adc-e.uk" },
    ),
    (
        &["us-isof"],
        Some("aws-iso-f-global"),
        Partition { name: "aws-iso-f", dns_suffix: "csp.hci.ic.gov", dual_stack_dns_suffix: "api.aws.hci.ic.gov" },
    ),
    (
        &["us-gov"],
        Some("aws-us-gov-global"),
        Partition { name: "aws-us-gov", dns_suffix: "amazonaws.com", dual_stack_dns_suffix: "api.aws" },
    ),
];

/// The partition of `region`: the one that names it as its global region, else the first whose pattern matches,
/// else `aws` (as the SDKs fall back).
pub fn partition(region: &str) -> Partition {
    known_partition(region).unwrap_or(PARTITIONS[0].2)
}

/// Whether `region` has the form of a region of some partition (`eu-west-1`, `cn-north-1`, `aws-global`): a typo
/// such as `us-east1` matches none and, as in the SDKs, is sent to an `aws` host that does not exist.
pub fn known_region(region: &str) -> bool {
    known_partition(region).is_some()
}

/// The region's partition, by its global name or its pattern; `None` when none matches.
fn known_partition(region: &str) -> Option<Partition> {
    if let Some((_, _, partition)) = PARTITIONS.iter().find(|(_, global, _)| *global == Some(region)) {
        return Some(*partition);
    }
    let matches = |prefix: &str| {
        let Some(rest) = region.strip_prefix(prefix).and_then(|r| r.strip_prefix('-')) else { return false };
        let Some((word, digits)) = rest.split_once('-') else { return false };
        !word.is_empty()
            && word.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            && !digits.is_empty()
            && digits.bytes().all(|b| b.is_ascii_digit())
    };
    PARTITIONS.iter().find(|(prefixes, _, _)| prefixes.iter().any(|p| matches(p))).map(|(_, _, partition)| *partition)
}

/// The regional endpoint of `service` (`dynamodb`, `sts`) as the SDKs' endpoint rules build it:
/// `https://SERVICE[-fips].REGION.SUFFIX`, the suffix dual-stack or not. In GovCloud the regular endpoints are
/// already FIPS endpoints, so FIPS without dual-stack keeps the plain name there.
pub fn regional(service: &str, region: &str, fips: bool, dualstack: bool) -> String {
    let partition = partition(region);
    let suffix = if dualstack { partition.dual_stack_dns_suffix } else { partition.dns_suffix };
    let govcloud_plain = partition.name == "aws-us-gov" && !dualstack;
    let fips_name = fips && !govcloud_plain;
    let name = if fips_name { format!("{service}-fips") } else { service.to_owned() };
    format!("https://{name}.{region}.{suffix}")
}

/// Whether configured endpoint URLs (environment and profile) are ignored:
/// `AWS_IGNORE_CONFIGURED_ENDPOINT_URLS` when set, else the profile's `ignore_configured_endpoint_urls`.
pub fn ignore_configured(env: &Env, profile: Option<bool>) -> bool {
    match env.var("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS") {
        Some(value) => value.eq_ignore_ascii_case("true"),
        None => profile.unwrap_or(false),
    }
}

/// A boolean setting: the variable `var` (`true` / `false`, anything else is an error) when set, else the
/// profile's value, else false.
pub fn bool_setting(env: &Env, var: &str, profile: Option<bool>) -> Result<bool, Error> {
    match env.var(var) {
        Some(v) if v.eq_ignore_ascii_case("true") => Ok(true),
        Some(v) if v.eq_ignore_ascii_case("false") => Ok(false),
        Some(v) => Err(Error::Config(format!("{var}={v:?}: expected true or false"))),
        None => Ok(profile.unwrap_or(false)),
    }
}

/// Endpoints must be `http://` or `https://` URLs with a host and without a user name or password (they would be
/// sent nowhere useful and printed in messages). The error never quotes the user name or password.
pub fn check_url(url: &str) -> Result<(), Error> {
    url_problem(url).map_or(Ok(()), |problem| Err(Error::Config(problem)))
}

/// A checked endpoint URL with its scheme and host in lower case (both are case-insensitive; the static build's
/// C library matches `/etc/hosts` names case-sensitively, and the rest of lock-exec compares schemes as written).
pub fn checked_url(url: &str) -> Result<String, Error> {
    check_url(url)?;
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let end = rest.find('/').unwrap_or(rest.len());
    let authority = &rest[..end];
    // An IPv6 zone (`%eth0`) names an interface, whose case matters; RFC 6874 writes its `%` as `%25`.
    let (lower, zone) = match (authority.find('%'), authority.find(']')) {
        (Some(percent), Some(close)) if percent < close => (&authority[..percent], &authority[percent..]),
        _ => (authority, ""),
    };
    let zone = zone.strip_prefix("%25").map_or_else(|| zone.to_owned(), |name| format!("%{name}"));
    Ok(format!("{}://{}{zone}{}", scheme.to_ascii_lowercase(), lower.to_ascii_lowercase(), &rest[end..]))
}

/// [`checked_url`] of a URL read from `origin` (a flag, a variable, a profile setting), whose errors name it.
pub fn checked_url_from(origin: &str, url: &str) -> Result<String, Error> {
    checked_url(url).map_err(|e| match e {
        Error::Config(message) => Error::Config(format!("{origin}: {message}")),
        other => other,
    })
}

/// What is wrong with an endpoint URL, if anything (see [`check_url`]): the scheme (`http` or `https`, any
/// case), a host (a name, an IPv4 address or a bracketed IPv6 address), a port of 1-65535 if any, a path if any,
/// no query or fragment.
pub fn url_problem(url: &str) -> Option<String> {
    let shown = endpoint_for_messages(url);
    if has_userinfo(url) {
        return Some(format!(
            "endpoint URL {shown:?} holds a user name or password (user:password@): not allowed; remove it"
        ));
    }
    let invalid = |why: &str| Some(format!("invalid endpoint URL {shown:?}: {why}"));
    let Some((scheme, rest)) = url.split_once("://") else {
        return invalid("expected http://host[:port] or https://host[:port]");
    };
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return invalid("expected http://host[:port] or https://host[:port]");
    }
    if rest.contains(['?', '#']) {
        return invalid("a query or fragment (?, #) is not allowed");
    }
    let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
    if let Some(problem) = path_problem(&rest[authority.len()..]) {
        return invalid(&problem);
    }
    let port = match authority.strip_prefix('[') {
        Some(inside) => {
            let Some((address, after)) = inside.split_once(']') else {
                return invalid("the IPv6 address has no closing ]");
            };
            // A link-local address may name its interface: `[fe80::1%eth0]`.
            let (ip, zone) = address.split_once('%').map_or((address, None), |(ip, zone)| (ip, Some(zone)));
            if ip.parse::<std::net::Ipv6Addr>().is_err()
                || zone.is_some_and(|zone| {
                    zone.is_empty() || !zone.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
                })
            {
                return invalid(&format!("{address:?} is not an IPv6 address"));
            }
            match after {
                "" => None,
                _ => match after.strip_prefix(':') {
                    Some(port) => Some(port),
                    None => return invalid("only :port may follow the ] of an IPv6 address"),
                },
            }
        }
        None if authority.matches(':').count() > 1 => {
            return invalid("an IPv6 address goes in brackets (http://[::1]:8000)");
        }
        None => {
            let (host, port) = authority.split_once(':').map_or((authority, None), |(h, p)| (h, Some(p)));
            if host.is_empty() {
                return invalid("no host (expected http://host[:port] or https://host[:port])");
            }
            if let Some(bad) = host.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))) {
                return invalid(&format!("the host holds {bad:?} (letters, digits, -, . and _ only)"));
            }
            if !host.bytes().any(|b| b.is_ascii_alphanumeric()) {
                return invalid(&format!("{host:?} is not a host name"));
            }
            port
        }
    };
    match port {
        Some(port) if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) => {
            invalid(&format!("port {port:?} is not a number from 1 to 65535"))
        }
        Some(port) if !matches!(port.parse::<u16>(), Ok(1..)) => {
            invalid(&format!("port {port} is not a number from 1 to 65535"))
        }
        _ => None,
    }
}

/// What is wrong with an endpoint URL's path, if anything: only the characters a URI path may hold, and `%`
/// followed by two hex digits.
fn path_problem(path: &str) -> Option<String> {
    let bytes = path.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if bytes.get(i + 1..i + 3).is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit)) => i += 3,
            b'%' => return Some("the path holds a % not followed by two hex digits".into()),
            b if b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/".contains(&b) => i += 1,
            _ => {
                let bad = path[i..].chars().next().unwrap_or_default();
                return Some(format!("the path holds {bad:?} (percent-encode it)"));
            }
        }
    }
    None
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
            "error: --endpoint-url: invalid endpoint URL \"localhost:8000\": expected http://host[:port] or \
             https://host[:port]",
        );
        // A URL from a variable or the profile is reported under its name (issue 11).
        let bad = "127.0.0.1:53453";
        let expected = |origin: &str| {
            format!(
                "error: {origin}: invalid endpoint URL \"{bad}\": expected http://host[:port] or https://host[:port]"
            )
        };
        check(None, &[("AWS_ENDPOINT_URL", bad)], none(), "r", &expected("AWS_ENDPOINT_URL"));
        check(None, &[("AWS_ENDPOINT_URL_DYNAMODB", bad)], none(), "r", &expected("AWS_ENDPOINT_URL_DYNAMODB"));
        let global = ProfileEndpoints { global: Some(bad.into()), ..none() };
        check(None, &[], global, "r", &expected("the profile's endpoint_url"));
        let service = ProfileEndpoints { service: Some(bad.into()), ..none() };
        check(None, &[], service, "r", &expected("the profile's services dynamodb endpoint_url"));
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
    fn region_typos_match_no_partition() {
        for region in ["us-east-1", "eu-central-2", "cn-northwest-1", "us-gov-west-1", "aws-global", "il-central-1"] {
            assert!(known_region(region), "{region}");
        }
        for region in ["us-east1", "useast-1", "us_east_1", "local", "", "eu-west-", "xx-west-1"] {
            assert!(!known_region(region), "{region}");
        }
    }

    #[test]
    fn partitions_of_the_sdks() {
        fn check(region: &str, fips: bool, dualstack: bool, expected: &str) {
            assert_eq!(regional("sts", region, fips, dualstack), expected, "{region} fips {fips} dual {dualstack}");
        }
        check("eu-west-1", false, false, "https://sts.eu-west-1.amazonaws.com");
        check("il-central-1", true, false, "https://sts-fips.il-central-1.amazonaws.com");
        check("us-east-1", true, true, "https://sts-fips.us-east-1.api.aws");
        check("cn-north-1", false, true, "https://sts.cn-north-1.api.amazonwebservices.com.cn");
        check("us-gov-west-1", true, false, "https://sts.us-gov-west-1.amazonaws.com");
        check("us-gov-west-1", true, true, "https://sts-fips.us-gov-west-1.api.aws");
        check("us-iso-east-1", false, false, "https://sts.us-iso-east-1.c2s.ic.gov");
        check("us-isob-east-1", true, false, "https://sts-fips.us-isob-east-1.sc2s.sgov.gov");
        check("eu-isoe-west-1", false, true, "https://sts.eu-isoe-west-1.api.cloud-aws.adc-e.uk");
        check("us-isof-south-1", false, false, "https://sts.us-isof-south-1.csp.hci.ic.gov");
        check("eusc-de-east-1", false, false, "https://sts.eusc-de-east-1.amazonaws.eu");
        check("eusc-de-east-1", false, true, "https://sts.eusc-de-east-1.api.amazonwebservices.eu");
        // No partition matches: the aws partition, as in the SDKs.
        check("xx-made-up-1", false, false, "https://sts.xx-made-up-1.amazonaws.com");
        check("eusc-fr-east-1", false, false, "https://sts.eusc-fr-east-1.amazonaws.com");
        assert_eq!(partition("us-isob-west-1").name, "aws-iso-b");
        assert_eq!(partition("us-iso-west-1").name, "aws-iso");
        assert_eq!(partition("us-east-1a").name, "aws");
        assert_eq!(
            regional("dynamodb", "us-isof-east-1", true, false),
            "https://dynamodb-fips.us-isof-east-1.csp.hci.ic.gov"
        );
    }

    #[test]
    fn fips_and_dual_stack_hosts_of_every_partition() {
        fn check(region: &str, fips: bool, dualstack: bool, expected: &str) {
            assert_eq!(regional("sts", region, fips, dualstack), expected, "{region} fips {fips} dual {dualstack}");
        }
        // (region, plain, FIPS, dual-stack, both), as the SDKs' STS and DynamoDB rules build them from
        // partitions.json (every partition there supports FIPS and dual-stack).
        let table = [
            (
                "us-east-1",
                "sts.us-east-1.amazonaws.com",
                "sts-fips.us-east-1.amazonaws.com",
                "sts.us-east-1.api.aws",
                "sts-fips.us-east-1.api.aws",
            ),
            (
                "cn-north-1",
                "sts.cn-north-1.amazonaws.com.cn",
                "sts-fips.cn-north-1.amazonaws.com.cn",
                "sts.cn-north-1.api.amazonwebservices.com.cn",
                "sts-fips.cn-north-1.api.amazonwebservices.com.cn",
            ),
            (
                "us-gov-east-1",
                "sts.us-gov-east-1.amazonaws.com",
                "sts.us-gov-east-1.amazonaws.com",
                "sts.us-gov-east-1.api.aws",
                "sts-fips.us-gov-east-1.api.aws",
            ),
            (
                "us-iso-east-1",
                "sts.us-iso-east-1.c2s.ic.gov",
                "sts-fips.us-iso-east-1.c2s.ic.gov",
                "sts.us-iso-east-1.api.aws.ic.gov",
                "sts-fips.us-iso-east-1.api.aws.ic.gov",
            ),
            (
                "us-isob-east-1",
                "sts.us-isob-east-1.sc2s.sgov.gov",
                "sts-fips.us-isob-east-1.sc2s.sgov.gov",
                "sts.us-isob-east-1.api.aws.scloud",
                "sts-fips.us-isob-east-1.api.aws.scloud",
            ),
            (
                "eu-isoe-west-1",
                "sts.eu-isoe-west-1.cloud.adc-e.uk",
                "sts-fips.eu-isoe-west-1.cloud.adc-e.uk",
                "sts.eu-isoe-west-1.api.cloud-aws.adc-e.uk",
                "sts-fips.eu-isoe-west-1.api.cloud-aws.adc-e.uk",
            ),
            (
                "us-isof-south-1",
                "sts.us-isof-south-1.csp.hci.ic.gov",
                "sts-fips.us-isof-south-1.csp.hci.ic.gov",
                "sts.us-isof-south-1.api.aws.hci.ic.gov",
                "sts-fips.us-isof-south-1.api.aws.hci.ic.gov",
            ),
            (
                "eusc-de-east-1",
                "sts.eusc-de-east-1.amazonaws.eu",
                "sts-fips.eusc-de-east-1.amazonaws.eu",
                "sts.eusc-de-east-1.api.amazonwebservices.eu",
                "sts-fips.eusc-de-east-1.api.amazonwebservices.eu",
            ),
        ];
        for (region, plain, fips, dual, both) in table {
            check(region, false, false, &format!("https://{plain}"));
            check(region, true, false, &format!("https://{fips}"));
            check(region, false, true, &format!("https://{dual}"));
            check(region, true, true, &format!("https://{both}"));
        }
    }

    #[test]
    fn global_regions_belong_to_their_partitions() {
        // partitions.json lists each partition's global pseudo-region by name; names are matched before patterns.
        for (region, expected) in [
            ("aws-global", "aws"),
            ("aws-cn-global", "aws-cn"),
            ("aws-us-gov-global", "aws-us-gov"),
            ("aws-iso-global", "aws-iso"),
            ("aws-iso-b-global", "aws-iso-b"),
            ("aws-iso-e-global", "aws-iso-e"),
            ("aws-iso-f-global", "aws-iso-f"),
        ] {
            assert_eq!(partition(region).name, expected, "{region}");
        }
    }

    #[test]
    fn malformed_endpoint_urls_are_config_errors_naming_the_problem() {
        for (url, problem) in [
            ("http://127.0.0.1:99999", "port 99999 is not a number from 1 to 65535"),
            ("https://127.0.0.1:0/", "port 0 is not"),
            ("http://127.0.0.1:abc", "port \"abc\" is not a number"),
            ("http://127.0.0.1:49067x", "port \"49067x\""),
            ("http://127.0.0.1:", "port \"\" is not"),
            ("http://127.0.0.1:+80", "port \"+80\""),
            ("http://:49067", "no host"),
            ("http://", "no host"),
            ("http://::1:49067", "an IPv6 address goes in brackets"),
            ("http://[::1:49067", "no closing ]"),
            ("http://[::1]x:49067", "only :port may follow"),
            ("http://[nope]:1", "\"nope\" is not an IPv6 address"),
            ("http://127.0.0.1 :49067", "the host holds ' '"),
            ("http://127.0.0.1:49067:80", "an IPv6 address goes in brackets"),
            ("http://h:1/?x=1", "a query or fragment"),
            ("ftp://h", "expected http://host[:port]"),
            ("localhost:8000", "expected http://host[:port]"),
        ] {
            let e = check_url(url).expect_err(url);
            assert_eq!(e.exit(), crate::exit::Exit::Config, "{url}");
            let message = e.to_string();
            assert!(message.starts_with(&format!("invalid endpoint URL {url:?}: ")), "{url}: {message}");
            assert!(message.contains(problem), "{url}: {message}");
        }
        for (url, problem) in [
            ("http://127.0.0.1:8000/p q", "the path holds ' ' (percent-encode it)"),
            ("http://127.0.0.1:8000/%", "a % not followed by two hex digits"),
            ("http://127.0.0.1:8000/%4", "a % not followed by two hex digits"),
            ("http://.:8000", "\".\" is not a host name"),
            ("http://[fe80::1%]:1", "is not an IPv6 address"),
        ] {
            let message = check_url(url).expect_err(url).to_string();
            assert!(message.contains(problem), "{url}: {message}");
        }
        for url in [
            "http://127.0.0.1:65535",
            "https://[::1]:8000/",
            "http://[::1]",
            "https://dynamodb.x_y.local/p",
            "http://[fe80::1%eth0]:8000",
            "http://h:1/a%2Fb/~x",
            "https://dynamodb.us-east-1.amazonaws.com.",
        ] {
            assert!(check_url(url).is_ok(), "{url}");
        }
    }

    #[test]
    fn endpoint_schemes_and_hosts_are_lower_cased() {
        assert_eq!(checked_url("HTTP://EMU:8000/Path").ok().as_deref(), Some("http://emu:8000/Path"));
        assert_eq!(checked_url("Https://[::1]:1").ok().as_deref(), Some("https://[::1]:1"));
        assert_eq!(checked_url("http://[FE80::1%Eth0]:1/").ok().as_deref(), Some("http://[fe80::1%Eth0]:1/"));
        assert_eq!(checked_url("http://[fe80::1%25eth0]:1").ok().as_deref(), Some("http://[fe80::1%eth0]:1"));
        let env = Env::from_pairs(&[("AWS_ENDPOINT_URL", "HTTP://Local-Emu:8000/")]);
        let url = dynamodb(None, &env, &ProfileEndpoints::default(), "us-east-1").ok();
        assert_eq!(url.as_deref(), Some("http://local-emu:8000"));
    }

    #[test]
    fn userinfo_is_refused_and_not_shown() {
        let e = check_url("http://someone:pass-WORD@127.0.0.1:1/").expect_err("refused");
        let message = e.to_string();
        assert!(message.contains("user name or password") && message.contains("http://127.0.0.1:1/"), "{message}");
        assert!(!message.contains("pass-WORD") && !message.contains("someone"), "{message}");
        assert_eq!(e.exit(), crate::exit::Exit::Config);
        let e = check_url("ftp://u:secret@h/").expect_err("refused");
        assert!(!e.to_string().contains("secret"), "{e}");
        // An `@` after the host cannot be told from a password holding an unencoded `/` (`http://u:12/3@h/`
        // reads as host `u`, port 12): refused as well, and nothing before the last `@` is shown.
        for url in ["http://127.0.0.1:8000/path@x", "http://u:12/pass-WORD@127.0.0.1:1/"] {
            let message = check_url(url).expect_err("refused").to_string();
            assert!(message.contains("user name or password") && !message.contains("pass-WORD"), "{message}");
        }
    }

    #[test]
    fn userinfo_in_any_endpoint_url_is_refused_before_use() {
        fn check(vars: &[(&str, &str)], profile: ProfileEndpoints, expected: Result<(), &str>) {
            let got = check_settings(&Env::from_pairs(vars), &profile).map_err(|e| e.to_string());
            match (&got, expected) {
                (Ok(()), Ok(())) => {}
                (Err(message), Err(start)) => {
                    assert!(message.starts_with(start), "{vars:?}: {message}");
                    assert!(message.contains("http://127.0.0.1:9/") && !message.contains("pw-4"), "{message}");
                }
                _ => panic!("{vars:?} {profile:?}: expected {expected:?}, got {got:?}"),
            }
        }
        let bad = "http://user:pw-4@127.0.0.1:9/";
        let none = ProfileEndpoints::default;
        check(&[("AWS_ENDPOINT_URL_STS", bad)], none(), Err("AWS_ENDPOINT_URL_STS: endpoint URL"));
        check(&[("AWS_ENDPOINT_URL_DYNAMODB", bad)], none(), Err("AWS_ENDPOINT_URL_DYNAMODB: endpoint URL"));
        check(
            &[("AWS_ENDPOINT_URL_DYNAMODB", "http://ok"), ("AWS_ENDPOINT_URL", bad)],
            none(),
            Err("AWS_ENDPOINT_URL: endpoint URL"),
        );
        let sts = ProfileEndpoints { sts_service: Some(bad.into()), ..none() };
        check(&[], sts.clone(), Err("the profile's services sts endpoint_url: endpoint URL"));
        let global = ProfileEndpoints { global: Some(bad.into()), ..none() };
        check(&[], global, Err("the profile's endpoint_url: endpoint URL"));
        let service = ProfileEndpoints { service: Some(bad.into()), ..none() };
        check(&[], service, Err("the profile's services dynamodb endpoint_url: endpoint URL"));
        // Ignored settings are never used: nothing to refuse.
        check(&[("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "true"), ("AWS_ENDPOINT_URL_STS", bad)], sts, Ok(()));
        // Only userinfo is refused in a URL the run may not use; its form is checked when it is used.
        check(
            &[("AWS_ENDPOINT_URL_STS", "localhost:4566"), ("AWS_ENDPOINT_URL", "http://127.0.0.1:9")],
            none(),
            Ok(()),
        );
        let e = check_settings(&Env::from_pairs(&[("HTTPS_PROXY", "socks5://h:1")]), &none()).expect_err("socks");
        assert!(e.to_string().starts_with("HTTPS_PROXY=\"socks5://h:1\": SOCKS"), "{e}");
        assert_eq!(e.exit(), crate::exit::Exit::Config);
    }

    #[test]
    fn regions() {
        assert!(check_region("eu-west-1").is_ok());
        assert!(check_region("eu west").is_err());
        assert!(check_region("").is_err());
    }
}
