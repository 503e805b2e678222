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
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check $want
echo "$want" > "$stamp"
