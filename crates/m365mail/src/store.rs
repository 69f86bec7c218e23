//! Checkpoints: which messages of a source (protocol + server + account + folder) were handled, in SQLite
//! (WAL, `synchronous = FULL`), so a reader never hands a message on twice and never forgets an
//! after-processing action.
//!
//! A message's row is written only after its record is durable in the sink, and the after-processing action
//! (DELE; IMAP's flags, MOVE, COPY, EXPUNGE) happens only after the row is committed. A row in a pending state
//! ([`SeenState::is_pending`]; a move's or copy's destination in its `target`) is an action owed: the next run
//! performs it without writing a second record. An IMAP row also keeps the message's fingerprint (Message-ID,
//! size, INTERNALDATE), so that after a UIDVALIDITY change a message already handed on is recognised.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension as _, params};

use crate::error::{Classified, ErrorClass};

/// Where a message was read from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct SourceKey {
    /// `pop3` (later `imap`, `graph`).
    pub protocol: String,
    /// `host:port`.
    pub server: String,
    /// The mailbox.
    pub account: String,
    /// The folder (`INBOX` for POP3).
    pub folder: String,
}

/// What happened to a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SeenState {
    /// Its record is written and nothing more is owed.
    Done,
    /// Not downloaded (too large); its record says so.
    Skipped,
    /// Its record is written; DELE is still owed.
    PendingDelete,
    /// It was on the server when `--from-now` set the starting point; never read.
    FromNow,
    /// Its record is written; `\Seen` is still owed (IMAP).
    PendingMarkRead,
    /// Its record is written; `\Flagged` is still owed (IMAP).
    PendingFlag,
    /// Its record is written; the move to the row's `target` folder is still owed (IMAP).
    PendingMove,
    /// Its record is written; the copy to the row's `target` folder is still owed (IMAP).
    PendingCopy,
}

impl SeenState {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Done => "done",
            Self::Skipped => "skipped",
            Self::PendingDelete => "pending-delete",
            Self::FromNow => "from-now",
            Self::PendingMarkRead => "pending-mark-read",
            Self::PendingFlag => "pending-flag",
            Self::PendingMove => "pending-move",
            Self::PendingCopy => "pending-copy",
        }
    }

    /// Whether an action is still owed.
    pub fn is_pending(self) -> bool {
        matches!(
            self,
            Self::PendingDelete
                | Self::PendingMarkRead
                | Self::PendingFlag
                | Self::PendingMove
                | Self::PendingCopy
        )
    }

    fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "done" => Self::Done,
            "skipped" => Self::Skipped,
            "pending-delete" => Self::PendingDelete,
            "from-now" => Self::FromNow,
            "pending-mark-read" => Self::PendingMarkRead,
            "pending-flag" => Self::PendingFlag,
            "pending-move" => Self::PendingMove,
            "pending-copy" => Self::PendingCopy,
            _ => return None,
        })
    }
}

/// One source's checkpoint, summed up.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SourceSummary {
    /// The source.
    #[serde(flatten)]
    pub key: SourceKey,
    /// Messages remembered.
    pub seen: u64,
    /// Of which an action is still owed.
    pub pending: u64,
    /// Of which skipped (too large).
    pub skipped: u64,
    /// Last change, Unix seconds.
    pub updated: i64,
}

/// A checkpoint store failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database could not be opened, read or written.
    #[error("checkpoint store {}: {source}", path.display())]
    Sqlite {
        /// The file.
        path: PathBuf,
        /// SQLite's error.
        #[source]
        source: rusqlite::Error,
    },
    /// Its directory could not be created.
    #[error("checkpoint store {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Another reader holds this source.
    #[error("checkpoint store {}: another reader is reading {}://{}@{}/{}", path.display(), source_id.protocol, source_id.account, source_id.server, source_id.folder)]
    InUse {
        /// The store.
        path: PathBuf,
        /// The source.
        source_id: SourceKey,
    },
    /// Written by a newer m365mail.
    #[error("checkpoint store {} has schema version {found}; this m365mail knows up to {known}", path.display())]
    NewerVersion {
        /// The file.
        path: PathBuf,
        /// Its version.
        found: i64,
        /// Ours.
        known: i64,
    },
}

