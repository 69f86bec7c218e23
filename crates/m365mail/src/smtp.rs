//! SMTP submission with SASL XOAUTH2, on lettre (behind our own [`Submit`] trait, so the Graph sender of a
//! later issue can take its place).
//!
//! [`SmtpSender::new`] prepares one connection (opened by the first message, reused across a batch, replaced
//! when broken, refused or idle too long) to a submission server: STARTTLS on 587 by default
//! ([`TlsMode::Starttls`], Exchange Online's only submission mode) or implicit TLS ([`TlsMode::Implicit`],
//! 465), always verified with the shared [`TlsTrust`]. The bearer token is fixed for the sender's life, so a
//! caller whose token nears expiry builds a new sender with the fresh token. Must be used inside a tokio
//! runtime.
//!
//! Every negative reply becomes an [`SmtpError::Refused`] whose [`Rejection`] names Exchange's cases —
//! 535 5.7.3, 535 5.7.139, 550 5.7.30, 554 5.2.252 SendAsDenied, 501 5.5.4, size, throttling — each with a
//! cause and a remedy.
//!
//! ```no_run
//! # async fn example(token: m365mail::Secret, message: m365mail::mime::BuiltMessage)
//! #     -> Result<(), m365mail::smtp::SmtpError> {
//! use m365mail::endpoint::{HostPort, MailEndpoint, TlsMode};
//! use m365mail::smtp::{SmtpOptions, SmtpSender, Submit as _};
//! use m365mail::tls::TlsTrust;
//!
//! let endpoint = MailEndpoint {
//!     address: HostPort::parse("smtp", "smtp.office365.com:587").unwrap(),
//!     tls: TlsMode::Starttls,
//! };
//! let sender = SmtpSender::new(&SmtpOptions::new(endpoint, TlsTrust::system()), "adele@contoso.com", &token)?;
//! let submitted = sender.submit(&message).await?;
//! println!("{}: {}", submitted.message_id, submitted.reply);
//! # Ok(()) }
//! ```

use std::future::Future;
use std::time::Duration;

use lettre::address::{Address, Envelope};
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, AsyncTokioStream};
use lettre::transport::smtp::extension::ClientId;
use m365mail_proto::xoauth2;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::endpoint::{MailEndpoint, TlsMode};
use crate::error::{Classified, ErrorClass};
use crate::mime::BuiltMessage;
use crate::secret::Secret;
use crate::tls::{TlsError, TlsTrust};
use crate::transport::{TransportError, TransportKind};

/// How to reach a submission server.
#[derive(Debug, Clone)]
pub struct SmtpOptions {
    /// Address and TLS mode.
    pub endpoint: MailEndpoint,
    /// Whom to trust.
    pub trust: TlsTrust,
    /// Bound on each network step (connect, each command, the data).
    pub timeout: Duration,
    /// How long an idle connection is kept for the next message.
    pub idle_timeout: Duration,
    /// The EHLO name; `None` sends the host's name.
    pub hello_name: Option<String>,
}

impl SmtpOptions {
    /// Defaults: 60 s per step, idle connections kept 60 s, the host's name in EHLO.
    pub fn new(endpoint: MailEndpoint, trust: TlsTrust) -> Self {
        Self {
            endpoint,
            trust,
            timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(60),
            hello_name: None,
        }
    }
}

/// What a negative SMTP reply means, by its code and enhanced status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Rejection {
    /// `535 5.7.3`: the token was not accepted (audience, scope or role, service principal, mailbox rights).
    AuthFailed,
    /// `535 5.7.139`: SMTP AUTH is switched off for the tenant or the mailbox (it blocks OAuth too).
    SmtpAuthDisabled,
    /// `550 5.7.30`: Basic authentication refused for client submission.
    BasicAuthRefused,
    /// `554 5.2.252 SendAsDenied` (or `550 5.7.60`): the identity may not send as the From address.
    SendAsDenied,
    /// `501 5.5.4` (and other 501s): a command argument the server refuses, such as the EHLO name.
    InvalidArgument,
    /// `552`, or `550 5.2.12` / `5.3.4`: the message is larger than the server or the mailbox allows.
    TooLarge,
    /// A 4xx reply, or a submission quota exceeded: throttling or a temporary failure; retry later.
    Throttled,
    /// `5.1.x`: a recipient or sender address the server will not take.
    BadAddress,
    /// Any other permanent refusal.
    Other,
}

