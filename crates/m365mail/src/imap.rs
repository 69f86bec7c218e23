//! IMAP with SASL XOAUTH2: what the IMAP reader needs, on async-imap over tokio-rustls, behind our own
//! [`ImapClient`] trait (so the client crate can be replaced without touching the reader).
//!
//! [`ImapConnection::connect`] opens implicit TLS (993, Exchange Online's port) or a plain connection upgraded
//! with STARTTLS ([`TlsMode::Starttls`]; Dovecot's 143), always verified with the shared [`TlsTrust`], and
//! signs in with `AUTHENTICATE XOAUTH2` — the initial response on the command line when the server offers
//! SASL-IR (async-imap sends a bare `AUTHENTICATE <mechanism>`; the response goes in as the mechanism's
//! argument), else after the `+`. A failure challenge (Dovecot's `+ <base64 JSON>`) is answered with an empty
//! line, as RFC 7628 asks, and its text kept for the error. CAPABILITY is read again after sign-in (Exchange
//! adds MOVE then).
//!
//! Everything the client sends goes through here: folder names are modified UTF-7 and quoted, search
//! strings quoted or sent as literals (LITERAL+), and a CR or LF in either is refused before it reaches the
//! wire. Every command has a deadline. async-imap holds one whole response in memory, so bodies are fetched
//! in bounded batches and a message above the batch bound alone.

use std::collections::HashSet;
use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use async_imap::imap_proto;
use async_imap::types::NameAttribute;
use m365mail_proto::imap::mutf7;
use m365mail_proto::xoauth2;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::endpoint::{MailEndpoint, TlsMode};
use crate::error::{Classified, ErrorClass};
use crate::secret::Secret;
use crate::tls::{TlsError, TlsTrust};
use crate::transport::{TransportError, TransportKind};

/// How to reach an IMAP server.
#[derive(Debug, Clone)]
pub struct ImapOptions {
    /// Address and TLS mode.
    pub endpoint: MailEndpoint,
    /// Whom to trust.
    pub trust: TlsTrust,
    /// Bound on connecting and the TLS handshake.
    pub connect_timeout: Duration,
    /// Bound on each command's answer (a body fetch: on each message of it).
    pub io_timeout: Duration,
}

impl ImapOptions {
    /// Defaults: 30 s to connect, 120 s per answer.
    pub fn new(endpoint: MailEndpoint, trust: TlsTrust) -> Self {
        Self {
            endpoint,
            trust,
            connect_timeout: Duration::from_secs(30),
            io_timeout: Duration::from_secs(120),
        }
    }
}

/// An IMAP failure: below the protocol, in it, or the server's refusal.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImapError {
    /// Connect, TLS, timeout or I/O failure.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The trust setup could not be built.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The server refused the XOAUTH2 sign-in.
    #[error("{endpoint}: the IMAP server refused the sign-in for {user}: {text}")]
    AuthRefused {
        /// `host:port`.
        endpoint: String,
        /// The mailbox sent as `user=`.
        user: String,
        /// The server's text.
        text: String,
        /// The decoded failure challenge, when the server sent one (Dovecot, Gmail; Exchange does not).
        challenge: Option<String>,
    },
    /// Signed in, but the mailbox cannot be opened: Exchange's `BAD User is authenticated but not connected.`
    #[error("{endpoint}: signed in as {user}, but the mailbox cannot be opened: {text}")]
    NotConnected {
        /// `host:port`.
        endpoint: String,
        /// The mailbox sent as `user=`.
        user: String,
        /// The server's text.
        text: String,
    },
    /// The server ended the session (`* BYE …`), e.g. `Session invalidated - AccessTokenExpired`.
    #[error("{endpoint}: the IMAP server ended the session: {text}")]
    SessionEnded {
        /// `host:port`.
        endpoint: String,
        /// The BYE text.
        text: String,
    },
    /// The connection ended without a BYE.
    #[error("{endpoint}: the IMAP connection was lost during {command}")]
    ConnectionLost {
        /// `host:port`.
        endpoint: String,
        /// The command that was waiting.
        command: String,
    },
    /// The server answered a command with `NO` or `BAD`.
    #[error("{endpoint}: the IMAP server refused {command}: {text}")]
    Refused {
        /// `host:port`.
        endpoint: String,
        /// The command (its verb and arguments; never a token).
        command: String,
        /// The server's text.
        text: String,
    },
    /// The server sent something the client could not parse.
    #[error("{endpoint}: IMAP protocol error during {command}: {text}")]
    Protocol {
        /// `host:port`.
        endpoint: String,
        /// The command.
        command: String,
        /// What went wrong.
        text: String,
    },
    /// The folder does not exist.
    #[error("{endpoint}: there is no folder {folder:?}")]
    NoSuchFolder {
        /// `host:port`.
        endpoint: String,
        /// The folder, as given.
        folder: String,
    },
    /// STARTTLS was asked for but the server does not offer it; or the server lacks what an action needs.
    #[error("{endpoint}: the IMAP server does not offer {capability}")]
    Missing {
        /// `host:port`.
        endpoint: String,
        /// The capability.
        capability: &'static str,
    },
    /// A value given by the user cannot go into an IMAP command.
    #[error("{what} {value:?} cannot be sent to an IMAP server: {reason}")]
    BadInput {
        /// What it is (`--subject`, a folder name …).
        what: String,
        /// The value, as given.
        value: String,
        /// Why.
        reason: String,
    },
}

impl ImapError {
    /// Whether a new session (a new connection, signed in again) may get further: the connection broke or
    /// the server ended the session (an expired token, a restart), or a deadline passed.
    pub fn is_session_lost(&self) -> bool {
        match self {
            Self::SessionEnded { .. } | Self::ConnectionLost { .. } => true,
            Self::Transport(e) => matches!(e.kind(), TransportKind::Io | TransportKind::Timeout),
            _ => false,
        }
    }

    /// Whether the server said the session's token expired.
    pub fn token_expired(&self) -> bool {
        matches!(self, Self::SessionEnded { text, .. } if text.contains("AccessTokenExpired"))
    }
}

