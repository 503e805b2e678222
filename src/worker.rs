//! The long-lived worker threads of a run, created before anything is sent or started: the DynamoDB worker
//! (configuration, the acquire, then every renewal, one at a time) and the credential refresher.
//!
//! Both report to the run's one event channel and are never waited for: a hanging request or
//! `credential_process` can delay neither a signal nor the release. What they share lives for the whole
//! process (a [`World`] leaked once per run), so an abandoned worker never holds a borrow of the main thread.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc::{Receiver, Sender};
use std::time::{Duration, Instant};

use crate::cli::Common;
use crate::config::Aws;
use crate::dynamodb::Client;
use crate::env::Env;
use crate::error::Error;
use crate::lock::{self, Acquire, Owned, Owner};
use crate::log::Logger;
use crate::supervise::Event;

/// Everything a run's requests need, for the rest of the process.
#[derive(Debug)]
pub struct World {
    /// Variables, files, clock.
    pub env: Env,
    /// Region, endpoint, credentials and the one HTTP client.
    pub aws: Aws,
    /// The table.
    pub table: String,
    /// The key.
    pub key: String,
    /// Who we are.
    pub owner: Owner,
    /// The run's logger.
    pub log: Logger,
}

impl World {
    /// A DynamoDB client with the defaults.
    pub fn client(&self) -> Client<'_> {
        self.aws.client(&self.env, &self.log)
    }

    /// The release's client: signs with the cached credentials while they stay valid, so a credential refresh
    /// still running in the refresher (a slow `credential_process`) never delays the release.
    pub fn release_client(&self) -> Client<'_> {
        let mut client = self.client();
        client.sign_with_cached = true;
        client
    }

    /// A client for one quick owner-conditioned write: one attempt within `budget`, signed with cached
    /// credentials. `None` when no valid credentials are cached (then no request can have been sent yet).
    pub fn quick_client(&self, budget: Duration) -> Option<Client<'_>> {
        self.aws.credentials.valid_cached(self.env.now(), Duration::ZERO)?;
        let mut client = self.client();
        client.sign_with_cached = true;
        client.max_attempts = 1;
        client.timeout = budget;
        Some(client)
    }
}

/// What the acquire needs, handed to the DynamoDB worker.
#[derive(Debug)]
pub struct Setup {
    /// The common options.
    pub common: Common,
    /// The environment.
    pub env: Env,
    /// The key.
    pub key: String,
    /// Who we are.
    pub owner: Owner,
    /// The lease length.
    pub expire: Duration,
    /// The run's logger.
    pub log: Logger,
}

/// A job for a worker.
#[derive(Debug)]
pub enum Job {
    /// Resolve the configuration (reported as [`Event::Resolved`]), then acquire ([`Event::Acquired`]).
    Acquire(Box<Setup>),
    /// Renew to `expire_ns` (reported as [`Event::Renewed`] with `sent`).
    Renew {
        /// When the supervisor sent it.
        sent: Instant,
        /// The new lease end.
        expire_ns: i128,
        /// Timeout of the one attempt.
        timeout: Duration,
    },
    /// Refresh the credentials (the refresher; reported as [`Event::Refreshed`]).
    Refresh(&'static World),
}

/// Spawns a named thread, mapping a failure to create it to [`Error::Thread`].
pub fn spawn_thread(
    name: &str,
    what: &'static str,
    body: impl FnOnce() + Send + 'static,
) -> Result<std::thread::JoinHandle<()>, Error> {
    std::thread::Builder::new().name(name.into()).spawn(body).map_err(|source| Error::Thread { what, source })
}

/// The DynamoDB worker: the acquire, then renewals, one at a time, until its job channel closes.
pub fn dynamodb_worker(jobs: Receiver<Job>, events: Sender<Event>) {
    let mut world: Option<&'static World> = None;
    for job in jobs {
        let outcome = catch_unwind(AssertUnwindSafe(|| match job {
            Job::Acquire(setup) => {
                let Setup { common, env, key, owner, expire, log } = *setup;
                let aws = match Aws::resolve(&common, &env) {
                    Ok(aws) => aws,
                    Err(e) => return vec![Event::Acquired(Err(e))],
                };
                aws.log_endpoints(&log);
                let leaked: &'static World =
                    Box::leak(Box::new(World { env, aws, table: common.table, key, owner, log }));
                world = Some(leaked);
                let _ = events.send(Event::Resolved(leaked));
                let sent = Instant::now();
                let result = lock::acquire(
                    &leaked.client(),
                    &leaked.table,
                    &leaked.key,
                    &leaked.owner,
                    leaked.env.now(),
                    expire,
                );
                vec![Event::Acquired(result.map(|acquire| (sent, acquire)))]
            }
            Job::Renew { sent, expire_ns, timeout } => {
                let Some(world) = world else {
                    return vec![Event::Renewed { sent, expire_ns, result: Err(Error::LockLost("no lock".into())) }];
                };
                fault(&world.env, "panic-in-renewal");
                let mut client = world.client();
                client.sign_with_cached = true;
                client.max_attempts = 1;
                client.timeout = timeout;
                let result = lock::renew(&client, &world.table, &world.key, &world.owner.token, expire_ns);
                vec![Event::Renewed { sent, expire_ns, result }]
            }
            Job::Refresh(_) => Vec::new(),
        }));
        let reports = outcome.unwrap_or_else(|_| vec![Event::Panicked("DynamoDB worker")]);
        for report in reports {
            let _ = events.send(report);
        }
    }
}

/// The credential refresher: refreshes when asked, logging its own outcome.
pub fn refresher(jobs: Receiver<Job>, events: Sender<Event>) {
    for job in jobs {
        let Job::Refresh(world) = job else { continue };
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            if let Err(e) = world.client().refresh_credentials() {
                world.log.warn("credential refresh failed", &[("error", crate::error_chain(&e).into())]);
            }
        }));
        let _ = events.send(if outcome.is_ok() { Event::Refreshed } else { Event::Panicked("credential refresh") });
    }
}

/// A test-only fault hook (debug builds): panics when `LOCK_EXEC_TEST_FAULT` names this point.
pub fn fault(env: &Env, point: &str) {
    if cfg!(debug_assertions) && env.var("LOCK_EXEC_TEST_FAULT").as_deref() == Some(point) {
        panic!("test fault injected at {point}");
    }
}

/// Releases the lock (owner-conditioned) and logs what happened.
pub fn release(client: &Client<'_>, world: &World) {
    let log = &world.log;
    match lock::release(client, &world.table, &world.key, &world.owner.token) {
        Ok(Owned::Done) => log.info("lock released", &[]),
        Ok(Owned::NotOwner(item)) => {
            let now_ns = lock::unix_ns(world.env.now());
            match item {
                Some(item) if item.owner.is_some() || lock::is_held(&item, now_ns) => {
                    log.warn("lock not released: another holder has it", &crate::lock::holder_fields(Some(&item)))
                }
                _ => log.info("lock already released", &[]),
            }
        }
        Err(e) => log.error(
            "lock release failed; the lock frees itself when its lease ends",
            &[("error", crate::error_chain(&e).into())],
        ),
    }
}

/// The acquire's answer, with when it was sent.
pub type Acquired = Result<(Instant, Acquire), Error>;
