//! Graph `sendMail` (`/v1.0/me/sendMail`, `/v1.0/users/{id | upn}/sendMail`): the MIME and JSON forms,
//! delivery as the SMTP service delivers (tenant Inboxes, the outbox, Sent Items), permissions, SendAs,
//! Graph's errors and the injected throttle.

use base64::Engine as _;
use m365mail_sandbox::{demo, tenant::MICROSOFT_GRAPH_APP_ID};
use mail_parser::MimeHeaders as _;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::{
    common::{TestSandbox, run_ok, start},
    graph::{GraphAnswer, daemon_token, user_token},
};

const MAIL_SEND: &str = "https://graph.microsoft.com/Mail.Send";
const PARTNER: &str = "partner@fabrikam.example";

/// A message Adele writes: Alex in To, a partner outside the tenant in Cc, Megan in a folded Bcc.
const MIME_MESSAGE: &str = "From: Adele Vance <adele@contoso.onmicrosoft.com>\r\n\
To: Alex Wilber <alex@contoso.onmicrosoft.com>\r\n\
Cc: partner@fabrikam.example\r\n\
Bcc: \"Megan Bowen\"\r\n <megan@contoso.onmicrosoft.com>\r\n\
Subject: quarterly figures\r\n\
Date: Sat, 26 Apr 2025 18:08:13 +0000\r\n\
Message-ID: <q1-graph@contoso.onmicrosoft.com>\r\n\
MIME-Version: 1.0\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
\r\n\
The figures are attached.\r\n\
Bcc: this line is body, not header\r\n";

/// The message's base64, wrapped at 76 columns as `base64` writes it.
fn wrapped_base64(message: &[u8]) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(message);
    encoded
        .as_bytes()
        .chunks(76)
        .map(|line| String::from_utf8_lossy(line).into_owned())
        .collect::<Vec<_>>()
        .join("\r\n")
}

