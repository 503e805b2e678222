#!/usr/bin/env bash
# Builds the container image (Dockerfile: FROM scratch, the static x86_64 binary, USER 65534) as
# lock-exec:VERSION and lock-exec:latest. Needs a reachable Docker engine; says so in one line otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v docker >/dev/null; then
  echo "make image: no docker command (install Docker, or build the Dockerfile with another OCI builder)" >&2
  exit 1
fi
if ! reason=$(docker info 2>&1 >/dev/null); then
  echo "make image: no Docker engine is reachable: $(echo "$reason" | grep -v '^$' | head -n 1)" >&2
  exit 1
fi
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
bin=$(scripts/static.sh x86_64)
if [ "$bin" != target/x86_64-unknown-linux-musl/release/lock-exec ]; then
  echo "make image: the Dockerfile copies target/x86_64-unknown-linux-musl/release/lock-exec, but CARGO_TARGET_DIR put the binary at $bin" >&2
  exit 1
fi
docker build --tag "lock-exec:$version" --tag lock-exec:latest .
