// Tokens against an in-memory node that checks them (fake-node.mjs: a Map
// of valid tokens, what each allows, and expiry): the header on HTTP, `auth`
// first on `/ws`, refusals that back off instead of falling back, channels a
// token does not allow, `setToken`, expiry while connected, and the leader
// tab presenting a token set in another tab.
import { test } from "node:test";
import assert from "node:assert/strict";
import { connect } from "../ringcast.js";
import { FakeNode, FakeLocks, tabChannels, until, sleep } from "./support/fake-node.mjs";

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
  const ev = { states: [], errors: [] };
  rc.on("state", (s) => ev.states.push(s));
  rc.on("error", (e) => ev.errors.push(e));
  t.after(() => rc.close());
  return { rc, ev };
}

function follow(rc, ch, opts) {
  const got = [];
  got.sub = rc.subscribe(ch, (m) => got.push(m), opts);
  got.seqs = () => got.map((m) => Number(m.id.split("-")[1]));
  return got;
}

/** A node that checks tokens, with these valid ones. */
function checkingNode(tokens) {
  const node = new FakeNode();
  node.tokens = new Map(Object.entries(tokens));
  return node;
}

/** A provider handing out `tokens` in turn (the last one again and again). */
function provider(tokens) {
  const fn = async () => tokens[Math.min(fn.calls++, tokens.length - 1)];
  fn.calls = 0;
  return fn;
}

const transportsOf = (node) => node.log.map((r) => r.transport).filter(Boolean);
const sockets = (node) => node.auths.map((a) => a.socket).filter((s, i, all) => all.indexOf(s) === i);

// ---- HTTP: the header ----------------------------------------------------------------

for (const token of [null, "s3cr&t"]) {
  test(`HTTP: ${token ? "every request kind carries Authorization: Bearer, never the URL" : "without a token, no Authorization (CORS-simple)"}`, async (t) => {
    const node = token ? checkingNode({ [token]: { sub: "alice" } }) : new FakeNode();
    const opts = token ? { token } : {};
    // The three HTTP transports side by side (long polling opens only after
    // its first, 1 s, poll).
    await Promise.all(["sse", "longpoll", "poll"].map(async (transport) => {
      const { rc } = client(t, node, { ...opts, transports: [transport] });
      const got = follow(rc, transport);
      await until(() => rc.state === "open", 3000, transport);
      await sleep(50);
      node.publish(transport, "hello");
      await until(() => got.length === 1, 3000, `${transport} delivers`);
      if (transport === "sse") {
        await rc.publish("a", "text");
        await rc.publish("a", new Uint8Array([1, 2]));
        await rc.publish("a", "eph", { ephemeral: true });
        assert.deepEqual(await rc.presence("a"), []);
      }
      rc.close();
    }));
    const kinds = new Set(node.log.map((r) => r.transport ?? r.path.split("/")[1]));
    assert.deepEqual([...kinds].sort(), ["longpoll", "poll", "presence", "pub", "sse"]);
    for (const r of node.log) {
      assert.equal(r.auth, token ? `Bearer ${token}` : null, r.url);
      assert.ok(!/token/.test(r.url), `no token in ${r.url}`);
      const headers = Object.keys(r.init.headers ?? {}).sort();
      const allowed = token ? ["Authorization", "Content-Type", "If-None-Match", "Last-Event-ID"] : ["Content-Type"];
      assert.ok(headers.every((h) => allowed.includes(h)), `${r.url}: ${headers}`);
    }
    // With a token (preflighted anyway) the cursor rides in a header, so a
    // poll's URL — the key of the browser's preflight cache — stays the same.
    const polls = node.log.filter((r) => r.transport === "poll");
    assert.ok(polls.length >= 3);
    if (token) {
      assert.ok(node.log.every((r) => !/since=/.test(r.url)));
      assert.equal(new Set(polls.map((r) => r.url)).size, 1, "one URL for every short poll");
      assert.match(polls.at(-1).init.headers["If-None-Match"], new RegExp(`^"${node.epoch};poll=\\d+"$`));
    } else {
      assert.ok(polls.slice(1).every((r) => /since=/.test(r.url)));
    }
    const pubs = node.log.filter((r) => r.path === "/pub/a");
    assert.equal(pubs[0].init.headers["Content-Type"], "text/plain;charset=UTF-8");
    assert.deepEqual(pubs[1].init.headers, token ? { Authorization: `Bearer ${token}` } : undefined, "binary: no Content-Type");
  });
}

