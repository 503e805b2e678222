//! `doctor`: checks, one line each (pass, fail or skip), what a run needs: settings, region, endpoint,
//! credentials, DynamoDB reachable, the table and its key schema, TTL on `ttl`, the writes a run makes (on a probe
//! key), and the local clock against the server's `Date` header. Exit 0 only when every check that ran passed.

use std::time::{Duration, SystemTime};

use serde_json::{Map, Value, json};

use super::table::{TTL_ATTRIBUTE, has_lock_schema, key_schema};
use crate::cli::{Common, LogFormat};
use crate::clock::Offset;
use crate::config::{Aws, Step};
use crate::dynamodb::{Client, Conditional, Dated};
use crate::env::Env;
use crate::error::{Error, ServiceErrorKind};
use crate::exit::Exit;
use crate::log::{Escape, Logger, escape_controls};

/// How long a probe item that could not be deleted stays, through TTL.
const PROBE_TTL: Duration = Duration::from_secs(3600);

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// It passed.
    Pass,
    /// It failed: `doctor` exits non-zero.
    Fail,
    /// It did not run (not allowed, not supported, or an earlier check failed).
    Skip,
}

impl Verdict {
    fn word(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::Skip => "skip",
        }
    }
}

/// The lines printed so far, whether one failed, and whether stdout is still read.
struct Report {
    format: LogFormat,
    failed: bool,
    /// The first failure to write standard output (exit 74 once the checks are done).
    output: Option<Error>,
}

impl Report {
    /// Prints one line at once (a check that hangs shows which one).
    fn line(&mut self, check: &str, verdict: Verdict, detail: &str, fields: &[(&str, Value)]) {
        self.failed |= verdict == Verdict::Fail;
        if let Err(e) = crate::output::print(&format_line(self.format, check, verdict, detail, fields)) {
            self.output.get_or_insert(e);
        }
    }

    fn exit(&mut self) -> Result<Exit, Error> {
        if let Some(e) = self.output.take() {
            return Err(e);
        }
        Ok(if self.failed { Exit::ChecksFailed } else { Exit::Success })
    }
}

/// One check as a JSON object (`check`, `result`, `detail`, then `fields`) or an aligned text line; control
/// characters escaped (details quote servers).
pub fn format_line(format: LogFormat, check: &str, verdict: Verdict, detail: &str, fields: &[(&str, Value)]) -> String {
    match format {
        LogFormat::Json => {
            let mut object = Map::new();
            object.insert("check".into(), check.into());
            object.insert("result".into(), verdict.word().into());
            object.insert("detail".into(), detail.into());
            for (name, value) in fields {
                object.insert((*name).to_owned(), value.clone());
            }
            format!("{}\n", escape_controls(&Value::Object(object).to_string(), Escape::Json))
        }
        LogFormat::Text => format!("{}  {check:<11}  {}\n", verdict.word(), escape_controls(detail, Escape::Text)),
    }
}

/// The checks after configuration, in order, for the lines skipped when one cannot run.
const NETWORK_CHECKS: [&str; 5] = ["dynamodb", "table", "ttl", "write", "clock"];

