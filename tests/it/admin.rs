//! `unlock`, `status`, `version` and the help texts, through the binary.

use std::time::Duration;

use lock_exec::Env;
use lock_exec::lock::{self, Acquire};
use serde_json::json;

use crate::support::{Case, client, owner};

/// Takes `key` through the library as host `it-host`, pid 4242; returns the fence.
fn hold(case: &Case, key: &str) -> u64 {
    let who = owner("it-host", 4242);
    let terms = lock::Terms {
        now: Env::real().now(),
        lease: Duration::from_secs(60),
        retain: lock_exec::cli::DEFAULT_RETAIN,
        max_clock_skew: lock_exec::cli::DEFAULT_MAX_CLOCK_SKEW,
        reclaim: true,
    };
    match lock::acquire(&client(), case.table(), key, &who, &terms) {
        Ok(Acquire::Acquired(lease)) => lease.fence,
        other => panic!("could not take {key}: {other:?}"),
    }
}

#[test]
fn unlock_clears_the_lease_and_keeps_the_item_and_fence() {
    let case = Case::new("unlock_clears_the_lease");
    let fence = hold(&case, "k");
    let out = case.run(&["unlock", "k"]);
    out.expect_code(0);
    let line = out.log("lock force-released");
    out.check("previous holder", json!("it-host"), line["holder"].clone());
    let stops = line["holder_stops"].as_str().unwrap_or_default();
    out.check("says when the holder's command stops", true, stops.starts_with("at its next renewal, by 20"));
    let item = case.item("k").expect("unlock keeps the item");
    out.check("item (owner, expire, fence)", (None, 0, Some(fence)), (item.owner, item.expire_ns, item.fence));
    case.run(&["status", "k"]).expect_state("free");
}

#[test]
fn unlock_delete_removes_the_item() {
    let case = Case::new("unlock_delete");
    hold(&case, "k");
    let out = case.run(&["unlock", "--delete", "k"]);
    out.expect_code(0);
    out.log("lock item deleted");
    out.check("item after unlock --delete", None, case.item("k"));
    case.run(&["status", "k"]).expect_state("never used");
}

/// Unlocking a key that is already free (released, or its lease over) does not name a holder: the last holder
/// is not holding it, and saying "force-released holder=..." would send the reader after a run that ended.
#[test]
fn unlock_of_a_free_key_names_no_holder() {
    let case = Case::new("unlock_free");
    hold(&case, "k");
    case.run(&["unlock", "k"]).expect_code(0);
    let out = case.run(&["unlock", "k"]);
    out.expect_code(0);
    let line = out.log("lock already free; nothing to release");
    out.check("holder fields", (None, None), (line.get("holder"), line.get("holder_pid")));
    let out = case.run(&["unlock", "--delete", "k"]);
    out.expect_code(0);
    let line = out.log("lock item deleted");
    out.check("holder fields", (None, None), (line.get("holder"), line.get("holder_pid")));
}

#[test]
fn unlock_of_a_never_used_key_succeeds() {
    let case = Case::new("unlock_never_used");
    for args in [&["unlock", "nothing"][..], &["unlock", "--delete", "nothing"][..]] {
        let out = case.run(args);
        out.expect_code(0);
        out.check("item", None, case.item("nothing"));
    }
    case.run(&["unlock", "nothing"]).log("no lock item; nothing to unlock");
}

#[test]
fn status_exits_3_while_held_and_prints_the_holder() {
    let case = Case::new("status_held");
    let fence = hold(&case, "k");
    let out = case.run(&["status", "k"]);
    out.expect_code(3);
    let json = out.stdout_json();
    let fields = ["key", "state", "host", "pid", "fence"].map(|f| json[f].clone());
    out.check(
        "(key, state, host, pid, fence)",
        [json!("k"), json!("held"), json!("it-host"), json!(4242), json!(fence)],
        fields,
    );
    out.check("expire is set", true, json["expire"].is_string());
}

/// A free key shows no holder: the last holder's host, pid and command are not under the live holder's labels;
/// the last run's record says who ran it and how it ended.
#[test]
fn status_of_a_free_key_shows_the_last_run_not_a_holder() {
    let case = Case::new("status_free_last_run");
    case.run(&["run", "k", "--", "sh", "-c", "exit 4"]).expect_code(4);
    let out = case.run(&["status", "k"]);
    out.expect_code(0);
    let json = out.stdout_json();
    out.check("state", json!("free"), json["state"].clone());
    for holder in ["host", "pid", "owner", "owner_id", "command", "acquired", "expire"] {
        out.check(&format!("{holder} of a free key"), None, json.get(holder));
    }
    out.check("last_exit_code", json!(4), json["last_exit_code"].clone());
    out.check("last_host", true, json["last_host"].is_string());
    out.check("fence", true, json["fence"].is_u64());
    let text = case.run(&["status", "--log-format", "text", "k"]);
    let labels: Vec<&str> = text.stdout.lines().filter_map(|l| l.split_whitespace().next()).collect();
    text.check(
        "text labels",
        vec![
            "key",
            "state",
            "fence",
            "ttl",
            "last_exit_code",
            "last_host",
            "last_started",
            "last_finished",
            "last_duration_ms",
        ],
        labels,
    );
}

#[test]
fn status_of_a_never_used_key_exits_0() {
    let case = Case::new("status_never_used");
    let out = case.run(&["status", "nothing"]);
    out.expect_code(0);
    out.check("stdout", json!({"key": "nothing", "state": "never used"}), out.stdout_json());
}

