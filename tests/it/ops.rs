//! The operator subcommands: `table create`, `list`, `doctor`, `completion`, and their usage errors.
//!
//! `ops::table_create*` and `ops::list*` also run against dynalite (no TTL API there); the `doctor` tests need moto
//! (TTL settings, IAM), and `doctor_with_iam_checks_on` its own moto server (`LOCK_EXEC_TEST_OPS_AUTH_ENDPOINT`),
//! whose signature and IAM checks it switches on.

use std::collections::BTreeMap;
use std::process::Command;

use lock_exec::Env;
use lock_exec::aws::credentials::Credentials;
use lock_exec::aws::http::Http;
use serde_json::{Value, json};

use crate::auth::{iam, switch_auth_on};
use crate::support::{
    Case, Outcome, Reply, Server, Table, client, create_table_request, emulator_has_ttl_api, endpoint, forward, now_ns,
    wait_until_active, xml_tag,
};

/// The `TimeToLiveDescription` of a table, through the library.
fn ttl_of(table: &str) -> Value {
    match client().call("DescribeTimeToLive", &json!({ "TableName": table })) {
        Ok(answer) => answer["TimeToLiveDescription"].clone(),
        Err(e) => panic!("DescribeTimeToLive {table}: {}", lock_exec::error_chain(&e)),
    }
}

/// The `Table` of `DescribeTable`, through the library.
fn describe(table: &str) -> Value {
    match client().call("DescribeTable", &json!({ "TableName": table })) {
        Ok(answer) => answer["Table"].clone(),
        Err(e) => panic!("DescribeTable {table}: {}", lock_exec::error_chain(&e)),
    }
}

/// stdout as JSON lines.
#[track_caller]
fn json_lines(out: &Outcome) -> Vec<Value> {
    out.stdout
        .lines()
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|e| out.fail("a stdout line is not JSON", &"a JSON object", &(line, e.to_string())))
        })
        .collect()
}

/// `doctor`'s checks and their results, in order, from its JSON lines.
#[track_caller]
fn results(out: &Outcome) -> Vec<(String, String)> {
    json_lines(out)
        .iter()
        .map(|line| {
            (line["check"].as_str().unwrap_or("?").to_owned(), line["result"].as_str().unwrap_or("?").to_owned())
        })
        .collect()
}

/// The expected `doctor` results: every check passes except the ones named.
fn expected(changed: &[(&str, &str)]) -> Vec<(String, String)> {
    let checks = ["settings", "region", "endpoint", "credentials", "dynamodb", "table", "ttl", "write", "clock"];
    checks
        .iter()
        .map(|check| {
            let result = changed.iter().find(|(name, _)| name == check).map_or("pass", |(_, result)| result);
            ((*check).to_owned(), result.to_owned())
        })
        .collect()
}

/// The `detail` of one check.
#[track_caller]
fn detail(out: &Outcome, check: &str) -> String {
    match json_lines(out).into_iter().find(|line| line["check"] == check) {
        Some(line) => line["detail"].as_str().unwrap_or_default().to_owned(),
        None => out.fail("a check is missing", &check, &out.stdout),
    }
}

#[test]
fn table_create_makes_an_active_lock_table_with_ttl_and_is_idempotent() {
    let case = Case::new("table-create");
    let name = Case::unique_table_name("table-create-new");
    let _table = Table::adopt(&name);
    let has_ttl = emulator_has_ttl_api();
    for round in ["first", "second"] {
        let out = case.run_with(&["-t", &name, "table", "create"], |_| {});
        out.expect_code(0);
        let message = if round == "first" { "table created" } else { "table already exists" };
        out.check("the table line", json!("partition key key (S)"), out.log(message)["key_schema"].clone());
        let description = describe(&name);
        out.check("table status", json!("ACTIVE"), description["TableStatus"].clone());
        out.check("billing", json!("PAY_PER_REQUEST"), description["BillingModeSummary"]["BillingMode"].clone());
        if has_ttl {
            let ttl = ttl_of(&name);
            out.check("TTL status", json!("ENABLED"), ttl["TimeToLiveStatus"].clone());
            out.check("TTL attribute", json!("ttl"), ttl["AttributeName"].clone());
            let enabled = out.has_log("time to live enabled") || out.has_log("time to live already enabled");
            out.check("a TTL line", true, enabled);
        } else {
            // dynalite: no TTL API; the table is usable all the same.
            let warning = out.logs().into_iter().find(|line| line["level"] == "warn");
            let text = warning.map(|line| line["msg"].as_str().unwrap_or_default().to_owned()).unwrap_or_default();
            out.check("the TTL warning", true, text.starts_with("time to live could not be enabled on ttl"));
        }
    }
    let run = case.run_with(&["-t", &name, "run", "k", "--", "true"], |_| {});
    run.expect_code(0);
    run.check("released", true, run.has_log("lock released"));
}

