//! `list`: every lock item of the table (a paginated, consistent `Scan`; needs `dynamodb:Scan`), with its state,
//! holder, lease end and, when present, the last run. JSON lines in scan order, or aligned text sorted by key.

use serde_json::{Map, Value, json};

use crate::cli::{Common, LogFormat};
use crate::config::Aws;
use crate::env::Env;
use crate::error::Error;
use crate::exit::Exit;
use crate::lock;
use crate::log::{Escape, Logger, escape_controls};

/// The last-run attributes a release records, shown when an item has them.
pub const LAST_RUN: [&str; 5] = ["last_exit_code", "last_host", "last_started", "last_finished", "last_duration_ms"];

/// The text columns before the last-run ones.
const COLUMNS: [&str; 6] = ["key", "state", "holder", "pid", "expire", "fence"];

/// `list`: print every lock item.
pub fn list(common: &Common, env: &Env, log: &Logger) -> Result<Exit, Error> {
    let aws = Aws::resolve(common, env)?;
    aws.log_endpoints(&common.table, log);
    let client = aws.client(env, log);
    let now_ns = lock::unix_ns(env.now());
    let mut rows: Vec<Map<String, Value>> = Vec::new();
    let mut start: Option<Value> = None;
    loop {
        let mut request = json!({ "TableName": common.table, "ConsistentRead": true });
        if let Some(start) = start.take() {
            request["ExclusiveStartKey"] = start;
        }
        let answer = client.call("Scan", &request)?;
        let items = answer["Items"].as_array().map(Vec::as_slice).unwrap_or_default();
        let page: Vec<Map<String, Value>> = items.iter().filter_map(|item| row(item, now_ns)).collect();
        match common.log_format {
            // Lines as the pages come: a large table starts printing at once and is never held whole.
            LogFormat::Json => crate::output::print(&json_lines(&page))?,
            LogFormat::Text => rows.extend(page),
        }
        // `list | head -1`: the pages left would be read (and paid for) for nobody.
        if crate::output::reader_gone() {
            break;
        }
        match answer.get("LastEvaluatedKey") {
            Some(key) if key.is_object() => start = Some(key.clone()),
            _ => break,
        }
    }
    if common.log_format == LogFormat::Text {
        rows.sort_unstable_by(|a, b| a["key"].as_str().cmp(&b["key"].as_str()));
        crate::output::print(&text_table(&rows))?;
    }
    Ok(Exit::Success)
}

/// One item as a row: `key`, `state`, `holder` (host), `pid`, `owner`, `owner_id`, `command`, `acquired`, `expire` (RFC 3339,
/// null when released), `fence`, then the last-run attributes the item has. `None` for an item without `key`.
pub fn row(attributes: &Value, now_ns: i128) -> Option<Map<String, Value>> {
    let item = lock::parse_item(attributes)?;
    let optional = |v: Option<String>| v.map(Value::from).unwrap_or(Value::Null);
    let state = if lock::is_held(&item, now_ns) { "held" } else { "free" };
    let expire = lock::shown_expire(&item).map_or(Value::Null, Value::from);
    let mut row = Map::new();
    row.insert("key".into(), item.key.clone().into());
    row.insert("state".into(), state.into());
    row.insert("holder".into(), optional(item.host));
    row.insert("pid".into(), item.pid.map(Value::from).unwrap_or(Value::Null));
    row.insert("owner".into(), optional(item.owner));
    row.insert("owner_id".into(), optional(item.owner_id));
    row.insert("command".into(), optional(item.command));
    row.insert("acquired".into(), optional(item.acquired));
    row.insert("expire".into(), expire);
    row.insert("fence".into(), item.fence.map(Value::from).unwrap_or(Value::Null));
    for name in LAST_RUN {
        if let Some(value) = attributes.get(name).and_then(plain_value) {
            row.insert(name.into(), value);
        }
    }
    Some(row)
}

/// A DynamoDB attribute value (`{"S": ..}`, `{"N": ..}`, `{"BOOL": ..}`, `{"NULL": true}`) as plain JSON; numbers
/// stay numbers when they fit, else their text.
fn plain_value(attribute: &Value) -> Option<Value> {
    if let Some(s) = attribute.get("S").and_then(Value::as_str) {
        return Some(s.into());
    }
    if let Some(n) = attribute.get("N").and_then(Value::as_str) {
        let number = n.parse::<i64>().map(Value::from).ok().or_else(|| serde_json::from_str::<Value>(n).ok());
        return Some(number.filter(Value::is_number).unwrap_or_else(|| n.into()));
    }
    if let Some(b) = attribute.get("BOOL").and_then(Value::as_bool) {
        return Some(b.into());
    }
    attribute.get("NULL").map(|_| Value::Null)
}

/// One JSON object per line, control characters escaped (the items' text comes from whoever wrote it).
fn json_lines(rows: &[Map<String, Value>]) -> String {
    rows.iter()
        .map(|row| format!("{}\n", escape_controls(&Value::Object(row.clone()).to_string(), Escape::Json)))
        .collect()
}

/// The widest a text column is padded to.
const MAX_COLUMN: usize = 40;

