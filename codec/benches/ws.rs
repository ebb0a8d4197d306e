//! WebSocket hot paths: unmasking, decoding client frames (server role),
//! encoding broadcast frames and sharing them between connections.
//!
//! `cargo bench -p ringcast-codec --bench ws`; results and the machine they
//! were taken on are in docs/benchmarks.md.

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use codec::ws::{apply_mask, encode, DataKind, DecoderConfig, Frame, FrameDecoder};
use codec::Status;
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};

/// Payload sizes: a tick, a typical JSON message, a large message.
const SIZES: [(usize, &str); 3] = [(16, "16B"), (1024, "1KiB"), (64 * 1024, "64KiB")];

/// Any key with all four bytes different and non-zero: masking must do real
/// work, and LLVM cannot see the key (it comes through `black_box`).
const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// JSON with a few 2- and 3-byte characters in every record (so the ASCII
/// fast path of UTF-8 validation rarely applies), cut to exactly `len` bytes
/// on a character boundary (padded with ASCII).
const MIXED: &str = r#"{"ch":"news","seq":12345,"text":"Grüße – naïve café ✓"},"#;
/// The same JSON in pure ASCII.
const ASCII: &str = r#"{"ch":"news","seq":12345,"text":"Gruesse - naive cafe v"},"#;

fn text_payload(len: usize) -> Vec<u8> {
    text_from(MIXED, len)
}

fn text_from(pattern: &str, len: usize) -> Vec<u8> {
    let mut s = String::with_capacity(len);
    for c in pattern.chars().cycle() {
        if s.len() + c.len_utf8() > len {
            break;
        }
        s.push(c);
    }
    while s.len() < len {
        s.push(' ');
    }
    debug_assert_eq!(s.len(), len);
    s.into_bytes()
}

fn binary_payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 + 7) as u8).collect()
}

fn unmask(c: &mut Criterion) {
    let mut group = c.benchmark_group("ws/unmask");
    for (size, label) in SIZES {
        group.throughput(Throughput::Bytes(size as u64));
        let mut buf = binary_payload(size);
        // Masking is its own inverse and its cost does not depend on the
        // data, so the same buffer is simply XORed again every iteration.
        group.bench_function(BenchmarkId::from_parameter(label), |b| {
            b.iter(|| apply_mask(black_box(&mut buf), black_box(MASK), 0))
        });
    }
    group.finish();
}

/// Iterations per batch for the decode benchmarks: each batch's buffers are
/// cloned from the masked frame before the batch is timed, and together
/// stay under ~1 MiB so that they are in L2 when decoded, as a socket read
/// buffer is right after `recv`. (`BatchSize::SmallInput` would make a
/// batch a tenth of all iterations: tens of MiB of 64 KiB frames, decoded
/// from cold memory.)
fn decode_batch(frame_len: usize) -> BatchSize {
    BatchSize::NumIterations((1 << 20) / frame_len.max(256) as u64)
}

fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("ws/decode");
    let cases = [
        (DataKind::Binary, "binary", None),
        (DataKind::Text, "text", Some(MIXED)),
        (DataKind::Text, "text_ascii", Some(ASCII)),
    ];
    for (kind, name, text) in cases {
        for (size, label) in SIZES {
            let payload = match text {
                None => binary_payload(size),
                Some(pattern) => text_from(pattern, size),
            };
            let mut frame = BytesMut::new();
            encode::masked_frame(&mut frame, kind.opcode(), true, &payload, MASK);
            let frame = frame.to_vec();
            let frame_len = frame.len();

            // The frame decodes whole, to the payload it was made from.
            let mut check = frame.clone();
            match FrameDecoder::new(DecoderConfig::server()).decode(&mut check) {
                Ok(Status::Complete((
                    n,
                    Frame::Data {
                        payload: p,
                        last: true,
                        ..
                    },
                ))) => {
                    assert_eq!(n, frame_len);
                    assert_eq!(p, &payload[..]);
                }
                other => panic!("setup frame did not decode: {other:?}"),
            }

            group.throughput(Throughput::Bytes(size as u64));
            let mut dec = FrameDecoder::new(DecoderConfig::server());
            // `decode` unmasks in place, so every iteration needs the masked
            // bytes again: `iter_batched_ref` clones the frame in untimed
            // setup (see `decode_batch`); only `decode` is timed. The frame
            // completes the message, so `dec` is idle again afterwards.
            group.bench_function(BenchmarkId::new(name, label), |b| {
                b.iter_batched_ref(
                    || frame.clone(),
                    |buf| match dec.decode(buf) {
                        Ok(Status::Complete((n, Frame::Data { payload, .. }))) => {
                            black_box(payload);
                            n
                        }
                        _ => unreachable!(),
                    },
                    decode_batch(frame_len),
                )
            });
        }
    }
    group.finish();
}

/// Not codec code: `std::str::from_utf8` alone on the text payloads of the
/// decode benchmarks, to show how much of text decoding is validation.
fn utf8_reference(c: &mut Criterion) {
    let mut group = c.benchmark_group("ws/std_from_utf8");
    let size = 64 * 1024;
    group.throughput(Throughput::Bytes(size as u64));
    for (name, pattern) in [("text", MIXED), ("text_ascii", ASCII)] {
        let payload = text_from(pattern, size);
        group.bench_function(BenchmarkId::new(name, "64KiB"), |b| {
            b.iter(|| std::str::from_utf8(black_box(&payload)).is_ok())
        });
    }
    group.finish();
}

fn encode_broadcast(c: &mut Criterion) {
    let mut group = c.benchmark_group("ws/encode_message");
    for (size, label) in SIZES {
        let payload = text_payload(size);
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(BenchmarkId::from_parameter(label), |b| {
            b.iter(|| encode::message(DataKind::Text, black_box(&payload)))
        });
    }
    group.finish();

    // Fan-out: one encoded frame queued on 10,000 connections (a clone per
    // send queue), then released by each as its write completes (the
    // drops). Both halves are timed; the payload is never copied.
    const SUBSCRIBERS: usize = 10_000;
    let mut group = c.benchmark_group("ws/broadcast_clone_10k");
    group.throughput(Throughput::Elements(SUBSCRIBERS as u64));
    for (size, label) in SIZES {
        let frame: Bytes = encode::message(DataKind::Text, &text_payload(size));
        let mut queues: Vec<Bytes> = Vec::with_capacity(SUBSCRIBERS);
        group.bench_function(BenchmarkId::from_parameter(label), |b| {
            b.iter(|| {
                for _ in 0..SUBSCRIBERS {
                    queues.push(black_box(&frame).clone());
                }
                black_box(&queues);
                queues.clear();
            })
        });
    }
    group.finish();

    // A server's control frame, for scale: a pong answering a ping.
    c.bench_function("ws/encode_pong_into", |b| {
        let mut dst = BytesMut::with_capacity(256);
        b.iter(|| {
            dst.clear();
            encode::pong(&mut dst, black_box(b"heartbeat-1234")).unwrap();
            black_box(&dst);
        })
    });
}

criterion_group!(benches, unmask, decode, utf8_reference, encode_broadcast);
criterion_main!(benches);
