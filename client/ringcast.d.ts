// Type declarations for ringcast.js, the browser client of ringcast.
// docs/client.md is the guide; docs/protocol.md the wire reference.

/** Transport names, best first. */
export type TransportName = "ws" | "sse" | "longpoll" | "poll";

/** Connection states. */
export type State = "connecting" | "open" | "reconnecting" | "closed";

/** A message as handlers receive it. */
export interface Message {
  /** The channel. */
  ch: string;
  /** `<epoch>-<seq>` in the channel's epoch (on one node the node's; in
   * a cluster each channel has its own); `null` for ephemeral messages. */
  id: string | null;
  /** Text payloads as strings, binary payloads as bytes. */
  data: string | Uint8Array;
  /** Set (true) on ephemeral messages: no id, no history, no resume. */
  ephemeral?: true;
}

/** The `reset` event: a subscription's position could not be honoured. */
export interface ResetEvent {
  ch: string;
  /** `epoch`: the channel's epoch changed — the node restarted, or in a
   * cluster this channel's keys were lost (the subscription adopts the new
   * epoch; other channels are not affected); `evicted`: messages left
   * history; `unknown`: the position was beyond anything the channel
   * issued. */
  reason: "epoch" | "evicted" | "unknown";
  /** How many messages were lost, when known. */
  missed: number | null;
  /** The position the node could not resume from. */
  since: string | null;
}

/** The `presence` event (over the WebSocket transport only). */
export interface PresenceEvent {
  ch: string;
  type: "joined" | "left";
  /** The client id (16 hex digits) of a multiplexed connection. */
  client: string;
}

export interface Stats {
  /** Times the connection was opened again after the first time. */
  reconnects: number;
  /** Milliseconds: the last `/ws` ping, else the last short poll, stream
   * open, publish or presence query; `null` until measured. */
  rtt: number | null;
  /** Messages delivered (not counting ephemeral ones). */
  messages: number;
  /** Messages dropped as already seen. */
  duplicates: number;
}

export type ErrorKind =
  | "refused"
  | "unavailable"
  | "network"
  | "timeout"
  | "closed"
  | "lagging"
  | "protocol"
  | "request"
  | "handler"
  | "unsupported"
  | "token"
  | "client-closed"
  | "error";

/** A token, or a provider of one, called before each connection attempt
 * (`null`, `undefined` or `""` from a provider: no token). */
export type Token = string | (() => string | null | undefined | Promise<string | null | undefined>);

/** Every error the client reports (events and rejections). */
export class RingcastError extends Error {
  constructor(message: string, props?: Partial<Pick<RingcastError, "kind" | "transport" | "status" | "code" | "channel" | "retryAfter" | "probe">> & { cause?: unknown });
  name: "RingcastError";
  kind: ErrorKind;
  /** The transport involved, if any. */
  transport?: TransportName;
  /** The HTTP status of a refusal (401: the token is missing, expired or
   * not valid; 403: refused, e.g. a channel the token does not allow). */
  status?: number;
  /** The `/ws` error code (`forbidden`, `too_large`, `overloaded`, …); for a
   * refused token `token_rejected`, `token_expired` or `unauthorized` (on
   * any transport: an event stream ended for `token_expired` carries it too). */
  code?: string;
  /** The channel a token does not allow (`403`, or `forbidden` on `/ws`):
   * left out until the token changes; the other channels carry on. */
  channel?: string;
  /** Seconds the node asked to wait (`503`, `overloaded`). */
  retryAfter?: number;
  /** The failure was a probe for a better transport; the connection is fine. */
  probe?: boolean;
}

