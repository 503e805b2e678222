//! The subcommands, one module each; `main` parses the command line and calls one of them.

use std::io::Write;

use crate::error::Error;
use crate::exit::Exit;

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

/// How a subcommand ends when the reader of its output has gone (`lock-exec list | head -1`): by SIGPIPE, quietly,
/// as Unix tools do.
pub const READER_GONE: Exit = Exit::Signaled(libc::SIGPIPE);

/// Writes a subcommand's output to stdout at once; `Ok(false)` when the reader has gone (the caller stops and ends
/// with [`READER_GONE`]). `print!` would panic there: Rust ignores SIGPIPE, so the write fails with EPIPE.
pub fn print(text: &str) -> Result<bool, Error> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(Error::Internal(format!("cannot write to standard output: {e}"))),
    }
}

/// Kills every `credential_process` helper still running and lets no new one start; `main` calls it once,
/// just before lock-exec exits, on every path.
pub fn kill_credential_helpers() {
    crate::aws::credentials::process::kill_running_helpers();
}
