//! The `lock-exec` binary: argv -> cli::parse_from -> run -> exit code. The only place that prints a fatal
//! error and exits.

use std::process::ExitCode;
use std::sync::atomic::{AtomicI32, Ordering};

/// dlmalloc keeps freed memory for reuse, where musl's allocator (the static builds) hands it back to the kernel
/// page by page: without it, every request cost `mmap`/`munmap` pairs and page faults (README, Dependencies).
/// No child of lock-exec allocates before its `exec` (the command's clone child and the helpers' pre-exec hooks
/// make system calls only), so dlmalloc's lock, which a fork could copy held by another thread, is never taken in
/// one (`enable_alloc_after_fork` is not needed).
#[global_allocator]
static ALLOCATOR: dlmalloc::GlobalDlmalloc = dlmalloc::GlobalDlmalloc;

use lock_exec::cli::{self, Command, Topic};
use lock_exec::log::{Escape, Logger, escape_controls};
use lock_exec::{Env, Exit, commands, error_chain, output};
use signal_hook::iterator::Signals;

/// `lock-exec version`: the version, the git commit built (`-dirty` when the tree had changes, `unknown` outside
/// git) and the target triple; the last two come from build.rs.
const VERSION: &str = concat!(
    "lock-exec ",
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("LOCK_EXEC_COMMIT"),
    ", ",
    env!("LOCK_EXEC_TARGET"),
    ")"
);

const USAGE: &str = "\
lock-exec: run a command at most once across many machines, holding a lock in DynamoDB

Usage:
  lock-exec [OPTIONS] run <KEY> <COMMAND>             COMMAND is split on white space (no shell)
  lock-exec [OPTIONS] run <KEY> -- <PROGRAM> [ARGS]... exact argv (one word with spaces: a COMMAND)
  lock-exec [OPTIONS] unlock [--delete] <KEY>         force release (or delete the item)
  lock-exec [OPTIONS] status <KEY>                    exit 0 when free, 3 when held
  lock-exec [OPTIONS] list                            every lock item (needs dynamodb:Scan)
  lock-exec [OPTIONS] table create                    create the table (if missing) and enable TTL on ttl
  lock-exec [OPTIONS] doctor                          check settings, credentials, table, permissions, clock
  lock-exec completion bash|zsh|fish                  shell completion script
  lock-exec version                                   (also lock-exec --version or -V, alone)

Options (before or after the subcommand; every subcommand takes them, but -V):
  -t, --table NAME          DynamoDB table [env LOCK_EXEC_TABLE] (default lock-exec)
  -r, --region REGION       AWS region [env AWS_REGION, AWS_DEFAULT_REGION, profile]
      --endpoint-url URL    DynamoDB endpoint [env AWS_ENDPOINT_URL_DYNAMODB, AWS_ENDPOINT_URL]
      --profile NAME        shared config profile [env AWS_PROFILE]
  -e, --expire DURATION     lease length, renewed every third [env LOCK_EXEC_EXPIRE] (default 1m, min 1s);
                            used by run
      --log-format FORMAT   json (default) or text [env LOCK_EXEC_LOG_FORMAT]
      --retain DURATION     keep an unused lock item this long (its ttl) [env LOCK_EXEC_RETAIN] (default
                            720h, min 1h); used by the subcommands that write
      --max-clock-skew DURATION
                            the largest clock difference allowed between hosts [env
                            LOCK_EXEC_MAX_CLOCK_SKEW] (default 2s): a lease counts as ended only this
                            long after its expire; run refuses to start its command when this host's
                            clock is off DynamoDB's by more (warned beyond half)
  -q, --quiet               errors only
  -v, --verbose             request-level debug lines
  -h, --help                this help
  -V, --version             version, git commit and target; alone, with no subcommand

Examples:
  lock-exec table create                                      once: create the table (and TTL)
  lock-exec run nightly-report -- /app/report --full          at most one host runs it at a time
  lock-exec run -e 5m --locked-exit-code 3 backup 'backup.sh'  exit 3 when another host holds the key

