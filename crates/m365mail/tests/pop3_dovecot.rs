//! The same POP3 code against a real server nobody here wrote: Debian's Dovecot on loopback, with tokens
//! from the recipe's token server through the password grant (scripts/realservers.sh; `scripts/test.sh`
//! starts it and exports `REALSERVERS_*`). Ignored by plain `cargo test`; a missing server is a failure, not
//! a skip.

use std::path::Path;
use std::process::Command;

use m365mail::auth::{
    Access, Authority, ClientCredential, ClientOptions, Cloud, Scopes, Target, TokenClient,
};
use m365mail::endpoint::{HostPort, MailEndpoint, TlsMode};
use m365mail::pop3::{Pop3Connection, Pop3Error, Pop3Options};
use m365mail::read::sink::DirSink;
use m365mail::read::{After, ReadOptions, read_pop};
use m365mail::store::{CheckpointStore, SourceKey};
use m365mail::time::SystemClock;
use m365mail::tls::TlsTrust;
use m365mail::{Secret, auth::TokenResponse};

/// One Dovecot test at a time: Dovecot 2.3's auth process can crash (signal 11) when an oauth2 failure and
/// another sign-in are validated at once, which would fail an unrelated test.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: start the real servers with scripts/realservers.sh start and eval \"$(scripts/realservers.sh env)\" (scripts/test.sh does both)")
    })
}

