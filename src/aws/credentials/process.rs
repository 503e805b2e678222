//! Credentials from a profile's `credential_process`: an external command that prints them as JSON.
//!
//! The command line comes from the profile. It is split into words the way the AWS CLI does (POSIX shell
//! quoting, no shell is run), started in its own process group with stderr passed through, and its stdout is
//! parsed as `{"Version": 1, "AccessKeyId", "SecretAccessKey", "SessionToken"?, "Expiration"? (RFC 3339),
//! "AccountId"?}`. The command's output is never quoted in an error: it may hold the secret key.
//!
//! Bounds: one deadline ([`TIMEOUT`], 30 s) for the whole call, after which the helper's process group is
//! killed; at most [`OUTPUT_LIMIT`] (64 KiB) of output, beyond which the group is killed and the call fails.
//! Once the helper itself has exited, its output is what it wrote until then: a descendant that keeps stdout
//! open (a daemon it started) does not delay the call.
//!
//! A helper runs once per credential fetch and a failed run is never run again (the chain retries only its
//! STS and HTTP requests, reusing the helper's credentials): it is the user's program, and may prompt.
//!
//! No helper outlives lock-exec: helpers run from threads that the run does not wait for (a refresh during the
//! lease), so the process groups of the helpers running now are kept in a registry, and lock-exec kills them
//! with SIGKILL on its way out ([`kill_running_helpers`], called once from `main` on every exit path). A group
//! leaves the registry in the same critical section that reaps its helper, so a recycled id is never signalled.
//!
//! Interactive helpers (MFA prompts): when lock-exec runs in the foreground of a terminal, the helper gets
//! lock-exec's stdin and its process group becomes the terminal's foreground group before it starts, so it can
//! read the terminal; lock-exec takes the terminal back when the call ends, however it ends. Without a
//! terminal, stdin is `/dev/null`.
//!
//! Reads one environment variable: `LOCK_EXEC_CREDENTIAL_PROCESS_TIMEOUT`, for tests only: a shorter deadline
//! (Go duration syntax; values above 30 s are capped at 30 s).

use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use aws_credential_types::Credentials;
use serde_json::Value;

use crate::aws::sts::parse_time;
use crate::env::Env;
use crate::error::Error;

/// The source's name in logs.
pub const NAME: &str = "credential_process";

/// A `credential_process` command line. Its `Debug` hides it: such lines sometimes carry keys inline.
#[derive(Clone, PartialEq, Eq)]
pub struct CommandLine(pub String);

impl std::fmt::Debug for CommandLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CommandLine(<hidden>)")
    }
}

/// How long a credential process may run, output included, before its process group is killed and the fetch
/// fails.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// The most output a credential process may print (real output is well under 4 KiB).
pub const OUTPUT_LIMIT: usize = 64 * 1024;

/// For tests only: a deadline shorter than [`TIMEOUT`] (longer values are capped at it).
pub const TIMEOUT_VARIABLE: &str = "LOCK_EXEC_CREDENTIAL_PROCESS_TIMEOUT";

/// How long one wait for output lasts before the helper's exit and the deadline are checked again.
const POLL: Duration = Duration::from_millis(10);

/// The helpers running now: their process group ids (each helper leads its own group), and whether lock-exec
/// is on its way out (then no helper may start).
struct Running {
    groups: Vec<u32>,
    closed: bool,
}

/// Spawns, reaps and [`kill_running_helpers`] hold this lock, so a group is signalled only while its helper
/// is unreaped, and none starts after the exit's kill.
static RUNNING: Mutex<Running> = Mutex::new(Running { groups: Vec::new(), closed: false });

fn running() -> MutexGuard<'static, Running> {
    RUNNING.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Kills the process group of every `credential_process` helper still running (SIGKILL), and lets no new one
/// start. For lock-exec's exit, whatever the path: the threads that run helpers are not waited for, and a
/// helper would otherwise run on (a slow refresh during the lease, a prompt nobody answers).
pub fn kill_running_helpers() {
    let mut running = running();
    running.closed = true;
    for &group in &running.groups {
        crate::process::signal_group(group, libc::SIGKILL);
    }
}

