//! The POP3 client core: commands in, wire bytes out; server bytes in, [`Event`]s out. No I/O.
//!
//! It speaks RFC 1939 (with CAPA, RFC 2449, and AUTH, RFC 5034) the way Exchange Online needs it
//! (microsoft.md §7.5): `AUTH XOAUTH2` in the two-line form (a `+` continuation with or without a trailing
//! space), and — for servers such as Dovecot that answer a bad token with `+ <base64 JSON>` — the empty
//! response that lets the server send its failure line (§7.3).
//!
//! Every reply is bounded: status and listing lines ([`Limits::max_line`]), listing entries
//! ([`Limits::max_entries`]) and message bodies ([`Limits::max_message`]). A message body is streamed as
//! [`Event::MessageData`] chunks, dot-unstuffed, whatever its line lengths; it is never held whole here.
//! Anything the server sends that the protocol does not allow at that point is a [`Pop3ClientError`] and
//! ends the session: a client that guesses would risk acting on the wrong message.

use std::collections::VecDeque;
use std::fmt;

/// Bounds on what the server may send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest status or listing line, without CRLF (RFC 2449 allows 512 octets for a status line).
    pub max_line: usize,
    /// Most entries in one CAPA, UIDL or LIST answer.
    pub max_entries: usize,
    /// Most bytes in one CAPA, UIDL or LIST answer (entries × line length could otherwise reach gigabytes).
    pub max_listing_bytes: usize,
    /// Largest message body (RETR or TOP), after dot-unstuffing.
    pub max_message: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_line: 4096,
            max_entries: 1_000_000,
            max_listing_bytes: 64 * 1024 * 1024,
            max_message: 200 * 1024 * 1024,
        }
    }
}

/// A command's name, as events and errors report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verb {
    /// The server's greeting (not a command).
    Greeting,
    /// `CAPA`.
    Capa,
    /// `STLS`.
    Stls,
    /// `AUTH XOAUTH2`.
    Auth,
    /// `STAT`.
    Stat,
    /// `UIDL`.
    Uidl,
    /// `LIST`.
    List,
    /// `RETR n`.
    Retr,
    /// `TOP n lines`.
    Top,
    /// `DELE n`.
    Dele,
    /// `RSET`.
    Rset,
    /// `NOOP`.
    Noop,
    /// `QUIT`.
    Quit,
}

impl fmt::Display for Verb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Greeting => "greeting",
            Self::Capa => "CAPA",
            Self::Stls => "STLS",
            Self::Auth => "AUTH XOAUTH2",
            Self::Stat => "STAT",
            Self::Uidl => "UIDL",
            Self::List => "LIST",
            Self::Retr => "RETR",
            Self::Top => "TOP",
            Self::Dele => "DELE",
            Self::Rset => "RSET",
            Self::Noop => "NOOP",
            Self::Quit => "QUIT",
        })
    }
}

/// A command to send.
#[derive(Clone, PartialEq, Eq)]
pub enum Command {
    /// `CAPA`.
    Capa,
    /// `STLS`: after its `+OK` the driver starts TLS on the same connection.
    Stls,
    /// `AUTH XOAUTH2` in the two-line form; `response` is the base64 XOAUTH2 string
    /// ([`crate::xoauth2::encode`]), sent after the server's `+`. It holds a bearer token: `Debug` hides it.
    AuthXoauth2 {
        /// The base64 initial response.
        response: String,
    },
    /// `STAT`.
    Stat,
    /// `UIDL` (every message).
    Uidl,
    /// `LIST` (every message).
    List,
    /// `RETR n` (from 1).
    Retr(u32),
    /// `TOP n lines`: the header and the first `lines` body lines.
    Top(u32, u32),
    /// `DELE n`.
    Dele(u32),
    /// `RSET`.
    Rset,
    /// `NOOP`.
    Noop,
    /// `QUIT`: in the transaction state this commits the deletions.
    Quit,
}

