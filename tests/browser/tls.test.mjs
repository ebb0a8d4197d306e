// The browser client in real Chromium over TLS (--listen-tls): wss:// and
// https:// against a certificate from a CA made here with openssl (the
// browser is told to accept it, as it would a real CA's). Every transport
// delivers in order and the page publishes; permessage-deflate rides on
// top; the node counted the TLS handshakes.

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";

import { chromium } from "playwright-core";

import { appServer, clientPage, freePort, Node, until } from "./harness.mjs";

const TRANSPORTS = ["ws", "sse", "longpoll", "poll"];

/** A CA and a certificate it signed for localhost and 127.0.0.1. */
function makePki(dir) {
  const openssl = (...args) => execFileSync("openssl", args, { cwd: dir, stdio: "pipe" });
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
  openssl("req", "-x509", ...ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=ringcast test CA");
  openssl("req", ...ec, "-keyout", "key.pem", "-out", "leaf.csr", "-subj", "/CN=localhost");
  writeFileSync(path.join(dir, "san.ext"), "subjectAltName=DNS:localhost,IP:127.0.0.1\n");
  openssl("x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
    "-out", "leaf.pem", "-days", "2", "-extfile", "san.ext");
  writeFileSync(path.join(dir, "chain.pem"),
    readFileSync(path.join(dir, "leaf.pem"), "utf8") + readFileSync(path.join(dir, "ca.pem"), "utf8"));
  return { chain: path.join(dir, "chain.pem"), key: path.join(dir, "key.pem") };
}

let dir, node, tlsUrl, app, browser;
before(async () => {
  dir = mkdtempSync(path.join(tmpdir(), "ringcast-tls-"));
  const { chain, key } = makePki(dir);
  const tlsPort = await freePort();
  node = await Node.start([
    "--listen-tls", `127.0.0.1:${tlsPort}`, "--tls-cert", chain, "--tls-key", key,
    "--history-size", "1000", "--client-publish", "--deflate",
  ]);
  tlsUrl = `https://localhost:${tlsPort}`;
  app = await appServer();
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-dev-shm-usage", "--ignore-certificate-errors"],
  });
});
after(async () => {
  await browser?.close();
  await app?.close();
  await node?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe("the client over TLS", () => {
  for (const transport of TRANSPORTS) {
    test(`${transport} over https/wss: 60 messages in order, and the page publishes`, async () => {
      const ch = `tls-${transport}`;
      const first = await node.publish(ch, "t0");
      const epoch = first.split("-")[0];
      const context = await browser.newContext({ ignoreHTTPSErrors: true });
      const page = await clientPage(context, app, node.url);
      await page.evaluate(
        ({ url, transport, ch, since }) => {
          window.got = [];
          window.errors = [];
          window.rc = window.ringcast.connect(url, {
            transports: [transport],
            pollInterval: 200,
            backoff: { min: 100, max: 1000 },
            shared: false,
          });
          rc.on("error", (e) => errors.push(e.message));
          window.sub = rc.subscribe(ch, (m) => got.push(`${m.id} ${m.data}`), { since });
        },
        { url: tlsUrl, transport, ch, since: `${epoch}-0` },
      );
      const expected = [`${first} t0`];
      // The first message comes from history: once it is in, the
      // subscription is live, and what follows is delivered live (a
      // replay goes uncompressed, so the ws run would otherwise compress
      // nothing whenever the page subscribed late).
      await until(() => page.evaluate(() => got.length >= 1), 20_000, "the first message");
      for (let i = 1; i < 60; i++) {
        // Long messages: several records each over TLS, compressed on ws.
        const data = `t${i} ` + "chat ".repeat(40 + i * 7);
        expected.push(`${await node.publish(ch, data)} ${data}`);
      }
      await until(() => page.evaluate(() => got.length >= 60), 20_000, "60 messages");
      const id = await page.evaluate((ch) => rc.publish(ch, "from the page").then((r) => r.id), ch);
      expected.push(`${id} from the page`);
      await until(() => page.evaluate(() => got.length >= 61), 10_000, "the page's own message");
      assert.deepEqual(await page.evaluate(() => got), expected);
      assert.equal(await page.evaluate(() => rc.transport), transport);
      assert.deepEqual(await page.evaluate(() => errors), []);
      assert.deepEqual(page.problems, []);
      await context.close();
    });
  }

  test("the node counted TLS handshakes and no failures", async () => {
    assert.ok((await node.metric("ringcast_tls_handshakes_total")) >= TRANSPORTS.length);
    assert.equal(await node.metric("ringcast_tls_failures_total", 'reason="alert"'), 0);
    assert.ok((await node.metric("ringcast_deflate_messages_total")) > 0, "ws compressed over TLS");
  });
});