/// `doctor`: run every check, print one line each.
pub fn doctor(common: &Common, env: &Env, log: &Logger) -> Result<Exit, Error> {
    let mut report = Report { format: common.log_format, failed: false, output: None };
    let aws = match Aws::resolve_steps(common, env) {
        Ok(aws) => aws,
        Err(unresolved) => {
            let steps = [(Step::Settings, "settings"), (Step::Region, "region"), (Step::Endpoint, "endpoint")];
            let steps = steps.into_iter().chain([(Step::Credentials, "credentials")]);
            for (step, check) in steps {
                if step < unresolved.step {
                    let detail = match (step, &unresolved.region, &unresolved.endpoint) {
                        (Step::Region, Some(region), _) => region.clone(),
                        (Step::Endpoint, _, Some(endpoint)) => endpoint.clone(),
                        _ => "ok".to_owned(),
                    };
                    report.line(check, Verdict::Pass, &detail, &[]);
                } else if step == unresolved.step {
                    report.line(check, Verdict::Fail, &crate::error_chain(&unresolved.error), &[]);
                } else {
                    report.line(check, Verdict::Skip, "needs the checks above", &[]);
                }
            }
            for check in NETWORK_CHECKS {
                report.line(check, Verdict::Skip, "needs the checks above", &[]);
            }
            return report.exit();
        }
    };
    aws.log_endpoints(&common.table, log);
    report.line("settings", Verdict::Pass, &format!("profile {:?}", aws.profiles.selected_name()), &[]);
    let region = if aws.region_unknown() {
        format!("{} (not an AWS region name, like us-east-1: check it)", aws.region)
    } else {
        aws.region.clone()
    };
    report.line("region", Verdict::Pass, &region, &[]);
    let endpoint = match aws.http.proxy_for(&aws.endpoint) {
        Some(proxy) => format!("{} (through proxy {proxy})", aws.endpoint),
        None => aws.endpoint.clone(),
    };
    report.line("endpoint", Verdict::Pass, &endpoint, &[]);
    let client = aws.client(env, log);
    if !check_credentials(&client, &mut report, env.now()) {
        for check in NETWORK_CHECKS {
            report.line(check, Verdict::Skip, "no credentials", &[]);
        }
        return report.exit();
    }
    let table = common.table.as_str();
    let described = client.call_dated("DescribeTable", &json!({ "TableName": table }));
    if !check_reachable(&described, &aws.endpoint, &mut report) {
        for check in &NETWORK_CHECKS[1..] {
            report.line(check, Verdict::Skip, "DynamoDB not reachable", &[]);
        }
        return report.exit();
    }
    let table_exists = check_table(&described.result, table, &aws.region, &mut report);
    if table_exists == Some(false) {
        report.line("ttl", Verdict::Skip, "no table", &[]);
        report.line("write", Verdict::Skip, "no table", &[]);
    } else {
        check_ttl(&client, table, &mut report);
        check_write(&client, table, env.now(), &mut report);
    }
    check_clock(aws.skew.offset(), described.date.as_deref(), common.max_clock_skew, &mut report);
    report.exit()
}

/// `credentials`: the source and its expiry; false when there are none.
fn check_credentials(client: &Client<'_>, report: &mut Report, now: SystemTime) -> bool {
    let source = client.credentials.source_name();
    match client.refresh_credentials() {
        Ok(credentials) => {
            let (detail, expiry) = match credentials.expiry() {
                None => (format!("{source}, no expiry"), Value::Null),
                Some(expiry) => {
                    let at = crate::clock::rfc3339_ns(crate::clock::unix_ns(expiry));
                    let left = expiry.duration_since(now).unwrap_or_default();
                    let left = crate::duration::format(Duration::from_secs(left.as_secs()));
                    (format!("{source}, expire {at} (in {left})"), at.into())
                }
            };
            report.line("credentials", Verdict::Pass, &detail, &[("source", source.into()), ("expiry", expiry)]);
            true
        }
        Err(e) => {
            report.line("credentials", Verdict::Fail, &crate::error_chain(&e), &[("source", source.into())]);
            false
        }
    }
}

/// Whether a service error rejects the identity or the signature itself (rather than one action).
fn rejects_identity(error: &Error) -> bool {
    matches!(error, Error::Service(e) if e.kind() == ServiceErrorKind::AccessDenied && !is_not_allowed(e.code.as_str()))
}

/// An IAM refusal of one action (the identity itself was accepted).
fn is_not_allowed(code: &str) -> bool {
    matches!(code, "AccessDeniedException" | "AccessDenied")
}

fn not_allowed(error: &Error) -> bool {
    matches!(error, Error::Service(e) if is_not_allowed(&e.code))
}

/// `dynamodb`: an answer came back (any answer but a rejection of the credentials); false when none came.
fn check_reachable(described: &Dated, endpoint: &str, report: &mut Report) -> bool {
    let elapsed = described.received.duration_since(described.sent).unwrap_or_default();
    let elapsed_ms = Value::from(elapsed.as_millis() as u64);
    match &described.result {
        Err(e @ (Error::Transport { .. } | Error::Credentials { .. })) => {
            report.line("dynamodb", Verdict::Fail, &crate::error_chain(e), &[]);
            false
        }
        Err(e) if rejects_identity(e) => {
            let detail = format!("answered, but refused the credentials: {}", crate::error_chain(e));
            report.line("dynamodb", Verdict::Fail, &detail, &[("elapsed_ms", elapsed_ms)]);
            true
        }
        Err(Error::Service(e)) if e.kind() == ServiceErrorKind::Server => {
            report.line("dynamodb", Verdict::Fail, &e.to_string(), &[("elapsed_ms", elapsed_ms)]);
            true
        }
        Ok(_) | Err(Error::Service(_)) => {
            let detail = format!("{endpoint} answered in {} ms", elapsed.as_millis());
            report.line("dynamodb", Verdict::Pass, &detail, &[("elapsed_ms", elapsed_ms)]);
            true
        }
        // Nothing was sent or nothing came back (a helper or thread that could not start, ...).
        Err(e) => {
            report.line("dynamodb", Verdict::Fail, &crate::error_chain(e), &[]);
            false
        }
    }
}

