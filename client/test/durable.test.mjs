// Durable subscriptions (issue 14, stage 5) against the in-memory node:
// `durable`/`device` on every transport, auto-ack after the handler
// (coalesced per channel, held by a failing handler), manual acks, unread,
// ack refusals, and de-duplication of at-least-once redelivery.
import { test } from "node:test";
import assert from "node:assert/strict";
import { connect } from "../ringcast.js";
import { FakeNode, until, sleep } from "./support/fake-node.mjs";

const unhandled = [];
process.on("unhandledRejection", (e) => unhandled.push(e));
process.on("uncaughtException", (e) => unhandled.push(e));

const BASE = "http://node.test";

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
  const ev = { errors: [], resets: [], unread: [] };
  rc.on("error", (e) => ev.errors.push(e));
  rc.on("reset", (r) => ev.resets.push(r));
  rc.on("unread", (u) => ev.unread.push(u));
  t.after(() => rc.close());
  return { rc, ev };
}

function follow(rc, ch, opts, fn = () => {}) {
  const got = [];
  got.sub = rc.subscribe(ch, (m) => {
    got.push(m);
    return fn(m);
  }, opts);
  got.seqs = () => got.map((m) => Number(m.id.split("-")[1]));
  return got;
}

const seqOf = (id) => Number(id.split("-")[1]);

test("ws: subscribe carries durable and device; a fresh client resumes from the cursor; unread is exposed", async (t) => {
  const node = new FakeNode();
  node.cursorOf("a", "phone"); // the cursor exists at 0
  for (let i = 1; i <= 3; i++) node.publish("a", `m${i}`);
  const { rc, ev } = client(t, node, { device: "phone" });
  const got = follow(rc, "a", { durable: true });
  await until(() => got.length === 3, 3000, "the unacked three");
  assert.deepEqual(got.seqs(), [1, 2, 3]);
  const sub = node.subscribes.find((m) => m.ch === "a");
  assert.equal(sub.durable, true);
  assert.equal(sub.device, "phone");
  assert.equal(sub.since, undefined, "no since: the node resumes from its cursor");
  assert.equal(ev.unread[0].unread, 3);
  assert.equal(ev.unread[0].cursor, `${node.epoch}-0`);
  // Auto-acked, once, with the last id; unread follows the answer.
  await until(() => node.acks.length === 1);
  assert.deepEqual(node.acks[0], { ch: "a", id: `${node.epoch}-3`, device: "phone", via: "ws" });
  await until(() => got.sub.unread === 0);
  assert.equal(got.sub.cursor, `${node.epoch}-3`);
  assert.equal(got.sub.durable, true);
  assert.deepEqual(ev.errors, []);
});

test("a plain subscription sends no durable flag and acks nothing", async (t) => {
  const node = new FakeNode();
  const { rc } = client(t, node);
  const got = follow(rc, "a");
  await until(() => rc.state === "open");
  node.publish("a", "x");
  await until(() => got.length === 1);
  await sleep(250);
  assert.equal(node.subscribes[0].durable, undefined);
  assert.deepEqual(node.acks, []);
});

test("auto-ack is coalesced: one ack per channel per ackDelay, carrying the last handled id (fake clock)", async (t) => {
  const node = new FakeNode();
  const { rc } = client(t, node);
  const got = follow(rc, "a", { durable: true });
  const gotB = follow(rc, "b", { durable: true });
  await until(() => rc.state === "open");
  // From here on, timers are the test's: the node's frames need ticks too.
  t.mock.timers.enable({ apis: ["setTimeout"] });
  const advance = async (ms) => {
    for (let i = 0; i < ms; i++) {
      t.mock.timers.tick(1);
      await new Promise((r) => setImmediate(r));
    }
  };
  for (let i = 1; i <= 5; i++) node.publish("a", `a${i}`);
  node.publish("b", "b1");
  await advance(5);
  assert.equal(got.length, 5);
  assert.equal(gotB.length, 1);
  await advance(80);
  assert.deepEqual(node.acks, [], "nothing before ackDelay");
  await advance(30);
  assert.deepEqual(node.acks.map((a) => `${a.ch}:${seqOf(a.id)}`).sort(), ["a:5", "b:1"]);
  // More while the window is open: the next ack is ackDelay after the first.
  node.publish("a", "a6");
  await advance(2);
  node.publish("a", "a7");
  await advance(50);
  assert.equal(node.acks.length, 2);
  await advance(60);
  assert.deepEqual(node.acks.slice(2).map((a) => `${a.ch}:${seqOf(a.id)}`), ["a:7"]);
  await advance(300);
  assert.equal(node.acks.length, 3, "nothing new handled: no ack");
});

