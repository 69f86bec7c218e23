//! `POST /v1.0/users/{id | userPrincipalName}/sendMail` and `POST /v1.0/me/sendMail` (microsoft.md §8.1,
//! §8.2): a message submitted through Graph, delivered exactly as the SMTP service delivers one
//! ([`crate::exchange::ExchangeState::submit`]): recipients with a mailbox in the tenant get it in their
//! Inbox, the others go to the outbox the admin API shows, and the sender's Sent Items keeps a copy.
//! Success is `202 Accepted` with an empty body.
//!
//! Two forms, told apart by `Content-Type` (its parameters, such as `charset`, are ignored):
//! - `text/plain`: the body is the base64 of a complete RFC 5322 message (whitespace, such as the line
//!   breaks `base64` writes, is skipped; padding is required). Recipients are the message's
//!   `To`/`Cc`/`Bcc` addresses; the `From` address (else the mailbox) is the sender. A missing `From`,
//!   `Date` or `Message-ID` is added at the top of the header; nothing else is changed, except that the
//!   recipients' copy loses its `Bcc:` field (as Exchange does; the sender's Sent Items copy keeps it).
//!   This form always saves to Sent Items.
//! - `application/json`: `{"message": {…}, "saveToSentItems": …}`. The message's `subject`, `body`
//!   (`contentType` `Text` or `HTML`, default `Text`), `toRecipients`, `ccRecipients`, `bccRecipients`,
//!   `replyTo`, `from`, `internetMessageId` (kept when it is a usable `<id@domain>`, else a new one),
//!   `internetMessageHeaders` and `attachments` (`#microsoft.graph.fileAttachment`:
//!   `name`, `contentType`, `contentBytes`, `isInline`, `contentId`) become an RFC 5322 message with a new
//!   `Message-ID`, the sandbox clock's `Date` and `MIME-Version` (built by mail-builder, which does RFC 2047
//!   and RFC 2231). `saveToSentItems` is a boolean or the string `"true"`/`"false"` (Microsoft's doc
//!   example sends a string), default true. Property names are matched without case; properties the
//!   sandbox does not model (`importance`, …) are ignored.
//!
//! Who may send (the permission is [`crate::identity::bearer::Requirement::GRAPH_MAIL_SEND`], checked by
//! [`super::mail::authorize`] as for every mail route): a delegated `Mail.Send` token for
//! the user's own mailbox (`/me`, or their own id or UPN) or a mailbox they have FullAccess to (the
//! sandbox's model of a delegate; a real tenant also wants `Mail.Send.Shared` there); an application
//! `Mail.Send` token for any mailbox of the tenant (the model has no application access policy to narrow
//! it). A `from` other than that mailbox must be one the identity may send as — the same rule as SMTP
//! ([`access::may_send_as`]): the mailbox itself, or for an app a mailbox its Exchange service principal
//! has SendAs on. `/users/{id}` also takes a shared mailbox's address (shared mailboxes are no directory
//! users in the model).
//!
//! | Status | `code` | When |
//! |---|---|---|
//! | 202 | (empty body) | accepted |
//! | 400 | `ErrorMimeContentInvalidBase64String` | MIME form: the body is not base64 ("Invalid base64 string for MIME content.", microsoft.md §8.2) |
//! | 400 | `ErrorMimeContentInvalidHeader` | MIME form: the decoded body does not start with a header section (sandbox's choice) |
//! | 400 | `ErrorInvalidRecipients` | no recipient ("At least one recipient is required, but none were found."); a recipient without a valid address ("At least one recipient isn't valid.") |
//! | 400 | `InvalidInternetMessageHeader` | a custom header whose name does not start with `x-`/`X-` (or is no header name) |
//! | 400 | `BadRequest` | JSON form: an empty body ("Empty Payload. JSON content expected."), a body that is not JSON or another `Content-Type` ("Unable to read JSON request payload. …"), an attachment that is not a `#microsoft.graph.fileAttachment` or has an unusable `contentType`/`contentId` |
//! | 400 | `ErrorInvalidParameter` | JSON form without a `message` object ("The value of the parameter 'Message' is empty.") |
//! | 400 | `RequestBodyRead` | a value of the wrong type: a `body.contentType` other than Text/HTML, `saveToSentItems` not a boolean, `contentBytes` not base64 |
//! | 400 | `BadRequest` | `/me/sendMail` with an app-only token |
//! | 403 | `ErrorAccessDenied` | a token without `Mail.Send`; a user's token for a mailbox they may not use ("Access is denied. Check credentials and try again.") |
//! | 403 | `ErrorSendAsDenied` | a `from` the identity may not send as (microsoft.md §8.1; Exchange's text) |
//! | 404 | `ErrorInvalidUser` | `/users/{id}` names no user or mailbox of the tenant ("The requested user '…' is invalid.", as Graph's mail routes answer) |
//! | 404 | `MailboxNotEnabledForRESTAPI` | the user has no mailbox (microsoft.md §8.6) |
//!
//! Besides the §8.2 base64 refusal and §8.1's `ErrorSendAsDenied`, the codes and texts are those Graph is
//! commonly seen to answer (or, where marked, the sandbox's choice); clients must branch on `code` only.
//! The order of the checks: token, permission, mailbox, body, recipients, SendAs.

