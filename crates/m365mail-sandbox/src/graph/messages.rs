//! Messages: `GET messages` (the whole mailbox), `GET mailFolders/{folder}/messages`, `GET`/`PATCH`/
//! `DELETE messages/{id}`, `GET messages/{id}/$value`, `POST messages/{id}/move` and `/copy` (each message
//! route also under `mailFolders/{folder}/`, where the message must be in that folder), under
//! `/v1.0/users/{id}` and `/v1.0/me`. They read and change the same store IMAP and POP3 use: `isRead` is
//! IMAP's `\Seen`, `flag.flagStatus` `flagged` is `\Flagged`, `isDraft` is `\Draft`, a move is a move for
//! IMAP (a new UID in the destination, the old one expunged), a DELETE an expunge.
//!
//! **Message JSON** (Graph's shape, built from the stored MIME on each request): `@odata.etag`, `id`,
//! `createdDateTime`, `lastModifiedDateTime` and `receivedDateTime` (the IMAP INTERNALDATE,
//! `2026-12-07T10:00:00Z`), `changeKey`, `categories` (`[]`), `sentDateTime` (the `Date` header, else the
//! INTERNALDATE), `hasAttachments` (a part that is not a body and not an inline part), `internetMessageId`
//! (with its angle brackets), `subject`, `bodyPreview` (the first 255 characters of the text, white space
//! collapsed), `importance` (`Importance:`, else `X-Priority:`, else `normal`), `parentFolderId`,
//! `conversationId` (derived from the thread's first `References`/`In-Reply-To` id: the sandbox's model),
//! `isDeliveryReceiptRequested` (`false`), `isReadReceiptRequested` (`Disposition-Notification-To:`
//! present), `isRead`, `isDraft`, `inferenceClassification` (`focused`), `body` (`{"contentType": "html"
//! | "text", "content"}`: the HTML body when there is one, as Graph prefers), `sender`, `from`,
//! `toRecipients`, `ccRecipients`, `bccRecipients`, `replyTo` (each `{"emailAddress": {"name",
//! "address"}}`, the name the address when the header has none), `flag` (`{"flagStatus": "notFlagged" |
//! "flagged"}`). `internetMessageHeaders` only when `$select`ed (as Graph). The ETag and change key change
//! when the flags or the place change.
//!
//! **Ids** (see [`super::ids`]): by default a message's id names its folder and its item, so a move gives
//! it a new one (Graph's default, microsoft.md §8.5) while a draft that changes keeps it; with `Prefer: IdType="ImmutableId"` every id the
//! answer holds is the immutable one, which a move through Graph keeps (answered `Preference-Applied:
//! IdType="ImmutableId"`). Both kinds are accepted in paths, with or without the preference. An IMAP MOVE
//! keeps the immutable id too, as Exchange does; COPY + EXPUNGE makes a new item (a copy), so its id changes.
//!
//! **Lists**: `$top` (1..=1000, default 10), `$skip`, `$select` (the properties above, names without case;
//! `id` and `@odata.etag` always), `$orderby=receivedDateTime desc|asc` (default desc; ties by folder and
//! UID), and `$filter` of clauses joined by `and`: `isRead eq true|false`, `hasAttachments eq
//! true|false`, `receivedDateTime ge|gt|le|lt 2026-12-07T10:00:00Z` (or a date). A full page ends with
//! `@odata.nextLink`: the request's URL with `$skip` advanced (Graph's mail paging). `GET messages` lists
//! every folder (Graph lists the whole mailbox, Deleted Items and Drafts included).
//!
//! **Changes**: `PATCH` takes `isRead` (boolean) and `flag` (`{"flagStatus": "flagged" | "notFlagged"}`)
//! → 200 with the message; other properties are refused (the sandbox does not model them). `move` and
//! `copy` take `{"destinationId": folder id or well-known name}` → 201 with the message in its new place
//! (a copy is a new item: new ids of both kinds). `DELETE` → 204: the message leaves its folder (Exchange
//! keeps it in Recoverable Items, which clients do not see; the store forgets it).
//!
//! | Status | `code` | When |
//! |---|---|---|
//! | 200 / 201 / 204 | | read, patched / moved, copied / deleted |
//! | 400 | `ErrorInvalidIdMalformed` | a message or folder id that is not one of the sandbox's ("Id is malformed.") |
//! | 404 | `ErrorItemNotFound` | no such message (moved away under a default id, deleted, another mailbox's, not in the folder of the path) or folder ("The specified object was not found in the store.") |
//! | 400 | `RequestBroker--ParseUri` | `$select` naming no message property; a `$filter`/`$orderby` value that is no valid expression |
//! | 400 | `Request_UnsupportedQuery` | a `$filter`, `$orderby`, property or option the sandbox does not model (some of which Graph runs) |
//! | 400 | `Request_BadRequest` | a bad `$top` or `$skip` |
//! | 400 | `BadRequest` / `ErrorInvalidProperty` | a body that is not JSON; a PATCH of a property the sandbox does not model; `destinationId` missing |
//! | 400 | `RequestBodyRead` | `isRead` not a boolean, an unknown `flagStatus` |

