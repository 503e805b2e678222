#!/usr/bin/env bash
# Two concurrent runs on one key against a local DynamoDB emulator: exactly one executes.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --locked --release --quiet
bin=target/release/lock-exec
endpoint=$(scripts/emulator.sh start moto-demo)
trap 'scripts/emulator.sh stop moto-demo' EXIT
export AWS_ACCESS_KEY_ID=demo AWS_SECRET_ACCESS_KEY=demo AWS_REGION=us-east-1 AWS_ENDPOINT_URL=$endpoint
export AWS_EC2_METADATA_DISABLED=true
.tmp/venv/bin/python scripts/create_table.py "$endpoint" lock-exec
echo "== two runs of 'nightly-report' start at the same time (text logs) =="
out=$(mktemp -d)
for who in A B; do
  "$bin" run nightly-report --log-format text -- sh -c "echo 'run $who: executing the report'; sleep 2" \
    >"$out/$who.out" 2>"$out/$who.err" &
done
wait
for who in A B; do
  echo "--- run $who: stdout"; cat "$out/$who.out"
  echo "--- run $who: log"; cat "$out/$who.err"
done
executed=$(cat "$out"/*.out | grep -c executing || true)
echo "== $executed of 2 runs executed the command =="
"$bin" status nightly-report --log-format text || true
rm -rf "$out"
[ "$executed" = 1 ]
