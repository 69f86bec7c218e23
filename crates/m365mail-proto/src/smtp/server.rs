//! The SMTP submission server core: bytes in, replies and [`Event`]s out, no I/O. It answers as Exchange
//! Online's `smtp.office365.com:587` does (microsoft.md §7.6): the greeting and both EHLO replies verbatim
//! (STARTTLS before TLS, `AUTH LOGIN XOAUTH2` after), `AUTH XOAUTH2` in the one-line and the `334` form,
//! `235 2.7.0 Authentication successful`, `535 5.7.3 …`, `535 5.7.139 …` when SMTP AUTH is off,
//! `550 5.7.30 …` for Basic `AUTH LOGIN`, the MAIL/RCPT/DATA replies and `554 5.2.252 SendAsDenied` after the
//! data.
//!
//! The same core also plays a submission relay for clients that only know a password ([`Role::Relay`], the
//! local bridge): its own greeting and EHLO (SIZE, PIPELINING, 8BITMIME, STARTTLS when offered, `AUTH PLAIN
//! LOGIN`), `AUTH PLAIN` and `AUTH LOGIN` handed over as [`Event::Login`], AUTH before TLS only where the
//! listener's policy allows it, the sender asked about at `MAIL FROM` ([`Event::Mail`]) and every verdict
//! that is not a success given by the driver as a [`Reply`].
//!
//! Decisions belong to the driver: [`Event::StartTls`] (upgrade, then continue with [`SmtpServer::into_tls`]),
//! [`Event::Authenticate`] / [`Event::Login`] ([`SmtpServer::authenticated`]), [`Event::Mail`]
//! ([`SmtpServer::mail_answered`]) and [`Event::Submit`] ([`SmtpServer::submitted`]), which may come much later
//! (a relay waits for its upstream). While an event waits for its answer no further command is read.

use std::fmt;

use crate::fault::{CommandFault, CommandFaults};
use crate::line::LineBuffer;
use crate::xoauth2;

/// The longest command line (RFC 5321 allows 512 octets; an XOAUTH2 initial response is far longer).
pub const MAX_LINE: usize = 16 * 1024;
/// The advertised (and enforced) message size: 150 MB, as Exchange's `SIZE 157286400`.
pub const MAX_SIZE: usize = 157_286_400;
/// The most recipients of one message (Exchange's default, microsoft.md §7.7).
pub const MAX_RECIPIENTS: usize = 500;

/// Which server the core plays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Exchange Online's submission service, line for line (the sandbox): XOAUTH2 only, AUTH only after TLS,
    /// Basic `AUTH LOGIN` refused with `550 5.7.30`.
    Exchange,
    /// A submission relay for clients that only know a password (the bridge).
    Relay(RelayPolicy),
}

/// What a relay listener allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayPolicy {
    /// AUTH offered and accepted on a connection that is not (yet) TLS: a password in clear text, so only on
    /// loopback or where the operator accepted the risk.
    pub auth_without_tls: bool,
    /// STARTTLS offered on a plain connection (the listener has a certificate).
    pub starttls: bool,
}

/// A reply the driver words: a code (4xx temporary, 5xx permanent) and its text, which should begin with an
/// enhanced status code. The text is cleaned so that nothing a driver quotes (an upstream's text) can break
/// the line or run on for pages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    code: u16,
    text: String,
}

impl Reply {
    /// The longest text kept (RFC 5321's reply line is 512 octets).
    pub const MAX_TEXT: usize = 480;

