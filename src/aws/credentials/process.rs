//! Credentials from a profile's `credential_process`: an external command that prints them as JSON.
//!
//! Reads no environment variables itself; the command line comes from the profile. It is split into words
//! the way the AWS CLI does (POSIX shell quoting, no shell is run), started with stdin closed and stderr
//! passed through, and its stdout is parsed as
//! `{"Version": 1, "AccessKeyId", "SecretAccessKey", "SessionToken"?, "Expiration"? (RFC 3339), "AccountId"?}`.
//! The command's output is never quoted in an error: it may hold the secret key.

use std::process::{Command, Stdio};
use std::time::SystemTime;

use aws_credential_types::Credentials;
use serde_json::Value;

use crate::aws::sts::parse_time;
use crate::error::Error;

/// The source's name in logs.
pub const NAME: &str = "credential_process";

/// Runs the `credential_process` command of profile `profile_name` and reads the credentials it prints.
/// `now` is used to reject credentials that have already expired.
pub fn load(profile_name: &str, command: &str, now: SystemTime) -> Result<Credentials, Error> {
    let fail = |message: String| Error::Credentials {
        provider: NAME,
        message: format!("profile {profile_name}: {message}"),
        denied: false,
    };
    let argv = split_command(command).map_err(|e| fail(format!("cannot parse credential_process: {e}")))?;
    let Some((program, args)) = argv.split_first() else {
        return Err(fail("credential_process is empty".to_owned()));
    };
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| fail(format!("cannot run credential_process {program}: {e}")))?;
    if !output.status.success() {
        return Err(fail(format!("credential_process {program} failed ({})", output.status)));
    }
    let stdout = String::from_utf8(output.stdout)
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
