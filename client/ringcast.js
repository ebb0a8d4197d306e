// ringcast.js — the browser client of ringcast.
//
// One plain ES module, no build step and no dependencies; a node serves it
// at `GET /client.js`, so the client a page loads always speaks the protocol
// of the node it talks to. docs/protocol.md is the wire reference and
// docs/client.md the user guide.
//
// # Overview
//
// A page calls `connect(url, options)` and gets a `Client`. The client keeps
// ONE connection to the node for every channel it follows, over the best
// transport that works: the multiplexed WebSocket (`/ws`), one multi-channel
// Server-Sent Events stream (`/sse?ch=a,b`), long polling or short polling
// (`/poll?ch=a,b`). The module is layered, bottom up:
//
//  1. Helpers — errors, backoff, base64, URLs, tokens, a tiny event emitter.
//  2. Ids, cursors and positions — pure functions: parse ids and composite
//     cursors, decide whether a message is new, apply a server `reset`.
//  3. SSE parser — an incremental `text/event-stream` parser.
//  4. Transports — `ws`, `sse`, `longpoll`, `poll`. Each one opens, keeps
//     its subscriptions in step with the connection, and reports what the
//     server sends through a small `link` interface. None of them decides
//     what to do on failure.
//  5. HTTP requests — publish, presence and acks when not on a WebSocket.
//  6. Connection — the only place with policy: fallback order, reconnect
//     with backoff, probing for a better transport, resume positions,
//     de-duplication, dead-connection detection timers.
//  7. Leader election — with `shared`, the tabs of a browser elect a leader
//     (Web Locks) that holds the one Connection and relays over a
//     `BroadcastChannel`.
//  8. Client — the public API: subscriptions, handlers, events.
//
// # Invariants
//
// * A position is `{epoch, seq}`: the last message a subscription accepted,
//   or where it asked to start. A message is accepted iff it is from the
//   position's epoch and its seq is greater; the position is stored before
//   the handler runs, so a handler that throws neither skips nor repeats.
// * Epochs belong to channels (in a cluster each channel has its own, and
//   it changes only for that channel): a channel's current epoch is the
//   one last seen for it, positions of different channels are never
//   compared, and a composite cursor names each channel in its own epoch.
// * Every subscription keeps its own position, and so does every interest
//   the Connection serves (a mirror, updated by the same rules). The
//   Connection resumes each channel from the OLDEST position any interest
//   has: nobody misses a message, and everyone drops what they already had.
// * Transports may overlap (probing, re-opening a stream with new
//   channels): de-duplication makes overlap harmless, so the client always
//   opens the new before it closes the old.
// * Durable subscriptions (`{durable: true}`): the Connection subscribes a
//   channel durably when any of its interests is; the Client acks what its
//   handlers finished (in order, a failed one holding the acks back),
//   coalesced per channel, over `/ws` or `POST /ack/{ch}`. The node's
//   cursor only decides where a subscription WITHOUT a position starts;
//   once a channel has a position the client resumes from it, as always.
// * Nothing throws into the page: every failure is an `error` event (and a
//   rejected promise for `publish`/`presence`). Every internal promise has a
//   handler.
//
// # Limits
//
// * Sequence numbers are JavaScript numbers (exact up to 2^53).
// * A channel followed "from now" has no position until the server tells
//   one (a message, an SSE/poll cursor). Over `/ws`, and on an event stream
//   that has not yet carried an event, such a channel resumes "from now"
//   after a reconnect: messages published during the gap are not replayed.
// * An event stream or poll carries at most `--max-stream-channels`
//   channels (default 32); `/ws` at most `--max-subscriptions` (256).

// =============================================================================
// 1. Helpers
// =============================================================================

/** Transport names, best first. */
export const TRANSPORTS = Object.freeze(["ws", "sse", "longpoll", "poll"]);

/** Option defaults (times in milliseconds). */
export const DEFAULTS = Object.freeze({
  transports: TRANSPORTS,
  pollInterval: 1000,
  backoff: Object.freeze({ min: 500, max: 30000 }),
  openTimeout: 5000,
  probeInterval: 30000,
  pingInterval: 15000,
  pingTimeout: 10000,
  sseTimeout: 45000,
  longPollTimeout: 25000,
  requestTimeout: 10000,
  healthyAfter: 5000,
  ackDelay: 100,
});

/** A device name (`device` option): what the node accepts. */
const DEVICE_RE = /^[A-Za-z0-9_.-]{1,64}$/;
/** Ack refusals that retrying cannot fix (the others are retried). */
const FINAL_ACK_CODES = new Set(["no_identity", "bad_id", "stale_id", "unknown_id", "not_durable", "forbidden", "bad_request"]);

/** The smallest reconnect delay: full jitter can draw ~0, and reconnecting
 * at once to a node that just dropped everyone is how herds start. */
const BACKOFF_FLOOR_MS = 100;
/** Extra time a long poll gets beyond the time the server may hold it. */
const LONG_POLL_MARGIN_MS = 10000;
/** Short polling slows down by this factor while the page is hidden. */
const HIDDEN_POLL_FACTOR = 4;
/** How much of a refusal's body goes into an error message. */
const MAX_REASON_CHARS = 300;

const CHANNEL_RE = /^[A-Za-z0-9_.:@-]{1,128}$/;

/** What a RingcastError may carry besides its message and kind. */
const ERROR_PROPS = ["transport", "status", "code", "channel", "retryAfter", "probe"];

/**
 * Every error the client reports. `kind` says what went wrong, so code can
 * react without parsing messages:
 *
 * * `refused` — the server answered with an error status (or a WebSocket
 *   handshake failed); `status` is set for HTTP.
 * * `unavailable` — `503`/`429`: the node is draining or overloaded;
 *   `retryAfter` (seconds) when it said.
 * * `network` — the server could not be reached.
 * * `timeout` — no answer in time (open, ping, request, idle stream).
 * * `closed` — an open connection was lost.
 * * `lagging` — the server dropped a reader that fell behind (the client
 *   resumes from its positions and loses nothing still in history).
 * * `protocol` — the server sent something this client does not understand.
 * * `request` — `publish`/`presence` refused (`code` for `/ws` errors).
 * * `handler` — a subscription handler or event listener threw (`cause`).
 * * `unsupported` — the runtime lacks what a transport needs.
 * * `token` — the token provider threw, rejected, timed out or gave
 *   something other than a string.
 * * `client-closed` — the client was closed.
 *
 * A refusal of the token carries `status` 401/403 (HTTP) or `code`
 * `token_rejected`/`token_expired`/`unauthorized` (`/ws`); one that names a
 * channel the token does not allow carries `channel`.
 */
export class RingcastError extends Error {
  constructor(message, props = {}) {
    super(message, props.cause !== undefined ? { cause: props.cause } : undefined);
    this.name = "RingcastError";
    this.kind = props.kind ?? "error";
    for (const k of ERROR_PROPS) {
      if (props[k] !== undefined) this[k] = props[k];
    }
  }
}

/**
 * The reconnect delay before attempt `attempt` (0-based): "full jitter",
 * uniformly random in [0, min(max, min·2^attempt)), but never below a small
 * floor (100 ms, or `min` if smaller). Spreading reconnects over the whole
 * window is what keeps a node that restarts from being hit by every client
 * at the same instant. `random` is injectable for tests.
 */
export function backoffDelay(attempt, bounds = DEFAULTS.backoff, random = Math.random) {
  const { min, max } = bounds;
  const cap = Math.min(max, min * 2 ** Math.min(Math.max(attempt, 0), 30));
  const floor = Math.min(min, BACKOFF_FLOOR_MS);
  return Math.max(floor, Math.floor(random() * cap));
}

/** Whether `name` is a valid channel name (see docs/protocol.md). */
export function isChannelName(name) {
  return typeof name === "string" && CHANNEL_RE.test(name);
}

/** Decodes base64 (as the server sends binary payloads) to bytes. */
export function base64ToBytes(text) {
  const bin = atob(text);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

/** Encodes bytes as base64 (binary publishes over `/ws`). */
export function bytesToBase64(bytes) {
  let bin = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    bin += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  }
  return btoa(bin);
}

/** A publishable payload: a string, or bytes as a `Uint8Array`. */
function toPayload(data) {
  if (typeof data === "string") return data;
  if (data instanceof Uint8Array) return data;
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  throw new TypeError("publish data must be a string, an ArrayBuffer or a typed array (JSON.stringify objects)");
}

/** A random id for this tab's instance of the client. */
function randomId() {
  const c = globalThis.crypto;
  if (c && typeof c.getRandomValues === "function") {
    const b = c.getRandomValues(new Uint8Array(8));
    return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  }
  return Math.random().toString(16).slice(2) + Date.now().toString(16);
}

/** Runs `fn` later without letting an exception escape into the page. */
function later(fn) {
  queueMicrotask(() => {
    try {
      fn();
    } catch {
      // Callers only pass functions that report their own failures.
    }
  });
}

/** The body of a refusal, trimmed for an error message. */
async function reasonOf(res) {
  try {
    const text = (await res.text()).trim();
    return text.length > MAX_REASON_CHARS ? text.slice(0, MAX_REASON_CHARS) + "…" : text;
  } catch {
    return "";
  }
}

/** The error for a refused HTTP request. */
async function refusal(what, res, props = {}) {
  const reason = await reasonOf(res);
  const retry = Number(res.headers?.get?.("retry-after"));
  const unavailable = res.status === 503 || res.status === 429;
  return new RingcastError(`${what} refused: ${res.status}${reason ? " " + reason : ""}`, {
    kind: unavailable ? "unavailable" : "refused",
    status: res.status,
    retryAfter: unavailable && Number.isFinite(retry) && retry >= 0 ? retry : undefined,
    ...props,
  });
}

/** The error for a fetch that threw. */
function fetchFailure(what, err, timedOutAfter, props = {}) {
  if (timedOutAfter != null) {
    return new RingcastError(`${what} timed out after ${timedOutAfter} ms`, { kind: "timeout", ...props });
  }
  const detail = err?.cause?.message || err?.message || String(err);
  return new RingcastError(`${what} failed: ${detail}`, { kind: "network", cause: err, ...props });
}

/**
 * `fetch` with a deadline that covers the response head and, when `read` is
 * given, reading the body with it (a stalled body must time out too).
 * Resolves with `read(res)`, or the response; rejects with a RingcastError
 * (`timeout` or `network`). `ctl` lets the caller abort too (then the
 * rejection is an AbortError the caller recognises).
 */
