// Draws docs/demo.png: the chat demo in two tabs side by side, one on
// WebSocket and one on Server-Sent Events, after a short conversation.
//   cd tests/browser && node screenshot.mjs [OUT]

import http from "node:http";
import { once } from "node:events";
import path from "node:path";
import { fileURLToPath } from "node:url";

import { freePort, launch, Node, until } from "./harness.mjs";

const out = process.argv[2] ||
  path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../docs/demo.png");
const node = await Node.start(["--demo"]);
const port = await freePort();
const frames = http.createServer((req, res) => {
  res.writeHead(200, { "Content-Type": "text/html" });
  res.end(`<!doctype html><style>body{margin:0;display:flex;gap:6px;background:#000}
    iframe{border:0;width:50%;height:100vh}</style>
    <iframe id="a" src="${node.url}/?transport=ws&name=alice"></iframe>
    <iframe id="b" src="${node.url}/?transport=sse&name=bob"></iframe>`);
});
frames.listen(port, "127.0.0.1");
await once(frames, "listening");
const browser = await launch();
try {
  const page = await browser.newPage({ viewport: { width: 1800, height: 620 } });
  await page.goto(`http://127.0.0.1:${port}/`);
  const [alice, bob] = ["#a", "#b"].map((id) => page.frameLocator(id));
  const frame = (i) => page.frames()[i + 1];
  await until(() => frame(0)?.evaluate(() => window.rc?.state === "open"), 15_000, "alice open");
  await until(() => frame(1)?.evaluate(() => window.rc?.state === "open"), 15_000, "bob open");
  const say = async (who, text) => {
    await who.locator("#text").fill(text);
    await who.locator("#text").press("Enter");
    await new Promise((r) => setTimeout(r, 400));
  };
  await say(alice, "Hi Bob! I'm on a WebSocket.");
  await say(bob, "Hello Alice, Server-Sent Events here.");
  await say(alice, "Same room, same ids, whatever the transport.");
  await new Promise((r) => setTimeout(r, 2200)); // typing indicators are sent at most every 2 s
  await bob.locator("#text").pressSequentially("resume from Last-Eve", { delay: 40 });
  await new Promise((r) => setTimeout(r, 600));
  await page.screenshot({ path: out });
  console.log(`wrote ${out}`);
} finally {
  await browser.close();
  await new Promise((r) => frames.close(r));
  await node.stop();
}
