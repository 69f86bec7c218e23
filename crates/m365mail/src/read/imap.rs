//! The IMAP reader: a folder's new messages through the shared pipeline (record → sink → checkpoint →
//! action), exactly once, across dropped connections and expired tokens.
//!
//! **Identity.** A message is `UIDVALIDITY:UID` in its folder (the stable id and the checkpoint key). When the
//! folder's UIDVALIDITY changes, every old key is void: the folder is read again, and a message whose
//! fingerprint (Message-ID, size, INTERNALDATE) was handed on under the old validity is skipped and counted
//! (`already_delivered`), never delivered a second time; the old keys are forgotten at the end of that run.
//!
//! **Order.** For each batch: each record is written and made durable, its row committed (with the action it
//! owes: `pending-move` and its destination, …), then the batch's action runs (`UID MOVE`, `UID STORE`, …) and
//! the rows become `done`. A row left pending by a crash is acted on by the next run, without a second
//! record; a pending move whose message is no longer in the folder is finished. Without MOVE (or with
//! [`ImapReadOptions::prefer_move`] off) a move is `UID COPY` + `\Deleted` + `UID EXPUNGE`: a crash between the
//! copy and the expunge leaves the message in both folders, and the owed move then copies it again — the
//! destination may hold a second copy, the sink never a second record.
//!
//! **Sessions.** A lost connection, a `* BYE` (Exchange's `Session invalidated - AccessTokenExpired`) or a
//! deadline ends the session, not the run: the connector opens a new one (with a renewed token after an
//! expiry) and the run goes on from the checkpoint, at most [`MAX_RECONNECTS`] times.

use std::collections::{HashMap, HashSet};

use super::record::MessageRecord;
use super::sink::Sink;
use super::{Order, Progress, ReadError, ReadSummary};
use crate::imap::{
    BODY_BATCH_BYTES, BODY_BATCH_MESSAGES, ImapClient, ImapError, MessageMeta, SearchQuery,
};
use crate::mime;
use crate::store::{CheckpointStore, SeenRow, SeenState, SourceKey};
use crate::time::{Clock, unix_secs};

/// How many times a run opens a new session after one was lost.
pub const MAX_RECONNECTS: u32 = 5;
/// UIDs whose metadata is fetched in one command.
const META_BATCH: usize = 200;

/// What happens to a message once its record and checkpoint are committed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ImapAction {
    /// Nothing (the folder is opened read-only: EXAMINE).
    #[default]
    None,
    /// `\Seen` set.
    MarkRead,
    /// `\Flagged` set.
    Flag,
    /// Moved to this folder.
    Move(String),
    /// Copied to this folder.
    Copy(String),
    /// Moved to the folder LIST marks `\Trash` (Exchange: Deleted Items).
    Trash,
    /// `\Deleted` and expunged: gone for good (not in Deleted Items).
    Delete,
}

/// How to read a folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImapReadOptions {
    /// The folder (Unicode name).
    pub folder: String,
    /// At most this many records.
    pub limit: Option<usize>,
    /// Which first (by UID).
    pub order: Order,
    /// Server-side criteria (`UID SEARCH`).
    pub search: SearchQuery,
    /// INTERNALDATE at or after this instant (the search's SINCE is by day; this is exact).
    pub since: Option<i64>,
    /// INTERNALDATE before this instant.
    pub before: Option<i64>,
    /// Only messages whose BODYSTRUCTURE shows an attachment.
    pub has_attachment: bool,
    /// Larger messages (RFC822.SIZE) are not downloaded: a `skipped` record instead.
    pub max_size: u64,
    /// After-processing.
    pub then: ImapAction,
    /// Use MOVE when the server offers it (else COPY + `\Deleted` + UID EXPUNGE).
    pub prefer_move: bool,
    /// Record what is in the folder now as seen, without reading it.
    pub from_now: bool,
}

impl Default for ImapReadOptions {
    fn default() -> Self {
        Self {
            folder: "INBOX".into(),
            limit: None,
            order: Order::Oldest,
            search: SearchQuery::default(),
            since: None,
            before: None,
            has_attachment: false,
            max_size: 50 * 1024 * 1024,
            then: ImapAction::None,
            prefer_move: true,
            from_now: false,
        }
    }
}

