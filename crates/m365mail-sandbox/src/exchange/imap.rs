//! The sandbox's IMAP service: one small tokio driver around the sans-I/O core
//! ([`m365mail_proto::imap::server::ImapSession`]) with the mail store behind it as its backend. Bounded as
//! the POP3 service is ([`crate::MailLimits`]): a command deadline reset only by answers, a write timeout,
//! the connection cap of the accept loop.

use std::{future::Future, pin::Pin, sync::Arc};

use m365mail_proto::imap::server::{
    FolderChange, FolderInfo, FolderRefusal, FolderView, ImapBackend, ImapLimits, ImapSession,
    MessageMeta, Poll, SignIn,
};
use m365mail_proto::imap::structure::MimeStructure;
use m365mail_server::{Connection, Protocol, stopped};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::{ExchangeState, access};
use crate::{faults::SessionFault, identity::bearer::Requirement, sync::lock};

/// How often an IDLE session looks at its folder.
const IDLE_TICK: std::time::Duration = std::time::Duration::from_millis(250);

/// The longest IDLE before the server ends it (RFC 2177 asks clients to re-issue IDLE within 29 minutes).
pub(crate) const IDLE_LIMIT: std::time::Duration = std::time::Duration::from_secs(29 * 60);

pub(crate) struct ImapService {
    /// An IDLE lasting longer is ended (`* BYE IDLE timed out.`).
    pub(crate) idle_limit: std::time::Duration,
    pub(crate) exchange: Arc<ExchangeState>,
    pub(crate) limits: crate::MailLimits,
}

/// One session's view of the store: the mailbox it opened.
struct Backend {
    exchange: Arc<ExchangeState>,
    mailbox: Option<String>,
    /// When the token the session signed in with expires (Unix seconds).
    expires_at: Option<u64>,
}

impl ImapBackend for Backend {
    fn sign_in(&mut self, user: &str, token: &str) -> SignIn {
        let directory = lock(&self.exchange.directory);
        let principal =
            match self
                .exchange
                .identity
                .check_bearer(&directory, token, Requirement::IMAP)
            {
                Ok(principal) => principal,
                Err(refusal) => {
                    tracing::info!(%user, reason = %refusal, "IMAP sign-in refused");
                    return SignIn::Refused;
                }
            };
        match access::open_mailbox(&directory, &principal, user, access::MailProtocol::Imap) {
            Ok(mailbox) => {
                self.mailbox = Some(mailbox);
                self.expires_at = crate::identity::bearer::token_expiry(token);
                SignIn::Accepted {
                    can_open_mailbox: true,
                }
            }
            Err(refusal) => {
                // Exchange accepts the token and refuses the mailbox commands (microsoft.md §7.4).
                tracing::info!(%user, reason = %refusal, "IMAP mailbox not openable");
                SignIn::Accepted {
                    can_open_mailbox: false,
                }
            }
        }
    }

    fn folders(&mut self) -> Vec<FolderInfo> {
        let Some(mailbox) = &self.mailbox else {
            return Vec::new();
        };
        lock(&self.exchange.store)
            .folders(mailbox)
            .iter()
            .map(|f| FolderInfo {
                name: f.name.clone(),
                special_use: f.special_use.map(str::to_owned),
            })
            .collect()
    }

    fn folder(&mut self, name: &str) -> Option<FolderView> {
        let mailbox = self.mailbox.as_ref()?;
        let store = lock(&self.exchange.store);
        let folder = store.folder(mailbox, name)?;
        Some(FolderView {
            uid_validity: folder.uid_validity,
            uid_next: folder.uid_next,
            messages: folder
                .messages
                .iter()
                .map(|m| MessageMeta {
                    uid: m.imap_uid,
                    flags: m.flags.clone(),
                    size: u32::try_from(m.bytes.len()).unwrap_or(u32::MAX),
                    internal_date: m.internal_date,
                })
                .collect(),
        })
    }

    fn message(&mut self, folder: &str, uid: u32) -> Option<Arc<[u8]>> {
        let mailbox = self.mailbox.as_ref()?;
        lock(&self.exchange.store).message_by_imap_uid(mailbox, folder, uid)
    }

    fn structure(&mut self, folder: &str, uid: u32) -> Option<(Arc<[u8]>, Arc<MimeStructure>)> {
        let mailbox = self.mailbox.as_ref()?;
        let (bytes, structure) =
            lock(&self.exchange.store).message_and_structure(mailbox, folder, uid)?;
        // Parsed (once per message) outside the store's lock: other sessions go on meanwhile.
        Some((bytes, structure()))
    }

    fn set_flags(&mut self, folder: &str, uid: u32, flags: &[String]) -> bool {
        let Some(mailbox) = &self.mailbox else {
            return false;
        };
        lock(&self.exchange.store).set_flags(mailbox, folder, uid, flags)
    }

    fn expunge(&mut self, folder: &str, uids: &[u32]) {
        if let Some(mailbox) = &self.mailbox {
            lock(&self.exchange.store).expunge(mailbox, folder, uids);
        }
    }

    fn append(
        &mut self,
        folder: &str,
        message: &[u8],
        flags: &[String],
        internal_date: Option<i64>,
    ) -> Option<u32> {
        let mailbox = self.mailbox.as_ref()?;
        let now = i64::try_from(self.exchange.identity.clock.unix_seconds()).unwrap_or(i64::MAX);
        lock(&self.exchange.store)
            .append(
                mailbox,
                folder,
                message,
                flags,
                internal_date.unwrap_or(now),
            )
            .ok()
    }

