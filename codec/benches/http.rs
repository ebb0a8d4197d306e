//! Request-head parsing: what every new connection costs before it is
//! routed.
//!
//! `cargo bench -p ringcast-codec --bench http`; results in
//! docs/benchmarks.md.

use std::hint::black_box;

use codec::http::{parse_request, Limits};
use codec::Status;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

/// A browser's WebSocket upgrade, as Chrome sends it (cookies aside).
const UPGRADE: &[u8] = b"GET /ws/news?since=abc%3A1 HTTP/1.1\r\n\
Host: push.example.com\r\n\
Connection: Upgrade\r\n\
Pragma: no-cache\r\n\
Cache-Control: no-cache\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36\r\n\
Upgrade: websocket\r\n\
Origin: https://www.example.com\r\n\
Sec-WebSocket-Version: 13\r\n\
Accept-Encoding: gzip, deflate, br, zstd\r\n\
Accept-Language: en-US,en;q=0.9\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\
\r\n";

/// The smallest request worth serving: a health check from a probe.
const HEALTHZ: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: 10.0.0.7:8080\r\n\r\n";

fn parse_heads(c: &mut Criterion) {
    let limits = Limits::default();
    let mut group = c.benchmark_group("http/parse_request");
    for (name, head) in [("ws_upgrade", UPGRADE), ("healthz", HEALTHZ)] {
        match parse_request(head, &limits) {
            Ok(Status::Complete((_, used))) => assert_eq!(used, head.len()),
            other => panic!("{name} does not parse: {other:?}"),
        }
        group.throughput(Throughput::Bytes(head.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| match parse_request(black_box(head), &limits) {
                Ok(Status::Complete((head, used))) => {
                    black_box(&head);
                    used
                }
                _ => unreachable!(),
            })
        });
    }
    group.finish();
}

criterion_group!(benches, parse_heads);
criterion_main!(benches);
