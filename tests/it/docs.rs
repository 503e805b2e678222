//! The documentation against the code: every log message the code can write has a row in the README's log
//! table.

use std::path::{Path, PathBuf};

/// The repository's root.
fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display())) {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            found.push(path);
        }
    }
}

/// The Rust string literal at the start of `text` (after its opening quote), with escapes and line continuations
/// resolved; `None` when it does not end.
fn string_literal(text: &str) -> Option<String> {
    let mut out = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(out),
            '\\' => match chars.next()? {
                '\n' => {
                    while chars.peek().is_some_and(|c| c.is_whitespace()) {
                        chars.next();
                    }
                }
                'n' => out.push('\n'),
                't' => out.push('\t'),
                other => out.push(other),
            },
            other => out.push(other),
        }
    }
    None
}

/// The first string argument of every `log.info(`, `log.warn(`, `log.error(`, `log.debug(` and
/// `log.first(Level::_, ` call in `source` (a `format!` string's `{...}` placeholders as `{}`); calls whose
/// message is not a literal (a fatal error's text) are skipped.
fn log_messages(source: &str) -> Vec<String> {
    let mut messages = Vec::new();
    for (at, _) in source.match_indices("log.") {
        let rest = &source[at + 4..];
        let Some(open) = ["info(", "warn(", "error(", "debug(", "first("].iter().find(|m| rest.starts_with(**m)) else {
            continue;
        };
        let mut rest = rest[open.len()..].trim_start();
        if *open == "first(" {
            let Some(comma) = rest.find(',') else { continue };
            rest = rest[comma + 1..].trim_start();
        }
        rest = rest.strip_prefix('&').unwrap_or(rest);
        if let Some(inner) = rest.strip_prefix("format!(") {
            rest = inner.trim_start();
        }
        if let Some(literal) = rest.strip_prefix('"').and_then(string_literal) {
            messages.push(placeholders(&literal));
            continue;
        }
        // Not a literal: a fatal error's text (documented apart), or an expression or variable whose possible
        // messages are literals: those of the argument (`if c { "a" } else { "b" }`) or of the variable's
        // last `let NAME = ...;` before the call. Anything else fails, so no message goes unchecked.
        if rest.starts_with("error_chain(") || rest.starts_with("crate::error_chain(") {
            continue;
        }
        let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
        let expression = if name.is_empty() || name == "if" {
            &rest[..rest.find(", &").unwrap_or(rest.len())]
        } else {
            let binding = source[..at].rfind(&format!("let {name} = ")).unwrap_or_else(|| {
                panic!("log call with a message that is neither a literal nor a local: {}", &rest[..40.min(rest.len())])
            });
            let statement = &source[binding..at];
            &statement[..statement.find(";\n").unwrap_or(statement.len())]
        };
        let before = messages.len();
        for (quote, _) in expression.match_indices('"') {
            if expression[..quote].ends_with('\\') || expression[..quote].matches('"').count() % 2 == 1 {
                continue;
            }
            if let Some(literal) = string_literal(&expression[quote + 1..]) {
                messages.push(placeholders(&literal));
            }
        }
        assert!(
            messages.len() > before,
            "no message literal found for the log call at {}",
            &rest[..40.min(rest.len())]
        );
    }
    messages
}

/// `text` with each `{...}` placeholder as `{}` (and `{{`/`}}` as braces).
fn placeholders(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                out.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                out.push('}');
            }
            '{' => {
                for c in chars.by_ref() {
                    if c == '}' {
                        break;
                    }
                }
                out.push_str("{}");
            }
            other => out.push(other),
        }
    }
    out
}

/// The `msg` column of the README's log table (section "Logs"), unescaped.
fn readme_log_rows(readme: &str) -> Vec<String> {
    let start = readme.find("\n## Logs\n").expect("a Logs section in the README");
    let section = &readme[start + 1..];
    let end = section[3..].find("\n## ").map_or(section.len(), |end| end + 3);
    section[..end]
        .lines()
        .filter_map(|line| line.strip_prefix("| `"))
        .filter_map(|cell| cell.split_once("` |").map(|(msg, _)| msg.replace("\\|", "|")))
        .collect()
}

/// True when `text` matches `pattern`, in which `*` stands for any text.
fn glob(pattern: &[char], text: &[char]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some(('*', rest)) => (0..=text.len()).any(|skip| glob(rest, &text[skip..])),
        Some((c, rest)) => text.first() == Some(c) && glob(rest, &text[1..]),
    }
}

/// A README row as a pattern: its documented placeholders, `...` and words in capitals (`SERVICE`, `HOST`), stand
/// for any text.
fn row_pattern(row: &str) -> Vec<char> {
    let row = row.replace("...", "*");
    let mut pattern = Vec::new();
    for word in row.split_inclusive(|c: char| !c.is_ascii_alphanumeric()) {
        let letters = word.trim_end_matches(|c: char| !c.is_ascii_alphanumeric());
        if letters.len() >= 3 && letters.chars().all(|c| c.is_ascii_uppercase()) {
            pattern.push('*');
            pattern.extend(word[letters.len()..].chars());
        } else {
            pattern.extend(word.chars());
        }
    }
    pattern
}