/// Opens signed-in sessions for the reader: the first, and a new one after the server ended one.
#[allow(async_fn_in_trait)] // awaited on the reader's own task
pub trait ImapConnector {
    /// The session type.
    type Client: ImapClient;
    /// A new signed-in session; `renew_token` after the server said the token expired.
    async fn connect(&mut self, renew_token: bool) -> Result<Self::Client, ReadError>;
}

/// The connector of [`crate::imap::ImapConnection`]: XOAUTH2 as `user` with a token from `tokens`, which is
/// called with `true` after the server said the last one expired (a `TokenProvider`'s `force_renew`).
pub struct Xoauth2Connector<F> {
    /// Where and how to connect.
    pub options: crate::imap::ImapOptions,
    /// The mailbox (`user=`).
    pub user: String,
    /// Where tokens come from.
    pub tokens: F,
}

impl<F, Fut> ImapConnector for Xoauth2Connector<F>
where
    F: FnMut(bool) -> Fut,
    Fut: Future<Output = Result<crate::Secret, crate::auth::AuthError>>,
{
    type Client = crate::imap::ImapConnection;

    async fn connect(&mut self, renew_token: bool) -> Result<Self::Client, ReadError> {
        let token = (self.tokens)(renew_token).await?;
        Ok(crate::imap::ImapConnection::connect(&self.options, &self.user, &token).await?)
    }
}

/// The key of a message in the checkpoint store.
fn key(validity: u32, uid: u32) -> String {
    format!("{validity}:{uid}")
}

/// What identifies a message across a UIDVALIDITY change.
fn fingerprint(message_id: Option<&str>, size: u64, internal_date: Option<i64>) -> Option<String> {
    let id = message_id?
        .trim()
        .trim_start_matches('<')
        .trim_end_matches('>');
    (!id.is_empty()).then(|| format!("{id}|{size}|{}", internal_date.unwrap_or(0)))
}

/// The pending state (and target) an action leaves until it is done.
fn pending(action: &ImapAction, trash: &str) -> (SeenState, Option<String>) {
    match action {
        ImapAction::None => (SeenState::Done, None),
        ImapAction::MarkRead => (SeenState::PendingMarkRead, None),
        ImapAction::Flag => (SeenState::PendingFlag, None),
        ImapAction::Move(folder) => (SeenState::PendingMove, Some(folder.clone())),
        ImapAction::Copy(folder) => (SeenState::PendingCopy, Some(folder.clone())),
        ImapAction::Trash => (SeenState::PendingMove, Some(trash.to_owned())),
        ImapAction::Delete => (SeenState::PendingDelete, None),
    }
}

/// Reads `options.folder` of the mailbox the connector signs in to into `sink`, checkpointing in `store`.
pub async fn read_imap<K: ImapConnector>(
    connector: &mut K,
    source: &SourceKey,
    store: &mut CheckpointStore,
    sink: &mut dyn Sink,
    options: &ImapReadOptions,
    clock: &dyn Clock,
    progress: &mut dyn FnMut(Progress),
) -> Result<ReadSummary, ReadError> {
    let mut summary = ReadSummary::default();
    let mut lost = 0;
    // A session can end right after sign-in too (a token that expires then): the same budget applies.
    let mut client = match connector.connect(false).await {
        Ok(client) => client,
        Err(ReadError::Imap(error)) if error.is_session_lost() => {
            lost += 1;
            summary.reconnects += 1;
            tracing::warn!(%error, "IMAP session lost at sign-in; opening a new one");
            reconnect(connector, error.token_expired(), lost).await?
        }
        Err(error) => return Err(error),
    };
    loop {
        let outcome = Pass {
            source,
            store: &mut *store,
            sink: &mut *sink,
            options,
            clock,
            progress: &mut *progress,
            summary: &mut summary,
            trash: String::new(),
        }
        .run(&mut client)
        .await;
        match outcome {
            Ok(()) => {
                // The work is committed; a failed LOGOUT changes nothing.
                if let Err(error) = client.logout().await {
                    tracing::debug!(%error, "IMAP LOGOUT failed");
                }
                return Ok(summary);
            }
            Err(ReadError::Imap(error)) if error.is_session_lost() && lost < MAX_RECONNECTS => {
                lost += 1;
                summary.reconnects += 1;
                tracing::warn!(%error, attempt = lost, "IMAP session lost; opening a new one");
                client = reconnect(connector, error.token_expired(), lost).await?;
            }
            Err(error) => return Err(error),
        }
    }
}

