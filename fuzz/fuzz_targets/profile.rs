//! The shared config and credentials file parser: the input is a config file; the part after the first NUL byte,
//! if any, a credentials file. Never panics.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use lock_exec::aws::profile::ProfileSet;

fuzz_target!(|text: &str| {
    let (config, credentials) = text.split_once('\0').unwrap_or((text, ""));
    let parsed = ProfileSet::parse(
        Some((Path::new("config"), config)),
        Some((Path::new("credentials"), credentials)),
        "default",
    );
    if let Ok(set) = parsed {
        for name in set.profile_names().collect::<Vec<_>>() {
            if let Some(profile) = set.get(name) {
                for key in profile.keys().collect::<Vec<_>>() {
                    let _ = profile.get(key);
                }
            }
        }
    }
});
