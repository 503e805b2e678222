//! The cron options of `run` (`--wait`, `--keep`, `--owner`, `--limit`), the last-run record, and the `ttl` every
//! write sets (`--retain`), through the binary against the emulator.

use std::time::{Duration, Instant};

use lock_exec::lock::{self, Item};
use serde_json::{Value, json};

use crate::support::{Case, Outcome, eventually, host_name, now_ns, signal};

const LOCKED: &str = "did not run command. key is locked";
const WAIT: Duration = Duration::from_secs(30);
const HOUR: i128 = 3600;
const DEFAULT_RETAIN_S: i128 = 720 * HOUR;

/// `run k --locked-exit-code 9 [flags] -- sh -c 'touch marker'`: returns the outcome and whether the command ran
/// (the marker file was made; it is removed again).
fn try_run(case: &Case, flags: &[&str]) -> (Outcome, bool) {
    let script = case.marker_script();
    let mut args = vec!["run", "k", "--locked-exit-code", "9"];
    args.extend_from_slice(flags);
    args.extend(["--", "sh", "-c", &script]);
    let out = case.spawn(&args).wait(Duration::from_secs(120));
    let ran = case.exists("marker");
    let _ = std::fs::remove_file(case.path("marker"));
    (out, ran)
}

/// The item of `key`, which must exist.
#[track_caller]
fn item(case: &Case, key: &str) -> Item {
    case.item(key).unwrap_or_else(|| panic!("no item for {key}"))
}

/// `acquired` of an item, Unix ns.
#[track_caller]
fn acquired_ns(item: &Item) -> i128 {
    item.acquired.as_deref().and_then(lock::parse_rfc3339_ns).unwrap_or_else(|| panic!("acquired of {item:?}"))
}

/// Checks that `ttl` is the Unix seconds of a moment within [before, after] plus `retain_s`, give or take a second.
#[track_caller]
fn expect_ttl_between(what: &str, item: &Item, before_ns: i128, after_ns: i128, retain_s: i128) {
    let ttl = i128::from(item.ttl.unwrap_or_else(|| panic!("{what}: no ttl on {item:?}")));
    let (low, high) = (before_ns / 1_000_000_000 + retain_s - 1, after_ns / 1_000_000_000 + retain_s + 1);
    assert!((low..=high).contains(&ttl), "{what}: ttl {ttl} not within [{low}, {high}] ({item:?})");
}

#[test]
fn wait_takes_the_lock_once_the_holder_releases_it() {
    let case = Case::new("wait_takes_the_lock");
    let mut first = case.spawn(&["run", "k", "--", "sh", "-c", &case.holding_script("started", "release")]);
    first.wait_for_line(&case.path("started"), WAIT);
    let waiter = {
        let script = case.marker_script();
        case.spawn(&["run", "k", "--wait", "60s", "--locked-exit-code", "9", "--", "sh", "-c", &script])
    };
    // It waits: after 3 s (three tries at least) the command has not run and one line said so.
    std::thread::sleep(Duration::from_secs(3));
    assert!(!case.exists("marker"), "the waiting run started its command while the key was held");
    case.release("release");
    let released_at = Instant::now();
    first.wait(WAIT).expect_code(0);
    let out = waiter.wait(WAIT);
    out.expect_code(0);
    out.check("the command ran after the wait", true, case.exists("marker"));
    let waits = out.messages().iter().filter(|m| *m == "waiting for lock").count();
    out.check("one `waiting for lock` line", 1, waits);
    out.check("waiting line names the holder", json!(host_name()), out.log("waiting for lock")["holder"].clone());
    out.check("no `did not run` line", false, out.has_log(LOCKED));
    // Polls are at most 10 s apart (the backoff's cap), so it took the key well within that of the release.
    let took = released_at.elapsed();
    out.check("taken within 15 s of the release", true, took < Duration::from_secs(15));
}

