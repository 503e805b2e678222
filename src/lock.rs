//! The lock protocol: one item per key, compatible with the Go tool's `key` (S) and `expire` (N, Unix ns).
//!
//! This module builds the DynamoDB request bodies and reads the answers into decisions ([`Acquire`],
//! [`Owned`]); it does no HTTP itself ([`crate::dynamodb::Client`] sends what it builds).

use std::time::{Duration, SystemTime};

use serde_json::{Value, json};

pub use crate::clock::{rfc3339_ns, unix_ns};
use crate::dynamodb::{Client, Conditional};
use crate::error::{Error, ServiceError};

/// Item attributes lock-exec writes besides `key` and `expire`.
const NAMES: [(&str, &str); 8] = [
    ("#key", "key"),
    ("#expire", "expire"),
    ("#owner", "owner"),
    ("#host", "host"),
    ("#pid", "pid"),
    ("#command", "command"),
    ("#acquired", "acquired"),
    ("#fence", "fence"),
];

/// Who we are when we take a lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// Random 128-bit token, hex.
    pub token: String,
    /// This machine's host name.
    pub host: String,
    /// This process's pid.
    pub pid: u32,
    /// The command, as logged.
    pub command: String,
}

/// The lock item as read from the table. Items written by the Go tool have only `key` and `expire`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Item {
    /// The key.
    pub key: String,
    /// Lease end, Unix ns (0 when released).
    pub expire_ns: i128,
    /// Owner token, absent when released or written by the Go tool.
    pub owner: Option<String>,
    /// Holder's host.
    pub host: Option<String>,
    /// Holder's pid.
    pub pid: Option<u32>,
    /// Holder's command.
    pub command: Option<String>,
    /// When the holder took the lock (RFC 3339).
    pub acquired: Option<String>,
    /// Fencing token.
    pub fence: Option<u64>,
}

/// The lease we hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The fencing token of this acquisition.
    pub fence: u64,
    /// The lease end written, Unix ns.
    pub expire_ns: i128,
}

/// The outcome of an acquire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acquire {
    /// We hold the lock.
    Acquired(Lease),
    /// Someone else holds it; the item as far as it is known.
    Held(Option<Item>),
}

/// The outcome of a renewal or release that the owner condition may refuse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owned {
    /// The write happened: we still owned the item.
    Done,
    /// The item is no longer ours; what it holds now (None when the item is gone).
    NotOwner(Option<Item>),
}

/// Whether the item is held at `now_ns`.
pub fn is_held(item: &Item, now_ns: i128) -> bool {
    item.expire_ns >= now_ns
}

/// Log fields describing a holder.
pub fn holder_fields(item: Option<&Item>) -> Vec<(&'static str, Value)> {
    let Some(item) = item else { return vec![("holder", "unknown".into())] };
    let mut fields: Vec<(&'static str, Value)> = vec![
        ("holder", item.host.clone().unwrap_or_else(|| "unknown (no owner recorded)".into()).into()),
        ("expire", rfc3339_ns(item.expire_ns).into()),
    ];
    if let Some(pid) = item.pid {
        fields.push(("holder_pid", pid.into()));
    }
    if let Some(acquired) = &item.acquired {
        fields.push(("acquired", acquired.clone().into()));
    }
    if let Some(fence) = item.fence {
        fields.push(("fence", fence.into()));
    }
    fields
}

fn key_attr(key: &str) -> Value {
    json!({ "key": { "S": key } })
}

fn names(used: &[&str]) -> Value {
    let map: serde_json::Map<String, Value> = NAMES
        .iter()
        .filter(|(placeholder, _)| used.contains(placeholder))
        .map(|(placeholder, name)| ((*placeholder).to_owned(), Value::from(*name)))
        .collect();
    Value::Object(map)
}

fn n(value: impl ToString) -> Value {
    json!({ "N": value.to_string() })
}

