// permessage-deflate in real Chromium (which always offers it) against a
// node with --deflate: the browser's own WebSocket negotiates it, messages
// both ways arrive whole, and the node really compressed and inflated them
// (its counters say so; a node without --deflate names no extension).

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { appServer, clientPage, launch, Node, until } from "./harness.mjs";

let node, plainNode, app, browser;
before(async () => {
  node = await Node.start(["--deflate", "--deflate-min-size", "64", "--client-publish", "--history-size", "500"]);
  plainNode = await Node.start([]);
  app = await appServer();
  browser = await launch();
});
after(async () => {
  await browser?.close();
  await app?.close();
  await node?.stop();
  await plainNode?.stop();
});

/** A JSON chat message of 200 to 2,000 bytes. */
function chat(i) {
  const words = ["see", "you", "at", "the", "station", "tomorrow", "bring", "tickets", "ok", "great"];
  const n = 30 + ((i * 37) % 280);
  const text = Array.from({ length: n }, (_, k) => words[(i * 7 + k) % words.length]).join(" ");
  return JSON.stringify({ user: `user${i % 13}`, room: "lobby", seq: i, text }).slice(0, 2000);
}

describe("permessage-deflate with Chromium's WebSocket", () => {
  test("the browser negotiates it; echoes of text and binary come back whole", async () => {
    const context = await browser.newContext();
    const page = await clientPage(context, app, node.url);
    const inflatedBefore = await node.metric("ringcast_inflated_messages_total");
    const compressedBefore = await node.metric("ringcast_deflate_messages_total");
    const result = await page.evaluate(async (wsUrl) => {
      const ws = new WebSocket(`${wsUrl}/echo`);
      ws.binaryType = "arraybuffer";
      const replies = [];
      let wake;
      ws.onmessage = (e) => {
        replies.push(e.data);
        wake?.();
      };
      await new Promise((ok, fail) => {
        ws.onopen = ok;
        ws.onerror = () => fail(new Error("the echo socket failed"));
      });
      const next = () =>
        replies.length ? Promise.resolve(replies.shift()) : new Promise((ok) => (wake = () => ok(replies.shift())));
      const text = JSON.stringify({ text: "na ".repeat(7000), emoji: "☃✓" });
      ws.send(text);
      const textBack = await next();
      const bytes = new Uint8Array(50_000).map((_, i) => i % 7);
      ws.send(bytes);
      const bytesBack = new Uint8Array(await next());
      ws.send("tiny");
      const tinyBack = await next();
      const extensions = ws.extensions;
      ws.close(1000);
      return {
        extensions,
        textOk: textBack === text,
        bytesOk: bytesBack.length === bytes.length && bytesBack.every((b, i) => b === bytes[i]),
        tinyBack,
      };
    }, node.url.replace("http", "ws"));
    assert.match(result.extensions, /^permessage-deflate; server_no_context_takeover; client_no_context_takeover/);
    assert.ok(result.textOk, "the text echo differs");
    assert.ok(result.bytesOk, "the binary echo differs");
    assert.equal(result.tinyBack, "tiny");
    // Chromium compressed what it sent (the node inflated at least the two
    // large ones), and the node compressed its large echoes.
    assert.ok((await node.metric("ringcast_inflated_messages_total")) - inflatedBefore >= 2);
    assert.ok((await node.metric("ringcast_deflate_messages_total")) - compressedBefore >= 2);
    assert.deepEqual(page.problems, []);
    await context.close();
  });

  test("the ringcast client over ws: a chat stream arrives in order, compressed, and the page publishes", async () => {
    const context = await browser.newContext();
    const page = await clientPage(context, app, node.url);
    const inBefore = await node.metric("ringcast_deflate_bytes_in_total");
    const outBefore = await node.metric("ringcast_deflate_bytes_out_total");
    await page.evaluate((url) => {
      window.got = [];
      window.rc = window.ringcast.connect(url, { transports: ["ws"], shared: false });
      window.sub = rc.subscribe("lobby", (m) => got.push(m.data));
    }, node.url);
    // Wait until the subscription is in place: an ephemeral probe arrives.
    await until(async () => {
      await node.publish("lobby", "probe", { ephemeral: true });
      return page.evaluate(() => got.includes("probe"));
    }, 10_000, "the subscription");
    const sent = Array.from({ length: 60 }, (_, i) => chat(i));
    for (const m of sent) await node.publish("lobby", m);
    await until(() => page.evaluate((n) => got.filter((g) => g !== "probe").length >= n, sent.length), 15_000, "60 messages");
    const got = await page.evaluate(() => got.filter((g) => g !== "probe"));
    assert.deepEqual(got, sent);
    const bytesIn = (await node.metric("ringcast_deflate_bytes_in_total")) - inBefore;
    const bytesOut = (await node.metric("ringcast_deflate_bytes_out_total")) - outBefore;
    assert.ok(bytesIn > 0 && bytesOut < bytesIn / 2, `compressed ${bytesIn} B to ${bytesOut} B`);
    // A large publish from the page goes out compressed by Chromium.
    const inflatedBefore = await node.metric("ringcast_inflated_messages_total");
    const big = chat(1000) + "!".repeat(500);
    await page.evaluate((big) => rc.publish("lobby", big), big);
    await until(() => page.evaluate((big) => got.includes(big), big), 10_000, "the page's own publish");
    assert.ok((await node.metric("ringcast_inflated_messages_total")) > inflatedBefore);
    assert.deepEqual(page.problems, []);
    await context.close();
  });

  test("a node without --deflate names no extension to Chromium", async () => {
    const context = await browser.newContext();
    const page = await clientPage(context, app, plainNode.url);
    const extensions = await page.evaluate(async (wsUrl) => {
      const ws = new WebSocket(`${wsUrl}/echo`);
      await new Promise((ok, fail) => {
        ws.onopen = ok;
        ws.onerror = () => fail(new Error("the echo socket failed"));
      });
      const e = ws.extensions;
      ws.close(1000);
      return e;
    }, plainNode.url.replace("http", "ws"));
    assert.equal(extensions, "");
    await context.close();
  });
});
