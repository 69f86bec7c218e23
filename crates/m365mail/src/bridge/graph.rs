//! The Graph upstream, for tenants that keep SMTP AUTH switched off (`535 5.7.139`): a received message goes
//! to Microsoft Graph's `sendMail` as the profile's mailbox.
//!
//! - Up to [`MAX_INLINE_MIME`] (3 MB) the message goes **as received** through the MIME form of `sendMail`
//!   (microsoft.md §8.2), the bridge's `Received:` line included. Graph reads the recipients from the
//!   header, not from an envelope, so the envelope's recipients that no `To:`/`Cc:`/`Bcc:` field names (the
//!   device's Bcc) are added in a `Bcc:` field on top; Exchange removes it from the copies it delivers (the
//!   sender's Sent Items copy keeps it, as for any Bcc). A header recipient that is *not* in the envelope is
//!   refused (`550 5.5.0`): Graph would deliver to it, SMTP would not — a device that splits one message into
//!   several transactions must use the `xoauth2` upstream.
//! - A larger message cannot travel in one request. It is **rebuilt**, which is *not* byte-identical: parsed
//!   ([`crate::mime::parse`]) into its From, To, Cc, Reply-To, Subject, one body (the HTML one when there are
//!   both), its attachments and inline parts, its `X-` headers and its Message-ID, then sent as a draft whose
//!   large attachments go through upload sessions ([`crate::outbound::send_draft`]). Other header fields
//!   (`In-Reply-To`, `References`, `Received`, custom non-`X-` fields) and the MIME structure are Exchange's
//!   own afterwards; every attachment's bytes arrive unchanged.
//!
//! Graph always files the message in the mailbox's Sent Items (the MIME form and sent drafts cannot opt
//! out). Throttling (`429`, `503`, `504`) is retried by [`GraphClient`] after `Retry-After`.

use std::sync::Mutex;
use std::time::SystemTime;

use m365mail_proto::smtp::server::Reply;

use crate::auth::{AuthError, TokenProvider};
use crate::error::Classified as _;
use crate::graph::{GraphClient, GraphError, MAX_INLINE_MIME};
use crate::mime::{Mailbox, Outgoing, OutgoingPart};

/// How a message went through Graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GraphForm {
    /// `sendMail` with the received MIME (plus a `Bcc:` field for envelope-only recipients).
    Mime,
    /// Rebuilt as a draft, large attachments through upload sessions, then sent.
    Draft,
}

impl GraphForm {
    /// `mime` or `draft`, for audit lines.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Mime => "mime",
            Self::Draft => "draft",
        }
    }
}

/// A message Graph accepted (`202`: accepted for delivery).
#[derive(Debug, Clone)]
pub struct GraphSent {
    /// The form used.
    pub form: GraphForm,
    /// The message's Message-ID (without brackets), empty when it has none.
    pub message_id: String,
    /// Upload requests made (the draft form).
    pub upload_requests: u32,
}

