//! Fault injection between lock-exec and the emulator: [`FaultProxy`], an HTTP proxy on 127.0.0.1 that lock-exec
//! reaches as its `AWS_ENDPOINT_URL`, decides request by request (acquire, renewal, release, ..., by key) whether
//! to forward it or to fail it: 5xx and throttling answers, connections reset before or after the request reached
//! the emulator, answers withheld after the write was applied, delays past the client's timeout, hostile bodies
//! (HTML, empty, truncated JSON, XML, 10 MB, a slow drip). Each test asserts what lock-exec did about it: retried
//! and succeeded, not retried, the ambiguous write resolved by the owner condition, a clear error and exit code,
//! in bounded time and memory (the peak RSS of the process, `VmHWM` sampled).
//!
//! Faults already covered elsewhere are not repeated here (RELIABILITY.md lists them): a validation error is not
//! retried and gets no cleanup, a 500 on every acquire gets one owner-conditioned cleanup (`supervision::`), a
//! lost acquire answer is retried into success and a cut network stops the command before the lease ends
//! (`lease::`).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use lock_exec::aws::http::Http;
use lock_exec::lock;
use serde_json::Value;

use crate::support::{Case, Outcome, Seen, client, endpoint, now_ns, owner, read_http_request, send_on};

/// Which of lock-exec's requests a proxied call is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Op {
    /// The acquire `UpdateItem` (`attribute_not_exists(#key) OR ...`).
    Acquire,
    /// A renewal `UpdateItem` (owner-conditioned, a new lease end).
    Renew,
    /// A release `UpdateItem` (owner-conditioned, lease end 0 or the `--keep` instant), or the cleanup after an
    /// acquire whose outcome is unknown.
    Release,
    /// A `GetItem`.
    Get,
    /// Anything else.
    Other,
}

/// One request the proxy received.
#[derive(Debug, Clone)]
pub struct Call {
    /// What it is.
    pub op: Op,
    /// The item key it names (empty when it names none).
    pub key: String,
    /// 1 for the first call of this operation on this key, 2 for the next, ...
    pub nth: usize,
}

/// An answer the proxy makes up.
#[derive(Debug, Clone)]
pub struct Answer {
    /// Status code.
    pub status: u16,
    /// Headers (content-length is added).
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
}

impl Answer {
    /// A DynamoDB JSON error: `x-amzn-ErrorType` and `__type` set to `code`.
    pub fn error(status: u16, code: &str) -> Answer {
        let body =
            serde_json::json!({ "__type": format!("com.amazonaws.dynamodb.v20120810#{code}"), "message": "injected" });
        Answer {
            status,
            headers: vec![
                ("content-type".into(), "application/x-amz-json-1.0".into()),
                ("x-amzn-ErrorType".into(), code.into()),
            ],
            body: body.to_string().into_bytes(),
        }
    }

    /// Any body with a content type.
    pub fn text(status: u16, content_type: &str, body: &str) -> Answer {
        Answer { status, headers: vec![("content-type".into(), content_type.into())], body: body.as_bytes().to_vec() }
    }

    /// `size` bytes of JSON-looking filler.
    pub fn huge(status: u16, size: usize) -> Answer {
        let mut body = b"{\"Attributes\":\"".to_vec();
        body.resize(size, b'x');
        Answer { status, headers: vec![("content-type".into(), "application/x-amz-json-1.0".into())], body }
    }
}

/// What the proxy does with one request.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Forwards it and passes the answer on.
    Pass,
    /// Answers without forwarding: the emulator never sees the request.
    Answer(Answer),
    /// Forwards it (the write is applied), then answers this instead of the emulator's answer.
    AnswerAfter(Answer),
    /// Forwards it, then passes the emulator's status and headers with the first half of its body.
    TruncateAfter,
    /// Resets the connection (RST) without forwarding.
    ResetBefore,
    /// Forwards it, then resets the connection instead of answering.
    ResetAfter,
    /// Forwards it, says nothing for this long (past the client's timeout), then resets the connection.
    WithholdAfter(Duration),
    /// Holds the request this long, then forwards it and answers (the client may have gone: the write still
    /// lands, late).
    Delay(Duration),
    /// Forwards it, then sends the emulator's status and headers and its body one byte per interval.
    DripAfter(Duration),
    /// Answers at once, then forwards the request this much later: a 5xx whose write lands late anyway.
    AnswerThenForward(Answer, Duration),
}

impl Fault {
    /// The kind of fault, without its figures, for counts.
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::Pass => "pass",
            Fault::Answer(a) if a.status >= 500 => "5xx",
            Fault::Answer(a) if a.status == 400 => "throttling 400",
            Fault::Answer(_) => "other answer",
            Fault::AnswerAfter(_) => "answer replaced after the write",
            Fault::TruncateAfter => "truncated body after the write",
            Fault::ResetBefore => "reset before",
            Fault::ResetAfter => "reset after the write",
            Fault::WithholdAfter(_) => "withheld after the write",
            Fault::Delay(_) => "request delayed",
            Fault::DripAfter(_) => "dripping body",
            Fault::AnswerThenForward(..) => "5xx, write landing late",
        }
    }

    /// A short name for reports.
    pub fn name(&self) -> String {
        match self {
            Fault::Pass => "pass".into(),
            Fault::Answer(a) => format!("answer {}", a.status),
            Fault::AnswerAfter(a) => format!("answer {} after forwarding", a.status),
            Fault::TruncateAfter => "truncated body after forwarding".into(),
            Fault::ResetBefore => "reset before".into(),
            Fault::ResetAfter => "reset after".into(),
            Fault::WithholdAfter(d) => format!("withheld {d:?} after forwarding"),
            Fault::Delay(d) => format!("delayed {d:?}"),
            Fault::DripAfter(d) => format!("drip every {d:?}"),
            Fault::AnswerThenForward(a, d) => format!("answer {}, forwarded {d:?} later", a.status),
        }
    }
}

