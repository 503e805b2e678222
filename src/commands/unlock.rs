//! `unlock`: clear the lease whoever holds it, or delete the item.

use crate::cli::{self, Common};
use crate::config::Aws;
use crate::env::Env;
use crate::error::Error;
use crate::exit::Exit;
use crate::lock::{self, holder_fields};
use crate::log::Logger;

/// `unlock`: clear the lease whoever holds it, or delete the item.
pub fn unlock(common: &Common, args: &cli::Unlock, env: &Env, log: &Logger) -> Result<Exit, Error> {
    let aws = Aws::resolve(common, env)?;
    aws.log_endpoints(&common.table, log);
    let client = aws.client(env, log);
    let previous = if args.delete {
        lock::delete(&client, &common.table, &args.key)?
    } else {
        lock::force_unlock(&client, &common.table, &args.key, env.now(), common.retain)?
    };
    let now_ns = lock::unix_ns(env.now());
    // Only a live holder is named (as `status` does): a released item still carries the last holder's host.
    let held = previous.as_ref().filter(|item| lock::is_held(item, now_ns));
    let message = match (&previous, held, args.delete) {
        (None, ..) => "no lock item; nothing to unlock",
        (_, _, true) => "lock item deleted",
        (_, Some(_), false) => "lock force-released",
        (_, None, false) => "lock already free; nothing to release",
    };
    let mut fields = held.map(|item| holder_fields(Some(item))).unwrap_or_default();
    // A lock kept by --keep after its run ended has no lock-exec behind it. Otherwise the holder's lock-exec learns
    // it at its next renewal: say so, and by when at the latest (not for an item without a lease end lock-exec can
    // read, which no lock-exec holds).
    if let Some(finished_ns) = held.and_then(lock::kept_after_run) {
        let ended = lock::rfc3339_ns(finished_ns);
        fields
            .push(("holder_stops", format!("nothing to stop: the run ended at {ended}; --keep held the lock").into()));
    } else if let Some(by) = held.filter(|item| item.owner.is_some()).and_then(lock::shown_expire) {
        fields.push(("holder_stops", format!("at its next renewal, by {by} at the latest").into()));
    }
    log.info(message, &fields);
    Ok(Exit::Success)
}
