//! The command line (flags, durations, keys, the COMMAND string split like Go's strings.Fields): argv is the input
//! split at NUL bytes, the environment empty. Never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lock_exec::Env;

fuzz_target!(|text: &str| {
    let args = std::iter::once("lock-exec").chain(text.split('\0')).map(std::ffi::OsString::from);
    let _ = lock_exec::cli::parse_from(args, &Env::from_pairs::<&str, &str>(&[]));
});
