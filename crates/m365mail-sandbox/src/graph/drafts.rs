//! Drafts and their attachments (microsoft.md §8.3): `POST /v1.0/users/{id}/messages` (a draft),
//! `POST …/messages/{id}/attachments` (a small `fileAttachment`), `POST …/messages/{id}/attachments/
//! createUploadSession` (a large one, uploaded through [`super::uploads`]) and `POST …/messages/{id}/send`
//! (each also under `/me`).
//!
//! A draft is an RFC 5322 message in the store's Drafts folder with IMAP's `\Draft` flag, so IMAP sees it
//! as Outlook's drafts are seen. It is built from the JSON message as `sendMail` builds one (same
//! properties, same checks, see [`super::send_mail`]), `From` the mailbox unless the JSON names one.
//! Adding an attachment splices a MIME part into the stored message — into its `multipart/mixed`, or
//! wrapping the message in one — so a draft another client made keeps all it had; the new version gets a
//! new IMAP UID (IMAP messages do not change) and keeps both of its Graph ids.
//!
//! Sending a draft (`Mail.Send`) delivers its bytes as `sendMail` delivers ([`crate::exchange::ExchangeState::submit`]):
//! recipients (To, Cc, Bcc) in the tenant get it in their Inbox without `Bcc:`, others go to the outbox,
//! Sent Items keeps the copy with `Bcc:`; `Date` becomes the send time; the draft leaves its folder and its
//! upload sessions end. `202 Accepted`, empty body, as Graph answers.
//!
//! | Status | `code` | When |
//! |---|---|---|
//! | 201 | | a draft (the message JSON), an attachment (its JSON), an upload session (`uploadUrl`, `expirationDateTime`, `nextExpectedRanges: ["0-"]`) |
//! | 202 | | sent |
//! | 400 | as `sendMail`'s | the JSON message: recipients, attachments, headers, body type |
//! | 400 | `ErrorInvalidOperation` | attachments, upload sessions and send on a message without `\Draft` (the sandbox's rule: Graph lets some of these through on other items) |
//! | 400 | `ErrorInvalidParameter` | `createUploadSession` without `AttachmentItem` or its `name` |
//! | 400 | `Request_UnsupportedQuery` | an `attachmentType` other than `file` (item and reference attachments are not modelled) |
//! | 400 | `ErrorAttachmentSizeLimitExceeded` | an `AttachmentItem.size` of 0 or over 150 MB (Microsoft's documented limit) |
//! | 400 | `ErrorInvalidRecipients` | send of a draft without a recipient |
//! | 403 | `ErrorSendAsDenied` | send of a draft whose `From` the identity may not send as |
//! | 429 | `ApplicationThrottled` | a new upload session beyond the sandbox's bound on live sessions (see [`super::uploads`]) |

use axum::{
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse as _, Response},
};
use base64::Engine as _;
use mail_parser::{MessageParser, MimeHeaders as _};
use serde_json::{Map, Value, json};

use super::{
    GraphError, METADATA,
    folders::item_not_found,
    graph_json,
    ids::MessageId,
    mail::MailRequest,
    messages::{Row, graph_date, json_body, message_json, parse_select},
    send_mail::{
        self, Attachment, build_message, cannot_convert, collect_addresses, header_fields,
        property, string_property, without_field,
    },
    uploads::{MAX_ATTACHMENT_BYTES, NewSession},
};
use crate::{exchange::access, sync::lock};

/// The draft flag IMAP shows.
const DRAFT: &str = "\\Draft";

/// 400 `ErrorInvalidOperation` for a message that is not a draft.
fn not_a_draft() -> GraphError {
    GraphError::bad_request(
        "ErrorInvalidOperation",
        "The sandbox adds attachments to, and sends, drafts only (messages with \\Draft).",
    )
}

