//! The command line: lexopt events -> a validated [`Command`]. No I/O beyond the [`Env`] seam;
//! `--help` and `--version` come back as values.

use std::ffi::OsString;
use std::time::Duration;

use lexopt::prelude::*;

use crate::duration;
use crate::env::Env;
use crate::error::Error;

/// The default table name.
pub const DEFAULT_TABLE: &str = "lock-exec";
/// The default lease length.
pub const DEFAULT_EXPIRE: Duration = Duration::from_secs(60);
/// The shortest lease accepted.
pub const MIN_EXPIRE: Duration = Duration::from_secs(1);
/// The default grace between a forwarded signal and SIGKILL.
pub const DEFAULT_KILL_AFTER: Duration = Duration::from_secs(10);
/// The longest key DynamoDB accepts as a partition key, in bytes.
pub const MAX_KEY_BYTES: usize = 2048;
/// How long an unused lock item is kept by default (its `ttl`): 30 days.
pub const DEFAULT_RETAIN: Duration = Duration::from_secs(720 * 3600);
/// The shortest retention accepted.
pub const MIN_RETAIN: Duration = Duration::from_secs(3600);
/// `--max-clock-skew` when neither the flag nor `LOCK_EXEC_MAX_CLOCK_SKEW` is given.
pub const DEFAULT_MAX_CLOCK_SKEW: Duration = Duration::from_secs(2);
/// The most holders `--limit` allows (each attempt tries every slot item).
pub const MAX_LIMIT: u32 = 100;
/// The longest `--owner` identity, in bytes.
pub const MAX_OWNER_ID_BYTES: usize = 1024;

/// What the user asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `run KEY COMMAND` or `run KEY -- PROGRAM ARGS...`.
    Run(Common, Run),
    /// `unlock [--delete] KEY`.
    Unlock(Common, Unlock),
    /// `status KEY`.
    Status(Common, String),
    /// `list`: every lock item of the table.
    List(Common),
    /// `table create`.
    TableCreate(Common),
    /// `doctor`: checks the configuration, the table and the permissions.
    Doctor(Common),
    /// `completion SHELL`: a shell completion script.
    Completion(Shell),
    /// `version`, `--version`, `-V`.
    Version,
    /// `help`, `--help`, `-h`; the subcommand whose help was asked for, if any.
    Help(Option<Topic>),
}

/// A subcommand, for help texts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topic {
    /// `run`.
    Run,
    /// `unlock`.
    Unlock,
    /// `status`.
    Status,
    /// `list`.
    List,
    /// `table create`.
    Table,
    /// `doctor`.
    Doctor,
    /// `completion`.
    Completion,
    /// `version` (only as `help version`: `version` itself is parsed before any topic).
    Version,
}

impl Topic {
    /// The topic a subcommand name stands for (`help NAME`, `NAME --help`).
    fn from_name(name: &str) -> Option<Topic> {
        Some(match name {
            "run" => Topic::Run,
            "unlock" => Topic::Unlock,
            "status" => Topic::Status,
            "list" => Topic::List,
            "table" => Topic::Table,
            "doctor" => Topic::Doctor,
            "completion" => Topic::Completion,
            _ => return None,
        })
    }
}

/// The subcommands, as usage errors list them.
const SUBCOMMANDS: &str = "run, unlock, status, list, table, doctor, completion, version";

/// The help topics, as `help TOPIC` errors list them.
const TOPICS: &str = "run, unlock, status, list, table, doctor, completion, version";

/// Every long flag the parser knows, for "did you mean" (the completion scripts' flag table must match it).
pub const LONG_FLAGS: [&str; 23] = [
    "table",
    "region",
    "expire",
    "endpoint-url",
    "profile",
    "log-format",
    "quiet",
    "verbose",
    "help",
    "version",
    "shell",
    "locked-exit-code",
    "kill-after",
    "wait-descendants",
    "clean-env-aws",
    "wait",
    "keep",
    "owner",
    "limit",
    "retain",
    "max-clock-skew",
    "delete",
    "backend",
];

/// A shell `completion` writes a script for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shell {
    /// bash.
    Bash,
    /// zsh.
    Zsh,
    /// fish.
    Fish,
}

pub use crate::log::Format as LogFormat;

/// How much to log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verbosity {
    /// Errors only (`-q`).
    Quiet,
    /// Info and above.
    Normal,
    /// Debug lines too (`-v`).
    Verbose,
}

impl Verbosity {
    /// The lowest level the logger writes.
    pub fn level(self) -> crate::log::Level {
        match self {
            Verbosity::Quiet => crate::log::Level::Error,
            Verbosity::Normal => crate::log::Level::Info,
            Verbosity::Verbose => crate::log::Level::Debug,
        }
    }
}

/// Options every subcommand takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Common {
    /// The DynamoDB table.
    pub table: String,
    /// `--region`, when given.
    pub region: Option<String>,
    /// `--endpoint-url`, when given.
    pub endpoint_url: Option<String>,
    /// `--profile`, when given.
    pub profile: Option<String>,
    /// `--log-format`.
    pub log_format: LogFormat,
    /// `-q` / `-v`.
    pub verbosity: Verbosity,
    /// How long an unused lock item is kept (the `ttl` every write sets counts from its lease end).
    pub retain: Duration,
    /// `--max-clock-skew`: a lease counts as ended only this long after its `expire`; this host's clock may be
    /// off the server's by at most this much for `run` to start a command (and half of it without a warning).
    pub max_clock_skew: Duration,
}

/// `run`'s arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    /// The lock key.
    pub key: String,
    /// The program and its arguments.
    pub argv: Vec<OsString>,
    /// The command as logged (the COMMAND string, or argv joined with spaces).
    pub display: String,
    /// Lease length.
    pub expire: Duration,
    /// Exit status when the key is held by someone else.
    pub locked_exit_code: u8,
    /// Grace between a forwarded signal and SIGKILL.
    pub kill_after: Duration,
    /// Keep the lock until every process the command started has exited by itself, instead of stopping them
    /// when the command exits.
    pub wait_descendants: bool,
    /// Remove the AWS credential variables from the command's environment.
    pub clean_env_aws: bool,
    /// `--keep`: hold the lock at least this long after the acquire, even when the command ends sooner.
    pub keep: Option<Duration>,
    /// `--wait`: keep trying this long while the key is held.
    pub wait: Option<Duration>,
    /// `--owner`: a stable owner identity that reclaims its own lock at once.
    pub owner_id: Option<String>,
    /// `--limit`: at most this many holders at once (slot items `KEY#0`..); 1 is the plain `KEY`.
    pub limit: u32,
    /// The shell syntax a single COMMAND string holds (split on whitespace, no shell), for a warning.
    pub shell_syntax: Option<&'static str>,
}

/// `unlock`'s arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unlock {
    /// The lock key.
    pub key: String,
    /// Delete the item instead of clearing the lease.
    pub delete: bool,
}

/// Every flag as given, before we know which subcommand they belong to.
#[derive(Default)]
struct Flags {
    /// The Go tool's `--backend`: `dynamodb` (its default) is accepted and changes nothing.
    backend: Option<String>,
    table: Option<String>,
    region: Option<String>,
    endpoint_url: Option<String>,
    profile: Option<String>,
    expire: Option<String>,
    log_format: Option<String>,
    quiet: bool,
    verbose: bool,
    shell: bool,
    locked_exit_code: Option<String>,
    kill_after: Option<String>,
    wait_descendants: bool,
    clean_env_aws: bool,
    keep: Option<String>,
    wait: Option<String>,
    owner: Option<String>,
    limit: Option<String>,
    retain: Option<String>,
    max_clock_skew: Option<String>,
    delete: bool,
    help: bool,
    version: bool,
}

