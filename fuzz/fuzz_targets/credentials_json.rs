//! Credentials JSON: a `credential_process` helper's output and a container / instance metadata document. Never
//! panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    lock_exec::fuzzing::process_output(text);
    lock_exec::fuzzing::credentials_document(text, &["fuzz-secret"]);
});
