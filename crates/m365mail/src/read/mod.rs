//! The read pipeline, shared by every reader: message → MIME → [`record::MessageRecord`] → [`sink::Sink`] →
//! checkpoint ([`crate::store`]) → after-processing. POP3 ([`read_pop`]) and IMAP ([`imap::read_imap`]) read
//! through it; Graph will reuse the records, sinks and store.
//!
//! **Order, and what it guarantees.** For each new message: the record is written to the sink and made
//! durable, *then* the checkpoint is committed, *then* the action runs (`DELE`, committed by `QUIT`). A crash
//! before the checkpoint means the message is read again on the next run: an output directory then rewrites
//! the same files (exactly once in the directory), while standard output prints the record a second time
//! (at least once). A crash after the checkpoint but before the action leaves the action owed: the next run
//! performs it without a second record.
//!
//! Reading the in-process sandbox's demo Inbox (runs as a doctest):
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use m365mail::auth::{Access, Authority, ClientCredential, ClientOptions, Cloud, Scopes, Target, TokenClient};
//! use m365mail::endpoint::{HostPort, MailEndpoint, TlsMode};
//! use m365mail::pop3::{Pop3Connection, Pop3Options};
//! use m365mail::read::{ReadOptions, read_pop, sink::LineSink};
//! use m365mail::store::{CheckpointStore, SourceKey};
//! use m365mail::{Secret, time::SystemClock, tls::TlsTrust};
//! use m365mail_sandbox::{MailSeed, Sandbox, SandboxConfig, demo};
//!
//! let sandbox = Sandbox::start(SandboxConfig {
//!     pop3s: vec!["127.0.0.1:0".parse()?],
//!     mail: MailSeed::Demo,
//!     ..SandboxConfig::default()
//! })
//! .await?;
//! // A POP token for Adele (password grant against the sandbox's Entra ID).
//! let cloud = Cloud::custom(sandbox.base_url().as_str())?;
//! let options = ClientOptions { extra_ca_pem: Some(sandbox.ca_pem().into()), ..ClientOptions::default() };
//! let client = TokenClient::new(Authority::new(cloud, demo::TENANT_ID.parse()?), demo::PUBLIC_APP_ID,
//!                               ClientCredential::Public, options)?;
//! let scopes = Scopes::for_target(Target::Pop, Access::Delegated, &Cloud::Global);
//! let token = client.password(demo::USER_UPN, &Secret::new(demo::USER_PASSWORD), &scopes).await?;
//!
//! // Sign in over POP3S, trusting the sandbox's CA.
//! let pop3s = sandbox.listeners().iter().find(|l| l.service == "pop3s").unwrap().addr;
//! let endpoint = MailEndpoint { address: HostPort::parse("pop", &pop3s.to_string())?, tls: TlsMode::Implicit };
//! let trust = TlsTrust::system().with_ca_pem(sandbox.ca_pem(), "sandbox CA")?.extra_only();
//! let mut pop = Pop3Connection::connect(&Pop3Options::new(endpoint, trust)).await?;
//! pop.authenticate(demo::USER_UPN, &token.access_token).await?;
//!
//! // Every new message becomes an NDJSON record; the checkpoint remembers it.
//! let source = SourceKey { protocol: "pop3".into(), server: pop.endpoint().into(),
//!                          account: demo::USER_UPN.into(), folder: "INBOX".into() };
//! let state = tempfile::tempdir()?;
//! let mut store = CheckpointStore::open(&state.path().join("checkpoints.sqlite"))?;
//! let mut sink = LineSink::new(Vec::new());
//! let options = ReadOptions { max_size: 1 << 20, ..ReadOptions::default() };
//! let summary = read_pop(pop, &source, &mut store, &mut sink, &options, &SystemClock, &mut |_| {}).await?;
//! assert_eq!((summary.records, summary.skipped), (12, 1)); // the 5 MB scan is over 1 MiB
//! assert_eq!(sink.into_inner().split(|&b| b == b'\n').filter(|l| !l.is_empty()).count(), 12);
//! sandbox.shutdown().await;
//! # Ok(()) }
//! ```

pub mod graph;
pub mod imap;
pub mod record;
pub mod sink;

use std::collections::HashSet;

