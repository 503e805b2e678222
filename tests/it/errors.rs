//! Configuration, usage and connection errors: each has its exit code, a message naming the problem, and the
//! command is never started.

use crate::support::Case;

/// `lock-exec ARGS... run k -- sh -c 'touch marker'` with the environment `edit` leaves; checks the exit code
/// and that the command did not start; returns the outcome.
fn run_fails(
    case: &Case,
    before: &[&str],
    key: &str,
    edit: impl FnOnce(&mut std::collections::BTreeMap<&'static str, String>),
    expected_code: i32,
) -> crate::support::Outcome {
    let script = format!("touch '{}'", case.file("marker"));
    let mut args: Vec<&str> = before.to_vec();
    args.extend(["run", key, "--", "sh", "-c", &script]);
    let out = case.run_with(&args, edit);
    out.expect_code(expected_code);
    out.check("the command started (marker file made)", false, case.exists("marker"));
    out
}

#[test]
fn missing_table_exits_78_naming_resource_not_found() {
    let case = Case::new("missing_table");
    let out = run_fails(&case, &["-t", "no-such-table-lock-exec-it"], "k", |_| {}, 78);
    out.expect_stderr_contains("ResourceNotFoundException");
    out.check("error line", true, out.logs().iter().any(|l| l["level"] == "error" && l["exit_code"] == 78));
}

#[test]
fn no_credentials_exits_78() {
    let case = Case::new("no_credentials");
    let table = case.table().to_owned();
    let out = run_fails(
        &case,
        &["-t", &table],
        "k",
        |env| {
            env.remove("AWS_ACCESS_KEY_ID");
            env.remove("AWS_SECRET_ACCESS_KEY");
        },
        78,
    );
    out.expect_stderr_contains("no credentials");
    out.check("item created", None, case.item("k"));
}

#[test]
fn bad_duration_exits_64_naming_the_value() {
    let case = Case::new("bad_duration");
    let table = case.table().to_owned();
    let out = run_fails(&case, &["-t", &table, "-e", "5x"], "k", |_| {}, 64);
    let naming: Vec<&str> = out.stderr.lines().filter(|l| l.contains("5x")).collect();
    out.check("stderr lines naming \"5x\"", 1, naming.len());
    out.check(
        "it is lock-exec's error line",
        true,
        naming[0].starts_with("lock-exec: ") && naming[0].contains("--expire"),
    );
}

#[test]
fn empty_key_exits_64() {
    let case = Case::new("empty_key");
    let table = case.table().to_owned();
    let out = run_fails(&case, &["-t", &table], "", |_| {}, 64);
    out.expect_stderr_contains("KEY is empty");
}

#[test]
fn no_region_exits_78() {
    let case = Case::new("no_region");
    let table = case.table().to_owned();
    let out = run_fails(&case, &["-t", &table], "k", |env| drop(env.remove("AWS_REGION")), 78);
    out.expect_stderr_contains("no region");
}

#[test]
fn unreachable_endpoint_exits_69() {
    let case = Case::new("unreachable_endpoint");
    let table = case.table().to_owned();
    let out = run_fails(
        &case,
        &["-t", &table],
        "k",
        |env| drop(env.insert("AWS_ENDPOINT_URL", "http://127.0.0.1:1".into())),
        69,
    );
    out.expect_stderr_contains("cannot reach dynamodb");
}
