//! Payload masking (RFC 6455 §5.3).
//!
//! Unmasking is the one per-byte cost of receiving. Buffers of 64 bytes or
//! more are XORed in 64-byte blocks against a pre-rotated 64-byte key
//! pattern, a loop LLVM turns into vector XORs (SSE2 on any x86-64, wider
//! with `target-cpu` flags); what is left, and short buffers, go 8 bytes at
//! a time, then byte by byte. All of it is safe Rust.

const BLOCK: usize = 64;

/// XORs `buf` in place with `mask`, starting at position `offset` of the
/// key (0–3; where the previous chunk of the same payload stopped). Returns
/// the key position after the last byte, for the next chunk.
///
/// Masking is its own inverse: applying it twice restores the input.
pub fn apply_mask(buf: &mut [u8], mask: [u8; 4], offset: usize) -> usize {
    let end = (offset + buf.len()) % 4;
    let rotated = u32::from_be_bytes(mask)
        .rotate_left(8 * (offset % 4) as u32)
        .to_be_bytes();
    let mut rest = buf;
    if rest.len() >= BLOCK {
        let mut pattern = [0u8; BLOCK];
        for (i, p) in pattern.iter_mut().enumerate() {
            *p = rotated[i % 4];
        }
        let mut blocks = rest.chunks_exact_mut(BLOCK);
        for block in &mut blocks {
            for (b, p) in block.iter_mut().zip(pattern.iter()) {
                *b ^= p;
            }
        }
        rest = blocks.into_remainder();
    }
    // Whole blocks and words are multiples of 4, so the key phase is the
    // same at the start of every stage.
    let word = u64::from_ne_bytes([
        rotated[0], rotated[1], rotated[2], rotated[3], rotated[0], rotated[1], rotated[2],
        rotated[3],
    ]);
    let mut words = rest.chunks_exact_mut(8);
    for w in &mut words {
        let v = u64::from_ne_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]) ^ word;
        w.copy_from_slice(&v.to_ne_bytes());
    }
    for (b, k) in words
        .into_remainder()
        .iter_mut()
        .zip(rotated.iter().cycle())
    {
        *b ^= k;
    }
    end
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(buf: &mut [u8], mask: [u8; 4], offset: usize) {
        for (i, b) in buf.iter_mut().enumerate() {
            *b ^= mask[(offset + i) % 4];
        }
    }

    #[test]
    fn matches_the_byte_by_byte_definition() {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        for len in [0, 1, 3, 4, 5, 63, 64, 65, 127, 128, 1000] {
            for offset in 0..4 {
                let original: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
                let mut fast = original.clone();
                let mut slow = original.clone();
                assert_eq!(apply_mask(&mut fast, mask, offset), (offset + len) % 4);
                naive(&mut slow, mask, offset);
                assert_eq!(fast, slow, "len {len} offset {offset}");
            }
        }
    }

    #[test]
    fn chunked_masking_equals_whole_masking() {
        let mask = [1, 2, 3, 4];
        let original: Vec<u8> = (0..300u32).map(|i| i as u8).collect();
        let mut whole = original.clone();
        apply_mask(&mut whole, mask, 0);
        for cut in 0..original.len() {
            let mut parts = original.clone();
            let (a, b) = parts.split_at_mut(cut);
            let off = apply_mask(a, mask, 0);
            apply_mask(b, mask, off);
            assert_eq!(parts, whole, "cut at {cut}");
        }
    }
}
