//! Graph mail reading and changing (`mailFolders`, `messages`, `$value`, `delta`, PATCH, move, copy,
//! DELETE) over the same store IMAP uses: folders and paging, message JSON, ids across moves with and
//! without `Prefer: IdType="ImmutableId"`, delta rounds, the 410 for foreign tokens, permissions.

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use m365mail_sandbox::{FakeClock, GraphFault, MailSeed, SandboxConfig, demo};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::Digest as _;

use crate::{
    common::{TestSandbox, start_with},
    graph::{GraphAnswer, daemon_token, user_token},
    imap,
};

pub(crate) const MAIL_READ_WRITE: &str = "https://graph.microsoft.com/Mail.ReadWrite";
const MAIL_READ: &str = "https://graph.microsoft.com/Mail.Read";
pub(crate) const ADELE: &str = demo::USER_UPN;

/// A sandbox with empty mailboxes, IMAP over TLS and a fake clock starting now.
pub(crate) async fn start_mail() -> (TestSandbox, Arc<FakeClock>) {
    let clock = Arc::new(FakeClock::new(m365mail_sandbox::Clock::now(
        &m365mail_sandbox::SystemClock,
    )));
    let sandbox = start_with(SandboxConfig {
        imaps: vec!["127.0.0.1:0".parse().unwrap()],
        mail: MailSeed::Empty,
        clock: clock.clone(),
        ..SandboxConfig::default()
    })
    .await;
    (sandbox, clock)
}