/// Why a Graph relay failed.
#[derive(Debug, thiserror::Error)]
pub enum GraphRelayError {
    /// No token for Graph.
    #[error("no token for Microsoft Graph: {0}")]
    Token(#[from] AuthError),
    /// The message names a recipient the envelope does not (Graph would deliver to it).
    #[error("the header names {0}, which is not a recipient of this transaction")]
    Recipients(String),
    /// A message over 3 MB that cannot be rebuilt as a draft.
    #[error("the message cannot be rebuilt for Graph: {0}")]
    Rebuild(String),
    /// Graph refused or could not be reached.
    #[error(transparent)]
    Graph(#[from] GraphError),
}

impl GraphRelayError {
    /// Whether retrying the same message cannot help: it was refused for what it is (a bad request, an
    /// address, its size, a sender the mailbox may not use), not for the bridge's token or Graph's state.
    pub fn is_permanent(&self) -> bool {
        match self {
            Self::Token(_) => false,
            Self::Recipients(_) | Self::Rebuild(_) => true,
            Self::Graph(GraphError::TooLarge { .. }) => true,
            Self::Graph(GraphError::Api { status, code, .. }) => {
                matches!(status, 400 | 413 | 415)
                    || code.eq_ignore_ascii_case("ErrorSendAsDenied")
                    || code.eq_ignore_ascii_case("ErrorInvalidRecipients")
            }
            Self::Graph(_) => false,
        }
    }

    /// The reply a device gets (never `535`: that would tell it its own password was wrong).
    pub fn client_reply(&self, mailbox: &str) -> Reply {
        match self {
            Self::Token(e) => {
                let (code, enhanced) = if e.is_transient() {
                    (451, "4.7.0")
                } else {
                    (554, "5.7.0")
                };
                Reply::new(
                    code,
                    &format!(
                        "{enhanced} The bridge could not get a Microsoft Graph token for {mailbox}: {}. {}",
                        e.cause(),
                        e.remedy()
                    ),
                )
            }
            Self::Recipients(address) => Reply::new(
                550,
                &format!(
                    "5.5.0 The bridge sends through Microsoft Graph, which delivers to every To:/Cc:/Bcc: \
                     address of the message, and {address} is not a recipient of this transaction: send all \
                     recipients in one transaction, or have the operator use the xoauth2 upstream"
                ),
            ),
            Self::Rebuild(why) => Reply::new(
                554,
                &format!("5.6.0 A message over 3 MB cannot be rebuilt for Microsoft Graph: {why}"),
            ),
            Self::Graph(e) => graph_reply(e, mailbox),
        }
    }
}

fn graph_reply(error: &GraphError, mailbox: &str) -> Reply {
    match error {
        GraphError::Throttled { status, .. } => Reply::new(
            451,
            &format!("4.7.0 Microsoft Graph asks to try later ({status} for {mailbox})"),
        ),
        GraphError::TooLarge { size, limit } => Reply::new(
            552,
            &format!("5.3.4 Microsoft Graph: a {size}-byte message is over {limit} bytes"),
        ),
        GraphError::Api { code, .. } if code.eq_ignore_ascii_case("ErrorSendAsDenied") => {
            Reply::new(
                550,
                &format!(
                    "5.7.60 Microsoft Graph: {mailbox} may not send as this sender; grant SendAs \
                     (Add-RecipientPermission) or send as {mailbox}"
                ),
            )
        }
        GraphError::Api {
            status: 401 | 403, ..
        } => Reply::new(
            554,
            &format!(
                "5.7.3 Microsoft Graph refused the bridge's token for {mailbox}: {}. {}",
                error.cause(),
                error.remedy()
            ),
        ),
        GraphError::Api { status, .. } if *status >= 500 => Reply::new(
            451,
            &format!(
                "4.3.0 Microsoft Graph failed ({}); try again later",
                error.cause()
            ),
        ),
        GraphError::Api { .. } => Reply::new(
            554,
            &format!(
                "5.6.0 Microsoft Graph refused the message: {}",
                error.cause()
            ),
        ),
        _ => Reply::new(
            451,
            &format!(
                "4.4.1 Microsoft Graph could not be reached: {}; try again later",
                error.cause()
            ),
        ),
    }
}

/// Graph's `sendMail` as one mailbox.
pub struct GraphUpstream {
    client: GraphClient,
    provider: TokenProvider,
    mailbox: String,
    /// The expiry of the last token used (for `bridge status`).
    expires_at: Mutex<Option<SystemTime>>,
}

impl std::fmt::Debug for GraphUpstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GraphUpstream")
            .field("base", &self.client.base().as_str())
            .field("mailbox", &self.mailbox)
            .finish_non_exhaustive()
    }
}

impl GraphUpstream {
    /// Sends as `mailbox` through `client` with tokens from `provider` (delegated `Mail.Send` and
    /// `Mail.ReadWrite` — drafts need it — or app-only `Mail.Send` and `Mail.ReadWrite` roles).
    pub fn new(client: GraphClient, provider: TokenProvider, mailbox: String) -> Self {
        Self {
            client,
            provider,
            mailbox,
            expires_at: Mutex::new(None),
        }
    }

    /// The Graph base URL, for logs and audit lines.
    pub fn describe(&self) -> String {
        self.client.base().to_string()
    }

