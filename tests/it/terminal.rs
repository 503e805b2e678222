//! Runs from an interactive terminal: the command's process group gets the terminal, so it can read it.

use crate::support::{Case, run_in_terminal};

#[test]
fn a_command_run_from_a_terminal_can_read_it() {
    let case = Case::new("terminal");
    // `script` (util-linux) gives lock-exec a pseudo-terminal as its controlling terminal and stdin.
    let inner = format!(
        "{} -t {} -q run k -- sh -c 'read line; echo \"got $line\"'",
        env!("CARGO_BIN_EXE_lock-exec"),
        case.table()
    );
    let output = run_in_terminal(&inner, case.env(), b"hello\n", "the command was stopped reading its terminal");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "exit {:?}\n--- stdout:\n{stdout}", output.status);
    assert!(
        stdout.contains("got hello"),
        "expected the command to read `hello` from the terminal\n--- stdout:\n{stdout}"
    );
}

/// A command that cannot be started (not found) from a terminal: its process group had taken the terminal
/// before the exec failed, and lock-exec gives it back, so the calling script still reads its terminal.
#[test]
fn a_command_that_cannot_start_gives_the_terminal_back() {
    let case = Case::new("terminal-exec-failure");
    let inner = format!(
        "{} -t {} -q run k -- no-such-command-in-path; echo \"exit $?\"; read line; echo \"got [$line]\"",
        env!("CARGO_BIN_EXE_lock-exec"),
        case.table()
    );
    let output = run_in_terminal(&inner, case.env(), b"hello\n", "the calling shell was stopped reading its terminal");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("exit 127"), "expected lock-exec to exit 127\n--- stdout:\n{stdout}");
    assert!(
        stdout.contains("got [hello]"),
        "expected the shell to read `hello` from its terminal\n--- stdout:\n{stdout}"
    );
}