use axum::{
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse as _, Response},
};
use base64::Engine as _;
use serde_json::{Map, Value};

use super::{GraphError, mail::Mailbox};
use crate::{
    exchange::{ExchangeState, access},
    identity::{bearer::Principal, state::IdentityState},
    sync::lock,
};

/// A message ready to submit.
#[derive(Debug)]
struct Submission {
    /// The sender's copy (Sent Items): `Bcc:` kept.
    full: Vec<u8>,
    /// The recipients' copy: without `Bcc:`.
    delivered: Vec<u8>,
    /// The address the message is from.
    from: String,
    /// Every recipient once (To, Cc, Bcc).
    recipients: Vec<String>,
    save_to_sent_items: bool,
}

/// `sendMail` for a request [`super::mail::authorize`]d with `Mail.Send`.
pub(super) fn send_mail(
    state: &IdentityState,
    exchange: &ExchangeState,
    principal: &Principal,
    sender: &Mailbox,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, GraphError> {
    let now = state.now_unix();
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .map(|value| value.trim().to_ascii_lowercase())
        .unwrap_or_default();
    let submission = match content_type.as_str() {
        "text/plain" => mime_submission(body, sender, now)?,
        "application/json" => json_submission(body, sender, now)?,
        _ => return Err(unreadable_json()),
    };
    if submission.recipients.is_empty() {
        return Err(GraphError::bad_request(
            "ErrorInvalidRecipients",
            "At least one recipient is required, but none were found.",
        ));
    }
    let allowed = access::may_send_as(
        &lock(&state.directory),
        principal,
        &sender.address,
        &submission.from,
    );
    if !allowed {
        tracing::info!(mailbox = %sender.address, from = %submission.from, "Graph sendMail: SendAs denied");
        return Err(GraphError::new(
            StatusCode::FORBIDDEN,
            "ErrorSendAsDenied",
            "The user account which was used to submit this request does not have the right to send mail on behalf of the specified sending account., Cannot submit message.",
        ));
    }
    exchange.submit(
        &submission.from,
        &submission.recipients,
        &submission.delivered,
        submission
            .save_to_sent_items
            .then_some((sender.address.as_str(), submission.full.as_slice())),
    );
    Ok(StatusCode::ACCEPTED.into_response())
}

/// 400 for a body that is not the JSON the route reads.
pub(super) fn unreadable_json() -> GraphError {
    GraphError::bad_request(
        "BadRequest",
        "Unable to read JSON request payload. Please ensure Content-Type header is set and payload is of valid JSON format.",
    )
}

/// 400 `RequestBodyRead`: a JSON value of the wrong type.
pub(super) fn cannot_convert(literal: &str, expected: &str) -> GraphError {
    GraphError::bad_request(
        "RequestBodyRead",
        format!("Cannot convert the literal '{literal}' to the expected type '{expected}'."),
    )
}

pub(super) fn invalid_recipient() -> GraphError {
    GraphError::bad_request(
        "ErrorInvalidRecipients",
        "At least one recipient isn't valid.",
    )
}

/// A new Message-ID (without brackets) in the domain of `from`.
fn new_message_id(from: &str) -> String {
    let domain = from
        .rsplit_once('@')
        .map_or("sandbox.m365mail.local", |(_, domain)| domain);
    format!("{}@{domain}", uuid::Uuid::new_v4().simple())
}

/// `Sat, 26 Apr 2025 18:08:13 +0000` for Unix seconds.
pub(super) fn rfc5322_date(secs: u64) -> String {
    chrono::DateTime::from_timestamp(i64::try_from(secs).unwrap_or(i64::MAX), 0)
        .unwrap_or_default()
        .format("%a, %d %b %Y %H:%M:%S +0000")
        .to_string()
}

/// One field of a message's header: its name and its bytes (continuation lines and line end included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Field {
    pub(super) name: String,
    pub(super) range: std::ops::Range<usize>,
}