#[test]
fn table_create_refuses_a_table_with_another_key_schema() {
    let case = Case::new("table-create-wrong");
    let name = Case::unique_table_name("table-create-wrong-schema");
    let mut request = create_table_request(&name);
    request["KeySchema"] = json!([{ "AttributeName": "id", "KeyType": "HASH" }]);
    request["AttributeDefinitions"] = json!([{ "AttributeName": "id", "AttributeType": "S" }]);
    if let Err(e) = client().call("CreateTable", &request) {
        panic!("CreateTable {name}: {}", lock_exec::error_chain(&e));
    }
    let _table = Table::adopt(&name);
    wait_until_active(&client(), &name);
    let out = case.run_with(&["-t", &name, "table", "create"], |_| {});
    out.expect_code(78);
    out.expect_stderr_contains("exists with partition key id (S); lock-exec needs partition key key (S)");
}

#[test]
fn list_prints_every_item_as_json_lines_and_aligned_text() {
    let case = Case::new("list");
    case.run(&["run", "k-released", "--", "true"]).expect_code(0);
    let now = now_ns();
    case.put_item(json!({
        "key": { "S": "k-held" }, "expire": { "N": (now + 60_000_000_000).to_string() }, "owner": { "S": "o1" },
        "host": { "S": "h1" }, "pid": { "N": "7" }, "fence": { "N": "3" }, "command": { "S": "job" },
        "acquired": { "S": "2026-01-02T03:04:05Z" },
    }));
    case.put_go_item("k-go", now + 3_600_000_000_000);
    case.put_item(json!({
        "key": { "S": "k-last" }, "expire": { "N": "0" }, "fence": { "N": "5" }, "host": { "S": "evil\u{1b}[2J" },
        "last_exit_code": { "N": "2" }, "last_host": { "S": "h2" }, "last_started": { "S": "2026-01-02T03:04:05Z" },
        "last_finished": { "S": "2026-01-02T03:04:06.5Z" }, "last_duration_ms": { "N": "1500" },
    }));

    let out = case.run(&["list"]);
    out.expect_code(0);
    let lines = json_lines(&out);
    let by_key: BTreeMap<String, &Value> =
        lines.iter().map(|line| (line["key"].as_str().unwrap_or_default().to_owned(), line)).collect();
    out.check("keys", vec!["k-go", "k-held", "k-last", "k-released"], by_key.keys().map(String::as_str).collect());
    let held = by_key["k-held"];
    out.check(
        "held",
        json!(["held", "h1", 7, 3, "o1", "job"]),
        json!([held["state"], held["holder"], held["pid"], held["fence"], held["owner"], held["command"]]),
    );
    let go = by_key["k-go"];
    out.check(
        "Go item",
        json!(["held", null, null, null]),
        json!([go["state"], go["holder"], go["fence"], go["owner"]]),
    );
    let released = by_key["k-released"];
    out.check("released", json!(["free", null]), json!([released["state"], released["expire"]]));
    out.check("released holder", json!(crate::support::host_name()), released["holder"].clone());
    out.check("k-released's last run", json!(0), released["last_exit_code"].clone());
    let last = by_key["k-last"];
    out.check(
        "last run",
        json!([2, "h2", "2026-01-02T03:04:05Z", "2026-01-02T03:04:06.5Z", 1500]),
        json!([
            last["last_exit_code"],
            last["last_host"],
            last["last_started"],
            last["last_finished"],
            last["last_duration_ms"]
        ]),
    );
    out.check("escaped in JSON", true, out.stdout.contains(r"evil\u001b[2J"));

    let out = case.run(&["list", "--log-format", "text"]);
    out.expect_code(0);
    out.check("no raw control character", false, out.stdout.contains('\u{1b}'));
    let rows: Vec<&str> = out.stdout.lines().collect();
    let header = rows.first().copied().unwrap_or_default();
    let expected_header =
        ["KEY", "STATE", "HOLDER", "PID", "EXPIRE", "FENCE", "LAST_EXIT_CODE", "LAST_HOST", "LAST_STARTED"];
    out.check("header columns", true, header.split_whitespace().take(9).eq(expected_header));
    let keys: Vec<&str> = rows[1..].iter().filter_map(|row| row.split_whitespace().next()).collect();
    out.check("rows sorted by key", vec!["k-go", "k-held", "k-last", "k-released"], keys);
    // Every column starts where its header does.
    for column in ["STATE", "HOLDER", "PID", "EXPIRE", "FENCE", "LAST_EXIT_CODE"] {
        let at = header.find(column).unwrap_or(0);
        for row in &rows[1..] {
            let aligned = row.get(at - 2..at).is_some_and(|gap| gap == "  ") && !row[at..].starts_with(' ');
            out.check(&format!("{column} aligned in {row:?}"), true, aligned);
        }
    }
    let last = rows.iter().find(|row| row.starts_with("k-last")).copied().unwrap_or_default();
    out.check("k-last row", true, last.contains(r"evil\x1b[2J") && last.contains("  2  ") && last.ends_with("1500"));
    let go = rows.iter().find(|row| row.starts_with("k-go")).copied().unwrap_or_default();
    out.check("Go row", vec!["k-go", "held", "-", "-"], go.split_whitespace().take(4).collect::<Vec<_>>());
}

