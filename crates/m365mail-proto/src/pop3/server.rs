//! The POP3 server core: bytes in, replies and [`Event`]s out, no I/O. It speaks as Exchange Online does
//! (microsoft.md §7.5): the CAPA list verbatim, `AUTH XOAUTH2` only in the two-line form (the one-line form
//! closes the connection with `-ERR Protocol error. Connection is closed. 10`), Exchange's success and failure
//! lines.
//!
//! Decisions belong to the driver: [`Event::Authenticate`] asks whether a user and token open a maildrop
//! ([`Pop3Server::authenticated`]); [`Event::Retrieve`] asks for a message's bytes ([`Pop3Server::deliver`]);
//! [`Event::Commit`] says which messages QUIT deletes. While an event waits for its answer no further command
//! is read, so a pipelining client cannot get ahead of a decision.

use std::fmt;

use crate::fault::{CommandFault, CommandFaults};
use crate::line::LineBuffer;
use crate::pop3::dot_stuff;
use crate::xoauth2;

/// Exchange's CAPA answer (microsoft.md §7.5, verbatim from a client log; the `+OK` carries no text).
pub const CAPA: &str = "+OK\r\nTOP\r\nUIDL\r\nSASL PLAIN XOAUTH2\r\nUSER\r\n.\r\n";
/// After a good XOAUTH2 response.
pub const AUTH_OK: &str = "+OK User successfully authenticated.\r\n";
/// After a refused token.
pub const AUTH_FAILED: &str = "-ERR Authentication failure: unknown user name or bad password.\r\n";
/// `AUTH XOAUTH2 <response>` on one line; the connection is then closed.
pub const ONE_LINE_AUTH: &str = "-ERR Protocol error. Connection is closed. 10\r\n";
/// QUIT (microsoft.md §7.5, verbatim from a trace).
pub const SIGN_OFF: &str = "+OK Microsoft Exchange Server 2016 POP3 server signing off.\r\n";
/// A command the state does not allow, or an unknown one.
pub const PROTOCOL_ERROR: &str = "-ERR Protocol error.\r\n";
/// USER/PASS: Basic authentication is off for OAuth-only tenants.
pub const LOGON_FAILURE: &str = "-ERR Logon failure: unknown user name or bad password.\r\n";

/// The longest command line read (RFC 2449 allows 255 octets; an XOAUTH2 response is far longer).
pub const MAX_LINE: usize = 16 * 1024;

/// One message of an opened maildrop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageInfo {
    /// The unique id (UIDL), stable across sessions.
    pub uid: String,
    /// The size in octets (as the message is sent, CRLF line endings).
    pub size: u64,
}

/// What the driver must decide.
#[derive(Clone, PartialEq, Eq)]
pub enum Event {
    /// A client sent an XOAUTH2 response: answer with [`Pop3Server::authenticated`].
    Authenticate {
        /// `user=`.
        user: String,
        /// The bearer token (a secret: not shown by `Debug`).
        token: String,
    },
    /// RETR (`top: None`) or TOP: answer with [`Pop3Server::deliver`].
    Retrieve {
        /// The message's index in the maildrop (from 0).
        index: usize,
        /// Its uid.
        uid: String,
        /// TOP's line count.
        top: Option<usize>,
    },
    /// QUIT in the transaction state: delete these messages (uids). The sign-off is already queued.
    Commit {
        /// Uids marked with DELE.
        deleted: Vec<String>,
    },
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Authenticate { user, .. } => f
                .debug_struct("Authenticate")
                .field("user", user)
                .field("token", &"[redacted]")
                .finish(),
            Self::Retrieve { index, uid, top } => f
                .debug_struct("Retrieve")
                .field("index", index)
                .field("uid", uid)
                .field("top", top)
                .finish(),
            Self::Commit { deleted } => f.debug_struct("Commit").field("deleted", deleted).finish(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Authorization,
    /// `AUTH XOAUTH2` was read and `+ ` sent: the next line is the response.
    AuthResponse,
    /// `AUTH PLAIN` (advertised in CAPA) was read and `+ ` sent: the response is refused as Basic
    /// authentication is (our choice: §7.5 does not quote Exchange's answer).
    PlainResponse,
    /// [`Event::Authenticate`] is out.
    Authenticating,
    Transaction,
    /// [`Event::Retrieve`] is out.
    Retrieving,
    Closed,
}

/// One POP3 connection's server side.
pub struct Pop3Server {
    lines: LineBuffer,
    out: Vec<u8>,
    state: State,
    maildrop: Vec<MessageInfo>,
    deleted: Vec<bool>,
    events: Vec<Event>,
    faults: CommandFaults,
}

/// The answer to a command refused by an injected fault ([`CommandFaults::fail_next`]; our wording, Exchange's
/// transient POP3 failure is not on record in microsoft.md §7.5).
pub const TRANSIENT_FAILURE: &str = "-ERR Server Unavailable. 21\r\n";
/// How a session whose access token expired ends ([`Pop3Server::token_expired`]; our wording, after the IMAP
/// service's `* BYE Session invalidated - AccessTokenExpired`).
pub const TOKEN_EXPIRED: &str = "-ERR Session invalidated - AccessTokenExpired\r\n";

impl fmt::Debug for Pop3Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pop3Server")
            .field("state", &self.state)
            .field("messages", &self.maildrop.len())
            .finish_non_exhaustive()
    }
}

