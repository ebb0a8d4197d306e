// The client against an in-memory node (test/support/fake-node.mjs):
// fallback, resume, de-duplication, resets, probing, dead connections,
// requests and shutdown — through the public API only.
import { test } from "node:test";
import assert from "node:assert/strict";
import { connect } from "../ringcast.js";
import { FakeNode, MemoryStorage, until, sleep } from "./support/fake-node.mjs";

const unhandled = [];
process.on("unhandledRejection", (e) => unhandled.push(e));
process.on("uncaughtException", (e) => unhandled.push(e));

const BASE = "http://node.test";

/** A client of `node` with fast timings, and everything it reports. */
function client(t, node, opts = {}) {
  const rc = connect(BASE, {
    shared: false,
    WebSocket: node.WebSocket,
    fetch: node.fetch,
    storage: null,
    backoff: { min: 10, max: 40 },
    openTimeout: 500,
    probeInterval: 1e6,
    pollInterval: 20,
    ...opts,
  });
  const ev = { states: [], transports: [], errors: [], resets: [], presence: [] };
  rc.on("state", (s) => ev.states.push(s));
  rc.on("transport", (n) => ev.transports.push(n));
  rc.on("error", (e) => ev.errors.push(e));
  rc.on("reset", (r) => ev.resets.push(r));
  rc.on("presence", (p) => ev.presence.push(p));
  t.after(() => rc.close());
  return { rc, ev };
}

/** Subscribes and records `id:data` of every message. */
function follow(rc, ch, opts) {
  const got = [];
  const sub = rc.subscribe(ch, (m) => got.push(m), opts);
  got.sub = sub;
  got.ids = () => got.map((m) => m.id);
  got.seqs = () => got.map((m) => Number(m.id.split("-")[1]));
  return got;
}

const transportsOf = (node) => node.log.map((r) => r.transport).filter(Boolean);

test("fallback: ws closed before open, sse 501, then long polling", async (t) => {
  const node = new FakeNode();
  node.off = new Set(["ws", "sse"]);
  const { rc, ev } = client(t, node);
  const got = follow(rc, "a");
  await until(() => rc.state === "open" && rc.transport === "longpoll", 3000, "longpoll open");
  assert.deepEqual(transportsOf(node).slice(0, 3), ["ws", "sse", "longpoll"]);
  assert.deepEqual(ev.transports, ["longpoll"]);
  assert.deepEqual(ev.states, ["open"]);
  assert.match(ev.errors[0].message, /^ws refused: closed before open \(1006\)/);
  assert.equal(ev.errors[0].kind, "refused");
  assert.equal(ev.errors[1].message, "sse refused: 501 the sse transport is off on this node; it offers longpoll,poll");
  assert.equal(ev.errors[1].status, 501);
  assert.equal(ev.errors[1].transport, "sse");
  node.publish("a", "hi");
  await until(() => got.length === 1);
  assert.equal(got[0].data, "hi");
});

test("fallback: a subset of transports restricts the order", async (t) => {
  const node = new FakeNode();
  node.off = new Set(["sse", "longpoll"]);
  const { rc, ev } = client(t, node, { transports: ["sse", "poll"] });
  follow(rc, "a");
  await until(() => rc.transport === "poll");
  assert.deepEqual([...new Set(transportsOf(node))], ["sse", "poll"]);
  assert.equal(ev.errors[0].message, "sse refused: 501 the sse transport is off on this node; it offers ws,poll");
});

test("fallback: a WebSocket that does not open within openTimeout is given up", async (t) => {
  const node = new FakeNode();
  node.wsHang = true;
  const { rc, ev } = client(t, node, { openTimeout: 80, transports: ["ws", "sse"] });
  follow(rc, "a");
  await until(() => rc.transport === "sse");
  assert.equal(ev.errors[0].kind, "timeout");
  assert.match(ev.errors[0].message, /ws timed out: not open within 80 ms/);
});

test("fallback: a handshake failure reported by error alone (no close) falls back at once", async (t) => {
  const node = new FakeNode();
  node.off = new Set(["ws"]);
  node.wsErrorOnly = true;
  const { rc, ev } = client(t, node, { openTimeout: 5000 });
  follow(rc, "a");
  const t0 = Date.now();
  await until(() => rc.transport === "sse");
  assert.ok(Date.now() - t0 < 1000, "did not wait for openTimeout");
  assert.equal(ev.errors[0].message, "ws refused: the handshake failed");
});

