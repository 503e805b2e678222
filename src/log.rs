//! The logger: zap-compatible JSON lines (`level`, `ts`, `msg`, then fields) or plain text, on stderr.
//!
//! Each line is written with one `write_all` on a locked stderr, so lines from the lease thread and the main
//! thread never interleave.

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// zap-compatible JSON lines.
    Json,
    /// `LEVEL message key=value` lines.
    Text,
}

/// Severity of a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Request-level detail, shown with `-v`.
    Debug,
    /// Normal progress.
    Info,
    /// Something went wrong but the run goes on.
    Warn,
    /// The run failed.
    Error,
}

impl Level {
    fn name(self) -> &'static str {
        match self {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }
}

/// A logger with fields repeated on every line (`key`), and context fields (`command`) that JSON lines repeat
/// too (as zap does in the Go tool) while text lines carry them only on a run's first line and on errors.
#[derive(Debug, Clone)]
pub struct Logger {
    format: Format,
    min_level: Level,
    /// Each field with whether text lines always carry it (false: a context field).
    base: Vec<(&'static str, Value, bool)>,
}

impl Logger {
    /// A logger in `format` that writes lines of `min_level` and above.
    pub fn new(format: Format, min_level: Level) -> Logger {
        Logger { format, min_level, base: Vec::new() }
    }

    /// A logger that adds `field` to every line.
    pub fn with(&self, field: &'static str, value: impl Into<Value>) -> Logger {
        let mut logger = self.clone();
        logger.base.push((field, value.into(), true));
        logger
    }

    /// A logger that adds the context `field` to every JSON line, and to the text lines written by
    /// [`Logger::first`] and at error level.
    pub fn with_context(&self, field: &'static str, value: impl Into<Value>) -> Logger {
        let mut logger = self.clone();
        logger.base.push((field, value.into(), false));
        logger
    }

    /// Logs a run's first line (or one about the command itself): in text format it carries the context fields
    /// too.
    pub fn first(&self, level: Level, msg: &str, fields: &[(&str, Value)]) {
        self.write(level, msg, fields, true);
    }

    /// True when lines of this level are written.
    pub fn enabled(&self, level: Level) -> bool {
        level >= self.min_level
    }

    /// Logs at debug level.
    pub fn debug(&self, msg: &str, fields: &[(&str, Value)]) {
        self.log(Level::Debug, msg, fields);
    }

    /// Logs at info level.
    pub fn info(&self, msg: &str, fields: &[(&str, Value)]) {
        self.log(Level::Info, msg, fields);
    }

    /// Logs at warn level.
    pub fn warn(&self, msg: &str, fields: &[(&str, Value)]) {
        self.log(Level::Warn, msg, fields);
    }

    /// Logs at error level.
    pub fn error(&self, msg: &str, fields: &[(&str, Value)]) {
        self.log(Level::Error, msg, fields);
    }

    /// Writes one line to stderr if the level is enabled. Write errors are ignored: a closed stderr must not
    /// change what happens to the lock or the child.
    pub fn log(&self, level: Level, msg: &str, fields: &[(&str, Value)]) {
        self.write(level, msg, fields, false);
    }

    fn write(&self, level: Level, msg: &str, fields: &[(&str, Value)], first: bool) {
        if !self.enabled(level) {
            return;
        }
        #[allow(clippy::disallowed_methods)] // log timestamps are the wall clock by definition
        let now = SystemTime::now();
        let line = self.line(now, level, msg, fields, first);
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    /// Formats one line, newline included (the context fields in text format only at error level).
    pub fn format_line(&self, now: SystemTime, level: Level, msg: &str, fields: &[(&str, Value)]) -> String {
        self.line(now, level, msg, fields, false)
    }

    /// Formats one line; `first`: a run's first line, which carries the context fields in text format too.
    fn line(&self, now: SystemTime, level: Level, msg: &str, fields: &[(&str, Value)], first: bool) -> String {
        let context = self.format == Format::Json || first || level >= Level::Error;
        let base = self.base.iter().filter(|(_, _, always)| *always || context).map(|(k, v, _)| (*k, v));
        let all = base.chain(fields.iter().map(|(k, v)| (*k, v)));
        match self.format {
            Format::Json => {
                // zap's order: level, ts, msg, then the fields (a serde_json Map would sort the keys).
                let ts = now.duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
                let mut line =
                    format!("{{\"level\":\"{}\",\"ts\":{},\"msg\":{}", level.name(), Value::from(ts), Value::from(msg));
                for (k, v) in all {
                    line.push_str(&format!(",{}:{}", Value::from(k), v));
                }
                // serde_json escapes C0 controls but passes DEL and C1 (U+0080..U+009F) through; those can only
                // sit inside strings here, where `\u00XX` is the same text.
                let mut line = escape_controls(&line, Escape::Json);
                line.push_str("}\n");
                line
            }
            Format::Text => {
                let stamp = crate::clock::rfc3339_ms(crate::clock::unix_ns(now));
                let mut line = format!("{stamp} {:<5} {msg}", level.name().to_uppercase());
                for (k, v) in all {
                    match v {
                        Value::String(s) if !s.is_empty() && !s.contains(char::is_whitespace) && !s.contains('"') => {
                            line.push_str(&format!(" {k}={s}"))
                        }
                        other => line.push_str(&format!(" {k}={other}")),
                    }
                }
                // One physical line per log line, whatever the message holds (server messages can span lines),
                // and no control character reaches the terminal (ESC sequences could drive it).
                let mut line = escape_controls(&line, Escape::Text);
                line.push('\n');
                line
            }
        }
    }
}

/// How [`escape_controls`] writes a control character.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Escape {
    /// `\n`, `\r`, `\t`, else `\xHH` (text lines).
    Text,
    /// `\u00HH` (inside JSON strings; serde_json has already escaped C0).
    Json,
}

/// `text` with every control character (C0, DEL, C1) written as an escape, so that no text from a server or a
/// lock item can drive the terminal, and every bidirectional formatting character and line or paragraph separator
/// as `\uHHHH`, so that none can make a line display in another order than it reads, or as two.
pub fn escape_controls(text: &str, style: Escape) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match (c, style) {
            (c, _) if reorders_display(c) => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            (c, _) if !c.is_control() => out.push(c),
            ('\n', Escape::Text) => out.push_str("\\n"),
            ('\r', Escape::Text) => out.push_str("\\r"),
            ('\t', Escape::Text) => out.push_str("\\t"),
            (c, Escape::Text) => out.push_str(&format!("\\x{:02x}", u32::from(c))),
            (c, Escape::Json) => out.push_str(&format!("\\u{:04x}", u32::from(c))),
        }
    }
    out
}

