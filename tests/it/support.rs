//! Helpers for the integration tests: the emulator endpoint, a table and a temp folder per test, the built
//! binary spawned with a clean environment, its JSON log lines, and polling with deadlines.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use lock_exec::Env;
use lock_exec::aws::credentials::{Cache, Context, Credentials, Source};
use lock_exec::aws::http::Http;
use lock_exec::aws::profile::ProfileSet;
use lock_exec::cli::{LogFormat, Verbosity};
use lock_exec::dynamodb::Client;
use lock_exec::lock::{self, Item, Owner};
use lock_exec::log::Logger;
use serde_json::{Value, json};

/// The region every test signs for.
pub const REGION: &str = "us-east-1";
/// The fake access key the tests hand out.
pub const ACCESS_KEY_ID: &str = "AKIDLOCKEXECTEST";
/// The fake secret key; it must never show up in any output.
pub const SECRET_ACCESS_KEY: &str = "it-secret-key-never-printed-0123456789";

/// Names unique within this test process (the pid makes them unique across processes).
fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let clean: String =
        prefix.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '-' }).take(150).collect();
    format!("{clean}-{}-{n}", std::process::id())
}

/// What the library-level client borrows: kept for the whole test process.
struct Library {
    env: Env,
    http: Http,
    credentials: Cache,
    endpoint: String,
    profiles: ProfileSet,
}

fn library() -> &'static Library {
    static LIBRARY: OnceLock<Library> = OnceLock::new();
    LIBRARY.get_or_init(|| {
        let endpoint = Env::real().var("LOCK_EXEC_TEST_ENDPOINT").unwrap_or_else(|| {
            panic!(
                "LOCK_EXEC_TEST_ENDPOINT is not set: the integration tests need a DynamoDB emulator; run them \
                 with scripts/test.sh, which starts one on 127.0.0.1 and sets the variable"
            )
        });
        assert!(
            endpoint.starts_with("http://127.0.0.1:"),
            "LOCK_EXEC_TEST_ENDPOINT={endpoint:?}: the tests only talk to a server on 127.0.0.1"
        );
        let credentials = Credentials::new(ACCESS_KEY_ID, SECRET_ACCESS_KEY, None, None, "integration tests");
        let library = Library {
            env: Env::from_pairs::<&str, &str>(&[]),
            http: Http::new(),
            profiles: ProfileSet::default(),
            credentials: Cache::new(Source::Static { name: "integration tests", credentials }),
            endpoint: endpoint.clone(),
        };
        let probe = client_of(&library).call("ListTables", &json!({}));
        if let Err(e) = probe {
            panic!(
                "the DynamoDB emulator at LOCK_EXEC_TEST_ENDPOINT={endpoint} does not answer ListTables: {}\n\
                 (start it with scripts/test.sh)",
                lock_exec::error_chain(&e)
            );
        }
        library
    })
}

fn client_of(library: &Library) -> Client<'_> {
    Client {
        timeout: Duration::from_secs(10),
        ..Client::new(
            Context { env: &library.env, http: &library.http, profiles: &library.profiles, region: REGION },
            &library.credentials,
            library.endpoint.clone(),
            Logger::new(LogFormat::Json, Verbosity::Quiet.level()),
        )
    }
}

/// The emulator's URL from `LOCK_EXEC_TEST_ENDPOINT`; panics when it is unset or the server does not answer.
pub fn endpoint() -> &'static str {
    &library().endpoint
}

/// A library-level DynamoDB client for the emulator.
pub fn client() -> Client<'static> {
    client_of(library())
}

/// Unix nanoseconds now, from the real clock.
pub fn now_ns() -> i128 {
    lock::unix_ns(Env::real().now())
}

/// This machine's host name as lock-exec records it.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_owned()).expect("Linux host name")
}

/// An owner for library-level calls.
pub fn owner(host: &str, pid: u32) -> Owner {
    Owner { token: lock_exec::random::token128(), id: None, host: host.into(), pid, command: "integration test".into() }
}

