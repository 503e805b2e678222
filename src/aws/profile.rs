//! Parser for the AWS shared configuration and credentials files, following the AWS SDKs' rules.
//!
//! Reads, in order: `AWS_PROFILE` (unless `--profile` was given), `AWS_CONFIG_FILE`, `AWS_SHARED_CREDENTIALS_FILE`,
//! `HOME` (for `~/.aws/config`, `~/.aws/credentials` and a leading `~` in the two file variables). A file
//! larger than [`FILE_LIMIT`] (1 MiB) is an error.
//!
//! The format is the SDKs' INI dialect (pinned by the conformance vectors in `profile-parser-tests.json`):
//! - `#` or `;` at the start of a line comments it out; after a section header any `#`/`;` starts a comment,
//!   after a property value only one preceded by white space does.
//! - In the config file profiles are `[profile NAME]`, plus `[default]`, which `[profile default]` overrides
//!   entirely; `[sso-session NAME]` and `[services NAME]` are other sections. In the credentials file profiles
//!   are `[NAME]`. A section of the wrong form or with a name outside `A-Za-z0-9-/.%@_:+` is ignored.
//! - `key = value`, keys compared without regard to case; an indented line continues the value above it, and
//!   continues a property with an empty value as a `sub_key = value` sub-property.
//! - Sections met more than once are merged (the last value of a key wins); the credentials file wins over the
//!   config file.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use crate::env::Env;
use crate::error::Error;

/// The profile used when neither `--profile` nor `AWS_PROFILE` names one.
pub const DEFAULT_PROFILE: &str = "default";

/// White space as the profile format knows it (not Unicode white space).
const WHITESPACE: &[char] = &[' ', '\t'];
/// Comment characters.
const COMMENT: &[char] = &['#', ';'];

/// One profile (or other section) after merging: its name and its properties.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Profile {
    name: String,
    /// Keys in ASCII lower case; values as written (continuations joined with `\n`).
    properties: BTreeMap<String, String>,
}

impl Profile {
    /// The profile's (or section's) name, without any `profile ` prefix.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A property's value; keys are compared without regard to ASCII case. An empty value is `Some("")`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.properties.get(&key.to_ascii_lowercase()).map(String::as_str)
    }

    /// A sub-property: the `sub_key = value` lines indented below a `key =` line with an empty value. Sub-keys
    /// are compared without regard to ASCII case; the last definition wins.
    pub fn sub(&self, key: &str, sub_key: &str) -> Option<&str> {
        let mut lines = self.get(key)?.split('\n');
        if lines.next().is_some_and(|first| !first.is_empty()) {
            return None; // a plain value that happens to be continued, not a sub-property block
        }
        lines
            .rev()
            .filter_map(|line| split_property(line).ok())
            .find(|(name, _)| name.eq_ignore_ascii_case(sub_key))
            .map(|(_, value)| value)
    }

    /// The property keys (lower case), in sorted order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.properties.keys().map(String::as_str)
    }

    /// True when the profile has no properties.
    pub fn is_empty(&self) -> bool {
        self.properties.is_empty()
    }
}

/// Keys whose values are never shown in `Debug` output.
fn is_secret_key(key: &str) -> bool {
    // credential_process lines sometimes carry keys inline (`--secret ...`).
    key.contains("secret") || key.contains("token") || key == "credential_process"
}

impl fmt::Debug for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_map();
        for (key, value) in &self.properties {
            let shown: &dyn fmt::Debug = if is_secret_key(key) { &"** redacted **" } else { value };
            map.entry(key, shown);
        }
        map.finish()?;
        write!(f, " (profile {:?})", self.name)
    }
}

/// The profiles of the config and credentials files merged, with the selected profile's name.
#[derive(Clone, Debug, Default)]
pub struct ProfileSet {
    selected: String,
    profiles: BTreeMap<String, Profile>,
    /// `[sso-session NAME]` and `[services NAME]` sections, keyed by (kind, name).
    sections: BTreeMap<(String, String), Profile>,
    config_path: Option<PathBuf>,
    credentials_path: Option<PathBuf>,
    /// True when the profile was named on the command line (`--profile`).
    named_by_flag: bool,
}

