#!/usr/bin/env bash
# Runs a static build against a local DynamoDB emulator (moto on 127.0.0.1, started and stopped here):
#   scripts/static-check.sh [x86_64|aarch64] [BINARY]    (BINARY: scripts/static.sh's output by default)
# An aarch64 binary on another machine runs under qemu-user (Debian's qemu-user-static, installed when missing
# and the script runs as root). Checks, with the time of each step:
#   --version names the target triple;
#   `run KEY -- COMMAND` runs the command, exits 0 and leaves the key free;
#   while one run holds a key, a second run of it does not run its command and exits --locked-exit-code;
#   `status` of that key says free once the holder has exited.
set -euo pipefail
cd "$(dirname "$0")/.."
arch=${1:-x86_64}
triple=$arch-unknown-linux-musl
bin=${2:-${CARGO_TARGET_DIR:-target}/$triple/release/lock-exec}
if [ ! -x "$bin" ]; then
  echo "$bin is missing: build it with scripts/static.sh $arch" >&2
  exit 1
fi
runner=()
if [ "$arch" != "$(uname -m)" ]; then
  qemu=qemu-$arch-static
  if ! command -v "$qemu" >/dev/null; then
    . scripts/debian.sh
    debian_install "running the $arch binary needs qemu-user" qemu-user-static
  fi
  runner=("$qemu")
fi

endpoint=$(scripts/emulator.sh start moto-static-check)
work=$(mktemp -d)
trap 'scripts/emulator.sh stop moto-static-check; rm -rf "$work"' EXIT
export AWS_ACCESS_KEY_ID=static-check AWS_SECRET_ACCESS_KEY=static-check AWS_REGION=us-east-1
export AWS_ENDPOINT_URL=$endpoint AWS_EC2_METADATA_DISABLED=true
table=lock-exec-static-check
.tmp/venv/bin/python scripts/create_table.py "$endpoint" "$table" >/dev/null

failed=0
# step NAME EXPECTED-EXIT EXPECTED-STDOUT ARGS...: runs the binary, prints one line with the time taken.
step() {
  local name=$1 want_code=$2 want_out=$3 start end code out
  shift 3
  start=$(date +%s%N)
  set +e
  out=$("${runner[@]}" "$bin" "$@" 2>"$work/stderr")
  code=$?
  set -e
  end=$(date +%s%N)
  if [ "$code" = "$want_code" ] && [[ "$out" == $want_out ]]; then
    printf '  ok    %-46s %6.1f ms\n' "$name" "$(((end - start) / 1000))e-3"
  else
    printf '  FAIL  %s: exit %s (want %s), stdout %q (want %s)\n' "$name" "$code" "$want_code" "$out" "$want_out"
    sed 's/^/        /' "$work/stderr"
    explain "$work/stderr"
    failed=1
  fi
}

# Names a known limit of the emulator rather than of lock-exec.
explain() {
  if [ ${#runner[@]} -gt 0 ] && grep -q subreaper "$1"; then
    echo "        ($("${runner[0]}" --version | head -n 1) answers EINVAL to prctl(PR_SET_CHILD_SUBREAPER), which"
    echo "        lock-exec's run needs: a limit of this qemu-user, not of the binary; newer qemu passes it through)"
  fi
}

echo "$bin ($(stat -c %s "$bin") bytes)${runner:+ under ${runner[*]}} against $endpoint:"
step "--version" 0 "lock-exec * (commit *, $triple)" --version
step "run cycle -- sh -c 'echo ran'" 0 "ran" -t "$table" run cycle -- sh -c 'echo ran'
step "status cycle (free after the run)" 0 '*"state":"free"*' -t "$table" status cycle

# A holder that waits for a file, and a second run of its key meanwhile.
"${runner[@]}" "$bin" -t "$table" run held -- sh -c "touch '$work/started'; while [ ! -e '$work/release' ]; do sleep 0.05; done" \
  2>"$work/holder.stderr" &
holder=$!
for _ in $(seq 1 400); do
  if [ -e "$work/started" ] || ! kill -0 "$holder" 2>/dev/null; then
    break
  fi
  sleep 0.05
done
if [ -e "$work/started" ]; then
  step "run held while held (--locked-exit-code 3)" 3 "" -t "$table" run --locked-exit-code 3 held -- echo ran
else
  echo "  FAIL  the holder's command did not start:"
  sed 's/^/        /' "$work/holder.stderr"
  explain "$work/holder.stderr"
  failed=1
fi
touch "$work/release"
if wait "$holder"; then
  echo "  ok    the holder exited 0"
else
  echo "  FAIL  the holder exited $?:"
  sed 's/^/        /' "$work/holder.stderr"
  failed=1
fi
step "status held (free after the holder)" 0 '*"state":"free"*' -t "$table" status held
if [ "$failed" = 0 ]; then
  echo "all checks passed"
fi
exit "$failed"
