//! [`TokenCache`]: access and refresh tokens in a JSON file in the user data dir.
//!
//! File rules (rust.md §5): the directory is created 0700 and the file 0600; writes go to a temp file in the
//! same directory and are renamed over the old file (atomic); every read-modify-write happens under an
//! exclusive lock on a sidecar `.lock` file (`File::lock`), so several processes can share the cache; a file
//! readable by group or others is refused, not read. The rotated refresh token is saved every time.
//!
//! Locks are waited for a bounded time ([`TokenCache::with_lock_timeout`], default [`DEFAULT_LOCK_TIMEOUT`]):
//! a holder writes its pid and purpose into the lock file, a waiter says once who it waits for and gives up
//! with [`AuthError::CacheLocked`]. A file that cannot be read (not UTF-8, not JSON, not the cache's shape) is
//! moved aside to `<file>.corrupt-<unix time>` (0600) with a warning and the cache starts empty; a file of an
//! unknown format version is refused ([`AuthError::CacheVersion`]) and never overwritten. [`TokenCache::clear`]
//! works on any file.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{Read as _, Seek as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use super::authority::Authority;
use super::error::{AuthError, strip_control};
use super::response::TokenResponse;
use super::scopes::Scopes;
use crate::secret::{Secret, serde_exposed};
use crate::time::{Clock, SystemClock, unix_secs};

/// Default reuse margin: an access token is reused until 5 minutes before it expires.
pub const DEFAULT_MARGIN: Duration = Duration::from_secs(300);

/// How long a cache operation waits for a lock another process holds, unless set with
/// [`TokenCache::with_lock_timeout`].
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(60);

/// The cache file format this build reads and writes (the file's `version`).
pub const CACHE_VERSION: u64 = 1;

/// A waiter names the holder as soon as the lock file says who it is, or after this long regardless.
const HOLDER_GRACE: Duration = Duration::from_secs(1);

/// What a cache entry is keyed by: authority + tenant, client id, account, sorted scope set.
///
/// Access tokens are cached per key. Refresh tokens are cached per account (the key without its scopes),
/// as MSAL does: an Entra refresh token is multi-resource, so the one from an IMAP sign-in also buys an SMTP
/// or Graph token for the same account and app.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CacheKey {
    /// Authority URL (`{base}{tenant}/`), which covers cloud and tenant.
    pub authority: String,
    /// Client id.
    pub client_id: String,
    /// Account: the username for delegated flows, `app` for client credentials.
    pub account: String,
    /// Sorted, lower-cased scopes.
    pub scopes: String,
}

impl CacheKey {
    /// A key.
    pub fn new(authority: &Authority, client_id: &str, account: &str, scopes: &Scopes) -> Self {
        Self {
            authority: authority.url().to_string(),
            client_id: client_id.to_owned(),
            account: account.to_ascii_lowercase(),
            scopes: scopes.cache_key(),
        }
    }

    /// `authority|client_id|account|scopes`, each field escaped (`%` → `%25`, `|` → `%7C`) so that no value
    /// can forge a field boundary (two different keys never share an id or a prefix).
    fn id(&self) -> String {
        format!(
            "{}|{}|{}|{}",
            escape_field(&self.authority),
            escape_field(&self.client_id),
            escape_field(&self.account),
            escape_field(&self.scopes)
        )
    }

    /// The id of the account entry, which holds the account's refresh token: the key with no scopes.
    fn account_id(&self) -> String {
        Self {
            scopes: String::new(),
            ..self.clone()
        }
        .id()
    }

    /// The id prefix of every entry of `client_id` at `authority` (and `account`, lower-cased, when given):
    /// for removing an app's or an account's entries.
    pub fn prefix(authority: &Authority, client_id: &str, account: Option<&str>) -> String {
        let mut p = format!(
            "{}|{}|",
            escape_field(authority.url().as_str()),
            escape_field(client_id)
        );
        if let Some(a) = account {
            p.push_str(&escape_field(&a.to_ascii_lowercase()));
            p.push('|');
        }
        p
    }
}

fn escape_field(v: &str) -> String {
    v.replace('%', "%25").replace('|', "%7C")
}

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id())
    }
}

/// One cached token set.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CachedToken {
    /// The access token.
    #[serde(with = "serde_exposed")]
    pub access_token: Secret,
    /// Expiry, Unix seconds (local receive time + `expires_in`).
    pub expires_at: u64,
    /// The newest refresh token.
    #[serde(
        with = "serde_exposed::option",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub refresh_token: Option<Secret>,
    /// Granted scopes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// Whether the tokens are held by the [`SecretStore`] instead of this file.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub in_secret_store: bool,
}

impl CachedToken {
    /// Expiry as a `SystemTime`.
    pub fn expires_at_time(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(self.expires_at)
    }

    /// Whether the access token is still usable at `now` with `margin` to spare.
    pub fn is_fresh(&self, now: SystemTime, margin: Duration) -> bool {
        !self.access_token.is_empty() && unix_secs(now) + margin.as_secs() < self.expires_at
    }
}

#[derive(Default, Serialize, Deserialize)]
struct CacheFile {
    version: u64,
    #[serde(default)]
    entries: BTreeMap<String, CachedToken>,
}

/// Where token secrets live when they should not be in the cache file (the OS keychain with the `keyring`
/// feature). Values are opaque strings keyed by the cache entry id.
pub trait SecretStore: Send + Sync + fmt::Debug {
    /// Saves (or replaces) the value for `id`.
    fn put(&self, id: &str, value: &Secret) -> Result<(), String>;
    /// The value for `id`, if any.
    fn get(&self, id: &str) -> Result<Option<Secret>, String>;
    /// Deletes the value for `id` (absent is fine).
    fn delete(&self, id: &str) -> Result<(), String>;
}

/// The secrets of one entry, as stored in a [`SecretStore`].
#[derive(Serialize, Deserialize)]
struct StoredSecrets {
    #[serde(with = "serde_exposed")]
    access_token: Secret,
    #[serde(with = "serde_exposed::option", default)]
    refresh_token: Option<Secret>,
}

/// The token cache: a file, or memory only (for `--no-cache` and tests).
pub struct TokenCache {
    secrets: Option<std::sync::Arc<dyn SecretStore>>,
    path: Option<PathBuf>,
    memory: Mutex<BTreeMap<String, CachedToken>>,
    /// Serialises threads of this process; the file lock serialises processes.
    local: Mutex<()>,
    /// Longest wait for a lock another process holds.
    lock_timeout: Duration,
    /// Names files moved aside (`.corrupt-<unix time>`).
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenCache")
            .field("path", &self.path)
            .field("lock_timeout", &self.lock_timeout)
            .finish_non_exhaustive()
    }
}

impl TokenCache {
    /// The default file: `<user data dir>/m365mail/token-cache.json`.
    pub fn default_path() -> Option<PathBuf> {
        directories::ProjectDirs::from("", "", "m365mail")
            .map(|d| d.data_dir().join("token-cache.json"))
    }

