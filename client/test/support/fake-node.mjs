// An in-memory ringcast node for the client's unit tests: an injectable
// `fetch` (SSE, polling, publish, presence) and `WebSocket` (the multiplexed
// `/ws`), both backed by one model of channels, ids, history and resets as
// docs/protocol.md describes them. Not a test file itself.
//
// Client tokens are modelled as a node with a JWT key checks them: set
// `node.tokens` to a Map of the valid ones (token -> {sub, channels?}) and
// every read needs one — `Authorization: Bearer` on HTTP (401 without a
// valid one, 403 naming the first channel it does not allow), `auth` as the
// first `/ws` frame (`authed`, or `error` token_rejected then close 4001/
// 4003). `node.expire(token)` makes a token expire: its SSE streams end
// with `event:error` token_expired, its sockets close with 4001, and its
// next request gets 401. HTTP publishing is the backend's API (publish
// keys): tokens are not checked there.
//
// Epochs are per channel, as in a cluster: a channel takes the node's epoch
// when it is created, and `node.loseChannel(ch)` gives it a new one (its
// keys were lost), telling live subscribers with a `reset` (reason
// `epoch`). Until then every channel shares the node's, as on one node.
// Composite cursors name each channel in its own epoch
// (`<epoch>;<ch>=<seq>` or `<ch>=<epoch>-<seq>`), the prefix being the epoch
// most entries share.

const enc = new TextEncoder();

function randomEpoch() {
  return Array.from({ length: 12 }, () => "0123456789abcdef"[Math.floor(Math.random() * 16)]).join("");
}

function parseSince(text) {
  const m = /^([0-9a-f]{12})-(\d+)$/.exec(text ?? "");
  return m ? { epoch: m[1], seq: Number(m[2]) } : null;
}

function parseCursor(text) {
  const semi = text.indexOf(";");
  const epoch = text.slice(0, semi);
  const out = new Map();
  for (const part of text.slice(semi + 1).split(",")) {
    if (!part) continue;
    const eq = part.lastIndexOf("=");
    const value = part.slice(eq + 1);
    out.set(part.slice(0, eq), value.includes("-") ? parseSince(value) : { epoch, seq: Number(value) });
  }
  return out;
}

/** The cursor of `positions` (ch -> {epoch, seq}), as the node writes it. */
function formatCursor(positions) {
  const count = new Map();
  for (const p of positions.values()) count.set(p.epoch, (count.get(p.epoch) ?? 0) + 1);
  let prefix = null;
  for (const [e, n] of count) if (prefix === null || n > count.get(prefix)) prefix = e;
  const parts = [...positions].map(([ch, p]) => (p.epoch === prefix ? `${ch}=${p.seq}` : `${ch}=${p.epoch}-${p.seq}`));
  return `${prefix};${parts.join(",")}`;
}

export class FakeNode {
  constructor({ epoch = randomEpoch(), historySize = 128 } = {}) {
    this.epoch = epoch;
    this.historySize = historySize;
    this.channels = new Map();
    this.off = new Set();
    this.down = false;
    /** Every request: {method, path, params, transport}. */
    this.log = [];
    this.streams = new Set();
    this.polls = new Set();
    this.sockets = new Set();
    this.nextClient = 1;
    /** Hooks a test may set: (req) => Response | undefined. */
    this.intercept = null;
    /** Valid client tokens (token -> {sub, channels?}); null: none checked. */
    this.tokens = null;
    this.expiredTokens = new Set();
    /** Every `auth`/`refresh` a socket sent, and how long `authed` takes. */
    this.auths = [];
    this.authDelay = 0;
    /** How `/ws` refuses a token: "both" (error, then close), "error", "close". */
    this.wsRejectWith = "both";
    /** Durable cursors (`<device>|<ch>` -> {epoch, seq}), every ack
     * ({ch, id, device, via}), and a hook refusing acks: (ack) => {code,
     * status, retry_after?} | null. */
    this.cursors = new Map();
    this.acks = [];
    this.ackRefusal = null;
    this.fetch = this.fetch.bind(this);
    const node = this;
    this.WebSocket = class extends FakeWebSocket {
      constructor(url) {
        super(node, url);
      }
    };
  }

  channel(ch) {
    if (!this.channels.has(ch)) this.channels.set(ch, { epoch: this.epoch, last: 0, first: 1, history: [] });
    return this.channels.get(ch);
  }