impl Command {
    /// The command's name.
    pub fn verb(&self) -> Verb {
        match self {
            Self::Capa => Verb::Capa,
            Self::Stls => Verb::Stls,
            Self::AuthXoauth2 { .. } => Verb::Auth,
            Self::Stat => Verb::Stat,
            Self::Uidl => Verb::Uidl,
            Self::List => Verb::List,
            Self::Retr(_) => Verb::Retr,
            Self::Top(..) => Verb::Top,
            Self::Dele(_) => Verb::Dele,
            Self::Rset => Verb::Rset,
            Self::Noop => Verb::Noop,
            Self::Quit => Verb::Quit,
        }
    }
}

impl fmt::Debug for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::AuthXoauth2 { .. } => f
                .debug_struct("AuthXoauth2")
                .field("response", &"[redacted]")
                .finish(),
            Self::Retr(n) => write!(f, "Retr({n})"),
            Self::Top(n, lines) => write!(f, "Top({n}, {lines})"),
            Self::Dele(n) => write!(f, "Dele({n})"),
            other => write!(f, "{}", other.verb()),
        }
    }
}

/// What the server said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The `+OK` greeting, with its text.
    Greeting {
        /// The text after `+OK`.
        text: String,
    },
    /// CAPA's lines.
    Capabilities(Vec<String>),
    /// `AUTH XOAUTH2` succeeded.
    Authenticated {
        /// The text after `+OK`.
        text: String,
    },
    /// STAT's answer.
    Stat {
        /// Messages in the maildrop.
        count: u32,
        /// Their total size in octets.
        size: u64,
    },
    /// UIDL's answer: message number and unique id, in the server's order.
    UniqueIds(Vec<(u32, String)>),
    /// LIST's answer: message number and size in octets.
    Sizes(Vec<(u32, u64)>),
    /// RETR or TOP: the `+OK` line; [`Event::MessageData`] chunks and [`Event::MessageEnd`] follow.
    MessageStart {
        /// RETR or TOP.
        verb: Verb,
    },
    /// Message bytes, dot-unstuffed, in order.
    MessageData(Vec<u8>),
    /// The message's terminating `.` line was read.
    MessageEnd,
    /// `+OK` to STLS, DELE, RSET, NOOP or QUIT.
    Done {
        /// The command.
        verb: Verb,
        /// The text after `+OK`.
        text: String,
    },
    /// `-ERR` to a command (or the greeting).
    Refused {
        /// The command.
        verb: Verb,
        /// The text after `-ERR`.
        text: String,
        /// For `AUTH`: the decoded error challenge a server sent before failing (Dovecot, Gmail), if any.
        challenge: Option<String>,
    },
}

/// The server broke the protocol, or a command could not be sent. The session is over.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Pop3ClientError {
    /// A status or listing line exceeded [`Limits::max_line`].
    #[error("the server sent a line longer than {limit} bytes")]
    LineTooLong {
        /// The bound.
        limit: usize,
    },
    /// A reply that is neither `+OK` nor `-ERR` (nor `+` where AUTH allows it).
    #[error("the server answered {verb} with {line:?}, which is not a POP3 status line")]
    NotAStatus {
        /// The command answered.
        verb: Verb,
        /// The line (printable, cut at 200 characters).
        line: String,
    },
    /// A reply of the right kind whose content does not parse.
    #[error("the server's answer to {verb} is malformed ({what}): {line:?}")]
    Malformed {
        /// The command answered.
        verb: Verb,
        /// What was expected.
        what: &'static str,
        /// The line (printable, cut at 200 characters).
        line: String,
    },
    /// The server sent something while no command was waiting for an answer.
    #[error("the server sent {line:?} without being asked")]
    Unsolicited {
        /// The bytes (printable, cut at 200 characters).
        line: String,
    },
    /// A listing exceeded [`Limits::max_entries`].
    #[error("the server's {verb} answer has more than {limit} entries")]
    TooManyEntries {
        /// The command answered.
        verb: Verb,
        /// The bound.
        limit: usize,
    },
    /// A message body exceeded [`Limits::max_message`].
    #[error("the message is larger than {limit} bytes")]
    MessageTooLarge {
        /// The bound.
        limit: u64,
    },
    /// Bytes followed the `+OK` to STLS before TLS started (someone on the path injected them).
    #[error("{bytes} bytes arrived after the STLS answer and before TLS started")]
    DataAfterStls {
        /// How many.
        bytes: usize,
    },
    /// A command argument cannot be sent (message number 0, CR/LF or non-base64 in the AUTH response).
    #[error("cannot send {verb}: {reason}")]
    InvalidArgument {
        /// The command.
        verb: Verb,
        /// Why.
        reason: &'static str,
    },
    /// A command after QUIT or after an error.
    #[error("the POP3 session is closed")]
    Closed,
}