/// Parses the arguments after the program name.
pub fn parse_from<I>(args: I, env: &Env) -> Result<Command, Error>
where
    I: IntoIterator,
    I::Item: Into<OsString>,
{
    let mut parser = lexopt::Parser::from_args(args);
    let mut flags = Flags::default();
    let mut positionals: Vec<OsString> = Vec::new();
    let mut after_dashes: Option<Vec<OsString>> = None;
    loop {
        // Only between arguments: in the middle of `-qtTABLE` or after `--delete=false` the rest is still to read.
        if let Some(mut raw) = parser.try_raw_args()
            && raw.peek().is_some_and(|next| next == "--")
        {
            raw.next();
            after_dashes = Some(raw.collect());
            break;
        }
        let arg = match parser.next() {
            Ok(Some(arg)) => arg,
            Ok(None) => break,
            // `-q=false`: pflag reads a value joined by `=` to a short switch (lexopt reports it as unexpected).
            Err(lexopt::Error::UnexpectedValue { option, value }) if SHORT_SWITCHES.contains(&option.as_str()) => {
                let on = parse_switch(&option, &value)?;
                match option.as_str() {
                    "-q" => flags.quiet = on,
                    "-v" => flags.verbose = on,
                    "-h" => flags.help = on,
                    _ => flags.version = on,
                }
                continue;
            }
            Err(e) => return Err(usage(e)),
        };
        match arg {
            Short('t') | Long("table") => flags.table = Some(string_value(&mut parser, "--table")?),
            Short('r') | Long("region") => flags.region = Some(string_value(&mut parser, "--region")?),
            Short('e') | Long("expire") => flags.expire = Some(string_value(&mut parser, "--expire")?),
            Long("endpoint-url") => flags.endpoint_url = Some(string_value(&mut parser, "--endpoint-url")?),
            Long("profile") => flags.profile = Some(string_value(&mut parser, "--profile")?),
            Long("log-format") => flags.log_format = Some(string_value(&mut parser, "--log-format")?),
            Short('q') => flags.quiet = true,
            Long("quiet") => flags.quiet = bool_flag(&mut parser, "--quiet")?,
            Short('v') => flags.verbose = true,
            Long("verbose") => flags.verbose = bool_flag(&mut parser, "--verbose")?,
            Long("shell") => flags.shell = bool_flag(&mut parser, "--shell")?,
            Long("locked-exit-code") => flags.locked_exit_code = Some(string_value(&mut parser, "--locked-exit-code")?),
            Long("kill-after") => flags.kill_after = Some(string_value(&mut parser, "--kill-after")?),
            Long("wait-descendants") => flags.wait_descendants = bool_flag(&mut parser, "--wait-descendants")?,
            Long("clean-env-aws") => flags.clean_env_aws = bool_flag(&mut parser, "--clean-env-aws")?,
            Long("keep") => flags.keep = Some(string_value(&mut parser, "--keep")?),
            Long("wait") => flags.wait = Some(string_value(&mut parser, "--wait")?),
            Long("owner") => flags.owner = Some(string_value(&mut parser, "--owner")?),
            Long("limit") => flags.limit = Some(string_value(&mut parser, "--limit")?),
            Long("retain") => flags.retain = Some(string_value(&mut parser, "--retain")?),
            Long("max-clock-skew") => flags.max_clock_skew = Some(string_value(&mut parser, "--max-clock-skew")?),
            Long("delete") => flags.delete = bool_flag(&mut parser, "--delete")?,
            Long("backend") => flags.backend = Some(string_value(&mut parser, "--backend")?),
            // The Go tool's options of its ers backend, which it ignores with its dynamodb backend (the only one
            // lock-exec has: --backend ers is refused): accepted and ignored, so its command lines keep working.
            Long(name @ ("ers-env" | "ers-partition-id" | "ers-region" | "ers-endpoint")) => {
                let flag = format!("--{name}");
                string_value(&mut parser, &flag)?;
            }
            Short('h') => flags.help = true,
            Long("help") => flags.help = bool_flag(&mut parser, "--help")?,
            Short('V') => flags.version = true,
            Long("version") => flags.version = bool_flag(&mut parser, "--version")?,
            Value(value) => positionals.push(value),
            Long(name) => return Err(unknown_flag(name)),
            // `run -k CMD` may mean a key `-k`: say how to write one.
            Short(c)
                if positionals.len() == 1 && matches!(positionals[0].to_str(), Some("run" | "status" | "unlock")) =>
            {
                let example = match positionals[0].to_str() {
                    Some("run") => "lock-exec run [OPTIONS] -- -KEY COMMAND",
                    Some("status") => "lock-exec status [OPTIONS] -- -KEY",
                    _ => "lock-exec unlock [OPTIONS] -- -KEY",
                };
                return Err(Error::Usage(format!(
                    "invalid option '-{c}' (a KEY that starts with '-' goes after '--', the options before it: \
                     {example})"
                )));
            }
            other => return Err(usage(other.unexpected())),
        }
    }
    // `--version` / `-V` is lock-exec's own and goes alone (`-h` wins, as in cobra): with a subcommand it is a
    // usage error, never a silent exit 0 in place of a run (`run k node --version` meant node's).
    if flags.version && !flags.help {
        let alone = after_dashes.is_none()
            && (positionals.is_empty() || (positionals.len() == 1 && positionals[0] == "version"));
        if alone {
            return Ok(Command::Version);
        }
        let mut message = "--version (-V) goes alone: lock-exec --version".to_owned();
        if positionals.first().is_some_and(|first| first == "run") {
            message.push_str("; a command's own --version goes after '--' (lock-exec run KEY -- PROG --version)");
        }
        return Err(Error::Usage(message));
    }
    let mut positionals = positionals.into_iter();
    let subcommand = match positionals.next() {
        None if flags.help => return Ok(Command::Help(None)),
        None => return Err(Error::Usage(format!("missing subcommand ({SUBCOMMANDS})"))),
        Some(sub) => sub.into_string().map_err(|_| Error::Usage("subcommand is not valid UTF-8".into()))?,
    };
    let topic = match subcommand.as_str() {
        "version" if flags.help => return Ok(Command::Help(Some(Topic::Version))),
        "version" => {
            return no_arguments(positionals.collect(), "version").map(|()| Command::Version);
        }
        "help" => return help(positionals.collect()),
        other => Topic::from_name(other)
            .ok_or_else(|| Error::Usage(format!("unknown subcommand {other:?} ({SUBCOMMANDS})")))?,
    };
    if flags.help {
        return Ok(Command::Help(Some(topic)));
    }
    // `completion` uses no settings: a LOCK_EXEC_* variable the other subcommands refuse must not break the shell
    // start-up that sources its script (its flags are still checked).
    let no_env;
    let env = if topic == Topic::Completion {
        no_env = Env::from_pairs::<&str, &str>(&[]);
        &no_env
    } else {
        env
    };
    let common = common(&flags, env)?;
    let mut rest: Vec<OsString> = positionals.collect();
    // `--` ends lock-exec's options. Before the KEY, what follows are the positionals, KEY first, as the Go tool
    // (cobra) reads them: the way to name a key that starts with `-` (`run -- -k 'cmd'`, `status -- -k`). After
    // `run KEY` it starts the command's argv; so does a second `--` after `run -- KEY`.
    if rest.is_empty()
        && matches!(topic, Topic::Run | Topic::Status | Topic::Unlock)
        && let Some(mut words) = after_dashes.take()
    {
        if let Some(second) = words.iter().skip(1).position(|word| word == "--") {
            after_dashes = Some(words.split_off(second + 2));
            words.truncate(second + 1);
        }
        rest = words;
    }
    let only_run = |given: bool, flag: &str| {
        if given && topic != Topic::Run { Err(Error::Usage(format!("{flag} applies to run only"))) } else { Ok(()) }
    };
    only_run(flags.shell, "--shell")?;
    only_run(flags.locked_exit_code.is_some(), "--locked-exit-code")?;
    only_run(flags.kill_after.is_some(), "--kill-after")?;
    only_run(flags.wait_descendants, "--wait-descendants")?;
    only_run(flags.clean_env_aws, "--clean-env-aws")?;
    only_run(flags.keep.is_some(), "--keep")?;
    only_run(flags.wait.is_some(), "--wait")?;
    only_run(flags.owner.is_some(), "--owner")?;
    only_run(flags.limit.is_some(), "--limit")?;
    // `-e` is a persistent flag in the Go tool: every subcommand accepts it, only `run` uses it. It is still
    // checked everywhere, so a typo is caught where it is written.
    let (expire, named) = flag_or_env(&flags.expire, env, "--expire", "LOCK_EXEC_EXPIRE");
    let expire = duration_flag(expire, DEFAULT_EXPIRE, named)?;
    if expire < MIN_EXPIRE {
        return Err(Error::Usage(format!("{named} {} is shorter than the minimum 1s", duration::format(expire))));
    }
    if topic == Topic::Run {
        longest_hold(expire, named, env)?;
    }
    if flags.delete && topic != Topic::Unlock {
        return Err(Error::Usage("--delete applies to unlock only".into()));
    }
    if after_dashes.is_some() && topic != Topic::Run {
        return Err(Error::Usage("`--` applies to run only".into()));
    }
    match topic {
        Topic::Run => Ok(Command::Run(common, run(&flags, env, expire, rest, after_dashes)?)),
        Topic::Unlock => {
            let key = single_key(rest, "unlock")?;
            Ok(Command::Unlock(common, Unlock { key, delete: flags.delete }))
        }
        Topic::Status => Ok(Command::Status(common, single_key(rest, "status")?)),
        Topic::List => no_arguments(rest, "list").map(|()| Command::List(common)),
        Topic::Doctor => no_arguments(rest, "doctor").map(|()| Command::Doctor(common)),
        Topic::Table => table(rest).map(|()| Command::TableCreate(common)),
        Topic::Completion => completion(rest),
        Topic::Version => no_arguments(rest, "version").map(|()| Command::Version),
    }
}

