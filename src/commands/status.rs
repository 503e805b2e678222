//! `status`: the lock item of one key, as JSON or text.

use serde_json::Value;

use crate::cli::{self, Common};
use crate::config::Aws;
use crate::env::Env;
use crate::error::Error;
use crate::exit::Exit;
use crate::lock;
use crate::log::Logger;

/// `status`: print the lock item; exit 0 when free or never used, 3 when held. The holder's fields (host, pid,
/// owner, owner_id, command, acquired, expire) are printed only while the key is held; the `last_*` fields are
/// the last finished run's record.
pub fn status(common: &Common, key: &str, env: &Env, log: &Logger) -> Result<Exit, Error> {
    let aws = Aws::resolve(common, env)?;
    aws.log_endpoints(&common.table, log);
    let client = aws.client(env, log);
    let item = lock::get(&client, &common.table, key)?;
    let now_ns = lock::unix_ns(env.now());
    let state = match &item {
        None => "never used",
        Some(item) if lock::is_held(item, now_ns) => "held",
        Some(_) => "free",
    };
    let mut rows: Vec<(&str, Value)> = vec![("key", key.into()), ("state", state.into())];
    if let Some(item) = &item {
        let optional = |v: &Option<String>| v.clone().map(Value::from).unwrap_or(Value::Null);
        // The holder's fields only while it holds the lock: a free item keeps the host, pid and command of
        // whoever held it last, which are not a holder (the last run's record says what happened).
        if state == "held" {
            rows.push(("host", optional(&item.host)));
            rows.push(("pid", item.pid.map(Value::from).unwrap_or(Value::Null)));
            rows.push(("owner", optional(&item.owner)));
            rows.push(("owner_id", optional(&item.owner_id)));
            rows.push(("command", optional(&item.command)));
            rows.push(("acquired", optional(&item.acquired)));
            rows.push(("expire", lock::shown_expire(item).map_or(Value::Null, Value::from)));
            if lock::kept_after_run(item).is_some() {
                // Held by --keep after the run ended: no process holds it.
                rows.push(("kept", true.into()));
            }
        }
        rows.push(("fence", item.fence.map(Value::from).unwrap_or(Value::Null)));
        rows.push((
            "ttl",
            item.ttl.map(|ttl| lock::rfc3339_ns(i128::from(ttl) * 1_000_000_000).into()).unwrap_or(Value::Null),
        ));
        // The last run's record (written by its release; absent on items of the Go tool or before a first release).
        let last = item.last_run.as_ref();
        let last_time =
            |ns: fn(&lock::LastRun) -> i128| last.map(|run| lock::rfc3339_ns(ns(run)).into()).unwrap_or(Value::Null);
        rows.push(("last_exit_code", last.map(|run| run.exit_code.into()).unwrap_or(Value::Null)));
        rows.push(("last_host", last.map(|run| run.host.clone().into()).unwrap_or(Value::Null)));
        rows.push(("last_started", last_time(|run| run.started_ns)));
        rows.push(("last_finished", last_time(|run| run.finished_ns)));
        rows.push(("last_duration_ms", last.map(|run| Value::from(run.duration_ms() as u64)).unwrap_or(Value::Null)));
    }
    // The item's text comes from whoever wrote it: no control character of it reaches the terminal (one line per
    // field in text; in JSON, DEL and C1 escaped too, which serde_json leaves raw).
    use crate::log::{Escape, escape_controls};
    let text = match common.log_format {
        cli::LogFormat::Json => {
            let object: serde_json::Map<String, Value> = rows.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
            format!("{}\n", escape_controls(&Value::Object(object).to_string(), Escape::Json))
        }
        cli::LogFormat::Text => rows
            .into_iter()
            .map(|(k, v)| match v {
                Value::String(s) => format!("{k:<16} {}\n", escape_controls(&s, Escape::Text)),
                Value::Null => format!("{k:<16} -\n"),
                other => format!("{k:<16} {other}\n"),
            })
            .collect(),
    };
    crate::output::print(&text)?;
    Ok(if state == "held" { Exit::Held } else { Exit::Success })
}
