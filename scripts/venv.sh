#!/usr/bin/env bash
# Creates .tmp/venv with moto's server (DynamoDB, STS, IAM). Idempotent: a stamp file records the install.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.tmp/venv
stamp=$venv/.installed-moto
want="moto[dynamodb]==5.2.5 flask flask-cors"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
mkdir -p .tmp
if ! python3 -m venv "$venv" >/dev/null 2>&1; then
  # Debian's python3 ships venv support separately (python3-venv).
  rm -rf "$venv"
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing Debian's python3-venv for the moto virtualenv" >&2
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv) >&2
    python3 -m venv "$venv"
  else
    echo "python3 cannot create a virtualenv: install Debian's python3-venv (apt-get install python3-venv)" >&2
    exit 1
  fi
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check $want
echo "$want" > "$stamp"
