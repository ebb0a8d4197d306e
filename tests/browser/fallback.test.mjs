// Falling back, and coming back: transports turned off on the node, a
// proxy that strips `Upgrade`, a node that restarts (new epoch), and
// origins that are not allowed.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { appServer, clientPage, launch, Node, proxy, until } from "./harness.mjs";

let app, other, browser;
before(async () => {
  app = await appServer();
  other = await appServer();
  browser = await launch();
});
after(async () => {
  await browser?.close();
  await app?.close();
  await other?.close();
});

/** A page of `app` connected to `url` with the default transport order. */
async function defaultClient(url, options = {}) {
  const context = await browser.newContext();
  const page = await clientPage(context, app, url);
  await page.evaluate(
    ({ url, options }) => {
      window.got = [];
      window.errors = [];
      window.used = [];
      window.resets = [];
      window.rc = window.ringcast.connect(url, {
        backoff: { min: 100, max: 1000 },
        shared: false,
        ...options,
      });
      rc.on("transport", (t) => used.push(t));
      rc.on("error", (e) => errors.push(e.message));
      rc.on("reset", (r) => resets.push(r));
      rc.subscribe("news", (m) => got.push(m.data));
    },
    { url, options },
  );
  return { page, context };
}

for (const [off, expected] of [
  ["sse,longpoll,poll", "sse"],
  ["longpoll,poll", "longpoll"],
  ["poll", "poll"],
]) {
  test(`with only ${off} on, the client ends on ${expected} and receives`, async () => {
    const node = await Node.start(["--transports", off]);
    try {
      const { page, context } = await defaultClient(node.url, { pollInterval: 200 });
      await until(() => page.evaluate(() => rc.state === "open"), 15_000, "open");
      assert.equal(await page.evaluate(() => rc.transport), expected);
      // Each refused transport was reported, naming what the node offers.
      const errors = await page.evaluate(() => errors);
      if (expected !== "ws") {
        assert.ok(errors.some((e) => e.includes("ws")), JSON.stringify(errors));
      }
      await new Promise((r) => setTimeout(r, 300));
      await node.publish("news", "hello");
      await until(() => page.evaluate(() => got.includes("hello")), 10_000, "the message");
      assert.deepEqual(page.problems, []);
      await context.close();
    } finally {
      await node.stop();
    }
  });
}

test("a proxy that strips Upgrade: the client falls back to sse, then probes ws and switches back without loss", async () => {
  const node = await Node.start();
  const through = await proxy(node.port);
  through.stripUpgrade = true;
  try {
    const { page, context } = await defaultClient(through.url, { probeInterval: 1000 });
    await until(() => page.evaluate(() => rc.state === "open"), 15_000, "open");
    assert.equal(await page.evaluate(() => rc.transport), "sse");
    let n = 0;
    await node.publish("news", `n${n++}`);
    await until(() => page.evaluate(() => got.length === 1), 10_000, "a message over sse");
    // The proxy mends its ways: the next probe upgrades, and the client
    // moves to ws while messages keep flowing.
    through.stripUpgrade = false;
    const deadline = Date.now() + 20_000;
    while ((await page.evaluate(() => rc.transport)) !== "ws" && Date.now() < deadline) {
      await node.publish("news", `n${n++}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.equal(await page.evaluate(() => rc.transport), "ws");
    for (let i = 0; i < 20; i++) await node.publish("news", `n${n++}`);
    await until(() => page.evaluate((n) => got.length >= n, n), 10_000, "every message");
    await new Promise((r) => setTimeout(r, 300));
    const expected = Array.from({ length: n }, (_, i) => `n${i}`);
    assert.deepEqual(await page.evaluate(() => got), expected);
    assert.deepEqual(await page.evaluate(() => used.slice(0, 2)), ["sse", "ws"]);
    assert.deepEqual(page.problems, []);
    await context.close();
  } finally {
    await through.close();
    await node.stop();
  }
});

test("the node is killed and restarted mid-stream: the client reconnects and reports the reset (new epoch)", async () => {
  const node = await Node.start();
  try {
    const { page, context } = await defaultClient(node.url);
    await until(() => page.evaluate(() => rc.state === "open"), 15_000, "open");
    await new Promise((r) => setTimeout(r, 200));
    await node.publish("news", "before");
    await until(() => page.evaluate(() => got.includes("before")), 10_000, "a message before the crash");
    await node.restart();
    await until(() => page.evaluate(() => resets.length > 0), 20_000, "the reset");
    const [reset] = await page.evaluate(() => resets);
    assert.equal(reset.ch, "news");
    assert.equal(reset.reason, "epoch");
    await until(() => page.evaluate(() => rc.state === "open"), 15_000, "open again");
    await node.publish("news", "after");
    await until(() => page.evaluate(() => got.includes("after")), 10_000, "a message after the restart");
    assert.ok((await page.evaluate(() => rc.stats.reconnects)) >= 1);
    assert.deepEqual(page.problems, []);
    await context.close();
  } finally {
    await node.stop();
  }
});

test("a page from an allowed origin works; one from another origin is refused, the WebSocket with 403", async () => {
  const node = await Node.start(["--allowed-origins", app.origin]);
  try {
    const { page, context } = await defaultClient(node.url);
    await until(() => page.evaluate(() => rc.state === "open"), 15_000, "open");
    assert.equal(await page.evaluate(() => rc.transport), "ws");
    await new Promise((r) => setTimeout(r, 200));
    await node.publish("news", "allowed");
    await until(() => page.evaluate(() => got.includes("allowed")), 10_000, "the message");
    await context.close();

    // A page of an origin that is not listed loads the (public) client,
    // and every transport is refused: the client says why, and never opens.
    const stranger = await browser.newContext();
    const page2 = await clientPage(stranger, other, node.url);
    await page2.evaluate((url) => {
      window.errors = [];
      window.rc = window.ringcast.connect(url, { backoff: { min: 100, max: 500 }, shared: false });
      rc.on("error", (e) => errors.push(e.message));
      rc.subscribe("news", () => {});
    }, node.url);
    await until(
      () => page2.evaluate(() => errors.some((e) => e.includes("not allowed"))),
      15_000,
      "an error naming the refusal",
    );
    assert.notEqual(await page2.evaluate(() => rc.state), "open");
    const raw = await page2.evaluate(
      (url) =>
        new Promise((resolve) => {
          const s = new WebSocket(`${url.replace("http", "ws")}/ws`);
          s.onopen = () => resolve("open");
          s.onclose = (e) => resolve(`closed ${e.code}`);
        }),
      node.url,
    );
    assert.equal(raw, "closed 1006", "the handshake is refused");
    assert.deepEqual(page2.problems, []);
    // The node refused the handshakes and the HTTP transports with 403.
    assert.ok((await node.metric("ringcast_requests_refused_total", 'reason="origin"')) >= 2);
    await stranger.close();
  } finally {
    await node.stop();
  }
});
