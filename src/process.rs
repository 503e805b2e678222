//! The command's processes: spawned in a new process group under a child subreaper, every state change of the
//! command and of the orphans re-parented to us collected by the main thread, and the whole tree (the group
//! plus every descendant, found through `/proc`) signalled on demand.
//!
//! Knows nothing of locks or AWS.
//!
//! Invariants:
//! - Only the main thread spawns the command and waits (`__WNOTHREAD`): it sees the command and every orphan
//!   re-parented to lock-exec (the kernel gives orphans to the subreaper's first live thread, the main thread),
//!   and never a `credential_process` helper that another thread started and waits for itself.
//! - The command is reaped under the same lock that signals its process group, so `kill(-pgid)` can never
//!   reach a group whose id was recycled.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::fs::FileTypeExt;
#[cfg(not(target_os = "linux"))]
use std::os::unix::process::CommandExt;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitStatus};
use std::sync::{Mutex, MutexGuard, PoisonError};

#[cfg(target_os = "linux")]
mod launch;

/// How to start the command.
#[derive(Debug, Clone, Default)]
pub struct Spawn<'a> {
    /// Variables added to the environment.
    pub vars: &'a [(&'a str, String)],
    /// Variables removed from the environment.
    pub remove: &'a [&'a str],
    /// Make the command's new process group the terminal's foreground group (an interactive run).
    pub give_terminal: bool,
    /// Signals set back to their default action in the command: the ones lock-exec catches. It takes them with
    /// `sigwaitinfo`, installs no handler, and leaves out any it inherited as ignored (see
    /// [`crate::supervise::caught_signals`]: those stay ignored in the command too), so in practice this changes
    /// only a SIGCONT inherited as ignored (always caught).
    pub default_actions: &'a [i32],
}

/// The command's process tree: its main process (also its process group id) and everything it started.
#[derive(Debug)]
pub struct Tree {
    leader: u32,
    /// True once the main process has been reaped: its group id may then be recycled, so the group is only
    /// signalled process by process.
    reaped: Mutex<bool>,
    /// Our own process group, when the terminal was handed to the command and must come back to us.
    terminal_owner: Option<u32>,
}

/// A state change seen by [`Tree::wait`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The command's main process exited (it has been reaped).
    Exited(ExitStatus),
    /// The command's main process was stopped by this signal (job control).
    Stopped(i32),
    /// The command's main process was continued.
    Continued,
    /// Another process (an orphan re-parented to lock-exec) exited and was reaped.
    Reaped(u32),
}

/// Makes lock-exec a child subreaper (Linux), so the command's orphaned descendants are re-parented to it
/// instead of to init: they stay visible, signallable and reapable until they are gone.
pub fn become_subreaper() -> io::Result<()> {
    sys::become_subreaper()
}

/// True when lock-exec is process 1 of its PID namespace (a container's entrypoint).
pub fn is_pid1() -> bool {
    std::process::id() == 1
}

/// Starts `argv[0]` with `argv[1..]`, stdio inherited, in a new process group. On Linux the command gets
/// SIGKILL when the spawning thread dies: call this from the main thread, which lives until the tree is gone.
pub fn spawn(argv: &[OsString], options: &Spawn<'_>) -> io::Result<Tree> {
    let (program, args) =
        argv.split_first().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty command"))?;
    // Dispositions first, then the mask: a signal pending in the child meanwhile then takes its default action.
    // SIGTTOU too, unless lock-exec was started with it ignored: lock-exec ignores it during a run (see
    // `ignore_terminal_output_stops`); and SIGPIPE, which Rust's runtime ignores before `main` (so whether it was
    // inherited ignored cannot be known; std::process sets it back the same way).
    let mut defaults = options.default_actions.to_vec();
    if TTOU_INHERITED_IGNORED.get() != Some(&true) {
        defaults.push(libc::SIGTTOU);
    }
    defaults.push(libc::SIGPIPE);
    // From an interactive terminal, the command's new process group becomes the terminal's foreground group,
    // or reading stdin stops it with SIGTTIN (a shell does the same for each job).
    let terminal_owner = if options.give_terminal { sys::foreground_terminal_group() } else { None };
    let leader = match start(program, args, options, &defaults, terminal_owner.is_some()) {
        Ok(leader) => leader,
        Err(e) => {
            // The child took the terminal before its exec failed: it comes back to us, or whatever the calling
            // script runs next would be a background job on its own terminal (a `read` stopped by SIGTTIN).
            if let Some(group) = terminal_owner {
                sys::give_terminal(group);
            }
            return Err(e);
        }
    };
    if terminal_owner.is_some() {
        sys::give_terminal(leader);
        // In case the command read the terminal before it was its own: wake it.
        sys::kill(-(leader as i64), libc::SIGCONT);
    }
    Ok(Tree { leader, reaped: Mutex::new(false), terminal_owner })
}