    /// A negative reply. A code outside 400..=599 becomes 451 (a driver bug must not read as success).
    pub fn new(code: u16, text: &str) -> Self {
        let code = if (400..=599).contains(&code) {
            code
        } else {
            451
        };
        // Line breaks and other controls become spaces, runs of spaces one.
        let mut clean = text
            .split(|c: char| c.is_control() || c == ' ')
            .filter(|word| !word.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        if clean.len() > Self::MAX_TEXT {
            let mut end = Self::MAX_TEXT;
            while !clean.is_char_boundary(end) {
                end -= 1;
            }
            clean.truncate(end);
        }
        Self { code, text: clean }
    }

    /// The reply code.
    pub fn code(&self) -> u16 {
        self.code
    }

    /// The text after the code.
    pub fn text(&self) -> &str {
        &self.text
    }

    fn line(&self) -> String {
        format!("{} {}", self.code, self.text)
    }
}

/// How a sign-in ended, as the driver decides it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthOutcome {
    /// `235 2.7.0 Authentication successful`.
    Accepted,
    /// `535 5.7.3 Authentication unsuccessful [host]`: any token problem.
    Refused,
    /// `535 5.7.139 … SmtpClientAuthentication is disabled for the Tenant …`: SMTP AUTH is off.
    SmtpAuthDisabled,
    /// Any other answer, worded by the driver (a relay: `535 5.7.8` for bad credentials, `454 4.7.0` while
    /// an address or account is backed off).
    Denied(Reply),
}

/// How a submission ended, as the driver decides it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubmitOutcome {
    /// `250 2.0.0 OK <message-id> [Hostname=host]`.
    Accepted {
        /// The message id to quote (without brackets).
        message_id: String,
    },
    /// `554 5.2.252 SendAsDenied; <who> not allowed to send as <from>; …`.
    SendAsDenied {
        /// The signed-in identity.
        who: String,
    },
    /// Refused or deferred, worded by the driver (a relay quoting its upstream).
    Refused(Reply),
}