/// `table`: exists, ACTIVE, partition key `key` (S). `Some(false)` when it does not exist, `None` when unknown.
fn check_table(described: &Result<Value, Error>, table: &str, region: &str, report: &mut Report) -> Option<bool> {
    match described {
        Ok(answer) => {
            let description = &answer["Table"];
            let schema = key_schema(description);
            let status = description["TableStatus"].as_str().unwrap_or("unknown");
            let fields = [("status", Value::from(status)), ("key_schema", schema.clone().into())];
            if !has_lock_schema(description) {
                let detail = format!("{table}: {schema}; lock-exec needs partition key key (S) and no sort key");
                report.line("table", Verdict::Fail, &detail, &fields);
            } else if matches!(status, "ACTIVE" | "UPDATING") {
                report.line("table", Verdict::Pass, &format!("{table}: {status}, {schema}"), &fields);
            } else {
                report.line("table", Verdict::Fail, &format!("{table}: {status}, not ACTIVE"), &fields);
            }
            Some(true)
        }
        Err(e) if not_allowed(e) => {
            let detail = "not allowed to call DescribeTable (locking does not need it)";
            report.line("table", Verdict::Skip, detail, &[]);
            None
        }
        Err(Error::Service(e)) if e.kind() == ServiceErrorKind::ResourceNotFound => {
            let detail = format!("no table {table} in {region} (lock-exec table create makes it)");
            report.line("table", Verdict::Fail, &detail, &[]);
            Some(false)
        }
        Err(e) => {
            report.line("table", Verdict::Fail, &crate::error_chain(e), &[]);
            None
        }
    }
}

/// `ttl`: DescribeTimeToLive says TTL is enabled (or being enabled) on `ttl`.
fn check_ttl(client: &Client<'_>, table: &str, report: &mut Report) {
    match client.call("DescribeTimeToLive", &json!({ "TableName": table })).map_err(Error::into_last) {
        Ok(answer) => {
            let description = &answer["TimeToLiveDescription"];
            let status = description["TimeToLiveStatus"].as_str().unwrap_or("DISABLED");
            let attribute = description["AttributeName"].as_str();
            let fields = [("status", Value::from(status)), ("attribute", attribute.into())];
            let (verdict, detail) = match (status, attribute) {
                ("ENABLED" | "ENABLING", Some(TTL_ATTRIBUTE)) => {
                    (Verdict::Pass, format!("{} on {TTL_ATTRIBUTE}", status.to_ascii_lowercase()))
                }
                ("ENABLED" | "ENABLING", Some(other)) => (
                    Verdict::Fail,
                    format!(
                        "{} on {other:?}, not on {TTL_ATTRIBUTE}: items of unused keys are never removed",
                        status.to_ascii_lowercase()
                    ),
                ),
                _ => (
                    Verdict::Fail,
                    format!(
                        "not enabled ({}): items of unused keys are never removed (lock-exec table create enables it)",
                        status.to_ascii_lowercase()
                    ),
                ),
            };
            report.line("ttl", verdict, &detail, &fields);
        }
        Err(e) if not_allowed(&e) => {
            report.line("ttl", Verdict::Skip, "not allowed to call DescribeTimeToLive (locking does not need it)", &[]);
        }
        Err(Error::Service(e)) if e.code == "UnknownOperationException" || e.code == "NotImplementedException" => {
            report.line("ttl", Verdict::Skip, &format!("the endpoint has no Time to Live API ({})", e.code), &[]);
        }
        Err(e) => report.line("ttl", Verdict::Fail, &crate::error_chain(&e), &[]),
    }
}