async function fetchWithin(deps, what, url, init, ms, ctl = new AbortController(), read = null) {
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    ctl.abort();
  }, ms);
  try {
    const res = await deps.fetch(url, { ...init, signal: ctl.signal });
    return read ? await read(res) : res;
  } catch (err) {
    if (!timedOut && ctl.signal.aborted) throw err;
    if (err instanceof RingcastError) throw err;
    throw fetchFailure(what, err, timedOut ? ms : null);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * The node's URLs. `base` is normalized to http(s) with no trailing slash
 * (a `ws:` URL is accepted too). The token never goes into a URL: URLs end
 * up in proxy and access logs (see `withToken`).
 */
class Endpoints {
  constructor(base) {
    this.base = base;
  }

  /** `base + path + ?query`, parameters in order, skipping null values. */
  http(path, params = {}) {
    const q = [];
    for (const [k, v] of Object.entries(params)) {
      if (v == null) continue;
      // Channel lists keep their commas literal: names never contain one.
      q.push(k === "ch" ? `ch=${v.map(encodeURIComponent).join(",")}` : `${k}=${encodeURIComponent(v)}`);
    }
    return this.base + path + (q.length ? "?" + q.join("&") : "");
  }

  ws(path, params) {
    return this.http(path, params).replace(/^http/, "ws");
  }
}

/** Normalizes the URL given to `connect` to `http(s)://host[:port][/prefix]`. */
export function normalizeBase(url) {
  let where = url;
  if (where === undefined) {
    // Served by the node itself: the node is where this module came from.
    const self = new URL(import.meta.url);
    if (self.protocol !== "http:" && self.protocol !== "https:") {
      throw new TypeError("connect(url): url is required when the client is not loaded from a node");
    }
    where = self.origin + self.pathname.replace(/\/[^/]*$/, "");
  }
  const loc = globalThis.location?.href;
  const u = loc ? new URL(where, loc) : new URL(where);
  if (u.protocol === "ws:") u.protocol = "http:";
  else if (u.protocol === "wss:") u.protocol = "https:";
  if (u.protocol !== "http:" && u.protocol !== "https:") {
    throw new TypeError(`connect(url): unsupported protocol ${u.protocol}`);
  }
  return u.origin + u.pathname.replace(/\/+$/, "");
}

// ---- tokens ----------------------------------------------------------------------
//
// The `token` option is a string, or a provider: a function returning one
// (or a Promise of one), called before each connection attempt so an app can
// hand over a fresh JWT. HTTP requests carry it as `Authorization: Bearer`
// (only when there is one: without a token every request stays CORS-simple
// and preflight-free); `/ws` sends it as its first frame, since browsers
// cannot put headers on a WebSocket. docs/client.md § Tokens.

/** Codes of `/ws` errors and closes that refuse the connection's token. */
const TOKEN_CODES = new Set(["token_rejected", "token_expired", "unauthorized"]);

/** Throws a TypeError unless `token` is a valid `token` option. */
function checkToken(token, what) {
  if (token == null || typeof token === "string" || typeof token === "function") return;
  throw new TypeError(`${what} must be a string, a function returning one (or a Promise of one), or null`);
}

/**
 * Where the token comes from, and the last one obtained. `current` is what
 * requests carry between connection attempts; `obtain()` asks the provider
 * again (if there is one). A change of source bumps `#version`, so the late
 * answer of a provider that was replaced meanwhile is not taken.
 */
class TokenSource {
  #source = null;
  #current = null;
  #version = 0;
  #pending = null;

  constructor(source) {
    this.set(source);
  }

  /** The token to send now (`null`: none). */
  get current() {
    return this.#current;
  }

  get isProvider() {
    return typeof this.#source === "function";
  }

  /** A new source (`setToken`). A provider keeps the old token current
   * until it answers. */
  set(source) {
    this.#source = source ?? null;
    this.#version++;
    this.#pending = null;
    if (!this.isProvider) this.#current = this.#source || null;
  }

  /** A token another tab obtained. A provider of this tab stays, and is
   * asked again at this tab's next connection attempt (if it leads). */
  adopt(token) {
    this.#version++;
    this.#pending = null;
    this.#current = token || null;
    if (!this.isProvider) this.#source = this.#current;
  }

  /** Asks the provider (concurrent callers share one call) and resolves
   * with the token to use; without a provider, the token as it is. Rejects
   * with a `token` error when the provider throws, rejects, gives no answer
   * within `ms`, or answers something other than a string (`null` or `""`
   * mean "no token"). */
  obtain(ms) {
    if (!this.isProvider) return Promise.resolve(this.#current);
    if (this.#pending) return this.#pending;
    const version = this.#version;
    const provider = this.#source;
    let timer = null;
    const deadline = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new RingcastError(`token provider gave no token within ${ms} ms`, { kind: "token" })), ms);
    });
    const p = Promise.race([Promise.resolve().then(() => provider()), deadline])
      .then((token) => {
        if (token != null && typeof token !== "string") {
          throw new RingcastError(`token provider gave ${typeof token}, not a string`, { kind: "token" });
        }
        if (version === this.#version) this.#current = token || null;
        return this.#current;
      })
      .catch((err) => {
        if (err instanceof RingcastError) throw err;
        throw new RingcastError(`token provider failed: ${err?.message ?? err}`, { kind: "token", cause: err });
      })
      .finally(() => {
        clearTimeout(timer);
        if (this.#pending === p) this.#pending = null;
      });
    this.#pending = p;
    return p;
  }

  /** The token for a request: the current one, or the provider's first. */
  forRequest(ms) {
    return this.isProvider && this.#current === null ? this.obtain(ms) : Promise.resolve(this.#current);
  }
}

/** `init` with `Authorization: Bearer <token>` added, when there is a token
 * (and `extra` headers with it). */
function withToken(init, token, extra = null) {
  if (token == null) return init;
  return { ...init, headers: { ...(init.headers ?? {}), ...(extra ?? {}), Authorization: `Bearer ${token}` } };
}

/**
 * Where a stream or poll request carries its cursor: `{since, header}`.
 * Without a token, in `since=` — a header would cost a preflight. With one
 * the request is preflighted anyway, and browsers cache a preflight per
 * URL: a cursor in the URL would make nearly every poll a new URL, and so
 * two round trips. In `header` (`Last-Event-ID` for a stream,
 * `If-None-Match` for a poll — both read by the node, and allowed by its
 * preflight answer) the URL stays the same from one request to the next.
 */
function cursorPlacement(token, cursor, headerName) {
  if (token == null || cursor == null) return { since: cursor, header: null };
  const value = headerName === "If-None-Match" ? `"${cursor}"` : cursor;
  return { since: null, header: { [headerName]: value } };
}

/**
 * Whether a transport's failure is a refusal of its credentials (or of the
 * page's origin): `401`, a `403` (one naming a channel never gets here, see
 * `refusedChannel`), or a `/ws` token error or close. Every transport
 * presents the same token from the same page, so falling back to another
 * would only be refused again: the client backs off, asks the provider
 * again, and retries the same transport.
 */
function isAuthFailure(err) {
  return err != null && (err.status === 401 || err.status === 403 || TOKEN_CODES.has(err.code));
}

/** The channel a `403` says the token does not allow, if it is one of
 * `channels` (`the token does not allow channel <name>`). */
function refusedChannel(err, channels) {
  if (err?.status !== 403) return null;
  const m = /\bchannel ([A-Za-z0-9_.:@-]{1,128})\s*$/.exec(err.message);
  return m && channels.includes(m[1]) ? m[1] : null;
}

/** The error for a token the node refused on `/ws`: `closeCode` from the
 * close that ended it (4001, 4003) when known, `reason` from the close or
 * the `error` frame (`token rejected: ` is not repeated). */
function tokenRefusal(closeCode, reason) {
  const why = String(reason ?? "").replace(/^token rejected:\s*/, "");
  const expired = closeCode === 4001 || (closeCode == null && why === "token expired");
  return new RingcastError(`token rejected: ${closeCode != null ? closeCode + " " : ""}${why}`.trim(), {
    kind: "refused",
    code: expired ? "token_expired" : "token_rejected",
    transport: "ws",
  });
}

/**
 * A minimal event emitter. A listener that throws does not stop the others:
 * its exception goes to `onListenerError` (the client turns it into an
 * `error` event), so user code never breaks the client.
 */
class Emitter {
  #listeners = new Map();
  #onListenerError;

  constructor(onListenerError = () => {}) {
    this.#onListenerError = onListenerError;
  }

  on(event, fn) {
    if (typeof fn !== "function") throw new TypeError("listener must be a function");
    if (!this.#listeners.has(event)) this.#listeners.set(event, new Set());
    this.#listeners.get(event).add(fn);
  }

  off(event, fn) {
    this.#listeners.get(event)?.delete(fn);
  }

  has(event) {
    return (this.#listeners.get(event)?.size ?? 0) > 0;
  }

  emit(event, arg) {
    const set = this.#listeners.get(event);
    if (!set) return;
    for (const fn of [...set]) {
      try {
        fn(arg);
      } catch (err) {
        this.#onListenerError(event, err);
      }
    }
  }

  clear() {
    this.#listeners.clear();
  }
}

/** What the module uses from its environment; every item is injectable. */
function environment(options) {
  const g = globalThis;
  let storage = options.storage;
  if (storage === undefined) {
    try {
      storage = g.sessionStorage ?? null; // throws in sandboxed frames
    } catch {
      storage = null;
    }
  }
  return {
    fetch: options.fetch ?? (typeof g.fetch === "function" ? g.fetch.bind(g) : null),
    WebSocket: options.WebSocket ?? g.WebSocket ?? null,
    BroadcastChannel: options.BroadcastChannel ?? g.BroadcastChannel ?? null,
    locks: options.locks ?? g.navigator?.locks ?? null,
    storage,
    random: options.random ?? Math.random,
    document: options.document !== undefined ? options.document : g.document ?? null,
    // Workers have no window, but their global scope fires "online" too.
    window: options.window !== undefined ? options.window : g.window ?? (typeof g.addEventListener === "function" ? g : null),
  };
}

// =============================================================================
// 2. Ids, cursors and positions
// =============================================================================
//
// A message id is `<epoch>-<seq>`: 12 hex digits and a per-channel sequence
// number. The epoch belongs to the channel: on one node every channel has
// the node's, random at each start; in a cluster (`--redis`) each channel
// has its own, changed only for a channel whose keys were lost. A position
// is the parsed form, `{epoch, seq}`; `<epoch>-0` means "from the channel's
// first message in history". A composite cursor names a position in
// several channels: `<epoch>;<entry>,…`, an entry `<ch>=<seq>` (a position
// in the prefix epoch) or `<ch>=<epoch>-<seq>` (in its own).

const ID_RE = /^([0-9a-fA-F]{12})-(\d{1,20})$/;
const EPOCH_RE = /^[0-9a-fA-F]{12}$/;
const SEQ_RE = /^\d{1,20}$/;

/** Parses a message id to a position, or `null` if it is not one. */
export function parseId(id) {
  if (typeof id !== "string") return null;
  const m = ID_RE.exec(id);
  if (!m) return null;
  const seq = Number(m[2]);
  if (!Number.isSafeInteger(seq)) return null;
  return { epoch: m[1].toLowerCase(), seq };
}

/** Formats a position as a message id. */
export function formatId(pos) {
  return `${pos.epoch}-${pos.seq}`;
}

/**
 * Encodes a composite cursor, or returns `null` when it names no channel
 * (no cursor: every channel from now).
 *
 * * `encodeCursor(entries)`, `[channel, {epoch, seq}]` pairs: the prefix is
 *   the epoch most entries share (on a tie, the first of them met), as the
 *   node writes it; the others carry their own. All in one epoch, it is the
 *   single-epoch form every server reads.
 * * `encodeCursor(epoch, entries)`: `epoch` is the prefix; an entry is
 *   `[channel, seq]` in it, or `[channel, {epoch, seq}]`.
 */
export function encodeCursor(epoch, entries) {
  if (typeof epoch !== "string") {
    entries = [...epoch];
    epoch = mostCommonEpoch(entries);
  }
  const parts = [];
  for (const [ch, p] of entries) {
    const pos = typeof p === "number" ? { epoch, seq: p } : p;
    parts.push(pos.epoch === epoch ? `${ch}=${pos.seq}` : `${ch}=${formatId(pos)}`);
  }
  return parts.length ? `${epoch};${parts.join(",")}` : null;
}

/** The epoch most `[channel, position]` entries share; the first met on a tie. */
function mostCommonEpoch(entries) {
  const count = new Map();
  for (const [, p] of entries) count.set(p.epoch, (count.get(p.epoch) ?? 0) + 1);
  let best = null;
  for (const [e, n] of count) if (best === null || n > count.get(best)) best = e;
  return best;
}

/**
 * Parses a composite cursor to `{epoch, positions: Map<channel, {epoch,
 * seq}>}` (`epoch`: the prefix; each position in its own epoch), or `null`
 * if malformed. Follows the server: split at the first `;`, entries at
 * `,`, each at its last `=` (channel names have no `=`, but may have `-`);
 * a value with a `-` is an id in its own epoch, one without a seq in the
 * prefix epoch.
 */
export function parseCursor(text) {
  if (typeof text !== "string") return null;
  const semi = text.indexOf(";");
  if (semi < 0) return null;
  const prefix = text.slice(0, semi);
  if (!EPOCH_RE.test(prefix)) return null;
  const epoch = prefix.toLowerCase();
  const positions = new Map();
  for (const part of text.slice(semi + 1).split(",")) {
    if (!part) continue;
    const eq = part.lastIndexOf("=");
    if (eq <= 0) return null;
    const value = part.slice(eq + 1);
    let pos;
    if (value.includes("-")) {
      pos = parseId(value);
    } else {
      const seq = SEQ_RE.test(value) ? Number(value) : NaN;
      pos = Number.isSafeInteger(seq) ? { epoch, seq } : null;
    }
    if (!pos) return null;
    positions.set(part.slice(0, eq), pos);
  }
  return { epoch, positions };
}

/** Whether a subscription at `pos` (`null`: no position yet) takes the
 * message `id`. A message from another epoch is never taken: when a
 * channel's epoch changes the node first sends a `reset`, which moves the
 * position to the new epoch; a message from an epoch the position has not
 * reached is a straggler of a connection being replaced. */
export function acceptsId(pos, id) {
  if (!pos) return true;
  if (pos.epoch !== id.epoch) return false;
  return id.seq > pos.seq;
}

/**
 * The older of two positions in one channel — the one to resume from so
 * that neither misses anything. A position in an epoch other than the
 * channel's current one (`currentEpoch`, when known) is older than any in
 * the current one: resuming from it gets the reset that moves it. `null`
 * (from now) is newer than anything.
 */
export function olderPosition(a, b, currentEpoch = null) {
  if (!a) return b;
  if (!b) return a;
  if (a.epoch !== b.epoch) {
    if (a.epoch === currentEpoch) return b;
    return a;
  }
  return a.seq <= b.seq ? a : b;
}

/**
 * Normalizes a reset from any transport to
 * `{ch, reason, since, sinceId, missed, epoch}` (`since` parsed; `epoch`,
 * the channel's epoch now, from the reset itself, or else `fallbackEpoch`:
 * the channel's entry in the cursor of the answer that carried it).
 */
export function normalizeReset(raw, fallbackEpoch = null) {
  return {
    ch: raw.ch,
    reason: raw.reason,
    sinceId: typeof raw.since === "string" ? raw.since : null,
    since: parseId(raw.since),
    missed: typeof raw.missed === "number" ? raw.missed : null,
    epoch: typeof raw.epoch === "string" ? raw.epoch.toLowerCase() : fallbackEpoch,
  };
}

/**
 * Applies a server reset to one position. Returns `{applied, pos, missed}`:
 * whether this position lost messages (and so should hear about it), where
 * it stands now, and how many it missed (`null`: unknown).
 *
 * The server answers one subscription per channel, made from the OLDEST
 * position of all who follow it, so a reset names that position (`since`);
 * each position works out its own loss. The rules are idempotent: a reset
 * that arrives twice (overlapping connections) applies once.
 *
 * * `epoch`: the channel's epoch changed (the node restarted, or in a
 *   cluster the channel's keys were lost); a position in another epoch
 *   lost everything; it moves to `<new epoch>-0` (the node sends all it
 *   has). Other channels are not concerned, whatever their epoch.
 * * `unknown`: `since` is beyond anything the channel issued; a position at
 *   or beyond it is as bogus; it moves to seq 0 (take all history).
 * * `evicted`: messages after `since` left history. With `missed` known the
 *   oldest kept is `since + missed + 1`, and this position lost
 *   `oldest - pos - 1` (if any); without, the channel was forgotten and
 *   started over, and a position at or past `since` moves to seq 0.
 * * `lagging` is not a loss (the transport reconnects); it never gets here.
 */
export function applyReset(pos, r) {
  const none = { applied: false, pos, missed: null };
  if (!pos) return none;
  switch (r.reason) {
    case "epoch":
      if (!r.epoch || pos.epoch === r.epoch) return none;
      return { applied: true, pos: { epoch: r.epoch, seq: 0 }, missed: null };
    case "unknown":
      if (!r.since || pos.epoch !== r.since.epoch || pos.seq < r.since.seq) return none;
      return { applied: true, pos: { epoch: pos.epoch, seq: 0 }, missed: null };
    case "evicted": {
      if (!r.since || pos.epoch !== r.since.epoch) return none;
      if (r.missed == null) {
        if (pos.seq < r.since.seq) return none;
        return { applied: true, pos: { epoch: pos.epoch, seq: 0 }, missed: null };
      }
      if (r.since.seq === 0) {
        // "From the first message": the server counted from the channel's
        // first seq, which a client does not know; only a position there too
        // can tell what it missed.
        return pos.seq === 0 ? { applied: true, pos, missed: r.missed } : none;
      }
      const oldest = r.since.seq + r.missed + 1;
      const missed = oldest - pos.seq - 1;
      if (missed <= 0) return none;
      return { applied: true, pos: { epoch: pos.epoch, seq: oldest - 1 }, missed };
    }
    default:
      return none;
  }
}

/** A message as delivered to handlers, from its wire form (`/ws` envelope
 * or poll entry): `{ch, id, data, ephemeral?}`, base64 decoded. */
function messageFromWire(m) {
  const msg = {
    ch: m.ch,
    id: typeof m.id === "string" ? m.id : null,
    data: m.encoding === "base64" ? base64ToBytes(String(m.data ?? "")) : m.data,
  };
  if (m.ephemeral || msg.id === null) msg.ephemeral = true;
  return msg;
}

// =============================================================================
// 3. SSE parser
// =============================================================================

/**
 * An incremental `text/event-stream` parser (the WHATWG algorithm). Feed it
 * text as it arrives, in chunks of any size: a line or a field split across
 * chunks, and a CRLF split between two, come out the same as whole.
 *
 * Handlers (all optional):
 * * `onEvent({type, data, id, hasId})` — a dispatched event: `type` defaults
 *   to `"message"`, `data` lines are joined with `\n`, `id` is the stream's
 *   last event id (which persists across events), `hasId` says whether THIS
 *   event carried an `id:` line. Unlike a browser's EventSource, an event
 *   with an `id:` but no `data:` is reported too, with `data: null`: it
 *   moves the stream's position.
 * * `onComment(text)` — a `:` line (heartbeats).
 * * `onRetry(ms)` — a valid `retry:` field.
 */
export class SseParser {
  #h;
  #line = "";
  #skipLF = false;
  #started = false;
  #data = [];
  #type = "";
  #lastId = "";
  #hasId = false;

  constructor(handlers = {}) {
    this.#h = handlers;
  }

  /** Parses the next chunk of text. */
  feed(text) {
    const n = text.length;
    let i = 0;
    if (n === 0) return;
    if (!this.#started) {
      this.#started = true;
      if (text.charCodeAt(0) === 0xfeff) i = 1; // a leading BOM is not data
    }
    if (this.#skipLF) {
      this.#skipLF = false;
      if (i < n && text.charCodeAt(i) === 10) i++; // the LF of a CRLF split between chunks
    }
    while (i < n) {
      let j = i;
      while (j < n) {
        const c = text.charCodeAt(j);
        if (c === 10 || c === 13) break;
        j++;
      }
      if (j === n) {
        this.#line += text.slice(i);
        return;
      }
      const line = this.#line + text.slice(i, j);
      this.#line = "";
      if (text.charCodeAt(j) === 13) {
        if (j + 1 < n) {
          if (text.charCodeAt(j + 1) === 10) j++;
        } else {
          this.#skipLF = true;
        }
      }
      i = j + 1;
      this.#processLine(line);
    }
  }

  /** The stream ended: an event without its blank line is discarded. */
  end() {
    this.#line = "";
    this.#data = [];
    this.#type = "";
    this.#hasId = false;
  }

  #processLine(line) {
    if (line === "") return this.#dispatch();
    if (line.charCodeAt(0) === 58) return this.#h.onComment?.(line.slice(1));
    const colon = line.indexOf(":");
    let field = line;
    let value = "";
    if (colon >= 0) {
      field = line.slice(0, colon);
      value = line.slice(colon + 1);
      if (value.charCodeAt(0) === 32) value = value.slice(1);
    }
    switch (field) {
      case "event":
        this.#type = value;
        break;
      case "data":
        this.#data.push(value);
        break;
      case "id":
        if (!value.includes("\0")) {
          this.#lastId = value;
          this.#hasId = true;
        }
        break;
      case "retry":
        if (/^\d+$/.test(value)) this.#h.onRetry?.(Number(value));
        break;
      default:
        break; // unknown fields are ignored
    }
  }

  #dispatch() {
    const hasId = this.#hasId;
    this.#hasId = false;
    const type = this.#type;
    this.#type = "";
    if (this.#data.length === 0) {
      if (hasId) this.#h.onEvent?.({ type: type || "message", data: null, id: this.#lastId, hasId });
      return;
    }
    const data = this.#data.join("\n");
    this.#data = [];
    this.#h.onEvent?.({ type: type || "message", data, id: this.#lastId, hasId });
  }
}

/**
 * An SSE parser fed with bytes: UTF-8 decoded incrementally, so a
 * character split between two network reads is decoded whole.
 */
export function createSseDecoder(handlers) {
  const decoder = new TextDecoder("utf-8");
  const parser = new SseParser(handlers);
  return {
    push(bytes) {
      parser.feed(decoder.decode(bytes, { stream: true }));
    },
    end() {
      parser.feed(decoder.decode());
      parser.end();
    },
  };
}

// =============================================================================
// 4. Transports
// =============================================================================
//
// A transport is created by the Connection with a `link`:
//
//   link.opts, link.deps, link.urls        options, environment, Endpoints
//   link.token() -> string|null            the token to present now
//   link.channels() -> [{ch, since}]       what to follow, from where (ids)
//   link.cursor() -> string|null           the same as a composite cursor
//   link.opened()                          usable (once)
//   link.verified()                        the server accepted it (once)
//   link.failed(err)                       failed or lost (once; then silent)
//   link.message(msg), link.reset(r), link.cursorSeen(text),
//   link.subscribedAt(ch, id), link.presenceEvent(e), link.rtt(ms),
//   link.clientId(id)                      this connection in presence lists
//   link.channelRefused(ch, err, token)    the token does not allow `ch`
//                                          (-> true: the Connection leaves
//                                          it out until the token changes)
//   link.warn(err)                         non-fatal problems
//
// and offers `open()`, `sync(resub)` (the channels or their positions
// changed; `resub` names channels to subscribe again from an older
// position), `tokenChanged()` (`setToken`: present the new token), `close()`,
// and for `ws` `publish`/`presence`.
//
// "Opened" and "verified" differ for HTTP transports with nothing to follow:
// they hold no request, so they are usable at once but unproven until the
// first answer. Only a verified transport is remembered or switched to.

/** What every transport shares: the once-only reporting. */
class TransportBase {
  constructor(name, link) {
    this.name = name;
    this.link = link;
    this.closed = false;
    this.isOpen = false;
    this.isVerified = false;
  }

  _opened() {
    if (this.closed || this.isOpen) return;
    this.isOpen = true;
    this.link.opened();
  }

  _verified() {
    if (this.closed || this.isVerified) return;
    this.isVerified = true;
    this._opened();
    if (!this.closed) this.link.verified();
  }

  /** Reports the failure once, after the current call stack (so a failure
   * during `open()` never re-enters the Connection), and shuts down. */
  _fail(err) {
    if (this.closed) return;
    err.transport ??= this.name;
    this.close();
    later(() => this.link.failed(err));
  }

  close() {
    this.closed = true;
  }
}

/**
 * The multiplexed WebSocket, `GET /ws`: JSON text frames, one connection for
 * every channel. Open = socket open, the token accepted, and every initial
 * `subscribe` answered. Dead-connection detection: an application `ping`
 * every `pingInterval`; if nothing at all arrives within `pingTimeout` after
 * it, the socket is dead (a TCP connection can stay "open" for minutes after
 * a network change).
 *
 * Token: browsers cannot put headers on a WebSocket, so with a token the
 * first frame is `{"type":"auth","token",rid}`, and nothing is subscribed
 * before the node answers `authed` (a node that checks tokens refuses a
 * subscribe that comes first). A refused token gets an `error`
 * (`token_rejected`) and a close (4001 expired, 4003 rejected); a token that
 * expires later closes with 4001. `tokenChanged()` sends `refresh`.
 */
class WsTransport extends TransportBase {
  #ws = null;
  #rid = 0;
  /** Channels subscribed (or being) on this socket, with the position used. */
  #subs = new Map();
  /** `subscribe` rids awaiting `subscribed`, for errors naming them. */
  #subRids = new Map();
  /** Channels whose first `subscribed` is awaited before "open". */
  #awaiting = new Set();
  /** publish/presence requests by rid. */
  #pending = new Map();
  #timers = { open: null, ping: null, pong: null, error: null, rejected: null };
  #lastRx = 0;
  #ping = null;
  #socketOpen = false;
  /** The rid of the `auth` awaiting its answer. */
  #authRid = null;
  /** `refresh` rids awaiting their answer. */
  #refreshRids = new Set();
  /** The node took the token (or none was needed): subscribes may go. */
  #admitted = false;
  /** The token the node has from this socket. */
  #sentToken = null;
  /** A token error (`{m, during: "auth"|"refresh"}`), held a moment for the
   * close that usually follows it and says more. */
  #rejected = null;

  constructor(link) {
    super("ws", link);
  }

  open() {
    const { deps, opts, urls } = this.link;
    if (typeof deps.WebSocket !== "function") {
      return this._fail(new RingcastError("ws unavailable: no WebSocket in this runtime", { kind: "unsupported" }));
    }
    try {
      this.#ws = new deps.WebSocket(urls.ws("/ws"));
    } catch (err) {
      return this._fail(new RingcastError(`ws refused: ${err.message}`, { kind: "refused", cause: err }));
    }
    const ws = this.#ws;
    ws.binaryType = "arraybuffer";
    this.#timers.open = setTimeout(() => {
      this._fail(new RingcastError(`ws timed out: not open within ${opts.openTimeout} ms`, { kind: "timeout" }));
    }, opts.openTimeout);
    ws.onopen = () => this.#onOpen();
    ws.onmessage = (ev) => this.#onFrame(ev);
    ws.onclose = (ev) => this.#onClose(ev);
    ws.onerror = () => this.#onError();
  }

  /** Browsers follow `error` with `close` (which has the code); some
   * runtimes (Node's undici) do not after a failed handshake. Before open,
   * an error is the refusal; after, give `close` a moment to explain. */
  #onError() {
    if (this.closed) return;
    if (!this.#socketOpen) {
      return this._fail(new RingcastError("ws refused: the handshake failed", { kind: "refused" }));
    }
    clearTimeout(this.#timers.error);
    this.#timers.error = setTimeout(() => {
      this._fail(new RingcastError("ws closed: error without close", { kind: "closed" }));
    }, 250);
  }

  #onOpen() {
    if (this.closed) return;
    this.#socketOpen = true;
    this.#lastRx = Date.now();
    const token = this.link.token();
    if (token == null) return this.#admit();
    this.#authRid = ++this.#rid;
    this.#sentToken = token;
    this.#send({ type: "auth", token, rid: this.#authRid });
    // The open timer keeps running: an `auth` left unanswered is a
    // connection that does not open.
  }

  /** The token is accepted (or none is needed): subscribe everything. */
  #admit() {
    this.#admitted = true;
    for (const { ch, since, durable } of this.link.channels()) {
      this.#awaiting.add(ch);
      this.#subscribe(ch, since, durable);
    }
    this.#schedulePing();
    this.#checkOpen();
  }

  #checkOpen() {
    if (this.#admitted && this.#awaiting.size === 0 && !this.closed && !this.isOpen) {
      clearTimeout(this.#timers.open);
      this._verified();
    }
  }

  #send(obj) {
    if (!this.#ws || this.#ws.readyState !== 1) return false;
    try {
      this.#ws.send(JSON.stringify(obj));
      return true;
    } catch {
      return false;
    }
  }

  #subscribe(ch, since, durable) {
    const rid = ++this.#rid;
    this.#subs.set(ch, since);
    this.#subRids.set(rid, ch);
    const cmd = { type: "subscribe", ch, rid };
    if (since) cmd.since = since;
    if (durable) {
      cmd.durable = true;
      if (this.link.opts.device) cmd.device = this.link.opts.device;
    }
    this.#send(cmd);
  }

  sync(resub = new Set()) {
    // Before open (or before the token is accepted), `#admit` subscribes afresh.
    if (this.closed || !this.#admitted || !this.#ws || this.#ws.readyState !== 1) return;
    const list = this.link.channels();
    const want = new Map(list.map((c) => [c.ch, c.since]));
    const durable = new Set(list.filter((c) => c.durable).map((c) => c.ch));
    for (const ch of [...this.#subs.keys()]) {
      if (!want.has(ch)) {
        this.#subs.delete(ch);
        this.#awaiting.delete(ch);
        this.#send({ type: "unsubscribe", ch });
      }
    }
    for (const [ch, since] of want) {
      if (!this.#subs.has(ch)) {
        this.#subscribe(ch, since, durable.has(ch));
      } else if (resub.has(ch)) {
        // The server answers in order: the old subscription's messages end
        // at `unsubscribed`, the new one replays from the older position.
        this.#send({ type: "unsubscribe", ch });
        this.#subscribe(ch, since, durable.has(ch));
      }
    }
    this.#checkOpen();
  }

  /** `setToken`: the node gets the new token at once (`refresh`), and keeps
   * the connection and its subscriptions. Before the socket is open there
   * is nothing to do (`auth` sends the newest); while `auth` is answered,
   * the refresh follows `authed`. */
  tokenChanged() {
    if (this.closed || !this.#admitted) return;
    const token = this.link.token();
    if (token == null || token === this.#sentToken) return;
    const rid = ++this.#rid;
    this.#refreshRids.add(rid);
    this.#sentToken = token;
    this.#send({ type: "refresh", token, rid });
  }

  #onFrame(ev) {
    if (this.closed) return;
    this.#lastRx = Date.now();
    if (typeof ev.data !== "string") return; // /ws speaks text frames only
    let m;
    try {
      m = JSON.parse(ev.data);
    } catch {
      return this.link.warn(new RingcastError("ws: a frame that is not JSON", { kind: "protocol" }));
    }
    if (!m || typeof m !== "object") return;
    switch (m.type) {
      case "message":
        try {
          this.link.message(messageFromWire(m));
        } catch (err) {
          this.link.warn(new RingcastError(`ws: bad message on ${m.ch}: ${err.message}`, { kind: "protocol" }));
        }
        break;
      case "reset":
        this.link.reset(normalizeReset(m));
        break;
      case "joined":
      case "left":
        this.link.presenceEvent({ ch: m.ch, type: m.type, client: m.client });
        break;
      case "authed":
        if (m.rid === this.#authRid) {
          this.#authRid = null;
          this.#admit();
          this.tokenChanged(); // a token set while `auth` was answered
        } else {
          this.#refreshRids.delete(m.rid);
        }
        break;
      case "subscribed":
        this.#subRids.delete(m.rid);
        if (typeof m.client === "string") this.link.clientId(m.client);
        // A future server may say where the subscription starts.
        if (typeof m.id === "string") this.link.subscribedAt(m.ch, m.id);
        // A durable subscription starts after its cursor (the node's memory
        // of what was acked), and says how much is unread.
        if (m.durable === true && typeof m.cursor === "string") {
          this.link.subscribedAt(m.ch, m.cursor);
          if (typeof m.unread === "number") this.link.unread({ ch: m.ch, cursor: m.cursor, unread: m.unread });
        }
        if (this.#awaiting.delete(m.ch)) this.#checkOpen();
        break;
      case "acked":
        this.#settle(m.rid, null, { ch: m.ch, cursor: typeof m.cursor === "string" ? m.cursor : null, unread: typeof m.unread === "number" ? m.unread : null });
        break;
      case "published":
        this.#settle(m.rid, null, { id: typeof m.id === "string" ? m.id : null });
        break;
      case "presence":
        this.#settle(m.rid, null, Array.isArray(m.clients) ? m.clients : []);
        break;
      case "pong":
        if (this.#ping && m.rid === this.#ping.rid) {
          this.link.rtt(Date.now() - this.#ping.at);
          this.#ping = null;
        }
        break;
      case "error":
        this.#onServerError(m);
        break;
      default:
        break; // "unsubscribed", and whatever a newer server adds
    }
  }

  #onServerError(m) {
    const reason = `${m.code}: ${m.reason}`;
    const props = { kind: "request", code: m.code, transport: "ws" };
    if (typeof m.retry_after === "number") props.retryAfter = m.retry_after;
    if (m.rid != null && m.rid === this.#authRid) return this.#onAuthError(m, reason, props);
    if (this.#refreshRids.delete(m.rid)) {
      // The connection carries on under the old token, unless the node
      // closes it (it does for a token that is not valid: 4001/4003, and
      // then the close is the one report).
      const err = new RingcastError(`token rejected: ${m.reason}`, { kind: "refused", code: m.code, transport: "ws" });
      return this.#holdRejection(m, "refresh", () => this.link.warn(err));
    }
    const p = this.#pending.get(m.rid);
    if (p) return this.#settle(m.rid, new RingcastError(`${p.what} refused: ${reason}`, props));
    const ch = this.#subRids.get(m.rid);
    if (ch !== undefined) {
      this.#subRids.delete(m.rid);
      if (m.code === "unauthorized") {
        // The node wants a token before anything (none was set): the
        // connection is refused, not the channel.
        return this._fail(new RingcastError(`ws refused: ${reason}`, { kind: "refused", code: m.code }));
      }
      if (m.code === "forbidden") {
        // The token does not allow this channel. It is not subscribed; the
        // Connection leaves it out until the token changes.
        this.#subs.delete(ch);
        const err = new RingcastError(`subscribe to ${ch} refused: ${reason}`, { ...props, kind: "refused" });
        if (!this.link.channelRefused(ch, err, this.#sentToken)) this.link.warn(err);
      } else if (m.code !== "already_subscribed") {
        // `already_subscribed` after an unsubscribe/subscribe pair is benign.
        this.link.warn(new RingcastError(`subscribe to ${ch} refused: ${reason}`, props));
      }
      if (this.#awaiting.delete(ch)) this.#checkOpen();
      return;
    }
    this.link.warn(new RingcastError(`ws: server error ${reason}`, props));
  }

  #onAuthError(m, reason, props) {
    this.#authRid = null;
    if (TOKEN_CODES.has(m.code)) {
      // The node closes right after (4001 expired, 4003 rejected), and the
      // close code says more: give it a moment to arrive.
      return this.#holdRejection(m, "auth", () => this._fail(tokenRefusal(null, m.reason)));
    }
    // Anything else (`bad_request`: a node that checks no tokens) refuses
    // the command, not the connection: say so, and carry on without.
    this.link.warn(new RingcastError(`ws: the node did not take the token: ${reason}`, props));
    this.#admit();
  }

  /** Reports a token error after a moment, unless a close (which closes
   * this transport, and its timers) reports it first. */
  #holdRejection(m, during, report) {
    this.#rejected = { m, during };
    clearTimeout(this.#timers.rejected);
    this.#timers.rejected = setTimeout(() => {
      this.#rejected = null;
      report();
    }, 250);
  }

  #request(what, cmd) {
    return new Promise((resolve, reject) => {
      const rid = ++this.#rid;
      const timer = setTimeout(() => {
        this.#settle(rid, new RingcastError(`${what} timed out after ${this.link.opts.requestTimeout} ms`, { kind: "timeout", transport: "ws" }));
      }, this.link.opts.requestTimeout);
      this.#pending.set(rid, { what, resolve, reject, timer, at: Date.now() });
      if (!this.#send({ ...cmd, rid })) {
        this.#settle(rid, new RingcastError(`${what} failed: the WebSocket is not open`, { kind: "closed", transport: "ws" }));
      }
    });
  }

  #settle(rid, err, value) {
    const p = this.#pending.get(rid);
    if (!p) return;
    this.#pending.delete(rid);
    clearTimeout(p.timer);
    if (err) p.reject(err);
    else p.resolve(value);
  }

  publish(ch, data, ephemeral) {
    const cmd = { type: "publish", ch };
    if (typeof data === "string") cmd.data = data;
    else cmd.data_base64 = bytesToBase64(data);
    if (ephemeral) cmd.ephemeral = true;
    return this.#request(`publish to ${ch}`, cmd);
  }

  ack(ch, id, device) {
    const cmd = { type: "ack", ch, id };
    if (device) cmd.device = device;
    return this.#request(`ack of ${id} on ${ch}`, cmd);
  }

  presence(ch) {
    return this.#request(`presence of ${ch}`, { type: "presence", ch });
  }

  #schedulePing() {
    const { pingInterval, pingTimeout } = this.link.opts;
    clearTimeout(this.#timers.ping);
    this.#timers.ping = setTimeout(() => {
      if (this.closed) return;
      const at = Date.now();
      this.#ping = { rid: ++this.#rid, at };
      this.#send({ type: "ping", rid: this.#ping.rid });
      this.#timers.pong = setTimeout(() => {
        // Anything received since the ping proves the peer alive: a pong
        // can queue behind a burst of messages.
        if (this.#lastRx < at) {
          this._fail(new RingcastError(`ws: no answer to ping within ${pingTimeout} ms`, { kind: "timeout" }));
        } else {
          this.#schedulePing();
        }
      }, pingTimeout);
    }, pingInterval);
  }

  #onClose(ev) {
    if (this.closed) return;
    const code = ev?.code ?? 1006;
    const reason = ev?.reason ? ` ${ev.reason}` : "";
    if (!this.#socketOpen) {
      // Browsers hide the handshake's status: closed before open is refused.
      return this._fail(new RingcastError(`ws refused: closed before open (${code}${reason})`, { kind: "refused" }));
    }
    if (code === 4003 || (code === 4001 && !this.isOpen)) {
      // The token was refused (at `auth`, or a `refresh`), or had expired.
      return this._fail(tokenRefusal(code, ev?.reason));
    }
    if (code === 4001) {
      // The token expired during the connection: the Connection asks the
      // provider for a new one and resumes.
      return this._fail(new RingcastError(`ws closed: ${code}${reason}`, { kind: "closed", code: "token_expired" }));
    }
    if (this.#rejected?.during === "auth") return this._fail(tokenRefusal(null, this.#rejected.m.reason));
    if (!this.isOpen) {
      return this._fail(new RingcastError(`ws closed while subscribing: ${code}${reason}`, { kind: code === 1001 ? "unavailable" : "closed" }));
    }
    const lagging = code === 1008 && /^lagging/.test(ev?.reason ?? "");
    const kind = lagging ? "lagging" : code === 1001 ? "unavailable" : "closed";
    this._fail(new RingcastError(`ws closed: ${code}${reason}`, { kind }));
  }

  close() {
    if (this.closed) return;
    super.close();
    for (const t of Object.values(this.#timers)) clearTimeout(t);
    for (const [rid, p] of [...this.#pending]) {
      this.#settle(rid, new RingcastError(`${p.what}: the WebSocket closed before the answer came`, { kind: "closed", transport: "ws" }));
    }
    const ws = this.#ws;
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = null;
      ws.onerror = () => {};
      try {
        ws.close(1000);
      } catch {
        // already closing
      }
    }
  }
}

/**
 * Server-Sent Events over `fetch` with a streaming body — not EventSource,
 * which hides the status (a `501` must mean "fall back"), hides heartbeat
 * comments (needed to tell a quiet stream from a dead one), and cannot send
 * headers. ONE stream carries every channel: `GET /sse?ch=a,b&since=<cursor>`.
 *
 * When the channels change the stream is re-opened with the current cursor;
 * the old stream keeps delivering until the new one answers `200`
 * (make-before-break; de-duplication absorbs the overlap). A stream silent
 * for `sseTimeout` (heartbeats included) is dead.
 *
 * With one channel the server uses its one-channel format (plain ids,
 * `event:binary`); with several, `event:<ch>[;binary]` and the composite
 * cursor as `id:`. Both are read here.
 *
 * Token: `Authorization: Bearer` on every stream request. A new token
 * (`tokenChanged`) re-opens the stream the same make-before-break way, from
 * the current positions. A token that expires while the stream runs ends it
 * with `event:error` (`{"code":"token_expired"}`), which fails the transport
 * so the Connection gets a fresh token and resumes. A `403` naming a channel
 * is reported through `link.channelRefused`, and the stream re-opened
 * without it.
 */
class SseTransport extends TransportBase {
  /** The stream being read, and the one being opened to replace it. */
  #active = null;
  #pending = null;
  /** The channels of the newest stream, to tell when a sync changes nothing. */
  #names = null;

  constructor(link) {
    super("sse", link);
  }

  open() {
    this.#reopen();
  }

  sync(resub = new Set()) {
    if (this.closed) return;
    const names = this.link.channels().map((c) => c.ch).join(",");
    if (names === this.#names && resub.size === 0) return; // already asked for exactly this
    this.#reopen();
  }

  tokenChanged() {
    if (this.closed) return;
    const newest = this.#pending ?? this.#active;
    if (newest && newest.token === this.link.token()) return; // already presented
    this.#reopen();
  }

  #reopen() {
    const channels = this.link.channels().map((c) => c.ch);
    this.#names = channels.join(",");
    this.#pending?.kill();
    this.#pending = null;
    if (channels.length === 0) {
      this.#active?.kill();
      this.#active = null;
      this._opened(); // nothing to follow: usable, unproven
      return;
    }
    const stream = { ctl: new AbortController(), dead: false, timer: null, channels, token: this.link.token() };
    stream.kill = () => {
      stream.dead = true;
      clearTimeout(stream.timer);
      stream.ctl.abort();
    };
    this.#pending = stream;
    this.#run(stream).catch((err) => {
      if (!stream.dead) this._fail(fetchFailure("sse", err, null));
    });
  }

  async #run(s) {
    const { deps, opts, urls } = this.link;
    if (typeof deps.fetch !== "function") {
      return this._fail(new RingcastError("sse unavailable: no fetch in this runtime", { kind: "unsupported" }));
    }
    const token = s.token;
    const { since, header } = cursorPlacement(token, this.link.cursor(), "Last-Event-ID");
    const url = urls.http("/sse", { ch: s.channels, since, ...durableParams(this.link) });
    const started = Date.now();
    let res;
    try {
      // The deadline covers the head, and the reason of a refusal.
      res = await fetchWithin(deps, "sse", url, withToken({ cache: "no-store" }, token, header), opts.openTimeout, s.ctl, async (r) => {
        if (r.status !== 200) throw await refusal("sse", r);
        if (!r.body) throw new RingcastError("sse: no response body", { kind: "unsupported" });
        return r;
      });
    } catch (err) {
      if (s.dead) return;
      const ch = refusedChannel(err, s.channels);
      if (ch) {
        // The token does not allow `ch`: the other channels go on, on the
        // stream already running, or on one re-opened without it.
        s.kill();
        if (this.#pending === s) this.#pending = null;
        this.#names = this.#active ? this.#active.channels.join(",") : null;
        if (this.link.channelRefused(ch, err, token)) return;
      }
      return this._fail(err instanceof RingcastError ? err : fetchFailure("sse", err, null));
    }
    if (s.dead) return void res.body.cancel().catch(() => {});
    // The new stream is live: it replaces the old one.
    this.#active?.kill();
    this.#active = s;
    this.#pending = null;
    this.link.rtt(Date.now() - started);
    this._verified();
    await this.#read(s, res.body);
  }

  async #read(s, body) {
    const { sseTimeout } = this.link.opts;
    const single = s.channels.length === 1 ? s.channels[0] : null;
    const decoder = createSseDecoder({
      onEvent: (ev) => {
        if (!s.dead) this.#event(s, ev, single);
      },
    });
    const reader = body.getReader();
    const idle = () => {
      clearTimeout(s.timer);
      s.timer = setTimeout(() => {
        if (s.dead) return;
        s.kill();
        this._fail(new RingcastError(`sse: nothing received for ${sseTimeout} ms`, { kind: "timeout" }));
      }, sseTimeout);
    };
    idle();
    for (;;) {
      let chunk;
      try {
        chunk = await reader.read();
      } catch (err) {
        if (s.dead) return;
        return this._fail(fetchFailure("sse stream", err, null, { kind: "closed" }));
      }
      if (s.dead) return void reader.cancel().catch(() => {});
      if (chunk.done) {
        decoder.end();
        if (s.dead) return;
        return this._fail(new RingcastError("sse stream ended", { kind: "closed" }));
      }
      idle();
      decoder.push(chunk.value);
    }
  }

  #event(s, ev, single) {
    const link = this.link;
    // The position this event carries, as a composite cursor.
    let cursor = null;
    if (ev.hasId) {
      if (single) {
        const pos = parseId(ev.id);
        cursor = pos ? encodeCursor(pos.epoch, [[single, pos.seq]]) : null;
      } else {
        cursor = ev.id;
      }
    }
    if (ev.data === null) {
      if (cursor) link.cursorSeen(cursor);
      return;
    }
    if (ev.type === "error" && (single || isErrorEvent(ev, s.channels))) {
      // The node says why it ends the stream, right before it does.
      let raw = null;
      try {
        raw = JSON.parse(ev.data);
      } catch {
        // the reason is the text itself
      }
      const code = typeof raw?.code === "string" ? raw.code : undefined;
      const reason = typeof raw?.reason === "string" ? raw.reason : code ?? ev.data;
      s.kill();
      return this._fail(new RingcastError(`sse: ${reason}`, { kind: code === "token_rejected" ? "refused" : "closed", code }));
    }
    if (ev.type === "reset" && (single || isResetEvent(ev.data, s.channels))) {
      let raw;
      try {
        raw = JSON.parse(ev.data);
      } catch {
        return link.warn(new RingcastError("sse: a reset that is not JSON", { kind: "protocol" }));
      }
      if (single && raw.ch == null) raw.ch = single;
      if (raw.reason === "lagging") {
        s.kill();
        return this._fail(new RingcastError(`sse: the server dropped the stream as lagging on ${raw.ch}`, { kind: "lagging" }));
      }
      // The reset names the channel's epoch now; failing that, the
      // channel's entry in the cursor that came with it does.
      const entry = cursor ? parseCursor(cursor)?.positions.get(raw.ch) : null;
      link.reset(normalizeReset(raw, entry?.epoch ?? null));
      if (cursor) link.cursorSeen(cursor);
      return;
    }
    let ch;
    let binary;
    if (single) {
      ch = single;
      binary = ev.type === "binary";
    } else {
      binary = ev.type.endsWith(";binary");
      ch = binary ? ev.type.slice(0, -7) : ev.type;
    }
    // The message's id is its channel's entry in the cursor, in that
    // channel's epoch (not necessarily the cursor's prefix).
    let id = null;
    if (cursor) {
      const pos = parseCursor(cursor)?.positions.get(ch);
      if (pos) id = formatId(pos);
    }
    let data;
    try {
      data = binary ? base64ToBytes(ev.data) : ev.data;
    } catch {
      return link.warn(new RingcastError(`sse: bad base64 on ${ch}`, { kind: "protocol" }));
    }
    const msg = { ch, id, data };
    if (id === null) msg.ephemeral = true; // events without id: are ephemeral
    link.message(msg);
    if (cursor) link.cursorSeen(cursor);
  }

  close() {
    if (this.closed) return;
    super.close();
    this.#active?.kill();
    this.#pending?.kill();
    this.#active = this.#pending = null;
  }
}

