#!/usr/bin/env bash
# Builds a fully static lock-exec for Linux with musl: scripts/static.sh [x86_64|aarch64]
# Installs what the target needs: the rustup target, and for aarch64 Debian's cross gcc (as root).
# Prints the binary's path, size and `file` line.
set -euo pipefail
cd "$(dirname "$0")/.."
arch=${1:-x86_64}
triple=$arch-unknown-linux-musl
if ! rustup target list --installed | grep -qx "$triple"; then
  rustup target add "$triple" >&2
fi
env_name=$(echo "$triple" | tr 'a-z-' 'A-Z_')
case "$arch" in
  x86_64)
    # Rust's musl target ships its own C runtime; gcc is only the linker driver and the C compiler of ring.
    export "CC_${triple//-/_}=${CC:-gcc}"
    ;;
  aarch64)
    if ! command -v aarch64-linux-gnu-gcc >/dev/null; then
      if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc-aarch64-linux-gnu libc6-dev-arm64-cross) >&2
      else
        echo "aarch64 needs a cross gcc: apt-get install gcc-aarch64-linux-gnu libc6-dev-arm64-cross" >&2
        exit 1
      fi
    fi
    export "CC_${triple//-/_}=aarch64-linux-gnu-gcc"
    export "CARGO_TARGET_${env_name}_LINKER=aarch64-linux-gnu-gcc"
    ;;
  *)
    echo "unknown architecture $arch (x86_64 or aarch64)" >&2
    exit 64
    ;;
esac
cargo build --locked --release --target "$triple" >&2
bin=target/$triple/release/lock-exec
echo "$bin: $(stat -c %s "$bin") bytes"
file "$bin" 2>/dev/null || true
