//! The IMAP server core: imap-next's sans-I/O server (parsing, literals, AUTHENTICATE) plus the session
//! Exchange Online runs on it (microsoft.md §7.4): its greeting and CAPABILITY lines before and after sign-in,
//! `AUTHENTICATE XOAUTH2` with SASL-IR or a continuation, `NO LOGIN failed.`, `NO AUTHENTICATE failed.` for
//! any token problem, and `BAD User is authenticated but not connected.` (then `* BYE Connection closed. 14`)
//! for a valid token that cannot open the mailbox.
//!
//! No I/O: the driver feeds bytes ([`ImapSession::receive`]) and writes what [`ImapSession::poll`] gives. The
//! mail store is an [`ImapBackend`], called synchronously (the sandbox's is in memory; the bridge's will
//! prefetch). Served: CAPABILITY, NOOP, LOGOUT, ID, LOGIN, AUTHENTICATE, NAMESPACE, LIST, LSUB, STATUS,
//! SELECT, EXAMINE, UNSELECT, CLOSE (expunging), FETCH / UID FETCH (FLAGS, UID, RFC822.SIZE, INTERNALDATE,
//! ENVELOPE, BODY, BODYSTRUCTURE, BODY[section] and BODY.PEEK[section] with partials — parts `1.2`, MIME,
//! HEADER, TEXT, HEADER.FIELDS (.NOT) —, RFC822 and its parts; `\Seen` set by a body fetch without PEEK),
//! STORE / UID STORE, EXPUNGE, UID EXPUNGE, SEARCH / UID SEARCH, COPY / MOVE (and UID), APPEND, CREATE,
//! DELETE, RENAME and IDLE.

use std::borrow::Cow;

use bounded_static::IntoBoundedStatic as _;
use std::num::NonZeroU32;

use imap_next::imap_types::{
    auth::AuthMechanism,
    command::{Command, CommandBody},
    core::{IString, Literal, NString, Tag, Text, Vec1},
    fetch::{MacroOrMessageDataItemNames, MessageDataItem, MessageDataItemName},
    flag::{Flag, FlagFetch, FlagNameAttribute, FlagPerm, StoreResponse, StoreType},
    mailbox::Mailbox,
    response::{
        Capability, Code, CommandContinuationRequest, Data, Greeting, GreetingKind, Status,
    },
    sequence::{SeqOrUid, Sequence, SequenceSet},
    status::{StatusDataItem, StatusDataItemName},
};
use imap_next::server::{Event, Options, Server};
use imap_next::{Interrupt, Io, State as _};

use super::structure::MimeStructure;
use crate::fault::{CommandFault, CommandFaults};
use crate::xoauth2;

/// Exchange's greeting text before the bracketed server name (microsoft.md §7.4).
pub const GREETING_TEXT: &str = "The Microsoft Exchange IMAP4 service is ready.";
/// Before sign-in (§7.4, verbatim from client logs).
pub const CAPABILITIES_BEFORE: &str = "IMAP4 IMAP4rev1 AUTH=PLAIN AUTH=XOAUTH2 SASL-IR UIDPLUS ID UNSELECT CHILDREN IDLE NAMESPACE LITERAL+";
/// Before sign-in when the tenant has Basic authentication off: §7.4 quotes `… AUTH=XOAUTH2 LOGINDISABLED
/// SASL-IR …` without `AUTH=PLAIN` (observed); the rest as in [`CAPABILITIES_BEFORE`].
pub const CAPABILITIES_LOGIN_DISABLED: &str = "IMAP4 IMAP4rev1 AUTH=XOAUTH2 LOGINDISABLED SASL-IR UIDPLUS ID UNSELECT CHILDREN IDLE NAMESPACE LITERAL+";
/// After sign-in (§7.4, verbatim): MOVE and Exchange's own three appear.
pub const CAPABILITIES_AFTER: &str = "IMAP4 IMAP4rev1 AUTH=PLAIN AUTH=XOAUTH2 SASL-IR UIDPLUS MOVE ID UNSELECT \
     CLIENTACCESSRULES CLIENTNETWORKPRESENCELOCATION BACKENDAUTHENTICATE CHILDREN IDLE NAMESPACE LITERAL+";

/// A folder as LIST shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FolderInfo {
    /// The IMAP name (`INBOX`, `Sent Items`).
    pub name: String,
    /// Its special use without the backslash (`Sent`, `Drafts`, `Trash`, `Junk`, `Archive`).
    pub special_use: Option<String>,
}

/// One message as a folder lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageMeta {
    /// The UID.
    pub uid: u32,
    /// Its flags as IMAP spells them.
    pub flags: Vec<String>,
    /// RFC822.SIZE.
    pub size: u32,
    /// INTERNALDATE, Unix seconds (UTC).
    pub internal_date: i64,
}

/// A folder's state at one instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FolderView {
    /// UIDVALIDITY.
    pub uid_validity: u32,
    /// UIDNEXT.
    pub uid_next: u32,
    /// The messages, by ascending UID.
    pub messages: Vec<MessageMeta>,
}

impl FolderView {
    /// The message with `uid` (a binary search: `messages` ascend by UID), `None` when it is gone.
    pub fn message(&self, uid: u32) -> Option<&MessageMeta> {
        self.messages
            .binary_search_by_key(&uid, |m| m.uid)
            .ok()
            .map(|index| &self.messages[index])
    }
}

/// The answer to an XOAUTH2 sign-in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignIn {
    /// The token is good; `can_open_mailbox` is false when the identity may not open the mailbox of `user=`.
    Accepted {
        /// Whether mailbox commands work.
        can_open_mailbox: bool,
    },
    /// Any token problem.
    Refused,
}