    /// A cache in `path`; creates the parent directory (0700) if missing.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, AuthError> {
        let path = path.into();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if !dir.exists() {
                create_private_dir(dir)
                    .map_err(|e| cache_err(&path, format!("creating {}: {e}", dir.display())))?;
            }
            // Others who can write the directory can swap the file or its lock files: refuse, like a
            // group/world-readable file.
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt as _;
                let mode = fs::metadata(dir)
                    .map_err(|e| cache_err(&path, format!("{}: {e}", dir.display())))?
                    .permissions()
                    .mode()
                    & 0o7777;
                if mode & 0o022 != 0 {
                    let remedy = if mode & 0o1000 != 0 {
                        // Sticky and writable by others: a shared directory such as /tmp, whose mode must not
                        // be changed.
                        format!(
                            "{} is a shared directory (sticky, like /tmp): keep the cache in a private directory \
                             such as ~/.local/share/m365mail (the default), or pass a cache path in a directory of \
                             mode 0700",
                            dir.display()
                        )
                    } else {
                        format!(
                            "run `chmod 700 {}` if the directory is yours, or pass a cache path in a directory of \
                             mode 0700",
                            dir.display()
                        )
                    };
                    return Err(cache_err(
                        &path,
                        format!(
                            "refusing a cache in {}: mode {mode:o} is group/world-writable; {remedy}",
                            dir.display(),
                        ),
                    ));
                }
            }
        }
        Ok(Self {
            path: Some(path),
            ..Self::in_memory()
        })
    }

    /// A cache that lives only in memory.
    pub fn in_memory() -> Self {
        Self {
            secrets: None,
            path: None,
            memory: Mutex::default(),
            local: Mutex::default(),
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
            clock: Arc::new(SystemClock),
        }
    }

    /// Bounds every wait for a lock another process holds — the cache file's lock (held for a read-modify-
    /// write) and a key's lock ([`Self::lock_key`], held while a token is renewed, which may be an interactive
    /// sign-in) — to `timeout` (default [`DEFAULT_LOCK_TIMEOUT`]; the CLI passes its `--timeout`). Past it, the
    /// operation fails with [`AuthError::CacheLocked`] naming the holder.
    pub fn with_lock_timeout(mut self, timeout: Duration) -> Self {
        self.lock_timeout = timeout;
        self
    }

    /// The lock timeout (see [`Self::with_lock_timeout`]).
    pub fn lock_timeout(&self) -> Duration {
        self.lock_timeout
    }

    /// The clock used to name a file moved aside (default: the system clock).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Keeps access and refresh tokens in `store` (e.g. the OS keychain) instead of the file; the file then
    /// holds only expiry and scope.
    pub fn with_secret_store(mut self, store: std::sync::Arc<dyn SecretStore>) -> Self {
        self.secrets = Some(store);
        self
    }

    /// Fills the tokens of an entry kept in the secret store.
    fn hydrate(&self, id: &str, mut entry: CachedToken) -> Result<Option<CachedToken>, AuthError> {
        if !entry.in_secret_store {
            return Ok(Some(entry));
        }
        let Some(store) = &self.secrets else {
            return Err(
                self.err("entry is in the OS keychain but no secret store is configured".into())
            );
        };
        let Some(blob) = store
            .get(id)
            .map_err(|e| self.err(format!("secret store: {e}")))?
        else {
            return Ok(None);
        };
        let stored: StoredSecrets = serde_json::from_str(blob.expose())
            .map_err(|_| self.err("secret store value is not a token set".into()))?;
        entry.access_token = stored.access_token;
        entry.refresh_token = stored.refresh_token;
        entry.in_secret_store = false;
        Ok(Some(entry))
    }

    /// What goes into the file for `entry`: with a secret store, the tokens move there.
    fn dehydrate(&self, id: &str, entry: &CachedToken) -> Result<CachedToken, AuthError> {
        let Some(store) = &self.secrets else {
            return Ok(entry.clone());
        };
        let blob = StoredSecrets {
            access_token: entry.access_token.clone(),
            refresh_token: entry.refresh_token.clone(),
        };
        let json = Secret::new(
            serde_json::to_string(&blob).map_err(|e| self.err(format!("serialise: {e}")))?,
        );
        store
            .put(id, &json)
            .map_err(|e| self.err(format!("secret store: {e}")))?;
        Ok(CachedToken {
            access_token: Secret::default(),
            refresh_token: None,
            in_secret_store: true,
            ..entry.clone()
        })
    }

    fn forget(&self, ids: &[String]) -> Result<(), AuthError> {
        if let Some(store) = &self.secrets {
            for id in ids {
                store
                    .delete(id)
                    .map_err(|e| self.err(format!("secret store: {e}")))?;
            }
        }
        Ok(())
    }

    fn err(&self, detail: String) -> AuthError {
        AuthError::Cache {
            path: self
                .path
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "(memory)".into()),
            detail,
        }
    }

    /// Takes the cross-process renewal lock of `key`, waiting at most the lock timeout for another process
    /// that holds it ([`AuthError::CacheLocked`] past it). Held while one process refreshes or runs a flow, so
    /// concurrent processes wait and then reuse its token instead of all asking Entra; the lock file names the
    /// holder (`pid 1234: token request for <key>`) meanwhile. `None` for a memory cache. Released when the
    /// guard drops.
    pub fn lock_key(&self, key: &CacheKey) -> Result<Option<KeyLock>, AuthError> {
        let Some((path, lock_path)) = self.key_lock_path(key)? else {
            return Ok(None);
        };
        let held = lock_with_timeout(&lock_path, path, &key_purpose(key), self.lock_timeout)?;
        Ok(Some(KeyLock { _held: held }))
    }

    /// Like [`Self::lock_key`] without waiting: `Ok(None)` when another process (or another handle) holds
    /// the lock, `Ok(Some(None))` for a memory cache. Lets async callers poll (and stay cancellable).
    pub fn try_lock_key(&self, key: &CacheKey) -> Result<Option<Option<KeyLock>>, AuthError> {
        let Some((path, lock_path)) = self.key_lock_path(key)? else {
            return Ok(Some(None));
        };
        let file =
            open_private(&lock_path).map_err(|e| cache_err(path, format!("key lock: {e}")))?;
        match file.try_lock() {
            Ok(()) => Ok(Some(Some(KeyLock {
                _held: HeldLock::new(file, &key_purpose(key)),
            }))),
            Err(fs::TryLockError::WouldBlock) => Ok(None),
            Err(fs::TryLockError::Error(e)) => Err(cache_err(path, format!("key lock: {e}"))),
        }
    }

    /// Who holds the lock of `key`, as the holder wrote it (`pid 1234: token request for <key>`); `None` when
    /// nobody does (or the holder wrote nothing, or this is a memory cache).
    pub fn key_lock_holder(&self, key: &CacheKey) -> Option<String> {
        let (_, lock_path) = self.key_lock_path(key).ok()??;
        read_holder(&lock_path)
    }

    fn key_lock_path(&self, key: &CacheKey) -> Result<Option<(&Path, PathBuf)>, AuthError> {
        let Some(path) = &self.path else {
            return Ok(None);
        };
        let locks = cache_dir(path).join("locks");
        if !locks.exists() {
            create_private_dir(&locks).map_err(|e| cache_err(path, format!("lock dir: {e}")))?;
        }
        // One lock file per key, named by a hash so no account or scope appears in file names.
        let digest = sha2::Sha256::digest(key.id().as_bytes());
        let name: String = digest.iter().take(12).map(|b| format!("{b:02x}")).collect();
        Ok(Some((path.as_path(), locks.join(format!("{name}.lock")))))
    }

    /// The file path (None for memory).
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The entry for `key`: its access token, with the account's refresh token. With no access token cached
    /// for these scopes, an entry holding only the account's refresh token (empty access token, never fresh).
    pub fn get(&self, key: &CacheKey) -> Result<Option<CachedToken>, AuthError> {
        let (id, account_id) = (key.id(), key.account_id());
        let (entry, account) = self.with_entries(|entries| {
            (
                (entries.get(&id).cloned(), entries.get(&account_id).cloned()),
                false,
            )
        })?;
        let entry = match entry {
            Some(e) => self.hydrate(&id, e)?,
            None => None,
        };
        let account_rt = match account {
            Some(a) => self.hydrate(&account_id, a)?.and_then(|a| a.refresh_token),
            None => None,
        };
        Ok(match (entry, account_rt) {
            (Some(mut entry), Some(rt)) => {
                entry.refresh_token = Some(rt);
                Some(entry)
            }
            // An entry written before refresh tokens moved to the account keeps its own.
            (Some(entry), None) => Some(entry),
            (None, Some(rt)) => Some(CachedToken {
                access_token: Secret::default(),
                expires_at: 0,
                refresh_token: Some(rt),
                scope: None,
                in_secret_store: false,
            }),
            (None, None) => None,
        })
    }

    /// Saves a token response: the access token under `key`, and the refresh token under the account — the
    /// rotated one if the response has one, else the one already cached (client credentials and some
    /// refreshes return none). Returns the entry as [`Self::get`] would.
    pub fn store(&self, key: &CacheKey, token: &TokenResponse) -> Result<CachedToken, AuthError> {
        let (id, account_id) = (key.id(), key.account_id());
        self.with_entries(|entries| {
            let mut previous_rt = None;
            for known in [&account_id, &id] {
                match entries.get(known).cloned().map(|e| self.hydrate(known, e)) {
                    Some(Ok(Some(e))) if previous_rt.is_none() => previous_rt = e.refresh_token,
                    Some(Err(e)) => return (Err(e), false),
                    _ => {}
                }
            }
            let refresh_token = token.refresh_token.clone().or(previous_rt);
            let entry = CachedToken {
                access_token: token.access_token.clone(),
                expires_at: unix_secs(token.expires_at),
                refresh_token: None,
                scope: token.scope.clone(),
                in_secret_store: false,
            };
            let on_file = match self.dehydrate(&id, &entry) {
                Ok(on_file) => on_file,
                Err(e) => return (Err(e), false),
            };
            entries.insert(id.clone(), on_file);
            if let Some(rt) = &refresh_token {
                let account = CachedToken {
                    access_token: Secret::default(),
                    expires_at: 0,
                    refresh_token: Some(rt.clone()),
                    scope: None,
                    in_secret_store: false,
                };
                match self.dehydrate(&account_id, &account) {
                    Ok(on_file) => {
                        entries.insert(account_id.clone(), on_file);
                    }
                    Err(e) => return (Err(e), false),
                }
            }
            (
                Ok(CachedToken {
                    refresh_token,
                    ..entry
                }),
                true,
            )
        })?
    }

    /// Drops the refresh token of `key`'s account (after Entra declared it dead), and the one an older
    /// entry of `key` may hold; cached access tokens stay until they expire.
    pub fn drop_refresh_token(&self, key: &CacheKey) -> Result<(), AuthError> {
        let (id, account_id) = (key.id(), key.account_id());
        let dropped_account = self.with_entries(|entries| {
            let had_account = entries.remove(&account_id).is_some();
            let Some(entry) = entries.get(&id).cloned() else {
                return (Ok(had_account), had_account);
            };
            let mut entry = match self.hydrate(&id, entry) {
                Ok(Some(e)) => e,
                Ok(None) => return (Ok(had_account), had_account),
                Err(e) => return (Err(e), false),
            };
            if entry.refresh_token.take().is_none() {
                return (Ok(had_account), had_account);
            }
            match self.dehydrate(&id, &entry) {
                Ok(on_file) => {
                    entries.insert(id.clone(), on_file);
                    (Ok(had_account), true)
                }
                Err(e) => (Err(e), false),
            }
        })??;
        if dropped_account {
            self.forget(&[account_id])?;
        }
        Ok(())
    }

    /// Removes `key`; returns whether it existed.
    pub fn remove(&self, key: &CacheKey) -> Result<bool, AuthError> {
        let id = key.id();
        let existed = self.with_entries(|entries| {
            let existed = entries.remove(&id).is_some();
            (existed, existed)
        })?;
        self.forget(&[id])?;
        Ok(existed)
    }

    /// Removes every entry; returns how many token sets (access-token entries) there were. Works on any
    /// file: one that cannot be read is moved aside as on every read, and then removed along with every copy
    /// moved aside earlier (they may hold tokens); a file of an unknown format version, or one readable by
    /// others, is removed (0 entries).
    pub fn clear(&self) -> Result<usize, AuthError> {
        let _local = self.local.lock().unwrap_or_else(|e| e.into_inner());
        let Some(path) = &self.path else {
            let mut memory = self.memory.lock().unwrap_or_else(|e| e.into_inner());
            let ids: Vec<String> = memory.keys().cloned().collect();
            memory.clear();
            drop(memory);
            self.forget(&ids)?;
            return Ok(token_sets(&ids));
        };
        let lock = self.lock_file(path)?;
        let ids = match read_file(path, self.clock.as_ref()) {
            Ok(mut file) => {
                let ids: Vec<String> = file.entries.keys().cloned().collect();
                if !ids.is_empty() {
                    file.entries.clear();
                    file.version = CACHE_VERSION;
                    write_atomic(path, &file)?;
                }
                ids
            }
            Err(e @ (AuthError::CacheVersion { .. } | AuthError::InsecureCache { .. })) => {
                fs::remove_file(path).map_err(|io| cache_err(path, format!("removing: {io}")))?;
                tracing::warn!(path = %path.display(), "removed a token cache file this build could not read: {e}");
                Vec::new()
            }
            Err(e) => return Err(e),
        };
        remove_moved_aside(path)?;
        drop(lock);
        self.forget(&ids)?;
        Ok(token_sets(&ids))
    }

    /// Removes entries whose key matches `pred`; returns how many token sets (access-token entries) went.
    pub fn remove_where(&self, pred: impl Fn(&str) -> bool) -> Result<usize, AuthError> {
        let ids = self.with_entries(|entries| {
            let ids: Vec<String> = entries.keys().filter(|k| pred(k)).cloned().collect();
            for id in &ids {
                entries.remove(id);
            }
            let dirty = !ids.is_empty();
            (ids, dirty)
        })?;
        self.forget(&ids)?;
        Ok(token_sets(&ids))
    }

    /// The keys (as `authority|client|account|scopes` strings) and expiries.
    pub fn list(&self) -> Result<Vec<(String, u64, bool)>, AuthError> {
        self.with_entries(|entries| {
            (
                entries
                    .iter()
                    .map(|(k, v)| (k.clone(), v.expires_at, v.refresh_token.is_some()))
                    .collect(),
                false,
            )
        })
    }

    /// Runs `f` on the entries under both locks; writes back atomically when `f` says it changed something.
    fn with_entries<T>(
        &self,
        f: impl FnOnce(&mut BTreeMap<String, CachedToken>) -> (T, bool),
    ) -> Result<T, AuthError> {
        let _local = self.local.lock().unwrap_or_else(|e| e.into_inner());
        let Some(path) = &self.path else {
            let mut memory = self.memory.lock().unwrap_or_else(|e| e.into_inner());
            return Ok(f(&mut memory).0);
        };
        let lock = self.lock_file(path)?;
        let mut file = read_file(path, self.clock.as_ref())?;
        let (out, dirty) = f(&mut file.entries);
        if dirty {
            file.version = CACHE_VERSION;
            write_atomic(path, &file)?;
        }
        drop(lock); // releases the flock
        Ok(out)
    }

    /// Takes the cache file's lock (the sidecar `<file>.lock`), waiting at most the lock timeout.
    fn lock_file(&self, path: &Path) -> Result<HeldLock, AuthError> {
        let mut lock_path = path.as_os_str().to_owned();
        lock_path.push(".lock");
        lock_with_timeout(
            Path::new(&lock_path),
            path,
            "reading or updating the token cache",
            self.lock_timeout,
        )
    }
}