/// Decides the fault of each call.
pub type Plan = Box<dyn FnMut(&Call) -> Fault + Send>;

struct Shared {
    stop: AtomicBool,
    plan: Mutex<Plan>,
    counts: Mutex<BTreeMap<(Op, String), usize>>,
    calls: Mutex<Vec<(Call, String)>>,
    /// Requests forwarded late ([`Fault::AnswerThenForward`]).
    late: Mutex<Vec<JoinHandle<()>>>,
    upstream: String,
    http: Http,
}

/// An HTTP/1.1 proxy on 127.0.0.1 in front of the emulator, keep-alive, one thread per connection, that applies
/// a [`Plan`] to every request and records each call with the fault it got. Stopped and joined on drop.
pub struct FaultProxy {
    address: String,
    shared: Arc<Shared>,
    threads: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: Option<JoinHandle<()>>,
}

impl FaultProxy {
    /// Starts a proxy to the emulator of `LOCK_EXEC_TEST_ENDPOINT`.
    pub fn start(plan: impl FnMut(&Call) -> Fault + Send + 'static) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the fault proxy");
        listener.set_nonblocking(true).expect("a non-blocking listener");
        let address = format!("http://{}", listener.local_addr().expect("proxy address"));
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            plan: Mutex::new(Box::new(plan)),
            counts: Mutex::default(),
            calls: Mutex::default(),
            late: Mutex::default(),
            upstream: endpoint().to_owned(),
            http: Http::new(),
        });
        let threads: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let accept = {
            let (shared, threads) = (Arc::clone(&shared), Arc::clone(&threads));
            std::thread::spawn(move || {
                while !shared.stop.load(Ordering::SeqCst) {
                    let Ok((stream, _)) = listener.accept() else {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    };
                    let _ = stream.set_nonblocking(false);
                    let _ = stream.set_nodelay(true);
                    let shared = Arc::clone(&shared);
                    let handle = std::thread::spawn(move || serve(stream, &shared));
                    let mut threads = threads.lock().unwrap_or_else(|p| p.into_inner());
                    threads.retain(|t| !t.is_finished());
                    threads.push(handle);
                }
            })
        };
        FaultProxy { address, shared, threads, accept: Some(accept) }
    }

    /// The case's environment with every DynamoDB request going through this proxy.
    pub fn env(&self, case: &Case) -> BTreeMap<&'static str, String> {
        let mut env = case.env();
        env.insert("AWS_ENDPOINT_URL", self.address.clone());
        env
    }

    /// Every call so far with the name of its fault, in the order received.
    pub fn calls(&self) -> Vec<(Call, String)> {
        self.shared.calls.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The writes (every operation but `GetItem`, which a refused condition may bring on some emulators) made on
    /// `key`, in order.
    pub fn ops(&self, key: &str) -> Vec<Op> {
        self.calls().into_iter().filter(|(c, _)| c.key == key && c.op != Op::Get).map(|(c, _)| c.op).collect()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
        for thread in self.threads.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
            let _ = thread.join();
        }
        for thread in self.shared.late.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
            let _ = thread.join();
        }
    }
}

/// What a request is, from its target and body.
fn classify(request: &Seen) -> (Op, String) {
    let target = request.header("x-amz-target").unwrap_or_default();
    let body: Value = serde_json::from_str(&request.body).unwrap_or_default();
    let key = body["Key"]["key"]["S"].as_str().unwrap_or_default().to_owned();
    let condition = body["ConditionExpression"].as_str().unwrap_or_default();
    let update = body["UpdateExpression"].as_str().unwrap_or_default();
    let op = if target.ends_with(".GetItem") {
        Op::Get
    } else if !target.ends_with(".UpdateItem") {
        Op::Other
    } else if condition.contains("attribute_not_exists(#key)") {
        Op::Acquire
    } else if condition.starts_with("#owner = :me") && (update.contains(":zero") || update.contains(":until")) {
        Op::Release
    } else if condition.starts_with("#owner = :me") {
        Op::Renew
    } else {
        Op::Other
    };
    (op, key)
}

