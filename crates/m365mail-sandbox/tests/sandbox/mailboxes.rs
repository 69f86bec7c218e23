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

#[tokio::test]
async fn folders_their_uidvalidity_and_deliveries_to_a_folder() {
    let sbx = start_with(SandboxConfig {
        mail: MailSeed::Demo,
        ..SandboxConfig::default()
    })
    .await;
    let folders_route = format!("_sandbox/admin/mailboxes/{}/folders", demo::USER_UPN);
    let folders = sbx.get_json(&folders_route).await.body;
    let summary: Vec<(String, Value, u64)> = folders
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["name"].as_str().unwrap().to_owned(),
                f["special_use"].clone(),
                f["messages"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("INBOX".to_owned(), Value::Null, 12),
            ("Sent Items".to_owned(), "Sent".into(), 2),
            ("Drafts".to_owned(), "Drafts".into(), 1),
            ("Deleted Items".to_owned(), "Trash".into(), 1),
            ("Archive".to_owned(), "Archive".into(), 2),
            ("Junk Email".to_owned(), "Junk".into(), 1),
        ]
    );
    // UIDVALIDITY: the start time, the same for every folder of this run.
    let started = folders[0]["uid_validity"].as_u64().unwrap();
    let now = m365mail_sandbox::Clock::unix_seconds(&m365mail_sandbox::SystemClock);
    assert!(started <= now && now - started < 60, "{started} vs {now}");
    assert_eq!(folders[4]["uid_next"], 3);

    // Delivered to a folder; listed from it; an unknown folder is a 404.
    let answer = sbx
        .http
        .post(sbx.url(&format!("{}?folder=Archive", route(demo::USER_UPN))))
        .body("Subject: filed\r\n\r\nx\r\n")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let archive = sbx
        .get_json(&format!("{}?folder=Archive", route(demo::USER_UPN)))
        .await
        .body;
    assert_eq!(archive.as_array().unwrap().len(), 3);
    assert_eq!(archive[2]["subject"], "filed");
    let missing = sbx
        .http
        .post(sbx.url(&format!("{}?folder=Nope", route(demo::USER_UPN))))
        .body("Subject: x\r\n\r\n")
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);

    // An admin sets a folder's UIDVALIDITY (a resync for clients).
    let set = sbx
        .admin_post(
            &format!(
                "mailboxes/{}/folders/Sent%20Items/uidvalidity",
                demo::USER_UPN
            ),
            serde_json::json!({"uid_validity": 4242}),
        )
        .await;
    assert_eq!(set.status, 200, "{:?}", set.body);
    let folders = sbx.get_json(&folders_route).await.body;
    assert_eq!(folders[1]["uid_validity"], 4242);
}

#[tokio::test]
async fn a_mail_dir_subdirectory_is_a_folder() {
    let dir = tempfile::tempdir().unwrap();
    let adele = dir.path().join(demo::USER_UPN);
    std::fs::create_dir_all(adele.join("Sent Items")).unwrap();
    std::fs::create_dir_all(adele.join("Projects")).unwrap();
    std::fs::write(adele.join("in.eml"), "Subject: inbox\n\nx\n").unwrap();
    std::fs::write(adele.join("Sent Items/out.eml"), "Subject: sent\n\nx\n").unwrap();
    std::fs::write(adele.join("Projects/p.eml"), "Subject: project\n\nx\n").unwrap();
    let sbx = start_with(SandboxConfig {
        mail: MailSeed::Dir(dir.path().to_path_buf()),
        ..SandboxConfig::default()
    })
    .await;
    let folders = sbx.sandbox.admin().mailbox_folders(demo::USER_UPN);
    let named: Vec<(&str, usize)> = folders
        .iter()
        .map(|f| (f.name.as_str(), f.messages))
        .collect();
    assert_eq!(
        named,
        [
            ("INBOX", 1),
            ("Sent Items", 1),
            ("Drafts", 0),
            ("Deleted Items", 0),
            ("Archive", 0),
            ("Junk Email", 0),
            ("Projects", 1)
        ]
    );
}
