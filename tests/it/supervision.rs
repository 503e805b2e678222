//! Supervision of the command's processes, as real processes: background jobs and setsid escapees do not
//! outlive the run, a lost lock or a forwarded signal ends the whole tree, `--wait-descendants` keeps the lock,
//! thread limits, job control under a pseudo-terminal, signals during the acquire, forwarded signals, a death by
//! signal a calling shell can see, PID 1, a prompt exit past a held renewal, and no cleanup after a rejection.
//!
//! Every process a test starts is killed by a guard if the test fails; every wait is bounded; network traffic
//! goes to 127.0.0.1 only.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::{
    Case, Outcome, Reply, Server, client, endpoint, eventually, forward, is_dead, read_http_request, signal,
};

const WAIT: Duration = Duration::from_secs(20);
const BINARY: &str = env!("CARGO_BIN_EXE_lock-exec");

/// SIGKILLs the recorded pids when dropped: background processes a failing test would leave behind.
#[derive(Default)]
struct Leftovers(Mutex<Vec<u32>>);

impl Leftovers {
    fn add(&self, pid: u32) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(pid);
    }
}

impl Drop for Leftovers {
    fn drop(&mut self) {
        for &pid in self.0.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            if pid > 1 && !is_dead(pid) {
                // SAFETY: kill(2) takes two integers and touches no memory of ours.
                unsafe {
                    libc::kill(pid as libc::pid_t, libc::SIGKILL);
                }
            }
        }
    }
}

/// Reads the pid a script wrote to `path` (`echo $! > path`) before lock-exec exited (2 s at most for the line).
fn read_pid(path: &Path) -> u32 {
    let mut text = String::new();
    let written = eventually(Duration::from_secs(2), || {
        text = std::fs::read_to_string(path).unwrap_or_default();
        text.ends_with('\n')
    });
    assert!(written, "{} was not written", path.display());
    text.trim().parse().unwrap_or_else(|_| panic!("{} holds {text:?}, not a pid", path.display()))
}

/// The current owner of `k`, read through the library.
fn owner_of(case: &Case, key: &str) -> Option<String> {
    case.item(key).and_then(|item| item.owner)
}