/// Sleeps `duration` in small steps; false when the proxy is stopping.
fn pause(shared: &Shared, duration: Duration) -> bool {
    let until = Instant::now() + duration;
    while Instant::now() < until {
        if shared.stop.load(Ordering::SeqCst) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

/// Closes `stream` with a TCP reset (SO_LINGER 0) once its last handle is dropped.
fn linger_zero(stream: &TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: setsockopt reads `size_of::<linger>()` bytes from a live local value; the fd is open.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

/// One client connection: request after request until the client closes it, a fault closes it, or the proxy
/// stops.
fn serve(stream: TcpStream, shared: &Arc<Shared>) {
    let Ok(mut writer) = stream.try_clone() else { return };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(100)));
    let mut reader = BufReader::new(stream);
    while !shared.stop.load(Ordering::SeqCst) {
        match reader.fill_buf() {
            Ok([]) => return,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => continue,
            Err(_) => return,
        }
        let _ = reader.get_ref().set_read_timeout(Some(Duration::from_secs(5)));
        let Some(request) = read_http_request(&mut reader) else { return };
        let _ = reader.get_ref().set_read_timeout(Some(Duration::from_millis(100)));
        let (op, key) = classify(&request);
        let nth = {
            let mut counts = shared.counts.lock().unwrap_or_else(|p| p.into_inner());
            let n = counts.entry((op, key.clone())).or_insert(0);
            *n += 1;
            *n
        };
        let call = Call { op, key, nth };
        let fault = (shared.plan.lock().unwrap_or_else(|p| p.into_inner()))(&call);
        shared.calls.lock().unwrap_or_else(|p| p.into_inner()).push((call, fault.name()));
        let written = match fault {
            Fault::Pass => write_answer(&mut writer, &forward(shared, &request)),
            Fault::Answer(answer) => write_answer(&mut writer, &answer),
            Fault::AnswerAfter(answer) => {
                forward(shared, &request);
                write_answer(&mut writer, &answer)
            }
            Fault::TruncateAfter => {
                let mut answer = forward(shared, &request);
                answer.body.truncate(answer.body.len() / 2);
                write_answer(&mut writer, &answer)
            }
            Fault::ResetBefore => {
                linger_zero(&writer);
                return;
            }
            Fault::ResetAfter => {
                forward(shared, &request);
                linger_zero(&writer);
                return;
            }
            Fault::WithholdAfter(duration) => {
                forward(shared, &request);
                pause(shared, duration);
                linger_zero(&writer);
                return;
            }
            Fault::Delay(duration) => {
                if !pause(shared, duration) {
                    return;
                }
                write_answer(&mut writer, &forward(shared, &request))
            }
            Fault::AnswerThenForward(answer, delay) => {
                // In a thread of its own: the client may send its next request on this connection meanwhile.
                let late = Arc::clone(shared);
                let handle = std::thread::spawn(move || {
                    if pause(&late, delay) {
                        forward(&late, &request);
                    }
                });
                shared.late.lock().unwrap_or_else(|p| p.into_inner()).push(handle);
                write_answer(&mut writer, &answer)
            }
            Fault::DripAfter(every) => {
                let answer = forward(shared, &request);
                drip(shared, &mut writer, &answer, every);
                return;
            }
        };
        if written.is_err() {
            return;
        }
    }
}

/// Sends `request` to the emulator; its status, content type, date and body.
fn forward(shared: &Shared, request: &Seen) -> Answer {
    let sent = send_on(&shared.http, &shared.upstream, request, Duration::from_secs(20), "the emulator (fault proxy)");
    match sent {
        Ok(response) => Answer {
            status: response.status,
            headers: response.headers.into_iter().filter(|(n, _)| n == "content-type" || n == "date").collect(),
            body: response.body.into_bytes(),
        },
        Err(e) => Answer::text(502, "text/plain", &format!("fault proxy: forwarding failed: {e}")),
    }
}

fn head(answer: &Answer) -> String {
    let mut text = format!("HTTP/1.1 {} Fault proxy\r\n", answer.status);
    for (name, value) in &answer.headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str(&format!("content-length: {}\r\n\r\n", answer.body.len()));
    text
}

fn write_answer(writer: &mut TcpStream, answer: &Answer) -> std::io::Result<()> {
    writer.write_all(head(answer).as_bytes())?;
    writer.write_all(&answer.body)?;
    writer.flush()
}

/// The head at once, then the body one byte per `every`, until the client goes or 30 s pass.
fn drip(shared: &Shared, writer: &mut TcpStream, answer: &Answer, every: Duration) {
    if writer.write_all(head(answer).as_bytes()).is_err() {
        return;
    }
    let until = Instant::now() + Duration::from_secs(30);
    for byte in &answer.body {
        if Instant::now() > until || !pause(shared, every) || writer.write_all(&[*byte]).is_err() {
            return;
        }
    }
}

/// A finished run measured: its outcome, how long it took, its peak resident set (KiB, `VmHWM` sampled every 5 ms).
pub struct Measured {
    /// The outcome.
    pub out: Outcome,
    /// From spawn to exit.
    pub took: Duration,
    /// The largest `VmHWM` seen, KiB.
    pub max_rss_kib: i64,
}

/// Runs `lock-exec ARGS...` with exactly `env` in the case's folder to its end, sampling its
/// peak memory every 5 ms; SIGKILLs it and fails the test after `limit`.
pub fn run_measured(case: &Case, args: &[&str], env: BTreeMap<&'static str, String>, limit: Duration) -> Measured {
    let started = Instant::now();
    let mut max_rss_kib = 0;
    let out = case.spawn_raw(args, env).wait_sampling(limit, Duration::from_millis(5), |pid| {
        // VmHWM is the peak of the process's own memory since its exec (the rusage of a reaped child would also
        // count the pages of this test process it was forked from). Until the exec, the child is a fork of this
        // test process (its pages): only lock-exec's own count.
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let execed = status.lines().any(|l| l.strip_prefix("Name:").is_some_and(|name| name.trim() == "lock-exec"));
        let hwm = status
            .lines()
            .filter(|_| execed)
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok());
        max_rss_kib = max_rss_kib.max(hwm.unwrap_or(0));
    });
    Measured { out, took: started.elapsed(), max_rss_kib }
}

/// A generous bound for every run here: a debug build of lock-exec peaks well under this (about 10 MiB).
const MAX_RSS_KIB: i64 = 64 * 1024;
/// A generous bound for runs whose faults cost at most a few seconds.
const QUICK: Duration = Duration::from_secs(20);

/// Runs each `(key, args)` at once (`-t TABLE ARGS...` through the proxy), waits for all; in the same order.
fn run_all(case: &Case, proxy: &FaultProxy, runs: &[(&str, Vec<&str>)], limit: Duration) -> Vec<Measured> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = runs
            .iter()
            .map(|(_, args)| {
                let mut full = vec!["-t", case.table()];
                full.extend_from_slice(args);
                let env = proxy.env(case);
                scope.spawn(move || run_measured(case, &full, env, limit))
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("a run thread panicked")).collect()
    })
}

/// Fails unless the run stayed under the memory and time bounds and did not panic.
#[track_caller]
fn expect_bounded(what: &str, run: &Measured, limit: Duration) {
    let out = &run.out;
    out.check(
        &format!("{what}: peak RSS (KiB) under {MAX_RSS_KIB}"),
        (true, run.max_rss_kib),
        (run.max_rss_kib < MAX_RSS_KIB, run.max_rss_kib),
    );
    out.check(&format!("{what}: ended within {limit:?}"), true, run.took < limit);
    out.check(&format!("{what}: no panic"), false, out.stderr.contains("panicked"));
}