/// Waits until a new table is ACTIVE: DynamoDB (and dynalite) create tables asynchronously, and item
/// operations on a CREATING table fail with ResourceNotFoundException.
pub fn wait_until_active(client: &Client<'_>, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = client
            .call("DescribeTable", &json!({ "TableName": name }))
            .map(|answer| answer["Table"]["TableStatus"].as_str().unwrap_or_default().to_owned());
        match status {
            Ok(status) if status == "ACTIVE" => return,
            _ if Instant::now() > deadline => panic!("table {name} not ACTIVE after 20 s: {status:?}"),
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// The `CreateTable` request for a lock table named `name`: partition key `key` (S), as the README describes.
pub fn create_table_request(name: &str) -> Value {
    json!({
        "TableName": name,
        "KeySchema": [{ "AttributeName": "key", "KeyType": "HASH" }],
        "AttributeDefinitions": [{ "AttributeName": "key", "AttributeType": "S" }],
        "BillingMode": "PAY_PER_REQUEST",
    })
}

/// A lock table made for one test, deleted when dropped.
pub struct Table {
    /// The table name.
    pub name: String,
    /// False for a table on another emulator ([`Case::with_table_name`]): not deleted on drop.
    delete_on_drop: bool,
}

impl Table {
    /// Creates a table with partition key `key` (S), as the README describes.
    pub fn create(test: &str) -> Table {
        let name = unique(&format!("it-{test}"));
        if let Err(e) = client().call("CreateTable", &create_table_request(&name)) {
            panic!("CreateTable {name}: {}", lock_exec::error_chain(&e));
        }
        wait_until_active(&client(), &name);
        Table { name, delete_on_drop: true }
    }
}

impl Drop for Table {
    fn drop(&mut self) {
        if !self.delete_on_drop {
            return;
        }
        let _ = client().call("DeleteTable", &json!({ "TableName": self.name }));
    }
}

/// A folder under the system temp dir, removed when dropped.
pub struct TempDir {
    /// The folder.
    pub path: PathBuf,
}

impl TempDir {
    /// Creates a fresh folder.
    pub fn new(test: &str) -> TempDir {
        let path = std::env::temp_dir().join(unique(&format!("lock-exec-it-{test}")));
        std::fs::create_dir_all(&path).expect("create a temp dir");
        TempDir { path }
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// One test's world: its table, its temp folder (also the child's working directory and `HOME`).
pub struct Case {
    /// The table.
    pub table: Table,
    /// The temp folder.
    pub dir: TempDir,
    spawned: AtomicU32,
}

impl Case {
    /// A table and a temp folder for `test`.
    pub fn new(test: &str) -> Case {
        default_signal_actions();
        let case = Case { table: Table::create(test), dir: TempDir::new(test), spawned: AtomicU32::new(0) };
        std::fs::create_dir_all(case.home()).expect("create the test HOME");
        case
    }

    /// The table name.
    pub fn table(&self) -> &str {
        &self.table.name
    }

    /// A path inside the temp folder.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path.join(name)
    }

    /// A path inside the temp folder, as text for shell scripts.
    pub fn file(&self, name: &str) -> String {
        self.path(name).to_str().expect("temp paths are UTF-8").to_owned()
    }

    /// The empty `HOME` the binary gets (no ~/.aws).
    pub fn home(&self) -> PathBuf {
        self.path("home")
    }

    /// The environment the binary gets: fake keys, the region, the emulator, no IMDS, PATH, an empty HOME.
    pub fn env(&self) -> BTreeMap<&'static str, String> {
        let path = Env::real().var("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
        BTreeMap::from([
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID.to_owned()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY.to_owned()),
            ("AWS_REGION", REGION.to_owned()),
            ("AWS_ENDPOINT_URL", endpoint().to_owned()),
            ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
            ("PATH", path),
            ("HOME", self.home().to_str().expect("temp paths are UTF-8").to_owned()),
        ])
    }

    /// Starts `lock-exec -t TABLE ARGS...`.
    pub fn spawn(&self, args: &[&str]) -> Running {
        let mut full = vec!["-t", self.table()];
        full.extend_from_slice(args);
        self.spawn_raw(&full, self.env())
    }

    /// Runs `lock-exec -t TABLE ARGS...` to its end (30 s at most).
    pub fn run(&self, args: &[&str]) -> Outcome {
        self.spawn(args).wait(Duration::from_secs(30))
    }

    /// Runs `lock-exec ARGS...` (no table added) with the environment `edit` leaves, to its end.
    pub fn run_with(&self, args: &[&str], edit: impl FnOnce(&mut BTreeMap<&'static str, String>)) -> Outcome {
        let mut env = self.env();
        edit(&mut env);
        self.spawn_raw(args, env).wait(Duration::from_secs(30))
    }

    /// Starts `lock-exec ARGS...` with exactly `env`, stdout and stderr going to files in the temp folder.
    pub fn spawn_raw(&self, args: &[&str], env: BTreeMap<&'static str, String>) -> Running {
        self.spawn_program(Path::new(env!("CARGO_BIN_EXE_lock-exec")), args, env)
    }

    /// Starts `PROGRAM ARGS...` (lock-exec, or a wrapper such as `chroot DIR /lock-exec`) as
    /// [`Case::spawn_raw`] does.
    pub fn spawn_program(&self, program: &Path, args: &[&str], env: BTreeMap<&'static str, String>) -> Running {
        let mut command = Command::new(program);
        command.args(args).env_clear().envs(&env);
        self.start(command, args)
    }

    /// Starts `command` (lock-exec with `args`) in the temp folder, stdin empty, stdout and stderr going to files
    /// there.
    fn start(&self, mut command: Command, args: &[&str]) -> Running {
        let n = self.spawned.fetch_add(1, Ordering::Relaxed);
        let stdout = self.path(&format!("lock-exec-{n}.stdout"));
        let stderr = self.path(&format!("lock-exec-{n}.stderr"));
        let child = command
            .current_dir(&self.dir.path)
            .stdin(Stdio::null())
            .stdout(File::create(&stdout).expect("create the stdout file"))
            .stderr(File::create(&stderr).expect("create the stderr file"))
            .spawn()
            .expect("spawn the lock-exec binary");
        Running { child: Some(child), args: args.iter().map(|a| (*a).to_owned()).collect(), stdout, stderr }
    }

    /// Starts `lock-exec ARGS...` with exactly the environment entries `entries` (`NAME=value`, in this order,
    /// duplicates kept: an environment `Command` cannot build), stdout and stderr as [`Case::spawn_raw`].
    pub fn spawn_with_environ(&self, args: &[&str], entries: &[String]) -> Running {
        use std::ffi::CString;
        use std::os::unix::ffi::OsStrExt;
        use std::os::unix::process::CommandExt;
        let program = Path::new(env!("CARGO_BIN_EXE_lock-exec"));
        // Everything the forked child reads is built here: it only calls execve (no allocation after fork).
        let owned: Vec<CString> = std::iter::once(CString::new(program.as_os_str().as_bytes()).expect("no nul"))
            .chain(args.iter().map(|a| CString::new(*a).expect("no nul")))
            .chain(entries.iter().map(|e| CString::new(e.as_str()).expect("no nul")))
            .collect();
        let argc = 1 + args.len();
        let mut argv: Vec<usize> = owned[..argc].iter().map(|s| s.as_ptr() as usize).collect();
        argv.push(0);
        let mut envp: Vec<usize> = owned[argc..].iter().map(|s| s.as_ptr() as usize).collect();
        envp.push(0);
        let mut command = Command::new(program);
        // SAFETY: runs in the forked child: execve on pointers into `owned`, which the closure keeps alive.
        unsafe {
            command.pre_exec(move || {
                let _keep = &owned;
                libc::execve(
                    argv[0] as *const libc::c_char,
                    argv.as_ptr() as *const *const libc::c_char,
                    envp.as_ptr() as *const *const libc::c_char,
                );
                Err(std::io::Error::last_os_error())
            });
        }
        self.start(command, args)
    }

    /// The lock item, read consistently through the library.
    pub fn item(&self, key: &str) -> Option<Item> {
        lock::get(&client(), self.table(), key)
            .unwrap_or_else(|e| panic!("GetItem {key}: {}", lock_exec::error_chain(&e)))
    }

    /// Writes an item as the Go tool does: only `key` (S) and `expire` (N, Unix ns).
    pub fn put_go_item(&self, key: &str, expire_ns: i128) {
        let request = json!({
            "TableName": self.table(),
            "Item": { "key": { "S": key }, "expire": { "N": expire_ns.to_string() } },
        });
        if let Err(e) = client().call("PutItem", &request) {
            panic!("PutItem {key}: {}", lock_exec::error_chain(&e));
        }
    }

    /// A `sh -c` script that writes `PID OWNER FENCE` (its pid, `$LOCK_EXEC_OWNER`, `$LOCK_EXEC_FENCE`) to
    /// `started`, then waits until `release` exists (60 s at most).
    pub fn holding_script(&self, started: &str, release: &str) -> String {
        format!(
            "echo $$ $LOCK_EXEC_OWNER $LOCK_EXEC_FENCE > '{}'; \
             i=0; while [ ! -e '{}' ] && [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done",
            self.file(started),
            self.file(release)
        )
    }

    /// Creates the file a [`Case::holding_script`] waits for.
    pub fn release(&self, release: &str) {
        std::fs::write(self.path(release), "go\n").expect("write the release file");
    }

    /// Whether a file exists in the temp folder.
    pub fn exists(&self, name: &str) -> bool {
        self.path(name).exists()
    }

    /// A `sh -c` script that creates `marker` in the temp folder: [`Case::exists`] then tells whether it ran.
    pub fn marker_script(&self) -> String {
        format!("touch '{}'", self.file("marker"))
    }

    /// Runs `lock-exec ARGS... -- sh -c 'touch marker'` (no table added) with exactly `env`, to its end, and fails
    /// if the command started (the marker file exists); returns the outcome for the caller's other checks.
    #[track_caller]
    pub fn run_not_started(&self, args: &[&str], env: BTreeMap<&'static str, String>) -> Outcome {
        let script = self.marker_script();
        let mut full = args.to_vec();
        full.extend(["--", "sh", "-c", &script]);
        let out = self.spawn_raw(&full, env).wait(Duration::from_secs(30));
        out.check("the command started (marker file made)", false, self.exists("marker"));
        out
    }
}

/// A lock-exec process still running. Dropping it SIGKILLs the process if it was not waited for.
pub struct Running {
    child: Option<std::process::Child>,
    args: Vec<String>,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Running {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("not waited yet").id()
    }

    /// The stderr written so far.
    pub fn stderr_so_far(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Waits for the process to exit; SIGKILLs it and fails the test after `limit`.
    pub fn wait(self, limit: Duration) -> Outcome {
        self.wait_sampling(limit, Duration::from_millis(20), |_| {})
    }

    /// [`Running::wait`], calling `sample` with the process id every `every` until it has exited (it is not
    /// reaped before, so the pid stays its own).
    pub fn wait_sampling(mut self, limit: Duration, every: Duration, mut sample: impl FnMut(u32)) -> Outcome {
        let mut child = self.child.take().expect("waited once");
        let deadline = Instant::now() + limit;
        let status = loop {
            sample(child.id());
            if let Some(status) = child.try_wait().expect("try_wait") {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "lock-exec {:?} still running after {limit:?}; killed it\n--- its stderr:\n{}",
                    self.args,
                    std::fs::read_to_string(&self.stderr).unwrap_or_default()
                );
            }
            std::thread::sleep(every);
        };
        Outcome {
            args: std::mem::take(&mut self.args),
            status,
            stdout: std::fs::read_to_string(&self.stdout).unwrap_or_default(),
            stderr: std::fs::read_to_string(&self.stderr).unwrap_or_default(),
        }
    }

    /// Waits until a script wrote its pid (`echo $$ > path`) as the first line of `path`; returns it. Fails the test
    /// as [`Running::wait_for_line`] does, or when the line is not a number.
    pub fn wait_for_pid(&mut self, path: &Path, limit: Duration) -> u32 {
        let line = self.wait_for_line(path, limit);
        line.trim().parse().unwrap_or_else(|_| panic!("{} holds {line:?}, not a pid", path.display()))
    }

    /// Waits until `path` holds a complete line (a script wrote it); returns its first line. Fails the test
    /// after `limit`, or earlier if the process exits first.
    pub fn wait_for_line(&mut self, path: &Path, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(text) = std::fs::read_to_string(path)
                && text.ends_with('\n')
            {
                return text.lines().next().unwrap_or_default().to_owned();
            }
            let exited = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() || Instant::now() >= deadline {
                panic!(
                    "waited for {} from lock-exec {:?}: {}\n--- its stderr:\n{}",
                    path.display(),
                    self.args,
                    match exited {
                        Some(status) => format!("the process exited first ({status})"),
                        None => format!("not written within {limit:?}"),
                    },
                    self.stderr_so_far()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A finished lock-exec process.
#[derive(Debug)]
pub struct Outcome {
    /// Its arguments.
    pub args: Vec<String>,
    /// Its exit status.
    pub status: ExitStatus,
    /// What it wrote to stdout.
    pub stdout: String,
    /// What it wrote to stderr.
    pub stderr: String,
}

impl Outcome {
    /// Fails the test showing `what`, expected and actual side by side, and the process's output.
    #[track_caller]
    pub fn fail(&self, what: &str, expected: &dyn std::fmt::Debug, actual: &dyn std::fmt::Debug) -> ! {
        panic!(
            "lock-exec {:?}: {what}\n  expected: {expected:?}\n  actual:   {actual:?}\n  exit:     {}\n\
             --- stdout:\n{}--- stderr:\n{}",
            self.args, self.status, self.stdout, self.stderr
        )
    }

    /// Checks a condition, failing with expected and actual.
    #[track_caller]
    pub fn check<T: PartialEq + std::fmt::Debug>(&self, what: &str, expected: T, actual: T) {
        if expected != actual {
            self.fail(what, &expected, &actual);
        }
    }

    /// The exit code (`None` when killed by a signal).
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// Checks that lock-exec died of `signal` (it dies of the signal its command died of); a shell's `$?` is
    /// then 128+signal.
    #[track_caller]
    pub fn expect_death_by(&self, signal: i32) -> &Outcome {
        use std::os::unix::process::ExitStatusExt;
        self.check("killed by signal", Some(signal), self.status.signal());
        self
    }

    /// Checks the exit code.
    #[track_caller]
    pub fn expect_code(&self, expected: i32) -> &Outcome {
        self.check("exit code", Some(expected), self.code());
        self
    }

    /// lock-exec's log lines: the stderr lines that start with `{`, parsed as JSON (fails the test on one that
    /// does not parse). Other lines come from the child, which shares stderr.
    #[track_caller]
    pub fn logs(&self) -> Vec<Value> {
        self.stderr
            .lines()
            .filter(|line| line.starts_with('{'))
            .map(|line| {
                serde_json::from_str(line).unwrap_or_else(|e| {
                    self.fail("a stderr line is not JSON", &"a JSON object", &(line, e.to_string()))
                })
            })
            .collect()
    }

    /// The `msg` of every log line, in order.
    #[track_caller]
    pub fn messages(&self) -> Vec<String> {
        self.logs().iter().map(|line| line["msg"].as_str().unwrap_or("<no msg>").to_owned()).collect()
    }

    /// The first log line with this `msg` (fails the test when there is none).
    #[track_caller]
    pub fn log(&self, msg: &str) -> Value {
        match self.logs().into_iter().find(|line| line["msg"] == msg) {
            Some(line) => line,
            None => self.fail("a log line is missing", &msg, &self.messages()),
        }
    }

    /// Whether some log line has this `msg`.
    #[track_caller]
    pub fn has_log(&self, msg: &str) -> bool {
        self.messages().iter().any(|m| m == msg)
    }

    /// stdout parsed as one JSON value (fails the test when it is not).
    #[track_caller]
    pub fn stdout_json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| self.fail("stdout is not JSON", &"one JSON object", &(&self.stdout, e.to_string())))
    }

    /// Checks the outcome of `status KEY` for a key that is not held: exit 0 and `state` is `expected` (`free`,
    /// `never used`).
    #[track_caller]
    pub fn expect_state(&self, expected: &str) -> &Outcome {
        self.expect_code(0);
        self.check("status state", json!(expected), self.stdout_json()["state"].clone());
        self
    }

    /// Fails unless some stderr line contains `text`.
    #[track_caller]
    pub fn expect_stderr_contains(&self, text: &str) -> &Outcome {
        if !self.stderr.contains(text) {
            self.fail("stderr does not mention it", &text, &self.stderr);
        }
        self
    }
}

/// Sends `signal` to `pid`.
pub fn signal(pid: u32, signal: i32) {
    let pid = libc::pid_t::try_from(pid).expect("pids fit pid_t");
    // SAFETY: kill(2) takes two integers and touches no memory of ours.
    let result = unsafe { libc::kill(pid, signal) };
    assert_eq!(result, 0, "kill({pid}, {signal}): {}", std::io::Error::last_os_error());
}

/// True when `pid` is no longer running: `kill(pid, 0)` fails with ESRCH, or it is a zombie waiting for
/// PID 1 to reap it (container init processes reap orphans late).
pub fn is_dead(pid: u32) -> bool {
    let pid_t = libc::pid_t::try_from(pid).expect("pids fit pid_t");
    // SAFETY: kill(2) with signal 0 only checks for existence.
    let result = unsafe { libc::kill(pid_t, 0) };
    if result != 0 {
        return std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The state is the first field after the `(comm)`.
    stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
}

/// Polls `condition` every 50 ms until it holds or `limit` passes; returns whether it held.
pub fn eventually(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sleeps until `at` (returns at once if it has passed).
pub fn sleep_until(at: Instant) {
    std::thread::sleep(at.saturating_duration_since(Instant::now()));
}

/// A request a [`Server`] received.
#[derive(Debug, Clone)]
pub struct Seen {
    /// `GET`, `PUT`, `POST`.
    pub method: String,
    /// Path and query, as sent.
    pub path: String,
    /// Lowercase names, values trimmed, in the order sent.
    pub headers: Vec<(String, String)>,
    /// The body (`content-length` bytes), invalid UTF-8 replaced.
    pub body: String,
}

impl Seen {
    /// The first value of a header; `name` in lowercase.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// The value of `name` in a form-encoded body (`Action=AssumeRole&RoleArn=...`), percent-decoded.
    pub fn form(&self, name: &str) -> Option<String> {
        self.body.split('&').filter_map(|pair| pair.split_once('=')).find(|(n, _)| *n == name).map(|(_, v)| {
            let bytes = v.as_bytes();
            let mut out = Vec::with_capacity(bytes.len());
            let mut i = 0;
            while i < bytes.len() {
                match bytes[i] {
                    b'%' if i + 2 < bytes.len() => {
                        let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                        match u8::from_str_radix(hex, 16) {
                            Ok(b) => out.push(b),
                            Err(_) => out.extend_from_slice(&bytes[i..i + 3]),
                        }
                        i += 3;
                        continue;
                    }
                    b'+' => out.push(b' '),
                    b => out.push(b),
                }
                i += 1;
            }
            String::from_utf8_lossy(&out).into_owned()
        })
    }

    /// The access key id in a SigV4 `authorization` header (`Credential=AKID/...`).
    pub fn signing_key_id(&self) -> Option<String> {
        let auth = self.header("authorization")?;
        let credential = auth.split("Credential=").nth(1)?;
        credential.split('/').next().map(str::to_owned)
    }
}

/// A [`Server`]'s answer.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// Headers (`content-length` and `connection: close` are added).
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: String,
}

impl Reply {
    /// An answer with no extra headers.
    pub fn new(status: u16, body: impl Into<String>) -> Reply {
        Reply { status, headers: Vec::new(), body: body.into() }
    }

    /// `200` with a JSON body.
    pub fn json(body: &Value) -> Reply {
        Reply { status: 200, headers: vec![("content-type".into(), "application/json".into())], body: body.to_string() }
    }
}

/// One request and the answer it got.
#[derive(Debug, Clone)]
pub struct Exchange {
    /// What the server received.
    pub request: Seen,
    /// What it answered.
    pub reply: Reply,
}

/// A small HTTP/1.1 server on 127.0.0.1 and a free port: one request per connection (`connection: close`),
/// connections handled one at a time by a handler that sees every request in order. Every exchange is recorded.
/// Stopped and joined by [`Server::stop`] or on drop.
pub struct Server {
    addr: std::net::SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    exchanges: std::sync::Arc<std::sync::Mutex<Vec<Exchange>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    /// Binds a free port on 127.0.0.1 and answers every request with `handler`.
    pub fn start(mut handler: impl FnMut(&Seen) -> Reply + Send + 'static) -> Server {
        use std::sync::atomic::AtomicBool;
        use std::sync::{Arc, Mutex};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a local port for a test server");
        let addr = listener.local_addr().expect("a bound listener has an address");
        let stop = Arc::new(AtomicBool::new(false));
        let exchanges = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (stop, exchanges) = (Arc::clone(&stop), Arc::clone(&exchanges));
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                    let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
                    let Some(request) = read_request(&stream) else { continue };
                    let reply = handler(&request);
                    let _ = write_reply(&stream, &reply);
                    exchanges.lock().unwrap_or_else(|p| p.into_inner()).push(Exchange { request, reply });
                }
            })
        };
        Server { addr, stop, exchanges, thread: Some(thread) }
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The exchanges so far, in order.
    pub fn exchanges(&self) -> Vec<Exchange> {
        self.exchanges.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Stops the accept loop, joins its thread, and returns every exchange.
    pub fn stop(mut self) -> Vec<Exchange> {
        self.shut_down();
        self.exchanges()
    }

    fn shut_down(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = std::net::TcpStream::connect(self.addr); // wakes the accept loop
        if let Some(thread) = self.thread.take() {
            thread.join().expect("the test server thread panicked");
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.stop.store(true, Ordering::SeqCst);
            let _ = std::net::TcpStream::connect(self.addr);
            if let Some(thread) = self.thread.take() {
                let _ = thread.join();
            }
        }
    }
}

/// Reads one request: request line, headers, and a body of `content-length` bytes. `None` when the stream ends
/// early or the request is malformed.
fn read_request(stream: &std::net::TcpStream) -> Option<Seen> {
    read_http_request(&mut std::io::BufReader::new(stream))
}

/// Reads one HTTP/1.1 request (headers and a `content-length` body) from a buffered stream, which may carry more
/// requests after it (keep-alive); `None` at the end of the connection or on a malformed request.
pub fn read_http_request(reader: &mut impl std::io::BufRead) -> Option<Seen> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next()?.to_owned(), parts.next()?.to_owned());
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':')?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    let mut seen = Seen { method, path, headers, body: String::new() };
    let length: usize = seen.header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    seen.body = String::from_utf8_lossy(&body).into_owned();
    Some(seen)
}

fn write_reply(mut stream: &std::net::TcpStream, reply: &Reply) -> std::io::Result<()> {
    use std::io::Write;
    let mut text = format!("HTTP/1.1 {} Test\r\n", reply.status);
    for (name, value) in &reply.headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str(&format!("content-length: {}\r\nconnection: close\r\n\r\n{}", reply.body.len(), reply.body));
    stream.write_all(text.as_bytes())?;
    stream.flush()
}

/// Sends `request` on to `base` (the emulator) with its method, path, headers and body, and returns the answer:
/// a recording proxy's handler. Signatures stay as they were (the emulator does not check them with auth off).
pub fn forward(base: &str, request: &Seen) -> Reply {
    match send_on(&Http::new(), base, request, Duration::from_secs(10), "the emulator (forwarded)") {
        Ok(response) => Reply {
            status: response.status,
            headers: response.headers.into_iter().filter(|(n, _)| n == "content-type").collect(),
            body: response.body,
        },
        Err(e) => Reply::new(502, format!("forwarding failed: {}", lock_exec::error_chain(&e))),
    }
}

/// Sends `request` on to `base` with `http`: its method, path, body and headers (without those of its own
/// connection: host, content-length, connection, transfer-encoding).
pub fn send_on(
    http: &Http,
    base: &str,
    request: &Seen,
    timeout: Duration,
    target: &str,
) -> Result<lock_exec::aws::http::Response, lock_exec::Error> {
    let url = format!("{}{}", base.trim_end_matches('/'), request.path);
    let headers = request
        .headers
        .iter()
        .filter(|(n, _)| !["host", "content-length", "connection", "transfer-encoding"].contains(&n.as_str()))
        .cloned()
        .collect();
    http.send(&lock_exec::aws::http::Request {
        method: &request.method,
        url: &url,
        headers,
        body: request.body.as_bytes(),
        timeout,
        target,
    })
}

/// The text of the first `<tag>...</tag>` in an XML document.
pub fn xml_tag(body: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let start = body.find(&open)? + open.len();
    let end = body[start..].find(&format!("</{tag}>"))? + start;
    Some(body[start..end].trim().to_owned())
}

/// An RFC 3339 time `from_now` from now (the format credential endpoints answer `Expiration` in).
pub fn rfc3339_from_now(from_now: Duration) -> String {
    lock::rfc3339_ns(now_ns() + from_now.as_nanos() as i128)
}

impl Case {
    /// A case around a table the test made itself elsewhere (another emulator); the table is left alone on drop.
    /// [`Case::env`] still points at `LOCK_EXEC_TEST_ENDPOINT`: such tests set their own endpoint.
    pub fn with_table_name(test: &str, table: &str) -> Case {
        let table = Table { name: table.to_owned(), delete_on_drop: false };
        let case = Case { table, dir: TempDir::new(test), spawned: AtomicU32::new(0) };
        std::fs::create_dir_all(case.home()).expect("create the test HOME");
        case
    }

    /// A unique name for a table made by a test itself.
    pub fn unique_table_name(test: &str) -> String {
        unique(&format!("it-{test}"))
    }

    /// The environment of [`Case::env`] without any credentials: no keys, an empty HOME, IMDS disabled.
    pub fn env_without_credentials(&self) -> BTreeMap<&'static str, String> {
        let mut env = self.env();
        env.remove("AWS_ACCESS_KEY_ID");
        env.remove("AWS_SECRET_ACCESS_KEY");
        env
    }

    /// Writes `text` to `name` in the temp folder (parent folders made); returns the path as text.
    pub fn write(&self, name: &str, text: &str) -> String {
        let path = self.path(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("create the parent folder");
        }
        std::fs::write(&path, text).expect("write a test file");
        self.file(name)
    }

    /// Writes an executable `sh` script (`#!/bin/sh` and `body`) to `name` in the temp folder; returns its path.
    pub fn write_script(&self, name: &str, body: &str) -> String {
        let path = self.write(name, &format!("#!/bin/sh\n{body}"));
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod 755");
        path
    }

    /// Writes `$HOME/.aws/NAME` (`config` or `credentials`).
    pub fn write_aws_file(&self, name: &str, text: &str) -> String {
        self.write(&format!("home/.aws/{name}"), text)
    }

    /// Runs `lock-exec -t TABLE ARGS...` with exactly `env`, to its end (30 s at most).
    pub fn run_env(&self, args: &[&str], env: BTreeMap<&'static str, String>) -> Outcome {
        let mut full = vec!["-t", self.table()];
        full.extend_from_slice(args);
        self.spawn_raw(&full, env).wait(Duration::from_secs(30))
    }
}

