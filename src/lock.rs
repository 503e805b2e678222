//! The lock protocol: one item per key, compatible with the Go tool's `key` (S) and `expire` (N, Unix ns).
//!
//! This module builds the DynamoDB request bodies and reads the answers into decisions ([`Acquire`],
//! [`Owned`]); it does no HTTP itself ([`crate::dynamodb::Client`] sends what it builds).

use std::time::{Duration, SystemTime};

use serde_json::{Value, json};

pub use crate::clock::{parse_rfc3339_ns, rfc3339_ns, unix_ns};
use crate::dynamodb::{Client, Conditional};
use crate::error::{Error, ServiceError};

/// Who we are when we take a lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// Random 128-bit token of this process, hex: every owner-conditioned write checks it.
    pub token: String,
    /// A stable owner identity (`--owner`): an acquire also takes an item whose `owner_id` is this, even before
    /// its lease ends (a retried pod reclaiming its crashed predecessor's lock).
    pub id: Option<String>,
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
    /// The holder's stable identity (`--owner`), when it gave one.
    pub owner_id: Option<String>,
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
    /// When DynamoDB TTL may delete the item, Unix seconds (absent on items lock-exec has not written).
    pub ttl: Option<i64>,
    /// The last run's record, written by its release.
    pub last_run: Option<LastRun>,
}

/// What the release of a run records about it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LastRun {
    /// lock-exec's exit code for that run (the command's, 128+N for signal N, 75 for a lost lock).
    pub exit_code: i32,
    /// The host it ran on.
    pub host: String,
    /// When the command started, Unix ns.
    pub started_ns: i128,
    /// When the command and everything it started were gone, Unix ns.
    pub finished_ns: i128,
    /// The fence of the lease it ran under (`last_fence`; absent on records of earlier versions).
    pub fence: Option<u64>,
}

impl LastRun {
    /// The run's duration in milliseconds.
    pub fn duration_ms(&self) -> i128 {
        (self.finished_ns - self.started_ns).max(0) / 1_000_000
    }
}

/// The lease we hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The fencing token of this acquisition.
    pub fence: u64,
    /// When the acquire was made (the item's `acquired`), Unix ns.
    pub acquired_ns: i128,
    /// The lease end written, Unix ns.
    pub expire_ns: i128,
}

/// The outcome of an acquire.
// One per request answer, moved once: the size of an `Item` costs nothing here.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acquire {
    /// We hold the lock.
    Acquired(Lease),
    /// Someone else holds it; the item as far as it is known.
    Held(Option<Item>),
}

/// The outcome of a renewal or release that the owner condition may refuse.
// One per request answer, moved once: the size of an `Item` costs nothing here.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owned {
    /// The write happened: we still owned the item.
    Done,
    /// The item is no longer ours; what it holds now (None when the item is gone).
    NotOwner(Option<Item>),
}

/// How a release ends our hold on the item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    /// The release time.
    pub now: SystemTime,
    /// How long the item is kept after it is last used (its `ttl` is counted from its lease end or release).
    pub retain: Duration,
    /// `--keep`: hold the lock until this instant (Unix ns) instead of freeing it, when it is still ahead.
    pub keep_until_ns: Option<i128>,
    /// The run's record, when a command ran.
    pub last_run: Option<LastRun>,
}

impl Release {
    /// A plain release at `now`: frees the item, records no run.
    pub fn plain(now: SystemTime, retain: Duration) -> Release {
        Release { now, retain, keep_until_ns: None, last_run: None }
    }

    /// The lease end a `--keep` release writes, when there is one still ahead of the release time.
    pub fn kept_until(&self) -> Option<i128> {
        self.keep_until_ns.filter(|&until| until > unix_ns(self.now))
    }
}

/// The last instant a lock may end at: `expire` holds signed 64-bit Unix nanoseconds, which the Go tool (and any
/// reader using Go's `time`) reads; they end on 2262-04-11.
pub const LAST_END_NS: i128 = i64::MAX as i128;

/// The lock's end `length` after `from_ns`, never after [`LAST_END_NS`] (the command line refuses a lease that
/// would end later; a clock at the very edge still writes a readable value).
pub fn end_after(from_ns: i128, length: Duration) -> i128 {
    (from_ns + length.as_nanos() as i128).min(LAST_END_NS)
}

/// The lease end of an item whose `expire` is missing or not a number. lock-exec v1 and dynamolock keep their
/// locks in items with the same `key` attribute and no `expire`, so such an item may be a live lock of another
/// tool: the acquire never takes it (as the Go tool does not), and `status` and `list` show it held with no
/// known end. `unlock` frees it (it writes `expire` 0).
pub const NO_LEASE_END: i128 = i128::MAX;