impl Classified for ImapError {
    fn class(&self) -> ErrorClass {
        match self {
            Self::Transport(e) => e.class(),
            Self::Tls(e) => e.class(),
            Self::AuthRefused { .. } | Self::NotConnected { .. } => ErrorClass::Admin,
            Self::SessionEnded { .. }
            | Self::ConnectionLost { .. }
            | Self::Protocol { .. }
            | Self::Refused { .. } => ErrorClass::Transient,
            Self::NoSuchFolder { .. } | Self::BadInput { .. } => ErrorClass::Input,
            Self::Missing { .. } => ErrorClass::Config,
        }
    }

    fn cause(&self) -> String {
        match self {
            Self::Transport(e) => e.cause(),
            Self::Tls(e) => e.cause(),
            Self::AuthRefused { user, text, .. } => format!(
                "the token was not accepted for mailbox {user} ({text}); Exchange answers `NO AUTHENTICATE \
                 failed.` for every reason, so the cause is one of the checks in the remedy"
            ),
            Self::NotConnected { user, .. } => format!(
                "the token is valid, but Exchange would not open mailbox {user}: the identity has no right to \
                 it, IMAP is off for it, or (app-only) the app's service principal is not registered in Exchange"
            ),
            Self::SessionEnded { text, .. } if text.contains("AccessTokenExpired") => {
                "the access token expired while the session was open".into()
            }
            Self::SessionEnded { endpoint, text } => {
                format!("{endpoint} ended the session: {text}")
            }
            Self::ConnectionLost { endpoint, command } => {
                format!("{endpoint} closed the connection while answering {command}")
            }
            Self::Refused { command, text, .. } => format!("the server refused {command}: {text}"),
            Self::Protocol { command, text, .. } => {
                format!("the server's answer to {command} could not be read: {text}")
            }
            Self::NoSuchFolder { folder, .. } => format!("the mailbox has no folder {folder:?}"),
            Self::Missing {
                endpoint,
                capability,
            } => {
                format!("{endpoint} does not offer {capability}")
            }
            Self::BadInput { what, reason, .. } => format!("{what}: {reason}"),
        }
    }

    fn remedy(&self) -> String {
        match self {
            Self::Transport(e) => e.remedy(),
            Self::Tls(e) => e.remedy(),
            Self::AuthRefused { .. } => "check, in order: the token's audience and scope or role \
                 (`m365mail token get --target imap --show-token | m365mail token inspect`: delegated needs \
                 IMAP.AccessAsUser.All, app-only the IMAP.AccessAsApp role); for app-only, the app's service \
                 principal registered in Exchange (New-ServicePrincipal) and its FullAccess on the mailbox \
                 (Add-MailboxPermission); for a shared mailbox, the user's FullAccess on it; and IMAP switched \
                 on for the mailbox (Set-CASMailbox -ImapEnabled $true)"
                .into(),
            Self::NotConnected { .. } => "grant the identity FullAccess on the mailbox \
                 (Add-MailboxPermission -AccessRights FullAccess), switch IMAP on for it (Set-CASMailbox \
                 -ImapEnabled $true), and for app-only register the app's service principal in Exchange \
                 (New-ServicePrincipal); or name the mailbox the token's user owns (--mailbox)"
                .into(),
            Self::SessionEnded { .. } | Self::ConnectionLost { .. } | Self::Protocol { .. } => {
                "run again: what was handed on is checkpointed, so nothing is read twice; if it repeats, \
                 run with --log debug"
                    .into()
            }
            Self::Refused { .. } => {
                "run again later (Exchange refuses commands while it is busy or throttling); if it repeats, \
                 look at the message or folder in Outlook on the web"
                    .into()
            }
            Self::NoSuchFolder { .. } => {
                "list the folders with `m365mail folders` and give the name as shown there (localised names \
                 such as `Gesendete Elemente` are fine)"
                    .into()
            }
            Self::Missing { capability, .. } if *capability == "STARTTLS" => {
                "use implicit TLS (imap_tls = \"implicit\", port 993), or a server that offers STARTTLS".into()
            }
            Self::Missing { .. } => "use another --then action, or another server".into(),
            Self::BadInput { .. } => {
                "remove line breaks and NUL characters from the value (an IMAP command is one line)".into()
            }
        }
    }
}

/// A folder as `folders` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FolderInfo {
    /// Its name, decoded (Unicode).
    pub name: String,
    /// The hierarchy delimiter.
    pub delimiter: Option<String>,
    /// LIST's attributes (`\HasNoChildren`, special uses such as `\Sent`, `\Trash`).
    pub attributes: Vec<String>,
    /// Messages in it (STATUS), when it can be selected.
    pub messages: Option<u32>,
    /// Messages without `\Seen`.
    pub unseen: Option<u32>,
}

impl FolderInfo {
    /// Whether LIST marks it with this special use (`\Trash`, `\Archive` …; case-insensitive).
    pub fn has_attribute(&self, attribute: &str) -> bool {
        self.attributes
            .iter()
            .any(|a| a.eq_ignore_ascii_case(attribute))
    }
}

/// The selected folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SelectedFolder {
    /// UIDVALIDITY.
    pub uid_validity: u32,
    /// Messages in it.
    pub exists: u32,
}

/// What the reader knows of a message before it downloads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageMeta {
    /// The UID.
    pub uid: u32,
    /// RFC822.SIZE.
    pub size: u64,
    /// INTERNALDATE, Unix seconds.
    pub internal_date: Option<i64>,
    /// Whether BODYSTRUCTURE shows an attachment (asked for only when a filter needs it).
    pub has_attachment: Option<bool>,
    /// ENVELOPE's Message-ID (asked for only when a fingerprint needs it).
    pub message_id: Option<String>,
}

/// A server-side search (`UID SEARCH`). Every string is quoted, or sent as a literal when it is not ASCII
/// (then with `CHARSET UTF-8`, which Exchange refuses for ASCII-only criteria: microsoft.md §7.4).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SearchQuery {
    /// `UNSEEN`.
    pub unseen: bool,
    /// `SINCE`: INTERNALDATE on or after this day (Unix seconds; the day is taken in UTC).
    pub since: Option<i64>,
    /// `BEFORE`: INTERNALDATE before this day.
    pub before: Option<i64>,
    /// `FROM`.
    pub from: Option<String>,
    /// `TO`.
    pub to: Option<String>,
    /// `SUBJECT`.
    pub subject: Option<String>,
    /// `LARGER`.
    pub larger_than: Option<u64>,
}

