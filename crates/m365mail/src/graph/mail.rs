//! Graph's mail calls (microsoft.md §8.3, §8.5): folders, the delta query, a message's MIME, the actions a
//! reader takes after a message (read, flag, move, copy, delete), and sending as JSON — `sendMail`, or a
//! draft with upload sessions for attachments too large for one request.
//!
//! Messages are always asked for with `Prefer: IdType="ImmutableId"`, so an id survives a move (the reader's
//! checkpoint keys are ids). Every call addresses `/users/{mailbox}`: app-only tokens must, and a delegated
//! token may (its own mailbox, or one it has FullAccess to).

// GraphError carries what support needs (request ids, the permission); it is built once per failed call.
#![allow(clippy::result_large_err)]

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use url::Url;

use super::{Call, GraphClient, GraphError, Permission, Reply, next_link, page_link};
use crate::secret::Secret;

/// Reading mail (`GET …/messages`, `mailFolders`, delta, `$value`).
pub const MAIL_READ: Permission = Permission {
    delegated: &["Mail.Read", "Mail.ReadWrite"],
    application: &["Mail.Read", "Mail.ReadWrite"],
};

/// Changing mail (`PATCH`, move, copy, delete, drafts, upload sessions).
pub const MAIL_READ_WRITE: Permission = Permission {
    delegated: &["Mail.ReadWrite"],
    application: &["Mail.ReadWrite"],
};

/// Graph's well-known folder names (usable wherever a folder id is).
pub const WELL_KNOWN_FOLDERS: [&str; 7] = [
    "inbox",
    "sentitems",
    "drafts",
    "deleteditems",
    "archive",
    "junkemail",
    "msgfolderroot",
];

/// Messages per delta page asked for (`Prefer: odata.maxpagesize`).
pub const DELTA_PAGE_SIZE: u32 = 100;

/// The most folders listed (every level together): a bound on a hostile or runaway listing.
const MAX_FOLDERS: usize = 10_000;
/// The deepest folder nesting followed.
const MAX_FOLDER_DEPTH: usize = 32;

/// The largest piece of an attachment one upload `PUT` carries: 12 × 320 KiB, under the 4 MB Microsoft
/// recommends per request (microsoft.md §8.3).
pub const UPLOAD_CHUNK: usize = 12 * 320 * 1024;

/// Attachments at or above this size go through an upload session; smaller ones travel inline (base64
/// makes them a third larger, and one request takes about 4 MB).
pub const INLINE_ATTACHMENT_LIMIT: usize = 3 * 1024 * 1024;

const IMMUTABLE_IDS: &str = "IdType=\"ImmutableId\"";

/// One mail folder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GraphFolder {
    /// Its id.
    pub id: String,
    /// Its name.
    pub display_name: String,
    /// Its parent's id.
    #[serde(default)]
    pub parent_folder_id: Option<String>,
    /// Folders inside it.
    #[serde(default)]
    pub child_folder_count: u32,
    /// Unread messages.
    #[serde(default)]
    pub unread_item_count: u32,
    /// Messages.
    #[serde(default)]
    pub total_item_count: u32,
    /// Its path from the top (`Archive/2026`), as `read --folder` takes it.
    #[serde(default)]
    pub path: String,
}

/// An address as Graph gives it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmailAddress {
    /// The display name.
    #[serde(default)]
    pub name: Option<String>,
    /// The address.
    #[serde(default)]
    pub address: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct Recipient {
    #[serde(rename = "emailAddress", default)]
    email_address: EmailAddress,
}

/// A message as a delta page lists it (the properties the reader selects).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GraphMessage {
    /// Its (immutable) id.
    pub id: String,
    /// When it arrived, RFC 3339.
    #[serde(default)]
    pub received_date_time: Option<String>,
    /// Read or not.
    #[serde(default)]
    pub is_read: Option<bool>,
    /// Whether it has attachments (Graph does not count inline images).
    #[serde(default)]
    pub has_attachments: Option<bool>,
    /// Its `Message-ID`, with brackets.
    #[serde(default)]
    pub internet_message_id: Option<String>,
    /// Its subject.
    #[serde(default)]
    pub subject: Option<String>,
    /// `From`.
    #[serde(default, deserialize_with = "recipient")]
    pub from: Option<EmailAddress>,
    /// `To`.
    #[serde(default, deserialize_with = "recipients")]
    pub to_recipients: Vec<EmailAddress>,
    /// Delta's mark of an item that left the folder (`@removed`).
    #[serde(default, rename = "@removed")]
    pub removed: Option<Value>,
}

