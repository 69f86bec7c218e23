//! The direct upstream: the received message relayed byte for byte to the profile's SMTP submission server
//! with SASL XOAUTH2 (the [`SmtpSender`] that `m365mail send` uses), a token from the profile's
//! [`TokenProvider`], one reused connection, and a new sign-in before the token expires. Its failures become
//! the reply the device sees ([`client_reply`]): never `535` (that would tell the device its own password
//! was wrong), a `4xx` for what may pass, a `5xx` with the reason for what will not.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use m365mail_proto::smtp::server::Reply;

use crate::auth::{AuthError, TokenProvider};
use crate::mime::BuiltMessage;
use crate::smtp::{Rejection, SmtpError, SmtpOptions, SmtpSender, Submit as _, Submitted};
use crate::time::Clock;

/// A token this close to expiry is renewed (and the upstream signed in again) before the next message.
const RENEW_BEFORE: Duration = Duration::from_secs(300);

/// How long a message waits for its profile's upstream connection, busy with other devices' messages.
const QUEUE_WAIT: Duration = Duration::from_secs(120);

/// Why a relay failed.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// No token for the upstream.
    #[error("no token for the upstream: {0}")]
    Token(#[from] AuthError),
    /// The upstream connection stayed busy with other devices' messages for too long; nothing was sent.
    #[error("the upstream stayed busy for {} s", .0.as_secs())]
    Busy(Duration),
    /// The upstream refused or could not be reached.
    #[error(transparent)]
    Smtp(#[from] SmtpError),
}

struct Current {
    sender: SmtpSender,
    expires_at: SystemTime,
}

/// SMTP with XOAUTH2 as one mailbox.
pub struct SmtpUpstream {
    provider: TokenProvider,
    options: SmtpOptions,
    mailbox: String,
    clock: Arc<dyn Clock>,
    current: tokio::sync::Mutex<Option<Current>>,
    /// Connections opened by senders already replaced.
    earlier_connections: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for SmtpUpstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpUpstream")
            .field("endpoint", &self.options.endpoint.address.to_string())
            .field("mailbox", &self.mailbox)
            .finish_non_exhaustive()
    }
}