#[test]
fn list_follows_scan_pages() {
    let case = Case::with_table_name("list-pages", "paged-table");
    let page = |key: &str| json!([{ "key": { "S": key }, "expire": { "N": "0" } }]);
    let (first, second) = (page("a"), page("b"));
    let server = Server::start(move |seen| {
        let body: Value = serde_json::from_str(&seen.body).unwrap_or_default();
        match body.get("ExclusiveStartKey") {
            None => Reply::json(&json!({ "Items": first, "Count": 1, "LastEvaluatedKey": { "key": { "S": "a" } } })),
            Some(_) => Reply::json(&json!({ "Items": second, "Count": 1 })),
        }
    });
    let out = case.run_with(&["-t", "paged-table", "list"], |env| {
        env.insert("AWS_ENDPOINT_URL", server.url());
    });
    out.expect_code(0);
    let keys: Vec<Value> = json_lines(&out).iter().map(|line| line["key"].clone()).collect();
    out.check("both pages", vec![json!("a"), json!("b")], keys);
    let scans: Vec<Value> =
        server.stop().iter().map(|e| serde_json::from_str(&e.request.body).unwrap_or_default()).collect();
    out.check("two Scans", 2, scans.len());
    out.check("consistent", json!(true), scans[0]["ConsistentRead"].clone());
    out.check(
        "second page starts after the first",
        json!({ "key": { "S": "a" } }),
        scans[1]["ExclusiveStartKey"].clone(),
    );
}

#[test]
fn list_reads_scan_pages_larger_than_a_mebibyte() {
    // A Scan page holds up to 1 MB of item data; its JSON is larger (attribute names, type wrappers, control
    // characters escaped as \u0001), so DynamoDB's own answers exceed 1 MiB: here about 7 MB of JSON.
    let case = Case::new("list-big-pages");
    let command = "\u{1}".repeat(30_000);
    for i in 0..40 {
        case.put_item(json!({
            "key": { "S": format!("big-{i:02}") }, "expire": { "N": "0" }, "command": { "S": command },
        }));
    }
    let out = case.run(&["list"]);
    out.expect_code(0);
    out.check("items listed", 40, json_lines(&out).len());
}

#[test]
fn list_of_a_missing_table_is_a_configuration_error() {
    let case = Case::with_table_name("list-missing", "it-no-such-table-for-list");
    case.run_with(&["-t", case.table(), "list"], |_| {}).expect_code(78);
}