/// The item's lease end as a timestamp to show: none when it has none (released: 0) or none lock-exec can read
/// ([`NO_LEASE_END`]).
pub fn shown_expire(item: &Item) -> Option<String> {
    (item.expire_ns > 0 && item.expire_ns != NO_LEASE_END).then(|| rfc3339_ns(item.expire_ns))
}

/// Whether the item is held at `now_ns`.
pub fn is_held(item: &Item, now_ns: i128) -> bool {
    item.expire_ns >= now_ns
}

/// When the run that took the item's lease ended, if it has: a `--keep` release keeps the owner and the lease end
/// and records the run with its fence, so an owned item whose recorded run has the item's fence is held with no
/// process behind it (every acquire raises the fence; clocks play no part).
pub fn kept_after_run(item: &Item) -> Option<i128> {
    item.owner.as_ref()?;
    let run = item.last_run.as_ref()?;
    (run.fence.is_some() && run.fence == item.fence).then_some(run.finished_ns)
}

/// Whether an item that refused our owner-conditioned write has a holder: an owner (another lock-exec), or a lease
/// end ahead (a Go holder records no owner). An unlocked or released item keeps the host and pid of whoever held
/// it last, which are not a holder.
pub fn has_holder(item: &Item, now_ns: i128) -> bool {
    item.owner.is_some() || is_held(item, now_ns)
}

/// Log fields describing a holder.
pub fn holder_fields(item: Option<&Item>) -> Vec<(&'static str, Value)> {
    let Some(item) = item else { return vec![("holder", "unknown".into())] };
    // A Go holder records no owner; another tool's lock (lock-exec v1, dynamolock) may have an owner but no host.
    let unknown = if item.owner.is_some() { "unknown (no host recorded)" } else { "unknown (no owner recorded)" };
    let mut fields: Vec<(&'static str, Value)> =
        vec![("holder", item.host.clone().unwrap_or_else(|| unknown.into()).into())];
    // A released item's expire is 0, and another tool's lock may have none: no lease end to show.
    if let Some(expire) = shown_expire(item) {
        fields.push(("expire", expire.into()));
    }
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

/// `ExpressionAttributeNames` for the expressions: every `#name` placeholder used stands for the attribute
/// `name` (DynamoDB rejects both an undeclared placeholder and a declared one left unused). Names such as `ttl`
/// are DynamoDB reserved words: only placeholders may name them.
fn names(expressions: &[&str]) -> Value {
    let mut map = serde_json::Map::new();
    for expression in expressions {
        for token in expression.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '#')) {
            if let Some(name) = token.strip_prefix('#') {
                map.insert(token.to_owned(), Value::from(name));
            }
        }
    }
    Value::Object(map)
}

fn n(value: impl ToString) -> Value {
    json!({ "N": value.to_string() })
}

/// The `ttl` attribute (Unix seconds, what DynamoDB TTL reads) for an item last used at `ns`.
pub fn ttl_seconds(ns: i128, retain: Duration) -> i128 {
    ns.div_euclid(1_000_000_000) + retain.as_secs() as i128
}

/// What an acquire writes and how it judges the item's lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Terms {
    /// The local clock when the request is built.
    pub now: SystemTime,
    /// The lease length.
    pub lease: Duration,
    /// How long the item is kept after its lease ends (its `ttl`).
    pub retain: Duration,
    /// `--max-clock-skew`: the item's lease counts as ended only this long after its `expire` (the holder's
    /// clock may be behind ours by up to this much).
    pub max_clock_skew: Duration,
    /// Whether an item held under our `--owner` id may be taken (reclaimed) while its lease runs. `--limit`
    /// first tries every slot without, so parallel runs that share an id fill free slots before taking one
    /// another's.
    pub reclaim: bool,
}

/// The fence seed for a missing item, in Unix ms: the local clock, or the earliest the server's clock can read
/// (`server_earliest_ns`, from earlier answers' `Date` headers) when that is later, so a host whose clock is
/// behind does not reseed below what the server's time handed out before.
pub fn fence_seed(now: SystemTime, server_earliest_ns: Option<i128>) -> i128 {
    unix_ns(now).max(server_earliest_ns.unwrap_or(i128::MIN)) / 1_000_000
}