/// Linux: see [`launch`].
#[cfg(target_os = "linux")]
fn start(program: &OsStr, args: &[OsString], options: &Spawn<'_>, defaults: &[i32], terminal: bool) -> io::Result<u32> {
    launch::start(program, args, launch::environment(options.remove, options.vars), defaults, terminal)
}

/// Elsewhere: `std::process` (no parent-death signal).
#[cfg(not(target_os = "linux"))]
fn start(program: &OsStr, args: &[OsString], options: &Spawn<'_>, defaults: &[i32], terminal: bool) -> io::Result<u32> {
    let mut command = Command::new(program);
    command.args(args).process_group(0);
    for name in options.remove {
        command.env_remove(name);
    }
    for (name, value) in options.vars {
        command.env(name, value);
    }
    sys::default_actions_in_child(&mut command, defaults.to_vec());
    sys::empty_signal_mask_in_child(&mut command);
    if terminal {
        sys::take_terminal_in_child(&mut command);
    }
    // The std handle is dropped without waiting: the main thread reaps the command with waitid (Tree::wait).
    Ok(command.spawn()?.id())
}

impl Tree {
    /// The command's pid, which is also its process group id.
    pub fn id(&self) -> u32 {
        self.leader
    }

    fn lock(&self) -> MutexGuard<'_, bool> {
        self.reaped.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sends `signal` to the command's process group (process by process once the main process is reaped).
    pub fn signal_group(&self, signal: i32) {
        let reaped = self.lock();
        if !*reaped {
            sys::kill(-(self.leader as i64), signal);
        } else {
            for process in descendants() {
                if process.pgrp == self.leader {
                    sys::kill(i64::from(process.pid), signal);
                }
            }
        }
    }

    /// Sends `signal` to the whole tree: the command's process group and every descendant of lock-exec
    /// (setsid escapees, daemons, orphans), found through `/proc`. Returns how many processes outside the
    /// group, or left after the main process, were signalled.
    pub fn signal_tree(&self, signal: i32) -> usize {
        let reaped = self.lock();
        if !*reaped {
            sys::kill(-(self.leader as i64), signal);
        }
        if !proc_is_ours() && is_pid1() {
            // PID 1 without a /proc of its namespace: every other process in the namespace is the command's.
            return usize::from(sys::kill_every_other_process(signal));
        }
        let mut count = 0;
        for process in descendants() {
            if !*reaped && process.pgrp == self.leader {
                continue;
            }
            sys::kill(i64::from(process.pid), signal);
            count += 1;
        }
        count
    }

    /// The processes of the tree other than the command's main process. As PID 1 without a `/proc` of its own
    /// namespace: 1 when any other process exists in the namespace (all of them are the command's).
    pub fn remaining(&self) -> usize {
        if !proc_is_ours() && is_pid1() {
            return usize::from(sys::any_other_process());
        }
        descendants().iter().filter(|p| p.pid != self.leader).count()
    }

    /// Blocks until the command or an orphan changes state; `None` once lock-exec has no child left (the tree
    /// is gone). The main process is reaped here, under the lock that guards its group id. Main thread only.
    pub fn wait(&self) -> io::Result<Option<Event>> {
        loop {
            let Some(pid) = sys::wait_any_peek()? else { return Ok(None) };
            let mut reaped = self.lock();
            let Some(change) = sys::wait_consume(pid)? else { continue };
            if pid != self.leader {
                drop(reaped);
                match change {
                    sys::Change::Exited(_) => return Ok(Some(Event::Reaped(pid))),
                    // An orphan's stop or continue is no business of ours; a termination sends SIGCONT anyway.
                    sys::Change::Stopped(_) | sys::Change::Continued => continue,
                }
            }
            return Ok(Some(match change {
                sys::Change::Exited(status) => {
                    *reaped = true;
                    Event::Exited(status)
                }
                sys::Change::Stopped(signal) => Event::Stopped(signal),
                sys::Change::Continued => Event::Continued,
            }));
        }
    }

