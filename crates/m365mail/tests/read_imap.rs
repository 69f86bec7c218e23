//! The IMAP reader (`m365mail::read::imap`) against the sandbox: every message once, its action after its
//! checkpoint, owed actions finished, a UIDVALIDITY change recognised, and sessions lost mid-run (an expired
//! token, dropped connections, refused commands) survived without a lost or repeated record.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use m365mail::auth::{
    Access, Authority, ClientCredential, ClientOptions, Cloud, Scopes, Target, TokenClient,
};
use m365mail::endpoint::{HostPort, MailEndpoint, TlsMode};
use m365mail::imap::{ImapOptions, SearchQuery};
use m365mail::read::imap::{ImapAction, ImapReadOptions, Xoauth2Connector, read_imap};
use m365mail::read::sink::LineSink;
use m365mail::read::{ReadError, ReadSummary};
use m365mail::store::{CheckpointStore, SeenRow, SeenState, SourceKey};
use m365mail::time::SystemClock;
use m365mail::tls::TlsTrust;
use m365mail::{Secret, auth::AuthError};
use m365mail_sandbox::admin::MailFault;
use m365mail_sandbox::{MailSeed, Sandbox, SandboxConfig, demo};

async fn sandbox(mail: MailSeed) -> Sandbox {
    Sandbox::start(SandboxConfig {
        imaps: vec!["127.0.0.1:0".parse().unwrap()],
        mail,
        ..SandboxConfig::default()
    })
    .await
    .unwrap()
}

struct Reader {
    sbx: Sandbox,
    state: tempfile::TempDir,
    /// Tokens asked for, and of them renewals.
    tokens: Arc<AtomicU32>,
    renewals: Arc<AtomicU32>,
}

impl Reader {
    async fn new(mail: MailSeed) -> Self {
        Self {
            sbx: sandbox(mail).await,
            state: tempfile::tempdir().unwrap(),
            tokens: Arc::default(),
            renewals: Arc::default(),
        }
    }

    fn source(&self, folder: &str) -> SourceKey {
        SourceKey {
            protocol: "imap".into(),
            server: self.endpoint().address.to_string(),
            account: demo::USER_UPN.into(),
            folder: folder.into(),
        }
    }

    fn endpoint(&self) -> MailEndpoint {
        let addr = self
            .sbx
            .listeners()
            .iter()
            .find(|l| l.service == "imaps")
            .unwrap()
            .addr;
        MailEndpoint {
            address: HostPort::parse("imap", &format!("localhost:{}", addr.port())).unwrap(),
            tls: TlsMode::Implicit,
        }
    }

    fn store(&self) -> CheckpointStore {
        CheckpointStore::open(&self.state.path().join("checkpoints.sqlite")).unwrap()
    }

    /// One run; the records (NDJSON lines) and the summary.
    async fn read(
        &self,
        options: &ImapReadOptions,
    ) -> Result<(Vec<serde_json::Value>, ReadSummary), ReadError> {
        let trust = TlsTrust::system()
            .with_ca_pem(self.sbx.ca_pem(), "sandbox CA")
            .unwrap()
            .extra_only();
        let client = TokenClient::new(
            Authority::new(
                Cloud::custom(self.sbx.base_url().as_str()).unwrap(),
                demo::TENANT_ID.parse().unwrap(),
            ),
            demo::PUBLIC_APP_ID,
            ClientCredential::Public,
            ClientOptions {
                extra_ca_pem: Some(self.sbx.ca_pem().to_owned()),
                ..ClientOptions::default()
            },
        )
        .unwrap();
        let client = Arc::new(client);
        let (tokens, renewals) = (Arc::clone(&self.tokens), Arc::clone(&self.renewals));
        let mut connector = Xoauth2Connector {
            options: ImapOptions::new(self.endpoint(), trust),
            user: demo::USER_UPN.to_owned(),
            tokens: move |renew: bool| {
                let client = Arc::clone(&client);
                tokens.fetch_add(1, Ordering::SeqCst);
                if renew {
                    renewals.fetch_add(1, Ordering::SeqCst);
                }
                async move {
                    let scopes =
                        Scopes::for_target(Target::Imap, Access::Delegated, &Cloud::Global);
                    let token = client
                        .password(demo::USER_UPN, &Secret::new(demo::USER_PASSWORD), &scopes)
                        .await?;
                    Ok::<Secret, AuthError>(token.access_token)
                }
            },
        };
        let mut store = self.store();
        let mut sink = LineSink::new(Vec::new());
        let summary = read_imap(
            &mut connector,
            &self.source(&options.folder),
            &mut store,
            &mut sink,
            options,
            &SystemClock,
            &mut |_| {},
        )
        .await?;
        let records = sink
            .into_inner()
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect();
        Ok((records, summary))
    }

