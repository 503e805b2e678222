//! Orchestration: configuration -> credentials -> acquire -> spawn -> lease thread -> wait -> release -> exit.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use serde_json::Value;
use signal_hook::iterator::Signals;

use crate::aws::credentials::{self, Cache, Context, imds};
use crate::aws::endpoint::{self, ProfileEndpoints};
use crate::aws::http::{Http, host_of};
use crate::aws::profile::ProfileSet;
use crate::cli::{self, Common};
use crate::dynamodb::{self, Client};
use crate::env::Env;
use crate::error::Error;
use crate::exit::Exit;
use crate::lock::{self, Acquire, Item, Owned, Owner};
use crate::log::Logger;
use crate::process::{self, Child};

/// The signals forwarded to the child.
pub const FORWARDED_SIGNALS: [i32; 4] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT];

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
}

impl Aws {
    /// Reads the profile files, resolves region and endpoint, and selects the credential source. Only the
    /// region may need the network (IMDS, when nothing else names a region).
    pub fn resolve(common: &Common, env: &Env, http: &Http) -> Result<Aws, Error> {
        let profiles = ProfileSet::load(env, common.profile.as_deref())?;
        // A profile named on purpose (--profile or AWS_PROFILE) that does not exist is an error, as in the
        // Go SDK: falling through to other sources would quietly pick up other credentials (the node's role).
        let named_by =
            if common.profile.is_some() { Some("--profile") } else { env.var("AWS_PROFILE").map(|_| "AWS_PROFILE") };
        if let Some(named_by) = named_by
            && profiles.selected().is_none()
        {
            let (config, credentials) = profiles.paths_for_messages();
            return Err(Error::Config(format!(
                "profile {:?} ({named_by}) is not in {config} or {credentials}",
                profiles.selected_name(),
            )));
        }
        let region = resolve_region(common, env, http, &profiles)?;
        let endpoint = endpoint::dynamodb(common.endpoint_url.as_deref(), env, &profile_endpoints(&profiles), &region)?;
        let ctx = Context { env, http, profiles: &profiles, region: &region };
        let source = credentials::select(&ctx)?;
        let max_attempts = dynamodb::max_attempts(env)?;
        Ok(Aws { profiles, region, endpoint, credentials: Cache::new(source), max_attempts })
    }

    /// Logs (with `-v`) the host of each service lock-exec will call, and the proxy it goes through; warns once
    /// per endpoint that is plain http to a host other than loopback.
    pub fn log_endpoints(&self, http: &Http, log: &Logger) {
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

    /// A DynamoDB client over this configuration.
    pub fn client<'a>(&'a self, env: &'a Env, http: &'a Http, log: &Logger) -> Client<'a> {
        let ctx = Context { env, http, profiles: &self.profiles, region: &self.region };
        let mut client = Client::new(ctx, &self.credentials, self.endpoint.clone(), log.clone());
        client.max_attempts = self.max_attempts;
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

/// This machine's host name.
fn host_name(env: &Env) -> String {
    env.read_to_string(std::path::Path::new("/proc/sys/kernel/hostname"))
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| env.var("HOSTNAME"))
        .unwrap_or_else(|| "unknown".into())
}

/// Log fields describing a holder.
fn holder_fields(item: Option<&Item>) -> Vec<(&'static str, Value)> {
    let Some(item) = item else { return vec![("holder", "unknown".into())] };
    let mut fields: Vec<(&'static str, Value)> = vec![
        ("holder", item.host.clone().unwrap_or_else(|| "unknown (no owner recorded)".into()).into()),
        ("expire", lock::rfc3339_ns(item.expire_ns).into()),
    ];
    if let Some(pid) = item.pid {
        fields.push(("holder_pid", pid.into()));
    }
    if let Some(acquired) = &item.acquired {
        fields.push(("acquired", acquired.clone().into()));
    }
    if let Some(fence) = item.fence {
        fields.push(("fence", fence.into()));
    }
    fields
}

