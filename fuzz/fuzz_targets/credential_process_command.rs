//! The `credential_process` command splitter (POSIX-shell quoting): never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let _ = lock_exec::aws::credentials::process::split_command(text);
});
