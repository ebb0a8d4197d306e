//! Payload masking (RFC 6455 §5.3).
//!
//! Unmasking is the one per-byte cost of receiving, so it works on 64-byte
//! blocks against a pre-rotated 64-byte key pattern. The block loop is plain
//! safe Rust written so that LLVM turns it into vector XORs (SSE2 on any
//! x86-64, wider with `target-cpu` flags); the tail is done byte by byte.

const BLOCK: usize = 64;

/// XORs `buf` in place with `mask`, starting at position `offset` of the
/// key (0–3; where the previous chunk of the same payload stopped). Returns
/// the key position after the last byte, for the next chunk.
///
/// Masking is its own inverse: applying it twice restores the input.
pub fn apply_mask(buf: &mut [u8], mask: [u8; 4], offset: usize) -> usize {
    let rotated = u32::from_be_bytes(mask)
        .rotate_left(8 * (offset % 4) as u32)
        .to_be_bytes();
    let mut pattern = [0u8; BLOCK];
    for (i, p) in pattern.iter_mut().enumerate() {
        *p = rotated[i % 4];
    }
    let mut blocks = buf.chunks_exact_mut(BLOCK);
    for block in &mut blocks {
        for (b, p) in block.iter_mut().zip(pattern.iter()) {
            *b ^= p;
        }
    }
    let tail = blocks.into_remainder();
    for (b, p) in tail.iter_mut().zip(pattern.iter()) {
        *b ^= p;
    }
    (offset + buf.len()) % 4
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