/// Runs the `credential_process` command of profile `profile_name` and reads the credentials it prints.
/// `env`'s clock is used to reject credentials that have already expired.
pub fn load(env: &Env, profile_name: &str, command: &str) -> Result<Credentials, Error> {
    let timeout = match env.var(TIMEOUT_VARIABLE) {
        None => TIMEOUT,
        Some(text) => crate::duration::parse(&text)
            .map_err(|e| Error::Config(format!("{TIMEOUT_VARIABLE}={text:?}: {e}")))?
            .min(TIMEOUT),
    };
    load_with_timeout(profile_name, command, env.now(), timeout)
}

/// [`load`] with its own time limit.
pub fn load_with_timeout(
    profile_name: &str,
    command: &str,
    now: SystemTime,
    timeout: Duration,
) -> Result<Credentials, Error> {
    let deadline = Instant::now() + timeout;
    let fail = |message: String| Error::Credentials {
        provider: NAME,
        message: format!("profile {profile_name}: {message}"),
        denied: false,
    };
    let argv = split_command(command).map_err(|e| fail(format!("cannot parse credential_process: {e}")))?;
    let Some((program, args)) = argv.split_first() else {
        return Err(fail("credential_process is empty".to_owned()));
    };
    // Stdout is one end of a Unix socket pair rather than a pipe. Why: std can put a timeout on a socket read
    // and make it non-blocking, not on a pipe read (that would need fcntl/poll, so `unsafe`). So this thread
    // alone waits for output with the deadline, notices the helper's exit between reads, and then takes what
    // is already buffered without blocking: no reader thread, nothing left blocked on a pipe that a descendant
    // holds open, memory bounded by OUTPUT_LIMIT. The cost: a helper that opens `/dev/stdout` by path gets
    // ENXIO (as under systemd's journal, which also hands out a socket); writing to fd 1 works as with a pipe.
    let (mut output, helper_end) =
        UnixStream::pair().map_err(|e| fail(format!("cannot create a socket for credential_process's output: {e}")))?;
    let mut builder = Command::new(program);
    // Its own process group, so the deadline kills whatever it started in it too.
    builder.args(args).process_group(0).stdout(Stdio::from(OwnedFd::from(helper_end))).stderr(Stdio::inherit());
    crate::process::empty_signal_mask_in_child(&mut builder);
    let terminal = crate::process::foreground_terminal_group();
    match terminal {
        Some(_) => {
            // An interactive run: the helper may prompt (MFA). It reads our stdin, and its group takes the
            // terminal before it starts, or reading would stop it with SIGTTIN.
            builder.stdin(Stdio::inherit());
            crate::process::take_terminal_in_child(&mut builder);
        }
        None => {
            builder.stdin(Stdio::null());
        }
    }
    // From here on the terminal comes back to our group when this function returns, whatever the path.
    let _terminal_back = terminal.map(TerminalBack);
    let spawned = spawn_registered(&mut builder);
    drop(builder); // our copy of the socket's other end: only the helper (and what it starts) holds it now
    let mut child = spawned.map_err(|e| match e.kind() {
        // fork itself failed (a process limit, no memory): an operating-system resource (exit 71), as for the
        // command or a thread, not the profile's fault.
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::OutOfMemory => {
            Error::Spawn { program: format!("credential_process {program} (profile {profile_name})"), source: e }
        }
        _ => fail(format!("cannot run credential_process {program}: {e}")),
    })?;
    let mut stdout = Vec::new();
    let status = match read_until_exit(&mut child, &mut output, &mut stdout, deadline) {
        Ok(status) => status,
        Err(problem) => {
            kill_and_reap(&mut child);
            return Err(fail(problem.message(program, timeout)));
        }
    };
    drain(&mut output, &mut stdout).map_err(|problem| fail(problem.message(program, timeout)))?;
    if !status.success() {
        return Err(fail(format!("credential_process {program} failed ({status})")));
    }
    let stdout = String::from_utf8(stdout)
        .map_err(|_| fail(format!("credential_process {program} printed output that is not UTF-8")))?;
    parse_output(&stdout, now).map_err(|e| fail(format!("credential_process {program}: {e}")))
}