impl Rejection {
    /// The case of reply `code` with enhanced status `enhanced` (e.g. `5.7.3`) and text `text`.
    pub fn of(code: u16, enhanced: Option<&str>, text: &str) -> Self {
        match (code, enhanced) {
            (400..=499, _) => Self::Throttled,
            (535, Some("5.7.139")) => Self::SmtpAuthDisabled,
            (535, _) => Self::AuthFailed,
            (550, Some("5.7.30")) => Self::BasicAuthRefused,
            (_, Some("5.2.252" | "5.7.60")) => Self::SendAsDenied,
            _ if text.contains("QuotaExceeded") => Self::Throttled,
            _ if text.contains("SendAsDenied") => Self::SendAsDenied,
            (552, _) | (_, Some("5.2.12" | "5.3.4")) => Self::TooLarge,
            (501, _) => Self::InvalidArgument,
            (_, Some(e)) if e.starts_with("5.1.") => Self::BadAddress,
            _ => Self::Other,
        }
    }
}

/// An SMTP failure: the setup, below the protocol, or the server's refusal.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SmtpError {
    /// Connect, TLS, timeout or I/O failure.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The trust setup could not be built.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The server answered with a negative reply.
    #[error("{endpoint}: the SMTP server refused the message: {code} {text}")]
    Refused {
        /// `host:port`.
        endpoint: String,
        /// What the reply means.
        rejection: Rejection,
        /// The reply code, e.g. 535.
        code: u16,
        /// The reply text, its lines joined (starting with the enhanced status code when there is one).
        text: String,
    },
    /// The server does not offer what submission needs: STARTTLS, or AUTH XOAUTH2.
    #[error("{endpoint}: {what}")]
    Unsupported {
        /// `host:port`.
        endpoint: String,
        /// What is missing, in the client's words.
        what: String,
    },
    /// The server broke the protocol (a reply that is not SMTP, an unexpected challenge).
    #[error("{endpoint}: SMTP protocol error: {detail}")]
    Protocol {
        /// `host:port`.
        endpoint: String,
        /// What the client saw.
        detail: String,
    },
    /// The connection failed after the message was handed over, before the server's answer: it may have been
    /// accepted.
    #[error(
        "{endpoint}: no answer after the message was sent ({detail}); it may have been delivered"
    )]
    Unconfirmed {
        /// `host:port`.
        endpoint: String,
        /// What failed.
        detail: String,
    },
    /// The token cannot go into an XOAUTH2 string (a space or control character: not a token).
    #[error(
        "the access token cannot be used for XOAUTH2 (it holds a space or a control character)"
    )]
    BadToken,
    /// The EHLO name is not a host name or an address literal.
    #[error("EHLO name {name:?} is not a host name or an address literal")]
    BadHelloName {
        /// The name, as given.
        name: String,
    },
    /// The mailbox name cannot go into an XOAUTH2 string.
    #[error("mailbox {user:?} cannot be used for XOAUTH2: {reason}")]
    BadUser {
        /// The name, as given.
        user: String,
        /// Why.
        reason: String,
    },
    /// An address of the envelope is not one SMTP can carry.
    #[error("{address:?} is not a usable envelope address: {reason}")]
    BadAddress {
        /// The address.
        address: String,
        /// Why.
        reason: String,
    },
}

impl SmtpError {
    /// The typed meaning of a refusal, if this is one.
    pub fn rejection(&self) -> Option<Rejection> {
        match self {
            Self::Refused { rejection, .. } => Some(*rejection),
            _ => None,
        }
    }
}

impl Classified for SmtpError {
    fn class(&self) -> ErrorClass {
        match self {
            Self::Transport(e) => e.class(),
            Self::Tls(e) => e.class(),
            Self::Refused { rejection, .. } => match rejection {
                Rejection::AuthFailed | Rejection::SmtpAuthDisabled | Rejection::SendAsDenied => {
                    ErrorClass::Admin
                }
                Rejection::BasicAuthRefused => ErrorClass::Config,
                Rejection::InvalidArgument | Rejection::TooLarge | Rejection::BadAddress => {
                    ErrorClass::Input
                }
                Rejection::Throttled => ErrorClass::Transient,
                Rejection::Other => ErrorClass::Admin,
            },
            Self::Unsupported { .. } => ErrorClass::Config,
            Self::Protocol { .. } | Self::Unconfirmed { .. } => ErrorClass::Transient,
            Self::BadToken => ErrorClass::User,
            Self::BadUser { .. } | Self::BadAddress { .. } | Self::BadHelloName { .. } => {
                ErrorClass::Input
            }
        }
    }

