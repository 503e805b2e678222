//! Where credentials come from: the provider chain, and a cache that refreshes expiring credentials.
//!
//! Order (the first source that applies wins; a source that applies but fails stops the chain):
//! 1. environment variables ([`environment`])
//! 2. the selected profile in the shared files
//! 3. web identity from the environment (IRSA)
//! 4. the container endpoint (ECS, EKS Pod Identity)
//! 5. the EC2 instance metadata service (IMDS)

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
use crate::env::Env;
use crate::error::Error;

/// What credential sources read: the environment, the HTTP client, the region if known.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// Variables, files and the clock.
    pub env: &'a Env,
    /// The run's HTTP client.
    pub http: &'a Http,
    /// The resolved region, when one is known.
    pub region: Option<&'a str>,
    /// `--profile`, when given (else `AWS_PROFILE`, else `default`).
    pub profile: Option<&'a str>,
}

/// Credentials within this long of their expiry are refreshed before use.
pub const REFRESH_WINDOW: Duration = Duration::from_secs(5 * 60);

/// A source of credentials selected from the chain.
#[derive(Debug)]
pub enum Source {
    /// Static credentials: environment or profile keys. Never refreshed.
    Static {
        /// Where they came from.
        name: &'static str,
        /// The credentials.
        credentials: Credentials,
    },
}

impl Source {
    /// The source's name for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Source::Static { name, .. } => name,
        }
    }

    /// Fetches credentials from the source.
    pub fn fetch(&self, _ctx: &Context<'_>) -> Result<Credentials, Error> {
        match self {
            Source::Static { credentials, .. } => Ok(credentials.clone()),
        }
    }
}

/// Picks the first source that applies.
pub fn select(ctx: &Context<'_>) -> Result<Source, Error> {
    if let Some(credentials) = environment::load(ctx.env) {
        return Ok(Source::Static { name: environment::NAME, credentials });
    }
    Err(Error::Config("no credentials found: tried environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)".into()))
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

    /// Credentials valid now, fetched from the source when the cached ones are missing or near expiry.
    pub fn get(&self, ctx: &Context<'_>) -> Result<Fresh, Error> {
        let now = ctx.env.now();
        let mut current = self.current.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(cached) = current.as_ref()
            && !needs_refresh(cached, now)
        {
            return Ok(Fresh { credentials: cached.clone(), refresh_error: None, fetched: false });
        }
        match self.source.fetch(ctx) {
            Ok(fetched) => {
                *current = Some(fetched.clone());
                Ok(Fresh { credentials: fetched, refresh_error: None, fetched: true })
            }
            Err(e) => match current.as_ref() {
                Some(cached) if cached.expiry().is_none_or(|expiry| expiry > now) => {
                    Ok(Fresh { credentials: cached.clone(), refresh_error: Some(e), fetched: false })
                }
                _ => Err(e),
            },
        }
    }
}

/// True when credentials expire within the refresh window (or have expired).
pub fn needs_refresh(credentials: &Credentials, now: SystemTime) -> bool {
    credentials.expiry().is_some_and(|expiry| expiry <= now + REFRESH_WINDOW)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn refresh_window() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let expiring = |secs| Credentials::new("a", "b", None, Some(now + Duration::from_secs(secs)), "t");
        assert!(needs_refresh(&expiring(60), now));
        assert!(!needs_refresh(&expiring(3600), now));
        assert!(!needs_refresh(&Credentials::new("a", "b", None, None, "t"), now));
    }
}
