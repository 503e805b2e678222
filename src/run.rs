//! Orchestration: threads -> configuration, credentials, acquire -> spawn -> supervise until the tree is gone
//! -> release -> exit; and the `unlock` and `status` commands.

use std::os::unix::process::ExitStatusExt;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::{Duration, Instant};

use serde_json::Value;
use signal_hook::iterator::Signals;

use crate::aws::credentials::{self, Cache, Context, imds};
use crate::aws::endpoint::{self, ProfileEndpoints};
use crate::aws::http::{CA_BUNDLE_LIMIT, CaBundle, Http, host_of};
use crate::aws::profile::ProfileSet;
use crate::cli::{self, Common};
use crate::dynamodb::{self, Client};
use crate::env::Env;
use crate::error::Error;
use crate::exit::Exit;
use crate::lease::Lease;
use crate::lock::{self, Acquire, Item, Owned, Owner};
use crate::log::Logger;
use crate::process;
use crate::supervise::{self, Event, Outcome, Start};
use crate::worker::{self, Job, Setup, World};

/// Kills every `credential_process` helper still running and lets no new one start; `main` calls it once,
/// just before lock-exec exits, on every path.
pub fn kill_credential_helpers() {
    credentials::process::kill_running_helpers();
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
}

impl Aws {
    /// Reads the profile files, resolves region and endpoint, and selects the credential source. Only the
    /// region may need the network (IMDS, when nothing else names a region).
    pub fn resolve(common: &Common, env: &Env) -> Result<Aws, Error> {
        let profiles = ProfileSet::load(env, common.profile.as_deref())?;
        let http = match ca_bundle(env, &profiles)? {
            Some(bundle) => Http::from_env(env).with_roots(bundle),
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
            let (config, credentials) = profiles.paths_for_messages();
            return Err(Error::Config(format!(
                "profile {:?} ({named_by}) is not in {config} or {credentials}",
                profiles.selected_name(),
            )));
        }
        // Before any request (the region may come from IMDS): proxies and every endpoint URL, used or not.
        let profile_endpoints = profile_endpoints(&profiles);
        endpoint::check_settings(env, &profile_endpoints)?;
        let region = resolve_region(common, env, http, &profiles)?;
        let endpoint = endpoint::dynamodb(common.endpoint_url.as_deref(), env, &profile_endpoints, &region)?;
        let ctx = Context { env, http, profiles: &profiles, region: &region };
        let source = credentials::select(&ctx)?;
        let max_attempts = dynamodb::max_attempts(env)?;
        let http = http.clone();
        Ok(Aws { profiles, region, endpoint, credentials: Cache::new(source), max_attempts, http })
    }