fn require_draft(row: &Row) -> Result<(), GraphError> {
    if row
        .flags
        .iter()
        .any(|flag| flag.eq_ignore_ascii_case(DRAFT))
    {
        Ok(())
    } else {
        Err(not_a_draft())
    }
}

/// `POST /messages`: a new draft in Drafts; 201 with its JSON.
pub(crate) fn create(request: &MailRequest<'_>) -> Result<(Response, Vec<String>), GraphError> {
    let message = json_body(request.body)?;
    let built = build_message(&message, &request.mailbox, request.state.now_unix())?;
    let address = &request.mailbox.address;
    let row = {
        let mut store = lock(&request.exchange.store);
        let uid = store
            .append(
                address,
                "Drafts",
                &built.full,
                &[DRAFT.to_owned()],
                request_now(request),
            )
            .map_err(|_| item_not_found())?;
        let folders = store.folder_list(address);
        let (position, folder) = folders
            .iter()
            .enumerate()
            .find(|(_, f)| f.name == "Drafts")
            .ok_or_else(item_not_found)?;
        let stored = folder
            .messages
            .iter()
            .find(|m| m.imap_uid == uid)
            .ok_or_else(item_not_found)?;
        Row::new(folder, position, stored)
    };
    let mut body = Map::new();
    body.insert(
        "@odata.context".into(),
        json!(format!(
            "{METADATA}#users('{}')/messages/$entity",
            request.mailbox.address
        )),
    );
    body.extend(message_json(
        &row,
        request.preferences.immutable_ids,
        &parse_select(None)?,
    ));
    let mut response = graph_json(Value::Object(body));
    *response.status_mut() = StatusCode::CREATED;
    Ok((response, Vec::new()))
}

fn request_now(request: &MailRequest<'_>) -> i64 {
    i64::try_from(request.state.now_unix()).unwrap_or(i64::MAX)
}

/// An attachment's id: the item and the attachment's position in it (the sandbox's form; opaque).
fn attachment_id(item_key: u64, index: usize) -> String {
    let mut bytes = vec![0x00, 0x0A, 0x00];
    bytes.extend_from_slice(&item_key.to_be_bytes());
    bytes.extend_from_slice(&u32::try_from(index).unwrap_or(u32::MAX).to_be_bytes());
    base64::engine::general_purpose::URL_SAFE.encode(bytes)
}

/// `attachment` as a MIME part (headers, blank line, base64 body).
fn mime_part(attachment: &Attachment) -> Vec<u8> {
    use mail_builder::mime::{BodyPart, MimePart};
    let part = MimePart::new(
        attachment.content_type.as_str(),
        BodyPart::Binary(attachment.data.as_slice().into()),
    );
    let part = match &attachment.inline_id {
        Some(content_id) => part.inline().cid(content_id.as_str()),
        None => part.attachment(attachment.name.as_str()),
    };
    let mut bytes = Vec::new();
    part.write_part(&mut bytes);
    bytes
}