use std::sync::Arc;

use axum::{
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse as _, Response},
};
use base64::Engine as _;
use mail_parser::{Address, MessageParser, MimeHeaders as _};
use serde_json::{Map, Value, json};
use sha2::Digest as _;

use super::{
    GraphError, METADATA,
    folders::{self, item_not_found, malformed_id, refuse_other_options},
    graph_json,
    ids::{self, MessageId},
    mail::{MailRequest, MessagePart},
    send_mail::{cannot_convert, property, unreadable_json},
    users::{option, query_pairs},
};
use crate::{
    exchange::store::{Folder, MailStore, StoredMessage},
    sync::lock,
};

/// Graph's message properties the sandbox models, in Graph's order (`id` and `@odata.etag` come first,
/// always).
const MESSAGE_PROPERTIES: [&str; 26] = [
    "createdDateTime",
    "lastModifiedDateTime",
    "changeKey",
    "categories",
    "receivedDateTime",
    "sentDateTime",
    "hasAttachments",
    "internetMessageId",
    "subject",
    "bodyPreview",
    "importance",
    "parentFolderId",
    "conversationId",
    "isDeliveryReceiptRequested",
    "isReadReceiptRequested",
    "isRead",
    "isDraft",
    "inferenceClassification",
    "body",
    "sender",
    "from",
    "toRecipients",
    "ccRecipients",
    "bccRecipients",
    "replyTo",
    "flag",
];

/// Properties only `$select` brings.
const SELECT_ONLY_PROPERTIES: [&str; 1] = ["internetMessageHeaders"];

/// Graph's message properties the sandbox does not model: `$select`ing one is `Request_UnsupportedQuery`.
const UNMODELLED_PROPERTIES: [&str; 9] = [
    "webLink",
    "uniqueBody",
    "conversationIndex",
    "attachments",
    "extensions",
    "singleValueExtendedProperties",
    "multiValueExtendedProperties",
    "mentionsPreview",
    "unsubscribeData",
];

const DEFAULT_TOP: usize = 10;
const MAX_TOP: usize = 1000;

/// The longest `bodyPreview`, in characters (Graph's).
const PREVIEW_CHARACTERS: usize = 255;

/// A message as the store holds it, copied out under the store's lock (its bytes shared, not copied).
#[derive(Debug, Clone)]
pub(crate) struct Row {
    pub(crate) folder_key: u64,
    /// The folder's IMAP name.
    pub(crate) folder_name: String,
    /// The folder's position in the mailbox (ties in ordering).
    folder_position: usize,
    pub(crate) imap_uid: u32,
    pub(crate) item_key: u64,
    pub(crate) flags: Vec<String>,
    pub(crate) internal_date: i64,
    pub(crate) bytes: Arc<[u8]>,
}

impl Row {
    pub(crate) fn new(folder: &Folder, folder_position: usize, message: &StoredMessage) -> Self {
        Self {
            folder_key: folder.key,
            folder_name: folder.name.clone(),
            folder_position,
            imap_uid: message.imap_uid,
            item_key: message.item_key,
            flags: message.flags.clone(),
            internal_date: message.internal_date,
            bytes: Arc::clone(&message.bytes),
        }
    }

