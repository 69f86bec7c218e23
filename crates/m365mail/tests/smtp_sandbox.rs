//! The SMTP driver (`m365mail::smtp`, lettre underneath) against the sandbox's submission service, with
//! tokens the sandbox issues: STARTTLS and implicit TLS, a batch over one sender, the message read back over
//! POP3 byte for byte, and Exchange's refusals as typed errors.

use m365mail::auth::{
    Access, Authority, ClientCredential, ClientOptions, Cloud, Scopes, Target, TokenClient,
};
use m365mail::endpoint::{HostPort, MailEndpoint, TlsMode};
use m365mail::mime::{self, Mailbox, Outgoing, OutgoingPart};
use m365mail::pop3::{Pop3Connection, Pop3Options};
use m365mail::smtp::{Rejection, SmtpError, SmtpOptions, SmtpSender, Submit as _};
use m365mail::tls::TlsTrust;
use m365mail::transport::TransportKind;
use m365mail::{Classified as _, ErrorClass, Secret};
use m365mail_sandbox::{Sandbox, SandboxConfig, demo};

async fn sandbox() -> Sandbox {
    Sandbox::start(SandboxConfig {
        smtp: vec!["127.0.0.1:0".parse().unwrap()],
        smtps: vec!["127.0.0.1:0".parse().unwrap()],
        pop3s: vec!["127.0.0.1:0".parse().unwrap()],
        ..SandboxConfig::default()
    })
    .await
    .unwrap()
}

fn endpoint(sbx: &Sandbox, service: &str, tls: TlsMode) -> MailEndpoint {
    let addr = sbx
        .listeners()
        .iter()
        .find(|l| l.service == service)
        .unwrap()
        .addr;
    MailEndpoint {
        address: HostPort::parse("smtp", &addr.to_string()).unwrap(),
        tls,
    }
}

fn trust(sbx: &Sandbox) -> TlsTrust {
    TlsTrust::system()
        .with_ca_pem(sbx.ca_pem(), "sandbox CA")
        .unwrap()
        .extra_only()
}

fn starttls(sbx: &Sandbox) -> SmtpOptions {
    SmtpOptions::new(endpoint(sbx, "smtp", TlsMode::Starttls), trust(sbx))
}

async fn user_token(sbx: &Sandbox, user: &str, password: &str, target: Target) -> Secret {
    TokenClient::new(
        Authority::new(
            Cloud::custom(sbx.base_url().as_str()).unwrap(),
            demo::TENANT_ID.parse().unwrap(),
        ),
        demo::PUBLIC_APP_ID,
        ClientCredential::Public,
        ClientOptions {
            extra_ca_pem: Some(sbx.ca_pem().to_owned()),
            ..ClientOptions::default()
        },
    )
    .unwrap()
    .password(
        user,
        &Secret::new(password),
        &Scopes::for_target(target, Access::Delegated, &Cloud::Global),
    )
    .await
    .unwrap()
    .access_token
}

async fn adele(sbx: &Sandbox, target: Target) -> Secret {
    user_token(sbx, demo::USER_UPN, demo::USER_PASSWORD, target).await
}

fn mailbox(address: &str) -> Mailbox {
    Mailbox {
        name: None,
        address: Some(address.to_owned()),
    }
}

fn report(n: usize) -> Outgoing {
    Outgoing {
        from: Some(Mailbox {
            name: Some("Adele Vance".into()),
            address: Some(demo::USER_UPN.into()),
        }),
        to: vec![mailbox(demo::SECOND_USER_UPN)],
        bcc: vec![mailbox("archive@fabrikam.example")],
        subject: Some(format!("Rapport n°{n} — chiffres")),
        text: Some(format!("Report {n}.\r\n.A line that starts with a dot\r\n")),
        html: Some(format!("<p>Report <b>{n}</b></p>")),
        parts: vec![OutgoingPart {
            name: "figures.csv".into(),
            content_type: mime::content_type_for("figures.csv").into(),
            data: format!("quarter,total\nQ{n},{}\n", n * 1000).into_bytes(),
            content_id: None,
        }],
        ..Outgoing::default()
    }
}