    /// The mailbox it sends as.
    pub fn mailbox(&self) -> &str {
        &self.mailbox
    }

    /// When the last token used ends.
    pub fn token_expires_at(&self) -> Option<SystemTime> {
        *self
            .expires_at
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Gets a token now (at start, to report a profile that cannot sign in before a device tries).
    pub async fn check_token(&self) -> Result<SystemTime, AuthError> {
        let token = self.provider.token().await?;
        self.remember(token.expires_at);
        Ok(token.expires_at)
    }

    fn remember(&self, expires_at: SystemTime) {
        *self
            .expires_at
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(expires_at);
    }

    /// Sends `data` (as received: CRLF lines, ending in CRLF) to `recipients` (the envelope).
    pub async fn relay(
        &self,
        recipients: &[String],
        data: Vec<u8>,
    ) -> Result<GraphSent, GraphRelayError> {
        let envelope: Vec<String> = recipients.iter().map(|r| r.to_ascii_lowercase()).collect();
        let named = crate::mime::header_recipients(&data);
        if let Some(stranger) = named.iter().find(|a| !envelope.contains(a)) {
            return Err(GraphRelayError::Recipients(stranger.clone()));
        }
        let mut envelope_only: Vec<String> = Vec::new();
        for (address, lower) in recipients.iter().zip(&envelope) {
            if !named.contains(lower)
                && !envelope_only
                    .iter()
                    .any(|a| a.eq_ignore_ascii_case(address))
            {
                envelope_only.push(address.clone());
            }
        }
        let message_id = crate::mime::message_id(&data).unwrap_or_default();
        let token = self.provider.token().await?;
        self.remember(token.expires_at);
        let mime = with_bcc(&envelope_only, &data);
        if mime.len() <= MAX_INLINE_MIME {
            drop(data);
            self.client
                .send_mime(&token.token, &self.mailbox, &mime)
                .await?;
            return Ok(GraphSent {
                form: GraphForm::Mime,
                message_id,
                upload_requests: 0,
            });
        }
        drop(mime);
        let outgoing = rebuild(&data, &envelope_only).map_err(GraphRelayError::Rebuild)?;
        drop(data);
        let id = outgoing.message_id.clone().unwrap_or_else(|| {
            let domain = self
                .mailbox
                .rsplit_once('@')
                .map_or("localhost", |(_, d)| d);
            format!("{}@{domain}", uuid::Uuid::new_v4().simple())
        });
        let json =
            crate::graph::mail::json_message(&outgoing, &id).map_err(GraphRelayError::Rebuild)?;
        let upload_requests =
            crate::outbound::send_draft(&self.client, &token.token, &self.mailbox, &json).await?;
        Ok(GraphSent {
            form: GraphForm::Draft,
            message_id: id,
            upload_requests,
        })
    }
}

/// `data` with a `Bcc:` field naming `bcc` on top (nothing added when empty). The addresses are envelope
/// recipients the SMTP core already checked: no CR, LF or other control character.
pub fn with_bcc(bcc: &[String], data: &[u8]) -> Vec<u8> {
    if bcc.is_empty() {
        return data.to_vec();
    }
    let field = format!("Bcc: {}\r\n", bcc.join(",\r\n "));
    let mut out = Vec::with_capacity(field.len() + data.len());
    out.extend_from_slice(field.as_bytes());
    out.extend_from_slice(data);
    out
}

/// A received message as an [`Outgoing`] for Graph's JSON form (see the module docs for what is kept).
fn rebuild(data: &[u8], bcc: &[String]) -> Result<Outgoing, String> {
    let parsed = crate::mime::parse(data).map_err(|e| e.to_string())?;
    let from = parsed
        .from
        .first()
        .cloned()
        .ok_or_else(|| "it has no From: address".to_owned())?;
    let parts = parsed
        .attachments
        .into_iter()
        .enumerate()
        .map(|(n, a)| OutgoingPart {
            name: a
                .name
                .clone()
                .unwrap_or_else(|| format!("attachment-{}", n + 1)),
            content_type: a.content_type.clone(),
            content_id: if a.inline { a.content_id.clone() } else { None },
            data: a.data,
        })
        .collect();
    let headers = parsed
        .headers
        .into_iter()
        .filter(|(name, _)| name.get(..2).is_some_and(|p| p.eq_ignore_ascii_case("x-")))
        .collect();
    Ok(Outgoing {
        from: Some(from),
        to: parsed.to,
        cc: parsed.cc,
        bcc: bcc
            .iter()
            .map(|address| Mailbox {
                name: None,
                address: Some(address.clone()),
            })
            .collect(),
        reply_to: parsed.reply_to,
        subject: parsed.subject,
        // Graph's JSON message takes one body: the HTML one when there are both.
        text: if parsed.html.is_some() {
            None
        } else {
            parsed.text
        },
        html: parsed.html,
        parts,
        headers,
        in_reply_to: None,
        references: Vec::new(),
        message_id: parsed.message_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_only_recipients_become_one_bcc_field_on_top() {
        let data = b"From: a@b.c\r\nTo: a@b.c\r\n\r\nx\r\n";
        assert_eq!(with_bcc(&[], data), data.to_vec());
        let out = with_bcc(&["x@y.z".into(), "w@y.z".into()], data);
        assert!(out.starts_with(b"Bcc: x@y.z,\r\n w@y.z\r\nFrom: a@b.c\r\n"));
        assert_eq!(
            crate::mime::header_recipients(&out),
            ["a@b.c", "x@y.z", "w@y.z"]
        );
    }

    #[test]
    fn a_large_message_is_rebuilt_with_its_attachment_bytes_and_one_body() {
        let data = b"From: Scanner <scan@contoso.com>\r\nTo: a@contoso.com\r\nSubject: Scan\r\n\
X-Job: 7\r\nIn-Reply-To: <p@q>\r\nMessage-ID: <scan.1@printer>\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nhello\r\n\
--b\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename=\"s.pdf\"\r\n\
Content-Transfer-Encoding: base64\r\n\r\nJVBERg==\r\n--b--\r\n";
        let outgoing = rebuild(data, &["boss@contoso.com".into()]).unwrap();
        assert_eq!(outgoing.message_id.as_deref(), Some("scan.1@printer"));
        assert_eq!(outgoing.parts[0].name, "s.pdf");
        assert_eq!(outgoing.parts[0].data, b"%PDF");
        assert_eq!(outgoing.headers, [("X-Job".to_owned(), "7".to_owned())]);
        assert_eq!(outgoing.bcc[0].address.as_deref(), Some("boss@contoso.com"));
        assert_eq!(outgoing.in_reply_to, None);
        let json = crate::graph::mail::json_message(&outgoing, "scan.1@printer").unwrap();
        assert_eq!(json.message["internetMessageId"], "<scan.1@printer>");
        assert!(rebuild(b"To: a@b.c\r\n\r\nx\r\n", &[]).is_err());
    }

    #[test]
    fn what_the_message_itself_causes_is_permanent_and_the_rest_is_retried() {
        let api = |status: u16, code: &str| {
            GraphRelayError::Graph(GraphError::Api {
                method: "POST",
                path: "/v1.0/users/a/sendMail".into(),
                status,
                code: code.into(),
                message: "m".into(),
                request_id: None,
                client_request_id: "c".into(),
                permission: crate::graph::MAIL_SEND,
            })
        };
        assert!(api(400, "ErrorMimeContentInvalidHeader").is_permanent());
        assert!(api(403, "ErrorSendAsDenied").is_permanent());
        assert!(!api(403, "ErrorAccessDenied").is_permanent());
        assert!(!api(503, "serviceNotAvailable").is_permanent());
        assert!(GraphRelayError::Recipients("x@y.z".into()).is_permanent());
        let reply = api(403, "ErrorAccessDenied").client_reply("a@b.c");
        assert_eq!(reply.code(), 554);
        assert!(reply.text().starts_with("5.7.3 "), "{}", reply.text());
        let reply = GraphRelayError::Recipients("x@y.z".into()).client_reply("a@b.c");
        assert_eq!(reply.code(), 550);
    }
}