impl Classified for StoreError {
    fn class(&self) -> ErrorClass {
        match self {
            Self::InUse { .. } => ErrorClass::Transient,
            _ => ErrorClass::Config,
        }
    }
    fn cause(&self) -> String {
        match self {
            Self::InUse { source_id, .. } => format!(
                "another m365mail read of {} ({}) is running",
                source_id.account, source_id.server
            ),
            Self::Sqlite { path, .. } | Self::Io { path, .. } => {
                format!("the checkpoint store {} cannot be used", path.display())
            }
            Self::NewerVersion { path, .. } => {
                format!(
                    "the checkpoint store {} was written by a newer m365mail",
                    path.display()
                )
            }
        }
    }
    fn remedy(&self) -> String {
        match self {
            Self::NewerVersion { .. } => {
                "use the newer m365mail, or another --state file (a new file starts from nothing)".into()
            }
            Self::InUse { .. } => {
                "wait for it to finish (runs of one source must not overlap: each would hand on the same \
                 new messages), then run again"
                    .into()
            }
            _ => "check the file's permissions and free space, or pass another --state file; another \
                  m365mail process may hold it locked"
                .into(),
        }
    }
}

const SCHEMA_VERSION: i64 = 3;

/// One remembered message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenRow {
    /// What happened to it.
    pub state: SeenState,
    /// The destination folder of an owed move or copy.
    pub target: Option<String>,
    /// What identifies the message across a UIDVALIDITY change (IMAP): Message-ID, size and INTERNALDATE.
    pub fingerprint: Option<String>,
}

/// A source held by one reader ([`CheckpointStore::lock_source`]).
#[derive(Debug)]
pub struct SourceLock {
    _file: std::fs::File,
}

/// The checkpoint database.
#[derive(Debug)]
pub struct CheckpointStore {
    connection: Connection,
    path: PathBuf,
}

impl CheckpointStore {
    /// The default file: the user data directory's `m365mail/checkpoints.sqlite`
    /// (`~/.local/share/m365mail/checkpoints.sqlite` on Linux).
    pub fn default_path() -> Option<PathBuf> {
        directories::ProjectDirs::from("", "", "m365mail")
            .map(|dirs| dirs.data_dir().join("checkpoints.sqlite"))
    }

