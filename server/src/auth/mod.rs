//! Who may do what: credentials, checked once per request or connection,
//! never on the delivery path.
//!
//! * [`keys`] — the publish keys of the HTTP publishing API
//!   (`--publish-key`, `--publish-key-file`): `Authorization: Bearer <key>`.
//!
//! A leaf like `config`: it knows nothing of connections; the transports
//! call it with what a request carries.

pub mod keys;

pub use keys::{KeyCheck, PublishKeys};
