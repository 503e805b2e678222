//! `run` end to end: acquire, run, release; command splitting; the lock held by someone else; races; exit codes;
//! signals; lease renewal, expiry and loss; items written by the Go tool.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::{Case, Outcome, Running, eventually, host_name, is_dead, now_ns, signal, sleep_until};

const LOCKED: &str = "did not run command. key is locked";
const WAIT: Duration = Duration::from_secs(30);

/// Starts `run k [flags...] -- sh -c SCRIPT` and waits until the script has written a line to `started` in the
/// case folder; returns the run and that line.
fn start(case: &Case, flags: &[&str], script: &str) -> (Running, String) {
    let mut args = vec!["run", "k"];
    args.extend_from_slice(flags);
    args.extend(["--", "sh", "-c", script]);
    let mut run = case.spawn(&args);
    let line = run.wait_for_line(&case.path("started"), WAIT);
    (run, line)
}

/// The run released `k`: it logged `lock released`, and `status k` says `free`.
#[track_caller]
fn expect_released(case: &Case, out: &Outcome) {
    out.check("released", true, out.has_log("lock released"));
    case.run(&["status", "k"]).expect_state("free");
}

/// `run k --locked-exit-code 9 -- sh -c 'touch marker'` while another run holds `k`: exits 9 and the command
/// does not start.
#[track_caller]
fn run_while_locked(case: &Case) -> Outcome {
    let out = case.run_not_started(&["-t", case.table(), "run", "k", "--locked-exit-code", "9"], case.env());
    out.expect_code(9);
    out
}

#[test]
fn run_acquires_runs_and_releases() {
    let case = Case::new("run_acquires_runs_and_releases");
    let script = "echo hello from the child; echo $LOCK_EXEC_KEY $LOCK_EXEC_FENCE";
    let out = case.run(&["run", "job", "--", "sh", "-c", script]);
    out.expect_code(0);
    out.check(
        "messages",
        vec!["lock acquired", "running command", "command succeeded", "lock released"],
        out.messages().iter().map(String::as_str).collect(),
    );
    out.check(
        "stderr lines that are not log lines",
        Vec::<&str>::new(),
        out.stderr.lines().filter(|l| !l.starts_with('{')).collect(),
    );
    for line in out.logs() {
        out.check("level is a string", true, line["level"].is_string());
        out.check("ts is a float", true, line["ts"].is_f64());
        out.check("msg is a string", true, line["msg"].is_string());
        out.check("key field", json!("job"), line["key"].clone());
        out.check("command field", json!(format!("sh -c {script}")), line["command"].clone());
    }
    let fence = out.log("lock acquired")["fence"].as_u64().unwrap_or_else(|| out.fail("fence", &"a number", &"none"));
    out.check("fence on running command", json!(fence), out.log("running command")["fence"].clone());
    out.check("child's stdout", format!("hello from the child\njob {fence}\n"), out.stdout.clone());

    let status = case.run(&["status", "job"]);
    status.expect_state("free");
    status.check("fence", json!(fence), status.stdout_json()["fence"].clone());
    let item = case.item("job").expect("the item stays after a release");
    out.check(
        "item after release (owner, expire, fence)",
        (None, 0, Some(fence)),
        (item.owner, item.expire_ns, item.fence),
    );
}

#[test]
fn command_string_is_split_like_go_fields_without_a_shell() {
    let case = Case::new("command_string_is_split");
    // Tabs, runs of spaces, newlines and Unicode spaces (NBSP, EM SPACE) all separate fields, as Go's
    // strings.Fields does; printf then sees the format `[%s]\n` and the fields `a` and `b`.
    let command = "\tprintf  [%s]\\n \u{a0}a\u{2003}\u{2003} b\n";
    let out = case.run(&["run", "fields", command]);
    out.expect_code(0);
    out.check("stdout", "[a]\n[b]\n", out.stdout.as_str());
    out.check("logged command", json!(command), out.log("running command")["command"].clone());

    // No shell: no expansion, no redirection, no globbing, no command separators.
    let out = case.run(&["run", "literal", "echo $HOME a;b|c >out * 'q  q'"]);
    out.expect_code(0);
    out.check("stdout", "$HOME a;b|c >out * 'q q'\n", out.stdout.as_str());
    out.check("a file made by a redirection", false, case.exists("out"));
}

