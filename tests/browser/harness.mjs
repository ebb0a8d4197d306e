// What the browser tests stand on: a ringcast node on a free port, Debian's
// Chromium driven by playwright-core, a page on another origin that loads
// the client from the node, and a TCP proxy that can drop every connection
// or strip `Upgrade` as some proxies do. Every wait is bounded.

import { spawn } from "node:child_process";
import { once } from "node:events";
import http from "node:http";
import net from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";

import { chromium } from "playwright-core";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
export const BIN = process.env.RINGCAST_BIN || path.join(ROOT, "target/debug/ringcast");
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";

/** A port nobody listens on right now. */
export async function freePort() {
  const s = net.createServer();
  s.listen(0, "127.0.0.1");
  await once(s, "listening");
  const { port } = s.address();
  s.close();
  await once(s, "close");
  return port;
}

/** Polls `fn` until it returns a truthy value or `ms` pass. */
export async function until(fn, ms = 10_000, what = "condition") {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * A ringcast node on 127.0.0.1:`port` (a free one by default). `restart()`
 * starts a new process on the same port: a new epoch, as after a crash.
 */
export class Node {
  static async start(args = [], port) {
    const node = new Node(args, port ?? (await freePort()));
    await node.spawn();
    return node;
  }

  constructor(args, port) {
    this.args = args;
    this.port = port;
    this.url = `http://127.0.0.1:${port}`;
    this.log = "";
  }

  async spawn() {
    const args = ["--listen", `127.0.0.1:${this.port}`, "--shards", "1", "--max-connections", "2000", ...this.args];
    this.proc = spawn(BIN, args, { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, RINGCAST_LOG: "info" } });
    this.proc.stdout.on("data", (d) => (this.log += d));
    this.proc.stderr.on("data", (d) => (this.log += d));
    this.exited = once(this.proc, "exit");
    await until(async () => {
      if (this.proc.exitCode !== null) throw new Error(`ringcast exited at start:\n${this.log}`);
      try {
        return (await fetch(`${this.url}/healthz`)).ok;
      } catch {
        return false;
      }
    }, 15_000, "the node to answer /healthz");
  }

  /** Kills the process at once (SIGKILL), as a crash would. */
  async kill() {
    if (this.proc.exitCode === null) {
      this.proc.kill("SIGKILL");
      await this.exited;
    }
  }

  async restart() {
    await this.kill();
    await this.spawn();
  }

  async stop() {
    if (this.proc && this.proc.exitCode === null) {
      this.proc.kill("SIGTERM");
      const timer = setTimeout(() => this.proc.kill("SIGKILL"), 5_000);
      await this.exited;
      clearTimeout(timer);
    }
  }

  /** Publishes one text message; returns its id. */
  async publish(ch, data, { ephemeral = false } = {}) {
    const q = ephemeral ? "?ephemeral=1" : "";
    const r = await fetch(`${this.url}/pub/${encodeURIComponent(ch)}${q}`, {
      method: "POST",
      headers: { "Content-Type": "text/plain" },
      body: data,
    });
    if (!r.ok) throw new Error(`publish: ${r.status} ${await r.text()}`);
    return (await r.json()).id;
  }

  /** A metric from /metrics, summed over the label sets matching `filter`. */
  async metric(name, filter = "") {
    const text = await (await fetch(`${this.url}/metrics`)).text();
    let sum = 0;
    for (const line of text.split("\n")) {
      if (line.startsWith("#") || !line.startsWith(name)) continue;
      const rest = line.slice(name.length);
      if (!(rest.startsWith("{") || rest.startsWith(" ")) || !line.includes(filter)) continue;
      sum += Number(line.split(" ").pop());
    }
    return sum;
  }
}

/**
 * A page server on its own origin (`http://localhost:<port>`, not the
 * node's `127.0.0.1`): every test page loads the client cross-origin, as an
 * app on its own domain would.
 */
export async function appServer() {
  const port = await freePort();
  const server = http.createServer((req, res) => {
    res.writeHead(200, { "Content-Type": "text/html; charset=utf-8" });
    res.end("<!doctype html><title>app</title><p>app page</p>");
  });
  server.listen(port, "127.0.0.1");
  await once(server, "listening");
  return {
    url: `http://localhost:${port}/`,
    origin: `http://localhost:${port}`,
    close: () => new Promise((r) => server.close(r)),
  };
}

/**
 * A TCP proxy to the node. `dropAll()` resets every connection through it;
 * with `stripUpgrade` on, WebSocket handshakes lose their `Upgrade` and
 * `Connection` headers, as some corporate proxies do.
 */
export async function proxy(target) {
  const port = await freePort();
  const sockets = new Set();
  const p = {
    url: `http://127.0.0.1:${port}`,
    stripUpgrade: false,
    dropped: 0,
    dropAll() {
      for (const s of sockets) s.resetAndDestroy();
      p.dropped += sockets.size;
      sockets.clear();
    },
    close: () => new Promise((r) => server.close(r)),
  };
  const server = net.createServer((client) => {
    const upstream = net.connect(target, "127.0.0.1");
    sockets.add(client);
    sockets.add(upstream);
    const forget = () => {
      sockets.delete(client);
      sockets.delete(upstream);
      client.destroy();
      upstream.destroy();
    };
    client.on("error", forget).on("close", forget);
    upstream.on("error", forget).on("close", forget);
    let head = Buffer.alloc(0);
    const firstRequest = (chunk) => {
      head = Buffer.concat([head, chunk]);
      const end = head.indexOf("\r\n\r\n");
      if (end < 0 && head.length < 16384) return;
      client.off("data", firstRequest);
      let out = head;
      if (p.stripUpgrade && end >= 0) {
        const text = head.subarray(0, end).toString("latin1");
        const kept = text.split("\r\n").filter((l) => !/^(upgrade|connection)\s*:/i.test(l));
        out = Buffer.concat([Buffer.from(kept.join("\r\n"), "latin1"), head.subarray(end)]);
      }
      upstream.write(out);
      client.pipe(upstream);
    };
    client.on("data", firstRequest);
    upstream.pipe(client);
  });
  server.listen(port, "127.0.0.1");
  await once(server, "listening");
  return p;
}

export async function launch() {
  return chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox", "--disable-dev-shm-usage"] });
}

/**
 * A page of `app` with the client loaded from `node` as `window.ringcast`,
 * and `window.seen` collecting the console errors and uncaught exceptions
 * the page raised (the client must raise none).
 */
export async function clientPage(context, app, nodeUrl) {
  const page = await context.newPage();
  page.problems = [];
  page.on("pageerror", (e) => page.problems.push(`uncaught: ${e.message}`));
  page.on("console", (m) => {
    if (m.type() === "error" && !/Failed to load resource|WebSocket connection to/.test(m.text())) {
      page.problems.push(`console: ${m.text()}`);
    }
  });
  await page.goto(app.url);
  await page.evaluate(async (nodeUrl) => {
    window.ringcast = await import(`${nodeUrl}/client.js`);
  }, nodeUrl);
  return page;
}