/// The fields of the header `message` starts with (up to the blank line, or the end); `None` when it
/// does not start with one (a line that is neither `name: value` nor a continuation, or no field at all).
pub(super) fn header_fields(message: &[u8]) -> Option<Vec<Field>> {
    let mut fields: Vec<Field> = Vec::new();
    let mut position = 0;
    while position < message.len() {
        let end = message[position..]
            .iter()
            .position(|&byte| byte == b'\n')
            .map_or(message.len(), |offset| position + offset + 1);
        let line = &message[position..end];
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        if line[0] == b' ' || line[0] == b'\t' {
            fields.last_mut()?.range.end = end;
        } else {
            let colon = line.iter().position(|&byte| byte == b':')?;
            let name = &line[..colon];
            if name.is_empty() || !name.iter().all(|byte| (33..=126).contains(byte)) {
                return None;
            }
            fields.push(Field {
                name: String::from_utf8_lossy(name).into_owned(),
                range: position..end,
            });
        }
        position = end;
    }
    (!fields.is_empty()).then_some(fields)
}

/// `message` without its header fields named `name`.
pub(super) fn without_field(message: &[u8], fields: &[Field], name: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len());
    let mut position = 0;
    for field in fields.iter().filter(|f| f.name.eq_ignore_ascii_case(name)) {
        out.extend_from_slice(&message[position..field.range.start]);
        position = field.range.end;
    }
    out.extend_from_slice(&message[position..]);
    out
}

/// Adds each address of `list` (a parsed To/Cc/Bcc) to `recipients` once.
pub(super) fn collect_addresses(
    list: Option<&mail_parser::Address<'_>>,
    recipients: &mut Vec<String>,
) {
    for address in list
        .into_iter()
        .flat_map(mail_parser::Address::iter)
        .filter_map(mail_parser::Addr::address)
    {
        let address = address.trim();
        if address.contains('@') && !recipients.iter().any(|r| r.eq_ignore_ascii_case(address)) {
            recipients.push(address.to_owned());
        }
    }
}

/// The MIME form: base64 of an RFC 5322 message.
fn mime_submission(body: &[u8], sender: &Mailbox, now: u64) -> Result<Submission, GraphError> {
    let compact: Vec<u8> = body
        .iter()
        .copied()
        .filter(|byte| !byte.is_ascii_whitespace())
        .collect();
    let message = base64::engine::general_purpose::STANDARD
        .decode(&compact)
        .map_err(|_| {
            GraphError::bad_request(
                "ErrorMimeContentInvalidBase64String",
                "Invalid base64 string for MIME content.",
            )
        })?;
    let invalid_header = || {
        GraphError::bad_request(
            "ErrorMimeContentInvalidHeader",
            "The MIME content does not start with a valid header: a message needs header fields, a blank line and its body.",
        )
    };
    let fields = header_fields(&message).ok_or_else(invalid_header)?;
    let parsed = mail_parser::MessageParser::default()
        .parse(&message)
        .ok_or_else(invalid_header)?;
    let mut recipients = Vec::new();
    collect_addresses(parsed.to(), &mut recipients);
    collect_addresses(parsed.cc(), &mut recipients);
    collect_addresses(parsed.bcc(), &mut recipients);
    let from = parsed
        .from()
        .and_then(mail_parser::Address::first)
        .and_then(mail_parser::Addr::address)
        .map(str::trim)
        .filter(|address| address.contains('@'))
        .map(str::to_owned);
    let has = |name: &str| fields.iter().any(|f| f.name.eq_ignore_ascii_case(name));
    // What Exchange stamps on a message that lacks it.
    let mut added = String::new();
    if !has("from") {
        added.push_str(&format!("From: {}\r\n", sender.address));
    }
    if !has("date") {
        added.push_str(&format!("Date: {}\r\n", rfc5322_date(now)));
    }
    if !has("message-id") {
        added.push_str(&format!(
            "Message-ID: <{}>\r\n",
            new_message_id(from.as_deref().unwrap_or(&sender.address))
        ));
    }
    let mut full = added.clone().into_bytes();
    full.extend_from_slice(&message);
    let mut delivered = added.into_bytes();
    delivered.extend_from_slice(&without_field(&message, &fields, "bcc"));
    Ok(Submission {
        full,
        delivered,
        from: from.unwrap_or_else(|| sender.address.clone()),
        recipients,
        save_to_sent_items: true,
    })
}