impl Pop3Server {
    /// A connection that greets with `greeting` (the text after `+OK `).
    pub fn new(greeting: &str) -> Self {
        let mut server = Self {
            lines: LineBuffer::new(MAX_LINE),
            out: Vec::new(),
            state: State::Authorization,
            maildrop: Vec::new(),
            deleted: Vec::new(),
            events: Vec::new(),
            faults: CommandFaults::default(),
        };
        server.reply(&format!("+OK {greeting}\r\n"));
        server
    }

    /// Takes bytes from the client and runs every command that can run now.
    pub fn receive(&mut self, bytes: &[u8]) {
        if self.state == State::Closed {
            return;
        }
        self.lines.extend(bytes);
        self.run();
    }

    /// The next decision the driver must make, if any.
    pub fn next_event(&mut self) -> Option<Event> {
        (!self.events.is_empty()).then(|| self.events.remove(0))
    }

    /// Bytes to send to the client.
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    /// Whether the connection is over (after QUIT or a fatal protocol error); the driver closes it once the
    /// output is sent.
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// The faults a test server injects into this session (applied to the commands read from now on).
    pub fn faults(&mut self) -> &mut CommandFaults {
        &mut self.faults
    }

    /// Ends a signed-in session whose access token expired: [`TOKEN_EXPIRED`], then the connection closes
    /// (nothing is deleted: the UPDATE state is never reached).
    pub fn token_expired(&mut self) {
        if self.is_authenticated() {
            self.close(TOKEN_EXPIRED);
        }
    }

    /// Whether the client authenticated.
    pub fn is_authenticated(&self) -> bool {
        matches!(self.state, State::Transaction | State::Retrieving)
    }

    /// The answer to [`Event::Authenticate`]: the maildrop, or the `-ERR …` line to send (e.g. [`AUTH_FAILED`]).
    pub fn authenticated(&mut self, result: Result<Vec<MessageInfo>, String>) {
        if self.state != State::Authenticating {
            return;
        }
        match result {
            Ok(maildrop) => {
                self.deleted = vec![false; maildrop.len()];
                self.maildrop = maildrop;
                self.state = State::Transaction;
                self.reply(AUTH_OK);
            }
            Err(line) => {
                self.state = State::Authorization;
                let line = line.trim_end_matches(['\r', '\n']);
                self.reply(&format!("{line}\r\n"));
            }
        }
        self.run();
    }

    /// The answer to [`Event::Retrieve`]: the message's bytes (dot-stuffed here), or `None` when it can no
    /// longer be read.
    pub fn deliver(&mut self, message: Option<&[u8]>, top: Option<usize>) {
        if self.state != State::Retrieving {
            return;
        }
        self.state = State::Transaction;
        match message {
            Some(bytes) => {
                let body = dot_stuff(bytes, top);
                self.reply(&format!("+OK {} octets\r\n", bytes.len()));
                self.out.extend_from_slice(&body);
            }
            None => self.reply("-ERR The message is no longer available.\r\n"),
        }
        self.run();
    }

    fn reply(&mut self, text: &str) {
        self.out.extend_from_slice(text.as_bytes());
    }

    fn close(&mut self, text: &str) {
        self.reply(text);
        self.state = State::Closed;
    }

    fn run(&mut self) {
        while matches!(
            self.state,
            State::Authorization | State::AuthResponse | State::PlainResponse | State::Transaction
        ) {
            let line = match self.lines.next_line() {
                Ok(Some(line)) => line,
                Ok(None) => return,
                Err(_) => return self.close(PROTOCOL_ERROR),
            };
            let Ok(line) = String::from_utf8(line) else {
                self.reply(PROTOCOL_ERROR);
                continue;
            };
            match self.state {
                State::AuthResponse => self.auth_response(&line),
                State::PlainResponse => {
                    self.state = State::Authorization;
                    if line == "*" {
                        self.reply("-ERR Authentication canceled.\r\n");
                    } else {
                        self.reply(LOGON_FAILURE);
                    }
                }
                _ => match self.faults.on_command() {
                    Some(CommandFault::Fail) => self.reply(TRANSIENT_FAILURE),
                    Some(CommandFault::Drop) => self.state = State::Closed,
                    None if self.state == State::Authorization => self.authorization(&line),
                    None => self.transaction(&line),
                },
            }
        }
    }

    fn auth_response(&mut self, line: &str) {
        if line == "*" {
            // RFC 5034: the client cancels the exchange.
            self.state = State::Authorization;
            return self.reply("-ERR Authentication canceled.\r\n");
        }
        match xoauth2::decode(line) {
            Ok(auth) => {
                self.state = State::Authenticating;
                self.events.push(Event::Authenticate {
                    user: auth.user,
                    token: auth.token,
                });
            }
            Err(_) => {
                self.state = State::Authorization;
                self.reply(AUTH_FAILED);
            }
        }
    }