/// A Graph request: `path` relative to the sandbox (or an absolute link), optional JSON body and headers.
pub(crate) async fn call(
    sandbox: &TestSandbox,
    method: Method,
    path: &str,
    token: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> GraphAnswer {
    let url = if path.starts_with("https://") {
        path.to_owned()
    } else {
        sandbox.url(path)
    };
    let mut request = sandbox.http.request(method, url).bearer_auth(token);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("Graph answers");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.bytes().await.expect("body");
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    GraphAnswer {
        status,
        headers,
        body,
    }
}

pub(crate) async fn get(sandbox: &TestSandbox, path: &str, token: &str) -> GraphAnswer {
    call(sandbox, Method::GET, path, token, &[], None).await
}

/// A message with every header the JSON shows.
fn message(subject: &str) -> String {
    format!(
        "From: Alex Wilber <alex@contoso.onmicrosoft.com>\r\n\
         To: Adele Vance <adele@contoso.onmicrosoft.com>, megan@contoso.onmicrosoft.com\r\n\
         Cc: \"Partner\" <partner@fabrikam.example>\r\n\
         Reply-To: replies@contoso.onmicrosoft.com\r\n\
         Subject: {subject}\r\n\
         Date: Mon, 07 Dec 2026 10:00:00 +0100\r\n\
         Message-ID: <{subject}@contoso.onmicrosoft.com>\r\n\
         Importance: High\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         \r\n\
         Hello   Adele,\r\n\r\nthe {subject} figures.\r\n"
    )
}

/// A message with an HTML body and a PDF attachment.
const WITH_ATTACHMENT: &str = "From: alex@contoso.onmicrosoft.com\r\n\
To: adele@contoso.onmicrosoft.com\r\n\
Subject: contract\r\n\
Message-ID: <contract@contoso.onmicrosoft.com>\r\n\
References: <thread-root@contoso.onmicrosoft.com> <second@contoso.onmicrosoft.com>\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"b1\"\r\n\
\r\n\
--b1\r\n\
Content-Type: text/html; charset=utf-8\r\n\
\r\n\
<p>The <b>contract</b>.</p>\r\n\
--b1\r\n\
Content-Type: application/pdf; name=\"c.pdf\"\r\n\
Content-Disposition: attachment; filename=\"c.pdf\"\r\n\
Content-Transfer-Encoding: base64\r\n\
\r\n\
JVBERi0xLjcK\r\n\
--b1--\r\n";

fn deliver(sandbox: &TestSandbox, folder: &str, bytes: &str) {
    sandbox
        .sandbox
        .admin()
        .deliver_to_folder(ADELE, folder, bytes.as_bytes())
        .unwrap();
}

fn values(page: &Value) -> &Vec<Value> {
    page["value"].as_array().expect("value")
}

fn subjects(page: &Value) -> Vec<String> {
    values(page)
        .iter()
        .map(|m| m["subject"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Follows `@odata.nextLink` to the end: every page.
async fn pages(sandbox: &TestSandbox, first: &str, token: &str) -> Vec<Value> {
    let mut pages = Vec::new();
    let mut next = Some(first.to_owned());
    while let Some(url) = next {
        assert!(pages.len() < 50, "paging does not end");
        let page = get(sandbox, &url, token).await.ok().clone();
        next = page["@odata.nextLink"].as_str().map(str::to_owned);
        pages.push(page);
    }
    pages
}

/// Signs in over IMAP as Adele.
async fn imap_session(sandbox: &TestSandbox) -> imap::Tls {
    let token = user_token(sandbox, demo::IMAP_SCOPE).await;
    let (mut stream, _) = imap::connect(sandbox).await;
    let answer = imap::command(
        &mut stream,
        "a1",
        &format!("AUTHENTICATE XOAUTH2 {}", imap::xoauth2(ADELE, &token)),
    )
    .await;
    assert!(answer.last().unwrap().starts_with("a1 OK"), "{answer:?}");
    stream
}

#[tokio::test]
async fn folders_page_nest_and_answer_to_well_known_names() {
    let (sandbox, _) = start_mail().await;
    let token = user_token(&sandbox, MAIL_READ).await;
    let mut imap = imap_session(&sandbox).await;
    for (tag, name) in [
        ("c1", "Projects"),
        ("c2", "Projects/2026"),
        ("c3", "Projects/2026/Q1"),
    ] {
        let answer = imap::command(&mut imap, tag, &format!("CREATE \"{name}\"")).await;
        assert!(answer.last().unwrap().contains("OK"), "{answer:?}");
    }
    deliver(&sandbox, "INBOX", &message("one"));
    deliver(&sandbox, "INBOX", &message("two"));
    imap::command(&mut imap, "s1", "SELECT INBOX").await;
    imap::command(&mut imap, "s2", "UID STORE 1 +FLAGS (\\Seen)").await;

    let all = get(&sandbox, "v1.0/me/mailFolders", &token).await;
    let top_level = values(all.ok()).clone();
    let names: Vec<&str> = top_level
        .iter()
        .map(|f| f["displayName"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "Inbox",
            "Sent Items",
            "Drafts",
            "Deleted Items",
            "Archive",
            "Junk Email",
            "Projects"
        ]
    );
    assert!(all.body.get("@odata.nextLink").is_none());
    let root = get(&sandbox, "v1.0/me/mailFolders/msgfolderroot", &token).await;
    let root_id = root.ok()["id"].as_str().unwrap().to_owned();
    assert_eq!(root.body["childFolderCount"], 7);
    let inbox = &top_level[0];
    assert_eq!(inbox["parentFolderId"], root_id.as_str());
    assert_eq!(inbox["totalItemCount"], 2);
    assert_eq!(inbox["unreadItemCount"], 1, "one has IMAP's \\Seen");
    assert_eq!(inbox["isHidden"], false);
    let keys: BTreeSet<&str> = inbox
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    for key in [
        "id",
        "displayName",
        "parentFolderId",
        "childFolderCount",
        "unreadItemCount",
        "totalItemCount",
        "isHidden",
    ] {
        assert!(keys.contains(key), "{key}: {inbox}");
    }

    // Well-known names in any case, and the id, name the same folder.
    for reference in ["inbox", "Inbox", "INBOX", inbox["id"].as_str().unwrap()] {
        let one = get(
            &sandbox,
            &format!("v1.0/me/mailFolders/{reference}"),
            &token,
        )
        .await;
        assert_eq!(one.ok()["id"], inbox["id"], "{reference}");
    }
    for (name, display) in [
        ("sentitems", "Sent Items"),
        ("drafts", "Drafts"),
        ("deleteditems", "Deleted Items"),
        ("archive", "Archive"),
        ("JunkEmail", "Junk Email"),
    ] {
        let one = get(&sandbox, &format!("v1.0/me/mailFolders/{name}"), &token).await;
        assert_eq!(one.ok()["displayName"], display);
    }

    // $top pages with nextLink, every folder once.
    let paged = pages(&sandbox, "v1.0/me/mailFolders?$top=3", &token).await;
    assert_eq!(paged.len(), 3);
    let paged_ids: Vec<&Value> = paged
        .iter()
        .flat_map(|p| values(p).iter())
        .map(|f| &f["id"])
        .collect();
    let listed_ids: Vec<&Value> = top_level.iter().map(|f| &f["id"]).collect();
    assert_eq!(paged_ids, listed_ids);
    let next = paged[0]["@odata.nextLink"].as_str().unwrap();
    assert!(
        next.starts_with(&format!(
            "{}v1.0/me/mailFolders?",
            sandbox.sandbox.base_url()
        )),
        "{next}"
    );

    // Nesting: Projects/2026 is a child of Projects, shown by its last name.
    let projects = top_level
        .iter()
        .find(|f| f["displayName"] == "Projects")
        .unwrap();
    assert_eq!(projects["childFolderCount"], 1);
    let children = get(
        &sandbox,
        &format!(
            "v1.0/me/mailFolders/{}/childFolders",
            projects["id"].as_str().unwrap()
        ),
        &token,
    )
    .await;
    let children = values(children.ok()).clone();
    assert_eq!(children.len(), 1);
    assert_eq!(children[0]["displayName"], "2026");
    assert_eq!(children[0]["parentFolderId"], projects["id"]);
    assert_eq!(children[0]["childFolderCount"], 1);
    let root_children = get(
        &sandbox,
        "v1.0/me/mailFolders/msgfolderroot/childFolders",
        &token,
    )
    .await;
    assert_eq!(values(root_children.ok()).len(), 7);

    // $select keeps id and the named properties.
    let selected = get(
        &sandbox,
        "v1.0/me/mailFolders/inbox?$select=displayName",
        &token,
    )
    .await;
    let keys: BTreeSet<&str> = selected
        .ok()
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        BTreeSet::from(["@odata.context", "id", "displayName"])
    );

    // A malformed id and a well-formed one of no folder.
    get(&sandbox, "v1.0/me/mailFolders/outbox", &token)
        .await
        .error(400, "ErrorInvalidIdMalformed");
    get(&sandbox, "v1.0/me/mailFolders/AAEuAAAAAAAAJw8=", &token)
        .await
        .error(404, "ErrorItemNotFound");
}

#[tokio::test]
async fn messages_list_filter_order_select_and_page() {
    let (sandbox, clock) = start_mail().await;
    let start = sandbox_now(&clock);
    for index in 0..5 {
        deliver(&sandbox, "INBOX", &message(&format!("m{index}")));
        clock.advance(Duration::from_secs(3600));
    }
    // After the clock moved: a token of now.
    let token = user_token(&sandbox, MAIL_READ).await;
    deliver(&sandbox, "Archive", WITH_ATTACHMENT);
    let mut imap = imap_session(&sandbox).await;
    imap::command(&mut imap, "s1", "SELECT INBOX").await;
    imap::command(&mut imap, "s2", "UID STORE 1:2 +FLAGS (\\Seen)").await;

    // The whole mailbox, newest first; a folder's messages.
    let all = get(&sandbox, "v1.0/me/messages", &token).await;
    assert_eq!(
        subjects(all.ok()),
        ["contract", "m4", "m3", "m2", "m1", "m0"]
    );
    let inbox = get(
        &sandbox,
        "v1.0/me/mailFolders/inbox/messages?$orderby=receivedDateTime asc",
        &token,
    )
    .await;
    assert_eq!(subjects(inbox.ok()), ["m0", "m1", "m2", "m3", "m4"]);

    // Filters.
    let unread = get(&sandbox, "v1.0/me/messages?$filter=isRead eq false", &token).await;
    assert_eq!(subjects(unread.ok()), ["contract", "m4", "m3", "m2"]);
    let with_attachments = get(
        &sandbox,
        "v1.0/me/messages?$filter=hasAttachments eq true",
        &token,
    )
    .await;
    assert_eq!(subjects(with_attachments.ok()), ["contract"]);
    let since = chrono::DateTime::from_timestamp(start + 2 * 3600, 0)
        .unwrap()
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let recent = get(
        &sandbox,
        &format!("v1.0/me/mailFolders/inbox/messages?$filter=receivedDateTime ge {since} and isRead eq false"),
        &token,
    )
    .await;
    assert_eq!(subjects(recent.ok()), ["m4", "m3", "m2"]);
    let before = get(
        &sandbox,
        &format!("v1.0/me/mailFolders/inbox/messages?$filter=receivedDateTime lt {since}"),
        &token,
    )
    .await;
    assert_eq!(subjects(before.ok()), ["m1", "m0"]);

    // Paging: $top with nextLink ($skip advanced), every message once; $skip by hand.
    let paged = pages(&sandbox, "v1.0/me/messages?$top=2&$select=subject", &token).await;
    assert_eq!(paged.len(), 3);
    let seen: Vec<String> = paged.iter().flat_map(subjects).collect();
    assert_eq!(seen, ["contract", "m4", "m3", "m2", "m1", "m0"]);
    let next = paged[0]["@odata.nextLink"].as_str().unwrap();
    assert!(
        next.contains("%24skip=2") || next.contains("$skip=2"),
        "{next}"
    );
    let skipped = get(&sandbox, "v1.0/me/messages?$skip=4", &token).await;
    assert_eq!(subjects(skipped.ok()), ["m1", "m0"]);

    // $select: the named properties plus id and @odata.etag.
    for message in values(&paged[0]) {
        let keys: BTreeSet<&str> = message
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys, BTreeSet::from(["@odata.etag", "id", "subject"]));
    }

    // The default page is 10; $top up to 1000.
    for index in 0..8 {
        deliver(&sandbox, "Junk Email", &message(&format!("junk{index}")));
    }
    let first = get(&sandbox, "v1.0/me/messages", &token).await;
    assert_eq!(values(first.ok()).len(), 10);
    assert!(first.body["@odata.nextLink"].is_string());
    let big = get(&sandbox, "v1.0/me/messages?$top=1000", &token).await;
    assert_eq!(values(big.ok()).len(), 14);
    assert!(big.body.get("@odata.nextLink").is_none());
    get(&sandbox, "v1.0/me/messages?$top=1001", &token)
        .await
        .error(400, "Request_BadRequest");

    // What the sandbox does not model is refused, naming itself.
    for query in [
        "$filter=subject eq 'x'",
        "$filter=isRead eq true or isRead eq false",
        "$orderby=subject",
        "$search=\"contract\"",
        "$expand=attachments",
        "$select=webLink",
    ] {
        let refused = get(&sandbox, &format!("v1.0/me/messages?{query}"), &token).await;
        let text = refused.error(400, "Request_UnsupportedQuery");
        assert!(text.contains("sandbox"), "{query}: {text}");
    }
    get(&sandbox, "v1.0/me/messages?$select=nope", &token)
        .await
        .error(400, "RequestBroker--ParseUri");
}

fn sandbox_now(clock: &FakeClock) -> i64 {
    use m365mail_sandbox::Clock as _;
    i64::try_from(clock.unix_seconds()).unwrap()
}

#[tokio::test]
async fn a_message_has_graphs_shape_and_value_is_the_stored_mime() {
    let (sandbox, clock) = start_mail().await;
    let token = user_token(&sandbox, MAIL_READ).await;
    deliver(&sandbox, "INBOX", &message("shape"));
    deliver(&sandbox, "INBOX", WITH_ATTACHMENT);
    let received = chrono::DateTime::from_timestamp(sandbox_now(&clock), 0)
        .unwrap()
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();

    let list = get(
        &sandbox,
        "v1.0/me/mailFolders/inbox/messages?$orderby=receivedDateTime asc",
        &token,
    )
    .await;
    let listed = values(list.ok()).clone();
    let plain = &listed[0];
    let inbox = get(&sandbox, "v1.0/me/mailFolders/inbox", &token).await;
    let inbox_id = inbox.ok()["id"].clone();
    assert_eq!(plain["subject"], "shape");
    assert_eq!(plain["receivedDateTime"], received.as_str());
    assert_eq!(plain["createdDateTime"], received.as_str());
    assert_eq!(
        plain["sentDateTime"], "2026-12-07T09:00:00Z",
        "the Date header, in UTC"
    );
    assert_eq!(
        plain["internetMessageId"],
        "<shape@contoso.onmicrosoft.com>"
    );
    assert_eq!(plain["importance"], "high");
    assert_eq!(plain["hasAttachments"], false);
    assert_eq!(plain["isRead"], false);
    assert_eq!(plain["isDraft"], false);
    assert_eq!(plain["parentFolderId"], inbox_id);
    assert_eq!(plain["flag"], json!({"flagStatus": "notFlagged"}));
    assert_eq!(plain["bodyPreview"], "Hello Adele, the shape figures.");
    assert_eq!(
        plain["body"],
        json!({"contentType": "text", "content": "Hello   Adele,\r\n\r\nthe shape figures.\r\n"})
    );
    assert_eq!(
        plain["from"],
        json!({"emailAddress": {"name": "Alex Wilber", "address": "alex@contoso.onmicrosoft.com"}})
    );
    assert_eq!(plain["sender"], plain["from"]);
    assert_eq!(
        plain["toRecipients"],
        json!([
            {"emailAddress": {"name": "Adele Vance", "address": "adele@contoso.onmicrosoft.com"}},
            {"emailAddress": {"name": "megan@contoso.onmicrosoft.com", "address": "megan@contoso.onmicrosoft.com"}}
        ])
    );
    assert_eq!(
        plain["ccRecipients"],
        json!([{"emailAddress": {"name": "Partner", "address": "partner@fabrikam.example"}}])
    );
    assert_eq!(plain["bccRecipients"], json!([]));
    assert_eq!(
        plain["replyTo"][0]["emailAddress"]["address"],
        "replies@contoso.onmicrosoft.com"
    );
    let etag = plain["@odata.etag"].as_str().unwrap();
    assert!(etag.starts_with("W/\"") && etag.ends_with('"'), "{etag}");
    let id = plain["id"].as_str().unwrap();
    assert!(
        id.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_=".contains(&b)),
        "URL-safe: {id}"
    );

    let html = &listed[1];
    assert_eq!(html["hasAttachments"], true);
    assert_eq!(html["body"]["contentType"], "html");
    assert!(
        html["body"]["content"]
            .as_str()
            .unwrap()
            .contains("<b>contract</b>")
    );
    assert_eq!(html["bodyPreview"], "The contract.");
    assert_eq!(html["importance"], "normal");
    assert_ne!(html["conversationId"], plain["conversationId"]);

    // One message by id, also under its folder; internetMessageHeaders when selected.
    let encoded = id.replace('=', "%3D");
    let one = get(&sandbox, &format!("v1.0/me/messages/{encoded}"), &token).await;
    assert_eq!(one.ok()["id"], id);
    assert_eq!(one.body["subject"], "shape");
    let under_folder = get(
        &sandbox,
        &format!("v1.0/me/mailFolders/inbox/messages/{id}?$select=internetMessageHeaders"),
        &token,
    )
    .await;
    let headers = under_folder.ok()["internetMessageHeaders"]
        .as_array()
        .unwrap();
    assert!(
        headers.contains(&json!({"name": "Importance", "value": "High"})),
        "{headers:?}"
    );
    get(
        &sandbox,
        &format!("v1.0/me/mailFolders/archive/messages/{id}"),
        &token,
    )
    .await
    .error(404, "ErrorItemNotFound");

    // $value: the bytes IMAP's BODY[] gives, as the store holds them.
    let stored = sandbox.sandbox.admin().folder_messages(ADELE, "INBOX");
    for (message, stored) in listed.iter().zip(&stored) {
        let id = message["id"].as_str().unwrap();
        for path in [
            format!("v1.0/me/messages/{id}/$value"),
            format!(
                "v1.0/me/mailFolders/inbox/messages/{}/%24value",
                id.replace('=', "%3D")
            ),
        ] {
            let response = sandbox
                .http
                .get(sandbox.url(&path))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::OK, "{path}");
            assert!(
                response.headers()["content-type"]
                    .to_str()
                    .unwrap()
                    .starts_with("text/plain")
            );
            let bytes = response.bytes().await.unwrap();
            assert_eq!(
                sha2::Sha256::digest(&bytes),
                sha2::Sha256::digest(stored),
                "{path}"
            );
        }
    }
    // Over IMAP too: BODY[] of UID 1 is the same octets.
    let mut imap = imap_session(&sandbox).await;
    imap::command(&mut imap, "s1", "EXAMINE INBOX").await;
    let fetched = imap::command(&mut imap, "f1", "UID FETCH 1 (RFC822.SIZE)").await;
    assert!(
        fetched[0].contains(&format!("RFC822.SIZE {}", stored[0].len())),
        "{fetched:?}"
    );

    // Unknown and malformed ids.
    get(
        &sandbox,
        "v1.0/me/messages/AAMkAAAAAAAAJw8AAAAAAAAAAQ==",
        &token,
    )
    .await
    .error(404, "ErrorItemNotFound");
    get(&sandbox, "v1.0/me/messages/not-an-id", &token)
        .await
        .error(400, "ErrorInvalidIdMalformed");
}

#[tokio::test]
async fn patch_sets_imaps_flags_and_imap_flags_show_in_graph() {
    let (sandbox, _) = start_mail().await;
    let token = user_token(&sandbox, MAIL_READ_WRITE).await;
    deliver(&sandbox, "INBOX", &message("flags"));
    let listed = get(&sandbox, "v1.0/me/mailFolders/inbox/messages", &token).await;
    let original = values(listed.ok())[0].clone();
    let id = original["id"].as_str().unwrap();

    let patched = call(
        &sandbox,
        Method::PATCH,
        &format!("v1.0/me/messages/{id}"),
        &token,
        &[],
        Some(json!({"isRead": true, "flag": {"flagStatus": "flagged"}})),
    )
    .await;
    assert_eq!(patched.ok()["isRead"], true);
    assert_eq!(patched.body["flag"]["flagStatus"], "flagged");
    assert_eq!(patched.body["id"], id, "same place, same id");
    assert_ne!(patched.body["@odata.etag"], original["@odata.etag"]);

    let mut imap = imap_session(&sandbox).await;
    imap::command(&mut imap, "s1", "SELECT INBOX").await;
    let flags = imap::command(&mut imap, "f1", "UID FETCH 1 (FLAGS)").await;
    assert!(
        flags[0].contains("\\Seen") && flags[0].contains("\\Flagged"),
        "{flags:?}"
    );
    imap::command(&mut imap, "f2", "UID STORE 1 -FLAGS (\\Seen \\Flagged)").await;
    let again = get(&sandbox, &format!("v1.0/me/messages/{id}"), &token).await;
    assert_eq!(again.ok()["isRead"], false);
    assert_eq!(again.body["flag"]["flagStatus"], "notFlagged");

    // Properties the sandbox does not model; values of the wrong type.
    for (body, code) in [
        (json!({"subject": "new"}), "ErrorInvalidProperty"),
        (json!({"isRead": "yes"}), "RequestBodyRead"),
        (
            json!({"flag": {"flagStatus": "complete"}}),
            "ErrorInvalidProperty",
        ),
        (json!({"flag": {"flagStatus": "maybe"}}), "RequestBodyRead"),
    ] {
        call(
            &sandbox,
            Method::PATCH,
            &format!("v1.0/me/messages/{id}"),
            &token,
            &[],
            Some(body.clone()),
        )
        .await
        .error(400, code);
    }
}

#[tokio::test]
async fn ids_change_on_a_move_unless_immutable_and_the_store_follows() {
    let (sandbox, _) = start_mail().await;
    let token = user_token(&sandbox, MAIL_READ_WRITE).await;
    deliver(&sandbox, "INBOX", &message("first"));
    deliver(&sandbox, "INBOX", &message("second"));
    let immutable = [("Prefer", "IdType=\"ImmutableId\"")];

    let listed = get(
        &sandbox,
        "v1.0/me/mailFolders/inbox/messages?$orderby=receivedDateTime asc",
        &token,
    )
    .await;
    let first_id = values(listed.ok())[0]["id"].as_str().unwrap().to_owned();
    let listed_immutable = call(
        &sandbox,
        Method::GET,
        "v1.0/me/mailFolders/inbox/messages?$orderby=receivedDateTime asc",
        &token,
        &immutable,
        None,
    )
    .await;
    assert_eq!(
        listed_immutable.header("preference-applied"),
        Some("IdType=\"ImmutableId\"")
    );
    assert!(listed.header("preference-applied").is_none());
    let second_immutable = values(listed_immutable.ok())[1]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let first_immutable = values(&listed_immutable.body)[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(first_immutable, first_id, "two kinds of id");
    // Either kind reaches the message.
    let by_immutable = get(
        &sandbox,
        &format!("v1.0/me/messages/{first_immutable}"),
        &token,
    )
    .await;
    assert_eq!(
        by_immutable.ok()["id"],
        first_id.as_str(),
        "answered with the default kind"
    );

    // Default ids: a move gives a new id; the old one is gone.
    let moved = call(
        &sandbox,
        Method::POST,
        &format!("v1.0/me/messages/{first_id}/move"),
        &token,
        &[],
        Some(json!({"destinationId": "archive"})),
    )
    .await;
    assert_eq!(moved.status, StatusCode::CREATED, "{}", moved.body);
    let moved_id = moved.body["id"].as_str().unwrap();
    assert_ne!(moved_id, first_id);
    let archive = get(&sandbox, "v1.0/me/mailFolders/archive", &token).await;
    assert_eq!(moved.body["parentFolderId"], archive.ok()["id"]);
    get(&sandbox, &format!("v1.0/me/messages/{first_id}"), &token)
        .await
        .error(404, "ErrorItemNotFound");
    // The immutable id survived it.
    let still = get(
        &sandbox,
        &format!("v1.0/me/messages/{first_immutable}"),
        &token,
    )
    .await;
    assert_eq!(still.ok()["id"], moved_id);
    let admin = sandbox.sandbox.admin();
    assert_eq!(admin.folder_messages(ADELE, "INBOX").len(), 1);
    assert_eq!(
        admin.folder_messages(ADELE, "Archive").len(),
        1,
        "moved for IMAP too"
    );

    // Immutable ids: the same id after a move, by well-known name or folder id.
    let deleted_items = get(&sandbox, "v1.0/me/mailFolders/deleteditems", &token).await;
    let deleted_items_id = deleted_items.ok()["id"].as_str().unwrap().to_owned();
    let moved = call(
        &sandbox,
        Method::POST,
        &format!("v1.0/me/mailFolders/inbox/messages/{second_immutable}/move"),
        &token,
        &[("Prefer", "odata.maxpagesize=5, IdType=\"ImmutableId\"")],
        Some(json!({"destinationId": deleted_items_id})),
    )
    .await;
    assert_eq!(moved.status, StatusCode::CREATED);
    assert_eq!(moved.body["id"], second_immutable.as_str());
    assert_eq!(
        moved.header("preference-applied"),
        Some("IdType=\"ImmutableId\"")
    );
    assert_eq!(admin.folder_messages(ADELE, "Deleted Items").len(), 1);
    let mut imap = imap_session(&sandbox).await;
    let examined = imap::command(&mut imap, "e1", "EXAMINE \"Deleted Items\"").await;
    assert!(
        examined.iter().any(|l| l == "* 1 EXISTS\r\n"),
        "{examined:?}"
    );

    // A copy is a new item: new ids of both kinds; the original stays.
    let copied = call(
        &sandbox,
        Method::POST,
        &format!("v1.0/me/messages/{second_immutable}/copy"),
        &token,
        &immutable,
        Some(json!({"destinationId": "inbox"})),
    )
    .await;
    assert_eq!(copied.status, StatusCode::CREATED);
    assert_ne!(copied.body["id"], second_immutable.as_str());
    assert_eq!(copied.body["subject"], "second");
    assert_eq!(admin.folder_messages(ADELE, "Deleted Items").len(), 1);
    assert_eq!(admin.folder_messages(ADELE, "INBOX").len(), 1);

    // DELETE: gone from the folder (and for IMAP).
    let copy_id = copied.body["id"].as_str().unwrap();
    let deleted = call(
        &sandbox,
        Method::DELETE,
        &format!("v1.0/me/messages/{copy_id}"),
        &token,
        &[],
        None,
    )
    .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert!(admin.folder_messages(ADELE, "INBOX").is_empty());
    get(&sandbox, &format!("v1.0/me/messages/{copy_id}"), &token)
        .await
        .error(404, "ErrorItemNotFound");

    // A move without a destination, or to no folder.
    for (body, status, code) in [
        (json!({}), 400, "ErrorInvalidParameter"),
        (
            json!({"destinationId": "nowhere"}),
            400,
            "ErrorInvalidIdMalformed",
        ),
        (
            json!({"destinationId": "msgfolderroot"}),
            400,
            "ErrorInvalidIdMalformed",
        ),
    ] {
        call(
            &sandbox,
            Method::POST,
            &format!("v1.0/me/messages/{second_immutable}/move"),
            &token,
            &[],
            Some(body),
        )
        .await
        .error(status, code);
    }
}

/// One delta round from `link`: every page's messages, the Preference-Applied values seen and the
/// deltaLink.
async fn delta_round(
    sandbox: &TestSandbox,
    link: &str,
    token: &str,
    page_size: Option<&str>,
) -> (Vec<Vec<String>>, String) {
    let mut pages = Vec::new();
    let mut next = link.to_owned();
    loop {
        assert!(pages.len() < 50, "delta paging does not end");
        let headers: Vec<(&str, &str)> = page_size.iter().map(|p| ("Prefer", *p)).collect();
        let page = call(sandbox, Method::GET, &next, token, &headers, None).await;
        page.ok();
        if page_size.is_some() {
            assert_eq!(
                page.header("preference-applied"),
                Some("odata.maxpagesize=2")
            );
        }
        assert_eq!(
            page.body["@odata.context"],
            "https://graph.microsoft.com/v1.0/$metadata#Collection(message)"
        );
        pages.push(subjects(&page.body));
        match (
            page.body["@odata.nextLink"].as_str(),
            page.body["@odata.deltaLink"].as_str(),
        ) {
            (Some(next_link), None) => {
                assert!(
                    next_link.contains("/messages/delta?$skiptoken="),
                    "{next_link}"
                );
                next = next_link.to_owned();
            }
            (None, Some(delta_link)) => {
                assert!(
                    delta_link.contains("/messages/delta?$deltatoken="),
                    "{delta_link}"
                );
                return (pages, delta_link.to_owned());
            }
            other => panic!("a page has exactly one link: {other:?}"),
        }
    }
}

#[tokio::test]
async fn delta_rounds_report_exactly_the_messages_that_arrived() {
    let (sandbox, _) = start_mail().await;
    let token = user_token(&sandbox, MAIL_READ_WRITE).await;
    for index in 0..5 {
        deliver(&sandbox, "INBOX", &message(&format!("d{index}")));
    }
    deliver(&sandbox, "Archive", &message("archived"));
    let first =
        "v1.0/me/mailFolders/inbox/messages/delta?changeType=created&$select=subject,isRead";
    let (pages, delta_link) =
        delta_round(&sandbox, first, &token, Some("odata.maxpagesize=2")).await;
    assert_eq!(
        pages,
        [vec!["d0", "d1"], vec!["d2", "d3"], vec!["d4"]],
        "every message once, in arrival order"
    );
    assert!(
        delta_link.starts_with(&format!(
            "{}v1.0/me/mailFolders/inbox/messages/delta?$deltatoken=",
            sandbox.sandbox.base_url()
        )),
        "absolute, on the client's URL: {delta_link}"
    );

    // Nothing new: an empty round.
    let (pages, delta_link) = delta_round(&sandbox, &delta_link, &token, None).await;
    assert_eq!(pages, [Vec::<String>::new()]);

    // A delivery, an IMAP APPEND-like delivery and a Graph move into the folder: exactly those.
    deliver(&sandbox, "INBOX", &message("new"));
    let archived = get(&sandbox, "v1.0/me/mailFolders/archive/messages", &token).await;
    let archived_id = values(archived.ok())[0]["id"].as_str().unwrap().to_owned();
    call(
        &sandbox,
        Method::POST,
        &format!("v1.0/me/messages/{archived_id}/move"),
        &token,
        &[],
        Some(json!({"destinationId": "inbox"})),
    )
    .await
    .ok_created();
    let (pages, next_delta) =
        delta_round(&sandbox, &delta_link, &token, Some("odata.maxpagesize=2")).await;
    assert_eq!(pages, [vec!["new", "archived"]]);
    // The options of the first request ride in the tokens: $select still applies.
    let round = call(&sandbox, Method::GET, &delta_link, &token, &[], None).await;
    let keys: BTreeSet<&str> = values(round.ok())[0]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        BTreeSet::from(["@odata.etag", "id", "subject", "isRead"])
    );
    // A deltaLink may be used again: it starts from the same point.
    let (pages, _) = delta_round(&sandbox, &next_delta, &token, None).await;
    assert_eq!(pages, [Vec::<String>::new()]);

    // Default page size 10; immutable ids on request.
    for index in 0..11 {
        deliver(&sandbox, "Junk Email", &message(&format!("j{index}")));
    }
    let page = call(
        &sandbox,
        Method::GET,
        "v1.0/me/mailFolders/junkemail/messages/delta",
        &token,
        &[("Prefer", "IdType=\"ImmutableId\"")],
        None,
    )
    .await;
    assert_eq!(values(page.ok()).len(), 10);
    assert!(page.body["@odata.nextLink"].is_string());
    assert_eq!(
        page.header("preference-applied"),
        Some("IdType=\"ImmutableId\"")
    );
    assert!(
        values(&page.body)[0]["id"]
            .as_str()
            .unwrap()
            .starts_with("AAkA")
    );

    // A receivedDateTime filter is kept; others are not modelled.
    let filtered = get(
        &sandbox,
        "v1.0/me/mailFolders/inbox/messages/delta?$filter=receivedDateTime ge 2100-01-01T00:00:00Z",
        &token,
    )
    .await;
    assert!(values(filtered.ok()).is_empty());
    for query in [
        "changeType=updated",
        "changeType=deleted",
        "$filter=isRead eq false",
        "$orderby=receivedDateTime desc",
    ] {
        get(
            &sandbox,
            &format!("v1.0/me/mailFolders/inbox/messages/delta?{query}"),
            &token,
        )
        .await
        .error(400, "Request_UnsupportedQuery");
    }
}

trait Created {
    fn ok_created(&self) -> &Value;
}

impl Created for GraphAnswer {
    #[track_caller]
    fn ok_created(&self) -> &Value {
        assert_eq!(self.status, StatusCode::CREATED, "body: {}", self.body);
        &self.body
    }
}

#[tokio::test]
async fn delta_tokens_the_sandbox_cannot_resume_answer_410() {
    let (sandbox, _) = start_mail().await;
    let token = user_token(&sandbox, MAIL_READ).await;
    deliver(&sandbox, "INBOX", &message("one"));
    let first = get(&sandbox, "v1.0/me/mailFolders/inbox/messages/delta", &token).await;
    let delta_link = first.ok()["@odata.deltaLink"].as_str().unwrap().to_owned();
    let token_text = delta_link.split("$deltatoken=").nth(1).unwrap().to_owned();

    let gone = |answer: GraphAnswer| {
        answer.error(410, "syncStateNotFound");
    };
    // Never issued; issued as a deltatoken but sent as a skiptoken; for another folder.
    gone(
        get(
            &sandbox,
            "v1.0/me/mailFolders/inbox/messages/delta?$deltatoken=garbage",
            &token,
        )
        .await,
    );
    gone(
        get(
            &sandbox,
            &format!("v1.0/me/mailFolders/inbox/messages/delta?$skiptoken={token_text}"),
            &token,
        )
        .await,
    );
    gone(
        get(
            &sandbox,
            &format!("v1.0/me/mailFolders/archive/messages/delta?$deltatoken={token_text}"),
            &token,
        )
        .await,
    );
    // Another sandbox run's token.
    let (other, _) = start_mail().await;
    let other_token = user_token(&other, MAIL_READ).await;
    let foreign = get(
        &other,
        "v1.0/me/mailFolders/inbox/messages/delta",
        &other_token,
    )
    .await;
    let foreign_link = foreign.ok()["@odata.deltaLink"].as_str().unwrap();
    let foreign_token = foreign_link.split("$deltatoken=").nth(1).unwrap();
    gone(
        get(
            &sandbox,
            &format!("v1.0/me/mailFolders/inbox/messages/delta?$deltatoken={foreign_token}"),
            &token,
        )
        .await,
    );
    other.sandbox.shutdown().await;

    // Still good, then the injected fault (over the admin API) once, then good again.
    get(&sandbox, &delta_link, &token).await.ok();
    sandbox
        .admin_post("faults/graph", json!({"fault": "sync_state_not_found"}))
        .await
        .assert_ok();
    // A request without a token does not use the fault up.
    get(&sandbox, "v1.0/me/mailFolders/inbox/messages/delta", &token)
        .await
        .ok();
    get(&sandbox, "v1.0/me/mailFolders/inbox", &token)
        .await
        .ok();
    gone(get(&sandbox, &delta_link, &token).await);
    get(&sandbox, &delta_link, &token).await.ok();
    sandbox
        .sandbox
        .admin()
        .inject_graph_fault(GraphFault::SyncStateNotFound, 1);
    gone(get(&sandbox, &delta_link, &token).await);

    // The folder's UIDVALIDITY changed: the old state means nothing.
    sandbox
        .sandbox
        .admin()
        .set_uid_validity(ADELE, "INBOX", 7)
        .unwrap();
    gone(get(&sandbox, &delta_link, &token).await);
    // A new sync starts cleanly and reports the message again.
    let again = get(&sandbox, "v1.0/me/mailFolders/inbox/messages/delta", &token).await;
    assert_eq!(subjects(again.ok()), ["one"]);
}

#[tokio::test]
async fn mail_routes_check_permission_mailbox_path_and_method() {
    let (sandbox, _) = start_mail().await;
    deliver(&sandbox, "INBOX", &message("private"));
    let read = user_token(&sandbox, MAIL_READ).await;
    let read_write = user_token(&sandbox, MAIL_READ_WRITE).await;
    let user_read = user_token(&sandbox, "https://graph.microsoft.com/User.Read").await;
    let app = daemon_token(&sandbox).await;

    // No mail permission: Exchange's 403.
    let denied = get(&sandbox, "v1.0/me/messages", &user_read).await;
    assert_eq!(
        denied.error(403, "ErrorAccessDenied"),
        "Access is denied. Check credentials and try again."
    );
    // Mail.Read reads but does not change.
    let listed = get(&sandbox, "v1.0/me/messages", &read).await;
    let id = values(listed.ok())[0]["id"].as_str().unwrap().to_owned();
    for (method, path, body) in [
        (
            Method::PATCH,
            format!("v1.0/me/messages/{id}"),
            Some(json!({"isRead": true})),
        ),
        (Method::DELETE, format!("v1.0/me/messages/{id}"), None),
        (
            Method::POST,
            format!("v1.0/me/messages/{id}/move"),
            Some(json!({"destinationId": "archive"})),
        ),
    ] {
        call(&sandbox, method, &path, &read, &[], body)
            .await
            .error(403, "ErrorAccessDenied");
    }
    // Another user's mailbox without FullAccess; by UPN and by object id for one's own.
    get(
        &sandbox,
        &format!("v1.0/users/{}/messages", demo::SECOND_USER_UPN),
        &read_write,
    )
    .await
    .error(403, "ErrorAccessDenied");
    for me in [ADELE, demo::USER_OBJECT_ID] {
        get(
            &sandbox,
            &format!("v1.0/users/{me}/mailFolders/inbox/messages"),
            &read,
        )
        .await
        .ok();
    }
    // App-only: any mailbox by /users/{id}; /me is refused.
    let by_app = get(&sandbox, &format!("v1.0/users/{ADELE}/messages"), &app).await;
    assert_eq!(subjects(by_app.ok()), ["private"]);
    get(&sandbox, "v1.0/me/messages", &app)
        .await
        .error(400, "BadRequest");
    get(
        &sandbox,
        "v1.0/users/nobody@contoso.onmicrosoft.com/messages",
        &app,
    )
    .await
    .error(404, "ErrorInvalidUser");
    // No token.
    let response = sandbox
        .http
        .get(sandbox.url("v1.0/me/messages"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    // Unknown segments are named; another method is 405.
    for (path, segment) in [
        ("v1.0/me/calendar", "calendar"),
        ("v1.0/me/mailFolders/inbox/rules", "rules"),
        (&format!("v1.0/me/messages/{id}/forward"), "forward"),
        ("v1.0/me/mailFolders/inbox/messages/delta/x", "x"),
    ] {
        let answer = get(&sandbox, path, &read).await;
        assert_eq!(
            answer.error(400, "BadRequest"),
            format!("Resource not found for the segment '{segment}'."),
            "{path}"
        );
    }
    call(
        &sandbox,
        Method::DELETE,
        "v1.0/me/mailFolders",
        &read_write,
        &[],
        None,
    )
    .await
    .error(405, "Request_BadRequest");
    call(
        &sandbox,
        Method::GET,
        "v1.0/me/sendMail",
        &read_write,
        &[],
        None,
    )
    .await
    .error(405, "Request_BadRequest");
    // Paths are matched without case.
    get(&sandbox, "v1.0/me/MAILFOLDERS/Inbox/Messages", &read)
        .await
        .ok();
}