async fn alex_messages(sbx: &Sandbox) -> Vec<Vec<u8>> {
    let token = user_token(
        sbx,
        demo::SECOND_USER_UPN,
        demo::SECOND_USER_PASSWORD,
        Target::Pop,
    )
    .await;
    let mut pop = Pop3Connection::connect(&Pop3Options::new(
        endpoint(sbx, "pop3s", TlsMode::Implicit),
        trust(sbx),
    ))
    .await
    .unwrap();
    pop.authenticate(demo::SECOND_USER_UPN, &token)
        .await
        .unwrap();
    let mut messages = Vec::new();
    for (number, _) in pop.unique_ids().await.unwrap() {
        let mut body = Vec::new();
        pop.retrieve(number, &mut body).await.unwrap();
        messages.push(body);
    }
    pop.quit().await.unwrap();
    messages
}

#[tokio::test]
async fn a_batch_over_starttls_arrives_byte_for_byte() {
    let sbx = sandbox().await;
    let sender = SmtpSender::new(
        &starttls(&sbx),
        demo::USER_UPN,
        &adele(&sbx, Target::Smtp).await,
    )
    .unwrap();
    let mut built = Vec::new();
    for n in 1..=3 {
        let message = mime::build(&report(n), 1_780_000_000 + n as i64).unwrap();
        let submitted = sender.submit(&message).await.unwrap();
        assert_eq!(submitted.message_id, message.message_id);
        assert!(
            submitted
                .reply
                .starts_with(&format!("250 2.0.0 OK <{}> [Hostname=", message.message_id)),
            "{}",
            submitted.reply
        );
        built.push(message);
    }
    assert_eq!(
        sender.connections_opened(),
        1,
        "one connection for the batch"
    );

    // Alex reads the three (after the welcome message) exactly as built; the Bcc never shows.
    let read = alex_messages(&sbx).await;
    assert_eq!(read.len(), 4, "the welcome message and three reports");
    for (message, bytes) in built.iter().zip(&read[1..]) {
        assert_eq!(&message.bytes, bytes);
        let parsed = mime::parse(bytes).unwrap();
        assert!(parsed.subject.unwrap().starts_with("Rapport n°"));
        assert_eq!(parsed.attachments.len(), 1);
        assert!(!String::from_utf8_lossy(bytes).contains("archive@fabrikam.example"));
    }
    // The Bcc went to the outbox (not a tenant address), and Adele's Sent Items has a copy of each.
    let outbox = sbx.admin().outbox();
    assert_eq!(outbox.len(), 3);
    assert!(
        outbox
            .iter()
            .all(|(_, to, _)| to == &["archive@fabrikam.example"])
    );
    let folders = sbx.admin().mailbox_folders(demo::USER_UPN);
    let sent = folders.iter().find(|f| f.name == "Sent Items").unwrap();
    assert_eq!(sent.messages, 3);
}

#[tokio::test]
async fn implicit_tls_works_and_an_untrusted_server_is_refused() {
    let sbx = sandbox().await;
    let token = adele(&sbx, Target::Smtp).await;
    let implicit = SmtpOptions::new(endpoint(&sbx, "smtps", TlsMode::Implicit), trust(&sbx));
    let sender = SmtpSender::new(&implicit, demo::USER_UPN, &token).unwrap();
    let message = mime::build(&report(7), 1_780_000_000).unwrap();
    sender.submit(&message).await.unwrap();

    // Another CA than the sandbox's: the TLS check fails, nothing is sent.
    let other = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let other_ca = params.self_signed(&other).unwrap().pem();
    let untrusted = SmtpOptions::new(
        endpoint(&sbx, "smtp", TlsMode::Starttls),
        TlsTrust::system()
            .with_ca_pem(&other_ca, "other CA")
            .unwrap()
            .extra_only(),
    );
    let err = SmtpSender::new(&untrusted, demo::USER_UPN, &token)
        .unwrap()
        .submit(&message)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, SmtpError::Transport(t) if t.kind() == TransportKind::Tls),
        "{err:?}"
    );
    assert!(err.cause().contains("not trusted"), "{}", err.cause());
    assert!(err.remedy().contains("--ca-file"), "{}", err.remedy());
    assert_eq!(
        sbx.admin().outbox().len(),
        1,
        "only the implicit-TLS message"
    );
}

