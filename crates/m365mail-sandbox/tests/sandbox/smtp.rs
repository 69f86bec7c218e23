//! The sandbox's SMTP submission service driven as clients do: Exchange's greeting and EHLO lines, STARTTLS,
//! AUTH XOAUTH2 with sandbox tokens, delivery into tenant mailboxes (and Sent Items), the outbox for others,
//! SendAs refused after the data, SMTP AUTH switched off — and Python's smtplib unchanged.

use base64::Engine as _;
use m365mail_sandbox::{SandboxConfig, demo};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};

use crate::common::{TestSandbox, mail_tls, start_with};

type Tls = BufReader<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

async fn start_smtp() -> TestSandbox {
    start_with(SandboxConfig {
        smtp: vec!["127.0.0.1:0".parse().unwrap()],
        smtps: vec!["127.0.0.1:0".parse().unwrap()],
        ..SandboxConfig::default()
    })
    .await
}

fn addr(sandbox: &TestSandbox, service: &str) -> std::net::SocketAddr {
    sandbox
        .sandbox
        .listeners()
        .iter()
        .find(|l| l.service == service)
        .unwrap()
        .addr
}

/// Reads one reply (all its lines).
async fn reply(stream: &mut Tls) -> Vec<String> {
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        stream.read_line(&mut line).await.unwrap();
        let last = line.len() < 4 || line.as_bytes()[3] == b' ' || line.is_empty();
        lines.push(line);
        if last {
            return lines;
        }
    }
}

async fn send(stream: &mut Tls, line: &str) -> Vec<String> {
    stream
        .get_mut()
        .write_all(format!("{line}\r\n").as_bytes())
        .await
        .unwrap();
    reply(stream).await
}