/// `message` with `part` added: inside its top-level `multipart/mixed`, or with the message wrapped in
/// a new one (its content fields moving into the first part).
fn with_part(message: &[u8], part: &[u8]) -> Vec<u8> {
    let part = part.strip_suffix(b"\r\n").unwrap_or(part);
    let fields = header_fields(message).unwrap_or_default();
    let header_end = fields.last().map_or(0, |field| field.range.end);
    let body_start = message[header_end..]
        .strip_prefix(b"\r\n")
        .map_or(header_end, |_| header_end + 2);
    let body = &message[body_start..];
    let mixed_boundary = MessageParser::default().parse(message).and_then(|parsed| {
        parsed
            .content_type()
            .filter(|ct| {
                ct.ctype().eq_ignore_ascii_case("multipart")
                    && ct
                        .subtype()
                        .is_some_and(|sub| sub.eq_ignore_ascii_case("mixed"))
            })
            .and_then(|ct| ct.attribute("boundary").map(str::to_owned))
    });
    if let Some(boundary) = mixed_boundary {
        let closing = format!("--{boundary}--");
        if let Some(position) = find_last(message, closing.as_bytes()) {
            let mut out = Vec::with_capacity(message.len() + part.len() + boundary.len() + 8);
            out.extend_from_slice(&message[..position]);
            out.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
            out.extend_from_slice(part);
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(&message[position..]);
            return out;
        }
    }
    let boundary = mail_builder::mime::make_boundary("_");
    let is_content_field = |name: &str| name.to_ascii_lowercase().starts_with("content-");
    let mut out = Vec::with_capacity(message.len() + part.len() + 256);
    let mut content_fields = Vec::new();
    for field in &fields {
        let bytes = &message[field.range.clone()];
        if is_content_field(&field.name) {
            content_fields.extend_from_slice(bytes);
        } else {
            out.extend_from_slice(bytes);
        }
    }
    if !fields
        .iter()
        .any(|f| f.name.eq_ignore_ascii_case("MIME-Version"))
    {
        out.extend_from_slice(b"MIME-Version: 1.0\r\n");
    }
    if content_fields.is_empty() {
        content_fields.extend_from_slice(b"Content-Type: text/plain; charset=us-ascii\r\n");
    }
    out.extend_from_slice(
        format!("Content-Type: multipart/mixed; boundary=\"{boundary}\"\r\n\r\n--{boundary}\r\n")
            .as_bytes(),
    );
    out.extend_from_slice(&content_fields);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body.strip_suffix(b"\r\n").unwrap_or(body));
    out.extend_from_slice(format!("\r\n--{boundary}\r\n").as_bytes());
    out.extend_from_slice(part);
    out.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    out
}

fn find_last(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .rposition(|window| window == needle)
}

/// Adds `attachment` to the draft holding `item_key` in `address`; the attachment's id. `None` when the
/// draft is gone.
pub(crate) fn attach(
    exchange: &crate::exchange::ExchangeState,
    address: &str,
    item_key: u64,
    attachment: &Attachment,
) -> Option<String> {
    let part = mime_part(attachment);
    let mut store = lock(&exchange.store);
    let (folder, message) = store.find_item(address, item_key)?;
    let folder_name = folder.name.clone();
    let imap_uid = message.imap_uid;
    let bytes = with_part(&message.bytes, &part);
    let count = MessageParser::default()
        .parse(&bytes)
        .map_or(1, |parsed| parsed.attachment_count());
    store.replace_message(address, &folder_name, imap_uid, &bytes)?;
    Some(attachment_id(item_key, count))
}

/// `POST messages/{id}/attachments`: a `#microsoft.graph.fileAttachment` with its bytes → 201.
pub(crate) fn add_attachment(request: &MailRequest<'_>, row: &Row) -> Result<Response, GraphError> {
    require_draft(row)?;
    let object = json_body(request.body)?;
    let attachment = send_mail::attachment(&Value::Object(object))?;
    let id = attach(
        request.exchange,
        &request.mailbox.address,
        row.item_key,
        &attachment,
    )
    .ok_or_else(item_not_found)?;
    let body = json!({
        "@odata.context": format!(
            "{METADATA}#users('{}')/messages('{}')/attachments/$entity",
            request.mailbox.address,
            row.id(request.preferences.immutable_ids)
        ),
        "@odata.type": "#microsoft.graph.fileAttachment",
        "id": id,
        "lastModifiedDateTime": graph_date(request_now(request)),
        "name": attachment.name,
        "contentType": attachment.content_type,
        "size": attachment.data.len(),
        "isInline": attachment.inline_id.is_some(),
        "contentId": attachment.inline_id,
    });
    let mut response = graph_json(body);
    *response.status_mut() = StatusCode::CREATED;
    Ok(response)
}