#[test]
fn second_concurrent_run_is_skipped_with_the_locked_exit_code() {
    let case = Case::new("second_concurrent_run");
    let (first, _) = start(&case, &[], &case.holding_script("started", "release"));

    let second = run_while_locked(&case);
    second.check("messages", vec![LOCKED.to_owned()], second.messages());
    let line = second.log(LOCKED);
    second.check("holder", json!(host_name()), line["holder"].clone());
    second.check("holder_pid", json!(first.pid()), line["holder_pid"].clone());
    let expire = line["expire"].as_str().unwrap_or_default();
    second.check("expire is an RFC 3339 time", true, expire.len() > 20 && expire.ends_with('Z'));
    // When a run could take it: the lease end plus --max-clock-skew (2 s by default).
    let with_skew = line["expire_with_skew"].as_str().and_then(lock_exec::lock::parse_rfc3339_ns);
    let expire_ns = lock_exec::lock::parse_rfc3339_ns(expire);
    second.check("expire_with_skew", expire_ns.map(|ns| ns + 2_000_000_000), with_skew);

    case.release("release");
    first.wait(WAIT).expect_code(0);
}

#[test]
fn twenty_concurrent_runs_execute_the_command_once() {
    let case = Case::new("twenty_concurrent_runs");
    let script = format!("echo ran >> '{}'; sleep 2", case.file("lines"));
    let running: Vec<_> = (0..20).map(|_| case.spawn(&["run", "race", "--", "sh", "-c", &script])).collect();
    let outs: Vec<Outcome> = running.into_iter().map(|r| r.wait(Duration::from_secs(60))).collect();
    let report =
        || outs.iter().map(|o| format!("exit {} {:?}\n{}", o.status, o.args, o.stderr)).collect::<Vec<_>>().join("\n");
    let lines = std::fs::read_to_string(case.path("lines")).unwrap_or_default();
    let ran = outs.iter().filter(|o| o.has_log("running command")).count();
    let locked = outs.iter().filter(|o| o.has_log(LOCKED)).count();
    let codes: Vec<Option<i32>> = outs.iter().map(Outcome::code).collect();
    let expected = (1, 1, 19, vec![Some(0); 20]);
    let actual = (lines.lines().count(), ran, locked, codes);
    assert_eq!(
        expected,
        actual,
        "(lines written, runs that ran, runs told the key is locked, exit codes)\n--- all logs:\n{}",
        report()
    );
}

#[test]
fn child_exit_codes_pass_through() {
    let case = Case::new("child_exit_codes_pass_through");
    let out = case.run(&["run", "k", "--", "sh", "-c", "exit 7"]);
    out.expect_code(7);
    let failed = out.log("command failed");
    out.check("command failed (level, exit_code)", json!(["error", 7]), json!([failed["level"], failed["exit_code"]]));
    out.check("released", true, out.has_log("lock released"));

    let out = case.run(&["run", "k", "--", "sh", "-c", "kill -9 $$"]);
    out.expect_death_by(libc::SIGKILL);
    out.check("exit_code field", json!(137), out.log("command failed")["exit_code"].clone());
    expect_released(&case, &out);
}