    /// Whether the terminal was handed to the command at the start.
    pub fn has_terminal(&self) -> bool {
        self.terminal_owner.is_some()
    }

    /// Takes the terminal back from the command (when it was handed over).
    pub fn take_terminal_back(&self) {
        if let Some(group) = self.terminal_owner {
            sys::give_terminal(group);
        }
    }

    /// Hands the terminal to the command again, if it had it and lock-exec is in the foreground now (`fg`
    /// rather than `bg`). Returns whether it did.
    pub fn give_terminal_again(&self) -> bool {
        match self.terminal_owner {
            Some(group) if sys::terminal_foreground() == Some(group) => {
                sys::give_terminal(self.leader);
                true
            }
            _ => false,
        }
    }
}

/// A process seen in `/proc`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Process {
    pid: u32,
    pgrp: u32,
}

/// Every descendant of lock-exec's main thread (the command and the orphans re-parented to us, then their
/// children, recursively), from `/proc/PID/task/TID/children`, or from every `/proc/PID/stat` on kernels
/// without that file. Empty when `/proc` is missing or belongs to another PID namespace.
fn descendants() -> Vec<Process> {
    let own = std::process::id();
    if !proc_is_ours() {
        return Vec::new();
    }
    let mut found = Vec::new();
    let mut queue: Vec<u32> = match std::fs::read_to_string(format!("/proc/{own}/task/{own}/children")) {
        Ok(text) => pids(&text),
        Err(_) => return descendants_by_scan(own),
    };
    while let Some(pid) = queue.pop() {
        if found.iter().any(|p: &Process| p.pid == pid) {
            continue;
        }
        let Some(process) = stat(pid) else { continue };
        found.push(process);
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
            for task in tasks.flatten() {
                let path = task.path().join("children");
                if let Ok(text) = std::fs::read_to_string(path) {
                    queue.extend(pids(&text));
                }
            }
        }
    }
    found
}

/// Whether `/proc` is mounted and belongs to lock-exec's PID namespace (its pids are the ones `kill` takes).
pub fn proc_is_ours() -> bool {
    let own = std::process::id().to_string();
    std::fs::read_link("/proc/self").is_ok_and(|link| link.to_str() == Some(own.as_str()))
}

/// Blocks `signals` in the calling thread and every thread it creates afterwards: such a signal stays pending
/// (instead of taking its action, even an inherited ignored one) until [`wait_signal`] takes it. Neither the
/// command nor a helper inherits the mask: see [`empty_signal_mask_in_child`].
pub fn block_signals(signals: &[i32]) -> io::Result<()> {
    sys::block(signals)
}

/// A child of lock-exec (a `credential_process` helper) starts with an empty signal mask, not the blocked
/// signals of the thread that spawns it.
pub fn empty_signal_mask_in_child(command: &mut Command) {
    sys::empty_signal_mask_in_child(command);
}

/// The next of `signals` (blocked in every thread) sent to lock-exec.
pub fn wait_signal(signals: &[i32]) -> io::Result<i32> {
    sys::wait_signal(signals)
}

/// The host name `uname` reports (the UTS namespace's, as `/proc/sys/kernel/hostname` holds it); `None` when it is
/// empty or the call fails.
pub fn node_name() -> Option<String> {
    sys::node_name()
}

/// Whether `signal`'s disposition is ignored (`SIG_IGN`). Before lock-exec sets any, that is the one it
/// inherited: a parent's `SIG_IGN` survives exec (`nohup`, a script's `&` job, `trap ''`).
pub fn is_ignored(signal: i32) -> bool {
    sys::is_ignored(signal)
}

/// SIGCHLD back to its default action, first thing in every subcommand. An ignored SIGCHLD (a parent's SIG_IGN
/// survives exec) makes the kernel reap lock-exec's children itself: neither the command's exit status nor a
/// `credential_process` helper's could be collected (`ECHILD`). The command then inherits the default too.
pub fn collect_children() {
    sys::default_action(libc::SIGCHLD);
}