/// `run KEY -- sh -c 'echo ran'`
/// A proxy that gives each key's fault (from `faults`) to the calls `applies` picks, and passes every other call.
fn proxy_faulting<'a>(
    faults: impl IntoIterator<Item = (&'a str, &'a Fault)>,
    applies: fn(&Call) -> bool,
) -> FaultProxy {
    let plan: BTreeMap<String, Fault> =
        faults.into_iter().map(|(key, fault)| (key.to_owned(), fault.clone())).collect();
    FaultProxy::start(move |call| match plan.get(&call.key) {
        Some(fault) if applies(call) => fault.clone(),
        _ => Fault::Pass,
    })
}

fn echo_run(key: &str) -> Vec<&str> {
    vec!["run", key, "--", "sh", "-c", "echo ran"]
}

/// A fault on the first acquire of each key is retried, and the retry takes the lock (also when the first write
/// was applied and its answer lost, through `#owner = :me`): the command runs once and the lock is released.
#[test]
fn transient_faults_of_the_acquire_are_retried_and_the_command_runs_once() {
    let case = Case::new("faults_transient_acquire");
    let truncated_500 = r#"{"__type":"com.amazonaws.dynamodb.v20120810#InternalServerError","mess"#;
    let faults: Vec<(&str, Fault)> = vec![
        ("status-500", Fault::Answer(Answer::error(500, "InternalServerError"))),
        ("status-503", Fault::Answer(Answer::error(503, "ServiceUnavailable"))),
        ("throttling", Fault::Answer(Answer::error(400, "ThrottlingException"))),
        ("provisioned", Fault::Answer(Answer::error(400, "ProvisionedThroughputExceededException"))),
        ("reset-before", Fault::ResetBefore),
        ("reset-after", Fault::ResetAfter),
        (
            "html-502",
            Fault::Answer(Answer::text(502, "text/html", "<html><body><h1>502 Bad Gateway</h1></body></html>")),
        ),
        ("empty-500", Fault::Answer(Answer::text(500, "text/plain", ""))),
        ("truncated-500", Fault::Answer(Answer::text(500, "application/x-amz-json-1.0", truncated_500))),
        ("huge-200-after", Fault::AnswerAfter(Answer::huge(200, 10 * 1024 * 1024))),
        ("huge-500", Fault::Answer(Answer::huge(500, 10 * 1024 * 1024))),
    ];
    let proxy =
        proxy_faulting(faults.iter().map(|(key, fault)| (*key, fault)), |call| call.op == Op::Acquire && call.nth == 1);
    let runs: Vec<(&str, Vec<&str>)> = faults.iter().map(|(key, _)| (*key, echo_run(key))).collect();
    let results = run_all(&case, &proxy, &runs, QUICK);
    for ((key, _), run) in faults.iter().zip(&results) {
        let out = &run.out;
        expect_bounded(key, run, QUICK);
        out.expect_code(0);
        out.check(&format!("{key}: the command ran once"), "ran\n", out.stdout.as_str());
        out.check(&format!("{key}: requests"), vec![Op::Acquire, Op::Acquire, Op::Release], proxy.ops(key));
        let item = case.item(key).unwrap_or_else(|| out.fail("no item", &"an item", &"none"));
        out.check(&format!("{key}: released"), (None, 0), (item.owner, item.expire_ns));
    }
    let huge = &results[faults.len() - 2];
    eprintln!("a 10 MB acquire answer: peak RSS {} KiB, {:?}", huge.max_rss_kib, huge.took);
}