    fn count(&self, folder: &str) -> usize {
        self.sbx
            .admin()
            .mailbox_folders(demo::USER_UPN)
            .iter()
            .find(|f| f.name == folder)
            .map_or(0, |f| f.messages)
    }
}

fn ids(records: &[serde_json::Value]) -> Vec<String> {
    records
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect()
}

fn message(n: usize) -> Vec<u8> {
    format!(
        "From: Sender {n} <s{n}@fabrikam.test>\r\nTo: adele@contoso.test\r\nSubject: numbered {n}\r\n\
         Message-ID: <n{n}@fabrikam.test>\r\nDate: Mon, 07 Dec 2026 08:00:00 +0000\r\n\r\nbody {n}\r\n"
    )
    .into_bytes()
}

#[tokio::test]
async fn moves_what_it_read_and_a_second_run_finds_nothing_new() {
    let reader = Reader::new(MailSeed::Demo).await;
    let inbox = reader.count("INBOX");
    let archive = reader.count("Archive");
    let options = ImapReadOptions {
        then: ImapAction::Move("Archive".into()),
        ..ImapReadOptions::default()
    };
    let (records, summary) = reader.read(&options).await.unwrap();
    assert_eq!(records.len(), inbox);
    assert_eq!(summary.moved as usize, inbox);
    assert_eq!(
        (reader.count("INBOX"), reader.count("Archive")),
        (0, archive + inbox)
    );
    let unique: HashSet<String> = ids(&records).into_iter().collect();
    assert_eq!(unique.len(), inbox);
    assert!(records.iter().all(|r| r["source"]["protocol"] == "imap"));
    assert!(
        records[0]["uid"].as_str().unwrap().contains(':'),
        "UIDVALIDITY:UID"
    );

    let (again, summary) = reader.read(&options).await.unwrap();
    assert!(again.is_empty(), "{again:?}");
    assert_eq!(summary.listed, 0);
}

