//! Credentials from a profile's `credential_process`: an external command that prints them as JSON.
//!
//! Reads no environment variables itself; the command line comes from the profile. It is split into words
//! the way the AWS CLI does (POSIX shell quoting, no shell is run), started with stdin closed and stderr
//! passed through, and its stdout is parsed as
//! `{"Version": 1, "AccessKeyId", "SecretAccessKey", "SessionToken"?, "Expiration"? (RFC 3339), "AccountId"?}`.
//! The command's output is never quoted in an error: it may hold the secret key.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use aws_credential_types::Credentials;
use serde_json::Value;

use crate::aws::sts::parse_time;
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

/// How long a credential process may run before it is killed and the fetch fails.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// Runs the `credential_process` command of profile `profile_name` and reads the credentials it prints.
/// `now` is used to reject credentials that have already expired.
pub fn load(profile_name: &str, command: &str, now: SystemTime) -> Result<Credentials, Error> {
    load_with_timeout(profile_name, command, now, TIMEOUT)
}

/// [`load`] with its own time limit.
pub fn load_with_timeout(
    profile_name: &str,
    command: &str,
    now: SystemTime,
    timeout: Duration,
) -> Result<Credentials, Error> {
    let fail = |message: String| Error::Credentials {
        provider: NAME,
        message: format!("profile {profile_name}: {message}"),
        denied: false,
    };
    let argv = split_command(command).map_err(|e| fail(format!("cannot parse credential_process: {e}")))?;
    let Some((program, args)) = argv.split_first() else {
        return Err(fail("credential_process is empty".to_owned()));
    };
    // Its own process group, so a timeout kills whatever it started too (and frees the stdout pipe).
    let mut child = Command::new(program)
        .args(args)
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| fail(format!("cannot run credential_process {program}: {e}")))?;
    let mut pipe = child.stdout.take();
    let reader = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(pipe) = pipe.as_mut() {
            let _ = pipe.read_to_end(&mut bytes);
        }
        bytes
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Ok(None) => {
                crate::process::signal_group(child.id(), libc::SIGKILL);
                let _ = child.wait();
                let _ = reader.join();
                return Err(fail(format!("credential_process {program} did not finish within {timeout:?}")));
            }
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                let _ = reader.join();
                return Err(fail(format!("cannot wait for credential_process {program}: {e}")));
            }
        }
    };
    let stdout = reader.join().unwrap_or_default();
    if !status.success() {
        return Err(fail(format!("credential_process {program} failed ({status})")));
    }
    let stdout = String::from_utf8(stdout)
        .map_err(|_| fail(format!("credential_process {program} printed output that is not UTF-8")))?;
    parse_output(&stdout, now).map_err(|e| fail(format!("credential_process {program}: {e}")))
}

/// Reads the JSON a credential process prints; the error never includes a value from it.
fn parse_output(stdout: &str, now: SystemTime) -> Result<Credentials, String> {
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
        let c = load("dev", &script.command(""), now()).expect("credentials");
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
        let c = load("dev", &command, now()).expect("credentials");
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
        let e = load("dev", &script.command(""), now()).expect_err("expired");
        assert!(e.to_string().contains("expired at 2023-11-14T23:13:20+01:00"), "{e}");
        let c = load("dev", &script.command(""), now() - Duration::from_secs(60)).expect("still valid");
        assert_eq!(c.expiry(), Some(now()));
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
            let e = load("dev", &script.command(args), now()).expect_err("failure");
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
        let stdin =
            Script::new("stdin", r#"read line || echo '{"Version":1,"AccessKeyId":"A","SecretAccessKey":"S"}'"#);
        assert!(load("dev", &stdin.command(""), now()).is_ok(), "stdin is closed, not inherited");
    }

    #[test]
    fn commands_that_cannot_run_are_errors() {
        fn message(command: &str) -> String {
            load("dev", command, now()).expect_err("cannot run").to_string()
        }
        assert_eq!(message("  "), "credentials from credential_process: profile dev: credential_process is empty");
        assert!(message("'unterminated").ends_with("cannot parse credential_process: unterminated single quote"));
        let missing = message("/nonexistent/lock-exec-tool --secret PROCSECRET");
        assert!(missing.starts_with("credentials from credential_process: profile dev: cannot run credential_process /nonexistent/lock-exec-tool: "), "{missing}");
        assert!(!missing.contains("PROCSECRET"), "{missing}");
    }
}
