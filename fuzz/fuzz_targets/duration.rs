//! The Go-syntax duration parser: never panics; what it accepts formats back to a value it accepts again.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Ok(duration) = lock_exec::duration::parse(text) {
        let formatted = lock_exec::duration::format(duration);
        assert!(lock_exec::duration::parse(&formatted).is_ok(), "{text:?} -> {duration:?} -> {formatted:?}");
    }
});