/// The acquire `UpdateItem`: taken when absent, ended at least `max_clock_skew` ago, already ours, or (with an
/// owner id) held by our id. A missing item's fence starts from `seed_ms`.
pub fn acquire_request(table: &str, key: &str, owner: &Owner, terms: &Terms, seed_ms: i128) -> Value {
    let now_ns = unix_ns(terms.now);
    let expire_ns = end_after(now_ns, terms.lease);
    // `#expire < :ended`: the holder's lease end plus the largest clock skew allowed is behind our clock. Never
    // below 1: a released item's lease end 0 stays ended whatever skew is allowed.
    let ended_ns = (now_ns - terms.max_clock_skew.as_nanos() as i128).max(1);
    // `#owner = :me` lets a retry take the lock an earlier attempt of it took (its answer lost); only with a lease
    // end not past this one: an attempt delivered late, after our renewals, must not move the lease end back. For
    // the same reason `--owner`'s clause applies to another process's token only.
    // An item whose `expire` is missing or not a number is never taken (see [`NO_LEASE_END`]): no clause matches it.
    let mut condition =
        "attribute_not_exists(#key) OR #expire < :ended OR (#owner = :me AND #expire <= :expire)".to_owned();
    let mut update = "SET #expire = :expire, #owner = :me, #host = :host, #pid = :pid, #command = :command, \
        #acquired = :acquired, #fence = if_not_exists(#fence, :seed) + :one, #ttl = :ttl"
        .to_owned();
    let mut values = json!({
        ":ended": n(ended_ns),
        ":expire": n(expire_ns),
        ":me": { "S": owner.token },
        ":host": { "S": owner.host },
        ":pid": n(owner.pid),
        ":command": { "S": owner.command },
        ":acquired": { "S": rfc3339_ns(now_ns) },
        ":seed": n(seed_ms),
        ":one": n(1),
        ":ttl": n(ttl_seconds(expire_ns, terms.retain)),
    });
    match &owner.id {
        Some(id) => {
            if terms.reclaim {
                condition.push_str(" OR (#owner_id = :id AND #owner <> :me)");
            }
            update.push_str(", #owner_id = :id");
            values[":id"] = json!({ "S": id });
        }
        // A stale identity of an earlier holder must not let its retried pod take our lock.
        None => update.push_str(" REMOVE #owner_id"),
    }
    json!({
        "TableName": table,
        "Key": key_attr(key),
        "ExpressionAttributeNames": names(&[&condition, &update]),
        "ConditionExpression": condition,
        "UpdateExpression": update,
        "ExpressionAttributeValues": values,
        "ReturnValues": "ALL_NEW",
        "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
    })
}

/// The `UpdateItem` that raises the fence of an item we just created from `seed_ms` (the answer showed our
/// clock behind the server's): only while we own it and nobody moved the fence meanwhile.
pub fn raise_fence_request(table: &str, key: &str, token: &str, old: u64, new: u64) -> Value {
    let (condition, update) = ("#owner = :me AND #fence = :old", "SET #fence = :new");
    json!({
        "TableName": table,
        "Key": key_attr(key),
        "ConditionExpression": condition,
        "UpdateExpression": update,
        "ExpressionAttributeNames": names(&[condition, update]),
        "ExpressionAttributeValues": { ":me": { "S": token }, ":old": n(old), ":new": n(new) },
    })
}

/// The renewal `UpdateItem`: a new lease end, only while we own the item and only forward. A renewal the network
/// delivers late, after later ones were confirmed, must not move the lease end back: the holder counts on the
/// later end, a contender would believe the earlier one.
pub fn renew_request(table: &str, key: &str, token: &str, expire_ns: i128, retain: Duration) -> Value {
    let (condition, update) = ("#owner = :me AND #expire <= :expire", "SET #expire = :expire, #ttl = :ttl");
    json!({
        "TableName": table,
        "Key": key_attr(key),
        "ConditionExpression": condition,
        "UpdateExpression": update,
        "ExpressionAttributeNames": names(&[condition, update]),
        "ExpressionAttributeValues": {
            ":me": { "S": token },
            ":expire": n(expire_ns),
            ":ttl": n(ttl_seconds(expire_ns, retain)),
        },
        "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
    })
}

/// The release `UpdateItem`, only while we own the item; `fence` is kept. It frees the item (lease end 0, no
/// owner), or with a `--keep` instant still ahead sets the lease end to it and keeps the owner; it records the
/// run when there was one.
pub fn release_request(table: &str, key: &str, token: &str, release: &Release) -> Value {
    let now_ns = unix_ns(release.now);
    let condition = "#owner = :me";
    let mut values = json!({ ":me": { "S": token } });
    let mut update = match release.kept_until() {
        Some(until) => {
            values[":until"] = n(until);
            values[":ttl"] = n(ttl_seconds(until, release.retain));
            "SET #expire = :until, #ttl = :ttl".to_owned()
        }
        None => {
            values[":zero"] = n(0);
            values[":ttl"] = n(ttl_seconds(now_ns, release.retain));
            "SET #expire = :zero, #ttl = :ttl".to_owned()
        }
    };
    if let Some(run) = &release.last_run {
        update.push_str(
            ", #last_exit_code = :last_exit_code, #last_host = :last_host, #last_started = :last_started, \
             #last_finished = :last_finished, #last_duration_ms = :last_duration_ms",
        );
        if let Some(fence) = run.fence {
            update.push_str(", #last_fence = :last_fence");
            values[":last_fence"] = n(fence);
        }
        values[":last_exit_code"] = n(run.exit_code);
        values[":last_host"] = json!({ "S": run.host });
        values[":last_started"] = json!({ "S": rfc3339_ns(run.started_ns) });
        values[":last_finished"] = json!({ "S": rfc3339_ns(run.finished_ns) });
        values[":last_duration_ms"] = n(run.duration_ms());
    }
    if release.kept_until().is_none() {
        update.push_str(" REMOVE #owner, #owner_id");
    }
    json!({
        "TableName": table,
        "Key": key_attr(key),
        "ExpressionAttributeNames": names(&[condition, &update]),
        "ConditionExpression": condition,
        "UpdateExpression": update,
        "ExpressionAttributeValues": values,
        "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
    })
}