use crate::error::{Classified, ErrorClass};
use crate::mime::{self, ParsedMessage};
use crate::pop3::{Pop3Connection, Pop3Error};
use crate::store::{CheckpointStore, SeenState, SourceKey, StoreError};
use crate::time::{Clock, unix_secs};
use record::MessageRecord;
use sink::{Sink, SinkError};

/// Which messages first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    /// Oldest first (the server's order).
    #[default]
    Oldest,
    /// Newest first.
    Newest,
}

/// What happens to a message once its record and checkpoint are committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum After {
    /// Nothing: it stays on the server.
    #[default]
    None,
    /// Deleted (POP3: DELE, committed by QUIT).
    Delete,
}

/// Client-side filters, applied to the header (POP3: fetched with `TOP n 0`) before any download. A message
/// that does not match is not output, not acted on and not checkpointed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// `Date` at or after (Unix seconds).
    pub since: Option<i64>,
    /// `Date` before (Unix seconds).
    pub before: Option<i64>,
    /// A `From` name or address containing this (case-insensitive).
    pub from: Option<String>,
    /// A `Subject` containing this (case-insensitive).
    pub subject: Option<String>,
}

impl Filter {
    /// Whether any criterion is set.
    pub fn is_active(&self) -> bool {
        *self != Self::default()
    }

    /// Whether `header` matches every criterion. A message without a `Date` matches no date criterion.
    pub fn matches(&self, header: &ParsedMessage) -> bool {
        let date = header.date.as_ref().map(|(_, secs)| *secs);
        if let Some(since) = self.since
            && date.is_none_or(|d| d < since)
        {
            return false;
        }
        if let Some(before) = self.before
            && date.is_none_or(|d| d >= before)
        {
            return false;
        }
        if let Some(from) = &self.from {
            let needle = from.to_lowercase();
            let hit = header.from.iter().any(|m| {
                [&m.name, &m.address]
                    .into_iter()
                    .flatten()
                    .any(|text| text.to_lowercase().contains(&needle))
            });
            if !hit {
                return false;
            }
        }
        if let Some(subject) = &self.subject {
            let hit = header
                .subject
                .as_ref()
                .is_some_and(|s| s.to_lowercase().contains(&subject.to_lowercase()));
            if !hit {
                return false;
            }
        }
        true
    }
}

/// How to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadOptions {
    /// At most this many records.
    pub limit: Option<usize>,
    /// Which first.
    pub order: Order,
    /// Client-side filters.
    pub filter: Filter,
    /// Larger messages (server's size) are not downloaded: a `skipped` record instead.
    pub max_size: u64,
    /// After-processing.
    pub then: After,
    /// Record what is on the server now as seen, without reading it.
    pub from_now: bool,
}

impl Default for ReadOptions {
    fn default() -> Self {
        Self {
            limit: None,
            order: Order::Oldest,
            filter: Filter::default(),
            max_size: 50 * 1024 * 1024,
            then: After::None,
            from_now: false,
        }
    }
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ReadSummary {
    /// Messages the server listed.
    pub listed: u64,
    /// Records written (downloaded, unreadable or skipped).
    pub records: u64,
    /// Of which skipped as too large.
    pub skipped: u64,
    /// Of which could not be parsed.
    pub unreadable: u64,
    /// Messages left out by the filters.
    pub filtered_out: u64,
    /// Messages deleted (owed actions included).
    pub deleted: u64,
    /// Owed actions performed (from an earlier run).
    pub owed_actions: u64,
    /// Messages the server refused to give (RETR), or deletes it refused: recorded, checkpointed, left.
    pub refused: u64,
    /// Checkpoints forgotten because the server no longer lists them.
    pub pruned: u64,
    /// Marked as seen by `from_now`.
    pub marked: u64,
    /// Bytes downloaded.
    pub bytes: u64,
    /// IMAP: messages moved (`--then move`, `trash`; owed moves included).
    pub moved: u64,
    /// IMAP: messages copied.
    pub copied: u64,
    /// IMAP: messages marked `\Seen`.
    pub marked_read: u64,
    /// IMAP: messages marked `\Flagged`.
    pub flagged: u64,
    /// IMAP: messages handed on before the folder's UIDVALIDITY changed, recognised and not delivered again.
    pub already_delivered: u64,
    /// IMAP: sessions opened again after one was lost (a dropped connection, an expired token).
    pub reconnects: u64,
}

/// Progress, for a progress bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// This many messages are new (before filters).
    Start {
        /// How many.
        new: u64,
    },
    /// One message handled; `bytes` downloaded for it.
    Message {
        /// Bytes.
        bytes: u64,
    },
}