#[test]
fn status_text_prints_aligned_lines() {
    let case = Case::new("status_text");
    hold(&case, "k");
    let out = case.run(&["status", "--log-format", "text", "k"]);
    out.expect_code(3);
    let lines: Vec<&str> = out.stdout.lines().collect();
    out.check(
        "first two lines",
        vec!["key              k", "state            held"],
        lines.iter().take(2).copied().collect(),
    );
    for line in &lines {
        // `label` padded to 16 columns (the longest, `last_duration_ms`), one space, the value.
        let aligned = line.len() > 17 && line.as_bytes()[16] == b' ' && line.as_bytes()[17] != b' ';
        out.check(&format!("value starts in column 18: {line:?}"), true, aligned);
    }
    out.check("host line", true, lines.contains(&"host             it-host"));

    let out = case.run(&["status", "--log-format", "text", "nothing"]);
    out.expect_code(0);
    out.check("never used", "key              nothing\nstate            never used\n", out.stdout.as_str());
}

/// Every text attribute of an item, and the key, with ESC sequences, a newline, a tab, DEL and a C1 control
/// (CSI): `status` never writes a raw control character to the terminal, in text or JSON.
#[test]
fn status_escapes_control_characters_of_the_item() {
    let case = Case::new("status_controls");
    let nasty = |what: &str| format!("{what}\u{1b}[2J\u{1b}]0;title\u{7}\nsecond line\tx\u{7f}\u{9b}31m");
    let key = nasty("k");
    case.put_item(json!({
        "key": {"S": key},
        "expire": {"N": (crate::support::now_ns() + 60_000_000_000).to_string()},
        "owner": {"S": nasty("owner")},
        "host": {"S": nasty("host")},
        "pid": {"N": "4242"},
        "command": {"S": nasty("command")},
        "acquired": {"S": nasty("acquired")},
        "fence": {"N": "7"},
        "owner_id": {"S": nasty("id")},
    }));
    let raw_controls = |text: &str| text.chars().filter(|c| c.is_control() && *c != '\n').collect::<Vec<char>>();

    let out = case.run(&["status", "--log-format", "text", &key]);
    out.expect_code(3);
    out.check("raw control characters in stdout", Vec::<char>::new(), raw_controls(&out.stdout));
    let lines: Vec<&str> = out.stdout.lines().collect();
    out.check("one line per field", 16, lines.len());
    let escaped = "\\x1b[2J\\x1b]0;title\\x07\\nsecond line\\tx\\x7f\\x9b31m";
    let labels = [("key", "k"), ("host", "host"), ("owner", "owner"), ("command", "command"), ("owner_id", "id")];
    for (label, value) in labels {
        let expected = format!("{label:<16} {value}{escaped}");
        out.check(&format!("the {label} line"), true, lines.contains(&expected.as_str()));
    }

    let out = case.run(&["status", &key]);
    out.expect_code(3);
    out.check("raw control characters in stdout", Vec::<char>::new(), raw_controls(&out.stdout));
    let json = out.stdout_json();
    for (field, value) in [("key", "k"), ("host", "host"), ("owner", "owner"), ("command", "command")] {
        out.check(&format!("JSON {field}"), json!(nasty(value)), json[field].clone());
    }
}

#[test]
fn version_and_help_print_to_stdout() {
    let case = Case::new("version_and_help");
    let cases: [(&[&str], &str); 8] = [
        (&["version"], "lock-exec 0."),
        (&["--version"], "lock-exec 0."),
        (&["--help"], "Usage:"),
        (&["--help"], "Exit codes:\n"),
        (&["--help"], "Examples:\n  lock-exec table create"),
        (&["--help"], "  -e, --expire DURATION"),
        (&["run", "--help"], "--locked-exit-code"),
        (&["help", "status"], "exits 0 when the key is free"),
    ];
    for (args, expected) in cases {
        let out = case.run_with(args, |_| {});
        out.expect_code(0);
        out.check(&format!("stdout mentions {expected:?}"), true, out.stdout.contains(expected));
        out.check("stderr", "", out.stderr.as_str());
    }
}

/// The usage errors a newcomer meets first: exit 64, one line that answers the next question.
#[test]
fn usage_errors_answer_the_next_question() {
    let case = Case::new("usage_errors_next_question");
    /// Arguments, environment variables added, the start of stderr.
    type Row<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
    let cases: [Row; 5] = [
        (&["help", "foo"], &[], "lock-exec: help: unknown topic \"foo\" (run, unlock"),
        (&["version", "extra"], &[], "lock-exec: version: unexpected argument \"extra\""),
        (&["run", "k", "true", "--tabel", "t"], &[], "lock-exec: invalid option '--tabel' (did you mean --table?)"),
        (
            &["run", "k", "true"],
            &[("LOCK_EXEC_EXPIRE", "bad")],
            "lock-exec: LOCK_EXEC_EXPIRE: invalid duration \"bad\"",
        ),
        (&["status", "k"], &[("LOCK_EXEC_TABLE", "ab")], "lock-exec: LOCK_EXEC_TABLE: invalid table name \"ab\""),
    ];
    for (args, vars, expected) in cases {
        let out = case.run_with(args, |env| env.extend(vars.iter().map(|(k, v)| (*k, (*v).to_owned()))));
        out.expect_code(64);
        out.check(&format!("stderr starts with {expected:?}"), true, out.stderr.starts_with(expected));
        out.check("stdout", "", out.stdout.as_str());
    }
}
