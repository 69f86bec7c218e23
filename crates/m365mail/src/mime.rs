//! MIME: a received message as the fields a pipeline needs ([`parse`]), and a message to send built from
//! fields ([`build`], mail-builder 2: RFC 2047 headers, RFC 2231 file names, every field validated first). Parsing is mail-parser 0.11's (RFC 5322 and
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

/// The `Message-ID` of a message's header, without angle brackets.
pub fn message_id(raw: &[u8]) -> Option<String> {
    MessageParser::default()
        .parse_headers(raw)?
        .message_id()
        .map(str::to_owned)
}

/// Every mailbox address a message claims to come from — all of `From:` and `Sender:`, groups and lists
/// included, lower-cased — for a relay that checks them against what an account may send as. `Err` says why
/// the claim cannot be read: more than one `From:` or `Sender:` field, or a field whose value holds no
/// address (a relay must refuse rather than guess).
pub fn sender_addresses(raw: &[u8]) -> Result<Vec<String>, String> {
    let message = MessageParser::default()
        .parse_headers(raw)
        .ok_or_else(|| "the header cannot be read".to_owned())?;
    let mut addresses = Vec::new();
    for (name, field) in [
        (mail_parser::HeaderName::From, "From"),
        (mail_parser::HeaderName::Sender, "Sender"),
    ] {
        let values: Vec<_> = message.header_values(name).collect();
        if values.len() > 1 {
            return Err(format!("{} {field}: fields", values.len()));
        }
        let Some(value) = values.first() else {
            continue;
        };
        let Some(address) = value.as_address() else {
            return Err(format!("the {field}: field holds no address"));
        };
        for mailbox in address.iter() {
            match mailbox.address.as_deref() {
                Some(text) if text.contains('@') => addresses.push(text.to_ascii_lowercase()),
                _ => {
                    return Err(format!(
                        "the {field}: field has a mailbox without an address"
                    ));
                }
            }
        }
    }
    Ok(addresses)
}

/// Every address of a message's `To:`, `Cc:` and `Bcc:` fields (groups and lists included), lower-cased, once
/// each: the recipients a sender that reads them from the header (Graph's MIME `sendMail`) delivers to.
pub fn header_recipients(raw: &[u8]) -> Vec<String> {
    let Some(message) = MessageParser::default().parse_headers(raw) else {
        return Vec::new();
    };
    let mut addresses: Vec<String> = Vec::new();
    for name in [
        mail_parser::HeaderName::To,
        mail_parser::HeaderName::Cc,
        mail_parser::HeaderName::Bcc,
    ] {
        for value in message.header_values(name) {
            let Some(list) = value.as_address() else {
                continue;
            };
            for mailbox in list.iter() {
                if let Some(address) = mailbox.address.as_deref().filter(|a| a.contains('@')) {
                    let address = address.to_ascii_lowercase();
                    if !addresses.contains(&address) {
                        addresses.push(address);
                    }
                }
            }
        }
    }
    addresses
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

/// A message to send, before it is built.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outgoing {
    /// `From` (address required).
    pub from: Option<Mailbox>,
    /// `To`.
    pub to: Vec<Mailbox>,
    /// `Cc`.
    pub cc: Vec<Mailbox>,
    /// Envelope-only recipients: never written into the message.
    pub bcc: Vec<Mailbox>,
    /// `Reply-To`.
    pub reply_to: Vec<Mailbox>,
    /// `Subject` (RFC 2047-encoded when not ASCII).
    pub subject: Option<String>,
    /// The `text/plain` body.
    pub text: Option<String>,
    /// The `text/html` body.
    pub html: Option<String>,
    /// Attachments and inline parts.
    pub parts: Vec<OutgoingPart>,
    /// Further header fields, in order.
    pub headers: Vec<(String, String)>,
    /// The message this one answers (`In-Reply-To`, and `References` unless given), without brackets.
    pub in_reply_to: Option<String>,
    /// `References`, without brackets.
    pub references: Vec<String>,
    /// `Message-ID` without brackets; generated when absent.
    pub message_id: Option<String>,
}

