//! Standard output of the commands that print results (`status`, `list`, `doctor`, `completion`, `version`,
//! `help`): every write is checked, and nothing here can panic. A reader that went away (a broken pipe, as in
//! `lock-exec status k | grep -q held`) ends the output quietly: later writes are skipped and the command keeps
//! the exit code it would have had, as ripgrep does. Any other failure (`/dev/full`) is [`Error::Output`], exit 74.
//! A stdout closed by the caller (`>&-`) never reaches here: the Rust runtime opens `/dev/null` on a closed fd 0,
//! 1 or 2 before `main`, so that output is discarded.

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::Error;

/// Set once a write found the reader gone.
static READER_GONE: AtomicBool = AtomicBool::new(false);

/// Writes `text` to standard output and flushes it.
pub fn print(text: &str) -> Result<(), Error> {
    write_to(&mut io::stdout().lock(), text)
}

/// True once a write found the reader gone: a command producing output in parts (`list`, page by page) stops
/// there instead of doing work no one will read.
pub fn reader_gone() -> bool {
    READER_GONE.load(Ordering::Relaxed)
}

/// Writes one line to standard error, ignoring any failure (there is nowhere left to report it): for the few
/// messages written before a logger exists. `eprintln!` would panic on a full or broken stderr.
pub fn error_line(text: &str) {
    let mut line = String::with_capacity(text.len() + 1);
    line.push_str(text);
    line.push('\n');
    let _ = io::stderr().lock().write_all(line.as_bytes());
}

fn write_to(out: &mut impl Write, text: &str) -> Result<(), Error> {
    if READER_GONE.load(Ordering::Relaxed) {
        return Ok(());
    }
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
            READER_GONE.store(true, Ordering::Relaxed);
            Ok(())
        }
        Err(e) => Err(Error::Output(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Failing(io::ErrorKind);

    impl Write for Failing {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::from(self.0))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_full_disk_is_an_error_and_a_gone_reader_is_not() {
        let full = write_to(&mut Failing(io::ErrorKind::StorageFull), "x").expect_err("a full disk fails");
        assert_eq!(full.exit().code(), 74);
        assert!(full.to_string().starts_with("cannot write to standard output"), "{full}");
        assert!(write_to(&mut Failing(io::ErrorKind::BrokenPipe), "x").is_ok());
        // Once the reader is gone, nothing more is written (not even to a writer that would fail otherwise).
        assert!(write_to(&mut Failing(io::ErrorKind::StorageFull), "x").is_ok());
        READER_GONE.store(false, Ordering::Relaxed);
    }
}