impl SearchQuery {
    /// Whether any criterion is set.
    pub fn is_active(&self) -> bool {
        *self != Self::default()
    }

    /// The arguments of `UID SEARCH` (`CHARSET UTF-8 …` first when a string is not ASCII); literals are
    /// LITERAL+ (`{n+}`), which Exchange and Dovecot offer.
    pub fn to_arguments(&self) -> Result<String, ImapError> {
        let mut parts: Vec<String> = Vec::new();
        let mut non_ascii = false;
        if self.unseen {
            parts.push("UNSEEN".into());
        }
        if let Some(since) = self.since {
            parts.push(format!("SINCE {}", imap_date(since)));
        }
        if let Some(before) = self.before {
            parts.push(format!("BEFORE {}", imap_date(before)));
        }
        for (key, flag, value) in [
            ("FROM", "--from", &self.from),
            ("TO", "--to", &self.to),
            ("SUBJECT", "--subject", &self.subject),
        ] {
            if let Some(value) = value {
                let (text, utf8) = astring(flag, value)?;
                non_ascii |= utf8;
                parts.push(format!("{key} {text}"));
            }
        }
        if let Some(size) = self.larger_than {
            parts.push(format!("LARGER {size}"));
        }
        if parts.is_empty() {
            parts.push("ALL".into());
        }
        let criteria = parts.join(" ");
        Ok(if non_ascii {
            format!("CHARSET UTF-8 {criteria}")
        } else {
            criteria
        })
    }
}

/// `07-Dec-2026` for Unix seconds (UTC).
fn imap_date(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0)
        .unwrap_or_default()
        .format("%d-%b-%Y")
        .to_string()
}

/// A search string: quoted when it is ASCII, else a LITERAL+ literal (and `true`). CR, LF and NUL refused.
fn astring(flag: &str, value: &str) -> Result<(String, bool), ImapError> {
    if let Some(c) = value.chars().find(|c| matches!(c, '\r' | '\n' | '\0')) {
        return Err(ImapError::BadInput {
            what: flag.into(),
            value: value.into(),
            reason: format!("it holds {c:?}"),
        });
    }
    if value.is_ascii() {
        Ok((quote(value), false))
    } else {
        Ok((format!("{{{}+}}\r\n{value}", value.len()), true))
    }
}

/// An IMAP quoted string.
fn quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// A folder name as a command argument: modified UTF-7, quoted. CR, LF and NUL refused.
pub fn folder_argument(name: &str) -> Result<String, ImapError> {
    if let Some(c) = name.chars().find(|c| matches!(c, '\r' | '\n' | '\0')) {
        return Err(ImapError::BadInput {
            what: "folder".into(),
            value: name.into(),
            reason: format!("it holds {c:?}"),
        });
    }
    Ok(quote(&mutf7::encode(name)))
}

/// `1:3,7,9:12` for ascending or not UIDs.
pub fn uid_set(uids: &[u32]) -> String {
    let mut sorted = uids.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut out = String::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        let mut end = start;
        while i + 1 < sorted.len() && sorted[i + 1] == end + 1 {
            i += 1;
            end = sorted[i];
        }
        if !out.is_empty() {
            out.push(',');
        }
        if start == end {
            out.push_str(&start.to_string());
        } else {
            out.push_str(&format!("{start}:{end}"));
        }
        i += 1;
    }
    out
}

/// What the IMAP reader needs of a signed-in session. [`ImapConnection`] is the one on async-imap.
#[allow(async_fn_in_trait)] // used generically by the reader on one task; no Send bound is needed
pub trait ImapClient {
    /// `host:port`.
    fn endpoint(&self) -> &str;
    /// Whether the server advertises `capability` (after sign-in).
    fn has_capability(&self, capability: &str) -> bool;
    /// Every folder (LIST "" "*"), with STATUS counts when `counts`.
    async fn folders(&mut self, counts: bool) -> Result<Vec<FolderInfo>, ImapError>;
    /// SELECT (or EXAMINE, `read_only`) a folder by its Unicode name.
    async fn select(&mut self, folder: &str, read_only: bool) -> Result<SelectedFolder, ImapError>;
    /// `UID SEARCH`: the UIDs that match, ascending.
    async fn search(&mut self, query: &SearchQuery) -> Result<Vec<u32>, ImapError>;
    /// UID, RFC822.SIZE, INTERNALDATE (and BODYSTRUCTURE, ENVELOPE when asked) of these UIDs.
    async fn metadata(
        &mut self,
        uids: &[u32],
        structure: bool,
        envelope: bool,
    ) -> Result<Vec<MessageMeta>, ImapError>;
    /// The whole messages (BODY.PEEK[]), by UID; a message gone meanwhile is absent.
    async fn bodies(&mut self, uids: &[u32]) -> Result<Vec<(u32, Vec<u8>)>, ImapError>;
    /// A message's header (BODY.PEEK[HEADER]).
    async fn header(&mut self, uid: u32) -> Result<Option<Vec<u8>>, ImapError>;
    /// `UID STORE +FLAGS.SILENT (flag)`.
    async fn add_flag(&mut self, uids: &[u32], flag: &str) -> Result<(), ImapError>;
    /// `UID MOVE` to `folder` (Unicode name).
    async fn move_to(&mut self, uids: &[u32], folder: &str) -> Result<(), ImapError>;
    /// `UID COPY` to `folder`.
    async fn copy_to(&mut self, uids: &[u32], folder: &str) -> Result<(), ImapError>;
    /// `UID EXPUNGE` of these UIDs (UIDPLUS); they must carry `\Deleted`.
    async fn expunge(&mut self, uids: &[u32]) -> Result<(), ImapError>;
    /// LOGOUT.
    async fn logout(self) -> Result<(), ImapError>;
}

