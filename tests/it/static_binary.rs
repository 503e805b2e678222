//! The static musl binary that `scripts/test.sh` builds with `scripts/static.sh` and names in
//! `LOCK_EXEC_STATIC_BIN`, run in a chroot that holds only itself and `/etc/hosts` and `/etc/resolv.conf`: no
//! shell, no C library, no `/dev` and no `/proc` (it needs none of them). As root the tests use
//! `chroot --userspec=65534:65534` (the image's user); otherwise `unshare --user --map-root-user chroot`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lock_exec::Env;

use crate::support::{Case, Outcome, Running, signal};

/// The static binary's triple.
const STATIC_TARGET: &str = "x86_64-unknown-linux-musl";

/// The static binary, from `LOCK_EXEC_STATIC_BIN`; fails the test when it is not set or not a file.
fn static_binary() -> PathBuf {
    let path = Env::real().var("LOCK_EXEC_STATIC_BIN").unwrap_or_else(|| {
        panic!(
            "LOCK_EXEC_STATIC_BIN is not set: the static-binary tests need the musl build; run them with \
             scripts/test.sh, which builds it with scripts/static.sh and sets the variable"
        )
    });
    let path = PathBuf::from(path);
    assert!(path.is_file(), "LOCK_EXEC_STATIC_BIN={} is not a file; run scripts/test.sh", path.display());
    path
}

/// `lock-exec VERSION (commit COMMIT, TRIPLE)`, as built from the same tree as this test crate.
fn version_line(triple: &str) -> String {
    format!("lock-exec {} (commit {}, {triple})\n", env!("CARGO_PKG_VERSION"), env!("LOCK_EXEC_COMMIT"))
}

/// A chroot folder `root` in the case's temp folder holding only the static binary as `/lock-exec` and, when
/// `with_etc`, an `/etc/hosts` that maps `lock-exec-emulator` to 127.0.0.1 and an `/etc/resolv.conf` naming only 127.0.0.1.
fn chroot(case: &Case, with_etc: bool) -> PathBuf {
    let root = case.path("root");
    std::fs::create_dir_all(&root).expect("create the chroot folder");
    std::fs::copy(static_binary(), root.join("lock-exec")).expect("copy the static binary into the chroot");
    if with_etc {
        std::fs::create_dir_all(root.join("etc")).expect("create etc in the chroot");
        std::fs::write(root.join("etc/hosts"), "127.0.0.1 lock-exec-emulator\n").expect("write /etc/hosts");
        std::fs::write(root.join("etc/resolv.conf"), "nameserver 127.0.0.1\n").expect("write /etc/resolv.conf");
    }
    root
}