    fn has_flag(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f.eq_ignore_ascii_case(flag))
    }

    pub(crate) fn is_read(&self) -> bool {
        self.has_flag("\\Seen")
    }

    /// The message's id, of the kind the request prefers.
    pub(crate) fn id(&self, immutable: bool) -> String {
        if immutable {
            MessageId::Immutable {
                item_key: self.item_key,
            }
            .encode()
        } else {
            MessageId::InFolder {
                folder_key: self.folder_key,
                item_key: self.item_key,
            }
            .encode()
        }
    }

    /// Changes with the flags and the place (Graph's change key changes on every change).
    fn change_key(&self) -> String {
        let mut digest = sha2::Sha256::new();
        digest.update(self.item_key.to_be_bytes());
        digest.update(self.folder_key.to_be_bytes());
        digest.update(self.imap_uid.to_be_bytes());
        for flag in &self.flags {
            digest.update(flag.to_ascii_lowercase().as_bytes());
            digest.update([0]);
        }
        base64::engine::general_purpose::STANDARD.encode(&digest.finalize()[..15])
    }
}

/// The rows of every message of `folders` (with their positions in the mailbox).
fn rows<'f>(folders: impl Iterator<Item = (usize, &'f Folder)>) -> Vec<Row> {
    folders
        .flat_map(|(position, folder)| {
            folder
                .messages
                .iter()
                .map(move |message| Row::new(folder, position, message))
        })
        .collect()
}

