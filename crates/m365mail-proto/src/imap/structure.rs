//! A message's MIME structure (RFC 2045/2046) as IMAP serves it: BODYSTRUCTURE and BODY (RFC 3501 §7.4.2)
//! and the body sections `BODY[1.2]`, `BODY[1.2.MIME]`, `BODY[2.HEADER]`, `BODY[2.TEXT]` (§6.4.5).
//!
//! Parsed once per message into byte ranges plus the few header fields BODYSTRUCTURE shows; a store keeps
//! the result next to the message (see `ImapBackend::structure`). Sizes and line counts are those of the
//! body octets as stored (the encoded form); a part's body ends before the CRLF that precedes the next
//! boundary, which belongs to the delimiter (RFC 2046 §5.1.1). Field values are given as written (RFC 2047
//! words and RFC 2231 parameters left encoded, as RFC 3501 asks); types, subtypes and parameter names are
//! lower-cased, an absent transfer encoding is `7bit` and a text part without a charset says `us-ascii`,
//! as Dovecot answers. Nesting deeper than [`MAX_DEPTH`] or beyond [`MAX_PARTS`] parts is served as an
//! opaque `application/octet-stream` part, so a hostile message cannot make the answer unbounded.

use std::num::NonZeroU32;
use std::ops::Range;

use imap_next::imap_types::body::{
    BasicFields, Body, BodyStructure, Disposition, Language, Location, MultiPartExtensionData,
    SinglePartExtensionData, SpecificFields,
};
use imap_next::imap_types::core::{IString, NString, Vec1};
use imap_next::imap_types::fetch::Section;

use super::envelope::{envelope, raw_field};
use super::server::header_end;

/// Deepest nesting of multiparts and attached messages served as a structure.
pub const MAX_DEPTH: u32 = 32;
/// Most parts in one message served as a structure.
pub const MAX_PARTS: u32 = 2_000;

/// A parsed message: its top-level entity and everything under it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MimeStructure {
    root: Entity,
}

/// One MIME entity: a header block, a body, and what the body holds.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entity {
    /// The header block, its closing blank line included.
    header: Range<usize>,
    body: Range<usize>,
    fields: Fields,
    /// Lines of the body: its LFs (a last line without one is not counted, as Dovecot counts).
    lines: u32,
    content: Content,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Content {
    Single,
    Multipart(Vec<Entity>),
    /// A `message/rfc822` part: the message it holds.
    Message(Box<Entity>),
}

/// The header fields BODYSTRUCTURE shows.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Fields {
    media_type: String,
    subtype: String,
    params: Vec<(String, String)>,
    id: Option<String>,
    description: Option<String>,
    encoding: Option<String>,
    md5: Option<String>,
    disposition: Option<(String, Vec<(String, String)>)>,
    language: Vec<String>,
    location: Option<String>,
}

impl MimeStructure {
    /// The structure of `message` (RFC 5322, CRLF line endings; bare LFs are tolerated).
    pub fn parse(message: &[u8]) -> Self {
        let mut budget = MAX_PARTS;
        Self {
            root: Entity::parse(
                message,
                0..message.len(),
                message.len(),
                false,
                0,
                &mut budget,
            ),
        }
    }

