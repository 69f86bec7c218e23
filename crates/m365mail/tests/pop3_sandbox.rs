//! The POP3 driver (`m365mail::pop3`) against the sandbox's POP3 service over implicit TLS, with tokens the
//! sandbox issues: delegated, a shared mailbox, app-only, and the refusals Exchange gives.

use m365mail::auth::{
    Access, Authority, ClientCredential, ClientOptions, Cloud, Scopes, Target, TokenClient,
};
use m365mail::endpoint::{HostPort, MailEndpoint, TlsMode};
use m365mail::pop3::{Pop3Connection, Pop3Error, Pop3Options};
use m365mail::tls::TlsTrust;
use m365mail::{Classified as _, ErrorClass, Secret};
use m365mail_sandbox::{Sandbox, SandboxConfig, demo};

async fn sandbox() -> Sandbox {
    Sandbox::start(SandboxConfig {
        pop3s: vec!["127.0.0.1:0".parse().unwrap()],
        ..SandboxConfig::default()
    })
    .await
    .unwrap()
}

fn options(sbx: &Sandbox) -> Pop3Options {
    let addr = sbx
        .listeners()
        .iter()
        .find(|l| l.service == "pop3s")
        .unwrap()
        .addr;
    let endpoint = MailEndpoint {
        address: HostPort::parse("pop", &addr.to_string()).unwrap(),
        tls: TlsMode::Implicit,
    };
    let trust = TlsTrust::system()
        .with_ca_pem(sbx.ca_pem(), "sandbox CA")
        .unwrap()
        .extra_only();
    Pop3Options::new(endpoint, trust)
}

fn token_client(sbx: &Sandbox, client_id: &str, credential: ClientCredential) -> TokenClient {
    TokenClient::new(
        Authority::new(
            Cloud::custom(sbx.base_url().as_str()).unwrap(),
            demo::TENANT_ID.parse().unwrap(),
        ),
        client_id,
        credential,
        ClientOptions {
            extra_ca_pem: Some(sbx.ca_pem().to_owned()),
            ..ClientOptions::default()
        },
    )
    .unwrap()
}

async fn user_token(sbx: &Sandbox, target: Target) -> Secret {
    token_client(sbx, demo::PUBLIC_APP_ID, ClientCredential::Public)
        .password(
            demo::USER_UPN,
            &Secret::new(demo::USER_PASSWORD),
            &Scopes::for_target(target, Access::Delegated, &Cloud::Global),
        )
        .await
        .unwrap()
        .access_token
}

async fn app_token(sbx: &Sandbox) -> Secret {
    token_client(
        sbx,
        demo::CONFIDENTIAL_APP_ID,
        ClientCredential::secret(demo::CONFIDENTIAL_APP_SECRET.into()),
    )
    .client_credentials(&Scopes::for_target(
        Target::Pop,
        Access::AppOnly,
        &Cloud::Global,
    ))
    .await
    .unwrap()
    .access_token
}

#[tokio::test]
async fn reads_deletes_and_commits_on_quit() {
    let sbx = sandbox().await;
    let extra =
        b"Subject: second\r\nMessage-ID: <two@example.test>\r\n\r\nline\r\n.starts with a dot\r\n";
    sbx.admin().deliver_message(demo::USER_UPN, extra).unwrap();
    let token = user_token(&sbx, Target::Pop).await;

    let mut pop = Pop3Connection::connect(&options(&sbx)).await.unwrap();
    assert!(
        pop.greeting()
            .starts_with("The Microsoft Exchange POP3 service is ready.")
    );
    pop.authenticate(demo::USER_UPN, &token).await.unwrap();
    let (count, total) = pop.stat().await.unwrap();
    assert_eq!(count, 2);
    let ids = pop.unique_ids().await.unwrap();
    let sizes = pop.sizes().await.unwrap();
    assert_eq!(sizes.iter().map(|(_, s)| s).sum::<u64>(), total);
    assert_eq!(
        ids.iter().map(|(_, u)| u.clone()).collect::<Vec<_>>(),
        sbx.admin().mailbox_uids(demo::USER_UPN)
    );
    let mut body = Vec::new();
    let size = pop.retrieve(2, &mut body).await.unwrap();
    assert_eq!(body, extra);
    assert_eq!(size, extra.len() as u64);
    assert_eq!(
        pop.top(2, 0).await.unwrap(),
        b"Subject: second\r\nMessage-ID: <two@example.test>\r\n\r\n"
    );
    pop.delete(2).await.unwrap();
    pop.quit().await.unwrap();
    assert_eq!(
        sbx.admin().mailbox_uids(demo::USER_UPN),
        vec![ids[0].1.clone()]
    );
}