#[derive(Debug)]
enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The XOAUTH2 exchange after the command: the first challenge (Exchange's bare `+`, when there was no
/// initial response) gets the XOAUTH2 string; a later one is the server's failure report (Dovecot's base64
/// JSON), kept and answered with an empty line.
struct Xoauth2 {
    /// The XOAUTH2 string, for a server without SASL-IR (wiped on drop).
    response: Option<zeroize::Zeroizing<Vec<u8>>>,
    challenge: Option<String>,
}

impl async_imap::Authenticator for &mut Xoauth2 {
    type Response = Vec<u8>;

    fn process(&mut self, challenge: &[u8]) -> Vec<u8> {
        match self.response.take() {
            // async-imap takes the bytes by value; our copy is wiped as it goes.
            Some(response) => response.to_vec(),
            None => {
                self.challenge = Some(String::from_utf8_lossy(challenge).into_owned());
                Vec::new()
            }
        }
    }
}

/// A signed-in IMAP session on async-imap.
pub struct ImapConnection {
    session: async_imap::Session<Stream>,
    endpoint: String,
    capabilities: HashSet<String>,
    io_timeout: Duration,
    /// The mailbox signed in to.
    user: String,
}

impl fmt::Debug for ImapConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImapConnection")
            .field("endpoint", &self.endpoint)
            .field("capabilities", &self.capabilities)
            .finish_non_exhaustive()
    }
}

fn capability_name(capability: &imap_proto::Capability<'_>) -> String {
    match capability {
        imap_proto::Capability::Imap4rev1 => "IMAP4REV1".to_owned(),
        imap_proto::Capability::Auth(mechanism) => {
            format!("AUTH={}", mechanism.to_ascii_uppercase())
        }
        imap_proto::Capability::Atom(atom) => atom.to_ascii_uppercase(),
    }
}

impl ImapConnection {
    /// Connects, starts TLS (implicit, or STARTTLS after the greeting) and signs in to `user`'s mailbox with
    /// `token`.
    pub async fn connect(
        options: &ImapOptions,
        user: &str,
        token: &Secret,
    ) -> Result<Self, ImapError> {
        let endpoint = options.endpoint.address.to_string();
        let address = &options.endpoint.address;
        let tcp = tokio::time::timeout(
            options.connect_timeout,
            TcpStream::connect((address.host.as_str(), address.port)),
        )
        .await
        .map_err(|_| TransportError::bare(TransportKind::Timeout, &endpoint))?
        .map_err(|e| TransportError::new(TransportKind::Connect, &endpoint, e))?;
        // Commands are small and each waits for its answer: Nagle would only add delay.
        let _ = tcp.set_nodelay(true);
        let deadline = options.connect_timeout;
        let timed = |what: &'static str| {
            let endpoint = endpoint.clone();
            move |_| -> ImapError {
                tracing::debug!(what, "IMAP: no answer in time");
                TransportError::bare(TransportKind::Timeout, endpoint).into()
            }
        };
        let mut stream = match options.endpoint.tls {
            TlsMode::Implicit => Stream::Tls(Box::new(start_tls(options, &endpoint, tcp).await?)),
            TlsMode::Starttls => Stream::Plain(tcp),
        };
        let mut client = async_imap::Client::new(stream);
        tokio::time::timeout(deadline, greeting(&mut client, &endpoint))
            .await
            .map_err(timed("greeting"))??;
        if options.endpoint.tls == TlsMode::Starttls {
            let before =
                tokio::time::timeout(deadline, pre_auth_capabilities(&mut client, &endpoint))
                    .await
                    .map_err(timed("CAPABILITY"))??;
            if !before.contains("STARTTLS") {
                return Err(ImapError::Missing {
                    endpoint,
                    capability: "STARTTLS",
                });
            }
            tokio::time::timeout(deadline, client.run_command_and_check_ok("STARTTLS", None))
                .await
                .map_err(timed("STARTTLS"))?
                .map_err(|e| protocol(&endpoint, "STARTTLS", e))?;
            let Stream::Plain(tcp) = client.into_inner() else {
                unreachable!("STARTTLS runs on the plain stream");
            };
            stream = Stream::Tls(Box::new(start_tls(options, &endpoint, tcp).await?));
            // No second greeting after STARTTLS (RFC 3501 §6.2.1).
            client = async_imap::Client::new(stream);
        }
        let before = tokio::time::timeout(deadline, pre_auth_capabilities(&mut client, &endpoint))
            .await
            .map_err(timed("CAPABILITY"))??;
        // Every copy of the token made here is wiped when dropped (async-imap's own buffers are its own).
        let encoded =
            zeroize::Zeroizing::new(xoauth2::encode(user, token.expose()).map_err(|e| {
                ImapError::BadInput {
                    what: "mailbox".into(),
                    value: user.into(),
                    reason: e.to_string(),
                }
            })?);
        let initial = before.contains("SASL-IR");
        let mut exchange = Xoauth2 {
            response: (!initial).then(|| {
                zeroize::Zeroizing::new(
                    base64::Engine::decode(&base64::engine::general_purpose::STANDARD, &*encoded)
                        .unwrap_or_default(),
                )
            }),
            challenge: None,
        };
        let command = zeroize::Zeroizing::new(if initial {
            format!("XOAUTH2 {}", *encoded)
        } else {
            "XOAUTH2".to_owned()
        });
        let signed_in = tokio::time::timeout(
            options.io_timeout,
            client.authenticate(command, &mut exchange),
        )
        .await
        .map_err(timed("AUTHENTICATE"))?;
        let session = match signed_in {
            Ok(session) => session,
            Err((error, _)) => {
                return Err(match error {
                    async_imap::error::Error::No(text) | async_imap::error::Error::Bad(text) => {
                        ImapError::AuthRefused {
                            endpoint,
                            user: user.into(),
                            text: server_text(&text),
                            challenge: exchange.challenge,
                        }
                    }
                    other => protocol(&endpoint, "AUTHENTICATE", other),
                });
            }
        };
        let mut connection = Self {
            session,
            endpoint,
            capabilities: HashSet::new(),
            io_timeout: options.io_timeout,
            user: user.to_owned(),
        };
        // Read again after sign-in: Exchange adds MOVE and its own then.
        let mut capabilities = HashSet::new();
        connection
            .exec("CAPABILITY", None, |response| {
                if let imap_proto::Response::Capabilities(list) = response {
                    capabilities.extend(list.iter().map(capability_name));
                }
            })
            .await?;
        connection.capabilities = capabilities;
        Ok(connection)
    }

    /// `host:port`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Runs `command` and hands each untagged answer to `each`, until the command's tagged answer: `OK`
    /// ends it, `NO`/`BAD` is [`ImapError::Refused`] (`NO [TRYCREATE]` [`ImapError::NoSuchFolder`] of
    /// `folder`), a `* BYE` [`ImapError::SessionEnded`], the end of the stream [`ImapError::ConnectionLost`].
    /// (async-imap's own streams end quietly at the tagged answer or at EOF and drop the status, so a
    /// refusal or a cut connection would look like a short answer.) Every answer has the deadline.
    async fn exec(
        &mut self,
        command: &str,
        folder: Option<&str>,
        mut each: impl FnMut(&imap_proto::Response<'_>),
    ) -> Result<(), ImapError> {
        // Never the arguments of AUTHENTICATE or a literal's bytes in errors: the verb and what follows.
        let shown = command.split("\r\n").next().unwrap_or(command);
        tracing::debug!(endpoint = %self.endpoint, command = shown, "IMAP command");
        let timeout =
            || ImapError::from(TransportError::bare(TransportKind::Timeout, &self.endpoint));
        let sent = tokio::time::timeout(self.io_timeout, self.session.run_command(command))
            .await
            .map_err(|_| timeout())?;
        let id = sent.map_err(|e| protocol(&self.endpoint, shown, e))?;
        let mut bye: Option<String> = None;
        loop {
            let next = tokio::time::timeout(self.io_timeout, self.session.read_response())
                .await
                .map_err(|_| timeout())?;
            let response = match next {
                Ok(Some(response)) => response,
                Ok(None) | Err(_) if bye.is_some() => {
                    return Err(ImapError::SessionEnded {
                        endpoint: self.endpoint.clone(),
                        text: bye.unwrap_or_default(),
                    });
                }
                Ok(None) => {
                    return Err(ImapError::ConnectionLost {
                        endpoint: self.endpoint.clone(),
                        command: shown.to_owned(),
                    });
                }
                Err(e) => {
                    return Err(TransportError::new(TransportKind::Io, &self.endpoint, e).into());
                }
            };
            match response.parsed() {
                imap_proto::Response::Done {
                    tag,
                    status,
                    outcome,
                } if *tag == id => {
                    let text = outcome.information.as_deref().unwrap_or("").to_owned();
                    return match status {
                        imap_proto::Status::Ok => Ok(()),
                        imap_proto::Status::No
                            if matches!(
                                outcome.code,
                                Some(imap_proto::ResponseCode::TryCreate)
                            ) =>
                        {
                            Err(ImapError::NoSuchFolder {
                                endpoint: self.endpoint.clone(),
                                folder: folder.unwrap_or_default().to_owned(),
                            })
                        }
                        // Exchange signs in an identity that cannot open the mailbox and refuses its
                        // mailbox commands so.
                        _ if text.contains("authenticated but not connected") => {
                            Err(ImapError::NotConnected {
                                endpoint: self.endpoint.clone(),
                                user: self.user.clone(),
                                text,
                            })
                        }
                        _ => Err(ImapError::Refused {
                            endpoint: self.endpoint.clone(),
                            command: shown.to_owned(),
                            text,
                        }),
                    };
                }
                imap_proto::Response::Data {
                    status: imap_proto::Status::Bye,
                    outcome,
                } => bye = Some(outcome.information.as_deref().unwrap_or("").to_owned()),
                other => each(other),
            }
        }
    }
}