/// Aligned columns with a header line: the [`COLUMNS`], then the [`LAST_RUN`] columns any row has; `-` for a
/// missing value, control characters escaped.
fn text_table(rows: &[Map<String, Value>]) -> String {
    let mut columns: Vec<&str> = COLUMNS.to_vec();
    columns.extend(LAST_RUN.iter().copied().filter(|name| rows.iter().any(|row| row.contains_key(*name))));
    let cell = |row: &Map<String, Value>, column: &str| match row.get(column) {
        None | Some(Value::Null) => "-".to_owned(),
        Some(Value::String(s)) => escape_controls(s, Escape::Text),
        Some(other) => other.to_string(),
    };
    let cells: Vec<Vec<String>> = std::iter::once(columns.iter().map(|c| c.to_ascii_uppercase()).collect())
        .chain(rows.iter().map(|row| columns.iter().map(|c| cell(row, c)).collect()))
        .collect();
    // A column is as wide as its widest cell up to [`MAX_COLUMN`]: a longer cell (a 2 KB key) runs over on its own
    // line instead of padding every row to its width.
    let widths: Vec<usize> = (0..columns.len())
        .map(|i| cells.iter().map(|line| line[i].chars().count()).max().unwrap_or(0).min(MAX_COLUMN))
        .collect();
    let mut text = String::new();
    for line in &cells {
        let padded: Vec<String> = line.iter().zip(&widths).map(|(cell, width)| format!("{cell:<width$}")).collect();
        text.push_str(padded.join("  ").trim_end());
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i128 = 1_700_000_000_000_000_000;

    #[test]
    fn rows_carry_state_holder_and_last_run() {
        let held = json!({"key": {"S": "a"}, "expire": {"N": (NOW + 1).to_string()}, "owner": {"S": "o"},
            "host": {"S": "h1"}, "pid": {"N": "7"}, "fence": {"N": "3"}, "acquired": {"S": "2023-11-14T22:13:20Z"},
            "command": {"S": "c"}, "last_exit_code": {"N": "2"}, "last_host": {"S": "h0"}, "owner_id": {"S": "job-1"}});
        let row = row(&held, NOW).expect("a row");
        assert_eq!(row["state"], "held");
        assert_eq!(row["owner_id"], "job-1");
        assert_eq!(
            (row["holder"].as_str(), row["pid"].as_u64(), row["fence"].as_u64()),
            (Some("h1"), Some(7), Some(3))
        );
        assert_eq!((row["last_exit_code"].as_i64(), row["last_host"].as_str()), (Some(2), Some("h0")));
        assert!(!row.contains_key("last_finished"));
        let go = json!({"key": {"S": "b"}, "expire": {"N": (NOW - 1).to_string()}});
        let row = super::row(&go, NOW).expect("a Go item");
        assert_eq!((row["state"].as_str(), &row["holder"]), (Some("free"), &Value::Null));
        let released = json!({"key": {"S": "c"}, "expire": {"N": "0"}, "fence": {"N": "9"}});
        assert_eq!(super::row(&released, NOW).map(|r| r["expire"].clone()), Some(Value::Null));
        assert_eq!(super::row(&json!({"expire": {"N": "1"}}), NOW), None);
    }

    #[test]
    fn values_become_plain_json() {
        assert_eq!(plain_value(&json!({"N": "12"})), Some(json!(12)));
        assert_eq!(plain_value(&json!({"N": "1.5"})), Some(json!(1.5)));
        assert_eq!(plain_value(&json!({"N": "1e400"})), Some(json!("1e400")));
        assert_eq!(plain_value(&json!({"S": "x"})), Some(json!("x")));
        assert_eq!(plain_value(&json!({"BOOL": true})), Some(json!(true)));
        assert_eq!(plain_value(&json!({"NULL": true})), Some(Value::Null));
        assert_eq!(plain_value(&json!({"L": []})), None);
    }

    #[test]
    fn text_is_aligned_escaped_and_shows_last_run_columns_only_when_present() {
        let a = row(&json!({"key": {"S": "alpha"}, "expire": {"N": "0"}, "host": {"S": "h\u{1b}[2J"}}), NOW);
        let b = row(&json!({"key": {"S": "b"}, "expire": {"N": "0"}, "fence": {"N": "12"}}), NOW);
        let rows: Vec<_> = [a, b].into_iter().flatten().collect();
        let text = text_table(&rows);
        assert_eq!(
            text,
            "KEY    STATE  HOLDER    PID  EXPIRE  FENCE\n\
             alpha  free   h\\x1b[2J  -    -       -\n\
             b      free   -         -    -       12\n"
        );
        let c = row(&json!({"key": {"S": "c"}, "expire": {"N": "0"}, "last_duration_ms": {"N": "1500"}}), NOW);
        let text = text_table(&c.into_iter().collect::<Vec<_>>());
        assert!(text.starts_with("KEY  STATE  HOLDER  PID  EXPIRE  FENCE  LAST_DURATION_MS\n"), "{text}");
        assert!(text.ends_with("  1500\n"), "{text}");
        let json = json_lines(&rows);
        assert!(json.contains(r#""holder":"h\u001b[2J""#) && json.lines().count() == 2, "{json}");
        // A key longer than the widest column runs over on its own line; the other rows stay narrow.
        let long = "k".repeat(2048);
        let d = row(&json!({"key": {"S": long}, "expire": {"N": "0"}}), NOW);
        let e = row(&json!({"key": {"S": "e"}, "expire": {"N": "0"}}), NOW);
        let text = text_table(&[d, e].into_iter().flatten().collect::<Vec<_>>());
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[1].starts_with(&format!("{long}  free")), "{}", lines[1]);
        assert_eq!(lines[2], format!("e{}  free   -       -    -       -", " ".repeat(MAX_COLUMN - 1)));
    }
}