  /** Publishes like `POST /pub`; returns the id (null when ephemeral). */
  publish(ch, data, { binary = false, ephemeral = false } = {}) {
    const c = this.channel(ch);
    let msg;
    if (ephemeral) {
      msg = { ch, id: null, seq: null, data, binary, ephemeral: true };
    } else {
      c.last += 1;
      msg = { ch, id: `${c.epoch}-${c.last}`, epoch: c.epoch, seq: c.last, data, binary };
      c.history.push(msg);
      if (c.history.length > this.historySize) c.history.shift();
    }
    for (const s of [...this.streams]) s.deliver(msg);
    for (const p of [...this.polls]) p.deliver(msg);
    for (const w of [...this.sockets]) w.deliver(msg);
    return msg.id;
  }

  /** Forgets history older than the last `keep` messages of `ch`. */
  evict(ch, keep) {
    const c = this.channel(ch);
    c.history = c.history.slice(-keep);
  }

  /**
   * The channel's keys were lost (a cluster's Redis): it starts over in a
   * new epoch (`epoch`, or a random one), its history gone. Live streams
   * and sockets get a `reset` (reason `epoch`, `since` their last position
   * in the old one) before anything of the new epoch; held polls answer
   * `204`, and the next poll, from the old position, gets the reset.
   */
  loseChannel(ch, epoch = randomEpoch()) {
    const c = this.channel(ch);
    const old = c.epoch;
    Object.assign(c, { epoch, last: 0, first: 1, history: [] });
    for (const s of [...this.streams]) s.epochChanged(ch, old);
    for (const w of [...this.sockets]) w.epochChanged(ch, old);
    for (const p of [...this.polls]) if (p.channels.includes(ch)) p.finish(204);
    return epoch;
  }

  /** A restart: new epoch, no channels, every connection dropped. */
  restart() {
    this.epoch = randomEpoch();
    this.channels.clear();
    this.dropAll();
  }

  dropAll() {
    for (const s of [...this.streams]) s.end();
    for (const p of [...this.polls]) p.finish(204);
    for (const w of [...this.sockets]) w.serverClose(1006, "");
  }

  /** The replay of `ch` from `since`: {reset, messages, last, epoch} (`last` in the channel's `epoch`). */
  replay(ch, since) {
    const c = this.channel(ch);
    if (!since) return { reset: null, messages: [], last: c.last, epoch: c.epoch };
    const oldest = c.history.length ? c.history[0].seq : c.last + 1;
    let after = since.seq === 0 ? c.first - 1 : since.seq;
    let reset = null;
    const mk = (reason, missed) => ({ ch, reason, since: `${since.epoch}-${since.seq}`, missed, epoch: c.epoch });
    if (since.epoch !== c.epoch) {
      reset = mk("epoch", null);
      after = 0;
    } else if (after > c.last) {
      reset = mk("unknown", null);
      after = 0;
    } else if (after + 1 < oldest) {
      reset = mk("evicted", oldest - after - 1);
      after = 0;
    }
    return { reset, messages: c.history.filter((m) => m.seq > after), last: c.last, epoch: c.epoch };
  }

  transportOff(name) {
    return this.off.has(name);
  }

  /** Checks a token: `{grant}` or `{error, expired}`. */
  verify(token) {
    if (token == null) return { error: "token required: send Authorization: Bearer <token>" };
    if (this.expiredTokens.has(token)) return { error: "token expired", expired: true };
    const grant = this.tokens.get(token);
    if (!grant) return { error: "token signature invalid" };
    return { grant };
  }

  allows(grant, ch) {
    return !grant.channels || grant.channels.includes(ch);
  }

  /** The token expires now: what uses it is told and closed. */
  expire(token) {
    this.tokens.delete(token);
    this.expiredTokens.add(token);
    for (const s of [...this.streams]) {
      if (s.token !== token) continue;
      s.send(`event:error\ndata:${JSON.stringify({ type: "error", code: "token_expired", reason: "token expired" })}\n\n`);
      s.end();
    }
    for (const w of [...this.sockets]) if (w.token === token) w.serverClose(4001, "token expired");
  }