/// The program is searched in the PATH the command gets, as `std::process::Command` searched it: with `PATH`
/// twice in lock-exec's environment the command gets the last one (as `std::env` reads it), so the program
/// must come from that one too, not from the first (`getenv`'s, which `execvpe` reads).
#[test]
fn the_program_is_searched_in_the_path_the_command_gets() {
    let case = Case::new("program_searched_in_command_path");
    let base = case.env()["PATH"].clone();
    for dir in ["first", "last"] {
        std::fs::create_dir_all(case.path(dir)).expect("create the PATH folder");
        let prog = case.path(&format!("{dir}/which-path"));
        std::fs::write(&prog, format!("#!/bin/sh\necho {dir} \"$PATH\"\n")).expect("write the program");
        std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let mut entries: Vec<String> =
        case.env().into_iter().filter(|(name, _)| *name != "PATH").map(|(n, v)| format!("{n}={v}")).collect();
    entries.push(format!("PATH={}:{base}", case.file("first")));
    entries.push(format!("PATH={}:{base}", case.file("last")));
    let out = case.spawn_with_environ(&["-t", case.table(), "run", "k", "--", "which-path"], &entries).wait(WAIT);
    out.expect_code(0);
    let expected = format!("last {}:{base}\n", case.file("last"));
    out.check("the program found and the PATH it got", expected, out.stdout.clone());
}

/// A PATH entry longer than PATH_MAX is skipped, as musl's and glibc's `execvp` skipped it under
/// `std::process`: the program in a later entry runs. (The new search tried `ENTRY/which-path` and stopped at
/// its ENAMETOOLONG: exit 126, "File name too long".)
#[test]
fn a_path_entry_longer_than_path_max_is_skipped() {
    let case = Case::new("path_entry_longer_than_path_max");
    std::fs::create_dir_all(case.path("bin")).expect("create the PATH folder");
    let prog = case.path("bin/which-path");
    std::fs::write(&prog, "#!/bin/sh\necho found\n").expect("write the program");
    std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let long = "/x".repeat(2100);
    let out = case.run_with(&["-t", case.table(), "run", "k", "--", "which-path"], |env| {
        let base = env["PATH"].clone();
        env.insert("PATH", format!("{long}:{}:{base}", case.file("bin")));
    });
    out.expect_code(0);
    out.check("the program's output", "found\n".to_owned(), out.stdout.clone());
    expect_released(&case, &out);
}

#[test]
fn missing_program_exits_127_and_releases() {
    let case = Case::new("missing_program_exits_127");
    let out = case.run(&["run", "k", "--", "/nonexistent/prog", "arg"]);
    out.expect_code(127);
    out.expect_stderr_contains("/nonexistent/prog: command not found");
    expect_released(&case, &out);
}

#[test]
fn non_executable_program_exits_126_and_releases() {
    let case = Case::new("non_executable_program_exits_126");
    let program = case.path("not-executable.sh");
    std::fs::write(&program, "#!/bin/sh\ntouch marker\n").expect("write the script");
    std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o644)).expect("chmod 644");
    let out = case.run(&["run", "k", "--", &case.file("not-executable.sh")]);
    out.expect_code(126);
    out.expect_stderr_contains("permission denied");
    out.check("marker", false, case.exists("marker"));
    expect_released(&case, &out);
}

#[test]
fn sigterm_reaches_the_child_and_the_lock_is_released() {
    let case = Case::new("sigterm_reaches_the_child");
    let script = format!(
        "trap 'echo term > {}; exit 143' TERM; echo $$ > {}; while :; do sleep 0.1; done",
        case.file("trapped"),
        case.file("started")
    );
    let (run, _) = start(&case, &[], &script);
    let sent = Instant::now();
    signal(run.pid(), libc::SIGTERM);
    let out = run.wait(WAIT);
    let exited_after = sent.elapsed();
    out.expect_code(143);
    out.check(
        "the child's trap ran",
        "term\n",
        std::fs::read_to_string(case.path("trapped")).unwrap_or_default().as_str(),
    );
    out.check("forwarded signal", json!(libc::SIGTERM), out.log("forwarding signal to the command")["signal"].clone());
    // The default --kill-after is 10 s: an exit well before shows the child's own trap ended it.
    out.check("exited within 5 s of the signal", true, exited_after < Duration::from_secs(5));
    expect_released(&case, &out);
}

