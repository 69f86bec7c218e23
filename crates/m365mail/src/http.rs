//! Reply bodies read with a bound: [`read_bounded`].
//!
//! Every HTTP client of this crate (the token client, and the Graph client after it) reads JSON and error
//! bodies through [`read_bounded`] with [`MAX_REPLY_BODY`], so a hostile or broken server cannot make it hold
//! more than 1 MiB of one reply: reading stops at the limit and the connection is closed, not drained.
//! Downloads of mail content (MIME) have their own, larger bound (the read command's maximum message size).

/// The most a JSON or error reply body may hold: 1 MiB. Entra's replies are a few KiB.
pub const MAX_REPLY_BODY: usize = 1024 * 1024;

/// A reply body read up to a limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoundedBody {
    /// The bytes read: the whole body, or its first `limit` bytes when it is longer.
    pub bytes: Vec<u8>,
    /// Whether the body is longer than the limit (then `bytes` holds its first `limit` bytes and the rest was
    /// never read).
    pub truncated: bool,
}

/// Reads `response`'s body chunk by chunk, keeping at most `limit` bytes. A longer body is not read further:
/// the response (and with it the connection) is dropped and the result says `truncated`. Memory stays at
/// `limit` plus one chunk whatever the server sends or declares in `Content-Length`.
pub async fn read_bounded(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<BoundedBody, reqwest::Error> {
    let declared = response
        .content_length()
        .map_or(8 * 1024, |n| usize::try_from(n).unwrap_or(usize::MAX));
    let mut bytes = Vec::with_capacity(declared.min(limit));
    while let Some(chunk) = response.chunk().await? {
        let room = limit - bytes.len();
        if chunk.len() > room {
            bytes.extend_from_slice(&chunk[..room]);
            return Ok(BoundedBody {
                bytes,
                truncated: true,
            });
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(BoundedBody {
        bytes,
        truncated: false,
    })
}