  /** Where a durable subscription of `ch` for `device` starts: its cursor,
   * created "from now" the first time. */
  cursorOf(ch, device = "") {
    const k = `${device}|${ch}`;
    const c = this.channel(ch);
    let cur = this.cursors.get(k);
    if (!cur || cur.epoch !== c.epoch) this.cursors.set(k, (cur = { epoch: c.epoch, seq: c.last }));
    return cur;
  }

  unreadOf(ch, device = "") {
    const c = this.channel(ch);
    const cur = this.cursorOf(ch, device);
    return c.history.filter((m) => m.seq > cur.seq).length;
  }

  /** An ack: the answer `{ch, cursor, unread}` or a refusal `{code, status, reason, retry_after?}`. */
  ack(ch, id, device = "", via = "ws") {
    this.acks.push({ ch, id, device, via });
    const refused = this.ackRefusal?.({ ch, id, device, via });
    if (refused) return { error: refused };
    const pos = parseSince(id);
    const cur = this.cursorOf(ch, device);
    if (pos.epoch === cur.epoch && pos.seq > cur.seq) cur.seq = pos.seq;
    return { ok: { ch, cursor: `${cur.epoch}-${cur.seq}`, unread: this.unreadOf(ch, device) } };
  }

  /** The HTTP side of token checking: a refusal, or null. */
  #authorize(req, channels) {
    const header = req.init.headers?.Authorization ?? null;
    const token = header ? /^Bearer (.+)$/i.exec(header)?.[1] ?? null : null;
    const v = this.verify(token);
    if (v.error) return new Response(v.error, { status: 401, headers: { "WWW-Authenticate": 'Bearer realm="ringcast"' } });
    const denied = channels.find((ch) => !this.allows(v.grant, ch));
    if (denied) return new Response(`the token does not allow channel ${denied}`, { status: 403 });
    req.token = token;
    return null;
  }

  async fetch(url, init = {}) {
    const u = new URL(url);
    const params = Object.fromEntries(u.searchParams);
    const method = init.method ?? "GET";
    let transport = null;
    if (u.pathname === "/sse") transport = "sse";
    else if (u.pathname === "/poll") transport = params.timeout === "0" ? "poll" : "longpoll";
    const headers = init.headers ?? {};
    // The cursor: `since=` wins, else `Last-Event-ID` (SSE) or the entity
    // tag of `If-None-Match` (polls), as the node reads them.
    const inm = /^(?:W\/)?"([^"]*)"/.exec(headers["If-None-Match"] ?? "")?.[1];
    const since = params.since ?? (transport === "sse" ? headers["Last-Event-ID"] : inm) ?? null;
    const req = { method, path: u.pathname, params, transport, url, init, auth: headers.Authorization ?? null, since };
    this.log.push(req);
    if (init.signal?.aborted) throw new DOMException("aborted", "AbortError");
    if (this.down) throw new TypeError("fetch failed");
    const hooked = this.intercept?.(req);
    if (hooked) return hooked;
    if (transport && this.transportOff(transport)) {
      const offers = ["ws", "sse", "longpoll", "poll"].filter((t) => !this.off.has(t)).join(",");
      return new Response(`the ${transport} transport is off on this node; it offers ${offers}`, { status: 501 });
    }
    if (this.tokens && (transport || u.pathname.startsWith("/presence/"))) {
      const channels = transport ? params.ch.split(",") : [decodeURIComponent(u.pathname.slice(10))];
      const refused = this.#authorize(req, channels);
      if (refused) return refused;
    }
    if (transport === "sse") return this.#sse({ ...params, since }, init.signal, req.token);
    if (u.pathname === "/poll") return this.#poll({ ...params, since }, init.signal);
    if (u.pathname.startsWith("/pub/")) {
      const ch = decodeURIComponent(u.pathname.slice(5));
      const ct = init.headers?.["Content-Type"] ?? "";
      const binary = !ct.startsWith("text/");
      const data = binary ? new Uint8Array(init.body) : String(init.body);
      const id = this.publish(ch, data, { binary, ephemeral: params.ephemeral === "1" });
      return Response.json({ id });
    }
    if (u.pathname.startsWith("/ack/") && method === "POST") {
      const ch = decodeURIComponent(u.pathname.slice(5));
      const r = this.ack(ch, String(init.body), params.device ?? "", "http");
      if (r.error) {
        const headers = r.error.retry_after ? { "Retry-After": String(r.error.retry_after) } : {};
        return new Response(r.error.reason ?? r.error.code, { status: r.error.status ?? 409, headers });
      }
      return Response.json(r.ok);
    }
    if (u.pathname.startsWith("/presence/")) {
      const ch = decodeURIComponent(u.pathname.slice(10));
      const clients = [...this.sockets].filter((w) => w.subs.has(ch)).map((w) => w.client);
      return Response.json({ ch, clients });
    }
    return new Response("not found", { status: 404 });
  }

  #positions(params) {
    const channels = params.ch.split(",");
    const cursor = params.since ? parseCursor(params.since) : new Map();
    // A durable request resumes a channel it names no position for from
    // the device's cursor.
    return channels.map((ch) => ({ ch, since: cursor.get(ch) ?? (params.durable === "1" ? this.cursorOf(ch, params.device ?? "") : null) }));
  }

  #sse(params, signal, token = null) {
    const node = this;
    const wanted = this.#positions(params);
    const single = wanted.length === 1 ? wanted[0].ch : null;
    /** ch -> {epoch, seq}: where the stream stands in each channel. */
    const seqs = new Map();
    let ctl;
    const stream = {
      channels: wanted.map((w) => w.ch),
      token,
      closed: false,
      send(text) {
        if (!this.closed) ctl.enqueue(enc.encode(text));
      },
      cursor() {
        return formatCursor(seqs);
      },
      event(msg) {
        let out = "";
        if (msg.id) seqs.set(msg.ch, { epoch: msg.epoch, seq: msg.seq });
        if (single) {
          if (msg.id) out += `id:${msg.id}\n`;
          if (msg.binary) out += "event:binary\n";
        } else {
          if (msg.id) out += `id:${this.cursor()}\n`;
          out += `event:${msg.ch}${msg.binary ? ";binary" : ""}\n`;
        }
        const data = msg.binary ? Buffer.from(msg.data).toString("base64") : msg.data;
        for (const line of data.split(/\r\n|\r|\n/)) out += `data:${line}\n`;
        this.send(out + "\n");
      },
      deliver(msg) {
        if (this.channels.includes(msg.ch)) this.event(msg);
      },
      /** `ch` moved from epoch `old` to a new one: the reset, with the
       * stream's position there (`id:`), before anything of the new epoch. */
      epochChanged(ch, old) {
        if (!this.channels.includes(ch)) return;
        const c = node.channel(ch);
        const since = seqs.get(ch) ?? { epoch: old, seq: 0 };
        seqs.set(ch, { epoch: c.epoch, seq: c.last });
        const id = single ? `${c.epoch}-${c.last}` : this.cursor();
        const reset = { ch, reason: "epoch", since: `${since.epoch}-${since.seq}`, missed: null, epoch: c.epoch };
        this.send(`id:${id}\nevent:reset\ndata:${JSON.stringify(reset)}\n\n`);
      },
      comment() {
        this.send(":\n");
      },
      end() {
        if (this.closed) return;
        this.closed = true;
        node.streams.delete(this);
        try {
          ctl.close();
        } catch {}
      },
    };
    const body = new ReadableStream({
      start(c) {
        ctl = c;
      },
      cancel() {
        stream.closed = true;
        node.streams.delete(stream);
      },
    });
    signal?.addEventListener("abort", () => {
      if (stream.closed) return;
      stream.closed = true;
      node.streams.delete(stream);
      try {
        ctl.error(new DOMException("aborted", "AbortError"));
      } catch {}
    });
    stream.send("retry:3000\n\n");
    for (const { ch, since } of wanted) {
      const r = this.replay(ch, since);
      if (r.reset) stream.send(`event:reset\ndata:${JSON.stringify(r.reset)}\n\n`);
      for (const m of r.messages) stream.event(m);
      if (!seqs.has(ch) || seqs.get(ch).epoch !== r.epoch) seqs.set(ch, { epoch: r.epoch, seq: r.last });
    }
    this.streams.add(stream);
    return new Response(body, { status: 200, headers: { "Content-Type": "text/event-stream" } });
  }

  #poll(params, signal) {
    const wanted = this.#positions(params);
    const timeout = Number(params.timeout ?? 30);
    /** ch -> {epoch, seq}: the cursor to answer, each channel in its epoch. */
    const next = new Map();
    const messages = [];
    const resets = [];
    for (const { ch, since } of wanted) {
      const r = this.replay(ch, since);
      // The poll form of a reset names no epoch: `next` does.
      if (r.reset) resets.push({ ch, reason: r.reset.reason, since: r.reset.since, missed: r.reset.missed });
      for (const m of r.messages) messages.push(m);
      next.set(ch, { epoch: r.epoch, seq: r.messages.length ? r.messages.at(-1).seq : since && !r.reset ? since.seq : r.last });
    }
    const cursor = () => formatCursor(next);
    const wire = (m) => {
      const o = { ch: m.ch, id: m.id, data: m.binary ? Buffer.from(m.data).toString("base64") : m.data };
      if (m.binary) o.encoding = "base64";
      return o;
    };
    const answer = (list) => {
      const body = { messages: list.map(wire), next: cursor() };
      if (resets.length) body.resets = resets;
      return Response.json(body, { headers: { ETag: `"${cursor()}"` } });
    };
    if (messages.length || resets.length || timeout === 0) return answer(messages);
    return new Promise((resolve, reject) => {
      const node = this;
      const held = {
        channels: wanted.map((w) => w.ch),
        deliver(msg) {
          if (msg.id === null || !wanted.some((w) => w.ch === msg.ch)) return;
          next.set(msg.ch, { epoch: msg.epoch, seq: msg.seq });
          this.done();
          resolve(answer([msg]));
        },
        finish(status) {
          this.done();
          resolve(new Response(null, { status, headers: { ETag: `"${cursor()}"` } }));
        },
        done() {
          clearTimeout(timer);
          node.polls.delete(this);
        },
      };
      const timer = setTimeout(() => held.finish(204), timeout * 1000);
      signal?.addEventListener("abort", () => {
        held.done();
        reject(new DOMException("aborted", "AbortError"));
      });
      this.polls.add(held);
    });
  }
}

