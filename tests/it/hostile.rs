//! Hostile inputs and environments: huge command lines, closed and full standard output, the order of a spawn
//! failure's log lines, keys at the size limit, control characters, thousands of variables, a deleted working
//! directory.

use std::fs::File;
use std::process::{Command, Stdio};

use serde_json::json;

use crate::support::{Case, Reply, Server, now_ns};

/// `lock-exec ARGS...` with the case's environment and working directory, stdin from /dev/null.
fn command(case: &Case, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_lock-exec"));
    command.args(args).env_clear().envs(case.env()).current_dir(&case.dir.path).stdin(Stdio::null());
    command
}

/// `sh -c SCRIPT` with the case's environment and working directory, `$0` the lock-exec binary and `$1` the
/// case's table, to its end.
fn shell(case: &Case, script: &str) -> std::process::Output {
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg(env!("CARGO_BIN_EXE_lock-exec"))
        .arg(case.table())
        .env_clear()
        .envs(case.env())
        .current_dir(&case.dir.path)
        .stdin(Stdio::null())
        .output()
        .expect("run sh")
}

#[test]
fn a_huge_command_line_runs_and_is_stored_and_logged_clipped() {
    let case = Case::new("huge_command");
    // Four 120 KB arguments, as xargs-built command lines can be: the item would exceed DynamoDB's 400 KB.
    let big = "a".repeat(120_000);
    let out = case.run(&["run", "k", "--", "true", &big, &big, &big, &big]);
    out.expect_code(0);
    let item = case.item("k").expect("the item exists after the run");
    let stored = item.command.expect("the command is stored");
    out.check("stored command at most 1 KiB", true, stored.len() <= 1024);
    let marker = stored.rsplit_once("... [").map(|(_, tail)| tail.to_owned()).unwrap_or_default();
    out.check("the marker gives the original length", true, marker.ends_with(" bytes]") && marker.len() > 10);
    let longest = out.stderr.lines().map(str::len).max().unwrap_or(0);
    out.check("every log line stays short", true, longest < 4096);
    out.check("log lines say what ran", true, out.messages().contains(&"command succeeded".to_owned()));
}

