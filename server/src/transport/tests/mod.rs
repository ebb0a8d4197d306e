//! Protocol tests on the in-memory node (`super::testing`): no sockets and
//! no sleeps; time moves only when a test calls `Node::advance`, so every
//! deadline is checked to the tick. One concept per file.

mod close;
mod cursors;
mod deflate;
mod heartbeat;
mod http;
mod mux;
mod plans;
mod poll;
mod receipts;
mod slow_consumer;
mod split;
mod sse;