#[tokio::test]
async fn a_shared_mailbox_and_app_only_sign_in() {
    let sbx = sandbox().await;
    let token = user_token(&sbx, Target::Pop).await;
    let mut pop = Pop3Connection::connect(&options(&sbx)).await.unwrap();
    pop.authenticate(demo::SHARED_MAILBOX, &token)
        .await
        .unwrap();
    assert_eq!(pop.stat().await.unwrap().0, 1);
    pop.quit().await.unwrap();

    let app = app_token(&sbx).await;
    let mut pop = Pop3Connection::connect(&options(&sbx)).await.unwrap();
    pop.authenticate(demo::USER_UPN, &app).await.unwrap();
    assert_eq!(pop.stat().await.unwrap().0, 1);
    pop.quit().await.unwrap();
}

#[tokio::test]
async fn refusals_name_what_to_check_and_never_the_token() {
    let sbx = sandbox().await;
    // An IMAP token is not a POP token: Exchange's one line, then our remedy.
    let imap_only = user_token(&sbx, Target::Smtp).await;
    let mut pop = Pop3Connection::connect(&options(&sbx)).await.unwrap();
    let err = pop
        .authenticate(demo::USER_UPN, &imap_only)
        .await
        .unwrap_err();
    let Pop3Error::AuthRefused {
        text,
        user,
        challenge,
        ..
    } = &err
    else {
        panic!("{err:?}");
    };
    assert_eq!(
        text,
        "Authentication failure: unknown user name or bad password."
    );
    assert_eq!(user, demo::USER_UPN);
    assert_eq!(*challenge, None);
    assert_eq!(err.class(), ErrorClass::Admin);
    assert!(err.remedy().contains("token inspect"));
    assert!(err.remedy().contains("Set-CASMailbox -PopEnabled"));
    let shown = format!("{err} {err:?} {}", err.cause());
    assert!(!shown.contains(imap_only.expose()));

    // Someone else's mailbox without FullAccess.
    let token = user_token(&sbx, Target::Pop).await;
    let mut pop = Pop3Connection::connect(&options(&sbx)).await.unwrap();
    let err = pop
        .authenticate(demo::SECOND_USER_UPN, &token)
        .await
        .unwrap_err();
    assert!(matches!(err, Pop3Error::AuthRefused { .. }), "{err:?}");

    // A mailbox name that would break the XOAUTH2 string is refused before anything is sent.
    let mut pop = Pop3Connection::connect(&options(&sbx)).await.unwrap();
    let err = pop.authenticate("adele\u{1}@x", &token).await.unwrap_err();
    assert!(matches!(err, Pop3Error::BadUser { .. }), "{err:?}");
    assert_eq!(err.class(), ErrorClass::Input);
}

#[tokio::test]
async fn an_untrusted_certificate_is_a_tls_error_naming_the_ca_remedy() {
    let sbx = sandbox().await;
    let mut options = options(&sbx);
    options.trust = TlsTrust::system();
    let err = Pop3Connection::connect(&options).await.unwrap_err();
    let Pop3Error::Transport(transport) = &err else {
        panic!("{err:?}");
    };
    assert!(transport.is_unknown_issuer(), "{err:?}");
    assert!(
        err.remedy().contains("ca-file") || err.remedy().contains("ca_file"),
        "{}",
        err.remedy()
    );
}

#[tokio::test]
async fn starttls_is_refused_when_the_server_does_not_offer_it() {
    // The sandbox, like Exchange, serves POP3 over implicit TLS only; a plain listener that greets but
    // offers no STLS must not be talked to in clear text.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let (mut socket, _) = listener.accept().await.unwrap();
        socket.write_all(b"+OK plain only\r\n").await.unwrap();
        let mut buf = [0u8; 64];
        let n = socket.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"CAPA\r\n");
        socket
            .write_all(b"+OK\r\nUIDL\r\nUSER\r\n.\r\n")
            .await
            .unwrap();
        socket.read(&mut buf).await.unwrap()
    });
    let options = Pop3Options::new(
        MailEndpoint {
            address: HostPort::parse("pop", &addr.to_string()).unwrap(),
            tls: TlsMode::Starttls,
        },
        TlsTrust::system(),
    );
    let err = Pop3Connection::connect(&options).await.unwrap_err();
    assert!(matches!(err, Pop3Error::NoStls { .. }), "{err:?}");
    assert_eq!(server.await.unwrap(), 0, "nothing more was sent after CAPA");
}

