#!/usr/bin/env bash
# Regenerates scripts/hot-symbols.txt, the functions a lock cycle runs, which scripts/static.sh has lld lay out
# first in the x86_64 binary (README "Performance"). Run it after a dependency, toolchain or version change:
# symbol names carry hashes of those, and names the build no longer has are skipped, which lets peak RSS creep
# back up (make bench shows it). The list leaves out LLVM's numeric suffixes (`NAME.N`), which shift with nearly
# any code change; scripts/link-ordered.sh finds them in each build.
#
# Builds the static binary with symbols and a link map (LOCK_EXEC_PROFILE_BUILD=1, under .tmp/hot), starts
# dynalite, and runs under valgrind's callgrind: a lock cycle (`run K -- true`), one with renewals (`-e 3s` over
# `sleep 2.5`), a run that finds the key held, `status` and `unlock`. Each forked child is dumped before its
# execve, so the code between fork and exec counts too. scripts/hot_order.py maps every instruction that ran
# to its function through the map. Needs valgrind (installed from Debian's packages when missing, as root).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/debian.sh
command -v valgrind >/dev/null || debian_install "hot-order.sh needs valgrind" valgrind
work=$PWD/.tmp/hot
rm -rf "$work/runs"
mkdir -p "$work/runs"
bin=$(CARGO_TARGET_DIR=$work/target LOCK_EXEC_PROFILE_BUILD=1 scripts/static.sh x86_64)
bin=$(realpath "$bin")
map=$work/target/lock-exec-x86_64.map

trap 'scripts/emulator.sh stop dynalite-hot' EXIT
endpoint=$(scripts/emulator.sh start dynalite-hot dynalite)
run() {
  env -i AWS_ACCESS_KEY_ID=AKIDHOTORDER AWS_SECRET_ACCESS_KEY=hot-order-secret AWS_REGION=us-east-1 \
    AWS_EC2_METADATA_DISABLED=true AWS_ENDPOINT_URL="$endpoint" HOME=/nonexistent PATH=/usr/bin:/bin \
    "$@" >/dev/null 2>&1
}
traced() {
  run valgrind --tool=callgrind --callgrind-out-file="$work/runs/%p.out" --dump-instr=yes --compress-pos=no \
    --compress-strings=no --trace-children=yes --dump-before=execve "$bin" "$@"
}
run "$bin" table create
traced run hot-once -- true
traced run -e 3s hot-renewed -- sleep 2.5
run "$bin" run hot-held -- sleep 4 &
held=$!
sleep 1
traced run hot-held -- true
wait "$held"
traced status hot-once
traced unlock hot-once
# Code valgrind cannot show running: sha2's SHA-NI variants (valgrind's CPU has no SHA extensions), musl's
# posix_spawn child (valgrind runs CLONE_VM children differently), and a float conversion of compiler-rt that a
# timing-dependent path reaches natively.
python3 scripts/hot_order.py --also 'sha2.*sha256' --also '^child$' --also '^__fixdfti$' \
  "$map" "$bin" scripts/hot-symbols.txt "$work"/runs/*.out*