/// Runs `command` with its stdout a pipe whose reader is gone before lock-exec writes: its status and stderr.
fn into_closed_pipe(mut command: Command) -> (std::process::ExitStatus, String) {
    let mut child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn lock-exec");
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("wait for lock-exec");
    (out.status, String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn status_into_a_closed_pipe_keeps_its_exit_code_and_does_not_panic() {
    let case = Case::new("status_closed_pipe");
    case.put_go_item("held", now_ns() + 600_000_000_000);
    for (key, code) in [("never", 0), ("held", 3)] {
        let (status, stderr) = into_closed_pipe(command(&case, &["-t", case.table(), "status", key]));
        assert_eq!(status.code(), Some(code), "status {key} into a closed pipe; stderr: {stderr}");
        assert!(!stderr.contains("panicked"), "no panic: {stderr}");
    }
}

#[test]
fn list_into_a_closed_pipe_stops_scanning() {
    let case = Case::new("list_closed_pipe");
    // A table of 50 Scan pages: once the reader is gone, the pages left are not read (`list | head -1` on a
    // large table would otherwise scan it whole, paying for every page, before ending).
    let server = Server::start(|seen| {
        let body: serde_json::Value = serde_json::from_str(&seen.body).unwrap_or_default();
        let page = body["ExclusiveStartKey"]["key"]["S"].as_str().and_then(|k| k.parse::<u32>().ok()).unwrap_or(0) + 1;
        let items = json!([{ "key": { "S": page.to_string() }, "expire": { "N": "0" } }]);
        match page {
            50 => Reply::json(&json!({ "Items": items, "Count": 1 })),
            _ => Reply::json(
                &json!({ "Items": items, "Count": 1, "LastEvaluatedKey": { "key": { "S": page.to_string() } } }),
            ),
        }
    });
    let mut list = command(&case, &["-t", case.table(), "list"]);
    list.env("AWS_ENDPOINT_URL", server.url());
    let (status, stderr) = into_closed_pipe(list);
    assert_eq!(status.code(), Some(0), "list into a closed pipe; stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "no panic: {stderr}");
    let scans = server.stop().len();
    assert_eq!(scans, 1, "Scan pages read after the reader was gone");
}

#[test]
fn printing_commands_into_a_full_disk_exit_74_with_one_line() {
    let case = Case::new("dev_full");
    case.put_go_item("k", now_ns() + 600_000_000_000); // something for status and list to print
    let table = case.table().to_owned();
    let cases: [&[&str]; 5] =
        [&["-t", &table, "status", "k"], &["-t", &table, "list"], &["version"], &["--help"], &["completion", "bash"]];
    for args in cases {
        let full = File::options().write(true).open("/dev/full").expect("open /dev/full");
        let out = command(&case, args).stdout(full).stderr(Stdio::piped()).output().expect("run lock-exec");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(74), "{args:?} into /dev/full; stderr: {stderr}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{args:?}: one line on stderr: {stderr}");
        assert!(lines[0].contains("cannot write to standard output"), "{args:?}: {stderr}");
    }
}

#[test]
fn a_command_that_cannot_start_logs_why_before_the_release() {
    let case = Case::new("spawn_failure_order");
    let out = case.run(&["run", "k", "--", "/nonexistent/command"]);
    out.expect_code(127);
    let messages = out.messages();
    let error = messages.iter().position(|m| m.contains("command not found"));
    let released = messages.iter().position(|m| m == "lock released");
    out.check("the error comes before the release", true, matches!((error, released), (Some(e), Some(r)) if e < r));
}

#[test]
fn keys_are_limited_in_bytes_not_characters() {
    let case = Case::new("key_bytes");
    let fits = "é".repeat(1024); // 2048 bytes
    let out = case.run(&["run", &fits, "--", "true"]);
    out.expect_code(0);
    out.check("the item of the longest key", true, case.item(&fits).is_some());
    let over = format!("{fits}x"); // 2049 bytes, 1025 characters
    let out = case.run_not_started(&["-t", case.table(), "run", &over], case.env());
    out.expect_code(64);
    out.expect_stderr_contains("2048");
}

#[test]
fn control_characters_in_key_and_command_are_escaped_in_text_logs() {
    let case = Case::new("control_chars");
    let out = case.run(&["--log-format", "text", "run", "a\x1b[31mb", "--", "true", "\x1b]0;title\x07"]);
    out.expect_code(0);
    out.check("no raw ESC on stderr", false, out.stderr.contains('\x1b'));
    out.check("ESC shown escaped", true, out.stderr.contains("\\x1b[31m"));
}

/// "Trojan Source": a key with RIGHT-TO-LEFT OVERRIDE would display reordered in a terminal or a log viewer.
#[test]
fn bidirectional_overrides_in_key_and_command_are_escaped_in_logs_and_status() {
    let case = Case::new("bidi_chars");
    let key = "deploy\u{202e}txt.exe";
    for format in ["text", "json"] {
        let out = case.run(&["--log-format", format, "run", key, "--", "true", "\u{2066}x\u{2069}"]);
        out.expect_code(0);
        out.check(&format!("no raw bidi control in {format} logs"), None, out.stderr.find(['\u{202e}', '\u{2066}']));
        out.check(&format!("the override shown escaped in {format} logs"), true, out.stderr.contains("\\u202e"));
    }
    let out = case.run(&["--log-format", "text", "status", key]);
    out.check("status printed the key", true, out.stdout.contains("deploy"));
    out.check("no raw bidi control in status", None, out.stdout.find(['\u{202e}', '\u{2066}']));
}

/// A usage error quotes the bad option before any logger exists (main.rs's `output::error_line`): a bidi control
/// (or ESC) in an unknown long or short option reaches stderr raw, unlike every other usage error, which quotes
/// with `{:?}`.
#[test]
fn bidirectional_characters_in_an_unknown_option_are_escaped() {
    let case = Case::new("bidi_usage");
    for option in ["--deploy\u{202e}txt.exe", "-\u{202e}", "--dele\u{202e}te", "--red\u{1b}[31m"] {
        let out = command(&case, &[option, "status", "k"]).output().expect("run lock-exec");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{option:?}: {stderr}");
        assert!(!stderr.contains(['\u{202e}', '\u{1b}']), "{option:?}: raw control in the usage error: {stderr:?}");
    }
}

#[test]
fn thousands_of_variables_reach_the_command() {
    let case = Case::new("many_vars");
    let marker = case.file("count");
    let script = format!("env | grep -c '^MANY_' > '{marker}'");
    let out = case.run_with(&["-t", case.table(), "run", "k", "--", "sh", "-c", &script], |env| {
        for i in 0..5000 {
            env.insert(Box::leak(format!("MANY_{i}").into_boxed_str()), format!("value-{i}"));
        }
    });
    out.expect_code(0);
    let count = std::fs::read_to_string(&marker).expect("the command counted its variables");
    out.check("variables the command saw", "5000", count.trim());
}

#[test]
fn a_deleted_working_directory_still_runs_the_command() {
    let case = Case::new("deleted_cwd");
    let gone = case.path("gone");
    std::fs::create_dir(&gone).expect("create the directory to delete");
    // The shell enters the directory, deletes it, then becomes lock-exec with that working directory.
    let script = format!(
        "cd '{}' && rmdir '{}' && exec \"$0\" -t \"$1\" run k -- sh -c 'echo ran'",
        gone.display(),
        gone.display()
    );
    let output = shell(&case, &script);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "stderr: {stderr}");
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "ran", "stderr: {stderr}");
}