/// Starts the helper and registers its process group, both under the registry's lock (so lock-exec's exit
/// either kills it or keeps it from starting).
fn spawn_registered(builder: &mut Command) -> std::io::Result<Child> {
    let mut running = running();
    if running.closed {
        return Err(std::io::Error::other("lock-exec is exiting"));
    }
    let child = builder.spawn()?;
    running.groups.push(child.id());
    Ok(child)
}

/// `try_wait` under the registry's lock; once the helper is reaped (or cannot be waited for), its group leaves
/// the registry in the same critical section.
fn try_reap(child: &mut Child) -> std::io::Result<Option<ExitStatus>> {
    let mut running = running();
    let status = child.try_wait();
    if !matches!(status, Ok(None)) {
        running.groups.retain(|&group| group != child.id());
    }
    status
}

/// Kills the helper's process group (while the helper is unreaped, so the id is still its group's) and reaps
/// the helper.
fn kill_and_reap(child: &mut Child) {
    {
        let running = running();
        if running.groups.contains(&child.id()) {
            crate::process::signal_group(child.id(), libc::SIGKILL);
            let _ = child.kill();
        }
    }
    while let Ok(None) = try_reap(child) {
        std::thread::sleep(POLL);
    }
}

/// Gives the terminal back to our process group when dropped.
struct TerminalBack(u32);

impl Drop for TerminalBack {
    fn drop(&mut self) {
        crate::process::give_terminal(self.0);
    }
}

/// Why reading a helper's output stopped early.
enum Problem {
    /// The deadline passed.
    Timeout,
    /// More than [`OUTPUT_LIMIT`] bytes.
    TooLarge,
    /// Reading or waiting failed.
    Io(&'static str, std::io::Error),
}

impl Problem {
    fn message(&self, program: &str, timeout: Duration) -> String {
        match self {
            Problem::Timeout => format!("credential_process {program} did not finish within {timeout:?}"),
            Problem::TooLarge => {
                format!("credential_process {program}: output is larger than {}", crate::env::size(OUTPUT_LIMIT as u64))
            }
            Problem::Io(what, e) => format!("cannot {what} credential_process {program}: {e}"),
        }
    }
}

/// Collects output into `stdout` until the helper exits (its status), the deadline passes, or the output grows
/// too large.
fn read_until_exit(
    child: &mut Child,
    output: &mut UnixStream,
    stdout: &mut Vec<u8>,
    deadline: Instant,
) -> Result<ExitStatus, Problem> {
    let mut closed = false;
    let mut buffer = [0u8; 8192];
    loop {
        if let Some(status) = try_reap(child).map_err(|e| Problem::Io("wait for", e))? {
            return Ok(status);
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(Problem::Timeout);
        }
        let wait = (deadline - now).min(POLL);
        if closed {
            std::thread::sleep(wait);
            continue;
        }
        output.set_read_timeout(Some(wait)).map_err(|e| Problem::Io("read the output of", e))?;
        match output.read(&mut buffer) {
            Ok(0) => closed = true,
            Ok(n) => keep(stdout, &buffer[..n])?,
            Err(e) if retry_later(&e) => {}
            Err(e) => return Err(Problem::Io("read the output of", e)),
        }
    }
}

/// Once the helper has exited: moves into `stdout` what is already buffered, without waiting for more (a
/// descendant may hold the socket open for as long as it likes).
fn drain(output: &mut UnixStream, stdout: &mut Vec<u8>) -> Result<(), Problem> {
    output.set_nonblocking(true).map_err(|e| Problem::Io("read the output of", e))?;
    let mut buffer = [0u8; 8192];
    loop {
        match output.read(&mut buffer) {
            Ok(0) => return Ok(()),
            Ok(n) => keep(stdout, &buffer[..n])?,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            // Nothing more is buffered now.
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) => return Err(Problem::Io("read the output of", e)),
        }
    }
}

