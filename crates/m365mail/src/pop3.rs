//! POP3 with SASL XOAUTH2: the one tokio driver around the sans-I/O client core
//! ([`m365mail_proto::pop3::client`]).
//!
//! [`Pop3Connection::connect`] opens implicit TLS (995, Exchange Online's only POP3 port) or a plain
//! connection upgraded with `STLS` ([`TlsMode::Starttls`]; Dovecot's 110), always verified with the shared
//! [`TlsTrust`]. Every read and write has a timeout; every reply is bounded by the core's [`Limits`]; a
//! message body streams to a writer in chunks.
//!
//! ```no_run
//! # async fn example(token: m365mail::Secret) -> Result<(), m365mail::pop3::Pop3Error> {
//! use m365mail::endpoint::{HostPort, MailEndpoint, TlsMode};
//! use m365mail::pop3::{Pop3Connection, Pop3Options};
//! use m365mail::tls::TlsTrust;
//!
//! let endpoint = MailEndpoint {
//!     address: HostPort::parse("pop", "outlook.office365.com:995").unwrap(),
//!     tls: TlsMode::Implicit,
//! };
//! let mut pop = Pop3Connection::connect(&Pop3Options::new(endpoint, TlsTrust::system())).await?;
//! pop.authenticate("adele@contoso.com", &token).await?;
//! for (number, uid) in pop.unique_ids().await? {
//!     let mut eml = Vec::new();
//!     pop.retrieve(number, &mut eml).await?;
//!     println!("{uid}: {} bytes", eml.len());
//! }
//! pop.quit().await?;
//! # Ok(()) }
//! ```

use std::time::Duration;

use m365mail_proto::pop3::client::{Command, Event, Limits, Pop3Client, Pop3ClientError, Verb};
use m365mail_proto::xoauth2;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::endpoint::{MailEndpoint, TlsMode};
use crate::error::{Classified, ErrorClass};
use crate::secret::Secret;
use crate::tls::{TlsError, TlsTrust};
use crate::transport::{TransportError, TransportKind};

/// How to reach a POP3 server.
#[derive(Debug, Clone)]
pub struct Pop3Options {
    /// Address and TLS mode.
    pub endpoint: MailEndpoint,
    /// Whom to trust.
    pub trust: TlsTrust,
    /// Bound on connecting and the TLS handshake.
    pub connect_timeout: Duration,
    /// Bound on each read and write once connected.
    pub io_timeout: Duration,
    /// Bounds on what the server may send.
    pub limits: Limits,
}

impl Pop3Options {
    /// Defaults: 30 s to connect, 60 s per read or write, the core's default limits.
    pub fn new(endpoint: MailEndpoint, trust: TlsTrust) -> Self {
        Self {
            endpoint,
            trust,
            connect_timeout: Duration::from_secs(30),
            io_timeout: Duration::from_secs(60),
            limits: Limits::default(),
        }
    }
}

/// A POP3 failure: below the protocol, in it, or the server's refusal.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Pop3Error {
    /// Connect, TLS, timeout or I/O failure.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The trust setup could not be built.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The server broke the protocol (or sent more than the limits allow).
    #[error("{endpoint}: POP3 protocol error: {source}")]
    Protocol {
        /// `host:port`.
        endpoint: String,
        /// What the core saw.
        #[source]
        source: Pop3ClientError,
    },
    /// The server refused the XOAUTH2 sign-in.
    #[error("{endpoint}: the POP3 server refused the sign-in for {user}: -ERR {text}")]
    AuthRefused {
        /// `host:port`.
        endpoint: String,
        /// The mailbox sent as `user=`.
        user: String,
        /// The `-ERR` text.
        text: String,
        /// The decoded error challenge, when the server sent one (Dovecot, Gmail; Exchange does not).
        challenge: Option<String>,
    },
    /// The server answered a command with `-ERR`.
    #[error("{endpoint}: the POP3 server refused {verb}: -ERR {text}")]
    Refused {
        /// `host:port`.
        endpoint: String,
        /// The command.
        verb: Verb,
        /// The `-ERR` text.
        text: String,
    },
    /// STLS was asked for but the server does not offer it.
    #[error("{endpoint}: the POP3 server does not offer STLS")]
    NoStls {
        /// `host:port`.
        endpoint: String,
    },
    /// The server closed the connection in the middle of an answer.
    #[error("{endpoint}: the POP3 server closed the connection during {verb}")]
    Closed {
        /// `host:port`.
        endpoint: String,
        /// The command that was waiting.
        verb: &'static str,
    },
    /// The mailbox name cannot go into an XOAUTH2 string.
    #[error("mailbox {user:?} cannot be used for XOAUTH2: {reason}")]
    BadUser {
        /// The name, as given.
        user: String,
        /// Why.
        reason: String,
    },
}