/// `2026-12-07T10:00:00Z` for Unix seconds.
pub(crate) fn graph_date(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// A recipient object.
fn recipient(name: Option<&str>, address: &str) -> Value {
    let name = name
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .unwrap_or(address);
    json!({"emailAddress": {"name": name, "address": address}})
}

fn recipients(list: Option<&Address<'_>>) -> Value {
    Value::Array(
        list.into_iter()
            .flat_map(Address::iter)
            .filter_map(|addr| {
                addr.address()
                    .map(|address| recipient(addr.name(), address))
            })
            .collect(),
    )
}

fn first_recipient(list: Option<&Address<'_>>) -> Value {
    list.and_then(Address::first)
        .and_then(|addr| {
            addr.address()
                .map(|address| recipient(addr.name(), address))
        })
        .unwrap_or(Value::Null)
}

/// Whether a part is shown inline (an inline image), not as an attachment.
fn is_inline_part(part: &mail_parser::MessagePart<'_>) -> bool {
    match part.content_disposition() {
        Some(disposition) => disposition.is_inline(),
        None => part.content_id().is_some(),
    }
}

/// Whether the message has a part Graph calls an attachment.
pub(crate) fn has_attachments(message: &mail_parser::Message<'_>) -> bool {
    message.attachments().any(|part| !is_inline_part(part))
}

/// The first id of a header holding message ids.
fn first_id(value: &mail_parser::HeaderValue<'_>) -> Option<String> {
    match value {
        mail_parser::HeaderValue::Text(text) => Some(text.to_string()),
        mail_parser::HeaderValue::TextList(list) => list.first().map(ToString::to_string),
        _ => None,
    }
}

/// `low`, `normal` or `high`.
fn importance(message: &mail_parser::Message<'_>) -> &'static str {
    let header = |name: &str| {
        message
            .header_raw(name)
            .map(|value| value.trim().to_ascii_lowercase())
    };
    if let Some(value) = header("Importance") {
        match value.as_str() {
            "high" => return "high",
            "low" => return "low",
            _ => {}
        }
    }
    match header("X-Priority").and_then(|value| value.chars().next()) {
        Some('1' | '2') => "high",
        Some('4' | '5') => "low",
        _ => "normal",
    }
}

/// The text a preview shows: white space collapsed, at most [`PREVIEW_CHARACTERS`] characters.
fn preview(message: &mail_parser::Message<'_>) -> String {
    let text = message.body_text(0).unwrap_or_default();
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .take(PREVIEW_CHARACTERS)
        .collect()
}

/// The JSON of one message: `@odata.etag`, `id`, then `properties` (canonical names).
pub(crate) fn message_json(row: &Row, immutable: bool, properties: &[&str]) -> Map<String, Value> {
    let parsed = MessageParser::default().parse(&row.bytes[..]);
    let mut object = Map::new();
    let change_key = row.change_key();
    object.insert("@odata.etag".into(), json!(format!("W/\"{change_key}\"")));
    object.insert("id".into(), json!(row.id(immutable)));
    let received = graph_date(row.internal_date);
    for name in properties {
        let value = match (*name, parsed.as_ref()) {
            ("createdDateTime" | "lastModifiedDateTime" | "receivedDateTime", _) => {
                json!(received)
            }
            ("changeKey", _) => json!(change_key),
            ("categories", _) => json!([]),
            ("parentFolderId", _) => json!(ids::folder_id(row.folder_key)),
            ("isRead", _) => json!(row.is_read()),
            ("isDraft", _) => json!(row.has_flag("\\Draft")),
            ("flag", _) => json!({
                "flagStatus": if row.has_flag("\\Flagged") { "flagged" } else { "notFlagged" }
            }),
            ("inferenceClassification", _) => json!("focused"),
            ("isDeliveryReceiptRequested", _) => json!(false),
            ("sentDateTime", message) => json!(
                message
                    .and_then(|m| m.date())
                    .map_or_else(|| received.clone(), |date| graph_date(date.to_timestamp()))
            ),
            (_, None) => match *name {
                "hasAttachments" | "isReadReceiptRequested" => json!(false),
                "toRecipients"
                | "ccRecipients"
                | "bccRecipients"
                | "replyTo"
                | "internetMessageHeaders" => json!([]),
                "importance" => json!("normal"),
                "bodyPreview" => json!(""),
                "body" => json!({"contentType": "text", "content": ""}),
                _ => Value::Null,
            },
            (_, Some(message)) => match *name {
                "hasAttachments" => json!(has_attachments(message)),
                "internetMessageId" => json!(message.message_id().map(|id| format!("<{id}>"))),
                "subject" => json!(message.subject().unwrap_or_default()),
                "bodyPreview" => json!(preview(message)),
                "importance" => json!(importance(message)),
                "conversationId" => json!(conversation_id(message, row)),
                "isReadReceiptRequested" => {
                    json!(message.header_raw("Disposition-Notification-To").is_some())
                }
                "body" => {
                    let html = message.html_bodies().any(|part| part.is_text_html());
                    if html {
                        json!({"contentType": "html", "content": message.body_html(0).unwrap_or_default()})
                    } else {
                        json!({"contentType": "text", "content": message.body_text(0).unwrap_or_default()})
                    }
                }
                "sender" => {
                    let sender = first_recipient(message.sender());
                    if sender.is_null() {
                        first_recipient(message.from())
                    } else {
                        sender
                    }
                }
                "from" => first_recipient(message.from()),
                "toRecipients" => recipients(message.to()),
                "ccRecipients" => recipients(message.cc()),
                "bccRecipients" => recipients(message.bcc()),
                "replyTo" => recipients(message.reply_to()),
                "internetMessageHeaders" => Value::Array(
                    message
                        .headers_raw()
                        .map(|(name, value)| json!({"name": name, "value": unfolded(value)}))
                        .collect(),
                ),
                _ => Value::Null,
            },
        };
        object.insert((*name).to_owned(), value);
    }
    object
}

/// A raw header value without its line folding and surrounding white space.
fn unfolded(value: &str) -> String {
    value
        .split(['\r', '\n'])
        .map(str::trim_start)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
        .trim()
        .to_owned()
}

/// The conversation a message belongs to: its thread's first message id (the sandbox's model of Exchange's
/// conversation), else the message itself.
fn conversation_id(message: &mail_parser::Message<'_>, row: &Row) -> String {
    let root = first_id(message.references())
        .or_else(|| first_id(message.in_reply_to()))
        .or_else(|| message.message_id().map(str::to_owned))
        .unwrap_or_else(|| format!("item-{}", row.item_key));
    let digest = sha2::Sha256::digest(root.as_bytes());
    let mut bytes = vec![0x00, 0x10, 0x00];
    bytes.extend_from_slice(&digest[..16]);
    base64::engine::general_purpose::URL_SAFE.encode(bytes)
}

/// A parsed `$select` (canonical names), or every default property.
pub(crate) fn parse_select(raw: Option<&str>) -> Result<Vec<&'static str>, GraphError> {
    let Some(raw) = raw else {
        return Ok(MESSAGE_PROPERTIES.to_vec());
    };
    let mut selected = Vec::new();
    for item in raw
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
    {
        if item.eq_ignore_ascii_case("id") {
            continue;
        }
        if UNMODELLED_PROPERTIES
            .iter()
            .any(|known| known.eq_ignore_ascii_case(item))
        {
            return Err(GraphError::unsupported_query(format!(
                "The sandbox does not model the message property '{item}'."
            )));
        }
        let canonical = MESSAGE_PROPERTIES
            .iter()
            .chain(SELECT_ONLY_PROPERTIES.iter())
            .find(|known| known.eq_ignore_ascii_case(item))
            .ok_or_else(|| {
                GraphError::bad_request(
                    "RequestBroker--ParseUri",
                    format!(
                        "Could not find a property named '{item}' on type 'microsoft.graph.message'."
                    ),
                )
            })?;
        if !selected.contains(canonical) {
            selected.push(*canonical);
        }
    }
    Ok(selected)
}

/// A comparison in a `$filter`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Comparison {
    Ge,
    Gt,
    Le,
    Lt,
}