fn recipient<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<EmailAddress>, D::Error> {
    Ok(Option::<Recipient>::deserialize(d)?.map(|r| r.email_address))
}

fn recipients<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<EmailAddress>, D::Error> {
    Ok(Option::<Vec<Recipient>>::deserialize(d)?
        .unwrap_or_default()
        .into_iter()
        .map(|r| r.email_address)
        .collect())
}

/// The properties the reader asks a delta query for.
pub const DELTA_SELECT: &str =
    "id,receivedDateTime,isRead,hasAttachments,internetMessageId,subject,from,toRecipients";

/// One page of a delta round.
#[derive(Debug, Clone, Default)]
pub struct DeltaPage {
    /// The messages (removed ones carry [`GraphMessage::removed`]).
    pub messages: Vec<GraphMessage>,
    /// The next page of this round (`@odata.nextLink`).
    pub next: Option<Url>,
    /// The round's end: where the next round starts (`@odata.deltaLink`).
    pub delta: Option<Url>,
}

/// A message's MIME, read up to a bound.
#[derive(Debug, Clone)]
pub struct MimeDownload {
    /// The bytes (the first `limit` when truncated).
    pub bytes: Vec<u8>,
    /// The message is larger than the bound.
    pub truncated: bool,
}

/// An attachment for a draft (inline bytes or an upload session, by size).
#[derive(Debug, Clone)]
pub struct DraftAttachment<'a> {
    /// The file name.
    pub name: &'a str,
    /// `type/subtype`.
    pub content_type: &'a str,
    /// The bytes.
    pub data: &'a [u8],
    /// For an inline part: its Content-ID.
    pub content_id: Option<&'a str>,
}

impl GraphError {
    /// Graph no longer knows the delta round's state (`syncStateNotFound`, `resyncRequired`,
    /// `syncStateInvalid`): the folder must be read again from the start.
    pub fn needs_resync(&self) -> bool {
        matches!(self, Self::Api { code, .. }
            if ["syncStateNotFound", "resyncRequired", "syncStateInvalid"]
                .iter()
                .any(|known| code.eq_ignore_ascii_case(known)))
    }

    /// The message or folder is not there (404 `ErrorItemNotFound` and kin).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::Api { status: 404, code, .. } if !code.eq_ignore_ascii_case("MailboxNotEnabledForRESTAPI"))
    }
}

/// Whether `name` is one of Graph's well-known folder names.
pub fn is_well_known_folder(name: &str) -> bool {
    WELL_KNOWN_FOLDERS
        .iter()
        .any(|known| known.eq_ignore_ascii_case(name))
}

impl GraphClient {
    /// `…/v1.0/users/{mailbox}/{segments…}`, each segment percent-encoded.
    pub fn mailbox_url(&self, mailbox: &str, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .expect("an http(s) base")
            .pop_if_empty()
            .push("users")
            .push(mailbox)
            .extend(segments);
        url
    }

    async fn mail_json(&self, call: Call<'_>) -> Result<Value, GraphError> {
        let (method, url) = (call.method, call.url.clone());
        self.call(call).await?.json(method, &url)
    }