impl Classified for Pop3Error {
    fn class(&self) -> ErrorClass {
        match self {
            Self::Transport(e) => e.class(),
            Self::Tls(e) => e.class(),
            Self::Protocol { .. } | Self::Closed { .. } => ErrorClass::Transient,
            Self::AuthRefused { .. } => ErrorClass::Admin,
            Self::Refused { .. } => ErrorClass::FlowState,
            Self::NoStls { .. } => ErrorClass::Config,
            Self::BadUser { .. } => ErrorClass::Input,
        }
    }

    fn cause(&self) -> String {
        match self {
            Self::Transport(e) => e.cause(),
            Self::Tls(e) => e.cause(),
            Self::Protocol { endpoint, source } => {
                format!("{endpoint} sent something POP3 does not allow here: {source}")
            }
            Self::AuthRefused { user, .. } => format!(
                "the token was not accepted for mailbox {user}; Exchange gives the same line for every \
                 reason, so the cause is one of the checks in the remedy"
            ),
            Self::Refused { verb, text, .. } => format!("the server refused {verb}: {text}"),
            Self::NoStls { endpoint } => format!("{endpoint} does not offer STLS"),
            Self::Closed { endpoint, verb } => {
                format!("{endpoint} closed the connection while answering {verb}")
            }
            Self::BadUser { user, reason } => format!("mailbox {user:?}: {reason}"),
        }
    }

    fn remedy(&self) -> String {
        match self {
            Self::Transport(e) => e.remedy(),
            Self::Tls(e) => e.remedy(),
            Self::Protocol { .. } | Self::Closed { .. } => {
                "retry; if it repeats, check that the address is a POP3 port (995 with implicit TLS, \
                 110 with --pop-tls starttls) and run with --log debug"
                    .into()
            }
            Self::AuthRefused { .. } => "check, in order: the token's audience and scope or role \
                 (`m365mail token get --target pop --show-token | m365mail token inspect`: delegated needs \
                 POP.AccessAsUser.All, app-only the POP.AccessAsApp role); for app-only, the app's service principal registered in \
                 Exchange (New-ServicePrincipal) and its FullAccess on the mailbox \
                 (Add-MailboxPermission); for a shared mailbox, the user's FullAccess on it; and POP \
                 switched on for the mailbox (Set-CASMailbox -PopEnabled $true)"
                .into(),
            Self::Refused { verb: Verb::Quit, .. } => {
                "some deletions may not have been committed; the next read performs the deletes it still \
                 owes"
                    .into()
            }
            Self::Refused {
                verb: Verb::Retr | Verb::Top | Verb::Dele,
                ..
            } => "the server would not give or delete this message (its -ERR text says why); `read` \
                  records such a message as refused and moves on; if it repeats, look at the message in \
                  Outlook on the web"
                .into(),
            Self::Refused { .. } => {
                "run again; another session may hold the maildrop (POP3 allows one at a time)".into()
            }
            Self::NoStls { .. } => {
                "use implicit TLS (pop_tls = \"implicit\", port 995), or a server that offers STLS".into()
            }
            Self::BadUser { .. } => {
                "give the mailbox as a plain address (--mailbox or the profile's mailbox)".into()
            }
        }
    }
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    /// Between the plain stream and the TLS one (a failed handshake leaves it so; the session is over).
    Gone,
}