/// The acquire `UpdateItem`: taken when absent, expired, or already ours.
pub fn acquire_request(table: &str, key: &str, owner: &Owner, now: SystemTime, lease: Duration) -> Value {
    let now_ns = unix_ns(now);
    let now_ms = now_ns / 1_000_000;
    json!({
        "TableName": table,
        "Key": key_attr(key),
        "ConditionExpression": "attribute_not_exists(#key) OR #expire < :now OR #owner = :me",
        "UpdateExpression": "SET #expire = :expire, #owner = :me, #host = :host, #pid = :pid, #command = :command, \
            #acquired = :acquired, #fence = if_not_exists(#fence, :seed) + :one",
        "ExpressionAttributeNames": names(&["#key", "#expire", "#owner", "#host", "#pid", "#command", "#acquired", "#fence"]),
        "ExpressionAttributeValues": {
            ":now": n(now_ns),
            ":expire": n(now_ns + lease.as_nanos() as i128),
            ":me": { "S": owner.token },
            ":host": { "S": owner.host },
            ":pid": n(owner.pid),
            ":command": { "S": owner.command },
            ":acquired": { "S": rfc3339_ns(now_ns) },
            ":seed": n(now_ms),
            ":one": n(1),
        },
        "ReturnValues": "ALL_NEW",
        "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
    })
}

/// The renewal `UpdateItem`: a new lease end, only while we own the item.
pub fn renew_request(table: &str, key: &str, token: &str, expire_ns: i128) -> Value {
    json!({
        "TableName": table,
        "Key": key_attr(key),
        "ConditionExpression": "#owner = :me",
        "UpdateExpression": "SET #expire = :expire",
        "ExpressionAttributeNames": names(&["#owner", "#expire"]),
        "ExpressionAttributeValues": { ":me": { "S": token }, ":expire": n(expire_ns) },
        "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
    })
}

/// The release `UpdateItem`: lease end 0 and no owner, only while we own the item; `fence` is kept.
pub fn release_request(table: &str, key: &str, token: &str) -> Value {
    json!({
        "TableName": table,
        "Key": key_attr(key),
        "ConditionExpression": "#owner = :me",
        "UpdateExpression": "SET #expire = :zero REMOVE #owner",
        "ExpressionAttributeNames": names(&["#owner", "#expire"]),
        "ExpressionAttributeValues": { ":me": { "S": token }, ":zero": n(0) },
        "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
    })
}

/// The forced unlock `UpdateItem`: lease end 0 and no owner, whoever holds it; only if the item exists.
pub fn force_unlock_request(table: &str, key: &str) -> Value {
    json!({
        "TableName": table,
        "Key": key_attr(key),
        "ConditionExpression": "attribute_exists(#key)",
        "UpdateExpression": "SET #expire = :zero REMOVE #owner",
        "ExpressionAttributeNames": names(&["#key", "#owner", "#expire"]),
        "ExpressionAttributeValues": { ":zero": n(0) },
        "ReturnValues": "ALL_OLD",
    })
}

/// The `DeleteItem` of `unlock --delete` (what the Go tool's unlock does).
pub fn delete_request(table: &str, key: &str) -> Value {
    json!({ "TableName": table, "Key": key_attr(key), "ReturnValues": "ALL_OLD" })
}

/// The consistent `GetItem` of `status` and of a holder lookup.
pub fn get_request(table: &str, key: &str) -> Value {
    json!({ "TableName": table, "Key": key_attr(key), "ConsistentRead": true })
}

/// Reads an item from its DynamoDB attribute map; `None` when it has no `key`.
pub fn parse_item(attributes: &Value) -> Option<Item> {
    let s = |name: &str| attributes.get(name)?.get("S")?.as_str().map(str::to_owned);
    let num = |name: &str| attributes.get(name)?.get("N")?.as_str().map(str::to_owned);
    Some(Item {
        key: s("key")?,
        expire_ns: num("expire").and_then(|v| parse_number(&v)).unwrap_or(0),
        owner: s("owner"),
        host: s("host"),
        pid: num("pid").and_then(|v| v.parse().ok()),
        command: s("command"),
        acquired: s("acquired"),
        fence: num("fence").and_then(|v| v.parse().ok()),
    })
}

