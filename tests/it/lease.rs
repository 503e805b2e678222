//! Lease loss through the network: a TCP proxy between lock-exec and the emulator is cut mid-run, renewals
//! fail, and the command must be dead before the last confirmed lease end.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::support::{Case, Outcome, endpoint, eventually, is_dead};

const WAIT: Duration = Duration::from_secs(20);

/// What the proxy does to the first response it carries.
#[derive(Clone, Copy)]
enum First {
    /// Passes it on.
    Pass,
    /// Holds it back this long.
    Delay(Duration),
    /// Drops it and closes the connection (the request did reach the emulator).
    Drop,
}

/// A TCP proxy to the emulator that can be cut: open connections are shut down and new ones are closed at once.
struct Proxy {
    address: String,
    cut: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
    threads: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: Option<JoinHandle<()>>,
}

impl Proxy {
    fn start() -> Proxy {
        Proxy::with_first_response(First::Pass)
    }

    fn with_first_response(first: First) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        listener.set_nonblocking(true).expect("a non-blocking listener");
        let address = format!("http://{}", listener.local_addr().expect("proxy address"));
        let upstream = endpoint().trim_start_matches("http://").to_owned();
        let cut = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let open: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let threads: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (accept_cut, accept_stop, accept_open, accept_threads) =
            (Arc::clone(&cut), Arc::clone(&stop), Arc::clone(&open), Arc::clone(&threads));
        let accept = std::thread::spawn(move || {
            let mut first = Some(first);
            while !accept_stop.load(Ordering::SeqCst) {
                let client = match listener.accept() {
                    Ok((client, _)) => client,
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    }
                };
                let _ = client.set_nonblocking(false);
                if accept_cut.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(&upstream) else { continue };
                let mut list = accept_open.lock().unwrap_or_else(|p| p.into_inner());
                for stream in [&client, &server] {
                    if let Ok(clone) = stream.try_clone() {
                        list.push(clone);
                    }
                }
                drop(list);
                let mut handles = accept_threads.lock().unwrap_or_else(|p| p.into_inner());
                handles.extend(pump(&client, &server, First::Pass));
                handles.extend(pump(&server, &client, first.take().unwrap_or(First::Pass)));
            }
        });
        Proxy { address, cut, stop, open, threads, accept: Some(accept) }
    }

    /// The case's environment with DynamoDB calls going through this proxy.
    fn env(&self, case: &Case) -> BTreeMap<&'static str, String> {
        let mut env = case.env();
        env.insert("AWS_ENDPOINT_URL", self.address.clone());
        env
    }

    /// From now on nothing gets through.
    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for stream in self.open.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
        self.stop.store(true, Ordering::SeqCst);
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
        for pump in self.threads.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
            let _ = pump.join();
        }
    }
}