/// The mail store behind one session.
pub trait ImapBackend {
    /// Checks an XOAUTH2 sign-in (the token is a secret: log nothing of it).
    fn sign_in(&mut self, user: &str, token: &str) -> SignIn;
    /// The mailbox's folders.
    fn folders(&mut self) -> Vec<FolderInfo>;
    /// A folder's state, `None` when there is no such folder (`INBOX` comes as `INBOX`).
    fn folder(&mut self, name: &str) -> Option<FolderView>;
    /// A message's bytes (CRLF line endings).
    fn message(&mut self, folder: &str, uid: u32) -> Option<std::sync::Arc<[u8]>>;
    /// A message's bytes and MIME structure. The default parses the structure on every call; a store that
    /// keeps its messages should keep their structure too (it is asked for on each BODYSTRUCTURE and each
    /// part fetched).
    fn structure(
        &mut self,
        folder: &str,
        uid: u32,
    ) -> Option<(std::sync::Arc<[u8]>, std::sync::Arc<MimeStructure>)> {
        let bytes = self.message(folder, uid)?;
        let structure = std::sync::Arc::new(MimeStructure::parse(&bytes));
        Some((bytes, structure))
    }
    /// Replaces a message's flags; false when the message is gone.
    fn set_flags(&mut self, folder: &str, uid: u32, flags: &[String]) -> bool;
    /// Removes messages from a folder.
    fn expunge(&mut self, folder: &str, uids: &[u32]);
    /// Copies messages (bytes, flags, INTERNALDATE) from `folder` to `to`; the new UIDs in the order given,
    /// or `None` when `to` does not exist (nothing copied).
    fn copy(&mut self, folder: &str, uids: &[u32], to: &str) -> Option<Vec<u32>>;
    /// MOVE's copy: as [`Self::copy`] (the caller then expunges the source's messages). A backend whose
    /// messages have an identity beyond their UIDs (Exchange's immutable ids) keeps it on the copies here.
    fn move_copy(&mut self, folder: &str, uids: &[u32], to: &str) -> Option<Vec<u32>> {
        self.copy(folder, uids, to)
    }
    /// Stores a message in `folder` with `flags` and INTERNALDATE `internal_date` (Unix seconds; now when
    /// `None`); its UID, or `None` when the folder does not exist.
    fn append(
        &mut self,
        folder: &str,
        message: &[u8],
        flags: &[String],
        internal_date: Option<i64>,
    ) -> Option<u32>;
    /// Creates, deletes or renames a user folder.
    fn change_folder(&mut self, change: FolderChange<'_>) -> Result<(), FolderRefusal>;
}

/// A change to the folder list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FolderChange<'a> {
    /// CREATE.
    Create(&'a str),
    /// DELETE (with its messages).
    Delete(&'a str),
    /// RENAME (with its messages and subfolders).
    Rename {
        /// The folder.
        from: &'a str,
        /// Its new name.
        to: &'a str,
    },
}

/// Why a folder change was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FolderRefusal {
    /// No such folder.
    NotFound,
    /// The new name is taken.
    Exists,
    /// Exchange's own folders (Inbox, Sent Items, …) can be neither deleted nor renamed.
    Protected,
    /// The name is empty or not one a folder can have.
    BadName,
}

/// What the driver does next.
#[derive(Debug, PartialEq, Eq)]
pub enum Poll {
    /// Write these bytes, then poll again.
    Output(Vec<u8>),
    /// Read more bytes ([`ImapSession::receive`]), then poll again.
    NeedInput,
    /// Everything is written: close the connection.
    Close,
    /// The `OK` to STARTTLS is written: start TLS, then continue with [`ImapSession::after_starttls`] (this
    /// session, and any plain text the client pipelined after STARTTLS, is dropped).
    StartTls,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    NotAuthenticated,
    /// `AUTHENTICATE XOAUTH2` without an initial response: the tag waits for the continuation.
    AwaitingAuthData(Tag<'static>),
    Authenticated,
    Selected {
        name: String,
        read_only: bool,
        /// The UIDs by message sequence number (index + 1), as this session knows them.
        uids: Vec<u32>,
    },
    Logout,
}

/// One IMAP connection's server side.
pub struct ImapSession {
    server: Server,
    state: State,
    /// Mailbox commands refused so far after a sign-in whose identity cannot open the mailbox.
    not_connected: Option<u8>,
    /// BYE sent: close once it is written.
    closing: bool,
    /// A plain connection that may upgrade (STARTTLS advertised and accepted).
    starttls_offered: bool,
    /// The tag of an IDLE in progress (RFC 2177): changes to the folder are pushed until DONE.
    idling: Option<Tag<'static>>,
    /// During IDLE: the flags the client was last told of, by UID (a change by another session is pushed
    /// as `* n FETCH (FLAGS (…))`).
    idle_flags: std::collections::HashMap<u32, Vec<String>>,
    /// The handle of the STARTTLS `OK`: once it is sent, the driver starts TLS.
    starttls_answer: Option<imap_next::server::ResponseHandle>,
    /// The STARTTLS `OK` went out.
    upgrade_now: bool,
    /// The tenant has Basic authentication off: the `LOGINDISABLED` list before sign-in.
    login_disabled: bool,
    /// Faults injected by a test server.
    faults: CommandFaults,
    /// A fault dropped the connection: nothing more is answered.
    dropped: bool,
}

/// The answer to a command refused by an injected fault ([`CommandFaults::fail_next`]): Exchange's text
/// for a transient failure as client logs show it (`NO Server Unavailable. 15`; not in microsoft.md §7).
pub const TRANSIENT_FAILURE: &str = "Server Unavailable. 15";

impl std::fmt::Debug for ImapSession {
    // imap-next's buffers may hold an XOAUTH2 response (a token): show only the state.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImapSession")
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

fn capability_list(text: &str) -> Vec1<Capability<'static>> {
    let items: Vec<Capability<'static>> = text
        .split(' ')
        .map(|c| Capability::try_from(c.to_owned()).expect("a static capability parses"))
        .collect();
    Vec1::try_from(items).expect("not empty")
}

fn ok(tag: Tag<'static>, text: &str) -> Status<'static> {
    Status::ok(Some(tag), None, text.to_owned()).expect("static text")
}

fn no(tag: Tag<'static>, text: &str) -> Status<'static> {
    Status::no(Some(tag), None, text.to_owned()).expect("static text")
}

fn bad(tag: Option<Tag<'static>>, text: &str) -> Status<'static> {
    Status::bad(tag, None, text.to_owned()).expect("static text")
}

impl ImapSession {
    /// A session that greets with Exchange's line; `server_name` goes base64 (UTF-16LE) in the brackets.
    pub fn new(server_name: &str, limits: ImapLimits) -> Self {
        use base64::Engine as _;
        let utf16: Vec<u8> = server_name
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect();
        let text = format!(
            "{GREETING_TEXT} [{}]",
            base64::engine::general_purpose::STANDARD.encode(utf16)
        );
        let greeting = Greeting {
            kind: GreetingKind::Ok,
            code: None,
            text: Text::try_from(text).expect("a valid greeting text"),
        };
        let mut options = Options::default();
        options.max_literal_size = limits.max_literal;
        options.max_command_size = limits.max_command.max(limits.max_literal + 64 * 1024);
        Self {
            server: Server::new(options, greeting),
            state: State::NotAuthenticated,
            not_connected: None,
            closing: false,
            starttls_offered: false,
            idling: None,
            idle_flags: std::collections::HashMap::new(),
            starttls_answer: None,
            upgrade_now: false,
            login_disabled: false,
            faults: CommandFaults::default(),
            dropped: false,
        }
    }

    /// The faults a test server injects into this session (applied to the commands read from now on).
    pub fn faults(&mut self) -> &mut CommandFaults {
        &mut self.faults
    }

    /// Advertises `LOGINDISABLED` (and no `AUTH=PLAIN`) before sign-in, as a tenant with Basic
    /// authentication off does.
    pub fn with_login_disabled(mut self, disabled: bool) -> Self {
        self.login_disabled = disabled;
        self
    }

    /// A session on a plain connection: CAPABILITY adds STARTTLS and the command is accepted (our choice:
    /// Exchange serves IMAP on 993 only). Everything else waits for TLS only as far as the client wants.
    pub fn plain(server_name: &str, limits: ImapLimits) -> Self {
        let mut session = Self::new(server_name, limits);
        session.starttls_offered = true;
        session
    }

    /// The session that continues after STARTTLS: no second greeting, nothing carried over.
    pub fn after_starttls(server_name: &str, limits: ImapLimits) -> Self {
        let mut session = Self::new(server_name, limits);
        // imap-next queues a greeting for every new server: this connection had its one already.
        loop {
            match session.server.next() {
                Ok(Event::GreetingSent { .. }) => break,
                Err(Interrupt::Io(Io::Output(_))) => continue,
                other => unreachable!("a new server greets first: {:?}", other.is_ok()),
            }
        }
        session
    }

    /// Bytes read from the client.
    pub fn receive(&mut self, bytes: &[u8]) {
        self.server.enqueue_input(bytes);
    }

    /// Whether an IDLE is in progress: the driver then calls [`ImapSession::idle_tick`] now and then (the
    /// sandbox: every 250 ms) and [`ImapSession::idle_timed_out`] when the client idled too long.
    pub fn is_idling(&self) -> bool {
        self.idling.is_some()
    }

    /// During IDLE: pushes what changed in the selected folder (`* n EXPUNGE`, `* n EXISTS`).
    pub fn idle_tick(&mut self, backend: &mut dyn ImapBackend) {
        if self.idling.is_none() {
            return;
        }
        let Some(view) = self.sync_selected(backend, true) else {
            return;
        };
        let now = flags_by_uid(&view);
        let State::Selected { uids, .. } = &self.state else {
            return;
        };
        for (index, uid) in uids.iter().enumerate() {
            let (Some(told), Some(flags)) = (self.idle_flags.get(uid), now.get(uid)) else {
                continue;
            };
            if told != flags
                && let Ok(items) = Vec1::try_from(vec![MessageDataItem::Flags(flag_fetch(flags))])
            {
                self.server.enqueue_data(Data::Fetch {
                    seq: NonZeroU32::new(index as u32 + 1).expect("sequence numbers start at 1"),
                    items,
                });
            }
        }
        self.idle_flags = now;
    }

    /// Ends an IDLE that lasted longer than the server allows (RFC 2177 asks clients to re-issue it within
    /// 29 minutes): `* BYE IDLE timed out.` (our wording), then the connection closes.
    pub fn idle_timed_out(&mut self) {
        if self.idling.take().is_some() && !self.closing {
            self.closing = true;
            self.server
                .enqueue_status(Status::bye(None, "IDLE timed out.").expect("static text"));
        }
    }

    /// Ends the session as Exchange ends one whose access token expired while it was open: `* BYE Session
    /// invalidated - AccessTokenExpired`, then the connection closes (observed by imapsync's users, its
    /// issue #250; not in microsoft.md §7). The driver calls it instead of handing over the next input.
    pub fn token_expired(&mut self) {
        if self.closing {
            return;
        }
        self.closing = true;
        self.server.enqueue_status(
            Status::bye(None, "Session invalidated - AccessTokenExpired").expect("static text"),
        );
    }

    /// Runs until there is something to write, input is needed, or the session is over.
    pub fn poll(&mut self, backend: &mut dyn ImapBackend) -> Poll {
        loop {
            if self.dropped {
                return Poll::Close;
            }
            if self.upgrade_now {
                self.upgrade_now = false;
                return Poll::StartTls;
            }
            match self.server.next() {
                Ok(event) => self.event(event, backend),
                Err(Interrupt::Io(Io::Output(bytes))) => return Poll::Output(exchange_case(bytes)),
                Err(Interrupt::Io(Io::NeedMoreInput)) => {
                    if self.closing {
                        return Poll::Close;
                    }
                    return Poll::NeedInput;
                }
                Err(Interrupt::Error(error)) => self.malformed(error),
            }
        }
    }

    /// A line imap-next could not take: BAD with the tag when one can be read (imap-next sends nothing
    /// itself for these, duesee/imap-next#215).
    fn malformed(&mut self, error: imap_next::server::Error) {
        use imap_next::server::Error;
        let (discarded, text) = match &error {
            Error::ExpectedCrlfGotLf { discarded_bytes } => (discarded_bytes, "Command Error. 12"),
            Error::MalformedMessage { discarded_bytes } => (discarded_bytes, "Command Error. 12"),
            // imap-next has answered a too-long synchronising literal itself: a second BAD would be one too many.
            Error::LiteralTooLong { .. } => return,
            Error::CommandTooLong { discarded_bytes } => (discarded_bytes, "Command too long."),
        };
        if let State::AwaitingAuthData(tag) = &self.state {
            let tag = tag.clone();
            self.state = State::NotAuthenticated;
            let _ = self
                .server
                .authenticate_finish(bad(Some(tag), "AUTHENTICATE failed."));
            return;
        }
        let bytes = discarded.declassify();
        let tag = bytes
            .split(|&b| b == b' ')
            .next()
            .and_then(|t| std::str::from_utf8(t).ok())
            .and_then(|t| Tag::try_from(t.to_owned()).ok());
        self.server.enqueue_status(bad(tag, text));
    }

    fn event(&mut self, event: Event, backend: &mut dyn ImapBackend) {
        match event {
            Event::ResponseSent { handle, .. } if Some(handle) == self.starttls_answer => {
                self.starttls_answer = None;
                self.upgrade_now = true;
            }
            Event::GreetingSent { .. } | Event::ResponseSent { .. } => {}
            Event::CommandReceived { command } => match self.faults.on_command() {
                None => self.command(command, backend),
                Some(CommandFault::Fail) => {
                    self.server
                        .enqueue_status(no(command.tag.into_static(), TRANSIENT_FAILURE));
                }
                Some(CommandFault::Drop) => self.dropped = true,
            },
            Event::CommandAuthenticateReceived {
                command_authenticate,
            } => {
                let tag = command_authenticate.tag.into_static();
                match self.faults.on_command() {
                    None => {}
                    Some(CommandFault::Fail) => {
                        let _ = self.server.authenticate_finish(no(tag, TRANSIENT_FAILURE));
                        return;
                    }
                    Some(CommandFault::Drop) => {
                        self.dropped = true;
                        return;
                    }
                }
                if self.state != State::NotAuthenticated {
                    let _ = self
                        .server
                        .authenticate_finish(bad(Some(tag), "Command received in Invalid state."));
                    return;
                }
                match command_authenticate.mechanism {
                    AuthMechanism::XOAuth2 => match command_authenticate.initial_response {
                        Some(response) => {
                            let bytes = response.declassify().to_vec();
                            self.finish_sign_in(tag, &bytes, backend);
                        }
                        None => {
                            self.state = State::AwaitingAuthData(tag);
                            // Exchange's bare "+ " (microsoft.md §7.4).
                            let _ = self.server.authenticate_continue(
                                CommandContinuationRequest::base64(Vec::new()),
                            );
                        }
                    },
                    // Advertised, as Exchange does; Basic authentication is off (our choice of line).
                    _ => {
                        let _ = self
                            .server
                            .authenticate_finish(no(tag, "AUTHENTICATE failed."));
                    }
                }
            }
            Event::AuthenticateDataReceived { authenticate_data } => {
                let State::AwaitingAuthData(tag) =
                    std::mem::replace(&mut self.state, State::NotAuthenticated)
                else {
                    return;
                };
                use imap_next::imap_types::auth::AuthenticateData;
                match authenticate_data {
                    AuthenticateData::Continue(data) => {
                        let bytes = data.declassify().to_vec();
                        self.finish_sign_in(tag, &bytes, backend);
                    }
                    AuthenticateData::Cancel => {
                        let _ = self
                            .server
                            .authenticate_finish(bad(Some(tag), "AUTHENTICATE failed."));
                    }
                }
            }
            Event::IdleCommandReceived { tag } => {
                let tag = tag.into_static();
                match self.faults.on_command() {
                    None => {}
                    Some(CommandFault::Fail) => {
                        let _ = self.server.idle_reject(no(tag, TRANSIENT_FAILURE));
                        return;
                    }
                    Some(CommandFault::Drop) => {
                        self.dropped = true;
                        return;
                    }
                }
                let signed_in = matches!(self.state, State::Authenticated | State::Selected { .. });
                if !signed_in || self.not_connected.is_some() {
                    let _ = self
                        .server
                        .idle_reject(bad(Some(tag), "Command received in Invalid state."));
                    return;
                }
                let accepted = CommandContinuationRequest::basic(
                    None,
                    "IDLE accepted, awaiting DONE command.",
                )
                .expect("static text");
                if self.server.idle_accept(accepted).is_ok() {
                    self.idling = Some(tag);
                    // What changed before IDLE, at once; the flags as they are now.
                    self.idle_flags = self
                        .sync_selected(backend, true)
                        .map(|view| flags_by_uid(&view))
                        .unwrap_or_default();
                }
            }
            Event::IdleDoneReceived => {
                if let Some(tag) = self.idling.take() {
                    self.sync_selected(backend, true);
                    self.server.enqueue_status(ok(tag, "IDLE completed."));
                }
            }
        }
    }

    fn finish_sign_in(
        &mut self,
        tag: Tag<'static>,
        response: &[u8],
        backend: &mut dyn ImapBackend,
    ) {
        let outcome = match xoauth2::parse(response) {
            Ok(auth) => backend.sign_in(&auth.user, &auth.token),
            Err(_) => SignIn::Refused,
        };
        let status = match outcome {
            SignIn::Accepted { can_open_mailbox } => {
                self.state = State::Authenticated;
                self.not_connected = (!can_open_mailbox).then_some(0);
                ok(tag, "AUTHENTICATE completed.")
            }
            SignIn::Refused => no(tag, "AUTHENTICATE failed."),
        };
        let _ = self.server.authenticate_finish(status);
    }

    fn command(&mut self, command: Command<'_>, backend: &mut dyn ImapBackend) {
        let tag = command.tag.into_static();
        let authenticated = matches!(self.state, State::Authenticated | State::Selected { .. });
        match command.body {
            CommandBody::Capability => {
                let before = if self.login_disabled {
                    CAPABILITIES_LOGIN_DISABLED
                } else {
                    CAPABILITIES_BEFORE
                };
                let list = match (authenticated, self.starttls_offered) {
                    (true, _) => CAPABILITIES_AFTER.to_owned(),
                    (false, true) => format!("{before} STARTTLS"),
                    (false, false) => before.to_owned(),
                };
                self.server
                    .enqueue_data(Data::Capability(capability_list(&list)));
                self.server.enqueue_status(ok(tag, "CAPABILITY completed."));
            }
            CommandBody::StartTLS => {
                if self.starttls_offered && !authenticated {
                    self.starttls_offered = false;
                    let handle = self
                        .server
                        .enqueue_status(ok(tag, "Begin TLS negotiation now."));
                    self.starttls_answer = Some(handle);
                } else {
                    self.server
                        .enqueue_status(bad(Some(tag), "Command received in Invalid state."));
                }
            }
            CommandBody::Noop => {
                // The usual way to poll: report what other sessions changed.
                if self.not_connected.is_none() {
                    self.sync_selected(backend, true);
                }
                self.server.enqueue_status(ok(tag, "NOOP completed."));
            }
            CommandBody::Logout => {
                self.state = State::Logout;
                self.closing = true;
                self.server.enqueue_status(
                    Status::bye(None, "Microsoft Exchange Server IMAP4 server signing off.")
                        .expect("static text"),
                );
                self.server.enqueue_status(ok(tag, "LOGOUT completed."));
            }
            CommandBody::Id { .. } => {
                // Observed once in a client's transcript (microsoft.md §7.4: unconfirmed).
                use imap_next::imap_types::core::{IString, NString};
                let pair = |k: &str, v: &str| {
                    (
                        IString::try_from(k.to_owned()).expect("quoted"),
                        NString(Some(IString::try_from(v.to_owned()).expect("quoted"))),
                    )
                };
                self.server.enqueue_data(Data::Id {
                    parameters: Some(vec![
                        pair("name", "Microsoft.Exchange.Imap4.Imap4Server"),
                        pair("version", "15.20"),
                    ]),
                });
                self.server.enqueue_status(ok(tag, "ID completed."));
            }
            CommandBody::Login { .. } => {
                let status = if authenticated {
                    bad(Some(tag), "Command received in Invalid state.")
                } else {
                    no(tag, "LOGIN failed.")
                };
                self.server.enqueue_status(status);
            }
            _ if !authenticated => {
                self.server
                    .enqueue_status(bad(Some(tag), "Command received in Invalid state."));
            }
            body => self.mailbox_command(tag, body, backend),
        }
    }

    /// Commands that touch the mailbox: refused twice, then the connection ends, when the identity cannot
    /// open it (§7.4, verbatim).
    fn mailbox_command(
        &mut self,
        tag: Tag<'static>,
        body: CommandBody<'_>,
        backend: &mut dyn ImapBackend,
    ) {
        if let Some(refused) = self.not_connected.as_mut() {
            *refused += 1;
            self.server
                .enqueue_status(bad(Some(tag), "User is authenticated but not connected."));
            if *refused >= 2 {
                self.closing = true;
                self.server.enqueue_status(
                    Status::bye(None, "Connection closed. 14").expect("static text"),
                );
            }
            return;
        }
        // What other sessions changed in the selected folder, before this command's answer. No EXPUNGE while
        // answering a FETCH or STORE by sequence number (RFC 3501 §7.4.1): its numbers would shift under it.
        let by_sequence = matches!(
            body,
            CommandBody::Fetch { uid: false, .. }
                | CommandBody::Store { uid: false, .. }
                | CommandBody::Search { uid: false, .. }
        );
        self.sync_selected(backend, !by_sequence);
        match body {
            CommandBody::Namespace => {
                use imap_next::imap_types::extensions::namespace::Namespace;
                let personal = vec![Namespace {
                    prefix: "".try_into().expect("empty prefix"),
                    delimiter: Some('/'.try_into().expect("a quoted char")),
                    extensions: Vec::new(),
                }];
                self.server.enqueue_data(Data::Namespace {
                    personal,
                    other: Vec::new(),
                    shared: Vec::new(),
                });
                self.server.enqueue_status(ok(tag, "NAMESPACE completed."));
            }
            body @ (CommandBody::List { .. } | CommandBody::Lsub { .. }) => {
                let (lsub, mailbox_wildcard) = match body {
                    CommandBody::Lsub {
                        mailbox_wildcard, ..
                    } => (true, mailbox_wildcard),
                    CommandBody::List {
                        mailbox_wildcard, ..
                    } => (false, mailbox_wildcard),
                    _ => unreachable!("matched above"),
                };
                let pattern = list_pattern(&mailbox_wildcard);
                let folders = backend.folders();
                for folder in &folders {
                    if !wildcard_match(&pattern, &folder.name) {
                        continue;
                    }
                    let has_children = folders
                        .iter()
                        .any(|f| f.name.starts_with(&format!("{}/", folder.name)));
                    let mut items = vec![FlagNameAttribute::from(
                        imap_next::imap_types::core::Atom::try_from(if has_children {
                            "HasChildren"
                        } else {
                            "HasNoChildren"
                        })
                        .expect("an atom"),
                    )];
                    if let Some(special) = &folder.special_use {
                        items.push(FlagNameAttribute::from(
                            imap_next::imap_types::core::Atom::try_from(special.clone())
                                .expect("an atom"),
                        ));
                    }
                    let mailbox = to_mailbox(&folder.name);
                    let delimiter = Some('/'.try_into().expect("a quoted char"));
                    // Every folder counts as subscribed: LSUB lists them all too.
                    self.server.enqueue_data(if lsub {
                        Data::Lsub {
                            items,
                            delimiter,
                            mailbox,
                        }
                    } else {
                        Data::List {
                            items,
                            delimiter,
                            mailbox,
                        }
                    });
                }
                self.server.enqueue_status(ok(
                    tag,
                    if lsub {
                        "LSUB completed."
                    } else {
                        "LIST completed."
                    },
                ));
            }
            CommandBody::Status {
                mailbox,
                item_names,
            } => {
                let name = from_mailbox(&mailbox);
                let Some(view) = backend.folder(&name) else {
                    self.server
                        .enqueue_status(no(tag, "The requested item could not be found."));
                    return;
                };
                let items: Vec<StatusDataItem> = item_names
                    .iter()
                    .filter_map(|item| match item {
                        StatusDataItemName::Messages => {
                            Some(StatusDataItem::Messages(view.messages.len() as u32))
                        }
                        StatusDataItemName::Recent => Some(StatusDataItem::Recent(0)),
                        StatusDataItemName::UidNext => {
                            NonZeroU32::new(view.uid_next).map(StatusDataItem::UidNext)
                        }
                        StatusDataItemName::UidValidity => {
                            NonZeroU32::new(view.uid_validity).map(StatusDataItem::UidValidity)
                        }
                        StatusDataItemName::Unseen => Some(StatusDataItem::Unseen(
                            view.messages
                                .iter()
                                .filter(|m| {
                                    !m.flags.iter().any(|f| f.eq_ignore_ascii_case("\\Seen"))
                                })
                                .count() as u32,
                        )),
                        _ => None,
                    })
                    .collect();
                self.server.enqueue_data(Data::Status {
                    // The folder's own name, as LIST writes it (not the client's quoting of it).
                    mailbox: to_mailbox(&name),
                    items: Cow::Owned(items),
                });
                self.server.enqueue_status(ok(tag, "STATUS completed."));
            }
            CommandBody::Select { mailbox, .. } => {
                self.select(tag, from_mailbox(&mailbox), false, backend);
            }
            CommandBody::Examine { mailbox, .. } => {
                self.select(tag, from_mailbox(&mailbox), true, backend);
            }
            CommandBody::Unselect | CommandBody::Close => {
                let close = matches!(body, CommandBody::Close);
                let State::Selected {
                    name, read_only, ..
                } = std::mem::replace(&mut self.state, State::Authenticated)
                else {
                    self.server
                        .enqueue_status(bad(Some(tag), "Command received in Invalid state."));
                    return;
                };
                // CLOSE expunges silently what is marked \Deleted (RFC 3501 §6.4.2).
                if close
                    && !read_only
                    && let Some(view) = backend.folder(&name)
                {
                    let deleted: Vec<u32> = view
                        .messages
                        .iter()
                        .filter(|m| has_flag(&m.flags, "\\Deleted"))
                        .map(|m| m.uid)
                        .collect();
                    backend.expunge(&name, &deleted);
                }
                self.server.enqueue_status(ok(
                    tag,
                    if close {
                        "CLOSE completed."
                    } else {
                        "UNSELECT completed."
                    },
                ));
            }
            CommandBody::Create { mailbox } => {
                let name = from_mailbox(&mailbox);
                self.change_folder(
                    tag,
                    FolderChange::Create(&name),
                    "CREATE completed.",
                    backend,
                );
            }
            CommandBody::Delete { mailbox } => {
                let name = from_mailbox(&mailbox);
                self.change_folder(
                    tag,
                    FolderChange::Delete(&name),
                    "DELETE completed.",
                    backend,
                );
            }
            CommandBody::Rename { from, to } => {
                let (from, to) = (from_mailbox(&from), from_mailbox(&to));
                let change = FolderChange::Rename {
                    from: &from,
                    to: &to,
                };
                self.change_folder(tag, change, "RENAME completed.", backend);
            }
            CommandBody::Append {
                mailbox,
                flags,
                date,
                message,
            } => {
                use imap_next::imap_types::extensions::binary::LiteralOrLiteral8;
                let bytes: &[u8] = match &message {
                    LiteralOrLiteral8::Literal(literal) => literal.data(),
                    LiteralOrLiteral8::Literal8(literal) => &literal.data,
                };
                let flags: Vec<String> = flags.iter().map(ToString::to_string).collect();
                let date = date.map(|d| d.as_ref().timestamp());
                let folder = from_mailbox(&mailbox);
                let uid_validity = backend.folder(&folder).map(|v| v.uid_validity);
                match (uid_validity, backend.append(&folder, bytes, &flags, date)) {
                    (Some(uid_validity), Some(uid)) => {
                        let code = NonZeroU32::new(uid_validity)
                            .zip(NonZeroU32::new(uid))
                            .map(|(uid_validity, uid)| Code::AppendUid { uid_validity, uid });
                        let status =
                            Status::ok(Some(tag), code, "APPEND completed.").expect("static text");
                        self.server.enqueue_status(status);
                    }
                    _ => {
                        let status = Status::no(
                            Some(tag),
                            Some(Code::TryCreate),
                            "The requested item could not be found.",
                        )
                        .expect("static text");
                        self.server.enqueue_status(status);
                    }
                }
            }
            CommandBody::Copy {
                sequence_set,
                mailbox,
                uid,
            } => self.copy(
                tag,
                &sequence_set,
                &from_mailbox(&mailbox),
                uid,
                false,
                backend,
            ),
            CommandBody::Move {
                sequence_set,
                mailbox,
                uid,
            } => self.copy(
                tag,
                &sequence_set,
                &from_mailbox(&mailbox),
                uid,
                true,
                backend,
            ),
            CommandBody::Search {
                charset,
                criteria,
                uid,
            } => {
                if !matches!(self.state, State::Selected { .. }) {
                    self.server
                        .enqueue_status(bad(Some(tag), "Command received in Invalid state."));
                    return;
                }
                self.search(tag, charset.as_ref(), criteria.as_ref(), uid, backend);
            }
            body @ (CommandBody::Fetch { .. }
            | CommandBody::Store { .. }
            | CommandBody::Expunge
            | CommandBody::ExpungeUid { .. }) => {
                if !matches!(self.state, State::Selected { .. }) {
                    self.server
                        .enqueue_status(bad(Some(tag), "Command received in Invalid state."));
                    return;
                }
                match body {
                    CommandBody::Fetch {
                        sequence_set,
                        macro_or_item_names,
                        uid,
                        ..
                    } => self.fetch(tag, &sequence_set, &macro_or_item_names, uid, backend),
                    CommandBody::Store {
                        sequence_set,
                        kind,
                        response,
                        flags,
                        uid,
                        ..
                    } => self.store(tag, &sequence_set, kind, response, &flags, uid, backend),
                    CommandBody::ExpungeUid { sequence_set } => {
                        self.expunge(tag, Some(&sequence_set), backend)
                    }
                    _ => self.expunge(tag, None, backend),
                }
            }
            _ => {
                self.server
                    .enqueue_status(bad(Some(tag), "Command not supported."));
            }
        }
    }

    fn select(
        &mut self,
        tag: Tag<'static>,
        name: String,
        read_only: bool,
        backend: &mut dyn ImapBackend,
    ) {
        let Some(view) = backend.folder(&name) else {
            self.state = State::Authenticated;
            self.server
                .enqueue_status(no(tag, "The requested item could not be found."));
            return;
        };
        let flags = || {
            [
                "\\Seen",
                "\\Answered",
                "\\Flagged",
                "\\Deleted",
                "\\Draft",
                "$MDNSent",
            ]
            .iter()
            .map(|f| Flag::try_from(*f).expect("a flag"))
            .collect::<Vec<_>>()
        };
        self.server.enqueue_data(Data::Flags(flags()));
        self.server
            .enqueue_data(Data::Exists(view.messages.len() as u32));
        self.server.enqueue_data(Data::Recent(0));
        let permanent: Vec<FlagPerm<'static>> = flags().into_iter().map(FlagPerm::Flag).collect();
        for code in [
            Code::PermanentFlags(permanent),
            Code::uidvalidity(view.uid_validity.max(1)).expect("non-zero"),
            Code::uidnext(view.uid_next.max(1)).expect("non-zero"),
        ] {
            self.server.enqueue_status(
                Status::ok(None, Some(code), "Ok".to_owned()).expect("static text"),
            );
        }
        let uids = view.messages.iter().map(|m| m.uid).collect();
        self.state = State::Selected {
            name,
            read_only,
            uids,
        };
        let (code, text) = if read_only {
            (Code::ReadOnly, "EXAMINE completed.")
        } else {
            (Code::ReadWrite, "SELECT completed.")
        };
        self.server.enqueue_status(
            Status::ok(Some(tag), Some(code), text.to_owned()).expect("static text"),
        );
    }
}

impl ImapSession {
    /// Brings the session's sequence numbers up to date with the folder: `* n EXPUNGE` for messages other
    /// sessions removed (highest first, when `allow_expunge`), `* n EXISTS` for messages that arrived.
    /// Reports what others changed in the selected folder (EXPUNGE, EXISTS); the folder as it is now.
    fn sync_selected(
        &mut self,
        backend: &mut dyn ImapBackend,
        allow_expunge: bool,
    ) -> Option<FolderView> {
        let State::Selected { name, .. } = &self.state else {
            return None;
        };
        let view = backend.folder(name)?;
        let State::Selected { uids, .. } = &mut self.state else {
            return None;
        };
        let mut responses = Vec::new();
        if allow_expunge {
            for index in (0..uids.len()).rev() {
                if view.message(uids[index]).is_none() {
                    uids.remove(index);
                    responses.push(Data::Expunge(
                        NonZeroU32::new(index as u32 + 1).expect("sequence numbers start at 1"),
                    ));
                }
            }
        }
        let highest = uids.last().copied().unwrap_or(0);
        let before = uids.len();
        uids.extend(
            view.messages
                .iter()
                .map(|m| m.uid)
                .filter(|&uid| uid > highest),
        );
        if uids.len() > before {
            responses.push(Data::Exists(uids.len() as u32));
        }
        for data in responses {
            self.server.enqueue_data(data);
        }
        Some(view)
    }

    fn selected(&self) -> Option<(String, bool, Vec<u32>)> {
        match &self.state {
            State::Selected {
                name,
                read_only,
                uids,
            } => Some((name.clone(), *read_only, uids.clone())),
            _ => None,
        }
    }

    fn change_folder(
        &mut self,
        tag: Tag<'static>,
        change: FolderChange<'_>,
        done: &str,
        backend: &mut dyn ImapBackend,
    ) {
        let status = match backend.change_folder(change) {
            Ok(()) => ok(tag, done),
            Err(FolderRefusal::NotFound) => no(tag, "The requested item could not be found."),
            Err(FolderRefusal::Exists) => no(tag, "A folder with that name already exists."),
            Err(FolderRefusal::Protected) => {
                no(tag, "A default folder cannot be deleted or renamed.")
            }
            Err(FolderRefusal::BadName) => no(tag, "The folder name is not valid."),
        };
        self.server.enqueue_status(status);
    }

    /// COPY / UID COPY, and MOVE / UID MOVE (RFC 6851: the copy, `* OK [COPYUID …]`, the source's EXPUNGEs,
    /// then the tagged OK).
    fn copy(
        &mut self,
        tag: Tag<'static>,
        set: &SequenceSet,
        to: &str,
        uid_mode: bool,
        moving: bool,
        backend: &mut dyn ImapBackend,
    ) {
        let Some((folder, read_only, uids)) = self.selected() else {
            self.server
                .enqueue_status(bad(Some(tag), "Command received in Invalid state."));
            return;
        };
        let done = if moving {
            "MOVE completed."
        } else {
            "COPY completed."
        };
        if moving && read_only {
            self.server
                .enqueue_status(no(tag, "The folder is read-only (EXAMINE)."));
            return;
        }
        let chosen: Vec<(u32, u32)> = resolve(set, uid_mode, &uids);
        let source: Vec<u32> = chosen.iter().map(|&(_, uid)| uid).collect();
        let Some(destination_view) = backend.folder(to) else {
            let status = Status::no(
                Some(tag),
                Some(Code::TryCreate),
                "The requested item could not be found.",
            )
            .expect("static text");
            self.server.enqueue_status(status);
            return;
        };
        if source.is_empty() {
            self.server.enqueue_status(ok(tag, done));
            return;
        }
        let copied = if moving {
            backend.move_copy(&folder, &source, to)
        } else {
            backend.copy(&folder, &source, to)
        };
        let Some(created) = copied else {
            self.server
                .enqueue_status(no(tag, "The requested item could not be found."));
            return;
        };
        let code = copy_uid(destination_view.uid_validity, &source, &created);
        if !moving {
            let status = Status::ok(Some(tag), code, done).expect("static text");
            self.server.enqueue_status(status);
            return;
        }
        if let Some(code) = code {
            let status = Status::ok(None, Some(code), "Moved.").expect("static text");
            self.server.enqueue_status(status);
        }
        backend.expunge(&folder, &source);
        self.report_expunged(uids, &source);
        self.server.enqueue_status(ok(tag, done));
    }

    fn search(
        &mut self,
        tag: Tag<'static>,
        charset: Option<&imap_next::imap_types::core::Charset<'_>>,
        criteria: &[imap_next::imap_types::search::SearchKey<'_>],
        uid_mode: bool,
        backend: &mut dyn ImapBackend,
    ) {
        use imap_next::imap_types::core::Charset;
        let Some((folder, _, uids)) = self.selected() else {
            return;
        };
        if let Some(charset) = charset {
            let name = match charset {
                Charset::Atom(a) => a.as_ref().to_owned(),
                Charset::Quoted(q) => q.as_ref().to_owned(),
            };
            // Outlook refuses CHARSET with criteria that are all ASCII (§7.4); we take UTF-8 (and US-ASCII)
            // when a criterion needs it.
            let known = name.eq_ignore_ascii_case("UTF-8") || name.eq_ignore_ascii_case("US-ASCII");
            if !known || super::search::all_ascii(criteria) {
                self.server
                    .enqueue_status(no(tag, "The specified charset is not supported."));
                return;
            }
        }
        let criterion = super::search::compile(criteria, &uids);
        let view = backend.folder(&folder);
        let mut found = Vec::new();
        for (index, &uid) in uids.iter().enumerate() {
            let seq = index as u32 + 1;
            let Some(meta) = view.as_ref().and_then(|v| v.message(uid)) else {
                continue;
            };
            // Bytes are read (and parsed) only for criteria that look inside the message.
            let content = if criterion.needs_content() {
                backend
                    .message(&folder, uid)
                    .map(|bytes| super::search::Content::parse(&bytes))
            } else {
                None
            };
            if criterion.matches(seq, meta, content.as_ref()) {
                found.extend(NonZeroU32::new(if uid_mode { uid } else { seq }));
            }
        }
        self.server.enqueue_data(Data::Search(found));
        self.server.enqueue_status(ok(tag, "SEARCH completed."));
    }

    fn fetch(
        &mut self,
        tag: Tag<'static>,
        set: &SequenceSet,
        names: &MacroOrMessageDataItemNames<'_>,
        uid_mode: bool,
        backend: &mut dyn ImapBackend,
    ) {
        let Some((folder, read_only, uids)) = self.selected() else {
            return;
        };
        let mut names: Vec<MessageDataItemName<'static>> = match names {
            MacroOrMessageDataItemNames::Macro(m) => {
                m.expand().into_iter().map(|n| n.into_static()).collect()
            }
            MacroOrMessageDataItemNames::MessageDataItemNames(list) => {
                list.iter().cloned().map(|n| n.into_static()).collect()
            }
        };
        if uid_mode && !names.contains(&MessageDataItemName::Uid) {
            names.insert(0, MessageDataItemName::Uid);
        }
        let view = backend.folder(&folder);
        let meta = |uid: u32| view.as_ref().and_then(|v| v.message(uid)).cloned();
        for (seq, uid) in resolve(set, uid_mode, &uids) {
            let Some(mut message) = meta(uid) else {
                continue; // expunged by another session
            };
            let mut items = Vec::new();
            let mut mark_seen = false;
            for name in &names {
                match name {
                    MessageDataItemName::Uid => {
                        items.push(MessageDataItem::Uid(
                            NonZeroU32::new(uid).expect("UIDs start at 1"),
                        ));
                    }
                    MessageDataItemName::Flags => {
                        items.push(MessageDataItem::Flags(flag_fetch(&message.flags)))
                    }
                    MessageDataItemName::Rfc822Size => {
                        items.push(MessageDataItem::Rfc822Size(message.size))
                    }
                    MessageDataItemName::InternalDate => {
                        if let Some(date) = internal_date(message.internal_date) {
                            items.push(MessageDataItem::InternalDate(date));
                        }
                    }
                    MessageDataItemName::BodyExt {
                        section,
                        partial,
                        peek,
                    } => {
                        let Some((bytes, structure)) = backend.structure(&folder, uid) else {
                            continue;
                        };
                        let mut data = structure.section(&bytes, section.as_ref());
                        let origin = partial.map(|(start, length)| {
                            let start_at = (start as usize).min(data.len());
                            let end = start_at
                                .saturating_add(length.get() as usize)
                                .min(data.len());
                            data = data[start_at..end].to_vec();
                            start
                        });
                        mark_seen |= !peek;
                        items.push(MessageDataItem::BodyExt {
                            section: section.clone(),
                            origin,
                            data: literal(data),
                        });
                    }
                    MessageDataItemName::Body | MessageDataItemName::BodyStructure => {
                        let Some((bytes, structure)) = backend.structure(&folder, uid) else {
                            continue;
                        };
                        let extended = *name == MessageDataItemName::BodyStructure;
                        let answer = structure.body_structure(&bytes, extended);
                        items.push(if extended {
                            MessageDataItem::BodyStructure(answer)
                        } else {
                            MessageDataItem::Body(answer)
                        });
                    }
                    MessageDataItemName::Envelope => {
                        let Some(bytes) = backend.message(&folder, uid) else {
                            continue;
                        };
                        items.push(MessageDataItem::Envelope(super::envelope::envelope(&bytes)));
                    }
                    MessageDataItemName::Rfc822
                    | MessageDataItemName::Rfc822Header
                    | MessageDataItemName::Rfc822Text => {
                        let Some(bytes) = backend.message(&folder, uid) else {
                            continue;
                        };
                        let split = header_end(&bytes);
                        items.push(match name {
                            MessageDataItemName::Rfc822 => {
                                mark_seen = true;
                                MessageDataItem::Rfc822(literal(bytes.to_vec()))
                            }
                            MessageDataItemName::Rfc822Header => {
                                MessageDataItem::Rfc822Header(literal(bytes[..split].to_vec()))
                            }
                            _ => {
                                mark_seen = true;
                                MessageDataItem::Rfc822Text(literal(bytes[split..].to_vec()))
                            }
                        });
                    }
                    _ => {}
                }
            }
            // A body fetched without PEEK is \Seen from now on (RFC 3501 §6.4.5), and says so.
            if mark_seen && !read_only && !has_flag(&message.flags, "\\Seen") {
                message.flags.push("\\Seen".to_owned());
                backend.set_flags(&folder, uid, &message.flags);
                if !names.contains(&MessageDataItemName::Flags) {
                    items.push(MessageDataItem::Flags(flag_fetch(&message.flags)));
                }
            }
            if let Ok(items) = Vec1::try_from(items) {
                self.server.enqueue_data(Data::Fetch {
                    seq: NonZeroU32::new(seq).expect("sequence numbers start at 1"),
                    items,
                });
            }
        }
        self.server.enqueue_status(ok(tag, "FETCH completed."));
    }

    #[allow(clippy::too_many_arguments)] // the STORE command's own fields
    fn store(
        &mut self,
        tag: Tag<'static>,
        set: &SequenceSet,
        kind: StoreType,
        response: StoreResponse,
        flags: &[Flag<'_>],
        uid_mode: bool,
        backend: &mut dyn ImapBackend,
    ) {
        let Some((folder, read_only, uids)) = self.selected() else {
            return;
        };
        if read_only {
            self.server
                .enqueue_status(no(tag, "The folder is read-only (EXAMINE)."));
            return;
        }
        let given: Vec<String> = flags.iter().map(ToString::to_string).collect();
        let view = backend.folder(&folder);
        for (seq, uid) in resolve(set, uid_mode, &uids) {
            let Some(message) = view.as_ref().and_then(|v| v.message(uid)) else {
                continue;
            };
            let mut now = match kind {
                StoreType::Replace => Vec::new(),
                StoreType::Add | StoreType::Remove => message.flags.clone(),
            };
            match kind {
                StoreType::Replace | StoreType::Add => {
                    for flag in &given {
                        if !has_flag(&now, flag) {
                            now.push(flag.clone());
                        }
                    }
                }
                StoreType::Remove => now.retain(|f| !has_flag(&given, f)),
            }
            backend.set_flags(&folder, uid, &now);
            if response == StoreResponse::Answer {
                let mut items = vec![MessageDataItem::Flags(flag_fetch(&now))];
                if uid_mode {
                    items.insert(
                        0,
                        MessageDataItem::Uid(NonZeroU32::new(uid).expect("UIDs start at 1")),
                    );
                }
                self.server.enqueue_data(Data::Fetch {
                    seq: NonZeroU32::new(seq).expect("sequence numbers start at 1"),
                    items: Vec1::try_from(items).expect("not empty"),
                });
            }
        }
        self.server.enqueue_status(ok(tag, "STORE completed."));
    }

    fn expunge(
        &mut self,
        tag: Tag<'static>,
        only: Option<&SequenceSet>,
        backend: &mut dyn ImapBackend,
    ) {
        let Some((folder, read_only, uids)) = self.selected() else {
            return;
        };
        if read_only {
            self.server
                .enqueue_status(no(tag, "The folder is read-only (EXAMINE)."));
            return;
        }
        let allowed: Option<Vec<u32>> = only.map(|set| {
            resolve(set, true, &uids)
                .into_iter()
                .map(|(_, uid)| uid)
                .collect()
        });
        let view = backend.folder(&folder);
        let gone: Vec<u32> = view
            .map(|v| {
                v.messages
                    .iter()
                    .filter(|m| has_flag(&m.flags, "\\Deleted"))
                    .filter(|m| allowed.as_ref().is_none_or(|a| a.contains(&m.uid)))
                    .map(|m| m.uid)
                    .collect()
            })
            .unwrap_or_default();
        backend.expunge(&folder, &gone);
        self.report_expunged(uids, &gone);
        self.server.enqueue_status(ok(tag, "EXPUNGE completed."));
    }

    /// `* n EXPUNGE` for each of `gone` among the session's `uids`, highest sequence number first (each
    /// renumbers only the messages after it); the session keeps the rest.
    fn report_expunged(&mut self, mut uids: Vec<u32>, gone: &[u32]) {
        for index in (0..uids.len()).rev() {
            if gone.contains(&uids[index]) {
                uids.remove(index);
                self.server.enqueue_data(Data::Expunge(
                    NonZeroU32::new(index as u32 + 1).expect("sequence numbers start at 1"),
                ));
            }
        }
        if let State::Selected { uids: kept, .. } = &mut self.state {
            *kept = uids;
        }
    }
}

/// A folder's flags by UID.
fn flags_by_uid(view: &FolderView) -> std::collections::HashMap<u32, Vec<String>> {
    view.messages
        .iter()
        .map(|m| (m.uid, m.flags.clone()))
        .collect()
}

/// `[COPYUID uidvalidity source destination]` (RFC 4315), or `None` when there is nothing to say.
fn copy_uid(uid_validity: u32, source: &[u32], created: &[u32]) -> Option<Code<'static>> {
    use imap_next::imap_types::extensions::uidplus::{UidElement, UidSet};
    let set = |uids: &[u32]| -> Option<UidSet> {
        let elements: Vec<UidElement> = uids
            .iter()
            .filter_map(|&uid| NonZeroU32::new(uid).map(UidElement::Single))
            .collect();
        elements.try_into().ok().map(UidSet)
    };
    Some(Code::CopyUid {
        uid_validity: NonZeroU32::new(uid_validity)?,
        source: set(source)?,
        destination: set(created)?,
    })
}

/// imap-codec writes the capabilities it knows in its own case (`IMAP4REV1`); Exchange writes `IMAP4rev1`
/// (§7.4). Only a CAPABILITY response is touched (a message body is never rewritten).
fn exchange_case(mut bytes: Vec<u8>) -> Vec<u8> {
    const KNOWN: &[u8] = b" IMAP4REV1 ";
    if bytes.starts_with(b"* CAPABILITY ") {
        let line_end = bytes
            .iter()
            .position(|&b| b == b'\n')
            .unwrap_or(bytes.len());
        if let Some(at) = bytes[..line_end]
            .windows(KNOWN.len())
            .position(|w| w == KNOWN)
        {
            bytes[at + 1..at + KNOWN.len() - 1].copy_from_slice(b"IMAP4rev1");
        }
    }
    bytes
}

/// Bounds on what a client may send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImapLimits {
    /// Largest literal (APPEND, a long string).
    pub max_literal: u32,
    /// Longest command (literals included).
    pub max_command: u32,
}

impl Default for ImapLimits {
    fn default() -> Self {
        // Exchange Online takes messages up to 150 MB (microsoft.md §7.7): APPEND needs literals that size.
        Self {
            max_literal: 36 * 1024 * 1024,
            max_command: 36 * 1024 * 1024 + 64 * 1024,
        }
    }
}

fn has_flag(flags: &[String], flag: &str) -> bool {
    flags.iter().any(|f| f.eq_ignore_ascii_case(flag))
}

/// The (sequence number, UID) pairs a set names, in sequence order. Ranges are matched, never expanded, so
/// `1:*` over UIDs costs one pass over the folder.
pub(crate) fn resolve(set: &SequenceSet, uid_mode: bool, uids: &[u32]) -> Vec<(u32, u32)> {
    let largest = if uid_mode {
        uids.last().copied().unwrap_or(0)
    } else {
        uids.len() as u32
    };
    let value = |v: &SeqOrUid| match v {
        SeqOrUid::Value(n) => n.get(),
        SeqOrUid::Asterisk => largest,
    };
    let ranges: Vec<(u32, u32)> = set
        .0
        .as_ref()
        .iter()
        .map(|sequence| match sequence {
            Sequence::Single(v) => (value(v), value(v)),
            Sequence::Range(a, b) => {
                let (a, b) = (value(a), value(b));
                (a.min(b), a.max(b))
            }
        })
        .collect();
    uids.iter()
        .enumerate()
        .map(|(i, &uid)| (i as u32 + 1, uid))
        .filter(|&(seq, uid)| {
            let key = if uid_mode { uid } else { seq };
            ranges.iter().any(|&(lo, hi)| (lo..=hi).contains(&key))
        })
        .collect()
}

/// Where the header ends: after the first empty line (the blank line included), or the whole message.
pub(crate) fn header_end(bytes: &[u8]) -> usize {
    if bytes.starts_with(b"\r\n") {
        return 2;
    }
    bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(bytes.len(), |at| at + 4)
}

/// Bytes as a literal; NUL, which an IMAP literal cannot carry, becomes a space.
fn literal(mut bytes: Vec<u8>) -> NString<'static> {
    for byte in &mut bytes {
        if *byte == 0 {
            *byte = b' ';
        }
    }
    NString(Some(IString::Literal(
        Literal::try_from(bytes).expect("a literal without NUL is valid"),
    )))
}

fn flag_fetch(flags: &[String]) -> Vec<FlagFetch<'static>> {
    flags
        .iter()
        .filter_map(|f| Flag::try_from(f.as_str()).ok().map(|f| f.into_static()))
        .map(FlagFetch::Flag)
        .collect()
}

fn internal_date(secs: i64) -> Option<imap_next::imap_types::datetime::DateTime> {
    let utc = chrono::FixedOffset::east_opt(0)?;
    let time = chrono::DateTime::from_timestamp(secs, 0)?.with_timezone(&utc);
    imap_next::imap_types::datetime::DateTime::try_from(time).ok()
}

/// A folder name from the wire: modified UTF-7 decoded (a name that is not valid modified UTF-7 — a client
/// sending raw UTF-8 — is taken as sent).
fn from_mailbox(mailbox: &Mailbox<'_>) -> String {
    match mailbox {
        Mailbox::Inbox => "INBOX".to_owned(),
        Mailbox::Other(other) => {
            let raw = String::from_utf8_lossy(other.as_ref());
            super::mutf7::decode(&raw).unwrap_or_else(|| raw.into_owned())
        }
    }
}

/// A folder name for the wire: modified UTF-7 (Exchange sends its localised names so).
fn to_mailbox(name: &str) -> Mailbox<'static> {
    Mailbox::try_from(super::mutf7::encode(name)).expect("a folder name is a valid mailbox")
}

fn list_pattern(wildcard: &imap_next::imap_types::mailbox::ListMailbox<'_>) -> String {
    use imap_next::imap_types::mailbox::ListMailbox;
    let raw = match wildcard {
        ListMailbox::Token(token) => String::from_utf8_lossy(token.as_ref()).into_owned(),
        ListMailbox::String(string) => String::from_utf8_lossy(string.as_ref()).into_owned(),
    };
    // Matched against the Unicode names: a pattern names them in modified UTF-7 too.
    super::mutf7::decode(&raw).unwrap_or(raw)
}

/// LIST's wildcards: `*` matches anything, `%` anything but the delimiter `/`. INBOX in any case.
fn wildcard_match(pattern: &str, name: &str) -> bool {
    fn matches(p: &[u8], n: &[u8]) -> bool {
        match p.split_first() {
            None => n.is_empty(),
            Some((b'*', rest)) => (0..=n.len()).any(|i| matches(rest, &n[i..])),
            Some((b'%', rest)) => (0..=n.len())
                .take_while(|&i| i == 0 || n[i - 1] != b'/')
                .any(|i| matches(rest, &n[i..])),
            Some((c, rest)) => n.first() == Some(c) && matches(rest, &n[1..]),
        }
    }
    if name == "INBOX" && pattern.eq_ignore_ascii_case("inbox") {
        return true;
    }
    matches(pattern.as_bytes(), name.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_wildcards() {
        assert!(wildcard_match("*", "Archive/2026"));
        assert!(wildcard_match("%", "Archive"));
        assert!(!wildcard_match("%", "Archive/2026"));
        assert!(wildcard_match("Archive/%", "Archive/2026"));
        assert!(wildcard_match("inbox", "INBOX"));
        assert!(wildcard_match("Sent*", "Sent Items"));
        assert!(!wildcard_match("Drafts", "Sent Items"));
    }
}
