//! The sandbox's SMTP submission service: one small tokio driver around the sans-I/O core
//! ([`m365mail_proto::smtp::server::SmtpServer`]). Sign-in through the bearer check (`SMTP.Send` scope or
//! `SMTP.SendAsApp` role) and the mailbox rights with the SMTP AUTH switch (`535 5.7.139` when off); the
//! From address checked against what the identity may send as (`554 5.2.252` after the data, as Exchange);
//! recipients in the tenant get the message in their Inbox, others go to the outbox (nothing leaves the
//! sandbox); the sender's Sent Items keeps a copy, as Exchange does (microsoft.md §7.6).

use std::{future::Future, pin::Pin, sync::Arc};

use m365mail_proto::smtp::server::{AuthOutcome, Event, SmtpServer, SubmitOutcome};
use m365mail_server::{Connection, Protocol, stopped};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::{ExchangeState, access};
use crate::{
    faults::SessionFault, identity::bearer::Principal, identity::bearer::Requirement, sync::lock,
};

/// The server name in the greeting and replies.
const HOST: &str = "SANDBOX01.contoso.sandbox.m365mail.local";

pub(crate) struct SmtpService {
    pub(crate) exchange: Arc<ExchangeState>,
    pub(crate) limits: m365mail_server::MailLimits,
}

/// `Sat, 26 Apr 2025 18:08:13 +0000` for Unix seconds.
fn rfc5322_date(secs: u64) -> String {
    chrono::DateTime::from_timestamp(i64::try_from(secs).unwrap_or(i64::MAX), 0)
        .unwrap_or_default()
        .format("%a, %d %b %Y %H:%M:%S +0000")
        .to_string()
}

/// Whom a sign-in speaks for, once accepted.
struct SignedIn {
    /// The mailbox of `user=`.
    mailbox: String,
    principal: Principal,
}

impl SmtpService {
    fn sign_in(&self, user: &str, token: &str) -> Result<SignedIn, AuthOutcome> {
        let directory = lock(&self.exchange.directory);
        let principal = self
            .exchange
            .identity
            .check_bearer(&directory, token, Requirement::SMTP)
            .map_err(|refusal| {
                tracing::info!(%user, reason = %refusal, "SMTP sign-in refused");
                AuthOutcome::Refused
            })?;
        match access::open_mailbox(&directory, &principal, user, access::MailProtocol::Smtp) {
            Ok(mailbox) => Ok(SignedIn { mailbox, principal }),
            Err(access::AccessRefusal::ProtocolDisabled { .. }) => {
                Err(AuthOutcome::SmtpAuthDisabled)
            }
            Err(refusal) => {
                tracing::info!(%user, reason = %refusal, "SMTP mailbox not usable");
                Err(AuthOutcome::Refused)
            }
        }
    }

    /// Whether `signed_in` may send as `from` ([`access::may_send_as`]).
    fn may_send_as(&self, signed_in: &SignedIn, from: &str) -> bool {
        access::may_send_as(
            &lock(&self.exchange.directory),
            &signed_in.principal,
            &signed_in.mailbox,
            from,
        )
    }

    /// Exchange saves what SMTP AUTH submits to the sender's Sent Items as well.
    fn deliver(&self, from: &str, recipients: &[String], data: &[u8]) {
        self.exchange
            .submit(from, recipients, data, Some((from, data)));
    }
}

/// The message's own Message-ID (without brackets), else a new one.
fn message_id(data: &[u8]) -> String {
    let header_end = data
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(data.len());
    String::from_utf8_lossy(&data[..header_end])
        .split("\r\n")
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.trim().eq_ignore_ascii_case("message-id").then(|| {
                value
                    .trim()
                    .trim_matches(|c| c == '<' || c == '>')
                    .to_owned()
            })
        })
        .filter(|id| !id.is_empty())
        .unwrap_or_else(|| format!("{}@sandbox.m365mail.local", uuid::Uuid::new_v4().simple()))
}

