//! Graph drafts and large attachments: `POST messages` (a draft in Drafts), `POST …/attachments`,
//! `createUploadSession` and the chunked `PUT`s to its pre-authenticated URL (the `Authorization` header
//! refused), `POST …/send` delivering as `sendMail` does, and `sendMail`'s `saveToSentItems`.

use std::time::Duration;

use base64::Engine as _;
use m365mail_sandbox::demo;
use mail_parser::{MessageParser, MimeHeaders as _};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::Digest as _;

use crate::{
    common::TestSandbox,
    graph::{GraphAnswer, user_token},
    graph_mail::{ADELE, MAIL_READ_WRITE, call, get, start_mail},
};

const MAIL_SEND: &str = "https://graph.microsoft.com/Mail.Send";
const PARTNER: &str = "partner@fabrikam.example";

/// A token that may change mail and send it.
async fn writer_token(sandbox: &TestSandbox) -> String {
    user_token(sandbox, &format!("{MAIL_READ_WRITE} {MAIL_SEND}")).await
}

fn draft_json() -> Value {
    json!({
        "subject": "Signed contract",
        "body": {"contentType": "HTML", "content": "<p>Here it <b>is</b>.</p>"},
        "toRecipients": [{"emailAddress": {"address": demo::SECOND_USER_UPN, "name": "Alex Wilber"}}],
        "ccRecipients": [{"emailAddress": {"address": PARTNER}}],
        "bccRecipients": [{"emailAddress": {"address": demo::MFA_USER_UPN}}],
    })
}

/// Deterministic incompressible bytes.
fn payload(length: usize) -> Vec<u8> {
    let mut state: u32 = 0x9e37_79b9;
    (0..length)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state.to_le_bytes()[0]
        })
        .collect()
}

