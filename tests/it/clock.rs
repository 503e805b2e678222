//! Clock skew (issue 9) through the binary: a lease counts as ended only `--max-clock-skew` after its `expire`,
//! a host whose clock is off DynamoDB's `Date` beyond the bound does not start its command (and is warned at
//! half), and a fence re-seeded by a host whose clock is behind does not go back. Clocks are shifted with the
//! debug-only `LOCK_EXEC_TEST_CLOCK_OFFSET_MS`, or the server's `Date` is rewritten by a proxy.

use std::time::Duration;

use lock_exec::Env;
use lock_exec::clock::{parse_rfc3339_ns, unix_ns};
use serde_json::json;

use crate::support::{Case, Outcome, Reply, Server, endpoint, forward, now_ns};

const WAIT: Duration = Duration::from_secs(30);

/// An HTTP `Date` for Unix ns `ns`.
fn http_date(ns: i128) -> String {
    time::OffsetDateTime::from_unix_timestamp((ns.div_euclid(1_000_000_000)) as i64)
        .expect("a valid time")
        .format(time::macros::format_description!(
            "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
        ))
        .expect("an HTTP date")
}

/// A proxy to the emulator whose answers carry a `Date` `shift_ms` away from the real clock.
fn date_shifting_proxy(shift_ms: i128) -> Server {
    let upstream = endpoint().to_owned();
    Server::start(move |seen| {
        let mut reply = forward(&upstream, seen);
        reply.headers.push(("date".into(), http_date(now_ns() + shift_ms * 1_000_000)));
        reply
    })
}

/// Runs `run k -- sh -c 'touch marker'` with the clock shifted by `offset_ms` and the extra arguments.
fn run_shifted(case: &Case, offset_ms: i64, extra: &[&str]) -> Outcome {
    let script = case.marker_script();
    let mut args = vec!["-t", case.table(), "run", "k"];
    args.extend_from_slice(extra);
    args.extend(["--", "sh", "-c", &script]);
    case.run_with(&args, |env| {
        env.insert("LOCK_EXEC_TEST_CLOCK_OFFSET_MS", offset_ms.to_string());
    })
}

/// The log lines whose message mentions the clock skew.
fn skew_lines(out: &Outcome) -> Vec<(String, String)> {
    out.logs()
        .iter()
        .map(|line| (line["level"].as_str().unwrap_or("").to_owned(), line["msg"].as_str().unwrap_or("").to_owned()))
        .filter(|(_, msg)| msg.contains("clock skew"))
        .collect()
}

#[track_caller]
fn expect_refused(case: &Case, out: &Outcome, direction: &str) {
    out.expect_code(75);
    out.check("the command ran (marker made)", false, case.exists("marker"));
    let errors: Vec<String> =
        skew_lines(out).into_iter().filter(|(level, _)| level == "error").map(|(_, msg)| msg).collect();
    out.check("one clock skew error", 1, errors.len());
    out.check("it says which way", true, errors[0].contains(direction));
    let item = case.item("k").expect("the acquire made the item");
    out.check("released (owner, expire)", (None, 0), (item.owner, item.expire_ns));
    // The refusal is a fatal error line with the exit code; the release says how long the lock was held.
    let error = out.logs().into_iter().find(|l| l["level"] == "error").unwrap_or_default();
    out.check("exit_code on the error", &json!(75), &error["exit_code"]);
    let released = out.log("lock released");
    out.check("duration_ms on lock released", true, released["duration_ms"].is_u64());
}

#[test]
fn a_clock_beyond_max_clock_skew_refuses_to_run_and_releases() {
    let case = Case::new("clock-refuses");
    // 5 s ahead, and then 5 s behind: beyond the default 2 s whatever the Date's rounding.
    let out = run_shifted(&case, 5_000, &[]);
    expect_refused(&case, &out, "ahead of");
    out.check(
        "the warning came first",
        true,
        out.messages().iter().any(|m| m.starts_with("clock skew") && m.contains("half")),
    );
    let out = run_shifted(&case, -5_000, &[]);
    expect_refused(&case, &out, "behind");
    // Allowed a larger skew, the same host runs (warned: 5 s is beyond half of 8 s).
    let out = run_shifted(&case, -5_000, &["--max-clock-skew", "8s"]);
    out.expect_code(0);
    out.check("the command ran", true, case.exists("marker"));
    out.check(
        "one warning",
        vec![("warn".to_owned(), true)],
        skew_lines(&out).into_iter().map(|(l, m)| (l, m.contains("half"))).collect::<Vec<_>>(),
    );
}