    fn change_folder(&mut self, change: FolderChange<'_>) -> Result<(), FolderRefusal> {
        let mailbox = self.mailbox.as_ref().ok_or(FolderRefusal::NotFound)?;
        lock(&self.exchange.store).change_folder(mailbox, change)
    }

    fn copy(&mut self, folder: &str, uids: &[u32], to: &str) -> Option<Vec<u32>> {
        let mailbox = self.mailbox.as_ref()?;
        lock(&self.exchange.store)
            .copy(mailbox, folder, uids, to)
            .ok()
    }

    fn move_copy(&mut self, folder: &str, uids: &[u32], to: &str) -> Option<Vec<u32>> {
        let mailbox = self.mailbox.as_ref()?;
        lock(&self.exchange.store)
            .copy_keeping_item_keys(mailbox, folder, uids, to)
            .ok()
    }
}

impl Protocol for ImapService {
    fn serve(self: Arc<Self>, connection: Connection) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(async move {
            let Connection {
                mut stream,
                mut shutdown,
                starttls,
                ..
            } = connection;
            const NAME: &str = "sandbox.m365mail.local";
            // A plain listener offers STARTTLS (our choice: Exchange serves IMAP on 993 only).
            // The tenant's authentication policy decides the list before sign-in (the first tenant's: a
            // connection names no tenant before it signs in).
            let login_disabled = lock(&self.exchange.directory)
                .tenants
                .first()
                .is_some_and(|t| t.basic_auth_disabled);
            let mut session = if starttls.is_some() {
                ImapSession::plain(NAME, ImapLimits::default())
            } else {
                ImapSession::new(NAME, ImapLimits::default())
            }
            .with_login_disabled(login_disabled);
            let mut backend = Backend {
                exchange: Arc::clone(&self.exchange),
                mailbox: None,
                expires_at: None,
            };
            let faults = self.exchange.session_faults("imap");
            if let Some(commands) = faults.take_for_connection() {
                session.faults().drop_after(commands);
            }
            let limits = self.limits;
            let mut buffer = vec![0u8; 16 * 1024];
            // Reset by each answer: bytes that never complete a command do not extend it.
            let mut deadline = tokio::time::Instant::now() + limits.command_timeout;
            let mut idle_started: Option<tokio::time::Instant> = None;
            // imap-next hands out one response at a time: they are gathered (up to 64 KiB) and written and
            // flushed together, before anything else the session asks for — a FETCH of 500 messages is a
            // few writes, not 500.
            let mut answer: Vec<u8> = Vec::new();
            loop {
                let next = session.poll(&mut backend);
                if let Poll::Output(bytes) = &next {
                    answer.extend_from_slice(bytes);
                    if answer.len() < 64 * 1024 {
                        continue;
                    }
                }
                if !answer.is_empty() {
                    if !m365mail_server::write_answer(&mut stream, &answer, limits.write_timeout)
                        .await
                    {
                        tracing::info!("IMAP client not reading; connection closed");
                        return;
                    }
                    answer.clear();
                    deadline = tokio::time::Instant::now() + limits.command_timeout;
                }
                match next {
                    Poll::Output(_) => {}
                    Poll::StartTls => {
                        let Some(acceptor) = &starttls else {
                            return;
                        };
                        let upgraded = tokio::time::timeout(
                            limits.write_timeout,
                            acceptor.clone().accept(stream),
                        )
                        .await;
                        let Ok(Ok(tls)) = upgraded else {
                            return;
                        };
                        stream = Box::new(tls);
                        // A new session: nothing the client pipelined in plain text is carried over
                        // (injected faults are: they belong to the connection).
                        let pending = session.faults().clone();
                        session = ImapSession::after_starttls(NAME, ImapLimits::default())
                            .with_login_disabled(login_disabled);
                        *session.faults() = pending;
                        deadline = tokio::time::Instant::now() + limits.command_timeout;
                    }
                    Poll::Close => {
                        let _ = tokio::time::timeout(limits.write_timeout, stream.shutdown()).await;
                        return;
                    }
                    Poll::NeedInput => {
                        // During IDLE the command deadline does not apply: the folder is looked at every
                        // 250 ms (a delivery reaches the client within that), and an IDLE longer than the
                        // limit is ended.
                        let until = if session.is_idling() {
                            let since = *idle_started.get_or_insert_with(tokio::time::Instant::now);
                            if since.elapsed() >= self.idle_limit {
                                session.idle_timed_out();
                                continue;
                            }
                            tokio::time::Instant::now() + IDLE_TICK
                        } else {
                            idle_started = None;
                            deadline
                        };
                        let read = tokio::select! {
                            read = tokio::time::timeout_at(until, stream.read(&mut buffer)) => read,
                            () = stopped(&mut shutdown) => return,
                        };
                        if read.is_err() && session.is_idling() {
                            session.idle_tick(&mut backend);
                            continue;
                        }
                        match read {
                            Ok(Ok(n)) if n > 0 => {
                                // A token that expired while the session was open (or an injected
                                // fault says so) ends it at the next command, as Exchange does.
                                let fault = faults.take_for_input(backend.expires_at.is_some());
                                let now = self.exchange.identity.clock.unix_seconds();
                                if fault == Some(SessionFault::ExpireToken)
                                    || backend.expires_at.is_some_and(|exp| now >= exp)
                                {
                                    session.token_expired();
                                } else {
                                    if fault == Some(SessionFault::FailNext) {
                                        session.faults().fail_next();
                                    }
                                    session.receive(&buffer[..n]);
                                }
                            }
                            _ => return,
                        }
                    }
                }
            }
        })
    }
}