/// `run`: acquire, run the command under a renewed lease, release.
pub fn run(common: &Common, args: &cli::Run, env: &Env, signals: &mut Signals, log: &Logger) -> Result<Exit, Error> {
    let http = Http::from_env(env);
    let aws = Aws::resolve(common, env, &http)?;
    aws.log_endpoints(&http, log);
    let client = aws.client(env, &http, log);
    let table = common.table.as_str();
    let key = args.key.as_str();
    let owner = Owner {
        token: crate::random::token128(),
        host: host_name(env),
        pid: std::process::id(),
        command: args.display.clone(),
    };
    let sent = Instant::now();
    let lease = match lock::acquire(&client, table, key, &owner, env.now(), args.expire) {
        Ok(Acquire::Held(item)) => {
            log.info("did not run command. key is locked", &holder_fields(item.as_ref()));
            return Ok(Exit::Locked(args.locked_exit_code));
        }
        Ok(Acquire::Acquired(lease)) => lease,
        Err(e) => {
            // The write may have been applied before its answer was lost: clear it if it is ours, so the key
            // does not stay blocked for a whole lease. Owner-conditioned, so it never touches another holder.
            if matches!(e.exit(), Exit::Unavailable | Exit::Software) {
                let outcome = match lock::release(&client, table, key, &owner.token) {
                    Ok(Owned::Done) => "released a lock the failed acquire had taken".to_owned(),
                    Ok(Owned::NotOwner(_)) => "the failed acquire had taken nothing".to_owned(),
                    Err(release_error) => format!("cleanup release failed: {}", crate::error_chain(&release_error)),
                };
                log.debug("acquire failed; cleanup", &[("outcome", outcome.into())]);
            }
            return Err(e);
        }
    };
    log.info(
        "lock acquired",
        &[
            ("fence", lease.fence.into()),
            ("expire", lock::rfc3339_ns(lease.expire_ns).into()),
            ("owner", owner.token.clone().into()),
        ],
    );
    // From here on, every path releases the lock.
    let outcome = supervise(&client, table, key, &owner, lease.fence, sent, args, signals, log);
    release(&client, table, key, &owner.token, log);
    outcome
}