/// Which file a text came from: they name profiles differently.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FileKind {
    Config,
    Credentials,
}

impl ProfileSet {
    /// Reads the config and credentials files the environment points at and selects `profile_override`, else
    /// `AWS_PROFILE`, else `default`. A missing file counts as empty; a file that exists but cannot be read, or
    /// does not parse, is an error.
    pub fn load(env: &Env, profile_override: Option<&str>) -> Result<ProfileSet, Error> {
        let selected = selected_profile(env, profile_override);
        let config_path = config_file(env);
        let credentials_path = credentials_file(env);
        let config = read_if_present(env, config_path.as_deref(), "AWS config file")?;
        let credentials = read_if_present(env, credentials_path.as_deref(), "AWS shared credentials file")?;
        let mut set = ProfileSet::parse(
            config_path.as_deref().zip(config.as_deref()),
            credentials_path.as_deref().zip(credentials.as_deref()),
            &selected,
        )?;
        set.config_path = config_path;
        set.credentials_path = credentials_path;
        set.named_by_flag = profile_override.is_some();
        Ok(set)
    }

    /// The selected profile's value for `key`, when that profile exists and sets it.
    pub fn value(&self, key: &str) -> Option<String> {
        self.selected().and_then(|p| p.get(key)).map(str::to_owned)
    }

    /// The config and credentials files for messages, joined by `conjunction` (`and`, `or`); without a home
    /// folder, says so instead of naming files that do not exist.
    pub fn files_for_messages(&self, conjunction: &str) -> String {
        match (self.config_path(), self.credentials_path()) {
            (None, None) => "no shared config or credentials file (HOME is not set, nor AWS_CONFIG_FILE or \
                             AWS_SHARED_CREDENTIALS_FILE)"
                .to_owned(),
            (config, credentials) => {
                let text = |path: Option<&Path>| {
                    path.map_or_else(|| "(none: HOME is not set)".to_owned(), |p| p.display().to_string())
                };
                format!("{} {conjunction} {}", text(config), text(credentials))
            }
        }
    }

    /// True when the selected profile was named with `--profile`: it then takes precedence over credentials in
    /// the environment, as in the AWS CLI ("an explicitly provided profile negates the environment").
    pub fn named_by_flag(&self) -> bool {
        self.named_by_flag
    }

    /// Parses the two files' text (each with the path used in error messages) and selects `selected`.
    pub fn parse(
        config: Option<(&Path, &str)>,
        credentials: Option<(&Path, &str)>,
        selected: &str,
    ) -> Result<ProfileSet, Error> {
        let mut set = ProfileSet {
            selected: selected.to_owned(),
            config_path: config.map(|(path, _)| path.to_path_buf()),
            credentials_path: credentials.map(|(path, _)| path.to_path_buf()),
            ..ProfileSet::default()
        };
        // Config first, so that credentials-file values win.
        if let Some((path, text)) = config {
            set.merge(FileKind::Config, parse_sections(path, text)?);
        }
        if let Some((path, text)) = credentials {
            set.merge(FileKind::Credentials, parse_sections(path, text)?);
        }
        Ok(set)
    }

    /// The selected profile's name (whether or not it exists).
    pub fn selected_name(&self) -> &str {
        &self.selected
    }

    /// The selected profile, `None` when no file defines it.
    pub fn selected(&self) -> Option<&Profile> {
        self.get(&self.selected)
    }

    /// A profile by name (names are case-sensitive).
    pub fn get(&self, name: &str) -> Option<&Profile> {
        self.profiles.get(name)
    }

    /// A non-profile section of the config file: `kind` is `sso-session` or `services`.
    pub fn section(&self, kind: &str, name: &str) -> Option<&Profile> {
        self.sections.get(&(kind.to_owned(), name.to_owned()))
    }

