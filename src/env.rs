//! Seams for the process environment, the file system and the clock.
//!
//! Everything that reads an environment variable, a configuration file or the time goes through [`Env`], so
//! tests can hand in a fixed environment, a folder standing in for `/`, and a fixed clock.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// The environment lock-exec reads: variables, files and the clock. `Debug` shows variable names only: values
/// may be secrets.
#[derive(Clone, Default)]
pub struct Env {
    /// `None`: the real process environment.
    vars: Option<HashMap<String, String>>,
    /// Absolute paths are read below this folder when set (test fixtures laid out as a file system).
    fs_root: Option<PathBuf>,
    /// A fixed clock for tests.
    now: Option<SystemTime>,
    /// Milliseconds added to the clock: `LOCK_EXEC_TEST_CLOCK_OFFSET_MS`, honoured by debug builds only (the
    /// integration tests' way to give one lock-exec a skewed clock).
    offset_ms: i64,
}

impl std::fmt::Debug for Env {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Option<Vec<&str>> = self.vars.as_ref().map(|vars| vars.keys().map(String::as_str).collect());
        if let Some(names) = names.as_mut() {
            names.sort_unstable();
        }
        f.debug_struct("Env")
            .field("vars", &names.map_or_else(|| "<process environment>".to_owned(), |n| n.join(", ")))
            .field("fs_root", &self.fs_root)
            .field("now", &self.now)
            .field("offset_ms", &self.offset_ms)
            .finish()
    }
}

impl Env {
    /// The real process environment, file system and clock. A debug build shifts the clock by
    /// `LOCK_EXEC_TEST_CLOCK_OFFSET_MS` (a whole number of ms, negative for behind) when it is set: the
    /// integration tests' clock skew; a release build ignores the variable.
    pub fn real() -> Env {
        let env = Env::default();
        let offset_ms = if cfg!(debug_assertions) { env.test_clock_offset_ms() } else { 0 };
        Env { offset_ms, ..env }
    }

    /// `LOCK_EXEC_TEST_CLOCK_OFFSET_MS`, 0 when unset or not a whole number.
    fn test_clock_offset_ms(&self) -> i64 {
        self.var("LOCK_EXEC_TEST_CLOCK_OFFSET_MS").and_then(|v| v.parse().ok()).unwrap_or(0)
    }

    /// A fixed set of variables; files and the clock stay real.
    pub fn from_pairs<K: AsRef<str>, V: AsRef<str>>(pairs: &[(K, V)]) -> Env {
        let vars = pairs.iter().map(|(k, v)| (k.as_ref().to_owned(), v.as_ref().to_owned())).collect();
        Env { vars: Some(vars), ..Env::default() }
    }

    /// Reads absolute paths below `root` instead of `/`.
    pub fn with_fs_root(mut self, root: impl Into<PathBuf>) -> Env {
        self.fs_root = Some(root.into());
        self
    }

    /// Fixes the clock.
    pub fn with_now(mut self, now: SystemTime) -> Env {
        self.now = Some(now);
        self
    }

    /// The raw value of a variable, `None` when unset or not Unicode.
    pub fn var_raw(&self, name: &str) -> Option<String> {
        match &self.vars {
            Some(vars) => vars.get(name).cloned(),
            #[allow(clippy::disallowed_methods)] // the one place the real environment is read
            None => std::env::var(name).ok(),
        }
    }

    /// The value of a variable with surrounding white space removed; unset, blank and non-Unicode values are
    /// all `None` (as the AWS SDKs treat them).
    pub fn var(&self, name: &str) -> Option<String> {
        let value = self.var_raw(name)?;
        let trimmed = value.trim();
        (!trimmed.is_empty()).then(|| trimmed.to_owned())
    }

    /// A boolean variable: `true` (any case) is true, anything else or unset is false.
    pub fn flag(&self, name: &str) -> bool {
        self.var(name).is_some_and(|v| v.eq_ignore_ascii_case("true"))
    }

    /// The path a file is read from: absolute paths are moved under the fixture root when one is set.
    pub fn resolve_path(&self, path: &Path) -> PathBuf {
        match &self.fs_root {
            Some(root) if path.is_absolute() => root.join(path.strip_prefix("/").unwrap_or(path)),
            _ => path.to_path_buf(),
        }
    }

