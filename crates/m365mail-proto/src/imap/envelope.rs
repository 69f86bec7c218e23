//! FETCH ENVELOPE (RFC 3501 §7.4.2): the date, subject, address lists, In-Reply-To and Message-ID of a
//! message, from its header. Date, subject and the ids are the header's text as it is (unfolded, RFC 2047
//! words left encoded, as the RFC asks); addresses are parsed (mail-parser: groups, comments, quoting) and a
//! display name that is not ASCII is given back as one RFC 2047 UTF-8 word, so the answer stays 7-bit.
//! Sender and Reply-To default to From.

use base64::Engine as _;
use imap_next::imap_types::core::{IString, NString};
use imap_next::imap_types::envelope::{Address as ImapAddress, Envelope};
use mail_parser::{Address, HeaderName, MessageParser};

fn nstring(text: Option<&str>) -> NString<'static> {
    let Some(text) = text.map(str::trim).filter(|t| !t.is_empty()) else {
        return NString(None);
    };
    // A quoted string where it can be one, else a literal (NUL, which no header should hold, dropped).
    let text: String = text.chars().filter(|c| *c != '\0').collect();
    NString(IString::try_from(text).ok())
}

/// The first `name` field of the header block, unfolded, as written.
pub(crate) fn raw_field(header: &str, name: &str) -> Option<String> {
    let mut lines = header.split("\r\n").peekable();
    while let Some(line) = lines.next() {
        let Some((field, value)) = line.split_once(':') else {
            continue;
        };
        if field.starts_with([' ', '\t']) || !field.trim_end().eq_ignore_ascii_case(name) {
            continue;
        }
        let mut value = value.to_owned();
        while let Some(next) = lines.next_if(|l| l.starts_with([' ', '\t'])) {
            value.push_str(next);
        }
        return Some(value.trim().to_owned());
    }
    None
}

/// A display name as IMAP sends it: ASCII as is, anything else as one `=?UTF-8?B?…?=` word.
fn display_name(name: &str) -> String {
    if name.is_ascii() {
        name.to_owned()
    } else {
        format!(
            "=?UTF-8?B?{}?=",
            base64::engine::general_purpose::STANDARD.encode(name.as_bytes())
        )
    }
}

fn address(name: Option<&str>, address: Option<&str>) -> ImapAddress<'static> {
    let (mailbox, host) = match address.and_then(|a| a.rsplit_once('@')) {
        Some((mailbox, host)) => (Some(mailbox), Some(host)),
        None => (address, None),
    };
    ImapAddress {
        name: nstring(name.map(display_name).as_deref()),
        adl: NString(None),
        mailbox: nstring(mailbox),
        host: nstring(host),
    }
}

fn addresses(value: Option<&Address<'_>>) -> Vec<ImapAddress<'static>> {
    match value {
        None => Vec::new(),
        Some(Address::List(list)) => list
            .iter()
            .map(|a| address(a.name.as_deref(), a.address.as_deref()))
            .collect(),
        // A group: (NIL NIL "name" NIL), its members, then (NIL NIL NIL NIL).
        Some(Address::Group(groups)) => {
            let mut out = Vec::new();
            for group in groups {
                if let Some(name) = group.name.as_deref() {
                    out.push(ImapAddress {
                        name: NString(None),
                        adl: NString(None),
                        mailbox: nstring(Some(name)),
                        host: NString(None),
                    });
                }
                out.extend(
                    group
                        .addresses
                        .iter()
                        .map(|a| address(a.name.as_deref(), a.address.as_deref())),
                );
                if group.name.is_some() {
                    out.push(ImapAddress {
                        name: NString(None),
                        adl: NString(None),
                        mailbox: NString(None),
                        host: NString(None),
                    });
                }
            }
            out
        }
    }
}

/// The ENVELOPE of `bytes` (a message, CRLF lines).
pub(crate) fn envelope(bytes: &[u8]) -> Envelope<'static> {
    let header = String::from_utf8_lossy(&bytes[..super::server::header_end(bytes)]).into_owned();
    let parsed = MessageParser::default().parse_headers(bytes);
    let list = |name: HeaderName<'static>| {
        addresses(
            parsed
                .as_ref()
                .and_then(|m| m.header(name))
                .and_then(|v| v.as_address()),
        )
    };
    let from = list(HeaderName::From);
    let sender = list(HeaderName::Sender);
    let reply_to = list(HeaderName::ReplyTo);
    Envelope {
        date: nstring(raw_field(&header, "Date").as_deref()),
        subject: nstring(raw_field(&header, "Subject").as_deref()),
        sender: if sender.is_empty() {
            from.clone()
        } else {
            sender
        },
        reply_to: if reply_to.is_empty() {
            from.clone()
        } else {
            reply_to
        },
        from,
        to: list(HeaderName::To),
        cc: list(HeaderName::Cc),
        bcc: list(HeaderName::Bcc),
        in_reply_to: nstring(raw_field(&header, "In-Reply-To").as_deref()),
        message_id: nstring(raw_field(&header, "Message-ID").as_deref()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(envelope: &Envelope<'_>) -> String {
        use imap_next::imap_types::fetch::MessageDataItem;
        use imap_next::imap_types::response::Data;
        let data = Data::Fetch {
            seq: std::num::NonZeroU32::new(1).unwrap(),
            items: vec![MessageDataItem::Envelope(envelope.clone())]
                .try_into()
                .unwrap(),
        };
        use imap_codec::encode::Encoder as _;
        let bytes = imap_codec::ResponseCodec::default()
            .encode(&imap_next::imap_types::response::Response::Data(data))
            .dump();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn an_envelope_as_rfc_3501_writes_it() {
        let message = b"Date: Tue, 01 Dec 2026 09:02:07 +0100\r\n\
            Subject: =?UTF-8?B?R3LDvMOfZQ==?=\r\n\
            From: Rachel Kim <rachel.kim@fabrikam.com>\r\n\
            To: =?ISO-8859-1?Q?Jos=E9?= <jose@x.test>, c@d.test\r\n\
            Cc: Team: a@b.test;\r\n\
            Message-ID: <m1@fabrikam.com>\r\n\r\nbody\r\n";
        let text = wire(&envelope(message));
        assert_eq!(
            text,
            "* 1 FETCH (ENVELOPE (\"Tue, 01 Dec 2026 09:02:07 +0100\" \"=?UTF-8?B?R3LDvMOfZQ==?=\" \
             ((\"Rachel Kim\" NIL \"rachel.kim\" \"fabrikam.com\")) ((\"Rachel Kim\" NIL \"rachel.kim\" \"fabrikam.com\")) \
             ((\"Rachel Kim\" NIL \"rachel.kim\" \"fabrikam.com\")) \
             ((\"=?UTF-8?B?Sm9zw6k=?=\" NIL \"jose\" \"x.test\")(NIL NIL \"c\" \"d.test\")) \
             ((NIL NIL \"Team\" NIL)(NIL NIL \"a\" \"b.test\")(NIL NIL NIL NIL)) NIL NIL \"<m1@fabrikam.com>\"))\r\n"
        );
    }
}