async fn post(
    sandbox: &TestSandbox,
    path: &str,
    token: Option<&str>,
    content_type: &str,
    body: impl Into<reqwest::Body>,
) -> GraphAnswer {
    let mut request = sandbox
        .http
        .post(sandbox.url(path))
        .header("content-type", content_type)
        .body(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("Graph answers");
    let status = response.status();
    let headers = response.headers().clone();
    let text = response.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    GraphAnswer {
        status,
        headers,
        body,
    }
}

async fn send_mime(sandbox: &TestSandbox, path: &str, token: &str, message: &[u8]) -> GraphAnswer {
    post(
        sandbox,
        path,
        Some(token),
        "text/plain",
        wrapped_base64(message),
    )
    .await
}

async fn send_json(sandbox: &TestSandbox, path: &str, token: &str, body: &Value) -> GraphAnswer {
    post(
        sandbox,
        path,
        Some(token),
        "application/json",
        body.to_string(),
    )
    .await
}

#[track_caller]
fn assert_accepted(answer: &GraphAnswer) {
    assert_eq!(answer.status, StatusCode::ACCEPTED, "body: {}", answer.body);
    assert_eq!(answer.body, Value::String(String::new()), "empty body");
    assert!(answer.header("request-id").is_some());
}

fn folder(sandbox: &TestSandbox, mailbox: &str, folder: &str) -> Vec<Vec<u8>> {
    sandbox.sandbox.admin().folder_messages(mailbox, folder)
}

fn inbox_count(sandbox: &TestSandbox, mailbox: &str) -> usize {
    folder(sandbox, mailbox, "INBOX").len()
}

fn json_message(to: &str) -> Value {
    json!({
        "message": {
            "subject": "hello",
            "body": {"contentType": "Text", "content": "hi"},
            "toRecipients": [{"emailAddress": {"address": to}}],
        }
    })
}

#[tokio::test]
async fn mime_send_is_delivered_byte_for_byte_without_bcc() {
    let sandbox = start().await;
    let token = user_token(&sandbox, MAIL_SEND).await;
    assert_eq!(crate::common::claims(&token)["scp"], "Mail.Send");
    let alex_before = inbox_count(&sandbox, demo::SECOND_USER_UPN);
    let megan_before = inbox_count(&sandbox, demo::MFA_USER_UPN);

    let answer = send_mime(
        &sandbox,
        "v1.0/me/sendMail",
        &token,
        MIME_MESSAGE.as_bytes(),
    )
    .await;
    assert_accepted(&answer);

    let without_bcc = MIME_MESSAGE.replace(
        "Bcc: \"Megan Bowen\"\r\n <megan@contoso.onmicrosoft.com>\r\n",
        "",
    );
    assert!(without_bcc.contains("\r\nBcc: this line is body"));
    let alex = folder(&sandbox, demo::SECOND_USER_UPN, "INBOX");
    assert_eq!(alex.len(), alex_before + 1);
    assert_eq!(
        String::from_utf8_lossy(alex.last().unwrap()),
        without_bcc,
        "Alex's copy: the message as sent, less the Bcc field"
    );
    // Megan, in Bcc only, gets it too, without seeing herself named.
    let megan = folder(&sandbox, demo::MFA_USER_UPN, "INBOX");
    assert_eq!(megan.len(), megan_before + 1);
    assert_eq!(megan.last().unwrap(), without_bcc.as_bytes());
    // The partner outside the tenant: the outbox, from Adele.
    let outbox = sandbox.sandbox.admin().outbox();
    assert_eq!(outbox.len(), 1);
    assert_eq!(outbox[0].0, demo::USER_UPN);
    assert_eq!(outbox[0].1, [PARTNER]);
    assert_eq!(outbox[0].2, without_bcc.as_bytes());
    // Adele's Sent Items keeps the message whole, Bcc included (the MIME form always saves).
    let sent = folder(&sandbox, demo::USER_UPN, "Sent Items");
    assert_eq!(sent, [MIME_MESSAGE.as_bytes().to_vec()]);

    // By UPN (case aside) and by object id, the same mailbox.
    for path in [
        "v1.0/users/ADELE@contoso.onmicrosoft.com/sendmail".to_owned(),
        format!("v1.0/users/{}/sendMail", demo::USER_OBJECT_ID),
    ] {
        assert_accepted(&send_mime(&sandbox, &path, &token, MIME_MESSAGE.as_bytes()).await);
    }
    assert_eq!(folder(&sandbox, demo::USER_UPN, "Sent Items").len(), 3);

    // A message without From, Date and Message-ID gets them, from the mailbox.
    let bare = "To: alex@contoso.onmicrosoft.com\r\nSubject: bare\r\n\r\nx\r\n";
    assert_accepted(&send_mime(&sandbox, "v1.0/me/sendMail", &token, bare.as_bytes()).await);
    let received = folder(&sandbox, demo::SECOND_USER_UPN, "INBOX");
    let received = String::from_utf8_lossy(received.last().unwrap()).into_owned();
    assert!(
        received.starts_with("From: adele@contoso.onmicrosoft.com\r\nDate: "),
        "{received}"
    );
    assert!(received.contains("\r\nMessage-ID: <"), "{received}");
    assert!(received.ends_with(bare), "{received}");
}

#[tokio::test]
async fn json_send_builds_a_mime_message_with_attachment_and_custom_header() {
    let sandbox = start().await;
    // App-only, for Adele's mailbox by object id.
    let token = daemon_token(&sandbox).await;
    let request = json!({
        "message": {
            "subject": "Grüße zum Quartal",
            "body": {"contentType": "HTML", "content": "<p>Hallo <b>Alex</b></p>"},
            "toRecipients": [{"emailAddress": {"address": demo::SECOND_USER_UPN, "name": "Alex Wilber"}}],
            "ccRecipients": [{"emailAddress": {"address": PARTNER}}],
            "bccRecipients": [{"emailAddress": {"address": demo::MFA_USER_UPN}}],
            "replyTo": [{"emailAddress": {"address": "replies@contoso.onmicrosoft.com"}}],
            "internetMessageHeaders": [{"name": "x-custom-id", "value": "order-42"}],
            "attachments": [{
                "@odata.type": "#microsoft.graph.fileAttachment",
                "name": "a.txt",
                "contentType": "text/plain",
                "contentBytes": "SGVsbG8gV29ybGQh",
            }],
        },
        "saveToSentItems": true,
    });
    let answer = send_json(
        &sandbox,
        &format!("v1.0/users/{}/sendMail", demo::USER_OBJECT_ID),
        &token,
        &request,
    )
    .await;
    assert_accepted(&answer);

    let alex = folder(&sandbox, demo::SECOND_USER_UPN, "INBOX");
    let raw = alex.last().unwrap();
    let parsed = mail_parser::MessageParser::default().parse(raw).unwrap();
    assert_eq!(parsed.subject(), Some("Grüße zum Quartal"));
    let from = parsed.from().unwrap().first().unwrap();
    assert_eq!(from.address(), Some(demo::USER_UPN));
    assert_eq!(from.name(), Some(demo::USER_DISPLAY_NAME));
    assert_eq!(
        parsed.to().unwrap().first().unwrap().address(),
        Some(demo::SECOND_USER_UPN)
    );
    assert_eq!(
        parsed.cc().unwrap().first().unwrap().address(),
        Some(PARTNER)
    );
    assert!(parsed.bcc().is_none(), "recipients do not see Bcc");
    assert_eq!(
        parsed.reply_to().unwrap().first().unwrap().address(),
        Some("replies@contoso.onmicrosoft.com")
    );
    assert_eq!(
        parsed.header_raw("x-custom-id").map(str::trim),
        Some("order-42")
    );
    assert!(
        parsed
            .message_id()
            .is_some_and(|id| id.ends_with("@contoso.onmicrosoft.com"))
    );
    assert!(parsed.date().is_some());
    assert!(parsed.header_raw("MIME-Version").is_some());
    assert!(
        parsed
            .body_html(0)
            .is_some_and(|html| html.contains("<b>Alex</b>"))
    );
    let attachment = parsed.attachments().next().expect("an attachment");
    assert_eq!(attachment.attachment_name(), Some("a.txt"));
    assert_eq!(attachment.contents(), b"Hello World!");
    assert_eq!(attachment.content_type().map(|ct| ct.ctype()), Some("text"));

    // Megan (Bcc) has it, the partner's copy is in the outbox, Adele's Sent Items keeps the Bcc.
    let megan = folder(&sandbox, demo::MFA_USER_UPN, "INBOX");
    assert_eq!(megan.last().unwrap(), raw);
    let outbox = sandbox.sandbox.admin().outbox();
    assert_eq!(outbox.len(), 1);
    assert_eq!(outbox[0].1, [PARTNER]);
    let sent = folder(&sandbox, demo::USER_UPN, "Sent Items");
    assert_eq!(sent.len(), 1);
    let sent = mail_parser::MessageParser::default()
        .parse(&sent[0])
        .unwrap();
    assert_eq!(
        sent.bcc().unwrap().first().unwrap().address(),
        Some(demo::MFA_USER_UPN)
    );

    // An inline attachment: Content-ID and inline disposition.
    let inline = json!({
        "message": {
            "subject": "logo",
            "body": {"contentType": "html", "content": "<img src=\"cid:logo1\">"},
            "toRecipients": [{"emailAddress": {"address": demo::SECOND_USER_UPN}}],
            "attachments": [{
                "@odata.type": "#microsoft.graph.fileAttachment",
                "name": "logo.png", "contentType": "image/png",
                "contentBytes": "iVBORw0KGgo=", "isInline": true, "contentId": "logo1",
            }],
        }
    });
    assert_accepted(
        &send_json(
            &sandbox,
            "v1.0/users/adele@contoso.onmicrosoft.com/sendMail",
            &token,
            &inline,
        )
        .await,
    );
    let alex = folder(&sandbox, demo::SECOND_USER_UPN, "INBOX");
    let text = String::from_utf8_lossy(alex.last().unwrap()).into_owned();
    assert!(text.contains("Content-ID: <logo1>"), "{text}");
    assert!(text.contains("Content-Disposition: inline"), "{text}");
}

#[tokio::test]
async fn save_to_sent_items_false_keeps_no_copy() {
    let sandbox = start().await;
    let token = user_token(&sandbox, MAIL_SEND).await;
    let alex_before = inbox_count(&sandbox, demo::SECOND_USER_UPN);
    // The boolean, and the string Microsoft's doc example sends.
    for save in [json!(false), json!("false"), json!("False")] {
        let mut request = json_message(demo::SECOND_USER_UPN);
        request["saveToSentItems"] = save;
        assert_accepted(&send_json(&sandbox, "v1.0/me/sendMail", &token, &request).await);
    }
    assert!(folder(&sandbox, demo::USER_UPN, "Sent Items").is_empty());
    assert_eq!(
        inbox_count(&sandbox, demo::SECOND_USER_UPN),
        alex_before + 3
    );

    // Default (absent) and "true" save.
    let mut request = json_message(demo::SECOND_USER_UPN);
    assert_accepted(&send_json(&sandbox, "v1.0/me/sendMail", &token, &request).await);
    request["saveToSentItems"] = json!("true");
    assert_accepted(&send_json(&sandbox, "v1.0/me/sendMail", &token, &request).await);
    assert_eq!(folder(&sandbox, demo::USER_UPN, "Sent Items").len(), 2);

    request["saveToSentItems"] = json!("maybe");
    send_json(&sandbox, "v1.0/me/sendMail", &token, &request)
        .await
        .error(400, "RequestBodyRead");
}

#[tokio::test]
async fn refusals_have_graphs_json_shape() {
    let sandbox = start().await;
    let token = user_token(&sandbox, MAIL_SEND).await;
    let me = "v1.0/me/sendMail";

    let bad_base64 = post(&sandbox, me, Some(&token), "text/plain", "not base64!").await;
    assert_eq!(
        bad_base64.error(400, "ErrorMimeContentInvalidBase64String"),
        "Invalid base64 string for MIME content."
    );
    let not_a_message = send_mime(&sandbox, me, &token, b"just some words, no header").await;
    not_a_message.error(400, "ErrorMimeContentInvalidHeader");
    let no_recipient_mime = send_mime(
        &sandbox,
        me,
        &token,
        b"From: adele@contoso.onmicrosoft.com\r\nSubject: x\r\n\r\nx\r\n",
    )
    .await;
    assert_eq!(
        no_recipient_mime.error(400, "ErrorInvalidRecipients"),
        "At least one recipient is required, but none were found."
    );
    let no_recipient_json = send_json(
        &sandbox,
        me,
        &token,
        &json!({"message": {"subject": "x", "body": {"contentType": "Text", "content": "x"}}}),
    )
    .await;
    assert_eq!(
        no_recipient_json.error(400, "ErrorInvalidRecipients"),
        "At least one recipient is required, but none were found."
    );
    let mut bad_address = json_message("not-an-address");
    send_json(&sandbox, me, &token, &bad_address)
        .await
        .error(400, "ErrorInvalidRecipients");
    bad_address["message"]["internetMessageHeaders"] = json!([{"name": "Reply-To", "value": "x"}]);
    bad_address["message"]["toRecipients"] =
        json!([{"emailAddress": {"address": demo::SECOND_USER_UPN}}]);
    assert_eq!(
        send_json(&sandbox, me, &token, &bad_address)
            .await
            .error(400, "InvalidInternetMessageHeader"),
        "The internet message header name 'Reply-To' should start with 'x-' or 'X-'."
    );
    let mut bad_type = json_message(demo::SECOND_USER_UPN);
    bad_type["message"]["body"]["contentType"] = json!("Markdown");
    send_json(&sandbox, me, &token, &bad_type)
        .await
        .error(400, "RequestBodyRead");
    let mut item_attachment = json_message(demo::SECOND_USER_UPN);
    item_attachment["message"]["attachments"] =
        json!([{"@odata.type": "#microsoft.graph.itemAttachment", "name": "x"}]);
    send_json(&sandbox, me, &token, &item_attachment)
        .await
        .error(400, "BadRequest");
    post(&sandbox, me, Some(&token), "application/json", "{not json")
        .await
        .error(400, "BadRequest");
    post(&sandbox, me, Some(&token), "application/xml", "<x/>")
        .await
        .error(400, "BadRequest");
    send_json(&sandbox, me, &token, &json!({"saveToSentItems": true}))
        .await
        .error(400, "ErrorInvalidParameter");

    // Unknown user; a user without a mailbox.
    let ghost = send_json(
        &sandbox,
        "v1.0/users/ghost@contoso.onmicrosoft.com/sendMail",
        &daemon_token(&sandbox).await,
        &json_message(demo::SECOND_USER_UPN),
    )
    .await;
    assert_eq!(
        ghost.error(404, "ErrorInvalidUser"),
        "The requested user 'ghost@contoso.onmicrosoft.com' is invalid."
    );
    send_json(
        &sandbox,
        &format!("v1.0/users/{}/sendMail", demo::ADMIN_UPN),
        &daemon_token(&sandbox).await,
        &json_message(demo::SECOND_USER_UPN),
    )
    .await
    .error(404, "MailboxNotEnabledForRESTAPI");

    // No Mail.Send: the mail routes' 403.
    let user_read = user_token(&sandbox, "https://graph.microsoft.com/User.Read").await;
    let denied = send_json(
        &sandbox,
        me,
        &user_read,
        &json_message(demo::SECOND_USER_UPN),
    )
    .await;
    assert_eq!(
        denied.error(403, "ErrorAccessDenied"),
        "Access is denied. Check credentials and try again."
    );
    assert!(denied.header("www-authenticate").is_none());
    // Another user's mailbox, no rights to it.
    send_json(
        &sandbox,
        &format!("v1.0/users/{}/sendMail", demo::SECOND_USER_UPN),
        &token,
        &json_message(demo::MFA_USER_UPN),
    )
    .await
    .error(403, "ErrorAccessDenied");
    // No token; an Exchange token.
    post(
        &sandbox,
        me,
        None,
        "text/plain",
        wrapped_base64(MIME_MESSAGE.as_bytes()),
    )
    .await
    .error(401, "InvalidAuthenticationToken");
    let exchange = sandbox.app_token(demo::EXCHANGE_APP_SCOPE).await;
    send_json(
        &sandbox,
        &format!("v1.0/users/{}/sendMail", demo::USER_UPN),
        &exchange,
        &json_message(demo::SECOND_USER_UPN),
    )
    .await
    .error(401, "InvalidAuthenticationToken");
    // /me with an app-only token.
    send_json(
        &sandbox,
        me,
        &daemon_token(&sandbox).await,
        &json_message(demo::SECOND_USER_UPN),
    )
    .await
    .error(400, "BadRequest");
    // GET on sendMail; an unknown action.
    let get = sandbox
        .http
        .get(sandbox.url(me))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), StatusCode::METHOD_NOT_ALLOWED);
    let unknown = send_json(&sandbox, "v1.0/me/sendMessage", &token, &json!({})).await;
    assert_eq!(
        unknown.error(400, "BadRequest"),
        "Resource not found for the segment 'sendMessage'."
    );

    // Over Graph's 4 MiB: 413 in Graph's shape.
    let huge = "A".repeat(4 * 1024 * 1024 + 4);
    let too_large = post(&sandbox, me, Some(&token), "text/plain", huge).await;
    too_large.error(413, "ErrorRequestEntityTooLarge");

    // Nothing of the above was delivered.
    assert!(sandbox.sandbox.admin().outbox().is_empty());
    assert!(folder(&sandbox, demo::USER_UPN, "Sent Items").is_empty());
}