    /// The names of all profiles, sorted.
    pub fn profile_names(&self) -> impl Iterator<Item = &str> {
        self.profiles.keys().map(String::as_str)
    }

    /// True when neither file defines any profile.
    pub fn is_empty(&self) -> bool {
        self.profiles.is_empty()
    }

    /// The config file's path, when one was determined (it may not exist).
    pub fn config_path(&self) -> Option<&Path> {
        self.config_path.as_deref()
    }

    /// The credentials file's path, when one was determined (it may not exist).
    pub fn credentials_path(&self) -> Option<&Path> {
        self.credentials_path.as_deref()
    }

    /// Folds one file's sections into the set.
    fn merge(&mut self, kind: FileKind, sections: Vec<RawSection<'_>>) {
        let targets: Vec<Option<Target<'_>>> = sections.iter().map(|s| Target::classify(kind, s.header)).collect();
        // `[profile default]` anywhere in the config file replaces every `[default]` in it.
        let prefixed_default =
            targets.iter().any(|t| matches!(t, Some(Target::Profile { name: DEFAULT_PROFILE, prefixed: true })));
        for (section, target) in sections.into_iter().zip(targets) {
            let profile = match target {
                None => continue,
                Some(Target::Profile { name: DEFAULT_PROFILE, prefixed: false })
                    if kind == FileKind::Config && prefixed_default =>
                {
                    continue;
                }
                Some(Target::Profile { name, .. }) => self
                    .profiles
                    .entry(name.to_owned())
                    .or_insert_with(|| Profile { name: name.to_owned(), properties: BTreeMap::new() }),
                Some(Target::Section { kind, name }) => self
                    .sections
                    .entry((kind.to_owned(), name.to_owned()))
                    .or_insert_with(|| Profile { name: name.to_owned(), properties: BTreeMap::new() }),
            };
            for (key, value) in section.properties {
                if is_identifier(&key) {
                    profile.properties.insert(key, value);
                }
            }
        }
    }
}

/// Where a section's properties go.
#[derive(Debug, PartialEq, Eq)]
enum Target<'a> {
    Profile { name: &'a str, prefixed: bool },
    Section { kind: &'static str, name: &'a str },
}

impl<'a> Target<'a> {
    /// Sorts a section header (the text between the brackets) into a profile, another section, or `None`
    /// (ignored, as the SDKs ignore it).
    fn classify(kind: FileKind, header: &'a str) -> Option<Target<'a>> {
        let header = header.trim_matches(WHITESPACE);
        let (prefix, name) = match header.split_once(WHITESPACE) {
            Some((prefix, name)) => (Some(prefix), name.trim_matches(WHITESPACE)),
            None => (None, header),
        };
        if !is_identifier(name) {
            return None;
        }
        match (kind, prefix) {
            (FileKind::Credentials, None) => Some(Target::Profile { name, prefixed: false }),
            (FileKind::Credentials, Some(_)) => None,
            (FileKind::Config, None) if name == DEFAULT_PROFILE => Some(Target::Profile { name, prefixed: false }),
            (FileKind::Config, None) => None,
            (FileKind::Config, Some("profile")) => Some(Target::Profile { name, prefixed: true }),
            (FileKind::Config, Some("sso-session")) => Some(Target::Section { kind: "sso-session", name }),
            (FileKind::Config, Some("services")) => Some(Target::Section { kind: "services", name }),
            (FileKind::Config, Some(_)) => None,
        }
    }
}

/// Profile names and property keys: ASCII letters and digits and `-/.%@_:+`.
fn is_identifier(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || "-/.%@_:+".contains(c))
}

/// A section as written: the header text and its properties in order (keys lower-cased, not yet validated).
#[derive(Debug)]
struct RawSection<'a> {
    header: &'a str,
    properties: Vec<(String, String)>,
}

/// What is wrong with a `key = value` line.
#[derive(Debug, PartialEq, Eq)]
enum PropertyError {
    NoEquals,
    NoName,
}