// ---- /ws: auth first ---------------------------------------------------------------------

test("ws: auth is the first frame, and nothing is subscribed before authed", async (t) => {
  const node = checkingNode({ good: { sub: "alice" } });
  node.authDelay = 80;
  const { rc } = client(t, node, { token: "good" });
  const a = follow(rc, "a");
  follow(rc, "b");
  await until(() => node.auths.length === 1);
  const socket = node.auths[0].socket;
  assert.ok(!/token/.test(socket.url), socket.url);
  await sleep(40);
  assert.deepEqual(socket.sent, [{ type: "auth", token: "good", rid: 1 }], "waits for authed");
  assert.equal(rc.state, "connecting");
  await until(() => rc.state === "open");
  assert.deepEqual(socket.sent.slice(1).map((m) => [m.type, m.ch]), [["subscribe", "a"], ["subscribe", "b"]]);
  node.publish("a", "hi");
  await until(() => a.length === 1);
  assert.equal(rc.transport, "ws");
});

test("ws: a node that checks no tokens declines auth; the client carries on without", async (t) => {
  const node = new FakeNode();
  const { rc, ev } = client(t, node, { token: "whatever" });
  const a = follow(rc, "a");
  await until(() => rc.state === "open");
  assert.equal(rc.transport, "ws");
  assert.match(ev.errors[0].message, /^ws: the node did not take the token: bad_request: this node does not check tokens/);
  node.publish("a", "hi");
  await until(() => a.length === 1);
});

test("ws: no token on a node that wants one is a refusal (unauthorized), not a reason to fall back", async (t) => {
  const node = checkingNode({ good: {} });
  const { rc, ev } = client(t, node, { transports: ["ws", "sse"] });
  follow(rc, "a");
  await until(() => ev.errors.length >= 3, 3000, "three refusals");
  assert.equal(ev.errors[0].kind, "refused");
  assert.equal(ev.errors[0].code, "unauthorized");
  assert.match(ev.errors[0].message, /^ws refused: unauthorized: authenticate first/);
  assert.deepEqual([...new Set(transportsOf(node))], ["ws"], "never tried sse");
  assert.notEqual(rc.state, "open");
  rc.setToken("good");
  await until(() => rc.state === "open", 3000, "open with the token");
});

for (const how of ["both", "error", "close"]) {
  test(`ws: a rejected token (${how === "both" ? "error then 4003" : how === "error" ? "error frame only" : "close 4003 only"}) backs off, asks the provider again, no fallback`, async (t) => {
    const node = checkingNode({ good: { sub: "alice" } });
    node.wsRejectWith = how;
    const tokens = provider(["forged", "forged", "good"]);
    const { rc, ev } = client(t, node, {
      token: tokens,
      transports: ["ws", "sse"],
    });
    const a = follow(rc, "a");
    await until(() => rc.state === "open", 5000, "open with the third token");
    assert.equal(rc.transport, "ws");
    assert.deepEqual([...new Set(transportsOf(node))], ["ws"], "never fell back");
    assert.equal(tokens.calls, 3, "asked before each attempt");
    assert.deepEqual(node.auths.map((x) => x.token), ["forged", "forged", "good"]);
    const refusals = ev.errors.filter((e) => e.code === "token_rejected");
    assert.equal(refusals.length, 2);
    const expected = how === "error" ? "token rejected: token signature invalid" : "token rejected: 4003 token signature invalid";
    assert.equal(refusals[0].message, expected);
    assert.equal(refusals[0].kind, "refused");
    assert.equal(refusals[0].transport, "ws");
    assert.equal(node.log.filter((r) => r.transport === "ws").length, 3);
    node.publish("a", "in");
    await until(() => a.length === 1);
  });
}