impl Outcome {
    /// Fails when any of `secrets` appears anywhere in stdout or stderr.
    #[track_caller]
    pub fn expect_no_secrets(&self, secrets: &[&str]) -> &Outcome {
        for secret in secrets.iter().filter(|s| !s.is_empty()) {
            for (stream, text) in [("stdout", &self.stdout), ("stderr", &self.stderr)] {
                if text.contains(secret) {
                    self.fail(&format!("a secret appears in {stream}"), &"nowhere", secret);
                }
            }
        }
        self
    }

    /// The `source` of every `credentials loaded` line (needs `-v`).
    #[track_caller]
    pub fn credential_sources(&self) -> Vec<String> {
        self.logs()
            .iter()
            .filter(|line| line["msg"] == "credentials loaded")
            .map(|line| line["source"].as_str().unwrap_or("<no source>").to_owned())
            .collect()
    }
}

impl Case {
    /// Writes `attributes` (DynamoDB JSON, e.g. `{"key": {"S": "k"}, ...}`) as one item of the test table.
    pub fn put_item(&self, attributes: Value) {
        let request = json!({ "TableName": self.table(), "Item": attributes });
        if let Err(e) = client().call("PutItem", &request) {
            panic!("PutItem: {}", lock_exec::error_chain(&e));
        }
    }
}

