//! permessage-deflate (`codec::ws::deflate`): any `Sec-WebSocket-Extensions`
//! header negotiates or declines without a panic, and an agreement always
//! writes a header the same negotiation accepts again; any bytes, in any
//! parts, inflate or fail within the size limit; any payload compressed
//! and inflated in arbitrary parts comes back unchanged.
#![no_main]

use arbitrary::Arbitrary;
use bytes::BytesMut;
use codec::ws::deflate::{compress, negotiate, Inflater, Policy};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Input {
    header: Vec<u8>,
    takeover: bool,
    server_bits: u8,
    junk: Vec<u8>,
    payload: Vec<u8>,
    cuts: Vec<u16>,
    limit: u16,
    bits: u8,
}

fn parts<'a>(data: &'a [u8], cuts: &[u16]) -> Vec<&'a [u8]> {
    let mut at: Vec<usize> = cuts.iter().map(|&c| c as usize % (data.len() + 1)).collect();
    at.sort_unstable();
    let mut out = Vec::new();
    let mut from = 0;
    for cut in at {
        out.push(&data[from..cut]);
        from = cut;
    }
    out.push(&data[from..]);
    out
}

fn inflate(parts: &[&[u8]], limit: usize) -> Option<Vec<u8>> {
    let mut i = Inflater::new();
    let mut out = Vec::new();
    for (n, p) in parts.iter().enumerate() {
        i.inflate(p, n + 1 == parts.len(), limit, &mut out).ok()?;
        assert!(out.len() <= limit, "past the limit");
    }
    Some(out)
}

fuzz_target!(|input: Input| {
    let policy = Policy {
        server_max_window_bits: 9 + input.server_bits % 7,
        client_context_takeover: input.takeover,
    };
    let items = input.header.split(|&b| b == b',');
    if let Ok(Some(agreed)) = negotiate(items, policy) {
        let mut line = BytesMut::new();
        agreed.write_header(&mut line);
        let value = line
            .strip_prefix(b"Sec-WebSocket-Extensions: ")
            .and_then(|v| v.strip_suffix(b"\r\n"))
            .expect("a header line");
        assert!(negotiate([value], policy).unwrap().is_some(), "its own answer is acceptable");
    }
    let _ = inflate(&parts(&input.junk, &input.cuts), input.limit as usize);
    let compressed = compress(&input.payload, 9 + input.bits % 7, 6);
    let back = inflate(&parts(&compressed, &input.cuts), input.payload.len());
    assert_eq!(back.as_deref(), Some(&input.payload[..]));
});