#[test]
fn wait_gives_up_with_the_locked_exit_code_after_about_the_wait_time() {
    let case = Case::new("wait_gives_up");
    let mut first = case.spawn(&["run", "k", "--", "sh", "-c", &case.holding_script("started", "release")]);
    first.wait_for_line(&case.path("started"), WAIT);
    let start = Instant::now();
    let (out, ran) = try_run(&case, &["--wait", "3s"]);
    let took = start.elapsed();
    out.expect_code(9);
    out.check("the command ran", false, ran);
    out.check("messages", vec!["waiting for lock", LOCKED], out.messages().iter().map(String::as_str).collect());
    out.check("waited about 3 s (at least 2.5 s, under 15 s)", true, took >= Duration::from_millis(2500));
    out.check("waited about 3 s (at least 2.5 s, under 15 s)", true, took < Duration::from_secs(15));
    case.release("release");
    first.wait(WAIT).expect_code(0);
}

/// A `--wait` whose deadline comes within a second of a held answer tries no more, and its debug line says so
/// (it said "trying again", then gave up without a try).
#[test]
fn a_wait_too_short_for_another_try_says_it_gives_up() {
    let case = Case::new("wait_too_short");
    let mut first = case.spawn(&["run", "k", "--", "sh", "-c", &case.holding_script("started", "release")]);
    first.wait_for_line(&case.path("started"), WAIT);
    let (out, ran) = try_run(&case, &["-v", "--wait", "500ms"]);
    out.expect_code(9);
    out.check("the command ran", false, ran);
    let still: Vec<String> = out.messages().into_iter().filter(|m| m.starts_with("lock still held")).collect();
    out.check("debug lines", vec!["lock still held; giving up at the --wait deadline".to_owned()], still);
    case.release("release");
    first.wait(WAIT).expect_code(0);
}

#[test]
fn sigterm_while_waiting_ends_at_once_holding_nothing() {
    let case = Case::new("sigterm_while_waiting");
    let mut first = case.spawn(&["run", "k", "--", "sh", "-c", &case.holding_script("started", "release")]);
    first.wait_for_line(&case.path("started"), WAIT);
    let script = case.marker_script();
    let waiter = case.spawn(&["run", "k", "--wait", "60s", "--", "sh", "-c", &script]);
    let pid = waiter.pid();
    assert!(
        eventually(WAIT, || waiter.stderr_so_far().contains("waiting for lock")),
        "no `waiting for lock` line:\n{}",
        waiter.stderr_so_far()
    );
    signal(pid, libc::SIGTERM);
    let sent = Instant::now();
    let out = waiter.wait(WAIT);
    out.expect_death_by(libc::SIGTERM);
    out.check("ended within 5 s of SIGTERM", true, sent.elapsed() < Duration::from_secs(5));
    out.check("the command ran", false, case.exists("marker"));
    // the first run still holds the key
    case.release("release");
    let first = first.wait(WAIT);
    first.expect_code(0);
    first.check("the holder released its own lock", true, first.has_log("lock released"));
}

