//! The chaos race: rounds of many lock-exec processes on one key with a 2 s lease, through the fault proxy
//! injecting random faults, while the test SIGKILLs, SIGTERMs and SIGINTs random ones. Every command appends its
//! start and end instants (CLOCK_REALTIME from bash's `$EPOCHREALTIME`, microseconds: a start rounded down and an
//! end rounded up to ns, so an overlap can only grow) to one file. Asserted at the end: no two commands'
//! intervals overlap, fences grow in start order, no process panicked, and no lock outlives its lease once every
//! process is gone. Each process's clock is shifted by a random offset within +-1 s (`LOCK_EXEC_TEST_CLOCK_OFFSET_MS`),
//! so any two clocks differ by up to 2 s: under the bound of the default `--max-clock-skew` (2 s) plus a 2 s lease's
//! margin (0.2 s), and no offset is beyond the skew a run refuses.
//!
//! A command whose lock-exec was SIGKILLed is SIGKILLed by the kernel (PR_SET_PDEATHSIG) during lock-exec's exit,
//! before the test can reap lock-exec: its shell writes nothing after that. Its end instant may be missing (or it
//! may have started and not yet written it), so a missing end counts as "until the test reaped lock-exec", later
//! than the true end: an overlap can only be over-reported, never hidden.
//!
//! `LOCK_EXEC_CHAOS_SEED` replays a run (the seed is printed); `LOCK_EXEC_CHAOS_ROUNDS` and
//! `LOCK_EXEC_CHAOS_PROCESSES` change its size (defaults 20 and 30).

use std::collections::BTreeMap;
use std::fs::File;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::faults::{Answer, Call, Fault, FaultProxy, Op};
use crate::support::{Case, now_ns};

/// splitmix64: small, good enough, and the same on every machine for a seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, n).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// True with probability `percent` / 100.
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn millis(&mut self, from: u64, to: u64) -> Duration {
        Duration::from_millis(from + self.below(to - from))
    }
}