/// A fresh user per test (Dovecot creates the maildir on delivery), with `count` seeded messages.
fn seeded_user(tag: &str, count: u32) -> String {
    let user = format!("{tag}-{}@example.test", std::process::id());
    let seed = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/realservers/seed.py");
    let out = Command::new("python3")
        .arg(seed)
        .args([
            "--dir",
            &env("REALSERVERS_DIR"),
            "--user",
            &user,
            "--count",
            &count.to_string(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "seed.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    user
}

async fn token(user: &str, target: Target) -> TokenResponse {
    let authority = Authority::custom(
        &env("REALSERVERS_AUTHORITY"),
        Some(env("REALSERVERS_TENANT_ID").parse().unwrap()),
    )
    .unwrap();
    let client = TokenClient::new(
        authority,
        env("REALSERVERS_CLIENT_ID"),
        ClientCredential::Public,
        ClientOptions::default(),
    )
    .unwrap();
    client
        .password(
            user,
            &Secret::new("any-password"),
            &Scopes::for_target(target, Access::Delegated, &Cloud::Global),
        )
        .await
        .unwrap()
}

fn options(tls: TlsMode) -> Pop3Options {
    let port = match tls {
        TlsMode::Implicit => env("REALSERVERS_POP3S_PORT"),
        TlsMode::Starttls => env("REALSERVERS_POP3_PORT"),
    };
    let trust = TlsTrust::system()
        .with_ca_file(Path::new(&env("REALSERVERS_CA_FILE")))
        .unwrap()
        .extra_only();
    Pop3Options::new(
        MailEndpoint {
            // The server certificate names localhost and 127.0.0.1.
            address: HostPort::parse("pop", &format!("localhost:{port}")).unwrap(),
            tls,
        },
        trust,
    )
}

#[tokio::test]
#[ignore = "needs Dovecot and the token server (scripts/realservers.sh; scripts/test.sh starts them)"]
async fn implicit_tls_and_stls_sign_in_list_and_retrieve() {
    let _one_at_a_time = SERIAL.lock().await;
    let user = seeded_user("pop-basic", 5);
    let token = token(&user, Target::Pop).await.access_token;
    for tls in [TlsMode::Implicit, TlsMode::Starttls] {
        let mut pop = Pop3Connection::connect(&options(tls)).await.unwrap();
        assert_eq!(pop.greeting(), "Dovecot (Debian) ready.");
        let capabilities = pop.capabilities().await.unwrap();
        assert!(
            capabilities.iter().any(|c| c == "SASL XOAUTH2 OAUTHBEARER"),
            "{capabilities:?}"
        );
        assert!(
            !capabilities.iter().any(|c| c == "STLS"),
            "STLS is gone once TLS is up: {capabilities:?}"
        );
        pop.authenticate(&user, &token).await.unwrap();
        let (count, total) = pop.stat().await.unwrap();
        assert_eq!(count, 5);
        let ids = pop.unique_ids().await.unwrap();
        assert_eq!(ids.len(), 5);
        let mut raw = Vec::new();
        let size = pop.retrieve(1, &mut raw).await.unwrap();
        let sizes = pop.sizes().await.unwrap();
        assert_eq!(sizes.iter().map(|(_, s)| s).sum::<u64>(), total);
        assert_eq!(size, sizes[0].1, "RETR gives LIST's octets ({tls})");
        assert!(
            raw.starts_with(b"Return-Path:"),
            "Dovecot's LMTP adds the trace fields"
        );
        pop.quit().await.unwrap();
    }
}

#[tokio::test]
#[ignore = "needs Dovecot and the token server (scripts/realservers.sh; scripts/test.sh starts them)"]
async fn a_token_for_another_protocol_gets_the_challenge_then_the_failure() {
    let _one_at_a_time = SERIAL.lock().await;
    let user = seeded_user("pop-refused", 1);
    let imap_only = token(&user, Target::Imap).await.access_token;
    let mut pop = Pop3Connection::connect(&options(TlsMode::Implicit))
        .await
        .unwrap();
    let err = pop.authenticate(&user, &imap_only).await.unwrap_err();
    let Pop3Error::AuthRefused {
        text, challenge, ..
    } = &err
    else {
        panic!("{err:?}");
    };
    assert_eq!(text, "[AUTH] Authentication failed.");
    assert_eq!(
        challenge.as_deref(),
        Some(r#"{"status":"401","schemes":"bearer","scope":"mail"}"#)
    );
    assert!(!format!("{err:?}").contains(imap_only.expose()));
}

#[tokio::test]
#[ignore = "needs Dovecot and the token server (scripts/realservers.sh; scripts/test.sh starts them)"]
async fn the_pipeline_reads_once_and_deletes() {
    let _one_at_a_time = SERIAL.lock().await;
    let user = seeded_user("pop-pipeline", 40);
    let token = token(&user, Target::Pop).await.access_token;
    let work = tempfile::tempdir().unwrap();
    let mut store = CheckpointStore::open(&work.path().join("state.sqlite")).unwrap();
    let mut sink = DirSink::new(&work.path().join("out"), true).unwrap();
    let connect = || async {
        let mut pop = Pop3Connection::connect(&options(TlsMode::Starttls))
            .await
            .unwrap();
        pop.authenticate(&user, &token).await.unwrap();
        pop
    };
    let pop = connect().await;
    let source = SourceKey {
        protocol: "pop3".into(),
        server: pop.endpoint().into(),
        account: user.clone(),
        folder: "INBOX".into(),
    };
    let first = ReadOptions {
        limit: Some(15),
        ..ReadOptions::default()
    };
    let summary = read_pop(
        pop,
        &source,
        &mut store,
        &mut sink,
        &first,
        &SystemClock,
        &mut |_| {},
    )
    .await
    .unwrap();
    assert_eq!((summary.listed, summary.records), (40, 15));
    let rest = ReadOptions {
        then: After::Delete,
        ..ReadOptions::default()
    };
    let summary = read_pop(
        connect().await,
        &source,
        &mut store,
        &mut sink,
        &rest,
        &SystemClock,
        &mut |_| {},
    )
    .await
    .unwrap();
    assert_eq!((summary.records, summary.deleted), (25, 25));
    let emls = std::fs::read_dir(work.path().join("out"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "eml")
        })
        .count();
    assert_eq!(emls, 40);
    let mut pop = connect().await;
    assert_eq!(
        pop.stat().await.unwrap().0,
        15,
        "the 25 read with --then delete are gone"
    );
    pop.quit().await.unwrap();
}