    /// BODYSTRUCTURE (`extended`, with the extension data) or BODY.
    pub fn body_structure(&self, message: &[u8], extended: bool) -> BodyStructure<'static> {
        self.root.to_imap(message, extended)
    }

    /// Whether any part is an attachment: a `Content-Disposition: attachment`, or a part that is not text,
    /// not a multipart and not the message's only body.
    pub fn has_attachment(&self) -> bool {
        fn walk(entity: &Entity, top: bool) -> bool {
            if let Some((kind, _)) = &entity.fields.disposition
                && kind == "attachment"
            {
                return true;
            }
            match &entity.content {
                Content::Multipart(children) => children.iter().any(|c| walk(c, false)),
                Content::Message(_) => !top,
                Content::Single => !top && entity.fields.media_type != "text",
            }
        }
        walk(&self.root, true)
    }

    /// The octets of a body section (`None` for the whole message); empty when the message has no such part
    /// (Dovecot's answer too; RFC 3501 leaves it open).
    pub fn section(&self, message: &[u8], section: Option<&Section<'_>>) -> Vec<u8> {
        let Some(section) = section else {
            return message.to_vec();
        };
        self.existing_section(message, section).unwrap_or_default()
    }

    fn existing_section(&self, message: &[u8], section: &Section<'_>) -> Option<Vec<u8>> {
        let numbers = |part: Option<&imap_next::imap_types::fetch::Part>| -> Vec<NonZeroU32> {
            part.map(|p| p.0.as_ref().to_vec()).unwrap_or_default()
        };
        // HEADER, TEXT and HEADER.FIELDS name a message: the whole one, or an attached one by its part.
        let message_entity = |path: &[NonZeroU32]| -> Option<&Entity> {
            if path.is_empty() {
                return Some(&self.root);
            }
            match &self.part(path)?.content {
                Content::Message(inner) => Some(inner),
                _ => None,
            }
        };
        let names = |list: &Vec1<imap_next::imap_types::core::AString<'_>>| -> Vec<String> {
            list.as_ref()
                .iter()
                .map(|n| String::from_utf8_lossy(n.as_ref()).into_owned())
                .collect()
        };
        Some(match section {
            Section::Part(part) => message[self.part(&numbers(Some(part)))?.body.clone()].to_vec(),
            Section::Mime(part) => {
                message[self.part(&numbers(Some(part)))?.header.clone()].to_vec()
            }
            Section::Header(part) => {
                message[message_entity(&numbers(part.as_ref()))?.header.clone()].to_vec()
            }
            Section::Text(part) => {
                message[message_entity(&numbers(part.as_ref()))?.body.clone()].to_vec()
            }
            Section::HeaderFields(part, list) => header_fields(
                &message[message_entity(&numbers(part.as_ref()))?.header.clone()],
                &names(list),
                false,
            ),
            Section::HeaderFieldsNot(part, list) => header_fields(
                &message[message_entity(&numbers(part.as_ref()))?.header.clone()],
                &names(list),
                true,
            ),
        })
    }

    /// The part a section number names (RFC 3501 §6.4.5), resolved as Dovecot does: a number indexes a
    /// multipart's parts; a part that is not a multipart is its own part `1`, and only an attached message
    /// may be entered further (its numbers then index the message it holds).
    fn part(&self, path: &[NonZeroU32]) -> Option<&Entity> {
        let mut part = &self.root;
        for (at, number) in path.iter().enumerate() {
            let more = at + 1 < path.len();
            part = match &part.content {
                Content::Multipart(children) => children.get(number.get() as usize - 1)?,
                Content::Message(_) if number.get() == 1 => part,
                Content::Single if number.get() == 1 && !more => part,
                _ => return None,
            };
            if more && let Content::Message(inner) = &part.content {
                part = inner;
            }
        }
        Some(part)
    }
}