/// What the driver must decide.
#[derive(Clone, PartialEq, Eq)]
pub enum Event {
    /// `STARTTLS` was accepted (`220 2.0.0 SMTP server ready` is queued): write it, start TLS, then go on
    /// with [`SmtpServer::after_tls`].
    StartTls,
    /// An XOAUTH2 response: answer with [`SmtpServer::authenticated`].
    Authenticate {
        /// `user=`.
        user: String,
        /// The bearer token (a secret: `Debug` hides it).
        token: String,
    },
    /// `AUTH PLAIN` or `AUTH LOGIN` credentials ([`Role::Relay`]): answer with [`SmtpServer::authenticated`].
    Login {
        /// The authentication identity (PLAIN's authcid, LOGIN's username).
        user: String,
        /// The password (a secret: `Debug` hides it).
        password: String,
    },
    /// `MAIL FROM` ([`Role::Relay`]): answer with [`SmtpServer::mail_answered`].
    Mail {
        /// The reverse path.
        from: String,
        /// The `SIZE=` the client declared, if any (already checked against the size bound).
        declared_size: Option<usize>,
    },
    /// A message after the final `.`: answer with [`SmtpServer::submitted`].
    Submit {
        /// `MAIL FROM`.
        from: String,
        /// `RCPT TO`s.
        recipients: Vec<String>,
        /// The message, dot-unstuffed, CRLF line endings.
        data: Vec<u8>,
    },
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::StartTls => f.write_str("StartTls"),
            Self::Authenticate { user, .. } => f
                .debug_struct("Authenticate")
                .field("user", user)
                .field("token", &"[redacted]")
                .finish(),
            Self::Login { user, .. } => f
                .debug_struct("Login")
                .field("user", user)
                .field("password", &"[redacted]")
                .finish(),
            Self::Mail {
                from,
                declared_size,
            } => f
                .debug_struct("Mail")
                .field("from", from)
                .field("declared_size", declared_size)
                .finish(),
            Self::Submit {
                from,
                recipients,
                data,
            } => f
                .debug_struct("Submit")
                .field("from", from)
                .field("recipients", recipients)
                .field("size", &data.len())
                .finish(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Commands.
    Command,
    /// `AUTH XOAUTH2` and `334 ` sent: the next line is the response.
    AuthResponse,
    /// `AUTH PLAIN` and `334 ` sent: the next line is the response.
    PlainResponse,
    /// `AUTH LOGIN`: the username, then the password (Exchange: Basic, refused at the end).
    LoginUser,
    LoginPassword,
    /// An event is out.
    Waiting,
    /// DATA: lines up to `.`.
    Data,
    Closed,
}

/// One SMTP connection's server side.
pub struct SmtpServer {
    role: Role,
    host: String,
    client_ip: String,
    tls: bool,
    lines: LineBuffer,
    out: Vec<u8>,
    state: State,
    greeted: bool,
    authenticated: bool,
    hello: Option<String>,
    login_user: Option<String>,
    /// A `MAIL FROM` waiting for [`SmtpServer::mail_answered`].
    pending_from: Option<String>,
    from: Option<String>,
    recipients: Vec<String>,
    data: Vec<u8>,
    too_large: bool,
    /// A bare CR or LF in this message's data (relay role): refused at its end.
    bare_line_ends: bool,
    max_size: usize,
    events: Vec<Event>,
    faults: CommandFaults,
}

/// The answer to a command refused by an injected fault ([`CommandFaults::fail_next`]; our wording: Exchange's
/// transient submission failures are not on record in microsoft.md §7.6).
pub const TRANSIENT_FAILURE: &str = "451 4.3.2 Temporary server error. Please try again later";
/// How a signed-in session whose access token expired ends ([`SmtpServer::token_expired`]; our wording).
pub const TOKEN_EXPIRED: &str = "421 4.7.0 Session invalidated - AccessTokenExpired";

impl fmt::Debug for SmtpServer {
    // The input may hold an XOAUTH2 response (a token): show only the state.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpServer")
            .field("state", &self.state)
            .field("tls", &self.tls)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

/// The EHLO keywords before TLS and after it (§7.6, verbatim; only STARTTLS / AUTH differ).
fn ehlo(host: &str, client_ip: &str, tls: bool) -> String {
    let middle = if tls {
        "AUTH LOGIN XOAUTH2"
    } else {
        "STARTTLS"
    };
    format!(
        "250-{host} Hello [{client_ip}]\r\n250-SIZE 157286400\r\n250-PIPELINING\r\n250-DSN\r\n\
         250-ENHANCEDSTATUSCODES\r\n250-{middle}\r\n250-8BITMIME\r\n250-BINARYMIME\r\n250-CHUNKING\r\n\
         250 SMTPUTF8\r\n"
    )
}

/// The relay's EHLO keywords.
fn relay_ehlo(
    host: &str,
    client_ip: &str,
    tls: bool,
    policy: RelayPolicy,
    max_size: usize,
) -> String {
    let mut lines = vec![
        format!("{host} Hello [{client_ip}]"),
        format!("SIZE {max_size}"),
        "PIPELINING".to_owned(),
        "ENHANCEDSTATUSCODES".to_owned(),
        "8BITMIME".to_owned(),
    ];
    if !tls && policy.starttls {
        lines.push("STARTTLS".to_owned());
    }
    if tls || policy.auth_without_tls {
        lines.push("AUTH PLAIN LOGIN".to_owned());
    }
    lines.push("SMTPUTF8".to_owned());
    let last = lines.len() - 1;
    lines
        .iter()
        .enumerate()
        .map(|(i, line)| format!("250{}{line}\r\n", if i == last { ' ' } else { '-' }))
        .collect()
}

/// The `SIZE=` parameter after `MAIL FROM:<…>`; `Err` when it is not a number.
fn declared_size(rest: &str) -> Result<Option<usize>, ()> {
    let Some((_, parameters)) = rest.split_once('>') else {
        return Ok(None);
    };
    for parameter in parameters.split_whitespace() {
        if let Some((name, value)) = parameter.split_once('=')
            && name.eq_ignore_ascii_case("SIZE")
        {
            return value.parse().map(Some).map_err(|_| ());
        }
    }
    Ok(None)
}

/// The SASL PLAIN response `authzid NUL authcid NUL password` (base64): authcid and password.
fn plain_credentials(response: &str) -> Option<(String, String)> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(response)
        .ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let mut parts = text.split('\0');
    let (_authzid, user, password) = (parts.next()?, parts.next()?, parts.next()?);
    let fine = parts.next().is_none()
        && !user.is_empty()
        && user.len() <= MAX_USER
        && !user.chars().any(char::is_control);
    fine.then(|| (user.to_owned(), password.to_owned()))
}

/// The longest username a relay takes (it is logged and kept as a back-off key).
const MAX_USER: usize = 256;

/// One base64 line of `AUTH LOGIN` as text.
fn login_line(response: &str) -> Option<String> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(response)
        .ok()?;
    String::from_utf8(bytes)
        .ok()
        .filter(|text| !text.chars().any(char::is_control))
}