/// What a key's lock holder writes into the lock file.
fn key_purpose(key: &CacheKey) -> String {
    format!("token request for {key}")
}

/// An exclusive lock on a lock file; while held the file says who holds it (`pid <pid>: <purpose>`).
#[derive(Debug)]
struct HeldLock {
    file: File,
}

impl HeldLock {
    /// Wraps a file whose lock was just taken, and writes the holder into it (best effort: the lock matters,
    /// the note only helps a waiter say who it waits for).
    fn new(mut file: File, purpose: &str) -> Self {
        let note = format!("pid {}: {purpose}\n", std::process::id());
        let _ = file
            .set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| file.write_all(note.as_bytes()));
        Self { file }
    }
}

impl Drop for HeldLock {
    fn drop(&mut self) {
        // Released: the next waiter must not name this process. Closing the file releases the lock.
        let _ = self.file.set_len(0);
    }
}

/// Takes the exclusive lock of `lock_path` for `purpose`, polling, for at most `timeout`. While waiting it
/// warns once who holds the lock (what the holder wrote into the file); past `timeout` it fails with
/// [`AuthError::CacheLocked`].
fn lock_with_timeout(
    lock_path: &Path,
    cache_path: &Path,
    purpose: &str,
    timeout: Duration,
) -> Result<HeldLock, AuthError> {
    let file = open_private(lock_path).map_err(|e| {
        cache_err(
            cache_path,
            format!("lock file {}: {e}", lock_path.display()),
        )
    })?;
    let started = Instant::now();
    let mut delay = Duration::from_millis(10);
    let mut said = false;
    loop {
        match file.try_lock() {
            Ok(()) => {
                if said {
                    tracing::info!("got the token cache lock");
                }
                return Ok(HeldLock::new(file, purpose));
            }
            Err(fs::TryLockError::WouldBlock) => {}
            Err(fs::TryLockError::Error(e)) => {
                return Err(cache_err(
                    cache_path,
                    format!("locking {}: {e}", lock_path.display()),
                ));
            }
        }
        let waited = started.elapsed();
        if !said || waited >= timeout {
            let holder = read_holder(lock_path);
            if !said && (holder.is_some() || waited >= HOLDER_GRACE) {
                said = true;
                warn_waiting(holder.as_deref(), timeout);
            }
            if waited >= timeout {
                return Err(AuthError::CacheLocked {
                    path: cache_path.display().to_string(),
                    holder,
                    waited: timeout,
                });
            }
        }
        std::thread::sleep(delay.min(timeout.saturating_sub(waited)));
        delay = (delay * 2).min(Duration::from_millis(250));
    }
}