fn gone() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::NotConnected, "the TLS handshake failed")
}

/// A signed-in (or about to be) POP3 session.
pub struct Pop3Connection {
    stream: Stream,
    core: Pop3Client,
    endpoint: String,
    io_timeout: Duration,
    greeting: String,
    buffer: Vec<u8>,
}

impl std::fmt::Debug for Pop3Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pop3Connection")
            .field("endpoint", &self.endpoint)
            .field("core", &self.core)
            .finish_non_exhaustive()
    }
}

impl Pop3Connection {
    /// Connects, starts TLS (implicit, or STLS after the greeting) and reads the greeting.
    pub async fn connect(options: &Pop3Options) -> Result<Self, Pop3Error> {
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
        let mut connection = Self {
            stream: Stream::Plain(tcp),
            core: Pop3Client::new(options.limits),
            endpoint,
            io_timeout: options.io_timeout,
            greeting: String::new(),
            buffer: vec![0; 64 * 1024],
        };
        if options.endpoint.tls == TlsMode::Implicit {
            connection.start_tls(options).await?;
        }
        match connection.next_event("greeting").await? {
            Event::Greeting { text } => connection.greeting = text,
            Event::Refused { text, verb, .. } => return Err(connection.refused(verb, text)),
            other => return Err(connection.unexpected(Verb::Greeting, &other)),
        }
        if options.endpoint.tls == TlsMode::Starttls {
            if !connection
                .capabilities()
                .await?
                .iter()
                .any(|c| c.eq_ignore_ascii_case("STLS"))
            {
                return Err(Pop3Error::NoStls {
                    endpoint: connection.endpoint,
                });
            }
            connection.simple(Command::Stls).await?;
            connection.start_tls(options).await?;
        }
        Ok(connection)
    }

    async fn start_tls(&mut self, options: &Pop3Options) -> Result<(), Pop3Error> {
        let connector = options.trust.connector()?;
        let name = ServerName::try_from(options.endpoint.address.host.clone())
            .map_err(|e| TransportError::new(TransportKind::Tls, &self.endpoint, e))?;
        let Stream::Plain(tcp) = std::mem::replace(&mut self.stream, Stream::Gone) else {
            unreachable!("TLS starts once, on the plain stream");
        };
        let tls = tokio::time::timeout(options.connect_timeout, connector.connect(name, tcp))
            .await
            .map_err(|_| TransportError::bare(TransportKind::Timeout, &self.endpoint))?
            .map_err(|e| TransportError::new(TransportKind::Tls, &self.endpoint, e))?;
        self.stream = Stream::Tls(Box::new(tls));
        Ok(())
    }

    /// The greeting's text (after `+OK`).
    pub fn greeting(&self) -> &str {
        &self.greeting
    }

    /// `host:port`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// CAPA's lines.
    pub async fn capabilities(&mut self) -> Result<Vec<String>, Pop3Error> {
        self.send(Command::Capa).await?;
        match self.next_event("CAPA").await? {
            Event::Capabilities(lines) => Ok(lines),
            Event::Refused { verb, text, .. } => Err(self.refused(verb, text)),
            other => Err(self.unexpected(Verb::Capa, &other)),
        }
    }

