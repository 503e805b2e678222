//! The child process: spawned in its own process group, killed with us if we die (Linux), signalled as a
//! group, waited for without being reaped so its process group id cannot be reused while we may signal it.
//!
//! Knows nothing of locks or AWS.

use std::ffi::OsString;
use std::io;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, ExitStatus};

/// A running child.
#[derive(Debug)]
pub struct Child {
    inner: std::process::Child,
    /// Our own process group, when the child was given the controlling terminal and it must come back to us.
    terminal_owner: Option<u32>,
}

/// Starts `argv[0]` with `argv[1..]`, stdio inherited, in a new process group, with `vars` added to the
/// environment. On Linux the child gets SIGKILL when the spawning thread dies (call this from the main
/// thread, which lives until the child is reaped).
pub fn spawn(argv: &[OsString], vars: &[(&str, String)]) -> io::Result<Child> {
    let (program, args) =
        argv.split_first().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty command"))?;
    let mut command = Command::new(program);
    command.args(args).process_group(0);
    for (name, value) in vars {
        command.env(name, value);
    }
    sys::kill_with_parent(&mut command);
    // Run from an interactive terminal, the child's new process group must become the terminal's foreground
    // group, or reading stdin stops it with SIGTTIN (a shell does the same for each job).
    let terminal_owner = sys::foreground_terminal_group();
    if terminal_owner.is_some() {
        sys::take_terminal_in_child(&mut command);
    }
    let inner = command.spawn()?;
    if terminal_owner.is_some() {
        sys::give_terminal(inner.id());
        // In case the child read the terminal before it was its own: wake it.
        sys::kill_group(inner.id(), libc::SIGCONT);
    }
    Ok(Child { inner, terminal_owner })
}

impl Child {
    /// The child's pid, which is also its process group id.
    pub fn id(&self) -> u32 {
        self.inner.id()
    }

    /// Sends `signal` to the child's whole process group. Errors (the group is gone) are ignored.
    pub fn signal_group(&self, signal: i32) {
        sys::kill_group(self.id(), signal);
    }

    /// Blocks until the child has exited, leaving it unreaped (a zombie) so its pid and process group id
    /// stay reserved; then [`Child::reap`] collects the status.
    pub fn wait_exited(&self) -> io::Result<()> {
        let waited = sys::wait_exited_no_reap(self.id());
        if let Some(group) = self.terminal_owner {
            sys::give_terminal(group);
        }
        waited
    }

    /// Collects the exit status.
    pub fn reap(mut self) -> io::Result<ExitStatus> {
        self.inner.wait()
    }
}

/// Sends `signal` to process group `pgid`. Errors (the group is gone) are ignored.
pub fn signal_group(pgid: u32, signal: i32) {
    sys::kill_group(pgid, signal);
}

/// Our process group when stdin is a terminal whose foreground process group is ours (an interactive run).
pub fn foreground_terminal_group() -> Option<u32> {
    sys::foreground_terminal_group()
}

/// Makes process group `pgid` the foreground group of the terminal on stdin (SIGTTOU blocked around the call,
/// so a caller in a background group is not stopped). Errors are ignored.
pub fn give_terminal(pgid: u32) {
    sys::give_terminal(pgid);
}

/// Makes a command being built take the terminal on stdin for its own new process group before it execs
/// (use with `process_group(0)`), so it can read the terminal (a prompt) without being stopped by SIGTTIN.
pub fn take_terminal_in_child(command: &mut Command) {
    sys::take_terminal_in_child(command);
}

/// The exit code lock-exec passes on: the child's code, or 128+N when it died of signal N.
pub fn exit_code(status: ExitStatus) -> u8 {
    match (status.code(), status.signal()) {
        (Some(code), _) => (code & 0xff) as u8,
        (None, Some(signal)) => (128 + signal).clamp(0, 255) as u8,
        (None, None) => 255,
    }
}

/// The few libc calls std lacks (prctl, getppid, kill, waitid, and the terminal's foreground group: isatty,
/// tcgetpgrp, tcsetpgrp, getpgrp, with SIGTTOU blocked around tcsetpgrp). Each `unsafe` block is a plain FFI
/// call with no pointers we do not own.
#[allow(unsafe_code)]
mod sys {
    use std::io;
    use std::os::unix::process::CommandExt;
    use std::process::Command;