impl Entity {
    /// The entity in `range`. `limit` is where the next delimiter line starts (`range` ends before the line
    /// break that precedes it): an entity that ends with a closing delimiter keeps that line's own line
    /// break, as Dovecot counts it (the break then ends the closing line and precedes the next delimiter).
    fn parse(
        message: &[u8],
        range: Range<usize>,
        limit: usize,
        in_digest: bool,
        depth: u32,
        budget: &mut u32,
    ) -> Self {
        let header_len = header_end(&message[range.clone()]);
        let header = range.start..range.start + header_len;
        let mut end = range.end;
        let mut fields = Fields::parse(&message[header.clone()], in_digest);
        *budget = budget.saturating_sub(1);
        let too_deep = depth >= MAX_DEPTH || *budget == 0;
        let content = if fields.media_type == "multipart" && !too_deep {
            let digest = fields.subtype == "digest";
            let boundary = fields
                .params
                .iter()
                .find(|(name, _)| name == "boundary")
                .map(|(_, value)| value.clone());
            let (parts, closed_at) = boundary
                .map(|b| boundary_parts(message, header.end..range.end, b.as_bytes()))
                .unwrap_or_default();
            // The closing line lost its line break to the next delimiter: it keeps it.
            if closed_at == Some(range.end)
                && message.get(range.end.wrapping_sub(1)) != Some(&b'\n')
            {
                end = limit;
            }
            let mut children = Vec::new();
            for (part, part_limit) in parts {
                if *budget == 0 {
                    break;
                }
                children.push(Self::parse(
                    message,
                    part,
                    part_limit,
                    digest,
                    depth + 1,
                    budget,
                ));
            }
            Content::Multipart(children)
        } else if fields.is_attached_message() && !too_deep {
            let inner = Self::parse(
                message,
                header.end..range.end,
                limit,
                false,
                depth + 1,
                budget,
            );
            end = inner.body.end;
            Content::Message(Box::new(inner))
        } else {
            if too_deep && (fields.media_type == "multipart" || fields.is_attached_message()) {
                fields.media_type = "application".to_owned();
                fields.subtype = "octet-stream".to_owned();
                fields.params.clear();
            }
            Content::Single
        };
        let body = header.end..end;
        let newlines = message[body.clone()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        Self {
            header,
            body,
            fields,
            lines: u32::try_from(newlines).unwrap_or(u32::MAX),
            content,
        }
    }

    fn to_imap(&self, message: &[u8], extended: bool) -> BodyStructure<'static> {
        let fields = &self.fields;
        // A multipart whose boundary never shows has no parts; IMAP needs one: an empty text part.
        if let Content::Multipart(children) = &self.content {
            let bodies: Vec<BodyStructure<'static>> = if children.is_empty() {
                vec![empty_text_part(extended)]
            } else {
                children
                    .iter()
                    .map(|c| c.to_imap(message, extended))
                    .collect()
            };
            return BodyStructure::Multi {
                bodies: Vec1::try_from(bodies).expect("at least one part"),
                subtype: istring(&fields.subtype),
                extension_data: extended.then(|| MultiPartExtensionData {
                    parameter_list: params(&fields.params),
                    tail: Some(fields.disposition_tail()),
                }),
            };
        }
        let basic = BasicFields {
            parameter_list: params(&fields.params),
            id: nstring(fields.id.as_deref()),
            description: nstring(fields.description.as_deref()),
            content_transfer_encoding: istring(fields.encoding.as_deref().unwrap_or("7bit")),
            size: u32::try_from(self.body.len()).unwrap_or(u32::MAX),
        };
        let specific = match &self.content {
            Content::Message(inner) => SpecificFields::Message {
                envelope: Box::new(envelope(&message[inner.header.start..inner.body.end])),
                body_structure: Box::new(inner.to_imap(message, extended)),
                number_of_lines: self.lines,
            },
            _ if fields.media_type == "text" => SpecificFields::Text {
                subtype: istring(&fields.subtype),
                number_of_lines: self.lines,
            },
            _ => SpecificFields::Basic {
                r#type: istring(&fields.media_type),
                subtype: istring(&fields.subtype),
            },
        };
        BodyStructure::Single {
            body: Body { basic, specific },
            extension_data: extended.then(|| SinglePartExtensionData {
                md5: nstring(fields.md5.as_deref()),
                tail: Some(fields.disposition_tail()),
            }),
        }
    }
}

fn empty_text_part(extended: bool) -> BodyStructure<'static> {
    let fields = Fields::parse(b"", false);
    BodyStructure::Single {
        body: Body {
            basic: BasicFields {
                parameter_list: params(&fields.params),
                id: NString(None),
                description: NString(None),
                content_transfer_encoding: istring("7bit"),
                size: 0,
            },
            specific: SpecificFields::Text {
                subtype: istring("plain"),
                number_of_lines: 0,
            },
        },
        extension_data: extended.then(|| SinglePartExtensionData {
            md5: NString(None),
            tail: Some(fields.disposition_tail()),
        }),
    }
}