async fn token(sandbox: &TestSandbox, scope: &str) -> String {
    sandbox
        .user_ropc(demo::PUBLIC_APP_ID, scope)
        .await
        .assert_ok()["access_token"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn xoauth2(user: &str, token: &str) -> String {
    base64::engine::general_purpose::STANDARD
        .encode(format!("user={user}\x01auth=Bearer {token}\x01\x01"))
}

async fn smtps(sandbox: &TestSandbox) -> (Tls, Vec<String>) {
    let tcp = tokio::net::TcpStream::connect(addr(sandbox, "smtps"))
        .await
        .unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let tls = mail_tls(&sandbox.sandbox).connect(name, tcp).await.unwrap();
    let mut stream = BufReader::new(tls);
    let greeting = reply(&mut stream).await;
    (stream, greeting)
}

#[tokio::test]
async fn submits_delivers_and_refuses_as_exchange_does() {
    let sandbox = start_smtp().await;
    let smtp_token = token(&sandbox, "https://outlook.office.com/SMTP.Send").await;
    let (mut smtp, greeting) = smtps(&sandbox).await;
    assert!(
        greeting[0].starts_with(
            "220 SANDBOX01.contoso.sandbox.m365mail.local Microsoft ESMTP MAIL Service ready at "
        ),
        "{greeting:?}"
    );
    let ehlo = send(&mut smtp, "EHLO client.example").await;
    assert_eq!(ehlo.len(), 10, "{ehlo:?}");
    assert_eq!(ehlo[5], "250-AUTH LOGIN XOAUTH2\r\n");
    // A POP token is not an SMTP token.
    let pop_token = token(&sandbox, demo::POP_SCOPE).await;
    let refused = send(
        &mut smtp,
        &format!("AUTH XOAUTH2 {}", xoauth2(demo::USER_UPN, &pop_token)),
    )
    .await;
    assert!(
        refused[0].starts_with("535 5.7.3 Authentication unsuccessful ["),
        "{refused:?}"
    );
    let ok = send(
        &mut smtp,
        &format!("AUTH XOAUTH2 {}", xoauth2(demo::USER_UPN, &smtp_token)),
    )
    .await;
    assert_eq!(ok, ["235 2.7.0 Authentication successful\r\n"]);
    assert_eq!(
        send(&mut smtp, &format!("MAIL FROM:<{}>", demo::USER_UPN)).await,
        ["250 2.1.0 Sender OK\r\n"]
    );
    for to in [demo::SECOND_USER_UPN, "partner@fabrikam.example"] {
        assert_eq!(
            send(&mut smtp, &format!("RCPT TO:<{to}>")).await,
            ["250 2.1.5 Recipient OK\r\n"]
        );
    }
    assert_eq!(
        send(&mut smtp, "DATA").await,
        ["354 Start mail input; end with <CRLF>.<CRLF>\r\n"]
    );
    let message = "From: adele@contoso.onmicrosoft.com\r\nSubject: quarterly\r\nMessage-ID: <q1@contoso.onmicrosoft.com>\r\n\r\n..figures attached\r\n.";
    let done = send(&mut smtp, message).await;
    assert_eq!(
        done,
        [
            "250 2.0.0 OK <q1@contoso.onmicrosoft.com> [Hostname=SANDBOX01.contoso.sandbox.m365mail.local]\r\n"
        ]
    );
    // Alex has it in his Inbox (POP3 and IMAP read it), Adele in Sent Items, the partner's copy is in the outbox.
    let alex = sandbox
        .sandbox
        .admin()
        .mailbox_folders(demo::SECOND_USER_UPN);
    assert_eq!(alex[0].messages, 2, "the welcome message and this one");
    let adele = sandbox.sandbox.admin().mailbox_folders(demo::USER_UPN);
    assert_eq!(adele[1].name, "Sent Items");
    assert_eq!(adele[1].messages, 1);
    let outbox = sandbox.sandbox.admin().outbox();
    assert_eq!(outbox.len(), 1);
    assert_eq!(outbox[0].1, ["partner@fabrikam.example"]);
    assert!(String::from_utf8_lossy(&outbox[0].2).contains("\r\n.figures attached\r\n"));

    // Sending as someone else: accepted up to the data, then SendAsDenied, as Exchange.
    send(&mut smtp, "MAIL FROM:<support@contoso.onmicrosoft.com>").await;
    send(&mut smtp, &format!("RCPT TO:<{}>", demo::SECOND_USER_UPN)).await;
    send(&mut smtp, "DATA").await;
    let denied = send(&mut smtp, "Subject: as support\r\n\r\nx\r\n.").await;
    assert!(
        denied[0].starts_with(&format!(
            "554 5.2.252 SendAsDenied; {} not allowed to send as support@contoso.onmicrosoft.com;",
            demo::USER_UPN
        )),
        "{denied:?}"
    );
    assert_eq!(
        send(&mut smtp, "QUIT").await,
        ["221 2.0.0 Service closing transmission channel\r\n"]
    );

    // SMTP AUTH switched off for the tenant: 535 5.7.139, even with a good token.
    sandbox
        .sandbox
        .admin()
        .update_tenant_model(|model| model.tenants[0].protocols.smtp_auth = false);
    let (mut off, _) = smtps(&sandbox).await;
    send(&mut off, "EHLO client.example").await;
    let disabled = send(
        &mut off,
        &format!("AUTH XOAUTH2 {}", xoauth2(demo::USER_UPN, &smtp_token)),
    )
    .await;
    assert!(
        disabled[0].starts_with("535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant."),
        "{disabled:?}"
    );
}

/// Python's smtplib, unchanged, over STARTTLS (tests/smtplib/smtp_session.py).
#[tokio::test]
#[ignore = "needs python3 (run by scripts/test.sh)"]
async fn python_smtplib_sends_over_starttls() {
    let sandbox = start_smtp().await;
    let smtp_token = token(&sandbox, "https://outlook.office.com/SMTP.Send").await;
    let seen = crate::common::python_session(
        &sandbox,
        "smtplib/smtp_session.py",
        addr(&sandbox, "smtp").port(),
        demo::USER_UPN,
        &smtp_token,
        &[demo::SECOND_USER_UPN],
    )
    .await;
    assert!(
        seen["ehlo_before"]
            .as_array()
            .unwrap()
            .contains(&"STARTTLS".into()),
        "{seen}"
    );
    assert!(!seen["ehlo_before"].to_string().contains("AUTH"), "{seen}");
    assert_eq!(
        seen["starttls"],
        serde_json::json!([220, "2.0.0 SMTP server ready"])
    );
    assert!(
        seen["ehlo_after"]
            .as_array()
            .unwrap()
            .contains(&"AUTH LOGIN XOAUTH2".into()),
        "{seen}"
    );
    assert_eq!(
        seen["auth"],
        serde_json::json!([235, "2.7.0 Authentication successful"])
    );
    assert_eq!(seen["refused"], serde_json::json!({}));
    assert_eq!(
        sandbox
            .sandbox
            .admin()
            .mailbox_folders(demo::SECOND_USER_UPN)[0]
            .messages,
        2
    );
    assert_eq!(
        sandbox.sandbox.admin().outbox()[0].1,
        ["someone@example.test"]
    );
}

/// curl, unchanged: `smtp://` with `--ssl-reqd` (STARTTLS) and `--oauth2-bearer` (XOAUTH2) submits a message
/// that lands in Alex's Inbox, with a copy in Adele's Sent Items.
#[tokio::test]
#[ignore = "needs curl (run by scripts/test.sh)"]
async fn curl_submits_over_starttls_with_a_bearer_token() {
    let sandbox = start_smtp().await;
    let smtp_token = token(&sandbox, "https://outlook.office.com/SMTP.Send").await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    sandbox.sandbox.write_ca(&ca).unwrap();
    let message = format!(
        "From: {}\r\nTo: {}\r\nSubject: sent by curl\r\nMessage-ID: <curl-1@contoso.onmicrosoft.com>\r\n\r\nHello from curl.\r\n",
        demo::USER_UPN,
        demo::SECOND_USER_UPN
    );
    let file = dir.path().join("message.eml");
    std::fs::write(&file, &message).unwrap();
    let mut curl = std::process::Command::new("curl");
    curl.args(["-sS", "--ssl-reqd", "--cacert"])
        .arg(&ca)
        .args([
            "--login-options",
            "AUTH=XOAUTH2",
            "--oauth2-bearer",
            &smtp_token,
        ])
        .args(["-u", &format!("{}:", demo::USER_UPN)])
        .args([
            "--mail-from",
            demo::USER_UPN,
            "--mail-rcpt",
            demo::SECOND_USER_UPN,
        ])
        .arg("-T")
        .arg(&file)
        .arg(format!(
            "smtp://localhost:{}",
            addr(&sandbox, "smtp").port()
        ));
    crate::common::run_ok(curl).await;
    let alex = sandbox
        .sandbox
        .admin()
        .mailbox_folders(demo::SECOND_USER_UPN);
    assert_eq!(alex[0].messages, 2, "the welcome message and curl's");
    let sent = sandbox.sandbox.admin().mailbox_folders(demo::USER_UPN);
    assert_eq!(sent[1].name, "Sent Items");
    assert_eq!(sent[1].messages, 1);
}

/// Bounds, as for POP3 and IMAP: a command line over 16 KiB is refused and the session closed, and bytes
/// that never complete a command — here, a message body trickled after DATA — do not hold the connection past
/// the command deadline.
#[tokio::test]
async fn a_long_line_is_refused_and_a_trickled_body_is_closed() {
    let sandbox = start_with(SandboxConfig {
        smtps: vec!["127.0.0.1:0".parse().unwrap()],
        mail_limits: m365mail_sandbox::MailLimits {
            command_timeout: std::time::Duration::from_millis(700),
            ..Default::default()
        },
        ..SandboxConfig::default()
    })
    .await;
    let smtp_token = token(&sandbox, "https://outlook.office.com/SMTP.Send").await;
    let (mut smtp, _) = smtps(&sandbox).await;
    let long = format!("EHLO {}", "a".repeat(20_000));
    assert_eq!(
        send(&mut smtp, &long).await,
        ["500 5.3.3 Line too long\r\n"]
    );
    // The core ends the session after it (it cannot tell where the next command starts).
    let mut after = String::new();
    assert_eq!(smtp.read_line(&mut after).await.unwrap(), 0, "{after:?}");
    let (mut smtp, _) = smtps(&sandbox).await;
    send(&mut smtp, "EHLO client.example").await;
    send(
        &mut smtp,
        &format!("AUTH XOAUTH2 {}", xoauth2(demo::USER_UPN, &smtp_token)),
    )
    .await;
    send(&mut smtp, &format!("MAIL FROM:<{}>", demo::USER_UPN)).await;
    send(&mut smtp, &format!("RCPT TO:<{}>", demo::SECOND_USER_UPN)).await;
    assert_eq!(
        send(&mut smtp, "DATA").await,
        ["354 Start mail input; end with <CRLF>.<CRLF>\r\n"]
    );
    let closed_after = crate::common::trickle_until_closed(&mut smtp).await;
    assert!(
        closed_after < std::time::Duration::from_secs(3),
        "{closed_after:?}"
    );
    assert_eq!(
        sandbox
            .sandbox
            .admin()
            .mailbox_folders(demo::SECOND_USER_UPN)[0]
            .messages,
        1,
        "nothing half-sent was delivered"
    );
}

/// Session faults through the admin API, as SMTP shows them: the next command refused with `451 4.3.2`, a
/// drop after N commands, a token expired early ending the signed-in session with `421 4.7.0` — once each.
#[tokio::test]
async fn session_faults_fire_once() {
    let sandbox = start_smtp().await;
    let smtp_token = token(&sandbox, demo::SMTP_SCOPE).await;
    let inject = |fault: serde_json::Value| {
        sandbox
            .http
            .post(sandbox.url("_sandbox/admin/faults/mail/smtp"))
            .json(&fault)
            .send()
    };
    let (mut stream, _) = smtps(&sandbox).await;
    inject(serde_json::json!({"fault": "fail-next"}))
        .await
        .unwrap();
    assert_eq!(
        send(&mut stream, "EHLO client.test").await,
        ["451 4.3.2 Temporary server error. Please try again later\r\n"]
    );
    assert!(
        send(&mut stream, "EHLO client.test")
            .await
            .last()
            .unwrap()
            .starts_with("250 ")
    );
    let auth = format!("AUTH XOAUTH2 {}", xoauth2(demo::USER_UPN, &smtp_token));
    assert!(send(&mut stream, &auth).await[0].starts_with("235 "));

    inject(serde_json::json!({"fault": "drop-after-commands", "commands": 1}))
        .await
        .unwrap();
    let (mut dropped, _) = smtps(&sandbox).await;
    assert!(
        send(&mut dropped, "EHLO client.test")
            .await
            .last()
            .unwrap()
            .starts_with("250 ")
    );
    assert_eq!(send(&mut dropped, "NOOP").await, [""], "closed, unanswered");

    inject(serde_json::json!({"fault": "expire-token"}))
        .await
        .unwrap();
    assert_eq!(
        send(&mut stream, &format!("MAIL FROM:<{}>", demo::USER_UPN)).await,
        ["421 4.7.0 Session invalidated - AccessTokenExpired\r\n"]
    );
    assert_eq!(reply(&mut stream).await, [""], "the connection ends");
}
