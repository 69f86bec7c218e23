//! `m365mail send` as a user runs it against a served sandbox with the `--config-out` profiles: flags and
//! `--input` batches, the message read back with `m365mail read` (attachments identical by sha256), app-only,
//! Exchange's refusals with their remedies and exit codes, and `--dry-run`.

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use assert_cmd::cargo::CommandCargoExt as _;
use m365mail_sandbox::demo;
use serde_json::Value;

mod common;
use common::{Served, describe};

fn m365mail(dir: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::cargo_bin("m365mail")
        .unwrap()
        .current_dir(dir)
        .args(["--config", "cfg.toml"])
        .args(args)
        .env_remove("M365MAIL_PROFILE")
        .env("M365MAIL_LOG", "error")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    child.wait_with_output().unwrap()
}

fn lines(output: &Output) -> Vec<Value> {
    String::from_utf8(output.stdout.clone())
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect()
}

fn sha256(bytes: &[u8]) -> String {
    m365mail::mime::sha256_hex(bytes)
}

#[test]
fn a_message_from_flags_is_read_back_identical() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let _served = Served::start(work);
    // Bytes that need base64, and a line that starts with a dot.
    let attachment: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    std::fs::write(work.join("figures.bin"), &attachment).unwrap();
    std::fs::write(work.join("body.txt"), "Totals attached.\n.A dotted line\n").unwrap();

    let sent = m365mail(
        work,
        &[
            "-p",
            "sandbox-user",
            "send",
            "--to",
            &format!("{},{}", demo::USER_UPN, demo::SECOND_USER_UPN),
            "--subject",
            "Überweisung Q4 — Zahlen",
            "--text-file",
            "body.txt",
            "--attach",
            "figures.bin",
            "--header",
            "X-Job: 42",
            "--in-reply-to",
            "<q3@fabrikam.example>",
            "--no-pacing",
        ],
        None,
    );
    assert!(sent.status.success(), "{}", describe(&sent));
    let result = &lines(&sent)[0];
    assert_eq!(result["status"], "sent", "{result}");
    assert_eq!(result["via"], "smtp");
    let message_id = result["message_id"].as_str().unwrap();
    assert!(
        String::from_utf8_lossy(&sent.stderr)
            .contains("sent 1 of 1 messages as adele@contoso.onmicrosoft.com through 127.0.0.1:"),
        "{}",
        describe(&sent)
    );

    // Adele sent it to herself too: read it back over POP3 with the same profile.
    let read = m365mail(
        work,
        &[
            "-p",
            "sandbox-user",
            "read",
            "--protocol",
            "pop",
            "--state",
            "state.sqlite",
            "--out-dir",
            "out",
        ],
        None,
    );
    assert!(read.status.success(), "{}", describe(&read));
    let records = lines(&read);
    let record = records
        .iter()
        .find(|r| r["message_id"] == message_id)
        .unwrap_or_else(|| panic!("{message_id} not among {records:?}"));
    assert_eq!(record["subject"], "Überweisung Q4 — Zahlen");
    assert_eq!(
        record["text"].as_str().unwrap().replace("\r\n", "\n"),
        "Totals attached.\n.A dotted line\n"
    );
    assert_eq!(record["in_reply_to"], "q3@fabrikam.example");
    assert!(
        record["headers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h[0] == "X-Job" && h[1] == "42"),
        "{record}"
    );
    let attachments = record["attachments"].as_array().unwrap();
    assert_eq!(attachments.len(), 1);
    assert_eq!(attachments[0]["name"], "figures.bin");
    assert_eq!(attachments[0]["sha256"], sha256(&attachment));
    let saved = std::fs::read(
        work.join("out")
            .join(attachments[0]["path"].as_str().unwrap()),
    )
    .unwrap();
    assert_eq!(saved, attachment);

    // And over IMAP: Exchange files what SMTP submitted in Sent Items; a search on the non-ASCII subject
    // (CHARSET UTF-8 with a literal) finds it there, byte for byte the message POP3 gave.
    let sent_items = m365mail(
        work,
        &[
            "-p",
            "sandbox-user",
            "read",
            "--folder",
            "Sent Items",
            "--subject",
            "Überweisung",
            "--state",
            "state.sqlite",
        ],
        None,
    );
    assert!(sent_items.status.success(), "{}", describe(&sent_items));
    let filed = lines(&sent_items);
    assert_eq!(filed.len(), 1, "{filed:?}");
    assert_eq!(filed[0]["message_id"], message_id);
    assert_eq!(filed[0]["sha256"], record["sha256"]);
    assert_eq!(filed[0]["source"]["folder"], "Sent Items");
}