test("ws: an expired token at auth (4001) is a refusal too", async (t) => {
  const node = checkingNode({ fresh: {} });
  node.expiredTokens.add("old");
  const tokens = provider(["old", "fresh"]);
  const { rc, ev } = client(t, node, { token: tokens, transports: ["ws", "sse"] });
  follow(rc, "a");
  await until(() => rc.state === "open");
  assert.equal(ev.errors[0].message, "token rejected: 4001 token expired");
  assert.equal(ev.errors[0].code, "token_expired");
  assert.equal(ev.errors[0].kind, "refused");
  assert.deepEqual([...new Set(transportsOf(node))], ["ws"]);
});

test("ws: refusals are not hammered: the delay between attempts grows", async (t) => {
  const node = checkingNode({});
  const { rc } = client(t, node, { token: "forged", backoff: { min: 40, max: 5000 }, random: () => 0.999 });
  follow(rc, "a");
  await until(() => node.auths.length >= 4, 5000, "four attempts");
  const at = node.auths.map((x) => x.at);
  const gaps = at.slice(1, 4).map((x, i) => x - at[i]);
  // ~40, ~80, ~160 ms (plus the socket's own few ms).
  assert.ok(gaps[0] >= 35 && gaps[1] >= 75 && gaps[2] >= 150, `gaps ${gaps}`);
});

test("ws: the token expires while connected (4001): provider, reconnect, resume without loss", async (t) => {
  const node = checkingNode({ tok1: { sub: "alice" }, tok2: { sub: "alice" } });
  const tokens = provider(["tok1", "tok2"]);
  const { rc, ev } = client(t, node, { token: tokens });
  const a = follow(rc, "a");
  await until(() => rc.state === "open");
  node.publish("a", "1");
  node.publish("a", "2");
  await until(() => a.length === 2);
  node.expire("tok1");
  node.publish("a", "3"); // while the client is away
  await until(() => a.length === 3, 3000, "resumed");
  node.publish("a", "4");
  await until(() => a.length === 4);
  await sleep(30);
  assert.deepEqual(a.seqs(), [1, 2, 3, 4]);
  const expiry = ev.errors.find((e) => e.code === "token_expired");
  assert.equal(expiry.message, "ws closed: 4001 token expired");
  assert.equal(expiry.kind, "closed");
  assert.equal(tokens.calls, 2);
  const again = sockets(node).at(-1);
  assert.deepEqual(again.sent[0], { type: "auth", token: "tok2", rid: 1 });
  assert.deepEqual(again.sent[1], { type: "subscribe", ch: "a", rid: 2, since: `${node.epoch}-2` });
});

// ---- HTTP: 401 and 403 -------------------------------------------------------------------

for (const transport of ["sse", "longpoll", "poll"]) {
  test(`${transport}: 401 asks the provider again and retries ${transport}, no fallback`, async (t) => {
    const node = checkingNode({ good: {} });
    node.expiredTokens.add("stale");
    const tokens = provider(["stale", "good"]);
    const list = ["sse", "longpoll", "poll"];
    const { rc, ev } = client(t, node, { token: tokens, transports: list.slice(list.indexOf(transport)) });
    const a = follow(rc, "a");
    await until(() => rc.state === "open" && node.log.some((r) => r.auth === "Bearer good"), 3000, "open");
    assert.deepEqual([...new Set(transportsOf(node))], [transport], "no fallback");
    assert.equal(ev.errors[0].message, `${transport} refused: 401 token expired`);
    assert.equal(ev.errors[0].status, 401);
    assert.equal(ev.errors[0].kind, "refused");
    assert.equal(tokens.calls, 2);
    assert.deepEqual(node.log.map((r) => r.auth).slice(0, 2), ["Bearer stale", "Bearer good"]);
    node.publish("a", "1");
    await until(() => a.length === 1);
  });
}