/// The longest address a relay takes (RFC 5321's path limit).
const MAX_PATH: usize = 256;

/// `<addr>` of `MAIL FROM:<addr> …` / `RCPT TO:<addr> …` (parameters after it ignored).
fn path(rest: &str, keyword: &str) -> Option<String> {
    let (head, tail) = rest.split_at(rest.len().min(keyword.len()));
    if !head.eq_ignore_ascii_case(keyword) {
        return None;
    }
    let tail = tail.trim_start();
    let inner = tail.strip_prefix('<')?;
    let (address, _) = inner.split_once('>')?;
    (!address.chars().any(|c| c.is_control() || c.is_whitespace())).then(|| address.to_owned())
}

impl SmtpServer {
    /// A connection's server side; `greeting` is the whole 220 line's text after `220 ` (its date and id come
    /// from the driver, which has the clock). `tls` is true on an implicit-TLS listener.
    pub fn new(greeting: &str, host: &str, client_ip: &str, tls: bool) -> Self {
        Self::with_role(Role::Exchange, greeting, host, client_ip, tls)
    }

    /// A connection's server side playing `role`; `greeting` as for [`SmtpServer::new`].
    pub fn with_role(role: Role, greeting: &str, host: &str, client_ip: &str, tls: bool) -> Self {
        let mut server = Self::session(role, host, client_ip, tls);
        server
            .out
            .extend_from_slice(format!("220 {greeting}\r\n").as_bytes());
        server
    }

    /// Exchange's session over TLS after STARTTLS: no greeting, nothing carried over from the plain part.
    pub fn after_tls(host: &str, client_ip: &str) -> Self {
        Self::session(Role::Exchange, host, client_ip, true)
    }

    /// The session over TLS after STARTTLS, for this connection's role, host and size bound: no greeting,
    /// nothing else carried over from the plain part (RFC 3207).
    pub fn into_tls(self) -> Self {
        let mut next = Self::session(self.role, &self.host, &self.client_ip, true);
        next.max_size = self.max_size;
        // Injected faults belong to the connection, not to the session TLS restarts.
        next.faults = self.faults;
        next
    }

    fn session(role: Role, host: &str, client_ip: &str, tls: bool) -> Self {
        Self {
            role,
            host: host.to_owned(),
            client_ip: client_ip.to_owned(),
            tls,
            lines: LineBuffer::new(MAX_LINE),
            out: Vec::new(),
            state: State::Command,
            greeted: false,
            authenticated: false,
            hello: None,
            login_user: None,
            pending_from: None,
            from: None,
            recipients: Vec::new(),
            data: Vec::new(),
            too_large: false,
            bare_line_ends: false,
            max_size: MAX_SIZE,
            events: Vec::new(),
            faults: CommandFaults::default(),
        }
    }

    /// The faults a test server injects into this session (applied to the commands read from now on).
    pub fn faults(&mut self) -> &mut CommandFaults {
        &mut self.faults
    }

    /// Ends a signed-in session whose access token expired: [`TOKEN_EXPIRED`], then the connection closes.
    /// A message being written is not submitted.
    pub fn token_expired(&mut self) {
        if self.authenticated && self.state != State::Closed {
            self.reply(TOKEN_EXPIRED);
            self.state = State::Closed;
        }
    }

    /// A smaller message size bound than the advertised 150 MB (a mailbox's MaxSendSize; tests).
    pub fn with_max_size(mut self, bytes: usize) -> Self {
        self.max_size = bytes.min(MAX_SIZE);
        self
    }

    /// Bytes from the client.
    pub fn receive(&mut self, bytes: &[u8]) {
        self.lines.extend(bytes);
        self.run();
    }

    /// The next decision for the driver.
    pub fn next_event(&mut self) -> Option<Event> {
        (!self.events.is_empty()).then(|| self.events.remove(0))
    }

    /// Bytes to write.
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    /// The name the client gave in EHLO / HELO, once it did.
    pub fn hello_name(&self) -> Option<&str> {
        self.hello.as_deref()
    }