impl Fields {
    fn parse(header: &[u8], in_digest: bool) -> Self {
        let header = String::from_utf8_lossy(header);
        let field = |name: &str| raw_field(&header, name).filter(|v| !v.is_empty());
        let content_type = field("Content-Type").and_then(|v| {
            let (kind, params) = parse_parameterised(&v);
            let (media_type, subtype) = kind.split_once('/')?;
            let valid = |s: &str| !s.is_empty() && s.bytes().all(is_token_byte);
            (valid(media_type) && valid(subtype)).then(|| {
                (
                    media_type.to_ascii_lowercase(),
                    subtype.to_ascii_lowercase(),
                    params,
                )
            })
        });
        // RFC 2045 §5.2: no (or an unusable) Content-Type is text/plain; us-ascii, message/rfc822 in a digest.
        let (media_type, subtype, mut params) = content_type.unwrap_or_else(|| {
            if in_digest {
                ("message".into(), "rfc822".into(), Vec::new())
            } else {
                ("text".into(), "plain".into(), Vec::new())
            }
        });
        if media_type == "text" && !params.iter().any(|(name, _)| name == "charset") {
            params.push(("charset".to_owned(), "us-ascii".to_owned()));
        }
        Self {
            media_type,
            subtype,
            params,
            id: field("Content-ID"),
            description: field("Content-Description"),
            encoding: field("Content-Transfer-Encoding").map(|v| strip_comments(&v)),
            md5: field("Content-MD5"),
            disposition: field("Content-Disposition").and_then(|v| {
                let (kind, params) = parse_parameterised(&v);
                (!kind.is_empty()).then(|| (kind.to_ascii_lowercase(), params))
            }),
            language: field("Content-Language")
                .map(|v| {
                    strip_comments(&v)
                        .split(',')
                        .map(str::trim)
                        .filter(|l| !l.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
            location: field("Content-Location"),
        }
    }

    /// A `message/rfc822` whose body is the message itself (not base64 or quoted-printable of it).
    fn is_attached_message(&self) -> bool {
        self.media_type == "message"
            && self.subtype == "rfc822"
            && self.encoding.as_deref().is_none_or(|e| {
                ["7bit", "8bit", "binary"]
                    .iter()
                    .any(|plain| e.eq_ignore_ascii_case(plain))
            })
    }

    fn disposition_tail(&self) -> Disposition<'static> {
        Disposition {
            disposition: self
                .disposition
                .as_ref()
                .map(|(kind, list)| (istring(kind), params(list))),
            tail: Some(Language {
                language: self.language.iter().map(|l| istring(l)).collect(),
                tail: Some(Location {
                    location: nstring(self.location.as_deref()),
                    extensions: Vec::new(),
                }),
            }),
        }
    }
}

/// The parts of a multipart's body: between delimiter lines `--boundary`, each part ending before the line
/// break that precedes the next delimiter (with where that delimiter line starts); the preamble and the
/// epilogue are not parts. A delimiter is the boundary at the start of a line followed by `--`, white space or
/// the line's end (so a longer boundary sharing the prefix is not taken for it). Also where the closing
/// delimiter's line ends, if there is one; without it the last part runs to the end.
fn boundary_parts(
    message: &[u8],
    body: Range<usize>,
    boundary: &[u8],
) -> (Vec<(Range<usize>, usize)>, Option<usize>) {
    let mut parts = Vec::new();
    let mut part_start = None;
    let mut line_start = body.start;
    while line_start < body.end {
        let line_end = message[line_start..body.end]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(body.end, |at| line_start + at + 1);
        let line = &message[line_start..line_end];
        if let Some(rest) = line
            .strip_prefix(b"--")
            .and_then(|l| l.strip_prefix(boundary))
        {
            let closing = rest.starts_with(b"--");
            let tail = if closing { &rest[2..] } else { rest };
            if tail.iter().all(|b| b" \t\r\n".contains(b)) {
                if let Some(start) = part_start {
                    let mut end = line_start;
                    if end > start && message[end - 1] == b'\n' {
                        end -= 1;
                        if end > start && message[end - 1] == b'\r' {
                            end -= 1;
                        }
                    }
                    parts.push((start..end, line_start));
                }
                if closing {
                    return (parts, Some(line_end));
                }
                part_start = Some(line_end);
            }
        }
        line_start = line_end;
    }
    parts.extend(part_start.map(|start| (start..body.end, body.end)));
    (parts, None)
}

/// RFC 2045 `token` characters.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?=".contains(&b)
}

/// `value` without RFC 822 comments and surrounding white space.
fn strip_comments(value: &str) -> String {
    let mut out = String::new();
    let mut depth = 0u32;
    let mut quoted = false;
    let mut escaped = false;
    for c in value.chars() {
        if escaped {
            escaped = false;
        } else if c == '\\' && (quoted || depth > 0) {
            escaped = true;
            if depth > 0 {
                continue;
            }
        } else if c == '"' && depth == 0 {
            quoted = !quoted;
        } else if c == '(' && !quoted {
            depth += 1;
            continue;
        } else if c == ')' && !quoted && depth > 0 {
            depth -= 1;
            continue;
        }
        if depth == 0 {
            out.push(c);
        }
    }
    out.trim().to_owned()
}

/// `kind *(";" name "=" value)` (Content-Type, Content-Disposition): the kind as written, and the parameters
/// with lower-cased names and unquoted values. A malformed parameter is skipped, the rest kept.
fn parse_parameterised(value: &str) -> (String, Vec<(String, String)>) {
    let value = strip_comments(value);
    let mut rest = value.as_str();
    let kind_end = rest.find(';').unwrap_or(rest.len());
    let kind: String = rest[..kind_end]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    rest = &rest[kind_end..];
    let mut params = Vec::new();
    while let Some(after) = rest.strip_prefix(';') {
        let after = after.trim_start();
        let Some(eq) = after.find('=') else {
            break;
        };
        let name = after[..eq].trim().to_ascii_lowercase();
        let value_text = after[eq + 1..].trim_start();
        let (value, remainder) = if let Some(quoted) = value_text.strip_prefix('"') {
            let mut out = String::new();
            let mut chars = quoted.char_indices();
            let mut end = quoted.len();
            while let Some((at, c)) = chars.next() {
                match c {
                    '\\' => out.extend(chars.next().map(|(_, c)| c)),
                    '"' => {
                        end = at + 1;
                        break;
                    }
                    _ => out.push(c),
                }
            }
            (out, &quoted[end..])
        } else {
            let end = value_text.find(';').unwrap_or(value_text.len());
            (value_text[..end].trim().to_owned(), &value_text[end..])
        };
        if !name.is_empty() && name.bytes().all(is_token_byte) {
            params.push((name, value));
        }
        rest = remainder.trim_start();
        // Junk after a quoted value, up to the next parameter.
        if !rest.starts_with(';') {
            rest = rest.find(';').map_or("", |at| &rest[at..]);
        }
    }
    (kind, params)
}

fn istring(text: &str) -> IString<'static> {
    let text: String = text.chars().filter(|c| *c != '\0').collect();
    IString::try_from(text).unwrap_or_else(|_| IString::try_from("").expect("empty is quoted"))
}