test("unreachable node: the round ends at the first network error, backs off, then connects", async (t) => {
  const node = new FakeNode();
  node.down = true;
  const { rc, ev } = client(t, node, { transports: ["sse", "poll"], random: () => 0 });
  follow(rc, "a");
  await until(() => node.log.length >= 3, 3000, "three attempts");
  // The node is unreachable: polling would fare no better than SSE.
  assert.deepEqual([...new Set(transportsOf(node))], ["sse"]);
  assert.equal(ev.errors[0].kind, "network");
  assert.match(ev.errors[0].message, /^sse failed: fetch failed/);
  assert.equal(rc.state, "connecting");
  node.down = false;
  await until(() => rc.state === "open");
  assert.equal(rc.transport, "sse");
  assert.deepEqual(ev.states, ["open"]); // "connecting" until the first open
});

test("reconnect delays grow until a connection has been healthy", async (t) => {
  const node = new FakeNode();
  const { rc } = client(t, node, {
    transports: ["sse"],
    random: () => 0.999,
    backoff: { min: 40, max: 5000 },
    healthyAfter: 250,
  });
  follow(rc, "a");
  const opens = () => node.log.filter((r) => r.transport === "sse").length;
  /** Drops the stream once open; returns ms until the client asks again. */
  const gap = async () => {
    await until(() => node.streams.size === 1, 3000, "stream");
    const n = opens();
    const dropped = Date.now();
    node.dropAll();
    await until(() => opens() > n, 5000, "reconnect");
    return Date.now() - dropped;
  };
  const gaps = [await gap(), await gap(), await gap()];
  // Full jitter drawn at the top of each window: ~40, ~80, ~160 ms.
  assert.ok(gaps[0] >= 35 && gaps[0] < 75, `first: ${gaps}`);
  assert.ok(gaps[1] >= 75 && gaps[1] < 150, `second: ${gaps}`);
  assert.ok(gaps[2] >= 155 && gaps[2] < 300, `third: ${gaps}`);
  await until(() => node.streams.size === 1);
  await sleep(350); // healthy now
  const after = await gap();
  assert.ok(after < 75, `after a healthy connection: ${after} (${gaps})`);
});

test("503 ends the round without trying the next transport", async (t) => {
  const node = new FakeNode();
  let refusals = 0;
  node.intercept = (req) => {
    if (req.transport === "sse" && refusals++ < 2) {
      return new Response("draining", { status: 503, headers: { "Retry-After": "0" } });
    }
  };
  const { rc, ev } = client(t, node, { transports: ["sse", "poll"] });
  follow(rc, "a");
  await until(() => rc.transport === "sse");
  assert.deepEqual([...new Set(transportsOf(node))], ["sse"]);
  assert.equal(ev.errors[0].kind, "unavailable");
  assert.equal(ev.errors[0].retryAfter, 0);
  assert.equal(ev.errors[0].message, "sse refused: 503 draining");
});

test("the transport that worked is remembered for the session", async (t) => {
  const node = new FakeNode();
  node.off = new Set(["ws"]);
  const storage = new MemoryStorage();
  const first = client(t, node, { storage });
  follow(first.rc, "a");
  await until(() => first.rc.transport === "sse");
  first.rc.close();
  node.log.length = 0;
  const second = client(t, node, { storage });
  follow(second.rc, "a");
  await until(() => second.rc.transport === "sse");
  assert.equal(transportsOf(node)[0], "sse", "starts with what worked, not ws");
});

test("ws: resume with since, publish and presence over the socket, binary and ephemeral", async (t) => {
  const node = new FakeNode();
  for (const d of ["one", "two", "three"]) node.publish("a", d);
  const { rc, ev } = client(t, node);
  const got = follow(rc, "a", { since: `${node.epoch}-1` });
  await until(() => got.length === 2);
  assert.equal(rc.transport, "ws");
  assert.deepEqual(got.map((m) => m.data), ["two", "three"]);
  assert.deepEqual(got[0], { ch: "a", id: `${node.epoch}-2`, data: "two" });
  assert.equal(got.sub.lastId, `${node.epoch}-3`);

  const { id } = await rc.publish("a", "four");
  assert.equal(id, `${node.epoch}-4`);
  const bin = await rc.publish("a", new Uint8Array([0, 255]));
  assert.equal(bin.id, `${node.epoch}-5`);
  assert.deepEqual(await rc.publish("a", "typing…", { ephemeral: true }), { id: null });
  await until(() => got.length === 5);
  assert.equal(got[2].data, "four");
  assert.deepEqual(got[3].data, new Uint8Array([0, 255]));
  assert.deepEqual(got[4], { ch: "a", id: null, data: "typing…", ephemeral: true });
  assert.deepEqual(node.log.filter((r) => r.path.startsWith("/pub")), [], "no HTTP publish while on ws");

  const socket = [...node.sockets][0];
  assert.deepEqual(await rc.presence("a"), [socket.client]);
  assert.equal(rc.clientId, socket.client, "the id presence lists give this connection");
  socket.frame({ type: "joined", ch: "a", client: "00000000000000ff" });
  await until(() => ev.presence.length === 1);
  assert.deepEqual(ev.presence[0], { ch: "a", type: "joined", client: "00000000000000ff" });
  assert.deepEqual(socket.sent[0], { type: "subscribe", ch: "a", rid: 1, since: `${node.epoch}-1` });
});