    /// Every mail folder of `mailbox`, parents before children, each with its path (`Archive/2026`).
    pub async fn folders(
        &self,
        token: &Secret,
        mailbox: &str,
    ) -> Result<Vec<GraphFolder>, GraphError> {
        let mut found: Vec<GraphFolder> = Vec::new();
        let mut top = self.mailbox_url(mailbox, &["mailFolders"]);
        top.query_pairs_mut().append_pair("$top", "100");
        let mut pending = vec![(top, String::new(), 0usize)];
        while let Some((url, parent_path, depth)) = pending.pop() {
            let mut next = Some(url);
            while let Some(url) = next.take() {
                let page = self
                    .mail_json(Call::new("GET", &url, Some(token), mailbox, MAIL_READ))
                    .await?;
                for value in page["value"].as_array().into_iter().flatten() {
                    let mut folder: GraphFolder =
                        serde_json::from_value(value.clone()).map_err(|e| {
                            GraphError::Protocol {
                                method: "GET",
                                path: url.path().to_owned(),
                                what: format!("a folder that is not one: {e}"),
                            }
                        })?;
                    folder.path = if parent_path.is_empty() {
                        folder.display_name.clone()
                    } else {
                        format!("{parent_path}/{}", folder.display_name)
                    };
                    if folder.child_folder_count > 0 && depth < MAX_FOLDER_DEPTH {
                        let mut children =
                            self.mailbox_url(mailbox, &["mailFolders", &folder.id, "childFolders"]);
                        children.query_pairs_mut().append_pair("$top", "100");
                        pending.push((children, folder.path.clone(), depth + 1));
                    }
                    found.push(folder);
                    if found.len() >= MAX_FOLDERS {
                        return Ok(found);
                    }
                }
                next = next_link(&page, &url)?;
            }
        }
        Ok(found)
    }

