//! Lease loss through the network: a TCP proxy between lock-exec and the emulator is cut mid-run, renewals
//! fail, and the command must be dead before the last confirmed lease end.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::support::{Case, endpoint, eventually, is_dead};

const WAIT: Duration = Duration::from_secs(20);

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
                handles.extend(pump(&client, &server));
                handles.extend(pump(&server, &client));
            }
        });
        Proxy { address, cut, stop, open, threads, accept: Some(accept) }
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

/// Copies `from` to `to` in a thread until either side closes.
fn pump(from: &TcpStream, to: &TcpStream) -> Option<JoinHandle<()>> {
    let (Ok(mut from), Ok(mut to)) = (from.try_clone(), to.try_clone()) else { return None };
    Some(std::thread::spawn(move || {
        let mut buffer = [0u8; 16 * 1024];
        loop {
            match from.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
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
fn run_and_cut(case: &Case, script: &str) -> (crate::support::Outcome, u32, Instant, Instant) {
    let proxy = Proxy::start();
    let mut env = case.env();
    env.insert("AWS_ENDPOINT_URL", proxy.address.clone());
    let args = ["-t", case.table(), "run", "k", "-e", "3s", "--kill-after", "10s", "--", "sh", "-c", script];
    let mut running = case.spawn_raw(&args, env);
    let pid: u32 = running.wait_for_line(&case.path("child.pid"), WAIT).trim().parse().expect("a pid");
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