    fn cause(&self) -> String {
        match self {
            Self::Transport(e) => e.cause(),
            Self::Tls(e) => e.cause(),
            Self::Refused {
                rejection, text, ..
            } => match rejection {
                Rejection::AuthFailed => "the token was not accepted for SMTP; Exchange gives the same line \
                     for every reason, so the cause is one of the checks in the remedy"
                    .into(),
                Rejection::SmtpAuthDisabled => {
                    "SMTP AUTH is switched off for the tenant or for this mailbox, and that blocks OAuth too"
                        .into()
                }
                Rejection::BasicAuthRefused => {
                    "the server refused a password sign-in; Exchange Online takes only OAuth (XOAUTH2)".into()
                }
                Rejection::SendAsDenied => format!(
                    "the signed-in identity may not send as the From address (the server accepted the \
                     envelope, then refused the message): {text}"
                ),
                Rejection::InvalidArgument => format!("the server refused a command argument: {text}"),
                Rejection::TooLarge => {
                    format!("the message is larger than the server or the mailbox allows: {text}")
                }
                Rejection::Throttled => format!("the server refused for now (throttling?): {text}"),
                Rejection::BadAddress => format!("the server refused an address: {text}"),
                Rejection::Other => format!("the server refused: {text}"),
            },
            Self::Unsupported { endpoint, what } => format!("{endpoint}: {what}"),
            Self::Protocol { endpoint, detail } => {
                format!("{endpoint} sent something SMTP does not allow here: {detail}")
            }
            Self::BadUser { user, reason } => format!("mailbox {user:?}: {reason}"),
            Self::BadAddress { address, reason } => format!("address {address:?}: {reason}"),
            Self::Unconfirmed { endpoint, detail } => format!(
                "{endpoint} did not confirm the message after it was sent ({detail}); the server may have \
                 accepted it"
            ),
            Self::BadToken => "the access token is not a bearer token (a space or control character)".into(),
            Self::BadHelloName { name } => format!("EHLO name {name:?} is not a host name"),
        }
    }

    fn remedy(&self) -> String {
        match self {
            Self::Transport(e) => e.remedy(),
            Self::Tls(e) => e.remedy(),
            Self::Refused { rejection, .. } => match rejection {
                Rejection::AuthFailed => "check, in order: the token's audience and scope or role \
                     (`m365mail token get --target smtp --show-token | m365mail token inspect`: delegated needs \
                     SMTP.Send, app-only the SMTP.SendAsApp role); for app-only, the app's service principal \
                     registered in Exchange (New-ServicePrincipal) and its FullAccess on the mailbox \
                     (Add-MailboxPermission); and that the mailbox is the one signed in"
                    .into(),
                Rejection::SmtpAuthDisabled => "switch SMTP AUTH on: for the tenant \
                     `Set-TransportConfig -SmtpClientAuthenticationDisabled $false`, or for this mailbox \
                     `Set-CASMailbox -Identity <mailbox> -SmtpClientAuthenticationDisabled $false` (security \
                     defaults keep it off); or send through Graph instead"
                    .into(),
                Rejection::BasicAuthRefused => {
                    "sign in with OAuth: m365mail sends AUTH XOAUTH2 with a token from the profile".into()
                }
                Rejection::SendAsDenied => "send as the signed-in mailbox (--from), or grant the right: \
                     `Add-RecipientPermission -Identity <from address> -Trustee <mailbox or service principal> \
                     -AccessRights SendAs`"
                    .into(),
                Rejection::InvalidArgument => {
                    "check the EHLO name (a host name or an address literal) and the addresses".into()
                }
                Rejection::TooLarge => "send smaller attachments, or ask the admin to raise the mailbox's \
                     MaxSendSize (Set-Mailbox -MaxSendSize; Exchange allows up to 150 MB)"
                    .into(),
                Rejection::Throttled => "retry later; Exchange takes 30 messages a minute per mailbox, so \
                     keep pacing on"
                    .into(),
                Rejection::BadAddress => {
                    "check the recipient and From addresses named in the server's text".into()
                }
                Rejection::Other => "read the server's text; run with --log debug for the exchange".into(),
            },
            Self::Unsupported { .. } => "use a submission port that offers STARTTLS and AUTH XOAUTH2 \
                 (smtp.office365.com:587), or implicit TLS with smtp_tls = \"implicit\" where the server \
                 offers it"
                .into(),
            Self::Protocol { .. } => {
                "retry; if it repeats, check that the address is an SMTP submission port and run with \
                 --log debug"
                    .into()
            }
            Self::BadUser { .. } => {
                "give the mailbox as a plain address (--mailbox or the profile's mailbox)".into()
            }
            Self::BadAddress { .. } => "give addresses as local@domain, without spaces or angle brackets".into(),
            Self::Unconfirmed { .. } => "look in the mailbox's Sent Items (or ask the recipient) before sending \
                 it again: a blind retry may deliver it twice"
                .into(),
            Self::BadToken => "get a new token (m365mail token get --target smtp) and check where it came from".into(),
            Self::BadHelloName { .. } => {
                "give the EHLO name as a host name (letters, digits, '-', '.') or leave it unset".into()
            }
        }
    }
}

