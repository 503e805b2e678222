//! The long-lived worker threads of a run, created before anything is sent or started: the DynamoDB worker
//! (configuration, the acquire, then every renewal, one at a time) and the credential refresher.
//!
//! Both report to the run's one event channel and are never waited for: a hanging request or
//! `credential_process` can delay neither a signal nor the release. What they share lives for the whole
//! process (a [`World`] leaked once per run), so an abandoned worker never holds a borrow of the main thread.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Mutex;
use std::sync::mpsc::{Receiver, Sender};
use std::time::{Duration, Instant};

use crate::cli::Common;
use crate::config::Aws;
use crate::dynamodb::Client;
use crate::env::Env;
use crate::error::Error;
use crate::lock::{self, Acquire, Item, LastRun, Owned, Owner, Release};
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
    /// The key as given (the item's key when `slots` is 1).
    pub key: String,
    /// Who we are.
    pub owner: Owner,
    /// The run's logger.
    pub log: Logger,
    /// The lease length.
    pub expire: Duration,
    /// How long the item is kept after its last use (`ttl`).
    pub retain: Duration,
    /// `--limit`: the number of slot items (`KEY#0`..); 1 means the plain `KEY`.
    pub slots: u32,
    /// The slot tried last (then held), and whether the acquire was abandoned: only the DynamoDB worker changes
    /// the slot, during the acquire phase.
    trying: Mutex<Trying>,
}

/// Where an acquire attempt stands: the slot in flight or tried last, and whether the run abandoned the acquire
/// (a stop signal), after which the attempt tries no further slot.
#[derive(Debug, Default)]
struct Trying {
    slot: u32,
    abandoned: bool,
    /// The slot the next attempt tries first: one an earlier try may have taken (its answer lost).
    first: Option<u32>,
}

impl World {
    /// The slot tried last (the one we hold once acquired).
    pub fn slot(&self) -> u32 {
        self.trying.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).slot
    }

    /// Abandons the acquire: an attempt still going through the slots sends no further acquire. Returns the item
    /// key of the slot in flight or tried last, the only one the attempt may have taken.
    pub fn abandon(&self) -> String {
        let mut trying = self.trying.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        trying.abandoned = true;
        slot_key(&self.key, self.slots, trying.slot)
    }

    /// Makes the next attempts try `slot` first.
    pub fn try_first(&self, slot: u32) {
        self.trying.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).first = Some(slot);
    }

    /// The item key of the slot tried last: `KEY` with one slot, `KEY#N` with more.
    pub fn item_key(&self) -> String {
        slot_key(&self.key, self.slots, self.slot())
    }

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
    /// How long the item is kept after its last use.
    pub retain: Duration,
    /// `--limit`.
    pub slots: u32,
    /// The run's logger.
    pub log: Logger,
}

/// A job for a worker.
#[derive(Debug)]
pub enum Job {
    /// Resolve the configuration (reported as [`Event::Resolved`]), then acquire ([`Event::Acquired`]).
    Acquire(Box<Setup>),
    /// Try to acquire again (`--wait`), with the configuration resolved before ([`Event::Acquired`]).
    Retry,
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
pub fn spawn_thread<T: Send + 'static>(
    name: &str,
    what: &'static str,
    body: impl FnOnce() -> T + Send + 'static,
) -> Result<std::thread::JoinHandle<T>, Error> {
    std::thread::Builder::new().name(name.into()).spawn(body).map_err(|source| Error::Thread { what, source })
}

