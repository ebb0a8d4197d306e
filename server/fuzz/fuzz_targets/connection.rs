//! The server's connection state machines — HTTP requests and publishes,
//! WebSocket echo and subscribers, the multiplexed `/ws` protocol, event
//! streams, polls — on one sans-io node (`transport::testing::Node`), fed
//! arbitrary input between deliveries and clock ticks.
//!
//! Input: byte 0 picks how the connection starts (a WebSocket upgrade to
//! one of four paths, with or without permessage-deflate (bit 3), an event
//! stream, a long poll, or raw HTTP); the rest is records
//! `[action][len][len bytes]`. The action's top three bits say what to
//! do: 0 advance the clock (low five bits, in 100 ms ticks), 1 publish the
//! bytes to `room`, anything else send them — as one masked frame (the low
//! nibble its opcode, bit 4 FIN, bit 5 RSV1) on a WebSocket, raw
//! otherwise. Nothing may panic, and once the connection is gone nothing
//! of it stays subscribed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringcast::config::DeflateSettings;
use ringcast::transport::testing::{get, upgrade, upgrade_offering, Node};

const UPGRADES: [&str; 4] = ["/echo", "/ws", "/ws/room", "/ws/room?format=json"];

/// One masked client frame with a raw opcode nibble (reserved ones too).
fn frame(action: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![(action & 0x10) << 3 | (action & 0x20) << 1 | (action & 0x0f)];
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
    }
    let key = [0x37, 0xfa, 0x21, 0x3d];
    out.extend_from_slice(&key);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, mut rest)) = data.split_first() else {
        return;
    };
    let mut node = Node::with(|s| {
        s.client_publish = true;
        s.max_message_size = 4096;
        s.deflate = Some(DeflateSettings {
            min_size: 16,
            level: 1,
        });
    });
    let c = node.connect();
    let websocket = match mode % 16 {
        m @ 0..=3 => {
            node.input(c, &upgrade(UPGRADES[m as usize]));
            true
        }
        m @ 8..=11 => {
            let offer = "permessage-deflate; client_max_window_bits";
            node.input(c, &upgrade_offering(UPGRADES[m as usize - 8], offer));
            true
        }
        4 | 12 => {
            node.input(c, &get("/sse/room", &[]));
            false
        }
        5 | 13 => {
            node.input(c, &get("/poll/room?timeout=5", &[]));
            false
        }
        _ => false,
    };
    let mut published = 0u32;
    while let [action, len, tail @ ..] = rest {
        let n = (*len as usize).min(tail.len());
        let (payload, next) = tail.split_at(n);
        rest = next;
        match action >> 5 {
            0 => node.advance((action & 31).into()),
            1 if published < 64 => {
                published += 1;
                node.publish("room", codec::ws::DataKind::Binary, payload);
            }
            1 => {}
            _ if websocket => node.input(c, &frame(*action, payload)),
            _ => node.input(c, payload),
        }
        node.take_output(c);
    }
    // Past every timeout, then gone: nothing of it may stay subscribed.
    node.advance(1500);
    node.take_output(c);
    if !node.is_closed(c) {
        node.hang_up(c);
    }
    assert_eq!(node.subscriptions("room"), 0, "a closed connection left a subscription");
});