#[test]
fn doctor_passes_when_ttl_is_on_and_fails_when_it_is_off() {
    let case = Case::new("doctor");
    // The test's table has no TTL yet.
    let out = case.run(&["doctor"]);
    out.expect_code(1);
    out.check("checks", expected(&[("ttl", "fail")]), results(&out));
    out.check("ttl detail", true, detail(&out, "ttl").starts_with("not enabled"));

    case.run(&["table", "create"]).expect_code(0);
    let out = case.run(&["doctor"]);
    out.expect_code(0);
    out.check("checks", expected(&[]), results(&out));
    out.check("ttl detail", "enabled on ttl".to_owned(), detail(&out, "ttl"));
    out.check("credentials", "environment, no expiry".to_owned(), detail(&out, "credentials"));
    let clock = json_lines(&out).into_iter().find(|line| line["check"] == "clock").unwrap_or_default();
    out.check("clock offset under 2 s", true, clock["offset_ms"].as_i64().is_some_and(|ms| ms.abs() < 2000));
    // The probe item is gone.
    let list = case.run(&["list"]);
    list.check("items left", "", list.stdout.as_str());

    let out = case.run(&["doctor", "--log-format", "text"]);
    out.expect_code(0);
    let words: Vec<&str> = out.stdout.lines().filter_map(|line| line.split_whitespace().next()).collect();
    out.check("text lines", vec!["pass"; 9], words);
    out.check("text layout", true, out.stdout.contains("\npass  table        "));
}

/// With no credentials, the checks before them pass with what they found: the endpoint line shows the endpoint
/// (it said only "ok"), and the network checks are skipped.
#[test]
fn doctor_without_credentials_shows_the_endpoint_it_resolved() {
    let case = Case::new("doctor-no-credentials");
    let out = case.run_env(&["doctor"], case.env_without_credentials());
    out.expect_code(1);
    out.check("endpoint detail", crate::support::endpoint().trim_end_matches('/').to_owned(), detail(&out, "endpoint"));
    let verdict = |check: &str| {
        json_lines(&out).into_iter().find(|line| line["check"] == check).map(|line| line["result"].clone())
    };
    out.check("credentials", Some(json!("fail")), verdict("credentials"));
    out.check("table", Some(json!("skip")), verdict("table"));
}

#[test]
fn doctor_fails_on_a_missing_table_and_on_another_key_schema() {
    let case = Case::new("doctor-tables");
    let out = case.run_with(&["-t", "it-no-such-table-for-doctor", "doctor"], |_| {});
    out.expect_code(1);
    out.check("checks", expected(&[("table", "fail"), ("ttl", "skip"), ("write", "skip")]), results(&out));
    out.check(
        "table detail",
        true,
        detail(&out, "table").starts_with("no table it-no-such-table-for-doctor in us-east-1"),
    );

    let name = Case::unique_table_name("doctor-wrong-schema");
    let mut request = create_table_request(&name);
    request["KeySchema"] =
        json!([{ "AttributeName": "key", "KeyType": "HASH" }, { "AttributeName": "at", "KeyType": "RANGE" }]);
    request["AttributeDefinitions"] =
        json!([{ "AttributeName": "key", "AttributeType": "S" }, { "AttributeName": "at", "AttributeType": "N" }]);
    if let Err(e) = client().call("CreateTable", &request) {
        panic!("CreateTable {name}: {}", lock_exec::error_chain(&e));
    }
    let _table = Table::adopt(&name);
    wait_until_active(&client(), &name);
    let out = case.run_with(&["-t", &name, "doctor"], |_| {});
    out.expect_code(1);
    out.check("checks", expected(&[("table", "fail"), ("ttl", "fail"), ("write", "fail")]), results(&out));
    out.check(
        "table detail",
        true,
        detail(&out, "table").contains("partition key key (S), sort key at (N); lock-exec needs"),
    );
}