    /// Whether this session runs over TLS.
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// Whether the connection is over (after QUIT or a fatal error).
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// Answers [`Event::Authenticate`].
    pub fn authenticated(&mut self, outcome: AuthOutcome) {
        if self.state != State::Waiting {
            return;
        }
        self.state = State::Command;
        let host = self.host.clone();
        match outcome {
            AuthOutcome::Accepted => {
                self.authenticated = true;
                self.reply("235 2.7.0 Authentication successful");
            }
            AuthOutcome::Refused => self.reply(&format!("535 5.7.3 Authentication unsuccessful [{host}]")),
            AuthOutcome::SmtpAuthDisabled => self.reply(&format!(
                "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant. \
                 Visit https://aka.ms/smtp_auth_disabled for more information. [{host}]"
            )),
            AuthOutcome::Denied(reply) => self.reply(&reply.line()),
        }
        self.run();
    }

    /// Answers [`Event::Mail`]: `None` accepts the sender (`250 2.1.0 Sender OK`), a reply refuses it.
    pub fn mail_answered(&mut self, refusal: Option<Reply>) {
        if self.state != State::Waiting || self.pending_from.is_none() {
            return;
        }
        self.state = State::Command;
        let from = self.pending_from.take();
        match refusal {
            None => {
                self.from = from;
                self.recipients.clear();
                self.reply("250 2.1.0 Sender OK");
            }
            Some(reply) => self.reply(&reply.line()),
        }
        self.run();
    }

    /// Answers [`Event::Submit`].
    pub fn submitted(&mut self, outcome: SubmitOutcome) {
        if self.state != State::Waiting {
            return;
        }
        self.state = State::Command;
        let from = self.from.take().unwrap_or_default();
        self.recipients.clear();
        let host = self.host.clone();
        match outcome {
            SubmitOutcome::Accepted { message_id } => {
                self.reply(&format!("250 2.0.0 OK <{message_id}> [Hostname={host}]"));
            }
            SubmitOutcome::SendAsDenied { who } => self.reply(&format!(
                "554 5.2.252 SendAsDenied; {who} not allowed to send as {from}; \
                 STOREDRV.Submission.Exception:SendAsDeniedException.MapiExceptionSendAsDenied; Failed to \
                 process message due to a permanent exception with message [BeginDiagnosticData]Cannot submit \
                 message."
            )),
            SubmitOutcome::Refused(reply) => self.reply(&reply.line()),
        }
        self.run();
    }

    fn reply(&mut self, line: &str) {
        self.out.extend_from_slice(line.as_bytes());
        self.out.extend_from_slice(b"\r\n");
    }

    fn run(&mut self) {
        loop {
            match self.state {
                State::Waiting | State::Closed => return,
                State::Data => {
                    if !self.data_lines() {
                        return;
                    }
                }
                _ => {
                    let line = match self.lines.next_line() {
                        Ok(Some(line)) => line,
                        Ok(None) => return,
                        Err(_) => {
                            self.reply("500 5.3.3 Line too long");
                            self.state = State::Closed;
                            return;
                        }
                    };
                    let line = String::from_utf8_lossy(&line).into_owned();
                    match self.state {
                        State::AuthResponse => self.auth_response(line.trim()),
                        State::PlainResponse => self.plain_response(line.trim()),
                        State::LoginUser => self.login_user(line.trim()),
                        State::LoginPassword => self.login_password(line.trim()),
                        // A relay passes addresses on: a stray CR or other control byte in a command is
                        // refused, never parsed around.
                        _ if self.is_relay()
                            && line.chars().any(|c| c.is_control() && c != '\t') =>
                        {
                            self.reply("501 5.5.2 Syntax error: control characters in the command");
                        }
                        _ => match self.faults.on_command() {
                            None => self.command(&line),
                            Some(CommandFault::Fail) => self.reply(TRANSIENT_FAILURE),
                            Some(CommandFault::Drop) => self.state = State::Closed,
                        },
                    }
                }
            }
        }
    }