/// An attachment or inline part to send.
#[derive(Clone, PartialEq, Eq)]
pub struct OutgoingPart {
    /// The file name shown to the recipient.
    pub name: String,
    /// `type/subtype`; [`content_type_for`] gives one from the name.
    pub content_type: String,
    /// The bytes.
    pub data: Vec<u8>,
    /// For an inline part (an image the HTML shows as `cid:…`): its Content-ID, without brackets.
    pub content_id: Option<String>,
}

impl std::fmt::Debug for OutgoingPart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutgoingPart")
            .field("name", &self.name)
            .field("content_type", &self.content_type)
            .field("size", &self.data.len())
            .field("content_id", &self.content_id)
            .finish()
    }
}

/// A built message: its bytes and what the SMTP envelope needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltMessage {
    /// RFC 5322 bytes, CRLF line endings.
    pub bytes: Vec<u8>,
    /// Its `Message-ID`, without brackets.
    pub message_id: String,
    /// The envelope sender (`MAIL FROM`).
    pub envelope_from: String,
    /// Every envelope recipient (`RCPT TO`): To, Cc and Bcc, without duplicates.
    pub recipients: Vec<String>,
}

/// A message that cannot be built as given. Nothing was sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// An address that is not `local@domain` (or holds a character that could break a header).
    #[error("{field}: {value:?} is not a usable address ({reason})")]
    Address {
        /// `from`, `to`, …
        field: &'static str,
        /// The value (an address is not a secret).
        value: String,
        /// Why.
        reason: &'static str,
    },
    /// A header name or value that would break the message.
    #[error("header {name:?}: {reason}")]
    Header {
        /// The name as given.
        name: String,
        /// Why.
        reason: String,
    },
    /// No `From`.
    #[error("no From address")]
    NoFrom,
    /// No recipient at all.
    #[error("no recipient (To, Cc or Bcc)")]
    NoRecipient,
}

impl crate::error::Classified for BuildError {
    fn class(&self) -> crate::error::ErrorClass {
        crate::error::ErrorClass::Input
    }
    fn cause(&self) -> String {
        self.to_string()
    }
    fn remedy(&self) -> String {
        match self {
            Self::Address { .. } => "give the address as local@domain, without spaces, quotes, angle brackets \
                 or control characters (a display name goes in the name, not the address)"
                .into(),
            Self::Header { .. } => "use a header name of printable ASCII without ':' (e.g. X-Order-Id) and a \
                 value without CR, LF or other control characters; From, To, Subject and the other standard \
                 fields have their own options"
                .into(),
            Self::NoFrom => "pass --from, or set `mailbox` in the profile".into(),
            Self::NoRecipient => "pass at least one of --to, --cc, --bcc".into(),
        }
    }
}

/// A content type from a file name's extension (`application/octet-stream` when unknown).
pub fn content_type_for(name: &str) -> &'static str {
    let extension = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
    match extension.as_deref() {
        Some("pdf") => "application/pdf",
        Some("csv") => "text/csv",
        Some("txt" | "log") => "text/plain",
        Some("htm" | "html") => "text/html",
        Some("json") => "application/json",
        Some("xml") => "application/xml",
        Some("zip") => "application/zip",
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("gif") => "image/gif",
        Some("svg") => "image/svg+xml",
        Some("ics") => "text/calendar",
        Some("eml") => "message/rfc822",
        Some("docx") => "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        Some("xlsx") => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        Some("pptx") => "application/vnd.openxmlformats-officedocument.presentationml.presentation",
        _ => "application/octet-stream",
    }
}

fn check_address(field: &'static str, mailbox: &Mailbox) -> Result<String, BuildError> {
    let value = mailbox.address.clone().unwrap_or_default();
    let bad = |reason| BuildError::Address {
        field,
        value: value.clone(),
        reason,
    };
    if value
        .chars()
        .any(|c| c.is_control() || c.is_whitespace() || "<>,;\"()[]\\".contains(c))
    {
        return Err(bad(
            "spaces, control characters and <>,;\"()[]\\ are not allowed",
        ));
    }
    let (local, domain) = value.rsplit_once('@').ok_or_else(|| bad("no @"))?;
    if local.is_empty() || domain.is_empty() || local.contains('@') {
        return Err(bad("expected local@domain"));
    }
    if domain.starts_with('.') || domain.ends_with('.') || domain.contains("..") {
        return Err(bad("the domain is malformed"));
    }
    if let Some(name) = &mailbox.name
        && name.chars().any(char::is_control)
    {
        return Err(bad("the display name holds a control character"));
    }
    Ok(value)
}