fn nstring(text: Option<&str>) -> NString<'static> {
    NString(text.map(istring))
}

fn params(list: &[(String, String)]) -> Vec<(IString<'static>, IString<'static>)> {
    list.iter()
        .map(|(name, value)| (istring(name), istring(value)))
        .collect()
}

/// The header fields named in `names` (or, with `not`, all others), with their continuation lines, and the
/// blank line that ends a header.
pub(crate) fn header_fields(header: &[u8], names: &[String], not: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let mut keep = false;
    for line in header.split_inclusive(|&b| b == b'\n') {
        if line == b"\r\n" || line == b"\n" {
            break;
        }
        if !line.starts_with(b" ") && !line.starts_with(b"\t") {
            let name = line.split(|&b| b == b':').next().unwrap_or_default();
            let named = names
                .iter()
                .any(|n| n.as_bytes().eq_ignore_ascii_case(name.trim_ascii()));
            keep = named != not;
        }
        if keep {
            out.extend_from_slice(line);
        }
    }
    out.extend_from_slice(b"\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use imap_codec::encode::Encoder as _;
    use imap_next::imap_types::fetch::{MessageDataItem, Part};
    use imap_next::imap_types::response::{Data, Response};

    fn wire(structure: &MimeStructure, message: &[u8], extended: bool) -> String {
        let item = if extended {
            MessageDataItem::BodyStructure(structure.body_structure(message, true))
        } else {
            MessageDataItem::Body(structure.body_structure(message, false))
        };
        let data = Data::Fetch {
            seq: NonZeroU32::new(1).unwrap(),
            items: vec![item].try_into().unwrap(),
        };
        let bytes = imap_codec::ResponseCodec::default()
            .encode(&Response::Data(data))
            .dump();
        String::from_utf8(bytes).unwrap()
    }

    fn part(numbers: &[u32]) -> Part {
        Part(
            numbers
                .iter()
                .map(|n| NonZeroU32::new(*n).unwrap())
                .collect::<Vec<_>>()
                .try_into()
                .unwrap(),
        )
    }

    const MIXED: &[u8] = b"From: a@b.test\r\n\
        Subject: report\r\n\
        MIME-Version: 1.0\r\n\
        Content-Type: multipart/mixed; boundary=\"outer\"\r\n\
        \r\n\
        preamble\r\n\
        --outer\r\n\
        Content-Type: multipart/alternative; boundary=inner\r\n\
        \r\n\
        --inner\r\n\
        Content-Type: text/plain; charset=utf-8\r\n\
        Content-Transfer-Encoding: quoted-printable\r\n\
        \r\n\
        Hello,\r\n\
        world\r\n\
        --inner\r\n\
        Content-Type: text/html; charset=\"utf-8\"\r\n\
        \r\n\
        <p>Hello</p>\r\n\
        --inner--\r\n\
        --outer\r\n\
        Content-Type: application/pdf; name=\"r e.pdf\"\r\n\
        Content-Disposition: attachment; filename=\"r e.pdf\"\r\n\
        Content-Transfer-Encoding: base64\r\n\
        Content-ID: <pdf1>\r\n\
        \r\n\
        JVBERi0xLjQK\r\n\
        --outer\r\n\
        Content-Type: message/rfc822\r\n\
        \r\n\
        From: c@d.test\r\n\
        Subject: inner\r\n\
        \r\n\
        forwarded\r\n\
        --outer--\r\n\
        epilogue\r\n";

    #[test]
    fn a_nested_message_has_the_structure_rfc_3501_writes() {
        let structure = MimeStructure::parse(MIXED);
        // imap-codec writes the type of a text and an attached message in capitals; clients compare without case.
        assert_eq!(
            wire(&structure, MIXED, false),
            "* 1 FETCH (BODY (((\"TEXT\" \"plain\" (\"charset\" \"utf-8\") NIL NIL \"quoted-printable\" 13 1)\
             (\"TEXT\" \"html\" (\"charset\" \"utf-8\") NIL NIL \"7bit\" 12 0) \"alternative\")\
             (\"application\" \"pdf\" (\"name\" \"r e.pdf\") \"<pdf1>\" NIL \"base64\" 12)\
             (\"MESSAGE\" \"RFC822\" NIL NIL NIL \"7bit\" 43 (NIL \"inner\" ((NIL NIL \"c\" \"d.test\")) \
             ((NIL NIL \"c\" \"d.test\")) ((NIL NIL \"c\" \"d.test\")) NIL NIL NIL NIL NIL) \
             (\"TEXT\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 9 0) 3) \"mixed\"))\r\n"
        );
        let extended = wire(&structure, MIXED, true);
        assert!(
            extended
                .contains("\"base64\" 12 NIL (\"attachment\" (\"filename\" \"r e.pdf\")) NIL NIL)"),
            "{extended}"
        );
        assert!(
            extended.ends_with("\"mixed\" (\"boundary\" \"outer\") NIL NIL NIL))\r\n"),
            "{extended}"
        );
        assert!(structure.has_attachment());
    }

    #[test]
    fn sections_name_parts_their_headers_and_attached_messages() {
        let structure = MimeStructure::parse(MIXED);
        let get = |section: Section<'static>| {
            String::from_utf8(structure.section(MIXED, Some(&section))).unwrap()
        };
        assert_eq!(get(Section::Part(part(&[1, 1]))), "Hello,\r\nworld");
        assert_eq!(get(Section::Part(part(&[1, 2]))), "<p>Hello</p>");
        assert_eq!(
            get(Section::Mime(part(&[1, 2]))),
            "Content-Type: text/html; charset=\"utf-8\"\r\n\r\n"
        );
        assert_eq!(get(Section::Part(part(&[2]))), "JVBERi0xLjQK");
        assert_eq!(
            get(Section::Header(Some(part(&[3])))),
            "From: c@d.test\r\nSubject: inner\r\n\r\n"
        );
        assert_eq!(get(Section::Text(Some(part(&[3])))), "forwarded");
        assert_eq!(get(Section::Part(part(&[3, 1]))), "forwarded");
        // As Dovecot: a part that is not a multipart is its own part 1, once; what is not there is empty.
        assert_eq!(get(Section::Part(part(&[2, 1]))), "JVBERi0xLjQK");
        assert_eq!(get(Section::Part(part(&[2, 1, 1]))), "");
        assert_eq!(get(Section::Part(part(&[4]))), "");
        assert_eq!(get(Section::Header(Some(part(&[2])))), "", "not a message");
        let names = vec![imap_next::imap_types::core::AString::try_from("subject").unwrap()]
            .try_into()
            .unwrap();
        assert_eq!(
            get(Section::HeaderFields(None, names)),
            "Subject: report\r\n\r\n"
        );
    }

    #[test]
    fn a_single_part_message_is_its_own_part_one() {
        let message = b"Subject: x\r\n\r\nline 1\r\nline 2\r\n";
        let structure = MimeStructure::parse(message);
        assert_eq!(
            wire(&structure, message, false),
            "* 1 FETCH (BODY (\"TEXT\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 16 2))\r\n"
        );
        assert_eq!(
            structure.section(message, Some(&Section::Part(part(&[1])))),
            b"line 1\r\nline 2\r\n"
        );
        assert_eq!(
            structure.section(message, Some(&Section::Part(part(&[1, 1])))),
            b""
        );
        assert!(!structure.has_attachment());
    }

    #[test]
    fn a_delimiter_is_the_boundary_alone_on_its_line() {
        // RFC 2046 §5.1.1; Dovecot also takes `--bX` for a delimiter of `b` (our choice differs: see the note).
        let message =
            b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b  \r\n\r\none\r\n--bX\r\n\
            two\r\n--b--\r\n";
        let structure = MimeStructure::parse(message);
        assert_eq!(
            structure.section(message, Some(&Section::Part(part(&[1])))),
            b"one\r\n--bX\r\ntwo"
        );
        assert_eq!(
            structure.section(message, Some(&Section::Part(part(&[2])))),
            b""
        );
    }

    #[test]
    fn hostile_structures_stay_bounded() {
        // No boundary ever seen: one empty text part.
        let message = b"Content-Type: multipart/mixed; boundary=x\r\n\r\nno parts here\r\n";
        let text = wire(&MimeStructure::parse(message), message, false);
        assert!(text.contains("((\"TEXT\" \"plain\""), "{text}");
        // Nesting far beyond MAX_DEPTH.
        let mut message = Vec::new();
        for level in 0..200 {
            message.extend_from_slice(
                format!("Content-Type: multipart/mixed; boundary=b{level}\r\n\r\n--b{level}\r\n")
                    .as_bytes(),
            );
        }
        message.extend_from_slice(b"\r\ndeep\r\n");
        let text = wire(&MimeStructure::parse(&message), &message, false);
        assert_eq!(
            text.matches("\"mixed\"").count(),
            MAX_DEPTH as usize,
            "{text}"
        );
        assert!(text.contains("\"application\" \"octet-stream\""), "{text}");
        // Many parts.
        let mut message = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n".to_vec();
        for _ in 0..5_000 {
            message.extend_from_slice(b"--b\r\n\r\nx\r\n");
        }
        let structure = MimeStructure::parse(&message);
        let text = wire(&structure, &message, false);
        assert_eq!(
            text.matches("(\"TEXT\"").count(),
            MAX_PARTS as usize - 1,
            "the message itself counts as one"
        );
    }

    #[test]
    fn parameters_are_unquoted_and_comments_dropped() {
        let (kind, params) = parse_parameterised(
            "text/plain (a comment); CHARSET=\"utf-8\" ; name=\"a \\\"q\\\" b\"; format=flowed; broken",
        );
        assert_eq!(kind, "text/plain");
        assert_eq!(
            params,
            vec![
                ("charset".to_owned(), "utf-8".to_owned()),
                ("name".to_owned(), "a \"q\" b".to_owned()),
                ("format".to_owned(), "flowed".to_owned()),
            ]
        );
        assert_eq!(strip_comments("base64 (why not)"), "base64");
    }
}