/// `help [TOPIC]`: an unknown topic, or more than one, is a usage error.
fn help(rest: Vec<OsString>) -> Result<Command, Error> {
    let mut rest = rest.into_iter();
    let Some(name) = rest.next() else { return Ok(Command::Help(None)) };
    let name = name.to_string_lossy();
    let topic = match name.as_ref() {
        "version" => Topic::Version,
        "help" => return no_arguments(rest.collect(), "help help").map(|()| Command::Help(None)),
        other => {
            Topic::from_name(other).ok_or_else(|| Error::Usage(format!("help: unknown topic {name:?} ({TOPICS})")))?
        }
    };
    no_arguments(rest.collect(), "help TOPIC").map(|()| Command::Help(Some(topic)))
}

/// An unknown `--name`: lexopt's message, with the closest known flag when one is a typo away.
fn unknown_flag(name: &str) -> Error {
    let given = name.trim_start_matches('-');
    let given = given.split_once('=').map_or(given, |(flag, _)| flag);
    match closest_flag(given) {
        Some(flag) => Error::Usage(format!("invalid option '--{given}' (did you mean --{flag}?)")),
        None => Error::Usage(format!("invalid option '--{given}'")),
    }
}

/// The known long flag nearest to `given` when it is close: at most 1 edit for short names, 2 from 5 characters.
fn closest_flag(given: &str) -> Option<&'static str> {
    let allowed = if given.chars().count() < 5 { 1 } else { 2 };
    LONG_FLAGS
        .iter()
        .map(|flag| (edit_distance(given, flag), *flag))
        .filter(|(distance, _)| *distance <= allowed)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, flag)| flag)
}

/// Levenshtein distance with adjacent transpositions counted as one edit (optimal string alignment).
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // rows[i][j]: the distance between a[..i] and b[..j]
    let mut rows = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in rows.iter_mut().enumerate() {
        row[0] = i;
    }
    rows[0] = (0..=b.len()).collect();
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (rows[i - 1][j] + 1).min(rows[i][j - 1] + 1).min(rows[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(rows[i - 2][j - 2] + 1);
            }
            rows[i][j] = best;
        }
    }
    rows[a.len()][b.len()]
}

fn no_arguments(rest: Vec<OsString>, subcommand: &str) -> Result<(), Error> {
    match rest.first() {
        None => Ok(()),
        Some(extra) => Err(Error::Usage(format!("{subcommand}: unexpected argument {extra:?} (it takes none)"))),
    }
}

/// `table create`: the one action of `table`.
fn table(rest: Vec<OsString>) -> Result<(), Error> {
    let mut rest = rest.into_iter();
    match rest.next().as_ref().map(|action| action.to_string_lossy()) {
        None => return Err(Error::Usage("table: missing action (create)".into())),
        Some(action) if action == "create" => {}
        Some(action) => return Err(Error::Usage(format!("table: unknown action {action:?} (create)"))),
    }
    no_arguments(rest.collect(), "table create")
}

/// `completion SHELL`.
fn completion(rest: Vec<OsString>) -> Result<Command, Error> {
    let mut rest = rest.into_iter();
    let shell = match rest.next().as_ref().map(|shell| shell.to_string_lossy()) {
        None => return Err(Error::Usage("completion: missing SHELL (bash, zsh, fish)".into())),
        Some(shell) => match shell.as_ref() {
            "bash" => Shell::Bash,
            "zsh" => Shell::Zsh,
            "fish" => Shell::Fish,
            other => return Err(Error::Usage(format!("completion: unknown shell {other:?} (bash, zsh, fish)"))),
        },
    };
    no_arguments(rest.collect(), "completion").map(|()| Command::Completion(shell))
}

fn usage(e: impl std::fmt::Display) -> Error {
    Error::Usage(e.to_string())
}

/// A switch: on, or what its joined value says (`--delete=false`), read as Go's pflag reads a boolean flag
/// (`strconv.ParseBool`). A following word is never its value.
fn bool_flag(parser: &mut lexopt::Parser, flag: &str) -> Result<bool, Error> {
    match parser.optional_value() {
        Some(value) => parse_switch(flag, &value),
        None => Ok(true),
    }
}

/// The short switches, which also take a joined `=value` (`-q=false`).
const SHORT_SWITCHES: [&str; 4] = ["-q", "-v", "-h", "-V"];

/// A switch's joined value, as Go's `strconv.ParseBool` reads it.
fn parse_switch(flag: &str, value: &std::ffi::OsStr) -> Result<bool, Error> {
    match value.to_str() {
        Some("1" | "t" | "T" | "true" | "TRUE" | "True") => Ok(true),
        Some("0" | "f" | "F" | "false" | "FALSE" | "False") => Ok(false),
        _ => Err(Error::Usage(format!("{flag}={}: expected true or false", value.to_string_lossy()))),
    }
}

fn string_value(parser: &mut lexopt::Parser, flag: &str) -> Result<String, Error> {
    let value = parser.value().map_err(|_| Error::Usage(format!("{flag} needs a value")))?;
    value.into_string().map_err(|_| Error::Usage(format!("{flag}: value is not valid UTF-8")))
}

fn common(flags: &Flags, env: &Env) -> Result<Common, Error> {
    // The Go tool reads an empty --backend as its default, dynamodb.
    if let Some(backend) = flags.backend.as_deref().filter(|backend| !matches!(*backend, "" | "dynamodb")) {
        return Err(Error::Usage(format!(
            "--backend {backend:?}: lock-exec locks in DynamoDB only (the Go tool's other backend, ers, is not \
             supported)"
        )));
    }
    let (table, named) = flag_or_env(&flags.table, env, "--table", "LOCK_EXEC_TABLE");
    let table = table.unwrap_or_else(|| DEFAULT_TABLE.into());
    // The default is valid: a bad name from LOCK_EXEC_TABLE is said to come from there.
    validate_table(&table).map_err(|e| match e {
        Error::Usage(message) if flags.table.is_none() => Error::Usage(format!("{named}: {message}")),
        other => other,
    })?;
    let (log_format, named) = flag_or_env(&flags.log_format, env, "--log-format", "LOCK_EXEC_LOG_FORMAT");
    let log_format = match log_format.as_deref() {
        None | Some("json") => LogFormat::Json,
        Some("text") => LogFormat::Text,
        Some(other) => return Err(Error::Usage(format!("invalid {named} {other:?} (json or text)"))),
    };
    let verbosity = match (flags.quiet, flags.verbose) {
        (true, true) => return Err(Error::Usage("--quiet and --verbose exclude each other".into())),
        (true, false) => Verbosity::Quiet,
        (false, true) => Verbosity::Verbose,
        (false, false) => Verbosity::Normal,
    };
    let non_empty = |value: &Option<String>, flag: &str| match value {
        Some(v) if v.trim().is_empty() => Err(Error::Usage(format!("{flag} is empty"))),
        _ => Ok(value.clone()),
    };
    let endpoint_url = non_empty(&flags.endpoint_url, "--endpoint-url")?;
    if let Some(url) = endpoint_url.as_deref().filter(|url| crate::aws::proxy::has_userinfo(url)) {
        return Err(Error::Usage(format!(
            "--endpoint-url {:?} holds a user name or password (user:password@): not allowed; remove it",
            crate::aws::proxy::endpoint_for_messages(url)
        )));
    }
    if let Some(problem) = endpoint_url.as_deref().and_then(crate::aws::endpoint::url_problem) {
        return Err(Error::Usage(format!("--endpoint-url: {problem}")));
    }
    // Like `-e`, accepted by every subcommand (checked everywhere); the ones that write use it.
    let (retain, named) = flag_or_env(&flags.retain, env, "--retain", "LOCK_EXEC_RETAIN");
    let retain = duration_flag(retain, DEFAULT_RETAIN, named)?;
    if retain < MIN_RETAIN {
        return Err(Error::Usage(format!("{named} {} is shorter than the minimum 1h", duration::format(retain))));
    }
    let (max_clock_skew, named) =
        flag_or_env(&flags.max_clock_skew, env, "--max-clock-skew", "LOCK_EXEC_MAX_CLOCK_SKEW");
    let max_clock_skew = duration_flag(max_clock_skew, DEFAULT_MAX_CLOCK_SKEW, named)?;
    Ok(Common {
        retain,
        max_clock_skew,
        table,
        region: non_empty(&flags.region, "--region")?,
        endpoint_url,
        profile: non_empty(&flags.profile, "--profile")?,
        log_format,
        verbosity,
    })
}

