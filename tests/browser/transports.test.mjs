// The browser client in real Chromium, one transport at a time: every
// message arrives once and in order, the page publishes, and forced
// disconnects lose nothing.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { appServer, clientPage, launch, Node, proxy, until } from "./harness.mjs";

const TRANSPORTS = ["ws", "sse", "longpoll", "poll"];

let node, app, browser;
before(async () => {
  node = await Node.start(["--history-size", "1000", "--client-publish"]);
  app = await appServer();
  browser = await launch();
});
after(async () => {
  await browser?.close();
  await app?.close();
  await node?.stop();
});

/**
 * Connects a page of its own to `url` on `transport` and subscribes to `ch`
 * from `since`; the page records what it receives in `window.got`.
 */
async function subscribedPage(url, transport, ch, since) {
  const context = await browser.newContext();
  const page = await clientPage(context, app, url);
  await page.evaluate(
    ({ url, transport, ch, since }) => {
      window.got = [];
      window.errors = [];
      window.used = [];
      window.rc = window.ringcast.connect(url, {
        transports: [transport],
        pollInterval: 200,
        backoff: { min: 100, max: 1000 },
        shared: false,
      });
      rc.on("transport", (t) => used.push(t));
      rc.on("error", (e) => errors.push(e.message));
      window.sub = rc.subscribe(ch, (m) => got.push(`${m.id} ${m.data}`), { since });
    },
    { url, transport, ch, since },
  );
  return { page, context };
}

/** Asserts `got` is exactly `ids` with `data`, in order. */
function assertExactly(got, expected) {
  const dupes = got.filter((g, i) => got.indexOf(g) !== i);
  assert.deepEqual(dupes, [], "no message twice");
  assert.deepEqual(got, expected);
}

describe("each transport forced in turn", () => {
  for (const transport of TRANSPORTS) {
    test(`${transport}: 200 messages arrive in order, none lost or repeated, and the page publishes`, async () => {
      const ch = `room-${transport}`;
      const first = await node.publish(ch, "m0");
      const epoch = first.split("-")[0];
      const { page, context } = await subscribedPage(node.url, transport, ch, `${epoch}-0`);
      const expected = [`${first} m0`];
      for (let i = 1; i < 200; i++) {
        expected.push(`${await node.publish(ch, `m${i}`)} m${i}`);
        if (i % 50 === 0) await new Promise((r) => setTimeout(r, 20));
      }
      await until(() => page.evaluate(() => got.length >= 200), 20_000, "200 messages");
      const id = await page.evaluate((ch) => rc.publish(ch, "from the page").then((r) => r.id), ch);
      assert.match(id, /^[0-9a-f]{12}-\d+$/);
      expected.push(`${id} from the page`);
      await until(() => page.evaluate(() => got.length >= 201), 10_000, "the page's own message");
      await new Promise((r) => setTimeout(r, 300));
      assertExactly(await page.evaluate(() => got), expected);
      assert.deepEqual(await page.evaluate(() => [rc.transport, used[0]]), [transport, transport]);
      assert.deepEqual(await page.evaluate(() => errors), []);
      assert.deepEqual(page.problems, []);
      await context.close();
    });
  }
});

describe("the server drops every connection while messages flow", () => {
  for (const transport of TRANSPORTS) {
    test(`${transport}: resumes with no loss and no duplicate`, async () => {
      const through = await proxy(node.port);
      try {
        const ch = `drops-${transport}`;
        const first = await node.publish(ch, "d0");
        const epoch = first.split("-")[0];
        const { page, context } = await subscribedPage(through.url, transport, ch, `${epoch}-0`);
        await until(() => page.evaluate(() => got.length >= 1), 10_000, "the first message");
        const expected = [`${first} d0`];
        for (let i = 1; i <= 150; i++) {
          expected.push(`${await node.publish(ch, `d${i}`)} d${i}`);
          if (i % 50 === 0) through.dropAll();
          await new Promise((r) => setTimeout(r, 5));
        }
        await until(() => page.evaluate(() => got.length >= 151), 30_000, "every message after the drops");
        await new Promise((r) => setTimeout(r, 500));
        assertExactly(await page.evaluate(() => got), expected);
        assert.ok(through.dropped > 0, "connections were dropped");
        if (transport === "ws" || transport === "sse") {
          // (A dropped keep-alive poll is retried by the browser itself.)
          assert.ok((await page.evaluate(() => rc.stats.reconnects)) >= 1, "the client reconnected");
        }
        assert.deepEqual(page.problems, []);
        await context.close();
      } finally {
        await through.close();
      }
    });
  }
});
