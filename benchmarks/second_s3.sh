#!/usr/bin/env bash
# A second S3-compatible server for the relink benchmark only (the test tiers keep moto): s3rver
# (npm, MIT; a Node process, one event loop), installed under .build/s3rver, data in .build/s3rver/data,
# on loopback, with the buckets bench-crm and bench-cdp; keys S3RVER / S3RVER.
#   benchmarks/second_s3.sh up [PORT]   prints the endpoint: scripts/benchmark.sh --second-s3 <endpoint>
#   benchmarks/second_s3.sh down        stops the server this script started
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="$ROOT/.build/s3rver"
PORT="${2:-9444}"
case "${1:-}" in
  up)
    mkdir -p "$DIR/data"
    if [ ! -x "$DIR/node_modules/.bin/s3rver" ]; then
      npm install --prefix "$DIR" --no-audit --no-fund --silent s3rver@3.7.1 >&2
    fi
    if [ -f "$DIR/pid" ] && kill -0 "$(cat "$DIR/pid")" 2>/dev/null; then
      echo "http://127.0.0.1:$(cat "$DIR/port")"
      exit 0
    fi
    nohup "$DIR/node_modules/.bin/s3rver" -d "$DIR/data" -a 127.0.0.1 -p "$PORT" --silent \
      --configure-bucket bench-crm --configure-bucket bench-cdp >"$DIR/log" 2>&1 &
    echo $! >"$DIR/pid"
    echo "$PORT" >"$DIR/port"
    for _ in $(seq 50); do
      if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
        echo "http://127.0.0.1:$PORT"
        exit 0
      fi
      sleep 0.2
    done
    echo "s3rver did not listen on 127.0.0.1:$PORT (see $DIR/log)" >&2
    exit 1
    ;;
  down)
    if [ -f "$DIR/pid" ]; then
      kill "$(cat "$DIR/pid")" 2>/dev/null || true
      rm -f "$DIR/pid"
    fi
    ;;
  *)
    echo "usage: $0 up [PORT] | down" >&2
    exit 2
    ;;
esac
