//! The message record: one JSON object per message, the same for every reader (POP3 now, IMAP and Graph
//! later). Its schema is `docs/message.schema.json`; [`SCHEMA_VERSION`] changes when a field changes meaning.

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::mime::{Mailbox, ParsedMessage, sha256_hex};
use crate::store::SourceKey;

/// The record format's version.
pub const SCHEMA_VERSION: u32 = 1;

/// One attachment or inline part of a record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachmentRecord {
    /// Position among the message's attachments, from 1.
    pub index: usize,
    /// The file name the message gives, if any.
    pub name: Option<String>,
    /// `type/subtype`.
    pub content_type: String,
    /// Decoded size in bytes.
    pub size: u64,
    /// SHA-256 of the decoded bytes, hex.
    pub sha256: String,
    /// Shown in the body rather than attached.
    pub inline: bool,
    /// `Content-ID`, without angle brackets.
    pub content_id: Option<String>,
    /// Where the sink stored it (with `--out-dir`), relative to the output directory.
    pub path: Option<String>,
}

/// One message as a reader hands it on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageRecord {
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// The stable id: protocol, account, server, folder and the server's unique id for the message.
    pub id: String,
    /// A file-name-safe form of `id` (`<uid>-<hash>`): the output directory's names start with it.
    pub key: String,
    /// Where the message came from.
    pub source: SourceKey,
    /// The server's unique id (POP3 UIDL).
    pub uid: String,
    /// Size in bytes (as the server counts it when the message was not downloaded).
    pub size: u64,
    /// SHA-256 of the message as received, hex (absent when not downloaded).
    pub sha256: Option<String>,
    /// `Message-ID` without angle brackets.
    pub message_id: Option<String>,
    /// `Date` in UTC, RFC 3339.
    pub date: Option<String>,
    /// `From`.
    pub from: Vec<Mailbox>,
    /// `To`.
    pub to: Vec<Mailbox>,
    /// `Cc`.
    pub cc: Vec<Mailbox>,
    /// `Reply-To`.
    pub reply_to: Vec<Mailbox>,
    /// `Subject`, decoded.
    pub subject: Option<String>,
    /// `In-Reply-To`.
    pub in_reply_to: Option<String>,
    /// Every header field in order: `[name, unfolded raw value]`.
    pub headers: Vec<[String; 2]>,
    /// The `text/plain` body.
    pub text: Option<String>,
    /// The `text/html` body.
    pub html: Option<String>,
    /// Attachments and inline parts.
    pub attachments: Vec<AttachmentRecord>,
    /// Where the sink stored the raw message (with `--out-dir` and `--eml`, or for an unreadable message),
    /// relative to the output directory.
    pub eml_path: Option<String>,
    /// Why the message was not downloaded: `too large`, or `refused by the server` (RETR answered `-ERR`).
    pub skipped: Option<String>,
    /// Why the message could not be parsed; the record then holds the raw bytes (`raw_base64`) or their
    /// file (`eml_path`).
    pub error: Option<String>,
    /// The raw message, base64, for an unreadable message when there is no output directory.
    pub raw_base64: Option<String>,
}

impl SourceKey {
    /// The stable id of message `uid` of this source.
    pub fn message_id(&self, uid: &str) -> String {
        format!(
            "{}://{}@{}/{}/{}",
            self.protocol, self.account, self.server, self.folder, uid
        )
    }
}

/// A file-name-safe key for a stable id: the uid's safe characters (at most 64) and 16 hex digits of the
/// id's SHA-256, so two messages never share a key and no name can climb out of the directory.
pub fn file_key(id: &str, uid: &str) -> String {
    let safe: String = uid
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    format!("{safe}-{}", &sha256_hex(id.as_bytes())[..16])
}

impl MessageRecord {
    fn empty(source: &SourceKey, uid: &str, size: u64) -> Self {
        let id = source.message_id(uid);
        Self {
            schema_version: SCHEMA_VERSION,
            key: file_key(&id, uid),
            id,
            source: source.clone(),
            uid: uid.to_string(),
            size,
            sha256: None,
            message_id: None,
            date: None,
            from: Vec::new(),
            to: Vec::new(),
            cc: Vec::new(),
            reply_to: Vec::new(),
            subject: None,
            in_reply_to: None,
            headers: Vec::new(),
            text: None,
            html: None,
            attachments: Vec::new(),
            eml_path: None,
            skipped: None,
            error: None,
            raw_base64: None,
        }
    }

    fn fill(&mut self, parsed: &ParsedMessage) {
        self.message_id = parsed.message_id.clone();
        self.date = parsed.date.as_ref().map(|(text, _)| text.clone());
        self.from = parsed.from.clone();
        self.to = parsed.to.clone();
        self.cc = parsed.cc.clone();
        self.reply_to = parsed.reply_to.clone();
        self.subject = parsed.subject.clone();
        self.in_reply_to = parsed.in_reply_to.clone();
        self.headers = parsed
            .headers
            .iter()
            .map(|(n, v)| [n.clone(), v.clone()])
            .collect();
    }

    /// The record of a downloaded message (`parsed` is `Err` when it cannot be read as mail).
    pub fn downloaded(
        source: &SourceKey,
        uid: &str,
        raw: &[u8],
        parsed: &Result<ParsedMessage, crate::mime::MimeError>,
    ) -> Self {
        let mut record = Self::empty(source, uid, raw.len() as u64);
        record.sha256 = Some(sha256_hex(raw));
        match parsed {
            Ok(parsed) => {
                record.fill(parsed);
                record.text = parsed.text.clone();
                record.html = parsed.html.clone();
                record.attachments = parsed
                    .attachments
                    .iter()
                    .enumerate()
                    .map(|(i, a)| AttachmentRecord {
                        index: i + 1,
                        name: a.name.clone(),
                        content_type: a.content_type.clone(),
                        size: a.data.len() as u64,
                        sha256: a.sha256.clone(),
                        inline: a.inline,
                        content_id: a.content_id.clone(),
                        path: None,
                    })
                    .collect();
            }
            Err(error) => {
                record.error = Some(error.to_string());
                record.raw_base64 = Some(base64::engine::general_purpose::STANDARD.encode(raw));
            }
        }
        record
    }

    /// The record of a message not downloaded because of its size; `header` is what TOP gave, if anything.
    pub fn too_large(
        source: &SourceKey,
        uid: &str,
        size: u64,
        header: Option<&ParsedMessage>,
    ) -> Self {
        let mut record = Self::empty(source, uid, size);
        if let Some(header) = header {
            record.fill(header);
        }
        record.skipped = Some("too large".into());
        record
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_safe_and_distinct() {
        let a = file_key("pop3://a@h:1/INBOX/../../etc", "../../etc");
        assert_eq!(&a[..9], "______etc");
        assert!(!a.contains('/') && !a.contains('.'));
        let b = file_key("pop3://b@h:1/INBOX/../../etc", "../../etc");
        assert_ne!(a, b, "same uid, different source");
        let long = "x".repeat(500);
        assert_eq!(file_key("id", &long).len(), 64 + 1 + 16);
        assert_eq!(
            file_key("id", "\u{1}\r\n"),
            format!("___-{}", &sha256_hex(b"id")[..16])
        );
    }
}
