// Two nodes sharing channels through a real redis-server, and the browser
// client in Chromium on each transport: messages published on one node
// reach a page connected to the other; a channel whose keys Redis lost
// starts a new epoch while its neighbour keeps its own (per-channel
// epochs, composite cursors naming both); and the node the page is on
// restarting is no epoch change at all — the page resumes every channel
// from Redis, nothing lost or repeated.

import assert from "node:assert/strict";
import { spawn, execFileSync } from "node:child_process";
import { once } from "node:events";
import { after, before, test } from "node:test";

import { appServer, clientPage, freePort, launch, Node, until } from "./harness.mjs";

let app, browser, redis, redisPort;
before(async () => {
  app = await appServer();
  browser = await launch();
  redisPort = await freePort();
  redis = spawn("redis-server", ["--port", String(redisPort), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], {
    stdio: "ignore",
  });
  await until(() => {
    try {
      return execFileSync("redis-cli", ["-p", String(redisPort), "ping"]).toString().includes("PONG");
    } catch {
      return false;
    }
  }, 10_000, "redis-server");
});
after(async () => {
  await browser?.close();
  await app?.close();
  if (redis && redis.exitCode === null) {
    redis.kill("SIGKILL");
    await once(redis, "exit");
  }
});

const cli = (...args) => execFileSync("redis-cli", ["-p", String(redisPort), ...args]).toString();

for (const transport of ["ws", "sse", "longpoll", "poll"]) {
  test(`${transport}: two nodes, an epoch per channel, a node restart resumes from Redis`, async () => {
    const cluster = ["--redis", `redis://127.0.0.1:${redisPort}/`];
    const a = await Node.start(cluster);
    const b = await Node.start(cluster);
    const [one, two] = [`${transport}-one`, `${transport}-two`];
    const context = await browser.newContext();
    try {
      // The first message of each channel, published on A before the page
      // subscribes on B from each channel's start (`<epoch>-0`).
      const sent = { [one]: [], [two]: [] };
      const send = async (node, ch, data) => sent[ch].push(`${await node.publish(ch, data)} ${data}`);
      await send(a, one, "hello");
      await send(a, two, "first of two");
      const start = (ch) => `${sent[ch][0].split("-")[0]}-0`;
      const page = await clientPage(context, app, b.url);
      await page.evaluate(
        ({ url, transport, one, two, since }) => {
          window.got = { [one]: [], [two]: [] };
          window.resets = [];
          window.rc = window.ringcast.connect(url, {
            transports: [transport],
            backoff: { min: 100, max: 500 },
            pollInterval: 200,
            shared: false,
          });
          rc.on("reset", (r) => resets.push({ ch: r.ch, reason: r.reason }));
          for (const ch of [one, two]) {
            rc.subscribe(ch, (m) => got[ch].push(`${m.id} ${m.data}`), { since: since[ch] });
          }
        },
        { url: b.url, transport, one, two, since: { [one]: start(one), [two]: start(two) } },
      );
      await until(() => page.evaluate(() => rc.state === "open"), 15_000, "open");
      const got = () => page.evaluate(() => got);

      // Published on A (from history) and on B, read on B.
      await send(b, one, "from b");
      await until(async () => (await got())[two].length === 1 && (await got())[one].length === 2, 15_000, "both channels");

      // Redis loses channel one's keys: its next message is of a new
      // epoch; the page hears `reset` (epoch) for one, never for two.
      cli("del", `rc:{${one}}:meta`, `rc:{${one}}:log`);
      await send(a, one, "new epoch");
      await send(a, two, "same epoch");
      await until(async () => {
        const g = await got();
        return g[one].at(-1)?.endsWith("new epoch") && g[two].at(-1)?.endsWith("same epoch");
      }, 15_000, "both after the epoch change");
      const resets = await page.evaluate(() => resets);
      assert.deepEqual(resets.filter((r) => r.ch === two), [], "channel two keeps its epoch");
      assert.deepEqual(resets.filter((r) => r.ch === one).map((r) => r.reason), ["epoch"]);
      const epochOf = (line) => line.split("-")[0];
      const g = await got();
      assert.notEqual(epochOf(g[one].at(-1)), epochOf(g[two].at(-1)), "two epochs on one page");

      // Node B restarts (a new node epoch): the channels keep theirs, so
      // the page resumes both from where it was, with what was published
      // on A meanwhile — no reset, nothing lost or repeated.
      await b.kill();
      await send(a, one, "while b was down");
      await send(a, two, "while b was down");
      await b.spawn();
      await send(a, one, "after");
      await send(a, two, "after");
      await until(async () => {
        const g = await got();
        return g[one].length === sent[one].length && g[two].length === sent[two].length;
      }, 30_000, "everything after the restart");
      assert.deepEqual(await got(), sent);
      assert.deepEqual((await page.evaluate(() => resets)).map((r) => r.ch), [one], "no reset from the restart");
      assert.deepEqual(page.problems, []);
    } finally {
      await context.close();
      await a.stop();
      await b.stop();
    }
  });
}