/// A new session after a lost one: a connection refused or dropped while connecting is tried again (with a
/// growing pause) within the run's budget of [`MAX_RECONNECTS`].
async fn reconnect<K: ImapConnector>(
    connector: &mut K,
    renew_token: bool,
    attempt: u32,
) -> Result<K::Client, ReadError> {
    let mut attempt = attempt;
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(100 * u64::from(attempt))).await;
        match connector.connect(renew_token).await {
            Ok(client) => return Ok(client),
            Err(ReadError::Imap(error))
                if attempt < MAX_RECONNECTS
                    && (error.is_session_lost()
                        || matches!(&error, ImapError::Transport(t)
                            if t.kind() == crate::transport::TransportKind::Connect)) =>
            {
                attempt += 1;
                tracing::warn!(%error, attempt, "IMAP reconnect failed; trying again");
            }
            Err(error) => return Err(error),
        }
    }
}

/// One session's share of a run.
struct Pass<'a> {
    source: &'a SourceKey,
    store: &'a mut CheckpointStore,
    sink: &'a mut dyn Sink,
    options: &'a ImapReadOptions,
    clock: &'a dyn Clock,
    progress: &'a mut dyn FnMut(Progress),
    summary: &'a mut ReadSummary,
    /// `--then trash`'s folder (the one LIST marks `\Trash`), looked up once a pass.
    trash: String,
}

