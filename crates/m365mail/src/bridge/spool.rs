//! The spool: for devices that cannot retry (a printer's scan is gone if Microsoft 365 throttles or cannot be
//! reached when it sends), a listener in spool mode answers `250` only once the message and its envelope are
//! on disk, fsynced, and a worker delivers them in the background.
//!
//! Layout of the spool directory (0700; files 0600):
//!
//! | path | what |
//! |---|---|
//! | `tmp/` | messages being written; whatever is here at start was never acknowledged and is removed |
//! | `queue/<id>.msg` | one queued message: a JSON envelope line (account, profile, mode, sender, recipients, times), then the message's bytes |
//! | `queue/<id>.state` | its attempts so far, the next attempt's time and the last error (JSON; absent: not tried yet) |
//! | `queue/<id>.retry` | `bridge queue retry`'s request to try it now (the running bridge takes it within `rescan`) |
//! | `dead/<id>.msg`, `dead/<id>.json` | a message given up (dead letter) and why |
//! | `bridge.lock` | held by the running bridge: two bridges never deliver one spool |
//!
//! `<id>` is `<received, ms since 1970, 13 digits>-<16 hex random>`: names sort in arrival order.
//!
//! **Crash guarantees.** Accepting writes `tmp/<id>.msg`, fsyncs it, renames it into `queue/`, fsyncs
//! `queue/` and only then answers `250`: after a `250` the message survives a crash or power loss; before
//! it, the device got no `250` and sends again (a crash between the rename and the `250` reaching the device
//! makes that a second copy — SMTP's own window, RFC 5321 §6.1). Delivery unlinks `queue/<id>.msg` and
//! fsyncs `queue/` after Microsoft 365 accepted the message: a crash between the upstream's acceptance and
//! that unlink delivers it again at the next start — the one window where the spool itself can send a
//! message twice. Giving up queues the DSN (`<id>-dsn`), writes `dead/<id>.json`, then renames the message
//! into `dead/`; a message that is in `queue/` with its `dead/<id>.json` beside is finished at start. Never
//! a message dropped without a dead letter and an audit line.
//!
//! **Bounds.** At most `max_messages` messages and `max_bytes` bytes queued (the device gets `452 4.3.1`
//! beyond, at `MAIL FROM` and at the end of the data); the index in memory is a few hundred bytes per
//! message (never a body; recipients are read from the file at delivery); one message in memory per
//! delivering mailbox.
//!
//! **Retries.** Transient failures are retried after `retry_first`, doubling up to `retry_max`; a
//! throttled mailbox (`451`, Graph's `429`/`503` after [`crate::graph::GraphClient`]'s own `Retry-After`
//! waits) pauses all of that mailbox's messages for the same while; the 30-messages-a-minute pacing applies
//! to the worker as to direct relays. A message is given up — dead letter, DSN to its envelope sender
//! through the same upstream (never for a DSN), audit line — when Microsoft 365 refuses it permanently
//! (a 5xx for the message itself), after `max_attempts`, or once older than `max_age`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::{BufRead as _, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::BridgeError;
use super::route::UpstreamMode;

/// The envelope line's format version.
const VERSION: u32 = 1;
/// The longest envelope line read (500 recipients of 256 bytes fit many times).
const MAX_ENVELOPE_LINE: u64 = 1024 * 1024;
/// The longest error text kept per message.
const MAX_ERROR_TEXT: usize = 480;

/// How the spool behaves.
#[derive(Debug, Clone)]
pub struct SpoolOptions {
    /// The spool directory.
    pub dir: PathBuf,
    /// Messages queued at most (then `452`).
    pub max_messages: usize,
    /// Bytes queued at most (then `452`).
    pub max_bytes: u64,
    /// Attempts before a message is given up.
    pub max_attempts: u32,
    /// Age at which a message is given up.
    pub max_age: Duration,
    /// The first retry's wait; each further one doubles.
    pub retry_first: Duration,
    /// The longest wait between attempts.
    pub retry_max: Duration,
    /// How often the worker looks at the directory for `bridge queue retry|drop`.
    pub rescan: Duration,
}

impl SpoolOptions {
    /// Defaults: 10,000 messages, 2 GiB, 100 attempts, 5 days (Postfix's queue lifetime), retries after
    /// 60 s doubling up to 30 minutes, a look at the directory every 2 s.
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            max_messages: 10_000,
            max_bytes: 2 * 1024 * 1024 * 1024,
            max_attempts: 100,
            max_age: Duration::from_secs(5 * 24 * 3600),
            retry_first: Duration::from_secs(60),
            retry_max: Duration::from_secs(30 * 60),
            rescan: Duration::from_secs(2),
        }
    }

    /// The wait before attempt `attempts + 1` after `attempts` failed ones (at least one).
    pub fn backoff(&self, attempts: u32) -> Duration {
        let doublings = attempts.saturating_sub(1).min(30);
        self.retry_first
            .saturating_mul(1u32 << doublings)
            .min(self.retry_max)
    }
}

