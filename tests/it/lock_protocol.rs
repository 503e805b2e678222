//! The lock protocol through the library against the emulator: retried acquires, holders, fences, and
//! releases that never touch another owner's lock.

use std::time::Duration;

use lock_exec::Env;
use lock_exec::cli::{DEFAULT_MAX_CLOCK_SKEW, DEFAULT_RETAIN};
use lock_exec::lock::{self, Acquire, Item, Owned};

use crate::support::{Table, client, now_ns, owner};

fn get(table: &Table, key: &str) -> Option<Item> {
    lock::get(&client(), &table.name, key).expect("GetItem")
}

fn acquire(table: &Table, key: &str, who: &lock::Owner, lease: Duration) -> Acquire {
    let terms = lock::Terms {
        now: Env::real().now(),
        lease,
        retain: DEFAULT_RETAIN,
        max_clock_skew: DEFAULT_MAX_CLOCK_SKEW,
        reclaim: true,
    };
    lock::acquire(&client(), &table.name, key, who, &terms).expect("the acquire UpdateItem")
}

#[test]
fn retried_acquire_by_the_same_owner_succeeds_and_others_see_the_holder() {
    let table = Table::create("retried_acquire");
    let a = owner("host-a", 1111);
    let first = acquire(&table, "k", &a, Duration::from_secs(60));
    // A retry after a lost response sends the same owner token again: `#owner = :me` lets it through.
    let retry = acquire(&table, "k", &a, Duration::from_secs(60));
    match (&first, &retry) {
        (Acquire::Acquired(_), Acquire::Acquired(_)) => {}
        _ => panic!("expected two Acquired for the same owner\n  first: {first:?}\n  retry: {retry:?}"),
    }

    let b = owner("host-b", 2222);
    match acquire(&table, "k", &b, Duration::from_secs(60)) {
        Acquire::Held(Some(item)) => assert_eq!(
            (Some(a.token.as_str()), Some("host-a"), Some(1111)),
            (item.owner.as_deref(), item.host.as_deref(), item.pid),
            "(owner, host, pid) of the holder B was shown: {item:?}"
        ),
        other => panic!("expected Held(Some(A's item)) for B, got {other:?}"),
    }
    let item = get(&table, "k").expect("the item");
    assert_eq!(item.owner.as_deref(), Some(a.token.as_str()), "B's failed acquire changed the owner: {item:?}");
}

#[test]
fn fences_grow_with_every_acquisition() {
    let table = Table::create("fences_grow");
    let a = owner("host-a", 1);
    let Acquire::Acquired(first) = acquire(&table, "k", &a, Duration::from_secs(60)) else { panic!("first acquire") };
    assert_eq!(
        lock::release(&client(), &table.name, "k", &a.token, &lock::Release::plain(Env::real().now(), DEFAULT_RETAIN))
            .expect("release"),
        Owned::Done
    );
    let b = owner("host-b", 2);
    let Acquire::Acquired(second) = acquire(&table, "k", &b, Duration::from_secs(60)) else { panic!("second") };
    assert!(second.fence > first.fence, "fences: first {} then {}", first.fence, second.fence);
    let item = get(&table, "k").expect("the item");
    assert_eq!(item.fence, Some(second.fence), "stored fence: {item:?}");
}