#[test]
fn keep_holds_the_key_until_acquired_plus_keep_without_delaying_the_exit() {
    let case = Case::new("keep_holds_the_key");
    let start = Instant::now();
    let out = case.run(&["run", "k", "--keep", "5s", "--", "sh", "-c", "sleep 0.1; exit 3"]);
    let took = start.elapsed();
    out.expect_code(3);
    out.check("exit not delayed by --keep (under 4 s)", true, took < Duration::from_secs(4));
    out.check("no `lock released`", false, out.has_log("lock released"));
    let kept = out.log("lock kept until --keep ends");
    let held = item(&case, "k");
    let keep_until = acquired_ns(&held) + 5_000_000_000;
    out.check("expire is acquired + 5 s", keep_until, held.expire_ns);
    out.check("logged expire", json!(lock::rfc3339_ns(keep_until)), kept["expire"].clone());
    out.check(
        "ttl counts from the keep instant",
        Some((keep_until / 1_000_000_000 + DEFAULT_RETAIN_S) as i64),
        held.ttl,
    );

    // Meanwhile the key is held: another run does not run its command.
    if now_ns() + 500_000_000 < keep_until {
        let (second, ran) = try_run(&case, &[]);
        second.expect_code(9);
        second.check("second run's command ran during --keep", false, ran);
        case.run(&["status", "k"]).expect_code(3);
    }
    // Once the keep instant has passed, the key is free.
    while now_ns() < keep_until + 200_000_000 {
        std::thread::sleep(Duration::from_millis(100));
    }
    case.run(&["status", "k"]).expect_state("free");
    // A run takes it once --max-clock-skew (2 s) more has passed.
    while now_ns() < keep_until + 2_200_000_000 {
        std::thread::sleep(Duration::from_millis(100));
    }
    let (third, ran) = try_run(&case, &[]);
    third.expect_code(0);
    third.check("third run's command ran after --keep", true, ran);
}

#[test]
fn keep_shorter_than_the_command_releases_at_once() {
    let case = Case::new("keep_shorter_than_the_command");
    let out = case.run(&["run", "k", "--keep", "100ms", "--", "sh", "-c", "sleep 0.5"]);
    out.expect_code(0);
    out.check("released", true, out.has_log("lock released"));
    case.run(&["status", "k"]).expect_state("free");
}

#[test]
fn owner_id_reclaims_a_crashed_holder_s_lock_at_once_and_only_for_that_id() {
    let case = Case::new("owner_id_reclaims");
    let mut holder =
        case.spawn(&["run", "k", "--owner", "job-1", "--", "sh", "-c", &case.holding_script("started", "release")]);
    holder.wait_for_line(&case.path("started"), WAIT);
    signal(holder.pid(), libc::SIGKILL);
    holder.wait(WAIT).expect_death_by(libc::SIGKILL);
    let crashed = item(&case, "k");
    assert!(crashed.expire_ns > now_ns() + 30_000_000_000, "the crashed holder's lease runs on: {crashed:?}");
    assert_eq!(crashed.owner_id.as_deref(), Some("job-1"));

    let (other, ran) = try_run(&case, &["--owner", "job-2"]);
    other.expect_code(9);
    other.check("another id's command ran", false, ran);

    let mut env = case.env();
    env.insert("LOCK_EXEC_OWNER_ID", "job-1".into());
    let start = Instant::now();
    let script = case.marker_script();
    let args = ["-t", case.table(), "run", "k", "--locked-exit-code", "9", "--", "sh", "-c", &script];
    let same = case.spawn_raw(&args, env).wait(WAIT);
    same.expect_code(0);
    same.check("the same id's command ran", true, case.exists("marker"));
    same.check("at once (under 10 s, not after the 60 s lease)", true, start.elapsed() < Duration::from_secs(10));
    let fence = same.log("lock acquired")["fence"].as_u64();
    same.check("a new acquisition: the fence went up", crashed.fence.map(|f| f + 1), fence);
    let released = item(&case, "k");
    same.check("the release removes the id", None, released.owner_id);
}

/// Two live runs with one id: the second takes the lock over, and the first loses it at its next renewal
/// (its per-process token no longer matches), stops its command and exits 75.
#[test]
fn a_second_live_run_with_the_same_owner_id_takes_over_and_the_first_exits_75() {
    let case = Case::new("same_owner_id_live");
    let mut first = case.spawn(&[
        "run",
        "k",
        "-e",
        "3s",
        "--owner",
        "job-1",
        "--",
        "sh",
        "-c",
        &case.holding_script("started", "release"),
    ]);
    first.wait_for_line(&case.path("started"), WAIT);
    let script = format!("echo $LOCK_EXEC_FENCE > '{}'", case.file("second"));
    let second = case.run(&["run", "k", "--owner", "job-1", "--", "sh", "-c", &script]);
    second.expect_code(0);
    let first = first.wait(WAIT);
    first.expect_code(75);
    first.check("lock lost", true, first.has_log("lock lost"));
}

