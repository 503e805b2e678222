//! A table shared with the Go tool (loomhq/lock-exec v2) during a migration: what its runs do to lock-exec's item,
//! sent here as the Go tool sends them, and what lock-exec does about it (README, "Migrating from the Go tool").
//!
//! The Go tool's requests, as its `lock/lock.go` builds them in the v2 releases the README's table describes:
//! - acquire: `PutItem` of `{key, expire}` (expire in Unix ns, `--expire` ahead) on the condition
//!   `attribute_not_exists(#key) OR expire < :now`: it replaces the whole item;
//! - release (`Unlock`, also the `unlock` command): an unconditional `DeleteItem`. In v2.0.0 to v2.2.1 `Run`
//!   registers it before trying the lock, so a run that finds the key locked deletes the holder's item.

use std::time::{Duration, Instant};

use lock_exec::dynamodb::Conditional;
use serde_json::json;

use crate::support::{Case, client, eventually, is_dead, now_ns};

const WAIT: Duration = Duration::from_secs(20);

/// The Go tool's acquire: a conditional `PutItem` of only `key` and `expire`.
fn go_lock(case: &Case, key: &str, expire_ns: i128) -> Conditional {
    let request = json!({
        "TableName": case.table(),
        "ConditionExpression": "attribute_not_exists(#key) OR expire < :now",
        "ExpressionAttributeNames": { "#key": "key" },
        "ExpressionAttributeValues": { ":now": { "N": now_ns().to_string() } },
        "Item": { "key": { "S": key }, "expire": { "N": expire_ns.to_string() } },
    });
    client()
        .call_conditional("PutItem", &request)
        .unwrap_or_else(|e| panic!("the Go-style PutItem of {key}: {}", lock_exec::error_chain(&e)))
}

/// The Go tool's release and `unlock`: an unconditional `DeleteItem`.
fn go_unlock(case: &Case, key: &str) {
    let request = json!({ "TableName": case.table(), "Key": { "key": { "S": key } } });
    if let Err(e) = client().call("DeleteItem", &request) {
        panic!("the Go-style DeleteItem of {key}: {}", lock_exec::error_chain(&e));
    }
}

/// A Go run's expire: 24 h ahead, its default (and the only value in v2.0.x).
fn go_expire() -> i128 {
    now_ns() + 24 * 3600 * 1_000_000_000
}

/// Starts `run k -e 3s` (a renewal every second) with a command that writes its pid to `child.pid` and then is
/// `sleep 60`; returns the running lock-exec and the command's pid once lock-exec holds the key.
fn hold(case: &Case) -> (crate::support::Running, u32) {
    let script = format!("echo $$ > '{}'; exec sleep 60", case.file("child.pid"));
    let mut running = case.spawn(&["run", "k", "-e", "3s", "--", "sh", "-c", &script]);
    let pid = running.wait_for_pid(&case.path("child.pid"), WAIT);
    (running, pid)
}

/// What a v2.0.0 to v2.2.1 Go run does when lock-exec holds the key: its PutItem fails, then its deferred Unlock
/// deletes the item. lock-exec's next renewal (every `--expire`/3, 1 s here) finds the item gone: the command is
/// stopped and lock-exec exits 75, without writing the item back.
#[test]
fn an_item_deleted_by_a_losing_go_run_stops_the_command_at_the_next_renewal_with_75() {
    let case = Case::new("migration_deleted_item");
    let (running, pid) = hold(&case);
    let held = case.item("k").expect("lock-exec's item");
    if held.owner.is_none() {
        panic!("lock-exec's item has no owner while its command runs: {held:?}");
    }

    match go_lock(&case, "k", go_expire()) {
        Conditional::Failed(_) => {}
        Conditional::Done(_) => panic!("the Go-style PutItem replaced an item lock-exec holds"),
    }
    go_unlock(&case, "k");
    let deleted = Instant::now();

    // Renewals go out every second; the one after the delete must stop the command.
    if !eventually(Duration::from_secs(3), || is_dead(pid)) {
        panic!(
            "the command {pid} still runs 3 s after its lock item was deleted (renewals every 1 s)\n{}",
            running.stderr_so_far()
        );
    }
    let stopped_after = deleted.elapsed();
    let out = running.wait(WAIT);
    out.expect_code(75);
    let lost = out.log("lock lost");
    out.check(
        "lock lost (level, error)",
        json!(["error", "the lock item was deleted"]),
        json!([lost["level"], lost["error"]]),
    );
    out.check("command stopped within 3 s of the delete", true, stopped_after < Duration::from_secs(3));
    out.check("the item after lock-exec exited (not written back)", None, case.item("k"));
}