impl Comparison {
    fn holds(self, left: i64, right: i64) -> bool {
        match self {
            Self::Ge => left >= right,
            Self::Gt => left > right,
            Self::Le => left <= right,
            Self::Lt => left < right,
        }
    }
}

/// One clause of a `$filter` the sandbox models.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Clause {
    IsRead(bool),
    HasAttachments(bool),
    Received(Comparison, i64),
}

/// A `$filter`: clauses joined by `and`.
pub(crate) fn parse_filter(raw: &str) -> Result<Vec<Clause>, GraphError> {
    let unsupported = || {
        GraphError::unsupported_query(format!(
            "The sandbox does not model the filter '{}'. It models clauses joined by 'and': \
             isRead eq true|false, hasAttachments eq true|false and \
             receivedDateTime ge|gt|le|lt <date>.",
            raw.trim()
        ))
    };
    let words: Vec<&str> = raw.split_whitespace().collect();
    if words.is_empty() {
        return Err(unsupported());
    }
    let mut clauses = Vec::new();
    for (index, clause) in words
        .split(|word| word.eq_ignore_ascii_case("and"))
        .enumerate()
    {
        let _ = index;
        let [name, operator, operand] = clause else {
            return Err(unsupported());
        };
        let boolean = || match operand.to_ascii_lowercase().as_str() {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err(unsupported()),
        };
        let equals = operator.eq_ignore_ascii_case("eq");
        let clause = if name.eq_ignore_ascii_case("isRead") && equals {
            Clause::IsRead(boolean()?)
        } else if name.eq_ignore_ascii_case("hasAttachments") && equals {
            Clause::HasAttachments(boolean()?)
        } else if name.eq_ignore_ascii_case("receivedDateTime") {
            let comparison = match operator.to_ascii_lowercase().as_str() {
                "ge" => Comparison::Ge,
                "gt" => Comparison::Gt,
                "le" => Comparison::Le,
                "lt" => Comparison::Lt,
                _ => return Err(unsupported()),
            };
            let instant = parse_instant(operand).ok_or_else(|| {
                GraphError::bad_request(
                    "RequestBroker--ParseUri",
                    format!("The DateTimeOffset text '{operand}' is not a valid date and time."),
                )
            })?;
            Clause::Received(comparison, instant)
        } else {
            return Err(unsupported());
        };
        clauses.push(clause);
    }
    Ok(clauses)
}

/// `2026-12-07T10:00:00Z` (any RFC 3339 offset), `2026-12-07T10:00:00` (UTC) or `2026-12-07` (midnight UTC).
fn parse_instant(text: &str) -> Option<i64> {
    if let Ok(instant) = chrono::DateTime::parse_from_rfc3339(text) {
        return Some(instant.timestamp());
    }
    if let Ok(naive) = chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S") {
        return Some(naive.and_utc().timestamp());
    }
    chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|date| date.and_hms_opt(0, 0, 0))
        .map(|naive| naive.and_utc().timestamp())
}

/// Whether `row` passes the clauses that need no parsing (flags, dates).
pub(crate) fn passes_cheap(row: &Row, clauses: &[Clause]) -> bool {
    clauses.iter().all(|clause| match clause {
        Clause::IsRead(read) => row.is_read() == *read,
        Clause::Received(comparison, instant) => comparison.holds(row.internal_date, *instant),
        Clause::HasAttachments(_) => true,
    })
}

/// Whether `row` passes the clauses that read the message.
fn passes_parsed(row: &Row, clauses: &[Clause]) -> bool {
    let Some(wanted) = clauses.iter().find_map(|clause| match clause {
        Clause::HasAttachments(wanted) => Some(*wanted),
        _ => None,
    }) else {
        return true;
    };
    let has = MessageParser::default()
        .parse(&row.bytes[..])
        .is_some_and(|message| has_attachments(&message));
    has == wanted
}