/// A queued message's envelope: the first line of its file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Envelope {
    /// [`VERSION`].
    pub v: u32,
    /// Its spool id.
    pub id: String,
    /// The account that sent it.
    pub account: String,
    /// The account's profile when it was accepted (its route).
    pub profile: String,
    /// The account's upstream when it was accepted (the account's current one is used if it still exists).
    pub mode: UpstreamMode,
    /// `MAIL FROM`.
    pub from: String,
    /// `RCPT TO`s.
    pub recipients: Vec<String>,
    /// When it was accepted (Unix ms).
    pub received_ms: u64,
    /// The message's size in bytes.
    pub size: u64,
    /// Its Message-ID (without brackets; empty when none).
    pub message_id: String,
    /// The device's address.
    pub peer: String,
    /// For a DSN: the id of the message it reports on (a DSN never gets a DSN).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dsn_for: Option<String>,
}

/// A queued message's attempts (the `.state` file).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Attempts {
    /// Attempts made.
    pub attempts: u32,
    /// The next attempt (Unix ms; 0: now).
    pub next_ms: u64,
    /// The last failure, as the device would have been told.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// Why a dead letter was given up (`dead/<id>.json`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DeadLetter {
    /// Its envelope.
    pub envelope: Envelope,
    /// Attempts made.
    pub attempts: u32,
    /// When it was given up (Unix ms).
    pub dead_ms: u64,
    /// Why.
    pub reason: String,
    /// The DSN queued for it (`None` for a DSN).
    pub dsn: Option<String>,
}

/// One queued message as the index (and `bridge queue list`) knows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Queued {
    /// Its envelope.
    pub envelope: Envelope,
    /// Its attempts.
    pub attempts: Attempts,
}

/// Why the spool could not take a message.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// At its message or byte bound.
    #[error("the spool is full ({messages} messages, {bytes} bytes queued)")]
    Full {
        /// Messages queued.
        messages: usize,
        /// Bytes queued.
        bytes: u64,
    },
    /// The disk refused.
    #[error("the spool {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The system's reason.
        source: std::io::Error,
    },
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn setup(path: &Path) -> impl FnOnce(std::io::Error) -> BridgeError + '_ {
    move |e| BridgeError::Spool {
        path: path.to_path_buf(),
        detail: e.to_string(),
    }
}

/// A directory, created 0700 when missing.
fn make_dir(path: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        builder.mode(0o700);
    }
    builder.create(path)
}

fn sync_dir(path: &Path) -> std::io::Result<()> {
    File::open(path)?.sync_all()
}

/// Writes `parts` to `dir/tmp/<name>` (0600), fsyncs it, renames it to `target` and fsyncs `target`'s
/// directory: `target` then holds all of it or, after a crash, nothing.
fn write_durably(dir: &Path, name: &str, parts: &[&[u8]], target: &Path) -> std::io::Result<()> {
    let temporary = dir.join("tmp").join(name);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(&temporary)?;
    for part in parts {
        file.write_all(part)?;
    }
    file.sync_all()?;
    drop(file);
    std::fs::rename(&temporary, target)?;
    sync_dir(target.parent().unwrap_or(dir))
}

/// A spool id received at `ms`.
pub fn new_id(ms: u64) -> String {
    format!("{ms:013}-{:016x}", rand::random::<u64>())
}

/// Whether `id` is one this spool made (digits, a dash, hex; `-dsn` for a DSN): nothing else is turned into a
/// path.
pub fn valid_id(id: &str) -> bool {
    let base = id.strip_suffix("-dsn").unwrap_or(id);
    base.split_once('-').is_some_and(|(ms, random)| {
        ms.len() == 13
            && ms.bytes().all(|b| b.is_ascii_digit())
            && random.len() == 16
            && random.bytes().all(|b| b.is_ascii_hexdigit())
    })
}