/// A property of a JSON object, its name matched without case.
pub(super) fn property<'v>(object: &'v Map<String, Value>, name: &str) -> Option<&'v Value> {
    object
        .iter()
        .find(|(key, _)| key.eq_ignore_ascii_case(name))
        .map(|(_, value)| value)
        .filter(|value| !value.is_null())
}

pub(super) fn string_property<'v>(object: &'v Map<String, Value>, name: &str) -> Option<&'v str> {
    property(object, name).and_then(Value::as_str)
}

/// A recipient: (display name, address).
type Recipient = (Option<String>, String);

/// A `recipient` object (`{"emailAddress": {"address": …, "name": …}}`).
fn recipient(value: &Value) -> Result<Recipient, GraphError> {
    let email = value
        .as_object()
        .and_then(|object| property(object, "emailAddress"))
        .and_then(Value::as_object)
        .ok_or_else(invalid_recipient)?;
    let address = string_property(email, "address")
        .map(str::trim)
        .filter(|address| is_address(address))
        .ok_or_else(invalid_recipient)?;
    let name = string_property(email, "name")
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .map(str::to_owned);
    Ok((name, address.to_owned()))
}

/// `local@domain`, with nothing that could break the header it goes in.
fn is_address(address: &str) -> bool {
    address
        .split_once('@')
        .is_some_and(|(local, domain)| !local.is_empty() && !domain.is_empty())
        && !address
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "<>,;\"()[]\\".contains(c))
}

fn recipients(message: &Map<String, Value>, name: &str) -> Result<Vec<Recipient>, GraphError> {
    match property(message, name) {
        None => Ok(Vec::new()),
        Some(Value::Array(items)) => items.iter().map(recipient).collect(),
        Some(_) => Err(invalid_recipient()),
    }
}

/// One `#microsoft.graph.fileAttachment`.
#[derive(Debug)]
pub(super) struct Attachment {
    pub(super) name: String,
    pub(super) content_type: String,
    pub(super) data: Vec<u8>,
    /// The Content-ID of an inline attachment.
    pub(super) inline_id: Option<String>,
}

pub(super) fn attachment(value: &Value) -> Result<Attachment, GraphError> {
    let object = value.as_object().ok_or_else(unreadable_json)?;
    let odata_type = string_property(object, "@odata.type").unwrap_or_default();
    if !odata_type.eq_ignore_ascii_case("#microsoft.graph.fileAttachment") {
        return Err(GraphError::bad_request(
            "BadRequest",
            format!(
                "The sandbox models only attachments of '@odata.type' '#microsoft.graph.fileAttachment', not '{odata_type}'."
            ),
        ));
    }
    let name = string_property(object, "name")
        .unwrap_or("attachment")
        .to_owned();
    let content_type = string_property(object, "contentType")
        .map(str::trim)
        .filter(|content_type| !content_type.is_empty())
        .unwrap_or("application/octet-stream");
    let valid_type = content_type.split_once('/').is_some_and(|(kind, subtype)| {
        !kind.is_empty()
            && !subtype.is_empty()
            && content_type
                .chars()
                .all(|c| c.is_ascii_graphic() && !"()<>@,;:\\\"[]?=".contains(c))
    });
    if !valid_type {
        return Err(GraphError::bad_request(
            "BadRequest",
            format!("'{content_type}' is not a valid attachment content type."),
        ));
    }
    let raw = string_property(object, "contentBytes").unwrap_or_default();
    let data = base64::engine::general_purpose::STANDARD
        .decode(raw)
        .map_err(|_| cannot_convert(raw, "Edm.Binary"))?;
    let inline = property(object, "isInline")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let content_id = string_property(object, "contentId")
        .map(|id| id.trim().trim_start_matches('<').trim_end_matches('>'))
        .filter(|id| !id.is_empty());
    if let Some(id) = content_id
        && id
            .chars()
            .any(|c| !c.is_ascii_graphic() || "<>\"\\".contains(c))
    {
        return Err(GraphError::bad_request(
            "BadRequest",
            format!("'{id}' is not a valid contentId."),
        ));
    }
    Ok(Attachment {
        name,
        content_type: content_type.to_owned(),
        data,
        inline_id: content_id.filter(|_| inline).map(str::to_owned),
    })
}