#[test]
fn doctor_fails_the_clock_when_the_server_date_is_an_hour_off() {
    let case = Case::new("doctor-clock");
    case.run(&["table", "create"]).expect_code(0);
    let upstream = endpoint().to_owned();
    let an_hour_ago = lock_exec::clock::unix_ns(Env::real().now()) / 1_000_000_000 - 3600;
    let date = time::OffsetDateTime::from_unix_timestamp(an_hour_ago as i64)
        .expect("a valid time")
        .format(time::macros::format_description!(
            "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
        ))
        .expect("an HTTP date");
    let server = Server::start(move |seen| {
        let mut reply = forward(&upstream, seen);
        reply.headers.push(("date".into(), date.clone()));
        reply
    });
    let out = case.run_with(&["-t", case.table(), "doctor"], |env| {
        env.insert("AWS_ENDPOINT_URL", server.url());
    });
    out.expect_code(1);
    out.check("checks", expected(&[("clock", "fail")]), results(&out));
    let clock = json_lines(&out).into_iter().find(|line| line["check"] == "clock").unwrap_or_default();
    let offset = clock["offset_ms"].as_i64().unwrap_or_default();
    out.check("about an hour ahead", true, (3_597_000..3_603_000).contains(&offset));
    out.check("clock detail", true, detail(&out, "clock").contains("ahead of the server's"));
}

/// The moto server for [`doctor_with_iam_checks_on`]; panics when `LOCK_EXEC_TEST_OPS_AUTH_ENDPOINT` is unset.
fn ops_auth_endpoint() -> String {
    let endpoint = Env::real().var("LOCK_EXEC_TEST_OPS_AUTH_ENDPOINT").unwrap_or_else(|| {
        panic!(
            "LOCK_EXEC_TEST_OPS_AUTH_ENDPOINT is not set: this test needs its own moto server; run the tests with \
             scripts/test.sh, which starts one on 127.0.0.1 and sets the variable"
        )
    });
    assert!(endpoint.starts_with("http://127.0.0.1:"), "LOCK_EXEC_TEST_OPS_AUTH_ENDPOINT={endpoint:?}: not local");
    endpoint
}

/// Creates an IAM user allowed `actions` on every resource; returns its access key id and secret.
fn user(http: &Http, endpoint: &str, admin: &Credentials, name: &str, actions: &[&str]) -> (String, String) {
    iam(http, endpoint, admin, &[("Action", "CreateUser"), ("UserName", name)]);
    let actions: Vec<String> = actions.iter().map(|action| format!("dynamodb:{action}")).collect();
    let policy = json!({
        "Version": "2012-10-17",
        "Statement": [{ "Effect": "Allow", "Action": actions, "Resource": "*" }],
    });
    let document = policy.to_string();
    let put = [("Action", "PutUserPolicy"), ("UserName", name), ("PolicyName", "ops"), ("PolicyDocument", &document)];
    iam(http, endpoint, admin, &put);
    let key = iam(http, endpoint, admin, &[("Action", "CreateAccessKey"), ("UserName", name)]);
    let id = xml_tag(&key.body, "AccessKeyId").expect("CreateAccessKey answers an AccessKeyId");
    let secret = xml_tag(&key.body, "SecretAccessKey").expect("CreateAccessKey answers a SecretAccessKey");
    (id, secret)
}