#[test]
fn a_server_date_beyond_max_clock_skew_refuses_to_run() {
    let case = Case::new("clock-server-date");
    // The local clock is right; the server's Date says it is 10 s later.
    let proxy = date_shifting_proxy(10_000);
    let script = case.marker_script();
    let out = case.run_with(&["-t", case.table(), "run", "k", "--", "sh", "-c", &script], |env| {
        env.insert("AWS_ENDPOINT_URL", proxy.url());
    });
    expect_refused(&case, &out, "behind");
    let line = out.logs().into_iter().find(|l| l["level"] == "error").unwrap_or_default();
    let offset = line["offset_ms"].as_i64().unwrap_or_default();
    out.check("offset about -10 s", true, (-11_000..=-9_000).contains(&offset));
}

#[test]
fn a_skew_over_half_the_bound_warns_once_and_runs() {
    let case = Case::new("clock-warns");
    // 3.2 s ahead with a 4 s bound: at least 2.2 s (beyond half) and at most 4.2 s (not certainly beyond 4 s).
    // A 1 s lease renewed every third over 1.5 s: about six answers, one warning.
    let script = format!("sleep 1.5; {}", case.marker_script());
    let out = case.run_with(
        &["-t", case.table(), "run", "k", "-e", "1s", "--max-clock-skew", "4s", "--", "sh", "-c", &script],
        |env| {
            env.insert("LOCK_EXEC_TEST_CLOCK_OFFSET_MS", "3200".into());
            env.insert("AWS_MAX_ATTEMPTS", "1".into());
        },
    );
    out.expect_code(0);
    out.check("the command ran", true, case.exists("marker"));
    let lines = skew_lines(&out);
    out.check("one warning, no error", vec!["warn".to_owned()], lines.iter().map(|(l, _)| l.clone()).collect());
    out.check("it says ahead", true, lines[0].1.contains("ahead of"));
    // In sync: no line about the clock at all.
    let out = run_shifted(&case, 0, &[]);
    out.expect_code(0);
    out.check("clock lines when in sync", Vec::<(String, String)>::new(), skew_lines(&out));
}

#[test]
fn a_lease_counts_as_ended_only_max_clock_skew_after_its_expire() {
    let case = Case::new("clock-expire-plus-skew");
    // A Go holder's item that ended half a second ago: with the default 2 s allowance it still blocks.
    let expire = now_ns() - 500_000_000;
    case.put_go_item("k", expire);
    let out = run_shifted(&case, 0, &[]);
    out.expect_code(0);
    out.check("did not run", true, out.has_log("did not run command. key is locked"));
    out.check("the command ran", false, case.exists("marker"));
    // Without the allowance the same item is free.
    let out = run_shifted(&case, 0, &["--max-clock-skew", "0s"]);
    out.expect_code(0);
    out.check("the command ran", true, case.exists("marker"));
    // A Go item in the future blocks whatever the allowance.
    case.put_go_item("k", now_ns() + 60_000_000_000);
    std::fs::remove_file(case.path("marker")).expect("remove the marker");
    let out = run_shifted(&case, 0, &["--max-clock-skew", "0s"]);
    out.check("the command ran", false, case.exists("marker"));
}