    /// Reads DATA lines; true when the final `.` was read (an event is out or the message was refused).
    fn data_lines(&mut self) -> bool {
        loop {
            let line = match self.lines.next_line() {
                Ok(Some(line)) => line,
                Ok(None) => return false,
                Err(_) => {
                    // A line over the bound inside DATA: the message is refused, the session ends.
                    self.reply("500 5.3.3 Line too long");
                    self.state = State::Closed;
                    return true;
                }
            };
            // A relay passes the message on: a bare CR or LF could end the data early at a server that takes
            // them (SMTP smuggling), so such a message is refused, and only CRLF "." CRLF ends the data.
            let strict = self.is_relay();
            let bare = strict && (!self.lines.last_line_had_crlf() || line.contains(&b'\r'));
            if line == b"." && !bare {
                if self.bare_line_ends {
                    self.bare_line_ends = false;
                    self.too_large = false;
                    self.data.clear();
                    self.from = None;
                    self.recipients.clear();
                    self.state = State::Command;
                    self.reply("550 5.6.11 Bare CR or LF in the message; send CRLF line endings");
                    return true;
                }
                if self.too_large {
                    self.too_large = false;
                    self.data.clear();
                    self.from = None;
                    self.recipients.clear();
                    self.state = State::Command;
                    self.reply("552 5.3.4 Message size exceeds fixed maximum message size");
                    return true;
                }
                self.state = State::Waiting;
                let data = std::mem::take(&mut self.data);
                self.events.push(Event::Submit {
                    from: self.from.clone().unwrap_or_default(),
                    recipients: self.recipients.clone(),
                    data,
                });
                return true;
            }
            if bare {
                self.bare_line_ends = true;
                self.data.clear();
                continue;
            }
            let line = line.strip_prefix(b".").unwrap_or(&line);
            if self.data.len() + line.len() + 2 > self.max_size {
                self.too_large = true;
                self.data.clear();
                continue;
            }
            if !self.too_large && !self.bare_line_ends {
                self.data.extend_from_slice(line);
                self.data.extend_from_slice(b"\r\n");
            }
        }
    }

    fn is_relay(&self) -> bool {
        matches!(self.role, Role::Relay(_))
    }

    /// Whether AUTH may be used now: over TLS, or where the relay's policy allows it without.
    fn auth_allowed(&self) -> bool {
        self.tls
            || matches!(
                self.role,
                Role::Relay(RelayPolicy {
                    auth_without_tls: true,
                    ..
                })
            )
    }

    fn plain_response(&mut self, line: &str) {
        self.state = State::Command;
        if line == "*" {
            return self.reply("501 5.0.0 Authentication cancelled");
        }
        match plain_credentials(line) {
            Some((user, password)) => {
                self.state = State::Waiting;
                self.events.push(Event::Login { user, password });
            }
            None => self.reply("501 5.5.2 Cannot decode the AUTH PLAIN response"),
        }
    }

    fn login_user(&mut self, line: &str) {
        if self.is_relay() {
            if line == "*" {
                self.state = State::Command;
                return self.reply("501 5.0.0 Authentication cancelled");
            }
            let Some(user) = login_line(line).filter(|u| !u.is_empty() && u.len() <= MAX_USER)
            else {
                self.state = State::Command;
                return self.reply("501 5.5.2 Cannot decode the AUTH LOGIN response");
            };
            self.login_user = Some(user);
        }
        self.state = State::LoginPassword;
        self.reply("334 UGFzc3dvcmQ6");
    }

    fn login_password(&mut self, line: &str) {
        self.state = State::Command;
        if !self.is_relay() {
            return self
                .reply("550 5.7.30 Basic authentication is not supported for Client Submission.");
        }
        let user = self.login_user.take().unwrap_or_default();
        if line == "*" {
            return self.reply("501 5.0.0 Authentication cancelled");
        }
        match login_line(line) {
            Some(password) => {
                self.state = State::Waiting;
                self.events.push(Event::Login { user, password });
            }
            None => self.reply("501 5.5.2 Cannot decode the AUTH LOGIN response"),
        }
    }

    /// `AUTH …` in the relay role.
    fn relay_auth(&mut self, rest: &str) {
        if self.authenticated {
            return self.reply("503 5.5.1 Already authenticated");
        }
        if !self.auth_allowed() {
            return self.reply("530 5.7.0 Must issue a STARTTLS command first");
        }
        let mut words = rest.split_whitespace();
        let mechanism = words.next().unwrap_or("").to_ascii_uppercase();
        match (mechanism.as_str(), words.next()) {
            ("PLAIN", Some(initial)) => self.plain_response(initial),
            ("PLAIN", None) => {
                self.state = State::PlainResponse;
                self.reply("334 ");
            }
            ("LOGIN", Some(initial)) => self.login_user(initial),
            ("LOGIN", None) => {
                self.state = State::LoginUser;
                self.reply("334 VXNlcm5hbWU6");
            }
            _ => self.reply("504 5.5.4 Unrecognized authentication type"),
        }
    }

