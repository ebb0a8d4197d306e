#!/usr/bin/env bash
# WebSocket conformance: the Autobahn|Testsuite fuzzing client (`wstest`,
# autobahntestsuite 0.8.2 from PyPI) against a ringcast binary's /echo,
# cases 1.*–7.*, 10.*, and 12.*–13.* (permessage-deflate; the node runs
# with --deflate) — what docs/benchmarks.md reports.
#
#   scripts/autobahn.sh [RINGCAST_BIN] [NAME]      (make autobahn)
#
# wstest needs Python 2.7: set PYTHON2, or have `python2.7` on the PATH, or
# a pyenv 2.7 (~/.pyenv/versions/2.7*). The first run installs wstest and
# its pinned dependencies into .autobahn/venv (from PyPI). Reports go to
# .autobahn/reports/NAME (index.html); the case counts are printed. Exit
# status: 0 when no case failed, 3 when one did, 1 on a setup error.
# CASES='["1.1.1"]' runs other cases. Not part of `make test`: Python 2.7 is
# not on every machine. Sections 12–13 take about an hour (wstest compresses
# in Python 2); AUTOBAHN_TIMEOUT (seconds, default 5400) bounds the run.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BIN=$(realpath "${1:-target/release/ringcast}")
NAME=${2:-latest}
BASE=$ROOT/.autobahn
CASES=${CASES:-'["1.*","2.*","3.*","4.*","5.*","6.*","7.*","10.*","12.*","13.*"]'}
mkdir -p "$BASE/reports"

if [ ! -x "$BASE/venv/bin/wstest" ]; then
    PY2=
    for candidate in ${PYTHON2:-} $(ls -d "$HOME"/.pyenv/versions/2.7*/bin/python 2>/dev/null) $(command -v python2.7); do
        if "$candidate" -c 'import sys; assert sys.version_info[:2] == (2, 7)' 2>/dev/null; then
            PY2=$candidate
            break
        fi
    done
    if [ -z "$PY2" ]; then
        echo "autobahn: wstest needs Python 2.7; set PYTHON2=/path/to/python2.7" >&2
        exit 1
    fi
    cat >"$BASE/constraints.txt" <<'PINS'
autobahntestsuite==0.8.2
autobahn==0.10.9
txaio==2.1.0
Twisted==19.10.0
zope.interface==5.5.2
klein==19.6.0
Werkzeug==1.0.1
Jinja2==2.11.3
MarkupSafe==1.1.1
pyOpenSSL==21.0.0
cryptography==3.3.2
service-identity==21.1.0
unittest2==1.1.0
wsaccel==0.6.3
ujson==2.0.3
six==1.16.0
attrs==21.4.0
incremental==21.3.0
constantly==15.1.0
Automat==20.2.0
PINS
    timeout 300 "$PY2" -m pip install -q --disable-pip-version-check --target "$BASE/vtool" "virtualenv<20.22" &&
        PYTHONPATH="$BASE/vtool" timeout 120 "$PY2" -m virtualenv -q -p "$PY2" "$BASE/venv" &&
        timeout 900 "$BASE/venv/bin/pip" install -q --disable-pip-version-check -c "$BASE/constraints.txt" autobahntestsuite==0.8.2 ||
        { echo "autobahn: installing wstest failed" >&2; exit 1; }
fi
[ -x "$BIN" ] || { echo "autobahn: no binary at $BIN (cargo build --release -p ringcast)" >&2; exit 1; }

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')
OUT=$BASE/reports/$NAME
rm -rf "$OUT"
"$BIN" --listen "127.0.0.1:$PORT" --shards 2 --max-message-size 16777216 --drain-timeout 2s --log warn --deflate \
    >"$OUT.server.log" 2>&1 &
SRV=$!
trap 'kill "$SRV" 2>/dev/null; wait "$SRV" 2>/dev/null' EXIT
for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
    sleep 0.1
done
cat >"$BASE/spec-$NAME.json" <<SPEC
{"outdir": "$OUT", "servers": [{"agent": "ringcast", "url": "ws://127.0.0.1:$PORT/echo"}],
 "cases": $CASES, "exclude-cases": [], "exclude-agent-cases": {}}
SPEC
(cd "$BASE" && PYTHONWARNINGS=ignore timeout -k 10 ${AUTOBAHN_TIMEOUT:-5400} venv/bin/wstest -m fuzzingclient -s "spec-$NAME.json") \
    >"$OUT.wstest.log" 2>&1 || echo "autobahn: wstest exited with $? (see $OUT.wstest.log)" >&2
[ -f "$OUT/index.json" ] || { echo "autobahn: no report (see $OUT.wstest.log)" >&2; exit 1; }
python3 - "$OUT" <<'PY'
import collections, json, os, sys
out = sys.argv[1]
failed = False
for agent, cases in json.load(open(os.path.join(out, "index.json"))).items():
    beh = collections.Counter(v["behavior"] for v in cases.values())
    print(f"{agent}: {len(cases)} cases: " + ", ".join(f"{k} {n}" for k, n in sorted(beh.items())))
    for c, v in sorted(cases.items(), key=lambda kv: tuple(int(x) for x in kv[0].split("."))):
        if v["behavior"] != "OK" or v["behaviorClose"] != "OK":
            print(f"  {c}: {v['behavior']} (close {v['behaviorClose']}, code {v.get('remoteCloseCode')})")
        failed |= "FAILED" in (v["behavior"], v["behaviorClose"])
print(f"report: {out}/index.html")
sys.exit(3 if failed else 0)
PY