/// The forced unlock `UpdateItem`: lease end 0 and no owner, whoever holds it; only if the item exists.
pub fn force_unlock_request(table: &str, key: &str, now: SystemTime, retain: Duration) -> Value {
    let (condition, update) = ("attribute_exists(#key)", "SET #expire = :zero, #ttl = :ttl REMOVE #owner, #owner_id");
    json!({
        "TableName": table,
        "Key": key_attr(key),
        "ConditionExpression": condition,
        "UpdateExpression": update,
        "ExpressionAttributeNames": names(&[condition, update]),
        "ExpressionAttributeValues": { ":zero": n(0), ":ttl": n(ttl_seconds(unix_ns(now), retain)) },
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
    let int = |name: &str| num(name).and_then(|v| parse_number(&v));
    let last_run =
        match (int("last_exit_code").and_then(|v| i32::try_from(v).ok()), s("last_started"), s("last_finished")) {
            (Some(exit_code), Some(started), Some(finished)) => Some(LastRun {
                exit_code,
                host: s("last_host").unwrap_or_default(),
                started_ns: parse_rfc3339_ns(&started).unwrap_or(0),
                finished_ns: parse_rfc3339_ns(&finished).unwrap_or(0),
                fence: num("last_fence").and_then(|v| v.parse().ok()),
            }),
            _ => None,
        };
    Some(Item {
        key: s("key")?,
        expire_ns: int("expire").unwrap_or(NO_LEASE_END),
        owner: s("owner"),
        owner_id: s("owner_id"),
        host: s("host"),
        pid: num("pid").and_then(|v| v.parse().ok()),
        command: s("command"),
        acquired: s("acquired"),
        fence: num("fence").and_then(|v| v.parse().ok()),
        ttl: int("ttl").and_then(|v| i64::try_from(v).ok()),
        last_run,
    })
}

/// DynamoDB numbers may come back as `1.7E+18` from some servers; integers are read exactly.
fn parse_number(text: &str) -> Option<i128> {
    text.parse::<i128>().ok().or_else(|| text.parse::<f64>().ok().map(|f| f as i128))
}

/// Acquires the lock: one conditional `UpdateItem`, and a consistent `GetItem` for the holder when the server
/// did not return the old item.
///
/// When the acquire created the item (the fence is our seed + 1) and its answer showed the server's clock
/// ahead of the seed (no earlier answer had said so), one more owner-conditioned write raises the fence to the
/// server's time, so the fence never goes back below what an in-sync host handed out before the item was
/// deleted. Should that write fail, the lease stands with the fence as it is (a warning says so).
pub fn acquire(client: &Client<'_>, table: &str, key: &str, owner: &Owner, terms: &Terms) -> Result<Acquire, Error> {
    let seed_ms = fence_seed(terms.now, client.server_earliest_ns(terms.now));
    let request = acquire_request(table, key, owner, terms, seed_ms);
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
            let fence = raise_new_fence(client, table, key, &owner.token, fence, terms.now, seed_ms);
            let acquired_ns = unix_ns(terms.now);
            let expire_ns = end_after(acquired_ns, terms.lease);
            Ok(Acquire::Acquired(Lease { fence, acquired_ns, expire_ns }))
        }
        Conditional::Failed(old) => Ok(Acquire::Held(condition_item(client, table, key, old)?)),
    }
}

/// The fence of a lease just taken: raised to the server's clock (ms) when the acquire seeded it lower, that is
/// when the answers now show the server's clock ahead of the local one at `seeded` (when the seed was read).
/// The raise signs with cached credentials and makes one attempt: it may not delay the command much.
fn raise_new_fence(
    client: &Client<'_>,
    table: &str,
    key: &str,
    token: &str,
    fence: u64,
    seeded: SystemTime,
    seed_ms: i128,
) -> u64 {
    let server_ms = client.server_earliest_ns(seeded).map(|ns| ns / 1_000_000);
    let raised = match server_ms {
        Some(server_ms) if i128::from(fence) == seed_ms + 1 && server_ms > seed_ms => {
            u64::try_from(server_ms + 1).unwrap_or(fence)
        }
        _ => return fence,
    };
    let mut quick = client.clone();
    quick.sign_with_cached = true;
    quick.max_attempts = 1;
    let outcome = quick.call_conditional("UpdateItem", &raise_fence_request(table, key, token, fence, raised));
    match outcome {
        Ok(Conditional::Done(_)) => {
            client.log.debug("fence raised to the server's clock", &[("from", fence.into()), ("to", raised.into())]);
            raised
        }
        other => {
            let why = match other {
                Err(e) => crate::error_chain(&e),
                _ => "the item changed".to_owned(),
            };
            client.log.warn(
                "fence not raised to the server's clock (this host's clock is behind); it may be lower than one \
                 handed out before the item was deleted",
                &[("fence", fence.into()), ("error", why.into())],
            );
            fence
        }
    }
}

