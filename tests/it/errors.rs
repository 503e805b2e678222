//! Configuration, usage and connection errors: each has its exit code, a message naming the problem, and the
//! command is never started.

use std::collections::BTreeMap;

use crate::support::{Case, Outcome};

/// `lock-exec ARGS... run KEY -- sh -c 'touch marker'` with exactly `env`; checks the exit code and that the
/// command did not start; returns the outcome.
#[track_caller]
fn run_fails(
    case: &Case,
    before: &[&str],
    key: &str,
    env: BTreeMap<&'static str, String>,
    expected_code: i32,
) -> Outcome {
    let mut args = before.to_vec();
    args.extend(["run", key]);
    let out = case.run_not_started(&args, env);
    out.expect_code(expected_code);
    out
}

#[test]
fn missing_table_exits_78_naming_resource_not_found() {
    let case = Case::new("missing_table");
    let out = run_fails(&case, &["-t", "no-such-table-lock-exec-it"], "k", case.env(), 78);
    out.expect_stderr_contains("ResourceNotFoundException");
    // The table may come silently from LOCK_EXEC_TABLE or a wrong region: the error names all three.
    let named = "table \"no-such-table-lock-exec-it\" in region us-east-1 at http://127.0.0.1:";
    out.check("the error names table, region, endpoint", true, out.messages().iter().any(|m| m.contains(named)));
    out.check("error line", true, out.logs().iter().any(|l| l["level"] == "error" && l["exit_code"] == 78));
}

/// A table that came from LOCK_EXEC_TABLE (nothing on the command line names it) is said to come from there.
#[test]
fn missing_table_from_lock_exec_table_says_so() {
    let case = Case::new("missing_table_env");
    let mut env = case.env();
    env.insert("LOCK_EXEC_TABLE", "no-such-table-from-env".into());
    let out = run_fails(&case, &[], "k", env, 78);
    let named = "table \"no-such-table-from-env\" (LOCK_EXEC_TABLE) in region us-east-1";
    out.check("the error names LOCK_EXEC_TABLE", true, out.messages().iter().any(|m| m.contains(named)));
}

#[test]
fn no_credentials_exits_78() {
    let case = Case::new("no_credentials");
    let out = run_fails(&case, &["-t", case.table()], "k", case.env_without_credentials(), 78);
    out.expect_stderr_contains("no credentials");
    out.check("item created", None, case.item("k"));
}

#[test]
fn bad_duration_exits_64_naming_the_value() {
    let case = Case::new("bad_duration");
    let out = run_fails(&case, &["-t", case.table(), "-e", "5x"], "k", case.env(), 64);
    let naming: Vec<&str> = out.stderr.lines().filter(|l| l.contains("5x")).collect();
    out.check("stderr lines naming \"5x\"", 1, naming.len());
    out.check(
        "it is lock-exec's error line",
        true,
        naming[0].starts_with("lock-exec: ") && naming[0].contains("--expire"),
    );
}

#[test]
fn empty_key_exits_64() {
    let case = Case::new("empty_key");
    let out = run_fails(&case, &["-t", case.table()], "", case.env(), 64);
    out.expect_stderr_contains("KEY is empty");
}

#[test]
fn no_region_exits_78() {
    let case = Case::new("no_region");
    let mut env = case.env();
    env.remove("AWS_REGION");
    let out = run_fails(&case, &["-t", case.table()], "k", env, 78);
    out.expect_stderr_contains("no region");
}

#[test]
fn unreachable_endpoint_exits_69() {
    let case = Case::new("unreachable_endpoint");
    let mut env = case.env();
    env.insert("AWS_ENDPOINT_URL", "http://127.0.0.1:1".into());
    let out = run_fails(&case, &["-t", case.table()], "k", env, 69);
    out.expect_stderr_contains("cannot reach dynamodb");
}

#[test]
fn a_server_that_never_answers_is_named_with_the_wait_and_the_attempts() {
    let case = Case::new("never_answers");
    // Bound but never accepted: the kernel completes the handshake, nothing ever answers.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a silent port");
    let url = format!("http://{}", listener.local_addr().expect("its address"));
    let mut env = case.env();
    env.insert("AWS_ENDPOINT_URL", url.clone());
    env.insert("AWS_MAX_ATTEMPTS", "2".into());
    let out = case.spawn_raw(&["-t", case.table(), "status", "k"], env).wait(std::time::Duration::from_secs(40));
    out.expect_code(69);
    out.expect_stderr_contains(&format!("cannot reach dynamodb at {url}/ (2 attempts in "));
    out.expect_stderr_contains("no answer within 5.0 s");
    out.check("no library wording", false, out.stderr.contains("timeout: global"));
    drop(listener);
}

