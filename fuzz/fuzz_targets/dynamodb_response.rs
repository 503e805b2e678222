//! A DynamoDB answer (status from the first two bytes, then an optional `x-amzn-errortype` header up to the first
//! NUL, then the body): interpreted as lock-exec does, the item read from it. Never panics; no error message holds
//! the secret appended to the body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lock_exec::aws::http::Response;
use lock_exec::dynamodb::{Conditional, interpret};

const SECRET: &str = "fuzz-secret-key-SECRET";

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let status = 100 + u16::from_le_bytes([data[0], data[1]]) % 500;
    let rest = String::from_utf8_lossy(&data[2..]);
    let (header, body) = rest.split_once('\0').unwrap_or(("", &rest));
    let headers = if header.is_empty() { Vec::new() } else { vec![("x-amzn-errortype".to_owned(), header.to_owned())] };
    let response = Response { status, headers, body: format!("{body}{SECRET}") };
    match interpret(&response, &[SECRET]) {
        Ok(Conditional::Done(value)) => {
            if let Some(attributes) = value.get("Attributes") {
                let _ = lock_exec::lock::parse_item(attributes);
            }
        }
        Ok(Conditional::Failed(Some(item))) => {
            let _ = lock_exec::lock::parse_item(&item);
        }
        Ok(Conditional::Failed(None)) => {}
        Err(e) => {
            let message = lock_exec::error_chain(&e);
            assert!(!message.contains(SECRET), "{message}");
        }
    }
});