/// Reads a queued message's envelope line (bounded) and, with `body`, the message after it.
pub fn read_message(path: &Path, body: bool) -> std::io::Result<(Envelope, Vec<u8>)> {
    let file = File::open(path)?;
    let mut reader = std::io::BufReader::new(file);
    let mut line = Vec::new();
    (&mut reader)
        .take(MAX_ENVELOPE_LINE)
        .read_until(b'\n', &mut line)?;
    if !line.ends_with(b"\n") {
        return Err(std::io::Error::other("no envelope line"));
    }
    let envelope: Envelope = serde_json::from_slice(&line)
        .map_err(|e| std::io::Error::other(format!("envelope: {e}")))?;
    if envelope.v != VERSION || !valid_id(&envelope.id) {
        return Err(std::io::Error::other("an envelope of another version"));
    }
    // The index is keyed by the envelope's id and the file is found by its name: a copied or renamed file
    // would be delivered, then re-found under its other name, forever.
    if path.file_stem().and_then(|stem| stem.to_str()) != Some(envelope.id.as_str()) {
        return Err(std::io::Error::other(
            "the envelope names another id than its file (a copied or renamed spool file)",
        ));
    }
    let mut data = Vec::new();
    if body {
        reader.read_to_end(&mut data)?;
    }
    Ok((envelope, data))
}

fn read_attempts(path: &Path) -> Attempts {
    std::fs::read(path)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default()
}

/// The ids of `dir`'s files ending in `extension`, sorted.
fn ids_in(dir: &Path, extension: &str) -> std::io::Result<Vec<String>> {
    let mut ids: Vec<String> = std::fs::read_dir(dir)?
        .filter_map(|entry| {
            let name = entry.ok()?.file_name().into_string().ok()?;
            let id = name.strip_suffix(extension)?.to_owned();
            valid_id(&id).then_some(id)
        })
        .collect();
    ids.sort();
    Ok(ids)
}

/// What the queue holds on disk (for `bridge queue list` and `bridge status`, with or without a running
/// bridge).
pub fn list_queue(dir: &Path) -> std::io::Result<Vec<Queued>> {
    let queue = dir.join("queue");
    let mut out = Vec::new();
    for id in ids_in(&queue, ".msg")? {
        if let Ok((envelope, _)) = read_message(&queue.join(format!("{id}.msg")), false) {
            let attempts = read_attempts(&queue.join(format!("{id}.state")));
            out.push(Queued { envelope, attempts });
        }
    }
    Ok(out)
}

/// The dead letters on disk.
pub fn list_dead(dir: &Path) -> std::io::Result<Vec<DeadLetter>> {
    let dead = dir.join("dead");
    let mut out = Vec::new();
    for id in ids_in(&dead, ".json")? {
        if let Ok(bytes) = std::fs::read(dead.join(format!("{id}.json")))
            && let Ok(letter) = serde_json::from_slice::<DeadLetter>(&bytes)
        {
            out.push(letter);
        }
    }
    Ok(out)
}

/// `bridge queue retry ID`: a queued message is tried at once (the running bridge sees the marker); a dead
/// letter goes back to the queue with its attempts reset. Returns where it was (`queued` or `dead`).
pub fn request_retry(dir: &Path, id: &str) -> Result<&'static str, BridgeError> {
    let bad = |detail: String| BridgeError::Input(detail);
    if !valid_id(id) {
        return Err(bad(format!(
            "{id:?} is not a spool id (see m365mail bridge queue list)"
        )));
    }
    let queued = dir.join("queue").join(format!("{id}.msg"));
    let io = |path: &Path, e: std::io::Error| BridgeError::Spool {
        path: path.to_path_buf(),
        detail: e.to_string(),
    };
    if queued.exists() {
        let marker = dir.join("queue").join(format!("{id}.retry"));
        File::create(&marker).map_err(|e| io(&marker, e))?;
        return Ok("queued");
    }
    let dead = dir.join("dead").join(format!("{id}.msg"));
    if dead.exists() {
        let _ = std::fs::remove_file(dir.join("queue").join(format!("{id}.state")));
        std::fs::rename(&dead, &queued).map_err(|e| io(&dead, e))?;
        sync_dir(&dir.join("queue")).map_err(|e| io(&queued, e))?;
        let _ = std::fs::remove_file(dir.join("dead").join(format!("{id}.json")));
        let _ = sync_dir(&dir.join("dead"));
        return Ok("dead");
    }
    Err(bad(format!(
        "no message {id} in the queue or the dead letters"
    )))
}

