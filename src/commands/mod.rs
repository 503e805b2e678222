//! The subcommands, one module each; `main` parses the command line and calls one of them.

pub mod completion;
pub mod doctor;
pub mod list;
pub mod run;
pub mod status;
pub mod table;
pub mod unlock;

pub use completion::completion;
pub use doctor::doctor;
pub use list::list;
pub use run::run;
pub use status::status;
pub use table::table_create;
pub use unlock::unlock;

/// Kills every `credential_process` helper still running and lets no new one start; `main` calls it once,
/// just before lock-exec exits, on every path.
pub fn kill_credential_helpers() {
    crate::aws::credentials::process::kill_running_helpers();
}