/// A process other than lock-exec itself (a tool wrapping it), stdout and stderr going to files in the case
/// folder, stdin from /dev/null, in its own process group. Dropping it SIGKILLs the group if it was not waited for.
struct Wrapped {
    child: Option<Child>,
    args: Vec<String>,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Wrapped {
    /// Starts `program args...` with exactly `env` in the case folder. A missing program fails the test naming
    /// `what` (e.g. "unshare from util-linux").
    fn start(case: &Case, name: &str, program: &str, args: &[&str], env: &BTreeMap<&'static str, String>) -> Wrapped {
        let stdout = case.path(&format!("{name}.stdout"));
        let stderr = case.path(&format!("{name}.stderr"));
        let child = Command::new(program)
            .args(args)
            .env_clear()
            .envs(env)
            .current_dir(&case.dir.path)
            .stdin(Stdio::null())
            .stdout(File::create(&stdout).expect("create the stdout file"))
            .stderr(File::create(&stderr).expect("create the stderr file"))
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {program:?} (this test needs it installed): {e}"));
        let mut all = vec![program.to_owned()];
        all.extend(args.iter().map(|a| (*a).to_owned()));
        Wrapped { child: Some(child), args: all, stdout, stderr }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("not waited yet").id()
    }

    fn stderr_so_far(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Waits for the exit, at most `limit` (then SIGKILLs the group and fails the test).
    fn wait(mut self, limit: Duration) -> Outcome {
        let mut child = self.child.take().expect("waited once");
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                break status;
            }
            if Instant::now() >= deadline {
                kill_group(child.id());
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{:?} still running after {limit:?}; killed it\n--- stderr:\n{}",
                    self.args,
                    self.stderr_so_far()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        Outcome {
            args: std::mem::take(&mut self.args),
            status,
            stdout: std::fs::read_to_string(&self.stdout).unwrap_or_default(),
            stderr: std::fs::read_to_string(&self.stderr).unwrap_or_default(),
        }
    }
}

impl Drop for Wrapped {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            kill_group(child.id());
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// SIGKILLs process group `pgid` (errors ignored).
fn kill_group(pgid: u32) {
    if pgid > 1 {
        // SAFETY: kill(2) takes two integers and touches no memory of ours.
        unsafe {
            libc::kill(-(pgid as libc::pid_t), libc::SIGKILL);
        }
    }
}

/// `-t TABLE run k FLAGS... -- sh -c SCRIPT`
fn run_args<'a>(case: &'a Case, flags: &[&'a str], script: &'a str) -> Vec<&'a str> {
    let mut args = vec!["-t", case.table(), "run", "k"];
    args.extend_from_slice(flags);
    args.extend(["--", "sh", "-c", script]);
    args
}

// ---------------------------------------------------------------------------------------------------------------
// Descendants

#[track_caller]
fn expect_gone_after_exit(out: &Outcome, what: &str, pid: u32) {
    if !is_dead(pid) {
        out.fail(&format!("{what} {pid} still runs after lock-exec exited"), &"dead", &"running");
    }
}

#[test]
fn a_background_job_does_not_outlive_the_run() {
    let case = Case::new("sup_background_job");
    let leftovers = Leftovers::default();
    let script = format!("sleep 60 >/dev/null 2>&1 & echo $! > {}", case.file("bg.pid"));
    let out = case.spawn_raw(&run_args(&case, &[], &script), case.env()).wait(WAIT);
    let pid = read_pid(&case.path("bg.pid"));
    leftovers.add(pid);
    expect_gone_after_exit(&out, "the background job", pid);
    out.expect_code(0);
    out.check("released", true, out.has_log("lock released"));
    out.check("owner after the run", None, owner_of(&case, "k"));
}

#[test]
fn a_setsid_escapee_does_not_outlive_the_run() {
    let case = Case::new("sup_setsid_escapee");
    let leftovers = Leftovers::default();
    // The background child is not a group leader, so setsid execs sleep in place: $! is the sleep's pid. The short
    // sleep lets setsid run before the shell exits.
    let script = format!("setsid sleep 60 >/dev/null 2>&1 & echo $! > {}; sleep 0.3", case.file("bg.pid"));
    let out = case.spawn_raw(&run_args(&case, &[], &script), case.env()).wait(WAIT);
    let pid = read_pid(&case.path("bg.pid"));
    leftovers.add(pid);
    expect_gone_after_exit(&out, "the setsid escapee", pid);
    out.expect_code(0);
    out.check("released", true, out.has_log("lock released"));
}

/// A grandchild that ignores SIGTERM, in the background of a shell that waits for it.
fn stubborn_grandchild_script(case: &Case) -> String {
    format!("(trap '' TERM; exec sleep 60) >/dev/null 2>&1 & echo $! > {}; wait", case.file("grandchild.pid"))
}

#[test]
fn a_lost_lock_kills_a_grandchild_that_ignores_sigterm() {
    let case = Case::new("sup_lost_lock_grandchild");
    let leftovers = Leftovers::default();
    let script = stubborn_grandchild_script(&case);
    let mut running = case.spawn_raw(&run_args(&case, &["-e", "3s", "--kill-after", "1s"], &script), case.env());
    let grandchild = running.wait_for_pid(&case.path("grandchild.pid"), WAIT);
    leftovers.add(grandchild);
    lock_exec::lock::force_unlock(
        &client(),
        case.table(),
        "k",
        lock_exec::Env::real().now(),
        lock_exec::cli::DEFAULT_RETAIN,
    )
    .unwrap_or_else(|e| panic!("force unlock: {}", lock_exec::error_chain(&e)));
    let out = running.wait(WAIT);
    expect_gone_after_exit(&out, "the grandchild ignoring SIGTERM", grandchild);
    out.expect_code(75);
    out.check("lock lost logged", true, out.has_log("lock lost"));
}

#[test]
fn a_forwarded_sigterm_kills_a_grandchild_that_ignores_it_and_lock_exec_dies_of_it() {
    let case = Case::new("sup_sigterm_grandchild");
    let leftovers = Leftovers::default();
    let script = stubborn_grandchild_script(&case);
    let mut running = case.spawn_raw(&run_args(&case, &["--kill-after", "1s"], &script), case.env());
    let grandchild = running.wait_for_pid(&case.path("grandchild.pid"), WAIT);
    leftovers.add(grandchild);
    signal(running.pid(), libc::SIGTERM);
    let out = running.wait(WAIT);
    expect_gone_after_exit(&out, "the grandchild ignoring SIGTERM", grandchild);
    out.check("lock-exec died of the command's signal", Some(libc::SIGTERM), out.status.signal());
    out.check("released", true, out.has_log("lock released"));
}

#[test]
fn wait_descendants_keeps_the_lock_until_the_last_descendant_exits() {
    let case = Case::new("sup_wait_descendants");
    let script = format!("sleep 2 >/dev/null 2>&1 & echo $! > {}", case.file("bg.pid"));
    let started = Instant::now();
    let mut running = case.spawn_raw(&run_args(&case, &["--wait-descendants"], &script), case.env());
    let background = running.wait_for_pid(&case.path("bg.pid"), WAIT);
    // The shell has exited (its last action wrote the pid); the background sleep still runs.
    std::thread::sleep(Duration::from_millis(500));
    let held_while_running = (!is_dead(background), owner_of(&case, "k").is_some());
    let status = case.run(&["status", "k"]);
    let out = running.wait(WAIT);
    let elapsed = started.elapsed();
    out.check("(background job running, lock owned) 0.5 s after the shell exited", (true, true), held_while_running);
    out.check("`status k` while the background job runs", Some(3), status.code());
    out.expect_code(0);
    out.check("lock-exec exited only after the 2 s background job", true, elapsed >= Duration::from_millis(1900));
    out.check("the background job ended by itself", true, is_dead(background));
    out.check("owner after the run", None, owner_of(&case, "k"));
}

// ---------------------------------------------------------------------------------------------------------------
// Thread limits (RLIMIT_NPROC as an unprivileged user)

/// Tests that run as uid 65534 share its process count: one at a time.
static NOBODY: Mutex<()> = Mutex::new(());

/// A case for a test that runs as uid 65534: the process-count lock (held while the guard lives), the case and
/// its [`Unprivileged`] setup.
fn as_nobody(name: &str) -> (MutexGuard<'static, ()>, Case, Unprivileged) {
    let one_at_a_time = NOBODY.lock().unwrap_or_else(|p| p.into_inner());
    let case = Case::new(name);
    let unprivileged = Unprivileged::new(&case);
    (one_at_a_time, case, unprivileged)
}

/// A copy of the binary that uid 65534 can execute, a folder it can write the marker to, and the environment.
struct Unprivileged {
    binary: String,
    marker: String,
}

impl Unprivileged {
    fn new(case: &Case) -> Unprivileged {
        let open = |path: &Path, mode: u32| {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
                .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", path.display()))
        };
        open(&case.dir.path, 0o755);
        open(&case.home(), 0o755);
        std::fs::create_dir_all(case.path("bin")).expect("create bin/");
        open(&case.path("bin"), 0o755);
        std::fs::copy(BINARY, case.path("bin/lock-exec")).expect("copy the binary");
        open(&case.path("bin/lock-exec"), 0o755);
        std::fs::create_dir_all(case.path("out")).expect("create out/");
        open(&case.path("out"), 0o777);
        Unprivileged { binary: case.file("bin/lock-exec"), marker: case.file("out/marker") }
    }

    /// `setpriv --reuid=65534 ... prlimit --nproc=N lock-exec ARGS...`, to its end.
    fn run(&self, case: &Case, name: &str, nproc: u32, args: &[&str]) -> Outcome {
        self.run_env(case, name, nproc, args, &case.env())
    }

    /// [`Unprivileged::run`] with `env`.
    fn run_env(
        &self,
        case: &Case,
        name: &str,
        nproc: u32,
        args: &[&str],
        env: &BTreeMap<&'static str, String>,
    ) -> Outcome {
        let _ = std::fs::remove_file(&self.marker);
        let limit = format!("--nproc={nproc}");
        let mut full = vec!["--reuid=65534", "--regid=65534", "--clear-groups", "prlimit", &limit, &self.binary];
        full.extend_from_slice(args);
        Wrapped::start(case, name, "setpriv", &full, env).wait(WAIT)
    }

    fn ran(&self) -> bool {
        Path::new(&self.marker).exists()
    }
}

/// `run k -- touch MARKER` as uid 65534 under `--nproc=N` for N = 1..=12: (N, outcome, whether the command ran)
/// for each, and a report of them all for failure messages.
fn nproc_sweep(case: &Case, unprivileged: &Unprivileged) -> (Vec<(u32, Outcome, bool)>, String) {
    nproc_sweep_env(case, unprivileged, &case.env())
}

/// [`nproc_sweep`] with `env`.
fn nproc_sweep_env(
    case: &Case,
    unprivileged: &Unprivileged,
    env: &BTreeMap<&'static str, String>,
) -> (Vec<(u32, Outcome, bool)>, String) {
    let sweep: Vec<(u32, Outcome, bool)> = (1..=12)
        .map(|n| {
            let args = ["-t", case.table(), "run", "k", "--", "touch", &unprivileged.marker];
            let out = unprivileged.run_env(case, &format!("nproc-{n}"), n, &args, env);
            (n, out, unprivileged.ran())
        })
        .collect();
    let report = sweep_report(&sweep);
    (sweep, report)
}

/// Every N of `sweep` under which the command did not run ended with exit 71.
fn assert_every_stop_exits_71(sweep: &[(u32, Outcome, bool)], report: &str) {
    for (n, out, ran) in sweep {
        assert!(*ran || out.code() == Some(71), "N={n}: nothing ran, yet the exit is not 71\n{report}");
    }
}

fn sweep_report(sweep: &[(u32, Outcome, bool)]) -> String {
    sweep
        .iter()
        .map(|(n, out, ran)| format!("--- N={n}: {} ran={ran}\n{}", out.status, out.stderr))
        .collect::<Vec<_>>()
        .join("")
}

#[test]
fn a_thread_that_cannot_be_created_exits_71_and_the_command_never_runs_without_the_lock() {
    let (_one_at_a_time, case, unprivileged) = as_nobody("sup_nproc");
    let (sweep, report) = nproc_sweep(&case, &unprivileged);
    assert!(
        sweep.iter().any(|(_, out, _)| out.code() == Some(71)),
        "no N gave exit 71 (a thread could not be created)\n{report}"
    );
    assert!(sweep.iter().any(|(_, _, ran)| *ran), "the command never ran even with N=12\n{report}");
    for (n, out, ran) in &sweep {
        if *ran {
            assert!(
                out.code() == Some(0) && out.has_log("lock acquired"),
                "N={n}: the command ran but lock-exec did not exit 0 with `lock acquired`\n{report}"
            );
        }
        if out.code() == Some(71) {
            // A thread: one line, before anything was sent. The command's own process (fork failed after the
            // acquire): the error line between `lock acquired` and `lock released`.
            let errors: Vec<String> =
                out.logs().iter().filter(|l| l["level"] == "error").map(|l| l["msg"].to_string()).collect();
            let clear = errors.len() == 1
                && (errors[0].contains("cannot create the thread") || errors[0].contains("cannot start"));
            let thread_only = !out.has_log("lock acquired") && out.stderr.lines().count() == 1;
            let released = out.has_log("lock released");
            assert!(
                !ran && clear && (thread_only || released),
                "N={n}: exit 71 must come with one clear error line, no command run, and no lock left\n{report}"
            );
        }
    }
}

/// The promise behind exit 71: every run that could not create a thread it needs, and so ran nothing, says so
/// with 71 and one clear line. A thread the HTTP client creates for a new connection (a DNS resolution with a
/// timeout) must not turn into a panic and a "lost lock" (75).
#[test]
fn every_thread_limit_that_stops_the_run_before_the_command_exits_71_without_a_panic() {
    let (_one_at_a_time, case, unprivileged) = as_nobody("sup_nproc_strict");
    let (sweep, report) = nproc_sweep(&case, &unprivileged);
    for (n, out, _) in &sweep {
        assert!(!out.stderr.contains("panicked"), "N={n}: a thread panicked\n{report}");
    }
    assert_every_stop_exits_71(&sweep, &report);
}

/// A `credential_process` helper that cannot be started under the same limits is an operating-system resource,
/// as a thread or the command is: exit 71 and one clear line, never 78 (a configuration error).
#[test]
fn a_credential_helper_that_cannot_be_started_exits_71() {
    let (_one_at_a_time, case, unprivileged) = as_nobody("sup_nproc_helper");
    let document = serde_json::json!({
        "Version": 1,
        "AccessKeyId": "AKIDNPROCHELPER",
        "SecretAccessKey": "it-nproc-helper-secret",
    });
    let helper = case.write_script("bin/credentials.sh", &format!("echo '{document}'\n"));
    case.write_aws_file("config", &format!("[profile proc]\ncredential_process = {helper}\n"));
    let mut env = case.env_without_credentials();
    env.insert("AWS_PROFILE", "proc".to_owned());
    let (sweep, report) = nproc_sweep_env(&case, &unprivileged, &env);
    assert!(sweep.iter().any(|(_, _, ran)| *ran), "the command never ran even with N=12\n{report}");
    assert!(
        sweep.iter().any(|(_, out, _)| out.stderr.contains("credential_process")),
        "no N stopped the helper itself\n{report}"
    );
    assert_every_stop_exits_71(&sweep, &report);
}

/// `status` and `unlock` under a process limit: like `run`, a thread or helper that cannot be created is exit 71
/// with one line, never a Rust panic (exit 101), which their signal watcher (`kill_helpers_on_signals` in main.rs)
/// gave when it was created with `std::thread::spawn` (it panics on EAGAIN).
#[test]
fn status_and_unlock_under_a_process_limit_exit_71_without_a_panic() {
    let (_one_at_a_time, case, unprivileged) = as_nobody("sup_nproc_status");
    for subcommand in ["status", "unlock"] {
        for n in 1..=3 {
            let out =
                unprivileged.run(&case, &format!("nproc-{subcommand}-{n}"), n, &["-t", case.table(), subcommand, "k"]);
            assert!(
                !out.stderr.contains("panicked") && out.code() != Some(101),
                "{subcommand} N={n}: {} {}",
                out.status,
                out.stderr
            );
            assert!(matches!(out.code(), Some(0 | 71)), "{subcommand} N={n}: {} {}", out.status, out.stderr);
        }
    }
}

/// With exactly enough room for lock-exec's threads and the command, renewals must go on: no thread may be
/// created once the command runs.
#[test]
fn renewals_create_no_thread_once_the_command_runs() {
    let (_one_at_a_time, case, unprivileged) = as_nobody("sup_nproc_renewals");
    // The smallest limit under which the command (one process, no shell) runs.
    let (sweep, report) = nproc_sweep(&case, &unprivileged);
    let Some(smallest) = sweep.iter().find(|(_, _, ran)| *ran).map(|(n, _, _)| *n) else {
        panic!("the command never ran even with N=12\n{report}");
    };
    let args = ["-t", case.table(), "-v", "run", "k", "-e", "3s", "--", "sleep", "3"];
    let out = unprivileged.run(&case, "renewals", smallest, &args);
    out.check("a thread panicked", false, out.stderr.contains("panicked"));
    out.check("lock lost logged", false, out.has_log("lock lost"));
    out.expect_code(0);
    let renewed = out.messages().iter().filter(|m| *m == "lock renewed").count();
    out.check(&format!("renewals under --nproc={smallest} (at least 2)"), true, renewed >= 2);
}

/// The supervisor is created while the acquire is in flight. When it cannot be, the run is over whatever the
/// acquire answers: a held key must not turn the thread failure into `did not run command. key is locked` with
/// exit 0, nor a `--wait` wait for the lock (taking it from a waiter that could run, only to release it) before
/// the exit 71.
#[test]
fn a_thread_that_cannot_be_created_exits_71_at_once_even_when_the_key_is_held() {
    let (_one_at_a_time, case, unprivileged) = as_nobody("sup_nproc_held");
    case.put_go_item("k", crate::support::now_ns() + 600_000_000_000);
    let args = ["-t", case.table(), "run", "--wait", "2s", "k", "--", "touch", &unprivileged.marker];
    let sweep: Vec<(u32, Outcome, bool, Duration)> = (1..=8)
        .map(|n| {
            let started = Instant::now();
            let out = unprivileged.run(&case, &format!("nproc-held-{n}"), n, &args);
            (n, out, unprivileged.ran(), started.elapsed())
        })
        .collect();
    let report: String = sweep
        .iter()
        .map(|(n, out, ran, took)| format!("--- N={n}: {} ran={ran} took={took:?}\n{}", out.status, out.stderr))
        .collect();
    assert!(
        sweep.iter().any(|(_, out, _, _)| out.code() == Some(71) && out.stderr.contains("thread for supervision")),
        "no N gave exit 71 for the supervisor thread\n{report}"
    );
    for (n, out, ran, took) in &sweep {
        assert!(!ran, "N={n}: the command ran while the key was held\n{report}");
        if out.code() == Some(71) {
            let quiet = !out.has_log("waiting for lock") && !out.has_log("did not run command. key is locked");
            assert!(
                quiet && *took < Duration::from_millis(1500),
                "N={n}: exit 71 must come at once, without waiting for the held key\n{report}"
            );
        } else {
            assert!(
                out.code() == Some(0) && out.has_log("did not run command. key is locked"),
                "N={n}: neither 71 nor a locked exit\n{report}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Job control under a pseudo-terminal

/// An interactive bash in a pseudo-terminal made by script(1); the test types into it and reads the screen.
struct Terminal {
    child: Child,
    input: std::process::ChildStdin,
    screen: Arc<Mutex<String>>,
    reader: Option<JoinHandle<()>>,
}

impl Terminal {
    fn start(case: &Case) -> Terminal {
        let mut env = case.env();
        env.insert("TERM", "dumb".into());
        env.insert("PS1", "$ ".into());
        env.insert("SHELL", "/bin/bash".into());
        let mut child = Command::new("script")
            .args(["-qfec", "bash --norc --noprofile -i", "/dev/null"])
            .env_clear()
            .envs(&env)
            .current_dir(&case.dir.path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start script(1) from util-linux (this test needs it): {e}"));
        let input = child.stdin.take().expect("stdin is piped");
        let mut output = child.stdout.take().expect("stdout is piped");
        let screen = Arc::new(Mutex::new(String::new()));
        let reader = {
            let screen = Arc::clone(&screen);
            std::thread::spawn(move || {
                let mut buffer = [0u8; 4096];
                while let Ok(n) = output.read(&mut buffer) {
                    if n == 0 {
                        break;
                    }
                    screen.lock().unwrap_or_else(|p| p.into_inner()).push_str(&String::from_utf8_lossy(&buffer[..n]));
                }
            })
        };
        Terminal { child, input, screen, reader: Some(reader) }
    }

    fn screen(&self) -> String {
        self.screen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn type_text(&mut self, text: &str) {
        self.input.write_all(text.as_bytes()).expect("type into the terminal");
        self.input.flush().expect("flush the terminal input");
    }

    /// Waits until the screen contains `text` (at most `limit`); fails the test showing the screen.
    #[track_caller]
    fn expect_screen(&self, text: &str, limit: Duration, why: &str) {
        if !eventually(limit, || self.screen().contains(text)) {
            panic!("{why}: {text:?} not on the terminal within {limit:?}\n--- screen:\n{}", self.screen());
        }
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        kill_group(self.child.id());
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

/// Types `lock-exec run k -- sh -c COUNTER-LOOP REDIRECTION` into an interactive shell, Ctrl-Z, checks the job is
/// stopped (the shell says so, the counter stands still, the lock is kept), `fg`, and checks it finishes with 0
/// and releases.
fn ctrl_z_and_fg(test: &str, redirection: &str) {
    let case = Case::new(test);
    let leftovers = Leftovers::default();
    let counter = case.file("COUNTER");
    let read_counter = || std::fs::read_to_string(&counter).ok().and_then(|t| t.trim().parse::<u32>().ok());
    let mut terminal = Terminal::start(&case);
    terminal.type_text("echo READY\n");
    terminal.expect_screen("READY\r\n", WAIT, "the interactive shell did not start");
    terminal.type_text(&format!(
        "{BINARY} -t {} -q run k -- sh -c 'i=0; while [ $i -lt 40 ]; do echo $i > {counter}; i=$((i+1)); sleep 0.1; done' \
         {redirection}\n",
        case.table()
    ));
    if !eventually(WAIT, || read_counter().is_some_and(|c| c >= 3)) {
        panic!("the command did not start counting\n--- screen:\n{}", terminal.screen());
    }
    if let Some(pid) = case.item("k").and_then(|item| item.pid) {
        leftovers.add(pid);
    }
    terminal.type_text("\x1a");
    terminal.expect_screen("Stopped", Duration::from_secs(5), "Ctrl-Z did not stop the job as the shell sees it");
    std::thread::sleep(Duration::from_millis(300));
    let at_stop = read_counter();
    std::thread::sleep(Duration::from_millis(800));
    let later = read_counter();
    assert_eq!(at_stop, later, "the counter moved while the job was stopped\n--- screen:\n{}", terminal.screen());
    assert!(at_stop.is_some_and(|c| c < 39), "the command finished before Ctrl-Z took effect: {at_stop:?}");
    assert!(owner_of(&case, "k").is_some(), "the lock was released while the job was stopped");
    terminal.type_text("fg\n");
    if !eventually(WAIT, || read_counter() == Some(39)) {
        panic!("after fg the counter stopped at {:?}\n--- screen:\n{}", read_counter(), terminal.screen());
    }
    terminal.type_text("echo RC=${PIPESTATUS[0]}\n");
    terminal.expect_screen("RC=0", WAIT, "lock-exec did not exit 0 after fg");
    assert_eq!(owner_of(&case, "k"), None, "the lock was not released\n--- screen:\n{}", terminal.screen());
    terminal.type_text("exit\n");
}

/// The processes whose command line holds `text` (from `/proc/*/cmdline`).
fn processes_with(text: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|line| String::from_utf8_lossy(&line).replace('\0', " ").contains(text))
        })
        .collect()
}

/// A Ctrl-Z that comes after the command's process made its group the terminal's foreground group but before its
/// exec reaches only that process (lock-exec no longer has the terminal); it must not stop it before the exec,
/// with lock-exec suspended in the clone. strace delays the child's first ioctl, its TIOCSPGRP, by 1.5 s after it
/// took effect, and the test sends SIGTSTP to the child then, as the terminal would.
#[test]
fn a_ctrl_z_after_the_command_took_the_terminal_but_before_its_exec_does_not_hang_the_spawn() {
    let case = Case::new("sup_tstp_after_terminal");
    let marker = case.file("ran");
    let mut terminal = Terminal::start(&case);
    terminal.type_text("echo READY\n");
    terminal.expect_screen("READY\r\n", WAIT, "the interactive shell did not start");
    terminal.type_text(&format!(
        "strace -f -qq -o /dev/null -e trace=ioctl -e inject=ioctl:delay_exit=1500000:when=1 \
         {BINARY} -t {} -q run k -- sh -c 'echo ran > {marker}'; echo RC=$?\n",
        case.table()
    ));
    let leftovers = Leftovers::default();
    let lock_exec =
        || processes_with(case.table()).into_iter().filter(|&pid| !processes_with("strace").contains(&pid)).collect();
    let Some(child) = spawning_child(lock_exec, &leftovers) else {
        panic!("lock-exec started no child under strace\n--- screen:\n{}", terminal.screen());
    };
    // Inside the 1.5 s delay after its TIOCSPGRP: the terminal is the child's, every signal still blocked.
    std::thread::sleep(Duration::from_millis(300));
    signal(child, libc::SIGTSTP);
    terminal.expect_screen("RC=0", WAIT, "the run did not end with 0 (a spawn hung by the stop?)");
    assert!(Path::new(&marker).exists(), "the command did not run\n--- screen:\n{}", terminal.screen());
    terminal.type_text("exit\n");
}

#[test]
fn ctrl_z_stops_the_job_and_fg_continues_it_under_a_terminal() {
    ctrl_z_and_fg("sup_ctrl_z", "");
}

/// stdin is not the terminal, but the job is still the terminal's foreground job: Ctrl-Z reaches lock-exec.
#[test]
fn ctrl_z_stops_the_job_and_fg_continues_it_with_stdin_not_a_terminal() {
    ctrl_z_and_fg("sup_ctrl_z_stdin", "< /dev/null");
}

/// `lock-exec run ... | cat`: the other member of the pipeline keeps the terminal.
#[test]
fn ctrl_z_stops_the_job_and_fg_continues_it_in_a_pipeline() {
    ctrl_z_and_fg("sup_ctrl_z_pipe", "| cat");
}

// ---------------------------------------------------------------------------------------------------------------
// Signals

/// A listener on 127.0.0.1 that accepts connections and never answers.
struct BlackHole {
    address: String,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl BlackHole {
    fn start() -> BlackHole {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a black hole");
        listener.set_nonblocking(true).expect("non-blocking listener");
        let address = format!("http://{}", listener.local_addr().expect("address"));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut held = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((stream, _)) => held.push(stream),
                        Err(_) => std::thread::sleep(Duration::from_millis(10)),
                    }
                }
            })
        };
        BlackHole { address, stop, thread: Some(thread) }
    }
}

impl Drop for BlackHole {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[test]
fn sigterm_during_a_hanging_acquire_ends_lock_exec_at_once_without_running_the_command() {
    let case = Case::new("sup_blackhole");
    let hole = BlackHole::start();
    let mut env = case.env();
    env.insert("AWS_ENDPOINT_URL", hole.address.clone());
    let args = ["-t", case.table(), "run", "k", "--", "sh", "-c", &case.marker_script()];
    let running = case.spawn_raw(&args, env);
    std::thread::sleep(Duration::from_millis(500));
    signal(running.pid(), libc::SIGTERM);
    let sent = Instant::now();
    let out = running.wait(WAIT);
    let took = sent.elapsed();
    out.check("exited within 1.5 s of SIGTERM", true, took < Duration::from_millis(1500));
    out.check("died of SIGTERM", Some(libc::SIGTERM), out.status.signal());
    out.check("the command ran (marker)", false, case.exists("marker"));
}

#[test]
fn sigusr1_and_sigwinch_are_forwarded_and_do_not_end_lock_exec() {
    let case = Case::new("sup_usr1_winch");
    let script = format!(
        "trap 'touch {usr1}' USR1; trap 'touch {winch}' WINCH; echo $$ > {started}; i=0; \
         while [ ! -e {usr1} ] || [ ! -e {winch} ]; do i=$((i+1)); [ $i -gt 150 ] && exit 9; sleep 0.1; done; exit 5",
        usr1 = case.file("usr1"),
        winch = case.file("winch"),
        started = case.file("started"),
    );
    let mut running = case.spawn_raw(&run_args(&case, &[], &script), case.env());
    running.wait_for_pid(&case.path("started"), WAIT);
    signal(running.pid(), libc::SIGUSR1);
    eventually(Duration::from_secs(5), || case.exists("usr1"));
    signal(running.pid(), libc::SIGWINCH);
    let out = running.wait(WAIT);
    out.check("(USR1 marker, WINCH marker)", (true, true), (case.exists("usr1"), case.exists("winch")));
    out.check("killed by a signal", None, out.status.signal());
    out.expect_code(5);
    out.check("released", true, out.has_log("lock released"));
}

/// lock-exec started with signals ignored (`nohup` ignores SIGHUP; a script's `&` job SIGINT and SIGQUIT; `trap
/// ''`) leaves them ignored, as the command run alone would: neither lock-exec nor the command acts on them, the
/// command inherits them ignored, and the run ends when the command does. A signal not ignored still reaches the
/// command, so lock-exec's signal handling is alive meanwhile.
#[test]
fn signals_lock_exec_inherited_as_ignored_stay_ignored_by_it_and_its_command() {
    let ignoring = "trap '' HUP INT QUIT TERM USR1 TTOU; exec \"$0\" \"$@\"";
    let launchers: [(&str, Vec<&str>, Vec<i32>); 2] = [
        ("nohup", vec![BINARY], vec![libc::SIGHUP]),
        (
            "sh",
            vec!["-c", ignoring, BINARY],
            vec![libc::SIGHUP, libc::SIGINT, libc::SIGQUIT, libc::SIGTERM, libc::SIGUSR1, libc::SIGTTOU],
        ),
    ];
    for (launcher, prefix, ignored) in launchers {
        let case = Case::new(&format!("sup_inherited_ignored_{launcher}"));
        let (started, marks, go) = (case.file("started"), case.file("marks"), case.file("go"));
        let script = format!(
            "grep SigIgn /proc/$$/status > {marks}; trap 'echo usr2 >> {marks}' USR2; echo $$ > {started}; \
             while [ ! -e {go} ]; do sleep 0.05; done"
        );
        let mut args = prefix.clone();
        args.extend(run_args(&case, &["--kill-after", "30s"], &script));
        let mut running = case.spawn_program(Path::new(launcher), &args, case.env());
        let command = running.wait_for_pid(Path::new(&started), WAIT);
        let mask = std::fs::read_to_string(&marks).unwrap_or_default();
        let mask = u64::from_str_radix(mask.trim().trim_start_matches("SigIgn:").trim(), 16).unwrap_or(0);
        for &signal_number in &ignored {
            let bit = 1u64 << (signal_number - 1);
            assert_eq!(mask & bit, bit, "{launcher}: the command does not ignore signal {signal_number} ({mask:x})");
            signal(running.pid(), signal_number);
        }
        signal(running.pid(), libc::SIGUSR2);
        let forwarded = eventually(WAIT, || std::fs::read_to_string(&marks).is_ok_and(|m| m.contains("usr2")));
        assert!(forwarded, "{launcher}: SIGUSR2 (not ignored) did not reach the command\n{}", running.stderr_so_far());
        assert!(!is_dead(running.pid()), "{launcher}: lock-exec died of an ignored signal");
        assert!(!is_dead(command), "{launcher}: the command died of an ignored signal");
        std::fs::write(&go, "").expect("write the go file");
        let out = running.wait(WAIT);
        out.expect_code(0);
        let forwarded_stop =
            out.logs().iter().any(|l| l["msg"] == "forwarding signal to the command" && l["level"] == "info");
        out.check("a stop signal forwarded", false, forwarded_stop);
        out.check("released", true, out.has_log("lock released"));
    }
}

/// A stop signal that comes after the acquire's answer but before the command is spawned (the debug build's
/// `pause-before-spawn` hook widens that moment to a second): nothing runs, the lock is released, and lock-exec
/// dies of the signal, as for a signal during the acquire.
#[test]
fn a_stop_signal_between_the_acquire_and_the_spawn_runs_nothing() {
    let case = Case::new("sup_signal_before_spawn");
    let marker = case.file("ran");
    let mut env = case.env();
    env.insert("LOCK_EXEC_TEST_FAULT", "pause-before-spawn".to_owned());
    let running = case.spawn_raw(&["-t", case.table(), "run", "k", "--", "touch", &marker], env);
    if !eventually(WAIT, || running.stderr_so_far().contains("\"lock acquired\"")) {
        panic!("lock-exec did not acquire\n{}", running.stderr_so_far());
    }
    signal(running.pid(), libc::SIGTERM);
    let out = running.wait(WAIT);
    out.check("the command ran", false, Path::new(&marker).exists());
    out.check("lock-exec died of SIGTERM", Some(libc::SIGTERM), out.status.signal());
    out.check("released", true, out.has_log("lock released"));
    out.check("owner after the run", None, owner_of(&case, "k"));
}

/// The children of `pid` (every thread's), from `/proc`.
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return Vec::new() };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|text| text.split_whitespace().filter_map(|p| p.parse().ok()).collect::<Vec<u32>>())
        .collect()
}

/// The first child of the lock-exec processes `lock_exec` lists (polled for [`WAIT`] at most): under strace, the
/// command's process before its exec. It and those processes go into `leftovers`.
fn spawning_child(lock_exec: impl Fn() -> Vec<u32>, leftovers: &Leftovers) -> Option<u32> {
    let mut found = None;
    eventually(WAIT, || {
        let parents = lock_exec();
        found = parents.iter().flat_map(|&pid| children_of(pid)).next().map(|child| (parents, child));
        found.is_some()
    });
    let (parents, child) = found?;
    parents.into_iter().chain([child]).for_each(|pid| leftovers.add(pid));
    Some(child)
}

/// A Ctrl-Z sent to lock-exec's process group while the command's process was being created reaches that process
/// too, before it has its own group; blocked there, it would stop it before its exec, with lock-exec suspended in
/// the clone (the parent of a vfork child waits for its exec) and no lease renewed. strace (lock-exec's parent
/// here) delays the child's setpgid by 1.5 s to widen that moment, and the test sends SIGTSTP to the child in it:
/// the spawn must complete and the command run.
#[test]
fn a_stop_signal_that_reaches_the_command_before_its_exec_does_not_hang_the_spawn() {
    let case = Case::new("sup_tstp_before_exec");
    let marker = case.file("ran");
    let script = format!("echo ran > {marker}");
    let mut args = vec!["-f", "-qq", "-o", "/dev/null", "-e", "trace=setpgid"];
    args.extend(["-e", "inject=setpgid:delay_enter=1500000:when=1", BINARY]);
    args.extend(run_args(&case, &["-e", "3s"], &script));
    let running = case.spawn_program(Path::new("strace"), &args, case.env());
    let leftovers = Leftovers::default();
    let Some(child) = spawning_child(|| children_of(running.pid()), &leftovers) else {
        panic!("lock-exec started no child under strace\n{}", running.stderr_so_far());
    };
    // Inside the 1.5 s delay: the child is still in lock-exec's group, every signal blocked.
    std::thread::sleep(Duration::from_millis(200));
    signal(child, libc::SIGTSTP);
    let out = running.wait(WAIT);
    out.expect_code(0);
    out.check("the command ran", true, Path::new(&marker).exists());
    out.check("released", true, out.has_log("lock released"));
}

#[test]
fn a_calling_shell_sees_the_death_by_sigint_and_stops() {
    let case = Case::new("sup_calling_shell");
    let line = format!("{BINARY} -t {} run k -- sleep 5; echo AFTER", case.table());
    let shell = Wrapped::start(&case, "bash", "bash", &["-c", &line], &case.env());
    if !eventually(WAIT, || shell.stderr_so_far().contains("\"running command\"")) {
        panic!("lock-exec did not start the command\n{}", shell.stderr_so_far());
    }
    // As a terminal does on Ctrl-C: SIGINT to the whole foreground group (bash and lock-exec).
    // SAFETY: kill(2) takes two integers and touches no memory of ours.
    let result = unsafe { libc::kill(-(shell.pid() as libc::pid_t), libc::SIGINT) };
    assert_eq!(result, 0, "kill(-pgid, SIGINT): {}", std::io::Error::last_os_error());
    let out = shell.wait(WAIT);
    out.check("AFTER printed by the calling shell", false, out.stdout.contains("AFTER"));
    out.check("bash died of SIGINT", Some(libc::SIGINT), out.status.signal());
    out.check("owner after the run", None, owner_of(&case, "k"));
}

// ---------------------------------------------------------------------------------------------------------------
// PID 1

#[test]
fn as_pid_1_orphans_are_reaped_and_the_exit_code_is_kept() {
    let case = Case::new("sup_pid1");
    let script = format!(
        "for i in 1 2 3; do (sleep 0.2 &); done; sleep 1; \
         awk '{{print $3}}' /proc/[0-9]*/stat 2>/dev/null | grep -c Z > {zombies}; exit 7",
        zombies = case.file("zombies"),
    );
    let mut args = vec!["--pid", "--fork", "--mount-proc", BINARY];
    args.extend(run_args(&case, &[], &script));
    let out = Wrapped::start(&case, "unshare", "unshare", &args, &case.env()).wait(WAIT);
    let zombies = std::fs::read_to_string(case.path("zombies")).unwrap_or_default();
    out.check("zombies seen by the command", "0", zombies.trim());
    out.expect_code(7);
    out.check("owner after the run", None, owner_of(&case, "k"));
}

// ---------------------------------------------------------------------------------------------------------------
// Requests around the exit

/// A keep-alive HTTP proxy to the emulator, one thread per connection, that holds the `hold`-th UpdateItem
/// (counting from 1) for `delay` before forwarding it. Records every X-Amz-Target it sees.
struct HoldingProxy {
    address: String,
    stop: Arc<AtomicBool>,
    targets: Arc<Mutex<Vec<String>>>,
    threads: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: Option<JoinHandle<()>>,
}

impl HoldingProxy {
    fn start(hold: usize, delay: Duration) -> HoldingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        listener.set_nonblocking(true).expect("non-blocking listener");
        let address = format!("http://{}", listener.local_addr().expect("address"));
        let stop = Arc::new(AtomicBool::new(false));
        let targets: Arc<Mutex<Vec<String>>> = Arc::default();
        let threads: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let updates = Arc::new(AtomicUsize::new(0));
        let accept = {
            let (stop, targets, threads) = (Arc::clone(&stop), Arc::clone(&targets), Arc::clone(&threads));
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let Ok((stream, _)) = listener.accept() else {
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    };
                    let _ = stream.set_nonblocking(false);
                    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
                    let (stop, targets, updates) = (Arc::clone(&stop), Arc::clone(&targets), Arc::clone(&updates));
                    let handle = std::thread::spawn(move || {
                        let Ok(mut writer) = stream.try_clone() else { return };
                        let mut reader = BufReader::new(stream);
                        while !stop.load(Ordering::SeqCst) {
                            // Wait for the next request without blocking the stop for long.
                            match reader.fill_buf() {
                                Ok([]) => return,
                                Ok(_) => {}
                                Err(e)
                                    if matches!(
                                        e.kind(),
                                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                                    ) =>
                                {
                                    continue;
                                }
                                Err(_) => return,
                            }
                            let _ = reader.get_ref().set_read_timeout(Some(Duration::from_secs(5)));
                            let Some(request) = read_http_request(&mut reader) else { return };
                            let _ = reader.get_ref().set_read_timeout(Some(Duration::from_millis(200)));
                            let target = request.header("x-amz-target").unwrap_or_default().to_owned();
                            targets.lock().unwrap_or_else(|p| p.into_inner()).push(target.clone());
                            if target.ends_with(".UpdateItem") && updates.fetch_add(1, Ordering::SeqCst) + 1 == hold {
                                let until = Instant::now() + delay;
                                while Instant::now() < until {
                                    if stop.load(Ordering::SeqCst) {
                                        return;
                                    }
                                    std::thread::sleep(Duration::from_millis(20));
                                }
                            }
                            let reply = forward(endpoint(), &request);
                            let mut text = format!("HTTP/1.1 {} Proxied\r\n", reply.status);
                            for (name, value) in &reply.headers {
                                text.push_str(&format!("{name}: {value}\r\n"));
                            }
                            text.push_str(&format!("content-length: {}\r\n\r\n{}", reply.body.len(), reply.body));
                            if writer.write_all(text.as_bytes()).is_err() {
                                return;
                            }
                        }
                    });
                    threads.lock().unwrap_or_else(|p| p.into_inner()).push(handle);
                }
            })
        };
        HoldingProxy { address, stop, targets, threads, accept: Some(accept) }
    }

    fn targets(&self) -> Vec<String> {
        self.targets.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Drop for HoldingProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
        for thread in self.threads.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
            let _ = thread.join();
        }
    }
}

