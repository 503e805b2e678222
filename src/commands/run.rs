//! `run`, the straight line: threads -> configuration, credentials, acquire -> spawn -> supervise until the tree
//! is gone -> release -> exit.

use std::os::unix::process::ExitStatusExt;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use crate::cli::{self, Common};
use crate::env::Env;
use crate::error::Error;
use crate::exit::Exit;
use crate::lease::Lease;
use crate::lock::{self, Acquire, Item, LastRun, Owned, Owner, Release, holder_fields};
use crate::log::{Level, Logger};
use crate::process;
use crate::supervise::{self, Event, Outcome, Start};
use crate::worker::{self, Finish, Job, Setup, World};

/// The credential refresher's job channel. The thread exists only for credentials that can expire (static keys
/// never do; a refresh job then has no receiver and is never asked for), and like every thread of the run it is
/// created before the command starts.
fn refresher(world: &World, events: &Sender<Event>) -> Result<Sender<Job>, Error> {
    let (jobs_tx, jobs) = mpsc::channel::<Job>();
    if world.aws.credentials.can_expire() {
        let report = events.clone();
        worker::spawn_thread("credentials", "credential refreshes", move || worker::refresher(jobs, report))?;
    }
    Ok(jobs_tx)
}

/// This machine's host name: `/proc/sys/kernel/hostname`, else `uname` (an image or chroot without `/proc`),
/// else `$HOSTNAME`.
fn host_name(env: &Env) -> String {
    env.read_to_string(std::path::Path::new("/proc/sys/kernel/hostname"))
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(process::node_name)
        .or_else(|| env.var("HOSTNAME"))
        .unwrap_or_else(|| "unknown".into())
}