/// A read failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// The POP3 session failed.
    #[error(transparent)]
    Pop3(#[from] Pop3Error),
    /// The IMAP session failed.
    #[error(transparent)]
    Imap(#[from] crate::imap::ImapError),
    /// A Graph call failed.
    #[error(transparent)]
    Graph(Box<crate::graph::GraphError>),
    /// No token for a new session.
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthError),
    /// The checkpoint store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The sink failed.
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// The server listed one unique id for two messages.
    #[error("the server lists the unique id {uid:?} for two messages")]
    DuplicateUid {
        /// The uid.
        uid: String,
    },
}

impl From<crate::graph::GraphError> for ReadError {
    fn from(error: crate::graph::GraphError) -> Self {
        Self::Graph(Box::new(error))
    }
}

impl Classified for ReadError {
    fn class(&self) -> ErrorClass {
        match self {
            Self::Pop3(e) => e.class(),
            Self::Imap(e) => e.class(),
            Self::Graph(e) => e.class(),
            Self::Auth(e) => e.class(),
            Self::Store(e) => e.class(),
            Self::Sink(e) => e.class(),
            Self::DuplicateUid { .. } => ErrorClass::Admin,
        }
    }
    fn cause(&self) -> String {
        match self {
            Self::Pop3(e) => e.cause(),
            Self::Imap(e) => e.cause(),
            Self::Graph(e) => e.cause(),
            Self::Auth(e) => e.cause(),
            Self::Store(e) => e.cause(),
            Self::Sink(e) => e.cause(),
            Self::DuplicateUid { uid } => format!(
                "the server gives two messages the unique id {uid:?}, so they cannot be told apart"
            ),
        }
    }
    fn remedy(&self) -> String {
        match self {
            Self::Pop3(e) => e.remedy(),
            Self::Imap(e) => e.remedy(),
            Self::Graph(e) => e.remedy(),
            Self::Auth(e) => e.remedy(),
            Self::Store(e) => e.remedy(),
            Self::Sink(e) => e.remedy(),
            Self::DuplicateUid { .. } => "nothing was read (one could be handed on as the other); \
                 report it to the mail server's administrator, or read over IMAP when it is available"
                .into(),
        }
    }
}

