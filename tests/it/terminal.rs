//! Runs from an interactive terminal: the command's process group gets the terminal, so it can read it.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::Case;

#[test]
fn a_command_run_from_a_terminal_can_read_it() {
    let case = Case::new("terminal");
    // `script` (util-linux) gives lock-exec a pseudo-terminal as its controlling terminal and stdin.
    let inner = format!(
        "{} -t {} -q run k -- sh -c 'read line; echo \"got $line\"'",
        env!("CARGO_BIN_EXE_lock-exec"),
        case.table()
    );
    let mut child = Command::new("script")
        .args(["-qec", &inner, "/dev/null"])
        .env_clear()
        .envs(case.env())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run script(1) from util-linux");
    child.stdin.take().expect("stdin is piped").write_all(b"hello\n").expect("write to the terminal");
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let output = child.wait_with_output().expect("collect output");
            panic!(
                "the command was stopped reading its terminal (still running after 20 s)\n--- stdout:\n{}\n--- stderr:\n{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().expect("collect output");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "exit {:?}\n--- stdout:\n{stdout}", output.status);
    assert!(
        stdout.contains("got hello"),
        "expected the command to read `hello` from the terminal\n--- stdout:\n{stdout}"
    );
}