for (const transport of ["ws", "sse", "longpoll", "poll"]) {
  test(`${transport}: a channel the token does not allow is reported, no fallback, the others go on; a new token brings it back`, async (t) => {
    const node = checkingNode({ limited: { sub: "bob", channels: ["a"] }, full: { sub: "bob" } });
    const list = ["ws", "sse", "longpoll", "poll"];
    const { rc, ev } = client(t, node, { token: "limited", transports: list.slice(list.indexOf(transport)) });
    const a = follow(rc, "a");
    const secret = follow(rc, "secret");
    await until(() => ev.errors.some((e) => e.channel === "secret"), 3000, "the refusal");
    const err = ev.errors.find((e) => e.channel === "secret");
    assert.equal(err.kind, "refused");
    assert.equal(err.transport, transport);
    if (transport === "ws") {
      assert.equal(err.message, "subscribe to secret refused: forbidden: the token does not allow channel secret");
    } else {
      assert.equal(err.message, `${transport} refused: 403 the token does not allow channel secret`);
      assert.equal(err.status, 403);
    }
    await until(() => rc.state === "open");
    await sleep(50);
    node.publish("a", "a1");
    node.publish("secret", "s1");
    await until(() => a.length === 1, 3000, "a flows");
    assert.deepEqual([...new Set(transportsOf(node))], [transport], "no fallback");
    assert.equal(ev.errors.filter((e) => e.channel === "secret").length, 1, "reported once");
    if (transport !== "ws") assert.equal(node.log.at(-1).params.ch, "a", "asked without it");
    assert.equal(secret.length, 0);

    rc.setToken("full");
    // "From now" starts when the node is asked: wait for that.
    const asked = {
      ws: () => [...node.sockets].some((s) => s.subs.has("secret")),
      sse: () => [...node.streams].some((s) => s.channels.includes("secret")),
      longpoll: () => node.polls.size > 0 && node.log.at(-1).params.ch === "a,secret",
      poll: () => node.log.some((r) => r.since?.includes("secret=")),
    }[transport];
    await until(asked, 3000, "secret asked for again");
    node.publish("secret", "s2");
    await until(() => secret.length >= 1, 3000, "secret with the new token");
    node.publish("a", "a2");
    await until(() => a.length === 2);
    await sleep(30);
    assert.deepEqual(a.seqs(), [1, 2]);
    assert.equal(secret.sub.active, true);
    assert.equal(rc.state, "open");
  });
}

// ---- setToken ----------------------------------------------------------------------------

test("ws: setToken sends refresh on the open socket; a refused refresh is reported", async (t) => {
  const node = checkingNode({ t1: { sub: "alice" }, t2: { sub: "alice" }, t3: { sub: "alice" }, mallory: { sub: "mallory" } });
  const { rc, ev } = client(t, node, { token: "t1" });
  const a = follow(rc, "a");
  await until(() => rc.state === "open");
  const socket = [...node.sockets][0];
  rc.setToken("t2");
  await until(() => socket.token === "t2", 2000, "refreshed");
  rc.setToken(async () => "t3");
  await until(() => socket.token === "t3", 2000, "refreshed from a provider");
  const refreshes = socket.sent.filter((m) => m.type === "refresh").map((m) => m.token);
  assert.deepEqual(refreshes, ["t2", "t3"]);
  rc.setToken("mallory"); // another identity: the node keeps the connection and refuses
  await until(() => ev.errors.length === 1);
  assert.equal(ev.errors[0].message, "token rejected: a refreshed token must name the same sub");
  assert.equal(ev.errors[0].kind, "refused");
  assert.equal(ev.errors[0].code, "token_rejected");
  assert.equal(node.sockets.size, 1);
  assert.ok(node.sockets.has(socket), "the same connection all along");
  node.publish("a", "1");
  await until(() => a.length === 1);
});

test("ws: a refresh with a token that is not valid closes (4003, reported once); setToken ends the backoff at once", async (t) => {
  const node = checkingNode({ t1: { sub: "alice" }, t2: { sub: "alice" } });
  const { rc, ev } = client(t, node, { token: "t1", backoff: { min: 5000, max: 5000 }, random: () => 0.999 });
  const a = follow(rc, "a");
  await until(() => rc.state === "open");
  node.publish("a", "1");
  await until(() => a.length === 1);
  rc.setToken("forged");
  await until(() => rc.state === "reconnecting", 2000, "closed by the node");
  await sleep(300); // past the moment a lone error frame would be reported
  assert.deepEqual(ev.errors.map((e) => [e.message, e.kind, e.code]), [["token rejected: 4003 token signature invalid", "refused", "token_rejected"]]);
  node.publish("a", "2");
  const t0 = Date.now();
  rc.setToken("t2");
  await until(() => a.length === 2, 2000, "resumed with the new token");
  assert.ok(Date.now() - t0 < 1000, "did not wait out the 5 s backoff");
  assert.deepEqual(sockets(node).at(-1).sent[0], { type: "auth", token: "t2", rid: 1 });
  assert.deepEqual(a.seqs(), [1, 2]);
});