test("an async handler is acked after it resolves, and never past one still running", async (t) => {
  const node = new FakeNode();
  const { rc } = client(t, node, { ackDelay: 10 });
  const resolvers = new Map();
  const got = follow(rc, "a", { durable: true }, (m) => new Promise((r) => resolvers.set(seqOf(m.id), r)));
  await until(() => rc.state === "open");
  for (let i = 1; i <= 3; i++) node.publish("a", `m${i}`);
  await until(() => resolvers.size === 3);
  resolvers.get(2)();
  resolvers.get(3)();
  await sleep(60);
  assert.deepEqual(node.acks, [], "1 still running: 2 and 3 wait");
  resolvers.get(1)();
  await until(() => node.acks.length === 1);
  assert.equal(seqOf(node.acks[0].id), 3);
  assert.equal(got.length, 3);
});

test("a throwing (or rejecting) handler: that message is not acked, nor anything after it, until ack() moves past it", async (t) => {
  const node = new FakeNode();
  const { rc, ev } = client(t, node, { ackDelay: 10 });
  const got = follow(rc, "a", { durable: true }, (m) => {
    if (seqOf(m.id) === 3) throw new Error("boom");
    if (seqOf(m.id) === 6) return Promise.reject(new Error("async boom"));
  });
  await until(() => rc.state === "open");
  node.publish("a", "m1");
  node.publish("a", "m2");
  await until(() => node.acks.length === 1);
  assert.equal(seqOf(node.acks[0].id), 2);
  node.publish("a", "m3");
  node.publish("a", "m4");
  await until(() => got.length === 4);
  await sleep(80);
  assert.equal(node.acks.length, 1, "no ack of 3, nor of 4 (acks are cumulative)");
  assert.equal(ev.errors.filter((e) => e.kind === "handler").length, 1);
  // The application decides to move on.
  const answer = await rc.ack("a", `${node.epoch}-4`);
  assert.equal(answer.cursor, `${node.epoch}-4`);
  node.publish("a", "m5");
  await until(() => node.acks.length === 3);
  assert.equal(seqOf(node.acks[2].id), 5, "auto-ack carries on after a manual ack past the failure");
  node.publish("a", "m6");
  node.publish("a", "m7");
  await until(() => got.length === 7);
  await sleep(80);
  assert.equal(node.acks.length, 3, "a rejected promise holds the acks too");
  assert.equal(ev.errors.filter((e) => e.kind === "handler").length, 2);
});

test("autoAck: false acks only by hand (sub.ack)", async (t) => {
  const node = new FakeNode();
  const { rc } = client(t, node, { ackDelay: 10 });
  const got = follow(rc, "a", { durable: true, autoAck: false });
  await until(() => rc.state === "open");
  node.publish("a", "m1");
  node.publish("a", "m2");
  await until(() => got.length === 2);
  await sleep(60);
  assert.deepEqual(node.acks, []);
  const answer = await got.sub.ack(got[0].id);
  assert.deepEqual(answer, { ch: "a", cursor: got[0].id, unread: 1 });
  assert.equal(got.sub.unread, 1);
  await assert.rejects(rc.ack("a", "nope"), TypeError);
});

test("de-duplication: the node redelivering from its cursor after a reconnect does not call the handler twice; a new epoch starts over", async (t) => {
  const node = new FakeNode();
  const { rc, ev } = client(t, node, { ackDelay: 1e6 }); // nothing acked: all of it comes again
  const got = follow(rc, "a", { durable: true });
  await until(() => rc.state === "open");
  for (let i = 1; i <= 3; i++) node.publish("a", `m${i}`);
  await until(() => got.length === 3);
  node.redeliver = true; // at least once: from the cursor, whatever the client names
  node.dropAll();
  await until(() => rc.state === "reconnecting");
  await until(() => rc.state === "open");
  node.publish("a", "m4");
  await until(() => got.length === 4);
  await sleep(30);
  assert.deepEqual(got.seqs(), [1, 2, 3, 4], "1–3 came again, and were dropped");
  assert.ok(rc.stats.duplicates >= 3, `duplicates ${rc.stats.duplicates}`);
  // The channel starts over in a new epoch: seq 1 again is a new message.
  node.redeliver = false;
  const epoch = node.loseChannel("a");
  node.publish("a", "n1");
  await until(() => got.length === 5);
  assert.equal(got[4].id, `${epoch}-1`);
  assert.equal(ev.resets[0].reason, "epoch");
});

for (const transport of ["sse", "longpoll", "poll"]) {
  test(`${transport}: ?durable=1&device=, acks as POST /ack/{ch} with the token`, async (t) => {
    const node = new FakeNode();
    node.cursorOf("a", "lap");
    node.publish("a", "m1");
    const { rc, ev } = client(t, node, { transports: [transport], device: "lap", token: "tok", ackDelay: 20 });
    const got = follow(rc, "a", { durable: true });
    await until(() => got.length === 1, 3000, "the unacked one, from the cursor");
    const req = node.log.find((r) => r.transport === transport);
    assert.equal(req.params.durable, "1");
    assert.equal(req.params.device, "lap");
    node.publish("a", "m2");
    await until(() => got.length === 2);
    await until(() => node.acks.length >= 1);
    await until(() => node.acks.at(-1).id === `${node.epoch}-2`);
    const post = node.log.filter((r) => r.path === "/ack/a");
    assert.ok(post.length >= 1 && post.length <= 2, `acks ${post.length}`);
    const last = post.at(-1);
    assert.equal(last.method, "POST");
    assert.equal(last.auth, "Bearer tok");
    assert.equal(last.params.device, "lap");
    assert.equal(last.init.body, `${node.epoch}-2`);
    assert.equal(last.init.headers["Content-Type"], "text/plain;charset=UTF-8");
    await until(() => got.sub.unread === 0);
    assert.ok(ev.unread.length >= 1);
    assert.deepEqual(ev.errors, []);
  });
}

