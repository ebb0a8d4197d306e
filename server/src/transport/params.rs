//! Request parameters several transports share.

use codec::http::RequestHead;

use crate::hub::MsgId;

/// The `since` query parameter: `Ok(None)` when absent; the error is the
/// reason to answer with.
pub fn since(head: &RequestHead<'_>) -> Result<Option<MsgId>, String> {
    match head.query_param("since") {
        Ok(None) => Ok(None),
        Ok(Some(s)) => s
            .parse::<MsgId>()
            .map(Some)
            .map_err(|e| format!("invalid since: {e}")),
        Err(e) => Err(format!("invalid since: {e}")),
    }
}