/** The multiplexed `/ws` of the fake node, seen through the browser API. */
export class FakeWebSocket {
  static CONNECTING = 0;
  static OPEN = 1;
  static CLOSING = 2;
  static CLOSED = 3;

  constructor(node, url) {
    this.node = node;
    this.url = url;
    this.readyState = 0;
    this.sent = [];
    this.subs = new Set();
    /** ch -> {epoch, seq}: the last position delivered (or resumed from). */
    this.pos = new Map();
    this.client = String(node.nextClient++).padStart(16, "0");
    this.answerPings = true;
    /** What this socket's token grants (null until `auth`), and the token. */
    this.grant = null;
    this.token = null;
    const u = new URL(url);
    node.log.push({ method: "GET", path: u.pathname, params: Object.fromEntries(u.searchParams), transport: "ws", url });
    setTimeout(() => {
      if (this.readyState !== 0) return;
      if (node.down || node.off.has("ws") || node.wsHang) {
        if (node.wsHang) return; // never opens: the client's openTimeout decides
        // Node's undici reports a failed handshake with error and no close.
        if (node.wsErrorOnly) return this.onerror?.({});
        return this.serverClose(1006, "");
      }
      this.readyState = 1;
      node.sockets.add(this);
      this.onopen?.({});
    }, 1);
  }