impl Pass<'_> {
    fn now(&self) -> i64 {
        unix_secs(self.clock.now()) as i64
    }

    async fn run<C: ImapClient>(&mut self, client: &mut C) -> Result<(), ReadError> {
        let options = self.options;
        let read_only = options.then == ImapAction::None || options.from_now;
        // The destination is checked before anything is read: a record whose action cannot run would
        // leave an action owed that no run can finish.
        match &options.then {
            ImapAction::Trash => self.trash = trash_folder(client).await?,
            ImapAction::Move(folder) | ImapAction::Copy(folder) => {
                let folders = client.folders(false).await?;
                if !folders.iter().any(|f| same_folder(&f.name, folder)) {
                    return Err(ImapError::NoSuchFolder {
                        endpoint: client.endpoint().to_owned(),
                        folder: folder.clone(),
                    }
                    .into());
                }
            }
            _ => {}
        }
        let selected = client.select(&options.folder, read_only).await?;
        let validity = selected.uid_validity;
        let present = client.search(&SearchQuery::default()).await?;
        self.summary.listed = present.len() as u64;
        let present_set: HashSet<u32> = present.iter().copied().collect();

        let mut current: HashMap<u32, SeenRow> = HashMap::new();
        let mut old: Vec<(String, SeenRow)> = Vec::new();
        for (stored, row) in self.store.rows(self.source)? {
            match stored.split_once(':') {
                Some((v, uid)) if v == validity.to_string() => {
                    if let Ok(uid) = uid.parse() {
                        current.insert(uid, row);
                    }
                }
                _ => old.push((stored, row)),
            }
        }
        // Forget what left the folder (a pending move whose message is gone was done).
        let gone: Vec<String> = current
            .keys()
            .filter(|uid| !present_set.contains(uid))
            .map(|uid| key(validity, *uid))
            .collect();
        if !gone.is_empty() {
            self.store.forget(self.source, &gone)?;
            self.summary.pruned += gone.len() as u64;
            current.retain(|uid, _| present_set.contains(uid));
        }

        // Actions an earlier run committed to but did not finish (whatever this run's --then says).
        let mut owed: HashMap<(SeenState, Option<String>), Vec<u32>> = HashMap::new();
        for (uid, row) in &current {
            if row.state.is_pending() {
                owed.entry((row.state, row.target.clone()))
                    .or_default()
                    .push(*uid);
            }
        }
        for ((state, target), uids) in owed {
            let action = match state {
                SeenState::PendingMarkRead => ImapAction::MarkRead,
                SeenState::PendingFlag => ImapAction::Flag,
                SeenState::PendingMove => ImapAction::Move(target.unwrap_or_default()),
                SeenState::PendingCopy => ImapAction::Copy(target.unwrap_or_default()),
                _ => ImapAction::Delete,
            };
            if read_only {
                // The folder is open read-only (`--then none`): reopen it to act, then go on.
                client.select(&options.folder, false).await?;
            }
            match self.act(client, &action, &uids).await {
                Ok(()) => self.summary.owed_actions += uids.len() as u64,
                // The destination went away since: the records exist, so the messages count as handled.
                Err(ReadError::Imap(ImapError::NoSuchFolder { folder, .. })) => {
                    tracing::warn!(%folder, count = uids.len(), "an owed move or copy's folder is gone; left in place");
                    self.summary.refused += uids.len() as u64;
                }
                Err(other) => return Err(other),
            }
            self.done(validity, &uids)?;
            if read_only {
                client.select(&options.folder, true).await?;
            }
        }

        let validity_changed = !old.is_empty();
        let known: HashSet<String> = old
            .iter()
            .filter_map(|(_, row)| row.fingerprint.clone())
            .collect();
        if validity_changed {
            tracing::warn!(
                folder = %options.folder,
                validity,
                remembered = old.len(),
                "the folder's UIDVALIDITY changed: reading it again, skipping what was handed on"
            );
        }

        if options.from_now {
            let marked: Vec<(String, String)> = present
                .iter()
                .filter(|uid| !current.contains_key(uid))
                .map(|uid| {
                    let key = key(validity, *uid);
                    let id = self.source.message_id(&key);
                    (key, id)
                })
                .collect();
            let now = self.now();
            self.store
                .commit_many(self.source, &marked, SeenState::FromNow, now)?;
            self.summary.marked = marked.len() as u64;
            self.forget_old(&old)?;
            return Ok(());
        }

        let candidates = if options.search.is_active() {
            client.search(&options.search).await?
        } else {
            present.clone()
        };
        let mut new: Vec<u32> = candidates
            .into_iter()
            .filter(|uid| present_set.contains(uid) && !current.contains_key(uid))
            .collect();
        self.summary.filtered_out +=
            (present.len() - current.len()).saturating_sub(new.len()) as u64;
        if options.order == Order::Newest {
            new.reverse();
        }
        tracing::debug!(
            folder = %options.folder,
            validity,
            present = present.len(),
            remembered = current.len(),
            new = new.len(),
            "IMAP folder read"
        );
        (self.progress)(Progress::Start {
            new: new.len() as u64,
        });

        for chunk in new.chunks(META_BATCH) {
            if self.limit_reached() {
                break;
            }
            let mut meta = client
                .metadata(chunk, options.has_attachment, validity_changed)
                .await?;
            let position: HashMap<u32, usize> =
                chunk.iter().enumerate().map(|(i, uid)| (*uid, i)).collect();
            meta.sort_by_key(|m| position.get(&m.uid).copied().unwrap_or(usize::MAX));
            let mut wanted = Vec::new();
            for m in meta {
                let date = m.internal_date.unwrap_or(0);
                let outside = options.since.is_some_and(|since| date < since)
                    || options.before.is_some_and(|before| date >= before)
                    || (options.has_attachment && m.has_attachment != Some(true));
                if outside {
                    self.summary.filtered_out += 1;
                    (self.progress)(Progress::Message { bytes: 0 });
                    continue;
                }
                if validity_changed
                    && let Some(print) =
                        fingerprint(m.message_id.as_deref(), m.size, m.internal_date)
                    && known.contains(&print)
                {
                    // Handed on under the old UIDVALIDITY: remembered under the new one, not delivered again.
                    let key = key(validity, m.uid);
                    let row = SeenRow {
                        state: SeenState::Done,
                        target: None,
                        fingerprint: Some(print),
                    };
                    let now = self.now();
                    self.store.commit_rows(
                        self.source,
                        &[(key.clone(), self.source.message_id(&key), row)],
                        now,
                    )?;
                    self.summary.already_delivered += 1;
                    (self.progress)(Progress::Message { bytes: 0 });
                    continue;
                }
                wanted.push(m);
            }
            for group in body_groups(wanted, options.max_size) {
                if self.limit_reached() {
                    break;
                }
                self.deliver(client, validity, group).await?;
            }
        }
        self.forget_old(&old)?;
        Ok(())
    }

    fn limit_reached(&self) -> bool {
        self.options
            .limit
            .is_some_and(|limit| self.summary.records >= limit as u64)
    }

    fn forget_old(&mut self, old: &[(String, SeenRow)]) -> Result<(), ReadError> {
        if old.is_empty() {
            return Ok(());
        }
        let keys: Vec<String> = old.iter().map(|(key, _)| key.clone()).collect();
        if old.iter().any(|(_, row)| row.state.is_pending()) {
            tracing::warn!(
                "actions owed under the old UIDVALIDITY are dropped: their UIDs name nothing now"
            );
        }
        self.store.forget(self.source, &keys)?;
        Ok(())
    }

    /// Downloads one group, writes and checkpoints each record, then acts on the group.
    async fn deliver<C: ImapClient>(
        &mut self,
        client: &mut C,
        validity: u32,
        group: Vec<MessageMeta>,
    ) -> Result<(), ReadError> {
        let options = self.options;
        let (state, target) = pending(&options.then, &self.trash);
        let mut handled = Vec::new();
        let too_large = group.len() == 1 && group[0].size > options.max_size;
        let bodies: HashMap<u32, Vec<u8>> = if too_large {
            HashMap::new()
        } else {
            let uids: Vec<u32> = group.iter().map(|m| m.uid).collect();
            client.bodies(&uids).await?.into_iter().collect()
        };
        for m in &group {
            if self.limit_reached() {
                break;
            }
            let key = key(validity, m.uid);
            let (mut record, raw, print) = if too_large {
                let header = client.header(m.uid).await?;
                let parsed = header.as_deref().and_then(|h| mime::parse(h).ok());
                let record = MessageRecord::too_large(self.source, &key, m.size, parsed.as_ref());
                let print = fingerprint(record.message_id.as_deref(), m.size, m.internal_date);
                (record, None, print)
            } else {
                let Some(raw) = bodies.get(&m.uid) else {
                    // Expunged by someone else since the search: nothing to hand on.
                    continue;
                };
                let parsed = mime::parse(raw);
                let record = MessageRecord::downloaded(self.source, &key, raw, &parsed);
                let print = fingerprint(record.message_id.as_deref(), m.size, m.internal_date);
                (record, Some((raw, parsed)), print)
            };
            match &raw {
                Some((raw, parsed)) => {
                    self.sink
                        .write(&mut record, Some(raw), parsed.as_ref().ok())?
                }
                None => self.sink.write(&mut record, None, None)?,
            }
            // A message too large to read is not acted on either: it stays where it is, recorded as skipped.
            let row = SeenRow {
                state: if too_large { SeenState::Skipped } else { state },
                target: if too_large { None } else { target.clone() },
                fingerprint: print,
            };
            let now = self.now();
            self.store
                .commit_rows(self.source, &[(key, record.id.clone(), row)], now)?;
            self.summary.records += 1;
            let bytes = raw.as_ref().map_or(0, |(raw, _)| raw.len() as u64);
            match &raw {
                Some((_, parsed)) => self.summary.unreadable += u64::from(parsed.is_err()),
                None => self.summary.skipped += 1,
            }
            self.summary.bytes += bytes;
            if !too_large {
                handled.push(m.uid);
            }
            (self.progress)(Progress::Message { bytes });
        }
        if state != SeenState::Done && !handled.is_empty() {
            self.act(client, &options.then, &handled).await?;
            self.done(validity, &handled)?;
        }
        Ok(())
    }

    /// Runs `action` on `uids` and counts it.
    async fn act<C: ImapClient>(
        &mut self,
        client: &mut C,
        action: &ImapAction,
        uids: &[u32],
    ) -> Result<(), ReadError> {
        let count = uids.len() as u64;
        match action {
            ImapAction::None => {}
            ImapAction::MarkRead => {
                client.add_flag(uids, "\\Seen").await?;
                self.summary.marked_read += count;
            }
            ImapAction::Flag => {
                client.add_flag(uids, "\\Flagged").await?;
                self.summary.flagged += count;
            }
            ImapAction::Copy(folder) => {
                client.copy_to(uids, folder).await?;
                self.summary.copied += count;
            }
            ImapAction::Move(folder) => {
                if self.options.prefer_move && client.has_capability("MOVE") {
                    client.move_to(uids, folder).await?;
                } else {
                    client.copy_to(uids, folder).await?;
                    client.add_flag(uids, "\\Deleted").await?;
                    client.expunge(uids).await?;
                }
                self.summary.moved += count;
            }
            ImapAction::Trash => {
                let trash = ImapAction::Move(self.trash.clone());
                Box::pin(self.act(client, &trash, uids)).await?;
            }
            ImapAction::Delete => {
                client.add_flag(uids, "\\Deleted").await?;
                client.expunge(uids).await?;
                self.summary.deleted += count;
            }
        }
        Ok(())
    }

    /// Marks `uids` done (their action is performed).
    fn done(&mut self, validity: u32, uids: &[u32]) -> Result<(), ReadError> {
        let rows: Vec<(String, String)> = uids
            .iter()
            .map(|uid| {
                let key = key(validity, *uid);
                let id = self.source.message_id(&key);
                (key, id)
            })
            .collect();
        let now = self.now();
        self.store
            .commit_many(self.source, &rows, SeenState::Done, now)?;
        Ok(())
    }
}

