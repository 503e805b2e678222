//! Random numbers without a dependency: SipHash keyed by the standard library's per-process random keys.
//!
//! `RandomState::new()` draws its keys from the operating system's random source once per thread and then
//! varies them per call, so each hasher below is keyed differently; hashing a counter and the pid through
//! it gives values that are unpredictable to other processes. Good for owner tokens and jitter, not for keys.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A random 64-bit number.
pub fn u64() -> u64 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.write_u32(std::process::id());
    hasher.finish()
}

/// A random 128-bit token as 32 hex digits.
pub fn token128() -> String {
    format!("{:016x}{:016x}", u64(), u64())
}

/// A random fraction in [0, 1).
pub fn fraction() -> f64 {
    (u64() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    #[test]
    fn tokens_differ_and_are_hex() {
        let a = super::token128();
        let b = super::token128();
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        let f = super::fraction();
        assert!((0.0..1.0).contains(&f));
    }
}
