#!/usr/bin/env bash
# Two concurrent runs on one key against a local DynamoDB emulator: exactly one executes.
#
# lock-exec and the emulator run with only the variables below (env -i): a LOCK_EXEC_* or AWS_* setting of the
# caller's (a table, AWS_ENDPOINT_URL_DYNAMODB, AWS_IGNORE_CONFIGURED_ENDPOINT_URLS, a profile, a proxy) cannot
# send the demo's requests anywhere but the emulator on 127.0.0.1.
# LOCK_EXEC_DEMO_BIN: a lock-exec binary to use instead of building the release one (the test suite's debug build).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${LOCK_EXEC_DEMO_BIN:-}
if [ -z "$bin" ]; then
  echo "== building lock-exec (cargo build --release) and starting the emulator (moto); the first time takes minutes =="
  cargo build --locked --release --quiet
  bin=target/release/lock-exec
fi
# The emulator too starts with a clean environment: moto reads AWS_PROFILE and friends, and the readiness probe
# would go through the caller's http_proxy.
clean=(env -i "PATH=$PATH" HOME=/nonexistent)
trap '"${clean[@]}" scripts/emulator.sh stop moto-demo' EXIT
endpoint=$("${clean[@]}" scripts/emulator.sh start moto-demo)
demo=("${clean[@]}" AWS_ACCESS_KEY_ID=demo AWS_SECRET_ACCESS_KEY=demo AWS_REGION=us-east-1
  "AWS_ENDPOINT_URL=$endpoint" AWS_EC2_METADATA_DISABLED=true)
echo "== lock-exec table create (emulator at $endpoint) =="
"${demo[@]}" "$bin" --log-format text table create
echo "== two runs of 'nightly-report' start at the same time (text logs) =="
out=$(mktemp -d)
for who in A B; do
  "${demo[@]}" "$bin" run nightly-report --log-format text -- sh -c "echo 'run $who: executing the report'; sleep 2" \
    >"$out/$who.out" 2>"$out/$who.err" &
done
wait
for who in A B; do
  echo "--- run $who: stdout"; cat "$out/$who.out"
  echo "--- run $who: log"; cat "$out/$who.err"
done
echo "--- lock-exec status nightly-report"
"${demo[@]}" "$bin" status nightly-report --log-format text || true
executed=$(cat "$out"/*.out | grep -c executing || true)
rm -rf "$out"
echo "== $executed of 2 runs executed the command =="
[ "$executed" = 1 ]