/// SIGTTOU is ignored during a run (and set back to its default in the command): lock-exec writes its log lines
/// while the command has the terminal, and with `stty tostop` each write would raise SIGTTOU. Ignored, the
/// write goes through, and `tcsetpgrp` from a background group works too.
/// An SIGTTOU inherited as ignored stays ignored in the command (see [`spawn`]).
pub fn ignore_terminal_output_stops() {
    let was_ignored = sys::ignore(libc::SIGTTOU);
    TTOU_INHERITED_IGNORED.get_or_init(|| was_ignored);
}

/// Whether SIGTTOU was ignored before [`ignore_terminal_output_stops`] first ignored it.
static TTOU_INHERITED_IGNORED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();

fn pids(text: &str) -> Vec<u32> {
    text.split_whitespace().filter_map(|p| p.parse().ok()).collect()
}

/// `pid`'s process group from `/proc/PID/stat` (`pid (comm) state ppid pgrp ...`; comm may hold anything).
fn stat(pid: u32) -> Option<Process> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?).map(|(_, pgrp)| Process { pid, pgrp })
}

/// `(ppid, pgrp)` from the text of `/proc/PID/stat`.
fn parse_stat(text: &str) -> Option<(u32, u32)> {
    let after = &text[text.rfind(')')? + 1..];
    let mut fields = after.split_whitespace().skip(1);
    let ppid = fields.next()?.parse().ok()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some((ppid, pgrp))
}

/// The fallback walk: every process's parent from `/proc/*/stat`.
fn descendants_by_scan(own: u32) -> Vec<Process> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    let all: Vec<(u32, u32, u32)> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let (ppid, pgrp) = parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)?;
            Some((pid, ppid, pgrp))
        })
        .collect();
    let mut found: Vec<Process> = Vec::new();
    let mut parents = vec![own];
    while let Some(parent) = parents.pop() {
        for &(pid, ppid, pgrp) in &all {
            if ppid == parent && !found.iter().any(|p| p.pid == pid) {
                found.push(Process { pid, pgrp });
                parents.push(pid);
            }
        }
    }
    found
}

/// The other processes of lock-exec's process group (a calling script's shell, the rest of a pipeline).
fn group_others() -> Vec<u32> {
    let own = std::process::id();
    let group = sys::own_group();
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| {
            pid != own
                && std::fs::read_to_string(format!("/proc/{pid}/stat")).ok().and_then(|t| parse_stat(&t)).map(|s| s.1)
                    == Some(group)
        })
        .collect()
}

/// Sends `signal` to the other processes of lock-exec's process group. Used when the terminal was handed to
/// the command: a Ctrl-C or Ctrl-Z then reached only the command's group, and lock-exec relays it to the job
/// the terminal would have signalled (a calling script's shell), so that shell stops or stops its script.
pub fn signal_own_group_others(signal: i32) {
    for pid in group_others() {
        sys::kill(i64::from(pid), signal);
    }
}

/// Whether lock-exec runs under job control: stdin, stdout or stderr is a terminal whose foreground group is
/// ours (`lock-exec ... < /dev/null` typed at a shell is still the terminal's job), and we are not process 1.
/// Then a stopped command stops lock-exec too, so the shell sees the job stopped.
pub fn job_control() -> bool {
    let own = sys::own_group();
    !is_pid1() && (0..=2).any(|fd| sys::terminal_foreground_of(fd) == Some(own))
}

