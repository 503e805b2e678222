//! Exit codes: one enum, mirrored by the table in the README.
//!
//! | code | meaning |
//! |------|---------|
//! | child's | the command ran; its exit code, or 128+N when it died of signal N |
//! | `--locked-exit-code` (0) | the key is held by someone else; the command did not run |
//! | 3 | `status`: the key is held |
//! | 64 | usage error |
//! | 69 | DynamoDB unreachable, or throttled / failing after retries |
//! | 70 | an unexpected answer from DynamoDB (a bug on one side) |
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
    /// `status`: the key is held.
    Held,
    /// The command's own exit code, or 128+N when it died of signal N.
    Child(u8),
    /// The key is held by someone else: the `--locked-exit-code`.
    Locked(u8),
    /// 64: the command line is wrong.
    Usage,
    /// 69: DynamoDB unreachable, throttled or failing after retries.
    Unavailable,
    /// 70: an answer lock-exec did not expect.
    Software,
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
            Exit::Held => 3,
            Exit::Child(code) | Exit::Locked(code) => code,
            Exit::Usage => 64,
            Exit::Unavailable => 69,
            Exit::Software => 70,
            Exit::LockLost => 75,
            Exit::Denied => 77,
            Exit::Config => 78,
            Exit::NotExecutable => 126,
            Exit::NotFound => 127,
        }
    }
}
