//! Server-Sent Events encoding: the once-per-publish cost of the SSE path.
//!
//! `cargo bench -p ringcast-codec --bench sse`; results in
//! docs/benchmarks.md.

use std::hint::black_box;

use bytes::BytesMut;
use codec::sse::Event;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn encode(c: &mut Criterion) {
    let tick = r#"{"ch":"news","seq":12345,"text":"breaking: codec benchmarked"}"#;
    // 1 KiB of data over 16 lines: every line becomes its own `data:` field.
    let multiline: String = (0..16)
        .map(|i| format!("{i:02} {}\n", "x".repeat(60)))
        .collect();
    let cases = [
        (
            "one_line_with_id",
            Event {
                id: Some("news:12345"),
                event: Some("update"),
                data: tick,
                retry: None,
            },
        ),
        (
            "multiline_1KiB",
            Event {
                id: Some("news:12346"),
                event: None,
                data: &multiline,
                retry: Some(3000),
            },
        ),
    ];

    let mut group = c.benchmark_group("sse/encode");
    for (name, event) in &cases {
        group.throughput(Throughput::Bytes(event.data.len() as u64));
        // Into a reused buffer (a connection's write buffer)...
        let mut dst = BytesMut::with_capacity(4096);
        group.bench_function(format!("{name}/into_buffer"), |b| {
            b.iter(|| {
                dst.clear();
                black_box(event).encode(&mut dst).unwrap();
                black_box(&dst);
            })
        });
        // ...and once into fresh shared bytes (the broadcast path).
        group.bench_function(format!("{name}/to_bytes"), |b| {
            b.iter(|| black_box(event).to_bytes().unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, encode);
criterion_main!(benches);