impl SmtpUpstream {
    /// Relays as `mailbox` (the XOAUTH2 `user=`) to `options`' server with tokens from `provider`.
    pub fn new(
        provider: TokenProvider,
        options: SmtpOptions,
        mailbox: String,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            provider,
            options,
            mailbox,
            clock,
            current: tokio::sync::Mutex::new(None),
            earlier_connections: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Connections opened to the upstream so far (one per sign-in: a new token, a broken or idle connection).
    pub async fn connections_opened(&self) -> u64 {
        let current = self
            .current
            .lock()
            .await
            .as_ref()
            .map_or(0, |c| c.sender.connections_opened());
        self.earlier_connections
            .load(std::sync::atomic::Ordering::Relaxed)
            + current
    }

    async fn retire(&self, old: Current) {
        self.earlier_connections.fetch_add(
            old.sender.connections_opened(),
            std::sync::atomic::Ordering::Relaxed,
        );
        old.sender.close().await;
    }

    /// `smtp://host:port`, for logs and audit lines.
    pub fn describe(&self) -> String {
        format!("smtp://{}", self.options.endpoint.address)
    }

    /// The mailbox it signs in as.
    pub fn mailbox(&self) -> &str {
        &self.mailbox
    }

    /// When the token of the current upstream connection ends (`None` before the first message).
    pub async fn token_expires_at(&self) -> Option<SystemTime> {
        self.current.lock().await.as_ref().map(|c| c.expires_at)
    }

    /// Whether `error` refuses the message itself, so that sending it again cannot help: a 5xx reply to the
    /// message or its addresses. A refusal of the bridge's own sign-in (`535`: a token, rights, SMTP AUTH
    /// switched off) or a missing token is the operator's to fix, and the message waits for that.
    pub fn is_permanent(error: &RelayError) -> bool {
        match error {
            RelayError::Smtp(SmtpError::Refused {
                code, rejection, ..
            }) => {
                *code >= 500
                    && !matches!(
                        rejection,
                        Rejection::AuthFailed
                            | Rejection::SmtpAuthDisabled
                            | Rejection::BasicAuthRefused
                    )
            }
            RelayError::Smtp(SmtpError::BadAddress { .. }) => true,
            _ => false,
        }
    }

    /// Gets a token now (at start, to report a profile that cannot sign in before a device tries).
    pub async fn check_token(&self) -> Result<SystemTime, AuthError> {
        Ok(self.provider.token().await?.expires_at)
    }

    /// Relays one message: `data` as received (CRLF lines, dot-unstuffed, ending in CRLF).
    pub async fn relay(
        &self,
        from: &str,
        recipients: &[String],
        data: Vec<u8>,
    ) -> Result<Submitted, RelayError> {
        // Messages of one profile go one at a time over its connection: a device waits its turn, but not
        // past the bound (it gets 451 and retries; nothing was sent for it).
        let Ok(mut current) = tokio::time::timeout(QUEUE_WAIT, self.current.lock()).await else {
            return Err(RelayError::Busy(QUEUE_WAIT));
        };
        let renew = current.as_ref().is_none_or(|c| {
            c.expires_at
                .duration_since(self.clock.now())
                .unwrap_or_default()
                < RENEW_BEFORE
        });
        if renew {
            let token = self.provider.token().await?;
            if current
                .as_ref()
                .is_none_or(|c| c.expires_at != token.expires_at)
            {
                if let Some(old) = current.take() {
                    self.retire(old).await;
                }
                *current = Some(Current {
                    sender: SmtpSender::new(&self.options, &self.mailbox, &token.token)?,
                    expires_at: token.expires_at,
                });
            }
        }
        let Some(live) = current.as_ref() else {
            unreachable!("a sender was just made");
        };
        let message = BuiltMessage {
            message_id: crate::mime::message_id(&data).unwrap_or_default(),
            bytes: data,
            envelope_from: from.to_owned(),
            recipients: recipients.to_vec(),
        };
        let result = live.sender.submit(&message).await;
        if matches!(
            result.as_ref().map_err(SmtpError::rejection),
            Err(Some(Rejection::AuthFailed))
        ) {
            // A token refused mid-life (revoked, rights changed): sign in afresh next time.
            if let Some(old) = current.take() {
                self.retire(old).await;
            }
        }
        Ok(result?)
    }

    /// Closes the upstream connection.
    pub async fn close(&self) {
        let old = self.current.lock().await.take();
        if let Some(old) = old {
            self.retire(old).await;
        }
    }
}

/// The reply a device gets for a failed relay through `upstream` as `mailbox`.
pub fn client_reply(error: &RelayError, mailbox: &str, upstream: &str) -> Reply {
    let error = match error {
        RelayError::Token(e) => {
            let code = if e.is_transient() { 451 } else { 554 };
            let enhanced = if code == 451 { "4.7.0" } else { "5.7.0" };
            return Reply::new(
                code,
                &format!(
                    "{enhanced} The bridge could not get a Microsoft 365 token for {mailbox}: {}. {}",
                    e.cause(),
                    e.remedy()
                ),
            );
        }
        RelayError::Busy(waited) => {
            return Reply::new(
                451,
                &format!(
                    "4.4.5 The bridge's connection to Microsoft 365 for {mailbox} stayed busy for {} s; try again",
                    waited.as_secs()
                ),
            );
        }
        RelayError::Smtp(e) => e,
    };
    let upstream_text = match error {
        SmtpError::Refused { code, text, .. } => format!("{code} {text}"),
        other => other.to_string(),
    };
    let (code, text) = match error {
        SmtpError::Refused { .. } => match error.rejection() {
            Some(Rejection::SmtpAuthDisabled) => (
                554,
                format!(
                    "5.7.139 Microsoft 365 has SMTP AUTH switched off for {mailbox} or its tenant, so the \
                     bridge cannot relay over SMTP. An administrator can allow it for this mailbox \
                     (Set-CASMailbox -Identity {mailbox} -SmtpClientAuthenticationDisabled $false), or the \
                     bridge's operator can send this account's mail through Microsoft Graph (upstream graph \
                     or auto)."
                ),
            ),
            Some(Rejection::AuthFailed) => (
                554,
                format!(
                    "5.7.3 Microsoft 365 refused the bridge's token for {mailbox} ({upstream_text}): check \
                     the profile's SMTP.Send permission or SMTP.SendAsApp role, the Exchange service \
                     principal and the mailbox rights (m365mail token get --show-token | m365mail token inspect)"
                ),
            ),
            Some(Rejection::SendAsDenied) => (
                550,
                format!(
                    "5.7.60 Microsoft 365: {mailbox} may not send as this sender ({upstream_text}); grant \
                     SendAs (Add-RecipientPermission) or send as {mailbox}"
                ),
            ),
            Some(Rejection::TooLarge) => (
                552,
                format!("5.3.4 Microsoft 365: message too large ({upstream_text})"),
            ),
            Some(Rejection::Throttled) => (
                451,
                format!("4.7.0 Microsoft 365 asks to try later ({upstream_text})"),
            ),
            Some(Rejection::BadAddress) => (
                550,
                format!("5.1.0 Microsoft 365 refused an address ({upstream_text})"),
            ),
            _ => (
                554,
                format!("5.0.0 Microsoft 365 refused the message ({upstream_text})"),
            ),
        },
        SmtpError::Unconfirmed { .. } => (
            451,
            format!(
                "4.4.2 The connection to Microsoft 365 broke after the message was sent and before it \
                 answered; it may have been delivered (check {mailbox}'s Sent Items before sending again)"
            ),
        ),
        SmtpError::BadAddress { .. } => (
            550,
            format!("5.1.3 The bridge cannot relay this envelope: {upstream_text}"),
        ),
        _ => (
            451,
            format!(
                "4.4.1 Microsoft 365 could not be reached through {upstream}: {upstream_text}; try again later"
            ),
        ),
    };
    Reply::new(code, &text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(reply: &str) -> RelayError {
        let code: u16 = reply[..3].parse().unwrap();
        let text = reply[4..].to_owned();
        let enhanced = text.split_whitespace().next();
        RelayError::Smtp(SmtpError::Refused {
            endpoint: "smtp.office365.com:587".into(),
            rejection: Rejection::of(code, enhanced, &text),
            code,
            text,
        })
    }

    #[test]
    fn upstream_refusals_are_reworded_for_the_device_and_never_535() {
        let up = "smtp://smtp.office365.com:587";
        let off = client_reply(
            &refused(
                "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled",
            ),
            "scan@contoso.com",
            up,
        );
        assert_eq!(off.code(), 554);
        assert!(off.text().starts_with("5.7.139 "), "{}", off.text());
        assert!(off.text().contains("SMTP AUTH switched off"));
        assert!(off.text().contains("upstream graph or auto"));
        let auth = client_reply(
            &refused("535 5.7.3 Authentication unsuccessful"),
            "a@b.c",
            up,
        );
        assert_eq!(auth.code(), 554);
        let throttled = client_reply(
            &refused("452 4.3.1 Insufficient system resources"),
            "a@b.c",
            up,
        );
        assert_eq!(throttled.code(), 451);
        let send_as = client_reply(&refused("554 5.2.252 SendAsDenied; x"), "a@b.c", up);
        assert_eq!(send_as.code(), 550);
        assert!(send_as.text().contains("SendAs"));
    }

    #[test]
    fn the_message_id_is_found_unfolded_and_only_in_the_header_block() {
        let data = b"Subject: x\r\nFrom: Scanner\r\n <scan@contoso.com>\r\nMessage-ID:\r\n <a@b>\r\n\r\nMessage-ID: <body@x>\r\n";
        assert_eq!(crate::mime::message_id(data).as_deref(), Some("a@b"));
        assert_eq!(
            crate::mime::message_id(b"Subject: x\r\n\r\nMessage-ID: <y@z>\r\n"),
            None
        );
        assert_eq!(
            crate::mime::sender_addresses(data).unwrap(),
            ["scan@contoso.com"]
        );
    }
}