/// A custom header's name: `x-…`, a valid field name.
fn check_header_name(name: &str) -> Result<(), GraphError> {
    let valid = name.len() > 2
        && name[..2].eq_ignore_ascii_case("x-")
        && name
            .bytes()
            .all(|byte| (33..=126).contains(&byte) && byte != b':');
    if valid {
        Ok(())
    } else {
        Err(GraphError::bad_request(
            "InvalidInternetMessageHeader",
            format!("The internet message header name '{name}' should start with 'x-' or 'X-'."),
        ))
    }
}

/// The JSON form.
fn json_submission(body: &[u8], sender: &Mailbox, now: u64) -> Result<Submission, GraphError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(GraphError::bad_request(
            "BadRequest",
            "Empty Payload. JSON content expected.",
        ));
    }
    let request: Value = serde_json::from_slice(body).map_err(|_| unreadable_json())?;
    let request = request.as_object().ok_or_else(unreadable_json)?;
    let message = property(request, "message")
        .and_then(Value::as_object)
        .ok_or_else(|| {
            GraphError::bad_request(
                "ErrorInvalidParameter",
                "The value of the parameter 'Message' is empty.",
            )
        })?;
    let save_to_sent_items = match property(request, "saveToSentItems") {
        None => true,
        Some(Value::Bool(save)) => *save,
        Some(Value::String(text)) if text.eq_ignore_ascii_case("true") => true,
        Some(Value::String(text)) if text.eq_ignore_ascii_case("false") => false,
        Some(other) => {
            let literal = other
                .as_str()
                .map_or_else(|| other.to_string(), str::to_owned);
            return Err(cannot_convert(&literal, "Edm.Boolean"));
        }
    };
    let built = build_message(message, sender, now)?;
    let fields = header_fields(&built.full).unwrap_or_default();
    let delivered = without_field(&built.full, &fields, "bcc");
    Ok(Submission {
        full: built.full,
        delivered,
        from: built.from,
        recipients: built.recipients,
        save_to_sent_items,
    })
}

/// A message built from Graph's JSON.
#[derive(Debug)]
pub(super) struct BuiltMessage {
    /// The RFC 5322 message, `Bcc:` included.
    pub(super) full: Vec<u8>,
    /// The address it is from.
    pub(super) from: String,
    /// Every recipient once (To, Cc, Bcc).
    pub(super) recipients: Vec<String>,
}

