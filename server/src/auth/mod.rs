//! Who may do what: credentials, checked once per request or connection,
//! never on the delivery path.
//!
//! * [`keys`] — the publish keys of the HTTP publishing API
//!   (`--publish-key`, `--publish-key-file`): `Authorization: Bearer <key>`.
//! * [`token`] — client tokens (JWT, `--jwt-secret`, `--jwt-public-key`):
//!   who a client is, which channels it may read and publish to.
//!
//! A leaf like `config`: it knows nothing of connections; the transports
//! call it with what a request carries. docs/security.md is the threat
//! model.

pub mod keys;
pub mod token;

pub use keys::{KeyCheck, PublishKeys};
pub use token::{bearer_token, Access, TokenError, Verifier};
