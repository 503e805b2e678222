#!/usr/bin/env bash
# Starts or stops a local moto server (serialized, see moto_serial.py) on 127.0.0.1 and a free port.
#   scripts/emulator.sh start NAME   -> prints http://127.0.0.1:PORT once ready; state in .tmp/NAME.{port,pid,log}
#   scripts/emulator.sh stop NAME
set -euo pipefail
cd "$(dirname "$0")/.."
action=${1:?usage: emulator.sh start|stop NAME}
name=${2:-moto}
state=.tmp/$name
case "$action" in
  start)
    scripts/venv.sh
    if [ -f "$state.pid" ] && kill -0 "$(cat "$state.pid")" 2>/dev/null; then
      echo "http://127.0.0.1:$(cat "$state.port")"
      exit 0
    fi
    rm -f "$state.port"
    .tmp/venv/bin/python scripts/moto_serial.py --port-file "$state.port" >"$state.log" 2>&1 &
    echo $! > "$state.pid"
    for _ in $(seq 1 150); do
      if [ -f "$state.port" ]; then
        url="http://127.0.0.1:$(cat "$state.port")"
        if python3 -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1] + '/moto-api/data.json', timeout=2)" "$url" 2>/dev/null; then
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