  frame(obj) {
    if (this.readyState !== 1) return;
    const data = JSON.stringify(obj);
    setTimeout(() => this.readyState === 1 && this.onmessage?.({ data }), 0);
  }

  send(text) {
    if (this.readyState !== 1) throw new Error("not open");
    this.sent.push(JSON.parse(text));
    const m = JSON.parse(text);
    const withRid = (o) => (m.rid !== undefined ? { ...o, rid: m.rid } : o);
    const checks = this.node.tokens !== null;
    if (checks && !this.grant && (m.type === "subscribe" || m.type === "presence")) {
      return this.frame(withRid({ type: "error", code: "unauthorized", reason: 'authenticate first: send {"type":"auth","token":…}' }));
    }
    switch (m.type) {
      case "ping":
        if (this.answerPings) this.frame(withRid({ type: "pong" }));
        break;
      case "auth":
      case "refresh": {
        this.node.auths.push({ type: m.type, token: m.token, socket: this, at: Date.now() });
        if (!checks) return this.frame(withRid({ type: "error", code: "bad_request", reason: "this node does not check tokens (no --jwt-secret or --jwt-public-key)" }));
        const v = this.node.verify(m.token);
        if (v.error) {
          const how = this.node.wsRejectWith;
          if (how !== "close") this.frame(withRid({ type: "error", code: "token_rejected", reason: v.error }));
          if (how !== "error") {
            // After the error frame (timers run in order).
            setTimeout(() => this.serverClose(v.expired ? 4001 : 4003, v.expired ? "token expired" : `token rejected: ${v.error}`), 0);
          }
          return;
        }
        if (this.grant && this.grant.sub !== v.grant.sub) {
          return this.frame(withRid({ type: "error", code: "token_rejected", reason: "a refreshed token must name the same sub" }));
        }
        this.grant = v.grant;
        this.token = m.token;
        const answer = withRid({ type: "authed", sub: v.grant.sub ?? null, exp: Math.floor(Date.now() / 1000) + 3600 });
        setTimeout(() => this.frame(answer), this.node.authDelay);
        break;
      }
      case "subscribe": {
        if (checks && !this.node.allows(this.grant, m.ch)) {
          return this.frame(withRid({ type: "error", code: "forbidden", reason: `the token does not allow channel ${m.ch}` }));
        }
        if (this.subs.has(m.ch)) return this.frame(withRid({ type: "error", code: "already_subscribed", reason: `already subscribed to ${m.ch}` }));
        this.subs.add(m.ch);
        this.node.subscribes = [...(this.node.subscribes ?? []), m];
        let since = m.since ? parseSince(m.since) : null;
        if (m.durable) {
          const device = m.device ?? "";
          const cur = this.node.cursorOf(m.ch, device);
          this.frame(withRid({ type: "subscribed", ch: m.ch, client: this.client, durable: true, cursor: `${cur.epoch}-${cur.seq}`, unread: this.node.unreadOf(m.ch, device) }));
          // `redeliver`: the node answers as if the client named no
          // position (what a fresh page gets): at least once, from the cursor.
          if (this.node.redeliver) since = null;
          since ??= { ...cur };
        } else {
          this.frame(withRid({ type: "subscribed", ch: m.ch, client: this.client }));
        }
        const r = this.node.replay(m.ch, since);
        this.pos.set(m.ch, since && !r.reset ? since : { epoch: r.epoch, seq: r.reset ? 0 : r.last });
        if (r.reset) this.frame({ type: "reset", ...r.reset });
        for (const msg of r.messages) this.deliver(msg);
        break;
      }
      case "unsubscribe":
        this.subs.delete(m.ch);
        this.frame(withRid({ type: "unsubscribed", ch: m.ch }));
        break;
      case "publish": {
        if (this.node.forbidPublish) return this.frame(withRid({ type: "error", code: "forbidden", reason: "clients may not publish on this server (--client-publish)" }));
        const binary = m.data_base64 !== undefined;
        const data = binary ? new Uint8Array(Buffer.from(m.data_base64, "base64")) : m.data;
        const id = this.node.publish(m.ch, data, { binary, ephemeral: Boolean(m.ephemeral) });
        this.frame(withRid({ type: "published", ch: m.ch, id }));
        break;
      }
      case "ack": {
        const r = this.node.ack(m.ch, m.id, m.device ?? "", "ws");
        if (r.error) return this.frame(withRid({ type: "error", code: r.error.code, reason: r.error.reason ?? r.error.code, ...(r.error.retry_after ? { retry_after: r.error.retry_after } : {}) }));
        this.frame(withRid({ type: "acked", ...r.ok }));
        break;
      }
      case "presence": {
        const clients = [...this.node.sockets].filter((w) => w.subs.has(m.ch)).map((w) => w.client);
        this.frame(withRid({ type: "presence", ch: m.ch, clients }));
        break;
      }
      default:
        this.frame(withRid({ type: "error", code: "unknown_type", reason: "?" }));
    }
  }