impl Table {
    /// A table the test made itself under `name` (with `lock-exec table create`, say): deleted on drop.
    pub fn adopt(name: &str) -> Table {
        Table { name: name.to_owned(), delete_on_drop: true }
    }
}

/// Whether the emulator has DynamoDB's Time to Live API: moto has; dynalite answers `UpdateTimeToLive` with
/// UnknownOperationException (its `DescribeTimeToLive` always says DISABLED).
pub fn emulator_has_ttl_api() -> bool {
    let request = json!({
        "TableName": "it-no-such-table-for-a-ttl-probe",
        "TimeToLiveSpecification": { "AttributeName": "ttl", "Enabled": true },
    });
    !matches!(client().call("UpdateTimeToLive", &request), Err(lock_exec::Error::Service(e)) if e.code == "UnknownOperationException")
}

/// Runs `shell_command` with exactly `env` in a pseudo-terminal made by script(1) (util-linux), which becomes its
/// controlling terminal and stdin, types `input` on that terminal, and waits for it to end. After 20 s it is
/// killed and the test fails, saying `stuck` (what a hang means) and showing the output.
pub fn run_in_terminal(
    shell_command: &str,
    env: BTreeMap<&'static str, String>,
    input: &[u8],
    stuck: &str,
) -> std::process::Output {
    use std::io::Write;
    let mut child = Command::new("script")
        .args(["-qec", shell_command, "/dev/null"])
        .env_clear()
        .envs(env)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run script(1) from util-linux");
    child.stdin.take().expect("stdin is piped").write_all(input).expect("type on the terminal");
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let output = child.wait_with_output().expect("collect output");
            panic!(
                "{stuck} (still running after 20 s)\n--- stdout:\n{}\n--- stderr:\n{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().expect("collect output")
}

/// Every signal the test process inherited as ignored back to its default action, once (SIGPIPE aside: Rust's
/// runtime ignores it itself): lock-exec leaves a signal it inherited as ignored ignored (as `nohup` and a
/// script's `&` job ask), so the tests must not depend on how the harness that runs them was started (a CI step
/// in the background ignores SIGINT and SIGQUIT). Handlers (the C library's own real-time ones) are left alone.
fn default_signal_actions() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        for signal in 1..=libc::SIGRTMAX() {
            if signal == libc::SIGPIPE || !lock_exec::process::is_ignored(signal) {
                continue;
            }
            // SAFETY: signal takes a plain integer and the constant SIG_DFL.
            unsafe {
                libc::signal(signal, libc::SIG_DFL);
            }
        }
    });
}