impl PropertyError {
    /// The message, for a `property` or a `sub-property`.
    fn message(&self, what: &str) -> String {
        match self {
            PropertyError::NoEquals => format!("expected an '=' sign defining a {what} (key = value)"),
            PropertyError::NoName => format!("{what} did not have a name before '='"),
        }
    }
}

/// Splits the text of one file into sections; errors name the path and the 1-based line.
fn parse_sections<'a>(path: &Path, text: &'a str) -> Result<Vec<RawSection<'a>>, Error> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text); // a byte-order mark some editors write
    let mut sections: Vec<RawSection<'a>> = Vec::new();
    // `Some(is_sub_property)` while the last property of the last section may be continued.
    let mut continuable: Option<bool> = None;
    for (index, line) in text.lines().enumerate() {
        let error = |message: String| Error::Profile { path: path.to_path_buf(), line: index + 1, message };
        if line.trim_matches(WHITESPACE).is_empty() || line.starts_with(COMMENT) {
            continue;
        }
        if line.starts_with('[') {
            let header = strip_comment(line, false);
            let inner = header
                .strip_prefix('[')
                .and_then(|h| h.strip_suffix(']'))
                .ok_or_else(|| error("profile definition must end with ']'".into()))?;
            sections.push(RawSection { header: inner, properties: Vec::new() });
            continuable = None;
            continue;
        }
        let Some(section) = sections.last_mut() else {
            return Err(error("expected a profile definition such as [default] or [profile NAME] first".into()));
        };
        if line.starts_with(WHITESPACE) {
            let (Some(is_sub_property), Some((_, value))) = (continuable, section.properties.last_mut()) else {
                return Err(error(
                    "expected a property definition, found continuation (an indented line continues the property \
                     above it)"
                        .into(),
                ));
            };
            if is_sub_property {
                split_property(line).map_err(|e| error(e.message("sub-property")))?;
            }
            value.push('\n');
            value.push_str(line.trim_matches(WHITESPACE));
        } else {
            let (key, value) = split_property(line).map_err(|e| error(e.message("property")))?;
            continuable = Some(value.is_empty());
            section.properties.push((key.to_ascii_lowercase(), value.to_owned()));
        }
    }
    Ok(sections)
}

/// Splits `key = value` (comments after white space removed, both sides trimmed).
fn split_property(line: &str) -> Result<(&str, &str), PropertyError> {
    let line = strip_comment(line, true);
    let (key, value) = line.split_once('=').ok_or(PropertyError::NoEquals)?;
    let key = key.trim_matches(WHITESPACE);
    if key.is_empty() {
        return Err(PropertyError::NoName);
    }
    Ok((key, value.trim_matches(WHITESPACE)))
}

/// Trims a line and removes a trailing comment; with `needs_white_space` a comment character only starts a
/// comment after white space (property values may contain `#` and `;`).
fn strip_comment(line: &str, needs_white_space: bool) -> &str {
    let line = line.trim_matches(WHITESPACE);
    let mut after_white_space = false;
    for (index, c) in line.char_indices() {
        if COMMENT.contains(&c) && (after_white_space || !needs_white_space) {
            return line[..index].trim_matches(WHITESPACE);
        }
        after_white_space = c.is_whitespace();
    }
    line
}

/// The profile to use: `--profile`, else `AWS_PROFILE`, else `default`.
pub fn selected_profile(env: &Env, profile_override: Option<&str>) -> String {
    match profile_override {
        Some(name) => name.to_owned(),
        None => env.var("AWS_PROFILE").unwrap_or_else(|| DEFAULT_PROFILE.to_owned()),
    }
}

/// The config file: `AWS_CONFIG_FILE`, else `~/.aws/config`; `None` when it would be under an unknown home.
pub fn config_file(env: &Env) -> Option<PathBuf> {
    file_location(env, "AWS_CONFIG_FILE", "config")
}

/// The credentials file: `AWS_SHARED_CREDENTIALS_FILE`, else `~/.aws/credentials`; `None` when it would be
/// under an unknown home.
pub fn credentials_file(env: &Env) -> Option<PathBuf> {
    file_location(env, "AWS_SHARED_CREDENTIALS_FILE", "credentials")
}

