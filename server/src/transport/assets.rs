//! Files the node serves from its own binary: the browser client
//! (`/client.js`, from `client/`) and, with `--demo`, the chat demo (`/`,
//! from `demo/`). Built in, so a node is one file to deploy and the client
//! it serves always speaks its protocol.
//!
//! Each answer carries an `ETag` (a hash of the content, the same for every
//! node running this build), so a browser revalidates with
//! `If-None-Match` and gets `304`; `Cache-Control` lets it reuse the client
//! for a minute before asking.

use std::sync::OnceLock;

use codec::http::RequestHead;

/// A file served as is.
#[derive(Debug)]
pub struct Asset {
    /// `Content-Type`.
    pub content_type: &'static str,
    /// `Cache-Control`.
    pub cache_control: &'static str,
    /// The content.
    pub body: &'static [u8],
    /// Its entity tag, computed on first use.
    tag: OnceLock<String>,
}

static CLIENT: Asset = Asset {
    content_type: "text/javascript; charset=utf-8",
    cache_control: "public, max-age=60",
    body: include_bytes!("../../../client/ringcast.js"),
    tag: OnceLock::new(),
};

static CLIENT_TYPES: Asset = Asset {
    content_type: "application/typescript; charset=utf-8",
    cache_control: "public, max-age=60",
    body: include_bytes!("../../../client/ringcast.d.ts"),
    tag: OnceLock::new(),
};

static DEMO: Asset = Asset {
    content_type: "text/html; charset=utf-8",
    cache_control: "no-cache",
    body: include_bytes!("../../../demo/index.html"),
    tag: OnceLock::new(),
};

/// The asset at `path`, if any (the demo only with `--demo`).
pub fn find(path: &str, demo: bool) -> Option<&'static Asset> {
    match path {
        "/client.js" => Some(&CLIENT),
        "/client.d.ts" => Some(&CLIENT_TYPES),
        "/" | "/index.html" if demo => Some(&DEMO),
        _ => None,
    }
}

impl Asset {
    /// The quoted entity tag of the content.
    pub fn etag(&self) -> &str {
        self.tag.get_or_init(|| tag_of(self.body))
    }

    /// Whether the request's `If-None-Match` names the current content.
    pub fn is_fresh(&self, head: &RequestHead<'_>) -> bool {
        let etag = self.etag();
        let bare = etag.trim_matches('"');
        head.headers.if_none_match.items().any(|item| {
            let item = item.strip_prefix(b"W/").unwrap_or(item);
            item == b"*" || item == etag.as_bytes() || item == bare.as_bytes()
        })
    }
}

/// FNV-1a over the content: a validator, not a security measure.
fn tag_of(body: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in body {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("\"{h:016x}-{}\"", body.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_has_its_own_stable_tag() {
        let client = find("/client.js", false).unwrap();
        assert_eq!(client.etag(), client.etag());
        assert_ne!(client.etag(), find("/", true).unwrap().etag());
        assert!(
            find("/", false).is_none(),
            "the demo is served only with --demo"
        );
        assert!(client.etag().starts_with('"') && client.etag().ends_with('"'));
    }
}