  deliver(msg) {
    if (!this.subs.has(msg.ch)) return;
    if (msg.id) this.pos.set(msg.ch, { epoch: msg.epoch, seq: msg.seq });
    const o = { type: "message", ch: msg.ch, id: msg.id };
    if (msg.binary) {
      o.data = Buffer.from(msg.data).toString("base64");
      o.encoding = "base64";
    } else {
      o.data = msg.data;
    }
    if (msg.ephemeral) o.ephemeral = true;
    this.frame(o);
  }

  /** `ch` moved from epoch `old` to a new one: the reset, from this
   * socket's last position, before anything of the new epoch. */
  epochChanged(ch, old) {
    if (!this.subs.has(ch)) return;
    const c = this.node.channel(ch);
    const since = this.pos.get(ch) ?? { epoch: old, seq: 0 };
    this.pos.set(ch, { epoch: c.epoch, seq: 0 });
    this.frame({ type: "reset", ch, reason: "epoch", since: `${since.epoch}-${since.seq}`, missed: null, epoch: c.epoch });
  }

  /** The server closes (or the network drops) the socket. */
  serverClose(code, reason) {
    if (this.readyState === 3) return;
    this.readyState = 3;
    this.node.sockets.delete(this);
    setTimeout(() => this.onclose?.({ code, reason }), 0);
  }

