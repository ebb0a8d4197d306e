//! What credentials cost when they are checked: once per request or
//! connection, never per delivery. A client token (HS256 and ES256, as
//! `Verifier::verify` checks it at a handshake: its signature, or the
//! cache of tokens seen lately) and a ticket's issue and redemption.
//!
//! `cargo bench -p ringcast --bench auth`; results in docs/benchmarks.md.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use jsonwebtoken::{encode, get_current_timestamp, Algorithm, EncodingKey, Header};
use ringcast::auth::{Tickets, Verifier};

const SECRET: &str = "a-bench-secret-of-at-least-32-bytes";

fn claims() -> serde_json::Value {
    serde_json::json!({
        "sub": "user-1234567",
        "exp": get_current_timestamp() + 3600,
        "channels": ["chat:*", "news", "user:1234567"],
        "publish": ["chat:*"],
    })
}

fn tokens(c: &mut Criterion) {
    let hs = encode(
        &Header::new(Algorithm::HS256),
        &claims(),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    let verifier = Verifier::load(Some(SECRET), None, None).unwrap().unwrap();
    c.bench_function("verify HS256", |b| {
        b.iter(|| verifier.verify_signed(black_box(&hs)).unwrap())
    });
    c.bench_function("verify HS256, seen lately", |b| {
        b.iter(|| verifier.verify(black_box(&hs)).unwrap())
    });

    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    let pem = std::fs::read(format!("{fixtures}/ec-p256-private.pem")).unwrap();
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some("ec-2026".into());
    let es = encode(&header, &claims(), &EncodingKey::from_ec_pem(&pem).unwrap()).unwrap();
    let jwks = std::path::PathBuf::from(format!("{fixtures}/jwks.json"));
    let verifier = Verifier::load(None, None, Some(&jwks)).unwrap().unwrap();
    c.bench_function("verify ES256 (JWKS, by kid)", |b| {
        b.iter(|| verifier.verify_signed(black_box(&es)).unwrap())
    });
    c.bench_function("verify ES256, seen lately", |b| {
        b.iter(|| verifier.verify(black_box(&es)).unwrap())
    });

    let access = Verifier::load(Some(SECRET), None, None)
        .unwrap()
        .unwrap()
        .verify(&hs)
        .unwrap();
    let tickets = Tickets::new(Duration::from_secs(30), 1 << 20);
    let now = get_current_timestamp();
    c.bench_function("ticket issue + redeem", |b| {
        b.iter(|| {
            let t = tickets.issue(access.clone(), now).unwrap();
            tickets.redeem(black_box(&t), now).unwrap()
        })
    });
}

criterion_group!(benches, tokens);
criterion_main!(benches);