Exit codes:
  the command's exit code when it ran (128+N when it died of signal N)
  --locked-exit-code (default 0) when the key is held by someone else and the command did not run
  1    doctor: a check failed                 3    status: the key is held
  64   usage error                            69   DynamoDB unreachable or failing after retries
  70   unexpected answer from DynamoDB        71   a thread or the command's process could not be created
  74   stdout could not be written            75   the lock was lost; the command was stopped
  77   access denied, credentials rejected    78   configuration: no credentials or region, no table
  126  the command is not executable          127  the command was not found

Run 'lock-exec help SUBCOMMAND' for its options; 'man lock-exec' and the README say more.
";

const RUN_USAGE: &str = "\
Usage:
  lock-exec [OPTIONS] run <KEY> <COMMAND>
  lock-exec [OPTIONS] run <KEY> -- <PROGRAM> [ARGS]...

Takes the lock KEY, runs the command while renewing the lease, releases the lock, and exits with the
command's exit code (128+N when it died of signal N). When someone else holds KEY, logs
'did not run command. key is locked' and exits with --locked-exit-code.

Run options (and the common options of 'lock-exec --help', -e/--expire among them):
      --shell                 run COMMAND as /bin/sh -c COMMAND
      --locked-exit-code N    exit status when the key is held (default 0)
      --kill-after DURATION   grace between a forwarded signal and SIGKILL (default 10s)
      --wait-descendants      keep the lock until every process the command started has exited
      --clean-env-aws         remove the AWS credential variables from the command's environment
      --wait DURATION         while KEY is held, keep trying this long (then --locked-exit-code)
      --keep DURATION         hold the lock at least this long after the acquire, even when the command
                              ends sooner (the exit is not delayed): for cron jobs in several clusters
      --owner ID              stable owner identity [env LOCK_EXEC_OWNER_ID]: a run with the same ID (a
                              retried pod) takes the lock at once; default a random token per process
      --limit N               at most N holders at once, as slot items KEY#0..KEY#N-1 (default 1: KEY);
                              the command gets LOCK_EXEC_SLOT

A single word after -- that holds white space is a COMMAND string, as the Go tool reads it. A KEY that
starts with - goes after --: run -- -k 'COMMAND' (also status -- -k, unlock -- -k).

Durations use Go syntax: 300ms, 90s, 1h30m. Common options: see 'lock-exec --help'.
";

const UNLOCK_USAGE: &str = "\
Usage:
  lock-exec [OPTIONS] unlock <KEY>            clear the lease whoever holds it (keeps the fence counter)
  lock-exec [OPTIONS] unlock --delete <KEY>   delete the item, as the Go tool's unlock does

A key run with --limit N has one item per slot: unlock 'KEY#0' .. 'KEY#N-1' ('lock-exec list' shows them).
Common options: see 'lock-exec --help'.
";

const STATUS_USAGE: &str = "\
Usage:
  lock-exec [OPTIONS] status <KEY>

Prints the lock item (JSON with --log-format json, aligned text otherwise) and exits 0 when the key is free
or was never used, 3 when it is held. A key run with --limit N has one item per slot: status 'KEY#0' ..
'KEY#N-1' ('lock-exec list' shows them). Common options: see 'lock-exec --help'.
";

const LIST_USAGE: &str = "\
Usage:
  lock-exec [OPTIONS] list

Prints every lock item of the table with its state (held or free), holder, pid, lease end, fence and, when the
item has them, its last run: one JSON object per line with --log-format json (in scan order), aligned columns
sorted by key with --log-format text. Needs dynamodb:Scan on the table. Common options: see 'lock-exec --help'.
";

const TABLE_USAGE: &str = "\
Usage:
  lock-exec [OPTIONS] table create

Creates the table (-t, default lock-exec) with partition key 'key' (S) and on-demand billing, waits until it is
ACTIVE, and enables Time to Live on the attribute 'ttl'. A table that already exists with that key schema is
fine (TTL is still enabled); one with another key schema is an error (exit 78). When TTL cannot be enabled (an
emulator without the TTL API, no permission) a warning says so and the exit status is 0. Needs
dynamodb:CreateTable, dynamodb:DescribeTable and dynamodb:UpdateTimeToLive. Common options: see 'lock-exec --help'.
";