    /// Opens (creating it, 0600 in a 0700 directory, when missing) the store at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let io = |source| StoreError::Io {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
            && !dir.exists()
        {
            std::fs::create_dir_all(dir).map_err(io)?;
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt as _;
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                    .map_err(io)?;
            }
        }
        let created = !path.exists();
        let sql = |source| StoreError::Sqlite {
            path: path.to_path_buf(),
            source,
        };
        let connection = Connection::open(path).map_err(sql)?;
        #[cfg(unix)]
        if created {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
        }
        connection
            .busy_timeout(std::time::Duration::from_secs(30))
            .map_err(sql)?;
        connection
            .pragma_update(None, "journal_mode", "WAL")
            .map_err(sql)?;
        // FULL: a committed checkpoint survives a power cut, not only a crash.
        connection
            .pragma_update(None, "synchronous", "FULL")
            .map_err(sql)?;
        let version: i64 = connection
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .map_err(sql)?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::NewerVersion {
                path: path.to_path_buf(),
                found: version,
                known: SCHEMA_VERSION,
            });
        }
        if version < 1 {
            connection
                .execute_batch(
                    "BEGIN;
                     CREATE TABLE IF NOT EXISTS sources (
                         id INTEGER PRIMARY KEY,
                         protocol TEXT NOT NULL, server TEXT NOT NULL,
                         account TEXT NOT NULL, folder TEXT NOT NULL,
                         UNIQUE (protocol, server, account, folder));
                     CREATE TABLE IF NOT EXISTS seen (
                         source INTEGER NOT NULL REFERENCES sources(id) ON DELETE CASCADE,
                         uid TEXT NOT NULL,
                         state TEXT NOT NULL,
                         record_id TEXT NOT NULL,
                         updated INTEGER NOT NULL,
                         PRIMARY KEY (source, uid));
                     PRAGMA user_version = 1;
                     COMMIT;",
                )
                .map_err(sql)?;
        }
        if version < 2 {
            // Version 2 (IMAP): an owed move's or copy's destination, and a fingerprint per message.
            connection
                .execute_batch(
                    "BEGIN;
                     ALTER TABLE seen ADD COLUMN target TEXT;
                     ALTER TABLE seen ADD COLUMN fingerprint TEXT;
                     PRAGMA user_version = 2;
                     COMMIT;",
                )
                .map_err(sql)?;
        }
        if version < 3 {
            // Version 3 (Graph): where the next read of a source starts (a delta round's deltaLink, or the page
            // of an unfinished round).
            connection
                .execute_batch(
                    "BEGIN;
                     ALTER TABLE sources ADD COLUMN cursor TEXT;
                     PRAGMA user_version = 3;
                     COMMIT;",
                )
                .map_err(sql)?;
        }
        connection
            .pragma_update(None, "foreign_keys", "ON")
            .map_err(sql)?;
        Ok(Self {
            connection,
            path: path.to_path_buf(),
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn sql(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    fn source_id(&self, key: &SourceKey, create: bool) -> Result<Option<i64>, StoreError> {
        if create {
            self.connection
                .execute(
                    "INSERT OR IGNORE INTO sources (protocol, server, account, folder) VALUES (?1, ?2, ?3, ?4)",
                    params![key.protocol, key.server, key.account, key.folder],
                )
                .map_err(|e| self.sql(e))?;
        }
        self.connection
            .query_row(
                "SELECT id FROM sources WHERE protocol = ?1 AND server = ?2 AND account = ?3 AND folder = ?4",
                params![key.protocol, key.server, key.account, key.folder],
                |row| row.get(0),
            )
            .optional()
            .map_err(|e| self.sql(e))
    }

    /// Holds `key` for one reader: a second reader of the same source (an overlapping cron run) gets
    /// [`StoreError::InUse`] instead of handing the same new messages on again. Released on drop.
    pub fn lock_source(&self, key: &SourceKey) -> Result<SourceLock, StoreError> {
        let id = format!(
            "{}\0{}\0{}\0{}",
            key.protocol, key.server, key.account, key.folder
        );
        let mut name = self.path.as_os_str().to_owned();
        name.push(format!(
            ".lock-{}",
            &crate::mime::sha256_hex(id.as_bytes())[..16]
        ));
        let path = PathBuf::from(name);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|source| StoreError::Io {
                path: path.clone(),
                source,
            })?;
        match file.try_lock() {
            Ok(()) => Ok(SourceLock { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::InUse {
                path: self.path.clone(),
                source_id: key.clone(),
            }),
            Err(std::fs::TryLockError::Error(source)) => Err(StoreError::Io { path, source }),
        }
    }

    /// Where the next read of `key` starts (Graph: a delta round's `deltaLink`, or the next page of an
    /// unfinished round); `None` before the first complete page.
    pub fn cursor(&self, key: &SourceKey) -> Result<Option<String>, StoreError> {
        let Some(id) = self.source_id(key, false)? else {
            return Ok(None);
        };
        self.connection
            .query_row(
                "SELECT cursor FROM sources WHERE id = ?1",
                params![id],
                |row| row.get(0),
            )
            .map_err(|e| self.sql(e))
    }

    /// Sets (or, with `None`, clears) where the next read of `key` starts; committed when this returns.
    pub fn set_cursor(&mut self, key: &SourceKey, cursor: Option<&str>) -> Result<(), StoreError> {
        let id = self.source_id(key, true)?.expect("just inserted");
        self.connection
            .execute(
                "UPDATE sources SET cursor = ?2 WHERE id = ?1",
                params![id, cursor],
            )
            .map_err(|e| self.sql(e))?;
        Ok(())
    }

    /// Every remembered message of `key` and its state.
    pub fn seen(&self, key: &SourceKey) -> Result<HashMap<String, SeenState>, StoreError> {
        Ok(self
            .rows(key)?
            .into_iter()
            .map(|(uid, row)| (uid, row.state))
            .collect())
    }

    /// Every remembered message of `key` with its state, owed target and fingerprint.
    pub fn rows(&self, key: &SourceKey) -> Result<HashMap<String, SeenRow>, StoreError> {
        let Some(id) = self.source_id(key, false)? else {
            return Ok(HashMap::new());
        };
        let mut statement = self
            .connection
            .prepare("SELECT uid, state, target, fingerprint FROM seen WHERE source = ?1")
            .map_err(|e| self.sql(e))?;
        let rows = statement
            .query_map(params![id], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, Option<String>>(2)?,
                    row.get::<_, Option<String>>(3)?,
                ))
            })
            .map_err(|e| self.sql(e))?;
        let mut seen = HashMap::new();
        for row in rows {
            let (uid, state, target, fingerprint) = row.map_err(|e| self.sql(e))?;
            // An unknown state (a newer writer) counts as handled: never hand a message on twice.
            let state = SeenState::parse(&state).unwrap_or(SeenState::Done);
            seen.insert(
                uid,
                SeenRow {
                    state,
                    target,
                    fingerprint,
                },
            );
        }
        Ok(seen)
    }

    /// Records several messages, each with its own state, target and fingerprint, in one transaction. A
    /// fingerprint already kept stays when the new row has none.
    pub fn commit_rows(
        &mut self,
        key: &SourceKey,
        rows: &[(String, String, SeenRow)],
        now: i64,
    ) -> Result<(), StoreError> {
        let id = self.source_id(key, true)?.expect("just inserted");
        let path = self.path.clone();
        let sql = |source| StoreError::Sqlite {
            path: path.clone(),
            source,
        };
        let transaction = self.connection.transaction().map_err(sql)?;
        for (uid, record_id, row) in rows {
            transaction
                .execute(
                    "INSERT INTO seen (source, uid, state, record_id, updated, target, fingerprint)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                     ON CONFLICT (source, uid) DO UPDATE SET state = ?3, record_id = ?4, updated = ?5,
                         target = ?6, fingerprint = COALESCE(?7, fingerprint)",
                    params![
                        id,
                        uid,
                        row.state.as_str(),
                        record_id,
                        now,
                        row.target,
                        row.fingerprint
                    ],
                )
                .map_err(sql)?;
        }
        transaction.commit().map_err(sql)
    }

    /// Forgets these messages of `key`.
    pub fn forget(&mut self, key: &SourceKey, uids: &[String]) -> Result<(), StoreError> {
        let Some(id) = self.source_id(key, false)? else {
            return Ok(());
        };
        let path = self.path.clone();
        let sql = |source| StoreError::Sqlite {
            path: path.clone(),
            source,
        };
        let transaction = self.connection.transaction().map_err(sql)?;
        for uid in uids {
            transaction
                .execute(
                    "DELETE FROM seen WHERE source = ?1 AND uid = ?2",
                    params![id, uid],
                )
                .map_err(sql)?;
        }
        transaction.commit().map_err(sql)
    }

    /// Records (in one committed transaction) that `uid` of `key` reached `state`.
    pub fn commit(
        &mut self,
        key: &SourceKey,
        uid: &str,
        state: SeenState,
        record_id: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        self.commit_many(key, &[(uid.to_string(), record_id.to_string())], state, now)
    }

    /// Records several messages in one transaction (no owed target; a kept fingerprint stays).
    pub fn commit_many(
        &mut self,
        key: &SourceKey,
        uids: &[(String, String)],
        state: SeenState,
        now: i64,
    ) -> Result<(), StoreError> {
        let rows: Vec<(String, String, SeenRow)> = uids
            .iter()
            .map(|(uid, record_id)| {
                let row = SeenRow {
                    state,
                    target: None,
                    fingerprint: None,
                };
                (uid.clone(), record_id.clone(), row)
            })
            .collect();
        self.commit_rows(key, &rows, now)
    }

    /// Forgets the messages of `key` that are not in `present` (the server no longer lists them).
    pub fn prune(
        &mut self,
        key: &SourceKey,
        present: &std::collections::HashSet<&str>,
    ) -> Result<usize, StoreError> {
        let gone: Vec<String> = self
            .seen(key)?
            .into_keys()
            .filter(|uid| !present.contains(uid.as_str()))
            .collect();
        if !gone.is_empty() {
            self.forget(key, &gone)?;
        }
        Ok(gone.len())
    }

    /// Every source with its counts.
    pub fn list(&self) -> Result<Vec<SourceSummary>, StoreError> {
        let mut statement = self
            .connection
            .prepare(
                "SELECT s.protocol, s.server, s.account, s.folder, COUNT(e.uid),
                        COALESCE(SUM(e.state LIKE 'pending-%'), 0), COALESCE(SUM(e.state = 'skipped'), 0),
                        COALESCE(MAX(e.updated), 0)
                 FROM sources s LEFT JOIN seen e ON e.source = s.id
                 GROUP BY s.id ORDER BY s.protocol, s.server, s.account, s.folder",
            )
            .map_err(|e| self.sql(e))?;
        let rows = statement
            .query_map([], |row| {
                Ok(SourceSummary {
                    key: SourceKey {
                        protocol: row.get(0)?,
                        server: row.get(1)?,
                        account: row.get(2)?,
                        folder: row.get(3)?,
                    },
                    seen: row.get::<_, i64>(4)?.unsigned_abs(),
                    pending: row.get::<_, i64>(5)?.unsigned_abs(),
                    skipped: row.get::<_, i64>(6)?.unsigned_abs(),
                    updated: row.get(7)?,
                })
            })
            .map_err(|e| self.sql(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.sql(e))
    }

    /// Forgets the sources for which `matches` is true (and their messages); returns how many messages were
    /// forgotten.
    pub fn reset(&mut self, matches: impl Fn(&SourceKey) -> bool) -> Result<u64, StoreError> {
        let chosen: Vec<SourceSummary> = self
            .list()?
            .into_iter()
            .filter(|s| matches(&s.key))
            .collect();
        let path = self.path.clone();
        let sql = |source| StoreError::Sqlite {
            path: path.clone(),
            source,
        };
        let transaction = self.connection.transaction().map_err(sql)?;
        let mut forgotten = 0;
        for summary in chosen {
            let key = &summary.key;
            transaction
                .execute(
                    "DELETE FROM seen WHERE source IN (SELECT id FROM sources WHERE protocol = ?1 AND server = ?2 AND account = ?3 AND folder = ?4)",
                    params![key.protocol, key.server, key.account, key.folder],
                )
                .map_err(sql)?;
            transaction
                .execute(
                    "DELETE FROM sources WHERE protocol = ?1 AND server = ?2 AND account = ?3 AND folder = ?4",
                    params![key.protocol, key.server, key.account, key.folder],
                )
                .map_err(sql)?;
            forgotten += summary.seen;
        }
        transaction.commit().map_err(sql)?;
        Ok(forgotten)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(account: &str) -> SourceKey {
        SourceKey {
            protocol: "pop3".into(),
            server: "127.0.0.1:995".into(),
            account: account.into(),
            folder: "INBOX".into(),
        }
    }

    #[test]
    fn a_cursor_is_kept_per_source_and_reset_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("checkpoints.sqlite");
        let mut store = CheckpointStore::open(&path).unwrap();
        assert_eq!(store.cursor(&key("a")).unwrap(), None);
        store
            .set_cursor(&key("a"), Some("https://graph/delta?$deltatoken=1"))
            .unwrap();
        drop(store);
        let mut store = CheckpointStore::open(&path).unwrap();
        assert_eq!(
            store.cursor(&key("a")).unwrap().as_deref(),
            Some("https://graph/delta?$deltatoken=1")
        );
        assert_eq!(store.cursor(&key("b")).unwrap(), None);
        store.reset(|k| k.account == "a").unwrap();
        assert_eq!(store.cursor(&key("a")).unwrap(), None);
    }

    #[test]
    fn commits_prunes_lists_and_resets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/checkpoints.sqlite");
        let mut store = CheckpointStore::open(&path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        let a = key("a@example.test");
        store.commit(&a, "u1", SeenState::Done, "r1", 10).unwrap();
        store
            .commit(&a, "u2", SeenState::PendingDelete, "r2", 11)
            .unwrap();
        store
            .commit(&a, "u3", SeenState::Skipped, "r3", 12)
            .unwrap();
        store
            .commit(&key("b@example.test"), "u1", SeenState::Done, "x", 13)
            .unwrap();
        drop(store);

        let mut store = CheckpointStore::open(&path).unwrap();
        let seen = store.seen(&a).unwrap();
        assert_eq!(seen.len(), 3);
        assert_eq!(seen["u2"], SeenState::PendingDelete);
        let listed = store.list().unwrap();
        assert_eq!(listed.len(), 2);
        assert_eq!(
            (listed[0].seen, listed[0].pending, listed[0].skipped),
            (3, 1, 1)
        );
        assert_eq!(listed[0].updated, 12);

        let present = ["u1", "u3"].into_iter().collect();
        assert_eq!(store.prune(&a, &present).unwrap(), 1);
        assert!(!store.seen(&a).unwrap().contains_key("u2"));

        assert_eq!(store.reset(|k| k.account == "a@example.test").unwrap(), 2);
        assert!(store.seen(&a).unwrap().is_empty());
        assert_eq!(store.list().unwrap().len(), 1);
    }

    #[test]
    fn rows_keep_targets_and_fingerprints_and_a_version_1_store_is_upgraded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.sqlite");
        // A store as version 1 wrote it.
        {
            let connection = Connection::open(&path).unwrap();
            connection
                .execute_batch(
                    "CREATE TABLE sources (id INTEGER PRIMARY KEY, protocol TEXT NOT NULL, server TEXT NOT NULL,
                         account TEXT NOT NULL, folder TEXT NOT NULL, UNIQUE (protocol, server, account, folder));
                     CREATE TABLE seen (source INTEGER NOT NULL REFERENCES sources(id) ON DELETE CASCADE,
                         uid TEXT NOT NULL, state TEXT NOT NULL, record_id TEXT NOT NULL, updated INTEGER NOT NULL,
                         PRIMARY KEY (source, uid));
                     INSERT INTO sources VALUES (1, 'pop3', '127.0.0.1:995', 'a@example.test', 'INBOX');
                     INSERT INTO seen VALUES (1, 'u1', 'pending-delete', 'r1', 5);
                     PRAGMA user_version = 1;",
                )
                .unwrap();
        }
        let mut store = CheckpointStore::open(&path).unwrap();
        let a = key("a@example.test");
        assert_eq!(store.seen(&a).unwrap()["u1"], SeenState::PendingDelete);
        let pending_move = SeenRow {
            state: SeenState::PendingMove,
            target: Some("Archive".into()),
            fingerprint: Some("<m@x>|10|20".into()),
        };
        store
            .commit_rows(&a, &[("7:1".into(), "r".into(), pending_move.clone())], 6)
            .unwrap();
        assert_eq!(store.rows(&a).unwrap()["7:1"], pending_move);
        assert_eq!(store.list().unwrap()[0].pending, 2);
        // Done keeps the fingerprint and drops the target.
        store.commit(&a, "7:1", SeenState::Done, "r", 7).unwrap();
        let done = &store.rows(&a).unwrap()["7:1"];
        assert_eq!(
            (
                done.state,
                done.target.as_deref(),
                done.fingerprint.as_deref()
            ),
            (SeenState::Done, None, Some("<m@x>|10|20"))
        );
        store.forget(&a, &["7:1".into()]).unwrap();
        assert_eq!(store.rows(&a).unwrap().len(), 1);
    }

    #[test]
    fn one_reader_per_source() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(&dir.path().join("c.sqlite")).unwrap();
        let held = store.lock_source(&key("a@example.test")).unwrap();
        let err = store.lock_source(&key("a@example.test")).unwrap_err();
        assert!(matches!(err, StoreError::InUse { .. }), "{err:?}");
        assert_eq!(err.class(), ErrorClass::Transient);
        // Another source is not held; the lock goes with its holder.
        let _other = store.lock_source(&key("b@example.test")).unwrap();
        drop(held);
        store.lock_source(&key("a@example.test")).unwrap();
    }

    #[test]
    fn a_newer_schema_is_refused_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.sqlite");
        let store = CheckpointStore::open(&path).unwrap();
        store
            .connection
            .pragma_update(None, "user_version", 9)
            .unwrap();
        drop(store);
        let err = CheckpointStore::open(&path).unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::NewerVersion {
                    found: 9,
                    known: 3,
                    ..
                }
            ),
            "{err:?}"
        );
    }
}
