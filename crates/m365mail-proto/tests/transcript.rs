//! The transcript harness itself: parsing, and that a replay fails on every kind of divergence.
//!
//! The cores that the transcripts under `testdata/` exercise live beside the protocols that use them; here a
//! small line core stands in, so the harness's own failure modes are tested against something that can be
//! made wrong on purpose.

use m365mail_proto::line::LineBuffer;
use m365mail_proto::transcript::{Endpoint, Side, Transcript, replay, show};
use m365mail_proto::xoauth2;

/// A toy line server: greets, answers `NOOP`, checks `AUTH XOAUTH2 <b64>` with the real decoder, says
/// goodbye on `QUIT`. `drift` makes it deliberately wrong in one way.
struct ToyServer {
    lines: LineBuffer,
    closed: bool,
    drift: Drift,
}

#[derive(Clone, Copy, PartialEq)]
enum Drift {
    None,
    /// Answers NOOP with a trailing space.
    Space,
    /// Assumes a whole line per read.
    OneReadPerLine,
}

impl Endpoint for ToyServer {
    fn open(&mut self) -> Vec<u8> {
        b"+OK ready\r\n".to_vec()
    }
    fn receive(&mut self, bytes: &[u8]) -> Vec<u8> {
        if self.drift == Drift::OneReadPerLine {
            let line = String::from_utf8_lossy(bytes).trim_end().to_owned();
            return self.answer(&line);
        }
        self.lines.extend(bytes);
        let mut out = Vec::new();
        while let Ok(Some(line)) = self.lines.next_line() {
            out.extend(self.answer(&String::from_utf8_lossy(&line)));
        }
        out
    }
    fn is_closed(&self) -> bool {
        self.closed
    }
}

impl ToyServer {
    fn new(drift: Drift) -> Self {
        Self {
            lines: LineBuffer::new(512),
            closed: false,
            drift,
        }
    }
    fn answer(&mut self, line: &str) -> Vec<u8> {
        match line.split_once(' ') {
            Some(("AUTH", rest)) => match rest.strip_prefix("XOAUTH2 ").map(xoauth2::decode) {
                Some(Ok(auth)) => format!("+OK hello {}\r\n", auth.user).into_bytes(),
                _ => {
                    b"-ERR Authentication failure: unknown user name or bad password.\r\n".to_vec()
                }
            },
            _ if line == "NOOP" && self.drift == Drift::Space => b"+OK \r\n".to_vec(),
            _ if line == "NOOP" => b"+OK\r\n".to_vec(),
            _ if line == "QUIT" => {
                self.closed = true;
                b"+OK bye\r\n".to_vec()
            }
            _ => b"-ERR Protocol error.\r\n".to_vec(),
        }
    }
}

const TOY: &str = include_str!("../testdata/toy.transcript");

#[test]
fn the_golden_toy_transcript_replays_whole_and_byte_by_byte() {
    let transcript = Transcript::parse(TOY).unwrap();
    assert_eq!(transcript.turns.len(), 11);
    assert_eq!(transcript.turns[0].side, Side::Server);
    replay(&transcript, Side::Server, || ToyServer::new(Drift::None)).unwrap();
}

#[test]
fn a_byte_of_difference_fails_with_the_line() {
    let transcript = Transcript::parse(TOY).unwrap();
    let mismatch = replay(&transcript, Side::Server, || ToyServer::new(Drift::Space)).unwrap_err();
    assert_eq!(mismatch.expected, b"+OK\r\n");
    assert_eq!(mismatch.actual, b"+OK \r\n");
    assert_eq!(mismatch.mode, "whole");
    let noop_answer_line = TOY.lines().position(|l| l == "S: +OK").unwrap() + 1;
    assert_eq!(mismatch.line, noop_answer_line);
    assert!(mismatch.to_string().contains("+OK \\r\\n"), "{mismatch}");
}

#[test]
fn a_core_that_needs_whole_lines_fails_the_byte_by_byte_replay() {
    let transcript = Transcript::parse(TOY).unwrap();
    let mismatch = replay(&transcript, Side::Server, || {
        ToyServer::new(Drift::OneReadPerLine)
    })
    .unwrap_err();
    assert_eq!(mismatch.mode, "byte by byte");
}

#[test]
fn input_after_the_endpoint_closed_fails() {
    let transcript = Transcript::parse("S: +OK ready\nC: QUIT\nS: +OK bye\nC: NOOP\n").unwrap();
    let mismatch = replay(&transcript, Side::Server, || ToyServer::new(Drift::None)).unwrap_err();
    assert_eq!(mismatch.line, 4);
    assert!(mismatch.to_string().contains("closed"), "{mismatch}");
}

#[test]
fn unexpected_extra_output_fails() {
    // The transcript omits the greeting: the server's unsolicited bytes are a mismatch.
    let transcript = Transcript::parse("C: NOOP\r\nS: +OK\n").unwrap();
    let mismatch = replay(&transcript, Side::Server, || ToyServer::new(Drift::None)).unwrap_err();
    assert_eq!(mismatch.expected, b"");
    assert_eq!(mismatch.actual, b"+OK ready\r\n");
}

#[test]
fn parses_escapes_partial_lines_and_refuses_junk() {
    let t = Transcript::parse("# comment\n\nC| AB\\x01\\\\\nC: CD\nS:\n").unwrap();
    assert_eq!(t.turns.len(), 2);
    assert_eq!(t.turns[0].bytes, b"AB\x01\\CD\r\n");
    assert_eq!(t.turns[0].line, 3);
    assert_eq!(t.turns[1].bytes, b"\r\n");
    let err = Transcript::parse("S: ok\nX: nope\n").unwrap_err();
    assert_eq!(err.line, 2);
    assert_eq!(Transcript::parse("C: \\x1").unwrap_err().line, 1);
    assert_eq!(Transcript::parse("C: \\q").unwrap_err().line, 1);
    assert_eq!(show(b"a\x01\r\n"), "a\\x01\\r\\n\n");
}
