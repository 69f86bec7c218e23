//! Golden transcripts: `C:` / `S:` files replayed against a sans-I/O core, byte for byte.
//!
//! # Format
//! One wire line per transcript line: `C: ` (client) or `S: ` (server), then the line's bytes; the harness
//! appends CRLF. `C| ` / `S| ` is the same without the CRLF (a partial line). `\\` and `\xNN` escape
//! bytes (`\x01` for XOAUTH2's separator). Lines starting with `#` and blank lines are comments.
//!
//! ```text
//! # Exchange POP3 greeting (microsoft.md §7.5)
//! S: +OK The Microsoft Exchange POP3 service is ready.
//! C: QUIT
//! S: +OK Microsoft Exchange Server 2016 POP3 server signing off.
//! ```
//!
//! # Replay
//! The endpoint under test plays one side ([`Side`]); the other side's lines are its input. Consecutive
//! lines of one side form a turn. [`replay`] sends the endpoint each input turn and checks that what it
//! writes before the next input turn is exactly the next output turn. It replays twice: each turn at once,
//! then one byte at a time, so a core that assumes a line arrives in one read fails.

use std::fmt;

/// Which side a transcript line belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// `C:` lines.
    Client,
    /// `S:` lines.
    Server,
}

impl Side {
    fn other(self) -> Self {
        match self {
            Self::Client => Self::Server,
            Self::Server => Self::Client,
        }
    }
}

/// One side's consecutive bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Turn {
    /// Who sends them.
    pub side: Side,
    /// The bytes, terminators included.
    pub bytes: Vec<u8>,
    /// The transcript line the turn starts on (from 1).
    pub line: usize,
}

/// A parsed transcript.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transcript {
    /// The turns, in order.
    pub turns: Vec<Turn>,
}

/// A transcript file that cannot be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("transcript line {line}: {reason}")]
pub struct ParseError {
    /// The line (from 1).
    pub line: usize,
    /// What is wrong.
    pub reason: String,
}

fn unescape(text: &str, line: usize) -> Result<Vec<u8>, ParseError> {
    let mut out = Vec::with_capacity(text.len());
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        match bytes.get(i + 1) {
            Some(b'\\') => {
                out.push(b'\\');
                i += 2;
            }
            Some(b'x') => {
                let hex = text.get(i + 2..i + 4).ok_or_else(|| ParseError {
                    line,
                    reason: "\\x needs two hex digits".into(),
                })?;
                let byte = u8::from_str_radix(hex, 16).map_err(|_| ParseError {
                    line,
                    reason: format!("\\x{hex} is not hex"),
                })?;
                out.push(byte);
                i += 4;
            }
            _ => {
                return Err(ParseError {
                    line,
                    reason: "a backslash starts \\\\ or \\xNN".into(),
                });
            }
        }
    }
    Ok(out)
}

impl Transcript {
    /// Parses transcript text.
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        let mut turns: Vec<Turn> = Vec::new();
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            if raw.trim().is_empty() || raw.starts_with('#') {
                continue;
            }
            let (side, crlf, rest) = match raw.get(..3) {
                Some("C: ") => (Side::Client, true, &raw[3..]),
                Some("S: ") => (Side::Server, true, &raw[3..]),
                Some("C| ") => (Side::Client, false, &raw[3..]),
                Some("S| ") => (Side::Server, false, &raw[3..]),
                _ if raw == "C:" || raw == "S:" => {
                    let side = if raw == "C:" {
                        Side::Client
                    } else {
                        Side::Server
                    };
                    (side, true, "")
                }
                _ => {
                    return Err(ParseError {
                        line,
                        reason: "expected `C: `, `S: `, `C| `, `S| `, `#` or a blank line".into(),
                    });
                }
            };
            let mut bytes = unescape(rest, line)?;
            if crlf {
                bytes.extend_from_slice(b"\r\n");
            }
            match turns.last_mut() {
                Some(turn) if turn.side == side => turn.bytes.extend(bytes),
                _ => turns.push(Turn { side, bytes, line }),
            }
        }
        Ok(Self { turns })
    }
}

/// An endpoint driven by the harness: a core plus whatever the test decides for it (an accepted token, a
/// mailbox). Sans-I/O: it only ever sees bytes.
pub trait Endpoint {
    /// What it writes before reading anything (a server's greeting; nothing for most clients).
    fn open(&mut self) -> Vec<u8>;
    /// Takes bytes from the peer and returns what it writes in answer (possibly nothing yet).
    fn receive(&mut self, bytes: &[u8]) -> Vec<u8>;
    /// Whether it has closed the connection (after a QUIT, a BYE, a protocol error).
    fn is_closed(&self) -> bool {
        false
    }
}

/// A replay that did not match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// The transcript line of the expected turn.
    pub line: usize,
    /// `whole` or `byte by byte`.
    pub mode: &'static str,
    /// What the transcript says.
    pub expected: Vec<u8>,
    /// What the endpoint wrote.
    pub actual: Vec<u8>,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "transcript line {} ({} replay):", self.line, self.mode)?;
        writeln!(f, "expected:\n{}", show(&self.expected))?;
        write!(f, "actual:\n{}", show(&self.actual))
    }
}

impl std::error::Error for Mismatch {}

/// Bytes as transcript-like text, one wire line per line, with `\xNN` escapes.
pub fn show(bytes: &[u8]) -> String {
    let mut out = String::new();
    for &b in bytes {
        match b {
            b'\r' => out.push_str("\\r"),
            b'\n' => out.push_str("\\n\n"),
            b'\\' => out.push_str("\\\\"),
            0x20..=0x7e => out.push(b as char),
            other => out.push_str(&format!("\\x{other:02x}")),
        }
    }
    out
}

/// Replays `transcript` against endpoints made by `make` playing `side`: once with each input turn whole,
/// once one byte at a time. Returns the first mismatch.
pub fn replay<E: Endpoint>(
    transcript: &Transcript,
    side: Side,
    mut make: impl FnMut() -> E,
) -> Result<(), Mismatch> {
    replay_once(transcript, side, &mut make(), "whole", false)?;
    replay_once(transcript, side, &mut make(), "byte by byte", true)
}

fn replay_once<E: Endpoint>(
    transcript: &Transcript,
    side: Side,
    endpoint: &mut E,
    mode: &'static str,
    bytewise: bool,
) -> Result<(), Mismatch> {
    let mut pending = endpoint.open();
    let mut expected_line = 1;
    for turn in &transcript.turns {
        if turn.side == side {
            if pending != turn.bytes {
                return Err(Mismatch {
                    line: turn.line,
                    mode,
                    expected: turn.bytes.clone(),
                    actual: pending,
                });
            }
            pending = Vec::new();
            expected_line = turn.line;
        } else {
            debug_assert_eq!(turn.side, side.other());
            if endpoint.is_closed() {
                return Err(Mismatch {
                    line: turn.line,
                    mode,
                    expected: turn.bytes.clone(),
                    actual: b"(connection closed)".to_vec(),
                });
            }
            if !pending.is_empty() {
                // The endpoint wrote something the transcript does not show before this input turn.
                return Err(Mismatch {
                    line: turn.line,
                    mode,
                    expected: Vec::new(),
                    actual: pending,
                });
            }
            if bytewise {
                for byte in &turn.bytes {
                    pending.extend(endpoint.receive(std::slice::from_ref(byte)));
                }
            } else {
                pending = endpoint.receive(&turn.bytes);
            }
        }
    }
    if !pending.is_empty() {
        return Err(Mismatch {
            line: expected_line,
            mode,
            expected: Vec::new(),
            actual: pending,
        });
    }
    Ok(())
}