#[test]
fn a_batch_keeps_going_past_bad_messages_and_exits_with_the_first_failure() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let _served = Served::start(work);
    let input = [
        format!(r#"{{"id":"a","to":["{}"],"subject":"one","text":"1"}}"#, demo::SECOND_USER_UPN),
        "{not json".to_owned(),
        r#"{"id":"c","to":["not an address"],"subject":"three"}"#.to_owned(),
        format!(
            r#"{{"id":"d","to":[{{"name":"Alex","address":"{}"}}],"subject":"four","attachments":[{{"name":"a.csv","data_base64":"YSxiCg=="}}]}}"#,
            demo::SECOND_USER_UPN
        ),
    ]
    .join("\n");
    let out = m365mail(
        work,
        &["-p", "sandbox-user", "send", "--input", "-", "--no-pacing"],
        Some(&input),
    );
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    let results = lines(&out);
    let summary: Vec<(String, String)> = results
        .iter()
        .map(|r| {
            (
                r["id"].to_string(),
                r["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("\"a\"".into(), "sent".into()),
            ("2".into(), "failed".into()),
            ("\"c\"".into(), "failed".into()),
            ("\"d\"".into(), "sent".into()),
        ]
    );
    assert!(
        results[1]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("line 2: not a message"),
        "{}",
        results[1]
    );
    assert_eq!(results[2]["error"]["class"], "input");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("sent 2 of 4 messages"),
        "{}",
        describe(&out)
    );
}

#[test]
fn refusals_carry_exchanges_remedy_and_app_only_sends_as_the_from_mailbox() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let _served = Served::start(work);
    // Adele may not send as the shared mailbox: 554 5.2.252 after the data, exit 4 (an admin must act).
    let denied = m365mail(
        work,
        &[
            "-p",
            "sandbox-user",
            "send",
            "--from",
            demo::SHARED_MAILBOX,
            "--to",
            demo::SECOND_USER_UPN,
            "--subject",
            "as support",
            "--text",
            "x",
        ],
        None,
    );
    assert_eq!(denied.status.code(), Some(4), "{}", describe(&denied));
    let line = &lines(&denied)[0];
    assert_eq!(line["status"], "failed");
    assert_eq!(line["error"]["class"], "admin");
    assert!(
        line["error"]["remedy"]
            .as_str()
            .unwrap()
            .contains("Add-RecipientPermission"),
        "{line}"
    );

    // The daemon (client credentials, SMTP.SendAsApp) signs in as the From mailbox.
    let app = m365mail(
        work,
        &[
            "-p",
            "sandbox-daemon",
            "send",
            "--from",
            demo::USER_UPN,
            "--to",
            demo::SECOND_USER_UPN,
            "--subject",
            "from the daemon",
            "--text",
            "x",
        ],
        None,
    );
    assert!(app.status.success(), "{}", describe(&app));
    assert_eq!(lines(&app)[0]["status"], "sent");

    // A header with a line break is refused before anything is sent (exit 2, with the reason).
    let bad = m365mail(
        work,
        &[
            "-p",
            "sandbox-user",
            "send",
            "--to",
            demo::SECOND_USER_UPN,
            "--subject",
            "a\r\nBcc: everyone@fabrikam.example",
        ],
        None,
    );
    assert_eq!(bad.status.code(), Some(2), "{}", describe(&bad));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("control character"),
        "{}",
        describe(&bad)
    );
    assert!(bad.stdout.is_empty());
}

#[test]
fn dry_run_prints_the_mime_without_signing_in() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    // No sandbox is running: a dry run needs only the profile.
    std::fs::write(
        work.join("cfg.toml"),
        "[profiles.p]\ntenant = \"contoso.onmicrosoft.com\"\nclient_id = \"c0ffee00-0000-4000-8000-00000000a001\"\nusername = \"adele@contoso.onmicrosoft.com\"\n",
    )
    .unwrap();
    let out = m365mail(
        work,
        &[
            "-p",
            "p",
            "send",
            "--dry-run",
            "--to",
            "alex@contoso.onmicrosoft.com",
            "--subject",
            "draft",
            "--html",
            "<p>hi</p>",
        ],
        None,
    );
    assert!(out.status.success(), "{}", describe(&out));
    let mime = String::from_utf8(out.stdout).unwrap();
    assert!(
        mime.contains("From: <adele@contoso.onmicrosoft.com>\r\n"),
        "{mime}"
    );
    assert!(mime.contains("Subject: draft\r\n"), "{mime}");
    assert!(mime.contains("Content-Type: text/html"), "{mime}");
}