/// Header fields the builder writes itself: a custom header may not set them.
const OWN_HEADERS: [&str; 12] = [
    "from",
    "to",
    "cc",
    "bcc",
    "reply-to",
    "subject",
    "date",
    "message-id",
    "in-reply-to",
    "references",
    "mime-version",
    "content-type",
];

/// Whether a header field of a received message may be carried into a new one (`send --input` with
/// records from `read`): not the fields the builder writes, the MIME structure, or the trace a server adds
/// on the way (Received, DKIM, ARC, Exchange's own X-MS-Exchange-*), which would be false in a new message.
pub fn is_resendable_header(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    // Also the fields that would speak for someone else in a new message: a stale Sender (on behalf of, or
    // SendAsDenied), Resent-*, and read-receipt requests going to the original requester.
    const TRACE: [&str; 11] = [
        "received",
        "return-path",
        "delivered-to",
        "dkim-signature",
        "authentication-results",
        "received-spf",
        "thread-index",
        "thread-topic",
        "sender",
        "disposition-notification-to",
        "return-receipt-to",
    ];
    const TRACE_PREFIXES: [&str; 7] = [
        "content-",
        "arc-",
        "x-ms-",
        "x-microsoft-",
        "x-forefront-",
        "x-originating",
        "resent-",
    ];
    !OWN_HEADERS.contains(&lower.as_str())
        && !TRACE.contains(&lower.as_str())
        && !TRACE_PREFIXES.iter().any(|p| lower.starts_with(p))
}

fn check_header(name: &str, value: &str) -> Result<(), BuildError> {
    let bad = |reason: String| BuildError::Header {
        name: name.to_string(),
        reason,
    };
    if name.is_empty() || !name.bytes().all(|b| (33..=126).contains(&b) && b != b':') {
        return Err(bad(
            "the name must be printable ASCII without ':' or spaces".into(),
        ));
    }
    if OWN_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
        return Err(bad(format!("{name} is set by its own option")));
    }
    // The MIME structure is the builder's: a top-level Content-Transfer-Encoding would corrupt a multipart.
    if name.to_ascii_lowercase().starts_with("content-") {
        return Err(bad(format!(
            "{name} belongs to the MIME structure the builder writes"
        )));
    }
    if value.chars().any(|c| c.is_control() && c != '\t') {
        return Err(bad(
            "the value holds CR, LF or another control character".into()
        ));
    }
    Ok(())
}

fn check_text(field: &str, value: &str) -> Result<(), BuildError> {
    if value.chars().any(|c| c.is_control() && c != '\t') {
        return Err(BuildError::Header {
            name: field.to_string(),
            reason: "holds CR, LF or another control character".into(),
        });
    }
    Ok(())
}

fn check_id(field: &str, id: &str) -> Result<String, BuildError> {
    let id = id.trim().trim_start_matches('<').trim_end_matches('>');
    // A Content-ID need not be left@right in practice (`cid:logo.png` is common): only Message-ID and the
    // fields that name one are held to it.
    let needs_at = field != "Content-ID";
    if id.is_empty()
        || !id
            .bytes()
            .all(|b| (33..=126).contains(&b) && b != b'<' && b != b'>')
        || (needs_at && !id.contains('@'))
    {
        return Err(BuildError::Header {
            name: field.to_string(),
            reason: format!("{id:?} is not a message id (left@right, printable ASCII)"),
        });
    }
    Ok(id.to_string())
}