/// `--limit` with an owner id that parallel runs share (the README's Job recipe): a run takes a free slot, never the
/// live slot of a run with the same id while another slot is free. Before, the slots were tried in a random order
/// and a same-id slot was taken like a free one: the sibling lost its lock (exit 75) while a slot stood free.
#[test]
fn limit_with_a_shared_owner_id_takes_a_free_slot_before_a_live_sibling_s() {
    let case = Case::new("limit_shared_owner");
    let read = |name: &str| std::fs::read_to_string(case.path(name)).unwrap_or_default().trim().to_owned();
    let holding =
        format!("echo $LOCK_EXEC_SLOT > '{}'; {}", case.file("slot"), case.holding_script("started", "release"));
    let mut first =
        case.spawn(&["run", "k", "-e", "3s", "--limit", "2", "--owner", "job-1", "--", "sh", "-c", &holding]);
    first.wait_for_line(&case.path("started"), WAIT);
    let held = read("slot");
    let free = if held == "0" { "1" } else { "0" };
    let owner = item(&case, &format!("k#{held}")).owner;
    // The slot order is random: eight runs leave a 1-in-256 chance that a wrong choice goes unseen.
    for round in 0..8 {
        let script = format!("echo $LOCK_EXEC_SLOT > '{}'", case.file("second"));
        let second = case.run(&["run", "k", "--limit", "2", "--owner", "job-1", "--", "sh", "-c", &script]);
        second.expect_code(0);
        second.check(&format!("round {round}: the free slot"), free, read("second").as_str());
        second.check(
            &format!("round {round}: the sibling's slot untouched"),
            &owner,
            &item(&case, &format!("k#{held}")).owner,
        );
    }
    // Every slot held: then the id reclaims one (a retried pod's own lock), as without --limit.
    let third_script = case.holding_script("third", "release");
    let mut third =
        case.spawn(&["run", "k", "-e", "3s", "--limit", "2", "--owner", "job-1", "--", "sh", "-c", &third_script]);
    third.wait_for_line(&case.path("third"), WAIT);
    let fourth = case.run(&["run", "k", "--limit", "2", "--owner", "job-1", "--", "true"]);
    fourth.expect_code(0);
    // The holder whose slot was reclaimed learns it at its next renewal (a second with -e 3s).
    std::thread::sleep(Duration::from_millis(2500));
    case.release("release");
    let first = first.wait(WAIT);
    let third = third.wait(WAIT);
    let lost = [first.code(), third.code()].iter().filter(|code| **code == Some(75)).count();
    fourth.check("with both slots held, one of the two holders lost its slot to the same id", 1, lost);
}

