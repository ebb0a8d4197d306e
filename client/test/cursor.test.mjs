// Ids, composite cursors, de-duplication and resets: the pure rules every
// subscription (and the connection's mirror of it) follows.
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  parseId,
  formatId,
  encodeCursor,
  parseCursor,
  acceptsId,
  olderPosition,
  applyReset,
  normalizeReset,
} from "../ringcast.js";

const E = "5f3a9c01be42";
const F = "000000000abc";
const pos = (seq, epoch = E) => ({ epoch, seq });

test("parseId / formatId", () => {
  assert.deepEqual(parseId(`${E}-17`), pos(17));
  assert.deepEqual(parseId(`${E}-0`), pos(0));
  assert.deepEqual(parseId("5F3A9C01BE42-3"), pos(3)); // hex case does not matter
  assert.equal(formatId(pos(17)), `${E}-17`);
  for (const bad of ["", "17", `${E}-`, `${E}-x`, `${E.slice(1)}-1`, `${E}1-1`, `${E}-1-2`, `${E}-99999999999999999999`, null, 5]) {
    assert.equal(parseId(bad), null, String(bad));
  }
});

test("composite cursor: build and parse round-trip", () => {
  const c = encodeCursor(E, [["news", 17], ["sport", 4], ["a:b@c.d", 0]]);
  assert.equal(c, `${E};news=17,sport=4,a:b@c.d=0`);
  const p = parseCursor(c);
  assert.equal(p.epoch, E);
  assert.deepEqual([...p.positions], [["news", pos(17)], ["sport", pos(4)], ["a:b@c.d", pos(0)]]);
  // No channel, no cursor: everything from now.
  assert.equal(encodeCursor(E, []), null);
  assert.equal(encodeCursor([]), null);
  // The server's forms: an empty list, a trailing comma.
  assert.deepEqual([...parseCursor(`${E};`).positions], []);
  assert.deepEqual([...parseCursor(`${E};a=1,`).positions], [["a", pos(1)]]);
});

test("composite cursor: one epoch for all is today's form, from positions too", () => {
  const entries = [["news", pos(17)], ["sport", pos(4)]];
  assert.equal(encodeCursor(entries), `${E};news=17,sport=4`);
  assert.equal(encodeCursor(E, entries), `${E};news=17,sport=4`);
});

test("composite cursor: mixed epochs, the most common as prefix, round-trip", () => {
  // One channel in F, two in E: E is the prefix, F's entry names its own.
  const entries = [["a", pos(9, F)], ["b", pos(3)], ["c-1.x", pos(0)]];
  const c = encodeCursor(entries);
  assert.equal(c, `${E};a=${F}-9,b=3,c-1.x=0`);
  const p = parseCursor(c);
  assert.equal(p.epoch, E);
  assert.deepEqual([...p.positions], entries);
  assert.equal(encodeCursor([...p.positions]), c);
  // A tie: the epoch met first.
  assert.equal(encodeCursor([["a", pos(1, F)], ["b", pos(2)]]), `${F};a=1,b=${E}-2`);
  // A given prefix: the others in their own epoch, even if most share one.
  assert.equal(encodeCursor(F, [["a", pos(1)], ["b", pos(2)], ["c", 5]]), `${F};a=${E}-1,b=${E}-2,c=5`);
  // Every entry in its own epoch, one of them the prefix's: all the same.
  const p2 = parseCursor(`${E};a=${E}-1,b=${F.toUpperCase()}-2,c=3`);
  assert.deepEqual([...p2.positions], [["a", pos(1)], ["b", pos(2, F)], ["c", pos(3)]]);
  // A channel name with `-` in both forms: split at the last `=`.
  assert.deepEqual([...parseCursor(`${F};a-b=7,c-d=${E}-8`).positions], [["a-b", pos(7, F)], ["c-d", pos(8)]]);
});

test("composite cursor: malformed ones are refused", () => {
  for (const bad of [
    `${E}-1`,
    `${E}`,
    `xyz;a=1`,
    `${E};a`,
    `${E};=1`,
    `${E};a=x`,
    `${E};a=-1`,
    `${E};a=zz-1`, // not hex
    `${E};a=0000000000ab-`, // no seq
    `${E};a=${E.slice(1)}-1`, // 11 digits
    `${E};a=${E}0-1`, // 13 digits
    `${E};a=${E}-1-2`,
    `${E};a=${E}-x`,
    `${E};a=${E}-99999999999999999999`, // beyond 2^53
    `${E.slice(1)};a=1`, // an 11-digit prefix
    `${E};a=1,b=zz-2`, // one bad entry spoils the cursor
    42,
  ]) {
    assert.equal(parseCursor(bad), null, String(bad));
  }
});

test("de-duplication: within an epoch, seq must grow", () => {
  assert.equal(acceptsId(null, pos(1)), true); // no position yet: take it
  assert.equal(acceptsId(pos(5), pos(6)), true);
  assert.equal(acceptsId(pos(5), pos(5)), false); // repeated
  assert.equal(acceptsId(pos(5), pos(3)), false); // older
  assert.equal(acceptsId(pos(0), pos(1)), true); // <epoch>-0 takes the first message
  // Another epoch waits for the reset that moves the position there.
  assert.equal(acceptsId(pos(5), pos(9, F)), false);
});