/// Whether the command should get the terminal: stdin is a terminal whose foreground group is ours (also as
/// PID 1 of a container started with a terminal), unless lock-exec's stdout is a pipe to another member of its
/// process group (`lock-exec run ... | less`), which needs the terminal itself.
pub fn should_give_terminal() -> bool {
    if sys::foreground_terminal_group().is_none() {
        return false;
    }
    let stdout_is_pipe = std::fs::metadata("/proc/self/fd/1").map(|m| m.file_type().is_fifo()).unwrap_or(false);
    !stdout_is_pipe || group_others().is_empty()
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

/// Sends `signal` to process group `pgid`. Errors (the group is gone) are ignored.
pub fn signal_group(pgid: u32, signal: i32) {
    sys::kill(-i64::from(pgid), signal);
}

/// Stops lock-exec itself with SIGSTOP (job control: the shell then sees the job stopped). Returns once
/// lock-exec is continued: the signal is raised on the calling thread, which stops before the call returns
/// (a process-directed `kill` may be taken by another thread and let this one run on for a while).
pub fn stop_self() {
    sys::raise(libc::SIGSTOP);
}

/// Signals whose default action terminates without a core dump: lock-exec can die of these itself.
pub fn terminates_quietly(signal: i32) -> bool {
    matches!(
        signal,
        libc::SIGHUP
            | libc::SIGINT
            | libc::SIGKILL
            | libc::SIGPIPE
            | libc::SIGALRM
            | libc::SIGTERM
            | libc::SIGUSR1
            | libc::SIGUSR2
            | libc::SIGPROF
            | libc::SIGVTALRM
            | libc::SIGIO
            | libc::SIGPWR
            | libc::SIGSTKFLT
    ) || (libc::SIGRTMIN()..=libc::SIGRTMAX()).contains(&signal)
}

/// The exit code lock-exec passes on: the child's code, or 128+N when it died of signal N.
pub fn exit_code(status: ExitStatus) -> u8 {
    match (status.code(), status.signal()) {
        (Some(code), _) => (code & 0xff) as u8,
        (None, Some(signal)) => (128 + signal).clamp(0, 255) as u8,
        (None, None) => 255,
    }
}

/// The few libc calls std lacks: prctl (subreaper, parent-death signal), getppid, kill, raise, waitid, getpgrp, the
/// signal mask and sigwaitinfo, and the terminal's foreground group (isatty, tcgetpgrp, tcsetpgrp, with SIGTTOU
/// blocked around tcsetpgrp).
/// Each `unsafe` block is a plain FFI call with no pointers we do not own.
#[allow(unsafe_code)]
mod sys {
    use std::io;
    use std::os::unix::process::{CommandExt, ExitStatusExt};
    use std::process::{Command, ExitStatus};

    /// What `waitid` reported for one child.
    pub enum Change {
        Exited(ExitStatus),
        Stopped(i32),
        Continued,
    }

    /// `prctl(PR_SET_CHILD_SUBREAPER, 1)`.
    #[cfg(target_os = "linux")]
    pub fn become_subreaper() -> io::Result<()> {
        // SAFETY: prctl takes plain integers here.
        if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as libc::c_ulong, 0, 0, 0) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Other systems have no subreaper.
    #[cfg(not(target_os = "linux"))]
    pub fn become_subreaper() -> io::Result<()> {
        Ok(())
    }

    /// Our process group.
    pub fn own_group() -> u32 {
        // SAFETY: getpgrp takes nothing and only reads process state.
        unsafe { libc::getpgrp() as u32 }
    }

    /// The foreground process group of the terminal on stdin, if stdin is a terminal.
    pub fn terminal_foreground() -> Option<u32> {
        terminal_foreground_of(0)
    }

    /// The foreground process group of the terminal on descriptor `fd`, if it is a terminal.
    pub fn terminal_foreground_of(fd: i32) -> Option<u32> {
        // SAFETY: isatty and tcgetpgrp take plain integers and only read process state.
        let (is_tty, foreground) = unsafe { (libc::isatty(fd), libc::tcgetpgrp(fd)) };
        (is_tty == 1 && foreground > 0).then_some(foreground as u32)
    }

    /// Our process group when stdin is a terminal whose foreground process group is ours.
    pub fn foreground_terminal_group() -> Option<u32> {
        let own = own_group();
        (terminal_foreground() == Some(own)).then_some(own)
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

    /// `kill(pid, signal)`: a negative pid addresses a process group. Errors (gone) are ignored.
    pub fn kill(pid: i64, signal: i32) {
        let Ok(pid) = libc::pid_t::try_from(pid) else { return };
        if pid == 0 || pid == -1 {
            return; // never our own group or every process
        }
        // SAFETY: kill takes plain integers.
        unsafe {
            libc::kill(pid, signal);
        }
    }

    /// Blocks `signals` for the calling thread.
    pub fn block(signals: &[i32]) -> io::Result<()> {
        let set = signal_set(signals)?;
        // SAFETY: pthread_sigmask takes an initialised set; a null old-set pointer is allowed.
        match unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) } {
            0 => Ok(()),
            errno => Err(io::Error::from_raw_os_error(errno)),
        }
    }

    /// `sigwaitinfo` on `signals` (blocked in every thread): the next one sent to the process.
    pub fn wait_signal(signals: &[i32]) -> io::Result<i32> {
        let set = signal_set(signals)?;
        loop {
            // SAFETY: sigwaitinfo takes an initialised set; a null info pointer is allowed.
            let signal = unsafe { libc::sigwaitinfo(&set, std::ptr::null_mut()) };
            if signal > 0 {
                return Ok(signal);
            }
            let error = io::Error::last_os_error();
            if error.kind() != io::ErrorKind::Interrupted {
                return Err(error);
            }
        }
    }

    /// The set of `signals`.
    fn signal_set(signals: &[i32]) -> io::Result<libc::sigset_t> {
        let mut set = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: sigemptyset initialises the set it is given; sigaddset takes that set and a plain integer.
        unsafe {
            libc::sigemptyset(set.as_mut_ptr());
            for &signal in signals {
                if libc::sigaddset(set.as_mut_ptr(), signal) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(set.assume_init())
        }
    }

    /// Sets `signal`'s disposition to its default action.
    pub fn default_action(signal: i32) {
        // SAFETY: signal takes a plain integer and the constant SIG_DFL.
        unsafe {
            libc::signal(signal, libc::SIG_DFL);
        }
    }

    /// `uname`'s node name.
    pub fn node_name() -> Option<String> {
        let mut names = std::mem::MaybeUninit::<libc::utsname>::zeroed();
        // SAFETY: uname fills the struct it is given, a valid pointer to zeroed (valid) memory.
        if unsafe { libc::uname(names.as_mut_ptr()) } != 0 {
            return None;
        }
        // SAFETY: zeroed memory is a valid utsname, and uname filled it.
        let names = unsafe { names.assume_init() };
        let bytes: Vec<u8> = names.nodename.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
        Some(String::from_utf8_lossy(&bytes).into_owned()).filter(|name| !name.is_empty())
    }

    /// Whether `signal`'s disposition is `SIG_IGN` (false when it cannot be read: an invalid number).
    pub fn is_ignored(signal: i32) -> bool {
        let mut current = std::mem::MaybeUninit::<libc::sigaction>::zeroed();
        // SAFETY: with a null new action, sigaction only writes the current one into `current`, a valid pointer.
        let read = unsafe { libc::sigaction(signal, std::ptr::null(), current.as_mut_ptr()) };
        // SAFETY: all-zero bytes are a valid sigaction (plain integers and a set), and sigaction filled it when
        // it returned 0.
        read == 0 && unsafe { current.assume_init() }.sa_sigaction == libc::SIG_IGN
    }

    /// Sets `signal`'s disposition to ignored; returns whether it was ignored already.
    pub fn ignore(signal: i32) -> bool {
        // SAFETY: signal takes a plain integer and the constant SIG_IGN.
        unsafe { libc::signal(signal, libc::SIG_IGN) == libc::SIG_IGN }
    }

    /// In the child, before exec: an empty signal mask. lock-exec's threads block the signals it catches (see
    /// [`super::block_signals`]); a mask survives fork and exec, and `std::process` leaves it as it is.
    pub fn empty_signal_mask_in_child(command: &mut Command) {
        // SAFETY: runs in the forked child before exec; sigemptyset and pthread_sigmask are async-signal-safe
        // (sigprocmask is), take a set initialised by sigemptyset, and a null old-set pointer is allowed.
        unsafe {
            command.pre_exec(|| {
                let mut set = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
                libc::sigemptyset(set.as_mut_ptr());
                match libc::pthread_sigmask(libc::SIG_SETMASK, set.as_ptr(), std::ptr::null_mut()) {
                    0 => Ok(()),
                    errno => Err(io::Error::from_raw_os_error(errno)),
                }
            });
        }
    }

    /// In the child, before exec: `signals` back to their default action (an ignored disposition survives exec).
    #[cfg(not(target_os = "linux"))]
    pub fn default_actions_in_child(command: &mut Command, signals: Vec<i32>) {
        // SAFETY: runs in the forked child before exec; signal is async-signal-safe and takes plain values; the
        // closure only reads the vector it owns (no allocation).
        unsafe {
            command.pre_exec(move || {
                for &signal in &signals {
                    libc::signal(signal, libc::SIG_DFL);
                }
                Ok(())
            });
        }
    }

    /// As PID 1: `kill(-1, signal)` reaches every other process of the namespace. True when one was signalled.
    pub fn kill_every_other_process(signal: i32) -> bool {
        // SAFETY: kill takes plain integers; -1 addresses every process we may signal except ourselves.
        unsafe { libc::kill(-1, signal) == 0 }
    }

    /// As PID 1: whether any other process exists in the namespace (`kill(-1, 0)`).
    pub fn any_other_process() -> bool {
        kill_every_other_process(0)
    }

    /// `raise(signal)`: the signal goes to the calling thread.
    pub fn raise(signal: i32) {
        // SAFETY: raise takes a plain integer.
        unsafe {
            libc::raise(signal);
        }
    }

    const CHANGES: libc::c_int = libc::WEXITED | libc::WSTOPPED | libc::WCONTINUED | libc::__WNOTHREAD;

    /// Blocks until a child of this thread has a state change and returns its pid without consuming the
    /// change (`WNOWAIT`); `None` when this thread has no child left. Retried on EINTR.
    pub fn wait_any_peek() -> io::Result<Option<u32>> {
        loop {
            // SAFETY: `info` is a zeroed siginfo_t we own; waitid writes into it and keeps no pointer.
            let (result, pid) = unsafe {
                let mut info: libc::siginfo_t = std::mem::zeroed();
                let result = libc::waitid(libc::P_ALL, 0, &mut info, CHANGES | libc::WNOWAIT);
                (result, info.si_pid())
            };
            if result == 0 {
                return Ok(u32::try_from(pid).ok().filter(|&p| p > 0));
            }
            let error = io::Error::last_os_error();
            match error.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::ECHILD) => return Ok(None),
                _ => return Err(error),
            }
        }
    }

    /// Consumes the pending state change of child `pid` (reaping it if it exited).
    pub fn wait_consume(pid: u32) -> io::Result<Option<Change>> {
        loop {
            // SAFETY: as above; the siginfo_t accessors read the fields waitid filled in.
            let (result, child, code, status) = unsafe {
                let mut info: libc::siginfo_t = std::mem::zeroed();
                let result = libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, CHANGES | libc::WNOHANG);
                (result, info.si_pid(), info.si_code, info.si_status())
            };
            if result != 0 {
                let error = io::Error::last_os_error();
                match error.raw_os_error() {
                    Some(libc::EINTR) => continue,
                    Some(libc::ECHILD) => return Ok(None),
                    _ => return Err(error),
                }
            }
            if child == 0 {
                return Ok(None);
            }
            return Ok(match code {
                libc::CLD_EXITED => Some(Change::Exited(ExitStatus::from_raw((status & 0xff) << 8))),
                libc::CLD_KILLED => Some(Change::Exited(ExitStatus::from_raw(status & 0x7f))),
                libc::CLD_DUMPED => Some(Change::Exited(ExitStatus::from_raw((status & 0x7f) | 0x80))),
                libc::CLD_STOPPED | libc::CLD_TRAPPED => Some(Change::Stopped(status)),
                libc::CLD_CONTINUED => Some(Change::Continued),
                _ => None,
            });
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
    fn stat_lines_are_parsed_past_the_command_name() {
        assert_eq!(parse_stat("42 (sh) S 7 42 42 0 -1"), Some((7, 42)));
        assert_eq!(parse_stat("42 (a) b (c)) R 9 11 11 0"), Some((9, 11)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn quiet_terminations_exclude_core_dumps_and_stops() {
        assert!(terminates_quietly(libc::SIGINT) && terminates_quietly(libc::SIGTERM));
        assert!(terminates_quietly(libc::SIGRTMIN() + 1));
        assert!(!terminates_quietly(libc::SIGQUIT) && !terminates_quietly(libc::SIGSEGV));
        assert!(!terminates_quietly(libc::SIGTSTP) && !terminates_quietly(libc::SIGCHLD));
    }

    #[test]
    fn exit_codes_pass_through() {
        assert_eq!(exit_code(ExitStatus::from_raw(7 << 8)), 7);
        assert_eq!(exit_code(ExitStatus::from_raw(libc::SIGKILL)), 137);
        assert_eq!(exit_code(ExitStatus::from_raw(libc::SIGSEGV | 0x80)), 139);
    }

    #[test]
    fn missing_programs_are_not_found() {
        let error = spawn(&argv(&["/nonexistent/program"]), &Spawn::default()).expect_err("no such program");
        assert_eq!(error.kind(), io::ErrorKind::NotFound);
    }
}