#[test]
fn the_exit_does_not_wait_for_a_held_renewal() {
    let case = Case::new("sup_held_renewal");
    // UpdateItem 1 is the acquire, 2 the first renewal (at 2 s of a 6 s lease): held 10 s. With a 0.1 s grace
    // and a 0.6 s margin that renewal may take until 5.3 s, which is when a run that waits for it would exit.
    let proxy = HoldingProxy::start(2, Duration::from_secs(10));
    let mut env = case.env();
    env.insert("AWS_ENDPOINT_URL", proxy.address.clone());
    let started = Instant::now();
    let out = case.spawn_raw(&run_args(&case, &["-e", "6s", "--kill-after", "100ms"], "sleep 2.3"), env).wait(WAIT);
    let took = started.elapsed();
    let targets = proxy.targets();
    let updates = targets.iter().filter(|t| t.ends_with(".UpdateItem")).count();
    out.check("UpdateItems through the proxy (acquire, held renewal, release)", true, updates >= 3);
    out.expect_code(0);
    out.check("released", true, out.has_log("lock released"));
    out.check("lock-exec exited within 4 s (a 2.3 s command)", true, took < Duration::from_secs(4));
    out.check("owner after the run", None, owner_of(&case, "k"));
}

/// SIGTERM while the acquire is on its way: the cleanup release must not overtake it. The proxy holds the acquire
/// 300 ms (as a slow network would) and forwards everything else at once; a cleanup sent at once finds nothing,
/// then the acquire lands and the key stays held for a whole lease by a run that is gone.
#[test]
fn sigterm_during_a_slow_acquire_leaves_the_key_free() {
    let case = Case::new("sup_slow_acquire_sigterm");
    let proxy = HoldingProxy::start(1, Duration::from_millis(300));
    let mut env = case.env();
    env.insert("AWS_ENDPOINT_URL", proxy.address.clone());
    let running = case.spawn_raw(&["-t", case.table(), "run", "k", "--", "sh", "-c", &case.marker_script()], env);
    let at_proxy = eventually(WAIT, || proxy.targets().iter().any(|t| t.ends_with(".UpdateItem")));
    assert!(at_proxy, "the acquire did not reach the proxy");
    signal(running.pid(), libc::SIGTERM);
    let sent = Instant::now();
    let out = running.wait(WAIT);
    let took = sent.elapsed();
    out.check("died of SIGTERM", Some(libc::SIGTERM), out.status.signal());
    out.check("exited within 1.5 s of SIGTERM", true, took < Duration::from_millis(1500));
    out.check("the command ran (marker)", false, case.exists("marker"));
    // The held acquire has been forwarded by now (300 ms after it arrived).
    std::thread::sleep(Duration::from_millis(500));
    out.check("owner after the run", None, owner_of(&case, "k"));
}

