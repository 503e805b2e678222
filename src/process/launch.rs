//! Starting the command on Linux the way `posix_spawn` starts a process, `clone(CLONE_VM | CLONE_VFORK)`, plus
//! the one step `posix_spawn` cannot take: the parent-death signal.
//!
//! A `fork` copies lock-exec's page tables, and the copy is torn down again when the child execs, while the
//! parent waits for the exec: about 0.3 ms of a 6 ms lock cycle on a small VM (README "Performance"). With
//! `CLONE_VM | CLONE_VFORK` the child borrows lock-exec's memory and runs on a stack of its own until it execs;
//! the spawning thread is suspended meanwhile (the kernel resumes it at the exec or at the child's exit).
//!
//! Rules for the child, which shares memory with lock-exec's other, still running, threads:
//! - everything it reads (argv, envp, the signal list) is prepared by the parent before the clone, and it
//!   writes only its own stack;
//! - it makes raw system calls only (no allocation, no lock, nothing of libc's that keeps state), except
//!   `execvpe` on each path the parent listed (see [`candidates`]), which adds glibc's `/bin/sh` fallback for a
//!   script without `#!` on the stack, as `execvp` does for `std::process`;
//! - every signal is blocked around the clone, so no handler of lock-exec's can run in it; it empties its mask
//!   only right before the exec;
//! - it reports through the memory it shares with the suspended parent: the errno of a step that failed, or
//!   that it reached the exec. Where the clone is turned into a plain fork (qemu-user does that), the parent
//!   sees neither and reads the errno from a close-on-exec pipe instead, as `std::process` does (waiting for the
//!   pipe to close at the exec costs a wake-up, which the shared memory saves).

use std::collections::BTreeMap;
use std::ffi::{CString, OsStr, OsString, c_char, c_int, c_void};
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::sync::atomic::{AtomicI32, Ordering};

/// The child's stack, beyond what `execvpe` may put on it: glibc's copies argv there to run a script without
/// a `#!` line through `/bin/sh`.
const STACK: usize = 64 * 1024;

/// What the child does, prepared by the parent.
struct Plan {
    /// Where to look for the program, in order (see [`candidates`]).
    candidates: Vec<CString>,
    /// Null-terminated pointers into `_owned`.
    argv: Vec<*const c_char>,
    /// Null-terminated pointers into `_owned`.
    envp: Vec<*const c_char>,
    _owned: Vec<CString>,
    /// Signals set back to their default action.
    defaults: Vec<c_int>,
    /// lock-exec's pid: the child checks it is still its parent once the parent-death signal is armed.
    parent: libc::pid_t,
    /// Make the child's new process group the terminal's foreground group.
    take_terminal: bool,
    /// The write end of the error pipe (close-on-exec).
    report: c_int,
    /// Set by the child right before its exec (seen by the parent only when the memory is shared).
    reached: AtomicI32,
    /// The errno of a step that failed in the child (likewise).
    error: AtomicI32,
}

/// The environment of the command: lock-exec's, without `remove`, with `vars` set (sorted by name, as
/// `std::process::Command` passes it).
pub fn environment(remove: &[&str], vars: &[(&str, String)]) -> BTreeMap<OsString, OsString> {
    let mut env: BTreeMap<OsString, OsString> = std::env::vars_os().collect();
    for name in remove {
        env.remove(OsStr::new(name));
    }
    for (name, value) in vars {
        env.insert(OsString::from(name), OsString::from(value));
    }
    env
}

/// The paths musl's `execvp` tries for `program`, searched in `path` (the command's own `PATH`; libc's default
/// when it has none): `program` itself when it holds a `/`; none when it is empty; ENAMETOOLONG for a name longer
/// than NAME_MAX, before any search; otherwise `ENTRY/NAME` for each entry shorter than PATH_MAX (a longer one is
/// skipped), and `./NAME` for an empty entry (the current directory; libc passes plain `NAME`, so a script found
/// there sees `./NAME` as its `$0`). Each holds a `/`, so `execvpe` runs it without searching again. lock-exec's
/// own `PATH` is not used: `execvpe` would read it with `getenv`, which takes the first of duplicate entries
/// where the command gets the last.
fn candidates(program: &[u8], path: Option<&[u8]>) -> io::Result<Vec<CString>> {
    if program.contains(&b'/') {
        return Ok(vec![c_string(program.to_vec())?]);
    }
    if program.is_empty() {
        return Ok(Vec::new());
    }
    if program.len() > NAME_MAX {
        return Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG));
    }
    let default: &[u8] = if cfg!(target_env = "musl") { b"/usr/local/bin:/bin:/usr/bin" } else { b"/bin:/usr/bin" };
    path.unwrap_or(default)
        .split(|&byte| byte == b':')
        .filter(|dir| dir.len() < libc::PATH_MAX as usize)
        .map(|dir| {
            let mut full = if dir.is_empty() { b".".to_vec() } else { dir.to_vec() };
            full.push(b'/');
            full.extend_from_slice(program);
            c_string(full)
        })
        .collect()
}