/// async-imap words NO and BAD as `code: …, info: Some("text")` (or `outcome: Outcome { …, information:
/// Some("text") }`): the text.
fn server_text(formatted: &str) -> String {
    ["information: Some(\"", "info: Some(\""]
        .iter()
        .find_map(|start| formatted.split_once(start))
        .and_then(|(_, rest)| rest.rsplit_once("\")"))
        .map(|(text, _)| text.replace("\\\"", "\""))
        .unwrap_or_else(|| formatted.to_owned())
}

fn protocol(endpoint: &str, command: &str, error: async_imap::error::Error) -> ImapError {
    use async_imap::error::Error;
    // Never the arguments of AUTHENTICATE (they hold the token): only the verb.
    let command = if command.starts_with("AUTHENTICATE") {
        "AUTHENTICATE".to_owned()
    } else {
        command.to_owned()
    };
    match error {
        Error::No(text) | Error::Bad(text) => ImapError::Refused {
            endpoint: endpoint.into(),
            command,
            text: server_text(&text),
        },
        Error::ConnectionLost => ImapError::ConnectionLost {
            endpoint: endpoint.into(),
            command,
        },
        Error::Io(e) => TransportError::new(TransportKind::Io, endpoint, e).into(),
        other => ImapError::Protocol {
            endpoint: endpoint.into(),
            command,
            text: other.to_string(),
        },
    }
}

async fn start_tls(
    options: &ImapOptions,
    endpoint: &str,
    tcp: TcpStream,
) -> Result<TlsStream<TcpStream>, ImapError> {
    let connector = options.trust.connector()?;
    let name = ServerName::try_from(options.endpoint.address.host.clone())
        .map_err(|e| TransportError::new(TransportKind::Tls, endpoint, e))?;
    Ok(
        tokio::time::timeout(options.connect_timeout, connector.connect(name, tcp))
            .await
            .map_err(|_| TransportError::bare(TransportKind::Timeout, endpoint))?
            .map_err(|e| TransportError::new(TransportKind::Tls, endpoint, e))?,
    )
}

async fn greeting(
    client: &mut async_imap::Client<Stream>,
    endpoint: &str,
) -> Result<(), ImapError> {
    let response = client
        .read_response()
        .await
        .map_err(|e| TransportError::new(TransportKind::Io, endpoint, e))?
        .ok_or_else(|| ImapError::ConnectionLost {
            endpoint: endpoint.into(),
            command: "the greeting".into(),
        })?;
    match response.parsed() {
        imap_proto::Response::Data {
            status: imap_proto::Status::Ok | imap_proto::Status::PreAuth,
            ..
        } => Ok(()),
        imap_proto::Response::Data { outcome, .. } => Err(ImapError::SessionEnded {
            endpoint: endpoint.into(),
            text: outcome.information.as_deref().unwrap_or("").to_owned(),
        }),
        other => Err(ImapError::Protocol {
            endpoint: endpoint.into(),
            command: "the greeting".into(),
            text: format!("{other:?}"),
        }),
    }
}