#[test]
fn limit_3_runs_at_most_3_commands_at_once_and_all_10_with_wait() {
    let case = Case::new("limit_3");
    let events = case.file("events");
    let script = format!(
        "echo \"S $(date +%s%N) $LOCK_EXEC_SLOT $LOCK_EXEC_KEY\" >> '{events}'; sleep 2; echo \"E $(date +%s%N)\" >> '{events}'"
    );
    let running: Vec<_> = (0..10)
        .map(|_| case.spawn(&["run", "k", "--limit", "3", "--wait", "120s", "--", "sh", "-c", &script]))
        .collect();
    let outs: Vec<Outcome> = running.into_iter().map(|r| r.wait(Duration::from_secs(180))).collect();
    for out in &outs {
        out.expect_code(0);
    }
    let text = std::fs::read_to_string(case.path("events")).expect("the events file");
    let mut events: Vec<(i128, i32)> = Vec::new();
    let mut slots = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let at: i128 = fields.get(1).and_then(|t| t.parse().ok()).unwrap_or_else(|| panic!("bad line {line:?}"));
        match fields[0] {
            "S" => {
                events.push((at, 1));
                slots.push(fields.get(2).copied().unwrap_or("").to_owned());
                assert_eq!(fields.get(3).copied(), Some("k"), "LOCK_EXEC_KEY is the key as given: {line:?}");
            }
            _ => events.push((at, -1)),
        }
    }
    assert_eq!(slots.len(), 10, "every run started its command once:\n{text}");
    assert!(slots.iter().all(|s| ["0", "1", "2"].contains(&s.as_str())), "LOCK_EXEC_SLOT in 0..3: {slots:?}");
    // Ends before starts at the same instant: a slot is released only after its command ended.
    events.sort_by_key(|&(at, delta)| (at, delta));
    let (mut now, mut most) = (0, 0);
    for (_, delta) in &events {
        now += delta;
        most = most.max(now);
    }
    assert!(most <= 3, "{most} commands ran at once:\n{text}");
    assert!(most >= 2, "the slots never ran side by side (at most {most} at once):\n{text}");
    for slot in 0..3 {
        assert!(case.item(&format!("k#{slot}")).is_some(), "slot item k#{slot}");
    }
    assert_eq!(case.item("k#3"), None, "no fourth slot");
    assert_eq!(case.item("k"), None, "--limit 3 does not use the plain key");
}

#[test]
fn the_release_records_the_last_run_and_status_shows_it() {
    let case = Case::new("last_run_record");
    let before = now_ns();
    case.run(&["run", "k", "--", "sh", "-c", "sleep 0.3; exit 4"]).expect_code(4);
    let after = now_ns();
    let out = case.run(&["status", "k"]);
    out.expect_code(0);
    let json = out.stdout_json();
    out.check("last_exit_code", json!(4), json["last_exit_code"].clone());
    out.check("last_host", json!(host_name()), json["last_host"].clone());
    let time = |field: &str| json[field].as_str().and_then(lock::parse_rfc3339_ns);
    let (started, finished) = (time("last_started"), time("last_finished"));
    let in_run = |t: Option<i128>| t.is_some_and(|t| (before..=after).contains(&t));
    out.check("last_started within the run", true, in_run(started));
    out.check("last_finished within the run", true, in_run(finished));
    let duration = json["last_duration_ms"].as_i64().unwrap_or(-1);
    out.check("last_duration_ms from 300 ms, under 30 s", true, (300..30_000).contains(&duration));
    out.check(
        "last_duration_ms is finished - started",
        Some(i128::from(duration)),
        started.zip(finished).map(|(s, f)| (f - s) / 1_000_000),
    );

    let text = case.run(&["status", "--log-format", "text", "k"]);
    text.check("text status shows the last exit code", true, text.stdout.lines().any(|l| l == "last_exit_code   4"));

    // A second run replaces the record.
    case.run(&["run", "k", "true"]).expect_code(0);
    let json = case.run(&["status", "k"]).stdout_json();
    assert_eq!(json["last_exit_code"], json!(0), "{json}");
}