test("ws: a refused publish rejects with the server's reason and reaches error", async (t) => {
  const node = new FakeNode();
  node.forbidPublish = true;
  const { rc, ev } = client(t, node);
  follow(rc, "a");
  await until(() => rc.state === "open");
  await assert.rejects(rc.publish("a", "x"), (err) => {
    assert.equal(err.message, "publish to a refused: forbidden: clients may not publish on this server (--client-publish)");
    assert.equal(err.code, "forbidden");
    return true;
  });
  assert.equal(ev.errors.at(-1).code, "forbidden");
  await assert.rejects(rc.publish("bad name", "x"), TypeError);
  await assert.rejects(rc.publish("a", { not: "bytes" }), TypeError);
});

test("de-duplication: a message that arrives twice (or late) is delivered once", async (t) => {
  const node = new FakeNode();
  const { rc } = client(t, node);
  const got = follow(rc, "a");
  await until(() => rc.state === "open");
  node.publish("a", "1");
  node.publish("a", "2");
  await until(() => got.length === 2);
  const socket = [...node.sockets][0];
  const [m1, m2] = node.channel("a").history;
  socket.deliver(m2); // repeated
  socket.deliver(m1); // older
  node.publish("a", "3");
  await until(() => got.length >= 3);
  await sleep(30);
  assert.deepEqual(got.seqs(), [1, 2, 3]);
  assert.equal(rc.stats.duplicates, 2);
});

for (const transport of ["ws", "sse", "longpoll", "poll"]) {
  test(`${transport}: every channel resumes from its last id after the connection drops`, async (t) => {
    const node = new FakeNode();
    const { rc, ev } = client(t, node, { transports: [transport] });
    const a = follow(rc, "a");
    const b = follow(rc, "b");
    await until(() => rc.state === "open");
    await sleep(transport === "longpoll" ? 1100 : 50); // long polling is verified by its first poll
    node.publish("a", "a1");
    node.publish("b", "b1");
    node.publish("a", "a2");
    await until(() => a.length === 2 && b.length === 1, 3000, "first messages");
    node.down = true;
    node.dropAll();
    await until(() => rc.state === "reconnecting", 3000, "reconnecting");
    node.publish("a", "a3");
    node.publish("b", "b2");
    node.publish("b", "b3");
    const before = node.log.length;
    node.down = false;
    await until(() => a.length === 3 && b.length === 3, 4000, "resumed messages");
    await sleep(50);
    assert.deepEqual(a.map((m) => m.data), ["a1", "a2", "a3"]);
    assert.deepEqual(b.map((m) => m.data), ["b1", "b2", "b3"]);
    // The reconnection asked for exactly what was missing.
    const again = node.log.slice(before).find((r) => r.transport === transport);
    if (transport === "ws") {
      const socket = [...node.sockets].at(-1);
      const subs = socket.sent.filter((m) => m.type === "subscribe").map((m) => [m.ch, m.since]);
      assert.deepEqual(subs, [["a", `${node.epoch}-2`], ["b", `${node.epoch}-1`]]);
    } else {
      assert.equal(again.params.since, `${node.epoch};a=2,b=1`);
    }
    assert.equal(ev.resets.length, 0);
    assert.equal(rc.stats.reconnects >= 1, true);
  });
}

for (const transport of ["ws", "sse", "poll"]) {
  test(`${transport}: a node restart gives a reset (epoch) and the new epoch's messages`, async (t) => {
    const node = new FakeNode();
    const { rc, ev } = client(t, node, { transports: [transport] });
    const a = follow(rc, "a");
    await until(() => rc.state === "open");
    await sleep(30);
    node.publish("a", "old1");
    node.publish("a", "old2");
    await until(() => a.length === 2);
    const oldEpoch = node.epoch;
    node.down = true;
    node.restart();
    node.publish("a", "new1"); // seq 1 and 2 again, in a new epoch
    node.publish("a", "new2");
    node.down = false;
    await until(() => a.length === 4, 3000, "new epoch's messages");
    assert.deepEqual(a.map((m) => m.data), ["old1", "old2", "new1", "new2"]);
    assert.deepEqual(ev.resets, [{ ch: "a", reason: "epoch", missed: null, since: `${oldEpoch}-2` }]);
    assert.equal(a.sub.lastId, `${node.epoch}-2`);
    node.publish("a", "new3");
    await until(() => a.length === 5);
    assert.equal(ev.resets.length, 1);
  });
}