/// Appends a chunk, refusing to hold more than [`OUTPUT_LIMIT`] bytes.
fn keep(stdout: &mut Vec<u8>, chunk: &[u8]) -> Result<(), Problem> {
    if stdout.len() + chunk.len() > OUTPUT_LIMIT {
        return Err(Problem::TooLarge);
    }
    stdout.extend_from_slice(chunk);
    Ok(())
}

/// A read that timed out or was interrupted: try again after checking the helper and the deadline.
fn retry_later(e: &std::io::Error) -> bool {
    matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut | std::io::ErrorKind::Interrupted)
}
/// Reads the JSON a credential process prints; the error never includes a value from it.
pub(crate) fn parse_output(stdout: &str, now: SystemTime) -> Result<Credentials, String> {
    // Parsed to a `Value` first: serde's typed errors would quote the offending value, which may be a secret.
    let json: Value = serde_json::from_str(stdout).map_err(|e| {
        let what = if e.is_eof() { "ends early" } else { "is not valid JSON" };
        format!("output {what} (line {} column {})", e.line(), e.column())
    })?;
    let object = json.as_object().ok_or("output is not a JSON object")?;
    let string = |name: &str| -> Result<Option<String>, String> {
        match object.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(format!("{name} is not a string")),
        }
    };
    match object.get("Version") {
        Some(version) if version.as_u64() == Some(1) => {}
        Some(Value::Number(n)) => return Err(format!("unsupported Version {n} (only 1 is known)")),
        Some(_) => return Err("Version is not a number".to_owned()),
        None => return Err("output has no Version".to_owned()),
    }
    let access_key_id = string("AccessKeyId")?.ok_or("output has no AccessKeyId")?;
    let secret_access_key = string("SecretAccessKey")?.ok_or("output has no SecretAccessKey")?;
    let mut builder =
        Credentials::builder().access_key_id(access_key_id).secret_access_key(secret_access_key).provider_name(NAME);
    builder.set_session_token(string("SessionToken")?);
    builder.set_account_id(string("AccountId")?.map(Into::into));
    if let Some(expiration) = string("Expiration")? {
        let expiry =
            parse_time(&expiration).ok_or_else(|| format!("Expiration {expiration:?} is not an RFC 3339 time"))?;
        if expiry <= now {
            return Err(format!("the credentials expired at {expiration}"));
        }
        builder.set_expiry(Some(expiry));
    }
    Ok(builder.build())
}

