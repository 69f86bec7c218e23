//! Sending through Microsoft Graph, shared by `m365mail send --via graph` and the bridge's Graph upstream:
//! the draft path for a message whose attachments are too large for one request (microsoft.md §8.3).

use crate::graph::mail::JsonMessage;
use crate::graph::{GraphClient, GraphError};
use crate::secret::Secret;

/// A message with large attachments: a draft with the small ones, an upload session per large one, then
/// `send`. Returns the upload requests made. A draft left by a failure stays in Drafts (nothing was sent).
pub async fn send_draft(
    client: &GraphClient,
    token: &Secret,
    mailbox: &str,
    message: &JsonMessage<'_>,
) -> Result<u32, GraphError> {
    let id = client
        .create_draft(token, mailbox, &message.message)
        .await?;
    let mut puts = 0;
    for attachment in &message.large {
        puts += client
            .upload_attachment(token, mailbox, &id, attachment)
            .await?;
    }
    client.send_draft(token, mailbox, &id).await?;
    Ok(puts)
}
