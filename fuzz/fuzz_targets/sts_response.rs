//! An STS answer (Query protocol, XML): the first byte picks the action and the status class, the rest is the
//! body. Never panics; no error message holds the secret appended to the body.
#![no_main]

use libfuzzer_sys::fuzz_target;

const SECRET: &str = "fuzz-sts-secret-SECRET";

fuzz_target!(|data: &[u8]| {
    let Some((first, rest)) = data.split_first() else { return };
    let status = [200, 400, 403, 500][usize::from(first % 4)];
    let body = format!("{}{SECRET}", String::from_utf8_lossy(rest));
    lock_exec::fuzzing::sts_response(first & 4 != 0, status, &body, &[SECRET]);
});
