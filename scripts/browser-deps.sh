#!/usr/bin/env bash
# Installs what the browser tests need: Debian's chromium and, from npm,
# playwright-core (which drives it; no browser download). Idempotent, so
# `make test` calls it every time; run as root (CI) or with sudo at hand.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v chromium >/dev/null 2>&1; then
    SUDO=""
    [ "$(id -u)" = 0 ] || SUDO="sudo"
    echo "== installing chromium (Debian)"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
        chromium fonts-dejavu-core >/dev/null
fi

if [ ! -f tests/browser/node_modules/.package-lock.json ] \
    || [ tests/browser/package-lock.json -nt tests/browser/node_modules/.package-lock.json ]; then
    echo "== installing playwright-core (npm)"
    (cd tests/browser && npm ci --no-audit --no-fund --silent)
fi