/** Whether an `event:reset` of a multi-channel stream is the server's reset
 * and not a message on a channel named "reset" (the names collide; a reset
 * is a JSON object naming one of the stream's channels and a reason). */
function isResetEvent(data, channels) {
  if (!channels.includes("reset")) return true;
  try {
    const v = JSON.parse(data);
    return v !== null && typeof v === "object" && typeof v.reason === "string" && channels.includes(v.ch) && typeof v.since === "string";
  } catch {
    return false;
  }
}

/** Whether an `event:error` of a multi-channel stream is the server's and not
 * a message on a channel named "error": the server's carries no `id:` and is
 * a JSON object with `type: "error"` and a `code`. */
function isErrorEvent(ev, channels) {
  if (!channels.includes("error")) return true;
  if (ev.hasId) return false;
  try {
    const v = JSON.parse(ev.data);
    return v !== null && typeof v === "object" && v.type === "error" && typeof v.code === "string";
  } catch {
    return false;
  }
}

/**
 * Polling, `GET /poll?ch=a,b&since=<cursor>&timeout=S`, in a loop: long
 * polling holds each request up to `longPollTimeout` (and polls again at
 * once), short polling asks with `timeout=0` every `pollInterval` (×4 while
 * the page is hidden) and at once after an answer with messages.
 *
 * Verification: a long poll's first request asks `timeout=1`, so a node
 * that refuses long polling says so at once, and one that accepts answers
 * within a second. Every request has an abort deadline (the hold plus a
 * margin for long polls). Changing channels aborts the request in flight
 * and asks again: the cursor only moves on answers, so nothing is lost.
 *
 * Token: `Authorization: Bearer` on every request; a new token is simply
 * used by the next one. A `403` naming a channel leaves that channel out
 * (`link.channelRefused`) and polls on for the others.
 */