test("poll: evicted history gives a reset with the count missed", async (t) => {
  const node = new FakeNode({ historySize: 3 });
  const { rc, ev } = client(t, node, { transports: ["poll"] });
  const a = follow(rc, "a");
  await until(() => rc.state === "open");
  node.publish("a", "1");
  await until(() => a.length === 1);
  node.down = true;
  await until(() => ev.errors.length > 0);
  for (let i = 2; i <= 10; i++) node.publish("a", String(i));
  node.down = false;
  await until(() => a.length === 4, 3000);
  assert.deepEqual(ev.resets, [{ ch: "a", reason: "evicted", missed: 6, since: `${node.epoch}-1` }]);
  assert.deepEqual(a.map((m) => m.data), ["1", "8", "9", "10"]);
});

test("a throwing handler neither skips nor repeats, and its error reaches error", async (t) => {
  const node = new FakeNode();
  const { rc, ev } = client(t, node, { transports: ["sse"] });
  const seen = [];
  let lastIdInHandler = null;
  const sub = rc.subscribe("a", (m) => {
    seen.push(m.data);
    lastIdInHandler = sub.lastId;
    if (m.data === "2") throw new Error("boom");
  });
  rc.subscribe("b", async (m) => {
    throw new Error(`async boom ${m.data}`);
  });
  await until(() => rc.state === "open");
  node.publish("a", "1");
  node.publish("a", "2");
  node.publish("b", "x");
  await until(() => seen.length === 2 && ev.errors.length === 2);
  assert.equal(ev.errors[0].kind, "handler");
  assert.equal(ev.errors[0].message, `handler for a threw on ${node.epoch}-2: boom`);
  assert.equal(ev.errors[0].cause.message, "boom");
  assert.match(ev.errors[1].message, /handler for b threw on .*: async boom x/);
  // The position moved before the handler ran, and stays there.
  assert.equal(lastIdInHandler, `${node.epoch}-2`);
  assert.equal(sub.lastId, `${node.epoch}-2`);
  // Drop the connection right after the throw: the resume point is past it.
  const before = node.log.length;
  node.dropAll();
  node.publish("a", "3");
  await until(() => seen.length === 3, 3000);
  await sleep(30);
  assert.deepEqual(seen, ["1", "2", "3"]);
  assert.equal(node.log.slice(before).find((r) => r.transport === "sse").params.since, `${node.epoch};a=2,b=1`);
});

test("a listener that throws is reported, and others still run", async (t) => {
  const node = new FakeNode();
  const { rc, ev } = client(t, node, { transports: ["sse"] });
  const states = [];
  rc.on("state", () => {
    throw new Error("listener bug");
  });
  rc.on("state", (s) => states.push(s));
  follow(rc, "a");
  await until(() => states.includes("open"));
  assert.equal(ev.errors[0].kind, "handler");
  assert.match(ev.errors[0].message, /"state" listener threw: listener bug/);
});

test("probing: switches to the better transport without losing or repeating", async (t) => {
  const node = new FakeNode();
  node.off = new Set(["ws"]);
  const { rc, ev } = client(t, node, { transports: ["ws", "sse"], probeInterval: 150 });
  const a = follow(rc, "a");
  await until(() => rc.transport === "sse");
  let n = 0;
  const publisher = setInterval(() => node.publish("a", String(++n)), 3);
  t.after(() => clearInterval(publisher));
  await sleep(200); // a probe fails meanwhile (ws still off)
  assert.ok(ev.errors.some((e) => e.probe && e.transport === "ws"), "a failed probe is reported");
  assert.equal(rc.transport, "sse");
  node.off.delete("ws");
  await until(() => rc.transport === "ws", 3000, "switch to ws");
  await sleep(60);
  clearInterval(publisher);
  await until(() => a.length === n, 2000, "every message");
  assert.deepEqual(a.seqs(), Array.from({ length: n }, (_, i) => i + 1));
  assert.equal(node.streams.size, 0, "the old stream was closed");
  assert.deepEqual(ev.transports, ["sse", "ws"]);
  assert.equal(rc.state, "open");
});

