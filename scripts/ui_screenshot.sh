#!/usr/bin/env bash
# Headless-Chromium screenshots of the "CRM Notes Migration" nav view, served by a real
# Airflow API server (plugins loaded) on loopback with a throwaway metadata DB.
#
#   scripts/ui_screenshot.sh [out_dir] [detail_cid]
#
# Writes <out_dir>/ui-nav-view.png (the Airflow UI with the plugin's iframe) and
# <out_dir>/ui-page.png (the page alone, with detail_cid's detail, default 3003).
# The virtual-time budget stays below the page's 15 s self-refresh.
# The fleet shows whatever jobs the local CDP database holds (run the plugin tests
# first to get CIDs 3002–3005 in four states). Output goes under .build/ (git-ignored).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/env.sh
source "$ROOT/scripts/env.sh"
OUT="${1:-$BUILD_DIR/screenshots}"
CID="${2:-3003}"
PORT="${UI_SCREENSHOT_PORT:-28089}"
CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
mkdir -p "$OUT"
[ -x "$CHROMIUM" ] || { echo "chromium missing: apt-get update && apt-get install -y chromium" >&2; exit 1; }

HOME_DIR="$(mktemp -d)"
PROFILE="$(mktemp -d)"
cp "$AIRFLOW_HOME/airflow.db" "$HOME_DIR/airflow.db"
export AIRFLOW_HOME="$HOME_DIR"
export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN="sqlite:///$HOME_DIR/airflow.db"
# Dev-only auth: everyone is admin, so /auth/token/login hands the browser its _token cookie.
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS=True
export AIRFLOW__API__BASE_URL="http://127.0.0.1:$PORT"

"$VENV/bin/airflow" api-server --host 127.0.0.1 --port "$PORT" --apps core >"$HOME_DIR/api-server.log" 2>&1 &
SERVER=$!
cleanup() { kill "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true; rm -rf "$HOME_DIR" "$PROFILE"; }
trap cleanup EXIT
for _ in $(seq 1 120); do
  curl -fs "http://127.0.0.1:$PORT/api/v2/monitor/health" >/dev/null 2>&1 && break
  sleep 0.5
done

shot() { # url file
  "$CHROMIUM" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --user-data-dir="$PROFILE" --window-size=1600,1100 --hide-scrollbars \
    --virtual-time-budget=8000 --screenshot="$2" "$1" >/dev/null 2>&1
  echo "wrote $2"
}
login="http://127.0.0.1:$PORT/auth/token/login?next="
shot "${login}/plugin/crm-notes-migration" "$OUT/ui-nav-view.png"
shot "${login}/crm-notes-migration/ui%3Fcid%3D$CID" "$OUT/ui-page.png"
