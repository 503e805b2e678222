#!/usr/bin/env bash
# Runs every test against local moto servers that this script starts and stops:
#   LOCK_EXEC_TEST_ENDPOINT       moto with authentication off (most tests)
#   LOCK_EXEC_TEST_AUTH_ENDPOINT  a second moto whose tests switch signature and IAM checks on
set -euo pipefail
cd "$(dirname "$0")/.."
trap 'scripts/emulator.sh stop moto-test; scripts/emulator.sh stop moto-auth-test' EXIT
endpoint=$(scripts/emulator.sh start moto-test)
auth_endpoint=$(scripts/emulator.sh start moto-auth-test)
echo "moto at $endpoint, moto for auth tests at $auth_endpoint"
log=.tmp/test-output.log
set +e
LOCK_EXEC_TEST_ENDPOINT=$endpoint LOCK_EXEC_TEST_AUTH_ENDPOINT=$auth_endpoint \
  cargo test --locked --lib --bins --tests "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One closing line over every test binary (cargo prints one "test result" line per binary).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed;?$/) p += $i; if ($(i+1) ~ /^failed;?$/) f += $i } }
     END { printf "total: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