const VALIDATION: &str = r#"{"__type":"com.amazonaws.dynamodb.v20120810#ValidationException","message":"bad"}"#;

#[test]
fn a_definite_rejection_of_the_acquire_gets_no_cleanup_request() {
    let case = Case::new("sup_no_cleanup");
    let server = Server::start(|_| Reply {
        status: 400,
        headers: vec![
            ("content-type".into(), "application/x-amz-json-1.0".into()),
            ("x-amzn-ErrorType".into(), "ValidationException".into()),
        ],
        body: VALIDATION.into(),
    });
    let mut env = case.env();
    env.insert("AWS_ENDPOINT_URL", server.url());
    let out = case.run_not_started(&["-t", case.table(), "run", "k"], env);
    let exchanges = server.stop();
    out.expect_code(70);
    out.check(
        "requests the stub saw",
        vec!["DynamoDB_20120810.UpdateItem".to_owned()],
        exchanges.iter().map(|e| e.request.header("x-amz-target").unwrap_or_default().to_owned()).collect(),
    );
}

#[test]
fn an_acquire_whose_answer_is_unknown_gets_one_owner_conditioned_cleanup() {
    let case = Case::new("sup_cleanup_after_500");
    let server = Server::start(|_| Reply::new(500, r#"{"__type":"InternalServerError","message":"boom"}"#));
    let mut env = case.env();
    env.insert("AWS_ENDPOINT_URL", server.url());
    env.insert("AWS_MAX_ATTEMPTS", "1".into());
    let out = case.run_not_started(&["-t", case.table(), "run", "k"], env);
    let exchanges = server.stop();
    out.expect_code(69);
    let targets: Vec<String> =
        exchanges.iter().map(|e| e.request.header("x-amz-target").unwrap_or_default().to_owned()).collect();
    out.check("requests the stub saw (acquire, cleanup)", vec!["DynamoDB_20120810.UpdateItem".to_owned(); 2], targets);
    let cleanup: serde_json::Value = serde_json::from_str(&exchanges[1].request.body).unwrap_or_default();
    out.check(
        "the cleanup (condition, update)",
        json!(["#owner = :me", "SET #expire = :zero, #ttl = :ttl REMOVE #owner, #owner_id"]),
        json!([cleanup["ConditionExpression"], cleanup["UpdateExpression"]]),
    );
}

// ---------------------------------------------------------------------------------------------------------------
// Panics (the debug build's fault hook)

/// A panic in the renewal worker or in the supervisor is a lost lock: the whole tree is stopped, the lock
/// released, exit 75.
#[test]
fn a_panicking_thread_is_a_lost_lock_that_ends_the_whole_tree() {
    for fault in ["panic-in-renewal", "panic-in-supervisor"] {
        let case = Case::new(&format!("sup_{fault}"));
        let leftovers = Leftovers::default();
        let mut env = case.env();
        env.insert("LOCK_EXEC_TEST_FAULT", fault.into());
        let script = format!("sleep 30 >/dev/null 2>&1 & echo $! > {}; wait", case.file("bg.pid"));
        let mut running = case.spawn_raw(&run_args(&case, &["-e", "3s"], &script), env);
        let background = running.wait_for_pid(&case.path("bg.pid"), WAIT);
        leftovers.add(background);
        let out = running.wait(WAIT);
        expect_gone_after_exit(&out, &format!("{fault}: the background job"), background);
        out.expect_code(75);
        out.check(&format!("{fault}: lock lost logged"), true, out.has_log("lock lost"));
        out.check(&format!("{fault}: owner after the run"), None, owner_of(&case, "k"));
    }
}

/// Ctrl-Z, the lease lapses and another run takes and releases the key, then `fg`: the renewal before the command
/// is continued finds the lock gone, so the stopped command is killed without running again and lock-exec exits
/// 75 with the true reason.
#[test]
fn fg_after_the_key_was_taken_while_stopped_kills_the_command_and_exits_75() {
    let case = Case::new("sup_ctrl_z_taken");
    let leftovers = Leftovers::default();
    let counter = case.file("COUNTER");
    let read_counter = || std::fs::read_to_string(&counter).ok().and_then(|t| t.trim().parse::<u32>().ok());
    let mut terminal = Terminal::start(&case);
    terminal.type_text("echo READY\n");
    terminal.expect_screen("READY\r\n", WAIT, "the interactive shell did not start");
    terminal.type_text(&format!(
        "{BINARY} -t {} --log-format text -e 2s run k -- sh -c 'i=0; while [ $i -lt 100 ]; do echo $i > {counter}; \
         i=$((i+1)); sleep 0.1; done' 2> {}\n",
        case.table(),
        case.file("log")
    ));
    if !eventually(WAIT, || read_counter().is_some_and(|c| c >= 3)) {
        panic!("the command did not start counting\n--- screen:\n{}", terminal.screen());
    }
    if let Some(pid) = case.item("k").and_then(|item| item.pid) {
        leftovers.add(pid);
    }
    terminal.type_text("\x1a");
    terminal.expect_screen("Stopped", Duration::from_secs(5), "Ctrl-Z did not stop the job as the shell sees it");
    // The 2 s lease (and the 2 s --max-clock-skew after it) lapses while everything is stopped; another run takes
    // the key and releases it.
    std::thread::sleep(Duration::from_millis(4500));
    let other = case.run(&["run", "k", "--", "true"]);
    other.expect_code(0);
    other.check("the other run took the lapsed lock", true, other.has_log("lock acquired"));
    let at_stop = read_counter();
    terminal.type_text("fg\n");
    terminal.type_text("echo RC=$?\n");
    terminal.expect_screen("RC=75", WAIT, "lock-exec did not exit 75 after fg");
    let log = std::fs::read_to_string(case.path("log")).unwrap_or_default();
    assert!(log.contains("another holder took the lock and has released it"), "the reason is wrong:\n{log}");
    assert_eq!(read_counter(), at_stop, "the command ran again without the lock\n--- log:\n{log}");
    terminal.type_text("exit\n");
}

/// SIGABRT, SIGSYS and SIGTRAP are catchable: lock-exec forwards them and releases, it never dies of them
/// holding the lock.
#[test]
fn catchable_fault_signals_sent_to_lock_exec_do_not_leave_the_lock_held() {
    let case = Case::new("sup_abrt");
    let started = case.file("started");
    for signal_number in [libc::SIGABRT, libc::SIGSYS, libc::SIGTRAP] {
        let _ = std::fs::remove_file(&started);
        let script = format!("echo $$ > {started}; sleep 1");
        let mut run = case.spawn(&["run", "k", "--", "sh", "-c", &script]);
        run.wait_for_line(Path::new(&started), WAIT);
        signal(run.pid(), signal_number);
        let out = run.wait(WAIT);
        out.check("released", true, out.has_log("lock released"));
        assert_eq!(owner_of(&case, "k"), None, "signal {signal_number} left the lock held\n{}", out.stderr);
    }
}

/// As PID 1 of a namespace whose /proc is not its own (`unshare --pid --fork` without `--mount-proc`), what the
/// command left running is still terminated (`kill(-1)`), so the run ends with the command's code.
#[test]
fn as_pid_1_without_its_own_proc_leftovers_are_still_terminated() {
    let case = Case::new("sup_pid1_noproc");
    let script = "sleep 300 >/dev/null 2>&1 & exit 3";
    let mut args = vec!["--pid", "--fork", BINARY, "-t", case.table(), "run", "--kill-after", "1s", "k"];
    args.extend(["--", "sh", "-c", script]);
    let mut child = Command::new("unshare")
        .args(&args)
        .env_clear()
        .envs(case.env())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start unshare(1) from util-linux (this test needs it): {e}"));
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("lock-exec as PID 1 without its own /proc did not end (the background sleep kept it waiting)");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(3), "exit code of the command");
    assert_eq!(owner_of(&case, "k"), None, "the lock was not released");
}

/// lock-exec ignores SIGTTOU while it runs (its log lines must not stop it under `stty tostop`), and Rust's
/// runtime ignores SIGPIPE; the command starts with both at their default action, as from a shell (an ignored
/// disposition survives the exec: `yes | head -1` would spin writing into a closed pipe).
#[test]
fn the_command_does_not_inherit_lock_exec_s_ignored_sigttou_or_sigpipe() {
    let case = Case::new("sup_sigttou_default");
    let out = case.run(&["run", "k", "--", "grep", "SigIgn", "/proc/self/status"]);
    out.expect_code(0);
    let ignored = out
        .stdout
        .split_whitespace()
        .nth(1)
        .and_then(|mask| u64::from_str_radix(mask, 16).ok())
        .unwrap_or_else(|| out.fail("the command's SigIgn line", &"SigIgn:\t<hex>", &out.stdout));
    out.check("SIGTTOU ignored in the command", 0, ignored & (1 << (libc::SIGTTOU - 1)));
    out.check("SIGPIPE ignored in the command", 0, ignored & (1 << (libc::SIGPIPE - 1)));
}

/// A job-control stop (SIGTSTP, with a terminal) between the acquire's answer and the spawn stops lock-exec there
/// (`pause-before-spawn` makes the moment a second long); a SIGTERM then reaches the stopped lock-exec, followed by
/// SIGCONT (as bash's `kill %1` does for a stopped job). The SIGTERM came before the command existed: nothing may
/// run, lock-exec must die of it (143) and release. (Review of 6450b24: after `stop_self` the drain only
/// `try_recv`s, and often loses the race with the signal thread forwarding the SIGTERM: the command is then
/// spawned, and the SIGTERM goes to it or, once a short command is done, nowhere; lock-exec exits 0.)
#[test]
fn a_stop_signal_while_stopped_before_the_spawn_runs_nothing() {
    const ROUNDS: usize = 20;
    let case = Case::new("sup_stopped_before_spawn");
    let mut failures = Vec::new();
    for round in 0..ROUNDS {
        let key = format!("k{round}");
        let marker = case.file(&format!("ran{round}"));
        let mut env = case.env();
        env.insert("LOCK_EXEC_TEST_FAULT", "pause-before-spawn".to_owned());
        // script(1) gives sh (and lock-exec, in its process group) a terminal whose foreground group is theirs.
        let line = format!("{BINARY} -t {} run {key} -- touch {marker}; echo RC=$?", case.table());
        let mut child = Command::new("script")
            .args(["-qfec", &format!("sh -c '{line}'"), "/dev/null"])
            .env_clear()
            .envs(&env)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("script(1)");
        let stdin = child.stdin.take();
        let pid = eventually(WAIT, || case.item(&key).and_then(|item| item.pid).is_some())
            .then(|| case.item(&key).and_then(|item| item.pid))
            .flatten()
            .unwrap_or_else(|| panic!("round {round}: lock-exec did not acquire"));
        signal(pid, libc::SIGTSTP);
        std::thread::sleep(Duration::from_millis(1500));
        signal(pid, libc::SIGTERM);
        signal(pid, libc::SIGCONT);
        let mut screen = String::new();
        let _ = child.stdout.take().expect("stdout").read_to_string(&mut screen);
        drop(stdin);
        let _ = child.wait();
        let ran = Path::new(&marker).exists();
        let code = screen.contains("RC=143");
        let owner = owner_of(&case, &key);
        if ran || !code || owner.is_some() {
            failures.push(format!("round {round}: command ran {ran}, exit 143 {code}, owner {owner:?}\n{screen}"));
        }
    }
    assert!(failures.is_empty(), "{} of {ROUNDS} rounds failed:\n{}", failures.len(), failures.join("\n"));
}