/// The DynamoDB worker: the acquire, then renewals, one at a time, until its job channel closes.
pub fn dynamodb_worker(jobs: Receiver<Job>, events: Sender<Event>) {
    let mut world: Option<&'static World> = None;
    for job in jobs {
        let outcome = catch_unwind(AssertUnwindSafe(|| match job {
            Job::Acquire(setup) => {
                let Setup { common, env, key, owner, expire, retain, slots, log } = *setup;
                let aws = match Aws::resolve(&common, &env) {
                    Ok(aws) => aws,
                    Err(e) => return vec![Event::Acquired(Err(e))],
                };
                aws.log_endpoints(&common.table, &log);
                let table = common.table;
                let trying = Mutex::new(Trying::default());
                let leaked: &'static World =
                    Box::leak(Box::new(World { env, aws, table, key, owner, log, expire, retain, slots, trying }));
                world = Some(leaked);
                let _ = events.send(Event::Resolved(leaked));
                vec![Event::Acquired(attempt(leaked))]
            }
            Job::Retry => match world {
                Some(world) => vec![Event::Acquired(attempt(world))],
                None => vec![Event::Acquired(Err(Error::Internal("a retry before the configuration".into())))],
            },
            Job::Renew { sent, expire_ns, timeout } => {
                let Some(world) = world else {
                    return vec![Event::Renewed { sent, expire_ns, result: Err(Error::LockLost("no lock".into())) }];
                };
                fault(&world.env, "panic-in-renewal");
                let mut client = world.client();
                client.sign_with_cached = true;
                client.max_attempts = 1;
                client.timeout = timeout;
                let key = world.item_key();
                let result = lock::renew(&client, &world.table, &key, &world.owner.token, expire_ns, world.retain);
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
    if test_point(env, point) {
        panic!("test fault injected at {point}");
    }
}

/// A test-only pause (debug builds): sleeps a second when `LOCK_EXEC_TEST_FAULT` names this point, to widen a
/// moment a test must reach (a signal between two steps).
pub fn pause(env: &Env, point: &str) {
    if test_point(env, point) {
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Whether a debug build's `LOCK_EXEC_TEST_FAULT` names `point` (never in a release build).
fn test_point(env: &Env, point: &str) -> bool {
    cfg!(debug_assertions) && env.var("LOCK_EXEC_TEST_FAULT").as_deref() == Some(point)
}

/// `KEY` with one slot, `KEY#N` with more (`--limit`).
pub fn slot_key(key: &str, slots: u32, slot: u32) -> String {
    if slots <= 1 { key.to_owned() } else { format!("{key}#{slot}") }
}

/// One acquire attempt: every slot once, in a random order, until one is ours. With one slot, the plain key.
/// With `--owner`, a slot held under our id is reclaimed only when no slot is free: parallel runs that share the
/// id (the pods of one Job) fill free slots instead of taking one another's. Held: the holder whose lease ends
/// first (the first slot to free up). An error ends the attempt at once (the cleanup release after an unknown
/// outcome targets the slot tried last), and so does an abandoned acquire ([`World::abandon`]).
fn attempt(world: &World) -> Acquired {
    let mut order: Vec<u32> = (0..world.slots).collect();
    for i in (1..order.len()).rev() {
        let j = (crate::random::u64() % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    // A slot an earlier try may have taken goes first: this try takes it back (`#owner = :me`).
    let first = world.trying.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).first;
    if let Some(position) = first.and_then(|slot| order.iter().position(|s| *s == slot)) {
        order[..=position].rotate_right(1);
    }
    let reclaim_late = world.slots > 1 && world.owner.id.is_some();
    let mut first_free: Option<Item> = None;
    // Slots held under our id, reclaimed only when no slot is free; those kept by --keep after their run (no
    // process behind them) before those of a live run.
    let mut ours: Vec<(bool, u32)> = Vec::new();
    for slot in order {
        match try_slot(world, slot, !reclaim_late)? {
            Some((sent, Acquire::Acquired(lease))) => return Ok((sent, Acquire::Acquired(lease))),
            Some((_, Acquire::Held(Some(item)))) => {
                if reclaim_late && item.owner_id.is_some() && item.owner_id == world.owner.id {
                    ours.push((lock::kept_after_run(&item).is_none(), slot));
                }
                if first_free.as_ref().is_none_or(|best| item.expire_ns < best.expire_ns) {
                    first_free = Some(item);
                }
            }
            Some((_, Acquire::Held(None))) => {}
            None => return Ok((Instant::now(), Acquire::Held(None))),
        }
    }
    ours.sort_by_key(|(live, _)| *live);
    for (_, slot) in ours {
        match try_slot(world, slot, true)? {
            Some((sent, Acquire::Acquired(lease))) => return Ok((sent, Acquire::Acquired(lease))),
            Some(_) => {}
            None => return Ok((Instant::now(), Acquire::Held(None))),
        }
    }
    Ok((Instant::now(), Acquire::Held(first_free)))
}

/// One acquire of `slot` (`reclaim`: see [`lock::Terms::reclaim`]), with when it was sent; `None` when the acquire
/// was abandoned before it.
fn try_slot(world: &World, slot: u32, reclaim: bool) -> Result<Option<(Instant, Acquire)>, Error> {
    {
        let mut trying = world.trying.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if trying.abandoned {
            return Ok(None);
        }
        trying.slot = slot;
    }
    let sent = Instant::now();
    let key = world.item_key();
    let terms = lock::Terms {
        now: world.env.now(),
        lease: world.expire,
        retain: world.retain,
        max_clock_skew: world.aws.max_clock_skew,
        reclaim,
    };
    lock::acquire(&world.client(), &world.table, &key, &world.owner, &terms).map(|acquire| Some((sent, acquire)))
}

/// How a release ends a run's hold on the lock.
#[derive(Debug, Clone, Default)]
pub struct Finish {
    /// `--keep`: hold the lock until this instant (Unix ns) when it is still ahead.
    pub keep_until_ns: Option<i128>,
    /// The run's record, when the command ran.
    pub last_run: Option<LastRun>,
    /// When the acquire that took the lock was sent: the release logs how long the lock was held.
    pub held_since: Option<Instant>,
}

/// Releases the lock (owner-conditioned) and logs what happened.
pub fn release(client: &Client<'_>, world: &World, finish: &Finish) {
    let log = &world.log;
    let release = Release {
        now: world.env.now(),
        retain: world.retain,
        keep_until_ns: finish.keep_until_ns,
        last_run: finish.last_run.clone(),
    };
    let result = lock::release(client, &world.table, &world.item_key(), &world.owner.token, &release);
    let held: Vec<(&str, serde_json::Value)> =
        finish.held_since.iter().map(|since| ("duration_ms", (since.elapsed().as_millis() as u64).into())).collect();
    match result {
        Ok(Owned::Done) => match release.kept_until() {
            Some(until) => log.info("lock kept until --keep ends", &[("expire", lock::rfc3339_ns(until).into())]),
            None => log.info("lock released", &held),
        },
        Ok(Owned::NotOwner(item)) => {
            let now_ns = lock::unix_ns(world.env.now());
            match item {
                Some(item) if lock::has_holder(&item, now_ns) => {
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
