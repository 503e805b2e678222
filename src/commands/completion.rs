//! `completion bash|zsh|fish`: a shell completion script for the subcommands, their flags and flag values
//! (durations, log formats, shells), written from one table so the three shells offer the same.

use crate::cli::Shell;
use crate::error::Error;
use crate::exit::Exit;

/// What a flag takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Takes {
    /// Nothing: a switch.
    Nothing,
    /// A value without suggestions (a table name, a URL); its name.
    Value(&'static str),
    /// A duration: suggestions of common ones.
    Duration,
    /// One of these words.
    OneOf(&'static [&'static str]),
}

/// A flag: short letter, long name, what it takes, help, and the subcommands it belongs to (none: every one;
/// [`ALONE`]: only before any subcommand).
struct Flag {
    short: Option<char>,
    long: &'static str,
    takes: Takes,
    help: &'static str,
    only: &'static [&'static str],
}

const fn flag(short: Option<char>, long: &'static str, takes: Takes, help: &'static str) -> Flag {
    Flag { short, long, takes, help, only: &[] }
}

const fn run_flag(long: &'static str, takes: Takes, help: &'static str) -> Flag {
    Flag { short: None, long, takes, help, only: &["run"] }
}

/// `only` of a flag that goes alone, before any subcommand (`--version`).
const ALONE: &[&str] = &["(alone)"];

/// Suggested durations (any Go duration is accepted).
const DURATIONS: [&str; 7] = ["10s", "30s", "1m", "5m", "10m", "1h", "24h"];

/// The subcommands and what they do.
const SUBCOMMANDS: [(&str, &str); 9] = [
    ("run", "run a command holding the lock"),
    ("unlock", "force release a lock"),
    ("status", "show the lock item of a key"),
    ("list", "show every lock item"),
    ("table", "create the lock table"),
    ("doctor", "check configuration, table and permissions"),
    ("completion", "print a shell completion script"),
    ("version", "print the version"),
    ("help", "show help"),
];

/// Every flag.
const FLAGS: [Flag; 22] = [
    flag(Some('t'), "table", Takes::Value("table name"), "DynamoDB table"),
    flag(Some('r'), "region", Takes::Value("region"), "AWS region"),
    flag(Some('e'), "expire", Takes::Duration, "lease length"),
    flag(None, "endpoint-url", Takes::Value("URL"), "DynamoDB endpoint"),
    flag(None, "profile", Takes::Value("profile"), "shared config profile"),
    flag(None, "log-format", Takes::OneOf(&["json", "text"]), "log and output format"),
    flag(Some('q'), "quiet", Takes::Nothing, "errors only"),
    flag(Some('v'), "verbose", Takes::Nothing, "request-level debug lines"),
    flag(Some('h'), "help", Takes::Nothing, "show help"),
    Flag { short: Some('V'), long: "version", takes: Takes::Nothing, help: "print the version", only: ALONE },
    run_flag("shell", Takes::Nothing, "run COMMAND with /bin/sh -c"),
    run_flag("locked-exit-code", Takes::Value("exit code"), "exit status when the key is held"),
    run_flag("kill-after", Takes::Duration, "grace between a forwarded signal and SIGKILL"),
    run_flag("wait-descendants", Takes::Nothing, "keep the lock until every descendant has exited"),
    run_flag("clean-env-aws", Takes::Nothing, "remove AWS credential variables from the command's environment"),
    run_flag("wait", Takes::Duration, "wait up to this long for a held key"),
    run_flag("keep", Takes::Duration, "hold the lock at least this long after acquiring"),
    run_flag("owner", Takes::Value("owner id"), "stable owner identity"),
    run_flag("limit", Takes::Value("N"), "at most N holders at once"),
    Flag {
        short: None,
        long: "retain",
        // At least 1h (the default is 30 days).
        takes: Takes::OneOf(&["1h", "24h", "168h", "720h", "2160h"]),
        help: "keep unused items this long",
        only: &["run", "unlock"],
    },
    flag(None, "max-clock-skew", Takes::Duration, "largest clock difference allowed between hosts"),
    flag(None, "backend", Takes::OneOf(&["dynamodb"]), "the Go tool's backend flag (dynamodb only)"),
];