    /// Reads a whole file as UTF-8.
    pub fn read_to_string(&self, path: &Path) -> io::Result<String> {
        std::fs::read_to_string(self.resolve_path(path))
    }

    /// Reads a whole file as UTF-8, refusing one larger than `limit` bytes: at most `limit + 1` bytes are read
    /// (so a runaway file fails at once with bounded memory), and the error says the file is too large
    /// (`io::ErrorKind::FileTooLarge`, message `larger than N KiB` / `N MiB`).
    ///
    /// Only regular files are read. The file is opened without blocking (a named pipe with no writer would
    /// block the open for ever) and without becoming a controlling terminal; anything else is refused
    /// (`io::ErrorKind::InvalidInput`, message `not a regular file (a named pipe)`, `(a character device)`, ...),
    /// except `/dev/null` (the device, under any name), which reads as empty: `AWS_CONFIG_FILE=/dev/null` is a
    /// common way to switch a file off.
    pub fn read_to_string_capped(&self, path: &Path, limit: u64) -> io::Result<String> {
        use std::io::Read;
        use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(self.resolve_path(path))?;
        let metadata = file.metadata()?;
        let kind = metadata.file_type();
        if !kind.is_file() {
            if kind.is_char_device() && metadata.rdev() == libc::makedev(1, 3) {
                return Ok(String::new());
            }
            let what = match kind {
                k if k.is_fifo() => "a named pipe",
                k if k.is_char_device() => "a character device",
                k if k.is_block_device() => "a block device",
                k if k.is_socket() => "a socket",
                k if k.is_dir() => "a directory",
                _ => "not a file",
            };
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("not a regular file ({what})")));
        }
        let mut bytes = Vec::new();
        file.take(limit.saturating_add(1)).read_to_end(&mut bytes)?;
        if bytes.len() as u64 > limit {
            return Err(io::Error::new(io::ErrorKind::FileTooLarge, format!("larger than {}", size(limit))));
        }
        String::from_utf8(bytes).map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "not UTF-8 text"))
    }

    /// The current time (shifted in debug builds by `LOCK_EXEC_TEST_CLOCK_OFFSET_MS`, see [`Env::real`]).
    pub fn now(&self) -> SystemTime {
        #[allow(clippy::disallowed_methods)] // the one place the real clock is read
        let now = self.now.unwrap_or_else(SystemTime::now);
        let shift = std::time::Duration::from_millis(self.offset_ms.unsigned_abs());
        let shifted = if self.offset_ms >= 0 { now.checked_add(shift) } else { now.checked_sub(shift) };
        shifted.unwrap_or(now)
    }

    /// The user's home folder: `HOME`, else the password database's entry is not consulted (static binaries
    /// run as arbitrary uids in containers), so `None`.
    pub fn home(&self) -> Option<PathBuf> {
        self.var("HOME").map(PathBuf::from)
    }
}