/// Reads the signed-in POP3 maildrop of `source` into `sink`, checkpointing in `store`, and ends the session
/// with QUIT (which commits the deletions).
pub async fn read_pop(
    mut pop: Pop3Connection,
    source: &SourceKey,
    store: &mut CheckpointStore,
    sink: &mut dyn Sink,
    options: &ReadOptions,
    clock: &dyn Clock,
    progress: &mut dyn FnMut(Progress),
) -> Result<ReadSummary, ReadError> {
    let now = || unix_secs(clock.now()) as i64;
    let mut summary = ReadSummary::default();
    let ids = pop.unique_ids().await?;
    let sizes: std::collections::HashMap<u32, u64> = pop.sizes().await?.into_iter().collect();
    summary.listed = ids.len() as u64;
    // One uid for two messages would give both one record file and one checkpoint: refuse to guess.
    let mut unique = HashSet::new();
    if let Some((_, uid)) = ids.iter().find(|(_, uid)| !unique.insert(uid.as_str())) {
        return Err(ReadError::DuplicateUid { uid: uid.clone() });
    }

    let present: HashSet<&str> = ids.iter().map(|(_, uid)| uid.as_str()).collect();
    summary.pruned = store.prune(source, &present)? as u64;
    let seen = store.seen(source)?;

    // Actions an earlier run committed to but did not finish (whatever this run's --then says: the
    // checkpoint promised them).
    for (number, uid) in &ids {
        if seen.get(uid) == Some(&SeenState::PendingDelete) {
            match pop.delete(*number).await {
                Ok(()) => {
                    summary.deleted += 1;
                    summary.owed_actions += 1;
                }
                // A refused DELE (a read-only maildrop, no permission) must not block every later run:
                // the record exists, so the message counts as handled.
                Err(Pop3Error::Refused { text, .. }) => {
                    tracing::warn!(uid, reason = %text, "the server refused an owed DELE; the message stays");
                    store.commit(source, uid, SeenState::Done, &source.message_id(uid), now())?;
                    summary.refused += 1;
                }
                Err(other) => return Err(other.into()),
            }
        }
    }

    let mut new: Vec<&(u32, String)> = ids
        .iter()
        .filter(|(_, uid)| !seen.contains_key(uid))
        .collect();
    if options.from_now {
        let marked: Vec<(String, String)> = new
            .iter()
            .map(|(_, uid)| (uid.clone(), source.message_id(uid)))
            .collect();
        store.commit_many(source, &marked, SeenState::FromNow, now())?;
        summary.marked = marked.len() as u64;
        pop.quit().await?;
        return Ok(summary);
    }
    if options.order == Order::Newest {
        new.reverse();
    }
    progress(Progress::Start {
        new: new.len() as u64,
    });

    for (number, uid) in new {
        if options
            .limit
            .is_some_and(|limit| summary.records >= limit as u64)
        {
            break;
        }
        let size = sizes.get(number).copied().unwrap_or(0);
        let header = if options.filter.is_active() || size > options.max_size {
            match pop.top(*number, 0).await {
                Ok(top) => mime::parse(&top).ok(),
                // No header to judge by: a filter does not match, a too-large record has no fields.
                Err(Pop3Error::Refused { .. }) => None,
                Err(other) => return Err(other.into()),
            }
        } else {
            None
        };
        if options.filter.is_active() && !header.as_ref().is_some_and(|h| options.filter.matches(h))
        {
            summary.filtered_out += 1;
            progress(Progress::Message { bytes: 0 });
            continue;
        }
        if size > options.max_size {
            let mut record = MessageRecord::too_large(source, uid, size, header.as_ref());
            sink.write(&mut record, None, None)?;
            store.commit(source, uid, SeenState::Skipped, &record.id, now())?;
            summary.records += 1;
            summary.skipped += 1;
            progress(Progress::Message { bytes: 0 });
            continue;
        }
        let mut raw = Vec::with_capacity(usize::try_from(size).unwrap_or(0).min(64 << 20));
        match pop.retrieve(*number, &mut raw).await {
            Ok(_) => {}
            // One message the server will not give must not stop every later run: its record says why,
            // and it is checkpointed as skipped.
            Err(Pop3Error::Refused { text, .. }) => {
                let mut record = MessageRecord::too_large(source, uid, size, header.as_ref());
                record.skipped = Some("refused by the server".into());
                record.error = Some(format!("RETR: -ERR {text}"));
                sink.write(&mut record, None, None)?;
                store.commit(source, uid, SeenState::Skipped, &record.id, now())?;
                summary.records += 1;
                summary.refused += 1;
                progress(Progress::Message { bytes: 0 });
                continue;
            }
            // Larger than the server said (LIST) by more than the bound: skipped, so the next run moves
            // on; this session is over (the rest of the body is still in flight).
            Err(Pop3Error::Protocol {
                source: m365mail_proto::pop3::client::Pop3ClientError::MessageTooLarge { limit },
                endpoint,
            }) => {
                let mut record = MessageRecord::too_large(source, uid, size, header.as_ref());
                record.error = Some(format!(
                    "larger than {limit} bytes although LIST said {size}"
                ));
                sink.write(&mut record, None, None)?;
                store.commit(source, uid, SeenState::Skipped, &record.id, now())?;
                return Err(ReadError::Pop3(Pop3Error::Protocol {
                    endpoint,
                    source: m365mail_proto::pop3::client::Pop3ClientError::MessageTooLarge {
                        limit,
                    },
                }));
            }
            Err(other) => return Err(other.into()),
        }
        let parsed = mime::parse(&raw);
        let mut record = MessageRecord::downloaded(source, uid, &raw, &parsed);
        sink.write(&mut record, Some(&raw), parsed.as_ref().ok())?;
        let state = match options.then {
            After::None => SeenState::Done,
            After::Delete => SeenState::PendingDelete,
        };
        store.commit(source, uid, state, &record.id, now())?;
        if options.then == After::Delete {
            pop.delete(*number).await?;
            summary.deleted += 1;
        }
        summary.records += 1;
        summary.unreadable += u64::from(parsed.is_err());
        summary.bytes += raw.len() as u64;
        progress(Progress::Message {
            bytes: raw.len() as u64,
        });
    }
    pop.quit().await?;
    Ok(summary)
}
