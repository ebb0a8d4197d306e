//! `ChunkedDecoder` on arbitrary bytes cut into arbitrary reads.
//!
//! Input layout: byte 0 is the read pattern (see `split.rs`); the rest is
//! the body.
//!
//! Invariants: never panics; never uses more than it was given; `None`
//! means everything was used; data slices are non-empty and borrow the
//! input; the body returned never exceeds the input size; the body, where
//! it ends and the error do not depend on how the input was cut into reads.
#![no_main]

#[path = "split.rs"]
mod split;

use codec::http::{ChunkedDecoder, ChunkedError, ChunkedEvent};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    body: Vec<u8>,
    /// Input bytes used up to and including the end of the body, if it ended.
    end: Option<usize>,
    error: Option<ChunkedError>,
}

fn run(pieces: &[&[u8]], total: usize) -> Outcome {
    let mut dec = ChunkedDecoder::new();
    let mut body = Vec::new();
    let mut consumed = 0;
    for piece in pieces {
        let mut rest: &[u8] = piece;
        while !rest.is_empty() {
            let range = rest.as_ptr_range();
            let (used, event) = match dec.decode(rest) {
                Ok(x) => x,
                Err(error) => {
                    assert!(!dec.is_done());
                    return Outcome {
                        body,
                        end: None,
                        error: Some(error),
                    };
                }
            };
            assert!(used <= rest.len(), "used {used} of {}", rest.len());
            consumed += used;
            match event {
                Some(ChunkedEvent::Data(d)) => {
                    assert!(!d.is_empty(), "empty data event");
                    assert!(range.start <= d.as_ptr() && d.as_ptr_range().end <= range.end);
                    body.extend_from_slice(d);
                    assert!(body.len() <= total, "body {} > input {total}", body.len());
                }
                Some(ChunkedEvent::End) => {
                    assert!(dec.is_done());
                    return Outcome {
                        body,
                        end: Some(consumed),
                        error: None,
                    };
                }
                None => assert_eq!(used, rest.len(), "no event but input left over"),
            }
            assert!(used > 0, "no progress");
            rest = &rest[used..];
        }
    }
    assert!(!dec.is_done());
    Outcome {
        body,
        end: None,
        error: None,
    }
}

fuzz_target!(|data: &[u8]| {
    let [seed, input @ ..] = data else {
        return;
    };
    let split = run(&split::pieces(input, *seed), input.len());
    let whole = run(&[input], input.len());
    assert!(whole.body.len() <= input.len());
    assert_eq!(split, whole, "result depends on how the body was cut");
});
