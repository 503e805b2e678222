#!/usr/bin/env bash
# Starts or stops a local DynamoDB emulator on 127.0.0.1 and a free port.
#   scripts/emulator.sh start NAME [moto|dynalite]  -> prints http://127.0.0.1:PORT once ready;
#                                                     state in .tmp/NAME.{port,pid,log}
#   scripts/emulator.sh stop NAME
# moto (default) is served one request at a time by scripts/moto_serial.py and also speaks STS and IAM.
# dynalite (npm, installed under scripts/dynalite/node_modules) is a second, stricter DynamoDB implementation.
set -euo pipefail
cd "$(dirname "$0")/.."
action=${1:?usage: emulator.sh start|stop NAME}
name=${2:-moto}
kind=${3:-moto}
state=.tmp/$name
case "$action" in
  start)
    scripts/venv.sh
    if [ -f "$state.pid" ] && kill -0 "$(cat "$state.pid")" 2>/dev/null; then
      echo "http://127.0.0.1:$(cat "$state.port")"
      exit 0
    fi
    rm -f "$state.port"
    case "$kind" in
      moto)
        .tmp/venv/bin/python scripts/moto_serial.py --port-file "$state.port" >"$state.log" 2>&1 &
        echo $! > "$state.pid"
        ;;
      dynalite)
        if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
          . scripts/debian.sh
          debian_install "dynalite needs Node.js and npm" nodejs npm
        fi
        if [ ! -x scripts/dynalite/node_modules/.bin/dynalite ]; then
          (cd scripts/dynalite && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error) >&2
        fi
        port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
        node scripts/dynalite/node_modules/dynalite/cli.js --host 127.0.0.1 --port "$port" \
          --createTableMs 0 --deleteTableMs 0 --updateTableMs 0 >"$state.log" 2>&1 &
        echo $! > "$state.pid"
        echo "$port" > "$state.port"
        ;;
      *)
        echo "unknown emulator kind $kind (moto or dynalite)" >&2
        exit 64
        ;;
    esac
    for _ in $(seq 1 150); do
      if [ -f "$state.port" ]; then
        url="http://127.0.0.1:$(cat "$state.port")"
        if python3 scripts/probe.py "$kind" "$url" 2>/dev/null; then
          echo "$url"
          exit 0
        fi
      fi
      if ! kill -0 "$(cat "$state.pid")" 2>/dev/null; then
        echo "emulator $name exited; its log:" >&2
        cat "$state.log" >&2
        exit 1
      fi
      sleep 0.2
    done
    echo "emulator $name did not become ready in 30s; its log:" >&2
    cat "$state.log" >&2
    exit 1
    ;;
  stop)
    if [ -f "$state.pid" ]; then
      kill "$(cat "$state.pid")" 2>/dev/null || true
      rm -f "$state.pid" "$state.port"
    fi
    ;;
  *)
    echo "usage: emulator.sh start|stop NAME" >&2
    exit 64
    ;;
esac