#[test]
fn without_a_home_folder_the_error_says_so() {
    let case = Case::new("no_home");
    let mut env = case.env_without_credentials();
    env.remove("HOME");
    let out = run_fails(&case, &["-t", case.table()], "k", env, 78);
    out.expect_stderr_contains("no shared config or credentials file (HOME is not set");
    out.check("no made-up path", false, out.stderr.contains("(no home folder)"));
}

/// A malformed endpoint URL is one line naming the problem, exit 78, nothing sent and the command not started. A
/// port out of range was read as no port (the request went to port 80), a missing host was retried as an
/// unresolvable name (exit 69), and a bare IPv6 address failed as "cannot sign the request".
#[test]
fn a_malformed_endpoint_url_is_one_line_naming_the_problem() {
    let case = Case::new("bad_endpoint_url");
    for (url, problem) in [
        ("http://127.0.0.1:99999", "port 99999 is not a number from 1 to 65535"),
        ("http://:49067", "no host"),
        ("http://::1:49067", "an IPv6 address goes in brackets"),
    ] {
        let mut env = case.env();
        env.insert("AWS_ENDPOINT_URL", url.to_owned());
        let out = case.run_not_started(&["-t", case.table(), "run", "k"], env);
        out.expect_code(78);
        let lines: Vec<&str> = out.stderr.lines().filter(|line| !line.trim().is_empty()).collect();
        out.check("stderr lines", 1, lines.len());
        // Named under the variable it came from (issue 11).
        out.expect_stderr_contains(&format!("AWS_ENDPOINT_URL: invalid endpoint URL \\\"{url}\\\": {problem}"));
    }
    // From the flag, a usage error.
    let out =
        case.run_not_started(&["-t", case.table(), "--endpoint-url", "http://127.0.0.1:0", "run", "k"], case.env());
    out.expect_code(64);
    out.expect_stderr_contains("--endpoint-url: invalid endpoint URL \"http://127.0.0.1:0\": port 0 is not");
}

/// Scheme and host are case-insensitive: `HTTP://` works as `http://` does.
#[test]
fn an_upper_case_endpoint_scheme_works() {
    let case = Case::new("upper_scheme");
    let mut env = case.env();
    let url = crate::support::endpoint().replacen("http://", "HTTP://", 1);
    env.insert("AWS_ENDPOINT_URL", url);
    case.run_env(&["-t", case.table(), "run", "k", "--", "true"], env).expect_code(0);
}

/// A region of no known form (`us-east1`) with no endpoint configured: a warning naming it comes before the
/// lookup of a host that cannot exist. Run in a network namespace of its own (`unshare -n`, root as in CI), so
/// the lookup fails at once and nothing leaves the machine.
#[test]
fn a_region_typo_is_named_before_the_unreachable_host() {
    let offline = |region: &str, args: &[&str]| {
        let out = std::process::Command::new("unshare")
            .args(["-n", env!("CARGO_BIN_EXE_lock-exec")])
            .args(args)
            .env_clear()
            .envs([
                ("PATH", "/usr/bin:/bin"),
                ("HOME", "/nonexistent"),
                ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
                ("AWS_SECRET_ACCESS_KEY", "secret"),
                ("AWS_REGION", region),
                ("AWS_EC2_METADATA_DISABLED", "true"),
            ])
            .output()
            .expect("run unshare -n (util-linux; needs root, as CI has)");
        let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
        (out.status.code(), text(&out.stderr), text(&out.stdout))
    };
    let (code, stderr, _) = offline("us-east1", &["status", "k"]);
    assert_eq!(code, Some(69), "{stderr}");
    let first: serde_json::Value = serde_json::from_str(stderr.lines().next().unwrap_or_default()).unwrap_or_default();
    assert_eq!(first["msg"], "the region is not an AWS region name (like us-east-1): check it", "{stderr}");
    assert_eq!(first["region"], "us-east1", "{stderr}");
    // A known region gets no such warning.
    let (code, stderr, _) = offline("us-east-1", &["status", "k"]);
    assert_eq!(code, Some(69), "{stderr}");
    assert!(!stderr.contains("not an AWS region name"), "{stderr}");
    // doctor's region line says it too.
    let (_, _, stdout) = offline("us-east1", &["-q", "doctor"]);
    let region = stdout.lines().find(|line| line.contains("\"check\":\"region\"")).unwrap_or_default().to_owned();
    assert!(region.contains("not an AWS region name"), "{stdout}");
}
