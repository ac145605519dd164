#!/usr/bin/env bash
# The browser tier's browser: Debian's Chromium (no browser download by Playwright, ever). Called by
# tests/browser/conftest.py when the tier runs; idempotent (nothing to do when /usr/bin/chromium exists).
# Root is needed to install it (the dev machines and CI run as root); otherwise install it yourself:
#   apt-get install -y chromium
set -euo pipefail
CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
if [ -x "$CHROMIUM" ]; then
  exit 0
fi
if [ "$(id -u)" != "0" ]; then
  echo "[browser] $CHROMIUM missing and not root: apt-get install -y chromium" >&2
  exit 1
fi
echo "[browser] installing Debian's chromium (apt-get)" >&2
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
[ -x "$CHROMIUM" ] || { echo "[browser] chromium installed but $CHROMIUM is missing" >&2; exit 1; }
"$CHROMIUM" --version >&2
