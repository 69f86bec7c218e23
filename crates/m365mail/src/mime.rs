//! MIME: a received message as the fields a pipeline needs. Parsing is mail-parser 0.11's (RFC 5322 and
//! 2045–2049, every charset it knows, lenient with broken mail); this module is the one place that knows its
//! API, so the move to 1.0 (when the toolchain allows) stays here.
//!
//! [`parse`] never fails on content mail-parser can read at all — an unclosed boundary or a bad encoding
//! still gives a message — and reports [`MimeError::Unreadable`] for the rest (empty input, no header).

use mail_parser::{Address, MessageParser, MessagePart, MimeHeaders as _, PartType};
use sha2::{Digest as _, Sha256};

/// A parsed message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ParsedMessage {
    /// `Message-ID` without the angle brackets.
    pub message_id: Option<String>,
    /// The `Date` header in UTC, RFC 3339, and as Unix seconds.
    pub date: Option<(String, i64)>,
    /// `From`.
    pub from: Vec<Mailbox>,
    /// `To`.
    pub to: Vec<Mailbox>,
    /// `Cc`.
    pub cc: Vec<Mailbox>,
    /// `Reply-To`.
    pub reply_to: Vec<Mailbox>,
    /// `Subject`, RFC 2047 decoded.
    pub subject: Option<String>,
    /// `In-Reply-To` (the first id, without angle brackets).
    pub in_reply_to: Option<String>,
    /// Every header field in order, name as written and value unfolded (not decoded).
    pub headers: Vec<(String, String)>,
    /// The first `text/plain` body, decoded to UTF-8.
    pub text: Option<String>,
    /// The first `text/html` body, decoded to UTF-8.
    pub html: Option<String>,
    /// Attachments and inline parts, in order.
    pub attachments: Vec<Attachment>,
}

/// A name and an address.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Mailbox {
    /// The display name, decoded.
    pub name: Option<String>,
    /// The address.
    pub address: Option<String>,
}

/// An attachment or inline part.
#[derive(Clone, PartialEq, Eq)]
pub struct Attachment {
    /// The file name (`filename` or `name`, RFC 2231 / 2047 decoded), if any.
    pub name: Option<String>,
    /// `type/subtype`, lower case.
    pub content_type: String,
    /// Shown in the body (disposition `inline`, or a `Content-ID` without disposition).
    pub inline: bool,
    /// `Content-ID` without angle brackets.
    pub content_id: Option<String>,
    /// The decoded bytes.
    pub data: Vec<u8>,
    /// SHA-256 of `data`, lower-case hex.
    pub sha256: String,
}

impl std::fmt::Debug for Attachment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attachment")
            .field("name", &self.name)
            .field("content_type", &self.content_type)
            .field("inline", &self.inline)
            .field("size", &self.data.len())
            .finish_non_exhaustive()
    }
}

/// A message that cannot be read as mail.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MimeError {
    /// Nothing that parses as a message (empty, or no header at all).
    #[error("not a readable RFC 5322 message ({size} bytes)")]
    Unreadable {
        /// Its size.
        size: usize,
    },
}

/// Lower-case hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn mailboxes(address: Option<&Address<'_>>) -> Vec<Mailbox> {
    address
        .map(|a| {
            a.iter()
                .map(|addr| Mailbox {
                    name: addr.name().map(str::to_string),
                    address: addr.address().map(str::to_string),
                })
                .collect()
        })
        .unwrap_or_default()
}

fn unfold(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for (i, line) in value.split('\n').enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if i > 0 {
            out.push(' ');
            out.push_str(line.trim_start());
        } else {
            out.push_str(line);
        }
    }
    out.trim().to_string()
}

fn content_type(part: &MessagePart<'_>) -> String {
    match part.content_type() {
        Some(ct) => match &ct.c_subtype {
            Some(sub) => format!("{}/{}", ct.c_type, sub).to_ascii_lowercase(),
            None => ct.c_type.to_ascii_lowercase(),
        },
        None if part.is_message() => "message/rfc822".into(),
        None => "application/octet-stream".into(),
    }
}

