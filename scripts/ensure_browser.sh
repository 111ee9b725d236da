#!/usr/bin/env bash
# Installs Debian's Chromium for the end-to-end browser test when it is missing (needs root + apt).
# Never downloads a browser build of its own: Playwright drives /usr/bin/chromium.
set -uo pipefail
if command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ]; then exit 0; fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "[setup] chromium not found and cannot be installed here; the browser test will be skipped"
  exit 0
fi
echo "[setup] installing Debian's chromium for the browser test"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null && apt-get install -y -qq chromium >/dev/null || \
  echo "[setup] chromium install failed; the browser test will be skipped"
exit 0
