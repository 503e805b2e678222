//! Caps and retries on the credential paths: an endless token file fails at once, a named pipe (FIFO) as a
//! config or token file fails at once instead of blocking, `/dev/null` reads as an empty file, and a failing
//! container endpoint is asked a counted number of times per credential fetch (3 tries). `status` makes one
//! DynamoDB call, so one credential fetch.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::support::{Case, Outcome, Reply, Server};

/// Tries per credential fetch, as the README's "Caps and timeouts" table says.
const FETCH_ATTEMPTS: usize = 3;

/// `-v run k -- sh -c 'touch marker'` with exactly `env`; the command must not have started.
#[track_caller]
fn run_not_started(case: &Case, env: std::collections::BTreeMap<&'static str, String>) -> Outcome {
    case.run_not_started(&["-t", case.table(), "-v", "run", "k"], env)
}

/// `-v status k` with exactly `env`, to its end.
fn status(case: &Case, env: std::collections::BTreeMap<&'static str, String>) -> Outcome {
    case.run_env(&["-v", "status", "k"], env)
}

/// Fails unless some log line at level error contains `phrase`.
#[track_caller]
fn expect_error_saying(out: &Outcome, phrase: &str) {
    let errors: Vec<String> = out
        .logs()
        .iter()
        .filter(|l| l["level"] == "error")
        .map(|l| l["msg"].as_str().unwrap_or_default().to_owned())
        .collect();
    if !errors.iter().any(|e| e.contains(phrase)) {
        out.fail("no error line says it", &phrase, &errors);
    }
}

#[test]
fn an_endless_web_identity_token_file_fails_at_once() {
    let case = Case::new("limits_dev_zero");
    let mut env = case.env_without_credentials();
    env.insert("AWS_WEB_IDENTITY_TOKEN_FILE", "/dev/zero".into());
    env.insert("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/lock-exec-it".into());
    let started = Instant::now();
    let out = run_not_started(&case, env);
    out.expect_code(78);
    expect_error_saying(&out, "cannot read web identity token file /dev/zero: not a regular file (a character device)");
    out.check("failed quickly", true, started.elapsed() < Duration::from_secs(5));
}

/// Makes a named pipe `name` in the case's folder (no writer ever opens it); returns its path.
fn fifo(case: &Case, name: &str) -> String {
    let path = case.file(name);
    let status = std::process::Command::new("mkfifo").arg(&path).status().expect("run mkfifo");
    assert!(status.success(), "mkfifo {path}: {status}");
    path
}

/// Runs `-v run k -- sh -c 'touch marker'` with `env`, 10 s at most (opening a FIFO without a writer would block
/// for ever), and checks the command did not start.
#[track_caller]
fn run_not_started_quickly(case: &Case, env: std::collections::BTreeMap<&'static str, String>) -> Outcome {
    let script = case.marker_script();
    let out = case
        .spawn_raw(&["-t", case.table(), "-v", "run", "k", "--", "sh", "-c", &script], env)
        .wait(Duration::from_secs(10));
    out.check("the command started (marker file made)", false, case.exists("marker"));
    out
}

#[test]
fn a_named_pipe_as_the_config_file_fails_at_once() {
    let case = Case::new("limits_config_fifo");
    let path = fifo(&case, "config.fifo");
    let mut env = case.env();
    env.insert("AWS_CONFIG_FILE", path.clone());
    let out = run_not_started_quickly(&case, env);
    out.expect_code(78);
    expect_error_saying(&out, &format!("cannot read AWS config file {path}: not a regular file (a named pipe)"));
}

#[test]
fn a_named_pipe_as_the_web_identity_token_file_fails_at_once() {
    let case = Case::new("limits_token_fifo");
    let path = fifo(&case, "token.fifo");
    let mut env = case.env_without_credentials();
    env.insert("AWS_WEB_IDENTITY_TOKEN_FILE", path.clone());
    env.insert("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/lock-exec-it".into());
    let out = run_not_started_quickly(&case, env);
    out.expect_code(78);
    expect_error_saying(
        &out,
        &format!("cannot read web identity token file {path}: not a regular file (a named pipe)"),
    );
}