/// A wire line as text for an error: printable ASCII kept, anything else as `\xNN`, cut at 200 characters.
fn printable(bytes: &[u8]) -> String {
    let mut out = String::new();
    for &b in bytes.iter().take(200) {
        match b {
            0x20..=0x7e => out.push(b as char),
            other => out.push_str(&format!("\\x{other:02x}")),
        }
    }
    if bytes.len() > 200 {
        out.push('…');
    }
    out
}

/// `+OK`, `-ERR` or (AUTH only) `+`, each followed by its text.
enum Status {
    Ok(String),
    Err(String),
    Continue(String),
}

fn status(line: &[u8]) -> Option<Status> {
    let text = |rest: &[u8]| -> Option<String> {
        match rest.split_first() {
            None => Some(String::new()),
            Some((b' ', text)) => Some(String::from_utf8_lossy(text).into_owned()),
            Some(_) => None,
        }
    };
    if let Some(rest) = line.strip_prefix(b"+OK") {
        text(rest).map(Status::Ok)
    } else if let Some(rest) = line.strip_prefix(b"-ERR") {
        text(rest).map(Status::Err)
    } else if let Some(rest) = line.strip_prefix(b"+") {
        text(rest).map(Status::Continue)
    } else {
        None
    }
}

/// What the next server bytes answer.
enum Pending {
    Greeting,
    /// A single `+OK` / `-ERR` line (STLS, DELE, RSET, NOOP, QUIT).
    Simple(Verb),
    Stat,
    /// A status line, then (on `+OK`) lines up to `.` (CAPA, UIDL, LIST).
    Listing(Verb),
    /// A status line, then (on `+OK`) a message up to `.` (RETR, TOP).
    Message(Verb),
    /// `AUTH XOAUTH2` sent; on `+` the response goes out.
    AuthContinue(String),
    /// The response went out; `challenge` is set once an error challenge was answered.
    AuthResult(Option<String>),
}

/// Dot-unstuffing of a message body, one byte at a time so line length never matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unstuff {
    LineStart,
    /// `.` at a line start.
    Dot,
    /// `.\r` at a line start.
    DotCr,
    InLine,
}

enum Body {
    None,
    Lines {
        verb: Verb,
        entries: Vec<Vec<u8>>,
        bytes: usize,
    },
    Message {
        state: Unstuff,
        size: u64,
    },
}

/// One POP3 connection's client side.
pub struct Pop3Client {
    limits: Limits,
    input: Vec<u8>,
    out: Vec<u8>,
    pending: VecDeque<Pending>,
    body: Body,
    events: VecDeque<Event>,
    error: Option<Pop3ClientError>,
    closed: bool,
}

impl fmt::Debug for Pop3Client {
    // Neither the output (it may hold the XOAUTH2 response) nor the input is shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pop3Client")
            .field("pending", &self.pending.len())
            .field("buffered", &self.input.len())
            .field("closed", &self.closed)
            .finish()
    }
}

impl Default for Pop3Client {
    fn default() -> Self {
        Self::new(Limits::default())
    }
}

