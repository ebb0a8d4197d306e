// Durable subscriptions in real Chromium against a real node with a store
// (`--data-dir`) and tokens (`--jwt-secret`): the page subscribes durably
// with a token naming a user, its handler records every message, the client
// acks after the handler; the node is stopped (SIGTERM) and started again on
// the same data dir, more is published, and the handler has seen every
// message exactly once, in order, with no reset. Then the page goes, more
// is published, and a new page (a reload) gets exactly what was not acked,
// from the node's cursor. Once on /ws (acks as frames), once forced onto
// the event stream and once onto long polling (acks as POST /ack/{ch}).

import assert from "node:assert/strict";
import crypto from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";

import { appServer, clientPage, launch, Node, until } from "./harness.mjs";

const SECRET = "a-secret-of-at-least-32-bytes-long!";

/** An HS256 JWT for `sub`, reading every channel, valid for an hour. */
function token(sub) {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
  const body = `${b64({ alg: "HS256", typ: "JWT" })}.${b64({ sub, exp: Math.floor(Date.now() / 1000) + 3600, channels: ["*"] })}`;
  return `${body}.${crypto.createHmac("sha256", SECRET).update(body).digest("base64url")}`;
}

let node, app, browser, dir;
before(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "ringcast-durable-browser-"));
  node = await Node.start(["--jwt-secret", SECRET, "--data-dir", dir, "--fsync", "always", "--history-size", "1000"]);
  app = await appServer();
  browser = await launch();
});
after(async () => {
  await browser?.close();
  await app?.close();
  await node?.stop();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

/** A page following `ch` durably on `transport` as `sub` (device `laptop`):
 * `got` (`<id> <data>`), `resets`, `unread` events, `errors`, and the
 * `POST /ack` requests it made (`acks`). */
async function durablePage(transport, ch, sub, throwOn = null) {
  const context = await browser.newContext();
  const page = await clientPage(context, app, node.url);
  await page.evaluate(
    ({ url, transport, ch, token, throwOn }) => {
      window.got = [];
      window.errors = [];
      window.resets = [];
      window.unread = [];
      window.acks = [];
      const realFetch = window.fetch.bind(window);
      window.fetch = (u, init) => {
        if (String(u).includes("/ack/")) acks.push({ url: String(u), method: init?.method, body: init?.body });
        return realFetch(u, init);
      };
      window.rc = window.ringcast.connect(url, {
        transports: [transport],
        token,
        device: "laptop",
        pollInterval: 200,
        backoff: { min: 100, max: 500 },
        shared: false,
      });
      rc.on("error", (e) => errors.push(`${e.kind} ${e.code ?? ""} ${e.message}`));
      rc.on("reset", (r) => resets.push(r));
      rc.on("unread", (u) => unread.push(u));
      window.sub = rc.subscribe(ch, (m) => {
        got.push(`${m.id} ${m.data}`);
        if (m.data === throwOn) throw new Error(`no thanks: ${m.data}`);
      }, { durable: true });
    },
    { url: node.url, transport, ch, token: token(sub), throwOn },
  );
  await until(() => page.evaluate(() => rc.state === "open"), 10_000, "the page to connect");
  return { page, context };
}

/** What `sub` has unread on `ch` (device `laptop`), per `GET /unread`. */
async function unreadOf(sub, ch) {
  const r = await fetch(`${node.url}/unread?device=laptop`, { headers: { Authorization: `Bearer ${token(sub)}` } });
  assert.equal(r.status, 200, await r.clone().text());
  return (await r.json()).unread[ch];
}

async function publishAll(ch, prefix, n) {
  const out = [];
  for (let i = 0; i < n; i++) out.push(`${await node.publish(ch, `${prefix}${i}`)} ${prefix}${i}`);
  return out;
}

function assertExactly(got, expected) {
  const dupes = got.filter((g, i) => got.indexOf(g) !== i);
  assert.deepEqual(dupes, [], "no message twice");
  assert.deepEqual(got, expected);
}

describe("durable subscriptions survive a node restart", () => {
  for (const transport of ["ws", "sse", "longpoll"]) {
    test(`${transport}: every message once, in order, across a restart; acks persist; a reload resumes from the cursor`, async () => {
      const ch = `inbox-${transport}`;
      const user = `ann-${transport}`;
      const { page, context } = await durablePage(transport, ch, user);
      if (transport === "ws") {
        await until(() => page.evaluate(() => unread.length >= 1), 5_000, "unread from subscribed");
        assert.equal(await page.evaluate(() => sub.unread), 0);
      }
      const expected = await publishAll(ch, "a", 20);
      await until(() => page.evaluate(() => got.length >= 20), 15_000, "the first 20");
      await until(async () => (await unreadOf(user, ch)) === 0, 5_000, "the auto-ack of the first 20");
      const epoch = expected[0].split("-")[0];

      // A graceful restart on the same data dir: same epoch, history kept.
      await node.stop();
      await node.spawn();
      expected.push(...(await publishAll(ch, "b", 20)));
      await until(() => page.evaluate(() => got.length >= 40), 30_000, "20 more after the restart");
      await until(async () => (await unreadOf(user, ch)) === 0, 5_000, "the auto-ack of all 40");
      await new Promise((r) => setTimeout(r, 300));
      assertExactly(await page.evaluate(() => got), expected);
      assert.ok(expected.every((e) => e.startsWith(epoch)), "the epoch survived the restart");
      assert.deepEqual(await page.evaluate(() => resets), [], "no reset");
      assert.equal(await page.evaluate(() => sub.cursor), expected[39].split(" ")[0]);
      const acks = await page.evaluate(() => acks);
      if (transport === "ws") {
        assert.deepEqual(acks, [], "acks travel as /ws frames");
      } else {
        assert.ok(acks.length >= 2, `acks: ${JSON.stringify(acks)}`);
        assert.ok(acks.length <= 20, `coalesced: ${acks.length} acks for 40 messages`);
        assert.ok(acks.every((a) => a.method === "POST" && a.url.endsWith(`/ack/${ch}?device=laptop`)), JSON.stringify(acks));
      }
      // The restart itself is reported (the connection closed, unavailable
      // while the node was down); nothing else is — no refused ack, no
      // protocol or handler error.
      const restartKinds = /^(network|closed|unavailable|timeout|refused) /;
      const errors = await page.evaluate(() => errors);
      // (An ack in flight as the node went down is reported, and retried.)
      assert.deepEqual(errors.filter((x) => !restartKinds.test(x) || /^refused .*ack of/.test(x)), [], JSON.stringify(errors));
      await context.close();

      // Nobody listening: three more. A new page (a reload) starts from the
      // node's cursor, so it gets exactly those three — and not the 40.
      const missed = await publishAll(ch, "c", 3);
      assert.equal(await unreadOf(user, ch), 3);
      const again = await durablePage(transport, ch, user);
      await until(() => again.page.evaluate(() => got.length >= 3), 10_000, "the three unacked");
      await until(async () => (await unreadOf(user, ch)) === 0, 5_000, "their ack");
      await new Promise((r) => setTimeout(r, 300));
      assertExactly(await again.page.evaluate(() => got), missed);
      if (transport === "ws") assert.equal((await again.page.evaluate(() => unread))[0].unread, 3);
      assert.deepEqual(again.page.problems, []);
      // A request preflighted while the node drains gets a 503 preflight
      // answer, which Chromium logs as a CORS failure (the client sees a
      // network error and retries): that, and only that, is expected of
      // the page that lived through the restart.
      const drainPreflight = /blocked by CORS policy: Response to preflight request doesn't pass access control check: It does not have HTTP ok status/;
      assert.deepEqual(page.problems.filter((p) => !drainPreflight.test(p)), []);
      await again.context.close();
    });
  }
});

test("a handler that throws: its message, and what followed, is not acked, and comes again to the next page", async () => {
  const ch = "inbox-throws";
  const user = "bob";
  const first = await durablePage("ws", ch, user, "x2");
  const all = await publishAll(ch, "x", 5);
  await until(() => first.page.evaluate(() => got.length >= 5), 10_000, "five messages");
  await until(async () => (await unreadOf(user, ch)) === 3, 5_000, "the acks of x0 and x1 only");
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(await unreadOf(user, ch), 3, "nothing past the failed message is acked");
  assertExactly(await first.page.evaluate(() => got), all);
  const errors = await first.page.evaluate(() => errors);
  assert.equal(errors.length, 1, JSON.stringify(errors));
  assert.match(errors[0], /^handler .*no thanks: x2/);
  await first.context.close();
  const again = await durablePage("ws", ch, user);
  await until(() => again.page.evaluate(() => got.length >= 3), 10_000, "the three again");
  await until(async () => (await unreadOf(user, ch)) === 0, 5_000, "acked this time");
  assertExactly(await again.page.evaluate(() => got), all.slice(2));
  assert.deepEqual(again.page.problems, []);
  await again.context.close();
});