  close() {
    if (this.readyState === 3) return;
    this.readyState = 3;
    this.node.sockets.delete(this);
  }
}

/**
 * Web Locks, exclusive mode only, enough for leader election. `tab()` gives a
 * per-tab view whose `kill()` acts as the browser does when a tab dies: its
 * locks are released and its queued requests dropped.
 */
export class FakeLocks {
  #held = new Map();
  #queues = new Map();

  tab() {
    const mine = new Set();
    const self = this;
    let dead = false;
    return {
      request(name, options, callback) {
        if (typeof options === "function") {
          callback = options;
          options = {};
        }
        return self.#request(name, options, callback, mine, () => dead);
      },
      kill() {
        dead = true;
        for (const entry of [...mine]) entry.drop();
      },
    };
  }

  #request(name, options, callback, mine, isDead) {
    return new Promise((resolve, reject) => {
      const entry = { name, callback, resolve, reject, mine, isDead };
      entry.drop = () => {
        mine.delete(entry);
        const q = this.#queues.get(name) ?? [];
        const i = q.indexOf(entry);
        if (i >= 0) q.splice(i, 1);
        if (this.#held.get(name) === entry) this.#release(name);
      };
      if (options.signal) {
        if (options.signal.aborted) return reject(new DOMException("aborted", "AbortError"));
        options.signal.addEventListener("abort", () => {
          const q = this.#queues.get(name) ?? [];
          const i = q.indexOf(entry);
          if (i >= 0) {
            q.splice(i, 1);
            mine.delete(entry);
            reject(new DOMException("aborted", "AbortError"));
          }
        });
      }
      mine.add(entry);
      if (!this.#queues.has(name)) this.#queues.set(name, []);
      this.#queues.get(name).push(entry);
      this.#pump(name);
    });
  }

  #pump(name) {
    if (this.#held.has(name)) return;
    const q = this.#queues.get(name);
    const entry = q?.shift();
    if (!entry) return;
    this.#held.set(name, entry);
    Promise.resolve()
      .then(() => (entry.isDead() ? undefined : entry.callback({ name, mode: "exclusive" })))
      .then(
        (v) => {
          if (this.#held.get(name) === entry) this.#release(name);
          entry.mine.delete(entry);
          entry.resolve(v);
        },
        (e) => {
          if (this.#held.get(name) === entry) this.#release(name);
          entry.mine.delete(entry);
          entry.reject(e);
        },
      );
  }

  #release(name) {
    this.#held.delete(name);
    queueMicrotask(() => this.#pump(name));
  }

  holder(name) {
    return this.#held.has(name);
  }
}

/** A BroadcastChannel class for one tab, whose channels `kill()` closes. */
export function tabChannels() {
  const open = new Set();
  class TabBroadcastChannel extends BroadcastChannel {
    constructor(name) {
      super(name);
      open.add(this);
    }
    close() {
      open.delete(this);
      super.close();
    }
  }
  return {
    BroadcastChannel: TabBroadcastChannel,
    kill() {
      for (const bc of [...open]) {
        bc.onmessage = null;
        bc.close();
      }
    },
  };
}

/** Resolves when `pred()` is true, polling; rejects after `ms`. */
export async function until(pred, ms = 3000, what = "condition") {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** A Storage-like map (sessionStorage). */
export class MemoryStorage {
  #m = new Map();
  getItem(k) {
    return this.#m.has(k) ? this.#m.get(k) : null;
  }
  setItem(k, v) {
    this.#m.set(k, String(v));
  }
  removeItem(k) {
    this.#m.delete(k);
  }
}
