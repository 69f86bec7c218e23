//! The mail a sandbox starts with (welcome, demo, `--mail-dir`) and the admin routes that deliver and list
//! messages over HTTP.

use m365mail_sandbox::{MailSeed, SandboxConfig, demo};
use serde_json::Value;

use crate::common::{TestSandbox, start, start_with};

fn route(address: &str) -> String {
    format!("_sandbox/admin/mailboxes/{address}/messages")
}

async fn deliver(sbx: &TestSandbox, address: &str, body: Vec<u8>) -> reqwest::Response {
    sbx.http
        .post(sbx.url(&route(address)))
        .body(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn delivers_up_to_64_mib_over_http_and_lists() {
    let sbx = start().await;
    let answer = deliver(
        &sbx,
        demo::USER_UPN,
        b"Subject: hello\r\n =?utf-8?Q?w=C3=B6rld?=\r\n\r\nx\r\n".to_vec(),
    )
    .await;
    assert_eq!(answer.status(), 200);
    let body: Value = answer.json().await.unwrap();
    let uid = body["uid"].as_str().unwrap().to_owned();

    // 3 MiB: over the 1 MiB limit of every other admin route, taken here.
    let mut big = b"Subject: big\r\n\r\n".to_vec();
    big.extend(std::iter::repeat_n(b'a', 3 << 20));
    big.extend_from_slice(b"\r\n");
    assert_eq!(deliver(&sbx, demo::USER_UPN, big).await.status(), 200);

    let listed = sbx.get_json(&route(demo::USER_UPN)).await;
    assert_eq!(listed.status, 200);
    let messages = listed.body.as_array().unwrap();
    assert_eq!(messages.len(), 3, "{messages:?}");
    assert_eq!(messages[0]["subject"], "Welcome to the m365mail sandbox");
    assert_eq!(messages[1]["uid"], uid.as_str());
    assert_eq!(messages[1]["subject"], "hello =?utf-8?Q?w=C3=B6rld?=");
    assert_eq!(messages[2]["size"], (3 << 20) + 18);
    assert_eq!(sbx.sandbox.admin().mailbox_uids(demo::USER_UPN)[1], uid);

    // Elsewhere the 1 MiB limit stands.
    let over = sbx
        .http
        .post(sbx.url("_sandbox/admin/stats/reset"))
        .body(vec![b' '; 2 << 20])
        .send()
        .await
        .unwrap();
    assert_eq!(over.status(), 413);

    // Unknown mailbox, empty body.
    let unknown = deliver(
        &sbx,
        "nobody@contoso.onmicrosoft.com",
        b"Subject: x\r\n\r\n".to_vec(),
    )
    .await;
    assert_eq!(unknown.status(), 404);
    assert_eq!(
        deliver(&sbx, demo::USER_UPN, b"  \r\n".to_vec())
            .await
            .status(),
        400
    );
    assert_eq!(
        sbx.get_json(&route("nobody@contoso.onmicrosoft.com"))
            .await
            .status,
        404
    );
}

#[tokio::test]
async fn a_mail_dir_loads_eml_and_mbox_with_stable_uids() {
    let dir = tempfile::tempdir().unwrap();
    let adele = dir.path().join(demo::USER_UPN);
    std::fs::create_dir(&adele).unwrap();
    std::fs::write(adele.join("b.eml"), "Subject: second file\n\nbody\n").unwrap();
    std::fs::write(adele.join("a.eml"), "Subject: first file\n\nbody\n").unwrap();
    std::fs::write(
        adele.join("c.mbox"),
        "From x@y Mon Dec  7 06:00:00 2026\nSubject: mbox one\n\n>From quoted\n\nFrom x@y Mon Dec  7 06:00:01 2026\nSubject: mbox two\n\nz\n",
    )
    .unwrap();
    std::fs::write(adele.join("notes.txt"), "not mail").unwrap();
    let config = || SandboxConfig {
        mail: MailSeed::Dir(dir.path().to_path_buf()),
        ..SandboxConfig::default()
    };
    let sbx = start_with(config()).await;
    let listed = sbx.get_json(&route(demo::USER_UPN)).await.body;
    let subjects: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["subject"].as_str().unwrap())
        .collect();
    assert_eq!(
        subjects,
        ["first file", "second file", "mbox one", "mbox two"]
    );
    // Mailboxes the directory does not name keep their welcome message.
    assert_eq!(
        sbx.sandbox
            .admin()
            .mailbox_uids(demo::SECOND_USER_UPN)
            .len(),
        1
    );

    // The same directory after a restart: the same UIDLs.
    let again = start_with(config()).await;
    assert_eq!(
        again.sandbox.admin().mailbox_uids(demo::USER_UPN),
        sbx.sandbox.admin().mailbox_uids(demo::USER_UPN)
    );

    // A directory naming a mailbox the tenant does not have is refused at start.
    std::fs::create_dir(dir.path().join("ghost@contoso.onmicrosoft.com")).unwrap();
    let err = m365mail_sandbox::Sandbox::start(config())
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("ghost@contoso.onmicrosoft.com"),
        "{err}"
    );
}

#[tokio::test]
async fn the_demo_seed_fills_adeles_inbox() {
    let sbx = start_with(SandboxConfig {
        mail: MailSeed::Demo,
        ..SandboxConfig::default()
    })
    .await;
    let listed = sbx.get_json(&route(demo::USER_UPN)).await.body;
    let messages = listed.as_array().unwrap();
    assert_eq!(messages.len(), 12);
    assert!(
        messages
            .iter()
            .any(|m| m["size"].as_u64().unwrap() > 5_000_000)
    );
    assert_eq!(
        sbx.sandbox
            .admin()
            .mailbox_uids(demo::SECOND_USER_UPN)
            .len(),
        1
    );
}
