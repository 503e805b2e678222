//! `table create`: the lock table (partition key `key`, a string; on-demand billing), waited for until ACTIVE,
//! then DynamoDB Time to Live on the `ttl` attribute. Idempotent: an existing table with the right key schema is
//! fine, one with another key schema is a configuration error.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::cli::Common;
use crate::config::Aws;
use crate::dynamodb::Client;
use crate::env::Env;
use crate::error::{Error, ServiceErrorKind};
use crate::exit::Exit;
use crate::log::Logger;

/// The attribute DynamoDB's Time to Live reads (Unix epoch seconds).
pub const TTL_ATTRIBUTE: &str = "ttl";
/// How long `table create` waits for a table to become ACTIVE.
pub const ACTIVE_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// The `CreateTable` request: partition key `key` (S), no sort key, on-demand billing.
pub fn create_request(table: &str) -> Value {
    json!({
        "TableName": table,
        "KeySchema": [{ "AttributeName": "key", "KeyType": "HASH" }],
        "AttributeDefinitions": [{ "AttributeName": "key", "AttributeType": "S" }],
        "BillingMode": "PAY_PER_REQUEST",
    })
}

/// The `UpdateTimeToLive` request that enables TTL on [`TTL_ATTRIBUTE`].
pub fn enable_ttl_request(table: &str) -> Value {
    json!({ "TableName": table, "TimeToLiveSpecification": { "AttributeName": TTL_ATTRIBUTE, "Enabled": true } })
}

/// The key schema of a `DescribeTable` answer's `Table`, as text: `partition key key (S)`, with the sort key
/// when there is one.
pub fn key_schema(table: &Value) -> String {
    let type_of = |name: &str| {
        table["AttributeDefinitions"]
            .as_array()
            .and_then(|definitions| definitions.iter().find(|d| d["AttributeName"] == name))
            .and_then(|d| d["AttributeType"].as_str())
            .unwrap_or("?")
            .to_owned()
    };
    let keys: Vec<String> = table["KeySchema"]
        .as_array()
        .map(|schema| {
            schema
                .iter()
                .map(|k| {
                    let name = k["AttributeName"].as_str().unwrap_or("?");
                    let role = if k["KeyType"] == "HASH" { "partition key" } else { "sort key" };
                    format!("{role} {name} ({})", type_of(name))
                })
                .collect()
        })
        .unwrap_or_default();
    if keys.is_empty() { "no key schema".to_owned() } else { keys.join(", ") }
}

/// Whether a `DescribeTable` answer's `Table` has the lock table's key schema: partition key `key` (S), no sort key.
pub fn has_lock_schema(table: &Value) -> bool {
    key_schema(table) == "partition key key (S)"
}

/// `table create`: create the table unless it exists, wait until it is ACTIVE, enable TTL on `ttl`.
pub fn table_create(common: &Common, env: &Env, log: &Logger) -> Result<Exit, Error> {
    let aws = Aws::resolve(common, env)?;
    aws.log_endpoints(&common.table, log);
    let client = aws.client(env, log);
    let table = common.table.as_str();
    let created = match client.call("CreateTable", &create_request(table)).map_err(Error::into_last) {
        Ok(_) => true,
        Err(Error::Service(e)) if e.code == "ResourceInUseException" => false,
        // Without dynamodb:CreateTable an existing table is still fine: DescribeTable says whether it exists.
        Err(Error::Service(e)) if e.kind() == ServiceErrorKind::AccessDenied => match describe(&client, table) {
            Ok(_) => false,
            Err(_) => return Err(Error::Service(e)),
        },
        Err(e) => return Err(e),
    };
    let Some(description) = wait_until_active(&client, table, log)? else {
        log.error(
            &format!("table {table:?} is not ACTIVE after {}s", ACTIVE_TIMEOUT.as_secs()),
            &[("exit_code", Exit::Unavailable.code().into())],
        );
        return Ok(Exit::Unavailable);
    };
    let fields = [("table", Value::from(table)), ("key_schema", key_schema(&description).into())];
    log.info(if created { "table created" } else { "table already exists" }, &fields);
    enable_ttl(&client, table, log);
    Ok(Exit::Success)
}

/// The `Table` of a `DescribeTable` answer.
fn describe(client: &Client<'_>, table: &str) -> Result<Value, Error> {
    let mut answer = client.call("DescribeTable", &json!({ "TableName": table }))?;
    Ok(answer.get_mut("Table").map(Value::take).unwrap_or(Value::Null))
}