/// A folder name as IMAP compares it: INBOX in any case is the Inbox; others exactly.
fn same_folder(a: &str, b: &str) -> bool {
    if a.eq_ignore_ascii_case("INBOX") || b.eq_ignore_ascii_case("INBOX") {
        a.eq_ignore_ascii_case(b)
    } else {
        a == b
    }
}

/// The folder LIST marks `\Trash`, else Exchange's `Deleted Items`.
async fn trash_folder<C: ImapClient>(client: &mut C) -> Result<String, ReadError> {
    let folders = client.folders(false).await?;
    Ok(folders
        .iter()
        .find(|f| f.has_attribute("\\Trash"))
        .map_or_else(|| "Deleted Items".to_owned(), |f| f.name.clone()))
}

/// Messages in groups to download: small ones together (at most [`BODY_BATCH_MESSAGES`] and
/// [`BODY_BATCH_BYTES`] declared), a large one alone, one over `max_size` alone (its header only).
fn body_groups(messages: Vec<MessageMeta>, max_size: u64) -> Vec<Vec<MessageMeta>> {
    let mut groups: Vec<Vec<MessageMeta>> = Vec::new();
    let mut current: Vec<MessageMeta> = Vec::new();
    let mut bytes = 0u64;
    for m in messages {
        if m.size > max_size || m.size > BODY_BATCH_BYTES {
            if !current.is_empty() {
                groups.push(std::mem::take(&mut current));
                bytes = 0;
            }
            groups.push(vec![m]);
            continue;
        }
        if current.len() == BODY_BATCH_MESSAGES || bytes + m.size > BODY_BATCH_BYTES {
            groups.push(std::mem::take(&mut current));
            bytes = 0;
        }
        bytes += m.size;
        current.push(m);
    }
    if !current.is_empty() {
        groups.push(current);
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(uid: u32, size: u64) -> MessageMeta {
        MessageMeta {
            uid,
            size,
            internal_date: None,
            has_attachment: None,
            message_id: None,
        }
    }

    #[test]
    fn bodies_are_fetched_in_bounded_groups_and_large_ones_alone() {
        let mut messages: Vec<MessageMeta> = (1..=30).map(|uid| meta(uid, 1000)).collect();
        messages.insert(5, meta(100, BODY_BATCH_BYTES + 1));
        messages.insert(10, meta(101, 60 << 20));
        let groups = body_groups(messages, 50 << 20);
        let sizes: Vec<usize> = groups.iter().map(Vec::len).collect();
        assert_eq!(sizes, [5, 1, 4, 1, 21]);
        assert_eq!(groups[1][0].uid, 100);
        assert_eq!(groups[3][0].uid, 101);
        let capped = body_groups((1..=60).map(|uid| meta(uid, 10)).collect(), 50 << 20);
        assert!(capped.iter().all(|g| g.len() <= BODY_BATCH_MESSAGES));
        let heavy = body_groups((1..=6).map(|uid| meta(uid, 1 << 20)).collect(), 50 << 20);
        assert!(
            heavy
                .iter()
                .all(|g| g.iter().map(|m| m.size).sum::<u64>() <= BODY_BATCH_BYTES)
        );
    }

    #[test]
    fn fingerprints_need_a_message_id() {
        assert_eq!(
            fingerprint(Some("<a@b>"), 10, Some(5)).as_deref(),
            Some("a@b|10|5")
        );
        assert_eq!(
            fingerprint(Some(" a@b "), 10, Some(5)),
            fingerprint(Some("<a@b>"), 10, Some(5))
        );
        assert_eq!(fingerprint(None, 10, Some(5)), None);
        assert_eq!(fingerprint(Some("<>"), 10, Some(5)), None);
    }
}