/// `bridge queue drop ID`: removes a queued message or a dead letter (a message being delivered at that
/// moment may still go). Returns where it was.
pub fn drop_message(dir: &Path, id: &str) -> Result<&'static str, BridgeError> {
    if !valid_id(id) {
        return Err(BridgeError::Input(format!(
            "{id:?} is not a spool id (see m365mail bridge queue list)"
        )));
    }
    for (folder, kind) in [("queue", "queued"), ("dead", "dead")] {
        let path = dir.join(folder).join(format!("{id}.msg"));
        if path.exists() {
            std::fs::remove_file(&path).map_err(|e| BridgeError::Spool {
                path: path.clone(),
                detail: e.to_string(),
            })?;
            for extension in ["state", "retry", "json"] {
                let _ = std::fs::remove_file(dir.join(folder).join(format!("{id}.{extension}")));
            }
            let _ = sync_dir(&dir.join(folder));
            return Ok(kind);
        }
    }
    Err(BridgeError::Input(format!(
        "no message {id} in the queue or the dead letters"
    )))
}

/// The index of the queue, in memory.
#[derive(Debug, Default)]
struct Index {
    entries: BTreeMap<String, Queued>,
    bytes: u64,
    /// Being delivered now.
    busy: HashSet<String>,
}

impl Index {
    fn insert(&mut self, queued: Queued) {
        self.bytes += queued.envelope.size;
        if let Some(old) = self.entries.insert(queued.envelope.id.clone(), queued) {
            self.bytes -= old.envelope.size;
        }
    }

    fn remove(&mut self, id: &str) -> Option<Queued> {
        let queued = self.entries.remove(id)?;
        self.bytes -= queued.envelope.size;
        Some(queued)
    }
}

/// The spool of a running bridge.
#[derive(Debug)]
pub struct Spool {
    options: SpoolOptions,
    index: Mutex<Index>,
    /// Rung when a message is queued or a retry requested.
    pub(super) wake: tokio::sync::Notify,
    _lock: File,
}

fn lock_index(index: &Mutex<Index>) -> std::sync::MutexGuard<'_, Index> {
    index
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A message to deliver: its envelope, bytes and attempts so far.
#[derive(Debug)]
pub struct Due {
    /// The envelope (from the file).
    pub envelope: Envelope,
    /// The message.
    pub data: Vec<u8>,
    /// Attempts before this one.
    pub attempts: u32,
}

/// What to do with a message after a failed attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Try again at this time (Unix ms).
    RetryAt(u64),
    /// Give it up, for this reason.
    GiveUp(String),
}

impl SpoolOptions {
    /// After attempt number `attempts` (1 for the first) failed at `now_ms` — `permanent` when Microsoft 365
    /// refused the message itself — of a message received at `received_ms`.
    pub fn verdict(
        &self,
        attempts: u32,
        permanent: bool,
        received_ms: u64,
        now_ms: u64,
    ) -> Verdict {
        if permanent {
            return Verdict::GiveUp("refused by Microsoft 365".into());
        }
        if attempts >= self.max_attempts {
            return Verdict::GiveUp(format!("{attempts} attempts (max_attempts)"));
        }
        let age = Duration::from_millis(now_ms.saturating_sub(received_ms));
        if age >= self.max_age {
            return Verdict::GiveUp(format!(
                "queued for {} s (max_age_secs {})",
                age.as_secs(),
                self.max_age.as_secs()
            ));
        }
        let wait = u64::try_from(self.backoff(attempts).as_millis()).unwrap_or(u64::MAX);
        Verdict::RetryAt(now_ms.saturating_add(wait))
    }
}