/// Unicode's bidirectional formatting characters (the Arabic letter mark, the LRM/RLM marks, the embeddings and
/// overrides, the isolates) and its line and paragraph separators: invisible, the first reorder how a terminal or
/// a viewer shows what follows them on the line ("Trojan Source"), the others break the line there in editors,
/// viewers and JavaScript (a forged second line) and start a new bidi paragraph. A key, a command line or a
/// holder's host name could disguise itself with them.
fn reorders_display(c: char) -> bool {
    matches!(
        c,
        '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
    )
}

/// The most bytes of display text (a command line, a host name) lock-exec stores in an item or puts in a log
/// field: a 480 KB command line must neither make the item too large for DynamoDB nor every log line huge.
pub const DISPLAY_LIMIT: usize = 1024;

/// `text` cut to at most [`DISPLAY_LIMIT`] bytes on a character boundary, with a marker giving the original
/// length (`... [480000 bytes]`); unchanged when it fits.
pub fn clip_display(text: &str) -> String {
    if text.len() <= DISPLAY_LIMIT {
        return text.to_owned();
    }
    let marker = format!("... [{} bytes]", text.len());
    let mut end = DISPLAY_LIMIT - marker.len();
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{marker}", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_text_is_clipped_on_a_character_boundary_with_its_length() {
        assert_eq!(clip_display("echo hi"), "echo hi");
        let exact = "x".repeat(DISPLAY_LIMIT);
        assert_eq!(clip_display(&exact), exact);
        let long = "é".repeat(300_000);
        let clipped = clip_display(&long);
        assert!(clipped.len() <= DISPLAY_LIMIT, "{}", clipped.len());
        assert!(clipped.ends_with("... [600000 bytes]"), "{}", &clipped[clipped.len() - 30..]);
        assert!(clipped.starts_with("éé"));
    }
    use std::time::Duration;

    const NOW: Duration = Duration::from_millis(1_700_000_000_250);

    #[test]
    fn json_lines_carry_zap_fields() {
        let logger = Logger::new(Format::Json, Level::Info).with("key", "k").with("command", "echo hi");
        let line = logger.format_line(UNIX_EPOCH + NOW, Level::Info, "running command", &[("fence", 7.into())]);
        assert!(line.ends_with('\n'));
        let value: Value = serde_json::from_str(&line).expect("a JSON line");
        assert_eq!(value["level"], "info");
        assert_eq!(value["ts"].as_f64(), Some(1_700_000_000.25));
        assert_eq!(value["msg"], "running command");
        assert_eq!(value["key"], "k");
        assert_eq!(value["command"], "echo hi");
        assert_eq!(value["fence"], 7);
        assert!(line.starts_with(r#"{"level":"info","ts":1700000000.25,"msg":"running command","key":"k""#), "{line}");
    }

    #[test]
    fn text_lines_quote_only_what_needs_it() {
        let logger = Logger::new(Format::Text, Level::Info).with("key", "k").with("command", "echo hi");
        let line = logger.format_line(UNIX_EPOCH + NOW, Level::Warn, "lock lost", &[("exit_code", 75.into())]);
        assert_eq!(line, "2023-11-14T22:13:20.250Z WARN  lock lost key=k command=\"echo hi\" exit_code=75\n");
    }

    #[test]
    fn context_fields_are_on_every_json_line_but_only_first_and_error_text_lines() {
        let text = Logger::new(Format::Text, Level::Info).with("key", "k").with_context("command", "echo hi");
        let at = UNIX_EPOCH + NOW;
        assert_eq!(
            text.line(at, Level::Info, "lock acquired", &[("fence", 1.into())], true),
            "2023-11-14T22:13:20.250Z INFO  lock acquired key=k command=\"echo hi\" fence=1\n"
        );
        assert_eq!(
            text.format_line(at, Level::Info, "lock released", &[]),
            "2023-11-14T22:13:20.250Z INFO  lock released key=k\n"
        );
        assert_eq!(text.format_line(at, Level::Warn, "w", &[]), "2023-11-14T22:13:20.250Z WARN  w key=k\n");
        assert!(text.format_line(at, Level::Error, "command failed", &[]).contains(" command=\"echo hi\""));
        let json = Logger::new(Format::Json, Level::Info).with("key", "k").with_context("command", "echo hi");
        let line = json.format_line(at, Level::Info, "lock released", &[]);
        assert!(line.contains(r#","key":"k","command":"echo hi"}"#), "{line}");
    }

    #[test]
    fn text_lines_stay_on_one_line() {
        let logger = Logger::new(Format::Text, Level::Info);
        let line = logger.format_line(UNIX_EPOCH + NOW, Level::Error, "a\nb\r\nc", &[("error", "x\ny".into())]);
        assert_eq!(line.matches('\n').count(), 1, "{line:?}");
        assert!(line.contains("a\\nb\\r\\nc") && line.contains(r#"error="x\ny""#), "{line:?}");
    }

    #[test]
    fn control_characters_are_escaped() {
        let text = Logger::new(Format::Text, Level::Info);
        let nasty = "a\u{1b}[2J\u{1b}]0;t\u{7}\tb\u{7f}\u{9b}31m";
        let line = text.format_line(UNIX_EPOCH + NOW, Level::Error, nasty, &[("error", nasty.into())]);
        let raw: Vec<char> = line.trim_end_matches('\n').chars().filter(|c| c.is_control()).collect();
        assert!(raw.is_empty(), "{line:?}");
        assert!(line.contains("a\\x1b[2J\\x1b]0;t\\x07\\tb\\x7f\\x9b31m"), "{line:?}");
        let json = Logger::new(Format::Json, Level::Info);
        let line = json.format_line(UNIX_EPOCH + NOW, Level::Error, nasty, &[("error", nasty.into())]);
        let raw: Vec<char> = line.trim_end_matches('\n').chars().filter(|c| c.is_control()).collect();
        assert!(raw.is_empty(), "{line:?}");
        let value: Value = serde_json::from_str(&line).expect("still JSON");
        assert_eq!(value["msg"], nasty);
        assert_eq!(value["error"], nasty);
    }

    /// "Trojan Source": a key, a command line or a holder's host name with RIGHT-TO-LEFT OVERRIDE and friends
    /// would display in another order than it reads; LINE SEPARATOR / PARAGRAPH SEPARATOR (neither C0/C1 controls
    /// nor bidi controls) break the line in editors, viewers and JavaScript, and U+2029 starts a new bidi paragraph:
    /// one log line could display as two, the rest reordered. Escaped in text, and JSON reads back the same text.
    #[test]
    fn characters_that_reorder_or_break_a_line_are_escaped() {
        let cases = [
            (
                "key\u{202e}gnp.exe\u{202c} host\u{2066}x\u{2069}\u{200f}\u{061c}",
                "key\\u202egnp.exe\\u202c host\\u2066x\\u2069\\u200f\\u061c",
            ),
            ("key\u{2028}level=info msg=ok\u{2029}\u{05d0} done", "key\\u2028level=info msg=ok\\u2029\u{05d0} done"),
        ];
        for (nasty, escaped) in cases {
            let text = Logger::new(Format::Text, Level::Info);
            let line = text.format_line(UNIX_EPOCH + NOW, Level::Error, nasty, &[("key", nasty.into())]);
            assert!(!line.chars().any(reorders_display), "{line:?}");
            assert!(line.contains(escaped), "{line:?}");
            let json = Logger::new(Format::Json, Level::Info);
            let line = json.format_line(UNIX_EPOCH + NOW, Level::Error, nasty, &[("key", nasty.into())]);
            assert!(!line.chars().any(reorders_display), "{line:?}");
            let value: Value = serde_json::from_str(&line).expect("still JSON");
            assert_eq!(value["msg"], nasty);
            assert_eq!(value["key"], nasty);
        }
    }

    #[test]
    fn levels_filter() {
        let quiet = Logger::new(Format::Json, Level::Error);
        assert!(!quiet.enabled(Level::Warn) && quiet.enabled(Level::Error));
        let normal = Logger::new(Format::Json, Level::Info);
        assert!(!normal.enabled(Level::Debug) && normal.enabled(Level::Info));
        assert!(Logger::new(Format::Json, Level::Debug).enabled(Level::Debug));
    }
}