#[tokio::test]
async fn send_as_follows_the_smtp_rules() {
    let sandbox = start().await;
    let app = daemon_token(&sandbox).await;
    let from = |address: &str| {
        let mut request = json_message(demo::SECOND_USER_UPN);
        request["message"]["from"] = json!({"emailAddress": {"address": address}});
        request
    };
    let adele_path = format!("v1.0/users/{}/sendMail", demo::USER_UPN);
    // The daemon's Exchange service principal has SendAs on the shared mailbox, not on Megan.
    assert_accepted(&send_json(&sandbox, &adele_path, &app, &from(demo::SHARED_MAILBOX)).await);
    let denied = send_json(&sandbox, &adele_path, &app, &from(demo::MFA_USER_UPN)).await;
    assert_eq!(
        denied.error(403, "ErrorSendAsDenied"),
        "The user account which was used to submit this request does not have the right to send mail on behalf of the specified sending account., Cannot submit message."
    );
    // Any mailbox of the tenant for an app with Mail.Send, as itself.
    let alex_path = format!("v1.0/users/{}/sendMail", demo::SECOND_USER_OBJECT_ID);
    assert_accepted(&send_json(&sandbox, &alex_path, &app, &json_message(demo::USER_UPN)).await);
    assert_eq!(
        folder(&sandbox, demo::SECOND_USER_UPN, "Sent Items").len(),
        1
    );

    // A user: not as the shared mailbox from their own, but from the shared mailbox they have FullAccess
    // to (its Sent Items keeps the copy); the MIME form's From is checked alike.
    let user = user_token(&sandbox, MAIL_SEND).await;
    send_json(
        &sandbox,
        "v1.0/me/sendMail",
        &user,
        &from(demo::SHARED_MAILBOX),
    )
    .await
    .error(403, "ErrorSendAsDenied");
    let shared_path = format!("v1.0/users/{}/sendMail", demo::SHARED_MAILBOX);
    assert_accepted(
        &send_json(
            &sandbox,
            &shared_path,
            &user,
            &json_message(demo::SECOND_USER_UPN),
        )
        .await,
    );
    assert_eq!(
        folder(&sandbox, demo::SHARED_MAILBOX, "Sent Items").len(),
        1
    );
    let as_alex = MIME_MESSAGE.replace(
        "From: Adele Vance <adele@contoso.onmicrosoft.com>",
        "From: alex@contoso.onmicrosoft.com",
    );
    send_mime(&sandbox, "v1.0/me/sendMail", &user, as_alex.as_bytes())
        .await
        .error(403, "ErrorSendAsDenied");
}

