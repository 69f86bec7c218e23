//! IMAP SEARCH (RFC 3501 §6.4.4) over one selected folder: the criteria are compiled once (sequence and UID
//! sets resolved to sequence numbers), then matched message by message. A message's bytes are read and parsed
//! (mail-parser, headers decoded from RFC 2047) only when a criterion needs them. Text criteria match as
//! Exchange's do: a case-insensitive substring of the decoded header or body.

use std::collections::HashSet;

use imap_next::imap_types::search::SearchKey;
use imap_next::imap_types::sequence::SequenceSet;
use mail_parser::{Address, HeaderValue, MessageParser};

use super::server::MessageMeta;

/// Which text a criterion looks in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Field {
    From,
    To,
    Cc,
    Bcc,
    Subject,
    /// `HEADER name value`.
    Named(String),
    /// The decoded text of the body parts.
    Body,
    /// Header and body.
    Text,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DateOf {
    /// INTERNALDATE, in UTC.
    Internal,
    /// The `Date:` header, in its own zone.
    Sent,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Compare {
    Before,
    On,
    Since,
}

/// A compiled criterion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Criterion {
    All,
    Nothing,
    /// A system flag present (`true`) or absent.
    Flag(&'static str, bool),
    /// Message sequence numbers.
    Seqs(HashSet<u32>),
    Larger(u32),
    Smaller(u32),
    Date(DateOf, Compare, chrono::NaiveDate),
    /// `needle` (lower-cased) in `field`.
    Contains(Field, String),
    Not(Box<Criterion>),
    Or(Box<Criterion>, Box<Criterion>),
    And(Vec<Criterion>),
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).to_lowercase()
}

fn seqs(set: &SequenceSet, uid_mode: bool, uids: &[u32]) -> Criterion {
    Criterion::Seqs(
        super::server::resolve(set, uid_mode, uids)
            .into_iter()
            .map(|(seq, _)| seq)
            .collect(),
    )
}

