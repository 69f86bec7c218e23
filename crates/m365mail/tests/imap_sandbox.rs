//! The IMAP client (`m365mail::imap`) against the sandbox's IMAP service, with tokens the sandbox issues:
//! sign-in (SASL-IR and continuation), folders with counts, SELECT, searches, metadata and bodies, flags,
//! MOVE, COPY, EXPUNGE, and the refusals Exchange gives.

use m365mail::auth::{
    Access, Authority, ClientCredential, ClientOptions, Cloud, Scopes, Target, TokenClient,
};
use m365mail::endpoint::{HostPort, MailEndpoint, TlsMode};
use m365mail::imap::{ImapClient as _, ImapConnection, ImapError, ImapOptions, SearchQuery};
use m365mail::tls::TlsTrust;
use m365mail::{Classified as _, ErrorClass, Secret};
use m365mail_sandbox::{MailSeed, Sandbox, SandboxConfig, demo};

async fn sandbox() -> Sandbox {
    Sandbox::start(SandboxConfig {
        imaps: vec!["127.0.0.1:0".parse().unwrap()],
        imap: vec!["127.0.0.1:0".parse().unwrap()],
        mail: MailSeed::Demo,
        ..SandboxConfig::default()
    })
    .await
    .unwrap()
}

fn options(sbx: &Sandbox, service: &str, tls: TlsMode) -> ImapOptions {
    let addr = sbx
        .listeners()
        .iter()
        .find(|l| l.service == service)
        .unwrap()
        .addr;
    let endpoint = MailEndpoint {
        address: HostPort::parse("imap", &format!("localhost:{}", addr.port())).unwrap(),
        tls,
    };
    let trust = TlsTrust::system()
        .with_ca_pem(sbx.ca_pem(), "sandbox CA")
        .unwrap()
        .extra_only();
    ImapOptions::new(endpoint, trust)
}

async fn user_token(sbx: &Sandbox, target: Target) -> Secret {
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
        demo::USER_UPN,
        &Secret::new(demo::USER_PASSWORD),
        &Scopes::for_target(target, Access::Delegated, &Cloud::Global),
    )
    .await
    .unwrap()
    .access_token
}

#[tokio::test]
async fn lists_searches_fetches_and_files_messages() {
    let sbx = sandbox().await;
    let token = user_token(&sbx, Target::Imap).await;
    let mut imap = ImapConnection::connect(
        &options(&sbx, "imaps", TlsMode::Implicit),
        demo::USER_UPN,
        &token,
    )
    .await
    .unwrap();
    assert!(imap.has_capability("MOVE"), "re-read after sign-in");

    let folders = imap.folders(true).await.unwrap();
    let inbox = folders.iter().find(|f| f.name == "INBOX").unwrap();
    let total = inbox.messages.unwrap();
    assert!(total >= 10, "{folders:?}");
    assert!(
        folders
            .iter()
            .any(|f| f.name == "Deleted Items" && f.has_attribute("\\Trash"))
    );

    let selected = imap.select("INBOX", false).await.unwrap();
    assert_eq!(selected.exists, total);
    let all = imap.search(&SearchQuery::default()).await.unwrap();
    assert_eq!(all.len() as u32, total);
    let kickoff = imap
        .search(&SearchQuery {
            subject: Some("kickoff".into()),
            ..SearchQuery::default()
        })
        .await
        .unwrap();
    assert!(
        !kickoff.is_empty() && kickoff.len() < all.len(),
        "{kickoff:?}"
    );

    let meta = imap.metadata(&all, true, true).await.unwrap();
    assert_eq!(meta.len(), all.len());
    assert!(meta.iter().all(|m| m.size > 0 && m.internal_date.is_some()));
    assert!(
        meta.iter().any(|m| m.has_attachment == Some(true)),
        "{meta:?}"
    );
    assert!(meta.iter().any(|m| m.has_attachment == Some(false)));
    let bodies = imap.bodies(&all[..3]).await.unwrap();
    assert_eq!(bodies.len(), 3);
    for (uid, body) in &bodies {
        let declared = meta.iter().find(|m| m.uid == *uid).unwrap().size;
        assert_eq!(body.len() as u64, declared, "uid {uid}");
    }
    let header = imap.header(all[0]).await.unwrap().unwrap();
    assert!(header.ends_with(b"\r\n\r\n"));

    // Flags, copy, move, expunge — by UID.
    let archived = |sbx: &Sandbox| {
        sbx.admin()
            .mailbox_folders(demo::USER_UPN)
            .iter()
            .find(|f| f.name == "Archive")
            .unwrap()
            .messages
    };
    let archive_before = archived(&sbx);
    imap.add_flag(&all[..1], "\\Seen").await.unwrap();
    let unseen = imap
        .search(&SearchQuery {
            unseen: true,
            ..SearchQuery::default()
        })
        .await
        .unwrap();
    assert!(!unseen.contains(&all[0]));
    imap.copy_to(&all[1..2], "Archive").await.unwrap();
    imap.move_to(&all[2..3], "Archive").await.unwrap();
    imap.add_flag(&all[3..4], "\\Deleted").await.unwrap();
    imap.expunge(&all[3..4]).await.unwrap();
    let left = imap.search(&SearchQuery::default()).await.unwrap();
    assert_eq!(left.len(), all.len() - 2);
    let missing = imap
        .move_to(&all[4..5], "No Such Folder")
        .await
        .unwrap_err();
    assert!(
        matches!(missing, ImapError::NoSuchFolder { .. }),
        "{missing:?}"
    );
    imap.logout().await.unwrap();
    assert_eq!(archived(&sbx), archive_before + 2);
}

#[tokio::test]
async fn starttls_and_the_refusals_exchange_gives() {
    let sbx = sandbox().await;
    let token = user_token(&sbx, Target::Imap).await;
    let mut imap = ImapConnection::connect(
        &options(&sbx, "imap", TlsMode::Starttls),
        demo::USER_UPN,
        &token,
    )
    .await
    .unwrap();
    imap.select("INBOX", true).await.unwrap();
    imap.logout().await.unwrap();

    // A POP token is not an IMAP token: Exchange's one line, and the checks to make.
    let pop = user_token(&sbx, Target::Pop).await;
    let err = ImapConnection::connect(
        &options(&sbx, "imaps", TlsMode::Implicit),
        demo::USER_UPN,
        &pop,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, ImapError::AuthRefused { ref text, .. } if text == "AUTHENTICATE failed."),
        "{err:?}"
    );
    assert_eq!(err.class(), ErrorClass::Admin);
    assert!(err.remedy().contains("IMAP.AccessAsUser.All"));
    assert!(
        !format!("{err:?}").contains(pop.expose()),
        "no token in errors"
    );

    // Another user's mailbox: signed in, not connected.
    let err = ImapConnection::connect(
        &options(&sbx, "imaps", TlsMode::Implicit),
        demo::SECOND_USER_UPN,
        &token,
    )
    .await;
    // Exchange accepts the sign-in and refuses the first mailbox command.
    let err = match err {
        Ok(mut imap) => imap.select("INBOX", true).await.unwrap_err(),
        Err(err) => err,
    };
    assert!(matches!(err, ImapError::NotConnected { .. }), "{err:?}");
    assert!(err.remedy().contains("FullAccess"));
}