test("ws: a token set while auth is answered follows as refresh", async (t) => {
  const node = checkingNode({ t1: { sub: "alice" }, t2: { sub: "alice" } });
  node.authDelay = 60;
  const { rc } = client(t, node, { token: "t1" });
  follow(rc, "a");
  await until(() => node.auths.length === 1);
  rc.setToken("t2");
  await until(() => rc.state === "open");
  const socket = node.auths[0].socket;
  await until(() => socket.token === "t2");
  assert.deepEqual(socket.sent.map((m) => m.type), ["auth", "subscribe", "refresh"]);
});

test("sse: setToken re-opens the stream with the new header, without loss or repeat", async (t) => {
  const node = checkingNode({ t1: {}, t2: {} });
  const { rc, ev } = client(t, node, { token: "t1", transports: ["sse"] });
  const a = follow(rc, "a");
  const b = follow(rc, "b");
  await until(() => rc.state === "open");
  let n = 0;
  const publisher = setInterval(() => {
    n++;
    node.publish("a", `a${n}`);
    node.publish("b", `b${n}`);
  }, 3);
  t.after(() => clearInterval(publisher));
  await sleep(40);
  rc.setToken("t2");
  await until(() => [...node.streams].some((s) => s.token === "t2"), 2000, "the new stream");
  await sleep(40);
  clearInterval(publisher);
  await until(() => a.length === n && b.length === n, 2000, "every message");
  await sleep(30);
  const all = Array.from({ length: n }, (_, i) => i + 1);
  assert.deepEqual(a.seqs(), all);
  assert.deepEqual(b.seqs(), all);
  assert.equal(node.streams.size, 1, "the old stream was closed");
  const opens = node.log.filter((r) => r.transport === "sse");
  assert.deepEqual(opens.map((r) => r.auth), ["Bearer t1", "Bearer t2"]);
  assert.match(opens[1].since, new RegExp(`^${node.epoch};a=\\d+,b=\\d+$`), "resumed from the positions");
  assert.equal(opens[1].init.headers["Last-Event-ID"], opens[1].since, "in Last-Event-ID, not the URL");
  assert.equal(opens[1].url, opens[0].url);
  assert.deepEqual(ev.errors, []);
});

test("polls: setToken is used by the next request", async (t) => {
  const node = checkingNode({ t1: {}, t2: {} });
  const { rc } = client(t, node, { token: "t1", transports: ["poll"] });
  follow(rc, "a");
  await until(() => rc.state === "open");
  await sleep(50);
  rc.setToken("t2");
  const from = node.log.length;
  await until(() => node.log.length > from + 2);
  assert.ok(node.log.slice(from + 1).every((r) => r.auth === "Bearer t2"));
});

test("sse: event:error token_expired ends the stream: provider, reconnect, resume", async (t) => {
  const node = checkingNode({ tok1: {}, tok2: {} });
  const tokens = provider(["tok1", "tok2"]);
  const { rc, ev } = client(t, node, { token: tokens, transports: ["sse", "poll"] });
  const a = follow(rc, "a");
  follow(rc, "b");
  await until(() => rc.state === "open");
  node.publish("a", "1");
  await until(() => a.length === 1);
  node.expire("tok1");
  node.publish("a", "2"); // between the streams
  await until(() => a.length === 2, 3000, "resumed");
  node.publish("a", "3");
  await until(() => a.length === 3);
  await sleep(30);
  assert.deepEqual(a.seqs(), [1, 2, 3]);
  const expiry = ev.errors.find((e) => e.code === "token_expired");
  assert.equal(expiry.message, "sse: token expired");
  assert.equal(expiry.kind, "closed");
  assert.equal(tokens.calls, 2);
  const opens = node.log.filter((r) => r.transport);
  assert.deepEqual(opens.map((r) => [r.transport, r.auth]), [["sse", "Bearer tok1"], ["sse", "Bearer tok2"]]);
  assert.equal(opens[1].since, `${node.epoch};a=1,b=0`);
});