/// A message the server accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submitted {
    /// The Message-ID of the message (without angle brackets, as `BuiltMessage` has it).
    pub message_id: String,
    /// The server's final reply, code and text (e.g. `250 2.0.0 OK <…> [Hostname=…]`).
    pub reply: String,
}

/// Something that submits built messages: SMTP here, Graph later.
pub trait Submit {
    /// Submits one message; its envelope is the message's own (`envelope_from`, `recipients`).
    fn submit(
        &self,
        message: &BuiltMessage,
    ) -> impl Future<Output = Result<Submitted, SmtpError>> + Send;
}

/// An SMTP submission client signed in as one mailbox with one token.
///
/// It owns its one connection: TCP with Nagle off (lettre writes the data and its final `CRLF . CRLF` as two
/// writes, and with Nagle on the second waits for the server's delayed ACK — 40 ms a message on Linux), TLS
/// through the shared [`TlsTrust`] connector, STARTTLS done here, and then lettre's
/// [`AsyncSmtpConnection`] for EHLO, AUTH XOAUTH2, the envelope and the data.
pub struct SmtpSender {
    options: SmtpOptions,
    connector: tokio_rustls::TlsConnector,
    hello: ClientId,
    credentials: Credentials,
    endpoint: String,
    connection: tokio::sync::Mutex<Option<Live>>,
    opened: std::sync::atomic::AtomicU64,
}

/// The signed-in connection and when it was last used.
struct Live {
    connection: AsyncSmtpConnection,
    used: tokio::time::Instant,
}

impl std::fmt::Debug for SmtpSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The credentials hold the token: print only where the sender goes.
        f.debug_struct("SmtpSender")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

/// A stream that first yields `prefix`, then the inner stream's bytes: after STARTTLS, lettre's connection
/// starts by reading a greeting, so it is given the one the server sent before TLS.
#[derive(Debug)]
struct Replayed<S> {
    prefix: std::io::Cursor<Vec<u8>>,
    inner: S,
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Replayed<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let position = self.prefix.position() as usize;
        let remaining = &self.prefix.get_ref()[position..];
        if !remaining.is_empty() {
            let n = remaining.len().min(buf.remaining());
            buf.put_slice(&remaining[..n]);
            self.prefix.set_position((position + n) as u64);
            return std::task::Poll::Ready(Ok(()));
        }
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Replayed<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

type TlsTcp = tokio_rustls::client::TlsStream<TcpStream>;

impl AsyncTokioStream for Replayed<TlsTcp> {
    fn peer_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.inner.get_ref().0.peer_addr()
    }
}

/// A connection idle this long is checked with NOOP before it carries the next message.
const REUSE_CHECK_AFTER: Duration = Duration::from_secs(5);

/// The longest reply line read before TLS, and the most lines in one reply.
const PLAIN_LINE_MAX: usize = 4096;
const PLAIN_LINES_MAX: usize = 64;

