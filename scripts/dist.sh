#!/usr/bin/env bash
# Release archives, reproducible from a clean checkout:
#   scripts/dist.sh          dist/lock-exec-VERSION-{x86_64,aarch64}-linux-musl.tar.gz and dist/SHA256SUMS
#   scripts/dist.sh verify   builds them twice more, from two fresh clones of HEAD in .tmp/dist-verify/ (kept when
#                            they differ), and checks that all SHA256SUMS agree (full builds: several minutes)
# Each archive holds lock-exec-VERSION-ARCH-linux-musl/{lock-exec,README.md,LICENSE,lock-exec.1}. The binaries come from
# scripts/static.sh (paths remapped); the archives are normalized: names sorted, every mtime the commit's time
# (SOURCE_DATE_EPOCH), owner and group 0, fixed modes, gzip without name or time stamp.
# A tree with changes to tracked files is refused (DIST_ALLOW_DIRTY=1 builds anyway; the version then says -dirty).
set -euo pipefail
cd "$(dirname "$0")/.."
export LC_ALL=C

if [ "${1:-}" = verify ]; then
  commit=$(git rev-parse HEAD)
  work=.tmp/dist-verify
  rm -rf "$work"
  mkdir -p "$work"
  for copy in a b; do
    git clone -q --no-hardlinks . "$work/$copy"
    git -C "$work/$copy" checkout -q --detach "$commit"
    echo "== build in $work/$copy ==" >&2
    # Each clone builds in its own target directory: nothing is shared with this checkout's builds.
    (cd "$work/$copy" && env -u CARGO_TARGET_DIR scripts/dist.sh) >&2
  done
  status=0
  if ! cmp -s "$work/a/dist/SHA256SUMS" "$work/b/dist/SHA256SUMS"; then
    echo "NOT reproducible: the two clean builds differ" >&2
    diff "$work/a/dist/SHA256SUMS" "$work/b/dist/SHA256SUMS" >&2 || true
    status=1
  elif [ -f dist/SHA256SUMS ] && ! cmp -s "$work/a/dist/SHA256SUMS" dist/SHA256SUMS; then
    echo "the clean builds agree, but differ from this checkout's dist/ (built from another commit or a dirty tree?)" >&2
    diff "$work/a/dist/SHA256SUMS" dist/SHA256SUMS >&2 || true
    status=1
  else
    echo "reproducible: two clean builds of $commit in different directories gave identical archives:"
    cat "$work/a/dist/SHA256SUMS"
    rm -rf "$work"
  fi
  exit "$status"
fi

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
if [ -z "$version" ]; then
  echo "cannot read the version from Cargo.toml" >&2
  exit 1
fi
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  if [ -n "$(git status --porcelain --untracked-files=no)" ] && [ "${DIST_ALLOW_DIRTY:-}" != 1 ]; then
    echo "the tree has uncommitted changes: commit them (or set DIST_ALLOW_DIRTY=1)" >&2
    exit 1
  fi
  SOURCE_DATE_EPOCH=$(git log -1 --format=%ct)
elif [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
  echo "not a git checkout: set SOURCE_DATE_EPOCH (the release's time, Unix seconds)" >&2
  exit 1
fi
# Not exported to the build: cc-rs would then rebuild ring (and what depends on it) whenever the variable changes,
# and no C code in the build uses __DATE__ or __TIME__; `verify` would catch one that did.

archs=(x86_64 aarch64)
bins=()
for arch in "${archs[@]}"; do
  bins+=("$(scripts/static.sh "$arch")")
done

rm -rf dist
mkdir dist
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
for i in "${!archs[@]}"; do
  name=lock-exec-$version-${archs[$i]}-linux-musl
  mkdir "$stage/$name"
  chmod 0755 "$stage/$name"
  install -m 0755 "${bins[$i]}" "$stage/$name/lock-exec"
  install -m 0644 README.md LICENSE man/lock-exec.1 "$stage/$name/"
  tar --create --format=ustar --sort=name --mtime="@$SOURCE_DATE_EPOCH" --owner=0 --group=0 --numeric-owner \
    --directory="$stage" "$name" | gzip -9 -n >"dist/$name.tar.gz"
done
(cd dist && sha256sum -- *.tar.gz >SHA256SUMS)
ls -l dist >&2
cat dist/SHA256SUMS