impl Pop3Client {
    /// A client that first expects the server's greeting.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            input: Vec::new(),
            out: Vec::new(),
            pending: VecDeque::from([Pending::Greeting]),
            body: Body::None,
            events: VecDeque::new(),
            error: None,
            closed: false,
        }
    }

    /// Queues `command` for sending ([`Pop3Client::take_output`]). Commands may be queued before earlier
    /// answers arrive (pipelining, RFC 2449); answers are matched in order.
    pub fn command(&mut self, command: Command) -> Result<(), Pop3ClientError> {
        if self.closed || self.error.is_some() {
            return Err(Pop3ClientError::Closed);
        }
        let verb = command.verb();
        // Nothing may follow STLS (it would go out in clear text) or AUTH (it would be read as the SASL
        // response) before their answers.
        if self.pending.iter().any(|p| {
            matches!(
                p,
                Pending::Simple(Verb::Stls) | Pending::AuthContinue(_) | Pending::AuthResult(_)
            )
        }) {
            return Err(Pop3ClientError::InvalidArgument {
                verb,
                reason: "wait for the answer to STLS or AUTH before the next command",
            });
        }
        let number = |n: u32| {
            if n == 0 {
                Err(Pop3ClientError::InvalidArgument {
                    verb,
                    reason: "message numbers start at 1",
                })
            } else {
                Ok(n)
            }
        };
        let (line, pending) = match command {
            Command::Capa => ("CAPA".to_string(), Pending::Listing(verb)),
            Command::Stls => ("STLS".to_string(), Pending::Simple(verb)),
            Command::AuthXoauth2 { response } => {
                let base64 = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=');
                if response.is_empty() || !response.bytes().all(base64) {
                    return Err(Pop3ClientError::InvalidArgument {
                        verb,
                        reason: "the XOAUTH2 response must be non-empty base64",
                    });
                }
                ("AUTH XOAUTH2".to_string(), Pending::AuthContinue(response))
            }
            Command::Stat => ("STAT".to_string(), Pending::Stat),
            Command::Uidl => ("UIDL".to_string(), Pending::Listing(verb)),
            Command::List => ("LIST".to_string(), Pending::Listing(verb)),
            Command::Retr(n) => (format!("RETR {}", number(n)?), Pending::Message(verb)),
            Command::Top(n, lines) => (
                format!("TOP {} {lines}", number(n)?),
                Pending::Message(verb),
            ),
            Command::Dele(n) => (format!("DELE {}", number(n)?), Pending::Simple(verb)),
            Command::Rset => ("RSET".to_string(), Pending::Simple(verb)),
            Command::Noop => ("NOOP".to_string(), Pending::Simple(verb)),
            Command::Quit => ("QUIT".to_string(), Pending::Simple(verb)),
        };
        self.out.extend_from_slice(line.as_bytes());
        self.out.extend_from_slice(b"\r\n");
        self.pending.push_back(pending);
        Ok(())
    }

    /// Bytes to write to the server.
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    /// Bytes read from the server.
    pub fn receive(&mut self, bytes: &[u8]) {
        self.input.extend_from_slice(bytes);
    }

    /// The next thing the server said, if its bytes are complete. An error ends the session: later calls
    /// return it again.
    pub fn next_event(&mut self) -> Result<Option<Event>, Pop3ClientError> {
        if let Some(error) = &self.error {
            return Err(error.clone());
        }
        if self.events.is_empty()
            && let Err(error) = self.process()
        {
            self.error = Some(error.clone());
            return Err(error);
        }
        Ok(self.events.pop_front())
    }

    /// Whether every command sent has its complete answer.
    pub fn is_idle(&self) -> bool {
        self.pending.is_empty() && matches!(self.body, Body::None)
    }

    /// Whether QUIT was answered.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Bytes received and not yet consumed.
    pub fn buffered(&self) -> usize {
        self.input.len()
    }

    fn take_line(&mut self) -> Result<Option<Vec<u8>>, Pop3ClientError> {
        match self.input.iter().position(|&b| b == b'\n') {
            Some(end) => {
                let mut line: Vec<u8> = self.input.drain(..=end).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                if line.len() > self.limits.max_line {
                    return Err(Pop3ClientError::LineTooLong {
                        limit: self.limits.max_line,
                    });
                }
                Ok(Some(line))
            }
            None if self.input.len() > self.limits.max_line + 1 => {
                Err(Pop3ClientError::LineTooLong {
                    limit: self.limits.max_line,
                })
            }
            None => Ok(None),
        }
    }

    /// Consumes input until it yields an event or needs more bytes.
    fn process(&mut self) -> Result<(), Pop3ClientError> {
        while self.events.is_empty() {
            match &mut self.body {
                Body::Message { .. } => {
                    if self.input.is_empty() || !self.unstuff()? {
                        return Ok(());
                    }
                    continue;
                }
                Body::Lines { .. } => {
                    let Some(line) = self.take_line()? else {
                        return Ok(());
                    };
                    self.listing_line(line)?;
                    continue;
                }
                Body::None => {}
            }
            if self.input.is_empty() {
                return Ok(());
            }
            if self.pending.is_empty() {
                let end = self.input.len().min(200);
                return Err(Pop3ClientError::Unsolicited {
                    line: printable(&self.input[..end]),
                });
            }
            let Some(line) = self.take_line()? else {
                return Ok(());
            };
            let pending = self.pending.pop_front().expect("checked above");
            self.status_line(pending, line)?;
        }
        Ok(())
    }

    fn status_line(&mut self, pending: Pending, line: Vec<u8>) -> Result<(), Pop3ClientError> {
        let verb = match &pending {
            Pending::Greeting => Verb::Greeting,
            Pending::Simple(verb) | Pending::Listing(verb) | Pending::Message(verb) => *verb,
            Pending::Stat => Verb::Stat,
            Pending::AuthContinue(_) | Pending::AuthResult(_) => Verb::Auth,
        };
        let not_status = || Pop3ClientError::NotAStatus {
            verb,
            line: printable(&line),
        };
        let status = status(&line).ok_or_else(not_status)?;
        let refused = |text: String, challenge: Option<String>| Event::Refused {
            verb,
            text,
            challenge,
        };
        match (pending, status) {
            (Pending::AuthContinue(_), Status::Err(text)) => {
                self.events.push_back(refused(text, None))
            }
            (Pending::AuthResult(challenge), Status::Err(text)) => {
                self.events.push_back(refused(text, challenge))
            }
            (Pending::Simple(Verb::Quit), Status::Err(text)) => {
                self.closed = true;
                self.events.push_back(refused(text, None));
            }
            (_, Status::Err(text)) => self.events.push_back(refused(text, None)),
            (Pending::AuthContinue(_) | Pending::AuthResult(_), Status::Ok(text)) => {
                self.events.push_back(Event::Authenticated { text })
            }
            (Pending::AuthContinue(response), Status::Continue(_)) => {
                // Exchange sends "+ " (trailing space), others "+": either way the response goes now.
                self.out.extend_from_slice(response.as_bytes());
                self.out.extend_from_slice(b"\r\n");
                self.pending.push_front(Pending::AuthResult(None));
            }
            (Pending::AuthResult(None), Status::Continue(data)) => {
                // A failure announced as a challenge (Dovecot, Gmail): answer empty to get the failure line.
                use base64::Engine as _;
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(data.trim())
                    .map(|json| printable(&json))
                    .unwrap_or_else(|_| printable(data.as_bytes()));
                self.out.extend_from_slice(b"\r\n");
                self.pending.push_front(Pending::AuthResult(Some(decoded)));
            }
            (_, Status::Continue(_)) => return Err(not_status()),
            (Pending::Greeting, Status::Ok(text)) => {
                self.events.push_back(Event::Greeting { text })
            }
            (Pending::Simple(verb), Status::Ok(text)) => {
                if verb == Verb::Quit {
                    self.closed = true;
                }
                if verb == Verb::Stls && !self.input.is_empty() {
                    return Err(Pop3ClientError::DataAfterStls {
                        bytes: self.input.len(),
                    });
                }
                self.events.push_back(Event::Done { verb, text });
            }
            (Pending::Stat, Status::Ok(text)) => {
                let mut parts = text.split_ascii_whitespace();
                let parsed = match (parts.next(), parts.next()) {
                    (Some(count), Some(size)) => count.parse().ok().zip(size.parse().ok()),
                    _ => None,
                };
                let (count, size) = parsed.ok_or_else(|| Pop3ClientError::Malformed {
                    verb,
                    what: "expected +OK <count> <size>",
                    line: printable(&line),
                })?;
                self.events.push_back(Event::Stat { count, size });
            }
            (Pending::Listing(verb), Status::Ok(_)) => {
                self.body = Body::Lines {
                    verb,
                    entries: Vec::new(),
                    bytes: 0,
                }
            }
            (Pending::Message(verb), Status::Ok(_)) => {
                self.events.push_back(Event::MessageStart { verb });
                self.body = Body::Message {
                    state: Unstuff::LineStart,
                    size: 0,
                };
            }
        }
        Ok(())
    }

    fn listing_line(&mut self, line: Vec<u8>) -> Result<(), Pop3ClientError> {
        let Body::Lines {
            verb,
            entries,
            bytes,
        } = &mut self.body
        else {
            unreachable!("called only for a listing");
        };
        let verb = *verb;
        if line == b"." {
            let entries = std::mem::take(entries);
            self.body = Body::None;
            let event = match verb {
                Verb::Capa => Event::Capabilities(
                    entries
                        .iter()
                        .map(|e| String::from_utf8_lossy(e).into_owned())
                        .collect(),
                ),
                Verb::Uidl => Event::UniqueIds(listing(verb, &entries, |uid| {
                    let ok = !uid.is_empty()
                        && uid.len() <= 255
                        && uid.bytes().all(|b| (0x21..=0x7e).contains(&b));
                    ok.then(|| uid.to_string())
                })?),
                // RFC 1939 lets a scan listing carry more after the size: only the first token counts.
                _ => Event::Sizes(listing(verb, &entries, |size| {
                    size.split_ascii_whitespace().next()?.parse().ok()
                })?),
            };
            self.events.push_back(event);
            return Ok(());
        }
        *bytes += line.len() + 2;
        if entries.len() >= self.limits.max_entries || *bytes > self.limits.max_listing_bytes {
            return Err(Pop3ClientError::TooManyEntries {
                verb,
                limit: self.limits.max_entries,
            });
        }
        let line = match line.strip_prefix(b".") {
            Some(unstuffed) => unstuffed.to_vec(),
            None => line,
        };
        entries.push(line);
        Ok(())
    }

    /// Runs the unstuffing machine over the input; true when the terminating line was consumed.
    fn unstuff(&mut self) -> Result<bool, Pop3ClientError> {
        let Body::Message { state, size } = &mut self.body else {
            unreachable!("called only for a message");
        };
        let mut data = Vec::with_capacity(self.input.len());
        let mut consumed = 0;
        let mut ended = false;
        for &b in &self.input {
            consumed += 1;
            *state = match (*state, b) {
                (Unstuff::LineStart, b'.') => Unstuff::Dot,
                (Unstuff::Dot, b'\r') => Unstuff::DotCr,
                (Unstuff::Dot | Unstuff::DotCr, b'\n') => {
                    ended = true;
                    break;
                }
                (Unstuff::DotCr, other) => {
                    // ".\r" followed by something else: not the terminator; keep the CR (the dot was stuffing).
                    data.push(b'\r');
                    data.push(other);
                    Unstuff::InLine
                }
                (_, b'\n') => {
                    data.push(b'\n');
                    Unstuff::LineStart
                }
                // A stuffed dot at a line start (Dot) is dropped; the byte after it is kept.
                (_, other) => {
                    data.push(other);
                    Unstuff::InLine
                }
            };
        }
        self.input.drain(..consumed);
        *size += data.len() as u64;
        if *size > self.limits.max_message {
            return Err(Pop3ClientError::MessageTooLarge {
                limit: self.limits.max_message,
            });
        }
        if !data.is_empty() {
            self.events.push_back(Event::MessageData(data));
        }
        if ended {
            self.body = Body::None;
            self.events.push_back(Event::MessageEnd);
        }
        Ok(ended)
    }
}