mod pipeline {
    use super::*;
    use m365mail::read::record::MessageRecord;
    use m365mail::read::sink::DirSink;
    use m365mail::read::{After, Filter, ReadOptions, ReadSummary, read_pop};
    use m365mail::store::{CheckpointStore, SeenState, SourceKey};
    use m365mail::time::SystemClock;

    async fn signed_in(sbx: &Sandbox, token: &Secret) -> Pop3Connection {
        let mut pop = Pop3Connection::connect(&options(sbx)).await.unwrap();
        pop.authenticate(demo::USER_UPN, token).await.unwrap();
        pop
    }

    fn source(sbx: &Sandbox) -> SourceKey {
        SourceKey {
            protocol: "pop3".into(),
            server: options(sbx).endpoint.address.to_string(),
            account: demo::USER_UPN.into(),
            folder: "INBOX".into(),
        }
    }

    /// Signs in as Adele and runs the pipeline once.
    async fn run(
        sbx: &Sandbox,
        token: &Secret,
        source: &SourceKey,
        store: &mut CheckpointStore,
        sink: &mut DirSink,
        options: &ReadOptions,
    ) -> ReadSummary {
        let pop = signed_in(sbx, token).await;
        read_pop(pop, source, store, sink, options, &SystemClock, &mut |_| {})
            .await
            .unwrap()
    }

