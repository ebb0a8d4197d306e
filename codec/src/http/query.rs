//! Query strings and percent-decoding.
//!
//! Query strings are read as `application/x-www-form-urlencoded` (`+` is a
//! space); paths with [`percent_decode`] (where `+` is itself). Decoding is
//! strict: a `%` not followed by two hex digits, or bytes that do not form
//! UTF-8, are errors rather than being passed through, so that two spellings
//! can never name the same channel.

use std::borrow::Cow;

/// Why a percent-encoded string could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// `%` not followed by two hex digits.
    BadEscape,
    /// The decoded bytes are not UTF-8.
    NotUtf8,
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DecodeError::BadEscape => "'%' must be followed by two hex digits",
            DecodeError::NotUtf8 => "percent-decoded bytes are not UTF-8",
        })
    }
}

impl std::error::Error for DecodeError {}

/// Decodes `%XX` escapes. Borrows when there is nothing to decode.
pub fn percent_decode(s: &str) -> Result<Cow<'_, str>, DecodeError> {
    decode(s, false)
}

/// Decodes a form-encoded component: `%XX` escapes and `+` as space.
pub fn form_decode(s: &str) -> Result<Cow<'_, str>, DecodeError> {
    decode(s, true)
}

fn decode(s: &str, plus_is_space: bool) -> Result<Cow<'_, str>, DecodeError> {
    let needs_work = s.bytes().any(|b| b == b'%' || (plus_is_space && b == b'+'));
    if !needs_work {
        return Ok(Cow::Borrowed(s));
    }
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'%' => {
                let hi = bytes.next().and_then(hex_value);
                let lo = bytes.next().and_then(hex_value);
                match (hi, lo) {
                    (Some(hi), Some(lo)) => out.push(hi << 4 | lo),
                    _ => return Err(DecodeError::BadEscape),
                }
            }
            b'+' if plus_is_space => out.push(b' '),
            _ => out.push(b),
        }
    }
    String::from_utf8(out)
        .map(Cow::Owned)
        .map_err(|_| DecodeError::NotUtf8)
}

/// The value of an ASCII hex digit (shared with the chunked decoder).
pub(crate) fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The `name=value` pairs of a query string, still encoded. A pair without
/// `=` has an empty value; empty pairs (`a=1&&b=2`) are skipped.
pub fn pairs(query: &str) -> impl Iterator<Item = (&str, &str)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
}

/// The first value of `name` in `query`, decoded. Names are compared after
/// decoding.
pub fn find<'q>(query: &'q str, name: &str) -> Result<Option<Cow<'q, str>>, DecodeError> {
    for (k, v) in pairs(query) {
        if form_decode(k)? == name {
            return form_decode(v).map(Some);
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_escapes_and_plus() {
        assert_eq!(form_decode("a+b%20c%2Bd").unwrap(), "a b c+d");
        assert_eq!(percent_decode("a+b%2f").unwrap(), "a+b/");
        assert_eq!(percent_decode("caf%C3%A9").unwrap(), "café");
        assert!(matches!(
            percent_decode("plain").unwrap(),
            Cow::Borrowed("plain")
        ));
    }

    #[test]
    fn rejects_bad_escapes_and_non_utf8() {
        assert_eq!(percent_decode("%"), Err(DecodeError::BadEscape));
        assert_eq!(percent_decode("%4"), Err(DecodeError::BadEscape));
        assert_eq!(percent_decode("%zz"), Err(DecodeError::BadEscape));
        assert_eq!(percent_decode("%ff"), Err(DecodeError::NotUtf8));
    }

    #[test]
    fn finds_parameters() {
        let q = "a=1&&since=x%3A2&flag&a=2";
        assert_eq!(find(q, "a").unwrap().as_deref(), Some("1"));
        assert_eq!(find(q, "since").unwrap().as_deref(), Some("x:2"));
        assert_eq!(find(q, "flag").unwrap().as_deref(), Some(""));
        assert_eq!(find(q, "none").unwrap(), None);
        assert_eq!(find("since=%zz", "since"), Err(DecodeError::BadEscape));
        assert_eq!(pairs(q).count(), 4);
    }
}