#[test]
fn kill_after_sigkills_a_child_that_ignores_sigterm() {
    let case = Case::new("kill_after_sigkills");
    // The ignored disposition is inherited by the short sleeps, so nothing in the group dies of SIGTERM.
    let script = format!("trap '' TERM; echo $$ > {}; while :; do sleep 0.1; done", case.file("started"));
    let (run, _) = start(&case, &["--kill-after", "1s"], &script);
    let sent = Instant::now();
    signal(run.pid(), libc::SIGTERM);
    let out = run.wait(WAIT);
    let exited_after = sent.elapsed();
    out.expect_death_by(libc::SIGKILL);
    out.check("SIGKILL logged", true, out.has_log("command still running after the grace period; sending SIGKILL"));
    out.check(
        "exit between 0.9 s and 6 s after SIGTERM",
        true,
        (Duration::from_millis(900)..Duration::from_secs(6)).contains(&exited_after),
    );
    expect_released(&case, &out);
}

#[test]
fn lease_renewal_keeps_a_short_lease_alive_through_a_long_command() {
    let case = Case::new("lease_renewal");
    let script = format!("echo $$ > {}; sleep 10", case.file("started"));
    let (first, _) = start(&case, &["-e", "3s"], &script);
    let started = Instant::now();
    for at in [5, 8] {
        sleep_until(started + Duration::from_secs(at));
        let other = run_while_locked(&case);
        other.check(&format!("locked at {at} s"), true, other.has_log(LOCKED));
    }
    let out = first.wait(WAIT);
    out.expect_code(0);
    out.check("lock lost logged", false, out.has_log("lock lost"));
    out.check("renewal failures logged", false, out.has_log("lock renewal failed; retrying"));
    out.check("released", true, out.has_log("lock released"));
}

#[test]
fn sigkilled_lock_exec_leaves_a_lock_that_expires_and_no_orphan() {
    let case = Case::new("sigkilled_lock_exec");
    let script = format!("echo $$ > {}; exec sleep 30", case.file("started"));
    let (first, line) = start(&case, &["-e", "2s"], &script);
    let child: u32 = line.trim().parse().expect("a pid");
    signal(first.pid(), libc::SIGKILL);
    let killed = Instant::now();
    let out = first.wait(WAIT);
    out.check("killed by signal", Some(libc::SIGKILL), out.status.signal());

    run_while_locked(&case);

    // PR_SET_PDEATHSIG: the child dies with lock-exec.
    if !eventually(Duration::from_secs(3), || is_dead(child)) {
        panic!(
            "the child {child} still runs 3 s after lock-exec was SIGKILLed\n--- lock-exec's stderr:\n{}",
            out.stderr
        );
    }

    // The 2 s lease, then --max-clock-skew (2 s).
    sleep_until(killed + Duration::from_millis(4500));
    let taken = case.run(&["run", "k", "--", "sh", "-c", &case.marker_script()]);
    taken.expect_code(0);
    taken.check("marker made once the lease passed", true, case.exists("marker"));
}

#[test]
fn force_unlock_during_a_run_stops_the_command_with_75() {
    let case = Case::new("force_unlock_during_a_run");
    let script = format!("echo $$ > {}; sleep 30", case.file("started"));
    let (first, _) = start(&case, &["-e", "3s"], &script);
    case.run(&["unlock", "k"]).expect_code(0);
    let unlocked = Instant::now();
    let out = first.wait(WAIT);
    let stopped_after = unlocked.elapsed();
    out.expect_code(75);
    let line = out.log("lock lost");
    out.check(
        "lock lost (level, error)",
        json!(["error", "the lock was force-unlocked"]),
        json!([line["level"], line["error"]]),
    );
    // No holder after an unlock: the item keeps this run's own host and pid, which are not a holder.
    let holder: Vec<&str> =
        ["holder", "holder_pid", "acquired", "fence"].into_iter().filter(|field| line.get(*field).is_some()).collect();
    out.check("holder fields on lock lost", Vec::<&str>::new(), holder);
    out.check("stopped within 6 s of the unlock", true, stopped_after < Duration::from_secs(6));
}

