//! The Graph reader: a folder's new messages through the shared pipeline (record → sink → checkpoint →
//! action), exactly once, with the delta query (microsoft.md §8.5).
//!
//! **Where a run starts.** The source's cursor in the checkpoint store: the last round's whole
//! `@odata.deltaLink`, or — when a run stopped mid-round (`--limit`, a crash) — the page it was reading. The
//! first run starts a round with `changeType=created` and immutable ids (`Prefer: IdType="ImmutableId"`), so
//! an id survives a move and is the checkpoint key. The cursor moves on only after every message of a page is
//! handled, so a crash re-reads at most a page, and the seen-set (the checkpoint rows) keeps what was handed
//! on from being handed on again — also after `--then mark-read`, which Graph reports as no new message.
//!
//! **Resync.** When Graph no longer knows the round (`syncStateNotFound`, `resyncRequired`), the folder is
//! read again from a new round; every message already handed on is recognised by its id and skipped
//! (`already_delivered`), and rows of messages no longer in the folder are forgotten.
//!
//! **Order.** For each message: its MIME (`$value`, read up to `--max-size`) is written to the sink and made
//! durable, its row committed with the action it owes, then the action runs (PATCH, move, copy, DELETE) and
//! the row becomes `done`. A row left pending is acted on by the next run. Up to four downloads run at once
//! (Outlook's per-mailbox limit), but records are written in the page's order.
//!
//! **Filters.** Graph's delta query filters only by `receivedDateTime` (server-side, `--since`); the others
//! (`--before`, `--unseen`, `--from`, `--to`, `--subject`, `--has-attachment`) are checked here on the
//! properties each page lists, and `--larger-than` on the downloaded MIME (Graph lists no size). A message
//! left out by a filter is not seen again by later rounds (they list only new messages), as with a mail
//! rule.

// GraphError carries what support needs (request ids, the permission); it is built once per failed call.
#![allow(clippy::result_large_err)]

use std::collections::{HashMap, HashSet};

use super::record::MessageRecord;
use super::sink::Sink;
use super::{Progress, ReadError, ReadSummary};
use crate::error::Classified as _;
use crate::graph::GraphClient;
use crate::graph::GraphError;
use crate::graph::mail::{GraphMessage, MimeDownload};
use crate::mime;
use crate::secret::Secret;
use crate::store::{CheckpointStore, SeenRow, SeenState, SourceKey};
use crate::time::{Clock, unix_secs};

/// Downloads in flight at once (Outlook's limit per mailbox is 4 requests).
const PREFETCH: usize = 4;
/// Resyncs in one run before giving up (a server that keeps forgetting the round).
const MAX_RESYNCS: u32 = 2;

/// What happens to a message once its record and checkpoint are committed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum GraphAction {
    /// Nothing.
    #[default]
    None,
    /// `isRead` set.
    MarkRead,
    /// Flagged.
    Flag,
    /// Moved to this folder (an id or well-known name).
    Move(String),
    /// Copied to this folder.
    Copy(String),
    /// Deleted (Exchange keeps it in Recoverable Items).
    Delete,
}

/// How to read a folder over Graph.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphReadOptions {
    /// The folder's id or well-known name (`inbox`).
    pub folder: String,
    /// At most this many records.
    pub limit: Option<usize>,
    /// Received at or after this instant (asked of Graph).
    pub since: Option<i64>,
    /// Received before this instant.
    pub before: Option<i64>,
    /// Only unread messages.
    pub unseen: bool,
    /// Only messages Graph says have attachments.
    pub has_attachment: bool,
    /// A From name or address containing this (case-insensitive).
    pub from: Option<String>,
    /// A To name or address containing this (case-insensitive).
    pub to: Option<String>,
    /// A Subject containing this (case-insensitive).
    pub subject: Option<String>,
    /// Only messages larger than this many bytes (checked on the download).
    pub larger_than: Option<u64>,
    /// Larger messages are not kept: a `skipped` record instead (at most this much is downloaded).
    pub max_size: u64,
    /// After-processing.
    pub then: GraphAction,
    /// Record what is in the folder now as seen, without reading it.
    pub from_now: bool,
}

impl Default for GraphReadOptions {
    fn default() -> Self {
        Self {
            folder: "inbox".into(),
            limit: None,
            since: None,
            before: None,
            unseen: false,
            has_attachment: false,
            from: None,
            to: None,
            subject: None,
            larger_than: None,
            max_size: 50 * 1024 * 1024,
            then: GraphAction::None,
            from_now: false,
        }
    }
}