/// CAPABILITY before sign-in. async-imap has no such call and keeps its untagged answers to itself, so the
/// command goes straight onto the stream (with a tag of our own, `M1`: async-imap's are `A0001`…) and its
/// answers are read back.
async fn pre_auth_capabilities(
    client: &mut async_imap::Client<Stream>,
    endpoint: &str,
) -> Result<HashSet<String>, ImapError> {
    use tokio::io::AsyncWriteExt as _;
    let io = |e| ImapError::from(TransportError::new(TransportKind::Io, endpoint, e));
    client
        .get_mut()
        .write_all(b"M1 CAPABILITY\r\n")
        .await
        .map_err(io)?;
    client.get_mut().flush().await.map_err(io)?;
    let mut names = HashSet::new();
    loop {
        let response = client
            .read_response()
            .await
            .map_err(|e| TransportError::new(TransportKind::Io, endpoint, e))?
            .ok_or_else(|| ImapError::ConnectionLost {
                endpoint: endpoint.into(),
                command: "CAPABILITY".into(),
            })?;
        match response.parsed() {
            imap_proto::Response::Capabilities(list) => {
                for capability in list {
                    names.insert(match capability {
                        imap_proto::Capability::Imap4rev1 => "IMAP4REV1".to_owned(),
                        imap_proto::Capability::Auth(m) => {
                            format!("AUTH={}", m.to_ascii_uppercase())
                        }
                        imap_proto::Capability::Atom(a) => a.to_ascii_uppercase(),
                    });
                }
            }
            imap_proto::Response::Done {
                status, outcome, ..
            } => {
                return match status {
                    imap_proto::Status::Ok => Ok(names),
                    _ => Err(ImapError::Refused {
                        endpoint: endpoint.into(),
                        command: "CAPABILITY".into(),
                        text: outcome.information.as_deref().unwrap_or("").to_owned(),
                    }),
                };
            }
            _ => {}
        }
    }
}

fn attribute_name(attribute: &NameAttribute<'_>) -> String {
    match attribute {
        NameAttribute::NoInferiors => "\\Noinferiors".into(),
        NameAttribute::NoSelect => "\\Noselect".into(),
        NameAttribute::Marked => "\\Marked".into(),
        NameAttribute::Unmarked => "\\Unmarked".into(),
        NameAttribute::All => "\\All".into(),
        NameAttribute::Archive => "\\Archive".into(),
        NameAttribute::Drafts => "\\Drafts".into(),
        NameAttribute::Flagged => "\\Flagged".into(),
        NameAttribute::Junk => "\\Junk".into(),
        NameAttribute::Sent => "\\Sent".into(),
        NameAttribute::Trash => "\\Trash".into(),
        NameAttribute::Extension(other) => other.to_string(),
        _ => format!("{attribute:?}"),
    }
}

/// Whether a BODYSTRUCTURE shows an attachment: a part with `Content-Disposition: attachment`, or a part that
/// is neither text nor a multipart below the top level.
fn has_attachment(structure: &imap_proto::BodyStructure<'_>, top: bool) -> bool {
    use imap_proto::BodyStructure;
    let (common, is_text) = match structure {
        BodyStructure::Multipart { bodies, .. } => {
            return bodies.iter().any(|b| has_attachment(b, false));
        }
        BodyStructure::Basic { common, .. } => (common, false),
        BodyStructure::Text { common, .. } => (common, true),
        BodyStructure::Message { common, .. } => (common, false),
    };
    if common
        .disposition
        .as_ref()
        .is_some_and(|d| d.ty.eq_ignore_ascii_case("attachment"))
    {
        return true;
    }
    !top && !is_text
}

/// The largest batch of bodies fetched in one command (declared sizes), and the most messages in one.
pub const BODY_BATCH_BYTES: u64 = 4 << 20;
/// See [`BODY_BATCH_BYTES`].
pub const BODY_BATCH_MESSAGES: usize = 25;

/// INTERNALDATE (`07-Dec-2026 04:20:03 +0000`, the day may have a leading space) as Unix seconds.
fn internal_date(text: &str) -> Option<i64> {
    chrono::DateTime::parse_from_str(text.trim(), "%d-%b-%Y %H:%M:%S %z")
        .ok()
        .map(|d| d.timestamp())
}

impl ImapClient for ImapConnection {
    fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn has_capability(&self, capability: &str) -> bool {
        self.capabilities.contains(&capability.to_ascii_uppercase())
    }

    async fn folders(&mut self, counts: bool) -> Result<Vec<FolderInfo>, ImapError> {
        let mut listed: Vec<(String, Option<String>, Vec<String>)> = Vec::new();
        self.exec("LIST \"\" \"*\"", None, |response| {
            if let imap_proto::Response::MailboxData(imap_proto::MailboxDatum::List(list)) =
                response
            {
                listed.push((
                    list.name.to_string(),
                    list.delimiter.as_deref().map(str::to_owned),
                    list.name_attributes.iter().map(attribute_name).collect(),
                ));
            }
        })
        .await?;
        let mut folders = Vec::new();
        for (wire, delimiter, attributes) in listed {
            let selectable = !attributes.iter().any(|a| {
                a.eq_ignore_ascii_case("\\Noselect") || a.eq_ignore_ascii_case("\\NonExistent")
            });
            let (mut messages, mut unseen) = (None, None);
            if counts && selectable {
                let command = format!("STATUS {} (MESSAGES UNSEEN)", quote(&wire));
                let outcome = self
                    .exec(&command, None, |response| {
                        if let imap_proto::Response::MailboxData(
                            imap_proto::MailboxDatum::Status { status, .. },
                        ) = response
                        {
                            for attribute in status {
                                match attribute {
                                    imap_proto::StatusAttribute::Messages(n) => messages = Some(*n),
                                    imap_proto::StatusAttribute::Unseen(n) => unseen = Some(*n),
                                    _ => {}
                                }
                            }
                        }
                    })
                    .await;
                // A folder that cannot be counted is listed without counts; a lost session is not.
                if let Err(error) = outcome
                    && error.is_session_lost()
                {
                    return Err(error);
                }
            }
            folders.push(FolderInfo {
                name: mutf7::decode(&wire).unwrap_or_else(|| wire.clone()),
                delimiter,
                attributes,
                messages,
                unseen,
            });
        }
        Ok(folders)
    }