const DOCTOR_USAGE: &str = "\
Usage:
  lock-exec [OPTIONS] doctor

Checks what a run needs and prints one line per check, pass, fail or skip: settings, region, endpoint,
credentials (source, expiry), DynamoDB reachable, the table and its key schema (DescribeTable; skipped when not
allowed), TTL on 'ttl' (DescribeTimeToLive; skipped when not allowed), UpdateItem/GetItem/DeleteItem on a probe
key, and the local clock against the server's Date header. Exits 0 when every check that ran passed, 1 when
one failed. JSON lines with --log-format json, aligned text otherwise. Common options: see 'lock-exec --help'.
";

const COMPLETION_USAGE: &str = "\
Usage:
  lock-exec completion bash|zsh|fish

Prints a completion script for the shell:
  bash   source <(lock-exec completion bash)        (in ~/.bashrc)
  zsh    lock-exec completion zsh > \"${fpath[1]}/_lock-exec\"
  fish   lock-exec completion fish > ~/.config/fish/completions/lock-exec.fish
";

const VERSION_USAGE: &str = "\
Usage:
  lock-exec version        (also --version, -V)

Prints one line: the version, the git commit it was built from (-dirty when a file it
is built from differed from it) and the target triple, e.g.
  lock-exec 0.1.0 (commit 7746787, x86_64-unknown-linux-musl)
";

fn main() -> ExitCode {
    lock_exec::process::collect_children();
    let env = Env::real();
    let command = match cli::parse_from(std::env::args_os().skip(1), &env) {
        Ok(command) => command,
        Err(e) => {
            // The message may quote the user's text as given (an unknown option): no control, bidi or line
            // separator character of it reaches the terminal raw.
            let message = escape_controls(&error_chain(&e), Escape::Text);
            output::error_line(&format!("lock-exec: {message}\nRun 'lock-exec --help' for usage."));
            return ExitCode::from(e.exit().code());
        }
    };
    let (log, result) = match command {
        Command::Version => {
            return finish_output(output::print(&format!("{VERSION}\n")).map(|()| Exit::Success));
        }
        Command::Help(topic) => {
            return finish_output(
                output::print(match topic {
                    None => USAGE,
                    Some(Topic::Run) => RUN_USAGE,
                    Some(Topic::Unlock) => UNLOCK_USAGE,
                    Some(Topic::Status) => STATUS_USAGE,
                    Some(Topic::List) => LIST_USAGE,
                    Some(Topic::Table) => TABLE_USAGE,
                    Some(Topic::Doctor) => DOCTOR_USAGE,
                    Some(Topic::Completion) => COMPLETION_USAGE,
                    Some(Topic::Version) => VERSION_USAGE,
                })
                .map(|()| Exit::Success),
            );
        }
        Command::Run(common, args) => {
            // Before any thread starts, every signal the run catches is blocked, in this thread and so in every
            // thread it creates: none is acted on or lost; each stays pending until the signal thread takes it
            // with sigwaitinfo (as dumb-init does). No handler is installed, so nothing is registered per signal.
            if let Err(e) = lock_exec::process::block_signals(lock_exec::supervise::caught_signals()) {
                output::error_line(&format!("lock-exec: cannot block signals: {e}"));
                return ExitCode::from(Exit::Software.code());
            }
            let log = logger(&common)
                .with("key", args.key.clone())
                .with_context("command", lock_exec::log::clip_display(&args.display));
            let result = commands::run(&common, &args, &env, &log);
            (log, result)
        }
        Command::Unlock(common, args) => {
            if let Err(code) = kill_helpers_on_signals() {
                return code;
            }
            let log = logger(&common).with("key", args.key.clone());
            let result = commands::unlock(&common, &args, &env, &log);
            (log, result)
        }
        Command::Status(common, key) => {
            if let Err(code) = kill_helpers_on_signals() {
                return code;
            }
            let log = logger(&common).with("key", key.clone());
            let result = commands::status(&common, &key, &env, &log);
            (log, result)
        }
        Command::List(common) => {
            let log = logger(&common);
            let result = commands::list(&common, &env, &log);
            (log, result)
        }
        Command::TableCreate(common) => {
            let log = logger(&common);
            let result = commands::table_create(&common, &env, &log);
            (log, result)
        }
        Command::Doctor(common) => {
            let log = logger(&common);
            let result = commands::doctor(&common, &env, &log);
            (log, result)
        }
        Command::Completion(shell) => return finish_output(commands::completion(shell)),
    };
    // lock-exec exits below, whatever the result: a credential_process helper still running in a thread that
    // is not waited for (a refresh during the lease) must not outlive it.
    commands::kill_credential_helpers();
    if let Some(signal) = dying_of() {
        // `status`/`unlock` got a stop signal and killed the helpers; the helper's death (an error here) must not
        // win the race with that signal.
        die_of(signal);
    }
    match result {
        Ok(Exit::Signaled(signal)) => {
            // Die of the command's signal, as sudo does, so a calling shell sees it (bash stops a script on a
            // child's SIGINT death); PID 1 cannot die of a signal it sends itself, and a core-dumping signal
            // would leave a core of lock-exec's own: those exit 128+N.
            if !lock_exec::process::is_pid1() && lock_exec::process::terminates_quietly(signal) {
                let _ = signal_hook::low_level::emulate_default_handler(signal);
            }
            ExitCode::from(Exit::Signaled(signal).code())
        }
        Ok(exit) => ExitCode::from(exit.code()),
        Err(e) => {
            let exit = e.exit();
            log.error(&error_chain(&e), &[("exit_code", exit.code().into())]);
            ExitCode::from(exit.code())
        }
    }
}