/// Graph's JSON `message` object as an RFC 5322 message, from `sender` unless it names a `from`, with a
/// new `Message-ID` and the `Date` `now` (for `sendMail` and for a new draft).
pub(super) fn build_message(
    message: &Map<String, Value>,
    sender: &Mailbox,
    now: u64,
) -> Result<BuiltMessage, GraphError> {
    use mail_builder::{
        MessageBuilder,
        headers::{address::Address, text::Text},
    };

    let to = recipients(message, "toRecipients")?;
    let cc = recipients(message, "ccRecipients")?;
    let bcc = recipients(message, "bccRecipients")?;
    let reply_to = recipients(message, "replyTo")?;
    let from = match property(message, "from") {
        Some(value) => recipient(value)?,
        None => (Some(sender.display_name.clone()), sender.address.clone()),
    };
    let subject = string_property(message, "subject");
    let (html, content) = match property(message, "body").and_then(Value::as_object) {
        None => (false, String::new()),
        Some(body) => {
            let html = match string_property(body, "contentType") {
                None => false,
                Some(kind) if kind.eq_ignore_ascii_case("text") => false,
                Some(kind) if kind.eq_ignore_ascii_case("html") => true,
                Some(kind) => return Err(cannot_convert(kind, "microsoft.graph.bodyType")),
            };
            (
                html,
                string_property(body, "content")
                    .unwrap_or_default()
                    .to_owned(),
            )
        }
    };
    let mut custom_headers = Vec::new();
    if let Some(items) = property(message, "internetMessageHeaders") {
        for item in items.as_array().ok_or_else(unreadable_json)? {
            let item = item.as_object().ok_or_else(unreadable_json)?;
            let name = string_property(item, "name").unwrap_or_default();
            check_header_name(name)?;
            let value = string_property(item, "value").unwrap_or_default();
            custom_headers.push((name.to_owned(), value.to_owned()));
        }
    }
    let mut attachments = Vec::new();
    if let Some(items) = property(message, "attachments") {
        for item in items.as_array().ok_or_else(unreadable_json)? {
            attachments.push(attachment(item)?);
        }
    }

    // `internetMessageId` is writable on a new message (Graph's message resource: "updatable only if isDraft
    // is true"): a usable `<id@domain>` is kept, anything else gets a new one (the sandbox's choice).
    let message_id = string_property(message, "internetMessageId")
        .map(|id| id.trim().trim_start_matches('<').trim_end_matches('>'))
        .filter(|id| {
            id.contains('@')
                && id.len() <= 250
                && id
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && !b"<>\"".contains(&b))
        })
        .map_or_else(|| new_message_id(&from.1), str::to_owned);
    let address = |(name, address): &Recipient| Address::new_address(name.clone(), address.clone());
    let list = |items: &[Recipient]| Address::new_list(items.iter().map(address).collect());
    let mut builder = MessageBuilder::new()
        .from(address(&from))
        .message_id(message_id)
        .date(i64::try_from(now).unwrap_or(i64::MAX));
    if !to.is_empty() {
        builder = builder.to(list(&to));
    }
    if !cc.is_empty() {
        builder = builder.cc(list(&cc));
    }
    if !bcc.is_empty() {
        builder = builder.bcc(list(&bcc));
    }
    if !reply_to.is_empty() {
        builder = builder.reply_to(list(&reply_to));
    }
    if let Some(subject) = subject {
        builder = builder.subject(subject.to_owned());
    }
    for (name, value) in custom_headers {
        builder = builder.header(name, Text::new(value));
    }
    builder = if html {
        builder.html_body(content)
    } else {
        builder.text_body(content)
    };
    for part in attachments {
        builder = match part.inline_id {
            Some(cid) => builder.inline(part.content_type, cid, part.data),
            None => builder.attachment(part.content_type, part.name, part.data),
        };
    }
    let full = builder
        .write_to_vec()
        .expect("writing to a Vec cannot fail");
    let mut all = Vec::new();
    for (_, address) in to.iter().chain(&cc).chain(&bcc) {
        if !all
            .iter()
            .any(|seen: &String| seen.eq_ignore_ascii_case(address))
        {
            all.push(address.clone());
        }
    }
    Ok(BuiltMessage {
        full,
        from: from.1,
        recipients: all,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_fields_span_continuations_and_stop_at_the_blank_line() {
        let message = b"To: a@x\r\nBcc: b@x,\r\n c@x\r\nSubject: s\r\n\r\nBcc: not a header\r\n";
        let fields = header_fields(message).unwrap();
        let names: Vec<&str> = fields.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["To", "Bcc", "Subject"]);
        assert_eq!(
            without_field(message, &fields, "BCC"),
            b"To: a@x\r\nSubject: s\r\n\r\nBcc: not a header\r\n"
        );
        let lf = b"From: a@x\nbcc: b@x\n\nbody\n";
        let fields = header_fields(lf).unwrap();
        assert_eq!(without_field(lf, &fields, "bcc"), b"From: a@x\n\nbody\n");
        for not_a_message in [
            &b"hello world"[..],
            b"",
            b"\r\nbody",
            b" folded: first\r\n\r\n",
            b"Bad Name: x\r\n\r\n",
        ] {
            assert!(header_fields(not_a_message).is_none(), "{not_a_message:?}");
        }
    }

    #[test]
    fn custom_header_names_start_with_x() {
        assert!(check_header_name("x-custom-id").is_ok());
        assert!(check_header_name("X-Mailer").is_ok());
        for bad in ["Reply-To", "x-", "x-a b", "x-a:b", "", "xfoo"] {
            assert_eq!(
                check_header_name(bad).unwrap_err().code,
                "InvalidInternetMessageHeader",
                "{bad}"
            );
        }
    }

    #[test]
    fn addresses_are_plain_addr_specs() {
        assert!(is_address("a@contoso.com"));
        for bad in ["", "a", "@x", "a@", "a b@x", "a@x>", "a@x\r\nBcc: y@z"] {
            assert!(!is_address(bad), "{bad}");
        }
    }
}