#[test]
fn every_write_sets_ttl_to_the_lease_end_or_release_plus_the_retention() {
    let case = Case::new("ttl_on_every_write");
    // acquire (and renewals): the lease end plus 720 h
    let mut running =
        case.spawn(&["run", "k", "-e", "3s", "--", "sh", "-c", &case.holding_script("started", "release")]);
    running.wait_for_line(&case.path("started"), WAIT);
    let held = item(&case, "k");
    assert_eq!(held.ttl.map(i128::from), Some(held.expire_ns / 1_000_000_000 + DEFAULT_RETAIN_S), "{held:?}");
    // a renewal (every second with -e 3s) moves it with the lease
    assert!(
        eventually(WAIT, || item(&case, "k").expire_ns > held.expire_ns),
        "no renewal within 30 s: {:?}",
        case.item("k")
    );
    let renewed = item(&case, "k");
    assert_eq!(renewed.ttl.map(i128::from), Some(renewed.expire_ns / 1_000_000_000 + DEFAULT_RETAIN_S));
    // release: the release time plus 720 h
    let before = now_ns();
    case.release("release");
    running.wait(WAIT).expect_code(0);
    expect_ttl_between("after a run", &item(&case, "k"), before, now_ns(), DEFAULT_RETAIN_S);

    // --retain 1h, through the flag and the variable
    let before = now_ns();
    case.run(&["run", "k", "--retain", "1h", "true"]).expect_code(0);
    expect_ttl_between("after a run with --retain 1h", &item(&case, "k"), before, now_ns(), HOUR);
    let mut env = case.env();
    env.insert("LOCK_EXEC_RETAIN", "2h".into());
    let before = now_ns();
    case.run_env(&["run", "k", "true"], env).expect_code(0);
    expect_ttl_between("after a run with LOCK_EXEC_RETAIN=2h", &item(&case, "k"), before, now_ns(), 2 * HOUR);

    // unlock
    let before = now_ns();
    case.run(&["unlock", "k", "--retain", "3h"]).expect_code(0);
    expect_ttl_between("after unlock", &item(&case, "k"), before, now_ns(), 3 * HOUR);

    // a --keep release: the keep instant plus the retention
    case.run(&["run", "k", "--keep", "10m", "--retain", "1h", "true"]).expect_code(0);
    let kept = item(&case, "k");
    let until = acquired_ns(&kept) + 600_000_000_000;
    assert_eq!(kept.ttl.map(i128::from), Some(until / 1_000_000_000 + HOUR), "{kept:?}");
}

#[test]
fn an_item_of_the_go_tool_gets_a_ttl_only_when_lock_exec_writes_it() {
    let case = Case::new("go_item_ttl");
    case.put_go_item("k", 1);
    case.run(&["status", "k"]).expect_state("free");
    assert_eq!(item(&case, "k").ttl, None, "status does not write");
    case.run(&["run", "k", "true"]).expect_code(0);
    assert!(item(&case, "k").ttl.is_some());
}

#[test]
fn bad_cron_options_are_usage_errors_and_nothing_runs() {
    let case = Case::new("bad_cron_options");
    let cases: &[(&[&str], &str)] = &[
        (&["--keep", "5x"], "--keep"),
        (&["--wait", "soon"], "--wait"),
        (&["--limit", "0"], "--limit"),
        (&["--limit", "-1"], "--limit"),
        (&["--retain", "30m"], "--retain"),
        (&["--owner", ""], "--owner"),
    ];
    for (flags, expected) in cases {
        let mut args = vec!["-t", case.table(), "run", "k"];
        args.extend_from_slice(flags);
        let out = case.run_not_started(&args, case.env());
        out.expect_code(64);
        out.expect_stderr_contains(expected);
    }
    let mut env = case.env();
    env.insert("LOCK_EXEC_RETAIN", "59m".into());
    let out = case.run_not_started(&["-t", case.table(), "run", "k"], env);
    out.expect_code(64);
    out.expect_stderr_contains("LOCK_EXEC_RETAIN 59m0s is shorter than the minimum 1h");
    let mut env = case.env();
    env.insert("LOCK_EXEC_OWNER_ID", "line\nbreak".into());
    let out = case.run_not_started(&["-t", case.table(), "run", "k"], env);
    out.expect_code(64);
    out.expect_stderr_contains("LOCK_EXEC_OWNER_ID: at most 1024 bytes without control characters");
    assert_eq!(case.item("k"), None, "nothing was written");
}