#[tokio::test]
async fn exchange_refusals_become_typed_errors_with_remedies() {
    let sbx = sandbox().await;
    let smtp_token = adele(&sbx, Target::Smtp).await;
    let message = mime::build(&report(1), 1_780_000_000).unwrap();

    // A POP token is not an SMTP token: 535 5.7.3.
    let pop_token = adele(&sbx, Target::Pop).await;
    let err = SmtpSender::new(&starttls(&sbx), demo::USER_UPN, &pop_token)
        .unwrap()
        .submit(&message)
        .await
        .unwrap_err();
    assert_eq!(err.rejection(), Some(Rejection::AuthFailed), "{err:?}");
    assert_eq!(err.class(), ErrorClass::Admin);
    assert!(err.remedy().contains("SMTP.Send"), "{}", err.remedy());
    assert!(!format!("{err:?} {err}").contains(pop_token.expose()));

    // Sending as the shared mailbox without SendAs: 554 5.2.252 after the data.
    let mut as_support = report(2);
    as_support.from = Some(mailbox(demo::SHARED_MAILBOX));
    let sender = SmtpSender::new(&starttls(&sbx), demo::USER_UPN, &smtp_token).unwrap();
    let err = sender
        .submit(&mime::build(&as_support, 1_780_000_000).unwrap())
        .await
        .unwrap_err();
    assert_eq!(err.rejection(), Some(Rejection::SendAsDenied), "{err:?}");
    assert!(err.remedy().contains("Add-RecipientPermission"));
    // The refusal came after the data, on a signed-in connection: the next message gets a fresh one.
    sender.submit(&message).await.unwrap();
    assert_eq!(sender.connections_opened(), 2);
    sender.close().await;
    match &err {
        SmtpError::Refused { code, text, .. } => {
            assert_eq!(*code, 554);
            assert!(text.starts_with("5.2.252 SendAsDenied;"), "{text}");
        }
        other => panic!("{other:?}"),
    }

    // SMTP AUTH off for the tenant: 535 5.7.139, with both PowerShell fixes.
    sbx.admin()
        .update_tenant_model(|model| model.tenants[0].protocols.smtp_auth = false);
    let err = SmtpSender::new(&starttls(&sbx), demo::USER_UPN, &smtp_token)
        .unwrap()
        .submit(&message)
        .await
        .unwrap_err();
    assert_eq!(
        err.rejection(),
        Some(Rejection::SmtpAuthDisabled),
        "{err:?}"
    );
    assert!(
        err.remedy()
            .contains("Set-TransportConfig -SmtpClientAuthenticationDisabled $false")
    );
    assert!(err.remedy().contains("Set-CASMailbox"));
    assert_eq!(
        sbx.admin().outbox().len(),
        1,
        "only the message sent before SMTP AUTH was switched off"
    );
}

#[tokio::test]
async fn a_closed_port_is_a_connect_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let options = SmtpOptions::new(
        MailEndpoint {
            address: HostPort::parse("smtp", &addr.to_string()).unwrap(),
            tls: TlsMode::Starttls,
        },
        TlsTrust::system(),
    );
    let err = SmtpSender::new(&options, demo::USER_UPN, &Secret::new("t"))
        .unwrap()
        .submit(&mime::build(&report(1), 1_780_000_000).unwrap())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, SmtpError::Transport(t) if matches!(t.kind(), TransportKind::Connect | TransportKind::Io)),
        "{err:?}"
    );
    assert_eq!(err.class(), ErrorClass::Transient, "{err:?}");
}
