//! Every request body is read whole, up to [`crate::MAX_REQUEST_BODY_BYTES`], before any handler runs.
//!
//! Two reasons. A handler that answered without reading the body (the admin operations that take no
//! input) finished its HTTP/2 stream while the client was still sending; h2 then resets the stream
//! (RST_STREAM, as RFC 9113 §8.1 allows), and curl reports the call as failed (error 92) instead of
//! showing the answer. And the size limit answers in Entra's JSON shape, like every other error,
//! instead of axum's text/plain 413.
//!
//! Microsoft Graph's routes (`/v1.0/…`) have their own limit ([`crate::graph::MAX_REQUEST_BODY_BYTES`]) and
//! refuse a larger body in Graph's shape (413 `ErrorRequestEntityTooLarge`, with Graph's ids): the request
//! goes on without its body, marked [`crate::graph::BodyTooLarge`], and the Graph middleware answers it.
//!
//! Elsewhere a body over the limit is refused with HTTP 413, `invalid_request`, AADSTS9002313 (Entra documents
//! no code for an oversized request; this is its generic malformed-request code). Before answering,
//! the rest of the body is read and thrown away, so the client can finish sending and the stream
//! ends normally instead of being reset; that draining is itself bounded ([`DRAIN_LIMIT_BYTES`],
//! [`DRAIN_TIMEOUT`]): a client that sends more, or for longer, gets the answer and then the reset.

use std::{pin::Pin, sync::Arc, time::Duration};

use axum::{
    body::{Body, Bytes, HttpBody},
    extract::{Request, State},
    http::header,
    middleware::Next,
    response::Response,
};

use crate::{
    MAX_REQUEST_BODY_BYTES,
    identity::state::IdentityState,
    identity::{add_token_headers, client_request_id, errors::EntraError},
};

/// How much of an oversized body is read (and discarded) so the client can finish sending.
pub(crate) const DRAIN_LIMIT_BYTES: usize = 64 * 1024 * 1024;

/// How long an oversized body is drained at most.
pub(crate) const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Middleware: replaces the streaming body by the whole body read into memory, or answers 413.
pub(crate) async fn read_whole_body(
    State(state): State<Arc<IdentityState>>,
    request: Request,
    next: Next,
) -> Response {
    let (parts, body) = request.into_parts();
    let announced = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    // A raw message delivered through the admin API may be as large as a mailbox takes; Graph takes its
    // own limit and answers in its own shape (the Graph middleware renders the refusal); nothing else.
    let graph = crate::graph::is_graph_path(parts.uri.path());
    let limit = if crate::admin::is_delivery(&parts.method, parts.uri.path()) {
        crate::admin::MAX_DELIVER_BYTES
    } else if graph {
        crate::graph::MAX_REQUEST_BODY_BYTES
    } else {
        MAX_REQUEST_BODY_BYTES
    };
    let outcome = match announced {
        Some(length) if length > limit as u64 => Err(Refusal::TooLarge(body)),
        _ => read_limited(body, limit).await,
    };
    let error = match outcome {
        Ok(bytes) => {
            return next
                .run(Request::from_parts(parts, Body::from(bytes)))
                .await;
        }
        Err(Refusal::TooLarge(rest)) => {
            let _ = tokio::time::timeout(DRAIN_TIMEOUT, drain(rest, DRAIN_LIMIT_BYTES)).await;
            tracing::debug!(path = %parts.uri.path(), "request body over the limit refused");
            if graph {
                // Graph answers with its own error JSON and ids: its middleware sees the marker.
                let mut request = Request::from_parts(parts, Body::empty());
                request.extensions_mut().insert(crate::graph::BodyTooLarge);
                return next.run(request).await;
            }
            EntraError::request_too_large(limit)
        }
        // The client broke off mid-body; it will hardly read the answer, but give it one.
        Err(Refusal::Unreadable) => {
            EntraError::invalid_request("The request body could not be read.")
        }
    };
    let request_id = client_request_id(&parts.headers);
    let mut response = error.into_response_correlated(state.clock.as_ref(), request_id.as_deref());
    add_token_headers(&mut response, request_id.as_deref());
    response
}

/// Why a body was not read.
enum Refusal {
    /// Over the limit; carries the unread rest.
    TooLarge(Body),
    /// The connection failed mid-body.
    Unreadable,
}

/// Reads the body if it has at most `limit` bytes.
async fn read_limited(mut body: Body, limit: usize) -> Result<Bytes, Refusal> {
    let mut whole = Vec::new();
    while let Some(data) = next_data(&mut body).await {
        let data = data.map_err(|_| Refusal::Unreadable)?;
        if whole.len() + data.len() > limit {
            return Err(Refusal::TooLarge(body));
        }
        whole.extend_from_slice(&data);
    }
    Ok(Bytes::from(whole))
}

/// Reads and discards up to `limit` more bytes, until the body ends or fails.
async fn drain(mut body: Body, limit: usize) {
    let mut drained = 0_usize;
    while let Some(Ok(data)) = next_data(&mut body).await {
        drained = drained.saturating_add(data.len());
        if drained > limit {
            return;
        }
    }
}

/// The next chunk of data (trailers are skipped), `None` at the end of the body.
async fn next_data(body: &mut Body) -> Option<Result<Bytes, axum::Error>> {
    loop {
        let frame =
            std::future::poll_fn(|context| Pin::new(&mut *body).poll_frame(context)).await?;
        match frame {
            Ok(frame) => {
                if let Ok(data) = frame.into_data() {
                    return Some(Ok(data));
                }
            }
            Err(error) => return Some(Err(error)),
        }
    }
}