/// The one warning a lock waiter logs.
pub(crate) fn warn_waiting(holder: Option<&str>, timeout: Duration) {
    tracing::warn!(
        "waiting for the token cache lock held by {} (giving up after {:.1} s)",
        holder.unwrap_or("another process"),
        timeout.as_secs_f64()
    );
}

/// What the holder of a lock wrote into its lock file (one line, terminal-safe), if anything.
fn read_holder(lock_path: &Path) -> Option<String> {
    let mut text = Vec::new();
    File::open(lock_path)
        .ok()?
        .take(512)
        .read_to_end(&mut text)
        .ok()?;
    let text = strip_control(&String::from_utf8_lossy(&text)).replace('\n', " ");
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

/// How many of `ids` are access-token entries (an account entry, which holds the account's refresh token,
/// has an empty scope field: its id ends with the separator).
fn token_sets(ids: &[String]) -> usize {
    ids.iter().filter(|id| !id.ends_with('|')).count()
}

fn cache_err(path: &Path, detail: String) -> AuthError {
    AuthError::Cache {
        path: path.display().to_string(),
        detail,
    }
}

/// The directory holding the cache file (`.` for a bare file name): temp files and key locks go there.
fn cache_dir(path: &Path) -> &Path {
    path.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// Holds a per-key cross-process lock (see [`TokenCache::lock_key`]); unlocks on drop.
#[derive(Debug)]
pub struct KeyLock {
    _held: HeldLock,
}

fn open_private(path: &Path) -> std::io::Result<File> {
    let mut opts = OpenOptions::new();
    opts.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    opts.open(path)
}

/// Reads the cache file (the caller holds its lock). Refuses a group/world-readable file and an unknown
/// format version; moves a file that cannot be read aside (see [`move_aside`]) and starts empty.
fn read_file(path: &Path, clock: &dyn Clock) -> Result<CacheFile, AuthError> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(CacheFile::default()),
        Err(e) => return Err(cache_err(path, format!("open: {e}"))),
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = file
            .metadata()
            .map_err(|e| cache_err(path, e.to_string()))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(AuthError::InsecureCache {
                path: path.display().to_string(),
                mode: mode & 0o777,
            });
        }
    }
    let mut bytes = zeroize::Zeroizing::new(Vec::new());
    file.read_to_end(&mut bytes)
        .map_err(|e| cache_err(path, format!("read: {e}")))?;
    drop(file);
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(CacheFile::default());
    }
    let Ok(text) = std::str::from_utf8(&bytes) else {
        return move_aside(path, "it is not UTF-8", clock);
    };
    /// The version alone (read first: a newer format may have another shape).
    #[derive(Deserialize)]
    struct Probe {
        version: Option<serde_json::Value>,
    }
    let probe = match serde_json::from_str::<Probe>(text) {
        Ok(p) => p,
        // The message may quote a value (a token): only the position is kept.
        Err(e) if e.is_syntax() || e.is_eof() => {
            let reason = format!("it is not JSON (line {} column {})", e.line(), e.column());
            return move_aside(path, &reason, clock);
        }
        Err(_) => return move_aside(path, "it is not a JSON object", clock),
    };
    match probe.version.as_ref().and_then(serde_json::Value::as_u64) {
        Some(CACHE_VERSION) => {}
        Some(version) if version > CACHE_VERSION => {
            return Err(AuthError::CacheVersion {
                path: path.display().to_string(),
                version,
                supported: CACHE_VERSION,
            });
        }
        _ => return move_aside(path, "it has no known format version", clock),
    }
    match serde_json::from_str::<CacheFile>(text) {
        Ok(f) => Ok(f),
        Err(e) => {
            let reason = format!(
                "it is not the token cache's format (line {} column {})",
                e.line(),
                e.column()
            );
            move_aside(path, &reason, clock)
        }
    }
}