#[test]
fn a_contender_ahead_by_less_than_the_bound_starts_only_after_the_holder_s_command_is_dead() {
    let case = Case::new("clock-contender-ahead");
    // The holder's renewals and release fail (a proxy answers 500 after the acquire), so it stops its command
    // before its lease end: SIGTERM (ignored) at end - grace - margin, SIGKILL at end - margin (0.3 s).
    let upstream = endpoint().to_owned();
    let mut answered = 0;
    let proxy = Server::start(move |seen| {
        answered += 1;
        if answered == 1 { forward(&upstream, seen) } else { Reply::new(500, "{}") }
    });
    let alive = case.file("alive");
    let holder_script = format!("trap '' TERM; while :; do date +%s%N >> '{alive}'; sleep 0.02; done");
    let mut holder_env = case.env();
    holder_env.insert("AWS_ENDPOINT_URL", proxy.url());
    holder_env.insert("AWS_MAX_ATTEMPTS", "1".into());
    let mut holder =
        case.spawn_raw(&["-t", case.table(), "run", "k", "-e", "3s", "--", "sh", "-c", &holder_script], holder_env);
    holder.wait_for_line(&case.path("alive"), WAIT);
    // The contender's clock is 1.5 s ahead (within the 2 s bound): without the allowance it would take the key
    // 1.5 s before the holder's expire, while the holder's command still runs.
    let started = case.file("started");
    let contender_script = format!("date +%s%N > '{started}'");
    let contender =
        case.run_with(&["-t", case.table(), "run", "k", "--wait", "20s", "--", "sh", "-c", &contender_script], |env| {
            env.insert("LOCK_EXEC_TEST_CLOCK_OFFSET_MS", "1500".into());
        });
    let holder = holder.wait(WAIT);
    holder.expect_code(75);
    contender.expect_code(0);
    let expire = parse_rfc3339_ns(holder.log("lock acquired")["expire"].as_str().unwrap_or_default())
        .expect("the holder's expire");
    let read_ns = |name: &str| -> Vec<i128> {
        std::fs::read_to_string(case.path(name))
            .unwrap_or_default()
            .lines()
            .filter_map(|line| line.trim().parse().ok())
            .collect()
    };
    let last_alive = read_ns("alive").into_iter().max().expect("the holder's command wrote");
    let start = read_ns("started").first().copied().expect("the contender's command started");
    contender.check("the contender started after the holder's command was last alive", true, start > last_alive);
    // Its clock read expire + 2 s at the real expire + 0.5 s at the earliest.
    contender.check("started at or after the real expire + 0.5 s", true, start >= expire + 500_000_000);
    contender.check("and within a few seconds of it", true, start < expire + 6_000_000_000);
}

#[test]
fn a_host_whose_clock_is_behind_does_not_reseed_the_fence_lower() {
    let case = Case::new("clock-fence-seed");
    let out = run_shifted(&case, 0, &["-v"]);
    out.expect_code(0);
    out.check("an in-sync host raised its new fence", false, out.has_log("fence raised to the server's clock"));
    let first = case.item("k").and_then(|item| item.fence).expect("a fence");
    case.run(&["unlock", "--delete", "k"]).expect_code(0);
    assert_eq!(case.item("k"), None, "deleted");
    // A `Date` has whole seconds: the server's clock is known to within a second, so the guarantee is for fences
    // handed out more than a second before the re-seed.
    std::thread::sleep(Duration::from_millis(1100));
    // An hour behind: it is refused (75), but the fence its acquire wrote was raised to the server's clock.
    let out = run_shifted(&case, -3_600_000, &["-v"]);
    out.expect_code(75);
    out.check("raised", true, out.has_log("fence raised to the server's clock"));
    let second = case.item("k").and_then(|item| item.fence).expect("a fence");
    out.check("the fence grew past the first one", true, second > first);
    let now_ms = unix_ns(Env::real().now()) / 1_000_000;
    out.check(
        "and is about the server's clock in ms",
        true,
        (now_ms - 5_000..=now_ms + 5_000).contains(&(second as i128)),
    );
}

#[test]
fn bad_max_clock_skew_values_are_usage_errors() {
    let case = Case::new("clock-usage");
    for (args, variable) in [
        (vec!["run", "k", "--max-clock-skew", "2x", "--", "true"], None),
        (vec!["run", "k", "--max-clock-skew", "-1s", "--", "true"], None),
        (vec!["status", "k", "--max-clock-skew"], None),
        (vec!["run", "k", "--", "true"], Some("soon")),
    ] {
        let out = case.run_with(&args, |env| {
            env.insert("AWS_ENDPOINT_URL", "http://127.0.0.1:9".into());
            if let Some(value) = variable {
                env.insert("LOCK_EXEC_MAX_CLOCK_SKEW", value.into());
            }
        });
        // A bad value from the environment is named by its variable, not by the flag the user did not give.
        out.expect_code(64).expect_stderr_contains(if variable.is_some() {
            "LOCK_EXEC_MAX_CLOCK_SKEW"
        } else {
            "--max-clock-skew"
        });
    }
}