#[test]
fn doctor_with_iam_checks_on() {
    let endpoint = ops_auth_endpoint();
    let http = Http::new();
    let admin = Credentials::new("AKIDLOCKEXECOPSADMIN", "it-ops-admin-secret", None, None, "ops auth setup");
    let table = Case::unique_table_name("ops-auth");
    let case = Case::with_table_name("ops-auth", &table);
    let env_for = |(id, secret): &(String, String)| {
        let mut env = case.env();
        env.insert("AWS_ENDPOINT_URL", endpoint.clone());
        env.insert("AWS_ACCESS_KEY_ID", id.clone());
        env.insert("AWS_SECRET_ACCESS_KEY", secret.clone());
        env
    };
    // 1. While checks are off: the table (TTL on), and four users.
    let setup = env_for(&(admin.access_key_id().to_owned(), admin.secret_access_key().to_owned()));
    case.run_env(&["table", "create"], setup).expect_code(0);
    let item_actions = ["GetItem", "UpdateItem", "DeleteItem"];
    let runner = user(&http, &endpoint, &admin, "ops-runner", &item_actions);
    let doctor_actions = ["DescribeTable", "DescribeTimeToLive", "GetItem", "UpdateItem", "DeleteItem"];
    let doctor = user(&http, &endpoint, &admin, "ops-doctor", &doctor_actions);
    let reader = user(&http, &endpoint, &admin, "ops-reader", &["DescribeTable", "DescribeTimeToLive"]);
    let operator =
        user(&http, &endpoint, &admin, "ops-operator", &["CreateTable", "DescribeTable", "UpdateTimeToLive", "Scan"]);

    // 2. Signature and IAM checks on.
    switch_auth_on(&http, &endpoint);

    // 3. The run policy alone: what doctor cannot look at is skipped, the writes pass.
    let out = case.run_env(&["doctor"], env_for(&runner));
    out.expect_code(0);
    out.check("runner", expected(&[("table", "skip"), ("ttl", "skip")]), results(&out));
    out.check("table skipped", true, detail(&out, "table").starts_with("not allowed to call DescribeTable"));
    out.check("ttl skipped", true, detail(&out, "ttl").starts_with("not allowed to call DescribeTimeToLive"));
    case.run_env(&["list"], env_for(&runner)).expect_code(77);
    case.run_env(&["table", "create"], env_for(&runner)).expect_code(77);

    // 4. The README's doctor policy: everything passes.
    let out = case.run_env(&["doctor"], env_for(&doctor));
    out.expect_code(0);
    out.check("doctor policy", expected(&[]), results(&out));

    // 5. No item actions: the write fails, naming the call.
    let out = case.run_env(&["doctor"], env_for(&reader));
    out.expect_code(1);
    out.check("reader", expected(&[("write", "fail")]), results(&out));
    out.check(
        "write detail",
        true,
        detail(&out, "write").starts_with("UpdateItem on the probe key: dynamodb answered"),
    );

    // 6. The README's table create and list policies: an existing table is fine, a new one is made with TTL.
    case.run_env(&["table", "create"], env_for(&operator)).expect_code(0);
    let fresh = Case::unique_table_name("ops-auth-fresh");
    let out = case.run_env(&["-t", &fresh, "table", "create"], env_for(&operator));
    out.expect_code(0);
    out.check("TTL on the new table", true, out.has_log("time to live enabled"));
    let out = case.run_env(&["list"], env_for(&operator));
    out.expect_code(0);
    out.check("empty table", "", out.stdout.as_str());
}

#[test]
fn usage_errors_of_the_operator_subcommands_exit_64() {
    let case = Case::with_table_name("ops-usage", "unused-table");
    let cases: &[(&[&str], &str)] = &[
        (&["table"], "table: missing action (create)"),
        (&["table", "drop"], "table: unknown action \"drop\" (create)"),
        (&["table", "create", "extra"], "table create: unexpected argument \"extra\""),
        (&["list", "extra"], "list: unexpected argument \"extra\""),
        (&["doctor", "extra"], "doctor: unexpected argument \"extra\""),
        (&["completion"], "completion: missing SHELL"),
        (&["completion", "tcsh"], "completion: unknown shell \"tcsh\""),
        (&["completion", "bash", "extra"], "completion: unexpected argument \"extra\""),
        (&["list", "--shell"], "--shell applies to run only"),
        (&["doctor", "--delete"], "--delete applies to unlock only"),
        (&["table", "create", "--", "x"], "`--` applies to run only"),
    ];
    for (args, message) in cases {
        let out = case.run_with(args, |_| {});
        out.expect_code(64);
        out.expect_stderr_contains(message);
    }
}

#[test]
fn help_lists_the_operator_subcommands() {
    let case = Case::with_table_name("ops-help", "unused-table");
    let out = case.run_with(&["--help"], |_| {});
    out.expect_code(0);
    for line in ["lock-exec [OPTIONS] list", "lock-exec [OPTIONS] table create", "lock-exec [OPTIONS] doctor"] {
        out.check(line, true, out.stdout.contains(line));
    }
    out.check("completion", true, out.stdout.contains("lock-exec completion bash|zsh|fish"));
    for (topic, text) in [("table", "UpdateTimeToLive"), ("doctor", "Date header"), ("list", "dynamodb:Scan")] {
        let out = case.run_with(&["help", topic], |_| {});
        out.check(topic, true, out.stdout.contains(text));
        let out = case.run_with(&[topic, "--help"], |_| {});
        out.check(topic, true, out.stdout.contains(text));
    }
}

/// Runs `script` in bash with the built binary first in PATH; its stdout.
fn bash(script: &str) -> String {
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_lock-exec")).parent().expect("the binary's folder");
    let path = format!("{}:{}", bin.display(), Env::real().var("PATH").unwrap_or_default());
    let out = Command::new("bash").arg("-c").arg(script).env("PATH", path).output().expect("run bash");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "bash {script:?}: {}\n{stdout}{}", out.status, String::from_utf8_lossy(&out.stderr));
    stdout
}

