//! Who may do what: credentials, checked once per request or connection,
//! never on the delivery path.
//!
//! * [`keys`] — the publish keys of the HTTP publishing API
//!   (`--publish-key`, `--publish-key-file`): `Authorization: Bearer <key>`.
//! * [`token`] — client tokens (JWT, `--jwt-secret`, `--jwt-public-key`):
//!   who a client is, which channels it may read and publish to.
//! * [`ticket`] — single-use tickets a token is exchanged for
//!   (`POST /ticket`), for URLs (`?ticket=`).
//!
//! A leaf like `config`: it knows nothing of connections; the transports
//! call it with what a request carries. docs/security.md is the threat
//! model.

pub mod keys;
pub mod ticket;
pub mod token;

pub use keys::{KeyCheck, PublishKeys};
pub use ticket::Tickets;
pub use token::{bearer_token, Access, TokenError, Verifier};
