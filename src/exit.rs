//! Exit codes: one enum, mirrored by the table in the README.
//!
//! | code | meaning |
//! |------|---------|
//! | child's | the command ran; its exit code, or 128+N when it died of signal N (lock-exec then dies of N too) |
//! | `--locked-exit-code` (0) | the key is held by someone else; the command did not run |
//! | 1 | `doctor`: a check failed |
//! | 3 | `status`: the key is held |
//! | 64 | usage error |
//! | 69 | DynamoDB unreachable, or throttled / failing after retries |
//! | 70 | an unexpected answer from DynamoDB (a bug on one side) |
//! | 71 | a thread lock-exec needs, or the command's process, could not be created (a process limit); nothing was run |
//! | 74 | standard output could not be written (a full disk); a reader that went away is not an error |
//! | 75 | the lock was lost while the command ran; the command was stopped |
//! | 77 | access denied, or credentials rejected |
//! | 78 | configuration: no credentials, no region, a bad profile file, the table missing |
//! | 126 | the command is not executable |
//! | 127 | the command was not found |

/// lock-exec's own exit codes (the child's code passes through as [`Exit::Child`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Everything went fine (the command succeeded, or `status` found the key free).
    Success,
    /// `doctor`: a check failed.
    ChecksFailed,
    /// `status`: the key is held.
    Held,
    /// The command's own exit code.
    Child(u8),
    /// The command died of this signal (or lock-exec was stopped by it before the command started):
    /// lock-exec dies of it too where it can, else exits 128+N.
    Signaled(i32),
    /// The key is held by someone else: the `--locked-exit-code`.
    Locked(u8),
    /// 64: the command line is wrong.
    Usage,
    /// 69: DynamoDB unreachable, throttled or failing after retries.
    Unavailable,
    /// 70: an answer lock-exec did not expect.
    Software,
    /// 71: an operating-system resource (a thread, a process) could not be had.
    OsError,
    /// 74: standard output could not be written.
    OutputError,
    /// 75: the lock was lost during the run.
    LockLost,
    /// 77: access denied or credentials rejected.
    Denied,
    /// 78: configuration error.
    Config,
    /// 126: the command is not executable.
    NotExecutable,
    /// 127: the command was not found.
    NotFound,
}

impl Exit {
    /// The numeric process exit code.
    pub fn code(self) -> u8 {
        match self {
            Exit::Success => 0,
            Exit::ChecksFailed => 1,
            Exit::Held => 3,
            Exit::Child(code) | Exit::Locked(code) => code,
            Exit::Usage => 64,
            Exit::Unavailable => 69,
            Exit::Software => 70,
            Exit::OsError => 71,
            Exit::Signaled(signal) => (128 + signal).clamp(0, 255) as u8,
            Exit::OutputError => 74,
            Exit::LockLost => 75,
            Exit::Denied => 77,
            Exit::Config => 78,
            Exit::NotExecutable => 126,
            Exit::NotFound => 127,
        }
    }
}
