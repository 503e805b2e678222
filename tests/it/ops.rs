//! The operator subcommands: `table create` and its usage errors.
//!
//! `ops::table_create*` also runs against dynalite (no TTL API there).

use serde_json::{Value, json};

use crate::support::{Case, Table, client, create_table_request, emulator_has_ttl_api, wait_until_active};

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
fn usage_errors_of_the_operator_subcommands_exit_64() {
    let case = Case::with_table_name("ops-usage", "unused-table");
    let cases: &[(&[&str], &str)] = &[
        (&["table"], "table: missing action (create)"),
        (&["table", "drop"], "table: unknown action \"drop\" (create)"),
        (&["table", "create", "extra"], "table create: unexpected argument \"extra\""),
        (&["table", "create", "--", "x"], "`--` applies to run only"),
    ];
    for (args, message) in cases {
        let out = case.run_with(args, |_| {});
        out.expect_code(64);
        out.expect_stderr_contains(message);
    }
}