/// Tokens for the reader: called with `true` after Graph refused the last one (expired or revoked).
#[allow(async_fn_in_trait)] // awaited on the reader's own task
pub trait GraphTokens {
    /// A token; a renewed one when `renew`.
    async fn token(&mut self, renew: bool) -> Result<Secret, ReadError>;
}

impl<F, Fut> GraphTokens for F
where
    F: FnMut(bool) -> Fut,
    Fut: Future<Output = Result<Secret, crate::auth::AuthError>>,
{
    async fn token(&mut self, renew: bool) -> Result<Secret, ReadError> {
        Ok(self(renew).await?)
    }
}

/// Whether Graph refused the token itself (401): a renewed one may do.
fn token_refused(error: &GraphError) -> bool {
    matches!(error, GraphError::Api { status: 401, .. })
}

/// Runs one Graph call, once more with a renewed token when Graph refused the first (it expired mid-run).
macro_rules! with_token {
    ($reader:expr, |$token:ident| $call:expr) => {{
        let first = {
            let $token = &$reader.token;
            $call.await
        };
        match first {
            Err(error) if token_refused(&error) => {
                tracing::info!(%error, "Graph refused the token; renewing it");
                $reader.token = $reader.tokens.token(true).await?;
                let $token = &$reader.token;
                $call.await
            }
            other => other,
        }
    }};
}

/// Reads `options.folder` of `mailbox` into `sink` through `client`, checkpointing in `store`.
#[allow(clippy::too_many_arguments)] // the pipeline's parts, as read_imap takes them
pub async fn read_graph<T: GraphTokens>(
    client: &GraphClient,
    tokens: &mut T,
    mailbox: &str,
    source: &SourceKey,
    store: &mut CheckpointStore,
    sink: &mut dyn Sink,
    options: &GraphReadOptions,
    clock: &dyn Clock,
    progress: &mut dyn FnMut(Progress),
) -> Result<ReadSummary, ReadError> {
    let token = tokens.token(false).await?;
    let mut reader = Reader {
        client,
        tokens,
        token,
        mailbox,
        source,
        store,
        sink,
        options,
        clock,
        progress,
        summary: ReadSummary::default(),
    };
    reader.run().await?;
    Ok(reader.summary)
}

struct Reader<'a, T> {
    client: &'a GraphClient,
    tokens: &'a mut T,
    token: Secret,
    mailbox: &'a str,
    source: &'a SourceKey,
    store: &'a mut CheckpointStore,
    sink: &'a mut dyn Sink,
    options: &'a GraphReadOptions,
    clock: &'a dyn Clock,
    progress: &'a mut dyn FnMut(Progress),
    summary: ReadSummary,
}

/// The state an action leaves until it is done, and its destination.
fn pending(action: &GraphAction) -> (SeenState, Option<String>) {
    match action {
        GraphAction::None => (SeenState::Done, None),
        GraphAction::MarkRead => (SeenState::PendingMarkRead, None),
        GraphAction::Flag => (SeenState::PendingFlag, None),
        GraphAction::Move(folder) => (SeenState::PendingMove, Some(folder.clone())),
        GraphAction::Copy(folder) => (SeenState::PendingCopy, Some(folder.clone())),
        GraphAction::Delete => (SeenState::PendingDelete, None),
    }
}

fn contains(haystack: &str, needle: &str) -> bool {
    haystack.to_lowercase().contains(&needle.to_lowercase())
}

fn address_contains(address: &crate::graph::mail::EmailAddress, needle: &str) -> bool {
    [&address.name, &address.address]
        .into_iter()
        .flatten()
        .any(|text| contains(text, needle))
}