/// The item named in a failed condition, from the error's `Item` or a consistent read.
fn condition_item(client: &Client<'_>, table: &str, key: &str, returned: Option<Value>) -> Result<Option<Item>, Error> {
    if let Some(item) = returned.as_ref().and_then(parse_item) {
        return Ok(Some(item));
    }
    get(client, table, key)
}

/// Renews the lease to `expire_ns`, only while we own the item. An item we still own whose lease already ends at
/// or after `expire_ns` (a later renewal landed first, or this clock stepped back) is renewed as far as asked.
pub fn renew(
    client: &Client<'_>,
    table: &str,
    key: &str,
    token: &str,
    expire_ns: i128,
    retain: Duration,
) -> Result<Owned, Error> {
    match owned_write(client, table, key, &renew_request(table, key, token, expire_ns, retain))? {
        Owned::NotOwner(Some(item)) if renewed_already(&item, token, expire_ns) => Ok(Owned::Done),
        owned => Ok(owned),
    }
}

/// Whether a renewal to `expire_ns` refused by its condition finds the item ours with a lease at least that long.
fn renewed_already(item: &Item, token: &str, expire_ns: i128) -> bool {
    item.owner.as_deref() == Some(token) && item.expire_ns >= expire_ns
}

/// Releases the lock (or keeps it until `--keep` ends), only while we own the item.
pub fn release(client: &Client<'_>, table: &str, key: &str, token: &str, release: &Release) -> Result<Owned, Error> {
    owned_write(client, table, key, &release_request(table, key, token, release))
}

fn owned_write(client: &Client<'_>, table: &str, key: &str, request: &Value) -> Result<Owned, Error> {
    match client.call_conditional("UpdateItem", request)? {
        Conditional::Done(_) => Ok(Owned::Done),
        Conditional::Failed(old) => Ok(Owned::NotOwner(condition_item(client, table, key, old)?)),
    }
}

