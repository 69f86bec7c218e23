//! The same SMTP code against real servers nobody here wrote: Debian's Postfix submission (STARTTLS, and
//! implicit TLS) taking AUTH XOAUTH2 through Dovecot SASL and delivering by LMTP into Dovecot, with tokens
//! from the recipe's token server (scripts/realservers.sh; `scripts/test.sh` starts it with Postfix and
//! exports `REALSERVERS_*`). Every message is read back over POP3 with m365mail. Ignored by plain
//! `cargo test`; a missing server is a failure, not a skip.

use std::time::Duration;

use m365mail::auth::{
    Access, Authority, ClientCredential, ClientOptions, Cloud, Scopes, Target, TokenClient,
};
use m365mail::endpoint::{HostPort, MailEndpoint, TlsMode};
use m365mail::mime::{self, Mailbox, Outgoing, OutgoingPart};
use m365mail::pop3::{Pop3Connection, Pop3Options};
use m365mail::smtp::{Rejection, SmtpOptions, SmtpSender, Submit as _};
use m365mail::tls::TlsTrust;
use m365mail::{Classified as _, ErrorClass, Secret};

/// One test at a time: Dovecot 2.3's auth process can crash when an oauth2 failure and another sign-in are
/// validated at once (see pop3_dovecot.rs).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: start the real servers with scripts/realservers.sh start and eval \"$(scripts/realservers.sh env)\" (scripts/test.sh does both)")
    })
}

fn user(tag: &str) -> String {
    format!("{tag}-{}@example.test", std::process::id())
}

async fn token(user: &str, target: Target) -> Secret {
    let authority = Authority::custom(
        &env("REALSERVERS_AUTHORITY"),
        Some(env("REALSERVERS_TENANT_ID").parse().unwrap()),
    )
    .unwrap();
    TokenClient::new(
        authority,
        env("REALSERVERS_CLIENT_ID"),
        ClientCredential::Public,
        ClientOptions::default(),
    )
    .unwrap()
    .password(
        user,
        &Secret::new("any-password"),
        &Scopes::for_target(target, Access::Delegated, &Cloud::Global),
    )
    .await
    .unwrap()
    .access_token
}

fn trust() -> TlsTrust {
    TlsTrust::system()
        .with_ca_file(std::path::Path::new(&env("REALSERVERS_CA_FILE")))
        .unwrap()
        .extra_only()
}

fn smtp(tls: TlsMode) -> SmtpOptions {
    let port = match tls {
        TlsMode::Starttls => env("REALSERVERS_SMTP_SUBMISSION_PORT"),
        TlsMode::Implicit => env("REALSERVERS_SMTPS_PORT"),
    };
    SmtpOptions::new(
        MailEndpoint {
            address: HostPort::parse("smtp", &format!("localhost:{port}")).unwrap(),
            tls,
        },
        trust(),
    )
}

fn message(from: &str, n: u32) -> Outgoing {
    Outgoing {
        from: Some(Mailbox {
            name: Some("Real Server Test".into()),
            address: Some(from.into()),
        }),
        to: vec![Mailbox {
            name: None,
            address: Some(from.into()),
        }],
        subject: Some(format!("Postfix run {n} — ünïcödé")),
        text: Some(format!("Message {n}.\r\n.A line with a leading dot\r\n")),
        parts: vec![OutgoingPart {
            name: "data.bin".into(),
            content_type: mime::content_type_for("data.bin").into(),
            data: (0..=255u8).cycle().take(5_000 + n as usize).collect(),
            content_id: None,
        }],
        ..Outgoing::default()
    }
}

/// Every message in `user`'s maildrop, waiting (bounded) until `count` have been delivered.
async fn read_back(user: &str, count: usize) -> Vec<Vec<u8>> {
    let token = token(user, Target::Pop).await;
    let options = Pop3Options::new(
        MailEndpoint {
            address: HostPort::parse(
                "pop",
                &format!("localhost:{}", env("REALSERVERS_POP3S_PORT")),
            )
            .unwrap(),
            tls: TlsMode::Implicit,
        },
        trust(),
    );
    // Postfix queues, then delivers by LMTP: poll for up to 20 s.
    for _ in 0..100 {
        let mut pop = Pop3Connection::connect(&options).await.unwrap();
        pop.authenticate(user, &token).await.unwrap();
        let ids = pop.unique_ids().await.unwrap();
        if ids.len() >= count {
            let mut messages = Vec::new();
            for (number, _) in ids {
                let mut body = Vec::new();
                pop.retrieve(number, &mut body).await.unwrap();
                messages.push(body);
            }
            pop.quit().await.unwrap();
            return messages;
        }
        pop.quit().await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("{count} messages were not delivered to {user} within 20 s");
}

#[tokio::test]
#[ignore = "needs Postfix, Dovecot and the token server (scripts/realservers.sh; scripts/test.sh starts them)"]
async fn a_batch_over_starttls_and_one_over_implicit_tls_arrive_intact() {
    let _one_at_a_time = SERIAL.lock().await;
    let user = user("smtp-batch");
    let smtp_token = token(&user, Target::Smtp).await;
    let sender = SmtpSender::new(&smtp(TlsMode::Starttls), &user, &smtp_token).unwrap();
    let mut built = Vec::new();
    for n in 0..5 {
        let m = mime::build(&message(&user, n), 1_780_000_000).unwrap();
        let submitted = sender.submit(&m).await.unwrap();
        assert!(
            submitted.reply.starts_with("250 2.0.0 Ok: queued as "),
            "{}",
            submitted.reply
        );
        built.push(m);
    }
    assert_eq!(sender.connections_opened(), 1);
    sender.close().await;
    let implicit = SmtpSender::new(&smtp(TlsMode::Implicit), &user, &smtp_token).unwrap();
    let m = mime::build(&message(&user, 5), 1_780_000_000).unwrap();
    implicit.submit(&m).await.unwrap();
    built.push(m);
    implicit.close().await;

    // Postfix and Dovecot only prepend trace fields (Received, Return-Path, Delivered-To): every message
    // ends with exactly the bytes that were built, and parses back to the same subject and attachment.
    let received = read_back(&user, built.len()).await;
    assert_eq!(received.len(), built.len());
    for m in &built {
        let got = received
            .iter()
            .find(|r| r.ends_with(&m.bytes))
            .unwrap_or_else(|| panic!("{} did not arrive intact", m.message_id));
        let parsed = mime::parse(got).unwrap();
        assert_eq!(parsed.message_id.as_deref(), Some(m.message_id.as_str()));
        assert!(parsed.subject.unwrap().ends_with("— ünïcödé"));
        assert_eq!(parsed.attachments.len(), 1);
    }
}

#[tokio::test]
#[ignore = "needs Postfix, Dovecot and the token server (scripts/realservers.sh; scripts/test.sh starts them)"]
async fn a_token_without_the_smtp_scope_is_refused_as_auth_failed() {
    let _one_at_a_time = SERIAL.lock().await;
    let user = user("smtp-refused");
    let pop_only = token(&user, Target::Pop).await;
    let sender = SmtpSender::new(&smtp(TlsMode::Starttls), &user, &pop_only).unwrap();
    let err = sender
        .submit(&mime::build(&message(&user, 0), 1_780_000_000).unwrap())
        .await
        .unwrap_err();
    // Postfix (through Dovecot SASL) answers with an error challenge, as Gmail does; Exchange with 535.
    assert_eq!(err.rejection(), Some(Rejection::AuthFailed), "{err:?}");
    assert_eq!(err.class(), ErrorClass::Admin);
    assert!(!format!("{err:?} {err}").contains(pop_only.expose()));
}