/// The longest file name (bytes).
const NAME_MAX: usize = 255;

fn c_string(bytes: Vec<u8>) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "nul byte found in provided data"))
}

/// Starts `program` with `args` and `env` in a new process group (its pid), with `defaults` at their default
/// action, an empty signal mask, the parent-death signal SIGKILL, and, with `take_terminal`, the terminal on
/// stdin. Returns the pid once the child has exec'd; the errno of the step that failed otherwise (the child is
/// reaped).
pub fn start(
    program: &OsStr,
    args: &[OsString],
    env: BTreeMap<OsString, OsString>,
    defaults: &[i32],
    take_terminal: bool,
) -> io::Result<u32> {
    let candidates = candidates(program.as_bytes(), env.get(OsStr::new("PATH")).map(|path| path.as_bytes()))?;
    let mut owned = vec![c_string(program.as_bytes().to_vec())?];
    for arg in args {
        owned.push(c_string(arg.as_bytes().to_vec())?);
    }
    let argc = owned.len();
    for (name, value) in env {
        let mut pair = name.into_vec();
        pair.push(b'=');
        pair.extend(value.into_vec());
        owned.push(c_string(pair)?);
    }
    let mut argv: Vec<*const c_char> = owned[..argc].iter().map(|s| s.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const c_char> = owned[argc..].iter().map(|s| s.as_ptr()).collect();
    envp.push(std::ptr::null());
    let plan = Plan {
        candidates,
        argv,
        envp,
        _owned: owned,
        defaults: defaults.to_vec(),
        parent: std::process::id() as libc::pid_t,
        take_terminal,
        report: -1,
        reached: AtomicI32::new(0),
        error: AtomicI32::new(0),
    };
    // Reserved, not zeroed: only the pages the child touches become resident.
    let mut stack: Vec<u8> = Vec::with_capacity(STACK + 8 * (argc + 3));
    clone_and_exec(plan, &mut stack)
}

#[allow(unsafe_code)]
fn clone_and_exec(mut plan: Plan, stack: &mut Vec<u8>) -> io::Result<u32> {
    let mut pipe = [-1 as c_int; 2];
    // SAFETY: pipe2 writes two descriptors into the array we own.
    if unsafe { libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: from here on, each descriptor is owned once, and closed when dropped.
    let (reader, writer) = unsafe { (OwnedFd::from_raw_fd(pipe[0]), OwnedFd::from_raw_fd(pipe[1])) };
    plan.report = writer.as_raw_fd();
    // The stack grows down from its (16-byte aligned) end.
    let top = (stack.as_mut_ptr() as usize + stack.capacity()) & !15;
    // SAFETY: `all` and `previous` are kernel signal sets (64 bits on Linux) we own; rt_sigprocmask reads the
    // one and writes the other. The clone runs `child` on `stack` with a pointer to `plan`; both outlive the call
    // (CLONE_VFORK suspends this thread until the child execs or exits; where the clone is a plain fork the child
    // has copies) and the child only reads them. Every signal is blocked meanwhile, so nothing of ours runs in
    // the child: the raw system call, as glibc's posix_spawn makes it, because the C library's masking functions
    // leave its own real-time signals (32-34) out.
    let pid = unsafe {
        let (all, mut previous) = (!0u64, 0u64);
        let (how, size) = (libc::SIG_SETMASK as libc::c_long, 8 as libc::c_long);
        if libc::syscall(libc::SYS_rt_sigprocmask, how, &all as *const u64, &mut previous as *mut u64, size) != 0 {
            // Nothing blocked, and `previous` unknown: no clone, and no restore that could unblock everything.
            return Err(io::Error::last_os_error());
        }
        let pid = libc::clone(
            child,
            top as *mut c_void,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            &plan as *const Plan as *mut c_void,
        );
        let error = io::Error::last_os_error();
        libc::syscall(libc::SYS_rt_sigprocmask, how, &previous as *const u64, std::ptr::null::<u64>(), size);
        if pid < 0 {
            return Err(error);
        }
        pid
    };
    drop(writer);
    // Shared memory (the clone was honoured): the child has exec'd or failed by now.
    match (plan.error.load(Ordering::SeqCst), plan.reached.load(Ordering::SeqCst)) {
        (0, 0) => {}
        (0, _) => return Ok(pid as u32),
        (errno, _) => {
            reap(pid);
            return Err(io::Error::from_raw_os_error(errno));
        }
    }
    // A plain fork: the child's copy of the write end closes at its exec (nothing to read) or after its errno.
    let mut reader = std::fs::File::from(reader);
    let mut report = [0u8; 4];
    let mut got = 0;
    while got < report.len() {
        match reader.read(&mut report[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                // Unknown whether it exec'd: the command is not left running unwatched.
                // SAFETY: kill takes plain integers; pid is our child, not yet reaped.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                reap(pid);
                return Err(e);
            }
        }
    }
    match got {
        0 => Ok(pid as u32),
        _ => {
            reap(pid);
            Err(io::Error::from_raw_os_error(if got == 4 { c_int::from_ne_bytes(report) } else { libc::EIO }))
        }
    }
}

/// Reaps a child that exited before its exec.
#[allow(unsafe_code)]
fn reap(pid: libc::pid_t) {
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes the status into a local we own.
        let result = unsafe { libc::waitpid(pid, &mut status, libc::__WALL) };
        if result >= 0 || io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return;
        }
    }
}