/// The message as Graph's MIME `sendMail` takes it (microsoft.md §8.2): Graph finds the recipients in the
/// headers, so the Bcc recipients — in the SMTP envelope only — go into a `Bcc:` header, which Exchange removes
/// before it delivers. The addresses were checked by [`build`].
pub fn with_bcc_header(outgoing: &Outgoing, built: &BuiltMessage) -> Vec<u8> {
    let bcc: Vec<&str> = outgoing
        .bcc
        .iter()
        .filter_map(|m| m.address.as_deref())
        .collect();
    if bcc.is_empty() {
        return built.bytes.clone();
    }
    let mut bytes = format!("Bcc: {}\r\n", bcc.join(", ")).into_bytes();
    bytes.extend_from_slice(&built.bytes);
    bytes
}

/// Builds `message` at `now` (Unix seconds, its `Date`), validating every field first: a message that cannot
/// be built is an error before anything is sent.
pub fn build(message: &Outgoing, now: i64) -> Result<BuiltMessage, BuildError> {
    use mail_builder::MessageBuilder;
    use mail_builder::headers::address::Address;

    let from_box = message.from.as_ref().ok_or(BuildError::NoFrom)?;
    let from = check_address("from", from_box)?;
    let addresses = |field: &'static str,
                     list: &[Mailbox]|
     -> Result<Vec<(Option<String>, String)>, BuildError> {
        list.iter()
            .map(|m| Ok((m.name.clone(), check_address(field, m)?)))
            .collect()
    };
    let to = addresses("to", &message.to)?;
    let cc = addresses("cc", &message.cc)?;
    let bcc = addresses("bcc", &message.bcc)?;
    let reply_to = addresses("reply-to", &message.reply_to)?;
    if to.is_empty() && cc.is_empty() && bcc.is_empty() {
        return Err(BuildError::NoRecipient);
    }
    if let Some(subject) = &message.subject {
        check_text("Subject", subject)?;
    }
    for (name, value) in &message.headers {
        check_header(name, value)?;
    }
    for part in &message.parts {
        check_text("attachment name", &part.name)?;
        if !part.content_type.contains('/')
            || part
                .content_type
                .chars()
                .any(|c| c.is_control() || c.is_whitespace())
        {
            return Err(BuildError::Header {
                name: "Content-Type".into(),
                reason: format!("{:?} is not type/subtype", part.content_type),
            });
        }
        if let Some(cid) = &part.content_id {
            check_id("Content-ID", cid)?;
        }
    }
    let domain = from.rsplit_once('@').map_or("localhost", |(_, d)| d);
    let message_id = match &message.message_id {
        Some(id) => check_id("Message-ID", id)?,
        None => format!("{}@{domain}", uuid::Uuid::new_v4().simple()),
    };
    let in_reply_to = message
        .in_reply_to
        .as_deref()
        .map(|id| check_id("In-Reply-To", id))
        .transpose()?;
    let mut references: Vec<String> = message
        .references
        .iter()
        .map(|id| check_id("References", id))
        .collect::<Result<_, _>>()?;
    if let Some(parent) = &in_reply_to
        && !references.contains(parent)
    {
        references.push(parent.clone());
    }

    let address = |(name, address): &(Option<String>, String)| match name {
        Some(name) => Address::new_address(Some(name.clone()), address.clone()),
        None => Address::new_address(None::<String>, address.clone()),
    };
    let list =
        |items: &[(Option<String>, String)]| Address::new_list(items.iter().map(address).collect());
    let mut builder = MessageBuilder::new()
        .from(address(&(from_box.name.clone(), from.clone())))
        .message_id(message_id.clone())
        .date(now);
    if !to.is_empty() {
        builder = builder.to(list(&to));
    }
    if !cc.is_empty() {
        builder = builder.cc(list(&cc));
    }
    if !reply_to.is_empty() {
        builder = builder.reply_to(list(&reply_to));
    }
    if let Some(subject) = &message.subject {
        builder = builder.subject(subject.clone());
    }
    if let Some(parent) = &in_reply_to {
        builder = builder.in_reply_to(parent.clone());
    }
    if !references.is_empty() {
        builder = builder.references(references.clone());
    }
    for (name, value) in &message.headers {
        builder = builder.header(
            name.clone(),
            mail_builder::headers::text::Text::new(value.clone()),
        );
    }
    if let Some(text) = &message.text {
        builder = builder.text_body(text.clone());
    }
    if let Some(html) = &message.html {
        builder = builder.html_body(html.clone());
    }
    if message.text.is_none() && message.html.is_none() {
        // A message always has a body part, even an empty one.
        builder = builder.text_body(String::new());
    }
    for part in &message.parts {
        builder = match &part.content_id {
            Some(cid) => builder.inline(part.content_type.clone(), cid.clone(), part.data.clone()),
            None => builder.attachment(
                part.content_type.clone(),
                part.name.clone(),
                part.data.clone(),
            ),
        };
    }
    let bytes = builder
        .write_to_vec()
        .expect("writing to a Vec cannot fail");
    let mut recipients: Vec<String> = Vec::new();
    for (_, address) in to.iter().chain(&cc).chain(&bcc) {
        if !recipients.iter().any(|r| r.eq_ignore_ascii_case(address)) {
            recipients.push(address.clone());
        }
    }
    Ok(BuiltMessage {
        bytes,
        message_id,
        envelope_from: from,
        recipients,
    })
}