/// `POST messages/{id}/attachments/createUploadSession` → 201 with the session.
pub(crate) fn create_upload_session(
    request: &MailRequest<'_>,
    row: &Row,
) -> Result<Response, GraphError> {
    require_draft(row)?;
    let object = json_body(request.body)?;
    let item = property(&object, "AttachmentItem")
        .and_then(Value::as_object)
        .ok_or_else(|| {
            GraphError::bad_request(
                "ErrorInvalidParameter",
                "The value of the parameter 'AttachmentItem' is empty.",
            )
        })?;
    let attachment_type = string_property(item, "attachmentType").unwrap_or("file");
    if !attachment_type.eq_ignore_ascii_case("file") {
        return Err(GraphError::unsupported_query(format!(
            "The sandbox does not model upload sessions of attachmentType '{attachment_type}'; it models 'file'."
        )));
    }
    let name = string_property(item, "name")
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .ok_or_else(|| {
            GraphError::bad_request(
                "ErrorInvalidParameter",
                "The value of the parameter 'AttachmentItem.Name' is empty.",
            )
        })?;
    let size = match property(item, "size") {
        Some(value) => value
            .as_u64()
            .ok_or_else(|| cannot_convert(&value.to_string(), "Edm.Int64"))?,
        None => 0,
    };
    if size == 0 || size > MAX_ATTACHMENT_BYTES {
        return Err(GraphError::bad_request(
            "ErrorAttachmentSizeLimitExceeded",
            format!(
                "The attachment size {size} is not between 1 and {MAX_ATTACHMENT_BYTES} bytes (150 MB)."
            ),
        ));
    }
    // The same checks as an inline attachment's content type and Content-ID.
    let mut check = Map::new();
    check.insert(
        "@odata.type".into(),
        json!("#microsoft.graph.fileAttachment"),
    );
    check.insert("name".into(), json!(name));
    for key in ["contentType", "isInline", "contentId"] {
        if let Some(value) = property(item, key) {
            check.insert(key.into(), value.clone());
        }
    }
    let shape = send_mail::attachment(&Value::Object(check))?;
    let now = request.state.now_unix();
    let session = request.mail.uploads.create(
        NewSession {
            mailbox: request.mailbox.address.clone(),
            item_key: row.item_key,
            name: shape.name,
            content_type: shape.content_type,
            inline_id: shape.inline_id,
            size,
        },
        now,
    )?;
    let message_id = MessageId::Immutable {
        item_key: row.item_key,
    }
    .encode();
    let upload_url = format!(
        "{}/_sandbox/outlook/api/v2.0/Users('{}')/Messages('{message_id}')/AttachmentSessions('{}')?authtoken={}",
        request.base(),
        request.mailbox.address,
        session.id,
        session.authtoken
    );
    let body = json!({
        "@odata.context": format!("{METADATA}#microsoft.graph.uploadSession"),
        "uploadUrl": upload_url,
        "expirationDateTime": graph_date(i64::try_from(session.expires_at).unwrap_or(i64::MAX)),
        "nextExpectedRanges": ["0-"],
    });
    let mut response = graph_json(body);
    *response.status_mut() = StatusCode::CREATED;
    Ok(response)
}