/// Splits a command line into words as a POSIX shell would, without expanding anything: blanks separate
/// words, `"..."` and `'...'` group (inside double quotes a backslash escapes only `"` and `\`), and a backslash
/// outside quotes takes the next character literally. This is what the AWS CLI's `shlex.split` does.
pub fn split_command(command: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = command.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err("unterminated single quote".to_owned()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\')) => word.push(c),
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => return Err("unterminated double quote".to_owned()),
                        },
                        Some(c) => word.push(c),
                        None => return Err("unterminated double quote".to_owned()),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some(c) => word.push(c),
                    None => return Err("a backslash ends the line".to_owned()),
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};
    use std::time::{Duration, UNIX_EPOCH};

    fn at(seconds: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(seconds)
    }

    /// 2023-11-14T22:13:20Z.
    fn now() -> SystemTime {
        at(1_700_000_000)
    }

    #[test]
    fn command_lines_split_like_the_aws_cli() {
        fn check(input: &str, expected: &[&str]) {
            assert_eq!(
                split_command(input).as_deref(),
                Ok(&expected.iter().map(|s| s.to_string()).collect::<Vec<_>>()[..]),
                "{input:?}"
            );
        }
        check("", &[]);
        check("   ", &[]);
        check("/bin/tool --profile x", &["/bin/tool", "--profile", "x"]);
        check("  a\t b  ", &["a", "b"]);
        check(r#""/opt/my tools/cred" --name "a b""#, &["/opt/my tools/cred", "--name", "a b"]);
        check(r#"a"b c"d"#, &["ab cd"]);
        check(r#"echo '{"Version": 1}'"#, &["echo", r#"{"Version": 1}"#]);
        check(r#""say \"hi\" \\ \n""#, &[r#"say "hi" \ \n"#]);
        check(r"a\ b c", &["a b", "c"]);
        check(r#""" x"#, &["", "x"]);
        check("'$HOME' ~", &["$HOME", "~"]);
        for bad in [r#"a "b"#, "a 'b", "a \\"] {
            assert!(split_command(bad).is_err(), "{bad:?}");
        }
    }

    /// Writes an executable shell script into a fresh temporary folder.
    struct Script {
        dir: PathBuf,
        path: PathBuf,
    }

    impl Script {
        fn new(name: &str, body: &str) -> Script {
            use std::os::unix::fs::PermissionsExt;
            let dir = std::env::temp_dir().join(format!("lock-exec-process-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("create a temporary folder");
            let path = dir.join("cred tool");
            std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write the script");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("make it executable");
            Script { dir, path }
        }

        /// The command line running the script (quoted: its path has a blank).
        fn command(&self, args: &str) -> String {
            format!("\"{}\" {args}", self.path.display())
        }

        fn path(&self) -> &Path {
            &self.path
        }
    }

    impl Drop for Script {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn output_script(name: &str, json: &str) -> Script {
        Script::new(name, &format!("cat <<'JSON'\n{json}\nJSON"))
    }

    #[test]
    fn a_successful_process_gives_credentials() {
        let script = output_script(
            "ok",
            r#"{"Version": 1, "AccessKeyId": "AKIDPROC", "SecretAccessKey": "PROCSECRET", "SessionToken": "PROCTOKEN",
                "Expiration": "2030-01-02T03:04:05Z", "AccountId": "123456789012"}"#,
        );
        let c = load_at("dev", &script.command(""), now()).expect("credentials");
        assert_eq!(c.access_key_id(), "AKIDPROC");
        assert_eq!(c.secret_access_key(), "PROCSECRET");
        assert_eq!(c.session_token(), Some("PROCTOKEN"));
        assert_eq!(c.expiry(), Some(at(1_893_553_445)));
        assert_eq!(c.account_id().map(|a| a.as_str()), Some("123456789012"));
    }

    #[test]
    fn arguments_reach_the_process_and_optional_fields_may_be_missing() {
        // The script prints its second argument, which is the JSON itself.
        let script = Script::new("args", r#"printf '%s' "$2""#);
        let command =
            script.command(r#"--json '{"Version":1,"AccessKeyId":"A","SecretAccessKey":"S","SessionToken":""}'"#);
        let c = load_default("dev", &command).expect("credentials");
        assert_eq!((c.access_key_id(), c.secret_access_key(), c.session_token(), c.expiry()), ("A", "S", None, None));
        assert!(c.account_id().is_none());
    }

    #[test]
    fn expiry_is_honoured() {
        let script = output_script(
            "expiry",
            r#"{"Version":1,"AccessKeyId":"A","SecretAccessKey":"S","Expiration":"2023-11-14T23:13:20+01:00"}"#,
        );
        // 22:13:20Z is the same instant as 23:13:20+01:00: already expired at `now`.
        let e = load_at("dev", &script.command(""), now()).expect_err("expired");
        assert!(e.to_string().contains("expired at 2023-11-14T23:13:20+01:00"), "{e}");
        let c = load_at("dev", &script.command(""), now() - Duration::from_secs(60)).expect("still valid");
        assert_eq!(c.expiry(), Some(now()));
    }

    /// [`load`] with the real environment's clock replaced by [`now`] and no timeout override.
    fn load_default(profile: &str, command: &str) -> Result<Credentials, Error> {
        load_at(profile, command, now())
    }

    fn load_at(profile: &str, command: &str, at: SystemTime) -> Result<Credentials, Error> {
        load_with_timeout(profile, command, at, TIMEOUT)
    }

    fn error(json: &str) -> String {
        parse_output(json, now()).expect_err("bad output")
    }

    #[test]
    fn command_lines_are_hidden_in_debug() {
        let line = CommandLine("creds --secret INLINESECRET".into());
        assert_eq!(format!("{line:?}"), "CommandLine(<hidden>)");
    }

    #[test]
    fn a_hanging_process_is_killed_after_the_timeout() {
        let started = Instant::now();
        let error = load_with_timeout("slow", "sh -c 'sleep 30'", now(), Duration::from_millis(300))
            .expect_err("the process hangs");
        assert!(error.to_string().contains("did not finish within 300ms"), "{error}");
        assert!(started.elapsed() < Duration::from_secs(10), "the fetch waited for the process");
    }

    #[test]
    fn a_descendant_holding_stdout_open_does_not_delay_the_call() {
        // The helper prints and exits; the `sleep` it started in a new session keeps stdout open for 15 s.
        let script = Script::new(
            "descendant",
            r#"setsid sleep 15 &
printf '{"Version":1,"AccessKeyId":"A","SecretAccessKey":"S"}'"#,
        );
        let started = Instant::now();
        let c = load_default("dev", &script.command("")).expect("credentials");
        assert_eq!(c.access_key_id(), "A");
        assert!(started.elapsed() < Duration::from_secs(5), "the call waited {:?}", started.elapsed());
    }

    #[test]
    fn output_beyond_the_limit_is_refused_with_bounded_memory() {
        for (name, body) in [("large", "head -c 1000000 /dev/zero"), ("endless", "yes PROCSECRET")] {
            let script = Script::new(name, body);
            let started = Instant::now();
            let e = load_default("dev", &script.command("")).expect_err("too much output");
            assert_eq!(
                e.to_string(),
                format!(
                    "credentials from credential_process: profile dev: credential_process {}: output is larger than \
                     64 KiB",
                    script.path().display()
                )
            );
            assert!(started.elapsed() < Duration::from_secs(5), "{name}: {:?}", started.elapsed());
        }
        // Exactly at the limit is fine as far as the size goes (the JSON is then judged).
        let script = Script::new("at-limit", &format!("head -c {OUTPUT_LIMIT} /dev/zero | tr '\\0' ' '"));
        let e = load_default("dev", &script.command("")).expect_err("blank output");
        assert!(e.to_string().ends_with("output ends early (line 1 column 65536)"), "{e}");
    }

    #[test]
    fn a_process_that_never_exits_is_killed_with_its_group_at_the_deadline() {
        let dir = std::env::temp_dir().join(format!("lock-exec-process-group-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create a temporary folder");
        let pid_file = dir.join("pid");
        // The helper starts a child in its own group, records its pid, and waits forever.
        let command = format!("sh -c 'sleep 60 & echo $! > {}; wait'", pid_file.display());
        let started = Instant::now();
        let e = load_with_timeout("slow", &command, now(), Duration::from_millis(500)).expect_err("hangs");
        assert!(e.to_string().ends_with("did not finish within 500ms"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
        let pid = std::fs::read_to_string(&pid_file).expect("the helper wrote its child's pid");
        let pid = pid.trim();
        let gone = (0..100).any(|_| {
            let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let dead = state.is_empty() || state.rsplit_once(')').is_some_and(|(_, r)| r.trim_start().starts_with('Z'));
            if !dead {
                std::thread::sleep(Duration::from_millis(20));
            }
            dead
        });
        assert!(gone, "the helper's child {pid} outlived the deadline");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_deadline_can_only_be_shortened_for_tests() {
        let script = Script::new("sleepy", "sleep 30");
        let env = Env::from_pairs(&[(TIMEOUT_VARIABLE, "300ms")]);
        let e = load(&env, "dev", &script.command("")).expect_err("hangs");
        assert!(e.to_string().ends_with("did not finish within 300ms"), "{e}");
        let env = Env::from_pairs(&[(TIMEOUT_VARIABLE, "soon")]);
        let e = load(&env, "dev", &script.command("")).expect_err("bad value");
        assert!(matches!(e, Error::Config(_)), "{e:?}");
    }

    #[test]
    fn bad_output_is_rejected_without_quoting_it() {
        fn check(json: &str, expected: &str) {
            assert_eq!(error(json), expected, "{json}");
        }
        check("", "output ends early (line 1 column 0)");
        check("AccessKeyId=PROCSECRET", "output is not valid JSON (line 1 column 1)");
        check(
            r#"{"Version":1,"AccessKeyId":"A","SecretAccessKey":"PROCSECRET""#,
            "output ends early (line 1 column 61)",
        );
        check(r#"["PROCSECRET"]"#, "output is not a JSON object");
        check(r#"{"AccessKeyId":"A","SecretAccessKey":"PROCSECRET"}"#, "output has no Version");
        check(
            r#"{"Version":2,"AccessKeyId":"A","SecretAccessKey":"PROCSECRET"}"#,
            "unsupported Version 2 (only 1 is known)",
        );
        check(r#"{"Version":"1","AccessKeyId":"A","SecretAccessKey":"PROCSECRET"}"#, "Version is not a number");
        check(r#"{"Version":1,"SecretAccessKey":"PROCSECRET"}"#, "output has no AccessKeyId");
        check(r#"{"Version":1,"AccessKeyId":"A"}"#, "output has no SecretAccessKey");
        check(r#"{"Version":1,"AccessKeyId":"A","SecretAccessKey":12345}"#, "SecretAccessKey is not a string");
        check(
            r#"{"Version":1,"AccessKeyId":"A","SecretAccessKey":"S","SessionToken":7}"#,
            "SessionToken is not a string",
        );
        check(
            r#"{"Version":1,"AccessKeyId":"A","SecretAccessKey":"PROCSECRET","Expiration":"soon"}"#,
            "Expiration \"soon\" is not an RFC 3339 time",
        );
    }

    #[test]
    fn process_failures_name_the_profile_and_status_but_not_the_output() {
        fn check(script: &Script, args: &str, expected: &str) {
            let e = load_default("dev", &script.command(args)).expect_err("failure");
            assert!(matches!(&e, Error::Credentials { provider: NAME, denied: false, .. }), "{e:?}");
            let shown = format!("{e} {e:?}");
            assert!(!shown.contains("PROCSECRET"), "{shown}");
            assert_eq!(e.to_string(), format!("credentials from credential_process: profile dev: {expected}"));
        }
        let program = |s: &Script| s.path().display().to_string();
        let failing =
            Script::new("exit", r#"echo '{"Version":1,"AccessKeyId":"A","SecretAccessKey":"PROCSECRET"}'; exit 3"#);
        check(&failing, "", &format!("credential_process {} failed (exit status: 3)", program(&failing)));
        let garbage = Script::new("garbage", "echo 'secret_key=PROCSECRET'");
        check(
            &garbage,
            "",
            &format!("credential_process {}: output is not valid JSON (line 1 column 1)", program(&garbage)),
        );
        let version = output_script("version", r#"{"Version":2,"AccessKeyId":"A","SecretAccessKey":"PROCSECRET"}"#);
        check(
            &version,
            "",
            &format!("credential_process {}: unsupported Version 2 (only 1 is known)", program(&version)),
        );
        let killed = Script::new("signal", "kill -9 $$");
        check(&killed, "", &format!("credential_process {} failed (signal: 9 (SIGKILL))", program(&killed)));
        // Without a terminal (as under `cargo test` from a script), stdin is /dev/null, not inherited.
        if crate::process::foreground_terminal_group().is_none() {
            let stdin =
                Script::new("stdin", r#"read line || echo '{"Version":1,"AccessKeyId":"A","SecretAccessKey":"S"}'"#);
            assert!(load_default("dev", &stdin.command("")).is_ok(), "stdin is closed, not inherited");
        }
    }

    #[test]
    fn commands_that_cannot_run_are_errors() {
        fn message(command: &str) -> String {
            load_default("dev", command).expect_err("cannot run").to_string()
        }
        assert_eq!(message("  "), "credentials from credential_process: profile dev: credential_process is empty");
        assert!(message("'unterminated").ends_with("cannot parse credential_process: unterminated single quote"));
        let missing = message("/nonexistent/lock-exec-tool --secret PROCSECRET");
        assert!(missing.starts_with("credentials from credential_process: profile dev: cannot run credential_process /nonexistent/lock-exec-tool: "), "{missing}");
        assert!(!missing.contains("PROCSECRET"), "{missing}");
    }
}
