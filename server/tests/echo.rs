//! `/echo` follows RFC 6455 exactly: fragmentation, interleaved control
//! frames, the close handshake, UTF-8 validation and every close code.

mod common;

use codec::ws::OpCode;
use common::{Got, RawWs, Server};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn echoes_with_a_real_client() {
    let server = Server::start(&[]);
    let (mut ws, _) = tokio_tungstenite::connect_async(server.ws_url("/echo"))
        .await
        .unwrap();
    ws.send(Message::text("hello")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("hello"));
    let big: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
    ws.send(Message::binary(big.clone())).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::binary(big));
    ws.send(Message::Ping(b"p".to_vec().into())).await.unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::Pong(b"p".to_vec().into())
    );
    ws.close(None).await.unwrap();
    // The server answers the close and the stream ends.
    while let Some(Ok(m)) = ws.next().await {
        assert!(m.is_close(), "{m:?}");
    }
}

#[tokio::test]
async fn fragmented_messages_with_interleaved_control_frames() {
    let server = Server::start(&[]);
    let mut ws = RawWs::connect(server.addr, "/echo").await;
    ws.send(OpCode::Text, false, "κό".as_bytes()).await;
    ws.send(OpCode::Ping, true, b"in between").await;
    ws.send(OpCode::Continuation, false, b"").await;
    ws.send(OpCode::Pong, true, b"unsolicited").await;
    ws.send(OpCode::Continuation, true, "σμε".as_bytes()).await;
    assert_eq!(ws.recv().await, Got::Pong(b"in between".to_vec()));
    assert_eq!(ws.recv().await, Got::Text("κόσμε".into()));
    // Many fragments, binary, one byte each.
    let data: Vec<u8> = (0..=255).collect();
    for (i, b) in data.iter().enumerate() {
        let op = if i == 0 {
            OpCode::Binary
        } else {
            OpCode::Continuation
        };
        ws.send(op, i == data.len() - 1, &[*b]).await;
    }
    assert_eq!(ws.recv().await, Got::Binary(data));
    // A frame split byte by byte across writes.
    let mut frame = bytes::BytesMut::new();
    codec::ws::encode::masked_frame(&mut frame, OpCode::Text, true, b"slowly", [9, 9, 9, 9]);
    for b in frame.iter() {
        ws.send_raw(&[*b]).await;
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    assert_eq!(ws.recv().await, Got::Text("slowly".into()));
}

#[tokio::test]
async fn close_handshake_echoes_the_code() {
    let server = Server::start(&[]);
    for code in [1000u16, 1001, 3000, 4999] {
        let mut ws = RawWs::connect(server.addr, "/echo").await;
        let mut payload = code.to_be_bytes().to_vec();
        payload.extend_from_slice(b"bye");
        ws.send(OpCode::Close, true, &payload).await;
        ws.expect_close(code).await;
    }
    // An empty close is answered with an empty close.
    let mut ws = RawWs::connect(server.addr, "/echo").await;
    ws.send(OpCode::Close, true, b"").await;
    assert_eq!(ws.recv().await, Got::Close(None, String::new()));
    assert_eq!(ws.recv().await, Got::Eof);
}

/// Sends `frames` (raw first byte, payload) and expects a close with `code`.
async fn violation(server: &Server, frames: &[(u8, &[u8])], code: u16) -> String {
    let mut ws = RawWs::connect(server.addr, "/echo").await;
    for (first, payload) in frames {
        ws.send_first_byte(*first, payload).await;
    }
    ws.expect_close(code).await
}

#[tokio::test]
async fn protocol_violations_close_with_their_codes() {
    let server = Server::start(&["--max-message-size", "1000"]);
    type Frames<'a> = Vec<(u8, &'a [u8])>;
    let cases: Vec<(Frames, u16, &str)> = vec![
        (
            vec![(0x80 | 0x40 | 0x1, b"rsv1")],
            1002,
            "reserved bits set",
        ),
        (vec![(0x83, b"")], 1002, "reserved opcode"),
        (vec![(0x8B, b"")], 1002, "reserved opcode"),
        (vec![(0x09, b"")], 1002, "fragmented control frame"),
        (
            vec![(0x80, b"x")],
            1002,
            "continuation without a message in progress",
        ),
        (
            vec![(0x01, b"a"), (0x81, b"b")],
            1002,
            "new data frame inside a fragmented message",
        ),
        (vec![(0x88, b"\x03")], 1002, "close payload of 1 byte"),
        (vec![(0x88, b"\x03\xed")], 1002, "invalid close code"),
        (
            vec![(0x88, b"\x03\xe8\xff")],
            1007,
            "close reason is not valid UTF-8",
        ),
        (
            vec![(
                0x81,
                b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80",
            )],
            1007,
            "text message is not valid UTF-8",
        ),
        (
            vec![(0x01, b"\xce"), (0x80, b"")],
            1007,
            "text message is not valid UTF-8",
        ),
        (vec![(0x82, &[0u8; 1001])], 1009, "message too big"),
        (
            vec![(0x02, &[0u8; 600]), (0x80, &[0u8; 600])],
            1009,
            "message too big",
        ),
    ];
    for (frames, code, reason) in cases {
        let got = violation(&server, &frames, code).await;
        assert_eq!(got, reason, "{frames:x?}");
    }
    let control_too_long = [0u8; 126];
    assert_eq!(
        violation(&server, &[(0x89, &control_too_long)], 1002).await,
        "control frame over 125 bytes"
    );
    for code in [0u16, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000] {
        let payload = code.to_be_bytes();
        assert_eq!(
            violation(&server, &[(0x88, &payload)], 1002).await,
            "invalid close code",
            "{code}"
        );
    }
    // An unmasked client frame.
    let mut ws = RawWs::connect(server.addr, "/echo").await;
    ws.send_raw(&[0x81, 0x02, b'h', b'i']).await;
    assert_eq!(ws.expect_close(1002).await, "client frame not masked");
    assert!(server.metric("ringcast_protocol_errors_total", "").await >= 20);
}

#[tokio::test]
async fn invalid_utf8_fails_fast_before_the_frame_ends() {
    let server = Server::start(&[]);
    let mut ws = RawWs::connect(server.addr, "/echo").await;
    // Announce 100 bytes of text, send 4, the 2nd of which is impossible.
    let mut frame = bytes::BytesMut::new();
    let mut payload = vec![b'a'; 100];
    payload[1] = 0xff;
    codec::ws::encode::masked_frame(&mut frame, OpCode::Text, true, &payload, [0, 0, 0, 0]);
    ws.send_raw(&frame[..6 + 4]).await;
    assert_eq!(
        ws.expect_close(1007).await,
        "text message is not valid UTF-8"
    );
}

#[tokio::test]
async fn echo_can_be_disabled() {
    let server = Server::start(&["--no-echo"]);
    let err = tokio_tungstenite::connect_async(server.ws_url("/echo"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("404"), "{err}");
}