test("ack refusals: unavailable is retried after retry_after (and reported); others are reported once", async (t) => {
  const node = new FakeNode();
  let refuse = 1;
  node.ackRefusal = () => (refuse-- > 0 ? { code: "unavailable", reason: "store unavailable: disk; retry later", retry_after: 1 } : null);
  const { rc, ev } = client(t, node, { ackDelay: 10 });
  const got = follow(rc, "a", { durable: true });
  await until(() => rc.state === "open");
  node.publish("a", "m1");
  await until(() => ev.errors.length === 1);
  assert.equal(ev.errors[0].code, "unavailable");
  assert.equal(ev.errors[0].retryAfter, 1);
  assert.equal(ev.errors[0].channel, "a");
  const t0 = Date.now();
  await until(() => node.acks.length === 2, 3000, "the retry");
  assert.ok(Date.now() - t0 >= 800, "after retry_after");
  await until(() => got.sub.cursor === `${node.epoch}-1`);
  node.ackRefusal = () => ({ code: "not_durable", reason: "channel a keeps no cursors" });
  node.publish("a", "m2");
  await until(() => ev.errors.length === 2);
  assert.equal(ev.errors[1].code, "not_durable");
  await sleep(1300);
  assert.equal(node.acks.length, 3, "not retried");
});

test("pending acks are flushed on unsubscribe and on close", async (t) => {
  const node = new FakeNode();
  const { rc } = client(t, node, { ackDelay: 1e6 });
  const a = follow(rc, "a", { durable: true });
  const b = follow(rc, "b", { durable: true });
  await until(() => rc.state === "open");
  node.publish("a", "m1");
  node.publish("b", "m1");
  node.publish("b", "m2");
  await until(() => a.length === 1 && b.length === 2);
  a.sub.unsubscribe();
  await until(() => node.acks.length === 1);
  assert.deepEqual(node.acks.map((x) => `${x.ch}:${seqOf(x.id)}`), ["a:1"]);
  rc.close();
  await until(() => node.acks.length === 2);
  assert.deepEqual(node.acks.map((x) => `${x.ch}:${seqOf(x.id)}`), ["a:1", "b:2"]);
});

test("the device option is checked; it is the client's, not a subscription's", (t) => {
  assert.throws(() => connect(BASE, { device: "no spaces", shared: false }), TypeError);
  const node = new FakeNode();
  const { rc } = client(t, node, { device: "phone" });
  assert.throws(() => rc.subscribe("a", () => {}, { durable: true, device: "laptop" }), /device is a connect\(\) option/);
  assert.equal(rc.subscribe("a", () => {}, { durable: true, device: "phone" }).durable, true);
});

test("an ack lost to the network is retried quietly (the connection reports its own trouble)", async (t) => {
  const node = new FakeNode();
  let fail = 1;
  node.intercept = (req) => {
    if (req.path.startsWith("/ack/") && fail-- > 0) throw new TypeError("fetch failed");
  };
  const { rc, ev } = client(t, node, { transports: ["poll"], ackDelay: 10 });
  const got = follow(rc, "a", { durable: true });
  await until(() => rc.state === "open");
  node.publish("a", "m1");
  await until(() => node.acks.length === 1, 3000, "the retry");
  assert.equal(node.log.filter((r) => r.path === "/ack/a").length, 2);
  await until(() => got.sub.cursor === `${node.epoch}-1`);
  assert.deepEqual(ev.errors, []);
});

// (Last: the client remembers, for the page's life, that keepalive fails.)
test("HTTP acks are keepalive requests; a browser refusing keepalive with a preflight gets them without", async (t) => {
  const node = new FakeNode();
  let refused = 0;
  node.intercept = (req) => {
    if (req.path.startsWith("/ack/") && req.init.keepalive) {
      refused++;
      throw new TypeError("Failed to execute 'fetch': Preflight request for request with keepalive specified is currently not supported");
    }
  };
  const { rc, ev } = client(t, node, { transports: ["longpoll"], token: "tok", ackDelay: 10 });
  const got = follow(rc, "a", { durable: true });
  await until(() => rc.state === "open");
  node.publish("a", "m1");
  await until(() => got.sub.cursor === `${node.epoch}-1`);
  node.publish("a", "m2");
  await until(() => got.sub.cursor === `${node.epoch}-2`);
  assert.equal(refused, 1, "tried once with keepalive, then not again");
  assert.deepEqual(ev.errors, []);
});

test("no unhandled rejection or uncaught exception in this file", async () => {
  await sleep(50);
  assert.deepEqual(unhandled, []);
});