/// A byte count for messages: `64 KiB`, `1 MiB`, or plain bytes.
pub fn size(bytes: u64) -> String {
    const KIB: u64 = 1024;
    const MIB: u64 = 1024 * KIB;
    match bytes {
        b if b >= MIB && b % MIB == 0 => format!("{} MiB", b / MIB),
        b if b >= KIB && b % KIB == 0 => format!("{} KiB", b / KIB),
        b => format!("{b} bytes"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blank_values_are_unset() {
        let env = Env::from_pairs(&[("A", " "), ("B", " x "), ("C", "")]);
        assert_eq!(env.var("A"), None);
        assert_eq!(env.var("B").as_deref(), Some("x"));
        assert_eq!(env.var("C"), None);
        assert_eq!(env.var("D"), None);
    }

    #[test]
    fn flags_are_true_only_for_true() {
        let env = Env::from_pairs(&[("A", "TRUE"), ("B", "1"), ("C", "false")]);
        assert!(env.flag("A"));
        assert!(!env.flag("B"));
        assert!(!env.flag("C"));
        assert!(!env.flag("D"));
    }

    #[test]
    fn debug_shows_names_not_values() {
        let env = Env::from_pairs(&[("AWS_SECRET_ACCESS_KEY", "very-secret"), ("A", "b")]);
        let debug = format!("{env:?}");
        assert!(debug.contains(r#"vars: "A, AWS_SECRET_ACCESS_KEY""#), "{debug}");
        assert!(!debug.contains("very-secret"), "{debug}");
    }

    #[test]
    fn absolute_paths_move_under_the_root() {
        let env = Env::from_pairs::<&str, &str>(&[]).with_fs_root("/fixture");
        assert_eq!(env.resolve_path(Path::new("/home/.aws/config")), Path::new("/fixture/home/.aws/config"));
        assert_eq!(env.resolve_path(Path::new("rel")), Path::new("rel"));
    }

    #[test]
    fn capped_reads_refuse_large_files_quickly() {
        let env = Env::from_pairs::<&str, &str>(&[]);
        let dir = std::env::temp_dir().join(format!("lock-exec-env-capped-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create a temporary folder");
        let file = dir.join("f");
        // A sparse gigabyte: only the cap is read.
        std::fs::File::create(&file).and_then(|f| f.set_len(1 << 30)).expect("make a large sparse file");
        let started = std::time::Instant::now();
        let e = env.read_to_string_capped(&file, 64 * 1024).expect_err("too large");
        assert_eq!(e.kind(), io::ErrorKind::FileTooLarge);
        assert_eq!(e.to_string(), "larger than 64 KiB");
        assert!(started.elapsed() < std::time::Duration::from_secs(2), "{:?}", started.elapsed());
        std::fs::write(&file, "12345").expect("write");
        assert_eq!(env.read_to_string_capped(&file, 5).ok().as_deref(), Some("12345"));
        assert_eq!(env.read_to_string_capped(&file, 4).map_err(|e| e.to_string()), Err("larger than 4 bytes".into()));
        std::fs::write(&file, [0xff, 0xfe]).expect("write");
        assert_eq!(env.read_to_string_capped(&file, 5).map_err(|e| e.kind()), Err(io::ErrorKind::InvalidData));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn capped_reads_take_regular_files_only_and_dev_null_as_empty() {
        let env = Env::from_pairs::<&str, &str>(&[]);
        let dir = std::env::temp_dir().join(format!("lock-exec-env-kinds-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create a temporary folder");
        let fifo = dir.join("fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status().expect("run mkfifo");
        assert!(made.success(), "mkfifo: {made}");
        let check = |path: &Path, expected: Result<&str, &str>| {
            let started = std::time::Instant::now();
            let got = env.read_to_string_capped(path, 1024);
            assert!(started.elapsed() < std::time::Duration::from_secs(2), "{path:?}: {:?}", started.elapsed());
            if let Err(e) = &got {
                assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{path:?}");
            }
            assert_eq!(got.as_deref().map_err(|e| e.to_string()), expected.map_err(str::to_owned), "{path:?}");
        };
        // No writer ever opens the pipe: a blocking open would never return.
        check(&fifo, Err("not a regular file (a named pipe)"));
        check(Path::new("/dev/zero"), Err("not a regular file (a character device)"));
        check(&dir, Err("not a regular file (a directory)"));
        check(Path::new("/dev/null"), Ok(""));
        let link = dir.join("null-link");
        std::os::unix::fs::symlink("/dev/null", &link).expect("make a symbolic link");
        check(&link, Ok(""));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_test_clock_offset_shifts_the_clock() {
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(10_000);
        let check = |value: &str, expected_ms: u64| {
            let env = Env::from_pairs(&[("LOCK_EXEC_TEST_CLOCK_OFFSET_MS", value)]);
            let env = Env { offset_ms: env.test_clock_offset_ms(), ..env }.with_now(at);
            let expected = std::time::UNIX_EPOCH + std::time::Duration::from_millis(expected_ms);
            assert_eq!(env.now(), expected, "{value:?}");
        };
        check("-3600000", 6_400_000);
        check("1500", 10_001_500);
        check("junk", 10_000_000);
        // Only `Env::real` reads it: a fixed environment keeps its clock.
        let env = Env::from_pairs(&[("LOCK_EXEC_TEST_CLOCK_OFFSET_MS", "5000")]).with_now(at);
        assert_eq!(env.now(), at);
    }

    #[test]
    fn sizes_read_well() {
        assert_eq!(size(64 * 1024), "64 KiB");
        assert_eq!(size(1024 * 1024), "1 MiB");
        assert_eq!(size(1000), "1000 bytes");
    }
}