impl SmtpSender {
    /// A sender for `user` (the XOAUTH2 `user=`) with bearer `token`. Nothing is connected yet: the first
    /// [`Submit::submit`] connects and signs in, and later ones reuse that connection while it is idle less
    /// than `idle_timeout` (a broken or refused one is replaced).
    pub fn new(options: &SmtpOptions, user: &str, token: &Secret) -> Result<Self, SmtpError> {
        // The same check the POP3 and IMAP drivers make, so a CR/LF or ^A cannot reach the AUTH line.
        xoauth2::raw(user, token.expose()).map_err(|e| match e {
            xoauth2::Xoauth2Error::InvalidField { field: "token" } => SmtpError::BadToken,
            e => SmtpError::BadUser {
                user: user.to_owned(),
                reason: e.to_string(),
            },
        })?;
        let hello = match &options.hello_name {
            // It goes into a plain-text EHLO line: host-name characters only.
            Some(name)
                if name.is_empty()
                    || name.len() > 255
                    || !name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-.[]:".contains(&b)) =>
            {
                return Err(SmtpError::BadHelloName { name: name.clone() });
            }
            Some(name) => ClientId::Domain(name.clone()),
            None => ClientId::default(),
        };
        Ok(Self {
            connector: options.trust.connector()?,
            options: options.clone(),
            hello,
            credentials: Credentials::new(user.to_owned(), token.expose().to_owned()),
            endpoint: format!(
                "{}:{}",
                options.endpoint.address.host, options.endpoint.address.port
            ),
            connection: tokio::sync::Mutex::new(None),
            opened: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// `host:port`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// How many connections this sender has opened (and signed in) so far.
    pub fn connections_opened(&self) -> u64 {
        self.opened.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Ends a connection that will not be used again: `QUIT` when it still works, bounded by the step timeout.
    async fn discard(&self, mut old: Live) {
        if !old.connection.has_broken() {
            let _ = tokio::time::timeout(self.options.timeout, old.connection.abort()).await;
        }
    }

    /// Connects, starts TLS and signs in, then says `QUIT`: whether sending could start, without sending
    /// anything (`m365mail doctor`'s SMTP step).
    pub async fn check_sign_in(&self) -> Result<(), SmtpError> {
        let mut connection = self.connect().await?;
        let _ = tokio::time::timeout(self.options.timeout, connection.quit()).await;
        Ok(())
    }

    /// Says goodbye (`QUIT`) on the open connection, if any.
    pub async fn close(&self) {
        if let Some(mut live) = self.connection.lock().await.take() {
            let _ = tokio::time::timeout(self.options.timeout, live.connection.quit()).await;
        }
    }

    fn transport(
        &self,
        kind: TransportKind,
        source: impl Into<crate::transport::BoxError>,
    ) -> SmtpError {
        TransportError::new(kind, &self.endpoint, source).into()
    }

    /// Connects, starts TLS, greets and signs in: a ready connection.
    async fn connect(&self) -> Result<AsyncSmtpConnection, SmtpError> {
        let address = &self.options.endpoint.address;
        let mut tcp = tokio::time::timeout(
            self.options.timeout,
            TcpStream::connect((address.host.as_str(), address.port)),
        )
        .await
        .map_err(|_| TransportError::bare(TransportKind::Timeout, &self.endpoint))?
        .map_err(|e| self.transport(TransportKind::Connect, e))?;
        let _ = tcp.set_nodelay(true);
        let greeting = match self.options.endpoint.tls {
            TlsMode::Implicit => Vec::new(),
            TlsMode::Starttls => self.starttls(&mut tcp).await?,
        };
        let name = ServerName::try_from(address.host.clone())
            .map_err(|e| self.transport(TransportKind::Tls, e))?;
        let tls = tokio::time::timeout(self.options.timeout, self.connector.connect(name, tcp))
            .await
            .map_err(|_| TransportError::bare(TransportKind::Timeout, &self.endpoint))?
            .map_err(|e| self.transport(TransportKind::Tls, e))?;
        let stream = Replayed {
            prefix: std::io::Cursor::new(greeting),
            inner: tls,
        };
        let ready = async {
            let mut connection =
                AsyncSmtpConnection::connect_with_transport(Box::new(stream), &self.hello).await?;
            connection
                .auth(&[Mechanism::Xoauth2], &self.credentials)
                .await?;
            Ok::<_, lettre::transport::smtp::Error>(connection)
        };
        tokio::time::timeout(self.options.timeout, ready)
            .await
            .map_err(|_| TransportError::bare(TransportKind::Timeout, &self.endpoint))?
            .map_err(|e| self.error(e))
    }

    /// Before TLS: the greeting, EHLO, `STARTTLS`. Returns the greeting's bytes for lettre to read again.
    async fn starttls(&self, tcp: &mut TcpStream) -> Result<Vec<u8>, SmtpError> {
        let mut reader = PlainReader::default();
        let step = async {
            let greeting = reader.reply(tcp).await?;
            if !greeting.starts_with(b"220") {
                return Ok(Err(greeting));
            }
            tcp.write_all(format!("EHLO {}\r\n", self.hello).as_bytes())
                .await?;
            let ehlo = reader.reply(tcp).await?;
            if !ehlo.starts_with(b"250") {
                return Ok(Err(ehlo));
            }
            let offers_starttls = ehlo.split(|&b| b == b'\n').any(|line| {
                line.len() > 4 && line[4..].trim_ascii().eq_ignore_ascii_case(b"STARTTLS")
            });
            if !offers_starttls {
                return Ok(Ok(None));
            }
            tcp.write_all(b"STARTTLS\r\n").await?;
            let ready = reader.reply(tcp).await?;
            if !ready.starts_with(b"220") {
                return Ok(Err(ready));
            }
            Ok::<_, std::io::Error>(Ok(Some(greeting)))
        };
        match tokio::time::timeout(self.options.timeout, step).await {
            Err(_) => Err(TransportError::bare(TransportKind::Timeout, &self.endpoint).into()),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::InvalidData => Err(SmtpError::Protocol {
                endpoint: self.endpoint.clone(),
                detail: e.to_string(),
            }),
            Ok(Err(e)) => Err(self.transport(TransportKind::Io, e)),
            Ok(Ok(Ok(Some(greeting)))) => Ok(greeting),
            Ok(Ok(Ok(None))) => Err(SmtpError::Unsupported {
                endpoint: self.endpoint.clone(),
                what: "the server does not offer STARTTLS".into(),
            }),
            Ok(Ok(Err(reply))) => Err(refusal(&self.endpoint, &reply)),
        }
    }

    fn envelope(message: &BuiltMessage) -> Result<Envelope, SmtpError> {
        let parse = |text: &str| {
            text.parse::<Address>().map_err(|e| SmtpError::BadAddress {
                address: text.to_owned(),
                reason: e.to_string(),
            })
        };
        let from = parse(&message.envelope_from)?;
        let to = message
            .recipients
            .iter()
            .map(|r| parse(r))
            .collect::<Result<Vec<_>, _>>()?;
        Envelope::new(Some(from), to).map_err(|e| SmtpError::BadAddress {
            address: message.recipients.join(", "),
            reason: e.to_string(),
        })
    }

    fn error(&self, error: lettre::transport::smtp::Error) -> SmtpError {
        let endpoint = self.endpoint.clone();
        if let Some(code) = error.status() {
            let code: u16 = code.to_string().parse().unwrap_or(0);
            let text = std::error::Error::source(&error)
                .map(|s| s.to_string())
                .unwrap_or_default();
            let enhanced = text
                .split_whitespace()
                .next()
                .filter(|word| is_enhanced_status(word));
            return SmtpError::Refused {
                endpoint,
                rejection: Rejection::of(code, enhanced, &text),
                code,
                text,
            };
        }
        let detail = std::error::Error::source(&error)
            .map(|s| s.to_string())
            .unwrap_or_else(|| error.to_string());
        if error.is_timeout() {
            return TransportError::new(TransportKind::Timeout, endpoint, error).into();
        }
        if tls_failure_in(&error) {
            return TransportError::new(TransportKind::Tls, endpoint, error).into();
        }
        if error.is_client() {
            // lettre's own refusals: no XOAUTH2 offered, or a challenge after XOAUTH2 (Dovecot and Gmail
            // answer a refused token with a 334 error challenge).
            if detail.contains("does not expect a challenge") {
                return SmtpError::Refused {
                    endpoint,
                    rejection: Rejection::AuthFailed,
                    code: 334,
                    text: "the server answered AUTH XOAUTH2 with an error challenge".into(),
                };
            }
            return SmtpError::Unsupported {
                endpoint,
                what: detail,
            };
        }
        if error.is_response() {
            return SmtpError::Protocol { endpoint, detail };
        }
        TransportError::new(TransportKind::Io, endpoint, error).into()
    }
}

/// Reads whole SMTP replies before TLS, bounded in line length and count.
#[derive(Default)]
struct PlainReader {
    buffer: Vec<u8>,
}

impl PlainReader {
    /// One reply (every line up to the one whose fourth byte is a space), CRLFs included.
    async fn reply(&mut self, tcp: &mut TcpStream) -> std::io::Result<Vec<u8>> {
        let invalid =
            |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
        let mut reply = Vec::new();
        for _ in 0..PLAIN_LINES_MAX {
            let line = loop {
                if let Some(end) = self.buffer.iter().position(|&b| b == b'\n') {
                    break self.buffer.drain(..=end).collect::<Vec<u8>>();
                }
                if self.buffer.len() > PLAIN_LINE_MAX {
                    return Err(invalid("a reply line longer than 4096 bytes"));
                }
                let mut chunk = [0u8; 1024];
                let n = tcp.read(&mut chunk).await?;
                if n == 0 {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the server closed the connection",
                    ));
                }
                self.buffer.extend_from_slice(&chunk[..n]);
            };
            if line.len() < 4 || !line[..3].iter().all(u8::is_ascii_digit) {
                return Err(invalid(&format!(
                    "not an SMTP reply: {:?}",
                    String::from_utf8_lossy(&line).trim_end()
                )));
            }
            let last = line[3] != b'-';
            reply.extend_from_slice(&line);
            if last {
                return Ok(reply);
            }
        }
        Err(invalid("a reply of more than 64 lines"))
    }
}

/// A negative reply read before TLS, as a typed refusal.
fn refusal(endpoint: &str, reply: &[u8]) -> SmtpError {
    let text = String::from_utf8_lossy(reply);
    let code = text.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
    let text = text
        .lines()
        .map(|l| l.get(4..).unwrap_or("").trim())
        .collect::<Vec<_>>()
        .join(" ");
    let enhanced = text
        .split_whitespace()
        .next()
        .filter(|w| is_enhanced_status(w));
    SmtpError::Refused {
        endpoint: endpoint.to_owned(),
        rejection: Rejection::of(code, enhanced, &text),
        code,
        text,
    }
}

/// Whether a rustls error is somewhere in `error`'s chain.
fn tls_failure_in(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(e) = current {
        if crate::transport::find_rustls_error(e).is_some() {
            return true;
        }
        current = e.source();
    }
    false
}

/// `d.ddd.ddd`, the shape of an enhanced status code (RFC 3463).
fn is_enhanced_status(word: &str) -> bool {
    let mut parts = word.split('.');
    let class = parts.next().unwrap_or_default();
    matches!(class, "2" | "4" | "5")
        && parts.clone().count() == 2
        && parts.all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()))
}