/// Polls `DescribeTable` until the table is ACTIVE (its description) or [`ACTIVE_TIMEOUT`] has passed (`None`).
/// Another key schema, or a table being deleted, is an error at once.
fn wait_until_active(client: &Client<'_>, table: &str, log: &Logger) -> Result<Option<Value>, Error> {
    let deadline = Instant::now() + ACTIVE_TIMEOUT;
    let mut pause = Duration::from_millis(100);
    let mut logged = false;
    loop {
        let description = describe(client, table)?;
        if !has_lock_schema(&description) {
            return Err(Error::Config(format!(
                "table {table:?} exists with {}; lock-exec needs partition key key (S) and no sort key: choose \
                 another --table",
                key_schema(&description)
            )));
        }
        match description["TableStatus"].as_str().unwrap_or_default() {
            "ACTIVE" | "UPDATING" => return Ok(Some(description)),
            "DELETING" => return Err(Error::Config(format!("table {table:?} is being deleted; try again later"))),
            status => {
                if !logged {
                    log.info(
                        "waiting for the table to become ACTIVE",
                        &[("table", table.into()), ("status", status.into())],
                    );
                    logged = true;
                }
            }
        }
        if Instant::now() + pause > deadline {
            return Ok(None);
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}

/// What `UpdateTimeToLive` answered.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ttl {
    /// Enabled now.
    Enabled,
    /// It was enabled (or being enabled) on `ttl` already.
    AlreadyEnabled,
    /// It could not be enabled: why.
    NotEnabled(String),
}

/// Enables TTL on [`TTL_ATTRIBUTE`] and logs the outcome; a failure is a warning (the table works without TTL).
fn enable_ttl(client: &Client<'_>, table: &str, log: &Logger) {
    let fields = [("table", Value::from(table)), ("attribute", TTL_ATTRIBUTE.into())];
    match ttl_outcome(client, table) {
        Ttl::Enabled => log.info("time to live enabled", &fields),
        Ttl::AlreadyEnabled => log.info("time to live already enabled", &fields),
        Ttl::NotEnabled(why) => log.warn(
            &format!(
                "time to live could not be enabled on {TTL_ATTRIBUTE}: {why}; the table is usable, but items of \
                 unused keys stay until deleted"
            ),
            &fields,
        ),
    }
}

fn ttl_outcome(client: &Client<'_>, table: &str) -> Ttl {
    let refused = match client.call("UpdateTimeToLive", &enable_ttl_request(table)).map_err(Error::into_last) {
        Ok(_) => return Ttl::Enabled,
        Err(e) => e,
    };
    // DynamoDB refuses to enable TTL twice ("TimeToLive is already enabled") and to change it again soon after
    // ("modified multiple times within a fixed interval"): DescribeTimeToLive (if allowed) tells what is set.
    let described = client.call("DescribeTimeToLive", &json!({ "TableName": table })).ok();
    let description = described.as_ref().map(|answer| &answer["TimeToLiveDescription"]);
    if let Some(description) = description {
        let on_ttl = description["AttributeName"] == TTL_ATTRIBUTE;
        let status = description["TimeToLiveStatus"].as_str().unwrap_or_default();
        if on_ttl && matches!(status, "ENABLED" | "ENABLING") {
            return Ttl::AlreadyEnabled;
        }
        if let Some(other) = description["AttributeName"].as_str().filter(|_| status != "DISABLED" && !on_ttl) {
            return Ttl::NotEnabled(format!(
                "it is {} on attribute {other:?} (a table has one TTL attribute; lock-exec writes {TTL_ATTRIBUTE}): \
                 {}",
                status.to_ascii_lowercase(),
                crate::error_chain(&refused)
            ));
        }
    }
    let already = matches!(&refused, Error::Service(e) if e.message.contains("already enabled"));
    if already { Ttl::AlreadyEnabled } else { Ttl::NotEnabled(crate::error_chain(&refused)) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(description: Value, expected: &str, lock_schema: bool) {
        assert_eq!(key_schema(&description), expected);
        assert_eq!(has_lock_schema(&description), lock_schema, "{description}");
    }

    #[test]
    fn key_schemas() {
        let definitions =
            json!([{ "AttributeName": "key", "AttributeType": "S" }, { "AttributeName": "at", "AttributeType": "N" }]);
        check(
            json!({ "KeySchema": [{ "AttributeName": "key", "KeyType": "HASH" }], "AttributeDefinitions": definitions }),
            "partition key key (S)",
            true,
        );
        check(
            json!({ "KeySchema": [{ "AttributeName": "key", "KeyType": "HASH" }, { "AttributeName": "at", "KeyType": "RANGE" }],
                    "AttributeDefinitions": definitions }),
            "partition key key (S), sort key at (N)",
            false,
        );
        check(
            json!({ "KeySchema": [{ "AttributeName": "id", "KeyType": "HASH" }],
                    "AttributeDefinitions": [{ "AttributeName": "id", "AttributeType": "S" }] }),
            "partition key id (S)",
            false,
        );
        check(
            json!({ "KeySchema": [{ "AttributeName": "key", "KeyType": "HASH" }],
                    "AttributeDefinitions": [{ "AttributeName": "key", "AttributeType": "B" }] }),
            "partition key key (B)",
            false,
        );
        check(json!({}), "no key schema", false);
    }

    #[test]
    fn requests() {
        let create = create_request("locks");
        assert_eq!(create["BillingMode"], "PAY_PER_REQUEST");
        assert!(has_lock_schema(&create));
        let ttl = enable_ttl_request("locks");
        assert_eq!(ttl["TimeToLiveSpecification"], json!({ "AttributeName": "ttl", "Enabled": true }));
    }
}