/// Compiles `keys` (all must match) for a folder whose messages have `uids` by sequence number.
/// (`OLDER`/`YOUNGER` are not parsed: WITHIN is neither built into imap-codec here nor advertised by
/// Exchange.)
pub(crate) fn compile(keys: &[SearchKey<'_>], uids: &[u32]) -> Criterion {
    Criterion::And(keys.iter().map(|key| compile_one(key, uids)).collect())
}

fn compile_one(key: &SearchKey<'_>, uids: &[u32]) -> Criterion {
    use Criterion::{Contains, Date, Flag};
    match key {
        SearchKey::And(keys) => {
            Criterion::And(keys.as_ref().iter().map(|k| compile_one(k, uids)).collect())
        }
        SearchKey::SequenceSet(set) => seqs(set, false, uids),
        SearchKey::Uid(set) => seqs(set, true, uids),
        // No \Recent in Exchange: everything is old, nothing new or recent.
        SearchKey::All | SearchKey::Old => Criterion::All,
        SearchKey::New | SearchKey::Recent => Criterion::Nothing,
        SearchKey::Answered => Flag("\\Answered", true),
        SearchKey::Unanswered => Flag("\\Answered", false),
        SearchKey::Deleted => Flag("\\Deleted", true),
        SearchKey::Undeleted => Flag("\\Deleted", false),
        SearchKey::Draft => Flag("\\Draft", true),
        SearchKey::Undraft => Flag("\\Draft", false),
        SearchKey::Flagged => Flag("\\Flagged", true),
        SearchKey::Unflagged => Flag("\\Flagged", false),
        SearchKey::Seen => Flag("\\Seen", true),
        SearchKey::Unseen => Flag("\\Seen", false),
        // Exchange keeps no IMAP keywords.
        SearchKey::Keyword(_) => Criterion::Nothing,
        SearchKey::Unkeyword(_) => Criterion::All,
        SearchKey::Larger(n) => Criterion::Larger(*n),
        SearchKey::Smaller(n) => Criterion::Smaller(*n),
        SearchKey::Before(d) => Date(DateOf::Internal, Compare::Before, *d.as_ref()),
        SearchKey::On(d) => Date(DateOf::Internal, Compare::On, *d.as_ref()),
        SearchKey::Since(d) => Date(DateOf::Internal, Compare::Since, *d.as_ref()),
        SearchKey::SentBefore(d) => Date(DateOf::Sent, Compare::Before, *d.as_ref()),
        SearchKey::SentOn(d) => Date(DateOf::Sent, Compare::On, *d.as_ref()),
        SearchKey::SentSince(d) => Date(DateOf::Sent, Compare::Since, *d.as_ref()),
        SearchKey::From(s) => Contains(Field::From, text(s.as_ref())),
        SearchKey::To(s) => Contains(Field::To, text(s.as_ref())),
        SearchKey::Cc(s) => Contains(Field::Cc, text(s.as_ref())),
        SearchKey::Bcc(s) => Contains(Field::Bcc, text(s.as_ref())),
        SearchKey::Subject(s) => Contains(Field::Subject, text(s.as_ref())),
        SearchKey::Body(s) => Contains(Field::Body, text(s.as_ref())),
        SearchKey::Text(s) => Contains(Field::Text, text(s.as_ref())),
        SearchKey::Header(name, value) => Contains(
            Field::Named(String::from_utf8_lossy(name.as_ref()).to_ascii_lowercase()),
            text(value.as_ref()),
        ),
        SearchKey::Not(key) => Criterion::Not(Box::new(compile_one(key, uids))),
        SearchKey::Or(a, b) => Criterion::Or(
            Box::new(compile_one(a, uids)),
            Box::new(compile_one(b, uids)),
        ),
    }
}

impl Criterion {
    /// Whether matching needs the message's bytes.
    pub(crate) fn needs_content(&self) -> bool {
        match self {
            Self::Contains(..) | Self::Date(DateOf::Sent, ..) => true,
            Self::Not(c) => c.needs_content(),
            Self::Or(a, b) => a.needs_content() || b.needs_content(),
            Self::And(all) => all.iter().any(Self::needs_content),
            _ => false,
        }
    }

    /// Whether message `seq` with `meta` (and, when [`Criterion::needs_content`], its bytes) matches.
    pub(crate) fn matches(&self, seq: u32, meta: &MessageMeta, content: Option<&Content>) -> bool {
        match self {
            Self::All => true,
            Self::Nothing => false,
            Self::Flag(flag, present) => {
                meta.flags.iter().any(|f| f.eq_ignore_ascii_case(flag)) == *present
            }
            Self::Seqs(set) => set.contains(&seq),
            Self::Larger(n) => meta.size > *n,
            Self::Smaller(n) => meta.size < *n,
            Self::Date(of, compare, date) => {
                let day = match of {
                    DateOf::Internal => chrono::DateTime::from_timestamp(meta.internal_date, 0)
                        .map(|t| t.date_naive()),
                    DateOf::Sent => content.and_then(|c| c.sent),
                };
                day.is_some_and(|day| match compare {
                    Compare::Before => day < *date,
                    Compare::On => day == *date,
                    Compare::Since => day >= *date,
                })
            }
            Self::Contains(field, needle) => {
                content.is_some_and(|c| c.field(field).iter().any(|t| t.contains(needle.as_str())))
            }
            Self::Not(c) => !c.matches(seq, meta, content),
            Self::Or(a, b) => a.matches(seq, meta, content) || b.matches(seq, meta, content),
            Self::And(all) => all.iter().all(|c| c.matches(seq, meta, content)),
        }
    }
}

/// What text criteria look at in one message, decoded and lower-cased.
#[derive(Debug, Default)]
pub(crate) struct Content {
    /// Every header: (lower-cased name, decoded value).
    headers: Vec<(String, String)>,
    /// The decoded text of the text and HTML parts.
    body: String,
    /// The `Date:` header's day, in its own zone.
    sent: Option<chrono::NaiveDate>,
}

fn address_text(address: &Address<'_>) -> String {
    address
        .iter()
        .map(|a| {
            format!(
                "{} <{}>",
                a.name.as_deref().unwrap_or(""),
                a.address.as_deref().unwrap_or("")
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn value_text(value: &HeaderValue<'_>) -> String {
    match value {
        HeaderValue::Address(a) => address_text(a),
        HeaderValue::Text(t) => t.to_string(),
        HeaderValue::TextList(list) => list.join(", "),
        HeaderValue::DateTime(d) => d.to_rfc822(),
        HeaderValue::ContentType(c) => c.ctype().to_owned(),
        HeaderValue::Received(_) | HeaderValue::Empty => String::new(),
    }
}

impl Content {
    /// Parses `bytes` (a message, CRLF lines).
    pub(crate) fn parse(bytes: &[u8]) -> Self {
        let Some(message) = MessageParser::default().parse(bytes) else {
            return Self {
                body: text(bytes),
                ..Self::default()
            };
        };
        let headers = message
            .headers()
            .iter()
            .map(|h| {
                let name = h.name.as_str().to_ascii_lowercase();
                let value = match &h.value {
                    HeaderValue::Received(_) | HeaderValue::Empty => {
                        let raw = bytes.get(h.offset_start as usize..h.offset_end as usize);
                        raw.map(|r| String::from_utf8_lossy(r).trim().to_owned())
                            .unwrap_or_default()
                    }
                    value => value_text(value),
                };
                (name, value.to_lowercase())
            })
            .collect();
        let mut body = String::new();
        for index in 0..message.text_body_count() {
            if let Some(part) = message.body_text(index) {
                body.push_str(&part.to_lowercase());
                body.push('\n');
            }
        }
        for index in 0..message.html_body_count() {
            if let Some(part) = message.body_html(index) {
                body.push_str(&part.to_lowercase());
                body.push('\n');
            }
        }
        let sent = message.date().and_then(|d| {
            chrono::NaiveDate::from_ymd_opt(i32::from(d.year), u32::from(d.month), u32::from(d.day))
        });
        Self {
            headers,
            body,
            sent,
        }
    }

    fn field(&self, field: &Field) -> Vec<&str> {
        let named = |name: &str| -> Vec<&str> {
            self.headers
                .iter()
                .filter(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
                .collect()
        };
        match field {
            Field::From => named("from"),
            Field::To => named("to"),
            Field::Cc => named("cc"),
            Field::Bcc => named("bcc"),
            Field::Subject => named("subject"),
            Field::Named(name) => named(name),
            Field::Body => vec![self.body.as_str()],
            Field::Text => self
                .headers
                .iter()
                .map(|(_, v)| v.as_str())
                .chain(std::iter::once(self.body.as_str()))
                .collect(),
        }
    }
}

/// Whether a SEARCH's text criteria are all ASCII (then `CHARSET UTF-8` is refused, as Outlook does).
pub(crate) fn all_ascii(keys: &[SearchKey<'_>]) -> bool {
    keys.iter().all(|key| match key {
        SearchKey::From(s)
        | SearchKey::To(s)
        | SearchKey::Cc(s)
        | SearchKey::Bcc(s)
        | SearchKey::Subject(s)
        | SearchKey::Body(s)
        | SearchKey::Text(s) => s.as_ref().is_ascii(),
        SearchKey::Header(name, value) => name.as_ref().is_ascii() && value.as_ref().is_ascii(),
        SearchKey::Not(k) => all_ascii(std::slice::from_ref(k)),
        SearchKey::Or(a, b) => {
            all_ascii(std::slice::from_ref(a)) && all_ascii(std::slice::from_ref(b))
        }
        SearchKey::And(keys) => all_ascii(keys.as_ref()),
        _ => true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(uid: u32, flags: &[&str], size: u32) -> MessageMeta {
        MessageMeta {
            uid,
            flags: flags.iter().map(|f| (*f).to_owned()).collect(),
            size,
            internal_date: 1_796_860_800, // 2026-12-09T00:00:00Z
        }
    }

    fn day(y: i32, m: u32, d: u32) -> chrono::NaiveDate {
        chrono::NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    #[test]
    fn sent_dates_are_read_in_the_headers_own_zone() {
        // 23:30 on the 1st in New York is the 2nd in UTC: SENTON 1-Dec matches, 2-Dec does not.
        let content = Content::parse(
            b"From: a@b.c\r\nDate: Tue, 01 Dec 2026 23:30:00 -0500\r\nSubject: late\r\n\r\nbody\r\n",
        );
        let m = meta(1, &[], 10);
        let on = |d| Criterion::Date(DateOf::Sent, Compare::On, d);
        assert!(on(day(2026, 12, 1)).matches(1, &m, Some(&content)));
        assert!(!on(day(2026, 12, 2)).matches(1, &m, Some(&content)));
        // INTERNALDATE is compared in UTC.
        let since = Criterion::Date(DateOf::Internal, Compare::Since, day(2026, 12, 9));
        assert!(since.matches(1, &m, None));
        let before = Criterion::Date(DateOf::Internal, Compare::Before, day(2026, 12, 9));
        assert!(!before.matches(1, &m, None));
    }

    #[test]
    fn text_is_matched_decoded_and_without_case() {
        let content = Content::parse(
            "From: =?ISO-8859-1?Q?Jos=E9_M=FCller?= <jose@x.test>\r\nSubject: =?UTF-8?B?R3LDvMOfZQ==?=\r\n\
             Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n\
             Stra=C3=9Fe und DOCKING\r\n"
                .as_bytes(),
        );
        let m = meta(1, &["\\Seen"], 10);
        let has = |field, needle: &str| Criterion::Contains(field, needle.to_lowercase());
        assert!(has(Field::From, "MÜLLER").matches(1, &m, Some(&content)));
        assert!(has(Field::Subject, "grüße").matches(1, &m, Some(&content)));
        assert!(has(Field::Body, "straße und docking").matches(1, &m, Some(&content)));
        assert!(!has(Field::Body, "jose").matches(1, &m, Some(&content)));
        assert!(has(Field::Text, "jose@x.test").matches(1, &m, Some(&content)));
        assert!(Criterion::Flag("\\Seen", true).matches(1, &m, None));
        assert!(Criterion::Flag("\\Flagged", false).matches(1, &m, None));
        assert!(
            Criterion::Larger(9).matches(1, &m, None)
                && !Criterion::Larger(10).matches(1, &m, None)
        );
        assert!(has(Field::Body, "x").needs_content());
        assert!(!Criterion::Not(Box::new(Criterion::Larger(1))).needs_content());
    }
}