test("sse: one stream, re-opened with the composite cursor when channels change", async (t) => {
  const node = new FakeNode();
  const { rc } = client(t, node, { transports: ["sse"] });
  const a = follow(rc, "a");
  await until(() => rc.state === "open");
  node.publish("a", "1");
  await until(() => a.length === 1);
  // Three subscriptions in one tick: one new stream.
  const before = node.log.length;
  follow(rc, "b");
  follow(rc, "c");
  const d = follow(rc, "d");
  await until(() => node.log.length > before && node.streams.size === 1);
  const reopen = node.log.slice(before);
  assert.equal(reopen.length, 1);
  assert.equal(reopen[0].params.ch, "a,b,c,d");
  assert.equal(reopen[0].params.since, `${node.epoch};a=1`);
  node.publish("d", "d1");
  node.publish("a", "2");
  await until(() => a.length === 2 && d.length === 1);
  d.sub.unsubscribe();
  await until(() => node.log.length > before + 1);
  assert.equal(node.log.at(-1).params.ch, "a,b,c");
  node.publish("d", "d2");
  await sleep(30);
  assert.equal(d.length, 1, "no delivery after unsubscribe");
  assert.equal(d.sub.active, false);
});

test("sse: a stream silent for sseTimeout is replaced; heartbeats keep it", async (t) => {
  const node = new FakeNode();
  const { rc, ev } = client(t, node, { transports: ["sse"], sseTimeout: 120 });
  follow(rc, "a");
  await until(() => rc.state === "open");
  const beat = setInterval(() => node.streams.forEach((s) => s.comment()), 40);
  await sleep(300);
  clearInterval(beat);
  assert.equal(node.log.filter((r) => r.transport === "sse").length, 1, "heartbeats keep the stream");
  await until(() => node.log.filter((r) => r.transport === "sse").length === 2, 2000, "replaced");
  assert.equal(ev.errors[0].kind, "timeout");
  assert.equal(ev.errors[0].message, "sse: nothing received for 120 ms");
});

test("sse: a lagging reset ends the stream; the client resumes, no reset event", async (t) => {
  const node = new FakeNode();
  const { rc, ev } = client(t, node, { transports: ["sse"] });
  const a = follow(rc, "a");
  follow(rc, "b");
  await until(() => rc.state === "open");
  node.publish("a", "1");
  await until(() => a.length === 1);
  const before = node.log.length;
  for (const s of node.streams) {
    s.send(`event:reset\ndata:${JSON.stringify({ ch: "a", reason: "lagging", since: `${node.epoch}-1`, missed: null, epoch: node.epoch })}\n\n`);
  }
  await until(() => node.log.length > before);
  assert.equal(ev.errors[0].kind, "lagging");
  assert.equal(node.log.at(-1).params.since, `${node.epoch};a=1,b=0`);
  assert.equal(ev.resets.length, 0);
});

test("ws: lagging close (1008) resumes from the positions", async (t) => {
  const node = new FakeNode();
  const { rc, ev } = client(t, node);
  const a = follow(rc, "a");
  await until(() => rc.state === "open");
  node.publish("a", "1");
  await until(() => a.length === 1);
  [...node.sockets][0].serverClose(1008, "lagging: resume each channel from the last id received");
  await until(() => node.sockets.size === 1 && [...node.sockets][0].sent.length > 0);
  assert.equal(ev.errors[0].kind, "lagging");
  assert.equal(ev.errors[0].message, "ws closed: 1008 lagging: resume each channel from the last id received");
  assert.equal([...node.sockets][0].sent[0].since, `${node.epoch}-1`);
});

test("ws: a connection that stops answering pings is replaced; rtt is measured", async (t) => {
  const node = new FakeNode();
  const { rc, ev } = client(t, node, { pingInterval: 40, pingTimeout: 60 });
  follow(rc, "a");
  await until(() => rc.stats.rtt !== null, 2000, "a pong");
  assert.ok(rc.stats.rtt >= 0);
  const first = [...node.sockets][0];
  first.answerPings = false;
  await until(() => ev.errors.some((e) => e.kind === "timeout"), 2000, "ping timeout");
  assert.equal(ev.errors.find((e) => e.kind === "timeout").message, "ws: no answer to ping within 60 ms");
  await until(() => node.sockets.size === 1 && ![...node.sockets].includes(first), 2000, "a new socket");
});

test("long polling: verified by a 1 s poll, then held for longPollTimeout", async (t) => {
  const node = new FakeNode();
  const { rc } = client(t, node, { transports: ["longpoll"], longPollTimeout: 7000 });
  const a = follow(rc, "a");
  await until(() => node.log.length >= 2, 3000);
  assert.deepEqual(node.log.slice(0, 2).map((r) => r.params.timeout), ["1", "7"]);
  node.publish("a", "now");
  await until(() => a.length === 1);
  assert.equal(a[0].data, "now");
});