#[cfg(test)]
mod build_tests {
    use super::*;

    fn mailbox(name: Option<&str>, address: &str) -> Mailbox {
        Mailbox {
            name: name.map(str::to_string),
            address: Some(address.to_string()),
        }
    }

    fn sample() -> Outgoing {
        Outgoing {
            from: Some(mailbox(
                Some("Adele Vance"),
                "adele@contoso.onmicrosoft.com",
            )),
            to: vec![mailbox(Some("Müller, Jürgen"), "j@example.test")],
            cc: vec![mailbox(None, "c@example.test")],
            bcc: vec![
                mailbox(None, "hidden@example.test"),
                mailbox(None, "J@example.test"),
            ],
            subject: Some("Grüße: Rechnung 4417".into()),
            text: Some("Hallo\nanbei die Rechnung.".into()),
            html: Some("<p>Hallo <img src=\"cid:logo@x\"></p>".into()),
            parts: vec![
                OutgoingPart {
                    name: "Rechnung 4417.pdf".into(),
                    content_type: content_type_for("Rechnung 4417.pdf").into(),
                    data: b"%PDF-1.7 \x00\x01\x02".to_vec(),
                    content_id: None,
                },
                OutgoingPart {
                    name: "logo.png".into(),
                    content_type: "image/png".into(),
                    data: vec![0x89, b'P', b'N', b'G', 0, 1],
                    content_id: Some("logo@x".into()),
                },
            ],
            headers: vec![("X-Order-Id".into(), "4417".into())],
            in_reply_to: Some("<parent@example.test>".into()),
            ..Outgoing::default()
        }
    }

    #[test]
    fn resent_and_structure_fields_stay_out_and_a_bare_content_id_is_fine() {
        for name in [
            "Received",
            "Sender",
            "Resent-From",
            "Content-Type",
            "X-MS-Exchange-Organization-SCL",
            "Disposition-Notification-To",
        ] {
            assert!(!is_resendable_header(name), "{name}");
        }
        for name in ["X-Job", "Importance", "Keywords"] {
            assert!(is_resendable_header(name), "{name}");
        }
        let base = Outgoing {
            from: Some(Mailbox {
                name: None,
                address: Some("a@contoso.example".into()),
            }),
            to: vec![Mailbox {
                name: None,
                address: Some("b@contoso.example".into()),
            }],
            html: Some("<img src=\"cid:logo.png\">".into()),
            ..Outgoing::default()
        };
        let mut header = base.clone();
        header.headers = vec![("Content-Transfer-Encoding".into(), "base64".into())];
        assert!(build(&header, 0).is_err());
        let mut inline = base;
        inline.parts = vec![OutgoingPart {
            name: "logo.png".into(),
            content_type: "image/png".into(),
            data: vec![1, 2, 3],
            content_id: Some("logo.png".into()),
        }];
        let built = build(&inline, 0).unwrap();
        assert!(String::from_utf8_lossy(&built.bytes).contains("Content-ID: <logo.png>"));
    }

