//! Event streams (`/sse/...`) as the durable tests read them: each
//! message event's (id, data), with position events (an id, no data) left
//! out.

use std::time::Duration;

use futures_util::{Stream, StreamExt};

use super::Server;

/// How long a test waits for one event.
const WAIT: Duration = Duration::from_secs(10);

/// An event stream of `path` presenting `token` as a bearer token: its
/// message events' (id, data), read as they come.
pub async fn stream(
    node: &Server,
    path: &str,
    token: &str,
) -> impl Stream<Item = (String, String)> {
    let resp = reqwest::Client::new()
        .get(node.url(path))
        .header("Authorization", format!("Bearer {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    eventsource_stream::Eventsource::eventsource(resp.bytes_stream()).filter_map(|e| async move {
        let e = e.unwrap();
        // Position events (an id, no data) are not messages.
        (e.event == "message" && !e.data.is_empty()).then_some((e.id, e.data))
    })
}

/// The next `n` events of `s`, each within 10 s.
pub async fn take<S: Stream<Item = (String, String)> + Unpin>(
    s: &mut S,
    n: usize,
) -> Vec<(String, String)> {
    let mut got = Vec::new();
    while got.len() < n {
        let e = tokio::time::timeout(WAIT, s.next())
            .await
            .expect("an event")
            .expect("open");
        got.push(e);
    }
    got
}
