//! POP3 (RFC 1939, CAPA RFC 2449, AUTH RFC 5034) as Exchange Online speaks it (microsoft.md §7.5).
//!
//! - [`server`]: the sans-I/O server core, used by the sandbox's POP3 service (and later the local bridge).
//! - [`client`]: the sans-I/O client core, used by the connector's POP3 reader (`m365mail::pop3`).
//! - [`dot_stuff`]: a message as a multi-line reply body.

pub mod client;
pub mod server;

/// A message as the body of a multi-line reply: CRLF line endings, a line that starts with `.` gets one more
/// (RFC 1939 §3), ended by `.` alone on a line. With `top = Some(n)`, only the header, the blank line and the
/// first `n` body lines.
pub fn dot_stuff(message: &[u8], top: Option<usize>) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + message.len() / 40 + 5);
    let text = message.strip_suffix(b"\n").unwrap_or(message);
    let mut in_body = false;
    let mut body_lines = 0usize;
    if !message.is_empty() {
        for line in text.split(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if in_body {
                if top.is_some_and(|n| body_lines >= n) {
                    break;
                }
                body_lines += 1;
            } else if line.is_empty() {
                in_body = true;
            }
            if line.first() == Some(&b'.') {
                out.push(b'.');
            }
            out.extend_from_slice(line);
            out.extend_from_slice(b"\r\n");
        }
    }
    out.extend_from_slice(b".\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stuffs_dots_normalises_line_endings_and_terminates() {
        let message = b"Subject: x\n\n.hidden\r\n..two\nend";
        assert_eq!(
            dot_stuff(message, None),
            b"Subject: x\r\n\r\n..hidden\r\n...two\r\nend\r\n.\r\n"
        );
        assert_eq!(dot_stuff(b"", None), b".\r\n");
    }

    #[test]
    fn top_sends_the_header_and_n_body_lines() {
        let message = b"A: 1\r\nB: 2\r\n\r\nl1\r\nl2\r\nl3\r\n";
        assert_eq!(dot_stuff(message, Some(0)), b"A: 1\r\nB: 2\r\n\r\n.\r\n");
        assert_eq!(
            dot_stuff(message, Some(2)),
            b"A: 1\r\nB: 2\r\n\r\nl1\r\nl2\r\n.\r\n"
        );
        assert_eq!(dot_stuff(message, Some(9)), dot_stuff(message, None));
    }
}