impl Submit for SmtpSender {
    async fn submit(&self, message: &BuiltMessage) -> Result<Submitted, SmtpError> {
        let envelope = Self::envelope(message)?;
        // lettre always ends the data with CRLF "." CRLF after the bytes, so a message that ends with
        // its own CRLF (as every built one does) would gain an empty line: hand it over without that one.
        let bytes = message
            .bytes
            .strip_suffix(b"\r\n")
            .unwrap_or(&message.bytes);
        let mut slot = self.connection.lock().await;
        let mut stale = slot.as_ref().is_none_or(|live| {
            live.connection.has_broken() || live.used.elapsed() >= self.options.idle_timeout
        });
        // A connection idle for a while may have been closed by the server or a middlebox: a NOOP tells, before
        // the message is committed to it.
        if !stale
            && let Some(live) = slot.as_mut()
            && live.used.elapsed() >= REUSE_CHECK_AFTER
        {
            stale = !tokio::time::timeout(self.options.timeout, live.connection.test_connected())
                .await
                .unwrap_or(false);
        }
        if stale {
            if let Some(old) = slot.take() {
                self.discard(old).await;
            }
            self.opened
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            *slot = Some(Live {
                connection: self.connect().await?,
                used: tokio::time::Instant::now(),
            });
        }
        let Some(live) = slot.as_mut() else {
            unreachable!("a connection was just made");
        };
        // The step bound plus time to move the data at 64 KiB/s.
        let bound = self.options.timeout + Duration::from_secs(bytes.len() as u64 / 65_536);
        let result = tokio::time::timeout(bound, live.connection.send(&envelope, bytes)).await;
        live.used = tokio::time::Instant::now();
        match result {
            Ok(Ok(response)) => {
                let text = response.message().collect::<Vec<_>>().join(" ");
                Ok(Submitted {
                    message_id: message.message_id.clone(),
                    reply: format!("{} {text}", response.code()),
                })
            }
            Ok(Err(e)) => {
                // After a refusal the session may be in any state: the next message starts a new one.
                if let Some(old) = slot.take() {
                    self.discard(old).await;
                }
                match self.error(e) {
                    // Broken below the protocol while the message was in flight: maybe delivered.
                    SmtpError::Transport(t) => Err(SmtpError::Unconfirmed {
                        endpoint: self.endpoint.clone(),
                        detail: t.to_string(),
                    }),
                    other => Err(other),
                }
            }
            Err(_) => {
                slot.take();
                Err(SmtpError::Unconfirmed {
                    endpoint: self.endpoint.clone(),
                    detail: format!("no answer within {} s", bound.as_secs()),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exchange_replies_get_their_cases() {
        let cases = [
            (
                535,
                Some("5.7.3"),
                "5.7.3 Authentication unsuccessful",
                Rejection::AuthFailed,
            ),
            (
                535,
                Some("5.7.139"),
                "5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant.",
                Rejection::SmtpAuthDisabled,
            ),
            (
                550,
                Some("5.7.30"),
                "5.7.30 Basic authentication is not supported for Client Submission.",
                Rejection::BasicAuthRefused,
            ),
            (
                554,
                Some("5.2.252"),
                "5.2.252 SendAsDenied; a not allowed to send as b",
                Rejection::SendAsDenied,
            ),
            (
                501,
                Some("5.5.4"),
                "5.5.4 Invalid domain name",
                Rejection::InvalidArgument,
            ),
            (
                552,
                Some("5.3.4"),
                "5.3.4 Message size exceeds fixed maximum",
                Rejection::TooLarge,
            ),
            (
                550,
                Some("5.2.12"),
                "5.2.12 SendSizeLimit",
                Rejection::TooLarge,
            ),
            (
                451,
                Some("4.7.500"),
                "4.7.500 Server busy",
                Rejection::Throttled,
            ),
            (
                550,
                Some("5.1.1"),
                "5.1.1 User unknown",
                Rejection::BadAddress,
            ),
            (
                550,
                Some("5.7.60"),
                "5.7.60 SMTP; Client does not have permissions to send as this sender",
                Rejection::SendAsDenied,
            ),
            (
                554,
                Some("5.2.0"),
                "5.2.0 STOREDRV.Submission.Exception:SubmissionQuotaExceededException",
                Rejection::Throttled,
            ),
            (
                554,
                Some("5.6.0"),
                "5.6.0 Corrupt message content",
                Rejection::Other,
            ),
        ];
        for (code, enhanced, text, want) in cases {
            assert_eq!(Rejection::of(code, enhanced, text), want, "{code} {text}");
        }
    }

    #[test]
    fn enhanced_status_codes_are_recognised_and_other_words_are_not() {
        for word in ["5.7.3", "5.7.139", "4.7.500", "2.0.0"] {
            assert!(is_enhanced_status(word), "{word}");
        }
        for word in [
            "5.7",
            "Authentication",
            "5.7.3.1",
            "6.0.0",
            "5..3",
            "5.7.1390",
        ] {
            assert!(!is_enhanced_status(word), "{word}");
        }
    }

    #[test]
    fn every_refusal_has_a_remedy_and_the_right_class() {
        let refused = |rejection| SmtpError::Refused {
            endpoint: "smtp.office365.com:587".into(),
            rejection,
            code: 535,
            text: "x".into(),
        };
        assert_eq!(refused(Rejection::AuthFailed).class(), ErrorClass::Admin);
        assert!(
            refused(Rejection::SmtpAuthDisabled)
                .remedy()
                .contains("Set-TransportConfig")
        );
        assert!(
            refused(Rejection::SmtpAuthDisabled)
                .remedy()
                .contains("Set-CASMailbox")
        );
        assert!(
            refused(Rejection::SendAsDenied)
                .remedy()
                .contains("Add-RecipientPermission")
        );
        assert_eq!(refused(Rejection::Throttled).class(), ErrorClass::Transient);
        assert_eq!(refused(Rejection::TooLarge).class(), ErrorClass::Input);
    }

    #[tokio::test]
    async fn a_user_with_a_line_break_is_refused_before_anything_is_built() {
        let endpoint = MailEndpoint {
            address: crate::endpoint::HostPort::parse("smtp", "127.0.0.1:1").unwrap(),
            tls: TlsMode::Starttls,
        };
        let err = SmtpSender::new(
            &SmtpOptions::new(endpoint, TlsTrust::system()),
            "adele@contoso.com\r\nRCPT TO:<x@y>",
            &Secret::new("token"),
        )
        .unwrap_err();
        assert!(matches!(err, SmtpError::BadUser { .. }), "{err:?}");
        assert_eq!(err.class(), ErrorClass::Input);
    }

    #[tokio::test]
    async fn a_bad_token_or_ehlo_name_is_refused_without_echoing_the_token() {
        let endpoint = MailEndpoint {
            address: crate::endpoint::HostPort::parse("smtp", "127.0.0.1:1").unwrap(),
            tls: TlsMode::Starttls,
        };
        let mut options = SmtpOptions::new(endpoint, TlsTrust::system());
        let err = SmtpSender::new(
            &options,
            "adele@contoso.com",
            &Secret::new("eyJ0 x\r\nQUIT"),
        )
        .unwrap_err();
        assert!(matches!(err, SmtpError::BadToken), "{err:?}");
        assert!(!format!("{err:?} {err} {}", err.cause()).contains("QUIT"));
        options.hello_name = Some("client.example\r\nMAIL FROM:<x@y>".into());
        let err = SmtpSender::new(&options, "adele@contoso.com", &Secret::new("t")).unwrap_err();
        assert!(matches!(err, SmtpError::BadHelloName { .. }), "{err:?}");
        options.hello_name = Some("client-1.example".into());
        assert!(SmtpSender::new(&options, "adele@contoso.com", &Secret::new("t")).is_ok());
    }

    #[tokio::test]
    async fn the_sender_debug_output_holds_no_token() {
        let endpoint = MailEndpoint {
            address: crate::endpoint::HostPort::parse("smtp", "127.0.0.1:1").unwrap(),
            tls: TlsMode::Implicit,
        };
        let sender = SmtpSender::new(
            &SmtpOptions::new(endpoint, TlsTrust::system()),
            "adele@contoso.com",
            &Secret::new("eyJ0eXAi.secret-token"),
        )
        .unwrap();
        let debug = format!("{sender:?}");
        assert!(!debug.contains("secret-token"), "{debug}");
        assert!(debug.contains("127.0.0.1:1"), "{debug}");
    }
}