/// The child's body: returns only if a step failed, then sends the errno and exits 127.
#[allow(unsafe_code)]
extern "C" fn child(plan: *mut c_void) -> c_int {
    // SAFETY: `plan` points to the parent's Plan, alive until the parent resumes (at our exec or exit).
    let plan = unsafe { &*(plan as *const Plan) };
    // SAFETY: prepare_and_exec makes only raw system calls and execvpe on what the parent prepared.
    let errno = unsafe { prepare_and_exec(plan) };
    let errno = if errno == 0 { libc::EINVAL } else { errno };
    plan.error.store(errno, Ordering::SeqCst);
    let report = errno.to_ne_bytes();
    // SAFETY: a raw write of our local to the pipe's write end, then _exit, which runs nothing of the parent's.
    unsafe {
        libc::syscall(libc::SYS_write, libc::c_long::from(plan.report), report.as_ptr(), report.len());
        libc::_exit(127)
    }
}

/// The errno of the last failed call (the child shares the suspended parent thread's errno).
fn errno() -> c_int {
    io::Error::last_os_error().raw_os_error().unwrap_or(libc::EINVAL)
}

/// # Safety
/// Call only in the `CLONE_VM | CLONE_VFORK` child, with every signal blocked.
#[allow(unsafe_code)]
unsafe fn prepare_and_exec(plan: &Plan) -> c_int {
    // SAFETY (all calls below): system calls on plain integers and on pointers to locals or to the parent's
    // prepared, null-terminated strings and arrays.
    unsafe {
        // Variadic arguments go as longs: an int's upper half would be undefined.
        let none: libc::c_long = 0;
        if libc::syscall(libc::SYS_setpgid, none, none) != 0 {
            return errno();
        }
        let pdeathsig = (libc::PR_SET_PDEATHSIG as libc::c_long, libc::SIGKILL as libc::c_long);
        if libc::syscall(libc::SYS_prctl, pdeathsig.0, pdeathsig.1, none, none, none) != 0 {
            return errno();
        }
        // lock-exec may have died before the signal was armed: then nobody would kill us.
        if libc::syscall(libc::SYS_getppid) != libc::c_long::from(plan.parent) {
            return libc::ESRCH;
        }
        if plan.take_terminal {
            // SIGTTOU is blocked here, so a background group's tcsetpgrp goes through. Before the dispositions:
            // a Ctrl-Z from now on reaches only our group, and the stop signals are reset last (below).
            let group = libc::syscall(libc::SYS_getpid) as libc::pid_t;
            libc::syscall(libc::SYS_ioctl, none, libc::TIOCSPGRP as libc::c_long, &group as *const libc::pid_t);
        }
        // The kernel's struct sigaction, all zero: SIG_DFL, no flags, an empty mask (its size fits every
        // architecture's layout); the handler comes first in each, so `ignore_action` is SIG_IGN (1).
        let default_action = [0u64; 4];
        let ignore_action = [1u64, 0, 0, 0];
        let size: libc::c_long = 8;
        let stops = [libc::SIGTSTP, libc::SIGTTIN, libc::SIGTTOU];
        let set = |signal: c_int, action: &[u64; 4]| {
            libc::syscall(
                libc::SYS_rt_sigaction,
                signal as libc::c_long,
                action.as_ptr(),
                std::ptr::null::<u64>(),
                size,
            );
        };
        for &signal in plan.defaults.iter().filter(|signal| !stops.contains(signal)) {
            set(signal, &default_action);
        }
        // The stop signals last, each ignored first, which discards one already pending: a Ctrl-Z sent to
        // lock-exec's group before the setpgid above, or to ours after the terminal became ours, would stop us
        // before the exec with lock-exec suspended in the clone and no lease renewed (lock-exec got the first kind
        // as well and acts on it once the command runs; the second comes before the command exists). One that
        // comes in the few system calls left before the exec still stops us there.
        for &signal in plan.defaults.iter().filter(|signal| stops.contains(signal)) {
            set(signal, &ignore_action);
            set(signal, &default_action);
        }
        let empty = 0u64;
        let (how, size) = (libc::SIG_SETMASK as libc::c_long, 8 as libc::c_long);
        if libc::syscall(libc::SYS_rt_sigprocmask, how, &empty as *const u64, std::ptr::null::<u64>(), size) != 0 {
            return errno();
        }
        plan.reached.store(1, Ordering::SeqCst);
        // As musl's execvp: a path that is not there or not executable sends the search on; any other error ends
        // it.
        let mut denied = false;
        for candidate in &plan.candidates {
            libc::execvpe(candidate.as_ptr(), plan.argv.as_ptr(), plan.envp.as_ptr());
            match errno() {
                libc::EACCES => denied = true,
                libc::ENOENT | libc::ENOTDIR => {}
                other => return other,
            }
        }
        if denied { libc::EACCES } else { libc::ENOENT }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(program: &str, path: Option<&str>) -> Vec<String> {
        candidates(program.as_bytes(), path.map(str::as_bytes))
            .expect("no nul byte")
            .into_iter()
            .map(|c| c.into_string().expect("utf-8"))
            .collect()
    }

    #[test]
    fn the_program_is_looked_for_in_each_entry_of_the_path_in_order() {
        assert_eq!(paths("prog", Some("/a:/b/:")), ["/a/prog", "/b//prog", "./prog"]);
        assert_eq!(paths("prog", Some("")), ["./prog"]);
    }

    #[test]
    fn a_program_with_a_slash_is_run_as_given_and_an_empty_one_is_not_found() {
        assert_eq!(paths("./bin/prog", Some("/a")), ["./bin/prog"]);
        assert_eq!(paths("/usr/bin/env", None), ["/usr/bin/env"]);
        assert!(paths("", Some("/a")).is_empty());
    }

    #[test]
    fn an_entry_longer_than_path_max_is_skipped() {
        let path = format!("{}:/b", "/x".repeat(2100));
        assert_eq!(paths("p", Some(&path)), ["/b/p"]);
    }

    /// As musl's `execvp` (exit 126 rather than a search that reports `command not found`).
    #[test]
    fn a_name_longer_than_name_max_is_too_long_before_any_search() {
        let error = candidates(&[b'p'; 256], Some(b"/nonexistent")).expect_err("too long");
        assert_eq!(error.raw_os_error(), Some(libc::ENAMETOOLONG));
        assert_eq!(paths(&"p".repeat(255), Some("/a")).len(), 1);
    }

    #[test]
    fn without_a_path_libc_s_default_is_searched() {
        let expected: &[&str] = if cfg!(target_env = "musl") {
            &["/usr/local/bin/p", "/bin/p", "/usr/bin/p"]
        } else {
            &["/bin/p", "/usr/bin/p"]
        };
        assert_eq!(paths("p", None), expected);
    }
}