#[test]
fn go_item_in_the_future_blocks_the_run() {
    let case = Case::new("go_item_in_the_future");
    let expire = now_ns() + 60_000_000_000;
    case.put_go_item("k", expire);
    let out = case.run_not_started(&["-t", case.table(), "run", "k"], case.env());
    out.expect_code(0);
    let line = out.log(LOCKED);
    out.check("holder of a Go item", json!("unknown (no owner recorded)"), line["holder"].clone());
    let item = case.item("k").expect("the Go item stays");
    out.check("item untouched (expire, owner, fence)", (expire, None, None), (item.expire_ns, item.owner, item.fence));
}

#[test]
fn go_item_in_the_past_is_taken_over() {
    let case = Case::new("go_item_in_the_past");
    case.put_go_item("k", now_ns() - 60_000_000_000);
    let (run, started) = start(&case, &[], &case.holding_script("started", "release"));
    let fields: Vec<&str> = started.split_whitespace().collect();
    let (owner, fence) = match fields[..] {
        [_, owner, fence] => (owner.to_owned(), fence.parse::<u64>().expect("LOCK_EXEC_FENCE is a number")),
        _ => panic!("the child saw no LOCK_EXEC_OWNER / LOCK_EXEC_FENCE: {started:?}"),
    };
    let item = case.item("k").expect("the item");
    let expected = (Some(owner), Some(fence), Some(host_name()), Some(run.pid()), true);
    let actual = (item.owner.clone(), item.fence, item.host.clone(), item.pid, item.expire_ns > now_ns());
    assert_eq!(expected, actual, "(owner, fence, host, pid, expire in the future) while the command runs: {item:?}");
    case.release("release");
    let out = run.wait(WAIT);
    out.expect_code(0);
    let item = case.item("k").expect("the item");
    out.check("after release (owner, fence)", (None, Some(fence)), (item.owner, item.fence));
}

/// Secrets never reach the logs, even at the most verbose level.
#[test]
fn verbose_logs_never_show_the_secret_key() {
    let case = Case::new("verbose_logs_never_show_the_secret");
    let out = case.run(&["-v", "run", "k", "--", "true"]);
    out.expect_code(0);
    out.check("debug lines present", true, out.logs().iter().any(|l| l["level"] == "debug"));
    for text in [&out.stdout, &out.stderr] {
        out.check("the secret key in the output", false, text.contains(crate::support::SECRET_ACCESS_KEY));
    }
}

#[test]
fn clean_env_aws_keeps_credentials_out_of_the_command() {
    let case = Case::new("clean_env_aws");
    let script =
        "env | grep -E '^AWS_(ACCESS|SECRET|SESSION)' | cut -d= -f1; echo region=$AWS_REGION; echo key=$LOCK_EXEC_KEY";
    let dirty = case.run(&["run", "k", "--", "sh", "-c", script]);
    dirty.expect_code(0);
    dirty.check("credentials in the default environment", true, dirty.stdout.contains("AWS_SECRET_ACCESS_KEY"));
    let clean = case.run(&["run", "k", "--clean-env-aws", "--", "sh", "-c", script]);
    clean.expect_code(0);
    clean.check("credential variables with --clean-env-aws", "region=us-east-1\nkey=k\n", clean.stdout.as_str());
}

