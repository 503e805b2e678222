//! The `lock-exec` binary: argv -> cli::parse_from -> run -> exit code. The only place that prints a fatal
//! error and exits.

use std::process::ExitCode;

use lock_exec::cli::{self, Command, Topic};
use lock_exec::log::Logger;
use lock_exec::{Env, Exit, error_chain, run};
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
  lock-exec [OPTIONS] run <KEY> -- <PROGRAM> [ARGS]... exact argv
  lock-exec [OPTIONS] unlock [--delete] <KEY>         force release (or delete the item)
  lock-exec [OPTIONS] status <KEY>                    exit 0 when free, 3 when held
  lock-exec version

Options (before or after the subcommand):
  -t, --table NAME          DynamoDB table [env LOCK_EXEC_TABLE] (default lock-exec)
  -r, --region REGION       AWS region [env AWS_REGION, AWS_DEFAULT_REGION, profile]
      --endpoint-url URL    DynamoDB endpoint [env AWS_ENDPOINT_URL_DYNAMODB, AWS_ENDPOINT_URL]
      --profile NAME        shared config profile [env AWS_PROFILE]
      --log-format FORMAT   json (default) or text
  -q, --quiet               errors only
  -v, --verbose             request-level debug lines
  -h, --help                this help
  -V, --version             version, git commit and target

Run 'lock-exec help run' for run's options. Exit codes are listed in the README.
";

const RUN_USAGE: &str = "\
Usage:
  lock-exec [OPTIONS] run <KEY> <COMMAND>
  lock-exec [OPTIONS] run <KEY> -- <PROGRAM> [ARGS]...

Takes the lock KEY, runs the command while renewing the lease, releases the lock, and exits with the
command's exit code (128+N when it died of signal N). When someone else holds KEY, logs
'did not run command. key is locked' and exits with --locked-exit-code.

Run options:
  -e, --expire DURATION       lease length, renewed every third [env LOCK_EXEC_EXPIRE] (default 1m, min 1s)
      --shell                 run COMMAND as /bin/sh -c COMMAND
      --locked-exit-code N    exit status when the key is held (default 0)
      --kill-after DURATION   grace between a forwarded signal and SIGKILL (default 10s)

Durations use Go syntax: 300ms, 90s, 1h30m. Common options: see 'lock-exec --help'.
";

const UNLOCK_USAGE: &str = "\
Usage:
  lock-exec [OPTIONS] unlock <KEY>            clear the lease whoever holds it (keeps the fence counter)
  lock-exec [OPTIONS] unlock --delete <KEY>   delete the item, as the Go tool's unlock does

Common options: see 'lock-exec --help'.
";

const STATUS_USAGE: &str = "\
Usage:
  lock-exec [OPTIONS] status <KEY>

Prints the lock item (JSON with --log-format json, aligned text otherwise) and exits 0 when the key is free
or was never used, 3 when it is held. Common options: see 'lock-exec --help'.
";

fn main() -> ExitCode {
    let env = Env::real();
    let command = match cli::parse_from(std::env::args_os().skip(1), &env) {
        Ok(command) => command,
        Err(e) => {
            eprintln!("lock-exec: {}\nRun 'lock-exec --help' for usage.", error_chain(&e));
            return ExitCode::from(e.exit().code());
        }
    };
    let (log, result) = match command {
        Command::Version => {
            println!("{VERSION}");
            return ExitCode::SUCCESS;
        }
        Command::Help(topic) => {
            print!(
                "{}",
                match topic {
                    None => USAGE,
                    Some(Topic::Run) => RUN_USAGE,
                    Some(Topic::Unlock) => UNLOCK_USAGE,
                    Some(Topic::Status) => STATUS_USAGE,
                }
            );
            return ExitCode::SUCCESS;
        }
        Command::Run(common, args) => {
            // Signals are registered before any thread starts.
            let signals = match Signals::new(lock_exec::supervise::caught_signals()) {
                Ok(signals) => signals,
                Err(e) => {
                    eprintln!("lock-exec: cannot register signal handlers: {e}");
                    return ExitCode::from(Exit::Software.code());
                }
            };
            let log = logger(&common).with("key", args.key.clone()).with("command", args.display.clone());
            let result = run::run(&common, &args, &env, signals, &log);
            (log, result)
        }
        Command::Unlock(common, args) => {
            let log = logger(&common).with("key", args.key.clone());
            let result = run::unlock(&common, &args, &env, &log);
            (log, result)
        }
        Command::Status(common, key) => {
            let log = logger(&common).with("key", key.clone());
            let result = run::status(&common, &key, &env, &log);
            (log, result)
        }
    };
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

fn logger(common: &cli::Common) -> Logger {
    Logger::new(common.log_format, common.verbosity)
}