    /// `MAIL FROM:` in the relay role: the size bound first, then the driver decides on the sender.
    fn relay_mail(&mut self, rest: &str) {
        if !self.authenticated {
            return self.reply("530 5.7.0 Authentication required");
        }
        if self.from.is_some() {
            return self.reply("503 5.5.1 Sender already specified; RSET first");
        }
        let Some(from) = path(rest, "FROM:").filter(|f| !f.is_empty() && f.len() <= MAX_PATH)
        else {
            return self.reply("501 5.1.7 Invalid address");
        };
        let declared_size = match declared_size(rest) {
            Ok(size) => size,
            Err(()) => return self.reply("501 5.5.4 Invalid SIZE parameter"),
        };
        if declared_size.is_some_and(|size| size > self.max_size) {
            return self.reply("552 5.3.4 Message size exceeds fixed maximum message size");
        }
        self.state = State::Waiting;
        self.pending_from = Some(from.clone());
        self.events.push(Event::Mail {
            from,
            declared_size,
        });
    }

    fn auth_response(&mut self, line: &str) {
        if line == "*" {
            self.state = State::Command;
            return self.reply("501 5.0.0 Authentication cancelled");
        }
        match xoauth2::decode(line) {
            Ok(auth) => {
                self.state = State::Waiting;
                self.events.push(Event::Authenticate {
                    user: auth.user,
                    token: auth.token,
                });
            }
            Err(_) => {
                self.state = State::Command;
                let host = self.host.clone();
                self.reply(&format!("535 5.7.3 Authentication unsuccessful [{host}]"));
            }
        }
    }

