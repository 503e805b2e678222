//! `credential_process` under hostile or interactive helpers: a descendant that keeps stdout open, a helper that
//! never exits, one that prompts on the terminal (MFA), one that prints a megabyte, one still running when
//! lock-exec exits. Each run must end promptly with a clear outcome, and leave no helper behind. A helper that
//! supplies a role's source credentials runs once per fetch, however often STS must be asked.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::{
    Case, Outcome, Reply, Running, Server, endpoint, eventually, forward, is_dead, rfc3339_from_now, run_in_terminal,
    signal,
};

/// The JSON a well-behaved helper prints.
fn document() -> String {
    document_expiring(Duration::from_secs(3600))
}

/// The JSON of credentials expiring `lifetime` from now.
fn document_expiring(lifetime: Duration) -> String {
    json!({
        "Version": 1,
        "AccessKeyId": "ASIAPROCESSLIMITS",
        "SecretAccessKey": "it-process-limits-SECRET-91",
        "SessionToken": "it-process-limits-session-SECRET-92",
        "Expiration": rfc3339_from_now(lifetime),
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
    let output = run_in_terminal(
        &inner,
        case.env_without_credentials(),
        b"424242\nsecond line\n",
        "the helper or the command stopped reading the terminal",
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "exit {:?}\n--- stdout:\n{stdout}", output.status);
    assert!(stdout.contains("MFA code: "), "the prompt reaches the terminal\n--- stdout:\n{stdout}");
    assert!(
        stdout.contains("command got second line"),
        "the command read the line after the code\n--- stdout:\n{stdout}"
    );
    assert!(!stdout.contains("it-process-limits-SECRET-91"), "{stdout}");
}

/// A helper supplies the source credentials of a role; STS answers 500 twice, then the emulator answers. Only the
/// AssumeRole step is tried again: the helper runs once (an MFA helper would prompt once), and the run succeeds.
#[test]
fn a_failing_sts_step_is_retried_without_running_the_helper_again() {
    let case = Case::new("process_sts_retry");
    let runs = case.file("helper-runs");
    let program =
        case.write_script("bin/credentials.sh", &format!("echo run >> '{runs}'\ncat <<'JSON'\n{}\nJSON\n", document()));
    case.write_aws_file(
        "config",
        &format!(
            "[profile role]\nrole_arn = arn:aws:iam::123456789012:role/lock-exec-it\nsource_profile = base\n\n\
             [profile base]\ncredential_process = {program}\n"
        ),
    );
    let target = endpoint().to_owned();
    let mut answered = 0;
    let sts = Server::start(move |request| {
        answered += 1;
        if answered <= 2 {
            Reply::new(
                500,
                "<ErrorResponse><Error><Type>Receiver</Type><Code>InternalFailure</Code>\
                 <Message>try again</Message></Error></ErrorResponse>",
            )
        } else {
            forward(&target, request)
        }
    });
    let mut env = case.env_without_credentials();
    env.insert("AWS_ENDPOINT_URL_STS", sts.url());
    let out = case
        .spawn_raw(&["-t", case.table(), "--profile", "role", "-v", "run", "k", "--", "sh", "-c", "echo ran"], env)
        .wait(Duration::from_secs(30));
    let statuses: Vec<u16> = sts.stop().iter().map(|e| e.reply.status).collect();
    let helper_runs = std::fs::read_to_string(case.path("helper-runs")).unwrap_or_default().lines().count();
    out.check("STS answers (two failures, then the emulator's)", vec![500, 500, 200], statuses);
    out.check("runs of the credential_process helper", 1, helper_runs);
    out.expect_code(0);
    out.check("the command's stdout", "ran\n", out.stdout.as_str());
    out.check("lock released", true, out.has_log("lock released"));
    out.expect_no_secrets(&["it-process-limits-SECRET-91", "it-process-limits-session-SECRET-92"]);
}

/// The helper's first run prints credentials expiring in 2 minutes (inside the refresh window, so the first
/// renewal, after 1 s of a 3 s lease, starts a refresh); every later run starts a child in its group, writes `HELPER_PID CHILD_PID` to `pids` and
/// waits for 10 minutes. The command waits for `pids`, then either exits (`terminate` false) or is still running
/// when lock-exec gets SIGTERM. Either way, once lock-exec has exited, the helper and its child are gone.
fn helper_still_running_when_lock_exec_exits(name: &str, terminate: bool) {
    let case = Case::new(name);
    let (first, pids) = (case.file("first-run-done"), case.file("pids"));
    helper(
        &case,
        &format!(
            "if [ ! -e '{first}' ]; then\ntouch '{first}'\ncat <<'JSON'\n{}\nJSON\nexit 0\nfi\n\
             sleep 600 &\necho \"$$ $!\" > '{pids}.tmp'\nmv '{pids}.tmp' '{pids}'\nwait\n",
            document_expiring(Duration::from_secs(120))
        ),
    );
    let command = if terminate {
        "sleep 60".to_owned()
    } else {
        format!("i=0; while [ ! -e '{pids}' ] && [ $i -lt 400 ]; do sleep 0.05; i=$((i+1)); done; echo ran")
    };
    let mut running = case.spawn_raw(
        &["-t", case.table(), "--profile", "proc", "-v", "run", "k", "-e", "3s", "--", "sh", "-c", &command],
        case.env_without_credentials(),
    );
    let helper_pids = written_helper_pids(&case, &mut running);
    if terminate {
        signal(running.pid(), libc::SIGTERM);
    }
    let out = running.wait(Duration::from_secs(20));
    let left = helpers_left(&helper_pids);
    out.check("helper processes left 3 s after lock-exec exited", Vec::<u32>::new(), left);
    if terminate {
        out.expect_death_by(libc::SIGTERM);
    } else {
        out.expect_code(0);
        out.check("the command's stdout", "ran\n", out.stdout.as_str());
    }
    out.check("lock released", true, out.has_log("lock released"));
    out.expect_no_secrets(&["it-process-limits-SECRET-91", "it-process-limits-session-SECRET-92"]);
}

/// The two pids a slow helper wrote to the case's `pids` file (its shell and its `sleep`), once written.
fn written_helper_pids(case: &Case, running: &mut Running) -> Vec<u32> {
    let line = running.wait_for_line(&case.path("pids"), Duration::from_secs(20));
    line.split_whitespace().map(|pid| pid.parse().expect("the helper wrote two pids")).collect()
}

/// The helper processes still alive 3 s after lock-exec exited, SIGKILLed so a failed test leaves none behind.
fn helpers_left(helper_pids: &[u32]) -> Vec<u32> {
    eventually(Duration::from_secs(3), || helper_pids.iter().all(|&pid| is_dead(pid)));
    let left: Vec<u32> = helper_pids.iter().copied().filter(|&pid| !is_dead(pid)).collect();
    for &pid in &left {
        signal(pid, libc::SIGKILL);
    }
    left
}

#[test]
fn a_helper_still_refreshing_when_the_command_ends_is_killed() {
    helper_still_running_when_lock_exec_exits("process_abandoned_exit", false);
}

#[test]
fn a_helper_still_refreshing_when_lock_exec_gets_sigterm_is_killed() {
    helper_still_running_when_lock_exec_exits("process_abandoned_sigterm", true);
}

/// `status` and `unlock` fetch credentials on the main thread: a signal that ends lock-exec while the helper
/// runs (`timeout 10 lock-exec status k`, a Ctrl-C from another terminal) must take the helper and its group
/// with it, and lock-exec still dies of that signal.
#[test]
fn a_helper_running_when_status_or_unlock_gets_a_signal_is_killed() {
    for (subcommand, sig) in [("status", libc::SIGTERM), ("unlock", libc::SIGINT), ("status", libc::SIGHUP)] {
        let case = Case::new(&format!("process_signal_{subcommand}_{sig}"));
        let pids = case.file("pids");
        helper(
            &case,
            &format!(
                "trap '' TERM INT HUP\nsleep 600 &\necho \"$$ $!\" > '{pids}.tmp'\nmv '{pids}.tmp' '{pids}'\nwait\n"
            ),
        );
        let mut running =
            case.spawn_raw(&["-t", case.table(), "--profile", "proc", subcommand, "k"], case.env_without_credentials());
        let helper_pids = written_helper_pids(&case, &mut running);
        signal(running.pid(), sig);
        let out = running.wait(Duration::from_secs(10));
        let left = helpers_left(&helper_pids);
        out.check(&format!("{subcommand}: helper processes left 3 s after lock-exec exited"), Vec::<u32>::new(), left);
        out.expect_death_by(sig);
    }
}

/// `status` started with SIGHUP ignored (`nohup`) leaves it ignored while a slow helper runs, as `run` does; a
/// signal not ignored (SIGTERM) still ends it and takes the helper with it.
#[test]
fn status_started_with_sighup_ignored_survives_a_hangup() {
    let case = Case::new("process_signal_ignored_hup");
    let pids = case.file("pids");
    helper(&case, &format!("sleep 600 &\necho \"$$ $!\" > '{pids}.tmp'\nmv '{pids}.tmp' '{pids}'\nwait\n"));
    let ignoring = "trap '' HUP; exec \"$0\" \"$@\"";
    let args =
        ["-c", ignoring, env!("CARGO_BIN_EXE_lock-exec"), "-t", case.table(), "--profile", "proc", "status", "k"];
    let mut running = case.spawn_program(std::path::Path::new("sh"), &args, case.env_without_credentials());
    let helper_pids = written_helper_pids(&case, &mut running);
    signal(running.pid(), libc::SIGHUP);
    std::thread::sleep(Duration::from_millis(300));
    let survived = !is_dead(running.pid()) && helper_pids.iter().all(|&pid| !is_dead(pid));
    signal(running.pid(), libc::SIGTERM);
    let out = running.wait(Duration::from_secs(10));
    let left = helpers_left(&helper_pids);
    out.check("status and its helper survived the ignored SIGHUP", true, survived);
    out.check("helper processes left 3 s after lock-exec exited", Vec::<u32>::new(), left);
    out.expect_death_by(libc::SIGTERM);
}

/// lock-exec's threads block the signals it catches until its signal thread handles them; neither the command
/// nor a helper inherits that mask (a blocked SIGTERM would make either deaf to it). Both are awk and grep, not
/// a shell: dash and bash clear their mask when they start.
#[test]
fn neither_the_helper_nor_the_command_inherits_a_blocked_signal_mask() {
    let case = Case::new("process_signal_mask");
    let document_file = case.file("document.json");
    std::fs::write(&document_file, document()).expect("write the helper's answer");
    let helper_mask = case.file("helper.mask");
    let awk = case.file("helper.awk");
    std::fs::write(
        &awk,
        format!(
            "BEGIN {{ while ((getline l < \"/proc/self/status\") > 0) if (l ~ /^SigBlk/) print l > \"{helper_mask}\"; \
             while ((getline l < \"{document_file}\") > 0) print l }}\n"
        ),
    )
    .expect("write the awk helper");
    case.write_aws_file("config", &format!("[profile proc]\ncredential_process = awk -f {awk}\n"));
    let env = case.env_without_credentials();
    let args = ["-t", case.table(), "--profile", "proc", "run", "k", "--", "grep", "SigBlk", "/proc/self/status"];
    let out = case.spawn_raw(&args, env).wait(Duration::from_secs(30));
    out.expect_code(0);
    let helper_line =
        std::fs::read_to_string(&helper_mask).unwrap_or_else(|e| panic!("the helper wrote its mask: {e}"));
    for (who, line) in [("helper", helper_line.trim()), ("command", out.stdout.trim())] {
        out.check(&format!("the {who}'s blocked signals"), "SigBlk:\t0000000000000000", line);
    }
}

/// lock-exec's threads, by name, while its command runs: `run k` with `--profile proc` (a `credential_process`
/// helper printing `document`) or, without a document, the case's static keys.
fn threads_while_running(case: &Case, document: Option<&str>) -> Vec<String> {
    let marker = case.file("started");
    let command = format!("echo started > '{marker}'; sleep 1");
    let (profile, env): (&[&str], _) = match document {
        Some(document) => {
            helper(case, &format!("cat <<'JSON'\n{document}\nJSON\n"));
            (&["--profile", "proc"], case.env_without_credentials())
        }
        None => (&[], case.env()),
    };
    let mut args = vec!["-t", case.table()];
    args.extend_from_slice(profile);
    args.extend_from_slice(&["run", "k", "--", "sh", "-c", &command]);
    let mut running = case.spawn_raw(&args, env);
    running.wait_for_line(&case.path("started"), Duration::from_secs(20));
    let tasks = std::fs::read_dir(format!("/proc/{}/task", running.pid())).expect("lock-exec's /proc/PID/task");
    let mut names: Vec<String> = tasks
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .map(|name| name.trim().to_owned())
        .collect();
    names.sort();
    running.wait(Duration::from_secs(20)).expect_code(0);
    names
}

/// No thread is created before it is needed: static keys never expire, so no credential refresher exists; a
/// helper's credentials with an Expiration get one (before the command starts).
#[test]
fn a_credential_refresher_thread_exists_only_for_credentials_that_expire() {
    let static_keys = threads_while_running(&Case::new("threads_static_keys"), None);
    assert_eq!(static_keys, ["dynamodb", "lock-exec", "signals", "supervisor"], "threads with static keys");
    let expiring = threads_while_running(&Case::new("threads_expiring"), Some(&document()));
    assert_eq!(expiring, ["credentials", "dynamodb", "lock-exec", "signals", "supervisor"], "with expiring ones");
}