/// `run`: acquire, run the command under a renewed lease until it and everything it started are gone, release.
///
/// ```text
/// threads: signals, DynamoDB worker                     (before anything is sent)
/// acquire (in the worker; the main thread acts on signals and creates the supervisor meanwhile)
/// the credential refresher, for credentials that expire  (after the acquire, before the command)
/// spawn (main thread), hand the events to the supervisor
/// main thread: wait for the command and every orphan until none is left
/// release, exit with the command's status (dying of its signal)
/// ```
pub fn run(common: &Common, args: &cli::Run, env: &Env, log: &Logger) -> Result<Exit, Error> {
    let job_control = process::job_control();
    let give_terminal = process::should_give_terminal();
    if let Err(e) = process::become_subreaper() {
        // Only under an emulator (qemu-user rejects PR_SET_CHILD_SUBREAPER) or a kernel before 3.4: the command
        // still runs under the lock, but what it leaves running is re-parented elsewhere and not waited for.
        log.warn(&format!("cannot become a child subreaper ({e}): orphans of the command are not waited for"), &[]);
    }
    process::ignore_terminal_output_stops();
    if let Some(construct) = args.shell_syntax {
        // Kept as the Go tool had it (no shell), but said once: `a | b` would otherwise run `a` with `|` and `b`
        // as its arguments without a word.
        log.first(
            Level::Warn,
            &format!(
                "COMMAND holds shell syntax ({construct}) but runs without a shell, split on whitespace as the Go \
                 tool did; use --shell to run it with /bin/sh -c, or -- PROGRAM ARGS"
            ),
            &[],
        );
    }
    if !process::proc_is_ours() && !process::is_pid1() {
        log.warn(
            "cannot see the command's descendants: /proc is missing or belongs to another PID namespace; only the \
             command's process group is signalled",
            &[],
        );
    }
    let (events_tx, events) = mpsc::channel::<Event>();
    let forward = events_tx.clone();
    worker::spawn_thread("signals", "signal handling", move || signal_thread(forward))?;
    let (worker_tx, worker_jobs) = mpsc::channel::<Job>();
    let report = events_tx.clone();
    worker::spawn_thread("dynamodb", "DynamoDB requests", move || worker::dynamodb_worker(worker_jobs, report))?;
    let owner = Owner {
        token: crate::random::token128(),
        id: args.owner_id.clone(),
        host: crate::log::clip_display(&host_name(env)),
        pid: std::process::id(),
        command: crate::log::clip_display(&args.display),
    };
    let setup = Setup {
        common: common.clone(),
        env: env.clone(),
        key: args.key.clone(),
        owner,
        expire: args.expire,
        retain: common.retain,
        slots: args.limit,
        log: log.clone(),
    };
    if worker_tx.send(Job::Acquire(Box::new(setup))).is_err() {
        return Err(Error::Internal("the DynamoDB worker is gone".into()));
    }
    // The supervisor is created while the acquire is in flight, off its path; a failure to create it is acted on
    // once the acquire has answered (releasing a lock it took). Without it the run cannot go on: a held key is
    // not waited for (--wait), and ends the run with that failure rather than as `key is locked`.
    let (start_tx, start_rx) = mpsc::channel::<Start>();
    // Its outcome comes back through a channel, sent as its last act: the release need not wait for the thread
    // to wind down. (A thread that died without sending reads as no outcome: the lock counts as lost.)
    let (outcome_tx, outcome_rx) = mpsc::channel::<Option<Outcome>>();
    let supervisor = worker::spawn_thread("supervisor", "supervision", move || {
        let _ = outcome_tx.send(supervise::supervisor_thread(start_rx));
    });
    let (world, sent, acquired) = match acquire_phase(&events, job_control, args, supervisor.is_ok(), log, &worker_tx)?
    {
        Acquiring::Acquired { world, sent, lease } => (world, sent, lease),
        Acquiring::Done(exit) => {
            return match supervisor {
                Err(e) if matches!(exit, Exit::Locked(_)) => Err(e),
                _ => Ok(exit),
            };
        }
    };
    // A release before the command ran still logs how long the lock was held.
    let early = Finish { held_since: Some(sent), ..Finish::default() };
    let threads = supervisor.and_then(|supervisor| Ok((supervisor, refresher(world, &events_tx)?)));
    let (supervisor, refresher_tx) = match threads {
        Ok(threads) => threads,
        Err(e) => {
            worker::release(&world.release_client(), world, &early);
            return Err(e);
        }
    };
    worker::pause(env, "pause-before-spawn");
    // A stop signal since the acquire's answer (while the threads above were created): nothing runs.
    if let Some(signal) = pending_stop(&events, job_control, log) {
        worker::release(&world.release_client(), world, &early);
        return Ok(Exit::Signaled(signal));
    }
    // A host whose clock is certainly further off DynamoDB's than --max-clock-skew could hold the lock while
    // another host believes it ended (or take one still held): the command is not started.
    if let Some(offset) = world.aws.skew.offset().filter(|offset| offset.at_least() > common.max_clock_skew) {
        let at_least = Duration::from_millis(offset.at_least().as_millis() as u64);
        let error = format!(
            "clock skew: this host's clock is at least {} {} DynamoDB's (Date headers), beyond --max-clock-skew {}; \
             not running the command (fix NTP)",
            crate::duration::format(at_least),
            offset.direction(),
            crate::duration::format(common.max_clock_skew),
        );
        log.error(&error, &[("offset_ms", offset.middle_ms().into()), ("exit_code", Exit::LockLost.code().into())]);
        worker::release(&world.release_client(), world, &early);
        return Ok(Exit::LockLost);
    }
    let lease = Lease::new(sent, args.expire, args.kill_after);
    // A slow acquire (retries, timeouts), or lock-exec stopped (job control) before the spawn, can leave the lease
    // nearly over: then another holder may take the key at any moment, so the command is not started.
    if Instant::now() >= lease.stop_at() {
        let why = "the lease was about to end before the command could start (a slow acquire, or lock-exec \
                   stopped); not running the command";
        log.error("lock lost", &[("error", why.into()), ("exit_code", Exit::LockLost.code().into())]);
        worker::release(&world.release_client(), world, &early);
        return Ok(Exit::LockLost);
    }
    let fence = acquired.fence;
    let vars = [
        ("LOCK_EXEC_KEY", world.key.clone()),
        ("LOCK_EXEC_TABLE", world.table.clone()),
        ("LOCK_EXEC_OWNER", world.owner.token.clone()),
        ("LOCK_EXEC_FENCE", fence.to_string()),
        ("LOCK_EXEC_SLOT", world.slot().to_string()),
    ];
    let remove: &[&str] = if args.clean_env_aws { &AWS_CREDENTIAL_VARIABLES } else { &[] };
    let started_ns = lock::unix_ns(env.now());
    let started = Instant::now();
    let caught = supervise::caught_signals();
    let spawned =
        process::spawn(&args.argv, &process::Spawn { vars: &vars, remove, give_terminal, default_actions: caught });
    let tree = match spawned {
        Ok(tree) => Arc::new(tree),
        Err(source) => {
            let program = args.argv.first().map(|p| crate::log::clip_display(&p.to_string_lossy())).unwrap_or_default();
            let error = Error::Spawn { program, source };
            let exit = error.exit();
            log.error(&crate::error_chain(&error), &[("exit_code", exit.code().into())]);
            // Nothing ran, so no --keep; the attempt is recorded.
            let last_run = last_run(world, exit, started_ns, fence);
            let finish = Finish { keep_until_ns: None, last_run: Some(last_run), held_since: Some(sent) };
            worker::release(&world.release_client(), world, &finish);
            return Ok(exit);
        }
    };
    log.info("running command", &[("pid", tree.id().into()), ("fence", fence.into())]);
    let start = Start {
        world,
        tree: Arc::clone(&tree),
        started,
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
    let outcome = outcome_rx.recv().ok().flatten();
    drop(supervisor);
    let exit = match &outcome {
        Some(Outcome { lost: Some(_), .. }) | None => Exit::LockLost,
        Some(Outcome { status: None, .. }) => Exit::LockLost,
        Some(Outcome { status: Some(status), .. }) => match status.signal() {
            Some(signal) => Exit::Signaled(signal),
            None => Exit::Child(process::exit_code(*status)),
        },
    };
    // Everything is gone: release at once (an in-flight renewal is abandoned; the release is owner-conditioned).
    // With --keep, a command that ended early leaves the lock held until acquired + keep (no waiting here); a
    // run that lost its lock keeps nothing, even if the owner-conditioned write would still go through.
    let keep = args.keep.filter(|_| !matches!(exit, Exit::LockLost));
    let finish = Finish {
        keep_until_ns: keep.map(|keep| lock::end_after(acquired.acquired_ns, keep)),
        last_run: Some(last_run(world, exit, started_ns, fence)),
        held_since: Some(sent),
    };
    worker::release(&world.release_client(), world, &finish);
    if let Some(Outcome { status: Some(status), lost: None }) = &outcome
        && status.signal() == Some(libc::SIGINT)
        && tree.has_terminal()
    {
        // The terminal's Ctrl-C reached only the command's group: relay it to the rest of our job (a calling
        // script's shell), which then stops its script as it would have without lock-exec in between.
        process::signal_own_group_others(libc::SIGINT);
    }
    Ok(exit)
}

/// The last-run record of a run that ends now with `exit`.
fn last_run(world: &World, exit: Exit, started_ns: i128, fence: u64) -> LastRun {
    LastRun {
        exit_code: i32::from(exit.code()),
        host: world.owner.host.clone(),
        started_ns,
        finished_ns: lock::unix_ns(world.env.now()),
        fence: Some(fence),
    }
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

/// Takes each signal the run catches with `sigwaitinfo` (`main` blocked them in every thread before any started,
/// so none was lost or acted on meanwhile) and forwards it into the run's event channel. `sigwaitinfo` fails only
/// on an invalid set, which `wait_signal` has already ruled out: then the signals would stay blocked, pending and
/// harmless.
fn signal_thread(events: Sender<Event>) {
    let caught = supervise::caught_signals();
    while let Ok(signal) = process::wait_signal(caught) {
        if events.send(Event::Signal(signal)).is_err() {
            return;
        }
    }
}

enum Acquiring {
    Acquired { world: &'static World, sent: Instant, lease: lock::Lease },
    Done(Exit),
}

/// `--wait`: the next try comes no sooner than a second after the last answer and no later than the holder's lease
/// end (so a crashed holder is replaced at once); in between, a backoff from 1 s by half each try up to 10 s,
/// jittered down by up to half (`fraction` in [0, 1)) so waiting runs spread out.
fn poll_delay(tries: u32, holder_left: Option<Duration>, fraction: f64) -> Duration {
    const FLOOR: Duration = Duration::from_secs(1);
    let backoff = Duration::from_secs_f64((1.5f64).powi(tries.min(20) as i32)).min(Duration::from_secs(10));
    let base = match holder_left {
        Some(left) => backoff.min(left + Duration::from_millis(50)),
        None => backoff,
    };
    base.mul_f64(1.0 - 0.5 * fraction.clamp(0.0, 1.0)).max(FLOOR)
}

/// Where a `--wait` stands between two tries.
struct Waiting {
    /// When the wait ends.
    deadline: Instant,
    /// Tries so far.
    tries: u32,
    /// When the next try goes out (`None` while one is in flight).
    next_try: Option<Instant>,
    /// The next timer ends the wait instead of trying again (too close to the deadline for another try).
    give_up: bool,
    /// The holder as last seen, for the final `did not run` line.
    holder: Option<Item>,
    /// The last try failed (DynamoDB unreachable, throttling, 5xx): a wait that ends on it ends with this error,
    /// not as locked.
    failed: Option<Error>,
    /// The items a failed try may have taken (its answer was lost): a wait that ends without the lock clears
    /// them (owner-conditioned). Not cleared before a retry: the retry tries such a slot first and its own
    /// condition takes the lock back, while a cleanup still on its way could land after the retry and free the
    /// lock the command then runs under.
    unsure: Vec<String>,
    /// `waiting for lock` was logged (once, at the first answer that found the key held).
    announced: bool,
}

/// The fields of `did not run command. key is locked`: the holder's, and with its lease end, `expire_with_skew`:
/// that end plus `--max-clock-skew`, before which no run takes the key (`status` says free once the lease end has
/// passed; a run waits out the skew allowance too).
fn locked_fields(item: Option<&Item>, world: Option<&World>) -> Vec<(&'static str, serde_json::Value)> {
    let mut fields = holder_fields(item);
    if let Some(item) = item.filter(|item| lock::shown_expire(item).is_some())
        && let Some(world) = world
    {
        let skew_ns = world.aws.max_clock_skew.as_nanos() as i128;
        fields.push(("expire_with_skew", lock::rfc3339_ns(item.expire_ns.saturating_add(skew_ns)).into()));
    }
    fields
}

/// How long `item`'s lease runs on by this host's clock, counting as ended `--max-clock-skew` after its expire;
/// zero once past.
fn lease_left(item: &Item, world: Option<&World>) -> Duration {
    let now_ns = world.map(|world| lock::unix_ns(world.env.now())).unwrap_or_default();
    let skew_ns = world.map(|world| world.aws.max_clock_skew.as_nanos() as i128).unwrap_or_default();
    let left = item.expire_ns.saturating_add(skew_ns).saturating_sub(now_ns).max(0);
    Duration::from_nanos(u64::try_from(left).unwrap_or(u64::MAX))
}

/// At the end of a wait without the lock: clears what a failed try may have taken ([`Waiting::unsure`]).
fn clear_unsure(waiting: &mut Waiting, world: Option<&'static World>) {
    let keys = std::mem::take(&mut waiting.unsure);
    if !keys.is_empty()
        && let Some(world) = world
    {
        cleanup_keys(world, keys, CLEANUP_BUDGET);
    }
}

impl Waiting {
    /// Whether the holder the last answer named is still within its lease (plus `--max-clock-skew`) by this
    /// host's clock: a wait whose last try failed then ends as locked rather than unreachable.
    fn holder_live(&self, world: Option<&'static World>) -> bool {
        world.is_some() && self.holder.as_ref().is_some_and(|holder| !lease_left(holder, world).is_zero())
    }

    /// A try failed with `error`: when its answer was lost, the slot it wrote to is remembered for the cleanup
    /// at the end and tried first by the next try.
    fn failed_try(&mut self, error: &Error, world: Option<&'static World>) {
        if let Some(world) = world.filter(|_| error.outcome_unknown()) {
            let key = world.item_key();
            if !self.unsure.contains(&key) {
                self.unsure.push(key);
            }
            world.try_first(world.slot());
        }
    }

    /// Sets the next try after an answer (or a failure) at `now`: [`poll_delay`] from now, and the last try at the
    /// deadline unless that comes within a second. Returns how far off it is, in ms (for the log).
    fn schedule(&mut self, now: Instant, holder_left: Option<Duration>) -> serde_json::Value {
        let delay = poll_delay(self.tries, holder_left, crate::random::fraction());
        let at = (now + delay).min(self.deadline);
        // Within a second of the deadline no try is made, unless the holder's lease runs out before the deadline:
        // then the last try is at the deadline all the same, so a lapsed holder does not end the wait as locked.
        let lapses_first = holder_left.is_some_and(|left| now + left < self.deadline);
        self.give_up = at < now + Duration::from_secs(1) && !lapses_first;
        let next = if self.give_up { self.deadline } else { at };
        self.next_try = Some(next);
        (next.saturating_duration_since(now).as_millis() as u64).into()
    }
}

/// Waits for the acquire while acting on signals at once: a stop signal abandons the acquire, clears a write
/// that may have landed (owner-conditioned, 1 s budget), and ends lock-exec by that signal. With `--wait`, a held
/// key is tried again until the wait is over. `can_run` false (a thread the run needs could not be created): a
/// held key ends the phase at once, as `Exit::Locked` with nothing logged, for the caller to report the failure.
fn acquire_phase(
    events: &Receiver<Event>,
    job_control: bool,
    args: &cli::Run,
    can_run: bool,
    log: &Logger,
    worker: &Sender<Job>,
) -> Result<Acquiring, Error> {
    let mut world: Option<&'static World> = None;
    let gone = || Error::Internal("the DynamoDB worker is gone".into());
    // The wait is over with the key held: the Go tool's line, then the locked exit code.
    let not_run = |holder: Option<&Item>, world: Option<&World>| {
        log.first(Level::Info, "did not run command. key is locked", &locked_fields(holder, world));
        Ok(Acquiring::Done(Exit::Locked(args.locked_exit_code)))
    };
    let mut waiting = args.wait.filter(|_| can_run).map(|wait| Waiting {
        deadline: Instant::now() + wait,
        tries: 0,
        next_try: None,
        give_up: false,
        holder: None,
        failed: None,
        unsure: Vec::new(),
        announced: false,
    });
    loop {
        let timer = waiting.as_ref().and_then(|w| w.next_try);
        let event = match timer {
            None => events.recv().map_err(|_| gone())?,
            Some(at) => match events.recv_timeout(at.saturating_duration_since(Instant::now())) {
                Ok(event) => event,
                Err(RecvTimeoutError::Disconnected) => return Err(gone()),
                Err(RecvTimeoutError::Timeout) => {
                    let Some(w) = waiting.as_mut() else { continue };
                    if w.give_up {
                        clear_unsure(w, world);
                        if let Some(signal) = pending_stop(events, job_control, log) {
                            return Ok(Acquiring::Done(Exit::Signaled(signal)));
                        }
                        // A failed last try ends the wait with its error unless the holder a try found is still
                        // within its lease: then the wait ends as locked, as one that runs out does.
                        if let Some(error) = w.failed.take().filter(|_| !w.holder_live(world)) {
                            return Err(error);
                        }
                        return not_run(w.holder.as_ref(), world);
                    }
                    w.next_try = None;
                    w.tries += 1;
                    worker.send(Job::Retry).map_err(|_| gone())?;
                    continue;
                }
            },
        };
        // A request is out unless we are between two tries of a --wait.
        let in_flight = waiting.as_ref().is_none_or(|w| w.next_try.is_none());
        match event {
            Event::Signal(signal) if supervise::STOP_SIGNALS.contains(&signal) => {
                not_running_it(log, signal);
                if in_flight {
                    // One cleanup, within the one budget, of the try in flight and what earlier tries may have taken.
                    let earlier = waiting.as_mut().map(|w| std::mem::take(&mut w.unsure)).unwrap_or_default();
                    abandon_acquire(events, world, earlier);
                } else if let Some(w) = waiting.as_mut() {
                    clear_unsure(w, world);
                }
                return Ok(Acquiring::Done(Exit::Signaled(signal)));
            }
            Event::Signal(signal) if supervise::JOB_SIGNALS.contains(&signal) && job_control => process::stop_self(),
            Event::Signal(signal) => {
                log.debug("signal ignored before the command started", &[("signal", signal.into())])
            }
            Event::Resolved(resolved) => world = Some(resolved),
            Event::Acquired(Ok((_, Acquire::Held(item)))) => {
                if !can_run {
                    return Ok(Acquiring::Done(Exit::Locked(args.locked_exit_code)));
                }
                let now = Instant::now();
                let Some(w) = waiting.as_mut().filter(|w| now < w.deadline) else {
                    if let Some(w) = waiting.as_mut().filter(|w| !w.unsure.is_empty()) {
                        clear_unsure(w, world);
                        if let Some(signal) = pending_stop(events, job_control, log) {
                            return Ok(Acquiring::Done(Exit::Signaled(signal)));
                        }
                    }
                    return not_run(item.as_ref(), world);
                };
                if !w.announced {
                    w.announced = true;
                    let mut fields = holder_fields(item.as_ref());
                    fields.push(("wait", crate::duration::format(w.deadline - now).into()));
                    log.first(Level::Info, "waiting for lock", &fields);
                }
                let holder_left = item.as_ref().map(|item| lease_left(item, world));
                let in_ms = w.schedule(now, holder_left);
                w.failed = None;
                let message = if w.give_up {
                    "lock still held; giving up at the --wait deadline"
                } else {
                    "lock still held; trying again"
                };
                log.debug(message, &[("in_ms", in_ms)]);
                w.holder = item;
            }
            Event::Acquired(Ok((sent, Acquire::Acquired(lease)))) => {
                let Some(world) = world else { return Err(Error::Internal("acquired without a configuration".into())) };
                let mut fields: Vec<(&str, serde_json::Value)> = vec![
                    ("fence", lease.fence.into()),
                    ("expire", lock::rfc3339_ns(lease.expire_ns).into()),
                    ("owner", world.owner.token.clone().into()),
                ];
                if world.slots > 1 {
                    fields.push(("slot", world.slot().into()));
                }
                log.first(Level::Info, "lock acquired", &fields);
                // A signal that came with the answer: release and end by it, without running anything.
                if let Some(signal) = pending_stop(events, job_control, log) {
                    let early = Finish { held_since: Some(sent), ..Finish::default() };
                    worker::release(&world.release_client(), world, &early);
                    return Ok(Acquiring::Done(Exit::Signaled(signal)));
                }
                return Ok(Acquiring::Acquired { world, sent, lease });
            }
            Event::Acquired(Err(e)) => {
                // With --wait, DynamoDB out of reach (after the request's own retries) is tried again until the
                // wait is over; any other error (settings, permissions, the table) ends it at once.
                let now = Instant::now();
                if let Some(w) = waiting.as_mut().filter(|w| now < w.deadline && e.exit() == Exit::Unavailable) {
                    w.failed_try(&e, world);
                    let in_ms = w.schedule(now, None);
                    let message = if w.give_up {
                        "cannot acquire the lock; giving up at the --wait deadline"
                    } else {
                        "cannot acquire the lock; trying again"
                    };
                    log.warn(message, &[("error", crate::error_chain(&e).into()), ("in_ms", in_ms)]);
                    w.failed = Some(e);
                    continue;
                }
                // A write whose answer was lost may have been applied: clear it if it is ours, so the key does
                // not stay blocked for a whole lease. A definite rejection changed nothing: no second request.
                if let Some(w) = waiting.as_mut() {
                    w.failed_try(&e, world);
                    clear_unsure(w, world);
                    // A stop signal that came during the cleanup ends lock-exec by it, whatever the failure.
                    if let Some(signal) = pending_stop(events, job_control, log) {
                        return Ok(Acquiring::Done(Exit::Signaled(signal)));
                    }
                    // The deadline's try failed while the holder a try found is still within its lease: locked, as
                    // above (the failure logged first).
                    if e.exit() == Exit::Unavailable && w.holder_live(world) {
                        let error = crate::error_chain(&e);
                        log.warn(
                            "cannot acquire the lock; giving up at the --wait deadline",
                            &[("error", error.into())],
                        );
                        return not_run(w.holder.as_ref(), world);
                    }
                } else if e.outcome_unknown()
                    && let Some(world) = world
                {
                    cleanup_release(world, CLEANUP_BUDGET);
                }
                return Err(e);
            }
            Event::Panicked(what) => {
                // The acquire may or may not have been sent: clear whatever it may have written.
                if let Some(world) = world {
                    cleanup_release(world, CLEANUP_BUDGET);
                }
                return Err(Error::Internal(format!("the {what} thread panicked before the command started")));
            }
            _ => {}
        }
    }
}

/// Takes every event that came in meanwhile and returns the first stop signal among them (logged), if any. A
/// job-control stop stops lock-exec here, before the command exists (the caller then checks the lease); other
/// signals are ignored before the command starts.
fn pending_stop(events: &Receiver<Event>, job_control: bool, log: &Logger) -> Option<i32> {
    // After a stop, the SIGCONT that woke us is awaited (500 ms at most): a stop signal sent while we were
    // stopped comes before it (sigwaitinfo takes the lowest-numbered pending signal first, and every stop signal
    // is below SIGCONT), so it is not missed.
    let mut awaiting_continue = false;
    loop {
        let event = if awaiting_continue {
            events.recv_timeout(Duration::from_millis(500)).ok()
        } else {
            events.try_recv().ok()
        };
        let event = event?;
        match event {
            Event::Signal(signal) if supervise::STOP_SIGNALS.contains(&signal) => {
                not_running_it(log, signal);
                return Some(signal);
            }
            Event::Signal(signal) if supervise::JOB_SIGNALS.contains(&signal) && job_control => {
                process::stop_self();
                awaiting_continue = true;
            }
            Event::Signal(libc::SIGCONT) => awaiting_continue = false,
            _ => {}
        }
    }
}

/// Logs that a stop signal came before the command started, which then never starts.
fn not_running_it(log: &Logger, signal: i32) {
    log.warn("signal received before the command started; not running it", &[("signal", signal.into())]);
}

/// How long clearing what an abandoned or failed acquire may have written takes at most, answer included.
const CLEANUP_BUDGET: Duration = Duration::from_millis(900);

/// A stop signal while the acquire may be on its way: abandons it (no further `--limit` slot) and clears whatever it
/// takes, all within 900 ms, as a cleanup alone took before. Its answer is awaited first (500 ms at most): a
/// cleanup release sent at once, on another connection, could overtake the acquire, find nothing, and let the
/// acquire land after it, leaving the key held for a whole lease by a run that is gone. Without an answer by then,
/// the cleanup goes out anyway (400 ms).
fn abandon_acquire(events: &Receiver<Event>, mut world: Option<&'static World>, earlier: Vec<String>) {
    let started = Instant::now();
    let answer_by = started + Duration::from_millis(500);
    let cleanup_by = started + CLEANUP_BUDGET;
    if let Some(world) = world {
        world.abandon();
    }
    loop {
        match events.recv_timeout(answer_by.saturating_duration_since(Instant::now())) {
            Ok(Event::Resolved(resolved)) => {
                resolved.abandon();
                world = Some(resolved);
            }
            Ok(Event::Acquired(answer)) => {
                // Taken, or an answer that leaves it open: clear it. Held or definitely refused: nothing was written.
                let taken = match &answer {
                    Ok((_, Acquire::Acquired(_))) => true,
                    Ok((_, Acquire::Held(_))) => false,
                    Err(e) => e.outcome_unknown(),
                };
                if let Some(world) = world {
                    let keys = with_slot_in_flight(world, earlier, taken);
                    if !keys.is_empty() {
                        cleanup_keys(world, keys, cleanup_by.saturating_duration_since(Instant::now()));
                    }
                }
                return;
            }
            Ok(Event::Panicked(_)) | Err(_) => break,
            Ok(_) => {}
        }
    }
    if let Some(world) = world {
        let keys = with_slot_in_flight(world, earlier, true);
        cleanup_keys(world, keys, cleanup_by.saturating_duration_since(Instant::now()));
    }
}

/// The item key of the slot in flight (or tried last) when `taken`, first (the one most likely taken gets the
/// budget first), then `keys`.
fn with_slot_in_flight(world: &World, mut keys: Vec<String>, taken: bool) -> Vec<String> {
    if taken {
        let key = world.item_key();
        keys.retain(|k| *k != key);
        keys.insert(0, key);
    }
    keys
}

/// The owner-conditioned release after an acquire whose outcome is unknown, one request within `budget`. The
/// acquire is abandoned first, so an attempt still going through `--limit` slots takes no further one.
///
/// It runs on a thread of its own, awaited for `budget` at most: a request's timeouts bound its connection and
/// answer, but not the C library's name lookup (5 s per try in musl with no name server), and lock-exec must
/// not wait past its budget for a cleanup, which is a courtesy to the next run (the lease ends anyway). Where the
/// thread cannot be created, it runs here.
fn cleanup_release(world: &'static World, budget: Duration) {
    cleanup_keys(world, Vec::new(), budget);
}

/// [`cleanup_release`] of the given item keys (none: the slot in flight or tried last).
fn cleanup_keys(world: &'static World, keys: Vec<String>, budget: Duration) {
    let (done, finished) = mpsc::channel();
    let spawned = worker::spawn_thread("cleanup", "the cleanup release", move || {
        cleanup_now(world, keys, budget);
        let _ = done.send(());
    });
    match spawned {
        Ok(_) => {
            if finished.recv_timeout(budget + Duration::from_millis(100)).is_err() {
                world.log.debug("acquire abandoned; cleanup release not done within its budget, left behind", &[]);
            }
        }
        // The keys went with the closure that could not start: the slot tried last is the one left to clear.
        Err(_) => cleanup_now(world, Vec::new(), budget),
    }
}

fn cleanup_now(world: &World, keys: Vec<String>, budget: Duration) {
    let last = world.abandon();
    let keys = if keys.is_empty() { vec![last] } else { keys };
    // Each release gets its share of the budget (at least 100 ms).
    let share = (budget / keys.len().max(1) as u32).max(Duration::from_millis(100));
    let Some(client) = world.quick_client(share) else {
        world.log.debug("acquire abandoned before any request was signed; nothing to clean up", &[]);
        return;
    };
    for key in keys {
        let release = Release::plain(world.env.now(), world.retain);
        let outcome = match lock::release(&client, &world.table, &key, &world.owner.token, &release) {
            Ok(Owned::Done) => "released a lock the acquire had taken".to_owned(),
            Ok(Owned::NotOwner(_)) => "the acquire had taken nothing".to_owned(),
            Err(e) => format!("cleanup release failed: {}", crate::error_chain(&e)),
        };
        world.log.debug("acquire abandoned; cleanup", &[("item", key.into()), ("outcome", outcome.into())]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn waiting(deadline: Instant) -> Waiting {
        Waiting {
            deadline,
            tries: 3,
            next_try: None,
            give_up: false,
            holder: None,
            failed: None,
            unsure: Vec::new(),
            announced: true,
        }
    }

    /// The last answer came within a second of the deadline: no further try, unless the holder's lease runs out
    /// before the deadline; then one at the deadline (before, the wait ended as locked with the key free).
    #[test]
    fn a_holder_lapsing_before_the_deadline_gets_a_last_try() {
        let now = Instant::now();
        let deadline = now + Duration::from_millis(500);
        let mut w = waiting(deadline);
        w.schedule(now, Some(Duration::from_secs(30)));
        assert!(w.give_up);
        let mut w = waiting(deadline);
        w.schedule(now, Some(Duration::from_millis(200)));
        assert!(!w.give_up);
        assert_eq!(w.next_try, Some(deadline));
    }

    #[test]
    fn polls_come_no_faster_than_a_second_and_no_later_than_the_holder_s_lease_end() {
        // (tries, holder's lease left, jitter fraction) -> delay
        let check = |tries: u32, left: Option<Duration>, fraction: f64, expected: Duration| {
            assert_eq!(poll_delay(tries, left, fraction), expected, "{tries} {left:?} {fraction}");
        };
        check(0, None, 0.0, SECOND);
        check(0, Some(Duration::from_millis(10)), 0.0, SECOND);
        check(0, None, 0.99, SECOND);
        check(2, None, 0.0, Duration::from_millis(2250));
        check(2, None, 0.5, Duration::from_secs_f64(2.25 * 0.75));
        check(30, None, 0.0, 10 * SECOND);
        check(30, None, 0.999_999, SECOND.mul_f64(10.0 * (1.0 - 0.5 * 0.999_999)));
        check(30, Some(3 * SECOND), 0.0, Duration::from_millis(3050));
        check(30, Some(Duration::ZERO), 0.0, SECOND);
        for tries in 0..40 {
            for fraction in [0.0, 0.3, 0.999] {
                let delay = poll_delay(tries, Some(4 * SECOND), fraction);
                assert!(delay >= SECOND && delay <= Duration::from_millis(4050), "{tries} {fraction}: {delay:?}");
            }
        }
    }
}