fn file_location(env: &Env, variable: &str, file_name: &str) -> Option<PathBuf> {
    match env.var(variable) {
        Some(path) => expand_home(env, &path),
        None => Some(env.home()?.join(".aws").join(file_name)),
    }
}

/// Replaces a leading `~` (alone or before `/`) with the home folder; `None` when that is unknown.
fn expand_home(env: &Env, path: &str) -> Option<PathBuf> {
    match path.strip_prefix('~') {
        Some("") => env.home(),
        Some(rest) if rest.starts_with('/') => Some(env.home()?.join(rest.trim_start_matches('/'))),
        _ => Some(PathBuf::from(path)),
    }
}

/// The most a shared config or credentials file may hold: 1 MiB (real ones are a few KiB); larger is an error.
pub const FILE_LIMIT: u64 = 1024 * 1024;

/// A file's text, `None` when there is no path or no file; an error when it is larger than [`FILE_LIMIT`].
fn read_if_present(env: &Env, path: Option<&Path>, what: &str) -> Result<Option<String>, Error> {
    let Some(path) = path else { return Ok(None) };
    match env.read_to_string_capped(path, FILE_LIMIT) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(Error::Io { what: format!("{what} {}", path.display()), source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;
    use std::collections::BTreeMap as Map;

    /// The vectors of `file`, `None` without the conformance data.
    fn vectors(file: &str) -> Option<Value> {
        let path = crate::conformance_data()?.join(file);
        let text = std::fs::read_to_string(&path).expect("the conformance vectors are readable");
        Some(serde_json::from_str(&text).expect("the vectors are JSON"))
    }

    fn flatten<'a>(sections: impl Iterator<Item = &'a Profile>) -> Map<String, Map<String, String>> {
        sections.map(|p| (p.name.clone(), p.properties.clone())).collect()
    }

    fn expected_sections(value: Option<&Value>) -> Map<String, Map<String, String>> {
        let Some(Value::Object(sections)) = value else { return Map::new() };
        sections
            .iter()
            .map(|(name, props)| {
                let props = props.as_object().expect("properties are an object");
                let props = props.iter().map(|(k, v)| (k.clone(), v.as_str().expect("string").to_owned())).collect();
                (name.clone(), props)
            })
            .collect()
    }

    #[test]
    fn profile_parser_conformance() {
        let Some(vectors) = vectors("profile-parser-tests.json") else { return };
        let tests = vectors["tests"].as_array().expect("tests array");
        let config_path = Path::new("/home/.aws/config");
        let credentials_path = Path::new("/home/.aws/credentials");
        let mut passed = 0;
        let mut failures = Vec::new();
        for test in tests {
            let name = test["name"].as_str().expect("name");
            let input = &test["input"];
            let config = input["configFile"].as_str().map(|t| (config_path, t));
            let credentials = input["credentialsFile"].as_str().map(|t| (credentials_path, t));
            let parsed = ProfileSet::parse(config, credentials, DEFAULT_PROFILE);
            let output = &test["output"];
            let outcome = match (&parsed, output.get("errorContaining").and_then(Value::as_str)) {
                // Our messages are lower-case (the crate's style); the vectors capitalise the first word.
                (Err(e), Some(wanted)) if e.to_string().to_lowercase().contains(&wanted.to_lowercase()) => Ok(()),
                (Err(e), Some(wanted)) => Err(format!("error {e:?} does not contain {wanted:?}")),
                (Ok(set), Some(wanted)) => Err(format!("parsed {set:?}, expected an error containing {wanted:?}")),
                (Err(e), None) => Err(format!("unexpected error {e}")),
                (Ok(set), None) => {
                    let want_profiles = expected_sections(output["config"].get("profiles"));
                    let want_sso = expected_sections(output["config"].get("sso_sessions"));
                    let got_profiles = flatten(set.profiles.values());
                    let got_sso = flatten(set.sections.iter().filter(|((k, _), _)| k == "sso-session").map(|(_, p)| p));
                    if (&want_profiles, &want_sso) == (&got_profiles, &got_sso) {
                        Ok(())
                    } else {
                        Err(format!(
                            "expected {want_profiles:?} sso {want_sso:?}\n     got {got_profiles:?} sso {got_sso:?}"
                        ))
                    }
                }
            };
            match outcome {
                Ok(()) => passed += 1,
                Err(why) => failures.push(format!("{name}: {why}")),
            }
        }
        assert!(failures.is_empty(), "failing vectors:\n{}", failures.join("\n"));
        assert_eq!(passed, 65, "every profile parser vector passes");
    }

    #[test]
    fn file_location_conformance() {
        let Some(vectors) = vectors("file-location-tests.json") else { return };
        let tests = vectors["tests"].as_array().expect("tests array");
        let mut passed = 0;
        for test in tests.iter().filter(|t| t["platform"] == "linux") {
            let name = test["name"].as_str().expect("name");
            let pairs: Vec<(String, String)> = test["environment"]
                .as_object()
                .expect("environment object")
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().expect("string").to_owned()))
                .collect();
            let env = Env::from_pairs(&pairs);
            let want = |key: &str| test[key].as_str().map(PathBuf::from);
            assert_eq!(config_file(&env), want("configLocation"), "{name}");
            assert_eq!(credentials_file(&env), want("credentialsLocation"), "{name}");
            if let Some(profile) = test["profile"].as_str() {
                assert_eq!(selected_profile(&env, None), profile, "{name}");
            }
            passed += 1;
        }
        // The windows cases (USERPROFILE, HOMEDRIVE, backslashes) do not apply: lock-exec runs on Linux.
        assert_eq!(passed, 4, "every linux file location vector passes");
    }

    /// Parses a config file and returns each profile as `name: k=v, k=v` lines, or the error as `path:line: ..`.
    fn config(text: &str) -> String {
        match ProfileSet::parse(Some((Path::new("/c"), text)), None, DEFAULT_PROFILE) {
            Ok(set) => set
                .profiles
                .values()
                .map(|p| {
                    let props: Vec<String> = p.properties.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    format!("{}: {}", p.name, props.join(", "))
                })
                .collect::<Vec<_>>()
                .join("\n"),
            Err(e) => e.to_string(),
        }
    }

    fn check(input: &str, expected: &str) {
        assert_eq!(config(input), expected, "input: {input:?}");
    }

    #[test]
    fn config_table() {
        check("[profile x]\na = 1", "x: a=1");
        check("[x]\na = 1", ""); // config profiles need the prefix
        check("[default]\na = 1", "default: a=1");
        check("\n\n[default]\n# c\nno equals here", "/c:5: expected an '=' sign defining a property (key = value)");
        check("[profile x\na = 1", "/c:1: profile definition must end with ']'");
        check("\n a = 1", "/c:2: expected a profile definition such as [default] or [profile NAME] first");
        check("\u{feff}[default]\nA = 1\na = 2", "default: a=2");
        check("[profile x]\ns3 =\n  addressing_style = path\n  x=y", "x: s3=\naddressing_style = path\nx=y");
        check("[profile x]\ns3 =\n  bad", "/c:3: expected an '=' sign defining a sub-property (key = value)");
        check("[profile x]\nurl = http://a;b#c ; comment", "x: url=http://a;b#c");
    }

    #[test]
    fn credentials_file_names_profiles_without_prefix() {
        let set = ProfileSet::parse(
            Some((Path::new("/c"), "[profile x]\nregion = us-east-1\n")),
            Some((Path::new("/k"), "[x]\nregion = eu-west-1\n[profile y]\na = b")),
            "x",
        )
        .expect("valid files");
        assert_eq!(set.selected().and_then(|p| p.get("REGION")), Some("eu-west-1"));
        assert!(set.get("y").is_none());
        assert_eq!(set.profile_names().collect::<Vec<_>>(), ["x"]);
    }

    #[test]
    fn credentials_errors_name_their_file() {
        let error = ProfileSet::parse(None, Some((Path::new("/k"), "[x]\n= v")), "x").expect_err("no key");
        assert_eq!(error.to_string(), "/k:2: property did not have a name before '='");
    }

    #[test]
    fn sub_properties_and_sections() {
        let text = "[profile x]\nservices = dev\n[services dev]\ndynamodb =\n  endpoint_url = http://127.0.0.1:8000 \
                    # local\n  ENDPOINT_URL = http://127.0.0.1:9000\n[sso-session s]\nsso_region = us-east-1\n";
        let set = ProfileSet::parse(Some((Path::new("/c"), text)), None, "x").expect("valid config");
        let services = set.section("services", "dev").expect("services section");
        assert_eq!(services.sub("dynamodb", "endpoint_url"), Some("http://127.0.0.1:9000"));
        assert_eq!(services.sub("dynamodb", "missing"), None);
        assert_eq!(set.section("sso-session", "s").and_then(|s| s.get("sso_region")), Some("us-east-1"));
        assert!(set.get("dev").is_none());
        let continued = ProfileSet::parse(Some((Path::new("/c"), "[default]\na = b\n  c = d")), None, "default")
            .expect("valid config");
        assert_eq!(continued.selected().and_then(|p| p.sub("a", "c")), None);
    }

    #[test]
    fn load_reads_the_files_the_environment_names() {
        let root = std::env::temp_dir().join(format!("lock-exec-profile-{}", std::process::id()));
        let aws = root.join("home/.aws");
        std::fs::create_dir_all(&aws).expect("temp dir");
        std::fs::write(aws.join("config"), "[profile p]\nregion = us-west-2\n").expect("write config");
        let env = Env::from_pairs(&[("HOME", "/home"), ("AWS_PROFILE", "q")]).with_fs_root(&root);
        let set = ProfileSet::load(&env, Some("p")).expect("config parses, credentials file missing");
        assert_eq!(set.selected_name(), "p");
        assert_eq!(set.selected().and_then(|p| p.get("region")), Some("us-west-2"));
        assert_eq!(set.credentials_path(), Some(Path::new("/home/.aws/credentials")));
        assert_eq!(ProfileSet::load(&env, None).expect("loads").selected_name(), "q");

        let env = Env::from_pairs(&[("HOME", "/home"), ("AWS_CONFIG_FILE", "~/.aws/nope")]).with_fs_root(&root);
        assert!(ProfileSet::load(&env, None).expect("missing files are empty").is_empty());
        let env = Env::from_pairs::<&str, &str>(&[]).with_fs_root(&root);
        assert!(ProfileSet::load(&env, None).expect("no home, no files").is_empty());

        std::fs::write(aws.join("credentials"), b"[p]\n\xff\n").expect("write credentials");
        let env = Env::from_pairs(&[("HOME", "/home")]).with_fs_root(&root);
        let error = ProfileSet::load(&env, None).expect_err("a file that is not UTF-8 is an error, not empty");
        assert_eq!(error.to_string(), "cannot read AWS shared credentials file /home/.aws/credentials");
        std::fs::remove_dir_all(&root).expect("clean up");

        // A device other than /dev/null (an endless one here) is refused at once.
        let env = Env::from_pairs(&[("AWS_CONFIG_FILE", "/dev/zero")]);
        let error = ProfileSet::load(&env, None).expect_err("endless config file");
        assert_eq!(
            crate::error_chain(&error),
            "cannot read AWS config file /dev/zero: not a regular file (a character device)"
        );
    }

    #[test]
    fn debug_hides_secrets() {
        let text = "[default]\naws_access_key_id = AKID\naws_secret_access_key = SECRETKEY\naws_session_token = TOK\n";
        let set = ProfileSet::parse(None, Some((Path::new("/k"), text)), "default").expect("valid");
        let debug = format!("{set:?}");
        assert!(debug.contains("AKID"));
        assert!(!debug.contains("SECRETKEY") && !debug.contains("TOK"), "{debug}");
    }
}
