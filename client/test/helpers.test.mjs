// Helpers: backoff, base64, channel names, URL normalization, options.
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  backoffDelay,
  base64ToBytes,
  bytesToBase64,
  isChannelName,
  normalizeBase,
  connect,
  RingcastError,
} from "../ringcast.js";

test("backoff: full jitter spans [floor, min(max, min·2^attempt))", () => {
  const bounds = { min: 500, max: 30000 };
  // random() = 0 gives the floor, never 0.
  assert.equal(backoffDelay(0, bounds, () => 0), 100);
  assert.equal(backoffDelay(7, bounds, () => 0), 100);
  // random() just under 1 gives just under the cap.
  const top = 0.999999;
  assert.equal(backoffDelay(0, bounds, () => top), 499);
  assert.equal(backoffDelay(1, bounds, () => top), 999);
  assert.equal(backoffDelay(3, bounds, () => top), 3999);
  // The cap stops at max, however many attempts.
  assert.equal(backoffDelay(6, bounds, () => top), 29999);
  assert.equal(backoffDelay(60, bounds, () => top), 29999);
  assert.equal(backoffDelay(10000, bounds, () => top), 29999);
  // Halfway is half the window.
  assert.equal(backoffDelay(2, bounds, () => 0.5), 1000);
});

test("backoff: the floor is min when min is below 100 ms", () => {
  assert.equal(backoffDelay(0, { min: 20, max: 100 }, () => 0), 20);
  assert.equal(backoffDelay(5, { min: 20, max: 100 }, () => 0.5), 50);
});

test("backoff: delays drawn with Math.random stay in bounds and spread out", () => {
  const bounds = { min: 500, max: 30000 };
  for (let attempt = 0; attempt < 12; attempt++) {
    const cap = Math.min(bounds.max, bounds.min * 2 ** attempt);
    const seen = new Set();
    for (let i = 0; i < 200; i++) {
      const d = backoffDelay(attempt, bounds);
      assert.ok(d >= 100 && d < cap, `attempt ${attempt}: ${d} outside [100, ${cap})`);
      seen.add(Math.floor((d / cap) * 4));
    }
    // Full jitter: all four quarters of the window get used.
    assert.equal(seen.size, 4, `attempt ${attempt} used quarters ${[...seen]}`);
  }
});

test("base64 round-trips every byte value", () => {
  const all = new Uint8Array(256).map((_, i) => i);
  assert.deepEqual(base64ToBytes(bytesToBase64(all)), all);
  assert.equal(bytesToBase64(new Uint8Array([0, 255])), "AP8=");
  assert.deepEqual(base64ToBytes("AP8="), new Uint8Array([0, 255]));
  assert.deepEqual(base64ToBytes(""), new Uint8Array(0));
  // Large payloads go through in slices (no call-stack overflow).
  const big = new Uint8Array(200000).map((_, i) => (i * 7) & 255);
  assert.deepEqual(base64ToBytes(bytesToBase64(big)), big);
});

test("channel names follow the server's rule", () => {
  for (const ok of ["a", "room-1", "a.b:c@d_e", "x".repeat(128)]) assert.ok(isChannelName(ok), ok);
  for (const bad of ["", "x".repeat(129), "a b", "a,b", "a;b", "é", "a/b", null, 3]) assert.ok(!isChannelName(bad), String(bad));
});

test("normalizeBase: http(s) without trailing slash; ws URLs mapped", () => {
  assert.equal(normalizeBase("http://h:1"), "http://h:1");
  assert.equal(normalizeBase("http://h:1/"), "http://h:1");
  assert.equal(normalizeBase("https://h/prefix/"), "https://h/prefix");
  assert.equal(normalizeBase("ws://h:1"), "http://h:1");
  assert.equal(normalizeBase("wss://h/rt"), "https://h/rt");
  assert.equal(normalizeBase("http://h:1/x?y=1#z"), "http://h:1/x");
  assert.throws(() => normalizeBase("ftp://h"), TypeError);
  // Loaded from a file (as in these tests), there is no node to default to.
  assert.throws(() => normalizeBase(undefined), /url is required/);
});

test("connect validates its options", () => {
  const base = { shared: false, fetch: async () => new Response(null, { status: 204 }) };
  assert.throws(() => connect("http://h", { ...base, transports: [] }), /at least one/);
  assert.throws(() => connect("http://h", { ...base, transports: ["ws", "carrier-pigeon"] }), /unknown transport/);
  assert.throws(() => connect("http://h", { ...base, backoff: { min: 0 } }), /backoff/);
  assert.throws(() => connect("http://h", { ...base, pollInterval: -1 }), /pollInterval/);
  const rc = connect("http://h", { ...base, transports: ["poll"] });
  assert.throws(() => rc.subscribe("bad name", () => {}), TypeError);
  assert.throws(() => rc.subscribe("ok", () => {}, { since: "17" }), /invalid since/);
  assert.throws(() => rc.subscribe("ok", "not a function"), TypeError);
  rc.close();
});

test("RingcastError carries kind and details", () => {
  const e = new RingcastError("sse refused: 501 off", { kind: "refused", status: 501, transport: "sse", cause: 1 });
  assert.ok(e instanceof Error);
  assert.equal(e.name, "RingcastError");
  assert.equal(e.kind, "refused");
  assert.equal(e.status, 501);
  assert.equal(e.transport, "sse");
  assert.equal(e.cause, 1);
  assert.equal("retryAfter" in e, false);
});