/// SIGTERM while a `--limit` attempt is going through its slots: the cleanup clears the slot in flight, and the
/// attempt tries no further slot, so nothing is left held by the dead run. The proxy answers the first slot's
/// acquire as held after 300 ms (SIGTERM goes out meanwhile) and holds the cleanup back 300 ms, time enough for
/// an attempt that went on to send its next slot's acquire.
#[test]
fn sigterm_during_a_limit_attempt_leaves_no_slot_held() {
    use std::sync::mpsc;

    use crate::support::{Reply, Server, endpoint, forward};

    let case = Case::new("sigterm_during_limit_attempt");
    let target = endpoint().to_owned();
    let (first_seen, first_rx) = mpsc::channel::<()>();
    let mut answered_first = false;
    let server = Server::start(move |seen| {
        let body: serde_json::Value = serde_json::from_str(&seen.body).unwrap_or_default();
        let condition = body["ConditionExpression"].as_str().unwrap_or_default();
        if condition.starts_with("attribute_not_exists") && !answered_first {
            answered_first = true;
            let _ = first_seen.send(());
            std::thread::sleep(Duration::from_millis(300));
            let mut item = body["Key"].clone();
            item["expire"] = json!({ "N": (now_ns() + 60_000_000_000).to_string() });
            item["owner"] = json!({ "S": "elsewhere" });
            let answer = json!({
                "__type": "com.amazonaws.dynamodb.v20120810#ConditionalCheckFailedException",
                "message": "The conditional request failed",
                "Item": item,
            });
            return Reply { status: 400, ..Reply::json(&answer) };
        }
        if condition == "#owner = :me" {
            std::thread::sleep(Duration::from_millis(300));
        }
        forward(&target, seen)
    });
    let mut env = case.env();
    env.insert("AWS_ENDPOINT_URL", server.url());
    let script = case.marker_script();
    let args = ["-t", case.table(), "run", "k", "--limit", "2", "--", "sh", "-c", &script];
    let run = case.spawn_raw(&args, env);
    first_rx.recv_timeout(WAIT).expect("the first slot's acquire reached the proxy");
    signal(run.pid(), libc::SIGTERM);
    let out = run.wait(WAIT);
    out.expect_death_by(libc::SIGTERM);
    out.check("the command ran", false, case.exists("marker"));
    // whatever the dead run had sent has been answered by now
    std::thread::sleep(Duration::from_secs(1));
    drop(server);
    for slot in ["k#0", "k#1"] {
        let held = case.item(slot).filter(|item| lock::is_held(item, now_ns()));
        assert_eq!(held, None, "{slot} is held by the run that died of SIGTERM before starting its command");
    }
}

