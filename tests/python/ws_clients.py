"""ringcast against the Python `websockets` library, an independent
implementation of RFC 6455 (and an independent SSE/HTTP client from the
standard library).

Run by `make test` (the Makefile creates the virtualenv). Starts the server
binary given by $RINGCAST_BIN on an ephemeral port, checks, exits non-zero
on the first failure.
"""

import asyncio
import json
import os
import re
import subprocess
import sys
import urllib.request

import websockets
from websockets.exceptions import ConnectionClosed

BIN = os.environ.get("RINGCAST_BIN", "target/debug/ringcast")


def start_server(*args):
    proc = subprocess.Popen(
        [BIN, "--listen", "127.0.0.1:0", "--shards", "2", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    addr = None
    for line in proc.stdout:
        m = re.match(r"ringcast listening on http://(\S+)", line)
        if m and addr is None:
            addr = m.group(1)
        if line.startswith("  health"):
            break
    if addr is None:
        proc.kill()
        raise SystemExit("server did not start")
    return proc, addr


def publish(addr, channel, body, content_type="text/plain"):
    req = urllib.request.Request(
        f"http://{addr}/pub/{channel}",
        data=body if isinstance(body, bytes) else body.encode(),
        headers={"Content-Type": content_type},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.load(r)["id"]


async def echo(addr):
    async with websockets.connect(f"ws://{addr}/echo", max_size=None) as ws:
        await ws.send("hello κόσμε")
        assert await ws.recv() == "hello κόσμε"
        payload = bytes(range(256)) * 1000
        await ws.send(payload)
        assert await ws.recv() == payload
        # A fragmented message: websockets sends one frame per item.
        await ws.send(iter(["frag", "ment", "ed"]))
        assert await ws.recv() == "fragmented"
        pong = await ws.ping(b"probe")
        await asyncio.wait_for(pong, 5)
        await ws.close(code=4000, reason="done")
        assert ws.close_code == 4000, ws.close_code


async def too_big_is_1009(addr):
    async with websockets.connect(f"ws://{addr}/echo", max_size=None) as ws:
        # The server refuses the message as soon as its header announces the
        # size, then closes TCP; the client may learn that while still
        # sending the payload or when it next reads.
        try:
            await ws.send(b"x" * (2 << 20))
            await asyncio.wait_for(ws.recv(), 5)
            raise AssertionError("expected the server to close")
        except ConnectionClosed as e:
            assert e.rcvd is not None and e.rcvd.code == 1009, e


async def subscribe_and_resume(addr):
    async with websockets.connect(f"ws://{addr}/ws/py?format=json") as ws:
        ids = [publish(addr, "py", f"m{i}") for i in range(5)]
        for i in range(5):
            m = json.loads(await asyncio.wait_for(ws.recv(), 5))
            assert m == {"type": "message", "ch": "py", "id": ids[i], "data": f"m{i}"}, m
    async with websockets.connect(f"ws://{addr}/ws/py?since={ids[1]}") as ws:
        got = [await asyncio.wait_for(ws.recv(), 5) for _ in range(3)]
        assert got == ["m2", "m3", "m4"], got
    bin_id = publish(addr, "py", b"\x00\xff", "application/octet-stream")
    assert bin_id.split("-")[0] == ids[0].split("-")[0]


async def multiplexed(addr):
    async with websockets.connect(f"ws://{addr}/ws") as a, websockets.connect(f"ws://{addr}/ws") as b:
        for ws in (a, b):
            await ws.send(json.dumps({"type": "subscribe", "ch": "room", "rid": "s"}))
            while json.loads(await asyncio.wait_for(ws.recv(), 5))["type"] != "subscribed":
                pass
        await a.send(json.dumps({"type": "presence", "ch": "room", "rid": 42}))
        while True:
            m = json.loads(await asyncio.wait_for(a.recv(), 5))
            if m["type"] == "presence":
                assert m["rid"] == 42 and len(m["clients"]) == 2, m
                break
        publish(addr, "room", "to everyone")
        for ws in (a, b):
            while True:
                m = json.loads(await asyncio.wait_for(ws.recv(), 5))
                if m["type"] == "message":
                    assert m["data"] == "to everyone", m
                    break
        await a.send("not json")
        m = json.loads(await asyncio.wait_for(a.recv(), 5))
        assert m["type"] == "error" and m["code"] == "bad_json", m


def sse_stream(addr):
    req = urllib.request.Request(f"http://{addr}/sse/stream")
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.headers["Content-Type"] == "text/event-stream"
        first = publish(addr, "stream", "line one\nline two")
        lines = []
        while "data:line two" not in lines or lines[-1] != "":
            lines.append(r.readline().decode().rstrip("\n"))
        # The stream states its starting position (an id-only event that
        # dispatches nothing), then the message, split on its line break.
        epoch = first.split("-")[0]
        assert lines[:2] == ["retry:3000", ""], lines
        assert lines[2].startswith(f"id:{epoch}-") and lines[3] == "", lines
        assert lines[-4:] == [f"id:{first}", "data:line one", "data:line two", ""], lines


async def shutdown_sends_1001(proc, addr):
    async with websockets.connect(f"ws://{addr}/ws/bye") as ws:
        proc.terminate()
        try:
            await asyncio.wait_for(ws.recv(), 10)
            raise AssertionError("expected a close")
        except ConnectionClosed as e:
            assert e.rcvd is not None and e.rcvd.code == 1001, e
    assert proc.wait(timeout=15) == 0


SECRET = "a-python-secret-of-at-least-32-bytes"


def jwt(claims):
    """An HS256 JWT, made with the standard library as any backend could."""
    import base64
    import hashlib
    import hmac

    def b64(raw):
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps(claims).encode())
    sig = hmac.new(SECRET.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(sig)}"


def refused_status(exc):
    return exc.response.status_code, exc.response.body.decode().strip()


async def tokens_and_tickets(addr):
    """Client tokens with the `websockets` library: header, `auth`,
    expiry, another channel, and a single-use ticket in the URL."""
    import time

    now = int(time.time())
    ann = jwt({"sub": "ann", "exp": now + 60, "channels": ["room:*"]})
    bearer = {"Authorization": f"Bearer {ann}"}
    try:
        await websockets.connect(f"ws://{addr}/ws/room:1")
        raise AssertionError("a subscriber without a token was let in")
    except websockets.exceptions.InvalidStatus as e:
        assert refused_status(e) == (401, "token required: send Authorization: Bearer <token>"), e
    try:
        await websockets.connect(f"ws://{addr}/ws/secret", additional_headers=bearer)
        raise AssertionError("a token for room:* read secret")
    except websockets.exceptions.InvalidStatus as e:
        assert refused_status(e) == (403, "the token does not allow channel secret"), e
    async with websockets.connect(f"ws://{addr}/ws/room:1", additional_headers=bearer) as ws:
        await asyncio.sleep(0.1)
        publish(addr, "room:1", "for ann")
        assert await asyncio.wait_for(ws.recv(), 10) == "for ann"
    # A ticket, for a client that cannot set headers: good once.
    req = urllib.request.Request(f"http://{addr}/ticket", method="POST", headers=bearer, data=b"")
    with urllib.request.urlopen(req, timeout=10) as r:
        ticket = json.load(r)["ticket"]
    async with websockets.connect(f"ws://{addr}/ws?ticket={ticket}") as ws:
        await ws.send(json.dumps({"type": "subscribe", "ch": "room:2"}))
        assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "subscribed"
    try:
        await websockets.connect(f"ws://{addr}/ws?ticket={ticket}")
        raise AssertionError("a ticket was good twice")
    except websockets.exceptions.InvalidStatus as e:
        assert e.response.status_code == 401, e
    # An expired token sent with `auth`: 4001.
    expired = jwt({"sub": "ann", "exp": now - 5, "channels": ["room:*"]})
    async with websockets.connect(f"ws://{addr}/ws") as ws:
        await ws.send(json.dumps({"type": "auth", "token": expired}))
        error = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert error["code"] == "token_rejected", error
        try:
            await asyncio.wait_for(ws.recv(), 10)
            raise AssertionError("expected a close")
        except ConnectionClosed as e:
            assert (e.rcvd.code, e.rcvd.reason) == (4001, "token expired"), e


async def main():
    token_proc, token_addr = start_server("--jwt-secret", SECRET)
    try:
        await tokens_and_tickets(token_addr)
        print("ok   tokens_and_tickets")
    finally:
        token_proc.kill()
    proc, addr = start_server("--max-message-size", "1MiB")
    checks = [echo, too_big_is_1009, subscribe_and_resume, multiplexed]
    try:
        for check in checks:
            await check(addr)
            print(f"ok   {check.__name__}")
        sse_stream(addr)
        print("ok   sse_stream")
        await shutdown_sends_1001(proc, addr)
        print("ok   shutdown_sends_1001")
    finally:
        if proc.poll() is None:
            proc.kill()
    print(f"python clients (websockets {websockets.__version__}): all checks passed")


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except AssertionError as e:
        print(f"FAIL {e!r}", file=sys.stderr)
        raise