#[test]
fn closed_standard_streams_are_dev_null_for_lock_exec_and_the_command() {
    let case = Case::new("closed_fds");
    let seen = case.file("seen");
    // fds 0, 1 and 2 all closed by the caller: `status` keeps its exit code, and the command finds /dev/null.
    let script = format!(
        "\"$0\" -t \"$1\" status k <&- >&- 2>&-; echo status=$? > '{seen}'; \
         exec \"$0\" -t \"$1\" run k -- sh -c 'readlink /proc/self/fd/0 /proc/self/fd/2 >> {seen}' <&- >&- 2>&-"
    );
    let output = shell(&case, &script);
    assert_eq!(output.status.code(), Some(0), "run with fds 0-2 closed");
    let seen = std::fs::read_to_string(&seen).expect("the script wrote what it saw");
    assert_eq!(seen, "status=0\n/dev/null\n/dev/null\n");
}

#[test]
fn a_huge_program_name_that_cannot_start_is_logged_clipped() {
    let case = Case::new("huge_program");
    // One 120 KB argument as the program (a mistaken `run k -- "$(cat file)"`): the error line names it clipped.
    let program = "p".repeat(120_000);
    let out = case.run(&["run", "k", "--", &program]);
    // 127 (not found) or 126 (name too long), depending on how the lookup along PATH fails.
    out.check("cannot start", true, matches!(out.code(), Some(126 | 127)));
    let longest = out.stderr.lines().map(str::len).max().unwrap_or(0);
    out.check("every log line stays short", true, longest < 4096);
    out.check(
        "the error names the program clipped",
        true,
        out.messages().iter().any(|m| m.contains("... [120000 bytes]")),
    );
}

/// lock-exec started with SIGCHLD ignored (a parent set SIG_IGN, which survives exec): the kernel would then
/// reap lock-exec's children itself, and the command's exit status could never be collected (exit 75, no
/// `command failed`, although the command ran and exited 3).
#[test]
fn an_inherited_ignored_sigchld_still_gives_the_command_s_exit_code() {
    use std::os::unix::process::CommandExt;
    let case = Case::new("ignored_sigchld");
    let mut command = command(&case, &["-t", case.table(), "run", "k", "--", "sh", "-c", "sleep 0.2; exit 3"]);
    // SAFETY: runs in the forked child before exec; signal is async-signal-safe and takes plain values.
    unsafe {
        command.pre_exec(|| {
            libc::signal(libc::SIGCHLD, libc::SIG_IGN);
            Ok(())
        });
    }
    let output = command.output().expect("run lock-exec");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "the command's exit code; stderr: {stderr}");
    assert!(stderr.contains("\"msg\":\"command failed\""), "`command failed` logged; stderr: {stderr}");
    assert!(stderr.contains("\"msg\":\"lock released\""), "released; stderr: {stderr}");
}

/// An item whose `expire` is missing or not a number may be a live lock of another tool sharing the table
/// (lock-exec v1 and dynamolock write `key` and no `expire`): `run` leaves it alone, as the Go tool does, and
/// `status` and `list` show it held with no lease end (they said free while `run` refused it). `unlock` frees
/// it. A released item (lease end 0) is free even with a `--max-clock-skew` longer than the time since 1970
/// (the acquire's "ended before" bound went negative).
#[test]
fn an_item_without_a_numeric_lease_end_is_held_for_every_subcommand() {
    let case = Case::new("no_numeric_expire");
    let dynamolock = json!({
        "key": { "S": "v1-job" },
        "leaseDuration": { "S": "20s" },
        "recordVersionNumber": { "S": "3f2c" },
        "owner": { "S": "v1-host" },
        "isReleased": { "BOOL": false },
    });
    case.put_item(dynamolock);
    // (An `expire` that is a string reads the same way: see lock::tests. moto answers HTTP 500 to the acquire's
    // number comparison with a string instead of failing the condition as DynamoDB and dynalite do.)
    let key = "v1-job";
    let status = case.run(&["status", key]);
    status.expect_code(3);
    let shown = status.stdout_json();
    status.check("state", &json!("held"), &shown["state"]);
    status.check("expire shown", &serde_json::Value::Null, &shown["expire"]);
    let list = case.run(&["list"]);
    list.expect_code(0);
    let row = list.stdout.lines().find(|line| line.contains(&format!("\"key\":\"{key}\"")));
    list.check("list row state", true, row.is_some_and(|row| row.contains("\"state\":\"held\"")));
    let out = case.run_not_started(&["-t", case.table(), "--locked-exit-code", "9", "run", key], case.env());
    out.expect_code(9);
    let unlocked = case.run(&["unlock", key]);
    unlocked.expect_code(0);
    let line = unlocked.log("lock force-released");
    unlocked.check("holder_stops for another tool's lock", None, line.get("holder_stops"));
    unlocked.check("holder", &json!("unknown (no host recorded)"), &line["holder"]);
    let out = case.run(&["run", key, "--", "sh", "-c", "exit 7"]);
    out.expect_code(7);
    case.put_go_item("released", 0);
    let out = case.run(&["--max-clock-skew", "2562047h", "run", "released", "--", "sh", "-c", "exit 7"]);
    out.expect_code(7);
}