/// `unlock`'s own flag (it comes after [`FLAGS`] in the scripts).
const UNLOCK_DELETE: Flag =
    Flag { short: None, long: "delete", takes: Takes::Nothing, help: "delete the item", only: &["unlock"] };

/// The words after a subcommand that are not flags: `table create`, `completion SHELL`, `help SUBCOMMAND`.
const ACTIONS: [(&str, &[&str]); 3] = [
    ("table", &["create"]),
    ("completion", &["bash", "zsh", "fish"]),
    ("help", &["run", "unlock", "status", "list", "table", "doctor", "completion", "version"]),
];

fn flags() -> impl Iterator<Item = &'static Flag> {
    FLAGS.iter().chain(std::iter::once(&UNLOCK_DELETE))
}

/// `completion`: print the script.
pub fn completion(shell: Shell) -> Result<Exit, Error> {
    crate::output::print(&script(shell))?;
    Ok(Exit::Success)
}

/// The completion script for `shell`.
pub fn script(shell: Shell) -> String {
    match shell {
        Shell::Bash => bash(),
        Shell::Zsh => zsh(),
        Shell::Fish => fish(),
    }
}

fn spellings(flag: &Flag) -> Vec<String> {
    flag.short.map(|c| format!("-{c}")).into_iter().chain([format!("--{}", flag.long)]).collect()
}

fn bash() -> String {
    let words = |filter: &dyn Fn(&Flag) -> bool| {
        flags().filter(|f| filter(f)).flat_map(spellings).collect::<Vec<_>>().join(" ")
    };
    let global = words(&|f| f.only.is_empty());
    let alone = words(&|f| f.only == ALONE);
    let with_value = words(&|f| f.takes != Takes::Nothing);
    let mut value_cases = String::new();
    for f in flags() {
        let choices = match f.takes {
            Takes::Nothing => continue,
            Takes::Value(_) => String::new(),
            Takes::Duration => DURATIONS.join(" "),
            Takes::OneOf(words) => words.join(" "),
        };
        value_cases.push_str(&format!(
            "        {}) COMPREPLY=($(compgen -W \"{choices}\" -- \"$cur\")); return ;;\n",
            spellings(f).join("|")
        ));
    }
    let mut sub_flags = String::new();
    for (sub, _) in SUBCOMMANDS {
        let own = words(&|f| f.only.contains(&sub));
        if !own.is_empty() {
            sub_flags.push_str(&format!("        {sub}) flags=\"{own}\" ;;\n"));
        }
    }
    let mut actions = String::new();
    for (sub, words) in ACTIONS {
        actions.push_str(&format!(
            "        {sub}) if [[ $cur != -* && $positionals -eq 0 ]]; then COMPREPLY=($(compgen -W \"{}\" -- \"$cur\")); \
             return; fi ;;\n",
            words.join(" ")
        ));
    }
    let subcommands = SUBCOMMANDS.iter().map(|(name, _)| *name).collect::<Vec<_>>().join(" ");
    format!(
        r#"# bash completion for lock-exec: source <(lock-exec completion bash)
_lock_exec() {{
    local cur=${{COMP_WORDS[COMP_CWORD]}} prev=${{COMP_WORDS[COMP_CWORD-1]}}
    local i w sub="" dashes=0 positionals=0 flags=""
    COMPREPLY=()
    # --flag=value: bash splits the word at the `=` (COMP_WORDBREAKS)
    if [[ $cur == = ]]; then
        cur=""
    elif [[ $prev == = && COMP_CWORD -ge 2 ]]; then
        prev=${{COMP_WORDS[COMP_CWORD-2]}}
    fi
    case $prev in
{value_cases}    esac
    for ((i = 1; i < COMP_CWORD; i++)); do
        w=${{COMP_WORDS[i]}}
        if [[ $w == -- ]]; then dashes=$i; break; fi
        case " {with_value} " in
            *" $w "*) if [[ ${{COMP_WORDS[i+1]}} == = ]]; then ((i += 2)); else ((i++)); fi; continue ;;
        esac
        if [[ $w == -* ]]; then continue; fi
        if [[ -z $sub ]]; then sub=$w; else ((positionals++)); fi
    done
    if ((dashes)); then
        if ((COMP_CWORD == dashes + 1)); then COMPREPLY=($(compgen -c -- "$cur")); else COMPREPLY=($(compgen -f -- "$cur")); fi
        return
    fi
    if [[ -z $sub && $cur != -* ]]; then
        COMPREPLY=($(compgen -W "{subcommands}" -- "$cur"))
        return
    fi
    case $sub in
        "") flags="{alone}" ;;
{sub_flags}{actions}    esac
    if [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "{global} $flags" -- "$cur"))
    fi
}}
complete -F _lock_exec lock-exec
"#
    )
}