/// `--via graph`: the same message builder through Graph's MIME sendMail, delegated and app-only; the Bcc
/// recipient gets it without seeing a `Bcc:` header; read back over IMAP identical in body and attachment;
/// Sent Items has the copy Exchange files; a message over 3 MB is refused before anything is sent.
#[test]
fn graph_sends_the_same_message_and_imap_reads_it_back() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let _served = Served::start(work);
    let attachment: Vec<u8> = (0..50_000u32).flat_map(|i| i.to_le_bytes()).collect();
    std::fs::write(work.join("data.bin"), &attachment).unwrap();
    let sent = m365mail(
        work,
        &[
            "-p",
            "sandbox-user",
            "send",
            "--via",
            "graph",
            "--to",
            demo::USER_UPN,
            "--bcc",
            demo::SECOND_USER_UPN,
            "--subject",
            "Über Graph",
            "--text",
            "Sent through Graph.",
            "--attach",
            "data.bin",
        ],
        None,
    );
    assert!(sent.status.success(), "{}", describe(&sent));
    let result = &lines(&sent)[0];
    assert_eq!(
        (result["status"].as_str(), result["via"].as_str()),
        (Some("sent"), Some("graph")),
        "{result}"
    );
    let message_id = result["message_id"].as_str().unwrap();
    assert!(
        String::from_utf8_lossy(&sent.stderr).contains("through Graph"),
        "{}",
        describe(&sent)
    );

    let read = m365mail(
        work,
        &[
            "-p",
            "sandbox-user",
            "read",
            "--subject",
            "Über Graph",
            "--out-dir",
            "out",
            "--eml",
        ],
        None,
    );
    assert!(read.status.success(), "{}", describe(&read));
    let records = lines(&read);
    assert_eq!(records.len(), 1, "{records:?}");
    let record = &records[0];
    assert_eq!(record["message_id"], message_id);
    assert_eq!(record["subject"], "Über Graph");
    assert_eq!(record["attachments"][0]["sha256"], sha256(&attachment));
    let eml = std::fs::read(work.join("out").join(record["eml_path"].as_str().unwrap())).unwrap();
    assert!(
        !String::from_utf8_lossy(&eml)
            .to_ascii_lowercase()
            .contains("\nbcc:"),
        "the Bcc header is not delivered"
    );
    let filed = m365mail(
        work,
        &[
            "-p",
            "sandbox-user",
            "read",
            "--folder",
            "Sent Items",
            "--subject",
            "Über Graph",
        ],
        None,
    );
    assert!(filed.status.success(), "{}", describe(&filed));
    assert_eq!(
        lines(&filed).len(),
        1,
        "Exchange files a Graph send in Sent Items"
    );

    // App-only, as Adele's mailbox.
    let app = m365mail(
        work,
        &[
            "-p",
            "sandbox-daemon",
            "send",
            "--via",
            "graph",
            "--from",
            demo::USER_UPN,
            "--to",
            demo::SECOND_USER_UPN,
            "--subject",
            "from the daemon",
            "--text",
            "hi",
        ],
        None,
    );
    assert!(app.status.success(), "{}", describe(&app));

    // Too large for one MIME request: refused with its remedy, nothing sent (without --graph-mime it would go
    // as a draft with an upload session).
    std::fs::write(work.join("big.bin"), vec![7u8; 3 * 1024 * 1024]).unwrap();
    let big = m365mail(
        work,
        &[
            "-p",
            "sandbox-user",
            "send",
            "--via",
            "graph",
            "--to",
            demo::USER_UPN,
            "--subject",
            "big",
            "--attach",
            "big.bin",
            "--graph-mime",
        ],
        None,
    );
    assert_eq!(big.status.code(), Some(2), "{}", describe(&big));
    assert!(
        String::from_utf8_lossy(&big.stderr).contains("over SMTP"),
        "{}",
        describe(&big)
    );
}

/// `--via auto`: with SMTP AUTH switched off for the mailbox (Set-CASMailbox -SmtpClientAuthenticationDisabled
/// through the admin API), SMTP gets Exchange's `535 5.7.139` and the message goes through Graph instead, the
/// result line saying so; `--via smtp` stops at the refusal with its remedy.
#[test]
fn auto_falls_back_to_graph_when_smtp_auth_is_off() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let served = Served::start(work);
    let url = format!(
        "{}_sandbox/admin/mailboxes/{}/cas-mailbox",
        served.line["endpoints"]["identity"].as_str().unwrap(),
        demo::USER_UPN
    );
    let ca = reqwest::Certificate::from_pem(&std::fs::read(work.join("ca.pem")).unwrap()).unwrap();
    let http = reqwest::Client::builder()
        .tls_certs_only([ca])
        .build()
        .unwrap();
    let status = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(async {
            http.post(&url)
                .json(&serde_json::json!({"SmtpClientAuthenticationDisabled": true}))
                .send()
                .await
                .map(|r| r.status())
        })
        .unwrap();
    assert!(status.is_success(), "{status}");

    let args = [
        "-p",
        "sandbox-user",
        "send",
        "--to",
        demo::USER_UPN,
        "--subject",
        "auto",
        "--text",
        "x",
    ];
    let smtp = m365mail(work, &args, None);
    assert_eq!(smtp.status.code(), Some(4), "{}", describe(&smtp));
    assert!(
        String::from_utf8_lossy(&smtp.stdout).contains("5.7.139"),
        "{}",
        describe(&smtp)
    );

    let mut auto = args.to_vec();
    auto.extend(["--via", "auto"]);
    let sent = m365mail(work, &auto, None);
    assert!(sent.status.success(), "{}", describe(&sent));
    let result = &lines(&sent)[0];
    assert_eq!(result["via"], "graph", "{result}");
    assert_eq!(result["fallback_from"]["reply"], "535 5.7.139", "{result}");
    assert!(
        String::from_utf8_lossy(&sent.stderr).contains("SMTP AUTH is off"),
        "{}",
        describe(&sent)
    );
}