/// Table names: `[A-Za-z0-9_.-]{3,255}`.
fn validate_table(table: &str) -> Result<(), Error> {
    let valid_chars = table.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if valid_chars && (3..=255).contains(&table.len()) {
        Ok(())
    } else {
        Err(Error::Usage(format!("invalid table name {table:?}: 3 to 255 characters of A-Z a-z 0-9 _ . -")))
    }
}

fn validate_key(key: OsString) -> Result<String, Error> {
    let key = key.into_string().map_err(|_| Error::Usage("KEY is not valid UTF-8".into()))?;
    if key.is_empty() {
        return Err(Error::Usage("KEY is empty".into()));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(Error::Usage(format!("KEY is {} bytes long; DynamoDB allows {MAX_KEY_BYTES}", key.len())));
    }
    Ok(key)
}

fn single_key(rest: Vec<OsString>, subcommand: &str) -> Result<String, Error> {
    let mut rest = rest.into_iter();
    let key = rest.next().ok_or_else(|| Error::Usage(format!("{subcommand}: missing KEY")))?;
    if rest.next().is_some() {
        return Err(Error::Usage(format!("{subcommand}: too many arguments (expected only KEY)")));
    }
    validate_key(key)
}

/// A flag's value, else its environment variable's; with the name to put in a usage error (the one the user set).
fn flag_or_env(
    given: &Option<String>,
    env: &Env,
    flag: &'static str,
    variable: &'static str,
) -> (Option<String>, &'static str) {
    match given {
        Some(value) => (Some(value.clone()), flag),
        None => (env.var(variable), variable),
    }
}

/// A usage error when a lease or `--keep` from now would end after [`crate::lock::LAST_END_NS`].
fn longest_hold(hold: Duration, flag: &str, env: &Env) -> Result<(), Error> {
    if crate::clock::unix_ns(env.now()) + hold.as_nanos() as i128 <= crate::lock::LAST_END_NS {
        return Ok(());
    }
    Err(Error::Usage(format!(
        "{flag} {} would end the lock after 2262-04-11, the last instant the 64-bit Unix nanoseconds of expire \
         hold",
        duration::format(hold)
    )))
}

fn duration_flag(given: Option<String>, default: Duration, flag: &str) -> Result<Duration, Error> {
    match given {
        None => Ok(default),
        Some(text) => duration::parse(&text).map_err(|e| Error::Usage(format!("{flag}: {e}"))),
    }
}

fn run(
    flags: &Flags,
    env: &Env,
    expire: Duration,
    rest: Vec<OsString>,
    after_dashes: Option<Vec<OsString>>,
) -> Result<Run, Error> {
    let mut rest = rest.into_iter();
    let key = validate_key(rest.next().ok_or_else(|| Error::Usage("run: missing KEY".into()))?)?;
    let mut command: Vec<OsString> = rest.collect();
    let mut after_dashes = after_dashes;
    // `run KEY -- 'prog args'`: one word after `--` that holds white space is a COMMAND string, split as the Go
    // tool splits it (cobra drops the `--`), not the name of a program with spaces in it.
    if command.is_empty()
        && let Some(words) = after_dashes.take_if(|words| {
            words.len() == 1 && words[0].to_str().is_some_and(|text| text.contains(char::is_whitespace))
        })
    {
        command = words;
    }
    // `run KEY 'COMMAND' --`: cobra drops a trailing `--` with nothing after it.
    if command.len() == 1 {
        after_dashes.take_if(|words| words.is_empty());
    }
    let mut shell_syntax = None;
    let (argv, display) = match (command.len(), after_dashes) {
        (0, Some(argv)) => {
            if argv.is_empty() {
                return Err(Error::Usage("run: missing PROGRAM after --".into()));
            }
            // `run k -- "$UNSET"`: refused before the lock is taken, as an empty COMMAND string is.
            if argv[0].is_empty() {
                return Err(Error::Usage("run: PROGRAM after -- is empty".into()));
            }
            let display = argv.iter().map(|a| a.to_string_lossy()).collect::<Vec<_>>().join(" ");
            if flags.shell {
                return Err(Error::Usage("run: --shell takes a COMMAND string, not -- PROGRAM ARGS".into()));
            }
            (argv, display)
        }
        (_, Some(_)) => {
            return Err(Error::Usage("run: give either a COMMAND string or -- PROGRAM ARGS, not both".into()));
        }
        (0, None) => return Err(Error::Usage("run: missing COMMAND".into())),
        (1, None) => {
            let text = command.into_iter().next().unwrap_or_default();
            let text = text.into_string().map_err(|_| Error::Usage("run: COMMAND is not valid UTF-8".into()))?;
            let argv: Vec<OsString> = if flags.shell {
                vec!["/bin/sh".into(), "-c".into(), text.clone().into()]
            } else {
                shell_syntax = shell_syntax_in(&text);
                text.split_whitespace().map(OsString::from).collect()
            };
            if text.trim().is_empty() {
                return Err(Error::Usage("run: COMMAND is empty".into()));
            }
            (argv, text)
        }
        (_, None) => {
            return Err(Error::Usage(
                "run: too many arguments; quote the COMMAND (run KEY 'prog args') or use run KEY -- prog args".into(),
            ));
        }
    };
    let kill_after = duration_flag(flags.kill_after.clone(), DEFAULT_KILL_AFTER, "--kill-after")?;
    let locked_exit_code = match &flags.locked_exit_code {
        None => 0,
        Some(text) => text
            .parse::<u8>()
            .map_err(|_| Error::Usage(format!("--locked-exit-code {text:?}: expected a number from 0 to 255")))?,
    };
    let keep = flags.keep.clone().map(|text| duration_flag(Some(text), Duration::ZERO, "--keep")).transpose()?;
    if let Some(keep) = keep {
        longest_hold(keep, "--keep", env)?;
    }
    let wait = flags.wait.clone().map(|text| duration_flag(Some(text), Duration::ZERO, "--wait")).transpose()?;
    let (owner_id, named) = match flags.owner.clone() {
        Some(id) => (Some(id), "--owner"),
        None => (env.var("LOCK_EXEC_OWNER_ID").filter(|id| !id.trim().is_empty()), "LOCK_EXEC_OWNER_ID"),
    };
    if let Some(id) = &owner_id {
        if id.trim().is_empty() {
            return Err(Error::Usage(format!("{named} is empty")));
        }
        if id.len() > MAX_OWNER_ID_BYTES || id.chars().any(char::is_control) {
            return Err(Error::Usage(format!(
                "{named}: at most {MAX_OWNER_ID_BYTES} bytes without control characters (got {} bytes)",
                id.len()
            )));
        }
    }
    let limit = match &flags.limit {
        None => 1,
        Some(text) => match text.parse::<u32>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
            _ => return Err(Error::Usage(format!("--limit {text:?}: expected a number from 1 to {MAX_LIMIT}"))),
        },
    };
    if limit > 1 && key.len() + 1 + (limit - 1).to_string().len() > MAX_KEY_BYTES {
        return Err(Error::Usage(format!("KEY is too long for its slot items (KEY#N) with --limit {limit}")));
    }
    Ok(Run {
        keep,
        wait,
        owner_id,
        limit,
        key,
        argv,
        display,
        expire,
        locked_exit_code,
        kill_after,
        wait_descendants: flags.wait_descendants,
        clean_env_aws: flags.clean_env_aws,
        shell_syntax,
    })
}