/// Every path under `root`, relative and sorted.
fn listing(root: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).expect("list the chroot") {
            let path = entry.expect("a chroot entry").path();
            out.push(path.strip_prefix(root).expect("under the root").display().to_string());
            if path.is_dir() {
                walk(root, &path, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

/// The effective user id, from `/proc/self/status`.
fn effective_uid() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let line = status.lines().find(|l| l.starts_with("Uid:")).expect("a Uid: line");
    line.split_whitespace().nth(2).and_then(|uid| uid.parse().ok()).expect("an effective uid")
}

/// `chroot` itself (the binary gets a cleared environment, so no PATH lookup).
fn chroot_program() -> &'static str {
    ["/usr/sbin/chroot", "/usr/bin/chroot", "/sbin/chroot"]
        .into_iter()
        .find(|p| Path::new(p).is_file())
        .expect("chroot(8) is installed (Debian: coreutils)")
}

/// Runs `/lock-exec ARGS...` chrooted into `root` with exactly `env`, to its end.
fn run_in(case: &Case, root: &Path, args: &[&str], env: BTreeMap<&'static str, String>) -> Outcome {
    spawn_in(case, root, args, env).wait(Duration::from_secs(30))
}

/// Starts `/lock-exec ARGS...` chrooted into `root` with exactly `env` (chroot and unshare exec it: the process
/// is lock-exec's).
fn spawn_in(case: &Case, root: &Path, args: &[&str], env: BTreeMap<&'static str, String>) -> Running {
    let command = chroot_command(root, args);
    case.spawn_program(Path::new(command[0]), &command[1..], env)
}

/// The command line that runs `/lock-exec ARGS...` chrooted into `root`: as root, `chroot` as user 65534 (as the
/// image runs it, Dockerfile's USER); otherwise inside `unshare --user --map-root-user`.
fn chroot_command<'a>(root: &'a Path, args: &[&'a str]) -> Vec<&'a str> {
    let root = root.to_str().expect("temp paths are UTF-8");
    let mut full = if effective_uid() == 0 {
        vec![chroot_program(), "--userspec=65534:65534", root, "/lock-exec"]
    } else {
        vec!["/usr/bin/unshare", "--user", "--map-root-user", chroot_program(), root, "/lock-exec"]
    };
    full.extend_from_slice(args);
    full
}

/// A chroot without `/etc/hosts` or `/etc/resolv.conf` and the environment naming `lock-exec-emulator`: no lookup
/// can succeed, and each costs musl's DNS timeout (5 s with no name server on 127.0.0.1:53), so one attempt only.
fn unresolvable(case: &Case) -> (PathBuf, BTreeMap<&'static str, String>) {
    let mut env = chroot_env(case);
    env.insert("AWS_MAX_ATTEMPTS", "1".into());
    (chroot(case, false), env)
}

/// The case's environment with the endpoint named `lock-exec-emulator` (resolved through the chroot's `/etc/hosts`) and
/// no PATH or HOME (nothing to find there).
fn chroot_env(case: &Case) -> BTreeMap<&'static str, String> {
    let mut env = case.env();
    let port = crate::support::endpoint().rsplit(':').next().expect("the endpoint has a port").to_owned();
    env.insert("AWS_ENDPOINT_URL", format!("http://lock-exec-emulator:{port}"));
    env.remove("PATH");
    env.remove("HOME");
    env
}

#[test]
fn version_names_the_commit_and_the_target() {
    let case = Case::new("version_line");
    let out = case.run_with(&["version"], |_| {});
    out.expect_code(0);
    out.check("version line", version_line(env!("LOCK_EXEC_TARGET")), out.stdout.clone());
    let commit = env!("LOCK_EXEC_COMMIT");
    let hash = commit.strip_suffix("-dirty").unwrap_or(commit);
    let well_formed = commit == "unknown" || (hash.len() >= 7 && hash.chars().all(|c| c.is_ascii_hexdigit()));
    out.check(&format!("commit {commit:?} is a short hash, -dirty or unknown"), true, well_formed);

    let root = chroot(&case, false);
    let out = run_in(&case, &root, &["--version"], BTreeMap::new());
    out.expect_code(0);
    out.check("static binary's version line", version_line(STATIC_TARGET), out.stdout.clone());
}

#[test]
fn static_binary_runs_a_lock_cycle_in_a_chroot_without_a_shell() {
    let case = Case::new("chroot_cycle");
    let root = chroot(&case, true);
    let contents = ["etc", "etc/hosts", "etc/resolv.conf", "lock-exec"];
    assert_eq!(listing(&root), contents, "the chroot holds only the binary and /etc/hosts, /etc/resolv.conf");
    let table = case.table().to_owned();

    // The command is an argv run without any shell: there is none in the chroot.
    let out = run_in(&case, &root, &["-t", &table, "run", "cycle", "--", "/lock-exec", "version"], chroot_env(&case));
    out.expect_code(0);
    out.check("the command's output", version_line(STATIC_TARGET), out.stdout.clone());
    for msg in ["lock acquired", "command succeeded", "lock released"] {
        out.log(msg);
    }
    let out = run_in(&case, &root, &["-t", &table, "status", "cycle"], chroot_env(&case));
    out.expect_state("free");
    // No /proc in the chroot: the host name comes from uname, as the kernel has it.
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("read the host name");
    out.check("the last run's host", serde_json::json!(host.trim()), out.stdout_json()["last_host"].clone());

    // A second run inside the first one finds the key held and does not run its command.
    let inner = ["/lock-exec", "-t", &table, "run", "--locked-exit-code", "7", "cycle", "--", "/lock-exec", "version"];
    let mut args = vec!["-t", &table, "run", "cycle", "--"];
    args.extend(inner);
    let out = run_in(&case, &root, &args, chroot_env(&case));
    out.expect_code(7);
    out.check("the inner command did not run", "", out.stdout.as_str());
    out.expect_stderr_contains("did not run command. key is locked");
    assert_eq!(listing(&root), contents, "the runs left nothing in the chroot");
}

#[test]
fn unresolvable_endpoint_host_is_one_clear_line() {
    let case = Case::new("chroot_unresolvable");
    let (root, env) = unresolvable(&case);
    let out = run_in(&case, &root, &["-t", case.table(), "status", "dns"], env);
    out.expect_code(69);
    let errors: Vec<String> = out
        .logs()
        .iter()
        .filter(|line| line["level"] == "error")
        .map(|line| line["msg"].as_str().unwrap_or_default().to_owned())
        .collect();
    let [error] = errors.as_slice() else { out.fail("one error line", &1, &errors) };
    let expected = "cannot resolve host \"lock-exec-emulator\": no address found in /etc/hosts or by DNS \
                    (/etc/hosts and /etc/resolv.conf missing)";
    out.check(&format!("the error names the host and the files: {error}"), true, error.contains(expected));
    out.check("not a timeout", false, error.contains("timeout"));
}

/// A `run` whose endpoint host does not resolve sent nothing: it fails after one lookup, without the cleanup
/// release that follows an acquire whose outcome is unknown (a second lookup, as long again).
#[test]
fn a_run_whose_endpoint_host_does_not_resolve_sends_no_cleanup_release() {
    let case = Case::new("chroot_unresolvable_run");
    let (root, env) = unresolvable(&case);
    let out = run_in(&case, &root, &["-v", "-t", case.table(), "run", "dns", "--", "/lock-exec", "version"], env);
    out.expect_code(69);
    let requests = out.logs().iter().filter(|line| line["msg"] == "dynamodb request").count();
    out.check("DynamoDB requests tried (the acquire's one attempt)", 1, requests);
    let cleanups: Vec<String> =
        out.messages().into_iter().filter(|message| message.starts_with("acquire abandoned")).collect();
    out.check("cleanup log lines", Vec::<String>::new(), cleanups);
}

/// SIGTERM while the acquire waits for a name lookup that will fail (5 s in musl with no name server): the
/// cleanup release cannot wait past its budget for a lookup of its own, so lock-exec is gone within about a
/// second, as the README promises for a stop signal before the command starts.
#[test]
fn a_stop_signal_during_a_stalled_name_lookup_ends_the_run_within_its_cleanup_budget() {
    let case = Case::new("chroot_unresolvable_sigterm");
    let (root, env) = unresolvable(&case);
    let running = spawn_in(&case, &root, &["-t", case.table(), "run", "dns", "--", "/lock-exec", "version"], env);
    std::thread::sleep(Duration::from_secs(1));
    signal(running.pid(), libc::SIGTERM);
    let sent = Instant::now();
    let out = running.wait(Duration::from_secs(30));
    let took = sent.elapsed();
    out.check(
        "lock-exec died of SIGTERM",
        Some(libc::SIGTERM),
        std::os::unix::process::ExitStatusExt::signal(&out.status),
    );
    out.check(
        &format!("gone within 3 s of SIGTERM (took {took:?}; the lookup alone takes 5 s)"),
        true,
        took < Duration::from_secs(3),
    );
}

/// A short run with static keys and an endpoint named in `/etc/hosts` (a lookup through the C library) creates
/// exactly three threads (signals, the DynamoDB worker, the supervisor) and none to resolve the name: it is looked
/// up on the calling thread. Counted by strace (lock-exec's grandparent here: strace, then chroot).
#[test]
fn a_short_run_resolves_its_endpoint_without_a_thread() {
    let case = Case::new("chroot_threads");
    let root = chroot(&case, true);
    let trace = case.file("strace.out");
    let mut args = vec!["-f", "-qq", "-o", &trace, "-e", "trace=clone,clone3"];
    args.extend(chroot_command(&root, &["-t", case.table(), "run", "threads", "--", "/lock-exec", "version"]));
    let out = case.spawn_program(Path::new("strace"), &args, chroot_env(&case)).wait(Duration::from_secs(30));
    out.expect_code(0);
    let text = std::fs::read_to_string(&trace).expect("read strace's output");
    let threads = text.lines().filter(|line| line.contains("CLONE_THREAD")).count();
    out.check(&format!("threads created (strace):\n{text}"), 3, threads);
}

/// `scripts/link-ordered.sh` (the static build's linker) hands lld every numbered form (`NAME.N`, LLVM's local
/// names) of each name in the hot list, found in the objects being linked, right after the name itself; a
/// numbered function whose name is not in the list stays out. With the numbered names listed as they were,
/// every later commit shifted the numbers and the hot code scattered (peak RSS 1.34 to 1.66 MiB). Objects named
/// in a response file (`@FILE`, rustc's form for a long command line) count too, and a `TMPDIR` that does not
/// exist does not fail the link.
#[test]
fn the_static_link_orders_the_numbered_forms_of_each_hot_name() {
    let dir = crate::support::TempDir::new("link-ordered");
    let path = |name: &str| dir.path.join(name);
    let assembly = ".text\n.globl plain_hot\nplain_hot: ret\nhot_fn.7: ret\nhot_fn.12: ret\ncold_fn.3: ret\n";
    std::fs::write(path("code.s"), assembly).expect("write the assembly");
    let compiled = std::process::Command::new("cc")
        .arg("-c")
        .arg(path("code.s"))
        .arg("-o")
        .arg(path("code.o"))
        .status()
        .expect("run cc (the static build needs it too)");
    assert!(compiled.success(), "cc -c code.s: {compiled}");
    std::fs::write(path("hot.txt"), "hot_fn\nplain_hot\n").expect("write the hot list");
    // The driver stands in for cc: it keeps the ordering file it was given.
    let driver =
        "#!/bin/sh\nfor a; do case $a in -Wl,--symbol-ordering-file=*) cp \"${a#*=}\" \"$KEEP\";; esac; done\n";
    std::fs::write(path("driver"), driver).expect("write the driver");
    let executable = std::os::unix::fs::PermissionsExt::from_mode(0o755);
    std::fs::set_permissions(path("driver"), executable).expect("make the driver executable");
    // rustc escapes a response file's spaces and backslashes with a backslash.
    let response = format!("{}\n-o\n{}\n", path("code.o").display(), path("out").display()).replace(' ', "\\ ");
    std::fs::write(path("args"), response).expect("write the response file");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/link-ordered.sh");
    let object = path("code.o").display().to_string();
    let out = path("out").display().to_string();
    let response_file = format!("@{}", path("args").display());
    let expected = "hot_fn\nhot_fn.12\nhot_fn.7\nplain_hot\n";
    for args in [vec![object.as_str(), "-o", out.as_str()], vec![response_file.as_str()]] {
        let _ = std::fs::remove_file(path("order.txt"));
        let linked = std::process::Command::new("bash")
            .arg(&script)
            .args(&args)
            .env("LOCK_EXEC_LINK_CC", path("driver"))
            .env("LOCK_EXEC_HOT_SYMBOLS", path("hot.txt"))
            .env("KEEP", path("order.txt"))
            .env("TMPDIR", path("no-such-dir"))
            .status()
            .expect("run scripts/link-ordered.sh");
        assert!(linked.success(), "link-ordered.sh {args:?}: {linked}");
        let order = std::fs::read_to_string(path("order.txt")).expect("the driver kept the ordering file");
        assert_eq!(order, expected, "{args:?}");
    }
    let left: Vec<_> = std::fs::read_dir(&dir.path)
        .expect("list the folder")
        .filter_map(|entry| entry.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .filter(|name| name.starts_with(".lock-exec"))
        .collect();
    assert!(left.is_empty(), "scratch files left: {left:?}");
}

/// `scripts/static.sh` links x86_64 through `scripts/link-ordered.sh`, and a linker the caller set for the
/// target (`CARGO_TARGET_X86_64_UNKNOWN_LINUX_MUSL_LINKER`) stays the one that does the link. A stand-in `cargo`
/// records what the build would get and puts the static binary in place.
#[test]
fn the_static_build_keeps_a_linker_the_caller_chose() {
    let dir = crate::support::TempDir::new("static-linker");
    let path = |name: &str| dir.path.join(name);
    std::fs::create_dir_all(path("bin")).expect("create bin");
    let cargo = format!(
        "#!/bin/sh\nenv > '{seen}'\nmkdir -p \"$CARGO_TARGET_DIR/{STATIC_TARGET}/release\"\ncp '{binary}' \
         \"$CARGO_TARGET_DIR/{STATIC_TARGET}/release/lock-exec\"\n",
        seen = path("seen").display(),
        binary = static_binary().display(),
    );
    std::fs::write(path("bin/cargo"), cargo).expect("write the stand-in cargo");
    let executable = std::os::unix::fs::PermissionsExt::from_mode(0o755);
    std::fs::set_permissions(path("bin/cargo"), executable).expect("make it executable");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let search = format!("{}:{}", path("bin").display(), Env::real().var("PATH").unwrap_or_default());
    let built = std::process::Command::new("bash")
        .arg(root.join("scripts/static.sh"))
        .arg("x86_64")
        .env("PATH", search)
        .env("CARGO_TARGET_DIR", path("target"))
        .env("CARGO_TARGET_X86_64_UNKNOWN_LINUX_MUSL_LINKER", "/opt/my-linker")
        .output()
        .expect("run scripts/static.sh");
    assert!(built.status.success(), "static.sh: {}", String::from_utf8_lossy(&built.stderr));
    let seen = std::fs::read_to_string(path("seen")).expect("the stand-in cargo ran");
    let linker =
        format!("CARGO_TARGET_X86_64_UNKNOWN_LINUX_MUSL_LINKER={}", root.join("scripts/link-ordered.sh").display());
    assert!(seen.lines().any(|line| line == linker), "{seen}");
    assert!(seen.lines().any(|line| line == "LOCK_EXEC_LINK_CC=/opt/my-linker"), "{seen}");
}
