//! `parse_request` on arbitrary bytes, with the default limits and with
//! small limits taken from the last input byte.
//!
//! Invariants: never panics; `Complete` uses at most the input (and at most
//! `max_head_bytes`); parsing again, or parsing only the used bytes, gives
//! the same head; shorter prefixes are never `Complete`; `Partial` only
//! while under the size limit; parsed paths start with `/` (or are `*`).
#![no_main]

use codec::http::{parse_request, Limits, Method};
use codec::Status;
use libfuzzer_sys::fuzz_target;

fn check(data: &[u8], limits: &Limits) {
    match parse_request(data, limits) {
        Ok(Status::Complete((head, used))) => {
            assert!(used <= data.len(), "used {used} > input {}", data.len());
            assert!(
                used <= limits.max_head_bytes,
                "used {used} over the head limit"
            );
            assert!(used > 0);
            // Stateless: the same bytes, and only the head's bytes, give the
            // same result (what follows the head never matters).
            assert_eq!(
                parse_request(data, limits),
                Ok(Status::Complete((head, used)))
            );
            assert_eq!(
                parse_request(&data[..used], limits),
                Ok(Status::Complete((head, used)))
            );
            // A head is complete only once its last byte is there. Checking
            // three prefixes keeps this cheap.
            for cut in [0, used / 2, used - 1] {
                if let Ok(Status::Complete((_, n))) = parse_request(&data[..cut], limits) {
                    panic!("prefix of {cut} bytes is complete ({n} used) but the whole head needs {used}");
                }
            }
            assert!(
                head.path.starts_with('/') || (head.path == "*" && head.method == Method::Options),
                "path {:?}",
                head.path
            );
            // The accessors later stages call must not panic either.
            let _ = head.keep_alive();
            let _ = head.body();
            let _ = head.query_param("since");
            let h = &head.headers;
            for list in [
                &h.if_none_match,
                &h.accept,
                &h.connection,
                &h.upgrade,
                &h.sec_websocket_protocol,
                &h.sec_websocket_extensions,
            ] {
                for item in list.items() {
                    assert!(!item.is_empty());
                }
                let _ = list.contains("upgrade");
            }
        }
        Ok(Status::Partial) => {
            assert!(
                data.len() < limits.max_head_bytes,
                "Partial with {} bytes, limit {}",
                data.len(),
                limits.max_head_bytes
            );
        }
        Err(e) => {
            let code = e.status().code();
            assert!((400..=599).contains(&code));
            assert!(!e.reason().is_empty());
        }
    }
}

fuzz_target!(|data: &[u8]| {
    check(data, &Limits::default());
    let knob = data.last().copied().unwrap_or(0);
    let small = Limits {
        max_head_bytes: 16 + usize::from(knob) * 2,
        max_headers: usize::from(knob % 8),
    };
    check(data, &small);
});