/// `$orderby`: newest first unless `asc`.
fn parse_order(raw: Option<&str>) -> Result<bool, GraphError> {
    let Some(raw) = raw else {
        return Ok(true);
    };
    let words: Vec<&str> = raw.split_whitespace().collect();
    match words.as_slice() {
        [name] if name.eq_ignore_ascii_case("receivedDateTime") => Ok(false),
        [name, direction] if name.eq_ignore_ascii_case("receivedDateTime") => {
            match direction.to_ascii_lowercase().as_str() {
                "desc" => Ok(true),
                "asc" => Ok(false),
                _ => Err(GraphError::bad_request(
                    "RequestBroker--ParseUri",
                    format!("'{direction}' is not a sort direction (asc, desc)."),
                )),
            }
        }
        _ => Err(GraphError::unsupported_query(format!(
            "The sandbox does not model the order '{raw}'. It models receivedDateTime desc|asc."
        ))),
    }
}

/// `@odata.context` of the mailbox's messages.
fn context(request: &MailRequest<'_>, select: Option<&str>) -> String {
    let selected = select.map_or_else(String::new, |names| format!("({names})"));
    format!(
        "{METADATA}#users('{}')/messages{selected}",
        request.mailbox.address
    )
}

/// `GET messages` (`folder` `None`) or `GET mailFolders/{folder}/messages`.
pub(crate) fn list(
    request: &MailRequest<'_>,
    folder: Option<&str>,
) -> Result<(Response, Vec<String>), GraphError> {
    let pairs = query_pairs(request.uri)?;
    refuse_other_options(
        &pairs,
        &["$top", "$skip", "$select", "$orderby", "$filter"],
        "messages",
    )?;
    let (top, skip) = folders::paging(&pairs, DEFAULT_TOP, MAX_TOP)?;
    let properties = parse_select(option(&pairs, "$select"))?;
    let newest_first = parse_order(option(&pairs, "$orderby"))?;
    let clauses = option(&pairs, "$filter")
        .map(parse_filter)
        .transpose()?
        .unwrap_or_default();
    let address = &request.mailbox.address;
    let mut matching = {
        let mut store = lock(&request.exchange.store);
        store.folders(address);
        let all = store.folder_list(address);
        let mut rows = match folder {
            None => rows(all.iter().enumerate()),
            Some(reference) => {
                let folder = folders::resolve_folder(&store, address, reference)?;
                let position = all.iter().position(|f| f.key == folder.key).unwrap_or(0);
                rows(std::iter::once((position, folder)))
            }
        };
        rows.retain(|row| passes_cheap(row, &clauses));
        rows
    };
    // Parsing happens outside the store's lock: IMAP and POP3 sessions go on meanwhile.
    matching.retain(|row| passes_parsed(row, &clauses));
    matching.sort_by_key(|row| (row.internal_date, row.folder_position, row.imap_uid));
    if newest_first {
        matching.reverse();
    }
    let immutable = request.preferences.immutable_ids;
    let value: Vec<Value> = matching
        .iter()
        .skip(skip)
        .take(top)
        .map(|row| Value::Object(message_json(row, immutable, &properties)))
        .collect();
    let mut body = Map::new();
    body.insert(
        "@odata.context".into(),
        json!(context(request, option(&pairs, "$select"))),
    );
    body.insert("value".into(), Value::Array(value));
    let next_skip = skip.saturating_add(top);
    if next_skip < matching.len() {
        body.insert(
            "@odata.nextLink".into(),
            json!(folders::next_link(request, &pairs, next_skip)),
        );
    }
    Ok((graph_json(Value::Object(body)), Vec::new()))
}

/// The message `id` names in `address`'s mailbox (in `within`, when the path names a folder).
pub(crate) fn locate(
    store: &MailStore,
    address: &str,
    id: &str,
    within: Option<&str>,
) -> Result<Row, GraphError> {
    let within = within
        .map(|reference| folders::resolve_folder(store, address, reference))
        .transpose()?;
    let all = store.folder_list(address);
    let row = match MessageId::parse(id).ok_or_else(malformed_id)? {
        MessageId::InFolder {
            folder_key,
            item_key,
        } => {
            let position = all
                .iter()
                .position(|f| f.key == folder_key)
                .ok_or_else(item_not_found)?;
            let folder = &all[position];
            let message = folder
                .messages
                .iter()
                .find(|m| m.item_key == item_key)
                .ok_or_else(item_not_found)?;
            Row::new(folder, position, message)
        }
        MessageId::Immutable { item_key } => {
            let (folder, message) = store
                .find_item(address, item_key)
                .ok_or_else(item_not_found)?;
            let position = all.iter().position(|f| f.key == folder.key).unwrap_or(0);
            Row::new(folder, position, message)
        }
    };
    if within.is_some_and(|folder| folder.key != row.folder_key) {
        return Err(item_not_found());
    }
    Ok(row)
}

