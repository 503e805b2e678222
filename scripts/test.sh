#!/usr/bin/env bash
# Runs every test against local DynamoDB implementations that this script starts and stops:
#   moto (LOCK_EXEC_TEST_ENDPOINT)            every test; moto also speaks STS and IAM
#   moto (LOCK_EXEC_TEST_AUTH_ENDPOINT)       a second moto whose test switches signature and IAM checks on
#   moto (LOCK_EXEC_TEST_OPS_AUTH_ENDPOINT)   a third, the same for the operator subcommands' IAM test
#   dynalite (as LOCK_EXEC_TEST_ENDPOINT)     the DynamoDB-only integration tests again, on a second, stricter
#                                             implementation (the credential and auth tests need moto's STS/IAM)
# Extra arguments go to the first `cargo test` (e.g. `scripts/test.sh --test it lease`); with arguments, the
# dynalite pass is skipped.
# First the static x86_64 binary is built (scripts/static.sh, a musl release build) and its path passed in
# LOCK_EXEC_STATIC_BIN to tests/it/static_binary.rs, which runs it in a chroot. With arguments, that build happens
# only when one of them mentions `static` (`scripts/test.sh --test it static_binary`), or not at all when
# LOCK_EXEC_STATIC_BIN is already set; without it the static-binary tests fail.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${LOCK_EXEC_STATIC_BIN:-}" ] && { [ $# -eq 0 ] || [[ " $* " == *static* ]]; }; then
  echo "building the static binary for the chroot tests (scripts/static.sh x86_64)"
  static_bin=$(scripts/static.sh x86_64)
  LOCK_EXEC_STATIC_BIN=$(realpath "$static_bin")
  export LOCK_EXEC_STATIC_BIN
fi
# Process tests drive real tools: script(1) (bsdutils), unshare, prlimit, setpriv (util-linux) and strace
# (which widens a race window by delaying one system call).
missing=""
for tool in script unshare prlimit setpriv strace; do
  command -v "$tool" >/dev/null || missing="$missing $tool"
done
if [ -n "$missing" ]; then
  . scripts/debian.sh
  debian_install "the process tests need:$missing" bsdutils util-linux strace
fi
trap 'scripts/emulator.sh stop moto-test; scripts/emulator.sh stop moto-auth-test; scripts/emulator.sh stop moto-ops-auth-test; scripts/emulator.sh stop dynalite-test' EXIT
# The AWS SDKs' conformance vectors live beside the repository (CI has them); a clone alone runs without them.
if [ -d ../shared/aws-sdk-test-data ]; then
  export LOCK_EXEC_REQUIRE_CONFORMANCE=1
else
  echo "skipped: the AWS SDK conformance tests (profile parsing, file locations, container URIs, IMDS endpoints," \
    "assume-role chains, recorded default-chain runs): ../shared/aws-sdk-test-data is absent (see README, Development and tests)"
fi
endpoint=$(scripts/emulator.sh start moto-test)
auth_endpoint=$(scripts/emulator.sh start moto-auth-test)
ops_auth_endpoint=$(scripts/emulator.sh start moto-ops-auth-test)
echo "moto at $endpoint, moto for auth tests at $auth_endpoint and $ops_auth_endpoint"
log=.tmp/test-output.log
# Every test target, unless the arguments choose (`--lib`, `--test it`: cargo refuses a second `--lib`).
selection=(--lib --bins --tests)
if [ $# -gt 0 ]; then
  selection=()
fi
set +e
LOCK_EXEC_TEST_ENDPOINT=$endpoint LOCK_EXEC_TEST_AUTH_ENDPOINT=$auth_endpoint \
  LOCK_EXEC_TEST_OPS_AUTH_ENDPOINT=$ops_auth_endpoint cargo test --locked "${selection[@]}" "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
if [ $# -eq 0 ]; then
  dynalite_endpoint=$(scripts/emulator.sh start dynalite-test dynalite)
  echo "dynalite at $dynalite_endpoint: the DynamoDB-only integration tests again"
  set +e
  LOCK_EXEC_TEST_ENDPOINT=$dynalite_endpoint LOCK_EXEC_TEST_AUTH_ENDPOINT=unused-on-dynalite \
    LOCK_EXEC_TEST_OPS_AUTH_ENDPOINT=unused-on-dynalite cargo test --locked --test it -- run:: admin:: errors:: \
    lock_protocol:: lease:: terminal:: migration:: cron:: clock:: faults:: chaos:: ops::table_create ops::list 2>&1 | tee -a "$log"
  dynalite_status=${PIPESTATUS[0]}
  set -e
  [ "$status" -ne 0 ] || status=$dynalite_status
fi
# One closing line over every test binary and both passes (cargo prints one "test result" line per binary).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed;?$/) p += $i; if ($(i+1) ~ /^failed;?$/) f += $i } }
     END { printf "total: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
