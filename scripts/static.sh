#!/usr/bin/env bash
# Builds a fully static lock-exec for Linux with musl: scripts/static.sh [x86_64|aarch64]
# Installs what the target needs: the rustup target, and for aarch64 Debian's cross gcc (as root).
# Reports the size, `file` and `ldd` lines on stderr and prints the binary's path (relative to the repository) on
# stdout. The x86_64 binary must stay under 2.5 MB (2,500,000 bytes): the script fails otherwise.
# Paths of this checkout and of Cargo's registry are remapped, so the binary names neither and two builds of one
# commit are identical wherever they are made (scripts/dist.sh relies on it).
set -euo pipefail
cd "$(dirname "$0")/.."
arch=${1:-x86_64}
triple=$arch-unknown-linux-musl
size_limit=2500000
case "$arch" in
  x86_64 | aarch64) ;;
  *)
    echo "unknown architecture $arch (x86_64 or aarch64)" >&2
    exit 64
    ;;
esac
if ! rustup target list --installed | grep -qx "$triple"; then
  rustup target add "$triple" >&2
fi
. scripts/debian.sh
# `file` reports the linking below; it is missing from slim images (Debian's `rust:*-slim`).
command -v file >/dev/null || debian_install "checking the static linking needs file(1)" file
env_name=$(echo "$triple" | tr 'a-z-' 'A-Z_')
case "$arch" in
  x86_64)
    # Rust's musl target ships its own C runtime; gcc is only the linker driver and the C compiler of ring.
    export "CC_${triple//-/_}=${CC:-gcc}"
    ;;
  aarch64)
    command -v aarch64-linux-gnu-gcc >/dev/null ||
      debian_install "aarch64 needs a cross gcc" gcc-aarch64-linux-gnu libc6-dev-arm64-cross
    export "CC_${triple//-/_}=aarch64-linux-gnu-gcc"
    export "CARGO_TARGET_${env_name}_LINKER=aarch64-linux-gnu-gcc"
    ;;
esac
# Source paths end up in the binary (panic locations): name them from fixed roots instead of this machine's
# directories (the checkout as `lock-exec`, each registry's sources as `crates`). With --target, these flags apply
# to the target's code only, not to build scripts. CARGO_ENCODED_RUSTFLAGS (fields separated by 0x1f) keeps paths
# with spaces whole; RUSTFLAGS given by the caller come first.
cargo_home=${CARGO_HOME:-$HOME/.cargo}
flags=(${RUSTFLAGS:-} "--remap-path-prefix=$PWD=lock-exec")
for dir in "$cargo_home"/registry/src/*/ "$cargo_home"/git/checkouts/; do
  if [ -d "$dir" ]; then
    flags+=("--remap-path-prefix=${dir%/}=crates")
  fi
done
if [ "$arch" = x86_64 ]; then
  # x86_64 builds a static-pie, which relocates itself at start (musl's rcrt1): packed relative relocations
  # (DT_RELR) take 1 KB where the classic table takes 70. The aarch64 binary is not position-independent.
  # Linked with LLVM's lld (Debian's lld, installed when missing) for identical code folding: generic code that
  # compiled to the same bytes is kept once (about 10 KB), which keeps the binary under 2,500,000 bytes.
  command -v ld.lld >/dev/null || debian_install "the x86_64 static build links with lld" lld
  flags+=("-Clink-arg=-fuse-ld=lld" "-Clink-arg=-Wl,--icf=all" "-Clink-arg=-Wl,--pack-dyn-relocs=relr")
  # The functions a lock cycle runs (scripts/hot-symbols.txt, made by scripts/hot-order.sh) come first in .text,
  # together: the kernel maps a binary's pages 64 KB around each one touched, so scattered hot code made nearly
  # all of .text resident. scripts/link-ordered.sh finds the names as this build spells them (LLVM's numeric
  # suffixes shift from commit to commit) and links with them; names the build no longer has are skipped.
  command -v nm >/dev/null || debian_install "the x86_64 static build's link reads symbols with nm" binutils
  # A linker the caller chose for this target stays the driver that does the link.
  linker_var=CARGO_TARGET_${env_name}_LINKER
  if [ -n "${!linker_var:-}" ] && [ "${!linker_var}" != "$PWD/scripts/link-ordered.sh" ]; then
    export LOCK_EXEC_LINK_CC=${!linker_var}
  fi
  export "$linker_var=$PWD/scripts/link-ordered.sh"
fi
# LOCK_EXEC_PROFILE_BUILD=1 (scripts/hot-order.sh): keep the symbols and write lld's link map next to the binary.
# The symbols' names are those of the release build (stripping is not part of cargo's build hash when asked for
# here), so the map names the functions of the binary that ships; no size limit applies.
profile_build=${LOCK_EXEC_PROFILE_BUILD:-0}
if [ "$profile_build" = 1 ]; then
  mkdir -p "${CARGO_TARGET_DIR:-target}"
  flags+=("-Cstrip=none" "-Clink-arg=-Wl,--no-demangle"
    "-Clink-arg=-Wl,-Map=$(realpath "${CARGO_TARGET_DIR:-target}")/lock-exec-$arch.map")
fi
CARGO_ENCODED_RUSTFLAGS=$(IFS=$'\x1f'; echo "${flags[*]}")
export CARGO_ENCODED_RUSTFLAGS
unset RUSTFLAGS
cargo build --locked --release --target "$triple" >&2
bin=${CARGO_TARGET_DIR:-target}/$triple/release/lock-exec
size=$(stat -c %s "$bin")
{
  echo "$bin: $size bytes ($(awk -v s="$size" 'BEGIN { printf "%.3f MB", s / 1e6 }'))"
  file "$bin" || true
  echo "ldd: $(ldd "$bin" 2>&1 | tr -s ' \t\n' ' ' | sed 's/^ //; s/ $//')"
} >&2
if ! file "$bin" | grep -q 'static'; then
  echo "$bin is not statically linked" >&2
  exit 1
fi
if [ "$arch" = x86_64 ] && [ "$profile_build" != 1 ] && [ "$size" -ge "$size_limit" ]; then
  echo "$bin is $size bytes: the x86_64 binary must stay under $size_limit" >&2
  exit 1
fi
echo "$bin"
