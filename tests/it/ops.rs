//! The operator subcommands: `table create`, `list`, and their usage errors.
//!
//! `ops::table_create*` and `ops::list*` also run against dynalite (no TTL API there).

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::support::{
    Case, Outcome, Reply, Server, Table, client, create_table_request, emulator_has_ttl_api, now_ns, wait_until_active,
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
    out.check("no last run on k-released", false, released.get("last_exit_code").is_some());
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
fn list_of_a_missing_table_is_a_configuration_error() {
    let case = Case::with_table_name("list-missing", "it-no-such-table-for-list");
    case.run_with(&["-t", case.table(), "list"], |_| {}).expect_code(78);
}

#[test]
fn usage_errors_of_the_operator_subcommands_exit_64() {
    let case = Case::with_table_name("ops-usage", "unused-table");
    let cases: &[(&[&str], &str)] = &[
        (&["table"], "table: missing action (create)"),
        (&["table", "drop"], "table: unknown action \"drop\" (create)"),
        (&["table", "create", "extra"], "table create: unexpected argument \"extra\""),
        (&["list", "extra"], "list: unexpected argument \"extra\""),
        (&["list", "--shell"], "--shell applies to run only"),
        (&["table", "create", "--", "x"], "`--` applies to run only"),
    ];
    for (args, message) in cases {
        let out = case.run_with(args, |_| {});
        out.expect_code(64);
        out.expect_stderr_contains(message);
    }
}