class PollTransport extends TransportBase {
  #long;
  #ctl = null;
  /** The channels of the request in flight (or of the last one). */
  #names = null;
  #abortedForSync = false;
  #wake = null;
  #sleepTimer = null;

  constructor(link, long) {
    super(long ? "longpoll" : "poll", link);
    this.#long = long;
  }

  open() {
    this.#loop().catch((err) => this._fail(err instanceof RingcastError ? err : fetchFailure(this.name, err, null)));
  }

  sync(resub = new Set()) {
    if (this.closed) return;
    const names = this.link.channels().map((c) => c.ch).join(",");
    if (names === this.#names && resub.size === 0) return; // the next poll asks the same
    if (this.#ctl) {
      this.#abortedForSync = true;
      this.#ctl.abort();
    }
    this.wake();
  }

  /** Cuts a wait short (channels changed, page visible again). */
  wake() {
    const w = this.#wake;
    this.#wake = null;
    w?.();
  }

  #sleep(ms) {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(this.#sleepTimer);
        this.#wake = null;
        resolve();
      };
      this.#wake = done;
      if (ms != null) this.#sleepTimer = setTimeout(done, ms);
    });
  }

  #hidden() {
    return this.link.deps.document?.visibilityState === "hidden";
  }

  async #loop() {
    const { deps, opts, urls } = this.link;
    if (typeof deps.fetch !== "function") {
      throw new RingcastError(`${this.name} unavailable: no fetch in this runtime`, { kind: "unsupported" });
    }
    while (!this.closed) {
      const channels = this.link.channels().map((c) => c.ch);
      if (channels.length === 0) {
        this.#names = "";
        this._opened(); // nothing to follow: usable, unproven
        await this.#sleep(null);
        continue;
      }
      const timeout = this.#long ? (this.isVerified ? Math.max(1, Math.round(opts.longPollTimeout / 1000)) : 1) : 0;
      const deadline = this.#long ? timeout * 1000 + LONG_POLL_MARGIN_MS : opts.requestTimeout;
      const token = this.link.token();
      const { since, header } = cursorPlacement(token, this.link.cursor(), "If-None-Match");
      const url = urls.http("/poll", { ch: channels, since, timeout, ...durableParams(this.link) });
      this.#names = channels.join(",");
      const ctl = (this.#ctl = new AbortController());
      this.#abortedForSync = false;
      const started = Date.now();
      let res;
      let body = null;
      let refused = null;
      try {
        [res, body, refused] = await fetchWithin(deps, this.name, url, withToken({ cache: "no-store" }, token, header), deadline, ctl, async (r) => {
          if (r.status === 200) return [r, await r.json(), null];
          if (r.status === 204 || r.status === 304) return [r, null, null];
          return [r, null, await refusal(this.name, r)];
        });
      } catch (err) {
        if (this.closed) return;
        if (this.#abortedForSync) continue;
        throw err instanceof RingcastError ? err : fetchFailure(this.name, err, null);
      } finally {
        this.#ctl = null;
      }
      if (this.closed) return;
      if (this.#abortedForSync) continue;
      if (refused) {
        const ch = refusedChannel(refused, channels);
        if (ch && this.link.channelRefused(ch, refused, token)) continue; // the next poll leaves it out
        throw refused;
      }
      if (!this.#long) this.link.rtt(Date.now() - started);
      this._verified();
      let got = 0;
      if (body) {
        got = this.#answer(body);
      } else {
        // 204/304: the cursor is in the ETag (exposed to scripts by CORS).
        const tag = res.headers.get("etag");
        if (tag) this.link.cursorSeen(tag.replace(/^W\//, "").replace(/^"|"$/g, ""));
      }
      if (this.closed) return;
      if (this.#long) {
        // A long poll that answers at once with nothing is not holding
        // (a proxy in the way?): do not spin.
        if (got === 0 && res.status === 200 && Date.now() - started < 100) await this.#sleep(opts.pollInterval);
      } else if (got === 0) {
        await this.#sleep(opts.pollInterval * (this.#hidden() ? HIDDEN_POLL_FACTOR : 1));
      }
    }
  }

  /** Handles a `200` answer; returns how many messages it had. */
  #answer(body) {
    const link = this.link;
    // A poll's reset names no epoch: the channel's is its entry in `next`
    // (a cursor; in the one-channel form, an id).
    const next = parseCursor(body.next);
    const epochOf = (r) => (next ? next.positions.get(r?.ch)?.epoch : parseId(body.next)?.epoch) ?? null;
    // Resets first: they move positions before the history that follows.
    for (const r of Array.isArray(body.resets) ? body.resets : body.reset ? [body.reset] : []) {
      link.reset(normalizeReset(r, epochOf(r)));
    }
    const messages = Array.isArray(body.messages) ? body.messages : [];
    for (const m of messages) {
      if (this.closed) return 0;
      try {
        link.message(messageFromWire(m));
      } catch (err) {
        link.warn(new RingcastError(`${this.name}: bad message on ${m?.ch}: ${err.message}`, { kind: "protocol" }));
      }
    }
    if (typeof body.next === "string") link.cursorSeen(body.next);
    return messages.length;
  }

  close() {
    if (this.closed) return;
    super.close();
    this.#ctl?.abort();
    this.wake();
  }
}

/** Creates the transport `name`. */
/** `?durable=1&device=…` for an event stream or poll that follows a durable
 * subscription: the parameters name no channel, so the request's channels
 * are all durable then (each keeps a cursor for the identity). */
function durableParams(link) {
  if (!link.channels().some((c) => c.durable)) return {};
  return { durable: 1, device: link.opts.device ?? null };
}

function createTransport(name, link) {
  switch (name) {
    case "ws":
      return new WsTransport(link);
    case "sse":
      return new SseTransport(link);
    case "longpoll":
      return new PollTransport(link, true);
    case "poll":
      return new PollTransport(link, false);
    default:
      throw new TypeError(`unknown transport ${name}`);
  }
}

// =============================================================================
// 5. HTTP requests: publish and presence
// =============================================================================
//
// CORS-simple when there is no token, so no preflight doubles their
// latency: a text publish is `text/plain;charset=UTF-8`, a binary one has no
// Content-Type at all (the node takes anything not `text/*` as binary), and
// nothing else goes into headers. With a token, `Authorization` makes them
// preflighted (the node answers preflights allowing it, and browsers cache
// the answer for its `Access-Control-Max-Age`).

/**
 * Sends a request with the token (`send(token)`). A `401` is decided before
 * the node reads the request — nothing happened — so with a provider that
 * gives a different token the request is sent once more; a publish is never
 * repeated for any other reason.
 */
async function withFreshToken(tokens, opts, send) {
  const token = await tokens.forRequest(opts.requestTimeout);
  try {
    return await send(token);
  } catch (err) {
    if (err?.status !== 401 || !tokens.isProvider) throw err;
    const fresh = await tokens.obtain(opts.requestTimeout);
    if (fresh === token) throw err;
    return send(fresh);
  }
}

async function httpPublish(deps, urls, opts, tokens, ch, data, ephemeral) {
  const what = `publish to ${ch}`;
  const url = urls.http(`/pub/${encodeURIComponent(ch)}`, { ephemeral: ephemeral ? 1 : null });
  const init = typeof data === "string"
    ? { method: "POST", body: data, headers: { "Content-Type": "text/plain;charset=UTF-8" } }
    : { method: "POST", body: data };
  const body = await withFreshToken(tokens, opts, (token) =>
    fetchWithin(deps, what, url, withToken(init, token), opts.requestTimeout, undefined, (res) => answerOf(what, res)),
  );
  return { id: typeof body?.id === "string" ? body.id : null };
}

/** The JSON of a `200`, or the refusal as an error. */
async function answerOf(what, res) {
  if (res.status !== 200) throw await refusal(what, res, { kind: res.status === 503 || res.status === 429 ? "unavailable" : "request" });
  return res.json().catch(() => null);
}

/** Whether `keepalive` requests work here (older browsers refuse those that
 * need a CORS preflight, as a request with a token does). */
let keepaliveWorks = true;

/** `POST /ack/{ch}` with the id as text (`?device=`), the token as for a
 * publish; `keepalive` so that an ack sent as the page goes still arrives. */
async function httpAck(deps, urls, opts, tokens, ch, id) {
  const what = `ack of ${id} on ${ch}`;
  const url = urls.http(`/ack/${encodeURIComponent(ch)}`, { device: opts.device ?? null });
  const send = (keepalive) => {
    const init = { method: "POST", body: id, keepalive, headers: { "Content-Type": "text/plain;charset=UTF-8" } };
    return withFreshToken(tokens, opts, (token) =>
      fetchWithin(deps, what, url, withToken(init, token), opts.requestTimeout, undefined, (res) => answerOf(what, res)),
    );
  };
  let body;
  try {
    body = await send(keepaliveWorks);
  } catch (err) {
    if (!keepaliveWorks || err?.kind !== "network" || !/keepalive/i.test(err.message)) throw err;
    keepaliveWorks = false;
    body = await send(false);
  }
  return { ch, cursor: typeof body?.cursor === "string" ? body.cursor : null, unread: typeof body?.unread === "number" ? body.unread : null };
}

async function httpPresence(deps, urls, opts, tokens, ch) {
  const what = `presence of ${ch}`;
  const url = urls.http(`/presence/${encodeURIComponent(ch)}`);
  const body = await withFreshToken(tokens, opts, (token) =>
    fetchWithin(deps, what, url, withToken({ cache: "no-store" }, token), opts.requestTimeout, undefined, (res) => answerOf(what, res)),
  );
  return Array.isArray(body?.clients) ? body.clients : [];
}

// =============================================================================
// 6. Connection: fallback, backoff, probing, positions
// =============================================================================

/**
 * The one connection to the node, on whichever transport works, for a set
 * of *interests* (subscriptions of this tab, or of every tab when this tab
 * leads). Events: `message`, `reset`, `fill` (`{ch, pos}`: a position for
 * interests that had none), `presence`, `status` (`{state, transport,
 * stats}`), `error`.
 *
 * Policy:
 * * **Fallback.** A round tries the transports in order, starting at the
 *   one that last worked this session (then wrapping round to the better
 *   ones). A transport that fails to open — refused, not open in time —
 *   hands over to the next at once. Unreachable or unavailable nodes
 *   (`network`, `503`) end the round: the next transport would fare no
 *   better.
 * * **Backoff.** Between rounds, and after losing an open connection,
 *   wait `backoffDelay(attempt)`; `attempt` starts over once a connection
 *   has been open for `healthyAfter` (5 s): a node that accepts and drops
 *   at once is not hammered.
 * * **Probing.** On a transport other than the first, try the better ones
 *   every `probeInterval` in parallel; one that opens — every channel
 *   subscribed from the current positions — replaces the current one, which
 *   is then closed. Overlap is de-duplicated; nothing is lost because the
 *   old transport runs until the new one covers everything.
 * * **Positions.** Each interest has a position; a channel resumes from the
 *   oldest. A message goes out if some interest takes it.
 * * **Tokens.** A provider is asked before each round and each probe. A
 *   refused token (`401`, `403`, `/ws` 4001/4003/`token_rejected`) is no
 *   reason to fall back — every transport presents the same token — so it
 *   ends the round: back off, ask the provider again, and retry the same
 *   transport. A channel the token does not allow is left out (and
 *   reported) until the token changes; the others carry on.
 */
class Connection {
  #opts;
  #deps;
  #urls;
  #tokens;
  /** Channels the node refused for the token then presented: ch -> token. */
  #refused = new Map();
  /** The transport the next round starts with, after a refused token. */
  #resumeAt = null;
  /** Bumped by every round, so a provider's late answer starts no stale one. */
  #roundGen = 0;
  #emitter = new Emitter();
  /** ch -> {interests: Map<key, pos|null>, head: pos|null, epoch: string|null}:
   * `epoch` is the channel's current one, from the latest id, reset or
   * cursor entry seen for it (`null`: none yet). Every channel has its own:
   * in a cluster they differ. */
  #channels = new Map();
  #channelOf = new Map();
  #state = "connecting";
  #transportName = null;
  /** This connection's id in presence lists (`/ws` only). */
  #clientId = null;
  #current = null;
  #probe = null;
  #probeIndex = 0;
  #round = [];
  #attempt = 0;
  #everOpen = false;
  #closed = false;
  #lastError = null;
  #timers = { retry: null, probe: null, healthy: null, sync: null };
  #resub = new Set();
  #stats = { reconnects: 0, rtt: null, messages: 0, duplicates: 0 };
  #storageKey;
  #onOnline = () => this.#retryNow();
  #onVisibility = () => {
    if (this.#deps.document?.visibilityState === "visible") this.#current?.wake?.();
  };

  /** `resumed`: another connection served these interests before (a new
   * leader tab): the state is "reconnecting" until open. `tokens`: the
   * TokenSource of the tab that runs it. */
  constructor(urls, opts, deps, { resumed = false, tokens = new TokenSource(opts.token) } = {}) {
    this.#urls = urls;
    this.#opts = opts;
    this.#deps = deps;
    this.#tokens = tokens;
    this.#everOpen = resumed;
    if (resumed) this.#state = "reconnecting";
    this.#storageKey = `ringcast:transport:${urls.base}|${opts.transports.join(",")}`;
  }

  on(event, fn) {
    this.#emitter.on(event, fn);
  }

  get state() {
    return this.#state;
  }

  get transport() {
    return this.#transportName;
  }

  get clientId() {
    return this.#transportName === "ws" ? this.#clientId : null;
  }

  get stats() {
    return { ...this.#stats };
  }

  /** Starts connecting — after the current task, so that listeners and
   * subscriptions added right after `connect()` see every event and go
   * into the first request. */
  start() {
    queueMicrotask(() => this.#start());
  }

  #start() {
    if (this.#closed) return;
    this.#deps.window?.addEventListener?.("online", this.#onOnline);
    this.#deps.document?.addEventListener?.("visibilitychange", this.#onVisibility);
    this.#status();
    this.#newRound();
  }

  // ---- interests and positions -------------------------------------------------

  /**
   * Adds an interest in `ch` from `pos` (`null`: from now). Returns its
   * start: `pos`, or for "from now" the latest position this connection has
   * delivered on the channel (so history replayed for others is not "new"
   * to it), or `null` if it has none.
   */
  addInterest(key, ch, pos, durable = false) {
    let c = this.#channels.get(ch);
    const fresh = !c;
    if (fresh) {
      c = { interests: new Map(), head: null, epoch: null, durable: new Set() };
      this.#channels.set(ch, c);
    }
    const before = fresh ? null : this.#resumePoint(c);
    const wasDurable = c.durable.size > 0;
    const start = pos ?? c.head;
    c.interests.set(key, start);
    if (durable) c.durable.add(key);
    this.#channelOf.set(key, ch);
    if (fresh) {
      this.#scheduleSync();
    } else if (durable && !wasDurable) {
      this.#scheduleSync(ch); // subscribed again, durably
    } else {
      const after = this.#resumePoint(c);
      const older = after && (!before || (after !== before && olderPosition(before, after, c.epoch) === after));
      if (older) this.#scheduleSync(ch);
    }
    return start;
  }

  removeInterest(key) {
    const ch = this.#channelOf.get(key);
    if (ch === undefined) return;
    this.#channelOf.delete(key);
    const c = this.#channels.get(ch);
    c.interests.delete(key);
    c.durable.delete(key);
    if (c.interests.size === 0) {
      this.#channels.delete(ch);
      this.#refused.delete(ch);
      this.#scheduleSync();
    }
  }

  /** Removes every interest whose key starts with `prefix` (a tab gone). */
  removeInterestsOf(prefix) {
    for (const key of [...this.#channelOf.keys()]) if (key.startsWith(prefix)) this.removeInterest(key);
  }

  #resumePoint(c) {
    let p = null;
    for (const pos of c.interests.values()) p = olderPosition(p, pos, c.epoch);
    return p;
  }

  /** The channels to follow: all but those refused for the current token. */
  *#followed() {
    for (const [ch, c] of this.#channels) {
      if (this.#refused.has(ch) && this.#refused.get(ch) === this.#tokens.current) continue;
      yield [ch, c];
    }
  }

  /** What transports follow: `[{ch, since}]`, since an id or null. */
  #channelList() {
    const out = [];
    for (const [ch, c] of this.#followed()) {
      const p = this.#resumePoint(c);
      out.push({ ch, since: p ? formatId(p) : null, durable: c.durable.size > 0 });
    }
    return out;
  }

  /**
   * The composite cursor for event streams and polls: each channel at its
   * resume point, in that point's own epoch — the epoch most share as the
   * prefix, the others named in theirs (one node: all share it, and the
   * cursor is the single-epoch form). A point in an epoch the channel has
   * left (a `since` from before a restart) is named as it is: the node
   * answers with the channel's `epoch` reset, as on `/ws`.
   */
  #cursor() {
    const points = [];
    for (const [ch, c] of this.#followed()) {
      const p = this.#resumePoint(c);
      if (p) points.push([ch, p]);
    }
    return encodeCursor(points);
  }

  #onMessage(msg) {
    const c = this.#channels.get(msg.ch);
    if (!c) return; // unsubscribed meanwhile
    if (msg.id === null) return this.#emitter.emit("message", msg); // ephemeral: no position
    const id = parseId(msg.id);
    if (!id) return this.#warn(new RingcastError(`bad message id ${msg.id} on ${msg.ch}`, { kind: "protocol" }));
    let taken = false;
    for (const [key, pos] of c.interests) {
      if (acceptsId(pos, id)) {
        c.interests.set(key, id);
        taken = true;
      }
    }
    if (!taken) {
      this.#stats.duplicates++;
      return;
    }
    if (!c.head || c.head.epoch !== id.epoch || id.seq > c.head.seq) c.head = id;
    this.#learnEpoch(msg.ch, c, id.epoch);
    this.#stats.messages++;
    this.#emitter.emit("message", msg);
  }

  #applyReset(r) {
    const c = this.#channels.get(r.ch);
    if (!c) return;
    let applied = false;
    for (const [key, pos] of c.interests) {
      const res = applyReset(pos, r);
      if (res.applied) {
        c.interests.set(key, res.pos);
        applied = true;
      }
    }
    if (r.reason === "epoch" && r.epoch && c.head && c.head.epoch !== r.epoch) c.head = { epoch: r.epoch, seq: 0 };
    // After the positions moved: those the reset was about are in its epoch.
    if (r.epoch) this.#learnEpoch(r.ch, c, r.epoch);
    if (applied) this.#emitter.emit("reset", r);
  }

  /**
   * Notes `epoch` as the channel's current one. An interest still at a
   * position in another epoch was not the channel's resume point when the
   * node answered (two `since`s from different epochs, before the channel's
   * was known), so the node could not reset it, and it would take nothing
   * more: the channel is subscribed again from it, and the node's `epoch`
   * reset moves it.
   */
  #learnEpoch(ch, c, epoch) {
    if (c.epoch === epoch) return;
    c.epoch = epoch;
    for (const pos of c.interests.values()) {
      if (pos && pos.epoch !== epoch) return void this.#scheduleSync(ch);
    }
  }

  /** Fills the position of interests that had none (from now), and notes
   * the channel's epoch. */
  #fill(ch, pos) {
    const c = this.#channels.get(ch);
    if (!c) return;
    let filled = false;
    for (const [key, p] of c.interests) {
      if (p === null) {
        c.interests.set(key, pos);
        filled = true;
      }
    }
    // Where this connection stands: in the channel's epoch now.
    if (!c.head || c.head.epoch !== pos.epoch) c.head = pos;
    this.#learnEpoch(ch, c, pos.epoch);
    if (filled) this.#emitter.emit("fill", { ch, pos });
  }

  /** A cursor an event stream or poll answer carried: every entry is its
   * channel's position in that channel's epoch. */
  #onCursor(text) {
    const cur = parseCursor(text);
    if (!cur) return;
    for (const [ch, pos] of cur.positions) this.#fill(ch, pos);
  }

  // ---- transports ------------------------------------------------------------------

  /** The link a transport reports through; silent once it is replaced. */
  #link(getT) {
    const live = () => {
      const t = getT();
      return !this.#closed && t && (t === this.#current || t === this.#probe);
    };
    return {
      opts: this.#opts,
      deps: this.#deps,
      urls: this.#urls,
      token: () => this.#tokens.current,
      channels: () => this.#channelList(),
      cursor: () => this.#cursor(),
      opened: () => live() && this.#onOpened(getT()),
      verified: () => live() && this.#onVerified(getT()),
      failed: (err) => live() && this.#onFailed(getT(), err),
      // Ephemeral messages have no id to de-duplicate: only the current
      // transport delivers them (a probe overlaps it).
      message: (m) => live() && !(m.id === null && getT() === this.#probe) && this.#onMessage(m),
      reset: (r) => live() && this.#applyReset(r),
      cursorSeen: (text) => live() && this.#onCursor(text),
      subscribedAt: (ch, id) => {
        const pos = parseId(id);
        if (live() && pos) this.#fill(ch, pos);
      },
      presenceEvent: (e) => live() && this.#emitter.emit("presence", e),
      unread: (u) => live() && this.#emitter.emit("unread", u),
      clientId: (id) => {
        if (!live() || id === this.#clientId) return;
        this.#clientId = id;
        this.#status();
      },
      rtt: (ms) => {
        if (!live()) return;
        this.#stats.rtt = ms;
        this.#status();
      },
      channelRefused: (ch, err, token) => {
        if (!live() || !this.#channels.has(ch)) return false;
        this.#refused.set(ch, token ?? null);
        err.channel = ch;
        err.transport ??= getT().name;
        this.#warn(err);
        this.#scheduleSync();
        return true;
      },
      warn: (err) => live() && this.#warn(err),
    };
  }

  #make(name) {
    let t = null;
    t = createTransport(name, this.#link(() => t));
    return t;
  }

  /** Transports in the order a round tries them. */
  #order() {
    const list = this.#opts.transports;
    let remembered = null;
    try {
      remembered = this.#deps.storage?.getItem(this.#storageKey) ?? null;
    } catch {
      // storage refused: no memory this session
    }
    const i = Math.max(0, list.indexOf(this.#resumeAt ?? remembered));
    this.#resumeAt = null;
    return [...list.slice(i), ...list.slice(0, i)];
  }

  #remember(name) {
    try {
      this.#deps.storage?.setItem(this.#storageKey, name);
    } catch {
      // storage full or refused
    }
  }

  #newRound() {
    const gen = ++this.#roundGen;
    this.#round = this.#order();
    if (!this.#tokens.isProvider) return this.#tryNext();
    // A connection attempt: the provider may hand over a fresh token.
    this.#tokens.obtain(this.#opts.requestTimeout).then(
      () => {
        if (gen === this.#roundGen) this.#tryNext();
      },
      (err) => {
        if (this.#closed || gen !== this.#roundGen) return;
        this.#lastError = err;
        this.#warn(err);
        this.#round = [];
        this.#scheduleRetry();
      },
    );
  }

  #tryNext() {
    if (this.#closed) return;
    const name = this.#round.shift();
    if (name === undefined) return this.#scheduleRetry();
    const t = this.#make(name);
    this.#current = t;
    t.open();
  }

  #scheduleRetry() {
    if (this.#closed) return;
    this.#current = null;
    this.#transportName = null;
    this.#state = this.#everOpen ? "reconnecting" : "connecting";
    this.#status();
    let delay = backoffDelay(this.#attempt++, this.#opts.backoff, this.#deps.random);
    const retryAfter = this.#lastError?.retryAfter;
    if (typeof retryAfter === "number") delay = Math.max(delay, Math.min(retryAfter * 1000, this.#opts.backoff.max));
    clearTimeout(this.#timers.retry);
    this.#timers.retry = setTimeout(() => {
      this.#timers.retry = null;
      this.#newRound();
    }, delay);
  }

  /** The network came back: skip the rest of the backoff. */
  #retryNow() {
    if (this.#closed || this.#timers.retry === null) return;
    clearTimeout(this.#timers.retry);
    this.#timers.retry = null;
    this.#newRound();
  }

  #onOpened(t) {
    if (t !== this.#current) return; // a probe must be verified to count
    if (this.#state === "open" && this.#transportName === t.name) return;
    if (this.#everOpen) this.#stats.reconnects++;
    this.#everOpen = true;
    this.#state = "open";
    this.#transportName = t.name;
    clearTimeout(this.#timers.healthy);
    this.#timers.healthy = setTimeout(() => {
      this.#attempt = 0;
    }, this.#opts.healthyAfter);
    this.#status();
    this.#scheduleProbe();
  }

  #onVerified(t) {
    if (t === this.#probe) return this.#switchTo(t);
    this.#round = [];
    this.#remember(t.name);
  }

  #onFailed(t, err) {
    if (t === this.#probe) {
      this.#probe = null;
      err.probe = true;
      this.#warn(err);
      this.#probeIndex++;
      return this.#probeNext();
    }
    this.#current = null;
    this.#lastError = err;
    this.#warn(err);
    clearTimeout(this.#timers.healthy);
    this.#stopProbe();
    if (isAuthFailure(err)) {
      // Every transport presents the same token (and page origin): another
      // would be refused too. Back off, get a token again (the next round
      // asks the provider), and retry this transport.
      this.#round = [];
      this.#resumeAt = t.name;
      return this.#scheduleRetry();
    }
    if (!t.isVerified && err.kind !== "network" && err.kind !== "unavailable") {
      // Refused or too slow before it ever worked: the next transport.
      if (this.#state === "open") {
        this.#state = this.#everOpen ? "reconnecting" : "connecting";
        this.#transportName = null;
        this.#status();
      }
      return this.#tryNext();
    }
    // Lost after it worked, or the node is unreachable: back off, then a
    // new round from the transport that worked.
    this.#round = [];
    this.#scheduleRetry();
  }

  #scheduleProbe() {
    clearTimeout(this.#timers.probe);
    this.#timers.probe = null;
    if (this.#closed || !this.#current || this.#probe) return;
    if (this.#opts.transports.indexOf(this.#current.name) <= 0) return;
    this.#timers.probe = setTimeout(() => {
      this.#timers.probe = null;
      this.#probeIndex = 0;
      this.#probeNext();
    }, this.#opts.probeInterval);
  }

  #probeNext() {
    if (this.#closed || !this.#current || this.#probe) return;
    const list = this.#opts.transports;
    const limit = list.indexOf(this.#current.name);
    while (this.#probeIndex < limit) {
      const name = list[this.#probeIndex];
      // An HTTP transport with nothing to follow cannot prove itself.
      if (name === "ws" || this.#channels.size > 0) return this.#startProbe(name);
      this.#probeIndex++;
    }
    this.#scheduleProbe();
  }

  /** Opens a probe — a connection attempt too: a provider is asked first. */
  #startProbe(name) {
    const current = this.#current;
    const go = () => {
      if (this.#closed || this.#current !== current || this.#probe) return;
      const t = this.#make(name);
      this.#probe = t;
      t.open();
    };
    if (!this.#tokens.isProvider) return go();
    this.#tokens.obtain(this.#opts.requestTimeout).then(go, (err) => {
      if (this.#closed || this.#current !== current || this.#probe) return;
      err.probe = true;
      this.#warn(err);
      this.#scheduleProbe();
    });
  }

  #stopProbe() {
    clearTimeout(this.#timers.probe);
    this.#timers.probe = null;
    this.#probe?.close();
    this.#probe = null;
  }

  #switchTo(t) {
    const old = this.#current;
    this.#probe = null;
    this.#current = t;
    old?.close();
    this.#remember(t.name);
    this.#transportName = t.name;
    this.#state = "open";
    this.#status();
    this.#scheduleProbe();
  }

  #scheduleSync(resubChannel) {
    if (resubChannel !== undefined) this.#resub.add(resubChannel);
    if (this.#timers.sync !== null || this.#closed) return;
    // Coalesce: subscribing to ten channels in a row re-opens a stream once.
    this.#timers.sync = setTimeout(() => {
      this.#timers.sync = null;
      const resub = this.#resub;
      this.#resub = new Set();
      this.#current?.sync(resub);
      this.#probe?.sync(resub);
    }, 0);
  }

  // ---- tokens ----------------------------------------------------------------------

  /**
   * The token changed (`setToken`, here or in another tab): present it now —
   * `refresh` on `/ws`, a re-opened stream on SSE; polls use it next time.
   * Channels refused under the old token are asked again, and a backoff
   * after a refused token is cut short: waiting serves nobody now.
   */
  tokenChanged() {
    if (this.#closed) return;
    this.#current?.tokenChanged?.();
    this.#probe?.tokenChanged?.();
    this.#scheduleSync();
    if (isAuthFailure(this.#lastError) || this.#lastError?.kind === "token") this.#retryNow();
  }

  // ---- requests --------------------------------------------------------------------

  async publish(ch, data, ephemeral) {
    if (this.#closed) throw closedError();
    const t = this.#current;
    if (t?.name === "ws" && t.isOpen) return t.publish(ch, data, ephemeral);
    const started = Date.now();
    const out = await httpPublish(this.#deps, this.#urls, this.#opts, this.#tokens, ch, data, ephemeral);
    this.#stats.rtt = Date.now() - started;
    this.#status();
    return out;
  }

  /** Acks `id` on `ch`: over the WebSocket when open, else `POST /ack`. */
  async ack(ch, id) {
    if (this.#closed) throw closedError();
    const t = this.#current;
    if (t?.name === "ws" && t.isOpen) return t.ack(ch, id, this.#opts.device);
    return httpAck(this.#deps, this.#urls, this.#opts, this.#tokens, ch, id);
  }

  async presence(ch) {
    if (this.#closed) throw closedError();
    const t = this.#current;
    if (t?.name === "ws" && t.isOpen) return t.presence(ch);
    const started = Date.now();
    const out = await httpPresence(this.#deps, this.#urls, this.#opts, this.#tokens, ch);
    this.#stats.rtt = Date.now() - started;
    this.#status();
    return out;
  }

  // ---- events and shutdown ---------------------------------------------------------

  #status() {
    const clientId = this.#transportName === "ws" ? this.#clientId : null;
    this.#emitter.emit("status", { state: this.#state, transport: this.#transportName, clientId, stats: this.stats });
  }

  #warn(err) {
    this.#emitter.emit("error", err);
  }

  close() {
    if (this.#closed) return;
    this.#closed = true;
    for (const t of Object.values(this.#timers)) clearTimeout(t);
    this.#deps.window?.removeEventListener?.("online", this.#onOnline);
    this.#deps.document?.removeEventListener?.("visibilitychange", this.#onVisibility);
    this.#current?.close();
    this.#probe?.close();
    this.#current = this.#probe = null;
    this.#state = "closed";
    this.#transportName = null;
    this.#status();
    this.#emitter.clear();
  }
}

function closedError() {
  return new RingcastError("the client is closed", { kind: "client-closed" });
}

/** Runs a Connection for this tab alone (`shared: false`). */
class LocalBackend {
  #conn;
  #sink;
  #opts;
  #tokens;

  constructor(sink, urls, opts, deps) {
    this.#sink = sink;
    this.#opts = opts;
    this.#tokens = new TokenSource(opts.token);
    this.#conn = new Connection(urls, opts, deps, { tokens: this.#tokens });
    wireConnection(this.#conn, sink);
    this.#conn.start();
  }

  setToken(source) {
    this.#tokens.set(source);
    this.#tokens.obtain(this.#opts.requestTimeout).then(
      () => this.#conn.tokenChanged(),
      (err) => this.#sink.error(err),
    );
  }

  subscribe(key, ch, pos, durable) {
    this.#sink.started(key, this.#conn.addInterest(key, ch, pos, durable));
  }

  ack(ch, id) {
    return this.#conn.ack(ch, id);
  }

  unsubscribe(key) {
    this.#conn.removeInterest(key);
  }

  publish(ch, data, ephemeral) {
    return this.#conn.publish(ch, data, ephemeral);
  }

  presence(ch) {
    return this.#conn.presence(ch);
  }

  stats() {
    return this.#conn.stats;
  }

  close() {
    this.#conn.close();
  }
}

/** Forwards a Connection's events to a sink (and optionally elsewhere). */
function wireConnection(conn, sink, also = () => {}) {
  conn.on("message", (m) => {
    sink.message(m);
    also("msg", { m });
  });
  conn.on("reset", (r) => {
    sink.reset(r);
    also("reset", { r });
  });
  conn.on("fill", (f) => {
    sink.fill(f);
    also("fill", { f });
  });
  conn.on("presence", (e) => {
    sink.presence(e);
    also("presence", { e });
  });
  conn.on("unread", (u) => {
    sink.unread(u);
    also("unread", { u });
  });
  conn.on("status", (s) => {
    sink.status(s);
    also("status", { s });
  });
  conn.on("error", (err) => {
    sink.error(err);
    also("error", { err: serializeError(err) });
  });
}

// =============================================================================
// 7. Leader election: one connection per browser
// =============================================================================
//
// Tabs of one origin that connect to the same node with the same transport
// list share ONE connection (and the leader's token). Each tab holds a lock
// of its own for its life (`<key>:tab:<id>`) and queues for the leader lock
// (`<key>:leader`); the Web Locks API grants it to one tab at a time and
// releases it when that tab closes or crashes — no heartbeats, no timeouts.
//
// The leader runs the Connection, with an interest per subscription of
// every tab, and relays over a BroadcastChannel: messages, resets, position
// fills, presence events, status and errors. Followers send it
// subscriptions (`sub`, answered `subok` with the start of a "from now"
// subscription), `unsub`, requests (`req`/`res`: publish, presence) and
// `bye`. A leader learns that a follower is gone by queueing for its tab
// lock.
//
// Every tab keeps its own positions and de-duplicates, so when the leader
// goes, the next one — whose Connection starts empty — asks the others to
// announce their subscriptions with their positions (`leader`), and every
// channel resumes from the oldest: no loss, and no duplicate reaches a
// handler.
//
// Requests to a leader that vanishes are answered as follows: a presence
// query is asked again of the next leader; a publish is rejected (the old
// leader may or may not have sent it, and publishing twice is worse). With
// no leader at all, a follower publishes and queries over HTTP itself.
//
// Tokens: the connection presents the leader's. `setToken` in any tab
// obtains the token (calling a provider there) and sends the string to
// every tab (`token`): the leader presents it at once, the others keep it,
// so whichever leads next starts with the newest. Tokens are not part of
// the lock name: each tab usually has a JWT of its own for the same user,
// and keying on it would give every tab its own connection. A provider
// function cannot cross a BroadcastChannel: the leader asks its own when it
// needs a fresh token.

class SharedBackend {
  #sink;
  #urls;
  #opts;
  #deps;
  #key;
  #tab = randomId();
  #bc;
  #leaderId = null;
  #conn = null;
  #closed = false;
  #tabLockAbort = new AbortController();
  #leaderLockAbort = new AbortController();
  #releaseTab = null;
  #releaseLeader = null;
  /** This tab's subscriptions: key -> ch (positions come from the sink). */
  #local = new Map();
  /** Keys of this tab's durable subscriptions. */
  #durable = new Set();
  /** Followers watched by this leader: tab -> AbortController. */
  #watched = new Map();
  /** Requests sent to a leader: rid -> {op, ch, data, ephemeral, leader, resolve, reject, timer}. */
  #requests = new Map();
  #rid = 0;
  /** A connection was open once: a new leader is reconnecting, not connecting. */
  #sawOpen = false;
  #tokens;

  constructor(sink, urls, opts, deps) {
    this.#sink = {
      ...sink,
      status: (s) => {
        if (s.state === "open") this.#sawOpen = true;
        sink.status(s);
      },
    };
    this.#urls = urls;
    this.#opts = opts;
    this.#deps = deps;
    this.#tokens = new TokenSource(opts.token);
    this.#key = `ringcast:${urls.base}|${opts.transports.join(",")}`;
    this.#bc = new deps.BroadcastChannel(this.#key);
    this.#bc.onmessage = (ev) => {
      try {
        this.#onMessage(ev.data);
      } catch (err) {
        sink.error(new RingcastError(`shared: ${err.message}`, { kind: "protocol", cause: err }));
      }
    };
    this.#sink.status({ state: "connecting", transport: null, stats: null });
    this.#start();
  }

  #lockError(err) {
    if (this.#closed || err?.name === "AbortError") return;
    this.#sink.error(new RingcastError(`shared: lock failed: ${err?.message ?? err}`, { kind: "unsupported", cause: err }));
  }

  #start() {
    const locks = this.#deps.locks;
    // The tab lock first: a leader must never find it free while we live.
    locks
      .request(`${this.#key}:tab:${this.#tab}`, { signal: this.#tabLockAbort.signal }, () => {
        if (this.#closed) return undefined;
        this.#post({ t: "hello" });
        locks
          .request(`${this.#key}:leader`, { signal: this.#leaderLockAbort.signal }, () => {
            if (this.#closed) return undefined;
            this.#lead();
            return new Promise((resolve) => (this.#releaseLeader = resolve));
          })
          .catch((err) => this.#lockError(err));
        return new Promise((resolve) => (this.#releaseTab = resolve));
      })
      .catch((err) => this.#lockError(err));
  }

  #post(msg) {
    if (this.#closed && msg.t !== "bye" && msg.t !== "leaving") return;
    try {
      this.#bc.postMessage({ ...msg, from: this.#tab });
    } catch (err) {
      this.#sink.error(new RingcastError(`shared: could not relay: ${err.message}`, { kind: "protocol", cause: err }));
    }
  }

  get #leading() {
    return this.#conn !== null;
  }

  // ---- as leader -------------------------------------------------------------------

  #lead() {
    this.#leaderId = this.#tab;
    const conn = new Connection(this.#urls, this.#opts, this.#deps, { resumed: this.#sawOpen, tokens: this.#tokens });
    this.#conn = conn;
    // Relayed only while it is this tab's connection: its own shutdown
    // ("closed") is not the followers' state.
    wireConnection(conn, this.#sink, (t, body) => this.#conn === conn && this.#post({ t, ...body }));
    for (const [key, ch] of this.#local) {
      this.#sink.started(key, this.#conn.addInterest(`${this.#tab}/${key}`, ch, this.#sink.position(key), this.#durable.has(key)));
    }
    // Requests that were waiting on the previous leader.
    for (const [rid, r] of this.#requests) {
      this.#requests.delete(rid);
      clearTimeout(r.timer);
      if (r.op === "presence") this.#conn.presence(r.ch).then(r.resolve, r.reject);
      else if (r.op === "ack") this.#conn.ack(r.ch, r.data).then(r.resolve, r.reject);
      else r.reject(leaderGone(r.ch));
    }
    this.#conn.start();
    this.#post({ t: "leader", s: this.#statusOf() });
  }

  #statusOf() {
    return { state: this.#conn.state, transport: this.#conn.transport, clientId: this.#conn.clientId, stats: this.#conn.stats };
  }

  /** Queues for a follower's tab lock: granted when that tab is gone. */
  #watch(tab) {
    if (tab === this.#tab || this.#watched.has(tab)) return;
    const ctl = new AbortController();
    this.#watched.set(tab, ctl);
    this.#deps.locks
      .request(`${this.#key}:tab:${tab}`, { signal: ctl.signal }, () => {
        this.#dropTab(tab);
      })
      .catch((err) => this.#lockError(err));
  }

  #dropTab(tab) {
    this.#watched.get(tab)?.abort();
    this.#watched.delete(tab);
    this.#conn?.removeInterestsOf(`${tab}/`);
  }

  #leaderHandle(msg) {
    switch (msg.t) {
      case "hello":
        this.#post({ t: "leader", to: msg.from, s: this.#statusOf() });
        break;
      case "sub": {
        this.#watch(msg.from);
        const start = this.#conn.addInterest(`${msg.from}/${msg.key}`, msg.ch, parseId(msg.pos), msg.durable === true);
        this.#post({ t: "subok", to: msg.from, key: msg.key, start });
        break;
      }
      case "unsub":
        this.#conn.removeInterest(`${msg.from}/${msg.key}`);
        break;
      case "req": {
        const answer = (ok, value) => this.#post({ t: "res", to: msg.from, rid: msg.rid, ok, value });
        const p = msg.op === "publish" ? this.#conn.publish(msg.ch, msg.data, msg.ephemeral) : msg.op === "ack" ? this.#conn.ack(msg.ch, msg.data) : this.#conn.presence(msg.ch);
        p.then(
          (v) => answer(true, v),
          (err) => answer(false, serializeError(err)),
        );
        break;
      }
      case "bye":
        this.#dropTab(msg.from);
        break;
      default:
        break;
    }
  }

  // ---- as follower -----------------------------------------------------------------

  #announce() {
    for (const [key, ch] of this.#local) this.#sendSub(key, ch);
  }

  #sendSub(key, ch) {
    const pos = this.#sink.position(key);
    this.#post({ t: "sub", to: this.#leaderId, key, ch, pos: pos ? formatId(pos) : null, durable: this.#durable.has(key) });
  }

  #followerHandle(msg) {
    if (msg.t === "leader") {
      if (msg.from === this.#leaderId && msg.to && msg.to !== this.#tab) return;
      const changed = msg.from !== this.#leaderId;
      this.#leaderId = msg.from;
      if (changed || msg.to === this.#tab) {
        this.#announce();
        for (const [rid, r] of this.#requests) {
          if (r.leader === msg.from) continue;
          if (r.op === "presence" || r.op === "ack") {
            // Asked again of the next leader: a query, and an ack (acking
            // twice is harmless: acks are cumulative).
            r.leader = msg.from;
            this.#post({ t: "req", to: msg.from, rid, op: r.op, ch: r.ch, data: r.data });
          } else {
            this.#settle(rid, false, leaderGone(r.ch));
          }
        }
      }
      if (msg.s) this.#sink.status(msg.s);
      return;
    }
    if (msg.from !== this.#leaderId) return; // only the leader speaks
    if (msg.to && msg.to !== this.#tab) return;
    switch (msg.t) {
      case "msg":
        this.#sink.message(msg.m);
        break;
      case "reset":
        this.#sink.reset(msg.r);
        break;
      case "fill":
        this.#sink.fill(msg.f);
        break;
      case "presence":
        this.#sink.presence(msg.e);
        break;
      case "unread":
        this.#sink.unread(msg.u);
        break;
      case "status":
        this.#sink.status(msg.s);
        break;
      case "error":
        this.#sink.error(deserializeError(msg.err));
        break;
      case "subok":
        this.#sink.started(msg.key, msg.start);
        break;
      case "res":
        this.#settle(msg.rid, msg.ok, msg.ok ? msg.value : deserializeError(msg.value));
        break;
      case "leaving":
        this.#leaderId = null;
        this.#sink.status({ state: "reconnecting", transport: null, stats: null });
        break;
      default:
        break;
    }
  }

  #onMessage(msg) {
    if (this.#closed || !msg || typeof msg !== "object" || msg.from === this.#tab) return;
    if (msg.t === "token") {
      // From any tab, for every tab: see "Tokens" above.
      this.#tokens.adopt(typeof msg.token === "string" ? msg.token : null);
      this.#conn?.tokenChanged();
      return;
    }
    if (this.#leading) {
      if (msg.to && msg.to !== this.#tab) return;
      this.#leaderHandle(msg);
    } else {
      this.#followerHandle(msg);
    }
  }

  #request(op, ch, data, ephemeral) {
    if (this.#closed) return Promise.reject(closedError());
    if (this.#leading) return op === "publish" ? this.#conn.publish(ch, data, ephemeral) : op === "ack" ? this.#conn.ack(ch, data) : this.#conn.presence(ch);
    if (this.#leaderId === null) {
      // No leader to ask: do it over HTTP from here.
      if (op === "ack") return httpAck(this.#deps, this.#urls, this.#opts, this.#tokens, ch, data);
      return op === "publish"
        ? httpPublish(this.#deps, this.#urls, this.#opts, this.#tokens, ch, data, ephemeral)
        : httpPresence(this.#deps, this.#urls, this.#opts, this.#tokens, ch);
    }
    return new Promise((resolve, reject) => {
      const rid = `${this.#tab}:${++this.#rid}`;
      const timer = setTimeout(() => {
        this.#settle(rid, false, new RingcastError(`${op} of ${ch}: no answer from the leader tab within ${this.#opts.requestTimeout} ms`, { kind: "timeout" }));
      }, this.#opts.requestTimeout);
      this.#requests.set(rid, { op, ch, data: op === "ack" ? data : undefined, resolve, reject, timer, leader: this.#leaderId });
      this.#post({ t: "req", to: this.#leaderId, rid, op, ch, data, ephemeral });
    });
  }

  #settle(rid, ok, value) {
    const r = this.#requests.get(rid);
    if (!r) return;
    this.#requests.delete(rid);
    clearTimeout(r.timer);
    if (ok) r.resolve(value);
    else r.reject(value);
  }

  // ---- backend API -----------------------------------------------------------------

  subscribe(key, ch, pos, durable) {
    this.#local.set(key, ch);
    if (durable) this.#durable.add(key);
    if (this.#leading) {
      this.#sink.started(key, this.#conn.addInterest(`${this.#tab}/${key}`, ch, pos, durable));
    } else if (this.#leaderId !== null) {
      this.#sendSub(key, ch);
    } // else: announced when a leader speaks
  }

  unsubscribe(key) {
    this.#local.delete(key);
    this.#durable.delete(key);
    if (this.#leading) this.#conn.removeInterest(`${this.#tab}/${key}`);
    else if (this.#leaderId !== null) this.#post({ t: "unsub", to: this.#leaderId, key });
  }

  publish(ch, data, ephemeral) {
    return this.#request("publish", ch, data, ephemeral);
  }

  presence(ch) {
    return this.#request("presence", ch);
  }

  ack(ch, id) {
    return this.#request("ack", ch, id);
  }

  setToken(source) {
    this.#tokens.set(source);
    this.#tokens.obtain(this.#opts.requestTimeout).then(
      (token) => {
        if (this.#closed) return;
        this.#post({ t: "token", token });
        this.#conn?.tokenChanged();
      },
      (err) => this.#sink.error(err),
    );
  }

  /** The leader's own statistics, live; a follower has the last relayed. */
  stats() {
    return this.#conn?.stats ?? null;
  }

  close() {
    if (this.#closed) return;
    if (this.#leading) {
      const conn = this.#conn;
      this.#conn = null;
      conn.close();
      this.#post({ t: "leaving" });
    } else {
      this.#post({ t: "bye" });
    }
    this.#closed = true;
    for (const ctl of this.#watched.values()) ctl.abort();
    this.#watched.clear();
    for (const rid of [...this.#requests.keys()]) this.#settle(rid, false, closedError());
    this.#leaderLockAbort.abort();
    this.#tabLockAbort.abort();
    this.#releaseLeader?.();
    this.#releaseTab?.();
    try {
      this.#bc.close();
    } catch {
      // already closed
    }
  }
}

function leaderGone(ch) {
  return new RingcastError(`publish to ${ch}: the leader tab went away before answering; it may or may not have been published`, { kind: "closed" });
}

/** Errors cross the BroadcastChannel as plain objects. */
function serializeError(err) {
  const out = { message: err?.message ?? String(err) };
  for (const k of ["kind", ...ERROR_PROPS]) if (err?.[k] !== undefined) out[k] = err[k];
  return out;
}

function deserializeError(e) {
  return new RingcastError(e?.message ?? "unknown error", e ?? {});
}

// =============================================================================
// 8. Client: the public API
// =============================================================================

/**
 * One subscription: a handler for a channel, with its own position. Its
 * position moves BEFORE the handler runs, so a handler that throws (the
 * exception goes to the client's `error` event) neither makes the message
 * come again nor loses the next one.
 */
export class Subscription {
  #client;
  /** @internal */ _key;
  /** @internal */ _handler;
  /** @internal */ _pos;
  /** @internal "From now" and waiting for the start position. */ _pending;
  /** @internal Durable: messages whose handlers have not finished, in order: {id, done}. */ _inflight = [];
  /** @internal Durable: the last id whose handler (and every earlier one) finished. */ _handled = null;
  /** @internal Durable: the id whose handler failed; auto-ack stops below it. */ _held = null;
  #active = true;
  /** Whether the node keeps a cursor for this subscription (`{durable: true}`). */
  durable;
  /** Whether handled messages are acked automatically (durable only). */
  autoAck;
  /** Messages after the node's cursor, from the `subscribed` reply (`/ws`)
   * and every ack's answer; `null` until known. */
  unread = null;
  /** The node's cursor for this channel (the last id acked), when known. */
  cursor = null;

  /** @internal */
  constructor(client, key, ch, handler, pos, durable = false, autoAck = true) {
    this.#client = client;
    this._key = key;
    this.ch = ch;
    this._handler = handler;
    this._pos = pos;
    this._pending = pos === null;
    this.durable = durable;
    this.autoAck = durable && autoAck;
  }

  /** Acks `id` (and so everything before it) on this channel now. */
  ack(id) {
    return this.#client.ack(this.ch, id);
  }

  /** The id of the last message delivered (or the `since` it started from):
   * store it to resume after a reload with `{since: sub.lastId}`. */
  get lastId() {
    return this._pos ? formatId(this._pos) : null;
  }

  /** False once unsubscribed (or the client closed). */
  get active() {
    return this.#active;
  }

  unsubscribe() {
    if (!this.#active) return;
    this.#active = false;
    this.#client._drop(this);
  }

  /** @internal */
  _end() {
    this.#active = false;
  }
}

/**
 * A connection to a ringcast node. Create it with `connect(url, options)`.
 * Events: `state`, `transport`, `reset`, `presence`, `unread`, `error`.
 */
export class Client {
  #emitter;
  #backend;
  #subs = new Map();
  #byChannel = new Map();
  #nextKey = 0;
  #state = "connecting";
  #transport = null;
  #clientId = null;
  /** The last transport announced: reconnecting on the same one is no news. */
  #announced = null;
  #stats = { reconnects: 0, rtt: null, messages: 0, duplicates: 0 };
  #closed = false;
  #opts;
  /** Auto-acks waiting, per channel: {id: Position|null, timer, sending}. */
  #acks = new Map();
  /** The scope of this client; `shared` tells whether tabs share a connection. */
  shared;

  constructor(url, options = {}) {
    const opts = normalizeOptions(options);
    this.#opts = opts;
    const deps = environment(options);
    const urls = new Endpoints(normalizeBase(url));
    this.#emitter = new Emitter((event, err) => this.#listenerFailed(event, err));
    const canShare = typeof deps.BroadcastChannel === "function" && deps.locks && typeof deps.locks.request === "function";
    this.shared = (options.shared ?? true) && Boolean(canShare);
    const sink = {
      message: (m) => this.#deliver(m),
      reset: (r) => this.#reset(r),
      fill: (f) => this.#fill(f),
      presence: (e) => this.#emit("presence", e),
      unread: (u) => this.#unread(u),
      status: (s) => this.#status(s),
      error: (err) => this.#emit("error", err),
      started: (key, pos) => this.#started(key, pos),
      position: (key) => this.#subs.get(key)?._pos ?? null,
    };
    this.#backend = this.shared ? new SharedBackend(sink, urls, opts, deps) : new LocalBackend(sink, urls, opts, deps);
  }

  /** `"connecting" | "open" | "reconnecting" | "closed"`. */
  get state() {
    return this.#state;
  }

  /** The transport in use (`"ws" | "sse" | "longpoll" | "poll"`), or null. */
  get transport() {
    return this.#transport;
  }

  /** This connection's client id as presence lists and `presence` events
   * name it (16 hex digits), while on the WebSocket; otherwise null. In a
   * shared tab, the leader's connection: the tabs are one client. */
  get clientId() {
    return this.#clientId;
  }

  /** `{reconnects, rtt, messages, duplicates}` of the connection (the
   * leader's, in a shared tab). `rtt`: ms of the last ping on ws, else of
   * the last short poll, stream open, publish or presence query. */
  get stats() {
    return this.#backend.stats?.() ?? { ...this.#stats };
  }

  /**
   * Follows `ch`: `handler({ch, id, data, ephemeral?})` runs for every
   * message, in order, once. `since`: a message id to resume after (or
   * `<epoch>-0` for all the channel's history); without it, from now.
   */
  subscribe(ch, handler, options = {}) {
    if (this.#closed) throw closedError();
    if (!isChannelName(ch)) throw new TypeError(`invalid channel name ${JSON.stringify(ch)}: 1–128 of A-Z a-z 0-9 _ - . : @`);
    if (typeof handler !== "function") throw new TypeError("subscribe(ch, handler): handler must be a function");
    let pos = null;
    if (options.since != null) {
      pos = parseId(options.since);
      if (!pos) throw new TypeError(`invalid since ${JSON.stringify(options.since)}: expected <12 hex digits>-<seq>`);
    }
    const durable = Boolean(options.durable);
    // The device is the browser's, for every channel (an event stream or a
    // poll carries one for all of its channels): a connect() option.
    if (options.device !== undefined && options.device !== this.#opts.device) {
      throw new TypeError(`subscribe: device ${JSON.stringify(options.device)} differs from the client's (${JSON.stringify(this.#opts.device)}): the device is a connect() option`);
    }
    const key = String(++this.#nextKey);
    const sub = new Subscription(this, key, ch, handler, pos, durable, options.autoAck ?? true);
    this.#subs.set(key, sub);
    if (!this.#byChannel.has(ch)) this.#byChannel.set(ch, new Set());
    this.#byChannel.get(ch).add(sub);
    this.#backend.subscribe(key, ch, pos, durable);
    return sub;
  }

  /**
   * Acks `id` on `ch` now (cumulative: everything before it too) — for
   * durable subscriptions with `autoAck: false`, or to move past a message
   * whose handler failed. Over the WebSocket when that is the transport,
   * else `POST /ack/{ch}`. Resolves `{ch, cursor, unread}`.
   */
  async ack(ch, id) {
    try {
      if (this.#closed) throw closedError();
      if (!isChannelName(ch)) throw new TypeError(`invalid channel name ${JSON.stringify(ch)}`);
      const pos = parseId(id);
      if (!pos) throw new TypeError(`invalid id ${JSON.stringify(id)}: expected <12 hex digits>-<seq>`);
      // Acking past a message whose handler failed: auto-ack carries on from here.
      for (const sub of this.#byChannel.get(ch) ?? []) {
        if (!sub._held || sub._held.epoch !== pos.epoch || pos.seq < sub._held.seq) continue;
        sub._held = null;
        if (!sub._handled || sub._handled.epoch !== pos.epoch || sub._handled.seq < pos.seq) sub._handled = pos;
      }
      const answer = await this.#backend.ack(ch, formatId(pos));
      this.#acked(ch, answer);
      return answer;
    } catch (err) {
      throw this.#requestFailed(err);
    }
  }

  /**
   * Publishes `data` (a string, or bytes) to `ch`; resolves `{id}` (`null`
   * for ephemeral messages). Over the WebSocket when that is the transport,
   * else `POST /pub/{ch}`. Never retried: a publish whose answer was lost
   * may have happened.
   */
  async publish(ch, data, options = {}) {
    try {
      if (this.#closed) throw closedError();
      if (!isChannelName(ch)) throw new TypeError(`invalid channel name ${JSON.stringify(ch)}`);
      return await this.#backend.publish(ch, toPayload(data), Boolean(options.ephemeral));
    } catch (err) {
      throw this.#requestFailed(err);
    }
  }

  /** The clients of multiplexed connections subscribed to `ch`. */
  async presence(ch) {
    try {
      if (this.#closed) throw closedError();
      if (!isChannelName(ch)) throw new TypeError(`invalid channel name ${JSON.stringify(ch)}`);
      return await this.#backend.presence(ch);
    } catch (err) {
      throw this.#requestFailed(err);
    }
  }

  /**
   * Replaces the token (a string, or a provider function; `null`: none)
   * without dropping anything: a provider is called at once; on `/ws` the
   * node gets it as `refresh`, an event stream is re-opened with it from the
   * current positions (make-before-break: no loss, no repeat), polls and
   * requests use it next. A connection backing off after a refused token
   * retries at once. In a shared tab it reaches the leader (and every tab).
   * Failures of the provider go to the `error` event (`kind: "token"`).
   */
  setToken(token) {
    if (this.#closed) throw closedError();
    checkToken(token, "setToken(token): token");
    this.#backend.setToken(token);
  }

  /** Listens to `state`, `transport`, `reset`, `presence`, `unread` or `error`. */
  on(event, fn) {
    this.#emitter.on(event, fn);
    return this;
  }

  off(event, fn) {
    this.#emitter.off(event, fn);
    return this;
  }

  /** Ends everything: the connection (or this tab's part in the shared
   * one), the leader lock, every subscription. Later calls reject. */
  close() {
    if (this.#closed) return;
    // Pending acks go first (the WebSocket sends them before it closes; an
    // HTTP ack is a keepalive request, which outlives the page).
    for (const ch of [...this.#acks.keys()]) this.#flushAck(ch);
    this.#closed = true;
    this.#backend.close();
    for (const sub of this.#subs.values()) sub._end();
    this.#subs.clear();
    this.#byChannel.clear();
    this.#transport = null;
    this.#clientId = null;
    this.#setState("closed");
    this.#emitter.clear();
  }

  // ---- from the backend ------------------------------------------------------------

  /** @internal */
  _drop(sub) {
    if (!this.#subs.delete(sub._key)) return;
    if (sub.durable && this.#acks.has(sub.ch)) this.#flushAck(sub.ch);
    const set = this.#byChannel.get(sub.ch);
    set?.delete(sub);
    if (set?.size === 0) this.#byChannel.delete(sub.ch);
    if (!this.#closed) this.#backend.unsubscribe(sub._key);
  }

  #started(key, pos) {
    const sub = this.#subs.get(key);
    if (!sub || !sub._pending) return;
    sub._pending = false;
    if (!sub._pos && pos) sub._pos = { epoch: pos.epoch, seq: pos.seq };
  }

  #deliver(m) {
    if (this.#closed) return;
    const subs = this.#byChannel.get(m.ch);
    if (!subs) return;
    const id = m.id === null ? null : parseId(m.id);
    if (m.id !== null && !id) return;
    for (const sub of [...subs]) {
      if (!sub.active || sub._pending) continue;
      if (id) {
        if (!acceptsId(sub._pos, id)) continue;
        sub._pos = id; // before the handler: see Subscription
      }
      this.#call(sub, m);
    }
  }

  #call(sub, m) {
    const entry = sub.autoAck && m.id !== null ? { id: parseId(m.id), done: false } : null;
    if (entry) sub._inflight.push(entry);
    try {
      const r = sub._handler(m);
      if (r && typeof r.then === "function") {
        r.then(
          () => this.#handled(sub, entry),
          (err) => this.#handlerFailed(sub, m, err, entry),
        );
      } else {
        this.#handled(sub, entry);
      }
    } catch (err) {
      this.#handlerFailed(sub, m, err, entry);
    }
  }

  /** A durable subscription's handler finished with `entry`: the handled
   * point moves over every finished message at the front, and an ack of it
   * is queued. */
  #handled(sub, entry) {
    if (!entry || !sub.active) return;
    entry.done = true;
    let moved = false;
    while (sub._inflight.length && sub._inflight[0].done) {
      const e = sub._inflight.shift();
      if (sub._held && !(e.id.epoch === sub._held.epoch && e.id.seq < sub._held.seq)) continue;
      sub._handled = e.id;
      moved = true;
    }
    if (moved) this.#queueAck(sub.ch);
  }

  /** The id every auto-acking durable subscription of `ch` has handled
   * (the oldest of theirs; none in an epoch other than the newest). */
  #ackPoint(ch) {
    let p = null;
    let any = false;
    for (const sub of this.#byChannel.get(ch) ?? []) {
      if (!sub.autoAck) continue;
      if (!sub._handled) return null;
      p = any ? olderPosition(p, sub._handled) : sub._handled;
      any = true;
    }
    return p;
  }

  // ---- acks: at most one per channel per ackDelay ------------------------------------

  #queueAck(ch, delay = this.#opts.ackDelay) {
    let a = this.#acks.get(ch);
    if (!a) this.#acks.set(ch, (a = { timer: null, sending: false, sent: null }));
    if (a.timer === null && !a.sending) a.timer = setTimeout(() => this.#flushAck(ch), delay);
  }

  #flushAck(ch) {
    const a = this.#acks.get(ch);
    if (!a) return;
    clearTimeout(a.timer);
    a.timer = null;
    const p = this.#ackPoint(ch);
    if (!p || (a.sent && a.sent.epoch === p.epoch && a.sent.seq >= p.seq) || this.#closed) {
      if (!a.sending) this.#acks.delete(ch);
      return;
    }
    a.sending = true;
    this.#backend.ack(ch, formatId(p)).then(
      (answer) => {
        a.sending = false;
        a.failures = 0;
        a.sent = p;
        this.#acked(ch, answer);
        this.#afterAck(ch, a);
      },
      (err) => {
        a.sending = false;
        if (this.#closed) return;
        const e = err instanceof RingcastError ? err : new RingcastError(err?.message ?? String(err), { kind: "request", cause: err });
        e.channel ??= ch;
        if (FINAL_ACK_CODES.has(e.code) || [400, 401, 403, 404, 409].includes(e.status)) {
          this.#emit("error", e); // refused: reported, and not sent again
          a.sent = p;
          return this.#afterAck(ch, a);
        }
        // `unavailable` (the node's store; reported, with retryAfter) is
        // retried after the wait the node asked for. A connection lost, a
        // network failure, a timeout — the connection's own trouble, which
        // it reports — are retried quietly, backing off to 30 s.
        let wait;
        if (e.kind === "unavailable" || e.code === "unavailable") {
          this.#emit("error", e);
          wait = typeof e.retryAfter === "number" ? e.retryAfter * 1000 : 1000;
        } else {
          a.failures = (a.failures ?? 0) + 1;
          wait = Math.min(30000, 1000 * 2 ** (a.failures - 1));
        }
        if (!this.#acks.has(ch)) this.#acks.set(ch, a);
        if (a.timer === null) a.timer = setTimeout(() => this.#flushAck(ch), wait);
      },
    );
  }

  /** After an answer: handled meanwhile → another ack after the delay. */
  #afterAck(ch, a) {
    if (this.#closed) return;
    const p = this.#ackPoint(ch);
    if (p && !(a.sent && a.sent.epoch === p.epoch && a.sent.seq >= p.seq)) {
      if (a.timer === null) a.timer = setTimeout(() => this.#flushAck(ch), this.#opts.ackDelay);
    } else if (a.timer === null) {
      this.#acks.delete(ch);
    }
  }

  #acked(ch, answer) {
    if (!answer) return;
    this.#unread({ ch, cursor: answer.cursor ?? null, unread: answer.unread ?? null });
  }

  #unread(u) {
    if (this.#closed || !u) return;
    let any = false;
    for (const sub of this.#byChannel.get(u.ch) ?? []) {
      if (!sub.durable) continue;
      any = true;
      if (typeof u.unread === "number") sub.unread = u.unread;
      if (typeof u.cursor === "string") sub.cursor = u.cursor;
    }
    if (any) this.#emit("unread", { ch: u.ch, unread: u.unread ?? null, cursor: u.cursor ?? null });
  }

  #handlerFailed(sub, m, err, entry = null) {
    if (entry) {
      // Not acked, nor anything after it (acks are cumulative): it comes
      // again when the channel is next followed from the node's cursor.
      if (!sub._held) sub._held = entry.id;
      entry.done = true;
      this.#handled(sub, entry);
    }
    this.#emit("error", new RingcastError(`handler for ${sub.ch} threw on ${m.id ?? "an ephemeral message"}: ${err?.message ?? err}`, { kind: "handler", cause: err }));
  }

  #reset(r) {
    const subs = this.#byChannel.get(r.ch);
    if (!subs) return;
    let report = null;
    for (const sub of subs) {
      if (sub._pending) continue;
      const res = applyReset(sub._pos, r);
      if (res.applied) {
        sub._pos = res.pos;
        report ??= res;
      }
    }
    if (r.reason === "epoch" && r.epoch) {
      // Ids of the old epoch cannot be acked any more (`stale_id`).
      for (const sub of subs) {
        if (sub._handled && sub._handled.epoch !== r.epoch) sub._handled = null;
        if (sub._held && sub._held.epoch !== r.epoch) sub._held = null;
        sub._inflight = sub._inflight.filter((e) => e.id.epoch === r.epoch);
      }
    }
    if (report) this.#emit("reset", { ch: r.ch, reason: r.reason, missed: report.missed, since: r.sinceId });
  }

  #fill({ ch, pos }) {
    for (const sub of this.#byChannel.get(ch) ?? []) {
      if (!sub._pending && sub._pos === null) sub._pos = { epoch: pos.epoch, seq: pos.seq };
    }
  }

  #status(s) {
    if (this.#closed) return;
    if (s.stats) this.#stats = { ...s.stats };
    if (s.clientId !== undefined) this.#clientId = s.clientId;
    if (s.transport !== undefined) this.#transport = s.transport;
    if (s.transport && s.transport !== this.#announced) {
      this.#announced = s.transport;
      this.#emit("transport", s.transport);
    }
    this.#setState(s.state);
  }

  #setState(state) {
    if (state === this.#state) return;
    this.#state = state;
    this.#emit("state", state);
  }

  #emit(event, arg) {
    this.#emitter.emit(event, arg);
  }

  #requestFailed(err) {
    const e = err instanceof RingcastError || err instanceof TypeError ? err : new RingcastError(err?.message ?? String(err), { kind: "request", cause: err });
    if (e.kind !== "client-closed") this.#emit("error", e);
    return e;
  }

  #listenerFailed(event, err) {
    const e = new RingcastError(`a "${event}" listener threw: ${err?.message ?? err}`, { kind: "handler", cause: err });
    if (event !== "error" && this.#emitter.has("error")) this.#emitter.emit("error", e);
    else globalThis.console?.error?.(e); // an error listener that throws has nowhere else to go
  }
}

/** Validates and completes the options. */
function normalizeOptions(o) {
  const num = (name, min = 0) => {
    const v = o[name] ?? DEFAULTS[name];
    if (typeof v !== "number" || !Number.isFinite(v) || v < min) throw new TypeError(`option ${name} must be a number ≥ ${min}`);
    return v;
  };
  const transports = [...new Set(o.transports ?? DEFAULTS.transports)];
  if (transports.length === 0) throw new TypeError("option transports must name at least one transport");
  for (const t of transports) if (!TRANSPORTS.includes(t)) throw new TypeError(`unknown transport ${JSON.stringify(t)}: expected ${TRANSPORTS.join(", ")}`);
  const backoff = { ...DEFAULTS.backoff, ...(o.backoff ?? {}) };
  if (!(backoff.min > 0) || !(backoff.max >= backoff.min)) throw new TypeError("option backoff needs 0 < min ≤ max");
  checkToken(o.token, "option token");
  const device = o.device ?? null;
  if (device !== null && (typeof device !== "string" || !DEVICE_RE.test(device))) throw new TypeError("option device must be 1–64 of A-Z a-z 0-9 _ - .");
  return {
    transports,
    token: o.token ?? null,
    backoff,
    pollInterval: num("pollInterval", 1),
    openTimeout: num("openTimeout", 1),
    probeInterval: num("probeInterval", 1),
    pingInterval: num("pingInterval", 1),
    pingTimeout: num("pingTimeout", 1),
    sseTimeout: num("sseTimeout", 1),
    longPollTimeout: num("longPollTimeout", 1000),
    requestTimeout: num("requestTimeout", 1),
    healthyAfter: num("healthyAfter", 0),
    ackDelay: num("ackDelay", 0),
    device,
  };
}

/**
 * Connects to the ringcast node at `url` (`http(s)://host:port`, optionally
 * with a path prefix; omitted, the node this module was loaded from).
 */
export function connect(url, options = {}) {
  return new Client(url, options);
}

export default connect;