/// A zsh `_arguments` spec for a flag.
fn zsh_spec(flag: &Flag) -> String {
    let help = flag.help.replace('\'', "'\\''").replace('[', "\\[").replace(']', "\\]");
    let action = match flag.takes {
        Takes::Nothing => String::new(),
        Takes::Value(name) => format!(":{name}: "),
        Takes::Duration => format!(":duration:({})", DURATIONS.join(" ")),
        Takes::OneOf(words) => format!(":value:({})", words.join(" ")),
    };
    match flag.short {
        Some(c) => format!("'(-{c} --{long})'{{-{c},--{long}}}'[{help}]{action}'", long = flag.long),
        None => format!("'--{}[{help}]{action}'", flag.long),
    }
}

fn zsh() -> String {
    let global: Vec<String> = flags().filter(|f| f.only.is_empty()).map(zsh_spec).collect();
    let alone: Vec<String> = flags().filter(|f| f.only == ALONE).map(zsh_spec).collect();
    let subcommands: Vec<String> = SUBCOMMANDS.iter().map(|(name, help)| format!("'{name}:{help}'")).collect();
    let mut cases = String::new();
    for (sub, _) in SUBCOMMANDS {
        let own: Vec<String> = flags().filter(|f| f.only.contains(&sub)).map(zsh_spec).collect();
        let positional = match sub {
            "run" => "'1:key: ' '*::command:_normal'".to_owned(),
            "unlock" | "status" => "'1:key: '".to_owned(),
            _ => match ACTIONS.iter().find(|(name, _)| *name == sub) {
                Some((_, words)) => format!("'1:argument:({})'", words.join(" ")),
                None => String::new(),
            },
        };
        cases.push_str(&format!("        {sub}) _arguments -S $global {} {positional} ;;\n", own.join(" ")));
    }
    format!(
        r#"#compdef lock-exec
# zsh completion for lock-exec: lock-exec completion zsh > "${{fpath[1]}}/_lock-exec"
_lock_exec() {{
    local curcontext=$curcontext state line ret=1
    typeset -A opt_args
    local -a global subcommands
    global=(
        {global}
    )
    subcommands=(
        {subcommands}
    )
    _arguments -C $global {alone} '1:subcommand:->subcommand' '*::argument:->argument' && ret=0
    case $state in
    subcommand)
        _describe -t subcommands 'lock-exec subcommand' subcommands && ret=0
        ;;
    argument)
        curcontext=${{curcontext%:*:*}}:lock-exec-$words[1]:
        case $words[1] in
{cases}        esac
        ;;
    esac
    return ret
}}
if [[ $zsh_eval_context[-1] == loadautofunc ]]; then
    _lock_exec "$@"
else
    compdef _lock_exec lock-exec
fi
"#,
        global = global.join("\n        "),
        alone = alone.join(" "),
        subcommands = subcommands.join("\n        "),
    )
}

