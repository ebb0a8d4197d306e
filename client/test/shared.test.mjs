// One connection per browser: tabs elect a leader (Web Locks, faked here)
// that relays over a BroadcastChannel (Node's own). Each "tab" is a client
// with its own view of the locks and its own channels, so a test can kill
// one as a browser does when a tab closes or crashes.
import { test } from "node:test";
import assert from "node:assert/strict";
import { connect } from "../ringcast.js";
import { FakeNode, FakeLocks, tabChannels, until, sleep } from "./support/fake-node.mjs";

const unhandled = [];
process.on("unhandledRejection", (e) => unhandled.push(e));
process.on("uncaughtException", (e) => unhandled.push(e));

let suite = 0;

/** A browser: one node, one lock manager, tabs opened on demand. */
function browser(t, node) {
  const locks = new FakeLocks();
  // A distinct URL per test keeps the BroadcastChannels of tests apart.
  const url = `http://node${++suite}.test`;
  const tabs = [];
  const open = (opts = {}) => {
    const lockView = locks.tab();
    const channels = tabChannels();
    const rc = connect(url, {
      WebSocket: node.WebSocket,
      fetch: node.fetch,
      storage: null,
      locks: lockView,
      BroadcastChannel: channels.BroadcastChannel,
      backoff: { min: 10, max: 40 },
      requestTimeout: 2000,
      ...opts,
    });
    const tab = { rc, errors: [], resets: [], states: [] };
    rc.on("error", (e) => tab.errors.push(e));
    rc.on("reset", (r) => tab.resets.push(r));
    rc.on("state", (s) => tab.states.push(s));
    /** The tab dies: no goodbye, its locks released by the browser. */
    tab.crash = () => {
      channels.kill();
      lockView.kill();
      rc.close(); // stops its timers and sockets; it can no longer tell anyone
    };
    tabs.push(tab);
    t.after(() => rc.close());
    return tab;
  };
  return { open, locks };
}

function follow(rc, ch, opts) {
  const got = [];
  got.sub = rc.subscribe(ch, (m) => got.push(m), opts);
  got.seqs = () => got.map((m) => Number(m.id.split("-")[1]));
  return got;
}

test("durable in a follower tab: the leader subscribes durably, the follower's acks go through it, unread reaches the follower", async (t) => {
  const node = new FakeNode();
  const b = browser(t, node);
  const A = b.open({ ackDelay: 10, device: "lap" });
  follow(A.rc, "plain");
  await until(() => A.rc.state === "open" && node.sockets.size === 1);
  const B = b.open({ ackDelay: 10, device: "lap" });
  const unread = [];
  B.rc.on("unread", (u) => unread.push(u));
  const bGot = follow(B.rc, "inbox", { durable: true });
  await until(() => (node.subscribes ?? []).some((m) => m.ch === "inbox"));
  const sub = node.subscribes.find((m) => m.ch === "inbox");
  assert.equal(sub.durable, true);
  assert.equal(sub.device, "lap");
  await until(() => unread.length === 1, 2000, "unread relayed from the leader");
  node.publish("inbox", "m1");
  node.publish("inbox", "m2");
  await until(() => bGot.length === 2);
  await until(() => node.acks.length === 1);
  assert.deepEqual(node.acks[0], { ch: "inbox", id: `${node.epoch}-2`, device: "lap", via: "ws" });
  await until(() => bGot.sub.unread === 0 && bGot.sub.cursor === `${node.epoch}-2`);
  assert.equal(node.sockets.size, 1, "still one connection");
  assert.deepEqual(B.errors, []);
});

test("two tabs share one connection; the follower publishes through the leader", async (t) => {
  const node = new FakeNode();
  const b = browser(t, node);
  const A = b.open();
  const aGot = follow(A.rc, "room");
  await until(() => A.rc.state === "open" && node.sockets.size === 1);
  const B = b.open();
  const bGot = follow(B.rc, "room");
  await until(() => B.rc.state === "open" && B.rc.transport === "ws", 2000, "follower sees the leader's state");
  assert.equal(A.rc.shared, true);
  assert.equal(B.rc.shared, true);
  await sleep(30);
  assert.equal(node.sockets.size, 1, "one connection for both tabs");
  assert.equal(node.log.filter((r) => r.transport).length, 1);

  node.publish("room", "hello");
  await until(() => aGot.length === 1 && bGot.length === 1);
  const { id } = await B.rc.publish("room", "from B");
  assert.equal(id, `${node.epoch}-2`);
  await until(() => aGot.length === 2 && bGot.length === 2);
  assert.deepEqual(bGot.map((m) => m.data), ["hello", "from B"]);
  const socket = [...node.sockets][0];
  assert.ok(socket.sent.some((m) => m.type === "publish" && m.data === "from B"), "published over the leader's socket");
  assert.deepEqual(await B.rc.presence("room"), [socket.client]);
  assert.equal(B.rc.clientId, socket.client, "the tabs are one client");
  assert.equal(A.rc.clientId, socket.client);
  // A follower's binary publish crosses the BroadcastChannel intact.
  await B.rc.publish("room", new Uint8Array([9, 8, 7]));
  await until(() => bGot.length === 3);
  assert.deepEqual(bGot[2].data, new Uint8Array([9, 8, 7]));
  assert.ok(B.rc.stats.rtt === null || B.rc.stats.rtt >= 0);
});