    fn records(dir: &std::path::Path) -> Vec<MessageRecord> {
        let mut out: Vec<MessageRecord> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap())
            .collect();
        out.sort_by(|a, b| a.subject.cmp(&b.subject));
        out
    }

    #[tokio::test]
    async fn reads_once_filters_skips_large_and_performs_owed_deletes() {
        let sbx = sandbox().await;
        for (subject, from, body_len) in [
            ("invoice 1", "billing@northwind.example", 10),
            ("invoice 2", "billing@northwind.example", 10),
            ("newsletter", "news@fabrikam.example", 10),
            ("huge scan", "scanner@contoso.example", 3000),
        ] {
            let message = format!(
                "From: {from}\r\nSubject: {subject}\r\nDate: Mon, 07 Dec 2026 06:00:01 +0100\r\nMessage-ID: <{}@example.test>\r\n\r\n{}\r\n",
                subject.replace(' ', "."),
                "x".repeat(body_len)
            );
            sbx.admin()
                .deliver_message(demo::USER_UPN, message.as_bytes())
                .unwrap();
        }
        let token = user_token(&sbx, Target::Pop).await;
        let work = tempfile::tempdir().unwrap();
        let out = work.path().join("out");
        let mut store = CheckpointStore::open(&work.path().join("state.sqlite")).unwrap();
        let mut sink = DirSink::new(&out, false).unwrap();

        // Filtered: only Northwind's, nothing else checkpointed.
        let src = source(&sbx);
        let filtered = ReadOptions {
            filter: Filter {
                from: Some("NORTHWIND".into()),
                ..Filter::default()
            },
            max_size: 1000,
            ..ReadOptions::default()
        };
        let summary = run(&sbx, &token, &src, &mut store, &mut sink, &filtered).await;
        assert_eq!(
            (summary.listed, summary.records, summary.filtered_out),
            (5, 2, 3)
        );
        assert_eq!(store.seen(&src).unwrap().len(), 2);

        // Everything, with a size bound: the welcome message and the newsletter are new, the scan is skipped.
        let bounded = ReadOptions {
            max_size: 1000,
            ..ReadOptions::default()
        };
        let summary = run(&sbx, &token, &src, &mut store, &mut sink, &bounded).await;
        assert_eq!((summary.records, summary.skipped), (3, 1));
        let all = records(&out);
        assert_eq!(all.len(), 5);
        let scan = all
            .iter()
            .find(|r| r.subject.as_deref() == Some("huge scan"))
            .unwrap();
        assert_eq!(scan.skipped.as_deref(), Some("too large"));
        assert_eq!(scan.sha256, None);
        assert!(scan.size > 3000);

        // Nothing new the third time.
        let summary = run(&sbx, &token, &src, &mut store, &mut sink, &bounded).await;
        assert_eq!(summary.records, 0);

        // A crash after the checkpoint, before DELE: the delete is owed and done next time, without a record.
        let uids = sbx.admin().mailbox_uids(demo::USER_UPN);
        store
            .commit(&src, &uids[0], SeenState::PendingDelete, "x", 0)
            .unwrap();
        let summary = run(&sbx, &token, &src, &mut store, &mut sink, &bounded).await;
        assert_eq!(
            (summary.records, summary.deleted, summary.owed_actions),
            (0, 1, 1)
        );
        assert_eq!(sbx.admin().mailbox_uids(demo::USER_UPN), uids[1..].to_vec());

        // The next run forgets the deleted message's checkpoint.
        let summary = run(&sbx, &token, &src, &mut store, &mut sink, &bounded).await;
        assert_eq!(summary.pruned, 1);
        assert_eq!(records(&out).len(), 5);
    }

    #[tokio::test]
    async fn a_message_the_server_refuses_is_recorded_and_does_not_block_later_runs() {
        let sbx = sandbox().await;
        let refused = sbx
            .admin()
            .deliver_message(demo::USER_UPN, b"Subject: cannot convert\r\n\r\nx\r\n")
            .unwrap();
        sbx.admin()
            .deliver_message(demo::USER_UPN, b"Subject: fine\r\n\r\ny\r\n")
            .unwrap();
        sbx.admin().refuse_retrieve(&refused);
        let token = user_token(&sbx, Target::Pop).await;
        let work = tempfile::tempdir().unwrap();
        let mut store = CheckpointStore::open(&work.path().join("state.sqlite")).unwrap();
        let mut sink = DirSink::new(&work.path().join("out"), false).unwrap();
        let src = source(&sbx);
        let delete = ReadOptions {
            then: After::Delete,
            ..ReadOptions::default()
        };
        let summary = run(&sbx, &token, &src, &mut store, &mut sink, &delete).await;
        assert_eq!(
            (summary.records, summary.refused, summary.deleted),
            (3, 1, 2)
        );
        let all = records(&work.path().join("out"));
        let record = all.iter().find(|r| r.uid == refused).unwrap();
        assert_eq!(record.skipped.as_deref(), Some("refused by the server"));
        assert_eq!(
            record.error.as_deref(),
            Some("RETR: -ERR The message is no longer available.")
        );
        // Checkpointed as skipped and left on the server; the next run has nothing to do.
        assert_eq!(store.seen(&src).unwrap()[&refused], SeenState::Skipped);
        assert_eq!(
            sbx.admin().mailbox_uids(demo::USER_UPN),
            vec![refused.clone()]
        );
        let summary = run(&sbx, &token, &src, &mut store, &mut sink, &delete).await;
        assert_eq!((summary.records, summary.refused), (0, 0));
    }

    #[tokio::test]
    async fn delete_after_reading_empties_the_maildrop_and_from_now_skips_the_past() {
        let sbx = sandbox().await;
        let token = user_token(&sbx, Target::Pop).await;
        let work = tempfile::tempdir().unwrap();
        let mut store = CheckpointStore::open(&work.path().join("state.sqlite")).unwrap();
        let mut sink = DirSink::new(&work.path().join("out"), true).unwrap();

        let src = source(&sbx);
        let from_now = ReadOptions {
            from_now: true,
            ..ReadOptions::default()
        };
        let summary = run(&sbx, &token, &src, &mut store, &mut sink, &from_now).await;
        assert_eq!((summary.marked, summary.records), (1, 0));

        sbx.admin()
            .deliver_message(demo::USER_UPN, b"Subject: after\r\n\r\nnew\r\n")
            .unwrap();
        let delete = ReadOptions {
            then: After::Delete,
            ..ReadOptions::default()
        };
        let summary = run(&sbx, &token, &src, &mut store, &mut sink, &delete).await;
        assert_eq!((summary.records, summary.deleted), (1, 1));
        let all = records(&work.path().join("out"));
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].subject.as_deref(), Some("after"));
        let eml = work
            .path()
            .join("out")
            .join(all[0].eml_path.as_ref().unwrap());
        assert_eq!(
            std::fs::read(eml).unwrap(),
            b"Subject: after\r\n\r\nnew\r\n"
        );
        // The welcome message (marked from now) stays; the new one is gone.
        assert_eq!(sbx.admin().mailbox_uids(demo::USER_UPN).len(), 1);
    }
}