    /// Logs (with `-v`) the host of each service lock-exec will call, and the proxy it goes through; warns once
    /// per endpoint that is plain http to a host other than loopback.
    pub fn log_endpoints(&self, log: &Logger) {
        let http = &self.http;
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
    pub fn client<'a>(&'a self, env: &'a Env, log: &Logger) -> Client<'a> {
        let ctx = Context { env, http: &self.http, profiles: &self.profiles, region: &self.region };
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
pub fn holder_fields(item: Option<&Item>) -> Vec<(&'static str, Value)> {
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

/// `run`: acquire, run the command under a renewed lease until it and everything it started are gone, release.
///
/// ```text
/// threads: signals, DynamoDB worker, credential refresher, supervisor   (before anything is sent)
/// acquire (in the worker; the main thread acts on signals meanwhile)
/// spawn (main thread), hand the events to the supervisor
/// main thread: wait for the command and every orphan until none is left
/// release, exit with the command's status (dying of its signal)
/// ```
pub fn run(common: &Common, args: &cli::Run, env: &Env, signals: Signals, log: &Logger) -> Result<Exit, Error> {
    let job_control = process::job_control();
    let give_terminal = process::should_give_terminal();
    process::become_subreaper().map_err(|source| Error::Io { what: "the subreaper setting".into(), source })?;
    process::ignore_terminal_output_stops();
    if !process::proc_is_ours() && !process::is_pid1() {
        log.warn(
            "cannot see the command's descendants: /proc is missing or belongs to another PID namespace; only the \
             command's process group is signalled",
            &[],
        );
    }
    let (events_tx, events) = mpsc::channel::<Event>();
    let forward = events_tx.clone();
    worker::spawn_thread("signals", "signal handling", move || signal_thread(signals, forward))?;
    let (worker_tx, worker_jobs) = mpsc::channel::<Job>();
    let report = events_tx.clone();
    worker::spawn_thread("dynamodb", "DynamoDB requests", move || worker::dynamodb_worker(worker_jobs, report))?;
    let (refresher_tx, refresher_jobs) = mpsc::channel::<Job>();
    let report = events_tx.clone();
    worker::spawn_thread("credentials", "credential refreshes", move || worker::refresher(refresher_jobs, report))?;
    let (start_tx, start_rx) = mpsc::channel::<Start>();
    let supervisor = std::thread::Builder::new()
        .name("supervisor".into())
        .spawn(move || supervise::supervisor_thread(start_rx))
        .map_err(|source| Error::Thread { what: "supervision", source })?;

    let owner = Owner {
        token: crate::random::token128(),
        host: host_name(env),
        pid: std::process::id(),
        command: args.display.clone(),
    };
    let setup = Setup {
        common: common.clone(),
        env: env.clone(),
        key: args.key.clone(),
        owner,
        expire: args.expire,
        log: log.clone(),
    };
    if worker_tx.send(Job::Acquire(Box::new(setup))).is_err() {
        return Err(Error::Internal("the DynamoDB worker is gone".into()));
    }
    let (world, sent, fence) = match acquire_phase(&events, job_control, args, log)? {
        Acquiring::Acquired { world, sent, fence } => (world, sent, fence),
        Acquiring::Done(exit) => return Ok(exit),
    };
    let lease = Lease::new(sent, args.expire, args.kill_after);
    // A slow acquire (retries, timeouts) can return after the lease it wrote is nearly over: then another
    // holder may take the key at any moment, so the command is not started.
    if Instant::now() >= lease.stop_at() {
        log.error(
            "lock lost",
            &[("error", "the acquire took so long that the lease was about to end; not running the command".into())],
        );
        worker::release(&world.release_client(), world);
        return Ok(Exit::LockLost);
    }
    let vars = [
        ("LOCK_EXEC_KEY", world.key.clone()),
        ("LOCK_EXEC_TABLE", world.table.clone()),
        ("LOCK_EXEC_OWNER", world.owner.token.clone()),
        ("LOCK_EXEC_FENCE", fence.to_string()),
    ];
    let remove: &[&str] = if args.clean_env_aws { &AWS_CREDENTIAL_VARIABLES } else { &[] };
    let spawned = process::spawn(&args.argv, &process::Spawn { vars: &vars, remove, give_terminal });
    let tree = match spawned {
        Ok(tree) => Arc::new(tree),
        Err(source) => {
            let program = args.argv.first().map(|p| p.to_string_lossy().into_owned()).unwrap_or_default();
            let error = Error::Spawn { program, source };
            let exit = error.exit();
            log.error(&crate::error_chain(&error), &[("exit_code", exit.code().into())]);
            worker::release(&world.release_client(), world);
            return Ok(exit);
        }
    };
    log.info("running command", &[("pid", tree.id().into()), ("fence", fence.into())]);
    let start = Start {
        world,
        tree: Arc::clone(&tree),
        events,
        lease,
        fence,
        kill_after: args.kill_after,
        wait_descendants: args.wait_descendants,
        job_control,
        worker: worker_tx,
        refresher: refresher_tx,
    };
    let _ = start_tx.send(start);
    // The main thread spawned the command and is the thread orphans are given to: it waits for them all.
    loop {
        let event = match tree.wait() {
            Ok(Some(event)) => Event::Process(event),
            Ok(None) => Event::NoChildren,
            Err(e) => Event::WaitFailed(e.to_string()),
        };
        let last = matches!(event, Event::NoChildren | Event::WaitFailed(_));
        let _ = events_tx.send(event);
        if last {
            break;
        }
    }
    let outcome = supervisor.join().ok().flatten();
    // Everything is gone: release at once (an in-flight renewal is abandoned; the release is owner-conditioned).
    worker::release(&world.release_client(), world);
    if let Some(Outcome { status: Some(status), lost: None }) = &outcome
        && status.signal() == Some(libc::SIGINT)
        && tree.has_terminal()
    {
        // The terminal's Ctrl-C reached only the command's group: relay it to the rest of our job (a calling
        // script's shell), which then stops its script as it would have without lock-exec in between.
        process::signal_own_group_others(libc::SIGINT);
    }
    Ok(match outcome {
        Some(Outcome { lost: Some(_), .. }) | None => Exit::LockLost,
        Some(Outcome { status: None, .. }) => Exit::LockLost,
        Some(Outcome { status: Some(status), .. }) => match status.signal() {
            Some(signal) => Exit::Signaled(signal),
            None => Exit::Child(process::exit_code(status)),
        },
    })
}

/// The credential variables `--clean-env-aws` removes from the command's environment.
pub const AWS_CREDENTIAL_VARIABLES: [&str; 12] = [
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_CREDENTIAL_EXPIRATION",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_ARN",
    "AWS_ROLE_SESSION_NAME",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
];

/// Forwards every caught signal into the run's event channel.
fn signal_thread(mut signals: Signals, events: Sender<Event>) {
    for signal in signals.forever() {
        if events.send(Event::Signal(signal)).is_err() {
            return;
        }
    }
}

enum Acquiring {
    Acquired { world: &'static World, sent: Instant, fence: u64 },
    Done(Exit),
}

/// Waits for the acquire while acting on signals at once: a stop signal abandons the acquire, clears a write
/// that may have landed (owner-conditioned, 1 s budget), and ends lock-exec by that signal.
fn acquire_phase(
    events: &Receiver<Event>,
    job_control: bool,
    args: &cli::Run,
    log: &Logger,
) -> Result<Acquiring, Error> {
    let mut world: Option<&'static World> = None;
    loop {
        let event = events.recv().map_err(|_| Error::Internal("the DynamoDB worker is gone".into()))?;
        match event {
            Event::Signal(signal) if supervise::STOP_SIGNALS.contains(&signal) => {
                log.warn("signal received before the command started; not running it", &[("signal", signal.into())]);
                if let Some(world) = world {
                    cleanup_release(world);
                }
                return Ok(Acquiring::Done(Exit::Signaled(signal)));
            }
            Event::Signal(signal) if supervise::JOB_SIGNALS.contains(&signal) && job_control => process::stop_self(),
            Event::Signal(signal) => {
                log.debug("signal ignored before the command started", &[("signal", signal.into())])
            }
            Event::Resolved(resolved) => world = Some(resolved),
            Event::Acquired(Ok((_, Acquire::Held(item)))) => {
                log.info("did not run command. key is locked", &holder_fields(item.as_ref()));
                return Ok(Acquiring::Done(Exit::Locked(args.locked_exit_code)));
            }
            Event::Acquired(Ok((sent, Acquire::Acquired(lease)))) => {
                let Some(world) = world else { return Err(Error::Internal("acquired without a configuration".into())) };
                log.info(
                    "lock acquired",
                    &[
                        ("fence", lease.fence.into()),
                        ("expire", lock::rfc3339_ns(lease.expire_ns).into()),
                        ("owner", world.owner.token.clone().into()),
                    ],
                );
                // A signal that came with the answer: release and end by it, without running anything.
                while let Ok(event) = events.try_recv() {
                    if let Event::Signal(signal) = event
                        && supervise::STOP_SIGNALS.contains(&signal)
                    {
                        log.warn(
                            "signal received before the command started; not running it",
                            &[("signal", signal.into())],
                        );
                        worker::release(&world.release_client(), world);
                        return Ok(Acquiring::Done(Exit::Signaled(signal)));
                    }
                }
                return Ok(Acquiring::Acquired { world, sent, fence: lease.fence });
            }
            Event::Acquired(Err(e)) => {
                // A write whose answer was lost may have been applied: clear it if it is ours, so the key does
                // not stay blocked for a whole lease. A definite rejection changed nothing: no second request.
                if e.outcome_unknown()
                    && let Some(world) = world
                {
                    cleanup_release(world);
                }
                return Err(e);
            }
            Event::Panicked(what) => {
                // The acquire may or may not have been sent: clear whatever it may have written.
                if let Some(world) = world {
                    cleanup_release(world);
                }
                return Err(Error::Internal(format!("the {what} thread panicked before the command started")));
            }
            _ => {}
        }
    }
}

/// The owner-conditioned release after an acquire whose outcome is unknown, within 1 s (900 ms for the request).
fn cleanup_release(world: &World) {
    let Some(client) = world.quick_client(Duration::from_millis(900)) else {
        world.log.debug("acquire abandoned before any request was signed; nothing to clean up", &[]);
        return;
    };
    let outcome = match lock::release(&client, &world.table, &world.key, &world.owner.token) {
        Ok(Owned::Done) => "released a lock the acquire had taken".to_owned(),
        Ok(Owned::NotOwner(_)) => "the acquire had taken nothing".to_owned(),
        Err(e) => format!("cleanup release failed: {}", crate::error_chain(&e)),
    };
    world.log.debug("acquire abandoned; cleanup", &[("outcome", outcome.into())]);
}

/// `unlock`: clear the lease whoever holds it, or delete the item.
pub fn unlock(common: &Common, args: &cli::Unlock, env: &Env, log: &Logger) -> Result<Exit, Error> {
    let aws = Aws::resolve(common, env)?;
    aws.log_endpoints(log);
    let client = aws.client(env, log);
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
    let aws = Aws::resolve(common, env)?;
    aws.log_endpoints(log);
    let client = aws.client(env, log);
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
    // The item's text comes from whoever wrote it: no control character of it reaches the terminal (one line per
    // field in text; in JSON, DEL and C1 escaped too, which serde_json leaves raw).
    use crate::log::{Escape, escape_controls};
    let text = match common.log_format {
        cli::LogFormat::Json => {
            let object: serde_json::Map<String, Value> = rows.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
            format!("{}\n", escape_controls(&Value::Object(object).to_string(), Escape::Json))
        }
        cli::LogFormat::Text => rows
            .into_iter()
            .map(|(k, v)| match v {
                Value::String(s) => format!("{k:<9} {}\n", escape_controls(&s, Escape::Text)),
                Value::Null => format!("{k:<9} -\n"),
                other => format!("{k:<9} {other}\n"),
            })
            .collect(),
    };
    print!("{text}");
    Ok(if state == "held" { Exit::Held } else { Exit::Success })
}