test("short polling slows down ×4 while the page is hidden", async (t) => {
  const listeners = new Set();
  const doc = {
    visibilityState: "visible",
    addEventListener: (type, fn) => listeners.add(fn),
    removeEventListener: (type, fn) => listeners.delete(fn),
  };
  const node = new FakeNode();
  const { rc } = client(t, node, { transports: ["poll"], pollInterval: 25, document: doc });
  follow(rc, "a");
  await until(() => rc.state === "open");
  const count = async () => {
    const start = node.log.length;
    await sleep(400);
    return node.log.length - start;
  };
  const visible = await count();
  doc.visibilityState = "hidden";
  await sleep(120);
  const hidden = await count();
  assert.ok(visible >= 8, `visible: ${visible} polls in 400 ms`);
  assert.ok(hidden <= visible / 2.5, `hidden: ${hidden} vs visible ${visible}`);
  // Visible again: polls at once, not at the end of the slow wait.
  const before = node.log.length;
  doc.visibilityState = "visible";
  for (const fn of listeners) fn();
  await sleep(15);
  assert.ok(node.log.length > before, "polled on becoming visible");
});

test("a second subscription with an older since replays for it alone", async (t) => {
  const node = new FakeNode();
  const { rc } = client(t, node);
  const first = follow(rc, "a");
  await until(() => rc.state === "open");
  for (const d of ["1", "2", "3"]) node.publish("a", d);
  await until(() => first.length === 3);
  const second = follow(rc, "a", { since: `${node.epoch}-1` });
  await until(() => second.length === 2);
  node.publish("a", "4");
  await until(() => first.length === 4 && second.length === 3);
  await sleep(30);
  assert.deepEqual(first.seqs(), [1, 2, 3, 4]);
  assert.deepEqual(second.seqs(), [2, 3, 4]);
  // Over ws the channel was subscribed again from the older position.
  const sent = [...node.sockets][0].sent.filter((m) => m.type !== "ping");
  assert.deepEqual(sent.slice(-2).map((m) => [m.type, m.since]), [["unsubscribe", undefined], ["subscribe", `${node.epoch}-1`]]);
});

test("from now on a channel already followed starts at what was delivered", async (t) => {
  const node = new FakeNode();
  for (const d of ["1", "2", "3"]) node.publish("a", d);
  const { rc } = client(t, node);
  const all = follow(rc, "a", { since: `${node.epoch}-0` });
  await until(() => all.length === 3);
  const later = follow(rc, "a");
  await sleep(20);
  // A third subscription from further back makes the node replay 2..3:
  // not new to the one that started "now".
  const third = follow(rc, "a", { since: `${node.epoch}-1` });
  await until(() => third.length === 2);
  node.publish("a", "4");
  await until(() => all.length === 4 && later.length === 1 && third.length === 3);
  await sleep(20);
  assert.deepEqual(later.seqs(), [4]);
  assert.equal(later.sub.lastId, `${node.epoch}-4`);
  assert.deepEqual(all.seqs(), [1, 2, 3, 4]);
});

test("sse: a since from another epoch is named in its own epoch, and the node resets it", async (t) => {
  const node = new FakeNode();
  node.publish("b", "b1");
  node.publish("b", "b2");
  const { rc, ev } = client(t, node, { transports: ["sse"] });
  const a = follow(rc, "a");
  await until(() => rc.state === "open");
  node.publish("a", "a1");
  await until(() => a.length === 1);
  const stale = "0123456789ab-7";
  const b = follow(rc, "b", { since: stale });
  await until(() => b.length === 2);
  // Another channel's epoch says nothing about b's (in a cluster each has
  // its own): the cursor names b's position as it is.
  assert.equal(node.log.at(-1).params.since, `${node.epoch};a=1,b=${stale}`);
  assert.deepEqual(ev.resets, [{ ch: "b", reason: "epoch", missed: null, since: stale }]);
  assert.deepEqual(b.map((m) => m.data), ["b1", "b2"]);
  assert.equal(b.sub.lastId, `${node.epoch}-2`);
});