#[tokio::test]
async fn an_injected_throttle_answers_send_mail_too() {
    let sandbox = start().await;
    let token = user_token(&sandbox, MAIL_SEND).await;
    let alex_before = inbox_count(&sandbox, demo::SECOND_USER_UPN);
    sandbox
        .admin_post(
            "faults/graph",
            json!({"fault": "throttled", "retry_after_seconds": 3, "count": 1}),
        )
        .await
        .assert_ok();
    let throttled = send_mime(
        &sandbox,
        "v1.0/me/sendMail",
        &token,
        MIME_MESSAGE.as_bytes(),
    )
    .await;
    assert_eq!(
        throttled.error(429, "ApplicationThrottled"),
        "Application is over its MailboxConcurrency limit."
    );
    assert_eq!(throttled.header("retry-after"), Some("3"));
    assert_eq!(
        inbox_count(&sandbox, demo::SECOND_USER_UPN),
        alex_before,
        "not delivered"
    );
    assert_accepted(
        &send_mime(
            &sandbox,
            "v1.0/me/sendMail",
            &token,
            MIME_MESSAGE.as_bytes(),
        )
        .await,
    );
    assert_eq!(
        inbox_count(&sandbox, demo::SECOND_USER_UPN),
        alex_before + 1
    );
}