impl Protocol for SmtpService {
    fn serve(self: Arc<Self>, connection: Connection) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(async move {
            let Connection {
                mut stream,
                mut shutdown,
                starttls,
                peer,
            } = connection;
            let client_ip = peer.ip().to_string();
            let greeting = format!(
                "{HOST} Microsoft ESMTP MAIL Service ready at {} [{:016X}]",
                rfc5322_date(self.exchange.identity.clock.unix_seconds()),
                rand::random::<u64>()
            );
            let mut core = SmtpServer::new(&greeting, HOST, &client_ip, starttls.is_none());
            let faults = self.exchange.session_faults("smtp");
            if let Some(commands) = faults.take_for_connection() {
                core.faults().drop_after(commands);
            }
            let mut signed_in: Option<SignedIn> = None;
            let limits = self.limits;
            let mut buffer = vec![0u8; 16 * 1024];
            let mut deadline = tokio::time::Instant::now() + limits.command_timeout;
            loop {
                let mut upgrade = false;
                loop {
                    let output = core.take_output();
                    if !output.is_empty() {
                        if !m365mail_server::write_answer(
                            &mut stream,
                            &output,
                            limits.write_timeout,
                        )
                        .await
                        {
                            return;
                        }
                        deadline = tokio::time::Instant::now() + limits.command_timeout;
                    }
                    let Some(event) = core.next_event() else {
                        break;
                    };
                    match event {
                        Event::StartTls => upgrade = true,
                        Event::Authenticate { user, token } => match self.sign_in(&user, &token) {
                            Ok(identity) => {
                                signed_in = Some(identity);
                                core.authenticated(AuthOutcome::Accepted);
                            }
                            Err(outcome) => core.authenticated(outcome),
                        },
                        // The Exchange role asks neither (Basic AUTH LOGIN ends in 550 5.7.30 inside the core).
                        Event::Login { .. } => core.authenticated(AuthOutcome::Refused),
                        Event::Mail { .. } => core.mail_answered(None),
                        Event::Submit {
                            from,
                            recipients,
                            data,
                        } => {
                            let Some(identity) = &signed_in else {
                                core.submitted(SubmitOutcome::SendAsDenied { who: String::new() });
                                continue;
                            };
                            if self.may_send_as(identity, &from) {
                                self.deliver(&from, &recipients, &data);
                                core.submitted(SubmitOutcome::Accepted {
                                    message_id: message_id(&data),
                                });
                            } else {
                                core.submitted(SubmitOutcome::SendAsDenied {
                                    who: identity.mailbox.clone(),
                                });
                            }
                        }
                    }
                }
                if upgrade {
                    let Some(acceptor) = &starttls else {
                        return;
                    };
                    let Ok(Ok(tls)) =
                        tokio::time::timeout(limits.write_timeout, acceptor.clone().accept(stream))
                            .await
                    else {
                        return;
                    };
                    stream = Box::new(tls);
                    // A new session: anything pipelined in clear text after STARTTLS is dropped.
                    core = core.into_tls();
                    deadline = tokio::time::Instant::now() + limits.command_timeout;
                    continue;
                }
                if core.is_closed() {
                    let _ = tokio::time::timeout(limits.write_timeout, stream.shutdown()).await;
                    return;
                }
                let read = tokio::select! {
                    read = tokio::time::timeout_at(deadline, stream.read(&mut buffer)) => read,
                    () = stopped(&mut shutdown) => return,
                };
                match read {
                    Ok(Ok(n)) if n > 0 => match faults.take_for_input(signed_in.is_some()) {
                        Some(SessionFault::ExpireToken) => core.token_expired(),
                        fault => {
                            if fault == Some(SessionFault::FailNext) {
                                core.faults().fail_next();
                            }
                            core.receive(&buffer[..n]);
                        }
                    },
                    _ => return,
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn dates_as_rfc_5322() {
        assert_eq!(
            super::rfc5322_date(1_745_690_893),
            "Sat, 26 Apr 2025 18:08:13 +0000"
        );
        assert_eq!(super::rfc5322_date(0), "Thu, 01 Jan 1970 00:00:00 +0000");
    }
}
