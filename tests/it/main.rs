//! The integration tests: the built binary and the library against a local DynamoDB emulator
//! (`scripts/test.sh` starts one and sets `LOCK_EXEC_TEST_ENDPOINT`).

mod admin;
mod auth;
mod chaos;
mod clock;
mod credential_limits;
mod credential_process;
mod credentials;
mod cron;
mod docs;
mod errors;
mod faults;
mod hostile;
mod lease;
mod lock_protocol;
mod migration;
mod ops;
mod proxy;
mod run;
mod secrets;
mod static_binary;
mod supervision;
mod support;
mod terminal;
mod tls;