/// `POST messages/{id}/send` → 202.
pub(crate) fn send(request: &MailRequest<'_>, row: &Row) -> Result<Response, GraphError> {
    require_draft(row)?;
    let message = &row.bytes[..];
    let parsed = MessageParser::default()
        .parse(message)
        .ok_or_else(not_a_draft)?;
    let mut recipients = Vec::new();
    collect_addresses(parsed.to(), &mut recipients);
    collect_addresses(parsed.cc(), &mut recipients);
    collect_addresses(parsed.bcc(), &mut recipients);
    if recipients.is_empty() {
        return Err(GraphError::bad_request(
            "ErrorInvalidRecipients",
            "At least one recipient is required, but none were found.",
        ));
    }
    let from = parsed
        .from()
        .and_then(mail_parser::Address::first)
        .and_then(mail_parser::Addr::address)
        .map_or_else(|| request.mailbox.address.clone(), str::to_owned);
    let allowed = access::may_send_as(
        &lock(&request.state.directory),
        &request.principal,
        &request.mailbox.address,
        &from,
    );
    if !allowed {
        return Err(GraphError::new(
            StatusCode::FORBIDDEN,
            "ErrorSendAsDenied",
            "The user account which was used to submit this request does not have the right to send mail on behalf of the specified sending account., Cannot submit message.",
        ));
    }
    // The send time becomes the Date; recipients do not see Bcc.
    let fields = header_fields(message).unwrap_or_default();
    let undated = without_field(message, &fields, "date");
    let date = format!(
        "Date: {}\r\n",
        send_mail::rfc5322_date(request.state.now_unix())
    );
    let mut full = date.clone().into_bytes();
    full.extend_from_slice(&undated);
    let undated_fields = header_fields(&undated).unwrap_or_default();
    let mut delivered = date.into_bytes();
    delivered.extend_from_slice(&without_field(&undated, &undated_fields, "bcc"));
    request.exchange.submit(
        &from,
        &recipients,
        &delivered,
        Some((&request.mailbox.address, &full)),
    );
    let address = &request.mailbox.address;
    {
        let mut store = lock(&request.exchange.store);
        if let Some((folder, message)) = store.find_item(address, row.item_key) {
            let (folder, uid) = (folder.name.clone(), message.imap_uid);
            store.expunge(address, &folder, &[uid]);
        }
    }
    request.mail.uploads.end_for_item(address, row.item_key);
    let mut response = StatusCode::ACCEPTED.into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    Ok(response)
}

/// Whether a stored message has `name` among its attachments (for tests of the upload flow).
#[cfg(test)]
fn attachment_names(message: &[u8]) -> Vec<String> {
    MessageParser::default()
        .parse(message)
        .map(|parsed| {
            parsed
                .attachments()
                .filter_map(|part| part.attachment_name().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pdf(name: &str) -> Attachment {
        Attachment {
            name: name.to_owned(),
            content_type: "application/pdf".to_owned(),
            data: b"%PDF-1.7 sandbox".to_vec(),
            inline_id: None,
        }
    }

    #[test]
    fn a_single_part_message_is_wrapped_keeping_its_body_and_headers() {
        let message = b"From: a@x\r\nSubject: s\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 7bit\r\n\r\nHello\r\n";
        let wrapped = with_part(message, &mime_part(&pdf("a.pdf")));
        let parsed = MessageParser::default().parse(&wrapped[..]).unwrap();
        assert_eq!(parsed.subject(), Some("s"));
        assert_eq!(parsed.body_text(0).as_deref(), Some("Hello"));
        assert_eq!(attachment_names(&wrapped), ["a.pdf"]);
        assert_eq!(
            parsed.attachment(0).unwrap().contents(),
            b"%PDF-1.7 sandbox"
        );
        // A second part goes into the same multipart/mixed.
        let twice = with_part(&wrapped, &mime_part(&pdf("b.pdf")));
        assert_eq!(attachment_names(&twice), ["a.pdf", "b.pdf"]);
        let parsed = MessageParser::default().parse(&twice[..]).unwrap();
        assert_eq!(parsed.body_text(0).as_deref(), Some("Hello"));
    }

    #[test]
    fn a_message_without_content_fields_becomes_text_plain_in_the_wrapper() {
        let wrapped = with_part(
            b"Subject: bare\r\n\r\nJust text\r\n",
            &mime_part(&pdf("c.pdf")),
        );
        let parsed = MessageParser::default().parse(&wrapped[..]).unwrap();
        assert_eq!(parsed.body_text(0).as_deref(), Some("Just text"));
        assert_eq!(attachment_names(&wrapped), ["c.pdf"]);
        assert!(
            String::from_utf8_lossy(&wrapped).contains("MIME-Version: 1.0\r\n"),
            "a MIME message now"
        );
    }
}