    /// Signs in to `user`'s maildrop with `AUTH XOAUTH2` (two-line form, as Exchange requires).
    pub async fn authenticate(&mut self, user: &str, token: &Secret) -> Result<(), Pop3Error> {
        let response = xoauth2::encode(user, token.expose()).map_err(|e| Pop3Error::BadUser {
            user: user.to_string(),
            reason: e.to_string(),
        })?;
        self.send(Command::AuthXoauth2 { response }).await?;
        match self.next_event("AUTH").await? {
            Event::Authenticated { .. } => Ok(()),
            Event::Refused {
                text, challenge, ..
            } => Err(Pop3Error::AuthRefused {
                endpoint: self.endpoint.clone(),
                user: user.to_string(),
                text,
                challenge,
            }),
            other => Err(self.unexpected(Verb::Auth, &other)),
        }
    }

    /// STAT: message count and total size.
    pub async fn stat(&mut self) -> Result<(u32, u64), Pop3Error> {
        self.send(Command::Stat).await?;
        match self.next_event("STAT").await? {
            Event::Stat { count, size } => Ok((count, size)),
            Event::Refused { verb, text, .. } => Err(self.refused(verb, text)),
            other => Err(self.unexpected(Verb::Stat, &other)),
        }
    }

    /// UIDL: every message's number and unique id.
    pub async fn unique_ids(&mut self) -> Result<Vec<(u32, String)>, Pop3Error> {
        self.send(Command::Uidl).await?;
        match self.next_event("UIDL").await? {
            Event::UniqueIds(ids) => Ok(ids),
            Event::Refused { verb, text, .. } => Err(self.refused(verb, text)),
            other => Err(self.unexpected(Verb::Uidl, &other)),
        }
    }

    /// LIST: every message's number and size.
    pub async fn sizes(&mut self) -> Result<Vec<(u32, u64)>, Pop3Error> {
        self.send(Command::List).await?;
        match self.next_event("LIST").await? {
            Event::Sizes(sizes) => Ok(sizes),
            Event::Refused { verb, text, .. } => Err(self.refused(verb, text)),
            other => Err(self.unexpected(Verb::List, &other)),
        }
    }

    /// TOP: the header and the first `lines` body lines of message `number`.
    pub async fn top(&mut self, number: u32, lines: u32) -> Result<Vec<u8>, Pop3Error> {
        let mut out = Vec::new();
        self.body(Command::Top(number, lines), &mut out).await?;
        Ok(out)
    }

    /// RETR: message `number`, streamed into `sink` chunk by chunk (dot-unstuffed). Returns its size.
    pub async fn retrieve(
        &mut self,
        number: u32,
        sink: &mut (impl std::io::Write + Send),
    ) -> Result<u64, Pop3Error> {
        self.body(Command::Retr(number), sink).await
    }

    async fn body(
        &mut self,
        command: Command,
        sink: &mut (impl std::io::Write + Send),
    ) -> Result<u64, Pop3Error> {
        let verb = command.verb();
        let name = if verb == Verb::Top { "TOP" } else { "RETR" };
        self.send(command).await?;
        match self.next_event(name).await? {
            Event::MessageStart { .. } => {}
            Event::Refused { verb, text, .. } => return Err(self.refused(verb, text)),
            other => return Err(self.unexpected(verb, &other)),
        }
        let mut size = 0u64;
        loop {
            match self.next_event(name).await? {
                Event::MessageData(data) => {
                    size += data.len() as u64;
                    sink.write_all(&data).map_err(|e| {
                        TransportError::new(TransportKind::Io, "the local output", e)
                    })?;
                }
                Event::MessageEnd => return Ok(size),
                other => return Err(self.unexpected(verb, &other)),
            }
        }
    }

    /// DELE: marks message `number` for deletion at QUIT.
    pub async fn delete(&mut self, number: u32) -> Result<(), Pop3Error> {
        self.simple(Command::Dele(number)).await
    }

    /// RSET: unmarks every deletion.
    pub async fn reset(&mut self) -> Result<(), Pop3Error> {
        self.simple(Command::Rset).await
    }

    /// NOOP.
    pub async fn noop(&mut self) -> Result<(), Pop3Error> {
        self.simple(Command::Noop).await
    }

