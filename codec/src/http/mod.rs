//! HTTP/1.1, only as much as an edge push node needs.
//!
//! * [`parse_request`] turns the bytes of a request head into a
//!   [`RequestHead`] that borrows from them, with the headers later stages
//!   route on already picked out, or into an [`HttpError`] that names the
//!   status to answer with.
//! * [`ChunkedDecoder`] reads `Transfer-Encoding: chunked` request bodies
//!   (what `curl -T -` and streaming publishers send).
//! * [`ResponseHead`] writes status lines and headers; [`responses`] holds
//!   complete canned responses for the hot and the error paths.
//! * [`query`] splits and percent-decodes query strings.
//!
//! Only the methods ringcast serves are accepted (`GET`, `HEAD`, `POST`,
//! `OPTIONS`); anything else is answered `405` before its headers are read.

mod chunked;
pub mod query;
mod request;
pub mod response;

pub use chunked::{ChunkedDecoder, ChunkedError, ChunkedEvent};
pub use request::{
    parse_request, BodyFraming, Headers, HttpError, Limits, Method, RequestHead, TokenList,
    Version, MAX_HEADERS,
};
pub use response::{responses, ResponseHead, StatusCode};
