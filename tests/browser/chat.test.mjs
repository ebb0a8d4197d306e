// The chat demo in two browsers, and one connection shared by the tabs of
// one browser.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { appServer, clientPage, launch, Node, until } from "./harness.mjs";

let node, app, browser;
before(async () => {
  node = await Node.start(["--demo"]);
  app = await appServer();
  browser = await launch();
});
after(async () => {
  await browser?.close();
  await app?.close();
  await node?.stop();
});

/** The demo in a browser of its own, as `name`, on `transport`. */
async function chatter(name, transport) {
  const context = await browser.newContext();
  const page = await context.newPage();
  page.problems = [];
  page.on("pageerror", (e) => page.problems.push(`uncaught: ${e.message}`));
  await page.goto(`${node.url}/?transport=${transport}`);
  await page.fill("#name", name);
  await page.dispatchEvent("#name", "change");
  await until(() => page.evaluate(() => window.rc?.state === "open"), 15_000, `${name} open`);
  assert.equal(await page.textContent("#transport"), transport);
  return { page, context };
}

const people = (page) => page.$$eval("#people li", (lis) => lis.map((li) => li.textContent));
const messages = (page) => page.$$eval("#messages .msg .text", (ps) => ps.map((p) => p.textContent));

test("two browsers chat: presence join and leave, typing indicators that never reach history", async () => {
  const alice = await chatter("alice", "ws");
  const bob = await chatter("bob", "ws");

  // Both are listed, by name once they have said who they are.
  await until(async () => (await people(alice.page)).some((p) => p.includes("bob")), 20_000, "bob in alice's list");
  await until(async () => (await people(bob.page)).some((p) => p.includes("alice")), 20_000, "alice in bob's list");

  // Alice types: bob sees it; then she sends, and the indicator goes.
  await alice.page.type("#text", "hi b");
  await until(async () => (await bob.page.textContent("#typing")).includes("alice is typing"), 10_000, "typing shown");
  await alice.page.fill("#text", "hi bob");
  await alice.page.press("#text", "Enter");
  await until(async () => (await messages(bob.page)).includes("hi bob"), 10_000, "the message");
  assert.equal(await bob.page.textContent("#typing"), "");
  await bob.page.fill("#text", "hello alice");
  await bob.page.press("#text", "Enter");
  await until(async () => (await messages(alice.page)).includes("hello alice"), 10_000, "the answer");

  // Bob leaves: alice's list loses him.
  await bob.context.close();
  await until(async () => (await people(alice.page)).length === 1, 20_000, "bob gone from the list");

  // History holds the chat, not the typing indicators or announcements.
  const first = await node.publish("chat:general", JSON.stringify({ kind: "probe" }));
  const epoch = first.split("-")[0];
  const polled = await (await fetch(`${node.url}/poll/chat:general?timeout=0&since=${epoch}-0`)).json();
  const kinds = polled.messages.map((m) => JSON.parse(m.data).kind);
  assert.deepEqual(kinds, ["chat", "chat", "probe"]);

  assert.deepEqual(alice.page.problems, []);
  assert.deepEqual(bob.page.problems, []);
  await alice.context.close();
});

test("two browsers on different transports chat with each other", async () => {
  const carol = await chatter("carol", "sse");
  const dave = await chatter("dave", "longpoll");
  await carol.page.fill("#text", "over sse");
  await carol.page.press("#text", "Enter");
  await until(async () => (await messages(dave.page)).includes("over sse"), 10_000, "carol's message");
  await dave.page.fill("#text", "over long polling");
  await dave.page.press("#text", "Enter");
  await until(async () => (await messages(carol.page)).includes("over long polling"), 10_000, "dave's message");
  assert.deepEqual(carol.page.problems, []);
  assert.deepEqual(dave.page.problems, []);
  await carol.context.close();
  await dave.context.close();
});

test("tabs of one browser share one connection; when the leader tab closes another takes over without loss", async () => {
  const context = await browser.newContext();
  const tabs = [];
  for (let i = 0; i < 3; i++) {
    const tab = await clientPage(context, app, node.url);
    await tab.evaluate((url) => {
      window.got = [];
      window.rc = window.ringcast.connect(url, { transports: ["ws"], backoff: { min: 100, max: 500 } });
      rc.subscribe("shared", (m) => got.push(m.data));
    }, node.url);
    tabs.push(tab);
  }
  const mux = () => node.metric("ringcast_connections", 'transport="websocket_mux"');
  await until(async () => (await mux()) === 1, 10_000, "one connection");
  await until(() => Promise.all(tabs.map((t) => t.evaluate(() => rc.state === "open"))).then((s) => s.every(Boolean)), 10_000, "every tab open");
  await new Promise((r) => setTimeout(r, 300));
  const sent = [];
  for (let i = 0; i < 10; i++) {
    sent.push(`s${i}`);
    await node.publish("shared", `s${i}`);
  }
  for (const tab of tabs) {
    await until(() => tab.evaluate((n) => got.length >= n, sent.length), 10_000, "every tab receives");
  }
  assert.equal(await mux(), 1, "still one connection for three tabs");

  // Close whichever tab leads; the others keep receiving, with nothing lost
  // or repeated across the handover.
  const leader = await Promise.all(tabs.map((t) => t.evaluate(() => rc.isLeader ?? null)));
  const li = leader.indexOf(true) >= 0 ? leader.indexOf(true) : 0;
  const [closing] = tabs.splice(li, 1);
  await closing.close();
  for (let i = 10; i < 40; i++) {
    sent.push(`s${i}`);
    await node.publish("shared", `s${i}`);
    await new Promise((r) => setTimeout(r, 20));
  }
  for (const tab of tabs) {
    await until(() => tab.evaluate((n) => got.length >= n, sent.length), 20_000, "every message after the handover");
    await new Promise((r) => setTimeout(r, 300));
    assert.deepEqual(await tab.evaluate(() => got), sent);
    assert.deepEqual(tab.problems, []);
  }
  await until(async () => (await mux()) === 1, 10_000, "one connection again");
  await context.close();
});