    /// Linux: `PR_SET_PDEATHSIG(SIGKILL)` in the child, so it cannot outlive a SIGKILLed lock-exec.
    #[cfg(target_os = "linux")]
    pub fn kill_with_parent(command: &mut Command) {
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: the closure runs in the forked child before exec and only calls async-signal-safe
        // functions (prctl, getppid); it allocates nothing.
        unsafe {
            command.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
                    return Err(io::Error::last_os_error());
                }
                // The parent may have died between fork and prctl: then nobody will signal us.
                if libc::getppid() != parent {
                    return Err(io::Error::other("lock-exec exited before the command started"));
                }
                Ok(())
            });
        }
    }

    /// Other systems have no parent-death signal.
    #[cfg(not(target_os = "linux"))]
    pub fn kill_with_parent(_command: &mut Command) {}

    /// Our process group when stdin is a terminal whose foreground process group is ours.
    pub fn foreground_terminal_group() -> Option<u32> {
        // SAFETY: isatty, tcgetpgrp and getpgrp take plain integers and only read process state.
        let (is_tty, foreground, own) = unsafe { (libc::isatty(0), libc::tcgetpgrp(0), libc::getpgrp()) };
        (is_tty == 1 && foreground == own).then(|| u32::try_from(own).ok()).flatten()
    }

    /// Makes process group `pgid` the terminal's foreground group, with SIGTTOU blocked on this thread so
    /// that a caller in a background group is not stopped by the call. Errors are ignored.
    pub fn give_terminal(pgid: u32) {
        let Ok(pgid) = libc::pid_t::try_from(pgid) else { return };
        // SAFETY: the signal sets are zeroed values we own, initialised by sigemptyset/sigaddset before use;
        // pthread_sigmask and tcsetpgrp take pointers to them only for the duration of the call.
        unsafe {
            let mut block: libc::sigset_t = std::mem::zeroed();
            let mut previous: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut block);
            libc::sigaddset(&mut block, libc::SIGTTOU);
            libc::pthread_sigmask(libc::SIG_BLOCK, &block, &mut previous);
            libc::tcsetpgrp(0, pgid);
            libc::pthread_sigmask(libc::SIG_SETMASK, &previous, std::ptr::null_mut());
        }
    }

    /// In the child, before exec: make its own (new) process group the terminal's foreground group.
    pub fn take_terminal_in_child(command: &mut Command) {
        // SAFETY: runs in the forked child before exec and calls only async-signal-safe functions
        // (sigemptyset, sigaddset, sigprocmask, tcsetpgrp, getpgrp) on values it owns; it allocates nothing.
        unsafe {
            command.pre_exec(|| {
                let mut block: libc::sigset_t = std::mem::zeroed();
                let mut previous: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut block);
                libc::sigaddset(&mut block, libc::SIGTTOU);
                libc::sigprocmask(libc::SIG_BLOCK, &block, &mut previous);
                libc::tcsetpgrp(0, libc::getpgrp());
                libc::sigprocmask(libc::SIG_SETMASK, &previous, std::ptr::null_mut());
                Ok(())
            });
        }
    }

    /// `kill(-pgid, signal)`.
    pub fn kill_group(pgid: u32, signal: i32) {
        let Ok(pgid) = libc::pid_t::try_from(pgid) else { return };
        // SAFETY: kill takes plain integers; a negative pid addresses the process group.
        unsafe {
            libc::kill(-pgid, signal);
        }
    }

    /// `waitid(P_PID, pid, WEXITED | WNOWAIT)`, retried on EINTR.
    pub fn wait_exited_no_reap(pid: u32) -> io::Result<()> {
        let id = libc::id_t::from(pid);
        loop {
            // SAFETY: `info` is a zeroed siginfo_t we own; waitid writes into it and nothing keeps the pointer.
            let result = unsafe {
                let mut info: libc::siginfo_t = std::mem::zeroed();
                libc::waitid(libc::P_PID, id, &mut info, libc::WEXITED | libc::WNOWAIT)
            };
            if result == 0 {
                return Ok(());
            }
            let error = io::Error::last_os_error();
            if error.kind() != io::ErrorKind::Interrupted {
                return Err(error);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(items: &[&str]) -> Vec<OsString> {
        items.iter().map(OsString::from).collect()
    }

    #[test]
    fn exit_codes_pass_through() {
        let child = spawn(&argv(&["sh", "-c", "exit 7"]), &[]).expect("sh runs");
        child.wait_exited().expect("waitid");
        assert_eq!(exit_code(child.reap().expect("reap")), 7);
    }

    #[test]
    fn signals_become_128_plus_n() {
        let child = spawn(&argv(&["sleep", "30"]), &[]).expect("sleep runs");
        child.signal_group(libc::SIGKILL);
        child.wait_exited().expect("waitid");
        assert_eq!(exit_code(child.reap().expect("reap")), 137);
    }

    #[test]
    fn child_gets_the_variables_and_its_own_group() {
        let script = "test \"$LOCK_EXEC_KEY\" = k && test \"$(cut -d' ' -f5 /proc/$$/stat)\" = \"$$\"";
        let child = spawn(&argv(&["sh", "-c", script]), &[("LOCK_EXEC_KEY", "k".into())]).expect("sh runs");
        child.wait_exited().expect("waitid");
        assert_eq!(exit_code(child.reap().expect("reap")), 0);
    }

    #[test]
    fn missing_programs_are_not_found() {
        let error = spawn(&argv(&["/nonexistent/program"]), &[]).expect_err("no such program");
        assert_eq!(error.kind(), io::ErrorKind::NotFound);
    }
}