    fn command(&mut self, line: &str) {
        let (verb, rest) = match line.split_once(' ') {
            Some((verb, rest)) => (verb.to_ascii_uppercase(), rest.trim()),
            None => (line.trim().to_ascii_uppercase(), ""),
        };
        match verb.as_str() {
            "EHLO" | "HELO" => {
                if rest.is_empty() || rest.chars().any(|c| c.is_control() || c.is_whitespace()) {
                    let host = self.host.clone();
                    return self.reply(&format!("501 5.5.4 Invalid domain name [{host}]"));
                }
                self.greeted = true;
                self.hello = Some(rest.to_owned());
                self.from = None;
                self.recipients.clear();
                if verb == "HELO" {
                    let host = self.host.clone();
                    let ip = self.client_ip.clone();
                    return self.reply(&format!("250 {host} Hello [{ip}]"));
                }
                let text = match self.role {
                    Role::Exchange => ehlo(&self.host, &self.client_ip, self.tls),
                    Role::Relay(policy) => {
                        relay_ehlo(&self.host, &self.client_ip, self.tls, policy, self.max_size)
                    }
                };
                self.out.extend_from_slice(text.as_bytes());
            }
            "STARTTLS"
                if !self.tls
                    && match self.role {
                        Role::Exchange => true,
                        Role::Relay(policy) => policy.starttls,
                    } =>
            {
                self.reply("220 2.0.0 SMTP server ready");
                // Whatever the client pipelined in clear text is dropped with this session.
                self.state = State::Waiting;
                self.events.push(Event::StartTls);
            }
            "AUTH" if self.is_relay() => self.relay_auth(rest),
            "MAIL" if self.is_relay() => self.relay_mail(rest),
            "AUTH" if self.tls && !self.authenticated => {
                let mut words = rest.split_whitespace();
                let mechanism = words.next().unwrap_or("").to_ascii_uppercase();
                match (mechanism.as_str(), words.next()) {
                    ("XOAUTH2", Some(initial)) => self.auth_response(initial),
                    ("XOAUTH2", None) => {
                        self.state = State::AuthResponse;
                        self.reply("334 ");
                    }
                    ("LOGIN", _) => {
                        self.state = State::LoginUser;
                        self.reply("334 VXNlcm5hbWU6");
                    }
                    _ => self.reply("504 5.7.4 Unrecognized authentication type"),
                }
            }
            "AUTH" if self.authenticated => self.reply("503 5.5.2 Already authenticated"),
            "AUTH" => self.reply("504 5.7.4 Unrecognized authentication type"),
            "MAIL" => {
                if !self.authenticated {
                    return self.reply(
                        "530 5.7.57 SMTP; Client was not authenticated to send anonymous mail during MAIL FROM",
                    );
                }
                match path(rest, "FROM:") {
                    Some(from) if !from.is_empty() => {
                        self.from = Some(from);
                        self.recipients.clear();
                        self.reply("250 2.1.0 Sender OK");
                    }
                    _ => self.reply("501 5.1.7 Invalid address"),
                }
            }
            "RCPT" => match (&self.from, path(rest, "TO:")) {
                (None, _) => self.reply("503 5.5.1 Need mail command"),
                (Some(_), Some(to))
                    if !to.is_empty() && (!self.is_relay() || to.len() <= MAX_PATH) =>
                {
                    if self.recipients.len() >= MAX_RECIPIENTS {
                        return self.reply("452 4.5.3 Too many recipients");
                    }
                    self.recipients.push(to);
                    self.reply("250 2.1.5 Recipient OK");
                }
                _ => self.reply("501 5.1.3 Invalid address"),
            },
            "DATA" => {
                if self.from.is_none() || self.recipients.is_empty() {
                    return self.reply("503 5.5.1 Need rcpt command");
                }
                self.state = State::Data;
                self.data.clear();
                self.reply("354 Start mail input; end with <CRLF>.<CRLF>");
            }
            "RSET" => {
                self.from = None;
                self.recipients.clear();
                self.reply("250 2.0.0 Resetting");
            }
            "NOOP" => self.reply("250 2.0.0 OK"),
            "QUIT" => {
                self.reply("221 2.0.0 Service closing transmission channel");
                self.state = State::Closed;
            }
            _ => self.reply("500 5.3.3 Unrecognized command"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signed_in() -> SmtpServer {
        let mut server = SmtpServer::after_tls("host", "127.0.0.1").with_max_size(20);
        let response = crate::xoauth2::encode("a@b.test", "t").unwrap();
        server.receive(format!("EHLO x\r\nAUTH XOAUTH2 {response}\r\n").as_bytes());
        assert!(matches!(
            server.next_event(),
            Some(Event::Authenticate { .. })
        ));
        server.authenticated(AuthOutcome::Accepted);
        server.take_output();
        server
    }

    #[test]
    fn a_message_over_the_size_bound_is_refused_and_the_session_goes_on() {
        let mut server = signed_in();
        server.receive(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nDATA\r\n");
        server.receive(b"Subject: far too long for twenty bytes\r\n\r\nbody\r\n.\r\nNOOP\r\n");
        assert_eq!(server.next_event(), None);
        let out = String::from_utf8(server.take_output()).unwrap();
        assert!(
            out.ends_with(
                "552 5.3.4 Message size exceeds fixed maximum message size\r\n250 2.0.0 OK\r\n"
            ),
            "{out}"
        );
    }

    #[test]
    fn nothing_is_read_while_a_decision_waits() {
        let mut server = SmtpServer::after_tls("host", "127.0.0.1");
        let response = crate::xoauth2::encode("a@b.test", "t").unwrap();
        server.receive(
            format!("EHLO x\r\nAUTH XOAUTH2 {response}\r\nMAIL FROM:<a@b.test>\r\n").as_bytes(),
        );
        assert!(matches!(
            server.next_event(),
            Some(Event::Authenticate { .. })
        ));
        let before = String::from_utf8(server.take_output()).unwrap();
        assert!(
            !before.contains("2.1.0"),
            "MAIL answered before AUTH was decided: {before}"
        );
        server.authenticated(AuthOutcome::Accepted);
        assert_eq!(
            String::from_utf8(server.take_output()).unwrap(),
            "235 2.7.0 Authentication successful\r\n250 2.1.0 Sender OK\r\n"
        );
    }
}