impl<T: GraphTokens> Reader<'_, T> {
    fn now(&self) -> i64 {
        unix_secs(self.clock.now()) as i64
    }

    fn limit_reached(&self) -> bool {
        self.options
            .limit
            .is_some_and(|limit| self.summary.records >= limit as u64)
    }

    /// Whether a listed message passes the filters Graph did not apply.
    fn wanted(&self, message: &GraphMessage) -> bool {
        let options = self.options;
        let received = message
            .received_date_time
            .as_deref()
            .and_then(|date| chrono::DateTime::parse_from_rfc3339(date).ok())
            .map(|date| date.timestamp());
        if options
            .since
            .is_some_and(|since| received.is_none_or(|r| r < since))
            || options
                .before
                .is_some_and(|before| received.is_none_or(|r| r >= before))
            || (options.unseen && message.is_read != Some(false))
            || (options.has_attachment && message.has_attachments != Some(true))
        {
            return false;
        }
        if let Some(from) = &options.from
            && !message
                .from
                .as_ref()
                .is_some_and(|a| address_contains(a, from))
        {
            return false;
        }
        if let Some(to) = &options.to
            && !message
                .to_recipients
                .iter()
                .any(|a| address_contains(a, to))
        {
            return false;
        }
        if let Some(subject) = &options.subject
            && !message
                .subject
                .as_deref()
                .is_some_and(|s| contains(s, subject))
        {
            return false;
        }
        true
    }

    async fn run(&mut self) -> Result<(), ReadError> {
        let mut rows = self.store.rows(self.source)?;
        self.finish_owed(&mut rows).await?;

        let since = self
            .options
            .since
            .map(|s| crate::time::rfc3339(s.max(0) as u64));
        let start = self
            .client
            .delta_start(self.mailbox, &self.options.folder, since.as_deref());
        let cursor = self.store.cursor(self.source)?;
        let mut full_sync = cursor.is_none();
        let mut url = match cursor.as_deref().map(url::Url::parse) {
            Some(Ok(url)) => url,
            Some(Err(error)) => {
                tracing::warn!(%error, "the stored delta link is not a URL; reading the folder again");
                full_sync = true;
                start.clone()
            }
            None => start.clone(),
        };
        let mut resyncs = 0;
        // Every id a full round lists, to forget rows of messages that left the folder.
        let mut present: HashSet<String> = HashSet::new();
        let mut announced = false;
        loop {
            let page = with_token!(self, |token| self.client.delta_page(
                token,
                self.mailbox,
                &url
            ));
            let page = match page {
                Ok(page) => page,
                Err(error) if error.needs_resync() && resyncs < MAX_RESYNCS => {
                    resyncs += 1;
                    tracing::warn!(%error, "Graph no longer knows the delta round: reading the folder again, skipping what was handed on");
                    self.store.set_cursor(self.source, None)?;
                    url = start.clone();
                    full_sync = true;
                    present.clear();
                    continue;
                }
                Err(error) => return Err(error.into()),
            };
            let listed: Vec<GraphMessage> = page
                .messages
                .into_iter()
                .filter(|m| m.removed.is_none())
                .collect();
            self.summary.listed += listed.len() as u64;
            if full_sync {
                present.extend(listed.iter().map(|m| m.id.clone()));
            }
            if !announced {
                announced = true;
                (self.progress)(Progress::Start {
                    new: listed.iter().filter(|m| !rows.contains_key(&m.id)).count() as u64,
                });
            }
            let finished = self
                .handle_page(listed, &mut rows, full_sync && resyncs > 0)
                .await?;
            if !finished {
                // --limit: this page is read again next time (what was handed on is skipped).
                return Ok(());
            }
            match (page.next, page.delta) {
                (Some(next), _) => {
                    self.store.set_cursor(self.source, Some(next.as_str()))?;
                    url = next;
                }
                (None, Some(delta)) => {
                    self.store.set_cursor(self.source, Some(delta.as_str()))?;
                    break;
                }
                (None, None) => unreachable!("delta_page refuses a page without links"),
            }
        }
        // A complete full round lists every message of the folder (unless --since narrowed it): rows of
        // the others are forgotten, owed actions excepted.
        if full_sync && self.options.since.is_none() {
            let gone: Vec<String> = rows
                .iter()
                .filter(|(id, row)| !present.contains(*id) && !row.state.is_pending())
                .map(|(id, _)| id.clone())
                .collect();
            if !gone.is_empty() {
                self.store.forget(self.source, &gone)?;
                self.summary.pruned += gone.len() as u64;
            }
        }
        Ok(())
    }

    /// Handles one page's messages in order; `false` when `--limit` stopped it before the end.
    async fn handle_page(
        &mut self,
        listed: Vec<GraphMessage>,
        rows: &mut HashMap<String, SeenRow>,
        resyncing: bool,
    ) -> Result<bool, ReadError> {
        let mut new = Vec::new();
        // Delta may list an item twice (Microsoft tells clients to expect replays): once in a page is once.
        let mut in_page: HashSet<String> = HashSet::new();
        for message in listed {
            if rows.contains_key(&message.id) || !in_page.insert(message.id.clone()) {
                if resyncing {
                    self.summary.already_delivered += 1;
                }
                continue;
            }
            if self.options.from_now {
                let id = self.source.message_id(&message.id);
                let now = self.now();
                self.store.commit_rows(
                    self.source,
                    &[(
                        message.id.clone(),
                        id,
                        SeenRow {
                            state: SeenState::FromNow,
                            target: None,
                            fingerprint: None,
                        },
                    )],
                    now,
                )?;
                rows.insert(
                    message.id,
                    SeenRow {
                        state: SeenState::FromNow,
                        target: None,
                        fingerprint: None,
                    },
                );
                self.summary.marked += 1;
                continue;
            }
            if !self.wanted(&message) {
                self.summary.filtered_out += 1;
                (self.progress)(Progress::Message { bytes: 0 });
                continue;
            }
            new.push(message);
        }
        // Downloads run ahead (at most PREFETCH at once); records are written in the page's order.
        let limit = usize::try_from(self.options.max_size.saturating_add(1)).unwrap_or(usize::MAX);
        let mut index = 0;
        while index < new.len() {
            if self.limit_reached() {
                return Ok(false);
            }
            let room = self
                .options
                .limit
                .map_or(usize::MAX, |limit| limit - self.summary.records as usize);
            let group: Vec<&GraphMessage> = new[index..].iter().take(PREFETCH.min(room)).collect();
            index += group.len();
            let downloads = {
                let client = self.client;
                let mailbox = self.mailbox;
                let token = self.token.clone();
                download_all(client, &token, mailbox, &group, limit).await
            };
            for (message, download) in group.into_iter().zip(downloads) {
                let download = match download {
                    Err(error) if token_refused(&error) => {
                        self.token = self.tokens.token(true).await?;
                        with_token!(self, |token| self.client.message_mime(
                            token,
                            self.mailbox,
                            &message.id,
                            limit
                        ))
                    }
                    other => other,
                };
                match download {
                    Ok(download) => self.deliver(message, download, rows).await?,
                    // Gone since the page was listed (moved or deleted by someone else).
                    Err(error) if error.is_not_found() => {
                        tracing::info!(id = %message.id, "a listed message is gone; nothing to hand on");
                    }
                    Err(error) => return Err(error.into()),
                }
            }
        }
        Ok(true)
    }

    /// Writes one message's record, commits its row, runs the action and marks it done.
    async fn deliver(
        &mut self,
        message: &GraphMessage,
        download: MimeDownload,
        rows: &mut HashMap<String, SeenRow>,
    ) -> Result<(), ReadError> {
        let too_large = download.truncated;
        if !too_large
            && self
                .options
                .larger_than
                .is_some_and(|floor| download.bytes.len() as u64 <= floor)
        {
            self.summary.filtered_out += 1;
            (self.progress)(Progress::Message { bytes: 0 });
            return Ok(());
        }
        let id = &message.id;
        let bytes = download.bytes.len() as u64;
        let (mut record, parsed) = if too_large {
            // What was read holds the header: enough for the record's addresses and subject.
            let end = download
                .bytes
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .map_or(download.bytes.len(), |at| at + 4);
            let header = mime::parse(&download.bytes[..end]).ok();
            (
                MessageRecord::too_large(self.source, id, bytes, header.as_ref()),
                None,
            )
        } else {
            let parsed = mime::parse(&download.bytes);
            (
                MessageRecord::downloaded(self.source, id, &download.bytes, &parsed),
                Some(parsed),
            )
        };
        match &parsed {
            Some(parsed) => {
                self.sink
                    .write(&mut record, Some(&download.bytes), parsed.as_ref().ok())?
            }
            None => self.sink.write(&mut record, None, None)?,
        }
        // A message too large to keep is not acted on either: it stays where it is, recorded as skipped.
        let (state, target) = if too_large {
            (SeenState::Skipped, None)
        } else {
            pending(&self.options.then)
        };
        let row = SeenRow {
            state,
            target: target.clone(),
            fingerprint: None,
        };
        let now = self.now();
        self.store.commit_rows(
            self.source,
            &[(id.clone(), record.id.clone(), row.clone())],
            now,
        )?;
        rows.insert(id.clone(), row);
        self.summary.records += 1;
        match &parsed {
            Some(parsed) => {
                self.summary.unreadable += u64::from(parsed.is_err());
                self.summary.bytes += bytes;
            }
            None => self.summary.skipped += 1,
        }
        (self.progress)(Progress::Message {
            bytes: if too_large { 0 } else { bytes },
        });
        if state.is_pending() {
            self.act(id, state, target.as_deref()).await?;
            self.done(id, rows)?;
        }
        Ok(())
    }

    /// Runs an owed or new action on message `id`; a message already gone counts as refused.
    async fn act(
        &mut self,
        id: &str,
        state: SeenState,
        target: Option<&str>,
    ) -> Result<(), ReadError> {
        let target = target.unwrap_or_default();
        let mailbox = self.mailbox;
        let result = match state {
            SeenState::PendingMarkRead => {
                with_token!(self, |token| self.client.mark_read(token, mailbox, id))
            }
            SeenState::PendingFlag => {
                with_token!(self, |token| self.client.flag(token, mailbox, id))
            }
            SeenState::PendingMove => with_token!(self, |token| self
                .client
                .move_or_copy(token, mailbox, id, "move", target))
            .map(drop),
            SeenState::PendingCopy => with_token!(self, |token| self
                .client
                .move_or_copy(token, mailbox, id, "copy", target))
            .map(drop),
            SeenState::PendingDelete => {
                with_token!(self, |token| self.client.delete_message(token, mailbox, id))
            }
            _ => Ok(()),
        };
        match result {
            Ok(()) => {
                match state {
                    SeenState::PendingMarkRead => self.summary.marked_read += 1,
                    SeenState::PendingFlag => self.summary.flagged += 1,
                    SeenState::PendingMove => self.summary.moved += 1,
                    SeenState::PendingCopy => self.summary.copied += 1,
                    SeenState::PendingDelete => self.summary.deleted += 1,
                    _ => {}
                }
                Ok(())
            }
            // The message (or the destination) went away since: the record exists, so it counts as handled.
            Err(error) if error.is_not_found() => {
                tracing::warn!(%error, %id, "an owed action's message or folder is gone; given up");
                self.summary.refused += 1;
                Ok(())
            }
            Err(error) => Err(error.into()),
        }
    }

    fn done(&mut self, id: &str, rows: &mut HashMap<String, SeenRow>) -> Result<(), ReadError> {
        let record_id = self.source.message_id(id);
        let now = self.now();
        self.store.commit_many(
            self.source,
            &[(id.to_owned(), record_id)],
            SeenState::Done,
            now,
        )?;
        if let Some(row) = rows.get_mut(id) {
            row.state = SeenState::Done;
            row.target = None;
        }
        Ok(())
    }

    /// Actions an earlier run committed to but did not finish (whatever this run's `--then` says).
    async fn finish_owed(&mut self, rows: &mut HashMap<String, SeenRow>) -> Result<(), ReadError> {
        let owed: Vec<(String, SeenState, Option<String>)> = rows
            .iter()
            .filter(|(_, row)| row.state.is_pending())
            .map(|(id, row)| (id.clone(), row.state, row.target.clone()))
            .collect();
        for (id, state, target) in owed {
            match self.act(&id, state, target.as_deref()).await {
                Ok(()) => {
                    self.summary.owed_actions += 1;
                    self.done(&id, rows)?;
                }
                // Graph is away or throttling: the run stops here and the next one tries again.
                Err(error) if error.class() == crate::error::ErrorClass::Transient => {
                    return Err(error);
                }
                // A refusal (a permission taken away, a request Graph will not take) would stop every later
                // run before it reads anything: the action stays owed, for when it is fixed, and the run
                // goes on reading.
                Err(error) => {
                    tracing::warn!(%error, %id, "an owed action was refused; it stays owed, reading goes on");
                    self.summary.refused += 1;
                }
            }
        }
        Ok(())
    }
}

/// Downloads `group`'s MIME at once (each under the client's per-mailbox limit), in the group's order.
async fn download_all(
    client: &GraphClient,
    token: &Secret,
    mailbox: &str,
    group: &[&GraphMessage],
    limit: usize,
) -> Vec<Result<MimeDownload, GraphError>> {
    let mut tasks = tokio::task::JoinSet::new();
    for (index, message) in group.iter().enumerate() {
        let (client, token, mailbox, id) = (
            client.clone(),
            token.clone(),
            mailbox.to_owned(),
            message.id.clone(),
        );
        tasks.spawn(async move {
            (
                index,
                client.message_mime(&token, &mailbox, &id, limit).await,
            )
        });
    }
    let mut results: Vec<Option<Result<MimeDownload, GraphError>>> =
        (0..group.len()).map(|_| None).collect();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((index, result)) => results[index] = Some(result),
            Err(error) => std::panic::resume_unwind(error.into_panic()),
        }
    }
    results
        .into_iter()
        .map(|r| r.expect("every task reports"))
        .collect()
}
