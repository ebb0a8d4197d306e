//! Shared by the fuzz targets: turns one seed byte into a way of cutting the
//! input into the reads a connection would see.

/// Cuts `data` into consecutive pieces: seed 0 gives one piece, seed 1 gives
/// one byte per piece, any other seed gives pseudo-random pieces of 1 to
/// 2^(seed % 8 + 1) bytes (so some seeds cut finely, some coarsely).
pub fn pieces(data: &[u8], seed: u8) -> Vec<&[u8]> {
    match seed {
        0 => vec![data],
        1 => data.chunks(1).collect(),
        _ => {
            let max = 2usize << (seed % 8);
            let mut state = u32::from(seed) | 0x9E37_7900;
            let mut out = Vec::new();
            let mut rest = data;
            while !rest.is_empty() {
                // xorshift32
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                let n = (1 + state as usize % max).min(rest.len());
                let (piece, tail) = rest.split_at(n);
                out.push(piece);
                rest = tail;
            }
            out
        }
    }
}