test("olderPosition picks the resume point that loses nothing", () => {
  assert.deepEqual(olderPosition(pos(3), pos(7)), pos(3));
  assert.deepEqual(olderPosition(pos(7), pos(3)), pos(3));
  assert.deepEqual(olderPosition(null, pos(7)), pos(7)); // "from now" is newest
  assert.deepEqual(olderPosition(pos(7), null), pos(7));
  assert.equal(olderPosition(null, null), null);
  // Across epochs, the one not in the channel's current epoch is older.
  assert.deepEqual(olderPosition(pos(9, F), pos(2), E), pos(9, F));
  assert.deepEqual(olderPosition(pos(2), pos(9, F), E), pos(9, F));
  assert.deepEqual(olderPosition(pos(2), pos(9, F), F), pos(2));
});

test("reset epoch: moves to the new epoch's start, once", () => {
  const r = normalizeReset({ ch: "a", reason: "epoch", since: `${E}-5`, missed: null, epoch: F });
  const first = applyReset(pos(5), r);
  assert.deepEqual(first, { applied: true, pos: pos(0, F), missed: null });
  // The same reset again (an overlapping connection) changes nothing.
  assert.equal(applyReset(first.pos, r).applied, false);
  // A position already in the new epoch was not affected.
  assert.equal(applyReset(pos(3, F), r).applied, false);
  // No position: nothing to lose.
  assert.equal(applyReset(null, r).applied, false);
  // After the reset, the new epoch's history is taken.
  assert.equal(acceptsId(first.pos, pos(1, F)), true);
});

test("reset evicted: each position computes what it missed", () => {
  // The node resumed from 3 and history starts at 10: 4..9 lost (6).
  const r = normalizeReset({ ch: "a", reason: "evicted", since: `${E}-3`, missed: 6 });
  assert.deepEqual(applyReset(pos(3), r), { applied: true, pos: pos(9), missed: 6 });
  // A tab that had reached 7 lost only 8 and 9.
  assert.deepEqual(applyReset(pos(7), r), { applied: true, pos: pos(9), missed: 2 });
  // One already at 9 or beyond lost nothing.
  assert.equal(applyReset(pos(9), r).applied, false);
  assert.equal(applyReset(pos(12), r).applied, false);
  // Applied twice: the second is a no-op.
  assert.equal(applyReset(pos(9), r).applied, false);
  // Another epoch: not about this position.
  assert.equal(applyReset(pos(3, F), r).applied, false);
});

test("reset evicted without a count: the channel started over", () => {
  const r = normalizeReset({ ch: "a", reason: "evicted", since: `${E}-40`, missed: null });
  const once = applyReset(pos(40), r);
  assert.deepEqual(once, { applied: true, pos: pos(0), missed: null });
  assert.equal(applyReset(once.pos, r).applied, false);
  // The new incarnation's messages (above every old seq) are taken.
  assert.equal(acceptsId(once.pos, pos(1000)), true);
});

test("reset unknown: a bogus position takes all history", () => {
  const r = normalizeReset({ ch: "a", reason: "unknown", since: `${E}-999`, missed: null });
  const once = applyReset(pos(999), r);
  assert.deepEqual(once, { applied: true, pos: pos(0), missed: null });
  assert.equal(acceptsId(once.pos, pos(1)), true);
  assert.equal(applyReset(once.pos, r).applied, false);
  assert.equal(applyReset(pos(1000), r).applied, true); // as bogus
});

test("reset from <epoch>-0: only a position at 0 can tell its loss", () => {
  const r = normalizeReset({ ch: "a", reason: "evicted", since: `${E}-0`, missed: 4 });
  assert.deepEqual(applyReset(pos(0), r), { applied: true, pos: pos(0), missed: 4 });
  assert.equal(applyReset(pos(50), r).applied, false);
});

test("lagging and unknown reasons never count as a loss", () => {
  assert.equal(applyReset(pos(3), normalizeReset({ ch: "a", reason: "lagging", since: `${E}-3` })).applied, false);
  assert.equal(applyReset(pos(3), normalizeReset({ ch: "a", reason: "martian", since: `${E}-3` })).applied, false);
});

test("an epoch reset in a poll takes its channel's epoch from the cursor entry, not the prefix", () => {
  // Channel b lost its keys (F -> G); a stays in E, the cursor's prefix.
  const G = "00000000fe01";
  const next = parseCursor(`${E};a=5,b=${G}-0`);
  const r = normalizeReset({ ch: "b", reason: "epoch", since: `${F}-4`, missed: null }, next.positions.get("b").epoch);
  assert.equal(r.epoch, G);
  assert.deepEqual(applyReset(pos(4, F), r), { applied: true, pos: pos(0, G), missed: null });
  assert.equal(applyReset(pos(0, G), r).applied, false); // once
  assert.equal(acceptsId(pos(0, G), pos(1, G)), true);
  assert.equal(acceptsId(pos(4, F), pos(1, G)), false, "nothing of the new epoch before the reset");
});

test("normalizeReset takes the epoch from the reset or the answer's cursor", () => {
  const ws = normalizeReset({ type: "reset", ch: "a", reason: "epoch", since: `${F}-1`, missed: null, epoch: E.toUpperCase() });
  assert.equal(ws.epoch, E);
  assert.deepEqual(ws.since, pos(1, F));
  assert.equal(ws.sinceId, `${F}-1`);
  const poll = normalizeReset({ ch: "a", reason: "epoch", since: `${F}-1`, missed: null }, E);
  assert.equal(poll.epoch, E);
  assert.equal(normalizeReset({ ch: "a", reason: "evicted", since: `${E}-1`, missed: 3 }).missed, 3);
});
