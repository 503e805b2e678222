//! Build script: records what `lock-exec version` prints besides the version, as `cargo:rustc-env` variables:
//! `LOCK_EXEC_COMMIT` (the short git commit, `-dirty` when the files it is built from differ from it, `unknown`
//! outside a git checkout such as a source tarball) and `LOCK_EXEC_TARGET` (the target triple). Runs `git` when
//! present; no crates.

// A build script reads Cargo's variables from its own environment; the crate's `Env` seam is for the binary.
#![allow(clippy::disallowed_methods)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// The files the binary is built from: a change to them reruns this script, and `-dirty` means they differ from
/// the commit (a change elsewhere, such as README.md, neither reruns it nor makes the version line lie).
const BUILD_INPUTS: [&str; 6] =
    ["build.rs", "Cargo.toml", "Cargo.lock", "src", "scripts/hot-symbols.txt", "scripts/link-ordered.sh"];

fn main() {
    let target = std::env::var("TARGET").unwrap_or_else(|_| "unknown".into());
    println!("cargo:rustc-env=LOCK_EXEC_TARGET={target}");
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| ".".into()));
    // Rerun when a file of the build changes (it may make the build dirty or clean; the static x86_64 link runs
    // scripts/link-ordered.sh, which reads scripts/hot-symbols.txt, and Cargo watches neither, so a change to
    // them must relink)...
    for path in BUILD_INPUTS {
        println!("cargo:rerun-if-changed={path}");
    }
    let commit = match Checkout::find(&manifest_dir) {
        Some(checkout) => {
            // ...and when HEAD moves: HEAD itself, the branch it points to, packed refs, and the index (a commit
            // or `git add` changes what is dirty).
            for path in checkout.watched() {
                println!("cargo:rerun-if-changed={}", path.display());
            }
            checkout.describe().unwrap_or_else(|| "unknown".into())
        }
        None => "unknown".into(),
    };
    println!("cargo:rustc-env=LOCK_EXEC_COMMIT={commit}");
}

/// The git checkout the crate is the top of (not a repository that merely contains an unpacked tarball).
struct Checkout {
    dir: PathBuf,
    git_dir: PathBuf,
    common_dir: PathBuf,
}

impl Checkout {
    fn find(dir: &Path) -> Option<Checkout> {
        let top = git(dir, &["rev-parse", "--show-toplevel"])?;
        if Path::new(&top).canonicalize().ok()? != dir.canonicalize().ok()? {
            return None;
        }
        let git_dir = PathBuf::from(git(dir, &["rev-parse", "--absolute-git-dir"])?);
        let common_dir = dir.join(git(dir, &["rev-parse", "--git-common-dir"])?);
        Some(Checkout { dir: dir.to_owned(), git_dir, common_dir })
    }

    /// The files whose change moves HEAD or the index; only those that exist (Cargo reruns a build script on
    /// every build while a watched path is missing).
    fn watched(&self) -> Vec<PathBuf> {
        let mut paths =
            vec![self.git_dir.join("HEAD"), self.git_dir.join("index"), self.common_dir.join("packed-refs")];
        if let Some(branch) = git(&self.dir, &["symbolic-ref", "-q", "HEAD"]) {
            paths.push(self.common_dir.join(branch));
        }
        paths.retain(|p| p.exists());
        paths
    }

    /// `7746787` or `7746787-dirty`; `None` when git fails (no commit yet). Always 7 characters: `--short` follows
    /// the builder's `core.abbrev` and the repository's size, and the release archives must not.
    fn describe(&self) -> Option<String> {
        let full = git(&self.dir, &["rev-parse", "HEAD"])?;
        let hash = full.get(..7)?.to_owned();
        // Tracked files of the build only (untracked ones are not part of any build); no index refresh written.
        let mut args = vec!["--no-optional-locks", "status", "--porcelain", "--untracked-files=no", "--"];
        args.extend(BUILD_INPUTS);
        let changes = git(&self.dir, &args)?;
        Some(if changes.is_empty() { hash } else { format!("{hash}-dirty") })
    }
}

/// The trimmed stdout of a successful `git -C dir ARGS`; `None` when git is missing or fails.
fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let output = Command::new("git").arg("-C").arg(dir).args(args).output().ok()?;
    if !output.status.success() {
        return None;
    }
    Some(String::from_utf8(output.stdout).ok()?.trim().to_owned())
}
