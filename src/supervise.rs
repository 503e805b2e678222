//! Supervision of a running command: one thread that takes every event of the run (signals, the command's
//! state changes, renewals) in order and decides what happens to the command's processes and the lease.
//!
//! The main thread only waits for the command's processes ([`crate::process::Tree::wait`]) and reports what it
//! sees; the supervisor signals the tree. It returns once the command *and everything it started* are gone.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::process::ExitStatus;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::dynamodb;
use crate::error::Error;
use crate::lease::{Due, Lease};
use crate::lock::{self, Item, Owned};
use crate::log::Logger;
use crate::process::{self, Tree};
use crate::worker::{Acquired, Job, World};

/// Signals that ask the command to stop: forwarded to the whole tree, and they start the `--kill-after` timer.
pub const STOP_SIGNALS: [i32; 4] = [libc::SIGHUP, libc::SIGINT, libc::SIGQUIT, libc::SIGTERM];
/// Terminal job-control stops. SIGTTOU is not among them: it is ignored during a run (see
/// [`crate::process::ignore_terminal_output_stops`]), so a log line written while the command has the terminal
/// never stops lock-exec (`stty tostop`).
pub const JOB_SIGNALS: [i32; 2] = [libc::SIGTSTP, libc::SIGTTIN];

/// Every signal lock-exec catches during `run`: the stop signals, job control, and every other catchable
/// asynchronous signal whose default action would end lock-exec without a release (forwarded as they are).
///
/// A signal lock-exec started with ignored (SIGHUP under `nohup`, SIGINT and SIGQUIT in a script's `&` job, a
/// `trap ''`) is left out: it stays ignored, by lock-exec and by the command, as it would be by the command run
/// alone (a shell cannot trap a signal ignored on entry; the Go tool keeps an ignored SIGHUP too). SIGCONT is
/// always caught: job control needs its event, and ignoring it changes nothing for the command (a stopped
/// process is continued whatever its disposition).
///
/// Computed once, before any thread starts: lock-exec changes none of these dispositions itself.
pub fn caught_signals() -> &'static [i32] {
    static CAUGHT: OnceLock<Vec<i32>> = OnceLock::new();
    CAUGHT.get_or_init(|| {
        let mut signals = STOP_SIGNALS.to_vec();
        signals.extend(JOB_SIGNALS);
        signals.extend([
            libc::SIGUSR1,
            libc::SIGUSR2,
            libc::SIGALRM,
            libc::SIGPWR,
            libc::SIGWINCH,
            libc::SIGCONT,
            libc::SIGVTALRM,
            libc::SIGPROF,
            libc::SIGIO,
            libc::SIGXCPU,
            libc::SIGXFSZ,
            libc::SIGSTKFLT,
            libc::SIGABRT,
            libc::SIGSYS,
            libc::SIGTRAP,
        ]);
        signals.extend(libc::SIGRTMIN()..=libc::SIGRTMAX());
        signals.retain(|&signal| signal == libc::SIGCONT || !process::is_ignored(signal));
        signals
    })
}