/// One PUT to an upload URL.
async fn put(
    sandbox: &TestSandbox,
    url: &str,
    range: Option<(usize, usize, usize)>,
    chunk: Vec<u8>,
    authorization: Option<&str>,
) -> GraphAnswer {
    let mut request = sandbox
        .http
        .put(url)
        .header("content-type", "application/octet-stream")
        .body(chunk);
    if let Some((start, end, total)) = range {
        request = request.header("content-range", format!("bytes {start}-{end}/{total}"));
    }
    if let Some(token) = authorization {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.bytes().await.unwrap();
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    GraphAnswer {
        status,
        headers,
        body,
    }
}

/// The attachments of a stored message: (name, bytes).
fn attachments(message: &[u8]) -> Vec<(String, Vec<u8>)> {
    let parsed = MessageParser::default().parse(message).unwrap();
    parsed
        .attachments()
        .map(|part| {
            (
                part.attachment_name().unwrap_or_default().to_owned(),
                part.contents().to_vec(),
            )
        })
        .collect()
}

fn has_header(message: &[u8], name: &str) -> bool {
    let text = String::from_utf8_lossy(message);
    let header = text.split("\r\n\r\n").next().unwrap_or_default().to_owned();
    header.lines().any(|line| {
        line.to_ascii_lowercase()
            .starts_with(&format!("{}:", name.to_ascii_lowercase()))
    })
}

#[tokio::test]
async fn a_draft_gets_a_chunked_attachment_and_is_sent_as_sendmail_sends() {
    let (sandbox, _) = start_mail().await;
    let token = writer_token(&sandbox).await;
    let admin = sandbox.sandbox.admin();

    // The draft: 201, in Drafts with \Draft, visible to IMAP.
    let created = call(
        &sandbox,
        Method::POST,
        "v1.0/me/messages",
        &token,
        &[],
        Some(draft_json()),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let draft_id = created.body["id"].as_str().unwrap().to_owned();
    assert_eq!(created.body["isDraft"], true);
    assert_eq!(created.body["subject"], "Signed contract");
    assert_eq!(created.body["body"]["contentType"], "html");
    assert_eq!(
        created.body["bccRecipients"][0]["emailAddress"]["address"],
        demo::MFA_USER_UPN
    );
    let drafts = get(&sandbox, "v1.0/me/mailFolders/drafts", &token).await;
    assert_eq!(created.body["parentFolderId"], drafts.ok()["id"]);
    assert_eq!(admin.folder_messages(ADELE, "Drafts").len(), 1);

    // A small attachment inline in the request.
    let small = call(
        &sandbox,
        Method::POST,
        &format!("v1.0/me/messages/{draft_id}/attachments"),
        &token,
        &[],
        Some(json!({
            "@odata.type": "#microsoft.graph.fileAttachment",
            "name": "notes.txt",
            "contentType": "text/plain",
            "contentBytes": base64::engine::general_purpose::STANDARD.encode("Hello World!"),
        })),
    )
    .await;
    assert_eq!(small.status, StatusCode::CREATED, "{}", small.body);
    assert_eq!(small.body["name"], "notes.txt");
    assert_eq!(small.body["size"], 12);
    assert!(small.body["id"].is_string());

    // A large one through an upload session.
    let big = payload(7_000_000);
    let session = call(
        &sandbox,
        Method::POST,
        &format!("v1.0/me/messages/{draft_id}/attachments/createUploadSession"),
        &token,
        &[],
        Some(json!({"AttachmentItem": {"attachmentType": "file", "name": "big.pdf", "size": big.len(), "contentType": "application/pdf"}})),
    )
    .await;
    assert_eq!(session.status, StatusCode::CREATED, "{}", session.body);
    assert_eq!(session.body["nextExpectedRanges"], json!(["0-"]));
    assert!(
        session.body["expirationDateTime"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );
    let url = session.body["uploadUrl"].as_str().unwrap().to_owned();
    let prefix = format!(
        "{}_sandbox/outlook/api/v2.0/Users('{ADELE}')/Messages('",
        sandbox.sandbox.base_url()
    );
    assert!(url.starts_with(&prefix), "{url}");
    assert!(
        url.contains("')/AttachmentSessions('") && url.contains("')?authtoken="),
        "{url}"
    );

    // The pre-authenticated URL refuses a bearer token.
    let with_bearer = put(
        &sandbox,
        &url,
        Some((0, 9, big.len())),
        big[..10].to_vec(),
        Some(&token),
    )
    .await;
    with_bearer.error(401, "InvalidAuthenticationToken");
    // Another authtoken.
    let forged = format!("{}x", url);
    put(
        &sandbox,
        &forged,
        Some((0, 9, big.len())),
        big[..10].to_vec(),
        None,
    )
    .await
    .error(401, "InvalidAuthenticationToken");

    let chunk = 2 * 1024 * 1024;
    let first = put(
        &sandbox,
        &url,
        Some((0, chunk - 1, big.len())),
        big[..chunk].to_vec(),
        None,
    )
    .await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    assert_eq!(first.body["NextExpectedRanges"], json!([chunk.to_string()]));
    assert!(first.body["ExpirationDateTime"].is_string());
    // Out of order, overlapping, no range, a range unlike the body: 400 with the next expected byte.
    for (range, body) in [
        (
            Some((chunk + 10, chunk + 19, big.len())),
            big[chunk + 10..chunk + 20].to_vec(),
        ),
        (
            Some((chunk - 10, chunk + 9, big.len())),
            big[chunk - 10..chunk + 10].to_vec(),
        ),
        (None, big[chunk..chunk + 10].to_vec()),
        (
            Some((chunk, chunk + 19, big.len())),
            big[chunk..chunk + 10].to_vec(),
        ),
        (
            Some((chunk, chunk + 9, big.len() + 1)),
            big[chunk..chunk + 10].to_vec(),
        ),
    ] {
        let refused = put(&sandbox, &url, range, body, None).await;
        assert_eq!(
            refused.status,
            StatusCode::BAD_REQUEST,
            "{range:?}: {}",
            refused.body
        );
        assert_eq!(refused.body["error"]["code"], "InvalidRange");
        assert_eq!(
            refused.body["NextExpectedRanges"],
            json!([chunk.to_string()])
        );
    }
    // Over 4 MiB in one PUT.
    let too_big = 4 * 1024 * 1024 + 1;
    put(
        &sandbox,
        &url,
        Some((chunk, chunk + too_big - 1, big.len())),
        big[chunk..chunk + too_big].to_vec(),
        None,
    )
    .await
    .error(413, "ErrorRequestEntityTooLarge");
    // 4 MiB, then the rest: 201 with the attachment's Location.
    let middle = chunk + 4 * 1024 * 1024;
    let second = put(
        &sandbox,
        &url,
        Some((chunk, middle - 1, big.len())),
        big[chunk..middle].to_vec(),
        None,
    )
    .await;
    assert_eq!(second.status, StatusCode::OK, "{}", second.body);
    assert_eq!(
        second.body["NextExpectedRanges"],
        json!([middle.to_string()])
    );
    let chunk = middle;
    let last = put(
        &sandbox,
        &url,
        Some((chunk, big.len() - 1, big.len())),
        big[chunk..].to_vec(),
        None,
    )
    .await;
    assert_eq!(last.status, StatusCode::CREATED, "{}", last.body);
    let location = last.header("location").unwrap();
    assert!(
        location.starts_with(&prefix) && location.contains("')/Attachments('"),
        "{location}"
    );
    // The session is over.
    put(
        &sandbox,
        &url,
        Some((0, 9, big.len())),
        big[..10].to_vec(),
        None,
    )
    .await
    .error(404, "ErrorItemNotFound");

    // The draft keeps its id through its changes and has both attachments.
    let draft = get(&sandbox, &format!("v1.0/me/messages/{draft_id}"), &token).await;
    assert_eq!(draft.ok()["hasAttachments"], true);
    assert_eq!(draft.body["isDraft"], true);
    let stored = admin.folder_messages(ADELE, "Drafts");
    assert_eq!(stored.len(), 1);
    let names: Vec<String> = attachments(&stored[0])
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    assert_eq!(names, ["notes.txt", "big.pdf"]);

    // Send: 202, delivered as sendMail delivers, Sent Items keeps Bcc, the draft leaves.
    let sent = call(
        &sandbox,
        Method::POST,
        &format!("v1.0/me/messages/{draft_id}/send"),
        &token,
        &[],
        None,
    )
    .await;
    assert_eq!(sent.status, StatusCode::ACCEPTED, "{}", sent.body);
    assert!(admin.folder_messages(ADELE, "Drafts").is_empty());
    get(&sandbox, &format!("v1.0/me/messages/{draft_id}"), &token)
        .await
        .error(404, "ErrorItemNotFound");
    let alex = admin.folder_messages(demo::SECOND_USER_UPN, "INBOX");
    let megan = admin.folder_messages(demo::MFA_USER_UPN, "INBOX");
    let sent_items = admin.folder_messages(ADELE, "Sent Items");
    assert_eq!((alex.len(), megan.len(), sent_items.len()), (1, 1, 1));
    let received = attachments(&alex[0]);
    assert_eq!(received.len(), 2);
    assert_eq!(
        received[0],
        ("notes.txt".to_owned(), b"Hello World!".to_vec())
    );
    assert_eq!(received[1].0, "big.pdf");
    assert_eq!(
        sha2::Sha256::digest(&received[1].1),
        sha2::Sha256::digest(&big)
    );
    assert!(!has_header(&alex[0], "Bcc"), "recipients do not see Bcc");
    assert!(
        has_header(&sent_items[0], "Bcc"),
        "the sender's copy keeps it"
    );
    assert!(String::from_utf8_lossy(&alex[0]).contains("Content-Transfer-Encoding: base64"));
    let outbox = admin.outbox();
    assert_eq!(outbox.len(), 1);
    assert_eq!(outbox[0].1, [PARTNER]);
}

#[tokio::test]
async fn send_mail_without_save_to_sent_items_leaves_sent_items_empty() {
    let (sandbox, _) = start_mail().await;
    let token = user_token(&sandbox, MAIL_SEND).await;
    let admin = sandbox.sandbox.admin();
    let message = json!({
        "subject": "not kept",
        "body": {"contentType": "Text", "content": "x"},
        "toRecipients": [{"emailAddress": {"address": demo::SECOND_USER_UPN}}],
    });
    for (save, expected) in [(json!(false), 0), (json!("false"), 0), (json!(true), 1)] {
        let answer = call(
            &sandbox,
            Method::POST,
            "v1.0/me/sendMail",
            &token,
            &[],
            Some(json!({"message": message, "saveToSentItems": save})),
        )
        .await;
        assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.body);
        assert_eq!(
            admin.folder_messages(ADELE, "Sent Items").len(),
            expected,
            "{save}"
        );
    }
    assert_eq!(
        admin.folder_messages(demo::SECOND_USER_UPN, "INBOX").len(),
        3
    );
}

#[tokio::test]
async fn drafts_and_uploads_refuse_what_they_must() {
    let (sandbox, clock) = start_mail().await;
    let token = writer_token(&sandbox).await;
    let read_write_only = user_token(&sandbox, MAIL_READ_WRITE).await;
    let read_only = user_token(&sandbox, "https://graph.microsoft.com/Mail.Read").await;

    // Permissions: a draft needs Mail.ReadWrite, sending it Mail.Send.
    call(
        &sandbox,
        Method::POST,
        "v1.0/me/messages",
        &read_only,
        &[],
        Some(draft_json()),
    )
    .await
    .error(403, "ErrorAccessDenied");
    let created = call(
        &sandbox,
        Method::POST,
        "v1.0/me/messages",
        &read_write_only,
        &[],
        Some(json!({"subject": "no one"})),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let draft_id = created.body["id"].as_str().unwrap().to_owned();
    call(
        &sandbox,
        Method::POST,
        &format!("v1.0/me/messages/{draft_id}/send"),
        &read_write_only,
        &[],
        None,
    )
    .await
    .error(403, "ErrorAccessDenied");
    // No recipient.
    call(
        &sandbox,
        Method::POST,
        &format!("v1.0/me/messages/{draft_id}/send"),
        &token,
        &[],
        None,
    )
    .await
    .error(400, "ErrorInvalidRecipients");

    // Upload sessions: the AttachmentItem is checked.
    let create = |body: Value| {
        let sandbox = &sandbox;
        let token = token.clone();
        let path = format!("v1.0/me/messages/{draft_id}/attachments/createUploadSession");
        async move { call(sandbox, Method::POST, &path, &token, &[], Some(body)).await }
    };
    create(json!({})).await.error(400, "ErrorInvalidParameter");
    create(json!({"AttachmentItem": {"attachmentType": "file", "size": 10}}))
        .await
        .error(400, "ErrorInvalidParameter");
    for size in [0_u64, 150 * 1024 * 1024 + 1] {
        create(json!({"AttachmentItem": {"attachmentType": "file", "name": "a", "size": size}}))
            .await
            .error(400, "ErrorAttachmentSizeLimitExceeded");
    }
    create(json!({"AttachmentItem": {"attachmentType": "item", "name": "a", "size": 10}}))
        .await
        .error(400, "Request_UnsupportedQuery");

    // A session expires 15 minutes (sandbox clock) after its last chunk.
    let session =
        create(json!({"AttachmentItem": {"attachmentType": "file", "name": "a.bin", "size": 20}}))
            .await;
    assert_eq!(session.status, StatusCode::CREATED, "{}", session.body);
    let url = session.body["uploadUrl"].as_str().unwrap().to_owned();
    assert_eq!(
        put(&sandbox, &url, Some((0, 9, 20)), vec![1; 10], None)
            .await
            .status,
        StatusCode::OK
    );
    clock.advance(Duration::from_secs(14 * 60));
    assert_eq!(
        put(&sandbox, &url, Some((10, 14, 20)), vec![2; 5], None)
            .await
            .status,
        StatusCode::OK
    );
    clock.advance(Duration::from_secs(15 * 60 + 1));
    put(&sandbox, &url, Some((15, 19, 20)), vec![3; 5], None)
        .await
        .error(404, "ErrorItemNotFound");
    // Only PUT.
    let response = sandbox.http.post(&url).body("x").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);

    // A received message is no draft.
    let token = writer_token(&sandbox).await;
    sandbox
        .sandbox
        .admin()
        .deliver_message(ADELE, b"Subject: received\r\n\r\nx\r\n")
        .unwrap();
    let inbox = get(&sandbox, "v1.0/me/mailFolders/inbox/messages", &token).await;
    let received = inbox.ok()["value"][0]["id"].as_str().unwrap().to_owned();
    for path in ["attachments", "attachments/createUploadSession", "send"] {
        call(
            &sandbox,
            Method::POST,
            &format!("v1.0/me/messages/{received}/{path}"),
            &token,
            &[],
            Some(json!({"@odata.type": "#microsoft.graph.fileAttachment", "name": "a", "contentBytes": "", "AttachmentItem": {"name": "a", "size": 1}})),
        )
        .await
        .error(400, "ErrorInvalidOperation");
    }
}
