//! What every subcommand resolves before its first request: the profile files, the region, the DynamoDB endpoint,
//! the credential source, and the HTTP client (proxies, CA bundle).

use std::time::Duration;

use serde_json::Value;

use crate::aws::credentials::{self, Cache, Context, imds};
use crate::aws::endpoint::{self, ProfileEndpoints};
use crate::aws::http::{CA_BUNDLE_LIMIT, CaBundle, Http, host_of};
use crate::aws::profile::ProfileSet;
use crate::cli::Common;
use crate::clock::Skew;
use crate::dynamodb::{self, Client};
use crate::env::Env;
use crate::error::Error;
use crate::log::Logger;

/// A step of [`Aws::resolve`], in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Step {
    /// The profile files, the CA bundle, proxy and endpoint settings, `AWS_MAX_ATTEMPTS`.
    Settings,
    /// The region.
    Region,
    /// The DynamoDB endpoint.
    Endpoint,
    /// The credential source.
    Credentials,
}

/// Why [`Aws::resolve_steps`] stopped.
#[derive(Debug)]
pub struct Unresolved {
    /// The step that failed.
    pub step: Step,
    /// Its error.
    pub error: Error,
    /// The region, when it was resolved before the failure.
    pub region: Option<String>,
    /// The DynamoDB endpoint, when it was resolved before the failure.
    pub endpoint: Option<String>,
}

/// Region, endpoint and credentials of a run.
#[derive(Debug)]
pub struct Aws {
    /// The shared config and credentials files.
    pub profiles: ProfileSet,
    /// The signing region.
    pub region: String,
    /// The DynamoDB endpoint.
    pub endpoint: String,
    /// The credential source behind a cache.
    pub credentials: Cache,
    /// Attempts per call.
    pub max_attempts: u32,
    /// The HTTP client: proxies from the environment, TLS roots from the CA bundle if one is configured.
    pub http: Http,
    /// This process's clock skew estimate, narrowed by every DynamoDB answer.
    pub skew: Skew,
    /// `--max-clock-skew`: beyond half of it the skew is warned about (once).
    pub max_clock_skew: Duration,
    /// Certificates of the CA bundle left out as unusable (warned about with the endpoints).
    pub ca_bundle_skipped: Vec<String>,
}

impl Aws {
    /// Reads the profile files, resolves region and endpoint, and selects the credential source. Only the
    /// region may need the network (IMDS, when nothing else names a region).
    pub fn resolve(common: &Common, env: &Env) -> Result<Aws, Error> {
        Aws::resolve_steps(common, env).map_err(|unresolved| unresolved.error)
    }

    /// [`Aws::resolve`], saying which [`Step`] failed and what the steps before it found (`doctor` reports
    /// each step).
    pub fn resolve_steps(common: &Common, env: &Env) -> Result<Aws, Box<Unresolved>> {
        let at = |step: Step, region: Option<&str>, endpoint: Option<&str>| {
            let (region, endpoint) = (region.map(str::to_owned), endpoint.map(str::to_owned));
            move |error: Error| Box::new(Unresolved { step, error, region, endpoint })
        };
        let profiles = ProfileSet::load(env, common.profile.as_deref()).map_err(at(Step::Settings, None, None))?;
        let mut ca_bundle_skipped = Vec::new();
        let http = match ca_bundle(env, &profiles).map_err(at(Step::Settings, None, None))? {
            Some(mut bundle) => {
                ca_bundle_skipped = std::mem::take(&mut bundle.skipped);
                Http::from_env(env).with_roots(bundle)
            }
            None => Http::from_env(env),
        };
        let http = &http;
        // A profile named on purpose (--profile or AWS_PROFILE) that does not exist is an error, as in the
        // Go SDK: falling through to other sources would quietly pick up other credentials (the node's role).
        let named_by =
            if common.profile.is_some() { Some("--profile") } else { env.var("AWS_PROFILE").map(|_| "AWS_PROFILE") };
        if let Some(named_by) = named_by
            && profiles.selected().is_none()
        {
            let files = profiles.files_for_messages("or");
            let error =
                Error::Config(format!("profile {:?} ({named_by}) is not in {files}", profiles.selected_name(),));
            return Err(at(Step::Settings, None, None)(error));
        }
        // Before any request (the region may come from IMDS): proxies and every endpoint URL, used or not.
        let profile_endpoints = profile_endpoints(&profiles);
        endpoint::check_settings(env, &profile_endpoints).map_err(at(Step::Settings, None, None))?;
        let max_attempts = dynamodb::max_attempts(env).map_err(at(Step::Settings, None, None))?;
        let region = resolve_region(common, env, http, &profiles).map_err(at(Step::Region, None, None))?;
        let endpoint = endpoint::dynamodb(common.endpoint_url.as_deref(), env, &profile_endpoints, &region)
            .map_err(at(Step::Endpoint, Some(&region), None))?;
        let ctx = Context { env, http, profiles: &profiles, region: &region };
        // Built only on failure: the endpoint is not copied on the way to every run.
        let source =
            credentials::select(&ctx).map_err(|error| at(Step::Credentials, Some(&region), Some(&endpoint))(error))?;
        let http = http.clone();
        Ok(Aws {
            profiles,
            region,
            endpoint,
            credentials: Cache::new(source),
            max_attempts,
            http,
            skew: Skew::default(),
            max_clock_skew: common.max_clock_skew,
            ca_bundle_skipped,
        })
    }