#[test]
fn a_command_string_with_shell_syntax_runs_without_a_shell_and_says_so_once() {
    let case = Case::new("shell_syntax_warning");
    let out = case.run(&["run", "k", "echo hello | tr a-z A-Z"]);
    out.expect_code(0);
    out.check("echo got the pipe as arguments", "hello | tr a-z A-Z", out.stdout.trim());
    let warnings: Vec<String> = out.messages().into_iter().filter(|m| m.contains("shell syntax")).collect();
    out.check("one warning naming the pipe and --shell", 1, warnings.len());
    out.check(
        "it names the pipe and --shell",
        true,
        warnings[0].contains("a pipe (|)") && warnings[0].contains("--shell"),
    );
    let plain = case.run(&["run", "k2", "echo hello"]);
    plain.check("no warning for a plain command", false, plain.stderr.contains("shell syntax"));
}

/// Logs worth reading: `duration_ms` on the command's end and the release; in text format (set by
/// `LOCK_EXEC_LOG_FORMAT`) `command` only on the run's first line and on errors; JSON keeps it on every line;
/// `-v` says once what was resolved.
#[test]
fn logs_carry_durations_and_text_names_the_command_once() {
    let case = Case::new("logs_durations_text_command");
    let out = case.run(&["run", "k", "-v", "--", "sh", "-c", "sleep 0.2"]);
    out.expect_code(0);
    for msg in ["command succeeded", "lock released"] {
        let ms = out.log(msg)["duration_ms"].as_u64();
        out.check(&format!("{msg}: duration_ms of at least 200"), true, ms.is_some_and(|ms| ms >= 200));
        out.check(&format!("{msg}: command in JSON"), json!("sh -c sleep 0.2"), out.log(msg)["command"].clone());
    }
    let resolved = out.log("configuration resolved");
    out.check("resolved table", json!(case.table()), resolved["table"].clone());
    out.check("resolved region", json!("us-east-1"), resolved["region"].clone());
    out.check("resolved credentials", json!("environment"), resolved["credentials"].clone());
    out.check(
        "resolved endpoint",
        true,
        resolved["endpoint"].as_str().is_some_and(|e| e.starts_with("http://127.0.0.1:")),
    );
    let messages = out.messages();
    out.check("resolved once", 1, messages.iter().filter(|m| *m == "configuration resolved").count());

    let out = case.run_with(&["-t", case.table(), "run", "k", "--", "sh", "-c", "exit 3"], |env| {
        env.insert("LOCK_EXEC_LOG_FORMAT", "text".to_owned());
    });
    out.expect_code(3);
    let lines: Vec<&str> = out.stderr.lines().collect();
    let with_command: Vec<&str> = lines
        .iter()
        .filter(|l| l.contains("command=\"sh -c exit 3\""))
        .map(|l| l.split_whitespace().nth(2).unwrap_or(""))
        .collect();
    out.check("text lines naming the command (their first word)", vec!["lock", "command"], with_command);
    out.check("first line", true, lines.first().is_some_and(|l| l.contains(" lock acquired ")));
    out.check("failure", true, lines.iter().any(|l| l.contains(" command failed ") && l.contains(" duration_ms=")));
    out.check("release", true, lines.iter().any(|l| l.contains(" lock released ") && l.contains(" duration_ms=")));
    // the flag wins over the variable
    let out = case.run_with(&["-t", case.table(), "--log-format", "json", "status", "k"], |env| {
        env.insert("LOCK_EXEC_LOG_FORMAT", "text".to_owned());
    });
    out.check("status as JSON", json!("free"), out.stdout_json()["state"].clone());
}

/// `unlock` of a released item says it was free, with no lease end (no `expire=1970-01-01...`) and no holder:
/// the last holder is not holding it (as `status` keeps live and last holder apart).
#[test]
fn unlock_of_a_released_item_logs_no_expire() {
    let case = Case::new("unlock_released_no_expire");
    case.run(&["run", "k", "true"]).expect_code(0);
    let out = case.run(&["unlock", "k"]);
    out.expect_code(0);
    let line = out.log("lock already free; nothing to release");
    out.check("(expire, holder) fields", (None, None), (line.get("expire"), line.get("holder")));
}
