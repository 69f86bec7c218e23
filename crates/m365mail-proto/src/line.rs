//! [`LineBuffer`]: CRLF line framing with a bound, for line-oriented protocols.
//!
//! Bytes go in as they arrive ([`LineBuffer::extend`]); complete lines come out ([`LineBuffer::next_line`])
//! without their terminator. A line longer than the bound is an error instead of unbounded memory (RFC 5321
//! allows 512 octets per command line, RFC 2449 255 per POP3 command; servers pick their own bound).
//! A bare LF also ends a line, as most servers accept it; a bare CR does not.

/// A line exceeded the bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("line longer than {limit} bytes")]
pub struct LineTooLong {
    /// The bound.
    pub limit: usize,
}

/// Buffered input split into lines. `Debug` shows only how much is buffered: the bytes may be an
/// `AUTH XOAUTH2` response, which carries a bearer token.
#[derive(Clone)]
pub struct LineBuffer {
    buffer: Vec<u8>,
    limit: usize,
    /// Bytes already scanned for a terminator (so each byte is scanned once).
    scanned: usize,
    /// Whether the last line returned ended with CRLF (not a bare LF).
    last_crlf: bool,
}

impl std::fmt::Debug for LineBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LineBuffer")
            .field("buffered", &self.buffer.len())
            .field("limit", &self.limit)
            .finish()
    }
}

impl LineBuffer {
    /// A buffer whose lines (without terminator) may be at most `limit` bytes long.
    pub fn new(limit: usize) -> Self {
        Self {
            buffer: Vec::new(),
            limit,
            scanned: 0,
            last_crlf: true,
        }
    }

    /// Appends received bytes.
    pub fn extend(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// The next complete line without its CRLF (or LF), if one is buffered.
    pub fn next_line(&mut self) -> Result<Option<Vec<u8>>, LineTooLong> {
        match self.buffer[self.scanned..].iter().position(|&b| b == b'\n') {
            Some(offset) => {
                let end = self.scanned + offset;
                let mut line: Vec<u8> = self.buffer.drain(..=end).collect();
                line.pop();
                self.last_crlf = line.last() == Some(&b'\r');
                if self.last_crlf {
                    line.pop();
                }
                self.scanned = 0;
                if line.len() > self.limit {
                    return Err(LineTooLong { limit: self.limit });
                }
                Ok(Some(line))
            }
            None => {
                self.scanned = self.buffer.len();
                // The terminator may still come, but the line can no longer fit (CR counted as part of it).
                if self.buffer.len() > self.limit + 1 {
                    return Err(LineTooLong { limit: self.limit });
                }
                Ok(None)
            }
        }
    }

    /// Takes up to `n` raw bytes (a literal, a message body), bypassing line framing.
    pub fn take(&mut self, n: usize) -> Vec<u8> {
        let n = n.min(self.buffer.len());
        self.scanned = 0;
        self.buffer.drain(..n).collect()
    }

    /// Whether the line [`LineBuffer::next_line`] returned last ended with CRLF rather than a bare LF (a
    /// server that must not take bare line ends, such as a relay's DATA, refuses the other).
    pub fn last_line_had_crlf(&self) -> bool {
        self.last_crlf
    }

    /// Bytes buffered and not yet returned.
    pub fn buffered(&self) -> usize {
        self.buffer.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_crlf_and_lf_and_keeps_partial_input() {
        let mut lines = LineBuffer::new(100);
        lines.extend(b"CAPA\r\nSTAT\nUI");
        assert_eq!(lines.next_line().unwrap().as_deref(), Some(&b"CAPA"[..]));
        assert_eq!(lines.next_line().unwrap().as_deref(), Some(&b"STAT"[..]));
        assert_eq!(lines.next_line().unwrap(), None);
        lines.extend(b"DL\r");
        assert_eq!(lines.next_line().unwrap(), None);
        lines.extend(b"\n");
        assert_eq!(lines.next_line().unwrap().as_deref(), Some(&b"UIDL"[..]));
        assert_eq!(lines.buffered(), 0);
    }

    #[test]
    fn bounds_a_line_with_or_without_its_terminator() {
        let mut lines = LineBuffer::new(4);
        lines.extend(b"ABCD\r\n");
        assert_eq!(lines.next_line().unwrap().as_deref(), Some(&b"ABCD"[..]));
        lines.extend(b"ABCDE\r\n");
        assert_eq!(lines.next_line(), Err(LineTooLong { limit: 4 }));
        let mut endless = LineBuffer::new(4);
        endless.extend(b"ABCDEF");
        assert_eq!(endless.next_line(), Err(LineTooLong { limit: 4 }));
    }

    #[test]
    fn debug_never_shows_the_buffered_bytes() {
        let mut lines = LineBuffer::new(100);
        lines.extend(b"dXNlcj1hAWF1dGg9QmVhcmVyIHNlY3JldAEB");
        let shown = format!("{lines:?}");
        assert_eq!(shown, "LineBuffer { buffered: 36, limit: 100 }");
    }

    #[test]
    fn take_reads_raw_bytes() {
        let mut lines = LineBuffer::new(10);
        lines.extend(b"abc\r\ndef");
        assert_eq!(lines.take(5), b"abc\r\n");
        assert_eq!(lines.take(10), b"def");
    }
}