fn env_number(name: &str, default: u64) -> u64 {
    lock_exec::Env::real().var(name).and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The chance, per 5 ms tick of a round, that the test signals one of the round's running processes.
const KILLS_PER_MILLE: u64 = 5;

/// The largest clock offset of one racer, either way (ms).
const MAX_OFFSET_MS: u64 = 1000;

/// A random fault for a call, or [`Fault::Pass`] (most calls).
fn random_fault(rng: &mut Rng, call: &Call) -> Fault {
    if call.op == Op::Other || !rng.chance(12) {
        return Fault::Pass;
    }
    match rng.below(9) {
        0 => Fault::Answer(Answer::error(500, "InternalServerError")),
        1 => Fault::Answer(Answer::error(503, "ServiceUnavailable")),
        2 => Fault::Answer(Answer::error(400, "ThrottlingException")),
        3 => Fault::ResetBefore,
        4 => Fault::ResetAfter,
        5 => Fault::TruncateAfter,
        6 => Fault::Delay(rng.millis(100, 1500)),
        7 => Fault::AnswerThenForward(Answer::error(500, "InternalServerError"), rng.millis(100, 2500)),
        _ => Fault::Answer(Answer::text(502, "text/html", "<html><body>502 Bad Gateway</body></html>")),
    }
}

/// One lock-exec process of the race.
struct Racer {
    id: String,
    child: Child,
    stderr: std::path::PathBuf,
    /// Instant (ns) the test saw it exited.
    reaped_ns: Option<i128>,
    status: Option<std::process::ExitStatus>,
    /// The signal the test sent, if any.
    signaled: Option<i32>,
}

impl Drop for Racer {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A command's interval, from the shared file.
#[derive(Debug, Clone)]
struct Interval {
    /// `ROUND.PROCESS`, for the report.
    #[allow(dead_code)]
    id: String,
    fence: i128,
    start: i128,
    end: i128,
    /// The end is the instant lock-exec was reaped (no end line).
    assumed_end: bool,
}

#[test]
fn chaos_race_never_runs_two_commands_at_once() {
    let seed = env_number("LOCK_EXEC_CHAOS_SEED", (now_ns() as u64) ^ u64::from(std::process::id()));
    let rounds = env_number("LOCK_EXEC_CHAOS_ROUNDS", 20);
    let processes = env_number("LOCK_EXEC_CHAOS_PROCESSES", 30);
    eprintln!("chaos: seed {seed} (replay with LOCK_EXEC_CHAOS_SEED={seed}), {rounds} rounds x {processes} processes");
    let case = Case::new("chaos");
    let key = "chaos";
    let rng = Arc::new(Mutex::new(Rng(seed)));
    let faults: Arc<Mutex<BTreeMap<String, u32>>> = Arc::default();
    let proxy = {
        let (rng, faults) = (Arc::clone(&rng), Arc::clone(&faults));
        FaultProxy::start(move |call| {
            let fault = random_fault(&mut rng.lock().unwrap_or_else(|p| p.into_inner()), call);
            if !matches!(fault, Fault::Pass) {
                let name = format!("{:?}: {}", call.op, fault.kind());
                *faults.lock().unwrap_or_else(|p| p.into_inner()).entry(name).or_default() += 1;
            }
            fault
        })
    };
    let intervals_file = case.file("intervals");
    // The instants come from bash's $EPOCHREALTIME (microseconds), a builtin: lock-exec signals the whole tree,
    // and a `date` (or a `$(...)` subshell) that a forwarded signal kills on its way would leave an empty reading,
    // a malformed line. Only builtins run between the start's reading and its line. Starts round down, ends up.
    let script = format!(
        "end() {{ t=$EPOCHREALTIME; echo \"E $CHAOS_ID ${{t%.*}}${{t#*.}}999\" >> {f}; }}; \
         trap 'end; exit 143' TERM INT HUP; \
         t=$EPOCHREALTIME; echo \"S $CHAOS_ID $$ $LOCK_EXEC_FENCE ${{t%.*}}${{t#*.}}000\" >> {f}; \
         sleep $CHAOS_SLEEP & wait $!; end",
        f = intervals_file
    );
    let started = Instant::now();
    let mut racers: Vec<Racer> = Vec::new();
    let mut signals_sent: BTreeMap<&str, u32> = BTreeMap::new();
    for round in 0..rounds {
        let round_start = Instant::now();
        let first = racers.len();
        let mut pending: Vec<(Instant, usize)> = Vec::new();
        {
            let mut rng = rng.lock().unwrap_or_else(|p| p.into_inner());
            for p in 0..processes as usize {
                pending.push((round_start + rng.millis(0, 600), first + p));
            }
        }
        pending.sort_by_key(|(at, _)| *at);
        let deadline = round_start + Duration::from_secs(40);
        loop {
            let now = Instant::now();
            while pending.first().is_some_and(|(at, _)| *at <= now) {
                let (_, index) = pending.remove(0);
                let (wait, sleep, offset_ms) = {
                    let mut rng = rng.lock().unwrap_or_else(|p| p.into_inner());
                    let wait = rng.chance(40).then(|| rng.millis(500, 3000));
                    (wait, rng.millis(50, 1500), rng.below(2 * MAX_OFFSET_MS + 1) as i64 - MAX_OFFSET_MS as i64)
                };
                let id = format!("{round}.{}", index - first);
                racers.push(spawn(&case, &proxy, key, &script, &id, (wait, sleep, offset_ms)));
            }
            // Now and then, a signal to one of the round's processes still running (the holder, or a waiter).
            let victim = {
                let mut rng = rng.lock().unwrap_or_else(|p| p.into_inner());
                let alive: Vec<usize> = (first..racers.len()).filter(|i| racers[*i].status.is_none()).collect();
                (rng.below(1000) < KILLS_PER_MILLE && !alive.is_empty()).then(|| {
                    let signal = [libc::SIGKILL, libc::SIGTERM, libc::SIGINT][rng.below(3) as usize];
                    (alive[rng.below(alive.len() as u64) as usize], signal)
                })
            };
            if let Some((index, signal)) = victim {
                let racer = &mut racers[index];
                // Not reaped yet: the pid is still this process (or its zombie).
                // SAFETY: kill(2) takes two integers.
                unsafe { libc::kill(racer.child.id() as libc::pid_t, signal) };
                racer.signaled.get_or_insert(signal);
            }
            let mut running = 0;
            for racer in &mut racers[first..] {
                if racer.status.is_none() {
                    match racer.child.try_wait() {
                        Ok(Some(status)) => {
                            racer.reaped_ns = Some(now_ns());
                            racer.status = Some(status);
                        }
                        _ => running += 1,
                    }
                }
            }
            if pending.is_empty() && running == 0 {
                break;
            }
            if Instant::now() > deadline {
                for racer in &mut racers[first..] {
                    let _ = racer.child.kill();
                    let _ = racer.child.wait();
                }
                panic!("chaos round {round} (seed {seed}): lock-exec processes still running after 40 s");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    for racer in &racers {
        if let Some(signal) = racer.signaled {
            let name = match signal {
                libc::SIGKILL => "SIGKILL",
                libc::SIGTERM => "SIGTERM",
                _ => "SIGINT",
            };
            *signals_sent.entry(name).or_default() += 1;
        }
    }
    let all_gone_ns = racers.iter().filter_map(|r| r.reaped_ns).max().unwrap_or_else(now_ns);
    let took = started.elapsed();
    drop(proxy); // no late write can land after this

    // No process panicked; exit codes are ones lock-exec documents (or a death by the signal sent).
    let mut codes: BTreeMap<String, u32> = BTreeMap::new();
    for racer in &racers {
        use std::os::unix::process::ExitStatusExt;
        let status = racer.status.expect("every racer was reaped");
        let stderr = std::fs::read_to_string(&racer.stderr).unwrap_or_default();
        assert!(!stderr.contains("panicked"), "chaos (seed {seed}): racer {} panicked:\n{stderr}", racer.id);
        let code = match (status.code(), status.signal()) {
            (Some(code), _) => code.to_string(),
            (None, Some(signal)) => format!("signal {signal}"),
            _ => "?".into(),
        };
        assert_ne!(status.code(), Some(101), "chaos (seed {seed}): racer {} exited 101 (a panic):\n{stderr}", racer.id);
        *codes.entry(code).or_default() += 1;
    }

    // The intervals: no overlap, fences growing with the start.
    let text = std::fs::read_to_string(&intervals_file).unwrap_or_default();
    let mut ends: BTreeMap<String, i128> = BTreeMap::new();
    let mut starts: Vec<(String, i128, i128)> = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            ["S", id, _pid, fence, start] => starts.push((
                (*id).to_owned(),
                fence.parse().expect("a fence"),
                start.parse().expect("a start instant"),
            )),
            ["E", id, end] => {
                let end: i128 = end.parse().expect("an end instant");
                let entry = ends.entry((*id).to_owned()).or_insert(end);
                *entry = (*entry).max(end);
            }
            _ => panic!("chaos (seed {seed}): a malformed line in the intervals file: {line:?}"),
        }
    }
    let reaped: BTreeMap<&str, i128> =
        racers.iter().map(|r| (r.id.as_str(), r.reaped_ns.expect("every racer was reaped"))).collect();
    let mut intervals: Vec<Interval> = starts
        .into_iter()
        .map(|(id, fence, start)| {
            let (end, assumed_end) = match ends.get(&id) {
                Some(end) => (*end, false),
                None => (reaped[id.as_str()], true),
            };
            Interval { id, fence, start, end, assumed_end }
        })
        .collect();
    intervals.sort_by_key(|i| i.start);
    let mut overlaps = Vec::new();
    for pair in intervals.windows(2) {
        if pair[1].start < pair[0].end {
            overlaps.push(format!("{:?} and {:?}", pair[0], pair[1]));
        }
        if pair[1].fence <= pair[0].fence {
            overlaps.push(format!("fence not growing with the start: {:?} then {:?}", pair[0], pair[1]));
        }
    }
    // Windows of two suffice only if no interval contains a later pair: check against the longest end so far too.
    let mut furthest: Option<&Interval> = None;
    for interval in &intervals {
        if let Some(before) = furthest
            && interval.start < before.end
        {
            overlaps.push(format!("{before:?} and {interval:?}"));
        }
        if furthest.is_none_or(|f| interval.end > f.end) {
            furthest = Some(interval);
        }
    }
    overlaps.dedup();
    let faults = faults.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let injected: u32 = faults.values().sum();
    let assumed = intervals.iter().filter(|i| i.assumed_end).count();
    eprintln!(
        "chaos: seed {seed}, {rounds} rounds x {processes} processes = {} runs in {took:.1?}; commands run: {} ({assumed} \
         ended by lock-exec's death, end taken as its reaping); signals sent: {signals_sent:?}; faults injected: \
         {injected} {faults:?}; exits: {codes:?}; overlaps: {}",
        racers.len(),
        intervals.len(),
        overlaps.len()
    );
    assert!(overlaps.is_empty(), "chaos (seed {seed}): commands overlapped:\n{}", overlaps.join("\n"));
    assert!(!intervals.is_empty(), "chaos (seed {seed}): no command ever ran");

    // Every process is gone: whatever the item says, its lease ends within a lease of the last exit (plus the
    // largest clock offset: a host ahead writes its lease end ahead).
    let item = case.item(key).expect("the chaos key has an item");
    let lease_ns = 2_000_000_000 + MAX_OFFSET_MS as i128 * 1_000_000;
    assert!(
        item.expire_ns <= all_gone_ns + lease_ns,
        "chaos (seed {seed}): the lock outlives its lease: expire {} > last exit {all_gone_ns} + 2 s + 1 s of clock offset ({item:?})",
        item.expire_ns
    );
    crate::support::sleep_until(
        Instant::now() + Duration::from_nanos((all_gone_ns + lease_ns - now_ns()).max(0) as u64),
    );
    let item = case.item(key).expect("the chaos key has an item");
    assert!(item.expire_ns < now_ns(), "chaos (seed {seed}): a lease still runs with no process left: {item:?}");
}

/// Starts one racer: `run KEY -e 2s [--wait W] -- sh -c SCRIPT` through the proxy.
fn spawn(
    case: &Case,
    proxy: &FaultProxy,
    key: &str,
    script: &str,
    id: &str,
    (wait, sleep, offset_ms): (Option<Duration>, Duration, i64),
) -> Racer {
    let wait_text = wait.map(|w| format!("{}ms", w.as_millis()));
    let mut args = vec!["-t", case.table(), "run", key, "-e", "2s", "--kill-after", "300ms", "--locked-exit-code", "9"];
    if let Some(wait) = &wait_text {
        args.extend(["--wait", wait.as_str()]);
    }
    args.extend(["--", "bash", "-c", script]);
    let mut env = proxy.env(case);
    env.insert("CHAOS_ID", id.to_owned());
    env.insert("CHAOS_SLEEP", format!("{:.3}", sleep.as_secs_f64()));
    env.insert("LOCK_EXEC_TEST_CLOCK_OFFSET_MS", offset_ms.to_string());
    let stderr = case.path(&format!("racer-{id}.stderr"));
    let child = Command::new(env!("CARGO_BIN_EXE_lock-exec"))
        .args(&args)
        .env_clear()
        .envs(&env)
        .current_dir(&case.dir.path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(&stderr).expect("create a stderr file"))
        .spawn()
        .expect("spawn lock-exec");
    Racer { id: id.to_owned(), child, stderr, reaped_ns: None, status: None, signaled: None }
}