/// Parses `raw` (a whole message, or only its header as TOP n 0 gives it).
pub fn parse(raw: &[u8]) -> Result<ParsedMessage, MimeError> {
    let unreadable = || MimeError::Unreadable { size: raw.len() };
    if raw.iter().all(u8::is_ascii_whitespace) {
        return Err(unreadable());
    }
    let message = MessageParser::default().parse(raw).ok_or_else(unreadable)?;
    if message.headers().is_empty() {
        return Err(unreadable());
    }
    let text = message
        .text_bodies()
        .find(|p| matches!(p.body, PartType::Text(_)))
        .and_then(|p| p.text_contents())
        .filter(|t| !t.is_empty())
        .map(str::to_string);
    let html = message
        .html_bodies()
        .find(|p| matches!(p.body, PartType::Html(_)))
        .and_then(|p| p.text_contents())
        .map(str::to_string);
    let attachments = message
        .attachments()
        .map(|part| {
            let data = part.contents().to_vec();
            let disposition = part.content_disposition();
            let content_id = part
                .content_id()
                .map(|id| id.trim_matches(|c| c == '<' || c == '>').to_string());
            Attachment {
                name: part.attachment_name().map(str::to_string),
                content_type: content_type(part),
                inline: disposition.map_or(content_id.is_some(), |d| d.is_inline()),
                content_id,
                sha256: sha256_hex(&data),
                data,
            }
        })
        .collect();
    let date = message.date().and_then(|d| {
        let secs = d.to_timestamp();
        u64::try_from(secs)
            .ok()
            .map(|s| (crate::time::rfc3339(s), secs))
    });
    Ok(ParsedMessage {
        message_id: message.message_id().map(str::to_string),
        date,
        from: mailboxes(message.from()),
        to: mailboxes(message.to()),
        cc: mailboxes(message.cc()),
        reply_to: mailboxes(message.reply_to()),
        subject: message.subject().map(str::to_string),
        in_reply_to: message.in_reply_to().as_text().map(str::to_string),
        headers: message
            .headers_raw()
            .map(|(name, value)| (name.to_string(), unfold(value)))
            .collect(),
        text,
        html,
        attachments,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_headers_bodies_and_attachments() {
        let raw = b"From: =?utf-8?B?SsO8cmdlbg==?= <j@example.test>\r\n\
To: a@example.test, \"B, Bee\" <b@example.test>\r\n\
Subject: =?iso-8859-1?Q?Gr=FC=DFe?=\r\n\
\x20aus Koeln\r\n\
X-Note: K\xc3\xb6ln\r\n\
Date: Mon, 07 Dec 2026 06:00:01 +0100\r\n\
Message-ID: <abc@example.test>\r\n\
In-Reply-To: <parent@example.test>\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=b\r\n\
\r\n\
--b\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
\r\n\
Hallo\r\n\
--b\r\n\
Content-Type: text/csv; name=\"r.csv\"\r\n\
Content-Disposition: attachment; filename=\"r.csv\"\r\n\
Content-Transfer-Encoding: base64\r\n\
\r\n\
YSxiCjEsMgo=\r\n\
--b--\r\n";
        let m = parse(raw).unwrap();
        assert_eq!(m.message_id.as_deref(), Some("abc@example.test"));
        assert_eq!(m.in_reply_to.as_deref(), Some("parent@example.test"));
        assert_eq!(
            m.date,
            Some(("2026-12-07T05:00:01Z".to_string(), 1_796_619_601))
        );
        assert_eq!(m.from[0].name.as_deref(), Some("Jürgen"));
        assert_eq!(m.to.len(), 2);
        assert_eq!(m.to[1].name.as_deref(), Some("B, Bee"));
        assert_eq!(m.subject.as_deref(), Some("Grüße aus Koeln"));
        assert_eq!(
            m.headers[2],
            (
                "Subject".into(),
                "=?iso-8859-1?Q?Gr=FC=DFe?= aus Koeln".into()
            )
        );
        assert_eq!(m.headers[3], ("X-Note".into(), "Köln".into()));
        assert_eq!(m.text.as_deref(), Some("Hallo"));
        assert_eq!(m.html, None);
        assert_eq!(m.attachments.len(), 1);
        let a = &m.attachments[0];
        assert_eq!(a.name.as_deref(), Some("r.csv"));
        assert_eq!(a.content_type, "text/csv");
        assert_eq!(a.data, b"a,b\n1,2\n");
        assert_eq!(a.sha256, sha256_hex(b"a,b\n1,2\n"));
        assert!(!a.inline);
    }

    #[test]
    fn empty_input_is_unreadable() {
        assert_eq!(parse(b""), Err(MimeError::Unreadable { size: 0 }));
        assert_eq!(parse(b"\r\n\r\n"), Err(MimeError::Unreadable { size: 4 }));
    }

    #[test]
    fn a_header_alone_parses() {
        let m = parse(b"Subject: only\r\nFrom: x@example.test\r\n\r\n").unwrap();
        assert_eq!(m.subject.as_deref(), Some("only"));
        assert_eq!(m.text, None);
    }
}
