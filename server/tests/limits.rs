//! Node-wide limits, each with its own refusal and counter, exercised
//! with independent clients (reqwest, tokio-tungstenite) against a
//! two-shard node.

mod common;

use std::time::Duration;

use common::{recv_json, Server};
use futures_util::SinkExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn max_channels_holds_across_shards() {
    let server = Server::start(&["--max-channels", "4"]);
    let http = reqwest::Client::new();
    let publish = |ch: String| {
        let req = http.post(server.url(&format!("/pub/{ch}"))).body("x");
        async move {
            let r = req.send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    // Channel names spread over both shards; each shard learns the other's
    // count within a turn.
    let mut served = 0;
    for i in 0..4 {
        let (status, body) = publish(format!("ch{i}")).await;
        assert_eq!(status, 200, "{body}");
        served += 1;
    }
    assert_eq!(served, 4);
    let owned = server
        .wait_metric("ringcast_owned_channels", "", 4, Duration::from_secs(5))
        .await;
    assert_eq!(owned, 4);
    for i in 4..8 {
        let (status, body) = publish(format!("ch{i}")).await;
        assert_eq!(
            (status, body.trim()),
            (
                503,
                "the node holds its limit of 4 channels (--max-channels); retry later"
            ),
            "ch{i}"
        );
    }
    // A multiplexed client hears the same reason.
    let (mut ws, _) = tokio_tungstenite::connect_async(server.ws_url("/ws"))
        .await
        .unwrap();
    ws.send(Message::text(
        json!({"type": "subscribe", "ch": "ch9"}).to_string(),
    ))
    .await
    .unwrap();
    let e = recv_json(&mut ws).await;
    assert_eq!(e["code"], "channel_limit", "{e}");
    assert_eq!(
        server
            .metric(
                "ringcast_requests_refused_total",
                "reason=\"channel_limit\""
            )
            .await,
        5
    );
}
