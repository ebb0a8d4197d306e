// The incremental SSE parser: the same events however the bytes are split.
import { test } from "node:test";
import assert from "node:assert/strict";
import { SseParser, createSseDecoder } from "../ringcast.js";

const enc = new TextEncoder();

/** Parses `chunks` (Uint8Arrays) and returns everything reported, in order. */
function parseBytes(chunks) {
  const out = [];
  const d = createSseDecoder({
    onEvent: (e) => out.push(["event", e]),
    onComment: (c) => out.push(["comment", c]),
    onRetry: (ms) => out.push(["retry", ms]),
  });
  for (const c of chunks) d.push(c);
  d.end();
  return out;
}

function parseText(chunks) {
  const out = [];
  const p = new SseParser({
    onEvent: (e) => out.push(["event", e]),
    onComment: (c) => out.push(["comment", c]),
    onRetry: (ms) => out.push(["retry", ms]),
  });
  for (const c of chunks) p.feed(c);
  p.end();
  return out;
}

// A stream with every feature, every line ending, and multi-byte characters
// (2, 3 and 4 bytes in UTF-8) so splits fall inside characters too.
const STREAM =
  "\uFEFFretry:3000\n\n" +
  "id:5f3a9c01be42;news=17,sport=4\nevent:news\ndata:hello é\n\n" +
  ":\n" +
  "id: 5f3a9c01be42;news=18,sport=4\r\nevent:news\r\ndata:first\r\ndata:second €\r\n\r\n" +
  "event:sport;binary\rdata:AP8=\rid:5f3a9c01be42;news=18,sport=5\r\r" +
  ": heartbeat 😀\n" +
  "event:typing\ndata:ephemeral\n\n" +
  "event:reset\ndata:{\"ch\":\"news\",\"reason\":\"evicted\",\"since\":\"5f3a9c01be42-3\",\"missed\":2}\n\n" +
  "id:5f3a9c01be42;news=19\n\n" +
  "data\n\n" +
  "data:\n\n" +
  "data: leading space kept once:  two\n\n" +
  "unknown:field\nretry:soon\ndata:x\n\n" +
  "id:bad\0id\ndata:nul\n\n" +
  "data:incomplete at end";

const EXPECTED = [
  ["retry", 3000],
  ["event", { type: "news", data: "hello é", id: "5f3a9c01be42;news=17,sport=4", hasId: true }],
  ["comment", ""],
  ["event", { type: "news", data: "first\nsecond €", id: "5f3a9c01be42;news=18,sport=4", hasId: true }],
  ["event", { type: "sport;binary", data: "AP8=", id: "5f3a9c01be42;news=18,sport=5", hasId: true }],
  ["comment", " heartbeat 😀"],
  // No id: line: the last id persists, but this event did not carry one.
  ["event", { type: "typing", data: "ephemeral", id: "5f3a9c01be42;news=18,sport=5", hasId: false }],
  ["event", { type: "reset", data: '{"ch":"news","reason":"evicted","since":"5f3a9c01be42-3","missed":2}', id: "5f3a9c01be42;news=18,sport=5", hasId: false }],
  // An id with no data still moves the position.
  ["event", { type: "message", data: null, id: "5f3a9c01be42;news=19", hasId: true }],
  ["event", { type: "message", data: "", id: "5f3a9c01be42;news=19", hasId: false }],
  ["event", { type: "message", data: "", id: "5f3a9c01be42;news=19", hasId: false }],
  ["event", { type: "message", data: "leading space kept once:  two", id: "5f3a9c01be42;news=19", hasId: false }],
  ["event", { type: "message", data: "x", id: "5f3a9c01be42;news=19", hasId: false }],
  // An id containing NUL is ignored.
  ["event", { type: "message", data: "nul", id: "5f3a9c01be42;news=19", hasId: false }],
];

test("sse: whole stream", () => {
  assert.deepEqual(parseBytes([enc.encode(STREAM)]), EXPECTED);
});

test("sse: split into two chunks at every byte position", () => {
  const bytes = enc.encode(STREAM);
  for (let i = 0; i <= bytes.length; i++) {
    assert.deepEqual(parseBytes([bytes.subarray(0, i), bytes.subarray(i)]), EXPECTED, `split at byte ${i}`);
  }
});

test("sse: split into three chunks at every pair of positions around line ends", () => {
  const bytes = enc.encode(STREAM);
  // Every pair is O(n²) parses; pairs within 3 bytes of each other cover
  // every CR/LF/CRLF boundary split twice.
  for (let i = 0; i < bytes.length; i++) {
    for (let j = i; j <= Math.min(bytes.length, i + 3); j++) {
      const got = parseBytes([bytes.subarray(0, i), bytes.subarray(i, j), bytes.subarray(j)]);
      assert.deepEqual(got, EXPECTED, `split at ${i} and ${j}`);
    }
  }
});

test("sse: byte by byte", () => {
  const bytes = enc.encode(STREAM);
  const chunks = Array.from(bytes, (_, i) => bytes.subarray(i, i + 1));
  assert.deepEqual(parseBytes(chunks), EXPECTED);
});

test("sse: text chunks, including empty ones, at every position", () => {
  for (let i = 0; i <= STREAM.length; i++) {
    assert.deepEqual(parseText([STREAM.slice(0, i), "", STREAM.slice(i)]), EXPECTED, `split at char ${i}`);
  }
});

test("sse: CR then LF in separate chunks is one line end, CR CR is two", () => {
  assert.deepEqual(parseText(["data:a\r", "\ndata:b\r", "\n\r", "\n"]), [["event", { type: "message", data: "a\nb", id: "", hasId: false }]]);
  assert.deepEqual(parseText(["data:a\r", "\r"]), [["event", { type: "message", data: "a", id: "", hasId: false }]]);
});

test("sse: only a leading BOM is stripped", () => {
  assert.deepEqual(parseText(["\uFEFFdata:a\n\n"]), [["event", { type: "message", data: "a", id: "", hasId: false }]]);
  // A BOM later is part of the field name, so the line is an unknown field.
  assert.deepEqual(parseText(["data:a\n\n\uFEFFdata:b\n\n"]), [["event", { type: "message", data: "a", id: "", hasId: false }]]);
});

test("sse: a field without colon is a name with empty value", () => {
  assert.deepEqual(parseText(["event\ndata\ndata\n\n"]), [["event", { type: "message", data: "\n", id: "", hasId: false }]]);
});