// Epochs per channel (a cluster: each channel's epoch is its own, and
// changes only for a channel whose keys were lost).
for (const transport of ["ws", "sse", "longpoll", "poll"]) {
  test(`${transport}: channels in different epochs resume each from its own position`, async (t) => {
    const node = new FakeNode();
    const F = node.loseChannel("a", "0000000000f1"); // a has its own epoch; b and c the node's
    const E = node.epoch;
    const { rc, ev } = client(t, node, { transports: [transport] });
    const a = follow(rc, "a");
    const b = follow(rc, "b");
    const c = follow(rc, "c");
    await until(() => rc.state === "open");
    await sleep(transport === "longpoll" ? 1100 : 50); // long polling is verified by its first poll
    node.publish("a", "a1");
    node.publish("b", "b1");
    node.publish("a", "a2");
    node.publish("c", "c1");
    await until(() => a.length === 2 && b.length === 1 && c.length === 1, 3000, "first messages");
    assert.deepEqual(a.ids(), [`${F}-1`, `${F}-2`], "a's ids in a's epoch");
    assert.deepEqual(b.ids(), [`${E}-1`]);
    node.down = true;
    node.dropAll();
    await until(() => rc.state === "reconnecting", 3000, "reconnecting");
    node.publish("a", "a3");
    node.publish("b", "b2");
    node.publish("c", "c2");
    const before = node.log.length;
    node.down = false;
    await until(() => a.length === 3 && b.length === 2 && c.length === 2, 4000, "resumed messages");
    await sleep(50);
    assert.deepEqual(a.map((m) => m.data), ["a1", "a2", "a3"]);
    assert.deepEqual(b.map((m) => m.data), ["b1", "b2"]);
    assert.deepEqual(c.map((m) => m.data), ["c1", "c2"]);
    assert.equal(a.sub.lastId, `${F}-3`);
    const again = node.log.slice(before).find((r) => r.transport === transport);
    if (transport === "ws") {
      const socket = [...node.sockets].at(-1);
      const subs = socket.sent.filter((m) => m.type === "subscribe").map((m) => [m.ch, m.since]);
      assert.deepEqual(subs, [["a", `${F}-2`], ["b", `${E}-1`], ["c", `${E}-1`]]);
    } else {
      // The epoch most channels share is the prefix; a names its own.
      assert.equal(again.params.since, `${E};a=${F}-2,b=1,c=1`);
    }
    assert.deepEqual(ev.resets, []);
  });

  test(`${transport}: an epoch reset of one channel does not disturb the other`, async (t) => {
    const node = new FakeNode();
    const E = node.epoch;
    const { rc, ev } = client(t, node, { transports: [transport] });
    const a = follow(rc, "a");
    const b = follow(rc, "b");
    await until(() => rc.state === "open");
    await sleep(transport === "longpoll" ? 1100 : 50);
    node.publish("a", "a1");
    node.publish("b", "b1");
    await until(() => a.length === 1 && b.length === 1, 3000, "first messages");
    const G = node.loseChannel("b", "00000000fe01"); // b's keys were lost: b starts over in G
    node.publish("b", "b-new1");
    node.publish("a", "a2");
    node.publish("b", "b-new2");
    await until(() => a.length === 2 && b.length === 3, 3000, "messages after the epoch change");
    await sleep(50);
    assert.deepEqual(ev.resets, [{ ch: "b", reason: "epoch", missed: null, since: `${E}-1` }]);
    assert.deepEqual(a.ids(), [`${E}-1`, `${E}-2`], "a is untouched");
    assert.deepEqual(b.ids(), [`${E}-1`, `${G}-1`, `${G}-2`]);
    assert.deepEqual(b.map((m) => m.data), ["b1", "b-new1", "b-new2"]);
    // Resuming: each channel from its position in its own epoch.
    node.down = true;
    node.dropAll();
    await until(() => rc.state === "reconnecting", 3000, "reconnecting");
    node.publish("a", "a3");
    node.publish("b", "b-new3");
    const before = node.log.length;
    node.down = false;
    await until(() => a.length === 3 && b.length === 4, 4000, "resumed messages");
    await sleep(50);
    assert.deepEqual(a.map((m) => m.data), ["a1", "a2", "a3"]);
    assert.deepEqual(b.map((m) => m.data), ["b1", "b-new1", "b-new2", "b-new3"]);
    const again = node.log.slice(before).find((r) => r.transport === transport);
    if (transport === "ws") {
      const socket = [...node.sockets].at(-1);
      const subs = socket.sent.filter((m) => m.type === "subscribe").map((m) => [m.ch, m.since]);
      assert.deepEqual(subs, [["a", `${E}-2`], ["b", `${G}-2`]]);
    } else {
      assert.equal(again.params.since, `${E};a=2,b=${G}-2`);
    }
    assert.equal(ev.resets.length, 1);
    assert.equal(rc.stats.duplicates, 0);
  });
}