fn release(client: &Client<'_>, table: &str, key: &str, token: &str, log: &Logger) {
    match lock::release(client, table, key, token) {
        Ok(Owned::Done) => log.info("lock released", &[]),
        Ok(Owned::NotOwner(item)) => {
            let now_ns = lock::unix_ns(client.ctx.env.now());
            match item {
                Some(item) if item.owner.is_some() || lock::is_held(&item, now_ns) => {
                    log.warn("lock not released: another holder has it", &holder_fields(Some(&item)))
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

/// Messages to the kill timer.
enum Kill {
    /// SIGKILL the group at this instant unless it has exited (an earlier deadline wins).
    At(Instant),
    /// The child has exited: stop.
    Stop,
}

#[allow(clippy::too_many_arguments)]
fn supervise(
    client: &Client<'_>,
    table: &str,
    key: &str,
    owner: &Owner,
    fence: u64,
    sent: Instant,
    args: &cli::Run,
    signals: &mut Signals,
    log: &Logger,
) -> Result<Exit, Error> {
    if let Some(signal) = signals.pending().next() {
        log.warn("signal received before the command started; not running it", &[("signal", signal.into())]);
        return Ok(Exit::Child((128 + signal) as u8));
    }
    let vars = [
        ("LOCK_EXEC_KEY", key.to_owned()),
        ("LOCK_EXEC_TABLE", table.to_owned()),
        ("LOCK_EXEC_OWNER", owner.token.clone()),
        ("LOCK_EXEC_FENCE", fence.to_string()),
    ];
    let lease = Lease {
        client,
        table,
        key,
        token: &owner.token,
        fence,
        length: args.expire,
        grace: (args.kill_after).min(args.expire / 3),
    };
    // A slow acquire (retries, timeouts) can return after the lease it wrote is nearly over: then another
    // holder may take the key at any moment, so the command is not started.
    if Instant::now() >= lease.stop_at(sent + args.expire) {
        log.error(
            "lock lost",
            &[("error", "the acquire took so long that the lease was about to end; not running the command".into())],
        );
        return Ok(Exit::LockLost);
    }
    let program = args.argv.first().map(|p| p.to_string_lossy().into_owned()).unwrap_or_default();
    let child = process::spawn(&args.argv, &vars).map_err(|source| Error::Spawn { program, source })?;
    log.info("running command", &[("pid", child.id().into()), ("fence", fence.into())]);

    let handle = signals.handle();
    let (kill_tx, kill_rx) = mpsc::channel::<Kill>();
    let (lease_tx, lease_rx) = mpsc::channel::<LeaseEvent>();
    let (waited, lost) = std::thread::scope(|scope| {
        let signal_kill = kill_tx.clone();
        let child = &child;
        scope.spawn(move || {
            for signal in signals.forever() {
                log.info("forwarding signal to the command", &[("signal", signal.into())]);
                child.signal_group(signal);
                let _ = signal_kill.send(Kill::At(Instant::now() + args.kill_after));
            }
        });
        scope.spawn(move || kill_timer(child, kill_rx, log));
        let lease_kill = kill_tx.clone();
        let lease_events = lease_tx.clone();
        let lease_thread = scope.spawn(move || lease.keep(sent, child, lease_events, lease_rx, lease_kill, log));
        let waited = child.wait_exited();
        let _ = lease_tx.send(LeaseEvent::Stop);
        let _ = kill_tx.send(Kill::Stop);
        handle.close();
        let lost = lease_thread.join().unwrap_or_else(|_| Some("the lease thread panicked".into()));
        (waited, lost)
    });
    waited.map_err(|source| Error::Io { what: "the command's exit status".into(), source })?;
    let status = child.reap().map_err(|source| Error::Io { what: "the command's exit status".into(), source })?;
    let code = process::exit_code(status);
    if code == 0 {
        log.info("command succeeded", &[("exit_code", code.into())]);
    } else {
        log.error("command failed", &[("exit_code", code.into()), ("error", status.to_string().into())]);
    }
    match lost {
        Some(_) => Ok(Exit::LockLost),
        None => Ok(Exit::Child(code)),
    }
}

/// SIGKILLs the group at the earliest deadline it is sent, until told to stop.
fn kill_timer(child: &Child, deadlines: mpsc::Receiver<Kill>, log: &Logger) {
    let mut deadline: Option<Instant> = None;
    loop {
        let message = match deadline {
            None => deadlines.recv().map_err(|_| RecvTimeoutError::Disconnected),
            Some(at) => deadlines.recv_timeout(at.saturating_duration_since(Instant::now())),
        };
        match message {
            Ok(Kill::At(at)) => deadline = Some(deadline.map_or(at, |d| d.min(at))),
            Ok(Kill::Stop) | Err(RecvTimeoutError::Disconnected) => return,
            Err(RecvTimeoutError::Timeout) => {
                log.warn("command still running after the grace period; sending SIGKILL", &[]);
                child.signal_group(libc::SIGKILL);
                deadline = None;
            }
        }
    }
}

/// Messages to the lease thread.
enum LeaseEvent {
    /// The child has exited: stop renewing.
    Stop,
    /// A renewal worker finished: when its request was sent, the lease end it wrote, and the answer.
    Renewed(Instant, i128, Result<Owned, Error>),
    /// A credential refresh worker finished (it logged its own outcome).
    Refreshed,
}

/// The lease thread's view of the lock.
struct Lease<'a> {
    client: &'a Client<'a>,
    table: &'a str,
    key: &'a str,
    token: &'a str,
    /// Our fencing token, to tell a later holder's release from an administrator's unlock.
    fence: u64,
    length: Duration,
    /// Grace between SIGTERM and SIGKILL when the lock is lost.
    grace: Duration,
}

impl Lease<'_> {
    /// Safety margin before the lease end by which the command must be dead.
    fn margin(&self) -> Duration {
        (self.length / 10).min(Duration::from_secs(1))
    }

    /// When the command must be sent SIGTERM if the lease that ends at `lease_end` is not renewed.
    fn stop_at(&self, lease_end: Instant) -> Instant {
        lease_end.checked_sub(self.grace + self.margin()).unwrap_or(lease_end)
    }

    /// Renews every third of the lease until stopped. Returns why the lock was lost, if it was; the child has
    /// then been sent SIGTERM, with SIGKILL scheduled so it is dead before the last confirmed lease end.
    ///
    /// Each renewal (credentials included, which may mean an STS call or a `credential_process`) runs in a
    /// worker thread, so a slow or hanging renewal never keeps this loop from stopping the command in time.
    fn keep(
        &self,
        sent: Instant,
        child: &Child,
        events_tx: mpsc::Sender<LeaseEvent>,
        events: mpsc::Receiver<LeaseEvent>,
        kill: mpsc::Sender<Kill>,
        log: &Logger,
    ) -> Option<String> {
        let interval = self.length / 3;
        let retry = interval.min(Duration::from_secs(1));
        let mut lease_end = sent + self.length;
        let mut next_renewal = sent + interval;
        let mut in_flight = false;
        let mut refreshing = false;
        let lose = |reason: String, fields: Vec<(&'static str, Value)>| {
            let mut fields = fields;
            fields.push(("error", reason.clone().into()));
            log.error("lock lost", &fields);
            child.signal_group(libc::SIGTERM);
            let _ = kill.send(Kill::At(Instant::now() + self.grace));
            Some(reason)
        };
        std::thread::scope(|scope| {
            loop {
                let stop_at = self.stop_at(lease_end);
                let wake = if in_flight { stop_at } else { next_renewal.min(stop_at) };
                match events.recv_timeout(wake.saturating_duration_since(Instant::now())) {
                    Ok(LeaseEvent::Stop) | Err(RecvTimeoutError::Disconnected) => return None,
                    Ok(LeaseEvent::Refreshed) => {
                        refreshing = false;
                        continue;
                    }
                    Ok(LeaseEvent::Renewed(renewal_sent, expire_ns, result)) => {
                        in_flight = false;
                        match result {
                            Ok(Owned::Done) => {
                                lease_end = renewal_sent + self.length;
                                next_renewal = renewal_sent + interval;
                                log.debug("lock renewed", &[("expire", lock::rfc3339_ns(expire_ns).into())]);
                            }
                            Ok(Owned::NotOwner(item)) => {
                                return lose(self.loss_reason(item.as_ref()).into(), holder_fields(item.as_ref()));
                            }
                            Err(e) => {
                                log.warn("lock renewal failed; retrying", &[("error", crate::error_chain(&e).into())]);
                                next_renewal = Instant::now() + retry;
                            }
                        }
                        continue;
                    }
                    Err(RecvTimeoutError::Timeout) => {}
                }
                let now = Instant::now();
                if now >= stop_at {
                    let reason = if in_flight {
                        "a renewal did not complete before the lease was about to end"
                    } else {
                        "renewals failed until the lease was about to end"
                    };
                    return lose(reason.into(), vec![]);
                }
                if in_flight || now < next_renewal {
                    continue;
                }
                // Credentials near expiry are refreshed beside the renewal, which signs with the cached ones
                // while they stay valid: a slow STS call or credential_process then costs no lease.
                if !refreshing && self.client.credentials.wants_refresh(self.client.ctx.env.now()) {
                    refreshing = true;
                    let report = events_tx.clone();
                    scope.spawn(move || {
                        if let Err(e) = self.client.refresh_credentials() {
                            log.warn("credential refresh failed", &[("error", crate::error_chain(&e).into())]);
                        }
                        let _ = report.send(LeaseEvent::Refreshed);
                    });
                }
                let mut client = self.client.clone();
                client.sign_with_cached = true;
                client.max_attempts = 1;
                client.timeout =
                    stop_at.saturating_duration_since(now).clamp(Duration::from_millis(100), dynamodb::REQUEST_TIMEOUT);
                let expire_ns = lock::unix_ns(client.ctx.env.now()) + self.length.as_nanos() as i128;
                let report = events_tx.clone();
                in_flight = true;
                scope.spawn(move || {
                    let result = lock::renew(&client, self.table, self.key, self.token, expire_ns);
                    let _ = report.send(LeaseEvent::Renewed(now, expire_ns, result));
                });
            }
        })
    }

    /// Why a renewal found the item no longer ours.
    fn loss_reason(&self, item: Option<&Item>) -> &'static str {
        match item {
            None => "the lock item was deleted",
            Some(item) if item.owner.is_some() => "another holder took the lock",
            Some(item) if item.fence.is_some_and(|fence| fence > self.fence) => {
                "another holder took the lock and has released it"
            }
            Some(item) if item.expire_ns > 0 => "another holder took the lock",
            Some(_) => "the lock was force-unlocked",
        }
    }
}

/// `unlock`: clear the lease whoever holds it, or delete the item.
pub fn unlock(common: &Common, args: &cli::Unlock, env: &Env, log: &Logger) -> Result<Exit, Error> {
    let http = Http::from_env(env);
    let aws = Aws::resolve(common, env, &http)?;
    aws.log_endpoints(&http, log);
    let client = aws.client(env, &http, log);
    let previous = if args.delete {
        lock::delete(&client, &common.table, &args.key)?
    } else {
        lock::force_unlock(&client, &common.table, &args.key)?
    };
    let message = match (&previous, args.delete) {
        (None, _) => "no lock item; nothing to unlock",
        (Some(_), true) => "lock item deleted",
        (Some(_), false) => "lock force-released",
    };
    let fields = previous.as_ref().map(|item| holder_fields(Some(item))).unwrap_or_default();
    log.info(message, &fields);
    Ok(Exit::Success)
}

/// `status`: print the lock item; exit 0 when free or never used, 3 when held.
pub fn status(common: &Common, key: &str, env: &Env, log: &Logger) -> Result<Exit, Error> {
    let http = Http::from_env(env);
    let aws = Aws::resolve(common, env, &http)?;
    aws.log_endpoints(&http, log);
    let client = aws.client(env, &http, log);
    let item = lock::get(&client, &common.table, key)?;
    let now_ns = lock::unix_ns(env.now());
    let state = match &item {
        None => "never used",
        Some(item) if lock::is_held(item, now_ns) => "held",
        Some(_) => "free",
    };
    let mut rows: Vec<(&str, Value)> = vec![("key", key.into()), ("state", state.into())];
    if let Some(item) = &item {
        let optional = |v: &Option<String>| v.clone().map(Value::from).unwrap_or(Value::Null);
        rows.push(("host", optional(&item.host)));
        rows.push(("pid", item.pid.map(Value::from).unwrap_or(Value::Null)));
        rows.push(("owner", optional(&item.owner)));
        rows.push(("command", optional(&item.command)));
        rows.push(("acquired", optional(&item.acquired)));
        rows.push(("expire", if item.expire_ns > 0 { lock::rfc3339_ns(item.expire_ns).into() } else { Value::Null }));
        rows.push(("fence", item.fence.map(Value::from).unwrap_or(Value::Null)));
    }
    let text = match common.log_format {
        cli::LogFormat::Json => {
            let object: serde_json::Map<String, Value> = rows.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
            format!("{}\n", Value::Object(object))
        }
        cli::LogFormat::Text => rows
            .into_iter()
            .map(|(k, v)| match v {
                Value::String(s) => format!("{k:<9} {s}\n"),
                Value::Null => format!("{k:<9} -\n"),
                other => format!("{k:<9} {other}\n"),
            })
            .collect(),
    };
    print!("{text}");
    Ok(if state == "held" { Exit::Held } else { Exit::Success })
}
