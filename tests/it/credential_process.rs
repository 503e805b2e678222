//! `credential_process` under hostile or interactive helpers: a descendant that keeps stdout open, a helper that
//! never exits, one that prompts on the terminal (MFA), one that prints a megabyte. Each run must end promptly
//! with a clear outcome.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::{Case, Outcome, rfc3339_from_now};

/// The JSON a well-behaved helper prints.
fn document() -> String {
    json!({
        "Version": 1,
        "AccessKeyId": "ASIAPROCESSLIMITS",
        "SecretAccessKey": "it-process-limits-SECRET-91",
        "SessionToken": "it-process-limits-session-SECRET-92",
        "Expiration": rfc3339_from_now(Duration::from_secs(3600)),
    })
    .to_string()
}

/// Writes `bin/credentials.sh` with `body` and a profile `proc` running it; returns the script's path.
fn helper(case: &Case, body: &str) -> String {
    let program = case.write_script("bin/credentials.sh", body);
    case.write_aws_file("config", &format!("[profile proc]\ncredential_process = {program}\n"));
    program
}

/// `--profile proc -v run k -- sh -c 'echo ran'` with `extra` variables, waited for at most `limit`.
fn run_proc(case: &Case, extra: &[(&'static str, &str)], limit: Duration) -> Outcome {
    let mut env = case.env_without_credentials();
    for (name, value) in extra {
        env.insert(name, (*value).to_owned());
    }
    case.spawn_raw(&["-t", case.table(), "--profile", "proc", "-v", "run", "k", "--", "sh", "-c", "echo ran"], env)
        .wait(limit)
}

/// The one error line lock-exec logged.
#[track_caller]
fn error_line(out: &Outcome) -> String {
    let errors: Vec<String> = out
        .logs()
        .iter()
        .filter(|l| l["level"] == "error")
        .map(|l| l["msg"].as_str().unwrap_or_default().to_owned())
        .collect();
    out.check("error lines", 1, errors.len());
    errors[0].clone()
}

/// The helper prints its credentials and exits, but a `sleep` it started in a new session keeps stdout open
/// for 15 s: the run must not wait for it.
#[test]
fn a_descendant_holding_stdout_open_does_not_delay_the_run() {
    let case = Case::new("process_descendant");
    helper(&case, &format!("setsid sleep 15 &\ncat <<'JSON'\n{}\nJSON\n", document()));
    let started = Instant::now();
    let out = run_proc(&case, &[], Duration::from_secs(10));
    out.expect_code(0);
    out.check("the command's stdout", "ran\n", out.stdout.as_str());
    out.check("lock released", true, out.has_log("lock released"));
    let elapsed = started.elapsed();
    out.check("finished well before the descendant's 15 s", true, elapsed < Duration::from_secs(8));
    out.expect_no_secrets(&["it-process-limits-SECRET-91", "it-process-limits-session-SECRET-92"]);
}

/// A helper that never exits fails the run after the deadline (shortened for the test), naming the profile.
#[test]
fn a_process_that_never_exits_fails_after_the_deadline() {
    let case = Case::new("process_never_exits");
    helper(&case, "echo 'thinking' >&2\nexec sleep 600\n");
    let started = Instant::now();
    let out = run_proc(&case, &[("LOCK_EXEC_CREDENTIAL_PROCESS_TIMEOUT", "1s")], Duration::from_secs(10));
    out.expect_code(78);
    let line = error_line(&out);
    for phrase in ["profile proc", "did not finish within 1s"] {
        if !line.contains(phrase) {
            out.fail("the error line does not say it", &phrase, &line);
        }
    }
    out.check("stopped promptly after the deadline", true, started.elapsed() < Duration::from_secs(8));
}

/// A megabyte of output is refused with the cap in the message, and the run does not start the command.
#[test]
fn a_megabyte_of_output_is_refused() {
    let case = Case::new("process_megabyte");
    helper(&case, "head -c 1000000 /dev/zero | tr '\\0' x\n");
    let out = run_proc(&case, &[], Duration::from_secs(10));
    out.expect_code(78);
    out.check("the command ran", "", out.stdout.as_str());
    let line = error_line(&out);
    if !line.contains("output is larger than 64 KiB") {
        out.fail("the error line does not name the cap", &"output is larger than 64 KiB", &line);
    }
}

/// Run from a terminal (a pseudo-terminal from `script`), the helper can prompt and read a code from it (as an
/// MFA helper does), and lock-exec takes the terminal back: the command then reads the next line.
#[test]
fn an_interactive_process_reads_the_terminal_and_gives_it_back() {
    let case = Case::new("process_interactive");
    let program = case.write_script(
        "bin/mfa.sh",
        &format!(
            "printf 'MFA code: ' >&2\nread code\nif [ \"$code\" = 424242 ]; then\ncat <<'JSON'\n{}\nJSON\nelse\n\
             echo \"wrong code: $code\" >&2; exit 1\nfi\n",
            document()
        ),
    );
    case.write_aws_file("config", &format!("[profile mfa]\ncredential_process = {program}\n"));
    let inner = format!(
        "{} -t {} --profile mfa run k -- sh -c 'read line; echo \"command got $line\"'",
        env!("CARGO_BIN_EXE_lock-exec"),
        case.table()
    );
    let mut child = Command::new("script")
        .args(["-qec", &inner, "/dev/null"])
        .env_clear()
        .envs(case.env_without_credentials())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run script(1) from util-linux");
    child.stdin.take().expect("stdin is piped").write_all(b"424242\nsecond line\n").expect("type on the terminal");
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let output = child.wait_with_output().expect("collect output");
            panic!(
                "still running after 20 s (stopped reading the terminal?)\n--- stdout:\n{}\n--- stderr:\n{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().expect("collect output");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "exit {:?}\n--- stdout:\n{stdout}", output.status);
    assert!(stdout.contains("MFA code: "), "the prompt reaches the terminal\n--- stdout:\n{stdout}");
    assert!(
        stdout.contains("command got second line"),
        "the command read the line after the code\n--- stdout:\n{stdout}"
    );
    assert!(!stdout.contains("it-process-limits-SECRET-91"), "{stdout}");
}