/// For `status` and `unlock`, which otherwise leave signals to their default action: on a signal that ends
/// lock-exec, kill any `credential_process` helper first (it leads its own process group, so it would outlive
/// lock-exec), then die of the signal as before. The watching thread is not joined: it ends with the process.
/// When the thread cannot be created (a process limit), the handlers would swallow the signals: the command
/// ends at once with one line and exit 71, as `run` does, having sent nothing.
fn kill_helpers_on_signals() -> Result<(), ExitCode> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM};
    // Registered before the thread starts (and before any other thread); without the handlers, the default
    // actions stay, as before.
    // A signal lock-exec started with ignored (`nohup`, a script's `&` job) stays ignored, as in `run`.
    let stops =
        [SIGHUP, SIGINT, SIGQUIT, SIGTERM].into_iter().filter(|&signal| !lock_exec::process::is_ignored(signal));
    let Ok(mut signals) = Signals::new(stops) else { return Ok(()) };
    let watcher = lock_exec::worker::spawn_thread("signals", "signal handling", move || {
        if let Some(signal) = signals.forever().next() {
            DYING_OF.store(signal, Ordering::SeqCst);
            commands::kill_credential_helpers();
            die_of(signal);
        }
    });
    match watcher {
        Ok(_) => Ok(()),
        Err(e) => {
            output::error_line(&format!("lock-exec: {}", error_chain(&e)));
            Err(ExitCode::from(e.exit().code()))
        }
    }
}

/// The stop signal `status` or `unlock` is dying of, once one came (0: none).
static DYING_OF: AtomicI32 = AtomicI32::new(0);

fn dying_of() -> Option<i32> {
    Some(DYING_OF.load(Ordering::SeqCst)).filter(|&signal| signal != 0)
}

/// Dies of `signal` (its default action); exits 128+N where that does not end the process (PID 1).
fn die_of(signal: i32) -> ! {
    let _ = signal_hook::low_level::emulate_default_handler(signal);
    std::process::exit(128 + signal);
}

/// The exit code of a command that only prints (version, help, completion); a failed write is one line on
/// stderr and exit 74.
fn finish_output(result: Result<Exit, lock_exec::Error>) -> ExitCode {
    match result {
        Ok(exit) => ExitCode::from(exit.code()),
        Err(e) => {
            output::error_line(&format!("lock-exec: {}", error_chain(&e)));
            ExitCode::from(e.exit().code())
        }
    }
}

fn logger(common: &cli::Common) -> Logger {
    Logger::new(common.log_format, common.verbosity.level())
}