/// Everything that happens during a run, in one channel.
#[derive(Debug)]
pub enum Event {
    /// A signal reached lock-exec.
    Signal(i32),
    /// The configuration is resolved (the acquire goes out next).
    Resolved(&'static World),
    /// The acquire's answer.
    Acquired(Acquired),
    /// The command or an orphan changed state.
    Process(process::Event),
    /// lock-exec has no child left: the tree is gone.
    NoChildren,
    /// Waiting for the command failed.
    WaitFailed(String),
    /// A renewal's answer: when it was sent, the lease end it wrote, and the result.
    Renewed {
        /// When the supervisor sent it.
        sent: Instant,
        /// The lease end it wrote.
        expire_ns: i128,
        /// The answer.
        result: Result<Owned, Error>,
    },
    /// A credential refresh finished.
    Refreshed,
    /// A thread panicked.
    Panicked(&'static str),
}

/// How the supervision ended.
#[derive(Debug)]
pub struct Outcome {
    /// The command's exit status (`None` if it could not be collected).
    pub status: Option<ExitStatus>,
    /// Why the lock was lost, if it was.
    pub lost: Option<String>,
}

/// What the supervisor needs, handed over once the command runs.
#[derive(Debug)]
pub struct Start {
    /// The run's requests.
    pub world: &'static World,
    /// The command's processes.
    pub tree: Arc<Tree>,
    /// When the command was spawned (its duration is logged when it exits).
    pub started: Instant,
    /// The event channel (until now read by the main thread).
    pub events: Receiver<Event>,
    /// The lease.
    pub lease: Lease,
    /// Our fence, to tell a later holder's release from an administrator's unlock.
    pub fence: u64,
    /// Grace between a forwarded stop signal and SIGKILL.
    pub kill_after: Duration,
    /// Keep the lock until every descendant has exited by itself.
    pub wait_descendants: bool,
    /// Stop lock-exec with its command (an interactive shell's job).
    pub job_control: bool,
    /// The DynamoDB worker's jobs.
    pub worker: Sender<Job>,
    /// The refresher's jobs.
    pub refresher: Sender<Job>,
}

/// The supervisor thread's body: waits for its [`Start`] (none: the run ended before the command started),
/// supervises, and turns a panic of its own into a lost lock with the tree SIGKILLed.
pub fn supervisor_thread(start: Receiver<Start>) -> Option<Outcome> {
    let start = start.recv().ok()?;
    let tree = Arc::clone(&start.tree);
    let log = start.world.log.clone();
    let mut supervisor = Supervisor::new(start);
    let result = catch_unwind(AssertUnwindSafe(|| {
        supervisor.run();
    }));
    if result.is_ok() {
        return Some(Outcome { status: supervisor.status, lost: supervisor.lost });
    }
    let reason = "the supervisor thread panicked";
    log.error("lock lost", &[("error", reason.into())]);
    loop {
        tree.signal_tree(libc::SIGKILL);
        match supervisor.events.recv_timeout(Duration::from_millis(100)) {
            Ok(Event::NoChildren) | Ok(Event::WaitFailed(_)) | Err(RecvTimeoutError::Disconnected) => break,
            Ok(Event::Process(process::Event::Exited(status))) => supervisor.status = Some(status),
            _ => {}
        }
    }
    Some(Outcome { status: supervisor.status, lost: Some(reason.into()) })
}

struct Supervisor {
    world: &'static World,
    tree: Arc<Tree>,
    started: Instant,
    events: Receiver<Event>,
    lease: Lease,
    fence: u64,
    kill_after: Duration,
    wait_descendants: bool,
    job_control: bool,
    worker: Sender<Job>,
    refresher: Sender<Job>,
    log: Logger,
    /// The command's main process's status, once it exited.
    status: Option<ExitStatus>,
    /// Why the lock was lost.
    lost: Option<String>,
    /// A stop signal was forwarded.
    stopping: bool,
    /// SIGKILL the tree at this instant (repeated every 100 ms until it is gone).
    kill_at: Option<Instant>,
    killed: bool,
    /// lock-exec is stopping itself with its command (job control).
    stopped: bool,
    /// Continued after a stop: the command stays stopped until a renewal sent after this instant confirms
    /// the lock.
    resuming: Option<Instant>,
    refreshing: bool,
}

impl Supervisor {
    fn new(start: Start) -> Supervisor {
        let log = start.world.log.clone();
        Supervisor {
            world: start.world,
            tree: start.tree,
            started: start.started,
            events: start.events,
            lease: start.lease,
            fence: start.fence,
            kill_after: start.kill_after,
            wait_descendants: start.wait_descendants,
            job_control: start.job_control,
            worker: start.worker,
            refresher: start.refresher,
            log,
            status: None,
            lost: None,
            stopping: false,
            kill_at: None,
            killed: false,
            stopped: false,
            resuming: None,
            refreshing: false,
        }
    }

    /// The event loop; returns once lock-exec has no child left.
    fn run(&mut self) {
        loop {
            let now = Instant::now();
            let mut wake = now + Duration::from_secs(3600);
            if self.lost.is_none() {
                match self.lease.due(now) {
                    Due::Renew => self.renew(now),
                    Due::Stop(kill_at) => {
                        let reason = if self.lease.in_flight() {
                            "a renewal did not complete before the lease was about to end"
                        } else {
                            "renewals failed until the lease was about to end"
                        };
                        self.lose(reason.into(), Vec::new(), kill_at);
                    }
                    Due::Wait(at) => wake = at,
                }
                if let Due::Wait(at) = self.lease.due(now) {
                    wake = wake.min(at);
                }
            }
            if let Some(kill_at) = self.kill_at {
                wake = wake.min(kill_at);
            }
            match self.events.recv_timeout(wake.saturating_duration_since(Instant::now())) {
                Ok(Event::NoChildren) | Err(RecvTimeoutError::Disconnected) => return,
                Ok(Event::WaitFailed(error)) => {
                    self.lose(format!("cannot wait for the command: {error}"), Vec::new(), Instant::now());
                    self.tree.signal_tree(libc::SIGKILL);
                    return;
                }
                Ok(event) => self.handle(event),
                Err(RecvTimeoutError::Timeout) => {}
            }
            if let Some(kill_at) = self.kill_at
                && Instant::now() >= kill_at
            {
                if !self.killed {
                    self.log.warn("command still running after the grace period; sending SIGKILL", &[]);
                    self.killed = true;
                }
                self.tree.signal_tree(libc::SIGKILL);
                self.kill_at = Some(Instant::now() + Duration::from_millis(100));
            }
        }
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Signal(signal) => self.signal(signal),
            Event::Process(process::Event::Exited(status)) => self.exited(status),
            Event::Process(process::Event::Stopped(signal)) => self.command_stopped(signal),
            Event::Process(process::Event::Continued) => self.log.debug("command continued", &[]),
            Event::Process(process::Event::Reaped(pid)) => self.log.debug("reaped an orphan", &[("pid", pid.into())]),
            Event::Renewed { sent, expire_ns, result } => self.renewed(sent, expire_ns, result),
            Event::Refreshed => self.refreshing = false,
            Event::Panicked(what) => {
                if self.lost.is_none() {
                    self.lose(format!("the {what} thread panicked"), Vec::new(), Instant::now() + self.lease.grace());
                }
            }
            Event::Resolved(_) | Event::Acquired(_) | Event::NoChildren | Event::WaitFailed(_) => {}
        }
    }

    fn signal(&mut self, signal: i32) {
        if STOP_SIGNALS.contains(&signal) {
            self.log.info("forwarding signal to the command", &[("signal", signal.into())]);
            self.stopping = true;
            self.tree.signal_tree(signal);
            if self.resuming.is_none() {
                // A stopped process acts on the signal only once continued.
                self.tree.signal_tree(libc::SIGCONT);
            }
            self.kill_by(Instant::now() + self.kill_after);
        } else if JOB_SIGNALS.contains(&signal) && self.job_control {
            // The command cannot ignore SIGSTOP: it never runs while lock-exec is stopped.
            self.log.info("stopping the command (job control)", &[("signal", signal.into())]);
            self.tree.signal_tree(libc::SIGSTOP);
        } else if signal == libc::SIGCONT && self.resuming.is_some() {
            // lock-exec's own continuation: the command stays stopped until the lock is confirmed.
        } else {
            self.log.debug("forwarding signal to the command", &[("signal", signal.into())]);
            self.tree.signal_group(signal);
        }
    }

    fn exited(&mut self, status: ExitStatus) {
        self.status = Some(status);
        self.resuming = None;
        self.stopped = false;
        self.tree.take_terminal_back();
        let code = process::exit_code(status);
        let duration_ms = (self.started.elapsed().as_millis() as u64).into();
        if code == 0 {
            self.log.info("command succeeded", &[("exit_code", code.into()), ("duration_ms", duration_ms)]);
        } else {
            self.log.error(
                "command failed",
                &[("exit_code", code.into()), ("error", status.to_string().into()), ("duration_ms", duration_ms)],
            );
        }
        let remaining = self.tree.remaining();
        if remaining == 0 {
            return;
        }
        if self.wait_descendants && !self.stopping && self.lost.is_none() {
            self.log.info(
                "command exited; keeping the lock until the processes it started exit",
                &[("processes", remaining.into())],
            );
            return;
        }
        self.log.info("command exited; stopping the processes it left running", &[("processes", remaining.into())]);
        self.tree.signal_tree(libc::SIGTERM);
        self.tree.signal_tree(libc::SIGCONT);
        self.kill_by(Instant::now() + self.kill_after);
    }

    fn command_stopped(&mut self, signal: i32) {
        if self.status.is_some() {
            return;
        }
        if !self.job_control {
            self.log.info("command stopped; the lock is kept", &[("signal", signal.into())]);
            return;
        }
        self.log.info("command stopped; stopping lock-exec with it (job control)", &[("signal", signal.into())]);
        // The terminal stopped the command's group; whatever it started in other groups (setsid, `timeout`)
        // must not run on while the lease lapses.
        self.tree.signal_tree(libc::SIGSTOP);
        self.tree.take_terminal_back();
        if self.tree.has_terminal() {
            // The terminal's SIGTSTP reached only the command's group: stop the rest of our job too (a calling
            // script's shell), so the interactive shell sees the whole job stopped.
            process::signal_own_group_others(libc::SIGTSTP);
        }
        self.stopped = true;
        process::stop_self();
        // Continued (only SIGCONT wakes a stopped process): renew the lease before the command is continued.
        // The SIGCONT event that follows is absorbed: forwarding it would continue the command unconfirmed.
        self.stopped = false;
        let now = Instant::now();
        self.resuming = Some(now);
        self.lease.resume(now);
        self.log.info("continued; renewing the lock before continuing the command", &[]);
    }

    fn renew(&mut self, now: Instant) {
        let env = &self.world.env;
        if !self.refreshing && self.world.aws.credentials.wants_refresh(env.now()) {
            self.refreshing = self.refresher.send(Job::Refresh(self.world)).is_ok();
        }
        crate::worker::fault(env, "panic-in-supervisor");
        let expire_ns = lock::end_after(lock::unix_ns(env.now()), self.lease.length());
        let timeout = self
            .lease
            .stop_at()
            .saturating_duration_since(now)
            .clamp(Duration::from_millis(100), dynamodb::REQUEST_TIMEOUT);
        self.lease.sent();
        if self.worker.send(Job::Renew { sent: now, expire_ns, timeout }).is_err() {
            self.lose("the renewal worker is gone".into(), Vec::new(), now + self.lease.grace());
        }
    }

    fn renewed(&mut self, sent: Instant, expire_ns: i128, result: Result<Owned, Error>) {
        if self.lost.is_some() {
            return;
        }
        match result {
            Ok(Owned::Done) => {
                self.lease.renewed(sent);
                if self.log.enabled(crate::log::Level::Debug) {
                    // Formatted only when shown: this runs every renewal.
                    self.log.debug("lock renewed", &[("expire", lock::rfc3339_ns(expire_ns).into())]);
                }
                if self.resuming.is_some_and(|resumed| sent >= resumed) {
                    self.resuming = None;
                    let terminal = self.tree.give_terminal_again();
                    self.tree.signal_tree(libc::SIGCONT);
                    self.log.info("lock renewed; continuing the command", &[("terminal", terminal.into())]);
                }
            }
            Ok(Owned::NotOwner(item)) => {
                let reason = self.loss_reason(item.as_ref());
                // Holder fields only for another holder: after an unlock the item names this run.
                let now_ns = lock::unix_ns(self.world.env.now());
                let fields = match &item {
                    Some(item) if lock::has_holder(item, now_ns) => crate::lock::holder_fields(Some(item)),
                    _ => Vec::new(),
                };
                self.lose(reason.into(), fields, Instant::now() + self.lease.grace());
            }
            Err(e) => {
                self.log.warn("lock renewal failed; retrying", &[("error", crate::error_chain(&e).into())]);
                self.lease.failed(Instant::now());
            }
        }
    }

    /// The lock is lost: SIGTERM the whole tree now (continuing what is stopped), SIGKILL it at `kill_at`. A
    /// command held stopped while lock-exec waited to confirm the lock after a job-control stop is SIGKILLed at
    /// once: it must not run another instruction without the lock.
    fn lose(&mut self, reason: String, mut fields: Vec<(&'static str, Value)>, kill_at: Instant) {
        fields.push(("error", reason.clone().into()));
        self.log.error("lock lost", &fields);
        self.lost = Some(reason);
        if self.resuming.take().is_some() || self.stopped {
            self.stopped = false;
            self.tree.signal_tree(libc::SIGKILL);
            self.kill_by(Instant::now());
            return;
        }
        self.tree.signal_tree(libc::SIGTERM);
        self.tree.signal_tree(libc::SIGCONT);
        self.kill_by(kill_at);
    }

    fn kill_by(&mut self, at: Instant) {
        self.kill_at = Some(self.kill_at.map_or(at, |k| k.min(at)));
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
