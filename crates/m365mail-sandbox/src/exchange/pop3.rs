//! The sandbox's POP3 service: one small tokio driver around the sans-I/O core
//! ([`m365mail_proto::pop3::server::Pop3Server`]). It answers the core's decisions — the bearer check
//! (`IMAP`/`POP` scope or role, [`crate::identity::bearer`]), the mailbox rights ([`super::access`]), the
//! messages ([`super::store`]) — and moves bytes. Every refusal gets Exchange's one failure line.

use std::{future::Future, pin::Pin, sync::Arc};

use m365mail_proto::pop3::server::{AUTH_FAILED, Event, MessageInfo, Pop3Server};
use m365mail_server::{Connection, Protocol, stopped};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::{ExchangeState, access};
use crate::{faults::SessionFault, identity::bearer::Requirement, sync::lock};

/// `[…]` of Exchange's greeting: base64 of the server's FQDN in UTF-16LE (microsoft.md §7.5).
fn greeting() -> String {
    use base64::Engine as _;
    let fqdn: Vec<u8> = "sandbox.m365mail.local"
        .encode_utf16()
        .flat_map(u16::to_le_bytes)
        .collect();
    format!(
        "The Microsoft Exchange POP3 service is ready. [{}]",
        base64::engine::general_purpose::STANDARD.encode(fqdn)
    )
}

pub(crate) struct Pop3Service {
    pub(crate) exchange: Arc<ExchangeState>,
    pub(crate) limits: crate::MailLimits,
}

impl Pop3Service {
    /// The maildrop for an XOAUTH2 `user=` and token, or why not (logged; the client sees one line).
    fn open(&self, user: &str, token: &str) -> Result<(String, Vec<MessageInfo>), String> {
        let directory = lock(&self.exchange.directory);
        let principal = self
            .exchange
            .identity
            .check_bearer(&directory, token, Requirement::POP)
            .map_err(|refusal| refusal.to_string())?;
        let mailbox = access::open_mailbox(&directory, &principal, user, access::MailProtocol::Pop)
            .map_err(|refusal| refusal.to_string())?;
        drop(directory);
        // Uids and sizes only: a sign-in copies no message.
        let messages = lock(&self.exchange.store)
            .each(&mailbox)
            .map(|m| MessageInfo {
                size: m.bytes.len() as u64,
                uid: m.uid.clone(),
            })
            .collect();
        Ok((mailbox, messages))
    }
}

impl Protocol for Pop3Service {
    fn serve(self: Arc<Self>, connection: Connection) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(async move {
            let Connection {
                mut stream,
                mut shutdown,
                ..
            } = connection;
            let mut core = Pop3Server::new(&greeting());
            let faults = self.exchange.session_faults("pop3");
            if let Some(commands) = faults.take_for_connection() {
                core.faults().drop_after(commands);
            }
            let mut mailbox: Option<String> = None;
            let mut buffer = vec![0u8; 16 * 1024];
            let limits = self.limits;
            // Reset by each answer: bytes that never complete a command (a trickle) do not extend it.
            let mut deadline = tokio::time::Instant::now() + limits.command_timeout;
            loop {
                // Each answer goes out before the next command is taken, within the write timeout: a
                // client that pipelines RETRs and never reads holds at most one answer here, then is closed.
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
                            tracing::info!("POP3 client not reading; connection closed");
                            return;
                        }
                        deadline = tokio::time::Instant::now() + limits.command_timeout;
                    }
                    let Some(event) = core.next_event() else {
                        break;
                    };
                    match event {
                        Event::Authenticate { user, token } => match self.open(&user, &token) {
                            Ok((address, messages)) => {
                                mailbox = Some(address);
                                core.authenticated(Ok(messages));
                            }
                            Err(reason) => {
                                tracing::info!(%user, %reason, "POP3 sign-in refused");
                                core.authenticated(Err(AUTH_FAILED.to_owned()));
                            }
                        },
                        Event::Retrieve { uid, top, .. } => {
                            let bytes = mailbox
                                .as_deref()
                                .and_then(|m| lock(&self.exchange.store).message(m, &uid));
                            core.deliver(bytes.as_deref(), top);
                        }
                        Event::Commit { deleted } => {
                            if let Some(m) = &mailbox {
                                lock(&self.exchange.store).delete(m, &deleted);
                            }
                        }
                    }
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
                    Ok(Ok(n)) if n > 0 => match faults.take_for_input(core.is_authenticated()) {
                        Some(SessionFault::ExpireToken) => core.token_expired(),
                        fault => {
                            if fault == Some(SessionFault::FailNext) {
                                core.faults().fail_next();
                            }
                            core.receive(&buffer[..n]);
                        }
                    },
                    Err(_) => {
                        tracing::info!(
                            "POP3 client sent no complete command in time; connection closed"
                        );
                        return;
                    }
                    _ => return,
                }
            }
        })
    }
}