    /// Logs (with `-v`) the resolved region, endpoint, table and credential source, then the host of each
    /// service lock-exec will call and the proxy it goes through; warns once per endpoint that is plain http to a
    /// host other than loopback.
    pub fn log_endpoints(&self, table: &str, log: &Logger) {
        for skipped in &self.ca_bundle_skipped {
            log.warn(
                "CA bundle certificate left out: not usable as a root",
                &[("certificate", skipped.clone().into())],
            );
        }
        let http = &self.http;
        log.debug(
            "configuration resolved",
            &[
                ("region", self.region.clone().into()),
                ("endpoint", crate::aws::proxy::endpoint_for_messages(&self.endpoint).into()),
                ("table", table.into()),
                ("credentials", self.credentials.source_name().into()),
            ],
        );
        // A region of no known form (a typo: `us-east1`) only shows as a host that does not resolve: say so first.
        if self.region_unknown() {
            let host = host_of(&self.endpoint).unwrap_or_default();
            log.warn(
                "the region is not an AWS region name (like us-east-1): check it",
                &[("region", self.region.clone().into()), ("host", host.into())],
            );
        }
        let services = [("dynamodb", Some(self.endpoint.as_str())), ("sts", self.credentials.sts_endpoint())];
        for (service, url) in services.into_iter().filter_map(|(service, url)| Some((service, url?))) {
            let host = host_of(url).unwrap_or_default();
            let mut fields: Vec<(&str, Value)> = vec![("service", service.into()), ("host", host.clone().into())];
            if let Some(proxy) = http.proxy_for(url) {
                fields.push(("proxy", proxy.into()));
            }
            log.debug("endpoint", &fields);
            let plain = url.get(..7).is_some_and(|scheme| scheme.eq_ignore_ascii_case("http://"));
            if plain && !crate::aws::proxy::is_loopback(&host) {
                let carries = if service == "sts" {
                    "signed requests, tokens and the credentials STS returns"
                } else {
                    "signed requests and the lock items"
                };
                log.warn(
                    &format!(
                        "plain http to {service} at {host}: {carries} travel unencrypted and can be read or changed \
                         on the way (use https except for a local emulator)"
                    ),
                    &[],
                );
            }
        }
    }

    /// Whether the region has no known form and the DynamoDB endpoint was built from it (no endpoint configured).
    pub fn region_unknown(&self) -> bool {
        let host = host_of(&self.endpoint).unwrap_or_default();
        !crate::aws::endpoint::known_region(&self.region)
            && host.split('.').any(|label| label.eq_ignore_ascii_case(&self.region))
    }

    /// A DynamoDB client over this configuration.
    pub fn client<'a>(&'a self, env: &'a Env, log: &Logger) -> Client<'a> {
        let ctx = Context { env, http: &self.http, profiles: &self.profiles, region: &self.region };
        let mut client = Client::new(ctx, &self.credentials, self.endpoint.clone(), log.clone());
        client.max_attempts = self.max_attempts;
        client.skew = Some((&self.skew, self.max_clock_skew));
        client
    }
}

/// The endpoint settings of the selected profile.
fn profile_endpoints(profiles: &ProfileSet) -> ProfileEndpoints {
    let flag = |key: &str| profiles.value(key).map(|v| v.eq_ignore_ascii_case("true"));
    ProfileEndpoints {
        service: credentials::service_endpoint(profiles, "dynamodb"),
        global: profiles.value("endpoint_url"),
        ignore_configured: flag("ignore_configured_endpoint_urls"),
        fips: flag("use_fips_endpoint"),
        dualstack: flag("use_dualstack_endpoint"),
        sts_service: credentials::service_endpoint(profiles, "sts"),
    }
}

/// `--region`, `AWS_REGION`, `AWS_DEFAULT_REGION`, the profile's `region`, then IMDS.
fn resolve_region(common: &Common, env: &Env, http: &Http, profiles: &ProfileSet) -> Result<String, Error> {
    let configured = common
        .region
        .clone()
        .or_else(|| env.var("AWS_REGION"))
        .or_else(|| env.var("AWS_DEFAULT_REGION"))
        .or_else(|| profiles.value("region"));
    let region = match configured {
        Some(region) => region,
        None => {
            let looked = format!(
                "no region: looked at --region, AWS_REGION, AWS_DEFAULT_REGION, the region of profile {:?}",
                profiles.selected_name()
            );
            if !imds::enabled(env) {
                return Err(Error::Config(format!("{looked} (instance metadata disabled)")));
            }
            match imds::region(env, http, &|key| profiles.value(key)) {
                Ok(Some(region)) => region,
                Ok(None) => return Err(Error::Config(format!("{looked} and instance metadata (no region there)"))),
                Err(e) => {
                    return Err(Error::Config(format!("{looked} and instance metadata: {}", crate::error_chain(&e))));
                }
            }
        }
    };
    endpoint::check_region(&region)?;
    Ok(region)
}

/// The CA bundle named by `AWS_CA_BUNDLE` or else the profile's `ca_bundle`, read and parsed; `None` when
/// neither is set (or set to an empty value).
fn ca_bundle(env: &Env, profiles: &ProfileSet) -> Result<Option<CaBundle>, Error> {
    let (path, setting) = match env.var("AWS_CA_BUNDLE").filter(|v| !v.is_empty()) {
        Some(path) => (path, "AWS_CA_BUNDLE".to_owned()),
        None => match profiles.value("ca_bundle").filter(|v| !v.is_empty()) {
            Some(path) => (path, format!("ca_bundle of profile {:?}", profiles.selected_name())),
            None => return Ok(None),
        },
    };
    let origin = format!("{path:?} ({setting})");
    let text = env
        .read_to_string_capped(std::path::Path::new(&path), CA_BUNDLE_LIMIT)
        .map_err(|e| Error::Config(format!("cannot read CA bundle {origin}: {e}")))?;
    CaBundle::parse(&text, &origin).map(Some)
}