/// The first shell construct in a COMMAND string that, run without a shell, does not do what it seems to: a pipe,
/// `&&`, `||`, `;`, a redirection, a command substitution, or a leading `cd` (a shell builtin).
pub fn shell_syntax_in(text: &str) -> Option<&'static str> {
    const CONSTRUCTS: [(&str, &str); 11] = [
        ("&&", "&&"),
        ("||", "||"),
        ("|", "a pipe (|)"),
        (";", ";"),
        (">", "a redirection (>)"),
        ("<", "a redirection (<)"),
        ("$(", "a command substitution ($(...))"),
        ("`", "a command substitution (`...`)"),
        ("$", "a variable ($)"),
        ("\"", "quotes"),
        ("'", "quotes"),
    ];
    if text.split_whitespace().next() == Some("cd") {
        return Some("cd (a shell builtin)");
    }
    CONSTRUCTS.iter().find(|(needle, _)| text.contains(needle)).map(|(_, name)| *name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStringExt;

    fn parse(args: &[&str]) -> Result<Command, Error> {
        parse_from(args.iter().copied(), &Env::from_pairs::<&str, &str>(&[]))
    }

    #[test]
    fn shell_syntax_in_a_command_string_is_named() {
        assert_eq!(shell_syntax_in("echo hello | tr a-z A-Z > x.txt"), Some("a pipe (|)"));
        assert_eq!(shell_syntax_in("cd /tmp && ls"), Some("cd (a shell builtin)"));
        assert_eq!(shell_syntax_in("make && make test"), Some("&&"));
        assert_eq!(shell_syntax_in("echo $(date)"), Some("a command substitution ($(...))"));
        assert_eq!(shell_syntax_in("backup.sh --to /srv/backup"), None);
        // The two a shell user writes most: a variable and quotes ('"my db"' would be two words, quotes kept).
        assert_eq!(shell_syntax_in("pg_dump $DATABASE_URL"), Some("a variable ($)"));
        assert_eq!(shell_syntax_in("backup.sh --name \"my db\""), Some("quotes"));
        assert_eq!(shell_syntax_in("backup.sh --name 'my db'"), Some("quotes"));
        assert_eq!(run_of(&["run", "k", "a | b"]).shell_syntax, Some("a pipe (|)"));
        assert_eq!(run_of(&["run", "k", "--shell", "a | b"]).shell_syntax, None);
        assert_eq!(run_of(&["run", "k", "--", "sh", "-c", "a | b"]).shell_syntax, None);
    }

    fn run_of(args: &[&str]) -> Run {
        match parse(args) {
            Ok(Command::Run(_, run)) => run,
            other => panic!("expected run from {args:?}, got {other:?}"),
        }
    }

    fn usage_error(args: &[&str]) -> String {
        match parse(args) {
            Err(Error::Usage(message)) => message,
            other => panic!("expected a usage error from {args:?}, got {other:?}"),
        }
    }

    fn argv(run: &Run) -> Vec<&str> {
        run.argv.iter().map(|a| a.to_str().unwrap_or("<non-utf8>")).collect()
    }

    /// `--version` and `-V` are switches like the others: a joined value is read (`--version=false` is no
    /// version), a bad one refused, and the rest of the command line is still checked. Before, `run k cmd
    /// --version=false` printed the version and exited 0 without running anything, and `-Vx` ignored the `x`.
    /// Short switches take a joined `=value` as pflag reads it (`-q=false`).
    #[test]
    fn version_and_short_switches_read_joined_values() {
        assert!(matches!(parse(&["run", "k", "--version=false", "--", "true"]), Ok(Command::Run(..))));
        assert!(usage_error(&["run", "k", "--version=bogus", "--", "true"]).contains("--version"));
        assert!(matches!(parse(&["--version"]), Ok(Command::Version)));
        assert!(matches!(parse(&["-V"]), Ok(Command::Version)));
        assert!(matches!(parse(&["-qV"]), Ok(Command::Version)));
        assert!(matches!(parse(&["version", "-V"]), Ok(Command::Version)));
        assert!(usage_error(&["-Vx"]).contains("'-x'"));
        // Not with a subcommand: `run k node --version` meant node's, and must not exit 0 without running.
        assert!(usage_error(&["run", "k1", "node", "--version"]).contains("goes alone"));
        assert!(usage_error(&["run", "k1", "echo", "-V"]).contains("goes alone"));
        assert!(usage_error(&["-V", "bogus"]).contains("goes alone"));
        assert!(usage_error(&["-V", "--", "run", "k", "true"]).contains("goes alone"));
        assert_eq!(usage_error(&["status", "k", "-V"]), "--version (-V) goes alone: lock-exec --version");
        let non_utf8 = std::ffi::OsString::from_vec(vec![0xff]);
        let args = vec![std::ffi::OsString::from("-V"), non_utf8];
        let parsed = parse_from(args, &Env::from_pairs::<&str, &str>(&[]));
        assert!(matches!(parsed, Err(Error::Usage(message)) if message.contains("goes alone")));
        // Help wins, as in cobra.
        assert!(matches!(parse(&["-hV"]), Ok(Command::Help(None))));
        assert!(matches!(parse(&["-Vh", "run"]), Ok(Command::Help(Some(_)))));
        assert!(matches!(parse(&["run", "k", "-V=false", "--", "true"]), Ok(Command::Run(..))));
        match parse(&["-q=false", "-v=true", "status", "k"]) {
            Ok(Command::Status(common, _)) => assert_eq!(common.verbosity, Verbosity::Verbose),
            other => panic!("expected status, got {other:?}"),
        }
        assert!(matches!(parse(&["-h=false", "run", "k", "--", "true"]), Ok(Command::Run(..))));
        assert!(matches!(parse(&["-h=1", "status", "k"]), Ok(Command::Help(Some(_)))));
        assert!(usage_error(&["-q=maybe", "status", "k"]).contains("-q"));
        match parse(&["-qv=false", "status", "k"]) {
            Ok(Command::Status(common, _)) => assert_eq!(common.verbosity, Verbosity::Quiet),
            other => panic!("expected status, got {other:?}"),
        }
    }

    #[test]
    fn an_unknown_short_option_before_the_key_says_how_to_write_a_dash_key() {
        assert_eq!(
            usage_error(&["run", "-kfoo", "echo hi"]),
            "invalid option '-k' (a KEY that starts with '-' goes after '--', the options before it: lock-exec run \
             [OPTIONS] -- -KEY COMMAND)"
        );
        assert_eq!(
            usage_error(&["unlock", "-k", "--delete"]),
            "invalid option '-k' (a KEY that starts with '-' goes after '--', the options before it: lock-exec \
             unlock [OPTIONS] -- -KEY)"
        );
        assert_eq!(usage_error(&["list", "-k"]), "invalid option '-k'");
        assert!(matches!(parse(&["help", "help"]), Ok(Command::Help(None))));
        assert!(usage_error(&["help", "help", "x"]).contains("help help"));
    }

    /// A value joined to a flag (`--delete=false`) or a cluster of short flags (`-qtTABLE`) is read whole, as Go's
    /// pflag reads it: before, the check for `--` threw away what followed the first flag.
    #[test]
    fn joined_values_and_short_clusters_are_not_lost() {
        let unlock = |args: &[&str]| match parse(args) {
            Ok(Command::Unlock(_, unlock)) => unlock.delete,
            other => panic!("expected unlock from {args:?}, got {other:?}"),
        };
        assert!(!unlock(&["unlock", "--delete=false", "k"]));
        assert!(!unlock(&["unlock", "k", "--delete=0"]));
        assert!(unlock(&["unlock", "--delete=true", "k"]));
        assert!(unlock(&["unlock", "--delete", "k"]));
        assert!(usage_error(&["unlock", "--delete=garbage", "k"]).contains("--delete"));
        assert!(usage_error(&["unlock", "--delete=", "k"]).contains("--delete"));
        assert_eq!(argv(&run_of(&["run", "k", "echo a", "--shell=false"])), ["echo", "a"]);
        assert_eq!(argv(&run_of(&["run", "k", "--shell=true", "echo a"])), ["/bin/sh", "-c", "echo a"]);
        assert!(!run_of(&["run", "k", "--clean-env-aws=false", "--", "true"]).clean_env_aws);
        assert!(!run_of(&["run", "k", "--wait-descendants=F", "--", "true"]).wait_descendants);
        match parse(&["run", "-qtnosuch", "k", "--", "true"]) {
            Ok(Command::Run(common, _)) => {
                assert_eq!(common.table, "nosuch");
                assert_eq!(common.verbosity, Verbosity::Quiet);
            }
            other => panic!("expected run, got {other:?}"),
        }
        match parse(&["-qe5m", "run", "k", "--", "true"]) {
            Ok(Command::Run(common, run)) => {
                assert_eq!(run.expire, Duration::from_secs(300));
                assert_eq!(common.verbosity, Verbosity::Quiet);
            }
            other => panic!("expected run, got {other:?}"),
        }
        assert!(usage_error(&["-vq", "status", "k"]).contains("exclude each other"));
        assert!(usage_error(&["-qv", "status", "k"]).contains("exclude each other"));
        assert!(usage_error(&["--quiet=false", "--verbose=true", "--quiet", "status", "k"]).contains("exclude"));
        match parse(&["--quiet=false", "-v", "status", "k"]) {
            Ok(Command::Status(common, _)) => assert_eq!(common.verbosity, Verbosity::Verbose),
            other => panic!("expected status, got {other:?}"),
        }
        // `--` right after a cluster or a joined value still ends the options.
        assert_eq!(argv(&run_of(&["run", "-qtxyz", "k", "--", "echo", "-t"])), ["echo", "-t"]);
    }

    #[test]
    fn command_string_is_split_like_go_fields() {
        let run = run_of(&["run", "k", "  echo \thello\u{a0}world\u{2003}x\n"]);
        assert_eq!(argv(&run), ["echo", "hello", "world", "x"]);
        assert_eq!(run.display, "  echo \thello\u{a0}world\u{2003}x\n");
        assert_eq!(run.key, "k");
    }

    #[test]
    fn after_dashes_is_exact_argv() {
        let run = run_of(&["run", "k", "--", "prog", "-t", "x y", "--", "-v"]);
        assert_eq!(argv(&run), ["prog", "-t", "x y", "--", "-v"]);
        assert_eq!(run.display, "prog -t x y -- -v");
    }

    #[test]
    fn flags_go_before_or_after_positionals() {
        let cases: &[&[&str]] = &[
            &["-t", "tbl", "run", "k", "echo hi"],
            &["run", "-t", "tbl", "k", "echo hi"],
            &["run", "k", "echo hi", "-t", "tbl"],
            &["run", "k", "echo hi", "--table=tbl"],
            &["run", "k", "--table", "tbl", "echo hi"],
        ];
        for args in cases {
            match parse(args) {
                Ok(Command::Run(common, run)) => {
                    assert_eq!(common.table, "tbl", "{args:?}");
                    assert_eq!(argv(&run), ["echo", "hi"], "{args:?}");
                }
                other => panic!("{args:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn defaults() {
        match parse(&["run", "k", "true"]) {
            Ok(Command::Run(common, run)) => {
                assert_eq!(common.table, "lock-exec");
                assert_eq!(common.log_format, LogFormat::Json);
                assert_eq!(common.verbosity, Verbosity::Normal);
                assert_eq!(run.expire, Duration::from_secs(60));
                assert_eq!(run.kill_after, Duration::from_secs(10));
                assert_eq!(run.locked_exit_code, 0);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn environment_defaults() {
        let env = Env::from_pairs(&[("LOCK_EXEC_TABLE", "from-env"), ("LOCK_EXEC_EXPIRE", "5m")]);
        match parse_from(["run", "k", "true"], &env) {
            Ok(Command::Run(common, run)) => {
                assert_eq!(common.table, "from-env");
                assert_eq!(run.expire, Duration::from_secs(300));
            }
            other => panic!("{other:?}"),
        }
        match parse_from(["run", "k", "true", "-t", "flag", "-e", "2s"], &env) {
            Ok(Command::Run(common, run)) => {
                assert_eq!(common.table, "flag");
                assert_eq!(run.expire, Duration::from_secs(2));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn log_format_from_flag_env_or_default() {
        let check = |args: &[&str], env: &[(&str, &str)], expected: LogFormat| match parse_from(
            args.iter().copied(),
            &Env::from_pairs(env),
        ) {
            Ok(Command::Status(common, _)) => assert_eq!(common.log_format, expected, "{args:?} {env:?}"),
            other => panic!("{args:?}: {other:?}"),
        };
        check(&["status", "k"], &[], LogFormat::Json);
        check(&["status", "k"], &[("LOCK_EXEC_LOG_FORMAT", "text")], LogFormat::Text);
        check(&["status", "k", "--log-format", "json"], &[("LOCK_EXEC_LOG_FORMAT", "text")], LogFormat::Json);
    }

    #[test]
    fn max_clock_skew_from_flag_env_or_default() {
        let check =
            |args: &[&str], env: &[(&str, &str)], expected: Duration| match parse_from(args, &Env::from_pairs(env)) {
                Ok(Command::Run(common, _) | Command::Status(common, _)) => {
                    assert_eq!(common.max_clock_skew, expected, "{args:?} {env:?}")
                }
                other => panic!("{args:?}: {other:?}"),
            };
        check(&["run", "k", "true"], &[], DEFAULT_MAX_CLOCK_SKEW);
        check(&["run", "k", "true"], &[("LOCK_EXEC_MAX_CLOCK_SKEW", "5s")], Duration::from_secs(5));
        check(
            &["run", "k", "true", "--max-clock-skew", "500ms"],
            &[("LOCK_EXEC_MAX_CLOCK_SKEW", "5s")],
            Duration::from_millis(500),
        );
        check(&["status", "k", "--max-clock-skew", "0s"], &[], Duration::ZERO);
        let bad = Env::from_pairs(&[("LOCK_EXEC_MAX_CLOCK_SKEW", "soon")]);
        assert!(
            matches!(parse_from(["run", "k", "true"], &bad), Err(Error::Usage(m)) if m.contains("LOCK_EXEC_MAX_CLOCK_SKEW"))
        );
    }

    #[test]
    fn expire_is_accepted_everywhere_like_the_go_tool() {
        assert!(matches!(parse(&["-e", "24h", "unlock", "k"]), Ok(Command::Unlock(..))));
        assert!(matches!(parse(&["unlock", "k", "-e", "1h"]), Ok(Command::Unlock(..))));
        assert!(matches!(parse(&["status", "k", "--expire", "1h"]), Ok(Command::Status(..))));
    }

    #[test]
    fn run_options() {
        let run = run_of(&["run", "--shell", "k", "echo $HOME | wc", "--locked-exit-code", "3", "--kill-after", "2s"]);
        assert_eq!(argv(&run), ["/bin/sh", "-c", "echo $HOME | wc"]);
        assert_eq!(run.locked_exit_code, 3);
        assert_eq!(run.kill_after, Duration::from_secs(2));
    }

    #[test]
    fn cron_options() {
        let run = run_of(&["run", "k", "true"]);
        assert_eq!((run.keep, run.wait, run.owner_id.as_deref(), run.limit), (None, None, None, 1));
        let run = run_of(&["run", "k", "true", "--keep", "90s", "--wait", "1m", "--owner", "job-1", "--limit", "3"]);
        assert_eq!(run.keep, Some(Duration::from_secs(90)));
        assert_eq!(run.wait, Some(Duration::from_secs(60)));
        assert_eq!(run.owner_id.as_deref(), Some("job-1"));
        assert_eq!(run.limit, 3);
        let env = Env::from_pairs(&[("LOCK_EXEC_OWNER_ID", "from-env"), ("LOCK_EXEC_RETAIN", "2h")]);
        match parse_from(["run", "k", "true"], &env) {
            Ok(Command::Run(common, run)) => {
                assert_eq!(run.owner_id.as_deref(), Some("from-env"));
                assert_eq!(common.retain, Duration::from_secs(7200));
            }
            other => panic!("{other:?}"),
        }
        match parse_from(["run", "k", "true", "--owner", "flag", "--retain", "1h"], &env) {
            Ok(Command::Run(common, run)) => {
                assert_eq!(run.owner_id.as_deref(), Some("flag"));
                assert_eq!(common.retain, Duration::from_secs(3600));
            }
            other => panic!("{other:?}"),
        }
        // a bad variable is named as such, not as the flag the user did not give
        let message = |pairs: &[(&str, &str)]| match parse_from(["run", "k", "true"], &Env::from_pairs(pairs)) {
            Err(Error::Usage(message)) => message,
            other => panic!("expected a usage error from {pairs:?}, got {other:?}"),
        };
        assert!(message(&[("LOCK_EXEC_OWNER_ID", "a\tb")]).starts_with("LOCK_EXEC_OWNER_ID: at most 1024 bytes"));
        assert!(message(&[("LOCK_EXEC_RETAIN", "5m")]).starts_with("LOCK_EXEC_RETAIN 5m0s is shorter"));
        assert!(message(&[("LOCK_EXEC_RETAIN", "soon")]).starts_with("LOCK_EXEC_RETAIN: invalid duration"));
        // a blank variable (an empty downward-API field) counts as unset
        let blank = Env::from_pairs(&[("LOCK_EXEC_OWNER_ID", " ")]);
        assert!(matches!(parse_from(["run", "k", "true"], &blank), Ok(Command::Run(_, Run { owner_id: None, .. }))));
        match parse(&["unlock", "k", "--retain", "48h"]) {
            Ok(Command::Unlock(common, _)) => assert_eq!(common.retain, Duration::from_secs(48 * 3600)),
            other => panic!("{other:?}"),
        }
        match parse(&["status", "k"]) {
            Ok(Command::Status(common, _)) => assert_eq!(common.retain, DEFAULT_RETAIN),
            other => panic!("{other:?}"),
        }
        // the slot items KEY#N must fit DynamoDB's key length
        let long_key = "k".repeat(2046);
        assert!(matches!(parse(&["run", &long_key, "true", "--limit", "10"]), Ok(Command::Run(..))));
        assert!(usage_error(&["run", &long_key, "true", "--limit", "11"]).contains("slot items"));
    }

    #[test]
    fn other_subcommands() {
        let quiet_json = |cmd: Command| cmd;
        assert!(
            matches!(parse(&["unlock", "k"]), Ok(Command::Unlock(_, Unlock { ref key, delete: false })) if key == "k")
        );
        assert!(matches!(parse(&["unlock", "--delete", "k"]), Ok(Command::Unlock(_, Unlock { delete: true, .. }))));
        assert!(
            matches!(parse(&["status", "k", "-r", "eu-west-1"]), Ok(Command::Status(ref c, ref k)) if k == "k" && c.region.as_deref() == Some("eu-west-1"))
        );
        assert_eq!(parse(&["version"]).ok().map(quiet_json), Some(Command::Version));
        assert_eq!(parse(&["--version"]).ok(), Some(Command::Version));
        assert_eq!(parse(&["-V"]).ok(), Some(Command::Version));
        assert_eq!(parse(&["help"]).ok(), Some(Command::Help(None)));
        assert_eq!(parse(&["-h"]).ok(), Some(Command::Help(None)));
        assert_eq!(parse(&["help", "run"]).ok(), Some(Command::Help(Some(Topic::Run))));
        assert_eq!(parse(&["run", "--help"]).ok(), Some(Command::Help(Some(Topic::Run))));
        assert_eq!(parse(&["status", "-h"]).ok(), Some(Command::Help(Some(Topic::Status))));
        // Every subcommand the usage names has a help topic, `version` included.
        assert_eq!(parse(&["help", "version"]).ok(), Some(Command::Help(Some(Topic::Version))));
        assert_eq!(parse(&["version", "--help"]).ok(), Some(Command::Help(Some(Topic::Version))));
        assert_eq!(parse(&["-h", "version"]).ok(), Some(Command::Help(Some(Topic::Version))));
    }

    #[test]
    fn the_go_tools_backend_flag_is_accepted_for_dynamodb_only() {
        assert!(matches!(parse(&["--backend", "dynamodb", "run", "k", "true"]), Ok(Command::Run(..))));
        assert!(matches!(parse(&["status", "k", "--backend=dynamodb"]), Ok(Command::Status(..))));
        let message = usage_error(&["--backend", "ers", "run", "k", "true"]);
        assert!(message.contains("--backend \"ers\": lock-exec locks in DynamoDB only"), "{message}");
        // An empty --backend is the Go tool's default, and its ers options are ignored with it, as there.
        assert!(matches!(parse(&["--backend", "", "run", "k", "true"]), Ok(Command::Run(..))));
        let ers = ["--ers-env", "local", "--ers-region=x", "--ers-partition-id", "p", "--ers-endpoint", "u"];
        let args: Vec<&str> = ers.iter().copied().chain(["run", "k", "true"]).collect();
        assert!(matches!(parse(&args), Ok(Command::Run(..))));
    }

    #[test]
    fn a_lock_may_not_end_after_the_last_64_bit_nanosecond() {
        // 2,000,000 h from 2026 ends in about 2254: allowed, as the Go tool allows it.
        let env = Env::from_pairs::<&str, &str>(&[]);
        assert!(parse_from(["run", "k", "true", "-e", "2000000h", "--keep", "2000000h"], &env).is_ok());
        let message = usage_error(&["run", "k", "true", "-e", "2100000h"]);
        assert!(message.contains("would end the lock after 2262-04-11"), "{message}");
        // Only run writes a lease: the other subcommands take any -e, as the Go tool's do.
        assert!(matches!(parse(&["-e", "2562047h", "unlock", "k"]), Ok(Command::Unlock(..))));
    }

    #[test]
    fn one_word_with_spaces_after_dashes_is_a_command_string_as_in_the_go_tool() {
        assert_eq!(argv(&run_of(&["run", "k", "--", "echo hi  there"])), ["echo", "hi", "there"]);
        assert_eq!(argv(&run_of(&["run", "k", "--", " true"])), ["true"]);
        assert!(usage_error(&["run", "k", "--", "   "]).contains("COMMAND is empty"));
        // A trailing `--` with nothing after it is dropped, as cobra does.
        assert_eq!(argv(&run_of(&["run", "k", "echo hi", "--"])), ["echo", "hi"]);
        // One word without spaces, or several words, stay an exact argv.
        assert_eq!(argv(&run_of(&["run", "k", "--", "true"])), ["true"]);
        assert_eq!(argv(&run_of(&["run", "k", "--", "echo", "a b"])), ["echo", "a b"]);
    }

    #[test]
    fn dashes_before_the_key_name_a_key_that_starts_with_a_dash() {
        // As the Go tool reads them: `--` ends the options, KEY and COMMAND follow.
        match parse(&["run", "--", "-k", "echo hi"]) {
            Ok(Command::Run(_, run)) => {
                assert_eq!(run.key, "-k");
                assert_eq!(argv(&run), ["echo", "hi"]);
            }
            other => panic!("{other:?}"),
        }
        match parse(&["run", "--", "-k", "--", "echo", "a b"]) {
            Ok(Command::Run(_, run)) => {
                assert_eq!(run.key, "-k");
                assert_eq!(argv(&run), ["echo", "a b"]);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(parse(&["status", "--", "-k"]), Ok(Command::Status(_, key)) if key == "-k"));
        assert!(matches!(parse(&["unlock", "--", "-k"]), Ok(Command::Unlock(_, Unlock { key, .. })) if key == "-k"));
        // After the key, `--` still belongs to run alone.
        assert!(usage_error(&["status", "k", "--", "x"]).contains("`--` applies to run only"));
        assert!(usage_error(&["run", "--"]).contains("run: missing KEY"));
    }

    #[test]
    fn help_topics_and_version_take_nothing_else() {
        assert!(usage_error(&["help", "foo"]).contains("help: unknown topic \"foo\" (run, unlock"));
        assert!(usage_error(&["help", "run", "x"]).contains("unexpected argument"));
        assert!(usage_error(&["version", "extra"]).contains("version: unexpected argument \"extra\""));
    }

    #[test]
    fn unknown_flags_get_the_closest_known_one() {
        let check = |args: &[&str], expected: &str| {
            let message = usage_error(args);
            assert_eq!(message, expected, "{args:?}");
        };
        check(&["run", "k", "true", "--tabel", "x"], "invalid option '--tabel' (did you mean --table?)");
        check(&["run", "k", "true", "--tabel=x"], "invalid option '--tabel' (did you mean --table?)");
        check(&["status", "k", "--expires", "1m"], "invalid option '--expires' (did you mean --expire?)");
        check(
            &["run", "k", "true", "--lokced-exit-code", "3"],
            "invalid option '--lokced-exit-code' (did you mean --locked-exit-code?)",
        );
        check(&["run", "k", "true", "--bogus"], "invalid option '--bogus'");
        check(&["run", "k", "true", "--ab"], "invalid option '--ab'");
        assert_eq!(edit_distance("tabel", "table"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    #[test]
    fn bad_values_from_the_environment_are_named_by_their_variable() {
        let check = |pairs: &[(&str, &str)], args: &[&str], expected: &str| match parse_from(
            args.iter().copied(),
            &Env::from_pairs(pairs),
        ) {
            Err(Error::Usage(message)) => assert!(message.starts_with(expected), "{pairs:?}: {message}"),
            other => panic!("expected a usage error from {pairs:?}, got {other:?}"),
        };
        check(&[("LOCK_EXEC_EXPIRE", "bad")], &["run", "k", "true"], "LOCK_EXEC_EXPIRE: invalid duration");
        check(&[("LOCK_EXEC_EXPIRE", "10ms")], &["status", "k"], "LOCK_EXEC_EXPIRE 10ms is shorter");
        check(&[("LOCK_EXEC_MAX_CLOCK_SKEW", "x")], &["run", "k", "true"], "LOCK_EXEC_MAX_CLOCK_SKEW: invalid");
        check(&[("LOCK_EXEC_TABLE", "ab")], &["run", "k", "true"], "LOCK_EXEC_TABLE: invalid table name");
        check(&[("LOCK_EXEC_LOG_FORMAT", "xml")], &["status", "k"], "invalid LOCK_EXEC_LOG_FORMAT \"xml\"");
        // the flag wins and is the one named
        check(&[("LOCK_EXEC_EXPIRE", "1m")], &["run", "k", "true", "-e", "bad"], "--expire: invalid duration");
        check(&[("LOCK_EXEC_TABLE", "good")], &["run", "k", "true", "-t", "ab"], "invalid table name");
    }

    #[test]
    fn table_create() {
        assert!(
            matches!(parse(&["table", "create", "-t", "locks"]), Ok(Command::TableCreate(ref c)) if c.table == "locks")
        );
        assert_eq!(parse(&["table", "--help"]).ok(), Some(Command::Help(Some(Topic::Table))));
        assert!(usage_error(&["table"]).contains("missing action"));
        assert!(usage_error(&["table", "drop"]).contains("unknown action \"drop\""));
        assert!(usage_error(&["table", "create", "x"]).contains("unexpected argument"));
    }

    #[test]
    fn list() {
        assert!(
            matches!(parse(&["list", "--log-format", "text"]), Ok(Command::List(ref c)) if c.log_format == LogFormat::Text)
        );
        assert_eq!(parse(&["help", "list"]).ok(), Some(Command::Help(Some(Topic::List))));
        assert!(usage_error(&["list", "k"]).contains("unexpected argument"));
        assert!(usage_error(&["list", "--delete"]).contains("--delete applies to unlock only"));
    }

    #[test]
    fn doctor() {
        assert!(
            matches!(parse(&["doctor", "-r", "eu-west-1"]), Ok(Command::Doctor(ref c)) if c.region.as_deref() == Some("eu-west-1"))
        );
        assert_eq!(parse(&["doctor", "-h"]).ok(), Some(Command::Help(Some(Topic::Doctor))));
        assert!(usage_error(&["doctor", "k"]).contains("unexpected argument"));
    }

    #[test]
    fn completion() {
        assert_eq!(parse(&["completion", "zsh"]).ok(), Some(Command::Completion(Shell::Zsh)));
        assert_eq!(parse(&["completion", "bash"]).ok(), Some(Command::Completion(Shell::Bash)));
        assert_eq!(parse(&["completion", "fish"]).ok(), Some(Command::Completion(Shell::Fish)));
        assert!(usage_error(&["completion"]).contains("missing SHELL"));
        assert!(usage_error(&["completion", "tcsh"]).contains("unknown shell"));
        assert!(usage_error(&["completion", "bash", "zsh"]).contains("unexpected argument"));
        let refused =
            Env::from_pairs(&[("LOCK_EXEC_TABLE", "ab"), ("LOCK_EXEC_RETAIN", "1m"), ("LOCK_EXEC_EXPIRE", "x")]);
        assert_eq!(parse_from(["completion", "bash"], &refused).ok(), Some(Command::Completion(Shell::Bash)));
        assert!(matches!(parse_from(["status", "k"], &refused), Err(Error::Usage(_))));
    }

    #[test]
    fn endpoint_url_with_userinfo_is_a_usage_error_that_hides_it() {
        let message = usage_error(&["--endpoint-url", "http://me:pass-WORD@127.0.0.1:1/", "status", "k"]);
        assert!(message.contains("user name or password") && message.contains("http://127.0.0.1:1/"), "{message}");
        assert!(!message.contains("pass-WORD") && !message.contains("me:"), "{message}");
    }

    #[test]
    fn usage_errors_name_the_problem() {
        let cases: &[(&[&str], &str)] = &[
            (&[], "missing subcommand"),
            (&["frobnicate"], "unknown subcommand"),
            (&["run"], "missing KEY"),
            (&["run", "k"], "missing COMMAND"),
            (&["run", "k", "   "], "COMMAND is empty"),
            (&["run", "", "true"], "KEY is empty"),
            (&["run", "k", "echo", "hi"], "too many arguments"),
            (&["run", "k", "echo hi", "--", "x"], "not both"),
            (&["run", "k", "--"], "missing PROGRAM"),
            (&["run", "k", "true", "-e", "5x"], "invalid duration \"5x\""),
            (&["run", "k", "true", "-e", "500ms"], "shorter than the minimum 1s"),
            (&["run", "k", "true", "--kill-after", "soon"], "--kill-after"),
            (&["run", "k", "true", "--locked-exit-code", "256"], "--locked-exit-code"),
            (&["run", "k", "true", "-t", "ab"], "invalid table name"),
            (&["run", "k", "true", "-t", "a/b/c"], "invalid table name"),
            (&["run", "k", "true", "--bogus"], "--bogus"),
            (&["run", "k", "true", "-t"], "--table needs a value"),
            (&["run", "k", "true", "-q", "-v"], "exclude"),
            (&["run", "k", "true", "--log-format", "xml"], "--log-format"),
            (&["status", "k", "--shell"], "--shell applies to run only"),
            (&["unlock", "k", "-e", "5x"], "invalid duration \"5x\""),
            (&["status", "k", "--delete"], "--delete applies to unlock only"),
            (&["status"], "missing KEY"),
            (&["unlock", "a", "b"], "too many arguments"),
            (&["unlock", "a", "--", "b"], "applies to run only"),
            (&["run", "k", "true", "--keep", "5x"], "--keep: invalid duration"),
            (&["run", "k", "true", "-e", "2562047h"], "--expire 2562047h0m0s would end the lock after 2262-04-11"),
            (&["run", "k", "true", "--keep", "2562047h"], "--keep 2562047h0m0s would end the lock after 2262-04-11"),
            (&["run", "k", "true", "--wait", "-1s"], "--wait"),
            (&["run", "k", "true", "--limit", "0"], "--limit \"0\": expected a number from 1 to 100"),
            (&["run", "k", "true", "--limit", "101"], "from 1 to 100"),
            (&["run", "k", "true", "--limit", "x"], "--limit"),
            (&["run", "k", "true", "--owner", " "], "--owner is empty"),
            (&["run", "k", "--", ""], "run: PROGRAM after -- is empty"),
            (&["run", "k", "true", "--owner", "a\nb"], "control characters"),
            (&["run", "k", "true", "--retain", "59m"], "--retain 59m0s is shorter than the minimum 1h"),
            (&["unlock", "k", "--retain", "1x"], "--retain: invalid duration"),
            (&["unlock", "k", "--keep", "1s"], "--keep applies to run only"),
            (&["status", "k", "--wait", "1s"], "--wait applies to run only"),
            (&["unlock", "k", "--owner", "x"], "--owner applies to run only"),
            (&["unlock", "k", "--limit", "2"], "--limit applies to run only"),
            (&["run", "k", "true", "--max-clock-skew", "2x"], "--max-clock-skew: invalid duration"),
            (&["run", "k", "true", "--max-clock-skew", "-1s"], "--max-clock-skew"),
            (&["status", "k", "--max-clock-skew"], "--max-clock-skew needs a value"),
        ];
        for (args, expected) in cases {
            let message = usage_error(args);
            assert!(message.contains(expected), "{args:?}: expected {expected:?} in {message:?}");
        }
        let long_key = "k".repeat(2049);
        let message = usage_error(&["run", &long_key, "true"]);
        assert!(message.contains("2049 bytes"), "{message}");
        assert!(matches!(parse(&["run", &"k".repeat(2048), "true"]), Ok(Command::Run(..))));
    }
}