    /// The id `folder` names: a well-known name's folder, else a folder whose path (`Archive/2026`) matches
    /// without case, else a folder id.
    pub async fn resolve_folder(
        &self,
        token: &Secret,
        mailbox: &str,
        folder: &str,
    ) -> Result<String, GraphError> {
        // One id for one folder, however it was named: the reader's checkpoint is keyed by it, so `inbox`,
        // `Inbox` and the Inbox's id must not be three sources that each hand the folder on again.
        if is_well_known_folder(folder) {
            let url = self.mailbox_url(mailbox, &["mailFolders", &folder.to_ascii_lowercase()]);
            return match self
                .mail_json(Call::new("GET", &url, Some(token), mailbox, MAIL_READ))
                .await
            {
                Ok(found) => {
                    found["id"]
                        .as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| GraphError::Protocol {
                            method: "GET",
                            path: url.path().to_owned(),
                            what: "a folder without an id".into(),
                        })
                }
                Err(error) if error.is_not_found() => Err(GraphError::NoSuchFolder {
                    mailbox: mailbox.to_owned(),
                    folder: folder.to_owned(),
                }),
                Err(error) => Err(error),
            };
        }
        let folders = self.folders(token, mailbox).await?;
        let by_path = folders
            .iter()
            .find(|f| f.path.eq_ignore_ascii_case(folder))
            .or_else(|| folders.iter().find(|f| f.id == folder));
        match by_path {
            Some(found) => Ok(found.id.clone()),
            None => Err(GraphError::NoSuchFolder {
                mailbox: mailbox.to_owned(),
                folder: folder.to_owned(),
            }),
        }
    }

    /// The first request of a delta round over `folder` (an id or well-known name): new messages only
    /// (`changeType=created`), with [`DELTA_SELECT`], received at or after `since` (RFC 3339) when given.
    pub fn delta_start(&self, mailbox: &str, folder: &str, since: Option<&str>) -> Url {
        let mut url = self.mailbox_url(mailbox, &["mailFolders", folder, "messages", "delta"]);
        {
            let mut query = url.query_pairs_mut();
            query.append_pair("changeType", "created");
            query.append_pair("$select", DELTA_SELECT);
            if let Some(since) = since {
                query.append_pair("$filter", &format!("receivedDateTime ge {since}"));
            }
        }
        url
    }

    /// One delta page (`url` is [`Self::delta_start`]'s, or a page's next or delta link).
    pub async fn delta_page(
        &self,
        token: &Secret,
        mailbox: &str,
        url: &Url,
    ) -> Result<DeltaPage, GraphError> {
        let prefer = format!("{IMMUTABLE_IDS}, odata.maxpagesize={DELTA_PAGE_SIZE}");
        let page = self
            .mail_json(Call {
                prefer: Some(&prefer),
                ..Call::new("GET", url, Some(token), mailbox, MAIL_READ)
            })
            .await?;
        let protocol = |what: String| GraphError::Protocol {
            method: "GET",
            path: url.path().to_owned(),
            what,
        };
        let messages = match page.get("value") {
            Some(values) => serde_json::from_value(values.clone())
                .map_err(|e| protocol(format!("a delta page whose messages are not: {e}")))?,
            None => return Err(protocol("a delta page without `value`".into())),
        };
        let (next, delta) = (
            next_link(&page, url)?,
            page_link(&page, "@odata.deltaLink", url)?,
        );
        if next.is_none() && delta.is_none() {
            return Err(protocol(
                "a delta page with neither @odata.nextLink nor @odata.deltaLink".into(),
            ));
        }
        Ok(DeltaPage {
            messages,
            next,
            delta,
        })
    }

    /// A message's MIME (`GET …/messages/{id}/$value`), at most `limit` bytes of it.
    pub async fn message_mime(
        &self,
        token: &Secret,
        mailbox: &str,
        id: &str,
        limit: usize,
    ) -> Result<MimeDownload, GraphError> {
        let url = self.mailbox_url(mailbox, &["messages", id, "$value"]);
        let reply: Reply = self
            .call(Call {
                prefer: Some(IMMUTABLE_IDS),
                limit,
                ..Call::new("GET", &url, Some(token), mailbox, MAIL_READ)
            })
            .await?;
        Ok(MimeDownload {
            bytes: reply.bytes,
            truncated: reply.truncated,
        })
    }

    async fn patch_message(
        &self,
        token: &Secret,
        mailbox: &str,
        id: &str,
        change: Value,
    ) -> Result<(), GraphError> {
        let url = self.mailbox_url(mailbox, &["messages", id]);
        self.mail_json(Call {
            body: Some(("application/json", change.to_string().into_bytes())),
            prefer: Some(IMMUTABLE_IDS),
            ..Call::new("PATCH", &url, Some(token), mailbox, MAIL_READ_WRITE)
        })
        .await?;
        Ok(())
    }

    /// Marks a message read (`PATCH {"isRead": true}`).
    pub async fn mark_read(
        &self,
        token: &Secret,
        mailbox: &str,
        id: &str,
    ) -> Result<(), GraphError> {
        self.patch_message(token, mailbox, id, json!({ "isRead": true }))
            .await
    }

    /// Flags a message (`PATCH {"flag": {"flagStatus": "flagged"}}`).
    pub async fn flag(&self, token: &Secret, mailbox: &str, id: &str) -> Result<(), GraphError> {
        self.patch_message(
            token,
            mailbox,
            id,
            json!({ "flag": { "flagStatus": "flagged" } }),
        )
        .await
    }

    /// Moves (`action` `move`) or copies (`copy`) a message to `destination` (an id or well-known name);
    /// the id of the message in its new place.
    pub async fn move_or_copy(
        &self,
        token: &Secret,
        mailbox: &str,
        id: &str,
        action: &'static str,
        destination: &str,
    ) -> Result<String, GraphError> {
        let url = self.mailbox_url(mailbox, &["messages", id, action]);
        let reply = self
            .mail_json(Call {
                body: Some((
                    "application/json",
                    json!({ "destinationId": destination })
                        .to_string()
                        .into_bytes(),
                )),
                prefer: Some(IMMUTABLE_IDS),
                ..Call::new("POST", &url, Some(token), mailbox, MAIL_READ_WRITE)
            })
            .await?;
        Ok(reply["id"].as_str().unwrap_or(id).to_owned())
    }

    /// Deletes a message (`DELETE`: Exchange keeps it in Recoverable Items, out of the user's sight).
    pub async fn delete_message(
        &self,
        token: &Secret,
        mailbox: &str,
        id: &str,
    ) -> Result<(), GraphError> {
        let url = self.mailbox_url(mailbox, &["messages", id]);
        self.call(Call {
            prefer: Some(IMMUTABLE_IDS),
            ..Call::new("DELETE", &url, Some(token), mailbox, MAIL_READ_WRITE)
        })
        .await?;
        Ok(())
    }

    /// `POST /users/{mailbox}/sendMail` with a JSON message (microsoft.md §8.1); `save_to_sent_items` false
    /// keeps no copy in Sent Items.
    pub async fn send_json(
        &self,
        token: &Secret,
        mailbox: &str,
        message: Value,
        save_to_sent_items: bool,
    ) -> Result<(), GraphError> {
        let body = json!({ "message": message, "saveToSentItems": save_to_sent_items });
        if body.to_string().len() > super::MAX_INLINE_MIME * 4 / 3 + 64 * 1024 {
            return Err(GraphError::TooLarge {
                size: body.to_string().len(),
                limit: super::MAX_INLINE_MIME,
            });
        }
        let url = self.mailbox_url(mailbox, &["sendMail"]);
        self.mail_json(Call {
            body: Some(("application/json", body.to_string().into_bytes())),
            ..Call::new("POST", &url, Some(token), mailbox, super::MAIL_SEND)
        })
        .await?;
        Ok(())
    }

    /// Creates a draft (`POST /users/{mailbox}/messages`) from a JSON message; its id.
    pub async fn create_draft(
        &self,
        token: &Secret,
        mailbox: &str,
        message: &Value,
    ) -> Result<String, GraphError> {
        let url = self.mailbox_url(mailbox, &["messages"]);
        let reply = self
            .mail_json(Call {
                body: Some(("application/json", message.to_string().into_bytes())),
                prefer: Some(IMMUTABLE_IDS),
                ..Call::new("POST", &url, Some(token), mailbox, MAIL_READ_WRITE)
            })
            .await?;
        reply["id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| GraphError::Protocol {
                method: "POST",
                path: url.path().to_owned(),
                what: "a created draft without an id".into(),
            })
    }

    /// Attaches `attachment` to draft `id` through an upload session (microsoft.md §8.3): the session is
    /// created with the token, then the bytes go in [`UPLOAD_CHUNK`] pieces, in order, to the session's
    /// pre-authenticated URL, without the token. Returns the number of `PUT`s.
    pub async fn upload_attachment(
        &self,
        token: &Secret,
        mailbox: &str,
        id: &str,
        attachment: &DraftAttachment<'_>,
    ) -> Result<u32, GraphError> {
        let url = self.mailbox_url(
            mailbox,
            &["messages", id, "attachments", "createUploadSession"],
        );
        let mut item = json!({
            "attachmentType": "file",
            "name": attachment.name,
            "size": attachment.data.len(),
            "contentType": attachment.content_type,
        });
        if let Some(content_id) = attachment.content_id {
            item["isInline"] = json!(true);
            item["contentId"] = json!(content_id);
        }
        let session = self
            .mail_json(Call {
                body: Some((
                    "application/json",
                    json!({ "AttachmentItem": item }).to_string().into_bytes(),
                )),
                ..Call::new("POST", &url, Some(token), mailbox, MAIL_READ_WRITE)
            })
            .await?;
        let upload = session["uploadUrl"]
            .as_str()
            .and_then(|link| Url::parse(link).ok())
            .filter(|link| link.scheme() == "https" || link.scheme() == self.base.scheme())
            .ok_or_else(|| GraphError::Protocol {
                method: "POST",
                path: url.path().to_owned(),
                what: "an upload session without a usable uploadUrl".into(),
            })?;
        let total = attachment.data.len();
        let mut puts = 0;
        // Only large attachments come here: never empty.
        for start in (0..total).step_by(UPLOAD_CHUNK) {
            let end = (start + UPLOAD_CHUNK).min(total);
            let reply = self
                .call(Call {
                    body: Some((
                        "application/octet-stream",
                        attachment.data[start..end].to_vec(),
                    )),
                    headers: vec![(
                        "Content-Range",
                        format!("bytes {start}-{}/{total}", end - 1),
                    )],
                    ..Call::new("PUT", &upload, None, mailbox, MAIL_READ_WRITE)
                })
                .await?;
            puts += 1;
            // 201 Created answers the last piece; earlier it would mean the session thinks it is complete.
            if end < total && reply.status == 201 {
                return Err(GraphError::Protocol {
                    method: "PUT",
                    path: upload.path().to_owned(),
                    what: format!("the upload session ended at byte {end} of {total}"),
                });
            }
        }
        Ok(puts)
    }

    /// Sends draft `id` (`POST …/messages/{id}/send`).
    pub async fn send_draft(
        &self,
        token: &Secret,
        mailbox: &str,
        id: &str,
    ) -> Result<(), GraphError> {
        let url = self.mailbox_url(mailbox, &["messages", id, "send"]);
        self.call(Call {
            body: Some(("application/json", Vec::new())),
            ..Call::new("POST", &url, Some(token), mailbox, super::MAIL_SEND)
        })
        .await?;
        Ok(())
    }
}

