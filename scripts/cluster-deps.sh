#!/usr/bin/env bash
# Installs what the multi-node tests need: Debian's redis-server (the tests
# start their own on free ports; the packaged service is not used) and
# nginx (started by the tests in front of two nodes); and the command-line
# clients the TLS tests use, curl and openssl (a test CA for the Python and
# browser tests, `curl --cacert` against the node). Idempotent, so
# `make test` calls it every time; run as root (CI) or with sudo at hand.
set -euo pipefail

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v nginx >/dev/null 2>&1 || missing+=(nginx-light)
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
if [ "${#missing[@]}" -gt 0 ]; then
    SUDO=""
    [ "$(id -u)" = 0 ] || SUDO="sudo"
    echo "== installing ${missing[*]} (Debian)"
    $SUDO apt-get update -qq
    # The packages' own services are not wanted: the tests run their own.
    echo exit 101 | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod +x /usr/sbin/policy-rc.d
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
    $SUDO rm -f /usr/sbin/policy-rc.d
fi
redis-server --version
nginx -v 2>&1
curl --version | head -n 1
openssl version
