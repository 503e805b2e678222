#!/usr/bin/env bash
# Runs every test against a local moto server that this script starts and stops.
set -euo pipefail
cd "$(dirname "$0")/.."
trap 'scripts/emulator.sh stop moto-test' EXIT
endpoint=$(scripts/emulator.sh start moto-test)
echo "moto at $endpoint"
LOCK_EXEC_TEST_ENDPOINT=$endpoint cargo test --locked "$@"