    async fn select(&mut self, folder: &str, read_only: bool) -> Result<SelectedFolder, ImapError> {
        let verb = if read_only { "EXAMINE" } else { "SELECT" };
        let command = format!("{verb} {}", folder_argument(folder)?);
        let (mut uid_validity, mut exists) = (0, 0);
        let outcome = self
            .exec(&command, Some(folder), |response| match response {
                imap_proto::Response::MailboxData(imap_proto::MailboxDatum::Exists(n)) => {
                    exists = *n
                }
                imap_proto::Response::Data { outcome, .. } => {
                    if let Some(imap_proto::ResponseCode::UidValidity(v)) = outcome.code {
                        uid_validity = v;
                    }
                }
                _ => {}
            })
            .await;
        match outcome {
            Ok(()) => Ok(SelectedFolder {
                uid_validity,
                exists,
            }),
            // SELECT of a folder that is not there is a plain NO.
            Err(ImapError::Refused { .. }) => Err(ImapError::NoSuchFolder {
                endpoint: self.endpoint.clone(),
                folder: folder.into(),
            }),
            Err(other) => Err(other),
        }
    }

    async fn search(&mut self, query: &SearchQuery) -> Result<Vec<u32>, ImapError> {
        let command = format!("UID SEARCH {}", query.to_arguments()?);
        let mut uids = Vec::new();
        self.exec(&command, None, |response| {
            if let imap_proto::Response::MailboxData(imap_proto::MailboxDatum::Search(found)) =
                response
            {
                uids.extend_from_slice(found);
            }
        })
        .await?;
        uids.sort_unstable();
        uids.dedup();
        Ok(uids)
    }

    async fn metadata(
        &mut self,
        uids: &[u32],
        structure: bool,
        envelope: bool,
    ) -> Result<Vec<MessageMeta>, ImapError> {
        if uids.is_empty() {
            return Ok(Vec::new());
        }
        let mut query = String::from("(UID RFC822.SIZE INTERNALDATE");
        if structure {
            query.push_str(" BODYSTRUCTURE");
        }
        if envelope {
            query.push_str(" ENVELOPE");
        }
        query.push(')');
        let command = format!("UID FETCH {} {query}", uid_set(uids));
        let mut found = Vec::new();
        self.exec(&command, None, |response| {
            let imap_proto::Response::Fetch(_, attributes) = response else {
                return;
            };
            let mut meta = MessageMeta {
                uid: 0,
                size: 0,
                internal_date: None,
                has_attachment: None,
                message_id: None,
            };
            for attribute in attributes {
                match attribute {
                    imap_proto::AttributeValue::Uid(uid) => meta.uid = *uid,
                    imap_proto::AttributeValue::Rfc822Size(size) => meta.size = u64::from(*size),
                    imap_proto::AttributeValue::InternalDate(date) => {
                        meta.internal_date = internal_date(date);
                    }
                    imap_proto::AttributeValue::BodyStructure(body) => {
                        meta.has_attachment = Some(has_attachment(body, true));
                    }
                    imap_proto::AttributeValue::Envelope(envelope) => {
                        meta.message_id = envelope
                            .message_id
                            .as_ref()
                            .map(|id| String::from_utf8_lossy(id).into_owned());
                    }
                    _ => {}
                }
            }
            // A FETCH without UID is an unsolicited flag change, not an answer.
            if meta.uid != 0 {
                found.push(meta);
            }
        })
        .await?;
        Ok(found)
    }

    async fn bodies(&mut self, uids: &[u32]) -> Result<Vec<(u32, Vec<u8>)>, ImapError> {
        self.sections(uids, "BODY.PEEK[]").await
    }

    async fn header(&mut self, uid: u32) -> Result<Option<Vec<u8>>, ImapError> {
        let found = self.sections(&[uid], "BODY.PEEK[HEADER]").await?;
        Ok(found
            .into_iter()
            .find(|(u, _)| *u == uid)
            .map(|(_, bytes)| bytes))
    }

    async fn add_flag(&mut self, uids: &[u32], flag: &str) -> Result<(), ImapError> {
        if uids.is_empty() {
            return Ok(());
        }
        let command = format!("UID STORE {} +FLAGS.SILENT ({flag})", uid_set(uids));
        self.exec(&command, None, |_| {}).await
    }

    async fn move_to(&mut self, uids: &[u32], folder: &str) -> Result<(), ImapError> {
        if uids.is_empty() {
            return Ok(());
        }
        let command = format!("UID MOVE {} {}", uid_set(uids), folder_argument(folder)?);
        self.exec(&command, Some(folder), |_| {}).await
    }

    async fn copy_to(&mut self, uids: &[u32], folder: &str) -> Result<(), ImapError> {
        if uids.is_empty() {
            return Ok(());
        }
        let command = format!("UID COPY {} {}", uid_set(uids), folder_argument(folder)?);
        self.exec(&command, Some(folder), |_| {}).await
    }

    async fn expunge(&mut self, uids: &[u32]) -> Result<(), ImapError> {
        if uids.is_empty() {
            return Ok(());
        }
        if !self.has_capability("UIDPLUS") {
            // EXPUNGE would also remove what others marked \Deleted: refuse rather than guess.
            return Err(ImapError::Missing {
                endpoint: self.endpoint.clone(),
                capability: "UIDPLUS",
            });
        }
        let command = format!("UID EXPUNGE {}", uid_set(uids));
        self.exec(&command, None, |_| {}).await
    }