#[test]
fn readme_log_table_lists_every_message_the_code_writes() {
    let mut files = Vec::new();
    rust_files(&root().join("src"), &mut files);
    files.sort();
    let rows: Vec<Vec<char>> =
        readme_log_rows(&read(&root().join("README.md"))).iter().map(|r| row_pattern(r)).collect();
    let mut missing = Vec::new();
    let mut count = 0;
    for file in &files {
        for message in log_messages(&read(file)) {
            count += 1;
            let sample: Vec<char> = message.replace("{}", "X").chars().collect();
            if !rows.iter().any(|row| glob(row, &sample)) {
                missing.push(format!("{}: {message:?}", file.strip_prefix(root()).unwrap_or(file).display()));
            }
        }
    }
    assert!(count > 30, "only {count} log messages found in src/: is the extraction broken?");
    assert!(missing.is_empty(), "log messages without a row in the README's Logs table:\n{}", missing.join("\n"));
}

#[test]
fn log_message_extraction() {
    let source = "log.info(\"lock released\", &[]);\n self.log.warn(\n &format!(\"plain http to {service} at \\\n    {host}\"),\n &[]);\n log.error(&error_chain(&e), &[]);\n log.first(Level::Info, \"lock acquired\", &f);";
    assert_eq!(log_messages(source), ["lock released", "plain http to {} at {}", "lock acquired"]);
    let source = "let message = match x {\n a => \"lock item deleted\",\n _ => \"no lock item\",\n };\n log.info(message, &f);\n log.info(if c { \"table created\" } else { \"table exists\" }, &f);";
    assert_eq!(log_messages(source), ["lock item deleted", "no lock item", "table created", "table exists"]);
    assert!(glob(
        &row_pattern("plain http to SERVICE at HOST: ..."),
        &"plain http to X at X: X etc".chars().collect::<Vec<_>>()
    ));
    assert!(!glob(&row_pattern("lock released"), &"lock released!".chars().collect::<Vec<_>>()));
}

/// The man page renders without a groff warning (skipped, saying so, where groff is not installed: `make lint`
/// installs it) and documents every long flag the parser knows.
#[test]
fn man_page_renders_and_documents_every_flag() {
    let page = read(&root().join("man/lock-exec.1"));
    let rendered = std::process::Command::new("groff")
        .args(["-man", "-Tutf8", "-ww", "-z"])
        .arg(root().join("man/lock-exec.1"))
        .output();
    match rendered {
        Ok(out) => {
            assert!(out.status.success(), "groff failed: {out:?}");
            assert_eq!(String::from_utf8_lossy(&out.stderr), "", "groff warnings");
        }
        Err(e) => eprintln!("skipped the groff check: {e} (make lint installs groff)"),
    }
    let roff_text = page.replace("\\-", "-");
    for flag in lock_exec::cli::LONG_FLAGS {
        assert!(roff_text.contains(&format!("--{flag}")), "man/lock-exec.1 does not document --{flag}");
    }
}

/// GitHub's anchor for a heading: lowercase, punctuation but `-` and `_` dropped, spaces as `-`.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

#[test]
fn readme_internal_links_resolve() {
    let readme = read(&root().join("README.md"));
    let mut anchors: Vec<String> = Vec::new();
    let mut bases: Vec<String> = Vec::new();
    let mut in_code = false;
    for line in readme.lines() {
        if line.starts_with("```") {
            in_code = !in_code;
        }
        if in_code {
            continue;
        }
        if let Some(heading) = line.strip_prefix('#').map(|h| h.trim_start_matches('#')) {
            let base = anchor(heading);
            // a repeated heading gets -1, -2, ...
            let seen = bases.iter().filter(|b| **b == base).count();
            anchors.push(if seen == 0 { base.clone() } else { format!("{base}-{seen}") });
            bases.push(base);
        }
    }
    let broken: Vec<&str> = readme
        .match_indices("](#")
        .filter_map(|(at, _)| readme[at + 3..].split(')').next())
        .filter(|target| !anchors.iter().any(|a| a == target))
        .collect();
    assert!(broken.is_empty(), "README links to missing sections: {broken:?} (anchors: {anchors:?})");
    assert_eq!(anchor("What happens to the command's processes"), "what-happens-to-the-commands-processes");
}

/// `make demo` (scripts/demo.sh) runs against its own emulator whatever the caller's environment holds: before,
/// lock-exec inherited it, so a `LOCK_EXEC_TABLE` or an `AWS_ENDPOINT_URL_DYNAMODB` of the caller's sent the demo's
/// runs elsewhere (and with `AWS_IGNORE_CONFIGURED_ENDPOINT_URLS`, to AWS itself).
#[test]
fn the_demo_runs_against_its_emulator_whatever_the_caller_s_environment() {
    let out = std::process::Command::new(root().join("scripts/demo.sh"))
        .env("LOCK_EXEC_DEMO_BIN", env!("CARGO_BIN_EXE_lock-exec"))
        .env("LOCK_EXEC_TABLE", "not-the-demo-table")
        .env("AWS_ENDPOINT_URL_DYNAMODB", "http://127.0.0.1:1")
        // moto reads the profile; the readiness probe would use the proxy (a closed local port here).
        .env("AWS_PROFILE", "no-such-profile")
        .env("http_proxy", "http://127.0.0.1:1")
        .env("HTTP_PROXY", "http://127.0.0.1:1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .expect("run scripts/demo.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the demo failed: {}\n{stdout}\n{stderr}", out.status);
    assert!(
        stdout.trim_end().ends_with("== 1 of 2 runs executed the command =="),
        "the demo's last line:\n{stdout}\n{stderr}"
    );
}