/// Parses `n value` listing entries.
fn listing<T>(
    verb: Verb,
    entries: &[Vec<u8>],
    value: impl Fn(&str) -> Option<T>,
) -> Result<Vec<(u32, T)>, Pop3ClientError> {
    entries
        .iter()
        .map(|entry| {
            let text = std::str::from_utf8(entry).ok();
            let parsed = text.and_then(|text| {
                let (number, rest) = text.split_once(' ')?;
                let number: u32 = number.parse().ok().filter(|&n| n > 0)?;
                Some((number, value(rest.trim_end())?))
            });
            parsed.ok_or_else(|| Pop3ClientError::Malformed {
                verb,
                what: "expected <message number> <value>",
                line: printable(entry),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(client: &mut Pop3Client) -> Vec<Event> {
        let mut events = Vec::new();
        while let Some(event) = client.next_event().unwrap() {
            events.push(event);
        }
        events
    }

    fn greeted() -> Pop3Client {
        let mut client = Pop3Client::default();
        client.receive(b"+OK ready\r\n");
        assert_eq!(
            drain(&mut client),
            [Event::Greeting {
                text: "ready".into()
            }]
        );
        client
    }

    #[test]
    fn unstuffs_a_body_whatever_the_chunking() {
        let wire = b"+OK 30 octets\r\nA: 1\r\n\r\n..dot\r\n.\rx\r\nlong\nlf\r\n.\r\n+OK\r\n";
        let expected = b"A: 1\r\n\r\n.dot\r\n\rx\r\nlong\nlf\r\n";
        for chunk in [1, 2, 3, 7, wire.len()] {
            let mut client = greeted();
            client.command(Command::Retr(1)).unwrap();
            client.command(Command::Noop).unwrap();
            let mut body = Vec::new();
            let mut ends = 0;
            let mut done = 0;
            for piece in wire.chunks(chunk) {
                client.receive(piece);
                for event in drain(&mut client) {
                    match event {
                        Event::MessageData(data) => body.extend(data),
                        Event::MessageEnd => ends += 1,
                        Event::Done {
                            verb: Verb::Noop, ..
                        } => done += 1,
                        Event::MessageStart { verb: Verb::Retr } => {}
                        other => panic!("unexpected {other:?}"),
                    }
                }
            }
            assert_eq!(body, expected, "chunk size {chunk}");
            assert_eq!((ends, done), (1, 1));
            assert!(client.is_idle());
        }
    }

    #[test]
    fn bounds_lines_entries_and_messages() {
        let mut client = Pop3Client::new(Limits {
            max_line: 10,
            max_entries: 2,
            max_message: 5,
            ..Limits::default()
        });
        client.receive(b"+OK this greeting is too long\r\n");
        assert_eq!(
            client.next_event(),
            Err(Pop3ClientError::LineTooLong { limit: 10 })
        );
        assert_eq!(client.command(Command::Noop), Err(Pop3ClientError::Closed));

        let mut listing = Pop3Client::new(Limits {
            max_line: 100,
            max_entries: 2,
            max_message: 5,
            ..Limits::default()
        });
        listing.receive(b"+OK\r\n");
        listing.next_event().unwrap();
        listing.command(Command::Uidl).unwrap();
        listing.receive(b"+OK\r\n1 a\r\n2 b\r\n3 c\r\n.\r\n");
        assert_eq!(
            listing.next_event(),
            Err(Pop3ClientError::TooManyEntries {
                verb: Verb::Uidl,
                limit: 2
            })
        );

        let mut big = Pop3Client::new(Limits {
            max_line: 100,
            max_entries: 2,
            max_message: 5,
            ..Limits::default()
        });
        big.receive(b"+OK\r\n");
        big.next_event().unwrap();
        big.command(Command::Retr(1)).unwrap();
        big.receive(b"+OK\r\n123456\r\n.\r\n");
        assert_eq!(
            big.next_event(),
            Ok(Some(Event::MessageStart { verb: Verb::Retr }))
        );
        assert_eq!(
            big.next_event(),
            Err(Pop3ClientError::MessageTooLarge { limit: 5 })
        );
    }

    #[test]
    fn unexpected_replies_are_typed_errors() {
        let mut client = greeted();
        client.command(Command::Stat).unwrap();
        client.receive(b"+OK two 63\r\n");
        assert!(matches!(
            client.next_event(),
            Err(Pop3ClientError::Malformed {
                verb: Verb::Stat,
                ..
            })
        ));

        let mut client = greeted();
        client.command(Command::Noop).unwrap();
        client.receive(b"* OK IMAP here\r\n");
        assert_eq!(
            client.next_event(),
            Err(Pop3ClientError::NotAStatus {
                verb: Verb::Noop,
                line: "* OK IMAP here".into()
            })
        );

        let mut client = greeted();
        client.receive(b"+OK surprise\r\n");
        assert!(matches!(
            client.next_event(),
            Err(Pop3ClientError::Unsolicited { .. })
        ));

        let mut client = greeted();
        client.command(Command::Uidl).unwrap();
        client.receive(b"+OK\r\n1 has space\r\n.\r\n");
        assert!(matches!(
            client.next_event(),
            Err(Pop3ClientError::Malformed {
                verb: Verb::Uidl,
                ..
            })
        ));
    }

    #[test]
    fn refuses_arguments_that_would_break_the_line() {
        let mut client = greeted();
        assert!(matches!(
            client.command(Command::AuthXoauth2 {
                response: "abc\r\nDELE 1".into()
            }),
            Err(Pop3ClientError::InvalidArgument { .. })
        ));
        assert!(matches!(
            client.command(Command::Retr(0)),
            Err(Pop3ClientError::InvalidArgument { .. })
        ));
        assert!(client.take_output().is_empty());
    }

    #[test]
    fn a_scan_listing_may_carry_more_after_the_size() {
        let mut client = greeted();
        client.command(Command::List).unwrap();
        client.receive(b"+OK\r\n1 120 extra info\r\n2 7\r\n.\r\n");
        assert_eq!(
            client.next_event(),
            Ok(Some(Event::Sizes(vec![(1, 120), (2, 7)])))
        );
    }

    #[test]
    fn listings_are_bounded_in_bytes_too() {
        let mut client = Pop3Client::new(Limits {
            max_listing_bytes: 20,
            ..Limits::default()
        });
        client.receive(b"+OK\r\n");
        client.next_event().unwrap();
        client.command(Command::Uidl).unwrap();
        client.receive(b"+OK\r\n1 aaaaaaaaaa\r\n2 bbbbbbbbbb\r\n.\r\n");
        assert!(matches!(
            client.next_event(),
            Err(Pop3ClientError::TooManyEntries { .. })
        ));
    }

    #[test]
    fn nothing_is_queued_behind_stls_or_auth() {
        let mut client = greeted();
        client.command(Command::Stls).unwrap();
        assert!(matches!(
            client.command(Command::Stat),
            Err(Pop3ClientError::InvalidArgument { .. })
        ));
        let mut client = greeted();
        client
            .command(Command::AuthXoauth2 {
                response: "dXNlcj1hAQE=".into(),
            })
            .unwrap();
        assert!(client.command(Command::Stat).is_err());
        assert_eq!(client.take_output(), b"AUTH XOAUTH2\r\n");
    }

    #[test]
    fn stls_with_injected_bytes_is_refused() {
        let mut client = greeted();
        client.command(Command::Stls).unwrap();
        client.receive(b"+OK Begin TLS\r\n+OK injected\r\n");
        assert_eq!(
            client.next_event(),
            Err(Pop3ClientError::DataAfterStls { bytes: 14 })
        );
    }

    #[test]
    fn debug_hides_the_auth_response() {
        let mut client = greeted();
        let command = Command::AuthXoauth2 {
            response: "dXNlcj1hAWF1dGg9QmVhcmVyIHNlY3JldAEB".into(),
        };
        assert_eq!(
            format!("{command:?}"),
            "AuthXoauth2 { response: \"[redacted]\" }"
        );
        client.command(command).unwrap();
        client.receive(b"+ \r\n");
        assert_eq!(client.next_event(), Ok(None));
        assert!(!format!("{client:?}").contains("dXNlcj1h"));
    }
}