/// A message in Graph's JSON form (microsoft.md §8.1), and the attachments too large to travel in it.
#[derive(Debug)]
pub struct JsonMessage<'a> {
    /// The `message` object (small attachments inline).
    pub message: Value,
    /// Attachments for upload sessions on a draft (each at least [`INLINE_ATTACHMENT_LIMIT`], or what
    /// did not fit beside the others in one request).
    pub large: Vec<DraftAttachment<'a>>,
}

fn address_json(mailbox: &crate::mime::Mailbox) -> Value {
    let mut address = json!({ "address": mailbox.address.clone().unwrap_or_default() });
    if let Some(name) = mailbox.name.as_deref().filter(|n| !n.is_empty()) {
        address["name"] = json!(name);
    }
    json!({ "emailAddress": address })
}

/// `outgoing` as Graph's JSON message, its `Message-ID` `message_id` (without brackets). `Err` says what the
/// JSON form cannot carry — a text *and* an HTML body (it takes one), `In-Reply-To`/`References`, a header
/// whose name does not start with `X-` — so the caller sends the MIME form instead.
pub fn json_message<'a>(
    outgoing: &'a crate::mime::Outgoing,
    message_id: &str,
) -> Result<JsonMessage<'a>, String> {
    use base64::Engine as _;
    if outgoing.text.is_some() && outgoing.html.is_some() {
        return Err("a text and an HTML body (the JSON form takes one)".into());
    }
    if outgoing.in_reply_to.is_some() || !outgoing.references.is_empty() {
        return Err("In-Reply-To or References (the JSON form sets neither)".into());
    }
    if let Some((name, _)) = outgoing
        .headers
        .iter()
        .find(|(name, _)| !name.get(..2).is_some_and(|p| p.eq_ignore_ascii_case("x-")))
    {
        return Err(format!(
            "the header {name:?} (the JSON form takes only X- headers)"
        ));
    }
    let body = match (&outgoing.html, &outgoing.text) {
        (Some(html), _) => json!({ "contentType": "HTML", "content": html }),
        (None, text) => {
            json!({ "contentType": "Text", "content": text.clone().unwrap_or_default() })
        }
    };
    let mut message = json!({
        "subject": outgoing.subject.clone().unwrap_or_default(),
        "body": body,
        "toRecipients": outgoing.to.iter().map(address_json).collect::<Vec<_>>(),
        "ccRecipients": outgoing.cc.iter().map(address_json).collect::<Vec<_>>(),
        "bccRecipients": outgoing.bcc.iter().map(address_json).collect::<Vec<_>>(),
        "replyTo": outgoing.reply_to.iter().map(address_json).collect::<Vec<_>>(),
        "internetMessageId": format!("<{message_id}>"),
    });
    if let Some(from) = &outgoing.from {
        message["from"] = address_json(from);
    }
    if !outgoing.headers.is_empty() {
        message["internetMessageHeaders"] = outgoing
            .headers
            .iter()
            .map(|(name, value)| json!({ "name": name, "value": value }))
            .collect();
    }
    // Small attachments inline while the request stays under about 3 MB of content; the rest, and every
    // large one, through upload sessions (smallest first inline, so the most fit).
    let mut room = INLINE_ATTACHMENT_LIMIT.saturating_sub(
        outgoing
            .text
            .as_ref()
            .or(outgoing.html.as_ref())
            .map_or(0, String::len),
    );
    let mut parts: Vec<&crate::mime::OutgoingPart> = outgoing.parts.iter().collect();
    parts.sort_by_key(|part| part.data.len());
    let mut inline = Vec::new();
    let mut large = Vec::new();
    for part in parts {
        let attachment = DraftAttachment {
            name: &part.name,
            content_type: &part.content_type,
            data: &part.data,
            content_id: part.content_id.as_deref(),
        };
        if part.data.len() < INLINE_ATTACHMENT_LIMIT && part.data.len() <= room {
            room -= part.data.len();
            let mut item = json!({
                "@odata.type": "#microsoft.graph.fileAttachment",
                "name": part.name,
                "contentType": part.content_type,
                "contentBytes": base64::engine::general_purpose::STANDARD.encode(&part.data),
                "isInline": part.content_id.is_some(),
            });
            if let Some(content_id) = &part.content_id {
                item["contentId"] = json!(content_id);
            }
            inline.push(item);
        } else {
            large.push(attachment);
        }
    }
    // The order the sender gave, for the inline ones too.
    let order = |name: &str| outgoing.parts.iter().position(|p| p.name == name);
    inline.sort_by_key(|item| order(item["name"].as_str().unwrap_or_default()));
    large.sort_by_key(|a| order(a.name));
    if !inline.is_empty() {
        message["attachments"] = Value::Array(inline);
    }
    Ok(JsonMessage { message, large })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delta_messages_and_removals_deserialize() {
        let page: Vec<GraphMessage> = serde_json::from_value(json!([
            {"id": "AAk=", "receivedDateTime": "2026-12-07T10:00:00Z", "isRead": false,
             "hasAttachments": true, "internetMessageId": "<a@b>", "subject": "Hi",
             "from": {"emailAddress": {"name": "A", "address": "a@b"}},
             "toRecipients": [{"emailAddress": {"address": "c@d"}}]},
            {"id": "AAl=", "@removed": {"reason": "deleted"}}
        ]))
        .unwrap();
        assert_eq!(
            page[0].from.as_ref().unwrap().address.as_deref(),
            Some("a@b")
        );
        assert_eq!(page[0].to_recipients[0].address.as_deref(), Some("c@d"));
        assert!(page[0].removed.is_none());
        assert!(page[1].removed.is_some());
    }

    #[test]
    fn the_json_form_carries_what_graph_takes_and_uploads_the_rest() {
        use crate::mime::{Mailbox, Outgoing, OutgoingPart};
        let part = |name: &str, size: usize| OutgoingPart {
            name: name.into(),
            content_type: "application/octet-stream".into(),
            data: vec![7; size],
            content_id: None,
        };
        let mut outgoing = Outgoing {
            from: Some(Mailbox {
                name: Some("Adele".into()),
                address: Some("a@b".into()),
            }),
            to: vec![Mailbox {
                name: None,
                address: Some("c@d".into()),
            }],
            subject: Some("Report".into()),
            text: Some("hello".into()),
            parts: vec![
                part("big.bin", 3 << 20),
                part("small.txt", 10),
                part("mid.bin", 2 << 20),
                part("mid2.bin", 2 << 20),
            ],
            headers: vec![("X-Job".into(), "42".into())],
            ..Outgoing::default()
        };
        let json = json_message(&outgoing, "id@x").unwrap();
        assert_eq!(json.message["internetMessageId"], "<id@x>");
        assert_eq!(json.message["body"]["contentType"], "Text");
        assert_eq!(json.message["from"]["emailAddress"]["name"], "Adele");
        assert_eq!(json.message["internetMessageHeaders"][0]["name"], "X-Job");
        let inline: Vec<&str> = json.message["attachments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["name"].as_str().unwrap())
            .collect();
        assert_eq!(inline, ["small.txt", "mid.bin"]);
        let large: Vec<&str> = json.large.iter().map(|a| a.name).collect();
        assert_eq!(large, ["big.bin", "mid2.bin"]);

        outgoing.html = Some("<p>hello</p>".into());
        assert!(
            json_message(&outgoing, "id@x")
                .unwrap_err()
                .contains("HTML")
        );
        outgoing.html = None;
        outgoing.headers = vec![("Keywords".into(), "x".into())];
        assert!(
            json_message(&outgoing, "id@x")
                .unwrap_err()
                .contains("Keywords")
        );
        outgoing.headers.clear();
        outgoing.in_reply_to = Some("p@x".into());
        assert!(json_message(&outgoing, "id@x").is_err());
    }

    #[test]
    fn sync_state_errors_ask_for_a_resync() {
        let error = |code: &str| GraphError::Api {
            method: "GET",
            path: "/v1.0/users/x/mailFolders/inbox/messages/delta".into(),
            status: 410,
            code: code.into(),
            message: String::new(),
            request_id: None,
            client_request_id: "c".into(),
            permission: MAIL_READ,
        };
        assert!(error("syncStateNotFound").needs_resync());
        assert!(error("SyncStateNotFound").needs_resync());
        assert!(error("resyncRequired").needs_resync());
        assert!(!error("ErrorAccessDenied").needs_resync());
    }
}