/// Renames an unreadable cache file to `<file>.corrupt-<unix time>` (`-1`, `-2`, … if taken), 0600, and
/// warns: later calls start from an empty cache instead of failing on it, and nothing is lost unseen.
fn move_aside(path: &Path, reason: &str, clock: &dyn Clock) -> Result<CacheFile, AuthError> {
    let mut base = path.as_os_str().to_owned();
    base.push(format!(".corrupt-{}", clock.unix_now()));
    let mut aside = PathBuf::from(&base);
    let mut n = 0u32;
    while aside.exists() {
        n += 1;
        let mut name = base.clone();
        name.push(format!("-{n}"));
        aside = PathBuf::from(name);
    }
    fs::rename(path, &aside)
        .map_err(|e| cache_err(path, format!("{reason}, and moving it aside failed: {e}")))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        fs::set_permissions(&aside, fs::Permissions::from_mode(0o600))
            .map_err(|e| cache_err(path, format!("chmod 600 {}: {e}", aside.display())))?;
    }
    tracing::warn!(
        "token cache {} could not be read ({reason}); moved it aside to {} and starting empty",
        path.display(),
        aside.display()
    );
    Ok(CacheFile::default())
}

/// Removes the copies of `path` moved aside by [`move_aside`] (`<file>.corrupt-*`).
fn remove_moved_aside(path: &Path) -> Result<(), AuthError> {
    let Some(name) = path.file_name() else {
        return Ok(());
    };
    let mut prefix = name.to_owned();
    prefix.push(".corrupt-");
    let prefix = prefix.to_string_lossy().into_owned();
    let entries = fs::read_dir(cache_dir(path))
        .map_err(|e| cache_err(path, format!("listing {}: {e}", cache_dir(path).display())))?;
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            fs::remove_file(entry.path()).map_err(|e| {
                cache_err(path, format!("removing {}: {e}", entry.path().display()))
            })?;
        }
    }
    Ok(())
}