/// DynamoDB numbers may come back as `1.7E+18` from some servers; integers are read exactly.
fn parse_number(text: &str) -> Option<i128> {
    text.parse::<i128>().ok().or_else(|| text.parse::<f64>().ok().map(|f| f as i128))
}

/// Acquires the lock: one conditional `UpdateItem`, and a consistent `GetItem` for the holder when the server
/// did not return the old item.
pub fn acquire(
    client: &Client<'_>,
    table: &str,
    key: &str,
    owner: &Owner,
    now: SystemTime,
    lease: Duration,
) -> Result<Acquire, Error> {
    let request = acquire_request(table, key, owner, now, lease);
    match client.call_conditional("UpdateItem", &request)? {
        Conditional::Done(answer) => {
            let item = answer.get("Attributes").and_then(parse_item);
            let fence = item.as_ref().and_then(|i| i.fence).ok_or_else(|| {
                Error::Service(ServiceError {
                    service: "dynamodb",
                    status: 200,
                    code: "UnexpectedAnswer".into(),
                    message: format!("the acquire's answer has no fence attribute: {answer}"),
                })
            })?;
            Ok(Acquire::Acquired(Lease { fence, expire_ns: unix_ns(now) + lease.as_nanos() as i128 }))
        }
        Conditional::Failed(old) => Ok(Acquire::Held(condition_item(client, table, key, old)?)),
    }
}

/// The item named in a failed condition, from the error's `Item` or a consistent read.
fn condition_item(client: &Client<'_>, table: &str, key: &str, returned: Option<Value>) -> Result<Option<Item>, Error> {
    if let Some(item) = returned.as_ref().and_then(parse_item) {
        return Ok(Some(item));
    }
    get(client, table, key)
}

/// Renews the lease to `expire_ns`, only while we own the item.
pub fn renew(client: &Client<'_>, table: &str, key: &str, token: &str, expire_ns: i128) -> Result<Owned, Error> {
    owned_write(client, table, key, &renew_request(table, key, token, expire_ns))
}

/// Releases the lock, only while we own the item.
pub fn release(client: &Client<'_>, table: &str, key: &str, token: &str) -> Result<Owned, Error> {
    owned_write(client, table, key, &release_request(table, key, token))
}

fn owned_write(client: &Client<'_>, table: &str, key: &str, request: &Value) -> Result<Owned, Error> {
    match client.call_conditional("UpdateItem", request)? {
        Conditional::Done(_) => Ok(Owned::Done),
        Conditional::Failed(old) => Ok(Owned::NotOwner(condition_item(client, table, key, old)?)),
    }
}

/// Forced unlock: returns the item as it was, `None` when there was none.
pub fn force_unlock(client: &Client<'_>, table: &str, key: &str) -> Result<Option<Item>, Error> {
    match client.call_conditional("UpdateItem", &force_unlock_request(table, key))? {
        Conditional::Done(answer) => Ok(answer.get("Attributes").and_then(parse_item)),
        Conditional::Failed(_) => Ok(None),
    }
}

/// Deletes the item: returns it as it was, `None` when there was none.
pub fn delete(client: &Client<'_>, table: &str, key: &str) -> Result<Option<Item>, Error> {
    let answer = client.call("DeleteItem", &delete_request(table, key))?;
    Ok(answer.get("Attributes").and_then(parse_item))
}