#[tokio::test]
async fn filters_run_on_the_server_and_none_leaves_the_folder_as_it_was() {
    let reader = Reader::new(MailSeed::Demo).await;
    let inbox = reader.count("INBOX");
    let kickoff = ImapReadOptions {
        search: SearchQuery {
            subject: Some("kickoff".into()),
            ..SearchQuery::default()
        },
        ..ImapReadOptions::default()
    };
    let (records, _) = reader.read(&kickoff).await.unwrap();
    assert!(!records.is_empty());
    assert!(records.iter().all(|r| {
        r["subject"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("kickoff")
    }));
    assert_eq!(reader.count("INBOX"), inbox, "--then none");

    let attachments = ImapReadOptions {
        has_attachment: true,
        ..ImapReadOptions::default()
    };
    let (with, summary) = reader.read(&attachments).await.unwrap();
    assert!(!with.is_empty() && summary.filtered_out > 0, "{summary:?}");
    assert!(
        with.iter()
            .all(|r| !r["attachments"].as_array().unwrap().is_empty() || r["skipped"].is_string())
    );

    // What the first two runs handed on is not handed on again; the rest is.
    let (rest, _) = reader.read(&ImapReadOptions::default()).await.unwrap();
    assert_eq!(records.len() + with.len() + rest.len(), inbox);
    let limited = reader.read(&ImapReadOptions::default()).await.unwrap();
    assert!(limited.0.is_empty());
}

#[tokio::test]
async fn an_owed_move_is_finished_without_a_second_record() {
    let reader = Reader::new(MailSeed::Empty).await;
    for n in 1..=3 {
        reader
            .sbx
            .admin()
            .deliver_message(demo::USER_UPN, &message(n))
            .unwrap();
    }
    let validity = reader
        .sbx
        .admin()
        .mailbox_folders(demo::USER_UPN)
        .iter()
        .find(|f| f.name == "INBOX")
        .unwrap()
        .uid_validity;
    // As a run killed after the checkpoint of message 2 and before its move leaves it.
    let source = reader.source("INBOX");
    let row = SeenRow {
        state: SeenState::PendingMove,
        target: Some("Archive".into()),
        fingerprint: None,
    };
    let key = format!("{validity}:2");
    reader
        .store()
        .commit_rows(&source, &[(key.clone(), source.message_id(&key), row)], 1)
        .unwrap();
    let (records, summary) = reader.read(&ImapReadOptions::default()).await.unwrap();
    assert_eq!(summary.owed_actions, 1);
    assert_eq!(records.len(), 2, "messages 1 and 3; 2 had its record");
    assert_eq!((reader.count("INBOX"), reader.count("Archive")), (2, 1));
    assert_eq!(
        reader.store().rows(&source).unwrap()[&key].state,
        SeenState::Done
    );
}

#[tokio::test]
async fn a_new_uidvalidity_is_read_again_without_delivering_twice() {
    let reader = Reader::new(MailSeed::Empty).await;
    for n in 1..=4 {
        reader
            .sbx
            .admin()
            .deliver_message(demo::USER_UPN, &message(n))
            .unwrap();
    }
    let (first, _) = reader.read(&ImapReadOptions::default()).await.unwrap();
    assert_eq!(first.len(), 4);
    reader
        .sbx
        .admin()
        .set_uid_validity(demo::USER_UPN, "INBOX", 777)
        .unwrap();
    reader
        .sbx
        .admin()
        .deliver_message(demo::USER_UPN, &message(5))
        .unwrap();
    let (second, summary) = reader.read(&ImapReadOptions::default()).await.unwrap();
    assert_eq!(summary.already_delivered, 4, "{summary:?}");
    assert_eq!(second.len(), 1);
    assert_eq!(second[0]["subject"], "numbered 5");
    assert!(second[0]["uid"].as_str().unwrap().starts_with("777:"));
    let rows = reader.store().rows(&reader.source("INBOX")).unwrap();
    assert_eq!(rows.len(), 5);
    assert!(
        rows.keys().all(|k| k.starts_with("777:")),
        "old keys forgotten: {rows:?}"
    );
    let (third, _) = reader.read(&ImapReadOptions::default()).await.unwrap();
    assert!(third.is_empty());
}

#[tokio::test]
async fn an_expired_token_and_dropped_sessions_lose_and_repeat_nothing() {
    let reader = Reader::new(MailSeed::Empty).await;
    let total = 120;
    for n in 1..=total {
        reader
            .sbx
            .admin()
            .deliver_message(demo::USER_UPN, &message(n))
            .unwrap();
    }
    let admin = reader.sbx.admin();
    // The first session is dropped at its tenth command: a new session goes on from the checkpoint.
    let move_to_archive = ImapReadOptions {
        then: ImapAction::Move("Archive".into()),
        ..ImapReadOptions::default()
    };
    admin
        .inject_mail_fault("imap", MailFault::DropAfterCommands(9), 1)
        .unwrap();
    let (first, summary) = reader.read(&move_to_archive).await.unwrap();
    assert_eq!(summary.reconnects, 1, "{summary:?}");
    assert_eq!(first.len(), total);
    assert_eq!((reader.count("INBOX"), reader.count("Archive")), (0, total));

    for n in total + 1..=total + 60 {
        reader
            .sbx
            .admin()
            .deliver_message(demo::USER_UPN, &message(n))
            .unwrap();
    }
    admin
        .inject_mail_fault("imap", MailFault::ExpireToken, 1)
        .unwrap();
    let before = reader.renewals.load(Ordering::SeqCst);
    let (second, summary) = reader.read(&move_to_archive).await.unwrap();
    assert_eq!(summary.reconnects, 1, "{summary:?}");
    assert_eq!(
        reader.renewals.load(Ordering::SeqCst),
        before + 1,
        "a renewed token"
    );
    assert_eq!(second.len(), 60);

    // A refused command is not a lost session: the run stops with a transient error, and the next run
    // carries on from the checkpoint.
    for n in total + 61..=total + 70 {
        reader
            .sbx
            .admin()
            .deliver_message(demo::USER_UPN, &message(n))
            .unwrap();
    }
    admin
        .inject_mail_fault("imap", MailFault::FailNext, 1)
        .unwrap();
    let err = reader.read(&move_to_archive).await.unwrap_err();
    assert!(matches!(err, ReadError::Imap(_)), "{err:?}");
    let (third, _) = reader.read(&move_to_archive).await.unwrap();
    assert_eq!(third.len(), 10);

    let all: Vec<String> = [first, second, third].iter().flat_map(|r| ids(r)).collect();
    let unique: HashSet<&String> = all.iter().collect();
    assert_eq!(unique.len(), all.len(), "no record twice");
    assert_eq!(reader.count("Archive"), total + 70);
}

#[tokio::test]
async fn without_move_a_move_is_copy_delete_expunge_and_other_actions_work() {
    let reader = Reader::new(MailSeed::Empty).await;
    for n in 1..=6 {
        reader
            .sbx
            .admin()
            .deliver_message(demo::USER_UPN, &message(n))
            .unwrap();
    }
    let fallback = ImapReadOptions {
        then: ImapAction::Move("Archive".into()),
        prefer_move: false,
        limit: Some(2),
        ..ImapReadOptions::default()
    };
    let (moved, summary) = reader.read(&fallback).await.unwrap();
    assert_eq!((moved.len(), summary.moved), (2, 2));
    assert_eq!((reader.count("INBOX"), reader.count("Archive")), (4, 2));

    let trash = ImapReadOptions {
        then: ImapAction::Trash,
        limit: Some(1),
        ..ImapReadOptions::default()
    };
    reader.read(&trash).await.unwrap();
    assert_eq!(reader.count("Deleted Items"), 1);
    let delete = ImapReadOptions {
        then: ImapAction::Delete,
        limit: Some(1),
        ..ImapReadOptions::default()
    };
    reader.read(&delete).await.unwrap();
    assert_eq!(reader.count("INBOX"), 2);
    assert_eq!(reader.count("Deleted Items"), 1, "delete is for good");
    let copy = ImapReadOptions {
        then: ImapAction::Copy("Archive".into()),
        limit: Some(1),
        ..ImapReadOptions::default()
    };
    reader.read(&copy).await.unwrap();
    assert_eq!((reader.count("INBOX"), reader.count("Archive")), (2, 3));
    let mark = ImapReadOptions {
        then: ImapAction::MarkRead,
        ..ImapReadOptions::default()
    };
    let (marked, summary) = reader.read(&mark).await.unwrap();
    assert_eq!((marked.len(), summary.marked_read), (1, 1));
    let unseen = ImapReadOptions {
        search: SearchQuery {
            unseen: true,
            ..SearchQuery::default()
        },
        ..ImapReadOptions::default()
    };
    reader.store().reset(|_| true).unwrap();
    let (left, _) = reader.read(&unseen).await.unwrap();
    assert_eq!(
        left.len(),
        1,
        "the copied one is still unseen; the marked one is not"
    );
}