fn fish() -> String {
    let subcommands = SUBCOMMANDS.iter().map(|(name, _)| *name).collect::<Vec<_>>().join(" ");
    let quote = |text: &str| format!("'{}'", text.replace('\\', "\\\\").replace('\'', "\\'"));
    let mut out = String::from(
        "# fish completion for lock-exec: lock-exec completion fish > ~/.config/fish/completions/lock-exec.fish\n\
         complete -c lock-exec -f\n\
         complete -c lock-exec -n 'contains -- -- (commandline -opc)' -F\n",
    );
    for (name, help) in SUBCOMMANDS {
        out.push_str(&format!(
            "complete -c lock-exec -n 'not __fish_seen_subcommand_from {subcommands}' -a {name} -d {}\n",
            quote(help)
        ));
    }
    for f in flags() {
        let mut line = String::from("complete -c lock-exec");
        if f.only == ALONE {
            line.push_str(&format!(" -n 'not __fish_seen_subcommand_from {subcommands}'"));
        } else if !f.only.is_empty() {
            line.push_str(&format!(" -n '__fish_seen_subcommand_from {}'", f.only.join(" ")));
        }
        if let Some(c) = f.short {
            line.push_str(&format!(" -s {c}"));
        }
        line.push_str(&format!(" -l {}", f.long));
        match f.takes {
            Takes::Nothing => {}
            Takes::Value(_) => line.push_str(" -x"),
            Takes::Duration => line.push_str(&format!(" -x -a {}", quote(&DURATIONS.join(" ")))),
            Takes::OneOf(words) => line.push_str(&format!(" -x -a {}", quote(&words.join(" ")))),
        }
        line.push_str(&format!(" -d {}\n", quote(f.help)));
        out.push_str(&line);
    }
    for (sub, words) in ACTIONS {
        out.push_str(&format!(
            "complete -c lock-exec -n '__fish_seen_subcommand_from {sub}; and not __fish_seen_subcommand_from {}' \
             -a {}\n",
            words.join(" "),
            quote(&words.join(" "))
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_offered_value_is_accepted() {
        let env = crate::env::Env::from_pairs::<&str, &str>(&[]);
        let parses = |args: &[&str]| crate::cli::parse_from(args.iter().copied(), &env).is_ok();
        for (sub, words) in ACTIONS {
            for word in words {
                assert!(parses(&[sub, word]), "{sub} {word}");
            }
        }
        for flag in flags() {
            let values: &[&str] = match flag.takes {
                Takes::Duration => &DURATIONS,
                Takes::OneOf(words) => words,
                Takes::Nothing | Takes::Value(_) => continue,
            };
            let sub = flag.only.first().copied().unwrap_or("status");
            for value in values {
                let option = format!("--{}={value}", flag.long);
                let args: &[&str] = if sub == "run" { &[sub, "k", "true", &option] } else { &[sub, "k", &option] };
                assert!(parses(args), "{args:?}");
            }
        }
    }

    #[test]
    fn the_flag_table_matches_the_parser() {
        let mut ours: Vec<&str> = flags().map(|flag| flag.long).collect();
        let mut parsed = crate::cli::LONG_FLAGS.to_vec();
        ours.sort_unstable();
        parsed.sort_unstable();
        assert_eq!(ours, parsed);
    }

    use super::*;

    #[test]
    fn every_script_names_every_subcommand_and_flag() {
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let text = script(shell);
            for (name, _) in SUBCOMMANDS {
                assert!(text.contains(name), "{shell:?} lacks {name}");
            }
            for f in flags() {
                assert!(text.contains(f.long), "{shell:?} lacks --{}", f.long);
            }
            assert!(text.contains("1h") && text.contains("json text"), "{shell:?}: durations and formats");
        }
    }

    #[test]
    fn bash_registers_the_function() {
        let text = script(Shell::Bash);
        assert!(text.ends_with("complete -F _lock_exec lock-exec\n"));
        assert!(
            text.contains("-e|--expire) COMPREPLY=($(compgen -W \"10s 30s 1m 5m 10m 1h 24h\" -- \"$cur\"))"),
            "{text}"
        );
    }

    #[test]
    fn zsh_specs_quote_and_group() {
        assert_eq!(zsh_spec(&FLAGS[0]), "'(-t --table)'{-t,--table}'[DynamoDB table]:table name: '");
        assert_eq!(zsh_spec(&FLAGS[5]), "'--log-format[log and output format]:value:(json text)'");
        assert!(script(Shell::Zsh).starts_with("#compdef lock-exec\n"));
    }
}
