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
import random
import re
import ssl
import tempfile
import subprocess
import sys
import urllib.request

import websockets
from websockets.exceptions import ConnectionClosed
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory

BIN = os.environ.get("RINGCAST_BIN", "target/debug/ringcast")


def start_server(*args, tls=False):
    """Starts the node; returns it and its plaintext address (and, with
    `tls`, its TLS address too)."""
    proc = subprocess.Popen(
        [BIN, "--listen", "127.0.0.1:0", "--shards", "2", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    addr = tls_addr = None
    for line in proc.stdout:
        m = re.match(r"ringcast listening on (https?)://(\S+)", line)
        if m and m.group(1) == "http" and addr is None:
            addr = m.group(2)
        if m and m.group(1) == "https" and tls_addr is None:
            tls_addr = m.group(2)
        if line.startswith("  health"):
            break
    if addr is None or (tls and tls_addr is None):
        proc.kill()
        raise SystemExit("server did not start")
    return (proc, addr, tls_addr) if tls else (proc, addr)


def make_pki(directory):
    """A test CA and a certificate it signed for localhost, made with the
    openssl command line: returns (ca, cert chain, key) paths."""
    def run(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=directory)
    run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=ringcast test CA")
    run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", "key.pem", "-out", "leaf.csr", "-subj", "/CN=localhost")
    with open(os.path.join(directory, "san.ext"), "w") as f:
        f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    run("x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "leaf.pem", "-days", "2", "-extfile", "san.ext")
    with open(os.path.join(directory, "chain.pem"), "w") as f:
        for part in ("leaf.pem", "ca.pem"):
            with open(os.path.join(directory, part)) as p:
                f.write(p.read())
    return [os.path.join(directory, n) for n in ("ca.pem", "chain.pem", "key.pem")]


async def over_tls(tls_addr, addr, ca):
    """wss:// and https:// with Python's ssl: a subscriber (compressed, as
    websockets offers by default), the echo, an event stream, publishing."""
    ctx = ssl.create_default_context(cafile=ca)
    port = tls_addr.rsplit(":", 1)[1]
    host = f"localhost:{port}"
    async with websockets.connect(f"wss://{host}/ws/secure?format=json", ssl=ctx) as ws:
        assert ws.response.headers["Sec-WebSocket-Extensions"].startswith("permessage-deflate")
        await settle(addr, "secure", [ws], data=lambda m: json.loads(m)["data"])
        ids = []
        for i in range(3):
            req = urllib.request.Request(f"https://{host}/pub/secure", data=chat_message(i).encode(),
                                         headers={"Content-Type": "text/plain"}, method="POST")
            with urllib.request.urlopen(req, timeout=10, context=ctx) as r:
                ids.append(json.load(r)["id"])
        got = []
        while len(got) < 3:
            m = json.loads(await asyncio.wait_for(ws.recv(), 5))
            if m["data"] != "probe":
                got.append(m)
        for i, m in enumerate(got):
            assert (m["id"], m["data"]) == (ids[i], chat_message(i)), m
        tls_object = ws.transport.get_extra_info("ssl_object")
        assert tls_object.version() == "TLSv1.3", tls_object.version()
        assert tls_object.selected_alpn_protocol() in (None, "http/1.1")
    async with websockets.connect(f"wss://{host}/echo", ssl=ctx, max_size=None) as ws:
        payload = bytes(range(256)) * 300
        await ws.send(payload)
        assert await ws.recv() == payload
    # An event stream over HTTPS, resumed after the first id.
    req = urllib.request.Request(f"https://{host}/sse/secure", headers={"Last-Event-ID": ids[0]})
    with urllib.request.urlopen(req, timeout=10, context=ctx) as r:
        events = []
        for raw in r:
            line = raw.decode().rstrip("\n")
            if line.startswith("data:"):
                events.append(line[5:])
            if len(events) == 2:
                break
    assert events == [chat_message(1), chat_message(2)], events
    # TLS 1.2 only works too.
    ctx12 = ssl.create_default_context(cafile=ca)
    ctx12.maximum_version = ssl.TLSVersion.TLSv1_2
    async with websockets.connect(f"wss://{host}/echo", ssl=ctx12) as ws:
        await ws.send("over TLS 1.2")
        assert await ws.recv() == "over TLS 1.2"
        assert ws.transport.get_extra_info("ssl_object").version() == "TLSv1.2"
    # A client that does not trust the CA is refused by its own check.
    try:
        async with websockets.connect(f"wss://{host}/echo", ssl=ssl.create_default_context()):
            raise AssertionError("an untrusted certificate was accepted")
    except ssl.SSLCertVerificationError:
        pass


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
        # "From now" is when the channel's owner shard takes the
        # subscription, which may come after a publish made right after the
        # handshake: wait until a probe arrives.
        while True:
            publish(addr, "py", "probe")
            try:
                probe = json.loads(await asyncio.wait_for(ws.recv(), 0.5))
                assert probe["data"] == "probe", probe
                break
            except asyncio.TimeoutError:
                pass
        ids = [publish(addr, "py", f"m{i}") for i in range(5)]
        got = []
        while len(got) < 5:
            m = json.loads(await asyncio.wait_for(ws.recv(), 5))
            if m["data"] != "probe":  # a probe that came late
                got.append(m)
        for i, m in enumerate(got):
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


def metric(addr, name):
    """The sum over shards of counter `name` in /metrics."""
    with urllib.request.urlopen(f"http://{addr}/metrics", timeout=10) as r:
        text = r.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(f"ringcast_{name}{{")
    )


def chat_message(i):
    """A JSON chat message of 200 to 2,000 bytes, as IM traffic looks."""
    words = ["see", "you", "at", "the", "station", "tomorrow", "bring", "the", "tickets", "ok"]
    text = " ".join(words[(i * 7 + k) % len(words)] for k in range(20 + (i * 37) % 300))
    return json.dumps({"user": f"user{i % 13}", "room": "lobby", "seq": i, "text": text})[:2000]


async def deflate_echo(addr):
    async with websockets.connect(f"ws://{addr}/echo", max_size=None) as ws:
        answer = ws.response.headers["Sec-WebSocket-Extensions"]
        assert answer.startswith("permessage-deflate; server_no_context_takeover"), answer
        before = metric(addr, "inflated_messages_total")
        for i in range(5):
            m = chat_message(i)
            await ws.send(m)
            assert await ws.recv() == m
        payload = bytes(range(256)) * 400
        await ws.send(payload)
        assert await ws.recv() == payload
        await ws.send(iter(["frag" * 100, "ment" * 100, "ed"]))
        assert await ws.recv() == "frag" * 100 + "ment" * 100 + "ed"
        assert metric(addr, "inflated_messages_total") - before == 7
        await ws.close()


async def settle(addr, channel, sockets, data=lambda m: m):
    """Publishes "probe" until every one of `sockets` (subscribers of
    `channel`; `data` takes the payload out of what they receive) has
    received one: a subscription starts "from now" as its channel's owner
    shard sees it, which can be after a publish made right after the
    handshake. Probes that come late are for the caller to skip."""
    waiting = list(sockets)
    while waiting:
        publish(addr, channel, "probe")
        still = []
        for ws in waiting:
            try:
                assert data(await asyncio.wait_for(ws.recv(), 0.5)) == "probe"
            except asyncio.TimeoutError:
                still.append(ws)
        waiting = still


class WireSizes(ClientPerMessageDeflateFactory):
    """permessage-deflate that records each compressed message's size on
    the wire (the frames' payload before inflating)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.sizes = []

    def process_response_params(self, params, accepted_extensions):
        extension = super().process_response_params(params, accepted_extensions)
        decode, sizes = extension.decode, self.sizes

        def recording(frame, **kwargs):
            if frame.rsv1:
                sizes.append(len(frame.data))
            return decode(frame, **kwargs)

        extension.decode = recording
        return extension


async def deflate_broadcast(addr):
    """Ten compressing subscribers and one plain: every message arrives
    whole to each, and is compressed once per shard, not per subscriber."""
    url = f"ws://{addr}/ws/lobby"
    wide_sizes = WireSizes(client_max_window_bits=True)
    compressed = [await websockets.connect(url, compression=None, extensions=[wide_sizes])]
    compressed += [await websockets.connect(url) for _ in range(9)]
    plain = await websockets.connect(url, compression=None)
    # A client that limits the server's window to 10 bits (1 KiB).
    narrow_sizes = WireSizes(server_max_window_bits=10)
    narrow = await websockets.connect(url, compression=None, extensions=[narrow_sizes])
    assert "server_max_window_bits=10" in narrow.response.headers["Sec-WebSocket-Extensions"]
    assert "Sec-WebSocket-Extensions" not in plain.response.headers
    try:
        await settle(addr, "lobby", compressed + [plain, narrow])
        before = metric(addr, "deflate_messages_total")
        sent = [chat_message(i) for i in range(20)]
        # For the narrow window: a block that repeats only 1.5 KiB later
        # (a 32 KiB window would refer back to it), around text that
        # compresses within 1 KiB.
        rng = random.Random(7)
        block = "".join(chr(rng.randrange(33, 123)) for _ in range(1500))
        sent.append(block + "ab" * 400 + block)
        for m in sent:
            publish(addr, "lobby", m)
        for ws in compressed + [plain, narrow]:
            got = []
            while len(got) < len(sent):
                m = await asyncio.wait_for(ws.recv(), 5)
                if m != "probe":  # one that came late
                    got.append(m)
            assert got == sent
        # The last message's block repeats 1.5 KiB later: a 32 KiB window
        # refers back to it, a 1 KiB one cannot (zlib's inflater would not
        # notice a distance over the agreed window, so compare sizes).
        assert len(wide_sizes.sizes) == len(narrow_sizes.sizes) == len(sent)
        assert wide_sizes.sizes[-1] + 1000 < narrow_sizes.sizes[-1], (wide_sizes.sizes, narrow_sizes.sizes)
        made = metric(addr, "deflate_messages_total") - before
        # Two shards, two windows (15 and 10): at most 4 per message.
        assert len(sent) <= made <= 4 * len(sent), made
        saved = metric(addr, "deflate_bytes_out_total") / metric(addr, "deflate_bytes_in_total")
        assert saved < 0.6, saved
    finally:
        for ws in compressed + [plain, narrow]:
            await ws.close()


async def deflate_bomb_is_1009(addr):
    async with websockets.connect(f"ws://{addr}/echo", max_size=None) as ws:
        # 8 MiB of zeros compress to a few KiB: small on the wire, refused
        # once inflated past --max-message-size.
        try:
            await ws.send(bytes(8 << 20))
            await asyncio.wait_for(ws.recv(), 5)
            raise AssertionError("expected the server to close")
        except ConnectionClosed as e:
            assert e.rcvd is not None and e.rcvd.code == 1009, e
            assert "inflated" in e.rcvd.reason, e.rcvd.reason


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
    proc, addr = start_server("--max-message-size", "1MiB", "--deflate", "--deflate-min-size", "64")
    try:
        for check in [deflate_echo, deflate_broadcast, deflate_bomb_is_1009]:
            await check(addr)
            print(f"ok   {check.__name__}")
    finally:
        proc.kill()
    with tempfile.TemporaryDirectory() as pki:
        ca, chain, key = make_pki(pki)
        proc, addr, tls_addr = start_server(
            "--listen-tls", "127.0.0.1:0", "--tls-cert", chain, "--tls-key", key, "--deflate", tls=True
        )
        try:
            await over_tls(tls_addr, addr, ca)
            print("ok   over_tls")
        finally:
            proc.kill()
    print(f"python clients (websockets {websockets.__version__}): all checks passed")


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except AssertionError as e:
        print(f"FAIL {e!r}", file=sys.stderr)
        raise