    #[test]
    fn builds_what_the_parser_reads_back() {
        let built = build(&sample(), 1_796_619_601).unwrap();
        assert_eq!(built.envelope_from, "adele@contoso.onmicrosoft.com");
        // Bcc is an envelope recipient only; a case-insensitive duplicate is sent once.
        assert_eq!(
            built.recipients,
            ["j@example.test", "c@example.test", "hidden@example.test"]
        );
        let text = String::from_utf8_lossy(&built.bytes);
        assert!(!text.to_ascii_lowercase().contains("bcc:"), "{text}");
        assert!(!text.contains("hidden@example.test"), "{text}");
        let parsed = parse(&built.bytes).unwrap();
        assert_eq!(parsed.subject.as_deref(), Some("Grüße: Rechnung 4417"));
        assert_eq!(
            parsed.message_id.as_deref(),
            Some(built.message_id.as_str())
        );
        assert!(built.message_id.ends_with("@contoso.onmicrosoft.com"));
        assert_eq!(parsed.in_reply_to.as_deref(), Some("parent@example.test"));
        assert_eq!(parsed.date.as_ref().map(|d| d.1), Some(1_796_619_601));
        assert_eq!(parsed.to[0].name.as_deref(), Some("Müller, Jürgen"));
        assert_eq!(
            parsed.text.as_deref().map(str::trim_end),
            Some("Hallo\r\nanbei die Rechnung.")
        );
        assert!(parsed.html.as_deref().unwrap().contains("cid:logo@x"));
        assert_eq!(parsed.attachments.len(), 2);
        let pdf = &parsed.attachments[0];
        assert_eq!(pdf.name.as_deref(), Some("Rechnung 4417.pdf"));
        assert_eq!(pdf.sha256, sha256_hex(b"%PDF-1.7 \x00\x01\x02"));
        let logo = &parsed.attachments[1];
        assert!(logo.inline);
        assert_eq!(logo.content_id.as_deref(), Some("logo@x"));
        assert!(
            parsed
                .headers
                .iter()
                .any(|(n, v)| n == "X-Order-Id" && v == "4417")
        );
        assert!(
            parsed
                .headers
                .iter()
                .any(|(n, v)| n == "References" && v == "<parent@example.test>")
        );
    }

    #[test]
    fn refuses_what_would_break_the_message_before_anything_is_sent() {
        let mut injected = sample();
        injected.subject = Some("hello\r\nBcc: victim@example.test".into());
        assert!(matches!(
            build(&injected, 0),
            Err(BuildError::Header { .. })
        ));
        let mut header = sample();
        header.headers = vec![("X-Evil".into(), "a\nb".into())];
        assert!(matches!(build(&header, 0), Err(BuildError::Header { .. })));
        let mut own = sample();
        own.headers = vec![("Subject".into(), "twice".into())];
        assert!(matches!(build(&own, 0), Err(BuildError::Header { .. })));
        for bad in [
            "no-at",
            "a b@example.test",
            "<a@example.test>",
            "a@",
            "@example.test",
            "a@b..c",
            "a@example.test\r\n",
        ] {
            let mut message = sample();
            message.to = vec![mailbox(None, bad)];
            assert!(
                matches!(
                    build(&message, 0),
                    Err(BuildError::Address { field: "to", .. })
                ),
                "{bad}"
            );
        }
        let mut name = sample();
        name.from = Some(mailbox(
            Some("Adele\r\nX: y"),
            "adele@contoso.onmicrosoft.com",
        ));
        assert!(matches!(
            build(&name, 0),
            Err(BuildError::Address { field: "from", .. })
        ));
        let mut nobody = sample();
        nobody.to.clear();
        nobody.cc.clear();
        nobody.bcc.clear();
        assert_eq!(build(&nobody, 0), Err(BuildError::NoRecipient));
        let mut no_from = sample();
        no_from.from = None;
        assert_eq!(build(&no_from, 0), Err(BuildError::NoFrom));
        let mut reply = sample();
        reply.in_reply_to = Some("not an id".into());
        assert!(matches!(build(&reply, 0), Err(BuildError::Header { .. })));
    }

    #[test]
    fn content_types_from_names() {
        assert_eq!(content_type_for("a.PDF"), "application/pdf");
        assert_eq!(content_type_for("report.csv"), "text/csv");
        assert_eq!(content_type_for("noext"), "application/octet-stream");
    }
}