/// What a v2.3.0 or later Go run does when lock-exec holds the key: its PutItem fails (lock-exec's `expire` is in
/// Unix ns like the Go tool's, so the condition `expire < :now` sees a future lease) and it deletes nothing.
/// lock-exec's command runs to its end.
#[test]
fn a_go_run_that_loses_without_deleting_leaves_the_holder_running() {
    let case = Case::new("migration_go_loser");
    let script = case.holding_script("started", "release");
    let mut running = case.spawn(&["run", "k", "-e", "3s", "--", "sh", "-c", &script]);
    running.wait_for_line(&case.path("started"), WAIT);
    let before = case.item("k").expect("lock-exec's item");

    match go_lock(&case, "k", go_expire()) {
        Conditional::Failed(_) => {}
        Conditional::Done(_) => panic!("the Go-style PutItem replaced an item lock-exec holds: {before:?}"),
    }
    // Two renewals later the holder still runs and still owns the item.
    std::thread::sleep(Duration::from_millis(2500));
    let after = case.item("k").expect("lock-exec's item");
    let same = (after.owner.clone(), after.fence, after.host.clone());
    if same != (before.owner.clone(), before.fence, before.host.clone()) || after.expire_ns <= now_ns() {
        panic!("lock-exec's item changed after a losing Go PutItem\n  before: {before:?}\n  after:  {after:?}");
    }
    case.release("release");
    let out = running.wait(WAIT);
    out.expect_code(0);
    out.check("lock lost logged", false, out.has_log("lock lost"));
    out.check("released", true, out.has_log("lock released"));
}

/// A Go run that takes a key lock-exec released replaces the whole item: only `key` and `expire` are left, the
/// fence with the rest. If that run's delete then fails, the expired item is what lock-exec finds next: it takes
/// it over and seeds the fence again from the clock (ms since the epoch, plus one), which is above every fence
/// handed out before unless the key was acquired more than once per millisecond on average.
#[test]
fn a_go_put_wipes_the_fence_and_the_next_run_reseeds_it_above_earlier_fences() {
    let case = Case::new("migration_fence_reseed");
    let fence_of = |out: &crate::support::Outcome| -> u64 {
        out.expect_code(0);
        out.stdout.trim().parse().unwrap_or_else(|_| out.fail("LOCK_EXEC_FENCE", &"a number", &out.stdout))
    };
    let mut fences = Vec::new();
    for _ in 0..3 {
        fences.push(fence_of(&case.run(&["run", "k", "--", "sh", "-c", "echo $LOCK_EXEC_FENCE"])));
    }
    if !fences.windows(2).all(|w| w[1] == w[0] + 1) {
        panic!("fences of three runs do not count up by one: {fences:?}");
    }
    let last = *fences.last().expect("three fences");

    // The Go run takes the released key (its PutItem condition holds: expire is 0) ...
    match go_lock(&case, "k", now_ns() - 3_000_000_000) {
        Conditional::Done(_) => {}
        Conditional::Failed(old) => panic!("the Go-style PutItem could not take a released key: {old:?}"),
    }
    // ... and leaves only what it wrote: its expire (passed here by more than --max-clock-skew, as after a failed
    // delete).
    let go = case.item("k").expect("the Go item");
    let wiped = (go.owner.is_none(), go.host.is_none(), go.pid.is_none(), go.command.is_none());
    if wiped != (true, true, true, true) || go.acquired.is_some() || go.fence.is_some() {
        panic!("the Go-style PutItem left lock-exec attributes behind: {go:?}");
    }

    let before_ms = (now_ns() / 1_000_000) as u64;
    let out = case.run(&["run", "k", "--", "sh", "-c", "echo $LOCK_EXEC_FENCE"]);
    let after_ms = (now_ns() / 1_000_000) as u64;
    let reseeded = fence_of(&out);
    out.check("the new fence is above the fences handed out before", true, reseeded > last);
    out.check(
        "the new fence is the clock in ms (+1) at the acquire",
        true,
        (before_ms + 1..=after_ms + 1).contains(&reseeded),
    );
    let item = case.item("k").expect("lock-exec's item");
    out.check("stored fence and host after the run", (Some(reseeded), true), (item.fence, item.host.is_some()));
}

/// A Go holder's item has no owner, host, pid or fence: `status` shows them as null (JSON) or `-` (text).
#[test]
fn status_of_a_go_holder_shows_no_owner_host_pid_or_fence() {
    let case = Case::new("migration_status_go_holder");
    match go_lock(&case, "k", go_expire()) {
        Conditional::Done(_) => {}
        Conditional::Failed(old) => panic!("the Go-style PutItem could not take a new key: {old:?}"),
    }
    let out = case.run(&["status", "k"]);
    out.expect_code(3);
    let json = out.stdout_json();
    let fields = ["state", "owner", "host", "pid", "fence"].map(|f| json[f].clone());
    out.check(
        "(state, owner, host, pid, fence)",
        [json!("held"), json!(null), json!(null), json!(null), json!(null)],
        fields,
    );
    out.check("expire is shown", true, json["expire"].is_string());

    let out = case.run(&["status", "--log-format", "text", "k"]);
    out.expect_code(3);
    for label in ["owner", "host", "pid", "fence"] {
        let line = format!("{label:<16} -");
        out.check(&format!("the {label} line"), true, out.stdout.lines().any(|l| l == line));
    }
}
