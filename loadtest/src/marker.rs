//! The marker every published payload carries.
//!
//! `rcl1:<run>:<seq>:<nanos>;` followed by padding. `run` tells this run's
//! messages from anything else on the channel (history of an earlier run,
//! other publishers); `seq` is the global publish sequence number (the
//! channel is `seq % channels`, the position within the channel
//! `seq / channels`); `nanos` is the *intended* send time in nanoseconds
//! since the run's clock origin, so latency is measured from when the
//! message should have been sent, not from when a possibly stalled
//! publisher got round to it (no coordinated omission).
//!
//! The marker is plain ASCII without characters that JSON, SSE or HTML
//! escape, so it survives whatever envelope a server wraps around the
//! payload, and the receiver finds it by searching the received bytes.

use std::sync::OnceLock;
use std::time::Instant;

const TAG: &[u8] = b"rcl1:";

/// The fields of a marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marker {
    /// Run (phase) identifier.
    pub run: u32,
    /// Global publish sequence number.
    pub seq: u64,
    /// Intended send time, nanoseconds since [`clock_origin`].
    pub nanos: u64,
}

impl Marker {
    /// Appends the marker and pads with `x` up to `size` bytes in total.
    pub fn encode(&self, size: usize, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(TAG);
        for (i, n) in [u64::from(self.run), self.seq, self.nanos]
            .into_iter()
            .enumerate()
        {
            if i > 0 {
                out.push(b':');
            }
            let mut b = itoa_buf(n);
            out.extend_from_slice(b.as_bytes_mut());
        }
        out.push(b';');
        while out.len() - start < size {
            out.push(b'x');
        }
    }

    /// Finds the first marker in `bytes`.
    pub fn find(bytes: &[u8]) -> Option<Marker> {
        let mut from = 0;
        while let Some(i) = find_tag(&bytes[from..]) {
            let start = from + i + TAG.len();
            if let Some(m) = parse_fields(&bytes[start..]) {
                return Some(m);
            }
            from = start;
        }
        None
    }
}

fn find_tag(hay: &[u8]) -> Option<usize> {
    hay.windows(TAG.len()).position(|w| w == TAG)
}

fn parse_fields(b: &[u8]) -> Option<Marker> {
    let mut fields = [0u64; 3];
    let mut i = 0;
    for (k, field) in fields.iter_mut().enumerate() {
        let start = i;
        let mut v: u64 = 0;
        while let Some(&c) = b.get(i) {
            if !c.is_ascii_digit() {
                break;
            }
            v = v.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
            i += 1;
        }
        if i == start {
            return None;
        }
        *field = v;
        let sep = if k < 2 { b':' } else { b';' };
        if b.get(i) != Some(&sep) {
            return None;
        }
        i += 1;
    }
    Some(Marker {
        run: u32::try_from(fields[0]).ok()?,
        seq: fields[1],
        nanos: fields[2],
    })
}

struct Digits {
    buf: [u8; 20],
    start: usize,
}

impl Digits {
    fn as_bytes_mut(&mut self) -> &[u8] {
        &self.buf[self.start..]
    }
}

fn itoa_buf(mut n: u64) -> Digits {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    Digits { buf, start: i }
}

/// The process-wide clock origin all markers and receive times refer to.
/// Publisher and subscribers live in the same process, so one monotonic
/// clock serves both ends and no clock synchronisation is needed.
pub fn clock_origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

/// Nanoseconds since [`clock_origin`].
pub fn now_nanos() -> u64 {
    clock_origin().elapsed().as_nanos() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_padding() {
        let m = Marker {
            run: 7,
            seq: 123456,
            nanos: 98765432101,
        };
        let mut out = Vec::new();
        m.encode(64, &mut out);
        assert_eq!(out.len(), 64);
        assert!(out.starts_with(b"rcl1:7:123456:98765432101;xx"));
        assert_eq!(Marker::find(&out), Some(m));
        let mut short = Vec::new();
        m.encode(0, &mut short);
        assert_eq!(short, b"rcl1:7:123456:98765432101;");
    }

    #[test]
    fn found_inside_envelopes() {
        let m = Marker {
            run: 1,
            seq: 0,
            nanos: 5,
        };
        let mut p = Vec::new();
        m.encode(10, &mut p);
        let p = String::from_utf8(p).unwrap();
        let json = format!(r#"{{"type":"message","channel":"c","id":"e-1","data":"{p}"}}"#);
        assert_eq!(Marker::find(json.as_bytes()), Some(m));
        let sse = format!("id:e-1\ndata:{p}\n\n");
        assert_eq!(Marker::find(sse.as_bytes()), Some(m));
        // A broken marker before a good one is skipped.
        let two = format!("rcl1:x:1 rcl1:9:{p}");
        assert_eq!(Marker::find(two.as_bytes()), Some(m));
    }

    #[test]
    fn garbage_is_not_a_marker() {
        for g in [
            &b""[..],
            b"rcl1:",
            b"rcl1:1:2",
            b"rcl1:1:2:3",
            b"rcl1:a:2:3;",
            b"rcl1:99999999999:2:3;",
            b"rcl1:1:99999999999999999999999:3;",
        ] {
            assert_eq!(Marker::find(g), None, "{:?}", String::from_utf8_lossy(g));
        }
    }
}
