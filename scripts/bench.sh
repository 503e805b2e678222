#!/usr/bin/env bash
# make bench: lock-exec's short-run cost against its alternatives, on dynalite at 127.0.0.1 (see README
# "Performance"). Builds the glibc and the static musl binaries, installs the aws cli into .tmp/bench-venv, starts
# dynalite (scripts/emulator.sh), runs scripts/bench.py, which prints a Markdown table and writes bench/RESULTS.md;
# stops dynalite. BENCH_RUNS (default 15) sets the runs per figure; extra arguments go to scripts/bench.py.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/debian.sh
started=$SECONDS

venv=.tmp/bench-venv
stamp=$venv/.installed
want="awscli==1.46.3"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  mkdir -p .tmp
  rm -rf "$venv"
  if ! python3 -m venv "$venv" >/dev/null 2>&1; then
    # Debian's python3 ships venv support separately (python3-venv).
    rm -rf "$venv"
    debian_install "python3 cannot create a virtualenv" python3-venv
    python3 -m venv "$venv"
  fi
  "$venv/bin/pip" install --quiet --disable-pip-version-check "$want"
  echo "$want" > "$stamp"
fi
missing=""
[ -x /usr/bin/time ] || missing="$missing time"
command -v curl >/dev/null || missing="$missing curl"
if [ -n "$missing" ]; then
  # shellcheck disable=SC2086 # one word per package
  debian_install "make bench needs:$missing" $missing
fi

cargo build --locked --release >&2
scripts/static.sh x86_64 >&2
echo "bench: installs and builds took $((SECONDS - started)) s" >&2

trap 'scripts/emulator.sh stop dynalite-bench' EXIT
endpoint=$(scripts/emulator.sh start dynalite-bench dynalite)
echo "bench: dynalite at $endpoint" >&2
python3 scripts/bench.py --endpoint "$endpoint" --static target/x86_64-unknown-linux-musl/release/lock-exec \
  --glibc target/release/lock-exec --aws-venv "$venv" --out bench/RESULTS.md "$@"
echo "bench: $((SECONDS - started)) s in all" >&2