/// `write`: on a probe key of its own, the calls a run makes: a conditional `UpdateItem`, a consistent `GetItem`,
/// a conditional `DeleteItem` (what `unlock --delete` needs). The probe carries a `ttl` an hour ahead, so a probe
/// that could not be deleted goes by itself where TTL is on.
fn check_write(client: &Client<'_>, table: &str, now: SystemTime, report: &mut Report) {
    let key = format!("lock-exec-doctor-probe-{}", crate::random::token128());
    let fields = [("probe_key", Value::from(key.as_str()))];
    let ttl = crate::clock::unix_ns(now + PROBE_TTL) / 1_000_000_000;
    let update = json!({
        "TableName": table,
        "Key": { "key": { "S": key } },
        "ConditionExpression": "attribute_not_exists(#key)",
        "UpdateExpression": "SET #expire = :zero, #ttl = :ttl",
        "ExpressionAttributeNames": { "#key": "key", "#expire": "expire", "#ttl": TTL_ATTRIBUTE },
        "ExpressionAttributeValues": { ":zero": { "N": "0" }, ":ttl": { "N": ttl.to_string() } },
    });
    let get = json!({ "TableName": table, "Key": { "key": { "S": key } }, "ConsistentRead": true });
    let delete = json!({
        "TableName": table,
        "Key": { "key": { "S": key } },
        "ConditionExpression": "attribute_exists(#key)",
        "ExpressionAttributeNames": { "#key": "key" },
    });
    let failed = |action: &str, e: &Error| format!("{action} on the probe key: {}", crate::error_chain(e));
    match client.call_conditional("UpdateItem", &update) {
        Ok(Conditional::Done(_)) => {}
        Ok(Conditional::Failed(_)) => {
            return report.line("write", Verdict::Fail, "UpdateItem: a new probe key already exists", &fields);
        }
        Err(e) => return report.line("write", Verdict::Fail, &failed("UpdateItem", &e), &fields),
    }
    let read = match client.call("GetItem", &get) {
        Ok(answer) if answer.get("Item").is_some() => None,
        Ok(_) => Some("GetItem on the probe key: the item just written is not there".to_owned()),
        Err(e) => Some(failed("GetItem", &e)),
    };
    let deleted = client.call("DeleteItem", &delete);
    match (read, deleted) {
        (None, Ok(_)) => {
            report.line("write", Verdict::Pass, "UpdateItem, GetItem and DeleteItem on a probe key", &fields)
        }
        (Some(problem), Ok(_)) => report.line("write", Verdict::Fail, &problem, &fields),
        (read, Err(e)) => {
            let left = format!("{}; the probe item stays (its ttl is an hour ahead)", failed("DeleteItem", &e));
            let detail = read.map_or(left.clone(), |problem| format!("{problem}; {left}"));
            report.line("write", Verdict::Fail, &detail, &fields);
        }
    }
}

/// `clock`: the local clock against the `Date` headers of every answer so far (the estimate narrows with each):
/// a fail when this host's clock is certainly off by more than half of `--max-clock-skew` (two hosts each within
/// half are within the bound of each other).
fn check_clock(offset: Option<Offset>, date: Option<&str>, max_clock_skew: Duration, report: &mut Report) {
    let Some(offset) = offset else {
        let detail = match date {
            None => "the answers had no Date header".to_owned(),
            Some(date) => format!("cannot read the Date header {date:?}"),
        };
        return report.line("clock", Verdict::Skip, &detail, &[]);
    };
    let fields = [("offset_ms", Value::from(offset.middle_ms())), ("date", Value::from(date.unwrap_or_default()))];
    let direction = offset.direction();
    let about = format!("{:.1} s", (offset.middle_ms().unsigned_abs() as f64) / 1000.0);
    let tolerance = max_clock_skew / 2;
    if offset.at_least() <= tolerance {
        let detail = format!("about {about} {direction} the server's (Date headers; whole seconds)");
        report.line("clock", Verdict::Pass, &detail, &fields);
    } else {
        let detail = format!(
            "{about} {direction} the server's (at least {}): more than half of --max-clock-skew {}; lease \
             decisions need clocks that agree (NTP)",
            crate::duration::format(Duration::from_millis(offset.at_least().as_millis() as u64)),
            crate::duration::format(max_clock_skew),
        );
        report.line("clock", Verdict::Fail, &detail, &fields);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines() {
        let line = format_line(LogFormat::Text, "table", Verdict::Pass, "t: ACTIVE\u{1b}", &[]);
        assert_eq!(line, "pass  table        t: ACTIVE\\x1b\n");
        let line = format_line(LogFormat::Json, "clock", Verdict::Fail, "off", &[("offset_ms", 5.into())]);
        let value: Value = serde_json::from_str(&line).expect("a JSON line");
        assert_eq!(value, json!({ "check": "clock", "result": "fail", "detail": "off", "offset_ms": 5 }));
    }

    /// Only an answer passes: an error of lock-exec's own before or instead of one (a `credential_process` that
    /// cannot be forked while the request is signed) is a failure, not "answered".
    #[test]
    fn an_error_without_an_answer_fails_the_reachability_check() {
        let now = std::time::UNIX_EPOCH;
        let source = std::io::Error::from_raw_os_error(libc::EAGAIN);
        let result = Err(Error::Spawn { program: "credential_process helper".into(), source });
        let described = Dated { result, date: None, sent: now, received: now };
        let mut report = Report { format: LogFormat::Json, failed: false, output: None };
        assert!(!check_reachable(&described, "http://127.0.0.1:1", &mut report));
        assert!(report.failed);
    }
}