test("a provider that fails is reported (kind token) and asked again after a backoff", async (t) => {
  const node = checkingNode({ good: {} });
  let calls = 0;
  const { rc, ev } = client(t, node, {
    transports: ["sse"],
    token: () => {
      if (++calls === 1) throw new Error("no session");
      return calls === 2 ? Promise.resolve(42) : "good";
    },
  });
  follow(rc, "a");
  await until(() => rc.state === "open", 3000);
  assert.equal(ev.errors[0].kind, "token");
  assert.equal(ev.errors[0].message, "token provider failed: no session");
  assert.equal(ev.errors[1].message, "token provider gave number, not a string");
  assert.equal(calls, 3);
  assert.deepEqual(node.log.map((r) => r.auth), ["Bearer good"], "no request without a token");
});

test("HTTP publish: a 401 is retried once with a fresh token from the provider, never with the same", async (t) => {
  const node = new FakeNode();
  node.intercept = (req) => (req.path === "/pub/a" && req.auth !== "Bearer fresh" ? new Response("token expired", { status: 401 }) : undefined);
  const tokens = provider(["stale", "fresh"]);
  const { rc } = client(t, node, { token: tokens, transports: ["poll"] });
  follow(rc, "a");
  await until(() => rc.state === "open");
  const { id } = await rc.publish("a", "x");
  assert.equal(id, `${node.epoch}-1`);
  assert.deepEqual(node.log.filter((r) => r.path === "/pub/a").map((r) => r.auth), ["Bearer stale", "Bearer fresh"]);

  const fixed = client(t, node, { token: "stale", transports: ["poll"] });
  await assert.rejects(fixed.rc.publish("a", "y"), { status: 401, message: "publish to a refused: 401 token expired" });
  assert.equal(node.log.filter((r) => r.path === "/pub/a").length, 3, "a string token is not retried");
});

test("token option and setToken are checked", async (t) => {
  assert.throws(() => connect(BASE, { token: 42, shared: false, fetch: null, WebSocket: null }), TypeError);
  const node = new FakeNode();
  const { rc } = client(t, node, { transports: ["poll"] });
  assert.throws(() => rc.setToken({}), TypeError);
  rc.close();
  assert.throws(() => rc.setToken("x"), { kind: "client-closed" });
});

// ---- shared tabs -------------------------------------------------------------------------

test("shared: setToken in a follower reaches the leader (refresh), and the next leader starts with it", async (t) => {
  const node = checkingNode({ t1: { sub: "u" }, t2: { sub: "u" } });
  const locks = new FakeLocks();
  const open = () => {
    const channels = tabChannels();
    const rc = connect("http://shared-token.test", {
      WebSocket: node.WebSocket,
      fetch: node.fetch,
      storage: null,
      locks: locks.tab(),
      BroadcastChannel: channels.BroadcastChannel,
      backoff: { min: 10, max: 40 },
      token: "t1",
    });
    t.after(() => rc.close());
    return rc;
  };
  const A = open();
  follow(A, "a");
  await until(() => A.state === "open", 3000, "A open");
  const B = open();
  const C = open();
  const cGot = follow(C, "a");
  await until(() => B.state === "open" && C.state === "open", 3000, "B and C see the leader");
  await until(() => [...node.sockets][0]?.subs.has("a"), 3000, "the leader follows a");
  const leaderSocket = [...node.sockets][0];
  B.setToken("t2");
  await until(() => leaderSocket.token === "t2", 2000, "the leader refreshed");
  assert.deepEqual(leaderSocket.sent.filter((m) => m.type === "refresh").map((m) => m.token), ["t2"]);
  assert.equal(node.sockets.size, 1, "still one connection");

  A.close(); // B or C leads next, with the newest token
  await until(() => node.sockets.size === 1 && ![...node.sockets].includes(leaderSocket) && [...node.sockets][0].subs.has("a"), 3000, "a new leader");
  assert.equal(sockets(node).at(-1).sent[0].token, "t2");
  node.publish("a", "after");
  await until(() => cGot.length === 1, 3000, "C gets messages from the new leader");
});

test("no unhandled rejection or uncaught exception in this file", async () => {
  await sleep(50);
  assert.deepEqual(unhandled, []);
});