fn write_atomic(path: &Path, file: &CacheFile) -> Result<(), AuthError> {
    let dir = cache_dir(path);
    let json = zeroize::Zeroizing::new(
        serde_json::to_vec_pretty(file).map_err(|e| cache_err(path, format!("serialise: {e}")))?,
    );
    let mut builder = tempfile::Builder::new();
    builder.prefix(".token-cache").suffix(".tmp");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        builder.permissions(fs::Permissions::from_mode(0o600));
    }
    let mut tmp = builder
        .tempfile_in(dir)
        .map_err(|e| cache_err(path, format!("temp file: {e}")))?;
    tmp.write_all(&json)
        .map_err(|e| cache_err(path, format!("write: {e}")))?;
    tmp.as_file()
        .sync_all()
        .map_err(|e| cache_err(path, format!("sync: {e}")))?;
    tmp.persist(path)
        .map_err(|e| cache_err(path, format!("rename: {}", e.error)))?;
    // Make the rename itself durable (best effort: not every platform can sync a directory).
    #[cfg(unix)]
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::auth::{Cloud, Tenant};
    use crate::time::{Clock, FakeClock};

    fn key(account: &str) -> CacheKey {
        let a = Authority::new(Cloud::Global, Tenant::Domain("contoso.com".into()));
        CacheKey::new(&a, "client", account, &Scopes::parse("b a"))
    }

    fn token(clock: &FakeClock, at: &str, rt: Option<&str>) -> TokenResponse {
        let body = match rt {
            Some(rt) => format!(
                r#"{{"token_type":"Bearer","access_token":"{at}","expires_in":3600,"refresh_token":"{rt}"}}"#
            ),
            None => format!(r#"{{"token_type":"Bearer","access_token":"{at}","expires_in":3600}}"#),
        };
        TokenResponse::parse(body.as_bytes(), clock.now(), "u").unwrap()
    }

    /// The refresh token is kept once per account; access tokens per scope set; an older file's per-entry
    /// refresh token still works.
    #[test]
    fn refresh_tokens_are_per_account_access_tokens_per_scope_set() {
        let clock = FakeClock::fixed();
        let cache = TokenCache::in_memory();
        let a = Authority::new(Cloud::Global, Tenant::Domain("contoso.com".into()));
        let imap = CacheKey::new(&a, "client", "adele@x", &Scopes::parse("imap"));
        let smtp = CacheKey::new(&a, "client", "adele@x", &Scopes::parse("smtp"));
        let other_app = CacheKey::new(&a, "client-2", "adele@x", &Scopes::parse("smtp"));
        cache
            .store(&imap, &token(&clock, "at-imap", Some("rt-1")))
            .unwrap();
        let for_smtp = cache
            .get(&smtp)
            .unwrap()
            .expect("the account's refresh token");
        assert!(for_smtp.access_token.is_empty());
        assert!(!for_smtp.is_fresh(clock.now(), DEFAULT_MARGIN));
        assert_eq!(for_smtp.refresh_token.unwrap().expose(), "rt-1");
        assert!(cache.get(&other_app).unwrap().is_none());
        // A response without a refresh token keeps the account's; a rotated one replaces it for both keys.
        cache.store(&smtp, &token(&clock, "at-smtp", None)).unwrap();
        assert_eq!(
            cache
                .get(&smtp)
                .unwrap()
                .unwrap()
                .refresh_token
                .unwrap()
                .expose(),
            "rt-1"
        );
        cache
            .store(&smtp, &token(&clock, "at-smtp-2", Some("rt-2")))
            .unwrap();
        let imap_entry = cache.get(&imap).unwrap().unwrap();
        assert_eq!(imap_entry.access_token.expose(), "at-imap");
        assert_eq!(imap_entry.refresh_token.unwrap().expose(), "rt-2");
        // Dropped once, gone for every scope set of the account; the access tokens stay.
        cache.drop_refresh_token(&imap).unwrap();
        assert!(cache.get(&smtp).unwrap().unwrap().refresh_token.is_none());
        assert_eq!(
            cache.get(&imap).unwrap().unwrap().access_token.expose(),
            "at-imap"
        );
    }

    #[test]
    fn an_entry_written_with_its_own_refresh_token_still_refreshes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.json");
        let k = key("old@x");
        let legacy = serde_json::json!({
            "version": 1,
            "entries": { k.id(): { "access_token": "at", "expires_at": 1, "refresh_token": "rt-old" } }
        });
        std::fs::write(&path, legacy.to_string()).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        }
        let cache = TokenCache::open(&path).unwrap();
        assert_eq!(
            cache
                .get(&k)
                .unwrap()
                .unwrap()
                .refresh_token
                .unwrap()
                .expose(),
            "rt-old"
        );
    }

    #[cfg(unix)]
    fn mode(p: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt as _;
        fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn key_ignores_scope_order_and_account_case() {
        let a = Authority::new(Cloud::Global, Tenant::Domain("contoso.com".into()));
        let k1 = CacheKey::new(&a, "c", "User@X.com", &Scopes::parse("b a"));
        let k2 = CacheKey::new(&a, "c", "user@x.com", &Scopes::parse("a b"));
        assert_eq!(k1, k2);
        let k3 = CacheKey::new(
            &Authority::new(Cloud::UsGov, Tenant::Domain("contoso.com".into())),
            "c",
            "user@x.com",
            &Scopes::parse("a b"),
        );
        assert_ne!(k1, k3);
    }

    /// A `|` in a field cannot forge another key's id or fall under another account's prefix.
    #[test]
    fn key_fields_cannot_forge_boundaries() {
        let a = Authority::new(Cloud::Global, Tenant::Domain("contoso.com".into()));
        let k1 = CacheKey::new(&a, "c", "x|y", &Scopes::parse("s"));
        let k2 = CacheKey::new(&a, "c", "x", &Scopes::parse("y|s"));
        assert_ne!(k1.id(), k2.id());
        let k3 = CacheKey::new(&a, "c|bob", "eve", &Scopes::parse("s"));
        let bob = CacheKey::prefix(&a, "c", Some("bob"));
        assert!(!k3.id().starts_with(&bob), "{} vs {bob}", k3.id());
        let plain = CacheKey::new(&a, "c", "bob", &Scopes::parse("s"));
        assert!(plain.id().starts_with(&bob));
        assert!(plain.id().starts_with(&CacheKey::prefix(&a, "c", None)));
        assert!(!k3.id().starts_with(&CacheKey::prefix(&a, "c", None)));
        assert!(matches!(
            crate::auth::authority::validate_identifier("username", "a|b"),
            Err(AuthError::InvalidInput { field: "username", ref reason }) if reason == "contains `|`"
        ));
    }

    #[cfg(unix)]
    #[test]
    fn refuses_a_group_or_world_writable_directory() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let shared = dir.path().join("shared");
        fs::create_dir(&shared).unwrap();
        for m in [0o777, 0o770, 0o722] {
            fs::set_permissions(&shared, fs::Permissions::from_mode(m)).unwrap();
            let e = TokenCache::open(shared.join("c.json")).unwrap_err();
            assert!(e.to_string().contains("group/world-writable"), "{e}");
        }
        fs::set_permissions(&shared, fs::Permissions::from_mode(0o755)).unwrap();
        TokenCache::open(shared.join("c.json")).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn file_permissions_and_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/dir/cache.json");
        let cache = TokenCache::open(&path).unwrap();
        let clock = FakeClock::fixed();
        assert!(cache.get(&key("u")).unwrap().is_none());
        cache
            .store(&key("u"), &token(&clock, "at1", Some("rt1")))
            .unwrap();
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        let e = cache.get(&key("u")).unwrap().unwrap();
        assert_eq!(e.access_token.expose(), "at1");
        assert_eq!(e.refresh_token.as_ref().unwrap().expose(), "rt1");
        // Rotation: the new refresh token replaces the old one.
        cache
            .store(&key("u"), &token(&clock, "at2", Some("rt2")))
            .unwrap();
        let e = TokenCache::open(&path)
            .unwrap()
            .get(&key("u"))
            .unwrap()
            .unwrap();
        assert_eq!(e.refresh_token.as_ref().unwrap().expose(), "rt2");
        // A response without a refresh token keeps the cached one.
        cache.store(&key("u"), &token(&clock, "at3", None)).unwrap();
        let e = cache.get(&key("u")).unwrap().unwrap();
        assert_eq!(
            (
                e.access_token.expose(),
                e.refresh_token.as_ref().unwrap().expose()
            ),
            ("at3", "rt2")
        );
        cache.drop_refresh_token(&key("u")).unwrap();
        assert!(
            cache
                .get(&key("u"))
                .unwrap()
                .unwrap()
                .refresh_token
                .is_none()
        );
        // Freshness with the margin.
        assert!(e.is_fresh(clock.now(), DEFAULT_MARGIN));
        assert!(!e.is_fresh(
            clock.now() + Duration::from_secs(3600 - 299),
            DEFAULT_MARGIN
        ));
        assert!(e.is_fresh(
            clock.now() + Duration::from_secs(3600 - 301),
            DEFAULT_MARGIN
        ));
        // Clear per key and all.
        cache.store(&key("v"), &token(&clock, "x", None)).unwrap();
        assert!(cache.remove(&key("u")).unwrap());
        assert!(!cache.remove(&key("u")).unwrap());
        assert_eq!(cache.clear().unwrap(), 1);
        assert!(cache.list().unwrap().is_empty());
        // No temp files left behind.
        let names: Vec<String> = fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
    }

    #[cfg(unix)]
    #[test]
    fn refuses_group_or_world_readable_file() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.json");
        let cache = TokenCache::open(&path).unwrap();
        cache
            .store(&key("u"), &token(&FakeClock::fixed(), "at", None))
            .unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = cache.get(&key("u")).unwrap_err();
        assert!(
            matches!(err, AuthError::InsecureCache { mode: 0o644, .. }),
            "{err}"
        );
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        assert!(matches!(
            cache.get(&key("u")),
            Err(AuthError::InsecureCache { mode: 0o640, ref path }) if *path == cache.path().unwrap().display().to_string()
        ));
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        assert!(cache.get(&key("u")).unwrap().is_some());
    }

    #[test]
    fn concurrent_writers_lose_nothing_and_file_stays_valid() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.json");
        let clock = FakeClock::fixed();
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let path = path.clone();
                let clock = clock.clone();
                // A separate TokenCache per thread stands in for separate processes: only the file lock
                // serialises them.
                std::thread::spawn(move || {
                    let cache = TokenCache::open(&path).unwrap();
                    for i in 0..10 {
                        cache
                            .store(&key(&format!("t{t}-{i}")), &token(&clock, "at", Some("rt")))
                            .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let cache = Arc::new(TokenCache::open(&path).unwrap());
        // 80 access-token entries and, as every key is its own account here, 80 account refresh tokens.
        let listed = cache.list().unwrap();
        let accounts = listed.iter().filter(|(id, _, _)| id.ends_with('|')).count();
        assert_eq!((listed.len() - accounts, accounts), (80, 80));
        let text = fs::read_to_string(&path).unwrap();
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(json["version"], 1);
        assert_eq!(json["entries"].as_object().unwrap().len(), 160);
    }

    #[test]
    fn key_lock_excludes_other_holders_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.json");
        let a = TokenCache::open(&path).unwrap();
        let guard = a.lock_key(&key("secret-account@x")).unwrap().unwrap();
        let released = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = released.clone();
        let path2 = path.clone();
        // A second cache instance stands in for a second process.
        let waiter = std::thread::spawn(move || {
            let b = TokenCache::open(&path2).unwrap();
            let _g = b.lock_key(&key("secret-account@x")).unwrap().unwrap();
            flag.load(std::sync::atomic::Ordering::SeqCst)
        });
        std::thread::sleep(Duration::from_millis(200));
        released.store(true, std::sync::atomic::Ordering::SeqCst);
        drop(guard);
        assert!(
            waiter.join().unwrap(),
            "the second holder got the lock only after the first released it"
        );
        // Another key is independent; lock file names reveal no account.
        let _g = a.lock_key(&key("other@x")).unwrap().unwrap();
        let _h = a.lock_key(&key("third@x"));
        for entry in fs::read_dir(dir.path().join("locks")).unwrap() {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            assert!(
                !name.contains("account") && name.ends_with(".lock"),
                "{name}"
            );
        }
        assert!(
            TokenCache::in_memory()
                .lock_key(&key("u"))
                .unwrap()
                .is_none()
        );
    }

    /// A `tracing` capture for one thread: what a test's code logged, as text.
    fn capture_logs<T>(f: impl FnOnce() -> T) -> (T, String) {
        #[derive(Clone, Default)]
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let writer = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::WARN)
            .with_writer(move || writer.clone())
            .finish();
        let out = tracing::subscriber::with_default(subscriber, f);
        let text = String::from_utf8_lossy(&buf.0.lock().unwrap()).into_owned();
        (out, text)
    }

    /// Runs `f` on another thread and waits at most `limit` for it (an unbounded lock wait fails the test
    /// instead of hanging it).
    fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        rx.recv_timeout(limit)
            .unwrap_or_else(|_| panic!("still waiting after {limit:?}"))
    }

    /// Another process holds the cache file's lock (here: a handle of this test): a read gives up after the
    /// cache's lock timeout with a typed, transient error naming the holder, and says once who it waits for.
    #[test]
    fn a_held_cache_lock_is_waited_for_a_bounded_time_and_names_its_holder() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.json");
        let mut lock_path = path.as_os_str().to_owned();
        lock_path.push(".lock");
        let mut held = open_private(Path::new(&lock_path)).unwrap();
        held.lock().unwrap();
        held.write_all(b"pid 4242: reading or updating the token cache\n")
            .unwrap();
        let cache = TokenCache::open(&path)
            .unwrap()
            .with_lock_timeout(Duration::from_millis(300));
        assert_eq!(cache.lock_timeout(), Duration::from_millis(300));
        let started = std::time::Instant::now();
        let (result, logs) = within(Duration::from_secs(20), move || {
            capture_logs(|| cache.get(&key("u")))
        });
        let waited = started.elapsed();
        let err = result.unwrap_err();
        match &err {
            AuthError::CacheLocked {
                path: p,
                holder,
                waited,
            } => {
                assert_eq!(p, &path.display().to_string());
                assert_eq!(
                    holder.as_deref(),
                    Some("pid 4242: reading or updating the token cache")
                );
                assert_eq!(*waited, Duration::from_millis(300));
            }
            other => panic!("{other:?}"),
        }
        assert!(err.is_transient());
        assert!(
            waited >= Duration::from_millis(300) && waited < Duration::from_secs(5),
            "{waited:?}"
        );
        assert_eq!(
            logs.matches("pid 4242: reading or updating the token cache")
                .count(),
            1,
            "{logs}"
        );
        assert!(logs.contains("WARN"), "{logs}");
        drop(held);
        let cache = TokenCache::open(&path).unwrap();
        assert!(cache.get(&key("u")).unwrap().is_none(), "free again");
    }

    /// The per-key lock: its holder writes its pid and purpose into the lock file; a waiter names it and
    /// gives up at the bound.
    #[test]
    fn a_held_key_lock_names_its_holder_and_the_wait_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.json");
        let a = TokenCache::open(&path).unwrap();
        let guard = a.lock_key(&key("busy@x")).unwrap().unwrap();
        let expected = format!(
            "pid {}: token request for {}",
            std::process::id(),
            key("busy@x")
        );
        let b = TokenCache::open(&path)
            .unwrap()
            .with_lock_timeout(Duration::from_millis(200));
        assert_eq!(
            b.key_lock_holder(&key("busy@x")).as_deref(),
            Some(expected.as_str())
        );
        let err = within(Duration::from_secs(20), move || {
            b.lock_key(&key("busy@x")).map(|_| ())
        })
        .unwrap_err();
        assert!(
            matches!(&err, AuthError::CacheLocked { holder: Some(h), .. } if *h == expected),
            "{err:?}"
        );
        assert!(err.to_string().contains(&expected), "{err}");
        drop(guard);
        // Released: the lock file no longer names a holder.
        let b = TokenCache::open(&path).unwrap();
        assert_eq!(b.key_lock_holder(&key("busy@x")), None);
        assert!(b.lock_key(&key("busy@x")).unwrap().is_some());
    }

    /// A cache file that cannot be read (not UTF-8, not JSON, not the cache's shape) is moved aside
    /// (`<file>.corrupt-<unix time>`, 0600, bytes unchanged) with a warning, and the cache starts empty.
    #[cfg(unix)]
    #[test]
    fn an_unreadable_cache_file_is_moved_aside() {
        use std::os::unix::fs::PermissionsExt as _;
        let clock = FakeClock::fixed();
        let cases: [&[u8]; 6] = [
            b"\xff\xfe not utf-8 \x80",
            b"{not json",
            b"[]",
            br#"{"version":1,"entries":5}"#,
            br#"{"entries":{}}"#,
            br#"{"version":"1","entries":{}}"#,
        ];
        for (i, bytes) in cases.iter().enumerate() {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("token-cache.json");
            fs::write(&path, bytes).unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(0o400)).unwrap();
            let cache = TokenCache::open(&path)
                .unwrap()
                .with_clock(Arc::new(clock.clone()));
            let (got, logs) = capture_logs(|| cache.get(&key("u")));
            assert!(got.unwrap().is_none(), "case {i}");
            let aside = dir.path().join("token-cache.json.corrupt-1767225600");
            assert_eq!(fs::read(&aside).unwrap(), *bytes, "case {i}");
            assert_eq!(mode(&aside), 0o600, "case {i}");
            assert!(!path.exists(), "case {i}");
            assert!(
                logs.contains("WARN") && logs.contains("corrupt-1767225600"),
                "case {i}: {logs}"
            );
            // Later calls work: a new file is written.
            cache.store(&key("u"), &token(&clock, "at", None)).unwrap();
            assert!(cache.get(&key("u")).unwrap().is_some(), "case {i}");
            // A second bad file in the same second does not replace the first one moved aside.
            fs::write(&path, bytes).unwrap();
            assert!(cache.get(&key("u")).unwrap().is_none(), "case {i}");
            assert_eq!(
                fs::read(dir.path().join("token-cache.json.corrupt-1767225600-1")).unwrap(),
                *bytes
            );
            assert_eq!(fs::read(&aside).unwrap(), *bytes);
        }
    }

    /// A file with a format version this build does not know is reported as written by a newer m365mail and
    /// never overwritten; `clear` (clear --all) still works and removes it.
    #[test]
    fn a_cache_from_a_newer_version_is_reported_and_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token-cache.json");
        let newer = br#"{"version":2,"entries":{},"accounts":[]}"#;
        fs::write(&path, newer).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        }
        let cache = TokenCache::open(&path).unwrap();
        let err = cache.get(&key("u")).unwrap_err();
        match &err {
            AuthError::CacheVersion {
                path: p,
                version,
                supported,
            } => {
                assert_eq!(p, &path.display().to_string());
                assert_eq!((*version, *supported), (2, 1));
            }
            other => panic!("{other:?}"),
        }
        assert!(
            err.to_string().contains("written by a newer m365mail"),
            "{err}"
        );
        assert_eq!(err.class(), crate::auth::ErrorClass::Config);
        let clock = FakeClock::fixed();
        let err = cache
            .store(&key("u"), &token(&clock, "at", Some("rt")))
            .unwrap_err();
        assert!(
            matches!(err, AuthError::CacheVersion { version: 2, .. }),
            "{err:?}"
        );
        assert!(matches!(
            cache.list().unwrap_err(),
            AuthError::CacheVersion { version: 2, .. }
        ));
        assert_eq!(fs::read(&path).unwrap(), newer, "never overwritten");
        assert_eq!(cache.clear().unwrap(), 0);
        assert!(!path.exists());
        cache.store(&key("u"), &token(&clock, "at", None)).unwrap();
        assert!(cache.get(&key("u")).unwrap().is_some());
    }

    /// `clear` (what `token clear --all` runs) works on every file it finds: a corrupt one (and the copies of
    /// corrupt files moved aside earlier, which may hold tokens) and a group-readable one are removed.
    #[cfg(unix)]
    #[test]
    fn clear_always_works() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token-cache.json");
        let cache = TokenCache::open(&path).unwrap();
        fs::write(&path, b"{not json").unwrap();
        fs::write(dir.path().join("token-cache.json.corrupt-1"), b"old").unwrap();
        fs::write(dir.path().join("other.json.corrupt-1"), b"not ours").unwrap();
        assert_eq!(cache.clear().unwrap(), 0);
        let mut names: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !n.ends_with(".lock"))
            .collect();
        names.sort();
        assert_eq!(names, ["other.json.corrupt-1"]);
        cache
            .store(&key("u"), &token(&FakeClock::fixed(), "at", None))
            .unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            cache.get(&key("u")).unwrap_err(),
            AuthError::InsecureCache { mode: 0o644, .. }
        ));
        assert_eq!(cache.clear().unwrap(), 0);
        assert!(!path.exists());
        assert!(cache.get(&key("u")).unwrap().is_none());
    }

    /// A cache in a sticky world-writable directory such as `/tmp` is refused with a remedy that does not
    /// break the system (not `chmod 700 /tmp`).
    #[cfg(unix)]
    #[test]
    fn a_cache_in_a_sticky_shared_directory_gets_a_safe_remedy() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let tmp = dir.path().join("tmp");
        fs::create_dir(&tmp).unwrap();
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o1777)).unwrap();
        let err = TokenCache::open(tmp.join("token-cache.json")).unwrap_err();
        let AuthError::Cache { detail, .. } = &err else {
            panic!("{err:?}")
        };
        assert!(!detail.contains("chmod"), "{detail}");
        assert!(detail.contains("group/world-writable"), "{detail}");
        assert!(detail.contains("shared directory"), "{detail}");
        assert!(
            detail.contains("private directory such as ~/.local/share/m365mail"),
            "{detail}"
        );
        assert!(detail.contains("a directory of mode 0700"), "{detail}");
        // A directory of one's own that is merely group-writable may be fixed with chmod.
        let own = dir.path().join("own");
        fs::create_dir(&own).unwrap();
        fs::set_permissions(&own, fs::Permissions::from_mode(0o770)).unwrap();
        let err = TokenCache::open(own.join("c.json")).unwrap_err();
        assert!(
            err.to_string()
                .contains(&format!("chmod 700 {}", own.display())),
            "{err}"
        );
    }

    #[test]
    fn corrupt_file_starts_empty_and_memory_cache_works() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.json");
        let cache = TokenCache::open(&path).unwrap();
        cache
            .store(&key("u"), &token(&FakeClock::fixed(), "at", None))
            .unwrap();
        fs::write(&path, b"{not json").unwrap();
        assert!(cache.get(&key("u")).unwrap().is_none());
        let mem = TokenCache::in_memory();
        mem.store(&key("u"), &token(&FakeClock::fixed(), "at", None))
            .unwrap();
        assert!(mem.get(&key("u")).unwrap().is_some());
        assert!(mem.path().is_none());
    }
}