/// A renewal that DynamoDB applies after the `--keep` release (sent before it, delayed on the way) must not cut the
/// keep short: the item still holds the keep instant. The proxy answers the first renewal with a 500 without
/// forwarding it, and forwards it to the emulator right after the release, as a late arrival would be applied.
#[test]
fn a_renewal_applied_after_the_keep_release_does_not_shorten_the_keep() {
    use crate::support::{Reply, Seen, Server, endpoint, forward};

    let case = Case::new("late_renewal_after_keep");
    let target = endpoint().to_owned();
    let mut delayed: Option<Seen> = None;
    let mut delayed_once = false;
    let server = Server::start(move |seen| {
        let body: serde_json::Value = serde_json::from_str(&seen.body).unwrap_or_default();
        let condition = body["ConditionExpression"].as_str().unwrap_or_default();
        let update = body["UpdateExpression"].as_str().unwrap_or_default();
        if update == "SET #expire = :expire, #ttl = :ttl" && !delayed_once {
            delayed_once = true;
            delayed = Some(seen.clone());
            return Reply::new(500, r#"{"__type":"InternalServerError","message":"delayed by the test"}"#);
        }
        let reply = forward(&target, seen);
        if condition == "#owner = :me"
            && update.contains("#last_exit_code")
            && let Some(renewal) = delayed.take()
        {
            forward(&target, &renewal);
        }
        reply
    });
    let mut env = case.env();
    env.insert("AWS_ENDPOINT_URL", server.url());
    let args = ["-t", case.table(), "run", "k", "-e", "3s", "--keep", "30s", "--", "sh", "-c", "sleep 1.5"];
    let out = case.spawn_raw(&args, env).wait(WAIT);
    drop(server);
    out.expect_code(0);
    out.check("the keep release went through", true, out.has_log("lock kept until --keep ends"));
    let held = item(&case, "k");
    out.check("expire is still acquired + 30 s", acquired_ns(&held) + 30_000_000_000, held.expire_ns);
}

/// A lock kept by `--keep` after its run ended has no process behind it: `status` says so (`kept`), and `unlock`
/// does not promise that a holder stops "at its next renewal". Before, both read like a live holder's.
#[test]
fn a_lock_kept_after_its_run_is_shown_as_kept_not_as_a_live_holder() {
    let case = Case::new("kept_after_run");
    case.run(&["run", "k", "--keep", "1h", "--", "true"]).expect_code(0);
    let status = case.run(&["status", "k"]);
    status.expect_code(3);
    let json = status.stdout_json();
    status.check("state", json!("held"), json["state"].clone());
    status.check("kept", json!(true), json["kept"].clone());
    let unlock = case.run(&["unlock", "k"]);
    unlock.expect_code(0);
    let line = unlock.log("lock force-released");
    let stops = line["holder_stops"].as_str().unwrap_or_default().to_owned();
    unlock.check("holder_stops", true, stops.starts_with("nothing to stop: the run ended at "));
    // A live holder still reads as one.
    let mut live = case.spawn(&["run", "k", "--", "sh", "-c", &case.holding_script("started", "release")]);
    live.wait_for_line(&case.path("started"), WAIT);
    let status = case.run(&["status", "k"]);
    status.check("a live holder is not kept", Value::Null, status.stdout_json()["kept"].clone());
    case.release("release");
    live.wait(WAIT).expect_code(0);
    // A retried run of the same --owner id takes a kept lock over from a host whose clock is 1.5 s behind: the
    // kept run's record then has a later start than the new holder's `acquired`, and the new holder is still not
    // taken for a kept lock (the record's fence says which lease it belongs to).
    case.run(&["run", "k", "--keep", "20s", "--owner", "job-1", "--", "true"]).expect_code(0);
    let mut env = case.env();
    env.insert("LOCK_EXEC_TEST_CLOCK_OFFSET_MS", "-1500".into());
    let script = case.holding_script("retried", "release-retried");
    let args = ["-t", case.table(), "run", "k", "--owner", "job-1", "--", "sh", "-c", &script];
    let mut retried = case.spawn_raw(&args, env);
    retried.wait_for_line(&case.path("retried"), WAIT);
    let status = case.run(&["status", "k"]);
    status.check("a reclaiming holder behind in time is not kept", Value::Null, status.stdout_json()["kept"].clone());
    case.release("release-retried");
    retried.wait(WAIT).expect_code(0);
}

/// `--limit 2` with one owner id, both slots held: one kept by `--keep` after its run, one by a live run. A third
/// run of the id reclaims the kept slot, which no process holds, never the live run's (which would then lose its
/// lock and exit 75). Before, the second pass took either.
#[test]
fn limit_reclaims_a_kept_slot_before_a_live_one() {
    // The slot order is random: eight rounds leave a 1-in-256 chance that a wrong choice goes unseen.
    for round in 0..8 {
        let case = Case::new(&format!("limit_kept_first_{round}"));
        let args = ["run", "k", "--limit", "2", "--owner", "job-1"];
        case.run(&[&args[..], &["--keep", "60s", "--", "true"]].concat()).expect_code(0);
        let script = case.holding_script("started", "release");
        let mut live = case.spawn(&[&args[..], &["-e", "3s", "--", "sh", "-c", &script]].concat());
        live.wait_for_line(&case.path("started"), WAIT);
        let third = case.run(&[&args[..], &["--", "true"]].concat());
        third.expect_code(0);
        // The live run would learn of a reclaim at its next renewal (a second with -e 3s).
        std::thread::sleep(Duration::from_millis(1500));
        case.release("release");
        live.wait(WAIT).expect_code(0);
    }
}