impl Spool {
    /// Opens (creating) the spool at `options.dir`: takes its lock (another bridge on it is an error),
    /// removes unacknowledged partial writes, finishes dead-letter moves a crash interrupted, and indexes
    /// the queue — messages accepted before a restart are delivered after it.
    pub fn open(options: SpoolOptions) -> Result<Arc<Self>, BridgeError> {
        let dir = options.dir.clone();
        for sub in ["", "tmp", "queue", "dead"] {
            let path = dir.join(sub);
            make_dir(&path).map_err(setup(&path))?;
        }
        let lock_path = dir.join("bridge.lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(setup(&lock_path))?;
        if lock.try_lock().is_err() {
            return Err(BridgeError::Spool {
                path: dir.clone(),
                detail: "another m365mail bridge uses this spool (its bridge.lock is held)".into(),
            });
        }
        // Never acknowledged: the device got no 250 and sends again.
        let tmp = dir.join("tmp");
        for entry in std::fs::read_dir(&tmp).map_err(setup(&tmp))?.flatten() {
            let _ = std::fs::remove_file(entry.path());
        }
        let queue = dir.join("queue");
        let dead = dir.join("dead");
        let mut index = Index::default();
        for id in ids_in(&queue, ".msg").map_err(setup(&queue))? {
            let path = queue.join(format!("{id}.msg"));
            if dead.join(format!("{id}.json")).exists() {
                // Given up, then interrupted before the move: finish it.
                let _ = std::fs::rename(&path, dead.join(format!("{id}.msg")));
                let _ = std::fs::remove_file(queue.join(format!("{id}.state")));
                continue;
            }
            match read_message(&path, false) {
                Ok((envelope, _)) => {
                    let attempts = read_attempts(&queue.join(format!("{id}.state")));
                    index.insert(Queued { envelope, attempts });
                }
                Err(e) => {
                    // Not ours to deliver, and not to be lost either: kept aside as a dead letter.
                    tracing::error!(target: "m365mail::audit", event = "spool", id = %id, result = "unreadable",
                                    error = %e, "a queued file cannot be read; moved to dead/");
                    let _ = std::fs::rename(&path, dead.join(format!("{id}.msg")));
                }
            }
        }
        // Orphans: attempts or retry markers of messages no longer queued.
        for extension in [".state", ".retry"] {
            for id in ids_in(&queue, extension).unwrap_or_default() {
                if !index.entries.contains_key(&id) {
                    let _ = std::fs::remove_file(queue.join(format!("{id}{extension}")));
                }
            }
        }
        let _ = sync_dir(&queue);
        let _ = sync_dir(&dead);
        if !index.entries.is_empty() {
            tracing::info!(queued = index.entries.len(), bytes = index.bytes, dir = %dir.display(),
                           "spool: delivering the messages queued before this start");
        }
        Ok(Arc::new(Self {
            options,
            index: Mutex::new(index),
            wake: tokio::sync::Notify::new(),
            _lock: lock,
        }))
    }

    /// The options it runs with.
    pub fn options(&self) -> &SpoolOptions {
        &self.options
    }

    /// Messages and bytes queued.
    pub fn depth(&self) -> (usize, u64) {
        let index = lock_index(&self.index);
        (index.entries.len(), index.bytes)
    }

    /// The oldest queued message's arrival (Unix ms).
    pub fn oldest_ms(&self) -> Option<u64> {
        lock_index(&self.index)
            .entries
            .values()
            .map(|q| q.envelope.received_ms)
            .min()
    }

    /// `Err` when one more message of `size` bytes would pass a bound.
    pub fn room_for(&self, size: u64) -> Result<(), SpoolError> {
        let index = lock_index(&self.index);
        if index.entries.len() >= self.options.max_messages
            || index.bytes.saturating_add(size) > self.options.max_bytes
        {
            return Err(SpoolError::Full {
                messages: index.entries.len(),
                bytes: index.bytes,
            });
        }
        Ok(())
    }

    /// Queues a message durably (see the module docs); returns once it is on disk, fsynced.
    pub async fn accept(
        self: &Arc<Self>,
        envelope: Envelope,
        data: Vec<u8>,
    ) -> Result<(), SpoolError> {
        // The place is taken before the write, so that sessions at once cannot pass the bound together.
        {
            let mut index = lock_index(&self.index);
            if index.entries.len() >= self.options.max_messages
                || index.bytes.saturating_add(envelope.size) > self.options.max_bytes
            {
                return Err(SpoolError::Full {
                    messages: index.entries.len(),
                    bytes: index.bytes,
                });
            }
            index.busy.insert(envelope.id.clone());
            index.insert(Queued {
                envelope: envelope.clone(),
                attempts: Attempts::default(),
            });
        }
        let spool = Arc::clone(self);
        let id = envelope.id.clone();
        let written = tokio::task::spawn_blocking(move || spool.write_queued(&envelope, &data))
            .await
            .unwrap_or_else(|e| {
                Err(SpoolError::Io {
                    path: PathBuf::from("queue"),
                    source: std::io::Error::other(e.to_string()),
                })
            });
        let mut index = lock_index(&self.index);
        index.busy.remove(&id);
        if written.is_err() {
            index.remove(&id);
        } else {
            drop(index);
            self.wake.notify_one();
        }
        written
    }

    fn write_queued(&self, envelope: &Envelope, data: &[u8]) -> Result<(), SpoolError> {
        let mut line = serde_json::to_vec(envelope).map_err(|e| SpoolError::Io {
            path: PathBuf::from(&envelope.id),
            source: std::io::Error::other(e),
        })?;
        line.push(b'\n');
        let target = self
            .options
            .dir
            .join("queue")
            .join(format!("{}.msg", envelope.id));
        write_durably(
            &self.options.dir,
            &format!("{}.msg", envelope.id),
            &[&line, data],
            &target,
        )
        .map_err(io_error(&target))
    }

    /// Reconciles the index with the directory: `bridge queue drop` (a file gone), `retry` (a marker, or a
    /// dead letter moved back). Returns whether something became due.
    pub fn rescan(&self) -> bool {
        let queue = self.options.dir.join("queue");
        let Ok(on_disk) = ids_in(&queue, ".msg") else {
            return false;
        };
        let on_disk: HashSet<String> = on_disk.into_iter().collect();
        let markers = ids_in(&queue, ".retry").unwrap_or_default();
        let mut index = lock_index(&self.index);
        let gone: Vec<String> = index
            .entries
            .keys()
            // The listing was taken before the lock: a message accepted since is in the index and on disk
            // but not in `on_disk`. Looking again under the lock tells it from one an operator dropped.
            .filter(|id| {
                !on_disk.contains(*id)
                    && !index.busy.contains(*id)
                    && !queue.join(format!("{id}.msg")).exists()
            })
            .cloned()
            .collect();
        for id in gone {
            if let Some(queued) = index.remove(&id) {
                tracing::info!(target: "m365mail::audit", event = "message", spool_id = %id,
                               account = %queued.envelope.account, result = "dropped",
                               reply = "removed from the queue by its operator");
            }
        }
        let mut woke = false;
        for id in on_disk {
            if !index.entries.contains_key(&id)
                && let Ok((envelope, _)) = read_message(&queue.join(format!("{id}.msg")), false)
            {
                let attempts = read_attempts(&queue.join(format!("{id}.state")));
                index.insert(Queued { envelope, attempts });
                woke = true;
            }
        }
        for id in markers {
            let _ = std::fs::remove_file(queue.join(format!("{id}.retry")));
            if let Some(queued) = index.entries.get_mut(&id) {
                queued.attempts.next_ms = 0;
                woke = true;
            }
        }
        woke
    }

    /// The next message to deliver at `now_ms` for a profile not in `skip`: its envelope and bytes read from
    /// disk and marked busy; else how long until the earliest is due (`None`: nothing queued but busy ones).
    pub fn take_due(&self, now_ms: u64, skip: &HashSet<String>) -> Result<Due, Option<Duration>> {
        let (id, attempts) = {
            let mut index = lock_index(&self.index);
            let mut earliest: Option<u64> = None;
            let mut pick = None;
            for (id, queued) in &index.entries {
                if index.busy.contains(id) || skip.contains(&queued.envelope.profile) {
                    continue;
                }
                if queued.attempts.next_ms <= now_ms {
                    pick = Some((id.clone(), queued.attempts.attempts));
                    break;
                }
                earliest = Some(
                    earliest.map_or(queued.attempts.next_ms, |e| e.min(queued.attempts.next_ms)),
                );
            }
            let Some(pick) = pick else {
                return Err(earliest.map(|at| Duration::from_millis(at - now_ms)));
            };
            index.busy.insert(pick.0.clone());
            pick
        };
        let path = self.options.dir.join("queue").join(format!("{id}.msg"));
        match read_message(&path, true) {
            Ok((envelope, data)) => Ok(Due {
                envelope,
                data,
                attempts,
            }),
            Err(e) => {
                // Dropped meanwhile (no file), or unreadable: out of the index, the rescan or the next start
                // deals with a file that is still there.
                tracing::warn!(spool_id = %id, error = %e, "a queued message cannot be read");
                let mut index = lock_index(&self.index);
                index.busy.remove(&id);
                index.remove(&id);
                Err(Some(Duration::ZERO))
            }
        }
    }

    /// Gives a message taken by [`Spool::take_due`] back untried (pacing said wait).
    pub fn untake(&self, id: &str) {
        lock_index(&self.index).busy.remove(id);
    }

    /// Microsoft 365 accepted `id`: its file is unlinked and the directory fsynced (the commit; a crash
    /// before it sends the message again at the next start).
    pub fn delivered(&self, id: &str) -> std::io::Result<()> {
        let queue = self.options.dir.join("queue");
        let result = match std::fs::remove_file(queue.join(format!("{id}.msg"))) {
            Ok(()) => sync_dir(&queue),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        };
        let _ = std::fs::remove_file(queue.join(format!("{id}.state")));
        let _ = std::fs::remove_file(queue.join(format!("{id}.retry")));
        let mut index = lock_index(&self.index);
        index.busy.remove(id);
        index.remove(id);
        result
    }

    /// `id` failed and waits: its attempts are written (best effort: a lost state file only means an early
    /// retry).
    pub fn deferred(&self, id: &str, attempts: Attempts) {
        let queue = self.options.dir.join("queue");
        if queue.join(format!("{id}.msg")).exists()
            && let Ok(body) = serde_json::to_vec(&attempts)
        {
            let _ = write_durably(
                &self.options.dir,
                &format!("{id}.state"),
                &[&body],
                &queue.join(format!("{id}.state")),
            );
        }
        let mut index = lock_index(&self.index);
        index.busy.remove(id);
        if let Some(queued) = index.entries.get_mut(id) {
            queued.attempts = attempts;
        }
    }

    /// Gives a message taken by [`Spool::take_due`] up: `dsn` (a DSN's envelope and bytes) queued, then
    /// `dead/<id>.json`, then the message moved into `dead/`. Returns the DSN's id when one was queued.
    pub fn give_up(
        self: &Arc<Self>,
        envelope: &Envelope,
        attempts: u32,
        reason: &str,
        now_ms: u64,
        dsn: Option<(Envelope, Vec<u8>)>,
    ) -> std::io::Result<Option<String>> {
        let dir = &self.options.dir;
        let id = &envelope.id;
        let queue = dir.join("queue");
        let dead = dir.join("dead");
        // Dropped by its operator during this attempt (`queue drop`): nothing to give up, no DSN to send.
        if !queue.join(format!("{id}.msg")).exists() {
            let mut index = lock_index(&self.index);
            index.busy.remove(id);
            index.remove(id);
            return Ok(None);
        }
        let dsn_id = dsn.as_ref().map(|(envelope, _)| envelope.id.clone());
        // The DSN first: a crash after it and before the move tries the message again, and a second
        // failure finds the DSN already queued (by its id).
        if let Some((report, data)) = &dsn
            && !queue.join(format!("{}.msg", report.id)).exists()
        {
            let mut line = serde_json::to_vec(report).map_err(std::io::Error::other)?;
            line.push(b'\n');
            write_durably(
                dir,
                &format!("{}.msg", report.id),
                &[&line, data],
                &queue.join(format!("{}.msg", report.id)),
            )?;
            lock_index(&self.index).insert(Queued {
                envelope: report.clone(),
                attempts: Attempts::default(),
            });
        }
        let letter = DeadLetter {
            envelope: envelope.clone(),
            attempts,
            dead_ms: now_ms,
            reason: reason.chars().take(MAX_ERROR_TEXT).collect(),
            dsn: dsn_id.clone(),
        };
        let body = serde_json::to_vec_pretty(&letter).map_err(std::io::Error::other)?;
        write_durably(
            dir,
            &format!("{id}.json"),
            &[&body],
            &dead.join(format!("{id}.json")),
        )?;
        std::fs::rename(
            queue.join(format!("{id}.msg")),
            dead.join(format!("{id}.msg")),
        )?;
        sync_dir(&dead)?;
        sync_dir(&queue)?;
        let _ = std::fs::remove_file(queue.join(format!("{id}.state")));
        let _ = std::fs::remove_file(queue.join(format!("{id}.retry")));
        let mut index = lock_index(&self.index);
        index.busy.remove(id);
        index.remove(id);
        drop(index);
        if dsn_id.is_some() {
            self.wake.notify_one();
        }
        Ok(dsn_id)
    }

    /// Profiles with queued messages, and how many each.
    pub fn per_profile(&self) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        for queued in lock_index(&self.index).entries.values() {
            *counts.entry(queued.envelope.profile.clone()).or_insert(0) += 1;
        }
        counts
    }