export interface Options {
  /** Transports to try, in order; a subset restricts. Default all four. */
  transports?: TransportName[];
  /** The client's token (a JWT): a string, or a function returning one (or
   * a Promise of one), called before each connection attempt. Sent as
   * `Authorization: Bearer` on HTTP, as the `auth` frame on `/ws`; never in a
   * URL. Replace it with `Client.setToken`. */
  token?: Token | null;
  /** Short polling interval, ms (×4 while the page is hidden). Default 1000. */
  pollInterval?: number;
  /** Reconnect delay bounds, ms, full jitter. Default {min: 500, max: 30000}. */
  backoff?: { min?: number; max?: number };
  /** One connection per browser, shared by the tabs of this origin (needs
   * Web Locks and BroadcastChannel). Default true where available. */
  shared?: boolean;
  /** A transport not open within this many ms is given up. Default 5000. */
  openTimeout?: number;
  /** How often to try a better transport while on a fallback, ms. Default 30000. */
  probeInterval?: number;
  /** Application ping interval on `/ws`, ms. Default 15000. */
  pingInterval?: number;
  /** A `/ws` silent this long after a ping is dead, ms. Default 10000. */
  pingTimeout?: number;
  /** An event stream silent this long (heartbeats included) is dead, ms. Default 45000. */
  sseTimeout?: number;
  /** How long the node may hold a long poll, ms (whole seconds are sent). Default 25000. */
  longPollTimeout?: number;
  /** Deadline of publish, presence and short-poll requests, ms. Default 10000. */
  requestTimeout?: number;
  /** A connection open this long resets the backoff, ms. Default 5000. */
  healthyAfter?: number;
  /** The device durable subscriptions keep their cursors under (1–64 of
   * `A-Z a-z 0-9 _ - .`); without it, the identity's own cursor. */
  device?: string | null;
  /** Auto-acks of a channel: at most one per this many ms. Default 100. */
  ackDelay?: number;

  // The environment, injectable for tests and other runtimes.
  WebSocket?: { new (url: string): WebSocket } | null;
  fetch?: typeof fetch | null;
  BroadcastChannel?: { new (name: string): BroadcastChannel } | null;
  locks?: LockManager | null;
  /** Where the transport that worked is remembered (default sessionStorage). */
  storage?: Pick<Storage, "getItem" | "setItem"> | null;
  /** The random source of the backoff jitter (default Math.random). */
  random?: () => number;
  document?: Pick<Document, "visibilityState" | "addEventListener" | "removeEventListener"> | null;
  window?: Pick<Window, "addEventListener" | "removeEventListener"> | null;
}

export interface SubscribeOptions {
  /** Resume after this message id; `<epoch>-0` for all of the channel's
   * history. Without it, from now — or, durable, after the node's cursor. */
  since?: string;
  /** The node keeps a cursor for this user (the token's `sub`), channel and
   * device (needs `--data-dir`). On an event stream or poll, every channel
   * of the request becomes durable. */
  durable?: boolean;
  /** Durable only: ack each message after its handler returns (or its
   * Promise resolves), coalesced per channel. Default true. A handler that
   * throws holds the acks before its message. */
  autoAck?: boolean;
  /** Must be the client's `device` option if given (the device is the
   * browser's, for every channel); anything else throws a TypeError. */
  device?: string | null;
}

/** The `unread` event, and what an ack resolves. */
export interface UnreadEvent {
  ch: string;
  /** Messages the node's history holds after the cursor. */
  unread: number | null;
  /** The node's cursor: the last id acked. */
  cursor: string | null;
}

export interface PublishOptions {
  /** Deliver only to subscribers live now (not polls); no id, no history. */
  ephemeral?: boolean;
}

export class Subscription {
  readonly ch: string;
  /** The id of the last message delivered (or the `since` given): store it
   * to resume with `{since}` after a reload. */
  readonly lastId: string | null;
  /** False once unsubscribed or the client closed. */
  readonly active: boolean;
  readonly durable: boolean;
  readonly autoAck: boolean;
  /** Durable: unread messages after the node's cursor, when known. */
  readonly unread: number | null;
  /** Durable: the node's cursor (the last id acked), when known. */
  readonly cursor: string | null;
  /** Acks `id` (and everything before it) on this channel now. */
  ack(id: string): Promise<UnreadEvent>;
  unsubscribe(): void;
}

export interface EventMap {
  state: State;
  transport: TransportName;
  reset: ResetEvent;
  presence: PresenceEvent;
  unread: UnreadEvent;
  error: RingcastError | TypeError;
}