/// Reads the item consistently.
pub fn get(client: &Client<'_>, table: &str, key: &str) -> Result<Option<Item>, Error> {
    let answer = client.call("GetItem", &get_request(table, key))?;
    Ok(answer.get("Item").and_then(parse_item))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner() -> Owner {
        Owner { token: "t0k".into(), host: "h".into(), pid: 42, command: "echo hi".into() }
    }

    #[test]
    fn acquire_request_is_conditional_and_counts_the_fence() {
        let now = std::time::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let r = acquire_request("tbl", "k", &owner(), now, Duration::from_secs(60));
        assert_eq!(r["TableName"], "tbl");
        assert_eq!(r["Key"], json!({"key": {"S": "k"}}));
        assert_eq!(r["ConditionExpression"], "attribute_not_exists(#key) OR #expire < :now OR #owner = :me");
        assert!(
            r["UpdateExpression"].as_str().is_some_and(|u| u.contains("#fence = if_not_exists(#fence, :seed) + :one"))
        );
        let values = &r["ExpressionAttributeValues"];
        assert_eq!(values[":now"]["N"], "1700000000123000000");
        assert_eq!(values[":expire"]["N"], "1700000060123000000");
        assert_eq!(values[":seed"]["N"], "1700000000123");
        assert_eq!(values[":me"]["S"], "t0k");
        assert_eq!(values[":pid"]["N"], "42");
        assert_eq!(values[":acquired"]["S"], "2023-11-14T22:13:20.123Z");
        assert_eq!(r["ExpressionAttributeNames"]["#owner"], "owner");
        assert_eq!(r["ReturnValuesOnConditionCheckFailure"], "ALL_OLD");
        // every placeholder used is declared, and no declared one is unused (DynamoDB rejects both)
        let text = format!("{} {}", r["ConditionExpression"], r["UpdateExpression"]);
        for (placeholder, _) in NAMES {
            assert_eq!(
                text.contains(placeholder),
                r["ExpressionAttributeNames"].get(placeholder).is_some(),
                "{placeholder}"
            );
        }
    }

    #[test]
    fn owner_checked_requests() {
        let renew = renew_request("tbl", "k", "me", 5);
        assert_eq!(renew["ConditionExpression"], "#owner = :me");
        assert_eq!(renew["ExpressionAttributeValues"][":expire"]["N"], "5");
        let release = release_request("tbl", "k", "me");
        assert_eq!(release["UpdateExpression"], "SET #expire = :zero REMOVE #owner");
        assert_eq!(release["ExpressionAttributeValues"][":me"]["S"], "me");
        let force = force_unlock_request("tbl", "k");
        assert_eq!(force["ConditionExpression"], "attribute_exists(#key)");
        assert!(force["ExpressionAttributeValues"].get(":me").is_none());
        assert_eq!(get_request("tbl", "k")["ConsistentRead"], true);
    }

    #[test]
    fn items_parse_including_go_items() {
        let go = json!({"key": {"S": "k"}, "expire": {"N": "1700000000000000000"}});
        let item = parse_item(&go).expect("a Go item has key and expire");
        assert_eq!(item.expire_ns, 1_700_000_000_000_000_000);
        assert_eq!((item.owner, item.fence), (None, None));
        let ours = json!({"key": {"S": "k"}, "expire": {"N": "5"}, "owner": {"S": "o"}, "host": {"S": "h"},
            "pid": {"N": "9"}, "fence": {"N": "12"}, "acquired": {"S": "x"}, "command": {"S": "c"}});
        let item = parse_item(&ours).expect("our item");
        assert_eq!((item.pid, item.fence, item.owner.as_deref()), (Some(9), Some(12), Some("o")));
        assert_eq!(parse_item(&json!({"expire": {"N": "1"}})), None);
        assert_eq!(parse_number("1.7E+18"), Some(1_700_000_000_000_000_000));
    }

    #[test]
    fn held_means_expire_not_passed() {
        let item = Item { expire_ns: 100, ..Item::default() };
        assert!(is_held(&item, 99) && is_held(&item, 100) && !is_held(&item, 101));
        assert_eq!(rfc3339_ns(0), "1970-01-01T00:00:00Z");
    }
}