/// One message's answer (`status` 200 or 201), with the request's `$select`.
fn single(
    request: &MailRequest<'_>,
    row: &Row,
    status: StatusCode,
) -> Result<Response, GraphError> {
    let pairs = query_pairs(request.uri)?;
    refuse_other_options(&pairs, &["$select"], "a message")?;
    let properties = parse_select(option(&pairs, "$select"))?;
    let mut body = Map::new();
    body.insert(
        "@odata.context".into(),
        json!(format!(
            "{}/$entity",
            context(request, option(&pairs, "$select"))
        )),
    );
    body.extend(message_json(
        row,
        request.preferences.immutable_ids,
        &properties,
    ));
    let mut response = graph_json(Value::Object(body));
    *response.status_mut() = status;
    Ok(response)
}

/// A route below one message.
pub(crate) fn message_route(
    request: &MailRequest<'_>,
    folder: Option<&str>,
    id: &str,
    part: MessagePart,
) -> Result<(Response, Vec<String>), GraphError> {
    let address = &request.mailbox.address;
    let method = request.method.clone();
    let located = {
        let mut store = lock(&request.exchange.store);
        store.folders(address);
        locate(&store, address, id, folder)?
    };
    let response = match part {
        MessagePart::Item if method == axum::http::Method::GET => {
            single(request, &located, StatusCode::OK)?
        }
        MessagePart::Item if method == axum::http::Method::PATCH => {
            let row = patch(request, &located)?;
            single(request, &row, StatusCode::OK)?
        }
        MessagePart::Item => {
            lock(&request.exchange.store).expunge(
                address,
                &located.folder_name,
                &[located.imap_uid],
            );
            StatusCode::NO_CONTENT.into_response()
        }
        MessagePart::Value => raw_value(&located),
        MessagePart::Move | MessagePart::Copy => {
            let row = move_or_copy(request, &located, part == MessagePart::Move)?;
            single(request, &row, StatusCode::CREATED)?
        }
        MessagePart::Send => super::drafts::send(request, &located)?,
        MessagePart::Attachments => super::drafts::add_attachment(request, &located)?,
        MessagePart::CreateUploadSession => {
            super::drafts::create_upload_session(request, &located)?
        }
    };
    Ok((response, Vec::new()))
}

/// `$value`: the stored MIME bytes unchanged.
fn raw_value(row: &Row) -> Response {
    let mut response = axum::body::Body::from(axum::body::Bytes::from_owner(ArcBytes(Arc::clone(
        &row.bytes,
    ))))
    .into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}

/// Shares a stored message's bytes with a response body (no copy).
struct ArcBytes(Arc<[u8]>);

impl AsRef<[u8]> for ArcBytes {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// The JSON object of a request body.
pub(crate) fn json_body(body: &[u8]) -> Result<Map<String, Value>, GraphError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(GraphError::bad_request(
            "BadRequest",
            "Empty Payload. JSON content expected.",
        ));
    }
    match serde_json::from_slice(body) {
        Ok(Value::Object(object)) => Ok(object),
        _ => Err(unreadable_json()),
    }
}

/// `PATCH messages/{id}`: the message after the change.
fn patch(request: &MailRequest<'_>, row: &Row) -> Result<Row, GraphError> {
    let object = json_body(request.body)?;
    let mut flags = row.flags.clone();
    let mut set = |flag: &str, on: bool| {
        flags.retain(|f| !f.eq_ignore_ascii_case(flag));
        if on {
            flags.push(flag.to_owned());
        }
    };
    for (name, value) in &object {
        if name.eq_ignore_ascii_case("isRead") {
            let read = value
                .as_bool()
                .ok_or_else(|| cannot_convert(&value.to_string(), "Edm.Boolean"))?;
            set("\\Seen", read);
        } else if name.eq_ignore_ascii_case("flag") {
            let status = value
                .as_object()
                .and_then(|flag| property(flag, "flagStatus"))
                .and_then(Value::as_str)
                .unwrap_or_default();
            match status.to_ascii_lowercase().as_str() {
                "flagged" => set("\\Flagged", true),
                "notflagged" => set("\\Flagged", false),
                "complete" => {
                    return Err(GraphError::bad_request(
                        "ErrorInvalidProperty",
                        "The sandbox does not model the flag status 'complete' (IMAP has \\Flagged only).",
                    ));
                }
                _ => return Err(cannot_convert(status, "microsoft.graph.followupFlagStatus")),
            }
        } else if !name.starts_with('@') {
            return Err(GraphError::bad_request(
                "ErrorInvalidProperty",
                format!(
                    "The sandbox does not model updating the message property '{name}'; it updates isRead and flag."
                ),
            ));
        }
    }
    let address = &request.mailbox.address;
    let mut store = lock(&request.exchange.store);
    if !store.set_flags(address, &row.folder_name, row.imap_uid, &flags) {
        return Err(item_not_found());
    }
    Ok(Row {
        flags,
        ..row.clone()
    })
}