export class Client {
  readonly state: State;
  readonly transport: TransportName | null;
  readonly stats: Stats;
  /** This connection's id in presence lists and events (16 hex digits)
   * while on the WebSocket; otherwise null. Shared tabs are one client. */
  readonly clientId: string | null;
  /** Whether this client shares one connection with the other tabs. */
  readonly shared: boolean;
  subscribe(ch: string, handler: (msg: Message) => void | Promise<void>, options?: SubscribeOptions): Subscription;
  publish(ch: string, data: string | ArrayBuffer | ArrayBufferView, options?: PublishOptions): Promise<{ id: string | null }>;
  /** The clients of multiplexed (`/ws`) connections subscribed to `ch`. */
  presence(ch: string): Promise<string[]>;
  /** Acks `id` on `ch` now (cumulative; over `/ws` or `POST /ack/{ch}`). */
  ack(ch: string, id: string): Promise<UnreadEvent>;
  /** Replaces the token without dropping anything: `refresh` on `/ws`, the
   * event stream re-opened from the current positions, polls and requests
   * use it next; a backoff after a refused token ends at once. A function is
   * called at once (and before later connection attempts). `null`: no token
   * from now on. In a shared tab it reaches the leader, and every tab.
   * Throws a `TypeError` for anything else, and once closed. */
  setToken(token: Token | null): void;
  on<K extends keyof EventMap>(event: K, listener: (arg: EventMap[K]) => void): this;
  off<K extends keyof EventMap>(event: K, listener: (arg: EventMap[K]) => void): this;
  close(): void;
}

/** Connects to the node at `url` (`http(s)://host:port[/prefix]`); without
 * it, to the node this module was loaded from. */
export function connect(url?: string, options?: Options): Client;
export default connect;

export const TRANSPORTS: readonly TransportName[];
export const DEFAULTS: Readonly<Required<Pick<Options, "ackDelay" | "pollInterval" | "openTimeout" | "probeInterval" | "pingInterval" | "pingTimeout" | "sseTimeout" | "longPollTimeout" | "requestTimeout" | "healthyAfter">> & { transports: readonly TransportName[]; backoff: Readonly<{ min: number; max: number }> }>;

// ---- pure helpers (exported for tests and tools) ------------------------------------

/** A position in a channel: the parsed form of a message id. */
export interface Position {
  epoch: string;
  seq: number;
}

/** A parsed composite cursor `<epoch>;<ch>=<seq>|<ch>=<epoch>-<seq>,…`. */
export interface Cursor {
  /** The prefix epoch (that of the `<ch>=<seq>` entries). */
  epoch: string;
  /** Each channel's position, in its own epoch. */
  positions: Map<string, Position>;
}

export interface NormalizedReset {
  ch: string;
  reason: string;
  since: Position | null;
  sinceId: string | null;
  missed: number | null;
  epoch: string | null;
}

/** Full-jitter delay before attempt `attempt` (0-based), ms. */
export function backoffDelay(attempt: number, bounds?: { min: number; max: number }, random?: () => number): number;
export function isChannelName(name: unknown): boolean;
export function normalizeBase(url?: string): string;
export function base64ToBytes(text: string): Uint8Array;
export function bytesToBase64(bytes: Uint8Array): string;
export function parseId(id: unknown): Position | null;
export function formatId(pos: Position): string;
/** A composite cursor of `[channel, position]` entries: the epoch most
 * share as the prefix, the others as `<ch>=<epoch>-<seq>`; `null` for none. */
export function encodeCursor(entries: Iterable<[string, Position]>): string | null;
/** A composite cursor with the prefix `epoch`: a number is a seq in it. */
export function encodeCursor(epoch: string, entries: Iterable<[string, number | Position]>): string | null;
export function parseCursor(text: unknown): Cursor | null;
export function acceptsId(pos: Position | null, id: Position): boolean;
/** `currentEpoch`: the channel's current epoch, when known. */
export function olderPosition(a: Position | null, b: Position | null, currentEpoch?: string | null): Position | null;
export function normalizeReset(raw: Record<string, unknown>, fallbackEpoch?: string | null): NormalizedReset;
export function applyReset(pos: Position | null, reset: NormalizedReset): { applied: boolean; pos: Position | null; missed: number | null };

export interface SseEvent {
  type: string;
  /** `null` for an event with an `id:` and no `data:`. */
  data: string | null;
  id: string;
  hasId: boolean;
}

export interface SseHandlers {
  onEvent?(event: SseEvent): void;
  onComment?(text: string): void;
  onRetry?(ms: number): void;
}

export class SseParser {
  constructor(handlers?: SseHandlers);
  feed(text: string): void;
  end(): void;
}

export function createSseDecoder(handlers?: SseHandlers): { push(bytes: Uint8Array): void; end(): void };