for (const how of ["closes", "crashes"]) {
  test(`the leader tab ${how}: another takes over and resumes without loss or repeat`, async (t) => {
    const node = new FakeNode();
    const b = browser(t, node);
    const A = b.open();
    follow(A.rc, "a");
    await until(() => A.rc.state === "open");
    const B = b.open();
    const bA = follow(B.rc, "a");
    const bB = follow(B.rc, "b");
    const C = b.open();
    const cA = follow(C.rc, "a");
    await until(() => [...node.sockets][0]?.subs.size === 2, 2000, "the leader follows both channels");
    node.publish("a", "1");
    node.publish("b", "b1");
    node.publish("a", "2");
    await until(() => bA.length === 2 && bB.length === 1 && cA.length === 2);

    if (how === "closes") A.rc.close();
    else A.crash();
    // Published while no tab holds a connection.
    node.publish("a", "3");
    node.publish("b", "b2");
    await until(() => node.sockets.size === 1 && [...node.sockets][0].subs.size === 2, 3000, "a new leader's connection");
    node.publish("a", "4");
    await until(() => bA.length === 4 && bB.length === 2 && cA.length === 4, 3000, "every message");
    await sleep(50);
    assert.deepEqual(bA.seqs(), [1, 2, 3, 4]);
    assert.deepEqual(bB.seqs(), [1, 2]);
    assert.deepEqual(cA.seqs(), [1, 2, 3, 4]);
    assert.equal(B.rc.state, "open");
    assert.equal(C.rc.state, "open");
    assert.deepEqual(B.resets, []);
    // The old leader's own shutdown is not the followers' state.
    assert.ok(!B.states.includes("closed") && !C.states.includes("closed"), `${B.states} / ${C.states}`);
    assert.ok(B.states.includes("reconnecting") || C.states.includes("reconnecting"), `${B.states} / ${C.states}`);
    // Exactly one of B and C leads: one connection.
    assert.equal(node.sockets.size, 1);
  });
}

test("a follower's subscriptions end with its tab", async (t) => {
  const node = new FakeNode();
  const b = browser(t, node);
  const A = b.open();
  follow(A.rc, "a");
  await until(() => A.rc.state === "open");
  const B = b.open();
  follow(B.rc, "x");
  const socket = [...node.sockets][0];
  await until(() => socket.subs.has("x"), 2000, "leader subscribes x for B");
  B.crash();
  await until(() => !socket.subs.has("x"), 2000, "x dropped when B died");
  assert.ok(socket.subs.has("a"));
});

test("a follower subscribing from now does not get history replayed for another tab", async (t) => {
  const node = new FakeNode();
  for (const d of ["1", "2", "3"]) node.publish("a", d);
  const b = browser(t, node);
  const A = b.open();
  const aAll = follow(A.rc, "a", { since: `${node.epoch}-0` });
  await until(() => aAll.length === 3);
  const B = b.open();
  const bNow = follow(B.rc, "a");
  await until(() => B.rc.state === "open");
  await sleep(50);
  // Another tab resuming from 1 makes the leader replay 2..3 to everyone.
  const C = b.open();
  const cOld = follow(C.rc, "a", { since: `${node.epoch}-1` });
  await until(() => cOld.length === 2, 2000, "C's replay");
  node.publish("a", "4");
  await until(() => aAll.length === 4 && bNow.length === 1 && cOld.length === 3);
  await sleep(30);
  assert.deepEqual(bNow.seqs(), [4]);
  assert.deepEqual(aAll.seqs(), [1, 2, 3, 4]);
});

test("a follower resuming from an older id gets the replay; the leader no duplicate", async (t) => {
  const node = new FakeNode();
  const b = browser(t, node);
  const A = b.open();
  const aGot = follow(A.rc, "a");
  await until(() => A.rc.state === "open");
  for (const d of ["1", "2", "3"]) node.publish("a", d);
  await until(() => aGot.length === 3);
  const B = b.open();
  const bGot = follow(B.rc, "a", { since: `${node.epoch}-1` });
  await until(() => bGot.length === 2, 2000, "B's replay");
  node.publish("a", "4");
  await until(() => aGot.length === 4 && bGot.length === 3);
  await sleep(30);
  assert.deepEqual(aGot.seqs(), [1, 2, 3, 4]);
  assert.deepEqual(bGot.seqs(), [2, 3, 4]);
});

test("shared: false gives a tab its own connection", async (t) => {
  const node = new FakeNode();
  const b = browser(t, node);
  const A = b.open({ shared: false });
  const B = b.open({ shared: false });
  follow(A.rc, "a");
  follow(B.rc, "a");
  await until(() => A.rc.state === "open" && B.rc.state === "open");
  assert.equal(A.rc.shared, false);
  assert.equal(node.sockets.size, 2);
});

test("no unhandled rejection or uncaught exception in this file", async () => {
  await sleep(50);
  assert.deepEqual(unhandled, []);
});