/// `POST messages/{id}/move` or `/copy`: the message in its new place.
fn move_or_copy(request: &MailRequest<'_>, row: &Row, moving: bool) -> Result<Row, GraphError> {
    let object = json_body(request.body)?;
    let destination = property(&object, "destinationId")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            GraphError::bad_request(
                "ErrorInvalidParameter",
                "The value of the parameter 'DestinationId' is empty.",
            )
        })?;
    let address = &request.mailbox.address;
    let mut store = lock(&request.exchange.store);
    let target = folders::resolve_folder(&store, address, destination)?;
    let target_name = target.name.clone();
    let new_uid = if moving {
        store.move_message(address, &row.folder_name, row.imap_uid, &target_name)
    } else {
        store
            .copy(address, &row.folder_name, &[row.imap_uid], &target_name)
            .map(|uids| uids.first().copied().unwrap_or_default())
    }
    .map_err(|_| item_not_found())?;
    let (folder, position) = store
        .folder_list(address)
        .iter()
        .enumerate()
        .find(|(_, f)| f.name == target_name)
        .map(|(position, folder)| (folder, position))
        .ok_or_else(item_not_found)?;
    let message = folder
        .messages
        .iter()
        .find(|m| m.imap_uid == new_uid)
        .ok_or_else(item_not_found)?;
    Ok(Row::new(folder, position, message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_parse_the_modelled_clauses() {
        assert_eq!(
            parse_filter("isRead eq false and receivedDateTime ge 2026-12-07T10:00:00Z").unwrap(),
            vec![
                Clause::IsRead(false),
                Clause::Received(Comparison::Ge, 1_796_637_600)
            ]
        );
        assert_eq!(
            parse_filter("hasAttachments EQ true AND receivedDateTime lt 2026-12-08").unwrap(),
            vec![
                Clause::HasAttachments(true),
                Clause::Received(Comparison::Lt, 1_796_688_000)
            ]
        );
        for unsupported in [
            "",
            "isRead ne true",
            "subject eq 'x'",
            "isRead eq 1",
            "isRead eq true or isRead eq false",
            "isRead eq true and",
            "receivedDateTime eq 2026-12-07",
        ] {
            assert_eq!(
                parse_filter(unsupported).unwrap_err().code,
                "Request_UnsupportedQuery",
                "{unsupported}"
            );
        }
        assert_eq!(
            parse_filter("receivedDateTime ge yesterday")
                .unwrap_err()
                .code,
            "RequestBroker--ParseUri"
        );
    }

    #[test]
    fn select_keeps_canonical_names_and_refuses_others() {
        assert_eq!(
            parse_select(Some("Subject,id,isread,subject")).unwrap(),
            vec!["subject", "isRead"]
        );
        assert_eq!(
            parse_select(Some("webLink")).unwrap_err().code,
            "Request_UnsupportedQuery"
        );
        assert_eq!(
            parse_select(Some("nope")).unwrap_err().code,
            "RequestBroker--ParseUri"
        );
        assert!(parse_select(None).unwrap().contains(&"body"));
    }

    #[test]
    fn orders_newest_first_by_default() {
        assert!(parse_order(None).unwrap());
        assert!(parse_order(Some("receivedDateTime desc")).unwrap());
        assert!(!parse_order(Some("receivedDateTime asc")).unwrap());
        assert!(!parse_order(Some("receivedDateTime")).unwrap());
        assert_eq!(
            parse_order(Some("subject")).unwrap_err().code,
            "Request_UnsupportedQuery"
        );
    }
}