/// `AWS_CONFIG_FILE=/dev/null` (a common way to ignore the shared files) reads as an empty file.
#[test]
fn dev_null_as_the_shared_files_reads_as_empty() {
    let case = Case::new("limits_dev_null");
    let out = case.run_with(&["-t", case.table(), "run", "k", "--", "sh", "-c", "echo ran"], |env| {
        env.insert("AWS_CONFIG_FILE", "/dev/null".into());
        env.insert("AWS_SHARED_CREDENTIALS_FILE", "/dev/null".into());
    });
    out.expect_code(0);
    out.check("the command's stdout", "ran\n", out.stdout.as_str());
}

#[test]
fn a_container_endpoint_answering_500_is_asked_three_times() {
    let case = Case::new("limits_container_500");
    let server = Server::start(|_| Reply::new(500, "internal error"));
    let mut env = case.env_without_credentials();
    env.insert("AWS_CONTAINER_CREDENTIALS_FULL_URI", format!("{}/creds", server.url()));
    let out = status(&case, env);
    let requests = server.stop().len();
    out.check("requests to the container endpoint", FETCH_ATTEMPTS, requests);
    out.expect_code(69);
    expect_error_saying(&out, "container credentials endpoint answered HTTP 500");
}

/// An endpoint that answers each request with headers and then one body byte every 300 ms, never finishing:
/// every request ends in the client's timeout. Counts the requests; stopped and joined on drop.
struct Dripping {
    addr: std::net::SocketAddr,
    requests: Arc<AtomicU32>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Dripping {
    fn start() -> Dripping {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a local port");
        let addr = listener.local_addr().expect("a bound listener has an address");
        let requests = Arc::new(AtomicU32::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (requests, stop) = (Arc::clone(&requests), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut connections = Vec::new();
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let (requests, stop) = (Arc::clone(&requests), Arc::clone(&stop));
                    connections.push(std::thread::spawn(move || drip(stream, &requests, &stop)));
                }
                for connection in connections {
                    let _ = connection.join();
                }
            })
        };
        Dripping { addr, requests, stop, thread: Some(thread) }
    }

    fn requests(&self) -> u32 {
        self.requests.load(Ordering::SeqCst)
    }
}

/// Reads one request head, counts it, then drips until the client goes away or the server stops (20 s at most).
fn drip(stream: TcpStream, requests: &AtomicU32, stop: &AtomicBool) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut reader = BufReader::new(&stream);
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) if line.trim_end().is_empty() => break,
            Ok(_) => {}
        }
    }
    requests.fetch_add(1, Ordering::SeqCst);
    let mut writer = &stream;
    if writer.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{").is_err()
    {
        return;
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(300));
        if writer.write_all(b" ").and_then(|()| writer.flush()).is_err() {
            return;
        }
    }
}

impl Drop for Dripping {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr); // wakes the accept loop
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The case the security review measured at 9 requests and 20 s before exit 69: now 3 requests of 2 s.
#[test]
fn a_slowly_dripping_container_endpoint_is_asked_three_times() {
    let case = Case::new("limits_container_drip");
    let server = Dripping::start();
    let mut env = case.env_without_credentials();
    env.insert("AWS_CONTAINER_CREDENTIALS_FULL_URI", format!("http://{}/creds", server.addr));
    let started = Instant::now();
    let out = status(&case, env);
    let elapsed = started.elapsed();
    out.check("requests to the container endpoint", FETCH_ATTEMPTS as u32, server.requests());
    out.expect_code(69);
    out.check("done within 3 tries of 2 s and the pauses", true, elapsed < Duration::from_secs(10));
}