#[tokio::test]
async fn the_demo_apps_hold_graph_mail_send() {
    let sandbox = start().await;
    let claims = crate::common::claims(&daemon_token(&sandbox).await);
    assert!(
        claims["roles"]
            .as_array()
            .unwrap()
            .contains(&json!("Mail.Send"))
    );
    // What the CLI asks for with -p sandbox-user.
    let answer = sandbox
        .user_ropc(demo::PUBLIC_APP_ID, &format!("{MAIL_SEND} offline_access"))
        .await;
    let body = answer.assert_ok();
    assert_eq!(body["scope"], "Mail.Send offline_access");
    assert!(body["refresh_token"].is_string());
    // Revoking the consent takes sendMail away.
    sandbox
        .admin_post(
            &format!("apps/{}/consent/revoke", demo::PUBLIC_APP_ID),
            json!({"resource": MICROSOFT_GRAPH_APP_ID}),
        )
        .await
        .assert_ok();
    let refused = sandbox.user_ropc(demo::PUBLIC_APP_ID, MAIL_SEND).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
}

/// curl, unchanged: `--data-binary` of a base64 MIME message with `Content-Type: text/plain` → 202.
#[tokio::test]
#[ignore = "needs curl (run by scripts/test.sh)"]
async fn curl_posts_base64_mime() {
    let sandbox = start().await;
    let token = user_token(&sandbox, MAIL_SEND).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    sandbox.sandbox.write_ca(&ca).unwrap();
    let body = dir.path().join("message.b64");
    std::fs::write(&body, wrapped_base64(MIME_MESSAGE.as_bytes())).unwrap();
    let mut command = std::process::Command::new("curl");
    command
        .args([
            "-sS",
            "--max-time",
            "10",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--cacert",
        ])
        .arg(&ca)
        .args([
            "-H",
            &format!("Authorization: Bearer {token}"),
            "-H",
            "Content-Type: text/plain",
            "--data-binary",
        ])
        .arg(format!("@{}", body.display()))
        .arg(sandbox.url("v1.0/me/sendMail"));
    assert_eq!(run_ok(command).await, "202");
    let alex = folder(&sandbox, demo::SECOND_USER_UPN, "INBOX");
    assert!(String::from_utf8_lossy(alex.last().unwrap()).contains("Subject: quarterly figures"));
}