#[test]
fn release_never_removes_another_owners_lock() {
    let table = Table::create("release_never_removes");
    let a = owner("host-a", 1);
    let Acquire::Acquired(_) = acquire(&table, "k", &a, Duration::from_secs(1)) else { panic!("A's acquire") };
    // A lease counts as ended once its end plus --max-clock-skew has passed.
    let a_expire = get(&table, "k").expect("A's item").expire_ns + DEFAULT_MAX_CLOCK_SKEW.as_nanos() as i128;
    while now_ns() <= a_expire {
        std::thread::sleep(Duration::from_millis(50));
    }
    let b = owner("host-b", 2);
    let Acquire::Acquired(_) = acquire(&table, "k", &b, Duration::from_secs(60)) else {
        panic!("B could not take the expired lock")
    };

    match lock::release(&client(), &table.name, "k", &a.token, &lock::Release::plain(Env::real().now(), DEFAULT_RETAIN))
        .expect("A's release")
    {
        Owned::NotOwner(Some(item)) => {
            assert_eq!(item.owner.as_deref(), Some(b.token.as_str()), "the item A's release saw: {item:?}")
        }
        other => panic!("expected NotOwner(Some(B's item)) for A's release, got {other:?}"),
    }
    match lock::renew(&client(), &table.name, "k", &a.token, now_ns() + 60_000_000_000, DEFAULT_RETAIN)
        .expect("A's renewal")
    {
        Owned::NotOwner(Some(_)) => {}
        other => panic!("expected NotOwner for A's renewal, got {other:?}"),
    }
    let item = get(&table, "k").expect("B's item");
    let expected = (Some(b.token.clone()), Some("host-b".to_owned()), true);
    let actual = (item.owner.clone(), item.host.clone(), item.expire_ns > now_ns() + 30_000_000_000);
    assert_eq!(expected, actual, "(owner, host, expire well in the future) after A's release: {item:?}");
}

#[test]
fn force_unlock_and_delete_report_the_previous_item() {
    let table = Table::create("force_unlock_and_delete");
    assert_eq!(
        lock::force_unlock(&client(), &table.name, "k", Env::real().now(), DEFAULT_RETAIN).expect("unlock of nothing"),
        None
    );
    assert_eq!(get(&table, "k"), None, "force_unlock of a missing key must not create an item");
    let a = owner("host-a", 1);
    let Acquire::Acquired(lease) = acquire(&table, "k", &a, Duration::from_secs(60)) else { panic!("acquire") };
    let previous = lock::force_unlock(&client(), &table.name, "k", Env::real().now(), DEFAULT_RETAIN)
        .expect("force unlock")
        .expect("the old item");
    assert_eq!(previous.owner.as_deref(), Some(a.token.as_str()), "previous item: {previous:?}");
    let item = get(&table, "k").expect("the item stays");
    assert_eq!((item.owner, item.expire_ns, item.fence), (None, 0, Some(lease.fence)), "after force unlock");
    assert!(lock::delete(&client(), &table.name, "k").expect("delete").is_some(), "delete returns the old item");
    assert_eq!(get(&table, "k"), None, "after delete");
}

/// A holder whose clock stepped back asks its renewal for a lease end before the one the item has: the renewal's
/// condition (`#expire <= :expire`) refuses it, but the item is ours with a lease at least as long, so it counts as
/// renewed and the item's end stays where it was (never moved back). Once the item has been taken, the same
/// renewal is refused.
#[test]
fn a_renewal_after_a_clock_step_back_keeps_the_later_lease_end() {
    let table = Table::create("renew_step_back");
    let a = owner("host-a", 1);
    let Acquire::Acquired(lease) = acquire(&table, "k", &a, Duration::from_secs(60)) else { panic!("A's acquire") };
    let earlier = lease.expire_ns - 30_000_000_000;
    let renewed = lock::renew(&client(), &table.name, "k", &a.token, earlier, DEFAULT_RETAIN).expect("renewal");
    assert_eq!(renewed, Owned::Done, "a renewal to an earlier end of our own item");
    let item = get(&table, "k").expect("the item");
    assert_eq!(item.expire_ns, lease.expire_ns, "the lease end moved back: {item:?}");
    // Another owner's item with a later end is no renewal of ours.
    lock::force_unlock(&client(), &table.name, "k", Env::real().now(), DEFAULT_RETAIN).expect("unlock");
    let b = owner("host-b", 2);
    let Acquire::Acquired(_) = acquire(&table, "k", &b, Duration::from_secs(120)) else { panic!("B's acquire") };
    match lock::renew(&client(), &table.name, "k", &a.token, earlier, DEFAULT_RETAIN).expect("A's renewal") {
        Owned::NotOwner(Some(item)) => assert_eq!(item.owner.as_deref(), Some(b.token.as_str()), "{item:?}"),
        other => panic!("expected NotOwner(B's item), got {other:?}"),
    }
}