#[test]
fn completion_scripts_load_and_complete() {
    let registered = bash("source <(lock-exec completion bash); complete -p lock-exec");
    assert_eq!(registered, "complete -F _lock_exec lock-exec\n");
    // COMP_WORDS as bash fills them, the last one being completed.
    let cases: &[(&str, &str)] = &[
        ("lock-exec ta", "table"),
        ("lock-exec table ''", "create"),
        ("lock-exec -t tbl st", "status"),
        ("lock-exec --log-format ''", "json text"),
        ("lock-exec run k --kill-after ''", "10s 30s 1m 5m 10m 1h 24h"),
        ("lock-exec run k true --wa", "--wait-descendants --wait"),
        ("lock-exec unlock --de", "--delete"),
        ("lock-exec status --de", ""),
        // --version goes alone: offered before a subcommand, not after one.
        ("lock-exec --vers", "--version"),
        ("lock-exec run --vers", ""),
        ("lock-exec status k --vers", ""),
        ("lock-exec completion ''", "bash zsh fish"),
        ("lock-exec help do", "doctor"),
        // --flag=value: bash splits it at the `=` (COMP_WORDBREAKS)
        ("lock-exec --log-format =", "json text"),
        ("lock-exec --log-format = j", "json"),
        ("lock-exec --table = tbl ta", "table"),
        ("lock-exec run k --wait = 1", "10s 1m 10m 1h"),
    ];
    for (words, expected) in cases {
        let script = format!(
            "source <(lock-exec completion bash); COMP_WORDS=({words}); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)); \
             _lock_exec; echo \"${{COMPREPLY[*]}}\""
        );
        assert_eq!(bash(&script).trim_end(), *expected, "completing {words:?}");
    }
    for (shell, check) in [("zsh", "zsh -n"), ("fish", "fish -n")] {
        let script = Command::new(env!("CARGO_BIN_EXE_lock-exec")).args(["completion", shell]).output().expect("run");
        assert!(script.status.success());
        let text = String::from_utf8_lossy(&script.stdout);
        assert!(text.contains("lock-exec") && text.contains("kill-after"), "{shell}: {text}");
        // Checked by the shell itself where it is installed.
        let available = Command::new("sh").arg("-c").arg(format!("command -v {shell}")).output();
        if available.is_ok_and(|out| out.status.success()) {
            let path = std::env::temp_dir().join(format!("lock-exec-completion-{}.{shell}", std::process::id()));
            std::fs::write(&path, text.as_bytes()).expect("write the script");
            let parsed = Command::new("sh").arg("-c").arg(format!("{check} '{}'", path.display())).output();
            let _ = std::fs::remove_file(&path);
            let parsed = parsed.expect("run the shell");
            assert!(parsed.status.success(), "{check}: {}", String::from_utf8_lossy(&parsed.stderr));
        }
    }
}

#[test]
fn output_into_a_closed_pipe_ends_quietly_with_the_exit_code_it_would_have_had() {
    // `lock-exec list | head -1`: the reader is gone before (or while) lock-exec writes. No panic message; the
    // output stops and the exit code is what it would have been (as ripgrep does).
    let case = Case::new("closed-pipe");
    case.run(&["table", "create"]).expect_code(0);
    case.put_go_item("k", 0);
    let cases: &[(&[&str], i32)] = &[
        (&["list"], 0),
        (&["list", "--log-format", "text"], 0),
        (&["completion", "bash"], 0),
        (&["help", "doctor"], 0),
    ];
    for (args, code) in cases {
        let (reader, writer) = std::io::pipe().expect("a pipe");
        drop(reader);
        let out = Command::new(env!("CARGO_BIN_EXE_lock-exec"))
            .args(["-t", case.table()])
            .args(*args)
            .env_clear()
            .envs(case.env())
            .stdin(std::process::Stdio::null())
            .stdout(writer)
            .output()
            .expect("run lock-exec");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert_eq!(out.status.code(), Some(*code), "{args:?}: {:?}, stderr {stderr}", out.status);
    }
}