    /// QUIT: commits the deletions and closes.
    pub async fn quit(mut self) -> Result<(), Pop3Error> {
        self.simple(Command::Quit).await?;
        // The TLS close_notify is a courtesy: a server that stops reading must not hold us.
        let io_timeout = self.io_timeout;
        let _ = tokio::time::timeout(io_timeout, self.shutdown()).await;
        Ok(())
    }

    async fn shutdown(&mut self) -> std::io::Result<()> {
        match &mut self.stream {
            Stream::Plain(s) => s.shutdown().await,
            Stream::Tls(s) => s.shutdown().await,
            Stream::Gone => Ok(()),
        }
    }

    async fn simple(&mut self, command: Command) -> Result<(), Pop3Error> {
        let verb = command.verb();
        self.send(command).await?;
        match self.next_event("command").await? {
            Event::Done { .. } => Ok(()),
            Event::Refused { verb, text, .. } => Err(self.refused(verb, text)),
            other => Err(self.unexpected(verb, &other)),
        }
    }

    async fn send(&mut self, command: Command) -> Result<(), Pop3Error> {
        self.core.command(command).map_err(|e| self.protocol(e))?;
        self.flush().await
    }

    async fn flush(&mut self) -> Result<(), Pop3Error> {
        let out = self.core.take_output();
        if out.is_empty() {
            return Ok(());
        }
        let write = async {
            match &mut self.stream {
                Stream::Plain(s) => {
                    s.write_all(&out).await?;
                    s.flush().await
                }
                Stream::Tls(s) => {
                    s.write_all(&out).await?;
                    s.flush().await
                }
                Stream::Gone => Err(gone()),
            }
        };
        tokio::time::timeout(self.io_timeout, write)
            .await
            .map_err(|_| TransportError::bare(TransportKind::Timeout, &self.endpoint))?
            .map_err(|e| TransportError::new(TransportKind::Io, &self.endpoint, e).into())
    }

    async fn next_event(&mut self, waiting: &'static str) -> Result<Event, Pop3Error> {
        loop {
            if let Some(event) = self.core.next_event().map_err(|e| self.protocol(e))? {
                return Ok(event);
            }
            // Answering a reply may have queued bytes of the core's own (the XOAUTH2 response after "+").
            self.flush().await?;
            let read = async {
                match &mut self.stream {
                    Stream::Plain(s) => s.read(&mut self.buffer).await,
                    Stream::Tls(s) => s.read(&mut self.buffer).await,
                    Stream::Gone => Err(gone()),
                }
            };
            let n = tokio::time::timeout(self.io_timeout, read)
                .await
                .map_err(|_| TransportError::bare(TransportKind::Timeout, &self.endpoint))?
                .map_err(|e| {
                    let kind = if crate::transport::find_rustls_error(&e).is_some() {
                        TransportKind::Tls
                    } else {
                        TransportKind::Io
                    };
                    TransportError::new(kind, &self.endpoint, e)
                })?;
            if n == 0 {
                return Err(Pop3Error::Closed {
                    endpoint: self.endpoint.clone(),
                    verb: waiting,
                });
            }
            self.core.receive(&self.buffer[..n]);
        }
    }

    fn protocol(&self, source: Pop3ClientError) -> Pop3Error {
        Pop3Error::Protocol {
            endpoint: self.endpoint.clone(),
            source,
        }
    }

    fn refused(&self, verb: Verb, text: String) -> Pop3Error {
        Pop3Error::Refused {
            endpoint: self.endpoint.clone(),
            verb,
            text,
        }
    }

    fn unexpected(&self, verb: Verb, event: &Event) -> Pop3Error {
        // The core matches answers to commands, so this means a bug here, reported rather than guessed past.
        Pop3Error::Protocol {
            endpoint: self.endpoint.clone(),
            source: Pop3ClientError::Malformed {
                verb,
                what: "an answer of another kind",
                line: format!("{event:?}").chars().take(200).collect(),
            },
        }
    }
}
