//! permessage-deflate: what compressing a broadcast message once costs,
//! and inflating one, for a JSON chat stream of 200 to 2,000 bytes, and
//! how much smaller it gets (printed once per size).
//!
//! `cargo bench -p ringcast-codec --bench deflate`; results in
//! docs/benchmarks.md.

use std::hint::black_box;

use codec::ws::deflate::{compress, Compressor, Inflater};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

/// A chat message of about `len` bytes: the JSON envelope the node sends,
/// around text of a realistic mix (words repeat, names and ids do not).
fn chat_message(len: usize, n: usize) -> Vec<u8> {
    const WORDS: [&str; 24] = [
        "the", "meeting", "moved", "to", "three", "o'clock", "tomorrow", "please", "bring", "your",
        "notes", "about", "the", "release", "and", "check", "whether", "anyone", "can", "cover",
        "support", "on", "Friday", "thanks",
    ];
    let mut text = String::new();
    let mut i = n * 7;
    while text.len() + 120 < len {
        text.push_str(WORDS[i % WORDS.len()]);
        text.push(' ');
        i = i.wrapping_mul(31).wrapping_add(17);
    }
    format!(
        r#"{{"type":"message","ch":"room:{}","id":"5f3a9c01be42-{}","data":{{"from":"user{}","at":{},"text":"{}"}}}}"#,
        n % 50,
        1000 + n,
        n % 977,
        1_764_500_000_000u64 + n as u64 * 37,
        text.trim_end()
    )
    .into_bytes()
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("deflate");
    for size in [200usize, 500, 1000, 2000] {
        let msgs: Vec<Vec<u8>> = (0..64).map(|n| chat_message(size, n)).collect();
        let total: usize = msgs.iter().map(Vec::len).sum();
        let packed: Vec<Vec<u8>> = msgs.iter().map(|m| compress(m, 15, 6)).collect();
        let packed_total: usize = packed.iter().map(Vec::len).sum();
        eprintln!(
            "deflate {size}: {} B average -> {} B ({:.0} %)",
            total / msgs.len(),
            packed_total / msgs.len(),
            100.0 * packed_total as f64 / total as f64
        );
        group.throughput(Throughput::Bytes((total / msgs.len()) as u64));
        // A compressor set up for each message.
        for level in [1u32, 6] {
            let mut k = 0;
            group.bench_function(
                BenchmarkId::new(format!("compress_level{level}"), size),
                |b| {
                    b.iter(|| {
                        k = (k + 1) % msgs.len();
                        black_box(compress(black_box(&msgs[k]), 15, level))
                    })
                },
            );
        }
        // A compressor kept and reset, as a shard would.
        let mut kept = Compressor::new(15, 1);
        let mut k = 0;
        group.bench_function(BenchmarkId::new("compress_kept_level1", size), |b| {
            b.iter(|| {
                k = (k + 1) % msgs.len();
                black_box(kept.compress(black_box(&msgs[k])))
            })
        });
        let mut inflater = Inflater::new();
        let mut out = Vec::with_capacity(4096);
        let mut k = 0;
        group.bench_function(BenchmarkId::new("inflate", size), |b| {
            b.iter(|| {
                k = (k + 1) % packed.len();
                out.clear();
                inflater
                    .inflate(black_box(&packed[k]), true, 1 << 20, &mut out)
                    .unwrap();
                inflater.reset();
                black_box(out.len())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
