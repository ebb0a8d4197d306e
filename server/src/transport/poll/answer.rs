//! How a poll ends: its answer, with the cursor to send next as `ETag`.

use codec::http::StatusCode;

use crate::transport::context::Context;
use crate::transport::response::{self, Answer};

/// What became of a poll after an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Outcome {
    /// Still held.
    Held,
    /// Answered: the connection serves its next request (or closes, if the
    /// request did not keep it alive).
    Answered(Answer),
}

/// Writes a poll's answer: `status`, `ETag: "<cursor>"`, no caching, and
/// the JSON `body` if any. A draining node answers and closes.
pub fn respond(
    ctx: &mut impl Context,
    answer: Answer,
    status: StatusCode,
    cursor: &str,
    body: Option<&[u8]>,
) -> Outcome {
    let answer = Answer {
        keep_alive: answer.keep_alive && !ctx.draining(),
        ..answer
    };
    let etag = format!("\"{cursor}\"");
    let extra = [("ETag", etag.as_str()), ("Cache-Control", "no-cache")];
    let (content_type, body) = match body {
        Some(body) => ("application/json", body),
        None => ("", &b""[..]),
    };
    response::respond(ctx, answer, status, content_type, body, &extra, false);
    Outcome::Answered(answer)
}