    /// Shortens `text` to what a state file keeps.
    pub fn error_text(text: &str) -> String {
        text.chars().take(MAX_ERROR_TEXT).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(id: &str, size: u64) -> Envelope {
        Envelope {
            v: VERSION,
            id: id.into(),
            account: "printer".into(),
            profile: "work".into(),
            mode: UpstreamMode::Xoauth2,
            from: "scan@contoso.com".into(),
            recipients: vec!["a@contoso.com".into()],
            received_ms: 1_000,
            size,
            message_id: "m@x".into(),
            peer: "127.0.0.1:1".into(),
            dsn_for: None,
        }
    }

    #[test]
    fn the_backoff_doubles_to_its_cap_and_the_bounds_give_up() {
        let mut options = SpoolOptions::new(PathBuf::from("/nonexistent"));
        options.retry_first = Duration::from_secs(10);
        options.retry_max = Duration::from_secs(60);
        options.max_attempts = 5;
        options.max_age = Duration::from_secs(3600);
        assert_eq!(options.backoff(1), Duration::from_secs(10));
        assert_eq!(options.backoff(2), Duration::from_secs(20));
        assert_eq!(options.backoff(3), Duration::from_secs(40));
        assert_eq!(options.backoff(4), Duration::from_secs(60));
        assert_eq!(options.backoff(90), Duration::from_secs(60));
        assert_eq!(
            options.verdict(1, false, 0, 5_000),
            Verdict::RetryAt(15_000)
        );
        assert!(matches!(options.verdict(1, true, 0, 0), Verdict::GiveUp(_)));
        assert!(matches!(
            options.verdict(5, false, 0, 0),
            Verdict::GiveUp(_)
        ));
        assert!(matches!(
            options.verdict(2, false, 0, 3_600_000),
            Verdict::GiveUp(_)
        ));
    }

    #[test]
    fn ids_are_checked_before_they_become_paths() {
        let id = new_id(1_796_619_601_000);
        assert!(valid_id(&id), "{id}");
        assert!(valid_id(&format!("{id}-dsn")));
        assert!(!valid_id("../../etc/passwd"));
        assert!(!valid_id("1796619601000-zz"));
        let dir = tempfile::tempdir().unwrap();
        assert!(request_retry(dir.path(), "../x").is_err());
        assert!(drop_message(dir.path(), "../x").is_err());
    }

    #[tokio::test]
    async fn an_accepted_message_survives_a_reopen_and_a_full_spool_refuses() {
        let dir = tempfile::tempdir().unwrap();
        let mut options = SpoolOptions::new(dir.path().join("spool"));
        options.max_messages = 2;
        let spool = Spool::open(options.clone()).unwrap();
        assert!(
            Spool::open(options.clone()).is_err(),
            "one bridge per spool"
        );
        let first = new_id(1_000);
        spool
            .accept(envelope(&first, 5), b"hello".to_vec())
            .await
            .unwrap();
        spool
            .accept(envelope(&new_id(1_001), 5), b"world".to_vec())
            .await
            .unwrap();
        assert!(matches!(
            spool
                .accept(envelope(&new_id(1_002), 1), b"x".to_vec())
                .await,
            Err(SpoolError::Full { messages: 2, .. })
        ));
        assert!(spool.room_for(1).is_err());
        // A partial write left by a crash is not a message.
        std::fs::write(dir.path().join("spool/tmp/partial.msg"), b"{").unwrap();
        drop(spool);
        let spool = Spool::open(options).unwrap();
        assert_eq!(spool.depth(), (2, 10));
        assert!(!dir.path().join("spool/tmp/partial.msg").exists());
        let due = spool.take_due(2_000, &HashSet::new()).unwrap();
        assert_eq!(due.envelope.id, first);
        assert_eq!(due.data, b"hello");
        spool.delivered(&first).unwrap();
        assert_eq!(spool.depth(), (1, 5));
        let listed = list_queue(&dir.path().join("spool")).unwrap();
        assert_eq!(listed.len(), 1);
        assert_ne!(listed[0].envelope.id, first);
    }

    #[tokio::test]
    async fn a_copied_file_is_no_message_and_a_dropped_one_gets_no_dead_letter() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(SpoolOptions::new(dir.path().join("spool"))).unwrap();
        let id = new_id(1_000);
        spool
            .accept(envelope(&id, 5), b"hello".to_vec())
            .await
            .unwrap();
        let queue = dir.path().join("spool/queue");
        // A copy under another name: its envelope names the first id, so it is refused, not re-sent forever.
        let copy = queue.join(format!("{}.msg", new_id(2_000)));
        std::fs::copy(queue.join(format!("{id}.msg")), &copy).unwrap();
        assert!(read_message(&copy, false).is_err());
        assert!(read_message(&queue.join(format!("{id}.msg")), false).is_ok());
        std::fs::remove_file(&copy).unwrap();
        // Dropped by the operator while an attempt was under way: giving up writes no DSN and no dead letter.
        let due = spool.take_due(2_000, &HashSet::new()).unwrap();
        std::fs::remove_file(queue.join(format!("{id}.msg"))).unwrap();
        let dsn = (envelope(&format!("{id}-dsn"), 3), b"dsn".to_vec());
        assert_eq!(
            spool
                .give_up(&due.envelope, 1, "refused", 3_000, Some(dsn))
                .unwrap(),
            None
        );
        assert!(!queue.join(format!("{id}-dsn.msg")).exists());
        assert!(!dir.path().join(format!("spool/dead/{id}.json")).exists());
        assert_eq!(spool.depth(), (0, 0));
    }
}