/// Forced unlock at `now`: returns the item as it was, `None` when there was none.
pub fn force_unlock(
    client: &Client<'_>,
    table: &str,
    key: &str,
    now: SystemTime,
    retain: Duration,
) -> Result<Option<Item>, Error> {
    match client.call_conditional("UpdateItem", &force_unlock_request(table, key, now, retain))? {
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

    const RETAIN: Duration = Duration::from_secs(720 * 3600);

    fn owner() -> Owner {
        Owner { token: "t0k".into(), id: None, host: "h".into(), pid: 42, command: "echo hi".into() }
    }

    fn at_ms(ms: u64) -> SystemTime {
        std::time::UNIX_EPOCH + Duration::from_millis(ms)
    }

    /// Every placeholder used is declared, and no declared one is unused (DynamoDB rejects both); every `:value`
    /// used is given and every one given is used.
    #[track_caller]
    fn check_placeholders(r: &Value) {
        let text = format!("{} {}", r["ConditionExpression"].as_str().unwrap_or(""), r["UpdateExpression"]);
        let tokens: Vec<&str> =
            text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '#' || c == ':')).collect();
        let used = |prefix: char| {
            let mut v: Vec<String> = tokens.iter().filter(|t| t.starts_with(prefix)).map(|t| (*t).to_owned()).collect();
            v.sort();
            v.dedup();
            v
        };
        let declared = |field: &str| {
            let mut v: Vec<String> = r[field].as_object().map(|m| m.keys().cloned().collect()).unwrap_or_default();
            v.sort();
            v
        };
        assert_eq!(used('#'), declared("ExpressionAttributeNames"), "{r}");
        assert_eq!(used(':'), declared("ExpressionAttributeValues"), "{r}");
        for (placeholder, name) in r["ExpressionAttributeNames"].as_object().into_iter().flatten() {
            assert_eq!(Some(&placeholder[1..]), name.as_str());
        }
    }

    fn terms(now_ms: u64) -> Terms {
        Terms {
            now: at_ms(now_ms),
            lease: Duration::from_secs(60),
            retain: RETAIN,
            max_clock_skew: Duration::from_secs(2),
            reclaim: true,
        }
    }

    #[test]
    fn acquire_request_is_conditional_and_counts_the_fence() {
        let r = acquire_request("tbl", "k", &owner(), &terms(1_700_000_000_123), 1_700_000_000_123);
        assert_eq!(r["TableName"], "tbl");
        assert_eq!(r["Key"], json!({"key": {"S": "k"}}));
        assert_eq!(
            r["ConditionExpression"],
            "attribute_not_exists(#key) OR #expire < :ended OR (#owner = :me AND #expire <= :expire)"
        );
        let update = r["UpdateExpression"].as_str().unwrap_or_default();
        assert!(update.contains("#fence = if_not_exists(#fence, :seed) + :one"), "{update}");
        assert!(update.ends_with(" REMOVE #owner_id"), "a stale owner id is removed: {update}");
        let values = &r["ExpressionAttributeValues"];
        // a lease ended only when its end plus --max-clock-skew (2 s) has passed
        assert_eq!(values[":ended"]["N"], "1699999998123000000");
        assert_eq!(values[":expire"]["N"], "1700000060123000000");
        assert_eq!(values[":seed"]["N"], "1700000000123");
        assert_eq!(values[":me"]["S"], "t0k");
        assert_eq!(values[":pid"]["N"], "42");
        assert_eq!(values[":acquired"]["S"], "2023-11-14T22:13:20.123Z");
        // ttl: the lease end in Unix seconds plus 30 days
        assert_eq!(values[":ttl"]["N"], (1_700_000_060 + 720 * 3600).to_string());
        assert_eq!(r["ExpressionAttributeNames"]["#owner"], "owner");
        assert_eq!(r["ExpressionAttributeNames"]["#ttl"], "ttl");
        assert_eq!(r["ReturnValuesOnConditionCheckFailure"], "ALL_OLD");
        check_placeholders(&r);
    }

    #[test]
    fn an_owner_id_takes_its_own_item_before_it_expires() {
        let who = Owner { id: Some("job-uid-1".into()), ..owner() };
        let r = acquire_request("tbl", "k", &who, &terms(1_000), 1_000);
        assert_eq!(
            r["ConditionExpression"],
            "attribute_not_exists(#key) OR #expire < :ended OR (#owner = :me AND #expire <= :expire) \
             OR (#owner_id = :id AND #owner <> :me)"
        );
        let update = r["UpdateExpression"].as_str().unwrap_or_default();
        assert!(update.contains("#owner_id = :id") && !update.contains("REMOVE"), "{update}");
        assert_eq!(r["ExpressionAttributeValues"][":id"]["S"], "job-uid-1");
        // the per-process token still owns the item: renewals and the release check it, not the id
        assert_eq!(r["ExpressionAttributeValues"][":me"]["S"], "t0k");
        check_placeholders(&r);
        // Without reclaiming (a --limit run's first pass), the id is written but takes nothing.
        let r = acquire_request("tbl", "k", &who, &Terms { reclaim: false, ..terms(1_000) }, 1_000);
        assert_eq!(
            r["ConditionExpression"],
            "attribute_not_exists(#key) OR #expire < :ended OR (#owner = :me AND #expire <= :expire)"
        );
        assert!(r["UpdateExpression"].as_str().unwrap_or_default().contains("#owner_id = :id"));
        check_placeholders(&r);
    }

    #[test]
    fn the_clock_skew_allowance_and_the_seed_follow_their_inputs() {
        let r = acquire_request("tbl", "k", &owner(), &Terms { max_clock_skew: Duration::ZERO, ..terms(5_000) }, 77);
        assert_eq!(r["ExpressionAttributeValues"][":ended"]["N"], "5000000000");
        assert_eq!(r["ExpressionAttributeValues"][":seed"]["N"], "77");
        let r = acquire_request(
            "tbl",
            "k",
            &owner(),
            &Terms { max_clock_skew: Duration::from_millis(1500), ..terms(5_000) },
            77,
        );
        assert_eq!(r["ExpressionAttributeValues"][":ended"]["N"], "3500000000");
        // A skew longer than the time since 1970 still leaves a released item (lease end 0) ended.
        let r = acquire_request("tbl", "k", &owner(), &Terms { max_clock_skew: SKEW_PAST_1970, ..terms(5_000) }, 77);
        assert_eq!(r["ExpressionAttributeValues"][":ended"]["N"], "1");
    }

    const SKEW_PAST_1970: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

    #[test]
    fn the_fence_seed_is_the_later_of_the_local_and_the_server_clock() {
        // (local ms, server's earliest ns) -> seed ms
        let check = |local_ms: u64, server_ns: Option<i128>, expected: i128| {
            assert_eq!(fence_seed(at_ms(local_ms), server_ns), expected, "{local_ms} {server_ns:?}");
        };
        check(1_700_000_000_123, None, 1_700_000_000_123);
        // local clock an hour behind: the server's time
        check(1_700_000_000_123, Some(1_700_003_600_456_000_000), 1_700_003_600_456);
        // local clock ahead: its own time (never lower than the local clock)
        check(1_700_000_000_123, Some(1_699_999_999_000_000_000), 1_700_000_000_123);
    }

    #[test]
    fn the_fence_is_raised_only_while_we_own_it_and_nobody_moved_it() {
        let r = raise_fence_request("tbl", "k", "me", 1_000, 3_601_001);
        assert_eq!(r["ConditionExpression"], "#owner = :me AND #fence = :old");
        assert_eq!(r["UpdateExpression"], "SET #fence = :new");
        assert_eq!(r["ExpressionAttributeValues"][":old"]["N"], "1000");
        assert_eq!(r["ExpressionAttributeValues"][":new"]["N"], "3601001");
        check_placeholders(&r);
    }

    #[test]
    fn renewals_move_the_ttl_with_the_lease() {
        let renew = renew_request("tbl", "k", "me", 5_000_000_000, Duration::from_secs(3600));
        assert_eq!(renew["ConditionExpression"], "#owner = :me AND #expire <= :expire");
        assert_eq!(renew["UpdateExpression"], "SET #expire = :expire, #ttl = :ttl");
        assert_eq!(renew["ExpressionAttributeValues"][":expire"]["N"], "5000000000");
        assert_eq!(renew["ExpressionAttributeValues"][":ttl"]["N"], "3605");
        check_placeholders(&renew);
    }

    #[test]
    fn a_refused_renewal_counts_as_done_only_for_our_item_with_a_lease_as_long() {
        let ours = |expire_ns| Item { owner: Some("me".into()), expire_ns, ..Item::default() };
        assert!(renewed_already(&ours(5), "me", 5));
        assert!(renewed_already(&ours(6), "me", 5));
        assert!(!renewed_already(&ours(4), "me", 5));
        assert!(!renewed_already(&Item { owner: Some("other".into()), expire_ns: 9, ..Item::default() }, "me", 5));
        assert!(!renewed_already(&Item { expire_ns: 9, ..Item::default() }, "me", 5));
    }

    #[test]
    fn a_plain_release_frees_the_item_and_counts_the_ttl_from_now() {
        let release = release_request("tbl", "k", "me", &Release::plain(at_ms(10_500), Duration::from_secs(3600)));
        assert_eq!(release["ConditionExpression"], "#owner = :me");
        assert_eq!(release["UpdateExpression"], "SET #expire = :zero, #ttl = :ttl REMOVE #owner, #owner_id");
        assert_eq!(release["ExpressionAttributeValues"][":me"]["S"], "me");
        assert_eq!(release["ExpressionAttributeValues"][":ttl"]["N"], "3610");
        check_placeholders(&release);
    }

    #[test]
    fn a_keep_release_holds_the_item_until_the_keep_instant() {
        let last_run = LastRun {
            exit_code: 3,
            host: "h1".into(),
            started_ns: 9_000_000_000,
            finished_ns: 10_250_000_000,
            fence: Some(41),
        };
        let keep = Release {
            now: at_ms(10_500),
            retain: Duration::from_secs(3600),
            keep_until_ns: Some(70_000_000_000),
            last_run: Some(last_run.clone()),
        };
        let r = release_request("tbl", "k", "me", &keep);
        let update = r["UpdateExpression"].as_str().unwrap_or_default();
        assert!(update.starts_with("SET #expire = :until, #ttl = :ttl, #last_exit_code"), "{update}");
        assert!(!update.contains("REMOVE"), "the owner stays until the keep instant: {update}");
        let values = &r["ExpressionAttributeValues"];
        assert_eq!(values[":until"]["N"], "70000000000");
        assert_eq!(values[":ttl"]["N"], "3670");
        assert_eq!(values[":last_exit_code"]["N"], "3");
        assert_eq!(values[":last_host"]["S"], "h1");
        assert_eq!(values[":last_started"]["S"], "1970-01-01T00:00:09Z");
        assert_eq!(values[":last_finished"]["S"], "1970-01-01T00:00:10.25Z");
        assert_eq!(values[":last_duration_ms"]["N"], "1250");
        check_placeholders(&r);

        // a keep instant already passed is a plain release (with the record)
        let late = Release { keep_until_ns: Some(10_000_000_000), ..keep };
        let r = release_request("tbl", "k", "me", &late);
        let update = r["UpdateExpression"].as_str().unwrap_or_default();
        assert!(update.starts_with("SET #expire = :zero, #ttl = :ttl, #last_exit_code"), "{update}");
        assert!(update.ends_with("REMOVE #owner, #owner_id"), "{update}");
        check_placeholders(&r);

        // the record reads back
        let item = json!({"key": {"S": "k"}, "expire": {"N": "0"}, "ttl": {"N": "3670"},
            "last_exit_code": values[":last_exit_code"], "last_host": values[":last_host"],
            "last_started": values[":last_started"], "last_finished": values[":last_finished"],
            "last_duration_ms": values[":last_duration_ms"], "last_fence": values[":last_fence"]});
        let item = parse_item(&item).expect("an item");
        assert_eq!(item.last_run, Some(last_run));
        assert_eq!(item.ttl, Some(3670));
        assert_eq!(values[":last_fence"]["N"], "41");
    }

    /// Numbers another writer put in an item that do not fit are read as absent, never wrapped: a `ttl` of 1e30
    /// was shown as a made-up date (1e30 truncated to 64 bits), an exit code of 2^32 as 0.
    #[test]
    fn numbers_out_of_range_are_absent_not_wrapped() {
        let item = json!({"key": {"S": "k"}, "expire": {"N": "0"}, "ttl": {"N": "1000000000000000000000000000000"},
            "last_exit_code": {"N": "4294967296"}, "last_started": {"S": "2026-01-01T00:00:00Z"},
            "last_finished": {"S": "2026-01-01T00:00:01Z"}});
        let item = parse_item(&item).expect("an item");
        assert_eq!(item.ttl, None);
        assert_eq!(item.last_run, None);
        let item = parse_item(&json!({"key": {"S": "k"}, "ttl": {"N": "1E+30"}})).expect("an item");
        assert_eq!(item.ttl, None);
    }

    #[test]
    fn admin_requests() {
        let force = force_unlock_request("tbl", "k", at_ms(2_000), Duration::from_secs(3600));
        assert_eq!(force["ConditionExpression"], "attribute_exists(#key)");
        assert_eq!(force["UpdateExpression"], "SET #expire = :zero, #ttl = :ttl REMOVE #owner, #owner_id");
        assert_eq!(force["ExpressionAttributeValues"][":ttl"]["N"], "3602");
        assert!(force["ExpressionAttributeValues"].get(":me").is_none());
        check_placeholders(&force);
        assert_eq!(get_request("tbl", "k")["ConsistentRead"], true);
    }

    #[test]
    fn ttl_is_unix_seconds_plus_the_retention() {
        let check = |ns: i128, retain_s: u64, expected: i128| {
            assert_eq!(ttl_seconds(ns, Duration::from_secs(retain_s)), expected, "{ns} + {retain_s}s");
        };
        check(0, 3600, 3600);
        check(1_999_999_999, 0, 1);
        check(1_700_000_000_123_456_789, 2_592_000, 1_702_592_000);
    }

    #[test]
    fn items_parse_including_go_items() {
        let go = json!({"key": {"S": "k"}, "expire": {"N": "1700000000000000000"}});
        let item = parse_item(&go).expect("a Go item has key and expire");
        assert_eq!(item.expire_ns, 1_700_000_000_000_000_000);
        assert_eq!((item.owner, item.fence, item.ttl, item.last_run), (None, None, None, None));
        let ours = json!({"key": {"S": "k"}, "expire": {"N": "5"}, "owner": {"S": "o"}, "host": {"S": "h"},
            "pid": {"N": "9"}, "fence": {"N": "12"}, "acquired": {"S": "x"}, "command": {"S": "c"},
            "owner_id": {"S": "id"}});
        let item = parse_item(&ours).expect("our item");
        assert_eq!((item.pid, item.fence, item.owner.as_deref()), (Some(9), Some(12), Some("o")));
        assert_eq!(item.owner_id.as_deref(), Some("id"));
        assert_eq!(parse_item(&json!({"expire": {"N": "1"}})), None);
        assert_eq!(parse_number("1.7E+18"), Some(1_700_000_000_000_000_000));
    }

    #[test]
    fn held_means_expire_not_passed() {
        // No `expire`, or one that is not a number: another tool's lock (lock-exec v1, dynamolock) or junk,
        // held with no end lock-exec can read.
        for expire in [json!(null), json!({ "S": "soon" }), json!({ "N": "x" })] {
            let mut attributes = json!({ "key": { "S": "k" }, "owner": { "S": "v1-host" } });
            if !expire.is_null() {
                attributes["expire"] = expire.clone();
            }
            let item = parse_item(&attributes).expect("an item with a key");
            assert_eq!(item.expire_ns, NO_LEASE_END, "{expire}");
            assert!(is_held(&item, 1_800_000_000_000_000_000), "{expire}");
            assert_eq!(shown_expire(&item), None, "{expire}");
        }
        // A lease end is written no later than the last 64-bit nanosecond.
        assert_eq!(end_after(1_000, Duration::from_nanos(5)), 1_005);
        assert_eq!(end_after(LAST_END_NS - 5, Duration::from_secs(10)), LAST_END_NS);
        let item = Item { expire_ns: 100, ..Item::default() };
        assert!(is_held(&item, 99) && is_held(&item, 100) && !is_held(&item, 101));
        assert_eq!(rfc3339_ns(0), "1970-01-01T00:00:00Z");
    }
}