    async fn logout(mut self) -> Result<(), ImapError> {
        match self.exec("LOGOUT", None, |_| {}).await {
            // The BYE that LOGOUT asks for, and a server that closes before its OK, are both a logout.
            Ok(()) | Err(ImapError::SessionEnded { .. } | ImapError::ConnectionLost { .. }) => {
                Ok(())
            }
            Err(other) => Err(other),
        }
    }
}

impl ImapConnection {
    /// Waits in IDLE (RFC 2177) on the folder selected last until the server reports a change (a new
    /// message, an expunge, a flag) or `timeout` passes, then ends IDLE and logs out; `true` when the server
    /// reported a change. A server without IDLE gets a plain wait of `timeout`. For `read --watch`: the
    /// next pass starts as soon as mail arrives instead of at the next poll.
    pub async fn idle_until_change(self, timeout: Duration) -> Result<bool, ImapError> {
        if !self.capabilities.contains("IDLE") {
            tokio::time::sleep(timeout).await;
            let _ = ImapClient::logout(self).await;
            return Ok(false);
        }
        let Self {
            session,
            endpoint,
            io_timeout,
            ..
        } = self;
        let timed_out = || ImapError::from(TransportError::bare(TransportKind::Timeout, &endpoint));
        let mut idle = session.idle();
        tokio::time::timeout(io_timeout, idle.init())
            .await
            .map_err(|_| timed_out())?
            .map_err(|e| protocol(&endpoint, "IDLE", e))?;
        let outcome = {
            let (wait, _stop) = idle.wait_with_timeout(timeout);
            wait.await.map_err(|e| protocol(&endpoint, "IDLE", e))?
        };
        let changed = matches!(
            outcome,
            async_imap::extensions::idle::IdleResponse::NewData(_)
        );
        let mut session = tokio::time::timeout(io_timeout, idle.done())
            .await
            .map_err(|_| timed_out())?
            .map_err(|e| protocol(&endpoint, "DONE", e))?;
        let _ = tokio::time::timeout(io_timeout, session.logout()).await;
        Ok(changed)
    }
}

impl ImapConnection {
    /// One body section of each of `uids`, by UID (a message expunged meanwhile is absent).
    async fn sections(
        &mut self,
        uids: &[u32],
        section: &str,
    ) -> Result<Vec<(u32, Vec<u8>)>, ImapError> {
        if uids.is_empty() {
            return Ok(Vec::new());
        }
        let command = format!("UID FETCH {} (UID {section})", uid_set(uids));
        let mut found = Vec::new();
        self.exec(&command, None, |response| {
            let imap_proto::Response::Fetch(_, attributes) = response else {
                return;
            };
            let mut uid = None;
            let mut data = None;
            for attribute in attributes {
                match attribute {
                    imap_proto::AttributeValue::Uid(u) => uid = Some(*u),
                    imap_proto::AttributeValue::BodySection { data: Some(d), .. } => {
                        data = Some(d.to_vec());
                    }
                    _ => {}
                }
            }
            if let (Some(uid), Some(data)) = (uid, data) {
                found.push((uid, data));
            }
        })
        .await?;
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_sasl_ir_the_string_answers_the_first_challenge_and_a_failure_is_kept() {
        use async_imap::Authenticator as _;
        let mut exchange = Xoauth2 {
            response: Some(zeroize::Zeroizing::new(
                b"user=a\x01auth=Bearer t\x01\x01".to_vec(),
            )),
            challenge: None,
        };
        let mut authenticator = &mut exchange;
        // The bare `+` after AUTHENTICATE XOAUTH2: the XOAUTH2 string, once.
        assert_eq!(
            authenticator.process(b""),
            b"user=a\x01auth=Bearer t\x01\x01"
        );
        // A failure challenge (Dovecot's JSON): answered with an empty line and kept for the error.
        assert_eq!(authenticator.process(b"{\"status\":\"401\"}"), b"");
        assert!(exchange.response.is_none());
        assert_eq!(exchange.challenge.as_deref(), Some("{\"status\":\"401\"}"));
    }

    #[test]
    fn uid_sets_are_ranges() {
        assert_eq!(uid_set(&[5, 1, 2, 3, 7, 9, 10, 11, 3]), "1:3,5,7,9:11");
        assert_eq!(uid_set(&[42]), "42");
        assert_eq!(uid_set(&[]), "");
    }

    #[test]
    fn search_arguments_quote_ascii_and_send_the_rest_as_literals() {
        let query = SearchQuery {
            unseen: true,
            since: Some(1_796_601_600),
            from: Some("rachel \"r\" kim".into()),
            larger_than: Some(1024),
            ..SearchQuery::default()
        };
        assert_eq!(
            query.to_arguments().unwrap(),
            "UNSEEN SINCE 07-Dec-2026 FROM \"rachel \\\"r\\\" kim\" LARGER 1024"
        );
        let utf8 = SearchQuery {
            subject: Some("Grüße".into()),
            ..SearchQuery::default()
        };
        assert_eq!(
            utf8.to_arguments().unwrap(),
            "CHARSET UTF-8 SUBJECT {7+}\r\nGrüße"
        );
        assert_eq!(SearchQuery::default().to_arguments().unwrap(), "ALL");
        let injected = SearchQuery {
            subject: Some("x\r\nA1 DELETE INBOX".into()),
            ..SearchQuery::default()
        };
        let err = injected.to_arguments().unwrap_err();
        assert!(matches!(err, ImapError::BadInput { .. }), "{err:?}");
        assert_eq!(err.class(), ErrorClass::Input);
    }

    #[test]
    fn folder_names_go_out_as_modified_utf7_quoted() {
        assert_eq!(
            folder_argument("Éléments envoyés").unwrap(),
            "\"&AMk-l&AOk-ments envoy&AOk-s\""
        );
        assert_eq!(folder_argument("a\"b").unwrap(), "\"a\\\"b\"");
        assert!(folder_argument("Inbox\r\nA1 LOGOUT").is_err());
    }

    #[test]
    fn server_texts_are_taken_out_of_async_imaps_wording() {
        assert_eq!(
            server_text("code: None, info: Some(\"AUTHENTICATE failed.\")"),
            "AUTHENTICATE failed."
        );
        assert_eq!(server_text("plain"), "plain");
    }
}