/// An error answer that says the request was refused is not retried, and nothing is cleaned up after it (it
/// changed nothing): one request, a clear error with the status, the documented exit code.
#[test]
fn definite_rejections_are_not_retried() {
    let case = Case::new("faults_definite");
    let xml = "<?xml version=\"1.0\"?><ErrorResponse><Error><Code>AccessDeniedException</Code>\
               <Message>User: arn:aws:iam::123456789012:user/x is not authorized</Message></Error></ErrorResponse>";
    let faults: Vec<(&str, Fault, i32, &str)> = vec![
        ("xml-403", Fault::Answer(Answer::text(403, "text/xml", xml)), 77, "HTTP 403 AccessDeniedException"),
        (
            "html-403",
            Fault::Answer(Answer::text(403, "text/html", "<html><body>Forbidden</body></html>")),
            77,
            "HTTP 403",
        ),
        (
            "truncated-400",
            Fault::Answer(Answer::text(400, "application/x-amz-json-1.0", r#"{"__type":"com.amazonaws.dynamo"#)),
            70,
            "HTTP 400",
        ),
        ("unknown-400", Fault::Answer(Answer::error(400, "SomethingNewException")), 70, "SomethingNewException"),
    ];
    let proxy = proxy_faulting(faults.iter().map(|(key, fault, ..)| (*key, fault)), |_| true);
    let marker = case.marker_script();
    let runs: Vec<(&str, Vec<&str>)> =
        faults.iter().map(|(key, ..)| (*key, vec!["run", key, "--", "sh", "-c", marker.as_str()])).collect();
    let results = run_all(&case, &proxy, &runs, QUICK);
    for ((key, _, code, says), run) in faults.iter().zip(&results) {
        let out = &run.out;
        expect_bounded(key, run, QUICK);
        out.expect_code(*code);
        out.expect_stderr_contains(says);
        out.check(&format!("{key}: one request, no retry, no cleanup"), vec![Op::Acquire], proxy.ops(key));
    }
    results[0].out.check("the command ran", false, case.exists("marker"));
}

/// A fault on every attempt: exit 69 within the retries' time. A write that reached the emulator every time
/// (answers lost) is cleared by the owner-conditioned cleanup, so the next run takes the key at once; a throttled
/// acquire changed nothing and gets no cleanup.
#[test]
fn persistent_faults_exit_69_in_bounded_time_and_leave_the_key_free() {
    let case = Case::new("faults_persistent");
    let faults: Vec<(&str, Fault, Vec<Op>)> = vec![
        (
            "always-503",
            Fault::Answer(Answer::error(503, "ServiceUnavailable")),
            vec![Op::Acquire, Op::Acquire, Op::Acquire, Op::Release],
        ),
        ("always-reset-after", Fault::ResetAfter, vec![Op::Acquire, Op::Acquire, Op::Acquire, Op::Release]),
        (
            "always-throttled",
            Fault::Answer(Answer::error(400, "ProvisionedThroughputExceededException")),
            vec![Op::Acquire, Op::Acquire, Op::Acquire],
        ),
    ];
    let proxy = proxy_faulting(faults.iter().map(|(key, fault, _)| (*key, fault)), |call| call.op == Op::Acquire);
    let marker = case.marker_script();
    let runs: Vec<(&str, Vec<&str>)> =
        faults.iter().map(|(key, ..)| (*key, vec!["run", key, "--", "sh", "-c", marker.as_str()])).collect();
    let results = run_all(&case, &proxy, &runs, QUICK);
    for ((key, _, ops), run) in faults.iter().zip(&results) {
        let out = &run.out;
        expect_bounded(key, run, QUICK);
        out.expect_code(69);
        out.check(&format!("{key}: requests"), ops.clone(), proxy.ops(key));
        let owner = case.item(key).and_then(|item| item.owner);
        out.check(&format!("{key}: no owner left on the item"), None, owner);
        // The key is free at once: a direct run takes it.
        let next = case.run(&["run", key, "--locked-exit-code", "9", "--", "sh", "-c", "echo ran"]);
        next.expect_code(0);
    }
    results[0].out.check("the command ran", false, case.exists("marker"));
}

/// The emulator applied the acquire, and its 200 answer cannot be read (cut short, or without the fence): the
/// run exits 70 without running the command, and does not leave the key locked for a whole lease.
#[test]
fn an_unreadable_200_acquire_answer_does_not_leave_the_key_locked() {
    let case = Case::new("faults_unreadable_200");
    let faults: Vec<(&str, Fault)> = vec![
        ("truncated-200", Fault::TruncateAfter),
        ("no-fence-200", Fault::AnswerAfter(Answer::text(200, "application/x-amz-json-1.0", "{}"))),
    ];
    let proxy = proxy_faulting(faults.iter().map(|(key, fault)| (*key, fault)), |call| call.op == Op::Acquire);
    let marker = case.marker_script();
    let runs: Vec<(&str, Vec<&str>)> =
        faults.iter().map(|(key, _)| (*key, vec!["run", key, "--", "sh", "-c", marker.as_str()])).collect();
    let results = run_all(&case, &proxy, &runs, QUICK);
    for ((key, _), run) in faults.iter().zip(&results) {
        let out = &run.out;
        expect_bounded(key, run, QUICK);
        out.expect_code(70);
        let item = case.item(key).unwrap_or_else(|| out.fail("no item", &"the item the acquire wrote", &"none"));
        out.check(&format!("{key}: the item the acquire wrote is not held"), (None, 0), (item.owner, item.expire_ns));
    }
    results[0].out.check("the command ran", false, case.exists("marker"));
}

/// Answers slower than the client's 5 s timeout (withheld, dripping, or the request itself held back and
/// delivered late): the attempt times out, the retry takes the lock through the owner condition, the command
/// runs once.
#[test]
fn answers_slower_than_the_client_timeout_are_retried() {
    let case = Case::new("faults_slow");
    let faults: Vec<(&str, Fault)> = vec![
        ("withheld", Fault::WithholdAfter(Duration::from_secs(8))),
        ("drip", Fault::DripAfter(Duration::from_millis(400))),
        ("delayed", Fault::Delay(Duration::from_secs(6))),
    ];
    let proxy =
        proxy_faulting(faults.iter().map(|(key, fault)| (*key, fault)), |call| call.op == Op::Acquire && call.nth == 1);
    let runs: Vec<(&str, Vec<&str>)> = faults.iter().map(|(key, _)| (*key, echo_run(key))).collect();
    let results = run_all(&case, &proxy, &runs, QUICK);
    for ((key, _), run) in faults.iter().zip(&results) {
        let out = &run.out;
        expect_bounded(key, run, QUICK);
        out.expect_code(0);
        out.check(&format!("{key}: the command ran once"), "ran\n", out.stdout.as_str());
        out.check(&format!("{key}: at least 5 s (one timeout)"), true, run.took >= Duration::from_secs(5));
    }
}

/// A fault on one renewal: a warning, the next renewal keeps the lock, the command completes, exit 0.
#[test]
fn a_failed_renewal_is_survived() {
    let case = Case::new("faults_renewal");
    let faults: Vec<(&str, Fault)> = vec![
        ("renew-500", Fault::Answer(Answer::error(500, "InternalServerError"))),
        ("renew-throttled", Fault::Answer(Answer::error(400, "ThrottlingException"))),
        ("renew-reset-after", Fault::ResetAfter),
        ("renew-huge", Fault::AnswerAfter(Answer::huge(200, 10 * 1024 * 1024))),
        ("renew-truncated", Fault::TruncateAfter),
        ("renew-html", Fault::Answer(Answer::text(502, "text/html", "<html>Bad Gateway</html>"))),
    ];
    let proxy =
        proxy_faulting(faults.iter().map(|(key, fault)| (*key, fault)), |call| call.op == Op::Renew && call.nth == 1);
    // -e 3s: renewals every second; the command outlives four of them.
    let runs: Vec<(&str, Vec<&str>)> = faults
        .iter()
        .map(|(key, _)| (*key, vec!["run", key, "-e", "3s", "--", "sh", "-c", "sleep 4.5; echo ran"]))
        .collect();
    let results = run_all(&case, &proxy, &runs, QUICK);
    for ((key, _), run) in faults.iter().zip(&results) {
        let out = &run.out;
        expect_bounded(key, run, QUICK);
        out.expect_code(0);
        out.check(&format!("{key}: the command completed"), "ran\n", out.stdout.as_str());
        out.check(&format!("{key}: the failure was a warning"), true, out.has_log("lock renewal failed; retrying"));
        out.check(&format!("{key}: no lost lock"), false, out.has_log("lock lost"));
        let renewals = proxy.ops(key).iter().filter(|op| **op == Op::Renew).count();
        out.check(&format!("{key}: renewals went on after the fault"), true, renewals >= 3);
        out.check(&format!("{key}: released"), None, case.item(key).and_then(|item| item.owner));
    }
}

/// The release reached the emulator and its answer was lost (reset, or withheld past the timeout): the retry
/// finds the item free, says so, and the exit code is the command's. A release refused every time is logged and
/// the lock frees itself at its lease end, not later.
#[test]
fn release_faults_end_with_the_command_s_exit_code() {
    let case = Case::new("faults_release");
    let faults: Vec<(&str, Fault, &str)> = vec![
        ("release-reset-after", Fault::ResetAfter, "lock already released"),
        ("release-withheld", Fault::WithholdAfter(Duration::from_secs(8)), "lock already released"),
        (
            "release-always-503",
            Fault::Answer(Answer::error(503, "ServiceUnavailable")),
            "lock release failed; the lock frees itself when its lease ends",
        ),
    ];
    let plan_faults: BTreeMap<String, Fault> = faults.iter().map(|(k, f, _)| ((*k).to_owned(), f.clone())).collect();
    let proxy = FaultProxy::start(move |call| match plan_faults.get(&call.key) {
        Some(Fault::Answer(answer)) if call.op == Op::Release => Fault::Answer(answer.clone()),
        Some(fault) if call.op == Op::Release && call.nth == 1 => fault.clone(),
        _ => Fault::Pass,
    });
    let runs: Vec<(&str, Vec<&str>)> =
        faults.iter().map(|(key, ..)| (*key, vec!["run", key, "-e", "5s", "--", "sh", "-c", "exit 3"])).collect();
    let started_ns = now_ns();
    let results = run_all(&case, &proxy, &runs, QUICK);
    for ((key, _, says), run) in faults.iter().zip(&results) {
        let out = &run.out;
        expect_bounded(key, run, QUICK);
        out.expect_code(3);
        out.check(&format!("{key}: the release's outcome"), true, out.has_log(says));
        let item = case.item(key).unwrap_or_else(|| out.fail("no item", &"an item", &"none"));
        if key.contains("always") {
            // Still held by the gone run, but only until its lease end.
            out.check(
                &format!("{key}: lease end within 5 s of the start"),
                true,
                item.expire_ns <= started_ns + 6_000_000_000,
            );
        } else {
            out.check(&format!("{key}: released"), (None, 0), (item.owner, item.expire_ns));
        }
    }
}

/// A renewal whose write lands after later renewals were confirmed must not move the lease end back: the holder
/// counts on the later end, a contender would believe the earlier one, and both would run. The holder runs
/// `-e 3s`; its first renewal (at ~1 s, lease end ~4 s) is answered 500 at once and delivered to the emulator
/// 2.7 s later, after the renewals of ~1.4, ~2.4 and ~3.4 s (lease end ~6.4 s) were confirmed. A contender polls the
/// item meanwhile and takes the lock as soon as the emulator says it is free: that must be after the holder's
/// command completed.
#[test]
fn a_renewal_delivered_late_does_not_shorten_the_lease() {
    late_write_does_not_shorten_the_lease("faults_late_renewal", Op::Renew, Duration::from_millis(2700));
}

/// The same for the holder's own first acquire attempt: answered 500 at once (so the retry takes the lock) and
/// delivered 3.3 s later, after renewals; `#owner = :me` must not let it set the first lease end (3 s) again.
/// (Found by the chaos race on dynalite.)
#[test]
fn an_acquire_attempt_delivered_late_does_not_shorten_the_lease() {
    late_write_does_not_shorten_the_lease("faults_late_acquire", Op::Acquire, Duration::from_millis(3300));
}

/// The holder runs `-e 3s` for 6 s; the first `op` it sends is answered 500 at once and delivered `delay` later. A
/// contender polls with a library-level acquire every 20 ms and must get the lock only after the command
/// completed.
fn late_write_does_not_shorten_the_lease(test: &str, op: Op, delay: Duration) {
    let case = Case::new(test);
    let key = "late";
    let proxy = FaultProxy::start(move |call| {
        if call.op == op && call.nth == 1 {
            Fault::AnswerThenForward(Answer::error(500, "InternalServerError"), delay)
        } else {
            Fault::Pass
        }
    });
    let started = case.file("started");
    let ended = case.file("ended");
    let script = format!("date +%s%N > {started}; sleep 6; date +%s%N > {ended}");
    let args = ["-t", case.table(), "run", key, "-e", "3s", "--", "sh", "-c", &script];
    let mut running = case.spawn_raw(&args, proxy.env(&case));
    running.wait_for_line(&case.path("started"), Duration::from_secs(20));
    // From 1 s after the start until the holder is done: the contender's library-level acquire, every 20 ms.
    let contender = owner("contender", 1);
    let deadline = Instant::now() + Duration::from_secs(9);
    let mut taken_at = None;
    while Instant::now() < deadline && taken_at.is_none() {
        let terms = lock::Terms {
            now: lock_exec::Env::real().now(),
            lease: Duration::from_secs(30),
            retain: Duration::from_secs(3600),
            max_clock_skew: Duration::ZERO,
            reclaim: true,
        };
        let attempt = lock::acquire(&client(), case.table(), key, &contender, &terms);
        if let Ok(lock::Acquire::Acquired(_)) = attempt {
            taken_at = Some(now_ns());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = running.wait(Duration::from_secs(20));
    let read_ns = |path: &str| std::fs::read_to_string(path).ok().and_then(|t| t.trim().parse::<i128>().ok());
    let command_end = read_ns(&ended);
    let taken = taken_at.unwrap_or_else(|| out.fail("the contender never got the lock", &"after the holder", &"never"));
    // The command writes its end only when it completes: stopped early (a lost lock), it has none.
    out.check(
        "the holder's command completed before the contender took the lock",
        true,
        command_end.is_some_and(|end| end <= taken),
    );
    out.expect_code(0);
}

/// `--wait` rides out a DynamoDB outage: a try that fails with a retryable error (here every request answered 503
/// for three seconds) is a warning and the run tries again until the wait is over, as issue 8 has it ("keep trying
/// until acquired or DURATION has passed"). Before, the first such failure ended the wait with exit 69.
#[test]
fn wait_tries_again_after_an_outage_until_the_key_is_free() {
    let case = Case::new("wait_outage");
    let mut holder =
        case.spawn(&["run", "k", "-e", "3s", "--", "sh", "-c", &case.holding_script("started", "release")]);
    holder.wait_for_line(&case.path("started"), Duration::from_secs(20));
    let outage = Arc::new(Mutex::new(None::<(Instant, Instant)>));
    let window = Arc::clone(&outage);
    let proxy = FaultProxy::start(move |_| {
        let now = Instant::now();
        match *window.lock().unwrap_or_else(|p| p.into_inner()) {
            Some((from, to)) if from <= now && now < to => Fault::Answer(Answer::error(503, "ServiceUnavailable")),
            _ => Fault::Pass,
        }
    });
    let marker = case.marker_script();
    let args = ["-t", case.table(), "-v", "run", "k", "--wait", "30s", "--", "sh", "-c", &marker];
    // Nothing answers for 3 s from the waiter's start (its first try fails), then the key is found held, then
    // the holder lets go.
    let from = Instant::now();
    *outage.lock().unwrap_or_else(|p| p.into_inner()) = Some((from, from + Duration::from_secs(3)));
    let waiter = case.spawn_raw(&args, proxy.env(&case));
    std::thread::sleep(Duration::from_secs(5));
    case.release("release");
    holder.wait(Duration::from_secs(20)).expect_code(0);
    let out = waiter.wait(Duration::from_secs(40));
    out.expect_code(0);
    out.check("the command ran", true, case.exists("marker"));
    let failed = proxy.calls().iter().filter(|(_, fault)| fault.starts_with("answer 503")).count();
    out.check("the outage met some tries", true, failed > 0);
    out.check("each failed try was a warning", true, out.has_log("cannot acquire the lock; trying again"));
    out.check("the held key was announced after the failed first try", true, out.has_log("waiting for lock"));
}

/// A `--wait` whose tries all took the lock but lost their answers (a 503 after the write) ends at its deadline
/// with exit 69, without running the command, and clears the lock those writes took: the key is not left held by
/// a run that is gone.
#[test]
fn a_wait_that_ends_in_an_outage_clears_what_its_lost_answers_took() {
    let case = Case::new("wait_outage_cleanup");
    let proxy = FaultProxy::start(|call| match call.op {
        Op::Acquire => Fault::AnswerAfter(Answer::error(503, "ServiceUnavailable")),
        _ => Fault::Pass,
    });
    let marker = case.marker_script();
    let args = ["-t", case.table(), "run", "k", "--wait", "3s", "--", "sh", "-c", &marker];
    let out = case.spawn_raw(&args, proxy.env(&case)).wait(Duration::from_secs(40));
    out.expect_code(69);
    out.check("the command ran", false, case.exists("marker"));
    // "trying again", or on a slow machine only the last try's "giving up at the --wait deadline".
    let warned = out.messages().iter().any(|m| m.starts_with("cannot acquire the lock; "));
    out.check("the failed tries were warnings", true, warned);
    let releases = proxy.ops("k").iter().filter(|op| **op == Op::Release).count();
    out.check("one cleanup release, at the end", 1, releases);
    let item = case.item("k").unwrap_or_else(|| out.fail("the item", &"written by the tries", &"missing"));
    out.check("the key is free again (owner)", None, item.owner);
    out.check("the key is free again (lease end)", true, item.expire_ns < now_ns());
}

/// `--limit 2 --wait`: the first try's writes land on a slot but their answers are lost; a later try takes a
/// slot and runs. The slot the lost answers took must not stay held by the run once it is over: the next try goes
/// to that slot first and takes it back. Before, the retry's random order often took the other slot and left the
/// first held for a whole lease (`-e 10m` here), by a process that had exited.
#[test]
fn a_limit_wait_takes_back_the_slot_a_lost_answer_took() {
    for round in 0..4 {
        let case = Case::new(&format!("limit_wait_unsure_{round}"));
        let mut faulty: Option<String> = None;
        let proxy = FaultProxy::start(move |call| {
            if call.op != Op::Acquire {
                return Fault::Pass;
            }
            let first = faulty.get_or_insert_with(|| call.key.clone());
            if *first == call.key && call.nth <= 3 { Fault::ResetAfter } else { Fault::Pass }
        });
        let marker = case.marker_script();
        let args =
            ["-t", case.table(), "run", "k", "-e", "10m", "--limit", "2", "--wait", "20s", "--", "sh", "-c", &marker];
        let out = case.spawn_raw(&args, proxy.env(&case)).wait(Duration::from_secs(40));
        out.expect_code(0);
        out.check("the command ran", true, case.exists("marker"));
        for slot in ["k#0", "k#1"] {
            let held = case.item(slot).is_some_and(|item| item.owner.is_some() || item.expire_ns > now_ns());
            out.check(&format!("round {round}: {slot} held after the run"), false, held);
        }
    }
}

/// A stop signal while a `--wait` retry is out, after an earlier try's answer was lost: one cleanup of both within
/// the one budget, so lock-exec is gone within about a second (README: "Before the command starts"), and the key
/// the lost answer took is free again. Before, two cleanups of 900 ms each ran one after the other.
#[test]
fn a_stop_signal_during_a_retry_clears_everything_within_one_budget() {
    let case = Case::new("wait_signal_unsure");
    // Every release's answer is withheld too (the write lands): each cleanup waits out its whole budget.
    let proxy = FaultProxy::start(|call| match (call.op, call.nth) {
        (Op::Acquire, 1..=3) => Fault::ResetAfter,
        (Op::Acquire | Op::Release, _) => Fault::WithholdAfter(Duration::from_secs(20)),
        _ => Fault::Pass,
    });
    let marker = case.marker_script();
    let args = ["-t", case.table(), "run", "k", "--wait", "30s", "--", "sh", "-c", &marker];
    let running = case.spawn_raw(&args, proxy.env(&case));
    let retry_out = || proxy.calls().iter().any(|(call, _)| call.op == Op::Acquire && call.nth >= 4);
    if !crate::support::eventually(Duration::from_secs(20), retry_out) {
        panic!("no retry went out\n{}", running.stderr_so_far());
    }
    std::thread::sleep(Duration::from_millis(200));
    let signalled = Instant::now();
    crate::support::signal(running.pid(), libc::SIGTERM);
    let out = running.wait(Duration::from_secs(20));
    let took = signalled.elapsed();
    out.expect_death_by(libc::SIGTERM);
    out.check("gone within 1.2 s of the signal", true, took < Duration::from_millis(1200));
    out.check("the command ran", false, case.exists("marker"));
    let item = case.item("k").unwrap_or_else(|| out.fail("the item", &"written by the lost answers", &"missing"));
    out.check("the key is free again", None, item.owner);
}

/// A `--wait` that found the key held, whose last try then fails (throttled): it ends as locked, with the locked
/// exit code and the `did not run` line, as a wait that runs out does, not with exit 69.
#[test]
fn a_wait_that_saw_the_key_held_ends_locked_even_if_its_last_try_fails() {
    let case = Case::new("wait_last_try_fails");
    let mut holder = case.spawn(&["run", "k", "--", "sh", "-c", &case.holding_script("started", "release")]);
    holder.wait_for_line(&case.path("started"), Duration::from_secs(20));
    let answer = Answer::error(400, "ThrottlingException");
    let out = wait_through_failing_acquires(&case, Duration::from_millis(1500), answer, "4s");
    case.release("release");
    holder.wait(Duration::from_secs(20)).expect_code(0);
    out.expect_code(3);
    out.check("announced", true, out.has_log("waiting for lock"));
    out.check("did not run", true, out.has_log("did not run command. key is locked"));
}

/// A `--wait` that found the key held by a holder that then crashed, and whose tries fail from then on: the
/// holder's lease has run out by the deadline, so the wait ends with the failure (exit 69), not as locked: a
/// locked exit (0 by default) would pass for a skipped run while nobody ran the job.
#[test]
fn a_wait_whose_holder_lapsed_during_an_outage_ends_unreachable_not_locked() {
    let case = Case::new("wait_holder_lapsed");
    let mut holder =
        case.spawn(&["run", "k", "-e", "3s", "--", "sh", "-c", &case.holding_script("started", "release")]);
    holder.wait_for_line(&case.path("started"), Duration::from_secs(20));
    crate::support::signal(holder.pid(), libc::SIGKILL);
    holder.wait(Duration::from_secs(20)).expect_death_by(libc::SIGKILL);
    let out =
        wait_through_failing_acquires(&case, Duration::from_millis(1200), Answer::error(503, "Unavailable"), "8s");
    out.expect_code(69);
    out.check("announced while the holder was seen", true, out.has_log("waiting for lock"));
    out.check("no 'did not run' for a lapsed holder", false, out.has_log("did not run command. key is locked"));
}

/// `run k --wait WAIT --locked-exit-code 3 -- true` through a proxy that passes everything until `after` from now,
/// then answers every acquire with `answer`.
fn wait_through_failing_acquires(case: &Case, after: Duration, answer: Answer, wait: &str) -> Outcome {
    let started = Instant::now();
    let proxy = FaultProxy::start(move |call| match call.op {
        Op::Acquire if started.elapsed() > after => Fault::Answer(answer.clone()),
        _ => Fault::Pass,
    });
    let args = ["-t", case.table(), "run", "k", "--wait", wait, "--locked-exit-code", "3", "--", "true"];
    case.spawn_raw(&args, proxy.env(case)).wait(Duration::from_secs(40))
}

/// A stop signal that comes while a `--wait` clears what its lost answers took, after its last try failed at the
/// deadline with nobody seen holding the key: lock-exec ends by the signal, as the README says, not with exit 69.
#[test]
fn a_stop_signal_during_the_final_cleanup_ends_lock_exec_by_it() {
    let case = Case::new("wait_signal_final_cleanup");
    // Every acquire is forwarded and its answer withheld (outcome unknown); so is the cleanup's.
    let proxy = FaultProxy::start(|call| match call.op {
        Op::Acquire | Op::Release => Fault::WithholdAfter(Duration::from_secs(30)),
        _ => Fault::Pass,
    });
    let mut env = proxy.env(&case);
    env.insert("AWS_MAX_ATTEMPTS", "1".into());
    let args = ["-t", case.table(), "run", "k", "--wait", "1s", "--", "true"];
    let running = case.spawn_raw(&args, env);
    let cleanup_out = || proxy.calls().iter().any(|(call, _)| call.op == Op::Release);
    if !crate::support::eventually(Duration::from_secs(30), cleanup_out) {
        panic!("no cleanup went out\n{}", running.stderr_so_far());
    }
    crate::support::signal(running.pid(), libc::SIGTERM);
    let out = running.wait(Duration::from_secs(30));
    out.expect_death_by(libc::SIGTERM);
}