for (const transport of ["ws", "sse", "poll"]) {
  test(`${transport}: two sinces in different epochs before the channel's is known: the stale one is reset too`, async (t) => {
    const node = new FakeNode();
    for (const d of ["1", "2", "3"]) node.publish("b", d);
    const { rc, ev } = client(t, node, { transports: [transport] });
    // Nothing seen on b yet: the client cannot tell which is current, and
    // resumes from the first; once b's epoch is known, the other is named.
    const current = follow(rc, "b", { since: `${node.epoch}-1` });
    const stale = "0123456789ab-7";
    const old = follow(rc, "b", { since: stale });
    await until(() => current.length === 2 && old.length === 3, 3000, "both served");
    node.publish("b", "4");
    await until(() => current.length === 3 && old.length === 4, 3000, "live");
    await sleep(50);
    assert.deepEqual(current.seqs(), [2, 3, 4]);
    assert.deepEqual(old.seqs(), [1, 2, 3, 4]);
    assert.deepEqual(ev.resets, [{ ch: "b", reason: "epoch", missed: null, since: stale }]);
  });
}

test("HTTP requests are CORS-simple without a token", async (t) => {
  const node = new FakeNode();
  const { rc } = client(t, node, { transports: ["sse"] });
  follow(rc, "a");
  await until(() => rc.state === "open");
  await rc.publish("a", "text");
  await rc.publish("a", new Uint8Array([1, 2]));
  await rc.publish("a", "eph", { ephemeral: true });
  const members = await rc.presence("a");
  assert.deepEqual(members, []);
  const reqs = node.log;
  for (const r of reqs) {
    const headers = Object.keys(r.init.headers ?? {});
    assert.ok(headers.every((h) => h === "Content-Type"), `${r.url}: ${headers}`);
  }
  const pubs = reqs.filter((r) => r.path === "/pub/a");
  assert.equal(pubs[0].init.headers["Content-Type"], "text/plain;charset=UTF-8");
  assert.equal(pubs[1].init.headers, undefined, "binary: no Content-Type, so no preflight");
  assert.equal(pubs[2].params.ephemeral, "1");
  assert.match(reqs.find((r) => r.transport === "sse").url, /^http:\/\/node\.test\/sse\?ch=a$/);
  const ids = node.channel("a").history.map((m) => [m.binary, m.data]);
  assert.deepEqual(ids, [[false, "text"], [true, new Uint8Array([1, 2])]]);
});

test("an HTTP publish refusal rejects with the status and reason", async (t) => {
  const node = new FakeNode();
  node.intercept = (req) => (req.path.startsWith("/pub/") ? new Response("body of 5 bytes is over the limit of 4 bytes", { status: 413 }) : undefined);
  const { rc, ev } = client(t, node, { transports: ["poll"] });
  await assert.rejects(rc.publish("a", "12345"), {
    message: "publish to a refused: 413 body of 5 bytes is over the limit of 4 bytes",
    status: 413,
    kind: "request",
  });
  assert.equal(ev.errors.at(-1).status, 413);
});

test("close(): state closed, calls reject, and nothing more is asked", async (t) => {
  const node = new FakeNode();
  const { rc, ev } = client(t, node, { transports: ["poll"] });
  const a = follow(rc, "a");
  await until(() => rc.state === "open");
  rc.close();
  assert.equal(rc.state, "closed");
  assert.equal(rc.transport, null);
  assert.equal(ev.states.at(-1), "closed");
  assert.equal(a.sub.active, false);
  await assert.rejects(rc.publish("a", "x"), { kind: "client-closed" });
  await assert.rejects(rc.presence("a"), { kind: "client-closed" });
  assert.throws(() => rc.subscribe("a", () => {}), { kind: "client-closed" });
  const n = node.log.length;
  node.publish("a", "late");
  await sleep(100);
  assert.equal(node.log.length, n);
  assert.equal(a.length, 0);
  rc.close(); // idempotent
});

test("without WebSocket in the runtime, ws is skipped with a clear error", async (t) => {
  const node = new FakeNode();
  const { rc, ev } = client(t, node, { WebSocket: null });
  follow(rc, "a");
  await until(() => rc.state === "open");
  assert.equal(rc.transport, "sse");
  assert.equal(ev.errors[0].message, "ws unavailable: no WebSocket in this runtime");
  assert.equal(rc.clientId, null, "no client id off the WebSocket");
  assert.equal(ev.errors[0].kind, "unsupported");
});

test("no unhandled rejection or uncaught exception in this file", async () => {
  await sleep(50);
  assert.deepEqual(unhandled, []);
});
