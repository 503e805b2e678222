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
            .finish()
    }
}

impl Env {
    /// The real process environment, file system and clock.
    pub fn real() -> Env {
        Env::default()
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

    /// The current time.
    pub fn now(&self) -> SystemTime {
        #[allow(clippy::disallowed_methods)] // the one place the real clock is read
        self.now.unwrap_or_else(SystemTime::now)
    }

    /// The user's home folder: `HOME`, else the password database's entry is not consulted (static binaries
    /// run as arbitrary uids in containers), so `None`.
    pub fn home(&self) -> Option<PathBuf> {
        self.var("HOME").map(PathBuf::from)
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
}
