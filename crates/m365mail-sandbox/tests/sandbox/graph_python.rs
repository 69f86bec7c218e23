//! Graph mail driven by a client nobody here wrote: Python `requests` with the request shapes of
//! Microsoft's documentation (`tests/graph/graph_requests.py`): JSON `sendMail`, a draft with a chunked
//! upload session and send, delta paging with `Prefer: odata.maxpagesize=2` and a later round, `$value`.

use m365mail_sandbox::demo;
use serde_json::json;
use sha2::Digest as _;

use crate::{
    common::python_session,
    graph::user_token,
    graph_mail::{ADELE, MAIL_READ_WRITE, start_mail},
};

fn hex(bytes: &[u8]) -> String {
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs python3 with requests (run by scripts/test.sh)"]
async fn python_requests_sends_uploads_pages_delta_and_reads_value() {
    let (sandbox, _) = start_mail().await;
    let admin = sandbox.sandbox.admin();
    for index in 0..5 {
        admin
            .deliver_message(
                ADELE,
                format!("Subject: seeded {index}\r\nFrom: alex@contoso.onmicrosoft.com\r\n\r\nbody {index}\r\n")
                    .as_bytes(),
            )
            .unwrap();
    }
    let token = user_token(
        &sandbox,
        &format!("{MAIL_READ_WRITE} https://graph.microsoft.com/Mail.Send"),
    )
    .await;
    let port = sandbox.sandbox.base_url().port().unwrap();
    let seen = python_session(
        &sandbox,
        "graph/graph_requests.py",
        port,
        ADELE,
        &token,
        &[demo::SECOND_USER_UPN],
    )
    .await;

    // Delta: pages of two until the deltaLink; the later round holds exactly the new message.
    assert_eq!(
        seen["delta_pages"],
        json!([
            ["seeded 0", "seeded 1"],
            ["seeded 2", "seeded 3"],
            ["seeded 4"]
        ])
    );
    assert_eq!(
        seen["delta_preference_applied"],
        json!(["odata.maxpagesize=2"])
    );
    assert_eq!(seen["delta_link_has_token"], true);
    assert_eq!(seen["send_mail_status"], 202, "{}", seen["send_mail_body"]);
    assert_eq!(
        seen["delta_new_round"],
        json!(["graph-requests: new since the delta link"])
    );
    assert_eq!(seen["delta_new_round_links"], json!(["@odata.deltaLink"]));

    // The draft, its upload session and the chunked PUTs: 1.25 MiB, 1.25 MiB, the rest.
    assert_eq!(seen["draft_status"], 201);
    assert_eq!(seen["session_status"], 201);
    assert_eq!(seen["session_next_expected_ranges"], json!(["0-"]));
    let upload_url = seen["upload_url"].as_str().unwrap();
    assert!(
        upload_url.starts_with(&format!(
            "https://localhost:{port}/_sandbox/outlook/api/v2.0/Users('{ADELE}')/Messages('"
        )),
        "{upload_url}"
    );
    assert_eq!(seen["put_with_authorization"], 401);
    let puts = seen["puts"].as_array().unwrap();
    assert_eq!(puts.len(), 3, "{puts:?}");
    assert_eq!(puts[0], json!({"status": 200, "next": ["1310720"]}));
    assert_eq!(puts[1], json!({"status": 200, "next": ["2621440"]}));
    assert_eq!(puts[2]["status"], 201);
    assert!(
        puts[2]["location"]
            .as_str()
            .unwrap()
            .contains("/Attachments('")
    );
    assert_eq!(seen["send_status"], 202);
    // Alex got it, attachment intact; the draft left Drafts; Sent Items has both sends.
    let alex = admin.folder_messages(demo::SECOND_USER_UPN, "INBOX");
    assert_eq!(alex.len(), 1);
    let parsed = mail_parser::MessageParser::default()
        .parse(&alex[0])
        .unwrap();
    assert_eq!(parsed.subject(), Some("graph-requests: large attachment"));
    let attachment = parsed.attachment(0).unwrap();
    assert_eq!(
        hex(attachment.contents()),
        seen["attachment_sha256"].as_str().unwrap()
    );
    assert!(admin.folder_messages(ADELE, "Drafts").is_empty());
    assert_eq!(admin.folder_messages(ADELE, "Sent Items").len(), 2);

    // $value: the bytes the store (and IMAP's BODY[]) holds.
    assert_eq!(seen["value_status"], 200);
    let subject = seen["value_subject"].as_str().unwrap();
    let stored = admin
        .folder_messages(ADELE, "INBOX")
        .into_iter()
        .find(|m| String::from_utf8_lossy(m).contains(&format!("Subject: {subject}")))
        .expect("the listed message is in the Inbox");
    assert_eq!(seen["value_sha256"].as_str().unwrap(), hex(&stored));
}