    fn authorization(&mut self, line: &str) {
        let (verb, rest) = split(line);
        match verb.as_str() {
            "CAPA" => self.reply(CAPA),
            "QUIT" => self.close(SIGN_OFF),
            "AUTH" => {
                let mut words = rest.split_whitespace();
                match (
                    words.next().map(str::to_ascii_uppercase).as_deref(),
                    words.next(),
                ) {
                    (Some("XOAUTH2"), None) => {
                        self.state = State::AuthResponse;
                        self.reply("+ \r\n");
                    }
                    (Some("XOAUTH2"), Some(_)) => self.close(ONE_LINE_AUTH),
                    // PLAIN is advertised: a client that picks it gets the Basic-auth failure line, which
                    // says what is wrong, rather than "unrecognized".
                    (Some("PLAIN"), None) => {
                        self.state = State::PlainResponse;
                        self.reply("+ \r\n");
                    }
                    (Some("PLAIN"), Some(_)) => self.reply(LOGON_FAILURE),
                    _ => self.reply("-ERR Unrecognized authentication type.\r\n"),
                }
            }
            "USER" => self.reply("+OK\r\n"),
            "PASS" => self.reply(LOGON_FAILURE),
            _ => self.reply(PROTOCOL_ERROR),
        }
    }

    fn transaction(&mut self, line: &str) {
        let (verb, rest) = split(line);
        let args: Vec<&str> = rest.split_whitespace().collect();
        match (verb.as_str(), args.as_slice()) {
            ("STAT", []) => {
                let (count, size) = self
                    .live()
                    .fold((0, 0), |(n, s), (_, m)| (n + 1, s + m.size));
                self.reply(&format!("+OK {count} {size}\r\n"));
            }
            ("LIST", []) => self.listing(|m| m.size.to_string()),
            ("UIDL", []) => self.listing(|m| m.uid.clone()),
            ("LIST" | "UIDL", [n]) => match self.message(n) {
                Ok(index) => {
                    let m = &self.maildrop[index];
                    let value = if verb == "LIST" {
                        m.size.to_string()
                    } else {
                        m.uid.clone()
                    };
                    self.reply(&format!("+OK {} {value}\r\n", index + 1));
                }
                Err(e) => self.reply(&e),
            },
            ("RETR", [n]) => self.retrieve(n, None),
            ("TOP", [n, lines]) => match lines.parse::<usize>() {
                Ok(lines) => self.retrieve(n, Some(lines)),
                Err(_) => self.reply(PROTOCOL_ERROR),
            },
            ("DELE", [n]) => match self.message(n) {
                Ok(index) => {
                    self.deleted[index] = true;
                    self.reply("+OK\r\n");
                }
                Err(e) => self.reply(&e),
            },
            ("RSET", []) => {
                self.deleted.iter_mut().for_each(|d| *d = false);
                self.reply("+OK\r\n");
            }
            ("NOOP", []) => self.reply("+OK\r\n"),
            ("QUIT", []) => {
                let deleted = self
                    .maildrop
                    .iter()
                    .zip(&self.deleted)
                    .filter(|(_, d)| **d)
                    .map(|(m, _)| m.uid.clone())
                    .collect();
                self.close(SIGN_OFF);
                self.events.push(Event::Commit { deleted });
            }
            ("CAPA", []) => self.reply(CAPA),
            _ => self.reply(PROTOCOL_ERROR),
        }
    }

    fn live(&self) -> impl Iterator<Item = (usize, &MessageInfo)> {
        self.maildrop
            .iter()
            .enumerate()
            .filter(|(i, _)| !self.deleted[*i])
    }

    fn listing(&mut self, value: impl Fn(&MessageInfo) -> String) {
        let mut text = String::from("+OK\r\n");
        for (index, m) in self.live() {
            text.push_str(&format!("{} {}\r\n", index + 1, value(m)));
        }
        text.push_str(".\r\n");
        self.reply(&text);
    }

    /// The index of message number `n` (from 1), if it exists and is not deleted.
    fn message(&self, n: &str) -> Result<usize, String> {
        let index = n
            .parse::<usize>()
            .ok()
            .and_then(|n| n.checked_sub(1))
            .filter(|i| *i < self.maildrop.len())
            .ok_or_else(|| "-ERR No such message.\r\n".to_owned())?;
        if self.deleted[index] {
            return Err("-ERR The message has been deleted.\r\n".to_owned());
        }
        Ok(index)
    }

    fn retrieve(&mut self, n: &str, top: Option<usize>) {
        match self.message(n) {
            Ok(index) => {
                self.state = State::Retrieving;
                self.events.push(Event::Retrieve {
                    index,
                    uid: self.maildrop[index].uid.clone(),
                    top,
                });
            }
            Err(e) => self.reply(&e),
        }
    }
}

/// The verb (upper-cased) and the rest of a command line.
fn split(line: &str) -> (String, &str) {
    let (verb, rest) = line.split_once(' ').unwrap_or((line, ""));
    (verb.to_ascii_uppercase(), rest)
}
