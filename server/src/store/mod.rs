//! The store: messages that survive a restart (issue 14, stage 1 — not
//! wired into the node yet). So far only its on-disk encoding.

pub mod codec;