/// Copies `from` to `to` in a thread until either side closes, treating the first chunk as `first` says.
fn pump(from: &TcpStream, to: &TcpStream, first: First) -> Option<JoinHandle<()>> {
    let (Ok(mut from), Ok(mut to)) = (from.try_clone(), to.try_clone()) else { return None };
    Some(std::thread::spawn(move || {
        let mut buffer = [0u8; 16 * 1024];
        let mut first = Some(first);
        loop {
            match from.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    match first.take() {
                        Some(First::Drop) => {
                            let _ = to.shutdown(Shutdown::Both);
                            let _ = from.shutdown(Shutdown::Both);
                            return;
                        }
                        Some(First::Delay(delay)) => std::thread::sleep(delay),
                        Some(First::Pass) | None => {}
                    }
                    if to.write_all(&buffer[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    }))
}

/// Runs `-e 3s` through the proxy, cuts the proxy once the command runs, and returns (lock-exec's outcome,
/// the command's pid, the instant of the cut, the instant the command was seen dead).
fn run_and_cut(case: &Case, script: &str) -> (Outcome, u32, Instant, Instant) {
    let proxy = Proxy::start();
    let args = ["-t", case.table(), "run", "k", "-e", "3s", "--kill-after", "10s", "--", "sh", "-c", script];
    let mut running = case.spawn_raw(&args, proxy.env(case));
    let pid = running.wait_for_pid(&case.path("child.pid"), WAIT);
    proxy.cut();
    let cut = Instant::now();
    // The last renewal that can have been confirmed was sent before the cut: its lease ends before cut + 3 s.
    if !eventually(Duration::from_secs(10), || is_dead(pid)) {
        panic!("the command {pid} still runs 10 s after the network was cut\n{}", running.stderr_so_far());
    }
    let dead = Instant::now();
    let out = running.wait(WAIT);
    (out, pid, cut, dead)
}

#[test]
fn failing_renewals_stop_the_command_before_the_lease_ends() {
    let case = Case::new("failing_renewals");
    let script = format!(
        "echo $$ > {pid}; trap 'echo term >> {marker}; exit 143' TERM; while :; do sleep 0.1; done",
        pid = case.file("child.pid"),
        marker = case.file("marker")
    );
    let (out, _pid, cut, dead) = run_and_cut(&case, &script);
    out.expect_code(75);
    out.check("the command got SIGTERM (its trap ran)", true, case.exists("marker"));
    out.check("dead before the last possible lease end (cut + 3 s)", true, dead < cut + Duration::from_secs(3));
    out.check("renewal failures were logged", true, out.has_log("lock renewal failed; retrying"));
    let lost = out.log("lock lost");
    out.check("lock lost level", "error", lost["level"].as_str().unwrap_or_default());
}

#[test]
fn a_command_that_ignores_sigterm_is_killed_before_the_lease_ends() {
    let case = Case::new("failing_renewals_ignored_term");
    let script = format!("echo $$ > {}; trap '' TERM; while :; do sleep 0.1; done", case.file("child.pid"));
    let (out, _pid, cut, dead) = run_and_cut(&case, &script);
    out.expect_code(75);
    out.check("dead before the last possible lease end (cut + 3 s)", true, dead < cut + Duration::from_secs(3));
    out.check("SIGKILL was logged", true, out.has_log("command still running after the grace period; sending SIGKILL"));
}

#[test]
fn a_lost_acquire_response_is_retried_and_the_retry_succeeds() {
    let case = Case::new("lost_acquire_response");
    let proxy = Proxy::with_first_response(First::Drop);
    let args = ["-v", "run", "k", "--locked-exit-code", "9", "--", "sh", "-c", "echo ran"];
    let out = case.run_env(&args, proxy.env(&case));
    // The first UpdateItem reached the emulator (the item is ours) but its answer was lost; the retry must
    // succeed through `#owner = :me` instead of finding the key locked by ourselves.
    out.expect_code(0);
    out.check("stdout", "ran\n", out.stdout.as_str());
    let attempts: Vec<(String, u64)> = out
        .logs()
        .iter()
        .filter(|line| line["msg"] == "dynamodb request" && line["operation"] == "UpdateItem")
        .take(2)
        .map(|line| (line["outcome"].as_str().unwrap_or_default().to_owned(), line["attempt"].as_u64().unwrap_or(0)))
        .collect();
    out.check("the first attempt failed, the second acquired", 2, attempts.len());
    out.check("second attempt", ("ok".to_owned(), 2), attempts[1].clone());
    out.check("first attempt failed", true, attempts[0].0 != "ok");
    out.check("ran once", 1, out.messages().iter().filter(|m| *m == "running command").count());
    out.check("released", true, out.has_log("lock released"));
}

/// Reads one HTTP request (head and `content-length` body) from `stream`.
fn read_request(stream: &mut TcpStream) {
    let mut request = Vec::new();
    let mut buffer = [0u8; 4096];
    while let Ok(n @ 1..) = stream.read(&mut buffer) {
        request.extend_from_slice(&buffer[..n]);
        let text = String::from_utf8_lossy(&request).to_ascii_lowercase();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text
                .lines()
                .find_map(|line| line.strip_prefix("content-length:"))
                .and_then(|value| value.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if request.len() >= end + 4 + length {
                return;
            }
        }
    }
}

/// What a [`scripted_proxy`] does with one connection.
#[derive(Clone, Copy)]
enum Script {
    /// Forwards the request to the emulator and drops the answer (the request was applied).
    LoseAnswer,
    /// Answers `400 ThrottlingException` itself (nothing reaches the emulator). Every attempt throttled, and no
    /// cleanup follows: `faults::persistent_faults_exit_69_in_bounded_time_and_leave_the_key_free`.
    Throttle,
}

/// A proxy to the emulator that treats its Nth connection as `scripts[N]` says and forwards the later ones; its URL.
/// Left running: it ends with the test process.
fn scripted_proxy(scripts: Vec<Script>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
    let address = format!("http://{}", listener.local_addr().expect("proxy address"));
    let upstream = endpoint().trim_start_matches("http://").to_owned();
    std::thread::spawn(move || {
        for (index, client) in listener.incoming().enumerate() {
            let Ok(mut client) = client else { return };
            let script = scripts.get(index).copied();
            if let Some(Script::Throttle) = script {
                read_request(&mut client);
                let body = r#"{"__type":"com.amazonaws.dynamodb.v20120810#ThrottlingException","message":"slow down"}"#;
                let head = format!(
                    "HTTP/1.1 400 Bad Request\r\ncontent-type: application/x-amz-json-1.0\r\ncontent-length: {}\r\n\
                     connection: close\r\n\r\n",
                    body.len()
                );
                let _ = client.write_all(format!("{head}{body}").as_bytes());
                continue;
            }
            let Ok(server) = TcpStream::connect(&upstream) else { continue };
            let answer = if let Some(Script::LoseAnswer) = script { First::Drop } else { First::Pass };
            pump(&client, &server, First::Pass);
            pump(&server, &client, answer);
        }
    });
    address
}

/// The acquire's first attempt reaches DynamoDB (the key is taken) but its answer is lost, and the second attempt
/// is throttled: the run fails with the throttling error, yet the first request may have been applied, so the
/// cleanup release must still go out and free the key (it stayed held for a whole lease by a run that was gone).
#[test]
fn a_lost_acquire_answer_followed_by_throttling_still_cleans_up() {
    let case = Case::new("lost_then_throttled");
    let mut env = case.env();
    env.insert("AWS_ENDPOINT_URL", scripted_proxy(vec![Script::LoseAnswer, Script::Throttle]));
    env.insert("AWS_MAX_ATTEMPTS", "2".into());
    let out = case.run_not_started(&["-v", "-t", case.table(), "run", "k", "--", "true"], env);
    out.expect_code(69);
    out.expect_stderr_contains("ThrottlingException");
    let cleanup = out.log("acquire abandoned; cleanup");
    out.check("cleanup outcome", "released a lock the acquire had taken", cleanup["outcome"].as_str().unwrap_or(""));
    let item = case.item("k");
    out.check("owner after the run", None, item.and_then(|item| item.owner));
}

/// `table create` on an existing table whose first CreateTable answer was lost: the retry's
/// ResourceInUseException still means "it exists" (exit 0), not a failure.
#[test]
fn table_create_after_a_lost_answer_still_sees_the_existing_table() {
    let case = Case::new("table_create_lost");
    let mut env = case.env();
    env.insert("AWS_ENDPOINT_URL", scripted_proxy(vec![Script::LoseAnswer]));
    env.insert("AWS_MAX_ATTEMPTS", "2".into());
    let out = case.run_env(&["-t", case.table(), "table", "create"], env);
    out.expect_code(0);
}

#[test]
fn an_acquire_that_returns_after_the_lease_is_nearly_over_does_not_start_the_command() {
    let case = Case::new("late_acquire");
    // -e 3s: the command must be dead by lease end - 0.3 s, with 1 s of grace, so it may not start after 1.7 s.
    let proxy = Proxy::with_first_response(First::Delay(Duration::from_millis(2500)));
    let out = case.run_not_started(&["-t", case.table(), "run", "k", "-e", "3s"], proxy.env(&case));
    out.expect_code(75);
    let lost = out.log("lock lost");
    out.check("reason", true, lost["error"].as_str().unwrap_or_default().contains("not running the command"));
}

/// A `credential_process` profile whose first call answers at once with credentials expiring `lifetime` from
/// now (inside the 5-minute refresh window, so every later use wants a refresh), and whose later calls take
/// `slow` seconds. Returns the environment that selects it.
fn slow_refresh_profile(
    case: &Case,
    lifetime: Duration,
    slow: u32,
) -> std::collections::BTreeMap<&'static str, String> {
    let calls = case.file("calls");
    let expiration = crate::support::rfc3339_from_now(lifetime);
    let script = case.write_script(
        "creds.sh",
        &format!(
            "echo x >> {calls}\nif [ \"$(wc -l < {calls})\" -gt 1 ]; then sleep {slow}; fi\n\
             printf '{{\"Version\":1,\"AccessKeyId\":\"AKPROC\",\"SecretAccessKey\":\"procsecret\",\"Expiration\":\"{expiration}\"}}'\n"
        ),
    );
    case.write_aws_file("config", &format!("[profile slow]\ncredential_process = {script}\n"));
    let mut env = case.env_without_credentials();
    env.insert("AWS_PROFILE", "slow".into());
    env
}

/// Credentials still valid for minutes: a refresh that takes longer than the lease does not cost the lock
/// ("a refresh failure while credentials are still valid is a warning, not a lost lock").
#[test]
fn a_slow_refresh_while_credentials_are_valid_keeps_the_lock() {
    let case = Case::new("slow_refresh_valid");
    let env = slow_refresh_profile(&case, Duration::from_secs(240), 8);
    let out = case.run_env(&["-v", "run", "k", "-e", "3s", "--", "sh", "-c", "sleep 5; echo done"], env);
    out.expect_code(0);
    out.check("stdout", "done\n", out.stdout.as_str());
    out.check("no lock lost", false, out.has_log("lock lost"));
    let renewed = out.messages().iter().filter(|m| *m == "lock renewed").count();
    out.check("renewals went on during the slow refresh (at least 3)", true, renewed >= 3);
}

/// Credentials about to expire and a refresh that hangs: the renewals cannot be signed, and the command must
/// still be stopped before the lease ends.
#[test]
fn a_hanging_refresh_of_expiring_credentials_cannot_keep_the_command_running_past_the_lease() {
    let case = Case::new("hanging_refresh");
    // Valid for 35 s: renewals sign with them for the first ~5 s (30 s margin), then must wait for a refresh.
    let env = slow_refresh_profile(&case, Duration::from_secs(35), 12);
    let script = format!("echo $$ > {}; sleep 60", case.file("child.pid"));
    let args = ["-t", case.table(), "-v", "run", "k", "-e", "3s", "--", "sh", "-c", &script];
    let mut running = case.spawn_raw(&args, env);
    let pid = running.wait_for_pid(&case.path("child.pid"), WAIT);
    if !eventually(Duration::from_secs(20), || is_dead(pid)) {
        panic!(
            "the command still runs 20 s into a 3 s lease whose renewals cannot be signed\n{}",
            running.stderr_so_far()
        );
    }
    let out = running.wait(Duration::from_secs(60));
    out.expect_code(75);
    let lost = out.log("lock lost");
    out.check(
        "reason",
        "a renewal did not complete before the lease was about to end",
        lost["error"].as_str().unwrap_or_default(),
    );
    // The renewal before the loss succeeded at most 3 s earlier; the kill came before that lease ended.
    let renewed_at: Vec<f64> =
        out.logs().iter().filter(|l| l["msg"] == "lock renewed").filter_map(|l| l["ts"].as_f64()).collect();
    let lost_at = lost["ts"].as_f64().unwrap_or_default();
    let last_lease_end = renewed_at.last().copied().unwrap_or_default() + 3.0;
    out.check("SIGTERM sent before the last confirmed lease ended", true, lost_at < last_lease_end);
}
