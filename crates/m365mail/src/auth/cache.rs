//! [`TokenCache`]: access and refresh tokens in a JSON file in the user data dir.
//!
//! File rules (rust.md §5): the directory is created 0700 and the file 0600; writes go to a temp file in the
//! same directory and are renamed over the old file (atomic); every read-modify-write happens under an
//! exclusive lock on a sidecar `.lock` file (`File::lock`), so several processes can share the cache; a file
//! readable by group or others is refused, not read. The rotated refresh token is saved every time.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use super::authority::Authority;
use super::error::AuthError;
use super::response::TokenResponse;
use super::scopes::Scopes;
use crate::secret::{Secret, serde_exposed};
use crate::time::unix_secs;

/// Default reuse margin: an access token is reused until 5 minutes before it expires.
pub const DEFAULT_MARGIN: Duration = Duration::from_secs(300);

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
        format!(
            "{}|{}|{}|",
            escape_field(&self.authority),
            escape_field(&self.client_id),
            escape_field(&self.account)
        )
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
    version: u32,
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
}

impl fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenCache")
            .field("path", &self.path)
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
                    & 0o777;
                if mode & 0o022 != 0 {
                    return Err(cache_err(
                        &path,
                        format!(
                            "refusing a cache in {}: mode {mode:o} is group/world-writable; run `chmod 700 {}` or choose another cache path",
                            dir.display(),
                            dir.display()
                        ),
                    ));
                }
            }
        }
        Ok(Self {
            secrets: None,
            path: Some(path),
            memory: Mutex::default(),
            local: Mutex::default(),
        })
    }

    /// A cache that lives only in memory.
    pub fn in_memory() -> Self {
        Self {
            secrets: None,
            path: None,
            memory: Mutex::default(),
            local: Mutex::default(),
        }
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

    /// Takes the cross-process renewal lock of `key` (blocking until other processes release it). Held while
    /// one process refreshes or runs a flow, so concurrent processes wait and then reuse its token instead of
    /// all asking Entra. `None` for a memory cache. Released when the guard drops.
    pub fn lock_key(&self, key: &CacheKey) -> Result<Option<KeyLock>, AuthError> {
        let Some((path, file)) = self.key_lock_file(key)? else {
            return Ok(None);
        };
        file.lock()
            .map_err(|e| cache_err(path, format!("key lock: {e}")))?;
        Ok(Some(KeyLock { _file: file }))
    }

    /// Like [`Self::lock_key`] without blocking: `Ok(None)` when another process (or another handle) holds
    /// the lock, `Ok(Some(None))` for a memory cache. Lets async callers poll (and stay cancellable).
    pub fn try_lock_key(&self, key: &CacheKey) -> Result<Option<Option<KeyLock>>, AuthError> {
        let Some((path, file)) = self.key_lock_file(key)? else {
            return Ok(Some(None));
        };
        match file.try_lock() {
            Ok(()) => Ok(Some(Some(KeyLock { _file: file }))),
            Err(fs::TryLockError::WouldBlock) => Ok(None),
            Err(fs::TryLockError::Error(e)) => Err(cache_err(path, format!("key lock: {e}"))),
        }
    }

    fn key_lock_file(&self, key: &CacheKey) -> Result<Option<(&Path, File)>, AuthError> {
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
        let file = open_private(&locks.join(format!("{name}.lock")))
            .map_err(|e| cache_err(path, format!("key lock: {e}")))?;
        Ok(Some((path.as_path(), file)))
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

    /// Removes every entry; returns how many token sets (access-token entries) there were.
    pub fn clear(&self) -> Result<usize, AuthError> {
        let ids = self.with_entries(|entries| {
            let ids: Vec<String> = entries.keys().cloned().collect();
            entries.clear();
            let dirty = !ids.is_empty();
            (ids, dirty)
        })?;
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
        let lock = open_lock_file(path)?;
        lock.lock()
            .map_err(|e| cache_err(path, format!("locking: {e}")))?;
        let mut file = read_file(path)?;
        let (out, dirty) = f(&mut file.entries);
        if dirty {
            file.version = 1;
            write_atomic(path, &file)?;
        }
        drop(lock); // releases the flock
        Ok(out)
    }
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
    _file: File,
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

fn open_lock_file(path: &Path) -> Result<File, AuthError> {
    let mut lock_path = path.as_os_str().to_owned();
    lock_path.push(".lock");
    open_private(Path::new(&lock_path)).map_err(|e| cache_err(path, format!("lock file: {e}")))
}

fn read_file(path: &Path) -> Result<CacheFile, AuthError> {
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
    let mut text = String::new();
    file.read_to_string(&mut text)
        .map_err(|e| cache_err(path, format!("read: {e}")))?;
    let text = zeroize::Zeroizing::new(text);
    if text.trim().is_empty() {
        return Ok(CacheFile::default());
    }
    match serde_json::from_str::<CacheFile>(&text) {
        Ok(f) => Ok(f),
        Err(e) => {
            // A corrupt cache holds nothing worth keeping; start over rather than failing every command.
            tracing::warn!(path = %path.display(), line = e.line(), "token cache is not valid JSON; starting empty");
            Ok(CacheFile::default())
        }
    }
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
    use std::sync::Arc;

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
        assert!(crate::auth::authority::validate_identifier("username", "a|b").is_err());
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
        assert!(cache.get(&key("u")).is_err());
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
        assert!(serde_json::from_str::<serde_json::Value>(&text).is_ok());
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
